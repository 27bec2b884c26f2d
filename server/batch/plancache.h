/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_PLANCACHE_H
#define SS_SERVER_PLANCACHE_H

/*
 * The batcher's plan cache (internal to server/batch/batch.c): one compiled plan
 * per distinct set of input shapes, compiled on first use.
 *
 * A lookup returns a pinned entry; the plan stays valid until the entry is
 * released, even if the cache evicts it meanwhile.  The cache holds at most
 * `cap` idle plans: when a new shape needs room, the least recently used
 * plan nobody holds is freed (a client that varies a sequence length could
 * otherwise grow it without bound).
 *
 * THREADS: [any].  A mutex guards the table; compiling happens outside it,
 * so a compile of one shape never stalls runs of another.  Threads asking
 * for a shape being compiled wait for that compile.
 */

#include "common/err.h"
#include "engine/engine.h"

typedef struct ss__plancache ss__plancache_t;
typedef struct ss__plan_entry ss__plan_entry_t;

/* Borrows g, which must outlive the cache.  cap >= 1. */
int ss__plancache_new(const ss_graph_t *g, int cap, ss__plancache_t **out,
                      ss_err_t *err);
/* Compiles with ss_plan_new_tapped from now on (engine.h taps; the LoRA
 * hook's plans).  [init] */
void ss__plancache_set_tapped(ss__plancache_t *c);
/* Compiles with a limit on each graph output (ss_plan_opts_t): bytes, or
 * bytes per row of the batch when batched.  0: none.  [init] */
void ss__plancache_set_output_limit(ss__plancache_t *c, size_t bytes,
                                    int batched);
/* Compiles with this plan budget (ss_plan_opts_t.max_plan_bytes; 0: the
 * engine's default).  [init] */
void ss__plancache_set_plan_budget(ss__plancache_t *c, size_t bytes);
/* Frees every plan; no entry may be pinned any more. */
void ss__plancache_free(ss__plancache_t *c);

/* Pins the plan for these shapes (one tensor per graph input; dtype, ndim
 * and dims are read), compiling it if needed.  Returns 0 with *plan and
 * *entry set, or the compile's error. */
int ss__plancache_get(ss__plancache_t *c, const ss_tensor_t *shapes,
                      const ss_plan_t **plan, ss__plan_entry_t **entry,
                      ss_err_t *err);
/* Unpins; accepts NULL. */
void ss__plancache_release(ss__plancache_t *c, ss__plan_entry_t *e);
/* Frees every plan no batch holds (a pinned one stays); they compile
 * again on their next use.  Returns how many were freed. */
int ss__plancache_drop_idle(ss__plancache_t *c);
/* Plans currently cached (for tests). */
int ss__plancache_count(ss__plancache_t *c);

#endif
