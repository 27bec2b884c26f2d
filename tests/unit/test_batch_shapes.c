/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The batcher with models built in C (tests/unit/onnx_build.h): two inputs
 * with a symbolic non-batch dim (items group by it), an output without a
 * batch dim, a model with static shapes, and the plan cache on its own.
 * The models are elementwise, so batched results must equal the inputs'
 * sums bitwise.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/batch/plancache.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/test_batch.h"

static const float KONST[3] = {1.5f, -2.0f, 3.25f};

/* z = x + y over [N, S]; k = a constant [3]. */
static ss_graph_t *
pair_model(void)
{
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = {0};

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){-1, -1});
    mb_input(b, "y", SS_DTYPE_F32, 2, (int64_t[]){-1, -1});
    mb_node(b, "Add", "add", "x,y", "z");
    mb_const(b, "k", SS_DTYPE_F32, 1, (int64_t[]){3}, KONST, sizeof KONST);
    mb_output(b, "z", SS_DTYPE_F32, 2, (int64_t[]){-1, -1});
    mb_output(b, "k", SS_DTYPE_F32, 1, (int64_t[]){3});
    if (mb_load(b, &g, &err) < 0)
        tap_diag("pair model: %s", err.msg);
    return g;
}

/* y = Relu(x) over a static [2, 4]. */
static ss_graph_t *
static_model(void)
{
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = {0};

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){2, 4});
    mb_node(b, "Relu", "relu", "x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){2, 4});
    if (mb_load(b, &g, &err) < 0)
        tap_diag("static model: %s", err.msg);
    return g;
}

#define MAXROWS 8
#define MAXS 5

typedef struct pitem {
    titem_t t;
    float x[MAXROWS * MAXS], y[MAXROWS * MAXS];
    int s;
} pitem_t;

static void
pitem_init(pitem_t *p, int n, int s, int seed)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < n * s; i++) {
        p->x[i] = (float)(seed * 100 + i) * 0.37f;
        p->y[i] = (float)(seed - i) * 1.91f;
    }
    p->s = s;
    p->t.n = n;
    for (int k = 0; k < 2; k++) {
        p->t.in[k].dtype = SS_DTYPE_F32;
        p->t.in[k].ndim = 2;
        p->t.in[k].dims[0] = n;
        p->t.in[k].dims[1] = s;
    }
    p->t.in[0].data = p->x;
    p->t.in[1].data = p->y;
    p->t.w.n_inputs = 2;
    p->t.w.inputs = p->t.in;
    p->t.w.done = tb_on_done;
    p->t.w.arg = &p->t;
}

/* Whether p's outputs are exactly x + y and the constant. */
static int
pitem_right(const pitem_t *p)
{
    const ss_work_t *w = &p->t.w;
    const float *z, *k;

    if (w->status != 0 || w->n_outputs != 2 || w->outputs[0].ndim != 2 ||
        w->outputs[0].dims[0] != p->t.n || w->outputs[0].dims[1] != p->s ||
        w->outputs[1].ndim != 1 || w->outputs[1].dims[0] != 3)
        return 0;
    z = w->outputs[0].data;
    k = w->outputs[1].data;
    for (int i = 0; i < p->t.n * p->s; i++)
        if (z[i] != p->x[i] + p->y[i])
            return 0;
    return memcmp(k, KONST, sizeof KONST) == 0;
}

static void
test_pair(void)
{
    static pitem_t it[8];
    static const int ns[] = {1, 2, 1, 1, 1, 1, 1, 2};
    static const int ss[] = {3, 3, 5, 3, 5, 3, 5, 4};
    ss_graph_t *g = pair_model();
    ss_batch_opts_t o = tb_opts(8, 1000);
    ss_batcher_t *b = NULL;
    ss_err_t err = {0};
    int right = 0, rcs = 0;

    if (g == NULL || ss_batcher_new(g, &o, &b, &err) < 0) {
        ok(0, "pair batcher: %s", err.msg);
        ss_graph_free(g);
        return;
    }
    ok(ss_batcher_warmup(b, (const int[]){1, 8}, 2, &err) == 0,
       "warm-up with a symbolic non-batch dim skips and succeeds");
    ss_batcher_pause(b, true);
    tb_reset();
    for (int i = 0; i < 8; i++) {
        pitem_init(&it[i], ns[i], ss[i], i);
        rcs |= ss_batcher_submit(b, &it[i].t.w, NULL);
    }
    is_int(rcs, 0, "8 items over S = 3, 4, 5 accepted");
    ss_batcher_pause(b, false);
    is_int(tb_wait(8, 10), 8, "all completed");
    for (int i = 0; i < 8; i++) {
        if (!pitem_right(&it[i]))
            tap_diag("item %d (n %d, S %d): status %d %s", i, ns[i], ss[i],
                     it[i].t.w.status, it[i].t.w.err.msg);
        right += pitem_right(&it[i]);
        ss_work_clear_outputs(&it[i].t.w);
    }
    is_int(right, 8, "each got exactly x + y and the whole constant");
    ok(it[0].t.w.batch_size == 5 && it[1].t.w.batch_size == 5 &&
       it[2].t.w.batch_size == 3 && it[6].t.w.batch_size == 3 &&
       it[7].t.w.batch_size == 2,
       "batches group by the non-batch dim (S=3: %d, S=5: %d, S=4: %d)",
       it[0].t.w.batch_size, it[2].t.w.batch_size, it[7].t.w.batch_size);

    pitem_init(&it[0], 2, 3, 0);
    it[0].t.in[1].dims[0] = 1;
    is_int(ss_batcher_submit(b, &it[0].t.w, &err), SS_EINVAL,
           "inputs disagreeing on the batch are refused: %s", err.msg);
    ss_batcher_free(b);
    ss_graph_free(g);
}

static void
test_static(void)
{
    static titem_t it;
    static float x[8] = {-1, 2, -3, 4, 5, -6, 7, -8};
    ss_graph_t *g = static_model();
    ss_batch_opts_t o = tb_opts(8, 1000);
    ss_batcher_t *b = NULL;
    ss_err_t err = {0};
    int right = 1;

    is_int(ss_batcher_new(g, &o, &b, &err), SS_EINVAL,
           "batching a model without a batch dim is refused: %s", err.msg);
    o.max_batch_size = 0;
    if (ss_batcher_new(g, &o, &b, &err) < 0) {
        ok(0, "static batcher: %s", err.msg);
        ss_graph_free(g);
        return;
    }
    is_int(ss_batcher_warmup(b, NULL, 0, &err), 0,
           "warm-up compiles the static shape");
    tb_reset();
    tb_item_f32(&it, x, 4, 0, 2);
    is_int(ss_batcher_submit(b, &it.w, NULL), 0, "a [2, 4] item accepted");
    is_int(tb_wait(1, 10), 1, "and completed");
    for (int i = 0; i < 8 && it.w.status == 0; i++)
        right &= ((float *)it.w.outputs[0].data)[i] == (x[i] > 0 ? x[i] : 0);
    ok(it.w.status == 0 && right && it.w.batch_size == 1, "with Relu(x)");
    ss_work_clear_outputs(&it.w);
    tb_item_f32(&it, x, 4, 0, 1);
    is_int(ss_batcher_submit(b, &it.w, &err), SS_EINVAL,
           "a [1, 4] item is refused: %s", err.msg);
    ss_batcher_free(b);
    ss_graph_free(g);
}

/* ---- the plan cache ------------------------------------------------------ */

struct getter {
    ss__plancache_t *c;
    const ss_plan_t *plan;
};

static void *
get_n16(void *arg)
{
    struct getter *gt = arg;
    ss_tensor_t sh[2] = {{SS_DTYPE_F32, 2, {16, 3}, NULL},
                         {SS_DTYPE_F32, 2, {16, 3}, NULL}};
    ss__plan_entry_t *e;

    if (ss__plancache_get(gt->c, sh, &gt->plan, &e, NULL) == 0)
        ss__plancache_release(gt->c, e);
    return NULL;
}

static void
test_plancache(void)
{
    ss_graph_t *g = pair_model();
    ss__plancache_t *c = NULL;
    ss__plan_entry_t *e1, *e2, *e3, *e;
    const ss_plan_t *p1, *p2, *p3, *p;
    ss_tensor_t sh[2] = {{SS_DTYPE_F32, 2, {1, 3}, NULL},
                         {SS_DTYPE_F32, 2, {1, 3}, NULL}};
    struct getter gt[4];
    pthread_t th[4];
    int same = 0;

    if (g == NULL || ss__plancache_new(g, 2, &c, NULL) < 0) {
        ok(0, "plan cache");
        ss_graph_free(g);
        return;
    }
    ss__plancache_get(c, sh, &p1, &e1, NULL);       /* held */
    sh[0].dims[0] = sh[1].dims[0] = 2;
    ss__plancache_get(c, sh, &p2, &e2, NULL);
    ss__plancache_release(c, e2);
    sh[0].dims[0] = sh[1].dims[0] = 3;
    ss__plancache_get(c, sh, &p3, &e3, NULL);
    ss__plancache_release(c, e3);
    ok(p1 && p2 && p3 && p1 != p2 && p2 != p3, "three shapes, three plans");
    is_int(ss__plancache_count(c), 2, "capacity 2 holds 2 plans");
    sh[0].dims[0] = sh[1].dims[0] = 1;
    ss__plancache_get(c, sh, &p, &e, NULL);
    ok(p == p1, "the pinned plan survived eviction (LRU took the idle one)");
    ss__plancache_release(c, e);
    ss__plancache_release(c, e1);
    sh[1].dims[1] = 4;
    is_int(ss__plancache_get(c, sh, &p, &e, NULL) < 0, 1,
           "a shape the graph rejects fails to compile, and is not cached");
    ss__plancache_release(c, e);
    for (int i = 0; i < 4; i++) {
        gt[i] = (struct getter){c, NULL};
        pthread_create(&th[i], NULL, get_n16, &gt[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        same += gt[i].plan != NULL && gt[i].plan == gt[0].plan;
    is_int(same, 4, "4 threads asking for one new shape share one compile");
    is_int(ss__plancache_count(c), 2, "still within capacity");
    ss__plancache_free(c);
    ss_graph_free(g);
}

/* Fails the n-th allocation from the batcher's creation on, for every n
 * until a run needs no more: each submitted item must still complete
 * exactly once, right or with an error, and nothing may leak (ASan). */
static void
test_alloc_failures(void)
{
    static pitem_t it[2];
    ss_graph_t *g = pair_model();
    int n, created = 0, completed = 0, submitted = 0, wrong = 0;
    int level = ss_log_level;

    ss_log_level = SS_LOG_ERR;  /* each failed batch logs a warning */
    for (n = 1; n < 400; n++) {
        ss_batch_opts_t o = tb_opts(8, 100 * 1000);
        ss_batcher_t *b = NULL;
        int sub = 0, fails_before;

        tb_reset();
        ss_alloc_fail_after(n);
        if (ss_batcher_new(g, &o, &b, NULL) == 0) {
            created++;
            ss_batcher_pause(b, true);
            for (int i = 0; i < 2; i++) {
                pitem_init(&it[i], 1 + i, 3, i);
                sub += ss_batcher_submit(b, &it[i].t.w, NULL) == 0;
            }
            ss_batcher_pause(b, false);
            ss_batcher_free(b);
        }
        ss_alloc_fail_after(0);
        submitted += sub;
        completed += tb_wait(sub, 0);
        fails_before = 0;
        for (int i = 0; i < sub; i++) {
            fails_before += it[i].t.w.status != 0;
            wrong += it[i].t.calls != 1 ||
                     (it[i].t.w.status == 0 && !pitem_right(&it[i]));
            ss_work_clear_outputs(&it[i].t.w);
        }
        if (b != NULL && sub == 2 && fails_before == 0)
            break;      /* the n-th allocation came after everything */
    }
    ok(n < 400 && created > 0, "allocation failures 1..%d: the batcher "
       "was created %d times", n, created);
    ok(completed == submitted && wrong == 0, "all %d items submitted "
       "completed once, right or with an error", submitted);
    ss_log_level = level;
    ss_graph_free(g);
}

int
main(void)
{
    test_pair();
    test_alloc_failures();
    test_static();
    test_plancache();
    return tap_done();
}
