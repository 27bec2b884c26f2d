/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, training: convolution forward with run-time
 * weights, its backward by data and by weights, and softmax backward (the
 * trainer of compress/train/ calls these; inference packs its weights
 * once and uses ss_dnn_conv_new instead).
 *
 * Every argument is a run-time pointer in the dense layout the trainer
 * keeps (NCHW activations, [OC, IC/G, KH, KW] weights), so nothing is
 * packed and the weights may change between runs.  The backward
 * primitives need the forward one's descriptor as a hint; each
 * constructor makes it again (cheap: no primitive is created for it).
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
    dnnl_convolution_desc_t fwd;
    dnnl_primitive_desc_t fwd_pd;   /* owned */
} conv_mds_t;

static int
conv_mds(conv_mds_t *m, const ss_dnn_conv_desc_t *d, int bias,
         const char *what, ss_err_t *err)
{
    int64_t g = d->group ? d->group : 1;
    int64_t sd[4] = { d->n, d->ic, d->ih, d->iw }, k[2] = { d->kh, d->kw };
    int64_t wd[5];
    int wn, rc;

    memset(m, 0, sizeof(*m));
    if (d->dtype != SS_DTYPE_F32 && d->dtype != 0)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: dtype %d", what,
                          (int)d->dtype);
    if (d->w || d->bias || d->post.n || d->src_layout || d->dst_layout)
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: weights, bias, "
                          "post-ops and layouts are not descriptor fields "
                          "here", what);
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
    wn = ss__dnn_conv_wdims(g, d->oc, d->ic, d->kh, d->kw, wd);
    if ((rc = ss__dnn_md_dense(&m->src, 4, sd, dnnl_f32, err, what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->dst, 4, m->dd, dnnl_f32, err,
                               what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->w, wn, wd, dnnl_f32, err, what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->bias, 1, &d->oc, dnnl_f32, err,
                               what)) < 0)
        return rc;
    rc = ss__dnn_check(dnnl_dilated_convolution_forward_desc_init(
                           &m->fwd, dnnl_forward_training,
                           dnnl_convolution_direct, &m->src, &m->w,
                           bias ? &m->bias : NULL, &m->dst, m->win.strides,
                           m->win.dil, m->win.pl, m->win.pr),
                       err, "dnnl_dilated_convolution_forward_desc_init",
                       what);
    if (rc < 0)
        return rc;
    return ss__dnn_pd(&m->fwd, NULL, &m->fwd_pd, err, what);
}

/* The primitive descriptor of a backward op under b's attribute, with
 * the forward's as the hint. */
static int
bwd_pd(ss__dnn_build_t *b, const_dnnl_op_desc_t od,
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

int
ss_dnn_conv_train_new(const ss_dnn_conv_desc_t *d, ss_dnn_conv_pass_t pass,
                      int bias, ss_dnn_prim_t **out, ss_err_t *err)
{
    static const int fwd_in[] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS,
                                  DNNL_ARG_BIAS };
    static const int bd_in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS };
    static const int bw_in[] = { DNNL_ARG_SRC, DNNL_ARG_DIFF_DST };
    static const char *const names[] = {
        "convolution (training)", "convolution backward data",
        "convolution backward weights"
    };
    dnnl_convolution_desc_t od;
    ss__dnn_build_t b;
    conv_mds_t m = { 0 };
    int rc;

    if (pass < SS_DNN_CONV_FWD || pass > SS_DNN_CONV_BWD_WEIGHTS) {
        *out = NULL;
        return ss_err_set(err, SS_EINVAL, "oneDNN convolution: pass %d",
                          (int)pass);
    }
    if ((rc = ss__dnn_build_start(&b, names[pass], err)) < 0)
        goto done;
    if ((rc = conv_mds(&m, d, pass == SS_DNN_CONV_FWD && bias, b.what,
                       err)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    switch (pass) {
    case SS_DNN_CONV_FWD:
        ss__dnn_set_dst(b.p, 4, m.dd);
        rc = ss__dnn_build_op(&b, &m.fwd, fwd_in, bias ? 3 : 2, NULL, 0,
                              DNNL_ARG_DST, NULL, err);
        break;
    case SS_DNN_CONV_BWD_DATA:
        ss__dnn_set_dst(b.p, 4, m.src.dims);
        rc = ss__dnn_check(dnnl_dilated_convolution_backward_data_desc_init(
                               &od, dnnl_convolution_direct, &m.src, &m.w,
                               &m.dst, m.win.strides, m.win.dil, m.win.pl,
                               m.win.pr),
                           err, "dnnl_dilated_convolution_backward_data_"
                           "desc_init", b.what);
        if (rc < 0 || (rc = bwd_pd(&b, &od, m.fwd_pd, err)) < 0)
            goto done;
        rc = ss__dnn_build_op(&b, NULL, bd_in, 2, NULL, 0,
                              DNNL_ARG_DIFF_SRC, NULL, err);
        break;
    default:
        ss__dnn_set_dst(b.p, m.w.ndims, m.w.dims);
        rc = ss__dnn_check(
            dnnl_dilated_convolution_backward_weights_desc_init(
                &od, dnnl_convolution_direct, &m.src, &m.w, NULL, &m.dst,
                m.win.strides, m.win.dil, m.win.pl, m.win.pr),
            err, "dnnl_dilated_convolution_backward_weights_desc_init",
            b.what);
        if (rc < 0 || (rc = bwd_pd(&b, &od, m.fwd_pd, err)) < 0)
            goto done;
        rc = ss__dnn_build_op(&b, NULL, bw_in, 2, NULL, 0,
                              DNNL_ARG_DIFF_WEIGHTS, NULL, err);
        break;
    }
done:
    if (m.fwd_pd)
        dnnl_primitive_desc_destroy(m.fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_softmax_bwd_new(const ss_dnn_softmax_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_DST };
    dnnl_softmax_v2_desc_t fwd, od;
    dnnl_primitive_desc_t fwd_pd = NULL;
    dnnl_alg_kind_t alg = d->log ? dnnl_softmax_log : dnnl_softmax_accurate;
    dnnl_memory_desc_t md;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, d->log ? "logsoftmax backward"
                                             : "softmax backward",
                                  err)) < 0)
        goto done;
    if ((d->dtype != SS_DTYPE_F32 && d->dtype != 0) || d->ndim < 1 ||
        d->ndim > SS_DNN_MAX_DIMS || d->axis < 0 || d->axis >= d->ndim) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: dtype %d, axis %d of "
                        "%d dims", b.what, (int)d->dtype, d->axis, d->ndim);
        goto done;
    }
    ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((rc = ss__dnn_md_dense(&md, d->ndim, d->dims, dnnl_f32, err,
                               b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_softmax_v2_forward_desc_init(
                           &fwd, dnnl_forward_training, alg, &md, &md,
                           d->axis),
                       err, "dnnl_softmax_v2_forward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_pd(&fwd, NULL, &fwd_pd, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_softmax_v2_backward_desc_init(
                           &od, alg, &md, &md, &md, d->axis),
                       err, "dnnl_softmax_v2_backward_desc_init", b.what);
    if (rc < 0 || (rc = bwd_pd(&b, &od, fwd_pd, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 2, NULL, 0, DNNL_ARG_DIFF_SRC, NULL,
                          err);
done:
    if (fwd_pd)
        dnnl_primitive_desc_destroy(fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}
