/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The trainer's Softmax / LogSoftmax, LayerNormalization and
 * BatchNormalization kernels, forward and backward.  Conventions (acc,
 * fixed summation order): kern.c.
 *
 * THREADS: [worker]; OpenMP threads inside a call.
 */

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "compress/train/internal.h"
#include "compress/train/kern.h"

/* ---- softmax ------------------------------------------------------------- */

int
ss__k_softmax(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    int64_t outer = s->p[0], n = s->p[1], inner = s->p[2], l;
    int lg = s->op;

    (void)err;
#pragma omp parallel for schedule(static) if (outer * n * inner > PAR_MIN)
    for (l = 0; l < outer * inner; l++) {
        int64_t o = l / inner, i = l % inner, j;
        const float *xr = x + o * n * inner + i;
        float *yr = y + o * n * inner + i;
        float mx = -FLT_MAX;
        double sum = 0;

        for (j = 0; j < n; j++)
            mx = xr[j * inner] > mx ? xr[j * inner] : mx;
        for (j = 0; j < n; j++) {
            float e = expf(xr[j * inner] - mx);

            sum += e;
            if (!lg)
                yr[j * inner] = e;
        }
        if (lg) {
            float ls = (float)log(sum);

            for (j = 0; j < n; j++)
                yr[j * inner] = xr[j * inner] - mx - ls;
        } else {
            float inv = (float)(1.0 / sum);

            for (j = 0; j < n; j++)
                yr[j * inner] *= inv;
        }
    }
    return 0;
}

int
ss__k_softmax_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0), *y = IN(1);
    float *dx = OUT(0);
    int64_t outer = s->p[0], n = s->p[1], inner = s->p[2], l;
    int lg = s->op, acc = ACC(0);

    (void)err;
#pragma omp parallel for schedule(static) if (outer * n * inner > PAR_MIN)
    for (l = 0; l < outer * inner; l++) {
        int64_t o = l / inner, i = l % inner, j, base = o * n * inner + i;
        double dot = 0;

        for (j = 0; j < n; j++)
            dot += lg ? dy[base + j * inner]
                      : dy[base + j * inner] * y[base + j * inner];
        for (j = 0; j < n; j++) {
            int64_t k = base + j * inner;
            float v = lg ? dy[k] - expf(y[k]) * (float)dot
                         : y[k] * (dy[k] - (float)dot);

            dx[k] = acc ? dx[k] + v : v;
        }
    }
    return 0;
}

/* ---- LayerNormalization --------------------------------------------------- */

/* The row sums are vector reductions (omp simd: a fixed order for a
 * given build and CPU), and the loops test g and b outside: a sequential
 * double sum and a per-element test kept both kernels scalar, 15% of the
 * transformer fixture's step.  The rows' loops are compiled twice, for
 * the baseline ISA and for AVX-512 (picked at run time, ss__cpu_avx512):
 * the baseline's 128-bit vectors left LayerNorm, forward and backward,
 * 1.5 ms of a 10 ms bf16 transformer step.  Threads take contiguous
 * blocks of rows. */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define ROWS_OF_THREAD(rows, r0, r1)                                    \
    int64_t per_ = ((rows) + omp_get_num_threads() - 1) /               \
                   omp_get_num_threads();                               \
    int64_t r0 = omp_get_thread_num() * per_;                           \
    int64_t r1 = r0 + per_ < (rows) ? r0 + per_ : (rows)

static inline __attribute__((always_inline)) void
ln_fwd_rows(const float *x, const float *g, const float *b, float *y,
            float *mean, float *rstd, int64_t c, float eps, int64_t r0,
            int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        double m = 0, v = 0;
        float mf, rs;
        int64_t j;

#pragma omp simd reduction(+:m)
        for (j = 0; j < c; j++)
            m += xr[j];
        m /= (double)c;
#pragma omp simd reduction(+:v)
        for (j = 0; j < c; j++)
            v += (xr[j] - m) * (xr[j] - m);
        v /= (double)c;
        mf = (float)m;
        rs = (float)(1.0 / sqrt(v + eps));
        mean[r] = mf;
        rstd[r] = rs;
        if (g != NULL && b != NULL) {
#pragma omp simd
            for (j = 0; j < c; j++)
                yr[j] = (xr[j] - mf) * rs * g[j] + b[j];
        } else {
            for (j = 0; j < c; j++) {
                float h = (xr[j] - mf) * rs;

                yr[j] = h * (g ? g[j] : 1.0f) + (b ? b[j] : 0.0f);
            }
        }
    }
}

AVX512 static void
ln_fwd_rows_avx512(const float *x, const float *g, const float *b, float *y,
                   float *mean, float *rstd, int64_t c, float eps, int64_t r0,
                   int64_t r1)
{
    ln_fwd_rows(x, g, b, y, mean, rstd, c, eps, r0, r1);
}

int
ss__k_layernorm(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0), *g = IN(1), *b = IN(2);
    float *y = OUT(0), *mean = OUT(1), *rstd = OUT(2);
    int64_t rows = s->p[0], c = s->p[1];
    float eps = s->f[0];
    bool avx = ss__cpu_avx512();

    (void)err;
#pragma omp parallel if (rows * c > PAR_MIN)
    {
        ROWS_OF_THREAD(rows, r0, r1);

        if (avx)
            ln_fwd_rows_avx512(x, g, b, y, mean, rstd, c, eps, r0, r1);
        else
            ln_fwd_rows(x, g, b, y, mean, rstd, c, eps, r0, r1);
    }
    return 0;
}

/* One row of dx: the sums of dh = dy * G and dh * h, then dx (+)=
 * rs * (dh - mean dh - h * mean dh h); G is g[j] or 1, a macro so that
 * neither loop tests g per element. */
#define ROW_BWD(G)                                                      \
    do {                                                                \
        _Pragma("omp simd reduction(+:s1, s2)")                         \
        for (j = 0; j < c; j++) {                                       \
            float h = (xr[j] - m) * rs, dh = dyr[j] * (G);              \
                                                                        \
            s1 += dh;                                                   \
            s2 += dh * h;                                               \
        }                                                               \
        if (dx) {                                                       \
            float a1 = (float)(s1 / (double)c);                         \
            float a2 = (float)(s2 / (double)c);                         \
            float *dxr = dx + r * c;                                    \
                                                                        \
            if (acc) {                                                  \
                _Pragma("omp simd")                                     \
                for (j = 0; j < c; j++) {                               \
                    float h = (xr[j] - m) * rs, dh = dyr[j] * (G);      \
                                                                        \
                    dxr[j] += rs * (dh - a1 - h * a2);                  \
                }                                                       \
            } else {                                                    \
                _Pragma("omp simd")                                     \
                for (j = 0; j < c; j++) {                               \
                    float h = (xr[j] - m) * rs, dh = dyr[j] * (G);      \
                                                                        \
                    dxr[j] = rs * (dh - a1 - h * a2);                   \
                }                                                       \
            }                                                           \
        }                                                               \
    } while (0)

/* Rows [r0, r1) of LayerNorm's backward; pg: this thread's partial
 * sums of dg (c) and db (c), or NULL. */
static inline __attribute__((always_inline)) void
ln_bwd_rows(const float *dy, const float *x, const float *g,
            const float *mean, const float *rstd, float *dx, double *pg,
            int64_t c, int acc, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * c, *dyr = dy + r * c;
        float m = mean[r], rs = rstd[r];
        double s1 = 0, s2 = 0;
        int64_t j;

        if (pg) {
#pragma omp simd
            for (j = 0; j < c; j++) {
                float h = (xr[j] - m) * rs;

                pg[j] += dyr[j] * h;
                pg[c + j] += dyr[j];
            }
        }
        if (g != NULL)
            ROW_BWD(g[j]);
        else
            ROW_BWD(1.0f);
    }
}
#undef ROW_BWD

AVX512 static void
ln_bwd_rows_avx512(const float *dy, const float *x, const float *g,
                   const float *mean, const float *rstd, float *dx,
                   double *pg, int64_t c, int acc, int64_t r0, int64_t r1)
{
    ln_bwd_rows(dy, x, g, mean, rstd, dx, pg, c, acc, r0, r1);
}

int
ss__k_layernorm_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0), *x = IN(1), *g = IN(2);
    const float *mean = IN(3), *rstd = IN(4);
    float *dx = OUT(0), *dg = OUT(1), *db = OUT(2);
    int64_t rows = s->p[0], c = s->p[1];
    int nt = omp_get_max_threads(), used = 1, acc = (int)ACC(0);
    bool avx = ss__cpu_avx512();
    double *part = NULL;

    if (dg || db) {
        if ((part = ss__kbuf(t, (size_t)nt * 2 * (size_t)c)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a kernel");
        memset(part, 0, (size_t)nt * 2 * (size_t)c * sizeof(double));
    }
#pragma omp parallel if (rows * c > PAR_MIN)
    {
        double *pg = part ? part + (size_t)omp_get_thread_num() * 2 *
                                   (size_t)c
                          : NULL;
        ROWS_OF_THREAD(rows, r0, r1);

#pragma omp single nowait
        used = omp_get_num_threads();
        if (avx)
            ln_bwd_rows_avx512(dy, x, g, mean, rstd, dx, pg, c, acc, r0, r1);
        else
            ln_bwd_rows(dy, x, g, mean, rstd, dx, pg, c, acc, r0, r1);
    }
    if (part) {
        for (int64_t j = 0; j < c; j++) {
            double sg = 0, sb = 0;

            for (int k = 0; k < used; k++) {
                sg += part[(size_t)k * 2 * (size_t)c + (size_t)j];
                sb += part[(size_t)k * 2 * (size_t)c + (size_t)(c + j)];
            }
            if (dg)
                dg[j] = ACC(1) ? dg[j] + (float)sg : (float)sg;
            if (db)
                db[j] = ACC(2) ? db[j] + (float)sb : (float)sb;
        }
    }
    return 0;
}

/* ---- BatchNormalization ------------------------------------------------ */

/*
 * BatchNorm on a layout with L > 1 channels side by side ([N][C/L][HW][L]:
 * nChw16c, NHWC): a work unit is a run of up to 16 adjacent channels,
 * walked in memory order with one double sum per channel, so each
 * channel's sums are taken in (n, hw) order whatever the thread count
 * (the same bytes from run to run).
 */
#define BN_W 16

static void
bn_lanes_fwd(ss__tr_t *t, const ss__step_t *s)
{
    const float *x = IN(0), *g = IN(1), *b = IN(2);
    float *rm = (float *)tv_data(t, s->in[3]);
    float *rv = (float *)tv_data(t, s->in[4]);
    float *y = OUT(0), *mean = OUT(1), *rstd = OUT(2);
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], L = s->p[3];
    int64_t CB = C / L, nch = (L + BN_W - 1) / BN_W, u;
    float eps = s->f[0], mom = s->f[1];
    bool batch = s->op == SS_BN_BATCH && !t->infer_bn;
    double cnt = (double)(n * hw);

#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (u = 0; u < CB * nch; u++) {
        int64_t cb = u / nch, l0 = (u % nch) * BN_W, c0 = cb * L + l0;
        int64_t w = L - l0 < BN_W ? L - l0 : BN_W, i, j, l;
        double m[BN_W] = { 0 }, v[BN_W] = { 0 };
        float sc[BN_W], sh[BN_W];

        if (batch) {
            for (i = 0; i < n; i++)
                for (j = 0; j < hw; j++) {
                    const float *xr = x + ((i * CB + cb) * hw + j) * L + l0;

                    for (l = 0; l < w; l++)
                        m[l] += xr[l];
                }
            for (l = 0; l < w; l++)
                m[l] /= cnt;
            for (i = 0; i < n; i++)
                for (j = 0; j < hw; j++) {
                    const float *xr = x + ((i * CB + cb) * hw + j) * L + l0;

                    for (l = 0; l < w; l++) {
                        double d = xr[l] - m[l];

                        v[l] += d * d;
                    }
                }
            for (l = 0; l < w; l++) {
                v[l] /= cnt;
                rm[c0 + l] = mom * rm[c0 + l] + (1.0f - mom) * (float)m[l];
                rv[c0 + l] = mom * rv[c0 + l] + (1.0f - mom) *
                    (float)(cnt > 1 ? v[l] * cnt / (cnt - 1) : v[l]);
            }
        } else {
            for (l = 0; l < w; l++) {
                m[l] = rm[c0 + l];
                v[l] = rv[c0 + l];
            }
        }
        for (l = 0; l < w; l++) {
            float mf = (float)m[l], rs = (float)(1.0 / sqrt(v[l] + eps));

            mean[c0 + l] = mf;
            rstd[c0 + l] = rs;
            sc[l] = g[c0 + l] * rs;
            sh[l] = b[c0 + l] - mf * g[c0 + l] * rs;
        }
        for (i = 0; i < n; i++)
            for (j = 0; j < hw; j++) {
                int64_t o = ((i * CB + cb) * hw + j) * L + l0;

                for (l = 0; l < w; l++)
                    y[o + l] = x[o + l] * sc[l] + sh[l];
            }
    }
}

static void
bn_lanes_bwd(ss__tr_t *t, const ss__step_t *s)
{
    const float *dy = IN(0), *x = IN(1), *g = IN(2);
    const float *mean = IN(3), *rstd = IN(4);
    float *dx = OUT(0), *dg = OUT(1), *db = OUT(2);
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], L = s->p[3];
    int64_t CB = C / L, nch = (L + BN_W - 1) / BN_W, u;
    bool batch = s->op == SS_BN_BATCH;
    double cnt = (double)(n * hw);

#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (u = 0; u < CB * nch; u++) {
        int64_t cb = u / nch, l0 = (u % nch) * BN_W, c0 = cb * L + l0;
        int64_t w = L - l0 < BN_W ? L - l0 : BN_W, i, j, l;
        double sdy[BN_W] = { 0 }, sdyh[BN_W] = { 0 };
        float m[BN_W], rs[BN_W], gr[BN_W];
        double a[BN_W], bq[BN_W];
        int acc = ACC(0);

        for (l = 0; l < w; l++) {
            m[l] = mean[c0 + l];
            rs[l] = rstd[c0 + l];
        }
        for (i = 0; i < n; i++)
            for (j = 0; j < hw; j++) {
                int64_t o = ((i * CB + cb) * hw + j) * L + l0;

                for (l = 0; l < w; l++) {
                    sdy[l] += dy[o + l];
                    sdyh[l] += dy[o + l] * ((x[o + l] - m[l]) * rs[l]);
                }
            }
        for (l = 0; l < w; l++) {
            if (dg)
                dg[c0 + l] = ACC(1) ? dg[c0 + l] + (float)sdyh[l]
                                    : (float)sdyh[l];
            if (db)
                db[c0 + l] = ACC(2) ? db[c0 + l] + (float)sdy[l]
                                    : (float)sdy[l];
            a[l] = sdy[l] / cnt;
            bq[l] = sdyh[l] / cnt;
            gr[l] = g[c0 + l] * rs[l];
        }
        if (!dx)
            continue;
        for (i = 0; i < n; i++)
            for (j = 0; j < hw; j++) {
                int64_t o = ((i * CB + cb) * hw + j) * L + l0;

                for (l = 0; l < w; l++) {
                    float h = (x[o + l] - m[l]) * rs[l];
                    float v = batch
                        ? gr[l] * (float)(dy[o + l] - a[l] - h * bq[l])
                        : gr[l] * dy[o + l];

                    dx[o + l] = acc ? dx[o + l] + v : v;
                }
            }
    }
}

int
ss__k_batchnorm(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0), *g = IN(1), *b = IN(2);
    float *rm = (float *)tv_data(t, s->in[3]);
    float *rv = (float *)tv_data(t, s->in[4]);
    float *y = OUT(0), *mean = OUT(1), *rstd = OUT(2);
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], c;
    float eps = s->f[0], mom = s->f[1];
    bool batch = s->op == SS_BN_BATCH && !t->infer_bn;
    double cnt = (double)(n * hw);

    (void)err;
    if (s->p[3] > 1) {
        bn_lanes_fwd(t, s);
        return 0;
    }
#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (c = 0; c < C; c++) {
        double m = 0, v = 0;
        float mf, rs;
        int64_t i, j;

        if (batch) {
            /* simd sums: lanes in a fixed order, so still the same bytes
             * from run to run (and 2-4x faster than one chain) */
            for (i = 0; i < n; i++) {
                const float *xr = x + (i * C + c) * hw;

#pragma omp simd reduction(+:m)
                for (j = 0; j < hw; j++)
                    m += xr[j];
            }
            m /= cnt;
            for (i = 0; i < n; i++) {
                const float *xr = x + (i * C + c) * hw;

#pragma omp simd reduction(+:v)
                for (j = 0; j < hw; j++) {
                    double d = xr[j] - m;

                    v += d * d;
                }
            }
            v /= cnt;
            /* running statistics as PyTorch keeps them: unbiased var */
            rm[c] = mom * rm[c] + (1.0f - mom) * (float)m;
            rv[c] = mom * rv[c] + (1.0f - mom) *
                    (float)(cnt > 1 ? v * cnt / (cnt - 1) : v);
        } else {
            m = rm[c];
            v = rv[c];
        }
        mf = (float)m;
        rs = (float)(1.0 / sqrt(v + eps));
        mean[c] = mf;
        rstd[c] = rs;
        for (i = 0; i < n; i++) {
            const float *xr = x + (i * C + c) * hw;
            float *yr = y + (i * C + c) * hw;
            float sc = g[c] * rs, sh = b[c] - mf * g[c] * rs;

            for (j = 0; j < hw; j++)
                yr[j] = xr[j] * sc + sh;
        }
    }
    return 0;
}

int
ss__k_batchnorm_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0), *x = IN(1), *g = IN(2);
    const float *mean = IN(3), *rstd = IN(4);
    float *dx = OUT(0), *dg = OUT(1), *db = OUT(2);
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], c;
    bool batch = s->op == SS_BN_BATCH;
    double cnt = (double)(n * hw);

    (void)err;
    if (s->p[3] > 1) {
        bn_lanes_bwd(t, s);
        return 0;
    }
#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (c = 0; c < C; c++) {
        float m = mean[c], rs = rstd[c];
        double sdy = 0, sdyh = 0;
        int64_t i, j;

        for (i = 0; i < n; i++) {
            const float *dyr = dy + (i * C + c) * hw;
            const float *xr = x + (i * C + c) * hw;

#pragma omp simd reduction(+:sdy, sdyh)
            for (j = 0; j < hw; j++) {
                sdy += dyr[j];
                sdyh += dyr[j] * ((xr[j] - m) * rs);
            }
        }
        if (dg)
            dg[c] = ACC(1) ? dg[c] + (float)sdyh : (float)sdyh;
        if (db)
            db[c] = ACC(2) ? db[c] + (float)sdy : (float)sdy;
        if (!dx)
            continue;
        {
            /* (cnt dy - sdy - h sdyh) / cnt, without a division each */
            double a = sdy / cnt, bq = sdyh / cnt;
            float gr = g[c] * rs;
            int acc = ACC(0);

            for (i = 0; i < n; i++) {
                const float *dyr = dy + (i * C + c) * hw;
                const float *xr = x + (i * C + c) * hw;
                float *dxr = dx + (i * C + c) * hw;

#pragma omp simd
                for (j = 0; j < hw; j++) {
                    float h = (xr[j] - m) * rs;
                    float v = batch ? gr * (float)(dyr[j] - a - h * bq)
                                    : gr * dyr[j];

                    dxr[j] = acc ? dxr[j] + v : v;
                }
            }
        }
    }
    return 0;
}

/* A full chunk of BN_W bf16 lanes of ss__k_chsum (x: its first lane of
 * sample 0; in, il: the strides of a sample and of a spatial position):
 * the same sums in the same order, in vectors of doubles, 512-bit ones
 * where the CPU has them (bf16 training does): the fused biases'
 * gradients of the bf16 transformer were slower than the f32 reduce. */
#define CHSUM16_BODY                                                    \
    for (int64_t i = 0; i < n; i++)                                     \
        for (int64_t j = 0; j < hw; j++) {                              \
            const uint16_t *r = x + i * in + j * il;                    \
                                                                        \
            _Pragma("omp simd")                                         \
            for (int l = 0; l < BN_W; l++)                              \
                sum[l] += ss__bf16_f32(r[l]);                           \
        }

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
chsum16_avx512(const uint16_t *x, int64_t n, int64_t hw, int64_t in,
               int64_t il, double *sum)
{
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();

    /* the sums in registers (the compiler's loop kept them in memory) */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < hw; j++) {
            __m256i h = _mm256_loadu_si256((const void *)(x + i * in +
                                                          j * il));
            __m512 f = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));

            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(
                                       _mm512_castps512_ps256(f)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                                       _mm512_extractf64x4_pd(
                                           _mm512_castps_pd(f), 1))));
        }
    _mm512_storeu_pd(sum, lo);
    _mm512_storeu_pd(sum + 8, hi);
}

static void
chsum16(const uint16_t *x, int64_t n, int64_t hw, int64_t in, int64_t il,
        double *sum)
{
    CHSUM16_BODY
}

/* out[0][c] (+)= the sum of in[0] over N and the spatial dims, in
 * double, in (n, hw) order per channel; p: N C HW L (the layout's lanes,
 * as for BatchNorm).  A convolution's bias gradient; in[0] f32, or bf16
 * (a bf16 activation's gradient, act16.c). */
int
ss__k_chsum(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    const uint16_t *xh = (const uint16_t *)IN(0);
    int bf = t->tv[s->in[0]].dtype == SS_DTYPE_BF16;
    float *y = OUT(0);
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], L = s->p[3];
    int64_t CB = C / L, nch = (L + BN_W - 1) / BN_W, u;
    int acc = ACC(0);

    (void)err;
#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (u = 0; u < CB * nch; u++) {
        int64_t cb = u / nch, l0 = (u % nch) * BN_W, c0 = cb * L + l0;
        int64_t w = L - l0 < BN_W ? L - l0 : BN_W, i, j, l;
        double sum[BN_W] = { 0 };

        if (bf && w == BN_W) {
            const uint16_t *x0 = xh + cb * hw * L + l0;

            if (ss__cpu_avx512())
                chsum16_avx512(x0, n, hw, CB * hw * L, L, sum);
            else
                chsum16(x0, n, hw, CB * hw * L, L, sum);
        } else {
            for (i = 0; i < n; i++)
                for (j = 0; j < hw; j++) {
                    int64_t o = ((i * CB + cb) * hw + j) * L + l0;

                    if (bf)
                        for (l = 0; l < w; l++)
                            sum[l] += ss__bf16_f32(xh[o + l]);
                    else
                        for (l = 0; l < w; l++)
                            sum[l] += x[o + l];
                }
        }
        for (l = 0; l < w; l++)
            y[c0 + l] = acc ? y[c0 + l] + (float)sum[l] : (float)sum[l];
    }
    return 0;
}
