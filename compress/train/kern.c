/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The trainer's kernels, forward and backward, in plain C with OpenMP
 * (matrix products go to oneDNN through ss__k_dnn).
 *
 * Every kernel reads its arguments from the step (value ids, geometry in
 * p[], scalars in f[]) and writes its outputs, or adds to them when the
 * step's acc bit says a gradient is accumulating.  Loops split work over
 * threads so that no two threads write the same element and every sum is
 * taken in a fixed order for a given thread count: results are the same
 * bytes from run to run (partial sums per thread are combined in thread
 * order).
 *
 * THREADS: [worker]; OpenMP threads inside a call.
 */

#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

#define PAR_MIN 262144  /* elements below which a loop stays serial: an
                         * OpenMP region costs more than a short loop, and
                         * far more on a loaded machine */

static void *
tv_data(ss__tr_t *t, int v)
{
    return v >= 0 ? t->tv[v].data : NULL;
}

#define IN(k) ((const float *)tv_data(t, s->in[k]))
#define OUT(k) ((float *)tv_data(t, s->out[k]))
#define ACC(k) ((s->acc >> (k)) & 1u)

/* The trainer's scratch for partial sums: grows on the first steps only
 * (then a step allocates nothing), freed with the trainer. */
double *
ss__kbuf(ss__tr_t *t, size_t n)
{
    if (n > t->kcap) {
        double *b = ss_realloc(t->kbuf, n * sizeof(double));

        if (b == NULL)
            return NULL;
        t->kbuf = b;
        t->kcap = n;
    }
    return t->kbuf;
}

/* ---- plumbing ------------------------------------------------------------ */

int
ss__k_ref(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    ss_tensor_t in[SS__STEP_IN], out[SS__STEP_OUT];
    const ss_tensor_t *inp[SS__STEP_IN];
    int k;

    for (k = 0; k < s->n_in; k++) {
        const ss__tv_t *v;

        inp[k] = NULL;
        if (s->in[k] < 0)
            continue;
        v = &t->tv[s->in[k]];
        in[k].dtype = v->dtype;
        in[k].ndim = v->ndim;
        memcpy(in[k].dims, v->dims, sizeof(in[k].dims));
        in[k].data = v->data;
        inp[k] = &in[k];
    }
    for (k = 0; k < s->n_out; k++) {
        memset(&out[k], 0, sizeof(out[k]));
        if (s->out[k] < 0)
            continue;
        out[k].dtype = t->tv[s->out[k]].dtype;
        out[k].ndim = t->tv[s->out[k]].ndim;
        memcpy(out[k].dims, t->tv[s->out[k]].dims, sizeof(out[k].dims));
        out[k].data = t->tv[s->out[k]].data;
    }
    return s->ref->run(s->node, t->g->opset, inp, out, err);
}

int
ss__k_dnn(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const void *in[SS__STEP_IN];

    for (int k = 0; k < s->n_in; k++)
        in[k] = tv_data(t, s->in[k]);
    return ss_dnn_run(s->prim, t->stream, in, OUT(0), t->scratch, err);
}

int
ss__k_copy(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    int64_t n = t->tv[s->out[0]].numel, i;

    (void)err;
    if (!ACC(0)) {
        if (x != y)
            memcpy(y, x, (size_t)n * sizeof(float));
        return 0;
    }
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (i = 0; i < n; i++)
        y[i] += x[i];
    return 0;
}

int
ss__k_zero(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    (void)err;
    memset(OUT(0), 0, t->tv[s->out[0]].bytes);
    return 0;
}

/* ---- broadcasting ---------------------------------------------------------- */

void
ss__bc_init(ss__bc_t *bc, int fnd, const int64_t *fdims, int n,
            const int *nd, const int64_t *const *dims)
{
    int64_t st[3][SS_MAX_DIMS];
    int i, k, m = 0;

    memset(bc, 0, sizeof(*bc));
    for (k = 0; k < n; k++) {
        int64_t acc = 1;

        for (i = fnd - 1; i >= 0; i--) {
            int j = i - (fnd - nd[k]);
            int64_t dk = j >= 0 ? dims[k][j] : 1;

            st[k][i] = dk == 1 ? 0 : acc;
            acc *= dk;
        }
    }
    /* drop unit dims, merge dims every operand walks contiguously */
    for (i = 0; i < fnd; i++) {
        if (fdims[i] == 1)
            continue;
        if (m > 0) {
            bool merge = true;

            for (k = 0; k < n; k++)
                if (st[k][i] * fdims[i] != bc->st[k][m - 1])
                    merge = false;
            if (merge) {
                bc->dims[m - 1] *= fdims[i];
                for (k = 0; k < n; k++)
                    bc->st[k][m - 1] = st[k][i];
                continue;
            }
        }
        bc->dims[m] = fdims[i];
        for (k = 0; k < n; k++)
            bc->st[k][m] = st[k][i];
        m++;
    }
    if (m == 0) {
        bc->dims[0] = 1;
        for (k = 0; k < n; k++)
            bc->st[k][0] = 0;
        m = 1;
    }
    bc->nd = m;
    bc->rows = 1;
    for (i = 0; i < m - 1; i++)
        bc->rows *= bc->dims[i];
    bc->numel = bc->rows * bc->dims[m - 1];
}

void
ss__bc_row(const ss__bc_t *bc, int64_t r, int64_t *off)
{
    int k, i;

    off[0] = off[1] = off[2] = 0;
    for (i = bc->nd - 2; i >= 0; i--) {
        int64_t q = r % bc->dims[i];

        r /= bc->dims[i];
        for (k = 0; k < 3; k++)
            off[k] += q * bc->st[k][i];
    }
}

/* ---- unary ---------------------------------------------------------------- */

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

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
    float a = s->f[0];

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
    float a = s->f[0];
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
#define PUT(V) dr[j] = acc ? dr[j] + (V) : (V)
            switch (op) {
            case SS__B_ADD: ROW(PUT(gr[j]); (void)A; (void)B); break;
            case SS__B_SUB:
                if (slot)
                    ROW(PUT(-gr[j]); (void)A; (void)B);
                else
                    ROW(PUT(gr[j]); (void)A; (void)B);
                break;
            case SS__B_MUL:
                if (slot)
                    ROW(PUT(gr[j] * A); (void)B);
                else
                    ROW(PUT(gr[j] * B); (void)A);
                break;
            case SS__B_DIV:
                /* dbin's g / b without its switch, which kept the loop
                 * scalar: the attention's division by sqrt(d) was 1.3 ms
                 * of the transformer fixture's 22 ms step */
                if (!slot) {
                    ROW(PUT(gr[j] / B); (void)A);
                    break;
                }
                ROW(PUT(dbin(op, slot, gr[j], A, B, yr[j])));
                break;
            default:
                ROW(PUT(dbin(op, slot, gr[j], A, B, yr[j])));
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

/* ---- reduce and expand -------------------------------------------------- */

/* Whether every row of bc lands on its own element of operand 1. */
static bool
distinct_rows(const ss__bc_t *bc)
{
    for (int i = 0; i < bc->nd - 1; i++)
        if (bc->st[1][i] == 0)
            return false;
    return true;
}

/* A scaled copy between operand 0's full shape (dense) and operand 1's
 * elements, one to one: to_full broadcasts x (operand 1) into y (full);
 * otherwise x (full) goes to y (operand 1, same element count). */
static void
bc_copy(const ss__bc_t *bc, const float *x, float *y, float scale, int acc,
        int to_full)
{
    int64_t inner = bc->dims[bc->nd - 1], s1 = bc->st[1][bc->nd - 1], r;

#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
    for (r = 0; r < bc->rows; r++) {
        int64_t off[3], j;

        ss__bc_row(bc, r, off);
        for (j = 0; j < inner; j++) {
            int64_t f = r * inner + j, o = off[1] + j * s1;
            float v = x[to_full ? o : f] * scale;
            float *p = &y[to_full ? f : o];

            *p = acc ? *p + v : v;
        }
    }
}

int
ss__k_reduce(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const ss__bc_t *bc = s->aux;
    const float *x = IN(0);
    float *y = OUT(0);
    float scale = s->f[0];
    int acc = ACC(0);
    int64_t inner = bc->dims[bc->nd - 1], r;
    int64_t sy = bc->st[1][bc->nd - 1];

    if (t->tv[s->out[0]].numel == bc->numel) {
        /* nothing reduced */
        bc_copy(bc, x, y, scale, acc, 0);
        return 0;
    }
    if (bc->nd == 2 && bc->st[1][0] == 0 && sy == 1) {
        /* column sums [R, C] -> [C] (bias gradients), by blocks of 64
         * columns walked row after row: contiguous reads that
         * vectorize, where a column at a time strides over rows; each
         * column's sum keeps its order, whatever the threads */
        double *sum = ss__kbuf(t, (size_t)inner);
        int64_t cb;

        if (sum == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a reduction");
#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
        for (cb = 0; cb < inner; cb += 64) {
            int64_t ce = cb + 64 < inner ? cb + 64 : inner, c;

            for (c = cb; c < ce; c++)
                sum[c] = 0;
            for (r = 0; r < bc->rows; r++) {
                const float *xr = x + r * inner;

                for (c = cb; c < ce; c++)
                    sum[c] += xr[c];
            }
            for (c = cb; c < ce; c++)
                y[c] = acc ? y[c] + (float)(sum[c] * scale)
                           : (float)(sum[c] * scale);
        }
        return 0;
    }
    if (sy == 0 && distinct_rows(bc)) {
        /* row sums [R, C] -> [R] (rows write distinct elements) */
#pragma omp parallel for schedule(static) if (bc->numel > PAR_MIN)
        for (r = 0; r < bc->rows; r++) {
            int64_t off[3], j;
            double sum = 0;

            ss__bc_row(bc, r, off);
            for (j = 0; j < inner; j++)
                sum += x[r * inner + j];
            y[off[1]] = acc ? y[off[1]] + (float)(sum * scale)
                            : (float)(sum * scale);
        }
        return 0;
    }
    {
        /* anything else (e.g. [N, C, P] -> [C]): serial, in double, so a
         * sum that is zero in exact arithmetic (a conv bias before a
         * BatchNorm) stays at rounding noise of the inputs' size */
        int64_t ny = t->tv[s->out[0]].numel, i;
        double *sum = ss__kbuf(t, (size_t)ny);

        if (sum == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a reduction");
        memset(sum, 0, (size_t)ny * sizeof(double));
        for (r = 0; r < bc->rows; r++) {
            int64_t off[3], j;

            ss__bc_row(bc, r, off);
            for (j = 0; j < inner; j++)
                sum[off[1] + j * sy] += x[r * inner + j];
        }
        for (i = 0; i < ny; i++)
            y[i] = acc ? y[i] + (float)(sum[i] * scale)
                       : (float)(sum[i] * scale);
    }
    return 0;
}

int
ss__k_expand(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    (void)err;
    bc_copy(s->aux, IN(0), OUT(0), s->f[0], ACC(0), 1);
    return 0;
}

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

int
ss__k_layernorm(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0), *g = IN(1), *b = IN(2);
    float *y = OUT(0), *mean = OUT(1), *rstd = OUT(2);
    int64_t rows = s->p[0], c = s->p[1], r;
    float eps = s->f[0];

    (void)err;
#pragma omp parallel for schedule(static) if (rows * c > PAR_MIN)
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        double m = 0, v = 0;
        float mf, rs;
        int64_t j;

        for (j = 0; j < c; j++)
            m += xr[j];
        m /= (double)c;
        for (j = 0; j < c; j++)
            v += (xr[j] - m) * (xr[j] - m);
        v /= (double)c;
        mf = (float)m;
        rs = (float)(1.0 / sqrt(v + eps));
        mean[r] = mf;
        rstd[r] = rs;
        for (j = 0; j < c; j++) {
            float h = (xr[j] - mf) * rs;

            yr[j] = h * (g ? g[j] : 1.0f) + (b ? b[j] : 0.0f);
        }
    }
    return 0;
}

int
ss__k_layernorm_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0), *x = IN(1), *g = IN(2);
    const float *mean = IN(3), *rstd = IN(4);
    float *dx = OUT(0), *dg = OUT(1), *db = OUT(2);
    int64_t rows = s->p[0], c = s->p[1];
    int nt = omp_get_max_threads(), used = 1;
    double *part = NULL;

    if (dg || db) {
        if ((part = ss__kbuf(t, (size_t)nt * 2 * (size_t)c)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a kernel");
        memset(part, 0, (size_t)nt * 2 * (size_t)c * sizeof(double));
    }
#pragma omp parallel if (rows * c > PAR_MIN)
    {
        int tid = omp_get_thread_num();
        double *pg = part ? part + (size_t)tid * 2 * (size_t)c : NULL;
        int64_t r;

#pragma omp single
        used = omp_get_num_threads();
#pragma omp for schedule(static)
        for (r = 0; r < rows; r++) {
            const float *xr = x + r * c, *dyr = dy + r * c;
            float m = mean[r], rs = rstd[r];
            double s1 = 0, s2 = 0;
            int64_t j;

            for (j = 0; j < c; j++) {
                float h = (xr[j] - m) * rs;
                float dh = dyr[j] * (g ? g[j] : 1.0f);

                s1 += dh;
                s2 += dh * h;
                if (pg) {
                    pg[j] += dyr[j] * h;
                    pg[c + j] += dyr[j];
                }
            }
            if (dx) {
                float a1 = (float)(s1 / (double)c);
                float a2 = (float)(s2 / (double)c);
                float *dxr = dx + r * c;

                for (j = 0; j < c; j++) {
                    float h = (xr[j] - m) * rs;
                    float dh = dyr[j] * (g ? g[j] : 1.0f);
                    float v = rs * (dh - a1 - h * a2);

                    dxr[j] = ACC(0) ? dxr[j] + v : v;
                }
            }
        }
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
        for (l = 0; l < w; l++)
            y[c0 + l] = acc ? y[c0 + l] + (float)sum[l] : (float)sum[l];
    }
    return 0;
}

/* ---- pooling --------------------------------------------------------------- */

/* Where plane pl (n * C + c) of a [N][C/L][sp][L] layout starts, for
 * sp elements a plane: L = 1 is NCHW, 16 nChw16c, C NHWC; a plane's
 * elements are L apart. */
static inline int64_t
plane_at(int64_t pl, int64_t C, int64_t L, int64_t sp)
{
    int64_t n = pl / C, c = pl % C;

    return ((n * (C / L) + c / L) * sp) * L + c % L;
}

/* p: planes H W OH OW KH KW sh sw pt pl dh dw C L. */
int
ss__k_pool(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    int32_t *arg = s->out[1] >= 0 ? tv_data(t, s->out[1]) : NULL;
    const int64_t *p = s->p;
    int64_t planes = p[0], H = p[1], W = p[2], OH = p[3], OW = p[4], pl;
    int64_t C = p[13], L = p[14];
    int op = s->op;

    (void)err;
#pragma omp parallel for schedule(static) if (planes * H * W > PAR_MIN)
    for (pl = 0; pl < planes; pl++) {
        const float *xp = x + plane_at(pl, C, L, H * W);
        int64_t yb = plane_at(pl, C, L, OH * OW);

        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t o = yb + (oh * OW + ow) * L;
                float mx = -FLT_MAX;
                double sum = 0;
                int32_t best = -1;
                int64_t cnt = 0;

                for (int64_t ki = 0; ki < p[5]; ki++) {
                    int64_t ih = oh * p[7] - p[9] + ki * p[11];

                    if (ih < 0 || ih >= H)
                        continue;
                    for (int64_t kj = 0; kj < p[6]; kj++) {
                        int64_t iw = ow * p[8] - p[10] + kj * p[12];
                        float v;

                        if (iw < 0 || iw >= W)
                            continue;
                        v = xp[(ih * W + iw) * L];
                        cnt++;
                        sum += v;
                        if (v > mx || best < 0) {
                            mx = v;
                            best = (int32_t)(ih * W + iw);
                        }
                    }
                }
                if (op == 0) {
                    y[o] = best < 0 ? 0.0f : mx;
                    arg[o] = best;
                } else {
                    int64_t d = op == 2 ? p[5] * p[6] : cnt;

                    y[o] = d > 0 ? (float)(sum / (double)d) : 0.0f;
                }
            }
    }
    return 0;
}

int
ss__k_pool_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0);
    const int32_t *arg = s->in[1] >= 0 ? tv_data(t, s->in[1]) : NULL;
    float *dx = OUT(0);
    const int64_t *p = s->p;
    int64_t planes = p[0], H = p[1], W = p[2], OH = p[3], OW = p[4], pl;
    int64_t C = p[13], L = p[14];
    int op = s->op;

    (void)err;
#pragma omp parallel for schedule(static) if (planes * H * W > PAR_MIN)
    for (pl = 0; pl < planes; pl++) {
        float *xp = dx + plane_at(pl, C, L, H * W);
        int64_t yb = plane_at(pl, C, L, OH * OW);

        if (!ACC(0)) {
            if (L == 1)
                memset(xp, 0, (size_t)(H * W) * sizeof(float));
            else
                for (int64_t i = 0; i < H * W; i++)
                    xp[i * L] = 0;
        }
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t o = yb + (oh * OW + ow) * L, cnt = 0;
                float g = dy[o];

                if (op == 0) {
                    if (arg[o] >= 0)
                        xp[(int64_t)arg[o] * L] += g;
                    continue;
                }
                if (op == 2) {
                    cnt = p[5] * p[6];
                } else {
                    for (int64_t ki = 0; ki < p[5]; ki++) {
                        int64_t ih = oh * p[7] - p[9] + ki * p[11];

                        for (int64_t kj = 0; kj < p[6]; kj++) {
                            int64_t iw = ow * p[8] - p[10] + kj * p[12];

                            cnt += ih >= 0 && ih < H && iw >= 0 && iw < W;
                        }
                    }
                }
                if (cnt == 0)
                    continue;
                g /= (float)cnt;
                for (int64_t ki = 0; ki < p[5]; ki++) {
                    int64_t ih = oh * p[7] - p[9] + ki * p[11];

                    if (ih < 0 || ih >= H)
                        continue;
                    for (int64_t kj = 0; kj < p[6]; kj++) {
                        int64_t iw = ow * p[8] - p[10] + kj * p[12];

                        if (iw >= 0 && iw < W)
                            xp[(ih * W + iw) * L] += g;
                    }
                }
            }
    }
    return 0;
}

/* ---- Transpose, Gather ---------------------------------------------------- */

/* p: [0] nd, [1..8] input dims, [9..16] perm. */
int
ss__k_transpose(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    int nd = (int)s->p[0], i;
    int64_t ist[8], od[8], ost[8], rows = 1, inner, r;
    size_t es = ss_dtype_size(t->tv[s->in[0]].dtype);

    (void)err;
    ist[nd - 1] = 1;
    for (i = nd - 2; i >= 0; i--)
        ist[i] = ist[i + 1] * s->p[1 + i + 1];
    for (i = 0; i < nd; i++) {
        od[i] = s->p[1 + s->p[9 + i]];
        ost[i] = ist[s->p[9 + i]];
    }
    for (i = 0; i < nd - 1; i++)
        rows *= od[i];
    inner = od[nd - 1];
#pragma omp parallel for schedule(static) if (rows * inner > PAR_MIN)
    for (r = 0; r < rows; r++) {
        int64_t q = r, off = 0, j;

        for (int d = nd - 2; d >= 0; d--) {
            off += q % od[d] * ost[d];
            q /= od[d];
        }
        if (es == 4) {
            const float *xr = x + off;
            float *yr = y + r * inner;
            int64_t sj = ost[nd - 1];

            if (sj == 1 && !ACC(0)) {   /* the last dim stays last */
                memcpy(yr, xr, (size_t)inner * sizeof(float));
            } else if (sj == 1) {
#pragma omp simd
                for (j = 0; j < inner; j++)
                    yr[j] += xr[j];
            } else if (ACC(0)) {
                for (j = 0; j < inner; j++)
                    yr[j] += xr[j * sj];
            } else {
                for (j = 0; j < inner; j++)
                    yr[j] = xr[j * sj];
            }
        } else {
            for (j = 0; j < inner; j++)
                memcpy((char *)y + (size_t)(r * inner + j) * es,
                       (const char *)x + (size_t)(off + j * ost[nd - 1]) * es,
                       es);
        }
    }
    return 0;
}

/* Through an index map (aux): op 0 gathers out[j] = in[map[j]], op 1
 * scatters out[map[i]] = in[i] over a zeroed out (Concat' and Slice';
 * the map's targets are distinct, so the scatter has no races). */
int
ss__k_index(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *x = IN(0);
    float *y = OUT(0);
    const int64_t *map = s->aux;
    int64_t i;

    (void)err;
    if (s->op == 0) {
        int64_t n = t->tv[s->out[0]].numel;

#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (i = 0; i < n; i++)
            y[i] = ACC(0) ? y[i] + x[map[i]] : x[map[i]];
    } else {
        int64_t n = t->tv[s->in[0]].numel;

        if (!ACC(0))
            memset(y, 0, t->tv[s->out[0]].bytes);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (i = 0; i < n; i++)
            y[map[i]] += x[i];
    }
    return 0;
}

int
ss__k_gather_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = IN(0);
    const void *ix = tv_data(t, s->in[1]);
    bool i64 = t->tv[s->in[1]].dtype == SS_DTYPE_I64;
    float *dx = OUT(0);
    int64_t outer = s->p[0], ad = s->p[1], inner = s->p[2], ni = s->p[3];
    int64_t o;

    (void)err;
    if (!ACC(0))
        memset(dx, 0, t->tv[s->out[0]].bytes);
#pragma omp parallel for schedule(static) if (outer > 1 && outer * ni * inner > PAR_MIN)
    for (o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t k = i64 ? ((const int64_t *)ix)[j]
                            : ((const int32_t *)ix)[j];
            const float *src = dy + (o * ni + j) * inner;
            float *dst;

            if (k < 0)
                k += ad;
            if (k < 0 || k >= ad)
                continue;
            dst = dx + (o * ad + k) * inner;
            for (int64_t i = 0; i < inner; i++)
                dst[i] += src[i];
        }
    return 0;
}
