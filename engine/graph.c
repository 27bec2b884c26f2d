/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The loaded graph: accessors and freeing.  onnx.c builds it.
 *
 * THREADS: [any]; a graph is immutable once loaded.
 */

#include "common/alloc.h"
#include "engine/ir.h"

void
ss_graph_free(ss_graph_t *g)
{
    if (g == NULL)
        return;
    if (g->values != NULL) {
        for (int i = 0; i < g->n_values; i++) {
            ss_free(g->values[i].name);
            ss__tensor_free(g->values[i].constant);
        }
    }
    if (g->nodes != NULL)
        for (int i = 0; i < g->n_nodes; i++)
            ss__node_clear(&g->nodes[i]);
    ss_free(g->values);
    ss_free(g->nodes);
    ss_free(g->inputs);
    ss_free(g->input_info);
    ss_free(g->outputs);
    ss_free(g->output_info);
    ss_free(g->source);
    ss_free(g);
}

int
ss_graph_num_inputs(const ss_graph_t *g)
{
    return g->n_inputs;
}

int
ss_graph_num_outputs(const ss_graph_t *g)
{
    return g->n_outputs;
}

const ss_io_info_t *
ss_graph_input(const ss_graph_t *g, int i)
{
    return i >= 0 && i < g->n_inputs ? &g->input_info[i] : NULL;
}

const ss_io_info_t *
ss_graph_output(const ss_graph_t *g, int i)
{
    return i >= 0 && i < g->n_outputs ? &g->output_info[i] : NULL;
}

size_t
ss_graph_weight_bytes(const ss_graph_t *g)
{
    return g->weight_bytes;
}
