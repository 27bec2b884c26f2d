/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The search's gradient-based width search: a differentiable channel
 * mask, trained with the trainer.
 *
 * DESIGN: every prunable pair of the source (prune.c: a layer A, the
 * elementwise chain after it, the layers B that read its channels) gets
 * a gate: a per-channel vector g, initialised to 1, multiplied into the
 * chain's end where B reads it (Mul(h, g), broadcast over the channel
 * axis).  The base is frozen (lora.c's pattern: every initializer but the
 * gates is named frozen), so the gates alone train, by the same loop as
 * finetune (distillation from the source on the training data), with a
 * penalty added to their gradients between the backward pass and the
 * update (the cx step hook): lambda_l * sign(g) for L1, where lambda_l
 * is the strength times the layer's cost per channel on this machine
 * (the sensitivity phase's measured gain of pruning half the layer,
 * per channel removed, normalised to a mean of 1 over all gated
 * channels, so a slow channel costs more to keep than a cheap one),
 * divided by the number of gated channels (strength is then in the
 * loss's units for the whole network).  After each update the gates are
 * projected on g >= 0.  A channel whose loss gradient cannot outweigh
 * its penalty is driven to 0 and stays there; the others settle where
 * the two balance.  Adam (scale-free steps) moves every gate at about
 * the learning rate, so 1 -> 0 takes a few dozen steps; the penalty's
 * sign, not its size relative to Adam's step, decides which gates close.
 *
 * The mask's widths: per layer, the gates >= 0.05 (at least one).  The
 * trained gates are then folded into the B layers' weights (column c of
 * B scaled by g_c, exactly what the Mul computed), on a fresh copy of
 * the source, which the search's mask configurations are built from
 * (search_cfg.c): structured pruning at exactly the mask's width per
 * layer removes the closed channels (their activation score is 0 now),
 * then finetune, then optionally ptq.  The strength is the search's to
 * choose (search.c's mask phase moves it up after a passing result and
 * down after a failing one).
 *
 * Seeded: the trainer's seed is the search's, so a run with the same
 * data, seed and thread count gives the same gates.
 *
 * THREADS: the thread of ss_search_run().
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/prune_int.h"
#include "compress/search_int.h"

#define MAX_B 8                 /* consumer layers of one gated pair */
#define OPEN 0.05f              /* a gate below this is closed */

typedef struct gate {
    int layer;                  /* the search's layer index of A */
    char name[48];              /* the gate initializer's name */
    int64_t C;
    bool conv;
    int h;                      /* the gated value */
    int n_b;
    int b_w[MAX_B];             /* B's weight value id */
    int b_axis[MAX_B];          /* its input-channel axis */
    double lambda;              /* penalty per unit of gate */
    int64_t off;                /* in the trainer's flat arrays */
} gate_t;

typedef struct run {
    gate_t g[SS__S_MAX_LAYERS];
    int n;
    bool resolved;              /* offsets looked up */
} run_t;

void
ss__s_mask_clear(ss__smask_t *m)
{
    ss_graph_free(m->graph);
    json_decref(m->note);
    memset(m, 0, sizeof(*m));
}

static int
label_layer(const ss__search_t *s, const char *label)
{
    int i;

    for (i = 0; i < s->n_layers; i++)
        if (strcmp(s->labels[i], label) == 0)
            return i;
    return -1;
}

/* The pairs of g (the source's copy, not yet changed) as gates. */
static int
find_gates(const ss__search_t *s, const ss_graph_t *g, run_t *r,
           ss_err_t *err)
{
    json_t *done = json_array();
    ss__layer_t *ls = NULL;
    ss__pair_t p;
    int nl = 0, i, rc;
    bool found;

    memset(&p, 0, sizeof(p));
    if (done == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the width search");
    if ((rc = ss__find_layers(g, &ls, &nl, err)) < 0)
        goto done;
    for (;;) {
        gate_t *gt = &r->g[r->n];
        int l;

        if ((rc = ss__prune_next_pair(g, done, &p, &found, err)) < 0
            || !found)
            break;
        json_array_append_new(done, json_string(
            g->values[g->nodes[ls[p.a].node].outputs[0]].name));
        l = label_layer(s, ss__node_label(g, ls[p.a].node));
        /* A flattened chain end (p.spatial) has no per-channel axis to
         * gate, and a grouped B no column per channel to fold a gate
         * into: such pairs are left to the prune method. */
        if (l >= 0 && r->n < SS__S_MAX_LAYERS && p.n_b <= MAX_B
            && p.spatial == 0 && p.groups == 1 && p.channels >= 2
            && p.channels <= 65535) {
            memset(gt, 0, sizeof(*gt));
            gt->layer = l;
            snprintf(gt->name, sizeof(gt->name), "slimserve.mask.%d", r->n);
            gt->C = p.channels;
            gt->conv = p.conv;
            gt->h = p.h;
            gt->n_b = p.n_b;
            gt->off = -1;
            for (i = 0; i < p.n_b; i++) {
                const ss__layer_t *B = &ls[p.b[i]];

                gt->b_w[i] = B->w;
                gt->b_axis[i] = B->kind == SS__LAYER_CONV ? 1
                                : B->out_axis == 0 ? 1 : 0;
            }
            r->n++;
        }
        ss__pair_clear(&p);
    }
done:
    ss__pair_clear(&p);
    ss_free(ls);
    json_decref(done);
    return rc;
}

/* Lambda per gate: strength x the layer's measured latency (or size)
 * per channel, normalised, over the gated channels. */
static void
penalties(const ss__search_t *s, run_t *r, double strength)
{
    double cost[SS__S_MAX_LAYERS], sum = 0.0, floor_ = 0.0, total = 0.0;
    int k, n_pos = 0;

    for (k = 0; k < r->n; k++) {
        const ss__sens_t *e = &s->sens[r->g[k].layer][SS__S_PRUNE0 + 1];
        double c = e->measured && e->usable
                   ? e->gain / (0.5 * (double)r->g[k].C) : 0.0;

        cost[k] = c > 0.0 ? c : 0.0;
        if (cost[k] > 0.0) {
            floor_ += cost[k];
            n_pos++;
        }
    }
    /* A layer whose gain drowned in the timing noise still costs
     * something: a tenth of the mean; with no measurement, all alike. */
    floor_ = n_pos > 0 ? 0.1 * floor_ / n_pos : 1.0;
    for (k = 0; k < r->n; k++) {
        if (cost[k] < floor_)
            cost[k] = floor_;
        sum += cost[k] * (double)r->g[k].C;
        total += (double)r->g[k].C;
    }
    for (k = 0; k < r->n; k++)
        r->g[k].lambda = strength * (cost[k] * total / sum) / total;
}

/* The step hook (compress/internal.h): L1 on the gates, then g >= 0. */
static int
hook(void *arg, ss_train_t *t, int after, ss_err_t *err)
{
    run_t *r = arg;
    float *w = ss_train_params(t), *gr = ss_train_grads(t);
    int k, i;
    int64_t c;

    if (!r->resolved) {
        for (k = 0; k < r->n; k++)
            for (i = 0; i < ss_train_num_params(t); i++) {
                ss_train_param_info_t pi;

                if (ss_train_param(t, i, &pi) == 0
                    && strcmp(pi.name, r->g[k].name) == 0
                    && pi.numel == r->g[k].C)
                    r->g[k].off = pi.offset;
            }
        for (k = 0; k < r->n; k++)
            if (r->g[k].off < 0)
                return ss_err_set(err, SS_EINTERNAL, "width search: gate "
                                  "%s is not a parameter", r->g[k].name);
        r->resolved = true;
    }
    for (k = 0; k < r->n; k++) {
        const gate_t *g = &r->g[k];

        for (c = 0; c < g->C; c++) {
            if (!after)
                gr[g->off + c] += (float)g->lambda;
            else if (w[g->off + c] < 0.0f)
                w[g->off + c] = 0.0f;
        }
    }
    return 0;
}

/* The source with gates (value "gated" of each pair multiplied by it). */
static int
gated_graph(const ss__search_t *s, run_t *r, ss_graph_t **out,
            const char ***frozen, int *n_frozen, ss_err_t *err)
{
    ss_graph_t *g = NULL;
    int k, v, rc;

    *out = NULL;
    if ((rc = ss_graph_clone(s->src, &g, err)) < 0)
        return rc;
    if ((*frozen = ss_calloc((size_t)g->n_values + 1, sizeof(char *)))
        == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the width search");
        goto done;
    }
    /* Every initializer of the source stays as it is: names borrowed
     * from the source, which outlives the run. */
    for (v = 0, *n_frozen = 0; v < s->src->n_values; v++)
        if (s->src->values[v].constant != NULL
            && s->src->values[v].name != NULL)
            (*frozen)[(*n_frozen)++] = s->src->values[v].name;
    for (k = 0; k < r->n; k++) {
        const gate_t *gt = &r->g[k];
        int64_t dims[3] = { gt->C, 1, 1 }, c;
        ss_tensor_t *t = NULL;
        int vg, h2, in[2];

        if ((rc = ss__tensor_new(SS_DTYPE_F32, gt->conv ? 3 : 1, dims, &t,
                                 err)) < 0)
            goto done;
        for (c = 0; c < gt->C; c++)
            ((float *)t->data)[c] = 1.0f;
        if ((rc = vg = ss_graph_add_value(g, gt->name, t, err)) < 0
            || (rc = h2 = ss_graph_add_value(g, NULL, NULL, err)) < 0)
            goto done;
        /* B reads the gated channels (the pair's chain end is read by
         * its Bs alone). */
        ss_graph_replace_uses(g, gt->h, h2);
        in[0] = gt->h;
        in[1] = vg;
        if ((rc = ss_graph_add_node(g, "Mul", NULL, 2, in, 1, &h2, 0, NULL,
                                    err)) < 0)
            goto done;
    }
    if ((rc = ss_graph_finalize(g, err)) < 0) {
        ss_err_wrap(err, rc, "width search: the gated graph");
        goto done;
    }
    *out = g;
    g = NULL;
done:
    ss_graph_free(g);
    return rc;
}

/* Column c of every B weight scaled by gate value c, on a copy of the
 * source (the same value ids as when the gates were found). */
static int
fold(const ss__search_t *s, const run_t *r, const float *const *gv,
     ss_graph_t **out, ss_err_t *err)
{
    ss_graph_t *g = NULL;
    int k, i, d, rc;

    if ((rc = ss_graph_clone(s->src, &g, err)) < 0)
        return rc;
    for (k = 0; k < r->n; k++)
        for (i = 0; i < r->g[k].n_b; i++) {
            const ss_tensor_t *w = g->values[r->g[k].b_w[i]].constant;
            int ax = r->g[k].b_axis[i];
            int64_t n, j, inner = 1, C;
            ss_tensor_t *t = NULL;

            if (w == NULL || w->dtype != SS_DTYPE_F32 || ax >= w->ndim
                || w->dims[ax] != r->g[k].C) {
                rc = ss_err_set(err, SS_EINTERNAL, "width search: layer "
                                "weight %d is not what it was", k);
                goto done;
            }
            if ((rc = ss__tensor_new(SS_DTYPE_F32, w->ndim, w->dims, &t,
                                     err)) < 0)
                goto done;
            n = ss_tensor_numel(w);
            C = w->dims[ax];
            for (d = ax + 1; d < w->ndim; d++)
                inner *= w->dims[d];
            for (j = 0; j < n; j++)
                ((float *)t->data)[j] = ((const float *)w->data)[j]
                                        * gv[k][(j / inner) % C];
            if ((rc = ss_graph_set_constant(g, r->g[k].b_w[i], t,
                                            err)) < 0)
                goto done;
        }
    if ((rc = ss_graph_finalize(g, err)) < 0)
        goto done;
    *out = g;
    g = NULL;
done:
    ss_graph_free(g);
    return rc;
}

int
ss__s_mask_train(ss__search_t *s, double strength, ss__smask_t *out,
                 ss_err_t *err)
{
    const char **frozen = NULL;
    const float *gv[SS__S_MAX_LAYERS];
    ss_graph_t *tg = NULL;
    ss_method_t m;
    ss__cx_t cx;
    json_t *note = json_object(), *widths = json_object();
    run_t *r;
    int n_frozen = 0, k, rc;

    memset(out, 0, sizeof(*out));
    if ((r = ss_calloc(1, sizeof(*r))) == NULL || note == NULL
        || widths == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the width search");
        goto done;
    }
    if ((rc = find_gates(s, s->src, r, err)) < 0)
        goto done;
    if (r->n == 0) {
        rc = ss_err_set(err, SS_EUNSUPP, "width search: no prunable layer "
                        "pair to gate");
        goto done;
    }
    penalties(s, r, strength);
    if ((rc = gated_graph(s, r, &tg, &frozen, &n_frozen, err)) < 0)
        goto done;
    /* The gates alone: Adam at a rate that crosses 1 -> 0 in a few dozen
     * steps, no weight decay (the penalty is the only pull to 0). */
    ss__s_train_method(s, SS_METHOD_FINETUNE, &m);
    m.u.train.epochs = 4;
    m.u.train.opt.lr = 0.1;
    m.u.train.opt.weight_decay = 0.0;
    ss__s_cx(s, &cx);
    cx.step_hook = hook;
    cx.step_hook_arg = r;
    if ((rc = ss__train_graph(&cx, &m, &tg, frozen, n_frozen, note,
                              err)) < 0)
        goto done;
    for (k = 0; k < r->n; k++) {
        const gate_t *gt = &r->g[k];
        int v = ss_graph_find_value(tg, gt->name);
        const ss_tensor_t *t = v >= 0 ? tg->values[v].constant : NULL;
        int64_t c, kept = 0;

        if (t == NULL || ss_tensor_numel(t) != gt->C
            || t->dtype != SS_DTYPE_F32) {
            rc = ss_err_set(err, SS_EINTERNAL, "width search: gate %s "
                            "lost in training", gt->name);
            goto done;
        }
        gv[k] = t->data;
        for (c = 0; c < gt->C; c++)
            kept += gv[k][c] >= OPEN;
        out->channels[gt->layer] = gt->C;
        out->kept[gt->layer] = kept > 0 ? kept : 1;
        json_object_set_new(widths, s->labels[gt->layer], json_pack(
            "{s:I, s:I, s:f}", "channels", (json_int_t)gt->C, "kept",
            (json_int_t)out->kept[gt->layer], "lambda", gt->lambda));
    }
    if ((rc = fold(s, r, gv, &out->graph, err)) < 0)
        goto done;
    out->strength = strength;
    json_object_set_new(note, "strength", json_real(strength));
    json_object_set_new(note, "widths", widths);
    widths = NULL;
    out->note = note;
    note = NULL;
done:
    if (rc < 0)
        ss__s_mask_clear(out);
    ss_graph_free(tg);
    ss_free(frozen);
    ss_free(r);
    json_decref(note);
    json_decref(widths);
    return rc;
}
