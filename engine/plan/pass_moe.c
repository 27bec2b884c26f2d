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
#include "engine/plan/pass_moe_int.h"

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
            for (int j = 0; j < moe_n_readers(fz, v); j++)
                if (!moe_in_set(m, moe_reader(fz, v, j)))
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
    if ((s = ss__moe_match_gates(m)) < 0)
        goto done;
    g = p->steps[s].out[0];
    if (fz->is_out[g]) {
        m->why = "the gate matrix is a graph output";
        goto done;
    }
    if (!ss__moe_match_stack(m, g)) {
        const char *why = m->why;

        m->n_set = m->norm ? 4 : 2;
        if (!ss__moe_match_loop(m, g)) {
            m->why = why;
            goto done;
        }
    }
    for (int e = 0; e < m->n_exp; e++)
        if ((rc = ss__moe_match_expert(m, e, err)) <= 0)
            goto done;
    rc = 0;
    m->d_in = ss__plan_tensor(p, m->x_val)->dims[
        ss__plan_tensor(p, m->x_val)->ndim - 1];
    if (ss__plan_tensor(p, m->x_val)->dtype != SS_DTYPE_F32
        || moe_numel(p, m->x_val) != m->rows * m->d_in) {
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
