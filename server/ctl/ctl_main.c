/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve-ctl: the admin API for a person at a terminal, and for scripts.
 *
 *   slimserve-ctl [--url URL] [--token-file FILE] [--cacert FILE] [--json]
 *                 [--timeout S] COMMAND [ARGS]
 *
 * The server: --url, else $SLIMSERVE_ADMIN_URL, else
 * http://127.0.0.1:8001.  The token: --token-file, else
 * $SLIMSERVE_ADMIN_TOKEN_FILE, else $SLIMSERVE_ADMIN_TOKEN (no token:
 * none is sent, for --admin-insecure daemons).
 *
 * Exit codes: 0 done; 1 the server refused (its status and message are
 * printed); 2 usage; 3 no answer (connection, TLS, timeout); 4 a followed
 * job ended other than succeeded.  --json prints the server's JSON.
 *
 * Only the admin API is used: what the CLI shows, a script can read too.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "server/ctl/client.h"
#include "server/ctl/ctl.h"


bool ss__ctl_opt_json;
static const char *prog = "slimserve-ctl";

static void
usage(FILE *f)
{
    fprintf(f,
"Usage: %s [OPTION]... COMMAND [ARG]...\n"
"Drive a slimserve daemon through its admin API.\n\n"
"Commands:\n"
"  status                    the daemon: version, role, uptime, models\n"
"  models                    the repository index: models, states, reasons\n"
"  versions MODEL            versions as a lineage tree with accuracy,\n"
"                            latency at batch 1 and 32, size; * = active\n"
"  compress MODEL --method M [--param K=V]... [--method M ...]\n"
"           [--calibration FILE] [--validation FILE] [--training FILE]\n"
"           [--max-accuracy-drop X] [--activate] [--follow]\n"
"                            submit a compression job (methods run in order;\n"
"                            --param applies to the method before it)\n"
"  optimize MODEL [--budget X] [--min-agreement A] [--objective O]\n"
"           [--time-limit S] [--max-trials N] [--method M]... [--seed N]\n"
"           [--calibration FILE] [--validation FILE] [--training FILE]\n"
"           [--activate] [--follow]\n"
"                            search the fastest variant inside an accuracy\n"
"                            budget (X relative, 0.01 = 1%%; O latency_b32,\n"
"                            latency_b1 or size; --method: the allowed set)\n"
"  jobs                      every job, newest first\n"
"  job ID [--follow]         one job; --follow shows its progress until it\n"
"                            ends (a bar on a terminal, lines otherwise)\n"
"  cancel ID                 cancel a queued or running job\n"
"  activate MODEL VERSION    serve VERSION\n"
"  rollback MODEL            serve the version active before\n"
"  load MODEL | unload MODEL load (or reload) / stop serving a model\n"
"  adapters MODEL            the model's LoRA adapters\n\n"
"Options:\n"
"  --url URL          admin URL (default $SLIMSERVE_ADMIN_URL or\n"
"                     http://127.0.0.1:8001)\n"
"  --token-file FILE  bearer token file (default\n"
"                     $SLIMSERVE_ADMIN_TOKEN_FILE; or $SLIMSERVE_ADMIN_TOKEN)\n"
"  --cacert FILE      CA certificates for https (default: the system's)\n"
"  --timeout S        seconds per request (default 30)\n"
"  --json             print the server's JSON\n"
"  --help, --version\n\n"
"Exit status: 0 done, 1 refused by the server, 2 usage, 3 no answer,\n"
"4 a followed job did not succeed.\n", prog);
}


int
ss__ctl_fail_usage(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    return EXIT_USAGE;
}

/* ---- talking to the server ------------------------------------------- */

/* One request; on 2xx *out (may be NULL) gets the parsed JSON.  Prints
 * the server's message or the transport's error and returns the exit
 * code otherwise. */
int
ss__ctl_call(ss_ctl_client_t *c, const char *method, const char *path,
             json_t *body, json_t **out)
{
    ss_ctl_resp_t r;
    ss_err_t err = { 0 };
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_t *js;
    int rc;

    if (out)
        *out = NULL;
    rc = ss_ctl_request(c, method, path, text, &r, &err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_NOANSWER;
    }
    js = json_loadb(r.body, r.len, 0, NULL);
    if (r.status < 200 || r.status > 299) {
        const char *msg = js ? json_string_value(json_object_get(js,
                                                                 "error"))
                             : NULL;

        fprintf(stderr, "%s: %s %s: %d: %s\n", prog, method, path,
                r.status, msg ? msg : r.body);
        json_decref(js);
        ss_ctl_resp_free(&r);
        return EXIT_REFUSED;
    }
    ss_ctl_resp_free(&r);
    if (out)
        *out = js ? js : json_object();
    else
        json_decref(js);
    return 0;
}

void
ss__ctl_print_json(json_t *js)
{
    json_dumpf(js, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
}

/* prefix + the model name percent-encoded (names travel in paths) +
 * suffix, or NULL. */
char *
ss__ctl_path_of(const char *prefix, const char *model, const char *suffix)
{
    char enc[3 * 256 + 1], *p = enc, *out = NULL;
    const unsigned char *s;

    for (s = (const unsigned char *)model; *s && p < enc + 3 * 255; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
            (*s >= '0' && *s <= '9') || strchr("-._~", *s))
            *p++ = (char)*s;
        else
            p += sprintf(p, "%%%02X", *s);
    }
    *p = '\0';
    if (asprintf(&out, "%s%s%s", prefix, enc, suffix ? suffix : "") < 0)
        return NULL;
    return out;
}

/* GET prefix + model + suffix: ss__ctl_call() on a model's path. */
static int
model_get(ss_ctl_client_t *c, const char *model, const char *suffix,
          json_t **out)
{
    char *path = ss__ctl_path_of("/admin/models/", model, suffix);
    int rc;

    *out = NULL;
    if (path == NULL)
        return EXIT_NOANSWER;
    rc = ss__ctl_call(c, "GET", path, NULL, out);
    free(path);
    return rc;
}

/* ---- formatting ------------------------------------------------------ */

static const char *
size_text(double bytes, char *buf, size_t n)
{
    if (bytes < 0)
        snprintf(buf, n, "-");
    else if (bytes < 1024)
        snprintf(buf, n, "%.0f B", bytes);
    else if (bytes < 1024 * 1024)
        snprintf(buf, n, "%.1f KiB", bytes / 1024);
    else if (bytes < 1024.0 * 1024 * 1024)
        snprintf(buf, n, "%.1f MiB", bytes / (1024 * 1024));
    else
        snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    return buf;
}

double
ss__ctl_num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *
num_text(double v, int prec, const char *unit, char *buf, size_t n)
{
    if (isnan(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, "%.*f%s", prec, v, unit);
    return buf;
}

/* ---- commands -------------------------------------------------------- */

static int
cmd_status(ss_ctl_client_t *c)
{
    json_t *js;
    int rc = ss__ctl_call(c, "GET", "/admin/status", NULL, &js);

    if (rc)
        return rc;
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(js);
    } else {
        json_t *ports = json_object_get(js, "ports");

        printf("%s %s, %s, %s, up %.0f s\n",
               json_string_value(json_object_get(js, "name")),
               json_string_value(json_object_get(js, "version")),
               json_string_value(json_object_get(js, "role")) ?: "primary",
               json_is_true(json_object_get(js, "ready")) ? "ready"
                                                          : "not ready",
               ss__ctl_num(js, "uptime_seconds"));
        printf("repository %s: %lld model(s); ports http %lld admin %lld\n",
               json_string_value(json_object_get(js, "model_repository")),
               (long long)json_integer_value(
                   json_object_get(js, "models_loaded")),
               (long long)json_integer_value(json_object_get(ports, "http")),
               (long long)json_integer_value(json_object_get(ports,
                                                             "admin")));
    }
    json_decref(js);
    return 0;
}

static int
cmd_models(ss_ctl_client_t *c)
{
    json_t *js, *e;
    size_t i;
    int rc = ss__ctl_call(c, "POST", "/v2/repository/index", NULL, &js);

    if (rc)
        return rc;
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(js);
    } else {
        printf("%-24s %-8s %-12s %s\n", "MODEL", "VERSION", "STATE",
               "REASON");
        json_array_foreach(js, i, e) {
            const char *v = json_string_value(json_object_get(e,
                                                              "version"));

            printf("%-24s %-8s %-12s %s\n",
                   json_string_value(json_object_get(e, "name")),
                   v && *v ? v : "-",
                   json_string_value(json_object_get(e, "state")),
                   json_string_value(json_object_get(e, "reason")) ?: "");
        }
    }
    json_decref(js);
    return 0;
}

/* One row of the versions table, then its children, indented. */
static void
version_rows(json_t *vers, json_int_t parent, int depth, json_t *srcm)
{
    json_t *v;
    size_t i;

    json_array_foreach(vers, i, v) {
        json_t *var = json_object_get(v, "variant");
        json_t *meas = json_object_get(json_object_get(var, "measurements"),
                                       "variant");
        json_int_t num_v = json_integer_value(json_object_get(v, "version"));
        json_int_t from = json_integer_value(json_object_get(var,
                                                             "parent_version"));
        char name[64], acc[16], b1[16], b32[16], sz[24], meth[64] = "";
        json_t *m, *lat;
        size_t j;

        if (from != parent)
            continue;
        /* A version made here has its own measurements; an original is
         * measured as the source of its first variant. */
        if (meas == NULL)
            meas = json_object_get(srcm, "");
        lat = json_object_get(meas, "latency_ms");
        json_array_foreach(json_object_get(var, "methods"), j, m) {
            const char *s = json_is_string(m) ? json_string_value(m)
                : json_string_value(json_object_get(m, "method"));

            snprintf(meth + strlen(meth), sizeof(meth) - strlen(meth),
                     "%s%s", j ? "+" : "", s ? s : "?");
        }
        snprintf(name, sizeof(name), "%*s%s%lld", 2 * depth, "",
                 depth ? "`-" : "", (long long)num_v);
        printf("%-12s %-3s %-16s %9s %9s %9s %10s\n", name,
               json_is_true(json_object_get(v, "active")) ? "*" : "",
               meth[0] ? meth : "(original)",
               num_text(ss__ctl_num(meas, "accuracy") * 100, 2, "%", acc,
                        sizeof(acc)),
               num_text(ss__ctl_num(lat, "batch1"), 4, "", b1, sizeof(b1)),
               num_text(ss__ctl_num(lat, "batch32"), 4, "", b32, sizeof(b32)),
               size_text(json_is_number(json_object_get(meas,
                                                        "weight_bytes"))
                             ? ss__ctl_num(meas, "weight_bytes") : -1,
                         sz, sizeof(sz)));
        version_rows(vers, num_v, depth + 1, srcm);
    }
}

static int
cmd_versions(ss_ctl_client_t *c, const char *model)
{
    json_t *js, *vers, *v, *srcm;
    size_t i;
    int rc = model_get(c, model, "/versions", &js);

    if (rc)
        return rc;
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(js);
        json_decref(js);
        return 0;
    }
    vers = json_object_get(js, "versions");
    /* An original's measurements are those of the source of the first
     * variant listed ("" is the key the row code looks up). */
    srcm = json_object();
    json_array_foreach(vers, i, v) {
        json_t *src = json_object_get(json_object_get(
            json_object_get(v, "variant"), "measurements"), "source");

        if (src != NULL && json_object_get(srcm, "") == NULL)
            json_object_set(srcm, "", src);
    }
    printf("%s: %s, active version %lld\n", model,
           json_string_value(json_object_get(js, "state")),
           (long long)json_integer_value(json_object_get(js,
                                                         "active_version")));
    printf("%-12s %-3s %-16s %9s %9s %9s %10s\n", "VERSION", "ACT",
           "METHODS", "ACCURACY", "B1 MS", "B32 MS", "SIZE");
    version_rows(vers, 0, 0, srcm);
    json_decref(srcm);
    json_decref(js);
    return 0;
}

/* POST with no body and nothing to print but what happened. */
static int
simple_post(ss_ctl_client_t *c, const char *method, const char *path,
            const char *done)
{
    json_t *js;
    int rc = ss__ctl_call(c, method, path, NULL, &js);

    if (rc == 0) {
        if (ss__ctl_opt_json)
            ss__ctl_print_json(js);
        else
            puts(done);
    }
    json_decref(js);
    return rc;
}

static int
cmd_adapters(ss_ctl_client_t *c, const char *model)
{
    json_t *js, *a, *list;
    size_t i;
    int rc = model_get(c, model, "/adapters", &js);

    if (rc)
        return rc;
    list = json_is_array(js) ? js : json_object_get(js, "adapters");
    if (ss__ctl_opt_json || !json_is_array(list)) {
        ss__ctl_print_json(js);
    } else {
        printf("%-24s %5s %8s %10s  %s\n", "ADAPTER", "RANK", "ALPHA",
               "SIZE", "MODULES");
        json_array_foreach(list, i, a) {
            json_t *mods = json_object_get(a, "modules"), *m;
            char sz[24];
            size_t k;

            printf("%-24s %5lld %8g %10s  ",
                   json_string_value(json_object_get(a, "name")),
                   (long long)json_integer_value(json_object_get(a, "r")),
                   ss__ctl_num(a, "alpha"),
                   size_text(json_is_number(json_object_get(a, "bytes"))
                                 ? ss__ctl_num(a, "bytes") : -1, sz, sizeof(sz)));
            json_array_foreach(mods, k, m)
                printf("%s%s", k ? "," : "", json_string_value(m));
            putchar('\n');
        }
    }
    json_decref(js);
    return 0;
}

/* ---- main ------------------------------------------------------------ */

static char *
read_token(const char *file)
{
    char buf[4100];
    size_t n;
    FILE *f = fopen(file, "r");

    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return ss_strdup(buf);
}

static int
need(int argc, int want, const char *cmd)
{
    if (argc != want)
        return ss__ctl_fail_usage("'%s' needs different arguments", cmd);
    return 0;
}

int
main(int argc, char **argv)
{
    ss_ctl_client_t c;
    ss_err_t err = { 0 };
    const char *url = getenv("SLIMSERVE_ADMIN_URL");
    const char *tfile = getenv("SLIMSERVE_ADMIN_TOKEN_FILE");
    const char *token = getenv("SLIMSERVE_ADMIN_TOKEN");
    const char *cafile = NULL, *cmd;
    double timeout = 30;
    char *path = NULL, rest[64];
    int i, rc;

    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("slimserve-ctl %s\n", PACKAGE_VERSION);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            ss__ctl_opt_json = true;
            continue;
        }
        if (v == NULL)
            return ss__ctl_fail_usage("option '%s' needs a value or is "
                                      "unknown", a);
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--token-file") == 0)
            tfile = v;
        else if (strcmp(a, "--cacert") == 0)
            cafile = v;
        else if (strcmp(a, "--timeout") == 0 && atof(v) > 0)
            timeout = atof(v);
        else
            return ss__ctl_fail_usage("unknown option '%s'", a);
        i++;
    }
    if (i >= argc)
        return ss__ctl_fail_usage("no command");
    cmd = argv[i++];
    argc -= i;
    argv += i;
    if (ss_ctl_client_init(&c, url ? url : "http://127.0.0.1:8001",
                           &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return EXIT_USAGE;
    }
    c.timeout_s = timeout;
    if (tfile != NULL && (c.token = read_token(tfile)) == NULL)
        return EXIT_USAGE;
    if (c.token == NULL && token != NULL && *token)
        c.token = ss_strdup(token);
    if (cafile != NULL)
        c.cafile = ss_strdup(cafile);

    if (strcmp(cmd, "status") == 0) {
        rc = need(argc, 0, cmd) ?: cmd_status(&c);
    } else if (strcmp(cmd, "models") == 0) {
        rc = need(argc, 0, cmd) ?: cmd_models(&c);
    } else if (strcmp(cmd, "versions") == 0) {
        rc = need(argc, 1, cmd) ?: cmd_versions(&c, argv[0]);
    } else if (strcmp(cmd, "compress") == 0) {
        rc = argc < 1 ? ss__ctl_fail_usage("compress needs a MODEL")
                      : ss__ctl_cmd_compress(&c, argv[0], argc - 1, argv + 1);
    } else if (strcmp(cmd, "optimize") == 0) {
        rc = argc < 1 ? ss__ctl_fail_usage("optimize needs a MODEL")
                      : ss__ctl_optimize(&c, argv[0], argc - 1, argv + 1);
    } else if (strcmp(cmd, "jobs") == 0) {
        rc = need(argc, 0, cmd) ?: ss__ctl_cmd_jobs(&c);
    } else if (strcmp(cmd, "job") == 0) {
        rc = ss__ctl_cmd_job(&c, argc, argv);
    } else if (strcmp(cmd, "cancel") == 0) {
        rc = need(argc, 1, cmd);
        if (rc == 0 && ss__ctl_job_id(argv[0]) < 0)
            rc = ss__ctl_fail_usage("cancel: '%s' is not a job ID", argv[0]);
        if (rc == 0) {
            snprintf(rest, sizeof(rest), "/admin/jobs/%lld",
                     ss__ctl_job_id(argv[0]));
            rc = simple_post(&c, "DELETE", rest, "cancelled");
        }
    } else if (strcmp(cmd, "activate") == 0) {
        rc = need(argc, 2, cmd);
        if (rc == 0 && ss__ctl_job_id(argv[1]) < 0)
            rc = ss__ctl_fail_usage("activate: '%s' is not a version", argv[1]);
        if (rc == 0) {
            snprintf(rest, sizeof(rest), "/versions/%lld/activate",
                     ss__ctl_job_id(argv[1]));
            path = ss__ctl_path_of("/admin/models/", argv[0], rest);
            rc = path ? simple_post(&c, "POST", path, "activated")
                      : EXIT_NOANSWER;
        }
    } else if (strcmp(cmd, "rollback") == 0 || strcmp(cmd, "load") == 0 ||
               strcmp(cmd, "unload") == 0) {
        rc = need(argc, 1, cmd);
        if (rc == 0) {
            path = strcmp(cmd, "rollback") == 0
                ? ss__ctl_path_of("/admin/models/", argv[0], "/rollback")
                : ss__ctl_path_of("/v2/repository/models/", argv[0],
                                  strcmp(cmd, "load") == 0 ? "/load"
                                                           : "/unload");
            rc = path ? simple_post(&c, "POST", path,
                                    strcmp(cmd, "rollback") == 0
                                        ? "rolled back"
                                        : strcmp(cmd, "load") == 0
                                              ? "loaded" : "unloaded")
                      : EXIT_NOANSWER;
        }
    } else if (strcmp(cmd, "adapters") == 0) {
        rc = need(argc, 1, cmd) ?: cmd_adapters(&c, argv[0]);
    } else {
        rc = ss__ctl_fail_usage("unknown command '%s'", cmd);
    }
    free(path);
    ss_ctl_client_free(&c);
    return rc;
}
