/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A job's pace hook (jobs.h, common/pace.h): at each pacing point the job
 * thread looks at the data plane and, while it has been active within the
 * last slice, sleeps a slice -- unless the job has already waited its
 * share, min_share of its wall time being kept for computing.
 *
 * Active means a request in flight or one that began since the last look
 * (serving's arrival count moved).  In flight alone is not enough: a
 * client sending small requests back to back keeps serving saturated
 * with nothing in flight for a moment between its requests, and a job
 * that starts an op in such a gap computes across the requests that
 * follow (measured: with in-flight polling at min_share 0 the job still
 * computed 21-32% of the time and serving p99 rose 8x, docs/training.md).
 * A job resumes only after a whole slice without an arrival.
 *
 * Polling rather than a wake-up from the request path: serving pays one
 * relaxed atomic add per request (no lock, no signal), and the slice
 * (1 ms) is short against a training step yet wakes the job thread only
 * a thousand times a second while it waits.  The slice also bounds how
 * long a cancel waits.
 *
 * THREADS: [job thread]; paced_ns is read by the loop (job JSON).
 */

#include <time.h>

#include "common/clock.h"
#include "common/pace.h"
#include "server/jobs/internal.h"

#define SLICE_NS 1000000

/* Is serving active, as of now?  Updates what the hook has seen. */
static int
active(ss__pace_t *p, int64_t now)
{
    ss_jobs_t *js = p->js;
    uint64_t arrivals;

    if (js->busy(js->busy_arg, &arrivals) > 0 || arrivals != p->seen) {
        p->seen = arrivals;
        p->active_ns = now;
    }
    return now - p->active_ns < SLICE_NS;
}

static void
pace(void *arg)
{
    ss__pace_t *p = arg;
    double keep = p->js->min_share;
    int64_t now = ss_clock_mono_ns(), left, d;
    struct timespec ts;

    p->run_ns += now - p->last_ns;
    while (active(p, now) && !atomic_load(&p->j->cancel)) {
        /* waited <= run * (1 - keep) / keep keeps the job's share */
        left = keep > 0 ? (int64_t)((double)p->run_ns * (1.0 - keep) / keep)
                              - p->wait_ns
                        : SLICE_NS;
        if (left <= 0)
            break;
        d = left < SLICE_NS ? left : SLICE_NS;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)d;
        nanosleep(&ts, NULL);
        d = ss_clock_mono_ns();
        p->wait_ns += d - now;
        now = d;
        /* kept current: the job JSON shows a wait as it goes on */
        atomic_store_explicit(&p->j->paced_ns, p->wait_ns,
                              memory_order_relaxed);
    }
    p->last_ns = now;
}

void
ss__jobs_pace_begin(ss__pace_t *p, ss_jobs_t *js, ss__job_t *j)
{
    p->js = js;
    p->j = j;
    p->run_ns = p->wait_ns = 0;
    p->last_ns = ss_clock_mono_ns();
    p->seen = 0;
    p->active_ns = p->last_ns - SLICE_NS;
    if (js->busy != NULL && js->min_share < 1.0) {
        (void)active(p, p->last_ns);    /* what came before is not activity */
        p->active_ns = p->last_ns - SLICE_NS;
        ss_pace_set(pace, p);
    }
}

void
ss__jobs_pace_end(ss__pace_t *p)
{
    (void)p;
    ss_pace_set(NULL, NULL);
}

void
ss_jobs_set_pace(ss_jobs_t *js, int (*busy)(void *arg, uint64_t *arrivals),
                 void *arg, double min_share)
{
    /* The job thread reads these after taking a job off the queue under
     * the same lock. */
    pthread_mutex_lock(&js->lock);
    js->busy = busy;
    js->busy_arg = arg;
    js->min_share = min_share < 0 ? 0 : min_share;
    pthread_mutex_unlock(&js->lock);
}
