/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_INFER_H
#define SS_SERVER_INFER_H

/*
 * POST /v2/models/{m}[/versions/{v}]/infer.
 *
 * THREADS: [loop]; answers come back through ss_req_finish from executor
 * threads.
 */

#include "server/http/http.h"
#include "server/metrics.h"
#include "server/model/registry.h"

typedef struct ss_infer_metrics {
    ss_metric_t *requests;      /* counter: model, version, result */
    ss_metric_t *duration;      /* histogram: model, version, result */
} ss_infer_metrics_t;

int ss_infer_metrics_init(ss_metrics_t *m, ss_infer_metrics_t *out);

/* Handles one inference request: answers at once on a bad request, else
 * suspends it until its batch is done.  version may be NULL (active). */
void ss_infer_handle(ss_req_t *r, ss_registry_t *reg,
                     const ss_infer_metrics_t *im, const char *model,
                     const char *version, int64_t timeout_us);

#endif
