/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_train_grad's cases: QuantizeLinear/DequantizeLinear, losses, optimizers, the
 * hyper-parameter table.
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

/* ---- QuantizeLinear -> DequantizeLinear: straight-through ------------------ */

/* x for both Q -> DQ cases: inside [-12.8, 12.7], on its edges and past them */
static const float qdq_xs[10] = { -20.0f, -0.33f, 0.05f, 1.21f, 15.0f,
                                  3.14f, -12.7f, 0.0f, 12.9f, -7.77f };

/*
 * y = DQ(Q(x)) at scale 0.1 ("scale", a constant), s8 zero point, x a
 * parameter holding qdq_xs: the graph qdq_cases and qdq_lsq_case train; tg
 * gets their MSE target.  NULL if it cannot be built.
 */
static ss_graph_t *
qdq_graph(float tg[10])
{
    int64_t d[2] = { 2, 5 };
    ss_tensor_t *zt = NULL;
    int x, sc, zp, q, y, in[3], i;
    gb_t b;

    gb_init(&b, 13);
    x = gb_param(&b, "x", 2, d, 0, 1);
    memcpy(b.g->values[x].constant->data, qdq_xs, sizeof(qdq_xs));
    sc = gb_scalar(&b, "scale", 0.1f);
    ss__tensor_new(SS_DTYPE_I8, 0, NULL, &zt, &b.err);
    zp = ss_graph_add_value(b.g, "zero", zt, &b.err);
    in[0] = x;
    in[1] = sc;
    in[2] = zp;
    q = gb_node(&b, "QuantizeLinear", 3, in);
    in[0] = q;
    y = gb_node(&b, "DequantizeLinear", 3, in);
    for (i = 0; i < 10; i++)
        tg[i] = 0.5f * (float)(i % 3) - 0.25f;
    return gb_done(&b, y);
}

/*
 * y = DQ(Q(x)) at scale 0.1, s8: MSE to a target t.  The rule is not a
 * derivative (rounding has none), so no finite differences: dx must be
 * dL/dy = 2 (y - t) / n where x is inside [-12.8, 12.7] and 0 where Q
 * clipped it.
 */
void
qdq_cases(void)
{
    float tg[10], *gx;
    ss_tensor_t target = { SS_DTYPE_F32, 2, { 2, 5 }, tg };
    ss_train_batch_t batch = { NULL, NULL, &target };
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    double loss, worst = 0;
    int i;

    g = qdq_graph(tg);
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
        float r = nearbyintf(qdq_xs[i] / 0.1f);
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
void
qdq_lsq_case(void)
{
    static const char *const scales[] = { "scale" };
    float tg[10];
    ss_tensor_t target = { SS_DTYPE_F32, 2, { 2, 5 }, tg };
    ss_train_batch_t batch = { NULL, NULL, &target };
    ss_train_param_info_t pi = { 0 };
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_graph_t *g;
    ss_err_t err = { 0 };
    double loss, want = 0, got = 0, s1 = 0, s1_want;
    int i, k = -1;

    g = qdq_graph(tg);
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
        double r = nearbyint(qdq_xs[i] / 0.1f);
        double qv = r < -128 ? -128 : r > 127 ? 127 : r;
        double dy = 2.0 * (qv * 0.1f - tg[i]) / 10.0;

        want += r >= -128 && r <= 127 ? dy * (qv - qdq_xs[i] / 0.1f) : dy * qv;
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
void
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
void
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

void
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

void
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
void
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

        gb_seed = 99;
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
