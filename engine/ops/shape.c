/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ops that make or reinterpret shapes: Shape, Size, Reshape, Flatten, Squeeze,
 * Unsqueeze, Expand, ConstantOfShape, Range, Constant, Identity, Dropout
 * (inference: identity) and Cast.
 *
 * Shape-valued inputs (Reshape's shape, Expand's shape, Squeeze's axes
 * from opset 13, ...) must be constants when the plan is compiled: the
 * plan folds the shape subgraphs torch writes before it calls infer.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

static void
copy_data(ss_tensor_t *out, const ss_tensor_t *in)
{
    size_t bytes = (size_t)ss__ops_numel(in) * ss__ops_dtype_size(in->dtype);

    if (bytes > 0 && out->data != in->data)
        memmove(out->data, in->data, bytes);
}

static int
run_copy(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    copy_data(&out[0], in[0]);
    return 0;
}

/* ---- Identity, Dropout -------------------------------------------------- */

static int
infer_identity(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
infer_dropout(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    /* Inference only: training_mode true is refused unless the ratio is
     * a constant 0, which drops nothing (the identity in both modes). */
    if (ss__ops_has_input(n, in, 2) && in[2]->data != NULL &&
        ss__ops_numel(in[2]) == 1 &&
        ss__ops_get_i64(in[2]->data, in[2]->dtype, 0) != 0 &&
        !(ss__ops_has_input(n, in, 1) && in[1]->data != NULL &&
          ss__ops_numel(in[1]) == 1 &&
          ss__ops_get_f64(in[1]->data, in[1]->dtype, 0) == 0.0))
        return ss__ops_failc(err, SS_EUNSUPP, n, "training_mode=true is not "
                             "supported (inference only)");
    if ((rc = infer_identity(n, opset, in, out, err)) < 0)
        return rc;
    if (n->n_outputs > 1 && n->outputs[1] >= 0)
        rc = ss__ops_set_out(n, &out[1], SS_DTYPE_BOOL, in[0]->ndim,
                             in[0]->dims, err);
    return rc;
}

static int
run_dropout(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    copy_data(&out[0], in[0]);
    if (ss__ops_want_output(n, out, 1))
        memset(out[1].data, 1, (size_t)ss__ops_numel(in[0]));
    return 0;
}

/* ---- Shape ----------------------------------------------------------------- */

static void
shape_range(const ss_node_t *n, int r, int64_t *s, int64_t *e)
{
    int64_t a = ss__attr_int(n, "start", 0), b = ss__attr_int(n, "end", r);

    if (a < 0)
        a += r;
    if (b < 0)
        b += r;
    *s = a < 0 ? 0 : a > r ? r : a;
    *e = b < 0 ? 0 : b > r ? r : b;
    if (*e < *s)
        *e = *s;
}

static int
infer_shape(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t s, e, d;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    shape_range(n, in[0]->ndim, &s, &e);
    d = e - s;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 1, &d, err);
}

static int
run_shape(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t s, e, *o = out[0].data;

    shape_range(n, in[0]->ndim, &s, &e);
    for (int64_t i = s; i < e; i++)
        o[i - s] = in[0]->dims[i];
    return 0;
}

static int
infer_size(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 0, NULL, err);
}

static int
run_size(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    *(int64_t *)out[0].data = ss__ops_numel(in[0]);
    return 0;
}

/* ---- Reshape, Flatten ------------------------------------------------------ */

static int
infer_reshape(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    bool allowzero = ss__attr_int(n, "allowzero", 0) != 0;
    int64_t shape[SS_MAX_DIMS], known = 1, total;
    int rc, cnt, neg = -1;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if ((cnt = ss__ops_read_ints(n, in[1], "shape", shape, SS_MAX_DIMS,
                                 err)) < 0)
        return cnt;
    total = ss__ops_numel(in[0]);
    for (int d = 0; d < cnt; d++) {
        if (shape[d] == 0 && !allowzero) {
            if (d >= in[0]->ndim)
                return ss__ops_fail(err, n, "shape[%d] = 0 copies an axis "
                                    "the input (rank %d) lacks", d,
                                    in[0]->ndim);
            shape[d] = in[0]->dims[d];
        }
        if (shape[d] == -1) {
            if (neg >= 0)
                return ss__ops_fail(err, n, "shape has more than one -1");
            neg = d;
            continue;
        }
        if (shape[d] < 0 || shape[d] > SS_OPS_MAX_NUMEL)
            return ss__ops_fail(err, n, "shape[%d] = %lld is invalid", d,
                                (long long)shape[d]);
        if (__builtin_mul_overflow(known, shape[d], &known) ||
            known > SS_OPS_MAX_NUMEL)
            return ss__ops_fail(err, n, "shape is too large");
    }
    if (neg >= 0) {
        if (known == 0 || total % known != 0)
            return ss__ops_fail(err, n, "cannot infer the -1 in shape: %lld "
                                "elements do not divide by %lld",
                                (long long)total, (long long)known);
        shape[neg] = total / known;
        known = total;
    }
    if (known != total)
        return ss__ops_fail(err, n, "cannot reshape %lld elements into %lld",
                            (long long)total, (long long)known);
    return ss__ops_set_out(n, &out[0], in[0]->dtype, cnt, shape, err);
}

static int
infer_flatten(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[2];
    int a, rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = ss__ops_axis(n, ss__attr_int(n, "axis", 1), in[0]->ndim, true,
                           &a, err)) < 0)
        return rc;
    dims[0] = ss__ops_prod(in[0]->dims, 0, a);
    dims[1] = ss__ops_prod(in[0]->dims, a, in[0]->ndim);
    return ss__ops_set_out(n, &out[0], in[0]->dtype, 2, dims, err);
}

/* ---- Squeeze, Unsqueeze ----------------------------------------------------- */

/* Axes from the input (opset >= 13) or the attribute; -1 when absent. */
static int
read_axes(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          int64_t *axes, ss_err_t *err)
{
    const int64_t *a;
    int cnt;

    if (opset >= 13) {
        if (!ss__ops_has_input(n, in, 1))
            return -1;
        return ss__ops_read_ints(n, in[1], "axes", axes, SS_MAX_DIMS + 1,
                                 err);
    }
    if ((cnt = ss__attr_ints(n, "axes", &a)) < 0)
        return -1;
    if (cnt > SS_MAX_DIMS + 1)
        return ss__ops_fail(err, n, "too many axes (%d)", cnt);
    memcpy(axes, a, (size_t)cnt * sizeof(*a));
    return cnt;
}

static int
infer_squeeze(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t axes[SS_MAX_DIMS + 1], dims[SS_MAX_DIMS];
    bool drop[SS_MAX_DIMS] = { false };
    int rc, cnt, r, k = 0;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    r = in[0]->ndim;
    if ((cnt = read_axes(n, opset, in, axes, err)) < -1)
        return cnt;
    if (cnt <= 0) {
        /* No axes (or an empty list, as ONNX Runtime reads it): every unit
         * axis goes. */
        for (int d = 0; d < r; d++)
            drop[d] = in[0]->dims[d] == 1;
    }
    for (int i = 0; i < cnt; i++) {
        int a;

        if ((rc = ss__ops_axis(n, axes[i], r, false, &a, err)) < 0)
            return rc;
        if (in[0]->dims[a] != 1)
            return ss__ops_fail(err, n, "cannot squeeze axis %d of size "
                                "%lld", a, (long long)in[0]->dims[a]);
        drop[a] = true;
    }
    for (int d = 0; d < r; d++)
        if (!drop[d])
            dims[k++] = in[0]->dims[d];
    return ss__ops_set_out(n, &out[0], in[0]->dtype, k, dims, err);
}

static int
infer_unsqueeze(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    int64_t axes[SS_MAX_DIMS + 1], dims[SS_MAX_DIMS];
    bool ins[SS_MAX_DIMS] = { false };
    int rc, cnt, r, k = 0;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if ((cnt = read_axes(n, opset, in, axes, err)) < -1)
        return cnt;
    if (cnt < 0)
        return ss__ops_fail(err, n, "axes are required");
    r = in[0]->ndim + cnt;
    if (r > SS_MAX_DIMS)
        return ss__ops_failc(err, SS_EUNSUPP, n, "output rank %d is over "
                             "the limit of %d", r, SS_MAX_DIMS);
    for (int i = 0; i < cnt; i++) {
        int a;

        if ((rc = ss__ops_axis(n, axes[i], r, false, &a, err)) < 0)
            return rc;
        if (ins[a])
            return ss__ops_fail(err, n, "axis %d is repeated", a);
        ins[a] = true;
    }
    for (int d = 0; d < r; d++)
        dims[d] = ins[d] ? 1 : in[0]->dims[k++];
    return ss__ops_set_out(n, &out[0], in[0]->dtype, r, dims, err);
}

/* ---- Expand ---------------------------------------------------------------- */

#define COPY_ROW(NAME, T)                                                  \
    static void                                                            \
    NAME(void *ctx, void *out, const void *const *in, const int64_t *st,  \
         int64_t cnt)                                                      \
    {                                                                      \
        const T *a = in[0];                                                \
        T *o = out;                                                        \
        for (int64_t i = 0; i < cnt; i++)                                  \
            o[i] = a[i * st[0]];                                           \
    }

COPY_ROW(copy1, uint8_t)
COPY_ROW(copy2, uint16_t)
COPY_ROW(copy4, uint32_t)
COPY_ROW(copy8, uint64_t)

static int
infer_expand(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    ss_tensor_t shp = { 0 };
    const ss_tensor_t *pair[2];
    int64_t dims[SS_MAX_DIMS];
    int rc, cnt, ndim;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if ((cnt = ss__ops_read_ints(n, in[1], "shape", shp.dims, SS_MAX_DIMS,
                                 err)) < 0)
        return cnt;
    shp.ndim = cnt;
    for (int d = 0; d < cnt; d++)
        if (shp.dims[d] < 0 || shp.dims[d] > SS_OPS_MAX_NUMEL)
            return ss__ops_fail(err, n, "shape[%d] = %lld is invalid", d,
                                (long long)shp.dims[d]);
    pair[0] = in[0];
    pair[1] = &shp;
    if ((rc = ss__bcast_shape(n, 2, pair, &ndim, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, ndim, dims, err);
}

static int
run_expand(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    const void *ptr[1] = { in[0]->data };
    ss_bcast_row_fn row;
    ss_bcast_t it;

    switch (es) {
    case 1: row = copy1; break;
    case 2: row = copy2; break;
    case 4: row = copy4; break;
    case 8: row = copy8; break;
    default: return ss__ops_failc(err, SS_EUNSUPP, n, "unsupported type");
    }
    ss__bcast_init(&it, 1, in, &out[0]);
    ss__bcast_run(&it, out[0].data, es, ptr, &es, row, NULL);
    return 0;
}

/* ---- ConstantOfShape, Constant ---------------------------------------------- */

static int
infer_cofs(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    const ss_attr_t *v = ss__attr_find(n, "value");
    int64_t dims[SS_MAX_DIMS];
    ss_dtype_t dt = SS_DTYPE_F32;
    int rc, cnt;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if ((cnt = ss__ops_read_ints(n, in[0], "shape", dims, SS_MAX_DIMS,
                                 err)) < 0)
        return cnt;
    if (v != NULL) {
        if (v->type != SS_ATTR_TENSOR || v->t == NULL ||
            v->t->ndim < 0 || v->t->ndim > SS_MAX_DIMS ||
            ss__ops_prod(v->t->dims, 0, v->t->ndim) != 1 ||
            v->t->data == NULL)
            return ss__ops_fail(err, n, "value must be a one-element "
                                "tensor");
        dt = v->t->dtype;
        if (ss__ops_dtype_size(dt) == 0)
            return ss__ops_failc(err, SS_EUNSUPP, n, "value type %s is not "
                                 "supported", ss__ops_dtype_name(dt));
    }
    return ss__ops_set_out(n, &out[0], dt, cnt, dims, err);
}

static int
run_cofs(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    const ss_attr_t *v = ss__attr_find(n, "value");
    size_t es = ss__ops_dtype_size(out[0].dtype);
    int64_t cnt = ss__ops_numel(&out[0]);
    char *o = out[0].data;

    if (v == NULL || v->t == NULL) {
        memset(o, 0, (size_t)cnt * es);
        return 0;
    }
    /* One copy per doubling, not one per element: this runs when a plan
     * folds constants, where a hostile 200-byte model may ask for the
     * whole plan budget (one memcpy per element took 19 s under ASan). */
    if (cnt > 0) {
        size_t total = (size_t)cnt * es, done = es;

        memcpy(o, v->t->data, es);
        while (done < total) {
            size_t k = done < total - done ? done : total - done;

            memcpy(o + done, o, k);
            done += k;
        }
    }
    return 0;
}

static int
infer_constant(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    const ss_attr_t *a;
    int64_t one = 1;

    if ((a = ss__attr_find(n, "value")) != NULL && a->type == SS_ATTR_TENSOR &&
        a->t != NULL) {
        if (ss__ops_dtype_size(a->t->dtype) == 0 || a->t->ndim < 0 ||
            a->t->ndim > SS_MAX_DIMS)
            return ss__ops_failc(err, SS_EUNSUPP, n, "value of type %s, "
                                 "rank %d is not supported",
                                 ss__ops_dtype_name(a->t->dtype),
                                 a->t->ndim);
        return ss__ops_set_out(n, &out[0], a->t->dtype, a->t->ndim,
                               a->t->dims, err);
    }
    if ((a = ss__attr_find(n, "value_float")) != NULL)
        return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, 0, NULL, err);
    if ((a = ss__attr_find(n, "value_int")) != NULL)
        return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 0, NULL, err);
    if ((a = ss__attr_find(n, "value_floats")) != NULL) {
        one = a->n;
        return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, 1, &one, err);
    }
    if ((a = ss__attr_find(n, "value_ints")) != NULL) {
        one = a->n;
        return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 1, &one, err);
    }
    return ss__ops_failc(err, SS_EUNSUPP, n, "needs a value, value_float(s) "
                         "or value_int(s) attribute");
}

static int
run_constant(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    const ss_attr_t *a;
    size_t bytes = (size_t)ss__ops_numel(&out[0]) *
                   ss__ops_dtype_size(out[0].dtype);

    if ((a = ss__attr_find(n, "value")) != NULL && a->t != NULL) {
        if (bytes > 0 && a->t->data == NULL)
            return ss__ops_fail(err, n, "value has no data");
        if (bytes > 0)
            memcpy(out[0].data, a->t->data, bytes);
    } else if ((a = ss__attr_find(n, "value_float")) != NULL) {
        *(float *)out[0].data = a->f;
    } else if ((a = ss__attr_find(n, "value_int")) != NULL) {
        *(int64_t *)out[0].data = a->i;
    } else if ((a = ss__attr_find(n, "value_floats")) != NULL) {
        if (bytes > 0)
            memcpy(out[0].data, a->floats, bytes);
    } else if ((a = ss__attr_find(n, "value_ints")) != NULL) {
        if (bytes > 0)
            memcpy(out[0].data, a->ints, bytes);
    }
    return 0;
}

/* ---- Range ------------------------------------------------------------------ */

static int
range_count(const ss_node_t *n, const ss_tensor_t *const *in, int64_t *cnt,
            ss_err_t *err)
{
    double v[3], c;
    static const char *const names[] = { "start", "limit", "delta" };
    int rc;

    for (int i = 0; i < 3; i++) {
        if (in[i]->dtype != in[0]->dtype)
            return ss__ops_fail(err, n, "inputs must share one type");
        if ((rc = ss__ops_read_scalar(n, in[i], names[i], &v[i], err)) < 0)
            return rc;
    }
    if (v[2] == 0 || v[2] != v[2])
        return ss__ops_fail(err, n, "delta must be non-zero");
    c = ceil((v[1] - v[0]) / v[2]);
    if (c != c || c > (double)SS_OPS_MAX_NUMEL)
        return ss__ops_fail(err, n, "Range of %g elements is too large", c);
    *cnt = c > 0 ? (int64_t)c : 0;
    return 0;
}

static int
infer_range(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t dt;
    int64_t cnt;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    if (dt != SS_DTYPE_F32 && dt != SS_DTYPE_F64 && dt != SS_DTYPE_I64 &&
        dt != SS_DTYPE_I32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "type %s is not supported",
                             ss__ops_dtype_name(dt));
    if ((rc = range_count(n, in, &cnt, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], dt, 1, &cnt, err);
}

static int
run_range(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t cnt = out[0].dims[0];

    switch (out[0].dtype) {
    case SS_DTYPE_F32: {
        float s = *(const float *)in[0]->data, d = *(const float *)in[2]->data;

        for (int64_t i = 0; i < cnt; i++)
            ((float *)out[0].data)[i] = s + (float)i * d;
        break;
    }
    case SS_DTYPE_F64: {
        double s = *(const double *)in[0]->data;
        double d = *(const double *)in[2]->data;

        for (int64_t i = 0; i < cnt; i++)
            ((double *)out[0].data)[i] = s + (double)i * d;
        break;
    }
    default: {
        int64_t s = ss__ops_get_i64(in[0]->data, in[0]->dtype, 0);
        int64_t d = ss__ops_get_i64(in[2]->data, in[2]->dtype, 0);

        for (int64_t i = 0; i < cnt; i++) {
            int64_t v = (int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d);

            if (out[0].dtype == SS_DTYPE_I64)
                ((int64_t *)out[0].data)[i] = v;
            else
                ((int32_t *)out[0].data)[i] = (int32_t)v;
        }
        break;
    }
    }
    return 0;
}

/* ---- Cast -------------------------------------------------------------------- */

static bool
cast_ok(ss_dtype_t t)
{
    return t == SS_DTYPE_F32 || t == SS_DTYPE_F64 || t == SS_DTYPE_I64 ||
           t == SS_DTYPE_I32 || t == SS_DTYPE_I16 || t == SS_DTYPE_I8 ||
           t == SS_DTYPE_U8 || t == SS_DTYPE_U16 || t == SS_DTYPE_U32 ||
           t == SS_DTYPE_U64 || t == SS_DTYPE_BOOL || t == SS_DTYPE_F16 ||
           t == SS_DTYPE_BF16;
}

static int
infer_cast(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t to = (ss_dtype_t)ss__attr_int(n, "to", 0);
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (!cast_ok(in[0]->dtype) || !cast_ok(to))
        return ss__ops_failc(err, SS_EUNSUPP, n, "cast from %s to %s "
                             "(type %d) is not supported",
                             ss__ops_dtype_name(in[0]->dtype),
                             ss__ops_dtype_name(to), (int)to);
    return ss__ops_set_out(n, &out[0], to, in[0]->ndim, in[0]->dims, err);
}

/* Float to integer conversions saturate (out of range is undefined in C;
 * NaN becomes 0), then wrap into narrower types as numpy's astype does. */
static int64_t
f2i(double v)
{
    if (v != v)
        return 0;
    if (v >= 9.2233720368547758e18)
        return INT64_MAX;
    if (v <= -9.2233720368547758e18)
        return INT64_MIN;
    return (int64_t)v;
}

static int
run_cast(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t from = in[0]->dtype, to = out[0].dtype;
    int64_t cnt = ss__ops_numel(in[0]);
    const void *x = in[0]->data;
    void *y = out[0].data;

    if (from == to) {
        copy_data(&out[0], in[0]);
        return 0;
    }
    if (from == SS_DTYPE_F32 && to == SS_DTYPE_I64) {
        for (int64_t i = 0; i < cnt; i++)
            ((int64_t *)y)[i] = f2i(((const float *)x)[i]);
        return 0;
    }
    if (from == SS_DTYPE_I64 && to == SS_DTYPE_F32) {
        for (int64_t i = 0; i < cnt; i++)
            ((float *)y)[i] = (float)((const int64_t *)x)[i];
        return 0;
    }
    /* float16 and bfloat16: through double (exact for both), rounded to
     * nearest even on the way back (dyn.h) */
    if (from == SS_DTYPE_F16 || from == SS_DTYPE_BF16 ||
        to == SS_DTYPE_F16 || to == SS_DTYPE_BF16) {
        for (int64_t i = 0; i < cnt; i++)
            if (ss__dyn_is_float(from) || ss__dyn_is_float(to))
                ss__dyn_set(y, to, i, ss__dyn_get(x, from, i));
            else
                ss__dyn_seti(y, to, i, ss__dyn_geti(x, from, i));
        return 0;
    }
    for (int64_t i = 0; i < cnt; i++) {
        bool isf = ss__ops_is_float(from);
        double dv = isf ? ss__ops_get_f64(x, from, i) : 0.0;
        int64_t iv = isf ? f2i(dv) : ss__ops_get_i64(x, from, i);

        if (!isf)
            dv = from == SS_DTYPE_U64 ? (double)(uint64_t)iv : (double)iv;
        switch (to) {
        case SS_DTYPE_F32: ((float *)y)[i] = (float)dv; break;
        case SS_DTYPE_F64: ((double *)y)[i] = dv; break;
        case SS_DTYPE_I64: ((int64_t *)y)[i] = iv; break;
        case SS_DTYPE_U64: ((uint64_t *)y)[i] = (uint64_t)iv; break;
        case SS_DTYPE_I32: ((int32_t *)y)[i] = (int32_t)(uint32_t)iv; break;
        case SS_DTYPE_U32: ((uint32_t *)y)[i] = (uint32_t)iv; break;
        case SS_DTYPE_I16: ((int16_t *)y)[i] = (int16_t)(uint16_t)iv; break;
        case SS_DTYPE_U16: ((uint16_t *)y)[i] = (uint16_t)iv; break;
        case SS_DTYPE_I8: ((int8_t *)y)[i] = (int8_t)(uint8_t)iv; break;
        case SS_DTYPE_U8: ((uint8_t *)y)[i] = (uint8_t)iv; break;
        case SS_DTYPE_BOOL:
            ((uint8_t *)y)[i] = isf ? dv != 0.0 : iv != 0;
            break;
        default: break;
        }
    }
    return 0;
}

const ss_op_t ss__ops_shape[] = {
    { "Identity", infer_identity, run_copy },
    { "Dropout", infer_dropout, run_dropout },
    { "Shape", infer_shape, run_shape },
    { "Size", infer_size, run_size },
    { "Reshape", infer_reshape, run_copy },
    { "Flatten", infer_flatten, run_copy },
    { "Squeeze", infer_squeeze, run_copy },
    { "Unsqueeze", infer_unsqueeze, run_copy },
    { "Expand", infer_expand, run_expand },
    { "ConstantOfShape", infer_cofs, run_cofs },
    { "Constant", infer_constant, run_constant },
    { "Range", infer_range, run_range },
    { "Cast", infer_cast, run_cast },
    { NULL, NULL, NULL }
};
