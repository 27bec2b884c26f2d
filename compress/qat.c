/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qat: quantization-aware training, then the same QDQ int8 graph as ptq.
 *
 * DESIGN: PTQ's plan (quant.c) is made as for ptq: BatchNorms folded into
 * their Convs, every MatMul/Gemm/Conv with a constant weight, activation
 * ranges calibrated on the calibration data: by default "mse", the clip
 * with the least error in the layers reading each tensor
 * (calib_mse.c), the start LSQ needs (from min/max scales 100x too
 * coarse, 2 epochs of 2 000 rows did not get there: bench/qat.py,
 * docs/training.md); "minmax" or "percentile" as ptq's.  The training
 * graph
 * is PTQ's QDQ graph with one difference: each weight stays an f32
 * initializer behind QuantizeLinear + DequantizeLinear (s8, per output
 * channel, scale max|w| / 127 of the weight before training) instead of
 * an s8 constant, so the trainer trains it; activations pass through
 * QuantizeLinear + DequantizeLinear at their calibrated scales.  The
 * trainer's rules for those two ops are straight-through
 * (compress/train/rules_q.c): the forward is int8 inference, rounding and
 * saturation included, and the gradient passes where nothing was clipped.
 * It trains through the loop of finetune.c against the source's outputs,
 * for at least min_steps steps (whole epochs; params.c says why).
 * Then the trained f32 weights go back into the f32 graph (by initializer
 * name) and PTQ's builder writes the int8 variant: s8 weights quantized
 * from the trained ones, the same activation scales.
 *
 * Every layer is quantized (no accuracy-aware fallback: training is what
 * wins the accuracy back here).
 *
 * Activation scales are learned (LSQ, Esser et al. 2020): each one starts
 * where calibration put it and is a parameter of the training graph, with
 * LSQ's gradient through its Q -> DQ pair, no weight decay, and Adam on
 * log s at the optimizer's scale_lr (compress/train/train.h says why);
 * "scale_lr": 0 keeps the calibrated ones.  The learned scales go into
 * PTQ's plan before the int8 graph is built, so the served variant
 * quantizes with them.  Why: a calibrated scale is set by the largest
 * value seen (min/max) or by a fixed percentile, and on a tensor with a
 * few outlier channels it rounds the others to a handful of levels; the
 * loss knows how much clipping the outliers costs against resolving the
 * rest, calibration does not.
 *
 * Weight scales, per output channel, are learned the same way
 * ("weight_scales": "learned", the default): each starts at max|w| / 127
 * and follows LSQ's gradient through the weight's Q -> DQ pair, so a
 * channel may clip a rare large weight to resolve the rest better; the
 * int8 build then quantizes each trained weight with its learned scales
 * (saturating at +-127) instead of max|w| / 127 of the trained weight.
 * "maxabs" keeps the old rule.  LSQ's gradient scale (1 / sqrt(N Qp),
 * Esser et al. section 2.2) is not applied: it is a constant factor per
 * scale, and Adam on log s divides each parameter's gradient by its own
 * running RMS, so the factor cancels (up to Adam's epsilon); scale_lr is
 * what sets how fast scales move.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
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

/* The names of the scales in fq the trainer learns: the activations'
 * (none when not learning), then with wl each layer's weight scales. */
static int
scale_names(const ss__qplan_t *q, const ss_graph_t *fq, bool learn,
            bool wl, char ***out, int *n, ss_err_t *err)
{
    int na = ss__qplan_n_acts(q), nl = wl ? ss__qplan_layers(q) : 0, i;
    char buf[320], **names;

    *out = NULL;
    *n = 0;
    if (!learn || na + nl == 0)
        return 0;
    if ((names = ss_calloc((size_t)(na + nl), sizeof(*names))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for scale names");
    *out = names;
    for (i = 0; i < na + nl; i++) {
        if ((i < na ? ss__qplan_act_scale_name(q, i, buf, sizeof(buf))
                    : ss__qplan_weight_scale_name(q, i - na, buf,
                                                  sizeof(buf))) < 0
            || ss_graph_find_value(fq, buf) < 0)
            return ss_err_set(err, SS_EINTERNAL, "qat: %s %d has no scale "
                              "initializer", i < na ? "activation" : "layer",
                              i < na ? i : i - na);
        if ((names[i] = ss_strdup(buf)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for scale names");
        *n = i + 1;
    }
    return 0;
}

/* Copies of the scales names[na..n) of fq (before training). */
static int
snapshot(const ss_graph_t *fq, char **names, int na, int n, float ***out,
         ss_err_t *err)
{
    float **s;

    *out = NULL;
    if (n <= na)
        return 0;
    if ((s = ss_calloc((size_t)(n - na), sizeof(*s))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for scales");
    *out = s;
    for (int i = na; i < n; i++) {
        const ss_tensor_t *c =
            fq->values[ss_graph_find_value(fq, names[i])].constant;
        size_t bytes = (size_t)ss_tensor_numel(c) * sizeof(float);

        if ((s[i - na] = ss_malloc(bytes)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for scales");
        memcpy(s[i - na], c->data, bytes);
    }
    return 0;
}

/* The learned weight scales (names[na..n)) from fq into the plan; *out
 * summarizes how far they moved from max|w| / 127 of the weights before
 * training (per layer: the median and the range of learned / initial). */
static int
take_weight_scales(ss__qplan_t *q, const ss_graph_t *fq, float **init,
                   char **names, int na, int n, json_t **out, ss_err_t *err)
{
    json_t *a = json_array();
    int rc;

    if (a == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    *out = a;
    for (int i = na; i < n; i++) {
        int v = ss_graph_find_value(fq, names[i]);
        const ss_tensor_t *c = v >= 0 ? fq->values[v].constant : NULL;
        const float *s, *s0 = init[i - na];
        double lo = 1e30, hi = 0, sum = 0;
        int64_t k, C;

        if (c == NULL || c->dtype != SS_DTYPE_F32)
            return ss_err_set(err, SS_EINTERNAL, "qat: the trained graph "
                              "lost scale '%s'", names[i]);
        s = c->data;
        C = ss_tensor_numel(c);
        if ((rc = ss__qplan_set_weight_scale(q, i - na, s, C, err)) < 0)
            return rc;
        for (k = 0; k < C; k++) {
            double r = s[k] / s0[k];

            lo = r < lo ? r : lo;
            hi = r > hi ? r : hi;
            sum += r;
        }
        json_array_append_new(a, json_pack(
            "{s:s, s:I, s:f, s:f, s:f}", "scale", names[i], "channels",
            (json_int_t)C, "mean_learned_over_initial", sum / (double)C,
            "min", lo, "max", hi));
    }
    return 0;
}

/* The learned scales from the trained graph into the plan; *out lists
 * each activation's calibrated and learned scale. */
static int
take_scales(ss__qplan_t *q, const ss_graph_t *fq, char **names, int n,
            json_t **out, ss_err_t *err)
{
    json_t *a = json_array();

    if (a == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for details");
    *out = a;
    for (int i = 0; i < n; i++) {
        int v = ss_graph_find_value(fq, names[i]);
        const ss_tensor_t *c = v >= 0 ? fq->values[v].constant : NULL;
        float before = ss__qplan_act_scale(q, i), after;

        if (c == NULL || c->dtype != SS_DTYPE_F32 || ss_tensor_numel(c) != 1)
            return ss_err_set(err, SS_EINTERNAL, "qat: the trained graph "
                              "lost scale '%s'", names[i]);
        after = *(const float *)c->data;
        if (!(after > 0.0f) || !isfinite(after))
            return ss_err_set(err, SS_EINVAL, "qat: scale '%s' trained to "
                              "%g: lower scale_lr", names[i], after);
        ss__qplan_set_act_scale(q, i, after);
        json_array_append_new(a, json_pack("{s:s, s:f, s:f}", "scale",
                                           names[i], "calibrated",
                                           (double)before, "learned",
                                           (double)after));
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
    int folded = 0, taken = 0, n_names = 0, n_acts = 0, rc;
    bool learn;
    char **names = NULL;
    float **init = NULL;
    json_t *scales = NULL, *wscales = NULL;

    ss_method_default(&ptq, SS_METHOD_PTQ);
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
    learn = m->u.train.opt.scale_lr > 0;
    n_acts = learn ? ss__qplan_n_acts(q) : 0;
    if ((rc = ss__qplan_build(q, true, &fq, err)) < 0
        || (rc = scale_names(q, fq, learn, m->u.train.weight_scales != 0,
                             &names, &n_names, err)) < 0
        || (rc = snapshot(fq, names, n_acts, n_names, &init, err)) < 0
        || (rc = ss__train_graph_lsq(cx, m, &fq, NULL, 0,
                                     (const char *const *)names, n_names,
                                     note, err)) < 0
        || (rc = take_scales(q, fq, names, n_acts, &scales, err)) < 0
        || (rc = take_weight_scales(q, fq, init, names, n_acts, n_names,
                                    &wscales, err)) < 0
        || (rc = take_weights(*g, fq, &taken, err)) < 0
        || (rc = ss_graph_finalize(*g, err)) < 0
        || (rc = ss__qplan_build(q, false, &out, err)) < 0)
        goto done;
    json_object_set_new(note, "batchnorm_folded", json_integer(folded));
    json_object_set_new(note, "weights", json_string(
        n_names > n_acts
            ? "s8, symmetric, per output channel; trained behind fake "
              "quantization (straight-through), scales learned (LSQ) from "
              "max|w| / 127"
            : "s8, symmetric, per output channel; trained behind fake "
              "quantization (straight-through), scales max|w| / 127"));
    json_object_set_new(note, "weight_scales", wscales);
    wscales = NULL;
    json_object_set_new(note, "activations", json_string(
        n_names > 0 ? "per tensor, symmetric, scales learned (LSQ) from "
                      "the calibrated ones"
                    : "per tensor, symmetric, scales from calibration"));
    json_object_set_new(note, "activation_scales", scales);
    scales = NULL;
    json_object_set_new(note, "calibration", json_string(
        ss__calib_name((ss_calib_kind_t)m->u.train.calib)));
    json_object_set_new(note, "quantized", ss__qplan_list(q));
    json_object_set_new(note, "trained_initializers", json_integer(taken));
    ss_graph_free(*g);
    *g = out;
    out = NULL;
done:
    for (int i = 0; init != NULL && i < n_names - n_acts; i++)
        ss_free(init[i]);
    ss_free(init);
    for (int i = 0; i < n_names; i++)
        ss_free(names[i]);
    ss_free(names);
    json_decref(scales);
    json_decref(wscales);
    ss__qplan_free(q);
    ss_graph_free(fq);
    ss_graph_free(out);
    return rc;
}
