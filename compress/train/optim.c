/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Optimizers, the learning-rate schedule, gradient clipping, and the
 * hyper-parameter table.
 *
 * Every optimizer is one loop over the flat parameter array, with the
 * flat gradient and state arrays beside it; the formulas are PyTorch's
 * (torch.optim.AdamW and SGD of 1.13, single-tensor path) so that the
 * reference curves of tests/fixtures/train match to rounding:
 *
 *   AdamW   w *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *           w -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 *   SGD     d = g + wd w;  buf = t == 1 ? d : mu buf + d
 *           w -= lr * (nesterov ? d + mu buf : buf)
 *   Sophia  (SophiaG, Liu et al. 2023)  w *= 1 - lr wd;
 *           m = b1 m + (1-b1) g;  every k steps h = b2 h + (1-b2) gs^2
 *           with gs the gradient against labels sampled from the model;
 *           w -= lr * sign(m) * min(|m| / (rho * B * h + 1e-15), 1)
 *
 * The schedule: linear warm-up over warmup_steps (step s gets
 * lr (s+1)/warmup), then constant, or cosine / linear decay from lr to
 * min_lr_ratio * lr at total_steps.  Clipping by global norm scales the
 * gradient by clip / (norm + 1e-6) when the norm exceeds clip, as
 * torch.nn.utils.clip_grad_norm_ does.
 *
 * The loop itself is update.c's: one fused pass per element, which also
 * rounds the bf16 copies of the weights in mixed precision.
 *
 * THREADS: [worker]; loops over parameters use OpenMP (elementwise, no
 * reductions but the norm, which is summed in a fixed order).
 */

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

/* ---- the table ----------------------------------------------------------- */

static const char *const loss_names[] = { "ce", "kl", "kd", "mse", NULL };
static const char *const opt_names[] = { "adamw", "sgd", "sophia", NULL };
static const char *const sched_names[] = { "constant", "cosine", "linear",
                                           NULL };
static const char *const bn_names[] = { "batch", "frozen", NULL };

#define F(name) offsetof(ss_train_opts_t, name), \
                sizeof(((ss_train_opts_t *)0)->name)
#define BIG 1e18

static const ss_train_param_row_t table[] = {
    { "output", SS_TP_INT, F(output), 0, 0, 1 << 20, 0, NULL, 0,
      "which model output the loss reads" },
    { "loss", SS_TP_ENUM, F(loss), SS_LOSS_CE, 0, 0, 0, loss_names,
      SS_LOSS_CE, "ce (labels), kl (teacher), kd (both), mse (target)" },
    { "temperature", SS_TP_DOUBLE, F(temperature), 4.0, 0, 1e3, 1, NULL, 0,
      "distillation temperature T (KL at T, scaled by T^2)" },
    { "alpha", SS_TP_DOUBLE, F(alpha), 0.5, 0, 1, 0, NULL, 0,
      "kd: weight of the KL term; 1 - alpha weighs cross-entropy" },
    { "batchnorm", SS_TP_ENUM, F(bn), SS_BN_BATCH, 0, 0, 0, bn_names,
      SS_BN_BATCH, "batch: batch statistics (train mode); frozen: "
      "running statistics" },
    { "optimizer", SS_TP_ENUM, F(opt), SS_OPT_ADAMW, 0, 0, 0, opt_names,
      SS_OPT_ADAMW, "adamw, sgd or sophia" },
    { "lr", SS_TP_DOUBLE, F(lr), 1e-3, 0, 10, 1, NULL, 0,
      "peak learning rate" },
    { "weight_decay", SS_TP_DOUBLE, F(weight_decay), 0.01, 0, 10, 0, NULL,
      0, "decoupled (AdamW, Sophia) or L2 (SGD) weight decay" },
    { "beta1", SS_TP_DOUBLE, F(beta1), 0.9, 0, 1, 0, NULL, 0,
      "first-moment decay (AdamW, Sophia); must be < 1" },
    { "beta2", SS_TP_DOUBLE, F(beta2), 0.999, 0, 1, 0, NULL, 0,
      "second-moment / Hessian decay (AdamW, Sophia); must be < 1" },
    { "eps", SS_TP_DOUBLE, F(eps), 1e-8, 0, 1, 1, NULL, 0,
      "AdamW denominator term" },
    { "momentum", SS_TP_DOUBLE, F(momentum), 0.9, 0, 1, 0, NULL, 0,
      "SGD momentum; must be < 1" },
    { "nesterov", SS_TP_INT, F(nesterov), 0, 0, 1, 0, NULL, 0,
      "SGD: Nesterov momentum (0 or 1)" },
    { "rho", SS_TP_DOUBLE, F(rho), 0.04, 0, 100, 1, NULL, 0,
      "Sophia: scale of the Hessian in the clipped step" },
    { "hessian_every", SS_TP_INT, F(hessian_every), 10, 1, 1 << 20, 0, NULL,
      0, "Sophia: steps between Hessian estimates (k)" },
    { "clip_norm", SS_TP_DOUBLE, F(clip_norm), 0, 0, 1e9, 0, NULL, 0,
      "clip gradients to this global L2 norm (0: no clipping)" },
    { "scale_lr", SS_TP_DOUBLE, F(scale_lr), 0.05, 0, 1, 0, NULL, 0,
      "learned quantization step sizes (qat): Adam's step on log s, "
      "following the schedule; 0 keeps them as calibrated" },
    { "schedule", SS_TP_ENUM, F(sched), SS_SCHED_CONSTANT, 0, 0, 0,
      sched_names, SS_SCHED_CONSTANT, "after warm-up: constant, cosine or "
      "linear decay to min_lr_ratio * lr at total_steps" },
    { "warmup_steps", SS_TP_INT, F(warmup_steps), 0, 0, BIG, 0, NULL, 0,
      "linear warm-up steps" },
    { "total_steps", SS_TP_INT, F(total_steps), 0, 0, BIG, 0, NULL, 0,
      "decay horizon in steps (0: no decay)" },
    { "min_lr_ratio", SS_TP_DOUBLE, F(min_lr_ratio), 0, 0, 1, 0, NULL, 0,
      "learning rate at the end of the decay, relative to lr" },
    { "seed", SS_TP_INT, F(seed), 0, 0, 9007199254740992.0, 0, NULL, 0,
      "seed of every random choice (Sophia's sampled labels)" },
    { "threads", SS_TP_INT, F(threads), 0, 0, 1024, 0, NULL, 0,
      "OpenMP/oneDNN threads (0: the library default)" },
};

const ss_train_param_row_t *
ss_train_params_table(int *n)
{
    *n = (int)(sizeof(table) / sizeof(table[0]));
    return table;
}

static void
store(ss_train_opts_t *o, const ss_train_param_row_t *r, double v)
{
    char *p = (char *)o + r->offset;

    if (r->type == SS_TP_DOUBLE) {
        *(double *)p = v;
    } else if (r->size == sizeof(int64_t)) {
        int64_t x = (int64_t)v;

        memcpy(p, &x, sizeof(x));
    } else {
        int x = (int)v;

        memcpy(p, &x, sizeof(x));
    }
}

void
ss_train_opts_default(ss_train_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        store(o, &table[i], table[i].dflt);
}

static const ss_train_param_row_t *
row(const char *name)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int
in_range(const ss_train_param_row_t *r, double v)
{
    if (!isfinite(v) || v > r->max || v < r->min ||
        (r->min_open && v == r->min))
        return 0;
    if (r->type == SS_TP_INT && v != floor(v))
        return 0;
    return 1;
}

int
ss_train_opts_set(ss_train_opts_t *o, const char *name, double v,
                  ss_err_t *err)
{
    const ss_train_param_row_t *r = row(name);

    if (r == NULL || r->type == SS_TP_ENUM)
        return ss_err_set(err, SS_EINVAL, "training: %s parameter '%s'",
                          r ? "not a numeric" : "unknown", name);
    if (!in_range(r, v))
        return ss_err_set(err, SS_EINVAL, "training: '%s' must be %s%s in "
                          "%s%g, %g] (%s)", name,
                          r->type == SS_TP_INT ? "an integer" : "a number",
                          "", r->min_open ? "(" : "[", r->min, r->max,
                          r->doc);
    store(o, r, v);
    return 0;
}

int
ss_train_opts_set_name(ss_train_opts_t *o, const char *name,
                       const char *value, ss_err_t *err)
{
    const ss_train_param_row_t *r = row(name);

    if (r == NULL || r->type != SS_TP_ENUM)
        return ss_err_set(err, SS_EINVAL, "training: %s parameter '%s'",
                          r ? "not a named" : "unknown", name);
    for (int i = 0; r->choices[i]; i++)
        if (strcmp(r->choices[i], value) == 0) {
            store(o, r, (double)(i + r->base));
            return 0;
        }
    return ss_err_set(err, SS_EINVAL, "training: '%s' cannot be '%s' (%s)",
                      name, value, r->doc);
}

int
ss_train_opts_check(const ss_train_opts_t *o, ss_err_t *err)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const ss_train_param_row_t *r = &table[i];
        const char *p = (const char *)o + r->offset;
        double v;

        if (r->type == SS_TP_DOUBLE) {
            v = *(const double *)p;
        } else if (r->size == sizeof(int64_t)) {
            int64_t x;

            memcpy(&x, p, sizeof(x));
            v = (double)x;
        } else {
            int x;

            memcpy(&x, p, sizeof(x));
            v = x;
        }
        if (r->type == SS_TP_ENUM) {
            int n = 0;

            while (r->choices[n])
                n++;
            if (v < r->base || v >= r->base + n)
                return ss_err_set(err, SS_EINVAL, "training: bad '%s' (%s)",
                                  r->name, r->doc);
            continue;
        }
        if (!in_range(r, v))
            return ss_err_set(err, SS_EINVAL, "training: '%s' is %g, not in "
                              "%s%g, %g] (%s)", r->name, v,
                              r->min_open ? "(" : "[", r->min, r->max,
                              r->doc);
    }
    if (o->beta1 >= 1 || o->beta2 >= 1 || o->momentum >= 1)
        return ss_err_set(err, SS_EINVAL, "training: beta1, beta2 and "
                          "momentum must be below 1");
    if (o->n_frozen < 0 || (o->n_frozen > 0 && o->frozen == NULL))
        return ss_err_set(err, SS_EINVAL, "training: bad frozen list");
    if (o->n_scales < 0 || (o->n_scales > 0 && o->scales == NULL))
        return ss_err_set(err, SS_EINVAL, "training: bad step size list");
    if (o->dp != NULL) {
        const ss_train_dp_t *dp = o->dp;

        if (dp->size < 1 || dp->rank < 0 || dp->rank >= dp->size
            || !(dp->weight > 0 && dp->weight <= 1) || dp->sum_f32 == NULL
            || dp->sum_f64 == NULL || dp->reduce_f32 == NULL
            || dp->gather_f32 == NULL
            || (dp->share != NULL && dp->unshare == NULL))
            return ss_err_set(err, SS_EINVAL, "training: bad data-parallel "
                              "setup (rank %d of %d, weight %g)", dp->rank,
                              dp->size, dp->weight);
        if (dp->size > 1 && o->opt == SS_OPT_SOPHIA)
            return ss_err_set(err, SS_EUNSUPP, "training: sophia is not "
                              "data-parallel (its Hessian estimate samples "
                              "labels in each process): use adamw or sgd");
    }
    if (o->bf16) {
        const char *isa;

        if (!ss_dnn_bf16_native(&isa))
            return ss_err_set(err, SS_EUNSUPP, "training: precision "
                              "\"bf16\" needs a CPU with AVX512_BF16 or "
                              "AMX; oneDNN runs at %s here (use \"f32\")",
                              isa);
    }
    return 0;
}

/* ---- schedule and clipping ------------------------------------------------ */

double
ss__sched_lr(const ss_train_opts_t *o, int64_t step)
{
    double lr = o->lr, lo = o->lr * o->min_lr_ratio, f;

    if (step < o->warmup_steps)
        return lr * (double)(step + 1) / (double)o->warmup_steps;
    if (o->sched == SS_SCHED_CONSTANT || o->total_steps <= o->warmup_steps)
        return lr;
    f = (double)(step - o->warmup_steps) /
        (double)(o->total_steps - o->warmup_steps);
    if (f > 1)
        f = 1;
    if (o->sched == SS_SCHED_COSINE)
        return lo + (lr - lo) * 0.5 * (1 + cos(M_PI * f));
    return lr - (lr - lo) * f;
}

/* ---- the update ---------------------------------------------------------- */

void
ss_train_shard_range(int64_t n, int rank, int size, int64_t *lo,
                     int64_t *hi)
{
    int64_t q = n / size, r = n % size;

    *lo = q * rank + (rank < r ? rank : r);
    *hi = *lo + q + (rank < r ? 1 : 0);
}

/* State for [shard_lo, shard_hi) only: ZeRO stage 1 (train.h). */
int
ss__optim_alloc(ss__tr_t *t, ss_err_t *err)
{
    size_t n;

    t->shard_lo = 0;
    t->shard_hi = t->flat;
    if (t->o.dp != NULL)
        ss_train_shard_range(t->flat, t->o.dp->rank, t->o.dp->size,
                             &t->shard_lo, &t->shard_hi);
    n = (size_t)(t->shard_hi > t->shard_lo ? t->shard_hi - t->shard_lo : 16)
        * sizeof(float);
    t->optim_bytes = n;

    if ((t->m = ss_aligned_alloc(n)) == NULL)
        goto nomem;
    memset(t->m, 0, n);
    if (t->o.opt == SS_OPT_ADAMW || t->o.opt == SS_OPT_SOPHIA ||
        t->flat_decay < t->flat) {
        if ((t->v = ss_aligned_alloc(n)) == NULL)
            goto nomem;
        memset(t->v, 0, n);
        t->optim_bytes += n;
    }
    return 0;
nomem:
    return ss_err_set(err, SS_ENOMEM, "no memory for the optimizer state");
}

/* Learned step sizes, w[nd, flat): Adam on u = log s (du = s * ds),
 * s *= exp(-step); no weight decay.  A few hundred floats: one thread. */
static void
scales_step(ss__tr_t *t, const float *gs, double lr, double step)
{
    const ss_train_opts_t *o = &t->o;
    int64_t lo = t->shard_lo;   /* m, v and gs hold [lo, shard_hi) */
    float *w = t->w, *m = t->m, *v = t->v;
    double bc1 = 1 - pow(o->beta1, step), bc2 = 1 - pow(o->beta2, step);
    double a = o->scale_lr * (o->lr > 0 ? lr / o->lr : 1) / bc1;
    float b1 = (float)o->beta1, b2 = (float)o->beta2;

    for (int64_t i = t->flat_decay > lo ? t->flat_decay : lo;
         i < t->shard_hi; i++) {
        int64_t k = i - lo;
        float gi = gs[k] * w[i];

        if (!(w[i] > 0))
            continue;           /* padding between parameters */
        m[k] = m[k] * b1 + gi * (1.0f - b1);
        v[k] = v[k] * b2 + gi * gi * (1.0f - b2);
        w[i] *= expf(-(float)(a * m[k] / (sqrt(v[k] / bc2) + 1e-12)));
        if (t->wbf != NULL)
            t->wbf[i] = ss__bf16_round(w[i]);
    }
}

int
ss__optim_step(ss__tr_t *t, ss_err_t *err)
{
    const ss_train_opts_t *o = &t->o;
    /* The weights of this slice: [lo, hi), the state from m[0]. */
    int64_t lo = t->shard_lo;
    int64_t hi = t->shard_hi < t->flat_decay ? t->shard_hi : t->flat_decay;
    double lr = ss__sched_lr(o, t->step), step = (double)(t->step + 1);
    double bc1 = 1 - pow(o->beta1, step), bc2 = 1 - pow(o->beta2, step);
    /* This slice's gradient: summed over the processes (ss__dp_reduce). */
    float *gs = t->gsum != NULL ? t->gsum : t->gr + lo;
    ss__upd_t u;
    int rc;

    t->gsum = NULL;
    if (t->flat_decay < t->flat)
        scales_step(t, gs, lr, step);
    memset(&u, 0, sizeof(u));
    u.kind = o->opt;
    u.gscale = 1.0f;
    if (o->clip_norm > 0) {
        /* The norm of the whole gradient: with data parallelism each
         * process holds its slice, and the squares are summed. */
        double norm, coef;

        if (o->dp == NULL) {
            norm = ss__grad_norm(t->gr, t->flat_decay);
        } else {
            if ((rc = ss__dp_grad_norm2(t, gs, &norm, err)) < 0)
                return rc;
            norm = sqrt(norm);
        }
        coef = o->clip_norm / (norm + 1e-6);
        if (coef < 1)
            u.gscale = (float)coef;
    }
    u.lr = (float)lr;
    u.wd = (float)o->weight_decay;
    u.decay = 1.0f - u.lr * u.wd;
    u.b1 = (float)o->beta1;
    u.b2 = (float)o->beta2;
    u.ssz = (float)(lr / bc1);
    u.bc2s = (float)sqrt(bc2);
    u.eps = (float)o->eps;
    u.mu = (float)o->momentum;
    u.first = t->step == 0;
    u.nesterov = o->nesterov;
    u.rb = (float)(o->rho * (double)t->batch);
    if (hi > lo) {
        int threads = 0;
        struct ss_crew *crew = ss__slices_crew(t, &threads);

        /* a sliced trainer's gradient is summed block by block here
         * (lo is 0: slices are never data-parallel) */
        ss__upd_run(&u, t->w + lo, gs, t->m, t->v,
                    t->wbf ? t->wbf + lo : NULL, hi - lo,
                    ss__slices_take_parts(t), crew, threads);
    }
    t->step++;
    t->last_lr = ss__sched_lr(o, t->step);
    return 0;
}
