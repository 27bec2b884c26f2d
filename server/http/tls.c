/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS certificates of the listeners, and their reload on SIGHUP.
 *
 * DESIGN: libmicrohttpd loads a certificate once, when its daemon starts,
 * and has no call to change it; but it lets the application answer
 * GnuTLS's certificate-retrieve callback (MHD_OPTION_HTTPS_CERT_CALLBACK),
 * asked once per handshake.  So a listener's daemons start with that
 * callback and no certificate of their own, and the callback hands out
 * the store's current pair: the parsed chain (gnutls_pcert_st) and key.
 * GnuTLS does not copy what the callback returns and does not free it
 * either; the session points at it until it ends.  Hence a pair is
 * immutable and reference-counted: the store holds one reference, each
 * connection that was handed the pair holds one (http.c keeps it in the
 * connection's context and drops it when MHD reports the connection
 * closed).  A reload builds a whole new pair on a pool thread (file reads
 * and parsing never run on a loop thread), swaps the store's pointer under
 * a mutex on the main loop, and drops the store's reference to the old
 * pair: the old pair lives on exactly as long as the last connection that
 * was given it.  The mutex is held for a pointer load and an increment,
 * once per handshake (a handshake costs a signature, ~100 us or more), so
 * it is never contended in a way that shows.
 *
 * Files are read with open/fstat/read: a regular file of at most 1 MiB,
 * so a FIFO or a device named by mistake is refused instead of blocking
 * the pool thread forever.  The key must match the certificate (their
 * public key ids are compared), which catches a renewed certificate
 * installed without its new key before any client sees a failed
 * handshake.
 *
 * THREADS: see tls.h.  The reload's result fields (loaded, load_rc,
 * load_err) are written by the pool thread and read in the after-work
 * callback; libuv orders the two.
 */
#include "config.h"

#include "server/http/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>
#include <microhttpd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/refcount.h"

#define MAX_PEM_BYTES (1 << 20)
#define MAX_CHAIN 16

struct ss_tls_pair {
    ss_ref_t ref;
    gnutls_pcert_st *pcerts;
    unsigned int npcerts;
    gnutls_privkey_t key;
    time_t not_after;
    char serial[80];            /* hex */
};

struct ss_tls {
    char *name;
    char *cert_file;
    char *key_file;
    const char *priorities;     /* static */

    pthread_mutex_t lock;
    ss_tls_pair_t *cur;         /* guarded by lock; a reference */

    /* Reload, [loop] of the main loop. */
    uv_work_t work;
    bool running;
    bool again;
    ss_tls_pair_t *loaded;      /* written by the pool thread */
    int load_rc;
    ss_err_t load_err;

    ss_series_t *s_good, *s_bad, *s_not_after, *s_reload_ok;
};

int
ss_tls_metrics_init(ss_metrics_t *m, ss_tls_metrics_t *out)
{
    static const char *const l1[] = { "listener" };
    static const char *const l2[] = { "listener", "result" };

    out->reloads = ss_metrics_counter(
        m, "slimserve_tls_reloads_total",
        "Certificate reloads (SIGHUP) by listener and result (ok, error: "
        "the previous certificate is still served).", 2, l2);
    out->not_after = ss_metrics_gauge(
        m, "slimserve_tls_cert_not_after_seconds",
        "Expiry of the certificate served, seconds since the Unix epoch.",
        1, l1);
    out->reload_ok = ss_metrics_gauge(
        m, "slimserve_tls_last_reload_ok",
        "1 when the last certificate reload (or the start) succeeded, 0 "
        "when it failed and an older certificate is still served.", 1, l1);
    if (out->reloads == NULL || out->not_after == NULL ||
        out->reload_ok == NULL)
        return SS_ENOMEM;
    return 0;
}

/* ---- pairs --------------------------------------------------------------- */

static void
pair_unref(ss_tls_pair_t *p)
{
    unsigned int i;

    if (p == NULL || !ss_ref_put(&p->ref))
        return;
    for (i = 0; i < p->npcerts; i++)
        gnutls_pcert_deinit(&p->pcerts[i]);
    ss_free(p->pcerts);
    if (p->key != NULL)
        gnutls_privkey_deinit(p->key);
    ss_free(p);
}

/* Reads a whole regular file of at most MAX_PEM_BYTES into d (freed with
 * gnutls_free's counterpart, free()).  what names it in errors. */
static int
read_pem(const char *path, const char *what, gnutls_datum_t *d,
         ss_err_t *err)
{
    struct stat st;
    size_t got = 0;
    ssize_t n;
    int fd, rc = 0;

    d->data = NULL;
    d->size = 0;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return ss_err_set(err, SS_EIO, "%s %s: %s", what, path,
                          strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s %s: %s", what, path,
                        strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ss_err_set(err, SS_EINVAL, "%s %s: not a regular file", what,
                        path);
        goto done;
    }
    if (st.st_size <= 0 || st.st_size > MAX_PEM_BYTES) {
        rc = ss_err_set(err, SS_EINVAL, "%s %s: %s (%lld bytes)", what, path,
                        st.st_size <= 0 ? "empty" : "larger than 1 MiB",
                        (long long)st.st_size);
        goto done;
    }
    if ((d->data = malloc((size_t)st.st_size + 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory for %s", path);
        goto done;
    }
    while (got < (size_t)st.st_size) {
        n = read(fd, d->data + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = ss_err_set(err, SS_EIO, "%s %s: %s", what, path,
                            n < 0 ? strerror(errno) : "shorter than its size");
            goto done;
        }
        got += (size_t)n;
    }
    d->data[got] = '\0';
    d->size = (unsigned int)got;
done:
    if (rc < 0) {
        free(d->data);
        d->data = NULL;
        d->size = 0;
    }
    close(fd);
    return rc;
}

static void
wipe(gnutls_datum_t *d)
{
    if (d->data != NULL)
        gnutls_memset(d->data, 0, d->size);
    free(d->data);
    d->data = NULL;
    d->size = 0;
}

/* The public key id of pub into id (SHA-256), 0 or a GnuTLS error. */
static int
key_id(gnutls_pubkey_t pub, unsigned char *id, size_t *len)
{
    return gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, id, len);
}

/* Expiry and serial of the leaf certificate, for logs and metrics. */
static void
describe(ss_tls_pair_t *p)
{
    gnutls_x509_crt_t crt;
    unsigned char ser[40];
    size_t n = sizeof(ser), i;

    p->not_after = 0;
    snprintf(p->serial, sizeof(p->serial), "?");
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &p->pcerts[0].cert,
                               GNUTLS_X509_FMT_DER) == 0) {
        p->not_after = gnutls_x509_crt_get_expiration_time(crt);
        if (gnutls_x509_crt_get_serial(crt, ser, &n) == 0) {
            for (i = 0; i < n && 2 * i + 2 < sizeof(p->serial); i++)
                snprintf(p->serial + 2 * i, 3, "%02x", ser[i]);
        }
    }
    gnutls_x509_crt_deinit(crt);
}

/* [any, blocking] Reads, parses and checks a pair; a new reference. */
static int
load_pair(const char *cert_file, const char *key_file, ss_tls_pair_t **out,
          ss_err_t *err)
{
    gnutls_datum_t cd = { NULL, 0 }, kd = { NULL, 0 };
    gnutls_pubkey_t pub = NULL;
    unsigned char id1[64], id2[64];
    size_t n1 = sizeof(id1), n2 = sizeof(id2);
    ss_tls_pair_t *p = NULL;
    int rc, g;

    *out = NULL;
    if ((rc = read_pem(cert_file, "certificate file", &cd, err)) < 0 ||
        (rc = read_pem(key_file, "key file", &kd, err)) < 0)
        goto done;
    if ((p = ss_calloc(1, sizeof(*p))) == NULL ||
        (p->pcerts = ss_calloc(MAX_CHAIN, sizeof(*p->pcerts))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory for %s", cert_file);
        goto done;
    }
    ss_ref_init(&p->ref);
    p->npcerts = MAX_CHAIN;
    g = gnutls_pcert_list_import_x509_raw(p->pcerts, &p->npcerts, &cd,
                                          GNUTLS_X509_FMT_PEM, 0);
    if (g < 0 || p->npcerts == 0) {
        p->npcerts = 0;         /* GnuTLS released what it had made */
        rc = ss_err_set(err, SS_EINVAL, "certificate file %s: %s",
                        cert_file,
                        g < 0 ? gnutls_strerror(g) : "no certificate");
        goto done;
    }
    if ((g = gnutls_privkey_init(&p->key)) < 0 ||
        (g = gnutls_privkey_import_x509_raw(p->key, &kd, GNUTLS_X509_FMT_PEM,
                                            NULL, 0)) < 0) {
        rc = ss_err_set(err, SS_EINVAL, "key file %s: %s (a PEM private "
                        "key without a passphrase is expected)", key_file,
                        gnutls_strerror(g));
        goto done;
    }
    if ((g = gnutls_pubkey_init(&pub)) < 0 ||
        (g = gnutls_pubkey_import_privkey(pub, p->key, 0, 0)) < 0 ||
        (g = key_id(pub, id1, &n1)) < 0 ||
        (g = key_id(p->pcerts[0].pubkey, id2, &n2)) < 0) {
        rc = ss_err_set(err, SS_EINVAL, "key file %s: %s", key_file,
                        gnutls_strerror(g));
        goto done;
    }
    if (n1 != n2 || memcmp(id1, id2, n1) != 0) {
        rc = ss_err_set(err, SS_EINVAL, "key file %s does not belong to the "
                        "certificate in %s", key_file, cert_file);
        goto done;
    }
    describe(p);
    *out = p;
    p = NULL;
    rc = 0;
done:
    if (pub != NULL)
        gnutls_pubkey_deinit(pub);
    pair_unref(p);
    wipe(&kd);
    free(cd.data);
    return rc;
}

static const char *
when(time_t t, char *buf, size_t n)
{
    struct tm tm;

    if (t <= 0 || gmtime_r(&t, &tm) == NULL ||
        strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, n, "unknown");
    return buf;
}

static void
published(ss_tls_t *t, const ss_tls_pair_t *p, const char *how)
{
    char exp[32];

    ss_log_notice("%s listener: TLS certificate %s %s (serial %s, "
                  "expires %s)", t->name, t->cert_file, how, p->serial,
                  when(p->not_after, exp, sizeof(exp)));
    if (p->not_after > 0 && p->not_after < time(NULL))
        ss_log_warn("%s listener: the TLS certificate in %s has expired",
                    t->name, t->cert_file);
    if (t->s_not_after != NULL)
        ss_series_set(t->s_not_after, (double)p->not_after);
}

/* ---- stores -------------------------------------------------------------- */

static int
tls_supported(ss_err_t *err)
{
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
        MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES)
        return ss_err_set(err, SS_EUNSUPP, "TLS is configured, but this "
                          "libmicrohttpd was built without TLS (GnuTLS) or "
                          "without certificate callbacks");
    return 0;
}

int
ss_tls_check(const char *cert_file, const char *key_file, ss_err_t *err)
{
    ss_tls_pair_t *p;
    int rc;

    if ((rc = tls_supported(err)) < 0)
        return rc;
    if ((rc = load_pair(cert_file, key_file, &p, err)) < 0)
        return rc;
    pair_unref(p);
    return 0;
}

int
ss_tls_new(const char *name, const char *cert_file, const char *key_file,
           const char *min_version, const ss_tls_metrics_t *metrics,
           ss_tls_t **out, ss_err_t *err)
{
    ss_tls_t *t = NULL;
    int rc;

    *out = NULL;
    if ((rc = tls_supported(err)) < 0)
        return rc;
    if ((t = ss_calloc(1, sizeof(*t))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    pthread_mutex_init(&t->lock, NULL);
    t->name = ss_strdup(name);
    t->cert_file = ss_strdup(cert_file);
    t->key_file = ss_strdup(key_file);
    if (t->name == NULL || t->cert_file == NULL || t->key_file == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    /* Versions are listed from the top down; everything else is
     * GnuTLS's NORMAL set (no export or NULL ciphers, no RC4, no SSL 3). */
    if (min_version == NULL || strcmp(min_version, "1.2") == 0) {
        t->priorities = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
    } else if (strcmp(min_version, "1.3") == 0) {
        t->priorities = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
    } else {
        rc = ss_err_set(err, SS_EINVAL, "'tls_min_version' must be "
                        SS_TLS_MIN_VERSIONS ", not '%s'", min_version);
        goto done;
    }
    if ((rc = load_pair(cert_file, key_file, &t->cur, err)) < 0) {
        ss_err_wrap(err, rc, "%s listener", name);
        goto done;
    }
    if (metrics != NULL) {
        const char *l1[] = { name };
        const char *good[] = { name, "ok" }, *bad[] = { name, "error" };

        t->s_good = ss_metric_series(metrics->reloads, good);
        t->s_bad = ss_metric_series(metrics->reloads, bad);
        t->s_not_after = ss_metric_series(metrics->not_after, l1);
        t->s_reload_ok = ss_metric_series(metrics->reload_ok, l1);
        if (t->s_reload_ok != NULL)
            ss_series_set(t->s_reload_ok, 1);
    }
    published(t, t->cur, "loaded");
    *out = t;
    t = NULL;
done:
    ss_tls_free(t);
    return rc;
}

const char *
ss_tls_priorities(const ss_tls_t *t)
{
    return t->priorities;
}

static void
reload_work(uv_work_t *w)
{
    ss_tls_t *t = w->data;

    memset(&t->load_err, 0, sizeof(t->load_err));
    t->load_rc = load_pair(t->cert_file, t->key_file, &t->loaded,
                           &t->load_err);
}

static void
reload_done(uv_work_t *w, int status)
{
    ss_tls_t *t = w->data;
    ss_tls_pair_t *old;

    t->running = false;
    if (status < 0 || t->load_rc < 0) {
        pthread_mutex_lock(&t->lock);
        old = t->cur;
        ss_ref_get(&old->ref);
        pthread_mutex_unlock(&t->lock);
        ss_log_error("%s listener: TLS reload failed, still serving the "
                     "certificate with serial %s: %s", t->name, old->serial,
                     status < 0 ? "the reload was cancelled"
                                : t->load_err.msg);
        pair_unref(old);
        if (t->s_bad != NULL)
            ss_series_add(t->s_bad, 1);
        if (t->s_reload_ok != NULL)
            ss_series_set(t->s_reload_ok, 0);
    } else {
        pthread_mutex_lock(&t->lock);
        old = t->cur;
        t->cur = t->loaded;
        pthread_mutex_unlock(&t->lock);
        published(t, t->loaded, "reloaded");
        t->loaded = NULL;
        /* Connections handed the old pair keep it alive. */
        pair_unref(old);
        if (t->s_good != NULL)
            ss_series_add(t->s_good, 1);
        if (t->s_reload_ok != NULL)
            ss_series_set(t->s_reload_ok, 1);
    }
    if (t->again) {
        t->again = false;
        ss_tls_reload(t, w->loop);
    }
}

int
ss_tls_reload(ss_tls_t *t, uv_loop_t *loop)
{
    int rc;

    if (t == NULL)
        return 0;
    if (t->running) {
        /* The files may have changed after the running read began. */
        t->again = true;
        return 0;
    }
    t->work.data = t;
    t->loaded = NULL;
    if ((rc = uv_queue_work(loop, &t->work, reload_work, reload_done)) < 0) {
        ss_log_error("%s listener: cannot queue the TLS reload: %s",
                     t->name, uv_strerror(rc));
        return SS_EINTERNAL;
    }
    t->running = true;
    return 0;
}

int
ss_tls_select(ss_tls_t *t, ss_tls_hold_t *hold, gnutls_pcert_st **pcert,
              unsigned int *npcert, gnutls_privkey_t *key)
{
    ss_tls_pair_t *p;

    if (t == NULL || hold == NULL)
        return -1;
    pthread_mutex_lock(&t->lock);
    p = t->cur;
    ss_ref_get(&p->ref);
    pthread_mutex_unlock(&t->lock);
    /* A second handshake on the session (TLS 1.2 renegotiation) replaces
     * what the first was given, which GnuTLS no longer uses. */
    pair_unref(hold->pair);
    hold->pair = p;
    *pcert = p->pcerts;
    *npcert = p->npcerts;
    *key = p->key;
    return 0;
}

void
ss_tls_hold_release(ss_tls_hold_t *hold)
{
    if (hold == NULL)
        return;
    pair_unref(hold->pair);
    hold->pair = NULL;
}

void
ss_tls_free(ss_tls_t *t)
{
    if (t == NULL)
        return;
    pair_unref(t->cur);
    pair_unref(t->loaded);
    pthread_mutex_destroy(&t->lock);
    ss_free(t->name);
    ss_free(t->cert_file);
    ss_free(t->key_file);
    ss_free(t);
}
