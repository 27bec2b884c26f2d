/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control plane, on its own listener (loopback by default).
 *
 * Every request is authenticated first: "Authorization: Bearer <token>",
 * 401 with a WWW-Authenticate challenge otherwise.  Only when the daemon
 * was started with --admin-insecure is there no token to check.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include <string.h>

#include "common/log.h"
#include "server/router.h"
#include "server/server.h"

static void
status(ss_req_t *r, void *arg, const ss_route_match_t *m)
{
    ss_server_t *s = arg;

    ss_req_respond_json(
        r, 200,
        json_pack("{s:s,s:s,s:f,s:b,s:b,s:{s:i,s:i},s:{s:i,s:i},s:s,s:i,"
                  "s:I,s:b}",
                  "name", PACKAGE_NAME, "version", PACKAGE_VERSION,
                  "uptime_seconds", ss_server_uptime(s), "ready",
                  s->ready && !s->draining, "draining", s->draining,
                  "ports", "http", ss_http_port(s->http), "admin",
                  s->admin ? ss_http_port(s->admin) : -1,
                  "in_flight", "http", ss_http_in_flight(s->http), "admin",
                  s->admin ? ss_http_in_flight(s->admin) : 0,
                  "model_repository", s->cfg->model_repository,
                  "models_found", s->models_found, "reloads",
                  (json_int_t)s->reloads, "auth", s->auth.token != NULL));
}

static const ss_route_t routes[] = {
    { "GET", "/admin/status", SS_EP_ADMIN, status },
};

void
ss_routes_admin(ss_req_t *r, void *arg)
{
    ss_server_t *s = arg;

    ss_req_set_endpoint(r, SS_EP_ADMIN);
    if (s->auth.token != NULL &&
        !ss_auth_check(&s->auth, ss_req_header(r, "Authorization"))) {
        ss_log_info("admin: req=%llu %s %s refused: bad or missing token",
                    (unsigned long long)ss_req_id(r), ss_req_method(r),
                    ss_req_path(r));
        ss_req_add_header(r, "WWW-Authenticate",
                          "Bearer realm=\"slimserve-admin\"");
        ss_req_respond_error(r, 401, "missing or invalid bearer token");
        return;
    }
    ss_router_dispatch(routes, sizeof(routes) / sizeof(routes[0]), r, arg);
}
