/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of the matrix products (Gemm, MatMul) and their
 * emission as oneDNN matmuls on operands transposed by strides:
 * dA = dC B^T, dB = A^T dC.  Conventions: rules.c.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- matmul emission ------------------------------------------------------ */

typedef struct mmop {
    int v;
    int nd;
    int64_t dims[SS_DNN_MAX_DIMS];
    int64_t st[SS_DNN_MAX_DIMS];
    int strided;
} mmop_t;

/* Value v seen as nd dims (leading 1s added to its own dims, or the dims
 * given), transposed in its last two when trans. */
static void
mm_op(mmop_t *o, int v, int nd, const int64_t *dims, int dnd, int trans)
{
    int64_t d[SS_DNN_MAX_DIMS], st[SS_DNN_MAX_DIMS];
    int i, off = nd - dnd;

    for (i = 0; i < nd; i++)
        d[i] = i < off ? 1 : dims[i - off];
    st[nd - 1] = 1;
    for (i = nd - 2; i >= 0; i--)
        st[i] = st[i + 1] * d[i + 1];
    o->v = v;
    o->nd = nd;
    memcpy(o->dims, d, sizeof(d));
    memcpy(o->st, st, sizeof(st));
    o->strided = 0;
    if (trans) {
        int64_t x = o->dims[nd - 1];

        o->dims[nd - 1] = o->dims[nd - 2];
        o->dims[nd - 2] = x;
        x = o->st[nd - 1];
        o->st[nd - 1] = o->st[nd - 2];
        o->st[nd - 2] = x;
        o->strided = 1;
    }
}

/* Mixed precision: a product's primitive on bf16 operands (matmul d, or
 * conv cd of pass), or *out = NULL and d->dtype / cd->dtype F32 when the
 * trainer computes in f32 or oneDNN has no native bf16 kernel for this
 * one (oneDNN's reference code would be far slower than f32). */
int
ss__r_low_prim(ss__tb_t *b, ss_dnn_matmul_desc_t *d, ss_dnn_conv_desc_t *cd,
               ss_dnn_conv_pass_t pass, int bias, ss_dnn_prim_t **out,
               ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int rc;

    *out = NULL;
    if (!t->o.bf16)
        return 0;
    if (d != NULL) {
        d->dtype = SS_DTYPE_BF16;
        rc = ss_dnn_matmul_train_new(d, out, err);
    } else {
        cd->dtype = SS_DTYPE_BF16;
        rc = ss_dnn_conv_train_new(cd, pass, bias, out, err);
    }
    if (rc == 0 && strncmp(ss_dnn_prim_impl(*out), "ref", 3) == 0) {
        ss_dnn_prim_free(*out);
        *out = NULL;
        rc = SS_EUNSUPP;
    }
    if (rc == SS_EUNSUPP) {
        ss_err_clear(err);
        t->n_bf16_fallback++;
        if (d != NULL)
            d->dtype = SS_DTYPE_F32;
        else
            cd->dtype = SS_DTYPE_F32;
        return 0;
    }
    if (rc == 0)
        t->n_bf16++;
    return rc;
}

/* out = alpha A x B (+ bias broadcast, as a post-op), written or
 * added. */
static int
emit_mm(ss__tb_t *b, const ss_node_t *n, const mmop_t *A, const mmop_t *B,
        int out, int acc, int bias, float alpha, const char *what,
        ss_err_t *err)
{
    ss_dnn_matmul_desc_t d;
    ss__step_t s;
    int rc;

    memset(&d, 0, sizeof(d));
    d.ndim = A->nd;
    memcpy(d.a_dims, A->dims, sizeof(d.a_dims));
    memcpy(d.b_dims, B->dims, sizeof(d.b_dims));
    d.a_strides = A->strided ? A->st : NULL;
    d.b_strides = B->strided ? B->st : NULL;
    /* a fused MatMul's scale (fuse.c), before the sum of acc */
    if (alpha != 1.0f &&
        (rc = ss_dnn_postops_add_eltwise(&d.post, SS_DNN_LINEAR, alpha,
                                         0.0f)) < 0)
        return ss_err_set(err, rc, "trainer: node '%s': scale post-op",
                          label(n));
    if (acc) {
        d.post.op[d.post.n].kind = SS_DNN_PO_SUM;
        d.post.op[d.post.n++].alpha = 1.0f;
    }
    if (bias >= 0) {
        ss_dnn_postop_t *po = &d.post.op[d.post.n++];
        const ss__tv_t *bv = V(b, bias);
        int off = A->nd - bv->ndim;

        if (off < 0)
            return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s': bias "
                              "of rank %d", label(n), bv->ndim);
        po->kind = SS_DNN_PO_BINARY;
        po->alg = SS_DNN_ADD;
        po->ndim = A->nd;
        for (int i = 0; i < A->nd; i++)
            po->dims[i] = i < off ? 1 : bv->dims[i - off];
    }
    /* a bf16 activation's gradient (act16.c) is written in bf16 */
    d.out_dtype = V(b, out)->dtype == SS_DTYPE_BF16 ? SS_DTYPE_BF16
                                                    : SS_DTYPE_F32;
    step_init(&s, ss__k_dnn, what, n);
    if ((rc = ss__r_low_prim(b, &d, NULL, 0, 0, &s.prim, err)) < 0)
        return rc;
    if (s.prim == NULL &&
        (V(b, A->v)->act16 || V(b, B->v)->act16 || V(b, out)->act16))
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' (%s): no "
                          "bf16 kernel for a product of bf16 activations",
                          label(n), what);
    if (s.prim == NULL && (rc = ss_dnn_matmul_new(&d, &s.prim, err)) < 0)
        return ss_err_wrap(err, rc, "trainer: node '%s' (%s): ", label(n),
                           what);
    s.n_in = bias >= 0 ? 3 : 2;
    s.in[0] = A->v;
    s.in[1] = B->v;
    if (d.dtype == SS_DTYPE_BF16 &&
        ((s.in[0] = ss__tb_bf16(b, A->v, err)) < 0 ||
         (s.in[1] = ss__tb_bf16(b, B->v, err)) < 0)) {
        ss_dnn_prim_free(s.prim);
        return s.in[0] < 0 ? s.in[0] : s.in[1];
    }
    s.in[2] = bias;
    s.n_out = 1;
    s.out[0] = out;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}

/* ---- Gemm and MatMul --------------------------------------------------- */

int
ss__fwd_gemm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int c = ss__tb_in(b, n, 2), y = ss__tb_out(b, n, 0);
    int ta = (int)ss__attr_int(n, "transA", 0);
    int tb = (int)ss__attr_int(n, "transB", 0);
    mmop_t A, B;

    if (ss__attr_float(n, "alpha", 1.0f) != 1.0f ||
        (c >= 0 && ss__attr_float(n, "beta", 1.0f) != 1.0f))
        return ss_err_set(err, SS_EUNSUPP, "trainer: Gemm '%s' with alpha "
                          "or beta other than 1", label(n));
    mm_op(&A, a, 2, V(b, a)->dims, 2, ta);
    mm_op(&B, w, 2, V(b, w)->dims, 2, tb);
    return emit_mm(b, n, &A, &B, y, 0, c, 1.0f, "Gemm", err);
}

int
ss__bwd_gemm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int c = ss__tb_in(b, n, 2), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), g, acc, rc;
    int ta = (int)ss__attr_int(n, "transA", 0);
    int tb = (int)ss__attr_int(n, "transB", 0);
    mmop_t X, Y;

    if (gy < 0)
        return 0;
    if (ss__tb_needs(b, a)) {
        if ((g = ss__tb_grad(b, a, &acc, err)) < 0)
            return g;
        if (!ta) {          /* dA = dY opB(B)^T */
            mm_op(&X, gy, 2, V(b, gy)->dims, 2, 0);
            mm_op(&Y, w, 2, V(b, w)->dims, 2, !tb);
        } else {            /* dA = opB(B) dY^T */
            mm_op(&X, w, 2, V(b, w)->dims, 2, tb);
            mm_op(&Y, gy, 2, V(b, gy)->dims, 2, 1);
        }
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, 1.0f, "Gemm dA",
                          err)) < 0)
            return rc;
    }
    if (ss__tb_needs(b, w)) {
        if ((g = ss__tb_grad(b, w, &acc, err)) < 0)
            return g;
        if (!tb) {          /* dB = opA(A)^T dY */
            mm_op(&X, a, 2, V(b, a)->dims, 2, !ta);
            mm_op(&Y, gy, 2, V(b, gy)->dims, 2, 0);
        } else {            /* dB = dY^T opA(A) */
            mm_op(&X, gy, 2, V(b, gy)->dims, 2, 1);
            mm_op(&Y, a, 2, V(b, a)->dims, 2, ta);
        }
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, 1.0f, "Gemm dB",
                          err)) < 0)
            return rc;
    }
    if (c >= 0 && ss__tb_needs(b, c)) {
        if ((g = ss__tb_grad(b, c, &acc, err)) < 0)
            return g;
        if ((rc = ss__r_reduce(b, n, gy, 2, V(b, gy)->dims, g, V(b, c)->ndim,
                               V(b, c)->dims, 1.0f, acc, err)) < 0)
            return rc;
    }
    return 0;
}

static int
matmul_ranks(ss__tb_t *b, const ss_node_t *n, int a, int w, int *nd,
             ss_err_t *err)
{
    int ra = V(b, a)->ndim, rb = V(b, w)->ndim;

    if (ra < 2 || rb < 2)
        return ss_err_set(err, SS_EUNSUPP, "trainer: MatMul '%s' with a "
                          "1-D operand", label(n));
    *nd = ra > rb ? ra : rb;
    if (*nd > SS_DNN_MAX_DIMS)
        return ss_err_set(err, SS_EUNSUPP, "trainer: MatMul '%s' of rank "
                          "%d", label(n), *nd);
    return 0;
}

/* Which of MatMul's backward products sum over batches it broadcasts
 * (mm_reduced): bit 0 dA's, bit 1 dB's. */
static unsigned
matmul_reduced(ss__tb_t *b, int a, int w, int y, int nd)
{
    unsigned r = 0;
    int same = 1, ones = 1;
    mmop_t X, Y, O;

    mm_op(&O, y, nd, V(b, y)->dims, V(b, y)->ndim, 0);
    mm_op(&X, a, nd, V(b, a)->dims, V(b, a)->ndim, 0);
    mm_op(&Y, w, nd, V(b, w)->dims, V(b, w)->ndim, 0);
    for (int i = 0; i < nd - 2; i++) {
        if (X.dims[i] != O.dims[i])
            r |= 1u;
        same &= Y.dims[i] == O.dims[i];
        ones &= Y.dims[i] == 1 && X.dims[i] == O.dims[i];
    }
    if (!same && !ones)
        r |= 2u;
    return r;
}

/* Mixed precision: a MatMul's output whose one reader takes bf16 as it
 * comes is written in bf16, as PyTorch's autocast makes it: attention's
 * scores, read by a Softmax writing bf16 probabilities (rules_norm.c),
 * and a Linear's output (its bias fused, fuse.c) read by a Gelu on
 * oneDNN (bf16 in and out, forward and backward).  The reader's backward
 * writes the gradient in bf16, which the backward products read as it
 * is (a fused bias sums it in double, ss__k_chsum), so the f32 output,
 * its f32 gradient and that gradient's bf16 copy go; the Gelu's output
 * is bf16 too, so the next product's copy of it goes.  So is one that
 * only products read, directly or through shape ops (attention's qkv
 * and heads, rules.c).  Any other reader or a graph output keeps it
 * f32. */
static int
matmul_y16(const ss__tb_t *b, const ss_node_t *n)
{
    const ss_graph_t *g = b->g;
    const ss_node_t *r = NULL;
    int y = n->outputs[0], i, k;

    if (!ss__tb_act16_on(b) || y < 0)
        return 0;
    /* through shape ops to products only (rules.c) */
    if (ss__r_bf16_to_products(b, y, 0))
        return 1;
    for (i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == y)
            return 0;
    for (i = 0; i < g->n_nodes; i++) {
        const ss_node_t *m = ss__tb_node(b, i);

        for (k = 0; (!b->need || b->need[i]) && k < m->n_inputs; k++)
            if (m->inputs[k] == y) {
                if (r != NULL && r != m)
                    return 0;
                r = m;
            }
    }
    return r != NULL &&
           (ss__r_softmax_y16(b, r) ||
            (strcmp(r->op_type, "Gelu") == 0 &&
             b->t->o.nn != SS_TRAIN_NN_C));
}

int
ss__fwd_matmul(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int y = ss__tb_out(b, n, 0), nd, rc;
    mmop_t A, B;

    if ((rc = matmul_ranks(b, n, a, w, &nd, err)) < 0)
        return rc;
    /* bf16 activations (a Softmax's output) are bf16 operands as they
     * are, and their gradients are written in bf16; a gradient summed
     * over broadcast batches (an f32 temporary) takes an f32 copy */
    if ((V(b, a)->act16 || V(b, w)->act16) &&
        ((V(b, a)->act16 && (matmul_reduced(b, a, w, y, nd) & 1u)) ||
         (V(b, w)->act16 && (matmul_reduced(b, a, w, y, nd) & 2u)))) {
        if ((rc = ss__tb_node_f32(b, n, err)) < 0)
            return rc;
        a = ss__tb_in(b, n, 0);
        w = ss__tb_in(b, n, 1);
    }
    if (matmul_y16(b, n))
        ss__tv_set_act16(b, y);
    mm_op(&A, a, nd, V(b, a)->dims, V(b, a)->ndim, 0);
    mm_op(&B, w, nd, V(b, w)->dims, V(b, w)->ndim, 0);
    /* a fused bias (fuse.c): input 2, a binary post-op */
    return emit_mm(b, n, &A, &B, y, 0, ss__tb_in(b, n, 2),
                   ss__attr_float(n, "alpha", 1.0f), "MatMul", err);
}

/* out (shape od, numpy-aligned) gets the sum over the batch dims it
 * broadcasts of X x Y, computed batch by batch into a temporary. */
static int
mm_reduced(ss__tb_t *b, const ss_node_t *n, const mmop_t *X, const mmop_t *Y,
           int nd, const int64_t *bdims, int out, int acc, int ond,
           const int64_t *od, ss_err_t *err)
{
    int64_t td[SS_DNN_MAX_DIMS];
    int tmp, rc;

    memcpy(td, bdims, sizeof(int64_t) * (size_t)(nd - 2));
    td[nd - 2] = X->dims[nd - 2];
    td[nd - 1] = Y->dims[nd - 1];
    if ((tmp = ss__tv_new(b, SS_DTYPE_F32, nd, td, err)) < 0)
        return tmp;
    if ((rc = emit_mm(b, n, X, Y, tmp, 0, -1,
                      ss__attr_float(n, "alpha", 1.0f), "MatMul' batches",
                      err)) < 0)
        return rc;
    return ss__r_reduce(b, n, tmp, nd, td, out, ond, od, 1.0f, acc, err);
}

/* A fused bias's gradient g (fuse.c): dy summed over its rows, by the
 * reduce an Add's backward ran (f32), or in double from a bf16 dy (a
 * [rows, N] layout of N lanes for ss__k_chsum). */
static int
bias_grad(ss__tb_t *b, const ss_node_t *n, int gy, int c, int g, int acc,
          ss_err_t *err)
{
    const ss__tv_t *yv = V(b, gy);
    ss__step_t s;

    if (!yv->act16)
        return ss__r_reduce(b, n, gy, yv->ndim, yv->dims, g, V(b, c)->ndim,
                            V(b, c)->dims, 1.0f, acc, err);
    ss__r_dx_step(&s, ss__k_chsum, "MatMul dbias", n, gy, g, acc);
    s.p[1] = s.p[3] = V(b, c)->numel;
    s.p[0] = yv->numel / s.p[1];
    s.p[2] = 1;
    return ss__step_add(b, &s, err);
}

int
ss__bwd_matmul(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int c = ss__tb_in(b, n, 2);                       /* fuse.c's bias */
    int y = ss__tb_out(b, n, 0), gy = ss__tb_grad_have(b, y);
    int nd, rc, g, acc, i;
    float alpha = ss__attr_float(n, "alpha", 1.0f);  /* fuse.c */
    mmop_t X, Y, O;

    if (gy < 0)
        return 0;
    if ((rc = matmul_ranks(b, n, a, w, &nd, err)) < 0)
        return rc;
    if (c >= 0 && ss__tb_needs(b, c)) {
        if ((g = ss__tb_grad(b, c, &acc, err)) < 0)
            return g;
        if ((rc = bias_grad(b, n, gy, c, g, acc, err)) < 0)
            return rc;
    }
    mm_op(&O, y, nd, V(b, y)->dims, V(b, y)->ndim, 0);
    if (ss__tb_needs(b, a)) {
        int bcast = (int)(matmul_reduced(b, a, w, y, nd) & 1u);

        if ((g = ss__tb_grad(b, a, &acc, err)) < 0)
            return g;
        mm_op(&X, gy, nd, V(b, gy)->dims, V(b, gy)->ndim, 0);
        mm_op(&Y, w, nd, V(b, w)->dims, V(b, w)->ndim, 1);
        if (bcast) {
            /* every batch's product, then the sum over broadcast ones */
            if ((rc = mm_reduced(b, n, &X, &Y, nd, O.dims, g, acc,
                                 V(b, a)->ndim, V(b, a)->dims, err)) < 0)
                return rc;
        } else if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, alpha,
                                 "MatMul dA", err)) < 0) {
            return rc;
        }
    }
    if (ss__tb_needs(b, w)) {
        int same = 1, ones = 1;

        mm_op(&Y, w, nd, V(b, w)->dims, V(b, w)->ndim, 0);
        mm_op(&X, a, nd, V(b, a)->dims, V(b, a)->ndim, 0);
        for (i = 0; i < nd - 2; i++) {
            same &= Y.dims[i] == O.dims[i];
            ones &= Y.dims[i] == 1 && X.dims[i] == O.dims[i];
        }
        if ((g = ss__tb_grad(b, w, &acc, err)) < 0)
            return g;
        if (same) {         /* dB = A^T dY, batch by batch */
            mm_op(&X, a, nd, V(b, a)->dims, V(b, a)->ndim, 1);
            mm_op(&Y, gy, nd, V(b, gy)->dims, V(b, gy)->ndim, 0);
        } else if (ones) {  /* a shared weight: rows of every batch */
            int64_t r = V(b, a)->numel / V(b, a)->dims[V(b, a)->ndim - 1];
            int64_t ad[2] = { r, V(b, a)->dims[V(b, a)->ndim - 1] };
            int64_t yd[2] = { r, V(b, gy)->dims[V(b, gy)->ndim - 1] };

            mm_op(&X, a, 2, ad, 2, 1);
            mm_op(&Y, gy, 2, yd, 2, 0);
        } else {
            mm_op(&X, a, nd, V(b, a)->dims, V(b, a)->ndim, 1);
            mm_op(&Y, gy, nd, V(b, gy)->dims, V(b, gy)->ndim, 0);
            return mm_reduced(b, n, &X, &Y, nd, O.dims, g, acc,
                              V(b, w)->ndim, V(b, w)->dims, err);
        }
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, alpha, "MatMul dB",
                          err)) < 0)
            return rc;
    }
    return 0;
}
