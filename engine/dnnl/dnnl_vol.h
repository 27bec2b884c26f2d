/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_DNNL_VOL_H
#define SS_ENGINE_DNNL_VOL_H

/*
 * Volumetric (3-D) convolution and pooling on dense [N, C, D, H, W] f32
 * tensors, next to engine/dnnl/dnnl.h, whose conventions (borrowed
 * descriptors, run-time in[]/out, post-ops, errors, THREADS) they follow.
 * Spatial arrays are in ONNX order: depth, height, width; a 0 stride or
 * dilation means 1 (ONNX's convention, dilation 1 = dense).  Source and
 * destination stay plain (the plan's layout pass knows 4-D layouts only);
 * the weights are packed in whatever layout the kernel prefers.
 */

#include "engine/dnnl/dnnl.h"

typedef struct ss_dnn_vol_window {
    int64_t k[3], stride[3], dilation[3], pad_begin[3], pad_end[3];
} ss_dnn_vol_window_t;

typedef struct ss_dnn_conv3d_desc {
    int64_t n, ic, in[3];       /* source [N, IC, D, H, W] */
    int64_t oc, group;          /* group 0 = 1 */
    ss_dnn_vol_window_t win;    /* k: the weights' [KD, KH, KW] */
    const float *w;             /* [OC, IC/group, KD, KH, KW], borrowed */
    const float *bias;          /* [OC] or NULL, borrowed */
    ss_dnn_postops_t post;
} ss_dnn_conv3d_desc_t;

typedef struct ss_dnn_pool3d_desc {
    ss_dnn_pool_alg_t alg;
    int64_t n, c, in[3];
    ss_dnn_vol_window_t win;    /* ceil_mode: the caller adds to pad_end */
} ss_dnn_pool3d_desc_t;

int ss_dnn_conv3d_new(const ss_dnn_conv3d_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);
int ss_dnn_pool3d_new(const ss_dnn_pool3d_desc_t *d, ss_dnn_prim_t **out,
                      ss_err_t *err);

#endif
