/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The decomposed LayerNorm torch.onnx.export writes below opset 17:
 *
 *   m = ReduceMean(x, axes=[-1])      d = Sub(x, m)
 *   v = ReduceMean(Pow(d, 2), axes=[-1])
 *   y = Div(d, Sqrt(Add(v, eps)))     [* gamma]  [+ beta]
 *
 * recognized from its first ReduceMean and run as one oneDNN layer
 * normalization over the last axis: an anchor of the f32 fusion pass
 * (plan_fuse.c), like those of plan_fuse_ops.c.
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <string.h>

#include "engine/plan/internal.h"

/* ReduceMean over the last axis only, keeping dims. */
static int
mean_last(const ss_plan_t *p, const ss_step_t *st)
{
    const int64_t *axes;
    int nd, n;

    if (!ss__plan_is_op(st, "ReduceMean") || st->n_in != 1 || st->n_out != 1
        || ss__attr_int(st->node, "keepdims", 1) != 1)
        return 0;
    nd = p->vals[st->in[0]].t.ndim;
    n = ss__attr_ints(st->node, "axes", &axes);
    return nd >= 1 && n == 1 && (axes[0] == -1 || axes[0] == nd - 1);
}

/* The other operand of binary step st when one of them is v. */
static int
other_of(const ss_step_t *st, int v)
{
    return st->in[0] == v ? st->in[1] : st->in[0];
}

int
ss__fuse_ln_decomposed(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_layernorm_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    int x, m, sub = -1, pw = -1, dv = -1, s2, sa, ss, sd, k, rc;
    int64_t cols, rows;
    float f;

    if (!mean_last(p, st) || p->vals[st->in[0]].t.dtype != SS_DTYPE_F32)
        return 0;
    x = st->in[0];
    m = st->out[0];
    if ((sub = ss__fz_single(fz, m)) < 0
        || !ss__plan_is_op(&p->steps[sub], "Sub") || p->steps[sub].in[0] != x
        || p->steps[sub].in[1] != m)
        return 0;
    {
        int dd = p->steps[sub].out[0];

        if (p->vals[dd].alias >= 0 || fz->is_out[dd]
            || fz->start[dd + 1] - fz->start[dd] != 2)
            return 0;
        for (int i = fz->start[dd]; i < fz->start[dd + 1]; i++) {
            const ss_step_t *r = &p->steps[fz->list[i]];

            if (ss__plan_is_op(r, "Pow") && r->in[0] == dd
                && ss__fz_scalar(p, r->in[1], &f) && f == 2.0f)
                pw = fz->list[i];
            else if (ss__plan_is_op(r, "Div") && r->in[0] == dd)
                dv = fz->list[i];
        }
        if (pw < 0 || dv < 0)
            return 0;
    }
    if ((s2 = ss__fz_single(fz, p->steps[pw].out[0])) < 0
        || !mean_last(p, &p->steps[s2])
        || (sa = ss__fz_single(fz, p->steps[s2].out[0])) < 0
        || !ss__plan_is_op(&p->steps[sa], "Add")
        || !ss__fz_scalar(p, other_of(&p->steps[sa], p->steps[s2].out[0]), &f)
        || (ss = ss__fz_single(fz, p->steps[sa].out[0])) < 0
        || !ss__plan_is_op(&p->steps[ss], "Sqrt")
        || (sd = ss__fz_single(fz, p->steps[ss].out[0])) != dv
        || p->steps[dv].in[1] != p->steps[ss].out[0])
        return 0;
    d.eps = f;
    cols = p->vals[x].t.dims[p->vals[x].t.ndim - 1];
    rows = cols ? ss_tensor_numel(&p->vals[x].t) / cols : 0;
    if (rows == 0 || cols == 0)
        return 0;
    ss__fz_chain_start(&c, s, x, p->steps[dv].out[0], "LayerNorm(decomposed)");
    c.steps[c.n_steps++] = sub;
    c.steps[c.n_steps++] = pw;
    c.steps[c.n_steps++] = s2;
    c.steps[c.n_steps++] = sa;
    c.steps[c.n_steps++] = ss;
    c.steps[c.n_steps++] = sd;
    /* optional affine: * gamma, + beta */
    if ((k = ss__fz_single(fz, c.out)) >= 0
        && ss__plan_is_op(&p->steps[k], "Mul")
        && (d.gamma = ss__fz_vec(p, other_of(&p->steps[k], c.out), cols))
           != NULL
        && p->vals[p->steps[k].out[0]].t.ndim == p->vals[x].t.ndim) {
        c.steps[c.n_steps++] = k;
        c.out = p->steps[k].out[0];
    }
    if ((k = ss__fz_single(fz, c.out)) >= 0
        && ss__plan_is_op(&p->steps[k], "Add")
        && (d.beta = ss__fz_vec(p, other_of(&p->steps[k], c.out), cols)) != NULL
        && p->vals[p->steps[k].out[0]].t.ndim == p->vals[x].t.ndim) {
        c.steps[c.n_steps++] = k;
        c.out = p->steps[k].out[0];
    }
    d.ndim = 2;
    d.dims[0] = rows;
    d.dims[1] = cols;
    if ((rc = ss_dnn_layernorm_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    if ((rc = ss__fz_emit(fz, &c, prim, &x, 1, err)) < 0)
        return rc;
    return 1;
}
