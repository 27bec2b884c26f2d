/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sliding-window geometry shared by Conv and the pooling ops: reads
 * strides, dilations, pads and auto_pad, and computes output sizes the
 * way ONNX specifies them (and, for ceil_mode, the way PyTorch does: a
 * window that would start in the end padding is dropped).
 *
 * Every value is bounded before it is multiplied, so hostile attributes
 * fail cleanly.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <string.h>

#define LIM SS_OPS_MAX_NUMEL

/* Reads attribute name, want ints each in [lo, LIM], into v (all dflt
 * when absent). */
static int
read_ints(const ss_node_t *n, const char *name, int want, int64_t dflt,
          int64_t lo, int64_t *v, ss_err_t *err)
{
    const int64_t *a;
    int cnt = ss__attr_ints(n, name, &a);

    for (int i = 0; i < want; i++)
        v[i] = dflt;
    if (cnt < 0)
        return 0;
    if (cnt != want)
        return ss__ops_fail(err, n, "%s has %d values, expected %d", name,
                            cnt, want);
    for (int i = 0; i < want; i++) {
        if (a[i] < lo || a[i] > LIM)
            return ss__ops_fail(err, n, "%s[%d] = %lld is out of range",
                                name, i, (long long)a[i]);
        v[i] = a[i];
    }
    return 0;
}

int
ss__ops_window(const ss_node_t *n, int nsp, const int64_t *in_sp,
               const int64_t *kernel, bool ceil_mode, ss_window_t *w,
               ss_err_t *err)
{
    const char *ap = ss__attr_string(n, "auto_pad", "NOTSET");
    int64_t s[3], d[3], p[6];
    int rc;

    if (nsp < 1 || nsp > 3)
        return ss__ops_failc(err, SS_EUNSUPP, n, "only 1-D to 3-D windows "
                             "are supported, not %d-D", nsp);
    if ((rc = read_ints(n, "strides", nsp, 1, 1, s, err)) < 0 ||
        (rc = read_ints(n, "dilations", nsp, 1, 1, d, err)) < 0 ||
        (rc = read_ints(n, "pads", 2 * nsp, 0, 0, p, err)) < 0)
        return rc;
    for (int i = 0; i < 3; i++) {
        w->in[i] = w->k[i] = w->s[i] = w->d[i] = w->out[i] = 1;
        w->pb[i] = w->pe[i] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        int j = ss__ops_window_axis(nsp, i);
        int64_t eff, span;

        w->in[j] = in_sp[i];
        w->k[j] = kernel[i];
        w->s[j] = s[i];
        w->d[j] = d[i];
        if (kernel[i] < 1 || kernel[i] > LIM)
            return ss__ops_fail(err, n, "kernel size %lld is out of range",
                                (long long)kernel[i]);
        /* Both factors are <= 2^40, so the product fits in int64. */
        eff = (kernel[i] - 1) * d[i] + 1;
        if (strcmp(ap, "NOTSET") == 0) {
            w->pb[j] = p[i];
            w->pe[j] = p[i + nsp];
        } else if (strcmp(ap, "VALID") == 0) {
            w->pb[j] = w->pe[j] = 0;
        } else if (strcmp(ap, "SAME_UPPER") == 0 ||
                   strcmp(ap, "SAME_LOWER") == 0) {
            int64_t o = (in_sp[i] + s[i] - 1) / s[i];
            int64_t total = (o - 1) * s[i] + eff - in_sp[i];

            if (total < 0)
                total = 0;
            if (ap[5] == 'U') {
                w->pb[j] = total / 2;
                w->pe[j] = total - total / 2;
            } else {
                w->pe[j] = total / 2;
                w->pb[j] = total - total / 2;
            }
        } else {
            return ss__ops_fail(err, n, "auto_pad '%s' is not NOTSET, "
                                "SAME_UPPER, SAME_LOWER or VALID", ap);
        }
        span = in_sp[i] + w->pb[j] + w->pe[j] - eff;
        if (span < 0)
            return ss__ops_fail(err, n, "kernel extent %lld is larger than "
                                "the padded input %lld", (long long)eff,
                                (long long)(in_sp[i] + w->pb[j] + w->pe[j]));
        if (ceil_mode) {
            w->out[j] = (span + s[i] - 1) / s[i] + 1;
            if ((w->out[j] - 1) * s[i] >= in_sp[i] + w->pb[j])
                w->out[j]--;
        } else {
            w->out[j] = span / s[i] + 1;
        }
    }
    return 0;
}
