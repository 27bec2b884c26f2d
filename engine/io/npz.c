/* SPDX-License-Identifier: Apache-2.0 */
/*
 * .npz reading: a zip archive of .npy entries.
 *
 * DESIGN.  The archive is read by random access through a zsrc_t (a memory
 * buffer, or a file descriptor with pread), never mapped, so a file that
 * shrinks under us gives a read error rather than SIGBUS.  We trust only
 * the central directory: find the end-of-central-directory record in the
 * last 64 KiB (its comment length must land exactly on the end of the
 * file), follow the zip64 locator when there is one, read the whole
 * directory (capped) and walk it, taking sizes and offsets from zip64
 * extra fields where the 32-bit fields are saturated (numpy writes zip64
 * fields for every entry).  A first pass collects the .npy entries and
 * refuses duplicates; a second pass reads each local header only to find
 * where its data starts, then hands an entry reader to the .npy parser:
 * stored entries are read straight into the tensor, deflated ones are
 * inflated (raw deflate) straight into it, and the CRC-32 is checked on the
 * way.  The .npy parser is given the remaining byte budget, so the sum of
 * all arrays never exceeds max_bytes, and each entry's declared size, so a
 * header cannot promise more than the entry holds.
 *
 * THREADS: [any]; an ss_npz_t belongs to one thread at a time.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/alloc.h"
#include "engine/io/internal.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define CD_CAP ((uint64_t)64 << 20)   /* 64 MiB: over a million entries */
#define CHUNK (64u << 10)

struct ss_npz {
    int n;
    char **names;
    ss_tensor_t *t;
};

typedef struct {
    const uint8_t *mem;
    int fd;
    uint64_t size;
    const char *what;
} zsrc_t;

static int
zread(const zsrc_t *z, uint64_t off, void *dst, size_t n, ss_err_t *err)
{
    uint8_t *d = dst;

    if (off > z->size || n > z->size - off)
        return ss_err_set(err, SS_EINVAL,
                          "%s: truncated zip (read of %zu bytes at %llu)",
                          z->what, n, (unsigned long long)off);
    if (z->mem) {
        if (n)
            memcpy(dst, z->mem + off, n);
        return 0;
    }
    while (n > 0) {
        ssize_t r = pread(z->fd, d, n > (1u << 30) ? (1u << 30) : n,
                          (off_t)off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ss_err_set(err, SS_EIO, "%s: read: %s", z->what,
                              strerror(errno));
        if (r == 0)
            return ss_err_set(err, SS_EINVAL, "%s: file shrank while read",
                              z->what);
        d += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* --- entry reader ------------------------------------------------------ */

typedef struct {
    const zsrc_t *z;
    uint64_t off;     /* next compressed byte in the archive */
    uint64_t cleft;   /* compressed bytes not yet read */
    int deflated;
    int ended;        /* inflate reported the end of the stream */
    z_stream zs;
    uint8_t *in;
    uint32_t crc;
} entry_t;

static int
inflate_into(entry_t *e, uint8_t *d, size_t n, const char *what,
             ss_err_t *err)
{
    while (n > 0) {
        uInt want = n > (1u << 30) ? (1u << 30) : (uInt)n;
        int r;

        if (e->ended)
            return ss_err_set(err, SS_EINVAL,
                              "%s: deflated data ends early", what);
        if (e->zs.avail_in == 0 && e->cleft > 0) {
            size_t c = e->cleft > CHUNK ? CHUNK : (size_t)e->cleft;

            if ((r = zread(e->z, e->off, e->in, c, err)) < 0)
                return r;
            e->off += c;
            e->cleft -= c;
            e->zs.next_in = e->in;
            e->zs.avail_in = (uInt)c;
        }
        e->zs.next_out = d;
        e->zs.avail_out = want;
        r = inflate(&e->zs, Z_NO_FLUSH);
        if (r == Z_STREAM_END)
            e->ended = 1;
        else if (r == Z_BUF_ERROR && e->zs.avail_in == 0 && e->cleft == 0)
            return ss_err_set(err, SS_EINVAL, "%s: deflated data is "
                              "truncated", what);
        else if (r != Z_OK && r != Z_BUF_ERROR)
            return ss_err_set(err, SS_EINVAL, "%s: corrupt deflated data "
                              "(%s)", what, e->zs.msg ? e->zs.msg : "zlib");
        d += want - e->zs.avail_out;
        n -= want - e->zs.avail_out;
    }
    return 0;
}

static int
entry_read(void *ctx, void *dst, size_t n, const char *what, ss_err_t *err)
{
    entry_t *e = ctx;
    int rc;

    if (e->deflated) {
        rc = inflate_into(e, dst, n, what, err);
    } else {
        if (n > e->cleft)
            return ss_err_set(err, SS_EINVAL, "%s: truncated entry", what);
        rc = zread(e->z, e->off, dst, n, err);
        e->off += n;
        e->cleft -= n;
    }
    if (rc == 0 && n)
        e->crc = (uint32_t)crc32_z(e->crc, dst, n);
    return rc;
}

/* After the array: a deflate stream must end here, with nothing more. */
static int
entry_finish(entry_t *e, const char *what, ss_err_t *err)
{
    uint8_t extra;

    if (!e->deflated || e->ended)
        return 0;
    e->zs.next_out = &extra;
    e->zs.avail_out = 1;
    for (;;) {
        int r;

        if (e->zs.avail_in == 0 && e->cleft > 0) {
            size_t c = e->cleft > CHUNK ? CHUNK : (size_t)e->cleft;

            if ((r = zread(e->z, e->off, e->in, c, err)) < 0)
                return r;
            e->off += c;
            e->cleft -= c;
            e->zs.next_in = e->in;
            e->zs.avail_in = (uInt)c;
        }
        r = inflate(&e->zs, Z_NO_FLUSH);
        if (e->zs.avail_out == 0)
            return ss_err_set(err, SS_EINVAL,
                              "%s: more data than the array", what);
        if (r == Z_STREAM_END)
            return 0;
        if (r != Z_OK || (e->zs.avail_in == 0 && e->cleft == 0))
            return ss_err_set(err, SS_EINVAL,
                              "%s: corrupt or truncated deflated data",
                              what);
    }
}

/* --- central directory ------------------------------------------------- */

typedef struct {
    char *name;       /* without ".npy" */
    uint64_t csize, usize, local;
    uint32_t crc;
    uint16_t method;
} dirent_t;

/* Applies a zip64 extra field (id 1) to the saturated 32-bit fields. */
static int
apply_zip64(const uint8_t *x, size_t xn, dirent_t *d, int need_u, int need_c,
            int need_o)
{
    while (xn >= 4) {
        uint16_t id = ss__le16(x), len = ss__le16(x + 2);
        const uint8_t *p = x + 4;
        size_t have = len;

        if ((size_t)len > xn - 4)
            return -1;
        if (id == 1) {
            if (need_u) {
                if (have < 8)
                    return -1;
                d->usize = ss__le64(p);
                p += 8;
                have -= 8;
            }
            if (need_c) {
                if (have < 8)
                    return -1;
                d->csize = ss__le64(p);
                p += 8;
                have -= 8;
            }
            if (need_o) {
                if (have < 8)
                    return -1;
                d->local = ss__le64(p);
            }
            return 0;
        }
        x += 4 + len;
        xn -= 4 + (size_t)len;
    }
    return need_u || need_c || need_o ? -1 : 0;
}

static int
cmp_dirent(const void *a, const void *b)
{
    return strcmp(((const dirent_t *)a)->name, ((const dirent_t *)b)->name);
}

static void
free_dirents(dirent_t *d, size_t n)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        ss_free(d[i].name);
    ss_free(d);
}

/* Finds the central directory: its offset, size and entry count. */
static int
find_cd(const zsrc_t *z, uint64_t *cd_off, uint64_t *cd_size,
        uint64_t *count, ss_err_t *err)
{
    uint8_t tail[22 + 65535], rec[56];
    size_t tn = z->size < sizeof(tail) ? (size_t)z->size : sizeof(tail);
    uint64_t base = z->size - tn, eocd = 0;
    int rc, found = 0;

    if (z->size < 22)
        return ss_err_set(err, SS_EINVAL, "%s: not a zip file (too short)",
                          z->what);
    if ((rc = zread(z, base, tail, tn, err)) < 0)
        return rc;
    for (size_t i = tn - 22 + 1; i-- > 0;) {
        if (ss__le32(tail + i) == SIG_EOCD &&
            i + 22 + ss__le16(tail + i + 20) == tn) {
            eocd = base + i;
            found = 1;
            break;
        }
    }
    if (!found)
        return ss_err_set(err, SS_EINVAL, "%s: not a zip file (no end of "
                          "central directory)", z->what);
    memcpy(rec, tail + (eocd - base), 22);
    if (ss__le16(rec + 4) != ss__le16(rec + 6) && ss__le16(rec + 4) != 0xffff)
        return ss_err_set(err, SS_EUNSUPP, "%s: multi-disk zip", z->what);
    *count = ss__le16(rec + 10);
    *cd_size = ss__le32(rec + 12);
    *cd_off = ss__le32(rec + 16);
    if (eocd - base >= 20 &&
        ss__le32(tail + (eocd - base) - 20) == SIG_LOC64) {
        const uint8_t *loc = tail + (eocd - base) - 20;
        uint64_t off64 = ss__le64(loc + 8);

        if (off64 > eocd - 20 || eocd - 20 - off64 < 56)
            return ss_err_set(err, SS_EINVAL, "%s: bad zip64 locator",
                              z->what);
        if ((rc = zread(z, off64, rec, 56, err)) < 0)
            return rc;
        if (ss__le32(rec) != SIG_EOCD64)
            return ss_err_set(err, SS_EINVAL, "%s: bad zip64 end record",
                              z->what);
        *count = ss__le64(rec + 32);
        *cd_size = ss__le64(rec + 40);
        *cd_off = ss__le64(rec + 48);
        eocd = off64;
    }
    if (*cd_off > eocd || *cd_size > eocd - *cd_off)
        return ss_err_set(err, SS_EINVAL, "%s: central directory out of "
                          "bounds", z->what);
    if (*cd_size > CD_CAP || *count > *cd_size / 46)
        return ss_err_set(err, SS_EINVAL, "%s: central directory of %llu "
                          "entries in %llu bytes", z->what,
                          (unsigned long long)*count,
                          (unsigned long long)*cd_size);
    return 0;
}

/* Reads the directory and keeps the .npy entries, sorted out of order
 * only to check for duplicates. */
static int
read_cd(const zsrc_t *z, dirent_t **out, size_t *nout, ss_err_t *err)
{
    uint64_t cd_off, cd_size, count, pos = 0;
    uint8_t *cd = NULL;
    dirent_t *d = NULL, *sorted = NULL;
    size_t n = 0;
    int rc;

    *out = NULL;
    *nout = 0;
    if ((rc = find_cd(z, &cd_off, &cd_size, &count, err)) < 0)
        goto done;
    if ((cd = ss_malloc((size_t)cd_size + 1)) == NULL ||
        (d = ss_calloc((size_t)count + 1, sizeof(*d))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory for the directory",
                        z->what);
        goto done;
    }
    if ((rc = zread(z, cd_off, cd, (size_t)cd_size, err)) < 0)
        goto done;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *e = cd + pos;
        size_t nl, xl, cl;
        dirent_t *de = &d[n];

        if (cd_size - pos < 46 || ss__le32(e) != SIG_CENTRAL) {
            rc = ss_err_set(err, SS_EINVAL, "%s: bad central directory "
                            "entry %llu", z->what, (unsigned long long)i);
            goto done;
        }
        nl = ss__le16(e + 28);
        xl = ss__le16(e + 30);
        cl = ss__le16(e + 32);
        if (cd_size - pos - 46 < nl + xl + cl) {
            rc = ss_err_set(err, SS_EINVAL, "%s: central directory entry "
                            "%llu overruns", z->what, (unsigned long long)i);
            goto done;
        }
        pos += 46 + nl + xl + cl;
        if (nl < 5 || memcmp(e + 46 + nl - 4, ".npy", 4) != 0)
            continue;   /* directories and other members */
        if (memchr(e + 46, 0, nl) != NULL) {
            rc = ss_err_set(err, SS_EINVAL, "%s: NUL in an entry name",
                            z->what);
            goto done;
        }
        if ((de->name = ss_strndup((const char *)e + 46, nl - 4)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", z->what);
            goto done;
        }
        n++;
        if (ss__le16(e + 8) & 1) {
            rc = ss_err_set(err, SS_EUNSUPP, "%s: array '%s': encrypted",
                            z->what, de->name);
            goto done;
        }
        de->method = ss__le16(e + 10);
        if (de->method != 0 && de->method != 8) {
            rc = ss_err_set(err, SS_EUNSUPP, "%s: array '%s': compression "
                            "method %u (want stored or deflated)", z->what,
                            de->name, de->method);
            goto done;
        }
        de->crc = ss__le32(e + 16);
        de->csize = ss__le32(e + 20);
        de->usize = ss__le32(e + 24);
        de->local = ss__le32(e + 42);
        if (apply_zip64(e + 46 + nl, xl, de, de->usize == 0xffffffffu,
                        de->csize == 0xffffffffu,
                        de->local == 0xffffffffu) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "%s: array '%s': bad zip64 "
                            "extra field", z->what, de->name);
            goto done;
        }
    }
    if (n > 1) {
        if ((sorted = ss_malloc(n * sizeof(*sorted))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", z->what);
            goto done;
        }
        memcpy(sorted, d, n * sizeof(*sorted));
        qsort(sorted, n, sizeof(*sorted), cmp_dirent);
        for (size_t i = 1; i < n; i++)
            if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
                rc = ss_err_set(err, SS_EINVAL, "%s: array '%s' appears "
                                "twice", z->what, sorted[i].name);
                goto done;
            }
    }
    *out = d;
    *nout = n;
    d = NULL;
    rc = 0;
done:
    ss_free(sorted);   /* shallow: names belong to d */
    free_dirents(d, n);
    ss_free(cd);
    return rc;
}

/* --- reading ----------------------------------------------------------- */

void
ss_npz_free(ss_npz_t *z)
{
    if (z == NULL)
        return;
    for (int i = 0; i < z->n; i++) {
        ss_free(z->names[i]);
        ss_tensor_free_data(&z->t[i]);
    }
    ss_free(z->names);
    ss_free(z->t);
    ss_free(z);
}

static int
load_entry(const zsrc_t *z, const dirent_t *de, size_t *budget,
           ss_tensor_t *out, ss_err_t *err)
{
    char what[300];
    uint8_t lh[30];
    uint64_t data, consumed = 0;
    entry_t e;
    ss__npy_src_t src;
    int rc;

    memset(&e, 0, sizeof(e));
    snprintf(what, sizeof(what), "%s: array '%s'", z->what, de->name);
    if ((rc = zread(z, de->local, lh, 30, err)) < 0)
        goto done;
    if (ss__le32(lh) != SIG_LOCAL) {
        rc = ss_err_set(err, SS_EINVAL, "%s: bad local header", what);
        goto done;
    }
    data = de->local + 30 + ss__le16(lh + 26) + ss__le16(lh + 28);
    if (data > z->size || de->csize > z->size - data) {
        rc = ss_err_set(err, SS_EINVAL, "%s: entry data out of bounds",
                        what);
        goto done;
    }
    if (de->method == 0 && de->csize != de->usize) {
        rc = ss_err_set(err, SS_EINVAL, "%s: stored entry with different "
                        "sizes", what);
        goto done;
    }
    e.z = z;
    e.off = data;
    e.cleft = de->csize;
    e.deflated = de->method == 8;
    if (e.deflated) {
        if ((e.in = ss_malloc(CHUNK)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", what);
            goto done;
        }
        if (inflateInit2(&e.zs, -MAX_WBITS) != Z_OK) {
            e.deflated = 0;   /* nothing to end */
            rc = ss_err_set(err, SS_ENOMEM, "%s: inflateInit failed", what);
            goto done;
        }
    }
    src.read = entry_read;
    src.ctx = &e;
    src.left = de->usize;
    if ((rc = ss__npy_parse(&src, what, *budget, out, &consumed, err)) < 0)
        goto done;
    if (consumed != de->usize) {
        rc = ss_err_set(err, SS_EINVAL, "%s: %llu bytes after the array",
                        what, (unsigned long long)(de->usize - consumed));
        goto done;
    }
    if ((rc = entry_finish(&e, what, err)) < 0)
        goto done;
    if (e.crc != de->crc) {
        rc = ss_err_set(err, SS_EINVAL, "%s: CRC mismatch", what);
        goto done;
    }
    *budget -= ss_npy_nbytes(out);
    rc = 0;
done:
    if (e.deflated)
        inflateEnd(&e.zs);
    ss_free(e.in);
    if (rc < 0)
        ss_tensor_free_data(out);
    return rc;
}

static int
npz_load(const zsrc_t *z, size_t max_bytes, ss_npz_t **out, ss_err_t *err)
{
    dirent_t *d = NULL;
    size_t n = 0, budget = max_bytes;
    ss_npz_t *r = NULL;
    int rc;

    *out = NULL;
    if ((rc = read_cd(z, &d, &n, err)) < 0)
        goto done;
    if ((r = ss_calloc(1, sizeof(*r))) == NULL ||
        (r->names = ss_calloc(n + 1, sizeof(*r->names))) == NULL ||
        (r->t = ss_calloc(n + 1, sizeof(*r->t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", z->what);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = load_entry(z, &d[i], &budget, &r->t[i], err)) < 0)
            goto done;
        r->names[i] = d[i].name;   /* moved */
        d[i].name = NULL;
        r->n++;
    }
    *out = r;
    r = NULL;
done:
    free_dirents(d, n);
    ss_npz_free(r);
    return rc;
}

int
ss_npz_read_buffer(const void *buf, size_t len, const char *what,
                   size_t max_bytes, ss_npz_t **out, ss_err_t *err)
{
    zsrc_t z = { buf, -1, len, what ? what : "buffer" };

    if (buf == NULL)
        z.size = 0;
    return npz_load(&z, max_bytes, out, err);
}

int
ss_npz_read_fd(int fd, const char *what, size_t max_bytes, ss_npz_t **out,
               ss_err_t *err)
{
    zsrc_t z = { NULL, fd, 0, what ? what : "file" };
    struct stat st;

    *out = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return ss_err_set(err, SS_EINVAL, "%s: not a regular file", z.what);
    z.size = (uint64_t)st.st_size;
    return npz_load(&z, max_bytes, out, err);
}

int
ss_npz_read(const char *path, size_t max_bytes, ss_npz_t **out,
            ss_err_t *err)
{
    int fd, rc;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return ss_err_set(err, SS_EIO, "%s: %s", path, strerror(errno));
    rc = ss_npz_read_fd(fd, path, max_bytes, out, err);
    close(fd);
    return rc;
}

int
ss_npz_count(const ss_npz_t *z)
{
    return z ? z->n : 0;
}

const char *
ss_npz_name(const ss_npz_t *z, int i)
{
    return z && i >= 0 && i < z->n ? z->names[i] : NULL;
}

const ss_tensor_t *
ss_npz_tensor(const ss_npz_t *z, int i)
{
    return z && i >= 0 && i < z->n ? &z->t[i] : NULL;
}

int
ss_npz_find(const ss_npz_t *z, const char *name)
{
    for (int i = 0; z && i < z->n; i++)
        if (strcmp(z->names[i], name) == 0)
            return i;
    return -1;
}

int
ss_npz_take(ss_npz_t *z, int i, ss_tensor_t *out)
{
    if (z == NULL || i < 0 || i >= z->n) {
        memset(out, 0, sizeof(*out));
        return SS_EINVAL;
    }
    *out = z->t[i];
    z->t[i].data = NULL;
    return 0;
}
