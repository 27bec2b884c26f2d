/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The trainer's public calls (train.h): running the training graph that
 * build.c made, the optimizer step, parameter access and export.
 *
 * A step copies the batch into the trainer's own input buffers (the
 * steps' pointers are fixed at build time, and a copy of a batch is
 * noise next to its forward and backward), runs every step in order, and
 * updates the parameters.  Sophia's Hessian estimate, every k steps, is
 * one extra forward and backward on labels sampled from the model (the
 * forward is run again rather than kept, because the arena reuses
 * forward values once the backward has read them).
 *
 * THREADS: [worker]; a trainer belongs to one thread at a time.
 */

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/pace.h"
#include "compress/train/internal.h"
#include "engine/ir/edit.h"

/* SS_TRAIN_PROFILE=1: milliseconds per step kind and the oneDNN
 * implementation it runs, printed to stderr when the trainer is freed
 * (for benchmarks); SS_TRAIN_PROFILE=cpu: the calling thread's CPU
 * milliseconds instead (with one thread, the breakdown a loaded machine
 * disturbs least: time spent preempted is not in it). */
static void
profile(const ss__tr_t *t, int i, double ms)
{
    static __thread double acc[4096];

    if (i < 0) {
        for (int k = 0; k < t->n_steps && k < 4096; k++)
            if (acc[k] > 0)
                fprintf(stderr, "%4d %-22s %-40s %9.2f ms %s\n", k,
                        t->steps[k].what, t->steps[k].node ?
                        t->steps[k].node->name : "", acc[k],
                        t->steps[k].prim ? ss_dnn_prim_impl(t->steps[k].prim)
                                         : "");
        memset(acc, 0, sizeof(acc));
        return;
    }
    if (i < 4096)
        acc[i] += ms;
}

void
ss__train_profile_dump(const ss__tr_t *t)
{
    if (getenv("SS_TRAIN_PROFILE"))
        profile(t, -1, 0);
}

static int
run_steps(ss__tr_t *t, int from, int to, ss_err_t *err)
{
    const char *pe = getenv("SS_TRAIN_PROFILE");
    int prof = pe != NULL;
    clockid_t clk = pe != NULL && strcmp(pe, "cpu") == 0
                        ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;

    if (t->n_slices > 0)    /* its arena is gone (slices.c) */
        return ss_err_set(err, SS_EINTERNAL, "training: a sliced trainer "
                          "ran its whole-batch steps");
    if (t->o.threads > 0)
        omp_set_num_threads(t->o.threads);
    if (t->wbf_stale && t->wbf != NULL) {
        ss__bf16_round_n(t->w, t->wbf, t->flat);
        t->wbf_stale = 0;
    }
    for (int i = from; i < to; i++) {
        const ss__step_t *s = &t->steps[i];
        double t0 = prof ? (double)ss_clock_ns(clk) / 1e6 : 0;
        int rc = s->fn(t, s, err);

        if (prof)
            profile(t, i, (double)ss_clock_ns(clk) / 1e6 - t0);
        /* One op is the finest unit a job can stop at (common/pace.h). */
        ss_pace_point();
        if (rc < 0) {
            const char *nm = s->node && s->node->name[0] ? s->node->name
                                                         : "-";
            return ss_err_wrap(err, rc, "training step %d (%s, node '%s'): ",
                               i, s->what, nm);
        }
    }
    return 0;
}

static int
same_shape(const ss_tensor_t *a, const ss__tv_t *v)
{
    if (a->ndim != v->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != v->dims[i])
            return 0;
    return 1;
}

int
ss__train_check_inputs(const ss__tr_t *t, const ss_tensor_t *in,
                       ss_err_t *err)
{
    for (int i = 0; i < t->n_inputs; i++) {
        const ss__tv_t *v = &t->tv[t->input_tv[i]];

        if (in[i].dtype != v->dtype || !same_shape(&in[i], v) ||
            in[i].data == NULL)
            return ss_err_set(err, SS_EINVAL, "training: input '%s' is not "
                              "of the shape the trainer was built for",
                              v->name);
    }
    return 0;
}

/* Copies checked inputs into the trainer's buffers. */
static void
put_inputs(ss__tr_t *t, const ss_tensor_t *in)
{
    for (int i = 0; i < t->n_inputs; i++) {
        ss__tv_t *v = &t->tv[t->input_tv[i]];

        memcpy(v->data, in[i].data, v->bytes);
    }
}

static int
wants_labels(const ss__tr_t *t)
{
    return t->labels_tv >= 0 && t->o.loss != SS_LOSS_KL &&
           t->o.loss != SS_LOSS_MSE;
}

static int64_t
label_at(const ss_tensor_t *l, int64_t i)
{
    return l->dtype == SS_DTYPE_I64 ? ((const int64_t *)l->data)[i]
                                    : ((const int32_t *)l->data)[i];
}

int
ss__train_check_batch(const ss__tr_t *t, const ss_train_batch_t *b,
                      ss_err_t *err)
{
    int rc;

    if ((rc = ss__train_check_inputs(t, b->inputs, err)) < 0)
        return rc;
    if (wants_labels(t)) {
        const ss__tv_t *v = &t->tv[t->labels_tv];
        const ss_tensor_t *l = b->labels;
        int64_t classes = t->tv[t->out_tv].dims[t->tv[t->out_tv].ndim - 1];

        if (l == NULL || l->data == NULL || ss_tensor_numel(l) != v->numel ||
            (l->dtype != SS_DTYPE_I64 && l->dtype != SS_DTYPE_I32))
            return ss_err_set(err, SS_EINVAL, "training: the loss needs "
                              "%lld integer labels", (long long)v->numel);
        for (int64_t i = 0; i < v->numel; i++) {
            int64_t y = label_at(l, i);

            if (y < 0 || y >= classes)
                return ss_err_set(err, SS_EINVAL, "training: label %lld of "
                                  "row %lld is not a class of %lld",
                                  (long long)y, (long long)i,
                                  (long long)classes);
        }
    }
    if (t->teacher_tv >= 0) {
        const ss__tv_t *v = &t->tv[t->teacher_tv];
        const ss_tensor_t *tt = b->teacher;

        if (tt == NULL || tt->data == NULL || tt->dtype != SS_DTYPE_F32 ||
            ss_tensor_numel(tt) != v->numel)
            return ss_err_set(err, SS_EINVAL, "training: the loss needs "
                              "f32 teacher outputs of %lld elements",
                              (long long)v->numel);
    }
    return 0;
}

static int
copy_batch(ss__tr_t *t, const ss_train_batch_t *b, ss_err_t *err)
{
    int rc;

    if ((rc = ss__train_check_batch(t, b, err)) < 0)
        return rc;
    put_inputs(t, b->inputs);
    if (wants_labels(t)) {
        ss__tv_t *v = &t->tv[t->labels_tv];
        int64_t *dst = v->data;

        for (int64_t i = 0; i < v->numel; i++)
            dst[i] = label_at(b->labels, i);
    }
    if (t->teacher_tv >= 0) {
        ss__tv_t *v = &t->tv[t->teacher_tv];

        memcpy(v->data, b->teacher->data, v->bytes);
    }
    return 0;
}

/* Sophia: h = b2 h + (1 - b2) g^2 from a backward on sampled labels. */
static int
hessian(ss__tr_t *t, ss_err_t *err)
{
    float b2 = (float)t->o.beta2, *h = t->v, *g = t->gr;
    int64_t n = t->flat_decay, i;   /* step sizes keep Adam's v */
    int rc;

    t->sample_labels = 1;
    rc = run_steps(t, 0, t->n_steps, err);
    t->sample_labels = 0;
    if (rc < 0)
        return rc;
#pragma omp parallel for schedule(static) if (n > 16384)
    for (i = 0; i < n; i++)
        h[i] = b2 * h[i] + (1.0f - b2) * g[i] * g[i];
    return 0;
}

int
ss_train_grads_compute(ss_train_t *t, const ss_train_batch_t *b,
                       double *loss, ss_err_t *err)
{
    int rc;

    if (loss)
        *loss = 0;
    if (t->n_slices > 0)
        return ss__slices_grads(t, b, loss, err);
    if ((rc = copy_batch(t, b, err)) < 0)
        return rc;
    if (t->o.opt == SS_OPT_SOPHIA && t->step % t->o.hessian_every == 0 &&
        (rc = hessian(t, err)) < 0)
        return rc;
    if ((rc = run_steps(t, 0, t->n_steps, err)) < 0)
        return rc;
    if (loss)
        *loss = ss__loss_value(t);
    return 0;
}

/* ---- data parallelism (train.h) ------------------------------------------ */

int
ss__dp_reduce(ss__tr_t *t, double *loss, ss_err_t *err)
{
    const ss_train_dp_t *dp = t->o.dp;
    float *st = t->state, *sum = NULL;
    int64_t i;
    double l = *loss * dp->weight, t0;
    int rc;

    /* The gradient of the shard's mean loss, weighted by the shard's
     * share: summed, the gradient of the global batch's mean loss.  The
     * glue weights it as it reads it (no pass of its own here). */
    t0 = ss_clock_mono_ms();
    rc = dp->reduce_f32(dp->arg, t->gr, t->flat, (float)dp->weight, &sum,
                        err);
    if (rc == 0)
        rc = dp->sum_f64(dp->arg, &l, 1, err);
    t->dp_seconds += (ss_clock_mono_ms() - t0) / 1e3;
    if (rc < 0)
        return rc;
    t->gsum = sum;
    *loss = l;
    if (t->n_state > 0 && dp->size > 1) {
        /* Running statistics: the mean over the processes. */
        float inv = 1.0f / (float)dp->size;

        for (i = 0; i < t->n_state; i++)
            st[i] *= inv;
        if ((rc = dp->sum_f32(dp->arg, st, t->n_state, err)) < 0)
            return rc;
    }
    return 0;
}

/* The squared L2 norm of the gradient's weights [0, flat_decay), over
 * every process when each holds its slice only (gradient clipping). */
int
ss__dp_grad_norm2(ss__tr_t *t, const float *g, double *out, ss_err_t *err)
{
    const ss_train_dp_t *dp = t->o.dp;
    int64_t lo = t->shard_lo;
    int64_t hi = t->shard_hi < t->flat_decay ? t->shard_hi : t->flat_decay;
    double s = 0, t0;
    int rc;

    if (hi > lo) {
        s = ss__grad_norm(g, hi - lo);
        s *= s;
    }
    t0 = ss_clock_mono_ms();
    rc = dp->sum_f64(dp->arg, &s, 1, err);
    t->dp_seconds += (ss_clock_mono_ms() - t0) / 1e3;
    *out = s;
    return rc;
}

int
ss__dp_gather(ss__tr_t *t, ss_err_t *err)
{
    const ss_train_dp_t *dp = t->o.dp;
    double t0 = ss_clock_mono_ms();
    int rc = dp->gather_f32(dp->arg, t->w, t->flat, err);

    t->dp_seconds += (ss_clock_mono_ms() - t0) / 1e3;
    /* The other processes' slices arrived as f32: their bf16 copies
     * (the update rounded this slice's). */
    if (rc == 0 && t->wbf != NULL) {
        ss__bf16_round_n(t->w, t->wbf, t->shard_lo);
        ss__bf16_round_n(t->w + t->shard_hi, t->wbf + t->shard_hi,
                         t->flat - t->shard_hi);
    }
    return rc;
}

int
ss_train_apply(ss_train_t *t, ss_err_t *err)
{
    int rc;

    /* sliced: the update runs on the slices' crew, and OpenMP makes no
     * team whose threads would spin beside it */
    if (t->o.threads > 0 || t->n_slices > 0)
        omp_set_num_threads(t->n_slices > 0 ? 1 : t->o.threads);
    rc = ss__optim_step(t, err);
    if (t->n_slices > 0)
        omp_set_num_threads(t->sl_threads);
    if (rc < 0)
        return rc;
    return t->o.dp != NULL ? ss__dp_gather(t, err) : 0;
}

int
ss_train_step(ss_train_t *t, const ss_train_batch_t *b, double *loss,
              ss_err_t *err)
{
    double l = 0;
    int rc;

    if (loss)
        *loss = 0;
    if ((rc = ss_train_grads_compute(t, b, &l, err)) < 0
        || (t->o.dp != NULL && (rc = ss__dp_reduce(t, &l, err)) < 0))
        return rc;
    if (loss)
        *loss = l;
    return ss_train_apply(t, err);
}

int
ss_train_forward(ss_train_t *t, const ss_tensor_t *inputs, float *out,
                 ss_err_t *err)
{
    int rc;

    if (t->n_slices > 0)
        return ss__slices_forward(t, inputs, out, err);
    if ((rc = ss__train_check_inputs(t, inputs, err)) < 0)
        return rc;
    put_inputs(t, inputs);
    t->infer_bn = 1;
    rc = run_steps(t, 0, t->n_fwd, err);
    t->infer_bn = 0;
    if (rc < 0)
        return rc;
    memcpy(out, t->tv[t->out_tv].data, t->tv[t->out_tv].bytes);
    return 0;
}

/* ---- access --------------------------------------------------------------- */

int
ss_train_num_params(const ss_train_t *t)
{
    return t->n_params;
}

int
ss_train_param(const ss_train_t *t, int i, ss_train_param_info_t *out)
{
    const ss__tv_t *v;

    if (i < 0 || i >= t->n_params)
        return SS_EINVAL;
    v = &t->tv[t->params[i].tv];
    memset(out, 0, sizeof(*out));
    out->name = v->name;
    out->ndim = v->ndim;
    memcpy(out->dims, v->dims, sizeof(out->dims));
    out->numel = v->numel;
    out->offset = (int64_t)v->offset;
    return 0;
}

float *
ss_train_params(ss_train_t *t)
{
    t->wbf_stale = 1;   /* the caller may write: round the copies again */
    return t->w;
}

float *
ss_train_grads(ss_train_t *t)
{
    ss__slices_sum_pending(t);  /* a sliced step's sum, if the update
                                 * has not done it */
    return t->gr;
}

int64_t
ss_train_flat_size(const ss_train_t *t)
{
    return t->flat;
}

size_t
ss_train_optim_bytes(const ss_train_t *t, int64_t *lo, int64_t *hi)
{
    if (lo != NULL)
        *lo = t->shard_lo;
    if (hi != NULL)
        *hi = t->shard_hi;
    return t->optim_bytes;
}

double
ss_train_dp_seconds(const ss_train_t *t)
{
    return t->dp_seconds;
}

bool
ss_train_dp_shared(const ss_train_t *t)
{
    return t->shared != 0;
}

int64_t
ss_train_steps_done(const ss_train_t *t)
{
    return t->step;
}

double
ss_train_lr(const ss_train_t *t)
{
    return t->last_lr;
}

int
ss_train_precision(const ss_train_t *t, int *f32_fallbacks)
{
    if (f32_fallbacks != NULL)
        *f32_fallbacks = t->n_bf16_fallback;
    return t->n_bf16;
}

int
ss_train_bf16_acts(const ss_train_t *t)
{
    return t->n_act16;
}

const char *
ss_train_describe(const ss_train_t *t, char *buf, size_t len)
{
    int fwd = t->n_fwd, bwd = t->n_steps - t->n_loss_end, dnn = 0;

    for (int i = 0; i < t->n_steps; i++)
        dnn += t->steps[i].prim != NULL;
    size_t n = (size_t)snprintf(buf, len, "%d parameters (%lld floats), "
                                "%d forward + %d backward steps (%d on "
                                "oneDNN), arena %.1f MiB", t->n_params,
                                (long long)t->flat, fwd, bwd, dnn,
                                (double)t->arena_bytes / (1 << 20));

    if (n >= len)
        return buf;
    if (t->n_slices > 0)
        snprintf(buf + n, len - n, "; the batch in %d slices on %d threads",
                 t->n_slices, t->o.threads > 0 ? t->o.threads
                                               : omp_get_max_threads());
    else if (t->slice_why[0] != '\0')
        snprintf(buf + n, len - n, "; the batch whole (%s)", t->slice_why);
    return buf;
}

/* ---- export ----------------------------------------------------------------- */

static int
put(ss_graph_t *g, const ss__tv_t *v, const float *data, ss_err_t *err)
{
    ss_tensor_t *c = NULL;
    int id = ss_graph_find_value(g, v->name), rc;

    if (id < 0)
        return ss_err_set(err, SS_EINTERNAL, "training: value '%s' is gone "
                          "from the copy", v->name);
    /* an untied Identity output becomes an initializer of its own */
    if (g->values[id].constant == NULL && g->values[id].producer >= 0)
        ss_graph_kill_node(g, g->values[id].producer);
    if ((rc = ss__tensor_new(SS_DTYPE_F32, v->ndim, v->dims, &c, err)) < 0)
        return rc;
    memcpy(c->data, data, v->bytes);
    return ss_graph_set_constant(g, id, c, err);
}

int
ss_train_export(const ss_train_t *t, ss_graph_t **out, ss_err_t *err)
{
    ss_graph_t *g = NULL;
    int rc;

    *out = NULL;
    if ((rc = ss_graph_clone(t->g, &g, err)) < 0)
        goto done;
    for (int i = 0; i < t->n_tv; i++) {
        const ss__tv_t *v = &t->tv[i];

        if (v->kind == SS__TV_PARAM)
            rc = put(g, v, t->w + v->offset, err);
        else if (v->kind == SS__TV_STATE)
            rc = put(g, v, t->state + v->offset, err);
        if (rc < 0)
            goto done;
    }
    if ((rc = ss_graph_finalize(g, err)) < 0)
        goto done;
    *out = g;
    g = NULL;
done:
    ss_graph_free(g);
    return rc;
}
