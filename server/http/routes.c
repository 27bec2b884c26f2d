/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data plane: KServe V2 health and metadata, and /metrics.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "server/http/infer.h"
#include "server/http/router.h"
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
        ss_req_fail(r, SS_ENOTREADY, "not ready: shutting down");
        return;
    }
    if (!s->ready) {
        ss_req_fail(r, SS_ENOTREADY, "not ready: loading models");
        return;
    }
    if (!ss_registry_ready(s->registry)) {
        ss_req_fail(r, SS_ENOTREADY, "not ready: a model is not loaded "
                    "(see POST /v2/repository/index)");
        return;
    }
    ss_req_respond_json(r, 200, json_pack("{s:b}", "ready", 1));
}

static void
server_metadata(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    /* The extensions served; the repository extension is on the admin
     * listener. */
    ss_req_respond_json(r, 200,
                        json_pack("{s:s,s:s,s:[s,s,s]}", "name",
                                  PACKAGE_NAME, "version", PACKAGE_VERSION,
                                  "extensions", "binary_tensor_data",
                                  "model_configuration", "model_repository"));
}

static void
metrics(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;
    char *text = NULL;
    size_t len = 0;
    int rc;

    if ((rc = ss_metrics_render(s->metrics, &text, &len)) < 0) {
        ss_req_fail(r, rc, "cannot render metrics");
        return;
    }
    ss_req_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                   len);
}

/* The version named in the path (the second capture), or 0 for the
 * active one; -1 when the text is not a version number. */
static int64_t
path_version(const ss_route_match_t *m)
{
    return m->n < 2 ? 0 : ss_route_number(m->cap[1]);
}

static ss_version_t *
acquire(ss_req_t *r, ss_server_t *s, const ss_route_match_t *m)
{
    int64_t v = path_version(m);
    ss_err_t err = { 0 };
    ss_version_t *ver;
    int rc;

    if (v < 0) {
        ss_req_fail(r, SS_ENOTFOUND, "model '%s' has no version '%s'",
                    m->cap[0], m->cap[1]);
        return NULL;
    }
    if ((rc = ss_registry_acquire(s->registry, m->cap[0], v, &ver,
                                  &err)) < 0)
        ss_req_fail(r, rc, "%s", err.msg);
    return ver;
}

static void
model_metadata(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_version_t *v = acquire(r, arg, m);

    if (v == NULL)
        return;
    ss_req_respond_json(r, 200, ss_version_metadata(v));
    ss_version_unref(v);
}

static void
model_config(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_version_t *v = acquire(r, arg, m);

    if (v == NULL)
        return;
    ss_req_respond_json(r, 200, ss_version_config(v));
    ss_version_unref(v);
}

static void
model_ready(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_version_t *v = acquire(r, arg, m);

    if (v == NULL)
        return;
    ss_req_respond_json(r, 200, json_pack("{s:s,s:s,s:b}", "name",
                                          m->cap[0], "version", v->label,
                                          "ready", 1));
    ss_version_unref(v);
}

static void
infer(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    ss_infer_handle(r, s->registry, &s->infer_metrics, m->cap[0],
                    m->n > 1 ? m->cap[1] : NULL, 0);
}

static const ss_route_t routes[] = {
    { "GET", "/v2/health/live", SS_EP_HEALTH, live },
    { "GET", "/v2/health/ready", SS_EP_HEALTH, ready },
    { "GET", "/v2", SS_EP_METADATA, server_metadata },
    { "GET", "/metrics", SS_EP_METRICS, metrics },
    { "GET", "/v2/models/*", SS_EP_METADATA, model_metadata },
    { "GET", "/v2/models/*/ready", SS_EP_HEALTH, model_ready },
    { "GET", "/v2/models/*/config", SS_EP_METADATA, model_config },
    { "GET", "/v2/models/*/versions/*", SS_EP_METADATA, model_metadata },
    { "GET", "/v2/models/*/versions/*/ready", SS_EP_HEALTH, model_ready },
    { "GET", "/v2/models/*/versions/*/config", SS_EP_METADATA,
      model_config },
    { "POST", "/v2/models/*/infer", SS_EP_INFER, infer },
    { "POST", "/v2/models/*/versions/*/infer", SS_EP_INFER, infer },
};

void
ss_routes_data(ss_req_t *r, void *arg)
{
    ss_router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), r, arg);
}
