/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Taps (engine.h): a plan from ss_plan_new_tapped calls the hook with
 * each tapped value, whole or in row chunks; the hook changes a Gemm's
 * output in place; the activation after it is offered to the hook
 * (ss_tap_act_t), which may apply it itself (returns 1) or leave it to
 * the plan (returns 0).  Every way must give what the model computes
 * with the change, checked against values computed here: an MLP
 * x -> Gemm -> act -> Gemm with act a Relu or the Erf decomposition of
 * GELU that torch.onnx.export writes, batches run whole and in chunks of
 * 3 rows (a tail of 1), a chunked output that only its activation reads
 * held as one chunk (plan_chunkbuf.c).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

#define IN 16
#define HID 32
#define OUT 8

static uint32_t seed = 7;

static float
frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float w1[HID * IN], b1[HID], w2[OUT * HID], b2[OUT];

/* What the hook adds to row `row`, column j of the first Gemm's output. */
static float
delta(int64_t row, int64_t j)
{
    return 0.05f * (float)(row % 7) - 0.01f * (float)j;
}

static float
act_ref(int gelu, float v)
{
    return gelu ? 0.5f * v * (1.0f + erff(v / sqrtf(2.0f)))
                : v > 0.0f ? v : 0.0f;
}

typedef struct hook {
    int gelu;
    int apply;          /* apply an offered activation (return 1) */
    int offers;         /* calls at h with an activation offered */
    int bad_offer;      /* an offer of the wrong kind, or at another tap */
    int64_t rows_h;     /* rows of h seen */
    int g_wrong;        /* g's rows differ from act(h + delta) */
    float *hd;          /* h + delta as the hook left it, [batch, HID] */
} hook_t;

/* Taps: 0 "h" (the first Gemm's output), 1 "g" (the activation's
 * output, the second Gemm's input). */
static int
on_tap(void *user, int tap, ss_tensor_t *value, int64_t row0,
       const ss_tap_act_t *act, ss_err_t *err)
{
    hook_t *k = user;
    float *v = value->data;
    int64_t n = ss_tensor_numel(value) / HID;

    (void)err;
    if (tap == 1) {
        for (int64_t i = 0; i < n * HID; i++)
            if (fabsf(v[i] - act_ref(k->gelu, k->hd[row0 * HID + i]))
                > 1e-5f * (1.0f + fabsf(v[i])))
                k->g_wrong = 1;
        k->bad_offer |= act != NULL;
        return 0;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < HID; j++) {
            v[i * HID + j] += delta(row0 + i, j);
            k->hd[(row0 + i) * HID + j] = v[i * HID + j];
        }
    k->rows_h += n;
    if (act == NULL)
        return 0;
    k->offers++;
    if (act->kind != (k->gelu ? SS_TAP_ACT_GELU_ERF : SS_TAP_ACT_RELU)
        || (!k->gelu && act->alpha != 0.0f))
        k->bad_offer = 1;
    if (!k->apply)
        return 0;
    for (int64_t i = 0; i < n * HID; i++)
        ((float *)act->dst)[i] = act_ref(k->gelu, v[i]);
    return 1;
}

static ss_graph_t *
build(int gelu)
{
    mb_t *b = mb_new(17);
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, IN });
    mb_init_f32(b, "w1", 2, (int64_t[]){ HID, IN }, w1);
    mb_init_f32(b, "b1", 1, (int64_t[]){ HID }, b1);
    mb_init_f32(b, "w2", 2, (int64_t[]){ OUT, HID }, w2);
    mb_init_f32(b, "b2", 1, (int64_t[]){ OUT }, b2);
    n = mb_node(b, "Gemm", "fc1", "x,w1,b1", "h");
    mb_attr_int(b, n, "transB", 1);
    if (gelu) {
        /* torch.onnx.export's F.gelu at opset 17 */
        mb_init_f32(b, "sqrt2", 0, NULL, (float[]){ 1.4142135381698608f });
        mb_init_f32(b, "one", 0, NULL, (float[]){ 1.0f });
        mb_init_f32(b, "half", 0, NULL, (float[]){ 0.5f });
        mb_node(b, "Div", "div", "h,sqrt2", "d");
        mb_node(b, "Erf", "erf", "d", "e");
        mb_node(b, "Add", "add1", "e,one", "e1");
        mb_node(b, "Mul", "mul", "h,e1", "m");
        mb_node(b, "Mul", "mul2", "m,half", "g");
    } else {
        mb_node(b, "Relu", "relu", "h", "g");
    }
    n = mb_node(b, "Gemm", "fc2", "g,w2,b2", "y");
    mb_attr_int(b, n, "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ -1, OUT });
    if (mb_load(b, &g, &err) < 0
        || ss_graph_set_taps(g, 2, (const char *const[]){ "h", "g" },
                             &err) < 0) {
        tap_diag("graph: %s", err.msg);
        ss_graph_free(g);
        g = NULL;
    }
    return g;
}

/* y = w2 act(w1 x + b1 + delta) + b2, in double. */
static void
reference(int gelu, const float *x, int64_t batch, float *y)
{
    for (int64_t r = 0; r < batch; r++) {
        float h[HID];

        for (int j = 0; j < HID; j++) {
            double s = b1[j];

            for (int k = 0; k < IN; k++)
                s += (double)x[r * IN + k] * w1[j * IN + k];
            h[j] = act_ref(gelu, (float)s + delta(r, j));
        }
        for (int o = 0; o < OUT; o++) {
            double s = b2[o];

            for (int j = 0; j < HID; j++)
                s += (double)h[j] * w2[o * HID + j];
            y[r * OUT + o] = (float)s;
        }
    }
}

static void
run_case(int gelu, int64_t batch, int chunked, int apply)
{
    const char *what = gelu ? "GELU (Erf)" : "Relu";
    ss_graph_t *g = build(gelu);
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = 2,
                       .dims = { batch, IN } };
    ss_tensor_t out = { .dtype = SS_DTYPE_F32, .ndim = 2,
                        .dims = { batch, OUT } };
    float *x = malloc((size_t)(batch * IN) * sizeof(float));
    float *y = calloc((size_t)(batch * OUT), sizeof(float));
    float *want = malloc((size_t)(batch * OUT) * sizeof(float));
    hook_t k = { .gelu = gelu, .apply = apply };
    double worst = 0;
    int rc = -1;

    k.hd = calloc((size_t)(batch * HID), sizeof(float));
    for (int64_t i = 0; i < batch * IN; i++)
        x[i] = frand();
    in.data = x;
    out.data = y;
    if (chunked)
        setenv("SS_ENGINE_TAP_CHUNK_ROWS", "3", 1);
    if (g != NULL && ss_plan_new_tapped(g, &in, &p, &err) == 0
        && ss_exec_ctx_new(1, &c, &err) == 0)
        rc = ss_plan_run_tapped(p, c, &in, &out, on_tap, &k, &err);
    unsetenv("SS_ENGINE_TAP_CHUNK_ROWS");
    if (rc < 0)
        tap_diag("%s: %s", what, err.msg);
    reference(gelu, x, batch, want);
    for (int64_t i = 0; i < batch * OUT; i++) {
        double d = fabs((double)y[i] - want[i]) / (fabs(want[i]) + 1e-3);

        if (!(d <= worst))
            worst = d;
    }
    ok(rc == 0 && worst < 1e-4, "%s, batch %lld %s, hook %s an offered "
       "activation: outputs match (max rel err %.2g)", what,
       (long long)batch, chunked ? "in chunks of 3" : "whole",
       apply ? "applies" : "leaves", worst);
    ok(k.rows_h == batch && k.offers == (chunked ? (batch + 2) / 3 : 1)
       && !k.bad_offer, "%s, batch %lld %s: the activation offered at "
       "each call of h (%d calls), of its kind, and only there", what,
       (long long)batch, chunked ? "in chunks" : "whole", k.offers);
    ok(!k.g_wrong, "%s, batch %lld %s, hook %s: the next tap sees the "
       "activation of the changed rows", what, (long long)batch,
       chunked ? "in chunks" : "whole", apply ? "applies" : "leaves");
    free(x);
    free(y);
    free(want);
    free(k.hd);
    ss_exec_ctx_free(c);
    ss_plan_free(p);
    ss_graph_free(g);
}

int
main(void)
{
    for (int i = 0; i < HID * IN; i++)
        w1[i] = frand() * 0.5f;
    for (int i = 0; i < HID; i++)
        b1[i] = frand() * 0.5f;
    for (int i = 0; i < OUT * HID; i++)
        w2[i] = frand() * 0.5f;
    for (int i = 0; i < OUT; i++)
        b2[i] = frand() * 0.5f;
    for (int gelu = 0; gelu < 2; gelu++)
        for (int chunked = 0; chunked < 2; chunked++)
            for (int apply = 0; apply < 2; apply++)
                run_case(gelu, 10, chunked, apply);
    return tap_done();
}
