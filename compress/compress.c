/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_compress_run(): the pipeline around the methods.
 *
 * DESIGN: parameters are checked before any work (SS_EINVAL names the
 * method and the parameter).  The source is evaluated first, because its
 * outputs over the validation set are what every later measurement is
 * compared with (PTQ's fallback needs them mid-pipeline).  The methods
 * then run in order on one private clone, each replacing it by its
 * result; cancellation is checked between steps and inside the long
 * ones.  Last the variant is evaluated like the source and the gate
 * decides.  Progress: 0-10% source, 10-85% methods (evenly), 85-100%
 * variant.
 *
 * THREADS: see compress.h; everything here runs on the caller's thread.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pace.h"
#include "compress/internal.h"

const char *
ss_method_name(ss_method_kind_t kind)
{
    switch (kind) {
    case SS_METHOD_PTQ: return "ptq";
    case SS_METHOD_BF16: return "bf16";
    case SS_METHOD_PRUNE: return "prune";
    case SS_METHOD_LOWRANK: return "lowrank";
    case SS_METHOD_FINETUNE: return "finetune";
    case SS_METHOD_DISTILL: return "distill";
    case SS_METHOD_QAT: return "qat";
    case SS_METHOD_MOEFY: return "moefy";
    case SS_METHOD_LORA: return "lora";
    }
    return NULL;
}

int
ss__cx_cancelled(const ss__cx_t *cx)
{
    /* Where a method can stop, it can also wait for serving. */
    ss_pace_point();
    return cx->ctl->cancel != NULL && atomic_load(cx->ctl->cancel)
           ? SS_ECANCELED : 0;
}

void
ss__cx_progress(const ss__cx_t *cx, double f, const char *step)
{
    if (cx->ctl->progress != NULL)
        cx->ctl->progress(cx->ctl->arg, cx->p0 + f * (cx->p1 - cx->p0),
                          step);
}

/* The parameters against the table (params.c), then the rules between
 * them and the data. */
static int
check_method(const ss_method_t *m, int i, bool have_calib, bool have_train,
             const ss_method_t *methods, ss_err_t *err)
{
    int rc;

    if (ss_method_name(m->kind) == NULL)
        return ss_err_set(err, SS_EINVAL, "method %d: unknown method %d", i,
                          (int)m->kind);
    if ((rc = ss_method_check_params(m, err)) < 0)
        return rc;
    switch (m->kind) {
    case SS_METHOD_PTQ:
    case SS_METHOD_MOEFY:
        if (!have_calib)
            return ss_err_set(err, SS_EINVAL, "%s needs calibration data",
                              ss_method_name(m->kind));
        break;
    case SS_METHOD_PRUNE:
        if (m->u.prune.kind == SS_PRUNE_STRUCTURED
            && m->u.prune.score == SS_SCORE_ACTIVATION && !have_calib)
            return ss_err_set(err, SS_EINVAL, "prune: activation scores "
                              "need calibration data");
        break;
    case SS_METHOD_LOWRANK:
        if (m->u.lowrank.energy == 0.0 && m->u.lowrank.ratio == 0.0)
            return ss_err_set(err, SS_EINVAL, "lowrank: give an energy in "
                              "(0, 1] or a ratio in (0, 1]");
        break;
    case SS_METHOD_BF16:
        break;
    case SS_METHOD_FINETUNE:
    case SS_METHOD_DISTILL:
    case SS_METHOD_QAT:
    case SS_METHOD_LORA:
        if (!have_train)
            return ss_err_set(err, SS_EINVAL, "%s needs training data",
                              ss_method_name(m->kind));
        if (m->kind == SS_METHOD_QAT && !have_calib)
            return ss_err_set(err, SS_EINVAL, "qat needs calibration data "
                              "(its activation scales)");
        if (m->kind == SS_METHOD_DISTILL && m->u.train.student_file[0]
            && m->u.train.student == NULL)
            return ss_err_set(err, SS_EINVAL, "distill: the student %s was "
                              "not loaded", m->u.train.student_file);
        break;
    }
    return ss_method_check_order(methods, i + 1, err);
}

int
ss_method_check_order(const ss_method_t *methods, int n, ss_err_t *err)
{
    int i, k;

    /* The trainer trains f32 weights: after int8 there are none, and a
     * bf16 mark would be trained through in f32. */
    for (i = 0; i < n; i++)
        for (k = 0; SS_METHOD_TRAINS(methods[i].kind) && k < i; k++)
            if (methods[k].kind == SS_METHOD_PTQ
                || methods[k].kind == SS_METHOD_QAT
                || methods[k].kind == SS_METHOD_BF16)
                return ss_err_set(err, SS_EINVAL, "%s cannot follow %s: "
                                  "put it before",
                                  ss_method_name(methods[i].kind),
                                  ss_method_name(methods[k].kind));
    /* An adapter is trained on, and applies to, the served model itself:
     * nothing may change the model before it; one that writes an adapter
     * (no merge) is the whole pipeline. */
    for (i = 0; i < n; i++)
        if (methods[i].kind == SS_METHOD_LORA
            && (i > 0 || (!methods[i].u.train.merge && n > 1)))
            return ss_err_set(err, SS_EINVAL, "lora must be the first "
                              "method%s", methods[i].u.train.merge ? ""
                              : ", and the only one when it writes an "
                                "adapter (\"merge\": false)");
    return 0;
}

static int
check_gate(const ss_gate_t *gate, const ss_dataset_t *val, ss_err_t *err)
{
    if (gate == NULL)
        return 0;
    if (isnan(gate->max_accuracy_drop) || isnan(gate->min_agreement)
        || isnan(gate->max_relative_error) || gate->max_accuracy_drop > 1.0
        || gate->min_agreement > 1.0)
        return ss_err_set(err, SS_EINVAL, "gate: a bound is out of range");
    if (gate->max_accuracy_drop >= 0.0 && val->labels == NULL)
        return ss_err_set(err, SS_EINVAL, "gate: max_accuracy_drop needs "
                          "labels in the validation data");
    return 0;
}

/* Source (ref NULL) or variant measurements; o gets the outputs. */
static int
measure(const ss__cx_t *cx, const char *what, const ss_graph_t *g,
        const ss_dataset_t *val, const ss__outputs_t *ref,
        const ss_compress_ctl_t *ctl, ss__outputs_t *o, ss_eval_t *ev,
        ss_err_t *err)
{
    ss__runner_t r = {0};
    char step[64];
    int rc;

    memset(ev, 0, sizeof(*ev));
    ev->agreement = 1.0;
    if ((rc = ss__runner_init(&r, g, ctl->threads, err)) < 0
        || (rc = ss__collect(&r, val, ctl->cancel, o, err)) < 0)
        goto done;
    ev->accuracy = ss__accuracy(o, val->labels);
    if (ref != NULL) {
        ev->agreement = ss__agreement(o, ref);
        ev->max_relative_error = ss__max_rel_error(o, ref);
    }
    snprintf(step, sizeof(step), "%s: timing batches 1 and 32", what);
    ss__cx_progress(cx, 0.5, step);
    if ((rc = ss__latency(&r, val, 1, ctl->latency_runs, ctl->cancel,
                          &ev->latency_ms_b1, err)) < 0
        || (rc = ss__latency(&r, val, 32, ctl->latency_runs, ctl->cancel,
                             &ev->latency_ms_b32, err)) < 0)
        goto done;
    ev->weight_bytes = ss_graph_weight_bytes(g);
done:
    ss__runner_close(&r);
    return rc;
}

/* A finite number, or null. */
static json_t *
number(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

json_t *
ss_eval_json(const ss_eval_t *e)
{
    return json_pack("{s:o, s:o, s:o, s:{s:o, s:o}, s:I}",
                     "accuracy", e->accuracy >= 0 ? number(e->accuracy)
                                                  : json_null(),
                     "agreement", number(e->agreement),
                     "max_relative_error", number(e->max_relative_error),
                     "latency_ms", "batch1", number(e->latency_ms_b1),
                     "batch32", number(e->latency_ms_b32),
                     "weight_bytes", (json_int_t)e->weight_bytes);
}

/* A gate bound, or null when unset (< 0). */
static json_t *
bound(double x)
{
    return x >= 0 ? number(x) : json_null();
}

json_t *
ss_compress_result_json(const ss_compress_result_t *res,
                        const ss_gate_t *gate)
{
    static const ss_gate_t none = { -1, -1, -1 };
    json_t *g;

    if (gate == NULL)
        gate = &none;
    g = json_pack("{s:b, s:o, s:o, s:o}", "passed", res->passed,
                  "max_accuracy_drop", bound(gate->max_accuracy_drop),
                  "min_agreement", bound(gate->min_agreement),
                  "max_relative_error", bound(gate->max_relative_error));
    if (g != NULL && !res->passed && res->gate_reason[0] != '\0'
        && json_object_set_new(g, "reason",
                               json_string(res->gate_reason)) < 0) {
        json_decref(g);
        g = NULL;
    }
    return json_pack("{s:o, s:o, s:o, s:O}",
                     "source", ss_eval_json(&res->source),
                     "variant", ss_eval_json(&res->variant_eval),
                     "gate", g,
                     "details", res->details ? res->details : json_null());
}

/* Whether g has a layer the bf16 plan (engine/plan/plan_bf16.c) can take:
 * a MatMul or Gemm, or a 2-D or 3-D Conv -- a 1-D conv has no bf16
 * kernel there and stays float32, so a net of only those would be
 * written again unchanged. */
static bool
bf16_layers(const ss_graph_t *g)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        const ss_tensor_t *w;

        if (strcmp(n->op_type, "MatMul") == 0
            || strcmp(n->op_type, "Gemm") == 0)
            return true;
        if (strcmp(n->op_type, "Conv") != 0 || n->n_inputs < 2
            || n->inputs[1] < 0)
            continue;
        w = g->values[n->inputs[1]].constant;
        if (w == NULL || w->ndim == 4 || w->ndim == 5)
            return true;
    }
    return false;
}

int
ss_compress_run(const ss_graph_t *src, const ss_method_t *methods,
                int n_methods, const ss_dataset_t *calib,
                const ss_dataset_t *val, const ss_gate_t *gate,
                const ss_compress_ctl_t *ctl_in, ss_compress_result_t *res,
                ss_err_t *err)
{
    ss_compress_ctl_t ctl = { 0 };
    ss__outputs_t src_out = {0}, var_out = {0};
    ss__cx_t cx;
    ss_graph_t *g = NULL;
    json_t *notes = NULL;
    int i, n_untied, rc = 0;

    memset(res, 0, sizeof(*res));
    if (ctl_in != NULL)
        ctl = *ctl_in;
    memset(&cx, 0, sizeof(cx));
    cx.ctl = &ctl;
    if ((res->details = json_object()) == NULL
        || (notes = json_array()) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
        goto done;
    }
    if (n_methods < 1 || n_methods > 16 || methods == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "give 1 to 16 methods, not %d",
                        n_methods);
        goto done;
    }
    if (val == NULL || val->rows <= 0) {
        rc = ss_err_set(err, SS_EINVAL, "validation data is required");
        goto done;
    }
    for (i = 0; i < n_methods; i++)
        if ((rc = check_method(&methods[i], i,
                               calib != NULL && calib->rows > 0,
                               ctl.train != NULL && ctl.train->rows > 0,
                               methods, err)) < 0)
            goto done;
    if ((rc = check_gate(gate, val, err)) < 0
        || (rc = ss__dataset_check(src, val, "validation", err)) < 0
        || (calib != NULL
            && (rc = ss__dataset_check(src, calib, "calibration", err)) < 0)
        || (ctl.train != NULL
            && (rc = ss__dataset_check(src, ctl.train, "training", err)) < 0))
        goto done;

    cx.src = src;
    cx.train = ctl.train;
    cx.calib = calib;
    cx.val = val;
    cx.gate = gate;
    cx.src_out = &src_out;
    cx.p1 = 0.1;
    ss__cx_progress(&cx, 0.0, "evaluating the source");
    if ((rc = measure(&cx, "evaluating the source", src, val, NULL, &ctl,
                      &src_out, &res->source, err)) < 0)
        goto done;
    cx.src_acc = res->source.accuracy;
    if ((rc = ss_graph_clone(src, &g, err)) < 0
        || (rc = ss__untie_consts(g, &n_untied, err)) < 0)
        goto done;
    for (i = 0; i < n_methods; i++) {
        const ss_method_t *m = &methods[i];
        json_t *note = json_pack("{s:s}", "method", ss_method_name(m->kind));

        if (note == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for details");
            goto done;
        }
        json_array_append_new(notes, note);
        if ((rc = ss__cx_cancelled(&cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        cx.p0 = 0.1 + 0.75 * i / n_methods;
        cx.p1 = 0.1 + 0.75 * (i + 1) / n_methods;
        switch (m->kind) {
        case SS_METHOD_PTQ:
            rc = ss__ptq(&cx, m, &g, note, err);
            break;
        case SS_METHOD_PRUNE:
            rc = ss__prune(&cx, m, &g, note, err);
            break;
        case SS_METHOD_LOWRANK:
            rc = ss__lowrank(&cx, m, &g, note, err);
            break;
        case SS_METHOD_BF16:
            ss__cx_progress(&cx, 0.0, "bf16: marking the graph");
            rc = ss_graph_set_meta(g, "slimserve.precision", "bf16", err);
            json_object_set_new(note, "note", json_string(
                "f32 file with metadata slimserve.precision=bf16: the "
                "engine runs weights and compute in bf16"));
            if (!bf16_layers(g)) {
                json_object_set_new(note, "changed", json_false());
                json_object_set_new(note, "reason", json_string(
                    "no MatMul, Gemm or 2-D/3-D Conv: the engine's bf16 "
                    "kernels run only those (1-D convs stay float32)"));
            }
            break;
        case SS_METHOD_FINETUNE:
            rc = ss__finetune(&cx, m, &g, note, err);
            break;
        case SS_METHOD_DISTILL:
            rc = ss__distill(&cx, m, &g, note, err);
            break;
        case SS_METHOD_QAT:
            rc = ss__qat(&cx, m, &g, note, err);
            break;
        case SS_METHOD_MOEFY:
            rc = ss__moefy(&cx, m, &g, note, err);
            break;
        case SS_METHOD_LORA:
            rc = ss__lora(&cx, m, &g, note, err);
            break;
        }
        if (rc < 0)
            goto done;
        if (json_is_false(json_object_get(note, "changed"))) {
            /* Never an identical version: the job ends rejected, with
             * the method's reason. */
            const char *why = json_string_value(json_object_get(note,
                                                                "reason"));

            if (why == NULL)
                why = json_string_value(json_object_get(note, "note"));

            snprintf(res->gate_reason, sizeof(res->gate_reason),
                     "%s changed nothing: %s", ss_method_name(m->kind),
                     why != NULL ? why : "no layer qualified");
            res->unchanged = true;
            res->passed = false;
            res->variant_eval = res->source;
            json_object_set_new(res->details, "methods", notes);
            notes = NULL;
            res->variant = g;
            g = NULL;
            goto done;
        }
    }
    if ((rc = ss__cx_cancelled(&cx)) < 0) {
        ss_err_set(err, rc, "cancelled");
        goto done;
    }
    cx.p0 = 0.85;
    cx.p1 = 1.0;
    ss__cx_progress(&cx, 0.0, "evaluating the variant");
    if ((rc = measure(&cx, "evaluating the variant", g, val, &src_out,
                      &ctl, &var_out, &res->variant_eval, err)) < 0)
        goto done;
    res->passed = ss__gate_ok(gate, res->source.accuracy, &res->variant_eval,
                              res->gate_reason, sizeof(res->gate_reason));
    if (res->passed)
        res->gate_reason[0] = '\0';
    json_object_set_new(res->details, "methods", notes);
    notes = NULL;
    ss__cx_progress(&cx, 1.0, "done");
    res->variant = g;
    g = NULL;
    res->adapter = cx.adapter;
    cx.adapter = NULL;
done:
    ss_lora_adapter_free(cx.adapter);
    if (rc < 0 && res->details != NULL && notes != NULL) {
        json_object_set_new(res->details, "methods", notes);
        notes = NULL;
    }
    json_decref(notes);
    ss_graph_free(g);
    ss__outputs_clear(&src_out);
    ss__outputs_clear(&var_out);
    return rc;
}

void
ss_compress_result_clear(ss_compress_result_t *res)
{
    if (res == NULL)
        return;
    ss_graph_free(res->variant);
    ss_lora_adapter_free(res->adapter);
    json_decref(res->details);
    memset(res, 0, sizeof(*res));
}
