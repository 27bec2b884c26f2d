/* SPDX-License-Identifier: Apache-2.0 */
#include "common/log.h"
#include "common/err.h"
#include "common/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int ss_log_level = SS_LOG_INFO;
static int journal;

static const char *const names[] = {
    [SS_LOG_ERR] = "error",     [SS_LOG_WARNING] = "warning",
    [SS_LOG_NOTICE] = "notice", [SS_LOG_INFO] = "info",
    [SS_LOG_DEBUG] = "debug",
};

int
ss_log_level_parse(const char *name, int *level)
{
    int i;

    for (i = SS_LOG_ERR; i <= SS_LOG_DEBUG; i++) {
        if (strcmp(name, names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    if (strcmp(name, "warn") == 0) {
        *level = SS_LOG_WARNING;
        return 0;
    }
    return SS_EINVAL;
}

const char *
ss_log_level_name(int level)
{
    if (level < SS_LOG_ERR || level > SS_LOG_DEBUG)
        return "unknown";
    return names[level];
}

void
ss_log_init(int level)
{
    ss_log_level = level;
    journal = getenv("JOURNAL_STREAM") != NULL;
}

void
ss_log_write(int level, const char *fmt, ...)
{
    char line[2048], msg[2048];
    size_t n = 0;
    va_list ap;
    int k;

    if (journal) {
        k = snprintf(line, sizeof(line), "<%d>", level);
    } else {
        struct timeval tv;
        struct tm tm;

        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        k = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                     ss_log_level_name(level));
    }
    n = k > 0 ? (size_t)k : 0;
    va_start(ap, fmt);
    k = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Messages quote names from files and clients: a newline must not
     * start a forged line, and raw bytes are shown, not passed on. */
    if (k > 0)
        n += ss_utf8_escape(line + n, sizeof(line) - n - 1, msg,
                            (size_t)k < sizeof(msg) ? (size_t)k
                                                    : sizeof(msg) - 1);
    line[n++] = '\n';
    /* One write per line keeps concurrent lines whole. */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* Nowhere left to report it. */
    }
}
