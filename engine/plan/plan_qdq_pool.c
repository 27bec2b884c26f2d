/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8 pooling between int8 convs (plan_qdq.c has the convs).
 *
 * DESIGN: quantizers put the Q after a MaxPool (Conv -> Relu -> MaxPool
 * -> Q -> DQ -> Conv) and after a Flatten (... -> Flatten -> Q -> DQ ->
 * Gemm).  A per-tensor Q commutes with a max (it is monotone) and with
 * any reshaping, so before fusion the Q moves before the pool or the
 * view: the conv's chain then ends in the Q and the conv writes int8;
 * the pool runs on int8 NHWC (oneDNN 2.6 pools int8 NCHW on its
 * reference code only) on the NHWC copy the conv wrote.
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <stdio.h>
#include <string.h>

#include "engine/plan/plan_qdq.h"

/* The one step that reads v (not a graph output, no views), or -1. */
static int
sole_reader(const ss_plan_t *p, int v)
{
    int r = -1;

    if (ss__plan_is_graph_out(p, v) || ss__plan_has_views(p, v))
        return -1;
    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].n_in; k++)
            if (p->steps[s].in[k] == v) {
                if (r >= 0 && r != s)
                    return -1;
                r = s;
            }
    return r;
}

/* Whether q is a QuantizeLinear on its reference kernel with one
 * constant scale (and zero point). */
static int
q_per_tensor(const ss_plan_t *p, const ss_step_t *q)
{
    if (q->kind != SS_STEP_REF || !ss__plan_is_op(q, "QuantizeLinear")
        || q->n_in < 2 || q->in[0] < 0 || q->out[0] < 0
        || !ss__fz_const_of(p, q->in[1], SS_DTYPE_F32)
        || ss_tensor_numel(ss__plan_tensor(p, q->in[1])) != 1)
        return 0;
    return !(q->n_in > 2 && q->in[2] >= 0
             && (!ss__fz_is_const(p, q->in[2])
                 || ss_tensor_numel(ss__plan_tensor(p, q->in[2])) != 1));
}

/* x -> Flatten/Reshape (a view f) -> QuantizeLinear (per tensor) becomes
 * x -> QuantizeLinear -> the same view of the int8 result (Q is element-
 * wise), so the conv writing x ends in the Q.  Only where f is x's one
 * reader and the Q f's. */
static int
hoist_q_view(ss_plan_t *p, int s, ss_err_t *err)
{
    ss_step_t *q = &p->steps[s];
    int f, x, xq, y;

    if (!q_per_tensor(p, q))
        return 0;
    f = q->in[0];
    x = p->vals[f].alias;
    y = q->out[0];
    if (x < 0 || p->vals[x].alias >= 0 || ss__fz_is_const(p, x)
        || sole_reader(p, f) != s || ss__plan_is_graph_out(p, x)
        || ss__plan_tensor(p, y)->dtype == SS_DTYPE_UNDEFINED)
        return 0;
    for (int v = 0; v < p->n_vals; v++)
        if (v != f && p->vals[v].alias == x)
            return 0;
    for (int t = 0; t < p->n_steps; t++)
        for (int k = 0; k < p->steps[t].n_in; k++)
            if (p->steps[t].in[k] == x)
                return 0;
    if ((xq = ss__plan_add_value(p, x, ss__plan_tensor(p, y)->dtype,
                                 SS_DNN_PLAIN, err)) < 0)
        return xq;
    q = &p->steps[s];
    q->in[0] = x;
    q->out[0] = xq;
    p->vals[y].alias = xq;
    return 1;
}

/* MaxPool -> QuantizeLinear (per tensor) becomes QuantizeLinear ->
 * MaxPool on int8 (Q(max x) = max Q(x), Q being monotone): the Q ends the
 * conv's chain (take_q), the pool runs on int8 (ss__qdq_pool), where the
 * conv wrote f32, the pool ran f32 and a reorder quantized it.  Where
 * oneDNN cannot build the pool nothing moves.  The steps trade places:
 * nothing between them reads the pool's f32 result (the Q's alone). */
static int
hoist_q(ss_plan_t *p, int s, ss_err_t *err)
{
    ss_step_t *pool = &p->steps[s], *q, tmp;
    ss_dnn_pool_desc_t d;
    ss_dnn_prim_t *prim = NULL;
    const ss_tensor_t *z;
    int sq, x, m, y, xq, rc;

    if (pool->kind != SS_STEP_REF || !ss__plan_is_op(pool, "MaxPool")
        || pool->n_in != 1 || pool->out[0] < 0
        || (pool->n_out > 1 && pool->out[1] >= 0)
        || !ss__fz_pool_desc(p, pool, &d) || d.dtype != SS_DTYPE_F32
        || d.nsp != 2)
        return 0;
    x = pool->in[0];
    m = pool->out[0];
    if ((sq = sole_reader(p, m)) < 0)
        return 0;
    q = &p->steps[sq];
    if (!q_per_tensor(p, q) || q->in[0] != m)
        return 0;
    y = q->out[0];
    z = ss__plan_tensor(p, y);
    d.dtype = z->dtype;
    if ((rc = ss_dnn_pool_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    if ((xq = ss__plan_add_value(p, x, d.dtype, SS_DNN_PLAIN, err)) < 0) {
        ss_dnn_prim_free(prim);
        return xq;
    }
    pool = &p->steps[s];
    q = &p->steps[sq];
    tmp = *pool;
    *pool = *q;
    *q = tmp;
    pool = &p->steps[sq];       /* the pool, now after the Q */
    q = &p->steps[s];
    q->in[0] = x;
    q->out[0] = xq;
    pool->in[0] = xq;
    pool->out[0] = y;
    pool->kind = SS_STEP_DNN;
    pool->prim = prim;
    snprintf(pool->what, sizeof(pool->what), "int8 MaxPool");
    if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
    return 1;
}

/* An int8 MaxPool (hoist_q) runs NHWC (oneDNN 2.6 pools int8 NCHW on its
 * reference code only): on the NHWC copy an int8 conv wrote, or else on
 * one converted here, into an NHWC result, the next int8 conv's source
 * (twin), with a conversion to NCHW for any other reader. */
int
ss__qdq_pool(ss_plan_t *p, int s, qpass_t *qp, ss_err_t *err)
{
    ss_step_t *st = &p->steps[s], ref;
    ss_dnn_convert_desc_t cd = { .ndim = 4, .src_nhwc = 1 };
    ss_dnn_pool_desc_t d;
    ss_dnn_prim_t *prim = NULL;
    int xs, ys, y, rc;

    if (st->kind != SS_STEP_DNN || strcmp(st->what, "int8 MaxPool") != 0)
        return 0;
    ref = *st;                  /* the node's geometry, read as hoist_q did */
    ref.kind = SS_STEP_REF;
    if (!ss__fz_pool_desc(p, &ref, &d))
        return 0;
    y = st->out[0];
    d.layout = SS_DNN_NHWC;
    if ((rc = ss_dnn_pool_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);   /* stays NCHW */
    if ((xs = twin_of(qp, st->in[0])) < 0) {
        ss_dnn_convert_desc_t to = { .ndim = 4, .dst_nhwc = 1 };

        if ((xs = ss__plan_add_value(p, st->in[0], d.dtype, SS_DNN_NHWC,
                                     err)) < 0) {
            ss_dnn_prim_free(prim);
            return xs;
        }
        st = &p->steps[s];
        to.src_dtype = to.dst_dtype = d.dtype;
        memcpy(to.dims, ss__plan_tensor(p, st->in[0])->dims,
               4 * sizeof(int64_t));
        if ((rc = ss__plan_ins_convert(p, &qp->il, s, 0, &to, st->in[0], xs,
                                       "to NHWC", err)) < 0) {
            ss_dnn_prim_free(prim);
            return rc;
        }
        twin_add(qp, st->in[0], xs);
    }
    if ((ys = ss__plan_add_value(p, y, d.dtype, SS_DNN_NHWC, err)) < 0) {
        ss_dnn_prim_free(prim);
        return ys;
    }
    st = &p->steps[s];
    ss_dnn_prim_free(st->prim);
    st->prim = prim;
    st->in[0] = xs;
    st->out[0] = ys;
    if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
    cd.src_dtype = cd.dst_dtype = d.dtype;
    memcpy(cd.dims, ss__plan_tensor(p, y)->dims, 4 * sizeof(int64_t));
    if ((rc = ss__plan_ins_convert(p, &qp->il, s, 1, &cd, ys, y, "to NCHW",
                                   err)) < 0)
        return rc;
    twin_add(qp, y, ys);
    return 1;
}

int
ss__qdq_hoist(ss_plan_t *p, int s, ss_err_t *err)
{
    int rc = hoist_q(p, s, err);

    return rc != 0 ? rc : hoist_q_view(p, s, err);
}
