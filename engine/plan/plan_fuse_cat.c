/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The f32 fusion pass's Concat anchor: a Concat along the channels of
 * 4-D or 5-D values (a U-Net's skip join of upsampled decoder features
 * and the encoder's) becomes oneDNN's concat (ss_dnn_concat_new), which
 * reads every input in the layout its producer wrote and writes the
 * layout the readers want.  The layout rules make a producer whose
 * reader is such a Concat write its natural layout (plan_layout_rules.c),
 * so a decoder stays blocked (or NHWC) through the join: before this the
 * reference Concat read NCHW, a reorder before it per input and one after
 * it.  With every input and the output NCHW the reference kernel keeps it
 * (the same copy).
 *
 * DESIGN.  The inputs are copied into dst's channel ranges in one pass
 * (oneDNN's simple concat) when they share dst's layout and, blocked,
 * start at channel offsets of 16; otherwise oneDNN reorders each input
 * into its part of dst, still one pass over the bytes.  Producers writing
 * straight into views of dst would save that copy; not done (left in
 * bench/README.md).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include <string.h>

#include "engine/plan/internal.h"

int
ss__lay_concat(const ss_plan_t *p, const ss_step_t *st)
{
    const ss_tensor_t *y;
    int64_t axis;

    if (st->kind != SS_STEP_REF || !ss__plan_is_op(st, "Concat")
        || st->n_in < 2 || st->n_in > SS_DNN_CONCAT_MAX || st->n_out != 1
        || st->out[0] < 0)
        return 0;
    y = ss__plan_tensor(p, st->out[0]);
    axis = ss__attr_int(st->node, "axis", 0);
    if (y->dtype != SS_DTYPE_F32 || !ss__lay_rank(y)
        || (axis != 1 && axis != 1 - y->ndim))
        return 0;
    for (int i = 0; i < st->n_in; i++) {
        const ss_tensor_t *x;

        if (st->in[i] < 0 || ss__fz_is_const(p, st->in[i]))
            return 0;
        x = ss__plan_tensor(p, st->in[i]);
        if (x->dtype != SS_DTYPE_F32 || x->ndim != y->ndim
            || ss_tensor_numel(x) == 0)
            return 0;
    }
    return 1;
}

int
ss__fuse_concat(ss__fz_t *fz, int s, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    const ss_step_t *st = &p->steps[s];
    ss_dnn_concat_desc_t d = { 0 };
    ss_dnn_prim_t *prim = NULL;
    ss_dnn_layout_t want[3];
    const ss_tensor_t *y;
    ss__chain_t c;
    int n = 0, plain = 1, rc = SS_EUNSUPP;

    if (!ss__lay_concat(p, st))
        return 0;
    y = ss__plan_tensor(p, st->out[0]);
    d.dtype = SS_DTYPE_F32;
    d.ndim = y->ndim;
    d.n = st->n_in;
    for (int i = 0; i < d.n; i++) {
        const ss_tensor_t *x = ss__plan_tensor(p, st->in[i]);

        memcpy(d.dims[i], x->dims, (size_t)x->ndim * sizeof(int64_t));
        d.src_layout[i] = ss__lay_of(p, st->in[i]);
        plain &= ss__lay_same(d.src_layout[i], SS_DNN_PLAIN, x);
    }
    want[n++] = ss__lay_dst(fz, st->out[0]);
    if (plain && ss__lay_same(want[0], SS_DNN_PLAIN, y))
        return 0;
    /* a blocked dst at a channel offset of no multiple of 16 */
    if (want[0] == SS_DNN_BLOCKED)
        want[n++] = SS_DNN_NHWC;
    if (want[0] != SS_DNN_PLAIN)
        want[n++] = SS_DNN_PLAIN;
    for (int i = 0; i < n; i++) {
        d.dst_layout = want[i];
        if ((rc = ss_dnn_concat_new(&d, &prim, err)) != SS_EUNSUPP
            && rc != SS_EINVAL)
            break;
        ss_err_clear(err);
    }
    if (rc < 0)
        return ss__fz_fallback(rc, err);
    p->vals[st->out[0]].layout = ss_dnn_prim_layout(prim, -1);
    ss__fz_chain_start(&c, s, st->in[0], st->out[0], "Concat");
    rc = ss__fz_emit(fz, &c, prim, st->in, st->n_in, err);
    return rc < 0 ? rc : 1;
}
