/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_CTL_CLIENT_H
#define SS_CTL_CLIENT_H

/*
 * A small HTTP/1.1 client for slimserve-ctl: one request per connection
 * (Connection: close), plain or TLS (GnuTLS, the system's trust store or
 * a CA file), with a bearer token, a deadline, and JSON bodies.
 *
 * THREADS: one client per thread; nothing shared.
 */

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

typedef struct ss_ctl_client {
    char scheme[8];             /* "http" or "https" */
    char host[256];
    char port[8];
    char *token;                /* owned; NULL: no Authorization */
    char *cafile;               /* owned; NULL: the system's trust */
    double timeout_s;           /* per request */
} ss_ctl_client_t;

typedef struct ss_ctl_resp {
    int status;
    char *body;                 /* owned, NUL-terminated */
    size_t len;
} ss_ctl_resp_t;

/* Parses url ("http://host:port", "https://[::1]:8001"); SS_EINVAL with
 * err when it is not one. */
int ss_ctl_client_init(ss_ctl_client_t *c, const char *url, ss_err_t *err);
void ss_ctl_client_free(ss_ctl_client_t *c);

/* Sends method path with body (may be NULL) and reads the whole answer
 * into resp (freed with ss_ctl_resp_free).  Returns 0 whatever the
 * status, or a negative code when no answer came (connection, TLS,
 * timeout, malformed response) with err saying why. */
int ss_ctl_request(ss_ctl_client_t *c, const char *method, const char *path,
                   const char *body, ss_ctl_resp_t *resp, ss_err_t *err);
void ss_ctl_resp_free(ss_ctl_resp_t *r);

#endif
