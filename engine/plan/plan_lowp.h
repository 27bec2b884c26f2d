/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_LOWP_H
#define SS_ENGINE_PLAN_LOWP_H

/*
 * Shared by the low-precision passes (plan_lowp.c: geometry, new values,
 * inserted steps; plan_qdq.c: int8; plan_bf16.c: bf16).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include "engine/dnnl/dnnl_q.h"
#include "engine/plan/plan_fuse_int.h"

static inline const ss_tensor_t *
T(const ss_plan_t *p, int v)
{
    return &p->vals[v].t;
}

static inline int
cst(const ss_plan_t *p, int v, ss_dtype_t dt)
{
    return ss__fz_is_const(p, v) && T(p, v)->dtype == dt;
}

/* The next step is Add of a constant [N]: a bias (absorbed into c). */
typedef struct lin {
    int64_t m, k, n;
    int w_nk;
    int wv;                 /* the f32 weight value */
    const float *bias;      /* real units, or NULL */
    float *owned;           /* Gemm beta != 1: scaled copy */
} ss__lp_lin_t;

/* MatMul/Gemm by a constant 2-D weight, f32 activations: fills L and
 * starts chain c (with a following bias Add taken); 1 when it applies,
 * 0 when not, < 0 on errors.  L->owned is the caller's to free. */
int ss__lp_linear_shape(ss__fz_t *fz, int s, ss__lp_lin_t *L,
                        ss__chain_t *c, ss_err_t *err);
/* Conv geometry from the node into d; 0 when it is not a plain 2-D
 * Conv with constant f32 weights. */
int ss__lp_conv_shape(const ss_plan_t *p, const ss_step_t *st,
                      ss_dnn_qconv_desc_t *d);
/* The chain's last step: where the fused step lands. */
int ss__lp_chain_last(const ss__chain_t *c);
/* Whether v is (or is viewed by) a graph output. */
int ss__lp_is_graph_out(const ss_plan_t *p, int v);
/* A new plan value: v's shape in type dt, in the arena, stored in layout
 * l.  Returns its id or a negative code. */
int ss__lp_add_pval(ss_plan_t *p, int v, ss_dtype_t dt, ss_dnn_layout_t l,
                    ss_err_t *err);

typedef struct ins {
    int at, after;
    ss_step_t st;
} ss__lp_ins_t;

typedef struct inslist {
    ss__lp_ins_t *v;
    int n, cap;
    int twin[2 * 64];       /* pairs (NCHW value, its NHWC copy) */
    int n_twin;
} ss__lp_inslist_t;

/* The NHWC copy of v made so far, or -1; remembers one. */
int ss__lp_twin_of(const ss__lp_inslist_t *l, int v);
void ss__lp_twin_add(ss__lp_inslist_t *l, int v, int nhwc);
/* Queues a conversion step in -> out (cd says how) before (after = 0) or
 * after step `at`. */
int ss__lp_ins_convert(ss_plan_t *p, ss__lp_inslist_t *l, int at,
                       int after, const ss_dnn_convert_desc_t *cd, int in,
                       int out, const char *what, ss_err_t *err);
/* Rebuilds the step array with the queued steps in place, dropping the
 * holes fusion left. */
int ss__lp_ins_apply(ss_plan_t *p, ss__lp_inslist_t *l, ss_err_t *err);
void ss__lp_ins_free(ss__lp_inslist_t *l);

/* The passes. */
int ss__lp_int8(ss_plan_t *p, ss_err_t *err);
int ss__lp_bf16(ss_plan_t *p, ss_err_t *err);

#endif
