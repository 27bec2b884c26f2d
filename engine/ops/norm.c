/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Normalizations on float32: Softmax and LogSoftmax (opset 13's single
 * axis, and the older "coerce to 2-D" form), LayerNormalization (with the
 * optional Mean and InvStdDev outputs) and BatchNormalization in
 * inference mode.  Sums accumulate in double: these run on rows of
 * thousands of values and the tests hold them to 1e-5.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>

/* ---- Softmax, LogSoftmax -------------------------------------------- */

static int
softmax_geom(const ss_node_t *n, int opset, const ss_tensor_t *x,
             int64_t *outer, int64_t *len, int64_t *inner, ss_err_t *err)
{
    int64_t axis = ss__attr_int(n, "axis", opset >= 13 ? -1 : 1);
    int a, rc;

    if (x->ndim == 0)
        return ss__ops_fail(err, n, "input must have rank >= 1");
    if ((rc = ss__ops_axis(n, axis, x->ndim, false, &a, err)) < 0)
        return rc;
    *outer = ss__ops_prod(x->dims, 0, a);
    if (opset >= 13) {
        *len = x->dims[a];
        *inner = ss__ops_prod(x->dims, a + 1, x->ndim);
    } else {
        *len = ss__ops_prod(x->dims, a, x->ndim);
        *inner = 1;
    }
    return 0;
}

static int
infer_softmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t o, l, i;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "only float32 is "
                             "supported, not %s",
                             ss__ops_dtype_name(in[0]->dtype));
    if ((rc = softmax_geom(n, opset, in[0], &o, &l, &i, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_softmax_any(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, bool log_form, ss_err_t *err)
{
    int64_t outer, len, inner;
    const float *x = in[0]->data;
    float *y = out[0].data;
    int rc;

    if ((rc = softmax_geom(n, opset, in[0], &outer, &len, &inner, err)) < 0)
        return rc;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float *xp = x + o * len * inner + i;
            float *yp = y + o * len * inner + i;
            float mx = -INFINITY;
            double sum = 0.0;

            for (int64_t k = 0; k < len; k++)
                if (xp[k * inner] > mx)
                    mx = xp[k * inner];
            for (int64_t k = 0; k < len; k++) {
                float e = expf(xp[k * inner] - mx);

                if (!log_form)
                    yp[k * inner] = e;
                sum += e;
            }
            if (log_form) {
                float ls = (float)log(sum);

                for (int64_t k = 0; k < len; k++)
                    yp[k * inner] = xp[k * inner] - mx - ls;
            } else {
                float inv = (float)(1.0 / sum);

                for (int64_t k = 0; k < len; k++)
                    yp[k * inner] *= inv;
            }
        }
    }
    return 0;
}

static int
run_softmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    return run_softmax_any(n, opset, in, out, false, err);
}

static int
run_logsoftmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    return run_softmax_any(n, opset, in, out, true, err);
}

/* ---- LayerNormalization -------------------------------------------------- */

/* Scale and B must be the normalized shape (leading unit axes allowed) or
 * hold a single value: *full tells which. */
static int
ln_param(const ss_node_t *n, const ss_tensor_t *p, const ss_tensor_t *x,
         int axis, const char *what, ss_err_t *err)
{
    int nr = x->ndim - axis;

    if (p->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s is %s; only float32 "
                             "is supported", what,
                             ss__ops_dtype_name(p->dtype));
    if (ss__ops_numel(p) == 1)
        return 0;
    if (p->ndim > nr && ss__ops_prod(p->dims, 0, p->ndim - nr) != 1)
        return ss__ops_fail(err, n, "%s has rank %d, more than the %d "
                            "normalized axes", what, p->ndim, nr);
    for (int d = 0; d < nr; d++) {
        int k = p->ndim - nr + d;
        int64_t v = k >= 0 ? p->dims[k] : 1;

        if (v != x->dims[axis + d])
            return ss__ops_failc(err, v == 1 ? SS_EUNSUPP : SS_EINVAL, n,
                                 "%s axis %d is %lld, X has %lld", what, d,
                                 (long long)v,
                                 (long long)x->dims[axis + d]);
    }
    return 0;
}

static int
infer_layernorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    int64_t sdims[SS_MAX_DIMS];
    int a, rc;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "only float32 is "
                             "supported, not %s",
                             ss__ops_dtype_name(in[0]->dtype));
    if (in[0]->ndim == 0)
        return ss__ops_fail(err, n, "X must have rank >= 1");
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), in[0]->ndim,
                           false, &a, err)) < 0 ||
        (rc = ln_param(n, in[1], in[0], a, "Scale", err)) < 0)
        return rc;
    if (ss__ops_has_input(n, in, 2) &&
        (rc = ln_param(n, in[2], in[0], a, "B", err)) < 0)
        return rc;
    if ((rc = ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim,
                              in[0]->dims, err)) < 0)
        return rc;
    for (int d = 0; d < in[0]->ndim; d++)
        sdims[d] = d < a ? in[0]->dims[d] : 1;
    for (int k = 1; k < 3 && k < n->n_outputs; k++)
        if (n->outputs[k] >= 0 &&
            (rc = ss__ops_set_out(n, &out[k], SS_DTYPE_F32, in[0]->ndim,
                                  sdims, err)) < 0)
            return rc;
    return 0;
}

static int
run_layernorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    float eps = ss__attr_float(n, "epsilon", 1e-5f);
    const float *x = in[0]->data, *sc = in[1]->data;
    const float *bi = ss__ops_has_input(n, in, 2) ? in[2]->data : NULL;
    bool sc1 = ss__ops_numel(in[1]) == 1;
    bool bi1 = bi != NULL && ss__ops_numel(in[2]) == 1;
    float *y = out[0].data;
    float *mean_out = ss__ops_want_output(n, out, 1) ? out[1].data : NULL;
    float *inv_out = ss__ops_want_output(n, out, 2) ? out[2].data : NULL;
    int64_t rows, len;
    int a, rc;

    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", -1), in[0]->ndim,
                           false, &a, err)) < 0)
        return rc;
    rows = ss__ops_prod(in[0]->dims, 0, a);
    len = ss__ops_prod(in[0]->dims, a, in[0]->ndim);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        double s = 0.0, ss = 0.0, mean;
        float m, inv;

        for (int64_t i = 0; i < len; i++)
            s += xr[i];
        mean = len > 0 ? s / (double)len : 0.0;
        for (int64_t i = 0; i < len; i++) {
            double dv = xr[i] - mean;

            ss += dv * dv;
        }
        m = (float)mean;
        inv = (float)(1.0 / sqrt((len > 0 ? ss / (double)len : 0.0) +
                                 (double)eps));
        for (int64_t i = 0; i < len; i++) {
            float v = (xr[i] - m) * inv * sc[sc1 ? 0 : i];

            yr[i] = bi ? v + bi[bi1 ? 0 : i] : v;
        }
        if (mean_out)
            mean_out[r] = m;
        if (inv_out)
            inv_out[r] = inv;
    }
    return 0;
}

/* ---- BatchNormalization (inference) -------------------------------------- */

static int
infer_batchnorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    static const char *const names[] = { "X", "scale", "B", "mean", "var" };
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 5, err)) < 0)
        return rc;
    if (ss__attr_int(n, "training_mode", 0) != 0)
        return ss__ops_failc(err, SS_EUNSUPP, n, "training_mode=1 is not "
                             "supported (inference only)");
    for (int k = 1; k < n->n_outputs; k++)
        if (n->outputs[k] >= 0)
            return ss__ops_failc(err, SS_EUNSUPP, n, "running statistics "
                                 "outputs are not supported (inference "
                                 "only)");
    for (int i = 0; i < 5; i++)
        if (in[i]->dtype != SS_DTYPE_F32)
            return ss__ops_failc(err, SS_EUNSUPP, n, "%s is %s; only "
                                 "float32 is supported", names[i],
                                 ss__ops_dtype_name(in[i]->dtype));
    if (in[0]->ndim < 2)
        return ss__ops_fail(err, n, "X must have rank >= 2, not %d",
                            in[0]->ndim);
    for (int i = 1; i < 5; i++)
        if (in[i]->ndim != 1 || in[i]->dims[0] != in[0]->dims[1])
            return ss__ops_fail(err, n, "%s must be [%lld]", names[i],
                                (long long)in[0]->dims[1]);
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_batchnorm(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    float eps = ss__attr_float(n, "epsilon", 1e-5f);
    const float *x = in[0]->data, *sc = in[1]->data, *b = in[2]->data;
    const float *mu = in[3]->data, *var = in[4]->data;
    int64_t nb = in[0]->dims[0], c = in[0]->dims[1];
    int64_t sp = ss__ops_prod(in[0]->dims, 2, in[0]->ndim);
    float *y = out[0].data;

    for (int64_t i = 0; i < nb; i++) {
        for (int64_t ch = 0; ch < c; ch++) {
            float k = sc[ch] / sqrtf(var[ch] + eps);
            float sh = b[ch] - mu[ch] * k;
            const float *xp = x + (i * c + ch) * sp;
            float *yp = y + (i * c + ch) * sp;

            for (int64_t j = 0; j < sp; j++)
                yp[j] = xp[j] * k + sh;
        }
    }
    return 0;
}

const ss_op_t ss__ops_norm[] = {
    { "Softmax", infer_softmax, run_softmax },
    { "LogSoftmax", infer_softmax, run_logsoftmax },
    { "LayerNormalization", infer_layernorm, run_layernorm },
    { "BatchNormalization", infer_batchnorm, run_batchnorm },
    { NULL, NULL, NULL }
};
