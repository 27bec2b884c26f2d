/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_DTYPE_SIZE_H
#define SS_ENGINE_DTYPE_SIZE_H

/*
 * The one table of element sizes, shared by ss_dtype_size (dtype.c, the
 * engine) and ss__ops_dtype_size (ops/util.c, the kernels).  It is a
 * header because the kernels' library links without the engine and the
 * engine's dtype.c is also built alone (the kserve fuzz target).
 *
 * THREADS: [any]; no state.
 */

#include <stddef.h>

#include "engine/ir/ir.h"

/* Bytes per element; 0 for STRING and unknown types. */
static inline size_t
ss__dtype_size_of(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_F32: case SS_DTYPE_I32: case SS_DTYPE_U32:
        return 4;
    case SS_DTYPE_U8: case SS_DTYPE_I8: case SS_DTYPE_BOOL:
        return 1;
    case SS_DTYPE_U16: case SS_DTYPE_I16: case SS_DTYPE_F16:
    case SS_DTYPE_BF16:
        return 2;
    case SS_DTYPE_I64: case SS_DTYPE_F64: case SS_DTYPE_U64:
        return 8;
    default:
        return 0;
    }
}

#endif
