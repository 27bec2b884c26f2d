/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_FUSE_INT_H
#define SS_ENGINE_PLAN_FUSE_INT_H

/*
 * Shared by the fusion files (plan_fuse.c: readers, chains, commit;
 * plan_fuse_ops.c: the anchors; plan_fuse_ln.c: decomposed LayerNorm).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <string.h>

#include "engine/plan/internal.h"

typedef struct ss__fz {
    ss_plan_t *p;
    int *start;     /* CSR of readers per root value: list[start[v]..] */
    int *list;      /* step indices */
    char *is_out;   /* value is (or is viewed by) a graph output */
    int *prod;      /* step producing the value, or -1 */
} ss__fz_t;

#define SS_CHAIN_MAX 32

/* A fusion in progress: the anchor step, absorbed steps, post-ops. */
typedef struct ss__chain {
    int steps[SS_CHAIN_MAX];
    int n_steps;
    int src;                /* the anchor's main source value */
    int out;                /* the value the fused step writes */
    int dst_ndim;           /* the primitive's dst, for operand mapping */
    int64_t dst_dims[SS_DNN_MAX_DIMS];
    int max_post;           /* 0: SS_DNN_MAX_POST */
    ss_dnn_postops_t post;
    int bin[SS_DNN_MAX_POST];   /* value per BINARY post-op */
    int n_bin;
    char what[48];
} ss__chain_t;

/* Step st is a reference step of ONNX op `op`. */
static inline int
is_op(const ss_step_t *st, const char *op)
{
    return st->kind == SS_STEP_REF && strcmp(st->node->op_type, op) == 0;
}

int ss__fz_init(ss__fz_t *fz, ss_plan_t *p);
void ss__fz_close(ss__fz_t *fz);
int ss__fz_single(const ss__fz_t *fz, int v);
int ss__fz_is_const(const ss_plan_t *p, int v);
int ss__fz_scalar(const ss_plan_t *p, int v, float *out);
int ss__fz_commit(ss__fz_t *fz, ss_step_t *fused, const int *steps, int n,
                  ss_err_t *err);
/* A constant f32 vector of n elements (leading dims 1), or NULL. */
const float *ss__fz_vec(const ss_plan_t *p, int v, int64_t n);
/* The next step is Add of a constant [N] keeping the rank: a bias,
 * absorbed into c; NULL when not. */
const float *ss__fz_take_bias(ss__fz_t *fz, ss__chain_t *c, int64_t n);
/* Reads count ints of attribute name into out (all dflt when absent); 0
 * when it has another count. */
int ss__fz_attr_n(const ss_node_t *n, const char *name, int64_t dflt,
                  int64_t *out, int count);
/* auto_pad is NOTSET (or empty): the pads attribute says it all. */
int ss__fz_notset(const ss_node_t *n);
/* Folds BatchNormalization step bn (inputs scale, B, mean, var, each of
 * oc constants) into conv weights w (oc rows of nw / oc) and bias (NULL:
 * 0): new arrays in *wf and *bf, the caller's to free. */
int ss__fz_fold_bn(const ss_plan_t *p, const ss_step_t *bn, int64_t oc,
                   const float *w, int64_t nw, const float *bias,
                   float **wf, float **bf, ss_err_t *err);
void ss__fz_chain_start(ss__chain_t *c, int step, int src, int out,
                        const char *what);
/* Absorbs single-use consumers of c->out that map onto post-ops. */
int ss__fz_chain(ss__fz_t *fz, ss__chain_t *c);
/* ss__fz_chain for an inner product (any precision): absorbs post-ops up
 * to, not including, a residual Add (a BINARY post-op of the full dst
 * shape), which oneDNN 2.6 would run on its slower gemm kernel. */
void ss__lp_linear_chain(ss__fz_t *fz, ss__chain_t *c);
/* Commits the chain as one DNN step reading lead_in then c->bin. */
int ss__fz_emit(ss__fz_t *fz, ss__chain_t *c, ss_dnn_prim_t *prim,
                const int *lead_in, int n_lead, ss_err_t *err);

/* Anchors: 1 fused, 0 left alone, < 0 a hard error. */
int ss__fz_linear(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_matmul(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_conv(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_softmax(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_layernorm(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_pool(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_binary(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fz_ln_decomposed(ss__fz_t *fz, int s, ss_err_t *err);

/* A oneDNN constructor's failure: ENOMEM stops the compile, anything
 * else leaves the op on its reference kernel. */
static inline int
ss__fz_fallback(int rc, ss_err_t *err)
{
    if (rc == SS_ENOMEM)
        return rc;
    ss_err_clear(err);
    return 0;
}

#endif
