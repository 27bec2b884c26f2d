/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_REGISTRY_H
#define SS_SERVER_REGISTRY_H

/*
 * The model registry: which models and versions are loaded, which version
 * of each is active, and hot swap.
 *
 * A loaded version (ss_version_t) is immutable and reference-counted: the
 * model's list of loaded versions holds one reference per version, and
 * every admitted request holds one until its batch completes.  Every
 * file the registry reads or writes (config.json, the repository and
 * model folders, model files, variant.json) is read or written on a
 * libuv pool thread (uv_queue_work), never on the loop thread: loading
 * compiles there too, and publishes on the loop thread: a swap is one pointer store there, under the model's lock,
 * because requests take their reference on the HTTP loop threads
 * (ss_registry_acquire holds the same lock around finding the version and
 * taking the reference).  Requests already running keep their version
 * alive; the last reference hands the version to a reaper thread, which
 * waits for the version's own batches and frees it (the last reference
 * may drop in a done callback on an executor, which must not wait for
 * itself).
 *
 * At most one load/unload/activate runs per model at a time; another
 * answers SS_ECONFLICT.  A load of a name the registry does not know
 * creates the model only once its folder is found: loading a missing
 * model leaves nothing behind (no index entry).
 *
 * THREADS: everything is [loop] (the thread that created the registry)
 * except ss_version_ref/unref, ss_registry_acquire, ss_registry_ready,
 * ss_version_metadata/config, ss_model_name and ss_model_sampler [any].
 */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/err.h"
#include "common/queue.h"
#include "common/refcount.h"
#include "engine/engine.h"
#include "server/batch/batch.h"
#include "server/metrics.h"
#include "server/model/modelcfg.h"

typedef struct ss_registry ss_registry_t;
typedef struct ss_model ss_model_t;
typedef struct ss_sampler ss_sampler_t;

typedef enum {
    SS_MODEL_UNAVAILABLE = 0,
    SS_MODEL_LOADING,
    SS_MODEL_READY,
    SS_MODEL_UNLOADING
} ss_model_state_t;

/* Immutable once published. */
typedef struct ss_version {
    ss_ref_t ref;
    ss_model_t *model;          /* stable for the registry's life */
    int64_t number;
    char label[24];             /* the number as text */
    ss_graph_t *graph;
    ss_batcher_t *batcher;
    /* LoRA adapters (server/model/adapter.h), NULL when the model folder
     * has no adapters/ folder at load: the set inside is mutable and
     * locked by itself. */
    struct ss_lora *lora;
    ss_model_config_t cfg;      /* as loaded; max_batch_size is effective */
    /* Why max_batch_size is 0 though the config batches (request
     * isolation: control flow, rows that mix), "" otherwise; the
     * version's config response shows it as "batching_disabled". */
    char unbatched[640];
    size_t weight_bytes;
    int64_t file_mtime_ns;      /* to skip reloading an unchanged file */
    int64_t file_size;
    ss_qlink_t reap_link;       /* in the reaper's queue, then the
                                 * loop's (private to the registry) */
} ss_version_t;

/* [any] The caller must already hold a reference. */
void ss_version_ref(ss_version_t *v);
/* [any] The last reference hands v to the reaper. Accepts NULL. */
void ss_version_unref(ss_version_t *v);

/* The name of a model; the sampler of its traffic (NULL when off). */
const char *ss_model_name(const ss_model_t *m);
ss_sampler_t *ss_model_sampler(const ss_model_t *m);

/* [loop] Completion of an admin operation: rc 0 or negative with err. */
typedef void (*ss_registry_cb)(void *arg, int rc, const ss_err_t *err);

typedef struct ss_registry_opts {
    uv_loop_t *loop;
    const char *repository;
    int default_threads;        /* executors of the shared pool: one per
                                 * serving core (each batch runs OpenMP
                                 * on one thread unless a model says) */
    ss_metrics_t *metrics;      /* may be NULL */
    const ss_batch_metrics_t *batch_metrics;
    const cpu_set_t *cpus;      /* executors' CPUs; NULL: any */
} ss_registry_opts_t;

int ss_registry_new(const ss_registry_opts_t *o, ss_registry_t **out,
                    ss_err_t *err);
/* Scans the repository: loads models not loaded yet, reloads loaded
 * models whose files changed (config.json, a version's model.onnx, a
 * version added or removed: what a primary writes), unloads models whose
 * folder is gone.  A reload that fails keeps what was served.  cb (may be
 * NULL) runs once every load it started has finished. */
void ss_registry_scan(ss_registry_t *r, ss_registry_cb cb, void *arg);
/* The same for a periodic look (repository_poll_s): no callback, nothing
 * if a scan runs already, and models unloaded through the API stay
 * unloaded. */
void ss_registry_poll(ss_registry_t *r);
/* Loads or reloads one model; override (borrowed, may be NULL) is applied
 * over its config.json.  Unchanged versions already loaded are kept. */
int ss_registry_load(ss_registry_t *r, const char *name, json_t *override,
                     ss_registry_cb cb, void *arg, ss_err_t *err);
/* Stops serving the model; cb runs once its in-flight requests are done
 * and its versions freed. */
int ss_registry_unload(ss_registry_t *r, const char *name, ss_registry_cb cb,
                       void *arg, ss_err_t *err);
/* Makes version v the one served (loading it first if needed) and
 * persists the choice in config.json, before switching.  cb always runs
 * later, from the loop, when 0 is returned (config.json is written on a
 * pool thread). */
int ss_registry_activate(ss_registry_t *r, const char *name, int64_t v,
                         ss_registry_cb cb, void *arg, ss_err_t *err);
/* Activates the version that was active before the current one. */
int ss_registry_rollback(ss_registry_t *r, const char *name,
                         ss_registry_cb cb, void *arg, ss_err_t *err);

/* [any] Stores a new reference to version v of the model (0: the active
 * one) in *out and returns 0; or returns SS_ENOTFOUND (unknown model or
 * version) or SS_ENOTREADY (loading, unloaded, shutting down) with *out
 * NULL and err set.  Takes the model's lock for a few nanoseconds; no
 * registry-wide lock. */
int ss_registry_acquire(ss_registry_t *r, const char *name, int64_t v,
                        ss_version_t **out, ss_err_t *err);

/* [loop] Completion of a read of the repository: rc 0 with a new JSON
 * value (the callback owns it), or a negative code with err. */
typedef void (*ss_registry_json_cb)(void *arg, int rc, json_t *value,
                                    const ss_err_t *err);

/* Triton's repository index: [{"name","version","state","reason"}].  The
 * folders are listed on a pool thread; cb runs later on the loop.
 * Returns 0, or a negative code (cb is not called). */
int ss_registry_index(ss_registry_t *r, bool ready_only,
                      ss_registry_json_cb cb, void *arg, ss_err_t *err);
/* [any] {"name","versions","platform","inputs","outputs"} of a version. */
json_t *ss_version_metadata(const ss_version_t *v);
/* [any] Triton's model configuration of a version. */
json_t *ss_version_config(const ss_version_t *v);
/* Every version of a model on disk and loaded, with lineage from
 * variant.json when present (GET /admin/models/{m}/versions); read and
 * answered like ss_registry_index. */
int ss_registry_versions(ss_registry_t *r, const char *name,
                         ss_registry_json_cb cb, void *arg, ss_err_t *err);

/* [any] True when every model that should be loaded is ready. */
bool ss_registry_ready(const ss_registry_t *r);
int ss_registry_model_count(const ss_registry_t *r);

/* Begins closing: drops every version; pending operations are answered
 * with SS_ENOTREADY as they finish. */
void ss_registry_close(ss_registry_t *r);
/* True once closing is complete (nothing loading, every version freed). */
bool ss_registry_idle(const ss_registry_t *r);
/* After ss_registry_idle(): joins the reaper, frees everything. */
void ss_registry_free(ss_registry_t *r);

#endif
