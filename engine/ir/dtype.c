/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Element types and plain tensors: sizes, names, element counts, and the
 * owned-tensor helpers the importer, the plan and constant folding share.
 *
 * THREADS: [any]; nothing here has state.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "engine/ir/dtype_size.h"
#include "engine/ir/ir.h"

size_t
ss_dtype_size(ss_dtype_t t)
{
    return ss__dtype_size_of(t);
}

static const struct {
    ss_dtype_t t;
    const char *kserve;
    const char *onnx;
} names[] = {
    { SS_DTYPE_F32, "FP32", "FLOAT" },
    { SS_DTYPE_U8, "UINT8", "UINT8" },
    { SS_DTYPE_I8, "INT8", "INT8" },
    { SS_DTYPE_U16, "UINT16", "UINT16" },
    { SS_DTYPE_I16, "INT16", "INT16" },
    { SS_DTYPE_I32, "INT32", "INT32" },
    { SS_DTYPE_I64, "INT64", "INT64" },
    { SS_DTYPE_STRING, "BYTES", "STRING" },
    { SS_DTYPE_BOOL, "BOOL", "BOOL" },
    { SS_DTYPE_F16, "FP16", "FLOAT16" },
    { SS_DTYPE_F64, "FP64", "DOUBLE" },
    { SS_DTYPE_U32, "UINT32", "UINT32" },
    { SS_DTYPE_U64, "UINT64", "UINT64" },
    { SS_DTYPE_BF16, "BF16", "BFLOAT16" },
};

const char *
ss_dtype_kserve_name(ss_dtype_t t)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == t)
            return names[i].kserve;
    return NULL;
}

ss_dtype_t
ss_dtype_from_kserve(const char *name)
{
    if (name == NULL)
        return SS_DTYPE_UNDEFINED;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i].kserve, name) == 0)
            return names[i].t;
    return SS_DTYPE_UNDEFINED;
}

const char *
ss__dtype_onnx_name(ss_dtype_t t)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].t == t)
            return names[i].onnx;
    return "?";
}

int64_t
ss_tensor_numel(const ss_tensor_t *t)
{
    int64_t n = 1;

    if (t == NULL || t->ndim < 0 || t->ndim > SS_MAX_DIMS)
        return -1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->dims[i] < 0 || __builtin_mul_overflow(n, t->dims[i], &n))
            return -1;
    }
    return n;
}

int
ss__tensor_bytes(const ss_tensor_t *t, size_t *out)
{
    int64_t n = ss_tensor_numel(t);
    size_t es = t ? ss_dtype_size(t->dtype) : 0;

    *out = 0;
    if (n < 0 || es == 0)
        return -1;
    if ((uint64_t)n > SIZE_MAX || ss_mul_overflow((size_t)n, es, out) < 0)
        return -1;
    return 0;
}

int
ss__tensor_new(ss_dtype_t dtype, int ndim, const int64_t *dims,
               ss_tensor_t **out, ss_err_t *err)
{
    ss_tensor_t *t = NULL;
    size_t bytes;
    int rc = 0;

    *out = NULL;
    if (ndim < 0 || ndim > SS_MAX_DIMS) {
        rc = ss_err_set(err, SS_EINVAL, "tensor rank %d out of range 0..%d",
                        ndim, SS_MAX_DIMS);
        goto done;
    }
    if ((t = ss_calloc(1, sizeof(*t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a tensor");
        goto done;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0)
        memcpy(t->dims, dims, (size_t)ndim * sizeof(dims[0]));
    if (ss__tensor_bytes(t, &bytes) < 0) {
        rc = ss_err_set(err, SS_EINVAL, "tensor %s has a negative dim, an "
                        "unsized type or too many elements",
                        ss__dtype_onnx_name(dtype));
        goto done;
    }
    if (bytes > SS_TENSOR_MAX_BYTES) {
        rc = ss_err_set(err, SS_ETOOBIG, "tensor of %zu bytes is over the "
                        "%zu-byte limit", bytes, SS_TENSOR_MAX_BYTES);
        goto done;
    }
    /* ss_aligned_alloc(0) gives one byte: empty tensors keep data set. */
    if ((t->data = ss_aligned_alloc(bytes)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a tensor of %zu "
                        "bytes", bytes);
        goto done;
    }
    memset(t->data, 0, bytes);
    *out = t;
    t = NULL;
done:
    ss__tensor_free(t);
    return rc;
}

int
ss__tensor_new_mapped(ss_dtype_t dtype, int ndim, const int64_t *dims,
                      ss_filemap_t *m, const void *data, ss_tensor_t **out,
                      ss_err_t *err)
{
    ss_tensor_t *t;

    *out = NULL;
    if (ndim < 0 || ndim > SS_MAX_DIMS)
        return ss_err_set(err, SS_EINVAL, "tensor rank %d out of range "
                          "0..%d", ndim, SS_MAX_DIMS);
    if ((t = ss_calloc(1, sizeof(*t))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a tensor");
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0)
        memcpy(t->dims, dims, (size_t)ndim * sizeof(dims[0]));
    ss_filemap_ref(m);
    /* read-only: the const is cast away only because tensors share one
     * struct with writable ones; a write faults (filemap.h) */
    t->data = (void *)data;
    *out = t;
    return 0;
}

int
ss__tensor_writable(ss_tensor_t *t, ss_err_t *err)
{
    size_t bytes;
    void *d;

    if (!ss_filemap_contains(t->data))
        return 0;
    if (ss__tensor_bytes(t, &bytes) < 0)
        return ss_err_set(err, SS_EINVAL, "tensor of unsized type");
    if ((d = ss_aligned_alloc(bytes)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a tensor of %zu "
                          "bytes", bytes);
    memcpy(d, t->data, bytes);
    ss_filemap_release(t->data, bytes);
    (void)ss_filemap_put_at(t->data);
    t->data = d;
    return 0;
}

void
ss__tensor_free(ss_tensor_t *t)
{
    if (t == NULL)
        return;
    /* data in a file mapping holds a reference on it, not an allocation */
    if (!ss_filemap_put_at(t->data))
        ss_free(t->data);
    ss_free(t);
}

char *
ss__tensor_str(const ss_tensor_t *t, char *buf, size_t len)
{
    size_t off = 0;
    int n;

    if (len == 0)
        return buf;
    buf[0] = '\0';
    n = snprintf(buf, len, "%s[", ss__dtype_onnx_name(t->dtype));
    for (int i = 0; n >= 0 && (size_t)n < len - off && i < t->ndim; i++) {
        off += (size_t)n;
        n = snprintf(buf + off, len - off, "%s%lld", i ? "," : "",
                     (long long)t->dims[i]);
    }
    if (n >= 0 && (size_t)n < len - off) {
        off += (size_t)n;
        snprintf(buf + off, len - off, "]");
    }
    return buf;
}
