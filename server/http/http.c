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
 * The access handler (http_req.c) gathers the body into one buffer
 * (refusing more than max_body_bytes with 413, early when Content-Length
 * says so) and calls the listener's handler once.  Answers are queued from the access
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
 * Limits (http_conn.c).  Connections are counted per listener (an atomic) and per
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

#include "server/http/http_int.h"

/* ---- driving MHD from the loop ------------------------------------------- */

static void on_timer(uv_timer_t *t);

void
ss__http_drive(loop_t *l)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (l->closing)
        return;
    MHD_run(l->d);
    ss__http_release_pending(l);
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
    ss__http_drive(l);
}

static void
on_timer(uv_timer_t *t)
{
    loop_t *l = t->data;

    if (l->spins < 1000)
        l->spins++;
    ss__http_drive(l);
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
void
ss__http_wake_loop(loop_t *l)
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
    ss__http_drive(l);
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
    ss__http_release_pending(l);
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
    ss__http_drive(l);
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
        { MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)ss__http_on_cert },
        { MHD_OPTION_HTTPS_PRIORITIES, 0,
          (void *)(h->opts.tls ? ss_tls_priorities(h->opts.tls) : "") },
        { MHD_OPTION_END, 0, NULL },
    };

    if (h->opts.tls == NULL)
        tls_opts[0].option = MHD_OPTION_END;
    l->d = MHD_start_daemon(
        flags, 0, ss__http_on_accept, l, ss__http_on_request, l,
        MHD_OPTION_LISTEN_SOCKET, l->fd,
        /* ss__http_on_accept counts over every loop and refuses; MHD's own limit
         * is one higher so it is never reached: at its limit MHD stops
         * polling the listener, and a connection the kernel hashed to
         * this loop's SO_REUSEPORT socket would wait in the backlog
         * instead of being refused. */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->opts.max_connections + 1,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->opts.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)h->opts.max_header_bytes,
        MHD_OPTION_NOTIFY_COMPLETED, ss__http_on_completed, l,
        MHD_OPTION_NOTIFY_CONNECTION, ss__http_on_connection, l,
        MHD_OPTION_URI_LOG_CALLBACK, ss__http_on_uri, l,
        MHD_OPTION_UNESCAPE_CALLBACK, ss__http_on_unescape, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, ss__http_on_mhd_log, l,
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
    ss__http_metrics_setup(h, l);
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
            ss__http_drive(l);
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
            ss__http_wake_loop(l);
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
