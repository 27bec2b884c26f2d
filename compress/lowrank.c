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
 * than the other (what a later int8 pass wants).  A layer is left alone
 * when r (m + n) >= m n: the two products would cost more than one.
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
    info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m,
                          (lapack_int)n, w, (lapack_int)n, s, u,
                          (lapack_int)k, vt, (lapack_int)n);
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
    if (rank * (m + n) >= m * n)
        goto done;              /* not worth it: *r stays 0 */
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

/* Replaces layer l by two products; *rank_out is 0 when it was skipped. */
static int
factor_layer(ss_graph_t *g, const ss__layer_t *l, double energy,
             double ratio, int64_t *rank_out, ss_err_t *err)
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
    if ((rc = ss__svd_factor(wt->data, m, n, energy, ratio, &r, &A, &B,
                             err)) < 0 || r == 0)
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

int
ss__lowrank(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            json_t *note, ss_err_t *err)
{
    ss__layer_t *layers = NULL;
    json_t *arr = json_array();
    int n = 0, i, done_n = 0, rc;

    if (arr == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    if ((rc = ss__find_layers(*g, &layers, &n, err)) < 0)
        goto done;
    for (i = 0; i < n; i++) {
        ss__layer_t *l = &layers[i];
        const ss_tensor_t *w = (*g)->values[l->w].constant;
        char label[256];
        double energy, ratio;
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
            continue;
        }
        if ((rc = factor_layer(*g, l, energy, ratio, &r, err)) < 0)
            goto done;
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:I}",
                                             "layer", label,
                                             "m", (json_int_t)w->dims[0],
                                             "n", (json_int_t)w->dims[1],
                                             "rank", (json_int_t)r));
        done_n += r > 0;
    }
    if (done_n > 0 && (rc = ss_graph_finalize(*g, err)) < 0)
        goto done;
    json_object_set_new(note, "layers", arr);
    arr = NULL;
    json_object_set_new(note, "factored", json_integer(done_n));
    json_object_set_new(note, "changed", json_boolean(done_n > 0));
    if (done_n == 0)
        json_object_set_new(note, "reason", json_string(n == 0
            ? "no MatMul, Gemm or Conv with a constant weight"
            : "at this energy/ratio no layer's factors save enough "
              "multiply-adds (see the layers' ranks)"));
    json_object_set_new(note, "note", json_string(
        "rank 0: the layer was kept (its factors cost at least its "
        "multiply-adds: r(m+n) >= mn; a conv's more than 1/2 of them as "
        "channel factors, 1/3 as spatial ones)"));
    rc = 0;
done:
    json_decref(arr);
    ss_free(layers);
    return rc;
}
