/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry's operations: load, activate, roll back, unload, scan, and
 * taking a version for a request.  The machinery they run on (tasks,
 * publishing, the reaper) is in registry.c.
 *
 * THREADS: [loop], except ss_registry_acquire() and ss_registry_ready()
 * [any], which read a model's serving state under its lock.
 */
#include "config.h"

#include "server/model/registry.h"
#include "server/model/internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/log.h"

static ss__registry_task_t *
find_newborn(const ss_registry_t *r, const char *name)
{
    ss__registry_task_t *t;

    for (t = r->newborn; t != NULL; t = t->next_newborn)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static int
load(ss_registry_t *r, const char *name, json_t *override, bool from_scan,
     ss_registry_cb cb, void *arg, ss_err_t *err)
{
    ss_model_t *m;
    ss__registry_task_t *t;
    json_t *copy = NULL;
    int i, rc;

    if (!ss__registry_valid_name(name))
        return ss_err_set(err, SS_EINVAL, "invalid model name '%s'", name);
    if (r->closing)
        return ss_err_set(err, SS_ENOTREADY, "the server is shutting down");
    /* A name not known yet gets its model only once its folder is found
     * (task_done), so a load of a missing model leaves nothing. */
    if ((m = ss__registry_find(r, name)) != NULL &&
        (rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if (m == NULL && find_newborn(r, name) != NULL)
        return ss_err_set(err, SS_ECONFLICT, "model '%s' is busy with "
                          "another load", name);
    /* The pool thread reads its own copy. */
    if (override != NULL && (copy = json_deep_copy(override)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if ((t = ss__registry_task_new(r, m, name, SS__REGISTRY_TASK_LOAD, cb,
                                   arg, err)) == NULL) {
        json_decref(copy);
        return err ? err->code : SS_ENOMEM;
    }
    t->from_scan = from_scan;
    t->override = copy;
    m = t->model;
    if (!t->newborn) {
        for (i = 0; i < m->n_versions; i++) {
            ss_version_ref(m->versions[i]);
            t->have[t->n_have++] = m->versions[i];
        }
        pthread_mutex_lock(&m->lock);
        t->was_wanted = m->wanted;
        m->wanted = true;
        if (m->state != SS_MODEL_READY)
            m->state = SS_MODEL_LOADING;
        pthread_mutex_unlock(&m->lock);
    }
    ss_log_info("model=%s loading", name);
    return ss__registry_start_task(r, t, err);
}

int
ss_registry_load(ss_registry_t *r, const char *name, json_t *override,
                 ss_registry_cb cb, void *arg, ss_err_t *err)
{
    return load(r, name, override, false, cb, arg, err);
}

/* Starts an ADD task: load version v when it is not, persist it as the
 * active one, switch (task_done). */
static int
add(ss_registry_t *r, ss_model_t *m, int64_t v, bool push_history,
    bool rollback, ss_registry_cb cb, void *arg, ss_err_t *err)
{
    ss__registry_task_t *t;
    ss_version_t *have = ss__registry_find_loaded(m, v);

    if ((t = ss__registry_task_new(r, m, m->name, SS__REGISTRY_TASK_ADD, cb,
                                   arg, err)) == NULL)
        return err ? err->code : SS_ENOMEM;
    t->cfg = m->cfg;
    t->version = v;
    t->push_history = push_history;
    t->rollback = rollback;
    if (have != NULL) {
        ss_version_ref(have);
        t->have[t->n_have++] = have;
    }
    return ss__registry_start_task(r, t, err);
}

int
ss_registry_activate(ss_registry_t *r, const char *name, int64_t v,
                     ss_registry_cb cb, void *arg, ss_err_t *err)
{
    ss_model_t *m;
    int rc;

    if ((m = ss__registry_find(r, name)) == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if (v <= 0)
        return ss_err_set(err, SS_ENOTFOUND, "model '%s' has no version "
                          "%lld", name, (long long)v);
    return add(r, m, v, true, false, cb, arg, err);
}

int
ss_registry_rollback(ss_registry_t *r, const char *name, ss_registry_cb cb,
                     void *arg, ss_err_t *err)
{
    ss_model_t *m;
    int rc;

    if ((m = ss__registry_find(r, name)) == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if (m->n_history == 0)
        return ss_err_set(err, SS_EINVAL, "model '%s' has no previous "
                          "active version to roll back to", name);
    /* The current one is not pushed again; the history pops on
     * success. */
    return add(r, m, m->history[m->n_history - 1], false, true, cb, arg,
               err);
}

int
ss_registry_unload(ss_registry_t *r, const char *name, ss_registry_cb cb,
                   void *arg, ss_err_t *err)
{
    ss_model_t *m;
    int rc;

    if ((m = ss__registry_find(r, name)) == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    pthread_mutex_lock(&m->lock);
    m->wanted = false;
    m->state = SS_MODEL_UNLOADING;
    pthread_mutex_unlock(&m->lock);
    ss__registry_set_versions(m, NULL, 0, NULL);
    ss__registry_set_gauges(m);
    ss_log_notice("model=%s unloading: %d version(s) draining", name,
                  m->live);
    if (m->live == 0) {
        ss__registry_set_state(m, SS_MODEL_UNAVAILABLE, "unloaded");
        if (cb != NULL)
            cb(arg, 0, NULL);
        return 0;
    }
    m->unload_cb = cb;
    m->unload_arg = arg;
    return 0;
}


/* ---- scanning ------------------------------------------------------------ */

/* The repository's model folders, read on a pool thread. */
typedef struct scan_entry {
    char name[SS__REGISTRY_NAME_MAX + 1];
    uint64_t fp;                /* ss__registry_files_fp() */
} scan_entry_t;

typedef struct scan {
    uv_work_t work;
    ss_registry_t *reg;
    char *repo;                 /* borrowed from the registry */
    scan_entry_t *e;
    int n, cap;
    int rc;                     /* -errno when the repository is unreadable */
    bool poll;
} scan_t;

static void
scan_work(uv_work_t *w)
{
    scan_t *sc = w->data;
    struct dirent *e;
    char dir[4096];
    DIR *d;

    if ((d = opendir(sc->repo)) == NULL) {
        sc->rc = -errno;
        return;
    }
    while ((e = readdir(d)) != NULL) {
        int64_t vs[1];

        if (!ss__registry_valid_name(e->d_name) ||
            snprintf(dir, sizeof(dir), "%s/%s", sc->repo, e->d_name) >=
                (int)sizeof(dir) ||
            ss__registry_list_versions(dir, vs, 1) <= 0)
            continue;
        if (sc->n == sc->cap) {
            int cap = sc->cap ? 2 * sc->cap : 16;
            void *p = ss_realloc(sc->e, (size_t)cap * sizeof(sc->e[0]));

            if (p == NULL)
                break;          /* the models found so far still load */
            sc->e = p;
            sc->cap = cap;
        }
        /* valid_name() bounds the length. */
        memcpy(sc->e[sc->n].name, e->d_name, strlen(e->d_name) + 1);
        sc->e[sc->n++].fp = ss__registry_files_fp(dir);
    }
    closedir(d);
}

static bool
scan_has(const scan_t *sc, const char *name)
{
    int i;

    for (i = 0; i < sc->n; i++)
        if (strcmp(sc->e[i].name, name) == 0)
            return true;
    return false;
}

/* What the scan does with a folder it found: load it when it is new, or
 * loaded and its files changed (a primary's new version or activation),
 * or -- a full scan only -- known and not loaded. */
static bool
scan_wants(const scan_t *sc, const ss_model_t *m, uint64_t fp)
{
    if (m->task != NULL)
        return false;           /* the next scan looks again */
    if (m->wanted)
        return m->files_fp != fp;
    /* Unloaded by hand: a poll leaves it so; a model that failed is
     * tried again when its files change. */
    if (sc->poll)
        return strcmp(m->reason, "unloaded") != 0 && m->files_fp != fp;
    return true;
}

static void
scan_done(uv_work_t *w, int status)
{
    scan_t *sc = w->data;
    ss_registry_t *r = sc->reg;
    ss_model_t *m;
    int i;

    r->tasks--;
    if (sc->rc < 0)
        ss_log_warn("model repository %s: %s", r->repo, strerror(-sc->rc));
    for (i = 0; i < sc->n && !r->closing && status == 0; i++) {
        const scan_entry_t *e = &sc->e[i];
        ss_err_t err = { 0 };

        m = ss__registry_find(r, e->name);
        if (m == NULL && find_newborn(r, e->name) != NULL)
            continue;
        if (m != NULL && !scan_wants(sc, m, e->fp))
            continue;
        if (m != NULL) {
            /* The load sets it again from what it reads; set now, a load
             * that cannot start is not retried until the files change. */
            m->files_fp = e->fp;
            if (m->wanted)
                ss_log_notice("model=%s: files changed, reloading",
                              e->name);
        }
        if (load(r, e->name, NULL, true, NULL, NULL, &err) < 0) {
            ss_log_error("model=%s: %s", e->name, err.msg);
            continue;
        }
        r->scan_pending++;
    }
    /* Models whose folder is gone (or holds no version) are unloaded. */
    for (m = r->models; m != NULL && sc->rc == 0 && !r->closing; m = m->next) {
        if (m->wanted && m->task == NULL && !scan_has(sc, m->name)) {
            ss_err_t err = { 0 };

            ss_log_notice("model=%s: folder gone, unloading", m->name);
            ss_registry_unload(r, m->name, NULL, NULL, &err);
        }
    }
    ss_free(sc->e);
    ss_free(sc);
    ss__registry_scan_step_done(r);
}

void
ss__registry_scan_start(ss_registry_t *r)
{
    scan_t *sc = ss_calloc(1, sizeof(*sc));

    r->scan_pending = 1;        /* the scan's own step */
    if (sc != NULL) {
        sc->reg = r;
        sc->repo = r->repo;
        sc->poll = r->scan_poll;
        sc->work.data = sc;
        if (uv_queue_work(r->loop, &sc->work, scan_work, scan_done) == 0) {
            r->tasks++;
            return;
        }
        ss_free(sc);
    }
    ss_log_error("model repository %s: cannot start the scan", r->repo);
    ss__registry_scan_step_done(r);
}

void
ss_registry_scan(ss_registry_t *r, ss_registry_cb cb, void *arg)
{
    r->scan_cb = cb;
    r->scan_arg = arg;
    r->scan_poll = false;
    if (r->scan_pending > 0) {
        /* One scan at a time; the next starts when this one is done. */
        r->scan_again = true;
        return;
    }
    ss__registry_scan_start(r);
}

void
ss_registry_poll(ss_registry_t *r)
{
    /* A scan running (start-up, SIGHUP, the last poll) looks already;
     * its callback stays its own. */
    if (r->scan_pending > 0 || r->closing)
        return;
    r->scan_cb = NULL;
    r->scan_arg = NULL;
    r->scan_poll = true;
    ss__registry_scan_start(r);
}

/* ---- serving ------------------------------------------------------------- */

int
ss_registry_acquire(ss_registry_t *r, const char *name, int64_t v,
                    ss_version_t **out, ss_err_t *err)
{
    ss_model_t *m = ss__registry_find(r, name);
    ss_version_t *ver = NULL;
    int rc = 0, i;

    *out = NULL;
    if (m == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if (atomic_load_explicit(&r->closing, memory_order_relaxed))
        return ss_err_set(err, SS_ENOTREADY, "the server is shutting down");
    /* Held for a few loads and one atomic increment (errors aside): a
     * swap on the loop thread cannot drop the version between finding it
     * and taking the reference. */
    pthread_mutex_lock(&m->lock);
    if (!m->wanted && m->n_versions == 0 && m->state != SS_MODEL_UNLOADING &&
        strcmp(m->reason, "unloaded") != 0) {
        /* A folder seen once and never loaded. */
        rc = ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    } else if (v == 0) {
        ver = m->active;
    } else {
        for (i = 0; i < m->n_versions && ver == NULL; i++)
            if (m->versions[i]->number == v)
                ver = m->versions[i];
        if (ver == NULL && m->active != NULL)
            rc = ss_err_set(err, SS_ENOTFOUND, "model '%s' has no loaded "
                            "version %lld", name, (long long)v);
    }
    if (ver != NULL)
        ss_version_ref(ver);
    else if (rc == 0)
        rc = ss_err_set(err, SS_ENOTREADY, "model '%s' is not ready%s%s",
                        name, m->reason[0] ? ": " : "", m->reason);
    pthread_mutex_unlock(&m->lock);
    *out = ver;
    return rc;
}

bool
ss_registry_ready(const ss_registry_t *r)
{
    ss_model_t *m;
    bool ready = true;

    if (atomic_load_explicit(&r->closing, memory_order_relaxed))
        return false;
    for (m = __atomic_load_n(&r->models, __ATOMIC_ACQUIRE); m != NULL && ready;
         m = m->next) {
        pthread_mutex_lock(&m->lock);
        ready = !m->wanted ||
                (m->state == SS_MODEL_READY && m->active != NULL);
        pthread_mutex_unlock(&m->lock);
    }
    return ready;
}

int
ss_registry_model_count(const ss_registry_t *r)
{
    const ss_model_t *m;
    int n = 0;

    for (m = r->models; m != NULL; m = m->next)
        n += m->n_versions > 0;
    return n;
}
