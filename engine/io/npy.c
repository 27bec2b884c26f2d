/* SPDX-License-Identifier: Apache-2.0 */
/*
 * .npy: numpy's single-array file.
 *
 * DESIGN.  A file is a magic string, a version, a header length, a header
 * that is a Python dict literal ({'descr': '<f4', 'fortran_order': False,
 * 'shape': (2, 3), }) padded with spaces to a multiple of 64 bytes, then
 * the raw elements.  The parser reads from an ss__npy_src_t so the same
 * code serves files, memory buffers and (in npz.c) zip entries that are
 * being inflated.  It reads the fixed preamble, then the header (capped at
 * HEADER_CAP bytes), parses the dict with a small hand-written scanner that
 * accepts exactly the literals numpy writes (strings, True/False, tuples of
 * non-negative integers), and only then, once the element count is known to
 * fit both max_bytes and what the source can still deliver, allocates the
 * data and reads it in one go.  Big-endian data is swapped in place;
 * Fortran-ordered data is transposed into a second buffer.
 *
 * THREADS: [any]; no state.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "engine/io/internal.h"

/* numpy's own reader refuses headers over 10000 bytes by default; leave
 * room for odd writers, but never let a header length drive a big
 * allocation. */
#define HEADER_CAP (1u << 16)

static const struct {
    ss_dtype_t dtype;
    char kind;   /* numpy's kind character */
    uint8_t size;
    const char *descr;
} types[] = {
    { SS_DTYPE_F32, 'f', 4, "<f4" }, { SS_DTYPE_F64, 'f', 8, "<f8" },
    { SS_DTYPE_F16, 'f', 2, "<f2" }, { SS_DTYPE_I64, 'i', 8, "<i8" },
    { SS_DTYPE_I32, 'i', 4, "<i4" }, { SS_DTYPE_I16, 'i', 2, "<i2" },
    { SS_DTYPE_I8, 'i', 1, "|i1" },  { SS_DTYPE_U8, 'u', 1, "|u1" },
    { SS_DTYPE_U16, 'u', 2, "<u2" }, { SS_DTYPE_U32, 'u', 4, "<u4" },
    { SS_DTYPE_U64, 'u', 8, "<u8" }, { SS_DTYPE_BOOL, 'b', 1, "|b1" },
};
#define NTYPES (sizeof(types) / sizeof(types[0]))

static size_t
elem_size(ss_dtype_t t)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (types[i].dtype == t)
            return types[i].size;
    return 0;
}

const char *
ss_npy_descr(ss_dtype_t t)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (types[i].dtype == t)
            return types[i].descr;
    return NULL;
}

void
ss_tensor_free_data(ss_tensor_t *t)
{
    if (t == NULL)
        return;
    ss_free(t->data);
    memset(t, 0, sizeof(*t));
}

/* numel * element size with overflow checks; -1 when malformed. */
static int
tensor_bytes(const ss_tensor_t *t, size_t *out)
{
    size_t n = elem_size(t->dtype);

    if (n == 0 || t->ndim < 0 || t->ndim > SS_MAX_DIMS)
        return -1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->dims[i] < 0 || (uint64_t)t->dims[i] > SIZE_MAX ||
            ss_mul_overflow(n, (size_t)t->dims[i], &n) < 0)
            return -1;
    }
    *out = n;
    return 0;
}

size_t
ss_npy_nbytes(const ss_tensor_t *t)
{
    size_t n;

    return tensor_bytes(t, &n) < 0 ? 0 : n;
}

int
ss_npy_check_tensor(const ss_tensor_t *t, const char *what, ss_err_t *err)
{
    size_t n;

    if (elem_size(t->dtype) == 0)
        return ss_err_set(err, SS_EINVAL,
                          "%s: element type %d has no numpy equivalent", what,
                          (int)t->dtype);
    if (t->ndim < 0 || t->ndim > SS_MAX_DIMS)
        return ss_err_set(err, SS_EINVAL, "%s: %d dimensions (at most %d)",
                          what, t->ndim, SS_MAX_DIMS);
    if (tensor_bytes(t, &n) < 0)
        return ss_err_set(err, SS_EINVAL,
                          "%s: negative dimension or size overflow", what);
    if (n > 0 && t->data == NULL)
        return ss_err_set(err, SS_EINVAL, "%s: no data", what);
    return 0;
}

/* --- header parsing ---------------------------------------------------- */

typedef struct {
    const char *p, *end;
} scan_t;

static void
skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
                             *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int
eat(scan_t *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A quoted string without escapes; returns its bounds. */
static int
scan_string(scan_t *s, const char **b, size_t *n)
{
    char q;
    const char *start;

    skip_ws(s);
    if (s->p >= s->end || (*s->p != '\'' && *s->p != '"'))
        return -1;
    q = *s->p++;
    start = s->p;
    while (s->p < s->end && *s->p != q) {
        if (*s->p == '\\' || *s->p == '\n')
            return -1;
        s->p++;
    }
    if (s->p >= s->end)
        return -1;
    *b = start;
    *n = (size_t)(s->p - start);
    s->p++;
    return 0;
}

static int
scan_word(scan_t *s, const char *w)
{
    size_t n = strlen(w);

    skip_ws(s);
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
        s->p += n;
        return 1;
    }
    return 0;
}

static int
scan_uint(scan_t *s, int64_t *v)
{
    uint64_t x = 0;
    int digits = 0;

    skip_ws(s);
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        uint64_t d = (uint64_t)(*s->p - '0');

        if (x > ((uint64_t)INT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
        s->p++;
        digits++;
    }
    if (digits == 0)
        return -1;
    if (s->p < s->end && *s->p == 'L')   /* Python 2 longs */
        s->p++;
    *v = (int64_t)x;
    return 0;
}

typedef struct {
    ss_dtype_t dtype;
    int swap;
    int fortran;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
} hdr_t;

static int
parse_descr(const char *b, size_t n, hdr_t *h, const char *what,
            ss_err_t *err)
{
    char order = '=';
    size_t size;

    if (n > 0 && (b[0] == '<' || b[0] == '>' || b[0] == '|' || b[0] == '=')) {
        order = b[0];
        b++;
        n--;
    }
    if (n == 2 && b[1] >= '1' && b[1] <= '8') {
        size = (size_t)(b[1] - '0');
        for (size_t i = 0; i < NTYPES; i++) {
            if (types[i].kind == b[0] && types[i].size == size) {
                h->dtype = types[i].dtype;
                h->swap = order == '>' && size > 1;
                return 0;
            }
        }
    }
    if (n == 1 && b[0] == '?') {
        h->dtype = SS_DTYPE_BOOL;
        return 0;
    }
    return ss_err_set(err, SS_EUNSUPP,
                      "%s: unsupported element type '%.*s' (want f2/f4/f8, "
                      "i1-i8, u1-u8 or b1)", what, (int)(n > 32 ? 32 : n), b);
}

static int
parse_shape(scan_t *s, hdr_t *h)
{
    if (!eat(s, '('))
        return -1;
    h->ndim = 0;
    if (eat(s, ')'))
        return 0;
    for (;;) {
        if (h->ndim >= SS_MAX_DIMS)
            return -2;
        if (scan_uint(s, &h->dims[h->ndim]) < 0)
            return -1;
        h->ndim++;
        if (eat(s, ')'))
            return 0;
        if (!eat(s, ','))
            return -1;
        if (eat(s, ')'))
            return 0;
    }
}

static int
parse_header(const char *text, size_t n, hdr_t *h, const char *what,
             ss_err_t *err)
{
    scan_t s = { text, text + n };
    int seen_descr = 0, seen_fortran = 0, seen_shape = 0, rc = 0;
    const char *k, *v;
    size_t kn, vn;

    memset(h, 0, sizeof(*h));
    if (!eat(&s, '{'))
        goto bad;
    while (!eat(&s, '}')) {
        if (scan_string(&s, &k, &kn) < 0 || !eat(&s, ':'))
            goto bad;
        if (kn == 5 && memcmp(k, "descr", 5) == 0 && !seen_descr) {
            seen_descr = 1;
            skip_ws(&s);
            if (s.p < s.end && s.p[0] == '[') {
                rc = ss_err_set(err, SS_EUNSUPP,
                                "%s: structured arrays are not supported",
                                what);
                goto done;
            }
            if (scan_string(&s, &v, &vn) < 0)
                goto bad;
            if ((rc = parse_descr(v, vn, h, what, err)) < 0)
                goto done;
        } else if (kn == 13 && memcmp(k, "fortran_order", 13) == 0 &&
                   !seen_fortran) {
            seen_fortran = 1;
            if (scan_word(&s, "True"))
                h->fortran = 1;
            else if (!scan_word(&s, "False"))
                goto bad;
        } else if (kn == 5 && memcmp(k, "shape", 5) == 0 && !seen_shape) {
            seen_shape = 1;
            rc = parse_shape(&s, h);
            if (rc == -2) {
                rc = ss_err_set(err, SS_EUNSUPP,
                                "%s: more than %d dimensions", what,
                                SS_MAX_DIMS);
                goto done;
            }
            if (rc < 0)
                goto bad;
        } else {
            rc = ss_err_set(err, SS_EINVAL,
                            "%s: unexpected or repeated header key '%.*s'",
                            what, (int)(kn > 32 ? 32 : kn), k);
            goto done;
        }
        if (!eat(&s, ',')) {
            if (!eat(&s, '}'))
                goto bad;
            break;
        }
    }
    skip_ws(&s);
    if (s.p != s.end)
        goto bad;
    if (!seen_descr || !seen_fortran || !seen_shape) {
        rc = ss_err_set(err, SS_EINVAL,
                        "%s: header lacks 'descr', 'fortran_order' or "
                        "'shape'", what);
        goto done;
    }
    rc = 0;
    goto done;
bad:
    rc = ss_err_set(err, SS_EINVAL, "%s: malformed .npy header near byte %d",
                    what, (int)(s.p - text));
done:
    return rc;
}

/* --- data fix-ups ------------------------------------------------------ */

static void
byteswap(uint8_t *p, size_t nbytes, size_t esize)
{
    for (size_t i = 0; i + esize <= nbytes; i += esize)
        for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
            uint8_t t = p[i + a];
            p[i + a] = p[i + b];
            p[i + b] = t;
        }
}

/* Column-major to row-major: walk the destination in row-major order
 * while keeping the source offset of the same multi-index. */
static int
transpose_fortran(ss_tensor_t *t, size_t esize, size_t nbytes)
{
    int64_t idx[SS_MAX_DIMS] = { 0 }, fstride[SS_MAX_DIMS];
    uint8_t *dst, *src = t->data;
    size_t numel = esize ? nbytes / esize : 0;
    int64_t off = 0;

    if (t->ndim < 2 || numel < 2)
        return 0;
    if ((dst = ss_aligned_alloc(nbytes)) == NULL)
        return SS_ENOMEM;
    fstride[0] = 1;
    for (int k = 1; k < t->ndim; k++)
        fstride[k] = fstride[k - 1] * t->dims[k - 1];
    for (size_t i = 0; i < numel; i++) {
        memcpy(dst + i * esize, src + (size_t)off * esize, esize);
        for (int k = t->ndim - 1; k >= 0; k--) {
            off += fstride[k];
            if (++idx[k] < t->dims[k])
                break;
            off -= fstride[k] * t->dims[k];
            idx[k] = 0;
        }
    }
    ss_free(src);
    t->data = dst;
    return 0;
}

/* --- the parser -------------------------------------------------------- */

static int
pull(ss__npy_src_t *src, void *dst, size_t n, const char *what,
     ss_err_t *err)
{
    if (src->left != UINT64_MAX) {
        if (n > src->left)
            return ss_err_set(err, SS_EINVAL, "%s: truncated", what);
        src->left -= n;
    }
    return src->read(src->ctx, dst, n, what, err);
}

int
ss__npy_parse(ss__npy_src_t *src, const char *what, size_t max_bytes,
              ss_tensor_t *out, uint64_t *consumed, ss_err_t *err)
{
    static const uint8_t magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };
    uint8_t pre[12];
    char *text = NULL;
    size_t hlen, nbytes, esize;
    ss_tensor_t t;
    hdr_t h;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&t, 0, sizeof(t));
    if ((rc = pull(src, pre, 10, what, err)) < 0)
        goto done;
    if (memcmp(pre, magic, 6) != 0) {
        rc = ss_err_set(err, SS_EINVAL, "%s: not a .npy file (bad magic)",
                        what);
        goto done;
    }
    if (pre[6] == 1) {
        hlen = ss__le16(pre + 8);
    } else if (pre[6] == 2 || pre[6] == 3) {
        if ((rc = pull(src, pre + 10, 2, what, err)) < 0)
            goto done;
        hlen = ss__le32(pre + 8);
    } else {
        rc = ss_err_set(err, SS_EUNSUPP, "%s: .npy format version %d.%d",
                        what, pre[6], pre[7]);
        goto done;
    }
    if (hlen > HEADER_CAP) {
        rc = ss_err_set(err, SS_EINVAL, "%s: .npy header of %zu bytes",
                        what, hlen);
        goto done;
    }
    if ((text = ss_malloc(hlen + 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory for the header", what);
        goto done;
    }
    if ((rc = pull(src, text, hlen, what, err)) < 0)
        goto done;
    text[hlen] = '\0';
    if ((rc = parse_header(text, hlen, &h, what, err)) < 0)
        goto done;
    t.dtype = h.dtype;
    t.ndim = h.ndim;
    memcpy(t.dims, h.dims, sizeof(t.dims));
    esize = elem_size(t.dtype);
    if (tensor_bytes(&t, &nbytes) < 0 || nbytes > max_bytes) {
        rc = ss_err_set(err, SS_ETOOBIG,
                        "%s: array data over the limit of %zu bytes", what,
                        max_bytes);
        goto done;
    }
    if (src->left != UINT64_MAX && nbytes > src->left) {
        rc = ss_err_set(err, SS_EINVAL,
                        "%s: truncated: the header promises %zu bytes of "
                        "data, %llu remain", what, nbytes,
                        (unsigned long long)src->left);
        goto done;
    }
    if ((t.data = ss_aligned_alloc(nbytes)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory for %zu bytes", what,
                        nbytes);
        goto done;
    }
    if ((rc = pull(src, t.data, nbytes, what, err)) < 0)
        goto done;
    if (h.swap)
        byteswap(t.data, nbytes, esize);
    if (h.fortran && (rc = transpose_fortran(&t, esize, nbytes)) < 0) {
        rc = ss_err_set(err, rc, "%s: no memory to transpose", what);
        goto done;
    }
    if (consumed)
        *consumed = (pre[6] == 1 ? 10 : 12) + (uint64_t)hlen + nbytes;
    *out = t;
    memset(&t, 0, sizeof(t));
    rc = 0;
done:
    ss_free(text);
    ss_tensor_free_data(&t);
    return rc;
}

/* --- sources ----------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t left;
} mem_src_t;

static int
mem_read(void *ctx, void *dst, size_t n, const char *what, ss_err_t *err)
{
    mem_src_t *m = ctx;

    if (n > m->left)
        return ss_err_set(err, SS_EINVAL, "%s: truncated", what);
    if (n)
        memcpy(dst, m->p, n);
    m->p += n;
    m->left -= n;
    return 0;
}

static int
fd_read(void *ctx, void *dst, size_t n, const char *what, ss_err_t *err)
{
    int fd = *(int *)ctx;
    uint8_t *d = dst;

    while (n > 0) {
        ssize_t r = read(fd, d, n > (1u << 30) ? (1u << 30) : n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ss_err_set(err, SS_EIO, "%s: read: %s", what,
                              strerror(errno));
        if (r == 0)
            return ss_err_set(err, SS_EINVAL, "%s: truncated", what);
        d += r;
        n -= (size_t)r;
    }
    return 0;
}

int
ss_npy_read_buffer(const void *buf, size_t len, const char *what,
                   size_t max_bytes, ss_tensor_t *out, ss_err_t *err)
{
    mem_src_t m = { buf, len };
    ss__npy_src_t src = { mem_read, &m, len };

    return ss__npy_parse(&src, what ? what : "buffer", max_bytes, out, NULL,
                         err);
}

int
ss_npy_read_fd(int fd, const char *what, size_t max_bytes, ss_tensor_t *out,
               ss_err_t *err)
{
    ss__npy_src_t src = { fd_read, NULL, UINT64_MAX };
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        src.left = (uint64_t)st.st_size;
    src.ctx = &fd;
    return ss__npy_parse(&src, what ? what : "file", max_bytes, out, NULL,
                         err);
}

int
ss_npy_read(const char *path, size_t max_bytes, ss_tensor_t *out,
            ss_err_t *err)
{
    int fd, rc;

    memset(out, 0, sizeof(*out));
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return ss_err_set(err, SS_EIO, "%s: %s", path, strerror(errno));
    rc = ss_npy_read_fd(fd, path, max_bytes, out, err);
    close(fd);
    return rc;
}

/* --- writing ----------------------------------------------------------- */

size_t
ss__npy_header(const ss_tensor_t *t, uint8_t *buf)
{
    char *h = (char *)buf + 10;
    size_t cap = SS__NPY_HEADER_MAX - 10, n, total;

    n = (size_t)snprintf(h, cap, "{'descr': '%s', 'fortran_order': False, "
                         "'shape': (", ss_npy_descr(t->dtype));
    for (int i = 0; i < t->ndim; i++)
        n += (size_t)snprintf(h + n, cap - n, "%s%lld",
                              i ? ", " : "", (long long)t->dims[i]);
    n += (size_t)snprintf(h + n, cap - n, "%s), }",
                          t->ndim == 1 ? "," : "");
    /* Pad with spaces and a final newline to a multiple of 64, as numpy
     * does, so the data that follows is aligned in a mapped file. */
    total = (10 + n + 1 + 63) / 64 * 64;
    memset(h + n, ' ', total - 10 - n - 1);
    h[total - 10 - 1] = '\n';
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)((total - 10) & 0xff);
    buf[9] = (uint8_t)((total - 10) >> 8);
    return total;
}

int
ss_npy_encode(const ss_tensor_t *t, void **out, size_t *len, ss_err_t *err)
{
    uint8_t hdr[SS__NPY_HEADER_MAX], *buf = NULL;
    size_t hn, nbytes, total;
    int rc;

    *out = NULL;
    *len = 0;
    if ((rc = ss_npy_check_tensor(t, "array", err)) < 0)
        goto done;
    nbytes = ss_npy_nbytes(t);
    hn = ss__npy_header(t, hdr);
    if (__builtin_add_overflow(hn, nbytes, &total) ||
        (buf = ss_malloc(total)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to encode %zu bytes",
                        nbytes);
        goto done;
    }
    memcpy(buf, hdr, hn);
    if (nbytes)
        memcpy(buf + hn, t->data, nbytes);
    *out = buf;
    *len = total;
    buf = NULL;
done:
    ss_free(buf);
    return rc;
}

int
ss_npy_write(const char *path, const ss_tensor_t *t, ss_err_t *err)
{
    uint8_t hdr[SS__NPY_HEADER_MAX];
    ss_atomic_file_t af;
    size_t hn;
    int rc;

    if ((rc = ss_npy_check_tensor(t, path, err)) < 0)
        return rc;
    if ((rc = ss_atomic_open(&af, path, err)) < 0)
        return rc;
    hn = ss__npy_header(t, hdr);
    if ((rc = ss_atomic_write(&af, hdr, hn, err)) < 0 ||
        (rc = ss_atomic_write(&af, t->data, ss_npy_nbytes(t), err)) < 0 ||
        (rc = ss_atomic_commit(&af, err)) < 0)
        ss_atomic_abort(&af);
    return rc;
}
