/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the HTTP request path: libmicrohttpd, the router,
 * the data-plane and admin routes, auth, the inference glue, the KServe
 * codec, the batcher and a real registry serving the MLP fixture.
 *
 * Input: one byte choosing the listener (bit 0: admin), then the bytes a
 * client sends on one connection.  The listeners are the daemon's own
 * (ss_http_start on a loop of this process, no thread of their own); each
 * input is handed to MHD as a new connection on one end of a socketpair
 * (MHD_add_connection), written to the other end, which is
 * half-closed once the server rests, and the loop is driven until the
 * server closes the connection.  A connection the server never closes is a hang (abort).
 * What comes back must be a sequence of well-formed responses: a status
 * line "HTTP/1.x NNN ", headers, and a JSON body (or the JSON header of a
 * binary-extension body) that parses wherever the content type says JSON.
 *
 * http.c is compiled into this file (run.sh leaves it out of the
 * archive) to reach the MHD daemon of a listener's loop; nothing in it is
 * changed.
 *
 * State: the admin API can unload, load, activate and compress.  After an
 * input that changed anything (a job queued, a model not ready, the model
 * folder or its config.json changed), the registry and jobs are rebuilt
 * from a fresh copy of the repository, so every input starts from the
 * same server.
 *
 * SS_FUZZ_SRCDIR (compiled in, or from the environment) locates
 * tests/fixtures; SS_FUZZ_HTTP_PRINT=1 prints each response (the start
 * of it) to stderr.
 */

#include "server/http/http.c"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <zlib.h>

#include "common/log.h"
#include "server/server.h"

#ifndef SS_FUZZ_SRCDIR
#define SS_FUZZ_SRCDIR "."
#endif

#define TOKEN "fuzz-token"
#define HANG_MS 10000           /* a connection not closed by then */
#define RESP_MAX (64u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static ss_config_t cfg;
static ss_server_t srv;
static char tmpdir[64], repo[96], mfolder[128], model_src[4096];
static bool scanned;

static uint64_t
ms_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
die(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

static void
copy_file(const char *from, const char *to)
{
    char buf[65536];
    ssize_t n;
    int in, out;

    if ((in = open(from, O_RDONLY)) < 0)
        die("cannot open the MLP fixture (set SS_FUZZ_SRCDIR)");
    if ((out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        die("cannot write the repository");
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            die("short write");
    close(in);
    close(out);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    return remove(path);
}

/* repo/mlp/1/model.onnx and nothing else. */
/* At exit: the temporary repository and token go (the daemon's threads
 * may still run; nothing reads these files by then but a job, which only
 * fails). */
static void
remove_tmpdir(void)
{
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
make_repo(void)
{
    char p[256];

    nftw(mfolder, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(repo, 0755);
    mkdir(mfolder, 0755);
    snprintf(p, sizeof(p), "%s/1", mfolder);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/1/model.onnx", mfolder);
    copy_file(model_src, p);
}

/* What the admin API can change on disk: the model folder's entries
 * (versions made by jobs) and its config.json (activations). */
static long
disk_state(void)
{
    char p[256];
    struct stat st;
    long n = 0;

    if (stat(mfolder, &st) == 0)
        n = (long)st.st_nlink * 1000003L + (long)st.st_mtime;
    snprintf(p, sizeof(p), "%s/config.json", mfolder);
    if (stat(p, &st) == 0)
        n += 7;
    return n;
}

static long base_disk;

static void
on_scanned(void *arg, int rc, const ss_err_t *err)
{
    scanned = true;
}

static void
run_until(bool *flag)
{
    uint64_t t0 = ms_now();

    while (!*flag) {
        uv_run(&loop, UV_RUN_ONCE);
        if (ms_now() - t0 > 60000)
            die("the registry did not settle in 60 s");
    }
}

static void
registry_up(void)
{
    ss_registry_opts_t ro = {
        .loop = &loop,
        .repository = repo,
        .default_threads = 1,
        .metrics = srv.metrics,
        .batch_metrics = &srv.batch_metrics,
    };
    ss_err_t err = { 0 };

    make_repo();
    if (ss_registry_new(&ro, &srv.registry, &err) < 0 ||
        ss_jobs_new(&loop, srv.registry, repo, 1, cfg.max_job_data_bytes,
                    NULL, &srv.jobs, &err) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
    scanned = false;
    ss_registry_scan(srv.registry, on_scanned, NULL);
    run_until(&scanned);
    if (!ss_registry_ready(srv.registry) ||
        ss_registry_model_count(srv.registry) != 1)
        die("the MLP fixture did not load");
    srv.ready = true;
    base_disk = disk_state();
}

static void
registry_down(void)
{
    uint64_t t0 = ms_now();

    ss_jobs_free(srv.jobs);
    srv.jobs = NULL;
    ss_registry_close(srv.registry);
    while (!ss_registry_idle(srv.registry)) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
        if (ms_now() - t0 > 60000)
            die("the registry did not close in 60 s");
    }
    ss_registry_free(srv.registry);
    srv.registry = NULL;
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* At a normal exit (after libFuzzer's last run, before LeakSanitizer's
 * exit-time check): the registry goes down as between inputs, so its
 * threads (executors, their OpenMP workers, the reaper, the job thread)
 * end and give back their per-thread state, libgomp's included.  Left
 * running, a thread created after the process had used up the kernel's
 * thread ids (every rebuild starts new ones: a long campaign makes
 * millions) can be missed by LeakSanitizer, which then reports what only
 * that thread's TLS points to (tests/fuzz/README, "Exit-time leak
 * reports"); and the teardown's own frees are checked too. */
static void
teardown(void)
{
    if (srv.registry != NULL)
        registry_down();
}

static void
listener(const char *name, ss_http_handler_fn fn, ss_http_t **out)
{
    ss_http_opts_t o = {
        .name = name,
        .address = "127.0.0.1",
        .port = 0,
        .loops = 0,
        .max_body_bytes = cfg.max_body_bytes,
        .max_header_bytes = cfg.max_header_bytes,
        .max_connections = cfg.max_connections,
        .idle_timeout_s = cfg.connection_timeout_s,
        .header_timeout_s = cfg.header_timeout_s,
        .body_timeout_s = cfg.body_timeout_s,
        .keepalive_timeout_s = cfg.keepalive_timeout_s,
        .retry_after_s = cfg.retry_after_s,
        .budget = srv.budget,
        .handler = fn,
        .arg = &srv,
        .metrics = &srv.http_metrics,
    };
    ss_err_t err = { 0 };

    if (ss_http_start(&loop, &o, out, &err) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("SS_FUZZ_SRCDIR");
    char tok[128], a_repo[160], a_tok[160];
    char *args[] = { "fuzz_http", a_repo, a_tok, "--log-level=error",
                     "--max-body-bytes=4194304",
                     "--max-buffered-bytes=67108864", NULL };
    ss_err_t err = { 0 };
    FILE *f;

    snprintf(model_src, sizeof(model_src), "%s/tests/fixtures/mlp_op17/"
             "model.onnx", dir != NULL ? dir : SS_FUZZ_SRCDIR);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ss-fuzz-http.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        die("mkdtemp");
    atexit(remove_tmpdir);
    snprintf(repo, sizeof(repo), "%s/repo", tmpdir);
    snprintf(mfolder, sizeof(mfolder), "%s/mlp", repo);
    snprintf(tok, sizeof(tok), "%s/token", tmpdir);
    if ((f = fopen(tok, "w")) == NULL)
        die("cannot write the token");
    fputs(TOKEN "\n", f);
    fclose(f);
    chmod(tok, 0600);
    snprintf(a_repo, sizeof(a_repo), "--model-repository=%s", repo);
    snprintf(a_tok, sizeof(a_tok), "--admin-token-file=%s", tok);
    if (ss_config_load(&cfg, 6, args, &err) != SS_CONFIG_RUN) {
        fprintf(stderr, "fuzz_http: config: %s\n", err.msg);
        abort();
    }
    ss_log_init(cfg.log_level);

    uv_loop_init(&loop);
    srv.loop = &loop;
    srv.cfg = &cfg;
    srv.start_wall = (double)time(NULL);
    if ((srv.budget = ss_http_budget_new(cfg.max_buffered_bytes)) == NULL ||
        (srv.metrics = ss_metrics_new()) == NULL ||
        ss_http_metrics_init(srv.metrics, &srv.http_metrics) < 0 ||
        ss_batch_metrics_init(srv.metrics, &srv.batch_metrics) < 0 ||
        ss_infer_metrics_init(srv.metrics, &srv.infer_metrics) < 0)
        die("out of memory");
    if (ss_auth_load(&srv.auth, cfg.admin_token_file, &err) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err.msg);
        abort();
    }
    listener("http", ss_routes_data, &srv.http);
    listener("admin", ss_routes_admin, &srv.admin);
    registry_up();
    atexit(teardown);           /* runs before remove_tmpdir */
    return 0;
}

/* ---- responses --------------------------------------------------------- */

static const char *
find(const char *p, const char *end, const char *s)
{
    size_t n = strlen(s);

    for (; p + n <= end; p++)
        if (memcmp(p, s, n) == 0)
            return p;
    return NULL;
}

/* The value of header name in [h, end) (the header block), or NULL. */
static const char *
header(const char *h, const char *end, const char *name, size_t *len)
{
    size_t n = strlen(name);
    const char *eol;

    while (h < end) {
        if ((eol = find(h, end, "\r\n")) == NULL)
            eol = end;
        if ((size_t)(eol - h) > n && strncasecmp(h, name, n) == 0 &&
            h[n] == ':') {
            h += n + 1;
            while (h < eol && *h == ' ')
                h++;
            *len = (size_t)(eol - h);
            return h;
        }
        h = eol + 2;
    }
    return NULL;
}

/* Response bodies are JSON with NaN, Infinity and -Infinity allowed as
 * numbers (as Python's json writes them; README "NaN and infinity"):
 * outside strings those become numbers of the same length, then the
 * body must parse. */
static void
check_json(const char *p, size_t n)
{
    static char *copy;
    static size_t cap;
    json_error_t jerr;
    bool in_str = false;
    json_t *j;
    size_t i;

    if (n > cap) {
        free(copy);
        cap = n;
        if ((copy = malloc(cap)) == NULL)
            die("out of memory");
    }
    memcpy(copy, p, n);
    for (i = 0; i < n; i++) {
        if (in_str) {
            if (copy[i] == '\\')
                i++;
            else if (copy[i] == '"')
                in_str = false;
        } else if (copy[i] == '"') {
            in_str = true;
        } else if (n - i >= 3 && memcmp(copy + i, "NaN", 3) == 0) {
            memcpy(copy + i, "0  ", 3);
        } else if (n - i >= 8 && memcmp(copy + i, "Infinity", 8) == 0) {
            memcpy(copy + i, "1       ", 8);
        }
    }
    if ((j = json_loadb(copy, n, 0, &jerr)) == NULL) {
        fprintf(stderr, "fuzz_http: a JSON body does not parse: %s: "
                "%.*s\n", jerr.text, (int)(n > 400 ? 400 : n), p);
        abort();
    }
    json_decref(j);
}

/* A body with Content-Encoding (gzip or deflate, as Accept-Encoding
 * asked): decoded, in a new buffer (*n its length), or abort. */
static char *
decode_body(const char *p, size_t len, size_t *n)
{
    z_stream z;
    size_t cap = 1 << 16;
    char *out = malloc(cap);
    int zr = Z_OK;

    memset(&z, 0, sizeof(z));
    if (out == NULL || inflateInit2(&z, 15 + 32) != Z_OK)
        die("out of memory");
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)len;
    while (zr == Z_OK) {
        if (z.total_out == cap && (out = realloc(out, cap *= 2)) == NULL)
            die("out of memory");
        z.next_out = (Bytef *)out + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out);
        zr = inflate(&z, Z_FINISH);
        if (zr == Z_BUF_ERROR && z.avail_out == 0)
            zr = Z_OK;
    }
    if (zr != Z_STREAM_END || z.avail_in != 0)
        die("a coded body does not decode");
    *n = z.total_out;
    inflateEnd(&z);
    return out;
}

/* Every response in buf, in order.  A body missing its bytes ends the
 * check (a HEAD answer has a Content-Length and no body). */
static void
check_responses(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len, *start, *hend, *v;
    unsigned long long clen;
    size_t vlen;

    while (p < end) {
        start = p;
        if (end - p < 13 || (memcmp(p, "HTTP/1.1 ", 9) != 0 &&
                             memcmp(p, "HTTP/1.0 ", 9) != 0) ||
            p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
            p[11] < '0' || p[11] > '9' || p[12] != ' ') {
            fprintf(stderr, "fuzz_http: not a status line: %.*s\n",
                    (int)(end - p > 80 ? 80 : end - p), p);
            abort();
        }
        if ((hend = find(p, end, "\r\n\r\n")) == NULL)
            die("a response's headers do not end");
        p = hend + 4;
        if ((v = header(start, hend, "Content-Length", &vlen)) == NULL)
            return;             /* MHD closes after a body without one */
        clen = strtoull(v, NULL, 10);
        if (clen > (unsigned long long)(end - p) ||
            (clen >= 5 && memcmp(p, "HTTP/", 5) == 0))
            return;             /* HEAD: no body follows */
        {
            size_t bn = (size_t)clen;
            char *dec = header(start, hend, "Content-Encoding", &vlen)
                        ? decode_body(p, bn, &bn) : NULL;
            const char *b = dec != NULL ? dec : p;

            if ((v = header(start, hend, "Content-Type", &vlen)) != NULL &&
                vlen >= 16 && strncmp(v, "application/json", 16) == 0) {
                check_json(b, bn);
            } else if ((v = header(start, hend,
                                   "Inference-Header-Content-Length",
                                   &vlen)) != NULL) {
                unsigned long long jl = strtoull(v, NULL, 10);

                if (jl > bn)
                    die("Inference-Header-Content-Length beyond the body");
                check_json(b, (size_t)jl);
            }
            free(dec);
        }
        p += clen;
    }
}

/* ---- one connection ---------------------------------------------------- */

/* True while a request of h waits for another thread (a batch, a
 * registry operation): the server is not at rest. */
static bool
suspended(ss_http_t *h)
{
    const union MHD_ConnectionInfo *ci;
    conn_t *k;

    for (k = h->loops[0].conns; k != NULL; k = k->next) {
        ci = MHD_get_connection_info(
            k->c, MHD_CONNECTION_INFO_CONNECTION_SUSPENDED);
        if (ci != NULL && ci->suspended == MHD_YES)
            return true;
    }
    return ss_queue_len(&h->loops[0].done) > 0;
}

/* Rebuilds the registry and jobs when the input changed their state. */
static void
restore(void)
{
    if (!ss_jobs_busy(srv.jobs) && ss_registry_ready(srv.registry) &&
        ss_registry_model_count(srv.registry) == 1 &&
        disk_state() == base_disk)
        return;
    registry_down();
    registry_up();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *resp;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    ss_http_t *h;
    size_t off = 0, rlen = 0;
    bool shut = false;
    uint64_t t0;
    int sv[2];

    if (size < 1)
        return 0;
    h = (data[0] & 1) ? srv.admin : srv.http;
    data++;
    size--;
    if (resp == NULL && (resp = malloc(RESP_MAX)) == NULL)
        die("out of memory");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv) < 0)
        die("socketpair");
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(40000);
    /* MHD owns sv[0] from here, success or not. */
    if (MHD_add_connection(h->loops[0].d, sv[0], (struct sockaddr *)&sin,
                           sizeof(sin)) != MHD_YES) {
        close(sv[1]);
        return 0;
    }
    /* MHD (turbo mode) puts an added connection on its ready list, not
     * in its epoll set: nothing wakes the loop until it runs once. */
    ss__http_drive(&h->loops[0]);
    t0 = ms_now();
    for (;;) {
        ssize_t n;
        bool progress = false;

        if (off < size) {
            n = write(sv[1], data + off, size - off);
            if (n > 0) {
                off += (size_t)n;
                progress = true;
            }
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        for (;;) {
            char sink[65536];
            char *to = rlen < RESP_MAX ? resp + rlen : sink;
            size_t room = rlen < RESP_MAX ? RESP_MAX - rlen : sizeof(sink);

            n = read(sv[1], to, room);
            if (n <= 0)
                break;
            if (to != sink)
                rlen += (size_t)n;
            progress = true;
        }
        if (n == 0)
            break;              /* the server closed the connection */
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            break;              /* reset */
        if (ms_now() - t0 > HANG_MS)
            die("the server never closed the connection");
        /* The client half-closes once everything is sent and the server
         * rests (nothing in flight, nothing due): MHD (edge-triggered)
         * sees the end of the stream only as a new event, as when a
         * client's FIN comes after its request.  (A request still
         * waiting for its body is at rest too: it is cut.) */
        if (!progress && off == size && !shut && !suspended(h) &&
            uv_backend_timeout(&loop) != 0) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
            continue;
        }
        if (!progress) {
            struct pollfd pf[2] = {
                { .fd = sv[1], .events = POLLIN },
                { .fd = uv_backend_fd(&loop), .events = POLLIN },
            };
            int ms = uv_backend_timeout(&loop);

            poll(pf, 2, ms < 0 || ms > 20 ? 20 : ms);
        }
    }
    close(sv[1]);
    /* Until MHD has let the connection go (it may still hold pipelined
     * requests it had read): a rebuild must not find it serving. */
    while (h->loops[0].nconns > 0) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (h->loops[0].nconns > 0)
            poll(NULL, 0, 1);
        if (ms_now() - t0 > HANG_MS)
            die("the server never let the connection go");
    }
    if (getenv("SS_FUZZ_HTTP_PRINT") != NULL)
        fprintf(stderr, "%.*s\n----\n", (int)(rlen > 4000 ? 4000 : rlen),
                resp);
    if (rlen < RESP_MAX)
        check_responses(resp, rlen);
    restore();
    return 0;
}
