/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparse mixture-of-experts step: top-k routing, then each expert's
 * layers on its own rows only.
 *
 * DESIGN: a dense MoE export runs all E experts on every row and zeroes
 * all but k of them with the gates; this step pays for k.  Per run:
 *   1. route: for each row, the k largest of its E router scores (ties
 *      to the lower expert, as the TopK kernel breaks them), the gates
 *      being those scores, divided by their sum when the model
 *      renormalises them, or 1 for a top-k mask (MoEfication);
 *   2. group: a counting sort of the (row, expert) slots by expert, rows
 *      ascending within an expert: the permutation;
 *   3. for each expert with rows: gather its rows into a dense buffer,
 *      run its layers (oneDNN inner products with their bias and
 *      activations as post-ops, weights packed at compile time; a gated
 *      expert runs its second layer on the input too and multiplies the
 *      first layer's output by it: fc2(act(fc1 x) * fc3 x)), and add
 *      gate * output into each row of the result, experts in ascending
 *      order (the order the dense graph sums in, so the result is the
 *      dense one up to rounding in the experts' GEMMs).
 * oneDNN primitives have a fixed row count, and an expert's row count is
 * known only at run time, so every layer has one primitive per bucket of
 * rows: 1, 2, 3, 4, 6, 8, 12, ... (2^j and 3 * 2^(j-1)) up to the plan's
 * row count, which is always a bucket.  An expert with r rows runs the
 * smallest bucket >= r on its rows plus zeroed padding: at most a third
 * of the work is padding, and packed weights are shared between the
 * buckets of one layer (engine/dnnl shares packed constants by content).
 * Past MAX_PRIMS primitives in one step (64 experts of 2 layers at batch
 * 256 would make 2048), the buckets are the powers of two only.
 * The alternative, oneDNN's matmul with a run-time M, takes its slower
 * gemm kernels instead of brgemm.
 *
 * A QDQ model's experts (PTQ after moefy: each layer reads a per-tensor
 * QuantizeLinear -> DequantizeLinear of its input, weights on an s8
 * grid) run int8: the gathered rows are quantized with the model's
 * scale and zero point, the primitive reads them with s8 weights and
 * writes f32 (bias, activation), the next layer quantizes again: the
 * QDQ graph's arithmetic, on k experts instead of E.
 *
 * A graph asking for bf16 compute gets bf16 primitives (as plan_bf16.c:
 * weights converted once, f32 accumulation): the gather rounds rows to
 * bf16, layers pass bf16 on, the last one writes f32.
 *
 * Everything a run needs beyond the input and output lives in one
 * workspace value of the plan's arena (ss__moe_ws_bytes), so a warm run
 * allocates nothing.
 *
 * Each run adds the rows it routed to each expert to a pending counter
 * that ss_plan_moe_take (engine.h) empties: the server's
 * slimserve_moe_expert_rows_total.
 *
 * THREADS: built inside ss_plan_new, immutable afterwards except the row
 * counters (relaxed atomics); ss__moe_run is [worker] and any number of
 * threads may run one step at once, each with its own stream, scratch
 * and arena.
 */

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

#define ALIGN 64
#define MAX_PRIMS 1024      /* per step, before coarser buckets */

typedef struct moe_layer {
    int64_t k, n;               /* in and out features */
    ss_dnn_prim_t **prim;       /* one per bucket */
    int q;                      /* int8: the input is quantized first */
    float in_scale;
    int in_zp;
    ss_dtype_t in_dtype;
    int8_t *wq;                 /* int8: s8 weights [n, k], their output */
    float *scales, *qbias;      /* scales and the zero point's bias, kept
                                 * for the primitives' lifetime */
} moe_layer_t;

typedef struct moe_expert {
    int n_layers;
    int gated;                  /* see ss__moe_expert_desc_t */
    moe_layer_t *layers;
} moe_expert_t;

struct ss__moe {
    int n_exp, k;
    int norm;                   /* gates / their sum over the top k */
    int unit;                   /* gates are 1 (a top-k mask) */
    int ort;                    /* see ss__moe_desc_t */
    int bf16;                   /* layers read bf16; the last writes f32 */
    int gated;                  /* an expert is gated: a third buffer */
    int has_q;                  /* an int8 layer: a quantized buffer */
    int64_t rows, d_in, d_out;
    int64_t width;              /* widest activation of any layer */
    int n_buckets;
    int64_t *bucket;            /* ascending; the last is rows */
    moe_expert_t *ex;
    size_t scratch;             /* largest oneDNN scratch of a layer */
    _Atomic uint64_t *pending;  /* rows routed to each expert, not yet
                                 * taken by ss_plan_moe_take */
};

static size_t
up(size_t n)
{
    return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

/* Workspace: per slot (row, j) the expert and the gate, the slots
 * grouped by expert (row and gate), E + 1 offsets, E softmax scores,
 * and two activation buffers of rows x width floats. */
typedef struct ws {
    int32_t *sel;
    float *gate;
    int32_t *prow;
    float *pgate;
    int64_t *off;
    float *soft;
    float *a, *b, *c;           /* c: gated experts only */
    uint8_t *qb;                /* an int8 layer's quantized input */
} ws_t;

static size_t
ws_layout(const ss__moe_t *m, char *base, ws_t *w)
{
    size_t slots = (size_t)m->rows * (size_t)m->k, at = 0;

#define TAKE(field, type, count)                                          \
    do {                                                                  \
        if (w != NULL)                                                    \
            w->field = (type *)(void *)(base + at);                       \
        at += up((size_t)(count) * sizeof(type));                         \
    } while (0)
    TAKE(sel, int32_t, slots);
    TAKE(gate, float, slots);
    TAKE(prow, int32_t, slots);
    TAKE(pgate, float, slots);
    TAKE(off, int64_t, m->n_exp + 1);
    TAKE(soft, float, m->n_exp);
    TAKE(a, float, (size_t)m->rows * (size_t)m->width);
    TAKE(b, float, (size_t)m->rows * (size_t)m->width);
    TAKE(c, float, m->gated ? (size_t)m->rows * (size_t)m->width : 1);
    TAKE(qb, uint8_t, m->has_q ? (size_t)m->rows * (size_t)m->width : 1);
#undef TAKE
    return at;
}

size_t
ss__moe_ws_bytes(const ss__moe_t *m)
{
    return ws_layout(m, NULL, NULL);
}

size_t
ss__moe_scratch_bytes(const ss__moe_t *m)
{
    return m->scratch;
}

void
ss__moe_free(ss__moe_t *m)
{
    if (m == NULL)
        return;
    for (int e = 0; m->ex != NULL && e < m->n_exp; e++) {
        moe_expert_t *x = &m->ex[e];

        for (int l = 0; x->layers != NULL && l < x->n_layers; l++) {
            for (int b = 0; x->layers[l].prim != NULL && b < m->n_buckets;
                 b++)
                ss_dnn_prim_free(x->layers[l].prim[b]);
            ss_free(x->layers[l].prim);
            ss_free(x->layers[l].wq);
            ss_free(x->layers[l].scales);
            ss_free(x->layers[l].qbias);
        }
        ss_free(x->layers);
    }
    ss_free(m->ex);
    ss_free(m->bucket);
    ss_free((void *)m->pending);
    ss_free(m);
}

/* 1, 2, 3, 4, 6, 8, 12, ... below rows, then rows. */
/* MAX_PRIMS, or SS_ENGINE_MOE_MAX_PRIMS (tests: the coarse buckets). */
static int64_t
max_prims(void)
{
    const char *s = getenv("SS_ENGINE_MOE_MAX_PRIMS");

    return s != NULL && *s >= '0' && *s <= '9' ? atoll(s) : MAX_PRIMS;
}

static int
make_buckets(ss__moe_t *m, int fine)
{
    int n = 0;

    ss_free(m->bucket);
    if ((m->bucket = ss_malloc(2 * 64 * sizeof(int64_t))) == NULL)
        return -1;
    for (int64_t p = 1; p < m->rows; p *= 2) {
        m->bucket[n++] = p;
        if (fine && p >= 2 && p + p / 2 < m->rows)
            m->bucket[n++] = p + p / 2;
    }
    m->bucket[n++] = m->rows;
    /* 3 * 2^(j-1) went in before 2^(j+1): sort the few there are */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && m->bucket[j - 1] > m->bucket[j]; j--) {
            int64_t t = m->bucket[j];

            m->bucket[j] = m->bucket[j - 1];
            m->bucket[j - 1] = t;
        }
    m->n_buckets = n;
    return 0;
}

/* An int8 layer from ld (f32 weights on a QDQ model's grid): s8 weights
 * per output channel (max |w| / 127: a PTQ weight's own grid comes back
 * exactly), output scales in_scale * s_w, and the bias in accumulator
 * units less the input zero point's share (sum_k (x_q - z) w = sum_k x_q
 * w - z sum_k w). */
static int
quantize_layer(const ss__moe_layer_desc_t *ld, moe_layer_t *L, ss_err_t *err)
{
    int64_t K = ld->k, N = ld->n;

    if ((L->wq = ss_malloc((size_t)(N * K))) == NULL
        || (L->scales = ss_malloc(sizeof(float) * (size_t)N)) == NULL
        || (L->qbias = ss_malloc(sizeof(float) * (size_t)N)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an int8 expert");
    for (int64_t n = 0; n < N; n++) {
        float mx = 0, sw;
        int64_t sum = 0;

        for (int64_t k = 0; k < K; k++) {
            float v = ld->w_nk ? ld->w[n * K + k] : ld->w[k * N + n];

            mx = fabsf(v) > mx ? fabsf(v) : mx;
        }
        sw = mx > 0 ? mx / 127.0f : 1.0f;
        for (int64_t k = 0; k < K; k++) {
            float v = ld->w_nk ? ld->w[n * K + k] : ld->w[k * N + n];
            float r = nearbyintf(v / sw);

            r = r > 127 ? 127 : r < -127 ? -127 : r;
            L->wq[n * K + k] = (int8_t)r;
            sum += (int8_t)r;
        }
        /* bias in accumulator units (dnnl_q.h): b / scale - z sum w */
        L->scales[n] = ld->in_scale * sw;
        L->qbias[n] = (ld->bias != NULL ? ld->bias[n] / L->scales[n] : 0.0f)
                      - (float)ld->in_zp * (float)sum;
    }
    L->q = 1;
    L->in_scale = ld->in_scale;
    L->in_zp = ld->in_zp;
    L->in_dtype = ld->in_dtype;
    return 0;
}

int
ss__moe_new(const ss__moe_desc_t *d, ss__moe_t **out, ss_err_t *err)
{
    ss__moe_t *m = NULL;
    int rc = 0;

    *out = NULL;
    if (d->n_exp < 1 || d->k < 1 || d->k > d->n_exp || d->rows < 1
        || d->d_in < 1 || d->d_out < 1)
        return ss_err_set(err, SS_EINVAL, "MoE: bad geometry (E %d, k %d, "
                          "rows %lld)", d->n_exp, d->k, (long long)d->rows);
    if ((m = ss_calloc(1, sizeof(*m))) == NULL
        || (m->ex = ss_calloc((size_t)d->n_exp, sizeof(*m->ex))) == NULL
        || (m->pending = ss_calloc((size_t)d->n_exp, sizeof(*m->pending)))
           == NULL
        || (m->n_exp = d->n_exp, m->rows = d->rows,
            make_buckets(m, 1) < 0)) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a MoE step");
        goto done;
    }
    {
        /* past MAX_PRIMS primitives (many experts, a big batch), powers
         * of two only: half the primitives, up to half the work padding */
        int64_t layers = 0;

        for (int e = 0; e < d->n_exp; e++)
            layers += d->ex[e].n_layers;
        if (layers * m->n_buckets > max_prims() && make_buckets(m, 0) < 0) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a MoE step");
            goto done;
        }
    }
    m->k = d->k;
    m->norm = d->norm;
    m->unit = d->unit;
    m->ort = d->ort;
    m->bf16 = d->bf16;
    m->d_in = d->d_in;
    m->d_out = d->d_out;
    m->width = d->d_in;
    for (int e = 0; e < d->n_exp; e++) {
        const ss__moe_expert_desc_t *xd = &d->ex[e];
        moe_expert_t *x = &m->ex[e];
        int64_t feat = d->d_in;

        if (xd->n_layers < 1 || xd->n_layers > SS_MOE_MAX_LAYERS) {
            rc = ss_err_set(err, SS_EINVAL, "MoE: expert %d has %d layers",
                            e, xd->n_layers);
            goto done;
        }
        if ((x->layers = ss_calloc((size_t)xd->n_layers,
                                   sizeof(*x->layers))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a MoE step");
            goto done;
        }
        x->n_layers = xd->n_layers;
        x->gated = xd->gated;
        if (xd->gated && (xd->n_layers < 3
                          || xd->layers[1].n != xd->layers[0].n)) {
            rc = ss_err_set(err, SS_EINVAL, "MoE: gated expert %d needs "
                            "two layers of the same width first", e);
            goto done;
        }
        m->gated |= xd->gated;
        for (int l = 0; l < xd->n_layers; l++) {
            const ss__moe_layer_desc_t *ld = &xd->layers[l];
            moe_layer_t *L = &x->layers[l];

            if (xd->gated && l == 1)
                feat = d->d_in;     /* the gate reads the input too */
            if (ld->k != feat || ld->n < 1) {
                rc = ss_err_set(err, SS_EINVAL, "MoE: expert %d layer %d "
                                "reads %lld features, gets %lld", e, l,
                                (long long)ld->k, (long long)feat);
                goto done;
            }
            L->k = ld->k;
            L->n = ld->n;
            feat = ld->n;
            if (ld->q && !m->bf16 && (rc = quantize_layer(ld, L, err)) < 0)
                goto done;
            m->has_q |= L->q;
            if (feat > m->width)
                m->width = feat;
            if ((L->prim = ss_calloc((size_t)m->n_buckets,
                                     sizeof(*L->prim))) == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for a MoE step");
                goto done;
            }
            for (int b = 0; b < m->n_buckets; b++) {
                ss_dnn_linear_desc_t ln = { 0 };
                ss_dnn_qlinear_desc_t qn = { 0 };
                size_t sc;

                ln.m = qn.m = m->bucket[b];
                ln.k = qn.k = ld->k;
                ln.n = qn.n = ld->n;
                ln.w = qn.w = ld->w;
                ln.w_nk = qn.w_nk = ld->w_nk;
                ln.bias = qn.bias = ld->bias;
                ln.post = qn.post = ld->post;
                /* bf16: as plan_bf16.c, weights converted once, f32
                 * accumulation; layers hand bf16 to each other */
                qn.src_dtype = SS_DTYPE_BF16;
                qn.w_dtype = SS_DTYPE_F32;
                qn.dst_dtype = l == xd->n_layers - 1 ? SS_DTYPE_F32
                                                     : SS_DTYPE_BF16;
                if (L->q) {
                    /* int8: s8 weights, output scales in_scale * s_w,
                     * f32 out; the next layer quantizes again */
                    qn.src_dtype = L->in_dtype;
                    qn.w_dtype = SS_DTYPE_I8;
                    qn.w = L->wq;
                    qn.w_nk = 1;
                    qn.bias = L->qbias;
                    qn.n_scales = (int)ld->n;
                    qn.scales = L->scales;
                    qn.dst_dtype = SS_DTYPE_F32;
                }
                if ((rc = m->bf16 || L->q
                          ? ss_dnn_qlinear_new(&qn, &L->prim[b], err)
                          : ss_dnn_linear_new(&ln, &L->prim[b], err))
                    < 0) {
                    ss_err_wrap(err, rc, "MoE: expert %d layer %d", e, l);
                    goto done;
                }
                if (ss_dnn_prim_num_inputs(L->prim[b]) != 1) {
                    rc = ss_err_set(err, SS_EINTERNAL, "MoE: expert %d "
                                    "layer %d reads a run-time operand", e,
                                    l);
                    goto done;
                }
                sc = ss_dnn_prim_scratch_size(L->prim[b]);
                if (sc > m->scratch)
                    m->scratch = sc;
            }
        }
        if (feat != d->d_out) {
            rc = ss_err_set(err, SS_EINVAL, "MoE: expert %d writes %lld "
                            "features, the step %lld", e, (long long)feat,
                            (long long)d->d_out);
            goto done;
        }
    }
    *out = m;
    m = NULL;
done:
    ss__moe_free(m);
    return rc;
}

/* The MoE step of p's layer-th MoE step, or NULL. */
static const ss__moe_t *
layer_of(const ss_plan_t *p, int layer)
{
    for (int s = 0; p != NULL && s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_MOE && layer-- == 0)
            return p->steps[s].moe;
    return NULL;
}

int
ss_plan_moe_layers(const ss_plan_t *p)
{
    int n = 0;

    for (int s = 0; p != NULL && s < p->n_steps; s++)
        n += p->steps[s].kind == SS_STEP_MOE;
    return n;
}

int
ss_plan_moe_experts(const ss_plan_t *p, int layer)
{
    const ss__moe_t *m = layer_of(p, layer);

    return m != NULL ? m->n_exp : 0;
}

uint64_t
ss_plan_moe_take(const ss_plan_t *p, int layer, int expert)
{
    const ss__moe_t *m = layer_of(p, layer);

    if (m == NULL || expert < 0 || expert >= m->n_exp)
        return 0;
    /* an exchange: each routed row is reported once, whichever thread
     * takes, while runs keep adding */
    return atomic_exchange_explicit(&m->pending[expert], 0,
                                    memory_order_relaxed);
}

/* Step 1: the top k of each row's scores, ties to the lower expert
 * (TopK's order), or for com.microsoft.MoE of the softmax of its logits,
 * ties to the higher one (ORT's).  soft: E floats of room. */
static void
route(const ss__moe_t *m, const float *score, float *soft, ws_t *w)
{
    int k = m->k, E = m->n_exp;

    for (int64_t r = 0; r < m->rows; r++) {
        const float *s = score + r * E;
        int32_t *sel = w->sel + r * k;
        float *g = w->gate + r * k, sum = 0;

        if (m->ort) {
            float mx = s[0], tot = 0;

            for (int e = 1; e < E; e++)
                mx = s[e] > mx ? s[e] : mx;
            for (int e = 0; e < E; e++) {
                soft[e] = expf(s[e] - mx);
                tot += soft[e];
            }
            for (int e = 0; e < E; e++)
                soft[e] /= tot;
            s = soft;
        }
        for (int j = 0; j < k; j++) {
            int best = -1;

            for (int e = 0; e < E; e++) {
                int taken = 0;

                for (int i = 0; i < j && !taken; i++)
                    taken = sel[i] == e;
                if (!taken && (best < 0 || s[e] > s[best]
                               || (m->ort && s[e] == s[best])))
                    best = e;
            }
            sel[j] = best;
            g[j] = s[best];
            sum += g[j];
        }
        if (m->norm)
            for (int j = 0; j < k; j++)
                g[j] = g[j] / sum;
        else if (m->unit)
            for (int j = 0; j < k; j++)
                g[j] = 1.0f;
    }
}

/* Step 2: slots grouped by expert, rows ascending within one. */
static void
group(const ss__moe_t *m, ws_t *w)
{
    int64_t slots = m->rows * m->k;

    memset(w->off, 0, (size_t)(m->n_exp + 1) * sizeof(int64_t));
    /* ORT skips a zero gate (a softmax that underflowed) */
    for (int64_t i = 0; i < slots; i++)
        if (m->ort && !(w->gate[i] > 0))
            w->sel[i] = -1;
    for (int64_t i = 0; i < slots; i++)
        if (w->sel[i] >= 0)
            w->off[w->sel[i] + 1]++;
    for (int e = 0; e < m->n_exp; e++)
        w->off[e + 1] += w->off[e];
    for (int64_t i = 0; i < slots; i++) {
        int64_t at;

        if (w->sel[i] < 0)
            continue;
        at = w->off[w->sel[i]]++;

        w->prow[at] = (int32_t)(i / m->k);
        w->pgate[at] = w->gate[i];
    }
    /* off[e] now ends expert e: shift back to starts */
    for (int e = m->n_exp; e > 0; e--)
        w->off[e] = w->off[e - 1];
    w->off[0] = 0;
}

/* f32 -> bf16, round to nearest even (NaN stays NaN). */
static void
to_bf16(uint16_t *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;

        memcpy(&u, &src[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            dst[i] = (uint16_t)((u >> 16) | 0x40);
        else
            dst[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
    }
}

static float
from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;

    memcpy(&f, &u, 4);
    return f;
}

/* a *= c over n values: f32, or bf16 (the layers hand bf16 on). */
static void
gate_mul(const ss__moe_t *m, float *a, const float *c, int64_t n)
{
    if (m->bf16) {
        uint16_t *ha = (uint16_t *)(void *)a;
        const uint16_t *hc = (const uint16_t *)(const void *)c;

        for (int64_t i = 0; i < n; i++) {
            float v = from_bf16(ha[i]) * from_bf16(hc[i]);

            to_bf16(&ha[i], &v, 1);
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            a[i] *= c[i];
    }
}

/* QuantizeLinear's arithmetic: saturate(round_even(x / s) + z). */
static void
quantize_rows(const moe_layer_t *L, const float *x, int64_t n, uint8_t *q)
{
    float lo = L->in_dtype == SS_DTYPE_U8 ? 0 : -128;
    float hi = L->in_dtype == SS_DTYPE_U8 ? 255 : 127;

    for (int64_t i = 0; i < n; i++) {
        float v = nearbyintf(x[i] / L->in_scale) + (float)L->in_zp;

        v = v < lo ? lo : v > hi ? hi : v;
        if (L->in_dtype == SS_DTYPE_U8)
            q[i] = (uint8_t)v;
        else
            ((int8_t *)q)[i] = (int8_t)v;
    }
}

static int
bucket_of(const ss__moe_t *m, int64_t rows)
{
    int b = 0;

    while (m->bucket[b] < rows)
        b++;
    return b;
}

int
ss__moe_run(const ss__moe_t *m, ss_dnn_stream_t *s, const float *x,
            const float *score, float *y, void *wsp, void *scratch,
            ss_err_t *err)
{
    ws_t w;
    int rc = 0;

    ws_layout(m, wsp, &w);
    route(m, score, w.soft, &w);
    group(m, &w);
    memset(y, 0, (size_t)(m->rows * m->d_out) * sizeof(float));
    for (int e = 0; e < m->n_exp; e++) {
        const moe_expert_t *ex = &m->ex[e];
        int64_t lo = w.off[e], cnt = w.off[e + 1] - lo;
        float *src = w.a, *dst = w.b;
        int b;

        if (cnt == 0)
            continue;
        atomic_fetch_add_explicit(&m->pending[e], (uint64_t)cnt,
                                  memory_order_relaxed);
        b = bucket_of(m, cnt);
        if (m->bf16) {
            uint16_t *h = (uint16_t *)(void *)src;

            for (int64_t i = 0; i < cnt; i++)
                to_bf16(h + i * m->d_in,
                        x + (int64_t)w.prow[lo + i] * m->d_in, m->d_in);
            memset(h + cnt * m->d_in, 0,
                   (size_t)((m->bucket[b] - cnt) * m->d_in) * 2);
        } else {
            for (int64_t i = 0; i < cnt; i++)
                memcpy(src + i * m->d_in,
                       x + (int64_t)w.prow[lo + i] * m->d_in,
                       (size_t)m->d_in * sizeof(float));
            memset(src + cnt * m->d_in, 0,
                   (size_t)((m->bucket[b] - cnt) * m->d_in) * sizeof(float));
        }
        for (int l = 0; l < ex->n_layers; l++) {
            const void *in[1] = { src };
            float *t;

            if (ex->gated && l == 1) {
                /* the gate: fc3 on the input (still in src, which
                 * layer 0 read), times layer 0's output (in dst) */
                if ((rc = ss_dnn_run(ex->layers[1].prim[b], s, in, w.c,
                                     scratch, err)) < 0) {
                    ss_err_wrap(err, rc, "MoE expert %d layer 1", e);
                    return rc;
                }
                gate_mul(m, dst, w.c, m->bucket[b] * ex->layers[1].n);
                t = src;
                src = dst;
                dst = t;
                continue;
            }
            if (ex->layers[l].q) {
                quantize_rows(&ex->layers[l], src,
                              m->bucket[b] * ex->layers[l].k, w.qb);
                in[0] = w.qb;
            }
            if ((rc = ss_dnn_run(ex->layers[l].prim[b], s, in, dst, scratch,
                                 err)) < 0) {
                ss_err_wrap(err, rc, "MoE expert %d layer %d", e, l);
                return rc;
            }
            if (!(ex->gated && l == 0)) {
                t = src;
                src = dst;
                dst = t;
            }
        }
        for (int64_t i = 0; i < cnt; i++) {
            float g = w.pgate[lo + i], *yr = y + (int64_t)w.prow[lo + i]
                                                 * m->d_out;
            const float *o = src + i * m->d_out;

            for (int64_t c = 0; c < m->d_out; c++)
                yr[c] += g * o[c];
        }
    }
    return rc;
}
