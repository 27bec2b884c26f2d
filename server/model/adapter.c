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
 * THREADS: see adapter.h.  set_lock guards l->set and l->n_set.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/refcount.h"
#include "engine/io/safetensors.h"
#include "engine/ir/ir.h"
#include "engine/ir/sites.h"
#include "server/model/adapter.h"
#include "server/model/lora_rows.h"

/* Most sites a graph may have tapped (a 48-layer encoder has ~200). */
#define MAX_SITES 1024

typedef ss_site_t site_t;     /* engine/ir/sites.h */

#define PANEL SS_LORA_PANEL

/* An adapter's weights at one site (lora_rows.h: A^T, and s B^T packed
 * in panels of 16 outputs so the loops read each in order). */
typedef struct lmod {
    int site;
    ss_lora_w_t w;
} lmod_t;

struct ss_adapter {
    ss_ref_t ref;
    char *name;
    int r;
    float alpha, scale;
    int n_mods;
    lmod_t *mods;
    int *of_site;           /* per site: index in mods, or -1 */
    size_t bytes;
    ss_series_t *s_requests, *s_samples;    /* set when it enters a set */
};

struct ss_lora {
    const ss_graph_t *g;
    int n_sites;
    site_t *sites;
    pthread_mutex_t set_lock;
    int n_set;
    ss_adapter_t *set[SS_LORA_MAX_ADAPTERS];    /* one reference each */
    int64_t set_bytes;          /* of the set; guarded by set_lock */
    ss_lora_opts_t o;           /* model and version are copies */
    char model[128], version[32];
    ss_series_t *s_loaded, *s_bytes;
};

/* ---- adapters ----------------------------------------------------------- */

static void
adapter_free(ss_adapter_t *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->n_mods; i++) {
        ss_free(a->mods[i].w.at);
        ss_free(a->mods[i].w.bp);
    }
    ss_free(a->mods);
    ss_free(a->of_site);
    ss_free(a->name);
    ss_free(a);
}

void
ss_adapter_count(ss_adapter_t *a, int64_t samples)
{
    if (a == NULL)
        return;
    ss_series_add(a->s_requests, 1);
    ss_series_add(a->s_samples, (double)samples);
}

void
ss_adapter_unref(ss_adapter_t *a)
{
    if (a != NULL && ss_ref_put(&a->ref))
        adapter_free(a);
}

const char *
ss_adapter_name(const ss_adapter_t *a)
{
    return a->name;
}

/* Adapter names are folder names: letters, digits, '_', '-', '.', not
 * starting with '.', 1..64 bytes. */
static int
valid_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'
              || s[i] == '.'))
            return 0;
    return 1;
}

static int
find_site(const ss_lora_t *l, const char *module)
{
    for (int k = 0; k < l->n_sites; k++)
        if (strcmp(l->sites[k].module, module) == 0
            || strcmp(l->sites[k].alt, module) == 0)
            return k;
    return -1;
}

/* PEFT's key for a module: "base_model.model.<module>.lora_A.weight"
 * (older files: "...lora_A.default.weight").  Sets *module (new) and
 * *which ('A' or 'B'); 0, or -1 when key is not a LoRA weight. */
static int
parse_key(const char *key, char **module, char *which)
{
    static const char pre[] = "base_model.model.";
    static const char *const suf[] = {
        ".lora_A.weight", ".lora_B.weight",
        ".lora_A.default.weight", ".lora_B.default.weight"
    };
    size_t n = strlen(key);

    if (strncmp(key, pre, sizeof(pre) - 1) != 0)
        return -1;
    for (size_t i = 0; i < 4; i++) {
        size_t sn = strlen(suf[i]);

        if (n > sizeof(pre) - 1 + sn && strcmp(key + n - sn, suf[i]) == 0) {
            *which = i % 2 == 0 ? 'A' : 'B';
            *module = ss_strndup(key + sizeof(pre) - 1,
                                 n - (sizeof(pre) - 1) - sn);
            return *module != NULL ? 0 : -1;
        }
    }
    return -1;
}

/* f32 copy of 2-D t (F32, F16 or BF16) transposed and multiplied by
 * scale, or NULL. */
static float *
to_f32_t(const ss_tensor_t *t, float scale)
{
    size_t rows = (size_t)t->dims[0], cols = (size_t)t->dims[1];
    size_t n = rows * cols;
    float *f = ss_aligned_alloc(n * sizeof(float) + 1);
    float *tr = ss_aligned_alloc(n * sizeof(float) + 1);

    if (f == NULL || tr == NULL) {
        ss_free(f);
        ss_free(tr);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == SS_DTYPE_F32) {
            f[i] = ((const float *)t->data)[i];
        } else if (t->dtype == SS_DTYPE_BF16) {
            uint32_t u = (uint32_t)((const uint16_t *)t->data)[i] << 16;

            memcpy(&f[i], &u, 4);
        } else {
            uint16_t h = ((const uint16_t *)t->data)[i];
            int e = (h >> 10) & 31, m = h & 1023;
            float v = e == 0 ? ldexpf((float)m, -24)
                    : e == 31 ? (m ? NAN : INFINITY)
                    : ldexpf((float)(m + 1024), e - 25);

            f[i] = h & 0x8000 ? -v : v;
        }
    }
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            tr[j * rows + i] = f[i * cols + j] * scale;
    ss_free(f);
    return tr;
}

/* bt [r, out] (row-major) packed as ss_lora_w_t.bp, or NULL; frees bt. */
static float *
pack_panels(float *bt, int64_t r, int64_t out)
{
    int64_t np = (out + PANEL - 1) / PANEL;
    float *bp = bt == NULL ? NULL
              : ss_aligned_alloc((size_t)(np * r * PANEL) * sizeof(float));

    if (bp != NULL) {
        memset(bp, 0, (size_t)(np * r * PANEL) * sizeof(float));
        for (int64_t p = 0; p < np; p++)
            for (int64_t j = 0; j < r; j++)
                for (int64_t l = 0; l < PANEL && p * PANEL + l < out; l++)
                    bp[(p * r + j) * PANEL + l] = bt[j * out + p * PANEL + l];
    }
    ss_free(bt);
    return bp;
}

/* PEFT's target_modules (a list, "all-linear" or a regular expression:
 * ss_site_targeted) against site s. */
static int
targeted(const json_t *tm, const site_t *s)
{
    const char *names[64];
    size_t i, n = json_array_size(tm);
    json_t *v;

    if (json_is_string(tm))
        return ss_site_targeted(s, json_string_value(tm), NULL, 0);
    /* a long list: checked in slices of 64 */
    for (i = 0; i < n; i += 64) {
        int k = 0;

        for (size_t j = i; j < n && k < 64; j++) {
            v = json_array_get(tm, j);
            names[k++] = json_string_value(v);
        }
        if (ss_site_targeted(s, NULL, names, k))
            return 1;
    }
    return 0;
}

/* adapter_config.json: a regular file of at most 1 MiB (as config.json),
 * opened non-blocking so a FIFO cannot stall the pool thread. */
#define MAX_CONFIG_BYTES ((size_t)1 << 20)

static json_t *
load_config(const char *path, json_error_t *je)
{
    struct stat sb;
    char *buf = NULL;
    json_t *c = NULL;
    ssize_t n = 0;
    int fd;

    snprintf(je->text, sizeof(je->text), "cannot be read");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        return NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)
        && (size_t)sb.st_size <= MAX_CONFIG_BYTES
        && (buf = ss_malloc((size_t)sb.st_size + 1)) != NULL
        && (n = read(fd, buf, (size_t)sb.st_size)) == (ssize_t)sb.st_size)
        c = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, je);
    else
        snprintf(je->text, sizeof(je->text), "not a regular file of at "
                 "most %zu bytes", MAX_CONFIG_BYTES);
    ss_free(buf);
    close(fd);
    return c;
}

static int
read_config(const char *dir, const char *name, ss_adapter_t *a,
            json_t **tm_out, ss_err_t *err)
{
    char path[4200];
    json_error_t je;
    json_t *c = NULL, *r, *al, *bias, *tm, *rs, *pat;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    if ((c = load_config(path, &je)) == NULL || !json_is_object(c)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': adapter_config.json: "
                        "%s", name, c == NULL ? je.text : "not an object");
        goto done;
    }
    r = json_object_get(c, "r");
    al = json_object_get(c, "lora_alpha");
    bias = json_object_get(c, "bias");
    tm = json_object_get(c, "target_modules");
    rs = json_object_get(c, "use_rslora");
    if (!json_is_integer(r) || json_integer_value(r) < 1
        || json_integer_value(r) > SS_LORA_MAX_RANK) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"r\" must be an "
                        "integer from 1 to %d", name, SS_LORA_MAX_RANK);
        goto done;
    }
    a->r = (int)json_integer_value(r);
    a->alpha = al == NULL ? (float)a->r : (float)json_number_value(al);
    if ((al != NULL && !json_is_number(al)) || !isfinite(a->alpha)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"lora_alpha\" must "
                        "be a number", name);
        goto done;
    }
    if (bias != NULL && !json_is_null(bias)
        && !(json_is_string(bias)
             && strcmp(json_string_value(bias), "none") == 0)) {
        rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': \"bias\" must be "
                        "\"none\" (trained biases are not supported)", name);
        goto done;
    }
    if (!json_is_array(tm) && !json_is_string(tm)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': \"target_modules\" "
                        "must be a list of module names", name);
        goto done;
    }
    /* Per-module ranks and alphas: not supported. */
    pat = json_object_get(c, "rank_pattern");
    if (json_object_size(pat) > 0
        || json_object_size(json_object_get(c, "alpha_pattern")) > 0) {
        rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': rank_pattern and "
                        "alpha_pattern are not supported", name);
        goto done;
    }
    a->scale = json_is_true(rs) ? a->alpha / sqrtf((float)a->r)
                                : a->alpha / (float)a->r;
    *tm_out = json_incref(tm);
done:
    json_decref(c);
    return rc;
}

int
ss_adapter_read(const ss_lora_t *l, const char *model_dir, const char *name,
                ss_adapter_t **out, ss_err_t *err)
{
    ss_adapter_t *a = NULL;
    ss_safetensors_t *st = NULL;
    json_t *tm = NULL;
    char dir[4096], path[4200];
    int rc = 0;

    *out = NULL;
    if (!valid_name(name))
        return ss_err_set(err, SS_EINVAL, "adapter name '%s' is not a "
                          "plain name (letters, digits, _ - .)", name);
    if (snprintf(dir, sizeof(dir), "%s/adapters/%s", model_dir, name)
        >= (int)sizeof(dir))
        return ss_err_set(err, SS_EINVAL, "adapter '%s': path too long",
                          name);
    if ((a = ss_calloc(1, sizeof(*a))) == NULL
        || (a->name = ss_strdup(name)) == NULL
        || (a->of_site = ss_malloc(((size_t)l->n_sites + 1)
                                   * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'", name);
        goto done;
    }
    ss_ref_init(&a->ref);
    for (int k = 0; k < l->n_sites; k++)
        a->of_site[k] = -1;
    if ((rc = read_config(dir, name, a, &tm, err)) < 0)
        goto done;
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    if ((rc = ss_safetensors_read(path, SS_LORA_MAX_FILE_BYTES, &st,
                                  err)) < 0) {
        ss_err_wrap(err, rc, "adapter '%s'", name);
        goto done;
    }
    if ((a->mods = ss_calloc((size_t)ss_safetensors_count(st) + 1,
                             sizeof(lmod_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'", name);
        goto done;
    }
    /* Every lora_A names a module; its lora_B must be there too. */
    for (int i = 0; i < ss_safetensors_count(st); i++) {
        const char *key = ss_safetensors_name(st, i);
        const ss_tensor_t *ta = ss_safetensors_tensor(st, i), *tb;
        char *module = NULL, which, bkey[600];
        const site_t *s;
        lmod_t *m;
        int k, j;

        if (parse_key(key, &module, &which) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': tensor '%s' is "
                            "not a PEFT LoRA weight (base_model.model."
                            "<module>.lora_A.weight)", name, key);
            goto done;
        }
        if (which == 'B') {
            ss_free(module);
            continue;
        }
        k = find_site(l, module);
        /* bkey: key with lora_A swapped for lora_B */
        {
            const char *p = strstr(key, ".lora_A.");

            snprintf(bkey, sizeof(bkey), "%.*s.lora_B.%s",
                     (int)(p - key), key, p + 8);
        }
        j = ss_safetensors_find(st, bkey);
        tb = ss_safetensors_tensor(st, j);
        if (k < 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' is "
                            "not a Gemm or MatMul weight of the model",
                            name, module);
        } else if (!targeted(tm, &l->sites[k])) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' has "
                            "weights but is not in target_modules", name,
                            module);
        } else if (a->of_site[k] >= 0) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' "
                            "appears twice", name, module);
        } else if (tb == NULL) {
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s' has "
                            "lora_A but no lora_B", name, module);
        }
        s = k >= 0 ? &l->sites[k] : NULL;
        if (rc == 0
            && ((ta->dtype != SS_DTYPE_F32 && ta->dtype != SS_DTYPE_F16
                 && ta->dtype != SS_DTYPE_BF16) || tb->dtype != ta->dtype))
            rc = ss_err_set(err, SS_EUNSUPP, "adapter '%s': module '%s': "
                            "dtype %s (F32, F16 or BF16 expected)", name,
                            module, ss_safetensors_dtype_name(ta->dtype));
        if (rc == 0
            && (ta->ndim != 2 || ta->dims[0] != a->r || ta->dims[1] != s->in
                || tb->ndim != 2 || tb->dims[0] != s->out
                || tb->dims[1] != a->r))
            rc = ss_err_set(err, SS_EINVAL, "adapter '%s': module '%s': "
                            "lora_A is [%lld, %lld] and lora_B [%lld, %lld] "
                            "where r = %d and the weight's in = %lld, out = "
                            "%lld need [%d, %lld] and [%lld, %d]", name,
                            module, (long long)ta->dims[0],
                            (long long)(ta->ndim > 1 ? ta->dims[1] : 0),
                            (long long)(tb->ndim > 0 ? tb->dims[0] : 0),
                            (long long)(tb->ndim > 1 ? tb->dims[1] : 0),
                            a->r, (long long)s->in, (long long)s->out, a->r,
                            (long long)s->in, (long long)s->out, a->r);
        ss_free(module);
        if (rc < 0)
            goto done;
        m = &a->mods[a->n_mods];
        m->site = k;
        m->w.at_bytes = a->r * s->in * (int64_t)sizeof(float);
        m->w.bp_bytes = (s->out + PANEL - 1) / PANEL * PANEL * a->r
                      * (int64_t)sizeof(float);
        m->w.at = to_f32_t(ta, 1.0f);
        m->w.bp = pack_panels(to_f32_t(tb, a->scale), a->r, s->out);
        a->n_mods++;
        if (m->w.at == NULL || m->w.bp == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for adapter '%s'",
                            name);
            goto done;
        }
        a->of_site[k] = a->n_mods - 1;
        a->bytes += (size_t)a->r * (size_t)(s->in + s->out) * sizeof(float);
    }
    /* Every lora_B has its lora_A (counted: each A took one B). */
    if (2 * a->n_mods != ss_safetensors_count(st)) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': a lora_B without "
                        "its lora_A", name);
        goto done;
    }
    if (a->n_mods == 0) {
        rc = ss_err_set(err, SS_EINVAL, "adapter '%s': no LoRA weights",
                        name);
        goto done;
    }
    *out = a;
    a = NULL;
done:
    adapter_free(a);
    ss_safetensors_free(st);
    json_decref(tm);
    return rc;
}

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
    ss_free(l->sites);
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
    return o->requests && o->samples && o->loaded && o->bytes ? 0
                                                               : SS_ENOMEM;
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
    l->g = g;
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
    } else if (l->n_set >= l->o.max_adapters) {
        old = a;
        rc = ss_err_set(err, SS_EBUSY, "adapter '%s': %d adapters are "
                        "loaded already (max_adapters %d)", name, l->n_set,
                        l->o.max_adapters);
    } else {
        l->set[l->n_set++] = a;
        l->set_bytes += (int64_t)a->bytes;
    }
    ss_series_set(l->s_loaded, l->n_set);
    ss_series_set(l->s_bytes, (double)l->set_bytes);
    pthread_mutex_unlock(&l->set_lock);
    ss_adapter_unref(old);
    return rc;
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

            if (de->d_name[0] == '.')
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
            break;
        }
    ss_series_set(l->s_loaded, l->n_set);
    ss_series_set(l->s_bytes, (double)l->set_bytes);
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
        items[n++] = json_pack("{s:s, s:i, s:f, s:o*, s:I}", "name", a->name,
                               "r", a->r, "alpha", (double)a->alpha,
                               "modules", mods, "bytes",
                               (json_int_t)a->bytes);
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
