/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Prometheus metrics: rendering, and the hooks that refresh gauges before
 * a render (metrics.c has the registry).
 *
 * Rendering follows the text exposition format 0.0.4: "# HELP" and
 * "# TYPE" lines, then one line per sample; help text escapes backslash and
 * newline, label values also the double quote; floats are printed in the
 * shortest form that reads back to the same double, "+Inf", "-Inf", "NaN".
 *
 * THREADS: [any]; a render holds reg->lock over the families and
 * hook_lock over the hooks' runs.
 */

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "server/metrics_int.h"

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void
put_mem(struct buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;

        while (b->len + n + 1 > cap)
            cap *= 2;
        if ((p = ss_realloc(b->p, cap)) == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
put(struct buf *b, const char *s)
{
    put_mem(b, s, strlen(s));
}

/* Appends s escaping backslash, newline and, for label values, '"'. */
static void
put_escaped(struct buf *b, const char *s, int quote)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        const char *rep = NULL;

        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (quote && *s == '"')
            rep = "\\\"";
        if (rep == NULL)
            continue;
        put_mem(b, run, (size_t)(s - run));
        put(b, rep);
        run = s + 1;
    }
    put_mem(b, run, (size_t)(s - run));
}

/* The shortest of %.15g, %.17g that reads back as v. */
static void
fmt_double(char *dst, size_t n, double v)
{
    if (isnan(v))
        snprintf(dst, n, "NaN");
    else if (isinf(v))
        snprintf(dst, n, "%s", v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(dst, n, "%.15g", v);
        if (strtod(dst, NULL) != v)
            snprintf(dst, n, "%.17g", v);
    }
}

static void
put_double(struct buf *b, double v)
{
    char tmp[40];

    fmt_double(tmp, sizeof tmp, v);
    put(b, tmp);
}

static void
put_u64(struct buf *b, uint64_t v)
{
    char tmp[24];

    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    put(b, tmp);
}

/* name{a="x",b="y"[,le="bound"]} -- braces only when there are labels. */
static void
put_sample_name(struct buf *b, const ss_metric_t *f, const ss_series_t *s,
                const char *sfx, const char *le)
{
    int i;

    put(b, f->name);
    put(b, sfx);
    if (f->nlabels == 0 && le == NULL)
        return;
    put(b, "{");
    for (i = 0; i < f->nlabels; i++) {
        if (i > 0)
            put(b, ",");
        put(b, f->label_names[i]);
        put(b, "=\"");
        put_escaped(b, s->values[i], 1);
        put(b, "\"");
    }
    if (le != NULL) {
        if (f->nlabels > 0)
            put(b, ",");
        put(b, "le=\"");
        put(b, le);
        put(b, "\"");
    }
    put(b, "}");
}

static void
render_histogram(struct buf *b, const ss_metric_t *f, ss_series_t *s)
{
    char le[40];
    uint64_t cum = 0;
    int i;

    for (i = 0; i <= f->nbuckets; i++) {
        cum += atomic_load_explicit(&s->counts[i], memory_order_relaxed);
        if (i < f->nbuckets)
            fmt_double(le, sizeof le, f->buckets[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        put_sample_name(b, f, s, "_bucket", le);
        put(b, " ");
        put_u64(b, cum);
        put(b, "\n");
    }
    put_sample_name(b, f, s, "_sum", NULL);
    put(b, " ");
    put_double(b, ss_series_value(s));
    put(b, "\n");
    put_sample_name(b, f, s, "_count", NULL);
    put(b, " ");
    put_u64(b, cum);
    put(b, "\n");
}

/* [locked] */
static void
render_family(struct buf *b, const ss_metric_t *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram",
                                        "gauge"};
    ss_series_t *s;

    if (f->series == NULL && f->kind != GAUGE_FN)
        return;
    put(b, "# HELP ");
    put(b, f->name);
    put(b, " ");
    put_escaped(b, f->help, 0);
    put(b, "\n# TYPE ");
    put(b, f->name);
    put(b, " ");
    put(b, types[f->kind]);
    put(b, "\n");
    if (f->kind == GAUGE_FN) {
        put(b, f->name);
        put(b, " ");
        put_double(b, f->fn(f->arg));
        put(b, "\n");
        return;
    }
    for (s = f->series; s != NULL; s = s->next) {
        if (f->kind == HISTOGRAM) {
            render_histogram(b, f, s);
            continue;
        }
        put_sample_name(b, f, s, "", NULL);
        put(b, " ");
        put_double(b, ss_series_value(s));
        put(b, "\n");
    }
}

int
ss_metrics_on_render(ss_metrics_t *m, void (*fn)(void *arg), void *arg)
{
    int rc = 0;

    if (m == NULL || fn == NULL)
        return SS_EINVAL;
    pthread_mutex_lock(&m->hook_lock);
    if (m->n_hooks == SS_METRICS_MAX_HOOKS) {
        rc = SS_ENOMEM;
    } else {
        m->hooks[m->n_hooks].fn = fn;
        m->hooks[m->n_hooks].arg = arg;
        m->n_hooks++;
    }
    pthread_mutex_unlock(&m->hook_lock);
    return rc;
}

void
ss_metrics_on_render_remove(ss_metrics_t *m, void (*fn)(void *arg),
                            void *arg)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->hook_lock);
    for (int i = 0; i < m->n_hooks; i++)
        if (m->hooks[i].fn == fn && m->hooks[i].arg == arg) {
            m->hooks[i] = m->hooks[--m->n_hooks];
            break;
        }
    pthread_mutex_unlock(&m->hook_lock);
}

int
ss_metrics_render(ss_metrics_t *m, char **out, size_t *len)
{
    struct buf b = {NULL, 0, 0, 0};
    const ss_metric_t *f;
    int rc = 0;

    *out = NULL;
    if (len != NULL)
        *len = 0;
    put(&b, "");
    pthread_mutex_lock(&m->hook_lock);
    for (int i = 0; i < m->n_hooks; i++)
        m->hooks[i].fn(m->hooks[i].arg);
    pthread_mutex_unlock(&m->hook_lock);
    pthread_mutex_lock(&m->lock);
    for (f = m->families; f != NULL; f = f->next)
        render_family(&b, f);
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        ss_free(b.p);
        rc = SS_ENOMEM;
        goto done;
    }
    *out = b.p;
    if (len != NULL)
        *len = b.len;
done:
    return rc;
}
