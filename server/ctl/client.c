/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP client of slimserve-ctl.  One connection per request keeps it
 * simple: the admin API answers small JSON documents a few times a
 * second at most (--follow), so a kept-alive connection would buy
 * nothing.  The answer is read to the end of the connection and then
 * parsed: status line, headers, and a body framed by Content-Length or
 * chunked encoding (libmicrohttpd uses both).
 */
#include "config.h"

#include "server/ctl/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "common/alloc.h"

#define RESP_MAX (64u << 20)    /* larger answers are refused */

int
ss_ctl_client_init(ss_ctl_client_t *c, const char *url, ss_err_t *err)
{
    const char *p = url, *host, *end;
    size_t n;

    memset(c, 0, sizeof(*c));
    c->timeout_s = 30;
    if (strncmp(p, "http://", 7) == 0) {
        strcpy(c->scheme, "http");
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        strcpy(c->scheme, "https");
        p += 8;
    } else {
        return ss_err_set(err, SS_EINVAL, "'%s' is not an http:// or "
                          "https:// URL", url);
    }
    if (*p == '[') {                    /* [v6]:port */
        host = p + 1;
        if ((end = strchr(host, ']')) == NULL)
            return ss_err_set(err, SS_EINVAL, "'%s': no ']'", url);
        n = (size_t)(end - host);
        p = end + 1;
    } else {
        host = p;
        n = strcspn(p, ":/");
        p += n;
    }
    if (n == 0 || n >= sizeof(c->host))
        return ss_err_set(err, SS_EINVAL, "'%s': bad host", url);
    memcpy(c->host, host, n);
    c->host[n] = '\0';
    if (*p == ':') {
        p++;
        n = strspn(p, "0123456789");
        if (n == 0 || n >= sizeof(c->port) || atoi(p) > 65535)
            return ss_err_set(err, SS_EINVAL, "'%s': bad port", url);
        memcpy(c->port, p, n);
        c->port[n] = '\0';
        p += n;
    } else {
        strcpy(c->port, c->scheme[4] == 's' ? "443" : "80");
    }
    if (*p != '\0' && strcmp(p, "/") != 0)
        return ss_err_set(err, SS_EINVAL, "'%s': give the server's URL "
                          "without a path", url);
    return 0;
}

void
ss_ctl_client_free(ss_ctl_client_t *c)
{
    if (c == NULL)
        return;
    ss_free(c->token);
    ss_free(c->cafile);
    c->token = c->cafile = NULL;
}

void
ss_ctl_resp_free(ss_ctl_resp_t *r)
{
    ss_free(r->body);
    r->body = NULL;
    r->len = 0;
}

/* ---- transport ------------------------------------------------------- */

typedef struct conn {
    int fd;
    gnutls_session_t tls;       /* NULL: plain */
    gnutls_certificate_credentials_t cred;
} conn_t;

static int
dial(const ss_ctl_client_t *c, int *out, ss_err_t *err)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int fd = -1, rc, ms = (int)(c->timeout_s * 1000);
    struct timeval tv = { .tv_sec = (time_t)c->timeout_s,
                          .tv_usec = (suseconds_t)((c->timeout_s -
                                                    (time_t)c->timeout_s) *
                                                   1e6) };

    if ((rc = getaddrinfo(c->host, c->port, &hints, &res)) != 0)
        return ss_err_set(err, SS_EIO, "%s: %s", c->host, gai_strerror(rc));
    rc = -ECONNREFUSED;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd pfd;
        int so = 0;
        socklen_t sl = sizeof(so);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
                    SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
            errno != EINPROGRESS) {
            rc = -errno;
            goto next;
        }
        pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, ms) != 1) {
            rc = -ETIMEDOUT;
            goto next;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) < 0 || so) {
            rc = -(so ? so : errno);
            goto next;
        }
        /* Blocking from here, each read and write bounded. */
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
            rc = -errno;
            goto next;
        }
        break;
next:
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ss_err_set(err, rc == -ETIMEDOUT ? SS_ETIMEDOUT : SS_EIO,
                          "cannot connect to %s:%s: %s", c->host, c->port,
                          strerror(-rc));
    *out = fd;
    return 0;
}

static int
tls_start(const ss_ctl_client_t *c, conn_t *k, ss_err_t *err)
{
    int rc;

    if ((rc = gnutls_certificate_allocate_credentials(&k->cred)) < 0)
        goto fail;
    rc = c->cafile ? gnutls_certificate_set_x509_trust_file(
                         k->cred, c->cafile, GNUTLS_X509_FMT_PEM)
                   : gnutls_certificate_set_x509_system_trust(k->cred);
    if (rc < 0)
        goto fail;
    if (c->cafile && rc == 0)
        return ss_err_set(err, SS_EINVAL, "%s holds no certificate",
                          c->cafile);
    if ((rc = gnutls_init(&k->tls, GNUTLS_CLIENT)) < 0 ||
        (rc = gnutls_set_default_priority(k->tls)) < 0 ||
        (rc = gnutls_credentials_set(k->tls, GNUTLS_CRD_CERTIFICATE,
                                     k->cred)) < 0 ||
        (rc = gnutls_server_name_set(k->tls, GNUTLS_NAME_DNS, c->host,
                                     strlen(c->host))) < 0)
        goto fail;
    /* The certificate must name the host we dialled. */
    gnutls_session_set_verify_cert(k->tls, c->host, 0);
    gnutls_transport_set_int(k->tls, k->fd);
    do {
        rc = gnutls_handshake(k->tls);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0)
        goto fail;
    return 0;
fail:
    return ss_err_set(err, SS_EIO, "TLS with %s:%s: %s", c->host, c->port,
                      gnutls_strerror(rc));
}

static void
conn_close(conn_t *k)
{
    if (k->tls != NULL) {
        gnutls_bye(k->tls, GNUTLS_SHUT_WR);
        gnutls_deinit(k->tls);
    }
    if (k->cred != NULL)
        gnutls_certificate_free_credentials(k->cred);
    if (k->fd >= 0)
        close(k->fd);
}

static int
conn_write(conn_t *k, const char *p, size_t n, ss_err_t *err)
{
    while (n > 0) {
        ssize_t w = k->tls ? gnutls_record_send(k->tls, p, n)
                           : send(k->fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && (k->tls ? w == GNUTLS_E_INTERRUPTED ||
                               w == GNUTLS_E_AGAIN
                             : errno == EINTR))
            continue;
        if (w <= 0)
            return ss_err_set(err, SS_EIO, "sending the request: %s",
                              k->tls ? gnutls_strerror((int)w)
                                     : strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Everything until the server closes (or a TLS close_notify). */
static int
conn_read_all(conn_t *k, char **out, size_t *len, ss_err_t *err)
{
    size_t cap = 16384, n = 0;
    char *b = ss_malloc(cap + 1), *nb;
    ssize_t r;

    if (b == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    for (;;) {
        if (n == cap) {
            if (cap >= RESP_MAX) {
                ss_free(b);
                return ss_err_set(err, SS_ETOOBIG, "the answer is over "
                                  "%u bytes", RESP_MAX);
            }
            if ((nb = ss_realloc(b, 2 * cap + 1)) == NULL) {
                ss_free(b);
                return ss_err_set(err, SS_ENOMEM, "out of memory");
            }
            b = nb;
            cap *= 2;
        }
        r = k->tls ? gnutls_record_recv(k->tls, b + n, cap - n)
                   : recv(k->fd, b + n, cap - n, 0);
        if (r == 0 || (k->tls && r == GNUTLS_E_PREMATURE_TERMINATION))
            break;
        if (r < 0 && (k->tls ? r == GNUTLS_E_INTERRUPTED ||
                               r == GNUTLS_E_AGAIN
                             : errno == EINTR))
            continue;
        if (r < 0) {
            int e = errno;

            ss_free(b);
            if (!k->tls && (e == EAGAIN || e == EWOULDBLOCK))
                return ss_err_set(err, SS_ETIMEDOUT, "no answer in time");
            return ss_err_set(err, SS_EIO, "reading the answer: %s",
                              k->tls ? gnutls_strerror((int)r)
                                     : strerror(e));
        }
        n += (size_t)r;
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

/* ---- parsing --------------------------------------------------------- */

/* Decodes a chunked body in place; returns its length or -1. */
static ssize_t
unchunk(char *b, size_t n)
{
    size_t in = 0, out = 0;

    for (;;) {
        char *end;
        unsigned long sz;
        char *eol = memmem(b + in, n - in, "\r\n", 2);

        if (eol == NULL)
            return -1;
        sz = strtoul(b + in, &end, 16);
        if (end == b + in)
            return -1;
        in = (size_t)(eol - b) + 2;
        if (sz == 0)
            return (ssize_t)out;
        if (sz > n - in || n - in - sz < 2)
            return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
}

static int
parse(char *raw, size_t n, ss_ctl_resp_t *resp, ss_err_t *err)
{
    char *hdr_end = memmem(raw, n, "\r\n\r\n", 4), *line, *body;
    bool chunked = false;
    long clen = -1;
    size_t blen;
    int st;

    if (strncmp(raw, "HTTP/1.", 7) != 0 || n < 12 || hdr_end == NULL ||
        sscanf(raw + 9, "%3d", &st) != 1)
        return ss_err_set(err, SS_EIO, "not an HTTP answer");
    *hdr_end = '\0';
    for (line = strstr(raw, "\r\n"); line != NULL;
         line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            clen = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 &&
                 strstr(line, "chunked") != NULL)
            chunked = true;
    }
    body = hdr_end + 4;
    blen = n - (size_t)(body - raw);
    if (chunked) {
        ssize_t u = unchunk(body, blen);

        if (u < 0)
            return ss_err_set(err, SS_EIO, "a malformed chunked answer");
        blen = (size_t)u;
    } else if (clen >= 0) {
        if ((size_t)clen > blen)
            return ss_err_set(err, SS_EIO, "the answer was cut short "
                              "(%zu of %ld bytes)", blen, clen);
        blen = (size_t)clen;
    }
    memmove(raw, body, blen);
    raw[blen] = '\0';
    resp->status = st;
    resp->body = raw;
    resp->len = blen;
    return 0;
}

int
ss_ctl_request(ss_ctl_client_t *c, const char *method, const char *path,
               const char *body, ss_ctl_resp_t *resp, ss_err_t *err)
{
    conn_t k = { .fd = -1 };
    size_t blen = body ? strlen(body) : 0, rlen = 0;
    char *head = NULL, *raw = NULL;
    int rc, hl;

    memset(resp, 0, sizeof(*resp));
    if ((rc = dial(c, &k.fd, err)) < 0)
        goto done;
    if (c->scheme[4] == 's' && (rc = tls_start(c, &k, err)) < 0)
        goto done;
    hl = asprintf(&head, "%s %s HTTP/1.1\r\nHost: %s:%s\r\n"
                  "User-Agent: slimserve-ctl/%s\r\nAccept: application/json"
                  "\r\nConnection: close\r\n%s%s%s"
                  "Content-Type: application/json\r\n"
                  "Content-Length: %zu\r\n\r\n", method, path, c->host,
                  c->port, PACKAGE_VERSION,
                  c->token ? "Authorization: Bearer " : "",
                  c->token ? c->token : "", c->token ? "\r\n" : "", blen);
    if (hl < 0) {
        head = NULL;
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = conn_write(&k, head, (size_t)hl, err)) < 0 ||
        (blen && (rc = conn_write(&k, body, blen, err)) < 0) ||
        (rc = conn_read_all(&k, &raw, &rlen, err)) < 0)
        goto done;
    if ((rc = parse(raw, rlen, resp, err)) < 0)
        goto done;
    raw = NULL;                 /* the response owns it */
done:
    free(head);
    ss_free(raw);
    conn_close(&k);
    return rc;
}
