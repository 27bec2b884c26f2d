/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Max pooling on 8-bit NHWC values (u8 or s8): our own loop, run in place
 * of oneDNN's primitive by ss_dnn_run.
 *
 * DESIGN: oneDNN 2.6 pools int8 on NHWC only (jit_uni_i8i8_pooling), and
 * that kernel pays ~60 cycles per output position whatever the channel
 * count: the 28x28 CNN's first int8 pool (32 channels, 32x14x14
 * positions) took 0.13 ms at batch 32, twice the f32 pool it replaced,
 * where a plain loop over the channels (vpmaxub) takes ~0.02.  The
 * primitive is still built (its memory descriptors give the layouts the
 * plan asks ss_dnn_prim_layout about, and it says whether oneDNN has the
 * geometry at all); only the run is ours.  The maximum is exact, so the
 * result is oneDNN's bit for bit.  One thread: at ~6x oneDNN's per-thread
 * speed the pool is a small part of an int8 net.
 *
 * THREADS: [any] to attach; a run touches only its buffers.
 */

#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/dnnl/internal.h"

/* Windows of more taps (a global pool) stay on oneDNN's kernel. */
#define SS__POOL8_TAPS 64

struct ss__dnn_kern {
    int s8;                     /* else u8 */
    int64_t n, c, ih, iw, oh, ow;
    int64_t kh, kw, sh, sw, dh, dw, ph, pw;
};

/* Lanes the compiler turns into one vector max (pmaxub; pcmpgtb and a
 * blend for s8): the constant trip count is what lets it vectorize at
 * -O2.  T is the element type, x[at + off[t]] the window's taps (at, the
 * window's corner, may lie in the padding: the sums are indexes first). */
#define LANES 16
#define MAX_TAPS(T, out, x, at, off, n, c)                                  \
    do {                                                                \
        int64_t k_ = 0;                                                 \
                                                                        \
        for (; k_ + LANES <= (c); k_ += LANES) {                        \
            T m_[LANES];                                                \
                                                                        \
            memcpy(m_, (x) + ((at) + (off)[0] + k_), LANES);            \
            for (int t_ = 1; t_ < (n); t_++) {                          \
                const T *s_ = (x) + ((at) + (off)[t_] + k_);            \
                                                                        \
                for (int j_ = 0; j_ < LANES; j_++)                      \
                    m_[j_] = s_[j_] > m_[j_] ? s_[j_] : m_[j_];         \
            }                                                           \
            memcpy((out) + k_, m_, LANES);                              \
        }                                                               \
        for (; k_ < (c); k_++) {                                        \
            T m_ = (x)[(at) + (off)[0] + k_];                           \
                                                                        \
            for (int t_ = 1; t_ < (n); t_++) {                          \
                T v_ = (x)[(at) + (off)[t_] + k_];                      \
                                                                        \
                m_ = v_ > m_ ? v_ : m_;                                 \
            }                                                           \
            (out)[k_] = m_;                                             \
        }                                                               \
    } while (0)

/* The taps of one window axis inside the input: [*lo, *hi). */
static void
taps(int64_t o, int64_t s, int64_t d, int64_t p, int64_t k, int64_t in,
     int64_t *lo, int64_t *hi)
{
    int64_t start = o * s - p;

    *lo = 0;
    while (*lo < k && start + *lo * d < 0)
        (*lo)++;
    *hi = k;
    while (*hi > *lo && start + (*hi - 1) * d >= in)
        (*hi)--;
}

void
ss__dnn_kern_run(const ss__dnn_kern_t *g, const void *in, void *out)
{
    const uint8_t *x = in;
    uint8_t *y = out;
    const int64_t c = g->c;
    int64_t off[SS__POOL8_TAPS], all[SS__POOL8_TAPS];
    int n_all = 0;

    /* a window inside the input: its taps' offsets from its corner */
    for (int64_t u = 0; u < g->kh; u++)
        for (int64_t v = 0; v < g->kw; v++)
            all[n_all++] = (u * g->dh * g->iw + v * g->dw) * c;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t i = 0; i < g->oh; i++) {
            int64_t u0, u1;

            taps(i, g->sh, g->dh, g->ph, g->kh, g->ih, &u0, &u1);
            for (int64_t j = 0; j < g->ow; j++) {
                uint8_t *o = y + ((b * g->oh + i) * g->ow + j) * c;
                /* the window's corner (may lie in the padding) */
                int64_t at = ((b * g->ih + i * g->sh - g->ph) * g->iw
                              + j * g->sw - g->pw) * c, v0, v1;
                const int64_t *of = all;
                int n = n_all;

                taps(j, g->sw, g->dw, g->pw, g->kw, g->iw, &v0, &v1);
                if (u1 - u0 != g->kh || v1 - v0 != g->kw) {
                    n = 0;
                    for (int64_t u = u0; u < u1; u++)
                        for (int64_t v = v0; v < v1; v++)
                            off[n++] = all[u * g->kw + v];
                    of = off;
                }
                if (n == 0)     /* a window all in padding: the lowest */
                    memset(o, g->s8 ? 0x80 : 0, (size_t)c);
                else if (g->s8)
                    MAX_TAPS(int8_t, (int8_t *)o, (const int8_t *)x, at, of,
                             n, c);
                else
                    MAX_TAPS(uint8_t, o, x, at, of, n, c);
            }
        }
}

int
ss__dnn_pool8_attach(ss_dnn_prim_t *p, const ss_dnn_pool_desc_t *d,
                     const ss__dnn_window_t *win, ss_err_t *err)
{
    ss__dnn_kern_t *g;

    if (d->alg != SS_DNN_POOL_MAX || d->layout != SS_DNN_NHWC
        || (d->dtype != SS_DTYPE_U8 && d->dtype != SS_DTYPE_I8)
        || win->kernel[0] * win->kernel[1] > SS__POOL8_TAPS)
        return 0;
    if ((g = ss_calloc(1, sizeof(*g))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an int8 pool");
    g->s8 = d->dtype == SS_DTYPE_I8;
    g->n = d->n;
    g->c = d->c;
    g->ih = d->ih;
    g->iw = d->iw;
    g->oh = win->out[0];
    g->ow = win->out[1];
    g->kh = win->kernel[0];
    g->kw = win->kernel[1];
    g->sh = win->strides[0];
    g->sw = win->strides[1];
    g->dh = win->dil[0] + 1;
    g->dw = win->dil[1] + 1;
    g->ph = win->pl[0];
    g->pw = win->pl[1];
    p->kern = g;
    snprintf(p->impl, sizeof(p->impl), "ss:max_pool_%s_nhwc",
             g->s8 ? "s8" : "u8");
    return 0;
}
