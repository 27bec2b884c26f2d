/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MoEfication's graph edits (moefy.c says what and why): the router's
 * starting weights, an FFN rewritten as experts behind a router and
 * TopK, and the dropped experts' mean folded into the output bias.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/moefy_int.h"

/* ---- the rewrite ------------------------------------------------------- */

/* |B row i|: how much of the output neuron i carries per unit of h. */
void
ss__moefy_out_norms(const ss_graph_t *g, const ffn_t *f, double *w2n)
{
    const ss_tensor_t *w = g->values[f->lb.w].constant;
    const float *d = w->data;
    int iax = moefy_in_axis(&f->lb);

    for (int64_t i = 0; i < f->hidden; i++) {
        double s = 0;

        for (int64_t o = 0; o < f->d_out; o++) {
            double v = iax == 0 ? d[i * f->d_out + o] : d[o * f->hidden + i];

            s += v * v;
        }
        w2n[i] = sqrt(s);
    }
}

/* The router from the centroids: expert e's column is the mean over its
 * neurons of A's weight column (and bias) times |B row|.  wr [d_in, E],
 * br [E]. */
int
ss__moefy_router_init(const ss_graph_t *g, const ffn_t *f, const int *assign, int E,
                      const double *w2n, float *wr, float *br, ss_err_t *err)
{
    const float *w = g->values[f->la.w].constant->data;
    const float *b = f->la.b >= 0 ? g->values[f->la.b].constant->data
                     : f->bias1 >= 0 ? g->values[f->bias1].constant->data
                                     : NULL;
    int64_t *cnt = ss_calloc((size_t)E, sizeof(int64_t));
    int oax = f->la.out_axis;

    if (cnt == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the router");
    memset(wr, 0, sizeof(float) * (size_t)(f->d_in * E));
    memset(br, 0, sizeof(float) * (size_t)E);
    for (int64_t i = 0; i < f->hidden; i++) {
        int e = assign[i];

        cnt[e]++;
        for (int64_t j = 0; j < f->d_in; j++)
            wr[j * E + e] += (float)(w2n[i] * (oax == 1
                                               ? w[j * f->hidden + i]
                                               : w[i * f->d_in + j]));
        if (b != NULL)
            br[e] += (float)(w2n[i] * b[i]);
    }
    for (int e = 0; e < E; e++) {
        float s = 1.0f / (float)(cnt[e] > 0 ? cnt[e] : 1);

        for (int64_t j = 0; j < f->d_in; j++)
            wr[j * E + e] *= s;
        br[e] *= s;
    }
    ss_free(cnt);
    return 0;
}

/* A new int64 constant vector. */
static int
ints_const(ss_graph_t *g, int n, const int64_t *v, ss_err_t *err)
{
    int64_t d = n;
    void *p;
    int id = ss__new_const(g, NULL, SS_DTYPE_I64, 1, &d, &p, err);

    if (id >= 0)
        memcpy(p, v, sizeof(int64_t) * (size_t)n);
    return id;
}

static int
f32_scalar(ss_graph_t *g, float x, ss_err_t *err)
{
    int64_t d = 1;
    void *p;
    int id = ss__new_const(g, NULL, SS_DTYPE_F32, 1, &d, &p, err);

    if (id >= 0)
        *(float *)p = x;
    return id;
}

/* Adds node op(in) -> a new value (or out when >= 0); returns the output
 * value id. */
static int
node1(ss_graph_t *g, const char *op, const char *name, int n_in,
      const int *in, int out, int n_attrs, const ss_attr_t *attrs,
      ss_err_t *err)
{
    int rc;

    if (out < 0 && (out = ss_graph_add_value(g, NULL, NULL, err)) < 0)
        return out;
    if ((rc = ss_graph_add_node(g, op, name, n_in, in, 1, &out, n_attrs,
                                attrs, err)) < 0)
        return rc;
    return out;
}

/* Unsqueeze / ReduceSum with one axis: an input from opset 13, an
 * attribute before. */
static int
axis_op(ss_graph_t *g, const char *op, const char *name, int x, int64_t ax,
        int keepdims, int out, ss_err_t *err)
{
    ss_attr_t at[2];
    int in[2], na = 0, id;

    memset(at, 0, sizeof(at));
    in[0] = x;
    if (g->opset >= 13) {
        if ((id = ints_const(g, 1, &ax, err)) < 0)
            return id;
        in[1] = id;
    } else {
        at[na].name = (char *)"axes";
        at[na].type = SS_ATTR_INTS;
        at[na].n = 1;
        at[na].ints = &ax;
        na++;
    }
    if (keepdims >= 0) {
        at[na].name = (char *)"keepdims";
        at[na].type = SS_ATTR_INT;
        at[na].i = keepdims;
        na++;
    }
    return node1(g, op, name, g->opset >= 13 ? 2 : 1, in, out, na, at, err);
}

/* Replaces FFN f by E experts, the router (wr, br) and the top-k mask;
 * *router_w / *router_b get the router's value names (new strings). */
int
ss__moefy_rewrite(ss_graph_t *g, const ffn_t *f, const int *assign, int E, int k,
                  const float *wr, const float *br, char **router_w, char **router_b,
                  char **router_p, ss_err_t *err)
{
    int64_t *keep = NULL, nk;
    int *map = NULL, *outs = NULL, rc = 0;
    int y0 = g->nodes[f->b].outputs[0], x = f->x, n_old = g->n_values;
    int p, topk_v, topk_i, in[4], v, y;
    char name[320];
    ss_attr_t at[4];
    const ss_node_t an = g->nodes[f->a], bn = g->nodes[f->b];

    *router_w = *router_b = *router_p = NULL;
    if ((keep = ss_malloc(sizeof(int64_t) * (size_t)f->hidden)) == NULL
        || (map = ss_malloc(sizeof(int) * (size_t)g->n_values)) == NULL
        || (outs = ss_malloc(sizeof(int) * (size_t)E)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for moefy");
        goto done;
    }
    for (int e = 0; e < E; e++) {
        for (int i = 0; i < n_old; i++)
            map[i] = i;
        nk = 0;
        for (int64_t i = 0; i < f->hidden; i++)
            if (assign[i] == e)
                keep[nk++] = i;
        /* A_e: A's columns of the expert (and its bias) */
        in[0] = x;
        if ((in[1] = ss__slice_const(g, g->values[f->la.w].constant,
                                     f->la.out_axis, keep, nk, err)) < 0
            || (f->la.b >= 0
                && (in[2] = ss__slice_const(
                        g, g->values[f->la.b].constant,
                        g->values[f->la.b].constant->ndim - 1, keep, nk,
                        err)) < 0)) {
            rc = in[1] < 0 ? in[1] : in[2];
            goto done;
        }
        snprintf(name, sizeof(name), "%s/moefy/expert%d/fc1", f->label, e);
        if ((v = node1(g, an.op_type, name, f->la.b >= 0 ? 3 : 2, in, -1,
                       an.n_attrs, an.attrs, err)) < 0) {
            rc = v;
            goto done;
        }
        map[an.outputs[0]] = v;
        /* the chain, per-neuron constants sliced */
        for (int c = 0; c < f->n_chain; c++) {
            const ss_node_t nd = g->nodes[f->chain[c]];
            int cin[2];

            for (int j = 0; j < nd.n_inputs; j++) {
                int u = nd.inputs[j];
                const ss_tensor_t *t = g->values[u].constant;

                if (t != NULL && ss_tensor_numel(t) != 1) {
                    if ((cin[j] = ss__slice_const(g, t, t->ndim - 1, keep,
                                                  nk, err)) < 0) {
                        rc = cin[j];
                        goto done;
                    }
                } else {
                    cin[j] = u < n_old ? map[u] : u;
                }
            }
            snprintf(name, sizeof(name), "%s/moefy/expert%d/%s", f->label,
                     e, nd.op_type);
            if ((v = node1(g, nd.op_type, name, nd.n_inputs, cin, -1,
                           nd.n_attrs, nd.attrs, err)) < 0) {
                rc = v;
                goto done;
            }
            map[nd.outputs[0]] = v;
        }
        /* B_e: B's rows of the expert, no bias (added once, below) */
        in[0] = map[f->h];
        if ((in[1] = ss__slice_const(g, g->values[f->lb.w].constant,
                                     moefy_in_axis(&f->lb), keep, nk, err)) < 0) {
            rc = in[1];
            goto done;
        }
        snprintf(name, sizeof(name), "%s/moefy/expert%d/fc2", f->label, e);
        if ((outs[e] = node1(g, bn.op_type, name, 2, in, -1, bn.n_attrs,
                             bn.attrs, err)) < 0) {
            rc = outs[e];
            goto done;
        }
    }
    /* the router: MatMul + Add, so any rank of x works */
    {
        int64_t d[2] = { f->d_in, E };
        void *pw, *pb;
        int wv, bv;

        snprintf(name, sizeof(name), "%s/moefy/router.weight", f->label);
        if ((wv = ss__new_const(g, name, SS_DTYPE_F32, 2, d, &pw, err)) < 0) {
            rc = wv;
            goto done;
        }
        memcpy(pw, wr, sizeof(float) * (size_t)(f->d_in * E));
        snprintf(name, sizeof(name), "%s/moefy/router.bias", f->label);
        if ((bv = ss__new_const(g, name, SS_DTYPE_F32, 1, d + 1, &pb,
                                err)) < 0) {
            rc = bv;
            goto done;
        }
        memcpy(pb, br, sizeof(float) * (size_t)E);
        *router_w = ss_strdup(g->values[wv].name);
        *router_b = ss_strdup(g->values[bv].name);
        in[0] = x;
        in[1] = wv;
        snprintf(name, sizeof(name), "%s/moefy/router/MatMul", f->label);
        if ((v = node1(g, "MatMul", name, 2, in, -1, 0, NULL, err)) < 0) {
            rc = v;
            goto done;
        }
        in[0] = v;
        in[1] = bv;
        snprintf(name, sizeof(name), "%s/moefy/router_logits", f->label);
        if ((p = ss_graph_add_value(g, name, NULL, err)) < 0) {
            rc = p;
            goto done;
        }
        *router_p = ss_strdup(name);
        snprintf(name, sizeof(name), "%s/moefy/router/Add", f->label);
        if ((rc = node1(g, "Add", name, 2, in, p, 0, NULL, err)) < 0)
            goto done;
        if (*router_w == NULL || *router_b == NULL || *router_p == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for moefy");
            goto done;
        }
    }
    /* V, I = TopK(P, k); G = ScatterElements(zeros, I, ones) */
    {
        int64_t kk = k;
        int kv, tout[2], sp, si, zeros, ones, gm, one, zero;

        memset(at, 0, sizeof(at));
        at[0].name = (char *)"axis";
        at[0].type = SS_ATTR_INT;
        at[0].i = -1;
        at[1].name = (char *)"largest";
        at[1].type = SS_ATTR_INT;
        at[1].i = 1;
        at[2].name = (char *)"sorted";
        at[2].type = SS_ATTR_INT;
        at[2].i = 1;
        if ((rc = kv = ints_const(g, 1, &kk, err)) < 0
            || (rc = topk_v = ss_graph_add_value(g, NULL, NULL, err)) < 0
            || (rc = topk_i = ss_graph_add_value(g, NULL, NULL, err)) < 0)
            goto done;
        in[0] = p;
        in[1] = kv;
        tout[0] = topk_v;
        tout[1] = topk_i;
        snprintf(name, sizeof(name), "%s/moefy/TopK", f->label);
        if ((rc = ss_graph_add_node(g, "TopK", name, 2, in, 2, tout, 3, at,
                                    err)) < 0)
            goto done;
        snprintf(name, sizeof(name), "%s/moefy/Shape", f->label);
        if ((rc = sp = node1(g, "Shape", name, 1, &p, -1, 0, NULL, err)) < 0
            || (rc = si = node1(g, "Shape", name, 1, &topk_i, -1, 0, NULL,
                                err)) < 0
            || (rc = zero = f32_scalar(g, 0.0f, err)) < 0
            || (rc = one = f32_scalar(g, 1.0f, err)) < 0)
            goto done;
        snprintf(name, sizeof(name), "%s/moefy/zeros", f->label);
        in[0] = zero;
        in[1] = sp;
        if ((zeros = node1(g, "Expand", name, 2, in, -1, 0, NULL, err)) < 0) {
            rc = zeros;
            goto done;
        }
        snprintf(name, sizeof(name), "%s/moefy/ones", f->label);
        in[0] = one;
        in[1] = si;
        if ((ones = node1(g, "Expand", name, 2, in, -1, 0, NULL, err)) < 0) {
            rc = ones;
            goto done;
        }
        snprintf(name, sizeof(name), "%s/moefy/mask", f->label);
        in[0] = zeros;
        in[1] = topk_i;
        in[2] = ones;
        if ((gm = node1(g, "ScatterElements", name, 3, in, -1, 1, at,
                        err)) < 0) {
            rc = gm;
            goto done;
        }
        /* Y = ReduceSum(Unsqueeze(G, -1) * Concat(Unsqueeze(O_e, -2)),
         * -2) */
        snprintf(name, sizeof(name), "%s/moefy/mask/Unsqueeze", f->label);
        if ((gm = axis_op(g, "Unsqueeze", name, gm, -1, -1, -1, err)) < 0) {
            rc = gm;
            goto done;
        }
        for (int e = 0; e < E; e++) {
            snprintf(name, sizeof(name), "%s/moefy/expert%d/Unsqueeze",
                     f->label, e);
            if ((outs[e] = axis_op(g, "Unsqueeze", name, outs[e], -2, -1,
                                   -1, err)) < 0) {
                rc = outs[e];
                goto done;
            }
        }
        at[0].i = -2;           /* Concat axis */
        snprintf(name, sizeof(name), "%s/moefy/Concat", f->label);
        if ((v = node1(g, "Concat", name, E, outs, -1, 1, at, err)) < 0) {
            rc = v;
            goto done;
        }
        in[0] = gm;
        in[1] = v;
        snprintf(name, sizeof(name), "%s/moefy/Mul", f->label);
        if ((v = node1(g, "Mul", name, 2, in, -1, 0, NULL, err)) < 0) {
            rc = v;
            goto done;
        }
        snprintf(name, sizeof(name), "%s/moefy/ReduceSum", f->label);
        if ((y = axis_op(g, "ReduceSum", name, v, -2, 0, -1, err)) < 0) {
            rc = y;
            goto done;
        }
    }
    /* B's bias (times beta) once, plus what moefy_one compensates */
    {
        float beta = ss__attr_float(&bn, "beta", 1.0f), *q;
        int bv;

        snprintf(name, sizeof(name), "%s/moefy/bias", f->label);
        if ((bv = ss__new_const(g, name, SS_DTYPE_F32, 1, &f->d_out,
                                (void **)&q, err)) < 0) {
            rc = bv;
            goto done;
        }
        if (f->lb.b >= 0) {
            const float *c = g->values[f->lb.b].constant->data;

            for (int64_t i = 0; i < f->d_out; i++)
                q[i] = beta * c[i];
        }
        in[0] = y;
        in[1] = bv;
        if ((rc = node1(g, "Add", name, 2, in, y0, 0, NULL, err)) < 0)
            goto done;
    }
    /* the old nodes go (a dead node reads and writes nothing) */
    ss_graph_kill_node(g, f->a);
    ss_graph_kill_node(g, f->b);
    for (int c = 0; c < f->n_chain; c++)
        ss_graph_kill_node(g, f->chain[c]);
    rc = ss_graph_finalize(g, err);
done:
    if (rc < 0) {
        ss_free(*router_w);
        ss_free(*router_b);
        ss_free(*router_p);
        *router_w = *router_b = *router_p = NULL;
    }
    ss_free(keep);
    ss_free(map);
    ss_free(outs);
    return rc;
}

/* ---- compensation ------------------------------------------------------ */

/* B's weight as [hidden, d_out] (new): ss__moefy_rewrite() replaces it. */
int
ss__moefy_copy_w2(const ss_graph_t *g, const ffn_t *f, float **out, ss_err_t *err)
{
    const float *w = g->values[f->lb.w].constant->data;
    float *q = ss_malloc(sizeof(float) * (size_t)(f->hidden * f->d_out));

    *out = q;
    if (q == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for moefy");
    for (int64_t i = 0; i < f->hidden; i++)
        for (int64_t o = 0; o < f->d_out; o++)
            q[i * f->d_out + o] = moefy_in_axis(&f->lb) == 0
                                  ? w[i * f->d_out + o]
                                  : w[o * f->hidden + i];
    return 0;
}

/* What the experts a row does not run would have added, on average over
 * the calibration tokens (the router's choices P), goes into the bias:
 * the constant that minimises the squared error of the FFN's output
 * (as structured pruning folds a removed neuron's mean). */
int
ss__moefy_compensate(ss_graph_t *g, const ffn_t *f, const float *H,
                     int64_t tokens, const float *P, const int *assign, int E,
                     int k, const float *W2, json_t *fnote, ss_err_t *err)
{
    double *mh = ss_calloc((size_t)f->hidden, sizeof(double)), n2 = 0;
    char name[320];
    int id, rc = 0;

    if (mh == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for moefy");
    snprintf(name, sizeof(name), "%s/moefy/bias", f->label);
    if ((id = ss_graph_find_value(g, name)) < 0
        || g->values[id].constant == NULL) {
        rc = ss_err_set(err, SS_EINTERNAL, "moefy: %s is gone", name);
        goto done;
    }
    for (int64_t t = 0; t < tokens; t++) {
        char taken[256];

        ss__moefy_top_k(P + t * E, E, k, taken);
        for (int64_t i = 0; i < f->hidden; i++)
            if (!taken[assign[i]])
                mh[i] += H[t * f->hidden + i];
    }
    {
        float *b = g->values[id].constant->data;

        for (int64_t o = 0; o < f->d_out; o++) {
            double d = 0;

            for (int64_t i = 0; i < f->hidden; i++)
                d += W2[i * f->d_out + o] * mh[i] / (double)tokens;
            b[o] += (float)d;
            n2 += d * d;
        }
    }
    json_object_set_new(fnote, "bias_compensation_norm",
                        json_real(sqrt(n2)));
done:
    ss_free(mh);
    return rc;
}
