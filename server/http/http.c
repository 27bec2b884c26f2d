/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP listeners: libmicrohttpd under libuv loops.
 *
 * DESIGN: a listener is a set of loops.  Each loop drives one MHD daemon
 * in epoll mode without threads of its own: MHD's epoll fd is watched by a
 * uv_poll; every wake-up calls MHD_run() and re-arms a uv_timer with
 * MHD_get_timeout(), which MHD needs for its idle timeout and for
 * connections it wants processed again at once.  The admin listener is
 * one loop on the daemon's main loop; the data plane has N loops, each on
 * its own thread, because one loop thread was measured to be the ceiling
 * (~85% busy at ~20 k req/s with real JSON bodies, executors idle).
 *
 * Each loop owns a listening socket bound with SO_REUSEPORT to the same
 * address, and the kernel hashes new connections over them.  One socket
 * shared by every daemon was measured too: every loop wakes for each
 * connection and whichever runs first takes it.  Ten bursts of 64
 * connections on 2 loops split 63/1, 62/2 and 56/8 as often as 38/26
 * (median minority share 7 of 64); with SO_REUSEPORT every burst split
 * between 26/38 and 32/32 -- and a kept-alive connection stays on the
 * loop it landed on.  Before binding the group, a probe bind without
 * SO_REUSEPORT makes a port held by another process fail as it always
 * did, instead of silently sharing it.
 *
 * The access handler gathers the body into one buffer (refusing more than
 * max_body_bytes with 413, early when Content-Length says so) and calls
 * the listener's handler once.  Answers are queued from the access
 * handler only, as MHD requires: an answer given from the handler is
 * queued on return; an answer given later (ss_req_finish, any thread)
 * parks the request on its loop's mutex-guarded done list and wakes that
 * loop (wake_loop); the wake callback resumes each connection and runs
 * MHD, which calls the access handler again, which queues the answer.
 * The same wake-up carries the owner's quiesce and stop requests to a loop
 * thread (ctl flags).
 *
 * The wake-up is an eventfd under a uv_poll and an atomic flag, not a
 * uv_async_t: libuv 1.44's uv_async_send holds the handle "busy" across
 * its write(2) to the loop's eventfd, and the loop, woken by that write,
 * spins and then sched_yield()s until the sender leaves.  An executor
 * preempted by the very loop it woke (2 cores, or any loaded machine)
 * left the loop yielding: perf trace showed sched_yield calls of 3 to
 * 4.7 ms on the HTTP loops of the loop-lag test, time the loop could not
 * answer anything.  Here the sender sets the flag and, if it was clear,
 * writes the eventfd; the loop reads the eventfd, clears the flag, then
 * takes the done list: nothing waits for the other side.
 *
 * Limits.  Connections are counted per listener (an atomic) and per
 * client address (a hash table of 1024 buckets, each with its own mutex:
 * no global lock) in MHD's accept-policy callback, which refuses a
 * connection over either limit before MHD allocates anything.  A slot so
 * reserved is confirmed when MHD reports the connection started (the same
 * MHD_run on the same thread); a reservation left unconfirmed -- MHD
 * failed to set the connection up -- is released after the run.  Each
 * connection then carries a phase and a deadline: its headers (from
 * accept, or from its request line when kept alive), its body (from the
 * end of its headers), and the idle time between requests.  A sweep timer
 * on each loop cuts connections past their deadline by shutting their
 * socket down, which MHD sees as a closed connection; the cuts are
 * counted as slow clients.  Body bytes held in memory are reserved in a
 * budget shared by every loop (an atomic compare-and-swap per request): a
 * body that does not fit gets 503, and every 503 leaves with Retry-After.
 *
 * Metrics: requests by listener, endpoint class and status code, their
 * duration, requests in flight, requests per loop, open connections,
 * rejections and slow clients.  Each loop caches its series, so the hot
 * path takes no lock.
 *
 * THREADS: a loop's fields and its MHD daemon belong to its thread;
 * ss_req_finish() [any] feeds the done list (an ss_queue_t); the
 * owner writes ctl and reads in_flight (atomics); the connection counts
 * and the budget are atomics, the address table is guarded per bucket.
 */
#include "config.h"

#include "server/http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/queue.h"
#include "common/utf8.h"
#include "server/http/coding.h"
#include "server/http/tls.h"
#include "server/looplag.h"

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
static const char *const rej_names[REJ__COUNT] = {
    "connection_limit", "per_ip_limit", "buffered_bytes"
};

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

static const char *const ep_names[SS_EP__COUNT] = {
    [SS_EP_OTHER] = "other",       [SS_EP_HEALTH] = "health",
    [SS_EP_METADATA] = "metadata", [SS_EP_INFER] = "infer",
    [SS_EP_METRICS] = "metrics",   [SS_EP_ADMIN] = "admin",
    [SS_EP_REPOSITORY] = "repository",
};

const char *
ss_endpoint_name(ss_endpoint_t ep)
{
    return ep >= 0 && ep < SS_EP__COUNT ? ep_names[ep] : "other";
}

int
ss_http_status_of(int rc)
{
    switch (rc) {
    case 0: return 200;
    case SS_EINVAL:
    case SS_EBADMODEL:
    case SS_EUNSUPP: return 400;
    case SS_EAUTH: return 401;
    case SS_ENOTFOUND: return 404;
    case SS_ECONFLICT: return 409;
    case SS_ETOOBIG: return 413;
    case SS_EBUSY:
    case SS_ENOTREADY: return 503;
    case SS_ETIMEDOUT: return 504;
    default: return 500;
    }
}

/* ---- the body budget ----------------------------------------------------- */

ss_http_budget_t *
ss_http_budget_new(int64_t cap)
{
    ss_http_budget_t *b = ss_calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    atomic_init(&b->used, 0);
    b->cap = cap > 0 ? cap : 0;
    return b;
}

int64_t
ss_http_budget_used(const ss_http_budget_t *b)
{
    return b ? atomic_load_explicit(&((ss_http_budget_t *)b)->used,
                                    memory_order_relaxed)
             : 0;
}

void
ss_http_budget_free(ss_http_budget_t *b)
{
    ss_free(b);
}

/* Reserves n bytes; false when that would pass the cap. */
static bool
budget_take(ss_http_budget_t *b, int64_t n)
{
    int64_t u;

    if (b == NULL)
        return true;
    u = atomic_load_explicit(&b->used, memory_order_relaxed);
    do {
        if (b->cap > 0 && u + n > b->cap)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &b->used, &u, u + n, memory_order_relaxed, memory_order_relaxed));
    return true;
}

static void
budget_put(ss_http_budget_t *b, int64_t n)
{
    if (b != NULL && n > 0)
        atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

/* ---- metrics ------------------------------------------------------------- */

static const char *const req_labels[] = { "listener", "endpoint", "code" };
static const char *const dur_labels[] = { "listener", "endpoint" };
static const char *const one_label[] = { "listener" };
static const char *const loop_labels[] = { "listener", "loop" };
static const char *const rej_labels[] = { "listener", "reason" };
static const char *const slow_labels[] = { "listener", "phase" };

int
ss_http_metrics_init(ss_metrics_t *m, ss_http_metrics_t *out)
{
    static const double buckets[] = { 0.0001, 0.00025, 0.0005, 0.001,
                                      0.0025, 0.005,   0.01,   0.025,
                                      0.05,   0.1,     0.25,   0.5,
                                      1,      2.5,     5,      10 };

    out->registry = m;
    out->requests = ss_metrics_counter(
        m, "slimserve_http_requests_total",
        "HTTP requests answered, by listener, endpoint class and status "
        "code.", 3, req_labels);
    out->duration = ss_metrics_histogram(
        m, "slimserve_http_request_duration_seconds",
        "Time from a request's first byte to its answer.", 2, dur_labels,
        buckets, (int)(sizeof(buckets) / sizeof(buckets[0])));
    out->in_flight = ss_metrics_gauge(
        m, "slimserve_http_requests_in_flight",
        "Requests received and not yet answered.", 1, one_label);
    out->loop_requests = ss_metrics_counter(
        m, "slimserve_http_loop_requests_total",
        "HTTP requests received, by listener and loop thread.", 2,
        loop_labels);
    out->connections = ss_metrics_gauge(
        m, "slimserve_http_connections",
        "Open client connections.", 1, one_label);
    out->rejected = ss_metrics_counter(
        m, "slimserve_http_rejected_total",
        "Connections refused (connection_limit, per_ip_limit) and request "
        "bodies refused with 503 (buffered_bytes).", 2, rej_labels);
    out->slow_clients = ss_metrics_counter(
        m, "slimserve_http_slow_clients_total",
        "Connections cut for not completing a request's headers or body "
        "in time, by phase.", 2, slow_labels);
    if (out->requests == NULL || out->duration == NULL ||
        out->in_flight == NULL || out->loop_requests == NULL ||
        out->connections == NULL || out->rejected == NULL ||
        out->slow_clients == NULL)
        return SS_ENOMEM;
    return 0;
}

static void
metrics_setup(ss_http_t *h, loop_t *l)
{
    const ss_http_metrics_t *m = h->opts.metrics;
    const char *lv[2] = { h->name, l->label };
    int i;

    if (m == NULL)
        return;
    l->s_in_flight = ss_metric_series(m->in_flight, lv);
    l->s_conns = ss_metric_series(m->connections, lv);
    l->s_loop = ss_metric_series(m->loop_requests, lv);
    for (i = 0; i < REJ__COUNT; i++) {
        lv[1] = rej_names[i];
        l->s_rej[i] = ss_metric_series(m->rejected, lv);
    }
    lv[1] = "header";
    l->s_slow_header = ss_metric_series(m->slow_clients, lv);
    lv[1] = "body";
    l->s_slow_body = ss_metric_series(m->slow_clients, lv);
}

static void
count(ss_series_t *s)
{
    if (s != NULL)
        ss_series_add(s, 1);
}

static void
metrics_done(loop_t *l, ss_req_t *r)
{
    ss_http_t *h = l->h;
    char code[16];
    const char *lv[3];
    int st = r->queued ? r->status : 0;
    ss_endpoint_t ep = r->ep;

    if (h->m_requests == NULL)
        return;
    if (st < 0 || st >= MAX_STATUS)
        st = 0;
    if (l->s_req[ep][st] == NULL) {
        snprintf(code, sizeof(code), "%d", st);
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        lv[2] = st ? code : "aborted";
        l->s_req[ep][st] = ss_metric_series(h->m_requests, lv);
    }
    count(l->s_req[ep][st]);
    if (h->m_duration != NULL && l->s_dur[ep] == NULL) {
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        l->s_dur[ep] = ss_metric_series(h->m_duration, lv);
    }
    if (l->s_dur[ep] != NULL)
        ss_series_observe(l->s_dur[ep],
                          (double)(ss_clock_mono_ns() - r->start_ns) / 1e9);
}

/* ---- client addresses ---------------------------------------------------- */

static void
ipkey_of(const struct sockaddr *sa, ipkey_t *k)
{
    memset(k, 0, sizeof(*k));
    if (sa->sa_family == AF_INET) {
        k->len = 4;
        memcpy(k->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        k->len = 16;
        memcpy(k->a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

static ip_bucket_t *
bucket_of(ss_http_t *h, const ipkey_t *k)
{
    uint32_t x = 2166136261u;   /* FNV-1a */
    int i;

    for (i = 0; i < k->len; i++)
        x = (x ^ k->a[i]) * 16777619u;
    return &h->ipt[x % IP_BUCKETS];
}

/* Counts one more connection from k.  Returns 0, SS_EBUSY at the limit,
 * or SS_ENOMEM (the connection then goes uncounted). */
static int
ip_take(ss_http_t *h, const ipkey_t *k)
{
    ip_bucket_t *b = bucket_of(h, k);
    ip_ent_t *e;
    int rc = 0;

    pthread_mutex_lock(&b->lock);
    for (e = b->head; e != NULL; e = e->next)
        if (e->ip.len == k->len && memcmp(e->ip.a, k->a, k->len) == 0)
            break;
    if (e == NULL) {
        if ((e = ss_calloc(1, sizeof(*e))) == NULL) {
            rc = SS_ENOMEM;
            goto done;
        }
        e->ip = *k;
        e->next = b->head;
        b->head = e;
    }
    if (e->n >= h->opts.max_connections_per_ip)
        rc = SS_EBUSY;
    else
        e->n++;
done:
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static void
ip_put(ss_http_t *h, const ipkey_t *k)
{
    ip_bucket_t *b = bucket_of(h, k);
    ip_ent_t **p, *e;

    pthread_mutex_lock(&b->lock);
    for (p = &b->head; (e = *p) != NULL; p = &e->next) {
        if (e->ip.len == k->len && memcmp(e->ip.a, k->a, k->len) == 0) {
            if (--e->n <= 0) {
                *p = e->next;
                ss_free(e);
            }
            break;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

static void
release_slot(ss_http_t *h, const ipkey_t *ip, bool ip_counted)
{
    if (ip_counted)
        ip_put(h, ip);
    atomic_fetch_sub_explicit(&h->conns, 1, memory_order_relaxed);
}

/* A connection accepted but never reported started: MHD failed to set
 * it up and closed it. */
static void
release_pending(loop_t *l)
{
    if (l->pending.active) {
        l->pending.active = false;
        release_slot(l->h, &l->pending.ip, l->pending.ip_counted);
    }
}

/* MHD's accept policy: the limits, before MHD allocates anything. */
static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    loop_t *l = cls;
    ss_http_t *h = l->h;
    ipkey_t ip;
    int rc;

    release_pending(l);
    if (atomic_fetch_add_explicit(&h->conns, 1, memory_order_relaxed) >=
        h->opts.max_connections) {
        atomic_fetch_sub_explicit(&h->conns, 1, memory_order_relaxed);
        count(l->s_rej[REJ_LIMIT]);
        return MHD_NO;
    }
    ipkey_of(addr, &ip);
    l->pending.ip = ip;
    l->pending.ip_counted = false;
    if (h->ipt != NULL && ip.len > 0) {
        if ((rc = ip_take(h, &ip)) == SS_EBUSY) {
            atomic_fetch_sub_explicit(&h->conns, 1, memory_order_relaxed);
            count(l->s_rej[REJ_PER_IP]);
            return MHD_NO;
        }
        l->pending.ip_counted = rc == 0;
    }
    l->pending.active = true;
    return MHD_YES;
}

/* ---- connections and deadlines ------------------------------------------- */

static void on_sweep(uv_timer_t *t);

static void
set_phase(conn_t *k, phase_t ph, int timeout_s)
{
    if (k == NULL || k->phase == PH_CUT)
        return;
    k->phase = ph;
    k->deadline_ms = timeout_s > 0
                         ? uv_now(k->l->uv) + (uint64_t)timeout_s * 1000
                         : 0;
}

static bool
has_deadlines(const ss_http_t *h)
{
    return h->opts.header_timeout_s > 0 || h->opts.body_timeout_s > 0 ||
           h->opts.keepalive_timeout_s > 0;
}

static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    loop_t *l = cls;
    conn_t *k;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        if ((k = ss_calloc(1, sizeof(*k))) == NULL) {
            /* Untracked: no deadlines; its slot is given back now. */
            release_pending(l);
            *socket_context = NULL;
            return;
        }
        k->l = l;
        k->c = c;
        if (l->pending.active) {
            k->ip = l->pending.ip;
            k->ip_counted = l->pending.ip_counted;
            l->pending.active = false;
        } else {
            /* Not through on_accept: count it all the same. */
            atomic_fetch_add_explicit(&l->h->conns, 1,
                                      memory_order_relaxed);
        }
        set_phase(k, PH_HEADER, l->h->opts.header_timeout_s);
        k->next = l->conns;
        if (l->conns != NULL)
            l->conns->prev = k;
        l->conns = k;
        if (l->nconns++ == 0 && has_deadlines(l->h) && !l->closing)
            uv_timer_start(&l->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        if (l->s_conns != NULL)
            ss_series_add(l->s_conns, 1);
        *socket_context = k;
        return;
    }
    if ((k = *socket_context) == NULL)
        return;
    *socket_context = NULL;
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        l->conns = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    if (--l->nconns == 0)
        uv_timer_stop(&l->sweep);
    if (l->s_conns != NULL)
        ss_series_add(l->s_conns, -1);
    release_slot(l->h, &k->ip, k->ip_counted);
    ss_tls_hold_release(&k->tls);
    ss_free(k);
}

static conn_t *
conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

/* GnuTLS asks for the certificate during a handshake [loop]: the
 * listener's current one, which the connection holds until it closes (a
 * reload must not free what the session points at).  MHD sets the
 * session's pointer to its connection. */
static int
on_cert(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
        const gnutls_pk_algorithm_t *algos, int nalgos,
        gnutls_pcert_st **pcert, unsigned int *npcert,
        gnutls_privkey_t *key)
{
    struct MHD_Connection *c = gnutls_session_get_ptr(s);
    conn_t *k = c != NULL ? conn_of(c) : NULL;

    /* Untracked (no memory for its context): no certificate either. */
    if (k == NULL)
        return -1;
    return ss_tls_select(k->l->h->opts.tls, &k->tls, pcert, npcert, key);
}

/* MHD read a request line: on a kept-alive connection the headers' clock
 * starts now.  The return value becomes the request's first *con_cls. */
static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    loop_t *l = cls;
    conn_t *k = conn_of(c);

    if (k != NULL && k->phase == PH_IDLE)
        set_phase(k, PH_HEADER, l->h->opts.header_timeout_s);
    return NULL;
}

/* %HH decoding of paths and arguments, as MHD's own but for %00: a NUL
 * would cut the path short ("/v2/models/mlp%00x" served as "mlp"), so it
 * becomes C0 80 (modified UTF-8's NUL), which no route accepts. */
static size_t
on_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    const char *in = s, *h1, *h2;
    char *out = s;

    while (*in != '\0') {
        if (in[0] == '%' && in[1] != '\0' && in[2] != '\0' &&
            (h1 = strchr(hex, in[1])) != NULL &&
            (h2 = strchr(hex, in[2])) != NULL) {
            int b = ((int)(h1 - hex) % 16) * 16 + (int)(h2 - hex) % 16;

            *out++ = b ? (char)b : (char)0xc0;
            if (b == 0)
                *out++ = (char)0x80;
            in += 3;
        } else {
            *out++ = *in++;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

/* Shutting the socket down makes MHD see a closed connection at its next
 * run; it then closes it as usual (and tells on_connection). */
static void
cut(conn_t *k)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(k->c, MHD_CONNECTION_INFO_CONNECTION_FD);

    k->phase = PH_CUT;
    k->deadline_ms = 0;
    if (ci != NULL)
        shutdown(ci->connect_fd, SHUT_RDWR);
}

static void drive(loop_t *l);

static void
on_sweep(uv_timer_t *t)
{
    loop_t *l = t->data;
    uint64_t now = uv_now(l->uv);
    conn_t *k;
    int n = 0;

    for (k = l->conns; k != NULL; k = k->next) {
        if (k->deadline_ms == 0 || k->deadline_ms > now)
            continue;
        if (k->phase == PH_HEADER)
            count(l->s_slow_header);
        else if (k->phase == PH_BODY)
            count(l->s_slow_body);
        cut(k);
        n++;
    }
    if (n > 0) {
        ss_log_debug("%s: loop %d: cut %d connection(s) past a deadline",
                     l->h->name, l->index, n);
        drive(l);
    }
}

/* ---- driving MHD from the loop ------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void
drive(loop_t *l)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (l->closing)
        return;
    MHD_run(l->d);
    release_pending(l);
    if (MHD_get_timeout(l->d, &ms) == MHD_YES) {
        /* libmicrohttpd 0.9.75 keeps a TLS connection whose handshake
         * waits for its client on its ready list (GnuTLS reads the socket
         * itself, so MHD never sees the EAGAIN that would clear the
         * connection's read-ready flag) and asks for 0 ms again and
         * again: the loop would spin for a whole client round trip, and
         * forever for a client that stalls mid-handshake.  Its socket's
         * next bytes wake the uv_poll anyway, so after a few timer-driven
         * runs in a row the timer backs off (1, 2, 4 ... 32 ms).
         * Measured (load average 17): 4 handshakes stalled by their
         * clients took 0.41 s of CPU in 2 s, 0.02 s with the back-off;
         * a whole handshake 2.8-3.9 ms of server CPU, 2.0-2.2 ms. */
        if (ms == 0 && l->h->opts.tls != NULL && l->spins > TLS_SPINS)
            ms = 1u << (l->spins - TLS_SPINS > 5 ? 5 : l->spins - TLS_SPINS);
        uv_timer_start(&l->timer, on_timer, ms, 0);
    } else {
        uv_timer_stop(&l->timer);
    }
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    loop_t *l = p->data;

    l->spins = 0;
    drive(l);
}

static void
on_timer(uv_timer_t *t)
{
    loop_t *l = t->data;

    if (l->spins < 1000)
        l->spins++;
    drive(l);
}

/* Resumes the requests other threads have answered. */
static void
resume_done(loop_t *l)
{
    ss_qlink_t *list;
    ss_req_t *r;

    /* Wake-ups coalesce: drain the whole queue each time. */
    list = ss_queue_take_all(&l->done);
    while (list != NULL) {
        r = SS_QUEUE_ENTRY(list, ss_req_t, done_link);
        list = list->next;
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

static void loop_quiesce(loop_t *l);
static void loop_stop(loop_t *l);

/* [any] Wakes l's thread for its done list and ctl flags: one write(2)
 * when the loop has not been woken since it last looked, none otherwise.
 * The caller publishes first (the done list's push, ctl's fetch_or): the
 * loop clears the flag before it looks, so a waker that finds the flag
 * set knows the loop has yet to look and will see what it published. */
static void
wake_loop(loop_t *l)
{
    uint64_t one = 1;

    if (atomic_exchange(&l->wake_pending, 1) != 0)
        return;
    while (write(l->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void
on_wake(uv_poll_t *p, int status, int events)
{
    loop_t *l = p->data;
    uint64_t n;
    int ctl;

    (void)status;
    (void)events;
    /* Drain (non-blocking), then clear the flag, then look. */
    while (read(l->wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    atomic_store(&l->wake_pending, 0);
    ctl = atomic_exchange(&l->ctl, 0);
    if (l->closing)
        return;
    if (ctl & CTL_QUIESCE)
        loop_quiesce(l);
    if (ctl & CTL_STOP) {
        loop_stop(l);
        return;
    }
    resume_done(l);
    drive(l);
}

/* ---- requests ------------------------------------------------------------ */

static void
req_free(ss_req_t *r)
{
    int i;

    if (r == NULL)
        return;
    budget_put(r->l->h->opts.budget, r->reserved);
    ss__http_inflate_free(r->inf);
    free(r->body);
    free(r->resp_body);
    for (i = 0; i < r->nhdrs; i++) {
        ss_free(r->hdrs[i].name);
        ss_free(r->hdrs[i].value);
    }
    ss_free(r->hdrs);
    ss_free(r);
}

const char *
ss_req_method(const ss_req_t *r)
{
    return r->method;
}

const char *
ss_req_path(const ss_req_t *r)
{
    return r->url;
}

const char *
ss_req_header(const ss_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *
ss_req_body(const ss_req_t *r, size_t *len)
{
    if (len != NULL)
        *len = r->len;
    return r->body != NULL ? r->body : "";
}

uint64_t
ss_req_id(const ss_req_t *r)
{
    return r->id;
}

void
ss_req_set_endpoint(ss_req_t *r, ss_endpoint_t ep)
{
    if (ep >= 0 && ep < SS_EP__COUNT)
        r->ep = ep;
}

int
ss_req_add_header(ss_req_t *r, const char *name, const char *value)
{
    hdr_t *n;

    n = ss_realloc(r->hdrs, sizeof(*n) * (size_t)(r->nhdrs + 1));
    if (n == NULL)
        return SS_ENOMEM;
    r->hdrs = n;
    n[r->nhdrs].name = ss_strdup(name);
    n[r->nhdrs].value = ss_strdup(value);
    if (n[r->nhdrs].name == NULL || n[r->nhdrs].value == NULL) {
        ss_free(n[r->nhdrs].name);
        ss_free(n[r->nhdrs].value);
        return SS_ENOMEM;
    }
    r->nhdrs++;
    return 0;
}

/* Sets the answer, coded as the client accepts when it is at least
 * SS__HTTP_GZIP_MIN and at most max bytes (coding.c, "Answers"). */
static void
set_response(ss_req_t *r, int status, const char *ctype, char *body,
             size_t len, size_t max)
{
    char *z;
    size_t zlen;

    if (r->resp_ready) {
        /* Answering twice is a bug; keep the first answer. */
        ss_log_error("req=%llu answered twice", (unsigned long long)r->id);
        free(body);
        return;
    }
    if (body != NULL && r->accept != SS__HTTP_ANSWER_IDENTITY
        && len >= SS__HTTP_GZIP_MIN && len <= max
        && ss__http_compress(r->accept, body, len, &z, &zlen) == 0) {
        if (ss_req_add_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING,
                              ss__http_answer_name(r->accept)) == 0) {
            free(body);
            body = z;
            len = zlen;
            ss_req_add_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
        } else {
            free(z);
        }
    }
    r->status = status;
    r->ctype = ctype;
    r->resp_body = body;
    r->resp_len = body != NULL ? len : 0;
    r->resp_ready = true;
}

void
ss_req_respond(ss_req_t *r, int status, const char *ctype, char *body,
               size_t len)
{
    set_response(r, status, ctype, body, len, SS__HTTP_GZIP_LOOP_MAX);
}

void
ss_req_respond_json(ss_req_t *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    if (text == NULL) {
        set_response(r, 500, "application/json",
                     strdup("{\"error\":\"out of memory\"}"), 25, 0);
        return;
    }
    set_response(r, status, "application/json", text, strlen(text),
                 SS__HTTP_GZIP_LOOP_MAX);
}

/* {"error": msg}: messages quote paths and model files, and JSON wants
 * UTF-8, so invalid bytes become U+FFFD. */
static json_t *
error_json(const char *msg)
{
    char buf[SS_ERR_MSG_MAX * 3];

    ss_utf8_sanitize(buf, sizeof(buf), msg);
    return json_pack("{s:s}", "error", buf);
}

void
ss_req_respond_error(ss_req_t *r, int status, const char *fmt, ...)
{
    char msg[SS_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ss_req_respond_json(r, status, error_json(msg));
}

void
ss_req_fail(ss_req_t *r, int rc, const char *fmt, ...)
{
    char msg[SS_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ss_req_respond_json(r, ss_http_status_of(rc), error_json(msg));
}

void
ss_req_suspend(ss_req_t *r)
{
    r->suspended = true;
    MHD_suspend_connection(r->conn);
}

void
ss_req_finish(ss_req_t *r, int status, const char *ctype, char *body,
              size_t len)
{
    loop_t *l = r->l;

    /* the answering thread codes it: an executor, for inference */
    set_response(r, status, ctype, body, len, SIZE_MAX);
    ss_queue_push(&l->done, &r->done_link);
    wake_loop(l);
}

static bool
has_header(const ss_req_t *r, const char *name)
{
    int i;

    for (i = 0; i < r->nhdrs; i++)
        if (strcasecmp(r->hdrs[i].name, name) == 0)
            return true;
    return false;
}

static enum MHD_Result
queue(ss_req_t *r)
{
    struct MHD_Response *resp;
    enum MHD_Result ok;
    int i;

    resp = MHD_create_response_from_buffer(r->resp_len, r->resp_body,
                                           MHD_RESPMEM_MUST_FREE);
    if (resp == NULL)
        return MHD_NO;
    r->resp_body = NULL;        /* MHD owns it now */
    if (r->ctype != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    for (i = 0; i < r->nhdrs; i++)
        MHD_add_response_header(resp, r->hdrs[i].name, r->hdrs[i].value);
    /* Overload and not-ready answers say when to come back, whichever
     * layer gave them. */
    if (r->status == 503 && !has_header(r, MHD_HTTP_HEADER_RETRY_AFTER))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER,
                                r->l->h->retry_after);
    ok = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    if (ok == MHD_YES)
        r->queued = true;
    set_phase(r->k, PH_BUSY, 0);
    return ok;
}

/* Grows the body buffer, reserving the growth in the budget first. */
static int
append_body(ss_req_t *r, const char *data, size_t n)
{
    ss_http_budget_t *b = r->l->h->opts.budget;
    size_t need = r->len + n + 1, cap;
    char *p;

    if (need > r->cap) {
        cap = r->cap ? r->cap : 4096;
        while (cap < need)
            cap *= 2;
        if ((int64_t)cap > r->reserved) {
            if (!budget_take(b, (int64_t)cap - r->reserved))
                return SS_EBUSY;
            r->reserved = (int64_t)cap;
        }
        if ((p = realloc(r->body, cap)) == NULL)
            return SS_ENOMEM;
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

/* Body bytes as the handler will see them (decoded): into the buffer, or
 * a flag saying why not.  Returns 0, or a negative code once refused. */
static int
take_body(void *arg, const char *data, size_t n)
{
    ss_req_t *r = arg;
    int rc;

    if (r->len + n > (size_t)r->l->h->opts.max_body_bytes) {
        r->too_big = true;
        return SS_ETOOBIG;
    }
    if ((rc = append_body(r, data, n)) == SS_EBUSY)
        r->over_budget = true;
    else if (rc < 0)
        ss_req_fail(r, SS_ENOMEM, "out of memory for the body");
    return rc;
}

static enum MHD_Result
add_framing(void *cls, enum MHD_ValueKind kind, const char *key,
            const char *value)
{
    (void)kind;
    ss__http_framing_add(cls, key, value);
    return MHD_YES;
}

/* Content-Length and Transfer-Encoding (coding.c): 0 to go on, -1 when r
 * is answered (400, 501) and its connection is to close. */
static int
body_framing(ss_req_t *r)
{
    ss__http_framing_t f = {0};
    char msg[256];
    int status;

    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, add_framing, &f);
    if ((status = ss__http_framing_check(&f, msg, sizeof(msg))) == 0)
        return 0;
    ss_req_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    ss_req_respond_error(r, status, "%s", msg);
    return -1;
}

/* Content-Encoding: 0 to go on (r->inf set for gzip/deflate), -1 when r
 * is answered (415 for a coding we cannot decode). */
static int
body_coding(ss_req_t *r)
{
    const char *v = MHD_lookup_connection_value(
        r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);

    switch (ss__http_coding(v)) {
    case SS__HTTP_CODING_IDENTITY:
        return 0;
    case SS__HTTP_CODING_ZLIB:
        if ((r->inf = ss__http_inflate_new()) != NULL)
            return 0;
        ss_req_fail(r, SS_ENOMEM, "out of memory for a body decoder");
        return -1;
    default:
        ss_req_add_header(r, "Accept-Encoding", SS__HTTP_CODINGS);
        ss_req_respond_error(r, 415, "Content-Encoding '%s' is not "
                             "supported; use %s or none", v,
                             SS__HTTP_CODINGS);
        return -1;
    }
}

static void
refuse_buffered(ss_req_t *r)
{
    count(r->l->s_rej[REJ_BUFFERED]);
    ss_req_fail(r, SS_EBUSY, "the server holds too many request bytes; "
                "retry later");
}

static ss_req_t *
req_new(loop_t *l, struct MHD_Connection *c, const char *url,
        const char *method)
{
    ss_http_t *h = l->h;
    const char *cl;
    ss_req_t *r;

    if ((r = ss_calloc(1, sizeof(*r))) == NULL)
        return NULL;
    r->l = l;
    r->conn = c;
    r->k = conn_of(c);
    r->url = url;
    r->method = method;
    r->id = l->next_id++ * (uint64_t)h->nloops + (uint64_t)l->index + 1;
    r->start_ns = ss_clock_mono_ns();
    r->ep = SS_EP_OTHER;
    r->accept = ss__http_accept(MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    atomic_fetch_add_explicit(&l->in_flight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->arrivals, 1, memory_order_relaxed);
    if (l->s_in_flight != NULL)
        ss_series_add(l->s_in_flight, 1);
    count(l->s_loop);
    set_phase(r->k, PH_BODY, h->opts.body_timeout_s);

    if (atomic_load_explicit(&h->quiesced, memory_order_relaxed)) {
        ss_req_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        ss_req_fail(r, SS_ENOTREADY, "server is shutting down");
        return r;
    }
    if (body_framing(r) < 0 || body_coding(r) < 0)
        return r;
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        unsigned long long n;
        char *end;
        bool valid;

        /* Digits only: strtoull takes a sign ("-75" wraps to 2^64 - 75)
         * and stops at junk, neither of which may size a buffer. */
        errno = 0;
        n = strtoull(cl, &end, 10);
        valid = cl[0] >= '0' && cl[0] <= '9' && errno == 0 && end != cl &&
                *end == '\0';
        if (valid && n > (unsigned long long)h->opts.max_body_bytes) {
            ss_req_fail(r, SS_ETOOBIG, "request body of %llu bytes exceeds "
                        "the limit of %lld bytes", n,
                        (long long)h->opts.max_body_bytes);
        } else if (valid && n > 0 && r->inf == NULL) {
            /* Reserve and size the buffer once for the whole body (an
             * encoded one grows as it is decoded). */
            if (!budget_take(h->opts.budget, (int64_t)n + 1)) {
                refuse_buffered(r);
                return r;
            }
            r->reserved = (int64_t)n + 1;
            if ((r->body = malloc((size_t)n + 1)) != NULL)
                r->cap = (size_t)n + 1;
        }
    }
    return r;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *upload,
           size_t *upload_size, void **con_cls)
{
    loop_t *l = cls;
    ss_http_t *h = l->h;
    ss_req_t *r = *con_cls;
    char msg[160];
    int rc;

    if (r == NULL) {
        if ((r = req_new(l, c, url, method)) == NULL)
            return MHD_NO;      /* out of memory: drop the connection */
        *con_cls = r;
        /* An early answer (413, 503) is sent without reading the body;
         * MHD then closes the connection. */
        return r->resp_ready ? queue(r) : MHD_YES;
    }
    if (*upload_size > 0) {
        if (!r->resp_ready && !r->too_big && !r->over_budget) {
            if (r->inf == NULL)
                take_body(r, upload, *upload_size);
            else if ((rc = ss__http_inflate_feed(r->inf, upload,
                                                 *upload_size, take_body, r,
                                                 msg, sizeof(msg))) ==
                         SS_EINVAL || (rc == SS_ETOOBIG && !r->too_big))
                ss_req_fail(r, rc, "%s", msg);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES;
    if (!r->resp_ready && r->too_big)
        ss_req_fail(r, SS_ETOOBIG, "request body exceeds the limit of %lld "
                    "bytes%s", (long long)h->opts.max_body_bytes,
                    r->inf != NULL ? " once decoded" : "");
    if (!r->resp_ready && !r->over_budget && r->inf != NULL &&
        !ss__http_inflate_done(r->inf))
        ss_req_fail(r, SS_EINVAL, "the body ends inside its gzip or "
                    "deflate stream");
    if (!r->resp_ready && r->over_budget)
        refuse_buffered(r);
    if (!r->resp_ready && !r->dispatched) {
        r->dispatched = true;
        set_phase(r->k, PH_BUSY, 0);
        h->opts.handler(r, h->opts.arg);
        /* A suspended request may already be answered by another thread;
         * its answer is queued when the loop resumes it. */
        if (r->suspended)
            return MHD_YES;
    }
    if (r->resp_ready)
        return queue(r);
    return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    loop_t *l = cls;
    ss_req_t *r = *con_cls;

    if (r == NULL)
        return;
    *con_cls = NULL;
    metrics_done(l, r);
    /* Kept alive, the connection now waits for its next request. */
    set_phase(r->k, PH_IDLE, l->h->opts.keepalive_timeout_s);
    atomic_fetch_sub_explicit(&l->in_flight, 1, memory_order_relaxed);
    if (l->s_in_flight != NULL)
        ss_series_add(l->s_in_flight, -1);
    req_free(r);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    loop_t *l = cls;
    char msg[512];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    ss_log_debug("%s: loop %d: libmicrohttpd: %s", l->h->name, l->index,
                 msg);
}

/* ---- listening sockets --------------------------------------------------- */

static int
parse_addr(const char *addr, int port, struct sockaddr_storage *ss,
           socklen_t *len)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return SS_EINVAL;
}

/* A bound socket; listening unless probe.  Returns the fd or -errno. */
static int
bind_socket(const struct sockaddr_storage *sa, socklen_t len,
            bool reuseport, bool probe)
{
    int fd, one = 1, e;

    fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0)
        return -errno;
    /* SO_REUSEADDR: a restart binds over connections in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (sa->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)sa, len) < 0 ||
        (!probe && listen(fd, BACKLOG) < 0)) {
        e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int
bound_port(int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);

    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    if (sa.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&sa)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
}

/* One listening socket per loop, all on the same address and port. */
static int
open_sockets(ss_http_t *h, ss_err_t *err)
{
    struct sockaddr_storage sa;
    socklen_t len;
    bool group = h->nloops > 1;
    int i, fd;

    if (parse_addr(h->address, h->opts.port, &sa, &len) < 0)
        return ss_err_set(err, SS_EINVAL,
                          "%s listener: '%s' is not an IPv4 or IPv6 address",
                          h->name, h->address);
    if (group && h->opts.port != 0) {
        /* Alone on the port, or fail as a single socket would: a socket
         * without SO_REUSEPORT cannot join another process's group. */
        if ((fd = bind_socket(&sa, len, false, true)) < 0)
            goto fail;
        close(fd);
    }
    for (i = 0; i < h->nloops; i++) {
        if ((fd = bind_socket(&sa, len, group, false)) < 0)
            goto fail;
        h->loops[i].fd = fd;
        if (i == 0) {
            /* Port 0: the others join the port the kernel chose. */
            h->port = bound_port(fd);
            if (sa.ss_family == AF_INET)
                ((struct sockaddr_in *)&sa)->sin_port = htons(h->port);
            else
                ((struct sockaddr_in6 *)&sa)->sin6_port = htons(h->port);
        }
    }
    return 0;
fail:
    return ss_err_set(err, fd, "%s listener: cannot listen on %s port %d: %s",
                      h->name, h->address, h->opts.port, strerror(-fd));
}

/* ---- lifecycle ----------------------------------------------------------- */

static void
listener_free(ss_http_t *h)
{
    int i;

    if (h->ipt != NULL) {
        for (i = 0; i < IP_BUCKETS; i++) {
            ip_ent_t *e, *next;

            for (e = h->ipt[i].head; e != NULL; e = next) {
                next = e->next;
                ss_free(e);
            }
            pthread_mutex_destroy(&h->ipt[i].lock);
        }
        ss_free(h->ipt);
    }
    for (i = 0; i < h->nloops && h->loops != NULL; i++) {
        loop_t *l = &h->loops[i];

        if (l->fd != MHD_INVALID_SOCKET)
            close(l->fd);
        if (l->wake_fd >= 0)
            close(l->wake_fd);
        ss_queue_destroy(&l->done);
    }
    ss_free(h->loops);
    ss_free(h->name);
    ss_free(h->address);
    ss_free(h);
}

static void
on_handle_closed(uv_handle_t *hd)
{
    loop_t *l = hd->data;
    ss_http_t *h = l->h;

    l->handles--;
    /* A listener on the owner's loop goes with its last handle; threaded
     * loops are freed by ss_http_close after their threads are joined. */
    if (!l->threaded && --h->handles == 0 && h->closing)
        listener_free(h);
}

static void
close_handles(loop_t *l)
{
    uv_handle_t *hs[] = { (uv_handle_t *)&l->poll, (uv_handle_t *)&l->timer,
                          (uv_handle_t *)&l->sweep,
                          (uv_handle_t *)&l->wake };
    size_t i;

    for (i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (hs[i]->data != NULL && !uv_is_closing(hs[i]))
            uv_close(hs[i], on_handle_closed);
}

/* Stops accepting: the listening socket leaves MHD and is closed.  [loop] */
static void
loop_quiesce(loop_t *l)
{
    MHD_socket fd;

    if (l->d == NULL || l->fd == MHD_INVALID_SOCKET)
        return;
    fd = MHD_quiesce_daemon(l->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    l->fd = MHD_INVALID_SOCKET;
}

/* Answers what other threads finished, stops the daemon (which closes
 * every connection) and closes the handles.  [loop] */
static void
loop_stop(loop_t *l)
{
    if (l->closing)
        return;
    /* Suspended requests must be resumed before MHD stops; the layers
     * that suspend them (batcher, registry) have answered them by now:
     * resume them and let MHD queue what it can. */
    resume_done(l);
    if (l->d != NULL)
        MHD_run(l->d);
    release_pending(l);
    loop_quiesce(l);
    l->closing = true;
    if (l->poll.data != NULL)
        uv_poll_stop(&l->poll);
    if (l->timer.data != NULL)
        uv_timer_stop(&l->timer);
    if (l->sweep.data != NULL)
        uv_timer_stop(&l->sweep);
    if (l->d != NULL)
        MHD_stop_daemon(l->d);
    l->d = NULL;
    ss_looplag_close(l->lag);
    l->lag = NULL;
    close_handles(l);
}

static void *
loop_main(void *arg)
{
    loop_t *l = arg;
    char name[16];

    snprintf(name, sizeof(name), "ss-%s-%d", l->h->name, l->index);
    pthread_setname_np(pthread_self(), name);
    drive(l);
    uv_run(l->uv, UV_RUN_DEFAULT);
    return NULL;
}

static void
handle_added(loop_t *l, uv_handle_t *hd)
{
    hd->data = l;
    l->handles++;
    if (!l->threaded)
        l->h->handles++;
}

static int
loop_init(ss_http_t *h, loop_t *l, uv_loop_t *owner, ss_err_t *err)
{
    const union MHD_DaemonInfo *info;
    unsigned flags;
    int efd;

    if (l->threaded) {
        if (uv_loop_init(&l->own) < 0)
            return ss_err_set(err, SS_EINTERNAL, "%s listener: cannot "
                              "create loop %d", h->name, l->index);
        l->uv = &l->own;
    } else {
        l->uv = owner;
    }
    flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO |
            MHD_USE_ERROR_LOG |
            (strchr(h->address, ':') != NULL ? MHD_USE_IPv6 : 0) |
            (h->opts.tls != NULL ? MHD_USE_TLS : 0);
    /* TLS: no certificate of MHD's own, the callback hands out the
     * listener's current one (tls.c). */
    struct MHD_OptionItem tls_opts[] = {
        { MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)on_cert },
        { MHD_OPTION_HTTPS_PRIORITIES, 0,
          (void *)(h->opts.tls ? ss_tls_priorities(h->opts.tls) : "") },
        { MHD_OPTION_END, 0, NULL },
    };

    if (h->opts.tls == NULL)
        tls_opts[0].option = MHD_OPTION_END;
    l->d = MHD_start_daemon(
        flags, 0, on_accept, l, on_request, l,
        MHD_OPTION_LISTEN_SOCKET, l->fd,
        /* on_accept counts over every loop and refuses; MHD's own limit
         * is one higher so it is never reached: at its limit MHD stops
         * polling the listener, and a connection the kernel hashed to
         * this loop's SO_REUSEPORT socket would wait in the backlog
         * instead of being refused. */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->opts.max_connections + 1,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->opts.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)h->opts.max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, l,
        MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l,
        MHD_OPTION_ARRAY, tls_opts,
        MHD_OPTION_END);
    if (l->d == NULL)
        return ss_err_set(err, SS_EINTERNAL, "%s listener: libmicrohttpd "
                          "did not start on %s port %d", h->name,
                          h->address, h->port);
    info = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    efd = info ? info->epoll_fd : -1;
    if (efd < 0)
        return ss_err_set(err, SS_EINTERNAL, "%s listener: no epoll fd",
                          h->name);
    /* A handle with data set exists and must be closed. */
    if (uv_poll_init(l->uv, &l->poll, efd) < 0)
        return ss_err_set(err, SS_EINTERNAL, "%s listener: uv_poll_init",
                          h->name);
    handle_added(l, (uv_handle_t *)&l->poll);
    uv_timer_init(l->uv, &l->timer);
    handle_added(l, (uv_handle_t *)&l->timer);
    uv_timer_init(l->uv, &l->sweep);
    handle_added(l, (uv_handle_t *)&l->sweep);
    if ((l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return ss_err_set(err, SS_EINTERNAL, "%s listener: eventfd: %s",
                          h->name, strerror(errno));
    if (uv_poll_init(l->uv, &l->wake, l->wake_fd) < 0)
        return ss_err_set(err, SS_EINTERNAL, "%s listener: uv_poll_init",
                          h->name);
    handle_added(l, (uv_handle_t *)&l->wake);
    uv_poll_start(&l->wake, UV_READABLE, on_wake);
    metrics_setup(h, l);
    /* The main loop has its own probe (server.c); a loop thread gets one
     * here: slimserve_loop_lag_seconds{loop="http-1"}. */
    if (l->threaded && h->opts.metrics != NULL) {
        char lname[40];
        int rc;

        snprintf(lname, sizeof(lname), "%s-%d", h->name, l->index);
        if ((rc = ss_looplag_start(l->uv, h->opts.metrics->registry, lname,
                                   10, &l->lag, err)) < 0)
            return rc;
    }
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
    return 0;
}

/* Undoes a start that failed part-way; no loop thread runs yet. */
static void
abort_start(ss_http_t *h)
{
    int i;

    h->closing = true;
    for (i = 0; i < h->nloops; i++) {
        loop_t *l = &h->loops[i];

        loop_stop(l);
        if (l->threaded && l->uv == &l->own) {
            /* Let the closes finish here; the thread never ran. */
            uv_run(&l->own, UV_RUN_DEFAULT);
            uv_loop_close(&l->own);
        }
    }
    /* On the owner's loop, the last close callback frees h. */
    if (h->handles == 0)
        listener_free(h);
}

int
ss_http_start(uv_loop_t *loop, const ss_http_opts_t *opts, ss_http_t **out,
              ss_err_t *err)
{
    ss_http_t *h;
    int rc = 0, i;

    *out = NULL;
    if ((h = ss_calloc(1, sizeof(*h))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    h->owner = loop;
    h->opts = *opts;
    h->nloops = opts->loops > 0 ? opts->loops : 1;
    h->name = ss_strdup(opts->name);
    h->address = ss_strdup(opts->address);
    h->loops = ss_calloc((size_t)h->nloops, sizeof(loop_t));
    if (h->opts.max_connections_per_ip > 0)
        h->ipt = ss_calloc(IP_BUCKETS, sizeof(ip_bucket_t));
    if (h->name == NULL || h->address == NULL || h->loops == NULL ||
        (h->opts.max_connections_per_ip > 0 && h->ipt == NULL)) {
        ss_free(h->ipt);
        h->ipt = NULL;
        h->nloops = h->loops ? h->nloops : 0;
        for (i = 0; i < h->nloops; i++)
            h->loops[i].fd = MHD_INVALID_SOCKET;
        listener_free(h);
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    }
    h->opts.name = h->name;
    h->opts.address = h->address;
    h->port = opts->port;
    atomic_init(&h->quiesced, false);
    atomic_init(&h->conns, 0);
    snprintf(h->retry_after, sizeof(h->retry_after), "%d",
             opts->retry_after_s > 0 ? opts->retry_after_s : 1);
    if (opts->metrics != NULL) {
        h->m_requests = opts->metrics->requests;
        h->m_duration = opts->metrics->duration;
    }
    for (i = 0; h->ipt != NULL && i < IP_BUCKETS; i++)
        pthread_mutex_init(&h->ipt[i].lock, NULL);
    for (i = 0; i < h->nloops; i++) {
        loop_t *l = &h->loops[i];

        l->h = h;
        l->index = i;
        l->threaded = opts->loops > 0;
        l->fd = MHD_INVALID_SOCKET;
        l->wake_fd = -1;
        atomic_init(&l->wake_pending, 0);
        atomic_init(&l->ctl, 0);
        atomic_init(&l->in_flight, 0);
        ss_queue_init(&l->done);
        snprintf(l->label, sizeof(l->label), "%d", i);
    }
    if ((rc = open_sockets(h, err)) < 0) {
        listener_free(h);
        return rc;
    }
    for (i = 0; i < h->nloops; i++) {
        if ((rc = loop_init(h, &h->loops[i], loop, err)) < 0) {
            abort_start(h);
            return rc;
        }
    }
    for (i = 0; i < h->nloops; i++) {
        loop_t *l = &h->loops[i];

        if (!l->threaded) {
            drive(l);
            continue;
        }
        /* The loop and its handles pass to the thread here; nothing on
         * this thread touches them again but through ctl and the wake-up. */
        if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
            rc = ss_err_set(err, SS_EINTERNAL, "%s listener: cannot start "
                            "loop thread %d", h->name, i);
            ss_http_close(h);
            return rc;
        }
        l->started = true;
    }
    *out = h;
    return 0;
}

int
ss_http_port(const ss_http_t *h)
{
    return h->port;
}

int
ss_http_loops(const ss_http_t *h)
{
    return h->nloops;
}

int
ss_http_in_flight(const ss_http_t *h)
{
    int i, n = 0;

    for (i = 0; i < h->nloops; i++)
        n += atomic_load_explicit(&h->loops[i].in_flight,
                                  memory_order_relaxed);
    return n;
}

uint64_t
ss_http_arrivals(const ss_http_t *h)
{
    uint64_t n = 0;
    int i;

    for (i = 0; i < h->nloops; i++)
        n += atomic_load_explicit(&h->loops[i].arrivals,
                                  memory_order_relaxed);
    return n;
}

static void
signal_loops(ss_http_t *h, int ctl)
{
    int i;

    for (i = 0; i < h->nloops; i++) {
        loop_t *l = &h->loops[i];

        if (!l->threaded) {
            if (ctl & CTL_QUIESCE)
                loop_quiesce(l);
            if (ctl & CTL_STOP)
                loop_stop(l);
        } else if (l->started) {
            atomic_fetch_or(&l->ctl, ctl);
            wake_loop(l);
        }
    }
}

void
ss_http_quiesce(ss_http_t *h)
{
    if (h == NULL || atomic_exchange(&h->quiesced, true))
        return;
    signal_loops(h, CTL_QUIESCE);
}

void
ss_http_close(ss_http_t *h)
{
    int i;

    if (h == NULL || h->closing)
        return;
    h->closing = true;
    signal_loops(h, CTL_STOP);
    if (!h->loops[0].threaded)
        return;                 /* freed by the last close callback */
    for (i = 0; i < h->nloops; i++) {
        loop_t *l = &h->loops[i];

        if (l->started) {
            pthread_join(l->thread, NULL);
        } else {
            /* Never started (a failed start): close it here. */
            loop_stop(l);
            uv_run(&l->own, UV_RUN_DEFAULT);
        }
        uv_loop_close(&l->own);
    }
    listener_free(h);
}
