/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured pruning, second half: which channels of a pair go, and
 * cutting them out (prune.c finds the pairs).
 *
 * DESIGN: with calibration data the chain end h (B's input) is measured
 * per channel: mean m_c and standard deviation s_c.  Removing channel c
 * and adding B's weights times m_c to B's bias changes B's output by
 * W_B[:, c] (h_c - m_c), whose expected size is s_c ||W_B[:, c]||; so the
 * activation score is s_c ||W_B[:, c]||_2, and whenever the mean is known
 * it is folded into the bias (a neuron that is nearly constant after a
 * ReLU, e.g. a large BatchNorm shift, costs nothing to remove).  Without
 * data the score is ||W_A[c]|| ||W_B[:, c]|| (L1 or L2), with A's slice
 * scaled by |gamma| / sqrt(var + eps) when a BatchNormalization follows A
 * and by the filter norms of the depthwise convs on the chain.  A grouped
 * B's norm is over its group's rows only, and its bias gets no fold (its
 * columns are per group).
 * For a Conv B the bias term sums the kernel's taps, exact away from the
 * zero-padded border.  A B without a bias gets one: a third input for
 * Gemm/Conv, an Add after a MatMul.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/prune_int.h"

/* Norm of slice c along axis of t (p = 1 or 2). */
double
ss__slice_norm(const ss_tensor_t *t, int axis, int64_t c, int p)
{
    int64_t outer = 1, inner = 1, C = t->dims[axis], o, i;
    const float *w = t->data;
    double s = 0.0;
    int d;

    for (d = 0; d < axis; d++)
        outer *= t->dims[d];
    for (d = axis + 1; d < t->ndim; d++)
        inner *= t->dims[d];
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            double x = w[(o * C + c) * inner + i];

            s += p == 1 ? fabs(x) : x * x;
        }
    return p == 1 ? s : sqrt(s);
}

/* A new constant: t with only the kept entries along axis. */
int
ss__slice_const(ss_graph_t *g, const ss_tensor_t *t, int axis,
            const int64_t *keep, int64_t nk, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], outer = 1, inner = 1, C = t->dims[axis], o, c;
    size_t es = ss_dtype_size(t->dtype);
    char *dst;
    int d, id;

    memcpy(dims, t->dims, sizeof(dims));
    dims[axis] = nk;
    for (d = 0; d < axis; d++)
        outer *= t->dims[d];
    for (d = axis + 1; d < t->ndim; d++)
        inner *= t->dims[d];
    if ((id = ss__new_const(g, NULL, t->dtype, t->ndim, dims, (void **)&dst,
                            err)) < 0)
        return id;
    for (o = 0; o < outer; o++)
        for (c = 0; c < nk; c++)
            memcpy(dst + (size_t)((o * nk + c) * inner) * es,
                   (const char *)t->data
                   + (size_t)((o * C + keep[c]) * inner) * es,
                   (size_t)inner * es);
    return id;
}

/* The input axis of layer l's weight (what B contracts over). */
static int
in_axis(const ss__layer_t *l)
{
    return l->kind == SS__LAYER_CONV ? 1 : l->out_axis == 0 ? 1 : 0;
}

/* The norm (p = 1 or 2) of B's weights over channel c: over the S
 * columns a flattened channel has (p->spatial), each times its
 * activation's standard deviation when sd is given. */
static double
b_norm(const ss_graph_t *g, const ss__layer_t *B, const ss__pair_t *p,
       int64_t c, const double *sd, int pn)
{
    const ss_tensor_t *w = g->values[B->w].constant;
    int64_t S = p->spatial > 0 ? p->spatial : 1, s;
    double t = 0.0;

    if (p->b_groups > 1) {
        /* Grouped: column c % Cg of the rows of c's group only. */
        int64_t Cg = p->channels / p->b_groups, Og = B->n_out / p->b_groups;
        int64_t taps = ss_tensor_numel(w) / (B->n_out * Cg), o, k;
        const float *x = w->data;

        for (o = (c / Cg) * Og; o < (c / Cg + 1) * Og; o++)
            for (k = 0; k < taps; k++) {
                double v = x[(o * Cg + c % Cg) * taps + k];

                t += pn == 1 ? fabs(v) : v * v;
            }
        t *= sd != NULL ? (pn == 1 ? sd[c] : sd[c] * sd[c]) : 1.0;
        return pn == 1 ? t : sqrt(t);
    }
    for (s = 0; s < S; s++) {
        double n = ss__slice_norm(w, in_axis(B), c * S + s, pn)
                   * (sd != NULL ? sd[c * S + s] : 1.0);

        t += pn == 1 ? n : n * n;
    }
    return pn == 1 ? t : sqrt(t);
}

/* |gamma_c| / sqrt(var_c + eps) of a BatchNormalization on the chain. */
static double
bn_scale(const ss_graph_t *g, const ss__pair_t *p, int64_t c)
{
    int i;

    for (i = 0; i < p->n_slots; i++) {
        const ss_node_t *nd = &g->nodes[p->slots[i].node];

        if (strcmp(nd->op_type, "BatchNormalization") == 0
            && p->slots[i].input == 1) {
            const float *gm = g->values[nd->inputs[1]].constant->data;
            const float *var = g->values[nd->inputs[4]].constant->data;
            double eps = ss__attr_float(nd, "epsilon", 1e-5f);

            return fabs(gm[c]) / sqrt(var[c] + eps);
        }
    }
    return 1.0;
}

/* The depthwise convs' filter norms of channel c: they scale it. */
static double
dw_scale(const ss_graph_t *g, const ss__pair_t *p, int64_t c, int pn)
{
    double f = 1.0;
    int i;

    for (i = 0; i < p->n_dw; i++)
        f *= ss__slice_norm(g->values[g->nodes[p->dw[i]].inputs[1]].constant,
                            0, c, pn);
    return f;
}

/* B's weight with, in the rows of group q, the columns of the kept
 * channels of that group (keep sorted, nk / b_groups per group). */
static int
slice_grouped(ss_graph_t *g, const ss_tensor_t *t, const ss__pair_t *p,
              const int64_t *keep, int64_t nk, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], G = p->b_groups, Cg = p->channels / G;
    int64_t kg = nk / G, Og = t->dims[0] / G, taps = 1, o, j;
    const float *src = t->data;
    float *dst;
    int d, id;

    memcpy(dims, t->dims, sizeof(dims));
    dims[1] = kg;
    for (d = 2; d < t->ndim; d++)
        taps *= t->dims[d];
    if ((id = ss__new_const(g, NULL, t->dtype, t->ndim, dims, (void **)&dst,
                            err)) < 0)
        return id;
    for (o = 0; o < t->dims[0]; o++)
        for (j = 0; j < kg; j++)
            memcpy(dst + (o * kg + j) * taps,
                   src + (o * Cg + keep[(o / Og) * kg + j] % Cg) * taps,
                   sizeof(float) * (size_t)taps);
    return id;
}

typedef struct scored {
    double s;
    int64_t c;
} scored_t;

static int
cmp_scored(const void *a, const void *b)
{
    const scored_t *x = a, *y = b;

    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->c < y->c ? -1 : x->c > y->c;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* What B's output loses with the removed channels at their means. */
void
ss__lost_bias(const ss_tensor_t *w, int oax, int iax, const bool *gone,
          const double *mean, double *delta)
{
    int64_t n = ss_tensor_numel(w), i, st[SS_MAX_DIMS];
    const float *x = w->data;
    int d;

    st[w->ndim - 1] = 1;
    for (d = w->ndim - 2; d >= 0; d--)
        st[d] = st[d + 1] * w->dims[d + 1];
    for (i = 0; i < n; i++) {
        int64_t c = (i / st[iax]) % w->dims[iax];

        if (gone[c])
            delta[(i / st[oax]) % w->dims[oax]] += (double)x[i] * mean[c];
    }
}

/* Adds delta (per output channel) to B's bias, making one if needed. */
int
ss__add_bias(ss_graph_t *g, const ss__layer_t *B, const double *delta,
         ss_err_t *err)
{
    ss_node_t *nd = &g->nodes[B->node];
    const ss_tensor_t *old = B->b >= 0 ? g->values[B->b].constant : NULL;
    int64_t O = B->n_out, o, on = old != NULL ? ss_tensor_numel(old) : 0;
    double f = 1.0;
    float *nb;
    int id, k, j, reader, out0;

    if (B->kind == SS__LAYER_GEMM) {
        float beta = ss__attr_float(nd, "beta", 1.0f);

        if (beta == 0.0f)
            return 0;           /* C is ignored: nowhere to put it */
        f = ss__attr_float(nd, "alpha", 1.0f) / beta;
    }
    if (old != NULL && on != 1 && on != O)
        return 0;               /* a bias of another shape: leave it */
    if ((id = ss__new_const(g, NULL, SS_DTYPE_F32, 1, &O, (void **)&nb,
                            err)) < 0)
        return id;
    for (o = 0; o < O; o++)
        nb[o] = (float)(f * delta[o]) + (old == NULL ? 0.0f
                    : ((const float *)old->data)[on == 1 ? 0 : o]);
    nd = &g->nodes[B->node];
    if (old != NULL) {
        nd->inputs[2] = id;
        return 0;
    }
    if (B->kind != SS__LAYER_MATMUL) {
        /* The node keeps its index (later pairs refer to it): grow its
         * input list in place. */
        int *ins = ss_realloc(nd->inputs, 3 * sizeof(int));

        if (ins == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a bias");
        nd->inputs = ins;
        nd->inputs[2] = id;
        nd->n_inputs = 3;
        return 0;
    }
    /* A MatMul's bias is the Add of a per-channel constant after it, when
     * there is one (a new Add node would be missed by a later pair whose
     * chain starts here, so there is no compensation without it). */
    out0 = nd->outputs[0];
    for (k = 0, reader = -1; k < g->n_nodes; k++)
        for (j = 0; j < g->nodes[k].n_inputs; j++)
            if (g->nodes[k].inputs[j] == out0)
                reader = reader == -1 ? k : -2;
    if (reader < 0 || strcmp(g->nodes[reader].op_type, "Add") != 0
        || g->nodes[reader].n_inputs != 2)
        return 0;
    j = g->nodes[reader].inputs[0] == out0 ? 1 : 0;
    old = g->values[g->nodes[reader].inputs[j]].constant;
    if (old == NULL || old->dtype != SS_DTYPE_F32 || old->ndim < 1
        || old->dims[old->ndim - 1] != O || ss_tensor_numel(old) != O)
        return 0;
    for (o = 0; o < O; o++)
        nb[o] += ((const float *)old->data)[o];
    g->nodes[reader].inputs[j] = id;
    return 0;
}

int
ss__prune_cut(ss_graph_t *g, const ss__layer_t *ls, const ss__pair_t *p,
              double sp, ss_score_t score, int64_t *kept, ss_err_t *err)
{
    const ss__layer_t *A = &ls[p->a];
    int64_t C = A->n_out, G = p->groups > 1 ? p->groups : 1, Cg = C / G;
    int64_t nk, c, q;
    scored_t *sc = NULL;
    int64_t *keep = NULL, *kcol = NULL;
    bool *gone = NULL, *gcol = NULL;
    double *delta = NULL;
    int pn = score == SS_SCORE_L1 ? 1 : 2, i, id, rc = 0;

    /* Equal numbers per group (G == 1: all channels are one group). */
    nk = Cg - (int64_t)llround(sp * (double)Cg);
    if (nk < 1)
        nk = 1;
    nk *= G;
    *kept = nk;
    if (nk >= C)
        return 0;
    if ((sc = ss_calloc((size_t)C, sizeof(*sc))) == NULL
        || (keep = ss_calloc((size_t)C, sizeof(*keep))) == NULL
        || (gone = ss_calloc((size_t)C, sizeof(*gone))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to prune");
        goto done;
    }
    for (c = 0; c < C; c++) {
        bool act = score == SS_SCORE_ACTIVATION && p->sd != NULL;
        /* Flattened, each column has its own spread: inside the norm. */
        const double *sd = act && p->spatial > 0 ? p->sd : NULL;
        double b = 0.0, a;

        for (i = 0; i < p->n_b; i++)
            b += b_norm(g, &ls[p->b[i]], p, c, sd,
                        score == SS_SCORE_ACTIVATION ? 2 : pn);
        if (sd != NULL)
            a = 1.0;
        else if (act)
            a = p->sd[c];
        else
            a = ss__slice_norm(g->values[A->w].constant, A->out_axis, c, pn)
                * bn_scale(g, p, c) * dw_scale(g, p, c, pn);
        sc[c].s = a * b;
        sc[c].c = c;
    }
    for (q = 0; q < G; q++) {
        scored_t *sg = sc + q * Cg;
        int64_t kg = nk / G;

        qsort(sg, (size_t)Cg, sizeof(*sc), cmp_scored);
        for (c = 0; c < kg; c++)
            keep[q * kg + c] = sg[c].c;
        for (c = kg; c < Cg; c++)
            gone[sg[c].c] = true;
    }
    qsort(keep, (size_t)nk, sizeof(*keep), cmp_i64);
    /* The Bs' side: a flattened channel c is columns c S .. c S + S - 1. */
    if (p->spatial > 0) {
        int64_t S = p->spatial, j;

        if ((kcol = ss_calloc((size_t)(C * S), sizeof(*kcol))) == NULL
            || (gcol = ss_calloc((size_t)(C * S), sizeof(*gcol))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory to prune");
            goto done;
        }
        for (c = 0; c < nk; c++)
            for (j = 0; j < S; j++)
                kcol[c * S + j] = keep[c] * S + j;
        for (c = 0; c < C * S; c++)
            gcol[c] = gone[c / S];
    }
    /* Fold the removed channels' means into every B's bias first, while
     * B's weight still has them. */
    for (i = 0; p->mean != NULL && p->b_groups == 1 && i < p->n_b; i++) {
        const ss__layer_t *B = &ls[p->b[i]];

        ss_free(delta);
        if ((delta = ss_calloc((size_t)B->n_out + 1, sizeof(double)))
            == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory to prune");
            goto done;
        }
        ss__lost_bias(g->values[B->w].constant, B->out_axis, in_axis(B),
                      gcol != NULL ? gcol : gone, p->mean, delta);
        if ((rc = ss__add_bias(g, B, delta, err)) < 0)
            goto done;
    }
    /* A's weight and bias. */
    if ((id = ss__slice_const(g, g->values[A->w].constant, A->out_axis, keep,
                              nk, err)) < 0) {
        rc = id;
        goto done;
    }
    g->nodes[A->node].inputs[1] = id;
    /* A bias that broadcasts one value to all channels stays as it is. */
    if (A->b >= 0 && g->values[A->b].constant->ndim >= 1
        && g->values[A->b].constant->dims[g->values[A->b].constant->ndim - 1]
           == C) {
        if ((id = ss__slice_const(g, g->values[A->b].constant,
                              g->values[A->b].constant->ndim - 1, keep, nk,
                              err)) < 0) {
            rc = id;
            goto done;
        }
        g->nodes[A->node].inputs[2] = id;
    }
    for (i = 0; i < p->n_slots; i++) {
        const ss__slot_t *s = &p->slots[i];
        int v = g->nodes[s->node].inputs[s->input];

        if ((id = ss__slice_const(g, g->values[v].constant, s->axis, keep, nk,
                              err)) < 0) {
            rc = id;
            goto done;
        }
        g->nodes[s->node].inputs[s->input] = id;
    }
    /* Depthwise convs on the chain: filters, biases, and group. */
    for (i = 0; i < p->n_dw; i++) {
        ss_node_t *nd = &g->nodes[p->dw[i]];
        int k, a;

        for (k = 1; k < nd->n_inputs && k < 3; k++) {
            if (nd->inputs[k] < 0)
                continue;
            if ((id = ss__slice_const(g, g->values[nd->inputs[k]].constant,
                                      0, keep, nk, err)) < 0) {
                rc = id;
                goto done;
            }
            nd = &g->nodes[p->dw[i]];
            nd->inputs[k] = id;
        }
        for (a = 0; a < nd->n_attrs; a++)
            if (strcmp(nd->attrs[a].name, "group") == 0)
                nd->attrs[a].i = nk;
    }
    for (i = 0; i < p->n_b; i++) {
        const ss__layer_t *B = &ls[p->b[i]];

        if (p->b_groups > 1)
            id = slice_grouped(g, g->values[B->w].constant, p, keep, nk,
                               err);
        else
            id = ss__slice_const(g, g->values[B->w].constant, in_axis(B),
                                 kcol != NULL ? kcol : keep,
                                 kcol != NULL ? nk * p->spatial : nk, err);
        if (id < 0) {
            rc = id;
            goto done;
        }
        g->nodes[B->node].inputs[1] = id;
    }
done:
    ss_free(sc);
    ss_free(keep);
    ss_free(kcol);
    ss_free(gone);
    ss_free(gcol);
    ss_free(delta);
    return rc;
}

/* Entries of h's channel axis: A's channels, times the columns of each
 * when flattened. */
static int64_t
h_cols(const ss__pair_t *p)
{
    return p->spatial > 0 ? p->channels * p->spatial : p->channels;
}

/* Adds tensor t's per-channel sums into sum/sq; *count gets the number of
 * entries per channel. */
static void
accumulate(const ss_tensor_t *t, int ax, double *sum, double *sq,
           double *count)
{
    int64_t C = t->dims[ax], outer = 1, inner = 1, a, ch, i;
    const float *x = t->data;
    int d;

    for (d = 0; d < ax; d++)
        outer *= t->dims[d];
    for (d = ax + 1; d < t->ndim; d++)
        inner *= t->dims[d];
    for (a = 0; a < outer; a++)
        for (ch = 0; ch < C; ch++)
            for (i = 0; i < inner; i++) {
                double v = x[(a * C + ch) * inner + i];

                sum[ch] += v;
                sq[ch] += v * v;
            }
    *count += (double)(outer * inner);
}

int
ss__prune_stats(ss__cx_t *cx, const ss_graph_t *g, ss__pair_t *ps, int np,
                ss_err_t *err)
{
    const ss_dataset_t *ds = cx->calib;
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    ss_tensor_t *views = NULL;
    double *count = NULL;
    int64_t r0, n, ch;
    int k, rc;

    if ((rc = ss_graph_clone(g, &c, err)) < 0)
        goto done;
    for (k = 0; k < np; k++)
        if ((rc = ss_graph_add_output(c, ps[k].h, err)) < 0)
            goto done;
    if ((rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, cx->ctl->threads, err)) < 0)
        goto done;
    if ((views = ss_calloc((size_t)ds->n_inputs + 1, sizeof(*views))) == NULL
        || (count = ss_calloc((size_t)np, sizeof(double))) == NULL)
        goto nomem;
    for (k = 0; k < np; k++)
        if ((ps[k].mean = ss_calloc((size_t)h_cols(&ps[k]) + 1,
                                    sizeof(double))) == NULL
            || (ps[k].sd = ss_calloc((size_t)h_cols(&ps[k]) + 1,
                                     sizeof(double))) == NULL)
            goto nomem;
    for (r0 = 0; r0 < ds->rows; r0 += n) {
        const ss_tensor_t *o;

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        n = ds->rows - r0 < SS__CX_CHUNK ? ds->rows - r0 : SS__CX_CHUNK;
        ss__dataset_slice(ds, r0, n, views);
        if ((rc = ss__runner_run(&r, views, &o, err)) < 0)
            goto done;
        for (k = 0; k < np; k++) {
            const ss_tensor_t *t = &o[g->n_outputs + k];
            int ax = ps[k].conv && ps[k].spatial == 0 ? 1 : t->ndim - 1;

            if (t->dtype != SS_DTYPE_F32 || ax < 0 || ax >= t->ndim
                || t->dims[ax] != h_cols(&ps[k])) {
                rc = ss_err_set(err, SS_EUNSUPP, "pruning: hidden tensor "
                                "%d is not f32 with %lld channels", k,
                                (long long)h_cols(&ps[k]));
                goto done;
            }
            accumulate(t, ax, ps[k].mean, ps[k].sd, &count[k]);
        }
    }
    for (k = 0; k < np; k++)
        for (ch = 0; ch < h_cols(&ps[k]); ch++) {
            double m = ps[k].mean[ch] / count[k];
            double v = ps[k].sd[ch] / count[k] - m * m;

            ps[k].mean[ch] = m;
            ps[k].sd[ch] = v > 0.0 ? sqrt(v) : 0.0;
        }
    rc = 0;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory for channel statistics");
done:
    if (rc < 0)
        for (k = 0; k < np; k++) {
            ss_free(ps[k].mean);
            ss_free(ps[k].sd);
            ps[k].mean = ps[k].sd = NULL;
        }
    ss_free(count);
    ss_free(views);
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}
