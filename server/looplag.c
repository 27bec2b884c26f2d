/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loop lag: see looplag.h.
 *
 * DESIGN: a one-shot timer re-armed from its own callback: each tick
 * measures from the moment it was armed (uv_hrtime, nanoseconds) to the
 * moment it ran, minus the interval, so a stall shows once, at its
 * length, and the ticks after it are on time again.
 *
 * The lag mixes two causes: the loop thread ran or blocked (work or a
 * lock on the loop: the daemon's fault), or it was runnable and waited
 * for a CPU (the scheduler gave the CPU to another thread: another
 * process, or one of ours of equal priority).  perf sched on the 2-core
 * test machine showed the second dominating: 90% of the loops' late
 * wake-ups over 5 ms were other processes' threads holding the loop's CPU.
 * The kernel counts the second per thread (schedstat: nanoseconds spent
 * runnable on a run queue), so each tick also subtracts the run-queue
 * wait since the last tick and reports the rest as the loop's own stall.
 * Reading it is one pread of a procfs file per tick (~2 us); without
 * schedstat the stall is the lag.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include "server/looplag.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"

struct ss_looplag {
    uv_timer_t timer;
    uint64_t interval_ms;
    uint64_t armed_ns;          /* uv_hrtime when the timer was armed */
    bool ticked;                /* the first tick measured nothing */
    double max, stall_max;
    int sfd;                    /* the loop thread's schedstat, or -1 */
    uint64_t runq_ns;           /* its run-queue wait at the last tick */
    ss_series_t *hist, *gmax, *shist, *smax, *runq;
};

/* [loop] The loop thread's total run-queue wait in ns (the second field of
 * /proc/self/task/TID/schedstat), or 0 without schedstat. */
static uint64_t
runq_wait(ss_looplag_t *p)
{
    char buf[96], *end;
    ssize_t n;

    if (p->sfd < 0 || (n = pread(p->sfd, buf, sizeof(buf) - 1, 0)) <= 0)
        return 0;
    buf[n] = '\0';
    /* "<ns on CPU> <ns waiting on a run queue> <timeslices>" */
    (void)strtoull(buf, &end, 10);
    return end == buf ? 0 : (uint64_t)strtoull(end, NULL, 10);
}

static void
on_tick(uv_timer_t *t)
{
    ss_looplag_t *p = t->data;
    uint64_t now = uv_hrtime(), due = p->armed_ns + p->interval_ms * 1000000;
    double lag = now > due ? (double)(now - due) / 1e9 : 0.0, stall;
    uint64_t rq, waited;

    /* Opened here, on the loop's own thread (the probe may be started
     * from another). */
    if (!p->ticked) {
        char path[64];

        snprintf(path, sizeof(path), "/proc/self/task/%ld/schedstat",
                 (long)syscall(SYS_gettid));
        p->sfd = open(path, O_RDONLY | O_CLOEXEC);
    }
    rq = runq_wait(p);
    waited = rq - p->runq_ns;

    /* The first tick waits for the loop to start running (the rest of
     * start-up): that is not a stall.  The loop sleeps in epoll_wait for
     * most of an interval and is on a run queue only after a wake-up, so
     * the wait since the last tick is (nearly all) the lag's.  When a
     * loop waited for a CPU and then also blocked past the due time, the
     * stall reads low by the first wait: it is a lower bound there. */
    if (p->ticked) {
        waited = p->sfd >= 0 && rq >= p->runq_ns ? waited : 0;
        stall = lag - (double)waited / 1e9;
        stall = stall > 0 ? stall : 0.0;
        ss_series_observe(p->hist, lag);
        ss_series_observe(p->shist, stall);
        ss_series_add(p->runq, (double)waited / 1e9);
        if (lag > p->max) {
            p->max = lag;
            ss_series_set(p->gmax, lag);
        }
        if (stall > p->stall_max) {
            p->stall_max = stall;
            ss_series_set(p->smax, stall);
        }
    }
    p->runq_ns = rq;
    p->ticked = true;
    p->armed_ns = now;
    uv_timer_start(&p->timer, on_tick, p->interval_ms, 0);
}

int
ss_looplag_start(uv_loop_t *loop, ss_metrics_t *m, const char *name,
                 int interval_ms, ss_looplag_t **out, ss_err_t *err)
{
    static const char *const labels[] = { "loop" };
    static const double buckets[] = { 0.001, 0.002, 0.005, 0.01, 0.025,
                                      0.05,  0.1,   0.25,  0.5,  1,
                                      2.5,   5,     10 };
    const char *lv[1] = { name };
    ss_metric_t *h, *g, *sh, *sg, *rq;
    ss_looplag_t *p;

    *out = NULL;
    h = ss_metrics_histogram(m, "slimserve_loop_lag_seconds",
                             "How late a timer on the loop fired: the time "
                             "the loop thread was blocked or waited for a "
                             "CPU.", 1, labels,
                             buckets, sizeof(buckets) / sizeof(buckets[0]));
    g = ss_metrics_gauge(m, "slimserve_loop_lag_max_seconds",
                         "The longest loop lag seen since start.", 1,
                         labels);
    sh = ss_metrics_histogram(m, "slimserve_loop_stall_seconds",
                              "A tick's lag less the loop thread's run-queue "
                              "wait: the time the loop itself ran or "
                              "blocked past the timer.", 1, labels, buckets,
                              sizeof(buckets) / sizeof(buckets[0]));
    sg = ss_metrics_gauge(m, "slimserve_loop_stall_max_seconds",
                          "The longest loop stall seen since start.", 1,
                          labels);
    rq = ss_metrics_counter(m, "slimserve_loop_runqueue_seconds_total",
                            "Time the loop thread was runnable but waited "
                            "for a CPU (schedstat).", 1, labels);
    if ((p = ss_calloc(1, sizeof(*p))) == NULL || h == NULL || g == NULL ||
        sh == NULL || sg == NULL || rq == NULL ||
        (p->hist = ss_metric_series(h, lv)) == NULL ||
        (p->gmax = ss_metric_series(g, lv)) == NULL ||
        (p->shist = ss_metric_series(sh, lv)) == NULL ||
        (p->smax = ss_metric_series(sg, lv)) == NULL ||
        (p->runq = ss_metric_series(rq, lv)) == NULL) {
        ss_free(p);
        return ss_err_set(err, SS_ENOMEM, "out of memory for the loop lag "
                          "probe");
    }
    p->sfd = -1;
    p->interval_ms = interval_ms > 0 ? (uint64_t)interval_ms : 10;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_unref((uv_handle_t *)&p->timer);
    p->armed_ns = uv_hrtime();
    uv_timer_start(&p->timer, on_tick, p->interval_ms, 0);
    *out = p;
    return 0;
}

static void
on_closed(uv_handle_t *h)
{
    ss_looplag_t *p = h->data;

    if (p->sfd >= 0)
        close(p->sfd);
    ss_free(p);
}

void
ss_looplag_close(ss_looplag_t *p)
{
    if (p == NULL)
        return;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_closed);
}
