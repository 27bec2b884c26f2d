/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The f32 fusion pass's batched MatMul and Softmax anchors, and the
 * attention chunks they share.
 *
 * DESIGN.  Attention computes S = q k^T, P = softmax(S), O = P v for
 * every (sample, head) at once: three batched steps.  S and P are large
 * ([B*H, T, T]: ViT-B/16 at 197 tokens, 12 heads, batch 8 has 15 MB each)
 * and each step passed over all of S or P before the next began, so every
 * pass went to memory.  When a batched MatMul's output goes only to a
 * Softmax over its last axis whose output goes only to a batched MatMul as
 * its A, and all three share their batch dims (no broadcast), the three
 * run batch entry group by batch entry group (exec.c: run_chunked): each
 * is built for `h` entries and the run repeats the three on each group,
 * with S and P holding one group (plan_chunkbuf.c), which stays in L2.  h
 * is what keeps a group's S and P within SS_ATTN_CHUNK_BYTES, the largest
 * divisor of the batch at most that (no tail primitives).  Measured on
 * this ViT (1 thread, oneDNN 2.6 brg matmul and jit softmax, AMD EPYC):
 * the three steps of a layer 10.4 -> 8.0-8.5 ms at batch 8 (96 entries),
 * 1.15 -> 1.07-1.10 ms at batch 1, for 1 to 6 entries a group.
 *
 * The MatMul decides (it sees the chain ahead, still reference steps);
 * the Softmax and the second MatMul follow a chunked producer.  A plan
 * with taps keeps its steps whole: a tap sees whole values there.
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/plan/internal.h"

/* S and P of one group of batch entries together; L2 is 1 MB a core on
 * the EPYC measured, 1.25-2 MB on recent Intel server cores. */
#define SS_ATTN_CHUNK_BYTES ((int64_t)1 << 20)

static int
f32(const ss__fz_t *fz, int v)
{
    return v >= 0 && ss__plan_tensor(fz->p, v)->dtype == SS_DTYPE_F32;
}

/* The batch dims of y (all but its last two) flattened, when runtime
 * operands a and b have the same (no broadcast): the entry count, or 0. */
static int64_t
batch_of(const ss_tensor_t *a, const ss_tensor_t *b, const ss_tensor_t *y)
{
    int64_t g = 1;

    if (y->ndim < 3 || a->ndim != y->ndim || b->ndim != y->ndim)
        return 0;
    for (int i = 0; i < y->ndim - 2; i++) {
        if (a->dims[i] != y->dims[i] || b->dims[i] != y->dims[i])
            return 0;
        g *= y->dims[i];
    }
    return g;
}

/* Step s is a reference MatMul of two f32 runtime operands with y's
 * batch dims: the entry count, or 0. */
static int64_t
batched_mm(const ss__fz_t *fz, int s)
{
    const ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];

    if (s < 0 || st->kind != SS_STEP_REF || !ss__plan_is_op(st, "MatMul")
        || st->n_in != 2 || !f32(fz, st->in[0]) || !f32(fz, st->in[1])
        || ss__fz_is_const(p, st->in[0]) || ss__fz_is_const(p, st->in[1]))
        return 0;
    return batch_of(ss__plan_tensor(p, st->in[0]),
                    ss__plan_tensor(p, st->in[1]),
                    ss__plan_tensor(p, st->out[0]));
}

/* The softmax axis of step st over x, normalized, or -1. */
static int
softmax_axis(const ss_plan_t *p, const ss_step_t *st, const ss_tensor_t *x)
{
    int64_t axis;

    if (!(ss__plan_is_op(st, "Softmax") || ss__plan_is_op(st, "LogSoftmax"))
        || p->g->opset < 13)
        return -1;
    axis = ss__attr_int(st->node, "axis", -1);
    if (axis < 0)
        axis += x->ndim;
    return axis >= 0 && axis < x->ndim ? (int)axis : -1;
}

/* Entries per group for the MatMul whose fused step writes out (g batch
 * entries): h < g when out goes alone to a Softmax over its last axis
 * whose output goes alone, as A, to a batched MatMul of the same batch,
 * and S and P whole pass SS_ATTN_CHUNK_BYTES; else 0. */
static int64_t
attn_rows(const ss__fz_t *fz, int out, int64_t g)
{
    const ss_plan_t *p = fz->p;
    const ss_tensor_t *y = ss__plan_tensor(p, out);
    int sm, m2;
    int64_t entry, h;

    if (p->taps || g < 2 || (sm = ss__fz_single(fz, out)) < 0
        || p->steps[sm].in[0] != out || !f32(fz, p->steps[sm].out[0])
        || softmax_axis(p, &p->steps[sm], y) != y->ndim - 1
        || (m2 = ss__fz_single(fz, p->steps[sm].out[0])) < 0
        || p->steps[m2].in[0] != p->steps[sm].out[0]
        || batched_mm(fz, m2) != g)
        return 0;
    entry = 2 * y->dims[y->ndim - 2] * y->dims[y->ndim - 1]
            * (int64_t)sizeof(float);
    if (entry * g <= SS_ATTN_CHUNK_BYTES)
        return 0;
    h = SS_ATTN_CHUNK_BYTES / entry;
    if (h < 1)
        h = 1;
    while (g % h != 0)
        h--;
    return h < g ? h : 0;
}

/* The group size of the chunked step that wrote v (the attention chain
 * before this step), with *rows its batch, or 0.  (Steps of a plan
 * without taps run in chunks for attention only.) */
static int64_t
chunked_src(const ss__fz_t *fz, int v, int64_t *rows)
{
    const ss_plan_t *p = fz->p;
    int ps = v >= 0 ? fz->prod[v] : -1;

    if (p->taps || ps < 0 || p->steps[ps].kind != SS_STEP_DNN
        || p->steps[ps].chunk <= 0 || p->steps[ps].out[0] != v)
        return 0;
    *rows = p->steps[ps].rows;
    return p->steps[ps].chunk;
}

/* Step `at` (just emitted) runs groups of `chunk` of `rows` batch entries,
 * in[0], in[1] (or 0) and out[0] advancing a, b and y elements each. */
static void
set_groups(ss_plan_t *p, int at, int64_t chunk, int64_t rows, int64_t a,
           int64_t b, int64_t y)
{
    ss_step_t *st = &p->steps[at];

    st->chunk = chunk;
    st->rows = rows;
    st->in_cols = a;
    st->in1_cols = b;
    st->out_cols = y;
}

/* A of MatMul step s is x / c or x * c, c a scalar constant, and s reads
 * it alone: the step that scales, with *a = x and *scale = 1/c or c, or
 * -1.  The scale then runs on the product instead, as its first post-op:
 * (x/c) B = (x B)/c, exactly so for c a power of two (torch's attention
 * divides q by sqrt(64) = 8 before q k^T; ViT-B/16 paid a pass over q
 * for it in each of its 12 layers). */
static int
matmul_prescale(const ss__fz_t *fz, int s, int *a, float *scale)
{
    const ss_plan_t *p = fz->p;
    const ss_step_t *st;
    int ps = fz->prod[*a];
    float f;

    if (ps < 0 || ss__fz_single(fz, *a) != s)
        return -1;
    st = &p->steps[ps];
    if (st->kind != SS_STEP_REF || st->n_in != 2 || st->n_out != 1
        || !(ss__plan_is_op(st, "Div") || ss__plan_is_op(st, "Mul"))
        || !f32(fz, st->in[0]) || ss__fz_is_const(p, st->in[0])
        || !ss__fz_scalar(p, st->in[1], &f) || f == 0.0f || !isfinite(f)
        || p->vals[st->in[0]].t.ndim != p->vals[*a].t.ndim
        || memcmp(p->vals[st->in[0]].t.dims, p->vals[*a].t.dims,
                  (size_t)p->vals[*a].t.ndim * sizeof(int64_t)) != 0)
        return -1;
    *scale = ss__plan_is_op(st, "Div") ? 1.0f / f : f;
    *a = st->in[0];
    return ps;
}

/* The post-op chain c of MatMul step s (output y): its A is lead0,
 * scaled by step pre (-1: none, as matmul_prescale found), its B read
 * through Transpose step ts (-1: none), then the steps after it, ending
 * before post-op max_post (-1: wherever ss__fz_chain ends). */
static void
mm_chain(ss__fz_t *fz, ss__chain_t *c, int s, int lead0, int ts, int pre,
         float scale, const ss_tensor_t *y, int max_post)
{
    const ss_plan_t *p = fz->p;

    ss__fz_chain_start(c, s, lead0, p->steps[s].out[0], "MatMul");
    if (ts >= 0) {
        c->steps[c->n_steps++] = ts;
        snprintf(c->what, sizeof(c->what), "Transpose+MatMul");
    }
    if (pre >= 0) {
        c->steps[c->n_steps++] = pre;
        ss_dnn_postops_add_eltwise(&c->post, SS_DNN_LINEAR, scale, 0);
        snprintf(c->what + strlen(c->what), sizeof(c->what) - strlen(c->what),
                 "(%s A)", p->steps[pre].node->op_type);
    }
    c->dst_ndim = y->ndim;
    memcpy(c->dst_dims, y->dims, (size_t)y->ndim * sizeof(int64_t));
    if (max_post < 0 || c->post.n < max_post) {
        c->max_post = max_post;
        ss__fz_chain(fz, c);
    }
}

/* The index of the first binary post-op of c, or -1. */
static int
first_binary(const ss__chain_t *c)
{
    for (int k = 0; k < c->post.n; k++)
        if (c->post.op[k].kind == SS_DNN_PO_BINARY)
            return k;
    return -1;
}

int
ss__fuse_matmul(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_matmul_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    const ss_tensor_t *a, *b, *y;
    int64_t bstr[SS_DNN_MAX_DIMS], g, h = 0, rows = 0;
    int lead[2], nd, ts = -1, pre, at, k, rc = 0;
    float scale = 1.0f;

    if (!ss__plan_is_op(st, "MatMul") || st->n_in != 2 || !f32(fz, st->in[0])
        || !f32(fz, st->in[1]) || ss__fz_is_const(p, st->in[0]))
        return 0;
    a = ss__plan_tensor(p, st->in[0]);
    b = ss__plan_tensor(p, st->in[1]);
    y = ss__plan_tensor(p, st->out[0]);
    if (a->ndim < 2 || b->ndim < 2 || y->ndim > SS_DNN_MAX_DIMS
        || ss_tensor_numel(y) == 0)
        return 0;
    g = batched_mm(fz, s);
    nd = y->ndim;
    d.ndim = nd;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);

        d.a_dims[i] = ia < 0 ? 1 : a->dims[ia];
        d.b_dims[i] = ib < 0 ? 1 : b->dims[ib];
    }
    lead[0] = st->in[0];
    lead[1] = st->in[1];
    pre = matmul_prescale(fz, s, &lead[0], &scale);
    if (ss__fz_is_const(p, st->in[1])) {
        d.b_const = b->data;
    } else if ((ts = fz->prod[st->in[1]]) >= 0
               && ss__plan_is_op(&p->steps[ts], "Transpose")
               && ss__fz_single(fz, st->in[1]) == s
               && ss__plan_tensor(p, p->steps[ts].in[0])->ndim == nd
               && b->ndim == nd) {
        /* B = Transpose(src) with the last two axes swapped: read src
         * through strides instead of copying it */
        const int64_t *perm;
        const ss_tensor_t *src = ss__plan_tensor(p, p->steps[ts].in[0]);
        int np = ss__attr_ints(p->steps[ts].node, "perm", &perm);
        int okp = np == nd;
        int64_t sstr[SS_DNN_MAX_DIMS];

        for (int i = 0; okp && i < nd - 2; i++)
            okp = perm[i] == i;
        okp = okp && perm[nd - 2] == nd - 1 && perm[nd - 1] == nd - 2;
        if (okp) {
            sstr[nd - 1] = 1;
            for (int i = nd - 2; i >= 0; i--)
                sstr[i] = sstr[i + 1] * src->dims[i + 1];
            for (int i = 0; i < nd; i++)
                bstr[i] = sstr[perm[i]];
            d.b_strides = bstr;
            lead[1] = p->steps[ts].in[0];
        }
    }
    if (d.b_strides == NULL)
        ts = -1;
    mm_chain(fz, &c, s, lead[0], ts, pre, scale, y, -1);
    d.post = c.post;
    /* the first MatMul of an attention chain decides its groups; the
     * second follows the Softmax before it */
    if (g > 0 && c.n_bin == 0 && ss__plan_tensor(p, c.out)->ndim == nd) {
        h = attn_rows(fz, c.out, g);
        rows = g;
        if (h == 0 && (h = chunked_src(fz, st->in[0], &rows)) > 0
            && (rows != g || pre >= 0))
            h = 0;
    }
    if (h > 0) {
        /* one group: the batch dims flattened to h entries */
        d.ndim = 3;
        d.a_dims[0] = d.b_dims[0] = h;
        d.a_dims[1] = a->dims[nd - 2];
        d.a_dims[2] = d.b_dims[1] = b->dims[nd - 2];
        d.b_dims[2] = b->dims[nd - 1];
        if (d.b_strides != NULL) {
            bstr[1] = bstr[nd - 2];
            bstr[2] = bstr[nd - 1];
            bstr[0] = d.b_dims[1] * d.b_dims[2];
        }
    }
    if ((rc = ss_dnn_matmul_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    /* oneDNN 2.6's brgemm matmul takes a binary post-op in some
     * broadcasts only; for others (swin's relative-position bias,
     * [1, heads, T, T] over [windows, heads, T, T]) it builds its
     * reference matmul, ~100x slower (swin_t: 85% of a run, a compression
     * job's batch-32 timing ran for tens of minutes).  The chain then
     * ends before its first binary post-op, which runs as its own step.
     * (Attention groups, h, are chosen without binary post-ops.) */
    if (ss__fz_slow(prim) && (k = first_binary(&c)) >= 0) {
        ss_dnn_prim_free(prim);
        prim = NULL;
        mm_chain(fz, &c, s, lead[0], ts, pre, scale, y, k);
        d.post = c.post;
        if ((rc = ss_dnn_matmul_new(&d, &prim, err)) < 0) {
            rc = ss__fz_fallback(rc, err);
            goto done;
        }
    }
    at = ss__fz_chain_last(&c);
    if ((rc = ss__fz_emit(fz, &c, prim, lead, d.b_const ? 1 : 2, err)) == 0) {
        rc = 1;
        if (h > 0)
            set_groups(p, at, h, rows, d.a_dims[1] * d.a_dims[2],
                       d.b_dims[1] * d.b_dims[2], d.a_dims[1] * d.b_dims[2]);
    }
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    return rc;
}

int
ss__fuse_softmax(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_softmax_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    const ss_tensor_t *x;
    int64_t h, rows = 0, cols;
    int axis, at, rc;

    if (!f32(fz, st->in[0]))
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    if ((axis = softmax_axis(p, st, x)) < 0 || x->ndim > SS_DNN_MAX_DIMS
        || ss_tensor_numel(x) == 0)
        return 0;
    d.ndim = x->ndim;
    memcpy(d.dims, x->dims, (size_t)x->ndim * sizeof(int64_t));
    d.axis = axis;
    d.log = ss__plan_is_op(st, "LogSoftmax");
    /* behind a chunked attention MatMul: the same groups (the file's
     * essay) */
    cols = x->ndim >= 2 ? x->dims[x->ndim - 2] * x->dims[x->ndim - 1] : 0;
    if ((h = chunked_src(fz, st->in[0], &rows)) > 0
        && (axis != x->ndim - 1 || x->ndim < 3
            || rows * cols != ss_tensor_numel(x)))
        h = 0;
    if (h > 0) {
        d.ndim = 3;
        d.dims[0] = h;
        d.dims[1] = x->dims[x->ndim - 2];
        d.dims[2] = x->dims[x->ndim - 1];
        d.axis = 2;
    }
    if ((rc = ss_dnn_softmax_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], st->node->op_type);
    at = ss__fz_chain_last(&c);
    if ((rc = ss__fz_emit(fz, &c, prim, &st->in[0], 1, err)) < 0)
        return rc;
    if (h > 0)
        set_groups(p, at, h, rows, cols, 0, cols);
    return 1;
}
