/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_HTTP_H
#define SS_SERVER_HTTP_H

/*
 * HTTP listeners: libmicrohttpd driven by libuv loops.
 *
 * A listener (ss_http_t) is one or more "loops": each a libuv loop
 * driving its own MHD daemon in epoll mode with no thread of its own (the
 * loop watches MHD's epoll fd with a uv_poll and re-arms a uv_timer from
 * MHD_get_timeout() after every run).  With opts.loops == 0 the one loop
 * is the caller's (the admin listener); with N >= 1 the listener starts N
 * threads, each running its own uv loop, and every loop has its own
 * listening socket bound with SO_REUSEPORT to the same address, so the
 * kernel spreads connections over them.  A connection stays on the loop
 * that accepted it.
 *
 * A request (ss_req_t) is gathered whole (body bounded by max_body_bytes:
 * 413 above it; and by the listener's share of buffered bytes: 503 above
 * it), then handed to the handler on the loop that received it.  The
 * handler either answers at once (ss_req_respond*) or suspends the
 * connection (ss_req_suspend) and hands the request to another thread,
 * which answers with ss_req_finish(): that queues the request on its
 * loop's done list and wakes that loop with uv_async_send, and the loop
 * resumes the connection.  (Resuming from the other thread directly would
 * not wake an externally driven MHD.)
 *
 * TLS, optional (opts.tls): every loop's daemon speaks HTTPS and takes
 * its certificate from the store at each handshake, so a certificate
 * reloaded there (tls.h) serves new connections on every loop while open
 * ones keep theirs.
 *
 * Limits, each optional: connections in total and per client address
 * (refused at accept, counted), an absolute deadline for a request's
 * headers and one for its body (slow clients are cut, counted), an idle
 * time between kept-alive requests, an idle I/O timeout (MHD's), and a
 * budget of buffered request bytes shared by every loop of every listener
 * given it.  Every 503 carries Retry-After.
 *
 * THREADS: ss_http_start/quiesce/close/port/in_flight run on the thread
 * that started the listener ([init]/[owner]); handlers and the ss_req_*
 * calls run on the loop thread that received the request ([loop]),
 * except ss_req_finish(), which is [any].  A request belongs to the http
 * layer: handlers borrow it until they answer; after ss_req_finish() the
 * caller must not touch it again.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "common/err.h"
#include "server/metrics.h"

typedef struct ss_http ss_http_t;
typedef struct ss_req ss_req_t;
typedef struct ss_http_budget ss_http_budget_t;
typedef struct ss_tls ss_tls_t;         /* server/http/tls.h */

/* Endpoint classes label the request metrics; only grow at the end. */
typedef enum {
    SS_EP_OTHER = 0,
    SS_EP_HEALTH,
    SS_EP_METADATA,
    SS_EP_INFER,
    SS_EP_METRICS,
    SS_EP_ADMIN,
    SS_EP_REPOSITORY,
    SS_EP__COUNT
} ss_endpoint_t;

const char *ss_endpoint_name(ss_endpoint_t ep);

/* The HTTP status for an error code: the one mapping of the server
 * (SS_EINVAL 400, SS_ENOTFOUND 404, SS_ECONFLICT 409, SS_ETOOBIG 413,
 * SS_EBUSY/SS_ENOTREADY 503, SS_ETIMEDOUT 504, anything else 500). */
int ss_http_status_of(int rc);

/* [loop] Called once per request when its body is complete, on the loop
 * thread that received it. */
typedef void (*ss_http_handler_fn)(ss_req_t *r, void *arg);

/* The metric families every listener reports into; created once per
 * registry with ss_http_metrics_init().  Each loop caches its series, so
 * counting a request takes no lock. */
typedef struct ss_http_metrics {
    ss_metrics_t *registry;     /* loop lag probes of loop threads */
    ss_metric_t *requests;      /* counter: listener, endpoint, code */
    ss_metric_t *duration;      /* histogram: listener, endpoint */
    ss_metric_t *in_flight;     /* gauge: listener */
    ss_metric_t *loop_requests; /* counter: listener, loop */
    ss_metric_t *connections;   /* gauge: listener */
    ss_metric_t *rejected;      /* counter: listener, reason */
    ss_metric_t *slow_clients;  /* counter: listener, phase */
} ss_http_metrics_t;

/* [init] Returns 0, or SS_ENOMEM when a family cannot be created. */
int ss_http_metrics_init(ss_metrics_t *m, ss_http_metrics_t *out);

/* A budget of request body bytes held in memory, shared by listeners and
 * their loops: a body that would take the total beyond cap is refused
 * with 503 (Retry-After).  cap <= 0: no cap, only counted.  Returns NULL
 * when out of memory.  [any] for ss_http_budget_used. */
ss_http_budget_t *ss_http_budget_new(int64_t cap);
int64_t ss_http_budget_used(const ss_http_budget_t *b);
/* After every listener using b is closed.  Accepts NULL. */
void ss_http_budget_free(ss_http_budget_t *b);

typedef struct ss_http_opts {
    const char *name;           /* "http" or "admin": logs, metrics */
    const char *address;        /* IPv4 or IPv6 literal */
    int port;                   /* 0 picks a free port */
    int loops;                  /* 0: the caller's loop; N: N threads */
    int64_t max_body_bytes;
    /* An executor's answer (ss_req_finish) is coded (Accept-Encoding)
     * only up to this many bytes, sent identity above (0: no cap). */
    int64_t max_coded_bytes;
    int max_header_bytes;
    int max_connections;        /* over all loops of this listener */
    int max_connections_per_ip; /* 0: no limit */
    int idle_timeout_s;         /* no I/O for this long closes (0: never) */
    int header_timeout_s;       /* absolute, per request (0: none) */
    int body_timeout_s;         /* absolute, per request (0: none) */
    int keepalive_timeout_s;    /* between requests (0: none) */
    int retry_after_s;          /* Retry-After of every 503 */
    ss_http_budget_t *budget;   /* borrowed; NULL: bodies not counted */
    ss_http_handler_fn handler;
    void *arg;
    const ss_http_metrics_t *metrics; /* borrowed; may be NULL */
    ss_tls_t *tls;              /* borrowed; NULL: plain HTTP */
} ss_http_opts_t;

/* [init] Binds and starts serving: on loop when opts->loops is 0, else on
 * opts->loops new threads (loop is then only the owner's).  Returns 0 and
 * a new listener, or a negative code (the address in use, a bad
 * address...). */
int ss_http_start(uv_loop_t *loop, const ss_http_opts_t *opts,
                  ss_http_t **out, ss_err_t *err);
/* The bound port (useful with port 0). */
int ss_http_port(const ss_http_t *h);
/* The number of loops (1 for a listener on the caller's loop). */
int ss_http_loops(const ss_http_t *h);
/* [owner] Stops accepting connections; requests in progress go on, and
 * new requests on kept-alive connections get 503 with "Connection:
 * close".  Loop threads act on it at their next turn. */
void ss_http_quiesce(ss_http_t *h);
/* [any] Requests received and not yet fully answered, over all loops. */
int ss_http_in_flight(const ss_http_t *h);
/* Requests begun since the start, over every loop.  [any] */
uint64_t ss_http_arrivals(const ss_http_t *h);
/* [owner] Stops every loop and closes the daemons and their handles:
 * loop threads are joined before it returns (requests handed to other
 * threads must have been finished by then); a listener on the caller's
 * loop is freed once libuv is done with its handles.  Accepts NULL. */
void ss_http_close(ss_http_t *h);

/* ---- requests [loop] --------------------------------------------------- */

const char *ss_req_method(const ss_req_t *r);
/* The path, without the query string. */
const char *ss_req_path(const ss_req_t *r);
/* A header value, or NULL. */
const char *ss_req_header(const ss_req_t *r, const char *name);
/* The body (NUL-terminated for convenience); borrowed. */
const char *ss_req_body(const ss_req_t *r, size_t *len);
uint64_t ss_req_id(const ss_req_t *r);
void ss_req_set_endpoint(ss_req_t *r, ss_endpoint_t ep);

/* Adds a header to the response about to be sent (copied). */
int ss_req_add_header(ss_req_t *r, const char *name, const char *value);

/* Answers: body is taken (must come from malloc), may be NULL. */
void ss_req_respond(ss_req_t *r, int status, const char *content_type,
                    char *body, size_t len);
/* Answers with JSON; steals the reference to body. */
void ss_req_respond_json(ss_req_t *r, int status, json_t *body);
/* Answers {"error": "..."}. */
void ss_req_respond_error(ss_req_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers {"error": "..."} with the status of the error code rc
 * (ss_http_status_of): how handlers answer a failure. */
void ss_req_fail(ss_req_t *r, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parks the connection until ss_req_finish(). */
void ss_req_suspend(ss_req_t *r);
/* [any] Answers a suspended request from any thread; takes body. */
void ss_req_finish(ss_req_t *r, int status, const char *content_type,
                   char *body, size_t len);

#endif
