/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Topological order of a graph's nodes (the ONNX importer's last step
 * per graph, engine/ir/onnx.c).
 *
 * DESIGN: Kahn's algorithm over producer -> consumer edges as CSR.  A
 * node reads its inputs and, through its subgraphs (If's branches, a
 * Loop's or Scan's body), the enclosing graphs' values those name
 * (ss_graph.outer): those reads are edges too, so an If comes after the
 * producers of what its branches read.
 *
 * THREADS: [any]; touches only g.
 */
#include "common/alloc.h"
#include "engine/ir/internal.h"

/* The values node n reads: its inputs, then what its subgraphs read of
 * the enclosing graphs (which orders it after their producers). */
static int
n_reads(const ss_node_t *n)
{
    int c = n->n_inputs;

    for (int a = 0; a < n->n_attrs; a++)
        if (n->attrs[a].g != NULL)
            c += n->attrs[a].g->n_outer;
    return c;
}

static int
read_at(const ss_node_t *n, int j)
{
    if (j < n->n_inputs)
        return n->inputs[j];
    j -= n->n_inputs;
    for (int a = 0; a < n->n_attrs; a++) {
        const ss_graph_t *sg = n->attrs[a].g;

        if (sg == NULL)
            continue;
        if (j < sg->n_outer)
            return sg->outer[j];
        j -= sg->n_outer;
    }
    return -1;
}

int
ss__ir_sort_nodes(ss_graph_t *g, const char *source, ss_err_t *err)
{
    int *prod = NULL, *pending = NULL, *start = NULL, *users = NULL;
    int *queue = NULL, head = 0, tail = 0, n_edges = 0, rc = 0;
    ss_node_t *sorted = NULL;

    if ((prod = ss_malloc((size_t)(g->n_values + 1) * sizeof(int))) == NULL
        || (pending = ss_calloc((size_t)g->n_nodes + 1, sizeof(int))) == NULL
        || (start = ss_calloc((size_t)g->n_nodes + 2, sizeof(int))) == NULL
        || (queue = ss_malloc(((size_t)g->n_nodes + 1) * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to sort nodes");
        goto done;
    }
    for (int i = 0; i < g->n_values; i++)
        prod[i] = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] >= 0)
                prod[g->nodes[i].outputs[k]] = i;
    /* edges producer → consumer, as CSR on the producer */
    for (int i = 0; i < g->n_nodes; i++) {
        for (int k = 0; k < n_reads(&g->nodes[i]); k++) {
            int v = read_at(&g->nodes[i], k);

            if (v >= 0 && prod[v] >= 0) {
                start[prod[v] + 1]++;
                pending[i]++;
                n_edges++;
            }
        }
    }
    for (int i = 0; i < g->n_nodes; i++)
        start[i + 1] += start[i];
    if ((users = ss_malloc(((size_t)n_edges + 1) * sizeof(int))) == NULL
        || (sorted = ss_calloc((size_t)g->n_nodes + 1,
                               sizeof(ss_node_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to sort nodes");
        goto done;
    }
    {
        int *fill = queue;  /* borrowed as a cursor per producer */

        for (int i = 0; i < g->n_nodes; i++)
            fill[i] = start[i];
        for (int i = 0; i < g->n_nodes; i++)
            for (int k = 0; k < n_reads(&g->nodes[i]); k++) {
                int v = read_at(&g->nodes[i], k);

                if (v >= 0 && prod[v] >= 0)
                    users[fill[prod[v]]++] = i;
            }
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (pending[i] == 0)
            queue[tail++] = i;
    while (head < tail) {
        int i = queue[head++];

        for (int e = start[i]; e < start[i + 1]; e++)
            if (--pending[users[e]] == 0)
                queue[tail++] = users[e];
    }
    if (tail < g->n_nodes) {
        int stuck = 0;

        while (pending[stuck] == 0)
            stuck++;
        rc = ss_err_set(err, SS_EBADMODEL, "%s: the graph has a cycle "
                        "through node '%s' (%s)", source,
                        g->nodes[stuck].name, g->nodes[stuck].op_type);
        goto done;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        sorted[i] = g->nodes[queue[i]];
        for (int k = 0; k < sorted[i].n_outputs; k++)
            if (sorted[i].outputs[k] >= 0)
                g->values[sorted[i].outputs[k]].producer = i;
    }
    ss_free(g->nodes);
    g->nodes = sorted;
    sorted = NULL;
done:
    ss_free(prod);
    ss_free(pending);
    ss_free(start);
    ss_free(users);
    ss_free(queue);
    ss_free(sorted);
    return rc;
}
