/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_AUTH_H
#define SS_SERVER_AUTH_H

/*
 * The admin bearer token.
 *
 * The token lives in a file that must not be readable or writable by
 * others (the daemon refuses to start otherwise).  Requests carry
 * "Authorization: Bearer <token>"; the comparison takes the same time
 * whatever the offered value, so timing tells an attacker nothing about
 * how much of it was right.
 *
 * THREADS: loaded [init]; checked [loop].
 */

#include <stddef.h>

#include "common/err.h"

typedef struct ss_auth {
    char *token;
    size_t len;
} ss_auth_t;

/* Reads the first line of path as the token.  Refuses a file that others
 * can read or write, a file longer than 4098 bytes (a 4096-byte token and
 * a line ending), an empty token, and a token with a space or control
 * character (no client could send it). */
int ss_auth_load(ss_auth_t *a, const char *path, ss_err_t *err);
void ss_auth_close(ss_auth_t *a);

/* 1 when header is "Bearer <the token>", or "Basic" with the token as
 * the password (browsers; any user name), else 0. */
int ss_auth_check(const ss_auth_t *a, const char *header);

#endif
