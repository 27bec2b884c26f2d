/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the trainer's kernel files share (internal to compress/train):
 *
 *   kern.c       plumbing (reference, oneDNN, copy, zero), broadcasting,
 *                reduce / expand, pooling, Transpose, Gather
 *   kern_elt.c   unary and binary, forward and backward
 *   kern_norm.c  Softmax / LogSoftmax, LayerNorm, BatchNorm
 *   (nn_dnn.c, the oneDNN kernels, reads its arguments as these do)
 *
 * THREADS: [worker]; OpenMP threads inside a call.
 */

#ifndef SS_COMPRESS_TRAIN_KERN_H
#define SS_COMPRESS_TRAIN_KERN_H

#include "compress/train/internal.h"

#define PAR_MIN 262144  /* elements below which a loop stays serial: an
                         * OpenMP region costs more than a short loop, and
                         * far more on a loaded machine */

static inline void *
tv_data(ss__tr_t *t, int v)
{
    return v >= 0 ? t->tv[v].data : NULL;
}

/* A kernel's arguments, inside a kernel of the ss__kern_fn signature. */
#define IN(k) ((const float *)tv_data(t, s->in[k]))
#define OUT(k) ((float *)tv_data(t, s->out[k]))
#define ACC(k) ((s->acc >> (k)) & 1u)

#endif
