/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LoRA adapters, in process (docs/lora.md): the plan run of a batch with
 * and without adapters, one thread, no HTTP, cases interleaved run by run
 * so machine load hits them alike; medians.
 *
 *   bench/lora_bench MODEL_DIR [RUNS [CASE]]
 *   bench/lora_bench MODEL_DIR RUNS cache [BUDGET_PERCENT]
 *
 * "cache" (docs/lora.md, many adapters; bench/lora.py --write writes
 * mnist100, the MNIST-sized MLP with 100 adapters r = 8): loads every
 * adapter with adapter_resident_bytes at BUDGET_PERCENT (default 15) of
 * the model's weight bytes and prints the memory the adapters hold
 * (resident packed weights + every adapter's metadata) against the
 * weights, then batch 1 with one adapter: a hit (a0, resident) and a
 * miss (a1..: cold, read back from its folder, evicting another)
 * interleaved, pin + tapped plan run + unpin, medians of wall and
 * thread CPU time (the read-back is file work: wall time counts it
 * whole; the page cache holds the files), and base batch 1 for scale.
 *
 * CASE (0-3, for a profiler: perf record ... lora_bench DIR 200 2) runs
 * that case alone; its ratios then mean nothing.
 * MODEL_DIR holds 1/model.onnx and adapters/ with adapters named a0..a7
 * (bench/lora.py writes such a repository; see docs/lora.md).  Cases:
 *   base      ss_plan_new (fused), no hook
 *   tapped    ss_plan_new_tapped, 8 items without adapter (what the
 *             tapped plan costs by itself)
 *   8 x B/8   ss_plan_new_tapped, 8 items of B/8 rows, adapters a0..a7
 *   1 x B     ss_plan_new_tapped, one item, adapter a3
 * at batch 64 and 1 (1 x 1 only).  Prints median microseconds, the
 * ratio of the medians to base's, the median of each run's own ratio to
 * base ("paired": the cases of a run ran back to back, so a load change
 * hits both sides of it; steadier than the ratio of medians on a loaded
 * machine), the time in the hook (the update), and the bytes of
 * the adapters against the weights.  Times are the thread's CPU time
 * (the runs use one thread): on a shared machine wall time also counts
 * the time other processes hold the core, which swung identical cases
 * by 2x at load 13 where CPU time varied by a few percent.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "engine/dnnl/dnnl.h"
#include "engine/engine.h"
#include "server/model/adapter.h"

typedef struct hook {
    ss_lora_t *l;
    const ss_work_t *batch;
    int64_t ns;                 /* time in the hook (the update) */
} hook_t;

/* Timings per run: base, tapped without adapters, over 8 adapters, one
 * adapter; and the update's share of the last two. */
#define NT 6

static int
on_tap(void *user, int tap, ss_tensor_t *value, int64_t row0,
       const ss_tap_act_t *act, ss_err_t *err)
{
    hook_t *h = user;
    /* Wall time, from the vDSO: the hook runs hundreds of times per batch
     * when the plan runs sites in row chunks, and a thread CPU-time read is
     * a system call (about a microsecond here: timing the hook with it
     * added 1-2 ms to a batch of the encoder and 35 us to the MLP at
     * batch 1). */
    int64_t t0 = ss_clock_mono_ns();
    int rc = ss_lora_tap(h->l, h->batch, tap, value, row0, act, err);

    h->ns += ss_clock_mono_ns() - t0;
    return rc;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static double
median_us(int64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_i64);
    return v[n / 2] / 1e3;
}

/* One tensor per graph input, batch b, values in 0..16 (token ids) or
 * their sixteenths (pixels). */
static int
make_inputs(const ss_graph_t *g, int64_t b, ss_tensor_t *in)
{
    for (int i = 0; i < ss_graph_num_inputs(g); i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);
        int64_t n = 1;

        in[i].dtype = io->dtype;
        in[i].ndim = io->ndim;
        for (int d = 0; d < io->ndim; d++) {
            in[i].dims[d] = d == 0 ? b : io->dims[d];
            n *= in[i].dims[d];
        }
        in[i].data = ss_aligned_alloc((size_t)n * 8);
        if (in[i].data == NULL)
            return -1;
        for (int64_t k = 0; k < n; k++) {
            if (io->dtype == SS_DTYPE_F32)
                ((float *)in[i].data)[k] = (float)(rand() % 17) / 16.0f;
            else
                ((int64_t *)in[i].data)[k] = rand() % 17;
        }
    }
    return 0;
}

static int
out_bufs(const ss_plan_t *p, int n, ss_tensor_t *out)
{
    for (int o = 0; o < n; o++) {
        const ss_io_info_t *io = ss_plan_output(p, o);
        int64_t k = 1;

        for (int d = 0; d < io->ndim; d++)
            k *= io->dims[d];
        if ((out[o].data = ss_aligned_alloc((size_t)k * 8)) == NULL)
            return -1;
    }
    return 0;
}

/* The CPU model and the ISA oneDNN runs at: numbers from different
 * machines do not compare (bench/pool.py prints the same for the Python
 * benches). */
static void
print_cpu(void)
{
    char line[512], model[256] = "unknown CPU";
    const char *isa = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *c = strchr(line, ':');

        if (strncmp(line, "model name", 10) == 0 && c != NULL) {
            snprintf(model, sizeof(model), "%s", c + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    ss_dnn_bf16_native(&isa);
    printf("# CPU: %s; oneDNN ISA %s\n", model, isa ? isa : "?");
}

/* The process's resident set, bytes (/proc/self/statm), or -1. */
static int64_t
rss_bytes(void)
{
    long pages = -1, res = -1;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = -1;
        fclose(f);
    }
    return res < 0 ? -1 : (int64_t)res * sysconf(_SC_PAGESIZE);
}

/* The "cache" mode (the top of the file). */
static int
cache_mode(const char *dir, int runs, double pct)
{
    char path[4200];
    ss_graph_t *g = NULL;
    ss_lora_t *l = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_err_t err = { 0 };
    ss_lora_opts_t o = { 0 };
    ss_tensor_t in[8], out[8];
    ss_plan_t *p0 = NULL, *p1 = NULL;
    ss_adapter_t *ad[128];
    ss_work_t item;
    int64_t res, meta, *t[5], wbytes, peft = 0, rss0, rss1;
    int n = 0, nres, rc = 1;

    memset(in, 0, sizeof(in));
    memset(out, 0, sizeof(out));
    memset(t, 0, sizeof(t));
    snprintf(path, sizeof(path), "%s/1/model.onnx", dir);
    if (ss_graph_load_onnx(path, &g, &err) < 0)
        goto fail;
    wbytes = (int64_t)ss_graph_weight_bytes(g);
    o.resident_bytes = (int64_t)((double)wbytes * pct / 100.0);
    /* once before, freed: the resident set then grows by what the
     * adapters hold, not by the code and heap a first load touches */
    if (ss_lora_new(g, dir, &o, &l, &err) < 0)
        goto fail;
    ss_lora_free(l);
    l = NULL;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    rss0 = rss_bytes();
    if (ss_lora_new(g, dir, &o, &l, &err) < 0)
        goto fail;
    rss1 = rss_bytes();
    if (ss_exec_ctx_new(1, &ctx, &err) < 0 || make_inputs(g, 1, in) < 0
        || ss_plan_new(g, in, &p0, &err) < 0
        || ss_plan_new_tapped(g, in, &p1, &err) < 0
        || out_bufs(p0, ss_graph_num_outputs(g), out) < 0)
        goto fail;
    for (n = 0; n < 128; n++) {
        char name[16];

        snprintf(name, sizeof(name), "a%d", n);
        if (ss_lora_acquire(l, name, &ad[n], &err) < 0)
            break;
    }
    {
        json_t *list = ss_lora_list(l);
        size_t i;
        json_t *a;

        json_array_foreach(list, i, a)
            peft += json_integer_value(json_object_get(a, "bytes"));
        json_decref(list);
    }
    ss_lora_memory(l, &res, &meta, &nres);
    printf("# %s: weights %lld bytes; %d adapters (%lld bytes as PEFT "
           "stores them, %.1f%% of the weights)\n", dir, (long long)wbytes,
           n, (long long)peft, 100.0 * (double)peft / (double)wbytes);
    printf("# budget %.1f%% = %lld bytes: %d resident, %lld bytes packed "
           "(%.2f%%) + metadata %lld bytes (%lld each, %.2f%%) = %.2f%% "
           "of the weights\n", pct, (long long)o.resident_bytes, nres,
           (long long)res, 100.0 * (double)res / (double)wbytes,
           (long long)meta, n ? (long long)meta / n : 0,
           100.0 * (double)meta / (double)wbytes,
           100.0 * (double)(res + meta) / (double)wbytes);
    printf("# the process's resident set grew %lld bytes while loading "
           "them (%.1f%% of the weights)\n", (long long)(rss1 - rss0),
           100.0 * (double)(rss1 - rss0) / (double)wbytes);
    if (n < 2) {
        fprintf(stderr, "needs adapters a0, a1, ...\n");
        goto fail;
    }
    for (int k = 0; k < 5; k++)
        if ((t[k] = ss_calloc((size_t)runs, sizeof(int64_t))) == NULL)
            goto fail;
    memset(&item, 0, sizeof(item));
    item.samples_ = 1;
    for (int r = -runs / 10, next = 1; r < runs; r++) {
        /* base; hit (a0); miss (the next cold one, round robin) */
        for (int c = 0; c < 3; c++) {
            hook_t h = { l, &item, 0 };
            ss_adapter_t *a = c == 1 ? ad[0] : ad[next];
            int64_t c0 = ss_clock_ns(CLOCK_THREAD_CPUTIME_ID);
            int64_t w0 = ss_clock_mono_ns();
            int e;

            item.tag = a;
            if (c == 0) {
                e = ss_plan_run(p0, ctx, in, out, &err);
            } else if ((e = ss_lora_pin(l, a, &err)) == 0) {
                e = ss_plan_run_tapped(p1, ctx, in, out, on_tap, &h, &err);
                ss_lora_unpin(l, a);
            }
            if (e < 0) {
                fprintf(stderr, "run: %s\n", err.msg);
                goto fail;
            }
            if (r >= 0) {
                t[c][r] = ss_clock_mono_ns() - w0;
                if (c > 0)
                    t[c + 2][r] = ss_clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
            }
        }
        if (++next == n)
            next = 1;
    }
    {
        double base = median_us(t[0], runs), hit = median_us(t[1], runs);
        double miss = median_us(t[2], runs);
        double hc = median_us(t[3], runs), mc = median_us(t[4], runs);

        printf("batch 1 wall: base %.1f us, hit %.1f us (%.2fx base), miss "
               "%.1f us (%.2fx hit); thread CPU: hit %.1f us, miss %.1f us "
               "(%.2fx)\n", base, hit, hit / base, miss, miss / hit, hc, mc,
               mc / hc);
    }
    /* what a batch pays per item on a hit: a pin and an unpin of a
     * resident adapter (a lock each, uncontended here) */
    {
        int64_t w0 = ss_clock_mono_ns();

        for (int k = 0; k < 100000; k++)
            if (ss_lora_pin(l, ad[0], &err) == 0)
                ss_lora_unpin(l, ad[0]);
        printf("pin + unpin of a resident adapter: %.0f ns (mean of "
               "100,000)\n", (double)(ss_clock_mono_ns() - w0) / 1e5);
    }
    ss_lora_memory(l, &res, &meta, &nres);
    printf("# after: %d resident, %lld bytes (budget %lld)\n", nres,
           (long long)res, (long long)o.resident_bytes);
    rc = 0;
fail:
    if (rc != 0 && err.msg[0] != '\0')
        fprintf(stderr, "%s\n", err.msg);
    for (int k = 0; k < n; k++)
        ss_adapter_unref(ad[k]);
    for (int k = 0; k < 5; k++)
        ss_free(t[k]);
    for (int i = 0; i < 8; i++) {
        ss_free(in[i].data);
        ss_free(out[i].data);
    }
    ss_plan_free(p0);
    ss_plan_free(p1);
    ss_exec_ctx_free(ctx);
    ss_lora_free(l);
    ss_graph_free(g);
    return rc;
}

int
main(int argc, char **argv)
{
    char path[4200];
    ss_graph_t *g = NULL;
    ss_lora_t *l = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_err_t err = { 0 };
    int runs = argc > 2 ? atoi(argv[2]) : 2000;
    int only = argc > 3 ? atoi(argv[3]) : -1;
    static const int64_t sizes[] = { 64, 1 };

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [RUNS [CASE]]\n", argv[0]);
        return 2;
    }
    print_cpu();
    if (argc > 3 && strcmp(argv[3], "cache") == 0)
        return cache_mode(argv[1], runs, argc > 4 ? atof(argv[4]) : 15.0);
    snprintf(path, sizeof(path), "%s/1/model.onnx", argv[1]);
    if (ss_graph_load_onnx(path, &g, &err) < 0
        || ss_lora_new(g, argv[1], NULL, &l, &err) < 0
        || ss_exec_ctx_new(1, &ctx, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    {
        json_t *list = ss_lora_list(l);
        size_t i, bytes = 0;
        json_t *a;

        json_array_foreach(list, i, a)
            bytes += (size_t)json_integer_value(json_object_get(a, "bytes"));
        printf("# %s: %d sites, weights %zu bytes, %zu adapters %zu bytes "
               "(%.1f%% each)\n", argv[1], ss_lora_sites(l),
               ss_graph_weight_bytes(g), json_array_size(list), bytes,
               json_array_size(list) ? 100.0 * (double)bytes
               / (double)json_array_size(list)
               / (double)ss_graph_weight_bytes(g) : 0.0);
        json_decref(list);
    }
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        int64_t b = sizes[si];
        int nin = ss_graph_num_inputs(g), nout = ss_graph_num_outputs(g);
        ss_tensor_t in[8], out[8];
        ss_plan_t *p0 = NULL, *p1 = NULL;
        ss_work_t items[8];
        ss_adapter_t *ad[8];
        int64_t *t[NT + 1];     /* and one for ratios */
        int nitems = b >= 8 ? 8 : 1;

        memset(in, 0, sizeof(in));
        memset(out, 0, sizeof(out));
        memset(items, 0, sizeof(items));
        if (make_inputs(g, b, in) < 0
            || ss_plan_new(g, in, &p0, &err) < 0
            || ss_plan_new_tapped(g, in, &p1, &err) < 0
            || out_bufs(p0, nout, out) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (int k = 0; k < 8; k++) {
            char name[8];

            snprintf(name, sizeof(name), "a%d", nitems == 1 ? 3 : k);
            if (ss_lora_acquire(l, name, &ad[k], &err) < 0) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
        }
        for (int k = 0; k <= NT; k++)
            if ((t[k] = ss_calloc((size_t)runs, sizeof(int64_t))) == NULL) {
                fprintf(stderr, "no memory\n");
                return 1;
            }
        for (int r = -runs / 10; r < runs; r++) {
            int rc = 0;

            /* base; tapped without adapters; nitems over a0..a7; one
             * item of b rows, one adapter */
            for (int c = 0; c < 4; c++) {
                hook_t h = { l, items, 0 };
                int64_t t0;

                if (only >= 0 && c != only)
                    continue;
                for (int k = 0; k < nitems; k++) {
                    items[k].tag = c == 1 ? NULL : ad[k];
                    items[k].samples_ = b / nitems;
                    items[k].next_ = k + 1 < nitems ? &items[k + 1] : NULL;
                }
                if (c == 3) {
                    items[0].samples_ = b;
                    items[0].tag = ad[3];
                    items[0].next_ = NULL;
                }
                t0 = ss_clock_ns(CLOCK_THREAD_CPUTIME_ID);
                rc |= c == 0 ? ss_plan_run(p0, ctx, in, out, &err)
                             : ss_plan_run_tapped(p1, ctx, in, out, on_tap,
                                                  &h, &err);
                if (r >= 0)
                    t[c][r] = ss_clock_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
                if (r >= 0 && c >= 2)
                    t[c + 2][r] = h.ns;
            }
            if (rc != 0) {
                fprintf(stderr, "run: %s\n", err.msg);
                return 1;
            }
        }
        {
            double m[NT], q[4];

            /* each case's time over base's in the same run (they ran
             * back to back, so a load change hits both), as a median */
            for (int c = 1; c < 4; c++) {
                for (int r = 0; r < runs; r++)
                    t[NT][r] = t[0][r] > 0 ? t[c][r] * 100000 / t[0][r] : 0;
                q[c] = median_us(t[NT], runs) / 100.0;
            }
            for (int k = 0; k < NT; k++)
                m[k] = median_us(t[k], runs);
            printf("batch %3lld  base %9.1f us   tapped, no adapter %9.1f "
                   "us (%.2fx; paired %.3fx)\n", (long long)b, m[0], m[1],
                   m[1] / m[0], q[1]);
            printf("           %d x %lld rows over %d adapters %9.1f us "
                   "(%.2fx; paired %.3fx; update %.1f us)\n", nitems,
                   (long long)(b / nitems), nitems, m[2], m[2] / m[0], q[2],
                   m[4]);
            printf("           1 x %lld rows, one adapter %9.1f us (%.2fx; "
                   "paired %.3fx; update %.1f us)\n", (long long)b, m[3],
                   m[3] / m[0], q[3], m[5]);
        }
        for (int k = 0; k < 8; k++)
            ss_adapter_unref(ad[k]);
        for (int k = 0; k <= NT; k++)
            ss_free(t[k]);
        for (int i = 0; i < nin; i++)
            ss_free(in[i].data);
        for (int o = 0; o < nout; o++)
            ss_free(out[o].data);
        ss_plan_free(p0);
        ss_plan_free(p1);
    }
    ss_exec_ctx_free(ctx);
    ss_lora_free(l);
    ss_graph_free(g);
    return 0;
}
