/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_METRICS_H
#define SS_SERVER_METRICS_H

/*
 * A Prometheus metrics registry and its text exposition (format 0.0.4).
 *
 * A registry holds families (counter, gauge, histogram); a family holds one
 * series per distinct tuple of label values.  Register families at start-up,
 * keep the ss_metric_t pointers, and look series up with ss_metric_series:
 * where the label values are known in advance (an endpoint class, a loaded
 * model), keep the series pointer too, so the hot path is one atomic update.
 *
 *   ss_metric_t *req = ss_metrics_counter(m, "slimserve_http_requests_total",
 *       "HTTP requests by endpoint class and status code.", 2,
 *       (const char *[]){"endpoint", "code"});
 *   ss_series_add(ss_metric_series(req, (const char *[]){"infer", "200"}), 1);
 *
 * Names follow the Prometheus rules and conventions, checked on
 * registration: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__"; counters end in
 * "_total" and nothing else does; a histogram may not use a label "le";
 * no two families may produce the same sample name (a histogram "x"
 * produces x_bucket, x_sum and x_count).
 *
 * Ownership: every string passed in is copied.  Families and series belong
 * to the registry and stay valid until ss_metrics_free -- a removed series
 * too, so a thread still holding its pointer writes into a detached series
 * that is no longer rendered.
 *
 * Misuse of a series (a negative or NaN counter increment, set on a
 * counter, observe on a non-histogram, NaN observations) is ignored: a
 * metric must never take the server down.
 */

#include <stddef.h>

typedef struct ss_metrics ss_metrics_t; /* registry of families */
typedef struct ss_metric ss_metric_t;   /* one family */
typedef struct ss_series ss_series_t;   /* one labelled series of a family */

/* [init] A new, empty registry, or NULL when out of memory. */
ss_metrics_t *ss_metrics_new(void);

/* [init] Frees the registry, its families and all series (accepts NULL).
 * No other thread may use any of them any more. */
void ss_metrics_free(ss_metrics_t *m);

/* [any] Register a family.  Returns a borrowed pointer owned by the
 * registry, or NULL on allocation failure or an invalid or clashing name.
 * Registering the same name again with the same kind, label names and
 * buckets returns the existing family (get-or-create), so per-model code
 * can ask for "its" family each time.  label_names may be NULL when
 * nlabels == 0; both arrays are copied. */
ss_metric_t *ss_metrics_counter(ss_metrics_t *m, const char *name,
                                const char *help, int nlabels,
                                const char *const *label_names);
ss_metric_t *ss_metrics_gauge(ss_metrics_t *m, const char *name,
                              const char *help, int nlabels,
                              const char *const *label_names);

/* buckets: the finite upper bounds, strictly increasing (at least one);
 * the "+Inf" bucket is implicit. */
ss_metric_t *ss_metrics_histogram(ss_metrics_t *m, const char *name,
                                  const char *help, int nlabels,
                                  const char *const *label_names,
                                  const double *buckets, int nbuckets);

/* [any] A gauge without labels whose value is fn(arg), called at render
 * time with the registry locked (so fn must not call into the registry;
 * it may run on whichever thread renders).  Returns 0, SS_EINVAL or
 * SS_ENOMEM. */
int ss_metrics_gauge_fn(ss_metrics_t *m, const char *name, const char *help,
                        double (*fn)(void *arg), void *arg);

/* [any] fn(arg) runs at the start of every render, before the registry
 * is locked, so it may set series (computed at scrape time: a model's
 * resident memory).  Callbacks run one at a time, under a lock of their
 * own that ss_metrics_on_render_remove takes too: once that returns, fn
 * is not running and will not run with arg again.  0, SS_ENOMEM (too
 * many: SS_METRICS_MAX_HOOKS) or SS_EINVAL. */
#define SS_METRICS_MAX_HOOKS 8
int ss_metrics_on_render(ss_metrics_t *m, void (*fn)(void *arg), void *arg);
void ss_metrics_on_render_remove(ss_metrics_t *m, void (*fn)(void *arg),
                                 void *arg);

/* [any] Get or create the series for these label values (f's nlabels
 * strings; NULL when it has none).  Values may be any UTF-8; they are
 * escaped on output.  Takes the registry lock.  Returns a borrowed pointer
 * valid until ss_metrics_free, or NULL on allocation failure or bad
 * arguments (a NULL family or value).  Series render in creation order. */
ss_series_t *ss_metric_series(ss_metric_t *f,
                              const char *const *label_values);

/* [any] Lock-free updates. */
void ss_series_add(ss_series_t *s, double v);     /* counter (v >= 0), gauge */
void ss_series_set(ss_series_t *s, double v);     /* gauge */
void ss_series_observe(ss_series_t *s, double v); /* histogram */

/* [any] The current value of a counter or gauge series, or the sum of a
 * histogram's observations (mostly for tests). */
double ss_series_value(const ss_series_t *s);

/* [any] Stop rendering the series with these label values (a model was
 * unloaded).  Its pointer stays valid; a later ss_metric_series with the
 * same values creates a fresh series starting from zero.  No-op when there
 * is no such series. */
void ss_metric_series_remove(ss_metric_t *f, const char *const *label_values);

/* [any] Renders every family, in registration order, in the text
 * exposition format 0.0.4 (Content-Type "text/plain; version=0.0.4;
 * charset=utf-8") into a new NUL-terminated buffer that the caller frees
 * with free().  Returns 0 or SS_ENOMEM (then *out is NULL). */
int ss_metrics_render(ss_metrics_t *m, char **out, size_t *len);

#define SS_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Default buckets for request latencies in seconds, from 0.5 ms to 30 s
 * (a health check is sub-millisecond, a big batch takes seconds).  Returns
 * a static array and stores its length in *nbuckets. */
const double *ss_metrics_latency_buckets(int *nbuckets);

/* Fills out[0..n) with start, start*factor, start*factor^2, ...  Returns 0,
 * or SS_EINVAL unless start > 0, factor > 1 and n >= 1. */
int ss_metrics_exp_buckets(double start, double factor, int n, double *out);

/*
 * THREADS: everything is [any].  One mutex per registry guards the family
 * and series lists (registration, series lookup and removal, render); the
 * series updates are lock-free atomics (doubles as CAS on their bits), so
 * executor threads never wait for a render.  A render is not a snapshot:
 * a histogram's _sum may lag its buckets by an in-flight observation, but
 * _count always equals the "+Inf" bucket.
 */

#endif
