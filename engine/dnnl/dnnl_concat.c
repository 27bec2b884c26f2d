/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer: Concat along channels (ss_dnn_concat_new).
 * A U-Net's skip connections join the upsampled decoder features and the
 * encoder's along C; with both in the conv chain's layout (nChw16c at
 * channel offsets of 16, or NHWC) oneDNN's simple concat copies each
 * input into its slice of dst in one pass, so the chain stays blocked
 * through the join instead of being reordered to NCHW for the reference
 * kernel and back.  Inputs in another layout than dst take oneDNN's
 * reorder-based concat (a reorder per input into its part of dst).
 *
 * THREADS: [any]; touches only the object it builds.
 */

#include "config.h"

#include <string.h>

#include "engine/dnnl/internal.h"

int
ss_dnn_concat_new(const ss_dnn_concat_desc_t *d, ss_dnn_prim_t **out,
                  ss_err_t *err)
{
    dnnl_memory_desc_t src[SS_DNN_CONCAT_MAX], dst;
    int in[SS_DNN_CONCAT_MAX];
    dnnl_data_type_t dt = ss__dnn_dtype(d->dtype);
    dnnl_engine_t eng;
    ss_dnn_postops_t none = { 0 };
    int64_t dd[5];
    ss__dnn_build_t b;
    int rc;

    if ((rc = ss__dnn_build_start(&b, "concat", err)) < 0)
        goto done;
    b.p->layouts = 1;
    if ((dt != dnnl_f32 && dt != dnnl_bf16) || d->ndim < 3 || d->ndim > 5
        || d->n < 1 || d->n > SS_DNN_CONCAT_MAX) {
        rc = ss_err_set(err, SS_EUNSUPP, "oneDNN concat: dtype %d, %d dims, "
                        "%d inputs", (int)d->dtype, d->ndim, d->n);
        goto done;
    }
    memcpy(dd, d->dims[0], sizeof(dd));
    dd[1] = 0;
    for (int i = 0; i < d->n; i++) {
        for (int k = 0; k < d->ndim; k++)
            if (k != 1 && d->dims[i][k] != dd[k]) {
                rc = ss_err_set(err, SS_EINVAL, "oneDNN concat: input %d's "
                                "dim %d is %lld, input 0's %lld", i, k,
                                (long long)d->dims[i][k], (long long)dd[k]);
                goto done;
            }
        dd[1] += d->dims[i][1];
        in[i] = DNNL_ARG_MULTIPLE_SRC + i;
        if ((rc = ss__dnn_md_layout(&src[i], d->ndim, d->dims[i], dt,
                                    d->src_layout[i], err, b.what)) < 0)
            goto done;
    }
    ss__dnn_set_dst(b.p, d->ndim, dd);
    if ((rc = ss__dnn_md_layout(&dst, d->ndim, dd, dt, d->dst_layout, err,
                                b.what)) < 0 ||
        (rc = ss__dnn_engine(&eng, err)) < 0 ||
        (rc = ss__dnn_check(dnnl_concat_primitive_desc_create(
                                &b.pd, &dst, d->n, 1, src, NULL, eng),
                            err, "dnnl_concat_primitive_desc_create",
                            b.what)) < 0)
        goto done;
    rc = ss__dnn_build_op(&b, NULL, in, d->n, NULL, 0, DNNL_ARG_DST, &none,
                          err);
done:
    return ss__dnn_build_end(&b, rc, out);
}
