/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plan compiler's walk, one node at a time (plan.c calls it for each
 * node in topological order; plan_ctrl.c for an inlined branch's): the
 * node's output shapes inferred and charged to the plan's budget, a node
 * with only constant inputs folded into constants now, Identity/Dropout
 * and the reshaping ops made views of their input, and every other node
 * appended as a reference step for the passes to replace.  plan.c's
 * header comment has the design (folding, views, the budget).
 *
 * THREADS: [any], on the plan being built (owned by the caller).
 */

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

static int
node_is(const ss_node_t *n, const char *op)
{
    return strcmp(n->op_type, op) == 0;
}

static int set_shape(ss_plan_t *p, int v, const ss_tensor_t *t,
                     const ss_node_t *n, ss_err_t *err);

/* A graph output over the caller's limit (ss_plan_opts_t) fails here,
 * when its shape is known and before a fold or a run allocates it: a
 * request whose values choose an output's size (Range's limit,
 * ConstantOfShape's or Expand's shape) must not make the daemon compute
 * gigabytes it would refuse to send. */
static size_t
out_limit(const ss_plan_t *p)
{
    size_t lim = p->max_out;

    if (lim == 0 || (p->out_rows > 0
                     && ss_mul_overflow(lim, (size_t)p->out_rows, &lim) < 0))
        return SIZE_MAX;
    return lim;
}

static int
check_output(const ss_plan_t *p, int v, const ss_node_t *n, ss_err_t *err)
{
    int k;

    for (k = 0; k < p->g->n_outputs && p->g->outputs[k] != v; k++)
        ;
    if (k == p->g->n_outputs || p->vals[v].bytes <= out_limit(p))
        return 0;
    if (p->out_rows > 0)
        return ss_err_set(err, SS_ETOOBIG, "node '%s' (%s): output '%s' "
                          "needs %zu bytes for %lld rows, over the limit "
                          "of %zu bytes per row", ss__plan_label(n), n->op_type,
                          p->g->values[v].name, p->vals[v].bytes,
                          (long long)p->out_rows, p->max_out);
    return ss_err_set(err, SS_ETOOBIG, "node '%s' (%s): output '%s' needs "
                      "%zu bytes, over the limit of %zu bytes on an output",
                      ss__plan_label(n), n->op_type, p->g->values[v].name,
                      p->vals[v].bytes, p->max_out);
}

int
ss__plan_set_shape(ss_plan_t *p, const ss_node_t *n, int v,
                   const ss_tensor_t *t, ss_err_t *err)
{
    return set_shape(p, v, t, n, err);
}

static int
set_shape(ss_plan_t *p, int v, const ss_tensor_t *t, const ss_node_t *n,
          ss_err_t *err)
{
    ss_pval_t *pv = &p->vals[v];

    for (int k = 0; k < n->n_inputs; k++)
        if (n->inputs[k] >= 0 && p->vals[n->inputs[k]].from_req)
            pv->from_req = 1;
    pv->t.dtype = t->dtype;
    pv->t.ndim = t->ndim;
    memcpy(pv->t.dims, t->dims, sizeof(t->dims));
    if (t->ndim < 0 || t->ndim > SS_MAX_DIMS
        || ss__tensor_bytes(&pv->t, &pv->bytes) < 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (%s): output "
                          "'%s' has a bad shape", p->g->source, ss__plan_label(n),
                          n->op_type, p->g->values[v].name);
    if (pv->bytes > p->max_bytes)
        return ss_err_set(err, SS_ETOOBIG, "%s: node '%s' (%s): output "
                          "'%s' needs %zu bytes, over the plan's %zu-byte "
                          "budget", p->g->source, ss__plan_label(n), n->op_type,
                          p->g->values[v].name, pv->bytes, p->max_bytes);
    return check_output(p, v, n, err);
}

/* Charges a constant of v's size that node n folds to the budget.  One
 * folded from a request's values (Range's limit, ConstantOfShape's shape
 * given as inputs) is held to the output limit too: the request chose
 * its size, and the fold would compute it now. */
static int
charge_const(ss_plan_t *p, int v, const ss_node_t *n, ss_err_t *err)
{
    size_t total = p->const_bytes + p->vals[v].bytes;   /* both <= 2^48 */

    if (p->vals[v].from_req && p->vals[v].bytes > out_limit(p))
        return ss_err_set(err, SS_ETOOBIG, "node '%s' (%s): folding '%s' "
                          "from the request's values takes %zu bytes, over "
                          "the limit of %zu bytes on an output%s",
                          ss__plan_label(n), n->op_type, p->g->values[v].name,
                          p->vals[v].bytes, p->max_out,
                          p->out_rows > 0 ? " per row" : "");

    if (total > p->max_bytes)
        return ss_err_set(err, SS_ETOOBIG, "%s: node '%s' (%s): folding "
                          "'%s' takes the plan's constants over its "
                          "%zu-byte budget", p->g->source, ss__plan_label(n),
                          n->op_type, p->g->values[v].name, p->max_bytes);
    p->const_bytes = total;
    return 0;
}

void
ss__plan_own_const(ss_plan_t *p, int v, void *data)
{
    p->vals[v].t.data = data;
    p->vals[v].owned = 1;
    p->vals[v].kind = SS_PV_CONST;
    p->vals[v].alias = -1;
}

/* Shape and Size depend only on the input's (now concrete) shape. */
static int
fold_shape(ss_plan_t *p, const ss_node_t *n, const ss_tensor_t *in,
           ss_err_t *err)
{
    ss_tensor_t t = { .dtype = SS_DTYPE_I64, .ndim = 1 };
    int64_t *data = NULL, start = 0, end = in->ndim, numel = 1;
    int v = n->outputs[0], rc = 0;

    if (node_is(n, "Size")) {
        t.ndim = 0;
        for (int d = 0; d < in->ndim; d++)
            numel *= in->dims[d];
    } else {
        start = ss__attr_int(n, "start", 0);
        end = ss__attr_int(n, "end", in->ndim);
        if (start < 0)
            start += in->ndim;
        if (end < 0)
            end += in->ndim;
        start = start < 0 ? 0 : start > in->ndim ? in->ndim : start;
        end = end < 0 ? 0 : end > in->ndim ? in->ndim : end;
        t.dims[0] = end > start ? end - start : 0;
    }
    if (v < 0)
        goto done;
    if ((rc = set_shape(p, v, &t, n, err)) < 0)
        goto done;
    if ((data = ss_aligned_alloc(8 * SS_MAX_DIMS)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a constant");
        goto done;
    }
    if (t.ndim == 0)
        data[0] = numel;
    else
        for (int64_t d = start; d < end; d++)
            data[d - start] = in->dims[d];
    ss__plan_own_const(p, v, data);
done:
    return rc;
}

int
ss__plan_alias(ss_plan_t *p, const ss_node_t *n, int v, int src,
               ss_err_t *err)
{
    ss_pval_t *in = &p->vals[src];
    int rc;

    if ((rc = set_shape(p, v, &in->t, n, err)) < 0)
        return rc;
    if (in->kind == SS_PV_CONST) {
        p->vals[v].kind = SS_PV_CONST;
        p->vals[v].t.data = in->t.data;  /* borrowed from src */
    } else {
        p->vals[v].alias = src;
    }
    return 0;
}

/* Identity and Dropout (inference): output 0 is the input; Dropout's
 * mask, when named, is all true. */
static int
pass_through(ss_plan_t *p, const ss_node_t *n, int src, ss_err_t *err)
{
    int v = n->n_outputs > 0 ? n->outputs[0] : -1, rc = 0;
    ss_pval_t *in = &p->vals[src];

    if (v >= 0 && (rc = ss__plan_alias(p, n, v, src, err)) < 0)
        return rc;
    if (n->n_outputs > 1 && n->outputs[1] >= 0) {
        ss_tensor_t m = in->t;
        void *data;

        m.dtype = SS_DTYPE_BOOL;
        if ((rc = set_shape(p, n->outputs[1], &m, n, err)) < 0
            || (rc = charge_const(p, n->outputs[1], n, err)) < 0)
            return rc;
        if ((data = ss_aligned_alloc(p->vals[n->outputs[1]].bytes + 1))
            == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a constant");
        memset(data, 1, p->vals[n->outputs[1]].bytes);
        ss__plan_own_const(p, n->outputs[1], data);
    }
    return rc;
}

static int
is_view_op(const ss_node_t *n)
{
    return node_is(n, "Reshape") || node_is(n, "Flatten")
           || node_is(n, "Squeeze") || node_is(n, "Unsqueeze");
}

/* A Transpose that moves only dims of size 1 keeps every element where it
 * was: a view, like a Reshape.  torch's nn.MultiheadAttention writes two
 * per layer, [B,T,C] <-> [T,B,C], which at batch 1 were copies of the
 * whole activation (ViT-B/16: 24 per run). */
static int
is_view_transpose(const ss_plan_t *p, const ss_node_t *n)
{
    const ss_tensor_t *x;
    const int64_t *perm;
    int np, last = -1;

    if (!node_is(n, "Transpose") || n->n_inputs < 1 || n->inputs[0] < 0)
        return 0;
    x = &p->vals[n->inputs[0]].t;
    if ((np = ss__attr_ints(n, "perm", &perm)) != x->ndim)
        return 0;
    for (int d = 0; d < np; d++) {
        if (perm[d] < 0 || perm[d] >= x->ndim)
            return 0;
        if (x->dims[perm[d]] == 1)
            continue;
        if (perm[d] < last)
            return 0;
        last = (int)perm[d];
    }
    return 1;
}

int
ss__plan_node(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    const ss_tensor_t **ins = NULL;
    ss_tensor_t *outs = NULL;
    const ss_op_t *op;
    int all_const = 1, rc = 0;
    ss_step_t st = { 0 };

    if ((ins = ss_calloc((size_t)n->n_inputs + 1, sizeof(*ins))) == NULL
        || (outs = ss_calloc((size_t)n->n_outputs + 1, sizeof(*outs)))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to compile a node");
        goto done;
    }
    for (int k = 0; k < n->n_inputs; k++) {
        int v = n->inputs[k];

        if (v < 0)
            continue;
        if (p->vals[v].t.ndim < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (%s) reads "
                            "'%s', whose shape is unknown", p->g->source,
                            ss__plan_label(n), n->op_type, p->g->values[v].name);
            goto done;
        }
        ins[k] = &p->vals[v].t;
        if (p->vals[v].kind != SS_PV_CONST)
            all_const = 0;
    }
    if (node_is(n, "Identity") || node_is(n, "Dropout")) {
        if (n->n_inputs < 1 || n->inputs[0] < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (%s) has no "
                            "input", p->g->source, ss__plan_label(n), n->op_type);
            goto done;
        }
        rc = pass_through(p, n, n->inputs[0], err);
        goto done;
    }
    if ((node_is(n, "Shape") || node_is(n, "Size")) && n->n_inputs == 1
        && ins[0] != NULL && n->n_outputs >= 1) {
        rc = fold_shape(p, n, ins[0], err);
        goto done;
    }
    if ((n->domain == NULL || n->domain[0] == '\0')
        && (node_is(n, "If") || node_is(n, "Loop") || node_is(n, "Scan"))) {
        rc = ss__plan_ctrl(p, n, err);
        goto done;
    }
    if ((op = ss__op_find(n->op_type)) == NULL) {
        rc = ss_err_set(err, SS_EUNSUPP, "%s: node '%s': no kernel for %s",
                        p->g->source, ss__plan_label(n), n->op_type);
        goto done;
    }
    if ((rc = op->infer(n, p->g->opset, ins, outs, err)) < 0) {
        ss_err_wrap(err, rc, "%s", p->g->source);
        goto done;
    }
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outputs[k] >= 0
            && (rc = set_shape(p, n->outputs[k], &outs[k], n, err)) < 0)
            goto done;
    if (all_const) {
        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0
                && (rc = charge_const(p, n->outputs[k], n, err)) < 0)
                goto done;
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];

            outs[k].data = NULL;
            if (v >= 0 && (outs[k].data = ss_aligned_alloc(p->vals[v].bytes
                                                           + 1)) == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory to fold '%s'",
                                ss__plan_label(n));
                goto fold_fail;
            }
        }
        if ((rc = op->run(n, p->g->opset, ins, outs, err)) < 0) {
            ss_err_wrap(err, rc, "%s: folding constants", p->g->source);
            goto fold_fail;
        }
        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0)
                ss__plan_own_const(p, n->outputs[k], outs[k].data);
        goto done;
fold_fail:
        for (int k = 0; k < n->n_outputs; k++)
            ss_free(outs[k].data);
        goto done;
    }
    if ((is_view_op(n) || is_view_transpose(p, n))
        && n->n_outputs == 1 && n->outputs[0] >= 0
        && p->vals[n->outputs[0]].bytes == p->vals[n->inputs[0]].bytes) {
        p->vals[n->outputs[0]].alias = n->inputs[0];
        goto done;
    }
    st.kind = SS_STEP_REF;
    st.node = n;
    st.op = op;
    st.n_in = n->n_inputs;
    st.n_out = n->n_outputs;
    if ((st.in = ss__plan_dup_ids(n->inputs, n->n_inputs)) == NULL
        || (st.out = ss__plan_dup_ids(n->outputs, n->n_outputs)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        goto done;
    }
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outputs[k] >= 0)
            p->vals[n->outputs[k]].kind = SS_PV_ARENA;
    if ((rc = ss__plan_append(p, &st, err)) < 0)
        goto done;
    memset(&st, 0, sizeof(st));
done:
    ss__plan_step_clear(&st);
    ss_free(ins);
    ss_free(outs);
    return rc;
}
