/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Low-rank factorization: a MatMul/Gemm with a constant weight W (m x n)
 * becomes two thinner products from a truncated SVD, W ~ A B with A
 * (m x r) and B (r x n).
 *
 * DESIGN: LAPACKE's sgesdd gives W = U S V^T; the rank is the smallest r
 * whose leading singular values keep the asked fraction of the spectral
 * energy (sum of s^2), or ratio * min(m, n).  The singular values are
 * split as sqrt(S) into both factors so neither has a much larger range
 * than the other (what a later int8 pass wants).  A layer is factored
 * only when its factors cost at most a share of its multiply-adds
 * (lr_limit, ss__lowrank_pays): 2/3 for MatMul/Gemm, not merely fewer --
 * two products and the r-wide tensor between them cost more per
 * multiply-add than one, and the first product's kernel call is a fixed
 * cost.  Measured on the 2-vCPU EPYC (AVX-512, 1 thread, one Gemm against
 * MatMul + Gemm at rank r, 4 copies of each layer per run, 3-5 rounds,
 * load 11-14; ratios of CPU time): at batch 32 the factors ran at their
 * share of the MACs plus 0.05-0.1 (0.9 of them: 0.91-1.05x the time, 0.7:
 * 0.65-0.80x); at batch 1 small layers (256x256, 784x128, 512x1000 at
 * ~5-30 us) ran 1.06-1.2x at 0.8, 0.92-1.0x at 0.7, 0.77-1.05x at 2/3,
 * 0.77-0.92x at 0.6; 768x768 and 1280x1000 0.57-0.78x at 2/3
 * (bench/lowrank_cost.py).  So 2/3 keeps every case near or below
 * break-even and most at ~0.75x; above it the saving is noise at best
 * and the factors still cost accuracy.
 * Convs (lowrank_conv.c) are in the same table at 1/2 and 1/3.
 * Gemm's bias, alpha and beta stay on the second product; the first is a
 * plain MatMul, which also covers Gemm with transB (then x W^T =
 * (x B^T) A^T).  Convolutions: lowrank_conv.c (channel or spatial).
 *
 * THREADS: runs on the compress thread; LAPACK's own threads are
 * OpenBLAS's business.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lapacke.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "compress/internal.h"

int
ss__svd_factor(const float *a, int64_t m, int64_t n, double energy,
               double ratio, int64_t *r, float **A, float **B, ss_err_t *err)
{
    int64_t k = m < n ? m : n, i, j, rank;
    float *w = NULL, *s = NULL, *u = NULL, *vt = NULL, *fa = NULL, *fb = NULL;
    double total = 0.0, acc = 0.0;
    lapack_int info;
    int rc = 0;

    *r = 0;
    *A = NULL;
    *B = NULL;
    if (m <= 0 || n <= 0 || m > INT32_MAX / (n > 0 ? n : 1))
        return ss_err_set(err, SS_EUNSUPP, "matrix %lldx%lld cannot be "
                          "factored", (long long)m, (long long)n);
    if ((w = ss_malloc(sizeof(float) * (size_t)(m * n))) == NULL
        || (s = ss_malloc(sizeof(float) * (size_t)k)) == NULL
        || (u = ss_malloc(sizeof(float) * (size_t)(m * k))) == NULL
        || (vt = ss_malloc(sizeof(float) * (size_t)(k * n))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for an SVD");
        goto done;
    }
    memcpy(w, a, sizeof(float) * (size_t)(m * n));
    /* The row-major W is the column-major W^T = U' S V'^T, and then
     * W = V' S U'^T: LAPACK's U' (n x k, column-major) is W's V^T (k x n,
     * row-major) byte for byte, its V'^T W's U.  So LAPACK runs on its
     * own layout: no transposed copies in LAPACKE's row-major wrapper,
     * and not the row-major path, which on vgg11's 4096 x 25088 fc1 with
     * a cluster of 512 equal singular values returned factors 6.9e-2
     * (relative Frobenius) off W's rank-512 truncation where this call
     * gives 1.9e-6 (session 31, docs/ops.md). */
    info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n,
                          (lapack_int)m, w, (lapack_int)n, s, vt,
                          (lapack_int)n, u, (lapack_int)k);
    if (info != 0) {
        rc = ss_err_set(err, SS_EINTERNAL, "SVD of a %lldx%lld weight "
                        "failed (LAPACK info %d)", (long long)m,
                        (long long)n, (int)info);
        goto done;
    }
    for (i = 0; i < k; i++)
        total += (double)s[i] * s[i];
    if (energy > 0.0) {
        for (rank = 0; rank < k; rank++) {
            acc += (double)s[rank] * s[rank];
            if (acc >= energy * total * (1.0 - 1e-12))
                break;
        }
        rank++;
    } else {
        rank = (int64_t)ceil(ratio * (double)k);
    }
    if (rank < 1)
        rank = 1;
    if (rank > k)
        rank = k;
    if ((fa = ss_malloc(sizeof(float) * (size_t)(m * rank))) == NULL
        || (fb = ss_malloc(sizeof(float) * (size_t)(rank * n))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for low-rank factors");
        goto done;
    }
    for (j = 0; j < rank; j++) {
        float sq = sqrtf(s[j]);

        for (i = 0; i < m; i++)
            fa[i * rank + j] = u[i * k + j] * sq;
        for (i = 0; i < n; i++)
            fb[j * n + i] = vt[j * n + i] * sq;
    }
    *r = rank;
    *A = fa;
    *B = fb;
    fa = fb = NULL;
done:
    ss_free(w);
    ss_free(s);
    ss_free(u);
    ss_free(vt);
    ss_free(fa);
    ss_free(fb);
    return rc;
}

/* The largest share of a layer's multiply-adds its factors may cost
 * (DESIGN above), as num / den. */
static const struct {
    const char *name;
    int64_t num, den;
} lr_limit[SS__LR_N] = {
    [SS__LR_LINEAR] = { "Linear", 2, 3 },
    [SS__LR_CHANNEL] = { "conv channel", 1, 2 },
    [SS__LR_SPATIAL] = { "conv spatial", 1, 3 },
};

bool
ss__lowrank_pays(ss__lr_kind_t kind, int64_t after, int64_t before)
{
    SS_ASSERT(kind >= 0 && kind < SS__LR_N);
    return after * lr_limit[kind].den <= before * lr_limit[kind].num;
}

/* Replaces layer l by two products; *rank_out is 0 when it was kept, and
 * *frac the share of its multiply-adds the factors would cost. */
static int
factor_layer(ss_graph_t *g, const ss__layer_t *l, double energy,
             double ratio, int64_t *rank_out, double *frac, ss_err_t *err)
{
    const ss_tensor_t *wt = g->values[l->w].constant;
    const ss_node_t *nd = &g->nodes[l->node];
    int64_t m = wt->dims[0], n = wt->dims[1], r, i, j, d[2];
    float *A = NULL, *B = NULL, *p1, *p2;
    int trans = l->kind == SS__LAYER_GEMM && l->out_axis == 0;
    int in_x = l->x, y = nd->outputs[0], c = l->b, node = l->node;
    int v1, v2, t, ins[3], outs[1], rc;
    char name[256];
    char *base = NULL;

    *rank_out = 0;
    *frac = 0.0;
    if ((rc = ss__svd_factor(wt->data, m, n, energy, ratio, &r, &A, &B,
                             err)) < 0)
        goto done;
    *frac = (double)(r * (m + n)) / (double)(m * n);
    if (!ss__lowrank_pays(SS__LR_LINEAR, r * (m + n), m * n))
        goto done;
    if ((base = ss_strdup(ss__node_label(g, node))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a name");
        goto done;
    }
    /* First factor (x side) as a MatMul weight [K, r]; second as the
     * layer's own weight layout. */
    if (trans) {
        /* W [N,K] ~ A [N,r] B [r,K]: first weight B^T [K,r], second A
         * [N,r] with transB. */
        d[0] = n;
        d[1] = r;
        if ((v1 = ss__new_const(g, NULL, SS_DTYPE_F32, 2, d, (void **)&p1,
                                err)) < 0) {
            rc = v1;
            goto done;
        }
        for (i = 0; i < r; i++)
            for (j = 0; j < n; j++)
                p1[j * r + i] = B[i * n + j];
        d[0] = m;
        d[1] = r;
        if ((v2 = ss__new_const(g, NULL, SS_DTYPE_F32, 2, d, (void **)&p2,
                                err)) < 0) {
            rc = v2;
            goto done;
        }
        memcpy(p2, A, sizeof(float) * (size_t)(m * r));
    } else {
        d[0] = m;
        d[1] = r;
        if ((v1 = ss__new_const(g, NULL, SS_DTYPE_F32, 2, d, (void **)&p1,
                                err)) < 0) {
            rc = v1;
            goto done;
        }
        memcpy(p1, A, sizeof(float) * (size_t)(m * r));
        d[0] = r;
        d[1] = n;
        if ((v2 = ss__new_const(g, NULL, SS_DTYPE_F32, 2, d, (void **)&p2,
                                err)) < 0) {
            rc = v2;
            goto done;
        }
        memcpy(p2, B, sizeof(float) * (size_t)(r * n));
    }
    if ((t = ss_graph_add_value(g, NULL, NULL, err)) < 0) {
        rc = t;
        goto done;
    }
    ss_graph_kill_node(g, node);
    ins[0] = in_x;
    ins[1] = v1;
    outs[0] = t;
    snprintf(name, sizeof(name), "%s/lowrank_a", base);
    if ((rc = ss_graph_add_node(g, "MatMul", name, 2, ins, 1, outs, 0, NULL,
                                err)) < 0)
        goto done;
    ins[0] = t;
    ins[1] = v2;
    ins[2] = c;
    outs[0] = y;
    snprintf(name, sizeof(name), "%s/lowrank_b", base);
    nd = &g->nodes[node];       /* add_node may have moved the array */
    if (l->kind == SS__LAYER_GEMM)
        rc = ss_graph_add_node(g, "Gemm", name, c >= 0 ? 3 : 2, ins, 1, outs,
                               nd->n_attrs, nd->attrs, err);
    else
        rc = ss_graph_add_node(g, "MatMul", name, 2, ins, 1, outs, 0, NULL,
                               err);
    if (rc < 0)
        goto done;
    rc = 0;
    *rank_out = r;
done:
    ss_free(A);
    ss_free(B);
    ss_free(base);
    return rc;
}

/* The limits as text: "Linear 2/3, conv channel 1/2, ...". */
static void
limits(char *buf, size_t len)
{
    size_t o = 0;
    int k;

    buf[0] = '\0';
    for (k = 0; k < SS__LR_N && o < len; k++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s %lld/%lld",
                              k > 0 ? ", " : "", lr_limit[k].name,
                              (long long)lr_limit[k].num,
                              (long long)lr_limit[k].den);
}

/* Tracks the kept layer whose factors came closest to paying: the last
 * entry of arr (its label is borrowed from arr). */
static void
closest_to(json_t *arr, const char **best, double *best_frac)
{
    json_t *e = json_array_get(arr, json_array_size(arr) - 1);
    json_t *f = json_object_get(e, "macs_fraction");

    if (e == NULL || f == NULL
        || json_integer_value(json_object_get(e, "rank")) > 0)
        return;
    if (*best == NULL || json_number_value(f) < *best_frac) {
        *best = json_string_value(json_object_get(e, "layer"));
        *best_frac = json_number_value(f);
    }
}

int
ss__lowrank(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            json_t *note, ss_err_t *err)
{
    ss__layer_t *layers = NULL;
    json_t *arr = json_array();
    const char *best = NULL;
    double best_frac = 0.0;
    char lim[160];
    int n = 0, i, done_n = 0, rc;

    if (arr == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    if ((rc = ss__find_layers(*g, &layers, &n, err)) < 0)
        goto done;
    for (i = 0; i < n; i++) {
        ss__layer_t *l = &layers[i];
        const ss_tensor_t *w = (*g)->values[l->w].constant;
        char label[256];
        double energy, ratio, frac;
        int64_t r = 0;

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        ss__cx_progress(cx, (double)i / n, "low-rank: factoring");
        snprintf(label, sizeof(label), "%s", ss__node_label(*g, l->node));
        energy = m->u.lowrank.energy;
        ratio = m->u.lowrank.ratio;
        if (m->per_layer != NULL) {
            /* The search's rank for this layer (compress.h). */
            energy = 0.0;
            if ((ratio = m->per_layer(m->per_layer_arg, label)) <= 0.0)
                continue;
            ratio = ratio > 1.0 ? 1.0 : ratio;
        }
        if (l->kind == SS__LAYER_CONV) {
            json_t *e = json_pack("{s:s, s:I, s:I, s:I}", "layer", label,
                                  "out", (json_int_t)w->dims[0],
                                  "in", (json_int_t)w->dims[1], "rank",
                                  (json_int_t)0);

            if (e == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
                goto done;
            }
            json_array_append_new(arr, e);
            if ((rc = ss__lowrank_conv(*g, l, energy, ratio, e, err)) < 0)
                goto done;
            done_n += json_integer_value(json_object_get(e, "rank")) > 0;
            closest_to(arr, &best, &best_frac);
            continue;
        }
        if ((rc = factor_layer(*g, l, energy, ratio, &r, &frac, err)) < 0)
            goto done;
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I, s:f}",
                                             "layer", label,
                                             "m", (json_int_t)w->dims[0],
                                             "n", (json_int_t)w->dims[1],
                                             "rank", (json_int_t)r,
                                             "macs_fraction", frac));
        done_n += r > 0;
        closest_to(arr, &best, &best_frac);
    }
    if (done_n > 0 && (rc = ss_graph_finalize(*g, err)) < 0)
        goto done;
    json_object_set_new(note, "layers", arr);
    arr = NULL;
    json_object_set_new(note, "factored", json_integer(done_n));
    json_object_set_new(note, "changed", json_boolean(done_n > 0));
    limits(lim, sizeof(lim));
    if (done_n == 0 && n == 0)
        json_object_set_new(note, "reason", json_string(
            "no MatMul, Gemm or Conv with a constant weight"));
    else if (done_n == 0 && best == NULL)
        json_object_set_new(note, "reason", json_string(
            "no layer here can be factored (grouped, non-2-D and auto_pad "
            "convs are kept)"));
    else if (done_n == 0)
        json_object_set_new(note, "reason", json_sprintf(
            "no layer's factors cost at most the share of its "
            "multiply-adds that pays (%s); the closest: '%s' at %.3f",
            lim, best, best_frac));
    json_object_set_new(note, "note", json_sprintf(
        "rank 0: the layer was kept: its factors would cost macs_fraction "
        "of its multiply-adds, more than pays (%s)", lim));
    rc = 0;
done:
    json_decref(arr);
    ss_free(layers);
    return rc;
}
