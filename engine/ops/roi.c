/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RoiAlign (versions 10 and 16) and MaxUnpool (9 and 11), as plain C
 * reference kernels: the region pooling of detection heads (torchvision's
 * Mask R-CNN exports RoiAlign) and the inverse of an indexed MaxPool
 * (SegNet-style decoders).
 *
 * DESIGN.  RoiAlign follows the definition ONNX's node tests and ONNX
 * Runtime share (Mask R-CNN's, from Caffe2): each region [x1, y1, x2, y2]
 * is scaled by spatial_scale (and moved by half a pixel in version 16's
 * default half_pixel mode; in output_half_pixel mode, version 10's only
 * one, regions are at least 1x1), cut into output_height x output_width
 * bins, and each bin samples a grid of points (sampling_ratio per axis,
 * or ceil(bin size) when 0) by bilinear interpolation.  A point more than
 * one pixel outside the map counts 0; one within clamps to the edge.  avg
 * averages a bin's points; max keeps, per point, the largest of its four
 * weighted corner terms, then the largest over the bin -- that is what
 * the ONNX reference and ONNX Runtime compute, not the max of the
 * interpolated values, and a model exported for them expects it.  Points
 * and weights depend only on the region, so they are computed once per
 * region and used for every channel.  float32 and float64, in double.
 *
 * MaxUnpool writes X's elements where Indices say, in a zeroed tensor of
 * the shape the pooling came from ((in - 1) * stride - pads + kernel per
 * spatial axis); Indices address that whole tensor flattened, as MaxPool's
 * Indices output does.  With output_shape (a constant: it decides the
 * shape) the result is that tensor placed at the origin of a larger zero
 * tensor, as the ONNX reference does.  An index outside the tensor fails
 * the run, naming it.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

/* ---- RoiAlign ------------------------------------------------------------ */

typedef struct {
    int64_t pos[4];
    double w[4];
} tap_t;

typedef struct {
    bool half_pixel, is_max;
    int64_t oh, ow, ratio;
    double scale;
} roi_attr_t;

static int
roi_attrs(const ss_node_t *n, int opset, roi_attr_t *a, ss_err_t *err)
{
    const char *mode = ss__attr_string(n, "mode", "avg");
    const char *ctm = ss__attr_string(n, "coordinate_transformation_mode",
                                      opset >= 16 ? "half_pixel"
                                                  : "output_half_pixel");

    if (strcmp(mode, "avg") == 0)
        a->is_max = false;
    else if (strcmp(mode, "max") == 0)
        a->is_max = true;
    else
        return ss__ops_fail(err, n, "mode must be avg or max, not '%s'",
                            mode);
    if (strcmp(ctm, "half_pixel") == 0)
        a->half_pixel = true;
    else if (strcmp(ctm, "output_half_pixel") == 0)
        a->half_pixel = false;
    else
        return ss__ops_fail(err, n, "coordinate_transformation_mode must be "
                            "half_pixel or output_half_pixel, not '%s'", ctm);
    a->oh = ss__attr_int(n, "output_height", 1);
    a->ow = ss__attr_int(n, "output_width", 1);
    a->ratio = ss__attr_int(n, "sampling_ratio", 0);
    a->scale = ss__attr_float(n, "spatial_scale", 1.0f);
    if (a->oh < 1 || a->ow < 1 || a->oh > (1 << 16) || a->ow > (1 << 16))
        return ss__ops_fail(err, n, "output_height and output_width must be "
                            "in [1, 65536], not %lld and %lld",
                            (long long)a->oh, (long long)a->ow);
    if (a->ratio < 0 || a->ratio > 1024)
        return ss__ops_fail(err, n, "sampling_ratio must be in [0, 1024], "
                            "not %lld", (long long)a->ratio);
    if (!isfinite(a->scale))
        return ss__ops_fail(err, n, "spatial_scale must be finite");
    return 0;
}

static int
infer_roialign(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *r, *b;
    roi_attr_t a;
    int64_t dims[4];
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0
        || (rc = roi_attrs(n, opset, &a, err)) < 0)
        return rc;
    r = in[1];
    b = in[2];
    if (x->ndim != 4)
        return ss__ops_fail(err, n, "X must be [N, C, H, W], not rank %d",
                            x->ndim);
    if (x->dtype != SS_DTYPE_F32 && x->dtype != SS_DTYPE_F64)
        return ss__ops_failc(err, SS_EUNSUPP, n, "X must be float32 or "
                             "float64, not %s", ss__ops_dtype_name(x->dtype));
    if (r->ndim != 2 || r->dims[1] != 4 || !ss__dyn_is_float(r->dtype))
        return ss__ops_fail(err, n, "rois must be float [num_rois, 4]");
    if (b->ndim != 1 || b->dims[0] != r->dims[0] || !ss__ops_is_int(b->dtype))
        return ss__ops_fail(err, n, "batch_indices must be integers "
                            "[num_rois] (%lld rois)", (long long)r->dims[0]);
    dims[0] = r->dims[0];
    dims[1] = x->dims[1];
    dims[2] = a.oh;
    dims[3] = a.ow;
    return ss__ops_set_out(n, &out[0], x->dtype, 4, dims, err);
}

/* The bilinear taps of the point (y, x) in an H x W map. */
static void
bilinear(double y, double x, int64_t H, int64_t W, tap_t *t)
{
    int64_t yl, xl, yh, xh;
    double ly, lx;

    memset(t, 0, sizeof(*t));
    if (y < -1.0 || y > (double)H || x < -1.0 || x > (double)W)
        return;                         /* weights 0: counts as 0 */
    y = y < 0 ? 0 : y;
    x = x < 0 ? 0 : x;
    yl = (int64_t)y;
    xl = (int64_t)x;
    if (yl >= H - 1) {
        yl = yh = H - 1;
        y = (double)yl;
    } else {
        yh = yl + 1;
    }
    if (xl >= W - 1) {
        xl = xh = W - 1;
        x = (double)xl;
    } else {
        xh = xl + 1;
    }
    ly = y - (double)yl;
    lx = x - (double)xl;
    t->pos[0] = yl * W + xl;
    t->pos[1] = yl * W + xh;
    t->pos[2] = yh * W + xl;
    t->pos[3] = yh * W + xh;
    t->w[0] = (1 - ly) * (1 - lx);
    t->w[1] = (1 - ly) * lx;
    t->w[2] = ly * (1 - lx);
    t->w[3] = ly * lx;
}

/* The grid's size per axis: sampling_ratio, or ceil(bin) when 0, capped so
 * that a hostile region (1e30 wide) cannot ask for a huge grid. */
static int64_t
grid_of(int64_t ratio, double bin)
{
    double g;

    if (ratio > 0)
        return ratio;
    g = ceil(bin);
    return !(g > 0) ? 0 : g > 1024 ? 1024 : (int64_t)g;
}

static int
run_roialign(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *r = in[1], *b = in[2];
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    int64_t R = r->dims[0];
    roi_attr_t a;
    tap_t *taps = NULL;
    int rc;

    if ((rc = roi_attrs(n, opset, &a, err)) < 0)
        return rc;
    for (int64_t k = 0; k < R; k++) {
        double off = a.half_pixel ? 0.5 : 0.0, c[4], rh, rw, bh, bw;
        int64_t bi = ss__dyn_geti(b->data, b->dtype, k), gh, gw, cnt, nt;

        if (bi < 0 || bi >= N) {
            rc = ss__ops_fail(err, n, "batch_indices[%lld] is %lld, outside "
                              "[0, %lld)", (long long)k, (long long)bi,
                              (long long)N);
            goto done;
        }
        for (int j = 0; j < 4; j++)
            c[j] = ss__dyn_get(r->data, r->dtype, k * 4 + j) * a.scale - off;
        rw = c[2] - c[0];
        rh = c[3] - c[1];
        if (!a.half_pixel) {
            rw = rw > 1 ? rw : 1;
            rh = rh > 1 ? rh : 1;
        }
        if (!isfinite(rw) || !isfinite(rh) || !isfinite(c[0])
            || !isfinite(c[1])) {
            rc = ss__ops_fail(err, n, "rois[%lld] is not finite",
                              (long long)k);
            goto done;
        }
        bh = rh / (double)a.oh;
        bw = rw / (double)a.ow;
        gh = grid_of(a.ratio, bh);
        gw = grid_of(a.ratio, bw);
        cnt = gh * gw > 1 ? gh * gw : 1;
        nt = a.oh * a.ow * gh * gw;
        ss_free(taps);
        if ((taps = ss_malloc(sizeof(*taps) * (size_t)(nt + 1))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for RoiAlign");
            goto done;
        }
        for (int64_t ph = 0, t = 0; ph < a.oh; ph++)
            for (int64_t pw = 0; pw < a.ow; pw++)
                for (int64_t iy = 0; iy < gh; iy++)
                    for (int64_t ix = 0; ix < gw; ix++, t++)
                        bilinear(c[1] + (double)ph * bh
                                     + ((double)iy + 0.5) * bh / (double)gh,
                                 c[0] + (double)pw * bw
                                     + ((double)ix + 0.5) * bw / (double)gw,
                                 H, W, &taps[t]);
        for (int64_t ch = 0; ch < C; ch++) {
            int64_t base = (bi * C + ch) * H * W;
            int64_t o = ((k * C) + ch) * a.oh * a.ow;

            for (int64_t q = 0; q < a.oh * a.ow; q++) {
                const tap_t *t = &taps[q * gh * gw];
                double v = 0;

                for (int64_t s = 0; s < gh * gw; s++) {
                    double e[4];

                    for (int j = 0; j < 4; j++)
                        e[j] = t[s].w[j]
                               * ss__dyn_get(x->data, x->dtype,
                                             base + t[s].pos[j]);
                    if (!a.is_max) {
                        v += e[0] + e[1] + e[2] + e[3];
                    } else {
                        double m = fmax(fmax(e[0], e[1]), fmax(e[2], e[3]));

                        v = s == 0 ? m : fmax(v, m);
                    }
                }
                ss__dyn_set(out[0].data, out[0].dtype, o + q,
                            a.is_max ? v : v / (double)cnt);
            }
        }
    }
    rc = 0;
done:
    ss_free(taps);
    return rc;
}

/* ---- MaxUnpool ----------------------------------------------------------- */

/* The pooled-from shape (ONNX's inferred shape) into dims. */
static int
unpool_shape(const ss_node_t *n, const ss_tensor_t *x, int64_t *dims,
             ss_err_t *err)
{
    const int64_t *k = NULL, *s = NULL, *p = NULL;
    int nk = ss__attr_ints(n, "kernel_shape", &k);
    int ns = ss__attr_ints(n, "strides", &s);
    int np = ss__attr_ints(n, "pads", &p);
    int sp = x->ndim - 2;

    if (x->ndim < 3 || x->ndim > 5)
        return ss__ops_fail(err, n, "X must have 1 to 3 spatial axes, not "
                            "rank %d", x->ndim);
    if (nk != sp || (ns > 0 && ns != sp) || (np > 0 && np != 2 * sp))
        return ss__ops_fail(err, n, "kernel_shape (%d), strides (%d) and "
                            "pads (%d) do not fit %d spatial axes", nk, ns,
                            np, sp);
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    for (int i = 0; i < sp; i++) {
        int64_t st = ns > 0 ? s[i] : 1;
        int64_t pd = np > 0 ? p[i] + p[sp + i] : 0;

        if (k[i] < 1 || st < 1 || k[i] > (1 << 20) || st > (1 << 20)
            || (np > 0 && (p[i] < 0 || p[sp + i] < 0 || pd > (1 << 20))))
            return ss__ops_fail(err, n, "kernel_shape, strides and pads of "
                                "axis %d are out of range", i);
        dims[2 + i] = (x->dims[2 + i] - 1) * st - pd + k[i];
        if (x->dims[2 + i] < 1 || dims[2 + i] < 1)
            return ss__ops_fail(err, n, "axis %d unpools to %lld elements",
                                i, (long long)dims[2 + i]);
    }
    return 0;
}

static int
infer_maxunpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *ix = in[1], *os;
    int64_t dims[SS_MAX_DIMS], want[SS_MAX_DIMS];
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if (!ss__dyn_is_float(x->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "X must be a float type, "
                             "not %s", ss__ops_dtype_name(x->dtype));
    if (ix->dtype != SS_DTYPE_I64 || ix->ndim != x->ndim
        || memcmp(ix->dims, x->dims, sizeof(int64_t) * (size_t)x->ndim))
        return ss__ops_fail(err, n, "I must be int64 of X's shape");
    if ((rc = unpool_shape(n, x, dims, err)) < 0)
        return rc;
    if ((os = ss__ops_opt_input(n, in, 2)) != NULL) {
        if ((rc = ss__ops_read_ints(n, os, "output_shape", want,
                                    SS_MAX_DIMS, err)) < 0)
            return rc;
        if (rc != x->ndim)
            return ss__ops_fail(err, n, "output_shape has %d values for "
                                "rank %d", rc, x->ndim);
        for (int i = 0; i < x->ndim; i++)
            if (want[i] < dims[i] || (i < 2 && want[i] != dims[i]))
                return ss__ops_fail(err, n, "output_shape[%d] is %lld, "
                                    "smaller than the %lld unpooled", i,
                                    (long long)want[i], (long long)dims[i]);
        memcpy(dims, want, sizeof(int64_t) * (size_t)x->ndim);
    }
    return ss__ops_set_out(n, &out[0], x->dtype, x->ndim, dims, err);
}

static int
run_maxunpool(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *ix = in[1];
    const int64_t *idx = ix->data;
    int64_t dims[SS_MAX_DIMS], total, cnt = ss__ops_numel(x);
    int64_t istr[SS_MAX_DIMS], ostr[SS_MAX_DIMS];
    int nd = x->ndim, rc;
    size_t es = ss__ops_dtype_size(x->dtype);

    (void)opset;
    if ((rc = unpool_shape(n, x, dims, err)) < 0)
        return rc;
    total = ss__ops_prod(dims, 0, nd);
    istr[nd - 1] = ostr[nd - 1] = 1;
    for (int i = nd - 2; i >= 0; i--) {
        istr[i] = istr[i + 1] * dims[i + 1];
        ostr[i] = ostr[i + 1] * out[0].dims[i + 1];
    }
    memset(out[0].data, 0, es * (size_t)ss__ops_numel(&out[0]));
    for (int64_t e = 0; e < cnt; e++) {
        int64_t at = idx[e], o = 0, rem = at;

        if (at < 0 || at >= total)
            return ss__ops_fail(err, n, "I[%lld] is %lld, outside the %lld "
                                "unpooled elements", (long long)e,
                                (long long)at, (long long)total);
        /* the inferred tensor's flat index -> the output's, which may be
         * larger (output_shape) */
        for (int i = 0; i < nd; i++) {
            o += rem / istr[i] * ostr[i];
            rem %= istr[i];
        }
        memcpy((char *)out[0].data + (size_t)o * es,
               (const char *)x->data + (size_t)e * es, es);
    }
    return 0;
}

const ss_op_t ss__ops_roi[] = {
    { "RoiAlign", infer_roialign, run_roialign },
    { "MaxUnpool", infer_maxunpool, run_maxunpool },
    { NULL, NULL, NULL }
};
