/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bf16: compute in bf16 for graphs that ask for it (engine/ir/edit.h:
 * ss_graph_precision), or for the layers they name (ss_graph_node_bf16:
 * a step goes bf16 only when its anchor node, the Linear or Conv, is
 * listed).  ss_plan_new runs this pass after the int8 one and before the
 * f32 fusion (plan_fuse.c), which takes what is left.
 *
 * DESIGN: Linear and Conv with constant weights run on bf16 primitives
 * (weights converted once, here; f32 accumulation, f32 bias and
 * post-ops).  A bf16 source is made by a conversion step inserted before
 * the first reader and shared by every reader of the same value; when a
 * bf16 step's result is read only by other bf16 steps (itself or
 * through views: a Flatten between the last conv and a Linear), it
 * writes bf16 itself and no conversion runs.  2-D convs run nChw16c
 * where their channels allow (the first layer reading a plain source),
 * others channels-last (oneDNN 2.6 has jit/brgconv bf16 kernels for
 * those, only gemm ones for NCHW; conv_prim): their f32 results are left
 * in that layout for the layout pass (plan_layout.c) to convert where a
 * reader wants another.  A MaxPool between such a conv and bf16 readers
 * runs on bf16 in the conv's layout (bf16_pools).  Everything else
 * (LayerNorm, Softmax, attention's batched MatMuls) stays f32.
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "engine/ir/edit.h"
#include "engine/plan/internal.h"

typedef struct brec {
    int step;               /* the fused step */
    int src;                /* its f32 source value */
    int lin;                /* 1: qlinear, 0: qconv */
    ss_dnn_qlinear_desc_t ld;
    ss_dnn_qconv_desc_t cd;
    float *owned[2];        /* buffers the descriptors point at */
    ss_dnn_layout_t lay;    /* the layout it writes (NHWC, BLOCKED or
                             * PLAIN) */
    ss_dnn_layout_t src_lay;    /* the layout it reads: lay, but PLAIN
                                 * for a blocked first-layer conv */
    int pool;               /* a MaxPool behind a bf16 conv (bf16_pools) */
} brec_t;

typedef struct bpass {
    brec_t *r;
    int n, cap;
} bpass_t;

static brec_t *
brec_new(bpass_t *b)
{
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 16;
        brec_t *r = ss_realloc(b->r, (size_t)cap * sizeof(*r));

        if (r == NULL)
            return NULL;
        b->r = r;
        b->cap = cap;
    }
    memset(&b->r[b->n], 0, sizeof(brec_t));
    return &b->r[b->n++];
}

static int
bf16_linear(ss__fz_t *fz, int s, bpass_t *bp, ss_err_t *err)
{
    ss_dnn_qlinear_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    brec_t *r;
    ss__fz_lin_t L;
    int src = fz->p->steps[s].in[0], rc;

    if ((rc = ss__fz_linear_shape(fz, s, &L, &c, err)) <= 0)
        goto done;
    snprintf(c.what, sizeof(c.what), "bf16 %s",
             ss__plan_is_op(&fz->p->steps[s], "Gemm") ? "Gemm" : "MatMul");
    ss__fz_linear_chain(fz, &c);
    d.src_dtype = SS_DTYPE_BF16;
    d.dst_dtype = SS_DTYPE_F32;
    d.w_dtype = SS_DTYPE_F32;
    d.m = L.m;
    d.k = L.k;
    d.n = L.n;
    d.w = ss__plan_tensor(fz->p, L.wv)->data;
    d.w_nk = L.w_nk;
    d.bias = L.bias;
    d.post = c.post;
    if ((rc = ss_dnn_qlinear_new(&d, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    if ((r = brec_new(bp)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to fuse");
        goto done;
    }
    r->step = ss__fz_chain_last(&c);
    r->src = src;
    r->lin = 1;
    r->ld = d;
    r->owned[0] = L.owned;
    L.owned = NULL;
    if ((rc = ss__fz_emit(fz, &c, prim, &src, 1, err)) == 0)
        rc = 1;
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    ss_free(L.owned);
    return rc;
}

/* The primitive of bf16 conv d (d->blocked, d->nhwc set to what it
 * takes).  oneDNN 2.6 on AVX512_BF16 (28x28 CNN, batch 32): the first
 * layer (1 input channel) takes 0.08 ms blocked from a plain source
 * (jit_bf16's first-layer kernel) against 0.17-0.24 in NHWC (brgconv),
 * a 64 -> 64 7x7 conv 0.23 blocked against 0.27; NCHW has only gemm
 * (slower than f32).  So: blocked for 2-D convs whose channels allow it
 * (OC % 16, and IC % 16 or a plain source), else channels-last, else
 * NCHW -- each only when oneDNN has a real kernel for it.
 * SS_ENGINE_BF16_NHWC=1 skips blocked (for measurements). */
static int
conv_prim(ss_dnn_qconv_desc_t *d, int blk_ok, ss_dnn_prim_t **prim,
          ss_err_t *err)
{
    const char *e = getenv("SS_ENGINE_BF16_NHWC");
    int try_blk = blk_ok && d->g.nsp == 2 && d->g.oc % 16 == 0
                  && !(e != NULL && e[0] == '1');
    int rc = SS_EUNSUPP;

    for (int k = try_blk ? 0 : 1; k < 3; k++) {
        const char *impl;

        d->blocked = k == 0;
        d->nhwc = k == 1;
        if ((rc = ss_dnn_qconv_new(d, prim, err)) < 0) {
            if (rc == SS_ENOMEM || k == 2)
                return rc;
            ss_err_clear(err);
            continue;
        }
        impl = ss_dnn_prim_impl(*prim);
        if (k == 2 || (strncmp(impl, "ref", 3) != 0
                       && strstr(impl, "gemm") == NULL))
            return 0;
        ss_dnn_prim_free(*prim);
        *prim = NULL;
    }
    return rc;
}

/* The layouts conv record r writes and reads, from its descriptor. */
static void
conv_lays(brec_t *r)
{
    r->lay = r->cd.blocked ? SS_DNN_BLOCKED : r->cd.nhwc ? SS_DNN_NHWC
                                                         : SS_DNN_PLAIN;
    r->src_lay = r->cd.blocked && r->cd.g.ic % 16 ? SS_DNN_PLAIN : r->lay;
}

static int
bf16_conv(ss__fz_t *fz, int s, bpass_t *bp, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_qconv_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    const ss_tensor_t *wt;
    const float *w, *bias;
    float *wf = NULL, *bf = NULL;
    brec_t *r;
    int src = st->in[0], rc = 0;

    if (!ss__fz_conv_shape(p, st, &d))
        return 0;
    wt = ss__plan_tensor(p, st->in[1]);
    w = wt->data;
    bias = d.bias;
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "bf16 Conv");
    /* a BatchNormalization right after folds into weights and bias */
    if ((rc = ss__fz_conv_bn(fz, &c, d.g.oc, &w, ss_tensor_numel(wt), &bias,
                             &wf, &bf, err)) < 0)
        goto done;
    d.w = w;
    d.bias = bias;
    c.dst_ndim = wt->ndim;
    memcpy(c.dst_dims, ss__plan_tensor(p, st->out[0])->dims,
           (size_t)wt->ndim * sizeof(int64_t));
    ss__fz_chain(fz, &c);
    d.src_dtype = SS_DTYPE_BF16;
    d.dst_dtype = SS_DTYPE_F32;
    d.w_dtype = SS_DTYPE_F32;
    d.post = c.post;
    if ((rc = conv_prim(&d, 1, &prim, err)) < 0) {
        rc = ss__fz_fallback(rc, err);
        goto done;
    }
    if ((r = brec_new(bp)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to fuse");
        goto done;
    }
    r->step = ss__fz_chain_last(&c);
    r->src = src;
    r->cd = d;
    conv_lays(r);
    r->owned[0] = wf;
    r->owned[1] = bf;
    wf = bf = NULL;
    if ((rc = ss__fz_emit(fz, &c, prim, &src, 1, err)) == 0)
        rc = 1;
    prim = NULL;
done:
    ss_dnn_prim_free(prim);
    ss_free(wf);
    ss_free(bf);
    return rc;
}

/* A MaxPool step: recorded as a candidate to run on bf16 (bf16_pools
 * decides). */
static int
bf16_pool_rec(ss_plan_t *p, int s, bpass_t *bp, ss_err_t *err)
{
    const ss_step_t *st = &p->steps[s];
    ss_dnn_pool_desc_t d;
    brec_t *r;

    if (!ss__plan_is_op(st, "MaxPool") || st->n_in != 1 || st->out[0] < 0
        || (st->n_out > 1 && st->out[1] >= 0)
        || !ss__fz_pool_desc(p, st, &d) || d.dtype != SS_DTYPE_F32
        || d.nsp < 2)
        return 0;
    if ((r = brec_new(bp)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to fuse");
    r->step = s;
    r->src = st->in[0];
    r->pool = 1;
    return 1;
}

/* Whether v (written by a bf16 step in layout lay) is read only by bf16
 * steps, as their source, in that layout (a pool: any; bf16_pools
 * gives it its producer's). */
static int
only_bf16_readers(const ss_plan_t *p, const bpass_t *bp, const int *rec_at,
                  int v, ss_dnn_layout_t lay)
{
    int readers = 0;

    if (ss__plan_is_graph_out(p, v) || ss__plan_has_views(p, v))
        return 0;
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        for (int k = 0; k < st->n_in; k++) {
            if (st->in[k] != v)
                continue;
            if (k != 0 || rec_at[s] < 0
                || (!bp->r[rec_at[s]].pool
                    && bp->r[rec_at[s]].src_lay != lay))
                return 0;
            readers++;
        }
    }
    return readers > 0;
}

/* Steps reading v, graph outputs and views counted as readers too. */
static int
readers(const ss_plan_t *p, int v)
{
    int n = ss__plan_is_graph_out(p, v) || ss__plan_has_views(p, v);

    for (int s = 0; s < p->n_steps; s++)
        for (int k = 0; k < p->steps[s].n_in; k++)
            n += p->steps[s].in[k] == v;
    return n;
}

/* Whether v is read through views only (no step reads it, it is no graph
 * output), each view read only by bf16 steps of v's layout: a conv before
 * a Flatten into a bf16 Linear (the 28x28 CNN) then writes bf16, and
 * bf16_finish converts it to NCHW bytes as it would have f32. */
static int
views_bf16(const ss_plan_t *p, const bpass_t *bp, const int *rec_at, int v)
{
    int n = 0;

    if (ss__plan_is_graph_out(p, v) || !ss__plan_has_views(p, v)
        || readers(p, v) != 1)
        return 0;
    for (int f = 0; f < p->n_vals; f++) {
        if (p->vals[f].alias != v)
            continue;
        if (!only_bf16_readers(p, bp, rec_at, f, SS_DNN_PLAIN))
            return 0;
        n++;
    }
    return n > 0;
}

/* v and its views (views_bf16) hold bf16 from here on. */
static void
set_bf16(ss_plan_t *p, int v)
{
    for (int f = 0; f < p->n_vals; f++)
        if (f == v || p->vals[f].alias == v) {
            p->vals[f].t.dtype = SS_DTYPE_BF16;
            (void)ss__tensor_bytes(&p->vals[f].t, &p->vals[f].bytes);
        }
}

/* A pool of bf16_pools whose source stayed f32 (its conv could not write
 * bf16) goes back to the f32 fusion; the others write bf16. */
static void
bf16_pools_settle(ss_plan_t *p, bpass_t *bp, int *rec_at)
{
    for (int i = 0; i < bp->n; i++) {
        brec_t *r = &bp->r[i];
        ss_step_t *st = &p->steps[r->step];
        int y = st->out[0];

        if (!r->pool || rec_at[r->step] != i)
            continue;
        if (p->vals[r->src].t.dtype != SS_DTYPE_BF16) {
            ss_dnn_prim_free(st->prim);
            st->prim = NULL;
            st->kind = SS_STEP_REF;
            st->what[0] = '\0';
            rec_at[r->step] = -1;
            continue;
        }
        p->vals[y].t.dtype = SS_DTYPE_BF16;
        (void)ss__tensor_bytes(&p->vals[y].t, &p->vals[y].bytes);
    }
}

/* A MaxPool between an NHWC bf16 conv (its only reader) and bf16 steps
 * (its only readers) runs on bf16 NHWC: max(bf16(x)) = bf16(max x), the
 * rounding being monotone, so the conv writes bf16 and the pool reads
 * it, where the conv wrote f32, the layout pass reordered it to NCHW for
 * an f32 pool and a conversion made bf16 NHWC again for the next conv
 * (the 28x28 CNN: 3 of those per pool).  The pool's primitive is built
 * here, before anything depends on it; a candidate that does not qualify
 * is dropped (rec_at -1: its step stays for the f32 fusion). */
static int
bf16_pools(ss_plan_t *p, bpass_t *bp, int *rec_at, ss_err_t *err)
{
    /* a pool reading a pool's result: not counted as a bf16 reader */
    for (int i = 0; i < bp->n; i++)
        if (bp->r[i].pool)
            rec_at[bp->r[i].step] = -1;
    for (int i = 0; i < bp->n; i++) {
        brec_t *r = &bp->r[i];
        ss_step_t *st = &p->steps[r->step], ref;
        ss_dnn_pool_desc_t d;
        ss_dnn_prim_t *prim = NULL;
        int prod = -1, rc;

        if (!r->pool)
            continue;
        for (int j = 0; j < bp->n; j++)
            if (!bp->r[j].pool && bp->r[j].lay != SS_DNN_PLAIN
                && p->steps[bp->r[j].step].out[0] == r->src)
                prod = j;
        if (prod < 0)
            continue;
        r->lay = r->src_lay = bp->r[prod].lay;
        ref = *st;
        if (readers(p, r->src) != 1
            || !only_bf16_readers(p, bp, rec_at, st->out[0], r->lay)
            || !ss__fz_pool_desc(p, &ref, &d))
            continue;
        d.dtype = SS_DTYPE_BF16;
        d.layout = r->lay;
        if ((rc = ss_dnn_pool_new(&d, &prim, err)) < 0) {
            if ((rc = ss__fz_fallback(rc, err)) < 0)
                return rc;
            continue;
        }
        st->kind = SS_STEP_DNN;
        st->prim = prim;
        st->n_in = 1;
        snprintf(st->what, sizeof(st->what), "bf16 MaxPool");
        if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
            p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
        rec_at[r->step] = i;
    }
    return 0;
}

/* The conv record writing v (directly, or through a MaxPool candidate
 * reading only that conv's result), or -1. */
static int
bf16_producer(const ss_plan_t *p, const bpass_t *bp, int v)
{
    for (int i = 0; i < bp->n; i++) {
        const brec_t *r = &bp->r[i];

        if (p->steps[r->step].out[0] != v)
            continue;
        if (!r->pool)
            return i;
        for (int j = 0; j < bp->n; j++)
            if (!bp->r[j].pool && p->steps[bp->r[j].step].out[0] == r->src
                && readers(p, r->src) == 1)
                return j;
    }
    return -1;
}

/* A bf16 conv reading (alone) a bf16 conv's result in another layout --
 * a blocked conv before one whose channels want channels-last, a
 * first-layer conv reading plain after a channels-last one -- would make
 * the producer write f32 for a reorder and a conversion: both run
 * channels-last instead (rebuilt), until every such pair agrees. */
static int
bf16_agree(ss_plan_t *p, bpass_t *bp, ss_err_t *err)
{
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < bp->n; i++) {
            brec_t *c = &bp->r[i], *q[2];
            int pr = bp->r[i].pool || bp->r[i].lin ? -1
                     : bf16_producer(p, bp, c->src);

            if (pr < 0 || readers(p, c->src) != 1
                || bp->r[pr].lay == c->src_lay)
                continue;
            q[0] = c;
            q[1] = &bp->r[pr];
            for (int k = 0; k < 2; k++) {
                ss_step_t *st = &p->steps[q[k]->step];
                ss_dnn_prim_t *prim = NULL;
                int rc;

                if (q[k]->lay == SS_DNN_NHWC && q[k]->src_lay == SS_DNN_NHWC)
                    continue;
                if ((rc = conv_prim(&q[k]->cd, 0, &prim, err)) < 0)
                    return rc;
                ss_dnn_prim_free(st->prim);
                st->prim = prim;
                if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
                    p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
                conv_lays(q[k]);
                changed = 1;
            }
        }
    }
    return 0;
}

/* Decides which results stay bf16, where NHWC results go, then inserts
 * the conversions. */
static int
bf16_finish(ss_plan_t *p, bpass_t *bp, ss_err_t *err)
{
    int *rec_at = NULL, *cv = NULL, n_cv = 0, rc = 0;
    ss__plan_inslist_t il = { 0 };

    if ((rec_at = ss_malloc(((size_t)p->n_steps + 1) * sizeof(int))) == NULL
        || (cv = ss_malloc(((size_t)bp->n + 1) * 3 * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for bf16 conversions");
        goto done;
    }
    for (int s = 0; s < p->n_steps; s++)
        rec_at[s] = -1;
    for (int i = 0; i < bp->n; i++)
        rec_at[bp->r[i].step] = i;
    if ((rc = bf16_agree(p, bp, err)) < 0
        || (rc = bf16_pools(p, bp, rec_at, err)) < 0)
        goto done;
    /* results read only by bf16 steps: rebuild their producer with a bf16
     * destination */
    for (int i = 0; i < bp->n; i++) {
        brec_t *r = &bp->r[i];
        ss_step_t *st = &p->steps[r->step];
        int y = st->out[0];
        ss_dnn_prim_t *prim = NULL;

        if (r->pool || !(only_bf16_readers(p, bp, rec_at, y, r->lay)
                         || views_bf16(p, bp, rec_at, y)))
            continue;
        if (r->lin) {
            r->ld.dst_dtype = SS_DTYPE_BF16;
            rc = ss_dnn_qlinear_new(&r->ld, &prim, err);
        } else {
            r->cd.dst_dtype = SS_DTYPE_BF16;
            rc = ss_dnn_qconv_new(&r->cd, &prim, err);
        }
        if (rc < 0) {
            if ((rc = ss__fz_fallback(rc, err)) < 0)
                goto done;
            continue;
        }
        ss_dnn_prim_free(st->prim);
        st->prim = prim;
        set_bf16(p, y);
        if (ss_dnn_prim_scratch_size(prim) > p->scratch_bytes)
            p->scratch_bytes = ss_dnn_prim_scratch_size(prim);
    }
    bf16_pools_settle(p, bp, rec_at);
    /* NHWC results: recorded as such (the layout pass, plan_layout.c,
     * converts f32 ones for readers that want another layout); a graph
     * output or a value with views is converted back here */
    for (int i = 0; i < bp->n; i++) {
        brec_t *r = &bp->r[i];
        ss_step_t *st = &p->steps[r->step];
        int y = st->out[0], ys;
        ss_dnn_convert_desc_t cd = { 0 };

        if (r->lay == SS_DNN_PLAIN || rec_at[r->step] != i)
            continue;
        if (!ss__plan_is_graph_out(p, y) && !ss__plan_has_views(p, y)) {
            p->vals[y].layout = r->lay;
            continue;
        }
        ys = ss__plan_add_value(p, y, ss__plan_tensor(p, y)->dtype, r->lay,
                                err);
        if (ys < 0) {
            rc = ys;
            goto done;
        }
        st->out[0] = ys;
        cd.src_dtype = cd.dst_dtype = ss__plan_tensor(p, y)->dtype;
        cd.ndim = ss__plan_tensor(p, y)->ndim;
        memcpy(cd.dims, ss__plan_tensor(p, y)->dims,
               (size_t)cd.ndim * sizeof(int64_t));
        cd.src_layout = r->lay;
        if ((rc = ss__plan_ins_convert(p, &il, r->step, 1, &cd, ys, y,
                                       "to NCHW", err)) < 0)
            goto done;
    }
    /* every source still f32 gets one conversion per layout, shared by
     * its readers, before the first of them */
    for (int i = 0; i < bp->n; i++) {
        brec_t *r = &bp->r[i];
        int j, src = r->src;

        if (r->pool || p->vals[src].t.dtype == SS_DTYPE_BF16)
            continue;
        for (j = 0; j < n_cv; j++)
            if (cv[3 * j] == src && cv[3 * j + 2] == (int)r->src_lay)
                break;
        if (j == n_cv) {
            if ((rc = ss__plan_add_value(p, src, SS_DTYPE_BF16, r->src_lay,
                                         err)) < 0)
                goto done;
            cv[3 * j] = src;
            cv[3 * j + 1] = rc;
            cv[3 * j + 2] = (int)r->src_lay;
            n_cv++;
            rc = 0;
        }
        p->steps[r->step].in[0] = cv[3 * j + 1];
    }
    for (int j = 0; j < n_cv; j++) {
        ss_dnn_convert_desc_t cd = { 0 };
        const ss_tensor_t *t = ss__plan_tensor(p, cv[3 * j]);
        int first = -1;

        for (int i = 0; i < bp->n; i++)
            if (p->steps[bp->r[i].step].in[0] == cv[3 * j + 1]
                && (first < 0 || bp->r[i].step < first))
                first = bp->r[i].step;
        cd.src_dtype = SS_DTYPE_F32;
        cd.dst_dtype = SS_DTYPE_BF16;
        cd.ndim = t->ndim;
        memcpy(cd.dims, t->dims, sizeof(cd.dims));
        cd.dst_layout = (ss_dnn_layout_t)cv[3 * j + 2];
        if (t->ndim == 4 || t->ndim == 5)
            cd.src_layout = p->vals[ss__plan_root(p, cv[3 * j])].layout;
        if (t->ndim < 1 || t->ndim > SS_DNN_MAX_DIMS || first < 0) {
            rc = ss_err_set(err, SS_EINTERNAL, "bf16: cannot convert a "
                            "%d-D tensor", t->ndim);
            goto done;
        }
        if ((rc = ss__plan_ins_convert(p, &il, first, 0, &cd, cv[3 * j],
                                       cv[3 * j + 1], "to bf16", err)) < 0)
            goto done;
    }
    rc = ss__plan_ins_apply(p, &il, err);
done:
    ss__plan_ins_free(&il);
    ss_free(rec_at);
    ss_free(cv);
    return rc;
}

/* Warns about the entries of the per-layer list that name no node: the
 * plan runs them in f32 (a rename by an edit, or a typo).  Returns how
 * many entries name a node. */
static int
bf16_list_check(const ss_graph_t *g, const char *list)
{
    int found = 0;

    for (const char *e, *a = list; a != NULL; a = *e ? e + 1 : NULL) {
        size_t len;
        int hit = 0;

        e = strchr(a, ',');
        if (e == NULL)
            e = a + strlen(a);
        if ((len = (size_t)(e - a)) == 0)
            continue;
        for (int i = 0; i < g->n_nodes && !hit; i++)
            hit = strlen(g->nodes[i].name) == len
                  && memcmp(g->nodes[i].name, a, len) == 0;
        if (hit)
            found++;
        else
            ss_log_warn("%s: %s names '%.*s', which is no node: it stays "
                        "f32", g->source ? g->source : "graph",
                        SS_GRAPH_BF16_NODES, (int)len, a);
    }
    return found;
}

int
ss__plan_bf16(ss_plan_t *p, ss_err_t *err)
{
    ss__fz_t fz;
    bpass_t bp = { 0 };
    const char *list = ss_graph_meta(p->g, SS_GRAPH_BF16_NODES);
    int rc = 0, kept = 0;

    if (ss_graph_precision(p->g) != SS_DTYPE_BF16
        && (list == NULL || bf16_list_check(p->g, list) == 0))
        return 0;

    if (ss__fz_init(&fz, p) < 0) {
        ss__fz_close(&fz);
        return ss_err_set(err, SS_ENOMEM, "no memory to fuse");
    }
    for (int s = 0; s < p->n_steps; s++) {
        if (p->steps[s].kind != SS_STEP_REF
            || !ss_graph_node_bf16(p->g, p->steps[s].node->name))
            continue;
        if ((rc = bf16_linear(&fz, s, &bp, err)) < 0)
            goto done;
        if (rc == 0 && p->steps[s].kind == SS_STEP_REF
            && (rc = bf16_pool_rec(p, s, &bp, err)) < 0)
            goto done;
        if (rc == 0 && p->steps[s].kind == SS_STEP_REF
            && (rc = bf16_conv(&fz, s, &bp, err)) < 0)
            goto done;
    }
    rc = 0;
    ss__fz_close(&fz);
    memset(&fz, 0, sizeof(fz));
    /* drop the holes fusion left, renumbering the records */
    for (int s = 0, r = 0; s < p->n_steps; s++) {
        if (p->steps[s].kind == 0)
            continue;
        for (r = 0; r < bp.n; r++)
            if (bp.r[r].step == s)
                bp.r[r].step = kept;
        p->steps[kept++] = p->steps[s];
    }
    p->n_steps = kept;
    rc = bf16_finish(p, &bp, err);
done:
    ss__fz_close(&fz);
    for (int i = 0; i < bp.n; i++) {
        ss_free(bp.r[i].owned[0]);
        ss_free(bp.r[i].owned[1]);
    }
    ss_free(bp.r);
    return rc;
}
