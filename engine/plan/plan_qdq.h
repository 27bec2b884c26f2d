/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_QDQ_H
#define SS_ENGINE_PLAN_QDQ_H

/*
 * The int8 pass's state, shared by plan_qdq.c (convs, Linear layers,
 * Q/DQ reorders) and plan_qdq_pool.c (Q moved before pools and views,
 * int8 pooling).
 */

#include "engine/plan/internal.h"

/* What the pass carries from step to step: the steps to insert, and the
 * NHWC copies made so far, so that the next int8 conv reads a copy
 * instead of converting again. */
typedef struct qpass {
    ss__plan_inslist_t il;
    int twin[2 * 64];       /* pairs (NCHW value, its NHWC copy) */
    int n_twin;
} qpass_t;

/* The NHWC copy of v made so far, or -1. */
static inline int
twin_of(const qpass_t *qp, int v)
{
    for (int i = 0; i < qp->n_twin; i++)
        if (qp->twin[2 * i] == v)
            return qp->twin[2 * i + 1];
    return -1;
}

/* Remembers nhwc as v's NHWC copy (up to 64 of them). */
static inline void
twin_add(qpass_t *qp, int v, int nhwc)
{
    if (qp->n_twin < 64) {
        qp->twin[2 * qp->n_twin] = v;
        qp->twin[2 * qp->n_twin + 1] = nhwc;
        qp->n_twin++;
    }
}

/* Before fusion: a QuantizeLinear behind step s (a MaxPool, or a view
 * read by the Q) moves before it; 1 when it did. */
int ss__qdq_hoist(ss_plan_t *p, int s, ss_err_t *err);
/* During fusion: step s, an int8 MaxPool of ss__qdq_hoist, runs NHWC;
 * 1 when it is one. */
int ss__qdq_pool(ss_plan_t *p, int s, qpass_t *qp, ss_err_t *err);

#endif
