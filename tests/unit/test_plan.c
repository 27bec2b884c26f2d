/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plan: shape inference, constant folding, views, arena planning,
 * output binding, and fused oneDNN execution against values computed
 * here independently (and against the unfused reference plan).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

static uint32_t seed = 2024;

static float
frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void
fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static ss_graph_t *
load_mb(mb_t *b)
{
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

static void
set_env_fusion(int on)
{
    if (on)
        unsetenv("SS_ENGINE_NO_FUSION");
    else
        setenv("SS_ENGINE_NO_FUSION", "1", 1);
}

/* Compiles g for one f32 input of the given shape, runs it on x, and
 * returns output 0 (malloc'ed) and its element count; NULL on failure. */
static float *
run1(const ss_graph_t *g, int fuse, int ndim, const int64_t *dims,
     const float *x, int64_t *n_out, ss_plan_t **keep)
{
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = ndim };
    ss_tensor_t out = { 0 };
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    float *y = NULL;
    const ss_io_info_t *oi;
    int rc;

    memcpy(in.dims, dims, (size_t)ndim * sizeof(int64_t));
    in.data = (void *)x;
    set_env_fusion(fuse);
    rc = ss_plan_new(g, &in, &p, &err);
    set_env_fusion(1);
    if (rc < 0 || (rc = ss_exec_ctx_new(1, &c, &err)) < 0) {
        tap_diag("compile: %s", err.msg);
        goto done;
    }
    oi = ss_plan_output(p, 0);
    out.dtype = oi->dtype;
    out.ndim = oi->ndim;
    memcpy(out.dims, oi->dims, sizeof(oi->dims));
    *n_out = ss_tensor_numel(&out);
    y = calloc((size_t)*n_out + 1, sizeof(float));
    out.data = y;
    if ((rc = ss_plan_run(p, c, &in, &out, &err)) < 0) {
        tap_diag("run: %s", err.msg);
        free(y);
        y = NULL;
    }
done:
    ss_exec_ctx_free(c);
    if (keep != NULL)
        *keep = p;
    else
        ss_plan_free(p);
    return y;
}

static double
max_rel_err(const float *got, const float *want, int64_t n)
{
    double m = 0;

    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / (fabs(want[i]) + 1e-3);

        if (!(d <= m))
            m = d;
    }
    return m;
}

/* x[N,4] → MatMul W1[4,5] → Add b1 → Relu → Gemm(W2[3,5]^T, b2) */
static void
test_mlp(void)
{
    float w1[20], b1[5], w2[15], b2[3];
    mb_t *b = mb_new(13);
    Onnx__NodeProto *n;
    ss_graph_t *g;

    fill(w1, 20, 1);
    fill(b1, 5, 1);
    fill(w2, 15, 1);
    fill(b2, 3, 1);
    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 4 });
    mb_init_f32(b, "w1", 2, (int64_t[]){ 4, 5 }, w1);
    mb_init_f32(b, "b1", 1, (int64_t[]){ 5 }, b1);
    mb_init_f32(b, "w2", 2, (int64_t[]){ 3, 5 }, w2);
    mb_init_f32(b, "b2", 1, (int64_t[]){ 3 }, b2);
    mb_node(b, "MatMul", "mm", "x,w1", "h0");
    mb_node(b, "Add", "add", "h0,b1", "h1");
    mb_node(b, "Relu", "relu", "h1", "h2");
    n = mb_node(b, "Gemm", "fc2", "h2,w2,b2", "y");
    mb_attr_int(b, n, "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 3 });
    g = load_mb(b);
    ok(g != NULL, "MLP loads");
    for (int bi = 0; g != NULL && bi < 2; bi++) {
        int64_t batch = bi ? 7 : 1, n_out = 0;
        float *x = malloc((size_t)batch * 4 * sizeof(float));
        float *want = malloc((size_t)batch * 3 * sizeof(float));

        fill(x, (size_t)batch * 4, 2);
        for (int64_t r = 0; r < batch; r++) {
            float h[5];

            for (int j = 0; j < 5; j++) {
                float s = b1[j];

                for (int k = 0; k < 4; k++)
                    s += x[r * 4 + k] * w1[k * 5 + j];
                h[j] = s > 0 ? s : 0;
            }
            for (int o = 0; o < 3; o++) {
                float s = b2[o];

                for (int j = 0; j < 5; j++)
                    s += h[j] * w2[o * 5 + j];
                want[r * 3 + o] = s;
            }
        }
        for (int fuse = 0; fuse < 2; fuse++) {
            float *y = run1(g, fuse, 2, (int64_t[]){ batch, 4 }, x, &n_out,
                            NULL);

            ok(y != NULL && n_out == batch * 3
               && max_rel_err(y, want, n_out) < 1e-5,
               "MLP batch %lld, fusion %s: matches (max rel err %.2g)",
               (long long)batch, fuse ? "on" : "off",
               y ? max_rel_err(y, want, n_out) : -1.0);
            free(y);
        }
        free(x);
        free(want);
    }
    ss_graph_free(g);
}

/* Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): the shape
 * chain torch.onnx.export writes for x.view(x.size(0), -1). */
static void
test_shape_folding(void)
{
    mb_t *b = mb_new(13);
    const int64_t zero = 0, minus1 = -1, axes0 = 0;
    Onnx__NodeProto *n;
    ss_graph_t *g;
    ss_plan_t *p = NULL;
    float x[2 * 3 * 4];
    int64_t n_out = 0;
    float *y;

    mb_input(b, "x", SS_DTYPE_F32, 3, (int64_t[]){ -1, 3, 4 });
    mb_const(b, "zero", SS_DTYPE_I64, 0, NULL, &zero, 8);
    mb_const(b, "m1", SS_DTYPE_I64, 1, (int64_t[]){ 1 }, &minus1, 8);
    mb_const(b, "axes", SS_DTYPE_I64, 1, (int64_t[]){ 1 }, &axes0, 8);
    mb_node(b, "Shape", "shape", "x", "s");
    n = mb_node(b, "Gather", "gather", "s,zero", "n");
    mb_attr_int(b, n, "axis", 0);
    mb_node(b, "Unsqueeze", "unsq", "n,axes", "n1");
    n = mb_node(b, "Concat", "cat", "n1,m1", "shp");
    mb_attr_int(b, n, "axis", 0);
    mb_node(b, "Reshape", "reshape", "x,shp", "flat");
    mb_node(b, "Relu", "relu", "flat", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 12 });
    g = load_mb(b);
    fill(x, 24, 1);
    y = g ? run1(g, 0, 3, (int64_t[]){ 2, 3, 4 }, x, &n_out, &p) : NULL;
    ok(y != NULL && p != NULL, "shape chain compiles and runs");
    if (y != NULL && p != NULL) {
        int good = n_out == 24;

        for (int i = 0; i < 24 && good; i++)
            good = y[i] == (x[i] > 0 ? x[i] : 0);
        ok(good, "reshaped values");
        is_int(ss_plan_output(p, 0)->dims[0], 2, "output dim 0 inferred");
        is_int(ss_plan_output(p, 0)->dims[1], 12, "output dim 1 inferred");
        is_int(p->n_steps, 1, "Shape/Gather/Unsqueeze/Concat folded, "
               "Reshape a view: one step left");
    }
    free(y);
    ss_plan_free(p);
    ss_graph_free(g);
}

/* Ten Relu in a row: liveness keeps the arena at two buffers. */
static void
test_arena(void)
{
    mb_t *b = mb_new(17);
    ss_graph_t *g;
    ss_plan_t *p = NULL;
    float x[3 * 64];
    char in[16], out[16];
    int64_t n_out = 0;
    float *y;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 64 });
    for (int i = 0; i < 10; i++) {
        snprintf(in, sizeof(in), i ? "h%d" : "x", i);
        snprintf(out, sizeof(out), i < 9 ? "h%d" : "y", i + 1);
        mb_node(b, i % 2 ? "Relu" : "Neg", NULL, in, out);
    }
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 64 });
    g = load_mb(b);
    fill(x, 3 * 64, 1);
    y = g ? run1(g, 0, 2, (int64_t[]){ 3, 64 }, x, &n_out, &p) : NULL;
    ok(y != NULL, "chain of 10 runs");
    if (y != NULL) {
        int good = 1;

        /* Neg, Relu, Neg, Relu...: -(relu(-(...))) */
        for (int i = 0; i < 3 * 64 && good; i++) {
            float v = x[i];

            for (int k = 0; k < 10; k++)
                v = k % 2 ? (v > 0 ? v : 0) : -v;
            good = y[i] == v;
        }
        ok(good, "chain values");
        is_int(p->arena_bytes, 2 * 3 * 64 * 4, "arena holds two buffers, "
               "not nine");
        ok(p->vals[ss__plan_root(p, p->g->outputs[0])].kind == SS_PV_OUTPUT,
           "last step writes the caller's buffer");
    }
    free(y);
    ss_plan_free(p);
    ss_graph_free(g);
}

/* Outputs that are an input, a constant, a view and the same value twice. */
static void
test_outputs(void)
{
    mb_t *b = mb_new(17);
    const float c[2] = { 7, 8 };
    ss_graph_t *g;
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 1, .dims = { 2 } };
    ss_tensor_t out[5];
    float x[2] = { -1, 2 }, o[5][2];
    ss_err_t err = { 0 };
    int rc;

    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    mb_init_f32(b, "c", 1, (int64_t[]){ 2 }, c);
    mb_node(b, "Identity", "idx", "x", "xi");
    mb_node(b, "Relu", "r", "x", "r");
    mb_node(b, "Dropout", "drop", "r", "rd");
    mb_output(b, "xi", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    mb_output(b, "c", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    mb_output(b, "r", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    mb_output(b, "rd", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    mb_output(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    g = load_mb(b);
    in.data = x;
    memset(o, 0, sizeof(o));
    for (int i = 0; i < 5; i++)
        out[i] = (ss_tensor_t){ .data = o[i] };
    rc = g ? ss_plan_new(g, &in, &p, &err) : -1;
    if (rc == 0)
        rc = ss_exec_ctx_new(1, &ctx, &err);
    if (rc == 0)
        rc = ss_plan_run(p, ctx, &in, out, &err);
    is_int(rc, 0, "odd outputs run (%s)", err.msg);
    ok(o[0][0] == -1 && o[0][1] == 2, "output that is an input's view");
    ok(o[1][0] == 7 && o[1][1] == 8, "output that is a constant");
    ok(o[2][0] == 0 && o[2][1] == 2, "computed output");
    ok(o[3][0] == 0 && o[3][1] == 2, "Dropout output (same bytes twice)");
    ok(o[4][0] == -1 && o[4][1] == 2, "output that is an input");
    is_int(out[2].ndim, 1, "run fills output shapes");

    in.dims[0] = 3;
    rc = p ? ss_plan_run(p, ctx, &in, out, &err) : -1;
    ok(rc == SS_EINVAL && strstr(err.msg, "'x'"), "wrong input shape at run");
    in.dtype = SS_DTYPE_I64;
    ss_plan_free(p);
    p = NULL;
    rc = g ? ss_plan_new(g, &in, &p, &err) : -1;
    ok(rc == SS_EINVAL && p == NULL, "wrong input dtype at compile");
    ss_exec_ctx_free(ctx);
    ss_graph_free(g);
}

static void
test_plan_alloc_failures(void)
{
    float w1[20] = { 0 };
    mb_t *b = mb_new(13);
    ss_graph_t *g;
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { 2, 4 } };
    int n, bad = 0;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 4 });
    mb_init_f32(b, "w1", 2, (int64_t[]){ 4, 5 }, w1);
    mb_node(b, "MatMul", "mm", "x,w1", "h0");
    mb_node(b, "Relu", "relu", "h0", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 5 });
    g = load_mb(b);
    for (n = 1; g != NULL && n < 500; n++) {
        ss_plan_t *p = NULL;
        ss_err_t err = { 0 };
        int rc;

        ss_alloc_fail_after(n);
        rc = ss_plan_new(g, &in, &p, &err);
        ss_alloc_fail_after(0);
        ss_plan_free(p);
        if (rc == 0)
            break;
        if (p != NULL || err.msg[0] == '\0')
            bad++;
    }
    ok(g != NULL && n > 3 && n < 500 && bad == 0,
       "plan compile survives %d allocation failures", n - 1);
    ss_graph_free(g);
}


static int
has_step(const ss_plan_t *p, const char *what)
{
    for (int s = 0; p != NULL && s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_DNN
            && strcmp(p->steps[s].what, what) == 0)
            return 1;
    return 0;
}

/* Runs g fused and unfused on x; checks agreement and the fused steps. */
static void
fused_vs_ref(const ss_graph_t *g, int ndim, const int64_t *dims,
             const float *x, const char *const *want_steps, const char *name)
{
    ss_plan_t *pf = NULL;
    int64_t nf = 0, nr = 0;
    float *yf = run1(g, 1, ndim, dims, x, &nf, &pf);
    float *yr = run1(g, 0, ndim, dims, x, &nr, NULL);
    double e = yf && yr ? max_rel_err(yf, yr, nr) : -1;

    ok(yf != NULL && yr != NULL && nf == nr && e >= 0 && e < 1e-4,
       "%s: fused agrees with reference (max rel err %.2g)", name, e);
    for (int i = 0; want_steps[i] != NULL; i++)
        ok(has_step(pf, want_steps[i]), "%s: fused step %s", name,
           want_steps[i]);
    free(yf);
    free(yr);
    ss_plan_free(pf);
}

static void
bn_params(mb_t *b, const char *prefix, int c)
{
    float sc[8], bb[8], mean[8], var[8];
    char name[32];

    fill(sc, (size_t)c, 1);
    fill(bb, (size_t)c, 1);
    fill(mean, (size_t)c, 1);
    fill(var, (size_t)c, 0.5f);
    for (int i = 0; i < c; i++)
        var[i] = fabsf(var[i]) + 0.5f;
    snprintf(name, sizeof(name), "%s_s", prefix);
    mb_init_f32(b, name, 1, (int64_t[]){ c }, sc);
    snprintf(name, sizeof(name), "%s_b", prefix);
    mb_init_f32(b, name, 1, (int64_t[]){ c }, bb);
    snprintf(name, sizeof(name), "%s_m", prefix);
    mb_init_f32(b, name, 1, (int64_t[]){ c }, mean);
    snprintf(name, sizeof(name), "%s_v", prefix);
    mb_init_f32(b, name, 1, (int64_t[]){ c }, var);
}

/* Conv+BN+Relu, Conv+BN+residual Add+Relu, pools, Gemm, the opset-13
 * LayerNorm decomposition, MatMul+bias and the Erf form of Gelu. */
static void
test_fusion_cnn_ln_gelu(void)
{
    mb_t *b = mb_new(13);
    float w1[4 * 2 * 9], b1[4], w2[4 * 4 * 9], w3[8 * 4], b3[8];
    float gam[8], bet[8], w4[64], b4[8];
    const float two = 2, eps = 1e-5f, sq2 = 1.41421356f, one = 1, half = 0.5f;
    const int64_t pads[4] = { 1, 1, 1, 1 }, k2[2] = { 2, 2 }, m1 = -1;
    Onnx__NodeProto *n;
    ss_graph_t *g;
    float x[3 * 2 * 6 * 6];
    static const char *const want[] = {
        "Conv+BN+Relu", "Conv+BN+Add+Relu", "MaxPool", "GlobalAveragePool",
        "Gemm", "LayerNorm(decomposed)", "MatMul+GeluErf", NULL
    };

    fill(w1, sizeof(w1) / 4, 0.5f);
    fill(b1, 4, 0.5f);
    fill(w2, sizeof(w2) / 4, 0.5f);
    fill(w3, 32, 1);
    fill(b3, 8, 1);
    fill(gam, 8, 1);
    fill(bet, 8, 1);
    fill(w4, 64, 1);
    fill(b4, 8, 1);
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 2, 6, 6 });
    mb_init_f32(b, "w1", 4, (int64_t[]){ 4, 2, 3, 3 }, w1);
    mb_init_f32(b, "b1", 1, (int64_t[]){ 4 }, b1);
    mb_init_f32(b, "w2", 4, (int64_t[]){ 4, 4, 3, 3 }, w2);
    bn_params(b, "bn1", 4);
    bn_params(b, "bn2", 4);
    n = mb_node(b, "Conv", "c1", "x,w1,b1", "c1");
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "BatchNormalization", "bn1", "c1,bn1_s,bn1_b,bn1_m,bn1_v",
            "n1");
    mb_node(b, "Relu", "r1", "n1", "r1");
    n = mb_node(b, "Conv", "c2", "r1,w2", "c2");
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "BatchNormalization", "bn2", "c2,bn2_s,bn2_b,bn2_m,bn2_v",
            "n2");
    mb_node(b, "Add", "res", "n2,r1", "a2");
    mb_node(b, "Relu", "r2", "a2", "r2");
    n = mb_node(b, "MaxPool", "mp", "r2", "p1");
    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
    mb_node(b, "GlobalAveragePool", "gap", "p1", "p2");
    mb_node(b, "Flatten", "fl", "p2", "f");
    mb_init_f32(b, "w3", 2, (int64_t[]){ 8, 4 }, w3);
    mb_init_f32(b, "b3", 1, (int64_t[]){ 8 }, b3);
    n = mb_node(b, "Gemm", "fc", "f,w3,b3", "h");
    mb_attr_int(b, n, "transB", 1);
    /* LayerNorm, decomposed */
    mb_const(b, "two", SS_DTYPE_F32, 0, NULL, &two, 4);
    mb_const(b, "eps", SS_DTYPE_F32, 0, NULL, &eps, 4);
    mb_init_f32(b, "gam", 1, (int64_t[]){ 8 }, gam);
    mb_init_f32(b, "bet", 1, (int64_t[]){ 8 }, bet);
    n = mb_node(b, "ReduceMean", "rm1", "h", "mu");
    mb_attr_ints(b, n, "axes", 1, &m1);
    mb_node(b, "Sub", "sub", "h,mu", "d");
    mb_node(b, "Pow", "pow", "d,two", "d2");
    n = mb_node(b, "ReduceMean", "rm2", "d2", "var");
    mb_attr_ints(b, n, "axes", 1, &m1);
    mb_node(b, "Add", "addeps", "var,eps", "ve");
    mb_node(b, "Sqrt", "sqrt", "ve", "sd");
    mb_node(b, "Div", "div", "d,sd", "nrm");
    mb_node(b, "Mul", "mulg", "nrm,gam", "ng");
    mb_node(b, "Add", "addb", "ng,bet", "ln");
    /* Linear + Gelu (Erf form) */
    mb_init_f32(b, "w4", 2, (int64_t[]){ 8, 8 }, w4);
    mb_init_f32(b, "b4", 1, (int64_t[]){ 8 }, b4);
    mb_const(b, "sq2", SS_DTYPE_F32, 0, NULL, &sq2, 4);
    mb_const(b, "one", SS_DTYPE_F32, 0, NULL, &one, 4);
    mb_const(b, "half", SS_DTYPE_F32, 0, NULL, &half, 4);
    mb_node(b, "MatMul", "mm4", "ln,w4", "l0");
    mb_node(b, "Add", "ab4", "l0,b4", "l");
    mb_node(b, "Div", "gdiv", "l,sq2", "g1");
    mb_node(b, "Erf", "gerf", "g1", "g2");
    mb_node(b, "Add", "gadd", "g2,one", "g3");
    mb_node(b, "Mul", "gmul", "l,g3", "g4");
    mb_node(b, "Mul", "ghalf", "g4,half", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 8 });
    g = load_mb(b);
    fill(x, sizeof(x) / 4, 2);
    ok(g != NULL, "CNN/LN/Gelu model loads");
    if (g != NULL)
        fused_vs_ref(g, 4, (int64_t[]){ 3, 2, 6, 6 }, x, want,
                     "CNN+LN+Gelu");
    ss_graph_free(g);
}

/* softmax(q k^T) v over x [B,5,4] (q = k = v = x) with k^T an explicit
 * Transpose; q scaled by c before the product when pre names the op
 * (Div, Mul), the product after it when post does. */
static ss_graph_t *
attention_graph(const char *pre, const char *post, float c)
{
    mb_t *b = mb_new(17);
    const int64_t perm[3] = { 0, 2, 1 };
    Onnx__NodeProto *n;

    mb_input(b, "x", SS_DTYPE_F32, 3, (int64_t[]){ -1, 5, 4 });
    mb_const(b, "c", SS_DTYPE_F32, 0, NULL, &c, 4);
    if (pre != NULL)
        mb_node(b, pre, "prescale", "x,c", "q");
    n = mb_node(b, "Transpose", "kt", "x", "xt");
    mb_attr_ints(b, n, "perm", 3, perm);
    mb_node(b, "MatMul", "qk", pre ? "q,xt" : "x,xt", post ? "s0" : "s");
    if (post != NULL)
        mb_node(b, post, "scale", "s0,c", "s");
    n = mb_node(b, "Softmax", "sm", "s", "a");
    mb_attr_int(b, n, "axis", -1);
    mb_node(b, "MatMul", "av", "a,x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 3, (int64_t[]){ -1, 5, 4 });
    return load_mb(b);
}

/* softmax(q k^T / sqrt(d)) v with k^T an explicit Transpose. */
static void
test_fusion_attention(void)
{
    ss_graph_t *g = attention_graph(NULL, "Div", 2.0f);
    float x[2 * 5 * 4];
    static const char *const want[] = { "Transpose+MatMul+Div", "Softmax",
                                        "MatMul", NULL };

    fill(x, sizeof(x) / 4, 2);
    ok(g != NULL, "attention model loads");
    if (g != NULL)
        fused_vs_ref(g, 3, (int64_t[]){ 2, 5, 4 }, x, want, "attention");
    ss_graph_free(g);
}

/* Steps of p that run node op's reference kernel. */
static int
ref_steps(const ss_plan_t *p, const char *op)
{
    int n = 0;

    for (int s = 0; p != NULL && s < p->n_steps; s++)
        n += p->steps[s].kind == SS_STEP_REF
             && strcmp(p->steps[s].node->op_type, op) == 0;
    return n;
}

/* softmax((q / c) k^T) v as torch's attention writes it, q scaled before
 * the product: the scale becomes the product's first post-op (Div by 8,
 * exact; Mul by 0.3, within rounding) and q / c is not computed. */
static void
test_fusion_prescale(void)
{
    static const struct {
        const char *op, *what;
        float c;
    } cases[] = { { "Div", "Transpose+MatMul(Div A)", 8.0f },
                  { "Mul", "Transpose+MatMul(Mul A)", 0.3f } };
    float x[2 * 5 * 4];

    fill(x, sizeof(x) / 4, 4);
    for (int i = 0; i < 2; i++) {
        ss_graph_t *g = attention_graph(cases[i].op, NULL, cases[i].c);
        const char *want[] = { cases[i].what, "Softmax", "MatMul", NULL };

        ok(g != NULL, "prescaled attention (%s) loads", cases[i].op);
        if (g != NULL) {
            ss_plan_t *p = NULL;
            int64_t ny = 0;
            float *y = run1(g, 1, 3, (int64_t[]){ 2, 5, 4 }, x, &ny, &p);

            fused_vs_ref(g, 3, (int64_t[]){ 2, 5, 4 }, x, want,
                         cases[i].what);
            is_int(ref_steps(p, cases[i].op), 0, "%s: no %s step left",
                   cases[i].what, cases[i].op);
            free(y);
            ss_plan_free(p);
        }
        ss_graph_free(g);
    }
}

/* x [B,64,160] -> Transpose (1,2,0) -> y [64,160,B], the K^T of torch's
 * attention: a oneDNN reorder from 16384 elements (batch 2), the
 * reference copy below (batch 1); y against the element-by-element
 * answer either way. */
static void
test_transpose_reorder(void)
{
    mb_t *b = mb_new(17);
    const int64_t perm[3] = { 1, 2, 0 };
    Onnx__NodeProto *n;
    ss_graph_t *g;
    float *x = malloc(2 * 64 * 160 * sizeof(float));

    mb_input(b, "x", SS_DTYPE_F32, 3, (int64_t[]){ -1, 64, 160 });
    n = mb_node(b, "Transpose", "kt", "x", "y");
    mb_attr_ints(b, n, "perm", 3, perm);
    mb_output(b, "y", SS_DTYPE_F32, 3, (int64_t[]){ 64, 160, -1 });
    g = load_mb(b);
    ok(g != NULL && x != NULL, "transpose model loads");
    if (x != NULL)
        fill(x, 2 * 64 * 160, 5);
    for (int bs = 1; g != NULL && x != NULL && bs <= 2; bs++) {
        ss_plan_t *p = NULL;
        int64_t ny = 0, bad = 0;
        float *y = run1(g, 1, 3, (int64_t[]){ bs, 64, 160 }, x, &ny, &p);

        for (int i = 0; y != NULL && i < bs; i++)
            for (int c = 0; c < 64; c++)
                for (int t = 0; t < 160; t++)
                    bad += y[(c * 160 + t) * bs + i]
                           != x[(i * 64 + c) * 160 + t];
        ok(y != NULL && ny == bs * 64 * 160 && bad == 0,
           "transpose (1,2,0), batch %d: y[c,t,b] = x[b,c,t] (%lld wrong)",
           bs, (long long)bad);
        is_int(has_step(p, "Transpose"), bs == 2,
               "transpose, batch %d: %s", bs,
               bs == 2 ? "a oneDNN reorder" : "the reference copy");
        free(y);
        ss_plan_free(p);
    }
    free(x);
    ss_graph_free(g);
}

/* x [B,5,4] -> Transpose (1,0,2) -> Neg -> Transpose (1,0,2) -> Transpose
 * (2,1,0) -> y [4,5,B]: the nn.MultiheadAttention pair [B,T,C] <-> [T,B,C]
 * is a view when B is 1 (no step, no copy), a step when B is 2; the
 * (2,1,0) one moves the 4 before the 5 whatever B is.  y against the
 * element-by-element answer, fused and not. */
static void
test_view_transpose(void)
{
    mb_t *b = mb_new(17);
    const int64_t p102[3] = { 1, 0, 2 }, p210[3] = { 2, 1, 0 };
    Onnx__NodeProto *n;
    ss_graph_t *g;
    float x[2 * 5 * 4];

    mb_input(b, "x", SS_DTYPE_F32, 3, (int64_t[]){ -1, 5, 4 });
    n = mb_node(b, "Transpose", "t1", "x", "xt");
    mb_attr_ints(b, n, "perm", 3, p102);
    mb_node(b, "Neg", "neg", "xt", "nt");
    n = mb_node(b, "Transpose", "t2", "nt", "n2");
    mb_attr_ints(b, n, "perm", 3, p102);
    n = mb_node(b, "Transpose", "t3", "n2", "y");
    mb_attr_ints(b, n, "perm", 3, p210);
    mb_output(b, "y", SS_DTYPE_F32, 3, (int64_t[]){ 4, 5, -1 });
    g = load_mb(b);
    fill(x, sizeof(x) / 4, 3);
    ok(g != NULL, "transposes model loads");
    for (int bs = 1; g != NULL && bs <= 2; bs++)
        for (int fuse = 0; fuse <= 1; fuse++) {
            ss_plan_t *p = NULL;
            int64_t ny = 0, bad = 0;
            float *y = run1(g, fuse, 3, (int64_t[]){ bs, 5, 4 }, x, &ny, &p);

            for (int c = 0; y != NULL && c < 4; c++)
                for (int i = 0; i < bs; i++)
                    for (int t = 0; t < 5; t++)
                        bad += y[(c * 5 + t) * bs + i]
                               != -x[(i * 5 + t) * 4 + c];
            ok(y != NULL && ny == bs * 5 * 4 && bad == 0,
               "transposes, batch %d, fusion %d: y[c,t,b] = -x[b,t,c] "
               "(%lld wrong)", bs, fuse, (long long)bad);
            is_int(ref_steps(p, "Transpose"), bs == 1 ? 1 : 3,
                   "transposes, batch %d, fusion %d: %s", bs, fuse,
                   bs == 1 ? "the two that move only the 1 are views"
                           : "all three are copies");
            free(y);
            ss_plan_free(p);
        }
    ss_graph_free(g);
}

/* Compiles g for one f32 input of shape [rows, 64] under the budget
 * SS_ENGINE_MAX_PLAN_BYTES=budget (NULL: the default), or the caller's
 * (ss_plan_opts_t.max_plan_bytes = opt, when not 0). */
static int
plan_opt_budget(const ss_graph_t *g, int64_t rows, const char *budget,
                size_t opt, ss_err_t *err)
{
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { rows, 64 } };
    const ss_plan_opts_t o = { .max_plan_bytes = opt };
    ss_plan_t *p = NULL;
    int rc;

    if (budget != NULL)
        setenv("SS_ENGINE_MAX_PLAN_BYTES", budget, 1);
    rc = ss_plan_new_opts(g, &in, &o, &p, err);
    unsetenv("SS_ENGINE_MAX_PLAN_BYTES");
    ss_plan_free(p);
    return rc;
}

static int
plan_with_budget(const ss_graph_t *g, int64_t rows, const char *budget,
                 ss_err_t *err)
{
    return plan_opt_budget(g, rows, budget, 0, err);
}

/* The plan's memory budget: folded constants (a ConstantOfShape of
 * 4 MiB) and the arena (Relu chain) are charged against it. */
static void
test_budget(void)
{
    mb_t *b = mb_new(17);
    const int64_t shp[2] = { 1024, 1024 };
    Onnx__NodeProto *n;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    int rc;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 64 });
    mb_const(b, "shp", SS_DTYPE_I64, 1, (int64_t[]){ 2 }, shp, sizeof(shp));
    n = mb_node(b, "ConstantOfShape", "cos", "shp", "big");
    mb_attr_tensor(b, n, "value", mb_tensor(b, "v", SS_DTYPE_F32, 1,
                                            (int64_t[]){ 1 }, &(float){ 1 },
                                            4));
    mb_node(b, "ReduceSum", "sum", "big", "s");
    mb_node(b, "Relu", "r1", "x", "h");
    mb_node(b, "Relu", "r2", "h", "h2");
    mb_node(b, "Add", "add", "h2,s", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 64 });
    if ((g = load_mb(b)) == NULL) {
        ok(0, "budget model loads");
        return;
    }
    is_int(plan_with_budget(g, 4, NULL, &err), 0, "default budget: "
           "compiles (%s)", err.msg);
    is_int(plan_with_budget(g, 4, "16M", &err), 0, "16M budget: compiles");
    rc = plan_with_budget(g, 4, "1M", &err);
    ok(rc == SS_ETOOBIG && strstr(err.msg, "node 'cos' (ConstantOfShape)")
       && strstr(err.msg, "1048576-byte budget"),
       "1M budget: a 4 MiB constant is refused, naming the node (%s)",
       err.msg);
    is_int(plan_with_budget(g, 4, "4200k", &err), 0, "4200k budget, 4 "
           "rows: the constant fits, and the small arena");
    rc = plan_with_budget(g, 4096, "5M", &err);
    ok(rc == SS_ETOOBIG && strstr(err.msg, "intermediates"),
       "5M budget: constants fit, constants plus arena do not (%s)",
       err.msg);
    is_int(plan_with_budget(g, 4096, "8M", &err), 0, "8M budget: both fit");
    is_int(plan_with_budget(g, 4, "lots", &err), 0, "a bad budget value "
           "falls back to the default");
    /* the caller's budget (a daemon's max_plan_bytes) wins over both */
    rc = plan_opt_budget(g, 4, NULL, (size_t)1 << 20, &err);
    ok(rc == SS_ETOOBIG && strstr(err.msg, "node 'cos' (ConstantOfShape)")
       && strstr(err.msg, "1048576-byte budget"),
       "opts 1 MiB: refused as under the variable (%s)", err.msg);
    is_int(plan_opt_budget(g, 4096, "1M", (size_t)8 << 20, &err), 0,
           "opts 8 MiB over the variable's 1M: compiles (%s)", err.msg);
    rc = plan_opt_budget(g, 4096, NULL, (size_t)5 << 20, &err);
    ok(rc == SS_ETOOBIG && strstr(err.msg, "intermediates"),
       "opts 5 MiB, 4096 rows: the arena is charged too (%s)", err.msg);
    ss_graph_free(g);
}

/* Empty tensors: a batch of 0 rows (the caller's NULL buffers) and a
 * 0-element initializer reach kernels with non-NULL data. */
static void
test_empty(void)
{
    mb_t *b = mb_new(17);
    const float bias[4] = { 1, -2, 3, -4 };
    Onnx__NodeProto *n;
    ss_graph_t *g;
    int e;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 4 });
    mb_init_f32(b, "bias", 1, (int64_t[]){ 4 }, bias);
    mb_init_f32(b, "e", 2, (int64_t[]){ 0, 4 }, NULL);
    mb_node(b, "Add", "add", "x,bias", "h");
    mb_node(b, "Tanh", "tanh", "h", "t");
    n = mb_node(b, "Concat", "cat", "e,t,e", "y");
    mb_attr_int(b, n, "axis", 0);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 4 });
    if ((g = load_mb(b)) == NULL) {
        ok(0, "empty-tensor model loads");
        return;
    }
    for (e = 0; e < g->n_values && strcmp(g->values[e].name, "e") != 0; e++)
        ;
    ok(e < g->n_values && g->values[e].constant != NULL
       && g->values[e].constant->data != NULL,
       "a 0-element initializer has data");
    for (int fuse = 0; fuse <= 1; fuse++) {
        ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { 0, 4 } };
        ss_tensor_t out = { 0 };
        ss_plan_t *p = NULL;
        ss_exec_ctx_t *c = NULL;
        ss_err_t err = { 0 };
        float x[2 * 4] = { 0.5f, 1, -1, 2, -0.25f, 0, 0, 4 };
        float *y;
        int64_t n_out = 0;
        int rc, good = 1;

        set_env_fusion(fuse);
        rc = ss_plan_new(g, &in, &p, &err);
        set_env_fusion(1);
        if (rc == 0)
            rc = ss_exec_ctx_new(1, &c, &err);
        if (rc == 0)
            rc = ss_plan_run(p, c, &in, &out, &err);
        is_int(rc, 0, "fusion %d: 0 rows, NULL buffers: runs (%s)", fuse,
               err.msg);
        is_int(out.dims[0], 0, "fusion %d: 0 rows out", fuse);
        ss_exec_ctx_free(c);
        ss_plan_free(p);
        y = run1(g, fuse, 2, (int64_t[]){ 2, 4 }, x, &n_out, NULL);
        for (int i = 0; y != NULL && i < 8 && good; i++)
            good = fabsf(y[i] - tanhf(x[i] + bias[i % 4])) < 1e-6f;
        ok(y != NULL && n_out == 8 && good, "fusion %d: 2 rows: tanh(x + b) "
           "between empty halves", fuse);
        free(y);
    }
    ss_graph_free(g);
}

/* Inputs that decide shapes: Reshape's target and TopK's K as graph
 * inputs.  The plan is compiled for their values, runs with them, and
 * refuses other values; values no shape can be made of fail the compile
 * with SS_EINVAL naming the inputs. */
static void
test_shape_inputs(void)
{
    mb_t *b = mb_new(13);
    Onnx__NodeProto *n;
    ss_graph_t *g;
    unsigned char flags[3] = { 9, 9, 9 };
    float x[12], y[12], vals[4];
    int64_t shp[2] = { 4, 3 }, k = 2, shp2[2] = { 2, 6 }, bad[2] = { 5, 5 };
    int64_t idx[4];
    ss_tensor_t in[3], out[3];
    ss_plan_t *p = NULL, *q = NULL;
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    int rc, good = 1;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ 2, 6 });
    mb_input(b, "shape", SS_DTYPE_I64, 1, (int64_t[]){ 2 });
    mb_input(b, "k", SS_DTYPE_I64, 1, (int64_t[]){ 1 });
    mb_node(b, "Reshape", "reshape", "x,shape", "r0");
    mb_node(b, "Neg", "neg", "r0", "r");
    mb_node(b, "Flatten", "flat", "x", "xf");
    n = mb_node(b, "TopK", "topk", "xf,k", "v,i");
    mb_attr_int(b, n, "axis", 1);
    mb_output(b, "r", SS_DTYPE_F32, -1, NULL);
    mb_output(b, "v", SS_DTYPE_F32, -1, NULL);
    mb_output(b, "i", SS_DTYPE_I64, -1, NULL);
    if ((g = load_mb(b)) == NULL) {
        ok(0, "shape-input model loads");
        return;
    }
    is_int(ss_graph_shape_inputs(g, flags), 2, "two inputs decide shapes");
    ok(flags[0] == 0 && flags[1] == 1 && flags[2] == 1,
       "they are 'shape' and 'k', not 'x'");
    fill(x, 12, 1);
    in[0] = (ss_tensor_t){ SS_DTYPE_F32, 2, { 2, 6 }, x };
    in[1] = (ss_tensor_t){ SS_DTYPE_I64, 1, { 2 }, shp };
    in[2] = (ss_tensor_t){ SS_DTYPE_I64, 1, { 1 }, &k };
    rc = ss_plan_new(g, in, &p, &err);
    is_int(rc, 0, "compiles for shape [4,3], K 2 (%s)", err.msg);
    if (rc == 0) {
        const ss_io_info_t *o = ss_plan_output(p, 0);

        ok(o->ndim == 2 && o->dims[0] == 4 && o->dims[1] == 3,
           "Reshape's output is [4,3]");
        o = ss_plan_output(p, 1);
        ok(o->ndim == 2 && o->dims[0] == 2 && o->dims[1] == 2,
           "TopK's values are [2,2]");
        out[0] = (ss_tensor_t){ .data = y };
        out[1] = (ss_tensor_t){ .data = vals };
        out[2] = (ss_tensor_t){ .data = idx };
        rc = ss_exec_ctx_new(1, &c, &err);
        if (rc == 0)
            rc = ss_plan_run(p, c, in, out, &err);
        is_int(rc, 0, "runs with the values it was compiled for (%s)",
               err.msg);
        for (int i = 0; i < 12 && rc == 0; i++)
            good = good && y[i] == -x[i];
        for (int r = 0; r < 2 && rc == 0; r++) {
            float m = -INFINITY;

            for (int j = 0; j < 6; j++)
                m = x[r * 6 + j] > m ? x[r * 6 + j] : m;
            good = good && vals[r * 2] == m && x[r * 6 + idx[r * 2]] == m
                   && vals[r * 2 + 1] <= m;
        }
        ok(rc == 0 && good, "outputs: -x as [4,3], each row's top 2");
        in[1].data = shp2;
        ss_err_clear(&err);
        rc = ss_plan_run(p, c, in, out, &err);
        ok(rc == SS_EINVAL && strstr(err.msg, "'shape'") != NULL,
           "another shape value is refused: %s", err.msg);
        in[1].data = shp;
    }
    in[1].data = NULL;
    ss_err_clear(&err);
    rc = ss_plan_new(g, in, &q, &err);
    ok(rc == SS_EINVAL && strstr(err.msg, "decides shapes") != NULL,
       "no value to compile for: %s", err.msg);
    ss_plan_free(q);
    q = NULL;
    in[1].data = bad;
    ss_err_clear(&err);
    rc = ss_plan_new(g, in, &q, &err);
    ok(rc == SS_EINVAL && strstr(err.msg, "deciding shapes") != NULL
       && strstr(err.msg, "'shape'") != NULL,
       "a 5x5 of 12 elements is the caller's error: %s", err.msg);
    ss_plan_free(q);
    ss_exec_ctx_free(c);
    ss_plan_free(p);
    ss_graph_free(g);
}

int
main(void)
{
    test_mlp();
    test_shape_inputs();
    test_shape_folding();
    test_arena();
    test_outputs();
    test_plan_alloc_failures();
    test_fusion_cnn_ln_gelu();
    test_fusion_attention();
    test_view_transpose();
    test_fusion_prescale();
    test_transpose_reorder();
    test_budget();
    test_empty();
    return tap_done();
}
