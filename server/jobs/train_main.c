/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve-train: a compression job without the daemon.
 *
 *   slimserve-train JOB.json --model-dir DIR [--threads N]
 *                   [--latency-runs N]
 *
 * JOB.json is the body of POST /admin/models/{m}/compress, read by the
 * same parsers (compress/params_json.c): "methods" (finetune, distill and
 * qat included), "calibration", "validation", "training" as {"file":
 * "x.npz"} in DIR, "gate", "source_version" (default: config.json's
 * active version, else the highest version folder).  The job runs the
 * same pipeline (ss_compress_run); progress goes to stderr (a line per
 * training epoch), the result JSON to stdout.  When the gate holds, the
 * variant becomes DIR/<next version>/ (model.onnx and variant.json) the
 * way the daemon writes it: a temporary folder, fsynced, renamed, after
 * config.json pins the served version so a daemon's "latest" policy does
 * not pick the new folder by itself.
 *
 * For a user's batch pipeline, and for data-parallel runs across
 * processes.  "traffic" and inline tensors need the daemon; "activate"
 * is the daemon's (POST .../versions/{v}/activate): both are refused.
 * SIGINT or SIGTERM cancels between steps: no version is written.
 *
 * Data parallelism (built when configure finds MPI):
 *
 *   mpirun -np N slimserve-train JOB.json --model-dir DIR
 *
 * Every process reads the job and the data and runs the same pipeline;
 * the training methods train on its shard of every global batch, with
 * the gradients summed over the processes and the optimizer state cut
 * in N (ZeRO-1; compress/train/train.h, compress/train/mpi/).  All end
 * with the same variant: process 0 alone writes it (the same atomic
 * folder) and prints the result; the others print their share to
 * stderr.  The processes agree after reading the job, so a bad job
 * fails on all with the reason, and again after the write; a failure
 * during the run ends the whole run (MPI_Abort: the others wait in a
 * collective), and a process that dies makes mpirun end the others --
 * either way before process 0 writes, so no version appears.  Under
 * mpirun, signals are mpirun's: it forwards SIGINT/SIGTERM and ends the
 * run, which writes nothing.  Without a launcher's environment MPI is
 * not initialised and this is the one-process program above.
 *
 * Exit status: 0 a version was written, 1 the gate rejected the variant
 * (nothing written), 2 a bad job or a failure (a message on stderr).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "common/clock.h"
#include "compress/compress.h"
#include "engine/io/npy.h"
#include "engine/ir/edit.h"
#include "server/model/modelcfg.h"
#ifdef HAVE_MPI
#include "compress/train/mpi/trainmpi.h"
#endif

#define MAX_METHODS 8
#define MAX_INPUTS 64

static atomic_int cancel_flag;

static void
on_signal(int sig)
{
    (void)sig;
    atomic_store(&cancel_flag, 1);
}

/* A data file of the job, bound to the graph's inputs. */
typedef struct data {
    ss_npz_t *z;
    ss_tensor_t npy;            /* an .npy file's tensor (owned) */
    ss_tensor_t inputs[MAX_INPUTS]; /* borrowed from z or npy */
    ss_tensor_t labels;         /* owned, I64 */
    ss_dataset_t ds;
    bool given;
} data_t;

static void
data_free(data_t *d)
{
    ss_npz_free(d->z);
    ss_tensor_free_data(&d->npy);
    ss_free(d->labels.data);
    memset(d, 0, sizeof(*d));
}

static int
plain_name(const char *f, const char *ext)
{
    size_t n = f ? strlen(f) : 0, e = strlen(ext);

    return n > e && n < 256 && strchr(f, '/') == NULL && f[0] != '.'
           && strcmp(f + n - e, ext) == 0;
}

static int
load_data(const char *dir, const ss_graph_t *g, json_t *v, const char *what,
          data_t *d, ss_err_t *err)
{
    const char *file = json_string_value(json_object_get(v, "file"));
    ss_tensor_t given[MAX_INPUTS + 1];
    const char *names[MAX_INPUTS + 1];
    char path[4400];
    int n = 0, i, k, rc;

    if (v == NULL)
        return 0;
    if (json_is_string(v) || (json_is_object(v)
                              && json_object_get(v, "inputs") != NULL))
        return ss_err_set(err, SS_EINVAL, "%s: traffic and inline tensors "
                          "need the daemon; give {\"file\": \"x.npz\"}",
                          what);
    if (!json_is_object(v) || json_object_size(v) != 1
        || (!plain_name(file, ".npz") && !plain_name(file, ".npy")))
        return ss_err_set(err, SS_EINVAL, "%s must be {\"file\": name} with "
                          "the name of an .npz or .npy file in the model's "
                          "folder", what);
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (ss_graph_num_inputs(g) > MAX_INPUTS)
        return ss_err_set(err, SS_EUNSUPP, "too many model inputs");
    if (strcmp(file + strlen(file) - 4, ".npy") == 0) {
        if ((rc = ss_npy_read(path, SS_NPY_DEFAULT_MAX_BYTES, &d->npy,
                              err)) < 0)
            return ss_err_wrap(err, rc, "%s", what);
        given[0] = d->npy;
        n = 1;
    } else {
        if ((rc = ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &d->z,
                              err)) < 0)
            return ss_err_wrap(err, rc, "%s", what);
        for (i = 0; i < ss_npz_count(d->z) && n < MAX_INPUTS + 1; i++) {
            names[n] = ss_npz_name(d->z, i);
            given[n++] = *ss_npz_tensor(d->z, i);
        }
    }
    if ((rc = ss_graph_check_inputs(g, n, given, d->z ? names : NULL,
                                    SS_INPUTS_ROWS | SS_INPUTS_EXTRA_OK,
                                    d->inputs, &d->ds.rows, err)) < 0)
        return ss_err_wrap(err, rc, "%s: %s", what, file);
    d->ds.n_inputs = ss_graph_num_inputs(g);
    d->ds.inputs = d->inputs;
    if (d->z != NULL && (k = ss_npz_find(d->z, "labels")) >= 0) {
        const ss_tensor_t *t = ss_npz_tensor(d->z, k);
        int64_t *p, r;

        if (t->ndim != 1 || t->dims[0] != d->ds.rows
            || (t->dtype != SS_DTYPE_I64 && t->dtype != SS_DTYPE_I32))
            return ss_err_set(err, SS_EINVAL, "%s: %s: labels must be "
                              "integers of shape [%lld]", what, file,
                              (long long)d->ds.rows);
        if ((p = ss_malloc((size_t)d->ds.rows * sizeof(*p))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "out of memory");
        for (r = 0; r < d->ds.rows; r++)
            p[r] = t->dtype == SS_DTYPE_I64 ? ((const int64_t *)t->data)[r]
                                            : ((const int32_t *)t->data)[r];
        d->labels.dtype = SS_DTYPE_I64;
        d->labels.ndim = 1;
        d->labels.dims[0] = d->ds.rows;
        d->labels.data = p;
        d->ds.labels = &d->labels;
    }
    d->given = true;
    return 0;
}

/* The highest version folder of dir (0: none). */
static int64_t
highest_version(const char *dir)
{
    struct dirent *e;
    int64_t best = 0;
    DIR *d = opendir(dir);

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long long v = strtoll(e->d_name, &end, 10);

        if (*end == '\0' && e->d_name[0] != '-' && v > best)
            best = v;
    }
    closedir(d);
    return best;
}

static void
on_train(void *arg, const ss_train_progress_t *p)
{
    const char *path = "";

    (void)arg;
    if (!p->epoch_end)
        return;
#ifdef HAVE_MPI
    /* Data parallel: which way the gradients travel (trainmpi.h). */
    if (ss_train_mpi_path(NULL) == SS_TRAIN_MPI_SHM)
        path = "  [mpi: shared memory]";
    else if (ss_train_mpi_path(NULL) == SS_TRAIN_MPI_COLL)
        path = "  [mpi: collectives]";
#endif
    fprintf(stderr, "%s: epoch %d/%d  loss %.5f  %s %.4f  %.0f samples/s  "
            "ETA %.1f s%s\n", p->method, p->epoch, p->epochs, p->epoch_loss,
            p->val_name, p->val_metric, p->samples_per_s, p->eta_s, path);
}

/* A line on stderr each time the job enters a new step ("ptq:
 * calibrating", "evaluating the variant"...), with the wall and CPU
 * seconds since the job started: where a long job spends its time.  A
 * step is named by its text up to the first digit ("finetune: epoch 1/3,
 * step 7/120" is one step with its counters). */
static void
on_progress(void *arg, double fraction, const char *step)
{
    static char last[128];
    static double t0, c0;
    double t = ss_clock_mono_s();
    double c = (double)ss_clock_ns(CLOCK_PROCESS_CPUTIME_ID) / 1e9;
    size_t n;

    (void)arg;
    (void)fraction;
    if (step == NULL)
        return;
    n = strcspn(step, "0123456789");
    if (n >= sizeof(last))
        n = sizeof(last) - 1;
    if (last[0] != '\0' && strlen(last) == n && strncmp(step, last, n) == 0)
        return;
    if (last[0] == '\0') {
        t0 = t;
        c0 = c;
    }
    memcpy(last, step, n);
    last[n] = '\0';
    fprintf(stderr, "slimserve-train: step at %.1f s (cpu %.1f s): %s\n",
            t - t0, c - c0, step);
}

/* DIR/<next>/{model.onnx, variant.json} through a temporary folder. */
static int
write_version(const char *dir, int64_t parent, json_t *methods,
              const ss_compress_result_t *res, json_t *result,
              int64_t *version, ss_err_t *err)
{
    char tmp[4400], path[4500], final[4400];
    ss_atomic_file_t af = { .fd = -1 };
    struct timeval tv;
    json_t *variant = NULL;
    char *text = NULL;
    int rc;

    snprintf(tmp, sizeof(tmp), "%s/.slimserve-tmp-cli-%ld", dir,
             (long)getpid());
    if (mkdir(tmp, 0755) < 0)
        return ss_err_set(err, SS_EIO, "%s: %s", tmp, strerror(errno));
    snprintf(path, sizeof(path), "%s/model.onnx", tmp);
    if ((rc = ss_graph_save_onnx(res->variant, path, err)) < 0)
        goto fail;
    gettimeofday(&tv, NULL);
    variant = json_pack("{s:I, s:O, s:O, s:f, s:s}", "parent_version",
                        (json_int_t)parent, "methods", methods,
                        "measurements", result, "created",
                        (double)tv.tv_sec + tv.tv_usec / 1e6,
                        "written_by", "slimserve-train");
    if (variant == NULL || (text = json_dumps(variant, JSON_INDENT(2)
                                              | JSON_PRESERVE_ORDER))
                           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/variant.json", tmp);
    if ((rc = ss_atomic_open(&af, path, err)) < 0
        || (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0
        || (rc = ss_atomic_commit(&af, err)) < 0)
        goto fail;
    if (atomic_load(&cancel_flag)) {
        rc = ss_err_set(err, SS_ECANCELED, "cancelled");
        goto fail;
    }
    *version = highest_version(dir) + 1;
    snprintf(final, sizeof(final), "%s/%lld", dir, (long long)*version);
    if ((rc = ss_atomic_rename(tmp, final, err)) < 0)
        goto fail;
    free(text);
    json_decref(variant);
    return 0;
fail:
    ss_atomic_abort(&af);
    unlink(path);
    snprintf(path, sizeof(path), "%s/model.onnx", tmp);
    unlink(path);
    rmdir(tmp);
    free(text);
    json_decref(variant);
    return rc;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: slimserve-train JOB.json --model-dir DIR "
            "[--threads N] [--latency-runs N]\n"
            "  runs a compression job (the body of POST /admin/models/M/"
            "compress)\n  on the model folder DIR without the daemon; "
            "exit 0: a version was\n  written, 1: the gate rejected the "
            "variant, 2: error\n"
            "  --latency-runs N: timed runs of each latency in the result "
            "(default 20)\n  stderr: a line per step with the seconds "
            "since the start (wall, CPU)\n"
#ifdef HAVE_MPI
            "  data parallel: MPI (mpirun -np N slimserve-train ...)\n"
#else
            "  data parallel: no (built without MPI)\n"
#endif
            );
}

#ifdef HAVE_MPI
/* OpenMP/oneDNN threads of one of local processes: the CPUs this process
 * may run on, shared by the processes unless mpirun bound each (then the
 * set is already its share). */
static int
default_threads(int local)
{
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine;

    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 1;
    mine = CPU_COUNT(&set);
    if (mine < online)
        return mine > 0 ? mine : 1;
    return mine / local > 0 ? mine / local : 1;
}
#endif

/* What a data-parallel run cannot do, said before any process trains:
 * a batch smaller than the processes, Sophia. */
static int
check_parallel(const ss_method_t *methods, int n, const data_t *train,
               int size, ss_err_t *err)
{
    for (int i = 0; i < n && size > 1; i++) {
        const ss_method_t *m = &methods[i];
        int64_t b;

        if (!SS_METHOD_TRAINS(m->kind))
            continue;
        b = m->u.train.batch_size;
        if (train->given && train->ds.rows < b)
            b = train->ds.rows;
        if (b < size)
            return ss_err_set(err, SS_EINVAL, "%s: a batch of %lld rows "
                              "cannot be split over %d processes",
                              ss_method_name(m->kind), (long long)b, size);
        if (m->u.train.opt.opt == SS_OPT_SOPHIA)
            return ss_err_set(err, SS_EUNSUPP, "%s: sophia is not "
                              "data-parallel (its Hessian estimate samples "
                              "labels in each process): use adamw or sgd",
                              ss_method_name(m->kind));
    }
    return 0;
}

/* A process other than 0: its share, from the training notes. */
static void
print_share(const ss_compress_result_t *res)
{
    json_t *ms = json_object_get(res->details, "methods"), *m, *dp;
    size_t k;

    json_array_foreach(ms, k, m) {
        dp = json_object_get(json_object_get(m, "training"), "data_parallel");
        if (dp == NULL)
            continue;
        fprintf(stderr, "slimserve-train: process %lld/%lld: %lld rows a "
                "step, optimizer state %lld bytes for parameters "
                "[%lld, %lld) of %lld\n",
                (long long)json_integer_value(json_object_get(dp, "rank")),
                (long long)json_integer_value(json_object_get(dp,
                                                              "processes")),
                (long long)json_integer_value(json_object_get(
                    dp, "rows_per_step")),
                (long long)json_integer_value(json_object_get(
                    dp, "optimizer_state_bytes")),
                (long long)json_integer_value(json_array_get(
                    json_object_get(dp, "slice"), 0)),
                (long long)json_integer_value(json_array_get(
                    json_object_get(dp, "slice"), 1)),
                (long long)json_integer_value(json_object_get(
                    dp, "flat_params")));
    }
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model-dir", required_argument, NULL, 'd' },
        { "threads", required_argument, NULL, 't' },
        { "latency-runs", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    static const char *const known[] = { "source_version", "methods",
                                         "calibration", "validation",
                                         "training", "gate", "activate" };
    const char *dir = NULL, *key;
    ss_method_t methods[MAX_METHODS];
    ss_graph_t *students[MAX_METHODS] = { NULL };
    ss_compress_result_t res = { 0 };
    ss_compress_ctl_t ctl = { 0 };
    data_t calib = { 0 }, val = { 0 }, train = { 0 };
    ss_model_config_t mc;
    ss_graph_t *g = NULL;
    ss_gate_t gate;
    ss_err_t err = { 0 };
    json_error_t je;
    json_t *job = NULL, *mj, *v, *result = NULL;
    int64_t src = 0, version = 0;
    char path[4400];
    int n = 0, c, i, rc = -1, status = 2;
    size_t k;
    ss_train_dp_t dp = { .rank = 0, .size = 1 };
    bool mpi = false, quiet = false;
#ifdef HAVE_MPI
    int phase = 0;              /* 0 setting up, 1 agreed, 2 done */

    if (ss_train_mpi_launched()) {
        if (ss_train_mpi_init(&argc, &argv, &dp, &err) < 0) {
            fprintf(stderr, "slimserve-train: %s\n", err.msg);
            return 2;
        }
        mpi = true;
    }
#endif

    while ((c = getopt_long(argc, argv, "d:t:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 't':
            ctl.threads = atoi(optarg);
            break;
        case 'l':
            ctl.latency_runs = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || dir == NULL) {
        usage(stderr);
        return 2;
    }
    if ((job = json_load_file(argv[optind], JSON_REJECT_DUPLICATES, &je))
        == NULL || !json_is_object(job)) {
        ss_err_set(&err, SS_EINVAL, "%s: %s", argv[optind],
                   job ? "not a JSON object" : je.text);
        goto done;
    }
    json_object_foreach(job, key, v) {
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            if (strcmp(key, known[k]) == 0)
                break;
        if (k == sizeof(known) / sizeof(known[0])) {
            ss_err_set(&err, SS_EINVAL, "unknown key '%s'", key);
            goto done;
        }
    }
    if (json_is_true(json_object_get(job, "activate"))) {
        ss_err_set(&err, SS_EINVAL, "activate is the daemon's (POST "
                   "/admin/models/M/versions/V/activate)");
        goto done;
    }
    /* The methods, as the daemon parses them. */
    mj = json_object_get(job, "methods");
    if (json_is_string(mj) || json_is_object(mj)) {
        rc = ss_method_from_json(mj, &methods[0], &err);
        n = 1;
    } else if (json_is_array(mj) && json_array_size(mj) > 0
               && json_array_size(mj) <= MAX_METHODS) {
        json_array_foreach(mj, k, v) {
            if ((rc = ss_method_from_json(v, &methods[k], &err)) < 0) {
                ss_err_wrap(&err, rc, "methods[%zu]", k);
                break;
            }
        }
        n = (int)json_array_size(mj);
    } else {
        rc = ss_err_set(&err, SS_EINVAL, "methods must be a method or a "
                        "list of 1..%d methods", MAX_METHODS);
    }
    if (rc < 0 || (rc = ss_method_check_order(methods, n, &err)) < 0
        || (rc = ss_gate_from_json(json_object_get(job, "gate"), &gate,
                                   &err)) < 0)
        goto done;
    /* The source version. */
    v = json_object_get(job, "source_version");
    if (v != NULL && (!json_is_integer(v) || json_integer_value(v) <= 0)) {
        rc = ss_err_set(&err, SS_EINVAL, "source_version must be a "
                        "positive integer");
        goto done;
    }
    if (ss_model_config_load(dir, &mc, &err) < 0)
        goto done;
    src = v != NULL ? json_integer_value(v)
          : mc.active_version > 0 ? mc.active_version
                                  : highest_version(dir);
    snprintf(path, sizeof(path), "%s/%lld/model.onnx", dir, (long long)src);
    if (src <= 0 || (rc = ss_graph_load_onnx(path, &g, &err)) < 0) {
        if (src <= 0)
            ss_err_set(&err, SS_ENOTFOUND, "%s: no version folder", dir);
        goto done;
    }
    /* Data and students. */
    if ((rc = load_data(dir, g, json_object_get(job, "calibration"),
                        "calibration", &calib, &err)) < 0
        || (rc = load_data(dir, g, json_object_get(job, "validation"),
                           "validation", &val, &err)) < 0
        || (rc = load_data(dir, g, json_object_get(job, "training"),
                           "training", &train, &err)) < 0)
        goto done;
    if (!val.given && !calib.given) {
        rc = ss_err_set(&err, SS_EINVAL, "validation data is required");
        goto done;
    }
    for (i = 0; i < n; i++) {
        ss_method_t *m = &methods[i];

        if ((rc = ss_distill_check_layers(g, m, &err)) < 0)
            goto done;
        if (m->kind != SS_METHOD_DISTILL || !m->u.train.student_file[0])
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, m->u.train.student_file);
        if ((rc = ss_graph_load_onnx(path, &students[i], &err)) < 0
            || (rc = ss_distill_check_student(g, students[i], &err)) < 0) {
            ss_err_wrap(&err, rc, "%s", m->u.train.student_file);
            goto done;
        }
        m->u.train.student = students[i];
    }
    if ((rc = check_parallel(methods, n, &train, dp.size, &err)) < 0)
        goto done;
    if (gate.max_accuracy_drop < 0 && gate.min_agreement < 0
        && gate.max_relative_error < 0) {
        /* The daemon's default gate. */
        if ((val.given ? &val : &calib)->ds.labels != NULL)
            gate.max_accuracy_drop = 0.01;
        else
            gate.min_agreement = 0.99;
    }
    ctl.train = train.given ? &train.ds : calib.given ? &calib.ds : NULL;
#ifdef HAVE_MPI
    if (mpi) {
        /* Every process read the same job: agree before any trains. */
        phase = 1;
        if (!ss_train_mpi_all_ok(true)) {
            phase = 2;
            quiet = dp.rank != 0;
            rc = ss_err_set(&err, SS_EINVAL, "another process of the run "
                            "could not set up (its message is above)");
            goto done;
        }
        ctl.dp = &dp;
        if (ctl.threads <= 0)
            ctl.threads = default_threads(ss_train_mpi_local_size());
        if (dp.rank != 0)
            ctl.latency_runs = 2;   /* only process 0's are reported */
    }
#endif
    if (!mpi) {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        ctl.cancel = &cancel_flag;
    }
    if (dp.rank == 0) {
        ctl.train_progress = on_train;
        ctl.progress = on_progress;
    }
    rc = ss_compress_run(g, methods, n, calib.given ? &calib.ds : NULL,
                         val.given ? &val.ds : &calib.ds, &gate, &ctl, &res,
                         &err);
#ifdef HAVE_MPI
    if (rc < 0 && mpi && dp.size > 1) {
        /* The others may wait in a collective of the trainer. */
        fprintf(stderr, "slimserve-train: process %d: %s; ending the run\n",
                dp.rank, err.msg[0] ? err.msg : "failed");
        ss_train_mpi_abort(2);
    }
#endif
    if (rc < 0)
        goto done;
    if (dp.rank != 0) {
        print_share(&res);
        status = res.passed ? 0 : 1;
        goto done;
    }
    if ((result = ss_compress_result_json(&res, &gate)) == NULL) {
        rc = ss_err_set(&err, SS_ENOMEM, "out of memory");
        goto done;
    }
    if (res.passed) {
        /* As the daemon does: the served version is pinned before a new
         * version number appears. */
        if ((rc = ss_model_config_pin_active(dir, mc.active_version > 0
                                                  ? mc.active_version : src,
                                             &err)) < 0
            || (rc = write_version(dir, src, mj, &res, result, &version,
                                   &err)) < 0)
            goto done;
        json_object_set_new(result, "version", json_integer(version));
    }
    json_dumpf(result, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    if (res.passed)
        fprintf(stderr, "slimserve-train: version %lld written to %s\n",
                (long long)version, dir);
    else
        fprintf(stderr, "slimserve-train: rejected: %s; nothing written\n",
                res.gate_reason);
    status = res.passed ? 0 : 1;
done:
#ifdef HAVE_MPI
    if (mpi) {
        /* Before the run: this process failed to set up, tell the others.
         * After it: process 0's write decides everyone's status. */
        if (phase < 2 && !ss_train_mpi_all_ok(phase == 1 && status != 2)
            && status != 2) {
            status = 2;
            quiet = true;
        }
        phase = 2;
    }
#endif
    if (status == 2 && !quiet)
        fprintf(stderr, "slimserve-train: %s\n", err.msg[0] ? err.msg
                                                            : "failed");
    json_decref(result);
    ss_compress_result_clear(&res);
    for (i = 0; i < MAX_METHODS; i++)
        ss_graph_free(students[i]);
    data_free(&calib);
    data_free(&val);
    data_free(&train);
    ss_graph_free(g);
    json_decref(job);
#ifdef HAVE_MPI
    ss_train_mpi_finalize();
#endif
    return status;
}
