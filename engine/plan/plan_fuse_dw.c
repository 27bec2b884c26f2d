/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A 1x1 conv and the depthwise 3x3 conv that alone reads its output, as
 * one oneDNN primitive (a DW post-op, dnnl.h): MobileNetV2's expansion
 * and depthwise convs.
 *
 * DESIGN: the expansion writes 6x its input's channels and the depthwise
 * conv reads them once.  Apart, the expanded tensor (96x112x112, 4.8 MB
 * per image at 224x224) leaves L2 and the depthwise conv reads it back
 * at twice its cache-warm time.  Fused, oneDNN runs the 1x1 conv a few
 * rows at a time into a buffer in cache and the depthwise conv on those
 * rows (its jit_1x1 kernel): caches flushed, one thread, 16->96 at
 * 112x112 + stride-2 dw 0.425 -> 0.370 ms (bench/README.md).
 * Blocked (nChw16c) only: oneDNN 2.6's NHWC variant of the same kernel
 * returns wrong numbers (24->144 at 56x56: max error 5.9 on outputs of
 * up to 3.9, against its own two primitives; test_dw_fusion's NHWC case
 * pins that it stays apart).  For a tensor that fits L2 twice over
 * (per thread) oneDNN declines and offers its reference chain of the two
 * kernels (ref_fused_convolution: no row fusion, a few % slower): then
 * the convs stay apart, as they do for anything but f32, a 1x1 conv of
 * stride 1 without padding, and a 3x3 depthwise conv of pads 1 and
 * stride 1 or 2 with no residual operand.
 * SS_ENGINE_NO_DW_FUSION=1 keeps them apart (for comparisons).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

static int
dw_off(void)
{
    const char *s = getenv("SS_ENGINE_NO_DW_FUSION");

    return s != NULL && s[0] != '\0' && strcmp(s, "0") != 0;
}

static int
all_eq(const int64_t *v, int n, int64_t want)
{
    for (int i = 0; i < n; i++)
        if ((v[i] ? v[i] : 1) != want)
            return 0;
    return 1;
}

/* Step st is a 3x3 depthwise conv of c channels reading v, pads 1,
 * stride 1 or 2 (*stride), constant f32 weights and bias. */
static int
is_dw(const ss_plan_t *p, const ss_step_t *st, int v, int64_t c,
      int64_t *stride)
{
    const ss_tensor_t *w;
    int64_t s[2], dil[2], pads[4], ks[2];

    if (!ss__plan_is_op(st, "Conv") || st->n_in < 2 || st->in[0] != v
        || !ss__fz_const_of(p, st->in[1], SS_DTYPE_F32)
        || !ss__fz_notset(st->node) || st->n_out < 1 || st->out[0] < 0
        || ss__attr_int(st->node, "group", 1) != c)
        return 0;
    if (st->n_in > 2 && st->in[2] >= 0
        && !ss__fz_const_of(p, st->in[2], SS_DTYPE_F32))
        return 0;
    w = ss__plan_tensor(p, st->in[1]);
    if (w->ndim != 4 || w->dims[0] != c || w->dims[1] != 1 || w->dims[2] != 3
        || w->dims[3] != 3)
        return 0;
    if (!ss__fz_attr_n(st->node, "strides", 1, s, 2)
        || !ss__fz_attr_n(st->node, "dilations", 1, dil, 2)
        || !ss__fz_attr_n(st->node, "pads", 0, pads, 4)
        || !ss__fz_attr_n(st->node, "kernel_shape", 0, ks, 2))
        return 0;
    if (s[0] != s[1] || (s[0] != 1 && s[0] != 2) || !all_eq(dil, 2, 1)
        || !all_eq(pads, 4, 1) || (ks[0] && ks[0] != 3)
        || (ks[1] && ks[1] != 3))
        return 0;
    *stride = s[0];
    return 1;
}

int
ss__fuse_conv_dw(ss__fz_t *fz, const ss__chain_t *c0,
                 const ss_dnn_conv_desc_t *d0, int src, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    ss__chain_t c = *c0;
    ss_dnn_conv_desc_t d = *d0;
    ss_dnn_prim_t *prim = NULL;
    const ss_step_t *ds;
    const ss_tensor_t *x, *e, *y;
    ss_dnn_layout_t lay;
    float *zb = NULL;
    int64_t dd[SS_DNN_MAX_DIMS], stride;
    int dw, after, rc = 0;

    if (dw_off() || d.dtype != 0 || (d.group && d.group != 1) || d.kh != 1
        || d.kw != 1 || !all_eq(d.stride, 2, 1) || d.pad_begin[0]
        || d.pad_begin[1] || d.pad_end[0] || d.pad_end[1] || c.n_bin > 0
        || c.post.n + 2 > SS_DNN_MAX_POST || c.n_steps + 1 >= SS_CHAIN_MAX
        || (dw = ss__fz_single(fz, c.out)) < 0)
        return 0;
    ds = &p->steps[dw];
    if (!is_dw(p, ds, c.out, d.oc, &stride))
        return 0;
    x = ss__plan_tensor(p, src);
    e = ss__plan_tensor(p, c.out);
    y = ss__plan_tensor(p, ds->out[0]);
    lay = ss__lay_conv_family(x, e);
    /* blocked (see above), the source as it is (no reorder for the fused
     * step), and a BN after the depthwise conv folds into it when that
     * runs alone */
    if (y->ndim != 4 || lay != SS_DNN_BLOCKED
        || !ss__lay_same(ss__lay_of(p, src), lay, x)
        || ((after = ss__fz_single(fz, ds->out[0])) >= 0
            && ss__plan_is_op(&p->steps[after], "BatchNormalization")))
        return 0;
    c.steps[c.n_steps++] = dw;
    c.out = ds->out[0];
    d.dw_w = ss__plan_tensor(p, ds->in[1])->data;
    d.dw_bias = ds->n_in > 2 && ds->in[2] >= 0
                ? ss__plan_tensor(p, ds->in[2])->data : NULL;
    d.dw_stride = stride;
    if (d.dw_bias == NULL) {
        if ((zb = ss_calloc((size_t)d.oc, sizeof(float))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a bias");
            goto done;
        }
        d.dw_bias = zb;
    }
    c.post.op[c.post.n++] = (ss_dnn_postop_t){ .kind = SS_DNN_PO_DW };
    memcpy(c.dst_dims, y->dims, 4 * sizeof(int64_t));
    snprintf(c.what + strlen(c.what), sizeof(c.what) - strlen(c.what),
             "+DwConv");
    ss__fz_chain(fz, &c);
    if (c.n_bin > 0)        /* the block's own tensors only: no residual */
        goto done;
    d.post = c.post;
    d.src_layout = d.dst_layout = lay;
    if ((rc = ss_dnn_conv_new(&d, &prim, err)) < 0) {
        if (rc != SS_ENOMEM) {
            ss_err_clear(err);
            rc = 0;
        }
        goto done;
    }
    ss_dnn_prim_dst_dims(prim, dd);
    if (strncmp(ss_dnn_prim_impl(prim), "jit_1x1", 7) != 0
        || memcmp(dd, y->dims, 4 * sizeof(int64_t)) != 0)
        goto done;
    p->vals[c.out].layout = ss_dnn_prim_layout(prim, -1);
    rc = ss__fz_emit(fz, &c, prim, &src, 1, err);
    prim = NULL;
    if (rc == 0)
        rc = 1;
done:
    ss_dnn_prim_free(prim);
    ss_free(zb);
    return rc;
}
