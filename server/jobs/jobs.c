/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admin compression jobs: the queue, the job thread, variant folders.
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

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "common/cpus.h"
#include "common/log.h"
#include "engine/ir/edit.h"
#include "engine/io/npy.h"
#include "server/model/adapter.h"
#include "server/model/sampler.h"

#define TMP_PREFIX ".slimserve-tmp-"


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

/* ---- data ---------------------------------------------------------------- */

/* Copies tensors checked against g (graph order) into d, which owns the
 * copies. */
static int
take_inputs(const ss_graph_t *g, const ss_tensor_t *t, int64_t rows,
            ss__job_data_t *d, ss_err_t *err)
{
    int n = ss_graph_num_inputs(g), k;

    for (k = 0; k < n; k++) {
        size_t nb = (size_t)ss_tensor_numel(&t[k]) * ss_dtype_size(t[k].dtype);

        d->inputs[k] = t[k];
        if ((d->inputs[k].data = ss_aligned_alloc(nb)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "out of memory for '%s'",
                              ss_graph_input(g, k)->name);
        memcpy(d->inputs[k].data, t[k].data, nb);
        d->n = k + 1;
    }
    d->rows = rows;
    return 0;
}

/* Checks n tensors (named, or in graph order when names is NULL) against
 * g's inputs, rows first, and copies them into d.  Tensors the model does
 * not take (labels) are skipped. */
static int
bind_data(const ss_graph_t *g, int n, const ss_tensor_t *given,
          const char *const *names, ss__job_data_t *d, ss_err_t *err)
{
    ss_tensor_t ordered[SS_JOB_MAX_INPUTS];
    int64_t rows;
    int rc;

    if (ss_graph_num_inputs(g) > SS_JOB_MAX_INPUTS)
        return ss_err_set(err, SS_EUNSUPP, "too many model inputs");
    if ((rc = ss_graph_check_inputs(g, n, given, names,
                                    SS_INPUTS_ROWS | SS_INPUTS_EXTRA_OK,
                                    ordered, &rows, err)) < 0)
        return rc;
    return take_inputs(g, ordered, rows, d, err);
}

int
ss__jobs_bind_inputs(const ss_graph_t *g, const ss_kserve_request_t *kr,
                     ss__job_data_t *d, ss_err_t *err)
{
    ss_tensor_t given[SS_JOB_MAX_INPUTS];
    const char *names[SS_JOB_MAX_INPUTS];
    int i;

    if (kr->n_inputs > SS_JOB_MAX_INPUTS)
        return ss_err_set(err, SS_EINVAL, "more than %d inputs",
                          SS_JOB_MAX_INPUTS);
    for (i = 0; i < kr->n_inputs; i++) {
        names[i] = kr->inputs[i].name;
        given[i].dtype = kr->inputs[i].dtype;
        given[i].ndim = kr->inputs[i].ndim;
        memcpy(given[i].dims, kr->inputs[i].dims, sizeof(given[i].dims));
        given[i].data = kr->inputs[i].data;
    }
    return bind_data(g, kr->n_inputs, given, names, d, err);
}

static int
take_labels(const ss_tensor_t *t, ss__job_data_t *d, ss_err_t *err)
{
    int64_t *p, i, n;

    if (t->ndim != 1 || t->dims[0] != d->rows)
        return ss_err_set(err, SS_EINVAL, "labels must have shape [%lld]",
                          (long long)d->rows);
    if (t->dtype != SS_DTYPE_I64 && t->dtype != SS_DTYPE_I32 &&
        t->dtype != SS_DTYPE_U8)
        return ss_err_set(err, SS_EINVAL, "labels must be integers");
    n = t->dims[0];
    if ((p = ss_aligned_alloc((size_t)n * sizeof(*p))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    for (i = 0; i < n; i++)
        p[i] = t->dtype == SS_DTYPE_I64   ? ((const int64_t *)t->data)[i]
               : t->dtype == SS_DTYPE_I32 ? ((const int32_t *)t->data)[i]
                                          : ((const uint8_t *)t->data)[i];
    d->labels.dtype = SS_DTYPE_I64;
    d->labels.ndim = 1;
    d->labels.dims[0] = n;
    d->labels.data = p;
    d->has_labels = true;
    return 0;
}

/* Opens the data file name in the model's folder for reading: relative
 * to the folder's descriptor, never through a symbolic link (O_NOFOLLOW),
 * never waiting for a writer (O_NONBLOCK: a FIFO opens at once and is
 * refused as not a regular file), and only a regular file within the size
 * limit, which fstat tells without reading it.  Messages name the file
 * as the request did, never its path. */
static int
open_data(const ss_jobs_t *js, const ss__job_t *j, const char *name,
          int *out, ss_err_t *err)
{
    char dir[4096];
    struct stat st;
    int dfd, fd = -1, rc = 0;

    *out = -1;
    if (snprintf(dir, sizeof(dir), "%s/%s", js->repo, j->model) >=
        (int)sizeof(dir))
        return ss_err_set(err, SS_EINVAL, "%s: path too long", name);
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return ss_err_set(err, SS_ENOTFOUND, "%s: the model's folder cannot "
                          "be opened: %s", name, strerror(errno));
    if ((fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
                                    O_CLOEXEC)) < 0) {
        if (errno == ELOOP)
            rc = ss_err_set(err, SS_EINVAL, "%s is a symbolic link: data "
                            "files must be regular files in the model's "
                            "folder", name);
        else if (errno == ENOENT)
            rc = ss_err_set(err, SS_EINVAL, "%s: no such file in the "
                            "model's folder", name);
        else
            rc = ss_err_set(err, SS_EINVAL, "%s: %s", name, strerror(errno));
    } else if (fstat(fd, &st) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: %s", name, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = ss_err_set(err, SS_EINVAL, "%s is not a regular file (a FIFO, "
                        "device or folder): data files must be regular "
                        "files", name);
    } else if (st.st_size > js->max_data_bytes) {
        rc = ss_err_set(err, SS_ETOOBIG, "%s: %lld bytes, over the limit of "
                        "%lld (max_job_data_bytes)", name,
                        (long long)st.st_size, (long long)js->max_data_bytes);
    } else {
        *out = fd;
        fd = -1;
    }
    if (fd >= 0)
        close(fd);
    close(dfd);
    return rc;
}

/* [worker: the job thread] Reads d->file into d. */
static int
load_file(ss__job_t *j, ss__job_data_t *d, ss_err_t *err)
{
    ss_jobs_t *js = j->owner;
    const ss_graph_t *g = j->src->graph;
    ss_npz_t *z = NULL;
    ss_tensor_t t = { 0 }, *given = NULL;
    const char **names = NULL;
    size_t n = strlen(d->file), cap = (size_t)js->max_data_bytes;
    int i, k, fd = -1, rc = 0;

    if ((rc = open_data(js, j, d->file, &fd, err)) < 0)
        return rc;
    if (strcmp(d->file + n - 4, ".npy") == 0) {
        if (ss_graph_num_inputs(g) != 1) {
            rc = ss_err_set(err, SS_EINVAL, "%s: an .npy file serves only "
                            "models with one input", d->file);
            goto done;
        }
        if ((rc = ss_npy_read_fd(fd, d->file, cap, &t, err)) < 0)
            goto done;
        if ((rc = bind_data(g, 1, &t, NULL, d, err)) < 0 && rc != SS_ENOMEM)
            rc = ss_err_wrap(err, SS_EINVAL, "%s", d->file);
        goto done;
    }
    /* Arrays are capped like the file: a deflated entry cannot inflate
     * past the limit either. */
    if ((rc = ss_npz_read_fd(fd, d->file, cap, &z, err)) < 0)
        goto done;
    /* Arrays are named after the model's inputs; "labels" is the one
     * other array read. */
    n = (size_t)ss_npz_count(z);
    if ((given = ss_calloc(n + 1, sizeof(*given))) == NULL ||
        (names = ss_calloc(n + 1, sizeof(*names))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < (int)n; i++) {
        names[i] = ss_npz_name(z, i);
        given[i] = *ss_npz_tensor(z, i);
    }
    if ((rc = bind_data(g, (int)n, given, names, d, err)) < 0) {
        if (rc != SS_ENOMEM)
            ss_err_wrap(err, rc, "%s", d->file);
        goto done;
    }
    if ((k = ss_npz_find(z, "labels")) >= 0)
        rc = take_labels(ss_npz_tensor(z, k), d, err);
done:
    if (fd >= 0)
        close(fd);
    ss_tensor_free_data(&t);
    ss_free(given);
    ss_free(names);
    ss_npz_free(z);
    /* A file the request names but that cannot be used is bad input. */
    if (rc < 0 && rc != SS_ENOMEM && rc != SS_ETOOBIG) {
        rc = SS_EINVAL;
        if (err != NULL)
            err->code = rc;
    }
    return rc;
}

int
ss__jobs_load_data(ss_jobs_t *js, ss__job_t *j, ss__job_data_t *d,
                   ss_err_t *err)
{
    ss_sampler_t *s;
    int64_t rows;

    switch (d->kind) {
    case SS__JOB_DATA_FILE:
        return d->n > 0 ? 0 : load_file(j, d, err);
    case SS__JOB_DATA_TRAFFIC:
        s = ss_model_sampler(j->src->model);
        rows = s ? ss_sampler_snapshot(s, 1 << 20,
                                       ss_graph_num_inputs(j->src->graph),
                                       d->inputs, err)
                 : 0;
        if (rows < 0)
            return (int)rows;
        if (rows == 0)
            return ss_err_set(err, SS_EINVAL, "the traffic sample ring is "
                              "empty: send requests first");
        d->n = ss_graph_num_inputs(j->src->graph);
        d->rows = rows;
        return 0;
    default:
        return 0;
    }
}

void
ss__jobs_as_dataset(const ss__job_data_t *d, ss_dataset_t *out)
{
    out->n_inputs = d->n;
    out->inputs = (ss_tensor_t *)d->inputs;
    out->rows = d->rows;
    out->labels = d->has_labels ? &d->labels : NULL;
}

/* ---- the variant folder --------------------------------------------------- */

static void
remove_tree(const char *dir)
{
    struct dirent *e;
    char path[4200];
    DIR *d = opendir(dir);

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int64_t
next_version(const char *dir)
{
    struct dirent *e;
    int64_t best = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return 1;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long long v = strtoll(e->d_name, &end, 10);

        if (*end == '\0' && v > best && e->d_name[0] != '-')
            best = v;
    }
    closedir(d);
    return best + 1;
}

/* Writes model.onnx and variant.json into a temporary folder and renames
 * it to the next version number.  Both files are atomic files (synced,
 * and the folder with them); the folder is published with
 * ss_atomic_rename. */
int
ss__jobs_write_version(ss_jobs_t *js, ss__job_t *j, const ss_graph_t *graph,
                       json_t *variant, bool stop_on_cancel, int64_t *version,
                       ss_err_t *err)
{
    char mdir[4096], tmp[4200], path[4300], final[4200];
    ss_atomic_file_t af = { .fd = -1 };
    char *text = NULL;
    struct stat st;
    int64_t v;
    int rc;

    snprintf(mdir, sizeof(mdir), "%s/%s", js->repo, j->model);
    snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "%lld", mdir,
             (long long)j->id);
    remove_tree(tmp);
    if (mkdir(tmp, 0755) < 0)
        return ss_err_set(err, SS_EIO, "%s: %s", tmp, strerror(errno));
    snprintf(path, sizeof(path), "%s/model.onnx", tmp);
    if ((rc = ss_graph_save_onnx(graph, path, err)) < 0)
        goto fail;
    if (variant == NULL ||
        (text = json_dumps(variant, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) ==
            NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/variant.json", tmp);
    if ((rc = ss_atomic_open(&af, path, err)) < 0 ||
        (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0 ||
        (rc = ss_atomic_commit(&af, err)) < 0)
        goto fail;
    if (stop_on_cancel && atomic_load(&j->cancel)) {
        rc = ss_err_set(err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    v = next_version(mdir);
    snprintf(final, sizeof(final), "%s/%lld", mdir, (long long)v);
    if ((rc = ss_atomic_rename(tmp, final, err)) < 0) {
        if (stat(final, &st) != 0)
            goto fail;
        /* In place, but the rename may not survive a crash. */
        ss_log_warn("model=%s@%lld: %s", j->model, (long long)v,
                    err != NULL ? err->msg : "directory not synced");
        rc = 0;
    }
    *version = v;
    ss_log_notice("model=%s@%lld written by job %lld", j->model,
                  (long long)v, (long long)j->id);
    free(text);
    return 0;
fail:
    ss_atomic_abort(&af);
    free(text);
    remove_tree(tmp);
    return rc;
}

/* A lora job's adapter (docs/lora.md): written into a temporary folder
 * under the model's adapters/ (hidden: the loader skips names starting
 * with '.'), published as adapters/<name> by ss_atomic_rename.  An
 * adapter of that name already there is renamed away first and removed
 * after, so a reader sees the old files or the new ones, never a mix.
 * Then, when the active version serves adapters (it had an adapters/
 * folder when it loaded), the adapter is loaded into it at once, as an
 * admin load would: result gets "adapter" and "loaded". */
static int
write_adapter(ss_jobs_t *js, ss__job_t *j, const ss_lora_adapter_t *a,
              json_t *result, ss_err_t *err)
{
    char mdir[4096], adir[4200], tmp[4400], dst[4400], old[4400];
    ss_version_t *act = NULL;
    struct stat st;
    bool loaded = false;
    ss_err_t le = { 0 };
    int rc;

    snprintf(mdir, sizeof(mdir), "%s/%s", js->repo, j->model);
    snprintf(adir, sizeof(adir), "%s/adapters", mdir);
    snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "adapter-%lld", adir,
             (long long)j->id);
    snprintf(old, sizeof(old), "%s/" TMP_PREFIX "old-%lld", adir,
             (long long)j->id);
    snprintf(dst, sizeof(dst), "%s/%s", adir, a->name);
    if ((mkdir(adir, 0755) < 0 && errno != EEXIST)
        || (remove_tree(tmp), mkdir(tmp, 0755) < 0))
        return ss_err_set(err, SS_EIO, "%s: %s", tmp, strerror(errno));
    if ((rc = ss_lora_adapter_write(a, tmp, err)) < 0)
        goto fail;
    if (atomic_load(&j->cancel)) {
        rc = ss_err_set(err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    if (stat(dst, &st) == 0 && rename(dst, old) < 0) {
        rc = ss_err_set(err, SS_EIO, "%s: %s", dst, strerror(errno));
        goto fail;
    }
    if ((rc = ss_atomic_rename(tmp, dst, err)) < 0 && stat(dst, &st) != 0)
        goto fail;
    remove_tree(old);
    ss_log_notice("model=%s adapter '%s' written by job %lld", j->model,
                  a->name, (long long)j->id);
    if (ss_registry_acquire(js->reg, j->model, 0, &act, NULL) == 0
        && act->lora != NULL) {
        if (ss_lora_load(act->lora, mdir, a->name, &le) == 0)
            loaded = true;
        else
            ss_log_warn("model=%s adapter '%s' written but not loaded: %s",
                        j->model, a->name, le.msg);
    }
    ss_version_unref(act);
    json_object_set_new(result, "adapter", json_string(a->name));
    json_object_set_new(result, "loaded", json_boolean(loaded));
    return 0;
fail:
    remove_tree(tmp);
    return rc;
}

/* ".<name>.tmp.XXXXXX": a file ss_atomic_open made and nobody
 * committed (common/atomicfile.c). */
static bool
is_atomic_leftover(const char *name)
{
    const char *t = strstr(name, ".tmp.");
    size_t i;

    if (name[0] != '.' || t == NULL || t == name)
        return false;
    while (strstr(t + 1, ".tmp.") != NULL)
        t = strstr(t + 1, ".tmp.");
    for (i = 0; i < 6; i++)
        if (!isalnum((unsigned char)t[5 + i]))
            return false;
    return t[11] == '\0';
}

/* Removes what an interrupted writer left in dir: temporary variant
 * folders (dirs) and uncommitted atomic files; not following links. */
static void
clean_dir(const char *dir, bool dirs)
{
    struct dirent *e;
    char path[4400];
    struct stat st;
    DIR *d = opendir(dir);

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
                (int)sizeof(path) ||
            lstat(path, &st) < 0)
            continue;
        if (dirs && S_ISDIR(st.st_mode) &&
            strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            ss_log_notice("removing %s left by an interrupted job", path);
            remove_tree(path);
        } else if (S_ISREG(st.st_mode) && is_atomic_leftover(e->d_name)) {
            ss_log_notice("removing %s left by an interrupted write", path);
            unlink(path);
        }
    }
    closedir(d);
}

void
ss_jobs_clean_repository(const char *repo)
{
    struct dirent *m, *v;
    char mdir[4096], vdir[4400];
    DIR *d = opendir(repo), *md;

    if (d == NULL)
        return;
    clean_dir(repo, false);
    while ((m = readdir(d)) != NULL) {
        if (m->d_name[0] == '.' ||
            snprintf(mdir, sizeof(mdir), "%s/%s", repo, m->d_name) >=
                (int)sizeof(mdir))
            continue;
        clean_dir(mdir, true);
        /* Version folders: files written into them in place. */
        if ((md = opendir(mdir)) == NULL)
            continue;
        while ((v = readdir(md)) != NULL) {
            if (v->d_name[0] < '1' || v->d_name[0] > '9' ||
                snprintf(vdir, sizeof(vdir), "%s/%s", mdir, v->d_name) >=
                    (int)sizeof(vdir))
                continue;
            clean_dir(vdir, false);
        }
        closedir(md);
    }
    closedir(d);
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
        if ((rc = write_adapter(js, j, res.adapter, result, &err)) < 0)
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
