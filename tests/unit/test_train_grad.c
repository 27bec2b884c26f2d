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

static uint64_t seed = 12345;

static double
urand(void)
{
    return ss__rng_unit(&seed);
}

/* ---- building graphs ---------------------------------------------------- */

typedef struct gb {
    ss_graph_t *g;
    ss_err_t err;
    int n_attrs;
    ss_attr_t attrs[8];
    int64_t ibuf[8][8];
} gb_t;

static void
gb_init(gb_t *b, int opset)
{
    memset(b, 0, sizeof(*b));
    b->g = ss_calloc(1, sizeof(ss_graph_t));
    b->g->source = ss_strdup("<test>");
    b->g->opset = opset;
}

/* A float initializer with values in [lo, hi). */
static int
gb_param(gb_t *b, const char *name, int nd, const int64_t *dims, double lo,
         double hi)
{
    ss_tensor_t *t = NULL;
    int64_t n;

    if (ss__tensor_new(SS_DTYPE_F32, nd, dims, &t, &b->err) < 0)
        return -1;
    n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((float *)t->data)[i] = (float)(lo + (hi - lo) * urand());
    return ss_graph_add_value(b->g, name, t, &b->err);
}

/* Evenly spaced distinct values, shuffled: a max has no near tie within
 * the finite-difference step. */
static int
gb_spread(gb_t *b, const char *name, int nd, const int64_t *dims)
{
    int v = gb_param(b, name, nd, dims, 0, 1);
    ss_tensor_t *t = v >= 0 ? b->g->values[v].constant : NULL;
    int64_t n = t ? ss_tensor_numel(t) : 0;
    float *x = t ? t->data : NULL;

    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(-1.0 + 2.0 * (double)i / (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(urand() * (double)(i + 1));
        float k = x[i];

        x[i] = x[j];
        x[j] = k;
    }
    return v;
}

static int
gb_scalar(gb_t *b, const char *name, float v)
{
    ss_tensor_t *t = NULL;

    if (ss__tensor_new(SS_DTYPE_F32, 0, NULL, &t, &b->err) < 0)
        return -1;
    *(float *)t->data = v;
    return ss_graph_add_value(b->g, name, t, &b->err);
}

static int
gb_ints(gb_t *b, const char *name, int nd, const int64_t *dims,
        const int64_t *vals)
{
    ss_tensor_t *t = NULL;

    if (ss__tensor_new(SS_DTYPE_I64, nd, dims, &t, &b->err) < 0)
        return -1;
    memcpy(t->data, vals, (size_t)ss_tensor_numel(t) * sizeof(int64_t));
    return ss_graph_add_value(b->g, name, t, &b->err);
}

static void
attr_i(gb_t *b, const char *name, int64_t v)
{
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_INT;
    a->i = v;
}

static void
attr_f(gb_t *b, const char *name, float v)
{
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_FLOAT;
    a->f = v;
}

static void
attr_ints(gb_t *b, const char *name, int n, const int64_t *v)
{
    int k = b->n_attrs;
    ss_attr_t *a = &b->attrs[b->n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = SS_ATTR_INTS;
    a->n = n;
    memcpy(b->ibuf[k], v, (size_t)n * sizeof(int64_t));
    a->ints = b->ibuf[k];
}

/* A node; returns its output value id. */
static int
gb_node(gb_t *b, const char *op, int n_in, const int *in)
{
    int out = ss_graph_add_value(b->g, NULL, NULL, &b->err);

    if (out < 0 || ss_graph_add_node(b->g, op, op, n_in, in, 1, &out,
                                     b->n_attrs, b->attrs, &b->err) < 0)
        out = -1;
    b->n_attrs = 0;
    return out;
}

static ss_graph_t *
gb_done(gb_t *b, int out)
{
    if (out < 0 || ss_graph_add_output(b->g, out, &b->err) < 0 ||
        ss_graph_finalize(b->g, &b->err) < 0) {
        tap_diag("graph: %s", b->err.msg);
        ss_graph_free(b->g);
        return NULL;
    }
    return b->g;
}

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

/* ---- the check ---------------------------------------------------------- */

static int
loss_at(ss_train_t *t, const ss_train_batch_t *bt, double *l)
{
    ss_err_t err;

    return ss_train_grads_compute(t, bt, l, &err);
}

/* Steps of the last trainer check() built that run oneDNN's BatchNorm,
 * Relu or pooling (compress/train/nn_dnn.c). */
static int nn_dnn_steps;
/* Its values kept nChw16c. */
static int blocked_values;
/* Of the last check_bf16's trainer: activations kept in bf16, and steps
 * of oneDNN's BatchNorm, Relu, pooling or Add that read one. */
static int bf16_acts, bf16_nn_steps;
/* Steps of the last check's f32 trainer from a Div or Mul node. */
static int divmul_steps;

/* The analytic gradient of a trainer built with gopts (NULL: the same
 * as the finite differences') against central finite differences of
 * the f32 trainer of base, within tol of the largest. */
static void
check_tol(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
          const ss_train_opts_t *gopts, double tol);

static void
check(const char *name, ss_graph_t *g, const ss_train_opts_t *base)
{
    check_tol(name, g, base, NULL, 2e-2);
}

/* The gradient of a trainer in mixed precision, with bf16 activations. */
static void
check_bf16(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
           double tol)
{
    ss_train_opts_t o;

    if (base)
        o = *base;
    else
        ss_train_opts_default(&o);
    o.bf16 = 1;
    check_tol(name, g, base, &o, tol);
}

static void
check_tol(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
          const ss_train_opts_t *gopts, double tol)
{
    ss_train_opts_t o;
    ss_train_t *t = NULL, *tb = NULL;
    ss_err_t err;
    ss_tensor_t target;
    ss_train_batch_t bt = { 0 };
    float *w, *grad = NULL, *tg = NULL;
    double l, lp, lm, h = 3e-3, worst = 0, gmax = 0;
    int64_t n;
    const ss_io_info_t *oi;
    int rc;

    if (g == NULL) {
        ok(0, "%s: graph built", name);
        return;
    }
    if (base)
        o = *base;
    else
        ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    o.threads = 2;
    rc = ss_train_new(g, NULL, &o, &t, &err);
    if (rc == 0 && gopts) {
        ss_train_opts_t ob = *gopts;

        ob.loss = o.loss;
        ob.threads = o.threads;
        rc = ss_train_new(g, NULL, &ob, &tb, &err);
    }
    if (!ok(rc == 0, "%s: trainer built", name)) {
        tap_diag("%s", err.msg);
        ss_train_free(t);
        ss_graph_free(g);
        return;
    }
    nn_dnn_steps = blocked_values = bf16_acts = bf16_nn_steps = 0;
    divmul_steps = 0;
    for (int i = 0; i < t->n_steps; i++)
        divmul_steps += t->steps[i].node &&
                        (strcmp(t->steps[i].node->op_type, "Div") == 0 ||
                         strcmp(t->steps[i].node->op_type, "Mul") == 0);
    for (int i = 0; i < t->n_tv; i++)
        blocked_values += t->tv[i].lay == SS_DNN_BLOCKED;
    if (tb) {
        bf16_acts = ss_train_bf16_acts(tb);
        for (int i = 0; i < tb->n_steps; i++) {
            const ss__step_t *st = &tb->steps[i];

            bf16_nn_steps += (st->fn == ss__k_dnn_x ||
                              st->fn == ss__k_bn_dnn ||
                              st->fn == ss__k_bn_dnn_bwd ||
                              (st->fn == ss__k_dnn && st->node &&
                               strcmp(st->node->op_type, "Add") == 0)) &&
                             tb->tv[st->in[0]].dtype == SS_DTYPE_BF16;
        }
    }
    for (int i = 0; i < t->n_steps; i++)
        nn_dnn_steps += t->steps[i].fn == ss__k_dnn_x ||
                        t->steps[i].fn == ss__k_bn_dnn ||
                        t->steps[i].fn == ss__k_bn_dnn_bwd;
    oi = ss_graph_output(g, 0);
    memset(&target, 0, sizeof(target));
    target.dtype = SS_DTYPE_F32;
    {
        const ss__tv_t *ov = &t->tv[t->out_tv];

        target.ndim = ov->ndim;
        memcpy(target.dims, ov->dims, sizeof(target.dims));
        tg = ss_malloc((size_t)ov->numel * sizeof(float) + 4);
        for (int64_t i = 0; i < ov->numel; i++)
            tg[i] = (float)(urand() * 2 - 1);
    }
    (void)oi;
    target.data = tg;
    bt.teacher = &target;
    n = ss_train_flat_size(t);
    grad = ss_malloc((size_t)n * sizeof(float) + 4);
    rc = loss_at(tb ? tb : t, &bt, &l);
    memcpy(grad, ss_train_grads(tb ? tb : t), (size_t)n * sizeof(float));
    w = ss_train_params(t);
    for (int p = 0; p < ss_train_num_params(t) && rc == 0; p++) {
        ss_train_param_info_t pi;

        ss_train_param(t, p, &pi);
        for (int64_t i = pi.offset; i < pi.offset + pi.numel; i++) {
            float keep = w[i];
            double fd, d;

            w[i] = keep + (float)h;
            rc |= loss_at(t, &bt, &lp);
            w[i] = keep - (float)h;
            rc |= loss_at(t, &bt, &lm);
            w[i] = keep;
            fd = (lp - lm) / (2 * h);
            d = fabs(fd - grad[i]);
            if (fabs(fd) > gmax)
                gmax = fabs(fd);
            if (d > worst)
                worst = d;
        }
    }
    ok(rc == 0 && ss_train_num_params(t) > 0 && gmax > 0 &&
       worst <= tol * gmax + 1e-4,
       "%s: gradient matches finite differences within %.0e (max err "
       "%.2e, max |g| %.2e, %d params)", name, tol, worst, gmax,
       ss_train_num_params(t));
    ss_free(grad);
    ss_free(tg);
    ss_train_free(tb);
    ss_train_free(t);
    ss_graph_free(g);
}

/* ---- cases ------------------------------------------------------------------ */

static void
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

static void
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

static void
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

static void
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

static void
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

static void
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

static void
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
static void
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
static void
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

static void
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

/* ---- Concat, Slice, Where ----------------------------------------------- */

static int
gb_bools(gb_t *b, const char *name, int nd, const int64_t *dims)
{
    ss_tensor_t *t = NULL;
    int64_t n;

    if (ss__tensor_new(SS_DTYPE_BOOL, nd, dims, &t, &b->err) < 0)
        return -1;
    n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((uint8_t *)t->data)[i] = urand() < 0.5;
    return ss_graph_add_value(b->g, name, t, &b->err);
}

static void
index_cases(void)
{
    {   /* x twice: its gradient is two gathers, the second adding */
        gb_t b;
        int64_t dx[3] = { 2, 3, 4 }, dz[3] = { 2, 2, 4 };
        int in[3];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, dx, -1, 1);
        in[1] = gb_param(&b, "z", 3, dz, -1, 1);
        in[2] = in[0];
        attr_i(&b, "axis", 1);
        check("Concat axis 1 (x, z, x)",
              gb_done(&b, gb_node(&b, "Concat", 3, in)), NULL);
    }
    {   /* negative start and step, two axes */
        gb_t b;
        int64_t d[3] = { 4, 6, 5 }, two = 2;
        int64_t st[2] = { 1, -1 }, en[2] = { 4, -7 }, ax[2] = { 0, 1 };
        int64_t sp[2] = { 2, -2 };
        int in[5];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -1, 1);
        in[1] = gb_ints(&b, "starts", 1, &two, st);
        in[2] = gb_ints(&b, "ends", 1, &two, en);
        in[3] = gb_ints(&b, "axes", 1, &two, ax);
        in[4] = gb_ints(&b, "steps", 1, &two, sp);
        check("Slice steps [2, -2], negative start",
              gb_done(&b, gb_node(&b, "Slice", 5, in)), NULL);
    }
    {   /* x[:, 3:] ++ x[:, :4]: overlapping slices, the second adds */
        gb_t b;
        int64_t d[2] = { 3, 5 }, one = 1;
        int x, s1, s2, in[3];

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        in[0] = x;
        in[1] = gb_ints(&b, "s1", 1, &one, (int64_t[]){ 3 });
        in[2] = gb_ints(&b, "e1", 1, &one, (int64_t[]){ 100 });
        s1 = gb_node(&b, "Slice", 3, in);
        in[1] = gb_ints(&b, "s2", 1, &one, (int64_t[]){ 0 });
        in[2] = gb_ints(&b, "e2", 1, &one, (int64_t[]){ 4 });
        s2 = gb_node(&b, "Slice", 3, in);
        attr_i(&b, "axis", 0);
        check("Slice twice of one value, then Concat",
              gb_done(&b, gb_node(&b, "Concat", 2, (int[]){ s1, s2 })),
              NULL);
    }
    {   /* Y broadcasts: its gradient sums over the rows it fills */
        gb_t b;
        int64_t d[3] = { 2, 3, 4 }, dy[2] = { 1, 4 };
        int in[3];

        gb_init(&b, 17);
        in[0] = gb_bools(&b, "cond", 3, d);
        in[1] = gb_param(&b, "x", 3, d, -1, 1);
        in[2] = gb_param(&b, "y", 2, dy, -1, 1);
        check("Where, Y [1, 4] broadcast",
              gb_done(&b, gb_node(&b, "Where", 3, in)), NULL);
    }
    {   /* X used twice: the second Where' adds into its gradient */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int x, c, w, in[3];

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        c = gb_bools(&b, "cond", 2, d);
        in[0] = c;
        in[1] = x;
        in[2] = gb_scalar(&b, "minus", -2.0f);
        w = gb_node(&b, "Where", 3, in);
        check("Where, scalar Y constant, X also added",
              gb_done(&b, gb_node(&b, "Add", 2, (int[]){ w, x })), NULL);
    }
}

/* ---- accumulation, frozen, refusal ---------------------------------------- */

static void
structure_cases(void)
{
    {   /* y = x * x + relu(x) + reshape(x): four uses of one value */
        gb_t b;
        int64_t d[2] = { 3, 4 }, sv[2] = { 3, 4 }, two = 2;
        int x, a, r, s, sh, y;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        a = gb_node(&b, "Mul", 2, (int[]){ x, x });
        r = gb_node(&b, "Relu", 1, &x);
        sh = gb_ints(&b, "shape", 1, &two, sv);
        s = gb_node(&b, "Reshape", 2, (int[]){ x, sh });
        y = gb_node(&b, "Add", 2, (int[]){ a, r });
        y = gb_node(&b, "Add", 2, (int[]){ y, s });
        check("one value used four times (accumulation)", gb_done(&b, y),
              NULL);
    }
    {   /* an MLP: Gemm, Relu, Gemm, Softmax */
        gb_t b;
        int64_t xd[2] = { 4, 6 }, w1[2] = { 8, 6 }, b1[1] = { 8 };
        int64_t w2[2] = { 8, 3 }, b2[1] = { 3 };
        int x, h, y;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, xd, -1, 1);
        attr_i(&b, "transB", 1);
        h = gb_node(&b, "Gemm", 3, (int[]){ x, gb_param(&b, "w1", 2, w1,
                                                         -1, 1),
                                             gb_param(&b, "b1", 1, b1, -1,
                                                      1) });
        h = gb_node(&b, "Relu", 1, &h);
        y = gb_node(&b, "Gemm", 3, (int[]){ h, gb_param(&b, "w2", 2, w2,
                                                         -1, 1),
                                             gb_param(&b, "b2", 1, b2, -1,
                                                      1) });
        y = gb_node(&b, "Softmax", 1, &y);
        check("Gemm-Relu-Gemm-Softmax chain", gb_done(&b, y), NULL);
    }
    {   /* frozen: no slot, no gradient; the rest still trains */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int in[2];
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;
        static const char *const fz[] = { "a" };
        ss_train_param_info_t pi;

        gb_init(&b, 17);
        in[0] = gb_param(&b, "a", 2, d, -1, 1);
        in[1] = gb_param(&b, "b", 2, d, -1, 1);
        g = gb_done(&b, gb_node(&b, "Mul", 2, in));
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        o.frozen = fz;
        o.n_frozen = 1;
        ok(g && ss_train_new(g, NULL, &o, &t, &err) == 0 &&
           ss_train_num_params(t) == 1 && ss_train_param(t, 0, &pi) == 0 &&
           strcmp(pi.name, "b") == 0,
           "a frozen initializer is no parameter");
        ss_train_free(t);
        t = NULL;
        {
            static const char *const both[] = { "a", "b" };

            o.frozen = both;
            o.n_frozen = 2;
            ok(g && ss_train_new(g, NULL, &o, &t, &err) == SS_EINVAL &&
               strstr(err.msg, "nothing to train") != NULL,
               "everything frozen is refused (%s)", err.msg);
        }
        ss_train_free(t);
        ss_graph_free(g);
    }
    {   /* no rule: refused, naming the op and the node */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int x;
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        x = gb_node(&b, "Floor", 1, &x);
        g = gb_done(&b, x);
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        ok(g && ss_train_new(g, NULL, &o, &t, &err) == SS_EUNSUPP &&
           strstr(err.msg, "no gradient rule for Floor (node 'Floor')"),
           "an op without a rule is refused by name (%s)", err.msg);
        ss_train_free(t);
        ss_graph_free(g);
    }
}

static void
table_covers(void)
{
    int n;
    const ss__rule_t *r = ss__rules(&n);
    bool all = n > 30;

    for (int i = 0; i < n; i++)
        all &= r[i].bwd != NULL && r[i].diff != 0 &&
               ss__op_find(r[i].op) != NULL;
    ok(all, "every rule has a backward, a diff mask and an engine op (%d "
       "rules)", n);
}

/* ---- QuantizeLinear -> DequantizeLinear: straight-through ------------------ */

/*
 * y = DQ(Q(x)) at scale 0.1, s8: MSE to a target t.  The rule is not a
 * derivative (rounding has none), so no finite differences: dx must be
 * dL/dy = 2 (y - t) / n where x is inside [-12.8, 12.7] and 0 where Q
 * clipped it.
 */
static void
qdq_cases(void)
{
    static const float xs[10] = { -20.0f, -0.33f, 0.05f, 1.21f, 15.0f,
                                  3.14f, -12.7f, 0.0f, 12.9f, -7.77f };
    float tg[10], *gx;
    int64_t d[2] = { 2, 5 };
    ss_tensor_t *zt = NULL, target = { SS_DTYPE_F32, 2, { 2, 5 }, tg };
    ss_train_batch_t batch = { NULL, NULL, &target };
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    double loss, worst = 0;
    int x, sc, zp, q, y, in[3], i;
    gb_t b;

    gb_init(&b, 13);
    x = gb_param(&b, "x", 2, d, 0, 1);
    memcpy(b.g->values[x].constant->data, xs, sizeof(xs));
    sc = gb_scalar(&b, "scale", 0.1f);
    ss__tensor_new(SS_DTYPE_I8, 0, NULL, &zt, &b.err);
    zp = ss_graph_add_value(b.g, "zero", zt, &b.err);
    in[0] = x;
    in[1] = sc;
    in[2] = zp;
    q = gb_node(&b, "QuantizeLinear", 3, in);
    in[0] = q;
    y = gb_node(&b, "DequantizeLinear", 3, in);
    g = gb_done(&b, y);
    for (i = 0; i < 10; i++)
        tg[i] = 0.5f * (float)(i % 3) - 0.25f;
    ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    ok(g != NULL && ss_train_new(g, NULL, &o, &t, &err) == 0,
       "a Q -> DQ pair trains (%s)", g ? err.msg : "no graph");
    if (t == NULL) {
        ss_graph_free(g);
        return;
    }
    is_int(ss_train_grads_compute(t, &batch, &loss, &err), 0,
           "gradients: %s", err.msg);
    gx = ss_train_grads(t);
    for (i = 0; i < 10; i++) {
        float r = nearbyintf(xs[i] / 0.1f);
        float qv = r < -128 ? -128 : r > 127 ? 127 : r;
        double want = r >= -128 && r <= 127
                      ? 2.0 * (qv * 0.1f - tg[i]) / 10.0 : 0.0;

        if (fabs(gx[i] - want) > worst)
            worst = fabs(gx[i] - want);
    }
    ok(worst < 1e-6, "straight through inside the range, 0 where "
       "clipped (max error %g)", worst);
    ok(gx[0] == 0 && gx[4] == 0 && gx[8] == 0 && gx[6] != 0,
       "-20, 15 and 12.9 clipped; -12.7 not");
    ss_train_free(t);
    ss_graph_free(g);
}

/*
 * The same pair with the scale learned (opts.scales, LSQ): its gradient
 * must be LSQ's, sum_i dL/dy_i * (q_i - x_i / s) where x_i was not
 * clipped and dL/dy_i * q_i where it was (z = 0), by hand in double; and
 * the first update is Adam on log s with no weight decay: s * exp(-scale_lr
 * * sign(g)) (Adam's first step is the sign), while weight decay 0.5
 * would have shrunk it by 1 - lr * 0.5 on top.
 */
static void
qdq_lsq_case(void)
{
    static const float xs[10] = { -20.0f, -0.33f, 0.05f, 1.21f, 15.0f,
                                  3.14f, -12.7f, 0.0f, 12.9f, -7.77f };
    static const char *const scales[] = { "scale" };
    float tg[10];
    int64_t d[2] = { 2, 5 };
    ss_tensor_t *zt = NULL, target = { SS_DTYPE_F32, 2, { 2, 5 }, tg };
    ss_train_batch_t batch = { NULL, NULL, &target };
    ss_train_param_info_t pi = { 0 };
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    double loss, want = 0, got = 0, s1 = 0, s1_want;
    int x, sc, zp, q, y, in[3], i, k = -1;
    gb_t b;

    gb_init(&b, 13);
    x = gb_param(&b, "x", 2, d, 0, 1);
    memcpy(b.g->values[x].constant->data, xs, sizeof(xs));
    sc = gb_scalar(&b, "scale", 0.1f);
    ss__tensor_new(SS_DTYPE_I8, 0, NULL, &zt, &b.err);
    zp = ss_graph_add_value(b.g, "zero", zt, &b.err);
    in[0] = x;
    in[1] = sc;
    in[2] = zp;
    q = gb_node(&b, "QuantizeLinear", 3, in);
    in[0] = q;
    y = gb_node(&b, "DequantizeLinear", 3, in);
    g = gb_done(&b, y);
    for (i = 0; i < 10; i++)
        tg[i] = 0.5f * (float)(i % 3) - 0.25f;
    ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    o.scales = scales;
    o.n_scales = 1;
    o.weight_decay = 0.5;
    ok(g != NULL && ss_train_new(g, NULL, &o, &t, &err) == 0,
       "a Q -> DQ pair with a learned scale trains (%s)",
       g ? err.msg : "no graph");
    if (t == NULL) {
        ss_graph_free(g);
        return;
    }
    for (i = 0; i < ss_train_num_params(t); i++)
        if (ss_train_param(t, i, &pi) == 0 && strcmp(pi.name, "scale") == 0)
            k = i;
    ok(k >= 0 && pi.numel == 1 && ss_train_num_params(t) == 2,
       "the scalar scale is a parameter, after x");
    is_int(ss_train_grads_compute(t, &batch, &loss, &err), 0,
           "gradients: %s", err.msg);
    if (k < 0) {
        ss_train_free(t);
        ss_graph_free(g);
        return;
    }
    ss_train_param(t, k, &pi);
    for (i = 0; i < 10; i++) {
        double r = nearbyint(xs[i] / 0.1f);
        double qv = r < -128 ? -128 : r > 127 ? 127 : r;
        double dy = 2.0 * (qv * 0.1f - tg[i]) / 10.0;

        want += r >= -128 && r <= 127 ? dy * (qv - xs[i] / 0.1f) : dy * qv;
    }
    got = ss_train_grads(t)[pi.offset];
    ok(fabs(got - want) <= 1e-5 * (fabs(want) + 1e-3), "dL/ds is LSQ's "
       "(%.7g, by hand %.7g)", got, want);
    is_int(ss_train_apply(t, &err), 0, "one update: %s", err.msg);
    s1 = ss_train_params(t)[pi.offset];
    s1_want = 0.1f * exp(-o.scale_lr * (got > 0 ? 1 : -1));
    ok(fabs(s1 - s1_want) <= 1e-6 * s1_want, "s -> s * exp(-scale_lr * "
       "sign g), no decay (%.7g, want %.7g)", s1, s1_want);
    ss_train_free(t);
    ss_graph_free(g);
}

/*
 * Per output channel (qat's learned weight scales): w [3, 4] behind
 * Q -> DQ on axis 0 with three scales and s8 zero points, MSE to a
 * target.  Each channel's scale gradient must be LSQ's over that
 * channel's row only (by hand, in double), and the first update moves
 * each scale by exp(-scale_lr * sign of its own gradient).
 */
static void
qdq_lsq_axis_case(void)
{
    static const float ws[12] = { -20.0f, -0.33f, 0.05f, 1.21f,
                                  15.0f, 3.14f, -60.7f, 0.0f,
                                  0.9f, -7.77f, 2.5f, -0.01f };
    static const float s0[3] = { 0.1f, 0.5f, 0.02f };
    static const char *const scales[] = { "wscale" };
    float tg[12];
    int64_t d[2] = { 3, 4 }, c3 = 3;
    ss_tensor_t *st = NULL, *zt = NULL;
    ss_tensor_t target = { SS_DTYPE_F32, 2, { 3, 4 }, tg };
    ss_train_batch_t batch = { NULL, NULL, &target };
    ss_train_param_info_t pi = { 0 };
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    double loss, want[3] = { 0 }, mag[3] = { 0 }, worst = 0, worst_s = 0;
    int x, sc, zp, q, y, in[3], i, c, k = -1;
    float got[3];
    gb_t b;

    gb_init(&b, 13);
    x = gb_param(&b, "w", 2, d, 0, 1);
    memcpy(b.g->values[x].constant->data, ws, sizeof(ws));
    ss__tensor_new(SS_DTYPE_F32, 1, &c3, &st, &b.err);
    memcpy(st->data, s0, sizeof(s0));
    sc = ss_graph_add_value(b.g, "wscale", st, &b.err);
    ss__tensor_new(SS_DTYPE_I8, 1, &c3, &zt, &b.err);
    zp = ss_graph_add_value(b.g, "zero", zt, &b.err);
    in[0] = x;
    in[1] = sc;
    in[2] = zp;
    attr_i(&b, "axis", 0);
    q = gb_node(&b, "QuantizeLinear", 3, in);
    in[0] = q;
    attr_i(&b, "axis", 0);
    y = gb_node(&b, "DequantizeLinear", 3, in);
    g = gb_done(&b, y);
    for (i = 0; i < 12; i++)
        tg[i] = 0.5f * (float)(i % 3) - 0.25f;
    ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    o.scales = scales;
    o.n_scales = 1;
    ok(g != NULL && ss_train_new(g, NULL, &o, &t, &err) == 0,
       "a per-channel Q -> DQ pair with learned scales trains (%s)",
       g ? err.msg : "no graph");
    if (t == NULL) {
        ss_graph_free(g);
        return;
    }
    for (i = 0; i < ss_train_num_params(t); i++)
        if (ss_train_param(t, i, &pi) == 0 && strcmp(pi.name, "wscale") == 0)
            k = i;
    is_int(ss_train_grads_compute(t, &batch, &loss, &err), 0,
           "gradients: %s", err.msg);
    if (k < 0 || pi.numel != 3) {
        ok(0, "the three scales are one parameter");
        ss_train_free(t);
        ss_graph_free(g);
        return;
    }
    for (i = 0; i < 12; i++) {
        double sc_ = s0[i / 4];
        double r = nearbyint(ws[i] / (float)sc_);
        double qv = r < -128 ? -128 : r > 127 ? 127 : r;
        double dy = 2.0 * (qv * (float)sc_ - tg[i]) / 12.0;

        double term = r >= -128 && r <= 127 ? dy * (qv - ws[i] / sc_)
                                            : dy * qv;

        want[i / 4] += term;
        mag[i / 4] += fabs(dy) * (fabs(qv) + fabs(ws[i] / sc_));
    }
    for (c = 0; c < 3; c++) {
        double e;

        got[c] = ss_train_grads(t)[pi.offset + c];
        /* relative to the parts: q and x / s cancel, and the trainer
         * passes dy through f32 (dq = dy s) */
        e = fabs(got[c] - want[c]) / (mag[c] + 1e-3);
        worst = e > worst ? e : worst;
    }
    ok(worst <= 1e-5, "each channel's dL/ds is LSQ's over its own row "
       "(%.6g %.6g %.6g; by hand %.6g %.6g %.6g)", got[0], got[1], got[2],
       want[0], want[1], want[2]);
    is_int(ss_train_apply(t, &err), 0, "one update: %s", err.msg);
    for (c = 0; c < 3; c++) {
        double s1 = ss_train_params(t)[pi.offset + c];
        double s1_want = s0[c] * exp(-o.scale_lr * (got[c] > 0 ? 1 : -1));

        worst_s = fmax(worst_s, fabs(s1 - s1_want) / s1_want);
    }
    ok(worst_s <= 1e-6, "each scale moves by exp(-scale_lr * its own sign) "
       "(worst %.2g)", worst_s);
    ss_train_free(t);
    ss_graph_free(g);
}

/* ---- losses against hand-computed values ---------------------------------- */

/*
 * z = [[1, 2, 3], [0, 0, 0]], labels [2, 1], teacher [[3, 2, 1], [1, 0, 0]],
 * T = 2, target [[0.5, 1, -1], [0, 2, 0]]:
 *   CE  = (log(1 + e^-1 + e^-2) + log 3) / 2            = 0.753109126556
 *   KL  = T^2 mean_r sum_j p (log p - log q), p, q at T  = 0.700647136038
 *   KD  = 0.3 KL + 0.7 CE (alpha 0.3)                    = 0.737370529401
 *   MSE = (0.25 + 1 + 16 + 0 + 4 + 0) / 6                = 3.541666666667
 * dCE = (softmax(z) - onehot) / 2, dKL = T (q - p) / 2.
 */
static void
loss_cases(void)
{
    static const float z[6] = { 1, 2, 3, 0, 0, 0 };
    static float tz[6] = { 3, 2, 1, 1, 0, 0 };
    static float mt[6] = { 0.5f, 1, -1, 0, 2, 0 };
    static int64_t lab[2] = { 2, 1 };
    static const double dce[6] = { 0.04501529, 0.12236424, -0.16737952,
                                   0.16666667, -0.33333333, 0.16666667 };
    static const double dkl[6] = { -0.32015667, 0, 0.32015667,
                                   -0.11852943, 0.05926471, 0.05926471 };
    static const struct { ss_loss_kind_t k; const char *nm; double want;
                        } c[] = {
        { SS_LOSS_CE, "cross-entropy", 0.753109126556 },
        { SS_LOSS_KL, "KL at T=2 (x T^2)", 0.700647136038 },
        { SS_LOSS_KD, "KD 0.3 KL + 0.7 CE", 0.737370529401 },
        { SS_LOSS_MSE, "MSE", 3.541666666667 },
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        gb_t b;
        int64_t d[2] = { 2, 3 };
        int v;
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;
        ss_tensor_t lt = { SS_DTYPE_I64, 1, { 2 }, lab };
        ss_tensor_t tt = { SS_DTYPE_F32, 2, { 2, 3 }, tz };
        ss_train_batch_t bt = { NULL, &lt, &tt };
        double l = 0, worst = 0;
        ss_train_param_info_t pi;
        const float *gr;

        if (c[i].k == SS_LOSS_MSE)
            tt.data = mt;
        gb_init(&b, 17);
        v = gb_param(&b, "z", 2, d, 0, 1);
        memcpy(b.g->values[v].constant->data, z, sizeof(z));
        g = gb_done(&b, gb_node(&b, "Identity", 1, &v));
        ss_train_opts_default(&o);
        o.loss = c[i].k;
        o.temperature = 2;
        o.alpha = 0.3;
        if (!ok(g && ss_train_new(g, NULL, &o, &t, &err) == 0 &&
                ss_train_grads_compute(t, &bt, &l, &err) == 0,
                "%s: computed", c[i].nm)) {
            tap_diag("%s", err.msg);
            ss_train_free(t);
            ss_graph_free(g);
            continue;
        }
        is_close(l, c[i].want, 1e-6, 1e-9, "%s: loss", c[i].nm);
        /* the untied Identity output is the parameter the loss reads */
        ss_train_param(t, 1, &pi);
        gr = ss_train_grads(t) + pi.offset;
        for (int j = 0; j < 6; j++) {
            double w = c[i].k == SS_LOSS_CE ? dce[j]
                     : c[i].k == SS_LOSS_KL ? dkl[j]
                     : c[i].k == SS_LOSS_KD ? 0.3 * dkl[j] + 0.7 * dce[j]
                     : 2.0 * (z[j] - mt[j]) / 6.0;

            if (fabs(gr[j] - w) > worst)
                worst = fabs(gr[j] - w);
        }
        ok(worst < 1e-6, "%s: gradient (max err %.2e)", c[i].nm, worst);
        ss_train_free(t);
        ss_graph_free(g);
    }
}

/* ---- optimizers against numpy ----------------------------------------------- */

static ss_graph_t *
optim_graph(void)
{
    gb_t b;
    int64_t xd[2] = { 4, 5 }, wd[1] = { 5 };
    int x, w;

    gb_init(&b, 17);
    x = ss_graph_add_value(b.g, "x", NULL, &b.err);
    b.g->values[x].dtype = SS_DTYPE_F32;
    b.g->values[x].ndim = 2;
    memcpy(b.g->values[x].dims, xd, sizeof(xd));
    b.g->n_inputs = 1;
    b.g->inputs = ss_malloc(sizeof(int));
    b.g->inputs[0] = x;
    b.g->input_info = ss_calloc(1, sizeof(ss_io_info_t));
    w = gb_param(&b, "w", 1, wd, -1, 1);
    return gb_done(&b, gb_node(&b, "Mul", 2, (int[]){ x, w }));
}

static void
optim_cases(void)
{
    static const double W0[5] = { 0.5, -1.0, 2.0, 0.0, -0.3 };
    static const double H[5] = { 0.5, 1.0, 2.0, 0.1, 3.0 };
    const char *top = getenv("top_srcdir");
    char p[512];
    ss_npz_t *ref = NULL;
    ss_err_t err;
    static const char *const names[] = { "adamw", "sgd", "sgd_nesterov",
                                         "sophia" };

    snprintf(p, sizeof(p), "%s/tests/fixtures/train/optim_ref.npz",
             top ? top : ".");
    if (!ok(ss_npz_read(p, 1 << 20, &ref, &err) == 0, "optim_ref.npz")) {
        tap_diag("%s", err.msg);
        return;
    }
    for (int c = 0; c < 4; c++) {
        ss_graph_t *g = optim_graph();
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_tensor_t xs = { SS_DTYPE_F32, 2, { 4, 5 }, NULL };
        const ss_tensor_t *r = ss_npz_tensor(ref, ss_npz_find(ref,
                                                              names[c]));
        double worst = 0;
        int rc;

        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        if (c == 0) {
            o.opt = SS_OPT_ADAMW;
            o.lr = 0.1; o.weight_decay = 0.1; o.beta1 = 0.9; o.beta2 = 0.99;
            o.eps = 1e-8; o.warmup_steps = 2; o.total_steps = 6;
            o.sched = SS_SCHED_COSINE; o.min_lr_ratio = 0.1;
        } else if (c == 1) {
            o.opt = SS_OPT_SGD;
            o.lr = 0.1; o.weight_decay = 0.01; o.momentum = 0.9;
            o.total_steps = 6; o.sched = SS_SCHED_LINEAR; o.clip_norm = 1;
        } else if (c == 2) {
            o.opt = SS_OPT_SGD;
            o.lr = 0.05; o.weight_decay = 0; o.momentum = 0.8;
            o.nesterov = 1;
        } else {
            o.opt = SS_OPT_SOPHIA;
            o.lr = 0.05; o.weight_decay = 0.1; o.beta1 = 0.9; o.rho = 0.04;
        }
        rc = g ? ss_train_new(g, &xs, &o, &t, &err) : -1;
        if (!ok(rc == 0 && r != NULL && r->dims[0] == 6,
                "%s: trainer built", names[c])) {
            tap_diag("%s", err.msg);
            ss_train_free(t);
            ss_graph_free(g);
            continue;
        }
        for (int i = 0; i < 5; i++) {
            ss_train_params(t)[i] = (float)W0[i];
            if (c == 3)
                t->v[i] = (float)H[i];
        }
        for (int s = 0; s < 6 && rc == 0; s++) {
            for (int i = 0; i < 5; i++)
                ss_train_grads(t)[i] = (float)(sin(1.3 * i + 0.7 * s) *
                                               (1 + 0.5 * i));
            rc = ss_train_apply(t, &err);
            for (int i = 0; i < 5; i++) {
                double want = ((const float *)r->data)[s * 5 + i];
                double d = fabs(ss_train_params(t)[i] - want) /
                           (fabs(want) + 1e-3);

                if (d > worst)
                    worst = d;
            }
        }
        ok(rc == 0 && worst < 1e-5, "%s: 6 steps match numpy (max rel err "
           "%.2e)", names[c], worst);
        ss_train_free(t);
        ss_graph_free(g);
    }
    ss_npz_free(ref);
}

/* ---- the hyper-parameter table ------------------------------------------ */

static void
table_cases(void)
{
    ss_train_opts_t o;
    ss_err_t err;
    int n, bad = 0;
    const ss_train_param_row_t *r = ss_train_params_table(&n);

    ss_train_opts_default(&o);
    ok(ss_train_opts_check(&o, &err) == 0 && o.opt == SS_OPT_ADAMW &&
       o.lr == 1e-3 && o.loss == SS_LOSS_CE, "defaults are valid (AdamW, "
       "lr 1e-3, cross-entropy)");
    for (int i = 0; i < n; i++)
        bad += r[i].name == NULL || r[i].doc == NULL ||
               (r[i].type != SS_TP_ENUM && (r[i].dflt < r[i].min ||
                                            r[i].dflt > r[i].max));
    ok(n >= 20 && bad == 0, "%d rows, defaults inside their ranges", n);
    ok(ss_train_opts_set(&o, "lr", 0, &err) == SS_EINVAL &&
       strstr(err.msg, "'lr'"), "lr 0 is refused (%s)", err.msg);
    ok(ss_train_opts_set(&o, "lr", 0.5, &err) == 0 && o.lr == 0.5,
       "lr 0.5 is taken");
    ok(ss_train_opts_set(&o, "hessian_every", 2.5, &err) == SS_EINVAL,
       "an integer parameter refuses 2.5");
    ok(ss_train_opts_set(&o, "warmup_steps", 100, &err) == 0 &&
       o.warmup_steps == 100, "warmup_steps (int64) is set");
    ok(ss_train_opts_set(&o, "no_such", 1, &err) == SS_EINVAL,
       "an unknown name is refused");
    ok(ss_train_opts_set_name(&o, "optimizer", "sophia", &err) == 0 &&
       o.opt == SS_OPT_SOPHIA, "optimizer sophia by name");
    ok(ss_train_opts_set_name(&o, "optimizer", "lion", &err) == SS_EINVAL,
       "an unknown optimizer is refused (%s)", err.msg);
    o.beta1 = 1.0;
    ok(ss_train_opts_check(&o, &err) == SS_EINVAL, "beta1 = 1 is refused");
    ss_train_opts_default(&o);
    o.warmup_steps = 10;
    o.total_steps = 110;
    o.sched = SS_SCHED_COSINE;
    o.min_lr_ratio = 0.1;
    is_close(ss__sched_lr(&o, 0), 1e-4, 1e-9, 0, "warm-up: step 0 is lr/10");
    is_close(ss__sched_lr(&o, 9), 1e-3, 1e-9, 0, "warm-up ends at lr");
    is_close(ss__sched_lr(&o, 60), 0.55e-3, 1e-9, 0, "cosine halfway");
    is_close(ss__sched_lr(&o, 500), 1e-4, 1e-9, 0, "cosine floor");
}

/* Sophia end to end: Hessian estimates are taken (h > 0), the loss falls,
 * and the same seed gives the same bytes. */
static void
sophia_run(void)
{
    float out[2][16];

    for (int k = 0; k < 2; k++) {
        gb_t b;
        int64_t xd[2] = { 4, 6 }, w1[2] = { 6, 5 }, b1[1] = { 5 };
        int x, y;
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;
        static int64_t lab[4] = { 0, 1, 2, 4 };
        ss_tensor_t lt = { SS_DTYPE_I64, 1, { 4 }, lab };
        ss_train_batch_t bt = { NULL, &lt, NULL };
        double l0 = 0, l = 0, hs = 0;
        int rc;

        seed = 99;
        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, xd, -1, 1);
        y = gb_node(&b, "Gemm", 3, (int[]){ x, gb_param(&b, "w", 2, w1, -1,
                                                         1),
                                             gb_param(&b, "b", 1, b1, -1,
                                                      1) });
        g = gb_done(&b, y);
        ss_train_opts_default(&o);
        o.opt = SS_OPT_SOPHIA;
        o.lr = 0.02;
        o.hessian_every = 3;
        o.seed = 7;
        rc = g ? ss_train_new(g, NULL, &o, &t, &err) : -1;
        for (int s = 0; s < 30 && rc == 0; s++)
            rc = ss_train_step(t, &bt, s == 0 ? &l0 : &l, &err);
        if (rc == 0)
            for (int64_t i = 0; i < ss_train_flat_size(t); i++)
                hs += t->v[i];
        if (k == 0)
            ok(rc == 0 && hs > 0 && l < 0.5 * l0, "Sophia trains (loss %.4f "
               "-> %.4f, sum h %.3g)", l0, l, hs);
        if (rc == 0)
            memcpy(out[k], ss_train_params(t), sizeof(out[k]));
        ss_train_free(t);
        ss_graph_free(g);
    }
    ok(memcmp(out[0], out[1], sizeof(out[0])) == 0,
       "Sophia: the same seed gives the same bytes");
}

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
        tg[i] = (float)(urand() * 2 - 1);
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

static void
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
static void
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
static void
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

static void
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

static void
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
            tg[j] = (float)(urand() * 2 - 1);
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
 * gradient.  The bf16 trainer's gradient against finite differences of
 * the f32 one (3e-2 of the largest, as bf16_cases), and the one bf16
 * activation.  k 1: the probabilities are read by a Mul too (an f32
 * copy, whose gradient adds into the bf16 one); k 2: the second MatMul
 * broadcasts them over a batch dim of V (their gradient is summed over
 * it in f32: an f32 copy).  Last in main, after vector_cases.
 */
static void
attention16_cases(void)
{
    static const char *const nm[3] = {
        "bf16 attention: MatMul / 2, Softmax (bf16), MatMul",
        "bf16 attention: the probabilities also read by a Mul",
        "bf16 attention: the probabilities broadcast over V's batch" };

    if (!ss_dnn_bf16_native(NULL)) {
        ok(1, "# SKIP bf16 attention: oneDNN does not run bf16 here");
        return;
    }
    for (int k = 0; k < 3; k++) {
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
        if (k == 1)
            y = gb_node(&b, "Add", 2, (int[]){
                y, gb_node(&b, "MatMul", 2, (int[]){
                       gb_node(&b, "Mul", 2, (int[]){ p, p }), v }) });
        check_bf16(nm[k], gb_done(&b, y), NULL, 3e-2);
        ok(bf16_acts == 1, "%s: %d activation in bf16 (the "
           "probabilities)", nm[k], bf16_acts);
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
static void
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

int
main(void)
{
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
    return tap_done();
}
