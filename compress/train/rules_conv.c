/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of Conv (oneDNN convolution forward (training),
 * backward-data and backward-weights on run-time weights, dense or
 * blocked) and of pooling.  Conventions: rules.c.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- Conv ------------------------------------------------------------- */

/* The oneDNN descriptor of Conv node n (2-D, any group and dilation). */
static int
conv_desc(ss__tb_t *b, const ss_node_t *n, ss_dnn_conv_desc_t *d,
          ss_err_t *err)
{
    const ss__tv_t *xv = V(b, ss__tb_in(b, n, 0));
    const ss__tv_t *wv = V(b, ss__tb_in(b, n, 1));
    ss_window_t win;
    int rc;

    if (xv->ndim != 4 || wv->ndim != 4)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Conv '%s' is not 2-D",
                          label(n));
    if ((rc = ss__ops_window(n, 2, xv->dims + 2, wv->dims + 2, false, &win,
                             err)) < 0)
        return rc;
    memset(d, 0, sizeof(*d));
    d->n = xv->dims[0];
    d->ic = xv->dims[1];
    d->ih = xv->dims[2];
    d->iw = xv->dims[3];
    d->oc = wv->dims[0];
    d->kh = wv->dims[2];
    d->kw = wv->dims[3];
    d->group = ss__attr_int(n, "group", 1);
    for (int i = 0; i < 2; i++) {
        d->stride[i] = win.s[i];
        d->dilation[i] = win.d[i];
        d->pad_begin[i] = win.pb[i];
        d->pad_end[i] = win.pe[i];
    }
    if (d->group < 1 || d->ic % d->group || d->oc % d->group ||
        wv->dims[1] * d->group != d->ic)
        return ss_err_set(err, SS_EINVAL, "trainer: Conv '%s': bad group",
                          label(n));
    return 0;
}

/* A oneDNN convolution step of the given pass on dense NCHW / OIHW
 * operands (opts.nchw, or a convolution oneDNN has no blocked kernel
 * for): in0, in1 (and bias for the forward) to out.  oneDNN's backward
 * cannot add into its result, so an accumulating one writes a new value
 * that a copy step adds. */
static int
emit_conv(ss__tb_t *b, const ss_node_t *n, ss_dnn_conv_pass_t pass,
          int in0, int in1, int bias, int out, int acc, const char *what,
          ss_err_t *err)
{
    ss_dnn_conv_desc_t d;
    ss__step_t s;
    int tmp = out, rc;

    if ((rc = conv_desc(b, n, &d, err)) < 0)
        return rc;
    if (acc && (tmp = ss__tv_new(b, SS_DTYPE_F32, V(b, out)->ndim,
                                 V(b, out)->dims, err)) < 0)
        return tmp;
    step_init(&s, ss__k_dnn, what, n);
    if ((rc = ss__r_low_prim(b, NULL, &d, pass, bias >= 0, &s.prim, err)) < 0)
        return rc;
    if (s.prim == NULL &&
        (rc = ss_dnn_conv_train_new(&d, pass, bias >= 0, &s.prim, err)) < 0)
        return ss_err_wrap(err, rc, "trainer: node '%s' (%s): ", label(n),
                           what);
    s.n_in = bias >= 0 ? 3 : 2;
    s.in[0] = in0;
    s.in[1] = in1;
    s.in[2] = bias;
    if (d.dtype == SS_DTYPE_BF16 &&
        ((s.in[0] = ss__tb_bf16(b, in0, err)) < 0 ||
         (s.in[1] = ss__tb_bf16(b, in1, err)) < 0)) {
        ss_dnn_prim_free(s.prim);
        return s.in[0] < 0 ? s.in[0] : s.in[1];
    }
    s.n_out = 1;
    s.out[0] = tmp;
    if ((rc = ss__step_add(b, &s, err)) < 0)
        return rc;
    return acc ? ss__r_copy(b, n, tmp, out, 1, err) : 0;
}

/*
 * Blocked convolutions.  The forward asks oneDNN which activation
 * layouts it runs fastest in (ss_dnn_conv_train_pick: nChw16c, or NHWC,
 * or NCHW for a first layer of few channels), reads x in that layout
 * (x's own, or a copy) and leaves y in oneDNN's: the next
 * convolution, BatchNorm, pooling or element-wise step reads it as it
 * is.  Weights stay dense f32 in the flat parameter array (the
 * optimizer's); each pass that reads them gets them through a reorder
 * step (to the primitive's blocked layout, and to bf16 in mixed
 * precision), and backward by weights writes the primitive's layout,
 * which a reorder step adds into the dense gradient.  The choice is
 * saved for the backward: { x as read, src layout, dst layout, 1 }.
 */

/* A new value of bytes bytes (dtype dt) for a weight in a primitive's
 * layout: only the conv steps read it, as a flat buffer. */
static int
wbuf_new(ss__tb_t *b, size_t bytes, int bf16, ss_err_t *err)
{
    int64_t nel = (int64_t)(bytes / (bf16 ? 2 : 4));

    return ss__tv_new(b, bf16 ? SS_DTYPE_BF16 : SS_DTYPE_F32, 1, &nel,
                      err);
}

/* The blocked primitive of pass (bf16 where it has a native kernel,
 * else f32, counted as ss__r_low_prim does). */
static int
blk_prim(ss__tb_t *b, ss_dnn_conv_desc_t *d, ss_dnn_conv_pass_t pass,
         int bias, int acc, ss_dnn_conv_blk_t *cb, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int rc;

    d->dtype = SS_DTYPE_F32;
    if (t->o.bf16) {
        d->dtype = SS_DTYPE_BF16;
        rc = ss_dnn_conv_train_blk_new(d, pass, bias, acc, cb, err);
        if (rc == 0 && strncmp(ss_dnn_prim_impl(cb->prim), "ref", 3) == 0) {
            ss_dnn_prim_free(cb->prim);
            ss_dnn_prim_free(cb->w_reorder);
            rc = SS_EUNSUPP;
        }
        if (rc == 0) {
            t->n_bf16++;
            return 0;
        }
        if (rc != SS_EUNSUPP)
            return rc;
        ss_err_clear(err);
        t->n_bf16_fallback++;
        d->dtype = SS_DTYPE_F32;
    }
    return ss_dnn_conv_train_blk_new(d, pass, bias, acc, cb, err);
}

/* in0 / in1 of a blocked pass as it reads them: bf16 copies when the
 * primitive takes bf16 (a bf16 activation as it is), f32 copies of a
 * bf16 activation when it takes f32. */
static int
blk_operand(ss__tb_t *b, const ss_dnn_conv_desc_t *d, int v, ss_err_t *err)
{
    if (d->dtype == SS_DTYPE_BF16)
        return ss__tb_bf16(b, v, err);
    return V(b, v)->act16 ? ss__tb_f32(b, v, V(b, v)->lay, err) : v;
}

/* Weight w in pass's primitive layout: a reorder step, then its value. */
static int
blk_weights(ss__tb_t *b, const ss_node_t *n, ss_dnn_conv_blk_t *cb, int w,
            ss_err_t *err)
{
    ss__step_t s;
    int wb, rc;

    if ((wb = wbuf_new(b, cb->w_bytes, cb->w_bf16, err)) < 0) {
        ss_dnn_prim_free(cb->w_reorder);
        cb->w_reorder = NULL;
        return wb;
    }
    step_init(&s, ss__k_dnn, "Conv W reorder", n);
    s.prim = cb->w_reorder;
    cb->w_reorder = NULL;
    s.n_in = 1;
    s.in[0] = w;
    s.n_out = 1;
    s.out[0] = wb;
    if ((rc = ss__step_add(b, &s, err)) < 0)
        return rc;
    return wb;
}

static int
fwd_conv_blk(ss__tb_t *b, const ss_node_t *n, ss_dnn_conv_desc_t *d,
             ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int bias = ss__tb_in(b, n, 2), y = ss__tb_out(b, n, 0);
    ss_dnn_layout_t sl, dl;
    ss_dnn_conv_blk_t cb;
    ss__step_t s;
    int xs = -1, wb = -1, sv[4], rc;

    d->dtype = b->t->o.bf16 ? SS_DTYPE_BF16 : SS_DTYPE_F32;
    d->out_dtype = ss__tb_act16_on(b) ? SS_DTYPE_BF16 : SS_DTYPE_F32;
    if ((rc = ss_dnn_conv_train_pick(d, &sl, &dl, err)) < 0)
        return rc;
    d->src_layout = sl;
    d->dst_layout = dl;
    if ((rc = blk_prim(b, d, SS_DNN_CONV_FWD, bias >= 0, 0, &cb, err)) < 0)
        return rc;
    if (d->dtype != SS_DTYPE_BF16) {
        /* an f32 primitive: f32 in (copies of bf16 activations), out */
        d->out_dtype = SS_DTYPE_F32;
        if ((rc = ss__tb_node_f32(b, n, err)) < 0) {
            ss_dnn_prim_free(cb.prim);
            ss_dnn_prim_free(cb.w_reorder);
            return rc;
        }
        x = ss__tb_in(b, n, 0);
    }
    step_init(&s, ss__k_dnn, "Conv", n);
    s.prim = cb.prim;
    if ((xs = ss__tb_lay(b, x, sl, err)) < 0 ||
        (wb = blk_weights(b, n, &cb, w, err)) < 0 ||
        (s.in[0] = blk_operand(b, d, xs, err)) < 0) {
        ss_dnn_prim_free(s.prim);
        ss_dnn_prim_free(cb.w_reorder);
        return xs < 0 ? xs : wb < 0 ? wb : s.in[0];
    }
    s.n_in = bias >= 0 ? 3 : 2;
    s.in[1] = wb;
    s.in[2] = bias;
    s.n_out = 1;
    s.out[0] = y;
    b->t->tv[y].lay = dl;
    if (d->out_dtype == SS_DTYPE_BF16)
        ss__tv_set_act16(b, y);
    sv[0] = xs;
    sv[1] = (int)sl;
    sv[2] = (int)dl;
    sv[3] = 1;
    if ((rc = ss__step_add(b, &s, err)) < 0 ||
        (rc = ss__tb_save(b, ss__tb_node_index(b, n), sv, 4, err)) < 0)
        return rc;
    return 0;
}

int
ss__fwd_conv(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss_dnn_conv_desc_t d;
    int rc;

    if (!b->t->o.nchw) {
        if ((rc = conv_desc(b, n, &d, err)) < 0)
            return rc;
        rc = fwd_conv_blk(b, n, &d, err);
        if (rc != SS_EUNSUPP)
            return rc;
        ss_err_clear(err);      /* no blocked kernel: NCHW as before */
    }
    /* on f32 activations (copies of bf16 ones) */
    if ((rc = ss__tb_node_f32(b, n, err)) < 0 ||
        (rc = ss__tb_lay(b, ss__tb_in(b, n, 0), SS_DNN_PLAIN, err)) < 0)
        return rc;
    return emit_conv(b, n, SS_DNN_CONV_FWD, rc, ss__tb_in(b, n, 1),
                     ss__tb_in(b, n, 2), ss__tb_out(b, n, 0), 0, "Conv",
                     err);
}

/* The backward of a blocked forward: dW by one primitive, dX by
 * another, both on dy in the forward's dst layout; dB by the trainer's
 * per-channel sum (in double, as the NCHW path's reduce: a bias before a
 * BatchNorm has a gradient of rounding noise only, which AdamW turns
 * into full steps, so the noise is kept as small as it was). */
static int
bwd_conv_blk(ss__tb_t *b, const ss_node_t *n, int xs, int gy,
             ss_err_t *err)
{
    int idx = ss__tb_node_index(b, n);
    int w = ss__tb_in(b, n, 1), bias = ss__tb_in(b, n, 2);
    ss_dnn_conv_desc_t d;
    ss_dnn_conv_blk_t cb;
    ss__step_t s;
    int g, acc, rc;

    if ((rc = conv_desc(b, n, &d, err)) < 0)
        return rc;
    d.src_layout = (ss_dnn_layout_t)ss__tb_saved(b, idx, 1);
    d.dst_layout = (ss_dnn_layout_t)ss__tb_saved(b, idx, 2);
    if (bias >= 0 && ss__tb_needs(b, bias)) {
        /* the sum of dy over N, OH, OW, per channel in dy's layout */
        const ss__tv_t *yv = V(b, gy);

        if ((g = ss__tb_grad(b, bias, &acc, err)) < 0)
            return g;
        ss__r_dx_step(&s, ss__k_chsum, "Conv dB", n, gy, g, acc);
        s.p[0] = yv->dims[0];
        s.p[1] = yv->dims[1];
        s.p[2] = yv->dims[2] * yv->dims[3];
        s.p[3] = ss__tv_lanes(yv);
        if ((rc = ss__step_add(b, &s, err)) < 0)
            return rc;
    }
    if (ss__tb_needs(b, w)) {
        int dwt = -1;

        if ((g = ss__tb_grad(b, w, &acc, err)) < 0)
            return g;
        if ((rc = blk_prim(b, &d, SS_DNN_CONV_BWD_WEIGHTS, 0, acc, &cb,
                           err)) < 0)
            return rc;
        step_init(&s, ss__k_dnn, "Conv dW", n);
        s.prim = cb.prim;
        if ((dwt = wbuf_new(b, cb.w_bytes, 0, err)) < 0 ||
            (s.in[0] = blk_operand(b, &d, xs, err)) < 0 ||
            (s.in[1] = blk_operand(b, &d, gy, err)) < 0) {
            ss_dnn_prim_free(s.prim);
            ss_dnn_prim_free(cb.w_reorder);
            return dwt < 0 ? dwt : s.in[0] < 0 ? s.in[0] : s.in[1];
        }
        s.n_in = 2;
        s.n_out = 1;
        s.out[0] = dwt;
        if ((rc = ss__step_add(b, &s, err)) < 0) {
            ss_dnn_prim_free(cb.w_reorder);
            return rc;
        }
        /* the primitive's layout back to the dense gradient (adding) */
        step_init(&s, ss__k_dnn, "Conv dW reorder", n);
        s.prim = cb.w_reorder;
        s.n_in = 1;
        s.in[0] = dwt;
        s.n_out = 1;
        s.out[0] = g;
        if ((rc = ss__step_add(b, &s, err)) < 0)
            return rc;
    }
    if (ss__tb_needs(b, xs)) {
        int tmp, wb = -1;
        ss_dtype_t ot;

        if ((g = ss__tb_grad(b, xs, &acc, err)) < 0)
            return g;
        /* a bf16 gradient for a bf16 activation; an f32 primitive
         * writes f32, converted below */
        d.out_dtype = V(b, g)->dtype;
        if ((rc = blk_prim(b, &d, SS_DNN_CONV_BWD_DATA, 0, 0, &cb,
                           err)) < 0)
            return rc;
        ot = d.dtype == SS_DTYPE_BF16 ? d.out_dtype : SS_DTYPE_F32;
        tmp = g;
        if (acc || ot != V(b, g)->dtype) {
            if ((tmp = ss__tv_new(b, ot, V(b, g)->ndim, V(b, g)->dims,
                                  err)) < 0) {
                ss_dnn_prim_free(cb.prim);
                ss_dnn_prim_free(cb.w_reorder);
                return tmp;
            }
            b->t->tv[tmp].lay = V(b, g)->lay;
            b->t->tv[tmp].act16 = ot == SS_DTYPE_BF16;
        }
        step_init(&s, ss__k_dnn, "Conv dX", n);
        s.prim = cb.prim;
        if ((wb = blk_weights(b, n, &cb, w, err)) < 0 ||
            (s.in[0] = blk_operand(b, &d, gy, err)) < 0) {
            ss_dnn_prim_free(s.prim);
            return wb < 0 ? wb : s.in[0];
        }
        s.n_in = 2;
        s.in[1] = wb;
        s.n_out = 1;
        s.out[0] = tmp;
        if ((rc = ss__step_add(b, &s, err)) < 0)
            return rc;
        if (tmp != g && ot != V(b, g)->dtype)
            return ss__tb_relayout(b, tmp, g, acc, err);
        if (acc && (rc = ss__r_copy(b, n, tmp, g, 1, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss__bwd_conv(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int idx = ss__tb_node_index(b, n);
    int x = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int bias = ss__tb_in(b, n, 2), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), g, acc, rc;
    const ss__tv_t *yv = V(b, y);

    if (gy < 0)
        return 0;
    if (ss__tb_saved(b, idx, 3) == 1)
        return bwd_conv_blk(b, n, ss__tb_saved(b, idx, 0), gy, err);
    /* the forward read x's plain copy (x itself when it is plain) */
    if ((x = ss__tb_lay(b, x, SS_DNN_PLAIN, err)) < 0)
        return x;
    if (bias >= 0 && ss__tb_needs(b, bias)) {
        /* the sum of dy over N, OH, OW */
        int64_t fd[3] = { yv->dims[0], yv->dims[1],
                          yv->dims[2] * yv->dims[3] };
        int64_t bd[3] = { 1, yv->dims[1], 1 };

        if ((g = ss__tb_grad(b, bias, &acc, err)) < 0)
            return g;
        if ((rc = ss__r_reduce(b, n, gy, 3, fd, g, 3, bd, 1.0f, acc,
                               err)) < 0)
            return rc;
    }
    if (ss__tb_needs(b, w)) {
        if ((g = ss__tb_grad(b, w, &acc, err)) < 0)
            return g;
        if ((rc = emit_conv(b, n, SS_DNN_CONV_BWD_WEIGHTS, x, gy, -1, g, acc,
                            "Conv dW", err)) < 0)
            return rc;
    }
    if (ss__tb_needs(b, x)) {
        if ((g = ss__tb_grad(b, x, &acc, err)) < 0)
            return g;
        if ((rc = emit_conv(b, n, SS_DNN_CONV_BWD_DATA, gy, w, -1, g, acc,
                            "Conv dX", err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- pooling ----------------------------------------------------------- */

/* p[]: planes H W OH OW KH KW sh sw pt pl dh dw; op: 0 max, 1 avg
 * excluding pads, 2 avg including them. */
static int
pool_geom(ss__tb_t *b, const ss_node_t *n, int64_t *p, int *op,
          ss_err_t *err)
{
    const ss__tv_t *xv = V(b, ss__tb_in(b, n, 0));
    bool global = strncmp(n->op_type, "Global", 6) == 0;
    const int64_t *ks = NULL;
    int64_t k[2];
    ss_window_t win;
    int rc;

    if (xv->ndim != 4)
        return ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s' is not 2-D",
                          n->op_type, label(n));
    *op = strstr(n->op_type, "Max") ? 0
        : ss__attr_int(n, "count_include_pad", 0) ? 2 : 1;
    if (global) {
        k[0] = xv->dims[2];
        k[1] = xv->dims[3];
        memset(&win, 0, sizeof(win));
        win.k[0] = k[0]; win.k[1] = k[1];
        win.s[0] = win.s[1] = win.d[0] = win.d[1] = 1;
        win.out[0] = win.out[1] = 1;
    } else {
        if (ss__attr_ints(n, "kernel_shape", &ks) != 2)
            return ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s' without a "
                              "2-D kernel_shape", n->op_type, label(n));
        if ((rc = ss__ops_window(n, 2, xv->dims + 2, ks,
                                 ss__attr_int(n, "ceil_mode", 0) != 0, &win,
                                 err)) < 0)
            return rc;
    }
    p[0] = xv->dims[0] * xv->dims[1];
    p[1] = xv->dims[2];
    p[2] = xv->dims[3];
    p[3] = win.out[0];
    p[4] = win.out[1];
    p[5] = win.k[0];
    p[6] = win.k[1];
    p[7] = win.s[0];
    p[8] = win.s[1];
    p[9] = win.pb[0];
    p[10] = win.pb[1];
    p[11] = win.d[0];
    p[12] = win.d[1];
    p[13] = xv->dims[1];
    p[14] = ss__tv_lanes(xv);   /* plane by plane: any layout */
    return 0;
}

int
ss__fwd_pool(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc, arg = -1, dnn, sv[2];

    step_init(&s, ss__k_pool, n->op_type, n);
    if ((rc = pool_geom(b, n, s.p, &s.op, err)) < 0)
        return rc;
    if (ss__tb_out(b, n, 1) >= 0)
        return ss_err_set(err, SS_EUNSUPP, "trainer: MaxPool '%s' with "
                          "Indices", label(n));
    if ((rc = ss__nn_pool(b, &s, 0, ss__tb_in(b, n, 0), &arg, err)) < 0)
        return rc;
    dnn = rc;
    if (V(b, ss__tb_in(b, n, 0))->act16) {
        /* bf16 in, bf16 out on oneDNN; else the C kernel on f32 */
        if (dnn)
            ss__tv_set_act16(b, ss__tb_out(b, n, 0));
        else if ((rc = ss__tb_node_f32(b, n, err)) < 0)
            return rc;
    }
    if (s.op == 0 && !dnn) {
        const ss__tv_t *yv = V(b, ss__tb_out(b, n, 0));

        if ((arg = ss__tv_new(b, SS_DTYPE_I32, yv->ndim, yv->dims, err)) < 0)
            return arg;
    }
    /* saved: { the argmax or workspace, 1 on oneDNN } */
    sv[0] = arg;
    sv[1] = dnn;
    if ((rc = ss__tb_save(b, ss__tb_node_index(b, n), sv, 2, err)) < 0)
        return rc;
    s.n_in = 1;
    s.in[0] = ss__tb_in(b, n, 0);
    s.n_out = 2;
    s.out[0] = ss__tb_out(b, n, 0);
    s.out[1] = arg;
    b->t->tv[s.out[0]].lay = V(b, s.in[0])->lay;
    if (dnn)
        s.n_out = arg >= 0 ? 2 : 1;
    if (arg >= 0 && !dnn)
        b->t->tv[arg].lay = V(b, s.in[0])->lay;
    return ss__step_add(b, &s, err);
}

int
ss__bwd_pool(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    ss__r_dx_step(&s, ss__k_pool_bwd, n->op_type, n, gy, gx, acc);
    if ((rc = pool_geom(b, n, s.p, &s.op, err)) < 0)
        return rc;
    s.n_in = 2;
    s.in[1] = s.op == 0 ? ss__tb_saved(b, ss__tb_node_index(b, n), 0) : -1;
    if (ss__tb_saved(b, ss__tb_node_index(b, n), 1) == 1) {
        /* on oneDNN: dy and the forward's workspace (max only) */
        if ((rc = ss__nn_pool(b, &s, 1, ss__tb_in(b, n, 0), NULL,
                              err)) < 0)
            return rc;
        if (rc == 0)
            return ss_err_set(err, SS_EINTERNAL, "trainer: %s '%s': "
                              "oneDNN's forward without its backward",
                              n->op_type, label(n));
        s.n_in = s.op == 0 ? 2 : 1;
    }
    return ss__step_add(b, &s, err);
}
