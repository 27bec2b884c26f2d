/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sparse dispatch: the dense mixture-of-experts pattern PyTorch exports,
 * replaced by one MoE step (moe_step.c) that runs k experts per row
 * instead of E.
 *
 * DESIGN: torch.onnx.export cannot export data-dependent dispatch, so an
 * exported MoE layer computes every expert on every row and multiplies
 * all but k of them by zero:
 *
 *   P = router scores [.., E]  (any producer; Softmax of a Linear)
 *   V, I = TopK(P, k, axis -1, largest)
 *   [V = V / ReduceSum(V, -1, keepdims)]            renormalised gates
 *   G = ScatterElements(zeros [.., E], I, V, axis -1)
 *    or G = ScatterElements(zeros [.., E], I, ones [.., k], axis -1)
 *       (unit gates: a selection mask, what compress/moefy.c writes; V
 *       is then read by nothing)
 *   O_e = expert_e(x) for e < E, each a chain of Linear layers (Gemm, or
 *         MatMul + Add) with element-wise activations between them
 *   Y = ReduceSum(Unsqueeze(G, -1) * Concat(Unsqueeze(O_e, -2)), -2)
 *     ("stack": torch.stack(..., -2) and .sum(-2))
 *    or Y = G[.., 0:1] * O_0 + G[.., 1:2] * O_1 + ...  ("loop")
 *
 * The pass matches that structure from each TopK step: the scatter and
 * its gates, then the gate-weighted sum, then each summand back to its
 * expert, parsed forward as layers with the fusion toolkit (a Linear
 * with a constant weight, its bias, and the post-op chain of activations
 * ss__fz_chain recognises: Relu, Gelu and its Erf decomposition, Tanh,
 * Sigmoid, Clip, scalar affine ops).  Every expert must read the same x
 * with the rows of P.  The MoE step replaces all of it only when the
 * match is exact: every value the pattern computes, other than Y, must
 * be read by the pattern alone and be no graph output.  Anything else
 * (a gate matrix that is also an output, an expert that is not a Linear/
 * activation chain, a scatter over non-zeros, a reduction over another
 * axis) leaves the dense graph as it was, with one log line at info
 * level saying why.  The router stays in the graph: the step reads P.
 *
 * ONNX Runtime's com.microsoft.MoE op (engine/ops/moe.c has its
 * semantics) runs on the same step when its expert weights are
 * constants: fc1, its activation and fc2 are the two layers (with fc3,
 * a gated expert: fc1 + act, fc3, fc2), the scores are the router
 * logits (softmax first), ties go to the higher expert.  QMoE's int8 or
 * int4 weights are dequantized to f32 at compile time (the step then
 * computes in f32, or bf16 when the graph asks): the file stays small,
 * the plan holds f32 weights.
 *
 * In a QDQ model (PTQ after moefy) an expert layer whose input is a
 * per-tensor DequantizeLinear(QuantizeLinear(v)) runs int8 on the step
 * (moe_step.c); the Q -> DQ pairs between layers are taken into the
 * expert, and experts are matched on v, so that one PTQ returned to f32
 * (reading v itself) still belongs to the layer.
 *
 * SS_ENGINE_NO_MOE=1 turns the pass off (benchmarks, tests: the dense
 * graph is the reference).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "engine/ir/edit.h"
#include "engine/ops/moe.h"
#include "engine/plan/internal.h"

#define MAX_SET 4096

typedef struct match {
    ss__fz_t *fz;
    int topk, k, n_exp, norm, unit;
    int p_val, x_val, y_val;
    int64_t rows, d_in, d_out;
    int out_e[SS_MOE_MAX_EXPERTS];  /* O_e */
    int set[MAX_SET];               /* steps the MoE step replaces */
    int n_set;
    ss__moe_expert_desc_t ex[SS_MOE_MAX_EXPERTS];
    float *owned[SS_MOE_MAX_EXPERTS * SS_MOE_MAX_LAYERS];
    int n_owned;
    const char *why;                /* why it stays dense */
    char whybuf[96];
} match_t;

static int
take(match_t *m, int s)
{
    if (m->n_set == MAX_SET) {
        m->why = "too many steps";
        return 0;
    }
    m->set[m->n_set++] = s;
    return 1;
}

static int
in_set(const match_t *m, int s)
{
    for (int i = 0; i < m->n_set; i++)
        if (m->set[i] == s)
            return 1;
    return 0;
}

static int
is_op(const ss_plan_t *p, int s, const char *op)
{
    return s >= 0 && ss__plan_is_op(&p->steps[s], op);
}

static int64_t
numel(const ss_plan_t *p, int v)
{
    return ss_tensor_numel(ss__plan_tensor(p, v));
}

/* Readers of v's root, as a list (fz's CSR). */
static int
n_readers(const ss__fz_t *fz, int v)
{
    int r = ss__plan_root(fz->p, v);

    return fz->start[r + 1] - fz->start[r];
}

static int
reader(const ss__fz_t *fz, int v, int i)
{
    return fz->list[fz->start[ss__plan_root(fz->p, v)] + i];
}

/* A constant int vector of at most 8 elements into out; its length or
 * -1. */
static int
const_ints(const ss_plan_t *p, int v, int64_t *out)
{
    const ss_tensor_t *t;
    int64_t n;

    if (!ss__fz_is_const(p, v))
        return -1;
    t = ss__plan_tensor(p, v);
    n = ss_tensor_numel(t);
    if (n < 0 || n > 8
        || (t->dtype != SS_DTYPE_I64 && t->dtype != SS_DTYPE_I32))
        return -1;
    for (int64_t i = 0; i < n; i++)
        out[i] = t->dtype == SS_DTYPE_I64 ? ((const int64_t *)t->data)[i]
                                          : ((const int32_t *)t->data)[i];
    return (int)n;
}

/* The single axis a Reduce* step reduces (attribute or input, by
 * opset), normalised for rank r; -1 when it is not exactly one. */
static int
reduce_axis(const ss_plan_t *p, const ss_step_t *st, int r)
{
    int64_t ax[8];
    const int64_t *av;
    int n;

    if (st->n_in > 1 && st->in[1] >= 0)
        n = const_ints(p, st->in[1], ax);
    else if ((n = ss__attr_ints(st->node, "axes", &av)) == 1)
        ax[0] = av[0];
    if (n != 1 || ax[0] < -r || ax[0] >= r)
        return -1;
    return (int)(ax[0] < 0 ? ax[0] + r : ax[0]);
}

static int
norm_axis(int64_t a, int r)
{
    return a < -r || a >= r ? -1 : (int)(a < 0 ? a + r : a);
}

/* ---- the gates --------------------------------------------------------- */

/* Is v a constant f32 of n ones? */
static int
all_ones(const ss_plan_t *p, int v, int64_t n)
{
    const float *x;

    if (!ss__fz_const_of(p, v, SS_DTYPE_F32) || numel(p, v) != n)
        return 0;
    x = ss__plan_tensor(p, v)->data;
    for (int64_t i = 0; i < n; i++)
        if (x[i] != 1.0f)
            return 0;
    return 1;
}

/* TopK → [ReduceSum → Div] → ScatterElements over zeros; returns the
 * scatter step or -1 (m->why set when it is worth a log line). */
static int
match_gates(match_t *m)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    const ss_step_t *t = &p->steps[m->topk], *sc;
    const ss_tensor_t *pt;
    int64_t kv[8];
    int r, v, idx, upd, s, rs = -1, dv = -1;

    if (t->n_in < 1 || t->n_out < 2 || t->out[0] < 0 || t->out[1] < 0
        || ss__fz_is_const(p, t->in[0]))
        return -1;
    pt = ss__plan_tensor(p, t->in[0]);
    r = pt->ndim;
    if (pt->dtype != SS_DTYPE_F32 || r < 2
        || norm_axis(ss__attr_int(t->node, "axis", -1), r) != r - 1
        || ss__attr_int(t->node, "largest", 1) != 1)
        return -1;
    if (p->g->opset < 10)
        kv[0] = ss__attr_int(t->node, "k", -1);
    else if (t->n_in < 2 || const_ints(p, t->in[1], kv) != 1)
        return -1;
    m->p_val = t->in[0];
    m->n_exp = (int)pt->dims[r - 1];
    m->k = (int)kv[0];
    m->rows = numel(p, m->p_val) / (m->n_exp ? m->n_exp : 1);
    v = t->out[0];
    idx = t->out[1];
    /* the indices go to one scatter, and so do the values, maybe
     * renormalised first */
    if (n_readers(fz, idx) != 1 || fz->is_out[idx])
        return -1;
    s = reader(fz, idx, 0);
    if (!is_op(p, s, "ScatterElements"))
        return -1;
    sc = &p->steps[s];
    if (sc->n_in != 3 || sc->in[1] != idx || sc->n_out != 1)
        return -1;
    upd = sc->in[2];
    /* a top-k scattered into a matrix: worth a log line from here on */
    m->why = "the top-k values are used elsewhere, or transformed";
    if (upd != v && all_ones(p, upd, numel(p, idx))) {
        /* a mask of the top k: V must be unused */
        if (n_readers(fz, v) != 0 || fz->is_out[v])
            return -1;
        m->unit = 1;
    } else if (upd != v) {
        const ss_step_t *d;

        if (n_readers(fz, v) != 2 || fz->is_out[v])
            return -1;
        for (int i = 0; i < 2; i++) {
            int q = reader(fz, v, i);

            if (is_op(p, q, "ReduceSum"))
                rs = q;
            else if (is_op(p, q, "Div"))
                dv = q;
        }
        if (rs < 0 || dv < 0)
            return -1;
        d = &p->steps[dv];
        if (d->in[0] != v || d->in[1] != p->steps[rs].out[0]
            || d->out[0] != upd || p->steps[rs].in[0] != v
            || reduce_axis(p, &p->steps[rs], r) != r - 1
            || ss__attr_int(p->steps[rs].node, "keepdims", 1) != 1
            || ss__attr_int(p->steps[rs].node, "noop_with_empty_axes", 0))
            return -1;
        m->norm = 1;
    }
    m->why = "the scatter is not of the top-k gates over zeros";
    if (n_readers(fz, upd) != 1
        || norm_axis(ss__attr_int(sc->node, "axis", 0), r) != r - 1
        || strcmp(ss__attr_string(sc->node, "reduction", "none"), "none")
        || !ss__fz_const_of(p, sc->in[0], SS_DTYPE_F32)
        || numel(p, sc->in[0]) != numel(p, m->p_val))
        return -1;
    {
        const float *z = ss__plan_tensor(p, sc->in[0])->data;

        for (int64_t i = 0; i < numel(p, m->p_val); i++)
            if (z[i] != 0.0f)
                return -1;
    }
    if (m->n_exp > SS_MOE_MAX_EXPERTS || m->k < 1 || m->k >= m->n_exp) {
        m->why = m->k >= m->n_exp ? "k = E: every expert runs anyway"
                                  : "too many experts";
        return -1;
    }
    m->why = NULL;
    if (!take(m, m->topk) || !take(m, s) || (rs >= 0 && !take(m, rs))
        || (dv >= 0 && !take(m, dv)))
        return -1;
    return s;
}

/* ---- the weighted sum -------------------------------------------------- */

/* Y = ReduceSum(Unsqueeze(G, -1) * Concat(Unsqueeze(O_e, -2)), -2). */
static int
match_stack(match_t *m, int g)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int mul, gu, cv, cat, red, r = ss__plan_tensor(p, m->p_val)->ndim;
    const ss_step_t *ms, *cs, *rst;

    m->why = "the gates are not used as a stacked weighted sum";
    if (n_readers(fz, g) != 1)
        return 0;
    mul = reader(fz, g, 0);
    if (!is_op(p, mul, "Mul"))
        return 0;
    ms = &p->steps[mul];
    gu = ss__plan_root(p, ms->in[0]) == g ? ms->in[0] : ms->in[1];
    cv = gu == ms->in[0] ? ms->in[1] : ms->in[0];
    if (ss__plan_root(p, gu) != g || ss__plan_tensor(p, gu)->ndim != r + 1
        || ss__plan_tensor(p, gu)->dims[r] != 1
        || ss__plan_tensor(p, gu)->dims[r - 1] != m->n_exp)
        return 0;
    if ((cat = fz->prod[cv]) < 0 || !is_op(p, cat, "Concat")
        || n_readers(fz, cv) != 1 || fz->is_out[cv]
        || ss__plan_tensor(p, cv)->ndim != r + 1
        || numel(p, ms->out[0]) != numel(p, cv))
        return 0;
    cs = &p->steps[cat];
    if (cs->n_in != m->n_exp
        || norm_axis(ss__attr_int(cs->node, "axis", 0), r + 1) != r - 1)
        return 0;
    m->d_out = ss__plan_tensor(p, cv)->dims[r];
    if (numel(p, cv) != m->rows * m->n_exp * m->d_out)
        return 0;
    for (int e = 0; e < m->n_exp; e++) {
        int o = ss__plan_root(p, cs->in[e]);

        const ss_tensor_t *ct = ss__plan_tensor(p, cs->in[e]);

        if (ct->ndim != r + 1 || ct->dims[r - 1] != 1
            || ct->dims[r] != m->d_out)
            return 0;
        if (numel(p, o) != m->rows * m->d_out || n_readers(fz, o) != 1
            || fz->is_out[o]) {
            m->why = "an expert's output is used elsewhere";
            return 0;
        }
        m->out_e[e] = o;
    }
    if (n_readers(fz, ms->out[0]) != 1 || fz->is_out[ms->out[0]])
        return 0;
    red = reader(fz, ms->out[0], 0);
    if (!is_op(p, red, "ReduceSum"))
        return 0;
    rst = &p->steps[red];
    if (rst->in[0] != ms->out[0] || reduce_axis(p, rst, r + 1) != r - 1
        || numel(p, rst->out[0]) != m->rows * m->d_out)
        return 0;
    m->y_val = rst->out[0];
    m->why = NULL;
    return take(m, mul) && take(m, cat) && take(m, red);
}

/* Y = sum of G[.., e:e+1] * O_e: Slice, Mul, a tree of Adds. */
static int
match_loop(match_t *m, int g)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int r = ss__plan_tensor(p, m->p_val)->ndim, n_add = 0;
    char seen[SS_MOE_MAX_EXPERTS] = { 0 };
    int vals[2 * SS_MOE_MAX_EXPERTS], n_vals = 0, used[2 * SS_MOE_MAX_EXPERTS];

    m->why = "the gates are not used as a weighted sum";
    if (n_readers(fz, g) != m->n_exp)
        return 0;
    for (int i = 0; i < m->n_exp; i++) {
        int sl = reader(fz, g, i), mul, o, e;
        const ss_step_t *st;
        int64_t a[8], b[8], ax[8], step[8] = { 1 };

        if (!is_op(p, sl, "Slice"))
            return 0;
        st = &p->steps[sl];
        if (st->in[0] != g || st->n_in < 4
            || const_ints(p, st->in[1], a) != 1
            || const_ints(p, st->in[2], b) != 1
            || const_ints(p, st->in[3], ax) != 1
            || (st->n_in > 4 && st->in[4] >= 0
                && const_ints(p, st->in[4], step) != 1)
            || norm_axis(ax[0], r) != r - 1 || step[0] != 1
            || a[0] < 0 || a[0] >= m->n_exp || b[0] != a[0] + 1
            || n_readers(fz, st->out[0]) != 1)
            return 0;
        e = (int)a[0];
        if (seen[e])
            return 0;
        seen[e] = 1;
        mul = reader(fz, st->out[0], 0);
        if (!is_op(p, mul, "Mul"))
            return 0;
        o = p->steps[mul].in[0] == st->out[0] ? p->steps[mul].in[1]
                                              : p->steps[mul].in[0];
        if (ss__plan_root(p, o) != o || n_readers(fz, o) != 1
            || fz->is_out[o] || fz->is_out[p->steps[mul].out[0]])
            return 0;
        if (i == 0)
            m->d_out = ss__plan_tensor(p, o)->dims[r - 1];
        if (ss__plan_tensor(p, o)->ndim != r
            || numel(p, o) != m->rows * m->d_out
            || numel(p, p->steps[mul].out[0]) != m->rows * m->d_out)
            return 0;
        m->out_e[e] = o;
        used[n_vals] = 0;
        vals[n_vals++] = p->steps[mul].out[0];
        if (!take(m, sl) || !take(m, mul))
            return 0;
    }
    /* fold Adds whose two operands are both terms or partial sums */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < n_vals; i++) {
            int s, o, j;
            const ss_step_t *st;

            if (used[i] || n_readers(fz, vals[i]) != 1)
                continue;
            s = reader(fz, vals[i], 0);
            if (!is_op(p, s, "Add") || in_set(m, s))
                continue;
            st = &p->steps[s];
            o = st->in[0] == vals[i] ? st->in[1] : st->in[0];
            for (j = 0; j < n_vals && !(vals[j] == o && !used[j] && j != i);
                 j++)
                ;
            if (j == n_vals || n_vals == 2 * SS_MOE_MAX_EXPERTS)
                continue;
            used[i] = used[j] = 1;
            used[n_vals] = 0;
            vals[n_vals++] = st->out[0];
            n_add++;
            if (!take(m, s))
                return 0;
            changed = 1;
        }
    }
    if (n_add != m->n_exp - 1)
        return 0;
    for (int i = 0; i < n_vals; i++)
        if (!used[i])
            m->y_val = vals[i];
    m->why = NULL;
    return 1;
}

/* ---- the experts ------------------------------------------------------- */

static int
is_linear(const ss_plan_t *p, int s)
{
    const ss_step_t *st = &p->steps[s];

    return (ss__plan_is_op(st, "Gemm") || ss__plan_is_op(st, "MatMul"))
           && st->n_in >= 2 && ss__fz_is_const(p, st->in[1])
           && !ss__fz_is_const(p, st->in[0]);
}

/* A per-tensor scale and zero point of Q/DQ step st (inputs 1, 2) into
 * scale, zp, dt (U8 when the zero point is absent); 0 when they are not
 * constants of one element. */
static int
qparams(const ss_plan_t *p, const ss_step_t *st, float *scale, int *zp,
        ss_dtype_t *dt)
{
    const ss_tensor_t *z;

    if (st->n_in < 2 || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32)
        || numel(p, st->in[1]) != 1)
        return 0;
    *scale = *(const float *)ss__plan_tensor(p, st->in[1])->data;
    *zp = 0;
    *dt = SS_DTYPE_U8;
    if (st->n_in > 2 && st->in[2] >= 0) {
        if (!ss__fz_is_const(p, st->in[2]) || numel(p, st->in[2]) != 1)
            return 0;
        z = ss__plan_tensor(p, st->in[2]);
        if (z->dtype == SS_DTYPE_U8)
            *zp = *(const uint8_t *)z->data;
        else if (z->dtype == SS_DTYPE_I8)
            *zp = *(const int8_t *)z->data;
        else
            return 0;
        *dt = z->dtype;
    }
    return *scale > 0 && isfinite(*scale);
}

/* Is v the output of a per-tensor DequantizeLinear of a u8/s8 tensor?
 * Then the layer reading it may run int8 on that grid (ld->q...). */
static void
dq_input(const ss__fz_t *fz, int v, ss__moe_layer_desc_t *ld)
{
    const ss_plan_t *p = fz->p;
    int s = fz->prod[ss__plan_root(p, v)];

    ld->q = 0;
    if (s >= 0 && is_op(p, s, "DequantizeLinear")
        && qparams(p, &p->steps[s], &ld->in_scale, &ld->in_zp,
                   &ld->in_dtype)
        && ss__plan_tensor(p, p->steps[s].in[0])->dtype == ld->in_dtype)
        ld->q = 1;
}

/* The f32 value a layer input x stands for: v when x = DQ(Q(v)) per
 * tensor (a QDQ model's activation: the int8 layer quantizes v itself,
 * as Q does), else x.  Experts must share it, not x: PTQ's fallback
 * may leave one expert reading v while the others read DQ(Q(v)). */
static int
base_input(const ss__fz_t *fz, int x)
{
    const ss_plan_t *p = fz->p;
    int s = fz->prod[ss__plan_root(p, x)], q;
    float s1, s2;
    int z1, z2;
    ss_dtype_t d1, d2;

    if (s < 0 || !is_op(p, s, "DequantizeLinear")
        || !qparams(p, &p->steps[s], &s2, &z2, &d2))
        return x;
    q = fz->prod[ss__plan_root(p, p->steps[s].in[0])];
    if (q < 0 || !is_op(p, q, "QuantizeLinear")
        || !qparams(p, &p->steps[q], &s1, &z1, &d1) || s1 != s2
        || z1 != z2 || d1 != d2)
        return x;
    return p->steps[q].in[0];
}

/* v -> QuantizeLinear -> DequantizeLinear (the same per-tensor scale and
 * zero point), each read once: the DQ step, or -1; *qs the Q step. */
static int
qdq_pair(const ss__fz_t *fz, int v, int *qs)
{
    const ss_plan_t *p = fz->p;
    float s1, s2;
    int z1, z2, dq;
    ss_dtype_t d1, d2;

    *qs = ss__fz_single(fz, v);
    if (*qs < 0 || !is_op(p, *qs, "QuantizeLinear")
        || p->steps[*qs].in[0] != v
        || !qparams(p, &p->steps[*qs], &s1, &z1, &d1))
        return -1;
    dq = ss__fz_single(fz, p->steps[*qs].out[0]);
    if (dq < 0 || !is_op(p, dq, "DequantizeLinear")
        || !qparams(p, &p->steps[dq], &s2, &z2, &d2) || s1 != s2
        || z1 != z2 || d1 != d2)
        return -1;
    return dq;
}

/* Layers from Linear step s forward to value o: 1 and the expert filled
 * in, or 0.  A QuantizeLinear -> DequantizeLinear pair between two
 * layers (a QDQ model's activation) is taken into the expert: the next
 * layer runs int8 on its grid. */
static int
parse_expert(match_t *m, int s, int o, ss__moe_expert_desc_t *xd,
             int *steps, int *n_steps, ss_err_t *err)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int rc;

    ss__moe_layer_desc_t qin = { 0 };

    xd->n_layers = 0;
    *n_steps = 0;
    dq_input(fz, p->steps[s].in[0], &qin);
    for (;;) {
        ss__fz_lin_t L;
        ss__chain_t c;
        ss__moe_layer_desc_t *ld;
        int cut = -1, qs, dq;

        if (xd->n_layers == SS_MOE_MAX_LAYERS || !is_linear(p, s))
            return 0;
        if ((rc = ss__fz_linear_shape(fz, s, &L, &c, err)) <= 0)
            return rc;
        if (L.owned != NULL) {
            /* Gemm beta != 1: a scaled bias the layer points at */
            if (m->n_owned == (int)(sizeof(m->owned) / sizeof(m->owned[0]))) {
                ss_free(L.owned);
                return 0;
            }
            m->owned[m->n_owned++] = L.owned;
        }
        if (L.m != m->rows)
            return 0;
        {
            ss__chain_t before = c;

            ss__fz_chain(fz, &c);
            for (int i = 0; i < c.post.n && cut < 0; i++)
                if (c.post.op[i].kind != SS_DNN_PO_ELTWISE)
                    cut = i;
            if (cut >= 0) {
                /* stop before a run-time operand (the loop form's gate
                 * column): chain the activations only */
                c = before;
                if (cut > 0) {
                    c.max_post = cut;
                    ss__fz_chain(fz, &c);
                }
            }
        }
        ld = &xd->layers[xd->n_layers++];
        ld->k = L.k;
        ld->n = L.n;
        ld->w = ss__plan_tensor(p, L.wv)->data;
        ld->w_nk = L.w_nk;
        ld->bias = L.bias;
        ld->post = c.post;
        ld->q = qin.q;
        ld->in_scale = qin.in_scale;
        ld->in_zp = qin.in_zp;
        ld->in_dtype = qin.in_dtype;
        qin.q = 0;
        for (int i = 0; i < c.n_steps; i++) {
            if (*n_steps == 64)
                return 0;
            steps[(*n_steps)++] = c.steps[i];
        }
        if (c.out == o)
            return 1;
        if ((dq = qdq_pair(fz, c.out, &qs)) >= 0) {
            if (*n_steps > 62)
                return 0;
            steps[(*n_steps)++] = qs;
            steps[(*n_steps)++] = dq;
            dq_input(fz, p->steps[dq].out[0], &qin);
            c.out = p->steps[dq].out[0];
        }
        if ((s = ss__fz_single(fz, c.out)) < 0)
            return 0;
    }
}

/* Finds expert e's first layer: the most upstream Linear on the way back
 * from O_e (following each step's earliest-computed operand) from which
 * the layers parse forward to O_e exactly. */
static int
match_expert(match_t *m, int e, ss_err_t *err)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int cand[64], n_cand = 0, v = m->out_e[e], steps[64], n_steps = 0;

    for (int hop = 0; hop < 256 && n_cand < 64; hop++) {
        int s = fz->prod[v], best = -1;
        const ss_step_t *st;

        if (s < 0 || p->steps[s].kind != SS_STEP_REF)
            break;
        st = &p->steps[s];
        if (is_linear(p, s))
            cand[n_cand++] = s;
        for (int k = 0; k < st->n_in; k++) {
            int u = st->in[k];

            if (u < 0 || ss__fz_is_const(p, u))
                continue;
            u = ss__plan_root(p, u);
            if (best < 0 || fz->prod[u] < fz->prod[best])
                best = u;
        }
        if (best < 0)
            break;
        v = best;
    }
    for (int c = n_cand - 1; c >= 0; c--) {
        int rc = parse_expert(m, cand[c], m->out_e[e], &m->ex[e], steps,
                              &n_steps, err);
        int x = base_input(fz, p->steps[cand[c]].in[0]);

        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        if (e == 0)
            m->x_val = x;
        if (x != m->x_val)
            break;
        for (int i = 0; i < n_steps; i++)
            if (!take(m, steps[i]))
                return 0;
        return 1;
    }
    snprintf(m->whybuf, sizeof(m->whybuf), "expert %d is not a chain of "
             "Linear layers and activations from the experts' input", e);
    m->why = m->whybuf;
    return 0;
}

/* ---- commit ------------------------------------------------------------ */

/* Every value the set computes, but Y, is read inside the set only. */
static int
closed(match_t *m)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int last = -1;

    for (int i = 0; i < m->n_set; i++) {
        const ss_step_t *st = &p->steps[m->set[i]];

        if (st->kind != SS_STEP_REF)
            return 0;
        for (int i2 = i + 1; i2 < m->n_set; i2++)
            if (m->set[i2] == m->set[i])
                return 0;
        if (m->set[i] > last)
            last = m->set[i];
        for (int k = 0; k < st->n_out; k++) {
            int v = st->out[k];

            if (v < 0 || v == m->y_val)
                continue;
            if (fz->is_out[v])
                return 0;
            for (int j = 0; j < n_readers(fz, v); j++)
                if (!in_set(m, reader(fz, v, j)))
                    return 0;
        }
    }
    return last == fz->prod[m->y_val] ? last : -1;
}

/* The MoE step of d, reading x and the scores and writing y, as a new
 * step (*st) for the caller to place; 0 or < 0. */
static int
make_step(ss_plan_t *p, const ss__moe_desc_t *d, const ss_node_t *node,
          int x, int score, int y, ss_step_t *st, ss_err_t *err)
{
    ss__moe_t *moe = NULL;
    int ws, rc;

    memset(st, 0, sizeof(*st));
    if ((rc = ss__moe_new(d, &moe, err)) < 0)
        return rc;
    if ((ws = ss__plan_add_value(p, y, SS_DTYPE_U8, SS_DNN_PLAIN, err)) < 0) {
        ss__moe_free(moe);
        return ws;
    }
    p->vals[ws].t.ndim = 1;
    p->vals[ws].t.dims[0] = (int64_t)ss__moe_ws_bytes(moe);
    p->vals[ws].bytes = ss__moe_ws_bytes(moe);
    st->kind = SS_STEP_MOE;
    st->node = node;
    st->moe = moe;
    st->n_in = 2;
    st->n_out = 2;
    if ((st->in = ss_malloc(2 * sizeof(int))) == NULL
        || (st->out = ss_malloc(2 * sizeof(int))) == NULL) {
        ss__plan_step_clear(st);
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    }
    st->in[0] = x;
    st->in[1] = score;
    st->out[0] = y;
    st->out[1] = ws;
    snprintf(st->what, sizeof(st->what), "MoE E=%d k=%d", d->n_exp, d->k);
    if (p->max_io < 2)
        p->max_io = 2;
    if (ss__moe_scratch_bytes(moe) > p->scratch_bytes)
        p->scratch_bytes = ss__moe_scratch_bytes(moe);
    p->vals[y].kind = SS_PV_ARENA;
    return 0;
}

static int
commit(match_t *m, int last, ss_err_t *err)
{
    ss_plan_t *p = m->fz->p;
    ss__moe_desc_t d = { 0 };
    ss_step_t st;
    int rc;

    d.n_exp = m->n_exp;
    d.k = m->k;
    d.norm = m->norm;
    d.unit = m->unit;
    d.bf16 = ss_graph_precision(p->g) == SS_DTYPE_BF16;
    d.rows = m->rows;
    d.d_in = m->d_in;
    d.d_out = m->d_out;
    d.ex = m->ex;
    if ((rc = make_step(p, &d, p->steps[m->topk].node, m->x_val, m->p_val,
                        m->y_val, &st, err)) < 0)
        return rc;
    for (int i = 0; i < m->n_set; i++) {
        ss_step_t *s = &p->steps[m->set[i]];

        for (int k = 0; k < s->n_out; k++)
            if (s->out[k] >= 0 && s->out[k] != m->y_val)
                p->vals[s->out[k]].kind = SS_PV_UNSET;
        ss__plan_step_clear(s);
    }
    p->steps[last] = st;
    p->vals[m->y_val].kind = SS_PV_ARENA;
    p->n_fused += m->n_set;
    return 1;
}

/* ---- com.microsoft.MoE ------------------------------------------------- */

/* ORT's MoE and QMoE ops with constant expert weights onto the same
 * step (their semantics: engine/ops/moe.c); QMoE's weights are
 * dequantized here, once, and packed like any others. */
static int
try_ort(ss_plan_t *p, int s, ss_err_t *err)
{
    ss_step_t *st = &p->steps[s], ns;
    const ss_tensor_t *in[11] = { 0 };
    ss__moe_expert_desc_t *ex = NULL;
    ss__moe_desc_t d = { 0 };
    const float *w[3] = { NULL, NULL, NULL }, *bias[3] = { NULL };
    float *own[3] = { NULL, NULL, NULL };
    const char *why = NULL;
    ss_ort_moe_t g;
    int rc = 0;

    for (int k = 0; k < st->n_in && k < 11; k++)
        in[k] = st->in[k] >= 0 ? ss__plan_tensor(p, st->in[k]) : NULL;
    if (st->n_in < 5 || st->n_in > 11
        || ss__ops_moe_geom(st->node, in, &g, err) < 0) {
        ss_err_clear(err);
        return 0;
    }
    for (int k = 2; k < st->n_in; k++)
        if (st->in[k] >= 0 && !ss__fz_is_const(p, st->in[k]))
            why = "its expert weights are not constants";
    if (g.n_exp > SS_MOE_MAX_EXPERTS)
        why = "too many experts";
    if (why != NULL) {
        ss_log_info("%s: MoE '%s' stays on its reference kernel: %s",
                    p->g->source, st->node->name, why);
        return 0;
    }
    if ((ex = ss_calloc((size_t)g.n_exp, sizeof(*ex))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the MoE pass");
    for (int j = 0; j < 2 + g.has_fc3; j++)
        if ((rc = ss__ops_moe_weights(&g, in, j, &w[j], &own[j], err)) < 0)
            goto done;
    if (g.has_b1)
        bias[0] = in[g.b[0]]->data;
    if (g.has_b2)
        bias[1] = in[g.b[1]]->data;
    if (g.has_b3)
        bias[2] = in[g.b[2]]->data;
    for (int64_t e = 0; e < g.n_exp; e++) {
        ss__moe_layer_desc_t *l1 = &ex[e].layers[0];
        ss__moe_layer_desc_t *l3 = &ex[e].layers[1];
        ss__moe_layer_desc_t *l2 = &ex[e].layers[g.has_fc3 ? 2 : 1];
        ss_dnn_postop_t *po = &l1->post.op[0];

        ex[e].n_layers = g.has_fc3 ? 3 : 2;
        ex[e].gated = g.has_fc3;
        l1->k = g.hidden;
        l1->n = g.inter;
        l1->w = w[0] + e * g.inter * g.hidden;
        l1->w_nk = 1;      /* either shape: moe.h */
        l1->bias = bias[0] != NULL ? bias[0] + e * g.inter : NULL;
        po->kind = SS_DNN_PO_ELTWISE;
        po->alpha = 0;
        switch (g.act) {
        case SS_ORT_MOE_RELU: po->alg = SS_DNN_RELU; break;
        case SS_ORT_MOE_GELU: po->alg = SS_DNN_GELU_TANH; break;
        case SS_ORT_MOE_SILU: po->alg = SS_DNN_SWISH; po->alpha = 1; break;
        default: po->alg = 0; break;
        }
        l1->post.n = po->alg != 0;
        if (g.has_fc3) {
            l3->k = g.hidden;
            l3->n = g.inter;
            l3->w = w[2] + e * g.inter * g.hidden;
            l3->w_nk = 1;
            l3->bias = bias[2] != NULL ? bias[2] + e * g.inter : NULL;
        }
        l2->k = g.inter;
        l2->n = g.hidden;
        l2->w = w[1] + e * g.hidden * g.inter;
        l2->w_nk = 1;
        l2->bias = bias[1] != NULL ? bias[1] + e * g.hidden : NULL;
    }
    d.n_exp = (int)g.n_exp;
    d.k = (int)g.k;
    d.norm = g.norm;
    d.ort = 1;
    d.bf16 = ss_graph_precision(p->g) == SS_DTYPE_BF16;
    d.rows = g.rows;
    d.d_in = g.hidden;
    d.d_out = g.hidden;
    d.ex = ex;
    if ((rc = make_step(p, &d, st->node, st->in[0], st->in[1], st->out[0],
                        &ns, err)) < 0) {
        if (rc != SS_ENOMEM) {
            ss_log_info("%s: MoE '%s' stays on its reference kernel: %s",
                        p->g->source, st->node->name,
                        err != NULL ? err->msg : "oneDNN refused a layer");
            ss_err_clear(err);
            rc = 0;
        }
        goto done;
    }
    st = &p->steps[s];      /* make_step may have moved p->vals, not steps */
    ss__plan_step_clear(st);
    *st = ns;
    p->n_fused++;
    ss_log_info("%s: MoE '%s': %d experts, top %d, sparse%s%s",
                p->g->source, st->node->name, d.n_exp, d.k,
                g.has_fc3 ? ", gated (fc3)" : "",
                g.bits == 8 ? ", int8 weights dequantized"
                : g.bits == 4 ? ", int4 weights dequantized" : "");
    rc = 1;
done:
    for (int j = 0; j < 3; j++)
        ss_free(own[j]);
    ss_free(ex);
    return rc;
}

/* Tries the pattern at TopK step t: 1 rewritten, 0 left dense, < 0 an
 * error that stops the compile. */
static int
try_moe(ss__fz_t *fz, int t, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    match_t *m;
    int s, g, last, rc = 0;

    if ((m = ss_calloc(1, sizeof(*m))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the MoE pass");
    m->fz = fz;
    m->topk = t;
    if ((s = match_gates(m)) < 0)
        goto done;
    g = p->steps[s].out[0];
    if (fz->is_out[g]) {
        m->why = "the gate matrix is a graph output";
        goto done;
    }
    if (!match_stack(m, g)) {
        const char *why = m->why;

        m->n_set = m->norm ? 4 : 2;
        if (!match_loop(m, g)) {
            m->why = why;
            goto done;
        }
    }
    for (int e = 0; e < m->n_exp; e++)
        if ((rc = match_expert(m, e, err)) <= 0)
            goto done;
    rc = 0;
    m->d_in = ss__plan_tensor(p, m->x_val)->dims[
        ss__plan_tensor(p, m->x_val)->ndim - 1];
    if (ss__plan_tensor(p, m->x_val)->dtype != SS_DTYPE_F32
        || numel(p, m->x_val) != m->rows * m->d_in) {
        m->why = "the experts' input does not have the router's rows";
        goto done;
    }
    if ((last = closed(m)) < 0) {
        m->why = "a value inside the pattern is used outside it";
        goto done;
    }
    if ((rc = commit(m, last, err)) < 0) {
        if (rc == SS_ENOMEM)
            goto done;
        m->why = err != NULL ? err->msg : "oneDNN refused a layer";
        ss_log_info("%s: MoE at TopK '%s' stays dense: %s", p->g->source,
                    p->steps[t].node->name, m->why);
        ss_err_clear(err);
        m->why = NULL;
        rc = 0;
        goto done;
    }
    {
        int nq = 0;

        for (int e = 0; e < m->n_exp; e++)
            for (int l = 0; l < m->ex[e].n_layers; l++)
                nq += m->ex[e].layers[l].q;
        ss_log_info("%s: MoE at TopK '%s': %d experts, top %d, sparse%s",
                    p->g->source, p->steps[last].node->name, m->n_exp, m->k,
                    nq > 0 && ss_graph_precision(p->g) != SS_DTYPE_BF16
                    ? ", int8 layers (QDQ)" : "");
    }
done:
    if (rc == 0 && m->why != NULL)
        ss_log_info("%s: MoE at TopK '%s' stays dense: %s", p->g->source,
                    p->steps[t].node->name, m->why);
    for (int i = 0; i < m->n_owned; i++)
        ss_free(m->owned[i]);
    ss_free(m);
    return rc;
}

int
ss__plan_moe(ss_plan_t *p, ss_err_t *err)
{
    const char *off = getenv("SS_ENGINE_NO_MOE");
    ss__fz_t fz;
    int rc = 0, any = 0, kept = 0;

    if (off != NULL && off[0] != '\0' && strcmp(off, "0") != 0)
        return 0;
    for (int s = 0; s < p->n_steps; s++)
        if ((ss__plan_is_op(&p->steps[s], "com.microsoft.MoE")
             || ss__plan_is_op(&p->steps[s], "com.microsoft.QMoE"))
            && (rc = try_ort(p, s, err)) < 0)
            return rc;
    rc = 0;
    for (int s = 0; s < p->n_steps && !any; s++)
        any = ss__plan_is_op(&p->steps[s], "TopK");
    if (!any)
        return 0;
    if (ss__fz_init(&fz, p) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the MoE pass");
        goto done;
    }
    for (int s = 0; s < p->n_steps; s++)
        if (ss__plan_is_op(&p->steps[s], "TopK")
            && (rc = try_moe(&fz, s, err)) < 0)
            goto done;
    rc = 0;
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind != 0)
            p->steps[kept++] = p->steps[s];
    p->n_steps = kept;
done:
    ss__fz_close(&fz);
    return rc;
}
