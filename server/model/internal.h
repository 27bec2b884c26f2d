/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_REGISTRY_INT_H
#define SS_SERVER_REGISTRY_INT_H

/* The registry's internals, shared by registry.c, registry_ops.c and
 * registry_json.c.
 *
 * THREADS: the loop thread owns everything here.  Other threads (the HTTP
 * loops) only find a model by name (the model list is prepend-only and
 * published with a release store) and then read the fields marked
 * "m->lock" while holding that model's lock; the loop thread takes it
 * only to write them. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "server/model/registry.h"

#define SS_MAX_LOADED 64
#define SS_MAX_ON_DISK 256
#define SS_MAX_HISTORY 32

typedef enum {
    SS__REGISTRY_TASK_LOAD,
    SS__REGISTRY_TASK_ADD
} ss__registry_task_kind_t;

/* One load of a model: built on the loop thread, filled by a pool thread,
 * published on the loop thread. */
typedef struct ss__registry_task {
    uv_work_t work;
    ss_registry_t *reg;
    ss_model_t *model;
    ss__registry_task_kind_t kind;
    char dir[4096];
    ss_model_config_t cfg;
    int64_t activate;           /* SS__REGISTRY_TASK_ADD: the version to
                                 * activate */
    int n_load;
    int64_t load[SS_MAX_LOADED];
    ss_version_t *loaded[SS_MAX_LOADED];
    char verr[SS_MAX_LOADED][256];
    ss_registry_cb cb;
    void *cb_arg;
} ss__registry_task_t;

struct ss_model {
    ss_registry_t *reg;
    char *name;                 /* immutable */
    char *dir;                  /* immutable */
    ss_model_config_t cfg;      /* as last loaded */
    /* Read by other threads under lock; written by the loop thread under
     * lock.  A version leaves versions[] (and active) under the lock
     * before the list's reference is dropped, so a reader holding the
     * lock can take a reference to whatever it finds there. */
    pthread_mutex_t lock;
    ss_model_state_t state;     /* m->lock */
    char reason[SS_ERR_MSG_MAX]; /* m->lock */
    bool wanted;                /* m->lock; should be loaded: readiness */
    ss_version_t *versions[SS_MAX_LOADED]; /* m->lock; one reference each */
    int n_versions;             /* m->lock */
    ss_version_t *active;       /* m->lock; NULL or one of versions[] */
    int64_t history[SS_MAX_HISTORY]; /* previously active, oldest first */
    int n_history;
    int64_t on_disk[SS_MAX_ON_DISK];
    int n_on_disk;
    ss__registry_task_t *task;  /* the operation running, or NULL */
    int live;                   /* versions published and not yet freed */
    ss_registry_cb unload_cb;   /* waiting for live == 0 */
    void *unload_arg;
    ss_sampler_t *sampler;      /* set once (release store), then fixed */
    ss_model_t *next;           /* immutable once published */
};

struct ss_registry {
    uv_loop_t *loop;
    char *repo;
    int default_threads;
    ss_metrics_t *metrics;
    const ss_batch_metrics_t *batch_metrics;
    ss_exec_pool_t *pool;       /* runs every version's batches */
    bool pin;
    cpu_set_t cpus;
    ss_metric_t *g_active, *g_loaded, *g_memory;
    ss_model_t *models;         /* prepend-only; [any] with acquire loads */
    int tasks;                  /* operations in flight */
    _Atomic bool closing;       /* [any] */

    /* scan completion */
    int scan_pending;
    ss_registry_cb scan_cb;
    void *scan_arg;

    /* A version whose last reference went is pushed on reap (any
     * thread); the reaper frees its batcher and graph and hands the rest
     * back on freed, waking the loop with async; the loop counts it off
     * its model and frees it. */
    uv_async_t async;
    ss_queue_t reap;
    ss_queue_t freed;
    pthread_t reaper;
};

ss_model_t *ss__registry_find(const ss_registry_t *r, const char *name);
int ss__registry_valid_name(const char *name);
ss_model_t *ss__registry_model_get(ss_registry_t *r, const char *name,
                                   ss_err_t *err);
int ss__registry_check_idle(ss_registry_t *r, ss_model_t *m, ss_err_t *err);
ss__registry_task_t *ss__registry_task_new(ss_registry_t *r, ss_model_t *m,
                                           ss__registry_task_kind_t kind,
                                           ss_registry_cb cb, void *arg,
                                           ss_err_t *err);
int ss__registry_start_task(ss_registry_t *r, ss__registry_task_t *t,
                            ss_err_t *err);
ss_version_t *ss__registry_find_loaded(ss_model_t *m, int64_t v);
int ss__registry_switch_active(ss_model_t *m, ss_version_t *v,
                               bool push_history, ss_err_t *err);
void ss__registry_trim(ss_model_t *m);
void ss__registry_set_versions(ss_model_t *m, ss_version_t **keep, int n,
                               ss_version_t *active);
void ss__registry_set_state(ss_model_t *m, ss_model_state_t st,
                            const char *reason);
void ss__registry_set_gauges(ss_model_t *m);
int ss__registry_file_stamp(const char *dir, int64_t v, int64_t *mtime,
                            int64_t *size);
void ss__registry_scan_step_done(ss_registry_t *r);
int ss__registry_list_versions(const char *dir, int64_t *out, int max);

#endif
