/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The LoRA update of a run of rows, x [n, in] and y [n, out] (row-major,
 * contiguous): y += (x A^T) (s B^T) (lora_rows.h).
 *
 * oneDNN's sgemm costs microseconds of dispatch per call and its packing
 * reads A and B again per call, so the runs requests make (a few samples
 * each) go through loops here: with AVX-512, eight rows at a time in
 * 16-lane registers, so each row of A^T and each panel of s B^T is read
 * once per eight rows of x; a plain build for other CPUs.  Measured with
 * bench/lora_bench, batch 64 over 8 adapters r = 16: sgemm per run 5.8x
 * the base on the fixture MLP, these loops 1.9x (an r = 16 update there
 * is 43% of the model's multiply-adds).  Long runs too (the encoder of
 * docs/lora.md at batch 64, one adapter, 2,048 rows: an update of 64 ms
 * with these loops, 128 ms with sgemm for the shrink, at load 24-32):
 * the expand's K = r is too short for sgemm's packing to pay, and the
 * shrink gains little.
 *
 * Each block of rows keeps 16 accumulator chains in flight, two per row
 * (the shrink's even and odd steps of k, the expand's two panels at a
 * time), a single row four: with eight, one per row, the FMAs' latency
 * bound the loops (an FMA waits for the one before it on its register,
 * and the core starts two a cycle).  Measured on the encoder's and the
 * MNIST-sized MLP's shapes, r = 16, rows in cache, best of 300 (AMD EPYC
 * Zen 5): 83-90 G multiply-adds a second with one chain per row, 93-99
 * with two; a single row (batch 1 of the MLP) 18 G with one chain, 33-38
 * with four.
 *
 * Also the activation after a site (engine.h: activations), applied by
 * the hook to the rows it updated, in cache, instead of a oneDNN step.
 *
 * THREADS: any thread; no state.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "server/model/adapter.h"
#include "server/model/lora_rows.h"

#define PANEL SS_LORA_PANEL

/* GCC's -O2 cost model leaves loops of unknown trip count scalar. */
#if defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((optimize("O3")))
#else
#define HOT
#endif

/* y [n, out] += t [n, r] (row stride ldt) times the panels bp. */
static HOT void
expand_plain(const float *t, int64_t ldt, float *y, int64_t n, int64_t out,
             int64_t r, const float *bp)
{
    for (int64_t i = 0; i < n; i++) {
        const float *ti = t + i * ldt;
        float *yr = y + i * out;

        for (int64_t o0 = 0; o0 < out; o0 += PANEL) {
            const float *p = bp + o0 * r;
            float acc[PANEL];
            int64_t w = out - o0 < PANEL ? out - o0 : PANEL;

            for (int64_t l = 0; l < PANEL; l++)
                acc[l] = 0.0f;
            for (int64_t j = 0; j < r; j++)
                for (int64_t l = 0; l < PANEL; l++)
                    acc[l] += ti[j] * p[j * PANEL + l];
            for (int64_t l = 0; l < w; l++)
                yr[o0 + l] += acc[l];
        }
    }
}

static HOT void
rows_plain(const float *x, float *y, int64_t n, int64_t in, int64_t out,
           int64_t r, const float *at, const float *bp)
{
    float t[SS_LORA_MAX_RANK];

    for (int64_t i = 0; i < n; i++) {
        const float *xr = x + i * in;

        for (int64_t j = 0; j < r; j++)
            t[j] = 0.0f;
        for (int64_t k = 0; k < in; k++) {
            const float *ak = at + k * r;
            float xk = xr[k];

            for (int64_t j = 0; j < r; j++)
                t[j] += xk * ak[j];
        }
        expand_plain(t, r, y + i * out, 1, out, r, bp);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_BUILD 1

#define AVX512 __attribute__((always_inline, target("avx512f")))

/* Up to eight rows, registers X(q) for q = 0..7 (the code of rows past
 * R, a constant once inlined, is dropped by the compiler). */
#define EIGHT(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* The lanes of 16 from j0 that are below r. */
static inline AVX512 __mmask16
lanes(int64_t r, int64_t j0)
{
    return r - j0 >= 16 ? 0xffff : (__mmask16)((1u << (r - j0)) - 1);
}

/* t [R, r] (row stride ldt) = x [R, in] A^T, R = 4 or 8: per row two
 * chains, even and odd k, added at the end.  pf's A^T is prefetched, a
 * line per row of it (r = 16: 64 bytes), two per step of two rows. */
static inline AVX512 void
shrink_avx512(const int R, const float *x, int64_t in, int64_t r,
              const float *at, float *t, int64_t ldt, const ss_lora_w_t *pf)
{
    const char *pfa = (const char *)pf->at;
    int64_t pf_o = 0;

#define ROWP(q) const float *x##q = x + (q < R ? q : 0) * in;
    EIGHT(ROWP)
#undef ROWP

    for (int64_t j0 = 0; j0 < r; j0 += 16) {
        __mmask16 m = lanes(r, j0);
        int64_t k = 0;
#define ZERO(q) __m512 c##q = _mm512_setzero_ps(), d##q = c##q;
        EIGHT(ZERO)
#undef ZERO
        for (; k + 1 < in; k += 2) {
            __m512 a = _mm512_maskz_loadu_ps(m, at + k * r + j0);
            __m512 b = _mm512_maskz_loadu_ps(m, at + (k + 1) * r + j0);

            if (j0 == 0 && pf_o < pf->at_bytes) {
                _mm_prefetch(pfa + pf_o, _MM_HINT_T1);
                _mm_prefetch(pfa + pf_o + 64, _MM_HINT_T1);
                pf_o += 128;
            }
#define FMA(q) \
            if (q < R) { \
                c##q = _mm512_fmadd_ps(_mm512_set1_ps(x##q[k]), a, c##q); \
                d##q = _mm512_fmadd_ps(_mm512_set1_ps(x##q[k + 1]), b, \
                                       d##q); \
            }
            EIGHT(FMA)
#undef FMA
        }
        if (k < in) {
            __m512 a = _mm512_maskz_loadu_ps(m, at + k * r + j0);
#define FMA(q) \
            if (q < R) c##q = _mm512_fmadd_ps(_mm512_set1_ps(x##q[k]), a, c##q);
            EIGHT(FMA)
#undef FMA
        }
#define ST(q) \
        if (q < R) _mm512_mask_storeu_ps(t + q * ldt + j0, m, \
                                         _mm512_add_ps(c##q, d##q));
        EIGHT(ST)
#undef ST
    }
}

/* y [R, out] += t [R, r] (row stride ldt) times the panels bp, R = 4 or
 * 8: two panels at a time (two chains per row), each panel read once per
 * R rows, in order.  pf's panels are prefetched, two lines per step of
 * j. */
static inline AVX512 void
expand_avx512(const int R, const float *t, int64_t ldt, float *y,
              int64_t out, int64_t r, const float *bp, const ss_lora_w_t *pf)
{
    const char *pfb = (const char *)pf->bp;
    int64_t pf_o = 0, o0 = 0;

#define ROWP(q) float *y##q = y + (q < R ? q : 0) * out; \
    const float *t##q = t + (q < R ? q : 0) * ldt;
    EIGHT(ROWP)
#undef ROWP

    for (; out - o0 > PANEL; o0 += 2 * PANEL) {
        const float *p = bp + o0 * r, *p1 = p + PANEL * r;
        __mmask16 m = lanes(out, o0 + PANEL);
#define LD(q) \
        __m512 c##q = q < R ? _mm512_loadu_ps(y##q + o0) \
                            : _mm512_setzero_ps(); \
        __m512 d##q = q < R ? _mm512_maskz_loadu_ps(m, y##q + o0 + PANEL) \
                            : _mm512_setzero_ps();
        EIGHT(LD)
#undef LD
        for (int64_t j = 0; j < r; j++) {
            __m512 b = _mm512_load_ps(p + j * PANEL);
            __m512 b1 = _mm512_load_ps(p1 + j * PANEL);

            if (pf_o < pf->bp_bytes) {
                _mm_prefetch(pfb + pf_o, _MM_HINT_T1);
                _mm_prefetch(pfb + pf_o + 64, _MM_HINT_T1);
                pf_o += 128;
            }
#define FMA(q) \
            if (q < R) { \
                __m512 tq = _mm512_set1_ps(t##q[j]); \
                c##q = _mm512_fmadd_ps(tq, b, c##q); \
                d##q = _mm512_fmadd_ps(tq, b1, d##q); \
            }
            EIGHT(FMA)
#undef FMA
        }
#define ST(q) \
        if (q < R) { \
            _mm512_storeu_ps(y##q + o0, c##q); \
            _mm512_mask_storeu_ps(y##q + o0 + PANEL, m, d##q); \
        }
        EIGHT(ST)
#undef ST
    }
    if (o0 < out) {             /* an odd panel last */
        const float *p = bp + o0 * r;
        __mmask16 m = lanes(out, o0);
#define LD(q) __m512 c##q = q < R ? _mm512_maskz_loadu_ps(m, y##q + o0) \
                                  : _mm512_setzero_ps();
        EIGHT(LD)
#undef LD
        for (int64_t j = 0; j < r; j++) {
            __m512 b = _mm512_load_ps(p + j * PANEL);

            if (pf_o < pf->bp_bytes) {
                _mm_prefetch(pfb + pf_o, _MM_HINT_T1);
                pf_o += 64;
            }
#define FMA(q) \
            if (q < R) c##q = _mm512_fmadd_ps(_mm512_set1_ps(t##q[j]), b, c##q);
            EIGHT(FMA)
#undef FMA
        }
#define ST(q) if (q < R) _mm512_mask_storeu_ps(y##q + o0, m, c##q);
        EIGHT(ST)
#undef ST
    }
}

/* One row: t [r] = x [in] A^T in four chains (k mod 4); pf's A^T
 * prefetched four lines per step of four rows. */
static inline AVX512 void
shrink1_avx512(const float *x, int64_t in, int64_t r, const float *at,
               float *t, const ss_lora_w_t *pf)
{
    const char *pfa = (const char *)pf->at;
    int64_t pf_o = 0;

    for (int64_t j0 = 0; j0 < r; j0 += 16) {
        __mmask16 m = lanes(r, j0);
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        int64_t k = 0;

        for (; k + 3 < in; k += 4) {
            const float *a = at + k * r + j0;

            for (int u = 0; u < 4 && j0 == 0 && pf_o < pf->at_bytes; u++) {
                _mm_prefetch(pfa + pf_o, _MM_HINT_T1);
                pf_o += 64;
            }
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(x[k]),
                                 _mm512_maskz_loadu_ps(m, a), c0);
            c1 = _mm512_fmadd_ps(_mm512_set1_ps(x[k + 1]),
                                 _mm512_maskz_loadu_ps(m, a + r), c1);
            c2 = _mm512_fmadd_ps(_mm512_set1_ps(x[k + 2]),
                                 _mm512_maskz_loadu_ps(m, a + 2 * r), c2);
            c3 = _mm512_fmadd_ps(_mm512_set1_ps(x[k + 3]),
                                 _mm512_maskz_loadu_ps(m, a + 3 * r), c3);
        }
        for (; k < in; k++)
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(x[k]),
                                 _mm512_maskz_loadu_ps(m, at + k * r + j0),
                                 c0);
        _mm512_mask_storeu_ps(t + j0, m,
                              _mm512_add_ps(_mm512_add_ps(c0, c1),
                                            _mm512_add_ps(c2, c3)));
    }
}

/* One row: y [out] += t [r] times the panels, four panels at a time. */
static inline AVX512 void
expand1_avx512(const float *t, float *y, int64_t out, int64_t r,
               const float *bp, const ss_lora_w_t *pf)
{
    const char *pfb = (const char *)pf->bp;
    int64_t pf_o = 0, o0 = 0;

    for (; out - o0 >= 4 * PANEL; o0 += 4 * PANEL) {
        const float *p = bp + o0 * r;
        __m512 c0 = _mm512_loadu_ps(y + o0);
        __m512 c1 = _mm512_loadu_ps(y + o0 + PANEL);
        __m512 c2 = _mm512_loadu_ps(y + o0 + 2 * PANEL);
        __m512 c3 = _mm512_loadu_ps(y + o0 + 3 * PANEL);

        for (int64_t j = 0; j < r; j++) {
            __m512 tj = _mm512_set1_ps(t[j]);

            for (int u = 0; u < 4 && pf_o < pf->bp_bytes; u++) {
                _mm_prefetch(pfb + pf_o, _MM_HINT_T1);
                pf_o += 64;
            }
            c0 = _mm512_fmadd_ps(tj, _mm512_load_ps(p + j * PANEL), c0);
            c1 = _mm512_fmadd_ps(tj, _mm512_load_ps(p + (r + j) * PANEL),
                                 c1);
            c2 = _mm512_fmadd_ps(tj,
                                 _mm512_load_ps(p + (2 * r + j) * PANEL), c2);
            c3 = _mm512_fmadd_ps(tj,
                                 _mm512_load_ps(p + (3 * r + j) * PANEL), c3);
        }
        _mm512_storeu_ps(y + o0, c0);
        _mm512_storeu_ps(y + o0 + PANEL, c1);
        _mm512_storeu_ps(y + o0 + 2 * PANEL, c2);
        _mm512_storeu_ps(y + o0 + 3 * PANEL, c3);
    }
    for (; o0 < out; o0 += PANEL) {
        const float *p = bp + o0 * r;
        __mmask16 m = lanes(out, o0);
        __m512 c = _mm512_maskz_loadu_ps(m, y + o0);

        for (int64_t j = 0; j < r; j++) {
            if (pf_o < pf->bp_bytes) {
                _mm_prefetch(pfb + pf_o, _MM_HINT_T1);
                pf_o += 64;
            }
            c = _mm512_fmadd_ps(_mm512_set1_ps(t[j]),
                                _mm512_load_ps(p + j * PANEL), c);
        }
        _mm512_mask_storeu_ps(y + o0, m, c);
    }
}

/* A run with no run after it prefetches its own weights this far ahead
 * of its loads.  The loops load as fast as their two lines a step allow
 * and the hardware's prefetcher falls behind on weights that come from
 * memory: best of 400 with the weights flushed from the caches (784 ->
 * 512, r = 16), 8 rows 5.1 us without, 2.8-3.1 us 4-8 KB ahead (the
 * one-chain loops before them: 3.0 us), 16 KB 3.9 us; one row 2.3 us
 * and 2.0-2.2 us. */
#define PF_AHEAD 4096

static __attribute__((target("avx512f"))) void
rows_avx512(const float *x, float *y, int64_t n, int64_t in, int64_t out,
            int64_t r, const ss_lora_w_t *w, const ss_lora_w_t *next)
{
    _Alignas(64) float t[8][SS_LORA_MAX_RANK];  /* 32 KB */
    const ss_lora_w_t ahead = {
        w->at + PF_AHEAD / sizeof(float), w->bp + PF_AHEAD / sizeof(float),
        w->at_bytes - PF_AHEAD, w->bp_bytes - PF_AHEAD
    };
    int64_t i = 0;

    /* the first block prefetches the next run's weights, at the pace of
     * its own loads; with none, its own PF_AHEAD bytes ahead of them; the
     * other blocks their own again (in cache: no cost) */
    if (next == w)
        next = &ahead;
    for (; n - i >= 8; i += 8) {
        const ss_lora_w_t *pf = i == 0 ? next : w;

        shrink_avx512(8, x + i * in, in, r, w->at, t[0], SS_LORA_MAX_RANK,
                      pf);
        expand_avx512(8, t[0], SS_LORA_MAX_RANK, y + i * out, out, r,
                      w->bp, pf);
    }
    for (; n - i >= 4; i += 4) {
        const ss_lora_w_t *pf = i == 0 ? next : w;

        shrink_avx512(4, x + i * in, in, r, w->at, t[0], SS_LORA_MAX_RANK,
                      pf);
        expand_avx512(4, t[0], SS_LORA_MAX_RANK, y + i * out, out, r,
                      w->bp, pf);
    }
    for (; i < n; i++) {
        const ss_lora_w_t *pf = i == 0 ? next : w;

        shrink1_avx512(x + i * in, in, r, w->at, t[0], pf);
        expand1_avx512(t[0], y + i * out, out, r, w->bp, pf);
    }
}

/* e^x for x <= 0 (below -87 taken as -87, e^-87 ~ 1.6e-38): 2^n e^f,
 * |f| <= ln 2 / 2, e^f by Cephes' expf polynomial (1-2 ulp). */
static inline AVX512 __m512
exp_neg(__m512 x)
{
    __m512 n, f, p;

    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    f = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), f);
    p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(f, f),
                        _mm512_add_ps(f, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* GELU, 0.5 x (1 + erf(x / sqrt 2)), erf as oneDNN's gelu_erf computes
 * it (Abramowitz and Stegun 7.1.26: 1 - t P(t) e^-z^2, t = 1 / (1 +
 * 0.3275911 |z|), absolute error below 1.5e-7): the same function the
 * plan's step would have applied. */
static inline AVX512 __m512
gelu_erf(__m512 x)
{
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678f));
    __m512 az = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(az, _mm512_set1_ps(0.3275911f),
                                             _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f), e, erfa, hx;

    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    e = exp_neg(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z));
    erfa = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));    /* erf |z| */
    /* 0.5 x (1 + sign(x) erf |z|) = 0.5 x + 0.5 |x| erf |z| */
    hx = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
    return _mm512_fmadd_ps(_mm512_abs_ps(hx), erfa, hx);
}

static inline AVX512 __m512
act1(int kind, float alpha, __m512 x)
{
    if (kind == SS_TAP_ACT_GELU_ERF)
        return gelu_erf(x);
    return _mm512_mask_mul_ps(x, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(),
                                                    _CMP_LT_OQ),
                              x, _mm512_set1_ps(alpha));
}

/* Four vectors a step: their chains overlap. */
static __attribute__((target("avx512f"))) void
act_avx512(int kind, float alpha, const float *y, float *dst, int64_t n)
{
    int64_t i = 0;

    for (; n - i >= 64; i += 64) {
        __m512 a = act1(kind, alpha, _mm512_loadu_ps(y + i));
        __m512 b = act1(kind, alpha, _mm512_loadu_ps(y + i + 16));
        __m512 c = act1(kind, alpha, _mm512_loadu_ps(y + i + 32));
        __m512 d = act1(kind, alpha, _mm512_loadu_ps(y + i + 48));

        _mm512_storeu_ps(dst + i, a);
        _mm512_storeu_ps(dst + i + 16, b);
        _mm512_storeu_ps(dst + i + 32, c);
        _mm512_storeu_ps(dst + i + 48, d);
    }
    for (; i < n; i += 16) {
        __mmask16 m = lanes(n, i);

        _mm512_mask_storeu_ps(dst + i, m,
                              act1(kind, alpha,
                                   _mm512_maskz_loadu_ps(m, y + i)));
    }
}

#endif

int
ss_lora_act(int kind, float alpha, const float *y, float *dst, int64_t n)
{
    if (kind != SS_TAP_ACT_GELU_ERF && kind != SS_TAP_ACT_RELU)
        return 0;
#ifdef HAVE_AVX512_BUILD
    if (__builtin_cpu_supports("avx512f")) {
        act_avx512(kind, alpha, y, dst, n);
        return 1;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        dst[i] = kind == SS_TAP_ACT_GELU_ERF
                 ? 0.5f * y[i] * (1.0f + erff(y[i] * 0.70710678f))
                 : y[i] < 0.0f ? alpha * y[i] : y[i];
    return 1;
}

void
ss_lora_rows(const float *x, float *y, int64_t n, int64_t in, int64_t out,
             int64_t r, const ss_lora_w_t *w, const ss_lora_w_t *next)
{
#ifdef HAVE_AVX512_BUILD
    if (__builtin_cpu_supports("avx512f")) {
        rows_avx512(x, y, n, in, out, r, w, next);
        return;
    }
#endif
    (void)next;
    rows_plain(x, y, n, in, out, r, w->at, w->bp);
}
