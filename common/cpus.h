/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_CPUS_H
#define SS_COMMON_CPUS_H

/*
 * CPU partitioning: serving executors and compression jobs on disjoint
 * cores, so a job never slows the requests down by competing for them
 * (OpenMP threads inherit the mask of the thread that starts them).
 *
 * THREADS: [any].
 */

#include <sched.h>

/* Splits the CPUs this process may run on: the last job_threads go to
 * jobs, the rest to serving.  Returns 0 when both sets are non-empty,
 * -1 when there are too few CPUs to split (both sets are then all CPUs). */
int ss_cpus_split(int job_threads, cpu_set_t *serving, cpu_set_t *jobs);

/* Pins the calling thread to set; returns 0 or -errno.  NULL is a no-op. */
int ss_cpus_pin_self(const cpu_set_t *set);

#endif
