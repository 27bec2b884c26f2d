/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_SERVER_H
#define SS_SERVER_SERVER_H

/*
 * The daemon's state, shared by its route handlers.
 *
 * THREADS: owned by the main loop thread; fields are [loop] unless
 * marked.  The data-plane routes run on the HTTP loop threads and read
 * only the fields marked [any].
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include <sys/time.h>

#include "server/http/auth.h"
#include "server/cfg.h"
#include "server/http/http.h"
#include "server/http/infer.h"
#include "server/http/tls.h"
#include "server/jobs/jobs.h"
#include "server/looplag.h"
#include "server/model/registry.h"
#include "server/metrics.h"

typedef struct ss_server {
    uv_loop_t *loop;
    const ss_config_t *cfg;         /* borrowed from main */
    ss_metrics_t *metrics;          /* [any] */
    ss_http_metrics_t http_metrics;
    ss_http_budget_t *budget;       /* [any] body bytes, both listeners */
    ss_http_t *http;                /* its own loop threads */
    ss_http_t *admin;               /* on this loop; NULL when disabled */
    ss_auth_t auth;                 /* token absent: --admin-insecure */
    ss_tls_t *http_tls;             /* NULL: plain HTTP; see tls.h */
    ss_tls_t *admin_tls;
    ss_tls_metrics_t tls_metrics;

    _Atomic bool ready;             /* [any] */
    _Atomic bool draining;          /* [any] */
    double start_wall;              /* seconds since the epoch */
    uint64_t start_ms;              /* uv_now at start */
    uint64_t drain_deadline_ms;

    ss_registry_t *registry;        /* [any] where the registry says */
    ss_jobs_t *jobs;
    ss_batch_metrics_t batch_metrics;
    ss_infer_metrics_t infer_metrics;
    int drain_phase;                /* 0 requests, 1 models, 2 done */
    uint64_t reloads;
    ss_series_t *s_reloads;

    ss_looplag_t *lag;              /* this loop's stall probe */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uv_timer_t poll_timer;          /* repository_poll_s */
} ss_server_t;

/* Listener handlers (routes.c on the HTTP loops, admin.c on the main
 * loop). [loop] */
void ss_routes_data(ss_req_t *r, void *arg);
void ss_routes_admin(ss_req_t *r, void *arg);

/* Seconds since start. [any: reads immutable fields and the clock] */
static inline double
ss_server_uptime(const ss_server_t *s)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6 - s->start_wall;
}




/* [init] Sets up metrics, the token, signals and both listeners on loop,
 * and logs the bound ports.  On failure everything started is stopped
 * again (run the loop once more to let handles close). */
int ss_server_start(ss_server_t *s, const ss_config_t *cfg, uv_loop_t *loop,
                    ss_err_t *err);
/* [loop] Begins a graceful shutdown: readiness goes 503, listeners stop
 * accepting, in-flight requests get shutdown_grace_s to finish, then the
 * HTTP loop threads are joined, every handle closes and uv_run returns. */
void ss_server_shutdown(ss_server_t *s);
/* After uv_run has returned: frees what is left. */
void ss_server_close(ss_server_t *s);
#endif
