/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ops that select along an axis, as plain C reference kernels: ArgMax,
 * ArgMin, Hardmax, GatherElements, ScatterElements (and the deprecated
 * Scatter it replaced), Trilu and CumSum.
 *
 * DESIGN.  Every op here works on a tensor seen as [outer, len, inner]
 * around its axis, reading and writing elements by run-time dtype
 * (dyn.h), so one kernel serves every numeric type the spec lists.
 * Index inputs (GatherElements, ScatterElements) are checked at run time:
 * an index out of range fails the run naming the node, never reads or
 * writes out of bounds.  Trilu's k and CumSum's axis are inputs that need
 * not be constants (they do not change the output's shape): they are read
 * when the op runs.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <string.h>

/* [outer, len, inner] of t around axis a. */
static void
split3(const ss_tensor_t *t, int a, int64_t *outer, int64_t *len,
       int64_t *inner)
{
    *outer = ss__ops_prod(t->dims, 0, a);
    *len = t->dims[a];
    *inner = ss__ops_prod(t->dims, a + 1, t->ndim);
}

static bool
numeric(ss_dtype_t t)
{
    return ss__dyn_is_float(t) || ss__ops_is_int(t);
}

/* ---- ArgMax, ArgMin ------------------------------------------------------ */

static int
infer_arg(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    int a, rc, k = 0;
    bool keep = ss__attr_int(n, "keepdims", 1) != 0;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), in[0]->ndim, false,
                           &a, err)) < 0)
        return rc;
    if (!numeric(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not supported",
                             n->op_type, ss__ops_dtype_name(in[0]->dtype));
    if (in[0]->dims[a] == 0)
        return ss__ops_fail(err, n, "axis %d is empty", a);
    for (int d = 0; d < in[0]->ndim; d++) {
        if (d != a)
            dims[k++] = in[0]->dims[d];
        else if (keep)
            dims[k++] = 1;
    }
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, k, dims, err);
}

static int
run_arg(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
        bool want_max)
{
    int64_t outer, len, inner;
    int a = 0;
    bool last = ss__attr_int(n, "select_last_index", 0) != 0;
    int64_t axis = ss__attr_int(n, "axis", 0);
    ss_dtype_t t = in[0]->dtype;

    a = (int)(axis < 0 ? axis + in[0]->ndim : axis);
    split3(in[0], a, &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * len * inner + i, best = 0;
            double bv = ss__dyn_get(in[0]->data, t, base);

            for (int64_t l = 1; l < len; l++) {
                double v = ss__dyn_get(in[0]->data, t, base + l * inner);
                bool better = want_max ? (last ? v >= bv : v > bv)
                                       : (last ? v <= bv : v < bv);

                if (better) {
                    bv = v;
                    best = l;
                }
            }
            ((int64_t *)out[0].data)[o * inner + i] = best;
        }
    return 0;
}

static int
run_argmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    (void)opset;
    (void)err;
    return run_arg(n, in, out, true);
}

static int
run_argmin(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    (void)opset;
    (void)err;
    return run_arg(n, in, out, false);
}

/* ---- Hardmax ------------------------------------------------------------- */

/* Opset 13: one axis (default -1); before: the input coerced to 2-D at
 * axis (default 1), the max taken over everything from axis on. */
static int
hardmax_geom(const ss_node_t *n, int opset, const ss_tensor_t *x,
             int64_t *outer, int64_t *len, int64_t *inner, ss_err_t *err)
{
    int a, rc;

    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", opset >= 13 ? -1 : 1),
                           x->ndim, opset < 13, &a, err)) < 0)
        return rc;
    if (opset >= 13) {
        split3(x, a, outer, len, inner);
    } else {
        *outer = ss__ops_prod(x->dims, 0, a);
        *len = ss__ops_prod(x->dims, a, x->ndim);
        *inner = 1;
    }
    return 0;
}

static int
infer_hardmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t o, l, i;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = hardmax_geom(n, opset, in[0], &o, &l, &i, err)) < 0)
        return rc;
    if (!ss__dyn_is_float(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "Hardmax on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_hardmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t outer, len, inner;
    ss_dtype_t t = in[0]->dtype;
    int rc;

    if ((rc = hardmax_geom(n, opset, in[0], &outer, &len, &inner, err)) < 0)
        return rc;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * len * inner + i, best = 0;
            double bv = len ? ss__dyn_get(in[0]->data, t, base) : 0;

            for (int64_t l = 0; l < len; l++) {
                double v = ss__dyn_get(in[0]->data, t, base + l * inner);

                if (v > bv) {
                    bv = v;
                    best = l;
                }
                ss__dyn_set(out[0].data, t, base + l * inner, 0.0);
            }
            if (len)
                ss__dyn_set(out[0].data, t, base + best * inner, 1.0);
        }
    return 0;
}

/* ---- GatherElements, ScatterElements ------------------------------------- */

static int
check_indices(const ss_node_t *n, const ss_tensor_t *data,
              const ss_tensor_t *idx, int *axis, ss_err_t *err)
{
    int rc;

    if (idx->dtype != SS_DTYPE_I64 && idx->dtype != SS_DTYPE_I32)
        return ss__ops_fail(err, n, "indices must be int64 or int32, not %s",
                            ss__ops_dtype_name(idx->dtype));
    if (idx->ndim != data->ndim || data->ndim < 1)
        return ss__ops_fail(err, n, "indices have rank %d, data %d (must "
                            "be equal and >= 1)", idx->ndim, data->ndim);
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), data->ndim, false,
                           axis, err)) < 0)
        return rc;
    return 0;
}

/* Walks every element of idx: *di is the element of data it addresses
 * (the axis coordinate replaced by the index).  Fails on an index out of
 * range. */
typedef int (*visit_fn)(void *ctx, int64_t ii, int64_t di);

static int
walk(const ss_node_t *n, const ss_tensor_t *data, const ss_tensor_t *idx,
     int axis, visit_fn fn, void *ctx, ss_err_t *err)
{
    int64_t coord[SS_MAX_DIMS] = { 0 }, dstride[SS_MAX_DIMS];
    int64_t cnt = ss__ops_numel(idx), len = data->dims[axis];
    int r = data->ndim;

    dstride[r - 1] = 1;
    for (int d = r - 2; d >= 0; d--)
        dstride[d] = dstride[d + 1] * data->dims[d + 1];
    for (int64_t ii = 0; ii < cnt; ii++) {
        int64_t k = ss__dyn_geti(idx->data, idx->dtype, ii), di = 0;
        int rc;

        if (k < -len || k >= len)
            return ss__ops_fail(err, n, "index %lld out of range [-%lld, "
                                "%lld) on axis %d", (long long)k,
                                (long long)len, (long long)len, axis);
        if (k < 0)
            k += len;
        for (int d = 0; d < r; d++)
            di += (d == axis ? k : coord[d]) * dstride[d];
        if ((rc = fn(ctx, ii, di)) < 0)
            return ss__ops_fail(err, n, "reduction on an unsupported type");
        for (int d = r - 1; d >= 0; d--) {
            if (++coord[d] < idx->dims[d])
                break;
            coord[d] = 0;
        }
    }
    return 0;
}

static int
infer_gather_el(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    int axis, rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = check_indices(n, in[0], in[1], &axis, err)) < 0)
        return rc;
    for (int d = 0; d < in[0]->ndim; d++)
        if (d != axis && in[1]->dims[d] > in[0]->dims[d])
            return ss__ops_fail(err, n, "indices dim %d (%lld) exceeds "
                                "data's (%lld)", d,
                                (long long)in[1]->dims[d],
                                (long long)in[0]->dims[d]);
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[1]->ndim,
                           in[1]->dims, err);
}

typedef struct {
    void *out;
    const void *src;
    ss_dtype_t t;
    size_t es;
    int red;                /* 0 none, 1 add, 2 mul */
} gctx_t;

static int
gather_one(void *ctx, int64_t ii, int64_t di)
{
    gctx_t *c = ctx;

    ss__dyn_copy(c->out, ii, c->src, di, c->es);
    return 0;
}

static int
run_gather_el(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    gctx_t c = { out[0].data, in[0]->data, in[0]->dtype,
                 ss__ops_dtype_size(in[0]->dtype), 0 };
    int axis, rc;

    (void)opset;
    if ((rc = check_indices(n, in[0], in[1], &axis, err)) < 0)
        return rc;
    return walk(n, in[0], in[1], axis, gather_one, &c, err);
}

static int
infer_scatter_el(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                 ss_tensor_t *out, ss_err_t *err)
{
    const char *red = ss__attr_string(n, "reduction", "none");
    int axis, rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0
        || (rc = check_indices(n, in[0], in[1], &axis, err)) < 0)
        return rc;
    if (in[2]->dtype != in[0]->dtype || in[2]->ndim != in[1]->ndim
        || memcmp(in[2]->dims, in[1]->dims,
                  sizeof(int64_t) * (size_t)in[1]->ndim) != 0)
        return ss__ops_fail(err, n, "updates must have the type of data and "
                            "the shape of indices");
    if (strcmp(red, "none") != 0 && strcmp(red, "add") != 0
        && strcmp(red, "mul") != 0)
        return ss__ops_failc(err, SS_EUNSUPP, n, "reduction '%s' is not "
                             "supported (none, add, mul are)", red);
    if (strcmp(red, "none") != 0 && !numeric(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "reduction '%s' on %s is "
                             "not supported", red,
                             ss__ops_dtype_name(in[0]->dtype));
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
scatter_one(void *ctx, int64_t ii, int64_t di)
{
    gctx_t *c = ctx;

    if (c->red == 0) {
        ss__dyn_copy(c->out, di, c->src, ii, c->es);
    } else if (ss__ops_is_int(c->t)) {
        int64_t a = ss__dyn_geti(c->out, c->t, di);
        int64_t b = ss__dyn_geti(c->src, c->t, ii);

        /* wrap as the type does: unsigned arithmetic */
        ss__dyn_seti(c->out, c->t, di, c->red == 1
                     ? (int64_t)((uint64_t)a + (uint64_t)b)
                     : (int64_t)((uint64_t)a * (uint64_t)b));
    } else {
        double a = ss__dyn_get(c->out, c->t, di);
        double b = ss__dyn_get(c->src, c->t, ii);

        ss__dyn_set(c->out, c->t, di, c->red == 1 ? a + b : a * b);
    }
    return 0;
}

static int
run_scatter_el(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    const char *red = ss__attr_string(n, "reduction", "none");
    gctx_t c = { out[0].data, in[2]->data, in[0]->dtype,
                 ss__ops_dtype_size(in[0]->dtype),
                 strcmp(red, "add") == 0 ? 1 : strcmp(red, "mul") == 0 ? 2
                 : 0 };
    int axis, rc;

    (void)opset;
    if ((rc = check_indices(n, in[0], in[1], &axis, err)) < 0)
        return rc;
    memcpy(out[0].data, in[0]->data,
           (size_t)ss__ops_numel(in[0]) * c.es);
    return walk(n, in[0], in[1], axis, scatter_one, &c, err);
}

/* ---- Trilu --------------------------------------------------------------- */

static int
infer_trilu(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->ndim < 2)
        return ss__ops_fail(err, n, "input has rank %d (at least 2)",
                            in[0]->ndim);
    if (ss__ops_has_input(n, in, 1)
        && (ss__ops_numel(in[1]) != 1 || in[1]->dtype != SS_DTYPE_I64))
        return ss__ops_fail(err, n, "k must be one int64");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_trilu(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int r = in[0]->ndim;
    int64_t rows = in[0]->dims[r - 2], cols = in[0]->dims[r - 1];
    int64_t mats = ss__ops_prod(in[0]->dims, 0, r - 2), k = 0;
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    bool upper = ss__attr_int(n, "upper", 1) != 0;

    (void)opset;
    (void)err;
    if (ss__ops_has_input(n, in, 1))
        k = ((const int64_t *)in[1]->data)[0];
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                int64_t e = (m * rows + i) * cols + j;
                /* j - i is small: no arithmetic on k, any int64 */
                bool keep = upper ? j - i >= k : j - i <= k;

                if (keep)
                    ss__dyn_copy(out[0].data, e, in[0]->data, e, es);
                else
                    memset((char *)out[0].data + e * (int64_t)es, 0, es);
            }
    return 0;
}

/* ---- CumSum -------------------------------------------------------------- */

static int
infer_cumsum(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (!numeric(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "CumSum on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    if (ss__ops_numel(in[1]) != 1 || !ss__ops_is_int(in[1]->dtype)
        || in[0]->ndim < 1)
        return ss__ops_fail(err, n, "axis must be one int32/int64, on an "
                            "input of rank >= 1");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_cumsum(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t outer, len, inner;
    ss_dtype_t t = in[0]->dtype;
    bool excl = ss__attr_int(n, "exclusive", 0) != 0;
    bool rev = ss__attr_int(n, "reverse", 0) != 0;
    bool ints = ss__ops_is_int(t);
    int a, rc;

    (void)opset;
    if ((rc = ss__ops_axis(n, ss__dyn_geti(in[1]->data, in[1]->dtype, 0),
                           in[0]->ndim, false, &a, err)) < 0)
        return rc;
    split3(in[0], a, &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s = 0;
            uint64_t si = 0;

            for (int64_t l = 0; l < len; l++) {
                int64_t e = o * len * inner + (rev ? len - 1 - l : l) * inner
                            + i;

                if (ints) {
                    uint64_t v = (uint64_t)ss__dyn_geti(in[0]->data, t, e);

                    if (!excl)
                        si += v;
                    ss__dyn_seti(out[0].data, t, e, (int64_t)si);
                    if (excl)
                        si += v;
                } else {
                    double v = ss__dyn_get(in[0]->data, t, e);

                    if (!excl)
                        s += v;
                    ss__dyn_set(out[0].data, t, e, s);
                    if (excl)
                        s += v;
                }
            }
        }
    return 0;
}

const ss_op_t ss__ops_index[] = {
    { "ArgMax", infer_arg, run_argmax },
    { "ArgMin", infer_arg, run_argmin },
    { "Hardmax", infer_hardmax, run_hardmax },
    { "GatherElements", infer_gather_el, run_gather_el },
    { "ScatterElements", infer_scatter_el, run_scatter_el },
    { "Scatter", infer_scatter_el, run_scatter_el },
    { "Trilu", infer_trilu, run_trilu },
    { "CumSum", infer_cumsum, run_cumsum },
    { NULL, NULL, NULL }
};
