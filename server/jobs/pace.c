/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A job's pace hook (jobs.h, common/pace.h): at each pacing point the job
 * thread asks whether the data plane has requests in flight and, while it
 * has, sleeps in short slices -- unless the job has already waited its
 * share, min_share of its wall time being kept for computing.
 *
 * Polling rather than a wake-up from the request path: serving pays
 * nothing (no lock, no signal per request), and a slice of 200 us is a
 * few percent of a training step, so the job loses little when serving
 * goes idle between slices.  The slice also bounds how long a cancel
 * waits.
 *
 * THREADS: [job thread]; paced_ns is read by the loop (job JSON).
 */

#include <time.h>

#include "common/pace.h"
#include "server/jobs/internal.h"

#define SLICE_NS 200000

static int64_t
mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
pace(void *arg)
{
    ss__pace_t *p = arg;
    ss_jobs_t *js = p->js;
    double keep = js->min_share;
    int64_t now = mono_ns(), left, d;
    struct timespec ts;

    p->run_ns += now - p->last_ns;
    while (js->busy(js->busy_arg) > 0 && !atomic_load(&p->j->cancel)) {
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
        d = mono_ns();
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
    p->last_ns = mono_ns();
    if (js->busy != NULL && js->min_share < 1.0)
        ss_pace_set(pace, p);
}

void
ss__jobs_pace_end(ss__pace_t *p)
{
    (void)p;
    ss_pace_set(NULL, NULL);
}

void
ss_jobs_set_pace(ss_jobs_t *js, int (*busy)(void *arg), void *arg,
                 double min_share)
{
    /* The job thread reads these after taking a job off the queue under
     * the same lock. */
    pthread_mutex_lock(&js->lock);
    js->busy = busy;
    js->busy_arg = arg;
    js->min_share = min_share < 0 ? 0 : min_share;
    pthread_mutex_unlock(&js->lock);
}
