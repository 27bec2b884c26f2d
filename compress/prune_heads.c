/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured pruning of attention heads.
 *
 * DESIGN: only the pattern torch.onnx.export writes for a hand-written or
 * fused-qkv attention is recognized, strictly, value by value:
 *
 *   x -MatMul(W [d, 3 H dh])-> (+bias) -Reshape(Concat(n, t, 3, H, dh))->
 *   Transpose[2,0,3,1,4] -Gather 0/1/2-> q, k, v;
 *   k -Transpose[0,1,3,2]-> MatMul(q, .) -(Div/Mul by a scalar)->
 *   Softmax(last) -MatMul(., v)-> o [n, H, t, dh] -Transpose[0,2,1,3]->
 *   Reshape(Concat(n, t, d) or a constant) -> MatMul/Gemm(W_out [H dh, .])
 *
 * with every intermediate read by exactly one node.  Removing head h
 * removes its q, k and v columns of W (and bias), its rows of W_out, and
 * changes the two shapes: H in the first Concat becomes H', and the last
 * dim of the second shape becomes -1 (it came from a Shape of the
 * residual stream, which keeps d).  The softmax scale 1/sqrt(dh) does not
 * change.  Importance: ||W's head columns|| * ||W_out's head rows||, or
 * with calibration data and activation scores the measured damage of
 * removing that head alone (prune.c sets h->score; heads are few, and a
 * head's role in attention shows in no weight norm); the removed heads'
 * mean outputs can be folded into the projection's bias like neurons
 * (prune_cut.c).
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/prune_int.h"

void
ss__heads_clear(ss__heads_t *h)
{
    ss_free(h->mean);
    ss_free(h->sd);
    ss_free(h->score);
    memset(h, 0, sizeof(*h));
}

/* The only reader of v (not a graph output), or -1. */
static int
single(const ss__uses_t *u, int v)
{
    return v >= 0 && u->count[v] == 1 && !u->is_output[v] ? u->nodes[v][0]
                                                           : -1;
}

static bool
op_is(const ss_graph_t *g, int n, const char *op)
{
    return n >= 0 && strcmp(g->nodes[n].op_type, op) == 0
           && (g->nodes[n].domain == NULL || g->nodes[n].domain[0] == '\0');
}

static bool
perm_is(const ss_graph_t *g, int n, const int64_t *want, int len)
{
    const int64_t *p;
    int k;

    if (!op_is(g, n, "Transpose") || ss__attr_ints(&g->nodes[n], "perm", &p)
                                     != len)
        return false;
    for (k = 0; k < len; k++)
        if (p[k] != want[k])
            return false;
    return true;
}

/* A one-element int64 constant's value. */
static bool
i64_of(const ss_graph_t *g, int v, int64_t *out)
{
    const ss_tensor_t *t = v >= 0 ? g->values[v].constant : NULL;

    if (t == NULL || t->dtype != SS_DTYPE_I64 || ss_tensor_numel(t) != 1)
        return false;
    *out = *(const int64_t *)t->data;
    return true;
}

/* Matches the pattern from layer ai; fills h when it holds. */
static bool
match(const ss_graph_t *g, const ss__uses_t *u, const ss__layer_t *ls,
      int nl, int ai, ss__heads_t *h)
{
    static const int64_t p0[5] = { 2, 0, 3, 1, 4 }, pk[4] = { 0, 1, 3, 2 };
    static const int64_t po[4] = { 0, 2, 1, 3 };
    const ss__layer_t *A = &ls[ai];
    int64_t three, idx, N = A->n_out;
    int v, n, c, k, q = -1, kk = -1, vv = -1, tr, mm1, mm2, i;

    memset(h, 0, sizeof(*h));
    h->bias_node = h->o_node = -1;
    if (A->kind != SS__LAYER_MATMUL)
        return false;
    v = g->nodes[A->node].outputs[0];
    n = single(u, v);
    if (op_is(g, n, "Add") && g->nodes[n].n_inputs == 2) {
        int j = g->nodes[n].inputs[0] == v ? 1 : 0;
        const ss_tensor_t *b = g->values[g->nodes[n].inputs[j]].constant;

        if (b == NULL || b->dtype != SS_DTYPE_F32 || b->ndim != 1
            || b->dims[0] != N)
            return false;
        h->bias_node = n;
        h->bias_input = j;
        v = g->nodes[n].outputs[0];
        n = single(u, v);
    }
    if (!op_is(g, n, "Reshape") || g->nodes[n].inputs[0] != v)
        return false;
    c = g->values[g->nodes[n].inputs[1]].producer;
    if (!op_is(g, c, "Concat") || g->nodes[c].n_inputs != 5
        || !i64_of(g, g->nodes[c].inputs[2], &three) || three != 3
        || !i64_of(g, g->nodes[c].inputs[3], &h->H)
        || !i64_of(g, g->nodes[c].inputs[4], &h->dh)
        || h->H < 2 || h->dh < 1 || 3 * h->H * h->dh != N)
        return false;
    h->h_node = c;
    h->h_input = 3;
    tr = single(u, g->nodes[n].outputs[0]);
    if (!perm_is(g, tr, p0, 5))
        return false;
    v = g->nodes[tr].outputs[0];
    if (u->count[v] != 3 || u->is_output[v])
        return false;
    for (k = 0; k < 3; k++) {
        const ss_node_t *gn = &g->nodes[u->nodes[v][k]];

        if (!op_is(g, u->nodes[v][k], "Gather") || gn->inputs[0] != v
            || ss__attr_int(gn, "axis", 0) != 0
            || !i64_of(g, gn->inputs[1], &idx) || idx < 0 || idx > 2)
            return false;
        if (idx == 0)
            q = gn->outputs[0];
        else if (idx == 1)
            kk = gn->outputs[0];
        else
            vv = gn->outputs[0];
    }
    if (q < 0 || kk < 0 || vv < 0)
        return false;
    n = single(u, kk);
    if (!perm_is(g, n, pk, 4))
        return false;
    mm1 = single(u, g->nodes[n].outputs[0]);
    if (!op_is(g, mm1, "MatMul") || single(u, q) != mm1
        || g->nodes[mm1].inputs[0] != q)
        return false;
    n = single(u, g->nodes[mm1].outputs[0]);
    while (op_is(g, n, "Div") || op_is(g, n, "Mul")) {
        int other = g->nodes[n].inputs[1];
        const ss_tensor_t *t = other >= 0 ? g->values[other].constant : NULL;

        if (t == NULL || ss_tensor_numel(t) != 1)
            return false;
        n = single(u, g->nodes[n].outputs[0]);
    }
    if (!op_is(g, n, "Softmax")
        || (ss__attr_int(&g->nodes[n], "axis", -1) != -1
            && ss__attr_int(&g->nodes[n], "axis", -1) != 3))
        return false;
    mm2 = single(u, g->nodes[n].outputs[0]);
    if (!op_is(g, mm2, "MatMul") || single(u, vv) != mm2
        || g->nodes[mm2].inputs[1] != vv)
        return false;
    h->o = g->nodes[mm2].outputs[0];
    n = single(u, h->o);
    if (!perm_is(g, n, po, 4))
        return false;
    v = g->nodes[n].outputs[0];
    n = single(u, v);
    if (!op_is(g, n, "Reshape") || g->nodes[n].inputs[0] != v)
        return false;
    {
        int s = g->nodes[n].inputs[1];
        const ss_tensor_t *st = g->values[s].constant;

        c = g->values[s].producer;
        if (st != NULL && st->dtype == SS_DTYPE_I64 && st->ndim == 1
            && st->dims[0] == 3) {
            h->o_node = n;
            h->o_input = 1;
            h->o_const = true;
        } else if (op_is(g, c, "Concat") && g->nodes[c].n_inputs == 3) {
            h->o_node = c;
            h->o_input = 2;
        } else {
            return false;
        }
    }
    v = g->nodes[n].outputs[0];
    n = single(u, v);
    for (i = 0; i < nl; i++)
        if (ls[i].node == n)
            break;
    if (i == nl || ls[i].x != v || ls[i].kind == SS__LAYER_CONV
        || g->values[ls[i].w].constant->dims[ls[i].out_axis == 0 ? 1 : 0]
           != h->H * h->dh)
        return false;
    h->a = ai;
    h->b = i;
    return true;
}

int
ss__heads_next(const ss_graph_t *g, json_t *done, ss__heads_t *h,
               bool *found, ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    ss__uses_t u = {0};
    int nl = 0, i, rc;

    *found = false;
    memset(h, 0, sizeof(*h));
    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0
        || (rc = ss__uses_build(g, &u, err)) < 0)
        goto done;
    for (i = 0; i < nl && !*found; i++) {
        const char *out = g->values[g->nodes[ls[i].node].outputs[0]].name;
        size_t k;

        for (k = 0; k < json_array_size(done); k++)
            if (strcmp(json_string_value(json_array_get(done, k)), out) == 0)
                break;
        if (k == json_array_size(done) && match(g, &u, ls, nl, i, h))
            *found = true;
    }
    if (!*found)
        memset(h, 0, sizeof(*h));
done:
    ss__uses_clear(&u);
    ss_free(ls);
    return rc;
}

int
ss__heads_stats(ss__cx_t *cx, const ss_graph_t *g, ss__heads_t *h,
                ss_err_t *err)
{
    const ss_dataset_t *ds = cx->calib;
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    ss_tensor_t *views = NULL;
    int64_t C = h->H * h->dh, r0, n, ch;
    double count = 0.0;
    int rc;

    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (rc = ss_graph_add_output(c, h->o, err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, cx->ctl->threads, err)) < 0)
        goto done;
    if ((views = ss_calloc((size_t)ds->n_inputs + 1, sizeof(*views))) == NULL
        || (h->mean = ss_calloc((size_t)C, sizeof(double))) == NULL
        || (h->sd = ss_calloc((size_t)C, sizeof(double))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for head statistics");
        goto done;
    }
    for (r0 = 0; r0 < ds->rows; r0 += n) {
        const ss_tensor_t *o;
        const float *x;
        int64_t a, hh, t, j;

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        n = ds->rows - r0 < SS__CX_CHUNK ? ds->rows - r0 : SS__CX_CHUNK;
        ss__dataset_slice(ds, r0, n, views);
        if ((rc = ss__runner_run(&r, views, &o, err)) < 0)
            goto done;
        o = &o[g->n_outputs];
        if (o->dtype != SS_DTYPE_F32 || o->ndim != 4 || o->dims[1] != h->H
            || o->dims[3] != h->dh) {
            rc = ss_err_set(err, SS_EUNSUPP, "attention output is not "
                            "[n, %lld, t, %lld] f32", (long long)h->H,
                            (long long)h->dh);
            goto done;
        }
        x = o->data;
        for (a = 0; a < o->dims[0]; a++)
            for (hh = 0; hh < h->H; hh++)
                for (t = 0; t < o->dims[2]; t++)
                    for (j = 0; j < h->dh; j++) {
                        double y = *x++;

                        h->mean[hh * h->dh + j] += y;
                        h->sd[hh * h->dh + j] += y * y;
                    }
        count += (double)(o->dims[0] * o->dims[2]);
    }
    for (ch = 0; ch < C; ch++) {
        double m = h->mean[ch] / count, v = h->sd[ch] / count - m * m;

        h->mean[ch] = m;
        h->sd[ch] = v > 0.0 ? sqrt(v) : 0.0;
    }
done:
    if (rc < 0) {
        ss_free(h->mean);
        ss_free(h->sd);
        h->mean = h->sd = NULL;
    }
    ss_free(views);
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}

typedef struct hscore {
    double s;
    int64_t h;
} hscore_t;

static int
cmp_hscore(const void *a, const void *b)
{
    const hscore_t *x = a, *y = b;

    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->h < y->h ? -1 : x->h > y->h;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* A new int64 constant like the one at node input (or [1]) with value. */
static int
shape_const(ss_graph_t *g, int node, int input, int64_t last, bool copy,
            ss_err_t *err)
{
    const ss_tensor_t *old = g->values[g->nodes[node].inputs[input]].constant;
    int64_t one = 1, *d;
    int id;

    if (copy) {
        id = ss__new_const(g, NULL, SS_DTYPE_I64, old->ndim, old->dims,
                           (void **)&d, err);
        if (id >= 0) {
            old = g->values[g->nodes[node].inputs[input]].constant;
            memcpy(d, old->data, sizeof(int64_t)
                                 * (size_t)ss_tensor_numel(old));
            d[ss_tensor_numel(old) - 1] = last;
        }
    } else {
        id = ss__new_const(g, NULL, SS_DTYPE_I64, 1, &one, (void **)&d, err);
        if (id >= 0)
            d[0] = last;
    }
    if (id >= 0)
        g->nodes[node].inputs[input] = id;
    return id;
}

int
ss__heads_cut(ss_graph_t *g, const ss__heads_t *h, double sp,
              ss_score_t score, int64_t *kept, ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    const ss__layer_t *A, *B;
    int64_t H = h->H, dh = h->dh, nk, hh, j, s, n;
    hscore_t *sc = NULL;
    int64_t *keep = NULL, *cols = NULL, *rows = NULL;
    bool *gone = NULL;
    double *delta = NULL;
    int pn = score == SS_SCORE_L1 ? 1 : 2, nl = 0, bin, id, rc;

    nk = H - (int64_t)llround(sp * (double)H);
    if (nk < 1)
        nk = 1;
    *kept = nk;
    if (nk >= H)
        return 0;
    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0)
        goto done;
    A = &ls[h->a];
    B = &ls[h->b];
    bin = B->out_axis == 0 ? 1 : 0;
    if ((sc = ss_calloc((size_t)H, sizeof(*sc))) == NULL
        || (keep = ss_calloc((size_t)H, sizeof(*keep))) == NULL
        || (cols = ss_calloc((size_t)(3 * H * dh), sizeof(*cols))) == NULL
        || (rows = ss_calloc((size_t)(H * dh), sizeof(*rows))) == NULL
        || (gone = ss_calloc((size_t)(H * dh), sizeof(*gone))) == NULL
        || (delta = ss_calloc((size_t)B->n_out + 1, sizeof(*delta)))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to prune heads");
        goto done;
    }
    for (hh = 0; hh < H; hh++) {
        double a = 0.0, b = 0.0;

        for (j = 0; j < dh; j++) {
            double wb = ss__slice_norm(g->values[B->w].constant, bin,
                                       hh * dh + j, score
                                       == SS_SCORE_ACTIVATION ? 2 : pn);

            if (score == SS_SCORE_ACTIVATION && h->sd != NULL) {
                a += h->sd[hh * dh + j] * h->sd[hh * dh + j] * wb * wb;
                continue;
            }
            b += pn == 1 ? wb : wb * wb;
            for (s = 0; s < 3; s++) {
                double wa = ss__slice_norm(g->values[A->w].constant, 1,
                                           s * H * dh + hh * dh + j, pn);

                a += pn == 1 ? wa : wa * wa;
            }
        }
        sc[hh].s = h->score != NULL ? h->score[hh]
                   : score == SS_SCORE_ACTIVATION && h->sd != NULL ? sqrt(a)
                   : pn == 1 ? a * b : sqrt(a) * sqrt(b);
        sc[hh].h = hh;
    }
    qsort(sc, (size_t)H, sizeof(*sc), cmp_hscore);
    for (hh = 0; hh < nk; hh++)
        keep[hh] = sc[hh].h;
    qsort(keep, (size_t)nk, sizeof(*keep), cmp_i64);
    for (n = 0, s = 0; s < 3; s++)
        for (hh = 0; hh < nk; hh++)
            for (j = 0; j < dh; j++)
                cols[n++] = s * H * dh + keep[hh] * dh + j;
    for (n = 0, hh = 0; hh < nk; hh++)
        for (j = 0; j < dh; j++)
            rows[n++] = keep[hh] * dh + j;
    for (hh = 0; hh < H * dh; hh++)
        gone[hh] = true;
    for (hh = 0; hh < nk * dh; hh++)
        gone[rows[hh]] = false;
    if (h->mean != NULL) {
        ss__lost_bias(g->values[B->w].constant, B->out_axis, bin, gone,
                      h->mean, delta);
        if ((rc = ss__add_bias(g, B, delta, err)) < 0)
            goto done;
    }
    if ((id = ss__slice_const(g, g->values[A->w].constant, 1, cols,
                              3 * nk * dh, err)) < 0)
        goto fail;
    g->nodes[A->node].inputs[1] = id;
    if (h->bias_node >= 0) {
        int bv = g->nodes[h->bias_node].inputs[h->bias_input];

        if ((id = ss__slice_const(g, g->values[bv].constant, 0, cols,
                                  3 * nk * dh, err)) < 0)
            goto fail;
        g->nodes[h->bias_node].inputs[h->bias_input] = id;
    }
    if ((id = ss__slice_const(g, g->values[B->w].constant, bin, rows,
                              nk * dh, err)) < 0)
        goto fail;
    g->nodes[B->node].inputs[1] = id;
    if ((id = shape_const(g, h->h_node, h->h_input, nk, true, err)) < 0
        || (id = shape_const(g, h->o_node, h->o_input,
                             h->o_const ? nk * dh : -1, h->o_const,
                             err)) < 0)
        goto fail;
    rc = 0;
    goto done;
fail:
    rc = id;
done:
    ss_free(ls);
    ss_free(sc);
    ss_free(keep);
    ss_free(cols);
    ss_free(rows);
    ss_free(gone);
    ss_free(delta);
    return rc;
}
