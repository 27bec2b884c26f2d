/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Clocks.  CLOCK_MONOTONIC for every duration and deadline (the wall clock
 * jumps under NTP); the CPU-time clocks for benchmarks that must not count
 * time the scheduler gave to other processes.  Inline: the monotonic clock
 * is a vDSO read, and the batcher and the request path take it per request.
 *
 * THREADS: [any]
 */
#ifndef SS_COMMON_CLOCK_H
#define SS_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* id's time in nanoseconds (0 if the clock cannot be read, which for the
 * clocks used here means a broken system). */
static inline int64_t
ss_clock_ns(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t
ss_clock_mono_ns(void)
{
    return ss_clock_ns(CLOCK_MONOTONIC);
}

static inline double
ss_clock_mono_ms(void)
{
    return (double)ss_clock_mono_ns() / 1e6;
}

static inline double
ss_clock_mono_s(void)
{
    return (double)ss_clock_mono_ns() / 1e9;
}

#endif
