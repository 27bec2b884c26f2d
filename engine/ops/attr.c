/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node attribute look-ups for kernels and passes.  Built into the kernel
 * library (engine/ops/libssops.a) and depending on nothing else, so the
 * kernel tests link exactly what the engine runs; graph.c frees
 * attributes.
 *
 * THREADS: [any]; attributes are immutable once the graph is loaded.
 */

#include <string.h>

#include "engine/ir/ir.h"

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
