/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The loaded graph: accessors and freeing (of nodes and attributes too).
 * onnx.c builds it.
 *
 * THREADS: [any]; a graph is immutable once loaded.
 */

#include <stdatomic.h>
#include <string.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "common/memacct.h"
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
    ss_graph_free(a->g);
    memset(a, 0, sizeof(*a));
}

const ss_graph_t *
ss__attr_graph(const ss_node_t *n, const char *name)
{
    for (int i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].type == SS_ATTR_GRAPH
            && strcmp(n->attrs[i].name, name) == 0)
            return n->attrs[i].g;
    return NULL;
}

const ss_graph_t *
ss__attr_graph_any(const ss_node_t *n)
{
    for (int i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].type == SS_ATTR_GRAPH)
            return n->attrs[i].g;
    return NULL;
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
    if (g->values != NULL && g->parent == NULL) {
        for (int i = 0; i < g->n_values; i++) {
            ss_free(g->values[i].name);
            ss__tensor_free(g->values[i].constant);
        }
    }
    if (g->nodes != NULL)
        for (int i = 0; i < g->n_nodes; i++)
            ss__node_clear(&g->nodes[i]);
    if (g->parent == NULL)
        ss_free(g->values);
    ss_free(g->outer);
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
    ss_memacct_unref(atomic_load(&g->acct));
    ss_free(g);
}

struct ss_memacct *
ss__graph_acct(const ss_graph_t *g)
{
    /* the field is the one mutable part of a shared graph: plans of
     * several batch sizes may compile at once, so the first to come
     * publishes, and the others take its account */
    ss_graph_t *w = (ss_graph_t *)g;
    ss_memacct_t *a = atomic_load(&w->acct), *fresh, *none = NULL;

    if (a != NULL || (fresh = ss_memacct_new()) == NULL)
        return a;
    if (atomic_compare_exchange_strong(&w->acct, &none, fresh))
        return fresh;
    ss_memacct_unref(fresh);
    return none;
}

void
ss_graph_memory(const ss_graph_t *g, ss_graph_memory_t *out)
{
    /* a graph's constants point into at most a few mappings (the model
     * file, its realigned copy): each is measured once */
    enum { MAX_MAPS = 8 };
    ss_filemap_t *maps[MAX_MAPS];
    int n_maps = 0;

    memset(out, 0, sizeof(*out));
    out->engine_bytes = ss_memacct_bytes(atomic_load(&g->acct));
    for (int v = 0; v < g->n_values; v++) {
        const ss_tensor_t *c = g->values[v].constant;
        ss_filemap_t *m;
        size_t n;
        int k;

        if (c == NULL || ss__tensor_bytes(c, &n) < 0)
            continue;
        if ((m = ss_filemap_at(c->data)) == NULL) {
            out->engine_bytes += n;
            continue;
        }
        for (k = 0; k < n_maps && maps[k] != m; k++)
            ;
        if (k < n_maps || n_maps == MAX_MAPS)
            continue;
        maps[n_maps++] = m;
    }
    for (int k = 0; k < n_maps; k++) {
        size_t r = 0;

        out->mapped_bytes += ss_filemap_len(maps[k]);
        /* without /proc, the whole mapping: an upper bound */
        if (ss_filemap_resident(maps[k], &r) < 0)
            r = ss_filemap_len(maps[k]);
        out->mapped_resident_bytes += r;
    }
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

const char *
ss_graph_control_node(const ss_graph_t *g, const char **op)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (ss__attr_graph_any(&g->nodes[i]) != NULL) {
            if (op != NULL)
                *op = g->nodes[i].op_type;
            return g->nodes[i].name;
        }
    return NULL;
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
