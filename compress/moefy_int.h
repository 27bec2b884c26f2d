/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MoEfication's parts, shared by moefy.c (finding FFNs, observing them,
 * one FFN at a time), moefy_router.c (clustering, the router) and
 * moefy_graph.c (the rewrite, compensation).  Private to those three.
 *
 * THREADS: everything runs on the compress thread.
 */
#ifndef SS_COMPRESS_MOEFY_INT_H
#define SS_COMPRESS_MOEFY_INT_H

#include "compress/prune_int.h"

#define MAX_CHAIN 32
#define MAX_IN 16               /* model inputs */

/* One FFN of the current graph. */
typedef struct ffn {
    int a, b;                   /* node indices of the two layers */
    ss__layer_t la, lb;
    int x;                      /* A's input */
    int h;                      /* B's input: the chain end */
    int64_t d_in, hidden, d_out;
    int chain[MAX_CHAIN];       /* nodes between A and B, graph order */
    int n_chain;
    int bias1;                  /* A's per-neuron bias value, or -1 */
    char label[200];
} ffn_t;

/* The input axis of a layer's weight (what it contracts over). */
static inline int
moefy_in_axis(const ss__layer_t *l)
{
    return l->out_axis == 1 ? 0 : 1;
}

/* ---- moefy_router.c ---- */

/* Balanced k-means of n neurons (rows of F, S features each) into E
 * experts of n / E; the assignment, and the iterations it took. */
int ss__moefy_kmeans(const float *F, int64_t n, int64_t S, int E,
                     uint64_t seed, int *assign, int *iters, ss_err_t *err);
/* T [tokens, E]: each expert's share of a token's activation mass. */
void ss__moefy_mass_shares(const float *H, int64_t tokens, int64_t hidden,
                           const int *assign, const double *w2n, int E,
                           float *T);
/* taken[e] = 1 for the k largest of s [E] (ties: the lower e), else 0;
 * E <= 256. */
void ss__moefy_top_k(const float *s, int E, int k, char *taken);
/* Mean share of the mass the top k experts carry: by the router's logits
 * P, or by T itself (the oracle) when P is NULL. */
double ss__moefy_captured(const float *P, const float *T, int64_t tokens,
                          int E, int k);
/* The router's logits (value pname) over the calibration rows. */
int ss__moefy_router_logits(ss__cx_t *cx, const ss_graph_t *g,
                            const char *pname, float **P, ss_err_t *err);
/* Trains the router (weights rw, rb) alone toward T; fnote says how. */
int ss__moefy_train_router(ss__cx_t *cx, const ss_method_t *m,
                           ss_graph_t *g, const char *rw, const char *rb,
                           const char *pname, const float *T, int64_t rows,
                           int64_t tpr, int E, json_t *fnote, ss_err_t *err);

/* ---- moefy_graph.c ---- */

/* |B row i| of every hidden neuron into w2n. */
void ss__moefy_out_norms(const ss_graph_t *g, const ffn_t *f, double *w2n);
/* The router's starting weights wr [d_in, E] and bias br: centroids. */
int ss__moefy_router_init(const ss_graph_t *g, const ffn_t *f,
                          const int *assign, int E, const double *w2n,
                          float *wr, float *br, ss_err_t *err);
/* f rewritten as E experts behind a top-k router (names of the router's
 * weight, bias and logits into new strings). */
int ss__moefy_rewrite(ss_graph_t *g, const ffn_t *f, const int *assign,
                      int E, int k, const float *wr, const float *br,
                      char **router_w, char **router_b, char **router_p,
                      ss_err_t *err);
/* A copy of B's weight as [hidden, d_out]. */
int ss__moefy_copy_w2(const ss_graph_t *g, const ffn_t *f, float **out,
                      ss_err_t *err);
/* The dropped experts' mean contribution folded into the output bias. */
int ss__moefy_compensate(ss_graph_t *g, const ffn_t *f, const float *H,
                         int64_t tokens, const float *P, const int *assign,
                         int E, int k, const float *W2, json_t *fnote,
                         ss_err_t *err);

#endif
