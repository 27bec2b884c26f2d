/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Calibration for int8 quantization (quant.c): the f32 graph cloned with
 * every quantized layer's activation input as an extra output, run over
 * the calibration set.  Pass 0 takes min/max per tensor; "percentile"
 * adds a pass filling a histogram of |x| (HIST_BINS bins up to the max)
 * and clips at the asked percentile; "mse" adds a pass that scores clips
 * by the error of the layers reading the tensor (calib_mse.c).
 *
 * minmax, the default, needs no tensor whole: its graph's extra outputs
 * are ReduceMin and ReduceMax of each activation (scalars).  A graph
 * output is NCHW bytes, which kept every conv of a CNN's calibration
 * graph on oneDNN's gemm fallback over NCHW copies, 3.5-5x a forward per
 * row (resnet18 at 224x224, batch 8, 1 thread: 490-690 ms CPU against
 * 137); a reduction is one more reader, and its value is reordered for
 * it while the convs keep their layouts.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>

#include "common/alloc.h"
#include "compress/quant_int.h"

/* Activation k's clip search (calib_mse.c), t its first output. */
static int
mse_start(qstate_t *s, int k, const ss_tensor_t *t, ss_err_t *err)
{
    const ss__layer_t *readers[64];
    qact_t *a = &s->acts[k];
    int n = 0;

    for (int i = 0; i < s->n_layers && n < 64; i++)
        if (s->layers[i].act == k)
            readers[n++] = &s->layers[i].l;
    return ss__mse_new(s->g, readers, n, t, a->absmax, a->lo >= 0.0f,
                       a->total, &a->mse, err);
}

/* One pass over the calibration set: min/max (pass 0), histogram (1),
 * the clip search (2), or min/max from the graph's ReduceMin/ReduceMax
 * outputs (3, add_minmax). */
static int
calib_pass(qstate_t *s, ss__runner_t *r, int pass, ss_err_t *err)
{
    const ss_dataset_t *ds = s->cx->calib;
    int base = s->g->n_outputs, k, rc = 0;
    ss_tensor_t *views = NULL;
    int64_t r0, n, i;

    if ((views = ss_calloc((size_t)ds->n_inputs + 1, sizeof(*views)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to calibrate");
    for (r0 = 0; r0 < ds->rows; r0 += n) {
        const ss_tensor_t *o;

        if ((rc = ss__cx_cancelled(s->cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        n = ds->rows - r0 < SS__CX_CHUNK ? ds->rows - r0 : SS__CX_CHUNK;
        ss__dataset_slice(ds, r0, n, views);
        if ((rc = ss__runner_run(r, views, &o, err)) < 0)
            goto done;
        for (k = 0; k < s->n_acts; k++) {
            const ss_tensor_t *t = &o[base + (pass == 3 ? 2 * k : k)];
            const float *v = t->data;
            int64_t numel = ss_tensor_numel(t);
            qact_t *a = &s->acts[k];

            if (t->dtype != SS_DTYPE_F32) {
                rc = ss_err_set(err, SS_EUNSUPP, "layer input '%s' is not "
                                "f32", s->g->values[a->value].name);
                goto done;
            }
            if (pass == 3) {
                /* ReduceMin and ReduceMax of activation k (NaN: never
                 * finite, reported by the caller) */
                float lo = *(const float *)o[base + 2 * k].data;
                float hi = *(const float *)o[base + 2 * k + 1].data;

                a->lo = isnan(lo) || lo < a->lo ? lo : a->lo;
                a->hi = isnan(hi) || hi > a->hi ? hi : a->hi;
                continue;
            }
            if (pass == 2) {
                if (a->mse == NULL && (rc = mse_start(s, k, t, err)) < 0)
                    goto done;
                ss__mse_add(a->mse, t);
                continue;
            }
            a->total += pass == 0 ? (double)numel : 0.0;
            for (i = 0; i < numel; i++) {
                if (pass == 0) {
                    if (v[i] < a->lo)
                        a->lo = v[i];
                    if (v[i] > a->hi)
                        a->hi = v[i];
                } else if (a->absmax > 0.0f) {
                    int64_t b = (int64_t)(fabsf(v[i]) / a->absmax
                                          * HIST_BINS);

                    a->hist[b >= HIST_BINS ? HIST_BINS - 1 : b] += 1.0;
                    a->count += 1.0;
                }
            }
        }
    }
done:
    ss_free(views);
    return rc;
}

/* Makes ReduceMin(v) and ReduceMax(v) over all axes outputs of c, in
 * that order. */
static int
add_minmax(ss_graph_t *c, int v, ss_err_t *err)
{
    static const char *const ops[2] = { "ReduceMin", "ReduceMax" };
    ss_attr_t keep = { .name = "keepdims", .type = SS_ATTR_INT, .i = 0 };
    int k, y, rc;

    for (k = 0; k < 2; k++) {
        if ((y = ss_graph_add_value(c, NULL, NULL, err)) < 0)
            return y;
        if ((rc = ss_graph_add_node(c, ops[k], NULL, 1, &v, 1, &y, 1, &keep,
                                    err)) < 0
            || (rc = ss_graph_add_output(c, y, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss__quant_calibrate(qstate_t *s, ss_err_t *err)
{
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    bool minmax = s->m->u.ptq.calib == SS_CALIB_MINMAX;
    int k, rc;

    ss__cx_progress(s->cx, 0.0, "ptq: calibrating");
    if ((rc = ss_graph_clone(s->g, &c, err)) < 0)
        goto done;
    for (k = 0; k < s->n_acts; k++)
        if ((rc = minmax ? add_minmax(c, s->acts[k].value, err)
                         : ss_graph_add_output(c, s->acts[k].value, err))
            < 0)
            goto done;
    if ((rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, s->cx->ctl->threads, err)) < 0
        || (rc = calib_pass(s, &r, minmax ? 3 : 0, err)) < 0)
        goto done;
    for (k = 0; k < s->n_acts; k++) {
        qact_t *a = &s->acts[k];

        a->absmax = fmaxf(fabsf(a->lo), fabsf(a->hi));
        if (!isfinite(a->absmax)) {
            rc = ss_err_set(err, SS_EINVAL, "calibration: '%s' is not "
                            "finite", s->g->values[a->value].name);
            goto done;
        }
    }
    if (s->m->u.ptq.calib == SS_CALIB_PERCENTILE) {
        for (k = 0; k < s->n_acts; k++)
            if ((s->acts[k].hist = ss_calloc(HIST_BINS, sizeof(double)))
                == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory to calibrate");
                goto done;
            }
        if ((rc = calib_pass(s, &r, 1, err)) < 0)
            goto done;
        for (k = 0; k < s->n_acts; k++) {
            qact_t *a = &s->acts[k];
            double want = a->count * s->m->u.ptq.percentile / 100.0, acc = 0;
            int b;

            for (b = 0; b < HIST_BINS - 1; b++) {
                acc += a->hist[b];
                if (acc >= want)
                    break;
            }
            a->absmax = a->absmax * (float)(b + 1) / HIST_BINS;
        }
    } else if (s->m->u.ptq.calib == SS_CALIB_MSE) {
        if ((rc = calib_pass(s, &r, 2, err)) < 0)
            goto done;
        for (k = 0; k < s->n_acts; k++)
            if (s->acts[k].mse != NULL)
                s->acts[k].absmax = ss__mse_clip(s->acts[k].mse);
    }
    rc = 0;
done:
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}
