/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The losses, as one step of the training graph: reads the loss output
 * (logits, seen as [rows, classes]), the labels and the teacher, writes
 * the loss (f64) and the gradient of the mean loss with respect to the
 * output.
 *
 *   CE   mean over rows of  logsumexp(z) - z[label]
 *   KL   T^2 * mean over rows of  sum_j p_j (log p_j - log q_j),
 *        p = softmax(teacher / T), q = softmax(z / T)
 *        (PyTorch: kl_div(log_softmax(z/T), softmax(t/T), "batchmean")
 *        * T * T, Hinton et al.'s scaling, so that gradients keep their
 *        size when T changes)
 *   KD   alpha * KL + (1 - alpha) * CE
 *   MSE  mean over all elements of (z - target)^2
 *
 * For Sophia's Hessian estimate the trainer sets sample_labels: CE then
 * takes labels drawn from the model's own softmax (the Gauss-Newton-
 * Bartlett estimator), drawn in row order from the trainer's seeded
 * generator.
 *
 * Rows are independent and run in parallel; their losses are summed in
 * row order, so the result does not depend on the thread count.
 *
 * THREADS: [worker].
 */

#include <float.h>
#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

/* log sum exp of z[0..c) / T, and the softmax into s (may be NULL). */
static double
lse(const float *z, int64_t c, double T, float *s)
{
    double mx = -DBL_MAX, sum = 0;
    int64_t j;

    for (j = 0; j < c; j++)
        if (z[j] / T > mx)
            mx = z[j] / T;
    for (j = 0; j < c; j++)
        sum += exp(z[j] / T - mx);
    if (s)
        for (j = 0; j < c; j++)
            s[j] = (float)(exp(z[j] / T - mx) / sum);
    return mx + log(sum);
}

int
ss__k_loss(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const float *z = t->tv[s->in[0]].data;
    const int64_t *lab = s->in[1] >= 0 ? t->tv[s->in[1]].data : NULL;
    const float *tz = s->in[2] >= 0 ? t->tv[s->in[2]].data : NULL;
    double *loss = t->tv[s->out[0]].data;
    float *dz = t->tv[s->out[1]].data;
    int64_t rows = s->p[0], c = s->p[1], r;
    ss_loss_kind_t kind = t->sample_labels ? SS_LOSS_CE : t->o.loss;
    double T = t->o.temperature, alpha = t->o.alpha;
    double wkl = kind == SS_LOSS_KL ? 1.0 : kind == SS_LOSS_KD ? alpha : 0;
    double wce = kind == SS_LOSS_CE ? 1.0 : kind == SS_LOSS_KD ? 1 - alpha
                                                                : 0;
    double *per = NULL, total = 0;
    int64_t *drawn = NULL;

    if ((per = ss__kbuf(t, (size_t)rows * 2)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the loss");
    drawn = (int64_t *)(per + rows);
    if (kind == SS_LOSS_MSE) {
        int64_t n = rows * c;
        double sum = 0;

        for (r = 0; r < n; r++) {
            double d = (double)z[r] - tz[r];

            sum += d * d;
            dz[r] = (float)(2.0 * d / (double)n);
        }
        *loss = sum / (double)n;
        return 0;
    }
    if (t->sample_labels) {
        /* labels drawn from softmax(z), in row order (deterministic) */
        for (r = 0; r < rows; r++) {
            const float *zr = z + r * c;
            double u = ss__rng_unit(&t->rng), m = lse(zr, c, 1.0, NULL);
            double acc = 0;
            int64_t j;

            for (j = 0; j < c - 1; j++) {
                acc += exp(zr[j] - m);
                if (u < acc)
                    break;
            }
            drawn[r] = j;
        }
        lab = drawn;
    }
#pragma omp parallel for schedule(static) if (rows * c > 16384)
    for (r = 0; r < rows; r++) {
        const float *zr = z + r * c;
        float *dr = dz + r * c;
        double l = 0;
        int64_t j;

        for (j = 0; j < c; j++)
            dr[j] = 0;
        if (wce > 0) {
            double m = lse(zr, c, 1.0, NULL);

            l += wce * (m - zr[lab[r]]);
            for (j = 0; j < c; j++)
                dr[j] += (float)(wce * exp(zr[j] - m) / (double)rows);
            dr[lab[r]] -= (float)(wce / (double)rows);
        }
        if (wkl > 0) {
            const float *tr = tz + r * c;
            double mq = lse(zr, c, T, NULL), mp = lse(tr, c, T, NULL);
            double kl = 0;

            for (j = 0; j < c; j++) {
                double lp = tr[j] / T - mp, lq = zr[j] / T - mq;
                double p = exp(lp), q = exp(lq);

                kl += p * (lp - lq);
                dr[j] += (float)(wkl * T * (q - p) / (double)rows);
            }
            l += wkl * T * T * kl;
        }
        per[r] = l;
    }
    for (r = 0; r < rows; r++)
        total += per[r];
    *loss = total / (double)rows;
    return 0;
}

double
ss__loss_value(const ss__tr_t *t)
{
    return *(const double *)t->tv[t->loss_tv].data;
}
