/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The saved fuzz_cfg reproducers (tests/fuzz/crashes/fuzz_cfg-*) as a unit
 * test, like test_replay for fuzz_onnx: each file goes once through the
 * fuzz target itself (linked in, called as libFuzzer calls it; it traps
 * on a config accepted out of bounds), then the value it found is checked
 * directly: the daemon's loader must refuse it, naming the key.
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cfg.h"
#include "tests/tap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL &&
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf != NULL)
        *len = (size_t)n;
    fclose(f);
    return buf;
}

/* fuzz_cfg-nan-flag-in-bounds: strtod reads "nan", and NaN passed the
 * bounds check (every comparison with NaN is false). */
static void
nan_refused(void)
{
    static const char *const vals[] = { "nan", "-nan", "NAN", "inf" };

    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char opt[64];
        char *argv[] = { "slimserve", opt, NULL };
        ss_config_t cfg;
        ss_err_t err = { 0 };
        int rc;

        snprintf(opt, sizeof(opt), "--shutdown-grace-s=%s", vals[i]);
        rc = ss_config_load(&cfg, 2, argv, &err);
        ok(rc < 0 && strstr(err.msg, "shutdown_grace_s") != NULL,
           "--shutdown-grace-s=%s refused: %s", vals[i], err.msg);
        ss_config_close(&cfg);
    }
}

int
main(void)
{
    const char *top = getenv("top_srcdir");
    char dir[1024], path[2048];
    struct dirent *de;
    DIR *d;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/tests/fuzz/crashes", top ? top : ".");
    if ((d = opendir(dir)) == NULL) {
        ok(0, "open %s", dir);
        return tap_done();
    }
    while ((de = readdir(d)) != NULL) {
        uint8_t *buf;
        size_t len = 0;

        if (strncmp(de->d_name, "fuzz_cfg-", 9) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if ((buf = slurp(path, &len)) == NULL) {
            ok(0, "%s: read", de->d_name);
            continue;
        }
        ok(LLVMFuzzerTestOneInput(buf, len) == 0, "%s: replays cleanly",
           de->d_name);
        free(buf);
        n++;
    }
    closedir(d);
    ok(n >= 1, "%d fuzz_cfg reproducers in %s", n, dir);
    nan_refused();
    return tap_done();
}
