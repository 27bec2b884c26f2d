/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ranks of a graph's values without a plan (ss__ir_rank).
 *
 * DESIGN.  The IR knows the rank of graph inputs, outputs and constants
 * only (intermediate value_info is not read); a plan knows every shape,
 * but for concrete input dims.  Writing a graph at another opset
 * (export.c) needs the rank where a definition depends on it (Softmax's
 * 2-D coercion before 13), so it is derived here from the producers, for
 * the ops whose output rank follows from their inputs' ranks and
 * constants: the same as input 0 (elementwise, normalisations, Softmax,
 * Transpose, Conv, pooling, Slice, Q/DQ, ...), the largest of the inputs
 * (broadcasting binary ops, Where, MatMul of two >= 2-D operands; Expand
 * with its shape's length), any input's (Concat), the
 * length of Reshape's shape (a constant, or the Concat of Unsqueeze'd
 * scalars and Shapes exporters write), input 0's rank plus the axes
 * (Unsqueeze) or less them (Squeeze with axes, Reduce* with keepdims 0),
 * 2 (Gemm, Flatten), 1 (Shape), Gather's r + q - 1.  Anything else is unknown (-1).
 * A memo per value keeps the walk linear in the graph.
 *
 * THREADS: [any]; reads the graph only.
 */
#include <string.h>

#include "engine/ir/internal.h"

enum { SAME, MAX, UNSQ, SQ, REDUCE, TWO, GATHER, RESHAPE, MATMUL, ANY,
       EXPAND, ONE };

static const struct {
    const char *op;
    int rule;
} rules[] = {
    { "Abs", SAME }, { "Add", MAX }, { "And", MAX },
    { "AveragePool", SAME }, { "BatchNormalization", SAME },
    { "Cast", SAME }, { "Ceil", SAME }, { "Clip", SAME }, { "Concat", ANY },
    { "Conv", SAME }, { "ConvTranspose", SAME },
    { "DequantizeLinear", SAME }, { "Div", MAX }, { "Dropout", SAME },
    { "Elu", SAME }, { "Equal", MAX }, { "Erf", SAME }, { "Exp", SAME },
    { "Expand", EXPAND },
    { "Flatten", TWO }, { "Floor", SAME }, { "Gather", GATHER },
    { "Gemm", TWO }, { "GlobalAveragePool", SAME },
    { "GlobalMaxPool", SAME }, { "Greater", MAX }, { "HardSigmoid", SAME },
    { "HardSwish", SAME }, { "Hardmax", SAME }, { "Identity", SAME },
    { "InstanceNormalization", SAME }, { "LayerNormalization", SAME },
    { "LeakyRelu", SAME }, { "Less", MAX }, { "Log", SAME },
    { "LogSoftmax", SAME }, { "MatMul", MATMUL }, { "Max", MAX },
    { "MaxPool", SAME }, { "Min", MAX }, { "Mul", MAX }, { "Neg", SAME },
    { "Not", SAME }, { "Or", MAX }, { "Pad", SAME }, { "Pow", MAX },
    { "PRelu", MAX }, { "QuantizeLinear", SAME }, { "Reciprocal", SAME },
    { "ReduceL2", REDUCE }, { "ReduceMax", REDUCE },
    { "ReduceMean", REDUCE }, { "ReduceMin", REDUCE },
    { "ReduceProd", REDUCE }, { "ReduceSum", REDUCE }, { "Relu", SAME },
    { "Reshape", RESHAPE }, { "Resize", SAME }, { "Shape", ONE },
    { "Sigmoid", SAME },
    { "Sign", SAME }, { "Sin", SAME }, { "Slice", SAME }, { "Softmax", SAME },
    { "Softplus", SAME }, { "Split", SAME }, { "Sqrt", SAME },
    { "Squeeze", SQ }, { "Sub", MAX }, { "Sum", MAX }, { "Tanh", SAME },
    { "Tile", SAME }, { "Transpose", SAME }, { "Unsqueeze", UNSQ },
    { "Where", MAX },
};

static int
rule_of(const char *op)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rules[i].op, op) == 0)
            return rules[i].rule;
    return -1;
}

/* The number of axes n names: its attribute before 13, else the constant
 * input 1 (Unsqueeze, Squeeze, ReduceSum at 13); -1 when unknown. */
static int
n_axes(const ss_graph_t *g, const ss_node_t *n)
{
    const int64_t *v;
    int k = ss__attr_ints(n, "axes", &v);

    if (k >= 0)
        return k;
    if (n->n_inputs > 1 && n->inputs[1] >= 0
        && g->values[n->inputs[1]].constant != NULL)
        return (int)ss_tensor_numel(g->values[n->inputs[1]].constant);
    return -1;
}

static int
known(const ss_graph_t *g, int id)
{
    const ss_value_t *v = &g->values[id];

    if (v->ndim >= 0)
        return v->ndim;
    if (v->constant != NULL)
        return v->constant->ndim;
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == id && g->output_info[i].ndim >= 0)
            return g->output_info[i].ndim;
    return -1;
}

/* The length of the 1-D value id (a shape vector: Reshape's second
 * input as exporters build it, Concat of Unsqueeze'd sizes and Shape
 * slices), or -1. */
static int
length(const ss_graph_t *g, int id, int *memo, int depth)
{
    const ss_node_t *n;
    int sum = 0;

    if (id < 0 || depth > 8)
        return -1;
    if (g->values[id].constant != NULL)
        return g->values[id].constant->ndim == 1
               ? (int)ss_tensor_numel(g->values[id].constant) : -1;
    if (g->values[id].producer < 0)
        return -1;
    n = &g->nodes[g->values[id].producer];
    if (n->n_inputs < 1 || n->inputs[0] < 0)
        return -1;
    if (strcmp(n->op_type, "Concat") == 0) {
        for (int i = 0; i < n->n_inputs; i++) {
            int k = length(g, n->inputs[i], memo, depth + 1);

            if (k < 0)
                return -1;
            sum += k;
        }
        return sum;
    }
    if (strcmp(n->op_type, "Cast") == 0
        || strcmp(n->op_type, "Identity") == 0)
        return length(g, n->inputs[0], memo, depth + 1);
    if (strcmp(n->op_type, "Unsqueeze") == 0)
        return ss__ir_rank(g, n->inputs[0], memo) == 0 ? n_axes(g, n) : -1;
    if (strcmp(n->op_type, "Shape") == 0 && n->n_attrs == 0)
        return ss__ir_rank(g, n->inputs[0], memo);
    return -1;
}

int
ss__ir_rank(const ss_graph_t *g, int id, int *memo)
{
    const ss_node_t *n;
    int r = known(g, id), r0, k, rule;

    if (r >= 0 || id < 0)
        return r;
    if (memo[id] != -2)
        return memo[id];
    memo[id] = -1;      /* also what a cycle would read */
    if (g->values[id].producer < 0)
        return -1;
    n = &g->nodes[g->values[id].producer];
    if ((rule = rule_of(n->op_type)) < 0 || n->n_inputs < 1
        || n->inputs[0] < 0)
        return -1;
    if (rule == TWO || rule == ONE)
        return memo[id] = rule == TWO ? 2 : 1;
    if (rule == RESHAPE)
        return memo[id] = n->n_inputs > 1
                          ? length(g, n->inputs[1], memo, 0) : -1;
    if (rule == ANY) {      /* Concat: all inputs have one rank */
        for (int i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] >= 0
                && (r = ss__ir_rank(g, n->inputs[i], memo)) >= 0)
                return memo[id] = r;
        return -1;
    }
    if ((r0 = ss__ir_rank(g, n->inputs[0], memo)) < 0)
        return -1;
    switch (rule) {
    case SAME:
        r = r0;
        break;
    case MAX:
    case MATMUL:
        r = r0;
        for (int i = 1; i < n->n_inputs; i++) {
            int ri = n->inputs[i] >= 0 ? ss__ir_rank(g, n->inputs[i], memo)
                                       : -1;

            if (ri < 0 || (rule == MATMUL && (ri < 2 || r0 < 2)))
                return -1;
            r = ri > r ? ri : r;
        }
        break;
    case UNSQ:
        r = (k = n_axes(g, n)) < 0 ? -1 : r0 + k;
        break;
    case SQ:
        r = (k = n_axes(g, n)) <= 0 ? -1 : r0 - k;
        break;
    case REDUCE:
        if (ss__attr_int(n, "keepdims", 1) != 0)
            r = r0;
        else
            r = (k = n_axes(g, n)) <= 0 ? -1 : r0 - k;
        break;
    case EXPAND:
        k = n->n_inputs > 1 ? length(g, n->inputs[1], memo, 0) : -1;
        r = k < 0 ? -1 : k > r0 ? k : r0;
        break;
    case GATHER:
        k = n->n_inputs > 1 && n->inputs[1] >= 0
            ? ss__ir_rank(g, n->inputs[1], memo) : -1;
        r = k < 0 ? -1 : r0 + k - 1;
        break;
    default:
        r = -1;
    }
    return memo[id] = r;
}
