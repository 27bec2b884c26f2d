/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_DNNL_Q_H
#define SS_ENGINE_DNNL_Q_H

/*
 * Low-precision primitives (int8 and bf16), next to engine/dnnl/dnnl.h, whose
 * conventions (borrowed descriptors, run-time in[]/out, post-ops, errors,
 * THREADS) they follow.  The difference: source, weights and destination
 * may each have their own type, and an int8 primitive has output scales
 * fixed at creation (oneDNN's fast int8 kernels need them constant).
 *
 * int8 (oneDNN 2.x semantics):
 *     dst = post_ops(scales[n] * (src x W + bias)) converted to dst_dtype
 *           (round half to even, saturated),
 * src u8 or s8 (u8 is what VNNI multiplies natively), W s8, bias f32 in
 * ACCUMULATOR units (the caller divides by its scales and folds any
 * activation zero point in), scales per tensor (1) or per output
 * channel (n).  BINARY post-op tensors are f32.
 *
 * bf16: src bf16, W given as f32 and converted once at creation, f32
 * accumulation, dst f32 or bf16; no scales.
 *
 * THREADS: as engine/dnnl/dnnl.h.
 */

#include "engine/dnnl/dnnl.h"

typedef struct ss_dnn_qlinear_desc {
    ss_dtype_t src_dtype;       /* U8, I8 or BF16 */
    ss_dtype_t dst_dtype;       /* F32, BF16, U8 or I8 */
    int64_t m, k, n;
    ss_dtype_t w_dtype;         /* I8 (int8) or F32 (bf16 compute) */
    const void *w;              /* borrowed; layout by w_nk */
    int w_nk;                   /* 1: [N,K]; 0: [K,N] */
    const float *bias;          /* [N] or NULL, borrowed */
    int n_scales;               /* 0 (none), 1 or n */
    const float *scales;
    ss_dnn_postops_t post;
} ss_dnn_qlinear_desc_t;

typedef struct ss_dnn_qconv_desc {
    ss_dtype_t src_dtype, dst_dtype, w_dtype;
    ss_dnn_conv_desc_t g;       /* the geometry: nsp, n, ic, ih, iw, oc,
                                 * kh, kw, depth, group, stride, dilation,
                                 * pads (1-D, 2-D or 3-D; nothing else of
                                 * it read) */
    const void *w;              /* [OC, IC/group, (KD,) KH, KW] */
    const float *bias;
    int n_scales;
    const float *scales;
    int nhwc;                   /* 1: src and dst are channels-last in
                                 * memory (nwc, nhwc, ndhwc; the dims stay
                                 * N,C,..), and so are BINARY post-op
                                 * tensors of the full dst shape */
    int blocked;                /* bf16, 2-D: dst nChw16c (OC % 16 == 0)
                                 * and src nChw16c, or plain when IC <
                                 * 16: oneDNN's first-layer kernel
                                 * (nhwc ignored) */
    int32_t src_zp;             /* oneDNN's source zero point: the conv
                                 * sums (src - src_zp) w, and padded taps
                                 * count as real zeros (0 = none) */
    ss_dnn_postops_t post;
} ss_dnn_qconv_desc_t;

/* A dense tensor converted between types (f32 <-> bf16) and/or between
 * NCHW and NHWC. */
typedef struct ss_dnn_convert_desc {
    ss_dtype_t src_dtype, dst_dtype;
    int ndim;
    int64_t dims[SS_DNN_MAX_DIMS];
    int src_nhwc, dst_nhwc;     /* 3-5-D: that side is channels-last in
                                 * memory (nwc, nhwc, ndhwc) */
    ss_dnn_layout_t src_layout, dst_layout; /* when not PLAIN: that
                                 * side's layout, instead of the flag */
    /* Quantize/dequantize on the way (per tensor, oneDNN reorder
     * semantics): dst = scale * (src - src_zp) + dst_zp, rounded half to
     * even and saturated for an integer dst.  scale 0 means 1. */
    float scale;
    int32_t src_zp, dst_zp;
} ss_dnn_convert_desc_t;

int ss_dnn_qlinear_new(const ss_dnn_qlinear_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err);
int ss_dnn_qconv_new(const ss_dnn_qconv_desc_t *d, ss_dnn_prim_t **out,
                     ss_err_t *err);
int ss_dnn_convert_new(const ss_dnn_convert_desc_t *d, ss_dnn_prim_t **out,
                       ss_err_t *err);

#endif
