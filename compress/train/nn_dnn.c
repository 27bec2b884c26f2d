/* SPDX-License-Identifier: Apache-2.0 */
/*
 * BatchNorm (batch statistics), Relu, Gelu and pooling on oneDNN's training
 * primitives (engine/dnnl/dnnl_train_nn.c) instead of the trainer's
 * portable-C kernels of kern*.c.
 *
 * Why: with the convolutions blocked, the C kernels of these ops were
 * the larger part of a CNN step (the fixture's, one thread: about 1.5 of
 * 2.6 ms), and they cost as much in bf16 as in f32, which kept bf16
 * training near 1.1x f32.  oneDNN runs them with jit kernels in the
 * activations' own layout (NCHW, nChw16c, NHWC), with no reorder.
 *
 * The rules (rules_*.c) build their C step as before and hand it here:
 * when the value is one oneDNN can take (4-D f32 in one of the three
 * layouts) and opts.nn asks for it (by default: Relu and max pooling
 * always, their results are exact; BatchNorm and average pooling, which
 * sum, in bf16 only: see ss_train_nn_t) the step gets a primitive and
 * one of the kernels below; else it stays as it was.  What the C kernels keep:
 * frozen BatchNorm statistics (SS_BN_FROZEN), the forward-only pass on
 * running statistics (t->infer_bn: ss__k_bn_dnn calls the C kernel),
 * other unary functions.
 *
 * Numerics: oneDNN sums BatchNorm's statistics and gradients in f32 (the
 * C kernels in double) and its batch variance is the biased one, which
 * is what normalization uses; the running variance gets the unbiased
 * one, as PyTorch keeps it.  tests/unit/test_train_nn_dnn compares the
 * two paths.
 *
 * THREADS: [worker]; kernels use oneDNN's threads inside one call.
 */

#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/kern.h"

/* Where a destination that may be absent or added to is written first:
 * dst itself, or the kernels' scratch (numel floats: room for either
 * dtype). */
static float *
dst_or_tmp(ss__tr_t *t, float *dst, int acc, int64_t numel)
{
    if (dst != NULL && !acc)
        return dst;
    return (float *)ss__kbuf(t, (size_t)(numel + 1) / 2);
}

/* ---- kernels --------------------------------------------------------------- */

/* A primitive that reads in[0..n_in) and then writes out[1..n_out) as
 * its further in[] slots (a pooling workspace) and its destination
 * out[0] (adding into it when ACC(0)). */
int
ss__k_dnn_x(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    const void *in[SS__STEP_IN + SS__STEP_OUT];
    const ss__tv_t *y = &t->tv[s->out[0]];
    float *dst = dst_or_tmp(t, OUT(0), ACC(0), y->numel);
    int k, n = 0, rc;

    if (dst == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for %s", s->what);
    for (k = 0; k < s->n_in; k++)
        in[n++] = tv_data(t, s->in[k]);
    for (k = 1; k < s->n_out; k++)
        in[n++] = tv_data(t, s->out[k]);
    if ((rc = ss_dnn_run(s->prim, t->stream, in, dst, t->scratch, err)) < 0)
        return rc;
    if (dst != OUT(0))
        ss__add_into(OUT(0), dst, y->dtype, y->numel);
    return 0;
}

/* BatchNorm forward as ss__k_batchnorm's step (in x, scale, bias,
 * running mean, running var; out y, mean, and the batch VARIANCE where
 * the C kernel writes 1/std), then the running statistics. */
int
ss__k_bn_dnn(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    float *rm = (float *)tv_data(t, s->in[3]);
    float *rv = (float *)tv_data(t, s->in[4]);
    const float *mean = OUT(1), *var = OUT(2);
    const void *in[5] = { IN(0), IN(1), IN(2), OUT(1), OUT(2) };
    double cnt = (double)(s->p[0] * s->p[2]);
    float mom = s->f[1], unb = (float)(cnt > 1 ? cnt / (cnt - 1) : 1);
    int rc;

    if (t->infer_bn)            /* running statistics: no backward */
        return t->tv[s->in[0]].act16 ? ss__k_bn16_infer(t, s, err)
                                     : ss__k_batchnorm(t, s, err);
    if ((rc = ss_dnn_run(s->prim, t->stream, in, OUT(0), t->scratch,
                         err)) < 0)
        return rc;
    for (int64_t c = 0; c < s->p[1]; c++) {
        rm[c] = mom * rm[c] + (1.0f - mom) * mean[c];
        rv[c] = mom * rv[c] + (1.0f - mom) * var[c] * unb;
    }
    return 0;
}

/* BatchNorm backward as ss__k_batchnorm_bwd's step (in dy, x, scale,
 * mean, variance, and bias; out dx, dscale, dbias, each maybe absent or added
 * to); aux holds the primitive's 2 C scale and shift gradients. */
int
ss__k_bn_dnn_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err)
{
    int64_t C = s->p[1], numel = t->tv[s->in[0]].numel;
    float *dg = OUT(1), *db = OUT(2), *tmp = s->aux;
    float *dx = dst_or_tmp(t, OUT(0), ACC(0), numel);
    const void *in[8] = { IN(0), IN(1), IN(3), IN(4), IN(2), IN(5), tmp,
                          tmp + C };
    int rc;

    if (dx == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for %s", s->what);
    if ((rc = ss_dnn_run(s->prim, t->stream, in, dx, t->scratch, err)) < 0)
        return rc;
    if (OUT(0) != NULL && dx != OUT(0))
        ss__add_into(OUT(0), dx, t->tv[s->in[0]].dtype, numel);
    for (int64_t c = 0; c < C; c++) {
        if (dg)
            dg[c] = ACC(1) ? dg[c] + tmp[c] : tmp[c];
        if (db)
            db[c] = ACC(2) ? db[c] + tmp[C + c] : tmp[C + c];
    }
    return 0;
}

/* ---- emitters ------------------------------------------------------------ */

int
ss__nn_dnn_ok(const ss__tb_t *b, int x, int exact)
{
    const ss__tv_t *v = &b->t->tv[x];
    ss_train_nn_t k = b->t->o.nn;

    if (k == SS_TRAIN_NN_AUTO)
        k = b->t->o.bf16 || exact ? SS_TRAIN_NN_DNN : SS_TRAIN_NN_C;
    return k == SS_TRAIN_NN_DNN && v->ndim == 4 &&
           (v->dtype == SS_DTYPE_F32 || v->act16) &&
           (v->lay == SS_DNN_PLAIN || v->lay == SS_DNN_BLOCKED ||
            v->lay == SS_DNN_NHWC);
}

int
ss__nn_bn(ss__tb_t *b, ss__step_t *s, int bwd, ss_err_t *err)
{
    const ss__tv_t *x = &b->t->tv[s->in[bwd ? 1 : 0]];
    ss_dnn_bnorm_train_desc_t d;
    int rc;

    if (!bwd && (s->op != SS_BN_BATCH || !ss__nn_dnn_ok(b, s->in[0], 0)))
        return 0;
    memset(&d, 0, sizeof(d));
    d.dtype = x->dtype;         /* a bf16 activation's: dy and dx too */
    d.n = x->dims[0];
    d.c = x->dims[1];
    d.h = x->dims[2];
    d.w = x->dims[3];
    d.layout = x->lay;
    d.eps = s->f[0];
    if (bwd) {
        if ((s->aux = ss_calloc((size_t)(2 * d.c), sizeof(float))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for %s", s->what);
    }
    rc = ss_dnn_bnorm_train_new(&d, bwd, &s->prim, err);
    if (rc == SS_EUNSUPP && !bwd && d.dtype == SS_DTYPE_F32) {
        ss_err_clear(err);      /* the C kernel, as before */
        return 0;
    }
    if (rc < 0) {
        ss_free(s->aux);
        s->aux = NULL;
        return rc;
    }
    s->fn = bwd ? ss__k_bn_dnn_bwd : ss__k_bn_dnn;
    return 1;
}

int
ss__nn_eltwise(ss__tb_t *b, ss__step_t *s, int bwd, ss_err_t *err)
{
    int x = s->in[bwd ? 1 : 0];
    const ss__tv_t *v = &b->t->tv[x];
    int gelu = s->op == SS__U_GELU || s->op == SS__U_GELU_TANH;
    ss_dnn_eltwise_desc_t d;
    int rc;

    if (gelu) {
        /* element by element: any shape and layout; oneDNN's erf and
         * tanh are within a few ulp of libm's, which no sum amplifies */
        if (b->t->o.nn == SS_TRAIN_NN_C || v->numel < 1 ||
            (v->dtype != SS_DTYPE_F32 && !v->act16))
            return 0;
    } else if (s->op != SS__U_RELU || s->f[0] != 0 ||
               !ss__nn_dnn_ok(b, x, 1)) {
        return 0;
    }
    memset(&d, 0, sizeof(d));
    d.dtype = v->dtype;
    d.numel = v->numel;
    d.alg = s->op == SS__U_GELU ? SS_DNN_GELU_ERF
          : s->op == SS__U_GELU_TANH ? SS_DNN_GELU_TANH : SS_DNN_RELU;
    rc = bwd ? ss_dnn_eltwise_bwd_new(&d, &s->prim, err)
             : ss_dnn_eltwise_new(&d, &s->prim, err);
    if (rc == SS_EUNSUPP && d.dtype == SS_DTYPE_F32) {
        ss_err_clear(err);
        return 0;
    }
    if (rc < 0)
        return rc;
    s->fn = ss__k_dnn_x;
    s->n_in = bwd ? 2 : 1;      /* dy, x: y is not read */
    return 1;
}

/* The pooling descriptor of a step's p (see pool_geom in rules_conv.c: planes
 * H W OH OW KH KW sh sw pt pl dh dw C L) on value x. */
static int
pool_desc(const ss__tb_t *b, const ss__step_t *s, int x,
          ss_dnn_pool_desc_t *d)
{
    const ss__tv_t *v = &b->t->tv[x];
    const int64_t *p = s->p;

    memset(d, 0, sizeof(*d));
    d->dtype = v->dtype;
    d->alg = s->op == 0 ? SS_DNN_POOL_MAX
           : s->op == 2 ? SS_DNN_POOL_AVG_INCLUDE : SS_DNN_POOL_AVG_EXCLUDE;
    d->n = v->dims[0];
    d->c = v->dims[1];
    d->ih = p[1];
    d->iw = p[2];
    for (int i = 0; i < 2; i++) {
        int64_t in = p[1 + i], out = p[3 + i], k = p[5 + i], st = p[7 + i];
        int64_t pb = p[9 + i], dl = p[11 + i];
        int64_t ext = (k - 1) * dl + 1;
        /* the end padding that makes out windows (ceil_mode's extra one
         * included); a window that ends before the input does is fine
         * with none */
        int64_t pe = (out - 1) * st + ext - in - pb;

        if (pe < 0)
            pe = 0;
        if ((in + pb + pe - ext) / st + 1 != out)
            return 0;
        d->kernel[i] = k;
        d->stride[i] = st;
        d->dilation[i] = dl;
        d->pad_begin[i] = pb;
        d->pad_end[i] = pe;
    }
    d->layout = v->lay;
    return 1;
}

int
ss__nn_pool(ss__tb_t *b, ss__step_t *s, int bwd, int x, int *ws,
            ss_err_t *err)
{
    ss_dnn_pool_desc_t d;
    size_t wsb = 0;
    int rc;

    if (!ss__nn_dnn_ok(b, x, s->op == 0) || !pool_desc(b, s, x, &d))
        return 0;
    rc = ss_dnn_pool_train_new(&d, bwd, &s->prim, &wsb, err);
    if (rc == SS_EUNSUPP && !bwd && d.dtype == SS_DTYPE_F32) {
        ss_err_clear(err);
        return 0;
    }
    if (rc < 0)
        return rc;
    s->fn = ss__k_dnn_x;
    if (!bwd && wsb > 0) {
        /* where each maximum was, in oneDNN's form, for the backward */
        int64_t nel = (int64_t)((wsb + 3) / 4);

        if ((*ws = ss__tv_new(b, SS_DTYPE_I32, 1, &nel, err)) < 0)
            return *ws;
    }
    return 1;
}
