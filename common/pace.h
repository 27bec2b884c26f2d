/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_PACE_H
#define SS_COMMON_PACE_H

/*
 * Pacing: background work (a compression job, a search, a training run)
 * yields to latency work (serving) at points where stopping costs
 * nothing.  On the 2-vCPU machines slimserve runs on, a job running on
 * the "free" CPU slowed serving on the other 5-7x at p99 even at
 * SCHED_IDLE (a plain spinner there costs as much: the vCPUs behave as
 * siblings of one core); no scheduling policy fixes that, only not
 * computing while requests are being served.  With the daemon's hook
 * (server/jobs/pace.c: wait until serving has been idle a whole
 * millisecond) at job_min_share 0, serving p99 at saturation stayed
 * within 1.25x of idle during a training job (docs/training.md), and
 * that is the default: a job computes in serving's idle time and stands
 * still while serving is saturated (job_min_share = 1: pacing off, a job
 * ends at its own speed).
 *
 * A thread that does background work installs a hook for itself; the
 * work calls ss_pace_point() between units (one op of a training step,
 * one chunk of a calibration pass, one latency run, one node or pass of a
 * plan's compile).  The hook may sleep (server/jobs: while serving is
 * active).  Threads without a hook -- serving threads, the command-line
 * tools -- pay one thread-local load per point.
 *
 * THREADS: [any]; the hook is per thread and runs on it.
 */

typedef void (*ss_pace_fn)(void *arg);

/* Installs fn (NULL: none) for the calling thread. */
void ss_pace_set(ss_pace_fn fn, void *arg);

/* The calling thread's hook (NULL: none), to hand to threads that do
 * part of its work (the trainer's batch slices). */
void ss_pace_get(ss_pace_fn *fn, void **arg);

/* A point where the calling thread's work may wait. */
void ss_pace_point(void);

#endif
