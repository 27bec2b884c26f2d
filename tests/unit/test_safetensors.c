/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine/io/safetensors: files written by Python (by hand with struct and
 * json, as the safetensors package lays them out: make_safetensors_data.py)
 * are read with every element checked; every hostile file is refused with
 * SS_EINVAL and a message naming the problem; the writer's bytes equal the
 * Python layout; round trips; allocation failures; truncations of a valid
 * file at every length are refused without a read out of bounds (ASan
 * build).
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/io/npy.h"
#include "engine/io/safetensors.h"
#include "tests/tap.h"

static char datadir[512];
static char tmpdir[64];

static const char *
path_of(const char *name)
{
    static char p[700];

    snprintf(p, sizeof(p), "%s/%s.safetensors", datadir, name);
    return p;
}

/* Element i as the generator writes it (see its docstring). */
static double
want_at(ss_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SS_DTYPE_BOOL: return (double)(i % 2);
    case SS_DTYPE_U8: case SS_DTYPE_U16: case SS_DTYPE_U32:
    case SS_DTYPE_U64: return (double)i;
    case SS_DTYPE_F64: case SS_DTYPE_F32: case SS_DTYPE_F16:
    case SS_DTYPE_BF16: return (double)(i - 3) * 0.5;
    default: return (double)(i - 3);
    }
}

static double
half_to_double(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(m + 1024, e - 25);

    return h & 0x8000 ? -v : v;
}

static double
got_at(const ss_tensor_t *t, int64_t i)
{
    const void *d = t->data;

    switch (t->dtype) {
    case SS_DTYPE_F64: return ((const double *)d)[i];
    case SS_DTYPE_F32: return ((const float *)d)[i];
    case SS_DTYPE_F16: return half_to_double(((const uint16_t *)d)[i]);
    case SS_DTYPE_BF16: {
        uint32_t u = (uint32_t)((const uint16_t *)d)[i] << 16;
        float f;

        memcpy(&f, &u, 4);
        return f;
    }
    case SS_DTYPE_I64: return (double)((const int64_t *)d)[i];
    case SS_DTYPE_I32: return ((const int32_t *)d)[i];
    case SS_DTYPE_I16: return ((const int16_t *)d)[i];
    case SS_DTYPE_I8: return ((const int8_t *)d)[i];
    case SS_DTYPE_U8: case SS_DTYPE_BOOL: return ((const uint8_t *)d)[i];
    default: return NAN;
    }
}

static int64_t
numel(const ss_tensor_t *t)
{
    int64_t n = 1;

    for (int d = 0; d < t->ndim; d++)
        n *= t->dims[d];
    return n;
}

static size_t
esize(ss_dtype_t dt)
{
    switch (dt) {
    case SS_DTYPE_F64: case SS_DTYPE_I64: case SS_DTYPE_U64: return 8;
    case SS_DTYPE_F32: case SS_DTYPE_I32: case SS_DTYPE_U32: return 4;
    case SS_DTYPE_F16: case SS_DTYPE_BF16: case SS_DTYPE_I16:
    case SS_DTYPE_U16: return 2;
    default: return 1;
    }
}

static int
pattern_ok(const ss_tensor_t *t)
{
    int64_t n = numel(t);

    for (int64_t i = 0; i < n; i++)
        if (got_at(t, i) != want_at(t->dtype, i))
            return 0;
    return 1;
}

static void
check_tensor(const ss_safetensors_t *st, const char *name, ss_dtype_t dt,
             int ndim, const int64_t *dims)
{
    int i = ss_safetensors_find(st, name);
    const ss_tensor_t *t = ss_safetensors_tensor(st, i);

    if (!ok(t != NULL, "tensor '%s' present", name))
        return;
    ok(t->dtype == dt && t->ndim == ndim
       && (ndim == 0
           || memcmp(t->dims, dims, sizeof(int64_t) * (size_t)ndim) == 0),
       "'%s': dtype %s, %d dims as written", name,
       ss_safetensors_dtype_name(dt), ndim);
    ok(pattern_ok(t), "'%s': every element as Python wrote it", name);
}

static void
test_python_files(void)
{
    ss_safetensors_t *st = NULL;
    ss_err_t err = { 0 };
    int rc;

    rc = ss_safetensors_read(path_of("ok_f32"), SIZE_MAX, &st, &err);
    is_int(rc, 0, "ok_f32 reads (%s)", err.msg);
    if (st != NULL) {
        is_int(ss_safetensors_count(st), 1, "one tensor");
        check_tensor(st, "w", SS_DTYPE_F32, 2, (int64_t[]){ 2, 3 });
        ok(ss_safetensors_meta(st, "format") == NULL, "no metadata");
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_meta"), SIZE_MAX, &st, &err);
    is_int(rc, 0, "ok_meta reads (%s)", err.msg);
    if (st != NULL) {
        check_tensor(st, "base_model.model.fc1.lora_A.weight", SS_DTYPE_F32,
                     2, (int64_t[]){ 4, 8 });
        check_tensor(st, "base_model.model.fc1.lora_B.weight", SS_DTYPE_F32,
                     2, (int64_t[]){ 16, 4 });
        is_str(ss_safetensors_meta(st, "format"), "pt", "__metadata__");
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_types"), SIZE_MAX, &st, &err);
    is_int(rc, 0, "ok_types reads (%s)", err.msg);
    if (st != NULL) {
        is_int(ss_safetensors_count(st), 8, "eight tensors");
        check_tensor(st, "a", SS_DTYPE_F64, 1, (int64_t[]){ 3 });
        check_tensor(st, "b", SS_DTYPE_F16, 2, (int64_t[]){ 2, 2 });
        check_tensor(st, "c", SS_DTYPE_BF16, 1, (int64_t[]){ 5 });
        check_tensor(st, "d", SS_DTYPE_I64, 1, (int64_t[]){ 2 });
        check_tensor(st, "e", SS_DTYPE_I32, 3, (int64_t[]){ 1, 1, 3 });
        check_tensor(st, "f", SS_DTYPE_U8, 1, (int64_t[]){ 4 });
        check_tensor(st, "g", SS_DTYPE_BOOL, 1, (int64_t[]){ 3 });
        check_tensor(st, "h", SS_DTYPE_I8, 1, (int64_t[]){ 2 });
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_scalar_empty"), SIZE_MAX, &st,
                             &err);
    is_int(rc, 0, "ok_scalar_empty reads (%s)", err.msg);
    if (st != NULL) {
        check_tensor(st, "empty", SS_DTYPE_F32, 2, (int64_t[]){ 0, 4 });
        check_tensor(st, "s", SS_DTYPE_F32, 0, NULL);
        check_tensor(st, "z", SS_DTYPE_I16, 1, (int64_t[]){ 0 });
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_unordered"), SIZE_MAX, &st, &err);
    is_int(rc, 0, "ok_unordered reads (%s)", err.msg);
    if (st != NULL) {
        is_str(ss_safetensors_name(st, 0), "first", "sorted by offset");
        check_tensor(st, "second", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_no_tensors"), SIZE_MAX, &st, &err);
    is_int(rc, 0, "a file of metadata only reads (%s)", err.msg);
    if (st != NULL) {
        is_int(ss_safetensors_count(st), 0, "no tensors");
        is_str(ss_safetensors_meta(st, "k"), "v", "its metadata");
    }
    ss_safetensors_free(st);

    rc = ss_safetensors_read(path_of("ok_f32"), 20, &st, &err);
    is_int(rc, SS_ETOOBIG, "over max_bytes: SS_ETOOBIG");
    rc = ss_safetensors_read(path_of("no_such"), SIZE_MAX, &st, &err);
    is_int(rc, SS_ENOTFOUND, "a missing file: SS_ENOTFOUND");
}

static void
test_hostile(void)
{
    static const struct {
        const char *file, *msg;
    } cases[] = {
        { "bad_short", "too short" },
        { "bad_hlen_past_end", "header length 1000" },
        { "bad_hlen_huge", "out of range" },
        { "bad_hlen_zero", "out of range" },
        { "bad_not_json", "header:" },
        { "bad_not_object", "not a JSON object" },
        { "bad_dup", "header:" },
        { "bad_dtype", "unknown dtype" },
        { "bad_dtype_type", "unknown dtype" },
        { "bad_neg_dim", "dim 0" },
        { "bad_float_dim", "dim 0" },
        { "bad_too_many_dims", "at most 8 dims" },
        { "bad_size", "another size" },
        { "bad_overflow", "more than fit" },
        { "bad_end_past_data", "past the data" },
        { "bad_begin_after_end", "begin <= end" },
        { "bad_neg_offset", "begin <= end" },
        { "bad_offsets_len", "begin <= end" },
        { "bad_extra_key", "expected an object" },
        { "bad_missing_key", "expected an object" },
        { "bad_trailing", "after the last tensor" },
        { "bad_overlap", "tensors overlap" },
        { "bad_hole", "a hole" },
        { "bad_meta", "not a string" },
        { "bad_entry_type", "expected an object" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ss_safetensors_t *st = (void *)1;
        ss_err_t err = { 0 };
        int rc = ss_safetensors_read(path_of(cases[i].file), SIZE_MAX, &st,
                                     &err);

        ok(rc == SS_EINVAL && st == NULL
           && strstr(err.msg, cases[i].msg) != NULL
           && strstr(err.msg, cases[i].file) != NULL,
           "%s refused: %s", cases[i].file, err.msg);
    }
}

static int
slurp(const char *path, void **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;

    *buf = NULL;
    if (f == NULL || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) < 0 || (*buf = malloc((size_t)n + 1)) == NULL
        || fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        if (f)
            fclose(f);
        free(*buf);
        return -1;
    }
    fclose(f);
    *len = (size_t)n;
    return 0;
}

static void
test_writer(void)
{
    ss_safetensors_t *st = NULL, *back = NULL;
    void *py = NULL, *ours = NULL;
    size_t py_len = 0, ours_len = 0;
    const char *names[2];
    ss_tensor_t ts[2];
    const char *meta[] = { "format", "pt" };
    char path[128];
    ss_err_t err = { 0 };
    int rc;

    /* Same tensors, same order, same metadata: the same bytes as the
     * Python layout. */
    if (ss_safetensors_read(path_of("ok_meta"), SIZE_MAX, &st, &err) < 0
        || slurp(path_of("ok_meta"), &py, &py_len) < 0) {
        ok(0, "read ok_meta: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        names[i] = ss_safetensors_name(st, i);
        ts[i] = *ss_safetensors_tensor(st, i);
    }
    rc = ss_safetensors_encode(2, names, ts, 1, meta, &ours, &ours_len, &err);
    ok(rc == 0 && ours_len == py_len && memcmp(ours, py, py_len) == 0,
       "the writer's bytes equal the Python layout (%zu vs %zu bytes)",
       ours_len, py_len);
    ss_free(ours);
    ours = NULL;

    snprintf(path, sizeof(path), "%s/out.safetensors", tmpdir);
    rc = ss_safetensors_write(path, 2, names, ts, 1, meta, &err);
    is_int(rc, 0, "write (%s)", err.msg);
    rc = ss_safetensors_read(path, SIZE_MAX, &back, &err);
    ok(rc == 0 && ss_safetensors_count(back) == 2
       && memcmp(ss_safetensors_tensor(back, 1)->data, ts[1].data,
                 16 * 4 * sizeof(float)) == 0
       && strcmp(ss_safetensors_meta(back, "format"), "pt") == 0,
       "what is written reads back the same");

    names[1] = names[0];
    rc = ss_safetensors_encode(2, names, ts, 0, NULL, &ours, &ours_len,
                               &err);
    ok(rc == SS_EINVAL && ours == NULL, "a name used twice is refused");
    names[0] = "__metadata__";
    rc = ss_safetensors_encode(1, names, ts, 0, NULL, &ours, &ours_len,
                               &err);
    ok(rc == SS_EINVAL, "the reserved name is refused");
    ts[0].dtype = SS_DTYPE_STRING;
    names[0] = "s";
    rc = ss_safetensors_encode(1, names, ts, 0, NULL, &ours, &ours_len,
                               &err);
    ok(rc == SS_EINVAL, "a dtype safetensors has not is refused");
done:
    ss_safetensors_free(st);
    ss_safetensors_free(back);
    free(py);
    ss_free(ours);
}

/* Every prefix of a valid file and every single-byte change of its header
 * is either refused or, if accepted, self-consistent: the reader's checks
 * stand between the bytes and the copies (the ASan build proves no read
 * goes past the buffer, which is allocated to its exact size here). */
static void
test_truncations_and_flips(void)
{
    void *buf = NULL;
    size_t len = 0;
    int refused = 0, accepted_bad = 0, n = 0;

    if (slurp(path_of("ok_types"), &buf, &len) < 0) {
        ok(0, "read ok_types");
        return;
    }
    for (size_t cut = 0; cut < len; cut++) {
        void *b = malloc(cut ? cut : 1);
        ss_safetensors_t *st = NULL;

        memcpy(b, buf, cut);
        refused += ss_safetensors_read_buffer(b, cut, "cut", SIZE_MAX, &st,
                                              NULL) == SS_EINVAL;
        ss_safetensors_free(st);
        free(b);
        n++;
    }
    is_int(refused, n, "all %d truncations refused", n);
    for (size_t at = 0; at < len && at < 8 + 400; at++) {
        uint8_t *b = malloc(len);
        ss_safetensors_t *st = NULL;

        memcpy(b, buf, len);
        b[at] ^= 0x5a;
        if (ss_safetensors_read_buffer(b, len, "flip", SIZE_MAX, &st,
                                       NULL) == 0) {
            size_t sum = 0;

            for (int i = 0; i < ss_safetensors_count(st); i++) {
                const ss_tensor_t *t = ss_safetensors_tensor(st, i);

                sum += (size_t)numel(t) * esize(t->dtype);
            }
            accepted_bad += sum > len;
        }
        ss_safetensors_free(st);
        free(b);
    }
    is_int(accepted_bad, 0, "no accepted flip claims more bytes than exist");
    free(buf);
}

static void
test_alloc_failures(void)
{
    int k, failed = 0, bad = 0;

    for (k = 1; k < 200; k++) {
        ss_safetensors_t *st = NULL;
        int rc;

        ss_alloc_fail_after(k);
        rc = ss_safetensors_read(path_of("ok_types"), SIZE_MAX, &st, NULL);
        ss_alloc_fail_after(0);
        if (rc == 0) {
            ss_safetensors_free(st);
            break;
        }
        failed++;
        bad += rc != SS_ENOMEM || st != NULL;
    }
    ok(k < 200 && bad == 0 && failed > 0,
       "failing each of the first %d allocations gives SS_ENOMEM", failed);
}

int
main(void)
{
    const char *src = getenv("top_srcdir");

    snprintf(datadir, sizeof(datadir), "%s/tests/unit/data/safetensors",
             src ? src : ".");
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_safetensors.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_python_files();
    test_hostile();
    test_writer();
    test_truncations_and_flips();
    test_alloc_failures();
    {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
