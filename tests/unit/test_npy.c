/* SPDX-License-Identifier: Apache-2.0 */
/*
 * .npy/.npz reading and writing.
 *
 * The reference is numpy: tests/unit/data/npy/ holds files numpy wrote
 * (tests/unit/data/make_npy_data.py), each filled with a known pattern
 * (element i is i % 2 for bool, i for unsigned, i - 3 for signed ints and
 * (i - 3) * 0.5 for floats), and npy_check.py asks numpy to read the files
 * this code writes.  Hostile input: every truncation of every file, every
 * single-byte corruption of the archives, crafted headers, the size cap,
 * and failed allocations.
 */

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/io/npy.h"
#include "tests/tap.h"

static char datadir[1024], tmpdir[256];

static double
half_to_double(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(m + 1024, e - 25);

    return (h & 0x8000) ? -v : v;
}

static double
elem(const ss_tensor_t *t, int64_t i)
{
    const void *d = t->data;

    switch (t->dtype) {
    case SS_DTYPE_F32: return ((const float *)d)[i];
    case SS_DTYPE_F64: return ((const double *)d)[i];
    case SS_DTYPE_F16: return half_to_double(((const uint16_t *)d)[i]);
    case SS_DTYPE_I64: return (double)((const int64_t *)d)[i];
    case SS_DTYPE_I32: return ((const int32_t *)d)[i];
    case SS_DTYPE_I16: return ((const int16_t *)d)[i];
    case SS_DTYPE_I8: return ((const int8_t *)d)[i];
    case SS_DTYPE_U8: return ((const uint8_t *)d)[i];
    case SS_DTYPE_U16: return ((const uint16_t *)d)[i];
    case SS_DTYPE_U32: return ((const uint32_t *)d)[i];
    case SS_DTYPE_U64: return (double)((const uint64_t *)d)[i];
    case SS_DTYPE_BOOL: return ((const uint8_t *)d)[i];
    default: return NAN;
    }
}

static double
want(ss_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SS_DTYPE_BOOL: return (double)(i % 2);
    case SS_DTYPE_U8: case SS_DTYPE_U16: case SS_DTYPE_U32:
    case SS_DTYPE_U64: return (double)i;
    case SS_DTYPE_F32: case SS_DTYPE_F64: case SS_DTYPE_F16:
        return (double)(i - 3) * 0.5;
    default: return (double)(i - 3);
    }
}

/* 1 if t holds the pattern for its dtype. */
static int
has_pattern(const ss_tensor_t *t)
{
    int64_t n = 1;

    for (int k = 0; k < t->ndim; k++)
        n *= t->dims[k];
    for (int64_t i = 0; i < n; i++)
        if (elem(t, i) != want(t->dtype, i)) {
            tap_diag("element %lld: got %g, want %g", (long long)i,
                     elem(t, i), want(t->dtype, i));
            return 0;
        }
    return 1;
}

static void
fill_pattern(ss_tensor_t *t)
{
    int64_t n = 1;

    for (int k = 0; k < t->ndim; k++)
        n *= t->dims[k];
    t->data = ss_aligned_alloc(ss_npy_nbytes(t));
    for (int64_t i = 0; i < n; i++) {
        double v = want(t->dtype, i);
        void *d = t->data;

        switch (t->dtype) {
        case SS_DTYPE_F32: ((float *)d)[i] = (float)v; break;
        case SS_DTYPE_F64: ((double *)d)[i] = v; break;
        case SS_DTYPE_I64: ((int64_t *)d)[i] = (int64_t)v; break;
        case SS_DTYPE_I32: ((int32_t *)d)[i] = (int32_t)v; break;
        case SS_DTYPE_I16: ((int16_t *)d)[i] = (int16_t)v; break;
        case SS_DTYPE_I8: ((int8_t *)d)[i] = (int8_t)v; break;
        case SS_DTYPE_U8: case SS_DTYPE_BOOL:
            ((uint8_t *)d)[i] = (uint8_t)v; break;
        case SS_DTYPE_U16: ((uint16_t *)d)[i] = (uint16_t)v; break;
        case SS_DTYPE_U32: ((uint32_t *)d)[i] = (uint32_t)v; break;
        case SS_DTYPE_U64: ((uint64_t *)d)[i] = (uint64_t)v; break;
        default: break;
        }
    }
}

static int
same_shape(const ss_tensor_t *t, ss_dtype_t dt, int ndim, const int64_t *d)
{
    if (t->dtype != dt || t->ndim != ndim)
        return 0;
    for (int k = 0; k < ndim; k++)
        if (t->dims[k] != d[k])
            return 0;
    return 1;
}

static int
same_tensor(const ss_tensor_t *a, const ss_tensor_t *b)
{
    return same_shape(a, b->dtype, b->ndim, b->dims) &&
           memcmp(a->data, b->data, ss_npy_nbytes(a)) == 0;
}

static uint8_t *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;

    *len = 0;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) == (size_t)n)
        *len = (size_t)n;
    fclose(f);
    return buf;
}

static const struct {
    const char *file;
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[3];
} npys[] = {
    { "f4_2x3", SS_DTYPE_F32, 2, { 2, 3 } },
    { "f8_4", SS_DTYPE_F64, 1, { 4 } },
    { "f2_3", SS_DTYPE_F16, 1, { 3 } },
    { "i8_2x2x2", SS_DTYPE_I64, 3, { 2, 2, 2 } },
    { "i4_5", SS_DTYPE_I32, 1, { 5 } },
    { "i2_3", SS_DTYPE_I16, 1, { 3 } },
    { "i1_4", SS_DTYPE_I8, 1, { 4 } },
    { "u1_6", SS_DTYPE_U8, 1, { 6 } },
    { "u2_3", SS_DTYPE_U16, 1, { 3 } },
    { "u4_3", SS_DTYPE_U32, 1, { 3 } },
    { "u8_3", SS_DTYPE_U64, 1, { 3 } },
    { "b1_5", SS_DTYPE_BOOL, 1, { 5 } },
    { "f4_scalar", SS_DTYPE_F32, 0, { 0 } },
    { "f4_0x3", SS_DTYPE_F32, 2, { 0, 3 } },
    { "f4_be_2x3", SS_DTYPE_F32, 2, { 2, 3 } },
    { "i8_be_4", SS_DTYPE_I64, 1, { 4 } },
    { "f4_fortran_2x3x4", SS_DTYPE_F32, 3, { 2, 3, 4 } },
    { "f4_v2_2x3", SS_DTYPE_F32, 2, { 2, 3 } },
    { "f4_v3_2x3", SS_DTYPE_F32, 2, { 2, 3 } },
};
#define NNPYS (int)(sizeof(npys) / sizeof(npys[0]))

static void
test_numpy_files(void)
{
    char path[1400];

    for (int i = 0; i < NNPYS; i++) {
        ss_tensor_t t, b;
        ss_err_t err = { 0 };
        uint8_t *buf;
        size_t len, bad = 0;
        int rc;

        snprintf(path, sizeof(path), "%s/%s.npy", datadir, npys[i].file);
        rc = ss_npy_read(path, SS_NPY_DEFAULT_MAX_BYTES, &t, &err);
        if (!ok(rc == 0, "%s: reads", npys[i].file)) {
            tap_diag("%s", err.msg);
            continue;
        }
        ok(same_shape(&t, npys[i].dtype, npys[i].ndim, npys[i].dims),
           "%s: dtype and shape", npys[i].file);
        ok(t.data != NULL && has_pattern(&t), "%s: values", npys[i].file);
        buf = slurp(path, &len);
        rc = ss_npy_read_buffer(buf, len, npys[i].file, 1 << 20, &b, &err);
        ok(rc == 0 && same_tensor(&b, &t), "%s: same from memory",
           npys[i].file);
        ss_tensor_free_data(&b);
        for (size_t cut = 0; cut < len; cut++) {
            if (ss_npy_read_buffer(buf, cut, "cut", 1 << 20, &b, &err) == 0)
                bad++;
            ss_tensor_free_data(&b);
        }
        is_int(bad, 0, "%s: all %zu truncations fail", npys[i].file, len);
        ss_tensor_free_data(&t);
        free(buf);
    }
}

static const char *npz_names[] = { "f4_2x3", "i8_2x2x2", "f4_scalar",
                                   "f4_0x3", "b1_5" };

static void
check_npz_contents(const ss_npz_t *z, const char *what)
{
    int good = ss_npz_count(z) == 5;

    for (int i = 0; good && i < 5; i++) {
        int j = ss_npz_find(z, npz_names[i]);
        const ss_tensor_t *t = ss_npz_tensor(z, j);

        good = j >= 0 && t != NULL && has_pattern(t) &&
               strcmp(ss_npz_name(z, j), npz_names[i]) == 0;
    }
    ok(good, "%s: 5 arrays with their names and values", what);
}

/* Every single-byte change must fail cleanly or leave arrays that are
 * still some original's (names may change: zip has no CRC for them). */
static void
corrupt_npz(const uint8_t *buf, size_t len, const ss_npz_t *orig,
            const char *what)
{
    uint8_t *c = malloc(len);
    size_t bad = 0, failed = 0;

    for (size_t pos = 0; pos < len; pos++) {
        ss_npz_t *z = NULL;

        memcpy(c, buf, len);
        c[pos] ^= 0x5a;
        if (ss_npz_read_buffer(c, len, "c", 1 << 20, &z, NULL) < 0) {
            failed++;
            continue;
        }
        for (int i = 0; i < ss_npz_count(z); i++) {
            int found = 0;

            for (int j = 0; j < ss_npz_count(orig); j++)
                found |= same_tensor(ss_npz_tensor(z, i),
                                     ss_npz_tensor(orig, j));
            bad += !found;
        }
        ss_npz_free(z);
    }
    is_int(bad, 0, "%s: no corruption of %zu bytes yields wrong data "
           "(%zu rejected)", what, len, failed);
    free(c);
}

static void
test_numpy_archives(void)
{
    static const char *files[] = { "stored", "deflated" };
    char path[1400];

    for (int f = 0; f < 2; f++) {
        ss_npz_t *z = NULL, *m = NULL;
        ss_err_t err = { 0 };
        uint8_t *buf;
        size_t len, bad = 0;
        int rc;

        snprintf(path, sizeof(path), "%s/%s.npz", datadir, files[f]);
        rc = ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &z, &err);
        if (!ok(rc == 0, "%s.npz: reads", files[f]))
            tap_diag("%s", err.msg);
        check_npz_contents(z, files[f]);
        buf = slurp(path, &len);
        rc = ss_npz_read_buffer(buf, len, files[f], 1 << 20, &m, &err);
        ok(rc == 0, "%s.npz: reads from memory", files[f]);
        check_npz_contents(m, files[f]);
        ss_npz_free(m);
        for (size_t cut = 0; cut < len; cut++) {
            m = NULL;
            if (ss_npz_read_buffer(buf, cut, "cut", 1 << 20, &m, NULL) == 0)
                bad++;
            ss_npz_free(m);
        }
        is_int(bad, 0, "%s.npz: all %zu truncations fail", files[f], len);
        corrupt_npz(buf, len, z, files[f]);
        /* The cap is on the sum of all arrays: 24 + 64 + 4 + 0 + 5. */
        m = NULL;
        rc = ss_npz_read_buffer(buf, len, files[f], 96, &m, &err);
        is_int(rc, SS_ETOOBIG, "%s.npz: 96-byte cap refused", files[f]);
        ok(strstr(err.msg, files[f]) && strstr(err.msg, "array '"),
           "error names the file and the array: %s", err.msg);
        rc = ss_npz_read_buffer(buf, len, files[f], 97, &m, &err);
        is_int(rc, 0, "%s.npz: 97-byte cap is enough", files[f]);
        ss_npz_free(m);
        ss_npz_free(z);
        free(buf);
    }
    {
        ss_npz_t *z = NULL;
        ss_tensor_t t;
        int rc;

        snprintf(path, sizeof(path), "%s/mixed.npz", datadir);
        rc = ss_npz_read(path, 1 << 20, &z, NULL);
        ok(rc == 0 && ss_npz_count(z) == 1 &&
           strcmp(ss_npz_name(z, 0), "x") == 0,
           "mixed.npz: other members and directories skipped");
        rc = ss_npz_take(z, 0, &t);
        ok(rc == 0 && t.data && has_pattern(&t) &&
           ss_npz_tensor(z, 0)->data == NULL, "take moves the data out");
        ss_tensor_free_data(&t);
        is_int(ss_npz_take(z, 1, &t), SS_EINVAL, "take out of range");
        ss_npz_free(z);
    }
}

static int
read_mem(const char *text, size_t max, int *code)
{
    ss_tensor_t t;
    ss_err_t err = { 0 };
    uint8_t buf[4096];
    size_t hl = strlen(text), n;
    int rc;

    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)hl;
    buf[9] = (uint8_t)(hl >> 8);
    memcpy(buf + 10, text, hl);
    n = 10 + hl;
    memset(buf + n, 0x11, 64);   /* some data */
    n += 64;
    rc = ss_npy_read_buffer(buf, n, "mem", max, &t, &err);
    ss_tensor_free_data(&t);
    if (rc < 0 && err.msg[0] == '\0')
        tap_diag("no message for code %d", rc);
    *code = rc;
    return rc;
}

static void
test_headers(void)
{
    static const struct {
        const char *hdr;
        int code;
        const char *why;
    } cases[] = {
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", 0,
          "plain" },
        { "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (4,)}",
          0, "double quotes, no trailing comma" },
        { "{'shape': (2L, 2L), 'fortran_order': False, 'descr': '<f4'}", 0,
          "keys in any order, Python 2 longs" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (17,), }",
          SS_EINVAL, "more data promised than present" },
        { "{'descr': '<f4', 'fortran_order': False, "
          "'shape': (1000000000000000000,), }", SS_ETOOBIG, "huge" },
        { "{'descr': '<f4', 'fortran_order': False, "
          "'shape': (4294967296, 4294967296, 4294967296), }", SS_ETOOBIG,
          "overflowing" },
        { "{'descr': '<f4', 'fortran_order': False, "
          "'shape': (99999999999999999999,), }", SS_EINVAL, "over int64" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
          SS_EINVAL, "negative dim" },
        { "{'descr': '<f4', 'fortran_order': False, "
          "'shape': (1,1,1,1,1,1,1,1,1), }", SS_EUNSUPP, "9 dims" },
        { "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
          SS_EUNSUPP, "complex" },
        { "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
          SS_EUNSUPP, "object" },
        { "{'descr': [('a', '<f4')], 'fortran_order': False, "
          "'shape': (1,), }", SS_EUNSUPP, "structured" },
        { "{'descr': '<f4', 'fortran_order': False}", SS_EINVAL,
          "no shape" },
        { "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
          "'shape': (1,)}", SS_EINVAL, "repeated key" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), "
          "'x': 1}", SS_EINVAL, "unknown key" },
        { "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
          SS_EINVAL, "bad bool" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
          SS_EINVAL, "trailing text" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x",
          SS_EINVAL, "unterminated string" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}",
          SS_EINVAL, "double comma" },
        { "", SS_EINVAL, "empty header" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int code;

        read_mem(cases[i].hdr, 1 << 20, &code);
        is_int(code, cases[i].code, "header: %s", cases[i].why);
    }
    {
        int code;
        ss_tensor_t t;
        ss_err_t err = { 0 };
        uint8_t v9[16] = "\x93NUMPY\x09\x00\x00\x00";
        uint8_t big[16] = "\x93NUMPY\x02\x00\xff\xff\xff\x7f";

        read_mem("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
                 15, &code);
        is_int(code, SS_ETOOBIG, "16 bytes over a 15-byte cap");
        read_mem("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
                 16, &code);
        is_int(code, 0, "16 bytes within a 16-byte cap");
        is_int(ss_npy_read_buffer("\x93NUMPX\x01\x00\x00\x00", 10, "m",
                                  100, &t, &err), SS_EINVAL, "bad magic");
        is_int(ss_npy_read_buffer(v9, 10, "m", 100, &t, &err), SS_EUNSUPP,
               "version 9");
        is_int(ss_npy_read_buffer(big, 12, "m", 100, &t, &err), SS_EINVAL,
               "2 GB header length");
        is_int(ss_npy_read("/nonexistent/x.npy", 100, &t, &err), SS_EIO,
               "missing file");
        ok(strstr(err.msg, "/nonexistent/x.npy") != NULL,
           "message names the file: %s", err.msg);
    }
}

static const ss_dtype_t all_types[] = {
    SS_DTYPE_F32, SS_DTYPE_F64, SS_DTYPE_I64, SS_DTYPE_I32, SS_DTYPE_I16,
    SS_DTYPE_I8, SS_DTYPE_U8, SS_DTYPE_U16, SS_DTYPE_U32, SS_DTYPE_U64,
    SS_DTYPE_BOOL,
};
#define NTYPES (int)(sizeof(all_types) / sizeof(all_types[0]))

/* Writes one file per dtype and shape plus archives into tmpdir, reads
 * them back, and leaves them for numpy to check. */
static void
test_round_trips(void)
{
    static const struct { int ndim; int64_t dims[3]; const char *tag; }
    shapes[] = { { 2, { 3, 5 }, "3x5" }, { 0, { 0 }, "scalar" },
                 { 1, { 0 }, "0" }, { 3, { 2, 1, 4 }, "2x1x4" } };
    ss_tensor_t ts[NTYPES];
    const char *names[NTYPES];
    char path[512], namebuf[NTYPES][32];
    size_t bad = 0, n = 0;

    for (int d = 0; d < NTYPES; d++) {
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            ss_tensor_t t = { 0 }, r;
            ss_err_t err = { 0 };
            void *buf;
            size_t len;

            t.dtype = all_types[d];
            t.ndim = shapes[s].ndim;
            memcpy(t.dims, shapes[s].dims, sizeof(shapes[s].dims));
            fill_pattern(&t);
            snprintf(path, sizeof(path), "%s/%s_%s.npy", tmpdir,
                     ss_npy_descr(t.dtype) + 1, shapes[s].tag);
            n++;
            if (ss_npy_write(path, &t, &err) < 0 ||
                ss_npy_read(path, 1 << 20, &r, &err) < 0) {
                tap_diag("%s: %s", path, err.msg);
                bad++;
            } else {
                bad += !same_tensor(&r, &t);
                ss_tensor_free_data(&r);
            }
            if (ss_npy_encode(&t, &buf, &len, &err) < 0 ||
                (len - ss_npy_nbytes(&t)) % 64 != 0 ||
                ss_npy_read_buffer(buf, len, "enc", 1 << 20, &r, &err) < 0) {
                tap_diag("encode %s: %s", path, err.msg);
                bad++;
            } else {
                bad += !same_tensor(&r, &t);
                ss_tensor_free_data(&r);
            }
            ss_free(buf);
            ss_tensor_free_data(&t);
        }
    }
    is_int(bad, 0, "%zu dtype/shape round trips through files and memory",
           n);

    for (int d = 0; d < NTYPES; d++) {
        memset(&ts[d], 0, sizeof(ts[d]));
        ts[d].dtype = all_types[d];
        ts[d].ndim = 2;
        ts[d].dims[0] = 2;
        ts[d].dims[1] = d;   /* the first one has 0 elements */
        fill_pattern(&ts[d]);
        snprintf(namebuf[d], sizeof(namebuf[d]), "a%s", ss_npy_descr(
                 all_types[d]) + 1);
        names[d] = namebuf[d];
    }
    for (int force = 0; force < 2; force++) {
        ss_err_t err = { 0 };
        ss_npz_t *z = NULL;
        void *buf;
        size_t len;
        int good;

        snprintf(path, sizeof(path), "%s/out%s.npz", tmpdir,
                 force ? "64" : "");
        if (force) {
            good = ss_npz_encode(NTYPES, names, ts, 1, &buf, &len, &err) == 0;
            if (good) {
                FILE *f = fopen(path, "wb");

                good = f && fwrite(buf, 1, len, f) == len;
                if (f)
                    fclose(f);
            }
            ss_free(buf);
        } else {
            good = ss_npz_write(path, NTYPES, names, ts, &err) == 0;
        }
        good = good && ss_npz_read(path, 1 << 20, &z, &err) == 0 &&
               ss_npz_count(z) == NTYPES;
        for (int d = 0; good && d < NTYPES; d++)
            good = strcmp(ss_npz_name(z, d), names[d]) == 0 &&
                   same_tensor(ss_npz_tensor(z, d), &ts[d]);
        if (!ok(good, "npz round trip%s", force ? " with zip64 fields" : ""))
            tap_diag("%s", err.msg);
        ss_npz_free(z);
    }
    {
        ss_err_t err = { 0 };
        const char *dup[2] = { "x", "x" };
        const char *empty[1] = { "" };
        ss_tensor_t bf = ts[0];

        is_int(ss_npz_write("/nonexistent/dir/o.npz", 1, names, ts, &err),
               SS_EIO, "npz into a missing directory");
        is_int(ss_npz_write(path, 2, dup, ts, &err), SS_EINVAL,
               "duplicate names refused");
        is_int(ss_npz_write(path, 1, empty, ts, &err), SS_EINVAL,
               "empty name refused");
        bf.dtype = SS_DTYPE_BF16;
        is_int(ss_npy_write(path, &bf, &err), SS_EINVAL,
               "bf16 has no numpy type");
    }
    for (int d = 0; d < NTYPES; d++)
        ss_tensor_free_data(&ts[d]);
}

/* No temporary files left behind, only what was committed. */
static void
test_no_temporaries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int tmp = 0;

    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp."))
            tmp++;
    if (d)
        closedir(d);
    is_int(tmp, 0, "no temporary files left in the output directory");
}

static void
test_numpy_reads_ours(void)
{
    const char *py = getenv("PYTHON");
    const char *src = getenv("top_srcdir");
    char cmd[2048];
    int rc;

    if (py == NULL || src == NULL) {
        printf("ok %d - # SKIP no PYTHON/top_srcdir\n", ++tap_n_);
        return;
    }
    snprintf(cmd, sizeof(cmd), "'%s' '%s/tests/unit/npy_check.py' '%s'", py,
             src, tmpdir);
    rc = system(cmd);
    is_int(rc, 0, "numpy reads every file written here (npy_check.py)");
}

static void
test_alloc_failures(void)
{
    char path[1400];
    int leaks_or_bad = 0, failed = 0, k;

    snprintf(path, sizeof(path), "%s/deflated.npz", datadir);
    for (k = 1; k < 200; k++) {
        ss_npz_t *z = NULL;
        int rc;

        ss_alloc_fail_after(k);
        rc = ss_npz_read(path, 1 << 20, &z, NULL);
        ss_alloc_fail_after(0);
        if (rc == 0) {
            ss_npz_free(z);
            break;
        }
        failed++;
        leaks_or_bad += rc != SS_ENOMEM || z != NULL;
    }
    ok(k < 200 && leaks_or_bad == 0,
       "failing each of the first %d allocations gives SS_ENOMEM", failed);
}

int
main(void)
{
    const char *src = getenv("top_srcdir");

    snprintf(datadir, sizeof(datadir), "%s/tests/unit/data/npy",
             src ? src : ".");
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_npy.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_numpy_files();
    test_numpy_archives();
    test_headers();
    test_round_trips();
    test_no_temporaries();
    test_numpy_reads_ours();
    test_alloc_failures();
    {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            tap_diag("could not remove %s", tmpdir);
    }
    return tap_done();
}
