/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparse-dispatch pass's matcher (pass_moe.c says what the pattern
 * is): from a TopK step, the scatter and its gates, the gate-weighted sum
 * (stacked or as a loop), and each summand back to its expert, parsed as
 * Linear layers with the fusion toolkit (QDQ int8 layers included).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/pass_moe_int.h"

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

    if (!ss__fz_const_of(p, v, SS_DTYPE_F32) || moe_numel(p, v) != n)
        return 0;
    x = ss__plan_tensor(p, v)->data;
    for (int64_t i = 0; i < n; i++)
        if (x[i] != 1.0f)
            return 0;
    return 1;
}

/* TopK → [ReduceSum → Div] → ScatterElements over zeros; returns the
 * scatter step or -1 (m->why set when it is worth a log line). */
int
ss__moe_match_gates(match_t *m)
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
    m->rows = moe_numel(p, m->p_val) / (m->n_exp ? m->n_exp : 1);
    v = t->out[0];
    idx = t->out[1];
    /* the indices go to one scatter, and so do the values, maybe
     * renormalised first */
    if (moe_n_readers(fz, idx) != 1 || fz->is_out[idx])
        return -1;
    s = moe_reader(fz, idx, 0);
    if (!moe_is_op(p, s, "ScatterElements"))
        return -1;
    sc = &p->steps[s];
    if (sc->n_in != 3 || sc->in[1] != idx || sc->n_out != 1)
        return -1;
    upd = sc->in[2];
    /* a top-k scattered into a matrix: worth a log line from here on */
    m->why = "the top-k values are used elsewhere, or transformed";
    if (upd != v && all_ones(p, upd, moe_numel(p, idx))) {
        /* a mask of the top k: V must be unused */
        if (moe_n_readers(fz, v) != 0 || fz->is_out[v])
            return -1;
        m->unit = 1;
    } else if (upd != v) {
        const ss_step_t *d;

        if (moe_n_readers(fz, v) != 2 || fz->is_out[v])
            return -1;
        for (int i = 0; i < 2; i++) {
            int q = moe_reader(fz, v, i);

            if (moe_is_op(p, q, "ReduceSum"))
                rs = q;
            else if (moe_is_op(p, q, "Div"))
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
    if (moe_n_readers(fz, upd) != 1
        || norm_axis(ss__attr_int(sc->node, "axis", 0), r) != r - 1
        || strcmp(ss__attr_string(sc->node, "reduction", "none"), "none")
        || !ss__fz_const_of(p, sc->in[0], SS_DTYPE_F32)
        || moe_numel(p, sc->in[0]) != moe_numel(p, m->p_val))
        return -1;
    {
        const float *z = ss__plan_tensor(p, sc->in[0])->data;

        for (int64_t i = 0; i < moe_numel(p, m->p_val); i++)
            if (z[i] != 0.0f)
                return -1;
    }
    if (m->n_exp > SS_MOE_MAX_EXPERTS || m->k < 1 || m->k >= m->n_exp) {
        m->why = m->k >= m->n_exp ? "k = E: every expert runs anyway"
                                  : "too many experts";
        return -1;
    }
    m->why = NULL;
    if (!moe_take(m, m->topk) || !moe_take(m, s) || (rs >= 0 && !moe_take(m, rs))
        || (dv >= 0 && !moe_take(m, dv)))
        return -1;
    return s;
}

/* ---- the weighted sum -------------------------------------------------- */

/* Y = ReduceSum(Unsqueeze(G, -1) * Concat(Unsqueeze(O_e, -2)), -2). */
int
ss__moe_match_stack(match_t *m, int g)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int mul, gu, cv, cat, red, r = ss__plan_tensor(p, m->p_val)->ndim;
    const ss_step_t *ms, *cs, *rst;

    m->why = "the gates are not used as a stacked weighted sum";
    if (moe_n_readers(fz, g) != 1)
        return 0;
    mul = moe_reader(fz, g, 0);
    if (!moe_is_op(p, mul, "Mul"))
        return 0;
    ms = &p->steps[mul];
    gu = ss__plan_root(p, ms->in[0]) == g ? ms->in[0] : ms->in[1];
    cv = gu == ms->in[0] ? ms->in[1] : ms->in[0];
    if (ss__plan_root(p, gu) != g || ss__plan_tensor(p, gu)->ndim != r + 1
        || ss__plan_tensor(p, gu)->dims[r] != 1
        || ss__plan_tensor(p, gu)->dims[r - 1] != m->n_exp)
        return 0;
    if ((cat = fz->prod[cv]) < 0 || !moe_is_op(p, cat, "Concat")
        || moe_n_readers(fz, cv) != 1 || fz->is_out[cv]
        || ss__plan_tensor(p, cv)->ndim != r + 1
        || moe_numel(p, ms->out[0]) != moe_numel(p, cv))
        return 0;
    cs = &p->steps[cat];
    if (cs->n_in != m->n_exp
        || norm_axis(ss__attr_int(cs->node, "axis", 0), r + 1) != r - 1)
        return 0;
    m->d_out = ss__plan_tensor(p, cv)->dims[r];
    if (moe_numel(p, cv) != m->rows * m->n_exp * m->d_out)
        return 0;
    for (int e = 0; e < m->n_exp; e++) {
        int o = ss__plan_root(p, cs->in[e]);

        const ss_tensor_t *ct = ss__plan_tensor(p, cs->in[e]);

        if (ct->ndim != r + 1 || ct->dims[r - 1] != 1
            || ct->dims[r] != m->d_out)
            return 0;
        if (moe_numel(p, o) != m->rows * m->d_out || moe_n_readers(fz, o) != 1
            || fz->is_out[o]) {
            m->why = "an expert's output is used elsewhere";
            return 0;
        }
        m->out_e[e] = o;
    }
    if (moe_n_readers(fz, ms->out[0]) != 1 || fz->is_out[ms->out[0]])
        return 0;
    red = moe_reader(fz, ms->out[0], 0);
    if (!moe_is_op(p, red, "ReduceSum"))
        return 0;
    rst = &p->steps[red];
    if (rst->in[0] != ms->out[0] || reduce_axis(p, rst, r + 1) != r - 1
        || moe_numel(p, rst->out[0]) != m->rows * m->d_out)
        return 0;
    m->y_val = rst->out[0];
    m->why = NULL;
    return moe_take(m, mul) && moe_take(m, cat) && moe_take(m, red);
}

/* Y = sum of G[.., e:e+1] * O_e: Slice, Mul, a tree of Adds. */
int
ss__moe_match_loop(match_t *m, int g)
{
    ss__fz_t *fz = m->fz;
    ss_plan_t *p = fz->p;
    int r = ss__plan_tensor(p, m->p_val)->ndim, n_add = 0;
    char seen[SS_MOE_MAX_EXPERTS] = { 0 };
    int vals[2 * SS_MOE_MAX_EXPERTS], n_vals = 0, used[2 * SS_MOE_MAX_EXPERTS];

    m->why = "the gates are not used as a weighted sum";
    if (moe_n_readers(fz, g) != m->n_exp)
        return 0;
    for (int i = 0; i < m->n_exp; i++) {
        int sl = moe_reader(fz, g, i), mul, o, e;
        const ss_step_t *st;
        int64_t a[8], b[8], ax[8], step[8] = { 1 };

        if (!moe_is_op(p, sl, "Slice"))
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
            || moe_n_readers(fz, st->out[0]) != 1)
            return 0;
        e = (int)a[0];
        if (seen[e])
            return 0;
        seen[e] = 1;
        mul = moe_reader(fz, st->out[0], 0);
        if (!moe_is_op(p, mul, "Mul"))
            return 0;
        o = p->steps[mul].in[0] == st->out[0] ? p->steps[mul].in[1]
                                              : p->steps[mul].in[0];
        if (ss__plan_root(p, o) != o || moe_n_readers(fz, o) != 1
            || fz->is_out[o] || fz->is_out[p->steps[mul].out[0]])
            return 0;
        if (i == 0)
            m->d_out = ss__plan_tensor(p, o)->dims[r - 1];
        if (ss__plan_tensor(p, o)->ndim != r
            || moe_numel(p, o) != m->rows * m->d_out
            || moe_numel(p, p->steps[mul].out[0]) != m->rows * m->d_out)
            return 0;
        m->out_e[e] = o;
        used[n_vals] = 0;
        vals[n_vals++] = p->steps[mul].out[0];
        if (!moe_take(m, sl) || !moe_take(m, mul))
            return 0;
    }
    /* fold Adds whose two operands are both terms or partial sums */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < n_vals; i++) {
            int s, o, j;
            const ss_step_t *st;

            if (used[i] || moe_n_readers(fz, vals[i]) != 1)
                continue;
            s = moe_reader(fz, vals[i], 0);
            if (!moe_is_op(p, s, "Add") || moe_in_set(m, s))
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
            if (!moe_take(m, s))
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
        || moe_numel(p, st->in[1]) != 1)
        return 0;
    *scale = *(const float *)ss__plan_tensor(p, st->in[1])->data;
    *zp = 0;
    *dt = SS_DTYPE_U8;
    if (st->n_in > 2 && st->in[2] >= 0) {
        if (!ss__fz_is_const(p, st->in[2]) || moe_numel(p, st->in[2]) != 1)
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
    if (s >= 0 && moe_is_op(p, s, "DequantizeLinear")
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

    if (s < 0 || !moe_is_op(p, s, "DequantizeLinear")
        || !qparams(p, &p->steps[s], &s2, &z2, &d2))
        return x;
    q = fz->prod[ss__plan_root(p, p->steps[s].in[0])];
    if (q < 0 || !moe_is_op(p, q, "QuantizeLinear")
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
    if (*qs < 0 || !moe_is_op(p, *qs, "QuantizeLinear")
        || p->steps[*qs].in[0] != v
        || !qparams(p, &p->steps[*qs], &s1, &z1, &d1))
        return -1;
    dq = ss__fz_single(fz, p->steps[*qs].out[0]);
    if (dq < 0 || !moe_is_op(p, dq, "DequantizeLinear")
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
int
ss__moe_match_expert(match_t *m, int e, ss_err_t *err)
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
            if (!moe_take(m, steps[i]))
                return 0;
        return 1;
    }
    snprintf(m->whybuf, sizeof(m->whybuf), "expert %d is not a chain of "
             "Linear layers and activations from the experts' input", e);
    m->why = m->whybuf;
    return 0;
}
