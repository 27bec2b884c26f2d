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

#include "engine/plan/internal.h"

/* 64 KB of f32: from there a oneDNN run's fixed cost is below 10% of
 * the copy's (about 10 GB/s either way for a contiguous one). */
#define SS_MOVE_MIN_ELEMS 16384

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
    int nd, rc;

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
    if ((rc = ss_dnn_reorder_new(&d, &prim, err)) < 0)
        return ss__fz_fallback(rc, err);
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "Transpose");
    rc = ss__fz_emit(fz, &c, prim, &st->in[0], 1, err);
    if (rc == 0) {
        p->vals[c.out].layout = SS_DNN_PLAIN;
        rc = 1;
    }
    return rc;
}
