/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Training inside a compression pipeline: finetune, and the loop that
 * distill and qat train with too.
 *
 * DESIGN: every training method is distillation from the source version.
 * The source labels the training data once, before the first step (its
 * logits over every training row, through the same plans that serve it);
 * unlabeled data is the normal case, so the loss is the KL divergence to
 * those logits at the method's temperature, and when the data has labels
 * the KD mix alpha * KL + (1 - alpha) * CE.  Distilling from the source
 * rather than fitting the labels is what makes a pruned or quantized
 * copy recover: the soft outputs carry the source's whole function (how
 * wrong each wrong class is), where labels carry one bit per row, and
 * the gate compares the variant with the source anyway.
 *
 * The trainer (compress/train/train.h) is built once for one batch shape:
 * each epoch visits the rows in a fresh order (a seeded shuffle) in full
 * batches; the rows past the last full batch wait for the next order.
 * Learning rate: the method's optimizer, by default AdamW at 1e-3 with a
 * cosine decay to zero over the planned steps.  After every epoch the
 * current weights are validated on the validation data (accuracy with
 * labels, else top-1 agreement with the source) and the epoch is noted;
 * the weights of the last epoch are the result (choosing the best epoch
 * on the validation set would make the gate's measurement of it
 * optimistic).
 *
 * Measured on the digits MLP (64-128-64-10, 1297 unlabeled training
 * rows, 500 held-out): 50% structured pruning takes the accuracy from
 * 0.968 to 0.880; finetune, 2 epochs at lr 1e-3, gets it back to 0.960
 * at T = 1, 0.954 at T = 2, 0.946 at T = 4 (0.958-0.966 over seeds and
 * lr 1e-3..5e-3 at T = 1, agreement with the source 0.98-0.99).  A copy
 * this close to its teacher learns most from the logits themselves, so
 * finetune defaults to T = 1 and distill, whose student starts far off,
 * to T = 4.
 *
 * Data parallelism (ctl->dp, compress/train/train.h): every process
 * shuffles with the same seed, so all see the same global batches, and
 * trains on its rows [B r / N, B (r + 1) / N) of each; the trainer sums
 * the gradients and losses, and each process updates its slice of the
 * parameters with its slice of the optimizer state.  Validation runs on
 * process 0 only (the weights are the same bytes everywhere).
 *
 * Cancellation is checked before every step; a cancelled run leaves *g
 * as it was.
 *
 * THREADS: runs on the compress thread; the trainer and the runner that
 * labels the data use ctl->threads.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "compress/internal.h"

#define MAX_INPUTS 16           /* model inputs a training run takes */

/* splitmix64: the shuffle is a function of the seed alone. */
static uint64_t
next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
shuffle(int64_t *perm, int64_t n, uint64_t *rng)
{
    int64_t i, j, t;

    for (i = n - 1; i > 0; i--) {
        j = (int64_t)(next_rand(rng) % (uint64_t)(i + 1));
        t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static int64_t
argmax(const float *v, int64_t n)
{
    int64_t i, best = 0;

    for (i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

static size_t
row_bytes(const ss_tensor_t *t)
{
    return (size_t)(ss_tensor_numel(t) / t->dims[0])
           * ss_dtype_size(t->dtype);
}

/* The state of one training run. */
typedef struct loop {
    ss__cx_t *cx;
    const ss_method_t *m;
    const char *name;           /* the method's */
    const ss_dataset_t *ds;
    int n_in;
    int64_t B, rows, classes;   /* batch, training rows, output row size */
    int64_t Bg, r0;             /* the global batch, this shard's first row
                                 * in it (B = Bg, r0 = 0 in one process) */
    ss_train_dp_t dp;           /* ctl->dp with this shard's weight */
    ss_tensor_t batch[MAX_INPUTS];
    ss_tensor_t labels, teacher;
    ss__outputs_t tout;         /* the source over the training data */
    ss_train_t *t;
    float *vout;                /* B rows of the trained output */
    bool val_ok;                /* val rows have the training row shapes */
} loop_t;

/* Rows idx[0..n) of ds (n <= B) into the batch buffers, zeros after. */
static void
gather(loop_t *L, const ss_dataset_t *ds, const int64_t *idx, int64_t first,
       int64_t n)
{
    int k;
    int64_t i;

    for (k = 0; k < L->n_in; k++) {
        size_t rb = row_bytes(&ds->inputs[k]);
        char *dst = L->batch[k].data;
        const char *src = ds->inputs[k].data;

        for (i = 0; i < n; i++)
            memcpy(dst + (size_t)i * rb,
                   src + (size_t)(idx ? idx[i] : first + i) * rb, rb);
        memset(dst + (size_t)n * rb, 0, (size_t)(L->B - n) * rb);
    }
}

/* Labels and teacher logits of the same rows (training data only). */
static void
gather_targets(loop_t *L, const int64_t *idx)
{
    int64_t i, r;
    float *dst = L->teacher.data;
    int64_t *lab = L->labels.data;

    for (i = 0; i < L->B; i++) {
        r = idx[i];
        memcpy(dst + i * L->classes, L->tout.data[0] + r * L->classes,
               (size_t)L->classes * sizeof(float));
        if (lab != NULL)
            lab[i] = ((const int64_t *)L->ds->labels->data)[r];
    }
}

/* Accuracy against the validation labels, or top-1 agreement with the
 * source's outputs over them. */
static int
validate(loop_t *L, double *metric, ss_err_t *err)
{
    const ss_dataset_t *val = L->cx->val;
    const ss__outputs_t *ref = L->cx->src_out;
    int64_t r0, n, i, hit = 0;
    int rc;

    for (r0 = 0; r0 < val->rows; r0 += L->B) {
        n = val->rows - r0 < L->B ? val->rows - r0 : L->B;
        gather(L, val, NULL, r0, n);
        if ((rc = ss_train_forward(L->t, L->batch, L->vout, err)) < 0)
            return rc;
        for (i = 0; i < n; i++) {
            int64_t a = argmax(L->vout + i * L->classes, L->classes), b;

            if (val->labels != NULL)
                b = ((const int64_t *)val->labels->data)[r0 + i];
            else
                b = argmax(ref->data[0] + (r0 + i) * L->classes, L->classes);
            hit += a == b;
        }
    }
    *metric = (double)hit / (double)val->rows;
    return 0;
}

static void
loop_clear(loop_t *L)
{
    int k;

    for (k = 0; k < L->n_in; k++)
        ss_free(L->batch[k].data);
    ss_free(L->labels.data);
    ss_free(L->teacher.data);
    ss_free(L->vout);
    ss__outputs_clear(&L->tout);
    ss_train_free(L->t);
}

/* Same element type and row shape in every input. */
static bool
same_rows(const ss_dataset_t *a, const ss_dataset_t *b)
{
    int k, d;

    for (k = 0; k < a->n_inputs; k++) {
        if (a->inputs[k].dtype != b->inputs[k].dtype
            || a->inputs[k].ndim != b->inputs[k].ndim)
            return false;
        for (d = 1; d < a->inputs[k].ndim; d++)
            if (a->inputs[k].dims[d] != b->inputs[k].dims[d])
                return false;
    }
    return true;
}

/* The source's outputs over the training data, and the buffers. */
static int
loop_init(loop_t *L, ss_err_t *err)
{
    const ss_dataset_t *ds = L->ds;
    ss__runner_t r = {0};
    int k, rc;

    L->n_in = ds->n_inputs;
    if (L->n_in > MAX_INPUTS)
        return ss_err_set(err, SS_EUNSUPP, "%s: more than %d model inputs",
                          L->name, MAX_INPUTS);
    L->rows = ds->rows;
    L->Bg = L->m->u.train.batch_size < L->rows ? L->m->u.train.batch_size
                                               : L->rows;
    L->B = L->Bg;
    if (L->cx->ctl->dp != NULL) {
        int64_t hi;

        L->dp = *L->cx->ctl->dp;
        if (L->Bg < L->dp.size)
            return ss_err_set(err, SS_EINVAL, "%s: a batch of %lld rows "
                              "cannot be split over %d processes",
                              L->name, (long long)L->Bg, L->dp.size);
        ss_train_shard_range(L->Bg, L->dp.rank, L->dp.size, &L->r0, &hi);
        L->B = hi - L->r0;
        L->dp.weight = (double)L->B / (double)L->Bg;
    }
    ss__cx_progress(L->cx, 0.0, "labelling the training data with the "
                    "source");
    if ((rc = ss__runner_init(&r, L->cx->src, L->cx->ctl->threads,
                              err)) < 0
        || (rc = ss__collect(&r, ds, L->cx->ctl->cancel, &L->tout,
                             err)) < 0)
        goto done;
    L->classes = L->tout.row_elems[0];
    for (k = 0; k < L->n_in; k++) {
        L->batch[k] = ds->inputs[k];
        L->batch[k].dims[0] = L->B;
        if ((L->batch[k].data = ss_aligned_alloc(
                 (size_t)L->B * row_bytes(&ds->inputs[k]))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a batch");
            goto done;
        }
    }
    L->teacher.dtype = SS_DTYPE_F32;
    L->teacher.ndim = 2;
    L->teacher.dims[0] = L->B;
    L->teacher.dims[1] = L->classes;
    L->labels.dtype = SS_DTYPE_I64;
    L->labels.ndim = 1;
    L->labels.dims[0] = L->B;
    if ((L->teacher.data = ss_aligned_alloc((size_t)(L->B * L->classes)
                                            * sizeof(float))) == NULL
        || (L->vout = ss_aligned_alloc((size_t)(L->B * L->classes)
                                       * sizeof(float))) == NULL
        || (ds->labels != NULL
            && (L->labels.data = ss_aligned_alloc((size_t)L->B
                                                  * sizeof(int64_t)))
                   == NULL)) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a batch");
        goto done;
    }
    L->val_ok = same_rows(ds, L->cx->val);
done:
    ss__runner_close(&r);
    return rc;
}

/* "data_parallel": this process's share of the run. */
static int
dp_note(const loop_t *L, json_t *tr)
{
    int64_t lo, hi;
    size_t bytes = ss_train_optim_bytes(L->t, &lo, &hi);

    /* path: "shm" when the flat arrays were in memory the processes
     * share, else "coll" (MPI collectives). */
    return json_object_set_new(tr, "data_parallel", json_pack(
        "{s:i, s:i, s:s, s:I, s:I, s:I, s:[I, I], s:I, s:f}",
        "processes", L->dp.size, "rank", L->dp.rank,
        "path", ss_train_dp_shared(L->t) ? "shm" : "coll",
        "rows_per_step", (json_int_t)L->B,
        "first_row", (json_int_t)L->r0,
        "flat_params", (json_int_t)ss_train_flat_size(L->t),
        "slice", (json_int_t)lo, (json_int_t)hi,
        "optimizer_state_bytes", (json_int_t)bytes,
        "collective_seconds", ss_train_dp_seconds(L->t)));
}

/* ss_train_step() with cx->step_hook around the update. */
static int
hooked_step(ss__cx_t *cx, ss_train_t *t, const ss_train_batch_t *b,
            double *loss, ss_err_t *err)
{
    int rc;

    if ((rc = ss_train_grads_compute(t, b, loss, err)) < 0
        || (rc = cx->step_hook(cx->step_hook_arg, t, 0, err)) < 0
        || (rc = ss_train_apply(t, err)) < 0)
        return rc;
    return cx->step_hook(cx->step_hook_arg, t, 1, err);
}

int
ss__train_graph(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                const char *const *frozen, int n_frozen, json_t *note,
                ss_err_t *err)
{
    return ss__train_graph_lsq(cx, m, g, frozen, n_frozen, NULL, 0, note,
                               err);
}

int
ss__train_graph_lsq(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                    const char *const *frozen, int n_frozen,
                    const char *const *scales, int n_scales, json_t *note,
                    ss_err_t *err)
{
    const ss_compress_ctl_t *ctl = cx->ctl;
    loop_t L;
    ss_train_opts_t o = m->u.train.opt;
    ss_train_progress_t pr;
    json_t *hist = json_array(), *tr = NULL;
    ss_graph_t *out = NULL;
    int64_t *perm = NULL, per_epoch, total, i;
    uint64_t rng;
    double t0, t_val = 0, metric = -1, loss;
    int e, rc, nbf, nf32, epochs = m->u.train.epochs;
    char step[64], desc[512];

    memset(&L, 0, sizeof(L));
    memset(&pr, 0, sizeof(pr));
    L.cx = cx;
    L.m = m;
    L.name = ss_method_name(m->kind);
    L.ds = cx->train;
    if (hist == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
        goto done;
    }
    o.output = 0;
    o.threads = ctl->threads;
    o.frozen = frozen;
    o.n_frozen = n_frozen;
    o.scales = scales;
    o.n_scales = n_scales;
    o.loss = cx->train->labels != NULL && o.alpha < 1.0 ? SS_LOSS_KD
                                                        : SS_LOSS_KL;
    o.bf16 = m->u.train.precision == SS_PRECISION_BF16;
    if (ctl->dp != NULL && cx->step_hook != NULL) {
        rc = ss_err_set(err, SS_EUNSUPP, "%s: a step hook with data "
                        "parallelism", L.name);
        goto done;
    }
    if ((rc = loop_init(&L, err)) < 0)
        goto done;
    if (ctl->dp != NULL)
        o.dp = &L.dp;
    /* The schedule's horizon is the run, unless the request set one. */
    per_epoch = L.rows / L.Bg;
    /* qat's step budget (params.c says why): whole epochs up to it */
    if (per_epoch > 0 && (int64_t)epochs * per_epoch < m->u.train.min_steps)
        epochs = (int)((m->u.train.min_steps + per_epoch - 1) / per_epoch);
    total = per_epoch * epochs;
    if (o.total_steps == 0 && o.sched != SS_SCHED_CONSTANT)
        o.total_steps = total;
    if ((rc = ss_train_new(*g, L.batch, &o, &L.t, err)) < 0) {
        ss_err_wrap(err, rc, "%s", L.name);
        goto done;
    }
    if (ss_train_num_params(L.t) == 0) {
        rc = ss_err_set(err, SS_EINVAL, "%s: the graph has no float "
                        "weights to train", L.name);
        goto done;
    }
    if ((perm = ss_malloc((size_t)L.rows * sizeof(*perm))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the shuffle");
        goto done;
    }
    for (i = 0; i < L.rows; i++)
        perm[i] = i;
    rng = o.seed ^ 0x5eedf00dULL;
    pr.method = L.name;
    pr.epochs = epochs;
    pr.steps = total;
    pr.val_metric = -1;
    pr.val_name = cx->val->labels != NULL ? "accuracy" : "agreement";
    t0 = ss_clock_mono_s();
    for (e = 0; e < epochs; e++) {
        double sum = 0, te = ss_clock_mono_s(), tv;
        int64_t s;

        shuffle(perm, L.rows, &rng);
        pr.epoch = e + 1;
        pr.epoch_end = false;
        for (s = 0; s < per_epoch; s++) {
            ss_train_batch_t b = { L.batch, L.labels.data ? &L.labels : NULL,
                                   &L.teacher };
            double el;

            if ((rc = ss__cx_cancelled(cx)) < 0) {
                ss_err_set(err, rc, "cancelled");
                goto done;
            }
            gather(&L, L.ds, perm + s * L.Bg + L.r0, 0, L.B);
            gather_targets(&L, perm + s * L.Bg + L.r0);
            if ((rc = cx->step_hook == NULL
                      ? ss_train_step(L.t, &b, &loss, err)
                      : hooked_step(cx, L.t, &b, &loss, err)) < 0) {
                ss_err_wrap(err, rc, "%s", L.name);
                goto done;
            }
            if (!isfinite(loss)) {
                rc = ss_err_set(err, SS_EINVAL, "%s: the loss is not finite "
                                "at step %lld: lower the learning rate",
                                L.name, (long long)ss_train_steps_done(L.t));
                goto done;
            }
            sum += loss;
            pr.step = ss_train_steps_done(L.t);
            pr.samples = pr.step * L.Bg;
            pr.loss = loss;
            pr.epoch_loss = sum / (double)(s + 1);
            pr.lr = ss_train_lr(L.t);
            el = ss_clock_mono_s() - t0;
            pr.samples_per_s = (double)pr.samples / (el - t_val + 1e-9);
            /* Steps so far, and validations by the last one's cost. */
            pr.eta_s = (el - t_val) / (double)pr.step
                       * (double)(total - pr.step)
                       + (t_val / (e > 0 ? e : 1))
                         * (double)(epochs - e);
            snprintf(step, sizeof(step), "%s: epoch %d/%d, step %lld/%lld",
                     L.name, e + 1, epochs, (long long)pr.step,
                     (long long)total);
            ss__cx_progress(cx, 0.05 + 0.9 * (double)pr.step
                                / (double)(total > 0 ? total : 1), step);
            if (ctl->train_progress != NULL)
                ctl->train_progress(ctl->arg, &pr);
        }
        tv = ss_clock_mono_s();
        metric = -1;
        if (L.val_ok && L.dp.rank == 0
            && (rc = validate(&L, &metric, err)) < 0)
            goto done;
        t_val += ss_clock_mono_s() - tv;
        pr.val_metric = metric;
        pr.epoch_end = true;
        pr.eta_s = (ss_clock_mono_s() - t0 - t_val)
                   / (double)(pr.step ? pr.step : 1)
                   * (double)(total - pr.step)
                   + t_val / (e + 1) * (double)(epochs - e - 1);
        if (ctl->train_progress != NULL)
            ctl->train_progress(ctl->arg, &pr);
        json_array_append_new(hist, json_pack(
            "{s:i, s:f, s:o, s:f}", "epoch", e + 1,
            "loss", per_epoch > 0 ? sum / (double)per_epoch : 0.0,
            cx->val->labels != NULL ? "val_accuracy" : "val_agreement",
            metric >= 0 ? json_real(metric) : json_null(),
            "seconds", ss_clock_mono_s() - te));
    }
    if ((rc = ss_train_export(L.t, &out, err)) < 0)
        goto done;
    nbf = ss_train_precision(L.t, &nf32);
    tr = json_pack("{s:s, s:s, s:f, s:i, s:I, s:I, s:I, s:b, s:s, s:f, "
                   "s:s, s:i, s:i, s:f, s:s, s:O}",
                   "teacher", "the source version",
                   "loss", o.loss == SS_LOSS_KD ? "kd" : "kl",
                   "temperature", o.temperature,
                   "epochs", epochs,
                   "batch_size", (json_int_t)L.Bg,
                   "steps", (json_int_t)ss_train_steps_done(L.t),
                   "training_rows", (json_int_t)L.rows,
                   "labels", cx->train->labels != NULL,
                   "optimizer", o.opt == SS_OPT_SGD ? "sgd"
                                : o.opt == SS_OPT_SOPHIA ? "sophia"
                                                         : "adamw",
                   "lr", o.lr,
                   "precision", o.bf16 ? "bf16" : "f32",
                   "bf16_products", nbf,
                   "f32_fallbacks", nf32,
                   "seconds", ss_clock_mono_s() - t0,
                   "graph", ss_train_describe(L.t, desc, sizeof(desc)),
                   "history", hist);
    if (tr == NULL || json_object_set_new(note, "training", tr) < 0
        || (ctl->dp != NULL && (rc = dp_note(&L, tr)) < 0)) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
        goto done;
    }
    /* The trainer reads the graph it was built from until it is freed. */
    ss_train_free(L.t);
    L.t = NULL;
    ss_graph_free(*g);
    *g = out;
    out = NULL;
done:
    loop_clear(&L);
    ss_free(perm);
    ss_graph_free(out);
    json_decref(hist);
    return rc;
}

int
ss__finetune(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
             json_t *note, ss_err_t *err)
{
    return ss__train_graph(cx, m, g, NULL, 0, note, err);
}
