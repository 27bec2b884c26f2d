/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A compress job handed to mpirun: "workers": {"mpirun": [args...]}.
 *
 * DESIGN: the daemon does not link MPI (only slimserve-train does), so a
 * data-parallel job is a child process: the job thread writes the body
 * (without "workers" and "activate", with the job's source version) as a
 * temporary job file in the model's folder, pins the served version in
 * config.json as its own jobs do, and runs
 *
 *   mpirun ARGS... <dir of the daemon>/slimserve-train JOB --model-dir DIR
 *
 * slimserve-train's process 0 writes the version folder the same atomic
 * way and prints the result JSON, which becomes the job's result; the
 * job then activates like any other (on the loop).  Its stderr lines are
 * the job's step while it runs ("finetune: epoch 2/3 loss ...").  Cancel
 * sends SIGTERM to mpirun (it ends every process; nothing is written),
 * SIGKILL 10 s later.  The child inherits the job thread's CPUs and
 * priority, so the processes stay off the serving CPUs.  The request is
 * refused at submit when this build has no MPI, when mpirun or
 * slimserve-train is missing, or when a data source is not a file
 * (slimserve-train reads files only).
 *
 * THREADS: parse [loop]; run [job thread]; the job's step under the
 * jobs lock.
 */
#include "config.h"

#include "server/jobs/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"

#ifdef HAVE_MPI
#define BUILT_WITH_MPI 1
#else
#define BUILT_WITH_MPI 0        /* refused at submit; the rest compiles */
#endif
#define MAX_ARGS 32
#define MAX_OUT (16 << 20)      /* the result JSON */

extern char **environ;

void
ss__jobs_mpi_clear(ss__job_t *j)
{
    for (int i = 0; i < j->n_mpirun; i++)
        ss_free(j->mpirun[i]);
    ss_free(j->mpirun);
    j->mpirun = NULL;
    j->n_mpirun = 0;
}

/* slimserve-train beside this executable, into buf. */
static int
train_path(char *buf, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (n <= 0)
        return -1;
    self[n] = '\0';
    if ((slash = strrchr(self, '/')) == NULL)
        return -1;
    *slash = '\0';
    if (snprintf(buf, len, "%s/slimserve-train", self) >= (int)len)
        return -1;
    return access(buf, X_OK);
}

/* Is name an executable in PATH? */
static bool
in_path(const char *name)
{
    const char *p = getenv("PATH");
    char dir[PATH_MAX], path[PATH_MAX + 64];

    while (p != NULL && *p != '\0') {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);

        if (n > 0 && n < sizeof(dir)) {
            memcpy(dir, p, n);
            dir[n] = '\0';
            snprintf(path, sizeof(path), "%s/%s", dir, name);
            if (access(path, X_OK) == 0)
                return true;
        }
        p = e ? e + 1 : NULL;
    }
    return false;
}

int
ss__jobs_mpi_parse(ss__job_t *j, json_t *workers, ss_err_t *err)
{
    json_t *args = json_object_get(workers, "mpirun"), *a;
    char tp[PATH_MAX];
    size_t i;

    if (!json_is_object(workers) || json_object_size(workers) != 1
        || !json_is_array(args) || json_array_size(args) > MAX_ARGS)
        return ss_err_set(err, SS_EINVAL, "workers must be {\"mpirun\": "
                          "[up to %d arguments]}", MAX_ARGS);
    if (!BUILT_WITH_MPI)
        return ss_err_set(err, SS_EINVAL, "workers.mpirun: this slimserve "
                          "was built without MPI (configure found no Open "
                          "MPI: install libopenmpi-dev and openmpi-bin)");
    if (!in_path("mpirun"))
        return ss_err_set(err, SS_EINVAL, "workers.mpirun: no mpirun in "
                          "PATH (install openmpi-bin)");
    if (train_path(tp, sizeof(tp)) < 0)
        return ss_err_set(err, SS_EINVAL, "workers.mpirun: no "
                          "slimserve-train beside the daemon");
    if ((j->calib.kind != SS__JOB_DATA_NONE
         && j->calib.kind != SS__JOB_DATA_FILE)
        || (j->val.kind != SS__JOB_DATA_NONE
            && j->val.kind != SS__JOB_DATA_FILE)
        || (j->train.kind != SS__JOB_DATA_NONE
            && j->train.kind != SS__JOB_DATA_FILE))
        return ss_err_set(err, SS_EINVAL, "workers.mpirun: every data "
                          "source must be a file ({\"file\": \"x.npz\"}): "
                          "the processes read it themselves");
    json_array_foreach(args, i, a) {
        const char *s = json_string_value(a);

        if (s == NULL || s[0] == '\0' || strlen(s) > 255)
            return ss_err_set(err, SS_EINVAL, "workers.mpirun[%zu] must be "
                              "a non-empty string of at most 255 bytes", i);
    }
    if ((j->mpirun = ss_calloc(json_array_size(args) + 1,
                               sizeof(char *))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    json_array_foreach(args, i, a) {
        if ((j->mpirun[i] = ss_strdup(json_string_value(a))) == NULL) {
            ss__jobs_mpi_clear(j);
            return ss_err_set(err, SS_ENOMEM, "out of memory");
        }
        j->n_mpirun++;
    }
    return 0;
}

/* The job file: the request without workers and activate, pinned to the
 * job's source version.  Returns 0 with path set. */
static int
write_job(ss_jobs_t *js, ss__job_t *j, char *path, size_t len,
          ss_err_t *err)
{
    json_t *body = json_deep_copy(j->request);
    int rc = 0;

    snprintf(path, len, "%s/%s/.slimserve-tmp-mpijob-%lld.json", js->repo,
             j->model, (long long)j->id);
    if (body == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    json_object_del(body, "workers");
    json_object_del(body, "activate");
    if (json_object_set_new(body, "source_version",
                            json_integer(j->src->number)) < 0
        || json_dump_file(body, path, JSON_COMPACT) < 0)
        rc = ss_err_set(err, SS_EIO, "%s: cannot write the job file", path);
    json_decref(body);
    return rc;
}

/* Keeps the last complete stderr line as the job's step. */
static void
on_line(ss_jobs_t *js, ss__job_t *j, const char *line)
{
    if (line[0] == '\0' || line[0] == '-')
        return;                 /* mpirun's banners */
    pthread_mutex_lock(&js->lock);
    snprintf(j->step, sizeof(j->step), "mpirun: %.55s", line);
    pthread_mutex_unlock(&js->lock);
}

void
ss__jobs_mpi_run(ss_jobs_t *js, ss__job_t *j)
{
    char jobf[4400], mdir[4200], tp[PATH_MAX], line[1024], last[512] = "";
    char *argv[MAX_ARGS + 8], *out = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int po[2] = { -1, -1 }, pe[2] = { -1, -1 }, n = 0, i, rc, status = 0;
    size_t nout = 0, nline = 0;
    bool fa_ok = false, at_ok = false, termed = false;
    double t_term = 0;
    json_t *result = NULL;
    json_error_t je;
    ss_err_t err = { 0 };
    pid_t pid = -1;
    sigset_t none, deflt;

    snprintf(mdir, sizeof(mdir), "%s/%s", js->repo, j->model);
    jobf[0] = '\0';
    if (train_path(tp, sizeof(tp)) < 0) {
        rc = ss_err_set(&err, SS_EINVAL, "no slimserve-train beside the "
                        "daemon");
        goto fail;
    }
    if ((rc = write_job(js, j, jobf, sizeof(jobf), &err)) < 0
        || (rc = ss__jobs_pin_active(js, j, &err)) < 0)
        goto fail;
    argv[n++] = "mpirun";
    for (i = 0; i < j->n_mpirun; i++)
        argv[n++] = j->mpirun[i];
    argv[n++] = tp;
    argv[n++] = jobf;
    argv[n++] = "--model-dir";
    argv[n++] = mdir;
    argv[n] = NULL;
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0
        || (errno = posix_spawn_file_actions_init(&fa)) != 0) {
        rc = ss_err_set(&err, SS_EIO, "mpirun: %s", strerror(errno));
        goto fail;
    }
    fa_ok = true;
    if ((errno = posix_spawnattr_init(&at)) != 0) {
        rc = ss_err_set(&err, SS_EIO, "mpirun: %s", strerror(errno));
        goto fail;
    }
    at_ok = true;
    /* The daemon's handlers and masks are not the child's. */
    sigemptyset(&none);
    sigfillset(&deflt);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &deflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK
                                  | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if ((errno = posix_spawnp(&pid, "mpirun", &fa, &at, argv, environ))
        != 0) {
        pid = -1;
        rc = ss_err_set(&err, SS_EIO, "mpirun: %s", strerror(errno));
        goto fail;
    }
    ss_log_notice("job %lld (model=%s): mpirun pid %ld", (long long)j->id,
                  j->model, (long)pid);
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    while (po[0] >= 0 || pe[0] >= 0) {
        struct pollfd pf[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
        char buf[4096];
        ssize_t r;

        if (atomic_load(&j->cancel) && !termed) {
            kill(pid, SIGTERM);
            termed = true;
            t_term = ss_clock_mono_s();
        } else if (termed && ss_clock_mono_s() - t_term > 10) {
            kill(pid, SIGKILL);
        }
        if (poll(pf, 2, 200) < 0 && errno != EINTR)
            break;
        if (po[0] >= 0 && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            r = read(po[0], buf, sizeof(buf));
            if (r <= 0) {
                close(po[0]);
                po[0] = -1;
            } else if (nout + (size_t)r <= MAX_OUT) {
                char *p = ss_realloc(out, nout + (size_t)r + 1);

                if (p != NULL) {
                    out = p;
                    memcpy(out + nout, buf, (size_t)r);
                    nout += (size_t)r;
                    out[nout] = '\0';
                }
            }
        }
        if (pe[0] >= 0 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            r = read(pe[0], buf, sizeof(buf));
            if (r <= 0) {
                close(pe[0]);
                pe[0] = -1;
                continue;
            }
            for (ssize_t k = 0; k < r; k++) {
                if (buf[k] != '\n' && nline < sizeof(line) - 1) {
                    line[nline++] = buf[k];
                    continue;
                }
                if (buf[k] != '\n')
                    continue;
                line[nline] = '\0';
                nline = 0;
                on_line(js, j, line);
                if (strncmp(line, "slimserve-train: ", 17) == 0)
                    snprintf(last, sizeof(last), "%.500s", line + 17);
            }
        }
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    unlink(jobf);
    jobf[0] = '\0';
    if (termed || atomic_load(&j->cancel)) {
        rc = ss_err_set(&err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 0
                              || WEXITSTATUS(status) == 1)) {
        result = out ? json_loads(out, 0, &je) : NULL;
        if (!json_is_object(result)) {
            rc = ss_err_set(&err, SS_EIO, "mpirun: slimserve-train's "
                            "result is not JSON");
            goto fail;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) {
        ss__jobs_finish(js, j, SS__JOB_REJECTED, result, "the variant did "
                        "not pass the gate; nothing was written or "
                        "activated");
        result = NULL;
        goto done;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        rc = ss_err_set(&err, SS_EIO, "mpirun %s %d: %s",
                        WIFEXITED(status) ? "exited with status"
                                          : "ended by signal",
                        WIFEXITED(status) ? WEXITSTATUS(status)
                                          : WTERMSIG(status),
                        last[0] ? last : "no message");
        goto fail;
    }
    if (!json_is_integer(json_object_get(result, "version"))) {
        rc = ss_err_set(&err, SS_EIO, "mpirun: the result names no version");
        goto fail;
    }
    ss__jobs_written(js, j, result,
                     json_integer_value(json_object_get(result, "version")));
    result = NULL;
    goto done;
fail:
    ss__jobs_finish(js, j, rc == SS_ECANCELED ? SS__JOB_CANCELLED
                                              : SS__JOB_FAILED,
                    NULL, err.msg);
done:
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    if (jobf[0] != '\0')
        unlink(jobf);
    for (i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    json_decref(result);
    ss_free(out);
}
