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

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "server/kserve/kserve.h"

static int
parse_labels(json_t *arr, ss__job_data_t *d, ss_err_t *err)
{
    int64_t *p;
    size_t i, n;

    if (!json_is_array(arr))
        return ss_err_set(err, SS_EINVAL, "labels must be an array of "
                          "integers");
    n = json_array_size(arr);
    /* One label per row, as a file's labels: a count that disagrees with
     * the inputs would be read past the end (or silently cut) later. */
    if ((int64_t)n != d->rows)
        return ss_err_set(err, SS_EINVAL, "labels: %zu values for %lld "
                          "rows", n, (long long)d->rows);
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

int
ss__jobs_parse_data(ss__job_t *j, json_t *v, const char *what,
                    ss__job_data_t *d, ss_err_t *err)
{
    const ss_version_t *ver = j->src;
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

int
ss__jobs_parse(ss__job_t *j, json_t *root, ss_err_t *err)
{
    static const char *const known[] = { "source_version", "methods",
                                         "calibration", "validation",
                                         "training", "gate", "activate",
                                         "workers" };
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
        if ((rc = ss_method_from_json(methods, &j->methods[0], err)) < 0)
            return rc;
        j->n_methods = 1;
    } else if (json_is_array(methods) && json_array_size(methods) > 0 &&
               json_array_size(methods) <= SS_JOB_MAX_METHODS) {
        json_array_foreach(methods, i, v) {
            if ((rc = ss_method_from_json(v, &j->methods[i], err)) < 0)
                return ss_err_wrap(err, rc, "methods[%zu]", i);
        }
        j->n_methods = (int)json_array_size(methods);
    } else {
        return ss_err_set(err, SS_EINVAL, "methods must be a method or a "
                          "list of 1..%d methods", SS_JOB_MAX_METHODS);
    }
    if ((rc = ss_method_check_order(j->methods, j->n_methods, err)) < 0)
        return rc;
    v = json_object_get(root, "activate");
    if (v != NULL && !json_is_boolean(v))
        return ss_err_set(err, SS_EINVAL, "activate must be true or false");
    j->activate = json_is_true(v);
    if ((rc = ss_gate_from_json(json_object_get(root, "gate"), &j->gate, err)) < 0)
        return rc;
    if ((rc = ss__jobs_parse_data(j, json_object_get(root, "calibration"),
                                  "calibration", &j->calib, err)) < 0)
        return rc;
    if ((rc = ss__jobs_parse_data(j, json_object_get(root, "validation"),
                                  "validation", &j->val, err)) < 0)
        return rc;
    if ((rc = ss__jobs_parse_data(j, json_object_get(root, "training"),
                                  "training", &j->train, err)) < 0)
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
             m->kind == SS_METHOD_MOEFY ||
             (m->kind == SS_METHOD_PRUNE &&
              m->u.prune.score == SS_SCORE_ACTIVATION)))
            return ss_err_set(err, SS_EINVAL, "%s needs calibration data",
                              ss_method_name(m->kind));
        /* The source is in memory: its blocks are known now. */
        if ((rc = ss_distill_check_layers(j->src->graph, m, err)) < 0 ||
            (rc = ss_distill_check_width(j->src->graph, m, err)) < 0)
            return ss_err_wrap(err, rc, "methods[%zu]", i);
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
    v = json_object_get(root, "workers");
    if (v != NULL && (rc = ss__jobs_mpi_parse(j, v, err)) < 0)
        return rc;
    return 0;
}
