/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of QuantizeLinear and DequantizeLinear: the
 * straight-through estimator, so that a graph in the QDQ form PTQ writes
 * (with f32 weights behind a QuantizeLinear instead of int8 constants)
 * trains as it will run: quantization-aware training.
 *
 * DESIGN: the forward is the engine's reference kernel (the rounding
 * and saturation of inference, by construction).  Rounding has no useful
 * derivative, so the backward treats it as the identity inside the
 * representable range and as a constant outside it (Bengio et al.'s
 * straight-through estimator, with the clipping of Jacob et al.):
 *
 *   y = DequantizeLinear(q):  dq = dy * scale        (q's gradient is f32)
 *   q = QuantizeLinear(x):    dx = dq / scale * [qmin <= round(x / scale)
 *                                                   + zero <= qmax]
 *
 * so a Q -> DQ pair passes dy through where x was not clipped and stops
 * it where it was.  Zero points must be constants; so must scales,
 * unless the trainer learns them (opts.scales, LSQ).  Then, with the
 * same straight-through reading of round():
 *
 *   DequantizeLinear:  ds += sum dy * (q - z)
 *   QuantizeLinear:    ds += sum dq * (-x / s^2)  where not clipped
 *
 * and since dq = dy * s, a Q -> DQ pair sharing s gets LSQ's gradient,
 * dy * (q - z - x / s) inside the range and dy * (q - z) where clipped:
 * a coarser step costs rounding error everywhere, a finer one clips the
 * outliers, and the balance is learned.  Sums are per channel (per axis)
 * or over the tensor, in double, in a fixed order.
 *
 * THREADS: [worker], like every rule and kernel.
 */

#include <math.h>
#include <string.h>

#include "compress/train/internal.h"

static int
qdq_kernel(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = t->tv[s->in[0]].data;
    const float *x = t->tv[s->in[1]].data;
    const float *sc = t->tv[s->in[2]].data;
    const ss__tv_t *zv = s->in[3] >= 0 ? &t->tv[s->in[3]] : NULL;
    float *dx = t->tv[s->out[0]].data;
    int64_t outer = s->p[0], C = s->p[1], inner = s->p[2], o, c, i;
    int per_axis = s->p[3] > 1, is_q = s->op;
    float qmin = s->f[0], qmax = s->f[1];

    (void)err;
    for (o = 0; o < outer; o++)
        for (c = 0; c < C; c++) {
            float scale = sc[per_axis ? c : 0], zero = 0;
            int64_t base = (o * C + c) * inner;

            if (zv != NULL) {
                int64_t k = per_axis ? c : 0;

                zero = zv->dtype == SS_DTYPE_I8
                       ? (float)((const int8_t *)zv->data)[k]
                       : (float)((const uint8_t *)zv->data)[k];
            }
            for (i = 0; i < inner; i++) {
                float g;

                if (is_q) {
                    float q = nearbyintf(x[base + i] / scale) + zero;

                    g = q >= qmin && q <= qmax ? dy[base + i] / scale : 0;
                } else {
                    g = dy[base + i] * scale;
                }
                if ((s->acc & 1u) != 0)
                    dx[base + i] += g;
                else
                    dx[base + i] = g;
            }
        }
    return 0;
}

/* The scale's gradient (see the top): per channel, summed in double. */
static int
scale_kernel(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *dy = t->tv[s->in[0]].data;
    const ss__tv_t *xv = &t->tv[s->in[1]];
    const float *sc = t->tv[s->in[2]].data;
    const ss__tv_t *zv = s->in[3] >= 0 ? &t->tv[s->in[3]] : NULL;
    float *ds = t->tv[s->out[0]].data;
    int64_t outer = s->p[0], C = s->p[1], inner = s->p[2], o, c, i;
    int per_axis = s->p[3] > 1, is_q = s->op;
    double qmin = s->f[0], qmax = s->f[1];

    (void)err;
    for (c = 0; c < C; c++) {
        double scale = sc[per_axis ? c : 0], zero = 0, sum = 0;

        if (zv != NULL) {
            int64_t k = per_axis ? c : 0;

            zero = zv->dtype == SS_DTYPE_I8
                   ? (double)((const int8_t *)zv->data)[k]
                   : (double)((const uint8_t *)zv->data)[k];
        }
        for (o = 0; o < outer; o++) {
            int64_t base = (o * C + c) * inner;

            for (i = 0; i < inner; i++) {
                double q;

                if (is_q) {
                    double x = ((const float *)xv->data)[base + i];

                    q = nearbyint(x / scale) + zero;
                    if (q >= qmin && q <= qmax)
                        sum -= dy[base + i] * x / (scale * scale);
                } else {
                    q = xv->dtype == SS_DTYPE_I8
                        ? (double)((const int8_t *)xv->data)[base + i]
                        : (double)((const uint8_t *)xv->data)[base + i];
                    sum += dy[base + i] * (q - zero);
                }
            }
        }
        if ((s->acc & 1u) != 0)
            ds[c] += (float)sum;
        else
            ds[c] = (float)sum;
    }
    return 0;
}

int
ss__bwd_qdq(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    const ss__tr_t *t = b->t;
    int x = ss__tb_in(b, n, 0), sc = ss__tb_in(b, n, 1);
    int zp = ss__tb_in(b, n, 2), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), gx, acc;
    const ss__tv_t *xv, *sv;
    int64_t axis, C = 1, outer = 1, inner = 1;
    bool is_q = strcmp(n->op_type, "QuantizeLinear") == 0;
    ss__step_t s;
    int d;

    bool learn = sc >= 0 && t->tv[sc].kind == SS__TV_PARAM;

    if ((!ss__tb_needs(b, x) && !learn) || gy < 0)
        return 0;
    xv = &t->tv[x];
    sv = &t->tv[sc];
    if ((sv->kind != SS__TV_CONST && !learn) || sv->dtype != SS_DTYPE_F32
        || (zp >= 0 && (t->tv[zp].kind != SS__TV_CONST
                        || (t->tv[zp].dtype != SS_DTYPE_I8
                            && t->tv[zp].dtype != SS_DTYPE_U8))))
        return ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s' needs a "
                          "constant f32 scale and 8-bit zero point",
                          n->op_type, n->name);
    if (is_q && xv->dtype != SS_DTYPE_F32)
        return ss_err_set(err, SS_EUNSUPP, "trainer: QuantizeLinear '%s' "
                          "of non-float data", n->name);
    if (sv->numel > 1) {
        axis = ss__attr_int(n, "axis", 1);
        if (axis < 0)
            axis += xv->ndim;
        if (axis < 0 || axis >= xv->ndim || xv->dims[axis] != sv->numel)
            return ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s': the "
                              "scale does not match the axis", n->op_type,
                              n->name);
        C = sv->numel;
        for (d = 0; d < axis; d++)
            outer *= xv->dims[d];
        for (d = (int)axis + 1; d < xv->ndim; d++)
            inner *= xv->dims[d];
    } else {
        inner = xv->numel;
    }
    memset(&s, 0, sizeof(s));
    s.node = n;
    s.op = is_q;
    s.n_in = 4;
    s.in[0] = gy;
    s.in[1] = x;
    s.in[2] = sc;
    s.in[3] = zp;
    s.n_out = 1;
    s.p[0] = outer;
    s.p[1] = C;
    s.p[2] = inner;
    s.p[3] = sv->numel;
    /* ONNX: no zero point means uint8 */
    if (zp >= 0 && t->tv[zp].dtype == SS_DTYPE_I8) {
        s.f[0] = -128;
        s.f[1] = 127;
    } else {
        s.f[0] = 0;
        s.f[1] = 255;
    }
    if (learn) {
        ss__step_t ss = s;
        int gs, rc;

        if ((gs = ss__tb_grad(b, sc, &acc, err)) < 0)
            return gs;
        ss.fn = scale_kernel;
        ss.what = is_q ? "QuantizeLinear' scale" : "DequantizeLinear' scale";
        ss.out[0] = gs;
        ss.acc = acc ? 1 : 0;
        if ((rc = ss__step_add(b, &ss, err)) < 0)
            return rc;
    }
    if (!ss__tb_needs(b, x))
        return 0;
    if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
        return gx;
    s.fn = qdq_kernel;
    s.what = is_q ? "QuantizeLinear'" : "DequantizeLinear'";
    s.out[0] = gx;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}
