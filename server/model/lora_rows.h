/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The LoRA update's loops (lora_rows.c): y += (x A^T) (s B^T) on a run
 * of rows, for server/model/adapter.c.
 *
 * THREADS: any thread; no state.
 */
#ifndef SS_SERVER_MODEL_LORA_ROWS_H
#define SS_SERVER_MODEL_LORA_ROWS_H

#include <stdint.h>

/* B^T is packed in panels of this many outputs. */
#define SS_LORA_PANEL 16

/* One adapter's weights at one site: A^T [in, r]; s B^T packed as
 * [ceil(out / 16)][r][16], zero past out (so the shrink reads A^T's rows
 * in order and the expand each panel, r x 16 contiguous floats, in
 * order: one sequential stream each); their bytes, for prefetching. */
typedef struct ss_lora_w {
    float *at;
    float *bp;
    int64_t at_bytes, bp_bytes;
} ss_lora_w_t;

/* y [n, out] += (x [n, in] A^T) (s B^T), rows contiguous; r <= 1024
 * (SS_LORA_MAX_RANK).  next: the weights the caller uses next (another
 * run's), prefetched into L2 meanwhile; w itself when none. */
void ss_lora_rows(const float *x, float *y, int64_t n, int64_t in,
                  int64_t out, int64_t r, const ss_lora_w_t *w,
                  const ss_lora_w_t *next);

/* dst [n] = f(y [n]) for the activation kind (engine.h: ss_tap_act_t):
 * 1 when done, 0 for a kind not done here (the plan's step then runs). */
int ss_lora_act(int kind, float alpha, const float *y, float *dst,
                int64_t n);

#endif
