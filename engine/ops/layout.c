/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plain C reference kernels for ops that rearrange or build tensors:
 * DepthToSpace, SpaceToDepth, EyeLike, OneHot, TopK, and the channel
 * window normalization LRN.
 *
 * DESIGN.  Rearrangements copy elements by size, so they take every type;
 * arithmetic goes through dyn.h in double.  Inputs that decide an output's
 * shape (OneHot's depth, TopK's K) must be constants when the plan is
 * compiled, as Reshape's shape must; the message says so.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

/* ---- DepthToSpace, SpaceToDepth ------------------------------------------ */

static int
infer_d2s(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t b = ss__attr_int(n, "blocksize", 0), dims[4];
    bool d2s = strcmp(n->op_type, "DepthToSpace") == 0;
    const char *mode = ss__attr_string(n, "mode", "DCR");
    const int64_t *x;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    x = in[0]->dims;
    if (in[0]->ndim != 4)
        return ss__ops_fail(err, n, "input has rank %d (must be 4, NCHW)",
                            in[0]->ndim);
    if (b < 1 || b > 4096)
        return ss__ops_fail(err, n, "blocksize %lld is invalid",
                            (long long)b);
    if (d2s && strcmp(mode, "DCR") != 0 && strcmp(mode, "CRD") != 0)
        return ss__ops_fail(err, n, "mode '%s' (DCR or CRD)", mode);
    if (d2s) {
        if (x[1] % (b * b) != 0)
            return ss__ops_fail(err, n, "channels %lld are not a multiple "
                                "of blocksize^2", (long long)x[1]);
        dims[0] = x[0];
        dims[1] = x[1] / (b * b);
        dims[2] = x[2] * b;
        dims[3] = x[3] * b;
    } else {
        if (x[2] % b != 0 || x[3] % b != 0)
            return ss__ops_fail(err, n, "height and width must be multiples "
                                "of blocksize");
        dims[0] = x[0];
        dims[1] = x[1] * b * b;
        dims[2] = x[2] / b;
        dims[3] = x[3] / b;
    }
    return ss__ops_set_out(n, &out[0], in[0]->dtype, 4, dims, err);
}

/* Both ops walk the big (space) side [N, C', H*b, W*b]: element
 * (n, c, y, x) with by = y % b, bx = x % b sits at channel
 * DCR: (by * b + bx) * C' + c, CRD: c * b * b + by * b + bx
 * of the small side [N, C'*b*b, H, W] at (y / b, x / b).  SpaceToDepth
 * is DCR's inverse. */
static int
run_d2s(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    bool d2s = strcmp(n->op_type, "DepthToSpace") == 0;
    bool crd = d2s && strcmp(ss__attr_string(n, "mode", "DCR"), "CRD") == 0;
    const ss_tensor_t *big = d2s ? &out[0] : in[0];
    const ss_tensor_t *small = d2s ? in[0] : &out[0];
    int64_t b = ss__attr_int(n, "blocksize", 1);
    int64_t N = big->dims[0], C = big->dims[1], H = big->dims[2];
    int64_t W = big->dims[3], sh = small->dims[2], sw = small->dims[3];
    int64_t sc = small->dims[1];
    size_t es = ss__ops_dtype_size(in[0]->dtype);

    (void)opset;
    (void)err;
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    int64_t by = y % b, bx = x % b;
                    int64_t ch = crd ? c * b * b + by * b + bx
                                     : (by * b + bx) * C + c;
                    int64_t bi = ((i * C + c) * H + y) * W + x;
                    int64_t si = ((i * sc + ch) * sh + y / b) * sw + x / b;

                    if (d2s)
                        ss__dyn_copy(out[0].data, bi, in[0]->data, si, es);
                    else
                        ss__dyn_copy(out[0].data, si, in[0]->data, bi, es);
                }
    return 0;
}

/* ---- EyeLike ------------------------------------------------------------- */

static int
infer_eyelike(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t t;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    t = (ss_dtype_t)ss__attr_int(n, "dtype", in[0]->dtype);
    if (in[0]->ndim != 2)
        return ss__ops_fail(err, n, "input has rank %d (must be 2)",
                            in[0]->ndim);
    if (!ss__dyn_is_float(t) && !ss__ops_is_int(t) && t != SS_DTYPE_BOOL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "dtype %d is not "
                             "supported", (int)t);
    return ss__ops_set_out(n, &out[0], t, 2, in[0]->dims, err);
}

static int
run_eyelike(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t k = ss__attr_int(n, "k", 0);
    int64_t r = out[0].dims[0], c = out[0].dims[1];

    (void)opset;
    (void)in;
    (void)err;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            ss__dyn_seti(out[0].data, out[0].dtype, i * c + j,
                         j - i == k ? 1 : 0);
    return 0;
}

/* ---- OneHot -------------------------------------------------------------- */

static int
infer_onehot(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    double depth;
    int a, rc, r;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0)
        return rc;
    if (in[1]->data == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "depth must be a constant "
                             "known when the plan is compiled");
    if ((rc = ss__ops_read_scalar(n, in[1], "depth", &depth, err)) < 0)
        return rc;
    if (!(depth >= 1 && depth < 1e9))
        return ss__ops_fail(err, n, "depth %g is invalid", depth);
    if (ss__ops_numel(in[2]) != 2)
        return ss__ops_fail(err, n, "values must have 2 elements");
    r = in[0]->ndim;
    if (r >= SS_MAX_DIMS)
        return ss__ops_fail(err, n, "indices have rank %d (at most %d)", r,
                            SS_MAX_DIMS - 1);
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), r + 1, false, &a,
                           err)) < 0)
        return rc;
    for (int d = 0, k = 0; d <= r; d++)
        dims[d] = d == a ? (int64_t)depth : in[0]->dims[k++];
    return ss__ops_set_out(n, &out[0], in[2]->dtype, r + 1, dims, err);
}

static int
run_onehot(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int r = in[0]->ndim, a;
    int64_t depth, outer, inner;
    size_t es = ss__ops_dtype_size(out[0].dtype);
    int rc;

    (void)opset;
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), r + 1, false, &a,
                           err)) < 0)
        return rc;
    depth = out[0].dims[a];
    outer = ss__ops_prod(out[0].dims, 0, a);
    inner = ss__ops_prod(out[0].dims, a + 1, r + 1);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double v = ss__dyn_get(in[0]->data, in[0]->dtype, o * inner + i);
            /* NaN and huge values select nothing */
            int64_t hot = v == v && fabs(v) < 1e18 ? (int64_t)v : -1 - depth;

            if (hot < 0 && hot >= -depth)
                hot += depth;
            for (int64_t d = 0; d < depth; d++)
                ss__dyn_copy(out[0].data, (o * depth + d) * inner + i,
                             in[2]->data, d == hot ? 1 : 0, es);
        }
    return 0;
}

/* ---- TopK ---------------------------------------------------------------- */

static int
topk_k(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
       int64_t *k, ss_err_t *err)
{
    int64_t v[1];
    int cnt;

    if (opset < 10) {
        *k = ss__attr_int(n, "k", -1);
        return 0;
    }
    if (!ss__ops_has_input(n, in, 1))
        return ss__ops_fail(err, n, "K is missing");
    if ((cnt = ss__ops_read_ints(n, in[1], "K", v, 1, err)) < 0)
        return cnt;
    if (cnt != 1)
        return ss__ops_fail(err, n, "K must have one element");
    *k = v[0];
    return 0;
}

static int
infer_topk(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], k;
    int a, rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = topk_k(n, opset, in, &k, err)) < 0
        || (rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), in[0]->ndim,
                              false, &a, err)) < 0)
        return rc;
    if (!ss__dyn_is_float(in[0]->dtype) && !ss__ops_is_int(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "TopK on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    if (k < 0 || k > in[0]->dims[a])
        return ss__ops_fail(err, n, "K = %lld is out of [0, %lld]",
                            (long long)k, (long long)in[0]->dims[a]);
    memcpy(dims, in[0]->dims, sizeof(int64_t) * (size_t)in[0]->ndim);
    dims[a] = k;
    if ((rc = ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, dims,
                              err)) < 0)
        return rc;
    if (n->n_outputs > 1 && n->outputs[1] >= 0)
        rc = ss__ops_set_out(n, &out[1], SS_DTYPE_I64, in[0]->ndim, dims,
                             err);
    return rc;
}

typedef struct {
    double v;
    int64_t i;
} kv_t;

static int
cmp_large(const void *pa, const void *pb)
{
    const kv_t *a = pa, *b = pb;

    if (a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int
cmp_small(const void *pa, const void *pb)
{
    const kv_t *a = pa, *b = pb;

    if (a->v != b->v)
        return a->v < b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int
run_topk(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    bool largest = ss__attr_int(n, "largest", 1) != 0;
    int64_t outer, len, inner, k;
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    kv_t *buf = NULL;
    int a, rc;

    if ((rc = topk_k(n, opset, in, &k, err)) < 0
        || (rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), in[0]->ndim,
                              false, &a, err)) < 0)
        return rc;
    outer = ss__ops_prod(in[0]->dims, 0, a);
    len = in[0]->dims[a];
    inner = ss__ops_prod(in[0]->dims, a + 1, in[0]->ndim);
    if ((buf = ss_malloc(sizeof(*buf) * (size_t)(len + 1))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for TopK");
    /* sorted=0 may return any order: the sorted one is as good */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * len * inner + i;

            for (int64_t l = 0; l < len; l++) {
                buf[l].v = ss__dyn_get(in[0]->data, in[0]->dtype,
                                       base + l * inner);
                buf[l].i = l;
            }
            qsort(buf, (size_t)len, sizeof(*buf),
                  largest ? cmp_large : cmp_small);
            for (int64_t l = 0; l < k; l++) {
                int64_t oe = (o * k + l) * inner + i;

                ss__dyn_copy(out[0].data, oe, in[0]->data,
                             base + buf[l].i * inner, es);
                if (ss__ops_want_output(n, out, 1))
                    ((int64_t *)out[1].data)[oe] = buf[l].i;
            }
        }
    ss_free(buf);
    return 0;
}

/* ---- LRN ----------------------------------------------------------------- */

static int
infer_lrn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->ndim < 3)
        return ss__ops_fail(err, n, "input has rank %d (at least 3)",
                            in[0]->ndim);
    if (!ss__dyn_is_float(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "LRN on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    if (ss__attr_int(n, "size", 0) < 1)
        return ss__ops_fail(err, n, "size must be >= 1");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_lrn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    double alpha = ss__attr_float(n, "alpha", 1e-4f);
    double beta = ss__attr_float(n, "beta", 0.75f);
    double bias = ss__attr_float(n, "bias", 1.0f);
    int64_t size = ss__attr_int(n, "size", 1);
    int64_t N = in[0]->dims[0], C = in[0]->dims[1];
    int64_t S = ss__ops_prod(in[0]->dims, 2, in[0]->ndim);
    int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
    ss_dtype_t t = in[0]->dtype;

    (void)opset;
    (void)err;
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t s = 0; s < S; s++) {
                double sq = 0, x;

                for (int64_t j = c - lo; j <= c + hi; j++)
                    if (j >= 0 && j < C) {
                        double v = ss__dyn_get(in[0]->data, t,
                                               (i * C + j) * S + s);

                        sq += v * v;
                    }
                x = ss__dyn_get(in[0]->data, t, (i * C + c) * S + s);
                ss__dyn_set(out[0].data, t, (i * C + c) * S + s,
                            x / pow(bias + alpha / (double)size * sq, beta));
            }
    return 0;
}

const ss_op_t ss__ops_layout[] = {
    { "DepthToSpace", infer_d2s, run_d2s },
    { "SpaceToDepth", infer_d2s, run_d2s },
    { "EyeLike", infer_eyelike, run_eyelike },
    { "OneHot", infer_onehot, run_onehot },
    { "TopK", infer_topk, run_topk },
    { "LRN", infer_lrn, run_lrn },
    { NULL, NULL, NULL }
};
