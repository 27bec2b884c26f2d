/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rows: does a graph compute every row of its batch on its own?
 *
 * DESIGN.  Two things rely on it.  The daemon batches concurrent
 * requests' rows along axis 0 into one run (server/batch), which is only
 * correct when no row's answer depends on another row: a mean over
 * axis 0, x @ x.T, x.reshape(1, -1), a Gather of row 0, the batch size
 * x.size(0) read as a number -- each makes one client's data change
 * another client's answer.  And batch slices (plan_slice.c) run a big
 * batch as several small ones, which is correct under the same
 * condition.  So one analysis serves both: the plan computes it once per
 * compile (p->mix_node) from its graph and the shapes and folded
 * constants of this compile.
 *
 * How: an abstract run over the nodes that reach an output, in
 * topological order.  Each value is independent of the batch (weights,
 * what is folded from them), or carries the batch's rows along one axis
 * (graph inputs along axis 0; a Transpose moves it, a Reduce over another
 * axis keeps it, a Reshape may merge it with the axes around it:
 * plan_indep.h), or is a shape vector (Shape's output and what is
 * computed from it) whose elements are tagged independent, a multiple of
 * the batch's row count, or otherwise computed from the batch.  A node
 * whose inputs are all independent is independent (no rule needed);
 * otherwise its op's rule (plan_indep_ops.c, one row per op) says where
 * its outputs carry the rows, or that it mixes them, and why.  An op
 * without a rule mixes (conservative: the node and op are named).  Every
 * graph output must carry the rows along axis 0, one entry per row.
 *
 * The PyTorch export of view(x.size(0), S, H, D) reads Shape(x)[0] and
 * passes it through Unsqueeze and Concat into the Reshape's shape: the
 * tag follows the element there, and a Reshape whose batch entry is the
 * row count (or -1, or 0 copying it) keeps rows apart.  The same element
 * used in arithmetic (x / x.size(0)) or compared with 1 mixes; compared
 * with a number <= 0 (the pattern of expand(n, -1, -1)) its answer is
 * the same for any batch, so it stays independent.
 *
 * Dims enter only as products that do not change with the batch (what
 * precedes and follows the batch axis), so the result holds for every
 * batch size, though it is computed on one compile; ss_graph_rows
 * compiles for 3 rows (a row count that is no common dim) without
 * fusion, which costs the shape walk only.
 *
 * THREADS: runs inside a plan's build; ss_graph_rows is [any].
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ops/ops.h"
#include "engine/plan/plan_indep.h"

static const ss__rv_t ind = { -1, 1, 1, -1, 0, 0, { 0 } };

int
ss__indep_mix(ss__indep_t *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    return -1;
}

ss__rv_t *
ss__indep_in(ss__indep_t *c, int k)
{
    return k < c->n->n_inputs && c->n->inputs[k] >= 0
           ? &c->v[c->n->inputs[k]] : NULL;
}

ss__rv_t *
ss__indep_out(ss__indep_t *c, int k)
{
    return k < c->n->n_outputs && c->n->outputs[k] >= 0
           ? &c->v[c->n->outputs[k]] : NULL;
}

int
ss__indep_rank(const ss__indep_t *c, int v)
{
    return v >= 0 ? c->p->vals[v].t.ndim : 0;
}

int64_t
ss__indep_dim(const ss__indep_t *c, int v, int d)
{
    return v >= 0 && d >= 0 && d < c->p->vals[v].t.ndim
           ? c->p->vals[v].t.dims[d] : 1;
}

int
ss__indep_ints(const ss__indep_t *c, int v, int64_t *out, int max)
{
    const ss_pval_t *pv;
    int64_t n;

    if (v < 0)
        return -1;
    pv = &c->p->vals[ss__plan_root(c->p, v)];
    if (pv->kind != SS_PV_CONST || pv->t.data == NULL
        || (n = ss_tensor_numel(&c->p->vals[v].t)) < 0 || n > max)
        return -1;
    if (!ss__ops_is_int(pv->t.dtype) && pv->t.dtype != SS_DTYPE_BOOL)
        return -1;
    for (int64_t i = 0; i < n; i++)
        out[i] = ss__ops_get_i64(pv->t.data, pv->t.dtype, i);
    return (int)n;
}

int
ss__indep_axis(int64_t ax, int r)
{
    if (ax < 0)
        ax += r;
    return ax >= 0 && ax < r ? (int)ax : -1;
}

void
ss__indep_set_all(ss__indep_t *c, int axis, const ss__rv_t *like)
{
    for (int k = 0; k < c->n->n_outputs; k++) {
        ss__rv_t *o = ss__indep_out(c, k);

        if (o != NULL) {
            *o = ind;
            o->axis = axis;
            if (like != NULL && axis >= 0) {
                o->outer = like->outer;
                o->group = like->group;
            }
        }
    }
}

int
ss__indep_same(const ss__rv_t *a, const ss__rv_t *b)
{
    return a->outer == b->outer && a->group == b->group;
}

static const int64_t no_tags[SS_INDEP_SV_MAX];

int
ss__indep_sv(ss__indep_t *c, int k, const int64_t **t, int64_t *n)
{
    const ss__rv_t *r = ss__indep_in(c, k);
    const ss_tensor_t *x;

    if (r == NULL || r->axis >= 0)
        return -1;
    if (r->sv) {
        *t = r->tag;
        *n = r->n;
        return 0;
    }
    x = &c->p->vals[c->n->inputs[k]].t;
    *n = ss_tensor_numel(x);
    *t = no_tags;
    return x->ndim <= 1 && *n >= 0 && *n <= SS_INDEP_SV_MAX ? 0 : -1;
}

void
ss__indep_set_sv(ss__indep_t *c, int k, const int64_t *t, int64_t n)
{
    ss__rv_t *o = ss__indep_out(c, k);

    if (o == NULL)
        return;
    *o = ind;
    for (int64_t i = 0; i < n; i++)
        if ((o->tag[i] = t[i]) != SS_IT_IND)
            o->sv = 1;
    o->n = o->sv ? (int)n : 0;
}

int
ss__indep_has(const int64_t *t, int64_t n, int dep)
{
    for (int64_t i = 0; i < n; i++)
        if (dep ? t[i] == SS_IT_DEP : t[i] > 0)
            return 1;
    return 0;
}

int
ss__indep_axes(ss__indep_t *c, const char *attr, int since, int k,
              int64_t *ax)
{
    const int64_t *a;
    int n;

    if (SS_INDEP_OPSET(c) < since) {
        if ((n = ss__attr_ints(c->n, attr, &a)) < 0)
            return 0;
        if (n > SS_MAX_DIMS)
            return -1;
        if (n > 0)      /* an empty ints attribute has no array */
            memcpy(ax, a, (size_t)n * sizeof(*ax));
        return n;
    }
    if (ss__indep_in(c, k) == NULL)
        return 0;
    if (!ss__indep_ind(c, k))
        return -1;
    return ss__indep_ints(c, c->n->inputs[k], ax, SS_MAX_DIMS);
}

int
ss__indep_in_axes(const int64_t *ax, int n, int r, int a)
{
    for (int i = 0; i < n; i++)
        if (ss__indep_axis(ax[i], r) == a)
            return 1;
    return 0;
}

int
ss__indep_ind(ss__indep_t *c, int k)
{
    const ss__rv_t *r = ss__indep_in(c, k);

    return r == NULL || (r->axis < 0 && !r->sv);
}

int
ss__indep_params(ss__indep_t *c, int from)
{
    for (int k = from; k < c->n->n_inputs; k++)
        if (!ss__indep_ind(c, k))
            return ss__indep_mix(c, "its input %d (a parameter) depends on "
                                "the batch", k);
    return 0;
}

int
ss__indep_reshape(ss__indep_t *c, int k, const int64_t *out, int r,
                 const char *entry, const int64_t *mul, ss__rv_t *res)
{
    const ss__rv_t *x = ss__indep_in(c, k);
    const int64_t *d = c->p->vals[c->n->inputs[k]].t.dims;
    int rin = ss__indep_rank(c, c->n->inputs[k]);
    /* entries before the rows' (outer) and after (inner), flattened */
    int64_t outer = ss__ops_prod(d, 0, x->axis) * x->outer;
    int64_t inner = x->group * ss__ops_prod(d, x->axis + 1, rin);

    for (int b = 0; b < r; b++) {
        int64_t pre = ss__ops_prod(out, 0, b);
        int64_t post = ss__ops_prod(out, b + 1, r), o, g;
        int others = 1;

        /* the row count may be in this entry only */
        for (int i = 0; i < r; i++)
            if (i != b && !(entry[i] == 'k'
                            || (entry[i] == '*' && entry[b] != '*')
                            || (entry[i] == '0' && i != x->axis)))
                others = 0;
        if (!others || pre <= 0 || post <= 0 || outer % pre != 0
            || inner % post != 0)
            continue;
        o = outer / pre;
        g = inner / post;
        if (entry[b] == '*' || (entry[b] == 'B' && mul[b] == o * g)
            || (entry[b] == '0' && b == x->axis && o == x->outer
                && g == x->group)) {
            *res = *x;
            res->axis = b;
            res->outer = o;
            res->group = g;
            return 0;
        }
    }
    return -1;
}

/* Marks in live the values g's outputs are computed from. */
static void
mark_live(const ss_graph_t *g, unsigned char *live)
{
    for (int i = 0; i < g->n_outputs; i++)
        live[g->outputs[i]] = 1;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = &g->nodes[i];
        int on = 0;

        for (int k = 0; k < n->n_outputs && !on; k++)
            on = n->outputs[k] >= 0 && live[n->outputs[k]];
        for (int k = 0; on && k < n->n_inputs; k++)
            if (n->inputs[k] >= 0)
                live[n->inputs[k]] = 1;
    }
}

static int
node_live(const ss_node_t *n, const unsigned char *live)
{
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outputs[k] >= 0 && live[n->outputs[k]])
            return 1;
    return 0;
}

/* One node: 0, or -1 with c->why. */
static int
visit(ss__indep_t *c)
{
    const ss_node_t *n = c->n;
    ss__indep_rule_t rule;
    int dep = 0;

    for (int k = 0; k < n->n_inputs; k++)
        dep |= !ss__indep_ind(c, k);
    if (ss__attr_graph_any(n) != NULL)
        return ss__indep_mix(c, "it runs a subgraph, which may decide by "
                            "the whole batch");
    if (!dep) {
        ss__indep_set_all(c, -1, NULL);
        return 0;
    }
    if ((rule = ss__indep_rule(n)) == NULL)
        return ss__indep_mix(c, "the op is not known to keep rows apart");
    for (int k = 0; k < n->n_outputs; k++)
        if (ss__indep_out(c, k) != NULL)
            ss__indep_out(c, k)->axis = -2;      /* the rule must set it */
    if (rule(c) < 0)
        return -1;
    for (int k = 0; k < n->n_outputs; k++) {
        ss__rv_t *o = ss__indep_out(c, k);

        if (o == NULL)
            continue;
        if (o->axis < -1 || o->group < 1 || o->outer < 1
            || (o->axis >= 0 && o->axis >= ss__indep_rank(c, n->outputs[k])))
            return ss__indep_mix(c, "its output %d's rows are unknown", k);
        /* who merged the rows: this node, or the input it kept them of */
        o->from = -1;
        if (o->axis >= 0 && o->outer * o->group > 1) {
            o->from = (int)(n - c->p->g->nodes);
            for (int i = 0; i < n->n_inputs; i++)
                if (ss__indep_in(c, i) != NULL && ss__indep_in(c, i)->axis >= 0
                    && ss__indep_same(ss__indep_in(c, i), o))
                    o->from = ss__indep_in(c, i)->from;
        }
    }
    return 0;
}

/* Output i does not hold one entry per row along axis 0: which node
 * made it so, and why, into p. */
static void
bad_output(ss_plan_t *p, const ss__rv_t *o, int i)
{
    const ss_graph_t *g = p->g;
    const char *name = g->values[g->outputs[i]].name;
    int prod = g->values[g->outputs[i]].producer;

    p->mix_node = prod >= 0 ? prod : g->n_nodes;
    if (o->axis >= 0 && o->outer * o->group > 1 && o->from >= 0) {
        p->mix_node = o->from;
        snprintf(p->mix_why, sizeof(p->mix_why), "it merges the batch "
                 "axis with others, and output '%s' keeps them merged",
                 name);
    } else if (o->axis > 0)
        snprintf(p->mix_why, sizeof(p->mix_why), "output '%s' holds the "
                 "rows along axis %d, not 0", name, o->axis);
    else if (o->sv)
        snprintf(p->mix_why, sizeof(p->mix_why), "output '%s' is "
                 "computed from the batch size", name);
    else
        snprintf(p->mix_why, sizeof(p->mix_why), "output '%s' does not "
                 "depend on the batch's rows", name);
}

int
ss__plan_indep(ss_plan_t *p)
{
    const ss_graph_t *g = p->g;
    unsigned char *live = ss_calloc((size_t)g->n_values + 1, 1);
    ss__indep_t c;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    c.p = p;
    c.v = ss_malloc(((size_t)g->n_values + 1) * sizeof(*c.v));
    p->mix_node = -1;
    p->mix_why[0] = '\0';
    p->samples_first = 1;
    if (live == NULL || c.v == NULL) {
        rc = SS_ENOMEM;
        goto done;
    }
    for (int v = 0; v < g->n_values; v++)
        c.v[v] = ind;
    for (int i = 0; i < g->n_inputs; i++) {
        if (p->vals[g->inputs[i]].t.ndim < 1) {
            snprintf(p->mix_why, sizeof(p->mix_why), "input '%s' has no "
                     "batch axis", g->values[g->inputs[i]].name);
            p->mix_node = g->n_nodes;
            goto done;
        }
        c.v[g->inputs[i]].axis = 0;
    }
    mark_live(g, live);
    for (int i = 0; i < g->n_nodes; i++) {
        c.n = &g->nodes[i];
        if (!node_live(c.n, live))
            continue;
        if (visit(&c) == 0) {
            for (int k = 0; k < c.n->n_outputs; k++) {
                const ss__rv_t *o = ss__indep_out(&c, k);

                if (o != NULL && o->axis >= 0
                    && (o->axis != 0 || o->outer * o->group != 1))
                    p->samples_first = 0;
            }
            continue;
        }
        snprintf(p->mix_why, sizeof(p->mix_why), "%s", c.why);
        p->mix_node = i;
        goto done;
    }
    for (int i = 0; i < g->n_outputs; i++) {
        const ss__rv_t *o = &c.v[g->outputs[i]];

        if (o->axis != 0 || o->outer != 1 || o->group != 1 || o->sv) {
            bad_output(p, o, i);
            goto done;
        }
    }
done:
    ss_free(live);
    ss_free(c.v);
    return rc;
}

/* Shapes of g's inputs for `rows` rows: the declared dims, each unknown
 * one past the batch axis set to fill. */
static int
rows_shapes(const ss_graph_t *g, int64_t rows, int64_t fill,
            ss_tensor_t *sh)
{
    for (int i = 0; i < g->n_inputs; i++) {
        const ss_io_info_t *io = &g->input_info[i];

        memset(&sh[i], 0, sizeof(sh[i]));
        sh[i].dtype = io->dtype;
        sh[i].ndim = io->ndim;
        if (io->ndim < 1)
            return -1;
        for (int d = 0; d < io->ndim; d++)
            sh[i].dims[d] = d == 0 ? rows : io->dims[d] >= 0 ? io->dims[d]
                                                            : fill;
    }
    return 0;
}

int
ss_graph_rows(const ss_graph_t *g, ss_rows_t *out, ss_err_t *err)
{
    /* unknown dims past the batch: a size no model's rows look like,
     * then sizes convs and pools need (a CNN exported with dynamic H and
     * W does not compile at 5x5 after a 7x7 stride-2 conv) */
    static const int64_t fills[] = { 5, 1, 32, 64, 224, 512 };
    ss_tensor_t *sh = ss_calloc((size_t)g->n_inputs + 1, sizeof(*sh));
    ss_plan_t *p = NULL;
    ss_err_t e;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(&e, 0, sizeof(e));
    if (sh == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for shapes");
    for (size_t f = 0; f < sizeof(fills) / sizeof(fills[0]); f++) {
        if (rows_shapes(g, 3, fills[f], sh) < 0) {
            snprintf(out->why, sizeof(out->why), "an input has no batch "
                     "axis");
            goto done;
        }
        ss_err_clear(&e);
        rc = ss__plan_build(g, sh, SS__PLAN_NOSLICE, 0, &p, &e);
        if (rc != SS_EINVAL && rc != SS_EBADMODEL)
            break;
    }
    if (rc == SS_ENOMEM) {
        rc = ss_err_set(err, rc, "%s", e.msg);
        goto done;
    }
    if (rc < 0) {
        snprintf(out->why, sizeof(out->why), "it does not compile for a "
                 "batch of 3 rows: %.260s", e.msg);
        rc = 0;
        goto done;
    }
    if (p->mix_node < 0) {
        out->independent = 1;
        goto done;
    }
    if (p->mix_node < g->n_nodes) {
        const ss_node_t *n = &g->nodes[p->mix_node];

        snprintf(out->node, sizeof(out->node), "%s", n->name);
        snprintf(out->op, sizeof(out->op), "%s", n->op_type);
    }
    snprintf(out->why, sizeof(out->why), "%s", p->mix_why);
done:
    ss_plan_free(p);
    ss_free(sh);
    return rc;
}
