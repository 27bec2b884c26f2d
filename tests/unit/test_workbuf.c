/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Work buffers that shrink after an outlier (common/workbuf.h) and an
 * execution context that uses them (engine/plan/exec.c): the rule at its
 * boundaries, then an MLP run at its usual batch, once at 10x the rows,
 * and at its usual batch again -- the context gives the outlier's arena
 * back exactly when the rule says, and every output equals the first
 * (bit for bit) and a double-precision reference.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/workbuf.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

#define MIB ((size_t)1 << 20)

static void
test_rule(void)
{
    ss_workbuf_t b = { 0 };
    size_t r;

    ok(ss_workbuf_reserve(&b, 3 * MIB) == 0 && b.cap == 3 * MIB
       && b.p != NULL, "reserve allocates what is asked");
    ok(ss_workbuf_reserve(&b, MIB) == 0 && b.cap == 3 * MIB,
       "a smaller need keeps the buffer");
    /* window 1: needs 3 MiB and 1 MiB; window 2: 2 MiB (within 2x) */
    is_int((long)ss_workbuf_roll(&b), 0, "a roll keeps the window's peak");
    ss_workbuf_reserve(&b, 2 * MIB);
    is_int((long)ss_workbuf_roll(&b), 0, "the window before counts too");
    ss_workbuf_reserve(&b, 2 * MIB);
    is_int((long)ss_workbuf_roll(&b), 0, "within 2x of the working size: "
           "kept (3 MiB held, 2 MiB used)");
    /* an outlier of 40 MiB, then 2 MiB runs */
    ss_workbuf_reserve(&b, 40 * MIB);
    ok(b.cap == 40 * MIB, "an outlier grows the buffer");
    is_int((long)ss_workbuf_roll(&b), 0, "kept at the end of its window");
    ss_workbuf_reserve(&b, 2 * MIB);
    is_int((long)ss_workbuf_roll(&b), 0, "kept at the end of the next (the "
           "window before had it)");
    ss_workbuf_reserve(&b, 2 * MIB);
    r = ss_workbuf_roll(&b);
    ok(r == 38 * MIB && b.cap == 2 * MIB && b.p != NULL, "released at the "
       "end of the second window after it: back to 2 MiB (%zu given back, "
       "%zu held)", r, b.cap);
    /* an excess under SS_WORKBUF_SLACK stays */
    ss_workbuf_free(&b);
    ss_workbuf_reserve(&b, MIB / 2 + MIB / 4);
    ss_workbuf_roll(&b);
    ss_workbuf_roll(&b);
    ok(ss_workbuf_roll(&b) == 0 && b.cap == MIB / 2 + MIB / 4,
       "an unused buffer under 1 MiB is left alone");
    /* unused: freed */
    ss_workbuf_reserve(&b, 4 * MIB);
    ss_workbuf_roll(&b);
    ss_workbuf_roll(&b);
    ok(ss_workbuf_roll(&b) == 4 * MIB && b.cap == 0 && b.p == NULL,
       "a buffer unused for two windows is freed");
    ok(ss_workbuf_reserve(&b, MIB) == 0 && b.cap == MIB,
       "and reallocated on the next need");
    ss_workbuf_free(&b);
    ss_workbuf_free(NULL);
}

/* x[N,16] -> MatMul [16,H] -> Relu -> MatMul [H,16] -> y[N,16] */
#define IN 16
#define HID 4096

static float w1[IN * HID], w2[HID * IN];

static ss_graph_t *
build_mlp(void)
{
    mb_t *b = mb_new(13);
    uint32_t st = 5;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    for (int i = 0; i < IN * HID; i++) {
        w1[i] = mb_rand(&st) * 0.5f;
        w2[i] = mb_rand(&st) * 0.05f;
    }
    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, IN });
    mb_init_f32(b, "w1", 2, (int64_t[]){ IN, HID }, w1);
    mb_init_f32(b, "w2", 2, (int64_t[]){ HID, IN }, w2);
    mb_node(b, "MatMul", "mm1", "x,w1", "h");
    mb_node(b, "Relu", "relu", "h", "r");
    mb_node(b, "MatMul", "mm2", "r,w2", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, IN });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

/* The largest |got - want| over max |want|, want in double. */
static double
mlp_err(const float *x, const float *y, int64_t n)
{
    double m = 0, scale = 1e-6;
    double *h = malloc(HID * sizeof(double));

    for (int64_t r = 0; r < n; r++) {
        for (int j = 0; j < HID; j++) {
            double s = 0;

            for (int i = 0; i < IN; i++)
                s += (double)x[r * IN + i] * w1[i * HID + j];
            h[j] = s > 0 ? s : 0;
        }
        for (int k = 0; k < IN; k++) {
            double s = 0, d;

            for (int j = 0; j < HID; j++)
                s += h[j] * w2[j * IN + k];
            d = fabs(s - y[r * IN + k]);
            if (fabs(s) > scale)
                scale = fabs(s);
            if (!(d <= m))
                m = d;
        }
    }
    free(h);
    return m / scale;
}

typedef struct {
    ss_plan_t *p;
    ss_tensor_t in, out;
} mlp_run_t;

static int
mlp_plan(const ss_graph_t *g, int64_t rows, mlp_run_t *r)
{
    ss_err_t err = { 0 };
    uint32_t st = 11;
    float *x = malloc((size_t)rows * IN * sizeof(float));
    int rc;

    for (int64_t i = 0; i < rows * IN; i++)
        x[i] = mb_rand(&st);
    r->in = (ss_tensor_t){ .dtype = SS_DTYPE_F32, .ndim = 2,
                           .dims = { rows, IN }, .data = x };
    r->out = r->in;
    r->out.data = calloc((size_t)rows * IN, sizeof(float));
    if ((rc = ss_plan_new(g, &r->in, &r->p, &err)) < 0)
        tap_diag("compile %lld rows: %s", (long long)rows, err.msg);
    return rc;
}

static int
mlp_run(mlp_run_t *r, ss_exec_ctx_t *c)
{
    ss_err_t err = { 0 };
    int rc = ss_plan_run(r->p, c, &r->in, &r->out, &err);

    if (rc < 0)
        tap_diag("run: %s", err.msg);
    return rc;
}

static void
mlp_free(mlp_run_t *r)
{
    free(r->in.data);
    free(r->out.data);
    ss_plan_free(r->p);
}

/* The end of test_ctx and test_loop: a usual and an outlier run, the
 * context they ran in, the graph. */
static void
case_free(mlp_run_t *small, mlp_run_t *big, ss_exec_ctx_t *c, ss_graph_t *g)
{
    mlp_free(small);
    mlp_free(big);
    ss_exec_ctx_free(c);
    ss_graph_free(g);
}

static void
test_ctx(void)
{
    ss_graph_t *g;
    mlp_run_t small = { 0 }, big = { 0 };
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    float *first = NULL;
    size_t h0, h1, held_42, held_43;
    int same = 1, fail = 0;
    const size_t n_small = 32 * IN * sizeof(float);

    /* whole-batch plans: a slice would hide the outlier's arena */
    setenv("SS_ENGINE_BATCH_SLICE", "0", 1);
    g = build_mlp();
    if (g == NULL || ss_exec_ctx_new(1, &c, &err) < 0
        || mlp_plan(g, 32, &small) < 0 || mlp_plan(g, 320, &big) < 0) {
        ok(0, "the MLP compiles at 32 and 320 rows");
        goto done;
    }
    /* runs 1-4 usual, 5 the outlier, then usual: the windows of 16 end
     * at runs 16, 32 and 48, and the last lets the outlier go */
    for (int i = 0; i < 4; i++)
        fail |= mlp_run(&small, c) < 0;
    first = malloc(n_small);
    memcpy(first, small.out.data, n_small);
    h0 = ss_exec_ctx_held(c);
    fail |= mlp_run(&big, c) < 0;
    h1 = ss_exec_ctx_held(c);
    ok(h0 >= 32 * HID * sizeof(float) && h1 >= 320 * HID * sizeof(float),
       "the arena holds the hidden layer: %zu bytes at 32 rows, %zu at 320",
       h0, h1);
    for (int i = 0; i < 42; i++) {
        fail |= mlp_run(&small, c) < 0;
        same &= memcmp(first, small.out.data, n_small) == 0;
    }
    held_42 = ss_exec_ctx_held(c);
    fail |= mlp_run(&small, c) < 0;
    same &= memcmp(first, small.out.data, n_small) == 0;
    held_43 = ss_exec_ctx_held(c);
    ok(!fail, "every run succeeds");
    ok(held_42 == h1, "42 runs after the outlier its arena is still held "
       "(%zu bytes)", held_42);
    ok(held_43 == h0, "the 43rd (run 48, the end of the second window "
       "after its own) gives it back: %zu bytes held, %zu before it",
       held_43, h0);
    ok(same, "every usual run's output equals the first, bit for bit");
    ok(mlp_err(small.in.data, small.out.data, 32) < 1e-5
       && mlp_err(big.in.data, big.out.data, 320) < 1e-5,
       "outputs match the double-precision reference (1e-5 of max |y|)");
    /* the idle path: everything freed, the next run allocates again */
    ok(ss_exec_ctx_release(c) == h0 && ss_exec_ctx_held(c) == 0,
       "release frees the %zu bytes held", h0);
    ok(mlp_run(&small, c) == 0 && ss_exec_ctx_held(c) == h0
       && memcmp(first, small.out.data, n_small) == 0,
       "a run after release allocates its arena again, same output");
    /* sliced runs (a run inside a run) across many windows */
    setenv("SS_ENGINE_BATCH_SLICE", "8", 1);
    {
        mlp_run_t sl = { 0 };
        float *want = NULL;
        int eq = 1;

        if (mlp_plan(g, 320, &sl) == 0) {
            want = malloc(320 * IN * sizeof(float));
            mlp_run(&sl, c);
            memcpy(want, sl.out.data, 320 * IN * sizeof(float));
            for (int i = 0; i < 40; i++) {
                mlp_run(i % 3 ? &small : &sl, c);
                if (i % 3 == 0)
                    eq &= memcmp(want, sl.out.data,
                                 320 * IN * sizeof(float)) == 0;
            }
            ok(eq && mlp_err(sl.in.data, sl.out.data, 320) < 1e-5,
               "a sliced plan run 15 times among usual runs: the same "
               "output, matching the reference");
        } else {
            ok(0, "the sliced plan compiles");
        }
        free(want);
        mlp_free(&sl);
    }
done:
    unsetenv("SS_ENGINE_BATCH_SLICE");
    free(first);
    case_free(&small, &big, c, g);
}

/* x[N,LW] -> Loop 3 times { v + 1 } -> y: the loop-carried v lives in
 * the control-flow step's buffer of the outer context. */
#define LW 16384

static ss_graph_t *
build_loop(void)
{
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    Onnx__NodeProto *loop;
    const int64_t trip = 3;
    const uint8_t yes = 1;
    const float one = 1.0f;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, LW });
    mb_init(b, "trip", SS_DTYPE_I64, 0, NULL, &trip, sizeof(trip));
    mb_init(b, "cond", SS_DTYPE_BOOL, 0, NULL, &yes, sizeof(yes));
    loop = mb_node(b, "Loop", "loop", "trip,cond,x", "y");
    mb_graph_begin(b, "body");
    mb_input(b, "i", SS_DTYPE_I64, 0, NULL);
    mb_input(b, "cin", SS_DTYPE_BOOL, 0, NULL);
    mb_input(b, "v", SS_DTYPE_F32, 2, (int64_t[]){ -1, LW });
    mb_init_f32(b, "one", 1, (int64_t[]){ 1 }, &one);
    mb_node(b, "Identity", "keep", "cin", "cout");
    mb_node(b, "Add", "inc", "v,one", "vout");
    mb_output(b, "cout", SS_DTYPE_BOOL, 0, NULL);
    mb_output(b, "vout", SS_DTYPE_F32, 2, (int64_t[]){ -1, LW });
    mb_graph_end(b, loop, "body");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, LW });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

static int
loop_plan(const ss_graph_t *g, int64_t rows, mlp_run_t *r)
{
    ss_err_t err = { 0 };
    float *x = malloc((size_t)rows * LW * sizeof(float));
    int rc;

    for (int64_t i = 0; i < rows * LW; i++)
        x[i] = (float)(i % 97) - 48.0f;
    r->in = (ss_tensor_t){ .dtype = SS_DTYPE_F32, .ndim = 2,
                           .dims = { rows, LW }, .data = x };
    r->out = r->in;
    r->out.data = calloc((size_t)rows * LW, sizeof(float));
    if ((rc = ss_plan_new(g, &r->in, &r->p, &err)) < 0)
        tap_diag("compile the Loop for %lld rows: %s", (long long)rows,
                 err.msg);
    return rc;
}

/* Every y equals x + 3 exactly (small integers in f32). */
static int
loop_right(const mlp_run_t *r)
{
    const float *x = r->in.data, *y = r->out.data;

    for (int64_t i = 0; i < r->in.dims[0] * LW; i++)
        if (y[i] != x[i] + 3.0f)
            return 0;
    return 1;
}

/* A Loop's carried values in an outlier run are given back like the
 * arena's (they were kept for good before). */
static void
test_loop(void)
{
    ss_graph_t *g = build_loop();
    mlp_run_t small = { 0 }, big = { 0 };
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    size_t h0, h1, held;
    int fail = 0, right = 1;

    if (g == NULL || ss_exec_ctx_new(1, &c, &err) < 0
        || loop_plan(g, 8, &small) < 0 || loop_plan(g, 80, &big) < 0) {
        ok(0, "the Loop model compiles at 8 and 80 rows");
        goto done;
    }
    for (int i = 0; i < 4; i++)
        fail |= mlp_run(&small, c) < 0;
    h0 = ss_exec_ctx_held(c);
    fail |= mlp_run(&big, c) < 0;
    right &= loop_right(&big);
    h1 = ss_exec_ctx_held(c);
    ok(h1 >= h0 + 72 * LW * sizeof(float),
       "the outlier's carried values are held: %zu bytes, %zu before",
       h1, h0);
    for (int i = 0; i < 43; i++) {
        fail |= mlp_run(&small, c) < 0;
        right &= loop_right(&small);
    }
    held = ss_exec_ctx_held(c);
    ok(!fail && right, "every run succeeds with y = x + 3");
    ok(held == h0, "48 runs on, the outlier's buffers are given back: "
       "%zu bytes held, %zu before it", held, h0);
done:
    case_free(&small, &big, c, g);
}

int
main(void)
{
    test_rule();
    test_ctx();
    test_loop();
    return tap_done();
}
