/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic sampling.
 *
 * DESIGN: a FIFO of copied requests (each with its inputs and row count),
 * trimmed from the old end whenever rows or bytes pass their bounds.  The
 * decision to sample is a xorshift draw against the probability, on the
 * HTTP loop that decodes the request, so it costs nothing when a request
 * is not taken.  The generator's state is shared by the loops through
 * relaxed atomic loads and stores: two loops may now and then draw the
 * same number, which changes nothing for a sample, and no lock is taken.
 *
 * THREADS: [any]; the FIFO is an ss_queue_t whose lock also guards
 * rows and bytes.
 */
#include "config.h"

#include "server/model/sampler.h"

#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"
#include "common/queue.h"

typedef struct sample {
    ss_qlink_t link;
    int n;
    int64_t rows;
    size_t bytes;
    ss_tensor_t t[];
} sample_t;

struct ss_sampler {
    ss_queue_t q;               /* samples, oldest first */
    int64_t rows, cap_rows;     /* rows: q's lock */
    int64_t bytes, max_bytes;   /* bytes: q's lock */
    uint64_t rng;               /* relaxed atomics, no lock */
    uint64_t threshold;         /* probability scaled to 2^64 */
    bool always;
    ss_series_t *s_rows, *s_bytes, *s_taken;
};

#define SAMPLE(l) SS_QUEUE_ENTRY(l, sample_t, link)

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
    ss_queue_init(&s->q);
    s->cap_rows = capacity_rows;
    s->max_bytes = max_bytes;
    s->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)s;
    s->always = probability >= 1.0;
    /* 1.0 scaled is 2^64, past uint64_t (undefined behaviour, found by
     * fuzz_jobs under UBSan); always sampling never reads threshold. */
    s->threshold = s->always ? UINT64_MAX :
                   (uint64_t)(probability * 18446744073709551615.0);
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
    ss_qlink_t *l, *next;

    if (s == NULL)
        return;
    for (l = ss_queue_take_all(&s->q); l != NULL; l = next) {
        next = l->next;
        sample_free(SAMPLE(l));
    }
    ss_queue_destroy(&s->q);
    ss_free(s);
}

static uint64_t
next_rand(ss_sampler_t *s)
{
    uint64_t x = __atomic_load_n(&s->rng, __ATOMIC_RELAXED);

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    __atomic_store_n(&s->rng, x, __ATOMIC_RELAXED);
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
    ss_queue_lock(&s->q);
    ss_queue_push_locked(&s->q, &x->link);
    s->rows += rows;
    s->bytes += (int64_t)bytes;
    while (s->q.head != NULL &&
           (s->rows > s->cap_rows || s->bytes > s->max_bytes)) {
        old = SAMPLE(ss_queue_pop_locked(&s->q));
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
    ss_queue_unlock(&s->q);
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
    ss_qlink_t *l;
    int64_t rows = 0, skip, done = 0;
    int i, rc = 0;

    memset(out, 0, sizeof(*out) * (size_t)n);
    ss_queue_lock(&s->q);
    ref = s->q.tail != NULL ? SAMPLE(s->q.tail) : NULL;
    if (ref == NULL || ref->n != n)
        goto unlock;
    for (l = s->q.head; l != NULL; l = l->next)
        if (same_shape(SAMPLE(l), ref))
            rows += SAMPLE(l)->rows;
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
    for (l = s->q.head; l != NULL; l = l->next) {
        x = SAMPLE(l);
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
    ss_queue_unlock(&s->q);
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

    ss_queue_lock(&s->q);
    r = s->rows;
    ss_queue_unlock(&s->q);
    return r;
}

int64_t
ss_sampler_bytes(ss_sampler_t *s)
{
    int64_t r;

    ss_queue_lock(&s->q);
    r = s->bytes;
    ss_queue_unlock(&s->q);
    return r;
}
