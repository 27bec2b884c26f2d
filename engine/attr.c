/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node attributes: look-ups for kernels and passes, and freeing.
 *
 * THREADS: [any]; attributes are immutable once the graph is loaded.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/ir.h"

const ss_attr_t *
ss__attr_find(const ss_node_t *n, const char *name)
{
    if (n == NULL || name == NULL)
        return NULL;
    for (int i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].name != NULL && strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

int64_t
ss__attr_int(const ss_node_t *n, const char *name, int64_t dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a != NULL && a->type == SS_ATTR_INT ? a->i : dflt;
}

float
ss__attr_float(const ss_node_t *n, const char *name, float dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a != NULL && a->type == SS_ATTR_FLOAT ? a->f : dflt;
}

const char *
ss__attr_string(const ss_node_t *n, const char *name, const char *dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a != NULL && a->type == SS_ATTR_STRING ? a->s : dflt;
}

int
ss__attr_ints(const ss_node_t *n, const char *name, const int64_t **v)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    if (a == NULL || a->type != SS_ATTR_INTS)
        return -1;
    *v = a->ints;
    return a->n;
}

int
ss__attr_floats(const ss_node_t *n, const char *name, const float **v)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    if (a == NULL || a->type != SS_ATTR_FLOATS)
        return -1;
    *v = a->floats;
    return a->n;
}

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
