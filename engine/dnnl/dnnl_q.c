/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8 and bf16 primitive constructors (engine/dnnl/dnnl_q.h), built with the
 * constructor kit of dnnl_build.c: constants are reordered at creation
 * into the layout (and type: f32 -> bf16, s8 -> s8 with oneDNN's
 * compensation when it wants one) the chosen kernel prefers; activations
 * stay dense.
 *
 * Output scales are set as constants on the attribute, never at run time:
 * measured on oneDNN 2.6, run-time scales push the int8 kernels off their
 * fast path.
 *
 * THREADS: constructors are [any]; they touch only the object they build.
 */

#include "config.h"

#include "engine/dnnl/internal.h"
#include "engine/dnnl/dnnl_q.h"

static const int src_in[] = { DNNL_ARG_SRC };

static int
types(ss_dtype_t src, ss_dtype_t dst, ss_dtype_t w, dnnl_data_type_t *sdt,
      dnnl_data_type_t *ddt, dnnl_data_type_t *wdt, ss_err_t *err,
      const char *what)
{
    int q = src == SS_DTYPE_U8 || src == SS_DTYPE_I8;

    *sdt = ss__dnn_dtype(src);
    *ddt = ss__dnn_dtype(dst);
    if (q && w == SS_DTYPE_I8)
        *wdt = dnnl_s8;
    else if (src == SS_DTYPE_BF16 && w == SS_DTYPE_F32)
        *wdt = dnnl_bf16;
    else
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: src %d with weights "
                          "%d", what, (int)src, (int)w);
    if (!(*ddt == dnnl_f32 || *ddt == dnnl_bf16 || *ddt == dnnl_u8
          || *ddt == dnnl_s8) || (!q && (*ddt == dnnl_u8 || *ddt == dnnl_s8)))
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: dst type %d", what,
                          (int)dst);
    return 0;
}

/* NC.. dims, channels-last in memory when nhwc. */
static ss_dnn_layout_t
layout(int nhwc)
{
    return nhwc ? SS_DNN_NHWC : SS_DNN_PLAIN;
}

/* attr = scratchpad + post-ops (+ constant output scales).  BINARY
 * post-op tensors of the full dst shape are in the destination's layout l
 * (the plan converts them), broadcast ones plain. */
static int
make_attr(ss__dnn_build_t *b, const ss_dnn_postops_t *po, int ndim,
          const int64_t *dd, ss_dnn_layout_t l, int n_scales,
          const float *scales, ss_err_t *err)
{
    int rc;

    rc = ss__dnn_attr(po, ndim, dd, dnnl_f32, l, &b->attr, err, b->what);
    if (rc < 0)
        return rc;
    if (n_scales <= 0)
        return 0;
    if (scales == NULL || (n_scales != 1 && n_scales != dd[1]))
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: %d scales for %lld "
                          "channels", b->what, n_scales, (long long)dd[1]);
    return ss__dnn_check(dnnl_primitive_attr_set_output_scales(
                             b->attr, n_scales, n_scales > 1 ? 1 << 1 : 0,
                             scales),
                         err, "dnnl_primitive_attr_set_output_scales",
                         b->what);
}

/* A zero point of arg, set when it is not 0. */
static int
set_zp(ss__dnn_build_t *b, int arg, const int32_t *zp, ss_err_t *err)
{
    if (*zp == 0)
        return 0;
    return ss__dnn_check(dnnl_primitive_attr_set_zero_points(b->attr, arg, 1,
                                                             0, zp),
                         err, "dnnl_primitive_attr_set_zero_points",
                         b->what);
}

int
ss_dnn_qlinear_new(const ss_dnn_qlinear_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    dnnl_inner_product_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    dnnl_data_type_t sdt, ddt, wdt;
    int64_t sd[2] = { d->m, d->k }, dd[2] = { d->m, d->n };
    int64_t wd[2] = { d->n, d->k };
    int64_t ws[2] = { d->w_nk ? d->k : 1, d->w_nk ? 1 : d->n };
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &wuser, d->w, 0 },
                                 { DNNL_ARG_BIAS, &bias, d->bias, 1 } };
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "low-precision inner product",
                                  err)) < 0)
        goto done;
    if ((rc = types(d->src_dtype, d->dst_dtype, d->w_dtype, &sdt, &ddt, &wdt,
                    err, b.what)) < 0)
        goto done;
    if (d->m < 1 || d->k < 1 || d->n < 1 || d->w == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape", b.what);
        goto done;
    }
    ss__dnn_set_dst(b.p, 2, dd);
    if ((rc = ss__dnn_md_dense(&src, 2, sd, sdt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, 2, dd, ddt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_any(&w, 2, wd, wdt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_strided(&wuser, 2, wd, ws,
                                 d->w_dtype == SS_DTYPE_I8 ? dnnl_s8
                                                           : dnnl_f32,
                                 err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, 1, &d->n, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_inner_product_forward_desc_init(
                           &od, dnnl_forward_inference, &src, &w,
                           d->bias ? &bias : NULL, &dst),
                       err, "dnnl_inner_product_forward_desc_init", b.what);
    if (rc < 0 ||
        (rc = make_attr(&b, &d->post, 2, dd, SS_DNN_PLAIN, d->n_scales,
                        d->scales, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, c, 2, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_qconv_new(const ss_dnn_qconv_desc_t *d, ss_dnn_prim_t **out,
                 ss_err_t *err)
{
    ss__dnn_conv_md_t m;
    dnnl_data_type_t dt[4];
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &m.wuser, d->w, 0 },
                                 { DNNL_ARG_BIAS, &m.bias, d->bias, 1 } };
    ss_dnn_layout_t sl, dl;
    int rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "low-precision convolution",
                                  err)) < 0)
        goto done;
    b.p->layouts = 1;       /* 3-D: ndhwc is channels-last, not plain */
    if ((rc = types(d->src_dtype, d->dst_dtype, d->w_dtype, &dt[0], &dt[1],
                    &dt[2], err, b.what)) < 0)
        goto done;
    if (d->w == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: no weights", b.what);
        goto done;
    }
    dt[3] = d->w_dtype == SS_DTYPE_I8 ? dnnl_s8 : dnnl_f32;
    sl = dl = layout(d->nhwc);
    if (d->blocked) {
        dl = SS_DNN_BLOCKED;
        sl = d->g.ic % 16 ? SS_DNN_PLAIN : SS_DNN_BLOCKED;
    }
    if ((rc = ss__dnn_conv_md(&m, &d->g, dt, sl, dl, d->bias != NULL, err,
                              b.what)) < 0)
        goto done;
    ss__dnn_set_dst(b.p, m.nd, m.dd);
    if ((rc = make_attr(&b, &d->post, m.nd, m.dd, dl, d->n_scales,
                        d->scales, err)) < 0 ||
        (rc = set_zp(&b, DNNL_ARG_SRC, &d->src_zp, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &m.od, src_in, 1, c, 2, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_convert_new(const ss_dnn_convert_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_FROM };
    dnnl_memory_desc_t src, dst;
    dnnl_engine_t eng;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "type conversion", err)) < 0 ||
        (rc = ss__dnn_engine(&eng, err)) < 0)
        goto done;
    b.p->layouts = 1;       /* its mds are plain or channels-last */
    if (ss__dnn_dtype(d->src_dtype) == dnnl_data_type_undef ||
        ss__dnn_dtype(d->dst_dtype) == dnnl_data_type_undef) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: types %d -> %d", b.what,
                        (int)d->src_dtype, (int)d->dst_dtype);
        goto done;
    }
    b.p->dst_ndim = d->ndim;
    if (d->ndim >= 1 && d->ndim <= SS_DNN_MAX_DIMS)
        ss__dnn_set_dst(b.p, d->ndim, d->dims);
    if ((d->src_nhwc || d->dst_nhwc || d->src_layout || d->dst_layout)
        && (d->ndim < 3 || d->ndim > 5)) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: channels-last needs "
                        "3 to 5 dims", b.what);
        goto done;
    }
    if ((rc = ss__dnn_md_layout(&src, d->ndim, d->dims,
                                ss__dnn_dtype(d->src_dtype),
                                d->src_layout ? d->src_layout
                                              : layout(d->src_nhwc),
                                err, b.what)) < 0 ||
        (rc = ss__dnn_md_layout(&dst, d->ndim, d->dims,
                                ss__dnn_dtype(d->dst_dtype),
                                d->dst_layout ? d->dst_layout
                                              : layout(d->dst_nhwc),
                                err, b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, d->ndim, d->dims, dnnl_f32, SS_DNN_PLAIN,
                           &b.attr, err, b.what)) < 0)
        goto done;
    if (d->scale != 0.f
        && (rc = ss__dnn_check(dnnl_primitive_attr_set_output_scales(
                                   b.attr, 1, 0, &d->scale),
                               err, "dnnl_primitive_attr_set_output_scales",
                               b.what)) < 0)
        goto done;
    if ((rc = set_zp(&b, DNNL_ARG_SRC, &d->src_zp, err)) < 0 ||
        (rc = set_zp(&b, DNNL_ARG_DST, &d->dst_zp, err)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_reorder_primitive_desc_create(&b.pd, &src, eng,
                                                          &dst, eng, b.attr),
                       err, "dnnl_reorder_primitive_desc_create", b.what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 1, NULL, 0, DNNL_ARG_TO, NULL, err);
done:
    return ss__dnn_build_end(&b, rc, out);
}
