/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_BATCH_H
#define SS_SERVER_BATCH_H

/*
 * Dynamic batching for one served model version, run by a shared pool of
 * executor threads.
 *
 * An executor pool (ss_exec_pool_t) is a fixed set of threads, one per
 * serving core, each with its own engine execution context (oneDNN stream,
 * scratch arena) and batch buffers for life.  A batcher is a queue of work
 * items (one per inference request) and a plan cache, registered with a
 * pool: the pool's executors take batches from every batcher with work,
 * round-robin, and at most `instances` of them run one batcher's batches
 * at once.  Many batchers therefore cost memory, not threads.  Plans are
 * immutable and shared: any executor runs any plan of any batcher.
 *
 * An executor forms a batch when max_batch_size samples are queued or the
 * oldest item has waited max_queue_delay_us (preferring
 * preferred_batch_sizes); with the default delay of 0 an executor that
 * frees up takes everything compatible that is queued, so batches grow
 * with load.  It groups only items whose non-batch dims agree,
 * concatenates their inputs, runs the plan compiled for that batch size
 * (plans are compiled on first use and cached; ss_batcher_warmup()
 * compiles the configured sizes ahead), splits the outputs and calls each
 * item's done callback on the executor thread.  Items whose deadline
 * passes while queued are completed with SS_ETIMEDOUT and not run; a full
 * queue refuses new items at once with SS_EBUSY.
 *
 * Request isolation: everything about one item that could fail a batch
 * (datatypes, shapes, and the values the engine can check ahead --
 * ss_input_check_run: index ranges) is checked at submit, so a bad item is
 * refused alone.  Should a batch of several items still fail when run,
 * each of its items is run again alone, so only the culprit fails, with
 * its own error; no item ever receives another item's error or data.
 * Failures are logged at most once a second per batcher, with a count of
 * the ones not logged.
 *
 * A model without a batch dimension (max_batch_size == 0) runs each item
 * alone, as given.
 *
 * THREADS: ss_batcher_submit(), _queue_depth() and _pause() are [any]
 * (the loop threads in practice); done callbacks run on executor threads,
 * without any batcher or pool lock held, so they may submit again (to this
 * batcher too; while it is being freed that returns SS_ENOTREADY), but
 * must not free a batcher.  ss_batcher_free() waits for the batcher's own
 * queued and running batches only; it must not be called from a done
 * callback.  A batcher's queue is guarded by its mutex; the pool's list of
 * batchers with work by the pool's mutex (taken inside a batcher's, never
 * the other way round); plans by the plan cache's; compiles and runs
 * happen outside the queue locks.
 */

#include <stdbool.h>
#include <sched.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"
#include "server/metrics.h"

typedef struct ss_batcher ss_batcher_t;
typedef struct ss_exec_pool ss_exec_pool_t;
typedef struct ss_work ss_work_t;

typedef void (*ss_work_done_fn)(ss_work_t *w, void *arg);

/* One request's work.  The submitter fills the inputs part and owns the
 * struct; the batcher fills the outputs part before calling done, after
 * which the batcher no longer touches it. */
struct ss_work {
    /* in: one tensor per graph input, in graph order; batch dim first
     * when the model batches.  Borrowed until done is called. */
    int n_inputs;
    const ss_tensor_t *inputs;
    int64_t deadline_ns;        /* CLOCK_MONOTONIC; 0 = none */
    ss_work_done_fn done;
    void *arg;
    /* Opaque, for the batcher's tap hook (ss_batch_opts_t.tap): the
     * item's LoRA adapter (server/model/adapter.h).  NULL: none. */
    void *tag;

    /* out: status 0 or a negative code with err set; on success one tensor
     * per graph output (array and data from ss_calloc/ss_aligned_alloc,
     * each freeable with free(); owned by the submitter after done:
     * ss_work_clear_outputs frees them), batch dim = the item's batch. */
    int status;
    ss_err_t err;
    int n_outputs;
    ss_tensor_t *outputs;
    int64_t queue_ns;           /* time spent queued */
    int64_t compute_ns;         /* the batch it ran in: gather, plan
                                 * lookup (or compile), run, split */
    int batch_size;             /* samples in that batch; 0 if not run
                                 * (SS_ETIMEDOUT); 1 when max_batch_size
                                 * is 0 */

    /* private to the batcher */
    int64_t enqueue_ns_;
    int64_t samples_;
    ss_work_t *next_;
};

/* Frees the outputs of a completed item (not the item). */
void ss_work_clear_outputs(ss_work_t *w);

/* For a tap hook: the next item of a batch (NULL after the last) and the
 * item's samples (its rows of the batch, in list order). */
static inline const ss_work_t *
ss_work_next(const ss_work_t *w)
{
    return w->next_;
}

static inline int64_t
ss_work_samples(const ss_work_t *w)
{
    return w->samples_;
}

/* A hook between plan steps (engine.h: ss_plan_run_tapped) for what
 * differs per item inside one batch: LoRA adapters add each item's own
 * low-rank update to a MatMul's output (server/model/adapter.c).  Called
 * on the executor with the batch's first item, and the tap's arguments
 * (engine.h, ss_tap_fn: rows from row0 when the plan runs the value in
 * chunks; the activation after it, which it may apply); a batch none of whose items has a tag runs without it. */
typedef int (*ss_batch_tap_fn)(void *user, const ss_work_t *batch, int tap,
                               ss_tensor_t *value, int64_t row0,
                               const ss_tap_act_t *act, ss_err_t *err);

/* Hooks around a batch with tagged items (LoRA: the adapters' weights
 * made resident and held while the batch runs; server/model/
 * adapter_cache.c): pin is called on the executor for each tagged item
 * before its batch runs, and may block (read a file); an item whose pin
 * fails is completed alone with its error and the batch runs without it.
 * unpin is called for each pinned item once the batch ran, before the
 * done callbacks. */
typedef int (*ss_batch_pin_fn)(void *user, void *tag, ss_err_t *err);
typedef void (*ss_batch_unpin_fn)(void *user, void *tag);

typedef struct ss_batch_opts {
    /* 0: the model has no batch dimension.  Otherwise every graph input
     * must have a symbolic first dim, and an item whose own batch is
     * larger is refused at submit with SS_EINVAL (the caller splits). */
    int max_batch_size;
    int64_t max_queue_delay_us;
    /* Copied.  Sizes out of 1..max_batch_size are ignored.  With preferred
     * sizes, a batch forms as soon as the largest one is reachable, and
     * before the delay expires it has the largest preferred size the
     * queued samples reach; once the delay expires it takes what is
     * there, up to max_batch_size. */
    const int *preferred_batch_sizes;
    int n_preferred;
    /* The shared executor pool to run on (borrowed; it must outlive the
     * batcher).  NULL: the batcher starts a private pool of `instances`
     * executors, pinned to cpus, and stops it when freed (tests, tools). */
    ss_exec_pool_t *pool;
    /* With a pool: how many of its executors may run this batcher's
     * batches at once; 0 = as many as the pool has.  Without: the private
     * pool's executors, >= 1. */
    int instances;
    /* oneDNN (OpenMP) threads a batch of this model runs with.  0: one
     * with a shared pool (one executor per core already uses every core),
     * the library default with a private one.  More than one on a shared
     * pool adds an OpenMP team per executor that runs this model. */
    int threads;
    const cpu_set_t *cpus;      /* private pool's CPUs (copied); NULL: any */
    int max_queue_size;         /* queued items before SS_EBUSY; 0: no cap */
    /* Metrics labels and families; all may be NULL (no metrics).  The
     * batcher creates its series ({model, version}) at ss_batcher_new and
     * removes them at ss_batcher_free, so two live batchers must not share
     * a (model, version) pair or the second loses its series early. */
    const char *model;
    const char *version;
    const struct ss_batch_metrics *metrics;
    /* The tap hook and its user pointer (borrowed; must outlive the
     * batcher); NULL: none.  The graph's taps are set by the caller. */
    ss_batch_tap_fn tap;
    void *tap_user;
    /* Around a batch with tagged items (user: tap_user); NULL: none. */
    ss_batch_pin_fn pin;
    ss_batch_unpin_fn unpin;
    /* 0: none.  Else an item whose share of an output would take more
     * bytes than this fails alone with SS_ETOOBIG naming the output,
     * before the batch runs; and a plan is not compiled (the engine stops
     * at shape inference, ss_plan_opts_t) for an output over it per row
     * of the batch: an item whose values choose an output's size
     * cannot make the executor compute gigabytes. */
    int64_t max_output_bytes;
    /* 0: the engine's default.  Else the budget of every plan compiled
     * (ss_plan_opts_t.max_plan_bytes): a request whose plan needs more
     * fails alone with SS_ETOOBIG naming the node, and nothing is kept
     * (no plan cached, no buffer grown). */
    int64_t max_plan_bytes;
} ss_batch_opts_t;

/* The batcher's metric families, created once per registry (by the first
 * caller, at start-up) and shared by every batcher: all labelled
 * {model, version}.
 *   slimserve_inference_count_total      samples run successfully
 *   slimserve_execution_count_total      batches run successfully
 *   slimserve_queue_duration_seconds     per item, histogram
 *   slimserve_compute_duration_seconds   per batch, histogram
 *   slimserve_batch_size                 per batch, buckets 1,2,4..1024
 *   slimserve_queue_depth                items queued, gauge
 * and, labelled {model, version, layer, expert}, for models with sparse
 * mixture-of-experts layers (docs/moe.md):
 *   slimserve_moe_expert_rows_total      rows routed to each expert
 * The struct must outlive every batcher that points at it. */
typedef struct ss_batch_metrics {
    ss_metric_t *inference_count;
    ss_metric_t *execution_count;
    ss_metric_t *queue_duration;
    ss_metric_t *compute_duration;
    ss_metric_t *batch_size;
    ss_metric_t *queue_depth;
    ss_metric_t *moe_rows;      /* slimserve_moe_expert_rows_total */
} ss_batch_metrics_t;

/* [any] Registers the families in m (or finds them, when registered
 * before with the same definitions: calling it again is harmless) and
 * fills *out.  Returns 0, or SS_EINVAL (a different family holds one of
 * the names) or SS_ENOMEM. */
int ss_batch_metrics_init(ss_metrics_t *m, ss_batch_metrics_t *out);

/* Starts a pool of `executors` threads (>= 1), pinned to cpus when given
 * (copied), each with its own execution context.  [init] */
int ss_exec_pool_new(int executors, const cpu_set_t *cpus,
                     ss_exec_pool_t **out, ss_err_t *err);
/* [init] How long an executor of a pool created from now on waits, idle
 * since its last batch, before it frees its buffers (pool.c); 0: never.
 * The default is 10 s (SS_EXEC_IDLE_RELEASE_MS). */
#define SS_EXEC_IDLE_RELEASE_MS 10000
void ss_exec_pool_set_idle_release(int64_t ms);
/* Executor threads of the pool. */
int ss_exec_pool_size(const ss_exec_pool_t *p);
/* Batchers registered with the pool (created and not yet freed). */
int ss_exec_pool_batchers(ss_exec_pool_t *p);
/* Stops and joins the executors and frees p.  Every batcher on the pool
 * must have been freed.  Accepts NULL. */
void ss_exec_pool_free(ss_exec_pool_t *p);

/* Creates the batcher on opts->pool (or on a private pool it starts).
 * Borrows g, which must outlive the batcher. */
int ss_batcher_new(const ss_graph_t *g, const ss_batch_opts_t *opts,
                   ss_batcher_t **out, ss_err_t *err);
/* Compiles plans for the given batch sizes now (load-time warm-up).
 * Sizes out of 1..max_batch_size are skipped, and so is everything when an
 * input has a symbolic dim besides the batch dim (its shape is unknown
 * until a request comes).  With max_batch_size == 0, compiles the model's
 * own static shape and ignores sizes.  With a tap hook, each size's tapped
 * plan too (and ss_batcher_drop_plans drops both kinds). */
int ss_batcher_warmup(ss_batcher_t *b, const int *sizes, int n,
                      ss_err_t *err);
/* [any] Frees the compiled plans no running batch holds, with the packed
 * weights only they used; each compiles again on its next use.  A load
 * that only checks that the model compiles calls it after the warm-up, so
 * an idle model costs its graph, not its plans.  Returns how many were
 * freed. */
int ss_batcher_drop_plans(ss_batcher_t *b);
/* [any] Plans compiled and cached now. */
int ss_batcher_plan_count(ss_batcher_t *b);
/* Queues w.  Returns 0 (done will be called exactly once, later, on an
 * executor thread) or a negative code (SS_EBUSY queue full, SS_EINVAL bad
 * shapes, values the model cannot take (an index out of range), a batch
 * over max_batch_size or of 0 samples, SS_ENOTREADY closing) with err set
 * and done NOT called.  Outputs of a completed item
 * are allocated with ss_aligned_alloc (64-byte aligned, freed by free()).
 * A deadline already past at submit still queues; the item then completes
 * with SS_ETIMEDOUT. */
int ss_batcher_submit(ss_batcher_t *b, ss_work_t *w, ss_err_t *err);
/* Items queued and not yet taken by an executor. */
int ss_batcher_queue_depth(ss_batcher_t *b);
/* Rows b's runs routed to each expert of sparse MoE layer `layer`
 * (docs/moe.md; layers in plan order), into rows[0..cap): returns the
 * layer's expert count, 0 when there is no such layer or no row ran yet.
 * Layers past 4 and experts past 128 are in the metric only.  [any] */
int ss_batcher_moe_rows(const ss_batcher_t *b, int layer, uint64_t *rows,
                        int cap);
/* [any] While paused, executors finish the batch they run but take no
 * new one; submit still queues (and refuses when full), and deadlines are
 * checked when the pause ends.  ss_batcher_free overrides a pause.  For
 * tests, and for holding a queue while something else drains. */
void ss_batcher_pause(ss_batcher_t *b, bool paused);
/* Stops accepting, runs what is queued, waits for this batcher's batches
 * (the done callbacks included) and frees it; a private pool is stopped
 * too.  Accepts NULL. */
void ss_batcher_free(ss_batcher_t *b);

#endif
