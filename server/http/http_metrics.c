/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP listeners' accounting (http.c has the design): endpoint names and
 * the status an error code maps to, the budget of body bytes held in
 * memory shared by every loop, and the listener's metrics, whose series
 * each loop caches so the hot path takes no lock.
 *
 * THREADS: the budget is atomic [any]; a loop's cached series belong to
 * its thread; ss_http_metrics_init is [main], before the listeners start.
 */
#include "config.h"

#include "server/http/http.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <microhttpd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "server/http/http_int.h"

static const char *const rej_names[REJ__COUNT] = {
    "connection_limit", "per_ip_limit", "buffered_bytes"
};

static const char *const ep_names[SS_EP__COUNT] = {
    [SS_EP_OTHER] = "other",       [SS_EP_HEALTH] = "health",
    [SS_EP_METADATA] = "metadata", [SS_EP_INFER] = "infer",
    [SS_EP_METRICS] = "metrics",   [SS_EP_ADMIN] = "admin",
    [SS_EP_REPOSITORY] = "repository",
};

const char *
ss_endpoint_name(ss_endpoint_t ep)
{
    return ep >= 0 && ep < SS_EP__COUNT ? ep_names[ep] : "other";
}

int
ss_http_status_of(int rc)
{
    switch (rc) {
    case 0: return 200;
    case SS_EINVAL:
    case SS_EBADMODEL:
    case SS_EUNSUPP: return 400;
    case SS_EAUTH: return 401;
    case SS_ENOTFOUND: return 404;
    case SS_ECONFLICT: return 409;
    case SS_ETOOBIG: return 413;
    case SS_EBUSY:
    case SS_ENOTREADY: return 503;
    case SS_ETIMEDOUT: return 504;
    default: return 500;
    }
}

/* ---- the body budget ----------------------------------------------------- */

ss_http_budget_t *
ss_http_budget_new(int64_t cap)
{
    ss_http_budget_t *b = ss_calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    atomic_init(&b->used, 0);
    b->cap = cap > 0 ? cap : 0;
    return b;
}

int64_t
ss_http_budget_used(const ss_http_budget_t *b)
{
    return b ? atomic_load_explicit(&((ss_http_budget_t *)b)->used,
                                    memory_order_relaxed)
             : 0;
}

void
ss_http_budget_free(ss_http_budget_t *b)
{
    ss_free(b);
}

/* Reserves n bytes; false when that would pass the cap. */
bool
ss__http_budget_take(ss_http_budget_t *b, int64_t n)
{
    int64_t u;

    if (b == NULL)
        return true;
    u = atomic_load_explicit(&b->used, memory_order_relaxed);
    do {
        if (b->cap > 0 && u + n > b->cap)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &b->used, &u, u + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

void
ss__http_budget_put(ss_http_budget_t *b, int64_t n)
{
    if (b != NULL && n > 0)
        atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

/* ---- metrics ------------------------------------------------------------- */

static const char *const req_labels[] = { "listener", "endpoint", "code" };
static const char *const dur_labels[] = { "listener", "endpoint" };
static const char *const one_label[] = { "listener" };
static const char *const loop_labels[] = { "listener", "loop" };
static const char *const rej_labels[] = { "listener", "reason" };
static const char *const slow_labels[] = { "listener", "phase" };

int
ss_http_metrics_init(ss_metrics_t *m, ss_http_metrics_t *out)
{
    static const double buckets[] = { 0.0001, 0.00025, 0.0005, 0.001,
                                      0.0025, 0.005,   0.01,   0.025,
                                      0.05,   0.1,     0.25,   0.5,
                                      1,      2.5,     5,      10 };

    out->registry = m;
    out->requests = ss_metrics_counter(
        m, "slimserve_http_requests_total",
        "HTTP requests answered, by listener, endpoint class and status "
        "code.", 3, req_labels);
    out->duration = ss_metrics_histogram(
        m, "slimserve_http_request_duration_seconds",
        "Time from a request's first byte to its answer.", 2, dur_labels,
        buckets, (int)(sizeof(buckets) / sizeof(buckets[0])));
    out->in_flight = ss_metrics_gauge(
        m, "slimserve_http_requests_in_flight",
        "Requests received and not yet answered.", 1, one_label);
    out->loop_requests = ss_metrics_counter(
        m, "slimserve_http_loop_requests_total",
        "HTTP requests received, by listener and loop thread.", 2,
        loop_labels);
    out->connections = ss_metrics_gauge(
        m, "slimserve_http_connections",
        "Open client connections.", 1, one_label);
    out->rejected = ss_metrics_counter(
        m, "slimserve_http_rejected_total",
        "Connections refused (connection_limit, per_ip_limit) and request "
        "bodies refused with 503 (buffered_bytes).", 2, rej_labels);
    out->slow_clients = ss_metrics_counter(
        m, "slimserve_http_slow_clients_total",
        "Connections cut for not completing a request's headers or body "
        "in time, by phase.", 2, slow_labels);
    if (out->requests == NULL || out->duration == NULL ||
        out->in_flight == NULL || out->loop_requests == NULL ||
        out->connections == NULL || out->rejected == NULL ||
        out->slow_clients == NULL)
        return SS_ENOMEM;
    return 0;
}

void
ss__http_metrics_setup(ss_http_t *h, loop_t *l)
{
    const ss_http_metrics_t *m = h->opts.metrics;
    const char *lv[2] = { h->name, l->label };
    int i;

    if (m == NULL)
        return;
    l->s_in_flight = ss_metric_series(m->in_flight, lv);
    l->s_conns = ss_metric_series(m->connections, lv);
    l->s_loop = ss_metric_series(m->loop_requests, lv);
    for (i = 0; i < REJ__COUNT; i++) {
        lv[1] = rej_names[i];
        l->s_rej[i] = ss_metric_series(m->rejected, lv);
    }
    lv[1] = "header";
    l->s_slow_header = ss_metric_series(m->slow_clients, lv);
    lv[1] = "body";
    l->s_slow_body = ss_metric_series(m->slow_clients, lv);
}

void
ss__http_count(ss_series_t *s)
{
    if (s != NULL)
        ss_series_add(s, 1);
}

void
ss__http_metrics_done(loop_t *l, ss_req_t *r)
{
    ss_http_t *h = l->h;
    char code[16];
    const char *lv[3];
    int st = r->queued ? r->status : 0;
    ss_endpoint_t ep = r->ep;

    if (h->m_requests == NULL)
        return;
    if (st < 0 || st >= MAX_STATUS)
        st = 0;
    if (l->s_req[ep][st] == NULL) {
        snprintf(code, sizeof(code), "%d", st);
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        lv[2] = st ? code : "aborted";
        l->s_req[ep][st] = ss_metric_series(h->m_requests, lv);
    }
    ss__http_count(l->s_req[ep][st]);
    if (h->m_duration != NULL && l->s_dur[ep] == NULL) {
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        l->s_dur[ep] = ss_metric_series(h->m_duration, lv);
    }
    if (l->s_dur[ep] != NULL)
        ss_series_observe(l->s_dur[ep],
                          (double)(ss_clock_mono_ns() - r->start_ns) / 1e9);
}
