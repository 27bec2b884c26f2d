/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data plane: KServe V2 health and metadata, and /metrics.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "server/router.h"
#include "server/server.h"

static void
live(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_req_respond_json(r, 200, json_pack("{s:b}", "live", 1));
}

static void
ready(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    if (s->draining) {
        ss_req_respond_error(r, 503, "not ready: shutting down");
        return;
    }
    if (!s->ready) {
        ss_req_respond_error(r, 503, "not ready: starting");
        return;
    }
    ss_req_respond_json(r, 200, json_pack("{s:b}", "ready", 1));
}

static void
server_metadata(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    /* Extensions are added here as they are served. */
    ss_req_respond_json(r, 200,
                        json_pack("{s:s,s:s,s:[]}", "name", PACKAGE_NAME,
                                  "version", PACKAGE_VERSION, "extensions"));
}

static void
metrics(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    char *text = NULL;
    size_t len = 0;

    if (ss_metrics_render(s->metrics, &text, &len) < 0) {
        ss_req_respond_error(r, 500, "cannot render metrics");
        return;
    }
    ss_req_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                   len);
}

static void
unknown_model(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_req_respond_error(r, 404, "unknown model '%s'", m->cap[0]);
}

static const ss_route_t routes[] = {
    { "GET", "/v2/health/live", SS_EP_HEALTH, live },
    { "GET", "/v2/health/ready", SS_EP_HEALTH, ready },
    { "GET", "/v2", SS_EP_METADATA, server_metadata },
    { "GET", "/metrics", SS_EP_METRICS, metrics },
    { "GET", "/v2/models/*", SS_EP_METADATA, unknown_model },
    { "GET", "/v2/models/*/ready", SS_EP_HEALTH, unknown_model },
    { "GET", "/v2/models/*/config", SS_EP_METADATA, unknown_model },
    { "GET", "/v2/models/*/versions/*", SS_EP_METADATA, unknown_model },
    { "GET", "/v2/models/*/versions/*/ready", SS_EP_HEALTH, unknown_model },
    { "POST", "/v2/models/*/infer", SS_EP_INFER, unknown_model },
    { "POST", "/v2/models/*/versions/*/infer", SS_EP_INFER, unknown_model },
};

void
ss_routes_data(ss_req_t *r, void *arg)
{
    ss_router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), r, arg);
}
