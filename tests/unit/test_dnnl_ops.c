/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oneDNN layer: convolution, pooling, softmax, layer norm, eltwise, binary
 * and reorder against naive loops written from the ONNX op definitions.
 * Tolerance: |got - want| <= 1e-5 + 1e-4 |want| per element (f32).
 */

#include "config.h"

#include "tests/unit/test_dnnl.h"

/* ONNX Conv, NCHW, w [OC, IC/G, KH, KW], dilation as ONNX gives it. */
static void
ref_conv(const ss_dnn_conv_desc_t *d, const float *src, const float *w,
         float *dst, int64_t oh, int64_t ow)
{
    int64_t g = d->group ? d->group : 1, icg = d->ic / g, ocg = d->oc / g;
    int64_t sh = d->stride[0] ? d->stride[0] : 1;
    int64_t sw = d->stride[1] ? d->stride[1] : 1;
    int64_t dh = d->dilation[0] ? d->dilation[0] : 1;
    int64_t dw = d->dilation[1] ? d->dilation[1] : 1;
    int64_t n, o, y, x, c, ky, kx;

    for (n = 0; n < d->n; n++)
        for (o = 0; o < d->oc; o++)
            for (y = 0; y < oh; y++)
                for (x = 0; x < ow; x++) {
                    double acc = d->bias ? d->bias[o] : 0.0;
                    int64_t gi = o / ocg;

                    for (c = 0; c < icg; c++)
                        for (ky = 0; ky < d->kh; ky++)
                            for (kx = 0; kx < d->kw; kx++) {
                                int64_t iy = y * sh - d->pad_begin[0] +
                                             ky * dh;
                                int64_t ix = x * sw - d->pad_begin[1] +
                                             kx * dw;
                                int64_t ci = gi * icg + c;

                                if (iy < 0 || iy >= d->ih || ix < 0 ||
                                    ix >= d->iw)
                                    continue;
                                acc += (double)src[((n * d->ic + ci) * d->ih +
                                                    iy) * d->iw + ix] *
                                       w[((o * icg + c) * d->kh + ky) *
                                             d->kw + kx];
                            }
                    dst[((n * d->oc + o) * oh + y) * ow + x] = (float)acc;
                }
}

static void
conv_case(const char *name, ss_dnn_conv_desc_t d, int with_bias,
          int64_t want_oh, int64_t want_ow)
{
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    int64_t g = d.group ? d.group : 1, dd[SS_DNN_MAX_DIMS];
    size_t nsrc = (size_t)(d.n * d.ic * d.ih * d.iw), ndst;
    size_t nw = (size_t)(d.oc * (d.ic / g) * d.kh * d.kw);
    float *src = rnd(nsrc), *w = rnd(nw), *bias = rnd((size_t)d.oc);
    float *out = NULL, *want = NULL, *bin[SS_DNN_MAX_POST];
    const void *in[1 + SS_DNN_MAX_POST];
    int i, nb = 0;

    d.w = w;
    d.bias = with_bias ? bias : NULL;
    in[0] = src;
    for (i = 0; i < d.post.n; i++)
        if (d.post.op[i].kind == SS_DNN_PO_BINARY) {
            bin[nb] = rnd(numel(d.post.op[i].ndim, d.post.op[i].dims));
            in[1 + nb] = bin[nb];
            nb++;
        }
    if (!ok(ss_dnn_conv_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    ss_dnn_prim_dst_dims(p, dd);
    ok(dd[2] == want_oh && dd[3] == want_ow, "%s: output %lldx%lld", name,
       (long long)dd[2], (long long)dd[3]);
    ndst = numel(4, dd);
    out = rnd(ndst);
    want = zeros(ndst);
    ref_conv(&d, src, w, want, dd[2], dd[3]);
    ref_post(want, 4, dd, &d.post, (const float *const *)bin, NULL);
    if (run(p, in, out) == 0)
        check_close(out, want, ndst, name);
    else
        ok(0, "%s: run", name);
    tap_diag("%s: %s", name, ss_dnn_prim_impl(p));
done:
    ss_dnn_prim_free(p);
    for (i = 0; i < nb; i++)
        ss_free(bin[i]);
    ss_free(src);
    ss_free(w);
    ss_free(bias);
    ss_free(out);
    ss_free(want);
}

static void
test_conv(void)
{
    ss_dnn_conv_desc_t d;
    int64_t res[4] = { 2, 16, 12, 12 }, chan[4] = { 1, 16, 1, 1 };

    d = (ss_dnn_conv_desc_t){ .n = 2, .ic = 8, .ih = 12, .iw = 12, .oc = 16,
                              .kh = 3, .kw = 3, .pad_begin = { 1, 1 },
                              .pad_end = { 1, 1 } };
    conv_case("conv 3x3 pad 1", d, 1, 12, 12);
    d.post.n = 2;
    d.post.op[0] = po_bin(SS_DNN_ADD, 4, res);
    d.post.op[1] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    conv_case("conv 3x3 + bias + residual add + relu", d, 1, 12, 12);
    d.post.op[0] = po_bin(SS_DNN_MUL, 4, chan);
    d.post.op[1] = po_elt(SS_DNN_LOGISTIC, 0.f, 0.f);
    conv_case("conv 3x3 + per-channel mul + sigmoid", d, 0, 12, 12);

    d = (ss_dnn_conv_desc_t){ .n = 1, .ic = 6, .ih = 13, .iw = 11, .oc = 4,
                              .kh = 3, .kw = 2, .group = 2,
                              .stride = { 2, 1 }, .dilation = { 2, 3 },
                              .pad_begin = { 0, 2 }, .pad_end = { 1, 0 } };
    /* oh = (13 + 1 - 5) / 2 + 1 = 5; ow = (11 + 2 - 4) / 1 + 1 = 10. */
    conv_case("conv groups 2, stride, dilation, asym pads", d, 1, 5, 10);
    d = (ss_dnn_conv_desc_t){ .n = 3, .ic = 8, .ih = 9, .iw = 9, .oc = 8,
                              .kh = 3, .kw = 3, .group = 8,
                              .stride = { 2, 2 }, .pad_begin = { 1, 1 },
                              .pad_end = { 1, 1 } };
    d.post.n = 1;
    d.post.op[0] = po_elt(SS_DNN_CLIP, 0.f, 6.f);
    conv_case("conv depthwise stride 2 + relu6", d, 1, 5, 5);
    d = (ss_dnn_conv_desc_t){ .n = 2, .ic = 32, .ih = 7, .iw = 7, .oc = 24,
                              .kh = 1, .kw = 1 };
    conv_case("conv 1x1", d, 1, 7, 7);
    d = (ss_dnn_conv_desc_t){ .n = 2, .ic = 3, .ih = 1, .iw = 50, .oc = 5,
                              .kh = 1, .kw = 5, .stride = { 1, 3 } };
    conv_case("conv 1-D as 2-D", d, 1, 1, 16);
}

static void
ref_pool(const ss_dnn_pool_desc_t *d, const float *src, float *dst,
         int64_t oh, int64_t ow)
{
    int64_t sh = d->stride[0] ? d->stride[0] : 1;
    int64_t sw = d->stride[1] ? d->stride[1] : 1;
    int64_t dh = d->dilation[0] ? d->dilation[0] : 1;
    int64_t dw = d->dilation[1] ? d->dilation[1] : 1;
    int64_t nc, y, x, ky, kx;

    for (nc = 0; nc < d->n * d->c; nc++)
        for (y = 0; y < oh; y++)
            for (x = 0; x < ow; x++) {
                double acc = d->alg == SS_DNN_POOL_MAX ? -INFINITY : 0.0;
                int64_t cnt = 0;

                for (ky = 0; ky < d->kernel[0]; ky++)
                    for (kx = 0; kx < d->kernel[1]; kx++) {
                        int64_t iy = y * sh - d->pad_begin[0] + ky * dh;
                        int64_t ix = x * sw - d->pad_begin[1] + kx * dw;
                        float v;

                        if (iy < 0 || iy >= d->ih || ix < 0 || ix >= d->iw)
                            continue;
                        v = src[(nc * d->ih + iy) * d->iw + ix];
                        cnt++;
                        if (d->alg == SS_DNN_POOL_MAX)
                            acc = v > acc ? v : acc;
                        else
                            acc += v;
                    }
                if (d->alg == SS_DNN_POOL_AVG_INCLUDE)
                    acc /= (double)(d->kernel[0] * d->kernel[1]);
                else if (d->alg == SS_DNN_POOL_AVG_EXCLUDE)
                    acc /= (double)cnt;
                dst[(nc * oh + y) * ow + x] = (float)acc;
            }
}

static void
pool_case(const char *name, ss_dnn_pool_desc_t d, int64_t eh, int64_t ew)
{
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    int64_t dd[SS_DNN_MAX_DIMS];
    float *src = rnd((size_t)(d.n * d.c * d.ih * d.iw));
    float *out = NULL, *want = NULL;
    const void *in[1] = { src };
    size_t n;

    if (!ok(ss_dnn_pool_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    ss_dnn_prim_dst_dims(p, dd);
    ok(dd[2] == eh && dd[3] == ew, "%s: output %lldx%lld", name,
       (long long)dd[2], (long long)dd[3]);
    n = numel(4, dd);
    out = rnd(n);
    want = zeros(n);
    ref_pool(&d, src, want, dd[2], dd[3]);
    if (run(p, in, out) == 0)
        check_close(out, want, n, name);
    else
        ok(0, "%s: run", name);
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(out);
    ss_free(want);
}

static void
test_pool(void)
{
    ss_dnn_pool_desc_t d = { .alg = SS_DNN_POOL_MAX, .n = 2, .c = 5,
                             .ih = 11, .iw = 10, .kernel = { 3, 3 },
                             .stride = { 2, 2 }, .pad_begin = { 1, 1 },
                             .pad_end = { 1, 1 } };

    pool_case("maxpool 3x3 s2 p1", d, 6, 5);
    d.alg = SS_DNN_POOL_AVG_INCLUDE;
    pool_case("avgpool include pad", d, 6, 5);
    d.alg = SS_DNN_POOL_AVG_EXCLUDE;
    d.pad_begin[0] = 0;
    d.pad_end[1] = 2;
    pool_case("avgpool exclude pad, asym pads", d, 5, 6);
    d = (ss_dnn_pool_desc_t){ .alg = SS_DNN_POOL_MAX, .n = 1, .c = 3,
                              .ih = 12, .iw = 12, .kernel = { 2, 3 },
                              .dilation = { 2, 2 }, .stride = { 1, 2 } };
    pool_case("maxpool dilation 2", d, 10, 4);
    d = (ss_dnn_pool_desc_t){ .alg = SS_DNN_POOL_AVG_EXCLUDE, .n = 4,
                              .c = 16, .ih = 7, .iw = 7, .kernel = { 7, 7 } };
    pool_case("global average pool", d, 1, 1);
}

/* Max pooling on 8-bit NHWC (our loop, dnnl_pool8.c): byte for byte the
 * reference's maximum of the same values, windows in the padding
 * included; a guard byte after the output stays. */
static void
pool8_case(const char *name, ss_dnn_pool_desc_t d)
{
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    int64_t dd[SS_DNN_MAX_DIMS], bad = 0;
    size_t nx = (size_t)(d.n * d.c * d.ih * d.iw), n;
    float *src = rnd(nx), *want = NULL;
    uint8_t *x = ss_malloc(nx), *y = NULL;
    const void *in[1] = { x };
    const int s8 = d.dtype == SS_DTYPE_I8;

    d.alg = SS_DNN_POOL_MAX;
    d.layout = SS_DNN_NHWC;
    /* whole values in the type's range, NCHW for ref_pool, NHWC bytes */
    for (int64_t b = 0; b < d.n; b++)
        for (int64_t c = 0; c < d.c; c++)
            for (int64_t h = 0; h < d.ih; h++)
                for (int64_t w = 0; w < d.iw; w++) {
                    float *v = &src[((b * d.c + c) * d.ih + h) * d.iw + w];
                    int q = (int)floorf(*v * 128.0f) + (s8 ? 0 : 128);

                    *v = (float)q;
                    x[((b * d.ih + h) * d.iw + w) * d.c + c] = (uint8_t)q;
                }
    if (!ok(ss_dnn_pool_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    ok(strncmp(ss_dnn_prim_impl(p), "ss:", 3) == 0, "%s: runs our loop "
       "(%s)", name, ss_dnn_prim_impl(p));
    ok(ss_dnn_prim_layout(p, 0) == SS_DNN_NHWC
       && ss_dnn_prim_layout(p, -1) == SS_DNN_NHWC, "%s: NHWC", name);
    ss_dnn_prim_dst_dims(p, dd);
    n = numel(4, dd);
    want = zeros(n);
    y = ss_malloc(n + 1);
    memset(y, 0x5a, n + 1);
    ref_pool(&d, src, want, dd[2], dd[3]);
    if (!ok(run(p, in, y) == 0, "%s: run", name))
        goto done;
    for (int64_t b = 0; b < dd[0]; b++)
        for (int64_t c = 0; c < dd[1]; c++)
            for (int64_t h = 0; h < dd[2]; h++)
                for (int64_t w = 0; w < dd[3]; w++) {
                    uint8_t o = y[((b * dd[2] + h) * dd[3] + w) * dd[1] + c];

                    bad += (s8 ? (float)(int8_t)o : (float)o)
                           != want[((b * dd[1] + c) * dd[2] + h) * dd[3] + w];
                }
    ok(bad == 0 && y[n] == 0x5a, "%s: %lld of %zu outputs differ from the "
       "reference", name, (long long)bad, n);
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(want);
    ss_free(x);
    ss_free(y);
}

static void
test_pool8(void)
{
    pool8_case("u8 maxpool 2x2 s2, 32 channels", (ss_dnn_pool_desc_t){
        .dtype = SS_DTYPE_U8, .n = 3, .c = 32, .ih = 28, .iw = 28,
        .kernel = { 2, 2 }, .stride = { 2, 2 } });
    pool8_case("s8 maxpool 3x3 s2 p1, 5 channels", (ss_dnn_pool_desc_t){
        .dtype = SS_DTYPE_I8, .n = 2, .c = 5, .ih = 11, .iw = 10,
        .kernel = { 3, 3 }, .stride = { 2, 2 }, .pad_begin = { 1, 1 },
        .pad_end = { 1, 1 } });
    pool8_case("u8 maxpool dilation 2, asym pads, 67 channels",
               (ss_dnn_pool_desc_t){
        .dtype = SS_DTYPE_U8, .n = 1, .c = 67, .ih = 12, .iw = 9,
        .kernel = { 2, 3 }, .dilation = { 2, 2 }, .stride = { 1, 2 },
        .pad_begin = { 0, 2 }, .pad_end = { 1, 1 } });
}

static void
softmax_case(const char *name, int nd, const int64_t *dims, int axis,
             int log_, int in_place)
{
    ss_dnn_softmax_desc_t d = { .ndim = nd, .axis = axis, .log = log_ };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    size_t n = numel(nd, dims), outer = 1, inner = 1, o, i, c;
    float *src = rnd(n), *out = rnd(n), *want = zeros(n);
    const void *in[1] = { src };
    int k;

    memcpy(d.dims, dims, (size_t)nd * sizeof(*dims));
    for (k = 0; k < axis; k++)
        outer *= (size_t)dims[k];
    for (k = axis + 1; k < nd; k++)
        inner *= (size_t)dims[k];
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            size_t base = o * (size_t)dims[axis] * inner + i;
            double mx = -INFINITY, sum = 0;

            for (c = 0; c < (size_t)dims[axis]; c++)
                mx = fmax(mx, src[base + c * inner]);
            for (c = 0; c < (size_t)dims[axis]; c++)
                sum += exp(src[base + c * inner] - mx);
            for (c = 0; c < (size_t)dims[axis]; c++) {
                double x = src[base + c * inner] - mx;

                want[base + c * inner] =
                    (float)(log_ ? x - log(sum) : exp(x) / sum);
            }
        }
    if (!ok(ss_dnn_softmax_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    if (run(p, in, in_place ? src : out) == 0)
        check_close(in_place ? src : out, want, n, name);
    else
        ok(0, "%s: run", name);
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(out);
    ss_free(want);
}

static void
test_softmax(void)
{
    int64_t d3[3] = { 4, 9, 6 }, d4[4] = { 2, 4, 10, 10 };

    softmax_case("softmax middle axis", 3, d3, 1, 0, 0);
    softmax_case("softmax last axis, in place", 4, d4, 3, 0, 1);
    softmax_case("logsoftmax last axis", 3, d3, 2, 1, 0);
    softmax_case("logsoftmax first axis", 3, d3, 0, 1, 0);
}

static void
layernorm_case(const char *name, int nd, const int64_t *dims, int affine,
               float eps)
{
    ss_dnn_layernorm_desc_t d = { .ndim = nd, .eps = eps };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    size_t n = numel(nd, dims), c = (size_t)dims[nd - 1], r, j;
    float *src = rnd(n), *out = rnd(n), *want = zeros(n);
    float *gamma = rnd(c), *beta = rnd(c);
    const void *in[1] = { src };

    memcpy(d.dims, dims, (size_t)nd * sizeof(*dims));
    d.gamma = affine ? gamma : NULL;
    d.beta = affine ? beta : NULL;
    for (r = 0; r < n / c; r++) {
        const float *x = src + r * c;
        double mean = 0, var = 0;

        for (j = 0; j < c; j++)
            mean += x[j];
        mean /= (double)c;
        for (j = 0; j < c; j++)
            var += (x[j] - mean) * (x[j] - mean);
        var /= (double)c;
        for (j = 0; j < c; j++) {
            double y = (x[j] - mean) / sqrt(var + eps);

            if (affine)
                y = y * gamma[j] + beta[j];
            want[r * c + j] = (float)y;
        }
    }
    if (!ok(ss_dnn_layernorm_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    if (run(p, in, out) == 0)
        check_close(out, want, n, name);
    else
        ok(0, "%s: run", name);
done:
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(out);
    ss_free(want);
    ss_free(gamma);
    ss_free(beta);
}

static void
test_layernorm(void)
{
    int64_t d3[3] = { 3, 7, 64 }, d2[2] = { 5, 33 };

    layernorm_case("layernorm [3,7,64] gamma/beta", 3, d3, 1, 1e-5f);
    layernorm_case("layernorm [5,33] no affine, eps 1e-3", 2, d2, 0, 1e-3f);
}

static void
test_eltwise(void)
{
    static const struct {
        int alg;
        float a, b;
        const char *name;
        int positive;
    } c[] = {
        { SS_DNN_RELU, 0.f, 0.f, "relu", 0 },
        { SS_DNN_RELU, 0.01f, 0.f, "leaky relu", 0 },
        { SS_DNN_GELU_ERF, 0.f, 0.f, "gelu erf", 0 },
        { SS_DNN_GELU_TANH, 0.f, 0.f, "gelu tanh", 0 },
        { SS_DNN_TANH, 0.f, 0.f, "tanh", 0 },
        { SS_DNN_LOGISTIC, 0.f, 0.f, "sigmoid", 0 },
        { SS_DNN_CLIP, -0.3f, 0.4f, "clip", 0 },
        { SS_DNN_EXP, 0.f, 0.f, "exp", 0 },
        { SS_DNN_LOG, 0.f, 0.f, "log", 1 },
        { SS_DNN_SQRT, 0.f, 0.f, "sqrt", 1 },
        { SS_DNN_ABS, 0.f, 0.f, "abs", 0 },
        { SS_DNN_SQUARE, 0.f, 0.f, "square", 0 },
        { SS_DNN_LINEAR, -1.f, 0.f, "neg (linear)", 0 },
        { SS_DNN_POW, 1.f, 3.f, "pow 3", 0 },
        { SS_DNN_ELU, 0.7f, 0.f, "elu", 0 },
        { SS_DNN_SWISH, 1.f, 0.f, "swish", 0 },
        { SS_DNN_SOFT_RELU, 0.f, 0.f, "softplus", 0 },
        { SS_DNN_HARDSWISH, 0.f, 0.f, "hardswish", 0 },
    };
    const size_t n = 1000;
    size_t i, j;

    for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        ss_dnn_eltwise_desc_t d = { .numel = (int64_t)n, .alg = c[i].alg,
                                    .alpha = c[i].a, .beta = c[i].b };
        ss_dnn_prim_t *p = NULL;
        float *src = rnd(n), *want = zeros(n);
        const void *in[1] = { src };

        for (j = 0; j < n; j++) {
            src[j] *= 3.f;
            if (c[i].positive)
                src[j] = fabsf(src[j]) + 0.01f;
            want[j] = ref_eltwise(c[i].alg, src[j], c[i].a, c[i].b);
        }
        if (!ok(ss_dnn_eltwise_new(&d, &p, NULL) == 0, "eltwise %s: create",
                c[i].name))
            continue;
        /* In place: out == in[0] is allowed for eltwise. */
        if (run(p, in, src) == 0)
            check_close(src, want, n, c[i].name);
        else
            ok(0, "eltwise %s: run", c[i].name);
        ss_dnn_prim_free(p);
        ss_free(src);
        ss_free(want);
    }
}

static void
binary_case(const char *name, int alg, int an, const int64_t *ad, int bn,
            const int64_t *bd, const ss_dnn_postops_t *po)
{
    ss_dnn_binary_desc_t d = { .alg = alg, .a_ndim = an, .b_ndim = bn };
    ss_dnn_prim_t *p = NULL;
    ss_err_t err = { 0 };
    size_t n = numel(an, ad), nb = numel(bn, bd), i;
    float *a = rnd(n), *b = rnd(nb), *out = rnd(n), *want = zeros(n);
    float *bin[SS_DNN_MAX_POST];
    const void *in[2 + SS_DNN_MAX_POST] = { a, b };
    int64_t be[SS_DNN_MAX_DIMS];
    int k, nbin = 0;

    memcpy(d.a_dims, ad, (size_t)an * sizeof(*ad));
    memcpy(d.b_dims, bd, (size_t)bn * sizeof(*bd));
    if (po)
        d.post = *po;
    for (k = 0; k < d.post.n; k++)
        if (d.post.op[k].kind == SS_DNN_PO_BINARY) {
            bin[nbin] = rnd(numel(d.post.op[k].ndim, d.post.op[k].dims));
            in[2 + nbin] = bin[nbin];
            nbin++;
        }
    if (alg == SS_DNN_DIV)
        for (i = 0; i < nb; i++)
            b[i] = b[i] < 0 ? b[i] - 0.5f : b[i] + 0.5f;
    expand_dims(an, bn, bd, be);
    for (i = 0; i < n; i++)
        want[i] = ref_binary(alg, a[i], b[bcast_index(i, an, ad, be)]);
    ref_post(want, an, ad, &d.post, (const float *const *)bin, NULL);
    if (!ok(ss_dnn_binary_new(&d, &p, &err) == 0, "%s: create", name)) {
        printf("#   %s\n", err.msg);
        goto done;
    }
    is_int(ss_dnn_prim_num_inputs(p), 2 + nbin, "%s: inputs", name);
    if (run(p, in, out) == 0)
        check_close(out, want, n, name);
    else
        ok(0, "%s: run", name);
done:
    ss_dnn_prim_free(p);
    for (k = 0; k < nbin; k++)
        ss_free(bin[k]);
    ss_free(a);
    ss_free(b);
    ss_free(out);
    ss_free(want);
}

static void
test_binary(void)
{
    int64_t a[4] = { 2, 3, 4, 5 }, b[3] = { 3, 1, 5 }, one[1] = { 1 };
    int64_t row[1] = { 5 }, col[4] = { 2, 1, 4, 1 };
    ss_dnn_postops_t po = { 0 };

    binary_case("add same shape", SS_DNN_ADD, 4, a, 4, a, NULL);
    binary_case("sub broadcast [3,1,5]", SS_DNN_SUB, 4, a, 3, b, NULL);
    binary_case("mul by scalar", SS_DNN_MUL, 4, a, 1, one, NULL);
    binary_case("div broadcast [2,1,4,1]", SS_DNN_DIV, 4, a, 4, col, NULL);
    binary_case("max by row", SS_DNN_MAX, 4, a, 1, row, NULL);
    binary_case("min same shape", SS_DNN_MIN, 4, a, 4, a, NULL);
    po.n = 2;
    po.op[0] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    po.op[1] = po_bin(SS_DNN_MUL, 1, row);
    binary_case("add + relu + mul[5] post-ops", SS_DNN_ADD, 4, a, 3, b, &po);
}

static void
test_reorder(void)
{
    /* Transpose [2,3,4,5] by perm (0,2,1,3): output dims [2,4,3,5]. */
    int64_t in_d[4] = { 2, 3, 4, 5 }, out_d[4] = { 2, 4, 3, 5 };
    int64_t in_s[4] = { 60, 20, 5, 1 }, perm[4] = { 0, 2, 1, 3 };
    ss_dnn_reorder_desc_t d = { .ndim = 4 };
    int64_t ss[4];
    ss_dnn_prim_t *p = NULL;
    size_t n = numel(4, in_d), i;
    float *src = rnd(n), *out = rnd(n), *want = zeros(n);
    const void *in[1] = { src };
    int k;

    for (k = 0; k < 4; k++)
        ss[k] = in_s[perm[k]];
    memcpy(d.dims, out_d, sizeof(out_d));
    d.src_strides = ss;
    for (i = 0; i < n; i++) {
        size_t r = i, off = 0;

        for (k = 3; k >= 0; k--) {
            off += (r % (size_t)out_d[k]) * (size_t)ss[k];
            r /= (size_t)out_d[k];
        }
        want[i] = src[off];
    }
    if (ok(ss_dnn_reorder_new(&d, &p, NULL) == 0, "transpose: create") &&
        run(p, in, out) == 0)
        check_close(out, want, n, "transpose (0,2,1,3) via reorder");
    else
        ok(0, "transpose: run");
    ss_dnn_prim_free(p);
    ss_free(src);
    ss_free(out);
    ss_free(want);
}

/* The same chain run plain and BLOCKED: conv(3->16, plain in, blocked
 * out) -> conv(16->32) + residual add + relu -> maxpool -> per-channel mul
 * -> reorder back to NCHW.  Both must agree with each other. */
static void
mk(int rc, const char *name, ss_err_t *err)
{
    if (!ok(rc == 0, "blocked chain: create %s", name))
        printf("#   %s\n", err->msg);
}

static void
test_blocked(void)
{
    ss_dnn_conv_desc_t c1 = { .n = 2, .ic = 3, .ih = 10, .iw = 10, .oc = 16,
                              .kh = 3, .kw = 3, .pad_begin = { 1, 1 },
                              .pad_end = { 1, 1 } };
    ss_dnn_conv_desc_t c2 = { .n = 2, .ic = 16, .ih = 10, .iw = 10,
                              .oc = 32, .kh = 3, .kw = 3,
                              .pad_begin = { 1, 1 }, .pad_end = { 1, 1 } };
    ss_dnn_pool_desc_t pl = { .alg = SS_DNN_POOL_MAX, .n = 2, .c = 32,
                              .ih = 10, .iw = 10, .kernel = { 2, 2 },
                              .stride = { 2, 2 } };
    int64_t y2[4] = { 2, 32, 10, 10 }, y3[4] = { 2, 32, 5, 5 };
    int64_t ch[4] = { 1, 32, 1, 1 };
    ss_dnn_binary_desc_t bm = { .alg = SS_DNN_MUL, .a_ndim = 4,
                                .b_ndim = 4 };
    ss_dnn_reorder_desc_t rb = { .ndim = 4, .dst_layout = SS_DNN_BLOCKED };
    ss_dnn_reorder_desc_t ru = { .ndim = 4, .src_layout = SS_DNN_BLOCKED };
    ss_dnn_prim_t *p[2][4] = { { NULL } }, *to_b = NULL, *to_p = NULL;
    ss_err_t err = { 0 };
    float *x = rnd(2 * 3 * 100), *w1 = rnd(16 * 3 * 9), *w2 = rnd(32 * 16 * 9);
    float *b1 = rnd(16), *b2 = rnd(32), *res = rnd(2 * 32 * 100);
    float *resb = rnd(2 * 32 * 100), *scale = rnd(32);
    float *t1 = rnd(2 * 16 * 100), *t2 = rnd(2 * 32 * 100);
    float *t3 = rnd(2 * 32 * 25), *t4 = rnd(2 * 32 * 25);
    float *outp = rnd(2 * 32 * 25), *outb = rnd(2 * 32 * 25);
    int l, ok_all = 1;

    memcpy(bm.a_dims, y3, sizeof(y3));
    memcpy(bm.b_dims, ch, sizeof(ch));
    memcpy(rb.dims, y2, sizeof(y2));
    memcpy(ru.dims, y3, sizeof(y3));
    c1.w = w1;
    c1.bias = b1;
    c2.w = w2;
    c2.bias = b2;
    c2.post.n = 2;
    c2.post.op[0] = po_bin(SS_DNN_ADD, 4, y2);
    c2.post.op[1] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    for (l = 0; l < 2; l++) {
        c1.dst_layout = c2.src_layout = c2.dst_layout = pl.layout =
            bm.layout = l ? SS_DNN_BLOCKED : SS_DNN_PLAIN;
        mk(ss_dnn_conv_new(&c1, &p[l][0], &err), "conv1", &err);
        mk(ss_dnn_conv_new(&c2, &p[l][1], &err), "conv2", &err);
        mk(ss_dnn_pool_new(&pl, &p[l][2], &err), "pool", &err);
        mk(ss_dnn_binary_new(&bm, &p[l][3], &err), "mul", &err);
    }
    mk(ss_dnn_reorder_new(&rb, &to_b, &err), "to blocked", &err);
    mk(ss_dnn_reorder_new(&ru, &to_p, &err), "to plain", &err);
    if (!to_b || !to_p || !p[0][3] || !p[1][3] || !p[0][1] || !p[1][1] ||
        !p[0][0] || !p[1][0] || !p[0][2] || !p[1][2])
        goto done;
    for (l = 0; l < 2; l++) {
        const void *i0[1] = { x }, *i1[2] = { t1, l ? resb : res };
        const void *i2[1] = { t2 }, *i3[2] = { t3, scale };

        if (l)
            ok_all &= run(to_b, (const void *const[]){ res }, resb) == 0;
        ok_all &= run(p[l][0], i0, t1) == 0;
        ok_all &= run(p[l][1], i1, t2) == 0;
        ok_all &= run(p[l][2], i2, t3) == 0;
        ok_all &= run(p[l][3], i3, l ? t4 : outp) == 0;
        if (l)
            ok_all &= run(to_p, (const void *const[]){ t4 }, outb) == 0;
        tap_diag("chain %s: conv2 %s, pool %s", l ? "blocked" : "plain",
                 ss_dnn_prim_impl(p[l][1]), ss_dnn_prim_impl(p[l][2]));
    }
    ok(ok_all, "blocked chain: runs");
    check_close(outb, outp, 2 * 32 * 25, "blocked chain == plain chain");
    /* what the plan's layout pass asks each object */
    ok(ss_dnn_prim_layout(p[1][0], 0) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(p[1][0], -1) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(p[1][1], 0) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(p[1][1], 1) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(p[1][2], -1) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(p[1][3], 0) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(p[1][3], 1) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(p[1][3], 5) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(to_b, 0) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(to_b, -1) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(to_p, 0) == SS_DNN_BLOCKED
       && ss_dnn_prim_layout(to_p, -1) == SS_DNN_PLAIN,
       "prim_layout: blocked objects report their blocked arguments");
    ok(ss_dnn_prim_layout(p[0][1], 0) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(p[0][1], 1) == SS_DNN_PLAIN
       && ss_dnn_prim_layout(p[0][1], -1) == SS_DNN_PLAIN,
       "prim_layout: plain objects report plain");
done:
    for (l = 0; l < 8; l++)
        ss_dnn_prim_free(p[l / 4][l % 4]);
    ss_dnn_prim_free(to_b);
    ss_dnn_prim_free(to_p);
    ss_free(x);
    ss_free(w1);
    ss_free(w2);
    ss_free(b1);
    ss_free(b2);
    ss_free(res);
    ss_free(resb);
    ss_free(scale);
    ss_free(t1);
    ss_free(t2);
    ss_free(t3);
    ss_free(t4);
    ss_free(outp);
    ss_free(outb);
}

/* A blocked 3x3 stride-1 conv with a residual add and relu, the shape of
 * a ResNet block's second conv, built twice: as the layer picks it
 * (Winograd where oneDNN has a kernel: the add becomes a SUM post-op over
 * a copy of the residual in dst) and with SS_ENGINE_NO_WINOGRAD=1
 * (direct).  Both against the naive loops, through reorders. */
static void
test_wino(void)
{
    ss_dnn_conv_desc_t c = { .n = 2, .ic = 32, .ih = 14, .iw = 14, .oc = 32,
                             .kh = 3, .kw = 3, .pad_begin = { 1, 1 },
                             .pad_end = { 1, 1 },
                             .src_layout = SS_DNN_BLOCKED,
                             .dst_layout = SS_DNN_BLOCKED };
    int64_t yd[4] = { 2, 32, 14, 14 };
    size_t n = (size_t)numel(4, yd);
    ss_dnn_reorder_desc_t rb = { .ndim = 4, .dst_layout = SS_DNN_BLOCKED };
    ss_dnn_reorder_desc_t ru = { .ndim = 4, .src_layout = SS_DNN_BLOCKED };
    ss_dnn_prim_t *conv[2] = { NULL, NULL }, *to_b = NULL, *to_p = NULL;
    ss_err_t err = { 0 };
    float *x = rnd(n), *w = rnd(32 * 32 * 9), *b = rnd(32), *res = rnd(n);
    float *xb = rnd(n), *resb = rnd(n), *resb0 = rnd(n), *yb = rnd(n);
    float *y = rnd(n), *want = zeros(n);
    const float *bin[1] = { res };
    int k;

    memcpy(rb.dims, yd, sizeof(yd));
    memcpy(ru.dims, yd, sizeof(yd));
    c.w = w;
    c.bias = b;
    c.post.n = 2;
    c.post.op[0] = po_bin(SS_DNN_ADD, 4, yd);
    c.post.op[1] = po_elt(SS_DNN_RELU, 0.f, 0.f);
    ref_conv(&c, x, w, want, 14, 14);
    ref_post(want, 4, yd, &c.post, bin, NULL);
    mk(ss_dnn_reorder_new(&rb, &to_b, &err), "to blocked", &err);
    mk(ss_dnn_reorder_new(&ru, &to_p, &err), "to plain", &err);
    mk(ss_dnn_conv_new(&c, &conv[0], &err), "conv", &err);
    setenv("SS_ENGINE_NO_WINOGRAD", "1", 1);
    mk(ss_dnn_conv_new(&c, &conv[1], &err), "direct conv", &err);
    unsetenv("SS_ENGINE_NO_WINOGRAD");
    if (!to_b || !to_p || !conv[0] || !conv[1])
        goto done;
    ok(run(to_b, (const void *const[]){ x }, xb) == 0
       && run(to_b, (const void *const[]){ res }, resb) == 0,
       "wino: inputs to nChw16c");
    memcpy(resb0, resb, n * sizeof(float));
    ok(strstr(ss_dnn_prim_impl(conv[1]), "wino") == NULL,
       "wino: SS_ENGINE_NO_WINOGRAD=1 keeps the direct kernel (%s)",
       ss_dnn_prim_impl(conv[1]));
    for (k = 0; k < 2; k++) {
        const char *impl = ss_dnn_prim_impl(conv[k]);

        tap_diag("wino: conv %d: %s", k, impl);
        ok(ss_dnn_prim_num_inputs(conv[k]) == 2
           && ss_dnn_prim_layout(conv[k], 1) == SS_DNN_BLOCKED,
           "wino %s: reads the residual as in[1], nChw16c", impl);
        ok(run(conv[k], (const void *const[]){ xb, resb }, yb) == 0
           && run(to_p, (const void *const[]){ yb }, y) == 0,
           "wino %s: runs", impl);
        check_close(y, want, n, impl);
        ok(memcmp(resb, resb0, n * sizeof(float)) == 0,
           "wino %s: the residual is left as it was", impl);
    }
done:
    for (k = 0; k < 2; k++)
        ss_dnn_prim_free(conv[k]);
    ss_dnn_prim_free(to_b);
    ss_dnn_prim_free(to_p);
    ss_free(x);
    ss_free(w);
    ss_free(b);
    ss_free(res);
    ss_free(xb);
    ss_free(resb);
    ss_free(resb0);
    ss_free(yb);
    ss_free(y);
    ss_free(want);
}

int
main(void)
{
    if (ss_dnn_stream_new(0, &test_stream, NULL) < 0) {
        ok(0, "stream");
        return tap_done();
    }
    test_conv();
    test_pool();
    test_pool8();
    test_softmax();
    test_layernorm();
    test_eltwise();
    test_binary();
    test_reorder();
    test_blocked();
    test_wino();
    ss_dnn_stream_free(test_stream);
    return tap_done();
}
