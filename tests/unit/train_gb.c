/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small training graphs built in C for the trainer's unit tests
 * (train_gb.h).
 */

#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/ir/edit.h"
#include "tests/tap.h"
#include "tests/unit/train_gb.h"

uint64_t gb_seed = 1;

double
gb_urand(void)
{
    return ss__rng_unit(&gb_seed);
}

void
gb_init(gb_t *b, int opset)
{
    memset(b, 0, sizeof(*b));
    b->g = ss_calloc(1, sizeof(ss_graph_t));
    b->g->source = ss_strdup("<test>");
    b->g->opset = opset;
}

/* A float initializer with values in [lo, hi). */
int
gb_param(gb_t *b, const char *name, int nd, const int64_t *dims, double lo,
         double hi)
{
    ss_tensor_t *t = NULL;
    int64_t n;

    if (ss__tensor_new(SS_DTYPE_F32, nd, dims, &t, &b->err) < 0)
        return -1;
    n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((float *)t->data)[i] = (float)(lo + (hi - lo) * gb_urand());
    return ss_graph_add_value(b->g, name, t, &b->err);
}

/* Evenly spaced distinct values, shuffled: a max has no near tie within
 * the finite-difference step. */
int
gb_spread(gb_t *b, const char *name, int nd, const int64_t *dims)
{
    int v = gb_param(b, name, nd, dims, 0, 1);
    ss_tensor_t *t = v >= 0 ? b->g->values[v].constant : NULL;
    int64_t n = t ? ss_tensor_numel(t) : 0;
    float *x = t ? t->data : NULL;

    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(-1.0 + 2.0 * (double)i / (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(gb_urand() * (double)(i + 1));
        float k = x[i];

        x[i] = x[j];
        x[j] = k;
    }
    return v;
}

int
gb_scalar(gb_t *b, const char *name, float v)
{
    ss_tensor_t *t = NULL;

    if (ss__tensor_new(SS_DTYPE_F32, 0, NULL, &t, &b->err) < 0)
        return -1;
    *(float *)t->data = v;
    return ss_graph_add_value(b->g, name, t, &b->err);
}

int
gb_ints(gb_t *b, const char *name, int nd, const int64_t *dims,
        const int64_t *vals)
{
    ss_tensor_t *t = NULL;

    if (ss__tensor_new(SS_DTYPE_I64, nd, dims, &t, &b->err) < 0)
        return -1;
    memcpy(t->data, vals, (size_t)ss_tensor_numel(t) * sizeof(int64_t));
    return ss_graph_add_value(b->g, name, t, &b->err);
}

void
attr_i(gb_t *b, const char *name, int64_t v)
{
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_INT;
    a->i = v;
}

void
attr_f(gb_t *b, const char *name, float v)
{
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_FLOAT;
    a->f = v;
}

void
attr_ints(gb_t *b, const char *name, int n, const int64_t *v)
{
    int k = b->n_attrs;
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_INTS;
    a->n = n;
    memcpy(b->ibuf[k], v, (size_t)n * sizeof(int64_t));
    a->ints = b->ibuf[k];
}

/* A node named name; returns its output value id. */
int
gb_node_named(gb_t *b, const char *name, const char *op, int n_in,
              const int *in)
{
    int out = ss_graph_add_value(b->g, NULL, NULL, &b->err);

    if (out < 0 || ss_graph_add_node(b->g, op, name, n_in, in, 1, &out,
                                     b->n_attrs, b->attrs, &b->err) < 0)
        out = -1;
    b->n_attrs = 0;
    return out;
}

/* A node named by its op. */
int
gb_node(gb_t *b, const char *op, int n_in, const int *in)
{
    return gb_node_named(b, op, op, n_in, in);
}

ss_graph_t *
gb_done(gb_t *b, int out)
{
    if (out < 0 || ss_graph_add_output(b->g, out, &b->err) < 0 ||
        ss_graph_finalize(b->g, &b->err) < 0) {
        tap_diag("graph: %s", b->err.msg);
        ss_graph_free(b->g);
        return NULL;
    }
    return b->g;
}
