/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GridSample (version 16: 4-D input, 2-D grid), as a plain C reference
 * kernel: modes bilinear, nearest and bicubic; padding modes zeros,
 * border and reflection; align_corners.
 *
 * DESIGN.  ONNX defines GridSample as PyTorch's grid_sample, and its node
 * tests hold PyTorch's outputs, so this follows PyTorch's CPU kernel: the
 * grid's [-1, 1] coordinates are unnormalized (corner pixels' centres or
 * edges, by align_corners); bilinear and nearest move the source point
 * through the padding mode first (border clips, reflection reflects then
 * clips) and read taps outside the input as 0; bicubic (A = -0.75) moves
 * each of its 4x4 taps through the padding mode instead.  Nearest rounds
 * half to even.  float32 and float64, in double.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

typedef enum { GM_BILINEAR, GM_NEAREST, GM_BICUBIC } gmode_t;
typedef enum { GP_ZEROS, GP_BORDER, GP_REFLECTION } gpad_t;

typedef struct {
    gmode_t mode;
    gpad_t pad;
    bool align;
} gs_t;

static int
parse(const ss_node_t *n, gs_t *g, ss_err_t *err)
{
    const char *m = ss__attr_string(n, "mode", "bilinear");
    const char *p = ss__attr_string(n, "padding_mode", "zeros");

    g->align = ss__attr_int(n, "align_corners", 0) != 0;
    if (strcmp(m, "bilinear") == 0)
        g->mode = GM_BILINEAR;
    else if (strcmp(m, "nearest") == 0)
        g->mode = GM_NEAREST;
    else if (strcmp(m, "bicubic") == 0)
        g->mode = GM_BICUBIC;
    else
        return ss__ops_fail(err, n, "mode '%s' is invalid", m);
    if (strcmp(p, "zeros") == 0)
        g->pad = GP_ZEROS;
    else if (strcmp(p, "border") == 0)
        g->pad = GP_BORDER;
    else if (strcmp(p, "reflection") == 0)
        g->pad = GP_REFLECTION;
    else
        return ss__ops_fail(err, n, "padding_mode '%s' is invalid", p);
    return 0;
}

static int
infer_gridsample(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                 ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[4];
    gs_t g;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = parse(n, &g, err)) < 0)
        return rc;
    if (in[0]->ndim != 4 || in[1]->ndim != 4 || in[1]->dims[3] != 2
        || in[1]->dims[0] != in[0]->dims[0])
        return ss__ops_fail(err, n, "X must be [N, C, H, W] and grid "
                            "[N, H_out, W_out, 2]");
    if ((in[0]->dtype != SS_DTYPE_F32 && in[0]->dtype != SS_DTYPE_F64)
        || !ss__dyn_is_float(in[1]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "GridSample on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    dims[0] = in[0]->dims[0];
    dims[1] = in[0]->dims[1];
    dims[2] = in[1]->dims[1];
    dims[3] = in[1]->dims[2];
    return ss__ops_set_out(n, &out[0], in[0]->dtype, 4, dims, err);
}

static double
clipc(double x, int64_t size)
{
    return x < 0 ? 0 : x > (double)(size - 1) ? (double)(size - 1) : x;
}

static double
reflect(double x, double twice_lo, double twice_hi)
{
    double mn, span, extra, flips;

    if (twice_lo == twice_hi)
        return 0;
    mn = twice_lo / 2;
    span = (twice_hi - twice_lo) / 2;
    x = fabs(x - mn);
    extra = fmod(x, span);
    flips = floor(x / span);
    return fmod(flips, 2) == 0 ? extra + mn : span - extra + mn;
}

static double
pad_coord(const gs_t *g, double x, int64_t size)
{
    if (g->pad == GP_BORDER)
        return clipc(x, size);
    if (g->pad == GP_REFLECTION) {
        x = g->align ? reflect(x, 0, 2.0 * (double)(size - 1))
                     : reflect(x, -1, 2.0 * (double)size - 1);
        return clipc(x, size);
    }
    return x;
}

static double
unnorm(const gs_t *g, double c, int64_t size)
{
    return g->align ? (c + 1) / 2 * (double)(size - 1)
                    : ((c + 1) * (double)size - 1) / 2;
}

/* The pixel (x, y) of plane p, 0 outside.  The coordinates are whole
 * numbers in double, checked before the integer cast: a grid far outside
 * [-1, 1] (a flow warping from beyond the image) unnormalizes past
 * int64's range under zeros padding, where every tap is simply 0. */
static double
pix(const ss_tensor_t *x, int64_t p, int64_t W, int64_t H, double ix,
    double iy)
{
    if (!(ix >= 0 && iy >= 0 && ix < (double)W && iy < (double)H))
        return 0;
    return ss__dyn_get(x->data, x->dtype,
                       (p * H + (int64_t)iy) * W + (int64_t)ix);
}

static void
cubic_coeffs(double t, double *w)
{
    const double A = -0.75;
    double x;

    x = t + 1;
    w[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    x = t;
    w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 1 - t;
    w[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
    x = 2 - t;
    w[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

static double
sample(const gs_t *g, const ss_tensor_t *x, int64_t p, int64_t W, int64_t H,
       double gx, double gy)
{
    double fx = unnorm(g, gx, W), fy = unnorm(g, gy, H);

    if (g->mode == GM_BICUBIC) {
        double x0 = floor(fx), y0 = floor(fy), wx[4], wy[4], acc = 0;

        cubic_coeffs(fx - x0, wx);
        cubic_coeffs(fy - y0, wy);
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 4; i++) {
                double cx = pad_coord(g, x0 - 1 + i, W);
                double cy = pad_coord(g, y0 - 1 + j, H);

                acc += wx[i] * wy[j] * pix(x, p, W, H, trunc(cx),
                                           trunc(cy));
            }
        return acc;
    }
    fx = pad_coord(g, fx, W);
    fy = pad_coord(g, fy, H);
    if (g->mode == GM_NEAREST)
        return pix(x, p, W, H, nearbyint(fx), nearbyint(fy));
    {
        double x0 = floor(fx), y0 = floor(fy), tx = fx - x0, ty = fy - y0;

        return (1 - tx) * (1 - ty) * pix(x, p, W, H, x0, y0)
               + tx * (1 - ty) * pix(x, p, W, H, x0 + 1, y0)
               + (1 - tx) * ty * pix(x, p, W, H, x0, y0 + 1)
               + tx * ty * pix(x, p, W, H, x0 + 1, y0 + 1);
    }
}

static int
run_gridsample(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *grid = in[1];
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t Ho = grid->dims[1], Wo = grid->dims[2];
    gs_t g;
    int rc;

    (void)opset;
    if ((rc = parse(n, &g, err)) < 0)
        return rc;
    for (int64_t b = 0; b < N; b++)
        for (int64_t i = 0; i < Ho * Wo; i++) {
            double gx = ss__dyn_get(grid->data, grid->dtype,
                                    (b * Ho * Wo + i) * 2);
            double gy = ss__dyn_get(grid->data, grid->dtype,
                                    (b * Ho * Wo + i) * 2 + 1);

            /* any finite coordinate samples (far outside is padding);
             * NaN or infinity has no place to sample: refused */
            if (!isfinite(gx) || !isfinite(gy))
                return ss__ops_fail(err, n, "grid value %g, %g is not "
                                    "finite", gx, gy);
            for (int64_t c = 0; c < C; c++)
                ss__dyn_set(out[0].data, out[0].dtype,
                            (b * C + c) * Ho * Wo + i,
                            sample(&g, x, b * C + c, W, H, gx, gy));
        }
    return 0;
}

const ss_op_t ss__ops_gridsample[] = {
    { "GridSample", infer_gridsample, run_gridsample },
    { NULL, NULL, NULL }
};
