/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Post-training int8 quantization into a QDQ graph, with accuracy-aware
 * fallback.
 *
 * DESIGN: BatchNormalizations after Convs are folded into them first (as
 * quantization tools do: the int8 Conv carries the BN in its scales and
 * the engine sees a plain Conv).  The layers are the MatMul/Gemm/Conv
 * nodes with a constant weight (layers.c).  Calibration (quant_calib.c)
 * runs the f32 graph over the calibration set for each activation's
 * range: min/max, percentile or mse.  Activations are quantized per tensor,
 * symmetric, zero point 0 (oneDNN's fast kernels want fixed, per-tensor
 * scales and no zero point on the weights): s8, or u8 when the
 * calibrated minimum is >= 0 (after a ReLU: one more bit for free, and
 * still no zero point to fold).  Weights are s8 per output channel with
 * scale max|w| / 127 (axis 0 of a Conv or a Gemm with transB, axis 1 of a
 * MatMul's [K, N]).  The graph gets QuantizeLinear + DequantizeLinear on
 * each quantized activation (shared by every quantized layer reading it;
 * other readers such as a residual Add keep the f32 tensor) and a
 * DequantizeLinear on each s8 weight constant; biases stay f32.  That is
 * the standard ONNX QDQ form, which the engine recognizes and runs as
 * int8 kernels, and which other runtimes load too.
 *
 * Fallback: the whole set is quantized and measured on the validation
 * data against the source outputs (PTQ belongs last in a pipeline: the
 * methods after it see weights behind DequantizeLinear, not layers).  While the gate fails, every still
 * quantized layer's own damage is known (measured once, lazily: the
 * graph with only that layer quantized, normalized squared error of the
 * outputs on the calibration set) and the worst one goes back to f32.
 *
 * qat (qat.c) reuses the plan: the same layers and calibrated ranges,
 * built once with the f32 weights behind QuantizeLinear + DequantizeLinear
 * to train them, and once more as above from the trained weights.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/quant_int.h"

int
ss__quantize_weight(const float *w, int ndim, const int64_t *dims, int axis,
                    int8_t *q, float *scale)
{
    int64_t outer = 1, inner = 1, c, o, i, C;
    int d;

    if (axis < 0 || axis >= ndim)
        return SS_EINVAL;
    C = dims[axis];
    for (d = 0; d < axis; d++)
        outer *= dims[d];
    for (d = axis + 1; d < ndim; d++)
        inner *= dims[d];
    for (c = 0; c < C; c++) {
        float mx = 0.0f;

        for (o = 0; o < outer; o++)
            for (i = 0; i < inner; i++) {
                float a = fabsf(w[(o * C + c) * inner + i]);

                if (a > mx)
                    mx = a;
            }
        scale[c] = mx > 0.0f ? mx / 127.0f : 1.0f;
        for (o = 0; o < outer; o++)
            for (i = 0; i < inner; i++) {
                int64_t k = (o * C + c) * inner + i;
                float v = nearbyintf(w[k] / scale[c]);

                q[k] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
            }
    }
    return 0;
}

/* Layer q's weight w to s8 with its scales: learned ones (qat) when it
 * has them, saturating at +-127 as ss__quantize_weight does, else
 * max|w| / 127. */
static void
quantize_layer(const qlayer_t *q, const ss_tensor_t *w, int8_t *qd,
               float *sd)
{
    int64_t outer = 1, inner = 1, C, o, c, i;
    int axis = q->l.out_axis, d;

    if (q->wscale == NULL) {
        ss__quantize_weight(w->data, w->ndim, w->dims, axis, qd, sd);
        return;
    }
    C = w->dims[axis];
    for (d = 0; d < axis; d++)
        outer *= w->dims[d];
    for (d = axis + 1; d < w->ndim; d++)
        inner *= w->dims[d];
    for (o = 0; o < outer; o++)
        for (c = 0; c < C; c++)
            for (i = 0; i < inner; i++) {
                int64_t k = (o * C + c) * inner + i;
                float v = nearbyintf(((const float *)w->data)[k] /
                                     q->wscale[c]);

                qd[k] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
            }
    memcpy(sd, q->wscale, (size_t)C * sizeof(float));
}

static void
qstate_clear(qstate_t *s)
{
    int i;

    for (i = 0; i < s->n_layers; i++) {
        ss_free(s->layers[i].label);
        ss_free(s->layers[i].wscale);
    }
    for (i = 0; i < s->n_acts; i++) {
        ss_free(s->acts[i].hist);
        ss__mse_free(s->acts[i].mse);
    }
    ss_free(s->layers);
    ss_free(s->acts);
}

static int
qstate_init(qstate_t *s, ss__cx_t *cx, const ss_method_t *m,
            const ss_graph_t *g, ss_err_t *err)
{
    ss__layer_t *l = NULL;
    int n = 0, i, j, rc;

    memset(s, 0, sizeof(*s));
    s->cx = cx;
    s->m = m;
    s->g = g;
    if ((rc = ss__find_layers(g, &l, &n, err)) < 0)
        goto done;
    if ((s->layers = ss_calloc((size_t)n + 1, sizeof(*s->layers))) == NULL
        || (s->acts = ss_calloc((size_t)n + 1, sizeof(*s->acts))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for quantization");
        goto done;
    }
    for (i = 0; i < n; i++) {
        qlayer_t *q = &s->layers[s->n_layers];

        q->l = l[i];
        q->err = -1.0;
        if ((q->label = ss_strdup(ss__node_label(g, l[i].node))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for quantization");
            goto done;
        }
        /* The search picks the layers (compress.h's per_layer). */
        q->on = m->per_layer == NULL
                || m->per_layer(m->per_layer_arg, q->label) > 0.0;
        s->n_layers++;
        for (j = 0; j < s->n_acts; j++)
            if (s->acts[j].value == l[i].x)
                break;
        if (j == s->n_acts) {
            s->acts[j].value = l[i].x;
            s->acts[j].lo = INFINITY;
            s->acts[j].hi = -INFINITY;
            s->n_acts++;
        }
        q->act = j;
    }
done:
    ss_free(l);
    return rc;
}

/* "<value>_<suffix>" in buf when that name is free, else NULL (a fresh
 * name is picked): readable names in the exported file. */
static const char *
qname(const ss_graph_t *g, int value, const char *suffix, char *buf,
      size_t len)
{
    int n = snprintf(buf, len, "%s_%s", g->values[value].name, suffix);

    if (n < 0 || (size_t)n >= len || ss_graph_find_value(g, buf) >= 0)
        return NULL;
    return buf;
}

/* Scalar constant of dtype with value v (f32 scale or 8-bit zero). */
static int
scalar(ss_graph_t *g, const char *name, ss_dtype_t dt, float v,
       ss_err_t *err)
{
    void *p;
    int id = ss__new_const(g, name, dt, 0, NULL, &p, err);

    if (id >= 0 && dt == SS_DTYPE_F32)
        *(float *)p = v;
    return id;
}

/* Adds Q + DQ for activation a; returns the DQ output id. */
static int
add_act_qdq(ss_graph_t *g, const qact_t *a, ss_err_t *err)
{
    bool u8 = a->lo >= 0.0f;
    float sc = a->absmax > 0.0f ? a->absmax / (u8 ? 255.0f : 127.0f) : 1.0f;
    int s_id, z_id, q_id, dq_id, in[3], out[1], rc;
    char name[300];

    if ((s_id = scalar(g, qname(g, a->value, "scale", name, sizeof(name)),
                       SS_DTYPE_F32, sc, err)) < 0)
        return s_id;
    if ((z_id = scalar(g, qname(g, a->value, "zero_point", name,
                                sizeof(name)),
                       u8 ? SS_DTYPE_U8 : SS_DTYPE_I8, 0, err)) < 0)
        return z_id;
    if ((q_id = ss_graph_add_value(g, qname(g, a->value, "quantized", name,
                                            sizeof(name)), NULL, err)) < 0)
        return q_id;
    if ((dq_id = ss_graph_add_value(g, qname(g, a->value, "dequantized",
                                             name, sizeof(name)),
                                    NULL, err)) < 0)
        return dq_id;
    in[0] = a->value;
    in[1] = s_id;
    in[2] = z_id;
    out[0] = q_id;
    snprintf(name, sizeof(name), "%s/QuantizeLinear",
             g->values[a->value].name);
    if ((rc = ss_graph_add_node(g, "QuantizeLinear", name, 3, in, 1, out, 0,
                                NULL, err)) < 0)
        return rc;
    in[0] = q_id;
    out[0] = dq_id;
    snprintf(name, sizeof(name), "%s/DequantizeLinear",
             g->values[a->value].name);
    if ((rc = ss_graph_add_node(g, "DequantizeLinear", name, 3, in, 1, out, 0,
                                NULL, err)) < 0)
        return rc;
    return dq_id;
}

/* Replaces layer l's weight by s8 + DequantizeLinear; returns DQ's id. */
static int
add_weight_dq(ss_graph_t *g, const qlayer_t *q, ss_err_t *err)
{
    const ss_tensor_t *w = g->values[q->l.w].constant;
    int64_t C = w->dims[q->l.out_axis];
    int wq, sc, zp, dq, in[3], out[1], rc;
    int8_t *qd;
    float *sd;
    void *zd;
    ss_attr_t axis = { 0 };
    char name[300];

    if ((wq = ss__new_const(g, qname(g, q->l.w, "quantized", name,
                                     sizeof(name)),
                            SS_DTYPE_I8, w->ndim, w->dims, (void **)&qd,
                            err)) < 0)
        return wq;
    if ((sc = ss__new_const(g, qname(g, q->l.w, "scale", name, sizeof(name)),
                            SS_DTYPE_F32, 1, &C, (void **)&sd, err)) < 0)
        return sc;
    if ((zp = ss__new_const(g, qname(g, q->l.w, "zero_point", name,
                                     sizeof(name)),
                            SS_DTYPE_I8, 1, &C, &zd, err)) < 0)
        return zp;
    w = g->values[q->l.w].constant;
    quantize_layer(q, w, qd, sd);
    if ((dq = ss_graph_add_value(g, qname(g, q->l.w, "dequantized", name,
                                          sizeof(name)), NULL, err)) < 0)
        return dq;
    axis.name = (char *)"axis";
    axis.type = SS_ATTR_INT;
    axis.i = q->l.out_axis;
    in[0] = wq;
    in[1] = sc;
    in[2] = zp;
    out[0] = dq;
    snprintf(name, sizeof(name), "%s/weight/DequantizeLinear", q->label);
    if ((rc = ss_graph_add_node(g, "DequantizeLinear", name, 3, in, 1, out,
                                1, &axis, err)) < 0)
        return rc;
    return dq;
}

/* QAT: layer l's f32 weight behind QuantizeLinear + DequantizeLinear
 * (per output channel, the scales of the weight as it is now), so that
 * the weight stays a trainable f32 initializer; returns DQ's id. */
static int
add_weight_fq(ss_graph_t *g, const qlayer_t *q, ss_err_t *err)
{
    const ss_tensor_t *w = g->values[q->l.w].constant;
    int64_t C = w->dims[q->l.out_axis];
    int sc, zp, qv, dq, in[3], out[1], rc;
    int8_t *scratch;
    float *sd;
    void *zd;
    ss_attr_t axis = { 0 };
    char name[300];

    if ((sc = ss__new_const(g, qname(g, q->l.w, "scale", name, sizeof(name)),
                            SS_DTYPE_F32, 1, &C, (void **)&sd, err)) < 0)
        return sc;
    if ((zp = ss__new_const(g, qname(g, q->l.w, "zero_point", name,
                                     sizeof(name)),
                            SS_DTYPE_I8, 1, &C, &zd, err)) < 0)
        return zp;
    w = g->values[q->l.w].constant;
    if ((scratch = ss_malloc((size_t)ss_tensor_numel(w))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to quantize");
    quantize_layer(q, w, scratch, sd);
    ss_free(scratch);
    if ((qv = ss_graph_add_value(g, qname(g, q->l.w, "quantized", name,
                                          sizeof(name)), NULL, err)) < 0)
        return qv;
    if ((dq = ss_graph_add_value(g, qname(g, q->l.w, "dequantized", name,
                                          sizeof(name)), NULL, err)) < 0)
        return dq;
    axis.name = (char *)"axis";
    axis.type = SS_ATTR_INT;
    axis.i = q->l.out_axis;
    in[0] = q->l.w;
    in[1] = sc;
    in[2] = zp;
    out[0] = qv;
    snprintf(name, sizeof(name), "%s/weight/QuantizeLinear", q->label);
    if ((rc = ss_graph_add_node(g, "QuantizeLinear", name, 3, in, 1, out, 1,
                                &axis, err)) < 0)
        return rc;
    in[0] = qv;
    out[0] = dq;
    snprintf(name, sizeof(name), "%s/weight/DequantizeLinear", q->label);
    if ((rc = ss_graph_add_node(g, "DequantizeLinear", name, 3, in, 1, out,
                                1, &axis, err)) < 0)
        return rc;
    return dq;
}

/* A finalized copy of the f32 graph with the layers in mask quantized
 * (mask NULL: those with on set; only >= 0: just that layer); fake: the
 * weights stay f32 behind Q + DQ (add_weight_fq) for training. */
static int
build(const qstate_t *s, int only, bool fake, ss_graph_t **out, int *n_on,
      ss_err_t *err)
{
    ss_graph_t *g = NULL;
    int *act_dq = NULL, i, rc;

    *out = NULL;
    *n_on = 0;
    if ((act_dq = ss_malloc(sizeof(int) * ((size_t)s->n_acts + 1))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to quantize");
    for (i = 0; i < s->n_acts; i++)
        act_dq[i] = -1;
    if ((rc = ss_graph_clone(s->g, &g, err)) < 0)
        goto done;
    for (i = 0; i < s->n_layers; i++) {
        const qlayer_t *q = &s->layers[i];
        int dq;

        if (only >= 0 ? i != only : !q->on)
            continue;
        if (act_dq[q->act] < 0) {
            if ((rc = add_act_qdq(g, &s->acts[q->act], err)) < 0)
                goto done;
            act_dq[q->act] = rc;
        }
        if ((dq = fake ? add_weight_fq(g, q, err)
                       : add_weight_dq(g, q, err)) < 0) {
            rc = dq;
            goto done;
        }
        g->nodes[q->l.node].inputs[0] = act_dq[q->act];
        g->nodes[q->l.node].inputs[1] = dq;
        (*n_on)++;
    }
    if ((rc = ss_graph_finalize(g, err)) < 0)
        goto done;
    *out = g;
    g = NULL;
done:
    ss_free(act_dq);
    ss_graph_free(g);
    return rc;
}

/* Outputs of graph g over ds. */
static int
outputs_of(const qstate_t *s, const ss_graph_t *g, const ss_dataset_t *ds,
           ss__outputs_t *o, ss_err_t *err)
{
    ss__runner_t r = {0};
    int rc;

    if ((rc = ss__runner_init(&r, g, s->cx->ctl->threads, err)) == 0)
        rc = ss__collect(&r, ds, s->cx->ctl->cancel, o, err);
    ss__runner_close(&r);
    return rc;
}

static double
nmse(const ss__outputs_t *a, const ss__outputs_t *b)
{
    double num = 0.0, den = 0.0;
    int k;

    for (k = 0; k < a->n && k < b->n; k++) {
        int64_t i, n = a->rows * a->row_elems[k];

        for (i = 0; i < n; i++) {
            double d = (double)a->data[k][i] - b->data[k][i];

            num += d * d;
            den += (double)b->data[k][i] * b->data[k][i];
        }
    }
    return den > 0.0 ? num / den : num;
}

/* Each layer's own damage on the calibration set. */
static int
measure_layers(qstate_t *s, ss_err_t *err)
{
    ss__outputs_t ref = {0}, o = {0};
    ss_graph_t *q = NULL;
    int i, n_on, rc;

    if ((rc = outputs_of(s, s->g, s->cx->calib, &ref, err)) < 0)
        goto done;
    for (i = 0; i < s->n_layers; i++) {
        if ((rc = ss__cx_cancelled(s->cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        ss__cx_progress(s->cx, 0.2 + 0.4 * i / s->n_layers,
                        "ptq: measuring layers");
        if ((rc = build(s, i, false, &q, &n_on, err)) < 0
            || (rc = outputs_of(s, q, s->cx->calib, &o, err)) < 0)
            goto done;
        s->layers[i].err = nmse(&o, &ref);
        ss__outputs_clear(&o);
        ss_graph_free(q);
        q = NULL;
    }
done:
    ss_graph_free(q);
    ss__outputs_clear(&o);
    ss__outputs_clear(&ref);
    return rc;
}

/* Quality of g on the validation set against the source, for the gate. */
static int
judge(const qstate_t *s, const ss_graph_t *g, ss_eval_t *ev, ss_err_t *err)
{
    ss__outputs_t o = {0};
    int rc;

    memset(ev, 0, sizeof(*ev));
    if ((rc = outputs_of(s, g, s->cx->val, &o, err)) < 0)
        return rc;
    ev->accuracy = ss__accuracy(&o, s->cx->val->labels);
    ev->agreement = ss__agreement(&o, s->cx->src_out);
    ev->max_relative_error = ss__max_rel_error(&o, s->cx->src_out);
    ss__outputs_clear(&o);
    return 0;
}

static json_t *
layer_list(const qstate_t *s, bool on)
{
    json_t *a = json_array();
    int i;

    for (i = 0; a != NULL && i < s->n_layers; i++) {
        const qlayer_t *q = &s->layers[i];

        if (q->on != on)
            continue;
        if (q->err >= 0)
            json_array_append_new(a, json_pack("{s:s, s:f}", "layer",
                                               q->label, "nmse", q->err));
        else
            json_array_append_new(a, json_pack("{s:s}", "layer", q->label));
    }
    return a;
}

int
ss__ptq(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *note,
        ss_err_t *err)
{
    qstate_t s;
    ss_graph_t *q = NULL;
    ss_eval_t ev;
    char why[256] = "";
    int n_on = 0, attempts = 0, folded = 0, i, rc;
    bool measured = false;

    memset(&s, 0, sizeof(s));
    ss__cx_progress(cx, 0.0, "ptq: folding batch norms");
    if ((rc = ss__fold_bn(*g, &folded, err)) < 0
        || (rc = qstate_init(&s, cx, m, *g, err)) < 0)
        goto done;
    json_object_set_new(note, "batchnorm_folded", json_integer(folded));
    if (s.n_layers == 0) {
        json_object_set_new(note, "note", json_string(
            "no MatMul/Gemm/Conv with a constant weight: nothing to "
            "quantize"));
        goto done;
    }
    if ((rc = ss__quant_calibrate(&s, err)) < 0)
        goto done;
    for (;;) {
        int worst = -1;

        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        ss__cx_progress(cx, measured ? 0.7 : 0.1, attempts == 0
                        ? "ptq: quantizing" : "ptq: falling back");
        ss_graph_free(q);
        q = NULL;
        if ((rc = build(&s, -1, false, &q, &n_on, err)) < 0)
            goto done;
        attempts++;
        if (!m->u.ptq.fallback || n_on == 0)
            break;
        if ((rc = judge(&s, q, &ev, err)) < 0)
            goto done;
        if (ss__gate_ok(cx->gate, cx->src_acc, &ev, why, sizeof(why)))
            break;
        if (!measured) {
            if ((rc = measure_layers(&s, err)) < 0)
                goto done;
            measured = true;
        }
        for (i = 0; i < s.n_layers; i++)
            if (s.layers[i].on
                && (worst < 0 || s.layers[i].err > s.layers[worst].err))
                worst = i;
        s.layers[worst].on = false;
    }
    json_object_set_new(note, "weights", json_string(
        "s8, symmetric, per output channel"));
    json_object_set_new(note, "activations", json_string(
        "per tensor, symmetric (zero point 0): u8 where the calibrated "
        "minimum is >= 0, else s8"));
    json_object_set_new(note, "calibration", json_string(
        ss__calib_name(m->u.ptq.calib)));
    if (m->u.ptq.calib == SS_CALIB_PERCENTILE)
        json_object_set_new(note, "percentile",
                            json_real(m->u.ptq.percentile));
    json_object_set_new(note, "quantized", layer_list(&s, true));
    json_object_set_new(note, "fallback", layer_list(&s, false));
    json_object_set_new(note, "attempts", json_integer(attempts));
    ss_graph_free(*g);
    *g = q;
    q = NULL;
done:
    ss_graph_free(q);
    qstate_clear(&s);
    return rc;
}

/* ---- what qat reuses (internal.h) ----------------------------------------- */

int
ss__qplan_new(ss__cx_t *cx, const ss_method_t *m, const ss_graph_t *g,
              ss__qplan_t **out, ss_err_t *err)
{
    qstate_t *s;
    int rc;

    *out = NULL;
    if ((s = ss_calloc(1, sizeof(*s))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for quantization");
    if ((rc = qstate_init(s, cx, m, g, err)) < 0
        || (s->n_layers > 0 && (rc = ss__quant_calibrate(s, err)) < 0)) {
        ss__qplan_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int
ss__qplan_layers(const ss__qplan_t *q)
{
    return q->n_layers;
}

int
ss__qplan_build(const ss__qplan_t *q, bool fake, ss_graph_t **out,
                ss_err_t *err)
{
    int n_on;

    return build(q, -1, fake, out, &n_on, err);
}

/* "<weight>_scale", as add_weight_fq names layer i's weight scales. */
int
ss__qplan_weight_scale_name(const ss__qplan_t *q, int i, char *buf,
                            size_t len)
{
    int n = snprintf(buf, len, "%s_scale",
                     q->g->values[q->layers[i].l.w].name);

    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int
ss__qplan_set_weight_scale(ss__qplan_t *q, int i, const float *scale,
                           int64_t n, ss_err_t *err)
{
    qlayer_t *l = &q->layers[i];
    const ss_tensor_t *w = q->g->values[l->l.w].constant;

    if (w == NULL || n != w->dims[l->l.out_axis])
        return ss_err_set(err, SS_EINTERNAL, "qat: %lld weight scales for "
                          "layer %s", (long long)n, l->label);
    for (int64_t c = 0; c < n; c++)
        if (!(scale[c] > 0.0f) || !isfinite(scale[c]))
            return ss_err_set(err, SS_EINVAL, "qat: weight scale %lld of "
                              "%s trained to %g: lower scale_lr",
                              (long long)c, l->label, scale[c]);
    ss_free(l->wscale);
    if ((l->wscale = ss_malloc((size_t)n * sizeof(float))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for weight scales");
    memcpy(l->wscale, scale, (size_t)n * sizeof(float));
    return 0;
}

int
ss__qplan_n_acts(const ss__qplan_t *q)
{
    return q->n_acts;
}

/* qname()'s "<value>_scale": the name build gives activation i's scale
 * in a graph that had no such value before. */
int
ss__qplan_act_scale_name(const ss__qplan_t *q, int i, char *buf,
                         size_t len)
{
    int n = snprintf(buf, len, "%s_scale", q->g->values[q->acts[i].value].name);

    return n < 0 || (size_t)n >= len ? -1 : 0;
}

float
ss__qplan_act_scale(const ss__qplan_t *q, int i)
{
    const qact_t *a = &q->acts[i];

    return a->absmax > 0.0f ? a->absmax / (a->lo >= 0.0f ? 255.0f : 127.0f)
                            : 1.0f;
}

void
ss__qplan_set_act_scale(ss__qplan_t *q, int i, float scale)
{
    qact_t *a = &q->acts[i];

    if (scale > 0.0f && isfinite(scale))
        a->absmax = scale * (a->lo >= 0.0f ? 255.0f : 127.0f);
}

json_t *
ss__qplan_list(const ss__qplan_t *q)
{
    return layer_list(q, true);
}

void
ss__qplan_free(ss__qplan_t *q)
{
    if (q == NULL)
        return;
    qstate_clear(q);
    ss_free(q);
}
