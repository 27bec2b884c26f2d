/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_MODELCFG_H
#define SS_SERVER_MODELCFG_H

/*
 * A model's configuration: <repo>/<model>/config.json.
 *
 * Every key is optional; unknown keys and bad values are refused with a
 * message naming the key.  The active version is part of the file so a
 * restart serves what was last activated; it is written back atomically
 * (temporary file, fsync, rename, fsync of the folder), preserving the
 * other keys as the user wrote them.
 *
 * config.json is read only when it is a regular file of at most 1 MiB,
 * and opening it never waits; messages call it "<model>/config.json".
 *
 * THREADS: values are plain data; parse/write are [any] and do file I/O:
 * never on a loop thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"

#define SS_MAX_PREFERRED 16
#define SS_MAX_SPECIFIC 64

typedef enum {
    SS_POLICY_LATEST = 0,       /* the newest n versions */
    SS_POLICY_ALL,
    SS_POLICY_SPECIFIC
} ss_policy_kind_t;

typedef struct ss_model_config {
    int max_batch_size;         /* 0: no batch dimension */
    int64_t max_queue_delay_us;
    int preferred[SS_MAX_PREFERRED];
    int n_preferred;
    int instances;              /* executors at once; 0: all of the pool */
    int threads;                /* OpenMP threads per batch; 0: one */
    ss_policy_kind_t policy;
    int latest_n;
    int64_t specific[SS_MAX_SPECIFIC];
    int n_specific;
    int64_t active_version;     /* 0: the newest loaded */
    int max_queue_size;
    int64_t timeout_us;         /* queue timeout; 0: none */
    int sample_capacity;        /* traffic samples kept; 0: off */
    double sample_probability;
    int64_t sample_max_bytes;
    bool reject_non_finite;     /* NaN/Inf inputs are refused (400) */
    int64_t max_response_bytes; /* an answer's bytes; 0: no limit */
    int64_t max_plan_bytes;     /* a plan's budget; 0: the engine's */
    bool warmup_all;            /* keep the plans of batch 1, the preferred
                                 * sizes and the max compiled at load; else
                                 * batch 1 is compiled as a check and freed */
    int max_adapters;           /* LoRA adapters loaded at once; 0: 256 */
    int64_t max_adapter_bytes;  /* their bytes together; 0: no limit */
    int64_t adapter_resident_bytes; /* their weights kept in memory; 0:
                                 * all (adapter_cache.c) */
} ss_model_config_t;

/* The defaults: batching up to 32, no queue delay (a batch takes what is
 * queued when an executor is free, so batches grow with load), one
 * instance, latest 1. */
void ss_model_config_default(ss_model_config_t *c);
/* [init] The default of reject_non_finite from now on (the daemon's
 * --reject-non-finite); a model's config.json still overrides it. */
void ss_model_config_set_reject_default(bool on);
/* [init] The default of max_response_bytes from now on (the daemon's
 * --max-response-bytes); a model's config.json still overrides it. */
void ss_model_config_set_response_default(int64_t bytes);
/* [init] The default of max_plan_bytes from now on (the daemon's
 * --max-plan-bytes); a model's config.json still overrides it. */
void ss_model_config_set_plan_default(int64_t bytes);

/* Applies the keys of obj over c. */
int ss_model_config_apply(ss_model_config_t *c, json_t *obj, ss_err_t *err);

/* Reads <dir>/config.json over the defaults; a missing file is the
 * defaults. */
int ss_model_config_load(const char *dir, ss_model_config_t *c,
                         ss_err_t *err);

/* Sets "active_version" in <dir>/config.json atomically, keeping every
 * other key; 0 removes it.  Writers of config.json in this process are
 * serialized. */
int ss_model_config_save_active(const char *dir, int64_t version,
                                ss_err_t *err);
/* The same, but only when the file names no active version yet. */
int ss_model_config_pin_active(const char *dir, int64_t version,
                               ss_err_t *err);

/* The Triton-style JSON of c (for GET .../config). New reference. */
json_t *ss_model_config_json(const ss_model_config_t *c);

/* Whether the version policy wants version v, given every version on disk
 * (sorted ascending). */
bool ss_model_config_wants(const ss_model_config_t *c, int64_t v,
                           const int64_t *all, int n);

#endif
