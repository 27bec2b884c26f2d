/* SPDX-License-Identifier: Apache-2.0 */
/*
 * safetensors read and write (safetensors.h says what is checked).
 *
 * DESIGN: a file is read whole into memory (adapters are megabytes, not
 * gigabytes, and one buffer keeps every bound check a comparison of two
 * numbers), the header is parsed with jansson, every entry is checked into
 * a table, the table is sorted by offset and checked to tile the data
 * part, and only then is each tensor copied out into its own aligned
 * buffer.  No mmap: a file truncated under us must not be a SIGBUS.
 *
 * THREADS: [any]; nothing here has global state.
 */

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "engine/io/internal.h"
#include "engine/io/safetensors.h"

struct ss_safetensors {
    int n;
    char **names;
    ss_tensor_t *tensors;
    int n_meta;
    char **meta;            /* key, value, key, value, ... */
};

/* The format's dtypes we hold, with their sizes (engine/io does not link
 * the IR's dtype table). */
static const struct {
    const char *name;
    ss_dtype_t dtype;
    size_t size;
} dtypes[] = {
    { "F64", SS_DTYPE_F64, 8 },   { "F32", SS_DTYPE_F32, 4 },
    { "F16", SS_DTYPE_F16, 2 },   { "BF16", SS_DTYPE_BF16, 2 },
    { "I64", SS_DTYPE_I64, 8 },   { "I32", SS_DTYPE_I32, 4 },
    { "I16", SS_DTYPE_I16, 2 },   { "I8", SS_DTYPE_I8, 1 },
    { "U64", SS_DTYPE_U64, 8 },   { "U32", SS_DTYPE_U32, 4 },
    { "U16", SS_DTYPE_U16, 2 },   { "U8", SS_DTYPE_U8, 1 },
    { "BOOL", SS_DTYPE_BOOL, 1 },
};

static size_t
dtype_size(ss_dtype_t t)
{
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (dtypes[i].dtype == t)
            return dtypes[i].size;
    return 0;
}

const char *
ss_safetensors_dtype_name(ss_dtype_t t)
{
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (dtypes[i].dtype == t)
            return dtypes[i].name;
    return NULL;
}

static ss_dtype_t
dtype_of(const char *name)
{
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return dtypes[i].dtype;
    return SS_DTYPE_UNDEFINED;
}

/* numel * element size of a known dtype, or -1 on overflow. */
static int
nbytes(const ss_tensor_t *t, size_t *out)
{
    size_t n = dtype_size(t->dtype);

    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] < 0 || ss_mul_overflow(n, (size_t)t->dims[d], &n))
            return -1;
    *out = n;
    return 0;
}

void
ss_safetensors_free(ss_safetensors_t *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < st->n; i++) {
        ss_free(st->names[i]);
        ss_free(st->tensors[i].data);
    }
    for (int i = 0; i < 2 * st->n_meta; i++)
        ss_free(st->meta[i]);
    ss_free(st->names);
    ss_free(st->tensors);
    ss_free(st->meta);
    ss_free(st);
}

int
ss_safetensors_count(const ss_safetensors_t *st)
{
    return st->n;
}

const char *
ss_safetensors_name(const ss_safetensors_t *st, int i)
{
    return i >= 0 && i < st->n ? st->names[i] : NULL;
}

const ss_tensor_t *
ss_safetensors_tensor(const ss_safetensors_t *st, int i)
{
    return i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

int
ss_safetensors_find(const ss_safetensors_t *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->names[i], name) == 0)
            return i;
    return -1;
}

const char *
ss_safetensors_meta(const ss_safetensors_t *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0)
            return st->meta[2 * i + 1];
    return NULL;
}

/* --- reading ----------------------------------------------------------- */

/* One header entry while checking: where its bytes are. */
typedef struct entry {
    const char *name;       /* borrowed from the JSON */
    ss_tensor_t t;          /* no data yet */
    uint64_t begin, end;
} entry_t;

static int
by_offset(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;

    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    /* Equal begins: only empty tensors may share one; put them first. */
    return (x->end > y->end) - (x->end < y->end);
}

/* A non-negative JSON integer, or -1. */
static int
uint_of(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int
parse_entry(const char *what, const char *name, json_t *obj,
            uint64_t data_len, entry_t *e, ss_err_t *err)
{
    json_t *dt = json_object_get(obj, "dtype");
    json_t *shape = json_object_get(obj, "shape");
    json_t *offs = json_object_get(obj, "data_offsets");
    size_t want;

    memset(e, 0, sizeof(*e));
    e->name = name;
    if (!json_is_object(obj) || json_object_size(obj) != 3 || dt == NULL
        || shape == NULL || offs == NULL)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': expected an "
                          "object of dtype, shape and data_offsets", what,
                          name);
    if (!json_is_string(dt)
        || (e->t.dtype = dtype_of(json_string_value(dt)))
               == SS_DTYPE_UNDEFINED)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': unknown dtype",
                          what, name);
    if (!json_is_array(shape) || json_array_size(shape) > SS_MAX_DIMS)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': shape must be "
                          "an array of at most %d dims", what, name,
                          SS_MAX_DIMS);
    e->t.ndim = (int)json_array_size(shape);
    for (int d = 0; d < e->t.ndim; d++) {
        uint64_t v;

        if (uint_of(json_array_get(shape, (size_t)d), &v) < 0)
            return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': dim %d is "
                              "not a non-negative integer", what, name, d);
        e->t.dims[d] = (int64_t)v;
    }
    if (!json_is_array(offs) || json_array_size(offs) != 2
        || uint_of(json_array_get(offs, 0), &e->begin) < 0
        || uint_of(json_array_get(offs, 1), &e->end) < 0
        || e->begin > e->end)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': data_offsets "
                          "must be [begin, end] with 0 <= begin <= end",
                          what, name);
    if (e->end > data_len)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': data_offsets "
                          "end %llu is past the data (%llu bytes)", what,
                          name, (unsigned long long)e->end,
                          (unsigned long long)data_len);
    if (nbytes(&e->t, &want) < 0 || want != e->end - e->begin)
        return ss_err_set(err, SS_EINVAL, "%s: tensor '%s': %llu bytes "
                          "for a shape and dtype that need %s", what, name,
                          (unsigned long long)(e->end - e->begin),
                          nbytes(&e->t, &want) < 0 ? "more than fit in "
                          "memory" : "another size");
    return 0;
}

static int
parse_meta(ss_safetensors_t *st, const char *what, json_t *obj,
           ss_err_t *err)
{
    const char *k;
    json_t *v;
    int i = 0;

    if (!json_is_object(obj))
        return ss_err_set(err, SS_EINVAL, "%s: __metadata__ must be an "
                          "object", what);
    if ((st->meta = ss_calloc(2 * json_object_size(obj) + 1,
                              sizeof(char *))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "%s: no memory", what);
    json_object_foreach(obj, k, v) {
        if (!json_is_string(v))
            return ss_err_set(err, SS_EINVAL, "%s: __metadata__['%s'] is "
                              "not a string", what, k);
        st->n_meta++;
        if ((st->meta[2 * i] = ss_strdup(k)) == NULL
            || (st->meta[2 * i + 1] = ss_strdup(json_string_value(v)))
                   == NULL)
            return ss_err_set(err, SS_ENOMEM, "%s: no memory", what);
        i++;
    }
    return 0;
}

int
ss_safetensors_read_buffer(const void *buf, size_t len, const char *what,
                           size_t max_bytes, ss_safetensors_t **out,
                           ss_err_t *err)
{
    const uint8_t *b = buf;
    ss_safetensors_t *st = NULL;
    entry_t *es = NULL;
    json_t *root = NULL, *v;
    json_error_t jerr;
    uint64_t hlen, data_len, at = 0;
    const uint8_t *data;
    const char *k;
    int rc = 0, n = 0;

    *out = NULL;
    if (len > max_bytes) {
        rc = ss_err_set(err, SS_ETOOBIG, "%s: %zu bytes, over the limit of "
                        "%zu", what, len, max_bytes);
        goto done;
    }
    if (len < 8) {
        rc = ss_err_set(err, SS_EINVAL, "%s: %zu bytes: too short for a "
                        "safetensors file", what, len);
        goto done;
    }
    hlen = ss__le64(b);
    if (hlen < 2 || hlen > SS_SAFETENSORS_MAX_HEADER || hlen > len - 8) {
        rc = ss_err_set(err, SS_EINVAL, "%s: header length %llu is out of "
                        "range (2 to %zu, and within the file)", what,
                        (unsigned long long)hlen,
                        len - 8 < SS_SAFETENSORS_MAX_HEADER
                        ? len - 8 : SS_SAFETENSORS_MAX_HEADER);
        goto done;
    }
    data = b + 8 + hlen;
    data_len = len - 8 - hlen;
    if (b[8] != '{') {
        rc = ss_err_set(err, SS_EINVAL, "%s: the header is not a JSON "
                        "object", what);
        goto done;
    }
    root = json_loadb((const char *)b + 8, (size_t)hlen,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        rc = ss_err_set(err, SS_EINVAL, "%s: header: %s", what,
                        root == NULL ? jerr.text : "not an object");
        goto done;
    }
    if ((st = ss_calloc(1, sizeof(*st))) == NULL
        || (es = ss_calloc(json_object_size(root) + 1,
                           sizeof(*es))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", what);
        goto done;
    }
    json_object_foreach(root, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            if ((rc = parse_meta(st, what, v, err)) < 0)
                goto done;
            continue;
        }
        if ((rc = parse_entry(what, k, v, data_len, &es[n], err)) < 0)
            goto done;
        n++;
    }
    qsort(es, (size_t)n, sizeof(*es), by_offset);
    for (int i = 0; i < n; i++) {
        if (es[i].begin != at) {
            rc = ss_err_set(err, SS_EINVAL, "%s: tensor '%s' starts at "
                            "byte %llu of the data where %llu was "
                            "expected (%s)", what, es[i].name,
                            (unsigned long long)es[i].begin,
                            (unsigned long long)at,
                            es[i].begin < at ? "tensors overlap"
                                             : "a hole");
            goto done;
        }
        at = es[i].end;
    }
    if (at != data_len) {
        rc = ss_err_set(err, SS_EINVAL, "%s: %llu bytes of data after the "
                        "last tensor", what,
                        (unsigned long long)(data_len - at));
        goto done;
    }
    if ((st->names = ss_calloc((size_t)n + 1, sizeof(char *))) == NULL
        || (st->tensors = ss_calloc((size_t)n + 1,
                                    sizeof(ss_tensor_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "%s: no memory", what);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        size_t sz = (size_t)(es[i].end - es[i].begin);

        st->tensors[i] = es[i].t;
        st->names[i] = ss_strdup(es[i].name);
        st->tensors[i].data = ss_aligned_alloc(sz);
        st->n = i + 1;
        if (st->names[i] == NULL || st->tensors[i].data == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "%s: no memory for tensor "
                            "'%s' (%zu bytes)", what, es[i].name, sz);
            goto done;
        }
        if (sz > 0)
            memcpy(st->tensors[i].data, data + es[i].begin, sz);
    }
    *out = st;
    st = NULL;
done:
    ss_safetensors_free(st);
    ss_free(es);
    json_decref(root);
    return rc;
}

int
ss_safetensors_read_fd(int fd, const char *what, size_t max_bytes,
                       ss_safetensors_t **out, ss_err_t *err)
{
    struct stat sb;
    uint8_t *buf = NULL;
    size_t len, got = 0;
    int rc = 0;

    *out = NULL;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
        return ss_err_set(err, SS_EINVAL, "%s: not a regular file", what);
    if ((uint64_t)sb.st_size > max_bytes)
        return ss_err_set(err, SS_ETOOBIG, "%s: %lld bytes, over the limit "
                          "of %zu", what, (long long)sb.st_size, max_bytes);
    len = (size_t)sb.st_size;
    if ((buf = ss_malloc(len + 1)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "%s: no memory for %zu bytes",
                          what, len);
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = ss_err_set(err, SS_EIO, "%s: %s", what,
                            r < 0 ? strerror(errno) : "shorter than its "
                            "size (changed while read?)");
            goto done;
        }
        got += (size_t)r;
    }
    rc = ss_safetensors_read_buffer(buf, len, what, max_bytes, out, err);
done:
    ss_free(buf);
    return rc;
}

int
ss_safetensors_read(const char *path, size_t max_bytes,
                    ss_safetensors_t **out, ss_err_t *err)
{
    int fd, rc;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        return ss_err_set(err, errno == ENOENT ? SS_ENOTFOUND : SS_EIO,
                          "%s: %s", path, strerror(errno));
    rc = ss_safetensors_read_fd(fd, path, max_bytes, out, err);
    close(fd);
    return rc;
}

/* --- writing ----------------------------------------------------------- */

int
ss_safetensors_encode(int n, const char *const *names,
                      const ss_tensor_t *tensors, int n_meta,
                      const char *const *meta, void **out, size_t *len,
                      ss_err_t *err)
{
    json_t *root = json_object(), *m = NULL;
    char *hdr = NULL;
    uint8_t *buf = NULL;
    size_t hlen, padded, total, at = 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (root == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a header");
        goto done;
    }
    if (n_meta > 0) {
        if ((m = json_object()) == NULL
            || json_object_set_new(root, "__metadata__", m) < 0) {
            json_decref(m);
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a header");
            goto done;
        }
        for (int i = 0; i < n_meta; i++)
            if (json_object_set_new(m, meta[2 * i],
                                    json_string(meta[2 * i + 1])) < 0) {
                rc = ss_err_set(err, SS_EINVAL, "metadata '%s': not a "
                                "UTF-8 key and value", meta[2 * i]);
                goto done;
            }
    }
    for (int i = 0; i < n; i++) {
        const ss_tensor_t *t = &tensors[i];
        const char *dt = ss_safetensors_dtype_name(t->dtype);
        json_t *e, *shape;
        size_t sz;

        if (names[i][0] == '\0' || strcmp(names[i], "__metadata__") == 0
            || json_object_get(root, names[i]) != NULL) {
            rc = ss_err_set(err, SS_EINVAL, "tensor name '%s' is empty, "
                            "reserved or used twice", names[i]);
            goto done;
        }
        if (dt == NULL || t->ndim < 0 || t->ndim > SS_MAX_DIMS
            || nbytes(t, &sz) < 0 || (sz > 0 && t->data == NULL)) {
            rc = ss_err_set(err, SS_EINVAL, "tensor '%s': a dtype, shape "
                            "or data safetensors cannot hold", names[i]);
            goto done;
        }
        if ((shape = json_array()) == NULL
            || (e = json_pack("{s:s, s:o, s:[I,I]}", "dtype", dt, "shape",
                              shape, "data_offsets", (json_int_t)at,
                              (json_int_t)(at + sz))) == NULL
            || json_object_set_new(root, names[i], e) < 0) {
            rc = ss_err_set(err, SS_EINVAL, "tensor '%s': cannot build its "
                            "header entry (name not UTF-8?)", names[i]);
            goto done;
        }
        for (int d = 0; d < t->ndim; d++)
            if (json_array_append_new(shape,
                                      json_integer(t->dims[d])) < 0) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for a header");
                goto done;
            }
        at += sz;
    }
    if ((hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER))
        == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a header");
        goto done;
    }
    hlen = strlen(hdr);
    /* The Python writer pads to 8 bytes so the data is aligned. */
    padded = (hlen + 7) & ~(size_t)7;
    total = 8 + padded + at;
    if ((buf = ss_malloc(total + 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %zu bytes", total);
        goto done;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    at = 8 + padded;
    for (int i = 0; i < n; i++) {
        size_t sz = 0;

        (void)nbytes(&tensors[i], &sz);     /* checked above */
        if (sz > 0)
            memcpy(buf + at, tensors[i].data, sz);
        at += sz;
    }
    *out = buf;
    *len = total;
    buf = NULL;
done:
    ss_free(buf);
    free(hdr);
    json_decref(root);
    return rc;
}

int
ss_safetensors_write(const char *path, int n, const char *const *names,
                     const ss_tensor_t *tensors, int n_meta,
                     const char *const *meta, ss_err_t *err)
{
    ss_atomic_file_t af = { .fd = -1 };
    void *buf = NULL;
    size_t len;
    int rc;

    if ((rc = ss_safetensors_encode(n, names, tensors, n_meta, meta, &buf,
                                    &len, err)) < 0)
        goto done;
    if ((rc = ss_atomic_open(&af, path, err)) < 0
        || (rc = ss_atomic_write(&af, buf, len, err)) < 0
        || (rc = ss_atomic_commit(&af, err)) < 0)
        goto done;
done:
    ss_atomic_abort(&af);
    ss_free(buf);
    return rc;
}
