/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The failure path of SS_ASSERT: one log line, a backtrace, abort().
 *
 * The log line goes through ss_log_write directly (not SS_LOG) so no level
 * setting can hide it.  backtrace_symbols_fd writes straight to the file
 * descriptor without allocating, which matters when the broken invariant
 * is the heap's.  The first backtrace() call may load libgcc's unwinder;
 * that is acceptable on a path that ends the process.
 *
 * THREADS: [any].  Two threads failing at once both log, and the first
 * abort() ends the process.
 */

#include <execinfo.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/log.h"

void
ss_assert_fail(const char *expr, const char *file, int line,
               const char *func)
{
    void *frames[64];
    int n;

    ss_log_write(SS_LOG_ERR, "assertion failed: %s (%s:%d, %s)", expr, file,
                 line, func);
    n = backtrace(frames, (int)(sizeof(frames) / sizeof(frames[0])));
    backtrace_symbols_fd(frames, n, STDERR_FILENO);
    abort();
}
