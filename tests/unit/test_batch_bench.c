/* SPDX-License-Identifier: Apache-2.0 */

/*
 * What the batcher costs, on the MLP fixture (not part of make check: it
 * measures, it does not assert).  Run from the build tree:
 *
 *   top_srcdir=/path/to/src tests/unit/test_batch_bench [seconds]
 *
 * 1. Latency at batch 1: the engine alone (ss_plan_run in a loop) against
 *    a round trip through the batcher (submit, executor wakes, runs, done
 *    wakes the submitter), so the difference is the batcher's overhead.
 * 2. Throughput in a closed loop of C outstanding items (each done
 *    callback resubmits its item at once, so no client cost is counted),
 *    batching off (max_batch_size 1) and on, beside the engine's own
 *    throughput at the batch size the batcher achieved.
 */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/npy.h"
#include "tests/unit/test_batch.h"

#define COLS 64

static ss_graph_t *g;
static float X[64 * COLS];
static double secs = 1.0;

static int
load(void)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_err_t err = {0};

    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/model.onnx",
             top ? top : ".");
    if (ss_graph_load_onnx(path, &g, &err) < 0) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return -1;
    }
    for (int i = 0; i < 64 * COLS; i++)
        X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    return 0;
}

/* Engine alone: microseconds per run of a batch of n, on one thread with
 * `threads` oneDNN threads. */
static double
engine_us(int n, int threads)
{
    ss_tensor_t in = {SS_DTYPE_F32, 2, {n, COLS}, X}, out = {0};
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    float *o = malloc((size_t)n * 10 * sizeof *o);
    int64_t t0, iters = 0;

    ss_plan_new(g, &in, &p, NULL);
    ss_exec_ctx_new(threads, &ctx, NULL);
    out.data = o;
    for (int i = 0; i < 100; i++)
        ss_plan_run(p, ctx, &in, &out, NULL);
    t0 = tb_now();
    while (tb_now() - t0 < (int64_t)(secs * 1e9)) {
        for (int i = 0; i < 100; i++)
            ss_plan_run(p, ctx, &in, &out, NULL);
        iters += 100;
    }
    double us = (tb_now() - t0) / 1e3 / (double)iters;
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    free(o);
    return us;
}

/* Batcher round trip at batch 1, one item at a time. */
static double
roundtrip_us(int max_batch)
{
    ss_batch_opts_t o = tb_opts(max_batch, 0);
    ss_batcher_t *b = NULL;
    titem_t it;
    int64_t t0, iters = 0;

    ss_batcher_new(g, &o, &b, NULL);
    ss_batcher_warmup(b, (const int[]){1}, 1, NULL);
    tb_reset();
    for (int i = 0; i < 100; i++) {
        tb_item_f32(&it, X, COLS, 0, 1);
        ss_batcher_submit(b, &it.w, NULL);
        tb_wait(i + 1, 10);
        ss_work_clear_outputs(&it.w);
    }
    tb_reset();
    t0 = tb_now();
    while (tb_now() - t0 < (int64_t)(secs * 1e9)) {
        tb_item_f32(&it, X, COLS, 0, 1);
        ss_batcher_submit(b, &it.w, NULL);
        tb_wait((int)iters + 1, 10);
        ss_work_clear_outputs(&it.w);
        iters++;
    }
    double us = (tb_now() - t0) / 1e3 / (double)iters;
    ss_batcher_free(b);
    return us;
}

/* ---- closed loop --------------------------------------------------------- */

static ss_batcher_t *loop_b;
static atomic_int loop_stop;
static atomic_long loop_items, loop_samples_in_batches;

static void
on_done_again(ss_work_t *w, void *arg)
{
    titem_t *it = arg;

    atomic_fetch_add(&loop_items, 1);
    atomic_fetch_add(&loop_samples_in_batches, w->batch_size);
    ss_work_clear_outputs(w);
    if (!atomic_load(&loop_stop) && ss_batcher_submit(loop_b, w, NULL) == 0)
        return;
    tb_on_done(w, it);
}

static double
closed_loop(int conc, int max_batch, int64_t delay_us, int instances,
            int threads, double *avg_batch)
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
        tb_item_f32(&it[i], X, COLS, i % 64, 1);
        it[i].w.done = on_done_again;
    }
    t0 = tb_now();
    atomic_store(&loop_items, 0);
    atomic_store(&loop_samples_in_batches, 0);
    for (int i = 0; i < conc; i++)
        ss_batcher_submit(loop_b, &it[i].w, NULL);
    while (tb_now() - t0 < (int64_t)(secs * 1e9))
        tb_wait(conc, 0.05);
    items = atomic_load(&loop_items);
    t1 = tb_now();
    *avg_batch = (double)atomic_load(&loop_samples_in_batches) /
                 (double)items;
    atomic_store(&loop_stop, 1);
    tb_wait(conc, 30);
    ss_batcher_free(loop_b);
    free(it);
    return (double)items / ((t1 - t0) / 1e9);
}

int
main(int argc, char **argv)
{
    double e1, rt, rt0, avg, thr;

    if (argc > 1)
        secs = atof(argv[1]);
    if (load() < 0)
        return 1;
    e1 = engine_us(1, 1);
    rt = roundtrip_us(8);
    rt0 = roundtrip_us(0);
    printf("batch-1 latency (1 oneDNN thread):\n");
    printf("  engine alone            %8.2f us\n", e1);
    printf("  batcher, max_batch 8    %8.2f us  (overhead %.2f us)\n", rt,
           rt - e1);
    printf("  batcher, max_batch 0    %8.2f us  (overhead %.2f us)\n", rt0,
           rt0 - e1);

    printf("closed loop, 2 executors x 1 oneDNN thread:\n");
    printf("  %-34s %12s %10s\n", "config", "samples/s", "avg batch");
    static const int concs[] = {1, 8, 64};
    for (int c = 0; c < 3; c++) {
        thr = closed_loop(concs[c], 1, 0, 2, 1, &avg);
        printf("  C=%-3d batching off (max 1)       %12.0f %10.2f\n",
               concs[c], thr, avg);
        thr = closed_loop(concs[c], 32, 500, 2, 1, &avg);
        printf("  C=%-3d batching on (max 32, 500us) %11.0f %10.2f\n",
               concs[c], thr, avg);
    }
    printf("engine alone, 1 thread, samples/s (x2 for 2 executors):\n");
    static const int ns[] = {1, 8, 16, 32};
    for (int i = 0; i < 4; i++)
        printf("  batch %-3d %12.0f\n", ns[i], ns[i] * 1e6 /
               engine_us(ns[i], 1));
    ss_graph_free(g);
    return 0;
}
