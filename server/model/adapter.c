/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LoRA adapters: finding a graph's sites, reading PEFT adapters, and the
 * per-batch low-rank update (adapter.h says what and why).
 *
 * DESIGN: the version's graph taps, per site k, its input x (tap 2k) and
 * its output y (tap 2k + 1).  The x tap only remembers the tensor (its
 * bytes stay until y's step has read them: engine.h); the y tap does the
 * work.  Each item of the batch is a run of consecutive rows (its
 * samples, each of rows_per_sample rows of x: a [batch, seq, in] MatMul
 * input has seq rows per sample); for each run whose adapter targets the
 * site, x's rows are multiplied by A^T (shrink, [n, r]) and by s B^T
 * (expand, [n, out]) and added to y's rows in place: no gather, no
 * scatter.  When the plan runs a site in row chunks (engine.h, taps:
 * a large batch), each call holds some rows of y, from row0, and the
 * runs are clipped to them: the update then finds x's and y's rows in
 * cache, right after the GEMM wrote them.  Runs go through loops built
 * for AVX-512 or plain ones (lora_rows.c).  The x of each site is
 * remembered per executor thread (thread-local: an executor runs one
 * batch at a time); nothing is allocated per batch.
 *
 * The tapped plan keeps the activation after the site on oneDNN (the
 * engine's tapped-eltwise anchor runs it as its own step after the tap),
 * so a batch with adapters pays the update plus one eltwise step per
 * site, not the reference kernels.
 *
 * Cost, per adapter of the batch at a site: m rows * r * (in + out)
 * multiply-adds, against the base GEMM's batch * in * out.
 *
 * Reading an adapter is adapter_read.c's; which adapters' weights stay
 * resident under a model's adapter_resident_bytes, adapter_cache.c's.
 *
 * THREADS: see adapter.h.  set_lock guards l->set and l->n_set.
 */

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/log.h"
#include "engine/ir/ir.h"
#include "server/model/adapter_int.h"

#define MAX_SITES SS__LORA_MAX_SITES

typedef ss_site_t site_t;     /* engine/ir/sites.h */
typedef ss__lmod_t lmod_t;

/* ---- sites ---------------------------------------------------------------- */

int
ss_lora_sites(const ss_lora_t *l)
{
    return l->n_sites;
}

void
ss_lora_free(ss_lora_t *l)
{
    if (l == NULL)
        return;
    for (int i = 0; i < l->n_set; i++)
        ss_adapter_unref(l->set[i]);
    if (l->o.loaded != NULL) {
        const char *lv[] = { l->model, l->version };

        ss_metric_series_remove(l->o.loaded, lv);
        ss_metric_series_remove(l->o.bytes, lv);
    }
    ss__lora_cache_remove_series(l);
    ss_free(l->sites);
    ss_free(l->dir);
    pthread_cond_destroy(&l->load_cond);
    pthread_mutex_destroy(&l->set_lock);
    ss_free(l);
}

int
ss_lora_metrics_init(ss_metrics_t *m, ss_lora_opts_t *o)
{
    static const char *const la[] = { "model", "adapter" };
    static const char *const lv[] = { "model", "version" };

    o->requests = ss_metrics_counter(m, "slimserve_adapter_requests_total",
                                     "Inference requests admitted per LoRA "
                                     "adapter.", 2, la);
    o->samples = ss_metrics_counter(m, "slimserve_adapter_samples_total",
                                    "Samples (batch rows) of the requests "
                                    "admitted per LoRA adapter.", 2, la);
    o->loaded = ss_metrics_gauge(m, "slimserve_adapters_loaded",
                                 "LoRA adapters loaded on a model version.",
                                 2, lv);
    o->bytes = ss_metrics_gauge(m, "slimserve_adapters_bytes",
                                "Bytes of the LoRA adapters loaded on a "
                                "model version (A^T and scaled B^T, f32).",
                                2, lv);
    if (!(o->requests && o->samples && o->loaded && o->bytes))
        return SS_ENOMEM;
    return ss__lora_cache_metrics_init(m, o);
}

int
ss_lora_new(ss_graph_t *g, const char *model_dir, const ss_lora_opts_t *o,
            ss_lora_t **out, ss_err_t *err)
{
    const char *what = o != NULL && o->model != NULL ? o->model : "?";
    ss_lora_t *l = NULL;
    const char **taps = NULL;
    char dir[4200];
    struct stat sb;
    DIR *d = NULL;
    struct dirent *de;
    int rc = 0;

    *out = NULL;
    snprintf(dir, sizeof(dir), "%s/adapters", model_dir);
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return ss_err_set(err, SS_ENOTFOUND, "%s: no adapters folder",
                          model_dir);
    if ((l = ss_calloc(1, sizeof(*l))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for adapters");
    pthread_mutex_init(&l->set_lock, NULL);
    pthread_cond_init(&l->load_cond, NULL);
    l->g = g;
    if ((l->dir = ss_strdup(model_dir)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for adapters");
        goto done;
    }
    if (o != NULL)
        l->o = *o;
    snprintf(l->model, sizeof(l->model), "%s", what);
    snprintf(l->version, sizeof(l->version), "%s",
             o != NULL && o->version != NULL ? o->version : "");
    if (l->o.max_adapters <= 0 || l->o.max_adapters > SS_LORA_MAX_ADAPTERS)
        l->o.max_adapters = SS_LORA_MAX_ADAPTERS;
    if (l->o.loaded != NULL && l->o.bytes != NULL) {
        const char *lv[] = { l->model, l->version };

        l->s_loaded = ss_metric_series(l->o.loaded, lv);
        l->s_bytes = ss_metric_series(l->o.bytes, lv);
        ss_series_set(l->s_loaded, 0);
        ss_series_set(l->s_bytes, 0);
    }
    ss__lora_cache_series(l);
    if ((rc = ss_sites_find(g, &l->sites, &l->n_sites, err)) < 0)
        goto done;
    if (l->n_sites > MAX_SITES) {
        rc = ss_err_set(err, SS_EUNSUPP, "%s: more than %d Gemm/MatMul "
                        "weights", g->source, MAX_SITES);
        goto done;
    }
    if ((taps = ss_calloc(2 * (size_t)l->n_sites + 1, sizeof(char *)))
        == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for taps");
        goto done;
    }
    for (int k = 0; k < l->n_sites; k++) {
        taps[2 * k] = g->values[l->sites[k].x].name;
        taps[2 * k + 1] = g->values[l->sites[k].y_bias].name;
    }
    if ((rc = ss_graph_set_taps(g, 2 * l->n_sites, taps, err)) < 0)
        goto done;
    /* Adapters found now; one that does not fit is logged and skipped:
     * the base model and the other adapters still serve. */
    if ((d = opendir(dir)) != NULL) {
        while ((de = readdir(d)) != NULL) {
            ss_err_t e = { 0 };

            if (de->d_name[0] == '.')
                continue;
            if (ss_lora_load(l, model_dir, de->d_name, &e) < 0)
                ss_log_warn("model=%s@%s adapter '%s' not loaded: %s", what,
                            l->version, de->d_name, e.msg);
        }
        closedir(d);
    }
    ss__lora_cache_trim(l);
    *out = l;
    l = NULL;
done:
    ss_free(taps);
    ss_lora_free(l);
    return rc;
}

/* ---- the set -------------------------------------------------------------- */

int
ss_lora_acquire(ss_lora_t *l, const char *name, ss_adapter_t **out,
                ss_err_t *err)
{
    *out = NULL;
    if (l != NULL) {
        pthread_mutex_lock(&l->set_lock);
        for (int i = 0; i < l->n_set; i++)
            if (strcmp(l->set[i]->name, name) == 0) {
                ss_ref_get(&l->set[i]->ref);
                *out = l->set[i];
                break;
            }
        pthread_mutex_unlock(&l->set_lock);
    }
    if (*out != NULL)
        return 0;
    return ss_err_set(err, SS_ENOTFOUND, "adapter '%s' is not loaded", name);
}

int
ss_lora_load(ss_lora_t *l, const char *model_dir, const char *name,
             ss_err_t *err)
{
    ss_adapter_t *a, *old = NULL;
    int rc = 0, i;

    if ((rc = ss_adapter_read(l, model_dir, name, &a, err)) < 0)
        return rc;
    if (l->o.requests != NULL) {
        const char *la[] = { l->model, name };

        a->s_requests = ss_metric_series(l->o.requests, la);
        a->s_samples = ss_metric_series(l->o.samples, la);
    }
    pthread_mutex_lock(&l->set_lock);
    for (i = 0; i < l->n_set; i++)
        if (strcmp(l->set[i]->name, name) == 0)
            break;
    if (l->o.max_bytes > 0
        && l->set_bytes - (i < l->n_set ? (int64_t)l->set[i]->bytes : 0)
               + (int64_t)a->bytes > l->o.max_bytes) {
        old = a;
        rc = ss_err_set(err, SS_EBUSY, "adapter '%s': its %zu bytes would "
                        "bring the loaded adapters to %lld bytes, over "
                        "max_adapter_bytes %lld", name, a->bytes,
                        (long long)(l->set_bytes + (int64_t)a->bytes
                                    - (i < l->n_set
                                       ? (int64_t)l->set[i]->bytes : 0)),
                        (long long)l->o.max_bytes);
    } else if (i < l->n_set) {
        old = l->set[i];
        l->set[i] = a;
        l->set_bytes += (int64_t)a->bytes - (int64_t)old->bytes;
        ss__lora_cache_leave(l, old);
        ss__lora_cache_enter(l, a);
    } else if (l->n_set >= l->o.max_adapters) {
        old = a;
        rc = ss_err_set(err, SS_EBUSY, "adapter '%s': %d adapters are "
                        "loaded already (max_adapters %d)", name, l->n_set,
                        l->o.max_adapters);
    } else {
        l->set[l->n_set++] = a;
        l->set_bytes += (int64_t)a->bytes;
        ss__lora_cache_enter(l, a);
    }
    /* past the budget, the least recently used go cold: at a start with
     * many adapters, the ones read first */
    ss__lora_cache_make_room(l);
    ss_series_set(l->s_loaded, l->n_set);
    ss_series_set(l->s_bytes, (double)l->set_bytes);
    ss__lora_cache_publish(l);
    pthread_mutex_unlock(&l->set_lock);
    ss_adapter_unref(old);
    return rc;
}

/* Whether the set holds adapter name read from the files that are there
 * now (same identities): a sync then leaves it as it is, resident or
 * cold, instead of reading it again. */
static int
unchanged(ss_lora_t *l, const char *model_dir, const char *name)
{
    ss__file_id_t fc, fw;
    int same = 0;

    if (ss__adapter_file_ids(model_dir, name, &fc, &fw) < 0)
        return 0;
    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < l->n_set; i++)
        if (strcmp(l->set[i]->name, name) == 0) {
            same = ss__file_id_same(&fc, &l->set[i]->f_config)
                   && ss__file_id_same(&fw, &l->set[i]->f_weights);
            break;
        }
    pthread_mutex_unlock(&l->set_lock);
    return same;
}

void
ss_lora_sync(ss_lora_t *l, const char *model_dir)
{
    char dir[4200], gone[SS_LORA_MAX_ADAPTERS][72];
    struct stat sb;
    struct dirent *de;
    int n_gone = 0;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/adapters", model_dir);
    if ((d = opendir(dir)) != NULL) {
        while ((de = readdir(d)) != NULL) {
            ss_err_t e = { 0 };

            if (de->d_name[0] == '.' || unchanged(l, model_dir, de->d_name))
                continue;
            if (ss_lora_load(l, model_dir, de->d_name, &e) < 0)
                ss_log_warn("model=%s@%s adapter '%s' not loaded: %s",
                            l->model, l->version, de->d_name, e.msg);
        }
        closedir(d);
    }
    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < l->n_set; i++) {
        snprintf(dir, sizeof(dir), "%s/adapters/%s", model_dir,
                 l->set[i]->name);
        if (stat(dir, &sb) != 0)
            snprintf(gone[n_gone++], sizeof(gone[0]), "%s", l->set[i]->name);
    }
    pthread_mutex_unlock(&l->set_lock);
    for (int i = 0; i < n_gone; i++) {
        ss_err_t e = { 0 };

        ss_lora_unload(l, gone[i], &e);
    }
    ss__lora_cache_trim(l);
}

int
ss_lora_unload(ss_lora_t *l, const char *name, ss_err_t *err)
{
    ss_adapter_t *old = NULL;

    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < l->n_set; i++)
        if (strcmp(l->set[i]->name, name) == 0) {
            old = l->set[i];
            l->set[i] = l->set[--l->n_set];
            l->set_bytes -= (int64_t)old->bytes;
            ss__lora_cache_leave(l, old);
            break;
        }
    ss_series_set(l->s_loaded, l->n_set);
    ss_series_set(l->s_bytes, (double)l->set_bytes);
    ss__lora_cache_publish(l);
    pthread_mutex_unlock(&l->set_lock);
    if (old == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "adapter '%s' is not loaded",
                          name);
    ss_adapter_unref(old);  /* requests holding it keep it alive */
    return 0;
}

static int
by_name(const void *x, const void *y)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)x,
                                                    "name")),
                  json_string_value(json_object_get(*(json_t *const *)y,
                                                    "name")));
}

json_t *
ss_lora_list(ss_lora_t *l)
{
    json_t *items[SS_LORA_MAX_ADAPTERS];
    json_t *arr = json_array();
    int n = 0;

    if (arr == NULL || l == NULL)
        return arr;
    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < l->n_set; i++) {
        const ss_adapter_t *a = l->set[i];
        json_t *mods = json_array();

        for (int m = 0; mods != NULL && m < a->n_mods; m++)
            json_array_append_new(mods, json_string(
                l->sites[a->mods[m].site].module));
        items[n++] = json_pack("{s:s, s:i, s:f, s:o*, s:I, s:b}", "name",
                               a->name, "r", a->r, "alpha", (double)a->alpha,
                               "modules", mods, "bytes",
                               (json_int_t)a->bytes, "resident",
                               a->resident);
        if (items[n - 1] == NULL)
            n--;
    }
    pthread_mutex_unlock(&l->set_lock);
    qsort(items, (size_t)n, sizeof(items[0]), by_name);
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, items[i]);
    return arr;
}

/* ---- the update ----------------------------------------------------------- */

/* Per executor thread: each site's x (data and element count) in the
 * run in progress.  An executor runs one batch at a time. */
static __thread struct {
    const float *x[MAX_SITES];
    int64_t xn[MAX_SITES];
} ts;

/* Adds adapter a's update at site s to one contiguous run of n rows
 * starting at row: x [*, in] (row 0 of the value), y [n, out] (the run's
 * first row); next (or NULL): the next run's
 * weights at this site, prefetched meanwhile (only a hint: of another
 * rank, or none, which this run's own cached weights stand in for). */
static void
apply(const site_t *s, const ss_adapter_t *a, const lmod_t *m,
      const lmod_t *next, const float *x, float *y, int64_t row, int64_t n)
{
    int64_t in = s->in, out = s->out;

    ss_lora_rows(x + row * in, y, n, in, out, a->r, &m->w,
                 next != NULL ? &next->w : &m->w);
}

int
ss_lora_tap(void *user, const ss_work_t *batch, int tap, ss_tensor_t *value,
            int64_t row0, const ss_tap_act_t *act, ss_err_t *err)
{
    const ss_lora_t *l = user;
    const site_t *s = &l->sites[tap / 2];
    int64_t samples = 0, m, per, lo, hi, row = 0, pend_row = 0, pend_n = 0;
    const ss_adapter_t *pend_a = NULL;
    const lmod_t *pend = NULL;
    const float *x;
    float *y;

    /* x: remember where its row 0 is, and how many rows are there so
     * far (the plan may write it in chunks: engine.h) */
    if (tap % 2 == 0) {
        int64_t n = ss_tensor_numel(value);

        ts.x[tap / 2] = (const float *)value->data - row0 * s->in;
        ts.xn[tap / 2] = row0 == 0 ? n : ts.xn[tap / 2] + n;
        return 0;
    }
    x = ts.x[tap / 2];
    for (const ss_work_t *w = batch; w != NULL; w = ss_work_next(w))
        samples += ss_work_samples(w);
    m = ts.xn[tap / 2] / s->in;         /* rows of x and y */
    lo = row0;                          /* the rows of y here */
    hi = row0 + ss_tensor_numel(value) / s->out;
    if (x == NULL || value->dtype != SS_DTYPE_F32 || value->ndim < 1
        || value->dims[value->ndim - 1] != s->out || samples <= 0
        || ts.xn[tap / 2] % s->in != 0 || m % samples != 0 || hi > m
        || ss_tensor_numel(value) % s->out != 0)
        return ss_err_set(err, SS_EINTERNAL, "LoRA at '%s': the tapped "
                          "values are not what the site needs", s->module);
    /* y: rows lo..hi-1 only (a plan may hold one chunk of them:
     * engine.h) */
    y = value->data;
    if (hi == m)
        ts.x[tap / 2] = NULL;
    per = m / samples;                  /* rows of x and y per sample */
    /* An item's samples are consecutive rows: each item with an adapter
     * that targets this site is one run, updated in place (runs of one
     * adapter next to each other are joined, so one adapter over a
     * whole batch is one run), clipped to the rows lo..hi-1 this call
     * has. */
    /* Each run's update prefetches the next run's A^T and panels (the
     * adapters of a batch are read once each, for a few rows: fetching
     * them is most of the update's time, so the next one's comes in
     * while this one computes). */
    for (const ss_work_t *w = batch; w != NULL || pend != NULL;) {
        const ss_adapter_t *a = w != NULL ? w->tag : NULL;
        const lmod_t *md = NULL;
        int64_t n = 0, r0 = 0;
        int last = w == NULL;   /* only pend is left */

        if (w != NULL) {
            const ss_work_t *v = ss_work_next(w);

            n = ss_work_samples(w) * per;
            while (v != NULL && v->tag == a) {
                n += ss_work_samples(v) * per;
                v = ss_work_next(v);
            }
            w = v;
            r0 = row;
            row += n;
            if (a != NULL && a->of_site[tap / 2] >= 0)
                md = &a->mods[a->of_site[tap / 2]];
            /* the run's rows within lo..hi-1 */
            if (r0 < lo) {
                n -= lo - r0;
                r0 = lo;
            }
            if (r0 + n > hi)
                n = hi - r0;
            if (md == NULL || n <= 0) {
                if (row >= hi)
                    w = NULL;   /* past this call's rows */
                continue;
            }
            if (row >= hi)
                w = NULL;
        }
        if (pend != NULL)
            apply(s, pend_a, pend, md, x, y + (pend_row - lo) * s->out,
                  pend_row, pend_n);
        if (last)
            break;
        pend = md;
        pend_a = a;
        pend_row = r0;
        pend_n = n;
    }
    /* the activation after the site, on the rows while they are in
     * cache: the plan then skips its own step (engine.h: activations) */
    if (act != NULL)
        return ss_lora_act(act->kind, act->alpha, y, act->dst,
                           (hi - lo) * s->out);
    return 0;
}
