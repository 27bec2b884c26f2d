/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch slices (engine/plan/plan_slice.c), small plans on one thread
 * (engine/plan/plan_threads.c) and parallel slices (plan_slice.c,
 * crew.c): a small conv net whose samples are each their own, run
 * sliced, on one thread or in parallel slices against its reference plan
 * (SS_ENGINE_NO_FUSION=1) with distinct samples, a guard element after
 * the output, and the rules that pick them; the helper threads of
 * parallel slices really run beside the caller.
 */

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/plan_runs.h"

/*
 * Batch slices (engine/plan/plan_slice.c), softmax over axis `ax`:
 *   x[N,3,S,S] → c1 3→32 +Relu → MaxPool 2x2 → c2 32→16 → Flatten
 *   → Gemm 16(S/2)^2→10 → Softmax                          y [N,10]
 * At S = 12 one sample's largest activation is 18 KB: at batch 256 (4.7
 * MB) the rule runs it in slices of 64 (1.2 MB; compiled for one thread:
 * 2 MB a thread) as far as the pool (1.2 MB for the whole batch), the
 * rest on the whole batch; SS_ENGINE_BATCH_SLICE=4 at batch 10 in 4 + 4
 * + 2 as far as c1 (every value of the batch fits); with
 * SS_ENGINE_SLICE_PREFIX=0 the slices run the whole graph.  At S = 128 a
 * sample's c1 is 2.1 MB: batch 4 in slices of 1, as far as the pool (2
 * MB for the batch).  Softmax over the batch mixes samples: never
 * sliced.
 */
static ss_graph_t *
build_slices(int64_t ax, int64_t sz)
{
    mb_t *b = mb_new(13);
    const int64_t k2[2] = { 2, 2 };
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 3, sz, sz });
    init_rand(b, "w1", 4, (int64_t[]){ 32, 3, 3, 3 }, 0.5f);
    init_rand(b, "w2", 4, (int64_t[]){ 16, 32, 3, 3 }, 0.2f);
    init_rand(b, "wf", 2, (int64_t[]){ 10, 16 * (sz / 2) * (sz / 2) },
              0.1f);
    init_rand(b, "bf", 1, (int64_t[]){ 10 }, 1);
    conv(b, "c1", "x,w1", "c1", 1, 1, 1);
    mb_node(b, "Relu", "relu1", "c1", "r1");
    n = mb_node(b, "MaxPool", "mp", "r1", "p1");
    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
    conv(b, "c2", "p1,w2", "c2", 1, 1, 1);
    mb_node(b, "Flatten", "fl", "c2", "f");
    n = mb_node(b, "Gemm", "fc", "f,wf,bf", "l");
    mb_attr_int(b, n, "transB", 1);
    n = mb_node(b, "Softmax", "sm", "l", "y");
    mb_attr_int(b, n, "axis", ax);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

/* Runs g at batch (SS_ENGINE_BATCH_SLICE=env, NULL: the rule;
 * SS_ENGINE_SLICE_PREFIX=0 unless prefix) against its reference plan;
 * want: the rows of a slice, 0 for none; cut: the value the slices end
 * at, NULL when they run the whole graph. */
static void
slice_case(int64_t ax, int64_t sz, int64_t batch, const char *env,
           int prefix, int64_t want, const char *cut)
{
    ss_graph_t *g = build_slices(ax, sz);
    const int64_t nx = batch * 3 * sz * sz;
    const ss_plan_t *q;
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 };
    double e;

    memset(y, 0, sizeof(y));
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;     /* every sample its own */
    omp_set_num_threads(1);     /* the rule's budget is per thread */
    for (int m = REF; g != NULL && m <= BLOCKED; m += BLOCKED - REF) {
        if (env != NULL)
            setenv("SS_ENGINE_BATCH_SLICE", env, 1);
        if (!prefix)
            setenv("SS_ENGINE_SLICE_PREFIX", "0", 1);
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 3, sz, sz }, x, 1, y[m],
                    n[m], &p[m]);
        unsetenv("SS_ENGINE_BATCH_SLICE");
        unsetenv("SS_ENGINE_SLICE_PREFIX");
    }
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "slices: axis %lld, %lldx%lld, "
       "batch %lld, SS_ENGINE_BATCH_SLICE=%s%s: the plans compile and run",
       (long long)ax, (long long)sz, (long long)sz, (long long)batch,
       env ? env : "(unset)", prefix ? "" : ", SS_ENGINE_SLICE_PREFIX=0");
    if (rc[REF] || rc[BLOCKED])
        goto done;
    e = max_rel_err(y[BLOCKED][0], y[REF][0], n[REF][0]);
    ok(n[BLOCKED][0] == n[REF][0] && e < 1e-5 && y[BLOCKED][0][n[REF][0]]
       == 0, "slices: vs reference: max err %.2g of max |y|, the guard "
       "after the output untouched", e);
    ok((want == 0 ? p[BLOCKED]->slice == NULL
        : p[BLOCKED]->slice != NULL && p[BLOCKED]->slice_rows == want
          && (p[BLOCKED]->slice_tail != NULL) == (batch % want != 0)),
       "slices: %lld rows a slice (want %lld), %s tail",
       (long long)(p[BLOCKED]->slice ? p[BLOCKED]->slice_rows : 0),
       (long long)want, p[BLOCKED]->slice_tail ? "a" : "no");
    /* a prefix: the slices end writing cut, the batch's plan reads it */
    q = p[BLOCKED];
    ok(cut == NULL ? !q->slice_prefix
       : q->slice_prefix && strcmp(q->g->values[q->slice_cut].name, cut) == 0
         && q->n_steps > 0 && q->slice->n_steps > 0,
       "slices: %s (want %s)", q->slice_prefix
       ? q->g->values[q->slice_cut].name : "no prefix", cut ? cut
       : "no prefix");
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/* A NaN in sample 0 of a prefix-sliced plan (batch 256, cut at p1): the
 * run takes the reference plan (internal.h: nan_guard), so sample 0's
 * outputs are NaN as the reference's are, the other samples as before. */
static void
nan_case(void)
{
    ss_graph_t *g = build_slices(1, 12);
    const int64_t batch = 256, nx = batch * 3 * 12 * 12;
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 }, nan0 = 1;
    double e;

    memset(y, 0, sizeof(y));
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;
    x[5] = NAN;
    omp_set_num_threads(1);
    for (int m = REF; g != NULL && m <= BLOCKED; m += BLOCKED - REF)
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 3, 12, 12 }, x, 1, y[m],
                    n[m], &p[m]);
    ok(rc[REF] == 0 && rc[BLOCKED] == 0 && p[BLOCKED]->slice_prefix,
       "nan: prefix-sliced plan compiles and runs");
    if (rc[REF] || rc[BLOCKED])
        goto done;
    for (int i = 0; i < 10; i++)
        nan0 &= isnan(y[BLOCKED][0][i]) && isnan(y[REF][0][i]);
    e = max_rel_err(y[BLOCKED][0] + 10, y[REF][0] + 10, n[REF][0] - 10);
    ok(nan0 && e < 1e-5, "nan: sample 0 NaN as in the reference (%s), "
       "the others max err %.2g", nan0 ? "yes" : "no", e);
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/* g (12x12 samples) at batch with 2 OpenMP threads, its reference plan
 * and the default one, the environment's var set to env for them (NULL:
 * left unset); x gets distinct random samples. */
static void
run2(const ss_graph_t *g, int64_t batch, const char *var, const char *env,
     float *x, float *y[3][N_OUT], int64_t n[3][N_OUT], ss_plan_t *p[3],
     int rc[3])
{
    memset(y, 0, 3 * sizeof(*y));
    for (int64_t i = 0; i < batch * 3 * 12 * 12; i++)
        x[i] = frand() * 2;
    omp_set_num_threads(2);
    run_threads = 2;
    for (int m = REF; g != NULL && m <= BLOCKED; m += BLOCKED - REF) {
        if (env != NULL)
            setenv(var, env, 1);
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 3, 12, 12 }, x, 1, y[m],
                    n[m], &p[m]);
        unsetenv(var);
    }
}

/*
 * Small plans on one thread (engine/plan/plan_threads.c): the graph
 * above at batch 1 is 0.3 M multiply-adds, at batch 64 (not sliced: 1.2
 * MB of activation) 19 M.  With 2 OpenMP threads, the first compiles and
 * runs on one, the second on two (as parallel slices: par_case),
 * SS_ENGINE_ONE_THREAD_MACS=0 on two; the caller's count is 2 again after
 * each compile and run.
 */
static void
thread_case(int64_t batch, const char *env, int want)
{
    ss_graph_t *g = build_slices(1, 12);
    const int64_t nx = batch * 3 * 12 * 12;
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 }, after;
    double e;

    run2(g, batch, "SS_ENGINE_ONE_THREAD_MACS", env, x, y, n, p, rc);
    after = omp_get_max_threads();
    run_threads = 1;
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "threads: batch %lld, "
       "SS_ENGINE_ONE_THREAD_MACS=%s: the plans compile and run",
       (long long)batch, env ? env : "(unset)");
    if (rc[REF] || rc[BLOCKED])
        goto done;
    e = max_rel_err(y[BLOCKED][0], y[REF][0], n[REF][0]);
    ok(n[BLOCKED][0] == n[REF][0] && e < 1e-5, "threads: vs reference: "
       "max err %.2g of max |y|", e);
    ok(p[BLOCKED]->one_thread == want
       && (p[BLOCKED]->slice == NULL) == (batch == 1),
       "threads: %s (want %s)", p[BLOCKED]->one_thread ? "one thread"
       : "the context's threads", want ? "one" : "the context's");
    ok(after == 2, "threads: the caller's OpenMP count is 2 after compile "
       "and run (%d)", after);
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/*
 * Parallel slices (plan_slice.c): with 2 OpenMP threads the graph above
 * at batch 64 runs as 4 slices of 16 rows, at batch 37 as 2 of 16 and a
 * tail of 5, at batch 30 as 2 of 15 (half each), every slice compiled for
 * one thread; SS_ENGINE_PAR_SLICES=0 keeps it whole (at batch 64 no
 * slices at all: 1.2 MB fits two threads' budget).  Softmax over the
 * batch: none.  Outputs against the reference plan either way.
 */
static void
par_case(int64_t ax, int64_t batch, const char *env, int want_par,
         int64_t want_rows)
{
    ss_graph_t *g = build_slices(ax, 12);
    const int64_t nx = batch * 3 * 12 * 12;
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 };
    const ss_plan_t *q;
    double e;

    run2(g, batch, "SS_ENGINE_PAR_SLICES", env, x, y, n, p, rc);
    run_threads = 1;
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "par: axis %lld, batch %lld, "
       "SS_ENGINE_PAR_SLICES=%s: the plans compile and run", (long long)ax,
       (long long)batch, env ? env : "(unset)");
    if (rc[REF] || rc[BLOCKED])
        goto done;
    e = max_rel_err(y[BLOCKED][0], y[REF][0], n[REF][0]);
    ok(n[BLOCKED][0] == n[REF][0] && e < 1e-5 && y[BLOCKED][0][n[REF][0]]
       == 0, "par: vs reference: max err %.2g of max |y|, the guard after "
       "the output untouched", e);
    q = p[BLOCKED];
    ok(q->slice_par == want_par && (want_par == 0 || q->slice_rows
                                    == want_rows),
       "par: %d parallel slices of %lld rows (want %d of %lld)",
       q->slice_par, (long long)q->slice_rows, want_par,
       (long long)want_rows);
    if (want_par > 0)
        ok(q->n_steps == 0 && q->slice != NULL && !q->slice->one_thread
           && q->slice->slice_par == 0
           && (q->slice_tail != NULL) == (batch % want_rows != 0),
           "par: the plan for the batch has no steps, its slices are "
           "plans of their own (%s tail)", q->slice_tail ? "a" : "no");
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/*
 * The helpers (crew.c) run beside the caller: 2 pieces on 2 threads,
 * each piece waiting (up to 30 s, a loaded machine's scheduling) until
 * the other has started -- which only another thread can do while the
 * first waits.  Skipped on one CPU (the pool has no helper there).
 */
struct meet {
    atomic_int started;
    atomic_int met;
    pthread_t who[2];
};

static void
meet_piece(void *arg, int i)
{
    struct meet *m = arg;
    int64_t until = ss_clock_mono_ns() + (int64_t)30 * 1000000000;

    m->who[i] = pthread_self();
    atomic_fetch_add(&m->started, 1);
    while (atomic_load(&m->started) < 2 && ss_clock_mono_ns() < until)
        sched_yield();
    if (atomic_load(&m->started) == 2)
        atomic_fetch_add(&m->met, 1);
}

static void
who_piece(void *arg, int i)
{
    ((pthread_t *)arg)[i] = pthread_self();
}

static void
helpers_case(void)
{
    cpu_set_t set;
    struct meet m;

    pthread_t who[5];

    /* one thread asked for: the caller runs every piece */
    ss__par_run(5, 1, who_piece, who);
    ok(pthread_equal(who[0], pthread_self())
       && pthread_equal(who[4], pthread_self()),
       "helpers: threads 1: the caller ran the pieces");
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) < 2) {
        tap_diag("helpers: one CPU, no helper thread: not checked");
        return;
    }
    for (int r = 0; r < 3; r++) {
        atomic_init(&m.started, 0);
        atomic_init(&m.met, 0);
        ss__par_run(2, 2, meet_piece, &m);
        ok(atomic_load(&m.met) == 2 && !pthread_equal(m.who[0], m.who[1]),
           "helpers: run %d: the 2 pieces ran at once on 2 threads", r);
    }
}

int
main(void)
{
    slice_case(1, 12, 10, "4", 1, 4, "r1");
    slice_case(1, 12, 10, "4", 0, 4, NULL);
    slice_case(1, 12, 256, NULL, 1, 64, "p1");
    slice_case(1, 12, 256, NULL, 0, 64, NULL);
    slice_case(1, 12, 256, "0", 1, 0, NULL);
    slice_case(1, 12, 16, NULL, 1, 0, NULL);
    slice_case(0, 12, 10, "4", 1, 0, NULL);
    slice_case(1, 128, 4, NULL, 1, 1, "p1");
    nan_case();
    thread_case(1, NULL, 1);
    thread_case(64, NULL, 0);
    thread_case(1, "0", 0);
    par_case(1, 64, NULL, 4, 16);
    par_case(1, 37, NULL, 3, 16);
    par_case(1, 30, NULL, 2, 15);
    par_case(1, 64, "0", 0, 0);
    par_case(0, 64, NULL, 0, 0);
    helpers_case();
    return tap_done();
}
