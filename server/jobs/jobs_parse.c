/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parsing a compress request (the loop thread half of a job).
 *
 * Every field is checked before a job exists, so a bad body is SS_EINVAL
 * and leaves nothing behind: method names and parameters, data sources
 * (a file must be a plain name inside the model's folder; it is read by
 * the job thread), the gate.  Nothing here touches a file.
 *
 * THREADS: [loop].
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/kserve.h"

static int
get_fraction(json_t *v, const char *what, bool open_zero, double *out,
             ss_err_t *err)
{
    double x;

    if (!json_is_number(v))
        return ss_err_set(err, SS_EINVAL, "%s must be a number", what);
    x = json_number_value(v);
    if (!(x >= 0 && x <= 1) || (open_zero && x == 0))
        return ss_err_set(err, SS_EINVAL, "%s must be in %s0..1], not %g",
                          what, open_zero ? "(" : "[", x);
    *out = x;
    return 0;
}

/* A JSON scalar as the parameter table takes it (type 0: neither). */
static ss_param_value_t
value_of(json_t *v)
{
    ss_param_value_t val = { 0 };

    if (json_is_number(v)) {
        val.type = SS_PARAM_NUMBER;
        val.number = json_number_value(v);
    } else if (json_is_boolean(v)) {
        val.type = SS_PARAM_BOOL;
        val.boolean = json_is_true(v);
    } else if (json_is_string(v)) {
        val.type = SS_PARAM_CHOICE;
        val.text = json_string_value(v);
    }
    return val;
}

/* An object parameter ("optimizer": {...}, "student": {...}): each key
 * through the table's row. */
static int
parse_object(ss_method_t *m, const ss_method_param_t *p, json_t *obj,
             ss_err_t *err)
{
    const char *key;
    json_t *v;
    int rc;

    if (!json_is_object(obj))
        return ss_err_set(err, SS_EINVAL, "%s: %s must be an object",
                          ss_method_name(m->kind), p->name);
    json_object_foreach(obj, key, v) {
        ss_param_value_t val = value_of(v);

        if ((rc = ss_method_param_set_key(m, p, key, &val, err)) < 0)
            return rc;
    }
    return 0;
}

/* Parameters by the table compress/ owns (compress.h): names, types,
 * bounds and defaults are declared there once. */
static int
parse_params(ss_method_t *m, json_t *params, ss_err_t *err)
{
    const char *key;
    json_t *v;
    int rc;

    if (params == NULL)
        return 0;
    if (!json_is_object(params))
        return ss_err_set(err, SS_EINVAL, "%s: params must be an object",
                          ss_method_name(m->kind));
    json_object_foreach(params, key, v) {
        const ss_method_param_t *p = ss_method_param_find(m->kind, key);
        ss_param_value_t val = { 0 };

        if (p == NULL)
            return ss_err_set(err, SS_EINVAL, "%s: unknown parameter '%s'",
                              ss_method_name(m->kind), key);
        if (p->type == SS_PARAM_OBJECT) {
            if ((rc = parse_object(m, p, v, err)) < 0)
                return rc;
            continue;
        }
        val = value_of(v);
        if ((rc = ss_method_param_set(m, p, &val, err)) < 0)
            return rc;
    }
    return 0;
}

static int
parse_method(json_t *v, ss_method_t *m, ss_err_t *err)
{
    static const ss_method_kind_t kinds[] = { SS_METHOD_PTQ, SS_METHOD_BF16,
                                              SS_METHOD_PRUNE,
                                              SS_METHOD_LOWRANK,
                                              SS_METHOD_FINETUNE,
                                              SS_METHOD_DISTILL,
                                              SS_METHOD_QAT };
    json_t *params = NULL;
    const char *name;
    size_t i;
    int rc;

    if (json_is_object(v)) {
        const char *key;
        json_t *x;

        json_object_foreach(v, key, x) {
            if (strcmp(key, "method") != 0 && strcmp(key, "params") != 0)
                return ss_err_set(err, SS_EINVAL, "a method object has "
                                  "\"method\" and \"params\", not '%s'",
                                  key);
        }
        params = json_object_get(v, "params");
        v = json_object_get(v, "method");
    }
    if ((name = json_string_value(v)) == NULL)
        return ss_err_set(err, SS_EINVAL, "a method is a name or "
                          "{\"method\": name, \"params\": {...}}");
    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(name, ss_method_name(kinds[i])) == 0) {
            ss_method_default(m, kinds[i]);
            if ((rc = parse_params(m, params, err)) < 0)
                return rc;
            /* What the rows cannot say alone (distill needs a student,
             * bf16 training on this CPU), also for a bare name. */
            return ss_method_check_params(m, err);
        }
    }
    return ss_err_set(err, SS_EINVAL, "unknown method '%s' (ptq, bf16, "
                      "prune, lowrank, finetune, distill, qat)", name);
}

static int
parse_labels(json_t *arr, ss__job_data_t *d, ss_err_t *err)
{
    int64_t *p;
    size_t i, n;

    if (!json_is_array(arr))
        return ss_err_set(err, SS_EINVAL, "labels must be an array of "
                          "integers");
    n = json_array_size(arr);
    if (n == 0 || n > (1u << 24))
        return ss_err_set(err, SS_EINVAL, "labels: 1..%u values", 1u << 24);
    if ((p = ss_aligned_alloc(n * sizeof(*p))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    for (i = 0; i < n; i++) {
        json_t *x = json_array_get(arr, i);

        if (!json_is_integer(x)) {
            ss_free(p);
            return ss_err_set(err, SS_EINVAL, "labels[%zu] is not an "
                              "integer", i);
        }
        p[i] = json_integer_value(x);
    }
    d->labels.dtype = SS_DTYPE_I64;
    d->labels.ndim = 1;
    d->labels.dims[0] = (int64_t)n;
    d->labels.data = p;
    d->has_labels = true;
    return 0;
}

/* Inline tensors go through the KServe decoder, so they accept exactly
 * what an inference request accepts. */
static int
parse_inline(json_t *obj, const ss_version_t *v, ss__job_data_t *d,
             ss_err_t *err)
{
    static const ss_kserve_limits_t lim = { 64, (size_t)1 << 30 };
    ss_kserve_request_t *kr = NULL;
    json_t *wrap = NULL;
    char *text = NULL;
    const char *key;
    json_t *x;
    int rc;

    json_object_foreach(obj, key, x) {
        if (strcmp(key, "inputs") != 0 && strcmp(key, "labels") != 0)
            return ss_err_set(err, SS_EINVAL, "data: unknown key '%s'", key);
    }
    wrap = json_pack("{s:O}", "inputs", json_object_get(obj, "inputs"));
    if (wrap == NULL || (text = json_dumps(wrap, JSON_COMPACT)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = ss_kserve_decode(text, strlen(text), -1, &lim, &kr, err)) < 0)
        goto done;
    if ((rc = ss__jobs_bind_inputs(v->graph, kr, d, err)) < 0)
        goto done;
    if (json_object_get(obj, "labels") != NULL &&
        (rc = parse_labels(json_object_get(obj, "labels"), d, err)) < 0)
        goto done;
    d->kind = SS__JOB_DATA_INLINE;
done:
    ss_kserve_request_free(kr);
    free(text);
    json_decref(wrap);
    return rc;
}

static int
parse_data(ss__job_t *j, json_t *v, const char *what, const ss_version_t *ver,
           ss__job_data_t *d, ss_err_t *err)
{
    const char *file;
    int rc;

    if (v == NULL)
        return 0;
    if (json_is_string(v) && strcmp(json_string_value(v), "traffic") == 0) {
        if (ss_model_sampler(ver->model) == NULL)
            return ss_err_set(err, SS_EINVAL, "%s: \"traffic\" needs "
                              "traffic sampling in the model's config.json "
                              "(\"sampling\": {\"capacity\": N})", what);
        d->kind = SS__JOB_DATA_TRAFFIC;
        return 0;
    }
    if (!json_is_object(v))
        return ss_err_set(err, SS_EINVAL, "%s must be {\"file\": name}, "
                          "{\"inputs\": [...]} or \"traffic\"", what);
    if ((file = json_string_value(json_object_get(v, "file"))) != NULL) {
        size_t n = strlen(file);

        if (json_object_size(v) != 1)
            return ss_err_set(err, SS_EINVAL, "%s: a file source has only "
                              "\"file\"", what);
        /* A plain name: never a path out of the model's folder. */
        if (n == 0 || n >= sizeof(d->file) || strchr(file, '/') != NULL ||
            strchr(file, '\\') != NULL || file[0] == '.' ||
            (n < 5 || (strcmp(file + n - 4, ".npz") != 0 &&
                       strcmp(file + n - 4, ".npy") != 0)))
            return ss_err_set(err, SS_EINVAL, "%s: file must be the name of "
                              "an .npz or .npy file in the model's folder, "
                              "not '%s'", what, file);
        /* Read by the job thread when the job runs: a file may be large
         * or not a file at all, and the loop never waits for a disk. */
        snprintf(d->file, sizeof(d->file), "%s", file);
        d->kind = SS__JOB_DATA_FILE;
        return 0;
    }
    if (json_object_get(v, "inputs") != NULL) {
        if ((rc = parse_inline(v, ver, d, err)) < 0)
            return ss_err_wrap(err, rc, "%s", what);
        return 0;
    }
    return ss_err_set(err, SS_EINVAL, "%s must be {\"file\": name}, "
                      "{\"inputs\": [...]} or \"traffic\"", what);
}

static int
parse_gate(json_t *v, ss_gate_t *g, ss_err_t *err)
{
    const char *key;
    json_t *x;
    int rc;

    g->max_accuracy_drop = g->min_agreement = g->max_relative_error = -1;
    if (v == NULL)
        return 0;
    if (!json_is_object(v) || json_object_size(v) == 0)
        return ss_err_set(err, SS_EINVAL, "gate must be an object with "
                          "max_accuracy_drop, min_agreement or "
                          "max_relative_error");
    json_object_foreach(v, key, x) {
        double *slot;

        if (strcmp(key, "max_accuracy_drop") == 0)
            slot = &g->max_accuracy_drop;
        else if (strcmp(key, "min_agreement") == 0)
            slot = &g->min_agreement;
        else if (strcmp(key, "max_relative_error") == 0)
            slot = &g->max_relative_error;
        else
            return ss_err_set(err, SS_EINVAL, "gate: unknown key '%s'", key);
        if (strcmp(key, "max_relative_error") == 0) {
            if (!json_is_number(x) || !(json_number_value(x) >= 0) ||
                !isfinite(json_number_value(x)))
                return ss_err_set(err, SS_EINVAL, "gate: %s must be a "
                                  "number >= 0", key);
            *slot = json_number_value(x);
        } else if ((rc = get_fraction(x, key, false, slot, err)) < 0) {
            return rc;
        }
    }
    return 0;
}

int
ss__jobs_parse(ss__job_t *j, json_t *root, ss_err_t *err)
{
    static const char *const known[] = { "source_version", "methods",
                                         "calibration", "validation",
                                         "training", "gate", "activate" };
    const char *key;
    json_t *v, *methods;
    size_t i, k;
    int rc;

    json_object_foreach(root, key, v) {
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(key, known[k]) == 0)
                break;
        if (k == sizeof(known) / sizeof(known[0]))
            return ss_err_set(err, SS_EINVAL, "unknown key '%s'", key);
    }
    methods = json_object_get(root, "methods");
    if (json_is_string(methods) || json_is_object(methods)) {
        if ((rc = parse_method(methods, &j->methods[0], err)) < 0)
            return rc;
        j->n_methods = 1;
    } else if (json_is_array(methods) && json_array_size(methods) > 0 &&
               json_array_size(methods) <= SS_JOB_MAX_METHODS) {
        json_array_foreach(methods, i, v) {
            if ((rc = parse_method(v, &j->methods[i], err)) < 0)
                return ss_err_wrap(err, rc, "methods[%zu]", i);
        }
        j->n_methods = (int)json_array_size(methods);
    } else {
        return ss_err_set(err, SS_EINVAL, "methods must be a method or a "
                          "list of 1..%d methods", SS_JOB_MAX_METHODS);
    }
    v = json_object_get(root, "activate");
    if (v != NULL && !json_is_boolean(v))
        return ss_err_set(err, SS_EINVAL, "activate must be true or false");
    j->activate = json_is_true(v);
    if ((rc = parse_gate(json_object_get(root, "gate"), &j->gate, err)) < 0)
        return rc;
    if ((rc = parse_data(j, json_object_get(root, "calibration"),
                         "calibration", j->src, &j->calib, err)) < 0)
        return rc;
    if ((rc = parse_data(j, json_object_get(root, "validation"),
                         "validation", j->src, &j->val, err)) < 0)
        return rc;
    if ((rc = parse_data(j, json_object_get(root, "training"), "training",
                         j->src, &j->train, err)) < 0)
        return rc;
    /* Defaults: calibration from the traffic ring when the model samples;
     * validation from the calibration data. */
    if (j->calib.kind == SS__JOB_DATA_NONE && ss_model_sampler(j->src->model))
        j->calib.kind = SS__JOB_DATA_TRAFFIC;
    if (j->val.kind == SS__JOB_DATA_NONE && j->calib.kind == SS__JOB_DATA_NONE)
        return ss_err_set(err, SS_EINVAL, "validation data is required "
                          "(\"validation\": {\"file\": \"val.npz\"}, inline "
                          "inputs, or \"traffic\" with sampling on)");
    for (i = 0; i < (size_t)j->n_methods; i++) {
        const ss_method_t *m = &j->methods[i];

        if (j->calib.kind == SS__JOB_DATA_NONE &&
            (m->kind == SS_METHOD_PTQ || m->kind == SS_METHOD_QAT ||
             (m->kind == SS_METHOD_PRUNE &&
              m->u.prune.score == SS_SCORE_ACTIVATION)))
            return ss_err_set(err, SS_EINVAL, "%s needs calibration data",
                              ss_method_name(m->kind));
        /* Training data: "training", else the traffic ring when the model
         * samples, else the calibration data (the job uses it). */
        if (SS_METHOD_TRAINS(m->kind) && j->train.kind == SS__JOB_DATA_NONE) {
            if (ss_model_sampler(j->src->model) != NULL)
                j->train.kind = SS__JOB_DATA_TRAFFIC;
            else if (j->calib.kind == SS__JOB_DATA_NONE)
                return ss_err_set(err, SS_EINVAL, "%s needs training data "
                                  "(\"training\": {\"file\": "
                                  "\"train.npz\"}, inline inputs, or "
                                  "\"traffic\" with sampling on)",
                                  ss_method_name(m->kind));
        }
    }
    return 0;
}
