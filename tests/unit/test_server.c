/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the server's pure parts: config, router, auth. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "server/http/auth.h"
#include "server/cfg.h"
#include "server/http/router.h"
#include "tests/tap.h"

static int
load(ss_config_t *c, ss_err_t *err, int argc, char **argv)
{
    int rc;

    ss_err_clear(err);
    rc = ss_config_load(c, argc, argv, err);
    return rc;
}

static void
test_config(void)
{
    char tmpl[] = "/tmp/ss-cfg-XXXXXX";
    char *a1[] = { "x", "--http-port=0", "--admin-port", "-1",
                   "--admin-insecure", "--log-level=debug",
                   "--shutdown-grace-s=2.5", "--max-body-bytes=1000" };
    char *a2[] = { "x", "--http-port=65536" };
    char *a3[] = { "x", "--bogus=1" };
    char *a4[] = { "x", "--threads" };
    char path[64], arg[96];
    ss_config_t c;
    ss_err_t err;
    FILE *f;
    int fd;

    is_int(load(&c, &err, 8, a1), SS_CONFIG_RUN, "flags parse");
    is_int(c.http_port, 0, "http_port from flag");
    is_int(c.admin_port, -1, "admin_port from a separate value");
    ok(c.admin_insecure, "boolean flag without a value");
    is_int(c.log_level, 7, "log level debug");
    is_close(c.shutdown_grace_s, 2.5, 0, 1e-12, "double flag");
    is_int(c.max_body_bytes, 1000, "int64 flag");
    is_str(c.admin_address, "127.0.0.1", "admin address defaults to "
           "loopback");
    ss_config_close(&c);

    ok(load(&c, &err, 2, a2) == SS_EINVAL && strstr(err.msg, "http_port"),
       "out-of-range port names the key: %s", err.msg);
    ss_config_close(&c);
    ok(load(&c, &err, 2, a3) == SS_EINVAL && strstr(err.msg, "--bogus"),
       "unknown flag named: %s", err.msg);
    ss_config_close(&c);
    ok(load(&c, &err, 2, a4) == SS_EINVAL && strstr(err.msg, "threads"),
       "missing value named: %s", err.msg);
    ss_config_close(&c);

    fd = mkstemp(tmpl);
    ok(fd >= 0, "temp config file");
    close(fd);
    snprintf(path, sizeof(path), "%s", tmpl);
    f = fopen(path, "w");
    fputs("{\"http_port\": 1234, \"admin_port\": 4321, "
          "\"model_repository\": \"/srv/m\"}", f);
    fclose(f);
    snprintf(arg, sizeof(arg), "--config=%s", path);
    {
        char *a5[] = { "x", "--http-port=99", arg };

        is_int(load(&c, &err, 3, a5), SS_CONFIG_RUN, "file + flags: %s",
               err.msg);
        is_int(c.http_port, 99, "a flag overrides the file, in any order");
        is_int(c.admin_port, 4321, "the file overrides the default");
        is_str(c.model_repository, "/srv/m", "string from the file");
        ss_config_close(&c);
    }
    f = fopen(path, "w");
    fputs("{\"threads\": 2, \"threads\": 3}", f);
    fclose(f);
    {
        char *a6[] = { "x", arg };

        ok(load(&c, &err, 2, a6) == SS_EINVAL, "duplicate keys refused: %s",
           err.msg);
        ss_config_close(&c);
    }
    unlink(path);
}

static void
test_router(void)
{
    ss_route_match_t m;

    ok(ss_route_match("/v2", "/v2", &m) && m.n == 0, "literal match");
    ok(!ss_route_match("/v2", "/v2/", &m), "trailing slash differs");
    ok(!ss_route_match("/v2", "/v", &m), "prefix does not match");
    ok(ss_route_match("/v2/models/*/infer", "/v2/models/resnet/infer", &m) &&
       m.n == 1 && strcmp(m.cap[0], "resnet") == 0, "wildcard captured");
    ok(!ss_route_match("/v2/models/*/infer", "/v2/models//infer", &m),
       "empty segment does not match a wildcard");
    ok(!ss_route_match("/v2/models/*", "/v2/models/a/b", &m),
       "a wildcard is one segment");
    ok(ss_route_match("/v2/models/*/versions/*/infer",
                      "/v2/models/m/versions/12/infer", &m) &&
       m.n == 2 && strcmp(m.cap[1], "12") == 0, "two captures");
    {
        char longseg[600];

        memset(longseg, 'a', sizeof(longseg));
        memcpy(longseg, "/v2/models/", 11);
        longseg[sizeof(longseg) - 1] = '\0';
        ok(!ss_route_match("/v2/models/*", longseg, &m),
           "an over-long segment is refused, not truncated");
    }
    ok(!ss_route_match("/v2/models/*", "/v2/models/mlp\xc0\x80x", &m),
       "a decoded %%00 (C0 80) is not a name");
    ok(!ss_route_match("/v2/models/*", "/v2/models/a\xff", &m),
       "invalid UTF-8 is not a name");
    ok(!ss_route_match("/v2/models/*", "/v2/models/a\tb", &m),
       "a control character is not a name");
    ok(ss_route_match("/v2/models/*", "/v2/models/caf\xc3\xa9", &m),
       "UTF-8 names match");
    {
        static const struct {
            const char *text;
            long long want;
        } nums[] = {
            { "1", 1 }, { "12", 12 }, { "9223372036854775807", INT64_MAX },
            { "0", -1 }, { "01", -1 }, { "+1", -1 }, { "-1", -1 },
            { "1a", -1 }, { " 1", -1 }, { "", -1 },
            { "9223372036854775808", -1 }, { "99999999999999999999", -1 },
        };
        size_t i;

        for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
            is_int((long long)ss_route_number(nums[i].text), nums[i].want,
                   "ss_route_number(\"%s\")", nums[i].text);
    }
}

/* Writes text (n bytes) as a 0600 token file; returns its path. */
static const char *
token_file(char *tmpl, const char *text, size_t n)
{
    int fd = mkstemp(tmpl);

    if (fd < 0 || write(fd, text, n) != (ssize_t)n)
        return NULL;
    close(fd);
    chmod(tmpl, 0600);
    return tmpl;
}

static void
test_auth_limits(void)
{
    static char big[4100];
    char t1[] = "/tmp/ss-tok-XXXXXX", t2[] = "/tmp/ss-tok-XXXXXX",
         t3[] = "/tmp/ss-tok-XXXXXX", t4[] = "/tmp/ss-tok-XXXXXX";
    ss_auth_t a;
    ss_err_t err;

    memset(big, 'k', sizeof(big));
    /* 4096 bytes and a CRLF: the largest file, and it loads whole. */
    memcpy(big + 4096, "\r\n", 2);
    is_int(ss_auth_load(&a, token_file(t1, big, 4098), &err), 0,
           "a 4096-byte token with CRLF loads");
    is_int((long long)a.len, 4096, "whole, not cut");
    ss_auth_close(&a);
    ok(ss_auth_load(&a, token_file(t2, big, 4099), &err) == SS_EINVAL &&
       strstr(err.msg, "4098") != NULL, "a 4099-byte file is refused: %s",
       err.msg);
    ss_auth_close(&a);
    ok(ss_auth_load(&a, token_file(t3, "abc\0def\n", 8), &err) ==
       SS_EINVAL, "a NUL inside is refused, not a cut token: %s", err.msg);
    ss_auth_close(&a);
    ok(ss_auth_load(&a, token_file(t4, "ab cd\n", 6), &err) == SS_EINVAL,
       "a space inside is refused: %s", err.msg);
    ss_auth_close(&a);
    unlink(t1);
    unlink(t2);
    unlink(t3);
    unlink(t4);
}

static void
test_auth(void)
{
    char tmpl[] = "/tmp/ss-tok-XXXXXX";
    ss_auth_t a;
    ss_err_t err;
    int fd;

    fd = mkstemp(tmpl);
    ok(fd >= 0, "temp token file");
    ok(write(fd, "abc123\n", 7) == 7, "token written");
    close(fd);
    chmod(tmpl, 0600);
    is_int(ss_auth_load(&a, tmpl, &err), 0, "token loads");
    ok(ss_auth_check(&a, "Bearer abc123"), "right token accepted");
    ok(ss_auth_check(&a, "bearer abc123"), "scheme is case-insensitive");
    ok(!ss_auth_check(&a, "Bearer abc12"), "prefix refused");
    ok(!ss_auth_check(&a, "Bearer abc1234"), "longer refused");
    ok(!ss_auth_check(&a, "Bearer abc124"), "last byte differs: refused");
    ok(!ss_auth_check(&a, "Bearer "), "empty refused");
    ok(!ss_auth_check(&a, NULL), "no header refused");
    ok(!ss_auth_check(&a, "Basic abc123"), "other scheme refused");
    ss_auth_close(&a);
    chmod(tmpl, 0604);
    ok(ss_auth_load(&a, tmpl, &err) == SS_EAUTH &&
       strstr(err.msg, "others") != NULL, "world-readable refused: %s",
       err.msg);
    ss_auth_close(&a);
    chmod(tmpl, 0640);
    is_int(ss_auth_load(&a, tmpl, &err), 0, "group-readable is allowed");
    ss_auth_close(&a);
    unlink(tmpl);
    ok(ss_auth_load(&a, "/nonexistent/token", &err) < 0,
       "missing file refused");
}

int
main(void)
{
    test_config();
    test_router();
    test_auth();
    test_auth_limits();
    return tap_done();
}
