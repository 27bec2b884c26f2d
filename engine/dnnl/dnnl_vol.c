/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 3-D convolution and pooling (engine/dnnl/dnnl_vol.h), built with the
 * constructor kit of dnnl_build.c.
 *
 * DESIGN: video and volume nets (r3d_18, 3-D U-Nets) ran on the C
 * reference kernels, ~0.5 GMAC/s.  oneDNN 2.6 has 3-D kernels for every
 * layout; with plain ncdhw source and destination it convolves through
 * its im2col + GEMM code (gemm:jit), which needs no layout pass and no
 * reorders between steps.  Post-ops (activations, a residual add) follow
 * as for 2-D.
 *
 * THREADS: constructors are [any]; they touch only the object they build.
 */

#include "config.h"

#include "engine/dnnl/internal.h"
#include "engine/dnnl/dnnl_vol.h"

static const int src_in[] = { DNNL_ARG_SRC };

static int64_t
or1(int64_t v)
{
    return v ? v : 1;
}

/* oneDNN's terms of window w over in[3] (dil is dilation - 1); out[3] the
 * output's spatial dims. */
static int
vol_window(const ss_dnn_vol_window_t *w, const int64_t in[3],
           ss__dnn_window_t *win, int64_t out[3], ss_err_t *err,
           const char *what)
{
    for (int i = 0; i < 3; i++) {
        int64_t span;

        win->kernel[i] = w->k[i];
        win->strides[i] = or1(w->stride[i]);
        win->dil[i] = or1(w->dilation[i]) - 1;
        win->pl[i] = w->pad_begin[i];
        win->pr[i] = w->pad_end[i];
        if (w->k[i] < 1 || win->strides[i] < 1 || win->dil[i] < 0
            || win->pl[i] < 0 || win->pr[i] < 0 || in[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: bad kernel, "
                              "stride, dilation or pad", what);
        span = in[i] + win->pl[i] + win->pr[i]
               - ((w->k[i] - 1) * (win->dil[i] + 1) + 1);
        if (span < 0)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: empty output",
                              what);
        out[i] = span / win->strides[i] + 1;
    }
    return 0;
}

int
ss_dnn_conv3d_new(const ss_dnn_conv3d_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    dnnl_convolution_desc_t od;
    dnnl_memory_desc_t src, w, wuser, bias, dst;
    ss__dnn_window_t win;
    int64_t g = or1(d->group);
    int64_t sd[5] = { d->n, d->ic, d->in[0], d->in[1], d->in[2] };
    int64_t dd[5], wd[6];
    const ss__dnn_carg_t c[] = { { DNNL_ARG_WEIGHTS, &wuser, d->w, 0 },
                                 { DNNL_ARG_BIAS, &bias, d->bias, 1 } };
    int wn = 0, rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "3-D convolution", err)) < 0)
        goto done;
    if (g < 1 || d->n < 1 || d->oc < 1 || d->ic < 1 || d->ic % g
        || d->oc % g || d->w == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad geometry", b.what);
        goto done;
    }
    if ((rc = vol_window(&d->win, d->in, &win, dd + 2, err, b.what)) < 0)
        goto done;
    dd[0] = d->n;
    dd[1] = d->oc;
    ss__dnn_set_dst(b.p, 5, dd);
    if (g > 1)
        wd[wn++] = g;
    wd[wn++] = d->oc / g;
    wd[wn++] = d->ic / g;
    for (int i = 0; i < 3; i++)
        wd[wn++] = d->win.k[i];
    if ((rc = ss__dnn_md_dense(&src, 5, sd, dnnl_f32, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, 5, dd, dnnl_f32, err, b.what)) < 0 ||
        (rc = ss__dnn_md_any(&w, wn, wd, dnnl_f32, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&wuser, wn, wd, dnnl_f32, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&bias, 1, &d->oc, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_dilated_convolution_forward_desc_init(
                           &od, dnnl_forward_inference,
                           dnnl_convolution_direct, &src, &w,
                           d->bias ? &bias : NULL, &dst, win.strides,
                           win.dil, win.pl, win.pr),
                       err, "dnnl_dilated_convolution_forward_desc_init",
                       b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(&d->post, 5, dd, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, c, 2, DNNL_ARG_DST, &d->post,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}

int
ss_dnn_pool3d_new(const ss_dnn_pool3d_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    dnnl_pooling_v2_desc_t od;
    dnnl_memory_desc_t src, dst;
    dnnl_alg_kind_t alg;
    ss__dnn_window_t win;
    int64_t sd[5] = { d->n, d->c, d->in[0], d->in[1], d->in[2] }, dd[5];
    int rc;
    ss__dnn_build_t b;

    if ((rc = ss__dnn_build_start(&b, "3-D pooling", err)) < 0)
        goto done;
    switch (d->alg) {
    case SS_DNN_POOL_MAX: alg = dnnl_pooling_max; break;
    case SS_DNN_POOL_AVG_INCLUDE: alg = dnnl_pooling_avg_include_padding;
        break;
    case SS_DNN_POOL_AVG_EXCLUDE: alg = dnnl_pooling_avg_exclude_padding;
        break;
    default:
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: alg %d", b.what,
                        (int)d->alg);
        goto done;
    }
    if (d->n < 1 || d->c < 1) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape", b.what);
        goto done;
    }
    if ((rc = vol_window(&d->win, d->in, &win, dd + 2, err, b.what)) < 0)
        goto done;
    dd[0] = d->n;
    dd[1] = d->c;
    ss__dnn_set_dst(b.p, 5, dd);
    if ((rc = ss__dnn_md_dense(&src, 5, sd, dnnl_f32, err, b.what)) < 0 ||
        (rc = ss__dnn_md_dense(&dst, 5, dd, dnnl_f32, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_pooling_v2_forward_desc_init(
                           &od, dnnl_forward_inference, alg, &src, &dst,
                           win.strides, win.kernel, win.dil, win.pl, win.pr),
                       err, "dnnl_pooling_v2_forward_desc_init", b.what);
    if (rc < 0 ||
        (rc = ss__dnn_attr(NULL, 5, dd, dnnl_f32, SS_DNN_PLAIN, &b.attr, err,
                           b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, &od, src_in, 1, NULL, 0, DNNL_ARG_DST, NULL,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}
