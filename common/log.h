/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_LOG_H
#define SS_COMMON_LOG_H

/*
 * Logging to stderr, one line per event.
 *
 * Levels are syslog's numbers.  The SS_LOG macro tests the level before it
 * evaluates its arguments, so a disabled debug line costs one compare.
 * Under systemd (JOURNAL_STREAM set) lines carry a "<N>" priority prefix
 * that journald understands instead of a timestamp; elsewhere they carry an
 * ISO-8601 UTC timestamp and the level name.
 *
 * THREADS: [any].  Each line is written with one write(2) so lines from
 * different threads do not interleave.
 */

#include <stdarg.h>

enum {
    SS_LOG_ERR = 3,
    SS_LOG_WARNING = 4,
    SS_LOG_NOTICE = 5,
    SS_LOG_INFO = 6,
    SS_LOG_DEBUG = 7
};

extern int ss_log_level;

/* [init] Parses "error", "warning", "notice", "info", "debug".  Returns 0 or
 * SS_EINVAL. */
int ss_log_level_parse(const char *name, int *level);
const char *ss_log_level_name(int level);

/* [init] Decides the line format from the environment. */
void ss_log_init(int level);

void ss_log_write(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define SS_LOG(level, ...)                                                  \
    do {                                                                    \
        if ((level) <= ss_log_level)                                        \
            ss_log_write((level), __VA_ARGS__);                             \
    } while (0)

#define ss_log_error(...) SS_LOG(SS_LOG_ERR, __VA_ARGS__)
#define ss_log_warn(...) SS_LOG(SS_LOG_WARNING, __VA_ARGS__)
#define ss_log_notice(...) SS_LOG(SS_LOG_NOTICE, __VA_ARGS__)
#define ss_log_info(...) SS_LOG(SS_LOG_INFO, __VA_ARGS__)
#define ss_log_debug(...) SS_LOG(SS_LOG_DEBUG, __VA_ARGS__)

#endif
