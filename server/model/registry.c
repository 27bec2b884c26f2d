/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The model registry: loading, hot swap, unloading.
 *
 * The operations users call (load, activate, unload, scan, acquire) are in
 * registry_ops.c; this file is the machinery under them (models, tasks,
 * publishing on the loop), except the work a task does on the pool thread
 * (reading the folder, loading versions), which is registry_load.c, and
 * the registry's creation and end, the version references and the reaper
 * that frees versions, which are registry_life.c.
 *
 * DESIGN: models live in a list owned by the loop thread and are never
 * freed before the registry, so versions and tasks may point at them.  A
 * model runs at most one operation (task) at a time.  A task reads the
 * model's folder, loads the versions it needs on a libuv pool thread
 * (graph import, batcher start, plan warm-up), and is published in the
 * after-work callback on the loop thread.  Versions no longer listed lose
 * the list's reference; in-flight requests hold theirs, so a version is
 * freed only when its last batch is done.  Freeing happens on the reaper
 * thread, which then tells the loop (uv_async) so that unloads can answer
 * once the model's versions are really gone.
 *
 * Requests take their version reference on the HTTP loop threads, not on
 * this loop, so "load the active pointer, then increment" would race with
 * a swap that drops the old version's last reference in between.  Each
 * model has a mutex held by a reader only around that load and increment
 * (ss_registry_acquire) and by the loop thread around the stores to the
 * version list, the active pointer and the state; the list's reference
 * of a version it drops is released after the store, outside the lock.
 * Measured on the 2-core test machine, taking and dropping a reference
 * costs 29 ns alone and 61 ns with the lock; two threads doing nothing
 * else on one model, 62 and 139 ns -- next to the tens of microseconds a
 * request spends on its loop.  There is no registry-wide lock on the
 * path.  (A seqlock would not help: the reference must be taken before
 * the version can be freed, which needs the lock or deferred
 * reclamation.)  The model list is prepend-only and published with a
 * release store, so finding a model by name takes no lock at all.
 *
 * The active version is persisted in config.json before it is switched,
 * so a failed write changes nothing and a restart serves the same
 * version.
 *
 * THREADS: [loop], except the load work (pool thread, touches only its
 * task) and the reaper (registry_life.c), which takes versions from the
 * reap queue and hands them back on the freed queue (each an ss_queue_t
 * with its own lock).
 */
#include "config.h"

#include "server/model/registry.h"
#include "server/model/internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/utf8.h"
#include "server/model/sampler.h"

/* ---- models ------------------------------------------------------------ */

const char *
ss_model_name(const ss_model_t *m)
{
    return m->name;
}

ss_sampler_t *
ss_model_sampler(const ss_model_t *m)
{
    /* Set once on the loop thread, read by the HTTP loops. */
    return __atomic_load_n(&m->sampler, __ATOMIC_ACQUIRE);
}

ss_model_t *
ss__registry_find(const ss_registry_t *r, const char *name)
{
    ss_model_t *m;

    for (m = __atomic_load_n(&r->models, __ATOMIC_ACQUIRE); m != NULL;
         m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* A model name is a folder name that is safe in a path, a URL, JSON and
 * a log line: valid UTF-8 (JSON strings must be), no control characters,
 * no separator, not hidden (".", "..", temporary files). */
int
ss__registry_valid_name(const char *name)
{
    size_t n = strlen(name), i;

    if (n == 0 || n > SS__REGISTRY_NAME_MAX || name[0] == '.' ||
        !ss_utf8_valid(name, n))
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* A model not yet in the list: a load of a new name works on it and
 * publishes it once its folder is found (ss__registry_model_free
 * otherwise). */
ss_model_t *
ss__registry_model_new(ss_registry_t *r, const char *name, ss_err_t *err)
{
    ss_model_t *m;
    char dir[4096];

    if (snprintf(dir, sizeof(dir), "%s/%s", r->repo, name) >=
        (int)sizeof(dir)) {
        ss_err_set(err, SS_EINVAL, "model name too long");
        return NULL;
    }
    if ((m = ss_calloc(1, sizeof(*m))) == NULL ||
        (m->name = ss_strdup(name)) == NULL ||
        (m->dir = ss_strdup(dir)) == NULL) {
        if (m != NULL)
            ss_free(m->name);
        ss_free(m);
        ss_err_set(err, SS_ENOMEM, "out of memory");
        return NULL;
    }
    m->reg = r;
    ss_model_config_default(&m->cfg);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void
ss__registry_model_free(ss_model_t *m)
{
    ss_sampler_free(m->sampler);
    pthread_mutex_destroy(&m->lock);
    ss_free(m->on_disk);
    ss_free(m->name);
    ss_free(m->dir);
    ss_free(m);
}

/* [loop] m's listing of version folders becomes the n in l. */
static int
set_on_disk(ss_model_t *m, const int64_t *l, int n, ss_err_t *err)
{
    int64_t *d = NULL;

    if (n > 0 && (d = ss_malloc(sizeof(*d) * (size_t)n)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if (n > 0)
        memcpy(d, l, sizeof(*d) * (size_t)n);
    ss_free(m->on_disk);
    m->on_disk = d;
    m->n_on_disk = n;
    return 0;
}

static void
model_publish(ss_registry_t *r, ss_model_t *m)
{
    m->next = r->models;
    /* Other threads may walk the list now: publish m complete. */
    __atomic_store_n(&r->models, m, __ATOMIC_RELEASE);
}

/* ---- publishing (loop thread) ------------------------------------------ */

static void
complete(ss__registry_task_t *t, int rc, const ss_err_t *err)
{
    if (t->cb != NULL)
        t->cb(t->cb_arg, rc, err);
}

static void
task_free(ss__registry_task_t *t)
{
    int i;

    /* A new model the task never published (it did not start). */
    if (t->newborn && t->model != NULL && !t->started)
        ss__registry_model_free(t->model);

    for (i = 0; i < t->n_load; i++)
        ss_version_unref(t->loaded[i]);
    for (i = 0; i < t->n_have; i++)
        ss_version_unref(t->have[i]);
    json_decref(t->override);
    ss_free(t);
}

static int
in_list(const int64_t *l, int n, int64_t v)
{
    int i;

    for (i = 0; i < n; i++)
        if (l[i] == v)
            return 1;
    return 0;
}

ss_version_t *
ss__registry_find_loaded(ss_model_t *m, int64_t v)
{
    int i;

    for (i = 0; i < m->n_versions; i++)
        if (m->versions[i]->number == v)
            return m->versions[i];
    return NULL;
}

void
ss__registry_set_gauges(ss_model_t *m)
{
    ss_registry_t *r = m->reg;
    const char *lv[2];
    int i;

    if (r->g_active == NULL)
        return;
    lv[0] = m->name;
    ss_series_set(ss_metric_series(r->g_active, lv),
                  m->active ? (double)m->active->number : 0);
    for (i = 0; i < m->n_versions; i++) {
        lv[1] = m->versions[i]->label;
        ss_series_set(ss_metric_series(r->g_loaded, lv), 1);
        ss_series_set(ss_metric_series(r->g_memory, lv),
                      (double)m->versions[i]->weight_bytes);
    }
}

static void
drop_gauges(ss_model_t *m, ss_version_t *v)
{
    ss_registry_t *r = m->reg;
    const char *lv[2] = { m->name, v->label };

    if (r->g_loaded == NULL)
        return;
    ss_metric_series_remove(r->g_loaded, lv);
    ss_metric_series_remove(r->g_memory, lv);
    ss_metric_series_remove(r->g_resident, lv);
}

/* Replaces the loaded list with keep[] (references taken over) and the
 * active version with active (NULL or one of keep[]) in one step under
 * the model's lock; the versions left out lose the list's reference after
 * the lock is released, when no reader can find them any more. */
void
ss__registry_set_versions(ss_model_t *m, ss_version_t **keep, int n,
                          ss_version_t *active)
{
    ss_version_t *drop[SS_MAX_LOADED];
    int i, j, nd = 0;

    for (i = 0; i < m->n_versions; i++) {
        int kept = 0;

        for (j = 0; j < n; j++)
            kept |= keep[j] == m->versions[i];
        if (!kept)
            drop[nd++] = m->versions[i];
    }
    pthread_mutex_lock(&m->lock);
    if (n > 0)
        memcpy(m->versions, keep, sizeof(*keep) * (size_t)n);
    m->n_versions = n;
    m->active = active;
    pthread_mutex_unlock(&m->lock);
    for (i = 0; i < nd; i++) {
        ss_log_info("model=%s@%s unloading (frees once idle)", m->name,
                    drop[i]->label);
        drop_gauges(m, drop[i]);
        ss_version_unref(drop[i]);
    }
}

void
ss__registry_set_state(ss_model_t *m, ss_model_state_t st,
                       const char *reason)
{
    pthread_mutex_lock(&m->lock);
    m->state = st;
    if (reason != NULL)
        snprintf(m->reason, sizeof(m->reason), "%s", reason);
    pthread_mutex_unlock(&m->lock);
}

/* The version to serve among list[]: the configured one if there, else
 * the newest. */
static ss_version_t *
pick_active(const ss_model_t *m, ss_version_t **list, int n)
{
    ss_version_t *a = NULL;
    int i;

    for (i = 0; i < n && m->cfg.active_version > 0; i++)
        if (list[i]->number == m->cfg.active_version)
            return list[i];
    for (i = 0; i < n; i++)
        if (a == NULL || list[i]->number > a->number)
            a = list[i];
    return a;
}

/* Keeps the versions the policy wants, plus the active and the previous
 * active one (so a rollback is instant). */
void
ss__registry_trim(ss_model_t *m)
{
    ss_version_t *keep[SS_MAX_LOADED];
    int64_t prev = m->n_history ? m->history[m->n_history - 1] : 0;
    int i, n = 0;

    for (i = 0; i < m->n_versions; i++) {
        ss_version_t *v = m->versions[i];

        if (v == m->active || v->number == prev ||
            ss_model_config_wants(&m->cfg, v->number, m->on_disk,
                                  m->n_on_disk))
            keep[n++] = v;
    }
    ss__registry_set_versions(m, keep, n, m->active);
}

/* Makes v (listed) active; push_history keeps the current one for
 * rollback.  The choice is persisted already (task_work). */
void
ss__registry_set_active(ss_model_t *m, ss_version_t *v, bool push_history)
{
    m->cfg.active_version = v->number;
    if (m->active == v)
        return;
    if (push_history && m->active != NULL) {
        if (m->n_history == SS_MAX_HISTORY) {
            memmove(m->history, m->history + 1,
                    sizeof(m->history[0]) * (SS_MAX_HISTORY - 1));
            m->n_history--;
        }
        m->history[m->n_history++] = m->active->number;
    }
    ss_log_notice("model=%s@%s active (was %s)", m->name, v->label,
                  m->active ? m->active->label : "none");
    /* The old active version stays listed until the trim below. */
    pthread_mutex_lock(&m->lock);
    m->active = v;
    pthread_mutex_unlock(&m->lock);
    ss__registry_trim(m);
    ss__registry_set_gauges(m);
}

void
ss__registry_scan_step_done(ss_registry_t *r)
{
    ss_registry_cb cb = r->scan_cb;

    if (r->scan_pending == 0 || --r->scan_pending > 0)
        return;
    if (r->scan_again && !r->closing) {
        /* Asked for while this one ran: its callback waits for it. */
        r->scan_again = false;
        ss__registry_scan_start(r);
        return;
    }
    r->scan_again = false;
    r->scan_cb = NULL;
    /* Only this thread queues the link: unlinked if still queued, it
     * cannot be queued twice. */
    ss_queue_remove(&r->reap, &r->trim_link);
    ss_queue_push(&r->reap, &r->trim_link);
    if (cb != NULL)
        cb(r->scan_arg, 0, NULL);
}

static void
publish_load(ss__registry_task_t *t, ss_err_t *err, int *rc)
{
    ss_model_t *m = t->model;
    ss_version_t *list[SS_MAX_LOADED], *active;
    int i, n = 0, failed = 0;
    char msg[SS_ERR_MSG_MAX] = "";

    for (i = 0; i < m->n_versions; i++) {
        ss_version_t *v = m->versions[i];

        /* Kept: still wanted and not reloaded by this task. */
        if (!in_list(t->load, t->n_load, v->number) &&
            (ss_model_config_wants(&t->cfg, v->number, m->on_disk,
                                   m->n_on_disk) ||
             v->number == t->cfg.active_version))
            list[n++] = v;
    }
    for (i = 0; i < t->n_load; i++) {
        if (t->loaded[i] != NULL) {
            list[n++] = t->loaded[i];
            t->loaded[i] = NULL;        /* the list owns it now */
        } else {
            failed++;
            snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "%s%s",
                     msg[0] ? "; " : "", t->verr[i]);
        }
    }
    if (n == 0 && (failed > 0 || m->n_versions == 0)) {
        if (failed == 0)
            snprintf(msg, sizeof(msg), "no version folder with a model.onnx "
                     "in '%s'", m->name);
        *rc = ss_err_set(err, SS_EBADMODEL, "model '%s': %s", m->name, msg);
        ss_log_error("model=%s failed to load: %s", m->name, msg);
        /* A reload that fails keeps serving what was there; the index
         * says why the new files are not served. */
        ss__registry_set_state(m, m->n_versions ? m->state
                                                : SS_MODEL_UNAVAILABLE,
                               err->msg);
        return;
    }
    m->cfg = t->cfg;
    active = pick_active(m, list, n);
    if (active != m->active)
        ss_log_notice("model=%s@%s active", m->name, active->label);
    ss__registry_set_versions(m, list, n, active);
    ss__registry_trim(m);
    ss__registry_set_gauges(m);
    if (m->sampler == NULL && m->cfg.sample_capacity > 0)
        __atomic_store_n(&m->sampler,
                         ss_sampler_new(m->cfg.sample_capacity,
                                        m->cfg.sample_probability,
                                        m->cfg.sample_max_bytes,
                                        m->reg->metrics, m->name),
                         __ATOMIC_RELEASE);
    if (failed > 0) {
        *rc = ss_err_set(err, SS_EBADMODEL, "model '%s': %s", m->name, msg);
        ss_log_error("model=%s: some versions failed: %s", m->name, msg);
    }
    ss__registry_set_state(m, SS_MODEL_READY, failed > 0 ? err->msg : "");
    ss_log_notice("model=%s ready: %d version(s) loaded, active %s",
                  m->name, m->n_versions,
                  m->active ? m->active->label : "none");
}

static void
publish_add(ss__registry_task_t *t, ss_err_t *err, int *rc)
{
    ss_model_t *m = t->model;
    ss_version_t *v = t->n_have > 0 ? t->have[0] : t->loaded[0];

    if (v == NULL) {
        *rc = ss_err_set(err, SS_EBADMODEL, "model '%s' version %lld: %s",
                         m->name, (long long)t->version, t->verr[0]);
        return;
    }
    if (t->persist_rc < 0) {
        /* Nothing changed; a version loaded for it goes with the task. */
        *rc = ss_err_set(err, t->persist_rc, "%s", t->persist_err.msg);
        return;
    }
    if (t->n_have == 0) {
        if (m->n_versions == SS_MAX_LOADED) {
            *rc = ss_err_set(err, SS_ECONFLICT, "model '%s' has too many "
                             "loaded versions", m->name);
            return;
        }
        pthread_mutex_lock(&m->lock);
        m->versions[m->n_versions++] = v;
        pthread_mutex_unlock(&m->lock);
        t->loaded[0] = NULL;        /* the list owns it now */
    }
    if (t->rollback && m->n_history > 0 &&
        m->history[m->n_history - 1] == t->version)
        m->n_history--;
    ss__registry_set_active(m, v, t->push_history);
    ss__registry_set_state(m, SS_MODEL_READY, NULL);
    ss__registry_set_gauges(m);
}

static void
newborn_remove(ss_registry_t *r, ss__registry_task_t *t)
{
    ss__registry_task_t **p;

    for (p = &r->newborn; *p != NULL; p = &(*p)->next_newborn)
        if (*p == t) {
            *p = t->next_newborn;
            return;
        }
}

static void
task_done(uv_work_t *w, int status)
{
    ss__registry_task_t *t = w->data;
    ss_model_t *m = t->model;
    ss_registry_t *r = t->reg;
    ss_err_t err = { 0 };
    int i, rc = 0, live = 0;
    bool scan = t->from_scan;

    r->tasks--;
    for (i = 0; i < t->n_load; i++)
        live += t->loaded[i] != NULL;
    if (t->newborn) {
        newborn_remove(r, t);
        if (!t->found) {
            /* No folder: no model, nothing loaded (plan_load stopped). */
            ss__registry_model_free(m);
            m = t->model = NULL;
        } else {
            /* Known from now on, listed by the index even when its
             * config.json is wrong; versions may point at it. */
            if (t->rc == 0) {
                m->wanted = true;
                m->state = SS_MODEL_LOADING;
            }
            model_publish(r, m);
        }
    }
    if (m != NULL) {
        m->task = NULL;
        m->live += live;
        m->files_fp = t->files_fp;
    }
    if (r->closing || status == UV_ECANCELED) {
        rc = ss_err_set(&err, SS_ENOTREADY, "the server is shutting down");
    } else if (t->rc < 0) {
        rc = ss_err_set(&err, t->rc, "%s", t->err.msg);
        /* A load that could not start (folder gone, config.json wrong)
         * takes back what it claimed; the index says why. */
        if (m != NULL && t->kind == SS__REGISTRY_TASK_LOAD) {
            pthread_mutex_lock(&m->lock);
            m->wanted = t->was_wanted;
            pthread_mutex_unlock(&m->lock);
            if (m->n_versions == 0)
                ss__registry_set_state(m, SS_MODEL_UNAVAILABLE, err.msg);
        }
    } else if (t->kind == SS__REGISTRY_TASK_LOAD &&
               (rc = set_on_disk(m, t->on_disk, t->n_on_disk, &err)) < 0) {
        /* Nothing published; the versions loaded go with the task. */
        if (m->n_versions == 0)
            ss__registry_set_state(m, SS_MODEL_UNAVAILABLE, err.msg);
    } else if (t->kind == SS__REGISTRY_TASK_LOAD) {
        publish_load(t, &err, &rc);
    } else {
        publish_add(t, &err, &rc);
    }
    if (m != NULL && m->state == SS_MODEL_LOADING)
        ss__registry_set_state(m, m->n_versions ? SS_MODEL_READY
                                                : SS_MODEL_UNAVAILABLE, NULL);
    complete(t, rc, &err);
    task_free(t);
    if (scan)
        ss__registry_scan_step_done(r);
}

int
ss__registry_start_task(ss_registry_t *r, ss__registry_task_t *t,
                        ss_err_t *err)
{
    int rc;

    t->work.data = t;
    if ((rc = uv_queue_work(r->loop, &t->work, ss__registry_task_work,
                            task_done)) < 0) {
        task_free(t);
        return ss_err_set(err, SS_EINTERNAL, "cannot queue the load: %s",
                          uv_strerror(rc));
    }
    t->started = true;
    t->model->task = t;
    if (t->newborn) {
        t->next_newborn = r->newborn;
        r->newborn = t;
    }
    r->tasks++;
    return 0;
}

/* m NULL: a name not known yet (LOAD only); the task makes its model. */
ss__registry_task_t *
ss__registry_task_new(ss_registry_t *r, ss_model_t *m, const char *name,
                      ss__registry_task_kind_t kind, ss_registry_cb cb,
                      void *arg, ss_err_t *err)
{
    ss__registry_task_t *t;

    if ((t = ss_calloc(1, sizeof(*t))) == NULL) {
        ss_err_set(err, SS_ENOMEM, "out of memory");
        return NULL;
    }
    if (m == NULL) {
        if ((m = ss__registry_model_new(r, name, err)) == NULL) {
            ss_free(t);
            return NULL;
        }
        t->newborn = true;
    }
    t->reg = r;
    t->model = m;
    t->kind = kind;
    t->cb = cb;
    t->cb_arg = arg;
    snprintf(t->name, sizeof(t->name), "%s", m->name);
    snprintf(t->dir, sizeof(t->dir), "%s", m->dir);
    return t;
}

int
ss__registry_check_idle(ss_registry_t *r, ss_model_t *m, ss_err_t *err)
{
    if (r->closing)
        return ss_err_set(err, SS_ENOTREADY, "the server is shutting down");
    if (m->task != NULL || m->unload_cb != NULL)
        return ss_err_set(err, SS_ECONFLICT, "model '%s' is busy with another "
                          "load, unload or activation", m->name);
    return 0;
}
