/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MoEfication: each dense feed-forward block (Linear -> activation ->
 * Linear) split into E experts of its hidden neurons and a router that
 * picks k of them per row, written as the mixture-of-experts pattern the
 * engine's sparse pass (engine/plan/pass_moe.c) runs at the cost of k.
 *
 * DESIGN (after Zhang et al., "MoEfication", 2022): in a trained FFN few
 * hidden neurons fire for a given input, and the ones that fire together
 * do so again for similar inputs.  So:
 *   1. FFNs are found as structured pruning finds its pairs: a MatMul/
 *      Gemm A with a constant weight, an element-wise chain that holds a
 *      Relu, Gelu or Erf (GELU's decomposition) and only scalar or
 *      per-neuron constants, and one MatMul/Gemm B reading its end, every
 *      value in between read by the chain alone.
 *   2. The hidden activations h over the calibration data (every token
 *      of every row) are observed as an extra graph output.
 *   3. Neurons are clustered by co-activation: each neuron is the vector
 *      of its |h| over up to MAX_FEAT tokens, scaled to unit length (so
 *      neurons that fire on the same tokens are near, whatever their
 *      scale), and balanced k-means (k-means++ seeding from the seed,
 *      then an assignment that fills each expert to exactly its share, by
 *      ascending distance) gives E experts of hidden / E neurons.
 *      Balanced, because a token costs what its k largest experts cost.
 *   4. The router is a Linear x -> E.  It starts from the centroids in
 *      weight space: expert e's column is the mean over its neurons of
 *      A's weight column times the neuron's output norm |B row| (and the
 *      bias likewise), i.e. the mean weighted pre-activation.  Then the
 *      trainer (compress/train) trains it alone, every other weight
 *      frozen, on the calibration rows: KL from the softmax of its logits
 *      to the share of each expert in the token's activation mass,
 *      mass_e = sum over the expert's neurons of |h_i| |B row i| (how
 *      much of the FFN's output the expert would carry).  The top k of
 *      that target are the experts worth running.  Where the trainer
 *      cannot train the model (an op without a gradient rule upstream)
 *      the centroid router stays, and the notes say so.
 *   5. The graph: experts A_e -> chain_e -> B_e (A's columns, per-neuron
 *      constants and B's rows of the expert's neurons), router logits P,
 *      TopK(P, k), a 0/1 mask G = ScatterElements(zeros, I, ones), and
 *      Y = ReduceSum(Unsqueeze(G, -1) * Concat(Unsqueeze(O_e, -2)), -2):
 *      the selected experts' outputs summed, unweighted (MoEfication's
 *      form: with k = E it is the dense FFN exactly).  B's bias, when B
 *      is a Gemm with one, is added once after the sum.  The pass
 *      recognises exactly this, so the variant runs sparse; at the end a
 *      plan is compiled at batch 32 to check that every FFN did, and the
 *      notes say how many.
 * FFNs are handled one at a time, each on the graph the previous left,
 * found again by the name of A's output.  A model without an FFN is left
 * unchanged and the notes say so ("changed": false): compress.c then
 * ends the job rejected, writing nothing.
 *
 * What it costs: per FFN one pass of the model over the calibration data,
 * k-means on hidden x MAX_FEAT floats, the router's training steps, and
 * two router passes to measure it.  Accuracy is not recovered here: a
 * finetune after moefy would train the experts, but the trainer has no
 * rule for TopK and ScatterElements yet.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/prune_int.h"

#define MAX_FEAT 2048           /* tokens the clustering looks at */
#define KM_ITERS 30
#define KM_RESTARTS 4           /* k-means runs; the best split is kept */
#define MAX_CHAIN 32
#define MAX_H_FLOATS ((int64_t)64 << 20) /* h values kept */
#define MAX_IN 16

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

static bool
is_act(const char *op)
{
    return strcmp(op, "Relu") == 0 || strcmp(op, "Gelu") == 0
           || strcmp(op, "Erf") == 0;
}

static bool
is_unary(const char *op)
{
    return is_act(op) || strcmp(op, "Tanh") == 0
           || strcmp(op, "Sigmoid") == 0 || strcmp(op, "Identity") == 0;
}

static bool
is_binary(const char *op)
{
    return strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0
           || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0;
}

/* A constant per neuron: f32, numel hidden, every dim but the last 1. */
static bool
per_neuron(const ss_tensor_t *c, int64_t hidden)
{
    if (c == NULL || c->dtype != SS_DTYPE_F32 || c->ndim < 1
        || c->dims[c->ndim - 1] != hidden)
        return false;
    return ss_tensor_numel(c) == hidden;
}

/* The input axis of a layer's weight (what it contracts over). */
static int
in_axis(const ss__layer_t *l)
{
    return l->out_axis == 1 ? 0 : 1;
}

static int
layer_at(const ss__layer_t *ls, int nl, int node)
{
    for (int i = 0; i < nl; i++)
        if (ls[i].node == node)
            return i;
    return -1;
}

/* Is layer A the start of an FFN?  Fills f when it is. */
static bool
match_ffn(const ss_graph_t *g, const ss__uses_t *u, const ss__layer_t *ls,
          int nl, int ai, ffn_t *f)
{
    const ss__layer_t *A = &ls[ai];
    const ss_node_t *an = &g->nodes[A->node];
    int vals[MAX_CHAIN + 1], n_vals = 0, bi = -1, act = 0;

    memset(f, 0, sizeof(*f));
    f->bias1 = -1;
    if (A->kind == SS__LAYER_CONV || strstr(ss__node_label(g, A->node),
                                            "/moefy/") != NULL)
        return false;
    if (an->n_outputs != 1 || u->is_output[an->outputs[0]])
        return false;
    if (A->b >= 0 && !per_neuron(g->values[A->b].constant, A->n_out))
        return false;
    vals[n_vals++] = an->outputs[0];
    /* walk forward: every reader of a chain value is a chain node or B */
    for (int vi = 0; vi < n_vals; vi++) {
        int v = vals[vi];

        if (u->is_output[v])
            return false;
        for (int j = 0; j < u->count[v]; j++) {
            int ni = u->nodes[v][j], li = layer_at(ls, nl, ni), seen = 0;
            const ss_node_t *nd = &g->nodes[ni];

            for (int c = 0; c < f->n_chain; c++)
                seen |= f->chain[c] == ni;
            if (seen || (bi >= 0 && ni == ls[bi].node))
                continue;
            if (nd->domain != NULL && nd->domain[0] != '\0')
                return false;
            if (li >= 0 && ls[li].kind != SS__LAYER_CONV
                && ls[li].x == v && nd->inputs[1] != v) {
                if (bi >= 0)
                    return false;   /* one consumer only */
                bi = li;
                continue;
            }
            if (nd->n_outputs != 1 || f->n_chain == MAX_CHAIN)
                return false;
            if (is_unary(nd->op_type)) {
                if (nd->inputs[0] != v || nd->n_inputs != 1)
                    return false;
                act |= is_act(nd->op_type);
            } else if (is_binary(nd->op_type) && nd->n_inputs == 2) {
                for (int k = 0; k < 2; k++) {
                    int x = nd->inputs[k];
                    const ss_tensor_t *c = x >= 0 ? g->values[x].constant
                                                  : NULL;

                    if (x < 0)
                        return false;
                    if (c == NULL)
                        continue;   /* checked below: on the chain */
                    if (c->dtype != SS_DTYPE_F32
                        || (ss_tensor_numel(c) != 1
                            && !per_neuron(c, A->n_out)))
                        return false;
                    if (ss_tensor_numel(c) != 1 && f->n_chain == 0
                        && strcmp(nd->op_type, "Add") == 0 && A->b < 0)
                        f->bias1 = x;
                }
            } else {
                return false;
            }
            f->chain[f->n_chain++] = ni;
            vals[n_vals++] = nd->outputs[0];
        }
    }
    if (bi < 0 || !act)
        return false;
    /* every non-constant operand of a chain node is on the chain */
    for (int c = 0; c < f->n_chain; c++) {
        const ss_node_t *nd = &g->nodes[f->chain[c]];

        for (int k = 0; k < nd->n_inputs; k++) {
            int x = nd->inputs[k], on = 0;

            if (g->values[x].constant != NULL)
                continue;
            for (int i = 0; i < n_vals; i++)
                on |= vals[i] == x;
            if (!on)
                return false;
        }
    }
    f->lb = ls[bi];
    f->la = *A;
    f->a = A->node;
    f->b = ls[bi].node;
    f->x = A->x;
    f->h = ls[bi].x;
    f->d_in = A->n_in;
    f->hidden = A->n_out;
    f->d_out = ls[bi].n_out;
    if (ls[bi].n_in != f->hidden || f->hidden < 2
        || (ls[bi].b >= 0 && ss_tensor_numel(g->values[ls[bi].b].constant)
                             != f->d_out))
        return false;
    /* chain in graph order (nodes are topologically sorted) */
    for (int i = 1; i < f->n_chain; i++)
        for (int j = i; j > 0 && f->chain[j] < f->chain[j - 1]; j--) {
            int t = f->chain[j];

            f->chain[j] = f->chain[j - 1];
            f->chain[j - 1] = t;
        }
    snprintf(f->label, sizeof(f->label), "%s", ss__node_label(g, A->node));
    return true;
}

typedef struct cand {
    int64_t cost;
    int node;
} cand_t;

static int
cmp_cand(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;

    if (x->cost != y->cost)
        return x->cost > y->cost ? -1 : 1;
    return (x->node > y->node) - (x->node < y->node);
}

/* The FFNs of g, as the names of A's outputs, the costliest first: in an
 * MLP consecutive layer pairs overlap (A -> B -> C gives AB and BC), and
 * the one moefied first removes the other. */
static int
list_ffns(const ss_graph_t *g, json_t *names, ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    ss__uses_t u = {0};
    cand_t *c = NULL;
    int nl = 0, nc = 0, rc;

    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0
        || (rc = ss__uses_build(g, &u, err)) < 0)
        goto done;
    if ((c = ss_calloc((size_t)nl + 1, sizeof(*c))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for moefy");
        goto done;
    }
    for (int i = 0; i < nl; i++) {
        ffn_t f;

        if (match_ffn(g, &u, ls, nl, i, &f)) {
            c[nc].cost = f.hidden * (f.d_in + f.d_out);
            c[nc++].node = f.a;
        }
    }
    qsort(c, (size_t)nc, sizeof(*c), cmp_cand);
    for (int i = 0; i < nc; i++)
        if (json_array_append_new(names, json_string(
                g->values[g->nodes[c[i].node].outputs[0]].name)) < 0) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for moefy");
            goto done;
        }
done:
    ss_free(c);
    ss__uses_clear(&u);
    ss_free(ls);
    return rc;
}

/* The FFN whose A writes the value named name; *found false when it is
 * gone. */
static int
find_ffn(const ss_graph_t *g, const char *name, ffn_t *f, bool *found,
         ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    ss__uses_t u = {0};
    int nl = 0, rc, v = ss_graph_find_value(g, name);

    *found = false;
    if (v < 0 || g->values[v].producer < 0)
        return 0;
    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0
        || (rc = ss__uses_build(g, &u, err)) < 0)
        goto done;
    for (int i = 0; i < nl && !*found; i++)
        if (ls[i].node == g->values[v].producer)
            *found = match_ffn(g, &u, ls, nl, i, f);
done:
    ss__uses_clear(&u);
    ss_free(ls);
    return rc;
}

/* ---- observing h ------------------------------------------------------ */

/* h over the calibration rows: *H is [tokens, hidden] (new), tokens per
 * row in *tpr, rows used in *rows (all, unless the cap cut them). */
static int
observe(ss__cx_t *cx, const ss_graph_t *g, const ffn_t *f, float **H,
        int64_t *tpr, int64_t *rows, ss_err_t *err)
{
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    ss__outputs_t o = {0};
    int rc;

    *H = NULL;
    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (rc = ss_graph_add_output(c, f->h, err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, cx->ctl->threads, err)) < 0
        || (rc = ss__collect(&r, cx->calib, cx->ctl->cancel, &o, err)) < 0)
        goto done;
    {
        int k = g->n_outputs;
        int64_t e = o.row_elems[k];

        if (e % f->hidden != 0 || e == 0) {
            rc = ss_err_set(err, SS_EUNSUPP, "moefy: %s: the hidden tensor "
                            "does not end in %lld neurons", f->label,
                            (long long)f->hidden);
            goto done;
        }
        *tpr = e / f->hidden;
        *rows = o.rows;
        if (*rows * e > MAX_H_FLOATS)
            *rows = MAX_H_FLOATS / e > 0 ? MAX_H_FLOATS / e : 1;
        *H = o.data[k];
        o.data[k] = NULL;
    }
done:
    ss__outputs_clear(&o);
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}

/* ---- clustering -------------------------------------------------------- */

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

typedef struct pair {
    float d;
    int i, e;
} pair_t;

static int
cmp_pair(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;

    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    if (x->i != y->i)
        return x->i < y->i ? -1 : 1;
    return (x->e > y->e) - (x->e < y->e);
}

/* Balanced k-means of n unit (or zero) vectors F [n, S] into E groups of
 * n / E (the first n % E one more); assign[i] gets the group. */
static int
balanced_kmeans(const float *F, int64_t n, int64_t S, int E, uint64_t seed,
                int *assign, int *iters, ss_err_t *err)
{
    float *C = NULL, *dmin = NULL;
    pair_t *pairs = NULL;
    int64_t *cap = NULL, *cnt = NULL;
    uint64_t rs = seed * 0x9e3779b97f4a7c15ULL + 0x1234567ULL;
    int rc = 0, it;

    *iters = 0;
    if ((C = ss_calloc((size_t)(E * S), sizeof(float))) == NULL
        || (dmin = ss_malloc(sizeof(float) * (size_t)n)) == NULL
        || (pairs = ss_malloc(sizeof(pair_t) * (size_t)(n * E))) == NULL
        || (cap = ss_malloc(sizeof(int64_t) * (size_t)E)) == NULL
        || (cnt = ss_malloc(sizeof(int64_t) * (size_t)E)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for clustering");
        goto done;
    }
    for (int e = 0; e < E; e++)
        cap[e] = n / E + (e < n % E);
    /* k-means++: the first centre at random, each next one with
     * probability proportional to the squared distance to the nearest */
    {
        int64_t first = (int64_t)(rnd(&rs) % (uint64_t)n);

        memcpy(C, F + first * S, sizeof(float) * (size_t)S);
        for (int64_t i = 0; i < n; i++)
            dmin[i] = INFINITY;
        for (int e = 1; e < E; e++) {
            double tot = 0, pick, acc = 0;
            int64_t sel = n - 1;

            for (int64_t i = 0; i < n; i++) {
                double d = 0;

                for (int64_t s = 0; s < S; s++) {
                    double t = F[i * S + s] - C[(e - 1) * S + s];

                    d += t * t;
                }
                if (d < dmin[i])
                    dmin[i] = (float)d;
                tot += dmin[i];
            }
            pick = (double)(rnd(&rs) >> 11) / 9007199254740992.0 * tot;
            for (int64_t i = 0; i < n; i++) {
                acc += dmin[i];
                if (acc > pick) {
                    sel = i;
                    break;
                }
            }
            memcpy(C + e * S, F + sel * S, sizeof(float) * (size_t)S);
        }
    }
    for (int64_t i = 0; i < n; i++)
        assign[i] = -1;
    for (it = 0; it < KM_ITERS; it++) {
        int64_t changed = 0, np = 0;

        for (int64_t i = 0; i < n; i++)
            for (int e = 0; e < E; e++) {
                double d = 0;

                for (int64_t s = 0; s < S; s++) {
                    double t = F[i * S + s] - C[e * S + s];

                    d += t * t;
                }
                pairs[np].d = (float)d;
                pairs[np].i = (int)i;
                pairs[np].e = e;
                np++;
            }
        qsort(pairs, (size_t)np, sizeof(*pairs), cmp_pair);
        for (int e = 0; e < E; e++)
            cnt[e] = 0;
        for (int64_t i = 0; i < n; i++)
            dmin[i] = -1;       /* here: the new group, as a float */
        for (int64_t p = 0; p < np; p++) {
            const pair_t *q = &pairs[p];

            if (dmin[q->i] >= 0 || cnt[q->e] == cap[q->e])
                continue;
            dmin[q->i] = (float)q->e;
            cnt[q->e]++;
        }
        for (int64_t i = 0; i < n; i++) {
            int e = (int)dmin[i];

            changed += assign[i] != e;
            assign[i] = e;
        }
        *iters = it + 1;
        if (changed == 0)
            break;
        memset(C, 0, sizeof(float) * (size_t)(E * S));
        for (int64_t i = 0; i < n; i++)
            for (int64_t s = 0; s < S; s++)
                C[assign[i] * S + s] += F[i * S + s];
        for (int e = 0; e < E; e++)
            for (int64_t s = 0; s < S; s++)
                C[e * S + s] /= (float)(cap[e] > 0 ? cap[e] : 1);
    }
done:
    ss_free(C);
    ss_free(dmin);
    ss_free(pairs);
    ss_free(cap);
    ss_free(cnt);
    return rc;
}

/* ---- the rewrite ------------------------------------------------------- */

/* |B row i|: how much of the output neuron i carries per unit of h. */
static void
out_norms(const ss_graph_t *g, const ffn_t *f, double *w2n)
{
    const ss_tensor_t *w = g->values[f->lb.w].constant;
    const float *d = w->data;
    int iax = in_axis(&f->lb);

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
static int
router_init(const ss_graph_t *g, const ffn_t *f, const int *assign, int E,
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
static int
rewrite(ss_graph_t *g, const ffn_t *f, const int *assign, int E, int k,
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
                                     in_axis(&f->lb), keep, nk, err)) < 0) {
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

/* ---- the router -------------------------------------------------------- */

/* Each token's share of the activation mass per expert: T [tokens, E]. */
static void
mass_shares(const float *H, int64_t tokens, int64_t hidden, const int *assign,
            const double *w2n, int E, float *T)
{
    for (int64_t t = 0; t < tokens; t++) {
        double m[256] = { 0 }, tot = 0;

        for (int64_t i = 0; i < hidden; i++)
            m[assign[i]] += fabs((double)H[t * hidden + i]) * w2n[i];
        for (int e = 0; e < E; e++)
            tot += m[e];
        for (int e = 0; e < E; e++)
            T[t * E + e] = (float)(tot > 0 ? m[e] / tot : 1.0 / E);
    }
}

/* Fraction of the mass the top k of the logits P [tokens, E] select, and
 * (P NULL) the best any router could. */
static double
captured(const float *P, const float *T, int64_t tokens, int E, int k)
{
    double got = 0;

    for (int64_t t = 0; t < tokens; t++) {
        const float *s = P != NULL ? P + t * E : T + t * E;
        char taken[256] = { 0 };

        for (int j = 0; j < k; j++) {
            int best = -1;

            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || s[e] > s[best]))
                    best = e;
            taken[best] = 1;
            got += T[t * E + best];
        }
    }
    return tokens > 0 ? got / (double)tokens : 0;
}

/* The router's logits over the first rows calibration rows, by running
 * g with them as an extra output: *P [rows * tpr, E] (new). */
static int
router_logits(ss__cx_t *cx, const ss_graph_t *g, const char *pname,
              float **P, ss_err_t *err)
{
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    ss__outputs_t o = {0};
    int rc;

    *P = NULL;
    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (rc = ss_graph_add_output(c, ss_graph_find_value(c, pname),
                                     err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, cx->ctl->threads, err)) < 0
        || (rc = ss__collect(&r, cx->calib, cx->ctl->cancel, &o, err)) < 0)
        goto done;
    *P = o.data[g->n_outputs];
    o.data[g->n_outputs] = NULL;
done:
    ss__outputs_clear(&o);
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}

static size_t
row_bytes(const ss_tensor_t *t)
{
    return (size_t)(ss_tensor_numel(t) / t->dims[0])
           * ss_dtype_size(t->dtype);
}

/* Trains the router of g (names rw, rb; logits pname) alone with the
 * trainer: KL to the mass shares T [rows * tpr, E] of the first rows
 * calibration rows.  *why gets a sentence when the trainer cannot train
 * this model (not an error: the centroid router stays). */
static int
train_router(ss__cx_t *cx, const ss_method_t *m, ss_graph_t *g,
             const char *rw, const char *rb, const char *pname,
             const float *T, int64_t rows, int64_t tpr, int E,
             json_t *fnote, ss_err_t *err)
{
    const ss_dataset_t *ds = cx->calib;
    ss_graph_t *c = NULL;
    ss_train_t *t = NULL;
    ss_train_opts_t o;
    ss_tensor_t shapes[MAX_IN], teacher;
    const char **frozen = NULL;
    int64_t B = rows < 64 ? rows : 64, *perm = NULL, steps, per_epoch;
    uint64_t rs = (uint64_t)m->u.moefy.seed * 0x2545f4914f6cdd1dULL + 77;
    int rc = 0, n_frozen = 0, out;
    double loss = 0, first = -1;
    ss_err_t terr = {0};

    memset(shapes, 0, sizeof(shapes));
    memset(&teacher, 0, sizeof(teacher));
    if (m->u.moefy.epochs == 0 || rows / B == 0) {
        json_object_set_new(fnote, "router_training", json_string(
            "none (epochs 0): the centroid router"));
        return 0;
    }
    if (ds->n_inputs > MAX_IN)
        return ss_err_set(err, SS_EUNSUPP, "moefy: more than %d inputs",
                          MAX_IN);
    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (out = rc = ss_graph_add_output(c, ss_graph_find_value(c, pname),
                                           err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0)
        goto done;
    if ((frozen = ss_calloc((size_t)c->n_values + 1, sizeof(char *))) == NULL
        || (perm = ss_malloc(sizeof(int64_t) * (size_t)rows)) == NULL)
        goto nomem;
    for (int i = 0; i < c->n_values; i++)
        if (c->values[i].constant != NULL && strcmp(c->values[i].name, rw)
            && strcmp(c->values[i].name, rb))
            frozen[n_frozen++] = c->values[i].name;
    for (int i = 0; i < ds->n_inputs; i++) {
        shapes[i] = ds->inputs[i];
        shapes[i].dims[0] = B;
        if ((shapes[i].data = ss_malloc(row_bytes(&ds->inputs[i])
                                        * (size_t)B)) == NULL)
            goto nomem;
    }
    ss_train_opts_default(&o);
    o.output = out;
    o.loss = SS_LOSS_KL;
    o.temperature = 1.0;
    o.lr = m->u.moefy.lr;
    o.weight_decay = 0;
    o.seed = (uint64_t)m->u.moefy.seed;
    o.threads = cx->ctl->threads;
    o.frozen = frozen;
    o.n_frozen = n_frozen;
    per_epoch = rows / B;
    steps = per_epoch * m->u.moefy.epochs;
    o.sched = SS_SCHED_COSINE;
    o.total_steps = steps;
    if ((rc = ss_train_new(c, shapes, &o, &t, &terr)) < 0) {
        /* the centroid router stays */
        char why[640];

        snprintf(why, sizeof(why), "skipped: the trainer cannot train "
                 "this model (%s); the centroid router stays", terr.msg);
        json_object_set_new(fnote, "router_training", json_string(why));
        rc = rc == SS_ENOMEM ? ss_err_set(err, rc, "%s", terr.msg) : 0;
        goto done;
    }
    teacher.dtype = SS_DTYPE_F32;
    teacher.ndim = 2;
    teacher.dims[0] = B * tpr;
    teacher.dims[1] = E;
    if ((teacher.data = ss_malloc(sizeof(float) * (size_t)(B * tpr * E)))
        == NULL)
        goto nomem;
    for (int64_t i = 0; i < rows; i++)
        perm[i] = i;
    for (int64_t s = 0; s < steps; s++) {
        ss_train_batch_t b = { shapes, NULL, &teacher };
        int64_t at = (s % per_epoch) * B;

        if (at == 0)
            for (int64_t i = rows - 1; i > 0; i--) {
                int64_t j = (int64_t)(rnd(&rs) % (uint64_t)(i + 1)), x;

                x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        for (int64_t r = 0; r < B; r++) {
            int64_t src = perm[at + r];
            float *tt = teacher.data;

            for (int i = 0; i < ds->n_inputs; i++) {
                size_t rb_ = row_bytes(&ds->inputs[i]);

                memcpy((char *)shapes[i].data + (size_t)r * rb_,
                       (const char *)ds->inputs[i].data + (size_t)src * rb_,
                       rb_);
            }
            /* log of the shares: their softmax is the shares */
            for (int64_t j = 0; j < tpr * E; j++)
                tt[r * tpr * E + j] = logf(T[src * tpr * E + j] + 1e-6f);
        }
        if ((rc = ss_train_step(t, &b, &loss, err)) < 0)
            goto done;
        if (first < 0)
            first = loss;
        if (!isfinite(loss)) {
            rc = ss_err_set(err, SS_EINVAL, "moefy: the router's loss is "
                            "not finite: lower lr");
            goto done;
        }
    }
    /* the trained router back into g */
    for (int i = 0; i < ss_train_num_params(t); i++) {
        ss_train_param_info_t pi;
        int id;

        if (ss_train_param(t, i, &pi) < 0
            || (id = ss_graph_find_value(g, pi.name)) < 0
            || ss_tensor_numel(g->values[id].constant) != pi.numel)
            continue;
        memcpy(g->values[id].constant->data, ss_train_params(t) + pi.offset,
               sizeof(float) * (size_t)pi.numel);
    }
    json_object_set_new(fnote, "router_training", json_pack(
        "{s:I, s:I, s:f, s:f, s:f}", "steps", (json_int_t)steps,
        "batch_size", (json_int_t)B, "lr", o.lr, "loss_first", first,
        "loss_last", loss));
    rc = 0;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory to train the router");
done:
    ss_train_free(t);
    ss_graph_free(c);
    for (int i = 0; i < ds->n_inputs && i < MAX_IN; i++)
        ss_free(shapes[i].data);
    ss_free(teacher.data);
    ss_free(frozen);
    ss_free(perm);
    return rc;
}

/* ---- compensation ------------------------------------------------------ */

/* B's weight as [hidden, d_out] (new): rewrite() replaces it. */
static int
copy_w2(const ss_graph_t *g, const ffn_t *f, float **out, ss_err_t *err)
{
    const float *w = g->values[f->lb.w].constant->data;
    float *q = ss_malloc(sizeof(float) * (size_t)(f->hidden * f->d_out));

    *out = q;
    if (q == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for moefy");
    for (int64_t i = 0; i < f->hidden; i++)
        for (int64_t o = 0; o < f->d_out; o++)
            q[i * f->d_out + o] = in_axis(&f->lb) == 0
                                  ? w[i * f->d_out + o]
                                  : w[o * f->hidden + i];
    return 0;
}

/* What the experts a row does not run would have added, on average over
 * the calibration tokens (the router's choices P), goes into the bias:
 * the constant that minimises the squared error of the FFN's output
 * (as structured pruning folds a removed neuron's mean). */
static int
compensate(ss_graph_t *g, const ffn_t *f, const float *H, int64_t tokens,
           const float *P, const int *assign, int E, int k, const float *W2,
           json_t *fnote, ss_err_t *err)
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
        const float *s = P + t * E;
        char taken[256] = { 0 };

        for (int j = 0; j < k; j++) {
            int best = -1;

            for (int e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || s[e] > s[best]))
                    best = e;
            taken[best] = 1;
        }
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

/* ---- one FFN ----------------------------------------------------------- */

static int
moefy_one(ss__cx_t *cx, const ss_method_t *m, ss_graph_t *g, const ffn_t *f,
          json_t *fnote, ss_err_t *err)
{
    int E = m->u.moefy.experts, k = m->u.moefy.k, iters = 0, rc;
    int *assign = NULL, *try_ = NULL;
    float *H = NULL, *W2 = NULL, *F = NULL, *wr = NULL, *br = NULL, *T = NULL, *P = NULL;
    double *w2n = NULL;
    int64_t tpr = 0, rows = 0, tokens, S, stride;
    char *rw = NULL, *rb = NULL, *pn = NULL;
    double cap_init, cap_trained, cap_best;

    if ((rc = observe(cx, g, f, &H, &tpr, &rows, err)) < 0)
        goto done;
    tokens = rows * tpr;
    S = tokens < MAX_FEAT ? tokens : MAX_FEAT;
    stride = tokens / S;
    if ((assign = ss_malloc(sizeof(int) * (size_t)f->hidden)) == NULL
        || (try_ = ss_malloc(sizeof(int) * (size_t)f->hidden)) == NULL
        || (F = ss_calloc((size_t)(f->hidden * S), sizeof(float))) == NULL
        || (w2n = ss_malloc(sizeof(double) * (size_t)f->hidden)) == NULL
        || (wr = ss_malloc(sizeof(float) * (size_t)(f->d_in * E))) == NULL
        || (br = ss_malloc(sizeof(float) * (size_t)E)) == NULL
        || (T = ss_malloc(sizeof(float) * (size_t)(tokens * E))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for moefy");
        goto done;
    }
    /* co-activation features: |h| over S tokens, unit length per neuron */
    for (int64_t i = 0; i < f->hidden; i++) {
        double n2 = 0;

        for (int64_t s = 0; s < S; s++) {
            float v = fabsf(H[(s * stride) * f->hidden + i]);

            F[i * S + s] = v;
            n2 += (double)v * v;
        }
        if (n2 > 0)
            for (int64_t s = 0; s < S; s++)
                F[i * S + s] = (float)(F[i * S + s] / sqrt(n2));
    }
    ss__cx_progress(cx, 0.3, "moefy: clustering neurons");
    out_norms(g, f, w2n);
    /* k-means from KM_RESTARTS seeds: the split whose best k experts
     * carry the most activation mass wins */
    cap_best = -1;
    for (int r = 0; r < KM_RESTARTS; r++) {
        int it;
        double cap;

        if ((rc = balanced_kmeans(F, f->hidden, S, E,
                                  (uint64_t)m->u.moefy.seed * KM_RESTARTS
                                  + (uint64_t)r, try_, &it, err)) < 0)
            goto done;
        mass_shares(H, tokens, f->hidden, try_, w2n, E, T);
        if ((cap = captured(NULL, T, tokens, E, k)) > cap_best) {
            cap_best = cap;
            iters = it;
            memcpy(assign, try_, sizeof(int) * (size_t)f->hidden);
        }
    }
    mass_shares(H, tokens, f->hidden, assign, w2n, E, T);
    if ((rc = router_init(g, f, assign, E, w2n, wr, br, err)) < 0
        || (rc = copy_w2(g, f, &W2, err)) < 0
        || (rc = rewrite(g, f, assign, E, k, wr, br, &rw, &rb, &pn,
                         err)) < 0)
        goto done;
    if ((rc = router_logits(cx, g, pn, &P, err)) < 0)
        goto done;
    cap_init = captured(P, T, tokens, E, k);
    ss_free(P);
    P = NULL;
    ss__cx_progress(cx, 0.5, "moefy: training the router");
    if ((rc = train_router(cx, m, g, rw, rb, pn, T, rows, tpr, E, fnote,
                           err)) < 0
        || (rc = router_logits(cx, g, pn, &P, err)) < 0)
        goto done;
    cap_trained = captured(P, T, tokens, E, k);
    if ((rc = compensate(g, f, H, tokens, P, assign, E, k, W2, fnote,
                         err)) < 0)
        goto done;
    json_object_set_new(fnote, "ffn", json_pack(
        "{s:I, s:I, s:I}", "d_in", (json_int_t)f->d_in,
        "hidden", (json_int_t)f->hidden, "d_out", (json_int_t)f->d_out));
    json_object_set_new(fnote, "clustering", json_pack(
        "{s:I, s:i}", "tokens", (json_int_t)S, "iterations", iters));
    /* the share of the activation mass the chosen k experts carry */
    json_object_set_new(fnote, "mass_captured", json_pack(
        "{s:f, s:f, s:f, s:f}", "uniform", (double)k / E,
        "router_init", cap_init, "router_trained", cap_trained,
        "oracle", cap_best));
    json_object_set_new(fnote, "calibration_tokens",
                        json_integer((json_int_t)tokens));
done:
    ss_free(assign);
    ss_free(try_);
    ss_free(W2);
    ss_free(H);
    ss_free(F);
    ss_free(w2n);
    ss_free(wr);
    ss_free(br);
    ss_free(T);
    ss_free(P);
    ss_free(rw);
    ss_free(rb);
    ss_free(pn);
    return rc;
}

/* How many MoE steps a plan of g at batch 32 of calib's shapes has. */
static int
sparse_layers(const ss_dataset_t *ds, const ss_graph_t *g, int *n,
              ss_err_t *err)
{
    ss_tensor_t views[MAX_IN];
    ss_plan_t *p = NULL;
    int rc;

    *n = 0;
    if (ds->n_inputs > MAX_IN)
        return 0;
    ss__dataset_slice(ds, 0, ds->rows < 32 ? ds->rows : 32, views);
    if ((rc = ss_plan_new(g, views, &p, err)) < 0)
        return rc;
    *n = ss_plan_moe_layers(p);
    ss_plan_free(p);
    return 0;
}

int
ss__moefy(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *note,
          ss_err_t *err)
{
    json_t *names = json_array(), *arr = json_array();
    int rc = 0, done_n = 0, sparse = 0;

    if (names == NULL || arr == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
        goto done;
    }
    if ((rc = list_ffns(*g, names, err)) < 0)
        goto done;
    if (json_array_size(names) > 0 && (*g)->opset < 11) {
        rc = ss_err_set(err, SS_EUNSUPP, "moefy writes ScatterElements and "
                        "TopK with a k input: opset 11 or later, and this "
                        "model is opset %d", (*g)->opset);
        goto done;
    }
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *nm = json_string_value(json_array_get(names, i));
        json_t *fnote;
        ffn_t f;
        bool found;

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        ss__cx_progress(cx, (double)i / json_array_size(names),
                        "moefy: observing an FFN");
        if ((rc = find_ffn(*g, nm, &f, &found, err)) < 0)
            goto done;
        if (!found)
            continue;
        if (f.hidden < 2 * m->u.moefy.experts) {
            json_array_append_new(arr, json_pack(
                "{s:s, s:I, s:s}", "layer", f.label, "hidden",
                (json_int_t)f.hidden, "kept", "fewer than 2 neurons per "
                "expert: left dense"));
            continue;
        }
        if ((fnote = json_pack("{s:s}", "layer", f.label)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
            goto done;
        }
        json_array_append_new(arr, fnote);
        if ((rc = moefy_one(cx, m, *g, &f, fnote, err)) < 0) {
            ss_err_wrap(err, rc, "moefy: %s", f.label);
            goto done;
        }
        done_n++;
    }
    if (done_n > 0 && (rc = sparse_layers(cx->calib, *g, &sparse, err)) < 0)
        goto done;
    json_object_set_new(note, "experts", json_integer(m->u.moefy.experts));
    json_object_set_new(note, "k", json_integer(m->u.moefy.k));
    json_object_set_new(note, "ffns", arr);
    arr = NULL;
    json_object_set_new(note, "moefied", json_integer(done_n));
    json_object_set_new(note, "sparse_layers", json_integer(sparse));
    json_object_set_new(note, "changed", json_boolean(done_n > 0));
    if (done_n == 0)
        json_object_set_new(note, "note", json_string(
            "no dense FFN (Linear -> Relu/Gelu -> Linear, hidden >= 2 "
            "experts) found: the variant is the source unchanged"));
    else if (sparse < done_n)
        json_object_set_new(note, "note", json_string(
            "some MoE layers compile dense here (SS_ENGINE_NO_MOE, or the "
            "engine refused them: see the log)"));
    rc = 0;
done:
    json_decref(names);
    json_decref(arr);
    return rc;
}
