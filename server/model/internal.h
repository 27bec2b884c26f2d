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
 * only to write them.  Pool threads (uv_queue_work) run tasks and the
 * repository reads of registry_json.c: they touch only their own struct,
 * versions they hold references to, and a model's immutable name and
 * dir. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "server/model/adapter.h"
#include "server/model/registry.h"

#define SS_MAX_LOADED 64
#define SS_MAX_ON_DISK 256
#define SS_MAX_HISTORY 32
#define SS__REGISTRY_NAME_MAX 200

typedef enum {
    SS__REGISTRY_TASK_LOAD,     /* read config.json and the folder, load
                                 * the versions that changed */
    SS__REGISTRY_TASK_ADD       /* load one version when it is not, then
                                 * persist it as the active one */
} ss__registry_task_kind_t;

/* One operation on a model: built on the loop thread, run on a pool
 * thread (every file it reads or writes: config.json, the folder, the
 * model files), published on the loop thread.  The pool thread reads only
 * the task and the versions it holds references to (immutable); the
 * "out" fields are its results. */
typedef struct ss__registry_task {
    uv_work_t work;
    ss_registry_t *reg;
    /* A name the registry does not know yet gets a new model that only
     * this task sees (newborn); it joins the list when the task finds
     * the folder and is freed otherwise, so a load of a missing model
     * leaves nothing behind.  Such a task is on reg->newborn meanwhile. */
    ss_model_t *model;
    bool newborn;
    bool started;               /* queued: task_done owns the outcome */
    char name[SS__REGISTRY_NAME_MAX + 1];
    ss__registry_task_kind_t kind;
    char dir[4096];
    bool from_scan;             /* counts in the scan's pending steps */
    uint64_t files_fp;          /* out: ss__registry_files_fp() of dir
                                 * before the load read it (ADD: after
                                 * writing config.json) */
    bool was_wanted;            /* LOAD: m->wanted before the task */

    /* in */
    json_t *override;           /* LOAD: own copy, freed on the loop */
    ss_version_t *have[SS_MAX_LOADED]; /* a reference each: LOAD, the
                                 * loaded versions; ADD, have[0] is the
                                 * version when already loaded */
    int n_have;
    int64_t version;            /* ADD: the version to make active */
    bool push_history;          /* ADD: keep the current one for rollback */
    bool rollback;              /* ADD: pops the history on success */

    /* out; ADD reads cfg as an input */
    int rc;                     /* the task as a whole */
    bool found;                 /* LOAD: the model's folder was listed */
    ss_err_t err;
    ss_model_config_t cfg;
    int64_t on_disk[SS_MAX_ON_DISK];
    int n_on_disk;
    int n_load;
    int64_t load[SS_MAX_LOADED];
    ss_version_t *loaded[SS_MAX_LOADED];
    char verr[SS_MAX_LOADED][256];
    int persist_rc;             /* ADD: config.json written? */
    ss_err_t persist_err;

    struct ss__registry_task *next_newborn;
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
    int64_t *on_disk;           /* n_on_disk entries, owned: a fixed
                                 * table of SS_MAX_ON_DISK was 2 KB of the
                                 * ~15 KB an idle model costs besides its
                                 * weights */
    int n_on_disk;
    ss__registry_task_t *task;  /* the operation running, or NULL */
    int live;                   /* versions published and not yet freed */
    ss_registry_cb unload_cb;   /* waiting for live == 0 */
    void *unload_arg;
    ss_sampler_t *sampler;      /* set once (release store), then fixed */
    uint64_t files_fp;          /* [loop] ss__registry_files_fp() at the
                                 * last scan: a scan reloads the model
                                 * when it changes */
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
    ss_metric_t *g_active, *g_loaded, *g_memory, *g_resident;
    ss_lora_opts_t lora_metrics;    /* the LoRA families, or zeroes */
    ss_model_t *models;         /* prepend-only; [any] with acquire loads */
    int tasks;                  /* operations in flight */
    _Atomic bool closing;       /* [any] */

    ss__registry_task_t *newborn; /* loads of names not known yet */

    /* scan completion: the scan's own step and the loads it started */
    int scan_pending;
    bool scan_again;            /* a scan asked for while one runs */
    bool scan_poll;             /* the running scan is a poll: it leaves
                                 * models unloaded by hand unloaded */
    ss_registry_cb scan_cb;
    void *scan_arg;

    /* A version whose last reference went is pushed on reap (any
     * thread); the reaper frees its batcher and graph and hands the rest
     * back on freed, waking the loop with async; the loop counts it off
     * its model and frees it. */
    uv_async_t async;
    ss_queue_t reap;
    ss_qlink_t trim_link;       /* on reap: the reaper trims the heap */
    ss_queue_t freed;
    pthread_t reaper;
};

ss_model_t *ss__registry_find(const ss_registry_t *r, const char *name);
int ss__registry_valid_name(const char *name);
ss_model_t *ss__registry_model_new(ss_registry_t *r, const char *name,
                                   ss_err_t *err);
int ss__registry_check_idle(ss_registry_t *r, ss_model_t *m, ss_err_t *err);
ss__registry_task_t *ss__registry_task_new(ss_registry_t *r, ss_model_t *m,
                                           const char *name,
                                           ss__registry_task_kind_t kind,
                                           ss_registry_cb cb, void *arg,
                                           ss_err_t *err);
int ss__registry_start_task(ss_registry_t *r, ss__registry_task_t *t,
                            ss_err_t *err);
ss_version_t *ss__registry_find_loaded(ss_model_t *m, int64_t v);
void ss__registry_set_active(ss_model_t *m, ss_version_t *v,
                             bool push_history);
void ss__registry_trim(ss_model_t *m);
void ss__registry_set_versions(ss_model_t *m, ss_version_t **keep, int n,
                               ss_version_t *active);
void ss__registry_set_state(ss_model_t *m, ss_model_state_t st,
                            const char *reason);
void ss__registry_set_gauges(ss_model_t *m);
int ss__registry_file_stamp(const char *dir, int64_t v, int64_t *mtime,
                            int64_t *size);
void ss__registry_scan_start(ss_registry_t *r);
void ss__registry_scan_step_done(ss_registry_t *r);
/* [any] Lists the version folders holding a model.onnx, ascending;
 * -errno when dir cannot be read. */
int ss__registry_list_versions(const char *dir, int64_t *out, int max);
/* [any] A fingerprint of what a load of the model in dir reads: its
 * config.json, its versions' model.onnx and its LoRA adapters' two files
 * (names, sizes, mtimes, inodes).  A primary writes all of them by
 * rename, so a change shows here (a replica reloads the model). */
uint64_t ss__registry_files_fp(const char *dir);
/* [pool] A task's work (registry_load.c): reads the folder, loads the
 * versions the task needs, persists an ADD's active version. */
void ss__registry_task_work(uv_work_t *w);
/* Frees a version whose last reference is gone (its batcher first). */
void ss__version_destroy(ss_version_t *v);
/* [loop] Frees a model (no version may point at it any more). */
void ss__registry_model_free(ss_model_t *m);
/* [any] A JSON string of text with invalid UTF-8 replaced (U+FFFD):
 * reasons quote file contents. */
json_t *ss__registry_json_text(const char *text);

#endif
