/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_INDEP_H
#define SS_ENGINE_PLAN_INDEP_H

/*
 * The row-independence analysis (plan_indep.c, its op rules in
 * plan_indep_ops.c and plan_indep_shape.c): what one value knows about
 * the batch, and the context a rule reads.  Private to those files.
 */

#include <stdarg.h>

#include "engine/plan/internal.h"

/* Elements a shape vector (Shape's output and what is computed from it)
 * keeps tags for; a longer one is a tensor like any other. */
#define SS_INDEP_SV_MAX 16

/* A shape vector's element (its tag): independent of the batch
 * (SS_IT_IND), m > 0 for m times the batch's row count, or computed from
 * the batch some other way (SS_IT_DEP). */
#define SS_IT_IND 0
#define SS_IT_DEP (-1)

/* A value's state.  Along `axis`, a value that carries rows has
 * outer * B * group entries: index (o * B + b) * group + j belongs to
 * row b.  Both are 1 but after a Reshape merged the batch with the axes
 * around it: (B, S, D) -> (B*S, D) has group S; PyTorch's multi-head
 * attention views (S, B, E) as (S*B, E) (outer S) and (S, B*H, D) (group
 * H) -- each entry still belongs to one row. */
typedef struct ss__rv {
    int axis;           /* the batch's axis, or -1: independent of it */
    int64_t outer, group;
    int from;           /* the node that merged the rows, or -1 */
    int sv;             /* a shape vector: tag[] holds its elements */
    int n;
    int64_t tag[SS_INDEP_SV_MAX];
} ss__rv_t;

typedef struct ss__indep {
    const ss_plan_t *p;
    const ss_node_t *n;         /* the node a rule reads */
    ss__rv_t *v;                /* per value */
    char why[200];              /* what mixed (rules fill it) */
} ss__indep_t;

/* The rule for node c->n's op: sets its outputs' states and returns 0,
 * or returns -1 with c->why saying how the node mixes rows.  Called only
 * when some input depends on the batch. */
typedef int (*ss__indep_rule_t)(ss__indep_t *c);
ss__indep_rule_t ss__indep_rule(const ss_node_t *n);

/* Helpers the rules share (plan_indep.c). */
int ss__indep_mix(ss__indep_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
ss__rv_t *ss__indep_in(ss__indep_t *c, int k);   /* NULL: omitted */
ss__rv_t *ss__indep_out(ss__indep_t *c, int k);  /* NULL: omitted */
int ss__indep_rank(const ss__indep_t *c, int v);
int64_t ss__indep_dim(const ss__indep_t *c, int v, int d);
/* Up to max integers of constant value v (int32/int64/bool): the count,
 * or -1 when v is not a constant of the plan or is longer. */
int ss__indep_ints(const ss__indep_t *c, int v, int64_t *out, int max);
/* Normalises axis ax of a rank-r tensor (-1 when out of range). */
int ss__indep_axis(int64_t ax, int r);
/* Sets every output of c->n to rows along axis, merged as `like`'s
 * (NULL: not merged; axis -1: independent). */
void ss__indep_set_all(ss__indep_t *c, int axis, const ss__rv_t *like);
/* a and b merge the rows alike (outer, group). */
int ss__indep_same(const ss__rv_t *a, const ss__rv_t *b);
/* Whether input k is batch-independent (or omitted). */
int ss__indep_ind(ss__indep_t *c, int k);
/* Inputs from..n_inputs-1 are all batch-independent, else -1 naming
 * the first that is not. */
int ss__indep_params(ss__indep_t *c, int from);
/* The reshape of input k to dims out[0..r): sets *res (axis, outer,
 * group) and returns 0, or -1 when the rows do not survive it.
 * entry[b] says how the output's dim b was given: 'B' mul[b] times the
 * row count, '*' inferred (-1), '0' copied from the input's, 'k' a
 * number that does not change with the batch. */
int ss__indep_reshape(ss__indep_t *c, int k, const int64_t *out, int r,
                     const char *entry, const int64_t *mul, ss__rv_t *res);
/* Input k as a shape vector: its tags (all SS_IT_IND for an independent
 * one) and element count; -1 when it carries rows or is no small
 * vector. */
int ss__indep_sv(ss__indep_t *c, int k, const int64_t **t, int64_t *n);
/* Output k: a shape vector with tags t[0..n) (independent when all are
 * SS_IT_IND). */
void ss__indep_set_sv(ss__indep_t *c, int k, const int64_t *t, int64_t n);
/* Whether some t[0..n) is a multiple of the row count (batch) or
 * SS_IT_DEP (dep). */
int ss__indep_has(const int64_t *t, int64_t n, int dep);
/* Axes from attribute `attr` (opsets before `since`) or input k: the
 * count, 0 when absent, -1 when they depend on the batch or are not
 * known. */
int ss__indep_axes(ss__indep_t *c, const char *attr, int since, int k,
                  int64_t *ax);
/* Whether one of ax[0..n) (rank r) is axis a. */
int ss__indep_in_axes(const int64_t *ax, int n, int r, int a);

/* Rules shared by the two rule files. */
int ss__indep_sv_bcast(ss__indep_t *c);
int ss__indep_r_cast(ss__indep_t *c);
int ss__indep_r_unary(ss__indep_t *c);
/* plan_indep_shape.c's, for the table. */
int ss__indep_r_shape(ss__indep_t *c);
int ss__indep_r_transpose(ss__indep_t *c);
int ss__indep_r_reshape(ss__indep_t *c);
int ss__indep_r_flatten(ss__indep_t *c);
int ss__indep_r_squeeze(ss__indep_t *c);
int ss__indep_r_concat(ss__indep_t *c);
int ss__indep_r_slice(ss__indep_t *c);
int ss__indep_r_gather(ss__indep_t *c);
int ss__indep_r_elements(ss__indep_t *c);
int ss__indep_r_gathernd(ss__indep_t *c);
int ss__indep_r_expand(ss__indep_t *c);
int ss__indep_r_pad(ss__indep_t *c);
int ss__indep_r_resize(ss__indep_t *c);

#define SS_INDEP_MIX_SIZE "it computes with the batch size (read through " \
    "Shape or Size)"
#define SS_INDEP_IN(c, k) ((c)->n->inputs[k])
#define SS_INDEP_OUT(c, k) ((c)->n->outputs[k])
#define SS_INDEP_OPSET(c) ((c)->p->g->opset)

#endif
