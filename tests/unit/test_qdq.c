/* SPDX-License-Identifier: Apache-2.0 */
/*
 * int8 and bf16: the reference QuantizeLinear / DequantizeLinear /
 * DynamicQuantizeLinear kernels against hand-computed values; a u8
 * activation with a zero point and a residual Add on int8 brgemm, equal to
 * the reference QDQ execution but for float rounding; a QDQ MLP
 * built here with engine/ir/edit.h (per-channel s8 weights, u8 activations
 * calibrated by min/max on batch64) compiled onto int8 primitives and
 * checked against the reference QDQ execution and against f32; its ONNX
 * export reloaded; bf16 variants of every fixture against f32, also after
 * a reload; latencies at batch 32 as diagnostics.
 */

#include <float.h>
#include <stdlib.h>

#include "engine/ir/edit.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/run_util.h"

/* ---- reference kernels ------------------------------------------------ */

static ss_tensor_t
tens(ss_dtype_t dt, int ndim, const int64_t *dims, void *data)
{
    ss_tensor_t t = { .dtype = dt, .ndim = ndim, .data = data };

    if (ndim > 0)
        memcpy(t.dims, dims, (size_t)ndim * sizeof(int64_t));
    return t;
}

/* Runs op on in[0..n_in) into out (data given); axis < -99: none. */
static int
run_op(const char *op, int n_in, const ss_tensor_t *in, int n_out,
       ss_tensor_t *out, int64_t axis)
{
    const ss_op_t *o = ss__op_find(op);
    ss_attr_t a = { .name = (char *)"axis", .type = SS_ATTR_INT, .i = axis };
    int ids[3] = { 0, 1, 2 }, oids[3] = { 0, 1, 2 };
    ss_node_t n = { .name = (char *)"t", .op_type = (char *)op,
                    .domain = (char *)"", .n_inputs = n_in, .inputs = ids,
                    .n_outputs = n_out, .outputs = oids,
                    .n_attrs = axis > -99 ? 1 : 0, .attrs = &a };
    const ss_tensor_t *ins[3] = { &in[0], n_in > 1 ? &in[1] : NULL,
                                  n_in > 2 ? &in[2] : NULL };
    ss_tensor_t shp[3];
    ss_err_t err = { 0 };
    int rc;

    if (o == NULL)
        return -1;
    memset(shp, 0, sizeof(shp));
    if ((rc = o->infer(&n, 13, ins, shp, &err)) < 0) {
        tap_diag("%s infer: %s", op, err.msg);
        return rc;
    }
    for (int k = 0; k < n_out; k++) {
        if (shp[k].dtype != out[k].dtype)
            return -2;
        shp[k].data = out[k].data;
        out[k] = shp[k];
    }
    return o->run(&n, 13, ins, out, &err);
}

static void
ref_ops(void)
{
    /* per tensor, u8, zero point 128: ties go to even, then saturate */
    float x1[] = { -1.f, 0.5f, 1.5f, 2.5f, -2.5f, 300.f, -300.f, 0.f };
    uint8_t want1[] = { 127, 128, 130, 130, 126, 255, 0, 128 }, got1[8];
    float s1 = 1.f;
    uint8_t z1 = 128;
    /* per tensor, s8, scale 0.5, no zero point given */
    float x2[] = { 0.25f, 0.75f, -0.25f, -0.75f, 100.f, -100.f };
    int8_t want2[] = { 0, 2, 0, -2, 127, -128 }, got2[6], z2 = 0;
    float s2 = 0.5f;
    /* per axis 1 of [2,3], s8 zero points */
    float x3[] = { 1.f, 2.f, 4.f, 3.f, -6.f, -10.f };
    float s3[] = { 1.f, 2.f, 4.f };
    int8_t z3[] = { 0, 1, -1 }, want3[] = { 1, 2, 0, 3, -2, -3 }, got3[6];
    /* DQ: u8 per tensor, s8 per axis 0, int32 */
    uint8_t q4[] = { 0, 128, 255 };
    float s4 = 0.5f, want4[] = { -64.f, 0.f, 63.5f }, got4[3];
    int8_t q5[] = { -128, 127, 10, -10 }, z5[] = { 0, 2 };
    float s5[] = { 1.f, 0.25f }, want5[] = { -128.f, 127.f, 2.f, -3.f },
          got5[4];
    int32_t q6[] = { -100000, 7 };
    float s6 = 0.01f, want6[] = { -1000.f, 0.07f }, got6[2];
    /* DynamicQuantizeLinear: range [-0.5, 2] */
    float x7[] = { 0.f, 2.f, -0.5f, 1.f }, s7;
    uint8_t got7[4], z7, want7[] = { 51, 255, 0, 153 };
    int64_t d8 = 8, d6 = 6, d23[2] = { 2, 3 }, d3 = 3, d22[2] = { 2, 2 };
    int64_t d2 = 2, d4 = 4;
    ss_tensor_t in[3], out[3];
    int same;

    in[0] = tens(SS_DTYPE_F32, 1, &d8, x1);
    in[1] = tens(SS_DTYPE_F32, 0, NULL, &s1);
    in[2] = tens(SS_DTYPE_U8, 0, NULL, &z1);
    out[0] = tens(SS_DTYPE_U8, 0, NULL, got1);
    ok(run_op("QuantizeLinear", 3, in, 1, out, -100) == 0
       && memcmp(got1, want1, sizeof(want1)) == 0,
       "Q u8: round half to even, zero point, saturation");
    in[0] = tens(SS_DTYPE_F32, 1, &d6, x2);
    in[1] = tens(SS_DTYPE_F32, 0, NULL, &s2);
    in[2] = tens(SS_DTYPE_I8, 0, NULL, &z2);
    out[0] = tens(SS_DTYPE_I8, 0, NULL, got2);
    ok(run_op("QuantizeLinear", 3, in, 1, out, -100) == 0
       && memcmp(got2, want2, sizeof(want2)) == 0,
       "Q s8: ties at +-0.5 and +-1.5, saturation at both ends");
    out[0] = tens(SS_DTYPE_U8, 0, NULL, got1);
    ok(run_op("QuantizeLinear", 2, in, 1, out, -100) == 0
       && got1[0] == 0 && got1[1] == 2 && got1[3] == 0 && got1[4] == 200,
       "Q without zero point is u8");
    in[0] = tens(SS_DTYPE_F32, 2, d23, x3);
    in[1] = tens(SS_DTYPE_F32, 1, &d3, s3);
    in[2] = tens(SS_DTYPE_I8, 1, &d3, z3);
    out[0] = tens(SS_DTYPE_I8, 0, NULL, got3);
    ok(run_op("QuantizeLinear", 3, in, 1, out, 1) == 0
       && memcmp(got3, want3, sizeof(want3)) == 0, "Q per axis");
    ok(run_op("QuantizeLinear", 3, in, 1, out, 0) < 0,
       "Q per axis refuses scales of the wrong length");
    in[0] = tens(SS_DTYPE_U8, 1, &d3, q4);
    in[1] = tens(SS_DTYPE_F32, 0, NULL, &s4);
    in[2] = tens(SS_DTYPE_U8, 0, NULL, &z1);
    out[0] = tens(SS_DTYPE_F32, 0, NULL, got4);
    ok(run_op("DequantizeLinear", 3, in, 1, out, -100) == 0
       && memcmp(got4, want4, sizeof(want4)) == 0, "DQ u8 per tensor");
    in[0] = tens(SS_DTYPE_I8, 2, d22, q5);
    in[1] = tens(SS_DTYPE_F32, 1, &d2, s5);
    in[2] = tens(SS_DTYPE_I8, 1, &d2, z5);
    out[0] = tens(SS_DTYPE_F32, 0, NULL, got5);
    ok(run_op("DequantizeLinear", 3, in, 1, out, 0) == 0
       && memcmp(got5, want5, sizeof(want5)) == 0, "DQ s8 per axis 0");
    in[0] = tens(SS_DTYPE_I32, 1, &d2, q6);
    in[1] = tens(SS_DTYPE_F32, 0, NULL, &s6);
    out[0] = tens(SS_DTYPE_F32, 0, NULL, got6);
    same = run_op("DequantizeLinear", 2, in, 1, out, -100) == 0;
    ok(same && fabsf(got6[0] - want6[0]) < 1e-3f
       && fabsf(got6[1] - want6[1]) < 1e-7f, "DQ int32 (biases)");
    in[0] = tens(SS_DTYPE_F32, 1, &d4, x7);
    out[0] = tens(SS_DTYPE_U8, 0, NULL, got7);
    out[1] = tens(SS_DTYPE_F32, 0, NULL, &s7);
    out[2] = tens(SS_DTYPE_U8, 0, NULL, &z7);
    ok(run_op("DynamicQuantizeLinear", 1, in, 3, out, -100) == 0
       && fabsf(s7 - 2.5f / 255.f) < 1e-9f && z7 == 51
       && memcmp(got7, want7, sizeof(want7)) == 0,
       "DynamicQuantizeLinear: scale, zero point, values");
}

static int
add_scalar(ss_graph_t *g, ss_dtype_t dt, double v)
{
    ss_tensor_t *t = NULL;

    if (ss__tensor_new(dt, 0, NULL, &t, NULL) < 0)
        abort();
    if (dt == SS_DTYPE_F32)
        *(float *)t->data = (float)v;
    else if (dt == SS_DTYPE_U8)
        *(uint8_t *)t->data = (uint8_t)v;
    else
        *(int8_t *)t->data = (int8_t)v;
    return ss_graph_add_value(g, NULL, t, NULL);
}

static int
count_steps(const ss_plan_t *p, const char *prefix, const char **impl)
{
    int n = 0;

    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_DNN
            && strncmp(p->steps[s].what, prefix, strlen(prefix)) == 0) {
            n++;
            if (impl)
                *impl = ss_dnn_prim_impl(p->steps[s].prim);
        }
    return n;
}

/* Q and DQ left alone compile to oneDNN reorders (plan_qdq.c): they must
 * agree with the reference kernels exactly, ties included.  The digits
 * inputs are multiples of 1/16, so a scale of 2/16 makes every odd pixel
 * value an exact tie. */
static void
qdq_reorders(int zp)
{
    char path[1024];
    ss_graph_t *g = NULL, *c = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t rf, rr;
    int x, sc, zc, y, yd;

    memset(&rf, 0, sizeof(rf));
    memset(&rr, 0, sizeof(rr));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13",
                               "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0
        || ss_graph_clone(g, &c, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    x = c->inputs[0];
    sc = add_scalar(c, SS_DTYPE_F32, 2.0 / 16);
    zc = add_scalar(c, SS_DTYPE_U8, zp);
    y = ss_graph_add_value(c, "q", NULL, &err);
    yd = ss_graph_add_value(c, "dq", NULL, &err);
    ss_graph_add_node(c, "QuantizeLinear", "q", 3, (int[]){ x, sc, zc }, 1,
                      &y, 0, NULL, &err);
    ss_graph_add_node(c, "DequantizeLinear", "dq", 3, (int[]){ y, sc, zc },
                      1, &yd, 0, NULL, &err);
    ss_graph_add_output(c, y, &err);
    ss_graph_add_output(c, yd, &err);
    if (ss_graph_finalize(c, &err) < 0 || run_prepare(&rf, c, z, &err) < 0
        || run_once(&rf, &err) < 0) {
        ok(0, "Q/DQ graph runs: %s", err.msg);
        goto done;
    }
    setenv("SS_ENGINE_NO_FUSION", "1", 1);
    if (run_prepare(&rr, c, z, &err) < 0 || run_once(&rr, &err) < 0) {
        unsetenv("SS_ENGINE_NO_FUSION");
        ok(0, "Q/DQ graph runs on the reference: %s", err.msg);
        goto done;
    }
    unsetenv("SS_ENGINE_NO_FUSION");
    /* an odd zero point stays on the reference kernel: oneDNN would
     * round x/s + z, not round(x/s) + z */
    ok(count_steps(rf.plan, "Quantize", NULL) == (zp % 2 == 0)
       && count_steps(rf.plan, "Dequantize", NULL) == 1,
       "zero point %d: Q %s a oneDNN reorder, DQ is one", zp,
       zp % 2 ? "is not" : "is");
    ok(memcmp(rf.out[1].data, rr.out[1].data, (size_t)out_numel(&rf, 1)) == 0,
       "zero point %d: Q equals the reference, ties to even included", zp);
    ok(memcmp(rf.out[2].data, rr.out[2].data,
              (size_t)out_numel(&rf, 2) * 4) == 0,
       "zero point %d: DQ as a reorder equals the reference", zp);
done:
    run_close(&rf);
    run_close(&rr);
    ss_graph_free(g);
    ss_graph_free(c);
    ss_npz_free(z);
}

/* ---- a QDQ MLP -------------------------------------------------------- */

static int
argmax(const float *v, int n)
{
    int b = 0;

    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static double
agreement(const run_t *a, const run_t *b)
{
    const ss_tensor_t *t = &a->out[0];
    int rows = (int)t->dims[0], cols = (int)t->dims[t->ndim - 1], same = 0;

    for (int r = 0; r < rows; r++)
        same += argmax((float *)a->out[0].data + r * cols, cols)
                == argmax((float *)b->out[0].data + r * cols, cols);
    return (double)same / rows;
}

static double
max_abs(const float *v, int64_t n)
{
    double m = 0;

    for (int64_t i = 0; i < n; i++)
        m = fabs(v[i]) > m ? fabs(v[i]) : m;
    return m;
}

static double
max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;

    for (int64_t i = 0; i < n; i++)
        m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}


/* An activation with both signs quantized u8 with a zero point (the
 * asymmetric form most tools write): the int8 plan folds the zero point
 * into the bias, sum_k (x_q - z) w_q = sum_k x_q w_q - z sum_k w_q, and
 * reads the residual Add after it as its own step (a full-size BINARY
 * post-op would push oneDNN 2.6 onto its gemm inner product).  The s32
 * accumulator is exact, so int8 plan and reference QDQ differ by float
 * rounding only: within 1e-5 of max |y| (K = 64).  An odd zero point
 * leaves Q on its reference kernel; the int8 MatMul is the same. */
static void
asym_linear(int zp)
{
    enum { K = 64, N = 48 };
    char path[1024];
    ss_graph_t *g = NULL, *c = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t ri, rr;
    ss_tensor_t *tw = NULL, *ts = NULL, *tz = NULL, *tb = NULL, *tr = NULL;
    const char *impl = "";
    int64_t wd[2] = { K, N }, nd = N;
    int x, h, sc, zc, xq, xdq, wq, ws, wz, wdq, mm, b, lin, wr, res, y;
    int n_i8;
    double d, m;

    memset(&ri, 0, sizeof(ri));
    memset(&rr, 0, sizeof(rr));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13",
                               "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0
        || ss_graph_clone(g, &c, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    if (ss__tensor_new(SS_DTYPE_I8, 2, wd, &tw, NULL) < 0
        || ss__tensor_new(SS_DTYPE_F32, 1, &nd, &ts, NULL) < 0
        || ss__tensor_new(SS_DTYPE_I8, 1, &nd, &tz, NULL) < 0
        || ss__tensor_new(SS_DTYPE_F32, 1, &nd, &tb, NULL) < 0
        || ss__tensor_new(SS_DTYPE_F32, 2, wd, &tr, NULL) < 0)
        abort();
    /* fixed pseudo-random weights over the whole s8 range */
    for (int i = 0; i < K * N; i++) {
        ((int8_t *)tw->data)[i] = (int8_t)((i * 7919 + 13) % 255 - 127);
        ((float *)tr->data)[i] = (float)((i * 31 % 97) - 48) / 200.f;
    }
    for (int n = 0; n < N; n++) {
        ((float *)ts->data)[n] = 0.001f * (float)(1 + n % 5);
        ((int8_t *)tz->data)[n] = 0;
        ((float *)tb->data)[n] = 0.1f * (float)(n % 7) - 0.3f;
    }
    /* h = x - 0.5 in [-0.5, 0.5]: zero point zp, scale 1/255 */
    x = c->inputs[0];
    h = ss_graph_add_value(c, "h", NULL, &err);
    ss_graph_add_node(c, "Sub", "shift", 2,
                      (int[]){ x, add_scalar(c, SS_DTYPE_F32, 0.5) }, 1, &h,
                      0, NULL, &err);
    sc = add_scalar(c, SS_DTYPE_F32, 1.0 / 255);
    zc = add_scalar(c, SS_DTYPE_U8, zp);
    xq = ss_graph_add_value(c, "h_q", NULL, &err);
    xdq = ss_graph_add_value(c, "h_dq", NULL, &err);
    ss_graph_add_node(c, "QuantizeLinear", "hq", 3, (int[]){ h, sc, zc }, 1,
                      &xq, 0, NULL, &err);
    ss_graph_add_node(c, "DequantizeLinear", "hdq", 3, (int[]){ xq, sc, zc },
                      1, &xdq, 0, NULL, &err);
    wq = ss_graph_add_value(c, "w_q", tw, &err);
    ws = ss_graph_add_value(c, "w_s", ts, &err);
    wz = ss_graph_add_value(c, "w_z", tz, &err);
    wdq = ss_graph_add_value(c, "w_dq", NULL, &err);
    ss_graph_add_node(c, "DequantizeLinear", "wdq", 3,
                      (int[]){ wq, ws, wz }, 1, &wdq, 1,
                      &(ss_attr_t){ .name = (char *)"axis",
                                    .type = SS_ATTR_INT, .i = 1 }, &err);
    mm = ss_graph_add_value(c, "mm", NULL, &err);
    ss_graph_add_node(c, "MatMul", "mm", 2, (int[]){ xdq, wdq }, 1, &mm, 0,
                      NULL, &err);
    b = ss_graph_add_value(c, "b", tb, &err);
    lin = ss_graph_add_value(c, "lin", NULL, &err);
    ss_graph_add_node(c, "Add", "bias", 2, (int[]){ mm, b }, 1, &lin, 0,
                      NULL, &err);
    /* the residual: an f32 layer of the same shape */
    wr = ss_graph_add_value(c, "w_r", tr, &err);
    res = ss_graph_add_value(c, "res", NULL, &err);
    ss_graph_add_node(c, "MatMul", "res", 2, (int[]){ x, wr }, 1, &res, 0,
                      NULL, &err);
    y = ss_graph_add_value(c, "y", NULL, &err);
    ss_graph_add_node(c, "Add", "residual", 2, (int[]){ lin, res }, 1, &y, 0,
                      NULL, &err);
    ss_graph_add_output(c, y, &err);
    if (ss_graph_finalize(c, &err) < 0 || run_prepare(&ri, c, z, &err) < 0
        || run_once(&ri, &err) < 0) {
        ok(0, "asymmetric QDQ graph runs: %s", err.msg);
        goto done;
    }
    setenv("SS_ENGINE_NO_FUSION", "1", 1);
    if (run_prepare(&rr, c, z, &err) < 0 || run_once(&rr, &err) < 0) {
        unsetenv("SS_ENGINE_NO_FUSION");
        ok(0, "asymmetric QDQ graph runs on the reference: %s", err.msg);
        goto done;
    }
    unsetenv("SS_ENGINE_NO_FUSION");
    n_i8 = count_steps(ri.plan, "int8 MatMul", &impl);
    ok(n_i8 == 1 && strncmp(impl, "brgemm", 6) == 0,
       "zero point %d: the MatMul runs on an int8 brgemm kernel (%s)", zp,
       impl);
    d = max_diff(ri.out[1].data, rr.out[1].data, out_numel(&ri, 1));
    m = max_abs(rr.out[1].data, out_numel(&rr, 1));
    ok(m > 0.5 && d <= 1e-5 * m, "zero point %d: int8 plan equals the "
       "reference QDQ but for float rounding (max |diff| %.3g, max |y| "
       "%.3g)", zp, d, m);
done:
    run_close(&ri);
    run_close(&rr);
    ss_graph_free(g);
    ss_graph_free(c);
    ss_npz_free(z);
}

static int
quantizable(const ss_graph_t *g, const ss_node_t *n)
{
    return (strcmp(n->op_type, "Gemm") == 0
            || strcmp(n->op_type, "MatMul") == 0
            || strcmp(n->op_type, "Conv") == 0)
           && n->n_inputs >= 2 && g->values[n->inputs[0]].constant == NULL
           && g->values[n->inputs[1]].constant != NULL
           && g->values[n->inputs[1]].constant->dtype == SS_DTYPE_F32;
}

/* How make_qdq quantizes, to mimic other tools: s8 symmetric activations
 * instead of u8 with a zero point, one weight scale per tensor, a weight
 * zero point (which the int8 path refuses: off the fast path). */
static struct {
    int act_s8, w_per_tensor, w_zp;
} qopt;

/* Builds the QDQ variant of a model: every Gemm, MatMul by a constant and
 * Conv gets Q/DQ on its input (u8, min/max over the calibration batch)
 * and per-output-channel s8 weights behind a DQ.  *last_bound: how far
 * the output may move if every input of the last layer moves by two
 * quantization steps (sum over the largest |w| row). */
static ss_graph_t *
make_qdq(const ss_graph_t *g, const ss_npz_t *z, double *last_bound,
         int *n_layers)
{
    ss_graph_t *cal = NULL, *q = NULL;
    ss_err_t err = { 0 };
    run_t r;
    int layer[32], n_layer = 0;
    float lo[32], hi[32];

    if (ss_graph_clone(g, &cal, &err) < 0 || ss_graph_clone(g, &q, &err) < 0)
        abort();
    for (int i = 0; i < cal->n_nodes && n_layer < 15; i++)
        if (quantizable(cal, &cal->nodes[i])) {
            layer[n_layer++] = i;
            ss_graph_add_output(cal, cal->nodes[i].inputs[0], &err);
        }
    if (ss_graph_finalize(cal, &err) < 0 || run_prepare(&r, cal, z, &err) < 0
        || run_once(&r, &err) < 0) {
        tap_diag("calibration: %s", err.msg);
        abort();
    }
    for (int k = 0; k < n_layer; k++) {
        const float *a = r.out[1 + k].data;

        lo[k] = 0.f;
        hi[k] = 0.f;
        for (int64_t i = 0; i < out_numel(&r, 1 + k); i++) {
            lo[k] = a[i] < lo[k] ? a[i] : lo[k];
            hi[k] = a[i] > hi[k] ? a[i] : hi[k];
        }
    }
    run_close(&r);
    ss_graph_free(cal);
    *n_layers = n_layer;
    /* the same node indices in q: clone keeps order */
    for (int k = 0; k < n_layer; k++) {
        ss_node_t *n = &q->nodes[layer[k]];
        int x = n->inputs[0], w = n->inputs[1], xq, xdq, wq, wdq, ws, wz;
        double s = (hi[k] - lo[k]) / 255.0, zp = rint(-lo[k] / s);
        double amax = fabs(lo[k]) > hi[k] ? fabs(lo[k]) : hi[k];
        const ss_tensor_t *wt = q->values[w].constant;
        int64_t numel = ss_tensor_numel(wt), nch, per;
        ss_tensor_t *tq = NULL, *ts = NULL, *tz = NULL;
        /* the output-channel axis: 0 for Conv and Gemm transB, else 1 */
        int ax0 = strcmp(n->op_type, "Conv") == 0
                  || (strcmp(n->op_type, "Gemm") == 0
                      && ss__attr_int(n, "transB", 0) != 0);
        ss_attr_t ax = { .name = (char *)"axis", .type = SS_ATTR_INT,
                         .i = ax0 ? 0 : 1 };
        int sc, zc;
        double b = 0, wmax = 0;

        if (qopt.act_s8) {
            s = amax / 127;
            zp = 0;
        }
        sc = add_scalar(q, SS_DTYPE_F32, s);
        zc = add_scalar(q, qopt.act_s8 ? SS_DTYPE_I8 : SS_DTYPE_U8, zp);
        nch = ax0 ? wt->dims[0] : wt->dims[1];
        per = numel / nch;
        xq = ss_graph_add_value(q, NULL, NULL, &err);
        xdq = ss_graph_add_value(q, NULL, NULL, &err);
        ss_graph_add_node(q, "QuantizeLinear", NULL, 3, (int[]){ x, sc, zc },
                          1, &xq, 0, NULL, &err);
        ss_graph_add_node(q, "DequantizeLinear", NULL, 3,
                          (int[]){ xq, sc, zc }, 1, &xdq, 0, NULL, &err);
        q->nodes[layer[k]].inputs[0] = xdq;  /* the array may have moved */
        if (ss__tensor_new(SS_DTYPE_I8, wt->ndim, wt->dims, &tq, NULL) < 0
            || ss__tensor_new(SS_DTYPE_F32, 1, &nch, &ts, NULL) < 0
            || ss__tensor_new(SS_DTYPE_I8, 1, &nch, &tz, NULL) < 0)
            abort();
        for (int64_t c = 0; c < nch; c++) {
            float m = 0;
            double sum = 0;

            for (int64_t i = 0; i < per; i++) {
                float v = ((float *)wt->data)[ax0 ? c * per + i
                                                  : i * nch + c];

                m = fabsf(v) > m ? fabsf(v) : m;
                sum += fabsf(v);
            }
            ((float *)ts->data)[c] = m > 0 ? m / 126.f : 1.f;
            b = sum > b ? sum : b;
            wmax = m > wmax ? m : wmax;
        }
        for (int64_t c = 0; c < nch; c++) {
            if (qopt.w_per_tensor)
                ((float *)ts->data)[c] = (float)(wmax / 126);
            ((int8_t *)tz->data)[c] = (int8_t)qopt.w_zp;
        }
        *last_bound = 2 * s * b;
        for (int64_t i = 0; i < numel; i++) {
            int64_t c = ax0 ? i / per : i % nch;

            ((int8_t *)tq->data)[i] =
                (int8_t)(rintf(((float *)wt->data)[i]
                               / ((float *)ts->data)[c]) + qopt.w_zp);
        }
        if (qopt.w_per_tensor) {
            /* scalars: ONNX's per-tensor form */
            ts->ndim = 0;
            tz->ndim = 0;
        }
        wq = ss_graph_add_value(q, NULL, tq, &err);
        ws = ss_graph_add_value(q, NULL, ts, &err);
        wz = ss_graph_add_value(q, NULL, tz, &err);
        wdq = ss_graph_add_value(q, NULL, NULL, &err);
        ss_graph_add_node(q, "DequantizeLinear", NULL, 3,
                          (int[]){ wq, ws, wz }, 1, &wdq,
                          qopt.w_per_tensor ? 0 : 1, &ax, &err);
        q->nodes[layer[k]].inputs[1] = wdq;
    }
    if (ss_graph_finalize(q, &err) < 0) {
        tap_diag("finalize: %s", err.msg);
        abort();
    }
    return q;
}


/* batch32: the first 32 rows of every array of z */
static void
first_rows(ss_npz_t *z, int rows)
{
    for (int i = 0; i < ss_npz_count(z); i++) {
        ss_tensor_t *t = (ss_tensor_t *)ss_npz_tensor(z, i);

        if (t->ndim > 0 && t->dims[0] > rows)
            t->dims[0] = rows;
    }
}

static void
qdq_mlp(void)
{
    char path[1024];
    ss_graph_t *g = NULL, *q = NULL, *q2 = NULL, *b = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t rf, ri, rr, rx;
    const char *impl = "";
    double bound = 0, d, mx, agree;
    void *buf = NULL;
    size_t len;
    int n_layers = 0;

    memset(&rf, 0, sizeof(rf));
    memset(&ri, 0, sizeof(ri));
    memset(&rr, 0, sizeof(rr));
    memset(&rx, 0, sizeof(rx));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13",
                               "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    q = make_qdq(g, z, &bound, &n_layers);
    if (run_prepare(&rf, g, z, &err) < 0 || run_prepare(&ri, q, z, &err) < 0
        || run_once(&rf, &err) < 0 || run_once(&ri, &err) < 0) {
        ok(0, "QDQ MLP runs: %s", err.msg);
        goto done;
    }
    is_int(count_steps(ri.plan, "int8", &impl), 3,
           "all three Gemms run on int8 primitives");
    tap_diag("int8 kernel: %s", impl);
    ok(strstr(impl, "int8") != NULL || strstr(impl, "vnni") != NULL
       || strstr(impl, "amx") != NULL || strstr(impl, "s8") != NULL,
       "the int8 kernel is an int8 one (%s)", impl);
    setenv("SS_ENGINE_NO_FUSION", "1", 1);
    if (run_prepare(&rr, q, z, &err) < 0 || run_once(&rr, &err) < 0) {
        ok(0, "reference QDQ runs: %s", err.msg);
        unsetenv("SS_ENGINE_NO_FUSION");
        goto done;
    }
    unsetenv("SS_ENGINE_NO_FUSION");
    d = max_diff(ri.out[0].data, rr.out[0].data, out_numel(&ri, 0));
    mx = max_abs(rr.out[0].data, out_numel(&rr, 0));
    ok(d <= bound, "int8 plan vs reference QDQ: max |diff| %.4g <= %.4g "
       "(two quantization steps on every input of the last layer)", d,
       bound);
    tap_diag("int8 vs reference QDQ: max |diff| %.4g (%.2g%% of max |y|)",
             d, 100 * d / mx);
    agree = agreement(&ri, &rf);
    ok(agree >= 0.95, "int8 vs f32: top-1 agreement %.3f >= 0.95", agree);
    agree = agreement(&rr, &rf);
    tap_diag("reference QDQ vs f32: top-1 agreement %.3f", agree);
    /* export: the file loads as int8 again, same outputs */
    ok(ss_graph_encode_onnx(q, &buf, &len, &err) == 0
       && ss_graph_load_onnx_buffer(buf, len, &q2, &err) == 0,
       "QDQ MLP exports and reloads");
    if (q2 != NULL && run_prepare(&rx, q2, z, &err) == 0
        && run_once(&rx, &err) == 0) {
        is_int(count_steps(rx.plan, "int8", NULL), 3,
               "the reloaded QDQ model runs on int8 again");
        ok(memcmp(rx.out[0].data, ri.out[0].data,
                  (size_t)out_numel(&ri, 0) * 4) == 0,
           "reloaded QDQ model: identical outputs");
    } else {
        ok(0, "reloaded QDQ model runs: %s", err.msg);
    }
    run_close(&rf);
    run_close(&ri);
    run_close(&rx);
    /* latency at batch 32, one thread */
    first_rows(z, 32);
    run_threads = 1;
    ss_graph_clone(g, &b, &err);
    ss_graph_set_meta(b, "slimserve.precision", "bf16", &err);
    if (run_prepare(&rf, g, z, &err) == 0 && run_prepare(&ri, q, z, &err) == 0
        && run_prepare(&rx, b, z, &err) == 0) {
        double tf = run_time_us(&rf, 300), ti = run_time_us(&ri, 300);
        double tb = run_time_us(&rx, 300);

        tap_diag("MLP fixture, batch 32, 1 thread: f32 %.1f us, int8 %.1f "
                 "us (x%.2f), bf16 %.1f us (x%.2f)", tf, ti, tf / ti, tb,
                 tf / tb);
    }
    run_threads = 0;
done:
    run_close(&rf);
    run_close(&ri);
    run_close(&rr);
    run_close(&rx);
    ss_free(buf);
    ss_graph_free(g);
    ss_graph_free(q);
    ss_graph_free(q2);
    ss_graph_free(b);
    ss_npz_free(z);
}

/* Speed on something big enough to measure: the MLP widened to
 * 64 -> H -> H -> 10 with random weights, f32 vs int8 (QDQ) vs bf16. */
static void
wide_mlp(int h)
{
    char path[1024];
    ss_graph_t *g = NULL, *q = NULL, *b = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    uint64_t seed = 12345;
    double bound, agree;
    int n_layers, k = 0, rows[2] = { 32, 1 };
    run_t rf, ri, rb;

    memset(&rf, 0, sizeof(rf));
    memset(&ri, 0, sizeof(ri));
    memset(&rb, 0, sizeof(rb));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13",
                               "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        ss_node_t *n = &g->nodes[i];
        int64_t in = k == 0 ? 64 : h, out = k == 2 ? 10 : h;
        int64_t wd[2] = { out, in };
        ss_tensor_t *w = NULL, *bias = NULL;

        if (strcmp(n->op_type, "Gemm") != 0)
            continue;
        if (ss__tensor_new(SS_DTYPE_F32, 2, wd, &w, NULL) < 0
            || ss__tensor_new(SS_DTYPE_F32, 1, &out, &bias, NULL) < 0)
            abort();
        for (int64_t j = 0; j < out * in; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            /* uniform in [-1.7, 1.7] / sqrt(fan-in) */
            ((float *)w->data)[j] =
                (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5)
                * 3.4f / sqrtf((float)in);
        }
        ss_graph_set_constant(g, n->inputs[1], w, NULL);
        ss_graph_set_constant(g, n->inputs[2], bias, NULL);
        k++;
    }
    q = make_qdq(g, z, &bound, &n_layers);
    ss_graph_clone(g, &b, &err);
    ss_graph_set_meta(b, "slimserve.precision", "bf16", &err);
    run_threads = 1;
    for (int r = 0; r < 2; r++) {
        first_rows(z, rows[r]);
        if (run_prepare(&rf, g, z, &err) < 0
            || run_prepare(&ri, q, z, &err) < 0
            || run_prepare(&rb, b, z, &err) < 0) {
            ok(0, "wide MLP compiles: %s", err.msg);
            goto done;
        }
        if (r == 0) {
            run_once(&rf, &err);
            run_once(&ri, &err);
            agree = agreement(&ri, &rf);
            ok(agree >= 0.9, "wide MLP (H=%d): int8 vs f32 top-1 agreement "
               "%.3f on random weights", h, agree);
        }
        {
            double tf = run_time_us(&rf, 200), ti = run_time_us(&ri, 200);
            double tb = run_time_us(&rb, 200);

            tap_diag("MLP 64-%d-%d-10, batch %d, 1 thread: f32 %.1f us, "
                     "int8 %.1f us (x%.2f), bf16 %.1f us (x%.2f)", h, h,
                     rows[r], tf, ti, tf / ti, tb, tf / tb);
        }
        run_close(&rf);
        run_close(&ri);
        run_close(&rb);
    }
done:
    run_threads = 0;
    run_close(&rf);
    run_close(&ri);
    run_close(&rb);
    ss_graph_free(g);
    ss_graph_free(q);
    ss_graph_free(b);
    ss_npz_free(z);
}

/* QDQ the way other tools write it: the engine recognizes what it can
 * run on int8 and runs the rest as written, correctly either way. */
static void
foreign_qdq(int act_s8, int w_per_tensor, int w_zp, int want_int8)
{
    char path[1024];
    ss_graph_t *g = NULL, *q = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t ri, rr;
    double bound = 0, d;
    int n_layers = 0;

    memset(&ri, 0, sizeof(ri));
    memset(&rr, 0, sizeof(rr));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), "mlp_op13",
                                   "model.onnx"), &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), "mlp_op13",
                               "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "mlp loads: %s", err.msg);
        goto done;
    }
    qopt.act_s8 = act_s8;
    qopt.w_per_tensor = w_per_tensor;
    qopt.w_zp = w_zp;
    q = make_qdq(g, z, &bound, &n_layers);
    memset(&qopt, 0, sizeof(qopt));
    setenv("SS_ENGINE_NO_FUSION", "1", 1);
    if (run_prepare(&rr, q, z, &err) < 0 || run_once(&rr, &err) < 0) {
        unsetenv("SS_ENGINE_NO_FUSION");
        ok(0, "reference QDQ runs: %s", err.msg);
        goto done;
    }
    unsetenv("SS_ENGINE_NO_FUSION");
    if (run_prepare(&ri, q, z, &err) < 0 || run_once(&ri, &err) < 0) {
        ok(0, "QDQ runs: %s", err.msg);
        goto done;
    }
    is_int(count_steps(ri.plan, "int8", NULL), want_int8 ? n_layers : 0,
           "activations %s, weight scales %s, weight zero point %d: %s",
           act_s8 ? "s8" : "u8", w_per_tensor ? "per tensor" : "per channel",
           w_zp, want_int8 ? "int8 kernels" : "f32 kernels as written");
    d = max_diff(ri.out[0].data, rr.out[0].data, out_numel(&ri, 0));
    ok(d <= bound, "... and within two steps of the reference QDQ "
       "(max |diff| %.3g <= %.3g)", d, bound);
done:
    run_close(&ri);
    run_close(&rr);
    ss_graph_free(g);
    ss_graph_free(q);
    ss_npz_free(z);
}

/* Another fixture in QDQ form: every layer on int8, close to the
 * reference QDQ execution and to f32. */
static void
qdq_model(const char *model)
{
    char path[1024];
    ss_graph_t *g = NULL, *q = NULL, *b = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t rf, ri, rr;
    const char *impl = "";
    double bound = 0, agree;
    int n_layers = 0, n_i8;

    memset(&rf, 0, sizeof(rf));
    memset(&ri, 0, sizeof(ri));
    memset(&rr, 0, sizeof(rr));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), model, "model.onnx"),
                           &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), model, "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "%s loads: %s", model, err.msg);
        goto done;
    }
    q = make_qdq(g, z, &bound, &n_layers);
    if (getenv("SS_TEST_SAVE_DIR") != NULL) {
        /* for profiling by hand: slimserve-infer on the QDQ model */
        snprintf(path, sizeof(path), "%s/%s_qdq.onnx",
                 getenv("SS_TEST_SAVE_DIR"), model);
        ss_graph_save_onnx(q, path, NULL);
    }
    if (run_prepare(&rf, g, z, &err) < 0 || run_prepare(&ri, q, z, &err) < 0
        || run_once(&rf, &err) < 0 || run_once(&ri, &err) < 0) {
        ok(0, "%s QDQ runs: %s", model, err.msg);
        goto done;
    }
    n_i8 = count_steps(ri.plan, "int8", &impl);
    is_int(n_i8, n_layers, "%s: every quantized layer on an int8 primitive "
           "(last: %s)", model, impl);
    for (int s = 0; s < ri.plan->n_steps; s++)
        if (ri.plan->steps[s].kind == SS_STEP_DNN
            && strncmp(ri.plan->steps[s].what, "int8", 4) == 0)
            tap_diag("%s: %s on %s", model, ri.plan->steps[s].what,
                     ss_dnn_prim_impl(ri.plan->steps[s].prim));
    setenv("SS_ENGINE_NO_FUSION", "1", 1);
    if (run_prepare(&rr, q, z, &err) < 0 || run_once(&rr, &err) < 0) {
        unsetenv("SS_ENGINE_NO_FUSION");
        ok(0, "%s reference QDQ runs: %s", model, err.msg);
        goto done;
    }
    unsetenv("SS_ENGINE_NO_FUSION");
    agree = agreement(&ri, &rr);
    ok(agree >= 0.95, "%s: int8 plan vs reference QDQ top-1 agreement %.3f",
       model, agree);
    tap_diag("%s: int8 plan vs reference QDQ max |diff| %.3g, max |y| %.3g",
             model, max_diff(ri.out[0].data, rr.out[0].data,
                             out_numel(&ri, 0)),
             max_abs(rr.out[0].data, out_numel(&rr, 0)));
    agree = agreement(&ri, &rf);
    ok(agree >= 0.95, "%s: int8 vs f32 top-1 agreement %.3f >= 0.95", model,
       agree);
    run_close(&rf);
    run_close(&ri);
    run_close(&rr);
    /* latency at batch 32, one thread: f32, int8, bf16 */
    first_rows(z, 32);
    ss_graph_clone(g, &b, &err);
    ss_graph_set_meta(b, "slimserve.precision", "bf16", &err);
    run_threads = 1;
    if (run_prepare(&rf, g, z, &err) == 0 && run_prepare(&ri, q, z, &err) == 0
        && run_prepare(&rr, b, z, &err) == 0) {
        double tf = run_time_us(&rf, 100), ti = run_time_us(&ri, 100);
        double tb = run_time_us(&rr, 100);

        tap_diag("%s, batch 32, 1 thread: f32 %.1f us, int8 %.1f us "
                 "(x%.2f), bf16 %.1f us (x%.2f)", model, tf, ti, tf / ti, tb,
                 tf / tb);
    }
    run_threads = 0;
done:
    run_close(&rf);
    run_close(&ri);
    run_close(&rr);
    ss_graph_free(g);
    ss_graph_free(q);
    ss_graph_free(b);
    ss_npz_free(z);
}

/* ---- bf16 ------------------------------------------------------------- */

static void
bf16_fixture(const char *model)
{
    char path[1024];
    ss_graph_t *g = NULL, *b = NULL, *b2 = NULL;
    ss_npz_t *z = NULL;
    ss_err_t err = { 0 };
    run_t rf, rb, rx;
    const char *impl = "";
    void *buf = NULL;
    size_t len;
    double d, mx, agree;
    int n_bf;

    memset(&rf, 0, sizeof(rf));
    memset(&rb, 0, sizeof(rb));
    memset(&rx, 0, sizeof(rx));
    if (ss_graph_load_onnx(fx_path(path, sizeof(path), model, "model.onnx"),
                           &g, &err) < 0
        || ss_npz_read(fx_path(path, sizeof(path), model, "batch64.npz"),
                       SS_NPY_DEFAULT_MAX_BYTES, &z, &err) < 0) {
        ok(0, "%s loads: %s", model, err.msg);
        goto done;
    }
    ss_graph_clone(g, &b, &err);
    ss_graph_set_meta(b, "slimserve.precision", "bf16", &err);
    if (ss_graph_encode_onnx(b, &buf, &len, &err) < 0
        || ss_graph_load_onnx_buffer(buf, len, &b2, &err) < 0) {
        ok(0, "%s bf16 variant round-trips: %s", model, err.msg);
        goto done;
    }
    if (run_prepare(&rf, g, z, &err) < 0 || run_prepare(&rb, b, z, &err) < 0
        || run_prepare(&rx, b2, z, &err) < 0 || run_once(&rf, &err) < 0
        || run_once(&rb, &err) < 0 || run_once(&rx, &err) < 0) {
        ok(0, "%s bf16 runs: %s", model, err.msg);
        goto done;
    }
    n_bf = count_steps(rb.plan, "bf16", &impl);
    ok(n_bf > 0, "%s: %d bf16 steps (%s)", model, n_bf, impl);
    is_int(count_steps(rx.plan, "bf16", NULL),
           count_steps(rb.plan, "bf16", NULL),
           "%s: the reloaded bf16 variant runs bf16 again", model);
    ok(memcmp(rx.out[0].data, rb.out[0].data,
              (size_t)out_numel(&rb, 0) * 4) == 0,
       "%s: reloaded bf16 variant gives identical outputs", model);
    d = max_diff(rb.out[0].data, rf.out[0].data, out_numel(&rf, 0));
    mx = max_abs(rf.out[0].data, out_numel(&rf, 0));
    ok(d <= 2e-2 * mx, "%s: bf16 within 2e-2 of f32 (max |diff| %.3g, "
       "max |y| %.3g)", model, d, mx);
    agree = agreement(&rb, &rf);
    ok(agree >= 0.95, "%s: bf16 vs f32 top-1 agreement %.3f >= 0.95", model,
       agree);
done:
    run_close(&rf);
    run_close(&rb);
    run_close(&rx);
    ss_free(buf);
    ss_graph_free(g);
    ss_graph_free(b);
    ss_graph_free(b2);
    ss_npz_free(z);
}

int
main(void)
{
    ref_ops();
    qdq_reorders(4);
    qdq_reorders(3);
    asym_linear(128);
    asym_linear(101);
    qdq_mlp();
    foreign_qdq(1, 0, 0, 1);
    foreign_qdq(0, 1, 0, 1);
    foreign_qdq(1, 1, 0, 1);
    foreign_qdq(0, 0, 1, 0);
    qdq_model("cnn_op13");
    qdq_model("transformer_op13");
    wide_mlp(1024);
    bf16_fixture("mlp_op13");
    bf16_fixture("cnn_op13");
    bf16_fixture("transformer_op13");
    return tap_done();
}
