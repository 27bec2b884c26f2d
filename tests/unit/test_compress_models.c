/* SPDX-License-Identifier: Apache-2.0 */
/*
 * compress/ on the CNN and the transformer: structured conv pruning and
 * PTQ with batch-norm folding on the CNN; low-rank and attention-head
 * pruning on the transformer (stated gates on the 500 held-out digits).
 */

#include <math.h>
#include <stdio.h>

#include "tests/unit/onnx_build.h"
#include "tests/unit/test_compress_util.h"

static void
test_prune_cnn(void)
{
    ss_graph_t *g = tc_model_load("cnn");
    tc_data_t val, cal;
    ss_compress_result_t res;
    ss_method_t m;
    ss_gate_t gate = { -1, 0.9, -1 };
    ss_err_t err = { 0 };
    int rc;

    if (g == NULL || tc_data_load(&val, "cnn", "heldout", 0) < 0
        || tc_data_load(&cal, "cnn", "calib", 0) < 0) {
        ok(0, "cnn fixture loads");
        ss_graph_free(g);
        return;
    }
    /* Activation scores with the removed channels' means folded into the
     * next conv's bias: weight norms alone lose too much here (0.80). */
    ss_method_default(&m, SS_METHOD_PRUNE);
    m.u.prune.kind = SS_PRUNE_STRUCTURED;
    m.u.prune.sparsity = 0.3;
    m.u.prune.score = SS_SCORE_ACTIVATION;
    rc = run1(g, &m, 1, &cal.ds, &val.ds, &gate, &res, &err);
    is_int(rc, 0, "structured 30%% on the CNN: %s", err.msg);
    report("prune structured 30% cnn", &res);
    ok(res.passed, "cnn structured 30%%: agreement >= 0.9");
    if (res.variant != NULL) {
        is_int(weight_dim(res.variant, "/block1/conv1/Conv", 0), 11,
               "block1.conv1 keeps 11 of 16 channels");
        is_int(weight_dim(res.variant, "/block1/conv2/Conv", 1), 11,
               "block1.conv2 reads 11 channels");
        is_int(weight_dim(res.variant, "/block1/conv2/Conv", 0), 16,
               "block1.conv2 feeds a residual: all 16 kept");
        is_int(weight_dim(res.variant, "/block2/conv1/Conv", 0), 22,
               "block2.conv1 keeps 22 of 32 channels");
        is_int(weight_dim(res.variant, "/stem/Conv", 0), 16,
               "the stem feeds a residual: all 16 kept");
    }
    ss_compress_result_clear(&res);

    /* PTQ folds the six BatchNormalizations into their convs first. */
    ss_method_default(&m, SS_METHOD_PTQ);
    gate.min_agreement = -1;
    gate.max_accuracy_drop = 0.01;
    rc = run1(g, &m, 1, &cal.ds, &val.ds, &gate, &res, &err);
    is_int(rc, 0, "ptq on the CNN: %s", err.msg);
    report("ptq cnn", &res);
    ok(res.passed, "cnn ptq: accuracy within 1%%");
    is_int((int)json_integer_value(json_object_get(json_array_get(
               json_object_get(res.details, "methods"), 0),
               "batchnorm_folded")), 6, "cnn ptq: 6 batch norms folded");
    if (res.variant != NULL)
        is_int(count_op(res.variant, "BatchNormalization"), 0,
               "cnn ptq: no BatchNormalization left");
    ss_compress_result_clear(&res);
    tc_data_free(&cal);
    tc_data_free(&val);
    ss_graph_free(g);
}

/* The transformer with one attention head per layer that writes nothing
 * (its rows of the output projection zero) and 16 dead feed-forward
 * neurons per layer: structured pruning at 25% removes exactly those, so
 * the outputs must not move. */
static void
test_prune_heads_exact(const ss_graph_t *src, tc_data_t *val)
{
    ss_graph_t *g = NULL;
    ss_compress_result_t res;
    ss_method_t m;
    ss_err_t err = { 0 };
    char name[64];
    int l, r, k, rc, heads = 0;

    if (ss_graph_clone(src, &g, &err) < 0) {
        ok(0, "clone: %s", err.msg);
        return;
    }
    for (l = 0; l < 2; l++) {
        ss_tensor_t *wo, *w1, *b1;

        snprintf(name, sizeof(name), "/layers.%d/attn/out/MatMul", l);
        wo = const_in(g, name, 1);
        snprintf(name, sizeof(name), "/layers.%d/ff1/MatMul", l);
        w1 = const_in(g, name, 1);
        snprintf(name, sizeof(name), "/layers.%d/ff1/Add", l);
        b1 = const_in(g, name, 0);
        if (wo == NULL || w1 == NULL || b1 == NULL) {
            ok(0, "transformer layout as expected");
            ss_graph_free(g);
            return;
        }
        /* head 2 (of 4, dh 8): rows 16..23 of W_out [32, 32] */
        memset((float *)wo->data + 16 * 32, 0, sizeof(float) * 8 * 32);
        for (k = 0; k < 16; k++) {      /* ff1 columns 1, 5, 9, ... */
            for (r = 0; r < 32; r++)
                ((float *)w1->data)[r * 64 + 4 * k + 1] = 0.0f;
            ((float *)b1->data)[4 * k + 1] = 0.0f;
        }
    }
    ss_method_default(&m, SS_METHOD_PRUNE);
    m.u.prune.kind = SS_PRUNE_STRUCTURED;
    m.u.prune.sparsity = 0.25;
    rc = run1(g, &m, 1, NULL, &val->ds, &no_gate, &res, &err);
    is_int(rc, 0, "structured 25%% on the transformer: %s", err.msg);
    if (res.variant != NULL) {
        json_t *ls = json_object_get(json_array_get(
            json_object_get(res.details, "methods"), 0), "pruned");
        size_t i;

        for (i = 0; i < json_array_size(ls); i++)
            heads += json_object_get(json_array_get(ls, i), "heads") != NULL
                     && json_integer_value(json_object_get(
                            json_array_get(ls, i), "kept")) == 3;
        is_int(heads, 2, "one head of four removed in both layers");
        is_int(weight_dim(res.variant, "/layers.0/attn/qkv/MatMul", 1), 72,
               "qkv projection 32x96 -> 32x72");
        is_int(weight_dim(res.variant, "/layers.1/attn/out/MatMul", 0), 24,
               "output projection reads 24");
        is_int(weight_dim(res.variant, "/layers.0/ff1/MatMul", 1), 48,
               "ff1 keeps 48 of 64 neurons");
        ok(res.variant_eval.agreement == 1.0
           && res.variant_eval.max_relative_error < 1e-5,
           "removing silent heads and dead neurons changes nothing (rel "
           "err %g)", res.variant_eval.max_relative_error);
        check_roundtrip(res.variant, val, "heads");
    }
    ss_compress_result_clear(&res);
    ss_graph_free(g);
}

static uint32_t cnn_seed = 5;

static float
cnn_rand(void)
{
    return mb_rand(&cnn_seed);
}

/* n random floats in [-s, s); channels dead % 2 == odd of a [C, ...]
 * conv weight (or its bias) are dead: 0 (-1 for a bias: ReLU gives 0). */
static float *
cnn_param(int64_t n, int64_t C, float s, int dead, bool bias)
{
    float *v = malloc((size_t)n * sizeof(float));
    int64_t i;

    for (i = 0; v != NULL && i < n; i++) {
        int64_t c = i / (n / C);

        v[i] = dead >= 0 && c % 2 == dead ? (bias ? -1.0f : 0.0f)
                                          : cnn_rand() * s;
    }
    return v;
}

/*
 * x[N,1,8,8] -> c1 1->8 (+b) -> Relu -> MaxPool 2 -> c2 8->8 (+b) -> Relu
 *   -> Flatten [N,128] -> fc 128->10                       (output y)
 * c1's odd and c2's even channels are dead (zero weights, bias -1), and
 *   x -> c3 1->8 (+b) -> Relu -> ReduceMean(H, W) [N,8] -> fc2 8->10 (z)
 * with c3's odd channels dead.  Structured 50% must remove exactly the
 * dead channels through the MaxPool, the Flatten (16 columns of fc per
 * channel) and the spatial mean, leaving the outputs as they were.
 */
static ss_graph_t *
dead_cnn(void)
{
    static const struct { const char *n; int64_t d[4]; int nd, dead;
                           bool bias; float s; } p[] = {
        { "w1", { 8, 1, 3, 3 }, 4, 1, false, 0.6f },
        { "b1", { 8 }, 1, 1, true, 0.3f },
        { "w2", { 8, 8, 3, 3 }, 4, 0, false, 0.3f },
        { "b2", { 8 }, 1, 0, true, 0.3f },
        { "wf", { 10, 128 }, 2, -1, false, 0.2f },
        { "bf", { 10 }, 1, -1, false, 0.1f },
        { "w3", { 8, 1, 3, 3 }, 4, 1, false, 0.6f },
        { "b3", { 8 }, 1, 1, true, 0.3f },
        { "wg", { 10, 8 }, 2, -1, false, 0.5f },
    };
    const int64_t k2[2] = { 2, 2 }, pads[4] = { 1, 1, 1, 1 }, hw[2] = { 2, 3 };
    mb_t *b = mb_new(13);
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    size_t i;
    ss_err_t err = { 0 };

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 1, 8, 8 });
    for (i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
        int64_t numel = 1;
        float *v;
        int d;

        for (d = 0; d < p[i].nd; d++)
            numel *= p[i].d[d];
        v = cnn_param(numel, p[i].d[0], p[i].s, p[i].dead, p[i].bias);
        mb_init_f32(b, p[i].n, p[i].nd, p[i].d, v);
        free(v);
    }
    n = mb_node(b, "Conv", "c1", "x,w1,b1", "c1");
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "Relu", "r1", "c1", "r1");
    n = mb_node(b, "MaxPool", "mp", "r1", "p1");
    mb_attr_ints(b, n, "kernel_shape", 2, k2);
    mb_attr_ints(b, n, "strides", 2, k2);
    n = mb_node(b, "Conv", "c2", "p1,w2,b2", "c2");
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "Relu", "r2", "c2", "r2");
    mb_node(b, "Flatten", "fl", "r2", "f");
    n = mb_node(b, "Gemm", "fc", "f,wf,bf", "y");
    mb_attr_int(b, n, "transB", 1);
    n = mb_node(b, "Conv", "c3", "x,w3,b3", "c3");
    mb_attr_ints(b, n, "pads", 4, pads);
    mb_node(b, "Relu", "r3", "c3", "r3");
    n = mb_node(b, "ReduceMean", "gap", "r3", "m3");
    mb_attr_ints(b, n, "axes", 2, hw);
    mb_attr_int(b, n, "keepdims", 0);
    n = mb_node(b, "Gemm", "fc2", "m3,wg", "z");
    mb_attr_int(b, n, "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    mb_output(b, "z", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("dead_cnn: %s", err.msg);
    return g;
}

static void
test_prune_cnn_flatten(void)
{
    ss_graph_t *g = dead_cnn();
    ss_tensor_t x = { .dtype = SS_DTYPE_F32, .ndim = 4,
                      .dims = { 64, 1, 8, 8 } };
    ss_dataset_t ds = { .n_inputs = 1, .inputs = &x, .rows = 64 };
    ss_compress_result_t res;
    ss_method_t m;
    ss_err_t err = { 0 };
    int64_t i;
    int sc, rc;

    if (g == NULL || (x.data = malloc(64 * 64 * sizeof(float))) == NULL) {
        ok(0, "the dead-channel CNN builds");
        ss_graph_free(g);
        return;
    }
    for (i = 0; i < 64 * 64; i++)
        ((float *)x.data)[i] = cnn_rand() * 2.0f;
    /* Activation scores need the calibration data; weight norms do not. */
    for (sc = 0; sc < 2; sc++) {
        ss_method_default(&m, SS_METHOD_PRUNE);
        m.u.prune.kind = SS_PRUNE_STRUCTURED;
        m.u.prune.sparsity = 0.5;
        m.u.prune.score = sc ? SS_SCORE_ACTIVATION : SS_SCORE_L2;
        rc = run1(g, &m, 1, sc ? &ds : NULL, &ds, &no_gate, &res, &err);
        is_int(rc, 0, "structured 50%% through pools and Flatten: %s",
               err.msg);
        if (res.variant != NULL) {
            is_int(weight_dim(res.variant, "c1", 0), 4, "c1 keeps 4 of 8");
            is_int(weight_dim(res.variant, "c2", 1), 4,
                   "c2 reads 4 channels through the MaxPool");
            is_int(weight_dim(res.variant, "c2", 0), 4, "c2 keeps 4 of 8");
            is_int(weight_dim(res.variant, "fc", 1), 64,
                   "fc reads 4 channels x 16 through the Flatten");
            is_int(weight_dim(res.variant, "c3", 0), 4, "c3 keeps 4 of 8");
            is_int(weight_dim(res.variant, "fc2", 1), 4,
                   "fc2 reads 4 channels through the spatial mean");
            ok(res.variant_eval.agreement == 1.0
               && res.variant_eval.max_relative_error < 1e-5,
               "removing the dead channels changes nothing (%s scores, "
               "rel err %g)", sc ? "activation" : "weight",
               res.variant_eval.max_relative_error);
        }
        ss_compress_result_clear(&res);
    }
    free(x.data);
    ss_graph_free(g);
}

static void
test_lowrank(void)
{
    ss_graph_t *g = tc_model_load("transformer");
    tc_data_t val, cal;
    ss_compress_result_t res;
    ss_method_t m;
    ss_gate_t gate = { -1, 0.85, -1 };
    ss_err_t err = { 0 };
    int rc;

    if (g == NULL || tc_data_load(&val, "transformer", "heldout", 0) < 0) {
        ok(0, "transformer fixture loads");
        ss_graph_free(g);
        return;
    }
    ss_method_default(&m, SS_METHOD_LOWRANK);
    m.u.lowrank.energy = 0.9;
    rc = run1(g, &m, 1, NULL, &val.ds, &gate, &res, &err);
    is_int(rc, 0, "low-rank 0.9 on the transformer: %s", err.msg);
    report("lowrank 0.9 transformer", &res);
    ok(res.passed, "low-rank: agreement >= 0.85");
    ok(json_integer_value(json_object_get(json_array_get(
           json_object_get(res.details, "methods"), 0), "factored")) >= 1,
       "low-rank: at least one layer factored");
    ok(res.variant_eval.weight_bytes < res.source.weight_bytes,
       "low-rank: smaller (%zu vs %zu)", res.variant_eval.weight_bytes,
       res.source.weight_bytes);
    if (res.variant != NULL)
        check_roundtrip(res.variant, &val, "lowrank");
    ss_compress_result_clear(&res);
    test_prune_heads_exact(g, &val);

    /* Structured 30% with calibration data: 45 of 64 neurons and 3 of 4
     * heads (ranked by measured damage) per layer. */
    if (tc_data_load(&cal, "transformer", "calib", 0) == 0) {
        ss_method_default(&m, SS_METHOD_PRUNE);
        m.u.prune.kind = SS_PRUNE_STRUCTURED;
        m.u.prune.sparsity = 0.3;
        m.u.prune.score = SS_SCORE_ACTIVATION;
        gate.min_agreement = 0.8;
        rc = run1(g, &m, 1, &cal.ds, &val.ds, &gate, &res, &err);
        is_int(rc, 0, "structured 30%% on the transformer: %s", err.msg);
        report("prune structured 30% transformer", &res);
        ok(res.passed, "transformer structured 30%%: agreement >= 0.8");
        ok(res.variant_eval.weight_bytes < res.source.weight_bytes * 0.8,
           "transformer structured 30%%: smaller (%zu vs %zu)",
           res.variant_eval.weight_bytes, res.source.weight_bytes);
        ss_compress_result_clear(&res);
        tc_data_free(&cal);
    } else {
        ok(0, "transformer calibration data loads");
    }
    tc_data_free(&val);
    ss_graph_free(g);
}

int
main(void)
{
    test_prune_cnn();
    test_prune_cnn_flatten();
    test_lowrank();
    return tap_done();
}
