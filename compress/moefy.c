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
 * Steps 3-4 are moefy_router.c, step 5 and the bias compensation
 * moefy_graph.c.  FFNs are handled one at a time, each on the graph the
 * previous left, found again by the name of A's output.  A model without
 * an FFN is left unchanged and the notes say so ("changed": false):
 * compress.c then ends the job rejected, writing nothing.
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
#include "compress/moefy_int.h"

#define MAX_FEAT 2048           /* tokens the clustering looks at */
#define KM_RESTARTS 4           /* k-means runs; the best split is kept */
#define MAX_H_FLOATS ((int64_t)64 << 20) /* h values kept */

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
    ss__moefy_out_norms(g, f, w2n);
    /* k-means from KM_RESTARTS seeds: the split whose best k experts
     * carry the most activation mass wins */
    cap_best = -1;
    for (int r = 0; r < KM_RESTARTS; r++) {
        int it;
        double cap;

        if ((rc = ss__moefy_kmeans(F, f->hidden, S, E,
                                  (uint64_t)m->u.moefy.seed * KM_RESTARTS
                                  + (uint64_t)r, try_, &it, err)) < 0)
            goto done;
        ss__moefy_mass_shares(H, tokens, f->hidden, try_, w2n, E, T);
        if ((cap = ss__moefy_captured(NULL, T, tokens, E, k)) > cap_best) {
            cap_best = cap;
            iters = it;
            memcpy(assign, try_, sizeof(int) * (size_t)f->hidden);
        }
    }
    ss__moefy_mass_shares(H, tokens, f->hidden, assign, w2n, E, T);
    if ((rc = ss__moefy_router_init(g, f, assign, E, w2n, wr, br, err)) < 0
        || (rc = ss__moefy_copy_w2(g, f, &W2, err)) < 0
        || (rc = ss__moefy_rewrite(g, f, assign, E, k, wr, br, &rw, &rb, &pn,
                         err)) < 0)
        goto done;
    if ((rc = ss__moefy_router_logits(cx, g, pn, &P, err)) < 0)
        goto done;
    cap_init = ss__moefy_captured(P, T, tokens, E, k);
    ss_free(P);
    P = NULL;
    ss__cx_progress(cx, 0.5, "moefy: training the router");
    if ((rc = ss__moefy_train_router(cx, m, g, rw, rb, pn, T, rows, tpr, E, fnote,
                           err)) < 0
        || (rc = ss__moefy_router_logits(cx, g, pn, &P, err)) < 0)
        goto done;
    cap_trained = ss__moefy_captured(P, T, tokens, E, k);
    if ((rc = ss__moefy_compensate(g, f, H, tokens, P, assign, E, k, W2, fnote,
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
