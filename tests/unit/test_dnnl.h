/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_TEST_DNNL_H
#define SS_TESTS_TEST_DNNL_H

/*
 * Helpers shared by the oneDNN layer's tests: seeded data, a run wrapper
 * that gives each run fresh scratch, guard words after every output, naive
 * post-ops, and the array comparison every case uses:
 *     |got - want| <= 1e-5 + 1e-4 * |want| for every element (f32).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/dnnl/dnnl.h"
#include "tests/tap.h"

#define RTOL 1e-4
#define ATOL 1e-5
#define GUARD 16
#define GUARD_VAL 12345.678f

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static inline float
frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1 << 24)) * 2.f - 1.f;
}

/* numel random floats in [-1, 1) plus GUARD guard words. */
static inline float *
rnd(size_t n)
{
    float *p = ss_aligned_alloc((n + GUARD) * sizeof(float));
    size_t i;

    if (p == NULL)
        abort();
    for (i = 0; i < n; i++)
        p[i] = frand();
    for (i = 0; i < GUARD; i++)
        p[n + i] = GUARD_VAL;
    return p;
}

static inline float *
zeros(size_t n)
{
    float *p = rnd(n);

    memset(p, 0, n * sizeof(float));
    return p;
}

static inline int
guard_ok(const float *p, size_t n)
{
    size_t i;

    for (i = 0; i < GUARD; i++)
        if (p[n + i] != GUARD_VAL)
            return 0;
    return 1;
}

/* One assertion: every element close, and the guard words untouched. */
static inline int
check_close(const float *got, const float *want, size_t n, const char *name)
{
    size_t i, bad = 0, worst = 0;
    double wd = -1;

    for (i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double lim = ATOL + RTOL * fabs(want[i]);

        if (!(d <= lim))
            bad++;
        if (!(d - lim <= wd)) {
            wd = d - lim;
            worst = i;
        }
    }
    if (!ok(bad == 0 && guard_ok(got, n), "%s", name)) {
        printf("#   %zu of %zu elements off; worst [%zu] got %.9g want "
               "%.9g; guard %s\n", bad, n, worst, got[worst], want[worst],
               guard_ok(got, n) ? "intact" : "OVERWRITTEN");
        return 0;
    }
    return 1;
}

static ss_dnn_stream_t *test_stream;

/* Runs p on the test stream with fresh scratch; prints the error. */
static inline int
run(const ss_dnn_prim_t *p, const void *const *in, void *out)
{
    size_t n = ss_dnn_prim_scratch_size(p);
    void *scratch = n ? ss_aligned_alloc(n) : NULL;
    ss_err_t err = { 0 };
    int rc;

    if (n && scratch == NULL)
        abort();
    rc = ss_dnn_run(p, test_stream, in, out, scratch, &err);
    if (rc < 0)
        printf("#   run: %s\n", err.msg);
    ss_free(scratch);
    return rc;
}

/* Index into a tensor of dims tdims (same ndim as dst, 1 = broadcast) of
 * the dst element at flat index i. */
static inline size_t
bcast_index(size_t i, int nd, const int64_t *ddims, const int64_t *tdims)
{
    size_t idx = 0, mul = 1;
    int k;

    for (k = nd - 1; k >= 0; k--) {
        size_t c = i % (size_t)ddims[k];

        i /= (size_t)ddims[k];
        if (tdims[k] != 1)
            idx += c * mul;
        mul *= (size_t)tdims[k];
    }
    return idx;
}

/* Right-aligns dims of tn dims against nd dims. */
static inline void
expand_dims(int nd, int tn, const int64_t *t, int64_t *out)
{
    int i;

    for (i = 0; i < nd; i++)
        out[i] = i < nd - tn ? 1 : t[i - (nd - tn)];
}

static inline float
ref_eltwise(int alg, float x, float a, float b)
{
    switch (alg) {
    case SS_DNN_RELU: return x > 0 ? x : a * x;
    case SS_DNN_GELU_ERF: return 0.5f * x * (1.f + erff(x / sqrtf(2.f)));
    case SS_DNN_GELU_TANH:
        return 0.5f * x * (1.f + tanhf(0.7978845608f *
                                       (x + 0.044715f * x * x * x)));
    case SS_DNN_TANH: return tanhf(x);
    case SS_DNN_LOGISTIC: return 1.f / (1.f + expf(-x));
    case SS_DNN_CLIP: return x < a ? a : x > b ? b : x;
    case SS_DNN_EXP: return expf(x);
    case SS_DNN_LOG: return logf(x);
    case SS_DNN_SQRT: return sqrtf(x);
    case SS_DNN_ABS: return fabsf(x);
    case SS_DNN_SQUARE: return x * x;
    case SS_DNN_LINEAR: return a * x + b;
    case SS_DNN_POW: return a * powf(x, b);
    case SS_DNN_ELU: return x > 0 ? x : a * (expf(x) - 1.f);
    case SS_DNN_SWISH: return x / (1.f + expf(-a * x));
    case SS_DNN_SOFT_RELU: return log1pf(expf(x));
    case SS_DNN_HARDSWISH:
        return x * fminf(fmaxf(x + 3.f, 0.f), 6.f) / 6.f;
    case SS_DNN_ROUND: return nearbyintf(x);
    }
    return NAN;
}

static inline float
ref_binary(int alg, float x, float y)
{
    switch (alg) {
    case SS_DNN_ADD: return x + y;
    case SS_DNN_SUB: return x - y;
    case SS_DNN_MUL: return x * y;
    case SS_DNN_DIV: return x / y;
    case SS_DNN_MAX: return x > y ? x : y;
    case SS_DNN_MIN: return x < y ? x : y;
    }
    return NAN;
}

/* Applies po to dst (n elements of nd dims) the naive way.  bin[j] is the
 * tensor of the j-th BINARY post-op; old is dst before the op (for SUM). */
static inline void
ref_post(float *dst, int nd, const int64_t *dims, const ss_dnn_postops_t *po,
         const float *const *bin, const float *old)
{
    size_t n = 1, i;
    int k, j = 0;

    for (k = 0; k < nd; k++)
        n *= (size_t)dims[k];
    for (k = 0; k < po->n; k++) {
        const ss_dnn_postop_t *o = &po->op[k];
        int64_t td[SS_DNN_MAX_DIMS];

        if (o->kind == SS_DNN_PO_BINARY)
            expand_dims(nd, o->ndim, o->dims, td);
        for (i = 0; i < n; i++) {
            if (o->kind == SS_DNN_PO_ELTWISE)
                dst[i] = ref_eltwise(o->alg, dst[i], o->alpha, o->beta);
            else if (o->kind == SS_DNN_PO_SUM)
                dst[i] += (o->alpha == 0.f ? 1.f : o->alpha) * old[i];
            else
                dst[i] = ref_binary(o->alg, dst[i],
                                    bin[j][bcast_index(i, nd, dims, td)]);
        }
        if (o->kind == SS_DNN_PO_BINARY)
            j++;
    }
}

static inline ss_dnn_postop_t
po_elt(int alg, float a, float b)
{
    ss_dnn_postop_t o = { .kind = SS_DNN_PO_ELTWISE, .alg = alg,
                          .alpha = a, .beta = b };
    return o;
}

static inline ss_dnn_postop_t
po_bin(int alg, int nd, const int64_t *dims)
{
    ss_dnn_postop_t o = { .kind = SS_DNN_PO_BINARY, .alg = alg, .ndim = nd };

    memcpy(o.dims, dims, (size_t)nd * sizeof(*dims));
    return o;
}

static inline size_t
numel(int nd, const int64_t *d)
{
    size_t n = 1;
    int i;

    for (i = 0; i < nd; i++)
        n *= (size_t)d[i];
    return n;
}

#endif
