/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The dynamic batcher on the MLP fixture (tests/fixtures/mlp_op13: input
 * [N, 64] f32, logits [N, 10]).
 *
 * The reference for every row is the engine run directly on a batch-1
 * plan.  Batched results are compared with a tolerance, not bitwise:
 * oneDNN may pick a different GEMM kernel (blocking, summation order) for
 * another batch size, so a row's result may differ in the last bits.
 * Tolerance: |got - want| <= 1e-5 * |want| + 1e-6.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/io/npy.h"
#include "tests/tap.h"
#include "tests/unit/test_batch.h"

#define ROWS 64
#define COLS 64
#define OUTS 10

static ss_graph_t *g;
static float *X;            /* [ROWS, COLS] */
static float REF[ROWS][OUTS];
static ss_npz_t *inputs_npz;

static int
load(void)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_npz_t *exp = NULL;
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_err_t err = {0};
    int i, bad = 0;

    if (top == NULL)
        top = ".";
    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/model.onnx",
             top);
    if (ss_graph_load_onnx(path, &g, &err) < 0) {
        tap_diag("%s: %s", path, err.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/batch64.npz",
             top);
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &inputs_npz, &err) < 0) {
        tap_diag("%s: %s", path, err.msg);
        return -1;
    }
    X = ss_npz_tensor(inputs_npz, ss_npz_find(inputs_npz, "input"))->data;
    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/expected64.npz",
             top);
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &exp, &err) < 0) {
        tap_diag("%s: %s", path, err.msg);
        return -1;
    }
    /* The reference: one row at a time through the engine itself. */
    ss_tensor_t in = {SS_DTYPE_F32, 2, {1, COLS}, NULL};
    if (ss_plan_new(g, &in, &p, &err) < 0 || ss_exec_ctx_new(1, &ctx, &err))
        return -1;
    for (i = 0; i < ROWS; i++) {
        ss_tensor_t out = {0};

        in.data = X + i * COLS;
        out.data = REF[i];
        if (ss_plan_run(p, ctx, &in, &out, &err) < 0) {
            tap_diag("run: %s", err.msg);
            return -1;
        }
    }
    const float *want = ss_npz_tensor(exp, 0)->data;
    for (i = 0; i < ROWS * OUTS; i++)
        if (fabsf(REF[i / OUTS][i % OUTS] - want[i]) >
            1e-4f * fabsf(want[i]) + 1e-4f)
            bad++;
    ok(bad == 0, "engine at batch 1 matches the fixture's torch output "
       "(%d of %d off by > 1e-4)", bad, ROWS * OUTS);
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    ss_npz_free(exp);
    return 0;
}

/* Mismatches of a completed item against REF (status, shape, values). */
static int
mismatches(const titem_t *it)
{
    const ss_work_t *w = &it->w;
    int bad = 0;

    if (w->status != 0 || w->n_outputs != 1 || w->outputs == NULL ||
        w->outputs[0].ndim != 2 || w->outputs[0].dims[0] != it->n ||
        w->outputs[0].dims[1] != OUTS ||
        w->outputs[0].dtype != SS_DTYPE_F32)
        return it->n * OUTS + 1;
    for (int r = 0; r < it->n; r++) {
        const float *got = (const float *)w->outputs[0].data + r * OUTS;

        for (int j = 0; j < OUTS; j++) {
            float want = REF[it->row0 + r][j];

            if (fabsf(got[j] - want) > 1e-5f * fabsf(want) + 1e-6f)
                bad++;
        }
    }
    return bad;
}

static ss_batcher_t *
mk(ss_batch_opts_t *o)
{
    ss_batcher_t *b = NULL;
    ss_err_t err = {0};

    if (ss_batcher_new(g, o, &b, &err) < 0)
        tap_diag("ss_batcher_new: %s", err.msg);
    return b;
}

/* ---- batches form, results agree, metrics count ---------------------- */

struct submitter {
    ss_batcher_t *b;
    titem_t *items;
    int n;
    int failed;
};

static void *
submit_all(void *arg)
{
    struct submitter *s = arg;

    for (int i = 0; i < s->n; i++)
        if (ss_batcher_submit(s->b, &s->items[i].w, NULL) < 0)
            s->failed++;
    return NULL;
}

static void
test_formation(void)
{
    static titem_t it[32];
    struct submitter sub[4];
    pthread_t th[4];
    ss_metrics_t *m = ss_metrics_new();
    ss_batch_metrics_t bm, again;
    ss_batch_opts_t o = tb_opts(8, 5000);
    ss_batcher_t *b;
    int bad = 0, multi = 0, once = 0, failed = 0;
    char *text = NULL;
    size_t len;

    ok(ss_batch_metrics_init(m, &bm) == 0, "metric families registered");
    ok(ss_batch_metrics_init(m, &again) == 0 &&
       memcmp(&bm, &again, sizeof bm) == 0,
       "registering them again finds the same families");
    o.instances = 2;
    o.model = "mlp";
    o.version = "1";
    o.metrics = &bm;
    if ((b = mk(&o)) == NULL) {
        ok(0, "batcher created");
        ss_metrics_free(m);
        return;
    }
    tb_reset();
    for (int i = 0; i < 32; i++)
        tb_item_f32(&it[i], X, COLS, i, 1);
    for (int t = 0; t < 4; t++) {
        sub[t] = (struct submitter){b, it + 8 * t, 8, 0};
        pthread_create(&th[t], NULL, submit_all, &sub[t]);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        failed += sub[t].failed;
    }
    is_int(failed, 0, "32 submits from 4 threads accepted");
    is_int(tb_wait(32, 10), 32, "all 32 completed");
    for (int i = 0; i < 32; i++) {
        bad += mismatches(&it[i]);
        multi += it[i].w.batch_size > 1;
        once += it[i].calls == 1;
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(once, 32, "done called exactly once per item");
    is_int(bad, 0, "batched outputs equal the batch-1 engine run "
           "(rtol 1e-5)");
    ok(multi > 0, "items ran in batches larger than one (%d of 32)", multi);
    double execs = ss_series_value(ss_metric_series(bm.execution_count,
                                   (const char *[]){"mlp", "1"}));
    double infs = ss_series_value(ss_metric_series(bm.inference_count,
                                  (const char *[]){"mlp", "1"}));
    ok(execs >= 4 && execs < 32, "fewer executions than items (%g)", execs);
    is_int((int)infs, 32, "inference count is 32 samples");
    ss_metrics_render(m, &text, &len);
    ok(text != NULL && strstr(text, "slimserve_batch_size_bucket{model="
                              "\"mlp\",version=\"1\",le=\"8\"} ") != NULL &&
       strstr(text, "slimserve_queue_depth{model=\"mlp\",version=\"1\"} 0")
       && strstr(text, "slimserve_queue_duration_seconds_count{model="
                 "\"mlp\",version=\"1\"} 32"),
       "metrics render batch sizes, depth and queue times");
    free(text);
    text = NULL;
    ss_batcher_free(b);
    ss_metrics_render(m, &text, &len);
    ok(text != NULL && strstr(text, "model=\"mlp\"") == NULL,
       "series removed when the batcher is freed");
    free(text);
    ss_metrics_free(m);
}

/* ---- submit-time validation and items of several samples ------------- */

static void
test_validation(void)
{
    static titem_t it[6], bad_it;
    static const int sizes[] = {1, 2, 3, 2, 8, 1};
    ss_batch_opts_t o = tb_opts(8, 1000);
    ss_batcher_t *b = mk(&o);
    int row = 0, bad = 0, rcs = 0;
    ss_err_t err;

    if (b == NULL) {
        ok(0, "batcher created");
        return;
    }
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 6; i++) {
        tb_item_f32(&it[i], X, COLS, row, sizes[i]);
        row += sizes[i];
        rcs |= ss_batcher_submit(b, &it[i].w, NULL);
    }
    is_int(rcs, 0, "items of 1, 2, 3 and 8 samples accepted");
    is_int(ss_batcher_queue_depth(b), 6, "queue depth counts items");
    ss_batcher_pause(b, false);
    is_int(tb_wait(6, 10), 6, "all completed");
    for (int i = 0; i < 6; i++) {
        bad += mismatches(&it[i]);
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(bad, 0, "multi-sample items get their own rows back");
    ok(it[0].w.batch_size == 8 && it[4].w.batch_size == 8,
       "batches fill to max_batch_size (%d, %d)", it[0].w.batch_size,
       it[4].w.batch_size);

    tb_item_f32(&bad_it, X, COLS, 0, 9);
    is_int(ss_batcher_submit(b, &bad_it.w, &err), SS_EINVAL,
           "a batch over max_batch_size is refused: %s", err.msg);
    tb_item_f32(&bad_it, X, COLS, 0, 0);
    is_int(ss_batcher_submit(b, &bad_it.w, &err), SS_EINVAL,
           "an empty batch is refused: %s", err.msg);
    tb_item_f32(&bad_it, X, COLS, 0, 1);
    bad_it.in[0].dims[1] = COLS - 1;
    is_int(ss_batcher_submit(b, &bad_it.w, &err), SS_EINVAL,
           "a wrong dim is refused: %s", err.msg);
    tb_item_f32(&bad_it, X, COLS, 0, 1);
    bad_it.in[0].dtype = SS_DTYPE_I32;
    is_int(ss_batcher_submit(b, &bad_it.w, &err), SS_EINVAL,
           "a wrong datatype is refused: %s", err.msg);
    tb_item_f32(&bad_it, X, COLS, 0, 1);
    bad_it.w.n_inputs = 2;
    is_int(ss_batcher_submit(b, &bad_it.w, &err), SS_EINVAL,
           "a wrong input count is refused: %s", err.msg);
    is_int(bad_it.calls, 0, "refused items are not completed");
    is_int(ss_batcher_warmup(b, (const int[]){1, 2, 4, 8, 16, 0}, 6, &err),
           0, "warm-up compiles 1, 2, 4, 8 and skips 16 and 0");
    ss_batcher_free(b);
}

/* ---- preferred sizes; the delay; max reached; free drains ------------ */

static void
test_preferred(void)
{
    static titem_t it[10];
    static const int pref[] = {4, 99, 2};
    ss_batch_opts_t o = tb_opts(8, 300 * 1000);
    ss_batcher_t *b;
    int64_t t0;
    int fours = 0, twos = 0, early = 0, late = 0;

    o.preferred_batch_sizes = pref;
    o.n_preferred = 3;
    if ((b = mk(&o)) == NULL) {
        ok(0, "batcher created");
        return;
    }
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 6; i++) {
        tb_item_f32(&it[i], X, COLS, i, 1);
        ss_batcher_submit(b, &it[i].w, NULL);
    }
    t0 = ss_clock_mono_ns();
    ss_batcher_pause(b, false);
    is_int(tb_wait(6, 10), 6, "6 items with preferred {2, 4} completed");
    for (int i = 0; i < 6; i++) {
        fours += it[i].w.batch_size == 4;
        twos += it[i].w.batch_size == 2;
        early += it[i].w.batch_size == 4 &&
                 it[i].done_ns - t0 < 200 * 1000000LL;
        late += it[i].w.batch_size == 2 &&
                it[i].done_ns - t0 >= 250 * 1000000LL;
        ss_work_clear_outputs(&it[i].w);
    }
    ok(fours == 4 && twos == 2, "a batch of 4 then one of 2 (%d, %d)",
       fours, twos);
    ok(early == 4 && late == 2,
       "the largest preferred size runs at once; the 2 left wait for the "
       "delay, since they could still grow to 4 (%d early, %d late)",
       early, late);
    ss_batcher_free(b);

    /* Without preferred sizes, 6 of max 8 wait for the delay. */
    o = tb_opts(8, 200 * 1000);
    b = mk(&o);
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 6; i++) {
        tb_item_f32(&it[i], X, COLS, i, 1);
        ss_batcher_submit(b, &it[i].w, NULL);
    }
    t0 = ss_clock_mono_ns();
    ss_batcher_pause(b, false);
    is_int(tb_wait(6, 10), 6, "6 items without preferred sizes completed");
    late = 0;
    for (int i = 0; i < 6; i++) {
        late += it[i].w.batch_size == 6 && it[i].done_ns - t0 >= 150000000LL;
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(late, 6, "they ran as one batch of 6 after the delay");
    ss_batcher_free(b);

    /* max reached: 8 go at once, 2 wait out a long delay until free. */
    o = tb_opts(8, 60 * 1000000LL);
    b = mk(&o);
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 10; i++) {
        tb_item_f32(&it[i], X, COLS, i, 1);
        ss_batcher_submit(b, &it[i].w, NULL);
    }
    ss_batcher_pause(b, false);
    is_int(tb_wait(8, 10), 8, "a full batch of 8 runs without the delay");
    usleep(50 * 1000);
    is_int(tb_wait(10, 0), 8, "the other 2 wait for the delay");
    ss_batcher_free(b);
    is_int(tb_wait(10, 0), 10, "free ran the 2 still queued");
    fours = 0;
    for (int i = 0; i < 10; i++) {
        fours += mismatches(&it[i]);
        ss_work_clear_outputs(&it[i].w);
    }
    ok(fours == 0 && it[9].w.batch_size == 2 && it[0].w.batch_size == 8,
       "batches of 8 and 2, right results");
}

/* ---- deadlines ---------------------------------------------------------- */

static void
test_timeout(void)
{
    static titem_t it[3];
    ss_metrics_t *m = ss_metrics_new();
    ss_batch_metrics_t bm;
    ss_batch_opts_t o = tb_opts(8, 1000);
    ss_batcher_t *b;

    ss_batch_metrics_init(m, &bm);
    o.metrics = &bm;
    o.model = "m";
    o.version = "2";
    b = mk(&o);
    ss_batcher_pause(b, true);
    tb_reset();
    tb_item_f32(&it[0], X, COLS, 0, 1);
    it[0].w.deadline_ns = ss_clock_mono_ns() + 20 * 1000000LL;
    tb_item_f32(&it[1], X, COLS, 1, 1);
    it[1].w.deadline_ns = ss_clock_mono_ns() + 60 * 1000000000LL;
    ss_batcher_submit(b, &it[0].w, NULL);
    ss_batcher_submit(b, &it[1].w, NULL);
    usleep(50 * 1000);
    ss_batcher_pause(b, false);
    is_int(tb_wait(2, 10), 2, "both completed");
    is_int(it[0].w.status, SS_ETIMEDOUT, "the expired item timed out: %s",
           it[0].w.err.msg);
    ok(it[0].w.outputs == NULL && it[0].w.batch_size == 0 &&
       it[0].w.queue_ns >= 20 * 1000000LL, "and was not run");
    ok(it[1].w.status == 0 && it[1].w.batch_size == 1 &&
       mismatches(&it[1]) == 0, "the other ran alone");
    is_int((int)ss_series_value(ss_metric_series(bm.inference_count,
           (const char *[]){"m", "2"})), 1, "one sample was inferred");
    ss_work_clear_outputs(&it[1].w);
    ss_batcher_free(b);
    ss_metrics_free(m);

    /* A deadline inside a long delay wakes the executor. */
    o = tb_opts(8, 10 * 1000000LL);
    b = mk(&o);
    tb_reset();
    tb_item_f32(&it[2], X, COLS, 2, 1);
    it[2].w.deadline_ns = ss_clock_mono_ns() + 30 * 1000000LL;
    ss_batcher_submit(b, &it[2].w, NULL);
    is_int(tb_wait(1, 5), 1, "an item waiting for the delay completed");
    ok(it[2].w.status == SS_ETIMEDOUT &&
       it[2].w.queue_ns < 2000 * 1000000LL,
       "with SS_ETIMEDOUT at its deadline (%.1f ms), not after the delay",
       it[2].w.queue_ns / 1e6);
    ss_batcher_free(b);
}

/* ---- a full queue; free with queued items; submit while closing ------ */

static ss_batcher_t *resub_b;
static titem_t resub_it;

static void
on_done_resubmit(ss_work_t *w, void *arg)
{
    titem_t *it = arg;

    tb_item_f32(&resub_it, X, COLS, 0, 1);
    it->resubmit_rc = ss_batcher_submit(resub_b, &resub_it.w, NULL);
    tb_on_done(w, arg);
}

static void
test_busy_and_free(void)
{
    static titem_t it[20];
    ss_batch_opts_t o = tb_opts(8, 1000);
    ss_batcher_t *b;
    ss_err_t err;
    int rcs = 0, bad = 0, once = 0;

    o.max_queue_size = 3;
    b = mk(&o);
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 4; i++)
        tb_item_f32(&it[i], X, COLS, i, 1);
    for (int i = 0; i < 3; i++)
        rcs |= ss_batcher_submit(b, &it[i].w, NULL);
    is_int(rcs, 0, "3 items fill the queue");
    is_int(ss_batcher_submit(b, &it[3].w, &err), SS_EBUSY,
           "the 4th is refused at once: %s", err.msg);
    ss_batcher_pause(b, false);
    is_int(tb_wait(3, 10), 3, "the 3 queued completed");
    is_int(it[3].calls, 0, "the refused one never completes");
    for (int i = 0; i < 3; i++)
        ss_work_clear_outputs(&it[i].w);
    ss_batcher_free(b);

    o = tb_opts(8, 60 * 1000000LL);
    o.instances = 2;
    resub_b = b = mk(&o);
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 20; i++) {
        tb_item_f32(&it[i], X, COLS, 3 * i, 3);
        if (i == 19)
            it[i].w.done = on_done_resubmit;
        rcs |= ss_batcher_submit(b, &it[i].w, NULL);
    }
    is_int(rcs, 0, "20 items queued on a paused batcher");
    ss_batcher_free(b);
    is_int(tb_wait(20, 0), 20, "free completed all 20 before returning");
    for (int i = 0; i < 20; i++) {
        bad += mismatches(&it[i]);
        once += it[i].calls == 1;
        ss_work_clear_outputs(&it[i].w);
    }
    ok(bad == 0 && once == 20, "each once, with the right results");
    is_int(it[19].resubmit_rc, SS_ENOTREADY,
           "a submit while closing is refused");
}

/* ---- many submitters ---------------------------------------------------- */

static void
test_concurrent(void)
{
    enum { T = 4, N = 200 };
    static titem_t it[T * N];
    struct submitter sub[T];
    pthread_t th[T];
    ss_batch_opts_t o = tb_opts(8, 100);
    ss_batcher_t *b;
    int failed = 0, bad = 0, once = 0, multi = 0;

    o.instances = 2;
    b = mk(&o);
    tb_reset();
    srand(7);
    for (int i = 0; i < T * N; i++) {
        int n = 1 + rand() % 3;

        tb_item_f32(&it[i], X, COLS, rand() % (ROWS - n + 1), n);
    }
    for (int t = 0; t < T; t++) {
        sub[t] = (struct submitter){b, it + N * t, N, 0};
        pthread_create(&th[t], NULL, submit_all, &sub[t]);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        failed += sub[t].failed;
    }
    is_int(failed, 0, "%d submits from %d threads accepted", T * N, T);
    is_int(tb_wait(T * N, 60), T * N, "all completed");
    ss_batcher_free(b);
    for (int i = 0; i < T * N; i++) {
        bad += mismatches(&it[i]);
        once += it[i].calls == 1;
        multi += it[i].w.batch_size > it[i].n;
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(once, T * N, "each completed exactly once");
    is_int(bad, 0, "each got its own rows' results");
    tap_diag("%d of %d items shared a batch", multi, T * N);
}

/* ---- max_batch_size 0: items run alone, as given ------------------------ */

static void
test_unbatched(void)
{
    static titem_t it[4];
    static const int sizes[] = {3, 5, 1, 3};
    ss_metrics_t *m = ss_metrics_new();
    ss_batch_metrics_t bm;
    ss_batch_opts_t o = tb_opts(0, 1000000);
    ss_batcher_t *b;
    ss_err_t err;
    int bad = 0, ones = 0;

    ss_batch_metrics_init(m, &bm);
    o.metrics = &bm;
    o.model = "u";
    o.version = "1";
    b = mk(&o);
    ok(ss_batcher_warmup(b, NULL, 0, &err) == 0,
       "warm-up with a symbolic dim compiles nothing and succeeds");
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 4; i++) {
        tb_item_f32(&it[i], X, COLS, 10 * i, sizes[i]);
        ss_batcher_submit(b, &it[i].w, NULL);
    }
    ss_batcher_pause(b, false);
    is_int(tb_wait(4, 10), 4, "4 unbatched items completed");
    for (int i = 0; i < 4; i++) {
        bad += mismatches(&it[i]);
        ones += it[i].w.batch_size == 1;
        ss_work_clear_outputs(&it[i].w);
    }
    ok(bad == 0 && ones == 4, "each ran alone, as given, with its results");
    is_int((int)ss_series_value(ss_metric_series(bm.execution_count,
           (const char *[]){"u", "1"})), 4, "4 executions");
    ss_batcher_free(b);
    ss_metrics_free(m);
}

/* ---- plans freed after a check-only warm-up compile again ------------ */

static void
test_drop_plans(void)
{
    static titem_t it[3];
    ss_batch_opts_t o = tb_opts(8, 0);
    ss_batcher_t *b;
    ss_err_t err = {0};
    int bad = 0;

    if ((b = mk(&o)) == NULL) {
        ok(0, "batcher created");
        return;
    }
    is_int(ss_batcher_warmup(b, (const int[]){1, 8}, 2, &err), 0,
           "warm-up compiles batch 1 and 8");
    is_int(ss_batcher_plan_count(b), 2, "two plans cached");
    is_int(ss_batcher_drop_plans(b), 2, "drop frees both");
    is_int(ss_batcher_plan_count(b), 0, "no plan left");
    is_int(ss_batcher_drop_plans(b), 0, "dropping again frees nothing");
    /* Runs after the drop compile again and agree with the engine's
     * batch-1 reference: the packed weights the freed plans shared were
     * released with them and are packed anew from the graph. */
    tb_reset();
    tb_item_f32(&it[0], X, COLS, 3, 1);
    ok(ss_batcher_submit(b, &it[0].w, &err) == 0, "submit batch 1");
    is_int(tb_wait(1, 10), 1, "batch 1 completed after the drop");
    tb_item_f32(&it[1], X, COLS, 20, 8);
    ok(ss_batcher_submit(b, &it[1].w, &err) == 0, "submit batch 8");
    is_int(tb_wait(2, 10), 2, "batch 8 completed after the drop");
    for (int i = 0; i < 2; i++) {
        bad += mismatches(&it[i]);
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(bad, 0, "results after the drop match the reference");
    is_int(ss_batcher_plan_count(b), 2, "the two sizes compiled on use");
    /* A drop while nothing runs, then a run with a plan that other
     * batchers of the same graph still share packed constants with. */
    ss_batcher_t *b2 = mk(&o);
    ok(b2 != NULL && ss_batcher_warmup(b2, (const int[]){1}, 1, &err) == 0,
       "a second batcher on the same graph warmed up");
    is_int(ss_batcher_drop_plans(b), 2, "the first one drops its plans");
    tb_reset();
    tb_item_f32(&it[2], X, COLS, 40, 1);
    ok(b2 != NULL && ss_batcher_submit(b2, &it[2].w, &err) == 0,
       "submit to the second");
    is_int(tb_wait(1, 10), 1, "completed");
    is_int(mismatches(&it[2]), 0, "the second's shared packed weights "
           "outlive the first's plans");
    ss_work_clear_outputs(&it[2].w);
    ss_batcher_free(b2);
    ss_batcher_free(b);
}

int
main(void)
{
    if (load() < 0) {
        ok(0, "fixture loaded");
        return tap_done();
    }
    test_formation();
    test_validation();
    test_preferred();
    test_timeout();
    test_busy_and_free();
    test_concurrent();
    test_unbatched();
    test_drop_plans();
    ss_npz_free(inputs_npz);
    ss_graph_free(g);
    return tap_done();
}
