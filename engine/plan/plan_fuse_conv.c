/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The f32 fusion pass's convolution anchor, for every spatial rank: a
 * 1-D, 2-D or 3-D Conv (a BatchNormalization after it folded into its
 * weights, then the post-op chain of plan_chain.c: activations, a
 * residual Add; 2-D: a depthwise conv reading it, plan_fuse_dw.c) becomes
 * one oneDNN convolution (ss_dnn_conv_new, any rank too) in the layouts
 * the rules of plan_layout_rules.c pick.  plan_fuse.c runs it (and has
 * the design).
 *
 * 3-D convs chain in nCdhw16c / ndhwc as 2-D ones do in nChw16c / nhwc
 * (measured: bench/conv3d.py); 1-D ones run plain (a [N, C, W] value has
 * a transformer's [B, T, C] rank, which the layout rules leave alone).  A
 * 1-D or 3-D conv oneDNN runs only in its reference code stays on ours.
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ops/ops.h"
#include "engine/plan/internal.h"

static int
f32(const ss__fz_t *fz, int v)
{
    return v >= 0 && ss__plan_tensor(fz->p, v)->dtype == SS_DTYPE_F32;
}

/* Creates the conv in the first layouts oneDNN has a real kernel for:
 * the wanted dst, with the src in the conv's family (oneDNN's blocked
 * kernels read NCHW only for a few input channels, a first layer; a
 * reorder costs less than the gemm fallback); then src and dst both in
 * the family; then both NHWC; then NCHW.  Before them all, for a conv
 * that shrinks its input, the source's layout for both when the readers
 * want another (ss__lay_conv_keep).  The layout pass reorders the source
 * to what the winner reads. */
static int
conv_layouts(ss__fz_t *fz, ss_dnn_conv_desc_t *d, int in,
             const ss_tensor_t *x, const ss_tensor_t *y, int out,
             ss_dnn_prim_t **prim, ss_err_t *err)
{
    ss_dnn_layout_t fam = ss__lay_conv_family(x, y), want[5][2], keep;
    int n = 0, f, rc = SS_EUNSUPP, bin = 0;

    for (int i = 0; i < d->post.n; i++)
        bin |= d->post.op[i].kind == SS_DNN_PO_BINARY;
    want[n][1] = ss__lay_dst(fz, out);
    /* a binary post-op's tensor is in dst's layout: leave those alone */
    keep = bin ? SS_DNN_PLAIN : ss__lay_conv_keep(fz->p, in, y, want[n][1]);
    /* readers that want NCHW bytes (a Flatten's view, a graph output)
     * behind a source in a family layout: run in the source's family, or
     * NHWC (a kernel for any channel count) when the source is in the
     * other one, and let the layout pass reorder the output
     * (ss__plan_layout) -- the 28x28 CNN's last conv ran on oneDNN's gemm
     * fallback over an NCHW copy of its input, 18-33 ms of a 30 ms run at
     * batch 256; pruned to 24/48/48 channels its NHWC pool fed a conv of
     * the blocked family, and that conv took the fallback again */
    if (!bin && keep == SS_DNN_PLAIN && want[n][1] == SS_DNN_PLAIN
        && !ss__lay_same(fam, SS_DNN_PLAIN, y)
        && !ss__lay_same(ss__lay_of(fz->p, in), SS_DNN_PLAIN, x)
        && !ss__lay_same(fam, SS_DNN_PLAIN, x))
        want[n][1] = ss__lay_same(ss__lay_of(fz->p, in), fam, x)
                     ? fam : SS_DNN_NHWC;
    if (keep != SS_DNN_PLAIN) {
        want[n + 1][1] = want[n][1];
        want[n][0] = want[n][1] = keep;
        n++;
    }
    f = n;
    if (want[n][1] != SS_DNN_PLAIN) {
        if (want[n][1] == SS_DNN_NHWC)
            want[n][0] = SS_DNN_NHWC;
        else if (fam == SS_DNN_BLOCKED)
            want[n][0] = SS_DNN_BLOCKED;
        else    /* to blocked from C % 16 != 0: a first layer reads NCHW */
            want[n][0] = x->dims[1] < 16 ? SS_DNN_PLAIN : SS_DNN_NHWC;
        n++;
        if (want[f][0] != fam || want[f][1] != fam) {
            want[n][0] = want[n][1] = fam;
            n++;
        }
        /* e.g. groups of 8 channels: no blocked kernel, a brgconv one */
        if (fam != SS_DNN_NHWC
            && (want[f][0] != SS_DNN_NHWC || want[f][1] != SS_DNN_NHWC)) {
            want[n][0] = want[n][1] = SS_DNN_NHWC;
            n++;
        }
    }
    want[n][0] = want[n][1] = SS_DNN_PLAIN;
    n++;
    for (int i = 0; i < n; i++) {
        d->src_layout = want[i][0];
        d->dst_layout = want[i][1];
        if ((rc = ss_dnn_conv_new(d, prim, err)) == SS_ENOMEM)
            return rc;
        if (rc == 0 && (i == n - 1 || !ss__fz_slow(*prim)))
            return 0;
        ss_dnn_prim_free(*prim);
        *prim = NULL;
        if (i < n - 1)
            ss_err_clear(err);
    }
    return rc;
}

/* A BatchNormalization right after the conv that chain c starts (oc
 * output channels, weights *w of nw values, bias *bias or NULL): folded
 * into new weights and bias (*wf, *bf, the caller's to free; *w and *bias
 * point at them) and added to c. */
int
ss__fz_conv_bn(ss__fz_t *fz, ss__chain_t *c, int64_t oc, const float **w,
               int64_t nw, const float **bias, float **wf, float **bf,
               ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    int bn = ss__fz_single(fz, c->out), rc;
    const ss_step_t *b;
    size_t l;

    if (bn < 0 || !ss__plan_is_op(&p->steps[bn], "BatchNormalization"))
        return 0;
    b = &p->steps[bn];
    if (b->in[0] != c->out || b->n_in != 5 || !ss__fz_only_out0(fz, b)
        || ss__attr_int(b->node, "training_mode", 0) != 0)
        return 0;
    for (int k = 1; k < 5; k++)
        if (!ss__fz_is_const(p, b->in[k]) || !f32(fz, b->in[k])
            || ss_tensor_numel(ss__plan_tensor(p, b->in[k])) != oc)
            return 0;
    if ((rc = ss__fz_fold_bn(p, b, oc, *w, nw, *bias, wf, bf, err)) < 0)
        return rc;
    *w = *wf;
    *bias = *bf;
    c->steps[c->n_steps++] = bn;
    c->out = b->out[0];
    l = strlen(c->what);
    snprintf(c->what + l, sizeof(c->what) - l, "+BN");
    return 1;
}

/* The window attributes of an nsp-D Conv or pooling node n in the terms
 * of ss_dnn_conv_desc_t / ss_dnn_pool_desc_t: the H and W entries of
 * stride, dilation and pads (1-D: W only, H 1 / 0), the depth axis's in
 * depth (3-D); kernel_shape in ks (nsp values, 0 when not given).  0 when
 * an attribute is malformed. */
int
ss__fz_window(const ss_node_t *n, int nsp, int64_t stride[2],
              int64_t dilation[2], int64_t pad_begin[2], int64_t pad_end[2],
              int64_t ks[3], ss_dnn_depth_t *depth)
{
    int64_t st[3], dl[3], pads[6];
    int h = nsp - 2;        /* H's index in ONNX's arrays (-1: none) */

    if (nsp < 1 || nsp > 3 || !ss__fz_notset(n)
        || !ss__fz_attr_n(n, "strides", 1, st, nsp)
        || !ss__fz_attr_n(n, "dilations", 1, dl, nsp)
        || !ss__fz_attr_n(n, "pads", 0, pads, 2 * nsp)
        || !ss__fz_attr_n(n, "kernel_shape", 0, ks, nsp))
        return 0;
    for (int i = 0; i < 2; i++) {
        int o = h + i;      /* ONNX index of H (i 0), W (i 1) */

        stride[i] = o < 0 ? 1 : st[o];
        dilation[i] = o < 0 ? 1 : dl[o];
        pad_begin[i] = o < 0 ? 0 : pads[o];
        pad_end[i] = o < 0 ? 0 : pads[nsp + o];
    }
    if (nsp == 3) {
        depth->stride = st[0];
        depth->dilation = dl[0];
        depth->pad_begin = pads[0];
        depth->pad_end = pads[3];
    }
    return 1;
}

/* The post-op chain of c (the conv or deconv d from step s, x to y
 * before its chain; d's weights and bias set) and the primitive, emitted
 * as one step: 1 when emitted, 0 when the op stays on its reference
 * kernel. */
static int
conv_finish(ss__fz_t *fz, ss__chain_t *c, ss_dnn_conv_desc_t *d, int s,
            const ss_tensor_t *x, const ss_tensor_t *y, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    int in = p->steps[s].in[0], rc;
    ss_dnn_prim_t *prim = NULL;

    c->dst_ndim = y->ndim;
    memcpy(c->dst_dims, y->dims, (size_t)y->ndim * sizeof(int64_t));
    ss__fz_chain(fz, c);
    d->post = c->post;
    if (d->nsp == 2 && !d->transposed
        && (rc = ss__fuse_conv_dw(fz, c, d, in, err)) != 0)
        return rc;
    if ((rc = conv_layouts(fz, d, in, x, y, c->out, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    /* oneDNN's reference code for a 1-D or 3-D conv (or any deconv) is no
     * faster than ours (engine/ops/conv.c, convtranspose.c), which
     * computes the same values */
    if ((d->nsp != 2 || d->transposed) && ss__fz_slow(prim)) {
        ss_dnn_prim_free(prim);
        return 0;
    }
    p->vals[c->out].layout = ss_dnn_prim_layout(prim, -1);
    rc = ss__fz_emit(fz, c, prim, &in, 1, err);
    return rc < 0 ? rc : 1;
}

/* The shape fields every rank shares: n, ic, ih, iw, kh, kw of x and w
 * (1-D: ih, kh 1; 3-D: the depth axis's in and k). */
static void
conv_dims(ss_dnn_conv_desc_t *d, const ss_tensor_t *x, const ss_tensor_t *w)
{
    int nd = x->ndim;

    d->nsp = nd - 2;
    d->n = x->dims[0];
    d->ic = x->dims[1];
    d->ih = d->nsp == 1 ? 1 : x->dims[nd - 2];
    d->iw = x->dims[nd - 1];
    d->kh = d->nsp == 1 ? 1 : w->dims[nd - 2];
    d->kw = w->dims[nd - 1];
    if (d->nsp == 3) {
        d->depth.in = x->dims[2];
        d->depth.k = w->dims[2];
    }
}

/* Step s's Conv input 0 and weights, f32 with the weights (and a bias)
 * constant, and its output; NULL x when it is no such node. */
static void
conv_operands(ss__fz_t *fz, int s, const char *op, const ss_tensor_t **x,
              const ss_tensor_t **w, const ss_tensor_t **y,
              const float **bias)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];

    *x = NULL;
    if (!ss__plan_is_op(st, op) || st->n_in < 2 || !f32(fz, st->in[0])
        || !f32(fz, st->in[1]) || !ss__fz_is_const(p, st->in[1]))
        return;
    if (st->n_in > 2 && st->in[2] >= 0
        && (!ss__fz_is_const(p, st->in[2]) || !f32(fz, st->in[2])))
        return;
    *w = ss__plan_tensor(p, st->in[1]);
    *y = ss__plan_tensor(p, st->out[0]);
    *bias = st->n_in > 2 && st->in[2] >= 0
            ? ss__plan_tensor(p, st->in[2])->data : NULL;
    *x = ss__plan_tensor(p, st->in[0]);
    if ((*x)->ndim < 3 || (*x)->ndim > 5 || (*w)->ndim != (*x)->ndim
        || (*y)->ndim != (*x)->ndim)
        *x = NULL;
}

int
ss__fz_conv_geom(const ss_plan_t *p, const ss_step_t *st,
                 ss_dnn_conv_desc_t *d)
{
    const ss_tensor_t *x = ss__plan_tensor(p, st->in[0]);
    const ss_tensor_t *w = ss__plan_tensor(p, st->in[1]);
    int64_t ks[3];
    int nd = x->ndim, nsp = nd - 2;

    if (nd < 3 || nd > 5 || w->ndim != nd
        || ss__plan_tensor(p, st->out[0])->ndim != nd
        || !ss__fz_window(st->node, nsp, d->stride, d->dilation,
                          d->pad_begin, d->pad_end, ks, &d->depth))
        return 0;
    for (int i = 0; i < nsp; i++)
        if (ks[i] && ks[i] != w->dims[2 + i])
            return 0;
    conv_dims(d, x, w);
    d->oc = w->dims[0];
    d->group = ss__attr_int(st->node, "group", 1);
    return 1;
}

int
ss__fuse_conv(ss__fz_t *fz, int s, ss_err_t *err)
{
    static const char *const what[4] = { "", "Conv1d", "Conv", "Conv3d" };
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_conv_desc_t d = { 0 };
    ss__chain_t c;
    const ss_tensor_t *x, *w, *y;
    float *wf = NULL, *bf = NULL;
    int rc = 0, nsp;

    conv_operands(fz, s, "Conv", &x, &w, &y, &d.bias);
    if (x == NULL)
        return 0;
    nsp = x->ndim - 2;
    if (!ss__fz_conv_geom(p, st, &d))
        return 0;
    d.w = w->data;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], what[nsp]);
    if ((rc = ss__fz_conv_bn(fz, &c, d.oc, &d.w, ss_tensor_numel(w), &d.bias,
                             &wf, &bf, err)) >= 0)
        rc = conv_finish(fz, &c, &d, s, x, y, err);
    ss_free(wf);
    ss_free(bf);
    return rc;
}

/* ConvTranspose as oneDNN's deconvolution, in the layouts a Conv of the
 * same shapes gets, so a decoder's upsampling chains blocked with its
 * convs.  The geometry (pads from auto_pad / output_shape, output sizes)
 * is the reference kernel's, ss__ops_convt_geom; what oneDNN cannot run
 * (an output a stride or more past the window, its reference code for a
 * shape) stays on that kernel, which the plan dump names "ref
 * ConvTranspose". */
int
ss__fuse_convt(ss__fz_t *fz, int s, ss_err_t *err)
{
    static const char *const what[4] = { "", "ConvTranspose1d",
                                         "ConvTranspose", "ConvTranspose3d" };
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_conv_desc_t d = { 0 };
    ss__ops_convt_t g;
    ss__chain_t c;
    const ss_tensor_t *x, *w, *y;
    ss_err_t e = { 0 };
    int nsp, h;

    conv_operands(fz, s, "ConvTranspose", &x, &w, &y, &d.bias);
    if (x == NULL || ss__ops_convt_geom(st->node, x, w, &g, &e) < 0)
        return 0;
    nsp = g.nsp;
    h = nsp - 2;            /* H's index in g's arrays (-1: none) */
    conv_dims(&d, x, w);
    for (int i = 0; i < 2; i++) {
        int o = h + i;

        d.stride[i] = o < 0 ? 1 : g.s[o];
        d.dilation[i] = o < 0 ? 1 : g.d[o];
        d.pad_begin[i] = o < 0 ? 0 : g.pb[o];
    }
    if (nsp == 3) {
        d.depth.stride = g.s[0];
        d.depth.dilation = g.d[0];
        d.depth.pad_begin = g.pb[0];
    }
    for (int i = 0; i < nsp; i++)
        if ((d.tout[i] = g.out[i]) != y->dims[2 + i])
            return 0;
    d.transposed = 1;
    d.oc = g.M;
    d.group = g.group;
    d.w = w->data;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], what[nsp]);
    return conv_finish(fz, &c, &d, s, x, y, err);
}
