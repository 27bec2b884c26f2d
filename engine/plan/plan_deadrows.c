/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dead rows: values of which a later Gather or Slice reads only a prefix
 * along one axis are computed only for that prefix.
 *
 * DESIGN: a ViT (and a BERT-style classifier) reads one token of its last
 * layer's output: torchvision's vit_b_16 ends in LayerNorm -> x[:, 0] ->
 * Linear.  Every op between the last attention's rows and that Gather
 * treats each token on its own (out-projection, residual Add, LayerNorm,
 * the MLP's MatMuls and GELU), and so do the query rows of the last
 * Q @ K^T, its Softmax and P @ V: computed for 197 tokens, 196 of them
 * are thrown away -- 9 of the 144 d^2-sized GEMMs of ViT-B/16's 12
 * blocks, ~6% of its multiply-adds.  ONNX Runtime computes them all.
 *
 * The pass runs on the reference steps right after the walk, before any
 * fusion, so every later pass sees the smaller shapes.  It is a backward
 * analysis over the graph's nodes: each value gets what its readers need
 * of it -- nothing yet, all of it, or a prefix [0, hi) along one axis
 * (several readers: the longest prefix on a common axis, else all).  A
 * Gather with constant indices needs the prefix up to its largest index
 * along its axis, a one-axis Slice up to its end (not with negative ones:
 * they count from the end of the shrunk axis); a node whose output is
 * needed only as a prefix along an axis its op treats row by row
 * (element-wise ops with numpy broadcasting, LayerNormalization and
 * Softmax before their axis, MatMul along M or a batch axis, Gemm along
 * M, Transpose, Slice on other axes) computes only that prefix and needs
 * the matching prefix of its inputs.  Views (Reshape, Squeeze, a
 * Transpose of size-1 dims: aliases since the walk) pass a prefix on when
 * it is contiguous in both shapes (every dim before the axis 1).  Then
 * the values shrink; where a shrunk node reads a value computed longer
 * (another reader needs all of it: the q Slice reads the whole qkv
 * output) it reads a view of its first rows when those are contiguous,
 * else a oneDNN reorder copies them out (ViT at batch 8: x[:, 0] of
 * [8, 197, 768] is 8 strided rows).  Outputs are the same numbers: the
 * rows that are computed are computed by the same kernels.
 *
 * Not done: plans with taps (a caller may read any row of a tapped
 * value), control flow or MoE steps (subgraphs read outer values the
 * steps do not list); constants are never cut (a shrunk node whose
 * constant input has the sliced axis keeps its whole shape).
 * SS_ENGINE_NO_ROWS=1 turns the pass off (A/B measurements).
 *
 * THREADS: runs inside ss_plan_new only.
 */

#include <stdlib.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

#define RQ_NONE (-1)    /* no reader yet */
#define RQ_FULL (-2)    /* all of it */
#define MAX_IN 8        /* inputs of a node the pass shrinks */

typedef struct {
    int ax;             /* axis, or RQ_NONE / RQ_FULL */
    int64_t hi;         /* the prefix [0, hi) along ax */
} rq_t;

typedef struct {
    ss_plan_t *p;
    const ss_graph_t *g;
    rq_t *need;         /* per value */
    int *step_of;       /* per node: its reference step, or -1 */
    char *shrink;       /* per node: computes a prefix of its output */
    int *qoff;          /* per node: where its inputs' needs start in qin */
    rq_t *qin;          /* per input of a shrunk node: what it reads */
} rows_t;

static const char *const ewise_ops[] = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Relu", "Erf", "Gelu",
    "Sigmoid", "Tanh", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
    "Clip", "LeakyRelu", "Elu", "Softplus", "HardSigmoid", "HardSwish",
    "Cast", "Identity",
};

static int
is_op(const ss_node_t *n, const char *op)
{
    return strcmp(n->op_type, op) == 0;
}

static int
is_const(const ss_plan_t *p, int v)
{
    return p->vals[v].kind == SS_PV_CONST;
}

static rq_t
rq(int ax, int64_t hi)
{
    return (rq_t){ ax, hi };
}

/* Element i of a constant integer tensor. */
static int
const_int(const ss_tensor_t *t, int64_t i, int64_t *out)
{
    if (t->data == NULL || i >= ss_tensor_numel(t))
        return 0;
    if (t->dtype == SS_DTYPE_I64)
        *out = ((const int64_t *)t->data)[i];
    else if (t->dtype == SS_DTYPE_I32)
        *out = ((const int32_t *)t->data)[i];
    else
        return 0;
    return 1;
}

static int64_t
prod(const int64_t *d, int from, int to)
{
    int64_t n = 1;

    for (int i = from; i < to; i++)
        n *= d[i];
    return n;
}

/* Folds what one reader needs into what v is needed for. */
static void
merge(rows_t *r, int v, rq_t q)
{
    rq_t *w = &r->need[v];

    if (v < 0 || is_const(r->p, v) || q.ax == RQ_NONE)
        return;
    if (q.ax >= 0 && q.hi >= r->p->vals[v].t.dims[q.ax])
        q.ax = RQ_FULL;
    if (w->ax == RQ_NONE)
        *w = q;
    else if (w->ax == RQ_FULL || q.ax == RQ_FULL || w->ax != q.ax)
        w->ax = RQ_FULL;
    else if (q.hi > w->hi)
        w->hi = q.hi;
}

/* Input k of element-wise node n (numpy broadcasting) for the prefix
 * (ax, hi) of its output: that prefix of the input when it has the axis,
 * all of it when it broadcasts along it; 0 when it cannot shrink. */
static int
bcast_in(const rows_t *r, const ss_node_t *n, int k, int ax, int64_t hi,
         rq_t *q)
{
    const ss_tensor_t *o = &r->p->vals[n->outputs[0]].t;
    const ss_tensor_t *t;
    int off;

    *q = rq(RQ_FULL, 0);
    if (n->inputs[k] < 0)
        return 1;
    t = &r->p->vals[n->inputs[k]].t;
    off = o->ndim - t->ndim;
    if (ax < off || t->dims[ax - off] == 1)
        return 1;
    if (t->dims[ax - off] != o->dims[ax] || is_const(r->p, n->inputs[k]))
        return 0;
    *q = rq(ax - off, hi);
    return 1;
}

static int
norm_axis(int64_t a, int nd)
{
    return (int)(a < 0 ? a + nd : a);
}

/* The axes a Slice cuts (its `axes` input, or the first len(starts)),
 * when its starts and ends are constants; -1 otherwise. */
static int
slice_axes(const rows_t *r, const ss_node_t *n, int nd, int *axes)
{
    const ss_plan_t *p = r->p;
    int64_t cnt, a;

    if (r->g->opset < 10 || n->n_inputs < 3 || n->inputs[1] < 0
        || n->inputs[2] < 0 || !is_const(p, n->inputs[1])
        || !is_const(p, n->inputs[2]))
        return -1;
    cnt = ss_tensor_numel(&p->vals[n->inputs[1]].t);
    if (cnt > SS_MAX_DIMS || cnt != ss_tensor_numel(&p->vals[n->inputs[2]].t))
        return -1;
    for (int64_t i = 0; i < cnt; i++) {
        a = i;
        if (n->n_inputs > 3 && n->inputs[3] >= 0
            && (!is_const(p, n->inputs[3])
                || !const_int(&p->vals[n->inputs[3]].t, i, &a)))
            return -1;
        if ((axes[i] = norm_axis(a, nd)) < 0 || axes[i] >= nd)
            return -1;
    }
    return (int)cnt;
}

/* What a Gather or a one-axis Slice with constant bounds needs of its
 * data: a prefix up to its last index.  Whatever its readers need. */
static rq_t
sink(const rows_t *r, const ss_node_t *n)
{
    const ss_plan_t *p = r->p;
    const ss_tensor_t *x = &p->vals[n->inputs[0]].t, *t;
    int axes[SS_MAX_DIMS], ax;
    int64_t hi = 0, v, s, e, step = 1;

    if (is_op(n, "Gather") && n->n_inputs == 2 && n->inputs[1] >= 0
        && is_const(p, n->inputs[1])) {
        t = &p->vals[n->inputs[1]].t;
        if ((ax = norm_axis(ss__attr_int(n, "axis", 0), x->ndim)) < 0
            || ax >= x->ndim)
            return rq(RQ_FULL, 0);
        for (int64_t i = 0; i < ss_tensor_numel(t); i++) {
            /* a negative index counts from the end the kernel sees:
             * the shrunk one */
            if (!const_int(t, i, &v) || v < 0 || v >= x->dims[ax])
                return rq(RQ_FULL, 0);
            hi = v + 1 > hi ? v + 1 : hi;
        }
        return hi > 0 ? rq(ax, hi) : rq(RQ_FULL, 0);
    }
    if (is_op(n, "Slice") && slice_axes(r, n, x->ndim, axes) == 1) {
        ax = axes[0];
        if ((n->n_inputs > 4 && n->inputs[4] >= 0
             && (!is_const(p, n->inputs[4])
                 || !const_int(&p->vals[n->inputs[4]].t, 0, &step)))
            || step != 1
            || !const_int(&p->vals[n->inputs[1]].t, 0, &s)
            || !const_int(&p->vals[n->inputs[2]].t, 0, &e))
            return rq(RQ_FULL, 0);
        /* (negative bounds count from the end: see Gather) */
        e = e > x->dims[ax] ? x->dims[ax] : e;
        return s >= 0 && e > s ? rq(ax, e) : rq(RQ_FULL, 0);
    }
    return rq(RQ_FULL, 0);
}

/* A view node (an alias since the walk) whose output is needed as the
 * prefix (ax, hi): 1 and what it needs of its input when that prefix is
 * contiguous. */
static int
view_rule(const rows_t *r, const ss_node_t *n, int ax, int64_t hi,
          rq_t *q)
{
    const ss_tensor_t *o = &r->p->vals[n->outputs[0]].t;
    const ss_tensor_t *u = &r->p->vals[n->inputs[0]].t;
    int64_t e, inner;
    int j = 0;

    if (prod(o->dims, 0, ax) != 1 || n->n_inputs > MAX_IN)
        return 0;
    for (int k = 1; k < n->n_inputs; k++)
        q[k] = rq(RQ_FULL, 0);
    e = hi * prod(o->dims, ax + 1, o->ndim);
    while (j < u->ndim && u->dims[j] == 1)
        j++;
    if (j == u->ndim) {
        q[0] = rq(RQ_FULL, 0);
        return 1;
    }
    inner = prod(u->dims, j + 1, u->ndim);
    q[0] = rq(j, (e + inner - 1) / inner);
    return 1;
}

/* Node n computing only the prefix (ax, hi) of its one output: 1 and
 * what it needs of each input, or 0 when its op cannot. */
static int
row_rule(const rows_t *r, const ss_node_t *n, int ax, int64_t hi, rq_t *q)
{
    const ss_plan_t *p = r->p;
    const ss_tensor_t *o = &p->vals[n->outputs[0]].t, *a;
    int nd = o->ndim, axes[SS_MAX_DIMS], na;
    int64_t perm[SS_MAX_DIMS];

    if (n->n_inputs > MAX_IN || n->n_inputs < 1 || n->inputs[0] < 0)
        return 0;
    for (int k = 1; k < n->n_outputs; k++)
        if (n->outputs[k] >= 0)
            return 0;
    for (int k = 0; k < n->n_inputs; k++)
        q[k] = rq(RQ_FULL, 0);
    a = &p->vals[n->inputs[0]].t;
    if (is_op(n, "LayerNormalization") || is_op(n, "Softmax")
        || is_op(n, "LogSoftmax")) {
        int64_t dflt = is_op(n, "LayerNormalization") || p->g->opset >= 13
                       ? -1 : 1;

        if (ax >= norm_axis(ss__attr_int(n, "axis", dflt), nd))
            return 0;
        for (int k = 0; k < n->n_inputs; k++)
            if (!bcast_in(r, n, k, ax, hi, &q[k]))
                return 0;
        return 1;
    }
    for (size_t i = 0; i < sizeof(ewise_ops) / sizeof(ewise_ops[0]); i++)
        if (is_op(n, ewise_ops[i])) {
            for (int k = 0; k < n->n_inputs; k++)
                if (!bcast_in(r, n, k, ax, hi, &q[k]))
                    return 0;
            return 1;
        }
    if (is_op(n, "MatMul") && n->n_inputs == 2 && a->ndim >= 2
        && n->inputs[1] >= 0 && ax < nd - 1) {
        if (ax < nd - 2)
            return bcast_in(r, n, 0, ax, hi, &q[0])
                   && bcast_in(r, n, 1, ax, hi, &q[1]);
        if (a->dims[a->ndim - 2] != o->dims[ax] || is_const(p, n->inputs[0]))
            return 0;
        q[0] = rq(a->ndim - 2, hi);
        return 1;
    }
    if (is_op(n, "Gemm") && ax == 0 && ss__attr_int(n, "transA", 0) == 0
        && !is_const(p, n->inputs[0])) {
        if (n->n_inputs > 2 && n->inputs[2] >= 0
            && p->vals[n->inputs[2]].t.ndim == 2
            && p->vals[n->inputs[2]].t.dims[0] != 1)
            return 0;
        q[0] = rq(0, hi);
        return 1;
    }
    if (is_op(n, "Transpose") && ss__fz_attr_n(n, "perm", -1, perm, nd)) {
        for (int i = 0; perm[0] < 0 && i < nd; i++)
            perm[i] = nd - 1 - i;
        if (perm[ax] < 0 || perm[ax] >= nd)
            return 0;
        q[0] = rq((int)perm[ax], hi);
        return 1;
    }
    if (is_op(n, "Slice") && a->ndim == nd
        && (na = slice_axes(r, n, nd, axes)) >= 0) {
        for (int i = 0; i < na; i++)
            if (axes[i] == ax)
                return 0;
        q[0] = rq(ax, hi);
        return 1;
    }
    return 0;
}

static int
is_view(const rows_t *r, const ss_node_t *n)
{
    return n->n_inputs >= 1 && n->inputs[0] >= 0 && n->n_outputs >= 1
           && n->outputs[0] >= 0
           && r->p->vals[n->outputs[0]].alias == n->inputs[0];
}

/* The backward analysis: need[] for every value, shrink[] for every
 * node. */
static void
analyse(rows_t *r)
{
    const ss_graph_t *g = r->g;
    rq_t q[MAX_IN];

    for (int v = 0; v < r->p->n_vals; v++)
        r->need[v] = rq(RQ_NONE, 0);
    for (int i = 0; i < g->n_outputs; i++)
        merge(r, g->outputs[i], rq(RQ_FULL, 0));
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = &g->nodes[i];
        rq_t out = n->n_outputs > 0 && n->outputs[0] >= 0
                   ? r->need[n->outputs[0]] : rq(RQ_FULL, 0);
        int view = is_view(r, n), ok = 0;

        r->shrink[i] = 0;
        /* folded at the walk: they read no rows */
        if (is_op(n, "Shape") || is_op(n, "Size"))
            continue;
        if (r->step_of[i] < 0 && !view) {
            for (int k = 0; k < n->n_inputs; k++)
                merge(r, n->inputs[k], rq(RQ_FULL, 0));
            continue;
        }
        if (out.ax >= 0)
            ok = view ? view_rule(r, n, out.ax, out.hi, q)
                      : row_rule(r, n, out.ax, out.hi, q);
        if (ok) {
            r->shrink[i] = 1;
            for (int k = 0; k < n->n_inputs && k < MAX_IN; k++) {
                r->qin[r->qoff[i] + k] = q[k];
                merge(r, n->inputs[k], q[k]);
            }
            continue;
        }
        for (int k = 0; k < n->n_inputs; k++)
            merge(r, n->inputs[k], k == 0 && !view && out.ax != RQ_NONE
                                   ? sink(r, n) : rq(RQ_FULL, 0));
    }
}

/* Step s reads input k of its node as the prefix q of value u, whose
 * final shape is longer: a view of u's first rows when they are
 * contiguous, else a reorder copying them out (queued on l). */
static int
cut(rows_t *r, ss__plan_inslist_t *l, int s, int k, rq_t q, ss_err_t *err)
{
    ss_plan_t *p = r->p;
    int u = p->steps[s].in[k], v, nd = p->vals[u].t.ndim, rc;
    int64_t str[SS_MAX_DIMS];
    ss_dnn_reorder_desc_t d = { .dtype = p->vals[u].t.dtype };
    ss_dnn_prim_t *prim = NULL;

    if ((v = ss__plan_add_value(p, u, p->vals[u].t.dtype, SS_DNN_PLAIN,
                                err)) < 0)
        return v;
    p->vals[v].t.dims[q.ax] = q.hi;
    (void)ss__tensor_bytes(&p->vals[v].t, &p->vals[v].bytes);
    p->steps[s].in[k] = v;
    if (prod(p->vals[u].t.dims, 0, q.ax) == 1) {
        p->vals[v].kind = SS_PV_UNSET;
        p->vals[v].alias = u;
        return 0;
    }
    str[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--)
        str[i] = str[i + 1] * p->vals[u].t.dims[i + 1];
    d.ndim = nd;
    memcpy(d.dims, p->vals[v].t.dims, (size_t)nd * sizeof(int64_t));
    d.src_strides = str;
    if ((rc = ss_dnn_reorder_new(&d, &prim, err)) < 0)
        return rc;
    return ss__plan_ins_prim(p, l, s, 0, prim, u, v, "Rows", err);
}

/* Shrinks what the analysis found: outputs of shrunk nodes first, then
 * the reads of values that stayed longer than a shrunk reader needs. */
static int
apply(rows_t *r, ss_err_t *err)
{
    ss_plan_t *p = r->p;
    const ss_graph_t *g = r->g;
    ss__plan_inslist_t l = { 0 };
    int rc = 0;

    for (int i = 0; i < g->n_nodes; i++) {
        int o = g->nodes[i].outputs[0];

        if (!r->shrink[i])
            continue;
        p->vals[o].t.dims[r->need[o].ax] = r->need[o].hi;
        (void)ss__tensor_bytes(&p->vals[o].t, &p->vals[o].bytes);
    }
    for (int i = 0; i < g->n_nodes && rc == 0; i++) {
        const ss_node_t *n = &g->nodes[i];
        int s = r->step_of[i];

        for (int k = 0; r->shrink[i] && s >= 0 && k < n->n_inputs; k++) {
            rq_t q = r->qin[r->qoff[i] + k];
            int u = n->inputs[k], pr;

            if (u < 0 || q.ax < 0 || is_const(p, u))
                continue;
            pr = g->values[u].producer;
            if (pr >= 0 && r->shrink[pr] && r->need[u].hi == q.hi)
                continue;
            rc = cut(r, &l, s, k, q, err);
        }
    }
    if (rc == 0)
        rc = ss__plan_ins_apply(p, &l, err);
    ss__plan_ins_free(&l);
    return rc;
}

int
ss__plan_dead_rows(ss_plan_t *p, ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    rows_t r = { .p = p, .g = g };
    int rc = 0, total = 0;
    const char *off = getenv("SS_ENGINE_NO_ROWS");

    if (p->taps || (off != NULL && off[0] == '1'))
        return 0;
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind != SS_STEP_REF
            || p->steps[s].node < g->nodes
            || p->steps[s].node >= g->nodes + g->n_nodes)
            return 0;
    for (int i = 0; i < g->n_nodes; i++)
        total += g->nodes[i].n_inputs;
    if ((r.need = ss_calloc((size_t)p->n_vals + 1, sizeof(rq_t))) == NULL
        || (r.step_of = ss_calloc((size_t)g->n_nodes + 1, sizeof(int)))
           == NULL
        || (r.shrink = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL
        || (r.qoff = ss_calloc((size_t)g->n_nodes + 1, sizeof(int))) == NULL
        || (r.qin = ss_calloc((size_t)total + 1, sizeof(rq_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to look for dead rows");
        goto done;
    }
    for (int i = 0, o = 0; i < g->n_nodes; i++) {
        r.step_of[i] = -1;
        r.qoff[i] = o;
        o += g->nodes[i].n_inputs;
    }
    for (int s = 0; s < p->n_steps; s++)
        r.step_of[p->steps[s].node - g->nodes] = s;
    analyse(&r);
    rc = apply(&r, err);
done:
    ss_free(r.need);
    ss_free(r.step_of);
    ss_free(r.shrink);
    ss_free(r.qoff);
    ss_free(r.qin);
    return rc;
}
