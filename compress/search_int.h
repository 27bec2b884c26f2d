/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMPRESS_SEARCH_INT_H
#define SS_COMPRESS_SEARCH_INT_H

/*
 * What search.c (the driver: phases, trials, the front, the state) and
 * search_cfg.c (configurations: building one through the methods,
 * measuring it, predicting it, proposing the next) share.
 *
 * THREADS: everything belongs to the thread of ss_search_run().
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "compress/internal.h"
#include "compress/search.h"

#define SS__S_MAX_LAYERS 64

/* Per-layer options besides int8: structured pruning at three
 * sparsities, low-rank at three ratios (index 1..6; 0 is none). */
#define SS__S_N_STRUCT 7
#define SS__S_PRUNE0 1
#define SS__S_RANK0 4
extern const double ss__s_prune_levels[3];
extern const double ss__s_rank_levels[3];

/* One point of the space.  Compared with memcmp: always memset first
 * (no padding: the members are laid out without holes). */
typedef struct ss__scfg {
    uint8_t st[SS__S_MAX_LAYERS];   /* structural option per layer */
    uint8_t int8[SS__S_MAX_LAYERS];
    uint8_t bf16l[SS__S_MAX_LAYERS]; /* this layer in bf16 (not with int8;
                                     * implied by bf16) */
    uint16_t keep[SS__S_MAX_LAYERS]; /* with mask: channels a layer keeps
                                     * (0: the st option instead) */
    uint8_t bf16;                   /* the rest of the graph in bf16 */
    uint8_t finetune;               /* prune/lowrank -> finetune -> ptq */
    uint8_t width;                  /* distilled student: width in
                                     * quarters (2: 0.5); 0 none */
    uint8_t mask;                   /* learned channel mask: index + 1
                                     * into the search's masks; 0 none */
} ss__scfg_t;

/* A learned channel mask (search_mask.c): the widths it chose and the
 * source with its trained gates folded into the layers that read the
 * gated channels, which a mask configuration is built from. */
#define SS__S_MAX_MASKS 6
typedef struct ss__smask {
    ss_graph_t *graph;              /* owned */
    double strength;                /* the penalty it was trained at */
    int64_t channels[SS__S_MAX_LAYERS]; /* per layer: gated channels (0:
                                     * not gated) */
    int64_t kept[SS__S_MAX_LAYERS]; /* of those, gates left open */
    json_t *note;                   /* the training run's record (owned) */
} ss__smask_t;

/* What one option does to the graph when applied alone: measured. */
typedef struct ss__sens {
    bool measured, usable;          /* usable: it changed the graph */
    double damage;                  /* budget metric, see ss__s_damage */
    double gain;                    /* objective reduction (ms or bytes) */
} ss__sens_t;

typedef struct ss__strial {
    ss__scfg_t cfg;
    ss_eval_t ev;
    double damage;
    double predicted;               /* the proxy's damage; < 0 none */
    bool passed;
    bool failed;                    /* a method refused it: no eval */
    bool noop;                      /* the methods left the graph as it
                                     * was: the source again */
    json_t *json;                   /* its record (owned) */
} ss__strial_t;

typedef struct ss__search {
    const ss_graph_t *src;          /* src_own: the caller's, untied */
    ss_graph_t *src_own;
    const ss_dataset_t *calib, *val, *train;
    const ss_search_opts_t *o;
    ss_compress_ctl_t ctl;          /* the caller's, with cancel and
                                     * progress pointing here */
    const ss_compress_ctl_t *outer;
    atomic_int stop;                /* set by poll(): cancel or time */
    const char *stopped;            /* why, once stopped */
    double t0;                      /* monotonic seconds at start */
    uint64_t rng;

    int n_layers;
    char *labels[SS__S_MAX_LAYERS];
    ss__outputs_t src_out;
    ss_eval_t src_ev;

    ss__sens_t sens[SS__S_MAX_LAYERS][SS__S_N_STRUCT]; /* [l][0]: int8 */
    ss__sens_t sens_bf16;
    bool bf16_layers;               /* per-layer bf16 is a choice: bf16
                                     * allowed and native here */
    ss__sens_t sens_bf16l[SS__S_MAX_LAYERS];

    ss__smask_t masks[SS__S_MAX_MASKS];
    int n_masks;

    int n_trials, cap_trials;
    ss__strial_t *trials;           /* [0] is the source */
    int best;                       /* index into trials; -1 none */
    ss_graph_t *best_graph;         /* owned */
    double first_in_budget_s;
    const char *phase;
} ss__search_t;

/* Seconds since the search started. */
double ss__s_elapsed(const ss__search_t *s);
/* Sets s->stop when cancelled or out of time; returns it. */
int ss__s_poll(ss__search_t *s);
/* The budget's metric of an evaluation: relative accuracy drop against
 * the source (accuracy budget) or disagreement (agreement budget); the
 * budget itself in the same unit. */
double ss__s_damage(const ss__search_t *s, const ss_eval_t *ev);
double ss__s_limit(const ss__search_t *s);
/* The objective's value of an evaluation (lower is better). */
double ss__s_objective(const ss__search_t *s, const ss_eval_t *ev);

/* Builds cfg from the source through the methods (prune, lowrank,
 * finetune or distill, ptq, bf16 mark: the whole graph, or the nodes of
 * the bf16l layers in "slimserve.bf16_nodes"); *out is new.  A cfg with
 * bf16l layers none of whose nodes has a name is SS_EUNSUPP. */
int ss__s_build(ss__search_t *s, const ss__scfg_t *cfg, ss_graph_t **out,
                json_t *note, ss_err_t *err);
/* The methods' context for a build or a training run of the search. */
void ss__s_cx(ss__search_t *s, ss__cx_t *cx);
/* The trainer's settings for the search's short runs of kind. */
void ss__s_train_method(const ss__search_t *s, ss_method_kind_t kind,
                        ss_method_t *m);
/* The width search (search_mask.c): trains a channel gate per hidden
 * unit or channel of every prunable pair of the source, at penalty
 * strength, and fills *out (cleared with ss__s_mask_clear).  SS_EUNSUPP
 * when the source has no pair to gate. */
int ss__s_mask_train(ss__search_t *s, double strength, ss__smask_t *out,
                     ss_err_t *err);
void ss__s_mask_clear(ss__smask_t *m);
/* Measures g on the validation data against the source's outputs. */
int ss__s_measure(ss__search_t *s, const ss_graph_t *g, ss__outputs_t *o,
                  ss_eval_t *ev, ss_err_t *err);
/* The proxy: damage and gain of cfg summed over its options. */
void ss__s_predict(const ss__search_t *s, const ss__scfg_t *cfg,
                   double *damage, double *gain);
/* Greedy: from base, adds the options with the best gain per damage
 * while the predicted damage stays within cap; noise (>= 0) perturbs the
 * damages (seeded, s->rng) for a different but nearby proposal. */
void ss__s_greedy(ss__search_t *s, const ss__scfg_t *base, double cap,
                  double noise, ss__scfg_t *out);
/* The configuration as JSON (new): {"pipeline": [...], "layers": {...},
 * "bf16", "bf16_layers", "student_width"}. */
json_t *ss__s_cfg_json(const ss__search_t *s, const ss__scfg_t *cfg);
bool ss__s_cfg_empty(const ss__scfg_t *cfg);
/* xorshift64*: the search's one random stream. */
uint64_t ss__s_rand(ss__search_t *s);
double ss__s_gauss(ss__search_t *s);


/* Whether the options o allow method kind k. */
#define SS__S_HAS(o, k) (((o)->methods >> (k)) & 1u)

/* Trials (search.c).  ss__s_trial builds and measures cfg as the next
 * trial: its index, or SS_ECANCELED (stop; the trial is lost) or
 * SS_ENOMEM.  ss__s_propose measures cfg unless seen or hopeless against
 * its prediction from trial `anchor`: 1 when it became the best, else 0,
 * or SS_ECANCELED / SS_ENOMEM.  ss__s_report sends the state to the
 * caller's on_update. */
int ss__s_trial(ss__search_t *s, const ss__scfg_t *cfg, double predicted,
                ss_err_t *err);
int ss__s_propose(ss__search_t *s, const ss__scfg_t *cfg, int anchor,
                  ss_err_t *err);
void ss__s_report(ss__search_t *s);

/* The phases (search_phase.c), in search.c's order; each returns 0 or
 * SS_ECANCELED / SS_ENOMEM. */
int ss__s_phase_single(ss__search_t *s, ss_err_t *err);
int ss__s_phase_sensitivity(ss__search_t *s, ss_err_t *err);
int ss__s_phase_combine(ss__search_t *s, ss_err_t *err);
int ss__s_phase_refine(ss__search_t *s, ss_err_t *err);
int ss__s_phase_finetune(ss__search_t *s, ss_err_t *err);
int ss__s_phase_mask(ss__search_t *s, ss_err_t *err);
int ss__s_phase_distill(ss__search_t *s, ss_err_t *err);
int ss__s_phase_confirm(ss__search_t *s, ss_err_t *err);

#endif
