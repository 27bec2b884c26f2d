/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Low-precision compilation, the shared part: what the int8 pass
 * (plan_qdq.c) and the bf16 pass (plan_bf16.c) both need, and the entry
 * point.  Both run before the f32 fusion (plan_fuse.c), which then
 * handles whatever is left; values they add (converted copies) get their
 * layout recorded for the layout pass (plan_layout.c).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/edit.h"
#include "engine/plan/internal.h"

int
ss__lp_chain_last(const ss__chain_t *c)
{
    int last = c->steps[0];

    for (int i = 1; i < c->n_steps; i++)
        if (c->steps[i] > last)
            last = c->steps[i];
    return last;
}

/* Whether post-op o reads a run-time tensor as big as the chain's dst. */
static int
full_binary(const ss__chain_t *c, const ss_dnn_postop_t *o)
{
    int64_t a = 1, b = 1;

    if (o->kind != SS_DNN_PO_BINARY)
        return 0;
    for (int k = 0; k < o->ndim; k++)
        a *= o->dims[k];
    for (int k = 0; k < c->dst_ndim; k++)
        b *= c->dst_dims[k];
    return a == b;
}

void
ss__lp_linear_chain(ss__fz_t *fz, ss__chain_t *c)
{
    ss__chain_t before = *c;

    ss__fz_chain(fz, c);
    for (int i = 0; i < c->post.n; i++) {
        if (!full_binary(c, &c->post.op[i]))
            continue;
        /* oneDNN 2.6 takes its gemm inner product (2-3x slower at int8,
         * measured on the transformer) for a BINARY post-op of the full
         * dst shape, a residual Add: stop the chain before it and let
         * the Add run as its own binary step */
        *c = before;
        if (i > 0) {
            c->max_post = i;
            ss__fz_chain(fz, c);
        }
        break;
    }
}

/* ---- geometry shared by both precisions ------------------------------- */


/* MatMul/Gemm by a constant 2-D weight, f32 activations. */
int
ss__lp_linear_shape(ss__fz_t *fz, int s, ss__lp_lin_t *L, ss__chain_t *c,
                    ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    const ss_tensor_t *a, *b;
    int gemm = ss__plan_is_op(st, "Gemm");

    memset(L, 0, sizeof(*L));
    if (!(gemm || ss__plan_is_op(st, "MatMul")) || st->n_in < 2 || st->n_out < 1
        || st->out[0] < 0 || st->in[0] < 0 || ss__fz_is_const(p, st->in[0])
        || ss__plan_tensor(p, st->in[0])->dtype != SS_DTYPE_F32
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32))
        return 0;
    for (int k = 1; k < st->n_out; k++)
        if (st->out[k] >= 0)
            return 0;
    a = ss__plan_tensor(p, st->in[0]);
    b = ss__plan_tensor(p, st->in[1]);
    if (b->ndim != 2 || a->ndim < 2)
        return 0;
    if (gemm) {
        if (ss__attr_int(st->node, "transA", 0) != 0 || a->ndim != 2
            || ss__attr_float(st->node, "alpha", 1.0f) != 1.0f)
            return 0;
        L->w_nk = ss__attr_int(st->node, "transB", 0) != 0;
    }
    L->k = a->dims[a->ndim - 1];
    L->n = L->w_nk ? b->dims[0] : b->dims[1];
    if ((L->w_nk ? b->dims[1] : b->dims[0]) != L->k || L->k == 0
        || L->n == 0)
        return 0;
    L->m = ss_tensor_numel(a) / L->k;
    if (L->m == 0)
        return 0;
    L->wv = st->in[1];
    ss__fz_chain_start(c, s, st->in[0], st->out[0], gemm ? "Gemm" : "MatMul");
    c->dst_ndim = 2;
    c->dst_dims[0] = L->m;
    c->dst_dims[1] = L->n;
    if (gemm && st->n_in > 2 && st->in[2] >= 0) {
        const ss_tensor_t *ct = ss__plan_tensor(p, st->in[2]);
        float beta = ss__attr_float(st->node, "beta", 1.0f);

        if (!ss__fz_const_of(p, st->in[2], SS_DTYPE_F32)
            || ss_tensor_numel(ct) != L->n || ct->dims[ct->ndim - 1] != L->n)
            return 0;
        L->bias = ct->data;
        if (beta != 1.0f) {
            if ((L->owned = ss_malloc((size_t)L->n * sizeof(float))) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory to fuse");
            for (int64_t i = 0; i < L->n; i++)
                L->owned[i] = beta * L->bias[i];
            L->bias = L->owned;
        }
    } else {
        L->bias = ss__fz_take_bias(fz, c, L->n);
    }
    return 1;
}

/* Conv geometry from the node; 0 when it is not a plain 2-D Conv. */
int
ss__lp_conv_shape(const ss_plan_t *p, const ss_step_t *st,
                  ss_dnn_qconv_desc_t *d)
{
    const ss_tensor_t *x, *w;
    int64_t pads[4], ks[2];

    if (!ss__plan_is_op(st, "Conv") || st->n_in < 2 || st->in[0] < 0
        || ss__fz_is_const(p, st->in[0])
        || ss__plan_tensor(p, st->in[0])->dtype != SS_DTYPE_F32
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32))
        return 0;
    if (!ss__fz_notset(st->node))
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    w = ss__plan_tensor(p, st->in[1]);
    if (x->ndim != 4 || w->ndim != 4
        || ss__plan_tensor(p, st->out[0])->ndim != 4)
        return 0;
    if (st->n_in > 2 && st->in[2] >= 0
        && !ss__fz_const_of(p, st->in[2], SS_DTYPE_F32))
        return 0;
    if (!ss__fz_attr_n(st->node, "strides", 1, d->stride, 2)
        || !ss__fz_attr_n(st->node, "dilations", 1, d->dilation, 2)
        || !ss__fz_attr_n(st->node, "pads", 0, pads, 4)
        || !ss__fz_attr_n(st->node, "kernel_shape", 0, ks, 2))
        return 0;
    if ((ks[0] && ks[0] != w->dims[2]) || (ks[1] && ks[1] != w->dims[3]))
        return 0;
    d->n = x->dims[0];
    d->ic = x->dims[1];
    d->ih = x->dims[2];
    d->iw = x->dims[3];
    d->oc = w->dims[0];
    d->kh = w->dims[2];
    d->kw = w->dims[3];
    d->group = ss__attr_int(st->node, "group", 1);
    d->pad_begin[0] = pads[0];
    d->pad_begin[1] = pads[1];
    d->pad_end[0] = pads[2];
    d->pad_end[1] = pads[3];
    d->bias = st->n_in > 2 && st->in[2] >= 0
              ? ss__plan_tensor(p, st->in[2])->data : NULL;
    return 1;
}

/* ---- inserted steps --------------------------------------------------- */

/* A step to insert before (after = 0) or after plan step `at`. */


/* The NHWC copy of v made so far, or -1. */
int
ss__lp_twin_of(const ss__lp_inslist_t *l, int v)
{
    for (int i = 0; i < l->n_twin; i++)
        if (l->twin[2 * i] == v)
            return l->twin[2 * i + 1];
    return -1;
}

void
ss__lp_twin_add(ss__lp_inslist_t *l, int v, int nhwc)
{
    if (l->n_twin < 64) {
        l->twin[2 * l->n_twin] = v;
        l->twin[2 * l->n_twin + 1] = nhwc;
        l->n_twin++;
    }
}

/* A new plan value: v's shape in type dt, in the arena, stored in layout
 * l (plan_layout.c reads it: it must not "fix" what we convert). */
int
ss__lp_add_pval(ss_plan_t *p, int v, ss_dtype_t dt, ss_dnn_layout_t l,
         ss_err_t *err)
{
    ss_pval_t *vals = ss_realloc(p->vals, ((size_t)p->n_vals + 1)
                                          * sizeof(*vals));
    ss_pval_t *nv;

    if (vals == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for plan values");
    p->vals = vals;
    nv = &p->vals[p->n_vals];
    memset(nv, 0, sizeof(*nv));
    nv->t = p->vals[v].t;
    nv->t.dtype = dt;
    nv->t.data = NULL;
    nv->kind = SS_PV_ARENA;
    nv->alias = -1;
    nv->layout = l;
    (void)ss__tensor_bytes(&nv->t, &nv->bytes);
    return p->n_vals++;
}

/* Whether v is (or is viewed by) a graph output. */
int
ss__lp_is_graph_out(const ss_plan_t *p, int v)
{
    for (int i = 0; i < p->g->n_outputs; i++)
        for (int o = p->g->outputs[i]; o >= 0; o = p->vals[o].alias)
            if (o == v)
                return 1;
    return 0;
}

/* Queues a conversion step in -> out (cd says how) before/after `at`. */
int
ss__lp_ins_convert(ss_plan_t *p, ss__lp_inslist_t *l, int at, int after,
            const ss_dnn_convert_desc_t *cd, int in, int out,
            const char *what, ss_err_t *err)
{
    ss_step_t st = { 0 };
    int rc;

    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        ss__lp_ins_t *v = ss_realloc(l->v, (size_t)cap * sizeof(*v));

        if (v == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        l->v = v;
        l->cap = cap;
    }
    st.kind = SS_STEP_DNN;
    st.node = p->steps[at].node;
    st.n_in = 1;
    st.n_out = 1;
    snprintf(st.what, sizeof(st.what), "%s", what);
    if ((st.in = ss_malloc(sizeof(int))) == NULL
        || (st.out = ss_malloc(sizeof(int))) == NULL) {
        ss__plan_step_clear(&st);
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    }
    st.in[0] = in;
    st.out[0] = out;
    if ((rc = ss_dnn_convert_new(cd, &st.prim, err)) < 0) {
        ss__plan_step_clear(&st);
        return rc;
    }
    if (ss_dnn_prim_scratch_size(st.prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(st.prim);
    l->v[l->n++] = (ss__lp_ins_t){ at, after, st };
    return 0;
}

/* Rebuilds the step array with the queued steps in place; drops the
 * holes fusion left.  Takes the queued steps. */
int
ss__lp_ins_apply(ss_plan_t *p, ss__lp_inslist_t *l, ss_err_t *err)
{
    ss_step_t *steps;
    int n = 0;

    if (l->n == 0)
        return 0;
    if ((steps = ss_calloc((size_t)(p->n_steps + l->n), sizeof(*steps)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    for (int s = 0; s < p->n_steps; s++) {
        for (int i = 0; i < l->n; i++)
            if (l->v[i].at == s && !l->v[i].after)
                steps[n++] = l->v[i].st;
        if (p->steps[s].kind != 0)
            steps[n++] = p->steps[s];
        for (int i = 0; i < l->n; i++)
            if (l->v[i].at == s && l->v[i].after)
                steps[n++] = l->v[i].st;
    }
    for (int s = 0; s < n; s++)
        if (steps[s].n_in > p->max_io)
            p->max_io = steps[s].n_in;
    ss_free(p->steps);
    p->steps = steps;
    p->n_steps = n;
    p->cap_steps = n;
    l->n = 0;
    return 0;
}

void
ss__lp_ins_free(ss__lp_inslist_t *l)
{
    for (int i = 0; i < l->n; i++)
        ss__plan_step_clear(&l->v[i].st);
    ss_free(l->v);
}

int
ss__plan_lowp(ss_plan_t *p, ss_err_t *err)
{
    int rc;

    if ((rc = ss__lp_int8(p, err)) < 0)
        return rc;
    if (ss_graph_precision(p->g) == SS_DTYPE_BF16)
        rc = ss__lp_bf16(p, err);
    return rc;
}
