/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_train_grad's cases: GELU fused from element-wise ops, vector ops, Pad, Clip and the
 * hard activations, attention in bf16, scaled MatMul.
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

/* ---- GELU written out in element-wise ops (compress/train/fuse.c) -------- */

enum {
    GE_DIV,             /* PyTorch's nn.GELU(): x / sqrt 2 ... * x * 0.5 */
    GE_HALF_FIRST,      /* (x * 0.5) * (1 + erf((1/sqrt 2) * x)) */
    GT_MUL,             /* PyTorch 1.13's approximate='tanh' */
    GT_POW,             /* tanh with Pow(x, 3) and the half first */
    GE_X_READ,          /* x + GELU(x): x has another reader */
    GE_BAD_CONST,       /* x / 1.5: not GELU, left alone */
    GE_SHARED,          /* the Erf's output read again: left alone */
    GE_N
};

static const char *const gelu_names[GE_N] = {
    "GELU Div/Erf/Add/Mul/Mul", "GELU half first, Mul by 1/sqrt 2",
    "GELU tanh (PyTorch 1.13)", "GELU tanh, Pow and half first",
    "x + GELU(x)", "Div by 1.5 (not GELU)", "Erf output read twice",
};

/* Variant v of GELU written out on x; returns the result. */
static int
gelu_pattern(gb_t *b, int x, int v)
{
    int s, u, e, y, tanh = v == GT_MUL || v == GT_POW;
    int first = v == GE_HALF_FIRST || v == GT_POW;

    if (tanh) {
        if (v == GT_MUL) {
            s = gb_node(b, "Mul", 2, (int[]){ x, x });
            s = gb_node(b, "Mul", 2, (int[]){ x, s });
        } else {
            s = gb_node(b, "Pow", 2, (int[]){ x, gb_scalar(b, "three",
                                                           3.0f) });
        }
        u = gb_node(b, "Mul", 2, (int[]){ gb_scalar(b, "k", 0.044715f), s });
        u = gb_node(b, "Add", 2, (int[]){ x, u });
        u = gb_node(b, "Mul", 2, (int[]){ gb_scalar(b, "beta",
                                                    0.7978845608f), u });
        e = gb_node(b, "Tanh", 1, &u);
    } else {
        s = v == GE_HALF_FIRST
                ? gb_node(b, "Mul", 2, (int[]){ gb_scalar(b, "r",
                                                          0.70710678f), x })
                : gb_node(b, "Div", 2, (int[]){ x, gb_scalar(b, "s",
                          v == GE_BAD_CONST ? 1.5f : 1.41421356f) });
        e = gb_node(b, "Erf", 1, &s);
    }
    u = gb_node(b, "Add", 2, (int[]){ e, gb_scalar(b, "one", 1.0f) });
    if (first) {
        s = gb_node(b, "Mul", 2, (int[]){ x, gb_scalar(b, "half", 0.5f) });
        y = gb_node(b, "Mul", 2, (int[]){ s, u });
    } else {
        y = gb_node(b, "Mul", 2, (int[]){ x, u });
        y = gb_node(b, "Mul", 2, (int[]){ gb_scalar(b, "half", 0.5f), y });
    }
    if (v == GE_SHARED)
        y = gb_node(b, "Add", 2, (int[]){ y, e });
    if (v == GE_X_READ)
        y = gb_node(b, "Add", 2, (int[]){ y, x });
    return y;
}

/* Variant v on a [4, 6] parameter, or (conv) on a 16-channel Conv's
 * output (bf16 in mixed precision). */
static ss_graph_t *
gelu_graph(int v, int conv)
{
    gb_t b;
    int64_t d[2] = { 4, 6 }, xd[4] = { 2, 3, 4, 4 }, wd[4] = { 16, 3, 3, 3 };
    int64_t p4[4] = { 1, 1, 1, 1 };
    int x;

    gb_init(&b, 17);
    if (conv) {
        int in[2];

        in[0] = gb_param(&b, "x", 4, xd, -2, 2);
        in[1] = gb_param(&b, "w", 4, wd, -0.5, 0.5);
        attr_ints(&b, "pads", 4, p4);
        x = gb_node(&b, "Conv", 2, in);
    } else {
        x = gb_param(&b, "x", 2, d, -3, 3);
    }
    return gb_done(&b, gelu_pattern(&b, x, v));
}

/* Variant v's loss and gradient against the unfused trainer's (opts.nn
 * C: the element-wise ops on the C kernels), and the steps: fused, one
 * Gelu step on oneDNN forward and one backward, and fewer steps. */
static void
gelu_vs_unfused(int v, int fused)
{
    const char *nm = gelu_names[v];
    ss_graph_t *g = gelu_graph(v, 0);
    ss_train_t *t[2] = { NULL, NULL };
    ss_train_opts_t o;
    ss_train_batch_t bt = { 0 };
    ss_tensor_t target;
    ss_err_t err;
    double l[2] = { 0, 0 }, gd = 0, gmax = 0;
    float *gr = NULL, *tg = NULL;
    int rc = g ? 0 : -1, n_gelu = 0;
    int64_t n = 0;

    for (int k = 0; k < 2 && rc == 0; k++) {
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        o.threads = 2;
        o.nn = k ? SS_TRAIN_NN_C : SS_TRAIN_NN_AUTO;
        rc = ss_train_new(g, NULL, &o, &t[k], &err);
    }
    if (!ok(rc == 0, "%s: trainers built", nm)) {
        tap_diag("%s", err.msg);
        goto done;
    }
    for (int i = 0; i < t[0]->n_steps; i++)
        n_gelu += t[0]->steps[i].fn == ss__k_dnn_x &&
                  strcmp(t[0]->steps[i].what, "Gelu") == 0;
    ok(fused ? n_gelu == 2 && t[0]->n_steps < t[1]->n_steps
             : n_gelu == 0 && t[0]->n_steps == t[1]->n_steps,
       "%s: %s (%d Gelu steps on oneDNN; %d steps, unfused %d)", nm,
       fused ? "one Gelu step forward and one backward" : "left as it is",
       n_gelu, t[0]->n_steps, t[1]->n_steps);
    memset(&target, 0, sizeof(target));
    target.dtype = SS_DTYPE_F32;
    target.ndim = t[0]->tv[t[0]->out_tv].ndim;
    memcpy(target.dims, t[0]->tv[t[0]->out_tv].dims, sizeof(target.dims));
    n = t[0]->tv[t[0]->out_tv].numel;
    tg = ss_malloc((size_t)n * sizeof(float) + 4);
    for (int64_t i = 0; i < n; i++)
        tg[i] = (float)(gb_urand() * 2 - 1);
    target.data = tg;
    bt.teacher = &target;
    n = ss_train_flat_size(t[0]);
    gr = ss_malloc((size_t)n * sizeof(float) + 4);
    rc = ss_train_grads_compute(t[1], &bt, &l[1], &err);
    if (rc == 0) {
        memcpy(gr, ss_train_grads(t[1]), (size_t)n * sizeof(float));
        rc = ss_train_grads_compute(t[0], &bt, &l[0], &err);
    }
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        double d = fabs((double)ss_train_grads(t[0])[i] - gr[i]);

        gd = d > gd ? d : gd;
        gmax = fabs(gr[i]) > gmax ? fabs(gr[i]) : gmax;
    }
    /* oneDNN's erf and tanh against libm's: a few ulp per element */
    ok(rc == 0 && gmax > 0 && fabs(l[0] - l[1]) <= 1e-6 * fabs(l[1]) &&
       gd <= 1e-5 * gmax, "%s: loss and gradient as the unfused ops' "
       "(loss %.6g vs %.6g, gradient off by %.1e of its largest %.2e)", nm,
       l[0], l[1], gmax > 0 ? gd / gmax : 0.0, gmax);
done:
    ss_free(gr);
    ss_free(tg);
    ss_train_free(t[0]);
    ss_train_free(t[1]);
    ss_graph_free(g);
}

void
gelu_cases(void)
{
    for (int v = 0; v < GE_N; v++) {
        gelu_vs_unfused(v, v < GE_BAD_CONST);
        check(gelu_names[v], gelu_graph(v, 0), NULL);
    }
    if (!ss_dnn_bf16_native(NULL)) {
        ok(1, "# SKIP GELU on bf16: oneDNN does not run bf16 here");
        return;
    }
    /* after a bf16 convolution: the Gelu steps read and write bf16 */
    for (int v = GE_DIV; v <= GT_MUL; v += GT_MUL - GE_DIV) {
        char nm[96];

        snprintf(nm, sizeof(nm), "bf16 Conv(16) then %s", gelu_names[v]);
        check_bf16(nm, gelu_graph(v, 1), NULL, 3e-2);
        ok(bf16_acts == 2 && bf16_nn_steps == 2, "%s: %d activations and "
           "%d Gelu steps in bf16", nm, bf16_acts, bf16_nn_steps);
    }
}

/*
 * The vector loops of session 28's kernels: LayerNorm with a channel
 * count that leaves a tail, with dx added to, without bias; Transposes
 * that keep or move the last dim, twice into one dx (the added path).
 * Last in main, as bf16_cases: they draw from the shared random
 * sequence, and the cases before them keep their draws.
 */
void
vector_cases(void)
{
    for (int k = 0; k < 2; k++) {
        /* 7 channels (vector loops with a tail); k 0: x also read by a
         * Mul, so one of dx's two contributions adds; k 1: no bias */
        gb_t b;
        int64_t d[3] = { 2, 3, 7 };
        int in[3], y;

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -2, 2);
        in[1] = gb_param(&b, "g", 1, d + 2, 0.5, 1.5);
        if (k == 0)
            in[2] = gb_param(&b, "b", 1, d + 2, -1, 1);
        attr_f(&b, "epsilon", 1e-5f);
        y = gb_node(&b, "LayerNormalization", k ? 2 : 3, in);
        if (k == 0)
            y = gb_node(&b, "Mul", 2, (int[]){ y, in[0] });
        check(k ? "LayerNormalization, 7 channels, no bias"
                : "LayerNormalization, 7 channels, x read twice",
              gb_done(&b, y), NULL);
    }
    {   /* the attention's qkv split: [B, L, 3, H, dh] -> [3, B, H, L, dh],
         * the last dim staying last (rows copied whole) */
        gb_t b;
        int64_t d[5] = { 2, 3, 3, 2, 4 }, perm[5] = { 2, 0, 3, 1, 4 };
        int in;

        gb_init(&b, 17);
        in = gb_param(&b, "x", 5, d, -1, 1);
        attr_ints(&b, "perm", 5, perm);
        check("Transpose 5-D, last dim kept",
              gb_done(&b, gb_node(&b, "Transpose", 1, &in)), NULL);
    }
    for (int k = 0; k < 2; k++) {
        /* x read by two Transposes: the second backward adds into dx
         * (the last dim moved, k 0, or kept, k 1) */
        gb_t b;
        int64_t d[4] = { 2, 3, 4, 5 }, p0[4] = { 0, 2, 3, 1 };
        int64_t p1[4] = { 2, 0, 1, 3 };
        int in, y0, y1;

        gb_init(&b, 17);
        in = gb_param(&b, "x", 4, d, -1, 1);
        attr_ints(&b, "perm", 4, k ? p1 : p0);
        y0 = gb_node(&b, "Transpose", 1, &in);
        attr_ints(&b, "perm", 4, k ? p1 : p0);
        y1 = gb_node(&b, "Transpose", 1, &in);
        check(k ? "Transpose twice, last dim kept (dx added)"
                : "Transpose twice, last dim moved (dx added)",
              gb_done(&b, gb_node(&b, "Mul", 2, (int[]){ y0, y1 })), NULL);
    }
}

/* Pad: constant (densenet's exports), a crop by negative pads, the
 * borders of edge and reflect mode (several outputs read one input). */
void
pad_cases(void)
{
    static const struct { const char *name, *mode; int64_t pads[6]; } c[] = {
        { "Pad constant", "constant", { 0, 1, 2, 0, 2, 1 } },
        { "Pad constant, negative pads (crop)", "constant",
          { 0, -1, 1, 0, 1, -2 } },
        { "Pad edge", "edge", { 0, 2, 1, 0, 1, 2 } },
        { "Pad reflect", "reflect", { 0, 1, 2, 0, 2, 1 } },
        { "Pad constant, no-op (all 0)", "constant", { 0 } },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        int64_t d[3] = { 2, 4, 5 }, np = 6;
        int in[3];
        gb_t b;
        ss_attr_t *a;

        gb_init(&b, 13);
        in[0] = gb_param(&b, "x", 3, d, -1, 1);
        in[1] = gb_ints(&b, "pads", 1, &np, c[i].pads);
        in[2] = gb_scalar(&b, "value", 0.25f);
        a = &b.attrs[b.n_attrs++];
        memset(a, 0, sizeof(*a));
        a->name = (char *)"mode";
        a->type = SS_ATTR_STRING;
        a->s = (char *)c[i].mode;
        check(c[i].name, gb_done(&b, gb_node(&b, "Pad", 3, in)), NULL);
    }
}

/* ---- Clip (ReLU6), HardSigmoid, HardSwish ---------------------------------- */

/* x [3, 6] uniform in [lo, hi), every element at least 0.02 (> the step
 * h) away from the kinks k[0..nk): finite differences across a kink
 * measure neither side. */
static int
gb_off_kinks(gb_t *b, double lo, double hi, const double *k, int nk)
{
    int64_t d[2] = { 3, 6 };
    int v = gb_param(b, "x", 2, d, lo, hi);
    float *x = v >= 0 ? b->g->values[v].constant->data : NULL;

    for (int i = 0; x && i < 18; i++)
        for (int j = 0; j < nk; j++)
            if (fabs(x[i] - k[j]) < 0.02)
                x[i] = (float)(k[j] + (x[i] < k[j] ? -0.02 : 0.02));
    return v;
}

void
clip_cases(void)
{
    /* bounds: attributes (opset 6), inputs (13), one side absent */
    static const struct { const char *name; int opset, lo, hi; } c[] = {
        { "Clip min/max attributes (opset 6)", 6, 1, 1 },
        { "Clip min/max inputs (ReLU6, opset 13)", 13, 1, 1 },
        { "Clip max input only (min absent)", 13, 0, 1 },
        { "Clip min input only (max absent)", 13, 1, 0 },
        { "Clip without bounds", 13, 0, 0 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        double k[2] = { -0.5, 0.7 };
        int in[3] = { -1, -1, -1 }, n_in = 1;
        gb_t b;

        gb_init(&b, c[i].opset);
        in[0] = gb_off_kinks(&b, -1.5, 1.5, k, 2);
        if (c[i].opset < 11) {
            attr_f(&b, "min", (float)k[0]);
            attr_f(&b, "max", (float)k[1]);
        } else {
            if (c[i].lo)
                in[1] = gb_scalar(&b, "min", (float)k[0]);
            if (c[i].hi)
                in[2] = gb_scalar(&b, "max", (float)k[1]);
            n_in = c[i].hi ? 3 : c[i].lo ? 2 : 1;
        }
        check(c[i].name, gb_done(&b, gb_node(&b, "Clip", n_in, in)), NULL);
    }
    for (int v = 0; v < 3; v++) {
        /* HardSigmoid at ONNX's defaults and at PyTorch's alpha 1/6 */
        double a = v == 1 ? 1.0 / 6 : 0.2, k[2] = { -0.5 / a, 0.5 / a };
        int in;
        gb_t b;

        gb_init(&b, 14);
        in = gb_off_kinks(&b, -5, 5, v == 2 ? (const double[]){ -3, 3 } : k,
                          2);
        if (v == 1)
            attr_f(&b, "alpha", (float)a);
        check(v == 0 ? "HardSigmoid (alpha 0.2)"
              : v == 1 ? "HardSigmoid (alpha 1/6)" : "HardSwish",
              gb_done(&b, gb_node(&b, v == 2 ? "HardSwish" : "HardSigmoid",
                                  1, &in)), NULL);
    }
}

/*
 * At the kinks the derivative is a convention: the trainer's must be
 * PyTorch's (tests/fixtures/train/make_mbnet_refs.py wrote x, y = f(x)
 * and f'(x) by autograd for F.relu6 (exported as Clip(0, 6)), F.hardtanh
 * (-1, 1), F.hardsigmoid and F.hardswish, on x with every kink and
 * random values).  With an MSE loss against t, dx = 2 (y - t) / n f'(x).
 */
static const ss_tensor_t *
ref_get(const ss_npz_t *z, const char *key)
{
    int i = ss_npz_find(z, key);

    return i >= 0 ? ss_npz_tensor(z, i) : NULL;
}

void
act_ref_cases(void)
{
    static const struct { const char *key, *op; float lo, hi; } c[] = {
        { "relu6", "Clip", 0, 6 }, { "hardtanh", "Clip", -1, 1 },
        { "hardsigmoid", "HardSigmoid", 0, 0 },
        { "hardswish", "HardSwish", 0, 0 },
    };
    const char *top = getenv("top_srcdir");
    char p[512];
    ss_npz_t *ref = NULL;
    ss_err_t err = { 0 };

    snprintf(p, sizeof(p), "%s/tests/fixtures/train/act_ref.npz",
             top ? top : ".");
    if (!ok(ss_npz_read(p, 1 << 24, &ref, &err) == 0, "act_ref.npz loads "
            "(%s)", err.msg))
        return;
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        char k[64];
        const ss_tensor_t *xr, *yr, *dr;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_graph_t *g;
        ss_tensor_t target;
        ss_train_batch_t batch = { NULL, NULL, &target };
        float *tg, *y;
        double loss, worst = 0, yworst = 0;
        int64_t n;
        int in[3], at = 0;
        gb_t b;

        snprintf(k, sizeof(k), "%s.x", c[i].key);
        xr = ref_get(ref, k);
        snprintf(k, sizeof(k), "%s.y", c[i].key);
        yr = ref_get(ref, k);
        snprintf(k, sizeof(k), "%s.dx", c[i].key);
        dr = ref_get(ref, k);
        if (!ok(xr && yr && dr, "%s: reference arrays", c[i].key))
            continue;
        n = ss_tensor_numel(xr);
        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 2, (const int64_t[]){ 1, n }, 0, 1);
        memcpy(b.g->values[in[0]].constant->data, xr->data,
               (size_t)n * sizeof(float));
        if (strcmp(c[i].op, "Clip") == 0) {
            in[1] = gb_scalar(&b, "min", c[i].lo);
            in[2] = gb_scalar(&b, "max", c[i].hi);
        } else if (strcmp(c[i].op, "HardSigmoid") == 0) {
            attr_f(&b, "alpha", 1.0f / 6);
        }
        g = gb_done(&b, gb_node(&b, c[i].op,
                                strcmp(c[i].op, "Clip") == 0 ? 3 : 1, in));
        tg = ss_malloc((size_t)n * sizeof(float));
        y = ss_malloc((size_t)n * sizeof(float));
        for (int64_t j = 0; j < n; j++)
            tg[j] = (float)(gb_urand() * 2 - 1);
        memset(&target, 0, sizeof(target));
        target.dtype = SS_DTYPE_F32;
        target.ndim = 2;
        target.dims[0] = 1;
        target.dims[1] = n;
        target.data = tg;
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        if (g && ss_train_new(g, NULL, &o, &t, &err) == 0 &&
            ss_train_forward(t, NULL, y, &err) == 0 &&
            ss_train_grads_compute(t, &batch, &loss, &err) == 0) {
            const float *gx = ss_train_grads(t);

            for (int64_t j = 0; j < n; j++) {
                float xv = ((const float *)xr->data)[j];
                double yw = ((const float *)yr->data)[j];
                double want = 2.0 * (yw - tg[j]) / (double)n *
                              ((const float *)dr->data)[j];

                if (fabs(y[j] - yw) > yworst)
                    yworst = fabs(y[j] - yw);
                if (fabs(gx[j] - want) > worst)
                    worst = fabs(gx[j] - want);
                at += xv == c[i].lo || xv == c[i].hi || xv == -3.0f ||
                      xv == 3.0f;
            }
            ok(worst < 1e-6 && yworst < 1e-6 && at >= 2, "%s (%s): forward "
               "and gradient are PyTorch's at %d kink points and %d "
               "others (max error %.2e, forward %.2e)", c[i].key, c[i].op,
               at, (int)n - at, worst, yworst);
        } else {
            ok(0, "%s: trainer runs (%s)", c[i].key, err.msg);
        }
        ss_free(tg);
        ss_free(y);
        ss_train_free(t);
        ss_graph_free(g);
    }
    ss_npz_free(ref);
}

/*
 * Mixed precision through attention (rules_norm.c, rules_mat.c): a
 * Softmax between two MatMuls writes its output in bf16, the second
 * MatMul reads it as its bf16 operand and writes its gradient in bf16,
 * and the Softmax's backward runs on oneDNN from the bf16 output and
 * gradient; the first MatMul, the Softmax's only reader, writes the
 * scores in bf16, which the Softmax reads, and the Softmax's backward
 * writes their gradient in bf16, which the first MatMul's backward
 * products read.  The bf16 trainer's gradient against finite differences
 * of the f32 one (3e-2 of the largest, as bf16_cases), and the two bf16
 * activations.  k 1: the probabilities are read by a Mul too (an f32
 * copy, whose gradient adds into the bf16 one); k 2: the second MatMul
 * broadcasts them over a batch dim of V (their gradient is summed over
 * it in f32: an f32 copy); k 3: the scores are read by a Mul too, so
 * they stay f32 (one bf16 activation).  Last in main, after
 * vector_cases.
 */
void
attention16_cases(void)
{
    static const char *const nm[4] = {
        "bf16 attention: MatMul / 2, Softmax (bf16), MatMul",
        "bf16 attention: the probabilities also read by a Mul",
        "bf16 attention: the probabilities broadcast over V's batch",
        "bf16 attention: the scores also read by a Mul (f32 scores)" };

    if (!ss_dnn_bf16_native(NULL)) {
        ok(1, "# SKIP bf16 attention: oneDNN does not run bf16 here");
        return;
    }
    for (int k = 0; k < 4; k++) {
        gb_t b;
        int64_t dq[4] = { k == 2 ? 1 : 2, 2, 5, 4 }, dv[4] = { 2, 2, 5, 4 };
        int64_t perm[4] = { 0, 1, 3, 2 };
        int q, kk, v, s, p, y;

        gb_init(&b, 17);
        q = gb_param(&b, "q", 4, dq, -1, 1);
        kk = gb_param(&b, "k", 4, dq, -1, 1);
        v = gb_param(&b, "v", 4, dv, -1, 1);
        attr_ints(&b, "perm", 4, perm);
        kk = gb_node(&b, "Transpose", 1, &kk);
        s = gb_node(&b, "MatMul", 2, (int[]){ q, kk });
        if (k == 0)     /* scaled, as attention's scores (fuse.c) */
            s = gb_node(&b, "Div", 2, (int[]){
                s, gb_scalar(&b, "c", 2.0f) });
        p = gb_node(&b, "Softmax", 1, &s);
        y = gb_node(&b, "MatMul", 2, (int[]){ p, v });
        if (k == 1 || k == 3) {
            int m = k == 1 ? p : s;

            y = gb_node(&b, "Add", 2, (int[]){
                y, gb_node(&b, "MatMul", 2, (int[]){
                       gb_node(&b, "Mul", 2, (int[]){ m, m }), v }) });
        }
        check_bf16(nm[k], gb_done(&b, y), NULL, 3e-2);
        ok(bf16_acts == (k == 3 ? 1 : 2), "%s: %d activations in bf16 "
           "(want %s)", nm[k], bf16_acts,
           k == 3 ? "1, the probabilities" : "2, the scores and the "
           "probabilities");
    }
}

/*
 * A MatMul whose one reader divides it by a scalar constant (attention's
 * 1 / sqrt(d)) or multiplies it by one trains as one scaled MatMul
 * (fuse.c): against finite differences in f32, and no Div or Mul step
 * left.  k 2: q is read by a second MatMul too, so dq's second
 * contribution adds (the scale before the sum); k 3: the MatMul's
 * output is read by the Div and by an Add: not fused.  Last in main.
 */
void
scaled_matmul_cases(void)
{
    static const char *const nm[4] = {
        "MatMul / constant (fused)", "MatMul * constant (fused)",
        "MatMul / constant, q read twice (fused, dq added)",
        "MatMul / constant, also read by an Add (not fused)" };

    for (int k = 0; k < 4; k++) {
        gb_t b;
        int64_t d[4] = { 2, 2, 5, 4 }, perm[4] = { 0, 1, 3, 2 };
        int q, kk, s, c, y;

        gb_init(&b, 17);
        q = gb_param(&b, "q", 4, d, -1, 1);
        kk = gb_param(&b, "k", 4, d, -1, 1);
        c = gb_scalar(&b, "c", k == 1 ? 0.35f : 2.83f);
        attr_ints(&b, "perm", 4, perm);
        kk = gb_node(&b, "Transpose", 1, &kk);
        s = gb_node(&b, "MatMul", 2, (int[]){ q, kk });
        y = gb_node(&b, k == 1 ? "Mul" : "Div", 2,
                    k == 1 ? (int[]){ c, s } : (int[]){ s, c });
        if (k == 2)
            y = gb_node(&b, "Add", 2, (int[]){
                y, gb_node(&b, "MatMul", 2, (int[]){ q, kk }) });
        if (k == 3)
            y = gb_node(&b, "Add", 2, (int[]){ y, s });
        check(nm[k], gb_done(&b, y), NULL);
        ok(divmul_steps == (k == 3 ? 2 : 0), "%s: %d Div / Mul steps",
           nm[k], divmul_steps);
    }
}

/*
 * A MatMul whose one reader adds a bias (a parameter [N], N its weight's
 * last dim; PyTorch's Linear on 3-D input) trains as one MatMul with the
 * bias as a post-op and its gradient summed over the rows (fuse.c):
 * against finite differences in f32, and no Add step left (k 0, k 1 the
 * operands the other way); k 2: a [1, N] bias stays an Add.  k 3, mixed
 * precision: Linear, GELU (fused), Linear: the first Linear writes its
 * output in bf16, the Gelu reads it and writes bf16, the second Linear
 * reads that as its operand; backward the same way, the first bias's
 * gradient summed from the bf16 dy (against finite differences of the
 * f32 trainer, 3e-2 as bf16_cases; two bf16 activations).  Last in main.
 */
void
bias_matmul_cases(void)
{
    static const char *const nm[4] = {
        "MatMul + bias (fused)", "bias + MatMul (fused)",
        "MatMul + [1, N] bias (an Add)",
        "bf16 Linear, GELU, Linear (bf16 activations)" };

    for (int k = 0; k < 4; k++) {
        gb_t b;
        int64_t xd[3] = { 2, 3, 4 }, wd[2] = { 4, 6 }, bd[2] = { 1, 6 };
        int64_t w2d[2] = { 6, 5 };
        int x, w, c, y, adds = 0;
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 3, xd, -1, 1);
        w = gb_param(&b, "w", 2, wd, -1, 1);
        c = k == 2 ? gb_param(&b, "b", 2, bd, -1, 1)
                   : gb_param(&b, "b", 1, &bd[1], -1, 1);
        y = gb_node(&b, "MatMul", 2, (int[]){ x, w });
        y = gb_node(&b, "Add", 2, k == 1 ? (int[]){ c, y } : (int[]){ y, c });
        if (k == 3) {
            y = gelu_pattern(&b, y, GE_DIV);
            y = gb_node(&b, "MatMul", 2, (int[]){
                y, gb_param(&b, "w2", 2, w2d, -1, 1) });
            y = gb_node(&b, "Add", 2, (int[]){
                y, gb_param(&b, "b2", 1, &w2d[1], -1, 1) });
        }
        g = gb_done(&b, y);
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        if (g && ss_train_new(g, NULL, &o, &t, &err) == 0)
            for (int i = 0; i < t->n_steps; i++)
                adds += t->steps[i].node &&
                        strcmp(t->steps[i].node->op_type, "Add") == 0;
        ss_train_free(t);
        if (k == 3 && !ss_dnn_bf16_native(NULL)) {
            ok(1, "# SKIP %s: oneDNN does not run bf16 here", nm[k]);
            ss_graph_free(g);
        } else if (k == 3) {
            check_bf16(nm[k], g, NULL, 3e-2);
            ok(bf16_acts == 2 && adds == 0, "%s: %d activations in bf16 "
               "(want 2), %d Add steps", nm[k], bf16_acts, adds);
        } else {
            check(nm[k], g, NULL);
            ok(k == 2 ? adds > 0 : adds == 0, "%s: %d Add steps", nm[k],
               adds);
        }
    }
}
