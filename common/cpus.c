/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "common/cpus.h"

#include <pthread.h>
#include <string.h>

int
ss_cpus_split(int job_threads, cpu_set_t *serving, cpu_set_t *jobs)
{
    cpu_set_t all;
    int n, i, given = 0;

    CPU_ZERO(serving);
    CPU_ZERO(jobs);
    if (sched_getaffinity(0, sizeof(all), &all) < 0)
        return -1;
    n = CPU_COUNT(&all);
    if (job_threads <= 0 || n <= job_threads) {
        memcpy(serving, &all, sizeof(all));
        memcpy(jobs, &all, sizeof(all));
        return -1;
    }
    for (i = CPU_SETSIZE - 1; i >= 0; i--) {
        if (!CPU_ISSET(i, &all))
            continue;
        if (given < job_threads) {
            CPU_SET(i, jobs);
            given++;
        } else {
            CPU_SET(i, serving);
        }
    }
    return 0;
}

int
ss_cpus_pin_self(const cpu_set_t *set)
{
    int rc;

    if (set == NULL)
        return 0;
    rc = pthread_setaffinity_np(pthread_self(), sizeof(*set), set);
    return -rc;
}
