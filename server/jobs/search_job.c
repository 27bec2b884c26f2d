/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Optimize jobs: POST /admin/models/{m}/optimize, a variant search
 * (compress/search.h) run as a job.
 *
 * DESIGN: the body is checked on the loop thread like a compress body
 * (a bad one is SS_EINVAL and leaves no job and no file); the job thread
 * loads the data, runs the search, and publishes every state the search
 * reports under the jobs lock, so GET /admin/jobs/{id} shows the trials,
 * the best so far and the Pareto front while it grows.  When the search
 * ends -- converged, out of time or trials, or cancelled by DELETE -- the
 * best variant inside the budget is written as a new version (its
 * variant.json names the search and the trial) and the search's record
 * as <model>/search-<id>.json, both atomically; "activate" then swaps the
 * version in through the same hand-off as compress jobs.  A stopped
 * search therefore succeeds with what it found; only a search with no
 * variant inside the budget that beats the source is "rejected" (its
 * record is still written).
 *
 * THREADS: ss__jobs_search_parse [loop]; the rest on the job thread,
 * touching the job's shared fields under the jobs lock.
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "common/log.h"

/* ---- the body [loop] ----------------------------------------------------- */

static int
parse_budget(json_t *v, ss_gate_t *g, ss_err_t *err)
{
    const char *key;
    json_t *x;

    g->max_accuracy_drop = g->min_agreement = g->max_relative_error = -1;
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return ss_err_set(err, SS_EINVAL, "budget must be an object: "
                          "{\"max_accuracy_drop\": 0.01} or "
                          "{\"min_agreement\": 0.99}");
    json_object_foreach(v, key, x) {
        double d = json_number_value(x);

        if (strcmp(key, "max_accuracy_drop") != 0
            && strcmp(key, "min_agreement") != 0)
            return ss_err_set(err, SS_EINVAL, "budget: unknown key '%s' "
                              "(max_accuracy_drop or min_agreement)", key);
        if (!json_is_number(x) || !isfinite(d))
            return ss_err_set(err, SS_EINVAL, "budget: %s must be a "
                              "number", key);
        if (strcmp(key, "max_accuracy_drop") == 0) {
            if (d < 0 || d >= 1)
                return ss_err_set(err, SS_EINVAL, "budget: "
                                  "max_accuracy_drop must be in [0, 1) "
                                  "(relative: 0.01 is 1%%), not %g", d);
            g->max_accuracy_drop = d;
        } else {
            if (d < 0 || d > 1)
                return ss_err_set(err, SS_EINVAL, "budget: min_agreement "
                                  "must be in [0, 1], not %g", d);
            g->min_agreement = d;
        }
    }
    if (g->max_accuracy_drop >= 0 && g->min_agreement >= 0)
        return ss_err_set(err, SS_EINVAL, "budget: give max_accuracy_drop "
                          "or min_agreement, not both");
    return 0;
}

static int
parse_methods(json_t *v, unsigned *out, ss_err_t *err)
{
    static const ss_method_kind_t kinds[] = {
        SS_METHOD_PTQ, SS_METHOD_BF16, SS_METHOD_PRUNE, SS_METHOD_LOWRANK,
        SS_METHOD_FINETUNE, SS_METHOD_DISTILL
    };
    json_t *x;
    size_t i, k;

    *out = 0;
    if (!json_is_array(v) || json_array_size(v) == 0)
        return ss_err_set(err, SS_EINVAL, "methods must be a non-empty list "
                          "of ptq, bf16, prune, lowrank, finetune, distill");
    json_array_foreach(v, i, x) {
        const char *name = json_string_value(x);

        for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
            if (name != NULL && strcmp(name, ss_method_name(kinds[k])) == 0)
                break;
        if (k == sizeof(kinds) / sizeof(kinds[0]))
            return ss_err_set(err, SS_EINVAL, "methods[%zu]: not one of "
                              "ptq, bf16, prune, lowrank, finetune, "
                              "distill", i);
        *out |= 1u << kinds[k];
    }
    return 0;
}

#define TRAINS ((1u << SS_METHOD_FINETUNE) | (1u << SS_METHOD_DISTILL))

int
ss__jobs_search_parse(ss__job_t *j, json_t *root, ss_err_t *err)
{
    static const char *const known[] = {
        "source_version", "budget", "objective", "time_limit_s",
        "max_trials", "methods", "calibration", "validation", "training",
        "activate", "seed"
    };
    ss_search_opts_t *o = &j->sopts;
    const char *key;
    json_t *v;
    size_t k;
    int rc;

    json_object_foreach(root, key, v) {
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(key, known[k]) == 0)
                break;
        if (k == sizeof(known) / sizeof(known[0]))
            return ss_err_set(err, SS_EINVAL, "unknown key '%s'", key);
    }
    memset(o, 0, sizeof(*o));
    if ((rc = parse_budget(json_object_get(root, "budget"), &o->budget,
                           err)) < 0)
        return rc;
    v = json_object_get(root, "objective");
    if (v != NULL && ss_search_objective_parse(json_string_value(v),
                                               &o->objective) < 0)
        return ss_err_set(err, SS_EINVAL, "objective must be "
                          "\"latency_b32\", \"latency_b1\" or \"size\"");
    o->time_limit_s = 600;
    if ((v = json_object_get(root, "time_limit_s")) != NULL) {
        o->time_limit_s = json_number_value(v);
        if (!json_is_number(v) || !(o->time_limit_s > 0)
            || o->time_limit_s > 604800)
            return ss_err_set(err, SS_EINVAL, "time_limit_s must be a "
                              "number of seconds in (0, 604800]");
    }
    if ((v = json_object_get(root, "max_trials")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > 100000)
            return ss_err_set(err, SS_EINVAL, "max_trials must be an "
                              "integer in [1, 100000]");
        o->max_trials = (int)json_integer_value(v);
    }
    if ((v = json_object_get(root, "seed")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return ss_err_set(err, SS_EINVAL, "seed must be a non-negative "
                              "integer");
        o->seed = (uint64_t)json_integer_value(v);
    }
    v = json_object_get(root, "activate");
    if (v != NULL && !json_is_boolean(v))
        return ss_err_set(err, SS_EINVAL, "activate must be true or false");
    j->activate = json_is_true(v);
    if ((rc = ss__jobs_parse_data(j, json_object_get(root, "calibration"),
                                  "calibration", &j->calib, err)) < 0
        || (rc = ss__jobs_parse_data(j, json_object_get(root, "validation"),
                                     "validation", &j->val, err)) < 0
        || (rc = ss__jobs_parse_data(j, json_object_get(root, "training"),
                                     "training", &j->train, err)) < 0)
        return rc;
    if ((v = json_object_get(root, "methods")) != NULL) {
        if ((rc = parse_methods(v, &o->methods, err)) < 0)
            return rc;
    } else {
        /* Training methods only when training data was given. */
        o->methods = (1u << SS_METHOD_PTQ) | (1u << SS_METHOD_BF16)
                     | (1u << SS_METHOD_PRUNE) | (1u << SS_METHOD_LOWRANK);
        if (j->train.kind != SS__JOB_DATA_NONE)
            o->methods |= TRAINS;
    }
    if (j->calib.kind == SS__JOB_DATA_NONE && ss_model_sampler(j->src->model))
        j->calib.kind = SS__JOB_DATA_TRAFFIC;
    if (j->val.kind == SS__JOB_DATA_NONE && j->calib.kind == SS__JOB_DATA_NONE)
        return ss_err_set(err, SS_EINVAL, "validation data is required "
                          "(\"validation\": {\"file\": \"val.npz\"}, inline "
                          "inputs, or \"traffic\" with sampling on)");
    if ((o->methods & TRAINS) && j->train.kind == SS__JOB_DATA_NONE
        && j->calib.kind == SS__JOB_DATA_NONE)
        return ss_err_set(err, SS_EINVAL, "finetune and distill need "
                          "training data (\"training\": {\"file\": "
                          "\"train.npz\"})");
    if (j->val.kind == SS__JOB_DATA_INLINE
        && o->budget.max_accuracy_drop >= 0 && !j->val.has_labels)
        return ss_err_set(err, SS_EINVAL, "budget: max_accuracy_drop needs "
                          "labels in the validation data");
    return 0;
}

/* ---- the run [job thread] ------------------------------------------------ */

static void
on_update(void *arg, json_t *state)
{
    ss__job_t *j = arg;
    ss_jobs_t *js = j->owner;
    json_t *old;

    pthread_mutex_lock(&js->lock);
    old = j->search_state;
    j->search_state = state;
    pthread_mutex_unlock(&js->lock);
    json_decref(old);
}

/* <model>/search-<id>.json, atomically. */
static int
write_record(ss_jobs_t *js, ss__job_t *j, json_t *rec, ss_err_t *err)
{
    ss_atomic_file_t af = { .fd = -1 };
    char path[4200];
    char *text;
    int rc;

    snprintf(path, sizeof(path), "%s/%s/search-%lld.json", js->repo,
             j->model, (long long)j->id);
    if ((text = json_dumps(rec, JSON_INDENT(1) | JSON_PRESERVE_ORDER))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if ((rc = ss_atomic_open(&af, path, err)) < 0
        || (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0
        || (rc = ss_atomic_commit(&af, err)) < 0)
        ss_atomic_abort(&af);
    free(text);
    return rc;
}

/* variant.json of the best: the measurements as a compress job records
 * them (so versions, the page and the CLI read it alike), the pipeline
 * as "methods", and the search and trial it came from. */
static json_t *
variant_json(const ss__job_t *j, const ss_search_result_t *res,
             const char *file)
{
    ss_compress_result_t cr;
    json_t *meas, *cfg = json_object_get(res->best_json, "config");

    memset(&cr, 0, sizeof(cr));
    cr.passed = true;
    cr.source = res->source;
    cr.variant_eval = res->best_eval;
    cr.details = json_pack("{s:O}", "search", res->best_json);
    meas = ss_compress_result_json(&cr, &j->sopts.budget);
    json_decref(cr.details);
    if (meas == NULL)
        return NULL;
    return json_pack("{s:I, s:O, s:{s:I, s:i, s:s, s:O}, s:o, s:f}",
                     "parent_version", (json_int_t)j->src->number,
                     "methods", json_object_get(cfg, "pipeline"),
                     "search", "job", (json_int_t)j->id,
                     "trial", res->best_trial,
                     "file", file,
                     "config", cfg,
                     "measurements", meas,
                     "created", ss__jobs_wall());
}

void
ss__jobs_search_run(ss_jobs_t *js, ss__job_t *j)
{
    ss_search_result_t res;
    ss_compress_ctl_t ctl = { 0 };
    ss_dataset_t calib, val, train;
    ss_search_opts_t *o = &j->sopts;
    ss_err_t err = { 0 };
    json_t *rec = NULL, *variant = NULL;
    char file[64];
    int64_t version = 0;
    int rc;

    memset(&res, 0, sizeof(res));
    ctl.cancel = &j->cancel;
    ctl.progress = ss__jobs_on_progress;
    ctl.train_progress = ss__jobs_on_train;
    ctl.arg = j;
    ctl.threads = js->threads;
    o->on_update = on_update;
    o->update_arg = j;
    pthread_mutex_lock(&js->lock);
    snprintf(j->step, sizeof(j->step), "loading data");
    pthread_mutex_unlock(&js->lock);
    if ((rc = ss__jobs_load_data(js, j, &j->calib, &err)) < 0
        || (rc = ss__jobs_load_data(js, j, &j->val, &err)) < 0
        || (rc = ss__jobs_load_data(js, j, &j->train, &err)) < 0)
        goto fail;
    ss__jobs_as_dataset(j->train.kind != SS__JOB_DATA_NONE ? &j->train
                                                          : &j->calib,
                        &train);
    if ((o->methods & TRAINS) && train.rows > 0)
        ctl.train = &train;
    ss__jobs_as_dataset(&j->calib, &calib);
    ss__jobs_as_dataset(j->val.kind != SS__JOB_DATA_NONE ? &j->val
                                                        : &j->calib, &val);
    if (o->budget.max_accuracy_drop < 0 && o->budget.min_agreement < 0) {
        /* As compress jobs: 1% with labels, else 99% agreement. */
        if (val.labels != NULL)
            o->budget.max_accuracy_drop = 0.01;
        else
            o->budget.min_agreement = 0.99;
    }
    rc = ss_search_run(j->src->graph,
                       j->calib.kind != SS__JOB_DATA_NONE ? &calib : NULL,
                       &val, o, &ctl, &res, &err);
    if (rc < 0)
        goto fail;
    snprintf(file, sizeof(file), "search-%lld.json", (long long)j->id);
    rec = json_deep_copy(res.state);
    if (rec == NULL) {
        rc = ss_err_set(&err, SS_ENOMEM, "out of memory for the results");
        goto fail;
    }
    json_object_set_new(rec, "job", json_integer(j->id));
    json_object_set_new(rec, "model", json_string(j->model));
    json_object_set_new(rec, "source_version",
                        json_integer(j->src->number));
    json_object_set_new(rec, "file", json_string(file));
    if (res.best != NULL) {
        if ((variant = variant_json(j, &res, file)) == NULL) {
            rc = ss_err_set(&err, SS_ENOMEM, "out of memory");
            goto fail;
        }
        if ((rc = ss__jobs_pin_active(js, j, &err)) < 0
            || (rc = ss__jobs_write_version(js, j, res.best, variant, false,
                                            &version, &err)) < 0)
            goto fail;
        json_object_set_new(json_object_get(rec, "best"), "version",
                            json_integer(version));
    }
    if ((rc = write_record(js, j, rec, &err)) < 0)
        ss_log_warn("model=%s: job %lld: %s", j->model, (long long)j->id,
                    err.msg);
    if (res.best != NULL) {
        ss__jobs_written(js, j, rec, version);
        rec = NULL;
    } else {
        ss__jobs_finish(js, j, SS__JOB_REJECTED, rec, "no variant inside "
                        "the budget beat the source; nothing was written "
                        "or activated");
        rec = NULL;
    }
    goto done;
fail:
    ss__jobs_finish(js, j, rc == SS_ECANCELED || atomic_load(&j->cancel)
                               ? SS__JOB_CANCELLED : SS__JOB_FAILED,
                    NULL, err.msg);
done:
    json_decref(rec);
    json_decref(variant);
    ss_search_result_clear(&res);
    ss__jobs_data_clear(&j->calib);
    ss__jobs_data_clear(&j->val);
    ss__jobs_data_clear(&j->train);
}
