/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_LOOPLAG_H
#define SS_SERVER_LOOPLAG_H

/*
 * A probe of an event loop's responsiveness: a timer on the loop that
 * expects to fire every interval and records how late it fired.  A loop
 * thread that blocks (a file read, an fsync, a long parse) delays every
 * connection on it by as much, and the probe sees it as lateness:
 *
 *   slimserve_loop_lag_seconds{loop}       histogram of each tick's delay
 *   slimserve_loop_lag_max_seconds{loop}   the largest delay since start
 *   slimserve_loop_stall_seconds{loop}     each tick's delay less the time
 *                                          the loop thread spent runnable
 *                                          on a run queue (schedstat)
 *   slimserve_loop_stall_max_seconds{loop} the largest of those
 *   slimserve_loop_runqueue_seconds_total{loop}  run-queue wait in all
 *
 * The lag is what clients see; the stall is the loop's own part (work or
 * a lock on the loop), without what the scheduler adds when other threads
 * hold the CPUs (another process, or threads of ours of equal priority;
 * compression jobs run below it: see job_priority in jobs.h).
 *
 * Precision: libuv timers have millisecond resolution on a clock cached
 * per loop iteration, so a tick may read up to ~1 ms late (or early,
 * counted as 0) with nothing wrong; stalls of several milliseconds and up
 * are what it is for.  Cost: one timer callback per interval (10 ms).
 *
 * THREADS: [loop] of the loop probed; the metrics are [any].
 */

#include <uv.h>

#include "common/err.h"
#include "server/metrics.h"

typedef struct ss_looplag ss_looplag_t;

/* Starts probing loop every interval_ms (<= 0: 10), reporting under the
 * label loop=name.  The timer does not keep the loop alive.  Returns 0
 * and a new probe, or a negative code. */
int ss_looplag_start(uv_loop_t *loop, ss_metrics_t *m, const char *name,
                     int interval_ms, ss_looplag_t **out, ss_err_t *err);
/* [loop] Stops and frees the probe once libuv has closed its timer (the
 * loop must run again).  Accepts NULL. */
void ss_looplag_close(ss_looplag_t *p);

#endif
