/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The op registry: maps an ONNX op_type (default domain) to its reference
 * kernel.  Each kernel file exports a table ended by a NULL op_type; the
 * look-up walks them in order.  About sixty names: a linear scan with
 * strcmp costs less than a plan compile notices.
 *
 * THREADS: [any]; the tables are constant.
 */
#include "engine/ops/ops.h"

#include <string.h>

static const ss_op_t *const tables[] = {
    ss__ops_unary,
    ss__ops_binary,
    ss__ops_matmul,
    ss__ops_conv,
    ss__ops_pool,
    ss__ops_norm,
    ss__ops_shape,
    ss__ops_tensor,
    ss__ops_reduce,
    ss__ops_quant,
    ss__ops_math,
    ss__ops_index,
    ss__ops_reduce_more,
    ss__ops_layout,
    ss__ops_resize,
    ss__ops_misc,
    ss__ops_nd,
    ss__ops_convtranspose,
    ss__ops_rnn,
    ss__ops_gridsample,
    ss__ops_nms,
    ss__ops_unique,
    ss__ops_einsum,
    ss__ops_moe,
    ss__ops_roi,
    ss__ops_spectral,
    NULL
};

const ss_op_t *
ss__op_find(const char *op_type)
{
    if (op_type == NULL)
        return NULL;
    for (size_t t = 0; tables[t] != NULL; t++)
        for (const ss_op_t *op = tables[t]; op->op_type != NULL; op++)
            if (strcmp(op->op_type, op_type) == 0)
                return op;
    return NULL;
}

/* Inputs whose values the op's infer reads, per op and from which opset
 * (ss__op_value_inputs).  Kept next to the tables: an op whose infer
 * starts reading an input's data (ss__ops_read_ints, read_scalar, a
 * data != NULL test) must be listed here, or a model feeding it from a
 * graph input fails to compile with "must be a constant" instead of
 * getting a plan specialised to the value. */
static const struct {
    const char *op_type;
    int since;                  /* the opset the inputs became inputs */
    unsigned mask;              /* bit k: input k */
} value_inputs[] = {
    { "Reshape", 5, 1u << 1 },
    { "Expand", 8, 1u << 1 },
    { "Tile", 6, 1u << 1 },
    { "ConstantOfShape", 9, 1u << 0 },
    { "Range", 11, 7u },
    { "Slice", 10, 0xfu << 1 },        /* starts, ends, axes, steps */
    { "Squeeze", 13, 1u << 1 },
    { "Unsqueeze", 13, 1u << 1 },
    { "Split", 13, 1u << 1 },
    { "ReduceSum", 13, 1u << 1 },
    { "TopK", 10, 1u << 1 },
    { "OneHot", 9, 1u << 1 },
    { "Pad", 11, 1u << 1 },
    { "Resize", 10, 0xfu << 1 },       /* (10: scales) roi, scales, sizes */
    { "Upsample", 9, 1u << 1 },
    { "NonZero", 9, 1u << 0 },
    { "Compress", 9, 1u << 1 },
    { "Unique", 11, 1u << 0 },
    { "NonMaxSuppression", 10, 0x1fu },
    { "MaxUnpool", 9, 1u << 2 },       /* output_shape */
    { "DFT", 17, 1u << 1 },            /* dft_length */
    { "STFT", 17, (1u << 1) | (1u << 3) }, /* frame_step, frame_length */
    { "MelWeightMatrix", 17, 3u },     /* num_mel_bins, dft_length */
    { "HannWindow", 17, 1u << 0 },
    { "HammingWindow", 17, 1u << 0 },
    { "BlackmanWindow", 17, 1u << 0 },
};

unsigned
ss__op_value_inputs(const ss_node_t *n, int opset)
{
    if (n->domain != NULL && n->domain[0] != '\0')
        return 0;
    /* A Loop's trip count and condition decide how many rows its scan
     * outputs get (engine/plan/plan_ctrl.c); without scan outputs the
     * loop runs them at run time. */
    if (strcmp(n->op_type, "Loop") == 0)
        return n->n_outputs > n->n_inputs - 2 ? 3u : 0u;
    for (size_t i = 0; i < sizeof(value_inputs) / sizeof(value_inputs[0]);
         i++)
        if (strcmp(value_inputs[i].op_type, n->op_type) == 0)
            return opset >= value_inputs[i].since ? value_inputs[i].mask : 0;
    return 0;
}
