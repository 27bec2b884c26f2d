/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admin compression jobs: the queue, the job thread (a job's data:
 * jobs_data.c; its variant folder: jobs_store.c).
 *
 * DESIGN: see jobs.h.  A job's life: queued (loop) -> running (job
 * thread: data, compression, variant folder) -> activating (loop, when
 * asked and the gate held) -> succeeded / rejected / failed / cancelled.
 * The variant folder appears under its version number only by rename(2)
 * of a complete, fsynced temporary folder whose name is not a number, so
 * neither the registry nor a restart can see half a variant; a crash
 * leaves only the temporary folder, which start-up removes.
 *
 * THREADS: the jobs list and every job's mutable state are guarded by
 * lock; the job thread owns the job it runs.  Jobs cross threads in two
 * hand-off queues: runq (loop -> job thread, which waits on it) and actq
 * (job thread -> loop, woken by an async handle).  Lock order: lock, then
 * a queue's own lock.
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/cpus.h"
#include "common/log.h"

static const char *const state_names[] = {
    [SS__JOB_QUEUED] = "queued",       [SS__JOB_RUNNING] = "running",
    [SS__JOB_SUCCEEDED] = "succeeded", [SS__JOB_REJECTED] = "rejected",
    [SS__JOB_FAILED] = "failed",       [SS__JOB_CANCELLED] = "cancelled",
};

double
ss__jobs_wall(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

void
ss__jobs_data_clear(ss__job_data_t *d)
{
    int i;

    for (i = 0; i < d->n; i++)
        ss_free(d->inputs[i].data);
    ss_free(d->labels.data);
    d->n = 0;
    d->rows = 0;
    memset(&d->labels, 0, sizeof(d->labels));
    d->has_labels = false;
}

static void
job_free(ss__job_t *j)
{
    if (j == NULL)
        return;
    ss__jobs_data_clear(&j->calib);
    ss__jobs_data_clear(&j->val);
    ss__jobs_data_clear(&j->train);
    ss__jobs_train_clear(j);
    ss__jobs_mpi_clear(j);
    ss_version_unref(j->src);
    json_decref(j->request);
    json_decref(j->result);
    json_decref(j->search_state);
    ss_free(j->model);
    ss_free(j);
}

/* ---- running ---------------------------------------------------------------- */

void
ss__jobs_on_progress(void *arg, double fraction, const char *step)
{
    ss__job_t *j = arg;
    ss_jobs_t *js = j->owner;

    pthread_mutex_lock(&js->lock);
    j->progress = fraction;
    snprintf(j->step, sizeof(j->step), "%s", step);
    pthread_mutex_unlock(&js->lock);
}

/* Training methods: the last step's report, shown by GET (train_job.c). */
void
ss__jobs_on_train(void *arg, const ss_train_progress_t *p)
{
    ss__job_t *j = arg;
    ss_jobs_t *js = j->owner;

    pthread_mutex_lock(&js->lock);
    j->tp = *p;
    j->has_tp = true;
    pthread_mutex_unlock(&js->lock);
}

void
ss__jobs_finish(ss_jobs_t *js, ss__job_t *j, ss__job_state_t st, json_t *result,
       const char *error)
{
    pthread_mutex_lock(&js->lock);
    j->state = st;
    j->finished = ss__jobs_wall();
    if (st == SS__JOB_SUCCEEDED || st == SS__JOB_REJECTED)
        j->progress = 1;
    if (error != NULL)
        snprintf(j->error, sizeof(j->error), "%s", error);
    json_decref(j->result);
    j->result = result;
    pthread_mutex_unlock(&js->lock);
    ss_log_notice("job %lld (model=%s): %s%s%s", (long long)j->id, j->model,
                  state_names[st], error ? ": " : "", error ? error : "");
}

/* A variant must never become the served version by accident: under the
 * "latest" policy a reload or a restart would pick the newest folder.  So
 * before a new version number appears, config.json names the version
 * served now (the job's source when none is), unless it names one
 * already (an activation since the job was queued wins). */
int
ss__jobs_pin_active(ss_jobs_t *js, ss__job_t *j, ss_err_t *err)
{
    char dir[4096];
    ss_version_t *act;
    int64_t v = j->src->number;
    int rc;

    snprintf(dir, sizeof(dir), "%s/%s", js->repo, j->model);
    if (ss_registry_acquire(js->reg, j->model, 0, &act, NULL) == 0) {
        v = act->number;
        ss_version_unref(act);
    }
    if ((rc = ss_model_config_pin_active(dir, v, err)) < 0)
        ss_err_wrap(err, rc, "pinning the active version");
    return rc;
}

void
ss__jobs_written(ss_jobs_t *js, ss__job_t *j, json_t *result,
                 int64_t version)
{
    json_object_set_new(result, "version", json_integer(version));
    pthread_mutex_lock(&js->lock);
    j->new_version = version;
    if (j->activate && !js->stop) {
        /* The loop activates and finishes the job. */
        snprintf(j->step, sizeof(j->step), "activating");
        json_decref(j->result);
        j->result = result;
        ss_queue_push(&js->actq, &j->qlink);
        pthread_mutex_unlock(&js->lock);
        uv_async_send(&js->async);
        return;
    }
    pthread_mutex_unlock(&js->lock);
    json_object_set_new(result, "activated", json_false());
    ss__jobs_finish(js, j, SS__JOB_SUCCEEDED, result, NULL);
}

static void
run(ss_jobs_t *js, ss__job_t *j)
{
    ss_compress_result_t res = { 0 };
    ss_compress_ctl_t ctl = { 0 };
    ss_dataset_t calib, val, train;
    ss_err_t err = { 0 };
    json_t *result = NULL, *variant = NULL;
    int64_t version = 0;
    int rc;

    if (j->search) {
        ss__jobs_search_run(js, j);
        return;
    }
    if (j->mpirun != NULL) {
        ss__jobs_mpi_run(js, j);
        return;
    }
    ctl.cancel = &j->cancel;
    ctl.progress = ss__jobs_on_progress;
    ctl.train_progress = ss__jobs_on_train;
    ctl.arg = j;
    ctl.threads = js->threads;
    pthread_mutex_lock(&js->lock);
    snprintf(j->step, sizeof(j->step), "loading data");
    pthread_mutex_unlock(&js->lock);
    if ((rc = ss__jobs_load_data(js, j, &j->calib, &err)) < 0) {
        ss_err_wrap(&err, rc, "calibration");
        goto fail;
    }
    if ((rc = ss__jobs_load_data(js, j, &j->val, &err)) < 0) {
        ss_err_wrap(&err, rc, "validation");
        goto fail;
    }
    if ((rc = ss__jobs_load_data(js, j, &j->train, &err)) < 0) {
        ss_err_wrap(&err, rc, "training");
        goto fail;
    }
    if ((rc = ss__jobs_train_load(j, js->repo, js->max_data_bytes,
                                  &err)) < 0)
        goto fail;
    /* Training methods without "training" learn from the calibration
     * data (jobs_parse.c). */
    ss__jobs_as_dataset(j->train.kind != SS__JOB_DATA_NONE ? &j->train
                                                          : &j->calib,
               &train);
    if (train.rows > 0)
        ctl.train = &train;
    ss__jobs_as_dataset(&j->calib, &calib);
    ss__jobs_as_dataset(j->val.kind != SS__JOB_DATA_NONE ? &j->val
                                                        : &j->calib, &val);
    if (j->gate.max_accuracy_drop < 0 && j->gate.min_agreement < 0 &&
        j->gate.max_relative_error < 0) {
        /* The default gate: 1% of the accuracy with labels, else 99%
         * top-1 agreement with the source. */
        if (val.labels != NULL)
            j->gate.max_accuracy_drop = 0.01;
        else
            j->gate.min_agreement = 0.99;
    }
    if (j->gate.max_accuracy_drop >= 0 && val.labels == NULL) {
        rc = ss_err_set(&err, SS_EINVAL, "gate max_accuracy_drop needs "
                        "labels in the validation data");
        goto fail;
    }
    rc = ss_compress_run(j->src->graph, j->methods, j->n_methods,
                         j->calib.kind != SS__JOB_DATA_NONE ? &calib : NULL,
                         &val, &j->gate, &ctl, &res, &err);
    if (rc < 0)
        goto fail;
    /* One record of the measurements: the job's result and the variant's
     * variant.json share it. */
    if ((result = ss_compress_result_json(&res, &j->gate)) == NULL) {
        rc = ss_err_set(&err, SS_ENOMEM, "out of memory for the results");
        goto fail;
    }
    if (!res.passed) {
        char why[320];

        snprintf(why, sizeof(why), "%s; nothing was written or activated",
                 res.unchanged ? res.gate_reason
                               : "the variant did not pass the gate");
        ss__jobs_finish(js, j, SS__JOB_REJECTED, result, why);
        result = NULL;
        goto done;
    }
    if (res.adapter != NULL) {
        /* lora: an adapter, not a version */
        if ((rc = ss__jobs_write_adapter(js, j, res.adapter, result, &err)) < 0)
            goto fail;
        ss__jobs_finish(js, j, SS__JOB_SUCCEEDED, result, NULL);
        result = NULL;
        goto done;
    }
    variant = json_pack("{s:I,s:O,s:O,s:f}", "parent_version",
                        (json_int_t)j->src->number, "methods",
                        json_object_get(j->request, "methods"),
                        "measurements", result, "created", ss__jobs_wall());
    if (variant == NULL) {
        rc = ss_err_set(&err, SS_ENOMEM, "out of memory for the results");
        goto fail;
    }
    if ((rc = ss__jobs_pin_active(js, j, &err)) < 0 ||
        (rc = ss__jobs_write_version(js, j, res.variant, variant, true,
                                     &version, &err)) < 0)
        goto fail;
    ss__jobs_written(js, j, result, version);
    result = NULL;
    goto done;
fail:
    ss__jobs_finish(js, j, rc == SS_ECANCELED || atomic_load(&j->cancel)
                      ? SS__JOB_CANCELLED
                      : SS__JOB_FAILED, NULL, err.msg);
done:
    json_decref(result);
    json_decref(variant);
    ss_compress_result_clear(&res);
    ss__jobs_data_clear(&j->calib);
    ss__jobs_data_clear(&j->val);
    ss__jobs_data_clear(&j->train);
    ss__jobs_train_clear(j);
}

int
ss_jobs_prio_parse(const char *s, ss_jobs_prio_t *out)
{
    static const char *const names[] = {
        [SS_JOBS_PRIO_BATCH] = "batch",
        [SS_JOBS_PRIO_IDLE] = "idle",
        [SS_JOBS_PRIO_NORMAL] = "normal",
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (s != NULL && strcmp(s, names[i]) == 0) {
            *out = (ss_jobs_prio_t)i;
            return 0;
        }
    }
    return SS_EINVAL;
}

void
ss_jobs_set_prio(ss_jobs_t *js, ss_jobs_prio_t prio)
{
    pthread_mutex_lock(&js->lock);
    js->prio = prio;
    pthread_mutex_unlock(&js->lock);
}

/* [job thread] Applies prio to the calling thread (and so to the threads
 * it starts from now on: its OpenMP team).  Both calls act on the calling
 * thread only: sched_setscheduler(0) and setpriority on its own tid. */
static void
apply_prio(ss_jobs_prio_t prio)
{
    struct sched_param sp = { .sched_priority = 0 };
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int policy = prio == SS_JOBS_PRIO_IDLE    ? SCHED_IDLE
                 : prio == SS_JOBS_PRIO_BATCH ? SCHED_BATCH
                                              : SCHED_OTHER;
    int nice;

    /* Only ever lower: 10 below the daemon's own nice (a daemon started
     * at nice 5 gets 15), which needs no privilege.  IDLE and NORMAL
     * keep the nice value; only the policy changes (allowed since Linux
     * 2.6.39 for one's own threads). */
    if (sched_setscheduler(0, policy, &sp) < 0)
        ss_log_warn("job thread: cannot set the scheduling policy: %s",
                    strerror(errno));
    if (prio == SS_JOBS_PRIO_BATCH) {
        errno = 0;
        nice = getpriority(PRIO_PROCESS, (id_t)tid);
        nice = errno != 0 ? 10 : nice + 10 > 19 ? 19 : nice + 10;
        if (setpriority(PRIO_PROCESS, (id_t)tid, nice) < 0)
            ss_log_warn("job thread: cannot set nice %d: %s", nice,
                        strerror(errno));
    }
}

static void *
job_thread(void *arg)
{
    ss_jobs_t *js = arg;
    ss_qlink_t *l;
    ss__job_t *j;
    ss_jobs_prio_t prio;
    ss__pace_t pace;

    /* The OpenMP threads of a job inherit the name, so that they can be
     * told from the serving threads (top -H, /proc/PID/task). */
    pthread_setname_np(pthread_self(), "ss-job");
    /* Jobs keep off the serving CPUs; OpenMP threads inherit the mask. */
    if (js->pin)
        ss_cpus_pin_self(&js->cpus);
    js->applied = SS_JOBS_PRIO_NORMAL;
    /* NULL once ss_jobs_free closed the queue and it is empty. */
    while ((l = ss_queue_pop_wait(&js->runq)) != NULL) {
        j = SS_QUEUE_ENTRY(l, ss__job_t, qlink);
        pthread_mutex_lock(&js->lock);
        /* Cancelled between the pop and here, or stopping: skip it. */
        if (js->stop || j->state != SS__JOB_QUEUED) {
            pthread_mutex_unlock(&js->lock);
            continue;
        }
        j->state = SS__JOB_RUNNING;
        j->started = ss__jobs_wall();
        prio = js->prio;
        pthread_mutex_unlock(&js->lock);
        if (prio != js->applied) {
            apply_prio(prio);
            js->applied = prio;
        }
        ss_log_notice("job %lld (model=%s) running", (long long)j->id,
                      j->model);
        ss__jobs_pace_begin(&pace, js, j);
        run(js, j);
        ss__jobs_pace_end(&pace);
        pthread_mutex_lock(&js->lock);
        /* Nobody reads the source any more unless activation is pending:
         * the reference goes now (it may be the last). */
        if (j->state != SS__JOB_RUNNING) {
            ss_version_t *v = j->src;

            j->src = NULL;
            pthread_mutex_unlock(&js->lock);
            ss_version_unref(v);
            pthread_mutex_lock(&js->lock);
        }
        pthread_mutex_unlock(&js->lock);
    }
    return NULL;
}

/* ---- activation on the loop ---------------------------------------------- */

static void
on_activated(void *arg, int rc, const ss_err_t *err)
{
    ss__job_t *j = arg;
    ss_jobs_t *js = j->owner;
    json_t *result;

    pthread_mutex_lock(&js->lock);
    result = j->result;
    j->result = NULL;
    pthread_mutex_unlock(&js->lock);
    json_object_set_new(result, "activated", json_boolean(rc == 0));
    if (rc < 0)
        json_object_set_new(result, "activation_error",
                            json_string(err ? err->msg : "failed"));
    ss__jobs_finish(js, j, rc == 0 ? SS__JOB_SUCCEEDED : SS__JOB_FAILED, result,
           rc == 0 ? NULL : "the variant was written but not activated");
    ss_version_unref(j->src);
    j->src = NULL;
}

static void
on_async(uv_async_t *a)
{
    ss_jobs_t *js = a->data;
    ss_qlink_t *l, *next;
    ss__job_t *j;

    /* Wake-ups coalesce: take everything queued. */
    for (l = ss_queue_take_all(&js->actq); l != NULL; l = next) {
        ss_err_t err = { 0 };

        next = l->next;
        j = SS_QUEUE_ENTRY(l, ss__job_t, qlink);
        if (ss_registry_activate(js->reg, j->model, j->new_version,
                                 on_activated, j, &err) < 0)
            on_activated(j, err.code, &err);
    }
}

/* ---- the loop-side API -------------------------------------------------- */

static void on_closed(uv_handle_t *h);

int
ss_jobs_new(uv_loop_t *loop, ss_registry_t *reg, const char *repo,
            int threads, int64_t max_data_bytes, const cpu_set_t *cpus,
            ss_jobs_t **out, ss_err_t *err)
{
    ss_jobs_t *js;

    *out = NULL;
    if ((js = ss_calloc(1, sizeof(*js))) == NULL ||
        (js->repo = ss_strdup(repo)) == NULL) {
        ss_free(js);
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    }
    js->loop = loop;
    js->reg = reg;
    js->threads = threads;
    js->max_data_bytes = max_data_bytes > 0 ? max_data_bytes
                                            : SS_JOBS_DATA_MAX_DEFAULT;
    if (cpus != NULL) {
        js->pin = true;
        js->cpus = *cpus;
    }
    pthread_mutex_init(&js->lock, NULL);
    ss_queue_init(&js->runq);
    ss_queue_init(&js->actq);
    uv_async_init(loop, &js->async, on_async);
    js->async.data = js;
    if (pthread_create(&js->thread, NULL, job_thread, js) != 0) {
        /* No job yet: the close callback frees js once the loop runs. */
        uv_close((uv_handle_t *)&js->async, on_closed);
        return ss_err_set(err, SS_EINTERNAL, "cannot start the job thread");
    }
    *out = js;
    return 0;
}

/* A compress or (search) an optimize request. */
static int64_t
submit(ss_jobs_t *js, const char *model, const char *body, size_t len,
       bool search, ss_err_t *err)
{
    json_error_t je;
    json_t *root;
    ss__job_t *j;
    char label[sizeof(((ss_version_t *)0)->label)];
    int rc;
    int64_t sv = 0, id;

    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (root != NULL && !json_is_object(root)) {
        json_decref(root);
        return ss_err_set(err, SS_EINVAL, "body must be a JSON object");
    }
    if (root == NULL)
        return ss_err_set(err, SS_EINVAL, "body is not valid JSON: line %d: "
                          "%s", je.line, je.text);
    if (json_object_get(root, "source_version") != NULL) {
        json_t *v = json_object_get(root, "source_version");

        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            json_decref(root);
            return ss_err_set(err, SS_EINVAL, "source_version must be a "
                              "positive integer");
        }
        sv = json_integer_value(v);
    }
    if ((j = ss_calloc(1, sizeof(*j))) == NULL) {
        json_decref(root);
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    }
    j->request = root;
    j->owner = js;
    if ((j->model = ss_strdup(model)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = ss_registry_acquire(js->reg, model, sv, &j->src, err)) < 0)
        goto fail;
    j->search = search;
    if ((rc = search ? ss__jobs_search_parse(j, root, err)
                     : ss__jobs_parse(j, root, err)) < 0)
        goto fail;
    /* Once queued, the job thread may run the job and drop j->src at
     * once: what the log line needs is copied under the lock. */
    snprintf(label, sizeof(label), "%s", j->src->label);
    pthread_mutex_lock(&js->lock);
    id = j->id = ++js->next_id;
    j->state = SS__JOB_QUEUED;
    j->created = ss__jobs_wall();
    snprintf(j->step, sizeof(j->step), "queued");
    j->next = js->all;
    js->all = j;
    ss_queue_push(&js->runq, &j->qlink);
    pthread_mutex_unlock(&js->lock);
    ss_log_notice("job %lld (model=%s@%s) queued", (long long)id, model,
                  label);
    return id;
fail:
    job_free(j);
    return rc;
}

int64_t
ss_jobs_submit(ss_jobs_t *js, const char *model, const char *body,
               size_t len, ss_err_t *err)
{
    return submit(js, model, body, len, false, err);
}

int64_t
ss_jobs_submit_search(ss_jobs_t *js, const char *model, const char *body,
                      size_t len, ss_err_t *err)
{
    return submit(js, model, body, len, true, err);
}

static json_t *
job_json(const ss__job_t *j)
{
    json_t *o = json_pack("{s:I,s:s,s:s,s:f,s:s,s:f}", "id",
                          (json_int_t)j->id, "model", j->model, "state",
                          state_names[j->state], "progress", j->progress,
                          "step", j->step, "created", j->created);

    if (j->started > 0)
        json_object_set_new(o, "started", json_real(j->started));
    if (j->finished > 0)
        json_object_set_new(o, "finished", json_real(j->finished));
    if (j->started > 0)
        json_object_set_new(o, "paused_for_serving_s", json_real(
            (double)atomic_load_explicit(&j->paced_ns,
                                         memory_order_relaxed) / 1e9));
    if (j->error[0])
        json_object_set_new(o, "error", json_string(j->error));
    if (j->result != NULL && j->state != SS__JOB_RUNNING)
        json_object_set(o, "result", j->result);
    if (j->new_version > 0)
        json_object_set_new(o, "version", json_integer(j->new_version));
    if (j->has_tp)
        json_object_set_new(o, "training", ss__jobs_training_json(j));
    if (j->search_state != NULL)
        json_object_set(o, "search", j->search_state);
    json_object_set(o, "request", j->request);
    return o;
}

json_t *
ss_jobs_get(ss_jobs_t *js, int64_t id)
{
    json_t *o = NULL;
    ss__job_t *j;

    pthread_mutex_lock(&js->lock);
    for (j = js->all; j != NULL; j = j->next)
        if (j->id == id) {
            o = job_json(j);
            break;
        }
    pthread_mutex_unlock(&js->lock);
    return o;
}

json_t *
ss_jobs_list(ss_jobs_t *js)
{
    json_t *arr = json_array();
    ss__job_t *j;

    pthread_mutex_lock(&js->lock);
    for (j = js->all; j != NULL; j = j->next)
        json_array_append_new(arr, job_json(j));
    pthread_mutex_unlock(&js->lock);
    return arr;
}

int
ss_jobs_cancel(ss_jobs_t *js, int64_t id, ss_err_t *err)
{
    ss_version_t *drop = NULL;
    ss__job_t *j;
    int rc = 0;

    pthread_mutex_lock(&js->lock);
    for (j = js->all; j != NULL && j->id != id; j = j->next)
        ;
    if (j == NULL) {
        rc = ss_err_set(err, SS_ENOTFOUND, "no job %lld", (long long)id);
    } else if (j->state == SS__JOB_QUEUED) {
        /* When the job thread has just taken it, it skips it: the state
         * is no longer queued when it gets the lock. */
        ss_queue_remove(&js->runq, &j->qlink);
        j->state = SS__JOB_CANCELLED;
        j->finished = ss__jobs_wall();
        drop = j->src;
        j->src = NULL;
    } else if (j->state == SS__JOB_RUNNING) {
        atomic_store(&j->cancel, 1);
    } else {
        rc = ss_err_set(err, SS_ECONFLICT, "job %lld has finished (%s)",
                        (long long)id, state_names[j->state]);
    }
    pthread_mutex_unlock(&js->lock);
    ss_version_unref(drop);
    return rc;
}

int
ss_jobs_busy(ss_jobs_t *js)
{
    const ss__job_t *j;
    int busy = 0;

    /* A job waiting for activation is still running. */
    pthread_mutex_lock(&js->lock);
    for (j = js->all; j != NULL && !busy; j = j->next)
        busy = j->state == SS__JOB_QUEUED || j->state == SS__JOB_RUNNING;
    pthread_mutex_unlock(&js->lock);
    return busy;
}

static void
on_closed(uv_handle_t *h)
{
    ss_jobs_t *js = h->data;
    ss__job_t *j, *next;

    for (j = js->all; j != NULL; j = next) {
        next = j->next;
        job_free(j);
    }
    pthread_mutex_destroy(&js->lock);
    ss_queue_destroy(&js->runq);
    ss_queue_destroy(&js->actq);
    ss_free(js->repo);
    ss_free(js);
}

void
ss_jobs_free(ss_jobs_t *js)
{
    ss__job_t *j;

    if (js == NULL)
        return;
    pthread_mutex_lock(&js->lock);
    js->stop = true;
    for (j = js->all; j != NULL; j = j->next) {
        atomic_store(&j->cancel, 1);
        if (j->state == SS__JOB_QUEUED)
            j->state = SS__JOB_CANCELLED;
    }
    pthread_mutex_unlock(&js->lock);
    /* The job thread skips what is still queued and exits. */
    ss_queue_close(&js->runq);
    pthread_join(js->thread, NULL);
    /* Jobs waiting for activation are dropped: release their versions. */
    for (j = js->all; j != NULL; j = j->next) {
        ss_version_unref(j->src);
        j->src = NULL;
        if (j->state == SS__JOB_RUNNING)
            j->state = SS__JOB_CANCELLED;
    }
    ss_queue_take_all(&js->runq);
    ss_queue_take_all(&js->actq);
    uv_close((uv_handle_t *)&js->async, on_closed);
}
