/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Op versions: which version of each default-domain op a model's opset
 * means, and which of them the engine runs.
 *
 * DESIGN.  A node in a model importing opset N runs the op's newest
 * version whose since_version is <= N.  The kernels take the opset and
 * handle each version difference they meet at opsets 7 to 17 themselves
 * (axes attributes that became inputs in 13, Clip's bounds in 11, Split's
 * sizes, Softmax's 2-D coercion before 13, ...), so every opset from 7 is
 * accepted as a whole.  Below 7 the definitions differ in ways the kernels
 * do not know (the "broadcast" and "axis" attributes of binary ops,
 * consumed_inputs, Dropout's is_test), so a node there is accepted only
 * when its version is the one opset 7 has too: the same definition.
 * Everything else is refused naming the op, its version and the node.
 *
 * Training-mode computations are refused, never run as inference: Dropout
 * with a training_mode input that is not a constant false (a run-time
 * input may be true) unless its ratio is a constant 0 (the identity then
 * too), BatchNormalization asking for its running
 * statistics outputs (training mode before version 14).
 *
 * The table below lists the since_version of every default-domain op up to
 * opset 17, as ONNX 1.12's schemas give them (onnx.defs.
 * get_all_schemas_with_history()); an op not in it is not checked here.
 *
 * THREADS: [any]; the table is constant.
 */

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "engine/ir/internal.h"

#define MAX_OPSET 17
#define MAX_VERSIONS 6

typedef struct {
    const char *op;
    unsigned char since[MAX_VERSIONS];  /* ascending, 0-terminated */
} op_versions_t;

static const op_versions_t versions[] = {
    { "Abs", { 1, 6, 13 } },
    { "Acos", { 7 } },
    { "Acosh", { 9 } },
    { "Add", { 1, 6, 7, 13, 14 } },
    { "And", { 1, 7 } },
    { "ArgMax", { 1, 11, 12, 13 } },
    { "ArgMin", { 1, 11, 12, 13 } },
    { "Asin", { 7 } },
    { "Asinh", { 9 } },
    { "Atan", { 7 } },
    { "Atanh", { 9 } },
    { "AveragePool", { 1, 7, 10, 11 } },
    { "BatchNormalization", { 1, 6, 7, 9, 14, 15 } },
    { "Bernoulli", { 15 } },
    { "BitShift", { 11 } },
    { "BlackmanWindow", { 17 } },
    { "Cast", { 1, 6, 9, 13 } },
    { "CastLike", { 15 } },
    { "Ceil", { 1, 6, 13 } },
    { "Celu", { 12 } },
    { "Clip", { 1, 6, 11, 12, 13 } },
    { "Compress", { 9, 11 } },
    { "Concat", { 1, 4, 11, 13 } },
    { "ConcatFromSequence", { 11 } },
    { "Constant", { 1, 9, 11, 12, 13 } },
    { "ConstantOfShape", { 9 } },
    { "Conv", { 1, 11 } },
    { "ConvInteger", { 10 } },
    { "ConvTranspose", { 1, 11 } },
    { "Cos", { 7 } },
    { "Cosh", { 9 } },
    { "CumSum", { 11, 14 } },
    { "DFT", { 17 } },
    { "DepthToSpace", { 1, 11, 13 } },
    { "DequantizeLinear", { 10, 13 } },
    { "Det", { 11 } },
    { "Div", { 1, 6, 7, 13, 14 } },
    { "Dropout", { 1, 6, 7, 10, 12, 13 } },
    { "DynamicQuantizeLinear", { 11 } },
    { "Einsum", { 12 } },
    { "Elu", { 1, 6 } },
    { "Equal", { 1, 7, 11, 13 } },
    { "Erf", { 9, 13 } },
    { "Exp", { 1, 6, 13 } },
    { "Expand", { 8, 13 } },
    { "EyeLike", { 9 } },
    { "Flatten", { 1, 9, 11, 13 } },
    { "Floor", { 1, 6, 13 } },
    { "GRU", { 1, 3, 7, 14 } },
    { "Gather", { 1, 11, 13 } },
    { "GatherElements", { 11, 13 } },
    { "GatherND", { 11, 12, 13 } },
    { "Gemm", { 1, 6, 7, 9, 11, 13 } },
    { "GlobalAveragePool", { 1 } },
    { "GlobalLpPool", { 1, 2 } },
    { "GlobalMaxPool", { 1 } },
    { "Greater", { 1, 7, 9, 13 } },
    { "GreaterOrEqual", { 12, 16 } },
    { "GridSample", { 16 } },
    { "HammingWindow", { 17 } },
    { "HannWindow", { 17 } },
    { "HardSigmoid", { 1, 6 } },
    { "HardSwish", { 14 } },
    { "Hardmax", { 1, 11, 13 } },
    { "Identity", { 1, 13, 14, 16 } },
    { "If", { 1, 11, 13, 16 } },
    { "InstanceNormalization", { 1, 6 } },
    { "IsInf", { 10 } },
    { "IsNaN", { 9, 13 } },
    { "LRN", { 1, 13 } },
    { "LSTM", { 1, 7, 14 } },
    { "LayerNormalization", { 17 } },
    { "LeakyRelu", { 1, 6, 16 } },
    { "Less", { 1, 7, 9, 13 } },
    { "LessOrEqual", { 12, 16 } },
    { "Log", { 1, 6, 13 } },
    { "LogSoftmax", { 1, 11, 13 } },
    { "Loop", { 1, 11, 13, 16 } },
    { "LpNormalization", { 1 } },
    { "LpPool", { 1, 2, 11 } },
    { "MatMul", { 1, 9, 13 } },
    { "MatMulInteger", { 10 } },
    { "Max", { 1, 6, 8, 12, 13 } },
    { "MaxPool", { 1, 8, 10, 11, 12 } },
    { "MaxRoiPool", { 1 } },
    { "MaxUnpool", { 9, 11 } },
    { "Mean", { 1, 6, 8, 13 } },
    { "MeanVarianceNormalization", { 9, 13 } },
    { "MelWeightMatrix", { 17 } },
    { "Min", { 1, 6, 8, 12, 13 } },
    { "Mod", { 10, 13 } },
    { "Mul", { 1, 6, 7, 13, 14 } },
    { "Multinomial", { 7 } },
    { "Neg", { 1, 6, 13 } },
    { "NegativeLogLikelihoodLoss", { 12, 13 } },
    { "NonMaxSuppression", { 10, 11 } },
    { "NonZero", { 9, 13 } },
    { "Not", { 1 } },
    { "OneHot", { 9, 11 } },
    { "Optional", { 15 } },
    { "OptionalGetElement", { 15 } },
    { "OptionalHasElement", { 15 } },
    { "Or", { 1, 7 } },
    { "PRelu", { 1, 6, 7, 9, 16 } },
    { "Pad", { 1, 2, 11, 13 } },
    { "Pow", { 1, 7, 12, 13, 15 } },
    { "QLinearConv", { 10 } },
    { "QLinearMatMul", { 10 } },
    { "QuantizeLinear", { 10, 13 } },
    { "RNN", { 1, 7, 14 } },
    { "RandomNormal", { 1 } },
    { "RandomNormalLike", { 1 } },
    { "RandomUniform", { 1 } },
    { "RandomUniformLike", { 1 } },
    { "Range", { 11 } },
    { "Reciprocal", { 1, 6, 13 } },
    { "ReduceL1", { 1, 11, 13 } },
    { "ReduceL2", { 1, 11, 13 } },
    { "ReduceLogSum", { 1, 11, 13 } },
    { "ReduceLogSumExp", { 1, 11, 13 } },
    { "ReduceMax", { 1, 11, 12, 13 } },
    { "ReduceMean", { 1, 11, 13 } },
    { "ReduceMin", { 1, 11, 12, 13 } },
    { "ReduceProd", { 1, 11, 13 } },
    { "ReduceSum", { 1, 11, 13 } },
    { "ReduceSumSquare", { 1, 11, 13 } },
    { "Relu", { 1, 6, 13, 14 } },
    { "Reshape", { 1, 5, 13, 14 } },
    { "Resize", { 10, 11, 13 } },
    { "ReverseSequence", { 10 } },
    { "RoiAlign", { 10, 16 } },
    { "Round", { 11 } },
    { "STFT", { 17 } },
    { "Scan", { 8, 9, 11, 16 } },
    { "Scatter", { 9, 11 } },
    { "ScatterElements", { 11, 13, 16 } },
    { "ScatterND", { 11, 13, 16 } },
    { "Selu", { 1, 6 } },
    { "SequenceAt", { 11 } },
    { "SequenceConstruct", { 11 } },
    { "SequenceEmpty", { 11 } },
    { "SequenceErase", { 11 } },
    { "SequenceInsert", { 11 } },
    { "SequenceLength", { 11 } },
    { "SequenceMap", { 17 } },
    { "Shape", { 1, 13, 15 } },
    { "Shrink", { 9 } },
    { "Sigmoid", { 1, 6, 13 } },
    { "Sign", { 9, 13 } },
    { "Sin", { 7 } },
    { "Sinh", { 9 } },
    { "Size", { 1, 13 } },
    { "Slice", { 1, 10, 11, 13 } },
    { "Softmax", { 1, 11, 13 } },
    { "SoftmaxCrossEntropyLoss", { 12, 13 } },
    { "Softplus", { 1 } },
    { "Softsign", { 1 } },
    { "SpaceToDepth", { 1, 13 } },
    { "Split", { 1, 2, 11, 13 } },
    { "SplitToSequence", { 11 } },
    { "Sqrt", { 1, 6, 13 } },
    { "Squeeze", { 1, 11, 13 } },
    { "StringNormalizer", { 10 } },
    { "Sub", { 1, 6, 7, 13, 14 } },
    { "Sum", { 1, 6, 8, 13 } },
    { "Tan", { 7 } },
    { "Tanh", { 1, 6, 13 } },
    { "TfIdfVectorizer", { 9 } },
    { "ThresholdedRelu", { 10 } },
    { "Tile", { 1, 6, 13 } },
    { "TopK", { 1, 10, 11 } },
    { "Transpose", { 1, 13 } },
    { "Trilu", { 14 } },
    { "Unique", { 11 } },
    { "Unsqueeze", { 1, 11, 13 } },
    { "Upsample", { 1, 7, 9, 10 } },
    { "Where", { 9, 16 } },
    { "Xor", { 1, 7 } },
};

static const op_versions_t *
find(const char *op)
{
    size_t lo = 0, hi = sizeof(versions) / sizeof(versions[0]);

    while (lo < hi) {       /* the table is sorted by name */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(op, versions[mid].op);

        if (c == 0)
            return &versions[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int
ss__ir_op_version(const char *op_type, int opset)
{
    const op_versions_t *v = find(op_type);
    int best = 0;

    if (v == NULL)
        return -1;
    for (int i = 0; i < MAX_VERSIONS && v->since[i] != 0; i++)
        if (v->since[i] <= opset)
            best = v->since[i];
    return best;
}

static const char *
label(const ss_graph_t *g, const ss_node_t *n, char *buf, size_t len)
{
    if (n->name != NULL && n->name[0] != '\0')
        snprintf(buf, len, "'%s'", n->name);
    else if (n->n_outputs > 0 && n->outputs[0] >= 0)
        snprintf(buf, len, "writing '%s'", g->values[n->outputs[0]].name);
    else
        snprintf(buf, len, "?");
    return buf;
}

/* A constant whose every element is zero (false). */
static bool
const_false(const ss_graph_t *g, int id)
{
    const ss_tensor_t *t = id >= 0 ? g->values[id].constant : NULL;
    int64_t numel;
    size_t bytes;

    if (t == NULL || ss__tensor_bytes(t, &bytes) < 0)
        return false;
    numel = ss_tensor_numel(t);
    if (numel != 1 || t->data == NULL)
        return false;
    for (size_t i = 0; i < bytes; i++)
        if (((const unsigned char *)t->data)[i] != 0)
            return false;
    return true;
}

static bool
named_output(const ss_node_t *n, int k)
{
    return n->n_outputs > k && n->outputs[k] >= 0;
}

/* Refuses what a node's version asks for that the engine does not run. */
static int
check_node(const ss_graph_t *g, const ss_node_t *n, ss_err_t *err)
{
    char lb[96];
    int v = ss__ir_op_version(n->op_type, g->opset);
    int v7 = ss__ir_op_version(n->op_type, g->opset < 7 ? 7 : g->opset);

    if (v < 0 || (n->domain != NULL && n->domain[0] != '\0'
                  && strcmp(n->domain, "ai.onnx") != 0))
        return 0;
    if (v == 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: node %s (%s): %s is not "
                          "part of opset %d (it came in version %d)",
                          g->source, label(g, n, lb, sizeof(lb)),
                          n->op_type, n->op_type, g->opset, v7);
    if (v != v7)
        return ss_err_set(err, SS_EUNSUPP, "%s: node %s (%s version %d, "
                          "opset %d): this version is not supported; the "
                          "engine runs %s from version %d (opset 7)",
                          g->source, label(g, n, lb, sizeof(lb)),
                          n->op_type, v, g->opset, n->op_type, v7);
    /* training_mode with a constant ratio of 0 drops nothing and scales
     * by 1/(1-0): the identity, as in inference.  torchvision 0.14's
     * swin_t calls F.dropout(attn, p=0.0) without training=, so every
     * export of it at opset 12 or later has such nodes. */
    if (strcmp(n->op_type, "Dropout") == 0 && v >= 12
        && n->n_inputs > 2 && n->inputs[2] >= 0
        && !const_false(g, n->inputs[2])
        && !(n->inputs[1] >= 0 && const_false(g, n->inputs[1])))
        return ss_err_set(err, SS_EUNSUPP, "%s: node %s (Dropout version "
                          "%d, opset %d): training_mode is %s; training-"
                          "mode Dropout is not supported (inference only)",
                          g->source, label(g, n, lb, sizeof(lb)), v,
                          g->opset, g->values[n->inputs[2]].constant != NULL
                          ? "true" : "a run-time input, which may be true");
    if (strcmp(n->op_type, "BatchNormalization") == 0
        && (named_output(n, 1) || named_output(n, 2)
            || named_output(n, 3) || named_output(n, 4)))
        return ss_err_set(err, SS_EUNSUPP, "%s: node %s "
                          "(BatchNormalization version %d, opset %d): the "
                          "running statistics outputs are training mode, "
                          "which is not supported (inference only)",
                          g->source, label(g, n, lb, sizeof(lb)), v,
                          g->opset);
    return 0;
}

int
ss__ir_check_versions(const ss_graph_t *g, ss_err_t *err)
{
    int rc = 0;

    if (g->opset < 1 || g->opset > MAX_OPSET)
        return ss_err_set(err, SS_EUNSUPP, "%s: opset %d of the default ONNX "
                          "domain is not supported (1 to %d are)", g->source,
                          g->opset, MAX_OPSET);
    for (int i = 0; i < g->n_nodes && rc == 0; i++)
        rc = check_node(g, &g->nodes[i], err);
    return rc;
}
