/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A job's data (jobs.h: "calibration", "validation", "training"): npz or
 * npy files under the model's folder, inline tensors, or sampled live
 * traffic, checked against the graph's inputs and laid out in graph
 * order, with optional integer labels.
 *
 * THREADS: [job thread], on the job it runs.
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/io/npy.h"
#include "server/model/sampler.h"

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
