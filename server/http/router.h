/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_ROUTER_H
#define SS_SERVER_ROUTER_H

/*
 * A tiny path router.  Patterns are literal segments and '*' wildcards
 * ("/v2/models/ * /infer" without spaces); a wildcard matches one
 * non-empty segment of valid UTF-8 without control characters and is
 * captured.  When a path matches some pattern
 * but not with the request's method, the answer is 405 with an Allow
 * header; when it matches none, 404.  HEAD is served by GET routes.
 *
 * THREADS: [loop].
 */

#include <stddef.h>
#include <stdint.h>

#include "server/http/http.h"

#define SS_ROUTE_MAX_CAPTURES 4
#define SS_ROUTE_CAPTURE_MAX 256

typedef struct ss_route_match {
    int n;
    char cap[SS_ROUTE_MAX_CAPTURES][SS_ROUTE_CAPTURE_MAX];
} ss_route_match_t;

typedef void (*ss_route_fn)(ss_req_t *r, void *arg,
                            const ss_route_match_t *m);

typedef struct ss_route {
    const char *method;
    const char *pattern;
    ss_endpoint_t ep;
    ss_route_fn fn;
} ss_route_t;

/* Returns 1 when pattern matches path (filling m), else 0. */
int ss_route_match(const char *pattern, const char *path,
                   ss_route_match_t *m);

/* A version or job id in a path: a positive decimal without sign or
 * leading zero that fits in int64; -1 otherwise. */
int64_t ss_route_number(const char *text);

/* Calls the route for r, or answers 404/405 itself. */
void ss_router_dispatch(const ss_route_t *routes, size_t n, ss_req_t *r,
                        void *arg);

#endif
