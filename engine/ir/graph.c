/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The loaded graph: accessors and freeing (of nodes and attributes too).
 * onnx.c builds it.
 *
 * THREADS: [any]; a graph is immutable once loaded.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/ir/ir.h"

void
ss__attr_clear(ss_attr_t *a)
{
    if (a == NULL)
        return;
    ss_free(a->name);
    ss_free(a->s);
    ss__tensor_free(a->t);
    ss_free(a->floats);
    ss_free(a->ints);
    if (a->strings != NULL)
        for (int i = 0; i < a->n; i++)
            ss_free(a->strings[i]);
    ss_free(a->strings);
    memset(a, 0, sizeof(*a));
}

void
ss__node_clear(ss_node_t *n)
{
    if (n == NULL)
        return;
    ss_free(n->name);
    ss_free(n->op_type);
    ss_free(n->domain);
    ss_free(n->inputs);
    ss_free(n->outputs);
    if (n->attrs != NULL)
        for (int i = 0; i < n->n_attrs; i++)
            ss__attr_clear(&n->attrs[i]);
    ss_free(n->attrs);
    memset(n, 0, sizeof(*n));
}

void
ss__err_scrub(ss_err_t *err)
{
    if (err == NULL)
        return;
    for (char *c = err->msg; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
}

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
    for (int i = 0; i < g->n_meta; i++) {
        ss_free(g->meta_keys[i]);
        ss_free(g->meta_values[i]);
    }
    ss_free(g->meta_keys);
    ss_free(g->meta_values);
    ss_free(g->taps);
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

int
ss_graph_set_taps(ss_graph_t *g, int n, const char *const *names,
                  ss_err_t *err)
{
    int *ids = NULL;

    if (n > 0 && (ids = ss_calloc((size_t)n, sizeof(int))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for %d taps", n);
    for (int k = 0; k < n; k++) {
        int v = -1;

        for (int i = 0; i < g->n_values && v < 0; i++)
            if (strcmp(g->values[i].name, names[k]) == 0)
                v = i;
        if (v < 0 || g->values[v].constant != NULL) {
            ss_free(ids);
            return ss_err_set(err, SS_EINVAL, "%s: no computed value "
                              "'%s' to tap", g->source, names[k]);
        }
        ids[k] = v;
    }
    ss_free(g->taps);
    g->taps = ids;
    g->n_taps = n;
    return 0;
}
