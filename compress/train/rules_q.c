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
 * it where it was.  Scales and zero points must be constants (per tensor
 * or per axis); they get no gradient.
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

    if (!ss__tb_needs(b, x) || gy < 0)
        return 0;
    xv = &t->tv[x];
    sv = &t->tv[sc];
    if (sv->kind != SS__TV_CONST || sv->dtype != SS_DTYPE_F32
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
    if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
        return gx;
    memset(&s, 0, sizeof(s));
    s.fn = qdq_kernel;
    s.what = is_q ? "QuantizeLinear'" : "DequantizeLinear'";
    s.node = n;
    s.op = is_q;
    s.n_in = 4;
    s.in[0] = gy;
    s.in[1] = x;
    s.in[2] = sc;
    s.in[3] = zp;
    s.n_out = 1;
    s.out[0] = gx;
    s.acc = acc ? 1 : 0;
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
    return ss__step_add(b, &s, err);
}
