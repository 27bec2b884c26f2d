/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plain C reference kernels for smaller ops: BitShift, CastLike, the
 * window functions (HannWindow, HammingWindow, BlackmanWindow),
 * ReverseSequence, Det, InstanceNormalization and
 * MeanVarianceNormalization.
 *
 * DESIGN.  Elements are read and written by run-time dtype (dyn.h);
 * arithmetic is in double (uint64 shifts in uint64), stored back in the
 * output's type.  A window's size decides its output's shape, so it must
 * be a constant when the plan is compiled.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

/* ---- BitShift ------------------------------------------------------------ */

static bool
is_uint(ss_dtype_t t)
{
    return t == SS_DTYPE_U8 || t == SS_DTYPE_U16 || t == SS_DTYPE_U32
           || t == SS_DTYPE_U64;
}

static int
infer_bitshift(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    const char *dir = ss__attr_string(n, "direction", "");
    int64_t dims[SS_MAX_DIMS];
    int ndim, rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (!is_uint(in[0]->dtype) || in[1]->dtype != in[0]->dtype)
        return ss__ops_failc(err, SS_EUNSUPP, n, "BitShift on %s and %s is "
                             "not supported (one unsigned type)",
                             ss__ops_dtype_name(in[0]->dtype),
                             ss__ops_dtype_name(in[1]->dtype));
    if (strcmp(dir, "LEFT") != 0 && strcmp(dir, "RIGHT") != 0)
        return ss__ops_fail(err, n, "direction '%s' (LEFT or RIGHT)", dir);
    if ((rc = ss__bcast_shape(n, 2, in, &ndim, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, ndim, dims, err);
}

typedef struct {
    ss_dtype_t t;
    bool left;
    unsigned bits;
} shctx_t;

static void
row_shift(void *ctx, void *out, const void *const *in, const int64_t *step,
          int64_t count)
{
    const shctx_t *c = ctx;

    for (int64_t i = 0; i < count; i++) {
        uint64_t a = (uint64_t)ss__dyn_geti(in[0], c->t, i * step[0]);
        uint64_t s = (uint64_t)ss__dyn_geti(in[1], c->t, i * step[1]);
        uint64_t r = s >= c->bits ? 0 : c->left ? a << s : a >> s;

        ss__dyn_seti(out, c->t, i, (int64_t)r);
    }
}

static int
run_bitshift(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(out[0].dtype), esz[2] = { es, es };
    shctx_t c = { out[0].dtype,
                  strcmp(ss__attr_string(n, "direction", ""), "LEFT") == 0,
                  (unsigned)(8 * es) };
    const void *ptr[2] = { in[0]->data, in[1]->data };
    ss_bcast_t it;

    (void)opset;
    (void)err;
    ss__bcast_init(&it, 2, in, &out[0]);
    ss__bcast_run(&it, out[0].data, es, ptr, esz, row_shift, &c);
    return 0;
}

/* ---- CastLike ------------------------------------------------------------ */

static bool
castable(ss_dtype_t t)
{
    return ss__dyn_is_float(t) || ss__ops_is_int(t) || t == SS_DTYPE_BOOL;
}

static int
infer_castlike(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (!castable(in[0]->dtype) || !castable(in[1]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "CastLike from %s to %s is "
                             "not supported",
                             ss__ops_dtype_name(in[0]->dtype),
                             ss__ops_dtype_name(in[1]->dtype));
    return ss__ops_set_out(n, &out[0], in[1]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_castlike(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t cnt = ss__ops_numel(in[0]);
    ss_dtype_t from = in[0]->dtype, to = out[0].dtype;
    bool exact = !ss__dyn_is_float(from) && !ss__dyn_is_float(to);

    (void)n;
    (void)opset;
    (void)err;
    for (int64_t i = 0; i < cnt; i++) {
        if (exact)
            ss__dyn_seti(out[0].data, to, i,
                         ss__dyn_geti(in[0]->data, from, i));
        else
            ss__dyn_set(out[0].data, to, i,
                        ss__dyn_get(in[0]->data, from, i));
    }
    return 0;
}

/* ---- HannWindow, HammingWindow, BlackmanWindow --------------------------- */

static int
window_size(const ss_node_t *n, const ss_tensor_t *const *in, int64_t *size,
            ss_err_t *err)
{
    int64_t v[1];
    int cnt;

    if ((cnt = ss__ops_read_ints(n, in[0], "size", v, 1, err)) < 0)
        return cnt;
    if (cnt != 1 || v[0] < 0 || v[0] > ((int64_t)1 << 30))
        return ss__ops_fail(err, n, "size must be one value in [0, 2^30]");
    *size = v[0];
    return 0;
}

static int
infer_window(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t t = (ss_dtype_t)ss__attr_int(n, "output_datatype",
                                            SS_DTYPE_F32);
    int64_t size;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = window_size(n, in, &size, err)) < 0)
        return rc;
    if (!castable(t))
        return ss__ops_failc(err, SS_EUNSUPP, n, "output_datatype %d is not "
                             "supported", (int)t);
    return ss__ops_set_out(n, &out[0], t, 1, &size, err);
}

static int
run_window(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    bool periodic = ss__attr_int(n, "periodic", 1) != 0;
    int64_t size;
    double N;
    int rc;

    (void)opset;
    if ((rc = window_size(n, in, &size, err)) < 0)
        return rc;
    N = (double)(periodic ? size : size - 1);
    for (int64_t i = 0; i < size; i++) {
        double x = (double)i, w;

        if (strcmp(n->op_type, "HannWindow") == 0) {
            w = sin(x * M_PI / N);
            w *= w;
        } else if (strcmp(n->op_type, "HammingWindow") == 0) {
            w = 25.0 / 46.0 - cos(x * 2 * M_PI / N) * (1 - 25.0 / 46.0);
        } else {                                    /* BlackmanWindow */
            w = 0.42 - 0.5 * cos(x * 2 * M_PI / N)
                + 0.08 * cos(x * 4 * M_PI / N);
        }
        ss__dyn_set(out[0].data, out[0].dtype, i, w);
    }
    return 0;
}

/* ---- ReverseSequence ----------------------------------------------------- */

static int
infer_revseq(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t b = ss__attr_int(n, "batch_axis", 1);
    int64_t t = ss__attr_int(n, "time_axis", 0);
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (in[0]->ndim < 2 || !((b == 0 && t == 1) || (b == 1 && t == 0)))
        return ss__ops_fail(err, n, "batch_axis and time_axis must be 0 and "
                            "1 on an input of rank >= 2");
    if (in[1]->ndim != 1 || in[1]->dims[0] != in[0]->dims[b]
        || !ss__ops_is_int(in[1]->dtype))
        return ss__ops_fail(err, n, "sequence_lens must be %lld integers",
                            (long long)in[0]->dims[b]);
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_revseq(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int b = (int)ss__attr_int(n, "batch_axis", 1), ta = 1 - b;
    int64_t B = in[0]->dims[b], T = in[0]->dims[ta];
    int64_t inner = ss__ops_prod(in[0]->dims, 2, in[0]->ndim);
    size_t es = ss__ops_dtype_size(in[0]->dtype);

    (void)opset;
    for (int64_t bi = 0; bi < B; bi++) {
        int64_t len = ss__dyn_geti(in[1]->data, in[1]->dtype, bi);

        if (len < 0 || len > T)
            return ss__ops_fail(err, n, "sequence_lens[%lld] = %lld is out "
                                "of [0, %lld]", (long long)bi,
                                (long long)len, (long long)T);
        for (int64_t t = 0; t < T; t++) {
            int64_t src = t < len ? len - 1 - t : t;
            int64_t o = b == 0 ? bi * T + t : t * B + bi;
            int64_t s = b == 0 ? bi * T + src : src * B + bi;

            memcpy((char *)out[0].data + o * inner * (int64_t)es,
                   (const char *)in[0]->data + s * inner * (int64_t)es,
                   (size_t)inner * es);
        }
    }
    return 0;
}

/* ---- Det ----------------------------------------------------------------- */

static int
infer_det(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int r, rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    r = in[0]->ndim;
    if (r < 2 || in[0]->dims[r - 1] != in[0]->dims[r - 2])
        return ss__ops_fail(err, n, "input must be [..., M, M]");
    if (!ss__dyn_is_float(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "Det on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    if (in[0]->dims[r - 1] > 4096)
        return ss__ops_failc(err, SS_EUNSUPP, n, "matrices larger than 4096 "
                             "are not supported");
    return ss__ops_set_out(n, &out[0], in[0]->dtype, r - 2, in[0]->dims,
                           err);
}

/* LU with partial pivoting, in double. */
static int
run_det(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    int r = in[0]->ndim;
    int64_t m = in[0]->dims[r - 1], cnt = ss__ops_prod(in[0]->dims, 0, r - 2);
    double *a = ss_malloc(sizeof(double) * (size_t)(m * m + 1));

    (void)opset;
    if (a == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for Det");
    (void)n;
    for (int64_t k = 0; k < cnt; k++) {
        double det = 1;

        for (int64_t i = 0; i < m * m; i++)
            a[i] = ss__dyn_get(in[0]->data, in[0]->dtype, k * m * m + i);
        for (int64_t c = 0; c < m && det != 0; c++) {
            int64_t p = c;

            for (int64_t i = c + 1; i < m; i++)
                if (fabs(a[i * m + c]) > fabs(a[p * m + c]))
                    p = i;
            if (a[p * m + c] == 0) {
                det = 0;
                break;
            }
            if (p != c) {
                for (int64_t j = 0; j < m; j++) {
                    double tmp = a[c * m + j];

                    a[c * m + j] = a[p * m + j];
                    a[p * m + j] = tmp;
                }
                det = -det;
            }
            det *= a[c * m + c];
            for (int64_t i = c + 1; i < m; i++) {
                double f = a[i * m + c] / a[c * m + c];

                for (int64_t j = c; j < m; j++)
                    a[i * m + j] -= f * a[c * m + j];
            }
        }
        ss__dyn_set(out[0].data, out[0].dtype, k, det);
    }
    ss_free(a);
    return 0;
}

/* ---- InstanceNormalization, MeanVarianceNormalization -------------------- */

static int
infer_same(const ss_node_t *n, const ss_tensor_t *const *in, int req,
           ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, req, err)) < 0)
        return rc;
    if (!ss__dyn_is_float(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not "
                             "supported", n->op_type,
                             ss__ops_dtype_name(in[0]->dtype));
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim,
                           in[0]->dims, err);
}

static int
infer_instnorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = infer_same(n, in, 3, out, err)) < 0)
        return rc;
    if (in[0]->ndim < 3 || ss__ops_numel(in[1]) != in[0]->dims[1]
        || ss__ops_numel(in[2]) != in[0]->dims[1])
        return ss__ops_fail(err, n, "input must be [N, C, ...] with scale "
                            "and B of C elements");
    return 0;
}

static int
run_instnorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    double eps = ss__attr_float(n, "epsilon", 1e-5f);
    int64_t N = in[0]->dims[0], C = in[0]->dims[1];
    int64_t S = ss__ops_prod(in[0]->dims, 2, in[0]->ndim);
    ss_dtype_t t = in[0]->dtype;

    (void)opset;
    (void)err;
    for (int64_t i = 0; i < N * C; i++) {
        double mean = 0, var = 0;
        double sc = ss__dyn_get(in[1]->data, in[1]->dtype, i % C);
        double bi = ss__dyn_get(in[2]->data, in[2]->dtype, i % C);

        for (int64_t s = 0; s < S; s++)
            mean += ss__dyn_get(in[0]->data, t, i * S + s);
        mean /= (double)(S ? S : 1);
        for (int64_t s = 0; s < S; s++) {
            double d = ss__dyn_get(in[0]->data, t, i * S + s) - mean;

            var += d * d;
        }
        var /= (double)(S ? S : 1);
        for (int64_t s = 0; s < S; s++)
            ss__dyn_set(out[0].data, t, i * S + s,
                        (ss__dyn_get(in[0]->data, t, i * S + s) - mean)
                        / sqrt(var + eps) * sc + bi);
    }
    return 0;
}

static int
infer_mvn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    (void)opset;
    return infer_same(n, in, 1, out, err);
}

/* Over the axes (default 0, 2, 3): (x - mean) / (std + 1e-9), as the
 * function body ONNX defines it with. */
static int
run_mvn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    static const int64_t dflt[3] = { 0, 2, 3 };
    const ss_tensor_t *x = in[0];
    const int64_t *axes = dflt;
    int cnt = ss__attr_ints(n, "axes", &axes), r = x->ndim, rc;
    bool red[SS_MAX_DIMS] = { false };
    int64_t keep[SS_MAX_DIMS], ostride[SS_MAX_DIMS], total, groups = 1, s;
    int64_t *grp = NULL, numel = ss__ops_numel(x);
    double *sum = NULL, *sq = NULL;

    (void)opset;
    if (cnt < 0) {
        axes = dflt;
        cnt = 3;
    }
    for (int i = 0; i < cnt; i++) {
        int a;

        if ((rc = ss__ops_axis(n, axes[i], r, false, &a, err)) < 0)
            return rc;
        red[a] = true;
    }
    for (int d = r - 1; d >= 0; d--) {
        keep[d] = red[d] ? 1 : x->dims[d];
        ostride[d] = groups;
        groups *= keep[d];
    }
    grp = ss_malloc(sizeof(*grp) * (size_t)(numel + 1));
    sum = ss_calloc((size_t)groups + 1, sizeof(*sum));
    sq = ss_calloc((size_t)groups + 1, sizeof(*sq));
    if (grp == NULL || sum == NULL || sq == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %s", n->op_type);
        goto done;
    }
    rc = 0;
    total = groups ? numel / groups : 0;
    for (int64_t i = 0; i < numel; i++) {
        int64_t rem = i, g = 0;
        double v;

        for (int d = r - 1; d >= 0; d--) {
            int64_t c = rem % x->dims[d];

            rem /= x->dims[d];
            if (!red[d])
                g += c * ostride[d];
        }
        grp[i] = g;
        v = ss__dyn_get(x->data, x->dtype, i);
        sum[g] += v;
    }
    s = total ? total : 1;
    for (int64_t i = 0; i < numel; i++) {
        double d = ss__dyn_get(x->data, x->dtype, i) - sum[grp[i]] / (double)s;

        sq[grp[i]] += d * d;
    }
    for (int64_t i = 0; i < numel; i++) {
        double mean = sum[grp[i]] / (double)s;
        double sd = sqrt(sq[grp[i]] / (double)s);

        ss__dyn_set(out[0].data, out[0].dtype, i,
                    (ss__dyn_get(x->data, x->dtype, i) - mean)
                    / (sd + 1e-9));
    }
done:
    ss_free(grp);
    ss_free(sum);
    ss_free(sq);
    return rc;
}

const ss_op_t ss__ops_misc[] = {
    { "BitShift", infer_bitshift, run_bitshift },
    { "CastLike", infer_castlike, run_castlike },
    { "HannWindow", infer_window, run_window },
    { "HammingWindow", infer_window, run_window },
    { "BlackmanWindow", infer_window, run_window },
    { "ReverseSequence", infer_revseq, run_revseq },
    { "Det", infer_det, run_det },
    { "InstanceNormalization", infer_instnorm, run_instnorm },
    { "MeanVarianceNormalization", infer_mvn, run_mvn },
    { NULL, NULL, NULL }
};
