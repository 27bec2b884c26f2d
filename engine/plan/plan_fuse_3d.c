/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 3-D (volumetric) steps of the f32 fusion pass: Conv over [N, C, D, H, W]
 * (a BatchNormalization after it folded in, then the post-op chain of
 * plan_chain.c: activations, a residual Add) and MaxPool / AveragePool /
 * GlobalAveragePool, on oneDNN (engine/dnnl/dnnl_vol.h).
 *
 * DESIGN: source and result stay plain ncdhw -- the layout pass
 * (plan_layout.c) knows 4-D layouts only, and oneDNN's GEMM-based 3-D
 * conv reads and writes plain tensors without reorders.  A step oneDNN
 * has no kernel for, or only its reference code, stays on the C
 * reference kernels (engine/ops/conv.c, pool.c), which compute the
 * same values.  ceil_mode pools stay there too (as in 2-D).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/dnnl/dnnl_vol.h"
#include "engine/plan/internal.h"

/* strides, dilations, pads and kernel_shape of a 3-D window step; 0 when
 * an attribute is malformed or kernel_shape disagrees with k (when k is
 * given). */
static int
window(const ss_node_t *n, const int64_t *k, ss_dnn_vol_window_t *w)
{
    int64_t pads[6], ks[3];

    if (!ss__fz_notset(n)
        || !ss__fz_attr_n(n, "strides", 1, w->stride, 3)
        || !ss__fz_attr_n(n, "dilations", 1, w->dilation, 3)
        || !ss__fz_attr_n(n, "pads", 0, pads, 6)
        || !ss__fz_attr_n(n, "kernel_shape", 0, ks, 3))
        return 0;
    for (int i = 0; i < 3; i++) {
        if (k != NULL && ks[i] && ks[i] != k[i])
            return 0;
        w->k[i] = k != NULL ? k[i] : ks[i];
        if (w->k[i] <= 0)
            return 0;
        w->pad_begin[i] = pads[i];
        w->pad_end[i] = pads[i + 3];
    }
    return 1;
}

static int
slow(const ss_dnn_prim_t *prim)
{
    return strncmp(ss_dnn_prim_impl(prim), "ref", 3) == 0;
}

/* Emits chain c on prim (plain output); 1, or < 0. */
static int
emit(ss__fz_t *fz, ss__chain_t *c, ss_dnn_prim_t *prim, int src,
     ss_err_t *err)
{
    int rc;

    fz->p->vals[c->out].layout = SS_DNN_PLAIN;
    if ((rc = ss__fz_emit(fz, c, prim, &src, 1, err)) < 0)
        return rc;
    return 1;
}

int
ss__fuse_conv3d(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    const ss_tensor_t *x = ss__plan_tensor(p, st->in[0]);
    const ss_tensor_t *w = ss__plan_tensor(p, st->in[1]);
    const ss_tensor_t *y = ss__plan_tensor(p, st->out[0]);
    ss_dnn_conv3d_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    float *wf = NULL, *bf = NULL;
    ss__chain_t c;
    int rc = 0;

    if (!window(st->node, w->dims + 2, &d.win))
        return 0;
    d.n = x->dims[0];
    d.ic = x->dims[1];
    memcpy(d.in, x->dims + 2, 3 * sizeof(int64_t));
    d.oc = w->dims[0];
    d.group = ss__attr_int(st->node, "group", 1);
    d.w = w->data;
    d.bias = st->n_in > 2 && st->in[2] >= 0
             ? ss__plan_tensor(p, st->in[2])->data : NULL;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "Conv3d");
    if ((rc = ss__fz_conv_bn(fz, &c, d.oc, &d.w, ss_tensor_numel(w), &d.bias,
                             &wf, &bf, err)) < 0)
        goto done;
    c.dst_ndim = 5;
    memcpy(c.dst_dims, y->dims, 5 * sizeof(int64_t));
    ss__fz_chain(fz, &c);
    d.post = c.post;
    if ((rc = ss_dnn_conv3d_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    if (slow(prim)) {
        rc = 0;
        goto done;
    }
    rc = emit(fz, &c, prim, st->in[0], err);
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    ss_free(wf);
    ss_free(bf);
    return rc;
}

int
ss__fuse_pool3d(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    const ss_tensor_t *x;
    ss_dnn_pool3d_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    int global = ss__plan_is_op(st, "GlobalAveragePool"), rc;

    if (!(global || ss__plan_is_op(st, "MaxPool")
          || ss__plan_is_op(st, "AveragePool"))
        || st->n_in < 1 || st->in[0] < 0 || st->n_out != 1
        || st->out[0] < 0)
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    if (x->ndim != 5 || x->dtype != SS_DTYPE_F32 || ss_tensor_numel(x) == 0)
        return 0;
    d.n = x->dims[0];
    d.c = x->dims[1];
    memcpy(d.in, x->dims + 2, 3 * sizeof(int64_t));
    if (global) {
        d.alg = SS_DNN_POOL_AVG_EXCLUDE;
        memcpy(d.win.k, d.in, 3 * sizeof(int64_t));
    } else {
        if (ss__attr_int(st->node, "ceil_mode", 0) != 0
            || ss__attr_int(st->node, "storage_order", 0) != 0
            || !window(st->node, NULL, &d.win))
            return 0;
        d.alg = ss__plan_is_op(st, "MaxPool") ? SS_DNN_POOL_MAX
                : ss__attr_int(st->node, "count_include_pad", 0)
                  ? SS_DNN_POOL_AVG_INCLUDE : SS_DNN_POOL_AVG_EXCLUDE;
    }
    if ((rc = ss_dnn_pool3d_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    if (slow(prim)) {
        ss_dnn_prim_free(prim);
        return 0;
    }
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], st->node->op_type);
    return emit(fz, &c, prim, st->in[0], err);
}
