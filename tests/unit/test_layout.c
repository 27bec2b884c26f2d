/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Blocked activation layouts (engine/plan/plan_layout.c): a conv chain with a
 * residual add, grouped and depthwise convs, channel counts that are not
 * a multiple of 16, pools, a binary op, a conv left on its reference
 * kernel and graph outputs in the middle of the chain.  The blocked plan
 * must agree with the reference plan (SS_ENGINE_NO_FUSION=1) and with the
 * plain fused plan (SS_ENGINE_NO_BLOCKED=1), keep the values it should
 * blocked (nChw16c) or channels-last (NHWC) and graph outputs plain, and
 * never let a step read a value in a layout that puts its elements
 * elsewhere than the one it was written in.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/plan_runs.h"

static void
bn_params(mb_t *b, const char *prefix, int64_t c)
{
    char name[32];
    float var[64];

    snprintf(name, sizeof(name), "%s_s", prefix);
    init_rand(b, name, 1, &c, 1);
    snprintf(name, sizeof(name), "%s_b", prefix);
    init_rand(b, name, 1, &c, 1);
    snprintf(name, sizeof(name), "%s_m", prefix);
    init_rand(b, name, 1, &c, 1);
    for (int64_t i = 0; i < c; i++)
        var[i] = fabsf(frand()) + 0.5f;
    snprintf(name, sizeof(name), "%s_v", prefix);
    mb_init_f32(b, name, 1, &c, var);
}

/*
 * x[N,3,10,10]
 *   c1 3→16 +BN +Relu                 r1  [N,16,10,10]  (graph output)
 *   c2 16→16 +BN +Add(r1) +Relu       r2
 *   c3 16→32 group 2, stride 2 +Relu  r3  [N,32,5,5]
 *   c4 depthwise 32 +Add(r3)          r4
 *   c5 32→32 1x1 +Relu                r5
 *   c6 32→24                          r6  [N,24,5,5]    (C % 16 != 0)
 *   c8 24→16                          r8  [N,16,5,5]
 *   c9 16→16                          r9
 *   MaxPool(r9) + AveragePool(r9)     s   [N,16,2,2]
 *   GlobalAveragePool, Flatten, Gemm  y   [N,10]        (graph output)
 *   c7 16→16 auto_pad SAME_UPPER (r2) z   [N,16,10,10]  (graph output;
 *                                       stays on the reference kernel)
 */
static ss_graph_t *
build(void)
{
    mb_t *b = mb_new(13);
    const int64_t k2[2] = { 2, 2 };
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 3, 10, 10 });
    init_rand(b, "w1", 4, (int64_t[]){ 16, 3, 3, 3 }, 0.5f);
    init_rand(b, "b1", 1, (int64_t[]){ 16 }, 0.5f);
    init_rand(b, "w2", 4, (int64_t[]){ 16, 16, 3, 3 }, 0.2f);
    init_rand(b, "w3", 4, (int64_t[]){ 32, 8, 3, 3 }, 0.3f);
    init_rand(b, "w4", 4, (int64_t[]){ 32, 1, 3, 3 }, 0.5f);
    init_rand(b, "w5", 4, (int64_t[]){ 32, 32, 1, 1 }, 0.3f);
    init_rand(b, "b5", 1, (int64_t[]){ 32 }, 0.5f);
    init_rand(b, "w6", 4, (int64_t[]){ 24, 32, 3, 3 }, 0.1f);
    init_rand(b, "w8", 4, (int64_t[]){ 16, 24, 3, 3 }, 0.2f);
    init_rand(b, "w9", 4, (int64_t[]){ 16, 16, 3, 3 }, 0.3f);
    init_rand(b, "w7", 4, (int64_t[]){ 16, 16, 3, 3 }, 0.2f);
    init_rand(b, "wf", 2, (int64_t[]){ 10, 16 }, 1);
    init_rand(b, "bf", 1, (int64_t[]){ 10 }, 1);
    bn_params(b, "bn1", 16);
    bn_params(b, "bn2", 16);

    conv(b, "c1", "x,w1,b1", "c1", 1, 1, 1);
    mb_node(b, "BatchNormalization", "bn1", "c1,bn1_s,bn1_b,bn1_m,bn1_v",
            "n1");
    mb_node(b, "Relu", "relu1", "n1", "r1");
    conv(b, "c2", "r1,w2", "c2", 1, 1, 1);
    mb_node(b, "BatchNormalization", "bn2", "c2,bn2_s,bn2_b,bn2_m,bn2_v",
            "n2");
    mb_node(b, "Add", "res2", "n2,r1", "a2");
    mb_node(b, "Relu", "relu2", "a2", "r2");
    conv(b, "c3", "r2,w3", "c3", 1, 2, 2);
    mb_node(b, "Relu", "relu3", "c3", "r3");
    conv(b, "c4", "r3,w4", "c4", 1, 1, 32);
    mb_node(b, "Add", "res4", "c4,r3", "r4");
    conv(b, "c5", "r4,w5,b5", "c5", 0, 1, 1);
    mb_node(b, "Relu", "relu5", "c5", "r5");
    conv(b, "c6", "r5,w6", "r6", 1, 1, 1);
    conv(b, "c8", "r6,w8", "r8", 1, 1, 1);
    conv(b, "c9", "r8,w9", "r9", 1, 1, 1);
    n = mb_node(b, "MaxPool", "mp", "r9", "p1");
    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
    n = mb_node(b, "AveragePool", "ap", "r9", "p2");
    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
    mb_node(b, "Add", "sum", "p1,p2", "s");
    mb_node(b, "GlobalAveragePool", "gap", "s", "gp");
    mb_node(b, "Flatten", "fl", "gp", "f");
    n = mb_node(b, "Gemm", "fc", "f,wf,bf", "y");
    mb_attr_int(b, n, "transB", 1);
    n = mb_node(b, "Conv", "c7", "r2,w7", "z");
    mb_attr_string(b, n, "auto_pad", "SAME_UPPER");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    mb_output(b, "z", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 10, 10 });
    mb_output(b, "r1", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 10, 10 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

static int
value_id(const ss_graph_t *g, const char *name)
{
    for (int v = 0; v < g->n_values; v++)
        if (strcmp(g->values[v].name, name) == 0)
            return v;
    return -1;
}

static ss_dnn_layout_t
layout_of(const ss_plan_t *p, const char *name)
{
    int v = value_id(p->g, name);

    return v < 0 ? (ss_dnn_layout_t)-1 : p->vals[ss__plan_root(p, v)].layout;
}

static int
n_blocked(const ss_plan_t *p)
{
    int n = 0;

    for (int v = 0; v < p->n_vals; v++)
        n += p->vals[v].kind == SS_PV_ARENA
             && p->vals[v].layout == SS_DNN_BLOCKED;
    return n;
}

/* Where element (n, c, h, w) of a [N,C,H,W] tensor lives in layout l. */
static int64_t
offset(ss_dnn_layout_t l, const int64_t *d, int64_t n, int64_t c, int64_t h,
       int64_t w)
{
    if (l == SS_DNN_NHWC)
        return ((n * d[2] + h) * d[3] + w) * d[1] + c;
    if (l == SS_DNN_BLOCKED)
        return (((n * (d[1] / 16) + c / 16) * d[2] + h) * d[3] + w) * 16
               + c % 16;
    return ((n * d[1] + c) * d[2] + h) * d[3] + w;
}

/* Layouts a and b of t put every element at the same place. */
static int
same_bytes(ss_dnn_layout_t a, ss_dnn_layout_t b, const ss_tensor_t *t)
{
    const int64_t *d = t->dims;

    if (a == b)
        return 1;
    if (t->ndim != 4)
        return 0;
    for (int64_t n = 0; n < d[0]; n++)
        for (int64_t c = 0; c < d[1]; c++)
            for (int64_t h = 0; h < d[2]; h++)
                for (int64_t w = 0; w < d[3]; w++)
                    if (offset(a, d, n, c, h, w) != offset(b, d, n, c, h, w))
                        return 0;
    return 1;
}

/* Every read sees the layout its value was written in. */
static int
reads_agree(const ss_plan_t *p)
{
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        for (int k = 0; k < st->n_in; k++) {
            int r;
            ss_dnn_layout_t need;

            if (st->in[k] < 0)
                continue;
            r = ss__plan_root(p, st->in[k]);
            need = st->kind == SS_STEP_DNN ? ss_dnn_prim_layout(st->prim, k)
                                           : SS_DNN_PLAIN;
            if (!same_bytes(p->vals[r].layout, need, &p->vals[r].t)) {
                tap_diag("step %d (%s) reads value %d in layout %d, "
                         "written %d", s, st->what, st->in[k], (int)need,
                         (int)p->vals[r].layout);
                return 0;
            }
        }
    }
    return 1;
}

static void
test_chain(const ss_graph_t *g, int64_t batch)
{
    static const char *const names[N_OUT] = { "y", "z", "r1" };
    int64_t nx = batch * 3 * 10 * 10, n[3][N_OUT];
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3];

    memset(y, 0, sizeof(y));
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;
    for (int m = REF; m <= BLOCKED; m++)
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 3, 10, 10 }, x, N_OUT,
                    y[m], n[m], &p[m]);
    ok(rc[REF] == 0 && rc[PLAIN] == 0 && rc[BLOCKED] == 0,
       "batch %lld: the three plans compile and run", (long long)batch);
    if (rc[REF] || rc[PLAIN] || rc[BLOCKED])
        goto done;
    for (int k = 0; k < N_OUT; k++) {
        double eb = max_rel_err(y[BLOCKED][k], y[REF][k], n[REF][k]);
        double ep = max_rel_err(y[BLOCKED][k], y[PLAIN][k], n[REF][k]);

        ok(n[BLOCKED][k] == n[REF][k] && eb < 1e-5,
           "batch %lld: output %s, blocked vs reference: max err %.2g of "
           "max |y|",
           (long long)batch, names[k], eb);
        ok(ep < 1e-5, "batch %lld: output %s, blocked vs plain fused: max "
           "err %.2g of max |y|", (long long)batch, names[k], ep);
    }
    ok(reads_agree(p[BLOCKED]), "batch %lld: every read of the blocked "
       "plan sees its value's layout", (long long)batch);
    ok(reads_agree(p[PLAIN]) && n_blocked(p[PLAIN]) == 0
       && count_steps(p[PLAIN], "Reorder>nChw16c") == 0
       && count_steps(p[PLAIN], "Reorder>NCHW") == 0,
       "batch %lld: SS_ENGINE_NO_BLOCKED=1: nothing blocked, no reorders",
       (long long)batch);
    ok(n_blocked(p[REF]) == 0 && count_steps(p[REF], "Conv") == 0,
       "batch %lld: SS_ENGINE_NO_FUSION=1: reference kernels only",
       (long long)batch);
    /* r3 and r8 are not asserted: whether oneDNN has a blocked kernel
     * for a conv with 8 channels per group, or for one reading 24
     * channels, is its business (the plan falls back to plain) */
    ok(layout_of(p[BLOCKED], "r2") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "r4") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "r9") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "p1") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "p2") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "s") == SS_DNN_BLOCKED,
       "batch %lld: convs (depthwise too), pools and the binary op run "
       "blocked", (long long)batch);
    ok(layout_of(p[BLOCKED], "r6") == SS_DNN_NHWC
       && layout_of(p[BLOCKED], "r5") == SS_DNN_NHWC,
       "batch %lld: 24 channels, and the input of a conv to 24, run NHWC",
       (long long)batch);
    ok(layout_of(p[BLOCKED], "r1") == SS_DNN_PLAIN
       && layout_of(p[BLOCKED], "z") == SS_DNN_PLAIN,
       "batch %lld: graph outputs are written plain", (long long)batch);
    /* r1 is an output (plain) and c2's residual operand (blocked); r2 is
     * written blocked and read plain by c7's reference kernel */
    ok(count_steps(p[BLOCKED], "Reorder>nChw16c") >= 1
       && count_steps(p[BLOCKED], "Reorder>NCHW") >= 1,
       "batch %lld: reorders at the chain's edges (%d to blocked, %d to "
       "plain)", (long long)batch,
       count_steps(p[BLOCKED], "Reorder>nChw16c"),
       count_steps(p[BLOCKED], "Reorder>NCHW"));
    for (int s = 0; s < p[BLOCKED]->n_steps; s++)
        if (p[BLOCKED]->steps[s].kind == SS_STEP_DNN)
            tap_diag("  %-24s %s", p[BLOCKED]->steps[s].what,
                     ss_dnn_prim_impl(p[BLOCKED]->steps[s].prim));
done:
    free_runs(p, y, x);
}

/*
 * A view feeding convs of two families, so one plain value is reordered
 * into two layouts:
 *   x[N,512] → Reshape [N,32,4,4] = v
 *   cA 32→32 +Relu (v) → GlobalAveragePool → Flatten   y2 [N,32]
 *   cB 32→24 1x1 (v) → cC 24→24                         y3 [N,24,4,4]
 */
static void
test_view(void)
{
    mb_t *b = mb_new(13);
    const int64_t shape[4] = { -1, 32, 4, 4 }, batch = 5;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    float *x = malloc((size_t)batch * 512 * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 };

    memset(y, 0, sizeof(y));
    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 512 });
    mb_init_i64(b, "shape", 1, (int64_t[]){ 4 }, shape);
    init_rand(b, "wa", 4, (int64_t[]){ 32, 32, 3, 3 }, 0.1f);
    init_rand(b, "wb", 4, (int64_t[]){ 24, 32, 1, 1 }, 0.3f);
    init_rand(b, "wc", 4, (int64_t[]){ 24, 24, 3, 3 }, 0.2f);
    mb_node(b, "Reshape", "rs", "x,shape", "v");
    conv(b, "cA", "v,wa", "ca", 1, 1, 1);
    mb_node(b, "Relu", "relua", "ca", "a");
    mb_node(b, "GlobalAveragePool", "gap", "a", "ga");
    mb_node(b, "Flatten", "fl", "ga", "y2");
    conv(b, "cB", "v,wb", "vb", 0, 1, 1);
    conv(b, "cC", "vb,wc", "y3", 1, 1, 1);
    mb_output(b, "y2", SS_DTYPE_F32, 2, (int64_t[]){ -1, 32 });
    mb_output(b, "y3", SS_DTYPE_F32, 4, (int64_t[]){ -1, 24, 4, 4 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    for (int64_t i = 0; i < batch * 512; i++)
        x[i] = frand() * 2;
    for (int m = REF; g != NULL && m <= BLOCKED; m++)
        rc[m] = run(g, m, 2, (int64_t[]){ batch, 512 }, x, 2, y[m], n[m],
                    &p[m]);
    ok(rc[REF] == 0 && rc[PLAIN] == 0 && rc[BLOCKED] == 0,
       "view: the three plans compile and run");
    if (rc[REF] || rc[PLAIN] || rc[BLOCKED])
        goto done;
    for (int k = 0; k < 2; k++) {
        double e = max_rel_err(y[BLOCKED][k], y[REF][k], n[REF][k]);

        ok(n[BLOCKED][k] == n[REF][k] && e < 1e-5, "view: output %d, "
           "blocked vs reference: max err %.2g of max |y|", k, e);
    }
    ok(reads_agree(p[BLOCKED]), "view: every read sees its value's layout");
    ok(count_steps(p[BLOCKED], "Reorder>nChw16c") == 1
       && count_steps(p[BLOCKED], "Reorder>NHWC") == 1,
       "view: the reshaped value is reordered once to nChw16c (for cA) "
       "and once to NHWC (for cB): %d, %d",
       count_steps(p[BLOCKED], "Reorder>nChw16c"),
       count_steps(p[BLOCKED], "Reorder>NHWC"));
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/* The elements of the reorders in p to layout what of a [*,c,h,*] value. */
static int64_t
reordered(const ss_plan_t *p, const char *what, int64_t c, int64_t h)
{
    int64_t n = 0;

    for (int s = 0; s < p->n_steps; s++) {
        const ss_tensor_t *t;

        if (p->steps[s].kind != SS_STEP_DNN
            || strcmp(p->steps[s].what, what) != 0)
            continue;
        t = &p->vals[p->steps[s].out[0]].t;
        if (t->dims[1] == c && t->dims[2] == h)
            n += ss_tensor_numel(t);
    }
    return n;
}

/*
 * A MobileNetV2 block down to 24 channels (not a multiple of 16: NHWC):
 *   x[N,16,16,16] → cE 16→96 1x1 +Relu   e  [N,96,16,16]  blocked
 *   cD depthwise 96, stride 2 +Relu       d  [N,96,8,8]
 *   cP 96→24 1x1                          q  [N,24,8,8]    NHWC family
 *   cF 24→32 1x1, GlobalAveragePool, Flatten  y [N,32]
 * The depthwise conv shrinks its input 4x: it runs in its source's
 * layout and the layout pass reorders its output to NHWC, never the
 * 4x larger expansion.
 */
static void
test_shrink(void)
{
    mb_t *b = mb_new(13);
    const int64_t batch = 2, nx = batch * 16 * 16 * 16;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    float *x = malloc((size_t)nx * sizeof(float)), *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    int rc[3] = { -1, -1, -1 };
    double e;

    memset(y, 0, sizeof(y));
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 16, 16 });
    init_rand(b, "we", 4, (int64_t[]){ 96, 16, 1, 1 }, 0.3f);
    init_rand(b, "wd", 4, (int64_t[]){ 96, 1, 3, 3 }, 0.5f);
    init_rand(b, "wp", 4, (int64_t[]){ 24, 96, 1, 1 }, 0.2f);
    init_rand(b, "wf", 4, (int64_t[]){ 32, 24, 1, 1 }, 0.3f);
    conv(b, "cE", "x,we", "ce", 0, 1, 1);
    mb_node(b, "Relu", "relue", "ce", "e");
    conv(b, "cD", "e,wd", "cd", 1, 2, 96);
    mb_node(b, "Relu", "relud", "cd", "d");
    conv(b, "cP", "d,wp", "q", 0, 1, 1);
    conv(b, "cF", "q,wf", "f", 0, 1, 1);
    mb_node(b, "GlobalAveragePool", "gap", "f", "gf");
    mb_node(b, "Flatten", "fl", "gf", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 32 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;
    for (int m = REF; g != NULL && m <= BLOCKED; m += BLOCKED - REF)
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 16, 16, 16 }, x, 1, y[m],
                    n[m], &p[m]);
    ok(rc[REF] == 0 && rc[BLOCKED] == 0,
       "shrink: the plans compile and run");
    if (rc[REF] || rc[BLOCKED])
        goto done;
    e = max_rel_err(y[BLOCKED][0], y[REF][0], n[REF][0]);
    ok(n[BLOCKED][0] == n[REF][0] && e < 1e-5,
       "shrink: blocked vs reference: max err %.2g of max |y|", e);
    ok(reads_agree(p[BLOCKED]), "shrink: every read sees its value's "
       "layout");
    ok(layout_of(p[BLOCKED], "e") == SS_DNN_BLOCKED
       && layout_of(p[BLOCKED], "d") == SS_DNN_BLOCKED,
       "shrink: the expansion and the depthwise conv write nChw16c "
       "(%d, %d)", (int)layout_of(p[BLOCKED], "e"),
       (int)layout_of(p[BLOCKED], "d"));
    ok(reordered(p[BLOCKED], "Reorder>NHWC", 96, 16) == 0
       && reordered(p[BLOCKED], "Reorder>NHWC", 96, 8) == batch * 96 * 64,
       "shrink: the depthwise output is reordered to NHWC (%lld "
       "elements), not its input (%lld)",
       (long long)reordered(p[BLOCKED], "Reorder>NHWC", 96, 8),
       (long long)reordered(p[BLOCKED], "Reorder>NHWC", 96, 16));
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/* Whether every conv step of p runs a real blocked or brgconv kernel
 * (not oneDNN's gemm fallback over NCHW, nor its reference code). */
static int
convs_direct(const ss_plan_t *p)
{
    for (int s = 0; s < p->n_steps; s++) {
        const char *impl;

        if (p->steps[s].kind != SS_STEP_DNN
            || strncmp(p->steps[s].what, "Conv", 4) != 0)
            continue;
        impl = ss_dnn_prim_impl(p->steps[s].prim);
        if (strstr(impl, "gemm") != NULL || strncmp(impl, "ref", 3) == 0) {
            tap_diag("step %d (%s) runs %s", s, p->steps[s].what, impl);
            return 0;
        }
    }
    return 1;
}

/* Loads b (freed), runs it on random x of dims xd in the reference and
 * the blocked modes and checks that both compile and that its n_out
 * outputs agree within 1e-5 of max |y|; returns whether the plans ran
 * (p[REF], p[BLOCKED] then kept for the caller's checks). */
static int
ref_vs_blocked(const char *name, mb_t *b, const int64_t xd[4], int n_out,
               ss_graph_t **g, ss_plan_t *p[3], float *y[3][N_OUT],
               float **x)
{
    int64_t nx = xd[0] * xd[1] * xd[2] * xd[3], n[3][N_OUT];
    ss_err_t err = { 0 };
    int rc[3] = { -1, -1, -1 };

    memset(y, 0, 3 * N_OUT * sizeof(float *));
    *x = malloc((size_t)nx * sizeof(float));
    if (mb_load(b, g, &err) < 0)
        tap_diag("load: %s", err.msg);
    for (int64_t i = 0; i < nx; i++)
        (*x)[i] = frand() * 2;
    for (int m = REF; *g != NULL && m <= BLOCKED; m += BLOCKED - REF)
        rc[m] = run(*g, m, 4, xd, *x, n_out, y[m], n[m], &p[m]);
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "%s: the plans compile and run",
       name);
    if (rc[REF] || rc[BLOCKED])
        return 0;
    for (int k = 0; k < n_out; k++) {
        double e = max_rel_err(y[BLOCKED][k], y[REF][k], n[REF][k]);

        ok(n[BLOCKED][k] == n[REF][k] && e < 1e-5, "%s: output %d, "
           "blocked vs reference: max err %.2g of max |y|", name, k, e);
    }
    return 1;
}

/*
 * Convs whose readers want NCHW bytes, behind a blocked source (the
 * 28x28 CNN's last conv before its Flatten):
 *   x[N,16,7,7] → cA 16→32 +Relu   a  [N,32,7,7]   blocked
 *   cB 32→48 +Relu (a) → Flatten → Gemm             y [N,10]
 *   cC 32→16 (a)                                     z [N,16,7,7] (output)
 * cB and cC run blocked, and their outputs (48 and 16 channels) are
 * reordered to NCHW after them, never a (32 channels) before them.
 */
static void
test_flatten(void)
{
    mb_t *b = mb_new(13);
    const int64_t batch = 3;
    ss_graph_t *g = NULL;
    Onnx__NodeProto *nd;
    float *x = NULL, *y[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 7, 7 });
    init_rand(b, "wa", 4, (int64_t[]){ 32, 16, 3, 3 }, 0.3f);
    init_rand(b, "wb", 4, (int64_t[]){ 48, 32, 3, 3 }, 0.2f);
    init_rand(b, "wc", 4, (int64_t[]){ 16, 32, 3, 3 }, 0.2f);
    init_rand(b, "wf", 2, (int64_t[]){ 10, 48 * 49 }, 0.05f);
    init_rand(b, "bf", 1, (int64_t[]){ 10 }, 1);
    conv(b, "cA", "x,wa", "ca", 1, 1, 1);
    mb_node(b, "Relu", "relua", "ca", "a");
    conv(b, "cB", "a,wb", "cb", 1, 1, 1);
    mb_node(b, "Relu", "relub", "cb", "rb");
    mb_node(b, "Flatten", "fl", "rb", "f");
    nd = mb_node(b, "Gemm", "fc", "f,wf,bf", "y");
    mb_attr_int(b, nd, "transB", 1);
    conv(b, "cC", "a,wc", "z", 1, 1, 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    mb_output(b, "z", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 7, 7 });
    if (!ref_vs_blocked("flatten", b, (int64_t[]){ batch, 16, 7, 7 }, 2, &g,
                        p, y, &x))
        goto done;
    ok(reads_agree(p[BLOCKED]), "flatten: every read sees its value's "
       "layout");
    ok(convs_direct(p[BLOCKED]), "flatten: every conv runs a blocked "
       "kernel");
    ok(layout_of(p[BLOCKED], "rb") == SS_DNN_PLAIN
       && layout_of(p[BLOCKED], "z") == SS_DNN_PLAIN,
       "flatten: the flattened value and the graph output are NCHW bytes "
       "(%d, %d)", (int)layout_of(p[BLOCKED], "rb"),
       (int)layout_of(p[BLOCKED], "z"));
    ok(reordered(p[BLOCKED], "Reorder>NCHW", 32, 7) == 0
       && reordered(p[BLOCKED], "Reorder>NCHW", 48, 7) == batch * 48 * 49
       && reordered(p[BLOCKED], "Reorder>NCHW", 16, 7) == batch * 16 * 49,
       "flatten: the outputs are reordered to NCHW (%lld, %lld elements), "
       "not the convs' source (%lld)",
       (long long)reordered(p[BLOCKED], "Reorder>NCHW", 48, 7),
       (long long)reordered(p[BLOCKED], "Reorder>NCHW", 16, 7),
       (long long)reordered(p[BLOCKED], "Reorder>NCHW", 32, 7));
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/*
 * Pruned widths (the 28x28 CNN pruned to 24/48/48): NHWC values before a
 * conv of the blocked family whose output a Flatten reads:
 *   x[N,1,12,12] → cA 1→24 +Relu, MaxPool     [N,24,6,6]  NHWC
 *   cB 24→48 +Relu, MaxPool                   [N,48,3,3]  NHWC
 *   cC 48→48 +Relu → Flatten → Gemm           y [N,10]
 * cC runs NHWC (its source's layout), not oneDNN's gemm fallback on NCHW.
 */
static void
test_flatten_nhwc(void)
{
    mb_t *b = mb_new(13);
    const int64_t batch = 4, k2[2] = { 2, 2 };
    ss_graph_t *g = NULL;
    Onnx__NodeProto *nd;
    float *x = NULL, *y[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 1, 12, 12 });
    init_rand(b, "wa", 4, (int64_t[]){ 24, 1, 3, 3 }, 0.5f);
    init_rand(b, "wb", 4, (int64_t[]){ 48, 24, 3, 3 }, 0.2f);
    init_rand(b, "wc", 4, (int64_t[]){ 48, 48, 3, 3 }, 0.1f);
    init_rand(b, "wf", 2, (int64_t[]){ 10, 48 * 9 }, 0.05f);
    conv(b, "cA", "x,wa", "ca", 1, 1, 1);
    mb_node(b, "Relu", "relua", "ca", "ra");
    conv(b, "cB", "pa,wb", "cb", 1, 1, 1);
    mb_node(b, "Relu", "relub", "cb", "rb");
    conv(b, "cC", "pb,wc", "cc", 1, 1, 1);
    mb_node(b, "Relu", "reluc", "cc", "rc");
    for (int i = 0; i < 2; i++) {
        nd = mb_node(b, "MaxPool", i ? "mpb" : "mpa", i ? "rb" : "ra",
                     i ? "pb" : "pa");
        mb_attr_ints(b, nd, "kernel_shape", 2, k2);
        mb_attr_ints(b, nd, "strides", 2, k2);
    }
    mb_node(b, "Flatten", "fl", "rc", "f");
    nd = mb_node(b, "Gemm", "fc", "f,wf", "y");
    mb_attr_int(b, nd, "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    if (!ref_vs_blocked("flatten nhwc", b, (int64_t[]){ batch, 1, 12, 12 },
                        1, &g, p, y, &x))
        goto done;
    ok(reads_agree(p[BLOCKED]), "flatten nhwc: every read sees its "
       "value's layout");
    ok(convs_direct(p[BLOCKED]), "flatten nhwc: every conv runs a direct "
       "kernel (the last one NHWC, no gemm fallback)");
    ok(layout_of(p[BLOCKED], "pb") == SS_DNN_NHWC
       && reordered(p[BLOCKED], "Reorder>NCHW", 48, 3) == batch * 48 * 9,
       "flatten nhwc: the source stays NHWC (%d), the output is reordered "
       "(%lld elements)", (int)layout_of(p[BLOCKED], "pb"),
       (long long)reordered(p[BLOCKED], "Reorder>NCHW", 48, 3));
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

/* Steps of p on the reference kernel running op. */
static int
ref_steps(const ss_plan_t *p, const char *op)
{
    int n = 0;

    for (int s = 0; s < p->n_steps; s++)
        n += p->steps[s].kind == SS_STEP_REF
             && strcmp(p->steps[s].node->op_type, op) == 0;
    return n;
}

/*
 * A mean and a max over H, W (torch's x.mean((2, 3)), the search CNN's
 * head) as global pools on the conv's blocked output:
 *   x[N,16,6,6] → cA 16→32 +Relu   a [N,32,6,6]  blocked
 *   ReduceMean(a, axes 2,3, keepdims 0) → Gemm   y [N,10]
 *   ReduceMax(a, axes -1,-2)                      z [N,32,1,1]
 * No reference reduce, no reorder of a.
 */
static void
test_reduce_hw(void)
{
    mb_t *b = mb_new(13);
    const int64_t batch = 3;
    ss_graph_t *g = NULL;
    Onnx__NodeProto *nd;
    float *x = NULL, *y[3][N_OUT];
    ss_plan_t *p[3] = { NULL, NULL, NULL };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 6, 6 });
    init_rand(b, "wa", 4, (int64_t[]){ 32, 16, 3, 3 }, 0.3f);
    init_rand(b, "wf", 2, (int64_t[]){ 10, 32 }, 0.5f);
    conv(b, "cA", "x,wa", "ca", 1, 1, 1);
    mb_node(b, "Relu", "relua", "ca", "a");
    nd = mb_node(b, "ReduceMean", "mean", "a", "m");
    mb_attr_ints(b, nd, "axes", 2, (int64_t[]){ 2, 3 });
    mb_attr_int(b, nd, "keepdims", 0);
    nd = mb_node(b, "Gemm", "fc", "m,wf", "y");
    mb_attr_int(b, nd, "transB", 1);
    nd = mb_node(b, "ReduceMax", "max", "a", "z");
    mb_attr_ints(b, nd, "axes", 2, (int64_t[]){ -1, -2 });
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    mb_output(b, "z", SS_DTYPE_F32, 4, (int64_t[]){ -1, 32, 1, 1 });
    if (!ref_vs_blocked("reduce hw", b, (int64_t[]){ batch, 16, 6, 6 }, 2,
                        &g, p, y, &x))
        goto done;
    ok(reads_agree(p[BLOCKED]), "reduce hw: every read sees its value's "
       "layout");
    ok(ref_steps(p[BLOCKED], "ReduceMean") == 0
       && ref_steps(p[BLOCKED], "ReduceMax") == 0
       && layout_of(p[BLOCKED], "a") == SS_DNN_BLOCKED
       && reordered(p[BLOCKED], "Reorder>NCHW", 32, 6) == 0,
       "reduce hw: both reduces run as pools on the blocked conv output "
       "(ref %d/%d, layout %d, %lld reordered)",
       ref_steps(p[BLOCKED], "ReduceMean"), ref_steps(p[BLOCKED], "ReduceMax"),
       (int)layout_of(p[BLOCKED], "a"),
       (long long)reordered(p[BLOCKED], "Reorder>NCHW", 32, 6));
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

int
main(void)
{
    ss_graph_t *g = build();

    ok(g != NULL, "the conv chain model loads");
    if (g != NULL) {
        test_chain(g, 1);
        test_chain(g, 3);
    }
    ss_graph_free(g);
    test_view();
    test_shrink();
    test_flatten();
    test_flatten_nhwc();
    test_reduce_hw();
    return tap_done();
}
