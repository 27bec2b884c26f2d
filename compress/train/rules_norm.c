/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of Softmax / LogSoftmax and of the normalizations
 * (LayerNormalization, BatchNormalization).  Conventions: rules.c.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- Softmax ----------------------------------------------------------- */

static int
softmax_geom(ss__tb_t *b, const ss_node_t *n, int x, int64_t *p,
             ss_err_t *err)
{
    const ss__tv_t *xv = V(b, x);
    int r = xv->ndim;
    int64_t axis = ss__attr_int(n, "axis", b->g->opset >= 13 ? -1 : 1);

    if (axis < 0)
        axis += r;
    if (axis < 0 || axis >= r)
        return ss_err_set(err, SS_EINVAL, "trainer: node '%s': axis out of "
                          "range", label(n));
    p[0] = prod(xv->dims, 0, (int)axis);
    if (b->g->opset >= 13) {
        p[1] = xv->dims[axis];
        p[2] = prod(xv->dims, (int)axis + 1, r);
    } else {
        p[1] = prod(xv->dims, (int)axis, r);
        p[2] = 1;
    }
    return 0;
}

/* Step s (geometry in p, op LogSoftmax) on oneDNN's vectorized softmax
 * over the middle of [outer, n, inner], forward or backward, when oneDNN
 * takes it: the trainer's loop cost a fifth of a transformer step
 * (attention); its own kernel stays for what oneDNN refuses.  y16: the
 * output (and its gradient) is a bf16 activation; then the step must
 * run on oneDNN (returns 0 when it cannot); x16: so is the input (and
 * its gradient). */
static int
softmax_dnn(ss__step_t *s, int bwd, int y16, int x16)
{
    ss_dnn_softmax_desc_t d;
    ss_err_t e2;

    memset(&d, 0, sizeof(d));
    d.ndim = 3;
    memcpy(d.dims, s->p, 3 * sizeof(int64_t));
    d.axis = 1;
    d.log = s->op;
    d.dtype = x16 ? SS_DTYPE_BF16 : SS_DTYPE_F32;
    d.y_dtype = y16 ? SS_DTYPE_BF16 : SS_DTYPE_F32;
    if (ss_dnn_softmax_train_new(&d, bwd, &s->prim, &e2) < 0)
        return 0;
    /* ss__k_dnn_x adds into a second contribution's dx; ss__k_dnn
     * cannot, so an f32 one keeps the trainer's kernel (bwd_softmax) */
    s->fn = y16 ? ss__k_dnn_x : ss__k_dnn;
    return 1;
}

/* Mixed precision: Softmax writes its output in bf16 (act16.c) where a
 * product reads it (attention's probabilities times V): oneDNN computes
 * in f32 and rounds once, and the product and the backward (oneDNN's,
 * on the bf16 output and gradient) read it as it is, so the two [N,
 * heads, T, T] conversions a step of attention made go.  Not the loss's
 * input (f32), not LogSoftmax.  Its input may be bf16 too: the scores
 * of a MatMul whose one reader it is (rules_mat.c), as PyTorch's
 * autocast makes them; the backward then writes their gradient in bf16,
 * which the scores' backward products read as it is. */
int
ss__r_softmax_y16(const ss__tb_t *b, const ss_node_t *n)
{
    const ss_graph_t *g = b->g;

    return ss__tb_act16_on(b) && strcmp(n->op_type, "Softmax") == 0 &&
           n->outputs[0] != g->outputs[b->t->o.output];
}

int
ss__fwd_softmax(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc, y16 = ss__r_softmax_y16(b, n);
    int x16 = V(b, ss__tb_in(b, n, 0))->act16;

    /* bf16 scores (rules_mat.c) where the probabilities are bf16 too */
    if (x16 && !y16 && (rc = ss__tb_node_f32(b, n, err)) < 0)
        return rc;
    x16 = x16 && y16;
    step_init(&s, ss__k_softmax, n->op_type, n);
    s.op = strcmp(n->op_type, "LogSoftmax") == 0;
    s.n_in = 1;
    s.in[0] = ss__tb_in(b, n, 0);
    s.n_out = 1;
    s.out[0] = ss__tb_out(b, n, 0);
    if ((rc = softmax_geom(b, n, s.in[0], s.p, err)) < 0)
        return rc;
    if (y16 && softmax_dnn(&s, 0, 1, x16))
        ss__tv_set_act16(b, s.out[0]);
    else if (x16)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Softmax '%s': oneDNN "
                          "has no bf16 softmax for its bf16 scores",
                          label(n));
    else
        softmax_dnn(&s, 0, 0, 0);
    return ss__step_add(b, &s, err);
}

int
ss__bwd_softmax(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc, y;
    ss__step_t s;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    ss__r_dx_step(&s, ss__k_softmax_bwd, n->op_type, n, gy, gx, acc);
    s.op = strcmp(n->op_type, "LogSoftmax") == 0;
    s.n_in = 2;
    s.in[1] = y = ss__tb_out(b, n, 0);
    if ((rc = softmax_geom(b, n, ss__tb_in(b, n, 0), s.p, err)) < 0)
        return rc;
    if (V(b, y)->act16) {
        if (!softmax_dnn(&s, 1, 1, V(b, gx)->act16))
            return ss_err_set(err, SS_EUNSUPP, "trainer: Softmax '%s': "
                              "oneDNN has no bf16 backward for it",
                              label(n));
    } else if (!acc) {
        softmax_dnn(&s, 1, 0, 0);
    }
    return ss__step_add(b, &s, err);
}

/* ---- LayerNormalization -------------------------------------------------- */

/* The end of LayerNormalization's and BatchNormalization's forward: the
 * step writes y, mean and 1/std, which the backward reads. */
static int
norm_fwd_add(ss__tb_t *b, const ss_node_t *n, ss__step_t *s, int mean,
             int rstd, ss_err_t *err)
{
    /* the third: 1 when oneDNN's primitive runs it (rstd is then the
     * batch variance, which its backward reads) */
    int sv[3] = { mean, rstd, s->fn == ss__k_bn_dnn }, rc;

    s->n_out = 3;
    s->out[0] = ss__tb_out(b, n, 0);
    s->out[1] = mean;
    s->out[2] = rstd;
    if ((rc = ss__tb_save(b, ss__tb_node_index(b, n), sv, 3, err)) < 0)
        return rc;
    return ss__step_add(b, s, err);
}

int
ss__fwd_layernorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);
    const ss__tv_t *xv = V(b, x);
    int64_t axis = ss__attr_int(n, "axis", -1);
    int64_t rows, cols;
    ss__step_t s;
    int mean, rstd;

    if (axis < 0)
        axis += xv->ndim;
    if (axis < 0 || axis >= xv->ndim)
        return ss_err_set(err, SS_EINVAL, "trainer: node '%s': axis out of "
                          "range", label(n));
    rows = prod(xv->dims, 0, (int)axis);
    cols = prod(xv->dims, (int)axis, xv->ndim);
    for (int k = 1; k < 3; k++) {
        int v = ss__tb_in(b, n, k);

        if (v >= 0 && V(b, v)->numel != cols)
            return ss_err_set(err, SS_EUNSUPP, "trainer: LayerNormalization "
                              "'%s' with a broadcast scale or bias",
                              label(n));
    }
    if ((mean = ss__tb_out(b, n, 1)) < 0 &&
        (mean = ss__tv_new(b, SS_DTYPE_F32, 1, &rows, err)) < 0)
        return mean;
    if ((rstd = ss__tb_out(b, n, 2)) < 0 &&
        (rstd = ss__tv_new(b, SS_DTYPE_F32, 1, &rows, err)) < 0)
        return rstd;
    step_init(&s, ss__k_layernorm, "LayerNormalization", n);
    s.n_in = 3;
    s.in[0] = x;
    s.in[1] = ss__tb_in(b, n, 1);
    s.in[2] = ss__tb_in(b, n, 2);
    s.p[0] = rows;
    s.p[1] = cols;
    s.f[0] = ss__attr_float(n, "epsilon", 1e-5f);
    return norm_fwd_add(b, n, &s, mean, rstd, err);
}

/*
 * The backward step of LayerNormalization and BatchNormalization: in
 * dy, x, scale and the forward's saved mean and 1/std; out the
 * gradients of x, scale and bias, each -1 when not needed.  *any is 0
 * when none is (then the caller adds nothing).
 */
static int
norm_bwd(ss__tb_t *b, const ss_node_t *n, ss__kern_fn fn, const char *what,
         ss__step_t *s, int *any, ss_err_t *err)
{
    int idx = ss__tb_node_index(b, n);

    *any = 0;
    step_init(s, fn, what, n);
    s->n_in = 5;
    s->in[0] = ss__tb_grad_have(b, ss__tb_out(b, n, 0));
    s->in[1] = ss__tb_in(b, n, 0);
    s->in[2] = ss__tb_in(b, n, 1);
    s->in[3] = ss__tb_saved(b, idx, 0);
    s->in[4] = ss__tb_saved(b, idx, 1);
    s->n_out = 3;
    for (int k = 0; k < 3; k++) {
        int v = ss__tb_in(b, n, k), acc;

        s->out[k] = -1;
        if (v < 0 || !ss__tb_needs(b, v))
            continue;
        if ((s->out[k] = ss__tb_grad(b, v, &acc, err)) < 0)
            return s->out[k];
        s->acc |= acc ? 1u << k : 0;
        *any = 1;
    }
    return 0;
}

int
ss__bwd_layernorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int any, rc;

    if (ss__tb_grad_have(b, ss__tb_out(b, n, 0)) < 0)
        return 0;
    if ((rc = norm_bwd(b, n, ss__k_layernorm_bwd, "LayerNormalization'", &s,
                       &any, err)) < 0 || !any)
        return rc;
    s.p[0] = V(b, s.in[3])->numel;
    s.p[1] = V(b, s.in[1])->numel / s.p[0];
    return ss__step_add(b, &s, err);
}

/* ---- BatchNormalization -------------------------------------------------- */

int
ss__fwd_batchnorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);
    const ss__tv_t *xv = V(b, x);
    int64_t c = xv->ndim >= 2 ? xv->dims[1] : 1;
    ss__step_t s;
    int mean, rstd, rc;

    if (xv->ndim < 2 || n->n_inputs < 5 ||
        ss__attr_int(n, "training_mode", 0) != 0)
        return ss_err_set(err, SS_EUNSUPP, "trainer: BatchNormalization "
                          "'%s' is not an inference-mode node with 5 "
                          "inputs", label(n));
    for (int k = 1; k < 5; k++) {
        int v = ss__tb_in(b, n, k);

        if (v < 0 || V(b, v)->numel != c)
            return ss_err_set(err, SS_EUNSUPP, "trainer: BatchNormalization"
                              " '%s': input %d is not per channel", label(n),
                              k);
        if (k >= 3 && V(b, v)->kind != SS__TV_STATE &&
            V(b, v)->kind != SS__TV_CONST)
            return ss_err_set(err, SS_EUNSUPP, "trainer: BatchNormalization"
                              " '%s': statistics that are not initializers",
                              label(n));
    }
    /* a bf16 x on oneDNN's batch statistics; else f32 for the C kernel */
    if (xv->act16 && (b->t->o.bn != SS_BN_BATCH || !ss__nn_dnn_ok(b, x, 0))) {
        if ((rc = ss__tb_node_f32(b, n, err)) < 0)
            return rc;
        x = ss__tb_in(b, n, 0);
    }
    if ((mean = ss__tv_new(b, SS_DTYPE_F32, 1, &c, err)) < 0 ||
        (rstd = ss__tv_new(b, SS_DTYPE_F32, 1, &c, err)) < 0)
        return mean < 0 ? mean : rstd;
    step_init(&s, ss__k_batchnorm, "BatchNormalization", n);
    s.n_in = 5;
    for (int k = 0; k < 5; k++)
        s.in[k] = ss__tb_in(b, n, k);
    s.op = b->t->o.bn;
    xv = V(b, x);
    s.p[0] = xv->dims[0];
    s.p[1] = c;
    s.p[2] = prod(xv->dims, 2, xv->ndim);
    s.p[3] = ss__tv_lanes(xv);      /* per channel: any layout */
    b->t->tv[ss__tb_out(b, n, 0)].lay = xv->lay;
    s.f[0] = ss__attr_float(n, "epsilon", 1e-5f);
    s.f[1] = ss__attr_float(n, "momentum", 0.9f);
    s.n_out = 3;                /* as norm_fwd_add sets them */
    s.out[0] = ss__tb_out(b, n, 0);
    s.out[1] = mean;
    s.out[2] = rstd;
    if ((rc = ss__nn_bn(b, &s, 0, err)) < 0)
        return rc;
    if (V(b, x)->act16)
        ss__tv_set_act16(b, ss__tb_out(b, n, 0));
    return norm_fwd_add(b, n, &s, mean, rstd, err);
}

int
ss__bwd_batchnorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int any, rc;

    if (ss__tb_grad_have(b, ss__tb_out(b, n, 0)) < 0)
        return 0;
    if ((rc = norm_bwd(b, n, ss__k_batchnorm_bwd, "BatchNormalization'",
                       &s, &any, err)) < 0 || !any)
        return rc;
    s.op = b->t->o.bn;
    s.p[0] = V(b, s.in[1])->dims[0];
    s.p[1] = V(b, s.in[1])->dims[1];
    s.p[2] = prod(V(b, s.in[1])->dims, 2, V(b, s.in[1])->ndim);
    s.p[3] = ss__tv_lanes(V(b, s.in[1]));
    if (ss__tb_saved(b, ss__tb_node_index(b, n), 2) == 1) {
        s.f[0] = ss__attr_float(n, "epsilon", 1e-5f);
        s.n_in = 6;             /* oneDNN's backward reads the shift */
        s.in[5] = ss__tb_in(b, n, 2);
        if ((rc = ss__nn_bn(b, &s, 1, err)) < 0)
            return rc;
    }
    return ss__step_add(b, &s, err);
}
