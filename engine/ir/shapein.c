/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Graph inputs whose values decide shapes (ss_graph_shape_inputs).
 *
 * DESIGN.  Some ops read an input's values to infer their outputs'
 * shapes (ss__op_value_inputs lists them: Reshape's shape, TopK's K,
 * NonZero's data, ...).  A plan is compiled for concrete shapes, so such
 * a value must be known then: a constant, or computed from constants and
 * shapes only (Shape -> Gather -> Concat folds), or -- the inputs found
 * here -- a graph input, in which case the plan is specialised to the
 * request's values (engine/plan/plan.c says why that and not shapes
 * computed at run time).  One walk over the nodes in reverse topological
 * order marks the values whose values are needed: a marked node output
 * marks all its node's inputs, except through Shape and Size, whose
 * outputs depend on their input's shape alone (known per plan).  The
 * walk goes into subgraphs (If's branches, Loop's body), whose nodes read
 * the enclosing graphs' values by the same ids: a Reshape in a branch
 * whose shape is a graph input marks that input.
 *
 * THREADS: [any]; reads the graph only.
 */
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/ir.h"

/* Marks in need what g's nodes need the values of, in reverse
 * topological order; a subgraph's outputs are needed when its node's
 * are. */
static void
walk(const ss_graph_t *g, unsigned char *need)
{
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = &g->nodes[i];
        unsigned mask = ss__op_value_inputs(n, g->opset);
        int all = 0;

        if (strcmp(n->op_type, "Shape") != 0
            && strcmp(n->op_type, "Size") != 0)
            for (int k = 0; k < n->n_outputs && !all; k++)
                all = n->outputs[k] >= 0 && need[n->outputs[k]];
        for (int k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0
                && (all || (k < 32 && (mask >> k & 1u))))
                need[n->inputs[k]] = 1;
        for (int a = 0; a < n->n_attrs; a++) {
            const ss_graph_t *sg = n->attrs[a].g;

            if (sg == NULL)
                continue;
            for (int k = 0; all && k < sg->n_outputs; k++)
                need[sg->outputs[k]] = 1;
            walk(sg, need);
        }
    }
}

int
ss_graph_shape_inputs(const ss_graph_t *g, unsigned char *flags)
{
    unsigned char *need;
    int count = 0;

    if (flags != NULL && g->n_inputs > 0)
        memset(flags, 0, (size_t)g->n_inputs);
    if (g->n_inputs == 0)
        return 0;
    /* On no memory, say every input decides shapes: plans are then
     * specialised more than needed, never wrongly shared. */
    if ((need = ss_calloc((size_t)g->n_values + 1, 1)) == NULL) {
        if (flags != NULL)
            memset(flags, 1, (size_t)g->n_inputs);
        return g->n_inputs;
    }
    walk(g, need);
    for (int i = 0; i < g->n_inputs; i++) {
        int v = g->inputs[i];

        if (need[v] && g->values[v].constant == NULL) {
            count++;
            if (flags != NULL)
                flags[i] = 1;
        }
    }
    ss_free(need);
    return count;
}
