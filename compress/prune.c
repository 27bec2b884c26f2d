/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pruning: structured (whole hidden neurons and conv channels removed, so
 * the matrices shrink) here; unstructured (zeros in place) in
 * prune_flat.c.
 *
 * DESIGN: structured pruning works on "pairs": a producer layer A (its
 * output channels), the elementwise chain after it (activations, Clip,
 * bias Adds, scalar Mul/Div, GELU's Div/Erf/Add/Mul, BatchNormalization,
 * pooling and depthwise convs after a Conv), and the consumer layers B
 * that contract over those channels: Convs, or Linear layers behind a
 * Flatten or a mean over H, W (channel c is then B's S input columns
 * c S .. c S + S - 1).  A pair qualifies only if every tensor on the
 * chain is read by nothing else: no residual Add, LayerNorm, Reshape or
 * graph output sees the hidden dimension, so removing channel c of A
 * (its weight slice and bias), of every per-channel constant on the
 * chain, and of B's input dimension leaves the graph valid and computes
 * exactly what the kept neurons computed before.  So in a torchvision
 * resnet only the widths inside a block shrink (conv1's outputs, conv2's
 * inputs; a bottleneck's conv1 and conv2), never the ones an Add reads.
 * Attention heads are removed the same way where the block matches the
 * pattern prune_heads.c knows.
 *
 * Convs with groups: a depthwise conv (group = channels, one filter per
 * channel) maps channel c to channel c, so it is part of the chain, its
 * filters and bias sliced and its group set to the kept count: mobilenet
 * v2's expand -> depthwise -> project is one pair, the project's inputs
 * its Bs.  A depthwise conv is never an A (its outputs are its inputs).
 * A grouped conv (g groups) as B reads channel c as column c mod C/g of
 * its group's rows, and as A writes C/g channels per group: either way
 * the pair keeps the same number of channels in every group (one
 * grouping for A and the Bs, else the pair is skipped), and the Bs'
 * weights keep, row by row, their group's kept columns.
 *
 * Each pair keeps round((1 - sparsity) C) of its C channels (per group:
 * round((1 - sparsity) C/g) of each group's C/g), at least one, chosen
 * and cut by prune_cut.c (importance scores, and with
 * calibration data the removed channels' mean folded into B's bias when
 * that agrees better with the unpruned graph on the calibration set).
 * Pairs are cut one at a time, each on the graph the previous cuts left,
 * so a B that is the next pair's A is measured as it now is.  A run that
 * cuts nothing says "changed": false and why (compress.c then rejects
 * the job rather than write the source again).
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/prune_int.h"

/* ---- structured: finding pairs ----------------------------------------- */

void
ss__pair_clear(ss__pair_t *p)
{
    ss_free(p->b);
    ss_free(p->slots);
    ss_free(p->dw);
    ss_free(p->mean);
    ss_free(p->sd);
    memset(p, 0, sizeof(*p));
}

static bool
is_unary(const char *op)
{
    static const char *const ops[] = { "Relu", "Erf", "Sigmoid", "Tanh",
                                       "Identity", "LeakyRelu", "Elu",
                                       "Softplus", "Neg", "Abs", "Gelu",
                                       "Dropout",
                                       "HardSigmoid", "HardSwish", "Clip",
                                       NULL };
    int i;

    for (i = 0; ops[i] != NULL; i++)
        if (strcmp(op, ops[i]) == 0)
            return true;
    return false;
}

static bool
is_binary(const char *op)
{
    return strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0
           || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0;
}

/* The channel axis of a constant that broadcasts per channel along the
 * activation's channel axis (last, or 1 of NCHW), or -1. */
static int
channel_axis(const ss_tensor_t *t, int64_t C, bool conv)
{
    int ax = conv ? t->ndim - 3 : t->ndim - 1, d;

    if (ax < 0 || t->dims[ax] != C)
        return -1;
    for (d = 0; d < t->ndim; d++)
        if (d != ax && t->dims[d] != 1)
            return -1;
    return ax;
}

/* A pooling op that works on each channel alone: slicing channels before
 * it slices its output the same way. */
static bool
is_channel_pool(const ss_node_t *nd)
{
    static const char *const ops[] = { "MaxPool", "AveragePool", "LpPool",
                                       "GlobalAveragePool", "GlobalMaxPool",
                                       "GlobalLpPool", NULL };
    int i;

    /* MaxPool's Indices output would index the unpruned channels. */
    if (nd->n_outputs != 1)
        return false;
    for (i = 0; ops[i] != NULL; i++)
        if (strcmp(nd->op_type, ops[i]) == 0)
            return true;
    return false;
}

/* ReduceMean/ReduceMax over exactly the spatial axes (2 .. rank - 1) of a
 * conv activation of that rank: 1 keeping the dims, 2 dropping them
 * ([N, C]: read like a Flatten's output), 0 anything else. */
static int
spatial_reduce(const ss_graph_t *g, const ss_node_t *nd, int rank)
{
    const int64_t *ax = NULL;
    bool hit[SS_MAX_DIMS] = { false };
    int n, i;

    if ((strcmp(nd->op_type, "ReduceMean") != 0
         && strcmp(nd->op_type, "ReduceMax") != 0) || rank < 3
        || rank > SS_MAX_DIMS)
        return 0;
    if (nd->n_inputs > 1 && nd->inputs[1] >= 0) {
        const ss_tensor_t *t = g->values[nd->inputs[1]].constant;

        if (t == NULL || t->dtype != SS_DTYPE_I64)
            return 0;
        ax = t->data;
        n = (int)ss_tensor_numel(t);
    } else {
        n = ss__attr_ints(nd, "axes", &ax);
    }
    if (n != rank - 2)
        return 0;
    for (i = 0; i < n; i++) {
        int64_t a = ax[i] < 0 ? ax[i] + rank : ax[i];

        if (a < 2 || a >= rank || hit[a])
            return 0;
        hit[a] = true;
    }
    return ss__attr_int(nd, "keepdims", 1) ? 1 : 2;
}

/* Tries to build the pair whose producer is layer ai. */
static int
find_pair(const ss_graph_t *g, const ss__uses_t *u, const ss__layer_t *ls,
          int nl, int ai, ss__pair_t *p, bool *ok, ss_err_t *err)
{
    const ss__layer_t *A = &ls[ai];
    bool conv = A->kind == SS__LAYER_CONV;
    int *queue = NULL, *layer_of = NULL, qh = 0, qt = 0, i, j, k, rc = 0;
    int flat = -1;              /* the Flatten's output, once crossed */
    int rank = g->values[A->w].constant->ndim;
    char *in_s = NULL, *seen = NULL;

    memset(p, 0, sizeof(*p));
    *ok = false;
    p->a = ai;
    p->conv = conv;
    p->h = -1;
    p->groups = p->b_groups = 1;
    if (conv) {
        /* A grouped A keeps the same number of outputs in every group
         * (its inputs stay); a depthwise one (one output per group) is
         * cut only as part of the chain of the layer before it. */
        p->groups = ss__attr_int(&g->nodes[A->node], "group", 1);
        if (p->groups < 1 || A->n_out % p->groups != 0
            || A->n_out / p->groups < 2)
            return 0;
    }
    if ((queue = ss_calloc((size_t)g->n_values + 1, sizeof(int))) == NULL
        || (in_s = ss_calloc((size_t)g->n_values + 1, 1)) == NULL
        || (seen = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL
        || (layer_of = ss_malloc(sizeof(int) * ((size_t)g->n_nodes + 1)))
           == NULL
        || (p->b = ss_calloc((size_t)nl + 1, sizeof(int))) == NULL
        || (p->dw = ss_calloc((size_t)nl + 1, sizeof(int))) == NULL
        || (p->slots = ss_calloc((size_t)g->n_nodes * 4 + 1,
                                 sizeof(ss__slot_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to prune");
        goto done;
    }
    for (i = 0; i < g->n_nodes; i++)
        layer_of[i] = -1;
    for (i = 0; i < nl; i++)
        layer_of[ls[i].node] = i;
    queue[qt++] = g->nodes[A->node].outputs[0];
    in_s[queue[0]] = 1;
    while (qh < qt) {
        int v = queue[qh++];

        if (u->is_output[v])
            goto done;
        for (j = 0; j < u->count[v]; j++) {
            int ni = u->nodes[v][j], li = layer_of[ni];
            const ss_node_t *nd = &g->nodes[ni];

            if (seen[ni])
                continue;
            seen[ni] = 1;
            if (nd->domain != NULL && nd->domain[0] != '\0')
                goto done;
            if (li >= 0) {
                const ss__layer_t *B = &ls[li];
                bool bconv = conv && v != flat;
                int64_t bg = bconv ? ss__attr_int(nd, "group", 1) : 1;

                /* B contracts over the channels: its input 0 only. */
                if (B->x != v || nd->inputs[1] == v
                    || (B->kind == SS__LAYER_CONV) != bconv || bg < 1
                    || A->n_out % bg != 0)
                    goto done;
                if (bg == A->n_out && B->n_out == A->n_out
                    && g->values[B->w].constant->dims[1] == 1) {
                    /* Depthwise: channel c in, channel c out, so it is
                     * part of the chain (mobilenet's expand -> depthwise
                     * -> project), cut along with A. */
                    p->dw[p->n_dw++] = ni;
                    if (!in_s[nd->outputs[0]]) {
                        in_s[nd->outputs[0]] = 1;
                        queue[qt++] = nd->outputs[0];
                    }
                    continue;
                }
                if (p->h >= 0 && p->h != v)
                    goto done;  /* keep one chain end: simpler scores */
                /* Grouped Bs: channels go in equal numbers per group, one
                 * grouping for A and all Bs. */
                if ((p->n_b > 0 && bg != p->b_groups)
                    || (bg > 1 && ((p->groups > 1 && p->groups != bg)
                                   || A->n_out / bg < 2)))
                    goto done;
                p->b_groups = bg;
                if (bg > 1)
                    p->groups = bg;
                p->h = v;
                p->b[p->n_b++] = li;
                continue;
            }
            if (nd->n_outputs != 1 || nd->outputs[0] < 0 || v == flat)
                goto done;  /* the flattened channels go to Bs only */
            if (conv && nd->inputs[0] == v && (is_channel_pool(nd)
                    || spatial_reduce(g, nd, rank) == 1)) {
                /* per channel: the chain goes on */
            } else if (conv && nd->inputs[0] == v && flat < 0
                       && (spatial_reduce(g, nd, rank) == 2
                           || (strcmp(nd->op_type, "Flatten") == 0
                               && ss__attr_int(nd, "axis", 1) == 1))) {
                /* [N, C * S], channel-major: Linear Bs read S columns per
                 * channel (S from their input size, below). */
                flat = nd->outputs[0];
            } else if (is_unary(nd->op_type)) {
                if (nd->inputs[0] != v)
                    goto done;
                for (k = 1; k < nd->n_inputs; k++)
                    if (nd->inputs[k] >= 0
                        && (g->values[nd->inputs[k]].constant == NULL
                            || ss_tensor_numel(
                                   g->values[nd->inputs[k]].constant) != 1))
                        goto done;
            } else if (is_binary(nd->op_type) && nd->n_inputs == 2) {
                for (k = 0; k < 2; k++) {
                    int x = nd->inputs[k];
                    const ss_tensor_t *c = x >= 0 ? g->values[x].constant
                                                  : NULL;

                    if (x < 0)
                        goto done;
                    if (c == NULL)
                        continue;   /* checked at the end: in the chain */
                    if (ss_tensor_numel(c) == 1)
                        continue;
                    if (c->dtype != SS_DTYPE_F32
                        || channel_axis(c, A->n_out, conv) < 0)
                        goto done;
                    p->slots[p->n_slots].node = ni;
                    p->slots[p->n_slots].input = k;
                    p->slots[p->n_slots].axis = channel_axis(c, A->n_out,
                                                             conv);
                    p->n_slots++;
                }
            } else if (conv && strcmp(nd->op_type, "BatchNormalization") == 0
                       && nd->inputs[0] == v && nd->n_inputs == 5) {
                for (k = 1; k < 5; k++) {
                    const ss_tensor_t *c = nd->inputs[k] >= 0
                        ? g->values[nd->inputs[k]].constant : NULL;

                    if (c == NULL || c->dtype != SS_DTYPE_F32 || c->ndim != 1
                        || c->dims[0] != A->n_out)
                        goto done;
                    p->slots[p->n_slots].node = ni;
                    p->slots[p->n_slots].input = k;
                    p->slots[p->n_slots].axis = 0;
                    p->n_slots++;
                }
            } else {
                goto done;
            }
            if (!in_s[nd->outputs[0]]) {
                in_s[nd->outputs[0]] = 1;
                queue[qt++] = nd->outputs[0];
            }
        }
    }
    /* Every non-constant operand of a chain node must be on the chain. */
    for (i = 0; i < g->n_nodes; i++) {
        if (!seen[i] || layer_of[i] >= 0)
            continue;
        for (k = 0; k < g->nodes[i].n_inputs; k++) {
            int x = g->nodes[i].inputs[k];

            if (x >= 0 && g->values[x].constant == NULL && !in_s[x])
                goto done;
        }
    }
    /* And every B must read the chain end only. */
    if (p->n_b > 0 && p->h == flat) {
        int64_t K = ls[p->b[0]].n_in;

        if (K % A->n_out != 0)
            goto done;
        for (i = 1; i < p->n_b; i++)
            if (ls[p->b[i]].n_in != K)
                goto done;
        p->spatial = K / A->n_out;
    }
    *ok = p->n_b > 0;
done:
    ss_free(queue);
    ss_free(in_s);
    ss_free(seen);
    ss_free(layer_of);
    return rc;
}

int
ss__prune_next_pair(const ss_graph_t *g, json_t *done_names, ss__pair_t *p,
                    bool *found, ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    ss__uses_t u = {0};
    int nl = 0, i, rc;

    *found = false;
    memset(p, 0, sizeof(*p));
    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0
        || (rc = ss__uses_build(g, &u, err)) < 0)
        goto done;
    for (i = 0; i < nl && !*found; i++) {
        const char *out = g->values[g->nodes[ls[i].node].outputs[0]].name;
        bool ok = false;
        size_t k;

        for (k = 0; k < json_array_size(done_names); k++)
            if (strcmp(json_string_value(json_array_get(done_names, k)),
                       out) == 0)
                break;
        if (k < json_array_size(done_names))
            continue;
        if ((rc = find_pair(g, &u, ls, nl, i, p, &ok, err)) < 0 || !ok) {
            ss__pair_clear(p);
            if (rc < 0)
                goto done;
            continue;
        }
        p->channels = ls[i].n_out;
        *found = true;
    }
done:
    ss__uses_clear(&u);
    ss_free(ls);
    return rc;
}

static int
outputs_on(ss__cx_t *cx, const ss_graph_t *g, ss__outputs_t *o,
           ss_err_t *err)
{
    ss__runner_t r = {0};
    int rc;

    if ((rc = ss__runner_init(&r, g, cx->ctl->threads, err)) == 0)
        rc = ss__collect(&r, cx->calib, cx->ctl->cancel, o, err);
    ss__runner_close(&r);
    return rc;
}

static double
nmse(const ss__outputs_t *a, const ss__outputs_t *b)
{
    double num = 0.0, den = 0.0;
    int k;

    for (k = 0; k < a->n && k < b->n; k++) {
        int64_t i, n = a->rows * a->row_elems[k];

        for (i = 0; i < n && a->row_elems[k] == b->row_elems[k]; i++) {
            double d = (double)a->data[k][i] - b->data[k][i];

            num += d * d;
            den += (double)b->data[k][i] * b->data[k][i];
        }
    }
    return den > 0.0 ? num / den : num;
}

/* One cut of a pair or of attention heads, with or without folding the
 * removed means into the next bias. */
typedef int (*cut_fn)(ss_graph_t *g, void *arg, bool fold, int64_t *kept,
                      ss_err_t *err);

typedef struct pair_arg {
    const ss_method_t *m;
    const ss__layer_t *ls;
    ss__pair_t *p;
} pair_arg_t;

static int
cut_pair(ss_graph_t *g, void *arg, bool fold, int64_t *kept, ss_err_t *err)
{
    pair_arg_t *a = arg;
    double *mean = a->p->mean;
    int rc;

    if (!fold)
        a->p->mean = NULL;
    rc = ss__prune_cut(g, a->ls, a->p, a->m->u.prune.sparsity,
                       a->m->u.prune.score, kept, err);
    a->p->mean = mean;
    return rc;
}

typedef struct heads_arg {
    const ss_method_t *m;
    ss__heads_t *h;
} heads_arg_t;

static int
cut_heads(ss_graph_t *g, void *arg, bool fold, int64_t *kept,
          ss_err_t *err)
{
    heads_arg_t *a = arg;
    double *mean = a->h->mean;
    int rc;

    if (!fold)
        a->h->mean = NULL;
    rc = ss__heads_cut(g, a->h, a->m->u.prune.sparsity, a->m->u.prune.score,
                       kept, err);
    a->h->mean = mean;
    return rc;
}

/* Cuts *g with cut.  With calibration data (have_mean) both ways are
 * tried, with and without folding the removed channels' means into the
 * next bias, and the one that agrees more with ref on the calibration set
 * (then: is closer) is kept: the fold is exact in expectation for one
 * layer, but a shifted logit can cost more accuracy than the noise it
 * removes. */
static int
cut_best(ss__cx_t *cx, ss_graph_t **g, cut_fn cut, void *arg, bool have_mean,
         const ss__outputs_t *ref, int64_t *kept, bool *comp, ss_err_t *err)
{
    ss_graph_t *alt = NULL;
    ss__outputs_t o1 = {0}, o2 = {0};
    double a1, a2;
    int rc;

    *comp = false;
    if (have_mean && (rc = ss_graph_clone(*g, &alt, err)) < 0)
        return rc;
    if ((rc = cut(*g, arg, false, kept, err)) < 0
        || (rc = ss_graph_finalize(*g, err)) < 0 || alt == NULL)
        goto done;
    if ((rc = cut(alt, arg, true, kept, err)) < 0
        || (rc = ss_graph_finalize(alt, err)) < 0
        || (rc = outputs_on(cx, *g, &o1, err)) < 0
        || (rc = outputs_on(cx, alt, &o2, err)) < 0)
        goto done;
    a1 = ss__agreement(&o1, ref);
    a2 = ss__agreement(&o2, ref);
    if (a2 > a1 || (a2 == a1 && nmse(&o2, ref) < nmse(&o1, ref))) {
        ss_graph_t *t = *g;

        *g = alt;
        alt = t;
        *comp = true;
    }
done:
    ss__outputs_clear(&o1);
    ss__outputs_clear(&o2);
    ss_graph_free(alt);
    return rc;
}

/* Damage of removing each head of h alone from g: normalized squared
 * error of the outputs against ref on the calibration set. */
static int
ablate_heads(ss__cx_t *cx, const ss_graph_t *g, ss__heads_t *h,
             const ss__outputs_t *ref, ss_err_t *err)
{
    double *score = NULL;
    ss_graph_t *t = NULL;
    ss__outputs_t o = {0};
    int64_t hh, k, kept;
    int rc = 0;

    if ((score = ss_calloc((size_t)h->H, sizeof(double))) == NULL
        || (h->score = ss_calloc((size_t)h->H, sizeof(double))) == NULL) {
        ss_free(score);
        return ss_err_set(err, SS_ENOMEM, "no memory to score heads");
    }
    for (hh = 0; hh < h->H; hh++) {
        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        for (k = 0; k < h->H; k++)
            h->score[k] = k == hh ? -1.0 : 1.0;
        if ((rc = ss_graph_clone(g, &t, err)) < 0
            || (rc = ss__heads_cut(t, h, 1.0 / (double)h->H,
                                   SS_SCORE_ACTIVATION, &kept, err)) < 0
            || (rc = ss_graph_finalize(t, err)) < 0
            || (rc = outputs_on(cx, t, &o, err)) < 0)
            goto done;
        score[hh] = nmse(&o, ref);
        ss__outputs_clear(&o);
        ss_graph_free(t);
        t = NULL;
    }
    memcpy(h->score, score, sizeof(double) * (size_t)h->H);
done:
    if (rc < 0) {
        ss_free(h->score);
        h->score = NULL;
    }
    ss__outputs_clear(&o);
    ss_graph_free(t);
    ss_free(score);
    return rc;
}

/* Attention blocks, one at a time like the pairs. */
static int
prune_heads(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            const ss__outputs_t *ref, json_t *arr, ss_err_t *err)
{
    json_t *names = json_array();
    ss__heads_t h;
    int rc = 0;

    memset(&h, 0, sizeof(h));
    if (names == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    for (;;) {
        ss_method_t mm;
        heads_arg_t arg = { &mm, &h };
        int64_t kept;
        bool found, comp;
        char label[256];

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        if ((rc = ss__heads_next(*g, names, &h, &found, err)) < 0)
            goto done;
        if (!found)
            break;
        {
            ss__layer_t *ls = NULL;
            int nl = 0;

            if ((rc = ss__find_layers(*g, &ls, &nl, err)) < 0)
                goto done;
            snprintf(label, sizeof(label), "%s",
                     ss__node_label(*g, ls[h.a].node));
            json_array_append_new(names, json_string(
                (*g)->values[(*g)->nodes[ls[h.a].node].outputs[0]].name));
            ss_free(ls);
        }
        mm = *m;
        if (m->per_layer != NULL) {
            /* The search's share of heads for this block (compress.h). */
            mm.u.prune.sparsity = m->per_layer(m->per_layer_arg, label);
            if (mm.u.prune.sparsity <= 0.0) {
                ss__heads_clear(&h);
                continue;
            }
            if (mm.u.prune.sparsity > 0.99)
                mm.u.prune.sparsity = 0.99;
        }
        if (cx->calib != NULL && (rc = ss__heads_stats(cx, *g, &h, err)) < 0)
            goto done;
        if (cx->calib != NULL && mm.u.prune.score == SS_SCORE_ACTIVATION
            && (rc = ablate_heads(cx, *g, &h, ref, err)) < 0)
            goto done;
        if ((rc = cut_best(cx, g, cut_heads, &arg, h.mean != NULL, ref,
                           &kept, &comp, err)) < 0)
            goto done;
        json_array_append_new(arr, json_pack(
            "{s:s, s:I, s:I, s:b}", "attention", label,
            "heads", (json_int_t)h.H, "kept", (json_int_t)kept,
            "bias_compensation", comp));
        ss__heads_clear(&h);
    }
done:
    ss__heads_clear(&h);
    json_decref(names);
    return rc;
}

/* Pairs are cut one at a time on a finalized graph, each measured after
 * the previous cuts (a B can be the next pair's A, and its input
 * statistics change with the first cut). */
static int
structured(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **gp,
           json_t *note, ss_err_t *err)
{
    json_t *arr = json_array(), *names = json_array();
    ss__outputs_t ref = {0};
    ss_graph_t *g = *gp;
    ss__pair_t p;
    int rc = 0, step = 0;

    memset(&p, 0, sizeof(p));
    if (arr == NULL || names == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
        goto done;
    }
    if (cx->calib != NULL && (rc = outputs_on(cx, g, &ref, err)) < 0)
        goto done;
    for (;;) {
        ss__layer_t *ls = NULL;
        ss_method_t mm;
        int nl = 0;
        int64_t kept;
        bool found, comp = false;
        char label[256];

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        if ((rc = ss__prune_next_pair(g, names, &p, &found, err)) < 0)
            goto done;
        if (!found)
            break;
        ss__cx_progress(cx, 1.0 - 1.0 / (step + 2), cx->calib != NULL
                        ? "prune: measuring channels"
                        : "prune: removing channels");
        step++;
        if (cx->calib != NULL
            && (rc = ss__prune_stats(cx, g, &p, 1, err)) < 0)
            goto done;
        if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0)
            goto done;
        snprintf(label, sizeof(label), "%s",
                 ss__node_label(g, ls[p.a].node));
        json_array_append_new(names, json_string(
            g->values[g->nodes[ls[p.a].node].outputs[0]].name));
        mm = *m;
        if (m->per_layer != NULL) {
            /* The search's sparsity for this pair (compress.h). */
            mm.u.prune.sparsity = m->per_layer(m->per_layer_arg, label);
            if (mm.u.prune.sparsity <= 0.0) {
                ss_free(ls);
                ss__pair_clear(&p);
                continue;
            }
            if (mm.u.prune.sparsity > 0.99)
                mm.u.prune.sparsity = 0.99;
        }
        {
            pair_arg_t arg = { &mm, ls, &p };

            /* A grouped B's columns are per group: no mean to fold. */
            rc = cut_best(cx, &g, cut_pair, &arg,
                          p.mean != NULL && p.b_groups == 1, &ref,
                          &kept, &comp, err);
        }
        ss_free(ls);
        if (rc < 0)
            goto done;
        json_array_append_new(arr, json_pack(
            "{s:s, s:I, s:I, s:b}", "layer", label,
            "channels", (json_int_t)p.channels, "kept", (json_int_t)kept,
            "bias_compensation", comp));
        ss__pair_clear(&p);
    }
    if ((rc = prune_heads(cx, m, &g, &ref, arr, err)) < 0)
        goto done;
    json_object_set_new(note, "kind", json_string("structured"));
    {
        size_t k, cut = 0;

        for (k = 0; k < json_array_size(arr); k++) {
            json_t *e = json_array_get(arr, k);
            json_t *all = json_object_get(e, "channels");

            if (all == NULL)
                all = json_object_get(e, "heads");
            cut += json_integer_value(json_object_get(e, "kept"))
                   < json_integer_value(all);
        }
        json_object_set_new(note, "changed", json_boolean(cut > 0));
        if (cut == 0)
            json_object_set_new(note, "reason", json_string(
                json_array_size(arr) == 0
                ? "no prunable channels: every layer's output reaches a "
                  "residual Add, a normalization, a reshape or a graph "
                  "output, or a depthwise conv alone"
                : "the sparsity rounds to no channel or head in any "
                  "layer"));
    }
    json_object_set_new(note, "pruned", arr);
    arr = NULL;
    json_object_set_new(note, "note", json_string(
        "hidden neurons and conv channels whose dimension reaches no "
        "residual, normalization or reshape, and attention heads of the "
        "fused-qkv pattern torch exports"));
done:
    *gp = g;
    ss__outputs_clear(&ref);
    ss__pair_clear(&p);
    json_decref(arr);
    json_decref(names);
    return rc;
}

int
ss__prune(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *note,
          ss_err_t *err)
{
    if (m->u.prune.kind == SS_PRUNE_STRUCTURED)
        return structured(cx, m, g, note, err);
    return ss__prune_unstructured(cx, m, *g, note, err);
}
