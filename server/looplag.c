/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loop lag: see looplag.h.
 *
 * DESIGN: a one-shot timer re-armed from its own callback: each tick
 * measures from the moment it was armed (uv_hrtime, nanoseconds) to the
 * moment it ran, minus the interval, so a stall shows once, at its
 * length, and the ticks after it are on time again.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include "server/looplag.h"

#include <stdbool.h>

#include "common/alloc.h"

struct ss_looplag {
    uv_timer_t timer;
    uint64_t interval_ms;
    uint64_t armed_ns;          /* uv_hrtime when the timer was armed */
    bool ticked;                /* the first tick measured nothing */
    double max;
    ss_series_t *hist, *gmax;
};

static void
on_tick(uv_timer_t *t)
{
    ss_looplag_t *p = t->data;
    uint64_t now = uv_hrtime(), due = p->armed_ns + p->interval_ms * 1000000;
    double lag = now > due ? (double)(now - due) / 1e9 : 0.0;

    /* The first tick waits for the loop to start running (the rest of
     * start-up): that is not a stall. */
    if (p->ticked) {
        ss_series_observe(p->hist, lag);
        if (lag > p->max) {
            p->max = lag;
            ss_series_set(p->gmax, lag);
        }
    }
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
    ss_metric_t *h, *g;
    ss_looplag_t *p;

    *out = NULL;
    h = ss_metrics_histogram(m, "slimserve_loop_lag_seconds",
                             "How late a timer on the loop fired: the time "
                             "the loop thread was blocked.", 1, labels,
                             buckets, sizeof(buckets) / sizeof(buckets[0]));
    g = ss_metrics_gauge(m, "slimserve_loop_lag_max_seconds",
                         "The longest loop stall seen since start.", 1,
                         labels);
    if ((p = ss_calloc(1, sizeof(*p))) == NULL || h == NULL || g == NULL ||
        (p->hist = ss_metric_series(h, lv)) == NULL ||
        (p->gmax = ss_metric_series(g, lv)) == NULL) {
        ss_free(p);
        return ss_err_set(err, SS_ENOMEM, "out of memory for the loop lag "
                          "probe");
    }
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
    ss_free(h->data);
}

void
ss_looplag_close(ss_looplag_t *p)
{
    if (p == NULL)
        return;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_closed);
}
