/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Graph helpers shared by the methods: which nodes are "layers" (a
 * MatMul, Gemm or Conv whose weight is a constant, the only things the
 * methods change), who reads each value, and making new constants.
 *
 * THREADS: pure functions of the graph they are given.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/internal.h"

static int
is_const(const ss_graph_t *g, int id)
{
    return id >= 0 && id < g->n_values && g->values[id].constant != NULL
           && g->values[id].constant->dtype == SS_DTYPE_F32;
}

/* The f32 constant behind value id, also through Identity nodes (torch
 * exports tied parameters that way); NULL if it is not one. */
static const ss_tensor_t *
const_of(const ss_graph_t *g, int id)
{
    int hops;

    for (hops = 0; hops < 8 && id >= 0 && id < g->n_values; hops++) {
        const ss_value_t *v = &g->values[id];
        const ss_node_t *n;

        if (v->constant != NULL)
            return v->constant->dtype == SS_DTYPE_F32 ? v->constant : NULL;
        if (v->producer < 0 || v->producer >= g->n_nodes)
            return NULL;
        n = &g->nodes[v->producer];
        if (strcmp(n->op_type, "Identity") != 0 || n->n_inputs < 1)
            return NULL;
        id = n->inputs[0];
    }
    return NULL;
}

int
ss__find_layers(const ss_graph_t *g, ss__layer_t **out, int *n,
                ss_err_t *err)
{
    ss__layer_t *l = NULL;
    int i, k = 0, rc = 0;

    *out = NULL;
    *n = 0;
    if ((l = ss_calloc((size_t)g->n_nodes + 1, sizeof(*l))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the layer list");
    for (i = 0; i < g->n_nodes; i++) {
        const ss_node_t *nd = &g->nodes[i];
        const ss_tensor_t *w;
        ss__layer_t *y = &l[k];

        if (nd->domain != NULL && nd->domain[0] != '\0')
            continue;
        if (nd->n_inputs < 2 || nd->inputs[0] < 0 || !is_const(g, nd->inputs[1])
            || is_const(g, nd->inputs[0]))
            continue;
        w = g->values[nd->inputs[1]].constant;
        y->node = i;
        y->x = nd->inputs[0];
        y->w = nd->inputs[1];
        y->b = nd->n_inputs > 2 && is_const(g, nd->inputs[2])
               ? nd->inputs[2] : -1;
        if (strcmp(nd->op_type, "MatMul") == 0) {
            if (w->ndim != 2)
                continue;
            y->kind = SS__LAYER_MATMUL;
            y->out_axis = 1;
            y->b = -1;
        } else if (strcmp(nd->op_type, "Gemm") == 0) {
            if (w->ndim != 2 || ss__attr_int(nd, "transA", 0) != 0)
                continue;
            if (nd->n_inputs > 2 && nd->inputs[2] >= 0 && y->b < 0)
                continue;       /* a bias we cannot see */
            y->kind = SS__LAYER_GEMM;
            y->out_axis = ss__attr_int(nd, "transB", 0) ? 0 : 1;
        } else if (strcmp(nd->op_type, "Conv") == 0) {
            if (w->ndim < 3 || (nd->n_inputs > 2 && nd->inputs[2] >= 0
                                && y->b < 0))
                continue;
            y->kind = SS__LAYER_CONV;
            y->out_axis = 0;
        } else {
            continue;
        }
        y->n_out = w->dims[y->out_axis];
        y->n_in = ss_tensor_numel(w) / (y->n_out > 0 ? y->n_out : 1);
        k++;
    }
    if (k == 0) {
        ss_free(l);
        l = NULL;
    }
    *out = l;
    *n = k;
    return rc;
}

int
ss__uses_build(const ss_graph_t *g, ss__uses_t *u, ss_err_t *err)
{
    int i, j, *fill = NULL, rc = 0;

    memset(u, 0, sizeof(*u));
    if ((u->count = ss_calloc((size_t)g->n_values + 1, sizeof(int))) == NULL
        || (u->nodes = ss_calloc((size_t)g->n_values + 1, sizeof(int *)))
           == NULL
        || (u->is_output = ss_calloc((size_t)g->n_values + 1, sizeof(bool)))
           == NULL
        || (fill = ss_calloc((size_t)g->n_values + 1, sizeof(int))) == NULL)
        goto nomem;
    u->n = g->n_values;
    for (i = 0; i < g->n_nodes; i++)
        for (j = 0; j < g->nodes[i].n_inputs; j++)
            if (g->nodes[i].inputs[j] >= 0)
                u->count[g->nodes[i].inputs[j]]++;
    for (i = 0; i < g->n_values; i++)
        if (u->count[i] > 0
            && (u->nodes[i] = ss_calloc((size_t)u->count[i], sizeof(int)))
               == NULL)
            goto nomem;
    for (i = 0; i < g->n_nodes; i++)
        for (j = 0; j < g->nodes[i].n_inputs; j++) {
            int v = g->nodes[i].inputs[j];

            /* A node reading a value twice is listed once per read. */
            if (v >= 0)
                u->nodes[v][fill[v]++] = i;
        }
    for (i = 0; i < g->n_outputs; i++)
        u->is_output[g->outputs[i]] = true;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory for the use lists");
    ss__uses_clear(u);
done:
    ss_free(fill);
    return rc;
}

void
ss__uses_clear(ss__uses_t *u)
{
    if (u == NULL)
        return;
    if (u->nodes != NULL) {
        int i;

        for (i = 0; i < u->n; i++)
            ss_free(u->nodes[i]);
    }
    ss_free(u->nodes);
    ss_free(u->count);
    ss_free(u->is_output);
    memset(u, 0, sizeof(*u));
}

int
ss__new_const(ss_graph_t *g, const char *name, ss_dtype_t dtype, int ndim,
              const int64_t *dims, void **data, ss_err_t *err)
{
    ss_tensor_t *t = NULL;
    int rc;

    *data = NULL;
    if ((rc = ss__tensor_new(dtype, ndim, dims, &t, err)) < 0)
        return rc;
    *data = t->data;
    /* The graph takes t, also on failure. */
    if ((rc = ss_graph_add_value(g, name, t, err)) < 0)
        *data = NULL;
    return rc;
}

const char *
ss__node_label(const ss_graph_t *g, int node)
{
    const ss_node_t *n = &g->nodes[node];

    return n->name != NULL && n->name[0] != '\0' ? n->name : n->op_type;
}

/* Folds BatchNormalization into the Conv before it (per output channel
 * s = gamma / sqrt(var + eps): W' = W s, b' = (b - mean) s + beta), the
 * way quantization tools do first: the int8 Conv then carries the BN in
 * its per-channel scales, and the engine's int8 path sees a plain Conv. */
int
ss__fold_bn(ss_graph_t *g, int *n_folded, ss_err_t *err)
{
    ss__uses_t u = {0};
    int i, k, n0 = g->n_nodes, rc;

    *n_folded = 0;
    if ((rc = ss__uses_build(g, &u, err)) < 0)
        return rc;
    /* Only the nodes there were: the use lists know nothing newer. */
    for (i = 0; i < n0; i++) {
        ss_node_t *cv = &g->nodes[i], *bn;
        const ss_tensor_t *w, *b, *p[4];
        int out = cv->n_outputs == 1 ? cv->outputs[0] : -1, wid, bid, in[3];
        int64_t O, per, c, j;
        float *nw, *nb;
        double eps;

        if (strcmp(cv->op_type, "Conv") != 0 || out < 0 || cv->n_inputs < 2
            || !is_const(g, cv->inputs[1]) || u.count[out] != 1
            || u.is_output[out])
            continue;
        b = cv->n_inputs > 2 && cv->inputs[2] >= 0
            ? g->values[cv->inputs[2]].constant : NULL;
        if (cv->n_inputs > 2 && cv->inputs[2] >= 0
            && (b == NULL || b->dtype != SS_DTYPE_F32))
            continue;
        bn = &g->nodes[u.nodes[out][0]];
        if (strcmp(bn->op_type, "BatchNormalization") != 0
            || bn->n_inputs != 5 || bn->inputs[0] != out
            || bn->n_outputs < 1 || bn->outputs[0] < 0)
            continue;
        for (k = 1; k < bn->n_outputs; k++)
            if (bn->outputs[k] >= 0)
                break;
        if (k < bn->n_outputs)
            continue;           /* training outputs in use */
        w = g->values[cv->inputs[1]].constant;
        O = w->dims[0];
        for (k = 0; k < 4; k++) {
            p[k] = const_of(g, bn->inputs[k + 1]);
            if (p[k] == NULL || ss_tensor_numel(p[k]) != O)
                break;
        }
        if (k < 4 || (b != NULL && ss_tensor_numel(b) != O))
            continue;
        eps = ss__attr_float(bn, "epsilon", 1e-5f);
        per = ss_tensor_numel(w) / (O > 0 ? O : 1);
        if ((wid = ss__new_const(g, NULL, SS_DTYPE_F32, w->ndim, w->dims,
                                 (void **)&nw, err)) < 0) {
            rc = wid;
            goto done;
        }
        if ((bid = ss__new_const(g, NULL, SS_DTYPE_F32, 1, &O, (void **)&nb,
                                 err)) < 0) {
            rc = bid;
            goto done;
        }
        cv = &g->nodes[i];      /* the arrays may have moved */
        bn = &g->nodes[u.nodes[out][0]];
        w = g->values[cv->inputs[1]].constant;
        b = cv->n_inputs > 2 && cv->inputs[2] >= 0
            ? g->values[cv->inputs[2]].constant : NULL;
        for (k = 0; k < 4; k++)
            p[k] = const_of(g, bn->inputs[k + 1]);
        for (c = 0; c < O; c++) {
            const float *gm = p[0]->data, *be = p[1]->data;
            const float *mu = p[2]->data, *var = p[3]->data;
            double s = gm[c] / sqrt((double)var[c] + eps);
            double bb = b != NULL ? ((const float *)b->data)[c] : 0.0;

            for (j = 0; j < per; j++)
                nw[c * per + j] = (float)(((const float *)w->data)[c * per + j]
                                          * s);
            nb[c] = (float)((bb - mu[c]) * s + be[c]);
        }
        in[0] = cv->inputs[0];
        in[1] = wid;
        in[2] = bid;
        out = bn->outputs[0];
        ss_graph_kill_node(g, u.nodes[cv->outputs[0]][0]);
        if ((rc = ss_graph_add_node(g, "Conv", g->nodes[i].name, 3, in, 1,
                                    &out, g->nodes[i].n_attrs,
                                    g->nodes[i].attrs, err)) < 0)
            goto done;
        ss_graph_kill_node(g, i);
        (*n_folded)++;
    }
    rc = *n_folded > 0 ? ss_graph_finalize(g, err) : 0;
done:
    ss__uses_clear(&u);
    return rc;
}

/* Torch's exporter writes parameters of equal value once and each other
 * as an Identity node of it (every zero-initialized bias of a squeezenet
 * or vgg, equal BatchNorm vectors): a Conv whose bias is such an Identity
 * is no layer to ss__find_layers ("a bias we cannot see"), so no method
 * touched it -- structured pruning of squeezenet1_0 cut one conv of 26.
 * Each Identity of a constant becomes a constant of its own, a copy (the
 * methods replace one layer's constants with new ones, never the others'
 * they were tied to), except one a graph output reads.  Finalizes g when
 * anything changed. */
/* Whether node n of g is an Identity of a constant that
 * ss__untie_consts unties (not one a graph output reads). */
static bool
tied_identity(const ss_graph_t *g, const ss_node_t *n)
{
    int k;

    if (strcmp(n->op_type, "Identity") != 0 || n->n_inputs != 1
        || n->n_outputs != 1 || n->inputs[0] < 0
        || (n->domain != NULL && n->domain[0] != '\0')
        || g->values[n->inputs[0]].constant == NULL)
        return false;
    for (k = 0; k < g->n_outputs; k++)
        if (g->outputs[k] == n->outputs[0])
            return false;
    return true;
}

bool
ss__has_tied_consts(const ss_graph_t *g)
{
    int i;

    for (i = 0; i < g->n_nodes; i++)
        if (tied_identity(g, &g->nodes[i]))
            return true;
    return false;
}

int
ss__untie_consts(ss_graph_t *g, int *n_untied, ss_err_t *err)
{
    bool again = true;
    int i, rc = 0;

    *n_untied = 0;
    while (again) {             /* chains: Identity(Identity(c)) */
        again = false;
        for (i = 0; i < g->n_nodes; i++) {
            const ss_node_t *n = &g->nodes[i];
            const ss_tensor_t *c;
            ss_tensor_t *t = NULL;
            size_t bytes;
            int out;

            if (!tied_identity(g, n))
                continue;
            c = g->values[n->inputs[0]].constant;
            out = n->outputs[0];
            if (ss__tensor_bytes(c, &bytes) < 0)
                return ss_err_set(err, SS_EINVAL, "a constant of bad size");
            if ((rc = ss__tensor_new(c->dtype, c->ndim, c->dims, &t,
                                     err)) < 0)
                return rc;
            memcpy(t->data, c->data, bytes);
            ss_graph_kill_node(g, i);
            if ((rc = ss_graph_set_constant(g, out, t, err)) < 0)
                return rc;
            g->values[out].producer = -1;
            ++*n_untied;
            again = true;
        }
    }
    return *n_untied > 0 ? ss_graph_finalize(g, err) : 0;
}
