/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The search's configurations: building one, measuring it, predicting it
 * and proposing the next.
 *
 * DESIGN: a configuration says, per layer of the source (by its node
 * name), one structural option (none, structured pruning at 25/50/75%,
 * low-rank at ratio 1/8, 1/4, 1/2) and whether it runs in int8 or bf16
 * (per-layer bf16: the engine's "slimserve.bf16_nodes", engine/ir/edit.h,
 * naming the layer's nodes); for the graph, whether the other layers run
 * in bf16, whether the pruned or
 * factored graph is fine-tuned against the source before quantization,
 * or whether a distilled student of a given width replaces it.  It is
 * built by calling the methods themselves in the pipeline order
 * (prune -> lowrank -> finetune | distill -> ptq -> bf16) with their
 * per-layer hook (compress.h's per_layer) answering from the
 * configuration, so the search never re-implements a method.
 *
 * The proxy: each option was measured alone (search.c's sensitivity
 * phase: the accuracy damage, and the latency or size gain, on this
 * machine); a configuration's prediction is the sum over its options.
 * Interactions (int8 on a pruned layer) make it approximate; it only
 * ranks candidates and decides which are worth a full measurement.
 *
 * THREADS: the thread of ss_search_run().
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/search_int.h"
#include "engine/ir/edit.h"

const double ss__s_prune_levels[3] = { 0.25, 0.5, 0.75 };
const double ss__s_rank_levels[3] = { 0.125, 0.25, 0.5 };

uint64_t
ss__s_rand(ss__search_t *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return s->rng * 2685821657736338717ULL;
}

double
ss__s_gauss(ss__search_t *s)
{
    /* Box-Muller from two uniforms in (0, 1]. */
    double u1 = ((ss__s_rand(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = ((ss__s_rand(s) >> 11) + 1.0) / 9007199254740993.0;

    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

bool
ss__s_cfg_empty(const ss__scfg_t *cfg)
{
    static const ss__scfg_t zero;

    return memcmp(cfg, &zero, sizeof(zero)) == 0;
}

/* ---- building ------------------------------------------------------------ */

typedef struct hook {
    const ss__search_t *s;
    const ss__scfg_t *cfg;
} hook_t;

/* The source layer a label names: the label itself, or the layer a
 * low-rank factor came from ("<name>/lowrank_a"); -1 when none. */
static int
layer_of(const ss__search_t *s, const char *label)
{
    size_t n = strlen(label);
    int i;

    if (n > 10 && (strcmp(label + n - 10, "/lowrank_a") == 0
                   || strcmp(label + n - 10, "/lowrank_b") == 0))
        n -= 10;
    for (i = 0; i < s->n_layers; i++)
        if (strlen(s->labels[i]) == n && strncmp(s->labels[i], label, n) == 0)
            return i;
    return -1;
}

static double
hook_prune(void *arg, const char *label)
{
    const hook_t *h = arg;
    int l = layer_of(h->s, label), st;

    if (l < 0)
        return 0.0;
    if (h->cfg->mask && h->cfg->keep[l]) {
        /* The mask's width: exactly keep channels of C (prune keeps
         * C - round(sparsity C)). */
        int64_t C = h->s->masks[h->cfg->mask - 1].channels[l];

        return C > h->cfg->keep[l]
               ? (double)(C - h->cfg->keep[l]) / (double)C : 0.0;
    }
    st = h->cfg->st[l];
    return st >= SS__S_PRUNE0 && st < SS__S_RANK0
           ? ss__s_prune_levels[st - SS__S_PRUNE0] : 0.0;
}

static double
hook_rank(void *arg, const char *label)
{
    const hook_t *h = arg;
    int l = layer_of(h->s, label), st;

    if (l < 0)
        return 0.0;
    st = h->cfg->st[l];
    return st >= SS__S_RANK0 ? ss__s_rank_levels[st - SS__S_RANK0] : 0.0;
}

static double
hook_int8(void *arg, const char *label)
{
    const hook_t *h = arg;
    int l = layer_of(h->s, label);

    /* A student's layers carry the teacher's names when they exist;
     * others follow the configuration's first layer. */
    if (l < 0)
        return h->cfg->width && h->cfg->int8[0] ? 1.0 : 0.0;
    return h->cfg->int8[l] ? 1.0 : 0.0;
}

static bool
any(const uint8_t *a, int n, int lo, int hi)
{
    int i;

    for (i = 0; i < n; i++)
        if (a[i] >= lo && a[i] < hi)
            return true;
    return false;
}

/* Does cfg prune: a structural prune option or a mask's width? */
static bool
prunes(const ss__scfg_t *cfg, int n)
{
    int i;

    for (i = 0; cfg->mask && i < n; i++)
        if (cfg->keep[i])
            return true;
    return any(cfg->st, n, SS__S_PRUNE0, SS__S_RANK0);
}

/* The nodes of g the bf16l layers of cfg became (a low-rank layer: both
 * factors), by name, as the engine's per-layer bf16 list; the int8
 * layers stay int8 (the engine's int8 pass takes them first anyway). */
static int
mark_bf16_layers(const ss__search_t *s, const ss__scfg_t *cfg, ss_graph_t *g,
                 ss_err_t *err)
{
    const char **names;
    int n = 0, rc;

    if ((names = ss_calloc((size_t)g->n_nodes + 1, sizeof(*names))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the bf16 layers");
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *nd = &g->nodes[i];
        int l;

        if (nd->name == NULL || nd->name[0] == '\0'
            || (strcmp(nd->op_type, "MatMul") != 0
                && strcmp(nd->op_type, "Gemm") != 0
                && strcmp(nd->op_type, "Conv") != 0)
            || (l = layer_of(s, nd->name)) < 0 || !cfg->bf16l[l]
            || cfg->int8[l])
            continue;
        names[n++] = nd->name;
    }
    rc = n > 0 ? ss_graph_set_bf16_nodes(g, n, names, err)
               : ss_err_set(err, SS_EUNSUPP, "bf16 per layer: none of the "
                            "chosen layers is a named node");
    ss_free(names);
    return rc;
}

/* One method on *g: the methods' own entry points (internal.h). */
static int
apply(ss__search_t *s, ss__cx_t *cx, ss_method_t *m, ss_graph_t **g,
      json_t *notes, ss_err_t *err)
{
    json_t *note = json_pack("{s:s}", "method", ss_method_name(m->kind));
    int rc;

    if (note == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    json_array_append_new(notes, note);
    if ((rc = ss__s_poll(s)) < 0)
        return ss_err_set(err, rc, "stopped");
    switch (m->kind) {
    case SS_METHOD_PTQ: return ss__ptq(cx, m, g, note, err);
    case SS_METHOD_PRUNE: return ss__prune(cx, m, g, note, err);
    case SS_METHOD_LOWRANK: return ss__lowrank(cx, m, g, note, err);
    case SS_METHOD_FINETUNE: return ss__finetune(cx, m, g, note, err);
    case SS_METHOD_DISTILL: return ss__distill(cx, m, g, note, err);
    default: return ss_err_set(err, SS_EINTERNAL, "search: method %d",
                               (int)m->kind);
    }
}

/* The trainer's settings for the search's short runs, seeded from the
 * search's seed so that a trial is reproducible.  Recovery fine-tuning
 * gets FT_STEPS optimizer steps (2 to 8 epochs): a fixed two epochs was
 * 40 steps on 1300 rows, too few for a pruned layer to recover what it
 * could, so aggressive configurations missed the budget for want of
 * training, not of capacity. */
#define FT_STEPS 120

void
ss__s_train_method(const ss__search_t *s, ss_method_kind_t kind,
                   ss_method_t *m)
{
    ss_method_default(m, kind);
    m->u.train.epochs = kind == SS_METHOD_DISTILL ? 6 : 2;
    if (s->train != NULL && m->u.train.batch_size > s->train->rows)
        m->u.train.batch_size = (int)s->train->rows;
    if (s->train != NULL && kind == SS_METHOD_FINETUNE) {
        int64_t per = s->train->rows / m->u.train.batch_size;
        int64_t e = per > 0 ? (FT_STEPS + per - 1) / per : 8;

        m->u.train.epochs = (int)(e < 2 ? 2 : e > 8 ? 8 : e);
    }
    m->u.train.opt.seed = s->o->seed;
}

void
ss__s_cx(ss__search_t *s, ss__cx_t *cx)
{
    memset(cx, 0, sizeof(*cx));
    cx->src = s->src;
    cx->train = s->train;
    cx->calib = s->calib != NULL ? s->calib : s->val;
    cx->val = s->val;
    cx->gate = &s->o->budget;
    cx->ctl = &s->ctl;
    cx->src_out = &s->src_out;
    cx->src_acc = s->src_ev.accuracy;
    cx->p1 = 1.0;
}

int
ss__s_build(ss__search_t *s, const ss__scfg_t *cfg, ss_graph_t **out,
            json_t *notes, ss_err_t *err)
{
    hook_t h = { s, cfg };
    ss_graph_t *g = NULL;
    ss_method_t m;
    ss__cx_t cx;
    int n = s->n_layers, rc;

    *out = NULL;
    ss__s_cx(s, &cx);
    /* A mask configuration starts from the source with its mask's
     * trained gates folded in: the channels it closed are the ones the
     * pruning below scores lowest and removes. */
    if (cfg->mask > s->n_masks) {
        rc = ss_err_set(err, SS_EINTERNAL, "search: mask %d", cfg->mask);
        goto done;
    }
    if (cfg->mask) {
        json_t *note = json_pack("{s:s, s:f}", "method", "width_search",
                                 "strength",
                                 s->masks[cfg->mask - 1].strength);

        if (note == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
            goto done;
        }
        json_array_append_new(notes, note);
    }
    if ((rc = ss_graph_clone(cfg->mask ? s->masks[cfg->mask - 1].graph
                                       : s->src, &g, err)) < 0)
        goto done;
    if (cfg->width) {
        ss__s_train_method(s, SS_METHOD_DISTILL, &m);
        m.u.train.width = cfg->width / 4.0;
        if ((rc = apply(s, &cx, &m, &g, notes, err)) < 0)
            goto done;
    }
    if (!cfg->width && prunes(cfg, n)) {
        ss_method_default(&m, SS_METHOD_PRUNE);
        m.u.prune.kind = SS_PRUNE_STRUCTURED;
        m.per_layer = hook_prune;
        m.per_layer_arg = &h;
        if ((rc = apply(s, &cx, &m, &g, notes, err)) < 0)
            goto done;
    }
    if (!cfg->width && any(cfg->st, n, SS__S_RANK0, SS__S_N_STRUCT)) {
        ss_method_default(&m, SS_METHOD_LOWRANK);
        m.per_layer = hook_rank;
        m.per_layer_arg = &h;
        if ((rc = apply(s, &cx, &m, &g, notes, err)) < 0)
            goto done;
    }
    if (cfg->finetune && !cfg->width) {
        ss__s_train_method(s, SS_METHOD_FINETUNE, &m);
        if ((rc = apply(s, &cx, &m, &g, notes, err)) < 0)
            goto done;
    }
    if (any(cfg->int8, n, 1, 2)) {
        ss_method_default(&m, SS_METHOD_PTQ);
        m.u.ptq.fallback = false;   /* the search decides the layers */
        m.per_layer = hook_int8;
        m.per_layer_arg = &h;
        if ((rc = apply(s, &cx, &m, &g, notes, err)) < 0)
            goto done;
    }
    if (cfg->bf16 && (rc = ss_graph_set_meta(g, "slimserve.precision",
                                             "bf16", err)) < 0)
        goto done;
    if (!cfg->bf16 && any(cfg->bf16l, n, 1, 2)
        && (rc = mark_bf16_layers(s, cfg, g, err)) < 0)
        goto done;
    *out = g;
    g = NULL;
done:
    ss_graph_free(g);
    return rc;
}

int
ss__s_measure(ss__search_t *s, const ss_graph_t *g, ss__outputs_t *o,
              ss_eval_t *ev, ss_err_t *err)
{
    ss__runner_t r = {0};
    int runs = s->ctl.latency_runs, rc;

    memset(ev, 0, sizeof(*ev));
    ev->agreement = 1.0;
    if ((rc = ss__runner_init(&r, g, s->ctl.threads, err)) < 0
        || (rc = ss__collect(&r, s->val, &s->stop, o, err)) < 0)
        goto done;
    ev->accuracy = ss__accuracy(o, s->val->labels);
    if (s->src_out.n > 0) {
        ev->agreement = ss__agreement(o, &s->src_out);
        ev->max_relative_error = ss__max_rel_error(o, &s->src_out);
    }
    if ((rc = ss__s_poll(s)) < 0
        || (rc = ss__latency(&r, s->val, 1, runs, &s->stop,
                             &ev->latency_ms_b1, err)) < 0
        || (rc = ss__s_poll(s)) < 0
        || (rc = ss__latency(&r, s->val, 32, runs, &s->stop,
                             &ev->latency_ms_b32, err)) < 0)
        goto done;
    ev->weight_bytes = ss_graph_weight_bytes(g);
done:
    if (rc == SS_ECANCELED)
        ss_err_set(err, rc, "stopped");
    ss__runner_close(&r);
    return rc;
}

/* ---- the proxy ----------------------------------------------------------- */

static double
pos(double x)
{
    return x > 0.0 ? x : 0.0;
}

void
ss__s_predict(const ss__search_t *s, const ss__scfg_t *cfg, double *damage,
              double *gain)
{
    int i;

    *damage = 0.0;
    *gain = 0.0;
    for (i = 0; i < s->n_layers; i++) {
        const ss__sens_t *st = &s->sens[i][cfg->st[i]];

        if (cfg->st[i] > 0) {
            *damage += pos(st->damage);
            *gain += st->gain;
        }
        if (cfg->int8[i]) {
            *damage += pos(s->sens[i][0].damage);
            *gain += s->sens[i][0].gain;
        } else if (cfg->bf16l[i] && !cfg->bf16) {
            *damage += pos(s->sens_bf16l[i].damage);
            *gain += s->sens_bf16l[i].gain;
        }
    }
    if (cfg->bf16) {
        *damage += pos(s->sens_bf16.damage);
        *gain += s->sens_bf16.gain;
    }
}

/* The damage of an option, perturbed for a varied proposal. */
static double
noisy(ss__search_t *s, const ss__sens_t *e, double noise)
{
    double d = pos(e->damage) + 1e-6;

    return noise > 0.0 ? d * exp(noise * ss__s_gauss(s)) : d;
}

void
ss__s_greedy(ss__search_t *s, const ss__scfg_t *base, double cap,
             double noise, ss__scfg_t *out)
{
    double dmg[SS__S_MAX_LAYERS][SS__S_N_STRUCT], dbf, total = 0.0;
    double dbl[SS__S_MAX_LAYERS];
    int i, k;

    *out = *base;
    /* The perturbation is drawn once per option and proposal, in a fixed
     * order, so a seed gives the same proposals. */
    for (i = 0; i < s->n_layers; i++)
        for (k = 0; k < SS__S_N_STRUCT; k++)
            dmg[i][k] = noisy(s, &s->sens[i][k], noise);
    dbf = noisy(s, &s->sens_bf16, noise);
    /* drawn after the others: a search without per-layer bf16 draws the
     * same numbers as before it existed */
    for (i = 0; i < s->n_layers; i++)
        dbl[i] = s->bf16_layers ? noisy(s, &s->sens_bf16l[i], noise) : 0.0;
    for (i = 0; i < s->n_layers; i++) {
        total += out->st[i] ? dmg[i][out->st[i]] : 0.0;
        total += out->int8[i] ? dmg[i][0] : 0.0;
        total += !out->int8[i] && out->bf16l[i] && !out->bf16 ? dbl[i] : 0.0;
    }
    total += out->bf16 ? dbf : 0.0;
    for (;;) {
        double best = 0.0, bd = 0.0;
        int bl = -1, bk = -1;

        for (i = 0; i < s->n_layers; i++) {
            double cur_g = out->st[i] ? s->sens[i][out->st[i]].gain : 0.0;
            double cur_d = out->st[i] ? dmg[i][out->st[i]] : 0.0;

            for (k = 0; k < SS__S_N_STRUCT; k++) {
                const ss__sens_t *e = &s->sens[i][k];
                double dg, dd;

                if (!e->usable || (k == 0 && (out->int8[i] || out->bf16l[i]))
                    || (k > 0 && k == out->st[i]))
                    continue;
                dg = k == 0 ? e->gain : e->gain - cur_g;
                dd = k == 0 ? dmg[i][0] : dmg[i][k] - cur_d;
                if (dg <= 0.0 || total + dd > cap)
                    continue;
                if (dg / (dd > 1e-6 ? dd : 1e-6) > best) {
                    best = dg / (dd > 1e-6 ? dd : 1e-6);
                    bl = i;
                    bk = k;
                    bd = dd;
                }
            }
            /* per-layer bf16: one more option of the layer, bk =
             * SS__S_N_STRUCT (not with int8, and implied by the whole
             * graph's bf16) */
            if (s->bf16_layers && s->sens_bf16l[i].usable && !out->bf16
                && !out->bf16l[i] && !out->int8[i]
                && s->sens_bf16l[i].gain > 0.0 && total + dbl[i] <= cap
                && s->sens_bf16l[i].gain / (dbl[i] > 1e-6 ? dbl[i] : 1e-6)
                   > best) {
                best = s->sens_bf16l[i].gain
                       / (dbl[i] > 1e-6 ? dbl[i] : 1e-6);
                bl = i;
                bk = SS__S_N_STRUCT;
                bd = dbl[i];
            }
        }
        if (s->sens_bf16.usable && !out->bf16 && s->sens_bf16.gain > 0.0
            && total + dbf <= cap
            && s->sens_bf16.gain / (dbf > 1e-6 ? dbf : 1e-6) > best) {
            out->bf16 = 1;
            total += dbf;
            for (i = 0; i < s->n_layers; i++)
                if (out->bf16l[i] && !out->int8[i]) {
                    out->bf16l[i] = 0;  /* the whole graph covers it */
                    total -= dbl[i];
                }
            continue;
        }
        if (bl < 0)
            break;
        if (bk == SS__S_N_STRUCT)
            out->bf16l[bl] = 1;
        else if (bk == 0)
            out->int8[bl] = 1;
        else
            out->st[bl] = (uint8_t)bk;
        total += bd;
    }
}

/* ---- records ------------------------------------------------------------- */

json_t *
ss__s_cfg_json(const ss__search_t *s, const ss__scfg_t *cfg)
{
    json_t *o = json_object(), *layers = json_object(), *pipe = json_array();
    json_t *bfl = json_array();
    int i, n = s->n_layers;

    if (o == NULL || layers == NULL || pipe == NULL || bfl == NULL) {
        json_decref(o);
        json_decref(layers);
        json_decref(pipe);
        json_decref(bfl);
        return NULL;
    }
    if (cfg->width)
        json_array_append_new(pipe, json_string("distill"));
    if (cfg->mask)
        json_array_append_new(pipe, json_string("width_search"));
    if (!cfg->width && prunes(cfg, n))
        json_array_append_new(pipe, json_string("prune"));
    if (!cfg->width && any(cfg->st, n, SS__S_RANK0, SS__S_N_STRUCT))
        json_array_append_new(pipe, json_string("lowrank"));
    if (cfg->finetune && !cfg->width)
        json_array_append_new(pipe, json_string("finetune"));
    if (any(cfg->int8, n, 1, 2))
        json_array_append_new(pipe, json_string("ptq"));
    if (cfg->bf16 || any(cfg->bf16l, n, 1, 2))
        json_array_append_new(pipe, json_string("bf16"));
    for (i = 0; i < n; i++) {
        json_t *l;
        int st = cfg->st[i];

        if (cfg->bf16l[i] && !cfg->int8[i] && !cfg->bf16)
            json_array_append_new(bfl, json_string(s->labels[i]));
        if (st == 0 && !cfg->int8[i] && !cfg->bf16l[i]
            && !(cfg->mask && cfg->keep[i]))
            continue;
        l = json_pack("{s:s}", "precision", cfg->int8[i] ? "int8"
                                            : cfg->bf16 || cfg->bf16l[i]
                                            ? "bf16" : "f32");
        if (cfg->mask && cfg->keep[i]) {
            json_object_set_new(l, "channels", json_integer(
                s->masks[cfg->mask - 1].channels[i]));
            json_object_set_new(l, "kept", json_integer(cfg->keep[i]));
        } else if (st >= SS__S_PRUNE0 && st < SS__S_RANK0 && !cfg->width)
            json_object_set_new(l, "prune", json_real(
                ss__s_prune_levels[st - SS__S_PRUNE0]));
        else if (st >= SS__S_RANK0 && !cfg->width)
            json_object_set_new(l, "lowrank", json_real(
                ss__s_rank_levels[st - SS__S_RANK0]));
        json_object_set_new(layers, s->labels[i], l);
    }
    json_object_set_new(o, "pipeline", pipe);
    json_object_set_new(o, "layers", layers);
    json_object_set_new(o, "bf16", json_boolean(cfg->bf16));
    json_object_set_new(o, "bf16_layers", bfl);
    if (cfg->width)
        json_object_set_new(o, "student_width", json_real(cfg->width / 4.0));
    if (cfg->mask)
        json_object_set_new(o, "mask_strength", json_real(
            s->masks[cfg->mask - 1].strength));
    return o;
}
