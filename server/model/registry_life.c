/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry's life and its versions' end: creating and freeing the
 * registry, the version references, the reaper thread that frees a
 * version once its last reference is gone, the loop's side of that
 * (on_async), and the resident-memory gauge sampled at scrape time.
 * What the registry does while it lives (tasks, publishing, hot swap) is
 * in registry.c; see there for the design.
 *
 * DESIGN: freeing a version joins its executors and frees its weights,
 * so it happens on the reaper thread, never on a loop.  The reaper hands
 * the emptied struct back on the freed queue and wakes the loop
 * (uv_async), which counts it off its model, so that an unload answers
 * once the model's versions are really gone.
 *
 * THREADS: [loop], except ss_version_ref/unref [any], the reaper, and
 * sample_resident (an HTTP loop, at scrape time).
 */
#include "config.h"

#include "server/model/registry.h"
#include "server/model/internal.h"

#include <malloc.h>
#include <pthread.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/model/adapter.h"

/* ---- versions and the reaper ----------------------------------------- */

void
ss_version_ref(ss_version_t *v)
{
    ss_ref_get(&v->ref);
}

void
ss__version_destroy(ss_version_t *v)
{
    ss_batcher_free(v->batcher);
    ss_lora_free(v->lora);      /* after the batcher: its hook uses it */
    ss_graph_free(v->graph);
    ss_free(v);
}

void
ss_version_unref(ss_version_t *v)
{
    ss_registry_t *r;

    if (v == NULL || !ss_ref_put(&v->ref))
        return;
    r = v->model->reg;
    ss_queue_push(&r->reap, &v->reap_link);
}

/* [reaper] Hands the heap's free pages back to the system.  glibc keeps
 * what a freed plan or version leaves between live blocks until a trim:
 * on 1,000 MNIST-sized models that was 19 MB of 124 MB RSS after the
 * load-time plans were freed.  A trim walks the heap (milliseconds at
 * 100 MB) holding each arena's lock in turn, so it runs on the reaper,
 * never on a loop: after a scan (the loop queues r->trim_link) and when
 * the reaper runs dry, not per version. */
static void
trim_heap(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void *
reaper_main(void *arg)
{
    ss_registry_t *r = arg;
    ss_qlink_t *l;

    /* NULL once ss_registry_free closed the queue and it is empty. */
    while ((l = ss_queue_pop_wait(&r->reap)) != NULL) {
        ss_version_t *v;

        if (l == &r->trim_link) {
            trim_heap();
            continue;
        }
        v = SS_QUEUE_ENTRY(l, ss_version_t, reap_link);

        /* The heavy part here (joins executors, frees weights); the
         * struct goes back to the loop, which counts it off its model. */
        ss_log_info("model=%s@%s freed", v->model->name, v->label);
        ss_batcher_free(v->batcher);
        ss_lora_free(v->lora);  /* after the batcher: its hook uses it */
        ss_graph_free(v->graph);
        v->batcher = NULL;
        v->lora = NULL;
        v->graph = NULL;
        ss_queue_push(&r->freed, &v->reap_link);
        uv_async_send(&r->async);
        if (ss_queue_len(&r->reap) == 0)
            trim_heap();
    }
    return NULL;
}

/* [any: an HTTP loop, at scrape time] slimserve_model_resident_bytes of
 * every loaded version (docs/architecture.md, "Model memory"): the
 * engine's count for its graph and plans plus its file mappings'
 * resident pages.  Reading the page tables takes a few hundred
 * microseconds per 300 MB mapped, so it runs without the model's lock,
 * on references taken under it; the series is set under the lock again,
 * and only while the version is still listed, so that a version the
 * loop dropped meanwhile (drop_gauges, after the list changed) is not
 * brought back. */
static void
sample_resident(void *arg)
{
    ss_registry_t *r = arg;
    ss_model_t *m;

    for (m = __atomic_load_n(&r->models, __ATOMIC_ACQUIRE); m != NULL;
         m = m->next) {
        ss_version_t *vs[SS_MAX_LOADED];
        double bytes[SS_MAX_LOADED];
        int n, i;

        pthread_mutex_lock(&m->lock);
        n = m->n_versions;
        for (i = 0; i < n; i++) {
            vs[i] = m->versions[i];
            ss_version_ref(vs[i]);
        }
        pthread_mutex_unlock(&m->lock);
        for (i = 0; i < n; i++) {
            ss_graph_memory_t mem;

            ss_graph_memory(vs[i]->graph, &mem);
            bytes[i] = (double)(mem.engine_bytes
                                + mem.mapped_resident_bytes);
        }
        pthread_mutex_lock(&m->lock);
        for (i = 0; i < n; i++)
            for (int k = 0; k < m->n_versions; k++)
                if (m->versions[k] == vs[i]) {
                    const char *lv[2] = { m->name, vs[i]->label };

                    ss_series_set(ss_metric_series(r->g_resident, lv),
                                  bytes[i]);
                }
        pthread_mutex_unlock(&m->lock);
        for (i = 0; i < n; i++)
            ss_version_unref(vs[i]);
    }
}

/* ---- events from the reaper --------------------------------------------- */

static void
on_async(uv_async_t *a)
{
    ss_registry_t *r = a->data;
    ss_qlink_t *l, *next;

    /* Wake-ups coalesce: take every version freed since the last one. */
    for (l = ss_queue_take_all(&r->freed); l != NULL; l = next) {
        ss_version_t *v = SS_QUEUE_ENTRY(l, ss_version_t, reap_link);
        ss_model_t *m = v->model;

        next = l->next;
        ss_free(v);
        if (--m->live == 0 && m->state == SS_MODEL_UNLOADING) {
            ss_registry_cb cb = m->unload_cb;

            ss__registry_set_state(m, SS_MODEL_UNAVAILABLE, "unloaded");
            m->unload_cb = NULL;
            ss_log_notice("model=%s unloaded", m->name);
            if (cb != NULL)
                cb(m->unload_arg, 0, NULL);
        }
    }
}

/* ---- life ---------------------------------------------------------------- */

static void on_async_closed(uv_handle_t *h);

int
ss_registry_new(const ss_registry_opts_t *o, ss_registry_t **out,
                ss_err_t *err)
{
    static const char *const l1[] = { "model" };
    static const char *const l2[] = { "model", "version" };
    ss_registry_t *r;

    *out = NULL;
    if ((r = ss_calloc(1, sizeof(*r))) == NULL ||
        (r->repo = ss_strdup(o->repository)) == NULL) {
        ss_free(r);
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    }
    r->loop = o->loop;
    r->default_threads = o->default_threads;
    r->metrics = o->metrics;
    r->batch_metrics = o->batch_metrics;
    if (o->cpus != NULL) {
        r->pin = true;
        r->cpus = *o->cpus;
    }
    if (o->metrics != NULL) {
        r->g_active = ss_metrics_gauge(o->metrics,
                                       "slimserve_model_active_version",
                                       "The version each model serves.", 1,
                                       l1);
        r->g_loaded = ss_metrics_gauge(o->metrics,
                                       "slimserve_model_version_loaded",
                                       "1 for every loaded model version.",
                                       2, l2);
        r->g_memory = ss_metrics_gauge(o->metrics,
                                       "slimserve_model_memory_bytes",
                                       "Weight bytes of a loaded model "
                                       "version.", 2, l2);
        r->g_resident = ss_metrics_gauge(
            o->metrics, "slimserve_model_resident_bytes",
            "Memory a loaded model version holds, sampled at scrape "
            "time: the engine's allocations for it (constants, plans, "
            "packed weights) plus the resident pages of its file "
            "mappings.", 2, l2);
        if (r->g_active == NULL || r->g_loaded == NULL ||
            r->g_memory == NULL || r->g_resident == NULL ||
            ss_lora_metrics_init(o->metrics, &r->lora_metrics) < 0) {
            ss_free(r->repo);
            ss_free(r);
            return ss_err_set(err, SS_ENOMEM, "out of memory for metrics");
        }
    }
    /* One executor pool for every model: threads follow the serving
     * cores, not the number of models. */
    {
        int rc = ss_exec_pool_new(o->default_threads > 0 ? o->default_threads
                                                        : 1,
                                  o->cpus, &r->pool, err);

        if (rc < 0) {
            ss_free(r->repo);
            ss_free(r);
            return rc;
        }
    }
    ss_queue_init(&r->reap);
    ss_queue_init(&r->freed);
    uv_async_init(r->loop, &r->async, on_async);
    r->async.data = r;
    if (pthread_create(&r->reaper, NULL, reaper_main, r) != 0) {
        /* No model yet: the close callback frees r once the loop runs. */
        ss_exec_pool_free(r->pool);
        r->pool = NULL;
        uv_close((uv_handle_t *)&r->async, on_async_closed);
        return ss_err_set(err, SS_EINTERNAL, "cannot start the reaper "
                          "thread");
    }
    /* without memory for the hook the gauge stays empty: not fatal */
    if (r->g_resident != NULL
        && ss_metrics_on_render(r->metrics, sample_resident, r) < 0)
        ss_log_warn("slimserve_model_resident_bytes is not sampled: no "
                    "room for its render hook");
    *out = r;
    return 0;
}

void
ss_registry_close(ss_registry_t *r)
{
    ss_model_t *m;

    if (r == NULL || r->closing)
        return;
    r->closing = true;
    for (m = r->models; m != NULL; m = m->next)
        ss__registry_set_versions(m, NULL, 0, NULL);
}

bool
ss_registry_idle(const ss_registry_t *r)
{
    const ss_model_t *m;

    if (r == NULL)
        return true;
    if (r->tasks > 0)
        return false;
    for (m = r->models; m != NULL; m = m->next)
        if (m->live > 0)
            return false;
    return true;
}

static void
on_async_closed(uv_handle_t *h)
{
    ss_registry_t *r = h->data;
    ss_model_t *m, *next;
    ss_qlink_t *l, *nl;

    for (m = r->models; m != NULL; m = next) {
        next = m->next;
        ss__registry_model_free(m);
    }
    /* Versions the reaper freed after the loop's last wake-up. */
    for (l = ss_queue_take_all(&r->freed); l != NULL; l = nl) {
        nl = l->next;
        ss_free(SS_QUEUE_ENTRY(l, ss_version_t, reap_link));
    }
    ss_queue_destroy(&r->reap);
    ss_queue_destroy(&r->freed);
    ss_free(r->repo);
    ss_free(r);
}

void
ss_registry_free(ss_registry_t *r)
{
    if (r == NULL)
        return;
    /* a scrape from now on no longer walks the models */
    if (r->g_resident != NULL)
        ss_metrics_on_render_remove(r->metrics, sample_resident, r);
    ss_registry_close(r);
    ss_queue_close(&r->reap);
    pthread_join(r->reaper, NULL);
    /* Every version, and so every batcher on the pool, is freed now. */
    ss_exec_pool_free(r->pool);
    r->pool = NULL;
    /* The struct goes once libuv is done with the handle. */
    uv_close((uv_handle_t *)&r->async, on_async_closed);
}
