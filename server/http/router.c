/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include "server/http/router.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/utf8.h"

/* A captured segment names a model, a version or a job: valid UTF-8 (it
 * goes into JSON and logs) without control characters.  A decoded %00
 * never gets here as a NUL (http.c decodes it as the invalid C0 80), so
 * "mlp%00x" cannot pass for "mlp". */
static bool
capture_ok(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return ss_utf8_valid(s, len);
}

int64_t
ss_route_number(const char *text)
{
    int64_t v = 0;
    size_t i;

    /* Digits only, no sign, no leading zero: one spelling per number, so
     * "01" and "+1" are not version 1. */
    if (text[0] < '1' || text[0] > '9')
        return -1;
    for (i = 0; text[i] != '\0'; i++) {
        if (text[i] < '0' || text[i] > '9' ||
            v > (INT64_MAX - (text[i] - '0')) / 10)
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    return v;
}

int
ss_route_match(const char *pattern, const char *path, ss_route_match_t *m)
{
    const char *p = pattern, *s = path;

    m->n = 0;
    while (*p != '\0') {
        if (*p == '*') {
            size_t len = strcspn(s, "/");

            if (len == 0 || len >= SS_ROUTE_CAPTURE_MAX ||
                m->n >= SS_ROUTE_MAX_CAPTURES || !capture_ok(s, len))
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
