/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control flow: If and Loop (without sequence or optional types); the
 * Loop's compile and run are in plan_ctrl_loop.c, Scan in
 * plan_ctrl_scan.c.
 *
 * DESIGN.  A subgraph (an If's branch, a Loop's body) shares its model's
 * value table (engine/ir/ir.h), so an outer value it reads has the same
 * id inside and out.  Two ways to run one:
 *
 * - Inline.  An If whose condition is a constant of this plan (an
 *   initializer, folded from shapes as exporters write `if x.size(0) ==
 *   1`, or a shape-deciding graph input) compiles its branch's nodes
 *   straight into this plan through the walk's own step (ss__plan_node):
 *   the other branch is never compiled, and the plan is as fast as one
 *   without the If (its nodes fuse like any others).
 *
 * - A CTRL step.  Otherwise the subgraph becomes a plan of its own (its
 *   graph a "view": the subgraph's nodes, its formal inputs plus the outer
 *   values it reads that are not constants here; constants of this plan
 *   are constants there too), compiled now for the shapes it sees, and
 *   run by the step.  A plan needs every shape at compile time, so:
 *   an If computed at run time needs both branches to give the same
 *   shapes (else it is refused, naming the node); a Loop's body plans are
 *   compiled per distinct input shapes (and per iteration number where
 *   the body's shapes depend on it, as a Slice by the iteration does),
 *   following the shapes the loop-carried values take iteration after
 *   iteration.  The trip count and the condition of a Loop with scan
 *   outputs decide those outputs' shapes: they are shape-deciding inputs
 *   (engine/ops/registry.c), so a plan is compiled per value of them
 *   (engine/plan/plan.c says why), and the body's condition must then be
 *   known at compile time too (folded from the condition input: `for i
 *   in range(n)` bodies pass it through).  Without scan outputs a Loop
 *   may run until a condition computed at run time turns false, as long
 *   as its carried values keep their shapes.
 *
 * Running a step: the subgraph plans run in a context of their own (the
 * outer one's arena is in use), made at the first run; loop-carried
 * values alternate between two buffers of the outer context; scan
 * outputs are written in place, iteration i at row i.
 *
 * THREADS: compiled inside ss_plan_new; runs are [worker], on plans that
 * are immutable.
 */

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/memacct.h"
#include "engine/plan/plan_ctrl.h"

#define ALIGN 64

/* A condition's value: any bit set in its one element. */
int
ss__ctrl_truth(const ss_tensor_t *t)
{
    const unsigned char *b = t->data;

    for (size_t i = 0; i < ss_dtype_size(t->dtype); i++)
        if (b[i] != 0)
            return 1;
    return 0;
}

const char *
ss__ctrl_label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

int
ss__ctrl_refuse(const ss_plan_t *p, const ss_node_t *n, ss_err_t *err,
       const char *why)
{
    return ss_err_set(err, SS_EUNSUPP, "%s: node '%s' (%s version %d, "
                      "opset %d): %s", p->g->source, ss__ctrl_label(n), n->op_type,
                      ss__ir_op_version(n->op_type, p->g->opset),
                      p->g->opset, why);
}

static void
view_free(view_t *v)
{
    if (v == NULL)
        return;
    ss_free(v->g.inputs);
    ss_free(v->g.input_info);
    ss_memacct_unref(atomic_load(&v->g.acct));
    ss_free(v);
}

void
ss__ctrl_free(struct ss__ctrl *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->n_plans; i++)
        ss_plan_free(c->plans[i]);
    ss_free(c->plans);
    view_free(c->view[0]);
    view_free(c->view[1]);
    ss_free(c->sched);
    ss_free(c->carried_off);
    ss_free(c->carried_max);
    ss_free(c->scan_bytes);
    ss_free(c->scan_in_bytes);
    ss_free(c->in_rev);
    ss_free(c->out_rev);
    ss_free(c);
}

/* sg as a plan's graph: its formal inputs, then the outer values it
 * reads that p does not hold as constants. */
int
ss__ctrl_view(const ss_plan_t *p, const ss_graph_t *sg, view_t **out,
         ss_err_t *err)
{
    view_t *v = ss_calloc(1, sizeof(*v));
    int n = sg->n_inputs + sg->n_outer;
    ss_memacct_t *acct = ss__graph_acct(p->g);

    *out = NULL;
    if (v == NULL || (v->g.inputs = ss_calloc((size_t)n + 1, sizeof(int)))
                     == NULL
        || (v->g.input_info = ss_calloc((size_t)n + 1,
                                        sizeof(ss_io_info_t))) == NULL) {
        view_free(v);
        return ss_err_set(err, SS_ENOMEM, "no memory for a subgraph plan");
    }
    v->g.source = p->g->source;
    v->g.opset = p->g->opset;
    v->g.n_values = sg->n_values;
    v->g.values = sg->values;
    v->g.n_nodes = sg->n_nodes;
    v->g.nodes = sg->nodes;
    v->g.n_outputs = sg->n_outputs;
    v->g.outputs = sg->outputs;
    v->g.output_info = sg->output_info;
    v->g.parent = sg->parent;
    /* the subgraph plans' memory is the model's */
    ss_memacct_ref(acct);
    atomic_store(&v->g.acct, acct);
    for (int i = 0; i < n; i++) {
        int id = i < sg->n_inputs ? sg->inputs[i]
                                  : sg->outer[i - sg->n_inputs];

        if (i >= sg->n_inputs && id < p->n_vals
            && p->vals[ss__plan_root(p, id)].kind == SS_PV_CONST)
            continue;
        v->g.inputs[v->g.n_inputs] = id;
        v->g.input_info[v->g.n_inputs].name = sg->values[id].name;
        v->g.input_info[v->g.n_inputs].ndim = -1;
        v->g.n_inputs++;
    }
    *out = v;
    return 0;
}

/* Shapes for v's inputs: formal ones from first (n_first of them), the
 * outer ones as p has them; input_info's dtypes follow. */
int
ss__ctrl_view_shapes(const ss_plan_t *p, view_t *v, const ss_tensor_t *first,
            int n_first, ss_tensor_t *shapes, const ss_node_t *n,
            ss_err_t *err)
{
    for (int i = 0; i < v->g.n_inputs; i++) {
        int id = v->g.inputs[i];

        if (i < n_first) {
            shapes[i] = first[i];
        } else if (id < p->n_vals && p->vals[id].t.ndim >= 0) {
            shapes[i] = p->vals[id].t;
            shapes[i].data = NULL;
        } else {
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (%s): its "
                              "subgraph reads '%s', which is not computed "
                              "before it", p->g->source, ss__ctrl_label(n),
                              n->op_type, v->g.values[id].name);
        }
        v->g.input_info[i].dtype = shapes[i].dtype;
    }
    return 0;
}

int
ss__ctrl_add_plan(struct ss__ctrl *c, ss_plan_t *pl, ss_err_t *err)
{
    ss_plan_t **np = ss_realloc(c->plans, (size_t)(c->n_plans + 1)
                                          * sizeof(*np));

    if (np == NULL) {
        ss_plan_free(pl);
        return ss_err_set(err, SS_ENOMEM, "no memory for subgraph plans");
    }
    c->plans = np;
    c->plans[c->n_plans++] = pl;
    return 0;
}

int
ss__ctrl_same_shape(const ss_io_info_t *a, const ss_io_info_t *b)
{
    return a->dtype == b->dtype && a->ndim == b->ndim
           && memcmp(a->dims, b->dims, (size_t)a->ndim * sizeof(int64_t))
              == 0;
}

/* The step: in = the node's inputs, then the view inputs past the n_formal
 * formal ones (outer values) of each view; out = the node's outputs.
 * Takes c, on failure too. */
int
ss__ctrl_step(ss_plan_t *p, const ss_node_t *n, struct ss__ctrl *c, int n_formal,
         ss_err_t *err)
{
    ss_step_t st = { .kind = SS_STEP_CTRL, .node = n, .ctrl = c };
    int n_in = n->n_inputs, rc = 0;

    for (int b = 0; b < 2; b++)
        if (c->view[b] != NULL)
            n_in += c->view[b]->g.n_inputs - n_formal;
    if ((st.in = ss_malloc((size_t)n_in * sizeof(int) + 1)) == NULL
        || (st.out = ss_malloc((size_t)n->n_outputs * sizeof(int) + 1))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        goto done;
    }
    memcpy(st.in, n->inputs, (size_t)n->n_inputs * sizeof(int));
    st.n_in = n->n_inputs;
    for (int b = 0; b < 2; b++)
        for (int i = n_formal; c->view[b] != NULL
                               && i < c->view[b]->g.n_inputs; i++)
            st.in[st.n_in++] = c->view[b]->g.inputs[i];
    memcpy(st.out, n->outputs, (size_t)n->n_outputs * sizeof(int));
    st.n_out = n->n_outputs;
    for (int k = 0; k < n->n_outputs; k++)
        p->vals[n->outputs[k]].kind = SS_PV_ARENA;
    if ((rc = ss__plan_append(p, &st, err)) < 0)
        goto done;
    return 0;
done:
    ss__plan_step_clear(&st);
    return rc;
}

/* Sets the shape of node n's output v to io's. */
int
ss__ctrl_set_out(ss_plan_t *p, const ss_node_t *n, int v, const ss_io_info_t *io,
        int64_t lead, ss_err_t *err)
{
    ss_tensor_t t = { .dtype = io->dtype, .ndim = io->ndim };

    memcpy(t.dims, io->dims, sizeof(t.dims));
    if (lead >= 0) {            /* a scan output: iterations first */
        if (t.ndim + 1 > SS_MAX_DIMS)
            return ss__ctrl_refuse(p, n, err, "a scan output has too many dims");
        memmove(&t.dims[1], &t.dims[0], (size_t)t.ndim * sizeof(int64_t));
        t.dims[0] = lead;
        t.ndim++;
    }
    return ss__plan_set_shape(p, n, v, &t, err);
}

int
ss__ctrl_named(const ss_node_t *n)
{
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outputs[k] < 0)
            return 0;
    return 1;
}

/* ---- If -------------------------------------------------------------- */

static int
compile_if(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    const ss_graph_t *br[2] = { ss__attr_graph(n, "then_branch"),
                                ss__attr_graph(n, "else_branch") };
    const ss_pval_t *cv;
    struct ss__ctrl *c = NULL;
    ss_tensor_t *shapes = NULL;
    char why[160];
    int rc = 0;

    if (br[0] == NULL || br[1] == NULL || n->n_inputs != 1
        || n->inputs[0] < 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (If) needs a "
                          "condition and then_branch and else_branch "
                          "graphs", p->g->source, ss__ctrl_label(n));
    for (int b = 0; b < 2; b++)
        if (br[b]->n_outputs != n->n_outputs || br[b]->n_inputs != 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (If): its "
                              "%s branch has %d inputs and %d outputs, the "
                              "node %d outputs", p->g->source, ss__ctrl_label(n),
                              b ? "else" : "then", br[b]->n_inputs,
                              br[b]->n_outputs, n->n_outputs);
    if (!ss__ctrl_named(n))
        return ss__ctrl_refuse(p, n, err, "an omitted output is not supported");
    cv = &p->vals[ss__plan_root(p, n->inputs[0])];
    if (ss_tensor_numel(&cv->t) != 1)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (If): the "
                          "condition has %lld elements, not one",
                          p->g->source, ss__ctrl_label(n),
                          (long long)ss_tensor_numel(&cv->t));
    if (cv->kind == SS_PV_CONST) {
        /* inline the branch taken: the other is never compiled */
        const ss_graph_t *g = br[ss__ctrl_truth(&cv->t) ? 0 : 1];

        for (int i = 0; i < g->n_nodes; i++)
            if ((rc = ss__plan_node(p, &g->nodes[i], err)) < 0)
                return rc;
        for (int k = 0; k < n->n_outputs; k++)
            if ((rc = ss__plan_alias(p, n, n->outputs[k], g->outputs[k],
                                     err)) < 0)
                return rc;
        return 0;
    }
    if ((c = ss_calloc(1, sizeof(*c))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an If");
    c->node = n;
    for (int b = 0; b < 2; b++) {
        ss_plan_t *pl = NULL;

        if ((rc = ss__ctrl_view(p, br[b], &c->view[b], err)) < 0)
            goto done;
        ss_free(shapes);
        if ((shapes = ss_calloc((size_t)c->view[b]->g.n_inputs + 1,
                                sizeof(*shapes))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for an If");
            goto done;
        }
        if ((rc = ss__ctrl_view_shapes(p, c->view[b], NULL, 0, shapes, n, err)) < 0
            || (rc = ss__plan_build_sub(&c->view[b]->g, p, shapes, NULL,
                                        p->fuse, &pl, err)) < 0
            || (rc = ss__ctrl_add_plan(c, pl, err)) < 0)
            goto done;
        if (c->view[b]->g.n_inputs > c->max_in)
            c->max_in = c->view[b]->g.n_inputs;
    }
    for (int k = 0; k < n->n_outputs; k++) {
        const ss_io_info_t *a = ss_plan_output(c->plans[0], k);
        const ss_io_info_t *b = ss_plan_output(c->plans[1], k);

        if (!ss__ctrl_same_shape(a, b)) {
            char sa[64], sb[64];
            ss_tensor_t ta = { .dtype = a->dtype, .ndim = a->ndim };
            ss_tensor_t tb = { .dtype = b->dtype, .ndim = b->ndim };

            memcpy(ta.dims, a->dims, sizeof(ta.dims));
            memcpy(tb.dims, b->dims, sizeof(tb.dims));
            snprintf(why, sizeof(why), "the branches give output %d "
                     "different shapes (%s and %s) and the condition is "
                     "known only at run time", k,
                     ss__tensor_str(&ta, sa, sizeof(sa)),
                     ss__tensor_str(&tb, sb, sizeof(sb)));
            rc = ss__ctrl_refuse(p, n, err, why);
            goto done;
        }
        if ((rc = ss__ctrl_set_out(p, n, n->outputs[k], a, -1, err)) < 0)
            goto done;
    }
    ss_free(shapes);
    return ss__ctrl_step(p, n, c, 0, err);
done:
    ss_free(shapes);
    ss__ctrl_free(c);
    return rc;
}

int
ss__plan_ctrl(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    return n->op_type[0] == 'I' ? compile_if(p, n, err)
           : n->op_type[0] == 'L' ? ss__ctrl_loop(p, n, err)
                                  : ss__ctrl_scan(p, n, err);
}

/* ---- running --------------------------------------------------------- */

/* The step's buffer: in and out tensor tables, then the carried values
 * (aligned). */
int
ss__ctrl_buf(const struct ss__ctrl *c, ss_workbuf_t *buf, ss_tensor_t **ins,
             ss_tensor_t **outs, char **carried, ss_err_t *err)
{
    int n_out = c->node->n_outputs + 1;
    size_t tabs = ((size_t)(c->max_in + n_out) * sizeof(ss_tensor_t)
                   + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    size_t need = tabs + ALIGN + c->carried_bytes;

    if (ss_workbuf_reserve(buf, need) < 0)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Loop's "
                          "values");
    *ins = buf->p;
    *outs = *ins + c->max_in;
    *carried = (char *)buf->p + tabs;
    return 0;
}

static int
run_if(const struct ss__ctrl *c, ss_tensor_t *tab, ss_exec_ctx_t *sub,
       ss_tensor_t *ins, ss_tensor_t *outs, ss_err_t *err)
{
    const ss_node_t *n = c->node;
    int b = ss__ctrl_truth(&tab[n->inputs[0]]) ? 0 : 1;
    const ss_graph_t *vg = &c->view[b]->g;

    for (int i = 0; i < vg->n_inputs; i++)
        ins[i] = tab[vg->inputs[i]];
    for (int k = 0; k < n->n_outputs; k++)
        outs[k] = tab[n->outputs[k]];
    return ss_plan_run(c->plans[b], sub, ins, outs, err);
}

int
ss__ctrl_run(const struct ss__ctrl *c, ss_tensor_t *tab, ss_exec_ctx_t *sub,
             ss_workbuf_t *buf, ss_err_t *err)
{
    ss_tensor_t *ins = NULL, *outs = NULL;
    char *carried = NULL;
    int rc;

    if ((rc = ss__ctrl_buf(c, buf, &ins, &outs, &carried, err)) < 0)
        return rc;
    return c->loop == 2 ? ss__ctrl_run_scan(c, tab, sub, ins, outs, carried,
                                            err)
           : c->loop ? ss__ctrl_run_loop(c, tab, sub, ins, outs, carried,
                                         err)
                     : run_if(c, tab, sub, ins, outs, err);
}
