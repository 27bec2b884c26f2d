/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_OPS_MOE_H
#define SS_ENGINE_OPS_MOE_H

/*
 * ONNX Runtime's com.microsoft.MoE contrib op: its geometry, shared by
 * the reference kernel (moe.c) and the plan's sparse MoE pass
 * (engine/plan/pass_moe.c), which runs the same semantics on oneDNN.
 * docs/moe.md states the semantics implemented.
 *
 * THREADS: [any]; no state.
 */

#include "engine/ir/ir.h"

typedef enum {
    SS_ORT_MOE_RELU = 0,        /* the default */
    SS_ORT_MOE_GELU,            /* tanh approximation, as ORT's CPU code */
    SS_ORT_MOE_SILU,
    SS_ORT_MOE_IDENTITY
} ss_ort_moe_act_t;

typedef struct ss_ort_moe {
    int64_t rows, hidden, inter, n_exp, k;
    int legacy;         /* declared fc1 [E, hidden, inter], fc2 [E, inter,
                         * hidden]; the bytes are those of fc1 [E, inter,
                         * hidden], fc2 [E, hidden, inter] either way */
    int norm;           /* normalize_routing_weights */
    ss_ort_moe_act_t act;
    int has_b1, has_b2;
    int has_fc3, has_b3;        /* gated: act(fc1 x) * (fc3 x) */
    int bits;                   /* QMoE: 8 or 4 (uint8 weights, zero
                                 * point 128 or 8, f32 scales); 0: MoE */
    int64_t block;              /* QMoE block_size; 0: a scale per row */
    /* input indices of fc1/fc2/fc3 weights, scales (-1 for MoE), biases */
    int w[3], s[3], b[3];
} ss_ort_moe_t;

/* Reads and checks node n ("com.microsoft.MoE" or "com.microsoft.QMoE")
 * with inputs in (shapes only): 0, or SS_EINVAL / SS_EUNSUPP naming the
 * node (SwiGLU and the sparse mixer are not supported). */
int ss__ops_moe_geom(const ss_node_t *n, const ss_tensor_t *const *in,
                     ss_ort_moe_t *g, ss_err_t *err);

/* Expert weights j (0 fc1, 1 fc2, 2 fc3) as f32 [E, N, K] (N the layer's
 * output features): for QMoE a new dequantized array in *out (ss_free),
 * for MoE *out NULL and *w the input's own data (borrowed). */
int ss__ops_moe_weights(const ss_ort_moe_t *g, const ss_tensor_t *const *in,
                        int j, const float **w, float **out, ss_err_t *err);

#endif
