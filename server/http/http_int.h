/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_HTTP_HTTP_INT_H
#define SS_SERVER_HTTP_HTTP_INT_H

/*
 * What http.c (listeners, loops, connections, limits, lifecycle) and
 * http_req.c (a request: its body, its answer, MHD's access handler)
 * share.  Private to those two; http.h is the interface.
 *
 * THREADS: as http.c says -- a loop's fields and its MHD daemon belong
 * to its thread; ss_req_finish() [any] feeds the done list; the counts
 * and the budget are atomics.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>
#include <uv.h>

#include "common/queue.h"
#include "server/http/coding.h"
#include "server/http/http.h"
#include "server/http/tls.h"
#include "server/looplag.h"
#include "server/metrics.h"

#define MAX_STATUS 600
#define IP_BUCKETS 1024
#define SWEEP_MS 200            /* deadline granularity */
#define BACKLOG 1024
#define TLS_SPINS 3             /* timer-driven 0 ms runs before backing off */

typedef struct hdr {
    char *name;
    char *value;
} hdr_t;

/* A client address as a hash key: 4 or 16 bytes. */
typedef struct ipkey {
    uint8_t len;
    uint8_t a[16];
} ipkey_t;

typedef enum {
    PH_HEADER,                  /* waiting for a request's headers */
    PH_BODY,                    /* headers in, body arriving */
    PH_BUSY,                    /* handled, answering: no deadline */
    PH_IDLE,                    /* kept alive between requests */
    PH_CUT                      /* shut down, MHD closes it next */
} phase_t;

typedef struct loop loop_t;

/* One connection: MHD's socket context, [loop]. */
typedef struct conn {
    loop_t *l;
    struct MHD_Connection *c;
    ipkey_t ip;
    bool ip_counted;
    phase_t phase;
    uint64_t deadline_ms;       /* uv_now() time; 0: none */
    ss_tls_hold_t tls;          /* the certificate its handshake got */
    struct conn *prev, *next;   /* the loop's list */
} conn_t;

struct ss_req {
    loop_t *l;
    struct MHD_Connection *conn;
    conn_t *k;                  /* NULL when MHD could not tell */
    const char *method;         /* borrowed from MHD for the request's life */
    const char *url;
    uint64_t id;
    int64_t start_ns;
    ss_endpoint_t ep;

    char *body;
    size_t len, cap;
    int64_t reserved;           /* bytes taken from the budget */
    ss__http_inflate_t *inf;    /* Content-Encoding gzip/deflate: decoder */
    ss__http_answer_t accept;   /* the answer's coding (Accept-Encoding) */
    bool too_big;
    bool over_budget;
    bool dispatched;
    bool suspended;             /* [loop] parked, waiting for finish */

    /* The answer; written by the thread that answers, read by the loop
     * after the done queue (or on the loop thread itself). */
    bool resp_ready;
    bool queued;
    int status;
    const char *ctype;          /* static string */
    char *resp_body;
    size_t resp_len;
    hdr_t *hdrs;
    int nhdrs;

    ss_qlink_t done_link;       /* in its loop's done queue */
};

struct ss_http_budget {
    _Atomic int64_t used;
    int64_t cap;
};

enum { CTL_QUIESCE = 1, CTL_STOP = 2 };
enum { REJ_LIMIT, REJ_PER_IP, REJ_BUFFERED, REJ__COUNT };

struct loop {
    ss_http_t *h;
    int index;
    bool threaded;              /* its own thread and uv loop */
    uv_loop_t own;              /* threaded only */
    uv_loop_t *uv;
    pthread_t thread;
    bool started;               /* the thread runs */
    struct MHD_Daemon *d;
    MHD_socket fd;              /* listening socket until quiesced */
    uv_poll_t poll;
    uv_timer_t timer;           /* MHD_get_timeout */
    uv_timer_t sweep;           /* deadlines */
    uv_poll_t wake;             /* wake_fd readable: see wake_loop */
    int wake_fd;                /* eventfd, or -1 */
    _Atomic int wake_pending;   /* set by wakers, cleared by the loop */
    int spins;                  /* timer-driven runs since the last I/O */
    int handles;                /* initialised, not yet closed */
    bool closing;

    _Atomic int ctl;            /* CTL_* from the owner */
    ss_queue_t done;            /* answered by other threads, to resume */
    _Atomic int in_flight;
    _Atomic uint64_t arrivals;  /* requests begun; read by job pacing */
    uint64_t next_id;

    conn_t *conns;              /* every tracked connection */
    int nconns;
    struct {                    /* accepted, not yet started by MHD */
        bool active;
        ipkey_t ip;
        bool ip_counted;
    } pending;

    char label[16];             /* the loop's index as text */
    ss_looplag_t *lag;          /* threaded: this loop's stall probe */
    ss_series_t *s_in_flight, *s_loop, *s_conns;
    ss_series_t *s_rej[REJ__COUNT], *s_slow_header, *s_slow_body;
    ss_series_t *s_req[SS_EP__COUNT][MAX_STATUS];
    ss_series_t *s_dur[SS_EP__COUNT];
};

typedef struct ip_ent {
    struct ip_ent *next;
    ipkey_t ip;
    int n;
} ip_ent_t;

typedef struct ip_bucket {
    pthread_mutex_t lock;
    ip_ent_t *head;             /* guarded by lock */
} ip_bucket_t;

struct ss_http {
    uv_loop_t *owner;
    char *name;
    char *address;
    ss_http_opts_t opts;        /* strings point at name/address above */
    int port;
    int nloops;
    loop_t *loops;
    int handles;                /* over every loop, when not threaded */
    bool closing;
    _Atomic bool quiesced;
    _Atomic int conns;          /* connections admitted, every loop */
    ip_bucket_t *ipt;           /* NULL when there is no per-IP limit */
    char retry_after[16];
    ss_metric_t *m_requests, *m_duration;
};

/* http.c, for http_req.c. */
/* Reserves n body bytes in b: false when they do not fit. */
bool ss__http_budget_take(ss_http_budget_t *b, int64_t n);
void ss__http_budget_put(ss_http_budget_t *b, int64_t n);
/* +1 on a counter series (NULL: none). */
void ss__http_count(ss_series_t *s);
/* Caches loop l's series of the listener's metrics (http_metrics.c). */
void ss__http_metrics_setup(ss_http_t *h, loop_t *l);
/* A request's end in loop l's metrics: count, duration, in flight. */
void ss__http_metrics_done(loop_t *l, ss_req_t *r);
/* Connection k enters phase ph, with a deadline timeout_s from now. */
void ss__http_set_phase(conn_t *k, phase_t ph, int timeout_s);
/* MHD's connection c as ours (NULL when MHD could not tell). */
conn_t *ss__http_conn_of(struct MHD_Connection *c);
/* Wakes loop l to resume its done list [any thread]. */
void ss__http_wake_loop(loop_t *l);

/* http_conn.c, for http.c: connection limits, deadlines and MHD's
 * per-connection callbacks. */
/* Releases a connection slot reserved by on_accept that MHD never
 * reported started. */
void ss__http_release_pending(loop_t *l);
enum MHD_Result ss__http_on_accept(void *cls, const struct sockaddr *addr,
                                   socklen_t len);
void ss__http_on_connection(void *cls, struct MHD_Connection *c,
                            void **socket_context,
                            enum MHD_ConnectionNotificationCode code);
int ss__http_on_cert(gnutls_session_t s, const gnutls_datum_t *req_ca_dn,
                     int nreqs, const gnutls_pk_algorithm_t *algos,
                     int nalgos, gnutls_pcert_st **pcert,
                     unsigned int *npcert, gnutls_privkey_t *key);
void *ss__http_on_uri(void *cls, const char *uri, struct MHD_Connection *c);
size_t ss__http_on_unescape(void *cls, struct MHD_Connection *c, char *s);
/* http.c: runs loop l's MHD daemon and re-arms its timer. */
void ss__http_drive(loop_t *l);

/* http_req.c, MHD's callbacks for http.c. */
enum MHD_Result ss__http_on_request(void *cls, struct MHD_Connection *c,
                                    const char *url, const char *method,
                                    const char *version, const char *upload,
                                    size_t *upload_size, void **con_cls);
void ss__http_on_completed(void *cls, struct MHD_Connection *c,
                           void **con_cls,
                           enum MHD_RequestTerminationCode toe);
void ss__http_on_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
