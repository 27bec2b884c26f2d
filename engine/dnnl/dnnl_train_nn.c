/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, training: batch normalization (batch
 * statistics), pooling and element-wise functions, forward for training
 * and backward, on 4-D activations in the layouts the trainer keeps
 * between its blocked convolutions (NCHW, nChw16c, NHWC).
 *
 * Why: the trainer's portable-C kernels for these ops were most of a
 * CNN step once its convolutions ran blocked (BatchNorm, Relu and
 * pooling about 1.5 of 2.6 ms of the fixture's step at one thread), and
 * they cost the same in bf16 as in f32.  oneDNN's jit kernels run them
 * in the activations' own layout, in f32 or bf16.
 *
 * Outputs besides the destination (a forward's mean and variance, a
 * pooling workspace, a backward's scale and shift gradients) are in[]
 * slots that the primitive writes: the caller gives writable buffers
 * there (ss_dnn_run passes every pointer to oneDNN as it is).
 *
 * THREADS: [any]; everything here touches only the object being built.
 */

#include "config.h"

#include <string.h>

#include "engine/dnnl/internal.h"

static int
act_dtype(ss_dtype_t t, dnnl_data_type_t *dt, ss_err_t *err,
          const char *what)
{
    if (t != SS_DTYPE_F32 && t != SS_DTYPE_BF16 && t != 0)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: dtype %d", what,
                          (int)t);
    *dt = t == SS_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    return 0;
}

/* ---- batch normalization ------------------------------------------------- */

int
ss_dnn_bnorm_train_new(const ss_dnn_bnorm_train_desc_t *d, int bwd,
                       ss_dnn_prim_t **out, ss_err_t *err)
{
    static const int fwd_in[] = { DNNL_ARG_SRC, DNNL_ARG_SCALE,
                                  DNNL_ARG_SHIFT, DNNL_ARG_MEAN,
                                  DNNL_ARG_VARIANCE };
    static const int bwd_in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_SRC,
                                  DNNL_ARG_MEAN, DNNL_ARG_VARIANCE,
                                  DNNL_ARG_SCALE, DNNL_ARG_SHIFT,
                                  DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT };
    const unsigned flags = dnnl_use_scale | dnnl_use_shift;
    int64_t dims[4] = { d->n, d->c, d->h, d->w };
    dnnl_batch_normalization_desc_t fwd, od;
    dnnl_primitive_desc_t fwd_pd = NULL;
    dnnl_memory_desc_t md;
    dnnl_data_type_t dt = dnnl_f32;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, bwd ? "batch normalization backward"
                                          : "batch normalization (training)",
                                  err)) < 0)
        goto done;
    if ((rc = act_dtype(d->dtype, &dt, err, b.what)) < 0)
        goto done;
    if (d->n < 1 || d->c < 1 || d->h < 1 || d->w < 1 || !(d->eps >= 0)) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape or epsilon",
                        b.what);
        goto done;
    }
    ss__dnn_set_dst(b.p, 4, dims);
    if ((rc = ss__dnn_md_layout(&md, 4, dims, dt, d->layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_batch_normalization_forward_desc_init(
                           &fwd, dnnl_forward_training, &md, d->eps, flags),
                       err, "dnnl_batch_normalization_forward_desc_init",
                       b.what);
    if (rc < 0)
        goto done;
    if (!bwd) {
        rc = ss__dnn_build_op(&b, &fwd, fwd_in, 5, NULL, 0, DNNL_ARG_DST,
                              NULL, err);
        goto done;
    }
    if ((rc = ss__dnn_pd(&fwd, NULL, &fwd_pd, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_batch_normalization_backward_desc_init(
                           &od, dnnl_backward, &md, &md, d->eps, flags),
                       err, "dnnl_batch_normalization_backward_desc_init",
                       b.what);
    if (rc < 0 || (rc = ss__dnn_bwd_pd(&b, &od, fwd_pd, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, bwd_in, 8, NULL, 0, DNNL_ARG_DIFF_SRC,
                          NULL, err);
done:
    if (fwd_pd)
        dnnl_primitive_desc_destroy(fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}

/* ---- pooling ------------------------------------------------------------- */

int
ss_dnn_pool_train_new(const ss_dnn_pool_desc_t *d, int bwd,
                      ss_dnn_prim_t **out, size_t *ws_bytes, ss_err_t *err)
{
    static const int fwd_in[] = { DNNL_ARG_SRC, DNNL_ARG_WORKSPACE };
    static const int bwd_in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_WORKSPACE };
    int64_t sd[4] = { d->n, d->c, d->ih, d->iw }, dd[4];
    dnnl_pooling_v2_desc_t fwd, od;
    dnnl_primitive_desc_t fwd_pd = NULL;
    dnnl_memory_desc_t src, dst;
    const dnnl_memory_desc_t *ws;
    dnnl_data_type_t dt = dnnl_f32;
    dnnl_alg_kind_t alg;
    ss__dnn_window_t win;
    ss__dnn_build_t b;
    int max = d->alg == SS_DNN_POOL_MAX, rc;

    *ws_bytes = 0;
    if ((rc = ss__dnn_build_start(&b, bwd ? "pooling backward"
                                          : "pooling (training)", err)) < 0)
        goto done;
    if ((rc = act_dtype(d->dtype, &dt, err, b.what)) < 0)
        goto done;
    if (d->nsp != 0 && d->nsp != 2) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: 2-D only", b.what);
        goto done;
    }
    if ((rc = ss__dnn_pool_geom(d, &alg, &win, dd, err, b.what)) < 0)
        goto done;
    if (d->n < 1 || d->c < 1 || d->ih < 1 || d->iw < 1 || dd[2] < 1 ||
        dd[3] < 1) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: bad shape", b.what);
        goto done;
    }
    if ((rc = ss__dnn_md_layout(&src, 4, sd, dt, d->layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_md_layout(&dst, 4, dd, dt, d->layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_pooling_v2_forward_desc_init(
                           &fwd, dnnl_forward_training, alg, &src, &dst,
                           win.strides, win.kernel, win.dil, win.pl, win.pr),
                       err, "dnnl_pooling_v2_forward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_pd(&fwd, NULL, &fwd_pd, err, b.what)) < 0)
        goto done;
    /* max pooling keeps where each maximum was (the workspace) for its
     * backward; average pooling needs nothing */
    ws = dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_workspace_md, 0);
    if (max && (ws == NULL || ws->ndims == 0)) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: no workspace", b.what);
        goto done;
    }
    if (max)
        *ws_bytes = dnnl_memory_desc_get_size(ws);
    if (!bwd) {
        ss__dnn_set_dst(b.p, 4, dd);
        rc = ss__dnn_build_op(&b, &fwd, fwd_in, max ? 2 : 1, NULL, 0,
                              DNNL_ARG_DST, NULL, err);
        goto done;
    }
    ss__dnn_set_dst(b.p, 4, sd);
    rc = ss__dnn_check(dnnl_pooling_v2_backward_desc_init(
                           &od, alg, &src, &dst, win.strides, win.kernel,
                           win.dil, win.pl, win.pr),
                       err, "dnnl_pooling_v2_backward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_bwd_pd(&b, &od, fwd_pd, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, bwd_in, max ? 2 : 1, NULL, 0,
                          DNNL_ARG_DIFF_SRC, NULL, err);
done:
    if (fwd_pd)
        dnnl_primitive_desc_destroy(fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}

/* ---- element-wise backward ------------------------------------------------- */

int
ss_dnn_eltwise_bwd_new(const ss_dnn_eltwise_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err)
{
    static const int in[] = { DNNL_ARG_DIFF_DST, DNNL_ARG_SRC };
    dnnl_alg_kind_t alg = ss__dnn_eltwise_alg(d->alg);
    dnnl_eltwise_desc_t fwd, od;
    dnnl_primitive_desc_t fwd_pd = NULL;
    dnnl_memory_desc_t md;
    dnnl_data_type_t dt = dnnl_f32;
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "eltwise backward", err)) < 0)
        goto done;
    if ((rc = act_dtype(d->dtype, &dt, err, b.what)) < 0)
        goto done;
    if (alg == dnnl_alg_kind_undef || d->numel < 1) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: alg %d, %lld elements",
                        b.what, (int)d->alg, (long long)d->numel);
        goto done;
    }
    /* element by element: any layout is one flat run of numel */
    ss__dnn_set_dst(b.p, 1, &d->numel);
    if ((rc = ss__dnn_md_dense(&md, 1, &d->numel, dt, err, b.what)) < 0 ||
        (rc = ss__dnn_attr(NULL, 0, NULL, dnnl_f32, SS_DNN_PLAIN, &b.attr,
                           err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_eltwise_forward_desc_init(
                           &fwd, dnnl_forward_training, alg, &md, d->alpha,
                           d->beta),
                       err, "dnnl_eltwise_forward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_pd(&fwd, NULL, &fwd_pd, err, b.what)) < 0)
        goto done;
    rc = ss__dnn_check(dnnl_eltwise_backward_desc_init(&od, alg, &md, &md,
                                                       d->alpha, d->beta),
                       err, "dnnl_eltwise_backward_desc_init", b.what);
    if (rc < 0 || (rc = ss__dnn_bwd_pd(&b, &od, fwd_pd, err)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, 2, NULL, 0, DNNL_ARG_DIFF_SRC, NULL,
                          err);
done:
    if (fwd_pd)
        dnnl_primitive_desc_destroy(fwd_pd);
    return ss__dnn_build_end(&b, rc, out);
}
