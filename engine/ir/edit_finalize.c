/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_graph_finalize: an edited graph (edit.c) back into one the plan
 * compiler accepts.  In order: drops dead nodes, checks ops and that
 * every read value is defined exactly once, drops nodes no graph output
 * depends on, sorts the rest topologically (Kahn), drops values nothing
 * reads or writes (their constants freed), renumbers, and recomputes
 * producers, io infos and weight bytes.
 *
 * THREADS: a graph being edited belongs to one thread.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/edit.h"

/* ---- finalize --------------------------------------------------------- */

static int
op_known(const ss_node_t *n)
{
    static const char *const plan_ops[] = { "Identity", "Dropout", "Shape",
                                            "Size" };

    if (n->domain != NULL && n->domain[0] != '\0'
        && strcmp(n->domain, "ai.onnx") != 0)
        return 0;
    for (size_t i = 0; i < sizeof(plan_ops) / sizeof(plan_ops[0]); i++)
        if (strcmp(n->op_type, plan_ops[i]) == 0)
            return 1;
    return ss__op_find(n->op_type) != NULL;
}

/* The element type a node writes to output k, as far as export needs it
 * for an output whose type nobody recorded. */
static ss_dtype_t
guess_dtype(const ss_graph_t *g, const ss_dtype_t *dt, const ss_node_t *n)
{
    const char *op = n->op_type;

    if (strcmp(op, "QuantizeLinear") == 0)
        return n->n_inputs > 2 && n->inputs[2] >= 0 ? dt[n->inputs[2]]
                                                    : SS_DTYPE_U8;
    if (strcmp(op, "DequantizeLinear") == 0)
        return SS_DTYPE_F32;
    if (strcmp(op, "Cast") == 0)
        return (ss_dtype_t)ss__attr_int(n, "to", SS_DTYPE_F32);
    if (strcmp(op, "Shape") == 0 || strcmp(op, "Size") == 0
        || strcmp(op, "ArgMax") == 0 || strcmp(op, "ArgMin") == 0)
        return SS_DTYPE_I64;
    if (strcmp(op, "Equal") == 0 || strcmp(op, "Less") == 0
        || strcmp(op, "Greater") == 0 || strcmp(op, "Not") == 0
        || strcmp(op, "And") == 0 || strcmp(op, "Or") == 0)
        return SS_DTYPE_BOOL;
    if (strcmp(op, "Where") == 0 && n->n_inputs > 1 && n->inputs[1] >= 0)
        return dt[n->inputs[1]];
    (void)g;
    return n->n_inputs > 0 && n->inputs[0] >= 0 ? dt[n->inputs[0]]
                                                : SS_DTYPE_F32;
}

typedef struct fin {
    int *prod, *order, *remap, *pending, *start, *users;
    char *need, *used;
    ss_dtype_t *dt;
} fin_t;

static void
fin_free(fin_t *f)
{
    ss_free(f->prod);
    ss_free(f->order);
    ss_free(f->remap);
    ss_free(f->pending);
    ss_free(f->start);
    ss_free(f->users);
    ss_free(f->need);
    ss_free(f->used);
    ss_free(f->dt);
}

/* Checks ops and definitions; sets f->prod. */
static int
check_defs(ss_graph_t *g, fin_t *f, ss_err_t *err)
{
    for (int v = 0; v < g->n_values; v++)
        f->prod[v] = -1;
    for (int i = 0; i < g->n_inputs; i++)
        f->prod[g->inputs[i]] = -2;
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        if (!op_known(n))
            return ss_err_set(err, SS_EUNSUPP, "%s: node '%s': no kernel "
                              "for %s", g->source, n->name, n->op_type);
        for (int k = 0; k < n->n_outputs; k++) {
            int v = n->outputs[k];

            if (v < 0)
                continue;
            if (f->prod[v] != -1 || g->values[v].constant != NULL)
                return ss_err_set(err, SS_EBADMODEL, "%s: value '%s' is "
                                  "defined twice", g->source,
                                  g->values[v].name);
            f->prod[v] = i;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];

            if (v >= 0 && f->prod[v] == -1 && g->values[v].constant == NULL)
                return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (%s) "
                                  "reads '%s', which nothing defines",
                                  g->source, n->name, n->op_type,
                                  g->values[v].name);
        }
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i];

        if (f->prod[v] == -1 && g->values[v].constant == NULL)
            return ss_err_set(err, SS_EBADMODEL, "%s: graph output '%s' is "
                              "not defined by anything", g->source,
                              g->values[v].name);
    }
    return 0;
}

/* Keeps only nodes some output needs, in topological order. */
static int
sort_live(ss_graph_t *g, fin_t *f, int *n_order, ss_err_t *err)
{
    int n_edges = 0, head = 0, tail = 0, n_live = 0;

    /* backward marking from the outputs, in reverse index order until
     * nothing changes (nodes are not sorted yet) */
    for (int i = 0; i < g->n_outputs; i++)
        f->need[g->outputs[i]] = 1;
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = g->n_nodes - 1; i >= 0; i--) {
            const ss_node_t *n = &g->nodes[i];
            int live = 0;

            if (f->pending[i] < 0)
                continue;
            for (int k = 0; k < n->n_outputs && !live; k++)
                live = n->outputs[k] >= 0 && f->need[n->outputs[k]];
            if (!live)
                continue;
            f->pending[i] = -1;     /* live; reset below */
            changed = 1;
            for (int k = 0; k < n->n_inputs; k++)
                if (n->inputs[k] >= 0)
                    f->need[n->inputs[k]] = 1;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        if (f->pending[i] == 0) {
            f->pending[i] = -2;     /* dead */
            continue;
        }
        f->pending[i] = 0;
        n_live++;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        if (f->pending[i] == -2)
            continue;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];

            if (v >= 0 && f->prod[v] >= 0) {
                f->start[f->prod[v] + 1]++;
                f->pending[i]++;
                n_edges++;
            }
        }
    }
    for (int i = 0; i < g->n_nodes; i++)
        f->start[i + 1] += f->start[i];
    if ((f->users = ss_malloc(((size_t)n_edges + 1) * sizeof(int))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to sort nodes");
    for (int i = 0; i < g->n_nodes; i++)
        f->order[i] = f->start[i];
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        if (f->pending[i] == -2)
            continue;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];

            if (v >= 0 && f->prod[v] >= 0)
                f->users[f->order[f->prod[v]]++] = i;
        }
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (f->pending[i] == 0)
            f->order[tail++] = i;
    while (head < tail) {
        int i = f->order[head++];

        for (int e = f->start[i]; e < f->start[i + 1]; e++)
            if (--f->pending[f->users[e]] == 0)
                f->order[tail++] = f->users[e];
    }
    if (tail < n_live)
        return ss_err_set(err, SS_EBADMODEL, "%s: the edited graph has a "
                          "cycle", g->source);
    *n_order = tail;
    return 0;
}

/* Reorders nodes by f->order, drops the others and unused values. */
static int
compact(ss_graph_t *g, fin_t *f, int n_order, ss_err_t *err)
{
    ss_node_t *nodes = ss_calloc((size_t)n_order + 1, sizeof(*nodes));
    int nv = 0;

    if (nodes == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to finalize");
    for (int i = 0; i < n_order; i++) {
        nodes[i] = g->nodes[f->order[i]];
        memset(&g->nodes[f->order[i]], 0, sizeof(ss_node_t));
    }
    for (int i = 0; i < g->n_nodes; i++)
        ss__node_clear(&g->nodes[i]);
    ss_free(g->nodes);
    g->nodes = nodes;
    g->n_nodes = n_order;
    for (int i = 0; i < g->n_inputs; i++)
        f->used[g->inputs[i]] = 1;
    for (int i = 0; i < g->n_outputs; i++)
        f->used[g->outputs[i]] = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < nodes[i].n_inputs; k++)
            if (nodes[i].inputs[k] >= 0)
                f->used[nodes[i].inputs[k]] = 1;
        for (int k = 0; k < nodes[i].n_outputs; k++)
            if (nodes[i].outputs[k] >= 0)
                f->used[nodes[i].outputs[k]] = 1;
    }
    for (int v = 0; v < g->n_values; v++) {
        if (!f->used[v]) {
            f->remap[v] = -1;
            ss_free(g->values[v].name);
            ss__tensor_free(g->values[v].constant);
            continue;
        }
        f->remap[v] = nv;
        g->values[nv++] = g->values[v];
    }
    g->n_values = nv;
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < nodes[i].n_inputs; k++)
            if (nodes[i].inputs[k] >= 0)
                nodes[i].inputs[k] = f->remap[nodes[i].inputs[k]];
        for (int k = 0; k < nodes[i].n_outputs; k++)
            if (nodes[i].outputs[k] >= 0)
                nodes[i].outputs[k] = f->remap[nodes[i].outputs[k]];
    }
    for (int i = 0; i < g->n_inputs; i++)
        g->inputs[i] = f->remap[g->inputs[i]];
    for (int i = 0; i < g->n_outputs; i++)
        g->outputs[i] = f->remap[g->outputs[i]];
    return 0;
}

/* Producers, io infos, weight bytes. */
static void
recompute(ss_graph_t *g, fin_t *f)
{
    g->weight_bytes = 0;
    for (int v = 0; v < g->n_values; v++) {
        ss_value_t *val = &g->values[v];

        val->producer = -1;
        f->dt[v] = val->dtype;
        if (val->constant != NULL)
            g->weight_bytes += (size_t)ss_tensor_numel(val->constant)
                               * ss_dtype_size(val->constant->dtype);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0) {
                g->values[n->outputs[k]].producer = i;
                if (f->dt[n->outputs[k]] == SS_DTYPE_UNDEFINED)
                    f->dt[n->outputs[k]] = guess_dtype(g, f->dt, n);
            }
    }
    for (int i = 0; i < g->n_inputs; i++) {
        const ss_value_t *v = &g->values[g->inputs[i]];
        ss_io_info_t *io = &g->input_info[i];

        io->name = v->name;
        io->dtype = v->dtype;
        io->ndim = v->ndim;
        memcpy(io->dims, v->dims, sizeof(io->dims));
    }
    for (int i = 0; i < g->n_outputs; i++) {
        ss_io_info_t *io = &g->output_info[i];

        io->name = g->values[g->outputs[i]].name;
        if (io->dtype == SS_DTYPE_UNDEFINED)
            io->dtype = f->dt[g->outputs[i]];
    }
}

int
ss_graph_finalize(ss_graph_t *g, ss_err_t *err)
{
    fin_t f = { 0 };
    size_t nv = (size_t)g->n_values + 1, nn = (size_t)g->n_nodes + 2;
    int n_order = 0, kept = 0, rc = 0;

    /* dead nodes go first, so nothing below sees them */
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].n_outputs == 0) {
            ss__node_clear(&g->nodes[i]);
            continue;
        }
        if (kept != i) {
            g->nodes[kept] = g->nodes[i];
            memset(&g->nodes[i], 0, sizeof(ss_node_t));
        }
        kept++;
    }
    g->n_nodes = kept;
    if ((f.prod = ss_malloc(nv * sizeof(int))) == NULL
        || (f.remap = ss_malloc(nv * sizeof(int))) == NULL
        || (f.order = ss_malloc(nn * sizeof(int))) == NULL
        || (f.pending = ss_calloc(nn, sizeof(int))) == NULL
        || (f.start = ss_calloc(nn, sizeof(int))) == NULL
        || (f.need = ss_calloc(nv, 1)) == NULL
        || (f.used = ss_calloc(nv, 1)) == NULL
        || (f.dt = ss_calloc(nv, sizeof(ss_dtype_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to finalize a graph");
        goto done;
    }
    if (g->n_outputs == 0) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: the graph has no outputs",
                        g->source);
        goto done;
    }
    if ((rc = check_defs(g, &f, err)) < 0
        || (rc = sort_live(g, &f, &n_order, err)) < 0
        || (rc = compact(g, &f, n_order, err)) < 0)
        goto done;
    recompute(g, &f);
done:
    fin_free(&f);
    return rc;
}
