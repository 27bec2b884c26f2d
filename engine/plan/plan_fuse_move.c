/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The f32 fusion pass's anchor for data movement: a Transpose that
 * nothing else absorbed runs as a oneDNN reorder instead of the reference
 * kernel's strided copy.
 *
 * DESIGN: the reference Transpose walks the output in order and gathers
 * each row from the input through a run-time stride, one element at a
 * time unless the row is contiguous; oneDNN's jit reorder blocks both
 * sides.  torch's attention writes K^T as a (1,2,0) Transpose of a
 * [T, B*H, 64] view, whose rows are 64-float gathers: measured here (one
 * thread, ViT-B/16's shapes), that copy took 3.0 ms at batch 8 as a
 * Slice plus the reference Transpose and 0.81 ms as a reorder (batch 1:
 * 0.15 and 0.05 ms); q's and v's (1,0,2) ones, contiguous rows of 64,
 * 0.65 and 0.48 ms.  The reorder is the same copy, element for element.
 * A run through oneDNN costs a few microseconds (test_dnnl's diagnostic)
 * where the reference copy of a small tensor costs less: tensors below
 * SS_MOVE_MIN_ELEMS stay on the reference kernel.  4-D transposes are
 * left to ss__fuse_transpose and the layout pass, which decide between
 * NCHW and NHWC around convolutions (plan_fuse_ops.c).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include "engine/ops/ops.h"
#include "engine/plan/internal.h"

/* 64 KB of f32: from there a oneDNN run's fixed cost is below 10% of
 * the copy's (about 10 GB/s either way for a contiguous one). */
#define SS_MOVE_MIN_ELEMS 16384

/* The reorder's source when the Transpose reads (through views) a
 * reference Slice's output that nothing else reads: attention's q, k and
 * v, cut from the one in_proj product and split into heads by a Reshape
 * (a view) before the Transpose.  Then the reorder reads the Slice's
 * input in place -- the slice's offset and strides -- and the Slice's
 * copy goes (the prune drops the step nobody reads).  Measured (ViT-B/16,
 * one thread): the three Slice copies were ~1% of a batch-1 run.
 *
 * The slice's dims and the Transpose's input dims (the Reshape splits and
 * merges axes) are two factorisations of one count; their common
 * refinement, outer factor by outer factor, has each dim inside one axis
 * of both, so each refined dim has one stride in the Slice's input, and
 * the Transpose moves the refined dims in groups (its input axes).  At
 * batch 8 the Reshape [197,8,768] -> [197,96,64] of the slice (row
 * stride 2304) has no strides of its own; its refinement [197,8,12,64]
 * does.  The refinement needs each outer factor to divide the other
 * side's; anything else, a step other than 1, more refined dims than
 * oneDNN's reorder takes: 0, the plain reorder (of the Slice's copy).
 * Fills d (dims in the Transpose's output order, src strides into str,
 * the offset) and returns the Slice's input value, or -1. */
static int
through_slice(ss__fz_t *fz, int s, const int64_t *perm,
              ss_dnn_reorder_desc_t *d, int64_t *str)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s], *sl;
    const ss_tensor_t *sin[5] = { NULL }, *x, *r;
    int64_t sd[SS_MAX_DIMS], ss[SS_MAX_DIMS], off;
    int64_t fd[SS_DNN_MAX_DIMS], fs[SS_DNN_MAX_DIMS];
    int fgrp[SS_DNN_MAX_DIMS], nf = 0, v = ss__plan_root(p, st->in[0]);
    int i = 0, j = 0, ps = fz->prod[v], xv;
    ss_err_t e2 = { 0 };

    if (ps < 0 || !ss__plan_is_op(&p->steps[ps], "Slice")
        || fz->is_out[v] || fz->start[v + 1] - fz->start[v] != 1
        || fz->list[fz->start[v]] != s)
        return -1;
    sl = &p->steps[ps];
    xv = sl->in[0];
    if (sl->n_out != 1 || sl->out[0] != v || sl->n_in > 5 || xv < 0
        || ss__fz_is_const(p, xv) || ss__lay_of(p, xv) != SS_DNN_PLAIN
        || ss__plan_tensor(p, xv)->dtype != SS_DTYPE_F32)
        return -1;
    for (int k = 0; k < sl->n_in; k++)
        sin[k] = sl->in[k] >= 0 ? ss__plan_tensor(p, sl->in[k]) : NULL;
    x = sin[0];
    r = ss__plan_tensor(p, st->in[0]);
    if (ss__ops_slice_view(sl->node, p->g->opset, sin, sd, ss, &off,
                           &e2) < 0)
        return -1;
    /* the common refinement of the slice's dims and r's, outer first;
     * dims of 1 take no part */
    for (int64_t rs = 1, rr = 1;;) {
        int64_t f;

        while (rs == 1 && i < x->ndim)
            rs = sd[i++];
        while (rr == 1 && j < r->ndim)
            rr = r->dims[j++];
        if (rs == 1 || rr == 1)
            break;
        f = rs < rr ? rs : rr;
        if (f < 1 || rs % f || rr % f || ss[i - 1] <= 0 || nf == SS_DNN_MAX_DIMS)
            return -1;
        fd[nf] = f;
        fs[nf] = ss[i - 1] * (rs / f);
        fgrp[nf++] = j - 1;
        rs /= f;
        rr /= f;
    }
    /* the refined dims in the output's order: r's axes permuted */
    d->ndim = 0;
    for (int a = 0; a < r->ndim; a++)
        for (int k = 0; k < nf; k++)
            if (fgrp[k] == perm[a]) {
                d->dims[d->ndim] = fd[k];
                str[d->ndim++] = fs[k];
            }
    if (d->ndim == 0) {         /* one element */
        d->dims[0] = 1;
        str[d->ndim++] = 1;
    }
    d->src_offset = off;
    return xv;
}

int
ss__fuse_transpose_reorder(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_reorder_desc_t d = { .dtype = SS_DTYPE_F32 };
    int64_t perm[SS_DNN_MAX_DIMS], dense[SS_DNN_MAX_DIMS];
    int64_t str[SS_DNN_MAX_DIMS];
    const ss_tensor_t *x, *y;
    ss_dnn_prim_t *prim = NULL;
    ss__chain_t c;
    int nd, rc, src;

    if (!ss__plan_is_op(st, "Transpose") || st->n_in != 1 || st->n_out != 1
        || st->in[0] < 0 || st->out[0] < 0
        || ss__fz_is_const(p, st->in[0]))
        return 0;
    x = ss__plan_tensor(p, st->in[0]);
    y = ss__plan_tensor(p, st->out[0]);
    nd = x->ndim;
    if (x->dtype != SS_DTYPE_F32 || nd < 2 || nd > SS_DNN_MAX_DIMS
        || nd == 4 || y->ndim != nd || ss_tensor_numel(x) < SS_MOVE_MIN_ELEMS
        || ss__lay_of(p, st->in[0]) != SS_DNN_PLAIN
        || !ss__fz_attr_n(st->node, "perm", -1, perm, nd))
        return 0;
    /* no perm: the dims reversed (ONNX) */
    for (int i = 0; perm[0] < 0 && i < nd; i++)
        perm[i] = nd - 1 - i;
    dense[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--)
        dense[i] = dense[i + 1] * x->dims[i + 1];
    for (int i = 0; i < nd; i++) {
        if (perm[i] < 0 || perm[i] >= nd
            || y->dims[i] != x->dims[perm[i]])
            return 0;
        str[i] = dense[perm[i]];
        d.dims[i] = y->dims[i];
    }
    d.ndim = nd;
    d.src_strides = str;
    src = through_slice(fz, s, perm, &d, str);
    if ((rc = ss_dnn_reorder_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    src = src < 0 ? st->in[0] : src;
    ss__fz_chain_start(&c, s, src, st->out[0],
                       src != st->in[0] ? "Slice+Transpose" : "Transpose");
    rc = ss__fz_emit(fz, &c, prim, &src, 1, err);
    if (rc == 0) {
        p->vals[c.out].layout = SS_DNN_PLAIN;
        rc = 1;
    }
    return rc;
}
