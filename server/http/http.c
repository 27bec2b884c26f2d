/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP listeners: libmicrohttpd under the libuv loop.
 *
 * DESIGN: MHD runs in epoll mode without threads of its own.  Its epoll fd
 * is watched by a uv_poll; every wake-up calls MHD_run() and re-arms a
 * uv_timer with MHD_get_timeout(), which MHD needs for connection timeouts
 * and for connections it wants processed again at once.  The access
 * handler gathers the body into one buffer (refusing more than
 * max_body_bytes with 413, early when Content-Length says so) and calls the
 * listener's handler once.  Answers are queued from the access handler
 * only, as MHD requires: an answer given from the handler is queued on
 * return; an answer given later (ss_req_finish, any thread) parks the
 * request on a mutex-guarded list and wakes the loop with uv_async_send;
 * the async callback resumes each connection and runs MHD, which calls the
 * access handler again, which queues the answer.
 *
 * Metrics: requests by listener, endpoint class and status code, their
 * duration, and requests in flight.  Series are cached per listener so the
 * hot path takes no lock.
 *
 * THREADS: [loop], except ss_req_finish() [any] and the done list it
 * feeds (an ss_queue_t).
 */
#include "config.h"

#include "server/http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/queue.h"

#define MAX_STATUS 600

typedef struct hdr {
    char *name;
    char *value;
} hdr_t;

struct ss_req {
    ss_http_t *h;
    struct MHD_Connection *conn;
    const char *method;         /* borrowed from MHD for the request's life */
    const char *url;
    uint64_t id;
    uint64_t start_ns;
    ss_endpoint_t ep;

    char *body;
    size_t len, cap;
    bool too_big;
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

struct ss_http {
    uv_loop_t *loop;
    struct MHD_Daemon *d;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_async_t async;
    int open_handles;
    bool closing;

    char *name;
    char *address;
    ss_http_opts_t opts;        /* strings point at name/address above */
    int port;
    int in_flight;
    bool quiesced;
    MHD_socket listen_fd;       /* kept after quiesce, closed by us */
    uint64_t next_id;

    ss_queue_t done;            /* answered by other threads, to resume */

    ss_metric_t *m_requests, *m_duration;
    ss_series_t *s_in_flight;
    ss_series_t *s_req[SS_EP__COUNT][MAX_STATUS];
    ss_series_t *s_dur[SS_EP__COUNT];
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

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- metrics ---------------------------------------------------------- */

static const char *const req_labels[] = { "listener", "endpoint", "code" };
static const char *const dur_labels[] = { "listener", "endpoint" };
static const char *const fl_labels[] = { "listener" };

int
ss_http_metrics_init(ss_metrics_t *m, ss_http_metrics_t *out)
{
    static const double buckets[] = { 0.0001, 0.00025, 0.0005, 0.001,
                                      0.0025, 0.005,   0.01,   0.025,
                                      0.05,   0.1,     0.25,   0.5,
                                      1,      2.5,     5,      10 };

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
        "Requests received and not yet answered.", 1, fl_labels);
    if (out->requests == NULL || out->duration == NULL ||
        out->in_flight == NULL)
        return SS_ENOMEM;
    return 0;
}

static void
metrics_setup(ss_http_t *h)
{
    const char *lv[1];

    if (h->opts.metrics == NULL)
        return;
    h->m_requests = h->opts.metrics->requests;
    h->m_duration = h->opts.metrics->duration;
    lv[0] = h->name;
    h->s_in_flight = ss_metric_series(h->opts.metrics->in_flight, lv);
}

static void
metrics_done(ss_http_t *h, ss_req_t *r)
{
    char code[16];
    const char *lv[3];
    int st = r->queued ? r->status : 0;
    ss_endpoint_t ep = r->ep;

    if (h->m_requests == NULL)
        return;
    if (st < 0 || st >= MAX_STATUS)
        st = 0;
    if (h->s_req[ep][st] == NULL) {
        snprintf(code, sizeof(code), "%d", st);
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        lv[2] = st ? code : "aborted";
        h->s_req[ep][st] = ss_metric_series(h->m_requests, lv);
    }
    ss_series_add(h->s_req[ep][st], 1);
    if (h->m_duration != NULL && h->s_dur[ep] == NULL) {
        lv[0] = h->name;
        lv[1] = ep_names[ep];
        h->s_dur[ep] = ss_metric_series(h->m_duration, lv);
    }
    if (h->s_dur[ep] != NULL)
        ss_series_observe(h->s_dur[ep],
                          (double)(now_ns() - r->start_ns) / 1e9);
}

/* ---- driving MHD from the loop ----------------------------------------- */

static void on_timer(uv_timer_t *t);

static void
drive(ss_http_t *h)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (h->closing)
        return;
    MHD_run(h->d);
    if (MHD_get_timeout(h->d, &ms) == MHD_YES)
        uv_timer_start(&h->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&h->timer);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    drive(p->data);
}

static void
on_timer(uv_timer_t *t)
{
    drive(t->data);
}

static enum MHD_Result queue(ss_req_t *r);

static void
on_async(uv_async_t *a)
{
    ss_http_t *h = a->data;
    ss_qlink_t *list;
    ss_req_t *r;

    /* Wake-ups coalesce: drain the whole queue each time. */
    list = ss_queue_take_all(&h->done);
    while (list != NULL) {
        r = SS_QUEUE_ENTRY(list, ss_req_t, done_link);
        list = list->next;
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
    drive(h);
}

/* ---- requests ---------------------------------------------------------- */

static void
req_free(ss_req_t *r)
{
    int i;

    if (r == NULL)
        return;
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

static void
set_response(ss_req_t *r, int status, const char *ctype, char *body,
             size_t len)
{
    if (r->resp_ready) {
        /* Answering twice is a bug; keep the first answer. */
        ss_log_error("req=%llu answered twice", (unsigned long long)r->id);
        free(body);
        return;
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
    set_response(r, status, ctype, body, len);
}

void
ss_req_respond_json(ss_req_t *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    if (text == NULL) {
        set_response(r, 500, "application/json",
                     strdup("{\"error\":\"out of memory\"}"), 25);
        return;
    }
    set_response(r, status, "application/json", text, strlen(text));
}

void
ss_req_respond_error(ss_req_t *r, int status, const char *fmt, ...)
{
    char msg[SS_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ss_req_respond_json(r, status, json_pack("{s:s}", "error", msg));
}

void
ss_req_fail(ss_req_t *r, int rc, const char *fmt, ...)
{
    char msg[SS_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ss_req_respond_json(r, ss_http_status_of(rc),
                        json_pack("{s:s}", "error", msg));
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
    ss_http_t *h = r->h;

    set_response(r, status, ctype, body, len);
    ss_queue_push(&h->done, &r->done_link);
    uv_async_send(&h->async);
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
    ok = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    if (ok == MHD_YES)
        r->queued = true;
    return ok;
}

static int
append_body(ss_req_t *r, const char *data, size_t n)
{
    size_t need = r->len + n + 1, cap;
    char *b;

    if (need <= r->cap) {
        memcpy(r->body + r->len, data, n);
        r->len += n;
        r->body[r->len] = '\0';
        return 0;
    }
    cap = r->cap ? r->cap : 4096;
    while (cap < need)
        cap *= 2;
    if ((b = realloc(r->body, cap)) == NULL)
        return SS_ENOMEM;
    r->body = b;
    r->cap = cap;
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return 0;
}

static ss_req_t *
req_new(ss_http_t *h, struct MHD_Connection *c, const char *url,
        const char *method)
{
    const char *cl;
    ss_req_t *r;

    if ((r = ss_calloc(1, sizeof(*r))) == NULL)
        return NULL;
    r->h = h;
    r->conn = c;
    r->url = url;
    r->method = method;
    r->id = ++h->next_id;
    r->start_ns = now_ns();
    r->ep = SS_EP_OTHER;
    h->in_flight++;
    if (h->s_in_flight != NULL)
        ss_series_add(h->s_in_flight, 1);

    if (h->quiesced) {
        ss_req_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        ss_req_respond_error(r, 503, "server is shutting down");
        return r;
    }
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        unsigned long long n;
        char *end;

        errno = 0;
        n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && *end == '\0' &&
            n > (unsigned long long)h->opts.max_body_bytes) {
            ss_req_respond_error(r, 413,
                                 "request body of %llu bytes exceeds the "
                                 "limit of %lld bytes", n,
                                 (long long)h->opts.max_body_bytes);
        } else if (errno == 0 && end != cl && n > 0 && n < (1u << 26)) {
            /* Size the buffer once for the common case. */
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
    ss_http_t *h = cls;
    ss_req_t *r = *con_cls;

    if (r == NULL) {
        if ((r = req_new(h, c, url, method)) == NULL)
            return MHD_NO;      /* out of memory: drop the connection */
        *con_cls = r;
        /* An early answer (413, 503) is sent without reading the body;
         * MHD then closes the connection. */
        return r->resp_ready ? queue(r) : MHD_YES;
    }
    if (*upload_size > 0) {
        if (!r->resp_ready && !r->too_big) {
            if (r->len + *upload_size > (size_t)h->opts.max_body_bytes)
                r->too_big = true;
            else if (append_body(r, upload, *upload_size) < 0)
                ss_req_respond_error(r, 500, "out of memory for the body");
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES;
    if (!r->resp_ready && r->too_big)
        ss_req_respond_error(r, 413,
                             "request body exceeds the limit of %lld bytes",
                             (long long)h->opts.max_body_bytes);
    if (!r->resp_ready && !r->dispatched) {
        r->dispatched = true;
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
    ss_http_t *h = cls;
    ss_req_t *r = *con_cls;

    if (r == NULL)
        return;
    *con_cls = NULL;
    metrics_done(h, r);
    h->in_flight--;
    if (h->s_in_flight != NULL)
        ss_series_add(h->s_in_flight, -1);
    req_free(r);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    ss_http_t *h = cls;
    char msg[512];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    ss_log_debug("%s: libmicrohttpd: %s", h->name, msg);
}

/* ---- lifecycle --------------------------------------------------------- */

static int
parse_addr(const char *addr, int port, struct sockaddr_storage *ss,
           bool *v6)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = true;
        return 0;
    }
    return SS_EINVAL;
}

static void
on_handle_closed(uv_handle_t *hd)
{
    ss_http_t *h = hd->data;

    if (--h->open_handles == 0) {
        ss_queue_destroy(&h->done);
        ss_free(h->name);
        ss_free(h->address);
        ss_free(h);
    }
}

int
ss_http_start(uv_loop_t *loop, const ss_http_opts_t *opts, ss_http_t **out,
              ss_err_t *err)
{
    const union MHD_DaemonInfo *info;
    struct sockaddr_storage sa;
    ss_http_t *h = NULL;
    unsigned flags;
    bool v6;
    int rc = 0, efd;

    *out = NULL;
    if ((h = ss_calloc(1, sizeof(*h))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    h->loop = loop;
    h->opts = *opts;
    h->name = ss_strdup(opts->name);
    h->address = ss_strdup(opts->address);
    h->listen_fd = MHD_INVALID_SOCKET;
    ss_queue_init(&h->done);
    if (h->name == NULL || h->address == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto fail;
    }
    h->opts.name = h->name;
    h->opts.address = h->address;
    if (parse_addr(opts->address, opts->port, &sa, &v6) < 0) {
        rc = ss_err_set(err, SS_EINVAL,
                        "%s listener: '%s' is not an IPv4 or IPv6 address",
                        opts->name, opts->address);
        goto fail;
    }
    metrics_setup(h);

    flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO |
            MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    errno = 0;
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)opts->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)opts->timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)opts->max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_END);
    if (h->d == NULL) {
        int e = errno ? errno : EADDRINUSE;

        rc = ss_err_set(err, -e, "%s listener: cannot listen on %s port %d: %s",
                        opts->name, opts->address, opts->port, strerror(e));
        goto fail;
    }
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : opts->port;
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    efd = info ? info->epoll_fd : -1;
    if (efd < 0) {
        rc = ss_err_set(err, SS_EINTERNAL, "%s listener: no epoll fd",
                        opts->name);
        goto fail;
    }
    if (uv_poll_init(loop, &h->poll, efd) < 0 ||
        uv_timer_init(loop, &h->timer) < 0 ||
        uv_async_init(loop, &h->async, on_async) < 0) {
        rc = ss_err_set(err, SS_EINTERNAL, "%s listener: libuv init failed",
                        opts->name);
        goto fail;  /* not reached in practice: these only fail on EINVAL */
    }
    h->poll.data = h->timer.data = h->async.data = h;
    h->open_handles = 3;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    drive(h);
    *out = h;
    return 0;
fail:
    if (h->d != NULL)
        MHD_stop_daemon(h->d);
    ss_queue_destroy(&h->done);
    ss_free(h->name);
    ss_free(h->address);
    ss_free(h);
    return rc;
}

int
ss_http_port(const ss_http_t *h)
{
    return h->port;
}

int
ss_http_in_flight(const ss_http_t *h)
{
    return h->in_flight;
}

void
ss_http_quiesce(ss_http_t *h)
{
    if (h == NULL || h->quiesced)
        return;
    h->quiesced = true;
    h->listen_fd = MHD_quiesce_daemon(h->d);
    if (h->listen_fd != MHD_INVALID_SOCKET) {
        close(h->listen_fd);
        h->listen_fd = MHD_INVALID_SOCKET;
    }
}

void
ss_http_close(ss_http_t *h)
{
    if (h == NULL || h->closing)
        return;
    /* Suspended requests must be resumed before MHD stops; the layers
     * that suspend them (batcher, registry) have answered them by now:
     * resume them and let MHD queue what it can. */
    on_async(&h->async);
    MHD_run(h->d);
    h->closing = true;
    uv_poll_stop(&h->poll);
    uv_timer_stop(&h->timer);
    MHD_stop_daemon(h->d);
    h->d = NULL;
    uv_close((uv_handle_t *)&h->poll, on_handle_closed);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    uv_close((uv_handle_t *)&h->async, on_handle_closed);
}
