/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Resize (versions 11 and 13), as a plain C reference kernel: modes
 * nearest (its four nearest_modes), linear and cubic (cubic_coeff_a,
 * exclude_outside) on any number of axes, with the coordinate
 * transformations half_pixel, pytorch_half_pixel, align_corners,
 * asymmetric and tf_crop_and_resize (roi, extrapolation_value).
 *
 * DESIGN.  It follows ONNX's reference implementation (the one that made
 * the node suite's expected outputs), which is separable: each output
 * coordinate of each axis maps to an original coordinate x, whose n
 * nearest input indices (n = 2 for nearest and linear, 4 for cubic; ties
 * to the lower index; x integral counts as ratio 1 from its left
 * neighbour) get 1-D coefficients, clamped to the edge as the reference's
 * edge padding does.  Per axis and output index the taps are computed
 * once; an output element sums the products of its axes' taps.
 * tf_crop_and_resize gives extrapolation_value when any axis maps outside
 * the input.  The output size is sizes, or floor(input * scales); the
 * scale an axis uses is scales, or sizes / input.  Both must be constants
 * when the plan is compiled.  float32, float64 and float16.
 *
 * Resize version 10 and Upsample (versions 7 and 9; deprecated at opset
 * 10) are the same kernel: modes nearest and linear only, scales (an
 * input; Upsample-7's attribute), asymmetric coordinates, nearest taking
 * the floor -- what both specify (x_original = x_resized / scale).
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

#define MAX_TAPS 4

typedef enum { RZ_NEAREST, RZ_LINEAR, RZ_CUBIC } rz_mode_t;
typedef enum {
    CT_HALF, CT_PYTORCH, CT_ALIGN, CT_ASYM, CT_CROP
} rz_ct_t;
typedef enum { NM_FLOOR_HALF, NM_CEIL_HALF, NM_FLOOR, NM_CEIL } rz_nm_t;

typedef struct {
    rz_mode_t mode;
    rz_ct_t ct;
    rz_nm_t nm;
    double a, extrap;
    bool exclude;
    int r;
    double scale[SS_MAX_DIMS], roi[2 * SS_MAX_DIMS];
    int64_t out[SS_MAX_DIMS];
} rz_t;

static int
pick(const char *s, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

/* Attributes and the scales/sizes/roi inputs into z. */
static int
setup(const ss_node_t *n, int opset, const ss_tensor_t *const *in, rz_t *z,
      ss_err_t *err)
{
    static const char *const modes[] = { "nearest", "linear", "cubic" };
    static const char *const cts[] = {
        "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_crop_and_resize"
    };
    static const char *const nms[] = {
        "round_prefer_floor", "round_prefer_ceil", "floor", "ceil"
    };
    bool up = strcmp(n->op_type, "Upsample") == 0, legacy = up || opset < 11;
    const char *m = ss__attr_string(n, "mode", "nearest");
    const char *c = legacy ? "asymmetric"
                    : ss__attr_string(n, "coordinate_transformation_mode",
                                      "half_pixel");
    const char *nm = legacy ? "floor"
                     : ss__attr_string(n, "nearest_mode",
                                       "round_prefer_floor");
    const ss_tensor_t *x = in[0], *scales = NULL;
    ss_tensor_t attr_scales = { .dtype = SS_DTYPE_F32, .ndim = 1 };
    const float *f;
    bool has_scales, has_sizes;
    int k, rc;

    memset(z, 0, sizeof(*z));
    if (up && opset >= 10)
        return ss__ops_failc(err, SS_EUNSUPP, n, "Upsample is deprecated "
                             "from opset 10 (%d here): Resize replaces it",
                             opset);
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (legacy && strcmp(m, "bilinear") == 0)
        m = "linear";           /* Upsample-7's name for it */
    if (legacy && strcmp(m, "nearest") != 0 && strcmp(m, "linear") != 0)
        return ss__ops_fail(err, n, "mode '%s' is invalid", m);
    if (up && opset < 9) {
        if ((attr_scales.dims[0] = ss__attr_floats(n, "scales", &f)) < 0)
            return ss__ops_fail(err, n, "the scales attribute is missing");
        attr_scales.data = (void *)f;
        scales = &attr_scales;
    } else if (ss__ops_has_input(n, in, legacy ? 1 : 2)) {
        scales = in[legacy ? 1 : 2];
    }
    if (!ss__dyn_is_float(x->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "Resize on %s is not "
                             "supported", ss__ops_dtype_name(x->dtype));
    if ((k = pick(m, modes, 3)) < 0)
        return ss__ops_fail(err, n, "mode '%s' is invalid", m);
    z->mode = (rz_mode_t)k;
    if ((k = pick(c, cts, 5)) < 0)
        return ss__ops_failc(err, SS_EUNSUPP, n, "coordinate_transformation"
                             "_mode '%s' is not supported", c);
    z->ct = (rz_ct_t)k;
    if ((k = pick(nm, nms, 4)) < 0)
        return ss__ops_fail(err, n, "nearest_mode '%s' is invalid", nm);
    z->nm = (rz_nm_t)k;
    z->a = ss__attr_float(n, "cubic_coeff_a", -0.75f);
    z->extrap = ss__attr_float(n, "extrapolation_value", 0.0f);
    z->exclude = ss__attr_int(n, "exclude_outside", 0) != 0;
    z->r = x->ndim;
    has_scales = scales != NULL && ss__ops_numel(scales) > 0;
    has_sizes = !legacy && ss__ops_has_input(n, in, 3)
                && ss__ops_numel(in[3]) > 0;
    if (has_scales == has_sizes)
        return ss__ops_fail(err, n, "exactly one of scales and sizes must "
                            "be given");
    if (has_scales) {
        const ss_tensor_t *s = scales;

        if (s->data == NULL)
            return ss__ops_failc(err, SS_EUNSUPP, n, "scales must be a "
                                 "constant known when the plan is compiled");
        if (ss__ops_numel(s) != z->r || !ss__dyn_is_float(s->dtype))
            return ss__ops_fail(err, n, "scales must be %d floats", z->r);
        for (int d = 0; d < z->r; d++) {
            z->scale[d] = ss__dyn_get(s->data, s->dtype, d);
            if (!(z->scale[d] > 0 && z->scale[d] < 1e6))
                return ss__ops_fail(err, n, "scale %g is invalid",
                                    z->scale[d]);
            z->out[d] = (int64_t)((double)x->dims[d] * z->scale[d]);
        }
    } else {
        int64_t sz[SS_MAX_DIMS];
        int cnt;

        if ((cnt = ss__ops_read_ints(n, in[3], "sizes", sz, SS_MAX_DIMS,
                                     err)) < 0)
            return cnt;
        if (cnt != z->r)
            return ss__ops_fail(err, n, "sizes has %d values for rank %d",
                                cnt, z->r);
        for (int d = 0; d < z->r; d++) {
            if (sz[d] < 0 || (sz[d] > 0 && x->dims[d] == 0))
                return ss__ops_fail(err, n, "size %lld is invalid",
                                    (long long)sz[d]);
            z->out[d] = sz[d];
            z->scale[d] = x->dims[d] ? (double)sz[d] / (double)x->dims[d]
                                     : 1.0;
        }
    }
    for (int d = 0; d < z->r; d++) {
        z->roi[d] = 0;
        z->roi[z->r + d] = 1;
    }
    if (z->ct == CT_CROP) {
        const ss_tensor_t *roi = ss__ops_opt_input(n, in, 1);

        if (roi == NULL || roi->data == NULL)
            return ss__ops_failc(err, SS_EUNSUPP, n, "roi must be a "
                                 "constant known when the plan is compiled");
        if (ss__ops_numel(roi) != 2 * z->r || !ss__dyn_is_float(roi->dtype))
            return ss__ops_fail(err, n, "roi must have %d floats",
                                2 * z->r);
        for (int d = 0; d < 2 * z->r; d++)
            z->roi[d] = ss__dyn_get(roi->data, roi->dtype, d);
    }
    return 0;
}

static int
infer_resize(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    rz_t z;
    int rc;

    if ((rc = setup(n, opset, in, &z, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, z.r, z.out, err);
}

/* The taps of output index o on axis d: count, input indices, weights;
 * false when tf_crop_and_resize maps it outside the input. */
static bool
taps(const rz_t *z, int d, int64_t len, int64_t o, int64_t *idx,
     double *w, int *count)
{
    double s = z->scale[d], ow = s * (double)len, x, ratio;
    double st = z->roi[d], en = z->roi[z->r + d];
    int nt = z->mode == RZ_CUBIC ? 4 : 2;
    int64_t f, start;
    double sum = 0;

    if (s == 1 && z->ct != CT_CROP) {   /* every mode maps o to o */
        idx[0] = o;
        w[0] = 1;
        *count = 1;
        return true;
    }

    switch (z->ct) {
    case CT_ALIGN:
        x = ow == 1 ? 0 : (double)o * (double)(len - 1) / (ow - 1);
        break;
    case CT_ASYM:
        x = (double)o / s;
        break;
    case CT_CROP:
        x = ow == 1 ? (en - st) * (double)(len - 1) / 2
                    : (double)o * (en - st) * (double)(len - 1) / (ow - 1);
        x += st * (double)(len - 1);
        if (x < 0 || x > (double)(len - 1))
            return false;
        break;
    case CT_PYTORCH:
        x = ow == 1 ? -0.5 : ((double)o + 0.5) / s - 0.5;
        break;
    default:
        x = ((double)o + 0.5) / s - 0.5;
        break;
    }
    f = (int64_t)floor(x);
    ratio = x - (double)f;
    if (ratio == 0) {           /* integral: ratio 1 from the left */
        ratio = 1;
        f -= 1;
    }
    start = f - (nt / 2 - 1);
    if (z->mode == RZ_NEAREST) {
        bool right;

        switch (z->nm) {
        case NM_FLOOR_HALF: right = ratio > 0.5; break;
        case NM_CEIL_HALF: right = ratio >= 0.5; break;
        case NM_FLOOR: right = ratio == 1; break;
        default: right = true; break;
        }
        w[0] = right ? 0 : 1;
        w[1] = right ? 1 : 0;
    } else if (z->mode == RZ_LINEAR) {
        w[0] = 1 - ratio;
        w[1] = ratio;
    } else {
        double A = z->a, r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;

        w[0] = ((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A;
        w[1] = ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1;
        w[2] = ((A + 2) * q - (A + 3)) * q * q + 1;
        w[3] = ((A * q1 - 5 * A) * q1 + 8 * A) * q1 - 4 * A;
    }
    for (int t = 0; t < nt; t++) {
        int64_t i = start + t;

        if (z->exclude && (i < 0 || i >= len))
            w[t] = 0;
        sum += w[t];
        idx[t] = i < 0 ? 0 : i >= len ? len - 1 : i;
    }
    if (z->exclude && sum != 0)
        for (int t = 0; t < nt; t++)
            w[t] /= sum;
    *count = nt;
    return true;
}

static int
run_resize(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    int64_t *tidx[SS_MAX_DIMS] = { NULL }, coord[SS_MAX_DIMS] = { 0 };
    double *tw[SS_MAX_DIMS] = { NULL };
    bool *inside[SS_MAX_DIMS] = { NULL };
    int64_t xstride[SS_MAX_DIMS], cnt;
    int nt[SS_MAX_DIMS] = { 0 };
    rz_t z;
    int rc;

    if ((rc = setup(n, opset, in, &z, err)) < 0)
        return rc;
    cnt = ss__ops_numel(&out[0]);
    for (int d = z.r - 1; d >= 0; d--)
        xstride[d] = d == z.r - 1 ? 1 : xstride[d + 1] * x->dims[d + 1];
    for (int d = 0; d < z.r; d++) {
        size_t k = (size_t)z.out[d] + 1;

        tidx[d] = ss_malloc(k * MAX_TAPS * sizeof(int64_t));
        tw[d] = ss_malloc(k * MAX_TAPS * sizeof(double));
        inside[d] = ss_malloc(k * sizeof(bool));
        if (tidx[d] == NULL || tw[d] == NULL || inside[d] == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for Resize");
            goto done;
        }
        for (int64_t o = 0; o < z.out[d]; o++)
            inside[d][o] = taps(&z, d, x->dims[d], o,
                                &tidx[d][o * MAX_TAPS],
                                &tw[d][o * MAX_TAPS], &nt[d]);
    }
    for (int64_t e = 0; e < cnt; e++) {
        int t[SS_MAX_DIMS] = { 0 };
        double acc = 0;
        bool in_range = true;

        for (int d = 0; d < z.r; d++)
            in_range = in_range && inside[d][coord[d]];
        /* every combination of the axes' taps: an odometer over t[] */
        while (in_range) {
            double w = 1;
            int64_t off = 0;
            int d;

            for (d = 0; d < z.r; d++) {
                w *= tw[d][coord[d] * MAX_TAPS + t[d]];
                off += tidx[d][coord[d] * MAX_TAPS + t[d]] * xstride[d];
            }
            if (w != 0)
                acc += w * ss__dyn_get(x->data, x->dtype, off);
            for (d = z.r - 1; d >= 0; d--) {
                if (++t[d] < nt[d])
                    break;
                t[d] = 0;
            }
            if (d < 0)
                break;
        }
        ss__dyn_set(out[0].data, out[0].dtype, e, in_range ? acc : z.extrap);
        for (int d = z.r - 1; d >= 0; d--) {
            if (++coord[d] < z.out[d])
                break;
            coord[d] = 0;
        }
    }
done:
    for (int d = 0; d < SS_MAX_DIMS; d++) {
        ss_free(tidx[d]);
        ss_free(tw[d]);
        ss_free(inside[d]);
    }
    return rc;
}

const ss_op_t ss__ops_resize[] = {
    { "Resize", infer_resize, run_resize },
    { "Upsample", infer_resize, run_resize },
    { NULL, NULL, NULL }
};
