/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The trainer's elementwise kernels, forward and backward: unary
 * functions and binary ones with numpy broadcasting.  Conventions (acc,
 * fixed summation order): kern.c.
 *
 * THREADS: [worker]; OpenMP threads inside a call.
 */

#include <math.h>
#include <string.h>

#include "compress/train/internal.h"
#include "compress/train/kern.h"

/* ---- unary ---------------------------------------------------------------- */

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* min(max(x, lo), hi) as ONNX's Clip orders them. */
static inline float
clampf(float x, float lo, float hi)
{
    float y = x < lo ? lo : x;

    return y > hi ? hi : y;
}

static inline float
gelu_tanh_u(float x)
{
    return 0.7978845608028654f * (x + 0.044715f * x * x * x);
}

int
ss__k_unary(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    int64_t n = t->tv[s->out[0]].numel, i;
    float a = s->f[0], c = s->f[1];

#define MAP(expr)                                                   \
    _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")   \
    for (i = 0; i < n; i++) {                                       \
        float v = x[i];                                             \
        y[i] = (expr);                                              \
    }                                                               \
    break;
    switch (s->op) {
    case SS__U_RELU: MAP(v > 0 ? v : 0)
    case SS__U_LEAKY: MAP(v > 0 ? v : a * v)
    case SS__U_ERF: MAP(erff(v))
    case SS__U_SQRT: MAP(sqrtf(v))
    case SS__U_TANH: MAP(tanhf(v))
    case SS__U_SIGMOID: MAP(1.0f / (1.0f + expf(-v)))
    case SS__U_EXP: MAP(expf(v))
    case SS__U_LOG: MAP(logf(v))
    case SS__U_NEG: MAP(-v)
    case SS__U_RECIP: MAP(1.0f / v)
    case SS__U_ABS: MAP(fabsf(v))
    case SS__U_SOFTPLUS: MAP(v > 20.0f ? v : log1pf(expf(v)))
    case SS__U_GELU: MAP(0.5f * v * (1.0f + erff(v * (float)SQRT1_2)))
    case SS__U_GELU_TANH: MAP(0.5f * v * (1.0f + tanhf(gelu_tanh_u(v))))
    /* ONNX: min(max(x, min), max), so max wins when min > max */
    case SS__U_CLIP: MAP(clampf(v, a, c))
    case SS__U_HSIGMOID: MAP(clampf(a * v + c, 0.0f, 1.0f))
    case SS__U_HSWISH: MAP(v * clampf(v * (1.0f / 6) + 0.5f, 0.0f, 1.0f))
    default:
        return ss_err_set(err, SS_EINTERNAL, "trainer: unary op %d", s->op);
    }
#undef MAP
    return 0;
}

int
ss__k_unary_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0), *x = IN(1), *y = IN(2);
    float *dx = OUT(0);
    int64_t n = t->tv[s->out[0]].numel, i;
    float a = s->f[0], c = s->f[1];
    int acc = ACC(0);

#define DMAP(expr)                                                  \
    _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")   \
    for (i = 0; i < n; i++) {                                       \
        float g = dy[i], v = x[i], o = y[i], r = (expr);            \
        (void)v; (void)o;                                           \
        dx[i] = acc ? dx[i] + r : r;                                \
    }                                                               \
    break;
    switch (s->op) {
    case SS__U_RELU: DMAP(v > 0 ? g : 0)
    case SS__U_LEAKY: DMAP(v > 0 ? g : a * g)
    case SS__U_ERF: DMAP(g * 1.1283791670955126f * expf(-v * v))
    case SS__U_SQRT: DMAP(g * 0.5f / o)
    case SS__U_TANH: DMAP(g * (1.0f - o * o))
    case SS__U_SIGMOID: DMAP(g * o * (1.0f - o))
    case SS__U_EXP: DMAP(g * o)
    case SS__U_LOG: DMAP(g / v)
    case SS__U_NEG: DMAP(-g)
    case SS__U_RECIP: DMAP(-g * o * o)
    case SS__U_ABS: DMAP(v > 0 ? g : v < 0 ? -g : 0)
    case SS__U_SOFTPLUS: DMAP(g / (1.0f + expf(-v)))
    case SS__U_GELU:
        DMAP(g * (0.5f * (1.0f + erff(v * (float)SQRT1_2)) +
                  v * (float)INV_SQRT_2PI * expf(-0.5f * v * v)))
    case SS__U_GELU_TANH:
        DMAP(g * (0.5f * (1.0f + tanhf(gelu_tanh_u(v))) +
                  0.5f * v * (1.0f - tanhf(gelu_tanh_u(v)) *
                                     tanhf(gelu_tanh_u(v))) *
                  0.7978845608028654f * (1.0f + 3.0f * 0.044715f * v * v)))
    /* At the kinks PyTorch's convention (hardtanh_backward,
     * hardsigmoid_backward, hardswish_backward of 1.13): Clip and
     * HardSigmoid pass the gradient only strictly inside the range (0 at
     * x == min or max; torch.clamp's own backward would pass it there),
     * HardSwish takes the middle piece on [-3, 3) as PyTorch's vector
     * loop does (its scalar loop, which only runs the tail of a tensor
     * shorter than a vector, takes [-3, 3]). */
    case SS__U_CLIP: DMAP(v > a && v < c ? g : 0)
    case SS__U_HSIGMOID:
        DMAP(a * v + c > 0.0f && a * v + c < 1.0f ? g * a : 0)
    case SS__U_HSWISH:
        DMAP(v < -3.0f ? 0 : v < 3.0f ? g * (v * (1.0f / 3) + 0.5f) : g)
    default:
        return ss_err_set(err, SS_EINTERNAL, "trainer: unary op %d", s->op);
    }
#undef DMAP
    return 0;
}

/* ---- binary ------------------------------------------------------------- */

static inline float
bin(int op, float a, float b)
{
    switch (op) {
    case SS__B_ADD: return a + b;
    case SS__B_SUB: return a - b;
    case SS__B_MUL: return a * b;
    case SS__B_DIV: return a / b;
    default: return powf(a, b);
    }
}

/* One row of a broadcast binary loop: A and B are the row's elements of
 * ar and br (strides sa, sb of 1 or 0, the broadcast one), STMT the body;
 * the contiguous and one-sided broadcast cases get vector loops of their
 * own (a run-time stride keeps GCC's loop scalar). */
#define ROW(STMT)                                                       \
    do {                                                                \
        int64_t j;                                                      \
        if (sa == 1 && sb == 1) {                                       \
            _Pragma("omp simd")                                         \
            for (j = 0; j < inner; j++) {                               \
                float A = ar[j], B = br[j];                             \
                STMT;                                                   \
            }                                                           \
        } else if (sa == 1 && sb == 0) {                                \
            float B = br[0];                                            \
            _Pragma("omp simd")                                         \
            for (j = 0; j < inner; j++) {                               \
                float A = ar[j];                                        \
                STMT;                                                   \
            }                                                           \
        } else if (sa == 0 && sb == 1) {                                \
            float A = ar[0];                                            \
            _Pragma("omp simd")                                         \
            for (j = 0; j < inner; j++) {                               \
                float B = br[j];                                        \
                STMT;                                                   \
            }                                                           \
        } else {                                                        \
            for (j = 0; j < inner; j++) {                               \
                float A = ar[j * sa], B = br[j * sb];                   \
                STMT;                                                   \
            }                                                           \
        }                                                               \
    } while (0)

int
ss__k_binary(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const ss__bc_t *bc = s->aux;
    const float *a = IN(0), *b = IN(1);
    float *y = OUT(0);
    int64_t inner = bc->dims[bc->nd - 1], r;
    int64_t sa = bc->st[0][bc->nd - 1], sb = bc->st[1][bc->nd - 1];
    int op = s->op;

    (void)err;
    if (bc->rows == 1 && sa == 1 && sb == 1) {
        int64_t i;

#pragma omp parallel for schedule(static) if (inner > PAR_MIN)
        for (i = 0; i < inner; i++)
            y[i] = bin(op, a[i], b[i]);
        return 0;
    }
#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
    for (r = 0; r < bc->rows; r++) {
        int64_t off[3];
        float *yr = y + r * inner;
        const float *ar, *br;

        ss__bc_row(bc, r, off);
        ar = a + off[0];
        br = b + off[1];
        switch (op) {
        case SS__B_ADD: ROW(yr[j] = A + B); break;
        case SS__B_SUB: ROW(yr[j] = A - B); break;
        case SS__B_MUL: ROW(yr[j] = A * B); break;
        case SS__B_DIV: ROW(yr[j] = A / B); break;
        default: ROW(yr[j] = bin(op, A, B)); break;
        }
    }
    return 0;
}

/* The derivative of y = a op b with respect to operand slot, times g. */
static inline float
dbin(int op, int slot, float g, float a, float b, float y)
{
    switch (op) {
    case SS__B_MUL: return g * (slot ? a : b);
    case SS__B_DIV: return slot ? -g * y / b : g / b;
    case SS__B_POW:
        if (slot)
            return a > 0 ? g * y * logf(a) : 0.0f;
        return b == 0 ? 0.0f : g * b * powf(a, b - 1.0f);
    case SS__B_SUB: return slot ? -g : g;
    default: return g;
    }
}

int
ss__k_binary_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const ss__bc_t *bc = s->aux;
    const float *dy = IN(0), *a = IN(1), *b = IN(2), *y = IN(3);
    float *dx = OUT(0);
    int64_t inner = bc->dims[bc->nd - 1], r;
    int64_t sa = bc->st[0][bc->nd - 1], sb = bc->st[1][bc->nd - 1];
    int64_t sx = bc->st[2][bc->nd - 1];
    int op = s->op, slot = (int)s->p[0], acc = ACC(0);
    bool full = t->tv[s->out[0]].numel == bc->numel;

    (void)err;
    if (full && sx == 1) {
        /* dx is dense like dy: rows of it, vector loops (ROW) */
#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
        for (r = 0; r < bc->rows; r++) {
            int64_t off[3], base = r * inner;
            const float *ar, *br, *gr = dy + base, *yr = y + base;
            float *dr;

            ss__bc_row(bc, r, off);
            ar = a + off[0];
            br = b + off[1];
            dr = dx + off[2];
/* dr[j] = V, or += V when the gradient accumulates: one loop per case,
 * as a test of acc inside the loop kept GCC from vectorizing it (the
 * attention's Div backward ran scalar divisions) */
#define PUT(V, X)                                                       \
    do {                                                                \
        if (acc)                                                        \
            ROW(dr[j] = dr[j] + (V); X);                                \
        else                                                            \
            ROW(dr[j] = (V); X);                                        \
    } while (0)
            switch (op) {
            case SS__B_ADD: PUT(gr[j], (void)A; (void)B); break;
            case SS__B_SUB:
                if (slot)
                    PUT(-gr[j], (void)A; (void)B);
                else
                    PUT(gr[j], (void)A; (void)B);
                break;
            case SS__B_MUL:
                if (slot)
                    PUT(gr[j] * A, (void)B);
                else
                    PUT(gr[j] * B, (void)A);
                break;
            case SS__B_DIV:
                /* dbin's g / b without its switch, which kept the loop
                 * scalar */
                if (!slot)
                    PUT(gr[j] / B, (void)A);
                else
                    PUT(dbin(op, slot, gr[j], A, B, yr[j]), (void)0);
                break;
            default:
                PUT(dbin(op, slot, gr[j], A, B, yr[j]), (void)0);
                break;
            }
#undef PUT
        }
        return 0;
    }
    if (full) {
#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
        for (r = 0; r < bc->rows; r++) {
            int64_t off[3], j, base = r * inner;

            ss__bc_row(bc, r, off);
            for (j = 0; j < inner; j++) {
                float v = dbin(op, slot, dy[base + j], a[off[0] + j * sa],
                               b[off[1] + j * sb], y[base + j]);
                float *p = &dx[off[2] + j * sx];

                *p = acc ? *p + v : v;
            }
        }
        return 0;
    }
    /* a broadcast operand: its elements gather many terms, in order */
    if (!acc)
        memset(dx, 0, t->tv[s->out[0]].bytes);
    for (r = 0; r < bc->rows; r++) {
        int64_t off[3], j, base = r * inner;

        ss__bc_row(bc, r, off);
        for (j = 0; j < inner; j++)
            dx[off[2] + j * sx] += dbin(op, slot, dy[base + j],
                                        a[off[0] + j * sa],
                                        b[off[1] + j * sb], y[base + j]);
    }
    return 0;
}
