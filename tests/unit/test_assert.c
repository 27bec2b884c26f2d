/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SS_ASSERT and the reference-count checks built on it: a true condition
 * is evaluated once and lets the program go on; a false one logs the
 * expression, file, line and function and ends the process with SIGABRT.
 * Each failing case runs in a forked child whose stderr comes back
 * through a pipe.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/log.h"
#include "common/refcount.h"
#include "tests/tap.h"

static int evaluations;

static int
count(int v)
{
    evaluations++;
    return v;
}

static int fail_line;     /* the line of the SS_ASSERT in check_x */
static int x_value = 2;

/* Records its assertion's line; fails when x_value is not 2. */
static void
check_x(void)
{
    int x = x_value;

    fail_line = __LINE__ + 1;
    SS_ASSERT(x == 2);
}

static void
fail_here(void)
{
    x_value = 1;
    check_x();
}

static void
put_below_zero(void)
{
    ss_ref_t r;

    ss_ref_init(&r);
    if (ss_ref_put(&r))     /* the last reference: fine */
        ss_ref_put(&r);     /* one too many: must abort */
}

static void
get_after_zero(void)
{
    ss_ref_t r;

    ss_ref_init(&r);
    (void)ss_ref_put(&r);
    ss_ref_get(&r);         /* resurrects a dead object: must abort */
}

/* Runs fn in a child with stderr captured into out; returns the wait
 * status, or -1 when the child could not be run. */
static int
run_child(void (*fn)(void), char *out, size_t cap)
{
    int fds[2], status;
    size_t n = 0;
    ssize_t k;
    pid_t pid;

    out[0] = '\0';
    if (pipe(fds) < 0)
        return -1;
    fflush(stdout);
    if ((pid = fork()) < 0)
        return -1;
    if (pid == 0) {
        /* No core file from an expected abort. */
        struct rlimit no_core = { 0, 0 };

        setrlimit(RLIMIT_CORE, &no_core);
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        fn();
        _exit(0);
    }
    close(fds[1]);
    while (n + 1 < cap && (k = read(fds[0], out + n, cap - n - 1)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(fds[0]);
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return status;
}

static int
aborted(int status)
{
    return status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

int
main(void)
{
    char out[16384], where[64];
    ss_ref_t r;
    int status;

    ss_log_init(SS_LOG_ERR);

    SS_ASSERT(count(1) == 1);
    is_int(evaluations, 1, "a true condition is evaluated exactly once");
    check_x();
    ok(fail_line > 0, "a passing check returns");

    ss_ref_init(&r);
    ss_ref_get(&r);
    ok(!ss_ref_put(&r) && ss_ref_put(&r) && ss_ref_count(&r) == 0,
       "balanced get and put reach zero without an abort");

    status = run_child(fail_here, out, sizeof(out));
    ok(aborted(status), "a false condition aborts (status %d)", status);
    ok(strstr(out, "assertion failed: x == 2") != NULL,
       "the log line names the expression");
    snprintf(where, sizeof(where), "test_assert.c:%d", fail_line);
    ok(strstr(out, where) != NULL, "the log line names file and line (%s)",
       where);
    ok(strstr(out, "check_x") != NULL, "the log line names the function");
    ok(strstr(out, " error ") != NULL || strstr(out, "<3>") != NULL,
       "the line is logged at error level");
    if (!aborted(status) || strstr(out, "x == 2") == NULL)
        tap_diag("child stderr: %s", out);

    status = run_child(put_below_zero, out, sizeof(out));
    ok(aborted(status) && strstr(out, "old > 0") != NULL,
       "a put below zero aborts with the failed check");

    status = run_child(get_after_zero, out, sizeof(out));
    ok(aborted(status) && strstr(out, "old > 0") != NULL,
       "a get after the count reached zero aborts");

    /* The log level does not hide an assertion. */
    ss_log_level = SS_LOG_ERR - 1;
    status = run_child(fail_here, out, sizeof(out));
    ok(aborted(status) && strstr(out, "x == 2") != NULL,
       "the failure is logged whatever the log level");
    return tap_done();
}
