/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_IR_GELU_PAT_H
#define SS_IR_GELU_PAT_H

/*
 * GELU written out in element-wise ONNX ops, as PyTorch exports it, found
 * from its input x: the one matcher of the engine's fusion
 * (engine/plan/plan_chain.c) and the trainer's (compress/train/fuse.c).
 *
 *   erf   x * 0.5 * (1 + erf(x / sqrt 2)): Div by sqrt 2 or Mul by
 *         1/sqrt 2, Erf, Add 1, then Mul by x and by 0.5 in either order
 *         (the 0.5 may be on x first: (x * 0.5) * (1 + erf)); 5 nodes.
 *   tanh  0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), as
 *         PyTorch 1.13 exports approximate='tanh' (x^3 as Mul(x, Mul(x,
 *         x)), or Pow(x, 3) as hand-written versions export it); 9 or 8
 *         nodes.
 * Mul and Add take their operands in either order.  The constants must
 * be what GELU's are (0.5, 1, 3 exactly; sqrt 2, 1/sqrt 2, sqrt(2/pi)
 * and 0.044715 within the caller's relative tolerance), else it is not
 * GELU and nothing matches.  Every intermediate value must have the
 * pattern's node as its only reader; x may have other readers (the
 * caller decides whether it minds: ss_gelu_match_t.x_reads).
 *
 * The caller's graph is seen through ss_gelu_view_t, so "node" is
 * whatever the caller indexes (graph nodes, plan steps).  THREADS: [any].
 */

#include "engine/ir/ir.h"

typedef struct ss_gelu_view {
    const void *ctx;
    /* How many input slots read value v (a node reading it twice counts
     * twice), their nodes in r[0 .. min(count, max)); -1 when v must stay
     * as it is (a graph output, a value something views). */
    int (*readers)(const void *ctx, int v, int *r, int max);
    /* Node h's op type, or NULL when h is not a plain ONNX node the
     * matcher may take (a fused step). */
    const char *(*op)(const void *ctx, int h);
    int (*n_in)(const void *ctx, int h);
    int (*in)(const void *ctx, int h, int i);   /* value id, -1 absent */
    int (*out)(const void *ctx, int h);         /* output 0 */
    /* A constant f32 or f64 scalar (one element) into *c: 1, else 0. */
    int (*scalar)(const void *ctx, int v, float *c);
    double tol;         /* relative tolerance of the irrational constants */
} ss_gelu_view_t;

typedef enum { SS_GELU_ERF = 1, SS_GELU_TANH } ss_gelu_kind_t;

#define SS_GELU_MAX_NODES 9

typedef struct ss_gelu_match {
    ss_gelu_kind_t kind;
    int n;                          /* nodes in the pattern */
    int nodes[SS_GELU_MAX_NODES];   /* the caller's indices */
    int last;                       /* the node that writes y */
    int y;                          /* the GELU of x */
    int x_reads;                    /* input slots of the pattern that
                                     * read x */
} ss_gelu_match_t;

/* readers for a caller that indexes them as CSR: value v's readers are
 * list[start[v] .. start[v + 1]). */
int ss_gelu_csr_readers(const int *start, const int *list, int v, int *r,
                        int max);

/* 1 and *m when a GELU of x is written out from x (kinds: a bit mask of
 * 1 << SS_GELU_ERF, 1 << SS_GELU_TANH), else 0. */
int ss_gelu_match(const ss_gelu_view_t *v, int x, unsigned kinds,
                  ss_gelu_match_t *m);

#endif
