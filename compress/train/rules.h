/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the gradient rule files share (internal to compress/train): the
 * emitters of rules.c's table, by op family, and the helpers more than one
 * family uses.  Conventions of a rule: rules.c.
 *
 *   rules.c        helpers (broadcast steps, dx targets, copies), views,
 *                  the table                                     ss__r_*
 *   rules_elt.c    unary (Clip, HardSigmoid, HardSwish too), binary,
 *                  Where, ReduceMean/Sum, Expand
 *   rules_mat.c    Gemm, MatMul; oneDNN matmul emission, bf16 primitives
 *   rules_norm.c   Softmax, LogSoftmax, LayerNorm, BatchNorm
 *   rules_conv.c   Conv (dense and blocked), pooling
 *   rules_shape.c  Concat, Slice, Pad, Transpose, Gather
 *   rules_q.c      QuantizeLinear, DequantizeLinear (internal.h)
 *
 * THREADS: [worker], build time only.
 */

#ifndef SS_COMPRESS_TRAIN_RULES_H
#define SS_COMPRESS_TRAIN_RULES_H

#include <string.h>

#include "compress/train/internal.h"

static inline const ss__tv_t *
V(const ss__tb_t *b, int v)
{
    return &b->t->tv[v];
}

static inline void
step_init(ss__step_t *s, ss__kern_fn fn, const char *what,
          const ss_node_t *n)
{
    memset(s, 0, sizeof(*s));
    s->fn = fn;
    s->what = what;
    s->node = n;
}

static inline int64_t
prod(const int64_t *d, int from, int to)
{
    int64_t p = 1;

    for (int i = from; i < to; i++)
        p *= d[i];
    return p;
}

/* ---- helpers (rules.c) --------------------------------------------------- */

/* s->aux for k_binary / k_binary_bwd / k_reduce / k_expand. */
int ss__r_bc_aux(ss__step_t *s, int fnd, const int64_t *fdims, int n,
                 const int *nd, const int64_t *const *dims, ss_err_t *err);
/* Sums src (full shape fdims) into dst of shape ddims, times scale. */
int ss__r_reduce(ss__tb_t *b, const ss_node_t *n, int src, int fnd,
                 const int64_t *fdims, int dst, int dnd,
                 const int64_t *ddims, float scale, int acc, ss_err_t *err);
/* dst (full shape fdims) = broadcast(src of shape sdims) * scale. */
int ss__r_expand(ss__tb_t *b, const ss_node_t *n, int src, int snd,
                 const int64_t *sdims, int dst, int fnd,
                 const int64_t *fdims, float scale, int acc, ss_err_t *err);
/* dst (+)= src, same shape. */
int ss__r_copy(ss__tb_t *b, const ss_node_t *n, int src, int dst, int acc,
               ss_err_t *err);
/* The start of a backward that writes input 0's gradient from output
 * 0's: 1 with *gy, *gx and *acc set, or 0 when there is nothing to emit,
 * or a negative code. */
int ss__r_dx_target(ss__tb_t *b, const ss_node_t *n, int *gy, int *gx,
                    int *acc, ss_err_t *err);
/* A step reading dy as in[0] and writing (acc: adding) dx as out[0]. */
void ss__r_dx_step(ss__step_t *s, ss__kern_fn fn, const char *what,
                   const ss_node_t *n, int gy, int gx, int acc);
/* Whether value x's bytes are a parameter's. */
bool ss__r_param_root(const ss__tb_t *b, int x);

/* ---- helpers (rules_mat.c) ----------------------------------------------- */

/* A product's bf16 primitive, or *out = NULL and the descriptor's dtype
 * F32 when the trainer computes in f32 or oneDNN has no native kernel. */
int ss__r_low_prim(ss__tb_t *b, ss_dnn_matmul_desc_t *d,
                   ss_dnn_conv_desc_t *cd, ss_dnn_conv_pass_t pass, int bias,
                   ss_dnn_prim_t **out, ss_err_t *err);

/* ---- helpers (rules_norm.c) ---------------------------------------------- */

/* Whether Softmax node n writes its output in bf16 (mixed precision). */
int ss__r_softmax_y16(const ss__tb_t *b, const ss_node_t *n);

/* ---- the emitters of the table (ss__rule_t.fwd / .bwd) ------------------ */

#define SS__R_EMIT(name) \
    int name(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)

SS__R_EMIT(ss__fwd_unary);
SS__R_EMIT(ss__bwd_unary);
SS__R_EMIT(ss__fwd_binary);
SS__R_EMIT(ss__bwd_binary);
SS__R_EMIT(ss__bwd_where);
SS__R_EMIT(ss__fwd_reduce);
SS__R_EMIT(ss__bwd_reduce);
SS__R_EMIT(ss__fwd_expand);
SS__R_EMIT(ss__bwd_expand);
SS__R_EMIT(ss__fwd_gemm);
SS__R_EMIT(ss__bwd_gemm);
SS__R_EMIT(ss__fwd_matmul);
SS__R_EMIT(ss__bwd_matmul);
SS__R_EMIT(ss__fwd_softmax);
SS__R_EMIT(ss__bwd_softmax);
SS__R_EMIT(ss__fwd_layernorm);
SS__R_EMIT(ss__bwd_layernorm);
SS__R_EMIT(ss__fwd_batchnorm);
SS__R_EMIT(ss__bwd_batchnorm);
SS__R_EMIT(ss__fwd_conv);
SS__R_EMIT(ss__bwd_conv);
SS__R_EMIT(ss__fwd_pool);
SS__R_EMIT(ss__bwd_pool);
SS__R_EMIT(ss__bwd_concat);
SS__R_EMIT(ss__bwd_slice);
SS__R_EMIT(ss__bwd_pad);
SS__R_EMIT(ss__fwd_transpose);
SS__R_EMIT(ss__bwd_transpose);
SS__R_EMIT(ss__fwd_gather);
SS__R_EMIT(ss__bwd_gather);

#undef SS__R_EMIT

#endif
