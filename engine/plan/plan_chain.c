/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fusion toolkit: what every anchor uses, whichever pass it belongs
 * to (the f32 fusion of plan_fuse.c, the int8 pass of plan_qdq.c, the
 * bf16 pass of plan_bf16.c).  It is called by those passes and calls
 * nothing in them.
 *
 * DESIGN: an anchor turns a reference step of an op oneDNN runs well (a
 * MatMul, a Conv...) into a oneDNN step.  A pass builds a reader index of
 * the plan once (ss__fz_init: who reads each value, who produces it, which
 * values are graph outputs), asks whether a step's operands are constants
 * of the right type and shape, starts a chain at the anchor
 * (ss__fz_chain_start), absorbs the single-use consumers that map onto
 * oneDNN post-ops (ss__fz_chain), creates the primitive, and commits the
 * chain as one step (ss__fz_emit).  The fused step takes the place of the
 * chain's LAST step, so every operand of a post-op has been computed by
 * then; the other steps of the chain become holes (kind 0) that the pass
 * drops at its end.  Commits do not update the reader index: a step it
 * names may have become a hole or a fused step since; ss__fz_single
 * answers with reference steps only, and ss__lay_dst, which needs every
 * reader, walks the steps instead.
 *
 * THREADS: runs inside ss_plan_new; no state of its own.
 */

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/gelu_pat.h"
#include "engine/plan/internal.h"

/* ---- reader index ------------------------------------------------------ */

int
ss__fz_init(ss__fz_t *fz, ss_plan_t *p)
{
    int n = p->n_vals, total = 0;

    memset(fz, 0, sizeof(*fz));
    fz->p = p;
    if ((fz->start = ss_calloc((size_t)n + 2, sizeof(int))) == NULL
        || (fz->is_out = ss_calloc((size_t)n + 1, 1)) == NULL
        || (fz->prod = ss_malloc(((size_t)n + 1) * sizeof(int))) == NULL)
        return -1;
    for (int v = 0; v < n; v++)
        fz->prod[v] = -1;
    for (int i = 0; i < p->g->n_outputs; i++)
        for (int v = p->g->outputs[i]; v >= 0; v = p->vals[v].alias)
            fz->is_out[v] = 1;
    /* A tapped value stays whole and plain as a graph output does. */
    for (int i = 0; p->taps && i < p->g->n_taps; i++)
        for (int v = p->g->taps[i]; v >= 0; v = p->vals[v].alias)
            fz->is_out[v] = 1;
    for (int s = 0; s < p->n_steps; s++) {
        for (int k = 0; k < p->steps[s].n_in; k++)
            if (p->steps[s].in[k] >= 0) {
                fz->start[ss__plan_root(p, p->steps[s].in[k]) + 1]++;
                total++;
            }
        for (int k = 0; k < p->steps[s].n_out; k++)
            if (p->steps[s].out[k] >= 0)
                fz->prod[p->steps[s].out[k]] = s;
    }
    for (int v = 0; v < n; v++)
        fz->start[v + 1] += fz->start[v];
    if ((fz->list = ss_malloc(((size_t)total + 1) * sizeof(int))) == NULL)
        return -1;
    {
        int *fill = ss_malloc(((size_t)n + 1) * sizeof(int));

        if (fill == NULL)
            return -1;
        memcpy(fill, fz->start, (size_t)n * sizeof(int));
        for (int s = 0; s < p->n_steps; s++)
            for (int k = 0; k < p->steps[s].n_in; k++)
                if (p->steps[s].in[k] >= 0)
                    fz->list[fill[ss__plan_root(p, p->steps[s].in[k])]++] = s;
        ss_free(fill);
    }
    return 0;
}

void
ss__fz_close(ss__fz_t *fz)
{
    ss_free(fz->start);
    ss_free(fz->list);
    ss_free(fz->is_out);
    ss_free(fz->prod);
}

/* The one step that reads v, directly and once; -1 when v has other
 * readers, views, or is a graph output. */
int
ss__fz_single(const ss__fz_t *fz, int v)
{
    const ss_plan_t *p = fz->p;
    int s, hits = 0;

    if (v < 0 || p->vals[v].alias >= 0 || fz->is_out[v]
        || fz->start[v + 1] - fz->start[v] != 1)
        return -1;
    s = fz->list[fz->start[v]];
    if (p->steps[s].kind != SS_STEP_REF)
        return -1;
    for (int k = 0; k < p->steps[s].n_in; k++)
        hits += p->steps[s].in[k] == v;
    return hits == 1 ? s : -1;
}

/* ---- constants and attributes ------------------------------------------ */

int
ss__fz_is_const(const ss_plan_t *p, int v)
{
    return v >= 0 && p->vals[v].kind == SS_PV_CONST;
}

/* A constant f32 scalar (any shape of one element). */
int
ss__fz_scalar(const ss_plan_t *p, int v, float *out)
{
    const ss_pval_t *pv;

    if (!ss__fz_is_const(p, v))
        return 0;
    pv = &p->vals[v];
    if (ss_tensor_numel(&pv->t) != 1)
        return 0;
    if (pv->t.dtype == SS_DTYPE_F32)
        *out = *(const float *)pv->t.data;
    else if (pv->t.dtype == SS_DTYPE_F64)
        *out = (float)*(const double *)pv->t.data;
    else
        return 0;
    return 1;
}

const float *
ss__fz_vec(const ss_plan_t *p, int v, int64_t n)
{
    const ss_tensor_t *t;

    if (!ss__fz_is_const(p, v) || p->vals[v].t.dtype != SS_DTYPE_F32)
        return NULL;
    t = &p->vals[v].t;
    if (t->ndim < 1 || t->dims[t->ndim - 1] != n || ss_tensor_numel(t) != n)
        return NULL;
    return t->data;
}

int
ss__fz_attr_n(const ss_node_t *n, const char *name, int64_t dflt,
              int64_t *out, int count)
{
    const int64_t *v;
    int k = ss__attr_ints(n, name, &v);

    if (k < 0) {
        for (int i = 0; i < count; i++)
            out[i] = dflt;
        return 1;
    }
    if (k != count)
        return 0;
    memcpy(out, v, (size_t)count * sizeof(int64_t));
    return 1;
}

int
ss__fz_notset(const ss_node_t *n)
{
    const char *ap = ss__attr_string(n, "auto_pad", "NOTSET");

    return strcmp(ap, "NOTSET") == 0 || strcmp(ap, "") == 0;
}

/* ---- post-op chains ---------------------------------------------------- */

void
ss__fz_chain_start(ss__chain_t *c, int step, int src, int out,
                   const char *what)
{
    memset(c, 0, sizeof(*c));
    c->steps[0] = step;
    c->n_steps = 1;
    c->src = src;
    c->out = out;
    snprintf(c->what, sizeof(c->what), "%s", what);
}

/* Right-aligns operand shape o against y; each dim 1 or equal. */
static int
align(const ss_tensor_t *o, const ss_tensor_t *y, int64_t *dims)
{
    if (o->ndim > y->ndim)
        return -1;
    for (int d = 0; d < y->ndim; d++) {
        int od = d - (y->ndim - o->ndim);

        dims[d] = od < 0 ? 1 : o->dims[od];
        if (dims[d] != 1 && dims[d] != y->dims[d])
            return -1;
    }
    return 0;
}

/* o's dims in the primitive's dst terms; -1 when they do not map. */
static int
map_operand(const ss__chain_t *c, const ss_tensor_t *o, const ss_tensor_t *y,
            int64_t *dims)
{
    int64_t a[SS_MAX_DIMS];
    int full = 1, lead1 = 1;

    if (o->dtype != SS_DTYPE_F32 || align(o, y, a) < 0)
        return -1;
    for (int d = 0; d < y->ndim; d++) {
        full &= a[d] == y->dims[d];
        if (d < y->ndim - 1)
            lead1 &= a[d] == 1;
    }
    if (c->dst_ndim == 2 && y->ndim != 2) {
        /* a Linear over flattened rows: [M, N] */
        if (full) {
            dims[0] = c->dst_dims[0];
            dims[1] = c->dst_dims[1];
            return 2;
        }
        if (lead1) {
            dims[0] = 1;
            dims[1] = a[y->ndim - 1];
            return 2;
        }
        return -1;
    }
    if (y->ndim != c->dst_ndim)
        return -1;
    memcpy(dims, a, (size_t)y->ndim * sizeof(int64_t));
    return y->ndim;
}

static void
add_what(ss__chain_t *c, const char *op)
{
    size_t l = strlen(c->what);

    snprintf(c->what + l, sizeof(c->what) - l, "%s%s", l ? "+" : "", op);
}

/* 0 when the post-op cannot join (dnnl.h: ss_dnn_postops_add_eltwise):
 * the chain then ends before the step. */
static int
push_elt(ss__chain_t *c, int alg, float alpha, float beta)
{
    return ss_dnn_postops_add_eltwise(&c->post, alg, alpha, beta);
}

/* The plan as the GELU matcher (engine/ir/gelu_pat.h) sees it: nodes
 * are reference steps, readers come from the reader index. */
static int
pv_readers(const void *ctx, int v, int *r, int max)
{
    const ss__fz_t *fz = ctx;

    if (v < 0 || fz->p->vals[v].alias >= 0 || fz->is_out[v])
        return -1;
    return ss_gelu_csr_readers(fz->start, fz->list, v, r, max);
}

static const char *
pv_op(const void *ctx, int h)
{
    const ss_step_t *st = &((const ss__fz_t *)ctx)->p->steps[h];

    return st->kind == SS_STEP_REF ? st->node->op_type : NULL;
}

static int
pv_n_in(const void *ctx, int h)
{
    return ((const ss__fz_t *)ctx)->p->steps[h].n_in;
}

static int
pv_in(const void *ctx, int h, int i)
{
    const ss_step_t *st = &((const ss__fz_t *)ctx)->p->steps[h];

    return i < st->n_in ? st->in[i] : -1;
}

static int
pv_out(const void *ctx, int h)
{
    const ss_step_t *st = &((const ss__fz_t *)ctx)->p->steps[h];

    return st->n_out > 0 ? st->out[0] : -1;
}

static int
pv_scalar(const void *ctx, int v, float *c)
{
    return ss__fz_scalar(((const ss__fz_t *)ctx)->p, v, c);
}

/* GELU written out on x, read by nothing else: the Erf form (5 steps) or
 * the tanh form (8 or 9), every decomposition engine/ir/gelu_pat.h
 * knows; the chain absorbs its steps as one gelu_erf or gelu_tanh
 * post-op (*alg).  The constants as before the matcher was shared:
 * within 1e-4. */
static int
gelu(ss__fz_t *fz, int x, int *steps, int *out, int *alg)
{
    const ss_gelu_view_t view = { fz, pv_readers, pv_op, pv_n_in, pv_in,
                                  pv_out, pv_scalar, 1e-4 };
    ss_gelu_match_t m;
    int r[1];

    if (!ss_gelu_match(&view, x, 1u << SS_GELU_ERF | 1u << SS_GELU_TANH,
                       &m)
        || pv_readers(fz, x, r, 1) != m.x_reads)
        return 0;
    memcpy(steps, m.nodes, (size_t)m.n * sizeof(int));
    *out = m.y;
    *alg = m.kind == SS_GELU_TANH ? SS_DNN_GELU_TANH : SS_DNN_GELU_ERF;
    return m.n;
}

int
ss__fz_chain(ss__fz_t *fz, ss__chain_t *c)
{
    ss_plan_t *p = fz->p;

    for (;;) {
        int v = c->out, s, k, gsteps[SS_GELU_MAX_NODES], gn, gout, galg;
        const ss_step_t *st;
        const char *op;
        float f;

        if (c->n_steps >= SS_CHAIN_MAX || c->post.n >= SS_DNN_MAX_POST
            || (c->max_post > 0 && c->post.n >= c->max_post))
            break;
        if ((gn = gelu(fz, v, gsteps, &gout, &galg)) > 0
            && c->n_steps + gn <= SS_CHAIN_MAX && push_elt(c, galg, 0, 0)) {
            memcpy(&c->steps[c->n_steps], gsteps, (size_t)gn * sizeof(int));
            c->n_steps += gn;
            c->out = gout;
            add_what(c, galg == SS_DNN_GELU_TANH ? "GeluTanh" : "GeluErf");
            continue;
        }
        if ((s = ss__fz_single(fz, v)) < 0)
            break;
        st = &p->steps[s];
        op = st->node->op_type;
        if (st->n_out < 1 || st->out[0] < 0
            || p->vals[st->out[0]].t.dtype != SS_DTYPE_F32)
            break;
        for (int kk = 1; kk < st->n_out; kk++)
            if (st->out[kk] >= 0)
                goto stop;
        if (strcmp(op, "Relu") == 0) {
            if (!push_elt(c, SS_DNN_RELU, 0, 0))
                break;
        } else if (strcmp(op, "LeakyRelu") == 0) {
            if (!push_elt(c, SS_DNN_RELU,
                          ss__attr_float(st->node, "alpha", 0.01f), 0))
                break;
        } else if (strcmp(op, "Tanh") == 0) {
            if (!push_elt(c, SS_DNN_TANH, 0, 0))
                break;
        } else if (strcmp(op, "Sigmoid") == 0) {
            if (!push_elt(c, SS_DNN_LOGISTIC, 0, 0))
                break;
        } else if (strcmp(op, "Gelu") == 0) {
            const char *ap = ss__attr_string(st->node, "approximate", "none");

            if (!push_elt(c, strcmp(ap, "tanh") == 0 ? SS_DNN_GELU_TANH
                                                     : SS_DNN_GELU_ERF, 0, 0))
                break;
        } else if (strcmp(op, "Clip") == 0) {
            float lo = -FLT_MAX, hi = FLT_MAX;

            if ((st->n_in > 1 && st->in[1] >= 0
                 && !ss__fz_scalar(p, st->in[1], &lo))
                || (st->n_in > 2 && st->in[2] >= 0
                    && !ss__fz_scalar(p, st->in[2], &hi)))
                break;
            if (!push_elt(c, SS_DNN_CLIP, lo, hi))
                break;
        } else if ((strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0
                    || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0)
                   && st->n_in == 2) {
            int other = st->in[0] == v ? st->in[1] : st->in[0];
            int first = st->in[0] == v;
            ss_dnn_postop_t *po;
            int nd;

            if (!first && (op[0] == 'S' || op[0] == 'D'))
                break;
            /* the result must keep v's shape: the operand broadcasts */
            if (p->vals[st->out[0]].t.ndim != p->vals[v].t.ndim
                || memcmp(p->vals[st->out[0]].t.dims, p->vals[v].t.dims,
                          (size_t)p->vals[v].t.ndim * sizeof(int64_t)) != 0)
                break;
            if (ss__fz_scalar(p, other, &f)) {
                float a = op[0] == 'M' ? f : 1.0f;
                float b = op[0] == 'A' ? f : op[0] == 'S' ? -f : 0.0f;

                if (op[0] == 'D') {
                    if (f == 0)
                        break;
                    a = 1.0f / f;
                }
                if (!push_elt(c, SS_DNN_LINEAR, a, b))
                    break;
            } else {
                int64_t dims[SS_MAX_DIMS];

                if (c->n_bin >= SS_DNN_MAX_POST
                    || (nd = map_operand(c, &p->vals[other].t,
                                         &p->vals[v].t, dims)) < 0
                    || nd > SS_DNN_MAX_DIMS)
                    break;
                /* the operand must be ready before the fused step runs:
                 * it is, since the fused step takes the chain's last
                 * position; but it must not be inside the chain */
                for (k = 0; k < c->n_steps; k++)
                    if (fz->prod[other] == c->steps[k])
                        goto stop;
                po = &c->post.op[c->post.n++];
                memset(po, 0, sizeof(*po));
                po->kind = SS_DNN_PO_BINARY;
                po->alg = op[0] == 'A' ? SS_DNN_ADD : op[0] == 'S' ? SS_DNN_SUB
                          : op[0] == 'M' ? SS_DNN_MUL : SS_DNN_DIV;
                po->ndim = nd;
                memcpy(po->dims, dims, (size_t)nd * sizeof(int64_t));
                c->bin[c->n_bin++] = other;
            }
        } else {
            break;
        }
        add_what(c, op);
        c->steps[c->n_steps++] = s;
        c->out = st->out[0];
    }
stop:
    return 0;
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
ss__fz_linear_chain(ss__fz_t *fz, ss__chain_t *c)
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

int
ss__fz_chain_last(const ss__chain_t *c)
{
    int last = c->steps[0];

    for (int i = 1; i < c->n_steps; i++)
        if (c->steps[i] > last)
            last = c->steps[i];
    return last;
}

/* ---- the fused step ---------------------------------------------------- */

/* Marks the chain's steps removed and puts fused (taken) at the last. */
static void
commit(ss__fz_t *fz, ss_step_t *fused, const ss__chain_t *c)
{
    ss_plan_t *p = fz->p;
    int last = ss__fz_chain_last(c);

    for (int i = 0; i < c->n_steps; i++) {
        ss_step_t *st = &p->steps[c->steps[i]];

        for (int k = 0; k < st->n_out; k++)
            if (st->out[k] >= 0 && st->out[k] != fused->out[0])
                p->vals[st->out[k]].kind = SS_PV_UNSET;
        ss__plan_step_clear(st);
        st->kind = 0;
    }
    fused->kind = SS_STEP_DNN;
    p->steps[last] = *fused;
    if (fused->n_in > p->max_io)
        p->max_io = fused->n_in;
    {
        size_t sc = ss_dnn_prim_scratch_size(fused->prim);

        if (sc > p->scratch_bytes)
            p->scratch_bytes = sc;
    }
    p->vals[fused->out[0]].kind = SS_PV_ARENA;
    p->n_fused += c->n_steps;
    memset(fused, 0, sizeof(*fused));
}

/* Builds the fused step from a finished chain and a primitive. */
int
ss__fz_emit(ss__fz_t *fz, ss__chain_t *c, ss_dnn_prim_t *prim,
            const int *lead_in, int n_lead, ss_err_t *err)
{
    ss_step_t st = { 0 };
    int n_in = n_lead + c->n_bin;

    st.prim = prim;
    st.node = fz->p->steps[c->steps[0]].node;
    st.n_in = n_in;
    st.n_out = 1;
    if ((st.in = ss_malloc((size_t)n_in * sizeof(int))) == NULL
        || (st.out = ss_malloc(sizeof(int))) == NULL) {
        ss__plan_step_clear(&st);
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    }
    memcpy(st.in, lead_in, (size_t)n_lead * sizeof(int));
    memcpy(st.in + n_lead, c->bin, (size_t)c->n_bin * sizeof(int));
    st.out[0] = c->out;
    snprintf(st.what, sizeof(st.what), "%s", c->what);
    if (ss_dnn_prim_num_inputs(prim) != n_in) {
        ss__plan_step_clear(&st);
        return ss_err_set(err, SS_EINTERNAL, "fused %s: primitive reads %d "
                          "inputs, the plan gives %d", c->what,
                          ss_dnn_prim_num_inputs(prim), n_in);
    }
    commit(fz, &st, c);
    return 0;
}

/* ---- what the anchors of every precision share ------------------------- */

const float *
ss__fz_take_bias(ss__fz_t *fz, ss__chain_t *c, int64_t n)
{
    const ss_plan_t *p = fz->p;
    int s = ss__fz_single(fz, c->out), other;
    const ss_step_t *st;
    const float *b;

    if (s < 0 || !ss__plan_is_op(&p->steps[s], "Add"))
        return NULL;
    st = &p->steps[s];
    other = st->in[0] == c->out ? st->in[1] : st->in[0];
    if ((b = ss__fz_vec(p, other, n)) == NULL
        || p->vals[st->out[0]].t.ndim != p->vals[c->out].t.ndim)
        return NULL;
    c->steps[c->n_steps++] = s;
    c->out = st->out[0];
    return b;
}

int
ss__fz_fold_bn(const ss_plan_t *p, const ss_step_t *bn, int64_t oc,
               const float *w, int64_t nw, const float *bias, float **wf,
               float **bf, ss_err_t *err)
{
    const float *sc = p->vals[bn->in[1]].t.data;
    const float *bb = p->vals[bn->in[2]].t.data;
    const float *mean = p->vals[bn->in[3]].t.data;
    const float *var = p->vals[bn->in[4]].t.data;
    float eps = ss__attr_float(bn->node, "epsilon", 1e-5f);
    int64_t per = nw / oc;

    if ((*wf = ss_malloc((size_t)nw * sizeof(float))) == NULL
        || (*bf = ss_malloc((size_t)oc * sizeof(float))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to fold a "
                          "BatchNormalization");
    for (int64_t o = 0; o < oc; o++) {
        double k = sc[o] / sqrt((double)var[o] + eps);

        for (int64_t i = 0; i < per; i++)
            (*wf)[o * per + i] = (float)(w[o * per + i] * k);
        (*bf)[o] = (float)(((bias ? bias[o] : 0.0) - mean[o]) * k + bb[o]);
    }
    return 0;
}

/* MatMul/Gemm by a constant 2-D weight, f32 activations. */
int
ss__fz_linear_shape(ss__fz_t *fz, int s, ss__fz_lin_t *L, ss__chain_t *c,
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

/* Conv geometry from the node; 0 when it is not a plain 2-D or 3-D
 * Conv. */
int
ss__fz_conv_shape(const ss_plan_t *p, const ss_step_t *st,
                  ss_dnn_qconv_desc_t *d)
{
    if (!ss__plan_is_op(st, "Conv") || st->n_in < 2 || st->in[0] < 0
        || ss__fz_is_const(p, st->in[0])
        || ss__plan_tensor(p, st->in[0])->dtype != SS_DTYPE_F32
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32))
        return 0;
    if (st->n_in > 2 && st->in[2] >= 0
        && !ss__fz_const_of(p, st->in[2], SS_DTYPE_F32))
        return 0;
    /* 1-D values have no layouts in the layout pass (ss__lay_rank): the
     * channels-last int8/bf16 kernels would leave it one it cannot read */
    if (!ss__fz_conv_geom(p, st, &d->g) || d->g.nsp < 2)
        return 0;
    d->bias = st->n_in > 2 && st->in[2] >= 0
              ? ss__plan_tensor(p, st->in[2])->data : NULL;
    return 1;
}
