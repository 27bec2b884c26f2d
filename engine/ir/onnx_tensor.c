/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ONNX TensorProto → ss_tensor_t.
 *
 * A tensor's bytes come from exactly one place: raw_data (little-endian),
 * a typed field (float_data, int32_data for every type of 32 bits or less,
 * int64_data, double_data, uint64_data), or an external file next to the
 * model.  Everything a hostile file controls is checked before anything is
 * allocated: rank, dims, the element count and byte size (overflow), that
 * the source holds exactly that many elements, the model's total budget,
 * and that an external path stays inside the model's directory (no
 * absolute paths, no "..", no symlink out).
 *
 * THREADS: [any].
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "engine/ir/internal.h"

/* Smallest payload kept in the file mapping rather than copied. */
#define MAP_MIN ((size_t)4096)

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "raw_data is little-endian; a big-endian host needs byte swapping"
#endif

static int
known_dtype(int32_t t)
{
    return t != SS_DTYPE_STRING && ss_dtype_size((ss_dtype_t)t) != 0;
}

/* Parses a non-negative decimal; -1 when it is not one. */
static int64_t
parse_size(const char *s)
{
    char *end;
    long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
        return -1;
    return v;
}

static int
safe_location(const char *loc)
{
    const char *p = loc;

    if (loc == NULL || *loc == '\0' || *loc == '/' || strchr(loc, '\\'))
        return 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);

        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 0;
        p += n;
        if (*p == '/')
            p++;
    }
    return 1;
}

static int
read_external(ss__onnx_ctx_t *cx, const Onnx__TensorProto *tp,
              const char *what, ss_tensor_t *t, size_t bytes, ss_err_t *err)
{
    const char *loc = NULL;
    int64_t offset = 0, length = -1;
    char path[PATH_MAX], real_dir[PATH_MAX], real_file[PATH_MAX];
    struct stat st;
    size_t dl, got = 0;
    int fd = -1, rc = 0;

    if (cx->dir == NULL) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s uses external data, "
                        "which a model loaded from memory cannot",
                        cx->source, what);
        goto done;
    }
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = tp->external_data[i];
        const char *k = e->key ? e->key : "";

        if (strcmp(k, "location") == 0) {
            loc = e->value;
        } else if (strcmp(k, "offset") == 0) {
            offset = parse_size(e->value);
        } else if (strcmp(k, "length") == 0) {
            if ((length = parse_size(e->value)) < 0)
                offset = -1;
        }
    }
    if (offset < 0) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s has a bad external "
                        "offset or length", cx->source, what);
        goto done;
    }
    if (!safe_location(loc)) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: external data location "
                        "'%s' must be a relative path inside the model's "
                        "directory", cx->source, what, loc ? loc : "");
        goto done;
    }
    if (length >= 0 && (uint64_t)length != bytes) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: external length %lld, "
                        "but its shape needs %zu bytes", cx->source, what,
                        (long long)length, bytes);
        goto done;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", cx->dir, loc)
        >= sizeof(path)) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: external path too long",
                        cx->source, what);
        goto done;
    }
    if (realpath(cx->dir, real_dir) == NULL
        || realpath(path, real_file) == NULL) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: cannot find external "
                        "data file '%s': %s", cx->source, what, loc,
                        strerror(errno));
        goto done;
    }
    dl = strlen(real_dir);
    if (strncmp(real_file, real_dir, dl) != 0
        || (real_file[dl] != '/' && strcmp(real_dir, "/") != 0)) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: external data file '%s' "
                        "resolves outside the model's directory", cx->source,
                        what, loc);
        goto done;
    }
    if ((fd = open(real_file, O_RDONLY | O_CLOEXEC)) < 0
        || fstat(fd, &st) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: %s: cannot open '%s': %s",
                        cx->source, what, loc, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)offset > (uint64_t)st.st_size
        || bytes > (uint64_t)st.st_size - (uint64_t)offset) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: '%s' is not a regular "
                        "file holding %zu bytes at offset %lld", cx->source,
                        what, loc, bytes, (long long)offset);
        goto done;
    }
    while (got < bytes) {
        ssize_t n = pread(fd, (char *)t->data + got, bytes - got,
                          (off_t)offset + (off_t)got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = ss_err_set(err, SS_EIO, "%s: %s: reading '%s' failed: %s",
                            cx->source, what, loc,
                            n < 0 ? strerror(errno) : "short file");
            goto done;
        }
        got += (size_t)n;
    }
done:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Copies a stripped initializer's payload from the source.  From a file
 * mapping, the copy goes in 4 MB pieces and the pages of each piece are
 * dropped behind it (MADV_DONTNEED on a clean private mapping only
 * forgets them: they are still the file's, and the page cache keeps
 * them), so the mapping adds at most a piece to the resident set on top
 * of the tensors, even for one tensor of hundreds of MB. */
static void
copy_stripped(const ss__onnx_ctx_t *cx, void *dst, size_t bytes)
{
    const size_t piece = (size_t)4 << 20;
    const uint8_t *src = cx->raw_src + cx->raw->off;
    size_t done, n;

    for (done = 0; done < bytes; done += n) {
        n = bytes - done < piece ? bytes - done : piece;
        memcpy((uint8_t *)dst + done, src + done, n);
        /* Dropping a page that also holds other bytes is harmless: the
         * mapping is never written, so a later read faults the file's
         * same bytes back in. */
        if (cx->raw_mapped)
            ss_filemap_release(src + done, n);
    }
}

/* Writes n bytes at src (in the model's mapping) to fd at off, dropping
 * the source's pages behind like copy_stripped.  0 or -1. */
static int
write_piecewise(int fd, const uint8_t *src, size_t n, size_t off)
{
    const size_t piece = (size_t)4 << 20;
    size_t done = 0;

    while (done < n) {
        size_t k = n - done < piece ? n - done : piece;
        ssize_t w = pwrite(fd, src + done, k, (off_t)(off + done));

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        ss_filemap_release(src + done, (size_t)w);
        done += (size_t)w;
    }
    return 0;
}

/* An unlinked file on a disk-backed file system: in dir, else in
 * $TMPDIR, else in /var/tmp (a daemon may see its repository read-only);
 * -1 if none of them takes one. */
static int
disk_tmpfile(const char *dir)
{
    const char *env = getenv("TMPDIR");
    const char *dirs[3] = { dir, env != NULL && env[0] != '\0' ? env
                                                               : "/var/tmp",
                            "/var/tmp" };
    struct statfs sf;
    int fd;

    for (int i = 0; i < 3; i++) {
        if ((fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0)
            continue;
        if (fstatfs(fd, &sf) == 0 && sf.f_type != TMPFS_MAGIC
            && sf.f_type != RAMFS_MAGIC)
            return fd;
        close(fd);
    }
    return -1;
}

/*
 * The realigned copy.  Protobuf aligns nothing, so in a file written by
 * another tool (torch.onnx.export, onnx.save) about three payloads in four
 * sit at an address that is not a multiple of their element size and
 * cannot be read in place (see maps()).  Copied into anonymous memory,
 * they would stay in the resident set beside the packed copy a compile
 * makes of them: 2x the weights at the end of a compile.  Copied instead,
 * aligned, into an unlinked file in the model's own directory (O_TMPFILE:
 * nothing to clean up, it disappears with its last mapping) and mapped
 * read-only, they are file pages like the aligned ones: dropped after
 * packing, faulted back in by any later reader.  The price is one write
 * of those bytes per load (page cache speed; the kernel writes them back
 * in the background) and their size on disk while the model is loaded.
 * A directory on tmpfs or ramfs would keep them in memory anyway (as
 * shared memory that cannot be dropped), so the file goes to $TMPDIR or
 * /var/tmp when the model's directory is one of those or refuses a
 * temporary file (read-only, unsupported); where none works, or the
 * write fails (disk full), they are copied into anonymous memory as
 * before.
 */
void
ss__onnx_realign(ss__onnx_ctx_t *cx, const Onnx__GraphProto *gp,
                 ss__onnx_raw_t *refs)
{
    size_t total = 0, i;
    int fd = -1, ok = 0;

    if (cx->map == NULL || cx->dir == NULL || refs == NULL
        || getenv("SS_ENGINE_NO_REALIGN") != NULL)
        return;
    for (i = 0; i < gp->n_initializer; i++) {
        ss__onnx_raw_t *r = &refs[i];
        const Onnx__TensorProto *tp = gp->initializer[i];
        size_t es = tp->has_data_type
                    ? ss_dtype_size((ss_dtype_t)tp->data_type) : 0;

        if (!r->set || r->len < MAP_MIN || es == 0
            || ((uintptr_t)(cx->raw_src + r->off) % es) == 0)
            continue;
        total = (total + 63) & ~(size_t)63;
        r->side_off = total;
        r->realigned = 1;
        total += r->len;
    }
    if (total == 0)
        return;
    if ((fd = disk_tmpfile(cx->dir)) < 0)
        goto done;
    for (i = 0; i < gp->n_initializer; i++)
        if (refs[i].realigned
            && write_piecewise(fd, cx->raw_src + refs[i].off, refs[i].len,
                               refs[i].side_off) < 0)
            goto done;
    /* written once, never again: safe to map (common/filemap.h) */
    ok = ss_filemap_open(fd, total, &cx->side) == 0;
done:
    if (fd >= 0)
        close(fd);
    if (!ok)
        for (i = 0; i < gp->n_initializer; i++)
            refs[i].realigned = 0;
}

/* Whether a stripped initializer's payload becomes a tensor pointing into
 * the model file's mapping instead of a copy (the weights are then the
 * file's pages: clean, dropped after packing and faulted back in by any
 * later reader, see common/filemap.h).  The payload must be aligned to
 * its element size: kernels read constants through typed pointers, and a
 * misaligned float is undefined behaviour (and a compiler that peels a
 * loop to reach vector alignment would never get there).  Protobuf does
 * not align anything, so in a file from another tool about one f32
 * payload in four qualifies by chance; the others go through the
 * realigned copy below.  Payloads under a page are copied: they cost
 * nothing and are read often. */
static int
maps(const ss__onnx_ctx_t *cx, int32_t dt, size_t bytes)
{
    size_t es = ss_dtype_size((ss_dtype_t)dt);

    return cx->map != NULL && bytes >= MAP_MIN && es != 0
           && !cx->raw->realigned
           && ((uintptr_t)(cx->raw_src + cx->raw->off) % es) == 0;
}

/* Copies n typed elements into t's data, narrowing as t's dtype says. */
static void
narrow_i32(ss_tensor_t *t, const int32_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case SS_DTYPE_I32:
            ((int32_t *)t->data)[i] = src[i];
            break;
        case SS_DTYPE_I16:
        case SS_DTYPE_U16:
        case SS_DTYPE_F16:
        case SS_DTYPE_BF16:
            ((uint16_t *)t->data)[i] = (uint16_t)src[i];
            break;
        case SS_DTYPE_BOOL:
            ((uint8_t *)t->data)[i] = src[i] != 0;
            break;
        default: /* I8, U8 */
            ((uint8_t *)t->data)[i] = (uint8_t)src[i];
            break;
        }
    }
}

static void
narrow_u64(ss_tensor_t *t, const uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == SS_DTYPE_U32)
            ((uint32_t *)t->data)[i] = (uint32_t)src[i];
        else
            ((uint64_t *)t->data)[i] = src[i];
    }
}

int
ss__onnx_tensor(ss__onnx_ctx_t *cx, const Onnx__TensorProto *tp,
                const char *what, ss_tensor_t **out, ss_err_t *err)
{
    ss_tensor_t *t = NULL;
    int64_t dims[SS_MAX_DIMS];
    size_t bytes, numel, have = 0;
    int32_t dt = tp->has_data_type ? tp->data_type : 0;
    /* raw_data's length, SIZE_MAX without one; a stripped initializer's
     * lies in the source (onnx_strip.c) */
    size_t raw_len = cx->raw != NULL ? (cx->raw->set ? cx->raw->len
                                                     : SIZE_MAX)
                     : tp->has_raw_data ? tp->raw_data.len : SIZE_MAX;
    int is_ext, rc = 0;

    *out = NULL;
    if (!known_dtype(dt)) {
        rc = ss_err_set(err, dt == SS_DTYPE_STRING ? SS_EUNSUPP : SS_EBADMODEL,
                        "%s: %s has element type %d, which is not supported",
                        cx->source, what, (int)dt);
        goto done;
    }
    if (tp->n_dims > SS_MAX_DIMS) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %s has %zu dims (at most %d)",
                        cx->source, what, tp->n_dims, SS_MAX_DIMS);
        goto done;
    }
    for (size_t i = 0; i < tp->n_dims; i++) {
        if (tp->dims[i] < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: %s has negative dim %lld",
                            cx->source, what, (long long)tp->dims[i]);
            goto done;
        }
        dims[i] = tp->dims[i];
    }
    if (tp->segment != NULL) {
        rc = ss_err_set(err, SS_EUNSUPP, "%s: %s is segmented, which is not "
                        "supported", cx->source, what);
        goto done;
    }
    {
        ss_tensor_t probe = { .dtype = (ss_dtype_t)dt, .ndim = (int)tp->n_dims };

        memcpy(probe.dims, dims, tp->n_dims * sizeof(dims[0]));
        if (ss__tensor_bytes(&probe, &bytes) < 0
            || bytes > SS_TENSOR_MAX_BYTES) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: %s is too large",
                            cx->source, what);
            goto done;
        }
        numel = (size_t)ss_tensor_numel(&probe);
    }
    if (bytes > cx->budget) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: constants exceed the %zu-byte "
                        "model limit at %s", cx->source, SS_MODEL_MAX_BYTES,
                        what);
        goto done;
    }
    is_ext = tp->has_data_location
             && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    /* Check that the source holds exactly numel elements before any
     * allocation sized by dims. */
    if (is_ext) {
        have = numel;
    } else if (raw_len != SIZE_MAX) {
        if (raw_len != bytes) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: %s: raw_data holds %zu "
                            "bytes, its shape needs %zu", cx->source, what,
                            raw_len, bytes);
            goto done;
        }
        have = numel;
    } else {
        switch (dt) {
        case SS_DTYPE_F32: have = tp->n_float_data; break;
        case SS_DTYPE_I64: have = tp->n_int64_data; break;
        case SS_DTYPE_F64: have = tp->n_double_data; break;
        case SS_DTYPE_U32: case SS_DTYPE_U64: have = tp->n_uint64_data; break;
        default: have = tp->n_int32_data; break;
        }
        if (have != numel) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: %s holds %zu elements, "
                            "its shape needs %zu", cx->source, what, have,
                            numel);
            goto done;
        }
    }
    if (!is_ext && cx->raw != NULL && cx->raw->set && bytes > 0
        && (maps(cx, dt, bytes) || (cx->raw->realigned && cx->side))) {
        rc = cx->raw->realigned
             ? ss__tensor_new_mapped((ss_dtype_t)dt, (int)tp->n_dims, dims,
                                     cx->side, (const uint8_t *)
                                     ss_filemap_base(cx->side)
                                     + cx->raw->side_off, &t, err)
             : ss__tensor_new_mapped((ss_dtype_t)dt, (int)tp->n_dims, dims,
                                     cx->map, cx->raw_src + cx->raw->off, &t,
                                     err);
        if (rc < 0)
            goto done;
        cx->budget -= bytes;
        *out = t;
        return 0;
    }
    if ((rc = ss__tensor_new((ss_dtype_t)dt, (int)tp->n_dims, dims, &t,
                             err)) < 0)
        goto done;
    if (bytes == 0) {
        /* nothing to copy */
    } else if (is_ext) {
        if ((rc = read_external(cx, tp, what, t, bytes, err)) < 0)
            goto done;
    } else if (cx->raw != NULL && cx->raw->set) {
        copy_stripped(cx, t->data, bytes);
    } else if (tp->has_raw_data) {
        memcpy(t->data, tp->raw_data.data, bytes);
    } else {
        switch (dt) {
        case SS_DTYPE_F32: memcpy(t->data, tp->float_data, bytes); break;
        case SS_DTYPE_I64: memcpy(t->data, tp->int64_data, bytes); break;
        case SS_DTYPE_F64: memcpy(t->data, tp->double_data, bytes); break;
        case SS_DTYPE_U32: case SS_DTYPE_U64:
            narrow_u64(t, tp->uint64_data, numel);
            break;
        default:
            narrow_i32(t, tp->int32_data, numel);
            break;
        }
    }
    cx->budget -= bytes;
    *out = t;
    t = NULL;
done:
    ss__tensor_free(t);
    return rc;
}
