/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP connections: the limits and deadlines http.c describes.  MHD's
 * accept policy counts connections per listener and per client address
 * (hash buckets, each with its own mutex) and refuses over either limit
 * before MHD allocates anything; a reservation is confirmed when MHD
 * reports the connection started and released after the run otherwise.
 * Each connection carries a phase (headers, body, idle) and a deadline;
 * a sweep timer per loop cuts the ones past theirs by shutting their
 * socket down.  Also MHD's per-connection callbacks: the TLS certificate
 * choice, the request line, and %HH unescaping.
 *
 * THREADS: [loop] for a loop's connections; the counts are atomics and
 * the address table is guarded per bucket.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/http/tls.h"

#include "server/http/http_int.h"

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
void
ss__http_release_pending(loop_t *l)
{
    if (l->pending.active) {
        l->pending.active = false;
        release_slot(l->h, &l->pending.ip, l->pending.ip_counted);
    }
}

/* MHD's accept policy: the limits, before MHD allocates anything. */
enum MHD_Result
ss__http_on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    loop_t *l = cls;
    ss_http_t *h = l->h;
    ipkey_t ip;
    int rc;

    ss__http_release_pending(l);
    if (atomic_fetch_add_explicit(&h->conns, 1, memory_order_relaxed) >=
        h->opts.max_connections) {
        atomic_fetch_sub_explicit(&h->conns, 1, memory_order_relaxed);
        ss__http_count(l->s_rej[REJ_LIMIT]);
        return MHD_NO;
    }
    ipkey_of(addr, &ip);
    l->pending.ip = ip;
    l->pending.ip_counted = false;
    if (h->ipt != NULL && ip.len > 0) {
        if ((rc = ip_take(h, &ip)) == SS_EBUSY) {
            atomic_fetch_sub_explicit(&h->conns, 1, memory_order_relaxed);
            ss__http_count(l->s_rej[REJ_PER_IP]);
            return MHD_NO;
        }
        l->pending.ip_counted = rc == 0;
    }
    l->pending.active = true;
    return MHD_YES;
}

/* ---- connections and deadlines ------------------------------------------- */

static void on_sweep(uv_timer_t *t);

void
ss__http_set_phase(conn_t *k, phase_t ph, int timeout_s)
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

void
ss__http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    loop_t *l = cls;
    conn_t *k;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        if ((k = ss_calloc(1, sizeof(*k))) == NULL) {
            /* Untracked: no deadlines; its slot is given back now. */
            ss__http_release_pending(l);
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
            /* Not through ss__http_on_accept: count it all the same. */
            atomic_fetch_add_explicit(&l->h->conns, 1,
                                      memory_order_relaxed);
        }
        ss__http_set_phase(k, PH_HEADER, l->h->opts.header_timeout_s);
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

conn_t *
ss__http_conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

/* GnuTLS asks for the certificate during a handshake [loop]: the
 * listener's current one, which the connection holds until it closes (a
 * reload must not free what the session points at).  MHD sets the
 * session's pointer to its connection. */
int
ss__http_on_cert(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
        const gnutls_pk_algorithm_t *algos, int nalgos,
        gnutls_pcert_st **pcert, unsigned int *npcert,
        gnutls_privkey_t *key)
{
    struct MHD_Connection *c = gnutls_session_get_ptr(s);
    conn_t *k = c != NULL ? ss__http_conn_of(c) : NULL;

    /* Untracked (no memory for its context): no certificate either. */
    if (k == NULL)
        return -1;
    return ss_tls_select(k->l->h->opts.tls, &k->tls, pcert, npcert, key);
}

/* MHD read a request line: on a kept-alive connection the headers' clock
 * starts now.  The return value becomes the request's first *con_cls. */
void *
ss__http_on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    loop_t *l = cls;
    conn_t *k = ss__http_conn_of(c);

    if (k != NULL && k->phase == PH_IDLE)
        ss__http_set_phase(k, PH_HEADER, l->h->opts.header_timeout_s);
    return NULL;
}

/* %HH decoding of paths and arguments, as MHD's own but for %00: a NUL
 * would cut the path short ("/v2/models/mlp%00x" served as "mlp"), so it
 * becomes C0 80 (modified UTF-8's NUL), which no route accepts. */
size_t
ss__http_on_unescape(void *cls, struct MHD_Connection *c, char *s)
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
 * run; it then closes it as usual (and tells ss__http_on_connection). */
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
            ss__http_count(l->s_slow_header);
        else if (k->phase == PH_BODY)
            ss__http_count(l->s_slow_body);
        cut(k);
        n++;
    }
    if (n > 0) {
        ss_log_debug("%s: loop %d: cut %d connection(s) past a deadline",
                     l->h->name, l->index, n);
        ss__http_drive(l);
    }
}
