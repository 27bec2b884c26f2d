/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Evaluation: running a graph over a dataset and measuring it.
 *
 * DESIGN: a runner keeps one execution context and a few compiled plans
 * keyed by batch size (a dataset is run in chunks of SS__CX_CHUNK rows, so
 * two plans serve it: the full chunk and the remainder; latency adds
 * batch 1 and 32).  Outputs are gathered as f32 for the whole dataset so
 * that source and variant can be compared row by row: the data sets this
 * sees are calibration/validation sets of a few thousand rows at most.
 * Latency is a median of timed runs after untimed warm-up runs: the
 * first run of a plan pays for its compilation, page faults and oneDNN's
 * lazy set-up, and the next few for OpenMP threads waking and caches
 * filling (two warm-ups measured a 12 us CNN at 1.6 ms on a busy
 * machine).  Warm-up lasts LAT_WARM_RUNS runs and at least LAT_WARM_MS;
 * then ctl->latency_runs timed runs, continued (up to LAT_MAX_FACTOR
 * times as many) until LAT_MIN_MS of timed runs: a fast model gets many
 * samples, a slow one stays bounded.
 *
 * THREADS: a runner belongs to the thread that made it.
 */

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/pace.h"
#include "compress/internal.h"

int
ss__runner_init(ss__runner_t *r, const ss_graph_t *g, int threads,
                ss_err_t *err)
{
    memset(r, 0, sizeof(*r));
    r->g = g;
    return ss_exec_ctx_new(threads, &r->ctx, err);
}

static void
drop_plan(ss__runner_t *r, int i)
{
    int k;

    if (r->outs[i] != NULL) {
        for (k = 0; k < r->g->n_outputs; k++)
            ss_free(r->outs[i][k].data);
        ss_free(r->outs[i]);
    }
    ss_plan_free(r->plans[i]);
    r->outs[i] = NULL;
    r->plans[i] = NULL;
}

void
ss__runner_close(ss__runner_t *r)
{
    int i;

    if (r == NULL)
        return;
    for (i = 0; i < r->n_plans; i++)
        drop_plan(r, i);
    ss_exec_ctx_free(r->ctx);
    memset(r, 0, sizeof(*r));
}

/* Compiles a plan for these inputs into slot i with its output buffers. */
static int
make_plan(ss__runner_t *r, int i, const ss_tensor_t *inputs, ss_err_t *err)
{
    const ss_graph_t *g = r->g;
    ss_tensor_t *outs = NULL;
    ss_plan_t *p = NULL;
    size_t bytes;
    int k, rc;

    if ((rc = ss_plan_new(g, inputs, &p, err)) < 0)
        goto done;
    if ((outs = ss_calloc((size_t)g->n_outputs + 1, sizeof(*outs))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for outputs");
        goto done;
    }
    for (k = 0; k < g->n_outputs; k++) {
        const ss_io_info_t *oi = ss_plan_output(p, k);

        outs[k].dtype = oi->dtype;
        outs[k].ndim = oi->ndim;
        memcpy(outs[k].dims, oi->dims, sizeof(outs[k].dims));
        if (ss__tensor_bytes(&outs[k], &bytes) < 0) {
            rc = ss_err_set(err, SS_EUNSUPP, "output %d has no fixed size",
                            k);
            goto done;
        }
        if ((outs[k].data = ss_aligned_alloc(bytes ? bytes : 1)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for outputs");
            goto done;
        }
    }
    r->plans[i] = p;
    r->outs[i] = outs;
    r->batch[i] = inputs[0].dims[0];
    p = NULL;
    outs = NULL;
done:
    if (outs != NULL) {
        for (k = 0; k < g->n_outputs; k++)
            ss_free(outs[k].data);
        ss_free(outs);
    }
    ss_plan_free(p);
    return rc;
}

int
ss__runner_run(ss__runner_t *r, const ss_tensor_t *inputs,
               const ss_tensor_t **outs, ss_err_t *err)
{
    int64_t batch = r->g->n_inputs > 0 ? inputs[0].dims[0] : 1;
    int i, rc;

    *outs = NULL;
    for (i = 0; i < r->n_plans; i++)
        if (r->batch[i] == batch)
            break;
    if (i == r->n_plans) {
        if (r->n_plans < SS__CX_PLANS) {
            i = r->n_plans++;
        } else {
            i = r->next;
            r->next = (r->next + 1) % SS__CX_PLANS;
            drop_plan(r, i);
        }
        if ((rc = make_plan(r, i, inputs, err)) < 0) {
            /* Keep the slots dense: move the last one into the hole. */
            r->n_plans--;
            if (i != r->n_plans) {
                r->plans[i] = r->plans[r->n_plans];
                r->outs[i] = r->outs[r->n_plans];
                r->batch[i] = r->batch[r->n_plans];
                r->plans[r->n_plans] = NULL;
                r->outs[r->n_plans] = NULL;
            }
            r->next = 0;
            return rc;
        }
    }
    if ((rc = ss_plan_run(r->plans[i], r->ctx, inputs, r->outs[i], err)) < 0)
        return rc;
    *outs = r->outs[i];
    return 0;
}

int
ss__dataset_check(const ss_graph_t *g, const ss_dataset_t *ds,
                  const char *what, ss_err_t *err)
{
    int64_t rows;
    int rc;

    if (ds == NULL || ds->rows <= 0)
        return ss_err_set(err, SS_EINVAL, "%s data: no rows", what);
    if ((rc = ss_graph_check_inputs(g, ds->n_inputs, ds->inputs, NULL,
                                    SS_INPUTS_ROWS, NULL, &rows, err)) < 0)
        return ss_err_wrap(err, rc, "%s data", what);
    if (g->n_inputs > 0 && rows != ds->rows)
        return ss_err_set(err, SS_EINVAL, "%s data: the inputs have %lld "
                          "rows, the dataset says %lld", what,
                          (long long)rows, (long long)ds->rows);
    if (ds->labels != NULL
        && (ds->labels->dtype != SS_DTYPE_I64 || ds->labels->ndim != 1
            || ds->labels->dims[0] != ds->rows))
        return ss_err_set(err, SS_EINVAL, "%s data: labels must be int64 "
                          "[%lld]", what, (long long)ds->rows);
    return 0;
}

static size_t
row_bytes(const ss_tensor_t *t)
{
    size_t n = ss_dtype_size(t->dtype);
    int d;

    for (d = 1; d < t->ndim; d++)
        n *= (size_t)t->dims[d];
    return n;
}

void
ss__dataset_slice(const ss_dataset_t *ds, int64_t r0, int64_t n,
                  ss_tensor_t *views)
{
    int i;

    for (i = 0; i < ds->n_inputs; i++) {
        views[i] = ds->inputs[i];
        views[i].dims[0] = n;
        views[i].data = (char *)ds->inputs[i].data
                        + (size_t)r0 * row_bytes(&ds->inputs[i]);
    }
}

void
ss__outputs_clear(ss__outputs_t *o)
{
    int k;

    if (o == NULL)
        return;
    for (k = 0; k < o->n && o->data != NULL; k++)
        ss_free(o->data[k]);
    ss_free(o->data);
    ss_free(o->row_elems);
    memset(o, 0, sizeof(*o));
}

static float
as_f32(const ss_tensor_t *t, int64_t i)
{
    switch (t->dtype) {
    case SS_DTYPE_F32: return ((const float *)t->data)[i];
    case SS_DTYPE_I64: return (float)((const int64_t *)t->data)[i];
    case SS_DTYPE_I32: return (float)((const int32_t *)t->data)[i];
    case SS_DTYPE_U8: return (float)((const uint8_t *)t->data)[i];
    case SS_DTYPE_I8: return (float)((const int8_t *)t->data)[i];
    default: return 0.0f;
    }
}

int
ss__collect(ss__runner_t *r, const ss_dataset_t *ds, atomic_int *cancel,
            ss__outputs_t *out, ss_err_t *err)
{
    const ss_graph_t *g = r->g;
    ss_tensor_t *views = NULL;
    int64_t r0, n, e, i;
    int k, rc = 0;

    memset(out, 0, sizeof(*out));
    out->n = g->n_outputs;
    out->rows = ds->rows;
    if ((views = ss_calloc((size_t)ds->n_inputs + 1, sizeof(*views))) == NULL
        || (out->data = ss_calloc((size_t)out->n + 1, sizeof(float *)))
           == NULL
        || (out->row_elems = ss_calloc((size_t)out->n + 1, sizeof(int64_t)))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for outputs");
        goto done;
    }
    for (r0 = 0; r0 < ds->rows; r0 += n) {
        const ss_tensor_t *o;

        ss_pace_point();
        if (cancel != NULL && atomic_load(cancel)) {
            rc = ss_err_set(err, SS_ECANCELED, "cancelled");
            goto done;
        }
        n = ds->rows - r0 < SS__CX_CHUNK ? ds->rows - r0 : SS__CX_CHUNK;
        ss__dataset_slice(ds, r0, n, views);
        if ((rc = ss__runner_run(r, views, &o, err)) < 0)
            goto done;
        for (k = 0; k < out->n; k++) {
            int64_t numel = ss_tensor_numel(&o[k]);

            if (o[k].ndim < 1 || o[k].dims[0] != n || numel < 0) {
                rc = ss_err_set(err, SS_EUNSUPP, "output %d is not batched "
                                "along its first axis", k);
                goto done;
            }
            e = numel / n;
            if (out->data[k] == NULL) {
                size_t bytes;

                out->row_elems[k] = e;
                if (ss_mul_overflow((size_t)ds->rows, (size_t)(e ? e : 1)
                                    * sizeof(float), &bytes) < 0
                    || (out->data[k] = ss_malloc(bytes)) == NULL) {
                    rc = ss_err_set(err, SS_ENOMEM, "no memory for outputs");
                    goto done;
                }
            } else if (out->row_elems[k] != e) {
                rc = ss_err_set(err, SS_EUNSUPP, "output %d changes its row "
                                "size with the batch", k);
                goto done;
            }
            for (i = 0; i < numel; i++)
                out->data[k][r0 * e + i] = as_f32(&o[k], i);
        }
    }
done:
    ss_free(views);
    if (rc < 0)
        ss__outputs_clear(out);
    return rc;
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

double
ss__accuracy(const ss__outputs_t *o, const ss_tensor_t *labels)
{
    const int64_t *lab;
    int64_t i, e, hit = 0;

    if (labels == NULL || o->n < 1 || o->rows <= 0)
        return -1.0;
    lab = labels->data;
    e = o->row_elems[0];
    for (i = 0; i < o->rows; i++)
        hit += argmax(o->data[0] + i * e, e) == lab[i];
    return (double)hit / (double)o->rows;
}

double
ss__agreement(const ss__outputs_t *a, const ss__outputs_t *b)
{
    int64_t i, e, same = 0;

    if (a->n < 1 || b->n < 1 || a->rows != b->rows || a->rows <= 0
        || a->row_elems[0] != b->row_elems[0])
        return 0.0;
    e = a->row_elems[0];
    for (i = 0; i < a->rows; i++)
        same += argmax(a->data[0] + i * e, e) == argmax(b->data[0] + i * e, e);
    return (double)same / (double)a->rows;
}

double
ss__max_rel_error(const ss__outputs_t *a, const ss__outputs_t *b)
{
    double worst = 0.0;
    int k;

    if (a->n != b->n || a->rows != b->rows)
        return INFINITY;
    for (k = 0; k < a->n; k++) {
        int64_t i, n = a->rows * a->row_elems[k];
        double diff = 0.0, ref = 0.0;

        if (a->row_elems[k] != b->row_elems[k])
            return INFINITY;
        for (i = 0; i < n; i++) {
            double d = fabs((double)a->data[k][i] - b->data[k][i]);

            if (d > diff || isnan(d))
                diff = isnan(d) ? INFINITY : d;
            if (fabs(b->data[k][i]) > ref)
                ref = fabs(b->data[k][i]);
        }
        if (diff > 0.0) {
            double rel = ref > 0.0 ? diff / ref : INFINITY;

            if (rel > worst)
                worst = rel;
        }
    }
    return worst;
}

#define LAT_WARM_RUNS 5
#define LAT_WARM_MS 20.0
#define LAT_WARM_MAX 1000
#define LAT_MIN_MS 50.0
#define LAT_MAX_FACTOR 8

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
ss__latency(ss__runner_t *r, const ss_dataset_t *ds, int64_t batch,
            int runs, atomic_int *cancel, double *ms, ss_err_t *err)
{
    ss_tensor_t *in = NULL;
    double *t = NULL, warm0, spent;
    int64_t row;
    int i, k, n, rc = 0;

    *ms = 0.0;
    if (runs <= 0)
        runs = 20;
    if (runs > INT_MAX / LAT_MAX_FACTOR)
        runs = INT_MAX / LAT_MAX_FACTOR;
    if ((in = ss_calloc((size_t)ds->n_inputs + 1, sizeof(*in))) == NULL
        || (t = ss_calloc((size_t)runs * LAT_MAX_FACTOR, sizeof(*t)))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a latency batch");
        goto done;
    }
    for (i = 0; i < ds->n_inputs; i++) {
        size_t rb = row_bytes(&ds->inputs[i]);

        in[i] = ds->inputs[i];
        in[i].dims[0] = batch;
        if ((in[i].data = ss_aligned_alloc(rb * (size_t)batch + 1)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a latency batch");
            goto done;
        }
        for (row = 0; row < batch; row++)
            memcpy((char *)in[i].data + (size_t)row * rb,
                   (const char *)ds->inputs[i].data
                   + (size_t)(row % ds->rows) * rb, rb);
    }
    warm0 = ss_clock_mono_ms();
    for (k = 0; k < LAT_WARM_MAX
                && (k < LAT_WARM_RUNS
                    || ss_clock_mono_ms() - warm0 < LAT_WARM_MS);
         k++) {
        const ss_tensor_t *o;

        ss_pace_point();
        if (cancel != NULL && atomic_load(cancel)) {
            rc = ss_err_set(err, SS_ECANCELED, "cancelled");
            goto done;
        }
        if ((rc = ss__runner_run(r, in, &o, err)) < 0)
            goto done;
    }
    for (n = 0, spent = 0.0; n < runs * LAT_MAX_FACTOR
                             && (n < runs || spent < LAT_MIN_MS); n++) {
        const ss_tensor_t *o;
        double t0;

        ss_pace_point();
        if (cancel != NULL && atomic_load(cancel)) {
            rc = ss_err_set(err, SS_ECANCELED, "cancelled");
            goto done;
        }
        t0 = ss_clock_mono_ms();
        if ((rc = ss__runner_run(r, in, &o, err)) < 0)
            goto done;
        t[n] = ss_clock_mono_ms() - t0;
        spent += t[n];
    }
    qsort(t, (size_t)n, sizeof(*t), cmp_double);
    *ms = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2.0;
done:
    if (in != NULL)
        for (i = 0; i < ds->n_inputs; i++)
            ss_free(in[i].data);
    ss_free(in);
    ss_free(t);
    return rc;
}

bool
ss__gate_ok(const ss_gate_t *gate, double src_acc, const ss_eval_t *v,
            char *why, size_t why_len)
{
    if (why_len > 0)
        why[0] = '\0';
    if (gate == NULL)
        return true;
    if (gate->max_accuracy_drop >= 0 && src_acc >= 0) {
        double floor_acc = src_acc * (1.0 - gate->max_accuracy_drop);

        /* A hair of slack so that "no drop allowed" is not failed by
         * rounding in the ratio. */
        if (v->accuracy < floor_acc - 1e-12) {
            snprintf(why, why_len, "accuracy %.4f below %.4f (source %.4f, "
                     "max drop %.2f%%)", v->accuracy, floor_acc, src_acc,
                     100.0 * gate->max_accuracy_drop);
            return false;
        }
    }
    if (gate->min_agreement >= 0 && v->agreement < gate->min_agreement) {
        snprintf(why, why_len, "agreement %.4f below %.4f", v->agreement,
                 gate->min_agreement);
        return false;
    }
    if (gate->max_relative_error >= 0
        && !(v->max_relative_error <= gate->max_relative_error)) {
        snprintf(why, why_len, "relative error %.4g above %.4g",
                 v->max_relative_error, gate->max_relative_error);
        return false;
    }
    return true;
}

int
ss_compress_evaluate(const ss_graph_t *g, const ss_dataset_t *val,
                     const ss_graph_t *ref, const ss_compress_ctl_t *ctl,
                     ss_eval_t *out, ss_err_t *err)
{
    ss__runner_t r = {0}, rr = {0};
    ss__outputs_t o = {0}, ro = {0};
    atomic_int *cancel = ctl != NULL ? ctl->cancel : NULL;
    int threads = ctl != NULL ? ctl->threads : 0;
    int runs = ctl != NULL ? ctl->latency_runs : 0;
    int rc;

    memset(out, 0, sizeof(*out));
    out->accuracy = -1.0;
    out->agreement = 1.0;
    if ((rc = ss__dataset_check(g, val, "validation", err)) < 0
        || (rc = ss__runner_init(&r, g, threads, err)) < 0
        || (rc = ss__collect(&r, val, cancel, &o, err)) < 0)
        goto done;
    out->accuracy = ss__accuracy(&o, val->labels);
    if (ref != NULL) {
        if ((rc = ss__runner_init(&rr, ref, threads, err)) < 0
            || (rc = ss__collect(&rr, val, cancel, &ro, err)) < 0)
            goto done;
        out->agreement = ss__agreement(&o, &ro);
        out->max_relative_error = ss__max_rel_error(&o, &ro);
    }
    if ((rc = ss__latency(&r, val, 1, runs, cancel, &out->latency_ms_b1,
                          err)) < 0
        || (rc = ss__latency(&r, val, 32, runs, cancel, &out->latency_ms_b32,
                             err)) < 0)
        goto done;
    out->weight_bytes = ss_graph_weight_bytes(g);
done:
    ss__outputs_clear(&o);
    ss__outputs_clear(&ro);
    ss__runner_close(&r);
    ss__runner_close(&rr);
    return rc;
}
