/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fused optimizer update (compress/train/update.c).
 *
 * AdamW, SGD (plain, momentum, Nesterov) and Sophia, with and without
 * gradient clipping's scale, over 40,000 + 7 elements (blocks over
 * threads and a ragged tail), on both paths (portable and, where the CPU
 * has it, AVX-512): three steps against a double-precision reference of
 * the same formulas within 1e-5 relative (f32 rounding of a handful of
 * operations; a wrong moment, bias correction or decay is off by far
 * more), the two paths within 1e-5 of each other, and the bf16 copy
 * equal, bit for bit, to round-to-nearest-even of the new weight.  The
 * rounding itself on hand-picked values (ties to even, carry into the
 * exponent, NaN, infinities), and the global norm the same bytes for
 * one and two threads.
 */

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "compress/train/internal.h"
#include "tests/tap.h"

#define N 40007

static float
bits_f(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

static void
rounding(void)
{
    static const struct { uint32_t in; uint16_t out; const char *what; }
    cases[] = {
        { 0x3f800000u, 0x3f80, "1.0 exact" },
        { 0x3f808000u, 0x3f80, "tie, even below: down" },
        { 0x3f818000u, 0x3f82, "tie, odd below: up" },
        { 0x3f808001u, 0x3f81, "above the tie: up" },
        { 0x3f807fffu, 0x3f80, "below the tie: down" },
        { 0x3fffffffu, 0x4000, "carry into the exponent" },
        { 0x7f800000u, 0x7f80, "+inf" },
        { 0xff800000u, 0xff80, "-inf" },
        { 0x7f7fffffu, 0x7f80, "largest float rounds to inf" },
        { 0xbf808000u, 0xbf80, "negative tie" },
    };
    int bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t r = ss__bf16_round(bits_f(cases[i].in));

        if (r != cases[i].out) {
            bad++;
            tap_diag("%s: 0x%08x -> 0x%04x, want 0x%04x", cases[i].what,
                     cases[i].in, r, cases[i].out);
        }
    }
    ok(bad == 0, "bf16 rounding: ties to even, carries, infinities");
    ok((ss__bf16_round(bits_f(0x7fc00001u)) & 0x7fff) > 0x7f80 &&
       (ss__bf16_round(bits_f(0x7f800001u)) & 0x7fff) > 0x7f80,
       "bf16 rounding: a NaN (quiet or signalling) stays a NaN");
}

typedef struct {
    float w[N], g[N], m[N], v[N];
    uint16_t bf[N];
} state_t;

/* The same formulas in double, one element. */
static void
ref_step(const ss__upd_t *u, double *w, double *g, double *m, double *v)
{
    double gi = *g * u->gscale, d, r;

    *g = gi;
    switch (u->kind) {
    case SS_OPT_ADAMW:
        *w *= u->decay;
        *m = *m * u->b1 + gi * (1.0 - u->b1);
        *v = *v * u->b2 + gi * gi * (1.0 - u->b2);
        *w -= u->ssz * *m / (sqrt(*v) / u->bc2s + u->eps);
        break;
    case SS_OPT_SGD:
        d = gi + u->wd * *w;
        if (u->mu != 0.0f) {
            *m = u->first ? d : u->mu * *m + d;
            d = u->nesterov ? d + u->mu * *m : *m;
        }
        *w -= u->lr * d;
        break;
    case SS_OPT_SOPHIA:
        *w *= u->decay;
        *m = *m * u->b1 + gi * (1.0 - u->b1);
        r = fabs(*m) / (u->rb * *v + 1e-15);
        r = r > 1 ? 1 : r;
        *w -= u->lr * (*m > 0 ? r : *m < 0 ? -r : 0);
        break;
    }
}

static void
init(state_t *s, double *dw, double *dg, double *dm, double *dv,
     unsigned seed)
{
    uint64_t rng = seed;

    for (int i = 0; i < N; i++) {
        s->w[i] = (float)(ss__rng_unit(&rng) * 2 - 1);
        s->m[i] = (float)((ss__rng_unit(&rng) * 2 - 1) * 0.01);
        s->v[i] = (float)(ss__rng_unit(&rng) * 1e-4);
        dw[i] = s->w[i];
        dm[i] = s->m[i];
        dv[i] = s->v[i];
    }
    (void)dg;
}

static void
grads(state_t *s, double *dg, int step)
{
    uint64_t rng = 1000 + (uint64_t)step;

    for (int i = 0; i < N; i++) {
        s->g[i] = (float)((ss__rng_unit(&rng) * 2 - 1) * 0.1);
        dg[i] = s->g[i];
    }
}

static double *dw, *dg, *dm, *dv;

/* Three steps of u on path isa; returns the worst relative error of w
 * against the reference (relative to max(|w|, 1e-3)); *bf_bad counts
 * bf16 copies that are not the rounding of w. */
static double
run(ss__upd_t u, int isa, state_t *s, int64_t *bf_bad)
{
    double worst = 0;

    init(s, dw, dg, dm, dv, 7);
    u.isa = isa;
    *bf_bad = 0;
    for (int step = 0; step < 3; step++) {
        grads(s, dg, step);
        u.first = step == 0;
        ss__upd_run(&u, s->w, s->g, s->m, s->v, s->bf, N, NULL, NULL, 0);
        for (int i = 0; i < N; i++)
            ref_step(&u, &dw[i], &dg[i], &dm[i], &dv[i]);
    }
    for (int i = 0; i < N; i++) {
        double e = fabs(s->w[i] - dw[i]) / fmax(fabs(dw[i]), 1e-3);

        if (e > worst)
            worst = e;
        *bf_bad += s->bf[i] != ss__bf16_round(s->w[i]);
    }
    return worst;
}

static void
optimizers(void)
{
    static state_t a, b;
    struct { const char *what; int kind; float mu; int nest; float c; }
    cases[] = {
        { "AdamW", SS_OPT_ADAMW, 0, 0, 1 },
        { "AdamW, clipped", SS_OPT_ADAMW, 0, 0, 0.25f },
        { "SGD", SS_OPT_SGD, 0, 0, 1 },
        { "SGD momentum", SS_OPT_SGD, 0.9f, 0, 1 },
        { "SGD Nesterov, clipped", SS_OPT_SGD, 0.9f, 1, 0.5f },
        { "Sophia", SS_OPT_SOPHIA, 0, 0, 1 },
    };
    int have512 = ss__upd_isa() == SS__UPD_AVX512;

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        ss__upd_t u;
        double ec, ev = 0, dpath = 0;
        int64_t bfc, bfv = 0;

        memset(&u, 0, sizeof(u));
        u.kind = cases[k].kind;
        u.gscale = cases[k].c;
        u.lr = 1e-3f;
        u.wd = 0.01f;
        u.decay = 1.0f - u.lr * u.wd;
        u.b1 = 0.9f;
        u.b2 = 0.999f;
        u.ssz = (float)(1e-3 / (1 - 0.9));
        u.bc2s = (float)sqrt(1 - 0.999);
        u.eps = 1e-8f;
        u.mu = cases[k].mu;
        u.nesterov = cases[k].nest;
        u.rb = 0.04f * 64;
        ec = run(u, SS__UPD_C, &a, &bfc);
        ok(ec < 1e-5 && bfc == 0, "%s, portable: 3 steps within 1e-5 of "
           "double (worst %.2e), bf16 copies exact (%lld off)",
           cases[k].what, ec, (long long)bfc);
        if (!have512) {
            ok(1, "%s, AVX-512 # SKIP no AVX-512 here", cases[k].what);
            continue;
        }
        ev = run(u, SS__UPD_AUTO, &b, &bfv);
        for (int i = 0; i < N; i++) {
            double d = fabs(a.w[i] - b.w[i]) / fmax(fabs(a.w[i]), 1e-3);

            dpath = d > dpath ? d : dpath;
        }
        ok(ev < 1e-5 && bfv == 0 && dpath < 1e-5, "%s, AVX-512: within "
           "1e-5 of double (worst %.2e) and of the portable path (%.2e), "
           "bf16 copies exact (%lld off)", cases[k].what, ev, dpath,
           (long long)bfv);
    }
}

static void
norm_threads(void)
{
    float *g = malloc(300000 * sizeof(float));
    uint64_t rng = 3;
    double n1, n2, want = 0;

    for (int i = 0; i < 300000; i++) {
        g[i] = (float)(ss__rng_unit(&rng) - 0.5);
        want += (double)g[i] * g[i];
    }
    omp_set_num_threads(1);
    n1 = ss__grad_norm(g, 300000);
    omp_set_num_threads(2);
    n2 = ss__grad_norm(g, 300000);
    ok(memcmp(&n1, &n2, sizeof(n1)) == 0 &&
       fabs(n1 - sqrt(want)) <= 1e-12 * sqrt(want),
       "global norm: the same bytes on 1 and 2 threads, = sqrt(sum g^2) "
       "(%.15g, %.15g)", n1, n2);
    free(g);
}

int
main(void)
{
    dw = malloc(N * sizeof(double));
    dg = malloc(N * sizeof(double));
    dm = malloc(N * sizeof(double));
    dv = malloc(N * sizeof(double));
    rounding();
    optimizers();
    norm_threads();
    free(dw);
    free(dg);
    free(dm);
    free(dv);
    return tap_done();
}
