/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qat: quantization-aware training, then the same QDQ int8 graph as ptq.
 *
 * DESIGN: PTQ's plan (quant.c) is made as for ptq: BatchNorms folded into
 * their Convs, every MatMul/Gemm/Conv with a constant weight, activation
 * ranges calibrated on the calibration data (min/max, or with
 * "calibration": "percentile" a percentile of |x|, as ptq's).  The
 * training graph
 * is PTQ's QDQ graph with one difference: each weight stays an f32
 * initializer behind QuantizeLinear + DequantizeLinear (s8, per output
 * channel, scale max|w| / 127 of the weight before training) instead of
 * an s8 constant, so the trainer trains it; activations pass through
 * QuantizeLinear + DequantizeLinear at their calibrated scales.  The
 * trainer's rules for those two ops are straight-through
 * (compress/train/rules_q.c): the forward is int8 inference, rounding and
 * saturation included, and the gradient passes where nothing was clipped.
 * It trains through the loop of finetune.c against the source's outputs.
 * Then the trained f32 weights go back into the f32 graph (by initializer
 * name) and PTQ's builder writes the int8 variant: s8 weights quantized
 * from the trained ones, the same activation scales.
 *
 * Every layer is quantized (no accuracy-aware fallback: training is what
 * wins the accuracy back here).  The activation scales stay those of
 * calibration; learning them too (LSQ) is not done.
 *
 * THREADS: runs on the compress thread.
 */

#include <string.h>

#include "compress/internal.h"

/* The trained float initializers of t into g, by name and shape. */
static int
take_weights(ss_graph_t *g, const ss_graph_t *t, int *n, ss_err_t *err)
{
    int i, k, rc;

    *n = 0;
    for (i = 0; i < g->n_values; i++) {
        const ss_tensor_t *c = g->values[i].constant, *tc;
        ss_tensor_t *copy = NULL;

        if (c == NULL || c->dtype != SS_DTYPE_F32
            || (k = ss_graph_find_value(t, g->values[i].name)) < 0
            || (tc = t->values[k].constant) == NULL
            || tc->dtype != SS_DTYPE_F32 || tc->ndim != c->ndim
            || memcmp(tc->dims, c->dims, sizeof(int64_t) * (size_t)c->ndim)
                   != 0
            || memcmp(tc->data, c->data, (size_t)ss_tensor_numel(c) * 4)
                   == 0)
            continue;
        if ((rc = ss__tensor_new(SS_DTYPE_F32, c->ndim, c->dims, &copy,
                                 err)) < 0)
            return rc;
        memcpy(copy->data, tc->data, (size_t)ss_tensor_numel(c) * 4);
        if ((rc = ss_graph_set_constant(g, i, copy, err)) < 0)
            return rc;
        (*n)++;
    }
    return 0;
}

int
ss__qat(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *note,
        ss_err_t *err)
{
    ss__qplan_t *q = NULL;
    ss_graph_t *fq = NULL, *out = NULL;
    ss_method_t ptq;
    int folded = 0, taken = 0, rc;

    ss_method_default(&ptq, SS_METHOD_PTQ);
    ptq.u.ptq.calib = (ss_calib_kind_t)m->u.train.calib;
    ptq.u.ptq.percentile = m->u.train.percentile;
    ptq.u.ptq.calib = (ss_calib_kind_t)m->u.train.calib;
    ptq.u.ptq.percentile = m->u.train.percentile;
    ss__cx_progress(cx, 0.0, "qat: calibrating");
    if ((rc = ss__fold_bn(*g, &folded, err)) < 0
        || (rc = ss__qplan_new(cx, &ptq, *g, &q, err)) < 0)
        goto done;
    if (ss__qplan_layers(q) == 0) {
        rc = ss_err_set(err, SS_EINVAL, "qat: no MatMul/Gemm/Conv with a "
                        "constant weight: nothing to quantize");
        goto done;
    }
    if ((rc = ss__qplan_build(q, true, &fq, err)) < 0
        || (rc = ss__train_graph(cx, m, &fq, NULL, 0, note, err)) < 0
        || (rc = take_weights(*g, fq, &taken, err)) < 0
        || (rc = ss_graph_finalize(*g, err)) < 0
        || (rc = ss__qplan_build(q, false, &out, err)) < 0)
        goto done;
    json_object_set_new(note, "batchnorm_folded", json_integer(folded));
    json_object_set_new(note, "weights", json_string(
        "s8, symmetric, per output channel; trained behind fake "
        "quantization (straight-through)"));
    json_object_set_new(note, "activations", json_string(
        "per tensor, symmetric, scales from calibration"));
    json_object_set_new(note, "calibration", json_string(
        m->u.train.calib == SS_CALIB_PERCENTILE ? "percentile" : "minmax"));
    json_object_set_new(note, "quantized", ss__qplan_list(q));
    json_object_set_new(note, "trained_initializers", json_integer(taken));
    ss_graph_free(*g);
    *g = out;
    out = NULL;
done:
    ss__qplan_free(q);
    ss_graph_free(fq);
    ss_graph_free(out);
    return rc;
}
