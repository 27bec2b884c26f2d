/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The saved fuzz reproducers (tests/fuzz/crashes/fuzz_onnx-*) as a unit
 * test, so every build (and the ASan one in CI) checks they stay fixed
 * without clang or libFuzzer: each file goes once through the fuzz target
 * itself (linked in, called like libFuzzer would), which must not crash,
 * leak or trip a sanitizer; then through load and plan again, which must
 * end as the table below says (a clean error naming the problem).  A new
 * reproducer not in the table only has to replay cleanly.
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/engine.h"
#include "tests/tap.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where load or plan must stop; rc 0 means the model loads and plans. */
static const struct {
    const char *file;
    int rc;
    const char *msg;        /* substring of the error */
} expect[] = {
    { "fuzz_onnx-asan-fuse-ln-stack-overflow", 0, NULL },
    { "fuzz_onnx-oom-constant-fold", SS_ETOOBIG,
      "node 'ConstantOfShape' (ConstantOfShape)" },
    { "fuzz_onnx-ub-binary-null-input", SS_EBADMODEL, "(Div) has no output" },
    { "fuzz_onnx-ub-empty-string-attr", SS_EBADMODEL,
      "is not defined by anything" },
    { "fuzz_onnx-ub-unary-null-input", SS_EBADMODEL, "(Tanh) has no output" },
};

static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0
        && (buf = malloc((size_t)n + 1)) != NULL
        && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf != NULL)
        *len = (size_t)n;
    fclose(f);
    return buf;
}

/* Load, then a plan at batch 1 as the fuzz target makes it. */
static int
load_and_plan(const uint8_t *buf, size_t len, ss_err_t *err)
{
    ss_tensor_t in[16];
    ss_graph_t *g = NULL;
    ss_plan_t *p = NULL;
    int rc, n;

    memset(in, 0, sizeof(in));
    if ((rc = ss_graph_load_onnx_buffer(buf, len, &g, err)) < 0)
        return rc;
    n = ss_graph_num_inputs(g);
    for (int i = 0; i < n && i < 16; i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);

        in[i].dtype = io->dtype;
        in[i].ndim = io->ndim;
        for (int k = 0; k < io->ndim; k++)
            in[i].dims[k] = io->dims[k] < 0 ? 1 : io->dims[k];
    }
    if (n <= 16)
        rc = ss_plan_new(g, in, &p, err);
    ss_plan_free(p);
    ss_graph_free(g);
    return rc;
}

static void
replay(const char *dir, const char *name)
{
    char path[2048];
    ss_err_t err = { 0 };
    uint8_t *buf;
    size_t len = 0;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if ((buf = slurp(path, &len)) == NULL) {
        ok(0, "%s: read", name);
        return;
    }
    ok(LLVMFuzzerTestOneInput(buf, len) == 0, "%s: replays cleanly", name);
    rc = load_and_plan(buf, len, &err);
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        if (strcmp(expect[i].file, name) != 0)
            continue;
        is_int(rc, expect[i].rc, "%s: load and plan end as expected (%s)",
               name, err.msg);
        if (expect[i].msg != NULL)
            ok(strstr(err.msg, expect[i].msg) != NULL,
               "%s: the error says '%s'", name, expect[i].msg);
    }
    if (rc < 0) {
        int ctl = 0;

        for (const char *c = err.msg; *c != '\0'; c++)
            ctl += (unsigned char)*c < 0x20;
        ok(err.msg[0] != '\0' && ctl == 0,
           "%s: the error has a message, with no control bytes", name);
    }
    free(buf);
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
main(void)
{
    const char *top = getenv("top_srcdir");
    char dir[1024], *names[256];
    struct dirent *de;
    DIR *d;
    int n = 0, seen = 0;

    LLVMFuzzerInitialize(NULL, NULL);
    snprintf(dir, sizeof(dir), "%s/tests/fuzz/crashes", top ? top : ".");
    if ((d = opendir(dir)) == NULL) {
        ok(0, "open %s", dir);
        return tap_done();
    }
    while ((de = readdir(d)) != NULL && n < 256)
        if (strncmp(de->d_name, "fuzz_onnx-", 10) == 0
            && (names[n] = strdup(de->d_name)) != NULL)
            n++;
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), by_name);
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof(expect) / sizeof(expect[0]); k++)
            seen += strcmp(expect[k].file, names[i]) == 0;
        replay(dir, names[i]);
        free(names[i]);
    }
    is_int(seen, (int)(sizeof(expect) / sizeof(expect[0])),
           "every reproducer in the table is in %s", dir);
    return tap_done();
}
