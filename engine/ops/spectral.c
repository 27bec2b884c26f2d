/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DFT, STFT and MelWeightMatrix (opset 17), as plain C reference kernels:
 * the spectral front end of audio models (a log-mel spectrogram is STFT,
 * a magnitude, a MatMul by MelWeightMatrix, a Log).
 *
 * DESIGN.  Complex tensors are real ones with a last dim of 2 (real,
 * imaginary); a last dim of 1 is a real signal.  DFT transforms along
 * `axis` (default 1; the batch is axis 0 and the last dim is the complex
 * pair, so neither can be it), zero-padding or truncating the signal to
 * dft_length when given; `inverse` conjugates the kernel and divides by
 * the length; `onesided` keeps bins 0 .. n/2, which is all of a real
 * signal's spectrum.  STFT cuts [batch, length, 1|2] into frames of
 * frame_length (the window's length when there is a window) every
 * frame_step samples, 1 + (length - frame_length) / frame_step of them,
 * multiplies each by the window and transforms it (onesided by default).
 * Both are direct sums over a table of the n roots of unity (index j*k
 * mod n, so each root is computed once, exactly as cos/sin give it),
 * accumulated in double: O(n) per bin, which for the frame lengths audio
 * models use (400-1024) costs less than the model after it; a transform
 * of a long signal is an FFT's job and is not what models do.
 *
 * MelWeightMatrix builds the [dft_length/2 + 1, num_mel_bins] triangle
 * filter bank as ONNX defines it (mel = 2595 log10(1 + f/700); the bins'
 * edges are num_mel_bins + 2 points evenly spaced in mel over
 * (num_mel_bins + 2) steps, mapped to spectrogram bins by
 * floor((dft_length + 1) * f / sample_rate)).  Its shape comes from
 * num_mel_bins and dft_length, so those must be constants.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

/* The largest transform length: far above any frame a model uses, and
 * small enough that n * n index products fit comfortably. */
#define MAX_N ((int64_t)1 << 24)

/* The n roots of unity exp(-2 pi i k / n), as cos and sin tables. */
static int
roots(int64_t n, double **c, double **s, ss_err_t *err)
{
    *c = ss_malloc(sizeof(double) * (size_t)n);
    *s = ss_malloc(sizeof(double) * (size_t)n);
    if (*c == NULL || *s == NULL) {
        ss_free(*c);
        ss_free(*s);
        *c = *s = NULL;
        return ss_err_set(err, SS_ENOMEM, "no memory for a DFT of %lld",
                          (long long)n);
    }
    for (int64_t k = 0; k < n; k++) {
        double a = 2 * M_PI * (double)k / (double)n;

        (*c)[k] = cos(a);
        (*s)[k] = -sin(a);
    }
    return 0;
}

/* One transform: in (len complex values, stride istride in complex
 * units, imaginary part present when cplx) zero-padded or cut to n;
 * writes bins [0, bins) to out (stride ostride pairs).  w (len values or
 * NULL) weights the input. */
typedef struct {
    const void *x;
    ss_dtype_t dt;
    int64_t base, istride, len;
    bool cplx;
    const double *w;
} sig_t;

static void
transform(const sig_t *sg, int64_t n, bool inverse, const double *c,
          const double *s, void *out, ss_dtype_t odt, int64_t obase,
          int64_t ostride, int64_t bins)
{
    int64_t m = sg->len < n ? sg->len : n;
    int cw = sg->cplx ? 2 : 1;

    for (int64_t k = 0; k < bins; k++) {
        double re = 0, im = 0;

        for (int64_t j = 0, r = 0; j < m; j++) {
            int64_t at = (sg->base + j * sg->istride) * cw;
            double a = ss__dyn_get(sg->x, sg->dt, at);
            double b = sg->cplx ? ss__dyn_get(sg->x, sg->dt, at + 1) : 0;
            double cr = c[r], ci = inverse ? -s[r] : s[r];

            if (sg->w != NULL) {
                a *= sg->w[j];
                b *= sg->w[j];
            }
            re += a * cr - b * ci;
            im += a * ci + b * cr;
            r += k;                     /* r = j * k mod n */
            if (r >= n)
                r %= n;
        }
        if (inverse) {
            re /= (double)n;
            im /= (double)n;
        }
        ss__dyn_set(out, odt, (obase + k * ostride) * 2, re);
        ss__dyn_set(out, odt, (obase + k * ostride) * 2 + 1, im);
    }
}

static int
check_signal(const ss_node_t *n, const ss_tensor_t *x, int min_rank,
             ss_err_t *err)
{
    if (x->dtype != SS_DTYPE_F32 && x->dtype != SS_DTYPE_F64)
        return ss__ops_failc(err, SS_EUNSUPP, n, "the signal must be float32 "
                             "or float64, not %s",
                             ss__ops_dtype_name(x->dtype));
    if (x->ndim < min_rank || (x->dims[x->ndim - 1] != 1
                               && x->dims[x->ndim - 1] != 2))
        return ss__ops_fail(err, n, "the signal must be [batch, ..., 1 or 2] "
                            "of rank >= %d", min_rank);
    return 0;
}

/* A length-like scalar input: a constant in [1, MAX_N]. */
static int
read_len(const ss_node_t *n, const ss_tensor_t *t, const char *what,
         int64_t *v, ss_err_t *err)
{
    double d;
    int rc;

    if ((rc = ss__ops_read_scalar(n, t, what, &d, err)) < 0)
        return rc;
    if (!(d >= 1 && d <= (double)MAX_N) || d != floor(d))
        return ss__ops_fail(err, n, "%s must be an integer in [1, %lld], not "
                            "%g", what, (long long)MAX_N, d);
    *v = (int64_t)d;
    return 0;
}

/* ---- DFT ----------------------------------------------------------------- */

typedef struct {
    int axis;
    int64_t n, bins;
    bool inverse;
} dft_t;

static int
dft_params(const ss_node_t *n, const ss_tensor_t *const *in, dft_t *d,
           ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *len = ss__ops_opt_input(n, in, 1);
    int64_t axis = ss__attr_int(n, "axis", 1);
    int rc;

    if ((rc = check_signal(n, x, 3, err)) < 0)
        return rc;
    if (axis < 0)
        axis += x->ndim;
    if (axis < 1 || axis > x->ndim - 2)
        return ss__ops_fail(err, n, "axis %lld is the batch, the complex "
                            "pair or outside rank %d",
                            (long long)ss__attr_int(n, "axis", 1), x->ndim);
    d->axis = (int)axis;
    d->n = x->dims[axis];
    if (len != NULL && (rc = read_len(n, len, "dft_length", &d->n, err)) < 0)
        return rc;
    if (d->n < 1 || d->n > MAX_N)
        return ss__ops_fail(err, n, "the transform length %lld is outside "
                            "[1, %lld]", (long long)d->n, (long long)MAX_N);
    d->inverse = ss__attr_int(n, "inverse", 0) != 0;
    d->bins = ss__attr_int(n, "onesided", 0) != 0 ? d->n / 2 + 1 : d->n;
    return 0;
}

static int
infer_dft(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    dft_t d;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0
        || (rc = dft_params(n, in, &d, err)) < 0)
        return rc;
    memcpy(dims, in[0]->dims, sizeof(int64_t) * (size_t)in[0]->ndim);
    dims[d.axis] = d.bins;
    dims[in[0]->ndim - 1] = 2;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, dims, err);
}

static int
run_dft(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    int64_t outer, inner, len;
    double *c = NULL, *s = NULL;
    dft_t d;
    int rc;

    (void)opset;
    if ((rc = dft_params(n, in, &d, err)) < 0
        || (rc = roots(d.n, &c, &s, err)) < 0)
        return rc;
    len = x->dims[d.axis];
    outer = ss__ops_prod(x->dims, 0, d.axis);
    inner = ss__ops_prod(x->dims, d.axis + 1, x->ndim - 1);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            sig_t sg = { x->data, x->dtype, o * len * inner + i, inner, len,
                         x->dims[x->ndim - 1] == 2, NULL };

            transform(&sg, d.n, d.inverse, c, s, out[0].data, out[0].dtype,
                      o * d.bins * inner + i, inner, d.bins);
        }
    ss_free(c);
    ss_free(s);
    return 0;
}

/* ---- STFT ---------------------------------------------------------------- */

typedef struct {
    int64_t step, fl, frames, bins;
} stft_t;

static int
stft_params(const ss_node_t *n, const ss_tensor_t *const *in, stft_t *p,
            ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *w = ss__ops_opt_input(n, in, 2);
    const ss_tensor_t *fl = ss__ops_opt_input(n, in, 3);
    int rc;

    if ((rc = check_signal(n, x, 3, err)) < 0)
        return rc;
    if (x->ndim != 3)
        return ss__ops_fail(err, n, "the signal must be [batch, length, 1 or "
                            "2], not rank %d", x->ndim);
    if ((rc = read_len(n, in[1], "frame_step", &p->step, err)) < 0)
        return rc;
    p->fl = x->dims[1];
    if (w != NULL) {
        if (w->ndim != 1 || !ss__dyn_is_float(w->dtype))
            return ss__ops_fail(err, n, "window must be a 1-D float tensor");
        p->fl = w->dims[0];
    }
    if (fl != NULL) {
        int64_t v;

        if ((rc = read_len(n, fl, "frame_length", &v, err)) < 0)
            return rc;
        if (w != NULL && v != p->fl)
            return ss__ops_fail(err, n, "frame_length %lld differs from the "
                                "window's %lld", (long long)v,
                                (long long)p->fl);
        p->fl = v;
    }
    if (p->fl < 1 || p->fl > MAX_N || p->fl > x->dims[1])
        return ss__ops_fail(err, n, "frame length %lld does not fit the "
                            "signal's %lld samples", (long long)p->fl,
                            (long long)x->dims[1]);
    p->frames = 1 + (x->dims[1] - p->fl) / p->step;
    p->bins = ss__attr_int(n, "onesided", 1) != 0 ? p->fl / 2 + 1 : p->fl;
    return 0;
}

static int
infer_stft(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[4];
    stft_t p;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = stft_params(n, in, &p, err)) < 0)
        return rc;
    dims[0] = in[0]->dims[0];
    dims[1] = p.frames;
    dims[2] = p.bins;
    dims[3] = 2;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, 4, dims, err);
}

static int
run_stft(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *w = ss__ops_opt_input(n, in, 2);
    double *c = NULL, *s = NULL, *win = NULL;
    stft_t p;
    int rc;

    (void)opset;
    if ((rc = stft_params(n, in, &p, err)) < 0
        || (rc = roots(p.fl, &c, &s, err)) < 0)
        return rc;
    if (w != NULL) {
        if ((win = ss_malloc(sizeof(double) * (size_t)p.fl)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for STFT's window");
            goto done;
        }
        for (int64_t j = 0; j < p.fl; j++)
            win[j] = ss__dyn_get(w->data, w->dtype, j);
    }
    for (int64_t b = 0; b < x->dims[0]; b++)
        for (int64_t f = 0; f < p.frames; f++) {
            sig_t sg = { x->data, x->dtype, b * x->dims[1] + f * p.step, 1,
                         p.fl, x->dims[2] == 2, win };

            transform(&sg, p.fl, false, c, s, out[0].data, out[0].dtype,
                      (b * p.frames + f) * p.bins, 1, p.bins);
        }
done:
    ss_free(win);
    ss_free(c);
    ss_free(s);
    return rc;
}

/* ---- MelWeightMatrix ----------------------------------------------------- */

typedef struct {
    int64_t mels, dft, rate;
    double lo, hi;
} mel_t;

static int
mel_params(const ss_node_t *n, const ss_tensor_t *const *in, bool values,
           mel_t *m, ss_err_t *err)
{
    double v;
    int rc;

    if ((rc = read_len(n, in[0], "num_mel_bins", &m->mels, err)) < 0
        || (rc = read_len(n, in[1], "dft_length", &m->dft, err)) < 0)
        return rc;
    if (m->mels > (1 << 16))
        return ss__ops_fail(err, n, "num_mel_bins %lld is over 65536",
                            (long long)m->mels);
    if (!values)
        return 0;
    if ((rc = ss__ops_read_scalar(n, in[2], "sample_rate", &v, err)) < 0)
        return rc;
    if (!(v >= 1 && v <= 1e9))
        return ss__ops_fail(err, n, "sample_rate must be in [1, 1e9], not "
                            "%g", v);
    m->rate = (int64_t)v;
    if ((rc = ss__ops_read_scalar(n, in[3], "lower_edge_hertz", &m->lo,
                                  err)) < 0
        || (rc = ss__ops_read_scalar(n, in[4], "upper_edge_hertz", &m->hi,
                                     err)) < 0)
        return rc;
    if (!(m->lo >= 0 && m->hi > m->lo && m->hi <= 1e9))
        return ss__ops_fail(err, n, "the edges must be 0 <= lower < upper, "
                            "not %g and %g", m->lo, m->hi);
    return 0;
}

static int
infer_mel(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    ss_dtype_t t = (ss_dtype_t)ss__attr_int(n, "output_datatype",
                                            SS_DTYPE_F32);
    int64_t dims[2];
    mel_t m;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 5, err)) < 0
        || (rc = mel_params(n, in, false, &m, err)) < 0)
        return rc;
    if (!ss__dyn_is_float(t))
        return ss__ops_failc(err, SS_EUNSUPP, n, "output_datatype %d is not "
                             "a float type", (int)t);
    dims[0] = m.dft / 2 + 1;
    dims[1] = m.mels;
    return ss__ops_set_out(n, &out[0], t, 2, dims, err);
}

static int
run_mel(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    int64_t nb, *edge;
    double lm, step;
    mel_t m;
    int rc;

    (void)opset;
    if ((rc = mel_params(n, in, true, &m, err)) < 0)
        return rc;
    nb = m.dft / 2 + 1;
    if ((edge = ss_malloc(sizeof(int64_t) * (size_t)(m.mels + 2))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for MelWeightMatrix");
    lm = 2595 * log10(1 + m.lo / 700);
    step = (2595 * log10(1 + m.hi / 700) - lm) / (double)(m.mels + 2);
    for (int64_t i = 0; i < m.mels + 2; i++) {
        double hz = 700 * (pow(10, ((double)i * step + lm) / 2595) - 1);

        edge[i] = (int64_t)floor((double)(m.dft + 1) * hz / (double)m.rate);
        if (edge[i] < 0 || edge[i] >= nb) {
            rc = ss__ops_fail(err, n, "mel edge %lld falls on spectrogram "
                              "bin %lld, outside [0, %lld): the upper edge "
                              "is above the Nyquist frequency",
                              (long long)i, (long long)edge[i],
                              (long long)nb);
            goto done;
        }
    }
    for (int64_t k = 0; k < nb * m.mels; k++)
        ss__dyn_set(out[0].data, out[0].dtype, k, 0);
    for (int64_t i = 0; i < m.mels; i++) {
        int64_t l = edge[i], c = edge[i + 1], h = edge[i + 2];

        if (c == l)
            ss__dyn_set(out[0].data, out[0].dtype, c * m.mels + i, 1);
        for (int64_t j = l; c > l && j <= c; j++)
            ss__dyn_set(out[0].data, out[0].dtype, j * m.mels + i,
                        (double)(j - l) / (double)(c - l));
        for (int64_t j = c; h > c && j < h; j++)
            ss__dyn_set(out[0].data, out[0].dtype, j * m.mels + i,
                        (double)(h - j) / (double)(h - c));
    }
done:
    ss_free(edge);
    return rc;
}

const ss_op_t ss__ops_spectral[] = {
    { "DFT", infer_dft, run_dft },
    { "STFT", infer_stft, run_stft },
    { "MelWeightMatrix", infer_mel, run_mel },
    { NULL, NULL, NULL }
};
