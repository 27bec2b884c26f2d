/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch slices (engine/plan/plan_slice.c) and small plans on one thread
 * (engine/plan/plan_threads.c): a small conv net whose samples are each
 * their own, run sliced or on one thread against its reference plan
 * (SS_ENGINE_NO_FUSION=1) with distinct samples, a guard element after
 * the output, and the rules that pick them.
 */

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/*
 * Small plans on one thread (engine/plan/plan_threads.c): the graph
 * above at batch 1 is 0.3 M multiply-adds, at batch 64 (not sliced: 1.2
 * MB of activation) 19 M.  With 2 OpenMP threads, the first compiles and
 * runs on one, the second on two, SS_ENGINE_ONE_THREAD_MACS=0 on two;
 * the caller's count is 2 again after each compile and run.
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

    memset(y, 0, sizeof(y));
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;
    omp_set_num_threads(2);
    run_threads = 2;
    for (int m = REF; g != NULL && m <= BLOCKED; m += BLOCKED - REF) {
        if (env != NULL)
            setenv("SS_ENGINE_ONE_THREAD_MACS", env, 1);
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 3, 12, 12 }, x, 1, y[m],
                    n[m], &p[m]);
        unsetenv("SS_ENGINE_ONE_THREAD_MACS");
    }
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
    ok(p[BLOCKED]->one_thread == want && p[BLOCKED]->slice == NULL,
       "threads: %s (want %s)", p[BLOCKED]->one_thread ? "one thread"
       : "the context's threads", want ? "one" : "the context's");
    ok(after == 2, "threads: the caller's OpenMP count is 2 after compile "
       "and run (%d)", after);
done:
    free_runs(p, y, x);
    ss_graph_free(g);
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
    return tap_done();
}
