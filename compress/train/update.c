/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The optimizer's inner loop: one fused pass over the flat arrays.
 *
 * DESIGN.  An optimizer step touches every parameter once and does a few
 * flops per element, so it is memory-bound: AdamW reads g, w, m, v and
 * writes w, m, v (28 bytes an element).  The scalar loop it replaced was
 * not even that fast (GCC left it scalar: sqrtf's errno path) and, in
 * mixed precision, a separate conversion step per weight then read w
 * again to write its bf16 copy.  Measured on a 784-1024-1024-10 MLP
 * (1.86 M parameters, one thread, batch 64): the update was ~47% of a
 * bf16 step.  Here one pass per element: gradient clipping's scale, the
 * decoupled decay, the moments, the update, and the bf16 copy of the new
 * weight (round to nearest even, as oneDNN's reorder does), 16 elements
 * at a time with AVX-512 when the CPU has it (picked at run time:
 * __builtin_cpu_supports, not an ifunc, which TSan cannot start with)
 * and a portable loop otherwise, over OpenMP threads in blocks.
 *
 * The two paths compute the same formulas; the AVX-512 one fuses
 * multiply-adds, so their results may differ in the last bit (test_train
 * _update checks both against a double-precision reference).  Which one
 * runs depends only on the CPU, and blocks are elementwise, so the same
 * machine gives the same bytes for any thread count.
 *
 * THREADS: [worker]; OpenMP inside one call.
 */

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#include "compress/train/internal.h"
#include "engine/plan/crew.h"

#define BLOCK 16384     /* elements per OpenMP chunk: 64 KiB a stream */

uint16_t
ss__bf16_round(float x)
{
    uint32_t u;

    memcpy(&u, &x, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);    /* NaN stays a quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ---- portable ------------------------------------------------------------ */

static void
run_c(const ss__upd_t *u, float *w, float *g, float *m, float *v,
      uint16_t *wbf, int64_t n)
{
    float c = u->gscale;
    int64_t i;

    if (c != 1.0f)
        for (i = 0; i < n; i++)
            g[i] *= c;
    switch (u->kind) {
    case SS_OPT_ADAMW:
        for (i = 0; i < n; i++) {
            float gi = g[i], wi = w[i] * u->decay;

            m[i] = m[i] * u->b1 + gi * (1.0f - u->b1);
            v[i] = v[i] * u->b2 + gi * gi * (1.0f - u->b2);
            w[i] = wi - u->ssz * m[i] / (sqrtf(v[i]) / u->bc2s + u->eps);
        }
        break;
    case SS_OPT_SGD:
        for (i = 0; i < n; i++) {
            float d = g[i] + u->wd * w[i];

            if (u->mu != 0.0f) {
                m[i] = u->first ? d : u->mu * m[i] + d;
                d = u->nesterov ? d + u->mu * m[i] : m[i];
            }
            w[i] -= u->lr * d;
        }
        break;
    case SS_OPT_SOPHIA:
        for (i = 0; i < n; i++) {
            float r, wi = w[i] * u->decay;

            m[i] = m[i] * u->b1 + g[i] * (1.0f - u->b1);
            r = fabsf(m[i]) / (u->rb * v[i] + 1e-15f);
            if (r > 1.0f)
                r = 1.0f;
            w[i] = wi - u->lr * (m[i] > 0 ? r : m[i] < 0 ? -r : 0.0f);
        }
        break;
    }
    if (wbf != NULL)
        for (i = 0; i < n; i++)
            wbf[i] = ss__bf16_round(w[i]);
}

/* ---- AVX-512 ------------------------------------------------------------- */

#ifdef HAVE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

static inline __m256i AVX512
round16(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i hi = _mm512_srli_epi32(u, 16);
    __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))),
        16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);

    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

static void AVX512
run_avx512(const ss__upd_t *u, float *w, float *g, float *m, float *v,
           uint16_t *wbf, int64_t n)
{
    const __m512 c = _mm512_set1_ps(u->gscale);
    const __m512 decay = _mm512_set1_ps(u->decay);
    const __m512 b1 = _mm512_set1_ps(u->b1), ob1 = _mm512_set1_ps(1 - u->b1);
    const __m512 b2 = _mm512_set1_ps(u->b2), ob2 = _mm512_set1_ps(1 - u->b2);
    const __m512 ssz = _mm512_set1_ps(u->ssz), bc2s = _mm512_set1_ps(u->bc2s);
    const __m512 eps = _mm512_set1_ps(u->eps), lr = _mm512_set1_ps(u->lr);
    const __m512 wd = _mm512_set1_ps(u->wd), mu = _mm512_set1_ps(u->mu);
    const __m512 rb = _mm512_set1_ps(u->rb), tiny = _mm512_set1_ps(1e-15f);
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const int scale = u->gscale != 1.0f;
    int64_t i;

    for (i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xffff
                                  : (__mmask16)((1u << (n - i)) - 1);
        __m512 gi = _mm512_maskz_loadu_ps(k, g + i);
        __m512 wi = _mm512_maskz_loadu_ps(k, w + i);
        __m512 mi = _mm512_maskz_loadu_ps(k, m + i), vi, d;

        if (scale) {
            gi = _mm512_mul_ps(gi, c);
            _mm512_mask_storeu_ps(g + i, k, gi);
        }
        switch (u->kind) {
        case SS_OPT_ADAMW:
            /* PyTorch's order of operations (its vectorised kernels:
             * m.mul_(b1).add_(g, alpha) as one FMA, v.mul_(b2)
             * .addcmul_(g, g, value), w.addcdiv_(m, denom, -step)) */
            vi = _mm512_maskz_loadu_ps(k, v + i);
            wi = _mm512_mul_ps(wi, decay);
            mi = _mm512_fmadd_ps(gi, ob1, _mm512_mul_ps(mi, b1));
            vi = _mm512_add_ps(_mm512_mul_ps(vi, b2),
                               _mm512_mul_ps(_mm512_mul_ps(ob2, gi), gi));
            d = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2s), eps);
            wi = _mm512_fnmadd_ps(ssz, _mm512_div_ps(mi, d), wi);
            _mm512_mask_storeu_ps(m + i, k, mi);
            _mm512_mask_storeu_ps(v + i, k, vi);
            break;
        case SS_OPT_SGD:
            d = _mm512_fmadd_ps(wd, wi, gi);
            if (u->mu != 0.0f) {
                mi = u->first ? d : _mm512_fmadd_ps(mu, mi, d);
                d = u->nesterov ? _mm512_fmadd_ps(mu, mi, d) : mi;
                _mm512_mask_storeu_ps(m + i, k, mi);
            }
            wi = _mm512_fnmadd_ps(lr, d, wi);
            break;
        case SS_OPT_SOPHIA: {
            __m512 r;
            __mmask16 pos, neg;

            vi = _mm512_maskz_loadu_ps(k, v + i);
            wi = _mm512_mul_ps(wi, decay);
            mi = _mm512_fmadd_ps(mi, b1, _mm512_mul_ps(gi, ob1));
            r = _mm512_div_ps(_mm512_abs_ps(mi), _mm512_fmadd_ps(rb, vi,
                                                                 tiny));
            r = _mm512_min_ps(r, one);
            pos = _mm512_cmp_ps_mask(mi, zero, _CMP_GT_OQ);
            neg = _mm512_cmp_ps_mask(mi, zero, _CMP_LT_OQ);
            r = _mm512_mask_blend_ps(pos, _mm512_mask_blend_ps(
                    neg, zero, _mm512_sub_ps(zero, r)), r);
            wi = _mm512_fnmadd_ps(lr, r, wi);
            _mm512_mask_storeu_ps(m + i, k, mi);
            break;
        }
        }
        _mm512_mask_storeu_ps(w + i, k, wi);
        if (wbf != NULL)
            _mm256_mask_storeu_epi16(wbf + i, k, round16(wi));
    }
}
#endif

/* ---- dispatch ------------------------------------------------------------ */

typedef void (*run_fn)(const ss__upd_t *, float *, float *, float *,
                       float *, uint16_t *, int64_t);

static run_fn
pick(int isa)
{
#ifdef HAVE_X86
    if (isa != SS__UPD_C) {
        __builtin_cpu_init();
        /* _mm256_mask_storeu_epi16 is AVX512BW (with VL) */
        if (__builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            return run_avx512;
    }
#endif
    (void)isa;
    return run_c;
}

int
ss__upd_isa(void)
{
    return pick(SS__UPD_AUTO) == run_c ? SS__UPD_C : SS__UPD_AVX512;
}

void
ss__gsum(float *g, const ss__gparts_t *p, int64_t off, int64_t len)
{
    const float *p0 = p->part[0] + off;
    float s0 = p->share[0], *d = g + off;

    for (int64_t i = 0; i < len; i++)
        d[i] = s0 * p0[i];
    for (int k = 1; k < p->k; k++) {
        const float *pk = p->part[k] + off;
        float sk = p->share[k];

        for (int64_t i = 0; i < len; i++)
            d[i] += sk * pk[i];
    }
}

struct upd_job {
    const ss__upd_t *u;
    run_fn fn;
    float *w, *g, *m, *v;
    uint16_t *wbf;
    int64_t n;
    const ss__gparts_t *gp;
};

static void
upd_block(void *arg, int b)
{
    const struct upd_job *j = arg;
    int64_t o = (int64_t)b * BLOCK, len = j->n - o < BLOCK ? j->n - o
                                                        : BLOCK;

    if (j->gp != NULL)
        ss__gsum(j->g, j->gp, o, len);
    j->fn(j->u, j->w + o, j->g + o, j->m ? j->m + o : NULL,
          j->v ? j->v + o : NULL, j->wbf ? j->wbf + o : NULL, len);
}

void
ss__upd_run(const ss__upd_t *u, float *w, float *g, float *m, float *v,
            uint16_t *wbf, int64_t n, const ss__gparts_t *gp,
            struct ss_crew *crew, int threads)
{
    struct upd_job j = { u, pick(u->isa), w, g, m, v, wbf, n, gp };
    int64_t nb = (n + BLOCK - 1) / BLOCK, b;

    if (crew != NULL) {
        /* a sliced trainer: its crew, no OpenMP team (slices.c) */
        ss_crew_run(crew, (int)nb, threads, upd_block, &j);
        return;
    }
#pragma omp parallel for schedule(static) if (nb > 1)
    for (b = 0; b < nb; b++)
        upd_block(&j, (int)b);
}

void
ss__bf16_round_n(const float *x, uint16_t *y, int64_t n)
{
    int64_t i;

#pragma omp parallel for schedule(static) if (n > 4 * BLOCK)
    for (i = 0; i < n; i++)
        y[i] = ss__bf16_round(x[i]);
}

double
ss__grad_norm(const float *g, int64_t n)
{
    /* Per-block sums in double, added in block order: the same bytes
     * for any thread count. */
    enum { NB = 4096 };
    int64_t nb = (n + NB - 1) / NB, b;
    double total = 0, part[256];

    for (int64_t b0 = 0; b0 < nb; b0 += 256) {
        int64_t b1 = b0 + 256 < nb ? b0 + 256 : nb;

#pragma omp parallel for schedule(static) if (n > 4 * BLOCK)
        for (b = b0; b < b1; b++) {
            int64_t e = (b + 1) * NB < n ? (b + 1) * NB : n;
            double s = 0;

            for (int64_t i = b * NB; i < e; i++)
                s += (double)g[i] * g[i];
            part[b - b0] = s;
        }
        for (b = b0; b < b1; b++)
            total += part[b - b0];
    }
    return sqrt(total);
}
