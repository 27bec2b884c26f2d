/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The variant search's phases (search.c says what each does and in which
 * order): single methods, per-layer sensitivity, greedy combinations,
 * refinement, finetuned pipelines, the width mask, students, and the
 * confirming re-measurements of the best.
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

/* ---- the phases ---------------------------------------------------------- */

int
ss__s_phase_single(ss__search_t *s, ss_err_t *err)
{
    ss__scfg_t c;
    int i, k, rc;

    s->phase = "single";
    if (SS__S_HAS(s->o, SS_METHOD_BF16)) {
        memset(&c, 0, sizeof(c));
        c.bf16 = 1;
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    if (SS__S_HAS(s->o, SS_METHOD_PTQ)) {
        memset(&c, 0, sizeof(c));
        memset(c.int8, 1, (size_t)s->n_layers);
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    for (k = 0; k < 4; k++) {
        static const int opt[4] = { SS__S_PRUNE0, SS__S_PRUNE0 + 1,
                                    SS__S_RANK0 + 2, SS__S_RANK0 + 1 };

        if (!SS__S_HAS(s->o, k < 2 ? SS_METHOD_PRUNE : SS_METHOD_LOWRANK))
            continue;
        memset(&c, 0, sizeof(c));
        for (i = 0; i < s->n_layers; i++)
            c.st[i] = (uint8_t)opt[k];
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    /* Pruning with its recovery, as a user would run it alone: on a
     * large model the per-layer phases can use up the time limit before
     * the fine-tuning ones, and the search must not end worse than the
     * best single method it was allowed. */
    for (k = 1; k < 3 && SS__S_HAS(s->o, SS_METHOD_PRUNE)
                && SS__S_HAS(s->o, SS_METHOD_FINETUNE); k++) {
        memset(&c, 0, sizeof(c));
        for (i = 0; i < s->n_layers; i++)
            c.st[i] = (uint8_t)(SS__S_PRUNE0 + k);
        c.finetune = 1;
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    return 0;
}

static void
sens_from(ss__search_t *s, ss__sens_t *e, int idx)
{
    const ss__strial_t *t = &s->trials[idx];

    e->measured = true;
    e->usable = !t->failed && (t->ev.weight_bytes != s->src_ev.weight_bytes
                               || t->cfg.bf16);
    e->damage = t->failed ? 1.0 : t->damage;
    e->gain = t->failed ? 0.0 : ss__s_objective(s, &s->src_ev)
                                - ss__s_objective(s, &t->ev);
}

int
ss__s_phase_sensitivity(ss__search_t *s, ss_err_t *err)
{
    ss__scfg_t c;
    int l, k, rc;

    s->phase = "sensitivity";
    if (SS__S_HAS(s->o, SS_METHOD_BF16)) {
        memset(&c, 0, sizeof(c));
        c.bf16 = 1;
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
        sens_from(s, &s->sens_bf16, rc);
    }
    for (l = 0; l < s->n_layers; l++) {
        for (k = 0; k < SS__S_N_STRUCT; k++) {
            ss_method_kind_t mk = k == 0 ? SS_METHOD_PTQ
                                  : k < SS__S_RANK0 ? SS_METHOD_PRUNE
                                                    : SS_METHOD_LOWRANK;

            if (!SS__S_HAS(s->o, mk))
                continue;
            memset(&c, 0, sizeof(c));
            if (k == 0)
                c.int8[l] = 1;
            else
                c.st[l] = (uint8_t)k;
            if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
                return rc;
            sens_from(s, &s->sens[l][k], rc);
        }
        /* this layer alone in bf16 (the rest f32): what it costs in
         * accuracy and gains in time, as for int8 */
        if (s->bf16_layers) {
            memset(&c, 0, sizeof(c));
            c.bf16l[l] = 1;
            if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
                return rc;
            sens_from(s, &s->sens_bf16l[l], rc);
            /* same bytes, another precision: usable when it built */
            s->sens_bf16l[l].usable = !s->trials[rc].failed;
        }
    }
    return 0;
}

int
ss__s_phase_combine(ss__search_t *s, ss_err_t *err)
{
    static const double caps[] = { 0.5, 0.75, 1.0, 1.5, 2.0 };
    ss__scfg_t base, c;
    size_t i;
    int rc;

    s->phase = "combine";
    memset(&base, 0, sizeof(base));
    for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        ss__s_greedy(s, &base, caps[i] * ss__s_limit(s), 0.0, &c);
        if ((rc = ss__s_propose(s, &c, 0, err)) < 0)
            return rc;
    }
    for (i = 0; i < 8; i++) {
        ss__s_greedy(s, &base, ss__s_limit(s), 0.7, &c);
        if ((rc = ss__s_propose(s, &c, 0, err)) < 0)
            return rc;
    }
    /* From the best so far: what its remaining damage budget buys. */
    for (i = 0; i < sizeof(caps) / sizeof(caps[0]) && s->best > 0; i++) {
        int b = s->best;
        double d, g;

        if (s->trials[b].cfg.width)
            break;
        ss__s_predict(s, &s->trials[b].cfg, &d, &g);
        ss__s_greedy(s, &s->trials[b].cfg, d + caps[i]
                     * (ss__s_limit(s) - s->trials[b].damage), 0.0, &c);
        if ((rc = ss__s_propose(s, &c, b, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss__s_phase_refine(ss__search_t *s, ss_err_t *err)
{
    ss__scfg_t c;
    int round, l, k, rc, better;

    s->phase = "refine";
    for (round = 0; round < 8 && s->best >= 0; round++) {
        int bi = s->best;
        ss__scfg_t b = s->trials[bi].cfg;

        if (b.width)
            break;
        better = 0;
        for (l = 0; l < s->n_layers; l++) {
            for (k = 0; k < SS__S_N_STRUCT; k++) {
                c = b;
                if (k == 0 && !SS__S_HAS(s->o, SS_METHOD_PTQ))
                    continue;   /* only the allowed methods */
                if (k == 0) {
                    c.int8[l] = !c.int8[l];
                    c.bf16l[l] = 0;
                } else if (c.st[l] == k)
                    c.st[l] = 0;
                else if (s->sens[l][k].usable)
                    c.st[l] = (uint8_t)k;
                else
                    continue;
                if ((rc = ss__s_propose(s, &c, bi, err)) < 0)
                    return rc;
                better |= rc;
            }
            /* the layer's precision between f32, bf16 and int8 */
            if (s->bf16_layers && !b.bf16 && s->sens_bf16l[l].usable) {
                c = b;
                c.bf16l[l] = !c.bf16l[l];
                c.int8[l] = 0;
                if ((rc = ss__s_propose(s, &c, bi, err)) < 0)
                    return rc;
                better |= rc;
            }
        }
        if (!better)
            break;
    }
    return 0;
}

/* Structural configurations that missed the budget but would beat the
 * best, fine-tuned against the source before quantization (prune ->
 * finetune -> ptq): the ones that missed by least first, then the
 * greedy proposal at three times the budget (what recovery could buy). */
int
ss__s_phase_finetune(ss__search_t *s, ss_err_t *err)
{
    ss__scfg_t c, base;
    double best_obj;
    int picked[3], n = 0, i, k, rc;

    if (!SS__S_HAS(s->o, SS_METHOD_FINETUNE))
        return 0;
    s->phase = "finetune";
    best_obj = s->best >= 0 ? ss__s_objective(s, &s->trials[s->best].ev)
                            : ss__s_objective(s, &s->src_ev);
    while (n < 3) {
        int pick = -1;

        for (i = 1; i < s->n_trials; i++) {
            const ss__strial_t *t = &s->trials[i];
            int l, st = 0;

            for (l = 0; l < s->n_layers; l++)
                st |= t->cfg.st[l];
            for (k = 0; k < n && picked[k] != i; k++)
                ;
            if (k < n || t->failed || t->noop || t->passed || !st
                || t->cfg.finetune || t->cfg.width || t->damage > 0.25
                || ss__s_objective(s, &t->ev) >= best_obj)
                continue;
            if (pick < 0 || t->damage < s->trials[pick].damage)
                pick = i;
        }
        if (pick < 0)
            break;
        picked[n++] = pick;
    }
    for (k = 0; k < n; k++) {
        c = s->trials[picked[k]].cfg;
        c.finetune = 1;
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    memset(&base, 0, sizeof(base));
    ss__s_greedy(s, &base, 3.0 * ss__s_limit(s), 0.0, &c);
    for (i = 0; i < s->n_layers && !c.st[i]; i++)
        ;
    if (i < s->n_layers) {
        c.finetune = 1;
        if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
            return rc;
    }
    return 0;
}

/* The gradient-based width search (search_mask.c): a channel mask
 * trained at a penalty strength, measured as mask -> prune -> finetune
 * and with ptq after; the strength moves up after a passing result
 * (more can go) and down after a failing one, bisecting once both are
 * known. */
#define MASK_RUNS 4

int
ss__s_phase_mask(ss__search_t *s, ss_err_t *err)
{
    double strength = 0.5, lo = 0.0, hi = 0.0;
    int run, rc;

    if (!SS__S_HAS(s->o, SS_METHOD_FINETUNE) || !SS__S_HAS(s->o, SS_METHOD_PRUNE)
        || s->train == NULL)
        return 0;
    s->phase = "mask";
    for (run = 0; run < MASK_RUNS && s->n_masks < SS__S_MAX_MASKS; run++) {
        ss__smask_t *mk = &s->masks[s->n_masks];
        ss_err_t merr = { 0 };
        ss__scfg_t c;
        bool narrower = false, passed = false;
        int l, q;

        if ((rc = ss__s_poll(s)) < 0)
            return rc;
        if ((rc = ss__s_mask_train(s, strength, mk, &merr)) < 0) {
            if (rc == SS_ECANCELED || ss__s_poll(s) < 0)
                return SS_ECANCELED;
            if (rc == SS_ENOMEM)
                return ss_err_set(err, rc, "%s", merr.msg);
            /* No pair to gate, or a graph the trainer refuses: the
             * other strategies go on. */
            return 0;
        }
        s->n_masks++;
        memset(&c, 0, sizeof(c));
        c.mask = (uint8_t)s->n_masks;
        c.finetune = 1;
        for (l = 0; l < s->n_layers; l++)
            if (mk->channels[l] > 0 && mk->kept[l] < mk->channels[l]) {
                c.keep[l] = (uint16_t)mk->kept[l];
                narrower = true;
            }
        if (narrower)
            for (q = 0; q < 1 + (int)SS__S_HAS(s->o, SS_METHOD_PTQ); q++) {
                if (q)
                    memset(c.int8, 1, (size_t)s->n_layers);
                if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
                    return rc;
                passed |= s->trials[rc].passed;
                json_object_set(s->trials[rc].json, "width_search",
                                mk->note);
            }
        /* Bracket the strongest passing penalty: x4 / x0.25 until a
         * pass and a miss are known, then their geometric mean. */
        if (!narrower || passed)
            lo = strength;
        else
            hi = strength;
        strength = lo > 0.0 && hi > 0.0 ? sqrt(lo * hi)
                   : lo > 0.0 ? 4.0 * lo : 0.25 * hi;
    }
    return 0;
}

int
ss__s_phase_distill(ss__search_t *s, ss_err_t *err)
{
    ss__scfg_t c;
    int w, q, rc;

    if (!SS__S_HAS(s->o, SS_METHOD_DISTILL))
        return 0;
    s->phase = "distill";
    for (w = 2; w <= 3; w++)
        for (q = 0; q < 1 + (int)SS__S_HAS(s->o, SS_METHOD_PTQ); q++) {
            memset(&c, 0, sizeof(c));
            c.width = (uint8_t)w;
            if (q)
                memset(c.int8, 1, (size_t)s->n_layers);
            if ((rc = ss__s_trial(s, &c, -1, err)) < 0)
                return rc;
        }
    return 0;
}

/* The last phase of a search that was not stopped: the best few inside
 * the budget (and the source) timed again, side by side in interleaved
 * rounds, and the best chosen on the medians.  One measurement each is
 * noisy on a busy machine, and the minimum of many noisy numbers is
 * biased low (the winner's curse): at small latencies the "fastest" of a
 * long search was otherwise often a lucky draw. */
#define CONFIRM_N 6
#define CONFIRM_ROUNDS 5

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
ss__s_phase_confirm(ss__search_t *s, ss_err_t *err)
{
    ss__runner_t r[CONFIRM_N + 1];
    ss_graph_t *g[CONFIRM_N + 1] = { NULL };
    double t1[CONFIRM_N + 1][CONFIRM_ROUNDS];
    double t32[CONFIRM_N + 1][CONFIRM_ROUNDS];
    int idx[CONFIRM_N + 1], n = 1, i, k, round, best = -1, rc = 0;
    json_t *notes[CONFIRM_N + 1] = { NULL };

    s->phase = "confirm";
    memset(r, 0, sizeof(r));
    idx[0] = 0;
    /* The CONFIRM_N passing trials with the lowest objective. */
    while (n < CONFIRM_N + 1) {
        int pick = -1;

        for (i = 1; i < s->n_trials; i++) {
            const ss__strial_t *t = &s->trials[i];

            for (k = 1; k < n && idx[k] != i; k++)
                ;
            if (k < n || !t->passed || t->noop || t->failed)
                continue;
            if (pick < 0 || ss__s_objective(s, &t->ev)
                            < ss__s_objective(s, &s->trials[pick].ev))
                pick = i;
        }
        if (pick < 0)
            break;
        idx[n++] = pick;
    }
    if (n < 2 || s->o->objective == SS_SEARCH_SIZE)
        return 0;
    for (k = 0; k < n; k++) {
        if ((notes[k] = json_array()) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a trial");
            goto done;
        }
        if ((k > 0 && (rc = ss__s_build(s, &s->trials[idx[k]].cfg, &g[k],
                                        notes[k], err)) < 0)
            || (rc = ss__runner_init(&r[k], k > 0 ? g[k] : s->src,
                                     s->ctl.threads, err)) < 0)
            goto done;
    }
    for (round = 0; round < CONFIRM_ROUNDS; round++)
        for (k = 0; k < n; k++)
            if ((rc = ss__s_poll(s)) < 0
                || (rc = ss__latency(&r[k], s->val, 1, s->ctl.latency_runs,
                                     &s->stop, &t1[k][round], err)) < 0
                || (rc = ss__latency(&r[k], s->val, 32,
                                     s->ctl.latency_runs, &s->stop,
                                     &t32[k][round], err)) < 0)
                goto done;
    for (k = 0; k < n; k++) {
        ss__strial_t *t = &s->trials[idx[k]];

        qsort(t1[k], CONFIRM_ROUNDS, sizeof(double), cmp_double);
        qsort(t32[k], CONFIRM_ROUNDS, sizeof(double), cmp_double);
        t->ev.latency_ms_b1 = t1[k][CONFIRM_ROUNDS / 2];
        t->ev.latency_ms_b32 = t32[k][CONFIRM_ROUNDS / 2];
        json_object_set_new(t->json, "latency_ms", json_pack(
            "{s:f, s:f}", "batch1", t->ev.latency_ms_b1, "batch32",
            t->ev.latency_ms_b32));
        json_object_set_new(t->json, "confirmed", json_true());
        if (k == 0)
            s->src_ev = t->ev;
    }
    for (k = 1; k < n; k++)
        if (ss__s_objective(s, &s->trials[idx[k]].ev)
            < ss__s_objective(s, &s->src_ev)
            && (best < 0 || ss__s_objective(s, &s->trials[idx[k]].ev)
                            < ss__s_objective(s, &s->trials[idx[best]].ev)))
            best = k;
    if (best < 0) {
        /* Timed again, nothing beats the source. */
        s->best = -1;
        ss_graph_free(s->best_graph);
        s->best_graph = NULL;
    } else if (idx[best] != s->best) {
        if (s->best >= 0)
            json_object_del(s->trials[s->best].json, "methods");
        s->best = idx[best];
        json_object_set_new(s->trials[s->best].json, "methods",
                            notes[best]);
        notes[best] = NULL;
        ss_graph_free(s->best_graph);
        s->best_graph = g[best];
        g[best] = NULL;
    }
    ss__s_report(s);
done:
    if (rc == SS_ECANCELED)
        rc = 0;                 /* stopped: the best stands as it was */
    for (k = 0; k < n; k++) {
        json_decref(notes[k]);
        ss__runner_close(&r[k]);
        ss_graph_free(g[k]);
    }
    return rc;
}
