/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve-ctl optimize: a variant search (POST /admin/models/{m}/optimize,
 * docs/search.md) from a terminal, and how a search job is shown while it
 * runs and when it ends.  Only the admin API is used.
 *
 * THREADS: one.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/ctl/ctl.h"

static double
number(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Options that take a value: the body key and how the value is read. */
static const struct {
    const char *opt, *key;
    bool text;                  /* a string; else JSON (a number) */
} valued[] = {
    { "--objective", "objective", true },
    { "--time-limit", "time_limit_s", false },
    { "--max-trials", "max_trials", false },
    { "--seed", "seed", false },
};

int
ss__ctl_optimize(ss_ctl_client_t *c, const char *model, int argc,
                 char **argv)
{
    json_t *body = json_object(), *methods = NULL, *res = NULL;
    bool fol = false;
    char *path = NULL;
    size_t k;
    int i, rc = 0;

    for (i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--follow") == 0) {
            fol = true;
            continue;
        }
        if (strcmp(a, "--activate") == 0) {
            json_object_set_new(body, "activate", json_true());
            continue;
        }
        if (v == NULL) {
            rc = ss__ctl_fail_usage("optimize: '%s' needs a value or is "
                                    "unknown", a);
            break;
        }
        i++;
        for (k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
            if (strcmp(a, valued[k].opt) == 0)
                break;
        if (k < sizeof(valued) / sizeof(valued[0])) {
            json_object_set_new(body, valued[k].key, valued[k].text
                                ? json_string(v) : ss__ctl_param_value(v));
        } else if (strcmp(a, "--budget") == 0) {
            json_object_set_new(body, "budget", json_pack(
                "{s:o}", "max_accuracy_drop", ss__ctl_param_value(v)));
        } else if (strcmp(a, "--min-agreement") == 0) {
            json_object_set_new(body, "budget", json_pack(
                "{s:o}", "min_agreement", ss__ctl_param_value(v)));
        } else if (strcmp(a, "--method") == 0) {
            if (methods == NULL) {
                methods = json_array();
                json_object_set_new(body, "methods", methods);
            }
            json_array_append_new(methods, json_string(v));
        } else if (strcmp(a, "--calibration") == 0
                   || strcmp(a, "--validation") == 0
                   || strcmp(a, "--training") == 0) {
            json_object_set_new(body, a + 2, json_pack("{s:s}", "file", v));
        } else {
            rc = ss__ctl_fail_usage("optimize: unknown option '%s'", a);
        }
    }
    if (rc == 0 && (path = ss__ctl_path_of("/admin/models/", model,
                                           "/optimize")) == NULL)
        rc = EXIT_NOANSWER;
    if (rc == 0)
        rc = ss__ctl_call(c, "POST", path, body, &res);
    if (rc == 0) {
        long long id = (long long)json_integer_value(json_object_get(res,
                                                                     "job"));

        if (fol)
            rc = ss__ctl_follow(c, id);
        else if (ss__ctl_opt_json)
            ss__ctl_print_json(res);
        else
            printf("job %lld queued\n", id);
    }
    json_decref(res);
    json_decref(body);
    free(path);
    return rc;
}

void
ss__ctl_search_tail(json_t *job, char *tail, size_t n)
{
    json_t *s = json_object_get(job, "search");
    json_t *best = json_object_get(s, "best");
    size_t len = strlen(tail);

    if (!json_is_object(s) || len >= n)
        return;
    if (json_is_object(best))
        snprintf(tail + len, n - len, "  trials %.0f, best %.4f ms",
                 number(s, "trials"),
                 number(json_object_get(best, "latency_ms"), "batch32"));
    else
        snprintf(tail + len, n - len, "  trials %.0f, none in budget yet",
                 number(s, "trials"));
}

void
ss__ctl_search_summary(json_t *res)
{
    json_t *front = json_object_get(res, "front"), *best, *p, *t;
    size_t i;

    if (!json_is_array(front) || ss__ctl_opt_json)
        return;
    best = json_object_get(res, "best");
    printf("search: %.0f trials in %.1f s, stopped: %s",
           number(res, "trials"), number(res, "elapsed_s"),
           json_string_value(json_object_get(res, "stopped")) ?: "?");
    if (json_is_object(best)) {
        printf("; best: trial %.0f,", number(best, "trial"));
        json_array_foreach(json_object_get(json_object_get(best, "config"),
                                           "pipeline"), i, p)
            printf(" %s", json_string_value(p));
    }
    printf("\n%-7s %-9s %-10s %-10s %-10s %s\n", "TRIAL", "ACCURACY",
           "B1 MS", "B32 MS", "BYTES", "PIPELINE");
    json_array_foreach(front, i, t) {
        json_t *lat = json_object_get(t, "latency_ms");
        double acc = number(t, "accuracy");
        char at[16] = "-";
        size_t k;

        if (!isnan(acc))
            snprintf(at, sizeof(at), "%.2f%%", 100 * acc);
        printf("%-7.0f %-9s %-10.4f %-10.4f %-10.0f",
               number(t, "trial"), at, number(lat, "batch1"),
               number(lat, "batch32"), number(t, "weight_bytes"));
        json_array_foreach(json_object_get(json_object_get(t, "config"),
                                           "pipeline"), k, p)
            printf(" %s", json_string_value(p));
        if (json_array_size(json_object_get(json_object_get(t, "config"),
                                            "pipeline")) == 0)
            printf(" (source)");
        putchar('\n');
    }
}
