/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the training methods (finetune, distill, qat) add to a job: the
 * student files of distill, and training progress in the job's status.
 *
 * DESIGN: a student file is read by the job thread, like the data files
 * (the loop never waits for a disk), from the model's folder by a plain
 * name, never through a symbolic link, only a regular file within the
 * data limit; it must take the source's inputs and give its outputs
 * (ss_distill_check_student), or the job fails naming the file.  The job
 * owns the graphs; the methods borrow them.
 *
 * Progress: after every training step the compress thread reports where
 * it is (ss_train_progress_t); the job keeps the last report under the
 * jobs lock and GET /admin/jobs/{id} shows it as "training": epoch and
 * step of how many, the loss of the last step and the epoch's mean, the
 * learning rate, the validation metric of the last finished epoch,
 * samples per second and the ETA in seconds.
 *
 * THREADS: ss__jobs_train_load runs on the job thread;
 * ss__jobs_training_json under the jobs lock on any thread.
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"

/* The bytes of a plain file name in folder dir (see the essay). */
static int
read_file(const char *dir, const char *name, int64_t max, void **out,
          size_t *len, ss_err_t *err)
{
    struct stat st;
    char *buf = NULL;
    size_t got = 0;
    int dfd, fd = -1, rc = 0;
    ssize_t n;

    *out = NULL;
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return ss_err_set(err, SS_ENOTFOUND, "%s: the model's folder cannot "
                          "be opened: %s", name, strerror(errno));
    fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    close(dfd);
    if (fd < 0)
        return ss_err_set(err, SS_EINVAL, "%s: %s", name,
                          errno == ELOOP ? "a symbolic link: a student must "
                          "be a regular file in the model's folder"
                          : errno == ENOENT ? "no such file in the model's "
                          "folder" : strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = ss_err_set(err, SS_EINVAL, "%s is not a regular file", name);
        goto done;
    }
    if (st.st_size > max) {
        rc = ss_err_set(err, SS_ETOOBIG, "%s: %lld bytes, over the limit of "
                        "%lld", name, (long long)st.st_size,
                        (long long)max);
        goto done;
    }
    if ((buf = ss_malloc((size_t)st.st_size + 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %s", name);
        goto done;
    }
    while (got < (size_t)st.st_size) {
        n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = ss_err_set(err, SS_EIO, "%s: %s", name,
                            n < 0 ? strerror(errno) : "shorter than stat "
                            "said");
            goto done;
        }
        got += (size_t)n;
    }
    *out = buf;
    *len = got;
    buf = NULL;
done:
    ss_free(buf);
    close(fd);
    return rc;
}

int
ss__jobs_train_load(ss__job_t *j, const char *repo, int64_t max_bytes,
                    ss_err_t *err)
{
    char dir[4096];
    int i, rc;

    if (snprintf(dir, sizeof(dir), "%s/%s", repo, j->model)
        >= (int)sizeof(dir))
        return ss_err_set(err, SS_EINVAL, "path too long");
    for (i = 0; i < j->n_methods; i++) {
        ss_method_t *m = &j->methods[i];
        void *buf = NULL;
        size_t len = 0;

        if (m->kind != SS_METHOD_DISTILL || !m->u.train.student_file[0]
            || j->students[i] != NULL)
            continue;
        if ((rc = read_file(dir, m->u.train.student_file, max_bytes, &buf,
                            &len, err)) < 0)
            return ss_err_wrap(err, rc, "distill: student");
        rc = ss_graph_load_onnx_buffer(buf, len, &j->students[i], err);
        ss_free(buf);
        if (rc < 0)
            return ss_err_wrap(err, rc == SS_ENOMEM ? rc : SS_EINVAL,
                               "distill: student %s",
                               m->u.train.student_file);
        if ((rc = ss_distill_check_student(j->src->graph, j->students[i],
                                           err)) < 0)
            return ss_err_wrap(err, rc, "%s", m->u.train.student_file);
        m->u.train.student = j->students[i];
    }
    return 0;
}

void
ss__jobs_train_clear(ss__job_t *j)
{
    int i;

    for (i = 0; i < SS_JOB_MAX_METHODS; i++) {
        ss_graph_free(j->students[i]);
        j->students[i] = NULL;
        if (j->methods[i].kind == SS_METHOD_DISTILL)
            j->methods[i].u.train.student = NULL;
    }
}

/* A finite number, or null. */
static json_t *
number(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

json_t *
ss__jobs_training_json(const ss__job_t *j)
{
    const ss_train_progress_t *p = &j->tp;
    json_t *o;

    if (!j->has_tp)
        return NULL;
    o = json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:o, s:o, s:o, s:o, "
                  "s:o}",
                  "method", p->method, "epoch", p->epoch,
                  "epochs", p->epochs, "step", (json_int_t)p->step,
                  "steps", (json_int_t)p->steps,
                  "samples", (json_int_t)p->samples,
                  "loss", number(p->loss),
                  "epoch_loss", number(p->epoch_loss),
                  "lr", number(p->lr),
                  "samples_per_s", number(p->samples_per_s),
                  "eta_s", number(p->eta_s));
    if (o != NULL && p->val_metric >= 0)
        json_object_set_new(o, strcmp(p->val_name, "accuracy") == 0
                               ? "val_accuracy" : "val_agreement",
                            json_real(p->val_metric));
    return o;
}
