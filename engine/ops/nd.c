/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plain C reference kernels for Pad (constant, reflect, edge), GatherND,
 * ScatterND, and the ops whose output shape is their data's: Compress and
 * NonZero (their condition / input must be constants when the plan is
 * compiled).
 *
 * DESIGN.  Pad maps each output coordinate back to the input per axis
 * (negative pads crop); its pads decide the output's shape, so they must
 * be a constant when the plan is compiled (the attribute before opset 11,
 * the input after).  GatherND and ScatterND copy slices of
 * prod(data.shape[batch_dims + k:]) elements addressed by the index
 * tuples; every index is checked at run time (out of range fails the
 * run naming the node).  Elements are copied by size, so every type runs;
 * ScatterND's add/mul reductions work in the element's type via dyn.h.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <string.h>

/* ---- Pad ----------------------------------------------------------------- */

typedef enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE } pad_mode_t;

static int
pad_args(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         int64_t *pads, pad_mode_t *mode, ss_err_t *err)
{
    const char *m = ss__attr_string(n, "mode", "constant");
    int r = in[0]->ndim, cnt;

    if (strcmp(m, "constant") == 0)
        *mode = PAD_CONSTANT;
    else if (strcmp(m, "reflect") == 0)
        *mode = PAD_REFLECT;
    else if (strcmp(m, "edge") == 0)
        *mode = PAD_EDGE;
    else
        return ss__ops_failc(err, SS_EUNSUPP, n, "mode '%s' is not "
                             "supported (constant, reflect, edge are)", m);
    if (opset < 11) {
        const int64_t *a;

        if ((cnt = ss__attr_ints(n, "pads", &a)) < 0)
            return ss__ops_fail(err, n, "pads is missing");
        if (cnt > 2 * SS_MAX_DIMS)
            return ss__ops_fail(err, n, "too many pads");
        memcpy(pads, a, sizeof(*a) * (size_t)cnt);
    } else {
        if (ss__ops_has_input(n, in, 3))
            return ss__ops_failc(err, SS_EUNSUPP, n, "axes (opset 18) is "
                                 "not supported");
        if (!ss__ops_has_input(n, in, 1))
            return ss__ops_fail(err, n, "pads is missing");
        if ((cnt = ss__ops_read_ints(n, in[1], "pads", pads, 2 * SS_MAX_DIMS,
                                     err)) < 0)
            return cnt;
    }
    if (cnt != 2 * r)
        return ss__ops_fail(err, n, "pads has %d values for rank %d", cnt, r);
    for (int d = 0; d < r; d++) {
        int64_t len = in[0]->dims[d];

        if (pads[d] < -len || pads[r + d] < -len
            || pads[d] > SS_OPS_MAX_NUMEL || pads[r + d] > SS_OPS_MAX_NUMEL
            || len + pads[d] + pads[r + d] < 0)
            return ss__ops_fail(err, n, "pads on axis %d are out of range",
                                d);
        if (*mode == PAD_REFLECT && len + pads[d] + pads[r + d] > 0
            && len < 2 && (pads[d] > 0 || pads[r + d] > 0))
            return ss__ops_fail(err, n, "reflect needs 2 or more elements "
                                "on axis %d", d);
        if (*mode == PAD_EDGE && len == 0 && (pads[d] > 0 || pads[r + d] > 0))
            return ss__ops_fail(err, n, "edge on an empty axis %d", d);
    }
    return 0;
}

static int
infer_pad(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t pads[2 * SS_MAX_DIMS], dims[SS_MAX_DIMS];
    pad_mode_t mode;
    int rc, r;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = pad_args(n, opset, in, pads, &mode, err)) < 0)
        return rc;
    r = in[0]->ndim;
    for (int d = 0; d < r; d++)
        dims[d] = in[0]->dims[d] + pads[d] + pads[r + d];
    if (opset >= 11 && ss__ops_has_input(n, in, 2)
        && (in[2]->dtype != in[0]->dtype || ss__ops_numel(in[2]) > 1))
        return ss__ops_fail(err, n, "constant_value must be one element of "
                            "the input's type");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, r, dims, err);
}

static int64_t
pad_src(int64_t i, int64_t len, pad_mode_t mode)
{
    if (i >= 0 && i < len)
        return i;
    if (mode == PAD_CONSTANT)
        return -1;
    if (mode == PAD_EDGE)
        return i < 0 ? 0 : len - 1;
    /* reflect, period 2 * (len - 1) */
    {
        int64_t p = 2 * (len - 1), m = i % p;

        if (m < 0)
            m += p;
        return m < len ? m : p - m;
    }
}

static int
run_pad(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    int64_t pads[2 * SS_MAX_DIMS], coord[SS_MAX_DIMS] = { 0 };
    int64_t xs[SS_MAX_DIMS], cnt = ss__ops_numel(&out[0]);
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    char value[16] = { 0 };
    pad_mode_t mode;
    int rc, r = in[0]->ndim;

    if ((rc = pad_args(n, opset, in, pads, &mode, err)) < 0)
        return rc;
    if (opset < 11)
        ss__dyn_set(value, in[0]->dtype, 0, ss__attr_float(n, "value", 0));
    else if (ss__ops_has_input(n, in, 2) && ss__ops_numel(in[2]) == 1)
        memcpy(value, in[2]->data, es);
    for (int d = r - 1; d >= 0; d--)
        xs[d] = d == r - 1 ? 1 : xs[d + 1] * in[0]->dims[d + 1];
    for (int64_t e = 0; e < cnt; e++) {
        int64_t off = 0;

        for (int d = 0; d < r && off >= 0; d++) {
            int64_t s = pad_src(coord[d] - pads[d], in[0]->dims[d], mode);

            off = s < 0 ? -1 : off + s * xs[d];
        }
        if (off < 0)
            memcpy((char *)out[0].data + e * (int64_t)es, value, es);
        else
            ss__dyn_copy(out[0].data, e, in[0]->data, off, es);
        for (int d = r - 1; d >= 0; d--) {
            if (++coord[d] < out[0].dims[d])
                break;
            coord[d] = 0;
        }
    }
    return 0;
}

/* ---- GatherND ------------------------------------------------------------ */

/* Geometry shared by GatherND and ScatterND: b batch dims, k-tuples. */
typedef struct {
    int b, k, q;
    int64_t batches, tuples, slice;     /* tuples per batch */
} ndgeo_t;

static int
nd_geo(const ss_node_t *n, const ss_tensor_t *data, const ss_tensor_t *idx,
       int b, ndgeo_t *g, ss_err_t *err)
{
    g->b = b;
    g->q = idx->ndim;
    if (idx->dtype != SS_DTYPE_I64)
        return ss__ops_fail(err, n, "indices must be int64");
    if (g->q < 1 || data->ndim < 1 || b < 0 || b >= g->q || b >= data->ndim)
        return ss__ops_fail(err, n, "bad ranks or batch_dims");
    g->k = (int)idx->dims[g->q - 1];
    if (g->k < 1 || b + g->k > data->ndim)
        return ss__ops_fail(err, n, "index tuples of %d on data of rank %d",
                            g->k, data->ndim);
    for (int d = 0; d < b; d++)
        if (idx->dims[d] != data->dims[d])
            return ss__ops_fail(err, n, "batch dim %d differs", d);
    g->batches = ss__ops_prod(data->dims, 0, b);
    g->tuples = ss__ops_prod(idx->dims, b, g->q - 1);
    g->slice = ss__ops_prod(data->dims, b + g->k, data->ndim);
    return 0;
}

/* Element offset of tuple t of batch bi in data, or -1 when out of range. */
static int64_t
nd_offset(const ss_tensor_t *data, const ss_tensor_t *idx, const ndgeo_t *g,
          int64_t bi, int64_t t)
{
    const int64_t *ix = (const int64_t *)idx->data
                        + (bi * g->tuples + t) * g->k;
    int64_t off = bi;

    for (int j = 0; j < g->k; j++) {
        int64_t len = data->dims[g->b + j], v = ix[j];

        if (v < -len || v >= len)
            return -1;
        off = off * len + (v < 0 ? v + len : v);
    }
    return off * g->slice;
}

static int
infer_gathernd(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    ndgeo_t g;
    int rc, k = 0;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = nd_geo(n, in[0], in[1], (int)ss__attr_int(n, "batch_dims",
                                                           0), &g, err)) < 0)
        return rc;
    for (int d = 0; d < g.q - 1; d++)
        dims[k++] = in[1]->dims[d];
    for (int d = g.b + g.k; d < in[0]->ndim; d++) {
        if (k == SS_MAX_DIMS)
            return ss__ops_fail(err, n, "output rank exceeds %d",
                                SS_MAX_DIMS);
        dims[k++] = in[0]->dims[d];
    }
    return ss__ops_set_out(n, &out[0], in[0]->dtype, k, dims, err);
}

static int
run_gathernd(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    ndgeo_t g;
    int rc;

    (void)opset;
    if ((rc = nd_geo(n, in[0], in[1], (int)ss__attr_int(n, "batch_dims", 0),
                     &g, err)) < 0)
        return rc;
    for (int64_t bi = 0; bi < g.batches; bi++)
        for (int64_t t = 0; t < g.tuples; t++) {
            int64_t off = nd_offset(in[0], in[1], &g, bi, t);

            if (off < 0)
                return ss__ops_fail(err, n, "an index is out of range");
            memcpy((char *)out[0].data
                   + (bi * g.tuples + t) * g.slice * (int64_t)es,
                   (const char *)in[0]->data + off * (int64_t)es,
                   (size_t)g.slice * es);
        }
    return 0;
}

/* ---- ScatterND ----------------------------------------------------------- */

static int
red_of(const ss_node_t *n)
{
    const char *r = ss__attr_string(n, "reduction", "none");

    return strcmp(r, "none") == 0 ? 0 : strcmp(r, "add") == 0 ? 1
           : strcmp(r, "mul") == 0 ? 2 : -1;
}

static int
infer_scatternd(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    ndgeo_t g;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0
        || (rc = nd_geo(n, in[0], in[1], 0, &g, err)) < 0)
        return rc;
    if (red_of(n) < 0)
        return ss__ops_failc(err, SS_EUNSUPP, n, "reduction '%s' is not "
                             "supported (none, add, mul are)",
                             ss__attr_string(n, "reduction", ""));
    if (in[2]->dtype != in[0]->dtype
        || ss__ops_numel(in[2]) != g.tuples * g.slice)
        return ss__ops_fail(err, n, "updates must be data's type, shaped "
                            "indices.shape[:-1] + data.shape[k:]");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_scatternd(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    ss_dtype_t t = in[0]->dtype;
    int red = red_of(n), rc;
    ndgeo_t g;

    (void)opset;
    if ((rc = nd_geo(n, in[0], in[1], 0, &g, err)) < 0)
        return rc;
    memcpy(out[0].data, in[0]->data, (size_t)ss__ops_numel(in[0]) * es);
    for (int64_t u = 0; u < g.tuples; u++) {
        int64_t off = nd_offset(in[0], in[1], &g, 0, u);

        if (off < 0)
            return ss__ops_fail(err, n, "an index is out of range");
        for (int64_t s = 0; s < g.slice; s++) {
            int64_t di = off + s, ui = u * g.slice + s;

            if (red == 0) {
                ss__dyn_copy(out[0].data, di, in[2]->data, ui, es);
            } else if (ss__ops_is_int(t)) {
                uint64_t a = (uint64_t)ss__dyn_geti(out[0].data, t, di);
                uint64_t b = (uint64_t)ss__dyn_geti(in[2]->data, t, ui);

                ss__dyn_seti(out[0].data, t, di,
                             (int64_t)(red == 1 ? a + b : a * b));
            } else {
                double a = ss__dyn_get(out[0].data, t, di);
                double b = ss__dyn_get(in[2]->data, t, ui);

                ss__dyn_set(out[0].data, t, di, red == 1 ? a + b : a * b);
            }
        }
    }
    return 0;
}

/* ---- Compress, NonZero --------------------------------------------------- */

static int
need_data(const ss_node_t *n, const ss_tensor_t *t, const char *what,
          ss_err_t *err)
{
    if (t->data == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s decides the output's "
                             "shape: it must be a constant known when the "
                             "plan is compiled", what);
    return 0;
}

/* Compress: with axis, the slices along it whose condition is true;
 * without, the true elements of the flattened input. */
static int
compress_geom(const ss_node_t *n, const ss_tensor_t *const *in, int *axis,
              int64_t *kept, ss_err_t *err)
{
    const ss_attr_t *a = ss__attr_find(n, "axis");
    int64_t len, cnt = ss__ops_numel(in[1]);
    int rc;

    if ((rc = need_data(n, in[1], "condition", err)) < 0)
        return rc;
    if (in[1]->ndim != 1 || !(in[1]->dtype == SS_DTYPE_BOOL
                              || ss__ops_is_int(in[1]->dtype)))
        return ss__ops_fail(err, n, "condition must be a 1-D bool tensor");
    *axis = -1;
    if (a != NULL && (rc = ss__ops_axis(n, a->i, in[0]->ndim, false, axis,
                                        err)) < 0)
        return rc;
    len = *axis < 0 ? ss__ops_numel(in[0]) : in[0]->dims[*axis];
    if (cnt > len)
        return ss__ops_fail(err, n, "condition has %lld values for %lld",
                            (long long)cnt, (long long)len);
    *kept = 0;
    for (int64_t i = 0; i < cnt; i++)
        *kept += ss__dyn_geti(in[1]->data, in[1]->dtype, i) != 0;
    return 0;
}

static int
infer_compress(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], kept;
    int axis, rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = compress_geom(n, in, &axis, &kept, err)) < 0)
        return rc;
    if (axis < 0)
        return ss__ops_set_out(n, &out[0], in[0]->dtype, 1, &kept, err);
    memcpy(dims, in[0]->dims, sizeof(int64_t) * (size_t)in[0]->ndim);
    dims[axis] = kept;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, dims, err);
}

static int
run_compress(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    int64_t kept, outer = 1, len, inner = 1, o = 0;
    int64_t cnt = ss__ops_numel(in[1]);
    int axis, rc;

    (void)opset;
    if ((rc = compress_geom(n, in, &axis, &kept, err)) < 0)
        return rc;
    if (axis < 0) {
        len = ss__ops_numel(in[0]);
    } else {
        outer = ss__ops_prod(in[0]->dims, 0, axis);
        len = in[0]->dims[axis];
        inner = ss__ops_prod(in[0]->dims, axis + 1, in[0]->ndim);
    }
    for (int64_t a = 0; a < outer; a++)
        for (int64_t i = 0; i < len && i < cnt; i++) {
            if (ss__dyn_geti(in[1]->data, in[1]->dtype, i) == 0)
                continue;
            memcpy((char *)out[0].data + o * inner * (int64_t)es,
                   (const char *)in[0]->data
                   + (a * len + i) * inner * (int64_t)es,
                   (size_t)inner * es);
            o++;
        }
    return 0;
}

static int64_t
count_nonzero(const ss_tensor_t *x)
{
    int64_t cnt = ss__ops_numel(x), nz = 0;

    for (int64_t i = 0; i < cnt; i++)
        nz += ss__dyn_get(x->data, x->dtype, i) != 0;
    return nz;
}

static int
infer_nonzero(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[2];
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = need_data(n, in[0], "NonZero's input", err)) < 0)
        return rc;
    if (!ss__dyn_is_float(in[0]->dtype) && !ss__ops_is_int(in[0]->dtype)
        && in[0]->dtype != SS_DTYPE_BOOL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "NonZero on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    dims[0] = in[0]->ndim;
    dims[1] = count_nonzero(in[0]);
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I64, 2, dims, err);
}

static int
run_nonzero(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    int64_t cnt = ss__ops_numel(x), nz = count_nonzero(x), k = 0;
    int r = x->ndim;

    (void)n;
    (void)opset;
    (void)err;
    for (int64_t i = 0; i < cnt; i++) {
        int64_t rem = i;

        if (ss__dyn_get(x->data, x->dtype, i) == 0)
            continue;
        for (int d = r - 1; d >= 0; d--) {
            ((int64_t *)out[0].data)[d * nz + k] = rem % x->dims[d];
            rem /= x->dims[d];
        }
        k++;
    }
    return 0;
}

const ss_op_t ss__ops_nd[] = {
    { "Pad", infer_pad, run_pad },
    { "GatherND", infer_gathernd, run_gathernd },
    { "ScatterND", infer_scatternd, run_scatternd },
    { "Compress", infer_compress, run_compress },
    { "NonZero", infer_nonzero, run_nonzero },
    { NULL, NULL, NULL }
};
