/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fusion: reference steps → oneDNN primitives, in f32.
 *
 * DESIGN: anchors are the ops oneDNN runs well: MatMul/Gemm with a
 * constant weight (an inner product over the flattened rows), batched
 * MatMul, Conv (with a following BatchNormalization folded into its
 * weights), Softmax, LayerNormalization, the decomposed LayerNorm of
 * opset 13 (plan_fuse_ln.c), pooling, element-wise and binary ops.  From
 * an anchor's output the chain of single-use consumers is absorbed while
 * it maps onto post-ops: bias adds, activations (Relu, LeakyRelu, Gelu and
 * its Erf decomposition, Tanh, Sigmoid, Clip), scalar affine ops, and
 * binary ops with a broadcastable operand (a residual Add is one).  The
 * fused step takes the place of the chain's LAST step, so every operand of
 * a post-op has been computed by then; the chain's inner values are never
 * stored.  Anything a primitive cannot do (oneDNN returns SS_EUNSUPP)
 * stays on the reference kernels.  Constant operands are packed by the
 * primitive at creation.
 *
 * This file is the pass: it offers each reference step, in order, to the
 * anchors of the table below (plan_fuse_ops.c, plan_fuse_ln.c,
 * plan_fuse_move.c); the first
 * that takes it builds the fused step with the fusion toolkit
 * (plan_chain.c).  It runs after the int8 and bf16 passes, on what they
 * left, and before the layout pass.
 *
 * THREADS: runs inside ss_plan_new.
 */

#include "engine/plan/internal.h"

int
ss__plan_fuse(ss_plan_t *p, ss_err_t *err)
{
    static int (*const anchors[])(ss__fz_t *, int, ss_err_t *) = {
        ss__fuse_tapped_eltwise, ss__fuse_ln_decomposed, ss__fuse_linear,
        ss__fuse_conv, ss__fuse_convt,
        ss__fuse_matmul, ss__fuse_softmax, ss__fuse_layernorm,
        ss__fuse_pool, ss__fuse_binary, ss__fuse_transpose,
        ss__fuse_transpose_reorder, ss__fuse_concat,
    };
    ss__fz_t fz;
    int rc = 0;

    if (ss__fz_init(&fz, p) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to fuse");
        goto done;
    }
    for (int s = 0; s < p->n_steps; s++) {
        for (size_t a = 0; a < sizeof(anchors) / sizeof(anchors[0]); a++) {
            if (p->steps[s].kind != SS_STEP_REF)
                break;
            if ((rc = anchors[a](&fz, s, err)) < 0)
                goto done;
            if (rc > 0)
                break;
        }
    }
    rc = 0;
    {
        int kept = 0;

        for (int s = 0; s < p->n_steps; s++)
            if (p->steps[s].kind != 0)
                p->steps[kept++] = p->steps[s];
        p->n_steps = kept;
    }
done:
    ss__fz_close(&fz);
    return rc;
}
