/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calibration "mse": the clip of an activation that minimizes the error
 * its quantization causes in the layers that read it.
 *
 * DESIGN: min/max sets a tensor's scale by its largest value, a
 * percentile by a fixed share of clipped values; neither knows what the
 * clipped or rounded values are worth downstream.  A layer y = W x sees
 * the activation's quantization error e as W e, and with errors
 * uncorrelated across input channels E|W e|^2 = sum_j |W[:, j]|^2
 * E[e_j^2]: each input channel's squared error weighted by the squared
 * norm of the weight column that reads it (summed over every quantized
 * layer reading the tensor).  The search scores SS__MSE_CANDS clips
 * (absmax * k / SS__MSE_CANDS) on the calibration data, the exact error
 * of rounding and saturating each value at that clip's scale (u8 or s8
 * as the build will use), and keeps the best.  Why weighted: a tensor
 * with a few large channels that the next layer scales down (activation
 * outliers; bench/qat.py's model has four units 100x larger and their
 * fc2 columns 100x smaller) gets the min/max clip from an unweighted MSE
 * too (the large channels' clipping error dominates), while the weighted
 * one clips them, as their downstream effect allows: PTQ of that model
 * 0.909 -> 0.937 (source 0.939), and qat starts from there.
 *
 * Cost: SS__MSE_CANDS rounding steps per visited value; a tensor with
 * more than SS__MSE_SAMPLES values over the calibration set is visited
 * at an even hashed sample of them.
 *
 * THREADS: the compress thread.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/internal.h"

#define SS__MSE_CANDS 128
#define SS__MSE_SAMPLES (1 << 20)

struct ss__mse {
    int64_t C;                  /* channels of the tensor */
    int axis;                   /* its channel axis: 1 (Conv), else last */
    double *w;                  /* per channel: sum of squared weights */
    double err[SS__MSE_CANDS];
    float absmax;
    float levels;               /* 255 (u8) or 127 (s8) */
    uint64_t every, seen;       /* visit one value in every */
};

/* Adds layer l's squared weight column norms to the channel weights. */
static int
add_layer(ss__mse_t *a, const ss_graph_t *g, const ss__layer_t *l,
          ss_err_t *err)
{
    const ss_tensor_t *t = g->values[l->w].constant;
    const float *w;
    int64_t n, i, O, Ig, kk = 1, groups;
    int d;

    if (t == NULL || t->dtype != SS_DTYPE_F32 || t->ndim < 2)
        return ss_err_set(err, SS_EUNSUPP, "calibration mse: weight '%s' "
                          "is not an f32 matrix", g->values[l->w].name);
    w = t->data;
    n = ss_tensor_numel(t);
    if (l->kind == SS__LAYER_CONV) {
        /* [O, C / groups, k...]: output o is in group o / (O / groups) */
        O = t->dims[0];
        Ig = t->dims[1];
        for (d = 2; d < t->ndim; d++)
            kk *= t->dims[d];
        if (Ig <= 0 || a->C % Ig != 0 || O % (a->C / Ig) != 0)
            return ss_err_set(err, SS_EUNSUPP, "calibration mse: conv "
                              "weight '%s' does not match %lld channels",
                              g->values[l->w].name, (long long)a->C);
        groups = a->C / Ig;
        for (i = 0; i < n; i++) {
            int64_t o = i / (Ig * kk), c = (i / kk) % Ig;

            a->w[o / (O / groups) * Ig + c] += (double)w[i] * w[i];
        }
        return 0;
    }
    /* Gemm/MatMul: the reduction axis is the one that is not out_axis */
    if (t->ndim != 2 || t->dims[1 - l->out_axis] != a->C)
        return ss_err_set(err, SS_EUNSUPP, "calibration mse: weight '%s' "
                          "does not match %lld channels",
                          g->values[l->w].name, (long long)a->C);
    for (i = 0; i < n; i++)
        a->w[l->out_axis == 0 ? i % a->C : i / t->dims[1]] +=
            (double)w[i] * w[i];
    return 0;
}

int
ss__mse_new(const ss_graph_t *g, const ss__layer_t *const *readers, int n,
            const ss_tensor_t *sample, float absmax, bool u8, double total,
            ss__mse_t **out, ss_err_t *err)
{
    ss__mse_t *a;
    int i, rc;

    *out = NULL;
    if ((a = ss_calloc(1, sizeof(*a))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to calibrate");
    a->axis = readers[0]->kind == SS__LAYER_CONV ? 1 : sample->ndim - 1;
    if (sample->ndim < 2 || a->axis >= sample->ndim) {
        ss_free(a);
        return ss_err_set(err, SS_EUNSUPP, "calibration mse: a %d-d layer "
                          "input", sample->ndim);
    }
    a->C = sample->dims[a->axis];
    a->absmax = absmax;
    a->levels = u8 ? 255.0f : 127.0f;
    a->every = total > SS__MSE_SAMPLES
                   ? (uint64_t)ceil(total / SS__MSE_SAMPLES) : 1;
    if ((a->w = ss_calloc((size_t)a->C, sizeof(double))) == NULL) {
        ss_free(a);
        return ss_err_set(err, SS_ENOMEM, "no memory to calibrate");
    }
    for (i = 0; i < n; i++)
        if ((rc = add_layer(a, g, readers[i], err)) < 0) {
            ss__mse_free(a);
            return rc;
        }
    *out = a;
    return 0;
}

void
ss__mse_free(ss__mse_t *a)
{
    if (a == NULL)
        return;
    ss_free(a->w);
    ss_free(a);
}

/* splitmix64 of the value's index: an even sample whatever the layout */
static bool
visit(ss__mse_t *a)
{
    uint64_t z = ++a->seen * 0x9e3779b97f4a7c15ULL;

    if (a->every == 1)
        return true;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return ((z ^ (z >> 31)) % a->every) == 0;
}

void
ss__mse_add(ss__mse_t *a, const ss_tensor_t *t)
{
    const float *v = t->data;
    int64_t inner = 1, numel = ss_tensor_numel(t), i;
    int d, k;

    if (!(a->absmax > 0.0f))
        return;
    for (d = a->axis + 1; d < t->ndim; d++)
        inner *= t->dims[d];
    for (i = 0; i < numel; i++) {
        float x = fabsf(v[i]);
        double wc;

        /* zeros (ReLU) quantize exactly at every clip */
        if (!visit(a) || x == 0.0f)
            continue;
        wc = a->w[(i / inner) % a->C];
        for (k = 0; k < SS__MSE_CANDS; k++) {
            float s = a->absmax * (float)(k + 1)
                      / (SS__MSE_CANDS * a->levels);
            float q = fminf(nearbyintf(x / s), a->levels) * s, e = x - q;

            a->err[k] += wc * (double)e * (double)e;
        }
    }
}

float
ss__mse_clip(const ss__mse_t *a)
{
    int k, best = SS__MSE_CANDS - 1;

    for (k = 0; k < SS__MSE_CANDS; k++)
        if (a->err[k] < a->err[best])
            best = k;
    return a->absmax * (float)(best + 1) / SS__MSE_CANDS;
}

const char *
ss__calib_name(ss_calib_kind_t kind)
{
    return kind == SS_CALIB_PERCENTILE ? "percentile"
           : kind == SS_CALIB_MSE      ? "mse"
                                       : "minmax";
}
