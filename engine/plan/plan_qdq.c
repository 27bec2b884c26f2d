/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8: QDQ patterns of any ONNX model onto int8 oneDNN primitives.
 * ss_plan_new runs this pass first; the bf16 pass and the f32 fusion
 * (plan_fuse.c) take what is left.
 *
 * DESIGN: a QDQ model (ours or another tool's) reads
 *     x -Q-> x_q -DQ-> x' ; w_q -DQ-> w' ; MatMul/Gemm/Conv(x', w') ...
 * The DQ of a constant weight was folded to f32 by the plan already; its
 * graph node still names the s8 weights and their scales, and those are
 * what the int8 primitive packs (per-output-channel scales, zero point 0:
 * the fast path).  The activation DQ is skipped: the primitive reads x_q
 * (u8 or s8) directly, with one per-tensor scale; a u8 zero point is
 * folded into the bias (sum_k (x_q - z) w = sum_k x_q w - z sum_k w),
 * except in a padded conv, whose padding reads x_q = 0 where it should
 * read z: that conv gives z to oneDNN as its source zero point, which
 * compensates the padded taps (int8_conv).
 * Output scales s_x * s_w[c], fixed at creation, turn the s32
 * accumulator back into real units; bias, activations and residual adds
 * follow as post-ops (the f32 chain of plan_chain.c).  When the chain ends
 * in another QuantizeLinear (per-tensor), that Q becomes a last post-op
 * (y / s_y + z_y) and the primitive writes u8/s8 directly, so data stays
 * int8 between consecutive int8 layers.  (oneDNN rounds y / s_y + z_y
 * where ONNX rounds y / s_y and then adds z_y: for an odd z_y the two
 * differ by one step on exact ties, which real-valued accumulators hit
 * with probability ~0.)  A Q or DQ left over runs as a oneDNN reorder
 * with scale and zero point when that is exact (per tensor; Q with an
 * even zero point), else on its reference kernel.
 *
 * Convs: oneDNN 2.6 has fast int8 convs (brgconv, jit_int8) for NHWC
 * only, its reference code for NCHW.  An int8 conv therefore reads and
 * writes NHWC: its u8/s8 source is quantized straight into an NHWC copy
 * (or converted), a u8/s8 result stays NHWC for the next int8 conv, and
 * an f32 result is recorded NHWC for the layout pass (plan_layout.c) to
 * convert where a reader wants NCHW.
 *
 * Pools: quantizers put the Q after a MaxPool (Conv -> Relu -> MaxPool ->
 * Q -> DQ -> Conv).  Max commutes with a per-tensor Q, so the Q moves
 * before the pool: the conv then ends in it and writes u8, and the
 * pool runs on u8 NHWC between the two int8 convs; a Q behind a Flatten
 * moves before it the same way (plan_qdq_pool.c).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"
#include "engine/plan/plan_qdq.h"

typedef struct qw {
    const int8_t *w;        /* s8 weights, the layout of the f32 ones */
    float *scale;           /* [n] per output channel, owned */
} qw_t;

/* The weight value wv was folded from DequantizeLinear(w_q s8, scale,
 * zero point 0): finds w_q and per-output-channel scales (axis: the
 * output-channel axis of the weight). */
static int
find_qweight(const ss_plan_t *p, int wv, int axis, int64_t n, qw_t *q,
             ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    const ss_node_t *dq;
    const ss_tensor_t *ws;
    int64_t ns;

    memset(q, 0, sizeof(*q));
    if (wv >= g->n_values || g->values[wv].producer < 0)
        return 0;
    dq = &g->nodes[g->values[wv].producer];
    if (strcmp(dq->op_type, "DequantizeLinear") != 0 || dq->n_inputs < 2
        || dq->inputs[0] < 0 || dq->inputs[1] < 0
        || !ss__fz_const_of(p, dq->inputs[0], SS_DTYPE_I8)
        || !ss__fz_const_of(p, dq->inputs[1], SS_DTYPE_F32))
        return 0;
    if (dq->n_inputs > 2 && dq->inputs[2] >= 0) {
        const ss_tensor_t *z = ss__plan_tensor(p, dq->inputs[2]);
        const int8_t *zd = z->data;

        if (!ss__fz_const_of(p, dq->inputs[2], SS_DTYPE_I8))
            return 0;
        for (int64_t i = 0; i < ss_tensor_numel(z); i++)
            if (zd[i] != 0)
                return 0;
    }
    ws = ss__plan_tensor(p, dq->inputs[1]);
    ns = ss_tensor_numel(ws);
    if (ns != 1) {
        const ss_tensor_t *wq = ss__plan_tensor(p, dq->inputs[0]);
        int64_t ax = ss__attr_int(dq, "axis", 1);

        if (ax < 0)
            ax += wq->ndim;
        if (ns != n || ax != axis)
            return 0;
    }
    if ((q->scale = ss_malloc((size_t)n * sizeof(float))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for int8 scales");
    for (int64_t c = 0; c < n; c++)
        q->scale[c] = ((const float *)ws->data)[ns == 1 ? 0 : c];
    q->w = ss__plan_tensor(p, dq->inputs[0])->data;
    return 1;
}

/* x = DequantizeLinear(x_q, per-tensor scale, zero point): x_q's id. */
static int
find_qsrc(const ss__fz_t *fz, int xv, float *sx, int32_t *zx)
{
    const ss_plan_t *p = fz->p;
    const ss_step_t *st;
    int s = xv >= 0 ? fz->prod[xv] : -1;
    int xq;
    ss_dtype_t qt;

    if (s < 0 || p->vals[xv].alias >= 0)
        return -1;
    st = &p->steps[s];
    if (!ss__plan_is_op(st, "DequantizeLinear") || st->n_in < 2
        || st->in[0] < 0)
        return -1;
    xq = st->in[0];
    qt = ss__plan_tensor(p, xq)->dtype;
    if (ss__fz_is_const(p, xq) || (qt != SS_DTYPE_U8 && qt != SS_DTYPE_I8)
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32)
        || ss_tensor_numel(ss__plan_tensor(p, st->in[1])) != 1)
        return -1;
    *sx = *(const float *)ss__plan_tensor(p, st->in[1])->data;
    *zx = 0;
    if (st->n_in > 2 && st->in[2] >= 0) {
        const ss_tensor_t *z = ss__plan_tensor(p, st->in[2]);

        if (!ss__fz_const_of(p, st->in[2], qt) || ss_tensor_numel(z) != 1)
            return -1;
        *zx = z->dtype == SS_DTYPE_U8 ? *(const uint8_t *)z->data
                                      : *(const int8_t *)z->data;
    }
    if (!(*sx > 0.f) || !isfinite(*sx))
        return -1;
    return xq;
}

/* The chain's output is read by one per-tensor QuantizeLinear: absorbs it
 * as a last post-op; returns its output type (UNDEFINED: none). */
static ss_dtype_t
take_q(ss__fz_t *fz, ss__chain_t *c)
{
    ss_plan_t *p = fz->p;
    int s = ss__fz_single(fz, c->out);
    const ss_step_t *st;
    float sy;
    int32_t zy = 0;

    if (s < 0 || c->post.n >= SS_DNN_MAX_POST || c->n_steps >= SS_CHAIN_MAX)
        return SS_DTYPE_UNDEFINED;
    st = &p->steps[s];
    if (!ss__plan_is_op(st, "QuantizeLinear") || st->in[0] != c->out
        || st->n_in < 2 || st->out[0] < 0
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32)
        || ss_tensor_numel(ss__plan_tensor(p, st->in[1])) != 1)
        return SS_DTYPE_UNDEFINED;
    sy = *(const float *)ss__plan_tensor(p, st->in[1])->data;
    if (st->n_in > 2 && st->in[2] >= 0) {
        const ss_tensor_t *z = ss__plan_tensor(p, st->in[2]);

        if (!ss__fz_is_const(p, st->in[2]) || ss_tensor_numel(z) != 1)
            return SS_DTYPE_UNDEFINED;
        zy = z->dtype == SS_DTYPE_U8 ? *(const uint8_t *)z->data
                                     : *(const int8_t *)z->data;
    }
    if (!(sy > 0.f) || !isfinite(sy))
        return SS_DTYPE_UNDEFINED;
    if (!ss_dnn_postops_add_eltwise(&c->post, SS_DNN_LINEAR, 1.0f / sy,
                                    (float)zy))
        return SS_DTYPE_UNDEFINED;
    c->steps[c->n_steps++] = s;
    c->out = st->out[0];
    {
        size_t l = strlen(c->what);

        snprintf(c->what + l, sizeof(c->what) - l, "+Q");
    }
    return ss__plan_tensor(p, st->out[0])->dtype;
}

/* Bias in accumulator units and output scales. */
static int
int8_bias(const float *bias, const int8_t *w, int w_nk, int64_t n,
          int64_t k, float sx, int32_t zx, const float *sw, float **bacc,
          float **osc, ss_err_t *err)
{
    *bacc = ss_malloc((size_t)n * sizeof(float));
    *osc = ss_malloc((size_t)n * sizeof(float));
    if (*bacc == NULL || *osc == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for int8 biases");
    for (int64_t c = 0; c < n; c++) {
        double sum = 0, s = (double)sx * sw[c];

        if (zx != 0)
            for (int64_t i = 0; i < k; i++)
                sum += w_nk ? w[c * k + i] : w[i * n + c];
        (*osc)[c] = (float)s;
        (*bacc)[c] = (float)((bias ? bias[c] / s : 0.0) - zx * sum);
        if (!(s > 0) || !isfinite(s))
            return 0;
    }
    return 1;
}

static int
int8_linear(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    ss_dnn_qlinear_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    ss__fz_lin_t L;
    qw_t q = { 0 };
    float sx, *bacc = NULL, *osc = NULL;
    int32_t zx;
    int xq, rc;

    if ((rc = ss__fz_linear_shape(fz, s, &L, &c, err)) <= 0)
        goto done;
    rc = 0;
    if ((xq = find_qsrc(fz, p->steps[s].in[0], &sx, &zx)) < 0)
        goto done;
    if ((rc = find_qweight(p, L.wv, L.w_nk ? 0 : 1, L.n, &q, err)) <= 0)
        goto done;
    rc = 0;
    if ((rc = int8_bias(L.bias, q.w, L.w_nk, L.n, L.k, sx, zx, q.scale,
                        &bacc, &osc, err)) <= 0)
        goto done;
    snprintf(c.what, sizeof(c.what), "int8 %s",
             ss__plan_is_op(&p->steps[s], "Gemm") ? "Gemm" : "MatMul");
    ss__fz_linear_chain(fz, &c);
    d.dst_dtype = take_q(fz, &c);
    if (d.dst_dtype == SS_DTYPE_UNDEFINED)
        d.dst_dtype = SS_DTYPE_F32;
    d.src_dtype = ss__plan_tensor(p, xq)->dtype;
    d.w_dtype = SS_DTYPE_I8;
    d.m = L.m;
    d.k = L.k;
    d.n = L.n;
    d.w = q.w;
    d.w_nk = L.w_nk;
    d.bias = bacc;
    d.n_scales = (int)L.n;
    d.scales = osc;
    d.post = c.post;
    if ((rc = ss_dnn_qlinear_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    if ((rc = ss__fz_emit(fz, &c, prim, &xq, 1, err)) == 0)
        rc = 1;
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    ss_free(L.owned);
    ss_free(q.scale);
    ss_free(bacc);
    ss_free(osc);
    return rc;
}

/* The int8 conv at step `last` reads and writes NHWC (its primitive says
 * so, ss_dnn_prim_layout).  Its u8/s8 source gets a conversion here (the
 * layout pass, plan_layout.c, reorders f32 only).  An f32 result is left
 * NHWC, recorded as such, and so are f32 residuals it reads: the layout
 * pass converts them for readers that want another layout (a following
 * pool reads NHWC directly).  A u8/s8 result, a graph output or a value
 * with views is converted back to NCHW here. */
static int
nhwc_edges(ss__fz_t *fz, qpass_t *qp, int last, int xq, int y,
           ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    ss__plan_inslist_t *il = &qp->il;
    ss_dnn_convert_desc_t cd = { .ndim = ss__plan_tensor(p, y)->ndim };
    int xs, ys, rc;

    /* a source another int8 step wrote NHWC (or converted already) is
     * read as it is: the data stays int8 and NHWC between int8 convs, and
     * the NCHW copy is pruned when nothing else reads it */
    if ((xs = twin_of(qp, xq)) >= 0) {
        p->steps[last].in[0] = xs;
    } else {
        xs = ss__plan_add_value(p, xq, ss__plan_tensor(p, xq)->dtype,
                                SS_DNN_NHWC, err);
        if (xs < 0)
            return xs;
        p->steps[last].in[0] = xs;
        cd.src_dtype = cd.dst_dtype = ss__plan_tensor(p, xq)->dtype;
        memcpy(cd.dims, ss__plan_tensor(p, xq)->dims,
               (size_t)cd.ndim * sizeof(int64_t));
        cd.dst_nhwc = 1;
        if ((rc = ss__plan_ins_convert(p, il, last, 0, &cd, xq, xs,
                                       "to NHWC", err)) < 0)
            return rc;
        twin_add(qp, xq, xs);
    }
    if (ss__plan_tensor(p, y)->dtype == SS_DTYPE_F32 && !fz->is_out[y]
        && !ss__plan_has_views(p, y)) {
        p->vals[y].layout = SS_DNN_NHWC;
        return 0;
    }
    if ((ys = ss__plan_add_value(p, y, ss__plan_tensor(p, y)->dtype,
                                 SS_DNN_NHWC, err)) < 0)
        return ys;
    p->steps[last].out[0] = ys;
    cd.src_dtype = cd.dst_dtype = ss__plan_tensor(p, y)->dtype;
    memcpy(cd.dims, ss__plan_tensor(p, y)->dims,
           (size_t)cd.ndim * sizeof(int64_t));
    cd.dst_nhwc = 0;
    cd.src_nhwc = 1;
    if ((rc = ss__plan_ins_convert(p, il, last, 1, &cd, ys, y, "to NCHW",
                                   err)) < 0)
        return rc;
    twin_add(qp, y, ys);
    return 0;
}

/* A BatchNormalization right after an int8 conv: y = k (z - mean) + beta
 * with k = gamma / sqrt(var + eps) folds into the output scales (times k)
 * and the accumulator-unit bias (+ (beta / k - mean) / old scale). */
static int
absorb_bn(ss__fz_t *fz, ss__chain_t *c, int64_t oc, float *osc,
          float *bacc)
{
    ss_plan_t *p = fz->p;
    int bn = ss__fz_single(fz, c->out);
    const ss_step_t *b;
    const float *g, *beta, *mean, *var;
    float eps;

    if (bn < 0 || !ss__plan_is_op(&p->steps[bn], "BatchNormalization"))
        return 0;
    b = &p->steps[bn];
    if (b->in[0] != c->out || b->n_in != 5
        || ss__attr_int(b->node, "training_mode", 0) != 0)
        return 0;
    for (int k = 1; k < 5; k++)
        if (!ss__fz_const_of(p, b->in[k], SS_DTYPE_F32)
            || ss_tensor_numel(ss__plan_tensor(p, b->in[k])) != oc)
            return 0;
    for (int k = 1; k < b->n_out; k++)
        if (b->out[k] >= 0)
            return 0;
    g = ss__plan_tensor(p, b->in[1])->data;
    beta = ss__plan_tensor(p, b->in[2])->data;
    mean = ss__plan_tensor(p, b->in[3])->data;
    var = ss__plan_tensor(p, b->in[4])->data;
    eps = ss__attr_float(b->node, "epsilon", 1e-5f);
    for (int64_t o = 0; o < oc; o++)
        if (g[o] == 0.f || !(var[o] + eps > 0.f))
            return 0;
    for (int64_t o = 0; o < oc; o++) {
        double k = g[o] / sqrt((double)var[o] + eps);

        bacc[o] = (float)(bacc[o] + (beta[o] / k - mean[o]) / osc[o]);
        osc[o] = (float)(osc[o] * k);
    }
    c->steps[c->n_steps++] = bn;
    c->out = b->out[0];
    snprintf(c->what, sizeof(c->what), "int8 Conv+BN");
    return 1;
}

static int
int8_conv(ss__fz_t *fz, int s, qpass_t *qp, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_qconv_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    qw_t q = { 0 };
    float sx, *bacc = NULL, *osc = NULL;
    int32_t zx;
    int xq, last, y, rc = 0;

    if (!ss__fz_conv_shape(p, st, &d))
        return 0;
    if ((xq = find_qsrc(fz, st->in[0], &sx, &zx)) < 0)
        return 0;
    /* The zero point folds into the bias as z sum_k w over the whole
     * kernel, but a padded tap reads x_q = 0, i.e. the real value -z s_x,
     * where ONNX pads the real x with 0: every output the padding touches
     * would be off by z s_x times its padded taps' weights (a 3x3 conv
     * with pads 1 on a u8 activation of zero point 128: 55% of a 6x6
     * output wrong, up to 85% of its range).  A padded conv hands z to
     * oneDNN as its source zero point instead: its int8 kernels subtract
     * the weights' sums once (a compensation made with the packed
     * weights) and correct the border outputs for the taps that fall in
     * the padding, so padding counts as a real 0 as in ONNX. */
    if (zx != 0 && (d.g.pad_begin[0] || d.g.pad_begin[1] || d.g.pad_end[0]
                    || d.g.pad_end[1] || d.g.depth.pad_begin
                    || d.g.depth.pad_end)) {
        d.src_zp = zx;
        zx = 0;
    }
    if ((rc = find_qweight(p, st->in[1], 0, d.g.oc, &q, err)) <= 0)
        goto done;
    /* per output channel: [OC, K] with K = IC/group * KH * KW */
    if ((rc = int8_bias(d.bias, q.w, 1, d.g.oc,
                        ss_tensor_numel(ss__plan_tensor(p, st->in[1]))
                        / d.g.oc,
                        sx, zx, q.scale, &bacc, &osc, err)) <= 0)
        goto done;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "int8 Conv");
    if ((rc = absorb_bn(fz, &c, d.g.oc, osc, bacc)) < 0)
        goto done;
    c.dst_ndim = d.g.nsp + 2;
    memcpy(c.dst_dims, ss__plan_tensor(p, st->out[0])->dims,
           (size_t)c.dst_ndim * sizeof(int64_t));
    ss__fz_chain(fz, &c);
    d.dst_dtype = take_q(fz, &c);
    if (d.dst_dtype == SS_DTYPE_UNDEFINED)
        d.dst_dtype = SS_DTYPE_F32;
    d.src_dtype = ss__plan_tensor(p, xq)->dtype;
    d.w_dtype = SS_DTYPE_I8;
    d.w = q.w;
    d.bias = bacc;
    d.n_scales = (int)d.g.oc;
    d.scales = osc;
    d.post = c.post;
    if ((rc = ss_dnn_qconv_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    /* oneDNN 2.6 has fast int8 convs for NHWC only (on NCHW it takes its
     * reference code): convert the source to NHWC before and the result
     * back after.  When even that is slow, the plain fusion makes an f32
     * conv of the same QDQ (dequantized weights). */
    if (strncmp(ss_dnn_prim_impl(prim), "ref", 3) == 0) {
        ss_dnn_prim_free(prim);
        prim = NULL;
        d.nhwc = 1;
        if ((rc = ss_dnn_qconv_new(&d, &prim, err)) < 0) {
            rc = ss__fz_fallback(rc, err);
            goto done;
        }
        if (strncmp(ss_dnn_prim_impl(prim), "ref", 3) == 0) {
            rc = 0;
            goto done;
        }
    }
    last = ss__fz_chain_last(&c);
    y = c.out;
    if ((rc = ss__fz_emit(fz, &c, prim, &xq, 1, err)) < 0) {
        prim = NULL;
        goto done;
    }
    prim = NULL;
    rc = 1;
    if (d.nhwc && (rc = nhwc_edges(fz, qp, last, xq, y, err)) < 0)
        goto done;
    rc = 1;
done:
    ss_dnn_prim_free(prim);
    ss_free(q.scale);
    ss_free(bacc);
    ss_free(osc);
    return rc;
}

/* Whether every step but `self` that reads v is a reference DQ whose
 * result nothing reads any more (the int8 steps read v directly). */
static int
only_dead_dq(const ss_plan_t *p, int v, int self)
{
    if (ss__plan_is_graph_out(p, v))
        return 0;
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];
        int reads = 0;

        for (int k = 0; k < st->n_in; k++)
            reads |= st->in[k] == v;
        if (!reads || s == self)
            continue;
        if (!ss__plan_is_op(st, "DequantizeLinear") || st->out[0] < 0
            || ss__plan_is_graph_out(p, st->out[0]))
            return 0;
        for (int t = 0; t < p->n_steps; t++)
            for (int k = 0; k < p->steps[t].n_in; k++)
                if (p->steps[t].in[k] >= 0
                    && ss__plan_root(p, p->steps[t].in[k]) == st->out[0])
                    return 0;
    }
    return 1;
}

static int
graph_output(const ss_plan_t *p, int v)
{
    for (int i = 0; i < p->g->n_outputs; i++)
        if (p->g->outputs[i] == v)
            return 1;
    return 0;
}

/* When f32 value v is a Conv's result, through element-wise activations
 * the conv will fuse (Relu, Clip), the conv's input value; else -1. */
static int
conv_source(const ss_plan_t *p, int v)
{
    static const char *const acts[] = { "Relu", "Clip", "LeakyRelu" };
    const ss_graph_t *g = p->g;

    for (int hops = 0; hops < 4 && v >= 0 && v < g->n_values; hops++) {
        const ss_node_t *nd;
        size_t i;

        if (g->values[v].producer < 0)
            return -1;
        nd = &g->nodes[g->values[v].producer];
        if (strcmp(nd->op_type, "Conv") == 0)
            return nd->n_inputs > 0 ? nd->inputs[0] : -1;
        for (i = 0; i < sizeof(acts) / sizeof(acts[0]); i++)
            if (strcmp(nd->op_type, acts[i]) == 0)
                break;
        if (i == sizeof(acts) / sizeof(acts[0]) || nd->n_inputs < 1)
            return -1;
        v = nd->inputs[0];
    }
    return -1;
}

/* True when value v will be NHWC: recorded so by the int8 pass (an int8
 * conv's f32 result, a DQ of this pass), or a pool's or activation's
 * result whose source is (they keep their source's layout). */
static int
nhwc_behind(const ss_plan_t *p, int v)
{
    static const char *const follow[] = { "MaxPool", "AveragePool", "Relu",
                                          "Clip" };
    const ss_graph_t *g = p->g;

    for (int hops = 0; hops < 4 && v >= 0; hops++) {
        const ss_node_t *nd;
        size_t i;

        if (p->vals[ss__plan_root(p, v)].layout == SS_DNN_NHWC)
            return 1;
        if (v >= g->n_values || g->values[v].producer < 0)
            return 0;
        nd = &g->nodes[g->values[v].producer];
        for (i = 0; i < sizeof(follow) / sizeof(follow[0]); i++)
            if (strcmp(nd->op_type, follow[i]) == 0)
                break;
        if (i == sizeof(follow) / sizeof(follow[0]) || nd->n_inputs < 1)
            return 0;
        v = nd->inputs[0];
    }
    return 0;
}

/* A QuantizeLinear or DequantizeLinear left on its reference kernel, per
 * tensor with constant parameters: a oneDNN reorder with scales and zero
 * points instead (vectorized; the reference loop divides per element).
 *
 * An f32 conv behind a DQ (int8 activations, f32 weights: a layer some
 * tool left f32) read NCHW f32 and took oneDNN's gemm fallback: the
 * 28x28 CNN's conv 32 -> 64 at batch 32 ran 2.76 ms (0.35 in int8, 0.7
 * in f32 Winograd), the whole model 2.5x slower than f32.  So the DQ of
 * an int8 step's NHWC result reads that NHWC copy and writes f32 NHWC,
 * the conv runs NHWC (brgconv, 1.0-1.2 ms there), and the Q of its
 * result reads NHWC too (no reorder to NCHW between them).  The same Q
 * rule serves PTQ's own fallback (no Q/DQ before the f32 layer): that
 * conv reads an int8 conv's f32 NHWC result, through a pool, and runs
 * NHWC already; its result went to NCHW and was quantized back to NHWC
 * (0.16 + 0.34 ms of the same CNN's 1.9 with conv 2 in f32; now 0.06).
 * A first layer left f32 (one input channel) ran gemm and a 0.8 ms
 * quantizing reorder: 2.1 ms, now 0.27 + 0.12 (int8: 0.14). */
static int
qdq_reorder(ss_plan_t *p, int s, qpass_t *qp, ss_err_t *err)
{
    ss__plan_inslist_t *il = &qp->il;
    ss_step_t *st = &p->steps[s];
    int q = ss__plan_is_op(st, "QuantizeLinear");
    ss_dnn_convert_desc_t cd = { 0 };
    ss_dnn_prim_t *prim = NULL;
    const ss_tensor_t *x, *y;
    float sc;
    int32_t zp = 0;
    int rc, twin, skip = -1;

    if (!(q || ss__plan_is_op(st, "DequantizeLinear")) || st->n_in < 2
        || st->in[0] < 0 || st->out[0] < 0 || ss__fz_is_const(p, st->in[0])
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32)
        || ss_tensor_numel(ss__plan_tensor(p, st->in[1])) != 1)
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    y = ss__plan_tensor(p, st->out[0]);
    if ((q ? y : x)->dtype != SS_DTYPE_U8 && (q ? y : x)->dtype != SS_DTYPE_I8)
        return 0;
    if (x->ndim < 1 || x->ndim > SS_DNN_MAX_DIMS || ss_tensor_numel(x) < 1)
        return 0;
    sc = *(const float *)ss__plan_tensor(p, st->in[1])->data;
    if (!(sc > 0.f) || !isfinite(1.0f / sc))
        return 0;
    if (st->n_in > 2 && st->in[2] >= 0) {
        const ss_tensor_t *z = ss__plan_tensor(p, st->in[2]);

        if (!ss__fz_is_const(p, st->in[2]) || ss_tensor_numel(z) != 1)
            return 0;
        zp = z->dtype == SS_DTYPE_U8 ? *(const uint8_t *)z->data
                                     : *(const int8_t *)z->data;
    }
    /* oneDNN rounds after adding the zero point: round(x/s + z), which
     * equals ONNX's round(x/s) + z on ties only for an even z */
    if (q && (zp & 1))
        return 0;
    cd.src_dtype = x->dtype;
    cd.dst_dtype = y->dtype;
    cd.ndim = x->ndim;
    memcpy(cd.dims, x->dims, (size_t)x->ndim * sizeof(int64_t));
    cd.scale = q ? 1.0f / sc : sc;
    cd.dst_zp = q ? zp : 0;
    cd.src_zp = q ? 0 : zp;
    /* a DQ of an int8 step's NHWC result, for an f32 conv: NHWC in and
     * out (graph outputs and views need NCHW bytes) */
    if (!q && ss__lay_rank(x) && (twin = twin_of(qp, st->in[0])) >= 0
        && !graph_output(p, st->out[0])
        && !ss__plan_has_views(p, st->out[0])) {
        st->in[0] = twin;
        cd.src_nhwc = cd.dst_nhwc = 1;
        p->vals[st->out[0]].layout = SS_DNN_NHWC;
    }
    /* the result of an f32 conv reading NHWC (such a DQ's, or a pool's
     * behind an int8 conv: the conv runs NHWC then, conv_layouts) or few
     * channels (a first layer PTQ left f32): read NHWC, which the conv
     * then writes, instead of a reorder to NCHW and a quantizing one
     * back to NHWC.  Not when the source's NHWC bytes are nChw16c's (16
     * channels): the conv runs blocked, Winograd for a 3x3. */
    if (q && ss__lay_rank(x) && (twin = conv_source(p, st->in[0])) >= 0
        && ss__plan_tensor(p, twin)->ndim == x->ndim
        && ((nhwc_behind(p, twin)
             && !ss__lay_same(SS_DNN_NHWC, SS_DNN_BLOCKED,
                              ss__plan_tensor(p, twin)))
            || ss__plan_tensor(p, twin)->dims[1] < 16))
        cd.src_nhwc = 1;
    /* a Q whose result only an NHWC int8 conv reads: quantize straight
     * into the NHWC copy and drop the conversion queued for it */
    if (q && ss__lay_rank(x) && (twin = twin_of(qp, st->out[0])) >= 0
        && only_dead_dq(p, st->out[0], s)) {
        for (int i = 0; i < il->n; i++)
            if (il->v[i].st.n_out == 1 && il->v[i].st.out[0] == twin
                && il->v[i].st.in[0] == st->out[0]) {
                cd.dst_nhwc = 1;
                /* an int8 conv's f32 result is NHWC already */
                cd.src_nhwc |= p->vals[ss__plan_root(p, st->in[0])].layout
                               == SS_DNN_NHWC;
                skip = i;
                break;
            }
    }
    if ((rc = ss_dnn_convert_new(&cd, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    st->kind = SS_STEP_DNN;
    st->prim = prim;
    st->n_in = 1;
    snprintf(st->what, sizeof(st->what), q ? "Quantize" : "Dequantize");
    if (skip >= 0) {
        snprintf(st->what, sizeof(st->what), "Quantize>NHWC");
        st->out[0] = twin;
        ss__plan_step_clear(&il->v[skip].st);
        il->v[skip] = il->v[--il->n];
    }
    if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
    return 1;
}

int
ss__plan_int8(ss_plan_t *p, ss_err_t *err)
{
    ss__fz_t fz = { 0 };
    qpass_t qp = { 0 };
    int rc = 0;

    for (int s = 0; s < p->n_steps; s++)
        if ((rc = ss__qdq_hoist(p, s, err)) < 0)
            goto done;
    if (ss__fz_init(&fz, p) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to fuse");
        goto done;
    }
    for (int s = 0; s < p->n_steps; s++) {
        if ((rc = ss__qdq_pool(p, s, &qp, err)) < 0)
            goto done;
        if (p->steps[s].kind != SS_STEP_REF)
            continue;
        if ((rc = int8_linear(&fz, s, err)) < 0)
            goto done;
        if (rc == 0 && p->steps[s].kind == SS_STEP_REF
            && (rc = int8_conv(&fz, s, &qp, err)) < 0)
            goto done;
    }
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_REF
            && (rc = qdq_reorder(p, s, &qp, err)) < 0)
            goto done;
    rc = ss__plan_ins_apply(p, &qp.il, err);
done:
    ss__fz_close(&fz);
    ss__plan_ins_free(&qp.il);
    return rc;
}
