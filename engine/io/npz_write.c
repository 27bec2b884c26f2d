/* SPDX-License-Identifier: Apache-2.0 */
/*
 * .npz writing: a zip of stored (uncompressed) .npy entries, as np.savez
 * writes them.
 *
 * DESIGN.  Each entry is a local header, the .npy header and the array's
 * bytes, written straight from the caller's tensor; its CRC-32 is computed
 * first (the data is in memory), so no data descriptor is needed.  The
 * central directory follows, then the end records.  zip64 extra fields go
 * where a size or an offset does not fit in 32 bits (or always, with
 * force_zip64, which is what numpy does), and a zip64 end record plus
 * locator when the directory's count, size or offset needs them.  Output
 * goes either to an atomic file or to a growing memory buffer.  Timestamps
 * are fixed (1980-01-01) so the same arrays give the same bytes.
 *
 * THREADS: [any]; no state.
 */

#include <string.h>
#include <zlib.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "engine/io/internal.h"

#define LIM32 0xffffffffu
#define DOS_DATE 0x21   /* 1980-01-01 */

typedef struct {
    ss_atomic_file_t *af;
    uint8_t *buf;
    size_t len, cap;
    uint64_t off;
} wr_t;

static int
put(wr_t *w, const void *p, size_t n, ss_err_t *err)
{
    int rc;

    if (n == 0)
        return 0;
    if (w->af) {
        if ((rc = ss_atomic_write(w->af, p, n, err)) < 0)
            return rc;
    } else {
        if (n > w->cap - w->len) {
            size_t cap = w->cap ? w->cap : 4096;
            uint8_t *nb;

            while (cap - w->len < n)
                if (ss_mul_overflow(cap, 2, &cap) < 0)
                    return ss_err_set(err, SS_ENOMEM, "archive too big");
            if ((nb = ss_realloc(w->buf, cap)) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for %zu bytes "
                                  "of archive", cap);
            w->buf = nb;
            w->cap = cap;
        }
        memcpy(w->buf + w->len, p, n);
        w->len += n;
    }
    w->off += n;
    return 0;
}

static uint8_t *
le16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *
le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static uint8_t *
le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

typedef struct {
    uint64_t local, size;
    uint32_t crc;
    int zip64;
} rec_t;

static int
check_names(int n, const char *const *names, const ss_tensor_t *t,
            ss_err_t *err)
{
    int rc;

    for (int i = 0; i < n; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;

        if (len == 0 || len > 60000)
            return ss_err_set(err, SS_EINVAL, "array %d: bad name", i);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return ss_err_set(err, SS_EINVAL, "array '%s' given twice",
                                  names[i]);
        if ((rc = ss_npy_check_tensor(&t[i], names[i], err)) < 0)
            return rc;
    }
    return 0;
}

static unsigned
name_flags(const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p >= 0x80)
            return 0x800;   /* the name is UTF-8 */
    return 0;
}

static int
put_entry(wr_t *w, const char *name, const ss_tensor_t *t, int force,
          rec_t *r, ss_err_t *err)
{
    uint8_t npyh[SS__NPY_HEADER_MAX], lh[30 + 20], *p = lh;
    size_t hn = ss__npy_header(t, npyh), nbytes = ss_npy_nbytes(t);
    size_t nl = strlen(name) + 4;
    uint32_t crc;
    int rc;

    crc = (uint32_t)crc32_z(0, npyh, hn);
    if (nbytes)
        crc = (uint32_t)crc32_z(crc, t->data, nbytes);
    r->local = w->off;
    r->size = (uint64_t)hn + nbytes;
    r->crc = crc;
    r->zip64 = force || r->size >= LIM32 || r->local >= LIM32;
    p = le32(p, 0x04034b50u);
    p = le16(p, r->zip64 ? 45 : 20);
    p = le16(p, name_flags(name));
    p = le16(p, 0);                 /* stored */
    p = le16(p, 0);
    p = le16(p, DOS_DATE);
    p = le32(p, crc);
    p = le32(p, r->zip64 ? LIM32 : (uint32_t)r->size);
    p = le32(p, r->zip64 ? LIM32 : (uint32_t)r->size);
    p = le16(p, (unsigned)nl);
    p = le16(p, r->zip64 ? 20 : 0);
    if ((rc = put(w, lh, 30, err)) < 0 ||
        (rc = put(w, name, nl - 4, err)) < 0 ||
        (rc = put(w, ".npy", 4, err)) < 0)
        return rc;
    if (r->zip64) {
        p = lh;
        p = le16(p, 1);
        p = le16(p, 16);
        p = le64(p, r->size);
        p = le64(p, r->size);
        if ((rc = put(w, lh, 20, err)) < 0)
            return rc;
    }
    if ((rc = put(w, npyh, hn, err)) < 0 ||
        (rc = put(w, t->data, nbytes, err)) < 0)
        return rc;
    return 0;
}

static int
put_central(wr_t *w, const char *name, const rec_t *r, int force,
            ss_err_t *err)
{
    uint8_t ch[46], x[28], *p = ch, *q = x + 4;
    int big_size = force || r->size >= LIM32;
    int big_off = force || r->local >= LIM32;
    size_t nl = strlen(name) + 4, xl;
    int rc;

    if (big_size) {
        q = le64(q, r->size);
        q = le64(q, r->size);
    }
    if (big_off)
        q = le64(q, r->local);
    xl = (size_t)(q - x);
    le16(x, 1);
    le16(x + 2, (unsigned)(xl - 4));
    if (xl == 4)
        xl = 0;
    p = le32(p, 0x02014b50u);
    p = le16(p, (3u << 8) | 45);    /* made by Unix, zip 4.5 */
    p = le16(p, r->zip64 || xl ? 45 : 20);
    p = le16(p, name_flags(name));
    p = le16(p, 0);
    p = le16(p, 0);
    p = le16(p, DOS_DATE);
    p = le32(p, r->crc);
    p = le32(p, big_size ? LIM32 : (uint32_t)r->size);
    p = le32(p, big_size ? LIM32 : (uint32_t)r->size);
    p = le16(p, (unsigned)nl);
    p = le16(p, (unsigned)xl);
    p = le16(p, 0);                 /* comment */
    p = le16(p, 0);                 /* disk */
    p = le16(p, 0);                 /* internal attributes */
    p = le32(p, 0100644u << 16);    /* a regular file, rw-r--r-- */
    p = le32(p, big_off ? LIM32 : (uint32_t)r->local);
    if ((rc = put(w, ch, 46, err)) < 0 ||
        (rc = put(w, name, nl - 4, err)) < 0 ||
        (rc = put(w, ".npy", 4, err)) < 0 ||
        (rc = put(w, x, xl, err)) < 0)
        return rc;
    return 0;
}

static int
put_end(wr_t *w, uint64_t n, uint64_t cd_off, int force, ss_err_t *err)
{
    uint64_t cd_size = w->off - cd_off, e64 = w->off;
    uint8_t b[56 + 20 + 22], *p = b;
    int zip64 = force || n >= 0xffff || cd_off >= LIM32 ||
                cd_size >= LIM32;

    if (zip64) {
        p = le32(p, 0x06064b50u);
        p = le64(p, 44);
        p = le16(p, (3u << 8) | 45);
        p = le16(p, 45);
        p = le32(p, 0);
        p = le32(p, 0);
        p = le64(p, n);
        p = le64(p, n);
        p = le64(p, cd_size);
        p = le64(p, cd_off);
        p = le32(p, 0x07064b50u);
        p = le32(p, 0);
        p = le64(p, e64);
        p = le32(p, 1);
    }
    p = le32(p, 0x06054b50u);
    p = le16(p, 0);
    p = le16(p, 0);
    p = le16(p, n >= 0xffff ? 0xffff : (unsigned)n);
    p = le16(p, n >= 0xffff ? 0xffff : (unsigned)n);
    p = le32(p, cd_size >= LIM32 ? LIM32 : (uint32_t)cd_size);
    p = le32(p, cd_off >= LIM32 ? LIM32 : (uint32_t)cd_off);
    p = le16(p, 0);
    return put(w, b, (size_t)(p - b), err);
}

static int
encode(wr_t *w, int n, const char *const *names, const ss_tensor_t *t,
       int force, ss_err_t *err)
{
    rec_t *recs = NULL;
    uint64_t cd_off;
    int rc;

    if (n < 0)
        return ss_err_set(err, SS_EINVAL, "negative array count");
    if ((rc = check_names(n, names, t, err)) < 0)
        goto done;
    if ((recs = ss_calloc((size_t)n + 1, sizeof(*recs))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if ((rc = put_entry(w, names[i], &t[i], force, &recs[i], err)) < 0)
            goto done;
    cd_off = w->off;
    for (int i = 0; i < n; i++)
        if ((rc = put_central(w, names[i], &recs[i], force, err)) < 0)
            goto done;
    rc = put_end(w, (uint64_t)n, cd_off, force, err);
done:
    ss_free(recs);
    return rc;
}

int
ss_npz_encode(int n, const char *const *names, const ss_tensor_t *tensors,
              int force_zip64, void **out, size_t *len, ss_err_t *err)
{
    wr_t w;
    int rc;

    memset(&w, 0, sizeof(w));
    *out = NULL;
    *len = 0;
    if ((rc = encode(&w, n, names, tensors, force_zip64, err)) < 0) {
        ss_free(w.buf);
        return rc;
    }
    *out = w.buf;
    *len = w.len;
    return 0;
}

int
ss_npz_write(const char *path, int n, const char *const *names,
             const ss_tensor_t *tensors, ss_err_t *err)
{
    ss_atomic_file_t af;
    wr_t w;
    int rc;

    memset(&w, 0, sizeof(w));
    w.af = &af;
    /* Validate before creating anything on disk. */
    if (n < 0)
        return ss_err_set(err, SS_EINVAL, "%s: negative array count", path);
    if ((rc = check_names(n, names, tensors, err)) < 0)
        return ss_err_wrap(err, rc, "%s", path);
    if ((rc = ss_atomic_open(&af, path, err)) < 0)
        return rc;
    if ((rc = encode(&w, n, names, tensors, 0, err)) < 0 ||
        (rc = ss_atomic_commit(&af, err)) < 0)
        ss_atomic_abort(&af);
    return rc;
}
