/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, training: convolution forward with run-time
 * weights, its backward by data and by weights, matmuls of run-time
 * operands, and softmax forward and backward for training (the trainer
 * of compress/train/ calls these; inference packs its weights once and
 * uses ss_dnn_conv_new instead).
 *
 * Every argument is a run-time pointer in the dense layout the trainer
 * keeps (NCHW activations, [OC, IC/G, KH, KW] weights), so nothing is
 * packed and the weights may change between runs.  The backward
 * primitives need the forward one's descriptor as a hint; each
 * constructor makes it again (cheap: no primitive is created for it).
 *
 * Blocked layouts.  Plain NCHW activations and OIHW weights send oneDNN
 * to its gemm-based convolutions (x64:gemm:jit).  ss_dnn_conv_train_pick
 * asks the forward with format_tag any and reports which activation
 * layouts it chose; ss_dnn_conv_train_blk_new then builds each pass with
 * the activations in those layouts (the backward's diff tensors in the
 * forward's) and the weights in the layout the primitive picks, plus
 * a reorder from (or, for backward by weights, back to) the trainer's
 * dense f32 weights, which stay the optimizer's flat master copy.
 * Measured on the CNN fixture (batch 64, one thread): its 14 conv calls
 * of a step take 4.33 ms in f32 and 4.42 ms in bf16 on NCHW, 0.99 and
 * 0.72 ms blocked (jit:avx512_core, jit_bf16:avx512_core_bf16).
 *
 * bf16 (mixed precision): the convolution passes and the matmul take
 * bf16 operands and write f32 results (oneDNN accumulates in f32), so the
 * trainer's gradients and master weights never round to bf16 more than
 * once: only the operands of a product are rounded, which is what makes
 * bf16 training track f32 without loss scaling (bf16 has f32's exponent
 * range; what fp16 must scale to keep from underflowing, bf16 keeps).
 *
 * THREADS: [any]; everything here touches only the object being built.
 */

#include "config.h"

#include <string.h>

#include "engine/dnnl/internal.h"

/* The memory descriptors and window of d, and the forward-training
 * primitive descriptor the backward ones take as a hint. */
typedef struct conv_mds {
    dnnl_memory_desc_t src, w, bias, dst;
    ss__dnn_window_t win;
    int64_t dd[4];
    int64_t wd[6];                  /* dense weight dims, wn of them */
    int wn;
    dnnl_convolution_desc_t fwd;
    dnnl_primitive_desc_t fwd_pd;   /* owned */
} conv_mds_t;

/* The types of the pass's operands: bf16 rounds the two it reads; what
 * it writes is f32, or for an activation (FWD's dst, BWD_DATA's
 * diff_src) bf16 when d->out_dtype asks (the trainer's bf16
 * activations).  src, w, dst are the forward's names. */
static void
conv_types(const ss_dnn_conv_desc_t *d, ss_dnn_conv_pass_t pass,
           dnnl_data_type_t *src, dnnl_data_type_t *w, dnnl_data_type_t *dst)
{
    dnnl_data_type_t lo = d->dtype == SS_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t out = lo == dnnl_bf16 && d->out_dtype == SS_DTYPE_BF16
                         ? dnnl_bf16 : dnnl_f32;

    *src = *w = *dst = lo;
    if (pass == SS_DNN_CONV_FWD)
        *dst = out;
    else if (pass == SS_DNN_CONV_BWD_DATA)
        *src = out;
    else
        *w = dnnl_f32;
}

/* How conv_mds describes the tensors: all dense (NCHW, [G,] OIHW); all
 * format any (oneDNN picks); activations in d's src/dst layouts and
 * weights any. */
enum { CM_DENSE = 0, CM_ANY, CM_LAYOUT };

/* An activation's descriptor under mode (l: its layout in CM_LAYOUT). */
static int
act_md(dnnl_memory_desc_t *md, const int64_t *dims, dnnl_data_type_t dt,
       int mode, ss_dnn_layout_t l, ss_err_t *err, const char *what)
{
    if (mode == CM_ANY)
        return ss__dnn_md_any(md, 4, dims, dt, err, what);
    return ss__dnn_md_layout(md, 4, dims, dt,
                             mode == CM_LAYOUT ? l : SS_DNN_PLAIN, err, what);
}

static int
w_md(dnnl_memory_desc_t *md, int n, const int64_t *dims, dnnl_data_type_t dt,
     int mode, ss_err_t *err, const char *what)
{
    if (mode == CM_DENSE)
        return ss__dnn_md_dense(md, n, dims, dt, err, what);
    return ss__dnn_md_any(md, n, dims, dt, err, what);
}

static int
conv_mds(conv_mds_t *m, const ss_dnn_conv_desc_t *d, ss_dnn_conv_pass_t pass,
         int bias, int mode, const char *what, ss_err_t *err)
{
    ss_dnn_layout_t sl = d->src_layout, dl = d->dst_layout;
    int64_t g = d->group ? d->group : 1;
    int64_t sd[4] = { d->n, d->ic, d->ih, d->iw }, k[2] = { d->kh, d->kw };
    int64_t wd[6];
    dnnl_data_type_t st, wt, dt;
    dnnl_memory_desc_t hs, hw, hd;
    int wn, rc;

    memset(m, 0, sizeof(*m));
    if (d->dtype != SS_DTYPE_F32 && d->dtype != SS_DTYPE_BF16 &&
        d->dtype != 0)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: dtype %d", what,
                          (int)d->dtype);
    conv_types(d, pass, &st, &wt, &dt);
    if (d->w || d->bias || d->post.n ||
        (mode != CM_LAYOUT && (d->src_layout || d->dst_layout)))
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: weights, bias, "
                          "post-ops and layouts are not descriptor fields "
                          "here", what);
    if (d->nsp != 0 && d->nsp != 2)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: 2-D only", what);
    if (g < 1 || d->n < 1 || d->ic < 1 || d->ih < 1 || d->iw < 1 ||
        d->oc < 1 || d->kh < 1 || d->kw < 1 || d->ic % g || d->oc % g)
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape", what);
    if ((rc = ss__dnn_window(&m->win, d->ih, d->iw, k, d->stride,
                             d->dilation, d->pad_begin, d->pad_end, err,
                             what)) < 0)
        return rc;
    if (m->win.out[0] < 1 || m->win.out[1] < 1)
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: the window does not "
                          "fit", what);
    m->dd[0] = d->n;
    m->dd[1] = d->oc;
    m->dd[2] = m->win.out[0];
    m->dd[3] = m->win.out[1];
    wn = ss__dnn_conv_wdims(g, d->oc, d->ic, 2, k, wd);
    memcpy(m->wd, wd, sizeof(wd));
    m->wn = wn;
    if ((rc = act_md(&m->src, sd, st, mode, sl, err, what)) < 0 ||
        (rc = act_md(&m->dst, m->dd, dt, mode, dl, err, what)) < 0 ||
        (rc = w_md(&m->w, wn, wd, wt, mode, err, what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->bias, 1, &d->oc, dnnl_f32, err,
                               what)) < 0)
        return rc;
    /* the hint is the forward the trainer runs, whatever this pass is */
    conv_types(d, SS_DNN_CONV_FWD, &st, &wt, &dt);
    if ((rc = act_md(&hs, sd, st, mode, sl, err, what)) < 0 ||
        (rc = act_md(&hd, m->dd, dt, mode, dl, err, what)) < 0 ||
        (rc = w_md(&hw, wn, wd, wt, mode, err, what)) < 0)
        return rc;
    rc = ss__dnn_check(dnnl_dilated_convolution_forward_desc_init(
                           &m->fwd, dnnl_forward_training,
                           dnnl_convolution_direct, &hs, &hw,
                           bias ? &m->bias : NULL, &hd, m->win.strides,
                           m->win.dil, m->win.pl, m->win.pr),
                       err, "dnnl_dilated_convolution_forward_desc_init",
                       what);
    if (rc < 0)
        return rc;
    return ss__dnn_pd(&m->fwd, NULL, &m->fwd_pd, err, what);
}

int
ss__dnn_bwd_pd(ss__dnn_build_t *b, const_dnnl_op_desc_t od,
       const_dnnl_primitive_desc_t hint, ss_err_t *err)
{
    dnnl_engine_t eng;
    int rc;

    if ((rc = ss__dnn_engine(&eng, err)) < 0)
        return rc;
    return ss__dnn_check(dnnl_primitive_desc_create(&b->pd, od, b->attr,
                                                    eng, hint),
                         err, "dnnl_primitive_desc_create", b->what);
}

/* The names of the passes' primitives, dense (CM_DENSE) and blocked
 * (CM_LAYOUT). */
static const char *const pass_names[2][3] = {
    { "convolution (training)", "convolution backward data",
      "convolution backward weights" },
    { "convolution (training, blocked)",
      "convolution backward data (blocked)",
      "convolution backward weights (blocked)" }
};

/* Builds pass's primitive into b (started, named by pass_names) with the
 * tensors described as mode says (CM_DENSE or CM_LAYOUT); m keeps the
 * descriptors (and the forward's pd: the caller destroys it) for the
 * caller's queries.  Forward: src, weights (, bias) -> dst; backward by
 * data: diff_dst, weights -> diff_src; by weights: src, diff_dst ->
 * diff_weights (no bias: the trainer sums dB itself). */
static int
conv_pass(ss__dnn_build_t *b, conv_mds_t *m, const ss_dnn_conv_desc_t *d,
          ss_dnn_conv_pass_t pass, int bias, int mode, ss_err_t *err)
{
    static const int fwd_in[] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS,
                                  DNNL_ARG_BIAS };
    static const int bd_in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS };
    static const int bw_in[] = { DNNL_ARG_SRC, DNNL_ARG_DIFF_DST };
    dnnl_convolution_desc_t od;
    int rc;

    bias = pass == SS_DNN_CONV_FWD && bias;
    if ((rc = conv_mds(m, d, pass, bias, mode, b->what, err)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b->attr,
                           err, b->what)) < 0)
        return rc;
    switch (pass) {
    case SS_DNN_CONV_FWD:
        ss__dnn_set_dst(b->p, 4, m->dd);
        return ss__dnn_build_op(b, &m->fwd, fwd_in, bias ? 3 : 2, NULL, 0,
                                DNNL_ARG_DST, NULL, err);
    case SS_DNN_CONV_BWD_DATA:
        ss__dnn_set_dst(b->p, 4, m->src.dims);
        rc = ss__dnn_check(dnnl_dilated_convolution_backward_data_desc_init(
                               &od, dnnl_convolution_direct, &m->src, &m->w,
                               &m->dst, m->win.strides, m->win.dil,
                               m->win.pl, m->win.pr),
                           err, "dnnl_dilated_convolution_backward_data_"
                           "desc_init", b->what);
        if (rc < 0 || (rc = ss__dnn_bwd_pd(b, &od, m->fwd_pd, err)) < 0)
            return rc;
        return ss__dnn_build_op(b, NULL, bd_in, 2, NULL, 0,
                                DNNL_ARG_DIFF_SRC, NULL, err);
    default:
        /* the dense weight dims: m->w's in every mode */
        ss__dnn_set_dst(b->p, m->wn, m->wd);
        rc = ss__dnn_check(
            dnnl_dilated_convolution_backward_weights_desc_init(
                &od, dnnl_convolution_direct, &m->src, &m->w, NULL, &m->dst,
                m->win.strides, m->win.dil, m->win.pl, m->win.pr),
            err, "dnnl_dilated_convolution_backward_weights_desc_init",
            b->what);
        if (rc < 0 || (rc = ss__dnn_bwd_pd(b, &od, m->fwd_pd, err)) < 0)
            return rc;
        return ss__dnn_build_op(b, NULL, bw_in, 2, NULL, 0,
                                DNNL_ARG_DIFF_WEIGHTS, NULL, err);
    }
}

int
ss_dnn_conv_train_new(const ss_dnn_conv_desc_t *d, ss_dnn_conv_pass_t pass,
                      int bias, ss_dnn_prim_t **out, ss_err_t *err)
{
    ss__dnn_build_t b;
    conv_mds_t m = { 0 };
    int rc;

    if (pass < SS_DNN_CONV_FWD || pass > SS_DNN_CONV_BWD_WEIGHTS) {
        *out = NULL;
        return ss_err_set(err, SS_EINVAL, "oneDNN convolution: pass %d",
                          (int)pass);
    }
    if ((rc = ss__dnn_build_start(&b, pass_names[0][pass], err)) >= 0)
        rc = conv_pass(&b, &m, d, pass, bias, CM_DENSE, err);
    if (m.fwd_pd)
        dnnl_primitive_desc_destroy(m.fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}

/* The layout of md among those the trainer keeps (PLAIN, BLOCKED, NHWC),
 * or -1 when it is none of them (a padded or other blocking). */
static int
md_layout(const dnnl_memory_desc_t *md, const int64_t *dims)
{
    static const ss_dnn_layout_t ls[] = { SS_DNN_PLAIN, SS_DNN_BLOCKED,
                                          SS_DNN_NHWC };
    dnnl_memory_desc_t c;

    for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++) {
        if (ls[i] == SS_DNN_BLOCKED && !ss_dnn_blocked_ok(4, dims))
            continue;
        if (ss__dnn_md_layout(&c, 4, dims, md->data_type, ls[i], NULL,
                              "") == 0 &&
            dnnl_memory_desc_equal(md, &c))
            return (int)ls[i];
    }
    return -1;
}

int
ss_dnn_conv_train_pick(const ss_dnn_conv_desc_t *d, ss_dnn_layout_t *src,
                       ss_dnn_layout_t *dst, ss_err_t *err)
{
    const char *what = "convolution (layout pick)";
    ss_dnn_conv_desc_t a = *d;
    const dnnl_memory_desc_t *q;
    conv_mds_t m;
    int l, rc;

    *src = *dst = SS_DNN_PLAIN;
    a.src_layout = a.dst_layout = SS_DNN_PLAIN;
    if ((rc = conv_mds(&m, &a, SS_DNN_CONV_FWD, 0, CM_ANY, what, err)) < 0)
        goto done;
    q = dnnl_primitive_desc_query_md(m.fwd_pd, dnnl_query_src_md, 0);
    l = q ? md_layout(q, m.src.dims) : -1;
    /* oneDNN padded the channels or blocked them by 8: the nearest of
     * ours (BLOCKED wants C % 16 == 0; NHWC runs the same brgconv
     * kernels as nChw16c, ~25% slower, for any C) */
    *src = l >= 0 ? (ss_dnn_layout_t)l
         : ss_dnn_blocked_ok(4, m.src.dims) ? SS_DNN_BLOCKED : SS_DNN_NHWC;
    q = dnnl_primitive_desc_query_md(m.fwd_pd, dnnl_query_dst_md, 0);
    l = q ? md_layout(q, m.dd) : -1;
    *dst = l >= 0 ? (ss_dnn_layout_t)l
         : ss_dnn_blocked_ok(4, m.dd) ? SS_DNN_BLOCKED : SS_DNN_NHWC;
done:
    if (m.fwd_pd)
        dnnl_primitive_desc_destroy(m.fwd_pd);
    return rc;
}

/* A reorder of one tensor from md to md (weights: dense <-> the
 * primitive's), adding into the destination when acc. */
static int
md_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
           int acc, int nd, const int64_t *dims, ss_dnn_prim_t **out,
           ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_FROM };
    ss_dnn_postops_t po;
    dnnl_engine_t eng;
    ss__dnn_build_t b;
    int rc;

    memset(&po, 0, sizeof(po));
    if (acc) {
        po.n = 1;
        po.op[0].kind = SS_DNN_PO_SUM;
        po.op[0].alpha = 1.0f;
    }
    if ((rc = ss__dnn_build_start(&b, acc ? "weights reorder (adding)"
                                          : "weights reorder", err)) < 0)
        goto done;
    ss__dnn_set_dst(b.p, nd, dims);
    if ((rc = ss__dnn_engine(&eng, err)) < 0 ||
        (rc = ss__dnn_attr(&po, nd, dims, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_reorder_primitive_desc_create(&b.pd, from, eng,
                                                          to, eng, b.attr),
                       err, "dnnl_reorder_primitive_desc_create", b.what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 1, NULL, 0, DNNL_ARG_TO, NULL, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_conv_train_blk_new(const ss_dnn_conv_desc_t *d,
                          ss_dnn_conv_pass_t pass, int bias, int acc,
                          ss_dnn_conv_blk_t *out, ss_err_t *err)
{
    dnnl_memory_desc_t dense;
    const dnnl_memory_desc_t *q;
    ss__dnn_build_t b;
    conv_mds_t m = { 0 };
    int rc;

    memset(out, 0, sizeof(*out));
    if (pass < SS_DNN_CONV_FWD || pass > SS_DNN_CONV_BWD_WEIGHTS)
        return ss_err_set(err, SS_EINVAL, "oneDNN convolution: pass %d",
                          (int)pass);
    if ((rc = ss__dnn_build_start(&b, pass_names[1][pass], err)) < 0)
        goto done;
    rc = conv_pass(&b, &m, d, pass, bias, CM_LAYOUT, err);
    if (rc < 0)
        goto done;
    /* the weights as the primitive reads (writes) them, and the reorder
     * between them and the trainer's dense f32 copy */
    q = dnnl_primitive_desc_query_md(
        b.pd, pass == SS_DNN_CONV_BWD_WEIGHTS ? dnnl_query_diff_weights_md
                                              : dnnl_query_weights_md, 0);
    if (q == NULL) {
        rc = ss_err_set(err, SS_EDNNL, "oneDNN %s: no weights descriptor",
                        b.what);
        goto done;
    }
    out->w_bytes = dnnl_memory_desc_get_size(q);
    out->w_bf16 = q->data_type == dnnl_bf16;
    if ((rc = ss__dnn_md_dense(&dense, m.wn, m.wd, dnnl_f32, err,
                               b.what)) < 0)
        goto done;
    if (pass == SS_DNN_CONV_BWD_WEIGHTS)
        rc = md_reorder(q, &dense, acc, m.wn, m.wd, &out->w_reorder, err);
    else
        rc = md_reorder(&dense, q, 0, m.wn, m.wd, &out->w_reorder, err);
done:
    if (m.fwd_pd)
        dnnl_primitive_desc_destroy(m.fwd_pd);
    rc = ss__dnn_build_end(&b, rc, &out->prim);
    if (rc < 0) {
        ss_dnn_prim_free(out->w_reorder);
        out->w_reorder = NULL;
    }
    return rc;
}

int
ss_dnn_softmax_train_new(const ss_dnn_softmax_desc_t *d, int bwd,
                         ss_dnn_prim_t **out, ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_DST };
    static const int fin[] = { DNNL_ARG_SRC };
    dnnl_softmax_v2_desc_t fwd, od;
    dnnl_primitive_desc_t fwd_pd = NULL;
    dnnl_alg_kind_t alg = d->log ? dnnl_softmax_log : dnnl_softmax_accurate;
    dnnl_data_type_t yt = d->y_dtype == SS_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t xt = d->dtype == SS_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t md, ymd;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, bwd ? (d->log ? "logsoftmax backward"
                                                    : "softmax backward")
                                          : (d->log ? "logsoftmax training"
                                                    : "softmax training"),
                                  err)) < 0)
        goto done;
    if ((d->dtype != SS_DTYPE_F32 && d->dtype != SS_DTYPE_BF16 &&
         d->dtype != 0) ||
        (d->y_dtype != SS_DTYPE_F32 && d->y_dtype != SS_DTYPE_BF16 &&
         d->y_dtype != 0) || (xt == dnnl_bf16 && yt != dnnl_bf16) ||
        d->ndim < 1 ||
        d->ndim > SS_DNN_MAX_DIMS || d->axis < 0 || d->axis >= d->ndim) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: dtype %d / %d, axis %d "
                        "of %d dims", b.what, (int)d->dtype,
                        (int)d->y_dtype, d->axis, d->ndim);
        goto done;
    }
    ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((rc = ss__dnn_md_dense(&md, d->ndim, d->dims, xt, err,
                               b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&ymd, d->ndim, d->dims, yt, err,
                               b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_softmax_v2_forward_desc_init(
                           &fwd, dnnl_forward_training, alg, &md, &ymd,
                           d->axis),
                       err, "dnnl_softmax_v2_forward_desc_init", b.what);
    if (rc < 0)
        goto done;
    if (!bwd) {
        rc = ss__dnn_build_op(&b, &fwd, fin, 1, NULL, 0, DNNL_ARG_DST, NULL,
                              err);
        goto done;
    }
    if ((rc = ss__dnn_pd(&fwd, NULL, &fwd_pd, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_softmax_v2_backward_desc_init(
                           &od, alg, &md, &ymd, &ymd, d->axis),
                       err, "dnnl_softmax_v2_backward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_bwd_pd(&b, &od, fwd_pd, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 2, NULL, 0, DNNL_ARG_DIFF_SRC, NULL,
                          err);
done:
    if (fwd_pd)
        dnnl_primitive_desc_destroy(fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_matmul_train_new(const ss_dnn_matmul_desc_t *d, ss_dnn_prim_t **out,
                        ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS };
    dnnl_matmul_desc_t od;
    dnnl_memory_desc_t a, bw, dst;
    dnnl_data_type_t dt = d->dtype == SS_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_data_type_t ot = dt == dnnl_bf16 && d->out_dtype == SS_DTYPE_BF16
                        ? dnnl_bf16 : dnnl_f32;
    int64_t dd[SS_DNN_MAX_DIMS];
    int nd = d->ndim, i, rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, d->dtype == SS_DTYPE_BF16
                                          ? "matmul (bf16 operands)"
                                          : "matmul (training)",
                                  err)) < 0)
        goto done;
    if ((d->dtype != SS_DTYPE_F32 && d->dtype != SS_DTYPE_BF16 &&
         d->dtype != 0) || d->b_const || d->bias || nd < 2 ||
        nd > SS_DNN_MAX_DIMS) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: dtype %d, %d dims, "
                        "constant B or bias", b.what, (int)d->dtype, nd);
        goto done;
    }
    for (i = 0; i < nd; i++)
        if (d->a_dims[i] < 1 || d->b_dims[i] < 1 ||
            (i < nd - 2 && d->a_dims[i] != d->b_dims[i] &&
             d->a_dims[i] != 1 && d->b_dims[i] != 1)) {
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: dims %d are %lld "
                            "and %lld", b.what, i, (long long)d->a_dims[i],
                            (long long)d->b_dims[i]);
            goto done;
        }
    if (d->a_dims[nd - 1] != d->b_dims[nd - 2]) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: K is %lld and %lld",
                        b.what, (long long)d->a_dims[nd - 1],
                        (long long)d->b_dims[nd - 2]);
        goto done;
    }
    for (i = 0; i < nd - 2; i++)
        dd[i] = d->a_dims[i] > d->b_dims[i] ? d->a_dims[i] : d->b_dims[i];
    dd[nd - 2] = d->a_dims[nd - 2];
    dd[nd - 1] = d->b_dims[nd - 1];
    ss__dnn_set_dst(b.p, nd, dd);
    if ((rc = ss__dnn_md_strided(&a, nd, d->a_dims, d->a_strides, dt, err,
                                 b.what)) < 0 ||
        (rc = ss__dnn_md_strided(&bw, nd, d->b_dims, d->b_strides, dt, err,
                                 b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, nd, dd, ot, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_matmul_desc_init(&od, &a, &bw, NULL, &dst),
                       err, "dnnl_matmul_desc_init", b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, nd, dd, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, in, 2, NULL, 0, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

/* oneDNN's names of the ISAs it may run at (dnnl_cpu_isa_t). */
static const char *
isa_name(dnnl_cpu_isa_t isa)
{
    switch ((int)isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "another ISA";
    }
}

int
ss_dnn_bf16_native(const char **isa)
{
    /* The ISA oneDNN will use: the CPU's, capped by ONEDNN_MAX_CPU_ISA.
     * Below avx512_core_bf16 oneDNN would emulate bf16 (or refuse it),
     * several times slower than f32: not worth training in. */
    dnnl_cpu_isa_t e = dnnl_get_effective_cpu_isa();
    unsigned want = (unsigned)dnnl_cpu_isa_avx512_core_bf16;

    if (isa != NULL)
        *isa = isa_name(e);
    return ((unsigned)e & want) == want;
}
