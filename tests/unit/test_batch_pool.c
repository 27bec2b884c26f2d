/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The shared executor pool and request isolation.
 *
 * Pool (on the MLP fixture, tests/fixtures/mlp_op13: [N, 64] -> [N, 10]):
 * many batchers cost no threads; every batcher's items complete with
 * their own rows' results; `instances` caps the executors running one
 * batcher at once; batchers with work take turns; freeing one batcher
 * does not wait for another's batch.
 *
 * Parallel slices in the pool (the CNN fixture, [N, 1, 8, 8] -> [N, 10],
 * threads 2): batches of 16-64 rows run as slices on the executors and
 * helper threads, every item gets its own rows' results, and the helpers
 * are at most one per CPU less one, however many executors run them.
 *
 * Isolation (models built in C): ss_input_check finds the integer inputs
 * that index a Gather and refuses out-of-range values at submit, with a
 * message naming the input, the value and its position; a batch that
 * still fails when run (an index the check cannot see) is run again item
 * by item, so only the culprit fails, with its own error, and the others
 * get their right results.
 */

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "engine/io/npy.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/test_batch.h"
#include "tests/unit/threads_named.h"

#define ROWS 64
#define COLS 64
#define OUTS 10

static ss_graph_t *g;
static float *X;
static float REF[ROWS][OUTS];
static ss_npz_t *npz;

static int
threads_now(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;

    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return n;
}

static void *
nothing(void *arg)
{
    return arg;
}

/* Threads a runtime starts at a process's first thread creation and keeps
 * (ThreadSanitizer's background thread) exist before a count is taken:
 * with nothing else starting a thread first, the pool's own would seem
 * one more than it made, and one would outlive it. */
static void
settle_runtime_threads(void)
{
    pthread_t t;

    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
}

static int
load(void)
{
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_err_t err = {0};
    ss_tensor_t in = {SS_DTYPE_F32, 2, {1, COLS}, NULL};

    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/model.onnx",
             top ? top : ".");
    if (ss_graph_load_onnx(path, &g, &err) < 0) {
        tap_diag("%s: %s", path, err.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/mlp_op13/batch64.npz",
             top ? top : ".");
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &npz, &err) < 0) {
        tap_diag("%s: %s", path, err.msg);
        return -1;
    }
    X = ss_npz_tensor(npz, ss_npz_find(npz, "input"))->data;
    if (ss_plan_new(g, &in, &p, &err) < 0 ||
        ss_exec_ctx_new(1, &ctx, &err) < 0)
        return -1;
    for (int i = 0; i < ROWS; i++) {
        ss_tensor_t out = {0};

        in.data = X + i * COLS;
        out.data = REF[i];
        if (ss_plan_run(p, ctx, &in, &out, &err) < 0)
            return -1;
    }
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    return 0;
}

static int
mismatches(const titem_t *it)
{
    const ss_work_t *w = &it->w;
    int bad = 0;

    if (w->status != 0 || w->n_outputs != 1 || w->outputs == NULL ||
        w->outputs[0].dims[0] != it->n)
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
mk(ss_exec_pool_t *pool, int max_batch, int instances)
{
    ss_batch_opts_t o = tb_opts(max_batch, 0);
    ss_batcher_t *b = NULL;
    ss_err_t err = {0};

    o.pool = pool;
    o.instances = instances;
    o.threads = 0;
    if (ss_batcher_new(g, &o, &b, &err) < 0)
        tap_diag("ss_batcher_new: %s", err.msg);
    return b;
}

/* ---- many batchers, few threads ------------------------------------- */

static void
test_many(void)
{
    enum { NB = 40, PER = 6 };
    static titem_t it[NB * PER];
    ss_batcher_t *b[NB];
    ss_exec_pool_t *pool = NULL;
    ss_err_t err = {0};
    int t0, t1, t2, made = 0, rcs = 0, bad = 0, once = 0;

    settle_runtime_threads();
    t0 = threads_now();
    if (ss_exec_pool_new(2, NULL, &pool, &err) < 0) {
        ok(0, "pool created: %s", err.msg);
        return;
    }
    t1 = threads_now();
    is_int(t1 - t0, 2, "a pool of 2 executors is 2 threads");
    for (int i = 0; i < NB; i++) {
        if ((b[i] = mk(pool, 8, 0)) != NULL &&
            ss_batcher_warmup(b[i], (const int[]){1, 8}, 2, &err) == 0)
            made++;
    }
    is_int(made, NB, "%d batchers created and warmed up on it", NB);
    is_int(ss_exec_pool_batchers(pool), NB, "the pool counts them");
    tb_reset();
    for (int i = 0; i < NB * PER; i++) {
        tb_item_f32(&it[i], X, COLS, i % (ROWS - 2), 1 + i % 2);
        rcs |= ss_batcher_submit(b[i % NB], &it[i].w, NULL);
    }
    is_int(rcs, 0, "%d items submitted across them", NB * PER);
    is_int(tb_wait(NB * PER, 30), NB * PER, "all completed");
    t2 = threads_now();
    ok(t2 <= t1, "threads did not grow with batchers (%d with the pool, "
       "%d after %d batchers ran)", t1, t2, NB);
    for (int i = 0; i < NB * PER; i++) {
        bad += mismatches(&it[i]);
        once += it[i].calls == 1;
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(once, NB * PER, "each item completed once");
    is_int(bad, 0, "each got its own rows' results");
    for (int i = 0; i < NB; i++)
        ss_batcher_free(b[i]);
    is_int(ss_exec_pool_batchers(pool), 0, "freed batchers leave the pool");
    ss_exec_pool_free(pool);
    is_int(threads_now(), t0, "freeing the pool joins its threads");
}

/* ---- instances caps executors per batcher --------------------------- */

typedef struct capctx {
    atomic_int in_cb;
    atomic_int max_in_cb;
} capctx_t;

static capctx_t caps[2];

static void
on_done_slow(ss_work_t *w, void *arg)
{
    titem_t *it = arg;
    capctx_t *c = &caps[it->resubmit_rc];
    int now = atomic_fetch_add(&c->in_cb, 1) + 1;
    int prev = atomic_load(&c->max_in_cb);

    while (now > prev && !atomic_compare_exchange_weak(&c->max_in_cb, &prev,
                                                       now))
        ;
    /* Uncapped: hold the executor until another one runs a batch too
     * (bounded), so a loaded machine's scheduling cannot hide it. */
    for (int i = 0; i < (it->resubmit_rc == 1 ? 2000 : 4) &&
                    atomic_load(&c->max_in_cb) < 2; i++)
        usleep(1000);
    atomic_fetch_sub(&c->in_cb, 1);
    tb_on_done(w, arg);
}

static void
test_cap(void)
{
    enum { N = 16 };
    static titem_t it[2][N];
    ss_exec_pool_t *pool = NULL;
    ss_batcher_t *b[2];
    ss_err_t err = {0};

    if (ss_exec_pool_new(2, NULL, &pool, &err) < 0) {
        ok(0, "pool created: %s", err.msg);
        return;
    }
    b[0] = mk(pool, 1, 1);      /* at most one executor at once */
    b[1] = mk(pool, 1, 0);      /* as many as the pool has */
    memset(caps, 0, sizeof caps);
    for (int k = 0; k < 2; k++) {
        tb_reset();
        ss_batcher_pause(b[k], true);
        for (int i = 0; i < N; i++) {
            tb_item_f32(&it[k][i], X, COLS, i, 1);
            it[k][i].resubmit_rc = k;   /* which capctx */
            it[k][i].w.done = on_done_slow;
            ss_batcher_submit(b[k], &it[k][i].w, NULL);
        }
        ss_batcher_pause(b[k], false);
        is_int(tb_wait(N, 20), N, "batcher %d: %d items of batch 1 done",
               k, N);
        for (int i = 0; i < N; i++)
            ss_work_clear_outputs(&it[k][i].w);
    }
    is_int(atomic_load(&caps[0].max_in_cb), 1,
           "instances 1: never two of its batches at once");
    is_int(atomic_load(&caps[1].max_in_cb), 2,
           "instances 0: both executors ran its batches at once");
    ss_batcher_free(b[0]);
    ss_batcher_free(b[1]);
    ss_exec_pool_free(pool);
}

/* ---- holding the executors ---------------------------------------- */

/* An item whose done callback holds its executor until gate_release(). */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

static void
on_done_gate(ss_work_t *w, void *arg)
{
    pthread_mutex_lock(&gate_lock);
    gate_entered = 1;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    tb_on_done(w, arg);
}

static void
gate_hold(ss_batcher_t *b, titem_t *it)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = gate_entered = 0;
    pthread_mutex_unlock(&gate_lock);
    tb_item_f32(it, X, COLS, 0, 1);
    it->w.done = on_done_gate;
    ss_batcher_submit(b, &it->w, NULL);
    pthread_mutex_lock(&gate_lock);
    while (!gate_entered)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

static void
gate_release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* ---- batchers with work take turns ---------------------------------- */

static atomic_int seq;

static void
on_done_seq(ss_work_t *w, void *arg)
{
    titem_t *it = arg;

    it->resubmit_rc = atomic_fetch_add(&seq, 1);
    tb_on_done(w, arg);
}

static void
test_fair(void)
{
    enum { NA = 40, NB = 4 };
    static titem_t a[NA], bb[NB], gi;
    ss_exec_pool_t *pool = NULL;
    ss_batcher_t *ba, *bz, *bg;
    ss_err_t err = {0};
    int last_b = 0;

    if (ss_exec_pool_new(1, NULL, &pool, &err) < 0) {
        ok(0, "pool created: %s", err.msg);
        return;
    }
    ba = mk(pool, 1, 0);
    bz = mk(pool, 1, 0);
    bg = mk(pool, 1, 0);
    atomic_store(&seq, 0);
    tb_reset();
    /* The only executor waits in a callback while both queues fill: a
     * long one first, then a short one. */
    gate_hold(bg, &gi);
    for (int i = 0; i < NA; i++) {
        tb_item_f32(&a[i], X, COLS, i, 1);
        a[i].w.done = on_done_seq;
        ss_batcher_submit(ba, &a[i].w, NULL);
    }
    for (int i = 0; i < NB; i++) {
        tb_item_f32(&bb[i], X, COLS, i, 1);
        bb[i].w.done = on_done_seq;
        ss_batcher_submit(bz, &bb[i].w, NULL);
    }
    gate_release();
    is_int(tb_wait(NA + NB + 1, 20), NA + NB + 1, "all items done");
    for (int i = 0; i < NB; i++)
        if (bb[i].resubmit_rc > last_b)
            last_b = bb[i].resubmit_rc;
    is_int(last_b, 2 * NB - 1, "the two queues took turns: the short one's "
           "last batch ran #%d of %d, not after the long one", last_b,
           NA + NB);
    for (int i = 0; i < NA; i++)
        ss_work_clear_outputs(&a[i].w);
    for (int i = 0; i < NB; i++)
        ss_work_clear_outputs(&bb[i].w);
    ss_work_clear_outputs(&gi.w);
    ss_batcher_free(ba);
    ss_batcher_free(bz);
    ss_batcher_free(bg);
    ss_exec_pool_free(pool);
}

static void
test_free_own(void)
{
    static titem_t ia, ic;
    ss_exec_pool_t *pool = NULL;
    ss_batcher_t *ba, *bb, *bc;
    ss_err_t err = {0};
    int64_t t0;

    if (ss_exec_pool_new(1, NULL, &pool, &err) < 0) {
        ok(0, "pool created: %s", err.msg);
        return;
    }
    ba = mk(pool, 8, 0);
    bb = mk(pool, 8, 0);
    bc = mk(pool, 8, 0);
    tb_reset();
    gate_hold(ba, &ia);
    /* The only executor is held in a's callback. */
    tb_item_f32(&ic, X, COLS, 1, 1);
    is_int(ss_batcher_submit(bc, &ic.w, NULL), 0,
           "another batcher queues while the executor is busy");
    t0 = ss_clock_mono_ns();
    ss_batcher_free(bb);
    ok(ss_clock_mono_ns() - t0 < 500 * 1000000LL, "freeing an idle batcher does not "
       "wait for another's batch (%.1f ms)", (ss_clock_mono_ns() - t0) / 1e6);
    gate_release();
    is_int(tb_wait(2, 10), 2, "both items completed once released");
    ok(mismatches(&ia) == 0 && mismatches(&ic) == 0, "with their results");
    ss_work_clear_outputs(&ia.w);
    ss_work_clear_outputs(&ic.w);
    ss_batcher_free(ba);
    ss_batcher_free(bc);
    ss_exec_pool_free(pool);
}

/* ---- value checks --------------------------------------------------- */

static const float TABLE[10 * 4] = {
    0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33,
    40, 41, 42, 43, 50, 51, 52, 53, 60, 61, 62, 63, 70, 71, 72, 73,
    80, 81, 82, 83, 90, 91, 92, 93};

/* ids [N, 3] int64 -> Cast(int32) -> Identity -> Gather(table [10, 4]);
 * pos [N, 3] int64 -> Gather(table2 [5, 4]); x [N, 3] f32 unchecked.
 * out = gathered rows of both, added, plus x. */
static ss_graph_t *
checked_model(void)
{
    mb_t *b = mb_new(13);
    ss_graph_t *m = NULL;
    ss_err_t err = {0};
    Onnx__NodeProto *n;

    mb_input(b, "ids", SS_DTYPE_I64, 2, (int64_t[]){-1, 3});
    mb_input(b, "pos", SS_DTYPE_I64, 2, (int64_t[]){-1, 3});
    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){-1, 3});
    mb_init_f32(b, "table", 2, (int64_t[]){10, 4}, TABLE);
    mb_init_f32(b, "table2", 2, (int64_t[]){5, 4}, TABLE);
    n = mb_node(b, "Cast", "cast", "ids", "ids32");
    mb_attr_int(b, n, "to", SS_DTYPE_I32);
    mb_node(b, "Identity", "ident", "ids32", "ids_i");
    mb_node(b, "Gather", "embed", "table,ids_i", "e1");
    mb_node(b, "Gather", "posembed", "table2,pos", "e2");
    mb_node(b, "Add", "add", "e1,e2", "y");
    mb_node(b, "Relu", "relu", "x", "xr");
    mb_output(b, "y", SS_DTYPE_F32, 3, (int64_t[]){-1, 3, 4});
    mb_output(b, "xr", SS_DTYPE_F32, 2, (int64_t[]){-1, 3});
    if (mb_load(b, &m, &err) < 0)
        tap_diag("checked model: %s", err.msg);
    return m;
}

/* ids [N, 3] int64 -> Add(ids, 0) -> Gather(table [10, 4]): the Add hides
 * the index from the check, so a bad id fails only when run. */
static ss_graph_t *
hidden_model(void)
{
    static const int64_t zero[1] = {0};
    mb_t *b = mb_new(13);
    ss_graph_t *m = NULL;
    ss_err_t err = {0};

    mb_input(b, "ids", SS_DTYPE_I64, 2, (int64_t[]){-1, 3});
    mb_init_f32(b, "table", 2, (int64_t[]){10, 4}, TABLE);
    mb_init_i64(b, "zero", 1, (int64_t[]){1}, zero);
    mb_node(b, "Add", "add", "ids,zero", "idx");
    mb_node(b, "Gather", "embed", "table,idx", "y");
    mb_output(b, "y", SS_DTYPE_F32, 3, (int64_t[]){-1, 3, 4});
    if (mb_load(b, &m, &err) < 0)
        tap_diag("hidden model: %s", err.msg);
    return m;
}

static void
test_check(void)
{
    ss_graph_t *m = checked_model();
    ss_input_check_t *c = NULL;
    ss_err_t err = {0};
    int64_t ids[2 * 3] = {0, 9, -10, 3, 4, 5};
    int64_t pos[2 * 3] = {0, 1, 2, 3, 4, -5};
    float x[2 * 3] = {0};
    ss_tensor_t in[3] = {
        {SS_DTYPE_I64, 2, {2, 3}, ids},
        {SS_DTYPE_I64, 2, {2, 3}, pos},
        {SS_DTYPE_F32, 2, {2, 3}, x}};

    if (m == NULL || ss_input_check_new(m, &c, &err) < 0) {
        ok(0, "check created: %s", err.msg);
        ss_graph_free(m);
        return;
    }
    is_int(ss_input_check_count(c), 2, "two inputs index a Gather (one "
           "through Cast and Identity), the float one does not");
    is_int(ss_input_check_run(c, in, &err), 0,
           "ids in [-10, 9] and pos in [-5, 4] pass");
    ids[4] = 10;
    is_int(ss_input_check_run(c, in, &err), SS_EINVAL, "id 10 is refused");
    ok(strstr(err.msg, "'ids'") && strstr(err.msg, "value 10 at [1,1]") &&
       strstr(err.msg, "-10 to 9") && strstr(err.msg, "embed"),
       "the message names the input, value, position, range and node: %s",
       err.msg);
    ids[4] = -11;
    is_int(ss_input_check_run(c, in, &err), SS_EINVAL, "id -11 is refused");
    ids[4] = 4;
    pos[1] = 5;
    is_int(ss_input_check_run(c, in, &err), SS_EINVAL, "pos 5 is refused");
    ok(strstr(err.msg, "'pos'") && strstr(err.msg, "[0,1]") &&
       strstr(err.msg, "-5 to 4"), "%s", err.msg);
    ss_input_check_free(c);

    /* Through the batcher: refused at submit, alone, done not called. */
    {
        ss_batch_opts_t o = tb_opts(8, 0);
        ss_batcher_t *b = NULL;
        titem_t it;

        if (ss_batcher_new(m, &o, &b, &err) < 0) {
            ok(0, "batcher: %s", err.msg);
        } else {
            memset(&it, 0, sizeof it);
            it.w.n_inputs = 3;
            it.w.inputs = in;
            it.w.done = tb_on_done;
            it.w.arg = &it;
            is_int(ss_batcher_submit(b, &it.w, &err), SS_EINVAL,
                   "submit refuses the item: %s", err.msg);
            is_int(it.calls, 0, "and never completes it");
            ss_batcher_free(b);
        }
    }
    ss_graph_free(m);
}

/* ---- a failed batch is retried item by item ------------------------ */

typedef struct gitem {
    titem_t t;
    int64_t ids[3];
    ss_tensor_t in;
} gitem_t;

static void
test_retry(void)
{
    enum { N = 12 };
    static gitem_t it[N];
    ss_graph_t *m = hidden_model();
    ss_input_check_t *c = NULL;
    ss_batch_opts_t o = tb_opts(16, 0);
    ss_batcher_t *b = NULL;
    ss_err_t err = {0};
    int good_ok = 0, bad_own = 0, multi = 0;

    if (m == NULL || ss_input_check_new(m, &c, &err) < 0 ||
        ss_batcher_new(m, &o, &b, &err) < 0) {
        ok(0, "hidden model batcher: %s", err.msg);
        ss_input_check_free(c);
        ss_graph_free(m);
        return;
    }
    is_int(ss_input_check_count(c), 0, "the Add hides the index from the "
           "check");
    ss_input_check_free(c);
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < N; i++) {
        memset(&it[i], 0, sizeof it[i]);
        for (int k = 0; k < 3; k++)
            it[i].ids[k] = (i + k) % 10;
        if (i % 4 == 1)
            it[i].ids[2] = 100 + i;     /* the culprits: 1, 5, 9 */
        it[i].in = (ss_tensor_t){SS_DTYPE_I64, 2, {1, 3}, it[i].ids};
        it[i].t.w.n_inputs = 1;
        it[i].t.w.inputs = &it[i].in;
        it[i].t.w.done = tb_on_done;
        it[i].t.w.arg = &it[i].t;
        ss_batcher_submit(b, &it[i].t.w, NULL);
    }
    ss_batcher_pause(b, false);
    is_int(tb_wait(N, 10), N, "%d items, 3 with a bad id, completed", N);
    for (int i = 0; i < N; i++) {
        ss_work_t *w = &it[i].t.w;
        char want[32];

        /* One visit sets one compute time for all of its items. */
        multi += w->compute_ns == it[0].t.w.compute_ns;
        if (i % 4 == 1) {
            snprintf(want, sizeof want, "index %d ", 100 + i);
            bad_own += w->status == SS_EINVAL && w->outputs == NULL &&
                       strstr(w->err.msg, want) != NULL;
            if (w->status != SS_EINVAL || !strstr(w->err.msg, want))
                tap_diag("culprit %d: %d %s", i, w->status, w->err.msg);
            continue;
        }
        if (w->status == 0 && w->n_outputs == 1 &&
            w->outputs[0].dims[0] == 1) {
            const float *y = w->outputs[0].data;
            int right = 1;

            for (int k = 0; k < 3; k++)
                for (int j = 0; j < 4; j++)
                    right &= y[k * 4 + j] == TABLE[it[i].ids[k] * 4 + j];
            good_ok += right;
        } else {
            tap_diag("good item %d: %d %s", i, w->status, w->err.msg);
        }
        ss_work_clear_outputs(w);
    }
    ok(multi == N, "they were taken as one batch (%d of %d)", multi, N);
    is_int(good_ok, N - 3, "every good item got its own right rows");
    is_int(bad_own, 3, "each culprit failed with its own index in the "
           "message, and no outputs");
    ss_batcher_free(b);
    ss_graph_free(m);
}

/* ---- parallel slices: threads 2 on a pool of 2 ---------------------- */

static void
test_par(void)
{
    enum { NI = 24, PER = 8, CN = 64 * PER };
    static titem_t it[NI];
    static float cref[CN][OUTS];
    const char *top = getenv("top_srcdir");
    char path[4096];
    ss_graph_t *cg = NULL;
    ss_npz_t *cz = NULL;
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_exec_pool_t *pool = NULL;
    ss_batcher_t *b = NULL;
    ss_batch_opts_t o = tb_opts(64, 20000);
    ss_err_t err = {0};
    ss_tensor_t in = {SS_DTYPE_F32, 4, {1, 1, 8, 8}, NULL};
    cpu_set_t set;
    float *cx;
    int bad = 0, rcs = 0, cpus = 1;

    snprintf(path, sizeof path, "%s/tests/fixtures/cnn_op13/model.onnx",
             top ? top : ".");
    if (ss_graph_load_onnx(path, &cg, &err) < 0) {
        ok(0, "par: %s: %s", path, err.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/cnn_op13/batch64.npz",
             top ? top : ".");
    if (ss_npz_read(path, SS_NPY_DEFAULT_MAX_BYTES, &cz, &err) < 0) {
        ok(0, "par: %s: %s", path, err.msg);
        goto done;
    }
    cx = ss_npz_tensor(cz, ss_npz_find(cz, "input"))->data;
    /* the reference: each row alone, one thread */
    if (ss_plan_new(cg, &in, &p, &err) < 0
        || ss_exec_ctx_new(1, &ctx, &err) < 0) {
        ok(0, "par: reference plan: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < 64; i++) {
        ss_tensor_t out = {0};

        in.data = cx + i * 64;
        out.data = cref[i];
        if (ss_plan_run(p, ctx, &in, &out, &err) < 0) {
            ok(0, "par: reference run: %s", err.msg);
            goto done;
        }
    }
    o.threads = 2;
    o.instances = 0;
    if (ss_exec_pool_new(2, NULL, &pool, &err) < 0
        || (o.pool = pool, ss_batcher_new(cg, &o, &b, &err)) < 0) {
        ok(0, "par: pool and batcher: %s", err.msg);
        goto done;
    }
    tb_reset();
    for (int i = 0; i < NI; i++) {
        tb_item_f32(&it[i], cx, 64, (i * PER) % (64 - PER), PER);
        it[i].in[0].ndim = 4;
        memcpy(it[i].in[0].dims, (int64_t[]){PER, 1, 8, 8},
               4 * sizeof(int64_t));
        rcs |= ss_batcher_submit(b, &it[i].w, NULL);
    }
    is_int(rcs, 0, "par: %d items of %d rows submitted (threads 2)", NI, PER);
    is_int(tb_wait(NI, 60), NI, "par: all completed");
    for (int i = 0; i < NI; i++) {
        const ss_work_t *w = &it[i].w;

        if (w->status != 0 || w->n_outputs != 1
            || w->outputs[0].dims[0] != PER) {
            bad += PER * OUTS;
            continue;
        }
        for (int r = 0; r < PER; r++)
            for (int j = 0; j < OUTS; j++) {
                float got = ((const float *)w->outputs[0].data)[r * OUTS + j];
                float want = cref[it[i].row0 + r][j];

                bad += fabsf(got - want) > 1e-5f * fabsf(want) + 1e-5f;
            }
        ss_work_clear_outputs(&it[i].w);
    }
    is_int(bad, 0, "par: each item got its own rows' results");
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        cpus = CPU_COUNT(&set);
    ok(threads_named("ss-slice") <= (cpus > 1 ? cpus - 1 : 0), "par: %d helper "
       "threads for %d CPUs (at most one per CPU less one)",
       threads_named("ss-slice"), cpus);
done:
    ss_batcher_free(b);
    ss_exec_pool_free(pool);
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    ss_npz_free(cz);
    ss_graph_free(cg);
}

int
main(void)
{
    if (getenv("SS_TEST_VERBOSE") == NULL)
        ss_log_level = SS_LOG_ERR;
    if (load() < 0) {
        ok(0, "fixture loaded");
        return tap_done();
    }
    test_many();
    test_cap();
    test_fair();
    test_free_own();
    test_check();
    test_retry();
    test_par();
    ss_npz_free(npz);
    ss_graph_free(g);
    return tap_done();
}
