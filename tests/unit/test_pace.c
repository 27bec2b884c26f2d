/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A job's pace hook (server/jobs/pace.c) against a scripted data plane:
 * it goes on at once while serving is idle; it waits while a request is
 * in flight and also while requests keep beginning with none in flight
 * at the moment it looks (short requests back to back: the gaps between
 * them are not idle time); it goes on only after a whole quiet slice;
 * min_share bounds the wait; a cancel ends it.  Lower bounds on the
 * waits are exact (a sleep is at least as long as asked); upper bounds
 * are loose, for a loaded machine.
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "common/clock.h"
#include "common/pace.h"
#include "server/jobs/internal.h"
#include "tests/tap.h"

#define SLICE_MS 1.0

/* The data plane as the hook sees it: call i returns in_flight[i] and
 * arrivals[i]; past the script, the last entry. */
typedef struct plane {
    int n, calls;
    int in_flight[16];
    uint64_t arrivals[16];
    ss__job_t *cancel_at_call;  /* cancels this job at call cancel_call */
    int cancel_call;
} plane_t;

static int
busy(void *arg, uint64_t *arrivals)
{
    plane_t *p = arg;
    int i = p->calls < p->n ? p->calls : p->n - 1;

    if (p->cancel_at_call != NULL && p->calls == p->cancel_call)
        atomic_store(&p->cancel_at_call->cancel, 1);
    p->calls++;
    *arrivals = p->arrivals[i];
    return p->in_flight[i];
}

/* One pace point in a job paced at share against the plane: the time it
 * took (ms). */
static double
point(plane_t *pl, double share, ss__job_t *j, double compute_ms)
{
    ss_jobs_t js = { 0 };
    ss__pace_t p;
    struct timespec ts = { 0, (long)(compute_ms * 1e6) };
    double t0;

    js.busy = busy;
    js.busy_arg = pl;
    js.min_share = share;
    ss__jobs_pace_begin(&p, &js, j);
    if (compute_ms > 0)
        nanosleep(&ts, NULL);
    t0 = ss_clock_mono_ms();
    ss_pace_point();
    t0 = ss_clock_mono_ms() - t0;
    ss__jobs_pace_end(&p);
    return t0;
}

static void
test_idle(void)
{
    plane_t pl = { .n = 1, .arrivals = { 7 } };
    ss__job_t j = { 0 };
    double ms = point(&pl, 0, &j, 0);

    ok(ms < 500, "idle serving: the job goes on (%.3f ms)", ms);
    ok(atomic_load(&j.paced_ns) == 0 && pl.calls == 2,
       "idle serving: nothing waited; one look at start, one at the "
       "point (%d)", pl.calls);
}

static void
test_back_to_back(void)
{
    /* begin: 10; then five looks each seeing a new request begun and
     * none in flight (each answered before the look), then quiet */
    plane_t pl = { .n = 7, .arrivals = { 10, 11, 12, 13, 14, 15, 15 } };
    ss__job_t j = { 0 };
    double ms = point(&pl, 0, &j, 0);

    ok(ms >= 5 * SLICE_MS && ms < 2000,
       "requests beginning with none in flight: the job waits a slice per "
       "look that saw one, then a quiet one (%.2f ms >= 5)", ms);
    ok(atomic_load(&j.paced_ns) >= 5000000,
       "the wait is accounted (%.2f ms)",
       (double)atomic_load(&j.paced_ns) / 1e6);
}

static void
test_in_flight(void)
{
    plane_t pl = { .n = 5, .in_flight = { 0, 1, 1, 1, 0 },
                   .arrivals = { 3, 4, 4, 4, 4 } };
    ss__job_t j = { 0 };
    double ms = point(&pl, 0, &j, 0);

    ok(ms >= 3 * SLICE_MS && ms < 2000,
       "a request in flight for three looks: the job waits them and a "
       "quiet slice after (%.2f ms >= 3)", ms);
}

static void
test_share(void)
{
    /* always busy; the job computed 20 ms before the point: with half
     * its time kept for computing it waits 20 ms at most (one slice more
     * in the worst case), not forever */
    plane_t pl = { .n = 1, .in_flight = { 1 }, .arrivals = { 1 } };
    ss__job_t j = { 0 };
    double ms = point(&pl, 0.5, &j, 20);

    ok(ms >= 19 && ms < 2000,
       "min_share 0.5 after 20 ms of computing under load: it waits about "
       "as long and goes on (%.2f ms)", ms);
}

static void
test_cancel(void)
{
    plane_t pl = { .n = 1, .in_flight = { 1 }, .arrivals = { 1 } };
    ss__job_t j = { 0 };
    double ms;

    pl.cancel_at_call = &j;
    pl.cancel_call = 4;
    ms = point(&pl, 0, &j, 0);
    ok(ms < 2000 && pl.calls == 5,
       "min_share 0 under endless load: a cancel ends the wait (%.2f ms, "
       "%d looks)", ms, pl.calls);
}

static void
test_off(void)
{
    plane_t pl = { .n = 1, .in_flight = { 1 }, .arrivals = { 1 } };
    ss__job_t j = { 0 };
    double ms = point(&pl, 1.0, &j, 0);

    ok(pl.calls == 0 && ms < 500, "min_share 1: no hook, serving is not "
       "even looked at (%d looks)", pl.calls);
}

int
main(void)
{
    test_idle();
    test_back_to_back();
    test_in_flight();
    test_share();
    test_cancel();
    test_off();
    return tap_done();
}
