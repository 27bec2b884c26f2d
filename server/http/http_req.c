/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP requests (http.c says how listeners and loops run): MHD's access
 * handler gathers a request's body into one buffer (refusing more than
 * max_body_bytes with 413, early when Content-Length says so; checking
 * the framing first; decoding gzip/deflate as it arrives), calls the
 * listener's handler once, and queues its answer -- at once, or, for an
 * answer given later from any thread (ss_req_finish), when the loop
 * resumes the connection; the answer is coded as Accept-Encoding asked.
 *
 * THREADS: the access handler runs on its loop's thread; ss_req_finish
 * [any]; the other ss_req_* calls belong to the thread that holds the
 * request.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "server/http/http_int.h"

/* ---- requests ------------------------------------------------------------ */

static void
req_free(ss_req_t *r)
{
    int i;

    if (r == NULL)
        return;
    ss__http_budget_put(r->l->h->opts.budget, r->reserved);
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

    /* the answering thread codes it: an executor, for inference, up to
     * max_coded_bytes (a larger answer would hold it for seconds) */
    set_response(r, status, ctype, body, len,
                 l->h->opts.max_coded_bytes > 0
                 ? (size_t)l->h->opts.max_coded_bytes : SIZE_MAX);
    ss_queue_push(&l->done, &r->done_link);
    ss__http_wake_loop(l);
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
    ss__http_set_phase(r->k, PH_BUSY, 0);
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
            if (!ss__http_budget_take(b, (int64_t)cap - r->reserved))
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
    ss__http_count(r->l->s_rej[REJ_BUFFERED]);
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
    r->k = ss__http_conn_of(c);
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
    ss__http_count(l->s_loop);
    ss__http_set_phase(r->k, PH_BODY, h->opts.body_timeout_s);

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
            if (!ss__http_budget_take(h->opts.budget, (int64_t)n + 1)) {
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

enum MHD_Result
ss__http_on_request(void *cls, struct MHD_Connection *c, const char *url,
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
        ss__http_set_phase(r->k, PH_BUSY, 0);
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

void
ss__http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    loop_t *l = cls;
    ss_req_t *r = *con_cls;

    if (r == NULL)
        return;
    *con_cls = NULL;
    ss__http_metrics_done(l, r);
    /* Kept alive, the connection now waits for its next request. */
    ss__http_set_phase(r->k, PH_IDLE, l->h->opts.keepalive_timeout_s);
    atomic_fetch_sub_explicit(&l->in_flight, 1, memory_order_relaxed);
    if (l->s_in_flight != NULL)
        ss_series_add(l->s_in_flight, -1);
    req_free(r);
}

void
ss__http_on_mhd_log(void *cls, const char *fmt, va_list ap)
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
