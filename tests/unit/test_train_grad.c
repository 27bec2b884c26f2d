/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every gradient rule against central finite differences.
 *
 * Each case is a small graph built in C whose operands are all
 * initializers (so all are parameters and every input gradient of the
 * rule is checked through the parameter gradient), on random shapes and
 * values from a fixed seed, with an MSE loss against a random target.
 * The analytic gradient (the trainer's backward, f32) is compared with
 * (L(w + h) - L(w - h)) / 2h for every parameter element, the loss
 * evaluated by the trainer's forward and accumulated in double.  The
 * tolerance, max |analytic - numeric| <= 2e-2 * max |numeric| + 1e-4,
 * leaves room for f32 rounding in the forward (about 1e-7 / h relative)
 * and fails on any wrong rule (their errors are of the gradient's size).
 * A last set of cases checks that gradients accumulate over several uses
 * of a value, that frozen initializers get none, and that an op without
 * a rule is refused by name.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/io/npy.h"
#include "engine/ir/edit.h"
#include "tests/tap.h"
#include "tests/unit/train_gb.h"
#include "tests/unit/train_grad.h"

SS_TAP_COUNTERS;

/* BatchNormalization over x [4, 3, 2, 2]: scale, bias and running
 * statistics are parameters too. */
static ss_graph_t *
bn_graph(void)
{
    int64_t d[4] = { 4, 3, 2, 2 }, c = 3;
    int in[5];
    gb_t b;

    gb_init(&b, 15);
    in[0] = gb_param(&b, "x", 4, d, -2, 2);
    in[1] = gb_param(&b, "g", 1, &c, 0.5, 1.5);
    in[2] = gb_param(&b, "b", 1, &c, -1, 1);
    in[3] = gb_param(&b, "rm", 1, &c, -0.5, 0.5);
    in[4] = gb_param(&b, "rv", 1, &c, 0.5, 1.5);
    return gb_done(&b, gb_node(&b, "BatchNormalization", 5, in));
}

/* ---- cases ------------------------------------------------------------------ */

void
binary_cases(void)
{
    static const struct { const char *op; int64_t a[3], b[3]; int na, nb;
                          double lo, hi; } c[] = {
        { "Add", { 3, 4 }, { 4 }, 2, 1, -1, 1 },
        { "Add", { 2, 3, 4 }, { 3, 1 }, 3, 2, -1, 1 },
        { "Sub", { 3, 4 }, { 3, 1 }, 2, 2, -1, 1 },
        { "Sub", { 4 }, { 3, 4 }, 1, 2, -1, 1 },
        { "Mul", { 2, 3, 4 }, { 3, 1 }, 3, 2, -1, 1 },
        { "Mul", { 3, 4 }, { 3, 4 }, 2, 2, -1, 1 },
        { "Div", { 3, 4 }, { 4 }, 2, 1, 0.5, 1.5 },
        { "Div", { 1, 4 }, { 3, 4 }, 2, 2, 0.5, 1.5 },
        { "Pow", { 3, 4 }, { 3, 4 }, 2, 2, 0.5, 1.5 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int in[2];
        char nm[64];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "a", c[i].na, c[i].a, c[i].lo, c[i].hi);
        in[1] = gb_param(&b, "b", c[i].nb, c[i].b, c[i].lo, c[i].hi);
        snprintf(nm, sizeof(nm), "%s [%dd] by [%dd]", c[i].op, c[i].na,
                 c[i].nb);
        check(nm, gb_done(&b, gb_node(&b, c[i].op, 2, in)), NULL);
    }
    {   /* Pow by a constant exponent (the decomposed LayerNorm's x^2) */
        gb_t b;
        int64_t d[2] = { 3, 5 };
        int in[2];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "a", 2, d, -1, 1);
        in[1] = gb_scalar(&b, "two", 2.0f);
        check("Pow by a scalar constant",
              gb_done(&b, gb_node(&b, "Pow", 2, in)), NULL);
    }
}

void
unary_cases(void)
{
    static const struct { const char *op; double lo, hi; } c[] = {
        { "Relu", -1, 1 }, { "LeakyRelu", -1, 1 }, { "Erf", -2, 2 },
        { "Sqrt", 0.5, 2 }, { "Tanh", -2, 2 }, { "Sigmoid", -3, 3 },
        { "Exp", -1, 1 }, { "Log", 0.5, 2 }, { "Neg", -1, 1 },
        { "Reciprocal", 0.5, 2 }, { "Abs", -1, 1 }, { "Softplus", -3, 3 },
        { "Identity", -1, 1 }, { "Dropout", -1, 1 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int64_t d[2] = { 3, 5 };
        int in;

        gb_init(&b, 17);
        in = gb_param(&b, "x", 2, d, c[i].lo, c[i].hi);
        if (strcmp(c[i].op, "LeakyRelu") == 0)
            attr_f(&b, "alpha", 0.1f);
        check(c[i].op, gb_done(&b, gb_node(&b, c[i].op, 1, &in)), NULL);
    }
    for (int tanh = 0; tanh < 2; tanh++) {
        gb_t b;
        int64_t d[2] = { 4, 6 };
        int in;
        ss_attr_t *a;

        gb_init(&b, 20);
        in = gb_param(&b, "x", 2, d, -3, 3);
        if (tanh) {
            a = &b.attrs[b.n_attrs++];
            memset(a, 0, sizeof(*a));
            a->name = (char *)"approximate";
            a->type = SS_ATTR_STRING;
            a->s = (char *)"tanh";
        }
        check(tanh ? "Gelu tanh" : "Gelu",
              gb_done(&b, gb_node(&b, "Gelu", 1, &in)), NULL);
    }
}

void
gemm_cases(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int full_c = 0; full_c < 2; full_c++) {
                int64_t M = 3, K = 5, N = 4;
                int64_t ad[2] = { ta ? K : M, ta ? M : K };
                int64_t bd[2] = { tb ? N : K, tb ? K : N };
                int64_t cd[2] = { M, N };
                gb_t b;
                int in[3];
                char nm[64];

                gb_init(&b, 17);
                in[0] = gb_param(&b, "a", 2, ad, -1, 1);
                in[1] = gb_param(&b, "b", 2, bd, -1, 1);
                in[2] = full_c ? gb_param(&b, "c", 2, cd, -1, 1)
                               : gb_param(&b, "c", 1, cd + 1, -1, 1);
                attr_i(&b, "transA", ta);
                attr_i(&b, "transB", tb);
                snprintf(nm, sizeof(nm), "Gemm transA=%d transB=%d C %s",
                         ta, tb, full_c ? "[M,N]" : "[N]");
                check(nm, gb_done(&b, gb_node(&b, "Gemm", 3, in)), NULL);
            }
}

void
matmul_cases(void)
{
    static const struct { int64_t a[4], b[4]; int na, nb; } c[] = {
        { { 3, 4 }, { 4, 5 }, 2, 2 },
        { { 2, 3, 4 }, { 4, 5 }, 3, 2 },
        { { 2, 3, 4 }, { 2, 4, 5 }, 3, 3 },
        { { 2, 2, 3, 4 }, { 2, 2, 4, 5 }, 4, 4 },
        { { 2, 2, 3, 4 }, { 1, 2, 4, 5 }, 4, 4 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int in[2];
        char nm[64];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "a", c[i].na, c[i].a, -1, 1);
        in[1] = gb_param(&b, "b", c[i].nb, c[i].b, -1, 1);
        snprintf(nm, sizeof(nm), "MatMul %dd x %dd (case %zu)", c[i].na,
                 c[i].nb, i);
        check(nm, gb_done(&b, gb_node(&b, "MatMul", 2, in)), NULL);
    }
}

void
norm_cases(void)
{
    for (int k = 0; k < 4; k++) {
        gb_t b;
        int64_t d[3] = { 2, 3, 4 };
        int in;
        const char *op = k == 3 ? "LogSoftmax" : "Softmax";
        char nm[64];

        gb_init(&b, k == 2 ? 11 : 17);
        in = gb_param(&b, "x", 3, d, -2, 2);
        if (k == 1)
            attr_i(&b, "axis", 1);
        snprintf(nm, sizeof(nm), "%s %s", op,
                 k == 1 ? "axis 1" : k == 2 ? "opset 11 (flattening)"
                                            : "axis -1");
        check(nm, gb_done(&b, gb_node(&b, op, 1, &in)), NULL);
    }
    {
        gb_t b;
        int64_t d[3] = { 2, 3, 8 };
        int in[3];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -2, 2);
        in[1] = gb_param(&b, "g", 1, d + 2, 0.5, 1.5);
        in[2] = gb_param(&b, "b", 1, d + 2, -1, 1);
        attr_f(&b, "epsilon", 1e-5f);
        check("LayerNormalization",
              gb_done(&b, gb_node(&b, "LayerNormalization", 3, in)), NULL);
    }
    for (int frozen = 0; frozen < 2; frozen++) {
        ss_train_opts_t o;

        ss_train_opts_default(&o);
        o.bn = frozen ? SS_BN_FROZEN : SS_BN_BATCH;
        check(frozen ? "BatchNormalization (frozen statistics)"
                     : "BatchNormalization (batch statistics)",
              bn_graph(), &o);
    }
}

void
conv_cases(void)
{
    static const struct { int64_t x[4], w[4]; int64_t g, s, p, d; int bias;
                        } c[] = {
        { { 2, 3, 5, 5 }, { 4, 3, 3, 3 }, 1, 1, 1, 1, 1 },
        { { 2, 3, 5, 5 }, { 4, 3, 3, 3 }, 1, 2, 0, 1, 0 },
        { { 2, 4, 5, 5 }, { 4, 2, 3, 3 }, 2, 1, 1, 1, 1 },
        { { 1, 2, 6, 6 }, { 3, 2, 3, 3 }, 1, 1, 2, 2, 1 },
        { { 2, 3, 4, 4 }, { 5, 3, 1, 1 }, 1, 2, 0, 1, 0 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int in[3];
        int64_t s2[2] = { c[i].s, c[i].s }, d2[2] = { c[i].d, c[i].d };
        int64_t p4[4] = { c[i].p, c[i].p, c[i].p, c[i].p };
        char nm[80];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 4, c[i].x, -1, 1);
        in[1] = gb_param(&b, "w", 4, c[i].w, -1, 1);
        in[2] = c[i].bias ? gb_param(&b, "bias", 1, c[i].w, -1, 1) : -1;
        attr_i(&b, "group", c[i].g);
        attr_ints(&b, "strides", 2, s2);
        attr_ints(&b, "pads", 4, p4);
        attr_ints(&b, "dilations", 2, d2);
        snprintf(nm, sizeof(nm), "Conv group %lld stride %lld pad %lld "
                 "dilation %lld%s", (long long)c[i].g, (long long)c[i].s,
                 (long long)c[i].p, (long long)c[i].d,
                 c[i].bias ? " bias" : "");
        check(nm, gb_done(&b, gb_node(&b, "Conv", c[i].bias ? 3 : 2, in)),
              NULL);
    }
}

void
pool_cases(void)
{
    static const struct { const char *op; int64_t k, s, p; int incl; } c[] = {
        { "MaxPool", 2, 2, 0, 0 }, { "MaxPool", 3, 1, 1, 0 },
        { "AveragePool", 2, 2, 0, 0 }, { "AveragePool", 3, 1, 1, 0 },
        { "AveragePool", 3, 1, 1, 1 }, { "GlobalAveragePool", 0, 0, 0, 0 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int64_t d[4] = { 2, 3, 4, 4 };
        int64_t k2[2] = { c[i].k, c[i].k }, s2[2] = { c[i].s, c[i].s };
        int64_t p4[4] = { c[i].p, c[i].p, c[i].p, c[i].p };
        int in;
        char nm[80];

        gb_init(&b, 17);
        in = gb_spread(&b, "x", 4, d);
        if (c[i].k) {
            attr_ints(&b, "kernel_shape", 2, k2);
            attr_ints(&b, "strides", 2, s2);
            attr_ints(&b, "pads", 4, p4);
            if (c[i].incl)
                attr_i(&b, "count_include_pad", 1);
        }
        snprintf(nm, sizeof(nm), "%s kernel %lld stride %lld pad %lld%s",
                 c[i].op, (long long)c[i].k, (long long)c[i].s,
                 (long long)c[i].p, c[i].incl ? " count_include_pad" : "");
        check(nm, gb_done(&b, gb_node(&b, c[i].op, 1, &in)), NULL);
    }
}

/* Conv(c) -> BatchNorm -> Relu -> Add(residual: the conv's output) ->
 * AveragePool 2x2 on a [2, ci, 6, 6] parameter: the convolution keeps
 * its output blocked (c % 16 == 0) or NHWC, and so does the rest. */
static ss_graph_t *
chain_graph(int64_t ci, int64_t c)
{
    gb_t b;
    int64_t xd[4] = { 2, ci, 6, 6 }, wd[4] = { c, ci, 3, 3 };
    int64_t k2[2] = { 2, 2 }, p4[4] = { 1, 1, 1, 1 };
    int in[5], y, r;

    gb_init(&b, 23);
    in[0] = gb_param(&b, "x", 4, xd, -1, 1);
    in[1] = gb_param(&b, "w", 4, wd, -0.5, 0.5);
    attr_ints(&b, "pads", 4, p4);
    y = gb_node(&b, "Conv", 2, in);
    in[0] = y;
    in[1] = gb_param(&b, "g", 1, &c, 0.5, 1.5);
    in[2] = gb_param(&b, "b", 1, &c, -1, 1);
    in[3] = gb_param(&b, "rm", 1, &c, -0.5, 0.5);
    in[4] = gb_param(&b, "rv", 1, &c, 0.5, 1.5);
    r = gb_node(&b, "BatchNormalization", 5, in);
    r = gb_node(&b, "Relu", 1, &r);
    r = gb_node(&b, "Add", 2, (int[]){ r, y });
    attr_ints(&b, "kernel_shape", 2, k2);
    attr_ints(&b, "strides", 2, k2);
    r = gb_node(&b, "AveragePool", 1, &r);
    return gb_done(&b, r);
}

/* BatchNorm, Relu and pooling on oneDNN's primitives (opts.nn DNN):
 * on NCHW parameters, and after a 16-channel convolution, whose output
 * the trainer keeps blocked (nChw16c), so the primitives run there. */
void
nn_dnn_cases(void)
{
    static const struct { const char *op; int64_t k, s, p; int incl; } c[] = {
        { "MaxPool", 2, 2, 0, 0 }, { "MaxPool", 3, 1, 1, 0 },
        { "MaxPool", 2, 2, 0, 1 },  /* 5x5: the last row and column unread */
        { "AveragePool", 2, 2, 0, 0 }, { "AveragePool", 3, 1, 1, 0 },
        { "AveragePool", 3, 1, 1, 1 }, { "GlobalAveragePool", 0, 0, 0, 0 },
    };
    ss_train_opts_t o;
    char nm[96];

    ss_train_opts_default(&o);
    o.bn = SS_BN_BATCH;
    o.nn = SS_TRAIN_NN_DNN;
    check("oneDNN BatchNormalization (batch statistics)", bn_graph(), &o);
    ok(nn_dnn_steps == 2, "oneDNN BatchNormalization: forward and "
       "backward on oneDNN (%d steps)", nn_dnn_steps);
    {
        gb_t b;
        int64_t d[4] = { 2, 3, 4, 4 };
        int in;

        gb_init(&b, 17);
        in = gb_param(&b, "x", 4, d, -1, 1);
        check("oneDNN Relu", gb_done(&b, gb_node(&b, "Relu", 1, &in)), &o);
        ok(nn_dnn_steps == 2, "oneDNN Relu: forward and backward on oneDNN "
           "(%d steps)", nn_dnn_steps);
    }
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int64_t d[4] = { 2, 3, 4, 4 };
        int64_t k2[2] = { c[i].k, c[i].k }, s2[2] = { c[i].s, c[i].s };
        int64_t p4[4] = { c[i].p, c[i].p, c[i].p, c[i].p };
        int max = strcmp(c[i].op, "MaxPool") == 0, in;

        if (max && c[i].incl)   /* the odd-sized case */
            d[2] = d[3] = 5;
        gb_init(&b, 17);
        in = gb_spread(&b, "x", 4, d);
        if (c[i].k) {
            attr_ints(&b, "kernel_shape", 2, k2);
            attr_ints(&b, "strides", 2, s2);
            attr_ints(&b, "pads", 4, p4);
            if (c[i].incl && !max)
                attr_i(&b, "count_include_pad", 1);
        }
        snprintf(nm, sizeof(nm), "oneDNN %s kernel %lld stride %lld pad "
                 "%lld on %lldx%lld%s", c[i].op, (long long)c[i].k,
                 (long long)c[i].s, (long long)c[i].p, (long long)d[2],
                 (long long)d[3],
                 c[i].incl && !max ? " count_include_pad" : "");
        check(nm, gb_done(&b, gb_node(&b, c[i].op, 1, &in)), &o);
        ok(nn_dnn_steps == 2, "%s: forward and backward on oneDNN (%d "
           "steps)", nm, nn_dnn_steps);
    }
    /* blocked (not MaxPool: a near tie of two maxima moves the finite
     * differences more than the tolerance, in the C kernels too; the
     * CNN fixture's blocked MaxPool is compared with PyTorch in
     * test_train_models) */
    check("oneDNN Conv, BatchNorm, Relu, Add, AveragePool (blocked)",
          chain_graph(3, 16), &o);
    ok(nn_dnn_steps == 6 && blocked_values >= 8, "oneDNN Conv, "
       "BatchNorm, Relu, Add, AveragePool: BatchNorm, Relu and pooling "
       "forward and backward on oneDNN (%d steps), nChw16c (%d "
       "values)", nn_dnn_steps, blocked_values);
}

/*
 * Mixed precision with bf16 activations (compress/train/act16.c): the
 * gradient of the bf16 trainer against finite differences of the f32
 * one, on the blocked chain above, whose every activation stays bf16,
 * and that the activations and the oneDNN steps between the
 * convolutions were bf16 (not silently f32).  Tolerance 3e-2 of the
 * largest gradient: each bf16 rounding is off by up to 2^-9 relative,
 * and a gradient here passes through about ten of them (the
 * convolution's operands, its output, BatchNorm's, Relu's, the Add's,
 * and the same again backward); measured 3.4e-3, the f32 trainer's
 * 2.0e-3.  (Last in main: it draws from the shared random sequence.)
 * (NHWC, a grouped convolution's f32 fallback and relayouts of bf16
 * values: test_train_layout.)
 */
void
bf16_cases(void)
{
    const char *nm = "bf16 activations: Conv(16), BatchNorm, Relu, Add, "
                     "AveragePool";
    ss_train_opts_t o;

    if (!ss_dnn_bf16_native(NULL)) {
        ok(1, "# SKIP bf16 activations: oneDNN does not run bf16 here");
        return;
    }
    ss_train_opts_default(&o);
    o.bn = SS_BN_BATCH;
    check_bf16(nm, chain_graph(3, 16), &o, 3e-2);
    /* conv, bn, relu, add, pool outputs; BN, Relu, Add, pool forward
     * and BN, Relu, pool backward */
    ok(bf16_acts == 5 && bf16_nn_steps == 7, "%s: %d activations and %d "
       "BatchNorm, Relu, Add and pooling steps in bf16", nm, bf16_acts,
       bf16_nn_steps);
}

void
shape_cases(void)
{
    {
        gb_t b;
        int64_t d[4] = { 2, 3, 4, 5 }, perm[4] = { 0, 2, 3, 1 };
        int in;

        gb_init(&b, 17);
        in = gb_param(&b, "x", 4, d, -1, 1);
        attr_ints(&b, "perm", 4, perm);
        check("Transpose", gb_done(&b, gb_node(&b, "Transpose", 1, &in)),
              NULL);
    }
    {   /* an embedding: repeated and negative indices */
        gb_t b;
        int64_t d[2] = { 6, 4 }, id[2] = { 2, 3 };
        int64_t iv[6] = { 0, 5, 2, 2, -1, 3 };
        int in[2];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "table", 2, d, -1, 1);
        in[1] = gb_ints(&b, "ids", 2, id, iv);
        check("Gather axis 0 (embedding)",
              gb_done(&b, gb_node(&b, "Gather", 2, in)), NULL);
    }
    {   /* q = qkv[1] along axis 1, a scalar index */
        gb_t b;
        int64_t d[3] = { 2, 3, 4 }, one = 1;
        int in[2];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -1, 1);
        in[1] = gb_ints(&b, "i", 0, NULL, &one);
        attr_i(&b, "axis", 1);
        check("Gather axis 1, scalar index",
              gb_done(&b, gb_node(&b, "Gather", 2, in)), NULL);
    }
    for (int k = 0; k < 3; k++) {
        gb_t b;
        int64_t d[3] = { 2, 3, 4 }, ax1[1] = { 1 }, ax2[2] = { 0, -1 };
        int64_t two = 2;
        int in[2];
        const char *nm[] = { "ReduceMean axes [1] keepdims 0",
                             "ReduceMean axes [0,-1]",
                             "ReduceSum axes input [0,-1]" };

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -1, 1);
        if (k == 0) {
            attr_ints(&b, "axes", 1, ax1);
            attr_i(&b, "keepdims", 0);
        } else if (k == 1) {
            attr_ints(&b, "axes", 2, ax2);
        } else {
            in[1] = gb_ints(&b, "axes", 1, &two, ax2);
        }
        check(nm[k], gb_done(&b, gb_node(&b, k == 2 ? "ReduceSum"
                                                     : "ReduceMean",
                                          k == 2 ? 2 : 1, in)), NULL);
    }
    {   /* reshape of a parameter and of an activation, Flatten,
         * Unsqueeze/Squeeze, Expand */
        gb_t b;
        int64_t d[3] = { 2, 3, 4 }, sd[1] = { 2 }, sv[2] = { 6, 4 };
        int64_t ed[1] = { 3 }, ev[3] = { 2, 6, 4 }, one = 1;
        int x, sh, r, f, e, in[2], u, sq, ax;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 3, d, -1, 1);
        sh = gb_ints(&b, "shape", 1, sd, sv);
        r = gb_node(&b, "Reshape", 2, (int[]){ x, sh });
        f = gb_node(&b, "Relu", 1, &r);
        attr_i(&b, "axis", 1);
        f = gb_node(&b, "Flatten", 1, &f);
        ax = gb_ints(&b, "ax", 1, &one, (int64_t[]){ 0 });
        u = gb_node(&b, "Unsqueeze", 2, (int[]){ f, ax });
        e = gb_ints(&b, "eshape", 1, ed, ev);
        in[0] = u;
        in[1] = e;
        e = gb_node(&b, "Expand", 2, in);
        sq = gb_node(&b, "ReduceSum", 2,
                     (int[]){ e, gb_ints(&b, "ax0", 1, &one,
                                         (int64_t[]){ 0 }) });
        check("Reshape, Flatten, Unsqueeze, Expand chain",
              gb_done(&b, sq), NULL);
    }
}


int
main(void)
{
    gb_seed = 12345;
    table_covers();
    binary_cases();
    unary_cases();
    gemm_cases();
    matmul_cases();
    norm_cases();
    conv_cases();
    pool_cases();
    nn_dnn_cases();
    shape_cases();
    index_cases();
    structure_cases();
    qdq_cases();
    qdq_lsq_case();
    qdq_lsq_axis_case();
    loss_cases();
    optim_cases();
    table_cases();
    sophia_run();
    bf16_cases();
    gelu_cases();
    vector_cases();
    clip_cases();
    act_ref_cases();
    pad_cases();
    attention16_cases();
    scaled_matmul_cases();
    bias_matmul_cases();
    tied_bn_case();
    attention16_shape_cases();
    return tap_done();
}
