/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_LAYOUT_H
#define SS_ENGINE_PLAN_LAYOUT_H

/*
 * Activation layouts (plan_layout.c): what the fusion anchors ask when
 * they create a primitive, and the pass that makes every read agree with
 * the write (ss__plan_layout, in plan_int.h).
 *
 * THREADS: used inside ss_plan_new only.
 */

#include "engine/plan/plan_fuse_int.h"

/* The layout v's root is stored in (its producer's choice). */
ss_dnn_layout_t ss__lay_of(const ss_plan_t *p, int v);

/* Whether layouts a and b of t are the same bytes (they are when H * W
 * is 1, for NHWC and NCHW when C is 1, for nChw16c and NHWC when C is
 * 16): then no reorder is needed between them. */
int ss__lay_same(ss_dnn_layout_t a, ss_dnn_layout_t b, const ss_tensor_t *t);

/* The fast layout for a 4-D tensor t: BLOCKED when C % 16 == 0, else
 * NHWC. */
ss_dnn_layout_t ss__lay_natural(const ss_tensor_t *t);

/* The layout a conv from x to y runs in: BLOCKED when both channel counts
 * are multiples of 16, NHWC otherwise. */
ss_dnn_layout_t ss__lay_conv_family(const ss_tensor_t *x,
                                    const ss_tensor_t *y);

/* The layout an anchor should write v in: PLAIN for a graph output, a
 * value with views (a Flatten reads NCHW bytes) or one no reader wants
 * otherwise; else the BLOCKED or NHWC layout most of its readers want
 * (convs their family's, pools the natural one; a same-shape binary op
 * takes any).  Always PLAIN with SS_ENGINE_NO_BLOCKED=1. */
ss_dnn_layout_t ss__lay_dst(const ss__fz_t *fz, int v);

#endif
