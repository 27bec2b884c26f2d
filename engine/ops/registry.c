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
    ss__ops_moe,
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
