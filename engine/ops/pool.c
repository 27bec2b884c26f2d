/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pooling on float32, 1-D to 3-D: MaxPool (with the optional Indices
 * output, row-major or, storage_order 1, column-major within each plane),
 * AveragePool (count_include_pad, ceil_mode), GlobalAveragePool and
 * GlobalMaxPool.  MaxPool also takes int8, uint8 and float16 (version
 * 12's types; each converts to float and back exactly) through a float
 * copy of its input.
 *
 * AveragePool with count_include_pad divides by the window clipped to
 * the padded input (a ceil_mode window that hangs past the end padding
 * does not count the overhang), as PyTorch and ONNX Runtime do.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>

#include "common/alloc.h"

/* The types MaxPool takes besides float32: exact in float. */
static bool
max_type(ss_dtype_t t)
{
    return t == SS_DTYPE_I8 || t == SS_DTYPE_U8 || t == SS_DTYPE_F16;
}

static int
pool_shape(const ss_node_t *n, const ss_tensor_t *const *in, bool is_max,
           ss_window_t *w, int64_t *dims, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    const int64_t *ks;
    int nk, nsp = x->ndim - 2, rc;
    int64_t ceil_mode = ss__attr_int(n, "ceil_mode", 0);

    if (x->dtype != SS_DTYPE_F32 && !(is_max && max_type(x->dtype)))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s is not supported "
                             "(float32%s)", ss__ops_dtype_name(x->dtype),
                             is_max ? ", float16, int8, uint8" : "");
    if (x->ndim < 3 || x->ndim > 5)
        return ss__ops_failc(err, x->ndim < 3 ? SS_EINVAL : SS_EUNSUPP, n,
                             "X must be [N, C, W], [N, C, H, W] or [N, C, D, "
                             "H, W], not rank %d", x->ndim);
    nk = ss__attr_ints(n, "kernel_shape", &ks);
    if (nk < 0)
        return ss__ops_fail(err, n, "kernel_shape is required");
    if (nk != nsp)
        return ss__ops_fail(err, n, "kernel_shape has %d values, expected "
                            "%d", nk, nsp);
    if ((rc = ss__ops_window(n, nsp, x->dims + 2, ks, ceil_mode != 0, w,
                             err)) < 0)
        return rc;
    ss__ops_window_dims(w, x, dims);
    return 0;
}

static int
infer_maxpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[5];
    ss_window_t w;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = pool_shape(n, in, true, &w, dims, err)) < 0 ||
        (rc = ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, dims,
                              err)) < 0)
        return rc;
    if (n->n_outputs > 1 && n->outputs[1] >= 0)
        rc = ss__ops_set_out(n, &out[1], SS_DTYPE_I64, in[0]->ndim, dims,
                             err);
    return rc;
}

static int
infer_avgpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[5];
    ss_window_t w;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = pool_shape(n, in, false, &w, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim, dims, err);
}

/* The taps along axis a of a window starting at i0, clipped to the padded
 * extent (count_include_pad; a ceil_mode window's overhang past the end
 * padding does not count). */
static int64_t
clipped(const ss_window_t *w, int a, int64_t i0)
{
    int64_t e = i0 + (w->k[a] - 1) * w->d[a] + 1, h = w->in[a] + w->pe[a];

    return ((e < h ? e : h) - i0 + w->d[a] - 1) / w->d[a];
}

/* The pooling of float32 x into y (and the Indices ind, or NULL). */
static void
pool_f32(const ss_node_t *n, const ss_window_t *wp, int64_t planes,
         const float *x, float *y, int64_t *ind, bool is_max)
{
    bool incl = ss__attr_int(n, "count_include_pad", 0) != 0;
    bool colmaj = ss__attr_int(n, "storage_order", 0) != 0;
    ss_window_t w = *wp;
    int64_t hw;

    hw = w.in[0] * w.in[1];
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * w.in[2] * hw;

        for (int64_t oz = 0; oz < w.out[2]; oz++)
        for (int64_t oy = 0; oy < w.out[0]; oy++) {
            for (int64_t ox = 0; ox < w.out[1]; ox++) {
                int64_t z0 = oz * w.s[2] - w.pb[2];
                int64_t y0 = oy * w.s[0] - w.pb[0];
                int64_t x0 = ox * w.s[1] - w.pb[1];
                float best = -INFINITY;
                int64_t arg = -1, cnt = 0;
                double sum = 0.0;

                for (int64_t kz = 0; kz < w.k[2]; kz++) {
                    int64_t iz = z0 + kz * w.d[2];

                    if (iz < 0 || iz >= w.in[2])
                        continue;
                    for (int64_t ky = 0; ky < w.k[0]; ky++) {
                        int64_t iy = y0 + ky * w.d[0];

                        if (iy < 0 || iy >= w.in[0])
                            continue;
                        for (int64_t kx = 0; kx < w.k[1]; kx++) {
                            int64_t ix = x0 + kx * w.d[1];
                            int64_t at = iz * hw + iy * w.in[1] + ix;
                            int64_t cm = (ix * w.in[0] + iy) * w.in[2] + iz;
                            float v;

                            if (ix < 0 || ix >= w.in[1])
                                continue;
                            v = xp[at];
                            if (arg < 0 || v > best || v != v) {
                                if (best == best) {
                                    best = v;
                                    arg = colmaj ? cm : at;
                                }
                            }
                            sum += v;
                            cnt++;
                        }
                    }
                }
                if (is_max) {
                    *y++ = best;
                    if (ind)
                        *ind++ = p * w.in[2] * hw + (arg < 0 ? 0 : arg);
                    continue;
                }
                if (incl)
                    cnt = clipped(&w, 0, y0) * clipped(&w, 1, x0)
                          * clipped(&w, 2, z0);
                *y++ = cnt > 0 ? (float)(sum / (double)cnt) : 0.0f;
            }
        }
    }
}

static int
run_pool(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
         bool is_max, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    int64_t *ind = NULL, dims[5], planes, nx, ny;
    float *xf = NULL, *yf = NULL;
    ss_window_t w;
    int rc;

    if ((rc = pool_shape(n, in, is_max, &w, dims, err)) < 0)
        return rc;
    if (is_max && ss__ops_want_output(n, out, 1))
        ind = out[1].data;
    planes = x->dims[0] * x->dims[1];
    if (x->dtype == SS_DTYPE_F32) {
        pool_f32(n, &w, planes, x->data, out[0].data, ind, is_max);
        return 0;
    }
    nx = ss__ops_numel(x);
    ny = ss__ops_numel(&out[0]);
    xf = ss_malloc(sizeof(float) * (size_t)(nx + 1));
    yf = ss_malloc(sizeof(float) * (size_t)(ny + 1));
    if (xf == NULL || yf == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to pool %s",
                        ss__ops_dtype_name(x->dtype));
        goto done;
    }
    for (int64_t i = 0; i < nx; i++)
        xf[i] = (float)ss__dyn_get(x->data, x->dtype, i);
    pool_f32(n, &w, planes, xf, yf, ind, is_max);
    for (int64_t i = 0; i < ny; i++)
        ss__dyn_set(out[0].data, out[0].dtype, i, yf[i]);
done:
    ss_free(xf);
    ss_free(yf);
    return rc;
}

static int
run_maxpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    return run_pool(n, in, out, true, err);
}

static int
run_avgpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    return run_pool(n, in, out, false, err);
}

/* ---- global pooling ------------------------------------------------------ */

static int
infer_global(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_F32)
        return ss__ops_failc(err, SS_EUNSUPP, n, "only float32 is "
                             "supported, not %s",
                             ss__ops_dtype_name(in[0]->dtype));
    if (in[0]->ndim < 3)
        return ss__ops_fail(err, n, "X must have rank >= 3, not %d",
                            in[0]->ndim);
    for (int d = 0; d < in[0]->ndim; d++)
        dims[d] = d < 2 ? in[0]->dims[d] : 1;
    return ss__ops_set_out(n, &out[0], SS_DTYPE_F32, in[0]->ndim, dims, err);
}

static void
run_global(const ss_tensor_t *const *in, ss_tensor_t *out, bool is_max)
{
    int64_t planes = in[0]->dims[0] * in[0]->dims[1];
    int64_t sp = ss__ops_prod(in[0]->dims, 2, in[0]->ndim);
    const float *x = in[0]->data;
    float *y = out[0].data;

    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * sp;
        double sum = 0.0;
        float best = -INFINITY;

        for (int64_t i = 0; i < sp; i++) {
            sum += xp[i];
            if (xp[i] > best || xp[i] != xp[i])
                best = best != best ? best : xp[i];
        }
        y[p] = is_max ? best : sp > 0 ? (float)(sum / (double)sp) : NAN;
    }
}

static int
run_gavg(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    run_global(in, out, false);
    return 0;
}

static int
run_gmax(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    run_global(in, out, true);
    return 0;
}

const ss_op_t ss__ops_pool[] = {
    { "MaxPool", infer_maxpool, run_maxpool },
    { "AveragePool", infer_avgpool, run_avgpool },
    { "GlobalAveragePool", infer_global, run_gavg },
    { "GlobalMaxPool", infer_global, run_gmax },
    { NULL, NULL, NULL }
};
