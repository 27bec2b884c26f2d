/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gemm and MatMul on float32.
 *
 * One small GEMM core serves both.  Without transposed B it runs
 * i-k-j (rows of B streamed into a row of C, which vectorizes); with B
 * transposed (torch's Linear: weights [N, K]) it runs dot products of
 * contiguous rows.  It is the reference and the fallback, not the fast
 * path: oneDNN takes the hot shapes.
 *
 * MatMul follows numpy.matmul: 1-D operands gain and then lose a unit
 * axis, batch axes broadcast.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>

/* C[M,N] = alpha * op(A) op(B) + (accumulate ? C : 0). */
static void
sgemm(int64_t m, int64_t nn, int64_t k, float alpha, const float *a,
      int64_t lda, bool ta, const float *b, int64_t ldb, bool tb, float *c,
      int64_t ldc, bool accumulate)
{
    for (int64_t i = 0; i < m; i++) {
        float *crow = c + i * ldc;

        if (!accumulate)
            for (int64_t j = 0; j < nn; j++)
                crow[j] = 0.0f;
        if (!tb) {
            int64_t p = 0;

            /* Four rows of B per pass: a quarter of the C traffic. */
            for (; p + 4 <= k; p += 4) {
                float a0 = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
                float a1 = alpha * (ta ? a[(p + 1) * lda + i]
                                       : a[i * lda + p + 1]);
                float a2 = alpha * (ta ? a[(p + 2) * lda + i]
                                       : a[i * lda + p + 2]);
                float a3 = alpha * (ta ? a[(p + 3) * lda + i]
                                       : a[i * lda + p + 3]);
                const float *b0 = b + p * ldb, *b1 = b0 + ldb;
                const float *b2 = b1 + ldb, *b3 = b2 + ldb;

                for (int64_t j = 0; j < nn; j++)
                    crow[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] +
                               a3 * b3[j];
            }
            for (; p < k; p++) {
                float av = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
                const float *brow = b + p * ldb;

                for (int64_t j = 0; j < nn; j++)
                    crow[j] += av * brow[j];
            }
        } else {
            for (int64_t j = 0; j < nn; j++) {
                const float *brow = b + j * ldb;
                float s = 0.0f;

                if (!ta) {
                    const float *arow = a + i * lda;
                    float part[8] = { 0 };
                    int64_t p = 0;

                    /* Eight partial sums: a shape the compiler turns into
                     * one vector register without -ffast-math. */
                    for (; p + 8 <= k; p += 8)
                        for (int u = 0; u < 8; u++)
                            part[u] += arow[p + u] * brow[p + u];
                    for (; p < k; p++)
                        s += arow[p] * brow[p];
                    for (int u = 0; u < 8; u++)
                        s += part[u];
                } else {
                    for (int64_t p = 0; p < k; p++)
                        s += a[p * lda + i] * brow[p];
                }
                crow[j] += alpha * s;
            }
        }
    }
}

/* ---- Gemm --------------------------------------------------------------- */

static int
infer_gemm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    bool ta = ss__attr_int(n, "transA", 0) != 0;
    bool tb = ss__attr_int(n, "transB", 0) != 0;
    int64_t m, k, k2, nn, dims[2];
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    for (int i = 0; i < 3; i++) {
        if (!ss__ops_has_input(n, in, i))
            continue;
        if (in[i]->dtype != SS_DTYPE_F32)
            return ss__ops_failc(err, SS_EUNSUPP, n, "input %d is %s; only "
                                 "float32 is supported", i,
                                 ss__ops_dtype_name(in[i]->dtype));
    }
    if (in[0]->ndim != 2 || in[1]->ndim != 2)
        return ss__ops_fail(err, n, "A and B must be 2-D, not rank %d and %d",
                            in[0]->ndim, in[1]->ndim);
    m = in[0]->dims[ta ? 1 : 0];
    k = in[0]->dims[ta ? 0 : 1];
    k2 = in[1]->dims[tb ? 1 : 0];
    nn = in[1]->dims[tb ? 0 : 1];
    if (k != k2)
        return ss__ops_fail(err, n, "inner dimensions differ: A has %lld, "
                            "B has %lld", (long long)k, (long long)k2);
    if (ss__ops_has_input(n, in, 2)) {
        const ss_tensor_t *c = in[2];

        if (c->ndim > 2)
            return ss__ops_fail(err, n, "C must have rank <= 2, not %d",
                                c->ndim);
        /* Unidirectional broadcast of C to [M, N]. */
        for (int d = 0; d < c->ndim; d++) {
            int64_t want = d == c->ndim - 1 ? nn : m;

            if (c->dims[d] != 1 && c->dims[d] != want)
                return ss__ops_fail(err, n, "C axis %d is %lld; does not "
                                    "broadcast to [%lld, %lld]", d,
                                    (long long)c->dims[d], (long long)m,
                                    (long long)nn);
        }
    }
    dims[0] = m;
    dims[1] = nn;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, 2, dims, err);
}

static int
run_gemm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    bool ta = ss__attr_int(n, "transA", 0) != 0;
    bool tb = ss__attr_int(n, "transB", 0) != 0;
    float alpha = ss__attr_float(n, "alpha", 1.0f);
    float beta = ss__attr_float(n, "beta", 1.0f);
    int64_t m = out[0].dims[0], nn = out[0].dims[1];
    int64_t k = in[0]->dims[ta ? 0 : 1];
    float *y = out[0].data;
    bool acc = false;

    if (ss__ops_has_input(n, in, 2) && beta != 0.0f) {
        const ss_tensor_t *c = in[2];
        const float *cd = c->data;
        int64_t cm = c->ndim == 2 ? c->dims[0] : 1;
        int64_t cn = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;

        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < nn; j++)
                y[i * nn + j] = beta * cd[(cm == 1 ? 0 : i) * cn +
                                          (cn == 1 ? 0 : j)];
        acc = true;
    }
    sgemm(m, nn, k, alpha, in[0]->data, in[0]->dims[1], ta, in[1]->data,
          in[1]->dims[1], tb, y, nn, acc);
    return 0;
}

/* ---- MatMul ------------------------------------------------------------- */

typedef struct {
    int64_t m, k, nn;
    int nb;                         /* batch rank of the output */
    int64_t bdims[SS_MAX_DIMS];
    int64_t astr[SS_MAX_DIMS], bstr[SS_MAX_DIMS]; /* matrices, 0 = bcast */
    int out_ndim;
    int64_t out_dims[SS_MAX_DIMS];
} mm_shape_t;

static int
mm_shape(const ss_node_t *n, const ss_tensor_t *a, const ss_tensor_t *b,
         mm_shape_t *s, ss_err_t *err)
{
    int ra = a->ndim, rb = b->ndim, na, nb;
    int64_t k2, sa = 1, sb = 1;

    if (ra < 1 || rb < 1)
        return ss__ops_fail(err, n, "operands must have rank >= 1, not %d "
                            "and %d", ra, rb);
    s->m = ra == 1 ? 1 : a->dims[ra - 2];
    s->k = a->dims[ra - 1];
    k2 = rb == 1 ? b->dims[0] : b->dims[rb - 2];
    s->nn = rb == 1 ? 1 : b->dims[rb - 1];
    if (s->k != k2)
        return ss__ops_fail(err, n, "inner dimensions differ: %lld vs %lld",
                            (long long)s->k, (long long)k2);
    na = ra > 2 ? ra - 2 : 0;
    nb = rb > 2 ? rb - 2 : 0;
    s->nb = na > nb ? na : nb;
    for (int d = s->nb - 1; d >= 0; d--) {
        int ka = d - (s->nb - na), kb = d - (s->nb - nb);
        int64_t da = ka >= 0 ? a->dims[ka] : 1, db = kb >= 0 ? b->dims[kb] : 1;

        if (da != db && da != 1 && db != 1)
            return ss__ops_fail(err, n, "batch axis %d does not broadcast: "
                                "%lld vs %lld", d, (long long)da,
                                (long long)db);
        s->bdims[d] = da == 1 ? db : da;
        s->astr[d] = da == 1 ? 0 : sa;
        s->bstr[d] = db == 1 ? 0 : sb;
        sa *= da;
        sb *= db;
    }
    s->out_ndim = 0;
    for (int d = 0; d < s->nb; d++)
        s->out_dims[s->out_ndim++] = s->bdims[d];
    if (ra > 1)
        s->out_dims[s->out_ndim++] = s->m;
    if (rb > 1)
        s->out_dims[s->out_ndim++] = s->nn;
    return 0;
}

static int
infer_matmul(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    mm_shape_t s;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32 || in[1]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "only float32 is "
                             "supported, not %s x %s",
                             ss__ops_dtype_name(in[0]->dtype),
                             ss__ops_dtype_name(in[1]->dtype));
    if ((rc = mm_shape(n, in[0], in[1], &s, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, s.out_ndim, s.out_dims,
                           err);
}

static int
run_matmul(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t idx[SS_MAX_DIMS] = { 0 }, batches, aoff = 0, boff = 0;
    const float *a = in[0]->data, *b = in[1]->data;
    float *y = out[0].data;
    int64_t amat, bmat, ymat;
    mm_shape_t s;
    int rc;

    if ((rc = mm_shape(n, in[0], in[1], &s, err)) < 0)
        return rc;
    amat = s.m * s.k;
    bmat = s.k * s.nn;
    ymat = s.m * s.nn;
    batches = ss__ops_prod(s.bdims, 0, s.nb);
    for (int64_t t = 0; t < batches; t++) {
        /* A 1-D B is a column: ldb = 1 with N = 1 works unchanged. */
        sgemm(s.m, s.nn, s.k, 1.0f, a + aoff * amat, s.k, false,
              b + boff * bmat, s.nn, false, y + t * ymat, s.nn, false);
        for (int d = s.nb - 1; d >= 0; d--) {
            idx[d]++;
            aoff += s.astr[d];
            boff += s.bstr[d];
            if (idx[d] < s.bdims[d])
                break;
            aoff -= s.astr[d] * s.bdims[d];
            boff -= s.bstr[d] * s.bdims[d];
            idx[d] = 0;
        }
    }
    return 0;
}

/* ---- MatMulInteger, QLinearMatMul ---------------------------------------
 * Integer matmuls of uint8/int8 operands with zero points (and, for
 * QLinearMatMul, scales): a's per tensor or per row (M values), b's per
 * tensor or per column (N values).  Products summed exactly in int64;
 * MatMulInteger writes them as int32 (wrapping, as int32 accumulators
 * would), QLinearMatMul requantizes: round half to even of
 * acc * a_scale * b_scale / y_scale, plus y's zero point, saturated. */

static bool
q8(ss_dtype_t t)
{
    return t == SS_DTYPE_U8 || t == SS_DTYPE_I8;
}

/* A zero point or scale of x (NULL: 0), per tensor or along `along`
 * values; checks its size. */
static int
q_param_ok(const ss_node_t *n, const ss_tensor_t *q, int64_t along,
           const char *what, ss_err_t *err)
{
    int64_t cnt;

    if (q == NULL)
        return 0;
    cnt = ss__ops_numel(q);
    if (q->ndim > 1 || (cnt != 1 && cnt != along))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s must be a scalar or "
                             "1-D of %lld values", what, (long long)along);
    return 0;
}

static double
q_at(const ss_tensor_t *q, int64_t i)
{
    if (q == NULL)
        return 0;
    return ss__ops_get_f64(q->data, q->dtype,
                           ss__ops_numel(q) == 1 ? 0 : i);
}

typedef struct {
    const ss_tensor_t *a, *b, *azp, *bzp, *as, *bs, *ys, *yzp;
} qmm_t;

static int
qmm_check(const ss_node_t *n, const qmm_t *q, mm_shape_t *s, ss_err_t *err)
{
    int rc;

    if (!q8(q->a->dtype) || !q8(q->b->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "operands must be uint8 or "
                             "int8, not %s x %s",
                             ss__ops_dtype_name(q->a->dtype),
                             ss__ops_dtype_name(q->b->dtype));
    if ((q->azp && q->azp->dtype != q->a->dtype) ||
        (q->bzp && q->bzp->dtype != q->b->dtype))
        return ss__ops_fail(err, n, "a zero point's type differs from its "
                            "operand's");
    if ((rc = mm_shape(n, q->a, q->b, s, err)) < 0 ||
        (rc = q_param_ok(n, q->azp, s->m, "a_zero_point", err)) < 0 ||
        (rc = q_param_ok(n, q->bzp, s->nn, "b_zero_point", err)) < 0 ||
        (rc = q_param_ok(n, q->as, s->m, "a_scale", err)) < 0 ||
        (rc = q_param_ok(n, q->bs, s->nn, "b_scale", err)) < 0 ||
        (rc = q_param_ok(n, q->ys, 1, "y_scale", err)) < 0 ||
        (rc = q_param_ok(n, q->yzp, 1, "y_zero_point", err)) < 0)
        return rc;
    return 0;
}

static void
qmm_run(const qmm_t *q, const mm_shape_t *s, ss_tensor_t *y)
{
    int64_t idx[SS_MAX_DIMS] = { 0 }, aoff = 0, boff = 0, t = 0;
    int64_t batches = ss__ops_prod(s->bdims, 0, s->nb);

    for (t = 0; t < batches; t++) {
        for (int64_t i = 0; i < s->m; i++) {
            int64_t za = (int64_t)q_at(q->azp, i);

            for (int64_t j = 0; j < s->nn; j++) {
                int64_t zb = (int64_t)q_at(q->bzp, j), acc = 0;
                int64_t o = (t * s->m + i) * s->nn + j;

                for (int64_t k = 0; k < s->k; k++)
                    acc += (ss__ops_get_i64(q->a->data, q->a->dtype,
                                            (aoff * s->m + i) * s->k + k)
                            - za)
                           * (ss__ops_get_i64(q->b->data, q->b->dtype,
                                              (boff * s->k + k) * s->nn + j)
                              - zb);
                if (q->ys == NULL) {
                    ((int32_t *)y->data)[o] = (int32_t)(uint32_t)acc;
                } else {
                    double v = nearbyint((double)acc * q_at(q->as, i)
                                         * q_at(q->bs, j) / q_at(q->ys, 0))
                               + q_at(q->yzp, 0);
                    double lo = y->dtype == SS_DTYPE_U8 ? 0 : -128;
                    double hi = y->dtype == SS_DTYPE_U8 ? 255 : 127;

                    v = v != v ? 0 : v < lo ? lo : v > hi ? hi : v;
                    if (y->dtype == SS_DTYPE_U8)
                        ((uint8_t *)y->data)[o] = (uint8_t)v;
                    else
                        ((int8_t *)y->data)[o] = (int8_t)v;
                }
            }
        }
        for (int d = s->nb - 1; d >= 0; d--) {
            idx[d]++;
            aoff += s->astr[d];
            boff += s->bstr[d];
            if (idx[d] < s->bdims[d])
                break;
            aoff -= s->astr[d] * s->bdims[d];
            boff -= s->bstr[d] * s->bdims[d];
            idx[d] = 0;
        }
    }
}

static int
infer_mmint(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    qmm_t q = { in[0], in[1], ss__ops_opt_input(n, in, 2),
                ss__ops_opt_input(n, in, 3), NULL, NULL, NULL, NULL };
    mm_shape_t s;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0 ||
        (rc = qmm_check(n, &q, &s, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_I32, s.out_ndim, s.out_dims,
                           err);
}

static int
run_mmint(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    qmm_t q = { in[0], in[1], ss__ops_opt_input(n, in, 2),
                ss__ops_opt_input(n, in, 3), NULL, NULL, NULL, NULL };
    mm_shape_t s;
    int rc;

    (void)opset;
    if ((rc = qmm_check(n, &q, &s, err)) < 0)
        return rc;
    qmm_run(&q, &s, &out[0]);
    return 0;
}

static int
infer_qlmm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    qmm_t q;
    mm_shape_t s;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 8, err)) < 0)
        return rc;
    q = (qmm_t){ in[0], in[3], in[2], in[5], in[1], in[4], in[6], in[7] };
    if (!ss__ops_is_float(in[1]->dtype) || !ss__ops_is_float(in[4]->dtype))
        return ss__ops_fail(err, n, "scales must be floats");
    if (!ss__ops_is_float(in[6]->dtype) || !q8(in[7]->dtype))
        return ss__ops_fail(err, n, "y_scale must be a float and "
                            "y_zero_point uint8 or int8");
    if ((rc = qmm_check(n, &q, &s, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[7]->dtype, s.out_ndim, s.out_dims,
                           err);
}

static int
run_qlmm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    qmm_t q = { in[0], in[3], in[2], in[5], in[1], in[4], in[6], in[7] };
    mm_shape_t s;
    int rc;

    (void)opset;
    if ((rc = qmm_check(n, &q, &s, err)) < 0)
        return rc;
    qmm_run(&q, &s, &out[0]);
    return 0;
}

const ss_op_t ss__ops_matmul[] = {
    { "Gemm", infer_gemm, run_gemm },
    { "MatMul", infer_matmul, run_matmul },
    { "MatMulInteger", infer_mmint, run_mmint },
    { "QLinearMatMul", infer_qlmm, run_qlmm },
    { NULL, NULL, NULL }
};
