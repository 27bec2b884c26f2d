/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slimserve-infer: run an ONNX model on numpy inputs, offline.
 *
 * DESIGN.  Load the model, gather the inputs (an .npz maps arrays to model
 * inputs by name; name=file.npy names one; a lone unnamed .npy goes to the
 * model's only input), check each against the model's declared type and
 * shape (symbolic dims accept anything), compile a plan for exactly these
 * shapes, run it (warm-up runs first, then --repeat timed runs), and write
 * one array per model output, named after it, into an .npz.  The only
 * conversions are the lossless-in-practice ones users hit with numpy
 * defaults: float64 to float32 and int32 to int64.  Inputs that decide
 * shapes (Reshape's shape, TopK's K, ...) need nothing special: the plan
 * is compiled for their values as for the others' shapes.  --bind NAME
 * makes an input a constant of the graph itself (it is then no longer an
 * input); --verbose names the inputs that decide shapes on stderr.
 *
 * With --repeat, each run's latency and CPU time (every thread of the
 * process: with one engine thread, the run's cost less the time others
 * held the core) go to stderr, and one summary line to stdout, for
 * scripts:
 *
 *   latency_ms median=0.123 min=0.101 mean=0.130 max=0.200 runs=N
 *       load_ms=3.2 compile_ms=1.7 threads=T load_rss_mb=12.0
 *       peak_rss_mb=30.5
 *
 * (one line).  load_rss_mb is the resident set once the model is loaded,
 * peak_rss_mb its high-water mark (VmRSS and VmHWM of /proc/self/status:
 * unlike getrusage's maxrss they do not count what the parent held before
 * exec; 0 where /proc is missing).  Exit status: 0 success, 1 error, 2 usage error.
 *
 * THREADS: single-threaded, apart from the engine's own threads.
 */

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"

#include "common/alloc.h"
#include "common/clock.h"
#include "engine/engine.h"
#include "engine/io/npy.h"
#include "engine/ir/edit.h"

#define EXIT_USAGE 2
#define MAX_SPECS 256

static const char *prog = "slimserve-infer";

static void
usage(FILE *f)
{
    fprintf(f,
"Usage: %s --model M.onnx [--input SPEC]... [--output OUT.npz]\n"
"                       [--repeat N] [--warmup N] [--threads N]\n"
"                       [--bind NAME]...\n"
"\n"
"Runs an ONNX model on numpy arrays and writes its outputs.\n"
"\n"
"  -m, --model FILE     the ONNX model\n"
"  -i, --input SPEC     FILE.npz: every array, matched to inputs by name;\n"
"                       NAME=FILE.npy: one input; FILE.npy: the model's\n"
"                       only input.  Repeatable; none for a model\n"
"                       without inputs.\n"
"  -o, --output FILE    write one array per model output, named after it,\n"
"                       to this .npz (optional when benchmarking)\n"
"  -r, --repeat N       run N times (default 1); with N given, print each\n"
"                       run's latency and the process's CPU time in it on\n"
"                       stderr (\"run I: MS ms cpu MS ms\") and one\n"
"                       summary line on\n"
"                       stdout: latency_ms median= min= mean= max= runs=\n"
"                       load_ms= compile_ms= threads= load_rss_mb=\n"
"                       peak_rss_mb=\n"
"  -w, --warmup N       untimed runs before the timed ones (default 0, or\n"
"                       1 with --repeat)\n"
"  -t, --threads N      engine threads (default 0: the library default)\n"
"  -b, --bind NAME      make input NAME a constant of the graph holding\n"
"                       its array (it is no longer an input).  Not needed\n"
"                       for inputs that decide shapes (Reshape's shape,\n"
"                       TopK's K, ...): plans take their values anyway.\n"
"                       Repeatable.\n"
"  -v, --verbose        name the inputs that decide shapes on stderr\n"
"  -h, --help           this text\n"
"  -V, --version        the version\n"
"\n"
"Types must match the model's inputs; float64 arrays are converted to\n"
"float32 and int32 arrays to int64.  Dims the model declares must match;\n"
"symbolic dims (such as the batch) accept any size.\n"
"Exit status: 0 success, 1 error, 2 usage error.\n", prog);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", prog);
    return EXIT_USAGE;
}

/* CPU time of every thread of the process: with one engine thread, a
 * run's cost without the time other processes held the core. */
static double
cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
parse_count(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* A "Vm...:" line of /proc/self/status in MB, or 0. */
static double
status_mb(const char *key)
{
    char line[256];
    size_t kl = strlen(key);
    double mb = 0;
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            mb = strtod(line + kl + 1, NULL) / 1024.0;
            break;
        }
    fclose(f);
    return mb;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* One named array, owned. */
typedef struct {
    char *name;   /* NULL: the unnamed .npy */
    ss_tensor_t t;
    char *from;   /* file it came from, for messages */
} arg_t;

typedef struct {
    arg_t *v;
    int n, cap;
} args_t;

static void
args_free(args_t *a)
{
    for (int i = 0; i < a->n; i++) {
        ss_free(a->v[i].name);
        ss_free(a->v[i].from);
        ss_tensor_free_data(&a->v[i].t);
    }
    ss_free(a->v);
}

static int
args_push(args_t *a, const char *name, const char *from, ss_tensor_t *t,
          ss_err_t *err)
{
    arg_t *e;

    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 8;
        arg_t *nv = ss_realloc(a->v, (size_t)cap * sizeof(*nv));

        if (nv == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory");
        a->v = nv;
        a->cap = cap;
    }
    e = &a->v[a->n];
    memset(e, 0, sizeof(*e));
    if ((name && (e->name = ss_strdup(name)) == NULL) ||
        (e->from = ss_strdup(from)) == NULL) {
        ss_free(e->name);
        return ss_err_set(err, SS_ENOMEM, "no memory");
    }
    e->t = *t;   /* moved */
    memset(t, 0, sizeof(*t));
    a->n++;
    return 0;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);

    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Reads one --input SPEC into args. */
static int
load_spec(const char *spec, args_t *a, ss_err_t *err)
{
    const char *eq = strchr(spec, '=');
    ss_tensor_t t = { 0 };
    ss_npz_t *z = NULL;
    char *name = NULL;
    int rc = 0;

    if (eq == NULL && ends_with(spec, ".npz")) {
        if ((rc = ss_npz_read(spec, SS_NPY_DEFAULT_MAX_BYTES, &z, err)) < 0)
            goto done;
        for (int i = 0; i < ss_npz_count(z); i++) {
            if ((rc = ss_npz_take(z, i, &t)) < 0 ||
                (rc = args_push(a, ss_npz_name(z, i), spec, &t, err)) < 0)
                goto done;
        }
        if (ss_npz_count(z) == 0) {
            rc = ss_err_set(err, SS_EINVAL, "%s: no arrays", spec);
            goto done;
        }
        goto done;
    }
    if (eq != NULL) {
        if (eq == spec) {
            rc = ss_err_set(err, SS_EINVAL, "--input %s: empty name", spec);
            goto done;
        }
        if ((name = ss_strndup(spec, (size_t)(eq - spec))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory");
            goto done;
        }
        spec = eq + 1;
    }
    if ((rc = ss_npy_read(spec, SS_NPY_DEFAULT_MAX_BYTES, &t, err)) < 0)
        goto done;
    rc = args_push(a, name, spec, &t, err);
done:
    ss_tensor_free_data(&t);
    ss_npz_free(z);
    ss_free(name);
    return rc;
}

/* float64 -> float32 and int32 -> int64, in a new buffer. */
static int
convert(arg_t *a, ss_dtype_t to, ss_err_t *err)
{
    ss_tensor_t n = a->t;
    int64_t numel = ss_tensor_numel(&a->t);

    n.dtype = to;
    if ((n.data = ss_aligned_alloc(ss_npy_nbytes(&n))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to convert");
    for (int64_t i = 0; i < numel; i++) {
        if (to == SS_DTYPE_F32)
            ((float *)n.data)[i] = (float)((const double *)a->t.data)[i];
        else
            ((int64_t *)n.data)[i] = ((const int32_t *)a->t.data)[i];
    }
    ss_tensor_free_data(&a->t);
    a->t = n;
    return 0;
}

static void
shape_str(char *buf, size_t cap, int ndim, const int64_t *dims)
{
    size_t n = (size_t)snprintf(buf, cap, "(");

    for (int i = 0; i < ndim && n < cap; i++) {
        if (dims[i] < 0)
            n += (size_t)snprintf(buf + n, cap - n, "%s?", i ? ", " : "");
        else
            n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "",
                                  (long long)dims[i]);
    }
    if (n < cap)
        snprintf(buf + n, cap - n, ")");
}

static const char *
dtype_name(ss_dtype_t t)
{
    const char *d = ss_npy_descr(t);

    switch (t) {
    case SS_DTYPE_F32: return "float32";
    case SS_DTYPE_F64: return "float64";
    case SS_DTYPE_I64: return "int64";
    case SS_DTYPE_I32: return "int32";
    default: return d ? d : "unknown";
    }
}

/* Puts the arrays in graph input order into in[], checking names, types
 * and shapes.  The args keep ownership. */
static int
bind_inputs(const ss_graph_t *g, args_t *a, ss_tensor_t *in, ss_err_t *err)
{
    int nin = ss_graph_num_inputs(g), rc = 0;
    char missing[256] = "", unknown[256] = "", s1[160], s2[160];

    if (a->n == 1 && a->v[0].name == NULL) {
        if (nin != 1)
            return ss_err_set(err, SS_EINVAL, "the model has %d inputs: "
                              "name them (NAME=FILE.npy) or use an .npz",
                              nin);
        if ((a->v[0].name = ss_strdup(ss_graph_input(g, 0)->name)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory");
    }
    for (int j = 0; j < a->n; j++) {
        int found = 0;

        if (a->v[j].name == NULL)
            return ss_err_set(err, SS_EINVAL, "%s: an unnamed .npy is only "
                              "for a model's only input, given with no "
                              "other input", a->v[j].from);
        for (int k = 0; k < j; k++)
            if (strcmp(a->v[k].name, a->v[j].name) == 0)
                return ss_err_set(err, SS_EINVAL, "input '%s' given twice "
                                  "(%s and %s)", a->v[j].name,
                                  a->v[k].from, a->v[j].from);
        for (int i = 0; i < nin; i++)
            found |= strcmp(ss_graph_input(g, i)->name, a->v[j].name) == 0;
        if (!found)
            snprintf(unknown + strlen(unknown),
                     sizeof(unknown) - strlen(unknown), "%s'%s'",
                     unknown[0] ? ", " : "", a->v[j].name);
    }
    for (int i = 0; i < nin; i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);
        arg_t *m = NULL;

        for (int j = 0; j < a->n; j++)
            if (strcmp(io->name, a->v[j].name) == 0)
                m = &a->v[j];
        if (m == NULL) {
            snprintf(missing + strlen(missing),
                     sizeof(missing) - strlen(missing), "%s'%s'",
                     missing[0] ? ", " : "", io->name);
            continue;
        }
        if (m->t.dtype != io->dtype) {
            if (io->dtype == SS_DTYPE_F32 && m->t.dtype == SS_DTYPE_F64)
                rc = convert(m, SS_DTYPE_F32, err);
            else if (io->dtype == SS_DTYPE_I64 && m->t.dtype == SS_DTYPE_I32)
                rc = convert(m, SS_DTYPE_I64, err);
            else
                rc = ss_err_set(err, SS_EINVAL, "input '%s' (%s): %s, the "
                                "model wants %s", io->name, m->from,
                                dtype_name(m->t.dtype),
                                dtype_name(io->dtype));
            if (rc < 0)
                return rc;
        }
        shape_str(s1, sizeof(s1), m->t.ndim, m->t.dims);
        shape_str(s2, sizeof(s2), io->ndim, io->dims);
        /* io->ndim < 0: the model says nothing of its rank */
        if (io->ndim >= 0 && m->t.ndim != io->ndim)
            return ss_err_set(err, SS_EINVAL, "input '%s' (%s): shape %s, "
                              "the model wants %s", io->name, m->from, s1,
                              s2);
        for (int k = 0; k < io->ndim; k++)
            if (io->dims[k] >= 0 && io->dims[k] != m->t.dims[k])
                return ss_err_set(err, SS_EINVAL, "input '%s' (%s): shape "
                                  "%s, the model wants %s", io->name,
                                  m->from, s1, s2);
        in[i] = m->t;
    }
    if (unknown[0] || missing[0]) {
        char names[256] = "";

        for (int i = 0; i < nin; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names),
                     "%s'%s'", i ? ", " : "", ss_graph_input(g, i)->name);
        return ss_err_set(err, SS_EINVAL, "%s%s%s%s%s (the model's inputs: "
                          "%s)", unknown[0] ? "unknown input " : "", unknown,
                          unknown[0] && missing[0] ? "; " : "",
                          missing[0] ? "missing input " : "", missing, names);
    }
    return 0;
}

/* --bind NAME: the array given for NAME becomes a constant of g (the
 * plan is specialised to it) and leaves the inputs to bind. */
static int
bind_one(ss_graph_t *g, args_t *a, const char *name, ss_err_t *err)
{
    int j, rc;

    for (j = 0; j < a->n; j++)
        if (a->v[j].name != NULL && strcmp(a->v[j].name, name) == 0)
            break;
    if (j == a->n)
        return ss_err_set(err, SS_EINVAL, "--bind %s: no array given for "
                          "it (name it in an .npz or NAME=FILE.npy)", name);
    if ((rc = ss_graph_bind_input(g, name, &a->v[j].t, err)) < 0)
        return rc;
    ss_free(a->v[j].name);
    ss_free(a->v[j].from);
    ss_tensor_free_data(&a->v[j].t);
    memmove(&a->v[j], &a->v[j + 1], sizeof(*a->v) * (size_t)(a->n - j - 1));
    a->n--;
    return 0;
}

typedef struct {
    const char *model, *output;
    const char *inputs[MAX_SPECS];
    int ninputs;
    const char *binds[MAX_SPECS];
    int nbinds;
    long repeat, warmup, threads;
    int timed, verbose;
} opts_t;

/* --verbose: "inputs deciding shapes: shape, k" (or "none"). */
static int
say_shape_inputs(const ss_graph_t *g, ss_err_t *err)
{
    int n = ss_graph_num_inputs(g), first = 1;
    unsigned char *f = ss_calloc((size_t)n + 1, 1);

    if (f == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory");
    fprintf(stderr, "%s: inputs deciding shapes:", prog);
    if (ss_graph_shape_inputs(g, f) == 0)
        fprintf(stderr, " none");
    for (int i = 0; i < n; i++)
        if (f[i]) {
            fprintf(stderr, "%s %s", first ? "" : ",",
                    ss_graph_input(g, i)->name);
            first = 0;
        }
    fprintf(stderr, "\n");
    ss_free(f);
    return 0;
}

static int
run(const opts_t *o)
{
    ss_graph_t *g = NULL;
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_tensor_t *in = NULL, *out = NULL;
    const char **names = NULL;
    double *lat = NULL, t0, load_ms, compile_ms, load_rss;
    args_t a = { 0 };
    ss_err_t err = { 0 };
    int nin, nout = 0, rc = 0;

    t0 = ss_clock_mono_ms();
    if ((rc = ss_graph_load_onnx(o->model, &g, &err)) < 0)
        goto done;
    load_ms = ss_clock_mono_ms() - t0;
    load_rss = status_mb("VmRSS");
    for (int i = 0; i < o->ninputs; i++)
        if ((rc = load_spec(o->inputs[i], &a, &err)) < 0)
            goto done;
    for (int i = 0; i < o->nbinds; i++)
        if ((rc = bind_one(g, &a, o->binds[i], &err)) < 0)
            goto done;
    nin = ss_graph_num_inputs(g);
    nout = ss_graph_num_outputs(g);
    if ((in = ss_calloc((size_t)nin + 1, sizeof(*in))) == NULL ||
        (out = ss_calloc((size_t)nout + 1, sizeof(*out))) == NULL ||
        (names = ss_calloc((size_t)nout + 1, sizeof(*names))) == NULL ||
        (lat = ss_calloc((size_t)o->repeat, sizeof(*lat))) == NULL) {
        rc = ss_err_set(&err, SS_ENOMEM, "no memory");
        goto done;
    }
    if ((rc = bind_inputs(g, &a, in, &err)) < 0)
        goto done;
    if (o->verbose && (rc = say_shape_inputs(g, &err)) < 0)
        goto done;
    /* The context first: plans compiled after it are tuned for its
     * thread count. */
    if ((rc = ss_exec_ctx_new((int)o->threads, &ctx, &err)) < 0)
        goto done;
    t0 = ss_clock_mono_ms();
    if ((rc = ss_plan_new(g, in, &p, &err)) < 0)
        goto done;
    compile_ms = ss_clock_mono_ms() - t0;
    for (int i = 0; i < nout; i++) {
        const ss_io_info_t *io = ss_plan_output(p, i);

        out[i].dtype = io->dtype;
        out[i].ndim = io->ndim;
        memcpy(out[i].dims, io->dims, sizeof(out[i].dims));
        names[i] = ss_graph_output(g, i)->name;
        if (ss_npy_descr(io->dtype) == NULL ||
            ss_tensor_numel(&out[i]) < 0) {
            rc = ss_err_set(&err, SS_EUNSUPP, "output '%s': type %d or "
                            "shape cannot be written to .npz", names[i],
                            (int)io->dtype);
            goto done;
        }
        if ((out[i].data = ss_aligned_alloc(ss_npy_nbytes(&out[i]))) ==
            NULL) {
            rc = ss_err_set(&err, SS_ENOMEM, "no memory for output '%s'",
                            names[i]);
            goto done;
        }
    }
    for (long i = 0; i < o->warmup; i++)
        if ((rc = ss_plan_run(p, ctx, in, out, &err)) < 0)
            goto done;
    for (long i = 0; i < o->repeat; i++) {
        double c0 = cpu_ms();

        t0 = ss_clock_mono_ms();
        if ((rc = ss_plan_run(p, ctx, in, out, &err)) < 0)
            goto done;
        lat[i] = ss_clock_mono_ms() - t0;
        if (o->timed)
            fprintf(stderr, "run %ld: %.3f ms cpu %.3f ms\n", i + 1, lat[i],
                    cpu_ms() - c0);
    }
    if (o->output &&
        (rc = ss_npz_write(o->output, nout, names, out, &err)) < 0)
        goto done;
    if (o->timed) {
        double sum = 0, med;
        long n = o->repeat;

        for (long i = 0; i < n; i++)
            sum += lat[i];
        qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
        med = n % 2 ? lat[n / 2] : (lat[n / 2 - 1] + lat[n / 2]) / 2;
        printf("latency_ms median=%.4f min=%.4f mean=%.4f max=%.4f runs=%ld "
               "load_ms=%.2f compile_ms=%.2f threads=%ld load_rss_mb=%.1f "
               "peak_rss_mb=%.1f\n", med, lat[0], sum / (double)n,
               lat[n - 1], n, load_ms, compile_ms, o->threads, load_rss,
               status_mb("VmHWM"));
        fflush(stdout);
    }
done:
    if (rc < 0)
        fprintf(stderr, "%s: %s\n", prog,
                err.msg[0] ? err.msg : ss_strerror(rc));
    for (int i = 0; out && i < nout; i++)
        ss_tensor_free_data(&out[i]);
    ss_free(out);
    ss_free(in);   /* shallow: the data belongs to the args */
    ss_free(names);
    ss_free(lat);
    ss_exec_ctx_free(ctx);
    ss_plan_free(p);
    ss_graph_free(g);
    args_free(&a);
    return rc < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "model", required_argument, NULL, 'm' },
        { "input", required_argument, NULL, 'i' },
        { "output", required_argument, NULL, 'o' },
        { "repeat", required_argument, NULL, 'r' },
        { "warmup", required_argument, NULL, 'w' },
        { "threads", required_argument, NULL, 't' },
        { "bind", required_argument, NULL, 'b' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    opts_t o;
    int c, warmup_set = 0;

    memset(&o, 0, sizeof(o));
    o.repeat = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:i:o:r:w:t:b:vhV", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 'i':
            if (o.ninputs == MAX_SPECS)
                return usage_error("more than %d --input options", MAX_SPECS);
            o.inputs[o.ninputs++] = optarg;
            break;
        case 'o':
            o.output = optarg;
            break;
        case 'b':
            if (o.nbinds == MAX_SPECS)
                return usage_error("more than %d --bind options", MAX_SPECS);
            o.binds[o.nbinds++] = optarg;
            break;
        case 'v':
            o.verbose = 1;
            break;
        case 'r':
            if (parse_count(optarg, 1, 100000000, &o.repeat) < 0)
                return usage_error("--repeat wants a count >= 1, not '%s'",
                                   optarg);
            o.timed = 1;
            break;
        case 'w':
            if (parse_count(optarg, 0, 100000000, &o.warmup) < 0)
                return usage_error("--warmup wants a count >= 0, not '%s'",
                                   optarg);
            warmup_set = 1;
            break;
        case 't':
            if (parse_count(optarg, 0, 4096, &o.threads) < 0)
                return usage_error("--threads wants 0..4096, not '%s'",
                                   optarg);
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            printf("%s %s\n", prog, PACKAGE_VERSION);
            return EXIT_SUCCESS;
        case ':':
            return usage_error("%s needs an argument", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (o.model == NULL)
        return usage_error("%s", "--model is required");
    /* No --input is fine for a model without inputs (all constants);
     * bind_inputs() names the missing ones otherwise. */
    if (o.output == NULL && !o.timed)
        return usage_error("%s", "--output is required (unless --repeat)");
    if (!warmup_set)
        o.warmup = o.timed ? 1 : 0;
    return run(&o);
}
