/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, constructors: one per op kind.  Each checks
 * its descriptor, builds the oneDNN op descriptor with plain layouts for
 * activations and format_tag_any for constants, and hands it to the
 * constructor kit (dnnl_build.c), which makes the primitive and packs the
 * constants.
 *
 * Weights are given as f32 and described in the caller's layout; the
 * layout oneDNN asks for carries the compute type, so the packing reorder
 * also converts (f32 -> bf16 today, s8 later) without changes here.
 *
 * THREADS: constructors are [any]; they touch only the object they build.
 */

#include "config.h"

#include <string.h>

#include "engine/dnnl/internal.h"

static int
check_dtype(ss_dtype_t t, dnnl_data_type_t *dt, ss_err_t *err,
            const char *what)
{
    *dt = ss__dnn_dtype(t);
    if (*dt != dnnl_f32 && *dt != dnnl_bf16)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: dtype %d", what,
                          (int)t);
    return 0;
}

static int
check_dims(int ndim, const int64_t *dims, ss_err_t *err, const char *what)
{
    int i;

    if (ndim < 1 || ndim > SS_DNN_MAX_DIMS)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: %d dims", what, ndim);
    for (i = 0; i < ndim; i++)
        if (dims[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: dim %d is %lld",
                              what, i, (long long)dims[i]);
    return 0;
}

/* The attribute of an op without post-ops. */
static int
plain_attr(ss__dnn_build_t *b, ss_err_t *err)
{
    return ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b->attr, err,
                        b->what);
}

static const int src_in[] = { DNNL_ARG_SRC };

/* Linear as oneDNN's inner product: the fallback of ss_dnn_linear_new. */
static int
linear_ip(const ss_dnn_linear_desc_t *d, ss_dnn_prim_t **out, ss_err_t *err)
{
    dnnl_inner_product_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    dnnl_data_type_t dt;
    int64_t sd[2] = { d->m, d->k }, dd[2] = { d->m, d->n };
    int64_t wd[2] = { d->n, d->k };
    int64_t ws[2] = { d->w_nk ? d->k : 1, d->w_nk ? 1 : d->n };
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &wuser, d->w, 0 },
                                 { DNNL_ARG_BIAS, &bias, d->bias, 1 } };
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "inner product", err)) < 0)
        goto done;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dims(2, sd, err, b.what)) < 0 ||
        (rc = check_dims(2, dd, err, b.what)) < 0)
        goto done;
    ss__dnn_set_dst(b.p, 2, dd);
    if ((rc = ss__dnn_md_dense(&src, 2, sd, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, 2, dd, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_any(&w, 2, wd, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_strided(&wuser, 2, wd, ws, dnnl_f32, err,
                                 b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, 1, &d->n, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_inner_product_forward_desc_init(
                           &od, dnnl_forward_inference, &src, &w,
                           d->bias ? &bias : NULL, &dst),
                       err, "dnnl_inner_product_forward_desc_init", b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, 2, dd, dt, SS_DNN_PLAIN, &b.attr, err,
                           b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, c, 2, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

/* A SUM post-op of a Linear adds a run-time residual: the input after
 * the binary post-ops' (dnnl.h), which ss_dnn_run copies into dst first
 * unless the caller gives dst as that input (in place). */
static void
sum_input(ss_dnn_prim_t *p, const ss_dnn_postops_t *po)
{
    int nbin = 0, sum = 0;

    for (int i = 0; i < po->n; i++) {
        nbin += po->op[i].kind == SS_DNN_PO_BINARY;
        sum |= po->op[i].kind == SS_DNN_PO_SUM;
    }
    if (!sum)
        return;
    for (int i = 0; i < p->n_args; i++)
        if (p->args[i].src == SS__DNN_SRC_OUT)
            p->sum_bytes = dnnl_memory_desc_get_size(&p->args[i].md);
    p->sum_in = 1 + nbin;
    p->n_in = p->sum_in + 1;
}

/* Linear runs as a 2-D matmul with the weights packed in the layout its
 * brgemm kernel wants (format any; oneDNN 2.6 picks the same blocked
 * layout for every M, so the plans of several batch sizes still share one
 * packed copy).  Measured here (1 thread, weights cold in 6 rotating
 * copies, oneDNN 2.6 on AVX-512): ViT-B/16's four GEMMs at M = 197 run
 * 1-10% faster than as an inner product (768x3072+GELU 184 vs 174
 * GFLOPS), at M = 1576 (batch 8) 17-24% faster (182 vs 156); at M = 1-256
 * the two are within 3% either way.  Where oneDNN has no matmul for the
 * descriptor (SS_EUNSUPP), the inner product. */
int
ss_dnn_linear_new(const ss_dnn_linear_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    ss_dnn_matmul_desc_t md = { 0 };
    int64_t ws[2] = { 1, d->k };
    int rc;

    *out = NULL;
    if (d->w == NULL)
        return ss_err_set(err, SS_EINVAL, "oneDNN inner product: constant "
                          "weights are NULL");
    md.dtype = d->dtype;
    md.ndim = 2;
    md.a_dims[0] = d->m;
    md.a_dims[1] = d->k;
    md.b_dims[0] = d->k;
    md.b_dims[1] = d->n;
    md.b_strides = d->w_nk ? ws : NULL;
    md.b_const = d->w;
    md.bias = d->bias;
    md.post = d->post;
    rc = ss_dnn_matmul_new(&md, out, err);
    if (rc == SS_EUNSUPP) {
        ss_err_clear(err);
        rc = linear_ip(d, out, err);
    }
    if (rc == 0)
        sum_input(*out, &d->post);
    return rc;
}

int
ss_dnn_matmul_new(const ss_dnn_matmul_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_SRC, DNNL_ARG_WEIGHTS };
    dnnl_matmul_desc_t od;
    dnnl_memory_desc_t a, bw, buser, bias, dst;
    dnnl_data_type_t dt;
    int64_t dd[SS_DNN_MAX_DIMS], bd[SS_DNN_MAX_DIMS];
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &buser, d->b_const, 1 },
                                 { DNNL_ARG_BIAS, &bias, d->bias, 1 } };
    int nd = d->ndim, i, rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "matmul", err)) < 0)
        goto done;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0)
        goto done;
    if (nd < 2 || nd > SS_DNN_MAX_DIMS) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN matmul: %d dims", nd);
        goto done;
    }
    if ((rc = check_dims(nd, d->a_dims, err, b.what)) < 0 ||
        (rc = check_dims(nd, d->b_dims, err, b.what)) < 0)
        goto done;
    if (d->a_dims[nd - 1] != d->b_dims[nd - 2]) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN matmul: K is %lld and %lld",
                        (long long)d->a_dims[nd - 1],
                        (long long)d->b_dims[nd - 2]);
        goto done;
    }
    for (i = 0; i < nd - 2; i++) {
        int64_t x = d->a_dims[i], y = d->b_dims[i];

        if (x != y && x != 1 && y != 1) {
            rc = ss_err_set(err, SS_EINVAL, "oneDNN matmul: batch dim %d is "
                            "%lld and %lld", i, (long long)x, (long long)y);
            goto done;
        }
        dd[i] = x > y ? x : y;
        bd[i] = 1;
    }
    dd[nd - 2] = d->a_dims[nd - 2];
    dd[nd - 1] = d->b_dims[nd - 1];
    bd[nd - 2] = 1;
    bd[nd - 1] = dd[nd - 1];
    ss__dnn_set_dst(b.p, nd, dd);
    if ((rc = ss__dnn_md_strided(&a, nd, d->a_dims, d->a_strides, dt, err,
                                 b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, nd, dd, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, nd, bd, dnnl_f32, err, b.what)) < 0)
        goto done;
    if (d->b_const) {
        if ((rc = ss__dnn_md_any(&bw, nd, d->b_dims, dt, err, b.what)) < 0 ||
            (rc = ss__dnn_md_strided(&buser, nd, d->b_dims, d->b_strides,
                                     dnnl_f32, err, b.what)) < 0)
            goto done;
    } else if ((rc = ss__dnn_md_strided(&bw, nd, d->b_dims, d->b_strides, dt,
                                        err, b.what)) < 0) {
        goto done;
    }
    rc = ss__dnn_check(dnnl_matmul_desc_init(&od, &a, &bw,
                                             d->bias ? &bias : NULL, &dst),
                       err, "dnnl_matmul_desc_init", b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, nd, dd, dt, SS_DNN_PLAIN, &b.attr, err,
                           b.what)) < 0)
        goto done;
    /* B is a run-time input unless it is a constant to pack */
    rc = ss__dnn_build_op(&b, &od, in, d->b_const ? 1 : 2, c, 2,
                          DNNL_ARG_DST, &d->post, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

/* Convolution of any spatial rank (d->nsp): one constructor for 1-D, 2-D
 * (and its Winograd and depthwise-post-op forms) and 3-D convs. */
/* How deconv_new starts: the build of what, d's dtype and geometry
 * (pad_end unused), src's dims in sd and dst's first two in dd.  Returns
 * the rank or a negative code. */
static int
conv_start(ss__dnn_build_t *b, const char *what, const ss_dnn_conv_desc_t *d,
           dnnl_data_type_t *dt, ss__dnn_geom_t *sp, int64_t sd[5],
           int64_t dd[5], ss_err_t *err)
{
    int64_t k[2] = { d->kh, d->kw };
    int rc;

    if ((rc = ss__dnn_build_start(b, what, err)) < 0)
        return rc;
    b->p->layouts = 1;
    if ((rc = check_dtype(d->dtype, dt, err, b->what)) < 0 ||
        (rc = ss__dnn_geom(sp, d->nsp, &d->depth, d->ih, d->iw, k,
                           d->stride, d->dilation, d->pad_begin, d->pad_end,
                           err, b->what)) < 0)
        return rc;
    sd[0] = dd[0] = d->n;
    sd[1] = d->ic;
    dd[1] = d->oc;
    memcpy(sd + 2, sp->in, (size_t)sp->nsp * sizeof(*sd));
    if ((rc = check_dims(sp->nsp + 2, sd, err, b->what)) < 0)
        return rc;
    return sp->nsp + 2;
}

/* The deconvolution of a transposed d (ss_dnn_conv_desc_t).  oneDNN
 * runs it as the backward-data pass of the convolution it transposes
 * (its jit kernels, blocked or channels-last), bias and post-ops after.
 * The window relation must give back the source's size from tout: a
 * longer output (output_padding, output_shape) is the pad_end of that
 * convolution shrunk, which may not reach -stride. */
static int
deconv_new(const ss_dnn_conv_desc_t *d, ss_dnn_prim_t **out, ss_err_t *err)
{
    dnnl_deconvolution_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    dnnl_data_type_t dt;
    ss__dnn_geom_t sp;
    dnnl_dims_t st, dil, pl, pr;
    int64_t g = d->group ? d->group : 1;
    int64_t sd[5], dd[5], wd[6], ws[6], ksz = 1;
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &wuser, d->w, 0 },
                                 { DNNL_ARG_BIAS, &bias, d->bias, 1 } };
    int nd, wn, rc;
    ss__dnn_build_t b;

    if ((rc = nd = conv_start(&b, "deconvolution", d, &dt, &sp, sd, dd,
                              err)) < 0)
        goto done;
    memcpy(dd + 2, d->tout, (size_t)sp.nsp * sizeof(*dd));
    if ((rc = check_dims(nd, dd, err, b.what)) < 0)
        goto done;
    if (g < 1 || d->ic % g || d->oc % g) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: oc %lld, ic %lld, "
                        "group %lld", b.what, (long long)d->oc,
                        (long long)d->ic, (long long)g);
        goto done;
    }
    for (int i = 0; i < sp.nsp; i++) {
        int64_t s = sp.stride[i] ? sp.stride[i] : 1;
        int64_t dl = sp.dil[i] ? sp.dil[i] : 1;
        int64_t r = (sp.in[i] - 1) * s + (sp.k[i] - 1) * dl + 1 - sp.pb[i]
                    - dd[2 + i];

        if (sp.k[i] < 1 || sp.pb[i] < 0 || r <= -s) {
            rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: axis %d's output "
                            "of %lld is a stride or more past the window",
                            b.what, i, (long long)dd[2 + i]);
            goto done;
        }
        st[i] = s;
        dil[i] = dl - 1;
        pl[i] = sp.pb[i];
        pr[i] = r < 0 ? 0 : r;
        ksz *= sp.k[i];
    }
    ss__dnn_set_dst(b.p, nd, dd);
    /* oneDNN's [G, OC/G, IC/G, k..] over ONNX's [IC, OC/G, k..] bytes */
    wn = ss__dnn_conv_wdims(g, d->oc, d->ic, sp.nsp, sp.k, wd);
    for (int i = wn - 1, m = 1; i >= wn - sp.nsp; i--) {
        ws[i] = m;
        m *= wd[i];
    }
    ws[wn - sp.nsp - 2] = ksz;                          /* OC/G */
    ws[wn - sp.nsp - 1] = ksz * (d->oc / g);            /* IC/G */
    if (g > 1)
        ws[0] = ksz * (d->oc / g) * (d->ic / g);
    if ((rc = ss__dnn_md_layout(&src, nd, sd, dt, d->src_layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_md_layout(&dst, nd, dd, dt, d->dst_layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_md_any(&w, wn, wd, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_strided(&wuser, wn, wd, ws, dnnl_f32, err,
                                 b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, 1, &d->oc, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_dilated_deconvolution_forward_desc_init(
                           &od, dnnl_forward_inference,
                           dnnl_deconvolution_direct, &src, &w,
                           d->bias ? &bias : NULL, &dst, st, dil, pl, pr),
                       err, "dnnl_dilated_deconvolution_forward_desc_init",
                       b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, nd, dd, dt, d->dst_layout, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, c, 2, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_conv_new(const ss_dnn_conv_desc_t *d, ss_dnn_prim_t **out,
                ss_err_t *err)
{
    ss__dnn_conv_md_t m;
    dnnl_data_type_t dt[4];
    int64_t fd[5], dwd[5] = { d->oc, 1, 1, 3, 3 };
    dnnl_memory_desc_t dww, dwb;
    const ss__dnn_carg_t c[] = {
        { DNNL_ARG_WEIGHTS, &m.wuser, d->w, 0 },
        { DNNL_ARG_BIAS, &m.bias, d->bias, 1 },
        { DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS, &dww, d->dw_w, 0 },
        { DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS, &dwb, d->dw_bias, 0 } };
    ss_dnn_postops_t wpo, po = d->post;
    int sum, rc, ndw = 0;
    ss__dnn_build_t b;

    if (d->transposed)
        return deconv_new(d, out, err);
    if ((rc = ss__dnn_build_start(&b, "convolution", err)) < 0)
        goto done;
    b.p->layouts = 1;
    if ((rc = check_dtype(d->dtype, &dt[0], err, b.what)) < 0)
        goto done;
    dt[1] = dt[2] = dt[0];
    dt[3] = dnnl_f32;
    if ((rc = ss__dnn_conv_md(&m, d, dt, d->src_layout, d->dst_layout,
                              d->bias != NULL, err, b.what)) < 0)
        goto done;
    memcpy(fd, m.dd, sizeof(fd));
    for (int i = 0; i < po.n; i++) {
        int64_t s = d->dw_stride ? d->dw_stride : 1;

        if (po.op[i].kind != SS_DNN_PO_DW)
            continue;
        if (ndw++ || (s != 1 && s != 2) || d->dw_w == NULL
            || d->dw_bias == NULL || m.nd != 4) {
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: a depthwise post-op "
                            "needs a 2-D conv, one stride of 1 or 2, weights "
                            "and bias", b.what);
            goto done;
        }
        po.op[i].alpha = (float)s;
        fd[2] = (m.dd[2] - 1) / s + 1;
        fd[3] = (m.dd[3] - 1) / s + 1;
    }
    ss__dnn_set_dst(b.p, m.nd, fd);
    if (ndw && ((rc = ss__dnn_md_dense(&dww, 5, dwd, dnnl_f32, err,
                                       b.what)) < 0
                || (rc = ss__dnn_md_dense(&dwb, 1, &d->oc, dnnl_f32, err,
                                          b.what)) < 0))
        goto done;
    if ((rc = ss__dnn_attr(&po, m.nd, fd, dt[0], d->dst_layout, &b.attr,
                           err, b.what)) < 0)
        goto done;
    if (!ndw && m.nd == 4 && ss__dnn_conv_wino(&b, d, &m.src, &m.w, &m.bias,
                                               &m.dst, &m.win, m.dd, &wpo,
                                               &sum)) {
        if ((rc = ss__dnn_build_op(&b, NULL, src_in, 1, c, 2, DNNL_ARG_DST,
                                   &wpo, err)) < 0)
            goto done;
        if (sum) {
            b.p->sum_in = 1;
            b.p->n_in = 2;
            b.p->sum_bytes = dnnl_memory_desc_get_size(&m.dst);
        }
        goto done;
    }
    rc = ss__dnn_build_op(&b, &m.od, src_in, 1, c, ndw ? 4 : 2, DNNL_ARG_DST,
                          &po, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_pool_new(const ss_dnn_pool_desc_t *d, ss_dnn_prim_t **out,
                ss_err_t *err)
{
    dnnl_pooling_v2_desc_t od;
    dnnl_memory_desc_t src, dst;
    dnnl_data_type_t dt;
    dnnl_alg_kind_t alg;
    ss__dnn_window_t win;
    int64_t sd[5] = { d->n, d->c, d->ih, d->iw }, dd[5];
    int nd = d->nsp ? d->nsp + 2 : 4, rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "pooling", err)) < 0)
        goto done;
    b.p->layouts = 1;
    /* max pooling also on int8: the maximum of quantized values is the
     * quantized maximum (plan_qdq.c moves a QuantizeLinear before it) */
    if (d->alg == SS_DNN_POOL_MAX && (d->dtype == SS_DTYPE_U8
                                      || d->dtype == SS_DTYPE_I8))
        dt = ss__dnn_dtype(d->dtype);
    else if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0)
        goto done;
    if (nd == 3)
        sd[2] = d->iw;
    if (nd == 5) {
        sd[2] = d->depth.in;
        sd[3] = d->ih;
        sd[4] = d->iw;
    }
    if ((rc = check_dims(nd, sd, err, b.what)) < 0)
        goto done;
    if ((rc = ss__dnn_pool_geom(d, &alg, &win, dd, err, b.what)) < 0 ||
        (rc = check_dims(nd, dd, err, b.what)) < 0)
        goto done;
    ss__dnn_set_dst(b.p, nd, dd);
    if ((rc = ss__dnn_md_layout(&src, nd, sd, dt, d->layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_md_layout(&dst, nd, dd, dt, d->layout, err,
                                b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_pooling_v2_forward_desc_init(
                           &od, dnnl_forward_inference, alg, &src, &dst,
                           win.strides, win.kernel, win.dil, win.pl, win.pr),
                       err, "dnnl_pooling_v2_forward_desc_init", b.what);
    if (rc < 0 || (rc = plain_attr(&b, err)) < 0)
        goto done;
    if ((rc = ss__dnn_build_op(&b, &od, src_in, 1, NULL, 0, DNNL_ARG_DST,
                               NULL, err)) < 0)
        goto done;
    if (nd == 4)
        rc = ss__dnn_pool8_attach(b.p, d, &win, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_softmax_new(const ss_dnn_softmax_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    dnnl_softmax_v2_desc_t od;
    dnnl_memory_desc_t md;
    dnnl_data_type_t dt;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, d->log ? "logsoftmax" : "softmax",
                                  err)) < 0)
        goto done;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dims(d->ndim, d->dims, err, b.what)) < 0)
        goto done;
    if (d->axis < 0 || d->axis >= d->ndim) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: axis %d of %d dims",
                        b.what, d->axis, d->ndim);
        goto done;
    }
    ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((rc = ss__dnn_md_dense(&md, d->ndim, d->dims, dt, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_softmax_v2_forward_desc_init(
                           &od, dnnl_forward_inference,
                           d->log ? dnnl_softmax_log : dnnl_softmax_accurate,
                           &md, &md, d->axis),
                       err, "dnnl_softmax_v2_forward_desc_init", b.what);
    if (rc < 0 || (rc = plain_attr(&b, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, NULL, 0, DNNL_ARG_DST, NULL,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_layernorm_new(const ss_dnn_layernorm_desc_t *d, ss_dnn_prim_t **out,
                     ss_err_t *err)
{
    dnnl_layer_normalization_desc_t od;
    dnnl_memory_desc_t md, cmd;
    dnnl_data_type_t dt;
    const ss__dnn_carg_t c[] = { { DNNL_ARG_SCALE, &cmd, d->gamma, 1 },
                                 { DNNL_ARG_SHIFT, &cmd, d->beta, 1 } };
    unsigned flags = 0;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "layer normalization", err)) < 0)
        goto done;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dims(d->ndim, d->dims, err, b.what)) < 0)
        goto done;
    if (!(d->eps >= 0.f)) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN layer normalization: "
                        "epsilon %g", (double)d->eps);
        goto done;
    }
    ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((rc = ss__dnn_md_dense(&md, d->ndim, d->dims, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&cmd, 1, &d->dims[d->ndim - 1], dnnl_f32, err,
                               b.what)) < 0)
        goto done;
    if (d->gamma)
        flags |= dnnl_use_scale;
    if (d->beta)
        flags |= dnnl_use_shift;
    rc = ss__dnn_check(dnnl_layer_normalization_forward_desc_init(
                           &od, dnnl_forward_inference, &md, NULL, d->eps,
                           flags),
                       err, "dnnl_layer_normalization_forward_desc_init",
                       b.what);
    if (rc < 0 || (rc = plain_attr(&b, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, c, 2, DNNL_ARG_DST, NULL, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_eltwise_new(const ss_dnn_eltwise_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    dnnl_eltwise_desc_t od;
    dnnl_memory_desc_t md;
    dnnl_data_type_t dt;
    dnnl_alg_kind_t alg = ss__dnn_eltwise_alg(d->alg);
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "eltwise", err)) < 0)
        goto done;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dims(1, &d->numel, err, b.what)) < 0)
        goto done;
    if (alg == dnnl_alg_kind_undef) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN eltwise: alg %d",
                        (int)d->alg);
        goto done;
    }
    ss__dnn_set_dst(b.p, 1, &d->numel);
    if ((rc = ss__dnn_md_dense(&md, 1, &d->numel, dt, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_eltwise_forward_desc_init(
                           &od, dnnl_forward_inference, alg, &md, d->alpha,
                           d->beta),
                       err, "dnnl_eltwise_forward_desc_init", b.what);
    if (rc < 0 || (rc = plain_attr(&b, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, NULL, 0, DNNL_ARG_DST, NULL,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_binary_new(const ss_dnn_binary_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_SRC_0, DNNL_ARG_SRC_1 };
    dnnl_binary_desc_t od;
    dnnl_memory_desc_t a, bm;
    dnnl_data_type_t dt;
    dnnl_alg_kind_t alg = ss__dnn_binary_alg(d->alg);
    int64_t bd[SS_DNN_MAX_DIMS];
    int i, off, rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "binary", err)) < 0)
        goto done;
    b.p->layouts = d->layout != SS_DNN_PLAIN;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dims(d->a_ndim, d->a_dims, err, b.what)) < 0 ||
        (rc = check_dims(d->b_ndim, d->b_dims, err, b.what)) < 0)
        goto done;
    if (alg == dnnl_alg_kind_undef) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN binary: alg %d", (int)d->alg);
        goto done;
    }
    if (d->b_ndim > d->a_ndim) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN binary: src1 has more dims "
                        "than src0");
        goto done;
    }
    off = d->a_ndim - d->b_ndim;
    for (i = 0; i < d->a_ndim; i++) {
        bd[i] = i < off ? 1 : d->b_dims[i - off];
        if (bd[i] != 1 && bd[i] != d->a_dims[i]) {
            rc = ss_err_set(err, SS_EUNSUPP, "oneDNN binary: src1 dim %d is "
                            "%lld, src0 has %lld", i, (long long)bd[i],
                            (long long)d->a_dims[i]);
            goto done;
        }
    }
    ss__dnn_set_dst(b.p, d->a_ndim, d->a_dims);
    if ((rc = ss__dnn_md_layout(&a, d->a_ndim, d->a_dims, dt, d->layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_md_layout(&bm, d->a_ndim, bd, dt,
                                memcmp(bd, d->a_dims, (size_t)d->a_ndim *
                                       sizeof(*bd)) == 0 ? d->layout
                                                         : SS_DNN_PLAIN,
                                err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_binary_desc_init(&od, alg, &a, &bm, &a), err,
                       "dnnl_binary_desc_init", b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, d->a_ndim, d->a_dims, dt, d->layout,
                           &b.attr, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, in, 2, NULL, 0, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_reorder_new(const ss_dnn_reorder_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_FROM };
    dnnl_memory_desc_t src, dst;
    dnnl_data_type_t dt, ddt;
    dnnl_engine_t eng;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "reorder", err)) < 0)
        goto done;
    b.p->layouts = d->src_layout != SS_DNN_PLAIN
                   || d->dst_layout != SS_DNN_PLAIN;
    if ((rc = check_dtype(d->dtype, &dt, err, b.what)) < 0 ||
        (rc = check_dtype(d->dst_dtype ? d->dst_dtype : d->dtype, &ddt, err,
                          b.what)) < 0 ||
        (rc = check_dims(d->ndim, d->dims, err, b.what)) < 0 ||
        (rc = ss__dnn_engine(&eng, err)) < 0)
        goto done;
    ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((d->src_layout && (d->src_strides || d->src_offset)) ||
        (d->dst_layout && d->dst_strides) || d->src_offset < 0) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN reorder: strides or an "
                        "offset with a blocked layout, or a negative "
                        "offset");
        goto done;
    }
    if ((rc = d->src_layout
                  ? ss__dnn_md_layout(&src, d->ndim, d->dims, dt,
                                      d->src_layout, err, b.what)
                  : ss__dnn_md_strided(&src, d->ndim, d->dims,
                                       d->src_strides, dt, err, b.what)) < 0 ||
        (rc = d->dst_layout
                  ? ss__dnn_md_layout(&dst, d->ndim, d->dims, ddt,
                                      d->dst_layout, err, b.what)
                  : ss__dnn_md_strided(&dst, d->ndim, d->dims,
                                       d->dst_strides, ddt, err, b.what)) < 0 ||
        (rc = plain_attr(&b, err)) < 0)
        goto done;
    /* oneDNN's reorders start at offset0 of the source handle */
    src.offset0 = d->src_offset;
    rc = ss__dnn_check(dnnl_reorder_primitive_desc_create(&b.pd, &src, eng,
                                                          &dst, eng, b.attr),
                       err, "dnnl_reorder_primitive_desc_create", b.what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 1, NULL, 0, DNNL_ARG_TO, NULL, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}
