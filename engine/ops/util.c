/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the reference kernels: error messages that name the
 * node, shape checks that hold against hostile dims, small integer inputs,
 * and the broadcasting iterator.
 *
 * The iterator walks the output in row-major order.  Axes are first
 * coalesced: axis d and d+1 merge when every input's stride satisfies
 * stride[d] == stride[d+1] * dims[d+1] (both contiguous or both
 * broadcast), so [N,C,H,W] + [N,C,H,W] becomes one run of N*C*H*W and
 * [N,C] + [C] becomes N runs of C.  Per run the kernel gets a step of 0 or
 * 1 per input, which keeps the inner loops vectorizable.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/ir/dtype_size.h"

static int
vfail(ss_err_t *err, int code, const ss_node_t *n, const char *fmt,
      va_list ap)
{
    char msg[SS_ERR_MSG_MAX];

    if (err == NULL)
        return code;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    return ss_err_set(err, code, "node '%s' (%s): %s",
                      n && n->name ? n->name : "",
                      n && n->op_type ? n->op_type : "?", msg);
}

int
ss__ops_fail(ss_err_t *err, const ss_node_t *n, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vfail(err, SS_EINVAL, n, fmt, ap);
    va_end(ap);
    return rc;
}

int
ss__ops_failc(ss_err_t *err, int code, const ss_node_t *n, const char *fmt,
              ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vfail(err, code, n, fmt, ap);
    va_end(ap);
    return rc;
}

size_t
ss__ops_dtype_size(ss_dtype_t t)
{
    return ss__dtype_size_of(t);
}

const char *
ss__ops_dtype_name(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_F32: return "float32";
    case SS_DTYPE_U8: return "uint8";
    case SS_DTYPE_I8: return "int8";
    case SS_DTYPE_U16: return "uint16";
    case SS_DTYPE_I16: return "int16";
    case SS_DTYPE_I32: return "int32";
    case SS_DTYPE_I64: return "int64";
    case SS_DTYPE_STRING: return "string";
    case SS_DTYPE_BOOL: return "bool";
    case SS_DTYPE_F16: return "float16";
    case SS_DTYPE_F64: return "float64";
    case SS_DTYPE_U32: return "uint32";
    case SS_DTYPE_U64: return "uint64";
    case SS_DTYPE_BF16: return "bfloat16";
    default: return "undefined";
    }
}

bool
ss__ops_is_int(ss_dtype_t t)
{
    return t == SS_DTYPE_I64 || t == SS_DTYPE_I32 || t == SS_DTYPE_I8 ||
           t == SS_DTYPE_U8 || t == SS_DTYPE_I16 || t == SS_DTYPE_U16 ||
           t == SS_DTYPE_U32 || t == SS_DTYPE_U64;
}

bool
ss__ops_is_float(ss_dtype_t t)
{
    return t == SS_DTYPE_F32 || t == SS_DTYPE_F64;
}

int64_t
ss__ops_prod(const int64_t *dims, int from, int to)
{
    int64_t p = 1;

    for (int d = from; d < to; d++)
        p *= dims[d];
    return p;
}

int64_t
ss__ops_numel(const ss_tensor_t *t)
{
    return ss__ops_prod(t->dims, 0, t->ndim);
}

/* The product of dims, or -1 when a dim is negative or the product passes
 * the limit. */
static int64_t
checked_numel(int ndim, const int64_t *dims)
{
    int64_t p = 1;
    bool zero = false;

    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 0 || dims[d] > SS_OPS_MAX_NUMEL)
            return -1;
        if (dims[d] == 0)
            zero = true;
    }
    if (zero)
        return 0;
    for (int d = 0; d < ndim; d++) {
        if (__builtin_mul_overflow(p, dims[d], &p) || p > SS_OPS_MAX_NUMEL)
            return -1;
    }
    return p;
}

int
ss__ops_check_input(const ss_node_t *n, const ss_tensor_t *const *in, int i,
                    ss_err_t *err)
{
    const ss_tensor_t *t;

    if (!ss__ops_has_input(n, in, i))
        return ss__ops_fail(err, n, "input %d is missing", i);
    t = in[i];
    if (ss__ops_dtype_size(t->dtype) == 0)
        return ss__ops_failc(err, SS_EUNSUPP, n,
                             "input %d has unsupported type %s", i,
                             ss__ops_dtype_name(t->dtype));
    if (t->ndim < 0 || t->ndim > SS_MAX_DIMS)
        return ss__ops_fail(err, n, "input %d has rank %d (at most %d)", i,
                            t->ndim, SS_MAX_DIMS);
    if (checked_numel(t->ndim, t->dims) < 0)
        return ss__ops_fail(err, n,
                            "input %d has a negative, unknown or too large "
                            "shape", i);
    return 0;
}

int
ss__ops_check_inputs(const ss_node_t *n, const ss_tensor_t *const *in,
                     int required, ss_err_t *err)
{
    int rc;

    if (n->n_inputs < required)
        return ss__ops_fail(err, n, "needs %d inputs, has %d", required,
                            n->n_inputs);
    for (int i = 0; i < n->n_inputs; i++) {
        if (i >= required && !ss__ops_has_input(n, in, i))
            continue;
        if ((rc = ss__ops_check_input(n, in, i, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss__ops_set_out(const ss_node_t *n, ss_tensor_t *out, ss_dtype_t dt,
                int ndim, const int64_t *dims, ss_err_t *err)
{
    if (ndim < 0 || ndim > SS_MAX_DIMS)
        return ss__ops_failc(err, SS_EUNSUPP, n,
                             "output rank %d is over the limit of %d", ndim,
                             SS_MAX_DIMS);
    if (checked_numel(ndim, dims) < 0)
        return ss__ops_fail(err, n, "output shape is negative or too large");
    out->dtype = dt;
    out->ndim = ndim;
    for (int d = 0; d < SS_MAX_DIMS; d++)
        out->dims[d] = d < ndim ? dims[d] : 0;
    return 0;
}

int
ss__ops_axis(const ss_node_t *n, int64_t axis, int r, bool allow_end,
             int *out, ss_err_t *err)
{
    /* [-r, r - 1], or [-r, r] for axes that may name the end (Flatten). */
    if (axis < -r || axis > (allow_end ? r : r - 1))
        return ss__ops_fail(err, n, "axis %lld is out of range for rank %d",
                            (long long)axis, r);
    *out = (int)(axis < 0 ? axis + r : axis);
    return 0;
}

bool
ss__ops_has_input(const ss_node_t *n, const ss_tensor_t *const *in, int i)
{
    return i < n->n_inputs && n->inputs[i] >= 0 && in[i] != NULL;
}

const ss_tensor_t *
ss__ops_opt_input(const ss_node_t *n, const ss_tensor_t *const *in, int i)
{
    return ss__ops_has_input(n, in, i) ? in[i] : NULL;
}

bool
ss__ops_want_output(const ss_node_t *n, const ss_tensor_t *out, int k)
{
    return k < n->n_outputs && n->outputs[k] >= 0 && out[k].data != NULL;
}

int64_t
ss__ops_get_i64(const void *data, ss_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SS_DTYPE_I64: return ((const int64_t *)data)[i];
    case SS_DTYPE_I32: return ((const int32_t *)data)[i];
    case SS_DTYPE_I16: return ((const int16_t *)data)[i];
    case SS_DTYPE_I8: return ((const int8_t *)data)[i];
    case SS_DTYPE_U8: case SS_DTYPE_BOOL: return ((const uint8_t *)data)[i];
    case SS_DTYPE_U16: return ((const uint16_t *)data)[i];
    case SS_DTYPE_U32: return ((const uint32_t *)data)[i];
    case SS_DTYPE_U64: return (int64_t)((const uint64_t *)data)[i];
    default: {
        double v = ss__ops_get_f64(data, dt, i);

        /* Saturate: a float to int conversion out of range is UB. */
        if (!(v == v))
            return 0;
        if (v >= 9.2233720368547758e18)
            return INT64_MAX;
        if (v <= -9.2233720368547758e18)
            return INT64_MIN;
        return (int64_t)v;
    }
    }
}

double
ss__ops_get_f64(const void *data, ss_dtype_t dt, int64_t i)
{
    switch (dt) {
    case SS_DTYPE_F32: return ((const float *)data)[i];
    case SS_DTYPE_F64: return ((const double *)data)[i];
    case SS_DTYPE_I64: case SS_DTYPE_I32: case SS_DTYPE_I16:
    case SS_DTYPE_I8: case SS_DTYPE_U8: case SS_DTYPE_BOOL:
    case SS_DTYPE_U16: case SS_DTYPE_U32: case SS_DTYPE_U64:
        return (double)ss__ops_get_i64(data, dt, i);
    default:
        return 0.0;
    }
}

int
ss__ops_read_ints(const ss_node_t *n, const ss_tensor_t *t, const char *what,
                  int64_t *vals, int max, ss_err_t *err)
{
    int64_t cnt;

    if (t == NULL || t->data == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n,
                             "%s must be a constant known when the plan is "
                             "compiled", what);
    if (t->dtype != SS_DTYPE_I64 && t->dtype != SS_DTYPE_I32)
        return ss__ops_fail(err, n, "%s must be int64 or int32, not %s",
                            what, ss__ops_dtype_name(t->dtype));
    if (t->ndim > 1)
        return ss__ops_fail(err, n, "%s must be a 1-D tensor, not rank %d",
                            what, t->ndim);
    cnt = ss__ops_numel(t);
    if (cnt > max)
        return ss__ops_fail(err, n, "%s has %lld values (at most %d)", what,
                            (long long)cnt, max);
    for (int64_t i = 0; i < cnt; i++)
        vals[i] = ss__ops_get_i64(t->data, t->dtype, i);
    return (int)cnt;
}

int
ss__ops_read_scalar(const ss_node_t *n, const ss_tensor_t *t,
                    const char *what, double *v, ss_err_t *err)
{
    if (t == NULL || t->data == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n,
                             "%s must be a constant known when the plan is "
                             "compiled", what);
    if (ss__ops_numel(t) != 1)
        return ss__ops_fail(err, n, "%s must hold one value, not %lld", what,
                            (long long)ss__ops_numel(t));
    if (!ss__ops_is_int(t->dtype) && !ss__ops_is_float(t->dtype) &&
        t->dtype != SS_DTYPE_BOOL)
        return ss__ops_fail(err, n, "%s has unsupported type %s", what,
                            ss__ops_dtype_name(t->dtype));
    *v = ss__ops_get_f64(t->data, t->dtype, 0);
    return 0;
}

/* ---- broadcasting ----------------------------------------------------- */

int
ss__bcast_shape(const ss_node_t *n, int n_in, const ss_tensor_t *const *t,
                int *out_ndim, int64_t *out_dims, ss_err_t *err)
{
    int r = 0;

    for (int i = 0; i < n_in; i++)
        if (t[i]->ndim > r)
            r = t[i]->ndim;
    for (int d = 0; d < r; d++) {
        int64_t dim = 1;

        for (int i = 0; i < n_in; i++) {
            int k = d - (r - t[i]->ndim);
            int64_t v;

            if (k < 0)
                continue;
            v = t[i]->dims[k];
            if (v == 1)
                continue;
            if (dim != 1 && dim != v) {
                char a[128], b[128];
                int la = 0, lb = 0;

                for (int j = 0; j < t[0]->ndim && la < 100; j++)
                    la += snprintf(a + la, sizeof(a) - la, "%s%lld",
                                   j ? "," : "", (long long)t[0]->dims[j]);
                for (int j = 0; j < t[i]->ndim && lb < 100; j++)
                    lb += snprintf(b + lb, sizeof(b) - lb, "%s%lld",
                                   j ? "," : "", (long long)t[i]->dims[j]);
                a[la] = b[lb] = '\0';
                return ss__ops_fail(err, n,
                                    "shapes [%s] and [%s] do not broadcast "
                                    "(input %d, axis %d: %lld vs %lld)",
                                    a, b, i, k, (long long)dim, (long long)v);
            }
            dim = v;
        }
        out_dims[d] = dim;
    }
    *out_ndim = r;
    return 0;
}

void
ss__bcast_init(ss_bcast_t *b, int n_in, const ss_tensor_t *const *t,
               const ss_tensor_t *out)
{
    int64_t st[SS_BCAST_MAX_IN][SS_MAX_DIMS];
    int r = out->ndim, nd;

    memset(b, 0, sizeof(*b));
    b->n_in = n_in;
    b->numel = ss__ops_numel(out);
    for (int i = 0; i < n_in; i++) {
        int64_t s = 1;

        for (int d = r - 1; d >= 0; d--) {
            int k = d - (r - t[i]->ndim);
            int64_t v = k >= 0 ? t[i]->dims[k] : 1;

            st[i][d] = v == 1 ? 0 : s;
            s *= v;
        }
    }
    if (r == 0) {
        b->ndim = 1;
        b->dims[0] = 1;
        return;
    }
    /* Coalesce, keeping axis 0 of the merged shape as the outermost. */
    nd = 0;
    b->dims[0] = out->dims[0];
    for (int i = 0; i < n_in; i++)
        b->strides[i][0] = st[i][0];
    for (int d = 1; d < r; d++) {
        bool merge = true;

        for (int i = 0; i < n_in && merge; i++)
            merge = b->strides[i][nd] == st[i][d] * out->dims[d];
        if (out->dims[d] == 1)
            continue;
        if (b->dims[nd] == 1)
            merge = true;
        if (merge) {
            b->dims[nd] *= out->dims[d];
            for (int i = 0; i < n_in; i++)
                b->strides[i][nd] = st[i][d];
        } else {
            nd++;
            b->dims[nd] = out->dims[d];
            for (int i = 0; i < n_in; i++)
                b->strides[i][nd] = st[i][d];
        }
    }
    b->ndim = nd + 1;
}

void
ss__bcast_run(const ss_bcast_t *b, void *out, size_t osize,
              const void *const *in, const size_t *esize, ss_bcast_row_fn row,
              void *ctx)
{
    int64_t idx[SS_MAX_DIMS] = { 0 };
    int64_t off[SS_BCAST_MAX_IN] = { 0 };
    int64_t step[SS_BCAST_MAX_IN];
    const void *ptr[SS_BCAST_MAX_IN];
    int last = b->ndim - 1;
    int64_t inner = b->dims[last], rows;
    char *o = out;

    if (b->numel == 0)
        return;
    for (int i = 0; i < b->n_in; i++)
        step[i] = b->strides[i][last] ? 1 : 0;
    rows = b->numel / inner;
    for (int64_t r = 0; r < rows; r++) {
        for (int i = 0; i < b->n_in; i++)
            ptr[i] = (const char *)in[i] + off[i] * (int64_t)esize[i];
        row(ctx, o + r * inner * (int64_t)osize, ptr, step, inner);
        /* Odometer over the outer axes. */
        for (int d = last - 1; d >= 0; d--) {
            idx[d]++;
            for (int i = 0; i < b->n_in; i++)
                off[i] += b->strides[i][d];
            if (idx[d] < b->dims[d])
                break;
            for (int i = 0; i < b->n_in; i++)
                off[i] -= b->strides[i][d] * b->dims[d];
            idx[d] = 0;
        }
    }
}
