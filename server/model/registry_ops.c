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

#include "common/log.h"

int
ss_registry_load(ss_registry_t *r, const char *name, json_t *override,
                 ss_registry_cb cb, void *arg, ss_err_t *err)
{
    ss_model_config_t cfg;
    ss_model_t *m;
    ss__registry_task_t *t;
    int i, n, rc;

    if (!ss__registry_valid_name(name))
        return ss_err_set(err, SS_EINVAL, "invalid model name '%s'", name);
    if ((m = ss__registry_model_get(r, name, err)) == NULL)
        return err ? err->code : SS_ENOMEM;
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if ((rc = ss_model_config_load(m->dir, &cfg, err)) < 0)
        return rc;
    if (override != NULL && (rc = ss_model_config_apply(&cfg, override,
                                                        err)) < 0)
        return ss_err_wrap(err, rc, "config override");
    n = ss__registry_list_versions(m->dir, m->on_disk, SS_MAX_ON_DISK);
    if (n < 0) {
        m->n_on_disk = 0;
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s': %s", name,
                          strerror(-n));
    }
    m->n_on_disk = n;
    if ((t = ss__registry_task_new(r, m, SS__REGISTRY_TASK_LOAD, cb, arg,
                                   err)) == NULL)
        return SS_ENOMEM;
    t->cfg = cfg;
    for (i = 0; i < n && t->n_load < SS_MAX_LOADED; i++) {
        int64_t v = m->on_disk[i], mt = 0, sz = 0;
        ss_version_t *have = ss__registry_find_loaded(m, v);

        if (!ss_model_config_wants(&cfg, v, m->on_disk, n) &&
            v != cfg.active_version)
            continue;
        ss__registry_file_stamp(m->dir, v, &mt, &sz);
        /* Unchanged files keep their loaded version, unless the config
         * changed how it runs. */
        if (have != NULL && have->file_mtime_ns == mt &&
            have->file_size == sz &&
            memcmp(&have->cfg, &cfg, sizeof(cfg)) == 0)
            continue;
        if (have != NULL && have->file_mtime_ns == mt &&
            have->file_size == sz && override == NULL &&
            have->cfg.active_version != cfg.active_version)
            continue;
        t->load[t->n_load++] = v;
    }
    pthread_mutex_lock(&m->lock);
    m->wanted = true;
    if (m->state != SS_MODEL_READY)
        m->state = SS_MODEL_LOADING;
    pthread_mutex_unlock(&m->lock);
    ss_log_info("model=%s loading %d version(s)", name, t->n_load);
    return ss__registry_start_task(r, t, err);
}

int
ss_registry_activate(ss_registry_t *r, const char *name, int64_t v,
                     ss_registry_cb cb, void *arg, ss_err_t *err)
{
    ss_version_t *have;
    ss_model_t *m;
    ss__registry_task_t *t;
    char dir[4200];
    struct stat st;
    int rc;

    if ((m = ss__registry_find(r, name)) == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if ((have = ss__registry_find_loaded(m, v)) != NULL) {
        if ((rc = ss__registry_switch_active(m, have, true, err)) < 0)
            return rc;
        if (cb != NULL)
            cb(arg, 0, NULL);
        return 0;
    }
    snprintf(dir, sizeof(dir), "%s/%lld/model.onnx", m->dir, (long long)v);
    if (v <= 0 || stat(dir, &st) < 0)
        return ss_err_set(err, SS_ENOTFOUND, "model '%s' has no version "
                          "%lld", name, (long long)v);
    if ((t = ss__registry_task_new(r, m, SS__REGISTRY_TASK_ADD, cb, arg,
                                   err)) == NULL)
        return SS_ENOMEM;
    t->cfg = m->cfg;
    t->load[0] = v;
    t->n_load = 1;
    t->activate = 1;
    return ss__registry_start_task(r, t, err);
}

int
ss_registry_rollback(ss_registry_t *r, const char *name, ss_registry_cb cb,
                     void *arg, ss_err_t *err)
{
    ss_version_t *have;
    ss_model_t *m;
    int64_t prev;
    ss__registry_task_t *t;
    int rc;

    if ((m = ss__registry_find(r, name)) == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    if ((rc = ss__registry_check_idle(r, m, err)) < 0)
        return rc;
    if (m->n_history == 0)
        return ss_err_set(err, SS_EINVAL, "model '%s' has no previous "
                          "active version to roll back to", name);
    prev = m->history[m->n_history - 1];
    if ((have = ss__registry_find_loaded(m, prev)) != NULL) {
        if ((rc = ss__registry_switch_active(m, have, false, err)) < 0)
            return rc;
        m->n_history--;
        ss__registry_trim(m);
        if (cb != NULL)
            cb(arg, 0, NULL);
        return 0;
    }
    if ((t = ss__registry_task_new(r, m, SS__REGISTRY_TASK_ADD, cb, arg,
                                   err)) == NULL)
        return SS_ENOMEM;
    m->n_history--;
    t->cfg = m->cfg;
    t->load[0] = prev;
    t->n_load = 1;
    t->activate = -1;   /* do not push the current one again */
    return ss__registry_start_task(r, t, err);
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

void
ss_registry_scan(ss_registry_t *r, ss_registry_cb cb, void *arg)
{
    struct dirent *e;
    ss_model_t *m;
    DIR *d;

    r->scan_cb = cb;
    r->scan_arg = arg;
    r->scan_pending = 1;        /* this call's own step */
    if ((d = opendir(r->repo)) == NULL) {
        ss_log_warn("model repository %s: %s", r->repo, strerror(errno));
    } else {
        while ((e = readdir(d)) != NULL) {
            int64_t vs[SS_MAX_ON_DISK];
            char dir[4096];
            ss_err_t err = { 0 };

            if (!ss__registry_valid_name(e->d_name))
                continue;
            if (snprintf(dir, sizeof(dir), "%s/%s", r->repo, e->d_name) >=
                (int)sizeof(dir))
                continue;
            if (ss__registry_list_versions(dir, vs, SS_MAX_ON_DISK) <= 0)
                continue;
            m = ss__registry_find(r, e->d_name);
            if (m != NULL && (m->wanted || m->task != NULL))
                continue;
            if (ss_registry_load(r, e->d_name, NULL, NULL, NULL, &err) < 0)
                ss_log_error("model=%s: %s", e->d_name, err.msg);
            else
                r->scan_pending++;
        }
        closedir(d);
    }
    /* Models whose folder is gone are unloaded. */
    for (m = r->models; m != NULL; m = m->next) {
        int64_t vs[1];

        if (m->wanted && m->task == NULL &&
            ss__registry_list_versions(m->dir, vs, 1) <= 0) {
            ss_err_t err = { 0 };

            ss_log_notice("model=%s: folder gone, unloading", m->name);
            ss_registry_unload(r, m->name, NULL, NULL, &err);
        }
    }
    ss__registry_scan_step_done(r);
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
