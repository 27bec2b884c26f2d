/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Configuration: defaults, JSON file, flags.
 *
 * DESIGN: a single table describes each key (type, bounds, help).  The
 * file loader walks the JSON object and looks every key up in the table;
 * the flag parser turns "--http-port=8000" or "--http-port 8000" into the
 * key "http_port" and the text "8000" and goes through the same setter.
 * Booleans given as flags take no value ("--admin-insecure").
 *
 * THREADS: [init] only.
 */
#include "config.h"

#include "server/cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/log.h"

#ifndef SS_DEFAULT_CONFIG
#define SS_DEFAULT_CONFIG "conf/slimserve.json"
#endif

typedef enum { T_STR, T_INT, T_INT64, T_BOOL, T_DOUBLE, T_LEVEL } ktype_t;

typedef struct {
    const char *key;
    ktype_t type;
    size_t off;
    double min, max;
    const char *arg;    /* metavariable for --help */
    const char *help;
} key_t_;

#define OFF(f) offsetof(ss_config_t, f)

static const key_t_ keys[] = {
    { "model_repository", T_STR, OFF(model_repository), 0, 0, "DIR",
      "model repository folder" },
    { "http_address", T_STR, OFF(http_address), 0, 0, "ADDR",
      "data-plane listen address (IPv4 or IPv6)" },
    { "http_port", T_INT, OFF(http_port), 0, 65535, "N",
      "data-plane port; 0 picks a free one" },
    { "admin_address", T_STR, OFF(admin_address), 0, 0, "ADDR",
      "admin listen address" },
    { "admin_port", T_INT, OFF(admin_port), -1, 65535, "N",
      "admin port; 0 picks a free one, -1 disables the admin listener" },
    { "admin_token_file", T_STR, OFF(admin_token_file), 0, 0, "FILE",
      "file holding the admin bearer token (not world-readable)" },
    { "admin_insecure", T_BOOL, OFF(admin_insecure), 0, 0, NULL,
      "serve the admin API without a token (explicit opt-in)" },
    { "admin_allow_plaintext", T_BOOL, OFF(admin_allow_plaintext), 0, 0,
      NULL, "let the admin listener serve plain HTTP on an address other "
      "than loopback (refused without it)" },
    { "http_tls_cert_file", T_STR, OFF(http_tls_cert_file), 0, 0, "FILE",
      "PEM certificate chain of the data plane: serve HTTPS (with "
      "--http-tls-key-file; reread on SIGHUP)" },
    { "http_tls_key_file", T_STR, OFF(http_tls_key_file), 0, 0, "FILE",
      "PEM private key of the data plane's certificate" },
    { "admin_tls_cert_file", T_STR, OFF(admin_tls_cert_file), 0, 0, "FILE",
      "PEM certificate chain of the admin listener: serve HTTPS (with "
      "--admin-tls-key-file; reread on SIGHUP)" },
    { "admin_tls_key_file", T_STR, OFF(admin_tls_key_file), 0, 0, "FILE",
      "PEM private key of the admin listener's certificate" },
    { "tls_min_version", T_STR, OFF(tls_min_version), 0, 0, "V",
      "oldest TLS version accepted: 1.2 or 1.3" },
    { "threads", T_INT, OFF(threads), 0, 1024, "N",
      "compute threads; 0 means one per core" },
    { "http_threads", T_INT, OFF(http_threads), 0, 1024, "N",
      "HTTP loop threads of the data plane; 0 means one per serving core" },
    { "job_threads", T_INT, OFF(job_threads), 0, 1024, "N",
      "CPUs reserved for compression jobs, away from serving (0: no "
      "partition, jobs use every CPU)" },
    { "job_priority", T_STR, OFF(job_priority), 0, 0, "P",
      "scheduling of compression jobs' threads: batch (SCHED_BATCH, nice "
      "+10), idle (SCHED_IDLE: only CPU time serving leaves) or normal" },
    { "job_min_share", T_DOUBLE, OFF(job_min_share), 0, 1, "F",
      "a compression job waits while requests are in flight, but keeps "
      "this fraction of its time for computing (1: never waits; 0: waits "
      "as long as the load lasts, the default)" },
    { "log_level", T_LEVEL, OFF(log_level), 0, 0, "LEVEL",
      "error, warning, notice, info or debug" },
    { "max_body_bytes", T_INT64, OFF(max_body_bytes), 1, 1099511627776.0,
      "N", "largest request body accepted (413 above)" },
    { "max_response_bytes", T_INT64, OFF(max_response_bytes), 0,
      1099511627776.0, "N", "largest inference response, counted before "
      "it is computed or written (413 above; 0: no limit; default 4 times "
      "max_body_bytes); a model's config.json may set its own" },
    { "max_coded_response_bytes", T_INT64, OFF(max_coded_response_bytes),
      0, 1099511627776.0, "N", "an inference answer is coded as the "
      "client's Accept-Encoding asks (gzip, deflate) only up to this many "
      "bytes, on the executor; a larger one is sent as it is, without "
      "Content-Encoding (0: no cap; default 8 MiB, ~0.3 s of an executor "
      "for JSON floats at zlib level 1)" },
    { "idle_release_ms", T_INT64, OFF(idle_release_ms), 0, 86400000.0,
      "MS", "an executor idle this long since its last batch gives back "
      "its buffers (intermediates, batch copies: what an outlier left); "
      "the next request pays their allocation and page faults, ~1 ms per "
      "MiB (0: never; default 10000)" },
    { "max_plan_bytes", T_INT64, OFF(max_plan_bytes), 0, 1099511627776.0,
      "N", "memory one request's compiled plan may take: any one value, "
      "and its intermediates plus folded constants together; over it the "
      "request gets 413 naming the node and nothing is computed or kept "
      "(0: the engine's default, SS_ENGINE_MAX_PLAN_BYTES or 4 GiB); a "
      "model's config.json may set its own" },
    { "max_buffered_bytes", T_INT64, OFF(max_buffered_bytes), 0,
      1099511627776.0, "N", "request body bytes held in memory over all "
      "connections; a body beyond it gets 503 (0: no cap)" },
    { "max_job_data_bytes", T_INT64, OFF(max_job_data_bytes), 1,
      1099511627776.0, "N", "largest calibration or validation file a "
      "compression job reads (and the arrays in it)" },
    { "max_header_bytes", T_INT, OFF(max_header_bytes), 1024, 1048576, "N",
      "memory for a request's headers" },
    { "max_connections", T_INT, OFF(max_connections), 1, 1000000, "N",
      "simultaneous connections per listener" },
    { "max_connections_per_ip", T_INT, OFF(max_connections_per_ip), 0,
      1000000, "N", "simultaneous data-plane connections from one client "
      "address (0: no limit)" },
    { "connection_timeout_s", T_INT, OFF(connection_timeout_s), 0, 86400,
      "N", "close a connection without I/O for this long (0: never)" },
    { "keepalive_timeout_s", T_INT, OFF(keepalive_timeout_s), 0, 86400,
      "N", "close a kept-alive connection idle this long between requests "
      "(0: never)" },
    { "header_timeout_s", T_INT, OFF(header_timeout_s), 0, 86400, "N",
      "a request's headers must arrive within this time (0: no limit)" },
    { "body_timeout_s", T_INT, OFF(body_timeout_s), 0, 86400, "N",
      "a request's body must arrive within this time (0: no limit)" },
    { "retry_after_s", T_INT, OFF(retry_after_s), 1, 3600, "N",
      "the Retry-After of 503 answers (overload, not ready)" },
    { "reject_non_finite", T_BOOL, OFF(reject_non_finite), 0, 0, NULL,
      "refuse NaN and Inf inputs (400) for models whose config.json does "
      "not say (its reject_non_finite wins)" },
    { "role", T_STR, OFF(role), 0, 0, "ROLE",
      "primary (runs jobs, writes versions and activations) or replica "
      "(serves the shared repository read-only; admin writes get 409)" },
    { "primary_url", T_STR, OFF(primary_url), 0, 0, "URL",
      "the primary's admin URL, named in a replica's 409 answers" },
    { "repository_poll_s", T_DOUBLE, OFF(repository_poll_s), 0, 86400, "S",
      "look for new versions and activations in the repository this "
      "often (0: only at start and on SIGHUP; replicas default to 2)" },
    { "shutdown_grace_s", T_DOUBLE, OFF(shutdown_grace_s), 0, 3600, "S",
      "how long SIGTERM waits for in-flight requests" },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const key_t_ *
find_key(const char *name)
{
    size_t i;

    for (i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, name) == 0)
            return &keys[i];
    return NULL;
}

static int
set_str(char **slot, const char *v, ss_err_t *err)
{
    char *d = ss_strdup(v);

    if (d == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    ss_free(*slot);
    *slot = d;
    return 0;
}

static int
parse_int(const key_t_ *k, const char *text, double *out, ss_err_t *err)
{
    char *end;
    long long v;

    *out = 0;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return ss_err_set(err, SS_EINVAL, "'%s' must be an integer, not '%s'",
                          k->key, text);
    *out = (double)v;
    return 0;
}

/* Stores a numeric value after checking its type's bounds. */
static int
set_number(ss_config_t *cfg, const key_t_ *k, double v, ss_err_t *err)
{
    char *base = (char *)cfg;

    /* Written so that NaN ("--shutdown-grace-s=nan", strtod takes it)
     * fails too: it compares false with everything. */
    if (!(v >= k->min && v <= k->max))
        return ss_err_set(err, SS_EINVAL, "'%s' must be in %.15g..%.15g, not %.15g",
                          k->key, k->min, k->max, v);
    switch (k->type) {
    case T_INT:
        *(int *)(base + k->off) = (int)v;
        break;
    case T_INT64:
        *(int64_t *)(base + k->off) = (int64_t)v;
        break;
    case T_DOUBLE:
        *(double *)(base + k->off) = v;
        break;
    default:
        SS_ASSERT(!"set_number called for a key that is not numeric");
    }
    return 0;
}

/* Applies one value given as text (a flag). */
static int
set_text(ss_config_t *cfg, const key_t_ *k, const char *text, ss_err_t *err)
{
    char *base = (char *)cfg;
    double v = 0;
    char *end;
    int rc;

    switch (k->type) {
    case T_STR:
        if (text[0] == '\0')
            return ss_err_set(err, SS_EINVAL, "'%s' must not be empty",
                              k->key);
        return set_str((char **)(base + k->off), text, err);
    case T_INT:
    case T_INT64:
        if ((rc = parse_int(k, text, &v, err)) < 0)
            return rc;
        return set_number(cfg, k, v, err);
    case T_DOUBLE:
        errno = 0;
        v = strtod(text, &end);
        if (errno != 0 || end == text || *end != '\0')
            return ss_err_set(err, SS_EINVAL, "'%s' must be a number, not '%s'",
                              k->key, text);
        return set_number(cfg, k, v, err);
    case T_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
            *(bool *)(base + k->off) = true;
        else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
            *(bool *)(base + k->off) = false;
        else
            return ss_err_set(err, SS_EINVAL,
                              "'%s' must be true or false, not '%s'", k->key,
                              text);
        return 0;
    case T_LEVEL:
        if (ss_log_level_parse(text, (int *)(base + k->off)) < 0)
            return ss_err_set(err, SS_EINVAL,
                              "'%s' must be error, warning, notice, info or "
                              "debug, not '%s'", k->key, text);
        return 0;
    }
    SS_ASSERT(!"a key of a type the switch above does not know");
}

/* Applies one value from the JSON file. */
static int
set_json(ss_config_t *cfg, const key_t_ *k, json_t *v, ss_err_t *err)
{
    char *base = (char *)cfg;

    switch (k->type) {
    case T_STR:
    case T_LEVEL:
        if (!json_is_string(v))
            return ss_err_set(err, SS_EINVAL, "'%s' must be a string", k->key);
        return set_text(cfg, k, json_string_value(v), err);
    case T_INT:
    case T_INT64:
        if (!json_is_integer(v))
            return ss_err_set(err, SS_EINVAL, "'%s' must be an integer",
                              k->key);
        return set_number(cfg, k, (double)json_integer_value(v), err);
    case T_DOUBLE:
        if (!json_is_number(v))
            return ss_err_set(err, SS_EINVAL, "'%s' must be a number", k->key);
        return set_number(cfg, k, json_number_value(v), err);
    case T_BOOL:
        if (!json_is_boolean(v))
            return ss_err_set(err, SS_EINVAL, "'%s' must be true or false",
                              k->key);
        *(bool *)(base + k->off) = json_is_true(v);
        return 0;
    }
    SS_ASSERT(!"a key of a type the switch above does not know");
}

static int
load_file(ss_config_t *cfg, const char *path, ss_err_t *err)
{
    json_error_t jerr;
    const char *key;
    json_t *root, *v;
    int rc = 0;

    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return ss_err_set(err, SS_EINVAL, "config %s: line %d: %s", path,
                          jerr.line, jerr.text);
    if (!json_is_object(root)) {
        rc = ss_err_set(err, SS_EINVAL, "config %s: must be a JSON object",
                        path);
        goto done;
    }
    json_object_foreach(root, key, v) {
        const key_t_ *k = find_key(key);

        if (k == NULL) {
            rc = ss_err_set(err, SS_EINVAL, "config %s: unknown key '%s'",
                            path, key);
            goto done;
        }
        if ((rc = set_json(cfg, k, v, err)) < 0) {
            ss_err_wrap(err, rc, "config %s", path);
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

static void
defaults(ss_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->http_port = 8000;
    cfg->admin_port = 8001;
    cfg->threads = 0;
    cfg->job_threads = 1;
    cfg->job_min_share = 0.0;
    cfg->log_level = SS_LOG_INFO;
    cfg->max_body_bytes = 64 << 20;
    cfg->max_buffered_bytes = (int64_t)256 << 20;
    cfg->max_response_bytes = -1;       /* 4 x max_body_bytes, validate() */
    /* zlib level 1 took 31 ms/MB of FP32 JSON, 83 ms/MB of binary FP32
     * at load 16 on the 2-vCPU test machine (session 28): 8 MiB holds an
     * executor 0.3-0.7 s; max_response_bytes' 256 MiB uncapped 8-21 s */
    cfg->max_coded_response_bytes = (int64_t)8 << 20;
    cfg->max_job_data_bytes = (int64_t)1 << 30;
    cfg->idle_release_ms = 10000;     /* SS_EXEC_IDLE_RELEASE_MS, pool.c */
    cfg->max_header_bytes = 32 << 10;
    cfg->max_connections = 1024;
    cfg->max_connections_per_ip = 256;
    cfg->connection_timeout_s = 60;
    cfg->keepalive_timeout_s = 30;
    cfg->header_timeout_s = 30;
    cfg->body_timeout_s = 120;
    cfg->retry_after_s = 1;
    cfg->shutdown_grace_s = 30;
    cfg->repository_poll_s = -1;        /* by role, see validate() */
}

/* Fills defaults that are strings (so every string is owned). */
static int
default_strings(ss_config_t *cfg, ss_err_t *err)
{
    int rc = 0;

    if (cfg->model_repository == NULL)
        rc = set_str(&cfg->model_repository, "conf/models", err);
    if (rc == 0 && cfg->http_address == NULL)
        rc = set_str(&cfg->http_address, "0.0.0.0", err);
    if (rc == 0 && cfg->admin_address == NULL)
        rc = set_str(&cfg->admin_address, "127.0.0.1", err);
    if (rc == 0 && cfg->tls_min_version == NULL)
        rc = set_str(&cfg->tls_min_version, "1.2", err);
    if (rc == 0 && cfg->job_priority == NULL)
        rc = set_str(&cfg->job_priority, "batch", err);
    if (rc == 0 && cfg->role == NULL)
        rc = set_str(&cfg->role, "primary", err);
    return rc;
}

void
ss_config_usage(const char *prog)
{
    size_t i;

    printf("Usage: %s [OPTION]...\n"
           "Serve ONNX models over the KServe V2 REST API.\n\n"
           "  --config=FILE            JSON config (default %s; keys are\n"
           "                           the option names with '_' for '-')\n"
           "  --check-config           validate the configuration and exit\n"
           "  --help                   show this help and exit\n"
           "  --version                show the version and exit\n",
           prog, SS_DEFAULT_CONFIG);
    for (i = 0; i < NKEYS; i++) {
        char flag[64], *p;

        snprintf(flag, sizeof(flag), "--%s%s%s", keys[i].key,
                 keys[i].arg ? "=" : "", keys[i].arg ? keys[i].arg : "");
        for (p = flag; *p; p++)
            if (*p == '_')
                *p = '-';
        printf("  %-24s %s\n", flag, keys[i].help);
    }
}

/* Finds --config in argv before anything else, since flags override the
 * file whatever their order. */
static int
find_config_flag(int argc, char **argv, const char **path, ss_err_t *err)
{
    int i;

    *path = NULL;
    for (i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        } else if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return ss_err_set(err, SS_EINVAL, "--config needs a FILE");
            *path = argv[++i];
        }
    }
    if (*path != NULL && (*path)[0] == '\0')
        return ss_err_set(err, SS_EINVAL, "--config needs a FILE");
    return 0;
}

static int
apply_flags(ss_config_t *cfg, int argc, char **argv, ss_err_t *err)
{
    int i, rc;

    for (i = 1; i < argc; i++) {
        char name[64];
        const char *arg = argv[i], *eq, *val = NULL;
        const key_t_ *k;
        size_t n, j;

        if (strcmp(arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strcmp(arg, "--check-config") == 0) {
            cfg->check_only = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return ss_err_set(err, SS_EINVAL, "unexpected argument '%s'", arg);
        arg += 2;
        eq = strchr(arg, '=');
        n = eq ? (size_t)(eq - arg) : strlen(arg);
        if (n == 0 || n >= sizeof(name))
            return ss_err_set(err, SS_EINVAL, "unknown option '%s'", argv[i]);
        for (j = 0; j < n; j++)
            name[j] = arg[j] == '-' ? '_' : arg[j];
        name[n] = '\0';
        if ((k = find_key(name)) == NULL)
            return ss_err_set(err, SS_EINVAL, "unknown option '%s'", argv[i]);
        if (eq != NULL)
            val = eq + 1;
        else if (k->type == T_BOOL)
            val = "true";
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            val = argv[++i];
        else
            return ss_err_set(err, SS_EINVAL, "option '--%.*s' needs a value",
                              (int)n, arg);
        if ((rc = set_text(cfg, k, val, err)) < 0)
            return ss_err_wrap(err, rc, "option --%.*s", (int)n, arg);
    }
    return 0;
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: traffic that never leaves
 * the host. */
static bool
is_loopback(const char *addr)
{
    unsigned char a[16];
    static const unsigned char one[16] = { [15] = 1 };
    static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };

    if (inet_pton(AF_INET, addr, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, addr, a) == 1)
        return memcmp(a, one, 16) == 0 ||
               (memcmp(a, mapped, 12) == 0 && a[12] == 127);
    return false;
}

/* A certificate needs its key and the other way round. */
static int
validate_tls(const char *listener, const char *cert, const char *key,
             ss_err_t *err)
{
    if ((cert == NULL) != (key == NULL))
        return ss_err_set(err, SS_EINVAL, "'%s_tls_%s_file' is set but not "
                          "'%s_tls_%s_file': TLS needs both", listener,
                          cert ? "cert" : "key", listener,
                          cert ? "key" : "cert");
    return 0;
}

static int
validate(ss_config_t *cfg, ss_err_t *err)
{
    int rc;

    if ((rc = validate_tls("http", cfg->http_tls_cert_file,
                           cfg->http_tls_key_file, err)) < 0 ||
        (rc = validate_tls("admin", cfg->admin_tls_cert_file,
                           cfg->admin_tls_key_file, err)) < 0)
        return rc;
    if (strcmp(cfg->role, "primary") == 0) {
        cfg->replica = false;
    } else if (strcmp(cfg->role, "replica") == 0) {
        cfg->replica = true;
    } else {
        return ss_err_set(err, SS_EINVAL, "'role' must be primary or "
                          "replica, not '%s'", cfg->role);
    }
    /* A replica only learns of the primary's versions and activations
     * from the repository: polling is what makes it follow. */
    if (cfg->repository_poll_s < 0)
        cfg->repository_poll_s = cfg->replica ? 2.0 : 0.0;
    if (strcmp(cfg->tls_min_version, "1.2") != 0 &&
        strcmp(cfg->tls_min_version, "1.3") != 0)
        return ss_err_set(err, SS_EINVAL, "'tls_min_version' must be 1.2 or "
                          "1.3, not '%s'", cfg->tls_min_version);
    if (strcmp(cfg->job_priority, "idle") != 0 &&
        strcmp(cfg->job_priority, "batch") != 0 &&
        strcmp(cfg->job_priority, "normal") != 0)
        return ss_err_set(err, SS_EINVAL, "'job_priority' must be batch, "
                          "idle or normal, not '%s'", cfg->job_priority);
    /* The admin API can load and replace models: beyond loopback it must
     * not travel in clear unless the operator says so. */
    if (cfg->admin_port >= 0 && cfg->admin_tls_cert_file == NULL &&
        !cfg->admin_allow_plaintext && !is_loopback(cfg->admin_address))
        return ss_err_set(err, SS_EINVAL, "'admin_address' %s is not a "
                          "loopback address: the admin listener needs TLS "
                          "there ('admin_tls_cert_file' and "
                          "'admin_tls_key_file'), or set "
                          "'admin_allow_plaintext' to true",
                          cfg->admin_address);
    if (cfg->admin_port >= 0 && cfg->admin_port == cfg->http_port &&
        cfg->http_port != 0)
        return ss_err_set(err, SS_EINVAL,
                          "'admin_port' must differ from 'http_port' (%d)",
                          cfg->http_port);
    /* A response's JSON text runs to 17 bytes per FP32 element against
     * 4 in binary: 4x lets a model whose answer is as large as its
     * request (an autoencoder, a per-pixel mask) answer a request of the
     * largest size, in binary, or in JSON one sent as JSON, while one
     * request still cannot make the daemon write gigabytes. */
    if (cfg->max_response_bytes < 0)
        cfg->max_response_bytes = cfg->max_body_bytes * 4;
    if (cfg->max_buffered_bytes > 0 &&
        cfg->max_buffered_bytes < cfg->max_body_bytes)
        return ss_err_set(err, SS_EINVAL,
                          "'max_buffered_bytes' (%lld) must be 0 or at least "
                          "'max_body_bytes' (%lld): the largest body allowed "
                          "must fit", (long long)cfg->max_buffered_bytes,
                          (long long)cfg->max_body_bytes);
    return 0;
}

int
ss_config_load(ss_config_t *cfg, int argc, char **argv, ss_err_t *err)
{
    const char *path;
    struct stat st;
    int i, rc;

    defaults(cfg);
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ss_config_usage(argv[0]);
            return SS_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("slimserve %s\n", PACKAGE_VERSION);
            return SS_CONFIG_EXIT_OK;
        }
    }
    if ((rc = find_config_flag(argc, argv, &path, err)) < 0)
        return rc;
    /* The default file is optional; a named one must exist. */
    if (path == NULL && stat(SS_DEFAULT_CONFIG, &st) == 0)
        path = SS_DEFAULT_CONFIG;
    if (path != NULL) {
        if ((rc = set_str(&cfg->config_path, path, err)) < 0)
            return rc;
        if ((rc = load_file(cfg, path, err)) < 0)
            return rc;
    }
    if ((rc = apply_flags(cfg, argc, argv, err)) < 0)
        return rc;
    if ((rc = default_strings(cfg, err)) < 0)
        return rc;
    return validate(cfg, err);
}

void
ss_config_close(ss_config_t *cfg)
{
    if (cfg == NULL)
        return;
    ss_free(cfg->config_path);
    ss_free(cfg->model_repository);
    ss_free(cfg->http_address);
    ss_free(cfg->admin_address);
    ss_free(cfg->admin_token_file);
    ss_free(cfg->http_tls_cert_file);
    ss_free(cfg->http_tls_key_file);
    ss_free(cfg->admin_tls_cert_file);
    ss_free(cfg->admin_tls_key_file);
    ss_free(cfg->tls_min_version);
    ss_free(cfg->job_priority);
    ss_free(cfg->role);
    ss_free(cfg->primary_url);
    memset(cfg, 0, sizeof(*cfg));
}
