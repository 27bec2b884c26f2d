/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_BATCH_INT_H
#define SS_SERVER_BATCH_INT_H

/*
 * Internals shared by server/batch/batch.c (queue, batch formation, life
 * cycle), server/batch/pool.c (the executor threads and their schedule)
 * and server/batch/batch_run.c (running one batch).  Nobody else includes
 * this.  THREADS: see the essays of those files.
 */

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/clock.h"
#include "common/workbuf.h"
#include "server/batch/batch.h"
#include "server/batch/plancache.h"

/* One executor thread of a pool.  Everything here belongs to its thread
 * (tid and started to the pool's owner, before and after the thread). */
struct exec {
    ss_exec_pool_t *pool;
    pthread_t tid;
    int started;
    ss_exec_ctx_t *ctx;         /* threads 0: the stream leaves OpenMP be */
    int omp_default;            /* this thread's OpenMP count at start */
    int omp_now;                /* the count last set */
    /* Batch buffers, for any batcher: grown to the most inputs and
     * outputs and the largest batch seen, then reused; shrunk after an
     * outlier (common/workbuf.h: rolled every SS_WORKBUF_WINDOW batches,
     * freed when the executor is idle, pool.c). */
    int cap_in, cap_out;
    ss_tensor_t *in;            /* the batch's inputs */
    ss_workbuf_t *in_buf;       /* concatenation buffers */
    ss_tensor_t *out;           /* the batch's outputs */
    ss_workbuf_t *out_buf;      /* run into these, then split */
    int runs;                   /* batches in this window */
    int64_t last_ns;            /* the last batch's end (0: none since
                                 * the buffers were released) */
    ss_err_t err;
};

/* Where a batcher is in its pool's lists; guarded by the pool's lock. */
enum { SS__IN_NONE, SS__IN_READY, SS__IN_TIMED };

struct ss_exec_pool {
    int n_exec;
    struct exec *execs;
    bool pin;
    cpu_set_t cpus;
    int64_t idle_ns;            /* release after; 0: never [const] */

    pthread_mutex_t lock;
    pthread_cond_t cond;        /* CLOCK_MONOTONIC; idle executors */
    /* Batchers to visit now, oldest first (round-robin: a batcher that
     * still has work after a visit goes to the back), and batchers to
     * visit at their wake_ns (a delay or a deadline).  Linked through
     * ss_batcher.pool_next. */
    ss_batcher_t *ready_head, *ready_tail;
    ss_batcher_t *timed;
    int n_batchers;
    bool stop;
};

struct ss_batcher {
    const ss_graph_t *g;
    ss_input_check_t *check;    /* value checks at submit; NULL: none */
    int n_inputs;
    int n_outputs;
    /* Per output: 1 when its first dim is the batch (symbolic in the
     * graph), 0 when it is the same for every sample (copied whole to
     * each item), -1 when the graph does not say (decided per batch by
     * whether the first dim equals the batch). */
    signed char *out_batched;
    int max_batch;
    size_t max_out;             /* ss_batch_opts_t.max_output_bytes */
    int shape_inputs;           /* inputs deciding shapes by value
                                 * (ss_graph_shape_inputs) */
    int64_t delay_ns;
    int *preferred;             /* ascending, unique, in 1..max_batch */
    int n_preferred;
    int max_queue;
    int threads;                /* OpenMP threads per batch, 0: default */
    ss_batch_tap_fn tap;        /* ss_batch_opts_t.tap; immutable */
    void *tap_user;
    ss_batch_pin_fn pin;        /* ss_batch_opts_t.pin, .unpin */
    ss_batch_unpin_fn unpin;
    /* With a tap hook: the plans compiled with the graph's taps, for
     * batches with a tagged item (plans keeps the fused ones). */
    ss__plancache_t *tplans;
    int cap;                    /* executors at once */
    ss__plancache_t *plans;
    ss_exec_pool_t *pool;
    ss_exec_pool_t *own_pool;   /* private pool, stopped by free */

    /* Guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* free waits here for the queue to drain */
    ss_work_t *head, *tail;
    int depth;
    int n_deadline;             /* queued items with a deadline */
    int running;                /* visits holding items (batch or expired)
                                 * whose completions have not finished */
    bool scheduled;             /* in the pool's lists, or popped from them
                                 * and not yet visited: a visit will come */
    bool sched_timed;           /* it went to the timed list (a hint: the
                                 * pool may have moved it on since) */
    bool closing;
    bool paused;

    /* Guarded by the pool's lock. */
    ss_batcher_t *pool_next;
    int where;                  /* SS__IN_* */
    int64_t wake_ns;            /* SS__IN_TIMED: when */

    /* Failure log rate limit; guarded by log_lock. */
    pthread_mutex_t log_lock;
    int64_t log_last_ns;
    uint64_t log_quiet;         /* failures not logged since the last line */

    const ss_batch_metrics_t *mf;
    const char *labels[2];      /* model, version (copies) */
    char *model, *version;
    ss_series_t *m_inferences, *m_executions, *m_queue, *m_compute,
        *m_batch, *m_depth;
    /* MoE layers and experts counted so far (largest seen), for
     * ss__batch_moe_remove. */
    _Atomic int moe_layers, moe_experts;
    /* Rows per expert since the batcher started (ss_batcher_moe_rows). */
#define SS__BATCH_MOE_LAYERS 4
#define SS__BATCH_MOE_EXPERTS 128
    _Atomic uint64_t moe_rows[SS__BATCH_MOE_LAYERS][SS__BATCH_MOE_EXPERTS];
};

/* Adds the rows plan's MoE layers routed since the last call to
 * slimserve_moe_expert_rows_total (batch_run.c).  [worker] */
void ss__batch_moe_count(ss_batcher_t *b, const ss_plan_t *plan);
/* Removes b's series of it.  [any] */
void ss__batch_moe_remove(ss_batcher_t *b);

/* [worker] One visit of an executor to a batcher the pool handed it: under
 * the batcher's lock, drops items past their deadline into *expired and
 * takes a batch (*batch, *samples in all) if one is due and the batcher is
 * under its cap, then tells the pool when to come back.  When either list
 * is set, the caller must call ss__batch_visit_done after completing
 * them.  In batch.c. */
void ss__batch_visit(ss_batcher_t *b, ss_work_t **batch, int64_t *samples,
                     ss_work_t **expired);
/* [worker] The items of a visit are completed: frees the cap slot, asks
 * for another visit if work is left, wakes a closing free().  The caller
 * must not touch b afterwards.  In batch.c. */
void ss__batch_visit_done(ss_batcher_t *b);

/* [any] Pool lists (pool.c); called with b->lock held, take the pool's.
 * A batcher is in them at most once, and only while b->scheduled: push
 * only a batcher that is in neither (b->scheduled was false).  promote
 * moves a batcher from the timed list to the ready one, and does nothing
 * when the pool already did (or already popped it: a visit is coming). */
void ss__pool_push_ready(ss_exec_pool_t *p, ss_batcher_t *b);
void ss__pool_push_timed(ss_exec_pool_t *p, ss_batcher_t *b, int64_t when);
void ss__pool_promote(ss_exec_pool_t *p, ss_batcher_t *b);
/* Counts batchers for ss_exec_pool_batchers. */
void ss__pool_attach(ss_exec_pool_t *p, int delta);

/* Sets the calling thread's OpenMP thread count to b->threads (when set)
 * and returns the previous one, for ss__batch_omp_restore.  Plans must be
 * compiled with the thread count they run with: oneDNN sizes its kernels'
 * work split when a primitive is created, and a plan compiled for 2
 * threads but run on 1 took 2.5x the CPU per sample (MLP, batch 32).
 * In batch_run.c. */
int ss__batch_omp_enter(const ss_batcher_t *b);
void ss__batch_omp_restore(const ss_batcher_t *b, int saved);

/* [worker] Runs the items of one visit on executor x and completes them
 * (their done callbacks).  In batch_run.c. */
void ss__batch_run(struct exec *x, ss_batcher_t *b, ss_work_t *batch,
                   int64_t samples, ss_work_t *expired);
/* In batch_run.c: an executor's context and buffers. */
int ss__batch_exec_init(struct exec *x, ss_err_t *err);
void ss__batch_exec_close(struct exec *x);
/* [worker] Frees what x's context and batch buffers hold (x is idle) and
 * returns it to the system; the bytes freed. */
size_t ss__batch_exec_release(struct exec *x);

#endif
