/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_BATCH_INT_H
#define SS_SERVER_BATCH_INT_H

/*
 * Internals shared by server/batch/batch.c (queue, batch formation, life cycle)
 * and server/batch/batch_run.c (the executor threads).  Nobody else includes
 * this.  THREADS: see the essays of those two files.
 */

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <time.h>

#include "server/batch/batch.h"
#include "server/batch/plancache.h"

struct exec {
    ss_batcher_t *b;
    pthread_t tid;
    int started;
    ss_exec_ctx_t *ctx;
    ss_tensor_t *in;            /* the batch's inputs */
    void **in_buf;              /* concatenation buffers, reused */
    size_t *in_cap;
    ss_tensor_t *out;           /* the batch's outputs */
    void **out_buf;             /* run into these, then split */
    size_t *out_cap;
    ss_err_t err;
};

struct ss_batcher {
    const ss_graph_t *g;
    int n_inputs;
    int n_outputs;
    /* Per output: 1 when its first dim is the batch (symbolic in the
     * graph), 0 when it is the same for every sample (copied whole to
     * each item), -1 when the graph does not say (decided per batch by
     * whether the first dim equals the batch). */
    signed char *out_batched;
    int max_batch;
    int64_t delay_ns;
    int *preferred;             /* ascending, unique, in 1..max_batch */
    int n_preferred;
    int max_queue;
    int threads;                /* oneDNN threads per executor, 0: default */
    bool pin;                   /* executors pinned to cpus */
    cpu_set_t cpus;
    ss__plancache_t *plans;

    pthread_mutex_t lock;
    pthread_cond_t cond;        /* CLOCK_MONOTONIC */
    ss_work_t *head, *tail;
    int depth;
    int n_deadline;             /* queued items with a deadline */
    bool closing;
    bool paused;

    int n_exec;
    struct exec *execs;

    const ss_batch_metrics_t *mf;
    const char *labels[2];      /* model, version (copies) */
    char *model, *version;
    ss_series_t *m_inferences, *m_executions, *m_queue, *m_compute,
        *m_batch, *m_depth;
};

static inline int64_t
ss__batch_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* [worker] Waits for work: returns with *batch (a list, *samples in all)
 * and/or *expired (items past their deadline) set, or both NULL once the
 * batcher is closing and its queue is empty.  In batch.c. */
void ss__batch_next_work(ss_batcher_t *b, ss_work_t **batch,
                         int64_t *samples, ss_work_t **expired);

/* Sets the calling thread's OpenMP thread count to b->threads (when set)
 * and returns the previous one, for ss__batch_omp_restore.  Plans must be
 * compiled with the thread count they run with: oneDNN sizes its kernels'
 * work split when a primitive is created, and a plan compiled for 2
 * threads but run on 1 took 2.5x the CPU per sample (MLP, batch 32).
 * In batch_run.c. */
int ss__batch_omp_enter(const ss_batcher_t *b);
void ss__batch_omp_restore(const ss_batcher_t *b, int saved);

/* In batch_run.c. */
void *ss__batch_exec_main(void *arg);
int ss__batch_exec_init(ss_batcher_t *b, struct exec *x, int threads,
                        ss_err_t *err);
void ss__batch_exec_close(ss_batcher_t *b, struct exec *x);

#endif
