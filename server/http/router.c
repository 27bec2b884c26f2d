/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "server/http/router.h"

#include <stdbool.h>
#include <string.h>

int
ss_route_match(const char *pattern, const char *path, ss_route_match_t *m)
{
    const char *p = pattern, *s = path;

    m->n = 0;
    while (*p != '\0') {
        if (*p == '*') {
            size_t len = strcspn(s, "/");

            if (len == 0 || len >= SS_ROUTE_CAPTURE_MAX ||
                m->n >= SS_ROUTE_MAX_CAPTURES)
                return 0;
            memcpy(m->cap[m->n], s, len);
            m->cap[m->n][len] = '\0';
            m->n++;
            s += len;
            p++;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *s == '\0';
}

static bool
method_ok(const char *route, const char *method)
{
    if (strcmp(route, method) == 0)
        return true;
    return strcmp(route, "GET") == 0 && strcmp(method, "HEAD") == 0;
}

void
ss_router_dispatch(const ss_route_t *routes, size_t n, ss_req_t *r,
                   void *arg)
{
    const char *method = ss_req_method(r), *path = ss_req_path(r);
    ss_endpoint_t ep = SS_EP_OTHER;
    ss_route_match_t m;
    char allow[128] = "";
    bool matched = false;
    size_t i;

    for (i = 0; i < n; i++) {
        if (!ss_route_match(routes[i].pattern, path, &m))
            continue;
        if (method_ok(routes[i].method, method)) {
            ss_req_set_endpoint(r, routes[i].ep);
            routes[i].fn(r, arg, &m);
            return;
        }
        if (!matched)
            ep = routes[i].ep;
        matched = true;
        if (strstr(allow, routes[i].method) == NULL &&
            strlen(allow) + strlen(routes[i].method) + 8 < sizeof(allow)) {
            if (allow[0] != '\0')
                strcat(allow, ", ");
            strcat(allow, routes[i].method);
            if (strcmp(routes[i].method, "GET") == 0)
                strcat(allow, ", HEAD");
        }
    }
    ss_req_set_endpoint(r, ep);
    if (matched) {
        ss_req_add_header(r, "Allow", allow);
        ss_req_respond_error(r, 405, "method %s not allowed on %s (allowed: "
                             "%s)", method, path, allow);
        return;
    }
    ss_req_respond_error(r, 404, "no such endpoint: %s %s", method, path);
}
