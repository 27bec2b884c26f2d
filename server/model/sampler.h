/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_SAMPLER_H
#define SS_SERVER_SAMPLER_H

/*
 * Traffic sampling: a bounded ring of recent request inputs per model,
 * used as calibration and validation data by compression jobs.
 *
 * Each sampled request is copied whole (all its inputs, all its batch
 * rows).  The ring holds at most `capacity` rows and `max_bytes` bytes;
 * the oldest requests are evicted first.  Nothing is written to disk.
 * Off unless a model's config asks for it.
 *
 * THREADS: [any] (offers come from every HTTP loop); a mutex guards the
 * ring.
 */

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"
#include "server/metrics.h"

typedef struct ss_sampler ss_sampler_t;

/* labels: {model}; metrics may be NULL. */
ss_sampler_t *ss_sampler_new(int capacity_rows, double probability,
                             int64_t max_bytes, ss_metrics_t *metrics,
                             const char *model);
void ss_sampler_free(ss_sampler_t *s);

/* Maybe copies one request's inputs (n tensors, batch dim first, rows
 * given).  Returns 1 if sampled, 0 if not, negative on no memory. */
int ss_sampler_offer(ss_sampler_t *s, int n, const ss_tensor_t *inputs,
                     int64_t rows);

/* Concatenates up to max_rows of the newest samples whose shapes agree
 * with the newest one into n new tensors (data from ss_aligned_alloc, owned
 * by the caller; free each with ss_free).  Returns the row count (0 when
 * empty) or a negative code. */
int64_t ss_sampler_snapshot(ss_sampler_t *s, int64_t max_rows, int n,
                            ss_tensor_t *out, ss_err_t *err);

int64_t ss_sampler_rows(ss_sampler_t *s);
int64_t ss_sampler_bytes(ss_sampler_t *s);

#endif
