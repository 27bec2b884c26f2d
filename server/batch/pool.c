/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The executor pool: the threads that run every batcher's batches.
 *
 * DESIGN.  Threads follow cores, not models.  The daemon starts one pool
 * with one executor per serving core; each executor owns, for life, an
 * engine execution context (oneDNN stream, scratch arena) and batch
 * buffers, and may run any plan of any batcher (plans are immutable).
 * Before this, every model version started `instances` threads of its
 * own: 50 small models were 58 threads and 349 MB, and 1,000 models would
 * have been 1,000 threads, all but a core's worth of them idle.
 *
 * The pool keeps two lists of batchers, linked through the batchers:
 * `ready`, batchers with work an executor may take now, in the order they
 * asked; and `timed`, batchers whose work becomes takeable at a known time
 * (the oldest item's max_queue_delay_us, or a deadline).  A free executor
 * moves due timed batchers to the ready list, pops the first ready one and
 * visits it (ss__batch_visit, under that batcher's lock): it takes what
 * is due and the batcher, if it still has takeable work, goes to the back
 * of the list.  So batchers with work take turns (round-robin), and an
 * executor that frees up while a batcher's queue grew takes all of it
 * that fits one batch.  A batcher at its cap (`instances`) is not in the
 * lists; the visit that frees a slot puts it back.
 *
 * Idle executors sleep on one condition variable until a push or the
 * earliest timed wake; a push signals one of them.  An executor that has
 * had nothing to do for the idle-release time (10 s unless the daemon's
 * idle_release_ms says otherwise) since its last batch frees its
 * context's arena and its batch buffers (ss__batch_exec_release): an
 * outlier followed by silence would otherwise keep its memory until 32
 * to 47 more batches came (common/workbuf.h).  10 s, as jemalloc's default
 * decay of unused pages: long enough that a steady load, even a slow
 * one, keeps its buffers warm; the run after pays one allocation and
 * its page faults (~1.1 ms per MiB: 46 ms for a 40 MiB arena, measured
 * at load 20 on the 2-vCPU test machine; docs/architecture.md).
 *
 * THREADS: p->lock guards the lists, each batcher's pool_next, where and
 * wake_ns, n_batchers and stop.  It is taken inside a batcher's lock (the
 * push/promote calls) and alone (executors), never the other way round,
 * so the two cannot deadlock.  An executor holds no lock while it runs a
 * batch.  new and free run on the owner's thread.
 */

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/cpus.h"
#include "common/log.h"
#include "server/batch/internal.h"

/* ---- lists (all [pool locked]) --------------------------------------- */

static void
ready_append(ss_exec_pool_t *p, ss_batcher_t *b)
{
    b->pool_next = NULL;
    b->where = SS__IN_READY;
    if (p->ready_tail != NULL)
        p->ready_tail->pool_next = b;
    else
        p->ready_head = b;
    p->ready_tail = b;
}

static ss_batcher_t *
ready_pop(ss_exec_pool_t *p)
{
    ss_batcher_t *b = p->ready_head;

    if (b == NULL)
        return NULL;
    p->ready_head = b->pool_next;
    if (p->ready_head == NULL)
        p->ready_tail = NULL;
    b->pool_next = NULL;
    b->where = SS__IN_NONE;
    return b;
}

static void
timed_remove(ss_exec_pool_t *p, ss_batcher_t *b)
{
    for (ss_batcher_t **pp = &p->timed; *pp != NULL; pp = &(*pp)->pool_next) {
        if (*pp == b) {
            *pp = b->pool_next;
            break;
        }
    }
    b->pool_next = NULL;
    b->where = SS__IN_NONE;
}

/* Moves timed batchers whose time has come to the ready list; returns the
 * earliest wake of those left, or 0. */
static int64_t
promote_due(ss_exec_pool_t *p, int64_t now)
{
    ss_batcher_t **pp = &p->timed, *b;
    int64_t next = 0;

    while ((b = *pp) != NULL) {
        if (b->wake_ns <= now) {
            *pp = b->pool_next;
            ready_append(p, b);
            continue;
        }
        if (next == 0 || b->wake_ns < next)
            next = b->wake_ns;
        pp = &b->pool_next;
    }
    return next;
}

void
ss__pool_push_ready(ss_exec_pool_t *p, ss_batcher_t *b)
{
    pthread_mutex_lock(&p->lock);
    if (b->where == SS__IN_TIMED)
        timed_remove(p, b);
    if (b->where == SS__IN_NONE) {
        ready_append(p, b);
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
}

void
ss__pool_push_timed(ss_exec_pool_t *p, ss_batcher_t *b, int64_t when)
{
    pthread_mutex_lock(&p->lock);
    if (b->where == SS__IN_NONE) {
        b->where = SS__IN_TIMED;
        b->wake_ns = when;
        b->pool_next = p->timed;
        p->timed = b;
        /* A sleeper may be waiting for a later time, or for nothing. */
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
}

void
ss__pool_promote(ss_exec_pool_t *p, ss_batcher_t *b)
{
    pthread_mutex_lock(&p->lock);
    if (b->where == SS__IN_TIMED) {
        timed_remove(p, b);
        ready_append(p, b);
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
}

void
ss__pool_attach(ss_exec_pool_t *p, int delta)
{
    pthread_mutex_lock(&p->lock);
    p->n_batchers += delta;
    pthread_mutex_unlock(&p->lock);
}

int
ss_exec_pool_batchers(ss_exec_pool_t *p)
{
    int n;

    pthread_mutex_lock(&p->lock);
    n = p->n_batchers;
    pthread_mutex_unlock(&p->lock);
    return n;
}

int
ss_exec_pool_size(const ss_exec_pool_t *p)
{
    return p->n_exec;
}

/* ---- executors ----------------------------------------------------------- */

static int64_t idle_release_ns = SS_EXEC_IDLE_RELEASE_MS * 1000000LL;

void
ss_exec_pool_set_idle_release(int64_t ms)
{
    idle_release_ns = ms * 1000000;
}

static void
wait_until(ss_exec_pool_t *p, int64_t when)
{
    struct timespec ts;

    if (when <= 0) {
        pthread_cond_wait(&p->cond, &p->lock);
        return;
    }
    ts.tv_sec = when / 1000000000;
    ts.tv_nsec = when % 1000000000;
    pthread_cond_timedwait(&p->cond, &p->lock, &ts);
}

static void *
exec_main(void *arg)
{
    struct exec *x = arg;
    ss_exec_pool_t *p = x->pool;
    char name[16];

    /* A name tells executors from OpenMP workers in top -H, perf and the
     * benchmarks (15 characters at most, or the call fails). */
    snprintf(name, sizeof name, "ss-exec-%d", (int)(x - p->execs));
    pthread_setname_np(pthread_self(), name);
    /* Executors keep to the serving CPUs (their OpenMP threads inherit
     * the mask), away from compression jobs. */
    if (p->pin)
        ss_cpus_pin_self(&p->cpus);
    x->omp_default = x->omp_now = omp_get_max_threads();

    pthread_mutex_lock(&p->lock);
    for (;;) {
        int64_t wake = promote_due(p, ss_clock_mono_ns());
        ss_batcher_t *b = ready_pop(p);

        if (b != NULL) {
            ss_work_t *batch, *expired;
            int64_t samples;

            pthread_mutex_unlock(&p->lock);
            ss__batch_visit(b, &batch, &samples, &expired);
            if (batch != NULL || expired != NULL) {
                ss__batch_run(x, b, batch, samples, expired);
                ss__batch_visit_done(b);
            }
            pthread_mutex_lock(&p->lock);
            continue;
        }
        if (p->stop)
            break;
        if (x->last_ns > 0 && p->idle_ns > 0) {
            int64_t idle_at = x->last_ns + p->idle_ns;

            if (ss_clock_mono_ns() >= idle_at) {
                pthread_mutex_unlock(&p->lock);
                ss__batch_exec_release(x);
                pthread_mutex_lock(&p->lock);
                continue;
            }
            if (wake == 0 || idle_at < wake)
                wake = idle_at;
        }
        wait_until(p, wake);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------ */

static void
pool_destroy(ss_exec_pool_t *p, bool synced)
{
    if (synced) {
        pthread_mutex_lock(&p->lock);
        if (p->n_batchers > 0)
            ss_log_error("executor pool freed with %d batcher(s) on it",
                         p->n_batchers);
        p->stop = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
    }
    for (int i = 0; p->execs != NULL && i < p->n_exec; i++)
        if (p->execs[i].started)
            pthread_join(p->execs[i].tid, NULL);
    for (int i = 0; p->execs != NULL && i < p->n_exec; i++)
        ss__batch_exec_close(&p->execs[i]);
    ss_free(p->execs);
    if (synced) {
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
    }
    ss_free(p);
}

static int
sync_init(ss_exec_pool_t *p, ss_err_t *err)
{
    pthread_condattr_t ca;
    int ok;

    if (pthread_condattr_init(&ca) != 0)
        return ss_err_set(err, SS_ENOMEM, "cannot create a condition");
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&p->cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok)
        return ss_err_set(err, SS_ENOMEM, "cannot create a condition");
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        pthread_cond_destroy(&p->cond);
        return ss_err_set(err, SS_ENOMEM, "cannot create a mutex");
    }
    return 0;
}

int
ss_exec_pool_new(int executors, const cpu_set_t *cpus, ss_exec_pool_t **out,
                 ss_err_t *err)
{
    ss_exec_pool_t *p = NULL;
    bool synced = false;
    int rc = 0;

    *out = NULL;
    if (executors < 1) {
        rc = ss_err_set(err, SS_EINVAL, "an executor pool needs at least "
                        "one executor, not %d", executors);
        goto done;
    }
    if ((p = ss_calloc(1, sizeof *p)) == NULL ||
        (p->execs = ss_calloc((size_t)executors, sizeof *p->execs)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for an executor pool");
        goto done;
    }
    p->n_exec = executors;
    p->idle_ns = idle_release_ns;
    if (cpus != NULL) {
        p->pin = true;
        p->cpus = *cpus;
    }
    if ((rc = sync_init(p, err)) < 0)
        goto done;
    synced = true;
    for (int i = 0; i < p->n_exec; i++) {
        p->execs[i].pool = p;
        if ((rc = ss__batch_exec_init(&p->execs[i], err)) < 0)
            goto done;
    }
    for (int i = 0; i < p->n_exec; i++) {
        if (pthread_create(&p->execs[i].tid, NULL, exec_main,
                           &p->execs[i]) != 0) {
            rc = ss_err_set(err, SS_ENOMEM, "cannot start an executor "
                            "thread");
            goto done;
        }
        p->execs[i].started = 1;
    }
    *out = p;
    p = NULL;
done:
    if (p != NULL)
        pool_destroy(p, synced);
    return rc;
}

void
ss_exec_pool_free(ss_exec_pool_t *p)
{
    if (p != NULL)
        pool_destroy(p, true);
}
