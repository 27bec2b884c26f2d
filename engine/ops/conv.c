/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conv (1-D to 3-D, float32): groups, strides, dilations, pads,
 * auto_pad, optional bias.
 *
 * A direct convolution with no scratch: for each output plane (of each
 * output depth), each input channel of its group and each kernel tap
 * (whose depth lands inside the input), one pass over the output rows
 * adds w * the shifted input row.  The valid output column range of a tap
 * is computed once, so the inner loop has no bounds checks and vectorizes
 * for stride 1.  oneDNN runs the hot shapes; this is the reference.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>

typedef struct {
    int64_t n, c, m, g, cg, mg; /* batch, in channels, out channels, groups */
    ss_window_t w;
} conv_t;

static int
conv_shape(const ss_node_t *n, const ss_tensor_t *const *in, conv_t *cv,
           ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *wt = in[1];
    int nsp = x->ndim - 2, rc;
    const int64_t *ks;
    int nk;

    if (x->ndim < 3 || x->ndim > 5)
        return ss__ops_failc(err, x->ndim < 3 ? SS_EINVAL : SS_EUNSUPP, n,
                             "X must be [N, C, W], [N, C, H, W] or [N, C, D, "
                             "H, W], not rank %d", x->ndim);
    if (wt->ndim != x->ndim)
        return ss__ops_fail(err, n, "W has rank %d, X has rank %d", wt->ndim,
                            x->ndim);
    cv->n = x->dims[0];
    cv->c = x->dims[1];
    cv->m = wt->dims[0];
    cv->g = ss__attr_int(n, "group", 1);
    if (cv->g < 1 || cv->g > SS_OPS_MAX_NUMEL)
        return ss__ops_fail(err, n, "group %lld is out of range",
                            (long long)cv->g);
    if (cv->c != wt->dims[1] * cv->g)
        return ss__ops_fail(err, n, "input channels %lld do not match "
                            "weight's %lld x group %lld", (long long)cv->c,
                            (long long)wt->dims[1], (long long)cv->g);
    if (cv->m % cv->g != 0)
        return ss__ops_fail(err, n, "output channels %lld are not a multiple "
                            "of group %lld", (long long)cv->m,
                            (long long)cv->g);
    cv->cg = wt->dims[1];
    cv->mg = cv->m / cv->g;
    nk = ss__attr_ints(n, "kernel_shape", &ks);
    if (nk >= 0) {
        if (nk != nsp)
            return ss__ops_fail(err, n, "kernel_shape has %d values, "
                                "expected %d", nk, nsp);
        for (int i = 0; i < nsp; i++)
            if (ks[i] != wt->dims[2 + i])
                return ss__ops_fail(err, n, "kernel_shape[%d] = %lld but W "
                                    "has %lld", i, (long long)ks[i],
                                    (long long)wt->dims[2 + i]);
    }
    if (ss__ops_has_input(n, in, 2) &&
        (in[2]->ndim != 1 || in[2]->dims[0] != cv->m))
        return ss__ops_fail(err, n, "bias must be [%lld]", (long long)cv->m);
    if ((rc = ss__ops_window(n, nsp, x->dims + 2, wt->dims + 2, false,
                             &cv->w, err)) < 0)
        return rc;
    return 0;
}

static int
infer_conv(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[5];
    conv_t cv;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    for (int i = 0; i < 3; i++)
        if (ss__ops_has_input(n, in, i) && in[i]->dtype != SS_DTYPE_F32)
            return ss__ops_failc(err, SS_EUNSUPP, n, "input %d is %s; only "
                                 "float32 is supported", i,
                                 ss__ops_dtype_name(in[i]->dtype));
    if ((rc = conv_shape(n, in, &cv, err)) < 0)
        return rc;
    ss__ops_window_dims(&cv.w, in[0], dims);
    dims[1] = cv.m;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim, dims, err);
}

/* The output index range [lo, hi) whose input index o*s - p + t is in
 * [0, len). */
static void
valid_range(int64_t len, int64_t out, int64_t s, int64_t p, int64_t t,
            int64_t *lo, int64_t *hi)
{
    int64_t shift = t - p;     /* input index = o * s + shift */
    int64_t a, b;

    a = shift >= 0 ? 0 : (-shift + s - 1) / s;
    b = len - shift <= 0 ? 0 : (len - shift - 1) / s + 1;
    *lo = a < out ? a : out;
    *hi = b < out ? b : out;
    if (*hi < *lo)
        *hi = *lo;
}

/* yp[oh, ow] += the 2-D convolution of one input plane xp[ih, iw] with
 * one kernel plane wp[kh, kw]. */
static void
plane(const conv_t *cv, const float *xp, const float *wp, float *yp)
{
    int64_t ih = cv->w.in[0], iw = cv->w.in[1];
    int64_t oh = cv->w.out[0], ow = cv->w.out[1];
    int64_t kh = cv->w.k[0], kw = cv->w.k[1];

    for (int64_t ty = 0; ty < kh; ty++) {
        int64_t ylo, yhi;

        valid_range(ih, oh, cv->w.s[0], cv->w.pb[0], ty * cv->w.d[0], &ylo,
                    &yhi);
        for (int64_t tx = 0; tx < kw; tx++) {
            float wv = wp[ty * kw + tx];
            int64_t xlo, xhi, sx = cv->w.s[1];
            int64_t shx = tx * cv->w.d[1] - cv->w.pb[1];

            valid_range(iw, ow, sx, cv->w.pb[1], tx * cv->w.d[1], &xlo,
                        &xhi);
            for (int64_t r = ylo; r < yhi; r++) {
                int64_t irow = r * cv->w.s[0] + ty * cv->w.d[0] - cv->w.pb[0];
                const float *xr = xp + irow * iw;
                float *yr = yp + r * ow;

                if (sx == 1) {
                    const float *xs = xr + xlo + shx;

                    for (int64_t c = 0; c < xhi - xlo; c++)
                        yr[xlo + c] += wv * xs[c];
                } else {
                    for (int64_t c = xlo; c < xhi; c++)
                        yr[c] += wv * xr[c * sx + shx];
                }
            }
        }
    }
}

static int
run_conv(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    const float *x = in[0]->data, *wt = in[1]->data;
    const float *bias = ss__ops_has_input(n, in, 2) ? in[2]->data : NULL;
    float *y = out[0].data;
    int64_t ih, iw, oh, ow, kh, kw, id, od, kd;
    conv_t cv;
    int rc;

    if ((rc = conv_shape(n, in, &cv, err)) < 0)
        return rc;
    ih = cv.w.in[0];
    iw = cv.w.in[1];
    id = cv.w.in[2];
    oh = cv.w.out[0];
    ow = cv.w.out[1];
    od = cv.w.out[2];
    kh = cv.w.k[0];
    kw = cv.w.k[1];
    kd = cv.w.k[2];
    for (int64_t b = 0; b < cv.n; b++) {
        for (int64_t oc = 0; oc < cv.m; oc++) {
            for (int64_t oz = 0; oz < od; oz++) {
                int64_t g = oc / cv.mg;
                float *yp = y + ((b * cv.m + oc) * od + oz) * oh * ow;
                float b0 = bias ? bias[oc] : 0.0f;

                for (int64_t i = 0; i < oh * ow; i++)
                    yp[i] = b0;
                for (int64_t ic = 0; ic < cv.cg; ic++) {
                    for (int64_t tz = 0; tz < kd; tz++) {
                        int64_t iz = oz * cv.w.s[2] + tz * cv.w.d[2]
                                     - cv.w.pb[2];

                        if (iz < 0 || iz >= id)
                            continue;
                        plane(&cv, x + (((b * cv.c + g * cv.cg + ic) * id
                                         + iz) * ih * iw),
                              wt + ((oc * cv.cg + ic) * kd + tz) * kh * kw,
                              yp);
                    }
                }
            }
        }
    }
    return 0;
}

/* ---- ConvInteger, QLinearConv ------------------------------------------
 * uint8/int8 input and weight with zero points (x's per tensor, w's per
 * tensor or per output channel), products summed exactly in int64 over a
 * plain loop with bounds checks (a reference, not a fast path).
 * ConvInteger writes int32 (wrapping); QLinearConv adds its int32 bias,
 * then requantizes: round half to even of acc * x_scale * w_scale /
 * y_scale, plus y's zero point, saturated. */

typedef struct {
    const ss_tensor_t *x, *w, *xzp, *wzp, *xs, *ws, *ys, *yzp, *bias;
} qconv_t;

static bool
q8(ss_dtype_t t)
{
    return t == SS_DTYPE_U8 || t == SS_DTYPE_I8;
}

static int
q_ok(const ss_node_t *n, const ss_tensor_t *q, int64_t along, bool isint,
     const char *what, ss_err_t *err)
{
    int64_t cnt;

    if (q == NULL)
        return 0;
    cnt = ss__ops_numel(q);
    if (q->ndim > 1 || (cnt != 1 && cnt != along))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s must be a scalar or "
                             "1-D of %lld values", what, (long long)along);
    if (isint ? !q8(q->dtype) : !ss__ops_is_float(q->dtype))
        return ss__ops_fail(err, n, "%s has type %s", what,
                            ss__ops_dtype_name(q->dtype));
    return 0;
}

static double
q_at(const ss_tensor_t *q, int64_t i)
{
    if (q == NULL)
        return 0;
    return ss__ops_get_f64(q->data, q->dtype, ss__ops_numel(q) == 1 ? 0 : i);
}

static int
qconv_shape(const ss_node_t *n, const qconv_t *q, conv_t *cv, ss_err_t *err)
{
    const ss_tensor_t *xw[3] = { q->x, q->w, NULL };
    int rc;

    if (!q8(q->x->dtype) || !q8(q->w->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "x and w must be uint8 or "
                             "int8, not %s and %s",
                             ss__ops_dtype_name(q->x->dtype),
                             ss__ops_dtype_name(q->w->dtype));
    if (q->x->ndim == 5)
        return ss__ops_failc(err, SS_EUNSUPP, n, "3-D %s is not supported",
                             n->op_type);
    if ((rc = conv_shape(n, xw, cv, err)) < 0 ||
        (rc = q_ok(n, q->xzp, 1, true, "x_zero_point", err)) < 0 ||
        (rc = q_ok(n, q->wzp, cv->m, true, "w_zero_point", err)) < 0 ||
        (rc = q_ok(n, q->xs, 1, false, "x_scale", err)) < 0 ||
        (rc = q_ok(n, q->ws, cv->m, false, "w_scale", err)) < 0 ||
        (rc = q_ok(n, q->ys, 1, false, "y_scale", err)) < 0 ||
        (rc = q_ok(n, q->yzp, 1, true, "y_zero_point", err)) < 0)
        return rc;
    if (q->bias != NULL && (q->bias->dtype != SS_DTYPE_I32 ||
                            q->bias->ndim != 1 ||
                            q->bias->dims[0] != cv->m))
        return ss__ops_fail(err, n, "B must be int32 [%lld]",
                            (long long)cv->m);
    return 0;
}

static int
qconv_infer(const ss_node_t *n, const qconv_t *q, ss_dtype_t dt,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[4];
    conv_t cv;
    int rc;

    if ((rc = qconv_shape(n, q, &cv, err)) < 0)
        return rc;
    dims[0] = cv.n;
    dims[1] = cv.m;
    if (q->x->ndim == 3) {
        dims[2] = cv.w.out[1];
    } else {
        dims[2] = cv.w.out[0];
        dims[3] = cv.w.out[1];
    }
    return ss__ops_set_out(n, out, dt, q->x->ndim, dims, err);
}

static int
qconv_run(const ss_node_t *n, const qconv_t *q, ss_tensor_t *y,
          ss_err_t *err)
{
    int64_t ih, iw, oh, ow, kh, kw, o = 0;
    int64_t xz = (int64_t)q_at(q->xzp, 0);
    conv_t cv;
    int rc;

    if ((rc = qconv_shape(n, q, &cv, err)) < 0)
        return rc;
    ih = cv.w.in[0];
    iw = cv.w.in[1];
    oh = cv.w.out[0];
    ow = cv.w.out[1];
    kh = cv.w.k[0];
    kw = cv.w.k[1];
    for (int64_t b = 0; b < cv.n; b++)
        for (int64_t oc = 0; oc < cv.m; oc++) {
            int64_t g = oc / cv.mg, wz = (int64_t)q_at(q->wzp, oc);

            for (int64_t r = 0; r < oh; r++)
                for (int64_t c = 0; c < ow; c++, o++) {
                    int64_t acc = 0;

                    for (int64_t ic = 0; ic < cv.cg; ic++)
                        for (int64_t ty = 0; ty < kh; ty++) {
                            int64_t iy = r * cv.w.s[0] + ty * cv.w.d[0]
                                         - cv.w.pb[0];

                            if (iy < 0 || iy >= ih)
                                continue;
                            for (int64_t tx = 0; tx < kw; tx++) {
                                int64_t ix = c * cv.w.s[1] + tx * cv.w.d[1]
                                             - cv.w.pb[1];

                                if (ix < 0 || ix >= iw)
                                    continue;
                                acc += (ss__ops_get_i64(
                                            q->x->data, q->x->dtype,
                                            ((b * cv.c + g * cv.cg + ic) * ih
                                             + iy) * iw + ix) - xz)
                                       * (ss__ops_get_i64(
                                              q->w->data, q->w->dtype,
                                              ((oc * cv.cg + ic) * kh + ty)
                                              * kw + tx) - wz);
                            }
                        }
                    if (q->ys == NULL) {
                        ((int32_t *)y->data)[o] = (int32_t)(uint32_t)acc;
                    } else {
                        double lo = y->dtype == SS_DTYPE_U8 ? 0 : -128;
                        double hi = y->dtype == SS_DTYPE_U8 ? 255 : 127;
                        double v;

                        if (q->bias != NULL)
                            acc += ((const int32_t *)q->bias->data)[oc];
                        v = nearbyint((double)acc * q_at(q->xs, 0)
                                      * q_at(q->ws, oc) / q_at(q->ys, 0))
                            + q_at(q->yzp, 0);
                        v = v != v ? 0 : v < lo ? lo : v > hi ? hi : v;
                        if (y->dtype == SS_DTYPE_U8)
                            ((uint8_t *)y->data)[o] = (uint8_t)v;
                        else
                            ((int8_t *)y->data)[o] = (int8_t)v;
                    }
                }
        }
    return 0;
}

static int
infer_convint(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    qconv_t q = { in[0], in[1], ss__ops_opt_input(n, in, 2),
                  ss__ops_opt_input(n, in, 3), NULL, NULL, NULL, NULL, NULL };
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    return qconv_infer(n, &q, SS_DTYPE_I32, &out[0], err);
}

static int
run_convint(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    qconv_t q = { in[0], in[1], ss__ops_opt_input(n, in, 2),
                  ss__ops_opt_input(n, in, 3), NULL, NULL, NULL, NULL, NULL };

    (void)opset;
    return qconv_run(n, &q, &out[0], err);
}

static int
infer_qlconv(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    qconv_t q;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 8, err)) < 0)
        return rc;
    q = (qconv_t){ in[0], in[3], in[2], in[5], in[1], in[4], in[6], in[7],
                   ss__ops_opt_input(n, in, 8) };
    return qconv_infer(n, &q, in[7]->dtype, &out[0], err);
}

static int
run_qlconv(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    qconv_t q = { in[0], in[3], in[2], in[5], in[1], in[4], in[6], in[7],
                  ss__ops_opt_input(n, in, 8) };

    (void)opset;
    return qconv_run(n, &q, &out[0], err);
}

const ss_op_t ss__ops_conv[] = {
    { "Conv", infer_conv, run_conv },
    { "ConvInteger", infer_convint, run_convint },
    { "QLinearConv", infer_qlconv, run_qlconv },
    { NULL, NULL, NULL }
};
