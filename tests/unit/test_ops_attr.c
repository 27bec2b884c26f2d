/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attribute look-ups for the op tests only.  The library's own live in
 * engine/attr.c with the graph code; the kernel tests link just the
 * kernels, so they carry this small stand-in with the same contract
 * (engine/ir.h).
 */
#include <string.h>

#include "engine/ir.h"

const ss_attr_t *
ss__attr_find(const ss_node_t *n, const char *name)
{
    for (int i = 0; n != NULL && name != NULL && i < n->n_attrs; i++)
        if (n->attrs[i].name && strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

int64_t
ss__attr_int(const ss_node_t *n, const char *name, int64_t dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a && a->type == SS_ATTR_INT ? a->i : dflt;
}

float
ss__attr_float(const ss_node_t *n, const char *name, float dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a && a->type == SS_ATTR_FLOAT ? a->f : dflt;
}

const char *
ss__attr_string(const ss_node_t *n, const char *name, const char *dflt)
{
    const ss_attr_t *a = ss__attr_find(n, name);

    return a && a->type == SS_ATTR_STRING ? a->s : dflt;
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
