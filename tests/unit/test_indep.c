/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rows (engine/plan/plan_indep*.c, ss_graph_rows): small graphs built
 * here, each with the verdict it must get.  Those found independent are
 * also run: a batch of 3 rows against each row compiled and run alone
 * (the daemon batches them only when that holds), within 1e-5 of the
 * largest |y|.  Those that mix name the node and op that does.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

#define ROWS 3

static uint32_t seed = 27;

static void
init(mb_t *b, const char *name, int ndim, const int64_t *dims)
{
    size_t n = 1;
    float *w;

    for (int i = 0; i < ndim; i++)
        n *= (size_t)dims[i];
    w = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        w[i] = mb_rand(&seed) * 0.5f;
    mb_init_f32(b, name, ndim, dims, w);
    free(w);
}

static void
ints(mb_t *b, const char *name, int n, const int64_t *v)
{
    mb_init_i64(b, name, 1, (int64_t[]){ n }, v);
}

static void
scalar(mb_t *b, const char *name, int64_t v)
{
    mb_init_i64(b, name, 0, NULL, &v);
}

/* Shape(x)[k] as a 1-element vector "name", as PyTorch writes it. */
static void
dim_of(mb_t *b, const char *x, int64_t k, const char *name)
{
    char s[64], i[64], gth[64], ax[64], in[160];

    snprintf(s, sizeof(s), "%s_shape", name);
    snprintf(i, sizeof(i), "%s_k", name);
    snprintf(gth, sizeof(gth), "%s_g", name);
    snprintf(ax, sizeof(ax), "%s_ax", name);
    mb_node(b, "Shape", s, x, s);
    scalar(b, i, k);
    snprintf(in, sizeof(in), "%s,%s", s, i);
    mb_node(b, "Gather", gth, in, gth);
    ints(b, ax, 1, (int64_t[]){ 0 });
    snprintf(in, sizeof(in), "%s,%s", gth, ax);
    mb_node(b, "Unsqueeze", name, in, name);
}

/* A node with an "axis" attribute. */
static void
along(mb_t *b, const char *op, const char *name, const char *ins,
      const char *outs, int64_t axis)
{
    mb_attr_int(b, mb_node(b, op, name, ins, outs), "axis", axis);
}

/* ---- row-independent graphs -------------------------------------------- */

/* x[B,8] -> Gemm -> Relu -> MatMul -> Softmax(-1) */
static void
g_mlp(mb_t *b)
{
    Onnx__NodeProto *n;

    init(b, "w1", 2, (int64_t[]){ 6, 8 });
    init(b, "w2", 2, (int64_t[]){ 6, 4 });
    n = mb_node(b, "Gemm", "fc1", "x,w1", "h");
    mb_attr_int(b, n, "transB", 1);
    mb_node(b, "Relu", "relu", "h", "r");
    mb_node(b, "MatMul", "fc2", "r,w2", "l");
    mb_node(b, "Softmax", "sm", "l", "y");
}

/* x[B,2,6,6] -> Conv -> BN -> MaxPool -> GAP -> Flatten(1) -> Gemm */
static void
g_cnn(mb_t *b)
{
    Onnx__NodeProto *n;
    float ones[4] = { 1, 1, 1, 1 }, zeros[4] = { 0 };

    init(b, "w", 4, (int64_t[]){ 4, 2, 3, 3 });
    mb_init_f32(b, "s", 1, (int64_t[]){ 4 }, ones);
    init(b, "bb", 1, (int64_t[]){ 4 });
    mb_init_f32(b, "m", 1, (int64_t[]){ 4 }, zeros);
    mb_init_f32(b, "v", 1, (int64_t[]){ 4 }, ones);
    init(b, "wf", 2, (int64_t[]){ 4, 3 });
    n = mb_node(b, "Conv", "conv", "x,w", "c");
    mb_attr_ints(b, n, "kernel_shape", 2, (int64_t[]){ 3, 3 });
    mb_node(b, "BatchNormalization", "bn", "c,s,bb,m,v", "n");
    n = mb_node(b, "MaxPool", "mp", "n", "p");
    mb_attr_ints(b, n, "kernel_shape", 2, (int64_t[]){ 2, 2 });
    mb_node(b, "GlobalAveragePool", "gap", "p", "q");
    mb_node(b, "Flatten", "fl", "q", "f");
    mb_node(b, "MatMul", "fc", "f,wf", "y");
}

/* The PyTorch attention export: x[B,5,8] -> qkv -> Reshape to (B, 5, 2,
 * 4) with B from Shape(x)[0] -> Transpose -> q @ k^T -> Softmax -> @ v
 * -> Transpose -> Reshape (B, 5, -1) -> LayerNormalization. */
static void
g_attention(mb_t *b)
{
    Onnx__NodeProto *n;

    init(b, "wq", 2, (int64_t[]){ 8, 8 });
    init(b, "lnw", 1, (int64_t[]){ 8 });
    ints(b, "rest", 3, (int64_t[]){ 5, 2, 4 });
    ints(b, "flat", 2, (int64_t[]){ 5, -1 });
    mb_node(b, "MatMul", "q", "x,wq", "q");
    dim_of(b, "x", 0, "bsz");
    along(b, "Concat", "shp", "bsz,rest", "shp", 0);
    mb_node(b, "Reshape", "heads", "q,shp", "h");
    n = mb_node(b, "Transpose", "t1", "h", "t");
    mb_attr_ints(b, n, "perm", 4, (int64_t[]){ 0, 2, 1, 3 });
    n = mb_node(b, "Transpose", "kt", "t", "k");
    mb_attr_ints(b, n, "perm", 4, (int64_t[]){ 0, 1, 3, 2 });
    mb_node(b, "MatMul", "qk", "t,k", "s");
    along(b, "Softmax", "att", "s", "a", -1);
    mb_node(b, "MatMul", "av", "a,t", "o");
    n = mb_node(b, "Transpose", "t2", "o", "o2");
    mb_attr_ints(b, n, "perm", 4, (int64_t[]){ 0, 2, 1, 3 });
    along(b, "Concat", "shp2", "bsz,flat", "shp2", 0);
    mb_node(b, "Reshape", "merge", "o2,shp2", "m");
    along(b, "LayerNormalization", "ln", "m,lnw", "y", -1);
}

/* torch's MultiheadAttention: (S, B, E) viewed as (S, B*H, D) with
 * B*H = Shape[1] * H, bmm over B*H, back to (S, B, E). */
static void
g_mha(mb_t *b)
{
    Onnx__NodeProto *n;

    ints(b, "s", 1, (int64_t[]){ 5 });
    ints(b, "d", 1, (int64_t[]){ 4 });
    ints(b, "e", 1, (int64_t[]){ 8 });
    ints(b, "heads", 1, (int64_t[]){ 2 });
    n = mb_node(b, "Transpose", "sbe", "x", "t");
    mb_attr_ints(b, n, "perm", 3, (int64_t[]){ 1, 0, 2 });
    dim_of(b, "t", 1, "bsz");
    mb_node(b, "Mul", "bh", "bsz,heads", "bh");
    along(b, "Concat", "shp", "s,bh,d", "shp", 0);
    mb_node(b, "Reshape", "view", "t,shp", "v");
    n = mb_node(b, "Transpose", "bsd", "v", "q");
    mb_attr_ints(b, n, "perm", 3, (int64_t[]){ 1, 0, 2 });
    n = mb_node(b, "Transpose", "kt", "q", "k");
    mb_attr_ints(b, n, "perm", 3, (int64_t[]){ 0, 2, 1 });
    mb_node(b, "MatMul", "qk", "q,k", "sc");
    along(b, "Softmax", "att", "sc", "a", -1);
    mb_node(b, "MatMul", "av", "a,q", "o");
    n = mb_node(b, "Transpose", "back", "o", "ob");
    mb_attr_ints(b, n, "perm", 3, (int64_t[]){ 1, 0, 2 });
    along(b, "Concat", "shp2", "s,bsz,e", "shp2", 0);
    mb_node(b, "Reshape", "unview", "ob,shp2", "u");
    n = mb_node(b, "Transpose", "bse", "u", "y");
    mb_attr_ints(b, n, "perm", 3, (int64_t[]){ 1, 0, 2 });
}

/* x[B,5,4] -> Reshape(-1, 4) (rows merged with the 5) -> MatMul ->
 * Reshape(-1, 5, 4); the ViT class token: expand(B, -1, -1) as PyTorch
 * writes it (Where(Equal(shape, -1), 1, shape)), concatenated on axis 1. */
static void
g_merge_expand(mb_t *b)
{
    init(b, "w", 2, (int64_t[]){ 4, 4 });
    init(b, "cls", 3, (int64_t[]){ 1, 1, 4 });
    ints(b, "tok", 2, (int64_t[]){ -1, 4 });
    ints(b, "back", 3, (int64_t[]){ -1, 5, 4 });
    ints(b, "m1", 2, (int64_t[]){ -1, -1 });
    ints(b, "ones", 3, (int64_t[]){ 1, 1, 1 });
    ints(b, "neg", 3, (int64_t[]){ -1, -1, -1 });
    mb_node(b, "Reshape", "tokens", "x,tok", "t");
    mb_node(b, "MatMul", "fc", "t,w", "f");
    mb_node(b, "Reshape", "rows", "f,back", "r");
    dim_of(b, "x", 0, "bsz");
    along(b, "Concat", "shp", "bsz,m1", "shp", 0);
    mb_node(b, "Equal", "eq", "shp,neg", "eq");
    mb_node(b, "Where", "wh", "eq,ones,shp", "es");
    mb_node(b, "Expand", "expand", "cls,es", "c");
    along(b, "Concat", "cat", "c,r", "y", 1);
}

/* ---- graphs that mix rows ---------------------------------------------- */

static void
g_mean0(mb_t *b)    /* x - x.mean(0) */
{
    Onnx__NodeProto *n = mb_node(b, "ReduceMean", "mean0", "x", "m");

    mb_attr_ints(b, n, "axes", 1, (int64_t[]){ 0 });
    mb_node(b, "Sub", "center", "x,m", "y");
}

static void
g_gram(mb_t *b)     /* x @ x.T */
{
    mb_node(b, "Transpose", "xt", "x", "t");
    mb_node(b, "MatMul", "gram", "x,t", "y");
}

static void
g_flat1(mb_t *b)    /* x.reshape(1, -1) */
{
    ints(b, "one", 2, (int64_t[]){ 1, -1 });
    mb_node(b, "Reshape", "flat1", "x,one", "y");
}

static void
g_flatten0(mb_t *b)
{
    along(b, "Flatten", "flat0", "x", "y", 0);
}

static void
g_size(mb_t *b)     /* x * x.size(0) */
{
    Onnx__NodeProto *n;

    dim_of(b, "x", 0, "bsz");
    n = mb_node(b, "Cast", "nf", "bsz", "nf");
    mb_attr_int(b, n, "to", 1);
    mb_node(b, "Mul", "scale", "x,nf", "y");
}

static void
g_softmax0(mb_t *b)
{
    along(b, "Softmax", "sm0", "x", "y", 0);
}

static void
g_cumsum0(mb_t *b)
{
    scalar(b, "ax", 0);
    mb_node(b, "CumSum", "cs0", "x,ax", "y");
}

static void
g_row0(mb_t *b)     /* x - x[0] */
{
    scalar(b, "i", 0);
    mb_node(b, "Gather", "first", "x,i", "f");
    mb_node(b, "Sub", "minus", "x,f", "y");
}

static void
g_slice0(mb_t *b)   /* x[:1] + x */
{
    ints(b, "s", 1, (int64_t[]){ 0 });
    ints(b, "e", 1, (int64_t[]){ 1 });
    ints(b, "a", 1, (int64_t[]){ 0 });
    mb_node(b, "Slice", "head", "x,s,e,a", "h");
    mb_node(b, "Add", "plus", "x,h", "y");
}

static void
g_topk0(mb_t *b)
{
    ints(b, "k", 1, (int64_t[]){ 1 });
    along(b, "TopK", "top0", "x,k", "y,i", 0);
}

static void
g_transpose(mb_t *b)    /* x.T as the output */
{
    mb_node(b, "Transpose", "xt", "x", "y");
}

static void
g_unknown(mb_t *b)      /* an op without a rule */
{
    mb_node(b, "Relu", "relu", "x", "h");
    mb_node(b, "EyeLike", "eye", "h", "y");
}

static void
g_merged_mean(mb_t *b)  /* rows merged by a Reshape, then a mean over them */
{
    Onnx__NodeProto *n;

    ints(b, "tok", 2, (int64_t[]){ -1, 2 });
    mb_node(b, "Reshape", "tokens", "x,tok", "t");
    n = mb_node(b, "ReduceMean", "tmean", "t", "y");
    mb_attr_ints(b, n, "axes", 1, (int64_t[]){ 0 });
}

static void
g_concat0(mb_t *b)
{
    along(b, "Concat", "cat0", "x,x", "y", 0);
}

typedef struct {
    const char *name;
    void (*build)(mb_t *b);
    int ndim;
    int64_t dims[4];        /* the input's, past the batch */
    const char *node;       /* NULL: rows independent */
    const char *op;
} rows_case_t;

static const rows_case_t cases[] = {
    { "mlp", g_mlp, 2, { 8 }, NULL, NULL },
    { "cnn", g_cnn, 4, { 2, 6, 6 }, NULL, NULL },
    { "attention", g_attention, 3, { 5, 8 }, NULL, NULL },
    { "torch mha", g_mha, 3, { 5, 8 }, NULL, NULL },
    { "merged rows, class token", g_merge_expand, 3, { 5, 4 }, NULL, NULL },
    { "x - x.mean(0)", g_mean0, 2, { 4 }, "mean0", "ReduceMean" },
    { "x @ x.T", g_gram, 2, { 4 }, "gram", "MatMul" },
    { "x.reshape(1, -1)", g_flat1, 2, { 4 }, "flat1", "Reshape" },
    { "Flatten axis 0", g_flatten0, 3, { 2, 2 }, "flat0", "Flatten" },
    { "x * x.size(0)", g_size, 2, { 4 }, "scale", "Mul" },
    { "softmax over axis 0", g_softmax0, 2, { 4 }, "sm0", "Softmax" },
    { "cumsum over axis 0", g_cumsum0, 2, { 4 }, "cs0", "CumSum" },
    { "x - x[0]", g_row0, 2, { 4 }, "first", "Gather" },
    { "x[:1] + x", g_slice0, 2, { 4 }, "head", "Slice" },
    { "topk over axis 0", g_topk0, 2, { 4 }, "top0", "TopK" },
    { "x.T out", g_transpose, 2, { 4 }, "xt", "Transpose" },
    { "an op without a rule", g_unknown, 2, { 4 }, "eye", "EyeLike" },
    { "merged rows averaged", g_merged_mean, 2, { 4 }, "tmean",
      "ReduceMean" },
    { "concat on axis 0", g_concat0, 2, { 4 }, "cat0", "Concat" },
};

static ss_graph_t *
load(const rows_case_t *c)
{
    mb_t *b = mb_new(17);
    int64_t dims[4] = { -1 };
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    memcpy(dims + 1, c->dims, (size_t)(c->ndim - 1) * sizeof(int64_t));
    mb_input(b, "x", SS_DTYPE_F32, c->ndim, dims);
    c->build(b);
    mb_output(b, "y", SS_DTYPE_F32, -1, NULL);
    if (mb_load(b, &g, &err) < 0)
        tap_diag("%s: load: %s", c->name, err.msg);
    return g;
}

/* Runs g on x (rows rows) into a new buffer; its element count in *n. */
static float *
run(const ss_graph_t *g, const rows_case_t *c, int64_t rows, const float *x,
    int64_t *n)
{
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = c->ndim };
    ss_tensor_t out = { 0 };
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    ss_err_t err = { 0 };
    float *y = NULL;

    in.dims[0] = rows;
    memcpy(in.dims + 1, c->dims, (size_t)(c->ndim - 1) * sizeof(int64_t));
    in.data = (void *)x;
    if (ss_exec_ctx_new(1, &ctx, &err) < 0
        || ss_plan_new(g, &in, &p, &err) < 0) {
        tap_diag("%s: compile: %s", c->name, err.msg);
        goto done;
    }
    out.dtype = ss_plan_output(p, 0)->dtype;
    out.ndim = ss_plan_output(p, 0)->ndim;
    memcpy(out.dims, ss_plan_output(p, 0)->dims, sizeof(out.dims));
    *n = ss_tensor_numel(&out);
    y = calloc((size_t)*n + 1, sizeof(float));
    out.data = y;
    if (ss_plan_run(p, ctx, &in, &out, &err) < 0) {
        tap_diag("%s: run: %s", c->name, err.msg);
        free(y);
        y = NULL;
    }
done:
    ss_plan_free(p);
    ss_exec_ctx_free(ctx);
    return y;
}

/* Each row of a 3-row run is that row's run alone. */
static void
check_rows(const ss_graph_t *g, const rows_case_t *c)
{
    int64_t per = 1, n = 0, n1 = 0;
    float *x, *y, *y1;
    double big = 0, worst = 0;

    for (int i = 0; i < c->ndim - 1; i++)
        per *= c->dims[i];
    x = malloc((size_t)(ROWS * per) * sizeof(float));
    for (int64_t i = 0; i < ROWS * per; i++)
        x[i] = mb_rand(&seed) * 2.0f;
    y = run(g, c, ROWS, x, &n);
    for (int r = 0; y != NULL && r < ROWS; r++) {
        if ((y1 = run(g, c, 1, x + r * per, &n1)) == NULL
            || n1 * ROWS != n) {
            worst = INFINITY;
            free(y1);
            break;
        }
        for (int64_t i = 0; i < n1; i++) {
            double d = fabs((double)y[r * n1 + i] - y1[i]);

            big = fmax(big, fabs((double)y1[i]));
            worst = fmax(worst, d);
        }
        free(y1);
    }
    ok(y != NULL && worst <= 1e-5 * fmax(big, 1.0),
       "%s: each of %d batched rows is its row run alone (max diff %.2g, "
       "max |y| %.2g)", c->name, ROWS, worst, big);
    free(x);
    free(y);
}

int
main(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const rows_case_t *c = &cases[i];
        ss_graph_t *g = load(c);
        ss_rows_t r;
        ss_err_t err = { 0 };

        if (!ok(g != NULL && ss_graph_rows(g, &r, &err) == 0, "%s: analysed",
                c->name)) {
            ss_graph_free(g);
            continue;
        }
        if (c->node == NULL) {
            ok(r.independent, "%s: rows independent (%s %s: %s)", c->name,
               r.op, r.node, r.why);
            check_rows(g, c);
        } else {
            ok(!r.independent && strcmp(r.node, c->node) == 0
               && strcmp(r.op, c->op) == 0, "%s: mixes rows at %s '%s' "
               "(want %s '%s'): %s", c->name, r.op, r.node, c->op, c->node,
               r.why);
        }
        ss_graph_free(g);
    }
    return tap_done();
}
