/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Value checks of one request's inputs (ss_input_check_*): what would make
 * a run fail on the values of an input, found in the graph once, checked
 * per request before it joins a batch.
 *
 * DESIGN: shapes and dtypes are the caller's first check; what is left is
 * values, and the one that fails runs in practice is an index: a token id
 * past an embedding table fails Gather ("index 1000 is out of range"), and
 * in a batch it failed every request batched with it.  At creation, each
 * integer graph input is followed forward through ops that pass values on
 * unchanged (Identity, Cast to an integer type, Reshape, Flatten,
 * Squeeze, Unsqueeze, Transpose, Expand) to the indices input of Gather or
 * GatherElements whose data has a size s fixed in the graph along the
 * gathered axis; the input then must lie in [-s, s - 1] (the kernel's own
 * rule, negative indices counting from the end), intersected over every
 * such use.  A run is one pass over each checked input.
 *
 * Anything not recognised is not checked here (the run still reports it),
 * so a check never refuses what the model would take: Slice or Concat on
 * the way, for instance, stop the walk.
 *
 * THREADS: new and free on one thread; ss_input_check_run is [any]
 * (reads only).
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/ir.h"

typedef struct rule {
    int input;                  /* graph input index */
    int64_t lo, hi;             /* allowed values, inclusive */
    char node[96];              /* the Gather that set hi, for messages */
} rule_t;

struct ss_input_check {
    const ss_graph_t *g;
    int n_rules;
    rule_t *rules;
};

static bool
is_int(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_I8:
    case SS_DTYPE_U8:
    case SS_DTYPE_I16:
    case SS_DTYPE_U16:
    case SS_DTYPE_I32:
    case SS_DTYPE_U32:
    case SS_DTYPE_I64:
    case SS_DTYPE_U64:
        return true;
    default:
        return false;
    }
}

/* Whether output 0 of n carries the values of its input 0 unchanged. */
static bool
passes_values(const ss_node_t *n)
{
    static const char *const ops[] = {"Identity", "Reshape", "Flatten",
                                      "Squeeze", "Unsqueeze", "Transpose",
                                      "Expand"};

    if (n->domain[0] != '\0')
        return false;
    if (strcmp(n->op_type, "Cast") == 0)
        return is_int((ss_dtype_t)ss__attr_int(n, "to", 0));
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(n->op_type, ops[i]) == 0)
            return true;
    return false;
}

/* The size of the axis a Gather-like node n indexes, or -1 when the graph
 * does not fix it. */
static int64_t
gathered_size(const ss_graph_t *g, const ss_node_t *n)
{
    const ss_value_t *d;
    const int64_t *dims;
    int64_t axis;
    int ndim;

    if (n->n_inputs < 2 || n->inputs[0] < 0)
        return -1;
    d = &g->values[n->inputs[0]];
    if (d->constant != NULL) {
        ndim = d->constant->ndim;
        dims = d->constant->dims;
    } else {
        ndim = d->ndim;
        dims = d->dims;
    }
    if (ndim < 1)
        return -1;
    axis = ss__attr_int(n, "axis", 0);
    if (axis < -ndim || axis >= ndim)
        return -1;
    if (axis < 0)
        axis += ndim;
    return dims[axis] >= 0 ? dims[axis] : -1;
}

static bool
is_gather(const ss_node_t *n)
{
    return n->domain[0] == '\0' && (strcmp(n->op_type, "Gather") == 0 ||
                                    strcmp(n->op_type, "GatherElements") == 0);
}

/* Follows graph input i; adds a rule when it reaches Gather indices. */
static int
walk(const ss_graph_t *g, int i, rule_t *r, ss_err_t *err)
{
    int *stack, top = 0, rc = 0;
    bool *seen;

    r->input = i;
    r->lo = INT64_MIN;
    r->hi = INT64_MAX;
    r->node[0] = '\0';
    stack = ss_calloc((size_t)g->n_values + 1, sizeof *stack);
    seen = ss_calloc((size_t)g->n_values + 1, sizeof *seen);
    if (stack == NULL || seen == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for input checks");
        goto done;
    }
    stack[top++] = g->inputs[i];
    seen[g->inputs[i]] = true;
    while (top > 0) {
        int v = stack[--top];

        for (int k = 0; k < g->n_nodes; k++) {
            const ss_node_t *n = &g->nodes[k];

            for (int s = 0; s < n->n_inputs; s++) {
                int64_t size;

                if (n->inputs[s] != v)
                    continue;
                if (s == 0 && passes_values(n) && n->outputs[0] >= 0 &&
                    !seen[n->outputs[0]]) {
                    seen[n->outputs[0]] = true;
                    stack[top++] = n->outputs[0];
                } else if (s == 1 && is_gather(n) &&
                           (size = gathered_size(g, n)) >= 0) {
                    if (-size > r->lo)
                        r->lo = -size;
                    if (size - 1 < r->hi) {
                        r->hi = size - 1;
                        snprintf(r->node, sizeof r->node, "%s",
                                 n->name[0] ? n->name : n->op_type);
                    }
                }
            }
        }
    }
done:
    ss_free(stack);
    ss_free(seen);
    return rc;
}

int
ss_input_check_new(const ss_graph_t *g, ss_input_check_t **out,
                   ss_err_t *err)
{
    ss_input_check_t *c;
    int rc = 0;

    *out = NULL;
    if ((c = ss_calloc(1, sizeof *c)) == NULL ||
        (c->rules = ss_calloc((size_t)g->n_inputs + 1,
                              sizeof *c->rules)) == NULL) {
        if (c != NULL)
            ss_free(c);
        return ss_err_set(err, SS_ENOMEM, "no memory for input checks");
    }
    c->g = g;
    for (int i = 0; i < g->n_inputs; i++) {
        rule_t *r = &c->rules[c->n_rules];

        if (!is_int(g->input_info[i].dtype))
            continue;
        if ((rc = walk(g, i, r, err)) < 0)
            goto done;
        if (r->lo != INT64_MIN || r->hi != INT64_MAX)
            c->n_rules++;
    }
    *out = c;
    c = NULL;
done:
    ss_input_check_free(c);
    return rc;
}

void
ss_input_check_free(ss_input_check_t *c)
{
    if (c == NULL)
        return;
    ss_free(c->rules);
    ss_free(c);
}

int
ss_input_check_count(const ss_input_check_t *c)
{
    return c->n_rules;
}

/* Element k of t as int64; *big set for a u64 past INT64_MAX. */
static int64_t
get(const ss_tensor_t *t, int64_t k, bool *big)
{
    *big = false;
    switch (t->dtype) {
    case SS_DTYPE_I8: return ((const int8_t *)t->data)[k];
    case SS_DTYPE_U8: return ((const uint8_t *)t->data)[k];
    case SS_DTYPE_I16: return ((const int16_t *)t->data)[k];
    case SS_DTYPE_U16: return ((const uint16_t *)t->data)[k];
    case SS_DTYPE_I32: return ((const int32_t *)t->data)[k];
    case SS_DTYPE_U32: return ((const uint32_t *)t->data)[k];
    case SS_DTYPE_I64: return ((const int64_t *)t->data)[k];
    case SS_DTYPE_U64: {
        uint64_t u = ((const uint64_t *)t->data)[k];

        *big = u > (uint64_t)INT64_MAX;
        return *big ? INT64_MAX : (int64_t)u;
    }
    default: return 0;
    }
}

/* "[0,3]": the position of flat element k in t. */
static void
position(const ss_tensor_t *t, int64_t k, char *buf, size_t len)
{
    int64_t idx[SS_MAX_DIMS];
    size_t o = 0;

    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->dims[d] > 0 ? k % t->dims[d] : 0;
        k = t->dims[d] > 0 ? k / t->dims[d] : 0;
    }
    o += (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? "," : "",
                              (long long)idx[d]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

int
ss_input_check_run(const ss_input_check_t *c, const ss_tensor_t *inputs,
                   ss_err_t *err)
{
    for (int r = 0; r < c->n_rules; r++) {
        const rule_t *ru = &c->rules[r];
        const ss_tensor_t *t = &inputs[ru->input];
        int64_t n = ss_tensor_numel(t);

        if (t->dtype != c->g->input_info[ru->input].dtype || n < 0 ||
            (n > 0 && t->data == NULL))
            return ss_err_set(err, SS_EINVAL, "input '%s': not the tensor "
                              "the model takes",
                              c->g->input_info[ru->input].name);
        for (int64_t k = 0; k < n; k++) {
            bool big;
            int64_t v = get(t, k, &big);
            char pos[128];

            if (!big && v >= ru->lo && v <= ru->hi)
                continue;
            position(t, k, pos, sizeof pos);
            if (big)
                ss_err_set(err, SS_EINVAL, "input '%s': value %llu at %s "
                           "is out of range: the model takes %lld to %lld "
                           "(node '%s')", c->g->input_info[ru->input].name,
                           (unsigned long long)((const uint64_t *)t->data)[k],
                           pos, (long long)ru->lo, (long long)ru->hi,
                           ru->node);
            else
                ss_err_set(err, SS_EINVAL, "input '%s': value %lld at %s "
                           "is out of range: the model takes %lld to %lld "
                           "(node '%s')", c->g->input_info[ru->input].name,
                           (long long)v, pos, (long long)ru->lo,
                           (long long)ru->hi, ru->node);
            ss__err_scrub(err);
            return SS_EINVAL;
        }
    }
    return 0;
}
