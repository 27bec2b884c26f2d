/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_search_run(): the fastest variant inside an accuracy budget.
 *
 * DESIGN: the search is anytime.  Every configuration it builds is
 * measured for real (accuracy or agreement on the validation data,
 * latency at batch 1 and 32, weight bytes) and becomes a trial; the best
 * trial inside the budget that beats the source on the objective is kept
 * as a graph, and the Pareto front of all trials is reported after each,
 * so a cancel or the time limit loses at most the trial under way.  The
 * phases, cheapest and most likely to pay first:
 *   single       each allowed method alone on every layer (int8, bf16,
 *                structured pruning 25/50%, low-rank 1/2, 1/4, and with
 *                finetune pruning 50/75% -> finetune): the first
 *                variants inside the budget come from here;
 *   sensitivity  each per-layer option alone (search_cfg.c): its damage
 *                to the budget's metric and its gain on this machine's
 *                latency (or size), a table per layer; per-layer bf16
 *                (the layer alone in bf16) is one of the options where
 *                oneDNN runs bf16 natively, "bf16" is allowed and the
 *                objective is a latency;
 *   combine      the greedy proxy (gain per damage, summed) at several
 *                fractions of the budget and, seeded, with the damages
 *                perturbed; a proposal is measured only when no measured
 *                trial already dominates its prediction;
 *   refine       one-option moves around the best until a round of them
 *                finds nothing better;
 *   finetune     pipelines prune/lowrank -> finetune -> ptq for the
 *                fastest proposals that missed the budget (training data
 *                and "finetune" allowed);
 *   mask         the gradient-based width search (search_mask.c):
 *                channel gates trained with an L1 penalty weighted by
 *                each layer's measured cost choose per-layer widths;
 *                mask -> prune -> finetune (-> ptq), the penalty's
 *                strength bracketed by the results;
 *   distill      students of width 1/2 and 3/4, alone and in int8.
 * With the same seed and data the trials are the same, in the same
 * order, whenever the objective is size (bytes are exact); under a
 * latency objective the decisions follow measured times, which vary.
 *
 * THREADS: see search.h.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "compress/search_int.h"
#include "engine/dnnl/dnnl.h"

const char *
ss_search_objective_name(ss_search_objective_t o)
{
    switch (o) {
    case SS_SEARCH_LATENCY_B32: return "latency_b32";
    case SS_SEARCH_LATENCY_B1: return "latency_b1";
    case SS_SEARCH_SIZE: return "size";
    }
    return NULL;
}

int
ss_search_objective_parse(const char *s, ss_search_objective_t *out)
{
    int o;

    for (o = SS_SEARCH_LATENCY_B32; o <= SS_SEARCH_SIZE; o++)
        if (s != NULL
            && strcmp(s, ss_search_objective_name((ss_search_objective_t)o))
               == 0) {
            *out = (ss_search_objective_t)o;
            return 0;
        }
    return SS_EINVAL;
}

#define ALLOWED ((1u << SS_METHOD_PTQ) | (1u << SS_METHOD_BF16)             \
                 | (1u << SS_METHOD_PRUNE) | (1u << SS_METHOD_LOWRANK)      \
                 | (1u << SS_METHOD_FINETUNE) | (1u << SS_METHOD_DISTILL))

int
ss_search_check(const ss_search_opts_t *o, const ss_dataset_t *calib,
                const ss_dataset_t *val, const ss_dataset_t *train,
                ss_err_t *err)
{
    const ss_gate_t *b = &o->budget;

    (void)calib;
    if ((b->max_accuracy_drop >= 0) == (b->min_agreement >= 0)
        || b->max_relative_error >= 0)
        return ss_err_set(err, SS_EINVAL, "budget: give one of "
                          "max_accuracy_drop or min_agreement");
    if (b->max_accuracy_drop >= 1.0 || b->min_agreement > 1.0
        || isnan(b->max_accuracy_drop) || isnan(b->min_agreement))
        return ss_err_set(err, SS_EINVAL, "budget: max_accuracy_drop must "
                          "be in [0, 1), min_agreement in [0, 1]");
    if (b->max_accuracy_drop >= 0 && val != NULL && val->labels == NULL)
        return ss_err_set(err, SS_EINVAL, "budget: max_accuracy_drop needs "
                          "labels in the validation data");
    if (o->methods == 0 || (o->methods & ~ALLOWED) != 0)
        return ss_err_set(err, SS_EINVAL, "methods: a set of ptq, bf16, "
                          "prune, lowrank, finetune, distill");
    if ((SS__S_HAS(o, SS_METHOD_FINETUNE) || SS__S_HAS(o, SS_METHOD_DISTILL))
        && (train == NULL || train->rows <= 0))
        return ss_err_set(err, SS_EINVAL, "methods: finetune and distill "
                          "need training data");
    if (!(o->time_limit_s > 0.0) || o->time_limit_s > 7 * 86400.0)
        return ss_err_set(err, SS_EINVAL, "time_limit_s must be in (0, "
                          "604800]");
    if (val == NULL || val->rows <= 0)
        return ss_err_set(err, SS_EINVAL, "validation data is required");
    return 0;
}

/* ---- what the others share (search_int.h) -------------------------------- */

double
ss__s_elapsed(const ss__search_t *s)
{
    return ss_clock_mono_s() - s->t0;
}

int
ss__s_poll(ss__search_t *s)
{
    if (atomic_load(&s->stop))
        return SS_ECANCELED;
    if (s->outer->cancel != NULL && atomic_load(s->outer->cancel))
        s->stopped = "cancelled";
    else if (ss__s_elapsed(s) > s->o->time_limit_s)
        s->stopped = "time_limit";
    else
        return 0;
    atomic_store(&s->stop, 1);
    return SS_ECANCELED;
}

double
ss__s_limit(const ss__search_t *s)
{
    return s->o->budget.max_accuracy_drop >= 0
           ? s->o->budget.max_accuracy_drop
           : 1.0 - s->o->budget.min_agreement;
}

double
ss__s_damage(const ss__search_t *s, const ss_eval_t *ev)
{
    double a = s->src_ev.accuracy;

    if (s->o->budget.max_accuracy_drop >= 0)
        return a > 0.0 ? (a - ev->accuracy) / a : 0.0;
    return 1.0 - ev->agreement;
}

double
ss__s_objective(const ss__search_t *s, const ss_eval_t *ev)
{
    switch (s->o->objective) {
    case SS_SEARCH_LATENCY_B1: return ev->latency_ms_b1;
    case SS_SEARCH_SIZE: return (double)ev->weight_bytes;
    default: return ev->latency_ms_b32;
    }
}

/* ---- progress, wrapped: every report also checks cancel and time --------- */

static void
on_progress(void *arg, double f, const char *step)
{
    ss__search_t *s = arg;
    char buf[64];

    (void)f;
    ss__s_poll(s);
    if (s->outer->progress != NULL) {
        snprintf(buf, sizeof(buf), "%s: %s", s->phase, step);
        s->outer->progress(s->outer->arg, fmin(0.99, ss__s_elapsed(s)
                                              / s->o->time_limit_s), buf);
    }
}

static void
on_train(void *arg, const ss_train_progress_t *p)
{
    ss__search_t *s = arg;

    ss__s_poll(s);
    if (s->outer->train_progress != NULL)
        s->outer->train_progress(s->outer->arg, p);
}

/* ---- trials and the front ------------------------------------------------ */

/* Higher is better: accuracy with labels, else agreement. */
static double
quality(const ss__search_t *s, const ss_eval_t *ev)
{
    return s->val->labels != NULL ? ev->accuracy : ev->agreement;
}

/* Does a dominate b on (quality, latency b1, latency b32, bytes)? */
static bool
dominates(const ss__search_t *s, const ss_eval_t *a, const ss_eval_t *b)
{
    double qa = quality(s, a), qb = quality(s, b);

    return qa >= qb && a->latency_ms_b1 <= b->latency_ms_b1
           && a->latency_ms_b32 <= b->latency_ms_b32
           && a->weight_bytes <= b->weight_bytes
           && (qa > qb || a->latency_ms_b1 < b->latency_ms_b1
               || a->latency_ms_b32 < b->latency_ms_b32
               || a->weight_bytes < b->weight_bytes);
}

static json_t *
front_json(const ss__search_t *s)
{
    json_t *a = json_array();
    int i, k;

    for (i = 0; a != NULL && i < s->n_trials; i++) {
        const ss__strial_t *t = &s->trials[i];

        if (t->failed || t->noop)
            continue;
        for (k = 0; k < s->n_trials; k++)
            if (k != i && !s->trials[k].failed && !s->trials[k].noop
                && dominates(s, &s->trials[k].ev, &t->ev))
                break;
        if (k == s->n_trials)
            json_array_append(a, t->json);
    }
    return a;
}

static json_t *
state_json(const ss__search_t *s)
{
    json_t *o = json_pack("{s:s, s:i, s:f, s:s, s:o, s:o, s:o}",
                          "phase", s->phase, "trials", s->n_trials - 1,
                          "elapsed_s", ss__s_elapsed(s), "objective",
                          ss_search_objective_name(s->o->objective),
                          "source", ss_eval_json(&s->src_ev),
                          "best", s->best >= 0
                                  ? json_incref(s->trials[s->best].json)
                                  : json_null(),
                          "front", front_json(s));

    if (o != NULL && s->first_in_budget_s >= 0)
        json_object_set_new(o, "first_in_budget_s",
                            json_real(s->first_in_budget_s));
    if (o != NULL)
        json_object_set_new(o, "bf16_per_layer",
                            json_boolean(s->bf16_layers));
    return o;
}

void
ss__s_report(ss__search_t *s)
{
    json_t *st;

    if (s->o->on_update != NULL && (st = state_json(s)) != NULL)
        s->o->on_update(s->o->update_arg, st);
}

static int
seen(const ss__search_t *s, const ss__scfg_t *cfg)
{
    int i;

    for (i = 0; i < s->n_trials; i++)
        if (memcmp(&s->trials[i].cfg, cfg, sizeof(*cfg)) == 0)
            return i;
    return -1;
}

static json_t *
trial_json(const ss__search_t *s, int idx, const ss__strial_t *t)
{
    json_t *o = t->failed ? json_object() : ss_eval_json(&t->ev);

    if (o == NULL)
        return NULL;
    json_object_set_new(o, "trial", json_integer(idx));
    json_object_set_new(o, "config", ss__s_cfg_json(s, &t->cfg));
    if (!t->failed) {
        json_object_set_new(o, "damage", json_real(t->damage));
        json_object_set_new(o, "passed", json_boolean(t->passed));
    }
    if (t->noop)
        json_object_set_new(o, "noop", json_true());
    if (t->predicted >= 0)
        json_object_set_new(o, "predicted_damage", json_real(t->predicted));
    return o;
}

/* Builds and measures cfg as the next trial.  Returns its index, or a
 * negative code: SS_ECANCELED when the search must stop (the trial is
 * lost), other codes only for no memory.  A method that refuses a
 * configuration makes a failed trial, not a failed search. */
int
ss__s_trial(ss__search_t *s, const ss__scfg_t *cfg, double predicted,
            ss_err_t *err)
{
    ss__outputs_t out = {0};
    ss_graph_t *g = NULL;
    ss__strial_t *t;
    json_t *notes = json_array();
    ss_err_t terr = { 0 };
    char why[256];
    int idx, rc;

    if ((idx = seen(s, cfg)) >= 0) {
        json_decref(notes);
        return idx;
    }
    if (notes == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a trial");
    if (s->o->max_trials > 0 && s->n_trials - 1 >= s->o->max_trials) {
        s->stopped = "max_trials";
        atomic_store(&s->stop, 1);
    }
    if ((rc = ss__s_poll(s)) < 0)
        goto done;
    if (s->n_trials == s->cap_trials) {
        int cap = s->cap_trials * 2;
        ss__strial_t *nt = ss_realloc(s->trials, sizeof(*nt) * (size_t)cap);

        if (nt == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a trial");
            goto done;
        }
        s->trials = nt;
        s->cap_trials = cap;
    }
    t = &s->trials[s->n_trials];
    memset(t, 0, sizeof(*t));
    t->cfg = *cfg;
    t->predicted = predicted;
    if ((rc = ss__s_build(s, cfg, &g, notes, &terr)) == 0)
        rc = ss__s_measure(s, g, &out, &t->ev, &terr);
    if (rc == SS_ECANCELED || ss__s_poll(s) < 0) {
        rc = SS_ECANCELED;
        goto done;
    }
    if (rc == SS_ENOMEM) {
        ss_err_set(err, rc, "%s", terr.msg);
        goto done;
    }
    t->failed = rc < 0;
    if (!t->failed) {
        int l, q = cfg->bf16 | cfg->finetune | cfg->width | cfg->mask;

        for (l = 0; l < s->n_layers; l++)
            q |= cfg->int8[l] | cfg->bf16l[l];
        /* Nothing the structural methods could do (no prunable pair, a
         * rank that would not pay): the source again, not a point. */
        t->noop = !q && t->ev.weight_bytes == s->src_ev.weight_bytes;
        t->damage = ss__s_damage(s, &t->ev);
        t->passed = !t->noop && ss__gate_ok(&s->o->budget,
                                            s->src_ev.accuracy, &t->ev,
                                            why, sizeof(why));
    }
    idx = s->n_trials++;
    if ((t->json = trial_json(s, idx, t)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a trial");
        goto done;
    }
    if (t->failed)
        json_object_set_new(t->json, "error", json_string(terr.msg));
    if (t->passed && ss__s_objective(s, &t->ev)
                     < ss__s_objective(s, &s->src_ev)
        && (s->best < 0
            || ss__s_objective(s, &t->ev)
               < ss__s_objective(s, &s->trials[s->best].ev))) {
        json_object_set_new(t->json, "methods", notes);
        notes = NULL;
        s->best = idx;
        ss_graph_free(s->best_graph);
        s->best_graph = g;
        g = NULL;
        if (s->first_in_budget_s < 0)
            s->first_in_budget_s = ss__s_elapsed(s);
    }
    ss__s_report(s);
    rc = idx;
done:
    json_decref(notes);
    ss__outputs_clear(&out);
    ss_graph_free(g);
    return rc;
}

/* Would a configuration predicted at (damage, gain) be dominated by a
 * measured trial on (damage, objective)?  Then it is not worth a full
 * measurement. */
static bool
hopeless(const ss__search_t *s, double damage, double obj)
{
    int i;

    if (damage > 2.0 * ss__s_limit(s) + 1e-9)
        return true;
    for (i = 0; i < s->n_trials; i++) {
        const ss__strial_t *t = &s->trials[i];

        if (!t->failed && !t->noop && t->damage <= damage
            && ss__s_objective(s, &t->ev) < obj * 0.98)
            return true;
    }
    return false;
}

/* A proposal: measured unless seen or hopeless.  The prediction is made
 * from a measured anchor trial (0: the source) plus the options cfg adds
 * or removes: the sum of single-layer effects says little about a whole
 * int8 graph (its conversions vanish), much more about one more pruned
 * layer on it.  Returns 1 when it became the new best, 0 otherwise, or
 * SS_ECANCELED/SS_ENOMEM. */
int
ss__s_propose(ss__search_t *s, const ss__scfg_t *cfg, int anchor,
              ss_err_t *err)
{
    const ss__strial_t *a = &s->trials[anchor];
    double d, g, ad, ag, obj;
    int before = s->best, rc;

    if (ss__s_cfg_empty(cfg) || seen(s, cfg) >= 0)
        return 0;
    ss__s_predict(s, cfg, &d, &g);
    ss__s_predict(s, &a->cfg, &ad, &ag);
    d = a->damage + d - ad;
    obj = ss__s_objective(s, &a->ev) - (g - ag);
    if (hopeless(s, d, obj))
        return 0;
    if ((rc = ss__s_trial(s, cfg, d, err)) < 0)
        return rc;
    return s->best != before;
}

/* ---- the run ------------------------------------------------------------- */

static int
setup(ss__search_t *s, ss_err_t *err)
{
    ss__layer_t *ls = NULL;
    ss__strial_t *t;
    int n = 0, i, rc;

    if ((rc = ss__find_layers(s->src, &ls, &n, err)) < 0)
        return rc;
    for (i = 0; i < n && s->n_layers < SS__S_MAX_LAYERS; i++) {
        if ((s->labels[s->n_layers] = ss_strdup(ss__node_label(
                 s->src, ls[i].node))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for the search");
            goto done;
        }
        s->n_layers++;
    }
    s->cap_trials = 64;
    if ((s->trials = ss_calloc((size_t)s->cap_trials,
                               sizeof(*s->trials))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the search");
        goto done;
    }
    /* Trial 0 is the source: on the front, and the reference. */
    s->phase = "source";
    t = &s->trials[0];
    if ((rc = ss__s_measure(s, s->src, &s->src_out, &s->src_ev, err)) < 0)
        goto done;
    s->src_ev.agreement = 1.0;
    t->ev = s->src_ev;
    t->passed = true;
    t->predicted = -1;
    s->n_trials = 1;
    if ((t->json = trial_json(s, 0, t)) == NULL)
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the search");
done:
    ss_free(ls);
    return rc;
}

int
ss_search_run(const ss_graph_t *src, const ss_dataset_t *calib,
              const ss_dataset_t *val, const ss_search_opts_t *o,
              const ss_compress_ctl_t *ctl, ss_search_result_t *res,
              ss_err_t *err)
{
    static const ss_compress_ctl_t none;
    int (*const phases[])(ss__search_t *, ss_err_t *) = {
        ss__s_phase_single, ss__s_phase_sensitivity, ss__s_phase_combine,
        ss__s_phase_refine, ss__s_phase_finetune, ss__s_phase_mask,
        ss__s_phase_combine, ss__s_phase_refine, ss__s_phase_distill
    };
    ss__search_t *s;
    size_t p;
    int i, rc;

    memset(res, 0, sizeof(*res));
    res->first_in_budget_s = -1;
    if (ctl == NULL)
        ctl = &none;
    if ((rc = ss_search_check(o, calib, val, ctl->train, err)) < 0)
        return rc;
    if ((rc = ss__dataset_check(src, val, "validation", err)) < 0
        || (calib != NULL
            && (rc = ss__dataset_check(src, calib, "calibration", err)) < 0)
        || (ctl->train != NULL
            && (rc = ss__dataset_check(src, ctl->train, "training",
                                       err)) < 0))
        return rc;
    if ((s = ss_calloc(1, sizeof(*s))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the search");
    /* Constants tied by Identity nodes untied, as for a job
     * (ss__untie_consts): else their layers are no layers to the
     * methods. */
    if ((rc = ss_graph_clone(src, &s->src_own, err)) < 0
        || (rc = ss__untie_consts(s->src_own, &i, err)) < 0) {
        ss_graph_free(s->src_own);
        ss_free(s);
        return rc;
    }
    s->src = s->src_own;
    s->calib = calib;
    s->val = val;
    s->train = ctl->train;
    s->o = o;
    s->outer = ctl;
    s->ctl = *ctl;
    s->ctl.cancel = &s->stop;
    s->ctl.progress = on_progress;
    s->ctl.train_progress = on_train;
    s->ctl.arg = s;
    s->t0 = ss_clock_mono_s();
    s->rng = o->seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    s->best = -1;
    s->first_in_budget_s = -1;
    /* per-layer bf16 only where oneDNN runs bf16 natively (AVX512_BF16 or
     * AMX, as for bf16 training): emulated, a bf16 layer is slower than
     * f32 and the choice only costs trials; nor for size, which a bf16
     * mark does not change */
    s->bf16_layers = SS__S_HAS(o, SS_METHOD_BF16) && ss_dnn_bf16_native(NULL)
                     && o->objective != SS_SEARCH_SIZE;
    if ((rc = setup(s, err)) < 0) {
        if (rc == SS_ECANCELED)
            ss_err_set(err, rc, "stopped before the source was measured");
        goto done;
    }
    ss__s_report(s);
    rc = 0;
    for (p = 0; p < sizeof(phases) / sizeof(phases[0]) && rc >= 0; p++)
        rc = phases[p](s, err);
    if (rc < 0 && rc != SS_ECANCELED)
        goto done;
    if (rc >= 0 && (rc = ss__s_phase_confirm(s, err)) < 0)
        goto done;
    rc = 0;
    s->phase = "done";
    res->state = state_json(s);
    if (res->state != NULL) {
        json_t *all = json_array();

        /* Every trial in order, compactly: what a reproduction compares
         * (the front alone follows measured times). */
        for (i = 1; all != NULL && i < s->n_trials; i++) {
            const ss__strial_t *t = &s->trials[i];

            json_array_append_new(all, json_pack(
                "{s:i, s:O, s:o, s:I, s:b}", "trial", i, "config",
                json_object_get(t->json, "config"), "accuracy",
                t->failed || t->ev.accuracy < 0 ? json_null()
                                                : json_real(t->ev.accuracy),
                "weight_bytes", (json_int_t)t->ev.weight_bytes,
                "passed", t->passed));
        }
        json_object_set_new(res->state, "all_trials", all);
        json_object_set_new(res->state, "stopped",
                            json_string(s->stopped ? s->stopped
                                                   : "converged"));
    }
    res->source = s->src_ev;
    res->trials = s->n_trials - 1;
    res->first_in_budget_s = s->first_in_budget_s;
    if (s->best >= 0) {
        res->best = s->best_graph;
        s->best_graph = NULL;
        res->best_eval = s->trials[s->best].ev;
        res->best_trial = s->best;
        res->best_json = json_incref(s->trials[s->best].json);
    }
done:
    for (i = 0; i < s->n_trials; i++)
        json_decref(s->trials[i].json);
    for (i = 0; i < s->n_layers; i++)
        ss_free(s->labels[i]);
    for (i = 0; i < s->n_masks; i++)
        ss__s_mask_clear(&s->masks[i]);
    ss_free(s->trials);
    ss_graph_free(s->best_graph);
    ss__outputs_clear(&s->src_out);
    ss_graph_free(s->src_own);
    ss_free(s);
    return rc;
}

void
ss_search_result_clear(ss_search_result_t *res)
{
    if (res == NULL)
        return;
    ss_graph_free(res->best);
    json_decref(res->best_json);
    json_decref(res->state);
    memset(res, 0, sizeof(*res));
}
