/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve-ctl's job commands (ctl_main.c has the program): `jobs`,
 * `job ID [--follow|--cancel]`, `compress MODEL METHOD... [--param
 * K=V]... [--follow]`, and following a job until it ends, with a
 * progress line on a terminal.
 *
 * THREADS: one (the program's).
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/clock.h"
#include "server/ctl/ctl.h"

static void
job_line(json_t *j, char *buf, size_t n)
{
    snprintf(buf, n, "%-5lld %-16s %-10s %4.0f%%  %s",
             (long long)json_integer_value(json_object_get(j, "id")),
             json_string_value(json_object_get(j, "model")),
             json_string_value(json_object_get(j, "state")),
             100 * ss__ctl_num(j, "progress"),
             json_string_value(json_object_get(j, "step")) ?: "");
}

int
ss__ctl_cmd_jobs(ss_ctl_client_t *c)
{
    json_t *js, *j;
    size_t i;
    int rc = ss__ctl_call(c, "GET", "/admin/jobs", NULL, &js);
    char line[256];

    if (rc)
        return rc;
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(js);
    } else {
        printf("%-5s %-16s %-10s %5s  %s\n", "ID", "MODEL", "STATE",
               "DONE", "STEP");
        json_array_foreach(js, i, j) {
            job_line(j, line, sizeof(line));
            puts(line);
        }
    }
    json_decref(js);
    return 0;
}

static bool
job_ended(json_t *j)
{
    const char *st = json_string_value(json_object_get(j, "state"));

    return st && (strcmp(st, "succeeded") == 0 ||
                  strcmp(st, "failed") == 0 ||
                  strcmp(st, "rejected") == 0 ||
                  strcmp(st, "cancelled") == 0);
}

/* The job's last words: state, version made, accuracy before/after. */
static int
job_summary(json_t *j)
{
    const char *st = json_string_value(json_object_get(j, "state"));
    json_t *res = json_object_get(j, "result");
    json_t *src = json_object_get(res, "source");
    json_t *var = json_object_get(res, "variant");
    const char *e = json_string_value(json_object_get(j, "error"));

    printf("job %lld %s", (long long)json_integer_value(
               json_object_get(j, "id")), st ? st : "?");
    if (json_is_integer(json_object_get(res, "version")))
        printf(": version %lld%s",
               (long long)json_integer_value(json_object_get(res,
                                                             "version")),
               json_is_true(json_object_get(res, "activated"))
                   ? " (active)" : "");
    if (src && !var && json_is_object(json_object_get(res, "best")))
        var = json_object_get(res, "best");
    if (src && var)
        printf(", accuracy %.2f%% -> %.2f%%, batch 32 %.4f -> %.4f ms",
               100 * ss__ctl_num(src, "accuracy"), 100 * ss__ctl_num(var, "accuracy"),
               ss__ctl_num(json_object_get(src, "latency_ms"), "batch32"),
               ss__ctl_num(json_object_get(var, "latency_ms"), "batch32"));
    if (e)
        printf(": %s", e);
    putchar('\n');
    ss__ctl_search_summary(res);
    return st && strcmp(st, "succeeded") == 0 ? 0 : EXIT_JOB;
}

/* Polls the job until it ends: a bar redrawn in place on a terminal,
 * a line per change of step or whole percent otherwise. */
int
ss__ctl_follow(ss_ctl_client_t *c, long long id)
{
    bool tty = isatty(STDOUT_FILENO);
    char path[64], last[256] = "";
    double t0 = ss_clock_mono_s();
    json_t *j = NULL;
    int rc;

    snprintf(path, sizeof(path), "/admin/jobs/%lld", id);
    for (;;) {
        double p, el, eta;
        const char *step;
        char line[256], tail[96] = "";
        int w = 30, k;

        if ((rc = ss__ctl_call(c, "GET", path, NULL, &j)) != 0)
            return rc;
        if (job_ended(j))
            break;
        p = ss__ctl_num(j, "progress");
        if (isnan(p))
            p = 0;
        step = json_string_value(json_object_get(j, "step")) ?: "";
        el = ss_clock_mono_s() - t0;
        if (!isnan(ss__ctl_num(j, "loss")))
            snprintf(tail, sizeof(tail), "  loss %.4g", ss__ctl_num(j, "loss"));
        ss__ctl_search_tail(j, tail, sizeof(tail));
        if (p > 0.02) {
            eta = el / p * (1 - p);
            snprintf(tail + strlen(tail), sizeof(tail) - strlen(tail),
                     "  ETA %.0fs", eta);
        }
        if (tty) {
            char bar[64];

            for (k = 0; k < w; k++)
                bar[k] = k < (int)(p * w + 0.5) ? '#' : '-';
            bar[w] = '\0';
            printf("\r\033[Kjob %lld [%s] %3.0f%% %s%s", id, bar, 100 * p,
                   step, tail);
            fflush(stdout);
        } else {
            snprintf(line, sizeof(line), "job %lld: %3.0f%% %s", id,
                     100 * p, step);
            if (strcmp(line, last) != 0) {
                printf("%s%s\n", line, tail);
                fflush(stdout);
                snprintf(last, sizeof(last), "%s", line);
            }
        }
        json_decref(j);
        j = NULL;
        usleep(200000);
    }
    if (tty)
        printf("\r\033[K");
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(j);
        rc = job_ended(j) && strcmp(json_string_value(json_object_get(
                                        j, "state")), "succeeded") == 0
                 ? 0 : EXIT_JOB;
    } else {
        rc = job_summary(j);
    }
    json_decref(j);
    return rc;
}

long long
ss__ctl_job_id(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);

    return end != s && *end == '\0' && v > 0 ? v : -1;
}

int
ss__ctl_cmd_job(ss_ctl_client_t *c, int argc, char **argv)
{
    bool fol = false;
    long long id = -1;
    char path[64];
    json_t *j;
    int i, rc;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--follow") == 0)
            fol = true;
        else if (id < 0 && (id = ss__ctl_job_id(argv[i])) > 0)
            continue;
        else
            return ss__ctl_fail_usage("job: unexpected '%s'", argv[i]);
    }
    if (id < 0)
        return ss__ctl_fail_usage("job needs a job ID");
    if (fol)
        return ss__ctl_follow(c, id);
    snprintf(path, sizeof(path), "/admin/jobs/%lld", id);
    if ((rc = ss__ctl_call(c, "GET", path, NULL, &j)) != 0)
        return rc;
    if (ss__ctl_opt_json) {
        ss__ctl_print_json(j);
    } else if (job_ended(j)) {
        job_summary(j);
    } else {
        char line[256];

        job_line(j, line, sizeof(line));
        puts(line);
    }
    json_decref(j);
    return 0;
}

/* A --param value: JSON when it parses as a number, boolean or null
 * (sparsity=0.5, rank=8), a string otherwise (kind=structured). */
json_t *
ss__ctl_param_value(const char *s)
{
    json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);

    if (v != NULL && !json_is_object(v) && !json_is_array(v) &&
        !json_is_string(v))
        return v;
    json_decref(v);
    return json_string(s);
}

int
ss__ctl_cmd_compress(ss_ctl_client_t *c, const char *model, int argc,
                     char **argv)
{
    json_t *body = json_object(), *methods = json_array(), *cur = NULL;
    json_t *res = NULL;
    bool fol = false;
    char *path = NULL;
    int i, rc = 0;

    json_object_set_new(body, "methods", methods);
    for (i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--follow") == 0) {
            fol = true;
        } else if (strcmp(a, "--activate") == 0) {
            json_object_set_new(body, "activate", json_true());
        } else if (v == NULL) {
            rc = ss__ctl_fail_usage("compress: '%s' needs a value or is "
                                    "unknown", a);
        } else if (strcmp(a, "--method") == 0) {
            cur = json_pack("{s:s,s:{}}", "method", v, "params");
            json_array_append_new(methods, cur);
            i++;
        } else if (strcmp(a, "--param") == 0) {
            const char *eq = strchr(v, '=');
            char key[128];

            if (cur == NULL || eq == NULL || eq == v ||
                (size_t)(eq - v) >= sizeof(key)) {
                rc = ss__ctl_fail_usage("compress: --param K=V after a "
                                        "--method, not '%s'", v);
                break;
            }
            memcpy(key, v, (size_t)(eq - v));
            key[eq - v] = '\0';
            json_object_set_new(json_object_get(cur, "params"), key,
                                ss__ctl_param_value(eq + 1));
            i++;
        } else if (strcmp(a, "--calibration") == 0 ||
                   strcmp(a, "--validation") == 0 ||
                   strcmp(a, "--training") == 0) {
            json_object_set_new(body, a + 2, json_pack("{s:s}", "file", v));
            i++;
        } else if (strcmp(a, "--max-accuracy-drop") == 0) {
            json_object_set_new(body, "gate", json_pack(
                "{s:o}", "max_accuracy_drop", ss__ctl_param_value(v)));
            i++;
        } else {
            rc = ss__ctl_fail_usage("compress: unknown option '%s'", a);
        }
    }
    if (rc == 0 && json_array_size(methods) == 0)
        rc = ss__ctl_fail_usage("compress needs at least one --method");
    if (rc == 0 &&
        (path = ss__ctl_path_of("/admin/models/", model,
                                "/compress")) == NULL)
        rc = EXIT_NOANSWER;
    if (rc == 0)
        rc = ss__ctl_call(c, "POST", path, body, &res);
    if (rc == 0) {
        long long id = (long long)json_integer_value(json_object_get(res,
                                                                     "job"));

        if (fol) {
            rc = ss__ctl_follow(c, id);
        } else if (ss__ctl_opt_json) {
            ss__ctl_print_json(res);
        } else {
            printf("job %lld queued\n", id);
        }
    }
    json_decref(res);
    json_decref(body);
    free(path);
    return rc;
}
