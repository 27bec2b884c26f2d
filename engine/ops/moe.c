/* SPDX-License-Identifier: Apache-2.0 */
/*
 * com.microsoft.MoE, ONNX Runtime's mixture-of-experts contrib op: the
 * reference kernel.  The plan replaces it by its sparse MoE step (engine/
 * plan/pass_moe.c) whenever the weights are constants; this kernel is the
 * fallback and the reference the step is tested against.
 *
 * Semantics (ORT's contrib op docs and its CPU kernel, moe_cpu.cc):
 *   input          [rows, hidden] or [batch, seq, hidden]
 *   router_probs   [rows, E], router LOGITS: softmax over E first
 *   fc1_experts_weights  [E, inter, hidden] (or the legacy shape
 *                        [E, hidden, inter]: same bytes, see below)
 *   fc1_experts_bias     [E, inter], optional
 *   fc2_experts_weights  [E, hidden, inter] (legacy [E, inter, hidden])
 *   fc2_experts_bias     [E, hidden], optional
 *   fc3_experts_weights, fc3_experts_bias  optional, shaped as fc1: a
 *                  gated FFN, fc2_e(act(fc1_e(x)) * fc3_e(x)) (Mixtral's
 *                  w2(silu(w1 x) * w3 x) with activation_type silu)
 *   k              experts per row (default 1); the k largest softmax
 *                  probabilities, ties to the HIGHER expert index (ORT
 *                  sorts (probability, index) pairs descending)
 *   normalize_routing_weights  gates divided by their sum over the k
 *   activation_type  relu (default), gelu (tanh approximation), silu,
 *                  identity; swiglu refused
 *   output[r] = sum over the chosen e, ascending, of
 *               gate * (fc2_e(act(fc1_e(x[r]) + b1_e)) + b2_e)
 * com.microsoft.QMoE: the same with quantized expert weights: inputs
 * input, router_probs, then fc1, fc2, fc3 each as (uint8 weights,
 * float32 scales, optional bias); expert_weight_bits 8 (a byte per
 * weight, zero point 128) or 4 (two per byte, the low nibble first, zero
 * point 8); fc1/fc3 [E, inter, hidden / (8 / bits)], fc2 [E, hidden,
 * inter / (8 / bits)] (rows are output features); scales [E, rows], or
 * with block_size > 0 [E, rows, K / block_size]: w = (q - zp) * scale.
 * This is our reading of ORT's contrib op docs and CPU kernel; it is
 * checked against a numpy reference (tests/fixtures/make_moe_ort.py),
 * not against onnxruntime, which was not installed when it was written.
 * The legacy shapes are recognised as ORT does (inter != hidden and fc2's
 * dim 1 is inter) and, as ORT's CPU kernel does, read as the same bytes:
 * each expert's fc1 is always [inter, hidden] in memory and fc2 [hidden,
 * inter] (checked against onnxruntime 1.30: transposing them is wrong).
 *
 * THREADS: [any]; no state.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ops/moe.h"
#include "engine/ops/ops.h"

static int
is_f32(const ss_tensor_t *t)
{
    return t != NULL && t->dtype == SS_DTYPE_F32;
}

int
ss__ops_moe_geom(const ss_node_t *n, const ss_tensor_t *const *in,
                 ss_ort_moe_t *g, ss_err_t *err)
{
    const ss_tensor_t *x, *r, *w1, *w2, *w3;
    const char *act = ss__attr_string(n, "activation_type", "relu");
    int q = strcmp(n->op_type, "com.microsoft.QMoE") == 0, rc;
    int64_t hin, hout, pack;

    memset(g, 0, sizeof(*g));
    if (q) {
        /* input, router, then (weights, scales, bias) of fc1, fc2, fc3 */
        for (int j = 0; j < 3; j++) {
            g->w[j] = 2 + 3 * j;
            g->s[j] = 3 + 3 * j;
            g->b[j] = 4 + 3 * j;
        }
        g->bits = (int)ss__attr_int(n, "expert_weight_bits", 4);
        g->block = ss__attr_int(n, "block_size", 0);
        if (g->bits != 8 && g->bits != 4)
            return ss__ops_fail(err, n, "expert_weight_bits must be 4 or "
                                "8, not %d", g->bits);
    } else {
        /* input, router, fc1 w, b, fc2 w, b, fc3 w, b */
        for (int j = 0; j < 3; j++) {
            g->w[j] = 2 + 2 * j;
            g->s[j] = -1;
            g->b[j] = 3 + 2 * j;
        }
    }
    if (n->n_inputs < g->w[1] + 1)
        return ss__ops_fail(err, n, "needs at least %d inputs",
                            g->w[1] + 1);
    /* input, router and the fc1/fc2 weights are required; the rest
     * (biases, scales checked below, fc3) may be empty names */
    for (int i = 0; i < n->n_inputs; i++)
        if (i <= 1 || i == g->w[0] || i == g->w[1]
            || ss__ops_has_input(n, in, i))
            if ((rc = ss__ops_check_input(n, in, i, err)) < 0)
                return rc;
    g->has_fc3 = g->w[2] < n->n_inputs && ss__ops_has_input(n, in, g->w[2]);
    g->has_b1 = g->b[0] < n->n_inputs && ss__ops_has_input(n, in, g->b[0]);
    g->has_b2 = g->b[1] < n->n_inputs && ss__ops_has_input(n, in, g->b[1]);
    g->has_b3 = g->b[2] < n->n_inputs && ss__ops_has_input(n, in, g->b[2]);
    if (g->has_b3 && !g->has_fc3)
        return ss__ops_fail(err, n, "fc3_experts_bias without fc3 weights");
    if (q)
        for (int j = 0; j < 2 + g->has_fc3; j++)
            if (g->s[j] >= n->n_inputs
                || !ss__ops_has_input(n, in, g->s[j]))
                return ss__ops_fail(err, n, "fc%d_scales are missing",
                                    j + 1);
    if (ss__attr_int(n, "use_sparse_mixer", 0) != 0)
        return ss__ops_failc(err, SS_EUNSUPP, n, "the sparse mixer is not "
                             "supported");
    if (strcmp(act, "relu") == 0)
        g->act = SS_ORT_MOE_RELU;
    else if (strcmp(act, "gelu") == 0)
        g->act = SS_ORT_MOE_GELU;
    else if (strcmp(act, "silu") == 0)
        g->act = SS_ORT_MOE_SILU;
    else if (strcmp(act, "identity") == 0)
        g->act = SS_ORT_MOE_IDENTITY;
    else
        return ss__ops_failc(err, SS_EUNSUPP, n, "activation_type '%s' is "
                             "not supported", act);
    x = in[0];
    r = in[1];
    w1 = in[g->w[0]];
    w2 = in[g->w[1]];
    w3 = g->has_fc3 ? in[g->w[2]] : NULL;
    if (!is_f32(x) || !is_f32(r)
        || (g->has_b1 && !is_f32(in[g->b[0]]))
        || (g->has_b2 && !is_f32(in[g->b[1]]))
        || (g->has_b3 && !is_f32(in[g->b[2]])))
        return ss__ops_failc(err, SS_EUNSUPP, n, "only float32 is "
                             "supported");
    for (int j = 0; j < 2 + g->has_fc3; j++) {
        const ss_tensor_t *w = in[g->w[j]];

        if (q ? w->dtype != SS_DTYPE_U8 || !is_f32(in[g->s[j]])
              : !is_f32(w))
            return ss__ops_failc(err, SS_EUNSUPP, n, q
                                 ? "QMoE takes uint8 weights and float32 "
                                   "scales"
                                 : "only float32 is supported");
    }
    if ((x->ndim != 2 && x->ndim != 3) || r->ndim != 2 || w1->ndim != 3
        || w2->ndim != 3 || (w3 != NULL && w3->ndim != 3))
        return ss__ops_fail(err, n, "input must be 2-D or 3-D, "
                            "router_probs 2-D, the expert weights 3-D");
    g->hidden = x->dims[x->ndim - 1];
    g->rows = ss__ops_numel(x) / (g->hidden ? g->hidden : 1);
    g->n_exp = r->dims[1];
    g->k = ss__attr_int(n, "k", 1);
    g->norm = ss__attr_int(n, "normalize_routing_weights", 0) != 0;
    if (g->hidden < 1 || g->n_exp < 1 || r->dims[0] != g->rows)
        return ss__ops_fail(err, n, "router_probs must be [%lld, E]",
                            (long long)g->rows);
    if (g->k < 1 || g->k > g->n_exp)
        return ss__ops_fail(err, n, "k = %lld is out of [1, %lld]",
                            (long long)g->k, (long long)g->n_exp);
    if (q) {
        /* fc1, fc3 [E, inter, hidden / pack], fc2 [E, hidden, inter /
         * pack]: rows are output features, each packed along K */
        pack = 8 / g->bits;
        g->inter = w1->dims[1];
        if (g->inter < 1 || w1->dims[0] != g->n_exp
            || w1->dims[2] * pack != g->hidden || w2->dims[0] != g->n_exp
            || w2->dims[1] != g->hidden || w2->dims[2] * pack != g->inter
            || (w3 != NULL && memcmp(w3->dims, w1->dims,
                                     3 * sizeof(int64_t)) != 0))
            return ss__ops_fail(err, n, "QMoE weights must be fc1/fc3 [E, "
                                "inter, hidden/%lld], fc2 [E, hidden, "
                                "inter/%lld] uint8", (long long)pack,
                                (long long)pack);
        for (int j = 0; j < 2 + g->has_fc3; j++) {
            int64_t rows_j = j == 1 ? g->hidden : g->inter;
            int64_t k_j = j == 1 ? g->inter : g->hidden;

            if (g->block < 0 || (g->block > 0 && k_j % g->block != 0)
                || ss__ops_numel(in[g->s[j]])
                   != g->n_exp * rows_j * (g->block > 0 ? k_j / g->block
                                                        : 1))
                return ss__ops_fail(err, n, "fc%d_scales must be [E, %lld%s]",
                                    j + 1, (long long)rows_j,
                                    g->block > 0 ? ", K / block_size" : "");
        }
    } else {
        g->inter = w2->dims[1] * w2->dims[2] / g->hidden;
        g->legacy = g->inter != g->hidden && w2->dims[1] == g->inter;
        hin = g->legacy ? g->hidden : g->inter;
        hout = g->legacy ? g->inter : g->hidden;
        if (g->inter < 1 || w1->dims[0] != g->n_exp
            || w2->dims[0] != g->n_exp
            || w1->dims[1] != hin || w1->dims[2] != hout
            || w2->dims[1] != hout || w2->dims[2] != hin
            || (w3 != NULL && memcmp(w3->dims, w1->dims,
                                     3 * sizeof(int64_t)) != 0))
            return ss__ops_fail(err, n, "fc1/fc2 weights do not match "
                                "hidden %lld, %lld experts",
                                (long long)g->hidden, (long long)g->n_exp);
    }
    if ((g->has_b1 && ss__ops_numel(in[g->b[0]]) != g->n_exp * g->inter)
        || (g->has_b2 && ss__ops_numel(in[g->b[1]])
                         != g->n_exp * g->hidden)
        || (g->has_b3 && ss__ops_numel(in[g->b[2]])
                         != g->n_exp * g->inter))
        return ss__ops_fail(err, n, "expert biases must be [E, inter] and "
                            "[E, hidden]");
    return 0;
}

int
ss__ops_moe_weights(const ss_ort_moe_t *g, const ss_tensor_t *const *in,
                    int j, const float **w, float **out, ss_err_t *err)
{
    int64_t N = j == 1 ? g->hidden : g->inter;
    int64_t K = j == 1 ? g->inter : g->hidden, kb, per;
    const uint8_t *q;
    const float *sc;
    float *f;
    int zp = g->bits == 8 ? 128 : 8;

    *out = NULL;
    if (g->bits == 0) {
        *w = in[g->w[j]]->data;
        return 0;
    }
    if ((f = ss_malloc(sizeof(float) * (size_t)(g->n_exp * N * K)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to dequantize QMoE "
                          "weights");
    q = in[g->w[j]]->data;
    sc = in[g->s[j]]->data;
    kb = g->block > 0 ? K / g->block : 1;
    per = g->block > 0 ? g->block : K;
    for (int64_t r = 0; r < g->n_exp * N; r++)
        for (int64_t c = 0; c < K; c++) {
            int v = g->bits == 8 ? q[r * K + c]
                    : (q[r * (K / 2) + c / 2] >> (4 * (c & 1))) & 0xf;

            f[r * K + c] = (float)(v - zp) * sc[r * kb + c / per];
        }
    *w = f;
    *out = f;
    return 0;
}

static int
infer_moe(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    ss_ort_moe_t g;
    int rc;

    (void)opset;
    if ((rc = ss__ops_moe_geom(n, in, &g, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim,
                           in[0]->dims, err);
}

static float
act(ss_ort_moe_act_t a, float v)
{
    switch (a) {
    case SS_ORT_MOE_RELU:
        return v > 0 ? v : 0;
    case SS_ORT_MOE_GELU:
        return 0.5f * v * (1.0f + tanhf(0.7978845608f
                                        * (v + 0.044715f * v * v * v)));
    case SS_ORT_MOE_SILU:
        return v / (1.0f + expf(-v));
    default:
        return v;
    }
}


static int
run_moe(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    const float *x, *lg, *w1, *w2, *w3 = NULL, *b1, *b2, *b3;
    float *y = out[0].data, *p = NULL, *h = NULL, *gate = NULL;
    float *own[3] = { NULL, NULL, NULL };
    int *sel = NULL;
    ss_ort_moe_t g;
    int64_t E, H, I, K;
    int rc;

    (void)opset;
    if ((rc = ss__ops_moe_geom(n, in, &g, err)) < 0)
        return rc;
    E = g.n_exp;
    H = g.hidden;
    I = g.inter;
    K = g.k;
    x = in[0]->data;
    lg = in[1]->data;
    b1 = g.has_b1 ? in[g.b[0]]->data : NULL;
    b2 = g.has_b2 ? in[g.b[1]]->data : NULL;
    b3 = g.has_b3 ? in[g.b[2]]->data : NULL;
    if ((rc = ss__ops_moe_weights(&g, in, 0, &w1, &own[0], err)) < 0
        || (rc = ss__ops_moe_weights(&g, in, 1, &w2, &own[1], err)) < 0
        || (g.has_fc3
            && (rc = ss__ops_moe_weights(&g, in, 2, &w3, &own[2], err)) < 0))
        goto done;
    if ((p = ss_malloc((size_t)E * sizeof(float))) == NULL
        || (h = ss_malloc((size_t)I * sizeof(float))) == NULL
        || (gate = ss_malloc((size_t)K * sizeof(float))) == NULL
        || (sel = ss_malloc((size_t)K * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for MoE");
        goto done;
    }
    for (int64_t r = 0; r < g.rows; r++) {
        const float *xr = x + r * H, *l = lg + r * E;
        float *yr = y + r * H, mx = l[0], sum = 0, gs = 0;

        for (int64_t e = 1; e < E; e++)
            mx = l[e] > mx ? l[e] : mx;
        for (int64_t e = 0; e < E; e++) {
            p[e] = expf(l[e] - mx);
            sum += p[e];
        }
        for (int64_t e = 0; e < E; e++)
            p[e] /= sum;
        for (int64_t j = 0; j < K; j++) {
            int best = -1;

            for (int e = 0; e < E; e++) {
                int taken = 0;

                for (int64_t i = 0; i < j && !taken; i++)
                    taken = sel[i] == e;
                if (!taken && (best < 0 || p[e] >= p[best]))
                    best = e;
            }
            sel[j] = best;
            gate[j] = p[best];
            gs += gate[j];
        }
        memset(yr, 0, (size_t)H * sizeof(float));
        for (int e = 0; e < E; e++) {
            const float *e1 = w1 + e * I * H, *e2 = w2 + e * H * I;
            float gw = 0;
            int chosen = 0;

            for (int64_t j = 0; j < K; j++)
                if (sel[j] == e) {
                    chosen = 1;
                    gw = g.norm ? gate[j] / gs : gate[j];
                }
            if (!chosen || !(gw > 0))
                continue;
            for (int64_t i = 0; i < I; i++) {
                double acc = b1 ? b1[e * I + i] : 0;

                for (int64_t c = 0; c < H; c++)
                    acc += (double)xr[c] * e1[i * H + c];
                h[i] = act(g.act, (float)acc);
                if (w3 != NULL) {
                    /* gated: act(fc1 x) * (fc3 x) */
                    const float *e3 = w3 + e * I * H;

                    acc = b3 ? b3[e * I + i] : 0;
                    for (int64_t c = 0; c < H; c++)
                        acc += (double)xr[c] * e3[i * H + c];
                    h[i] *= (float)acc;
                }
            }
            for (int64_t c = 0; c < H; c++) {
                double acc = b2 ? b2[e * H + c] : 0;

                for (int64_t i = 0; i < I; i++)
                    acc += (double)h[i] * e2[c * I + i];
                yr[c] += gw * (float)acc;
            }
        }
    }
done:
    for (int j = 0; j < 3; j++)
        ss_free(own[j]);
    ss_free(p);
    ss_free(h);
    ss_free(gate);
    ss_free(sel);
    return rc;
}

const ss_op_t ss__ops_moe[] = {
    { "com.microsoft.MoE", infer_moe, run_moe },
    { "com.microsoft.QMoE", infer_moe, run_moe },
    { NULL, NULL, NULL }
};
