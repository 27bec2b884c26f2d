/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8 max pooling between int8 convs (plan_qdq.c, hoist_q/int8_pool):
 * the QDQ pattern every CNN quantizer writes,
 *
 *   Q -> DQ -> Conv -> Relu -> MaxPool -> Q -> DQ -> Conv ...
 *
 * must compile to convs that write u8 and pools that run on u8 NHWC
 * (one step each, no f32 pool and no quantizing reorder between them),
 * and give the reference kernels' answer (SS_ENGINE_NO_FUSION=1: each
 * Q, DQ, Conv, MaxPool as ONNX defines it) within the int8 path's usual
 * bound: two quantization steps of the last conv's input through its
 * weights.  A MaxPool read by more than the Q stays f32.  The same
 * for bf16 (plan_bf16.c, bf16_pools): the pools run on bf16 NHWC.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/ir/edit.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

#define N 32
#define HW 12

static uint32_t seed = 11;

static float
frand(void)
{
    return mb_rand(&seed);
}

/* An s8 conv weight [oc, ic, k, k] (a Linear's [oc, ic] for k 0) behind
 * a DequantizeLinear with one scale per output channel: value name
 * "<name>" (f32); returns max over output channels of sum |w| (real
 * units). */
static double
qweight_as(mb_t *b, const char *name, int64_t oc, int64_t ic, int64_t k,
           int f32)
{
    int64_t dims[4] = { oc, ic, k, k }, n = oc * ic * (k ? k * k : 1);
    int64_t per = n / oc;
    int8_t *w = malloc((size_t)n);
    float *sc = malloc((size_t)oc * sizeof(float));
    char wq[64], ws[64];
    Onnx__NodeProto *nd;
    double worst = 0;

    for (int64_t o = 0; o < oc; o++) {
        double row = 0;

        sc[o] = (0.5f + 0.5f * fabsf(frand())) / (float)(8 * per);
        for (int64_t i = 0; i < per; i++) {
            w[o * per + i] = (int8_t)lrintf(frand() * 127.0f);
            row += fabs((double)w[o * per + i] * sc[o]);
        }
        worst = row > worst ? row : worst;
    }
    if (f32) {
        float *wf = malloc((size_t)n * sizeof(float));

        for (int64_t i = 0; i < n; i++)
            wf[i] = (float)w[i] * sc[i / per];
        mb_init_f32(b, name, k ? 4 : 2, dims, wf);
        free(wf);
        free(w);
        free(sc);
        return worst;
    }
    snprintf(wq, sizeof(wq), "%s_q", name);
    snprintf(ws, sizeof(ws), "%s_s", name);
    mb_init(b, wq, SS_DTYPE_I8, k ? 4 : 2, dims, w, (size_t)n);
    mb_init_f32(b, ws, 1, &oc, sc);
    snprintf(wq, sizeof(wq), "%s_q,%s_s", name, name);
    nd = mb_node(b, "DequantizeLinear", NULL, wq, name);
    mb_attr_int(b, nd, "axis", 0);
    free(w);
    free(sc);
    return worst;
}

static double
qweight(mb_t *b, const char *name, int64_t oc, int64_t ic, int64_t k)
{
    return qweight_as(b, name, oc, ic, k, 0);
}

/* x -> Q/DQ (u8 zero point 0 after a ReLU, s8 for the input) named
 * "<x>_dq"; the scale s. */
static void
qdq(mb_t *b, const char *x, float s, int u8)
{
    char in[256], out[64], sn[32], zn[32];
    uint8_t z = 0;

    snprintf(sn, sizeof(sn), "%s_sc", x);
    snprintf(zn, sizeof(zn), "%s_zp", x);
    mb_init_f32(b, sn, 0, NULL, &s);
    mb_init(b, zn, u8 ? SS_DTYPE_U8 : SS_DTYPE_I8, 0, NULL, &z, 1);
    snprintf(in, sizeof(in), "%s,%s,%s", x, sn, zn);
    snprintf(out, sizeof(out), "%s_q", x);
    mb_node(b, "QuantizeLinear", NULL, in, out);
    snprintf(in, sizeof(in), "%s_q,%s,%s", x, sn, zn);
    snprintf(out, sizeof(out), "%s_dq", x);
    mb_node(b, "DequantizeLinear", NULL, in, out);
}

static void
conv(mb_t *b, const char *ins, const char *out, int64_t pad)
{
    Onnx__NodeProto *n = mb_node(b, "Conv", NULL, ins, out);
    const int64_t pads[4] = { pad, pad, pad, pad };

    if (pad)
        mb_attr_ints(b, n, "pads", 4, pads);
}

static void
maxpool(mb_t *b, const char *in, const char *out)
{
    const int64_t k2[2] = { 2, 2 };
    Onnx__NodeProto *n = mb_node(b, "MaxPool", NULL, in, out);

    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
}

/* x[N,1,12,12] -> c1 1->16 -> Relu -> MaxPool -> c2 16->32 -> Relu ->
 * MaxPool -> c3 32->8 1x1 -> y[N,8,3,3], Q/DQ before every conv (f32
 * weights and no Q/DQ with bf16).  With tap, pool 1's f32 result is also
 * a graph output (it must stay f32); with f32first, c1 reads x as it is
 * (a layer PTQ left f32); with mid, c2 has f32 weights (the same values)
 * behind its input's Q/DQ (1) or without them, as PTQ leaves a layer it
 * returned to f32 (2).  *bound: two steps of c3's input scale through
 * c3's weights. */
static ss_graph_t *
build3(int tap, int bf16, int f32first, int mid, double *bound)
{
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    float bias[32];
    int64_t c16 = 16, c32 = 32, c8 = 8;
    const float s2 = 1.0f / 64;
    double w3;

    seed = 11;                  /* the same weights in every variant */
    for (int i = 0; i < 32; i++)
        bias[i] = 0.05f * frand();
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 1, HW, HW });
    qweight(b, "w1", 16, 1, 3);
    qweight_as(b, "w2", 32, 16, 3, mid != 0);
    w3 = qweight(b, "w3", 8, 32, 1);
    mb_init_f32(b, "b1", 1, &c16, bias);
    mb_init_f32(b, "b2", 1, &c32, bias);
    mb_init_f32(b, "b3", 1, &c8, bias);
    if (!bf16 && !f32first)
        qdq(b, "x", 1.0f / 64, 0);
    conv(b, bf16 || f32first ? "x,w1,b1" : "x_dq,w1,b1", "c1", 1);
    mb_node(b, "Relu", NULL, "c1", "r1");
    maxpool(b, "r1", "p1");
    if (!bf16 && mid != 2)
        qdq(b, "p1", 1.0f / 64, 1);
    conv(b, bf16 || mid == 2 ? "p1,w2,b2" : "p1_dq,w2,b2", "c2", 1);
    mb_node(b, "Relu", NULL, "c2", "r2");
    maxpool(b, "r2", "p2");
    if (!bf16)
        qdq(b, "p2", s2, 1);
    conv(b, bf16 ? "p2,w3,b3" : "p2_dq,w3,b3", "y", 0);
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, 8, 3, 3 });
    if (tap)
        mb_output(b, "p1", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 6, 6 });
    if (mb_load(b, &g, &err) < 0
        || (bf16 && ss_graph_set_meta(g, "slimserve.precision", "bf16",
                                      &err) < 0))
        tap_diag("load: %s", err.msg);
    *bound = 2.0 * s2 * w3 + 1e-5;
    return g;
}

static ss_graph_t *
build(int tap, int bf16, double *bound)
{
    return build3(tap, bf16, 0, 0, bound);
}

/* Compiles g (reference kernels only when ref) for x and runs it: y gets
 * output 0 (room for it); the plan is kept in *keep. */
static int
run(const ss_graph_t *g, int ref, const float *x, float *y, ss_plan_t **keep)
{
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 4,
                       .dims = { N, 1, HW, HW } };
    ss_tensor_t out[2];
    float *extra = NULL;
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    int rc;

    memset(out, 0, sizeof(out));
    in.data = (void *)x;
    if (ref)
        setenv("SS_ENGINE_NO_FUSION", "1", 1);
    rc = ss_plan_new(g, &in, keep, &err);
    unsetenv("SS_ENGINE_NO_FUSION");
    if (rc < 0 || (rc = ss_exec_ctx_new(1, &c, &err)) < 0) {
        tap_diag("compile: %s", err.msg);
        goto done;
    }
    for (int k = 0; k < g->n_outputs && k < 2; k++) {
        const ss_io_info_t *oi = ss_plan_output(*keep, k);

        out[k].dtype = oi->dtype;
        out[k].ndim = oi->ndim;
        memcpy(out[k].dims, oi->dims, sizeof(oi->dims));
    }
    out[0].data = y;
    if (g->n_outputs > 1
        && (out[1].data = extra = calloc((size_t)ss_tensor_numel(&out[1]),
                                         sizeof(float))) == NULL)
        abort();
    if ((rc = ss_plan_run(*keep, c, &in, out, &err)) < 0)
        tap_diag("run: %s", err.msg);
done:
    free(extra);
    ss_exec_ctx_free(c);
    return rc;
}

static int
count_steps(const ss_plan_t *p, const char *what, int exact)
{
    int n = 0;

    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_DNN
            && (exact ? strcmp(p->steps[s].what, what) == 0
                      : strstr(p->steps[s].what, what) != NULL))
            n++;
    return n;
}

/* max |got - want| over n, and *m the largest |want|. */
static double
max_diff(const float *got, const float *want, int n, double *m)
{
    double d = 0;

    *m = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);

        d = e > d ? e : d;
        *m = fabs(want[i]) > *m ? fabs(want[i]) : *m;
    }
    return d;
}

static void
test_pool(int tap)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float yi[N * 72], yr[N * 72];
    ss_plan_t *pi = NULL, *pr = NULL;
    ss_graph_t *g;
    double bound, d, m;

    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    g = build(tap, 0, &bound);
    if (g == NULL || run(g, 0, x, yi, &pi) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the QDQ CNN compiles and runs");
        goto done;
    }
    for (int s = 0; s < pi->n_steps; s++)
        if (pi->steps[s].kind == SS_STEP_DNN)
            tap_diag("%s: %s on %s", tap ? "tapped" : "plain",
                     pi->steps[s].what, ss_dnn_prim_impl(pi->steps[s].prim));
    if (!tap) {
        is_int(count_steps(pi, "int8 MaxPool", 1), 2,
               "both pools run on int8");
        is_int(count_steps(pi, "+Q", 0), 2,
               "the convs before them write int8 (Q as a post-op)");
        is_int(count_steps(pi, "Quantize", 0), 1,
               "no quantizing reorder but the input's");
    } else {
        is_int(count_steps(pi, "int8 MaxPool", 1), 1,
               "a pool whose f32 result is an output stays f32");
    }
    d = max_diff(yi, yr, N * 72, &m);
    ok(m > 0.1 && d <= bound, "%s: int8 plan vs reference QDQ max |diff| "
       "%.3g <= %.3g (max |y| %.3g)", tap ? "tapped" : "plain", d, bound, m);
done:
    ss_plan_free(pi);
    ss_plan_free(pr);
    ss_graph_free(g);
    free(x);
}

/* c1 left f32: its pool still runs on int8, NHWC (oneDNN's int8 NCHW
 * pooling is its reference code, ~100x slower), behind a conversion. */
static void
test_f32_first(void)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float yi[N * 72], yr[N * 72];
    ss_plan_t *pi = NULL, *pr = NULL;
    ss_graph_t *g;
    const ss_step_t *c1 = NULL;
    double bound, d, m;
    int slow = 0;

    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    g = build3(0, 0, 1, 0, &bound);
    if (g == NULL || run(g, 0, x, yi, &pi) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the QDQ CNN with an f32 first conv runs");
        goto done;
    }
    for (int s = 0; s < pi->n_steps; s++)
        if (pi->steps[s].kind == SS_STEP_DNN
            && strcmp(pi->steps[s].what, "int8 MaxPool") == 0)
            slow += strncmp(ss_dnn_prim_impl(pi->steps[s].prim), "ref", 3)
                    == 0;
    for (int s = 0; s < pi->n_steps; s++)
        if (pi->steps[s].kind == SS_STEP_DNN
            && strcmp(pi->steps[s].what, "Conv+Relu") == 0)
            c1 = &pi->steps[s];
    /* before: NCHW on oneDNN's gemm fallback, then a reorder to NCHW
     * and a quantizing one to NHWC (cnn28: 1.3 + 0.8 ms at batch 32) */
    ok(c1 != NULL && strstr(ss_dnn_prim_impl(c1->prim), "gemm") == NULL
       && ss_dnn_prim_layout(c1->prim, -1) == SS_DNN_NHWC,
       "f32 first conv: a real kernel writing NHWC (%s)",
       c1 != NULL ? ss_dnn_prim_impl(c1->prim) : "none");
    is_int(count_steps(pi, "Reorder>", 0), 0,
           "f32 first conv: the Q reads its result as it is");
    is_int(count_steps(pi, "int8 MaxPool", 1), 2,
           "f32 first conv: both pools on int8");
    is_int(slow, 0, "f32 first conv: no int8 pool on oneDNN's reference "
           "code");
    d = max_diff(yi, yr, N * 72, &m);
    ok(m > 0.1 && d <= bound, "f32 first conv: int8 plan vs reference QDQ "
       "max |diff| %.3g <= %.3g", d, bound);
done:
    ss_plan_free(pi);
    ss_plan_free(pr);
    ss_graph_free(g);
    free(x);
}

/* c2 in f32 between int8 layers.  mid 1, behind its input's DQ: the DQ
 * reads the pool's NHWC u8 result and writes f32 NHWC, so the conv runs
 * a real kernel; before, the DQ wrote NCHW and the conv took oneDNN's
 * gemm fallback (2.8 ms for the 28x28 CNN's 32 -> 64 conv at batch 32
 * against 0.35 in int8).  mid 2, PTQ's fallback (no Q/DQ before c2): c2
 * reads the f32 pool's result.  With 16 channels NHWC is nChw16c, so
 * both run blocked, Winograd for this 3x3. */
static void
test_f32_mid(int mid)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float yi[N * 72], yr[N * 72];
    ss_plan_t *pi = NULL, *pr = NULL;
    ss_graph_t *g;
    const ss_step_t *c2 = NULL;
    double bound, d, m;

    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    g = build3(0, 0, 0, mid, &bound);
    if (g == NULL || run(g, 0, x, yi, &pi) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the QDQ CNN with an f32 middle conv runs");
        goto done;
    }
    for (int s = 0; s < pi->n_steps; s++) {
        const ss_step_t *st = &pi->steps[s];

        if (st->kind == SS_STEP_DNN)
            tap_diag("f32 mid %d: %s on %s", mid, st->what,
                     ss_dnn_prim_impl(st->prim));
        if (st->kind == SS_STEP_DNN && strstr(st->what, "Conv") != NULL
            && strstr(st->what, "int8") == NULL)
            c2 = st;
    }
    ok(c2 != NULL && strstr(ss_dnn_prim_impl(c2->prim), "gemm") == NULL
       && strncmp(ss_dnn_prim_impl(c2->prim), "ref", 3) != 0,
       "f32 mid %d: the f32 conv runs a direct kernel (%s)", mid,
       c2 != NULL ? ss_dnn_prim_impl(c2->prim) : "none");
    /* (16 channels: NHWC bytes are nChw16c's, the conv runs blocked) */
    ok(c2 != NULL && strstr(ss_dnn_prim_impl(c2->prim), "wino") != NULL,
       "f32 mid %d: Winograd (%s)", mid,
       c2 != NULL ? ss_dnn_prim_impl(c2->prim) : "none");
    is_int(count_steps(pi, "int8 MaxPool", 1), mid == 1 ? 2 : 1,
           "f32 mid %d: the pools before int8 convs run on int8", mid);
    d = max_diff(yi, yr, N * 72, &m);
    ok(m > 0.1 && d <= bound, "f32 mid %d: int8 plan vs reference QDQ "
       "max |diff| %.3g <= %.3g", mid, d, bound);
done:
    ss_plan_free(pi);
    ss_plan_free(pr);
    ss_graph_free(g);
    free(x);
}

/* x -> c1 1->16 -> Relu -> Flatten -> Gemm 10 (y): with QDQ before the
 * conv and the Gemm, or for bf16 none (the graph's precision bf16);
 * with tap, the conv's result r1 is also an output (it stays f32).
 * *bound: two steps of fc's input scale through fc's weights. */
static ss_graph_t *
build_flat(int bf16, int tap, double *bound)
{
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    Onnx__NodeProto *n;
    float bias[16];
    int64_t c16 = 16;

    seed = 5;
    for (int i = 0; i < 16; i++)
        bias[i] = 0.05f * frand();
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 1, HW, HW });
    qweight(b, "w1", 16, 1, 3);
    *bound = 2.0 / 64 * qweight(b, "wf", 10, 16 * HW * HW, 0) + 1e-5;
    mb_init_f32(b, "b1", 1, &c16, bias);
    if (!bf16)
        qdq(b, "x", 1.0f / 64, 0);
    conv(b, bf16 ? "x,w1,b1" : "x_dq,w1,b1", "c1", 1);
    mb_node(b, "Relu", NULL, "c1", "r1");
    mb_node(b, "Flatten", NULL, "r1", "f");
    if (!bf16)
        qdq(b, "f", 1.0f / 64, 1);
    n = mb_node(b, "Gemm", NULL, bf16 ? "f,wf" : "f_dq,wf", "y");
    mb_attr_int(b, n, "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    if (tap)
        mb_output(b, "r1", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, HW, HW });
    if (mb_load(b, &g, &err) < 0
        || (bf16 && ss_graph_set_meta(g, "slimserve.precision", "bf16",
                                      &err) < 0))
        tap_diag("load: %s", err.msg);
    return g;
}

/* int8 through a Flatten: Q moves before the Flatten (a view), so the
 * conv writes u8 and the Linear reads it through the view; the reference
 * QDQ's answer within two steps of fc's input. */
static void
test_flatten(void)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float y[N * 10], yr[N * 10];
    ss_plan_t *pi = NULL, *pr = NULL;
    ss_graph_t *g;
    double bound, d, m;

    g = build_flat(0, 0, &bound);
    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    if (g == NULL || run(g, 0, x, y, &pi) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the Flatten QDQ net compiles and runs");
        goto done;
    }
    is_int(count_steps(pi, "int8 Conv+Relu+Q", 1), 1,
           "flatten: the conv writes int8 through the Flatten");
    is_int(count_steps(pi, "Quantize", 0), 1,
           "flatten: no quantizing reorder but the input's");
    d = max_diff(y, yr, N * 10, &m);
    ok(m > 0.1 && d <= bound, "flatten: int8 plan vs reference QDQ max "
       "|diff| %.3g <= %.3g (max |y| %.3g)", d, bound, m);
done:
    ss_plan_free(pi);
    ss_plan_free(pr);
    ss_graph_free(g);
    free(x);
}

/* bf16 through a Flatten: the conv writes bf16, converted to NCHW on its
 * way to the Linear, where it wrote f32 that a second conversion made
 * bf16 for the Linear: the same answer bit for bit as with r1 tapped
 * (f32), both rounding the conv's f32 result once. */
static void
test_bf16_flatten(void)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float yb[N * 10], yt[N * 10], yr[N * 10];
    ss_plan_t *pb = NULL, *pt = NULL, *pr = NULL;
    ss_graph_t *g, *gt;
    double bound, d, m;

    g = build_flat(1, 0, &bound);
    gt = build_flat(1, 1, &bound);
    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    if (!ss_dnn_bf16_native(NULL)) {
        tap_diag("no native bf16 on this CPU: bf16 through a Flatten is not "
                 "checked");
        goto done;
    }
    if (g == NULL || gt == NULL || run(g, 0, x, yb, &pb) < 0
        || run(gt, 0, x, yt, &pt) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the bf16 Flatten net compiles and runs");
        goto done;
    }
    is_int(count_steps(pb, "to bf16", 1), 1,
           "bf16 flatten: the input's conversion only (the conv writes bf16)");
    is_int(count_steps(pt, "to bf16", 1), 2,
           "bf16 flatten: a tapped conv result is converted for the Linear");
    ok(memcmp(yb, yt, sizeof(yb)) == 0,
       "bf16 flatten: the tapped plan's answer bit for bit");
    d = max_diff(yb, yr, N * 10, &m);
    ok(m > 0.1 && d <= 2e-2 * m, "bf16 flatten vs f32 reference max |diff| "
       "%.3g <= 2e-2 x %.3g", d, m);
done:
    ss_plan_free(pb);
    ss_plan_free(pt);
    ss_plan_free(pr);
    ss_graph_free(g);
    ss_graph_free(gt);
    free(x);
}

/* The same CNN in bf16: both pools on bf16 NHWC between convs that
 * write bf16, the same output bit for bit as with pool 1 on f32 (its
 * result tapped: the conv writes f32, the pool runs f32, a conversion
 * rounds it; rounding to bf16 commutes with the max), and within bf16's
 * precision of the f32 reference kernels. */
static void
test_bf16_pool(void)
{
    float *x = malloc(sizeof(float) * N * HW * HW);
    float yb[N * 72], yt[N * 72], yr[N * 72];
    ss_plan_t *pb = NULL, *pt = NULL, *pr = NULL;
    ss_graph_t *g, *gt;
    double bound, d, m;

    if (!ss_dnn_bf16_native(NULL)) {
        tap_diag("no native bf16 on this CPU: the bf16 pools are not "
                 "checked");
        free(x);
        return;
    }
    for (int i = 0; i < N * HW * HW; i++)
        x[i] = 1.5f * frand();
    g = build(0, 1, &bound);
    gt = build(1, 1, &bound);
    if (g == NULL || gt == NULL || run(g, 0, x, yb, &pb) < 0
        || run(gt, 0, x, yt, &pt) < 0 || run(g, 1, x, yr, &pr) < 0) {
        ok(0, "the bf16 CNN compiles and runs");
        goto done;
    }
    is_int(count_steps(pb, "bf16 MaxPool", 1), 2, "bf16: both pools on bf16");
    is_int(count_steps(pt, "bf16 MaxPool", 1), 1,
           "bf16: a pool whose f32 result is an output stays f32");
    d = max_diff(yb, yr, N * 72, &m);
    ok(memcmp(yb, yt, sizeof(yb)) == 0,
       "bf16: pooling on bf16 gives the f32 pool's answer bit for bit");
    ok(m > 0.1 && d <= 2e-2 * m, "bf16 plan vs f32 reference max |diff| "
       "%.3g <= 2e-2 x %.3g", d, m);
done:
    ss_plan_free(pb);
    ss_plan_free(pt);
    ss_plan_free(pr);
    ss_graph_free(g);
    ss_graph_free(gt);
    free(x);
}

int
main(void)
{
    test_pool(0);
    test_pool(1);
    test_f32_first();
    test_f32_mid(1);
    test_f32_mid(2);
    test_flatten();
    test_bf16_pool();
    test_bf16_flatten();
    return tap_done();
}
