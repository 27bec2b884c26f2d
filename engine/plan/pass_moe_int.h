/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparse-dispatch pass's match state (pass_moe.c says what the
 * pattern is): pass_moe_match.c recognises the gates, the weighted sum
 * and each expert; pass_moe.c commits a match as one MoE step.  Private
 * to those two.
 *
 * THREADS: runs inside ss_plan_new.
 */
#ifndef SS_ENGINE_PLAN_PASS_MOE_INT_H
#define SS_ENGINE_PLAN_PASS_MOE_INT_H

#include "engine/ops/moe.h"
#include "engine/plan/internal.h"

#define MAX_SET 4096

typedef struct match {
    ss__fz_t *fz;
    int topk, k, n_exp, norm, unit;
    int p_val, x_val, y_val;
    int64_t rows, d_in, d_out;
    int out_e[SS_MOE_MAX_EXPERTS];  /* O_e */
    int set[MAX_SET];               /* steps the MoE step replaces */
    int n_set;
    ss__moe_expert_desc_t ex[SS_MOE_MAX_EXPERTS];
    float *owned[SS_MOE_MAX_EXPERTS * SS_MOE_MAX_LAYERS];
    int n_owned;
    const char *why;                /* why it stays dense */
    char whybuf[96];
} match_t;

static inline int
moe_take(match_t *m, int s)
{
    if (m->n_set == MAX_SET) {
        m->why = "too many steps";
        return 0;
    }
    m->set[m->n_set++] = s;
    return 1;
}

static inline int
moe_in_set(const match_t *m, int s)
{
    for (int i = 0; i < m->n_set; i++)
        if (m->set[i] == s)
            return 1;
    return 0;
}

static inline int
moe_is_op(const ss_plan_t *p, int s, const char *op)
{
    return s >= 0 && ss__plan_is_op(&p->steps[s], op);
}

static inline int64_t
moe_numel(const ss_plan_t *p, int v)
{
    return ss_tensor_numel(ss__plan_tensor(p, v));
}

/* Readers of v's root, as a list (fz's CSR). */
static inline int
moe_n_readers(const ss__fz_t *fz, int v)
{
    int r = ss__plan_root(fz->p, v);

    return fz->start[r + 1] - fz->start[r];
}

static inline int
moe_reader(const ss__fz_t *fz, int v, int i)
{
    return fz->list[fz->start[ss__plan_root(fz->p, v)] + i];
}

/* From TopK step m->topk: the scatter and its gates (sets k, n_exp,
 * norm, unit, p_val).  0 with m->why when it is not the pattern. */
int ss__moe_match_gates(match_t *m);
/* The gate-weighted sum reading gate matrix step g, stacked (Concat +
 * ReduceSum) or as a loop of products; sets out_e and y_val. */
int ss__moe_match_stack(match_t *m, int g);
int ss__moe_match_loop(match_t *m, int g);
/* Expert e back from O_e to x as Linear layers: 1 when it is one, 0
 * (m->why) when not, < 0 on error. */
int ss__moe_match_expert(match_t *m, int e, ss_err_t *err);

#endif
