/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8 and bf16 primitive constructors (engine/dnnl_q.h), built on the
 * object machinery of dnnl.c: constants are reordered at creation into the
 * layout (and type: f32 -> bf16, s8 -> s8 with oneDNN's compensation when
 * it wants one) the chosen kernel prefers; activations stay dense.
 *
 * Output scales are set as constants on the attribute, never at run time:
 * measured on oneDNN 2.6, run-time scales push the int8 kernels off their
 * fast path.
 *
 * THREADS: constructors are [any]; they touch only the object they build.
 */

#include "config.h"

#include <string.h>

#include "common/alloc.h"
#include "engine/dnnl_int.h"
#include "engine/dnnl_q.h"

typedef struct qb {
    const char *what;
    ss_dnn_prim_t *p;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t pd;
} qb_t;

static int
qb_end(qb_t *b, int rc, ss_dnn_prim_t **out)
{
    if (b->pd)
        dnnl_primitive_desc_destroy(b->pd);
    if (b->attr)
        dnnl_primitive_attr_destroy(b->attr);
    if (rc < 0) {
        ss_dnn_prim_free(b->p);
        b->p = NULL;
    }
    *out = b->p;
    return rc;
}

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

static int md_4d(dnnl_memory_desc_t *md, const int64_t *dims, int nhwc,
                 dnnl_data_type_t dt, ss_err_t *err, const char *what);

/* ss__dnn_attr for an NHWC destination: BINARY post-op tensors of the
 * full dst shape are NHWC too (the plan converts them), broadcast ones
 * plain. */
static int
attr_nhwc(qb_t *b, const ss_dnn_postops_t *po, const int64_t *dd,
          ss_err_t *err)
{
    dnnl_post_ops_t ops = NULL;
    dnnl_memory_desc_t md;
    int rc;

    rc = ss__dnn_check(dnnl_primitive_attr_create(&b->attr), err,
                       "dnnl_primitive_attr_create", b->what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_primitive_attr_set_scratchpad_mode(
                           b->attr, dnnl_scratchpad_mode_user),
                       err, "dnnl_primitive_attr_set_scratchpad_mode",
                       b->what);
    if (rc < 0 || po->n == 0)
        goto done;
    if (po->n < 0 || po->n > SS_DNN_MAX_POST) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: %d post-ops", b->what,
                        po->n);
        goto done;
    }
    if ((rc = ss__dnn_check(dnnl_post_ops_create(&ops), err,
                            "dnnl_post_ops_create", b->what)) < 0)
        goto done;
    for (int i = 0; i < po->n && rc == 0; i++) {
        const ss_dnn_postop_t *o = &po->op[i];
        int64_t d[4];
        int off = 4 - o->ndim, full = 1;

        switch (o->kind) {
        case SS_DNN_PO_ELTWISE:
            if (ss__dnn_eltwise_alg(o->alg) == dnnl_alg_kind_undef) {
                rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: eltwise %d",
                                b->what, o->alg);
                break;
            }
            rc = ss__dnn_check(dnnl_post_ops_append_eltwise(
                                   ops, 1.f, ss__dnn_eltwise_alg(o->alg),
                                   o->alpha, o->beta),
                               err, "dnnl_post_ops_append_eltwise", b->what);
            break;
        case SS_DNN_PO_SUM:
            rc = ss__dnn_check(dnnl_post_ops_append_sum(
                                   ops, o->alpha == 0.f ? 1.f : o->alpha),
                               err, "dnnl_post_ops_append_sum", b->what);
            break;
        case SS_DNN_PO_BINARY:
            if (ss__dnn_binary_alg(o->alg) == dnnl_alg_kind_undef
                || o->ndim < 1 || o->ndim > 4) {
                rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: binary "
                                "post-op", b->what);
                break;
            }
            for (int k = 0; k < 4; k++) {
                d[k] = k < off ? 1 : o->dims[k - off];
                if (d[k] != 1 && d[k] != dd[k])
                    rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: binary "
                                    "post-op does not broadcast", b->what);
                full &= d[k] == dd[k];
            }
            if (rc < 0 || (rc = md_4d(&md, d, full, dnnl_f32, err,
                                      b->what)) < 0)
                break;
            rc = ss__dnn_check(dnnl_post_ops_append_binary(
                                   ops, ss__dnn_binary_alg(o->alg), &md),
                               err, "dnnl_post_ops_append_binary", b->what);
            break;
        default:
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: post-op kind %d",
                            b->what, (int)o->kind);
        }
    }
    if (rc == 0)
        rc = ss__dnn_check(dnnl_primitive_attr_set_post_ops(b->attr, ops),
                           err, "dnnl_primitive_attr_set_post_ops", b->what);
done:
    if (ops)
        dnnl_post_ops_destroy(ops);
    return rc;
}

/* attr = scratchpad + post-ops (+ constant output scales). */
static int
make_attr(qb_t *b, const ss_dnn_postops_t *po, int ndim, const int64_t *dd,
          int nhwc, int n_scales, const float *scales, ss_err_t *err)
{
    int rc;

    if (nhwc)
        rc = attr_nhwc(b, po, dd, err);
    else
        rc = ss__dnn_attr(po, ndim, dd, dnnl_f32, SS_DNN_PLAIN, &b->attr,
                          err, b->what);
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

/* Dense NCHW dims, NHWC in memory when nhwc. */
static int
md_4d(dnnl_memory_desc_t *md, const int64_t *dims, int nhwc,
      dnnl_data_type_t dt, ss_err_t *err, const char *what)
{
    int64_t st[4];

    if (!nhwc)
        return ss__dnn_md_dense(md, 4, dims, dt, err, what);
    st[1] = 1;
    st[3] = dims[1];
    st[2] = dims[3] * dims[1];
    st[0] = dims[2] * dims[3] * dims[1];
    return ss__dnn_md_strided(md, 4, dims, st, dt, err, what);
}

static int
md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
       dnnl_data_type_t dt, ss_err_t *err, const char *what)
{
    dnnl_dims_t d;

    for (int i = 0; i < ndim; i++)
        d[i] = dims[i];
    return ss__dnn_check(dnnl_memory_desc_init_by_tag(md, ndim, d, dt,
                                                      dnnl_format_tag_any),
                         err, "dnnl_memory_desc_init_by_tag", what);
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
    qb_t b = { .what = "low-precision inner product" };
    int rc;

    if ((rc = ss__dnn_prim_alloc(b.what, &b.p, err)) < 0)
        goto done;
    if ((rc = types(d->src_dtype, d->dst_dtype, d->w_dtype, &sdt, &ddt, &wdt,
                    err, b.what)) < 0)
        goto done;
    if (d->m < 1 || d->k < 1 || d->n < 1 || d->w == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape", b.what);
        goto done;
    }
    b.p->dst_ndim = 2;
    memcpy(b.p->dst_dims, dd, sizeof(dd));
    if ((rc = ss__dnn_md_dense(&src, 2, sd, sdt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, 2, dd, ddt, err, b.what)) < 0 ||
        (rc = md_any(&w, 2, wd, wdt, err, b.what)) < 0 ||
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
        (rc = make_attr(&b, &d->post, 2, dd, 0, d->n_scales, d->scales,
                        err)) < 0 ||
        (rc = ss__dnn_pd(&od, b.attr, &b.pd, err, b.what)) < 0)
        goto done;
    if ((rc = ss__dnn_add_arg(b.p, DNNL_ARG_SRC, 0, err)) < 0 ||
        (rc = ss__dnn_add_const(b.p, DNNL_ARG_WEIGHTS, &wuser, d->w,
                                err)) < 0 ||
        (d->bias && (rc = ss__dnn_add_const(b.p, DNNL_ARG_BIAS, &bias,
                                            d->bias, err)) < 0) ||
        (rc = ss__dnn_add_arg(b.p, DNNL_ARG_DST, SS__DNN_SRC_OUT, err)) < 0)
        goto done;
    b.p->n_in = 1;
    rc = ss__dnn_finish(b.p, b.pd, &d->post, 1, err);
done:
    return qb_end(&b, rc, out);
}

static int64_t
or1(int64_t v)
{
    return v == 0 ? 1 : v;
}

static int64_t
out_len(int64_t in, int64_t k, int64_t stride, int64_t dil, int64_t pb,
        int64_t pe)
{
    int64_t span = (k - 1) * dil + 1;

    if (in + pb + pe < span || stride < 1)
        return 0;
    return (in + pb + pe - span) / stride + 1;
}

int
ss_dnn_qconv_new(const ss_dnn_qconv_desc_t *d, ss_dnn_prim_t **out,
                 ss_err_t *err)
{
    dnnl_convolution_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    dnnl_data_type_t sdt, ddt, wdt;
    dnnl_dims_t strides, dil, pl, pr;
    int64_t g = or1(d->group), sd[4] = { d->n, d->ic, d->ih, d->iw };
    int64_t dd[4], wd[5];
    int wn = 0, rc;
    qb_t b = { .what = "low-precision convolution" };

    if ((rc = ss__dnn_prim_alloc(b.what, &b.p, err)) < 0)
        goto done;
    if ((rc = types(d->src_dtype, d->dst_dtype, d->w_dtype, &sdt, &ddt, &wdt,
                    err, b.what)) < 0)
        goto done;
    if (g < 1 || d->oc < 1 || d->kh < 1 || d->kw < 1 || d->ic % g
        || d->oc % g || d->w == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad geometry", b.what);
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        strides[i] = or1(d->stride[i]);
        dil[i] = or1(d->dilation[i]) - 1;
        pl[i] = d->pad_begin[i];
        pr[i] = d->pad_end[i];
        if (strides[i] < 1 || dil[i] < 0 || pl[i] < 0 || pr[i] < 0) {
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: negative stride, "
                            "dilation or pad", b.what);
            goto done;
        }
    }
    dd[0] = d->n;
    dd[1] = d->oc;
    dd[2] = out_len(d->ih, d->kh, strides[0], dil[0] + 1, pl[0], pr[0]);
    dd[3] = out_len(d->iw, d->kw, strides[1], dil[1] + 1, pl[1], pr[1]);
    if (dd[2] < 1 || dd[3] < 1 || d->n < 1 || d->ih < 1 || d->iw < 1) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: empty output", b.what);
        goto done;
    }
    b.p->dst_ndim = 4;
    memcpy(b.p->dst_dims, dd, sizeof(dd));
    if (g > 1)
        wd[wn++] = g;
    wd[wn++] = d->oc / g;
    wd[wn++] = d->ic / g;
    wd[wn++] = d->kh;
    wd[wn++] = d->kw;
    if ((rc = md_4d(&src, sd, d->nhwc, sdt, err, b.what)) < 0 ||
        (rc = md_4d(&dst, dd, d->nhwc, ddt, err, b.what)) < 0 ||
        (rc = md_any(&w, wn, wd, wdt, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&wuser, wn, wd,
                               d->w_dtype == SS_DTYPE_I8 ? dnnl_s8
                                                         : dnnl_f32,
                               err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, 1, &d->oc, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_dilated_convolution_forward_desc_init(
                           &od, dnnl_forward_inference,
                           dnnl_convolution_direct, &src, &w,
                           d->bias ? &bias : NULL, &dst, strides, dil, pl,
                           pr),
                       err, "dnnl_dilated_convolution_forward_desc_init",
                       b.what);
    if (rc < 0 ||
        (rc = make_attr(&b, &d->post, 4, dd, d->nhwc, d->n_scales,
                        d->scales, err)) < 0 ||
        (rc = ss__dnn_pd(&od, b.attr, &b.pd, err, b.what)) < 0)
        goto done;
    if ((rc = ss__dnn_add_arg(b.p, DNNL_ARG_SRC, 0, err)) < 0 ||
        (rc = ss__dnn_add_const(b.p, DNNL_ARG_WEIGHTS, &wuser, d->w,
                                err)) < 0 ||
        (d->bias && (rc = ss__dnn_add_const(b.p, DNNL_ARG_BIAS, &bias,
                                            d->bias, err)) < 0) ||
        (rc = ss__dnn_add_arg(b.p, DNNL_ARG_DST, SS__DNN_SRC_OUT, err)) < 0)
        goto done;
    b.p->n_in = 1;
    rc = ss__dnn_finish(b.p, b.pd, &d->post, 1, err);
done:
    return qb_end(&b, rc, out);
}

int
ss_dnn_convert_new(const ss_dnn_convert_desc_t *d, ss_dnn_prim_t **out,
                   ss_err_t *err)
{
    dnnl_memory_desc_t src, dst;
    dnnl_engine_t eng;
    qb_t b = { .what = "type conversion" };
    int rc;

    if ((rc = ss__dnn_prim_alloc(b.what, &b.p, err)) < 0 ||
        (rc = ss__dnn_engine(&eng, err)) < 0)
        goto done;
    if (ss__dnn_dtype(d->src_dtype) == dnnl_data_type_undef ||
        ss__dnn_dtype(d->dst_dtype) == dnnl_data_type_undef) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: types %d -> %d", b.what,
                        (int)d->src_dtype, (int)d->dst_dtype);
        goto done;
    }
    b.p->dst_ndim = d->ndim;
    if (d->ndim >= 1 && d->ndim <= SS_DNN_MAX_DIMS)
        memcpy(b.p->dst_dims, d->dims, (size_t)d->ndim * sizeof(int64_t));
    if ((d->src_nhwc || d->dst_nhwc) && d->ndim != 4) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: NHWC needs 4 dims",
                        b.what);
        goto done;
    }
    if ((rc = d->ndim == 4
                  ? md_4d(&src, d->dims, d->src_nhwc,
                          ss__dnn_dtype(d->src_dtype), err, b.what)
                  : ss__dnn_md_dense(&src, d->ndim, d->dims,
                                     ss__dnn_dtype(d->src_dtype), err,
                                     b.what)) < 0 ||
        (rc = d->ndim == 4
                  ? md_4d(&dst, d->dims, d->dst_nhwc,
                          ss__dnn_dtype(d->dst_dtype), err, b.what)
                  : ss__dnn_md_dense(&dst, d->ndim, d->dims,
                                     ss__dnn_dtype(d->dst_dtype), err,
                                     b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, d->ndim, d->dims, dnnl_f32, SS_DNN_PLAIN,
                           &b.attr, err, b.what)) < 0)
        goto done;
    if (d->scale != 0.f
        && (rc = ss__dnn_check(dnnl_primitive_attr_set_output_scales(
                                   b.attr, 1, 0, &d->scale),
                               err, "dnnl_primitive_attr_set_output_scales",
                               b.what)) < 0)
        goto done;
    if (d->src_zp != 0
        && (rc = ss__dnn_check(dnnl_primitive_attr_set_zero_points(
                                   b.attr, DNNL_ARG_SRC, 1, 0, &d->src_zp),
                               err, "dnnl_primitive_attr_set_zero_points",
                               b.what)) < 0)
        goto done;
    if (d->dst_zp != 0
        && (rc = ss__dnn_check(dnnl_primitive_attr_set_zero_points(
                                   b.attr, DNNL_ARG_DST, 1, 0, &d->dst_zp),
                               err, "dnnl_primitive_attr_set_zero_points",
                               b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_reorder_primitive_desc_create(&b.pd, &src, eng,
                                                          &dst, eng, b.attr),
                       err, "dnnl_reorder_primitive_desc_create", b.what);
    if (rc < 0)
        goto done;
    if ((rc = ss__dnn_add_arg(b.p, DNNL_ARG_FROM, 0, err)) < 0 ||
        (rc = ss__dnn_add_arg(b.p, DNNL_ARG_TO, SS__DNN_SRC_OUT, err)) < 0)
        goto done;
    b.p->n_in = 1;
    rc = ss__dnn_finish(b.p, b.pd, NULL, 1, err);
done:
    return qb_end(&b, rc, out);
}
