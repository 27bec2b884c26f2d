/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Prometheus metrics registry.
 *
 * DESIGN.  A registry is a list of families in registration order; a family
 * is a list of series in creation order.  Both lists only grow, except that
 * ss_metric_series_remove moves a series to the family's "retired" list:
 * other threads may still hold its pointer (a batch finishing on an
 * executor after its model was unloaded), so it is freed with the registry
 * and never before.  A series carries its values as atomics -- a double
 * kept as the bits of a uint64 and updated by compare-and-swap, and for a
 * histogram one plain counter per bucket (not cumulative, so an
 * observation touches one bucket; the render sums them) -- so updates never
 * lock.  Lookups hash the label values and compare the hash first; families
 * have a handful of series, so a list is enough.
 *
 * Rendering (the text exposition format) is metrics_render.c.
 *
 * THREADS: [any].  reg->lock guards the family lists, every series list and
 * the gauge callbacks; series values are atomics.
 */

#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "server/metrics_int.h"

static const double latency_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

/* Doubles as atomics: the bits travel through memcpy, never a cast. */
static double
u2d(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof d);
    return d;
}

static uint64_t
d2u(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof u);
    return u;
}

static void
atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
        p, &old, d2u(u2d(old) + v), memory_order_relaxed,
        memory_order_relaxed))
        ;
}

static int
valid_name(const char *s, int colon)
{
    size_t i;

    if (s == NULL || s[0] == '\0')
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (colon && c == ':');

        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int
nsuffixes(enum kind kind)
{
    return kind == HISTOGRAM ? 4 : 1;
}

static const char *
suffix(enum kind kind, int i)
{
    static const char *const hist[] = {"", "_bucket", "_sum", "_count"};

    return kind == HISTOGRAM ? hist[i] : "";
}

/* Whether name+sa and other+sb spell the same string. */
static int
same_joined(const char *a, const char *sa, const char *b, const char *sb)
{
    size_t la = strlen(a), lsa = strlen(sa), lb = strlen(b), i;

    if (la + lsa != lb + strlen(sb))
        return 0;
    for (i = 0; i < la + lsa; i++) {
        char ca = i < la ? a[i] : sa[i - la];
        char cb = i < lb ? b[i] : sb[i - lb];

        if (ca != cb)
            return 0;
    }
    return 1;
}

/* [locked] Whether a family (kind, name) would render a name that an
 * existing family renders too. */
static int
clashes(const ss_metrics_t *m, enum kind kind, const char *name)
{
    const ss_metric_t *f;
    int i, j;

    for (f = m->families; f != NULL; f = f->next)
        for (i = 0; i < nsuffixes(f->kind); i++)
            for (j = 0; j < nsuffixes(kind); j++)
                if (same_joined(f->name, suffix(f->kind, i), name,
                                suffix(kind, j)))
                    return 1;
    return 0;
}

/* The family already registered under name with the same kind, labels
 * and buckets, so that modules creating "their" family more than once
 * (one per model, say) share it; NULL when there is none. */
static ss_metric_t *
same_family(const ss_metrics_t *m, const ss_metric_t *want)
{
    ss_metric_t *f;
    int i;

    for (f = m->families; f != NULL; f = f->next) {
        if (strcmp(f->name, want->name) != 0 || f->kind != want->kind ||
            f->nlabels != want->nlabels || f->nbuckets != want->nbuckets ||
            f->fn != NULL || want->fn != NULL)
            continue;
        for (i = 0; i < f->nlabels; i++)
            if (strcmp(f->label_names[i], want->label_names[i]) != 0)
                return NULL;
        for (i = 0; i < f->nbuckets; i++)
            if (f->buckets[i] != want->buckets[i])
                return NULL;
        return f;
    }
    return NULL;
}

static int
valid_labels(enum kind kind, int nlabels, const char *const *names)
{
    int i, j;

    if (nlabels < 0 || (nlabels > 0 && names == NULL))
        return 0;
    for (i = 0; i < nlabels; i++) {
        if (!valid_name(names[i], 0) || strncmp(names[i], "__", 2) == 0)
            return 0;
        if (kind == HISTOGRAM && strcmp(names[i], "le") == 0)
            return 0;
        for (j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return 0;
    }
    return 1;
}

static int
valid_buckets(const double *b, int n)
{
    int i;

    if (n < 1 || b == NULL)
        return 0;
    for (i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return 0;
    return 1;
}

static void
free_strv(char **v, int n)
{
    int i;

    if (v == NULL)
        return;
    for (i = 0; i < n; i++)
        ss_free(v[i]);
    ss_free(v);
}

/* Copies n strings; NULL when out of memory or when one of them is NULL. */
static char **
dup_strv(const char *const *src, int n)
{
    char **v;
    int i;

    if ((v = ss_calloc((size_t)n + 1, sizeof *v)) == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (src[i] == NULL || (v[i] = ss_strdup(src[i])) == NULL) {
            free_strv(v, n);
            return NULL;
        }
    }
    return v;
}

static void
free_series_list(ss_series_t *s, int nlabels)
{
    while (s != NULL) {
        ss_series_t *next = s->next;

        free_strv(s->values, nlabels);
        ss_free(s);
        s = next;
    }
}

static void
free_family(ss_metric_t *f)
{
    if (f == NULL)
        return;
    free_series_list(f->series, f->nlabels);
    free_series_list(f->retired, f->nlabels);
    free_strv(f->label_names, f->nlabels);
    ss_free(f->buckets);
    ss_free(f->help);
    ss_free(f->name);
    ss_free(f);
}

static uint64_t
hash_values(const char *const *values, int n)
{
    uint64_t h = 14695981039346656037ULL;
    int i;

    for (i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)values[i];

        for (; *p != '\0'; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL;
    }
    return h;
}

/* [locked] */
static ss_series_t **
find_series(ss_metric_t *f, const char *const *values, uint64_t hash)
{
    ss_series_t **pp;
    int i;

    for (pp = &f->series; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->hash != hash)
            continue;
        for (i = 0; i < f->nlabels; i++)
            if (strcmp((*pp)->values[i], values[i]) != 0)
                break;
        if (i == f->nlabels)
            return pp;
    }
    return NULL;
}

/* [locked] Creates a series and appends it to f's list. */
static ss_series_t *
new_series(ss_metric_t *f, const char *const *values, uint64_t hash)
{
    ss_series_t *s;
    size_t ncounts = f->kind == HISTOGRAM ? (size_t)f->nbuckets + 1 : 0;
    size_t i;

    s = ss_malloc(sizeof *s + ncounts * sizeof s->counts[0]);
    if (s == NULL)
        return NULL;
    s->next = NULL;
    s->family = f;
    s->hash = hash;
    if ((s->values = dup_strv(values, f->nlabels)) == NULL) {
        ss_free(s);
        return NULL;
    }
    atomic_init(&s->value, d2u(0.0));
    for (i = 0; i < ncounts; i++)
        atomic_init(&s->counts[i], 0);
    *f->series_tail = s;
    f->series_tail = &s->next;
    return s;
}

ss_metrics_t *
ss_metrics_new(void)
{
    ss_metrics_t *m;

    if ((m = ss_calloc(1, sizeof *m)) == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        ss_free(m);
        return NULL;
    }
    if (pthread_mutex_init(&m->hook_lock, NULL) != 0) {
        pthread_mutex_destroy(&m->lock);
        ss_free(m);
        return NULL;
    }
    m->families_tail = &m->families;
    return m;
}

void
ss_metrics_free(ss_metrics_t *m)
{
    ss_metric_t *f, *next;

    if (m == NULL)
        return;
    for (f = m->families; f != NULL; f = next) {
        next = f->next;
        free_family(f);
    }
    pthread_mutex_destroy(&m->hook_lock);
    pthread_mutex_destroy(&m->lock);
    ss_free(m);
}

/* Validates, builds and publishes a family.  Returns 0 and sets *out, or
 * SS_EINVAL (a bad or taken name) or SS_ENOMEM. */
static int
add_family(ss_metrics_t *m, enum kind kind, const char *name,
           const char *help, int nlabels, const char *const *label_names,
           const double *buckets, int nbuckets, double (*fn)(void *arg),
           void *arg, ss_metric_t **out)
{
    ss_metric_t *f = NULL;
    int locked = 0, rc = SS_EINVAL;

    *out = NULL;
    if (m == NULL || !valid_name(name, 1) ||
        !valid_labels(kind, nlabels, label_names))
        goto done;
    if (ends_with(name, "_total") != (kind == COUNTER) ||
        (kind == COUNTER && strlen(name) == strlen("_total")))
        goto done;
    if (kind == HISTOGRAM && !valid_buckets(buckets, nbuckets))
        goto done;
    rc = SS_ENOMEM;
    if ((f = ss_calloc(1, sizeof *f)) == NULL)
        goto done;
    f->kind = kind;
    f->reg = m;
    f->nlabels = nlabels;
    f->series_tail = &f->series;
    f->fn = fn;
    f->arg = arg;
    if ((f->name = ss_strdup(name)) == NULL ||
        (f->help = ss_strdup(help != NULL ? help : "")) == NULL ||
        (f->label_names = dup_strv(label_names, nlabels)) == NULL)
        goto done;
    if (kind == HISTOGRAM) {
        f->nbuckets = nbuckets;
        f->buckets = ss_malloc((size_t)nbuckets * sizeof *f->buckets);
        if (f->buckets == NULL)
            goto done;
        memcpy(f->buckets, buckets, (size_t)nbuckets * sizeof *f->buckets);
    }
    /* A family without labels has exactly one series, present (at zero)
     * from the start, as Prometheus clients do. */
    if (nlabels == 0 && kind != GAUGE_FN &&
        new_series(f, NULL, hash_values(NULL, 0)) == NULL)
        goto done;
    pthread_mutex_lock(&m->lock);
    locked = 1;
    if ((*out = same_family(m, f)) != NULL) {
        rc = 0;
        goto done;
    }
    if (clashes(m, kind, name)) {
        rc = SS_EINVAL;
        goto done;
    }
    *m->families_tail = f;
    m->families_tail = &f->next;
    *out = f;
    f = NULL;
    rc = 0;
done:
    if (locked)
        pthread_mutex_unlock(&m->lock);
    free_family(f);
    return rc;
}

ss_metric_t *
ss_metrics_counter(ss_metrics_t *m, const char *name, const char *help,
                   int nlabels, const char *const *label_names)
{
    ss_metric_t *f;

    add_family(m, COUNTER, name, help, nlabels, label_names, NULL, 0, NULL,
               NULL, &f);
    return f;
}

ss_metric_t *
ss_metrics_gauge(ss_metrics_t *m, const char *name, const char *help,
                 int nlabels, const char *const *label_names)
{
    ss_metric_t *f;

    add_family(m, GAUGE, name, help, nlabels, label_names, NULL, 0, NULL,
               NULL, &f);
    return f;
}

ss_metric_t *
ss_metrics_histogram(ss_metrics_t *m, const char *name, const char *help,
                     int nlabels, const char *const *label_names,
                     const double *buckets, int nbuckets)
{
    ss_metric_t *f;

    add_family(m, HISTOGRAM, name, help, nlabels, label_names, buckets,
               nbuckets, NULL, NULL, &f);
    return f;
}

int
ss_metrics_gauge_fn(ss_metrics_t *m, const char *name, const char *help,
                    double (*fn)(void *arg), void *arg)
{
    ss_metric_t *f;

    if (fn == NULL)
        return SS_EINVAL;
    return add_family(m, GAUGE_FN, name, help, 0, NULL, NULL, 0, fn, arg,
                      &f);
}

ss_series_t *
ss_metric_series(ss_metric_t *f, const char *const *label_values)
{
    ss_series_t **pp, *s = NULL;
    uint64_t hash;
    int i;

    if (f == NULL || f->kind == GAUGE_FN ||
        (f->nlabels > 0 && label_values == NULL))
        return NULL;
    for (i = 0; i < f->nlabels; i++)
        if (label_values[i] == NULL)
            return NULL;
    hash = hash_values(label_values, f->nlabels);
    pthread_mutex_lock(&f->reg->lock);
    if ((pp = find_series(f, label_values, hash)) != NULL)
        s = *pp;
    else
        s = new_series(f, label_values, hash);
    pthread_mutex_unlock(&f->reg->lock);
    return s;
}

void
ss_metric_series_remove(ss_metric_t *f, const char *const *label_values)
{
    ss_series_t **pp, *s;
    int i;

    if (f == NULL || (f->nlabels > 0 && label_values == NULL))
        return;
    for (i = 0; i < f->nlabels; i++)
        if (label_values[i] == NULL)
            return;
    pthread_mutex_lock(&f->reg->lock);
    pp = find_series(f, label_values, hash_values(label_values, f->nlabels));
    if (pp != NULL) {
        s = *pp;
        *pp = s->next;
        if (f->series_tail == &s->next)
            f->series_tail = pp;
        s->next = f->retired;
        f->retired = s;
    }
    pthread_mutex_unlock(&f->reg->lock);
}

void
ss_series_add(ss_series_t *s, double v)
{
    if (s == NULL || isnan(v))
        return;
    if (s->family->kind == COUNTER ? v >= 0 : s->family->kind == GAUGE)
        atomic_add_double(&s->value, v);
}

void
ss_series_set(ss_series_t *s, double v)
{
    if (s != NULL && s->family->kind == GAUGE)
        atomic_store_explicit(&s->value, d2u(v), memory_order_relaxed);
}

void
ss_series_observe(ss_series_t *s, double v)
{
    const ss_metric_t *f;
    int lo, hi;

    if (s == NULL || s->family->kind != HISTOGRAM || isnan(v))
        return;
    f = s->family;
    /* The first bucket whose bound is >= v; nbuckets is "+Inf". */
    lo = 0;
    hi = f->nbuckets;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;

        if (v <= f->buckets[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&s->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&s->value, v);
}

double
ss_series_value(const ss_series_t *s)
{
    if (s == NULL)
        return 0;
    return u2d(atomic_load_explicit(&((ss_series_t *)s)->value,
                                    memory_order_relaxed));
}

const double *
ss_metrics_latency_buckets(int *nbuckets)
{
    *nbuckets = (int)(sizeof latency_buckets / sizeof latency_buckets[0]);
    return latency_buckets;
}

int
ss_metrics_exp_buckets(double start, double factor, int n, double *out)
{
    int i;

    if (!(start > 0) || !(factor > 1) || n < 1 || out == NULL ||
        !isfinite(start) || !isfinite(factor))
        return SS_EINVAL;
    for (i = 0; i < n; i++) {
        out[i] = start;
        start *= factor;
    }
    return 0;
}
