/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bf16 activations: in mixed precision (opts.bf16), the activations
 * between convolutions, BatchNorm, Relu, pooling and residual Adds, and
 * their gradients, are kept in bf16 instead of f32.
 *
 * Why: with only the products' operands in bf16 (the trainer before
 * this), a bf16 step of the CNN fixture was 0.99-1.15x one in f32 on the
 * same oneDNN kernels: the convolutions saved 0.3 of ~2 ms, converting
 * their operands cost 0.12, and ~0.8 ms of f32 activation work (Relu,
 * BatchNorm, Add, pooling, gradient copies) was the same in both.  Kept
 * in bf16, that work moves half the bytes and the conversions go: a
 * convolution reads the bf16 output of the one before it as it is.
 *
 * DESIGN.  A convolution whose primitive runs bf16 writes its output in
 * bf16 (ss__tv_set_act16 marks the value; its gradient, made by
 * ss__tb_grad, is bf16 too, and the convolution's backward by data
 * writes it).  The rules flagged SS__R_BF16 in the table (Conv,
 * BatchNormalization, Relu, the poolings, Add) see such values as they
 * are and run oneDNN primitives of the same dtype (BatchNorm keeps f32
 * scale, shift and statistics; the residual Add is oneDNN's binary; its
 * backward a bf16 copy); where one cannot (frozen BatchNorm statistics,
 * the C kernels forced by opts.nn, a pooling geometry oneDNN does not
 * take, an Add that broadcasts) it calls ss__tb_node_f32, and so does
 * the builder for every other rule: the node then reads f32 copies
 * (ss__tb_f32: one conversion step per value and layout, shared), and
 * the gradients it writes for them are converted and added into the
 * bf16 gradient when the backward reaches the producer (ss__tb_merge).
 * So conversions happen only at the edges: the input (the first
 * convolution's bf16 operand, as before) and where the network leaves
 * the convolutional part (the Flatten before a Gemm).
 *
 * Numerics.  Every bf16 activation is rounded once, where it is made
 * (oneDNN computes in f32 inside each primitive); a gradient that
 * several readers add to (a residual's input) is summed in f32 and
 * rounded once per addition, as PyTorch's autocast accumulates a bf16
 * tensor's gradient; parameter gradients (the convolutions' weights,
 * BatchNorm's scale and shift, biases summed in double) stay f32.
 *
 * THREADS: [worker]; kernels use OpenMP inside one call.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

#define PAR_MIN 32768

#define bf2f ss__bf16_f32

#define f2bf ss__f32_bf16

/* ---- the builder's side ---------------------------------------------------- */

bool
ss__tb_act16_on(const ss__tb_t *b)
{
    return b->t->o.bf16 && !b->t->o.f32_acts;
}

void
ss__tv_set_act16(ss__tb_t *b, int v)
{
    ss__tv_t *tv = &b->t->tv[v];

    tv->dtype = SS_DTYPE_BF16;
    tv->bytes = (size_t)tv->numel * 2;
    tv->act16 = 1;
    b->t->n_act16++;
}

int
ss__tb_f32(ss__tb_t *b, int v, ss_dnn_layout_t l, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int c;

    if (v < 0)
        return v;
    if (b->lc_of[v] >= 0)
        v = b->lc_of[v];
    if (!t->tv[v].act16)
        return ss__tb_lay(b, v, l, err);
    if (b->fc[v][l] >= 0)
        return b->fc[v][l];
    for (int k = 0; k < 3; k++)
        if (b->fc[v][k] >= 0 && ss__tv_lay_same(&t->tv[v], (int)l, k))
            return b->fc[v][l] = b->fc[v][k];
    if ((c = ss__tb_copy_new(b, v, SS_DTYPE_F32, l, err)) < 0)
        return c;
    b->fc[v][l] = c;
    return c;
}

int
ss__tb_node_f32(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int idx = ss__tb_node_index(b, n), rc;

    b->nf32[idx] = 1;
    for (int k = 0; k < n->n_inputs; k++) {
        int v = n->inputs[k] >= 0 ? b->vmap[n->inputs[k]] : -1;

        if (v < 0 || !b->t->tv[v].act16)
            continue;
        if ((rc = ss__tb_f32(b, v, b->plain_only ? SS_DNN_PLAIN
                                                 : b->t->tv[v].lay,
                             err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- kernels --------------------------------------------------------------- */

bool
ss__cpu_avx512(void)
{
    /* reads what libgcc's constructor found: cheap, and race-free */
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
}

/* y += x in bf16, vectorized by the compiler for the CPU: bf16 training
 * runs only where oneDNN has native bf16 (AVX512_BF16 or AMX, so
 * AVX-512), 512-bit vectors where the CPU has them. */
#define ADD16_LOOP(y, x, n)                                             \
    _Pragma("omp parallel for simd schedule(static) if (n > PAR_MIN)")  \
    for (int64_t e = 0; e < n; e++)                                     \
        y[e] = f2bf(bf2f(y[e]) + bf2f(x[e]))

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
add16_avx512(uint16_t *y, const uint16_t *x, int64_t n)
{
    ADD16_LOOP(y, x, n);
}

void
ss__add_into(void *dst, const void *src, ss_dtype_t dt, int64_t n)
{
    int64_t i;

    if (dt == SS_DTYPE_BF16) {
        uint16_t *y = dst;
        const uint16_t *x = src;

        if (ss__cpu_avx512())
            add16_avx512(y, x, n);
        else
            ADD16_LOOP(y, x, n);
        return;
    }
    {
        float *y = dst;
        const float *x = src;

        for (i = 0; i < n; i++)
            y[i] += x[i];
    }
}

int
ss__k_copy16(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const ss__tv_t *y = &t->tv[s->out[0]];
    const void *x = t->tv[s->in[0]].data;

    (void)err;
    if (s->acc & 1u)
        ss__add_into(y->data, x, SS_DTYPE_BF16, y->numel);
    else if (x != y->data)
        memcpy(y->data, x, y->bytes);
    return 0;
}

/* BatchNorm's forward on running statistics (ss_train_forward) of a bf16
 * x, in the step of ss__k_batchnorm (in x, scale, bias, running mean,
 * running var; p N, C, H*W, L; f[0] epsilon). */
int
ss__k_bn16_infer(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const uint16_t *x = t->tv[s->in[0]].data;
    const float *g = t->tv[s->in[1]].data, *bb = t->tv[s->in[2]].data;
    const float *rm = t->tv[s->in[3]].data, *rv = t->tv[s->in[4]].data;
    uint16_t *y = t->tv[s->out[0]].data;
    int64_t n = s->p[0], C = s->p[1], hw = s->p[2], L = s->p[3];
    int64_t CB = C / L, i;

    (void)err;
#pragma omp parallel for schedule(static) if (n * C * hw > PAR_MIN)
    for (i = 0; i < n * CB; i++) {
        int64_t cb = i % CB, j, l;

        for (j = 0; j < hw; j++)
            for (l = 0; l < L; l++) {
                int64_t c = cb * L + l, e = (i * hw + j) * L + l;
                float sc = g[c] / sqrtf(rv[c] + s->f[0]);

                y[e] = f2bf((bf2f(x[e]) - rm[c]) * sc + bb[c]);
            }
    }
    return 0;
}
