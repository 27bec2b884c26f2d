/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Quantization ops, ONNX opset 13 semantics: QuantizeLinear,
 * DequantizeLinear and DynamicQuantizeLinear.
 *
 *   Q:  y = saturate(round_half_even(x / scale) + zero_point)
 *   DQ: y = (x - zero_point) * scale
 *
 * Scale and zero point are per tensor (one element) or per axis (1-D of
 * the size of input dim `axis`, default 1).  Quantized types are uint8
 * (the default when no zero point is given) and int8; DQ also reads int32
 * (zero point 0: biases).  Rounding uses the current rounding mode, which
 * is round-half-to-even unless someone changed it (nobody here does).
 * These kernels are the reference the int8 fusion (plan_qdq.c) is tested
 * against, and run whatever Q/DQ the fusion does not absorb.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

static bool
qtype(ss_dtype_t t)
{
    return t == SS_DTYPE_U8 || t == SS_DTYPE_I8;
}

/* Checks scale/zero point and finds the per-axis layout: *outer, *ch, and
 * *inner (elements per channel run); ch == 1 for per tensor. */
static int
qparams(const ss_node_t *n, const ss_tensor_t *const *in, int64_t *outer,
        int64_t *ch, int64_t *inner, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *s = in[1];
    int64_t ns = ss__ops_numel(s);
    int axis;
    int rc;

    if (s->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "scale must be float, not "
                             "%s", ss__ops_dtype_name(s->dtype));
    if (ss__ops_has_input(n, in, 2)) {
        const ss_tensor_t *z = in[2];

        if (ss__ops_numel(z) != ns || z->ndim != s->ndim)
            return ss__ops_fail(err, n, "zero point and scale differ in "
                                "shape");
    }
    *outer = 1;
    *ch = 1;
    *inner = ss__ops_numel(x);
    if (s->ndim == 0 || (s->ndim == 1 && ns == 1 && x->ndim == 0))
        return 0;
    if (s->ndim != 1)
        return ss__ops_fail(err, n, "scale must be a scalar or 1-D");
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 1), x->ndim, false,
                           &axis, err)) < 0) {
        if (ns == 1)    /* one element: per tensor, whatever axis says */
            return 0;
        return rc;
    }
    if (x->dims[axis] != ns) {
        if (ns == 1)
            return 0;
        return ss__ops_fail(err, n, "scale has %lld elements, input dim %d "
                            "has %lld", (long long)ns, axis,
                            (long long)x->dims[axis]);
    }
    *outer = ss__ops_prod(x->dims, 0, axis);
    *ch = ns;
    *inner = ss__ops_prod(x->dims, axis + 1, x->ndim);
    return 0;
}

static int
infer_q(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t dt = SS_DTYPE_U8;
    int64_t o, c, i;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "input must be float, not "
                             "%s", ss__ops_dtype_name(in[0]->dtype));
    if (ss__ops_has_input(n, in, 2)) {
        dt = in[2]->dtype;
        if (!qtype(dt))
            return ss__ops_failc(err, SS_EUNSUPP, n, "zero point type %s is "
                                 "not supported", ss__ops_dtype_name(dt));
    }
    if ((rc = qparams(n, in, &o, &c, &i, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], dt, in[0]->ndim, in[0]->dims, err);
}

static int
run_q(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
      ss_tensor_t *out, ss_err_t *err)
{
    const float *x = in[0]->data, *s = in[1]->data;
    bool has_zp = ss__ops_has_input(n, in, 2);
    bool u8 = out[0].dtype == SS_DTYPE_U8;
    float lo = u8 ? 0.f : -128.f, hi = u8 ? 255.f : 127.f;
    int64_t outer, ch, inner;
    int rc;

    (void)opset;
    if ((rc = qparams(n, in, &outer, &ch, &inner, err)) < 0)
        return rc;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++) {
            float sc = s[c];
            float zp = has_zp ? (float)ss__ops_get_i64(in[2]->data,
                                                       in[2]->dtype, c)
                              : 0.f;
            int64_t base = (o * ch + c) * inner;

            for (int64_t k = 0; k < inner; k++) {
                float q = nearbyintf(x[base + k] / sc) + zp;

                q = q < lo ? lo : q > hi ? hi : q;   /* NaN: stays NaN */
                if (q != q)
                    q = 0.f;
                if (u8)
                    ((uint8_t *)out[0].data)[base + k] = (uint8_t)q;
                else
                    ((int8_t *)out[0].data)[base + k] = (int8_t)q;
            }
        }
    return 0;
}

static int
infer_dq(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t dt;
    int64_t o, c, i;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    if (!qtype(dt) && dt != SS_DTYPE_I32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "input type %s is not "
                             "supported", ss__ops_dtype_name(dt));
    if (ss__ops_has_input(n, in, 2) && in[2]->dtype != dt)
        return ss__ops_fail(err, n, "zero point is %s, input is %s",
                            ss__ops_dtype_name(in[2]->dtype),
                            ss__ops_dtype_name(dt));
    if ((rc = qparams(n, in, &o, &c, &i, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim,
                           in[0]->dims, err);
}

static int
run_dq(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
       ss_tensor_t *out, ss_err_t *err)
{
    const float *s = in[1]->data;
    float *y = out[0].data;
    ss_dtype_t dt = in[0]->dtype;
    bool has_zp = ss__ops_has_input(n, in, 2);
    int64_t outer, ch, inner;
    int rc;

    (void)opset;
    if ((rc = qparams(n, in, &outer, &ch, &inner, err)) < 0)
        return rc;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < ch; c++) {
            float sc = s[c];
            int32_t zp = has_zp ? (int32_t)ss__ops_get_i64(in[2]->data, dt,
                                                           c)
                                : 0;
            int64_t base = (o * ch + c) * inner;

            if (dt == SS_DTYPE_U8) {
                const uint8_t *x = in[0]->data;

                for (int64_t k = 0; k < inner; k++)
                    y[base + k] = (float)((int32_t)x[base + k] - zp) * sc;
            } else if (dt == SS_DTYPE_I8) {
                const int8_t *x = in[0]->data;

                for (int64_t k = 0; k < inner; k++)
                    y[base + k] = (float)((int32_t)x[base + k] - zp) * sc;
            } else {
                const int32_t *x = in[0]->data;

                for (int64_t k = 0; k < inner; k++)
                    y[base + k] = (float)((int64_t)x[base + k] - zp) * sc;
            }
        }
    return 0;
}

/* DynamicQuantizeLinear: uint8 with scale and zero point from the data's
 * range (which always includes 0). */
static int
infer_dyn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "input must be float, not "
                             "%s", ss__ops_dtype_name(in[0]->dtype));
    if ((rc = ss__ops_set_out(n, &out[0], SS_DTYPE_U8, in[0]->ndim,
                              in[0]->dims, err)) < 0)
        return rc;
    if (n->n_outputs > 1
        && (rc = ss__ops_set_out(n, &out[1], SS_DTYPE_F32, 0, NULL, err)) < 0)
        return rc;
    if (n->n_outputs > 2)
        rc = ss__ops_set_out(n, &out[2], SS_DTYPE_U8, 0, NULL, err);
    return rc;
}

static int
run_dyn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    const float *x = in[0]->data;
    int64_t cnt = ss__ops_numel(in[0]);
    float lo = 0.f, hi = 0.f, sc, zp;
    uint8_t *y = out[0].data;

    (void)opset;
    (void)err;
    for (int64_t i = 0; i < cnt; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    sc = (hi - lo) / 255.f;
    zp = sc > 0.f ? nearbyintf(-lo / sc) : 0.f;
    zp = zp < 0.f ? 0.f : zp > 255.f ? 255.f : zp;
    for (int64_t i = 0; i < cnt; i++) {
        float q = sc > 0.f ? nearbyintf(x[i] / sc) + zp : zp;

        q = q < 0.f ? 0.f : q > 255.f ? 255.f : q;
        y[i] = q == q ? (uint8_t)q : 0;
    }
    if (ss__ops_want_output(n, out, 1))
        *(float *)out[1].data = sc;
    if (ss__ops_want_output(n, out, 2))
        *(uint8_t *)out[2].data = (uint8_t)zp;
    return 0;
}

const ss_op_t ss__ops_quant[] = {
    { "QuantizeLinear", infer_q, run_q },
    { "DequantizeLinear", infer_dq, run_dq },
    { "DynamicQuantizeLinear", infer_dyn, run_dyn },
    { NULL, NULL, NULL }
};
