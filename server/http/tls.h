/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_TLS_H
#define SS_SERVER_TLS_H

/*
 * A listener's TLS certificate and key, reloadable while it serves.
 *
 * A store (ss_tls_t) holds the current certificate chain and private key
 * of one listener, read from two PEM files.  Every HTTP loop of the
 * listener gives GnuTLS the store's current pair during a handshake
 * (ss_tls_select, from MHD's certificate callback), and the connection
 * holds a reference to that pair (ss_tls_hold_t) until it closes, since
 * GnuTLS keeps pointing at it for the session's life.  ss_tls_reload
 * reads and checks both files again on a libuv pool thread and, if they
 * are good, publishes the new pair for the handshakes that follow; if not,
 * the old pair stays, the error is logged and counted.  Connections open
 * before a reload keep the pair they were given.
 *
 * THREADS: ss_tls_new/free [init]; ss_tls_reload [loop] of the daemon's
 * main loop (its result is published in the after-work callback there);
 * ss_tls_select and ss_tls_hold_release [loop] of the HTTP loop that owns
 * the connection; the current pair is guarded by the store's mutex (taken
 * once per handshake), the pairs themselves are immutable and refcounted.
 */

#include <stdbool.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <uv.h>

#include "common/err.h"
#include "server/metrics.h"

typedef struct ss_tls ss_tls_t;
typedef struct ss_tls_pair ss_tls_pair_t;

/* What a connection holds: the pair its handshake was given ([loop]). */
typedef struct ss_tls_hold {
    ss_tls_pair_t *pair;        /* a reference, or NULL */
} ss_tls_hold_t;

/* The metric families of every store; created once per registry. */
typedef struct ss_tls_metrics {
    ss_metric_t *reloads;       /* counter: listener, result */
    ss_metric_t *not_after;     /* gauge: listener; the served cert's */
    ss_metric_t *reload_ok;     /* gauge: listener; last reload good */
} ss_tls_metrics_t;

/* [init] Returns 0, or SS_ENOMEM. */
int ss_tls_metrics_init(ss_metrics_t *m, ss_tls_metrics_t *out);

/* The oldest protocol version accepted: "1.2" or "1.3". */
#define SS_TLS_MIN_VERSIONS "1.2 or 1.3"

/* [init] Reads cert_file (a PEM chain, the server's certificate first) and
 * key_file (a PEM private key, unencrypted), checks that the key belongs
 * to the certificate, and returns a new store for the listener called
 * name.  min_version is "1.2" or "1.3".  Fails (SS_EUNSUPP) when
 * libmicrohttpd was built without TLS or without certificate callbacks,
 * and with a message naming the file when a file is missing or bad.
 * metrics may be NULL. */
int ss_tls_new(const char *name, const char *cert_file, const char *key_file,
               const char *min_version, const ss_tls_metrics_t *metrics,
               ss_tls_t **out, ss_err_t *err);

/* [init] Only checks the files, as ss_tls_new (for --check-config). */
int ss_tls_check(const char *cert_file, const char *key_file,
                 ss_err_t *err);

/* The GnuTLS priority string for MHD_OPTION_HTTPS_PRIORITIES; borrowed,
 * valid for the store's life. */
const char *ss_tls_priorities(const ss_tls_t *t);

/* [loop] Re-reads both files on a pool thread of loop and publishes them
 * if good.  A reload asked while one runs runs again after it.  Returns 0
 * or a negative code when the work cannot be queued. */
int ss_tls_reload(ss_tls_t *t, uv_loop_t *loop);

/* [loop] For GnuTLS's certificate callback: stores a reference to the
 * current pair in hold (dropping the one it had) and points pcert,
 * npcert and key at it.  Returns 0, or -1 when t is NULL. */
int ss_tls_select(ss_tls_t *t, ss_tls_hold_t *hold, gnutls_pcert_st **pcert,
                  unsigned int *npcert, gnutls_privkey_t *key);

/* [loop] Drops the connection's reference (its session is over). */
void ss_tls_hold_release(ss_tls_hold_t *hold);

/* [init] After every listener using t has closed and no reload runs any
 * more (uv_run has returned).  Accepts NULL. */
void ss_tls_free(ss_tls_t *t);

#endif
