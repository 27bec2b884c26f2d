/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMPRESS_SEARCH_H
#define SS_COMPRESS_SEARCH_H

/*
 * Variant search: the fastest (or smallest) variant of a graph inside an
 * accuracy budget, found by measuring combinations of the compression
 * methods -- per layer where that matters -- on this machine.
 *
 * ss_search_run() is anytime: from its first trials on it has a best
 * variant inside the budget (when one exists) and a Pareto front
 * (accuracy or agreement, latency at batch 1 and 32, weight bytes) of
 * every trial measured.  A cancel, the time limit or the trial limit
 * stops it between (or inside) trials, and it returns what it found,
 * not an error.  How it searches: compress/search.c.
 *
 * THREADS: runs on the caller's thread (an admin job thread) like
 * ss_compress_run(); the source graph is only read.  on_update is called
 * on that thread.
 */

#include <stdint.h>

#include <jansson.h>

#include "compress/compress.h"

typedef enum {
    SS_SEARCH_LATENCY_B32 = 0,  /* median latency of a batch of 32 */
    SS_SEARCH_LATENCY_B1,
    SS_SEARCH_SIZE              /* weight bytes */
} ss_search_objective_t;

/* "latency_b32", "latency_b1", "size"; NULL for an unknown value. */
const char *ss_search_objective_name(ss_search_objective_t o);
int ss_search_objective_parse(const char *s, ss_search_objective_t *out);

typedef struct ss_search_opts {
    ss_gate_t budget;           /* max_accuracy_drop (needs labels) or
                                 * min_agreement; the other bounds < 0 */
    ss_search_objective_t objective;
    double time_limit_s;        /* > 0: stop after this long */
    int max_trials;             /* > 0: stop after this many measured */
    unsigned methods;           /* allowed: bit (1u << kind) per
                                 * ss_method_kind_t */
    uint64_t seed;
    /* The search's state after every trial (new reference, the callee
     * takes it): {"phase", "trials", "best", "front"}; may be NULL. */
    void (*on_update)(void *arg, json_t *state);
    void *update_arg;           /* for on_update */
} ss_search_opts_t;

typedef struct ss_search_result {
    ss_graph_t *best;           /* owned; NULL when no trial passed the
                                 * budget and beat the source */
    ss_eval_t best_eval;
    int best_trial;             /* its number; 0 when none */
    json_t *best_json;          /* the best trial's record (owned) */
    json_t *state;              /* the last state (owned), as on_update,
                                 * plus "stopped": "converged",
                                 * "time_limit", "max_trials" or
                                 * "cancelled", and "source" */
    ss_eval_t source;
    int trials;
    double first_in_budget_s;   /* seconds to the first trial inside the
                                 * budget that beat the source; < 0 */
} ss_search_result_t;

/* Checks the options against the data before any work (SS_EINVAL with a
 * sentence): a budget of exactly one kind, labels for an accuracy
 * budget, methods known and with the data they need. */
int ss_search_check(const ss_search_opts_t *o, const ss_dataset_t *calib,
                    const ss_dataset_t *val, const ss_dataset_t *train,
                    ss_err_t *err);

/* Runs the search (ctl as for ss_compress_run: cancel, progress, threads,
 * training data).  Returns 0 with res filled whether it converged or was
 * stopped, or a negative code with err set (bad options, no memory, an
 * engine failure on the source).  Release res with
 * ss_search_result_clear() either way. */
int ss_search_run(const ss_graph_t *src, const ss_dataset_t *calib,
                  const ss_dataset_t *val, const ss_search_opts_t *o,
                  const ss_compress_ctl_t *ctl, ss_search_result_t *res,
                  ss_err_t *err);
void ss_search_result_clear(ss_search_result_t *res);

#endif
