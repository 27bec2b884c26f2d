/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_ASSERT_H
#define SS_COMMON_ASSERT_H

/*
 * SS_ASSERT: a check of a broken invariant, on in every build.
 *
 * Bad input is never an assertion: it is a negative code and an ss_err_t
 * detail.  SS_ASSERT is for what only a bug in this program can make false
 * (a reference count below zero, a table entry of an unknown kind).  When
 * it fails it logs "assertion failed: <expression>" with the file, line and
 * function through the log module, writes a backtrace to stderr and calls
 * abort(), so a core dump or the journal shows where.  Like redis'
 * serverAssert and unlike assert(3), NDEBUG does not remove it: a release
 * build that went on with a broken invariant would corrupt data instead of
 * stopping.  The condition is evaluated exactly once; the passing path
 * costs one predicted branch.
 *
 * THREADS: [any].
 */

#define SS_ASSERT(cond)                                                     \
    do {                                                                    \
        if (__builtin_expect(!(cond), 0))                                   \
            ss_assert_fail(#cond, __FILE__, __LINE__, __func__);            \
    } while (0)

/* Called by SS_ASSERT only: logs the failure and aborts. */
_Noreturn void ss_assert_fail(const char *expr, const char *file, int line,
                              const char *func);

#endif
