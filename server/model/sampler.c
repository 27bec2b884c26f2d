/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic sampling.
 *
 * DESIGN: a FIFO of copied requests (each with its inputs and row count),
 * trimmed from the old end whenever rows or bytes pass their bounds.  The
 * decision to sample is a xorshift draw against the probability, on the
 * loop thread, so it costs nothing when a request is not taken.
 *
 * THREADS: offer [loop]; everything else [any]; lock guards the FIFO.
 */
#include "config.h"

#include "server/model/sampler.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"

typedef struct sample {
    struct sample *next;
    int n;
    int64_t rows;
    size_t bytes;
    ss_tensor_t t[];
} sample_t;

struct ss_sampler {
    pthread_mutex_t lock;
    sample_t *head, *tail;      /* oldest first */
    int64_t rows, cap_rows;
    int64_t bytes, max_bytes;
    uint64_t rng;               /* [loop] */
    uint64_t threshold;         /* probability scaled to 2^64 */
    bool always;
    ss_series_t *s_rows, *s_bytes, *s_taken;
};

static void
sample_free(sample_t *s)
{
    int i;

    if (s == NULL)
        return;
    for (i = 0; i < s->n; i++)
        ss_free(s->t[i].data);
    ss_free(s);
}

ss_sampler_t *
ss_sampler_new(int capacity_rows, double probability, int64_t max_bytes,
               ss_metrics_t *metrics, const char *model)
{
    static const char *const l[] = { "model" };
    ss_sampler_t *s;

    if ((s = ss_calloc(1, sizeof(*s))) == NULL)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->cap_rows = capacity_rows;
    s->max_bytes = max_bytes;
    s->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)s;
    s->always = probability >= 1.0;
    s->threshold = (uint64_t)(probability * 18446744073709551615.0);
    if (metrics != NULL) {
        const char *lv[] = { model };
        ss_metric_t *f;

        f = ss_metrics_gauge(metrics, "slimserve_traffic_sample_rows",
                             "Request rows held for calibration.", 1, l);
        if (f != NULL)
            s->s_rows = ss_metric_series(f, lv);
        f = ss_metrics_gauge(metrics, "slimserve_traffic_sample_bytes",
                             "Memory held by sampled requests.", 1, l);
        if (f != NULL)
            s->s_bytes = ss_metric_series(f, lv);
        f = ss_metrics_counter(metrics, "slimserve_traffic_sampled_total",
                               "Requests copied into the sample ring.", 1,
                               l);
        if (f != NULL)
            s->s_taken = ss_metric_series(f, lv);
    }
    return s;
}

void
ss_sampler_free(ss_sampler_t *s)
{
    sample_t *x, *next;

    if (s == NULL)
        return;
    for (x = s->head; x != NULL; x = next) {
        next = x->next;
        sample_free(x);
    }
    pthread_mutex_destroy(&s->lock);
    ss_free(s);
}

static uint64_t
next_rand(ss_sampler_t *s)
{
    uint64_t x = s->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rng = x;
    return x;
}

int
ss_sampler_offer(ss_sampler_t *s, int n, const ss_tensor_t *inputs,
                 int64_t rows)
{
    sample_t *x, *old;
    size_t bytes = 0;
    int i;

    if (s == NULL || rows <= 0 || rows > s->cap_rows)
        return 0;
    if (!s->always && next_rand(s) > s->threshold)
        return 0;
    if ((x = ss_calloc(1, sizeof(*x) + sizeof(ss_tensor_t) * (size_t)n)) ==
        NULL)
        return SS_ENOMEM;
    x->rows = rows;
    for (i = 0; i < n; i++) {
        size_t nb = (size_t)ss_tensor_numel(&inputs[i]) *
                    ss_dtype_size(inputs[i].dtype);

        x->t[i] = inputs[i];
        if ((x->t[i].data = ss_aligned_alloc(nb)) == NULL) {
            x->n = i;
            sample_free(x);
            return SS_ENOMEM;
        }
        memcpy(x->t[i].data, inputs[i].data, nb);
        x->n = i + 1;
        bytes += nb;
    }
    x->bytes = bytes;
    if ((int64_t)bytes > s->max_bytes) {
        sample_free(x);
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = x;
    else
        s->head = x;
    s->tail = x;
    s->rows += rows;
    s->bytes += (int64_t)bytes;
    while (s->head != NULL &&
           (s->rows > s->cap_rows || s->bytes > s->max_bytes)) {
        old = s->head;
        s->head = old->next;
        if (s->head == NULL)
            s->tail = NULL;
        s->rows -= old->rows;
        s->bytes -= (int64_t)old->bytes;
        sample_free(old);
    }
    if (s->s_rows)
        ss_series_set(s->s_rows, (double)s->rows);
    if (s->s_bytes)
        ss_series_set(s->s_bytes, (double)s->bytes);
    if (s->s_taken)
        ss_series_add(s->s_taken, 1);
    pthread_mutex_unlock(&s->lock);
    return 1;
}

static int
same_shape(const sample_t *a, const sample_t *b)
{
    int i, k;

    if (a->n != b->n)
        return 0;
    for (i = 0; i < a->n; i++) {
        if (a->t[i].dtype != b->t[i].dtype || a->t[i].ndim != b->t[i].ndim)
            return 0;
        for (k = 1; k < a->t[i].ndim; k++)
            if (a->t[i].dims[k] != b->t[i].dims[k])
                return 0;
    }
    return 1;
}

int64_t
ss_sampler_snapshot(ss_sampler_t *s, int64_t max_rows, int n,
                    ss_tensor_t *out, ss_err_t *err)
{
    sample_t *x, *ref;
    int64_t rows = 0, skip, done = 0;
    int i, rc = 0;

    memset(out, 0, sizeof(*out) * (size_t)n);
    pthread_mutex_lock(&s->lock);
    ref = s->tail;
    if (ref == NULL || ref->n != n)
        goto unlock;
    for (x = s->head; x != NULL; x = x->next)
        if (same_shape(x, ref))
            rows += x->rows;
    skip = rows > max_rows ? rows - max_rows : 0;
    rows -= skip;
    for (i = 0; i < n; i++) {
        size_t row_bytes = ss_dtype_size(ref->t[i].dtype);
        int k;

        out[i] = ref->t[i];
        out[i].dims[0] = rows;
        for (k = 1; k < ref->t[i].ndim; k++)
            row_bytes *= (size_t)ref->t[i].dims[k];
        if ((out[i].data = ss_aligned_alloc(row_bytes * (size_t)rows)) ==
            NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "out of memory for samples");
            goto unlock;
        }
    }
    /* Newest rows win: skip the oldest beyond max_rows, whole samples. */
    for (x = s->head; x != NULL; x = x->next) {
        if (!same_shape(x, ref))
            continue;
        if (skip >= x->rows) {
            skip -= x->rows;
            continue;
        }
        for (i = 0; i < n; i++) {
            size_t row_bytes = ss_dtype_size(x->t[i].dtype);
            int k;

            for (k = 1; k < x->t[i].ndim; k++)
                row_bytes *= (size_t)x->t[i].dims[k];
            memcpy((char *)out[i].data + row_bytes * (size_t)done,
                   (char *)x->t[i].data + row_bytes * (size_t)skip,
                   row_bytes * (size_t)(x->rows - skip));
        }
        done += x->rows - skip;
        skip = 0;
    }
unlock:
    pthread_mutex_unlock(&s->lock);
    if (rc < 0) {
        for (i = 0; i < n; i++)
            ss_free(out[i].data);
        memset(out, 0, sizeof(*out) * (size_t)n);
        return rc;
    }
    return done;
}

int64_t
ss_sampler_rows(ss_sampler_t *s)
{
    int64_t r;

    pthread_mutex_lock(&s->lock);
    r = s->rows;
    pthread_mutex_unlock(&s->lock);
    return r;
}

int64_t
ss_sampler_bytes(ss_sampler_t *s)
{
    int64_t r;

    pthread_mutex_lock(&s->lock);
    r = s->bytes;
    pthread_mutex_unlock(&s->lock);
    return r;
}
