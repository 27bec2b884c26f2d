/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which adapters' weights are in memory: a residency budget over a
 * version's LoRA adapters (a model's config.json adapter_resident_bytes;
 * docs/lora.md, "Many adapters").
 *
 * Why: an adapter is r (in + out) floats per module, so one r = 8 adapter
 * on the MNIST-sized MLP is 3.5% of the model and 100 of them 3.5 times
 * the model.  Multi-adapter servers (S-LoRA, LoRAX) keep many adapters
 * registered and only a bounded set of their weights resident; so does
 * this.
 *
 * DESIGN.  Every loaded adapter is read whole and checked against the base
 * as before (a bad one is refused at load), and stays registered; what a
 * cold one keeps is its metadata (name, r, alpha, modules, the identity
 * of its two files and a checksum of its packed weights: meta_bytes, a
 * few hundred bytes).  The resident in-set adapters' packed bytes are kept
 * within the budget by evicting the least recently used one no running
 * batch pins (a tick per pin, a scan of at most 256: no list to keep).
 * A batch pins each of its items' adapters before it runs (the batcher's
 * pin hook, on the executor that runs it: a loop thread never reads a
 * file); a cold adapter is read back there, outside the lock, by the
 * first executor that needs it, while others that need it wait on
 * load_cond for that read and share its result.  The read-back is the
 * load's own read (adapter_read.c), so its weights are packed the same
 * way, and it is accepted only when the files' identities and the packed
 * weights' checksum equal the load's: served outputs with a read-back
 * adapter are bit for bit those with it resident, and a file removed,
 * replaced or corrupted since fails the requests with that adapter alone
 * (SS_EIO naming it), nothing else.  A pinned adapter is never evicted;
 * when the pinned ones alone pass the budget it is exceeded for as long
 * as they run (no batch waits for memory, so nothing can deadlock), and
 * slimserve_adapter_over_budget_total counts it (and a log line, once a
 * second at most); the next unpin evicts down to the budget.
 *
 * Without a budget (0) every adapter stays resident and pins are free
 * (no lock, nothing counted): today's behaviour.
 *
 * THREADS: everything here runs with the lora's set_lock held, but for
 * ss_lora_pin's read-back (its adapter's loading flag owns the weights
 * meanwhile) and the metric registration [init].
 */

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/clock.h"
#include "common/log.h"
#include "server/model/adapter_int.h"

int
ss__lora_cache_metrics_init(ss_metrics_t *m, ss_lora_opts_t *o)
{
    static const char *const lv[] = { "model", "version" };

    o->resident = ss_metrics_gauge(m, "slimserve_adapters_resident",
                                   "LoRA adapters whose weights are in "
                                   "memory on a model version.", 2, lv);
    o->res_bytes = ss_metrics_gauge(m, "slimserve_adapters_resident_bytes",
                                    "Bytes of the resident LoRA adapters' "
                                    "packed weights on a model version.",
                                    2, lv);
    o->hits = ss_metrics_counter(m, "slimserve_adapter_cache_hits_total",
                                 "Batch pins of a LoRA adapter whose "
                                 "weights were resident (with "
                                 "adapter_resident_bytes).", 2, lv);
    o->misses = ss_metrics_counter(m, "slimserve_adapter_cache_misses_total",
                                   "LoRA adapter weights read back from "
                                   "the adapter folder for a batch.", 2, lv);
    o->evictions = ss_metrics_counter(m, "slimserve_adapter_evictions_total",
                                      "LoRA adapter weights dropped to stay "
                                      "within adapter_resident_bytes.", 2,
                                      lv);
    o->load_seconds = ss_metrics_counter(
        m, "slimserve_adapter_load_seconds_total",
        "Seconds spent reading LoRA adapter weights back.", 2, lv);
    o->over_budget = ss_metrics_counter(
        m, "slimserve_adapter_over_budget_total",
        "Times adapters pinned by running batches kept the resident bytes "
        "over adapter_resident_bytes.", 2, lv);
    return o->resident && o->res_bytes && o->hits && o->misses
           && o->evictions && o->load_seconds && o->over_budget ? 0
                                                                : SS_ENOMEM;
}

void
ss__lora_cache_series(ss_lora_t *l)
{
    const char *lv[] = { l->model, l->version };

    if (l->o.resident == NULL)
        return;
    l->s_res = ss_metric_series(l->o.resident, lv);
    l->s_res_bytes = ss_metric_series(l->o.res_bytes, lv);
    l->s_hits = ss_metric_series(l->o.hits, lv);
    l->s_misses = ss_metric_series(l->o.misses, lv);
    l->s_evict = ss_metric_series(l->o.evictions, lv);
    l->s_load_s = ss_metric_series(l->o.load_seconds, lv);
    l->s_over = ss_metric_series(l->o.over_budget, lv);
    ss__lora_cache_publish(l);
}

void
ss__lora_cache_remove_series(ss_lora_t *l)
{
    const char *lv[] = { l->model, l->version };
    ss_metric_t *f[] = { l->o.resident, l->o.res_bytes, l->o.hits,
                         l->o.misses, l->o.evictions, l->o.load_seconds,
                         l->o.over_budget };

    for (size_t i = 0; l->o.resident != NULL && i < sizeof(f) / sizeof(f[0]);
         i++)
        ss_metric_series_remove(f[i], lv);
}

void
ss__lora_cache_publish(ss_lora_t *l)
{
    ss_series_set(l->s_res, l->n_res);
    ss_series_set(l->s_res_bytes, (double)l->res_bytes);
}

void
ss__lora_cache_enter(ss_lora_t *l, ss_adapter_t *a)
{
    a->in_set = true;
    a->resident = true;         /* a load reads the weights */
    a->last_use = ++l->tick;
    l->res_bytes += (int64_t)a->w_bytes;
    l->n_res++;
}

void
ss__lora_cache_leave(ss_lora_t *l, ss_adapter_t *a)
{
    /* its weights, if any, go with its last reference */
    if (a->resident) {
        l->res_bytes -= (int64_t)a->w_bytes;
        l->n_res--;
    }
    a->in_set = false;
}

/* The least recently used resident in-set adapter nobody pins or reads
 * back, or NULL. */
static ss_adapter_t *
victim(const ss_lora_t *l)
{
    ss_adapter_t *v = NULL;

    for (int i = 0; i < l->n_set; i++) {
        ss_adapter_t *a = l->set[i];

        if (a->resident && a->pins == 0 && !a->loading
            && (v == NULL || a->last_use < v->last_use))
            v = a;
    }
    return v;
}

void
ss__lora_cache_make_room(ss_lora_t *l)
{
    int64_t budget = l->o.resident_bytes, t;
    ss_adapter_t *v;

    if (budget <= 0)
        return;
    while (l->res_bytes > budget && (v = victim(l)) != NULL) {
        ss__adapter_drop_weights(v);
        v->resident = false;
        l->res_bytes -= (int64_t)v->w_bytes;
        l->n_res--;
        ss_series_add(l->s_evict, 1);
    }
    if (l->res_bytes <= budget)
        return;
    /* everything left is pinned by running batches: over the budget
     * until they finish (the next unpin evicts) */
    ss_series_add(l->s_over, 1);
    t = ss_clock_mono_ns();
    if (t - l->over_log_ns >= 1000000000) {
        l->over_log_ns = t;
        ss_log_warn("model=%s@%s adapters resident: %lld bytes, over "
                    "adapter_resident_bytes %lld while running batches "
                    "pin them", l->model, l->version,
                    (long long)l->res_bytes, (long long)budget);
    }
}

/* Reads a's weights back into a (outside the lock: a->loading is set, so
 * nobody else touches a's weights).  SS_EIO naming a when its files are
 * not the ones loaded. */
static int
read_back(ss_lora_t *l, ss_adapter_t *a, ss_err_t *err)
{
    ss__file_id_t fc, fw;
    ss_adapter_t *t = NULL;
    int rc;

    if ((rc = ss__adapter_file_ids(l->dir, a->name, &fc, &fw)) < 0)
        return ss_err_set(err, SS_EIO, "adapter '%s' is cold and its files "
                          "cannot be read back: %s", a->name,
                          strerror(-rc));
    if (!ss__file_id_same(&fc, &a->f_config) || !ss__file_id_same(&fw, &a->f_weights))
        return ss_err_set(err, SS_EIO, "adapter '%s' is cold and its files "
                          "changed since it was loaded (load it again to "
                          "serve the new ones)", a->name);
    if ((rc = ss_adapter_read(l, l->dir, a->name, &t, err)) < 0) {
        /* the reader's detail names paths: the log's, not the client's */
        ss_log_warn("model=%s@%s adapter '%s': read back: %s", l->model,
                    l->version, a->name, err->msg);
        return ss_err_set(err, rc == SS_ENOMEM ? rc : SS_EIO, "adapter "
                          "'%s' is cold and reading it back failed (the "
                          "log says why)", a->name);
    }
    rc = 0;
    if (t->sum != a->sum || t->n_mods != a->n_mods || t->r != a->r
        || t->w_bytes != a->w_bytes || !ss__file_id_same(&t->f_config, &fc)
        || !ss__file_id_same(&t->f_weights, &fw))
        rc = ss_err_set(err, SS_EIO, "adapter '%s' is cold and its weights "
                        "read back differ from those loaded (the file "
                        "changed)", a->name);
    for (int i = 0; rc == 0 && i < a->n_mods; i++)
        if (t->mods[i].site != a->mods[i].site)
            rc = ss_err_set(err, SS_EIO, "adapter '%s': read back, its "
                            "modules differ", a->name);
    for (int i = 0; rc == 0 && i < a->n_mods; i++) {
        a->mods[i].w.at = t->mods[i].w.at;
        a->mods[i].w.bp = t->mods[i].w.bp;
        t->mods[i].w.at = NULL;
        t->mods[i].w.bp = NULL;
    }
    ss__adapter_free(t);
    return rc;
}

/* glibc keeps the evicted adapters' blocks, which lie between the cold
 * ones' metadata, until a trim: loading the MNIST-sized MLP's 100
 * adapters r = 8 under a 13.4% budget grew the resident set by 1.07 MB
 * without one, 0.6 MB with (0.26 MB held; the rest mostly code and heap
 * a first load touches).  A trim walks the heap (milliseconds), so it
 * runs after a start's or sync's reads, never per read-back: those reuse
 * the blocks evictions free.  (One mapping per adapter instead, so an
 * eviction unmaps it, made a miss 5x slower: 755-905 us against 155 us,
 * page faults in this VM.) */
void
ss__lora_cache_trim(ss_lora_t *l)
{
#ifdef __GLIBC__
    if (l->o.resident_bytes > 0)
        malloc_trim(0);
#else
    (void)l;
#endif
}

int
ss_lora_pin(void *user, void *tag, ss_err_t *err)
{
    ss_lora_t *l = user;
    ss_adapter_t *a = tag;
    uint64_t gen;
    int64_t t0;
    int rc;

    if (l->o.resident_bytes <= 0)
        return 0;
    pthread_mutex_lock(&l->set_lock);
    for (;;) {
        if (a->resident) {
            a->pins++;
            a->last_use = ++l->tick;
            ss_series_add(l->s_hits, 1);
            pthread_mutex_unlock(&l->set_lock);
            return 0;
        }
        if (!a->loading)
            break;              /* ours to read back */
        /* another executor reads it back: its read is ours too */
        gen = a->load_gen;
        while (a->loading)
            pthread_cond_wait(&l->load_cond, &l->set_lock);
        if (a->load_gen != gen && a->load_rc < 0) {
            rc = ss_err_set(err, a->load_rc, "%s", a->load_msg != NULL
                            ? a->load_msg : "adapter could not be read "
                            "back");
            pthread_mutex_unlock(&l->set_lock);
            return rc;
        }
        /* read: resident now, or evicted again meanwhile (the loop
         * reads it once more) */
    }
    a->loading = true;
    pthread_mutex_unlock(&l->set_lock);

    t0 = ss_clock_mono_ns();
    rc = read_back(l, a, err);

    pthread_mutex_lock(&l->set_lock);
    a->loading = false;
    a->load_gen++;
    a->load_rc = rc;
    ss_free(a->load_msg);
    a->load_msg = rc < 0 ? ss_strdup(err->msg) : NULL;
    ss_series_add(l->s_misses, 1);
    ss_series_add(l->s_load_s, (double)(ss_clock_mono_ns() - t0) / 1e9);
    if (rc == 0) {
        a->resident = true;
        a->pins++;
        a->last_use = ++l->tick;
        if (a->in_set) {
            l->res_bytes += (int64_t)a->w_bytes;
            l->n_res++;
            ss__lora_cache_make_room(l);
            ss__lora_cache_publish(l);
        }
    }
    pthread_cond_broadcast(&l->load_cond);
    pthread_mutex_unlock(&l->set_lock);
    if (rc < 0)
        ss_log_warn("model=%s@%s %s", l->model, l->version, err->msg);
    return rc;
}

void
ss_lora_unpin(void *user, void *tag)
{
    ss_lora_t *l = user;
    ss_adapter_t *a = tag;

    if (l->o.resident_bytes <= 0)
        return;
    pthread_mutex_lock(&l->set_lock);
    SS_ASSERT(a->pins > 0);
    if (--a->pins == 0 && l->res_bytes > l->o.resident_bytes) {
        ss__lora_cache_make_room(l);
        ss__lora_cache_publish(l);
    }
    pthread_mutex_unlock(&l->set_lock);
}

void
ss_lora_memory(ss_lora_t *l, int64_t *resident, int64_t *meta,
               int *n_resident)
{
    int64_t m = 0;

    pthread_mutex_lock(&l->set_lock);
    for (int i = 0; i < l->n_set; i++)
        m += (int64_t)l->set[i]->meta_bytes;
    *resident = l->res_bytes;
    *meta = m;
    *n_resident = l->n_res;
    pthread_mutex_unlock(&l->set_lock);
}
