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
 * order).  This file holds the plumbing and the kernels that move or
 * sum elements; kern_elt.c the elementwise ones, kern_norm.c the
 * normalizations (kern.h).
 *
 * THREADS: [worker]; OpenMP threads inside a call.
 */

#include <float.h>
#include <omp.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/kern.h"

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

/* One output row of a transpose: inner elements of size es from x (at
 * stride sj) to y (contiguous), or added to y (acc).  Whole rows of 16
 * or 32 bytes (attention's heads of 8 bf16 or f32 values) are fixed-size
 * copies: a copy of run-time length cost more than the row. */
static inline void
copy_row(const char *x, char *y, size_t es, int64_t inner, int64_t sj,
         int acc)
{
    int64_t j;

    if (sj == 1 && !acc) {
        size_t n = (size_t)inner * es;

        if (n == 16)
            memcpy(y, x, 16);
        else if (n == 32)
            memcpy(y, x, 32);
        else
            memcpy(y, x, n);
    } else if (es == 4) {
        const float *xr = (const float *)x;
        float *yr = (float *)y;

        if (sj == 1) {
#pragma omp simd
            for (j = 0; j < inner; j++)
                yr[j] += xr[j];
        } else if (acc) {
            for (j = 0; j < inner; j++)
                yr[j] += xr[j * sj];
        } else {
            for (j = 0; j < inner; j++)
                yr[j] = xr[j * sj];
        }
    } else if (es == 2) {               /* bf16 (rules.c) */
        const uint16_t *xr = (const uint16_t *)x;
        uint16_t *yr = (uint16_t *)y;

        if (acc) {
            for (j = 0; j < inner; j++)
                yr[j] = ss__bf16_round(ss__bf16_f32(yr[j]) +
                                       ss__bf16_f32(xr[j * sj]));
        } else {
            for (j = 0; j < inner; j++)
                yr[j] = xr[j * sj];
        }
    } else {
        for (j = 0; j < inner; j++)
            memcpy(y + (size_t)j * es, x + (size_t)(j * sj) * es, es);
    }
}

/* Output rows [r0, r1) of a transpose (od, ost: the output's dims and
 * the input strides along them; inner: the last dim's length).  The
 * first row's input offset comes from divisions; then runs of rows
 * along the rows' own dim (od[nd - 2], input stride ost[nd - 2]) and an
 * odometer between runs: per row, dividing or even stepping the
 * odometer cost more than copying a short row (the attention's [B, L,
 * 3, H, 8] -> [3, B, H, L, 8]: 8 values a row). */
static void
transpose_rows(const void *xv, void *yv, size_t es, int nd,
               const int64_t *od, const int64_t *ost, int64_t inner,
               int acc, int64_t r0, int64_t r1)
{
    const char *x = xv;
    char *y = yv;
    int64_t idx[8], q = r0, off = 0, r = r0, sj = ost[nd - 1];
    int64_t sl = nd >= 2 ? ost[nd - 2] : 0;
    int d, l = nd - 2;

    for (d = nd - 2; d >= 0; d--) {
        idx[d] = q % od[d];
        off += idx[d] * ost[d];
        q /= od[d];
    }
    while (r < r1) {
        int64_t m = l >= 0 ? od[l] - idx[l] : 1, k;

        if (m > r1 - r)
            m = r1 - r;
        for (k = 0; k < m; k++)
            copy_row(x + (size_t)(off + k * sl) * es,
                     y + (size_t)((r + k) * inner) * es, es, inner, sj, acc);
        r += m;
        if (l < 0)
            break;
        off += m * sl;
        if ((idx[l] += m) < od[l])
            continue;
        off -= idx[l] * sl;                 /* the next run */
        idx[l] = 0;
        for (d = l - 1; d >= 0; d--) {
            off += ost[d];
            if (++idx[d] < od[d])
                break;
            off -= idx[d] * ost[d];
            idx[d] = 0;
        }
    }
}

/* p: [0] nd, [1..8] input dims, [9..16] perm.  Threads take contiguous
 * blocks of output rows. */
int
ss__k_transpose(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    int nd = (int)s->p[0], i;
    int64_t ist[8], od[8], ost[8], rows = 1, inner;
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
#pragma omp parallel if (rows * inner > PAR_MIN)
    {
        int nt = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t per = (rows + nt - 1) / nt, r0 = tid * per;
        int64_t r1 = r0 + per < rows ? r0 + per : rows;

        if (r0 < r1)
            transpose_rows(IN(0), OUT(0), es, nd, od, ost, inner,
                           (int)ACC(0), r0, r1);
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
    } else if (s->op == 1) {
        int64_t n = t->tv[s->in[0]].numel;

        if (!ACC(0))
            memset(y, 0, t->tv[s->out[0]].bytes);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (i = 0; i < n; i++)
            y[map[i]] += x[i];
    } else {
        /* a map that may send two elements to one place: in order */
        int64_t n = t->tv[s->in[0]].numel;

        if (!ACC(0))
            memset(y, 0, t->tv[s->out[0]].bytes);
        for (i = 0; i < n; i++)
            if (map[i] >= 0)
                y[map[i]] += x[i];
    }
    return 0;
}

/* Index j of the indices (int32 or int64), wrapped; -1 out of range. */
static int64_t
gather_ix(const void *ix, bool i64, int64_t j, int64_t ad)
{
    int64_t k = i64 ? ((const int64_t *)ix)[j] : ((const int32_t *)ix)[j];

    if (k < 0)
        k += ad;
    return k < 0 || k >= ad ? -1 : k;
}

/* p: [0] outer, [1] the axis' length, [2] inner, [3] indices: y[o, j]
 * = x[o, ix[j]] (rows of inner elements of any size, bf16 ones too). */
int
ss__k_gather(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const char *x = tv_data(t, s->in[0]);
    const void *ix = tv_data(t, s->in[1]);
    bool i64 = t->tv[s->in[1]].dtype == SS_DTYPE_I64;
    char *y = tv_data(t, s->out[0]);
    int64_t outer = s->p[0], ad = s->p[1], ni = s->p[3], j, o;
    size_t row = (size_t)s->p[2] * ss_dtype_size(t->tv[s->in[0]].dtype);

    for (j = 0; j < ni; j++)
        if (gather_ix(ix, i64, j, ad) < 0)
            return ss_err_set(err, SS_EINVAL, "trainer: Gather '%s': index "
                              "out of range",
                              s->node != NULL ? s->node->name : "?");
#pragma omp parallel for schedule(static) if (outer * ni * s->p[2] > PAR_MIN)
    for (o = 0; o < outer; o++)
        for (int64_t i = 0; i < ni; i++)
            memcpy(y + (size_t)(o * ni + i) * row,
                   x + (size_t)(o * ad + gather_ix(ix, i64, i, ad)) * row,
                   row);
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
    if (t->tv[s->out[0]].dtype == SS_DTYPE_BF16) {
        /* a bf16 activation's gradient (rules.c): rounded per addition */
        const uint16_t *dy16 = (const void *)dy;
        uint16_t *dx16 = (void *)dx;

        for (o = 0; o < outer; o++)
            for (int64_t j = 0; j < ni; j++) {
                int64_t k = gather_ix(ix, i64, j, ad);

                if (k >= 0)
                    ss__add_into(dx16 + (o * ad + k) * inner,
                                 dy16 + (o * ni + j) * inner,
                                 SS_DTYPE_BF16, inner);
            }
        return 0;
    }
#pragma omp parallel for schedule(static) if (outer > 1 && outer * ni * inner > PAR_MIN)
    for (o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t k = gather_ix(ix, i64, j, ad);
            const float *src = dy + (o * ni + j) * inner;
            float *dst;

            if (k < 0)
                continue;
            dst = dx + (o * ad + k) * inner;
            for (int64_t i = 0; i < inner; i++)
                dst[i] += src[i];
        }
    return 0;
}
