/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Winograd 3x3 convolutions: oneDNN's F(2x2,3x3) and F(4x4,3x3) kernels
 * (jit_fp32_wino_2x3, jit_wino_4x3) for the stride-1 3x3 convs of f32
 * nets in nChw16c.
 *
 * DESIGN: measured here (AMD EPYC, AVX-512, oneDNN 2.6; resnet18 at
 * 224x224, one thread) the direct jit kernels take 1.1-2.0x longer than
 * Winograd on every 3x3 stride-1 layer of 64-512 channels, batch 1 and
 * 8, and the net runs 1.3x faster with them (bench/README.md).  oneDNN's
 * own choice (convolution_auto) takes Winograd only from batch 4, so the
 * algorithm is asked for explicitly, and a conv oneDNN has no Winograd
 * kernel for keeps the direct one.  The transformed weights are larger
 * (16/9 or 36/9 of the 3x3 kernel); the outputs differ from direct
 * convolution's by rounding (4e-7 relative on resnet18's logits).
 *
 * Transformed weights above WINO_MAX_BYTES keep the direct kernel: F(4x4,
 * 3x3)'s are 4x the 3x3 kernel's, 37.7 MB for a 512x512 conv, where it
 * ran only 1.3x faster than direct at batch 8 (the 64-256 channel convs:
 * 1.9-2x); a plan per batch size may hold its own copy (the packed layout
 * differs between some batch sizes), and a daemon holds many plans.
 *
 * The Winograd kernels take eltwise and sum post-ops but no binary one, so
 * a residual Add (a BINARY ADD of a tensor of dst's shape, in[1]) becomes
 * a SUM: ss_dnn_run copies in[1] into dst before the conv (one pass over
 * dst; the binary post-op read it too).  SS_ENGINE_NO_WINOGRAD=1 keeps
 * every conv direct (for comparisons).
 *
 * THREADS: [any]; touches only the object being built.
 */

#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/internal.h"

#define WINO_MAX_BYTES ((size_t)32 << 20)

static int
wino_off(void)
{
    const char *s = getenv("SS_ENGINE_NO_WINOGRAD");

    return s != NULL && s[0] != '\0' && strcmp(s, "0") != 0;
}

/* The post-ops as the Winograd kernels take them: eltwise, and at most one
 * full-shape binary ADD turned into a SUM (*sum = 1).  0 if not. */
static int
wino_post(const ss_dnn_postops_t *in, const int64_t dd[4],
          ss_dnn_postops_t *out, int *sum)
{
    *out = *in;
    *sum = 0;
    for (int i = 0; i < in->n; i++) {
        const ss_dnn_postop_t *o = &in->op[i];

        if (o->kind == SS_DNN_PO_ELTWISE)
            continue;
        if (o->kind != SS_DNN_PO_BINARY || o->alg != SS_DNN_ADD || *sum
            || o->ndim != 4
            || memcmp(o->dims, dd, 4 * sizeof(int64_t)) != 0)
            return 0;
        memset(&out->op[i], 0, sizeof(out->op[i]));
        out->op[i].kind = SS_DNN_PO_SUM;
        out->op[i].alpha = 1.f;
        *sum = 1;
    }
    return 1;
}

int
ss__dnn_conv_wino(ss__dnn_build_t *b, const ss_dnn_conv_desc_t *d,
                  const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
                  const dnnl_memory_desc_t *bias,
                  const dnnl_memory_desc_t *dst,
                  const ss__dnn_window_t *win,
                  const int64_t dd[4], ss_dnn_postops_t *po, int *sum)
{
    dnnl_convolution_desc_t od;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_engine_t eng;
    ss_dnn_postops_t wpo;
    ss_err_t e;
    int s;

    *sum = 0;
    if (wino_off() || (d->dtype != 0 && d->dtype != SS_DTYPE_F32)
        || (d->group != 0 && d->group != 1) || d->kh != 3 || d->kw != 3
        || win->strides[0] != 1 || win->strides[1] != 1
        || win->dil[0] != 0 || win->dil[1] != 0
        || d->src_layout != SS_DNN_BLOCKED || d->dst_layout != SS_DNN_BLOCKED
        || !wino_post(&d->post, dd, &wpo, &s))
        return 0;
    ss_err_clear(&e);
    if (dnnl_dilated_convolution_forward_desc_init(
            &od, dnnl_forward_inference, dnnl_convolution_winograd, src, w,
            d->bias ? bias : NULL, dst, win->strides, win->dil, win->pl,
            win->pr) != dnnl_success
        || ss__dnn_attr(&wpo, 4, dd, dnnl_f32, d->dst_layout, &attr, &e,
                        b->what) < 0
        || ss__dnn_engine(&eng, &e) < 0
        || dnnl_primitive_desc_create(&pd, &od, attr, eng, NULL)
           != dnnl_success) {
        /* no Winograd kernel for this shape or ISA: the direct one */
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        ss_err_clear(&e);
        return 0;
    }
    if (dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(
            pd, dnnl_query_weights_md, 0)) > WINO_MAX_BYTES) {
        dnnl_primitive_desc_destroy(pd);
        dnnl_primitive_attr_destroy(attr);
        return 0;
    }
    dnnl_primitive_attr_destroy(b->attr);
    b->attr = attr;
    b->pd = pd;
    *po = wpo;
    *sum = s;
    return 1;
}
