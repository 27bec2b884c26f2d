/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Activation layouts: which 4-D values live blocked (nChw16c) or
 * channels-last (NHWC) between oneDNN primitives, and the reorders at the
 * edges of those runs.  5-D values (3-D convs' [N, C, D, H, W]) follow
 * the same rules in nCdhw16c and ndhwc: measured on an r3d_18-like net
 * (bench/conv3d.py), oneDNN's direct 3-D kernels on nCdhw16c run ~8x
 * faster than its im2col + GEMM one on plain ncdhw.
 *
 * DESIGN: oneDNN's convolutions run 2-3x faster on nChw16c than on NCHW
 * (jit / brgconv kernels instead of gemm over im2col; measured here), and
 * a reorder costs 10-30% of such a conv, so a chain Conv → (BN) → Relu →
 * Conv → Add → Relu → MaxPool ... should stay blocked from its first conv
 * to its last pool and convert only at the ends.  nChw16c needs C % 16 ==
 * 0 (anything else would pad every buffer); for other channel counts, a
 * pruned model's 11 or 22, NHWC is the same size as NCHW and runs brgconv
 * nearly as fast (about 25% slower than nChw16c, 2.5-3x faster than
 * NCHW).  A value's layout is decided by the fusion anchors
 * (plan_fuse_ops.c) as they create each primitive, in step order, by the
 * rules of plan_layout_rules.c: a conv in its family's layout, pooling
 * and binary ops in their source's, every output in the layout most of
 * its readers want.  The int8 and bf16 passes, which run first, leave
 * the f32 results of their NHWC convs NHWC (plan_qdq.c, plan_bf16.c).
 *
 * Those are predictions: a later anchor may still refuse (oneDNN has no
 * kernel, or only its slow reference one, for the layouts asked; the op
 * stays on its reference kernel).  So after fusion ss__plan_layout()
 * walks the steps and, wherever a step reads a value in a layout that
 * places its elements elsewhere than the one it was written in, inserts a
 * reorder into a new value (one per value and layout, shared by every
 * reader that wants it) just before the first such reader.  Reference
 * kernels read PLAIN; a oneDNN step reads what its primitive says
 * (ss_dnn_prim_layout).  Layouts that are the same bytes need none: H * W
 * == 1 (the GlobalAveragePool output before a Flatten), C == 1 for NHWC,
 * C == 16 for nChw16c and NHWC.  SS_ENGINE_NO_BLOCKED=1 keeps every value
 * PLAIN (for comparisons).
 *
 * This file is that pass, run last by ss_plan_new.
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

/* The reorder step v (in layout from) → a new value in layout l. */
static int
make_reorder(ss_plan_t *p, const ss_step_t *reader, int v,
             ss_dnn_layout_t from, ss_dnn_layout_t l, ss_step_t *out,
             int *nv, ss_err_t *err)
{
    ss_dnn_reorder_desc_t d = { 0 };
    const ss_tensor_t *t = &p->vals[v].t;
    int rc;

    memset(out, 0, sizeof(*out));
    d.ndim = t->ndim;
    memcpy(d.dims, t->dims, (size_t)t->ndim * sizeof(int64_t));
    d.src_layout = from;
    d.dst_layout = l;
    if ((rc = ss_dnn_reorder_new(&d, &out->prim, err)) < 0)
        goto done;
    if ((rc = ss__plan_add_value(p, v, p->vals[v].t.dtype, l, err)) < 0)
        goto done;
    *nv = rc;
    out->kind = SS_STEP_DNN;
    out->node = reader->node;
    out->n_in = 1;
    out->n_out = 1;
    if ((out->in = ss_malloc(sizeof(int))) == NULL
        || (out->out = ss_malloc(sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        goto done;
    }
    out->in[0] = v;
    out->out[0] = *nv;
    strcpy(out->what, l == SS_DNN_BLOCKED ? "Reorder>nChw16c"
                      : l == SS_DNN_NHWC ? "Reorder>NHWC" : "Reorder>NCHW");
    if (ss_dnn_prim_scratch_size(out->prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(out->prim);
    rc = 0;
done:
    if (rc < 0)
        ss__plan_step_clear(out);
    return rc;
}

/* A step that writes value v (with views, or a graph output: NCHW bytes
 * wanted) in another layout writes a new value instead, reordered into v
 * right after it; readers wanting the written layout read the new value
 * (conv[]).  A conv whose readers want NCHW runs in its family when its
 * source is in it already (conv_layouts, plan_fuse_ops.c). */
static int
plain_out(ss_plan_t *p, ss_step_t *st, int s, int k, int *conv,
          ss__plan_inslist_t *il, ss_err_t *err)
{
    int v = st->out[k], nv, rc;
    ss_dnn_layout_t l;
    ss_step_t ro;

    if (v < 0 || p->vals[v].alias >= 0)
        return 0;
    l = p->vals[v].layout;
    if (ss__lay_same(l, SS_DNN_PLAIN, &p->vals[v].t)
        || (!ss__plan_has_views(p, v) && !ss__plan_is_graph_out(p, v)))
        return 0;
    if ((rc = make_reorder(p, st, v, l, SS_DNN_PLAIN, &ro, &nv, err)) < 0)
        return rc;
    /* the reorder reads the new value and writes v */
    ro.in[0] = nv;
    ro.out[0] = v;
    p->vals[nv].layout = l;
    p->vals[v].layout = SS_DNN_PLAIN;
    st->out[k] = nv;
    conv[3 * v + l] = nv;
    return ss__plan_ins_step(il, s, 1, &ro, err);
}

int
ss__plan_layout(ss_plan_t *p, ss_err_t *err)
{
    int n0 = p->n_vals, rc = 0;
    /* conv[3 * v + l]: the copy of v in layout l, once made */
    int *conv = ss_malloc(((size_t)n0 + 1) * 3 * sizeof(int));
    ss__plan_inslist_t il = { 0 };

    if (conv == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the layout pass");
        goto done;
    }
    for (int v = 0; v < 3 * n0; v++)
        conv[v] = -1;
    for (int s = 0; s < p->n_steps; s++) {
        ss_step_t *st = &p->steps[s];

        for (int k = 0; k < st->n_in; k++) {
            int v = st->in[k], r;
            ss_dnn_layout_t need, have;

            if (v < 0 || (st->kind == SS_STEP_DNN && k < 32
                          && (st->raw_in >> k & 1u)))
                continue;
            need = st->kind == SS_STEP_DNN ? ss_dnn_prim_layout(st->prim, k)
                                           : SS_DNN_PLAIN;
            r = ss__plan_root(p, v);
            have = p->vals[r].layout;
            if (r != v) {
                /* a view (Reshape...) reads its root's bytes as NCHW of
                 * its own shape: fine when the root is NCHW bytes */
                if (!ss__lay_same(have, SS_DNN_PLAIN, &p->vals[r].t)) {
                    rc = ss_err_set(err, SS_EINTERNAL, "%s: a step reads "
                                    "a view of a blocked value",
                                    p->g->source);
                    goto done;
                }
                have = SS_DNN_PLAIN;
            }
            if (ss__lay_same(have, need, &p->vals[v].t))
                continue;
            if (v >= n0) {
                rc = ss_err_set(err, SS_EINTERNAL, "%s: a reorder's output "
                                "is read in another layout", p->g->source);
                goto done;
            }
            if (conv[3 * v + need] < 0) {
                ss_step_t ro;

                if ((rc = make_reorder(p, st, v, have, need, &ro,
                                       &conv[3 * v + need], err)) < 0
                    || (rc = ss__plan_ins_step(&il, s, 0, &ro, err)) < 0)
                    goto done;
            }
            st->in[k] = conv[3 * v + need];
        }
        for (int k = 0; k < st->n_out; k++)
            if ((rc = plain_out(p, st, s, k, conv, &il, err)) < 0)
                goto done;
    }
    for (int i = 0; i < p->g->n_outputs; i++) {
        int r = ss__plan_root(p, p->g->outputs[i]);

        if (!ss__lay_same(p->vals[r].layout, SS_DNN_PLAIN,
                          &p->vals[r].t)) {
            rc = ss_err_set(err, SS_EINTERNAL, "%s: output '%s' would be "
                            "written blocked", p->g->source,
                            p->g->values[p->g->outputs[i]].name);
            goto done;
        }
    }
    rc = ss__plan_ins_apply(p, &il, err);
done:
    ss__plan_ins_free(&il);
    ss_free(conv);
    return rc;
}
