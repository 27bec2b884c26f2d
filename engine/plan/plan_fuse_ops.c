/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The f32 fusion pass's anchors: which reference steps become which
 * oneDNN primitive, and how their attributes map.  plan_fuse.c runs them
 * (and has the design); they build their steps with the fusion toolkit
 * (plan_chain.c) and pick layouts by plan_layout_rules.c.
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

int
ss__fz_slow(const ss_dnn_prim_t *prim)
{
    return strncmp(ss_dnn_prim_impl(prim), "ref", 3) == 0;
}

/* Records the layout the fused step writes its output in. */
static void
wrote(ss__fz_t *fz, int v, const ss_dnn_prim_t *prim)
{
    fz->p->vals[v].layout = ss_dnn_prim_layout(prim, -1);
}

typedef int (*make_fn)(const void *d, ss_dnn_prim_t **out, ss_err_t *err);

static int
make_pool(const void *d, ss_dnn_prim_t **out, ss_err_t *err)
{
    return ss_dnn_pool_new(d, out, err);
}

static int
make_binary(const void *d, ss_dnn_prim_t **out, ss_err_t *err)
{
    return ss_dnn_binary_new(d, out, err);
}

/* Makes the primitive of d in *layout (a field of d), then PLAIN when
 * oneDNN has no kernel for that layout or only its reference code.  On
 * failure *prim is NULL and the code is the constructor's. */
static int
make_in_layout(make_fn make, const void *d, ss_dnn_layout_t *layout,
               ss_dnn_prim_t **prim, ss_err_t *err)
{
    int rc;

    *prim = NULL;
    if (*layout != SS_DNN_PLAIN) {
        if ((rc = make(d, prim, err)) == SS_ENOMEM)
            return rc;
        if (rc == 0 && !ss__fz_slow(*prim))
            return 0;
        ss_dnn_prim_free(*prim);
        *prim = NULL;
        ss_err_clear(err);
        *layout = SS_DNN_PLAIN;
    }
    return make(d, prim, err);
}

static int
f32(const ss__fz_t *fz, int v)
{
    return v >= 0 && ss__plan_tensor(fz->p, v)->dtype == SS_DTYPE_F32;
}

int
ss__fz_only_out0(const ss__fz_t *fz, const ss_step_t *st)
{
    for (int k = 1; k < st->n_out; k++) {
        int v = st->out[k];

        if (v >= 0 && (fz->is_out[v] || fz->start[v + 1] != fz->start[v]))
            return 0;
    }
    return st->n_out >= 1 && st->out[0] >= 0;
}

/* v is the bytes of a tap of p's graph (engine.h, taps) and of no graph
 * output (ss__plan_is_graph_out counts both). */
static int
tapped(const ss_plan_t *p, int v)
{
    int t = 0;

    for (int k = 0; p->taps && k < p->g->n_taps; k++)
        t |= ss__plan_root(p, p->g->taps[k]) == v;
    for (int i = 0; t && i < p->g->n_outputs; i++)
        t &= ss__plan_root(p, p->g->outputs[i]) != v;
    return t;
}

/* Rows per chunk of a tapped GEMM writing [m, n] from [m, k] (engine.h,
 * taps), or 0: run it whole.  The update a caller adds at the tap reads
 * the GEMM's input rows and rewrites its output rows, and the activation
 * step after it rewrites them again; on a whole [2048, 1024] output each
 * of those passes goes to memory.  In chunks whose rows fit in L2 (input
 * and output rows together, SS_TAP_CHUNK_BYTES) they stay in cache.
 * Measured (bench/lora_bench's encoder, one GEMM of 2,048 rows with an
 * r = 16 update): 256 -> 1024 with GELU 1.28x the fused GEMM whole,
 * 1.13x in chunks of 64-128 rows, 1.17x of 256; 256 -> 768 1.22x whole,
 * 1.15x in chunks of 128. */
static int64_t
tap_chunk(int64_t m, int64_t k, int64_t n)
{
    const char *e = getenv("SS_ENGINE_TAP_CHUNK_ROWS");
    int64_t rows;

    if (e != NULL && e[0] != '\0') {
        rows = strtoll(e, NULL, 10);
    } else {
        rows = SS_TAP_CHUNK_BYTES / ((k + n) * (int64_t)sizeof(float));
        rows = rows < 8 ? 8 : rows - rows % 8;
    }
    return rows > 0 && rows < m ? rows : 0;
}

/* Step `at` (just emitted) runs in chunks of `chunk` rows of [rows,
 * in_cols] -> [rows, out_cols]; tail (taken) serves the last rows. */
static void
set_chunks(ss_plan_t *p, int at, int64_t chunk, int64_t rows,
           int64_t in_cols, int64_t out_cols, ss_dnn_prim_t *tail)
{
    ss_step_t *st = &p->steps[at];

    st->chunk = chunk;
    st->rows = rows;
    st->in_cols = in_cols;
    st->out_cols = out_cols;
    st->prim_tail = tail;
    if (tail != NULL && ss_dnn_prim_scratch_size(tail) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(tail);
}

int
ss__fuse_linear(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_linear_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL, *tail = NULL;
    ss__chain_t c;
    const ss_tensor_t *a, *b;
    float *scaled = NULL, *wsc = NULL, *bsc = NULL;
    int gemm = ss__plan_is_op(st, "Gemm"), rc = 0, at, lscale = 0;
    int64_t m, chunk = 0;

    if (!(gemm || ss__plan_is_op(st, "MatMul")) || st->n_in < 2
        || !ss__fz_only_out0(fz, st)
        || !f32(fz, st->in[0]) || !f32(fz, st->in[1])
        || ss__fz_is_const(p, st->in[0]) || !ss__fz_is_const(p, st->in[1]))
        return 0;
    a = ss__plan_tensor(p, st->in[0]);
    b = ss__plan_tensor(p, st->in[1]);
    if (b->ndim != 2 || a->ndim < 2)
        return 0;
    if (gemm) {
        if (ss__attr_int(st->node, "transA", 0) != 0 || a->ndim != 2
            || ss__attr_float(st->node, "alpha", 1.0f) != 1.0f)
            return 0;
        d.w_nk = ss__attr_int(st->node, "transB", 0) != 0;
    }
    d.k = a->dims[a->ndim - 1];
    d.n = d.w_nk ? b->dims[0] : b->dims[1];
    if ((d.w_nk ? b->dims[1] : b->dims[0]) != d.k || d.k == 0 || d.n == 0)
        return 0;
    d.m = ss_tensor_numel(a) / d.k;
    d.w = b->data;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], gemm ? "Gemm" : "MatMul");
    c.dst_ndim = 2;
    c.dst_dims[0] = d.m;
    c.dst_dims[1] = d.n;
    if (gemm && st->n_in > 2 && st->in[2] >= 0) {
        const ss_tensor_t *ct = ss__plan_tensor(p, st->in[2]);
        float beta = ss__attr_float(st->node, "beta", 1.0f);

        if (!ss__fz_is_const(p, st->in[2]) || !f32(fz, st->in[2])
            || ss_tensor_numel(ct) != d.n || ct->dims[ct->ndim - 1] != d.n)
            return 0;
        d.bias = ct->data;
        if (beta != 1.0f) {
            if ((scaled = ss_malloc((size_t)d.n * sizeof(float))) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory to fuse");
            for (int64_t i = 0; i < d.n; i++)
                scaled[i] = beta * d.bias[i];
            d.bias = scaled;
        }
    } else {
        d.bias = ss__fz_take_bias(fz, &c, d.n);
    }
    if (!gemm && (lscale = ss__fz_layer_scale(fz, &c, &d, &wsc, &bsc,
                                              err)) < 0) {
        rc = lscale;
        goto done;
    }
    /* A residual Add is not a binary post-op: fused as a full-size one
     * it pushes oneDNN 2.6 off brgemm (see plan_chain.c); it is a SUM
     * after a chain without post-ops (plan_fuse_scale.c). */
    if (!lscale) {
        ss__fz_linear_chain(fz, &c);
        ss__fz_residual_sum(fz, &c);
    }
    d.post = c.post;
    /* A tapped output (the chain stops there) runs in row chunks, the
     * tap called per chunk (tap_chunk says why) */
    m = d.m;
    if (p->taps && c.n_bin == 0 && tapped(p, ss__plan_root(p, c.out)))
        chunk = tap_chunk(m, d.k, d.n);
    if (chunk > 0 && m % chunk != 0) {
        d.m = m % chunk;
        if ((rc = ss_dnn_linear_new(&d, &tail, err)) < 0) {
            rc = ss__fz_fallback(rc, err);
            goto done;
        }
    }
    if (chunk > 0)
        d.m = chunk;
    if ((rc = ss_dnn_linear_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    at = ss__fz_chain_last(&c);
    if ((rc = ss__fz_emit(fz, &c, prim, &st->in[0], 1, err)) == 0) {
        rc = 1;
        if (lscale) {
            p->vals[c.out].layout = SS_DNN_NHWC;
            p->steps[at].raw_in |= 1u << 1;
        }
        if (chunk > 0)
            set_chunks(p, at, chunk, m, d.k, d.n, tail);
        tail = NULL;
    }
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    ss_dnn_prim_free(tail);
    ss_free(scaled);
    ss_free(wsc);
    ss_free(bsc);
    return rc;
}

int
ss__fuse_layernorm(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_layernorm_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    const ss_tensor_t *x;
    int64_t axis, rows = 1, cols = 1;
    int rc;

    if (!ss__plan_is_op(st, "LayerNormalization") || st->n_in < 2
        || !f32(fz, st->in[0]) || !ss__fz_only_out0(fz, st)
        || !ss__fz_is_const(p, st->in[1]) || !f32(fz, st->in[1]))
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    axis = ss__attr_int(st->node, "axis", -1);
    if (axis < 0)
        axis += x->ndim;
    if (axis < 0 || axis >= x->ndim)
        return 0;
    for (int i = 0; i < x->ndim; i++)
        *(i < axis ? &rows : &cols) *= x->dims[i];
    if (rows == 0 || cols == 0
        || ss_tensor_numel(ss__plan_tensor(p, st->in[1])) != cols)
        return 0;
    d.gamma = ss__plan_tensor(p, st->in[1])->data;
    if (st->n_in > 2 && st->in[2] >= 0) {
        if (!ss__fz_is_const(p, st->in[2]) || !f32(fz, st->in[2])
            || ss_tensor_numel(ss__plan_tensor(p, st->in[2])) != cols)
            return 0;
        d.beta = ss__plan_tensor(p, st->in[2])->data;
    }
    d.ndim = 2;
    d.dims[0] = rows;
    d.dims[1] = cols;
    d.eps = ss__attr_float(st->node, "epsilon", 1e-5f);
    if ((rc = ss_dnn_layernorm_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "LayerNormalization");
    if ((rc = ss__fz_emit(fz, &c, prim, &st->in[0], 1, err)) < 0)
        return rc;
    return 1;
}

int
ss__fz_pool_desc(const ss_plan_t *p, const ss_step_t *st,
                 ss_dnn_pool_desc_t *d)
{
    const ss_tensor_t *x = ss__plan_tensor(p, st->in[0]);
    int global = ss__plan_is_op(st, "GlobalAveragePool");
    int red = ss__plan_reduce_hw(p, st), nsp = x->ndim - 2;
    int64_t ks[3];

    memset(d, 0, sizeof(*d));
    if (!(global || red || ss__plan_is_op(st, "MaxPool")
          || ss__plan_is_op(st, "AveragePool"))
        || nsp < 1 || nsp > 3 || ss_tensor_numel(x) == 0)
        return 0;
    d->dtype = x->dtype;
    d->nsp = nsp;
    d->n = x->dims[0];
    d->c = x->dims[1];
    d->ih = nsp == 1 ? 1 : x->dims[x->ndim - 2];
    d->iw = x->dims[x->ndim - 1];
    d->depth.in = nsp == 3 ? x->dims[2] : 0;
    if (global || red) {
        d->alg = red ? (ss_dnn_pool_alg_t)red : SS_DNN_POOL_AVG_EXCLUDE;
        d->kernel[0] = d->ih;
        d->kernel[1] = d->iw;
        d->depth.k = d->depth.in;
        return 1;
    }
    if (ss__attr_int(st->node, "ceil_mode", 0) != 0
        || ss__attr_int(st->node, "storage_order", 0) != 0
        || !ss__fz_window(st->node, nsp, d->stride, d->dilation,
                          d->pad_begin, d->pad_end, ks, &d->depth))
        return 0;
    for (int i = 0; i < nsp; i++)
        if (ks[i] <= 0)
            return 0;
    d->kernel[0] = nsp == 1 ? 1 : ks[nsp - 2];
    d->kernel[1] = ks[nsp - 1];
    d->depth.k = nsp == 3 ? ks[0] : 0;
    d->alg = ss__plan_is_op(st, "MaxPool") ? SS_DNN_POOL_MAX
             : ss__attr_int(st->node, "count_include_pad", 0)
               ? SS_DNN_POOL_AVG_INCLUDE : SS_DNN_POOL_AVG_EXCLUDE;
    return 1;
}

int
ss__fuse_pool(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_pool_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    const ss_tensor_t *y;
    ss__chain_t c;
    int rc, same;

    if (!f32(fz, st->in[0]) || !ss__fz_only_out0(fz, st)
        || !ss__fz_notset(st->node) || !ss__fz_pool_desc(p, st, &d))
        return 0;
    /* one layout for src and dst: the source's, when the output may
     * have it too; a reduce without kept dims writes [N, C], the bytes of
     * [N, C, 1, 1] in any layout */
    y = ss__plan_tensor(p, st->out[0]);
    same = y->ndim == d.nsp + 2;
    d.layout = same ? ss__lay_follow(fz, st->in[0], st->out[0])
                    : ss__lay_of(p, st->in[0]);
    if ((rc = make_in_layout(make_pool, &d, &d.layout, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    /* oneDNN's reference code for a 1-D or 3-D pool: ours is as good */
    if (d.nsp != 2 && ss__fz_slow(prim)) {
        ss_dnn_prim_free(prim);
        return 0;
    }
    wrote(fz, st->out[0], prim);
    if (!same)
        p->vals[st->out[0]].layout = SS_DNN_PLAIN;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], st->node->op_type);
    if ((rc = ss__fz_emit(fz, &c, prim, &st->in[0], 1, err)) < 0)
        return rc;
    return 1;
}

int
ss__fuse_binary(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_binary_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    const ss_tensor_t *a, *b, *y;
    const char *op = st->node->op_type;
    int lead[2], rc;

    if (st->kind != SS_STEP_REF || st->n_in != 2
        || !(strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0
             || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0)
        || !f32(fz, st->in[0]) || !f32(fz, st->in[1]) || !f32(fz, st->out[0]))
        return 0;
    lead[0] = st->in[0];
    lead[1] = st->in[1];
    a = ss__plan_tensor(p, lead[0]);
    b = ss__plan_tensor(p, lead[1]);
    y = ss__plan_tensor(p, st->out[0]);
    if (a->ndim != y->ndim || memcmp(a->dims, y->dims,
                                     (size_t)y->ndim * sizeof(int64_t))) {
        if (op[0] == 'S' || op[0] == 'D' || b->ndim != y->ndim
            || memcmp(b->dims, y->dims, (size_t)y->ndim * sizeof(int64_t)))
            return 0;
        lead[0] = st->in[1];
        lead[1] = st->in[0];
        a = ss__plan_tensor(p, lead[0]);
        b = ss__plan_tensor(p, lead[1]);
    }
    if (y->ndim < 1 || y->ndim > SS_DNN_MAX_DIMS || b->ndim > y->ndim
        || ss_tensor_numel(y) == 0)
        return 0;
    d.alg = op[0] == 'A' ? SS_DNN_ADD : op[0] == 'S' ? SS_DNN_SUB
            : op[0] == 'M' ? SS_DNN_MUL : SS_DNN_DIV;
    d.a_ndim = a->ndim;
    d.b_ndim = b->ndim;
    memcpy(d.a_dims, a->dims, (size_t)a->ndim * sizeof(int64_t));
    memcpy(d.b_dims, b->dims, (size_t)b->ndim * sizeof(int64_t));
    ss__fz_chain_start(&c, s, lead[0], st->out[0], op);
    /* oneDNN 2.6's jit:uni binary kernel computes wrong values with three
     * eltwise post-ops such as linear, tanh, linear (seen here) */
    c.max_post = 2;
    c.dst_ndim = y->ndim;
    memcpy(c.dst_dims, y->dims, (size_t)y->ndim * sizeof(int64_t));
    ss__fz_chain(fz, &c);
    d.post = c.post;
    d.layout = ss__lay_rank(y) ? ss__lay_follow(fz, lead[0], c.out)
                              : SS_DNN_PLAIN;
    if ((rc = make_in_layout(make_binary, &d, &d.layout, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    /* oneDNN 2.6 has no jit binary kernel for some broadcasts (swin's
     * shifted-window mask, [1, windows, 1, T, T] over [B, windows, heads,
     * T, T]); its reference one took 20 ms where ours (engine/ops) takes
     * 0.12: the step stays ours */
    if (ss__fz_slow(prim)) {
        ss_dnn_prim_free(prim);
        return 0;
    }
    wrote(fz, c.out, prim);
    if ((rc = ss__fz_emit(fz, &c, prim, lead, 2, err)) < 0)
        return rc;
    return 1;
}

/* A tap ends its producer's fusion (the caller sees the value whole), so
 * without this anchor the activation after a tapped Gemm would run on
 * the reference kernels: a LoRA update (server/model/adapter.c) is added
 * between the Gemm and its GELU, and the GELU's Div, Erf, Add, Mul, Mul
 * took 38% of a tapped MLP's time.  Here the one element-wise function
 * that reads a tapped value (GELU in either decomposition, Relu, Tanh,
 * Sigmoid, Clip...) becomes one oneDNN eltwise step after the tap: the
 * fused step's post-op split off.  An Add or Mul of a tensor after a tap
 * is the binary anchor's (it keeps its own post-ops). */
int
ss__fuse_tapped_eltwise(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_eltwise_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    const ss_tensor_t *t;
    ss_dnn_prim_t *tail = NULL;
    ss__chain_t c;
    int v = -1, rc, has_s = 0, ps, at;
    int64_t chunk = 0, rows = 0, cols = 0;

    if (!p->taps || st->kind != SS_STEP_REF)
        return 0;
    for (int k = 0; k < st->n_in && v < 0; k++)
        if (st->in[k] >= 0 && p->vals[st->in[k]].alias < 0
            && tapped(p, st->in[k]))
            v = st->in[k];
    if (v < 0 || !f32(fz, v) || ss__plan_has_views(p, v) || ss_tensor_numel(ss__plan_tensor(p, v))
                                       == 0)
        return 0;
    t = ss__plan_tensor(p, v);
    ss__fz_chain_start(&c, s, v, v, "Eltwise");
    c.n_steps = 0;          /* no anchor step: v's producer wrote it */
    c.max_post = 1;
    c.dst_ndim = t->ndim;
    memcpy(c.dst_dims, t->dims, (size_t)t->ndim * sizeof(int64_t));
    /* v's readers may join this chain: v itself stays written whole by
     * its producer (that is what kept it out of the producer's chain) */
    fz->is_out[v] = 0;
    ss__fz_chain(fz, &c);
    fz->is_out[v] = 1;
    for (int i = 0; i < c.n_steps; i++)
        has_s |= c.steps[i] == s;
    if (!has_s || c.post.n != 1 || c.post.op[0].kind != SS_DNN_PO_ELTWISE)
        return 0;
    d.numel = ss_tensor_numel(t);
    d.alg = (ss_dnn_eltwise_alg_t)c.post.op[0].alg;
    d.alpha = c.post.op[0].alpha;
    d.beta = c.post.op[0].beta;
    /* v's producer runs in row chunks: so does this step, and the run
     * does it on each chunk right after the tap, in cache (exec.c) */
    if ((ps = fz->prod[v]) >= 0 && p->steps[ps].kind == SS_STEP_DNN
        && p->steps[ps].chunk > 0 && p->steps[ps].out[0] == v) {
        const ss_step_t *pst = &p->steps[ps];

        chunk = pst->chunk;
        rows = pst->rows;
        cols = pst->out_cols;
        if (rows % chunk != 0) {
            d.numel = rows % chunk * cols;
            if ((rc = ss_dnn_eltwise_new(&d, &tail, err)) < 0)
                return ss__fz_fallback(rc, err);
        }
        d.numel = chunk * cols;
    }
    if ((rc = ss_dnn_eltwise_new(&d, &prim, err)) < 0) {
        ss_dnn_prim_free(tail);
        return ss__fz_fallback(rc, err);
    }
    wrote(fz, c.out, prim);
    at = ss__fz_chain_last(&c);
    if ((rc = ss__fz_emit(fz, &c, prim, &v, 1, err)) < 0) {
        ss_dnn_prim_free(tail);
        return rc;
    }
    if (chunk > 0)
        set_chunks(p, at, chunk, rows, cols, cols, tail);
    /* the tap's fn may apply it instead (engine.h: activations) */
    if (d.alg == SS_DNN_GELU_ERF)
        p->steps[at].tap_act = SS_TAP_ACT_GELU_ERF;
    else if (d.alg == SS_DNN_RELU)
        p->steps[at].tap_act = SS_TAP_ACT_RELU;
    p->steps[at].tap_alpha = d.alpha;
    return 1;
}

/* perm of a 4-D Transpose: 1 for (0,2,3,1), NCHW -> NHWC order; 2 for
 * (0,3,1,2), back; 0 for anything else. */
static int
nhwc_perm(const ss_step_t *st)
{
    int64_t perm[4];

    if (!ss__plan_is_op(st, "Transpose")
        || !ss__fz_attr_n(st->node, "perm", -1, perm, 4))
        return 0;
    if (perm[0] == 0 && perm[1] == 2 && perm[2] == 3 && perm[3] == 1)
        return 1;
    if (perm[0] == 0 && perm[1] == 3 && perm[2] == 1 && perm[3] == 2)
        return 2;
    return 0;
}

int
ss__lay_transpose_reader(const ss_plan_t *p, const ss_step_t *st, int v)
{
    const ss_tensor_t *t = &p->vals[v].t;

    return st->kind == SS_STEP_REF && nhwc_perm(st) == 1 && t->ndim == 4
           && t->dtype == SS_DTYPE_F32;
}

/* A Transpose between channels-first and channels-last order moves no
 * byte when its source is already stored in the other order: a
 * [N,C,H,W] value written NHWC holds the bytes of its (0,2,3,1)
 * transpose, a plain [N,H,W,C] value those of its (0,3,1,2) transpose
 * read as NHWC.  Such a Transpose whose source a oneDNN step wrote for
 * it alone is absorbed: that step writes the transposed value instead
 * (its primitive addresses bytes, not the plan's shapes), which is then
 * PLAIN or NHWC respectively, and the readers of the channels-first
 * side run in NHWC rather than on NCHW with reference transposes around
 * them.  Convolution nets that normalise over channels (ConvNeXt's
 * LayerNorm2d, its blocks' Permute -> LayerNorm -> Linear -> Permute)
 * export exactly these pairs; ss__lay_dst asks producers for NHWC where
 * a (0,2,3,1) Transpose reads them (plan_layout_rules.c). */
int
ss__fuse_transpose(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    ss_step_t *st = &p->steps[s];
    int kind = nhwc_perm(st), x, y, prod = -1;
    ss_dnn_layout_t have;

    (void)err;
    if (kind == 0 || st->n_in != 1 || st->n_out != 1 || p->taps)
        return 0;
    x = st->in[0];
    y = st->out[0];
    if (x < 0 || y < 0 || p->vals[x].t.ndim != 4
        || p->vals[x].t.dtype != SS_DTYPE_F32 || ss__fz_single(fz, x) != s
        || p->vals[y].alias >= 0)
        return 0;
    for (int q = s - 1; q >= 0 && prod < 0; q--)
        if (p->steps[q].kind == SS_STEP_DNN && p->steps[q].n_out == 1
            && p->steps[q].out[0] == x)
            prod = q;
    if (prod < 0)
        return 0;
    have = p->vals[x].layout;
    if (kind == 1) {
        if (!ss__lay_same(have, SS_DNN_NHWC, &p->vals[x].t))
            return 0;
        p->vals[y].layout = SS_DNN_PLAIN;
    } else {
        /* y NHWC: no graph output, no view (both read NCHW bytes) */
        if (have != SS_DNN_PLAIN || fz->is_out[y]
            || ss__plan_has_views(p, y))
            return 0;
        p->vals[y].layout = SS_DNN_NHWC;
    }
    p->steps[prod].out[0] = y;
    p->vals[y].kind = SS_PV_ARENA;
    p->vals[x].kind = SS_PV_UNSET;
    fz->prod[y] = prod;
    fz->prod[x] = -1;
    ss__plan_step_clear(st);
    st->kind = 0;
    p->n_fused++;
    return 1;
}
