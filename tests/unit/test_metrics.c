/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics registry: exact exposition text for small registries, name
 * rules, lock-free updates from several threads, series removal, every
 * allocation failure, and promtool's verdict on a realistic registry.
 */
#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "tests/tap.h"

#define L(...) ((const char *const[]){__VA_ARGS__})

static double
const42(void *arg)
{
    return *(const double *)arg;
}

static char *
render(ss_metrics_t *m)
{
    char *out = NULL;
    size_t len = 0;

    if (ss_metrics_render(m, &out, &len) != 0)
        return NULL;
    if (strlen(out) != len) {
        free(out);
        return NULL;
    }
    return out;
}

static void
test_exact_text(void)
{
    static const double b[] = {0.125, 1};
    double k = 42;
    ss_metrics_t *m = ss_metrics_new();
    ss_metric_t *c, *g, *h, *empty;
    ss_series_t *s;
    char *out;

    c = ss_metrics_counter(m, "t_requests_total", "Requests.", 0, NULL);
    g = ss_metrics_gauge(m, "t_temp_celsius", "Line1\nback\\slash", 1,
                         L("room"));
    empty = ss_metrics_gauge(m, "t_empty", "No series yet.", 1, L("x"));
    h = ss_metrics_histogram(m, "t_latency_seconds", "Latency.", 1, L("ep"),
                             b, 2);
    ok(c && g && h && empty, "families registered");
    is_int(ss_metrics_gauge_fn(m, "t_up", "Constant.", const42, &k), 0,
           "gauge_fn registered");
    ss_series_add(ss_metric_series(c, NULL), 1);
    ss_series_add(ss_metric_series(c, NULL), 2);
    ss_series_set(ss_metric_series(g, L("a\"b\\c\nd")), -1.5);
    ss_series_set(ss_metric_series(g, L("plain")), 0.1);
    s = ss_metric_series(h, L("x"));
    ss_series_observe(s, 0.0625);
    ss_series_observe(s, 0.125); /* le is inclusive */
    ss_series_observe(s, 0.5);
    ss_series_observe(s, 2);
    ok(ss_metric_series(h, L("x")) == s,
       "get-or-create returns the same series");
    out = render(m);
    is_str(out,
           "# HELP t_requests_total Requests.\n"
           "# TYPE t_requests_total counter\n"
           "t_requests_total 3\n"
           "# HELP t_temp_celsius Line1\\nback\\\\slash\n"
           "# TYPE t_temp_celsius gauge\n"
           "t_temp_celsius{room=\"a\\\"b\\\\c\\nd\"} -1.5\n"
           "t_temp_celsius{room=\"plain\"} 0.1\n"
           "# HELP t_latency_seconds Latency.\n"
           "# TYPE t_latency_seconds histogram\n"
           "t_latency_seconds_bucket{ep=\"x\",le=\"0.125\"} 2\n"
           "t_latency_seconds_bucket{ep=\"x\",le=\"1\"} 3\n"
           "t_latency_seconds_bucket{ep=\"x\",le=\"+Inf\"} 4\n"
           "t_latency_seconds_sum{ep=\"x\"} 2.6875\n"
           "t_latency_seconds_count{ep=\"x\"} 4\n"
           "# HELP t_up Constant.\n"
           "# TYPE t_up gauge\n"
           "t_up 42\n",
           "exposition text, escaping, cumulative buckets");
    free(out);
    ss_metrics_free(m);
}

static void
test_values(void)
{
    ss_metrics_t *m = ss_metrics_new();
    ss_metric_t *g = ss_metrics_gauge(m, "v", "Values.", 1, L("k"));
    ss_metric_t *c = ss_metrics_counter(m, "n_total", "N.", 0, NULL);
    ss_metric_t *h = ss_metrics_histogram(m, "h", "H.", 0, NULL,
                                          (const double[]){1e-3}, 1);
    ss_series_t *cs = ss_metric_series(c, NULL);
    char *out;

    ss_series_set(ss_metric_series(g, L("a")), 0.1 + 0.2);
    ss_series_set(ss_metric_series(g, L("b")), INFINITY);
    ss_series_set(ss_metric_series(g, L("c")), -INFINITY);
    ss_series_set(ss_metric_series(g, L("d")), nan(""));
    ss_series_set(ss_metric_series(g, L("e")), 1e21);
    ss_series_set(ss_metric_series(g, L("f")), 123456789);
    ss_series_add(ss_metric_series(g, L("f")), -9);
    ss_series_add(cs, 5);
    ss_series_add(cs, -1);        /* counters only go up */
    ss_series_add(cs, nan(""));
    ss_series_set(cs, 100);       /* not a gauge */
    ss_series_observe(cs, 1);     /* not a histogram */
    ss_series_observe(ss_metric_series(h, NULL), nan(""));
    is_close(ss_series_value(cs), 5, 0, 0, "misuse of a counter is ignored");
    out = render(m);
    is_str(out,
           "# HELP v Values.\n# TYPE v gauge\n"
           "v{k=\"a\"} 0.30000000000000004\n"
           "v{k=\"b\"} +Inf\n"
           "v{k=\"c\"} -Inf\n"
           "v{k=\"d\"} NaN\n"
           "v{k=\"e\"} 1e+21\n"
           "v{k=\"f\"} 123456780\n"
           "# HELP n_total N.\n# TYPE n_total counter\nn_total 5\n"
           "# HELP h H.\n# TYPE h histogram\n"
           "h_bucket{le=\"0.001\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
           "h_sum 0\nh_count 0\n",
           "shortest round-trip floats, special values, NaN not observed");
    free(out);
    ss_metrics_free(m);
}

static void
test_names(void)
{
    static const double inc[] = {1, 2}, flat[] = {1, 1};
    ss_metrics_t *m = ss_metrics_new();
    double nanb[] = {1, nan("")};

    ok(ss_metrics_gauge(m, "ok:name_1", "", 0, NULL) != NULL,
       "colons, digits and underscores are fine");
    ok(ss_metrics_gauge(m, "1abc", "", 0, NULL) == NULL, "leading digit");
    ok(ss_metrics_gauge(m, "a-b", "", 0, NULL) == NULL, "dash");
    ok(ss_metrics_gauge(m, "", "", 0, NULL) == NULL, "empty name");
    ok(ss_metrics_gauge(m, NULL, "", 0, NULL) == NULL, "NULL name");
    ok(ss_metrics_counter(m, "requests", "", 0, NULL) == NULL,
       "counter without _total");
    ok(ss_metrics_counter(m, "_total", "", 0, NULL) == NULL,
       "counter named only _total");
    ok(ss_metrics_gauge(m, "g_total", "", 0, NULL) == NULL,
       "gauge with _total");
    ok(ss_metrics_gauge(m, "g", "", 1, L("__x")) == NULL,
       "reserved label name");
    ok(ss_metrics_gauge(m, "g", "", 1, L("a:b")) == NULL,
       "colon in a label name");
    ok(ss_metrics_gauge(m, "g", "", 2, L("a", "a")) == NULL,
       "duplicate label name");
    ok(ss_metrics_gauge(m, "g", "", 1, NULL) == NULL, "labels missing");
    ok(ss_metrics_histogram(m, "h", "", 1, L("le"), inc, 2) == NULL,
       "histogram label le");
    ok(ss_metrics_histogram(m, "h", "", 0, NULL, flat, 2) == NULL,
       "buckets not increasing");
    ok(ss_metrics_histogram(m, "h", "", 0, NULL, nanb, 2) == NULL,
       "NaN bucket");
    ok(ss_metrics_histogram(m, "h", "", 0, NULL, inc, 0) == NULL,
       "no buckets");
    ok(ss_metrics_histogram(m, "h", "", 0, NULL, inc, 2) != NULL,
       "valid histogram");
    ok(ss_metrics_gauge(m, "h", "", 0, NULL) == NULL,
       "same name, another kind");
    ok(ss_metrics_histogram(m, "h", "", 0, NULL, inc, 2) ==
           ss_metrics_histogram(m, "h", "", 0, NULL, inc, 2),
       "same family twice: get-or-create returns the same one");
    ok(ss_metrics_histogram(m, "h", "", 1, L("x"), inc, 2) == NULL,
       "same name, other labels");
    ok(ss_metrics_gauge(m, "h_count", "", 0, NULL) == NULL,
       "clash with a histogram's _count");
    ok(ss_metrics_gauge(m, "hh_sum", "", 0, NULL) != NULL &&
           ss_metrics_histogram(m, "hh", "", 0, NULL, inc, 2) == NULL,
       "histogram clashing with an existing gauge");
    is_int(ss_metrics_gauge_fn(m, "h_bucket", "", const42, NULL), SS_EINVAL,
           "gauge_fn clash is SS_EINVAL");
    is_int(ss_metrics_gauge_fn(m, "up", "", NULL, NULL), SS_EINVAL,
           "gauge_fn without a function");
    ss_metrics_free(m);
}

static void
test_remove(void)
{
    ss_metrics_t *m = ss_metrics_new();
    ss_metric_t *c = ss_metrics_counter(m, "inf_total", "I.", 1, L("model"));
    ss_series_t *a = ss_metric_series(c, L("a"));
    ss_series_t *b = ss_metric_series(c, L("b"));
    ss_series_t *a2;
    char *out;

    ss_series_add(a, 7);
    ss_series_add(b, 1);
    ss_metric_series_remove(c, L("a"));
    ss_metric_series_remove(c, L("nope"));
    ss_series_add(a, 1); /* a stale holder must still be able to write */
    ss_series_add(ss_metric_series(c, L("c")), 2);
    out = render(m);
    is_str(out,
           "# HELP inf_total I.\n# TYPE inf_total counter\n"
           "inf_total{model=\"b\"} 1\ninf_total{model=\"c\"} 2\n",
           "removed series not rendered, new series appended");
    free(out);
    a2 = ss_metric_series(c, L("a"));
    ok(a2 != NULL && a2 != a && ss_series_value(a2) == 0,
       "re-created series starts from zero");
    ss_metric_series_remove(c, L("c")); /* the tail */
    ss_series_add(ss_metric_series(c, L("d")), 4);
    out = render(m);
    is_str(out,
           "# HELP inf_total I.\n# TYPE inf_total counter\n"
           "inf_total{model=\"b\"} 1\ninf_total{model=\"a\"} 0\n"
           "inf_total{model=\"d\"} 4\n",
           "removing the last series keeps the list consistent");
    free(out);
    ok(ss_metric_series(c, NULL) == NULL, "labelled family needs values");
    ok(ss_metric_series(c, L(NULL)) == NULL, "NULL label value refused");
    ss_metrics_free(m);
}

#define NTHREADS 2
#define NITER 200000

struct worker {
    ss_metric_t *c, *h, *g;
    int id;
};

static void *
work(void *arg)
{
    struct worker *w = arg;
    int i;

    for (i = 0; i < NITER; i++) {
        /* Both threads race to create the same series, then update it. */
        ss_series_t *s = ss_metric_series(w->c, L(i % 2 ? "odd" : "even"));

        ss_series_add(s, 1);
        ss_series_observe(ss_metric_series(w->h, NULL), (i % 4) * 0.5);
        ss_series_add(ss_metric_series(w->g, NULL), w->id ? 0.25 : -0.25);
    }
    return NULL;
}

static void
test_threads(void)
{
    ss_metrics_t *m = ss_metrics_new();
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    ss_metric_t *c = ss_metrics_counter(m, "ops_total", "O.", 1, L("kind"));
    ss_metric_t *h = ss_metrics_histogram(m, "lat_seconds", "L.", 0, NULL,
                                          (const double[]){0.5, 1}, 2);
    ss_metric_t *g = ss_metrics_gauge(m, "bal", "B.", 0, NULL);
    char *out, want[512];
    int i;

    for (i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){c, h, g, i};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    is_close(ss_series_value(ss_metric_series(c, L("odd"))),
             NTHREADS * NITER / 2, 0, 0, "concurrent counter adds sum up");
    is_close(ss_series_value(ss_metric_series(g, NULL)), 0, 0, 0,
             "concurrent gauge adds cancel");
    out = render(m);
    snprintf(want, sizeof want,
             "# HELP ops_total O.\n# TYPE ops_total counter\n"
             "ops_total{kind=\"even\"} %d\nops_total{kind=\"odd\"} %d\n"
             "# HELP lat_seconds L.\n# TYPE lat_seconds histogram\n"
             "lat_seconds_bucket{le=\"0.5\"} %d\n"
             "lat_seconds_bucket{le=\"1\"} %d\n"
             "lat_seconds_bucket{le=\"+Inf\"} %d\n"
             "lat_seconds_sum %d\nlat_seconds_count %d\n"
             "# HELP bal B.\n# TYPE bal gauge\nbal 0\n",
             NITER, NITER, NITER, 3 * NITER / 2, 2 * NITER,
             3 * NITER / 2, 2 * NITER);
    is_str(out, want, "concurrent observations all counted");
    free(out);
    ss_metrics_free(m);
}

static void
test_buckets(void)
{
    const double *b;
    double e[4];
    int n, i, inc = 1;

    b = ss_metrics_latency_buckets(&n);
    for (i = 1; i < n; i++)
        inc &= b[i] > b[i - 1];
    ok(n >= 10 && inc && b[0] <= 0.001 && b[n - 1] >= 10,
       "latency buckets: %d increasing bounds from %g to %g s", n, b[0],
       b[n - 1]);
    is_int(ss_metrics_exp_buckets(0.001, 10, 4, e), 0, "exp buckets");
    is_close(e[3], 1, 1e-12, 0, "exp buckets reach start*factor^(n-1)");
    is_int(ss_metrics_exp_buckets(1, 1, 4, e), SS_EINVAL, "factor 1 refused");
}

/* Builds and renders a registry with every allocation failing in turn;
 * each failure must surface as NULL/SS_ENOMEM with nothing leaked (ASan
 * checks the leaks). */
static void
test_alloc_failures(void)
{
    int n, failures = 0, bad = 0;

    for (n = 1; n < 200; n++) {
        ss_metrics_t *m;
        ss_metric_t *c = NULL, *h = NULL;
        char *out = NULL;
        int rc = 0, complete;

        ss_alloc_fail_after(n);
        if ((m = ss_metrics_new()) != NULL) {
            c = ss_metrics_counter(m, "a_total", "A.", 2, L("x", "y"));
            h = ss_metrics_histogram(m, "b", "B.", 1, L("z"),
                                     (const double[]){1, 2, 3}, 3);
            ss_series_add(ss_metric_series(c, L("1", "2")), 1);
            ss_series_observe(ss_metric_series(h, L("q")), 1);
            rc = ss_metrics_render(m, &out, NULL);
            if (rc != 0 && (rc != SS_ENOMEM || out != NULL))
                bad++;
        }
        ss_alloc_fail_after(0);
        complete = m && c && h && rc == 0 && out &&
                   strstr(out, "a_total{x=\"1\",y=\"2\"} 1\n") &&
                   strstr(out, "b_count{z=\"q\"} 1\n");
        free(out);
        ss_metrics_free(m);
        if (complete)
            break;
        failures++;
    }
    ok(n < 200 && bad == 0, "survived %d allocation failures", failures);
}

/* promtool reads the exposition on stdin; its findings go to a file we
 * show as diagnostics. */
static void
test_promtool(void)
{
    static const double b[] = {0.005, 0.05, 0.5, 5};
    ss_metrics_t *m;
    ss_metric_t *req, *dur, *inflight, *info, *inf;
    const double *lb;
    double up = 12.5, rss = 52428800;
    char *out = NULL, tmp[] = "/tmp/ss-promtool-XXXXXX", cmd[128], line[512];
    FILE *p, *f;
    int fd, nlb, status;

    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("ok %d # SKIP promtool not installed (Debian: prometheus)\n",
               ++tap_n_);
        return;
    }
    m = ss_metrics_new();
    lb = ss_metrics_latency_buckets(&nlb);
    info = ss_metrics_gauge(m, "slimserve_build_info",
                            "Build information; the value is always 1.", 2,
                            L("version", "commit"));
    ss_series_set(ss_metric_series(info, L("0.1.0", "abc123")), 1);
    ss_metrics_gauge_fn(m, "slimserve_uptime_seconds",
                        "Seconds since the daemon started.", const42, &up);
    ss_metrics_gauge_fn(m, "slimserve_resident_memory_bytes",
                        "Resident memory size in bytes.", const42, &rss);
    req = ss_metrics_counter(m, "slimserve_http_requests_total",
                             "HTTP requests by endpoint class and status.",
                             2, L("endpoint", "code"));
    inflight = ss_metrics_gauge(m, "slimserve_http_requests_in_flight",
                                "HTTP requests being served.", 0, NULL);
    dur = ss_metrics_histogram(m, "slimserve_http_request_duration_seconds",
                               "HTTP request latency in seconds.", 1,
                               L("endpoint"), lb, nlb);
    inf = ss_metrics_histogram(m, "slimserve_inference_duration_seconds",
                               "Inference latency by model.", 2,
                               L("model", "version"), b, 4);
    ss_series_add(ss_metric_series(req, L("health", "200")), 1234);
    ss_series_add(ss_metric_series(req, L("infer", "200")), 56);
    ss_series_add(ss_metric_series(req, L("other", "404")), 3);
    ss_series_set(ss_metric_series(inflight, NULL), 2);
    ss_series_observe(ss_metric_series(dur, L("health")), 0.0003);
    ss_series_observe(ss_metric_series(dur, L("infer")), 0.042);
    ss_series_observe(ss_metric_series(inf, L("resnet \"v\"\\2\n", "1")),
                      0.031);
    ok(ss_metrics_render(m, &out, NULL) == 0, "realistic registry renders");
    fd = mkstemp(tmp);
    if (fd >= 0)
        close(fd);
    snprintf(cmd, sizeof cmd, "promtool check metrics >%s 2>&1", tmp);
    p = popen(cmd, "w");
    if (p != NULL && out != NULL)
        fputs(out, p);
    status = p != NULL ? pclose(p) : -1;
    ok(status == 0, "promtool check metrics accepts the output");
    if ((f = fopen(tmp, "r")) != NULL) {
        while (fgets(line, sizeof line, f) != NULL)
            tap_diag("promtool: %.*s", (int)strcspn(line, "\n"), line);
        fclose(f);
    }
    if (status != 0 && out != NULL) {
        char *save = NULL, *l;

        for (l = strtok_r(out, "\n", &save); l != NULL;
             l = strtok_r(NULL, "\n", &save))
            tap_diag("| %s", l);
    }
    unlink(tmp);
    free(out);
    ss_metrics_free(m);
}

/* A render hook sets a gauge from what it samples at scrape time. */
typedef struct {
    ss_metric_t *g;
    int calls;
} hook_arg_t;

static void
hook(void *arg)
{
    hook_arg_t *h = arg;

    h->calls++;
    ss_series_set(ss_metric_series(h->g, L("m")), 100.0 * h->calls);
}

static void
test_render_hook(void)
{
    ss_metrics_t *m = ss_metrics_new();
    hook_arg_t h = { ss_metrics_gauge(m, "t_res_bytes", "R.", 1,
                                      L("model")), 0 };
    char *out;

    is_int(ss_metrics_on_render(m, hook, &h), 0, "render hook registered");
    out = render(m);
    ok(out != NULL && strstr(out, "t_res_bytes{model=\"m\"} 100\n") != NULL,
       "the hook's value is in the first render");
    free(out);
    out = render(m);
    ok(out != NULL && strstr(out, "t_res_bytes{model=\"m\"} 200\n") != NULL,
       "and sampled again at the next");
    free(out);
    ss_metrics_on_render_remove(m, hook, &h);
    out = render(m);
    is_int(h.calls, 2, "a removed hook no longer runs");
    free(out);
    is_int(ss_metrics_on_render(m, NULL, NULL), SS_EINVAL,
           "a hook without a function");
    for (int i = 0; i < SS_METRICS_MAX_HOOKS; i++)
        (void)ss_metrics_on_render(m, hook, &h);
    is_int(ss_metrics_on_render(m, hook, &h), SS_ENOMEM,
           "at most SS_METRICS_MAX_HOOKS hooks");
    ss_metrics_free(m);
}

int
main(void)
{
    test_exact_text();
    test_values();
    test_names();
    test_remove();
    test_threads();
    test_buckets();
    test_alloc_failures();
    test_promtool();
    test_render_hook();
    return tap_done();
}
