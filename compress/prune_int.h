/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMPRESS_PRUNE_INT_H
#define SS_COMPRESS_PRUNE_INT_H

/*
 * Structured pruning's pieces, shared by prune.c (finding pairs) and
 * prune_cut.c (scoring, cutting, compensating).  See prune.c.
 */

#include "compress/internal.h"

typedef struct ss__slot {
    int node, input;            /* a per-channel constant to slice */
    int axis;                   /* its channel axis */
} ss__slot_t;

/* A producer layer A, its elementwise chain, its consumers B. */
typedef struct ss__pair {
    int a;                      /* layer index of A */
    int n_b;
    int *b;                     /* layer indices of the Bs */
    int n_slots;
    ss__slot_t *slots;
    int h;                      /* B's input value (chain end) */
    bool conv;
    int64_t channels;
    int64_t spatial;            /* > 0: the Bs are Linear layers reading A's
                                 * channels flattened (Flatten, or a mean
                                 * over H, W), spatial columns per channel:
                                 * h is [N, channels * spatial] */
    double *mean, *sd;          /* of h per channel (per column of h when
                                 * spatial) on calibration data, or NULL
                                 * without it */
    int64_t groups;             /* channels are kept in equal numbers per
                                 * group of channels / groups (a grouped
                                 * conv A or B); 1 otherwise */
    int64_t b_groups;           /* the Bs' group attribute: > 1, a B reads
                                 * channel c as input column c % (C /
                                 * b_groups) of its group's output rows */
    int n_dw;
    int *dw;                    /* depthwise convs on the chain (node
                                 * indices): one filter per channel, so
                                 * their weight and bias are sliced and
                                 * their group is the kept count */
} ss__pair_t;

/* The first qualifying pair (in node order) whose A does not write a
 * value named in done_names; *found false when none is left.  p is
 * filled (channels included) and must be cleared either way.  The
 * search's width masks (search_mask.c) gate the same pairs. */
int ss__prune_next_pair(const ss_graph_t *g, json_t *done_names,
                        ss__pair_t *p, bool *found, ss_err_t *err);
void ss__pair_clear(ss__pair_t *p);

/* Mean and standard deviation of every pair's h over cx->calib. */
int ss__prune_stats(ss__cx_t *cx, const ss_graph_t *g, ss__pair_t *ps,
                    int np, ss_err_t *err);
/* Cuts pair p (layer list ls read from the current graph) down to
 * (1 - sparsity) of its channels; *kept gets the count. */
int ss__prune_cut(ss_graph_t *g, const ss__layer_t *ls, const ss__pair_t *p,
                  double sparsity, ss_score_t score, int64_t *kept,
                  ss_err_t *err);

/* Unstructured pruning (prune_flat.c). */
int ss__prune_unstructured(ss__cx_t *cx, const ss_method_t *m, ss_graph_t *g,
                           json_t *note, ss_err_t *err);

/* Helpers shared with prune_heads.c. */
double ss__slice_norm(const ss_tensor_t *t, int axis, int64_t c, int p);
/* A new constant value: t with only the entries keep[0..nk) along axis;
 * returns its id. */
int ss__slice_const(ss_graph_t *g, const ss_tensor_t *t, int axis,
                    const int64_t *keep, int64_t nk, ss_err_t *err);
/* delta[o] += sum over input channels c with gone[c] of w[o, c] mean[c]
 * (summed over any other axes of w). */
void ss__lost_bias(const ss_tensor_t *w, int oax, int iax, const bool *gone,
                   const double *mean, double *delta);
/* Adds delta (per output channel) to layer B's bias (see prune_cut.c). */
int ss__add_bias(ss_graph_t *g, const ss__layer_t *B, const double *delta,
                 ss_err_t *err);

/* Attention heads (prune_heads.c): the torch pattern qkv projection ->
 * Reshape [n, t, 3, H, dh] -> Transpose -> Gather q/k/v -> scaled
 * softmax(q k^T) v -> Transpose -> Reshape [n, t, H dh] -> projection. */
typedef struct ss__heads {
    int a, b;                   /* layer indices: qkv and out projection */
    int bias_node, bias_input;  /* the qkv bias Add's constant, or -1 */
    int h_node, h_input;        /* where H sits in the first shape */
    int o_node, o_input;        /* the last dim of the second shape */
    bool o_const;               /* o_input is a constant shape tensor */
    int o;                      /* attention output [n, H, t, dh] */
    int64_t H, dh;
    double *mean, *sd;          /* per (h, j) of o, or NULL */
    double *score;              /* per head when measured (higher: keep),
                                 * or NULL: computed from weights/sd */
} ss__heads_t;

/* The first attention block (in node order) whose qkv layer writes no
 * value named in done; *found false when none is left. */
int ss__heads_next(const ss_graph_t *g, json_t *done, ss__heads_t *h,
                   bool *found, ss_err_t *err);
void ss__heads_clear(ss__heads_t *h);
int ss__heads_stats(ss__cx_t *cx, const ss_graph_t *g, ss__heads_t *h,
                    ss_err_t *err);
/* Removes round(sparsity H) heads (at least one stays); folds the
 * removed heads' means into the projection's bias when h->mean is set. */
int ss__heads_cut(ss_graph_t *g, const ss__heads_t *h, double sparsity,
                  ss_score_t score, int64_t *kept, ss_err_t *err);

#endif
