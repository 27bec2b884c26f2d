/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Binding a graph input to a value: the input becomes a constant, so a
 * plan compiled from the graph is specialised to it (engine/ir/edit.h).
 *
 * DESIGN.  Plans are compiled for given input shapes; inputs that decide
 * shapes by their values (Reshape's shape, Slice's starts, TopK's K, the
 * axes of Squeeze from opset 13, ...) must be constants then.  Models
 * normally carry those as initializers; ONNX's node tests and some
 * exported graphs take them as inputs.  slimserve-infer --bind turns such
 * an input into a constant holding the array given for it, which is what
 * a plan compiled for one call needs.  The graph input goes away (later
 * runs do not give it); its declared type and rank must match the value.
 *
 * THREADS: the graph belongs to the caller's thread until it is planned.
 */
#include <string.h>

#include "engine/ir/edit.h"

int
ss_graph_bind_input(ss_graph_t *g, const char *name, const ss_tensor_t *value,
                    ss_err_t *err)
{
    ss_tensor_t *t = NULL;
    ss_value_t *v;
    size_t bytes;
    int i, rc = 0;

    for (i = 0; i < g->n_inputs; i++)
        if (strcmp(g->values[g->inputs[i]].name, name) == 0)
            break;
    if (i == g->n_inputs) {
        rc = ss_err_set(err, SS_EINVAL, "%s: no input '%s' to bind",
                        g->source, name);
        goto done;
    }
    v = &g->values[g->inputs[i]];
    if (value->dtype != v->dtype || (v->ndim >= 0 && value->ndim != v->ndim)) {
        rc = ss_err_set(err, SS_EINVAL, "%s: input '%s' is %s of rank %d; "
                        "the value to bind is %s of rank %d", g->source, name,
                        ss__dtype_onnx_name(v->dtype), v->ndim,
                        ss__dtype_onnx_name(value->dtype), value->ndim);
        goto done;
    }
    if ((rc = ss__tensor_new(value->dtype, value->ndim, value->dims, &t,
                             err)) < 0
        || (rc = ss__tensor_bytes(t, &bytes)) < 0) {
        if (rc == -1)
            rc = ss_err_set(err, SS_EINVAL, "%s: input '%s': bad dims",
                            g->source, name);
        goto done;
    }
    if (bytes > 0)
        memcpy(t->data, value->data, bytes);
    v->constant = t;
    t = NULL;
    v->ndim = value->ndim;
    memcpy(v->dims, value->dims, sizeof(v->dims));
    g->weight_bytes += bytes;
    /* the infos borrow value names: shifting the arrays moves nothing */
    memmove(&g->inputs[i], &g->inputs[i + 1],
            sizeof(*g->inputs) * (size_t)(g->n_inputs - i - 1));
    memmove(&g->input_info[i], &g->input_info[i + 1],
            sizeof(*g->input_info) * (size_t)(g->n_inputs - i - 1));
    g->n_inputs--;
done:
    ss__tensor_free(t);
    return rc;
}
