/* SPDX-License-Identifier: Apache-2.0 */

/*
 * What the batcher costs, on a fixture model (not part of make check: it
 * measures, it does not assert).  Run from the build tree:
 *
 *   top_srcdir=/path/to/src tests/unit/test_batch_bench [seconds [fixture]]
 *
 * (fixture: a folder of tests/fixtures with model.onnx and batch64.npz;
 * default mlp_op13).
 *
 * 1. Latency at batch 1: the engine alone (ss_plan_run in a loop) against
 *    a round trip through the batcher (submit, executor wakes, runs, done
 *    wakes the submitter), so the difference is the batcher's overhead.
 * 2. Throughput in a closed loop of C outstanding items (each done
 *    callback resubmits its item at once, so no client cost is counted),
 *    batching off (max_batch_size 1) and on, beside the engine's own
 *    throughput at the batch size the batcher achieved.
 */

#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/alloc.h"
#include "engine/io/npy.h"
#include "tests/unit/test_batch.h"

static ss_graph_t *g;
static ss_npz_t *npz;
static ss_tensor_t X;           /* the fixture's 64 input rows */
static size_t rowbytes;
static double secs = 1.0;

static int
load(const char *fixture)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_err_t err = {0};

    snprintf(path, sizeof path, "%s/tests/fixtures/%s/model.onnx",
             top ? top : ".", fixture);
    if (ss_graph_load_onnx(path, &g, &err) < 0) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/%s/batch64.npz",
             top ? top : ".", fixture);
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &npz, &err) < 0) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return -1;
    }
    X = *ss_npz_tensor(npz, 0);
    rowbytes = (size_t)ss_tensor_numel(&X) * ss_dtype_size(X.dtype) / 64;
    return 0;
}

/* An item of n samples starting at row row0 (mod 64). */
static void
row_item(titem_t *it, int row0, int n)
{
    memset(it, 0, sizeof *it);
    it->in[0] = X;
    it->in[0].dims[0] = n;
    it->in[0].data = (char *)X.data + (size_t)(row0 % (65 - n)) * rowbytes;
    it->n = n;
    it->w.n_inputs = 1;
    it->w.inputs = it->in;
    it->w.done = tb_on_done;
    it->w.arg = it;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* The median of n timings in ns, in us (the machine may be shared: a
 * median shrugs off the runs another process preempted). */
static double
median_us(int64_t *t, long n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_i64);
    return t[n / 2] / 1e3;
}

#define MAX_RUNS 200000

/* CPU time of the whole process so far, in ns: on a shared machine, CPU
 * per sample says what a layer costs even when wall time does not. */
static int64_t
cpu_ns(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* Engine alone: median microseconds per run of a batch of n, on one
 * thread with `threads` oneDNN threads. */
static double
engine_us(int n, int threads)
{
    static int64_t times[MAX_RUNS];
    ss_tensor_t in = X, out[8] = {{0}};
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    int64_t t0;
    long iters = 0;
    int no = ss_graph_num_outputs(g);

    in.dims[0] = n;
    omp_set_num_threads(threads);   /* compile for what it runs with */
    ss_plan_new(g, &in, &p, NULL);
    ss_exec_ctx_new(threads, &ctx, NULL);
    for (int o = 0; o < no && o < 8; o++) {
        const ss_io_info_t *io = ss_plan_output(p, o);
        ss_tensor_t t = {io->dtype, io->ndim, {0}, NULL};

        memcpy(t.dims, io->dims, sizeof t.dims);
        out[o].data = ss_aligned_alloc((size_t)ss_tensor_numel(&t) *
                                       ss_dtype_size(t.dtype) + 1);
    }
    for (int i = 0; i < 20; i++)
        ss_plan_run(p, ctx, &in, out, NULL);
    t0 = ss_clock_mono_ns();
    while (ss_clock_mono_ns() - t0 < (int64_t)(secs * 1e9) && iters < MAX_RUNS) {
        int64_t t = ss_clock_mono_ns();

        ss_plan_run(p, ctx, &in, out, NULL);
        times[iters++] = ss_clock_mono_ns() - t;
    }
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    for (int o = 0; o < no && o < 8; o++)
        ss_free(out[o].data);
    return median_us(times, iters);
}

/* Batcher round trip at batch 1, one item at a time (median us); also
 * the median time queued (the executor's wake-up) and compute_ns (plan
 * lookup, run, output allocation). */
static double
roundtrip_us(int max_batch, double *queue_us, double *compute_us)
{
    static int64_t rt[MAX_RUNS], qt[MAX_RUNS], ct[MAX_RUNS];
    ss_batch_opts_t o = tb_opts(max_batch, 0);
    ss_batcher_t *b = NULL;
    titem_t it;
    int64_t t0;
    long iters = 0;

    ss_batcher_new(g, &o, &b, NULL);
    ss_batcher_warmup(b, (const int[]){1}, 1, NULL);
    tb_reset();
    for (int i = 0; i < 100; i++) {
        row_item(&it, 0, 1);
        ss_batcher_submit(b, &it.w, NULL);
        tb_wait(i + 1, 10);
        ss_work_clear_outputs(&it.w);
    }
    tb_reset();
    t0 = ss_clock_mono_ns();
    while (ss_clock_mono_ns() - t0 < (int64_t)(secs * 1e9) && iters < MAX_RUNS) {
        int64_t t = ss_clock_mono_ns();

        row_item(&it, 0, 1);
        ss_batcher_submit(b, &it.w, NULL);
        tb_wait((int)iters + 1, 10);
        rt[iters] = ss_clock_mono_ns() - t;
        qt[iters] = it.w.queue_ns;
        ct[iters] = it.w.compute_ns;
        ss_work_clear_outputs(&it.w);
        iters++;
    }
    ss_batcher_free(b);
    *queue_us = median_us(qt, iters);
    *compute_us = median_us(ct, iters);
    return median_us(rt, iters);
}

/* The engine's own throughput: `threads` threads, each with its own
 * context and 1 oneDNN thread, running batches of n for secs; samples/s.
 * Measured the way the closed loop is (wall time, all runs), so both
 * suffer the same from a shared machine. */
struct eng_arg {
    int n;
    long runs;
    int64_t cpu_ns;             /* this thread's, over the timed runs */
};

static int64_t
thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *
engine_thread(void *arg)
{
    struct eng_arg *a = arg;
    ss_tensor_t in = X, out[8] = {{0}};
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    int no = ss_graph_num_outputs(g);
    int64_t t0;

    in.dims[0] = a->n;
    omp_set_num_threads(1);     /* compile for the threads it runs with */
    ss_plan_new(g, &in, &p, NULL);
    ss_exec_ctx_new(1, &ctx, NULL);
    for (int o = 0; o < no && o < 8; o++) {
        const ss_io_info_t *io = ss_plan_output(p, o);
        ss_tensor_t t = {io->dtype, io->ndim, {0}, NULL};

        memcpy(t.dims, io->dims, sizeof t.dims);
        out[o].data = ss_aligned_alloc((size_t)ss_tensor_numel(&t) *
                                       ss_dtype_size(t.dtype) + 1);
    }
    ss_plan_run(p, ctx, &in, out, NULL);
    a->cpu_ns = -thread_cpu_ns();
    t0 = ss_clock_mono_ns();
    while (ss_clock_mono_ns() - t0 < (int64_t)(secs * 1e9)) {
        ss_plan_run(p, ctx, &in, out, NULL);
        a->runs++;
    }
    a->cpu_ns += thread_cpu_ns();
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    for (int o = 0; o < no && o < 8; o++)
        ss_free(out[o].data);
    return NULL;
}

static double
engine_throughput(int n, int threads, double *cpu_us_per_sample)
{
    struct eng_arg a[8];
    pthread_t th[8];
    long runs = 0;
    int64_t cpu = 0;

    for (int i = 0; i < threads && i < 8; i++) {
        a[i] = (struct eng_arg){n, 0, 0};
        pthread_create(&th[i], NULL, engine_thread, &a[i]);
    }
    for (int i = 0; i < threads && i < 8; i++) {
        pthread_join(th[i], NULL);
        runs += a[i].runs;
        cpu += a[i].cpu_ns;
    }
    *cpu_us_per_sample = cpu / 1e3 / ((double)runs * n);
    return (double)runs * n / secs;
}

/* ---- closed loop --------------------------------------------------------- */

static ss_batcher_t *loop_b;
static atomic_int loop_stop;
static atomic_long loop_items, loop_samples_in_batches, loop_compute_ns;

static void
on_done_again(ss_work_t *w, void *arg)
{
    titem_t *it = arg;

    atomic_fetch_add(&loop_items, 1);
    atomic_fetch_add(&loop_samples_in_batches, w->batch_size);
    if (w->batch_size > 0)      /* this item's share of its batch */
        atomic_fetch_add(&loop_compute_ns, w->compute_ns / w->batch_size);
    ss_work_clear_outputs(w);
    if (!atomic_load(&loop_stop) && ss_batcher_submit(loop_b, w, NULL) == 0)
        return;
    tb_on_done(w, it);
}

static double
closed_loop(int conc, int max_batch, int64_t delay_us, int instances,
            int threads, double *avg_batch, double *busy,
            double *cpu_us_per_sample)
{
    ss_batch_opts_t o = tb_opts(max_batch, delay_us);
    titem_t *it = calloc((size_t)conc, sizeof *it);
    int64_t t0, t1;
    long items;

    o.instances = instances;
    o.threads = threads;
    ss_batcher_new(g, &o, &loop_b, NULL);
    for (int s = 1; s <= max_batch; s++)
        ss_batcher_warmup(loop_b, &s, 1, NULL);
    atomic_store(&loop_stop, 0);
    tb_reset();
    for (int i = 0; i < conc; i++) {
        row_item(&it[i], i, 1);
        it[i].w.done = on_done_again;
    }
    int64_t c0 = cpu_ns();
    t0 = ss_clock_mono_ns();
    atomic_store(&loop_items, 0);
    atomic_store(&loop_samples_in_batches, 0);
    atomic_store(&loop_compute_ns, 0);
    for (int i = 0; i < conc; i++)
        ss_batcher_submit(loop_b, &it[i].w, NULL);
    while (ss_clock_mono_ns() - t0 < (int64_t)(secs * 1e9))
        tb_wait(conc, 0.05);
    items = atomic_load(&loop_items);
    t1 = ss_clock_mono_ns();
    *cpu_us_per_sample = (cpu_ns() - c0) / 1e3 / (double)items;
    *avg_batch = (double)atomic_load(&loop_samples_in_batches) /
                 (double)items;
    /* Fraction of the executors' wall time spent inside batches. */
    *busy = (double)atomic_load(&loop_compute_ns) /
            ((double)(t1 - t0) * instances);
    atomic_store(&loop_stop, 1);
    tb_wait(conc, 30);
    ss_batcher_free(loop_b);
    free(it);
    return (double)items / ((t1 - t0) / 1e9);
}

int
main(int argc, char **argv)
{
    double e1, rt, rt0, avg, thr, q, cu, q0, c0, busy;

    if (argc > 1)
        secs = atof(argv[1]);
    if (load(argc > 2 ? argv[2] : "mlp_op13") < 0)
        return 1;
    printf("%s\n", argc > 2 ? argv[2] : "mlp_op13");
    e1 = engine_us(1, 1);
    rt = roundtrip_us(8, &q, &cu);
    rt0 = roundtrip_us(0, &q0, &c0);
    printf("batch-1 latency, medians (1 oneDNN thread):\n");
    printf("  engine alone            %8.2f us\n", e1);
    printf("  batcher, max_batch 8    %8.2f us  round trip (overhead %.2f "
           "us; queued %.2f, compute %.2f)\n", rt, rt - e1, q, cu);
    printf("  batcher, max_batch 0    %8.2f us  round trip (overhead %.2f "
           "us; queued %.2f, compute %.2f)\n", rt0, rt0 - e1, q0, c0);

    /* The engine's own throughput at the batch size the batcher reached
     * (rounded: the engine runs whole batches), on as many threads. */
    printf("closed loop, 2 executors x 1 oneDNN thread.  engine: 2 threads "
           "running the engine\ndirectly at the average batch size; ratio: "
           "served / engine samples/s;\ncpu/s, e.cpu: CPU us per sample, "
           "served (whole process) and engine (its threads)\n");
    printf("  %-36s %9s %6s %5s %9s %6s %6s %6s\n", "config", "samples/s",
           "batch", "busy", "engine", "ratio", "cpu/s", "e.cpu");
    static const int concs[] = {1, 8, 64};
    for (int c = 0; c < 3; c++) {
        static const struct {
            int max;
            int delay_us;
            const char *name;
        } v[] = {{1, 0, "batching off (max 1)"},
                 {32, 0, "batching on (max 32, delay 0)"},
                 {32, 500, "batching on (max 32, 500 us)"}};

        for (int k = 0; k < 3; k++) {
            double eng, cpu, ecpu;
            int n;

            thr = closed_loop(concs[c], v[k].max, v[k].delay_us, 2, 1,
                              &avg, &busy, &cpu);
            n = (int)(avg + 0.5);
            eng = engine_throughput(n, 2, &ecpu);
            printf("  C=%-3d %-30s %9.0f %6.2f %4.0f%% %9.0f %5.0f%% "
                   "%6.2f %6.2f\n", concs[c], v[k].name, thr, avg,
                   100 * busy, eng, 100 * thr / eng, cpu, ecpu);
        }
    }
    ss_npz_free(npz);
    ss_graph_free(g);
    return 0;
}
