/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control flow: If and Loop (without sequence or optional types).
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

#define MAX_BODY_PLANS 64       /* distinct shapes/iteration numbers */
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

static const char *
label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

int
ss__ctrl_refuse(const ss_plan_t *p, const ss_node_t *n, ss_err_t *err,
       const char *why)
{
    return ss_err_set(err, SS_EUNSUPP, "%s: node '%s' (%s version %d, "
                      "opset %d): %s", p->g->source, label(n), n->op_type,
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
                              "before it", p->g->source, label(n),
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
                          "graphs", p->g->source, label(n));
    for (int b = 0; b < 2; b++)
        if (br[b]->n_outputs != n->n_outputs || br[b]->n_inputs != 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (If): its "
                              "%s branch has %d inputs and %d outputs, the "
                              "node %d outputs", p->g->source, label(n),
                              b ? "else" : "then", br[b]->n_inputs,
                              br[b]->n_outputs, n->n_outputs);
    if (!ss__ctrl_named(n))
        return ss__ctrl_refuse(p, n, err, "an omitted output is not supported");
    cv = &p->vals[ss__plan_root(p, n->inputs[0])];
    if (ss_tensor_numel(&cv->t) != 1)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (If): the "
                          "condition has %lld elements, not one",
                          p->g->source, label(n),
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

/* ---- Loop ------------------------------------------------------------ */

typedef struct loop_cx {
    ss_plan_t *p;
    const ss_node_t *n;
    struct ss__ctrl *c;
    const ss_graph_t *body;
    ss_graph_t *vg;
    int N, K;
    ss_tensor_t *first;     /* iter, cond, carried: the formal inputs */
    ss_tensor_t *shapes;    /* all of vg's inputs */
    unsigned char *bind;
    int64_t iv;
    unsigned char cb;
} loop_cx_t;

/* The body plan for iteration i whose carried inputs have first's
 * shapes: an earlier one that fits, or a new one; its index in *out. */
static int
body_plan(loop_cx_t *L, int64_t i, int *out, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int rc;
    ss_plan_t *pl = NULL;

    for (int k = 0; k < c->n_plans; k++) {
        const ss_plan_t *q = c->plans[k];
        int fits = !L->bind[0]
                   || *(const int64_t *)q->vals[L->vg->inputs[0]].t.data == i;

        for (int j = 0; j < L->N && fits; j++) {
            const ss_tensor_t *a = &q->vals[L->vg->inputs[2 + j]].t;

            fits = a->ndim == L->first[2 + j].ndim
                   && memcmp(a->dims, L->first[2 + j].dims,
                             (size_t)a->ndim * sizeof(int64_t)) == 0;
        }
        if (fits) {
            *out = k;
            return 0;
        }
    }
    if (c->n_plans == MAX_BODY_PLANS)
        return ss__ctrl_refuse(L->p, L->n, err, "the body needs more than 64 plans "
                      "(its shapes change with every iteration)");
    L->iv = i;
    if ((rc = ss__ctrl_view_shapes(L->p, c->view[0], L->first, L->N + 2, L->shapes,
                          L->n, err)) < 0
        || (rc = ss__plan_build_sub(L->vg, L->p, L->shapes, L->bind,
                                    L->p->fuse, &pl, err)) < 0
        || (rc = ss__ctrl_add_plan(c, pl, err)) < 0)
        return rc < 0 ? ss_err_wrap(err, rc, "node '%s' (Loop): the body",
                                    label(L->n)) : rc;
    *out = c->n_plans - 1;
    return 0;
}

static int
sched_add(struct ss__ctrl *c, int k, ss_err_t *err)
{
    int *s;

    if (c->n_sched >= (1 << 20))
        return ss_err_set(err, SS_EUNSUPP, "a Loop's shapes change over "
                          "more than 2^20 iterations");
    if ((s = ss_realloc(c->sched, (size_t)(c->n_sched + 1) * sizeof(int)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
    c->sched = s;
    c->sched[c->n_sched++] = k;
    return 0;
}

/* Carried shapes after plan k into L->first; whether they changed. */
static int
next_shapes(loop_cx_t *L, int k)
{
    int changed = 0;

    for (int j = 0; j < L->N; j++) {
        const ss_io_info_t *o = ss_plan_output(L->c->plans[k], 1 + j);
        ss_tensor_t *t = &L->first[2 + j];

        changed |= o->dtype != t->dtype || o->ndim != t->ndim
                   || memcmp(o->dims, t->dims,
                             (size_t)o->ndim * sizeof(int64_t)) != 0;
        t->dtype = o->dtype;
        t->ndim = o->ndim;
        memcpy(t->dims, o->dims, sizeof(t->dims));
    }
    return changed;
}

/* Iterations known now: M and the condition are constants here, and so
 * is the body's condition in every body plan.  Sets c->trips, or leaves
 * it -1 when the body's condition is computed at run time. */
static int
simulate(loop_cx_t *L, int64_t m, int cond, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int64_t i = 0;
    int rc, k;

    L->bind[1] = 1;             /* the condition in is true while it runs */
    L->cb = 1;
    while (cond && i < m) {
        const ss_plan_t *q;
        int cr, changed;

        if ((rc = body_plan(L, i, &k, err)) < 0
            || (rc = sched_add(c, k, err)) < 0)
            return rc;
        q = c->plans[k];
        cr = ss__plan_root(q, L->body->outputs[0]);
        if (q->vals[cr].kind != SS_PV_CONST)
            return 0;           /* computed at run time */
        cond = ss__ctrl_truth(&q->vals[cr].t);
        changed = next_shapes(L, k);
        i++;
        if (cond && i < m && !changed && !L->bind[0]) {
            /* the same plan from here on, until m */
            if (m == INT64_MAX)
                return ss__ctrl_refuse(L->p, L->n, err, "the loop has no trip "
                              "count and its condition is always true");
            i = m;
        }
    }
    c->trips = i;
    return 0;
}

/* Iterations decided at run time: one body plan, carried shapes kept. */
static int
dynamic(loop_cx_t *L, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int rc, k;

    if (L->K > 0)
        return ss__ctrl_refuse(L->p, L->n, err, "the body's condition is computed "
                      "at run time, and the loop has scan outputs, whose "
                      "shapes depend on the number of iterations");
    if (L->bind[0])
        return ss__ctrl_refuse(L->p, L->n, err, "the body's shapes depend on the "
                      "iteration number, and the number of iterations is "
                      "known only at run time");
    for (int i = 0; i < c->n_plans; i++)
        ss_plan_free(c->plans[i]);
    c->n_plans = 0;
    c->n_sched = 0;
    L->bind[1] = 0;
    for (int j = 0; j < L->N; j++) {
        L->first[2 + j] = L->p->vals[L->n->inputs[2 + j]].t;
        L->first[2 + j].data = NULL;
    }
    if ((rc = body_plan(L, 0, &k, err)) < 0
        || (rc = sched_add(c, k, err)) < 0)
        return rc;
    if (next_shapes(L, k))
        return ss__ctrl_refuse(L->p, L->n, err, "a loop-carried value changes shape, "
                      "and the number of iterations is known only at run "
                      "time");
    {
        const ss_plan_t *q = c->plans[k];
        int cr = ss__plan_root(q, L->body->outputs[0]);

        if (L->n->inputs[0] < 0 && q->vals[cr].kind == SS_PV_CONST
            && ss__ctrl_truth(&q->vals[cr].t))
            return ss__ctrl_refuse(L->p, L->n, err, "the loop has no trip count "
                          "and its body's condition is always true");
    }
    c->trips = -1;
    return 0;
}

/* The outputs' shapes and the run's buffer sizes. */
static int
loop_outputs(loop_cx_t *L, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    const ss_node_t *n = L->n;
    int rc, k;
    size_t off = 0;

    if (L->K > 0 && c->n_plans == 0 && (rc = body_plan(L, 0, &k, err)) < 0)
        return rc;      /* no iteration: the scan outputs' shapes */
    if ((c->carried_off = ss_calloc((size_t)L->N + 1, sizeof(size_t)))
        == NULL
        || (c->carried_max = ss_calloc((size_t)L->N + 1, sizeof(size_t)))
           == NULL
        || (c->scan_bytes = ss_calloc((size_t)L->K + 1, sizeof(size_t)))
           == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
    for (int j = 0; j < L->N; j++) {
        ss_io_info_t io = { .dtype = L->first[2 + j].dtype,
                            .ndim = L->first[2 + j].ndim };

        memcpy(io.dims, L->first[2 + j].dims, sizeof(io.dims));
        if ((rc = ss__ctrl_set_out(L->p, n, n->outputs[j], &io, -1, err)) < 0)
            return rc;
        for (int q = 0; q < c->n_plans; q++) {
            const ss_io_info_t *o = ss_plan_output(c->plans[q], 1 + j);
            ss_tensor_t t = { .dtype = o->dtype, .ndim = o->ndim };
            size_t b = 0;

            memcpy(t.dims, o->dims, sizeof(t.dims));
            (void)ss__tensor_bytes(&t, &b);
            b = (b + ALIGN - 1) & ~(size_t)(ALIGN - 1);
            if (b > c->carried_max[j])
                c->carried_max[j] = b;
        }
        c->carried_off[j] = off;
        off += 2 * c->carried_max[j];
    }
    c->carried_bytes = off;
    for (int s = 0; s < L->K; s++) {
        const ss_io_info_t *o = ss_plan_output(c->plans[0], 1 + L->N + s);
        ss_tensor_t t = { .dtype = o->dtype, .ndim = o->ndim };

        for (int q = 1; q < c->n_plans; q++)
            if (!ss__ctrl_same_shape(o, ss_plan_output(c->plans[q], 1 + L->N + s)))
                return ss__ctrl_refuse(L->p, n, err, "a scan output changes shape "
                              "from one iteration to the next");
        memcpy(t.dims, o->dims, sizeof(t.dims));
        (void)ss__tensor_bytes(&t, &c->scan_bytes[s]);
        if ((rc = ss__ctrl_set_out(L->p, n, n->outputs[L->N + s], o,
                          c->trips, err)) < 0)
            return rc;
    }
    return 0;
}

static int
compile_loop(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    const ss_graph_t *body = ss__attr_graph(n, "body");
    loop_cx_t L = { .p = p, .n = n, .body = body };
    unsigned char *decides = NULL;
    int64_t m = -1;
    int cond = -1, rc = 0;

    if (body == NULL || n->n_inputs < 2 || body->n_inputs != n->n_inputs
        || body->n_outputs < n->n_inputs - 1
        || n->n_outputs != body->n_outputs - 1)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): its "
                          "inputs, outputs and body's do not agree",
                          p->g->source, label(n));
    if (!ss__ctrl_named(n))
        return ss__ctrl_refuse(p, n, err, "an omitted output is not supported");
    L.N = n->n_inputs - 2;
    L.K = n->n_outputs - L.N;
    for (int j = 0; j < L.N; j++)
        if (n->inputs[2 + j] < 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): "
                              "loop-carried input %d is omitted",
                              p->g->source, label(n), j);
    /* M and cond: absent (none, true), known now, or at run time */
    if (n->inputs[0] < 0)
        m = INT64_MAX;
    else if (p->vals[ss__plan_root(p, n->inputs[0])].kind == SS_PV_CONST) {
        const ss_tensor_t *t = &p->vals[ss__plan_root(p, n->inputs[0])].t;

        if (t->dtype != SS_DTYPE_I64 || ss_tensor_numel(t) != 1)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): M "
                              "is not one int64", p->g->source, label(n));
        m = *(const int64_t *)t->data;
        if (m < 0)
            m = 0;
    }
    if (n->inputs[1] < 0)
        cond = 1;
    else if (p->vals[ss__plan_root(p, n->inputs[1])].kind == SS_PV_CONST)
        cond = ss__ctrl_truth(&p->vals[ss__plan_root(p, n->inputs[1])].t);
    if ((L.c = ss_calloc(1, sizeof(*L.c))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
        goto done;
    }
    L.c->loop = 1;
    L.c->node = n;
    L.c->n_carried = L.N;
    L.c->n_scan = L.K;
    L.c->trips = -1;
    if ((rc = ss__ctrl_view(p, body, &L.c->view[0], err)) < 0)
        goto done;
    L.vg = &L.c->view[0]->g;
    L.c->max_in = L.vg->n_inputs;
    if ((decides = ss_calloc((size_t)L.vg->n_inputs + 1, 1)) == NULL
        || (L.bind = ss_calloc((size_t)L.vg->n_inputs + 1, 1)) == NULL
        || (L.first = ss_calloc((size_t)L.N + 2, sizeof(ss_tensor_t)))
           == NULL
        || (L.shapes = ss_calloc((size_t)L.vg->n_inputs + 1,
                                 sizeof(ss_tensor_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
        goto done;
    }
    (void)ss_graph_shape_inputs(L.vg, decides);
    for (int i = 2; i < L.vg->n_inputs; i++)
        if (decides[i]) {
            rc = ss__ctrl_refuse(p, n, err, "the body's shapes depend on the value "
                        "of a loop-carried or outer value");
            goto done;
        }
    L.bind[0] = decides[0];
    L.first[0] = (ss_tensor_t){ .dtype = SS_DTYPE_I64, .data = &L.iv };
    L.first[1] = (ss_tensor_t){ .dtype = SS_DTYPE_BOOL, .data = &L.cb };
    for (int j = 0; j < L.N; j++) {
        L.first[2 + j] = p->vals[n->inputs[2 + j]].t;
        L.first[2 + j].data = NULL;
        if (L.first[2 + j].ndim < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): "
                            "loop-carried input %d has no known shape",
                            p->g->source, label(n), j);
            goto done;
        }
    }
    if (m >= 0 && cond >= 0 && (rc = simulate(&L, m, cond, err)) < 0)
        goto done;
    if (L.c->trips < 0 && (rc = dynamic(&L, err)) < 0)
        goto done;
    if ((rc = loop_outputs(&L, err)) < 0)
        goto done;
    rc = ss__ctrl_step(p, n, L.c, L.N + 2, err);
    L.c = NULL;
done:
    ss__ctrl_free(L.c);
    ss_free(decides);
    ss_free(L.bind);
    ss_free(L.first);
    ss_free(L.shapes);
    return rc;
}

int
ss__plan_ctrl(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    return n->op_type[0] == 'I' ? compile_if(p, n, err)
           : n->op_type[0] == 'L' ? compile_loop(p, n, err)
                                  : ss__ctrl_scan(p, n, err);
}

/* ---- running --------------------------------------------------------- */

/* The step's buffer: in and out tensor tables, then the carried values
 * (aligned). */
int
ss__ctrl_buf(const struct ss__ctrl *c, void **buf, size_t *cap, ss_tensor_t **ins,
        ss_tensor_t **outs, char **carried, ss_err_t *err)
{
    int n_out = c->node->n_outputs + 1;
    size_t tabs = ((size_t)(c->max_in + n_out) * sizeof(ss_tensor_t)
                   + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    size_t need = tabs + ALIGN + c->carried_bytes;

    if (need > *cap) {
        void *b = ss_aligned_alloc(need);

        if (b == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a Loop's "
                              "values");
        ss_free(*buf);
        *buf = b;
        *cap = need;
    }
    *ins = *buf;
    *outs = *ins + c->max_in;
    *carried = (char *)*buf + tabs;
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

static int
run_loop(const struct ss__ctrl *c, ss_tensor_t *tab, ss_exec_ctx_t *sub,
         ss_tensor_t *ins, ss_tensor_t *outs, char *carried, ss_err_t *err)
{
    const ss_node_t *n = c->node;
    const ss_graph_t *vg = &c->view[0]->g;
    int N = c->n_carried, K = c->n_scan, rc;
    int64_t m = c->trips, iv = 0;
    unsigned char cb = 1, *cond_out = (unsigned char *)carried
                                      + c->carried_bytes;

    if (m < 0) {
        m = n->inputs[0] < 0 ? INT64_MAX : *(int64_t *)tab[n->inputs[0]].data;
        cb = n->inputs[1] < 0 ? 1 : (unsigned char)ss__ctrl_truth(&tab[n->inputs[1]]);
    }
    for (int j = 0; j < N; j++)
        ins[2 + j] = tab[n->inputs[2 + j]];
    for (int i = 2 + N; i < vg->n_inputs; i++)
        ins[i] = tab[vg->inputs[i]];
    memset(outs, 0, (size_t)(1 + N + K) * sizeof(*outs));
    for (iv = 0; iv < m && cb; iv++) {
        const ss_plan_t *pl = c->plans[c->sched[iv < c->n_sched
                                                ? iv : c->n_sched - 1]];

        ins[0] = (ss_tensor_t){ .dtype = SS_DTYPE_I64, .data = &iv };
        ins[1] = (ss_tensor_t){ .dtype = SS_DTYPE_BOOL, .data = &cb };
        outs[0] = (ss_tensor_t){ .data = cond_out };
        for (int j = 0; j < N; j++)
            outs[1 + j].data = carried + c->carried_off[j]
                               + (iv & 1) * c->carried_max[j];
        for (int k = 0; k < K; k++)
            outs[1 + N + k].data = (char *)tab[n->outputs[N + k]].data
                                   + (size_t)iv * c->scan_bytes[k];
        if ((rc = ss_plan_run(pl, sub, ins, outs, err)) < 0)
            return ss_err_wrap(err, rc, "iteration %lld", (long long)iv);
        for (int j = 0; j < N; j++)
            ins[2 + j] = outs[1 + j];
        if (c->trips < 0)
            cb = *cond_out != 0;
    }
    for (int j = 0; j < N; j++) {
        size_t b = 0;

        (void)ss__tensor_bytes(&ins[2 + j], &b);
        if (b > 0)
            memmove(tab[n->outputs[j]].data, ins[2 + j].data, b);
    }
    return 0;
}

int
ss__ctrl_run(const struct ss__ctrl *c, ss_tensor_t *tab, ss_exec_ctx_t *sub,
             void **buf, size_t *cap, ss_err_t *err)
{
    ss_tensor_t *ins = NULL, *outs = NULL;
    char *carried = NULL;
    int rc;

    if ((rc = ss__ctrl_buf(c, buf, cap, &ins, &outs, &carried, err)) < 0)
        return rc;
    return c->loop == 2 ? ss__ctrl_run_scan(c, tab, sub, ins, outs, carried,
                                            err)
           : c->loop ? run_loop(c, tab, sub, ins, outs, carried, err)
                     : run_if(c, tab, sub, ins, outs, err);
}
