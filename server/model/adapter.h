/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_ADAPTER_H
#define SS_SERVER_ADAPTER_H

/*
 * LoRA adapters on a served model version (docs/lora.md): many low-rank
 * fine-tunes of one base model, chosen per request, sharing batches.
 *
 * On disk, PEFT's layout, so adapters move between slimserve and
 * PyTorch/PEFT:
 *   <model>/adapters/<name>/adapter_config.json
 *       {"r": 8, "lora_alpha": 16, "target_modules": ["fc1", ...],
 *        "lora_dropout": 0.0, "fan_in_fan_out": false, "bias": "none",
 *        "use_rslora": false}
 *   <model>/adapters/<name>/adapter_model.safetensors
 *       base_model.model.<module>.lora_A.weight  [r, in]
 *       base_model.model.<module>.lora_B.weight  [out, r]
 * A request's output is the base model's with every targeted weight W
 * replaced by W + s * B A (s = lora_alpha / r, or lora_alpha / sqrt(r)
 * with use_rslora): PyTorch's nn.Linear convention, W [out, in].
 *
 * Modules are the graph's Gemm and MatMul nodes whose weight is an
 * initializer (sites).  A site's module name is its weight's name without
 * ".weight" (what torch.onnx.export writes for an nn.Linear exported as
 * Gemm), or, for a MatMul whose weight export renamed ("onnx::MatMul_12",
 * the transposed [in, out] form), the node's name without its last part
 * ("/layers.0/attn/qkv/MatMul" is "layers.0.attn.qkv").  An adapter whose
 * modules, ranks or shapes do not match is refused naming the first
 * mismatch.
 *
 * Execution (engine.h taps): the version's graph taps each site's input
 * x and output y; after the step that computes y, for each adapter in the
 * batch, its rows of x are multiplied by A^T (shrink, [m, r]) and then by
 * s B^T (expand, [m, out]) and added to its rows of y, in place, before
 * the bias-add and activation that follow.  Rows of the base model (no
 * adapter) cost nothing; a batch with no adapter runs without the hook.
 *
 * Lifetimes: an ss_lora_t belongs to one version (created with it on the
 * pool thread that loads it, before its batcher; freed after).  Adapters
 * are reference-counted: the set holds one reference per loaded adapter,
 * each admitted request one until its batch is done, so unloading drops
 * no request.
 *
 * THREADS: ss_lora_new/free [init] (the version's load and reaper);
 * ss_lora_acquire, ss_adapter_unref, ss_lora_list [any];
 * ss_lora_load/unload [any] but do file work (a pool thread);
 * ss_lora_tap, ss_lora_pin/unpin [worker] (pin may read files: it runs
 * on an executor, never on a loop).  The set of loaded adapters and
 * their residency are guarded by the lora's mutex, held only to find,
 * add, remove, pin or evict one (never over a file read).
 */

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "engine/engine.h"
#include "server/batch/batch.h"
#include "server/metrics.h"

typedef struct ss_lora ss_lora_t;
typedef struct ss_adapter ss_adapter_t;

/* Most adapters one version holds, and the largest rank. */
#define SS_LORA_MAX_ADAPTERS 256
#define SS_LORA_MAX_RANK 1024
/* The largest adapter file read. */
#define SS_LORA_MAX_FILE_BYTES ((size_t)1 << 30)

/* Limits and metrics of one version's adapters (a model's config.json:
 * max_adapters, max_adapter_bytes).  Zero-initialize: no limit but
 * SS_LORA_MAX_ADAPTERS, no metrics. */
typedef struct ss_lora_opts {
    int max_adapters;           /* 0: SS_LORA_MAX_ADAPTERS */
    int64_t max_bytes;          /* loaded adapters' bytes together; 0:
                                 * no limit */
    /* adapter_resident_bytes: the packed weights kept in memory (0: all,
     * today's behaviour); past it the least recently used adapters no
     * running batch holds are cold (metadata only) and read back from
     * their folder when a batch needs them (ss_lora_pin). */
    int64_t resident_bytes;
    const char *model;          /* for logs and labels (copied) */
    const char *version;
    /* Families (ss_lora_metrics_init; NULL: none): per adapter
     * {model, adapter} requests and samples; per version {model,
     * version} adapters loaded and their bytes. */
    ss_metric_t *requests, *samples, *loaded, *bytes;
    /* Residency, per {model, version}: adapters and bytes resident,
     * pins that found the weights resident (hits) or read them back
     * (misses), evictions, read-back seconds, and times pinned adapters
     * kept the resident bytes over the budget. */
    ss_metric_t *resident, *res_bytes, *hits, *misses, *evictions,
        *load_seconds, *over_budget;
} ss_lora_opts_t;

/* Registers the families in m: slimserve_adapter_requests_total,
 * slimserve_adapter_samples_total, slimserve_adapters_loaded,
 * slimserve_adapters_bytes, slimserve_adapters_resident,
 * slimserve_adapters_resident_bytes, slimserve_adapter_cache_hits_total,
 * slimserve_adapter_cache_misses_total,
 * slimserve_adapter_evictions_total, slimserve_adapter_load_seconds_total,
 * slimserve_adapter_over_budget_total.  [init] */
int ss_lora_metrics_init(ss_metrics_t *m, ss_lora_opts_t *o);

/* Finds g's sites and taps them (ss_graph_set_taps: call before any plan
 * is compiled from g), then loads every adapter folder under
 * model_dir/adapters; one that fails (or does not fit the limits) is
 * logged and skipped.  *out is a new lora; g is borrowed and must
 * outlive it; o (may be NULL) is read now.  Returns SS_ENOTFOUND when
 * model_dir has no adapters folder (the version then has no LoRA and
 * nothing is tapped). */
int ss_lora_new(ss_graph_t *g, const char *model_dir, const ss_lora_opts_t *o,
                ss_lora_t **out, ss_err_t *err);
/* Drops the set's references.  Accepts NULL. */
void ss_lora_free(ss_lora_t *l);

/* A new reference to the loaded adapter called name, or SS_ENOTFOUND
 * naming it.  l may be NULL (no adapters). */
int ss_lora_acquire(ss_lora_t *l, const char *name, ss_adapter_t **out,
                    ss_err_t *err);
/* Accepts NULL. */
void ss_adapter_unref(ss_adapter_t *a);
/* Counts one admitted request of `samples` samples for a (the
 * slimserve_adapter_*_total series).  [any] */
void ss_adapter_count(ss_adapter_t *a, int64_t samples);
const char *ss_adapter_name(const ss_adapter_t *a);

/* Reads model_dir/adapters/<name> and checks it against the sites: a new
 * adapter (one reference) or an error naming the first mismatch. */
int ss_adapter_read(const ss_lora_t *l, const char *model_dir,
                    const char *name, ss_adapter_t **out, ss_err_t *err);

/* Loads (or replaces) adapter name from model_dir; SS_EBUSY naming the
 * limit past max_adapters, or when the loaded adapters' bytes would pass
 * max_bytes. */
int ss_lora_load(ss_lora_t *l, const char *model_dir, const char *name,
                 ss_err_t *err);
/* Makes the loaded set what model_dir/adapters holds now: loads (or
 * reloads) every adapter folder whose files are not the ones loaded
 * (size, mtime, inode: an unchanged one stays as it is, resident or
 * cold), unloads the adapters whose folder is gone; one that fails is
 * logged and left as it was.  A replica's scan
 * calls it when the model's files changed but its version did not (the
 * repository fingerprint covers adapters/).  File work: a pool thread. */
void ss_lora_sync(ss_lora_t *l, const char *model_dir);
/* Forgets adapter name (requests holding it finish with it);
 * SS_ENOTFOUND when not loaded. */
int ss_lora_unload(ss_lora_t *l, const char *name, ss_err_t *err);
/* [{"name", "r", "alpha", "modules": [...], "bytes", "resident"}],
 * sorted by name; a new value, or NULL without memory. */
json_t *ss_lora_list(ss_lora_t *l);
/* [worker] Before a batch runs with adapter a (the batcher's pin hook,
 * ss_batch_opts_t.pin; user is the lora): makes a's weights resident,
 * reading them back from the adapter's folder when a is cold (one read
 * for every executor that needs it at once: the others wait for it),
 * evicting the least recently used unpinned adapters to stay within
 * resident_bytes, and pins a (never evicted) until ss_lora_unpin.  A
 * read-back checks the files' identities (size, mtime, inode) and the
 * packed weights' checksum against the load's, so a served adapter is
 * bit for bit the one loaded: a file removed, changed or corrupt is
 * SS_EIO naming the adapter (for the requests with it only).  Without a
 * budget every adapter is resident: 0 at once, nothing counted. */
int ss_lora_pin(void *user, void *a, ss_err_t *err);
/* [worker] The batch is done with a. */
void ss_lora_unpin(void *user, void *a);
/* Resident bytes now and the metadata every adapter keeps, of the set
 * (for benchmarks and tests). */
void ss_lora_memory(ss_lora_t *l, int64_t *resident, int64_t *meta,
                    int *n_resident);

/* Sites found (LoRA-capable modules). */
int ss_lora_sites(const ss_lora_t *l);

/* The batch hook (ss_batch_opts_t.tap; user is the lora): items' tags are
 * ss_adapter_t pointers; value holds rows from row0 when the plan runs
 * the site in row chunks (engine.h, taps).  An activation offered after
 * a site's output (act) is applied to the updated rows and 1 returned
 * (engine.h: activations). */
int ss_lora_tap(void *user, const ss_work_t *batch, int tap,
                ss_tensor_t *value, int64_t row0, const ss_tap_act_t *act,
                ss_err_t *err);

/* ---- admin (adapter_admin.c), on the model's active version [loop] ---- */

struct ss_registry;

/* {"model", "version", "sites", "adapters": ss_lora_list} (new), or
 * SS_ENOTFOUND (unknown model, or no adapters folder). */
int ss_adapters_list(struct ss_registry *r, const char *model, json_t **out,
                     ss_err_t *err);
/* Reads and loads (or replaces) adapter name on a pool thread; cb runs
 * later on the loop with {"loaded": name} or the error naming the first
 * mismatch (when 0 is returned). */
int ss_adapters_load(struct ss_registry *r, const char *model,
                     const char *name,
                     void (*cb)(void *arg, int rc, json_t *value,
                                const ss_err_t *err),
                     void *arg, ss_err_t *err);
/* Takes adapter name out of the set at once (no file work): requests
 * holding it finish with it; later ones get 404. */
int ss_adapters_unload(struct ss_registry *r, const char *model,
                       const char *name, ss_err_t *err);

#endif
