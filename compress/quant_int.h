/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The quantization plan's state, shared by quant.c (the plan, the QDQ
 * graph, fallback) and quant_calib.c (calibration passes).  Private to
 * those two; qat.c sees only the ss__qplan_* calls of internal.h.
 *
 * THREADS: owned by the compress thread's job, never shared.
 */
#ifndef SS_COMPRESS_QUANT_INT_H
#define SS_COMPRESS_QUANT_INT_H

#include "compress/internal.h"

#define HIST_BINS 2048

typedef struct qact {
    int value;          /* activation value id in the f32 graph */
    float lo, hi;       /* calibrated range */
    float absmax;       /* clip point */
    double *hist;
    double count;
    double total;       /* values seen by the min/max pass */
    ss__mse_t *mse;     /* calibration "mse" (calib_mse.c) */
} qact_t;

typedef struct qlayer {
    ss__layer_t l;
    int act;            /* index into the qact array */
    char *label;
    double err;         /* own damage; < 0 until measured */
    bool on;
    float *wscale;      /* per output channel, learned by qat (LSQ);
                         * owned; NULL: max|w| / 127 of the weight */
} qlayer_t;

typedef struct ss__qplan {
    ss__cx_t *cx;
    const ss_method_t *m;
    const ss_graph_t *g;        /* the f32 graph */
    int n_layers;
    qlayer_t *layers;
    int n_acts;
    qact_t *acts;
} qstate_t;

/* Calibrated ranges (lo, hi, absmax) of every activation in s->acts, by
 * the method's calibration (minmax, percentile or mse). */
int ss__quant_calibrate(qstate_t *s, ss_err_t *err);

#endif
