/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_TAP_H
#define SS_TESTS_TAP_H

/*
 * A tiny TAP producer for automake's tap-driver.sh.
 *
 *   int main(void) {
 *       ok(1 + 1 == 2, "addition");
 *       is_int(f(), 3, "f returns 3");
 *       return tap_done();
 *   }
 *
 * Failures print both values and the location as TAP diagnostics.
 * The plan ("1..N") is printed at the end by tap_done().
 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifdef SS_TAP_EXTERN
/* A test program of several files (CFLAGS -DSS_TAP_EXTERN): one count for
 * all of them, defined by the file with main (SS_TAP_COUNTERS). */
extern int tap_n_, tap_failed_;
#define SS_TAP_COUNTERS int tap_n_, tap_failed_
#else
static int tap_n_, tap_failed_;
#endif

static inline int
tap_ok_(int cond, const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    tap_n_++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_n_);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed_++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
    return cond;
}

#define ok(cond, ...) tap_ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define is_int(got, want, ...)                                              \
    do {                                                                    \
        long long g_ = (long long)(got), w_ = (long long)(want);           \
        if (!ok(g_ == w_, __VA_ARGS__))                                     \
            printf("#   got %lld, want %lld\n", g_, w_);                    \
    } while (0)

#define is_str(got, want, ...)                                              \
    do {                                                                    \
        const char *g_ = (got), *w_ = (want);                               \
        int c_ = g_ && w_ ? strcmp(g_, w_) == 0 : g_ == w_;                 \
        if (!ok(c_, __VA_ARGS__))                                           \
            printf("#   got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)",     \
                   w_ ? w_ : "(null)");                                     \
    } while (0)

/* |got - want| <= atol + rtol * |want| */
#define is_close(got, want, rtol, atol, ...)                                \
    do {                                                                    \
        double g_ = (got), w_ = (want);                                     \
        if (!ok(fabs(g_ - w_) <= (atol) + (rtol) * fabs(w_), __VA_ARGS__))  \
            printf("#   got %.9g, want %.9g\n", g_, w_);                    \
    } while (0)

static inline void
tap_diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int
tap_done(void)
{
    printf("1..%d\n", tap_n_);
    return tap_failed_ ? 1 : 0;
}

#endif
