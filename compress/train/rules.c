/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gradient rules: one row per op (the table at the bottom), each a
 * forward emitter and a backward emitter over the builder of build.c.
 *
 * Conventions.  A forward emitter finds its outputs made and shaped (by
 * the engine's infer) and adds the steps that compute them, saving what
 * its backward reads.  A backward emitter reads the output gradient(s)
 * with ss__tb_grad_have() and, for each input in the row's diff mask that
 * needs a gradient, asks ss__tb_grad() for the target and whether to
 * write or add, and adds the steps.  Matrix products, forward and
 * backward, are oneDNN matmuls on (possibly transposed, by strides)
 * operands: dA = dC B^T, dB = A^T dC.  Conv runs oneDNN's convolution
 * forward (training), backward-data and backward-weights on run-time
 * weights.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/ops/ops.h"

static const char *
label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

static const ss__tv_t *
V(const ss__tb_t *b, int v)
{
    return &b->t->tv[v];
}

static void
step_init(ss__step_t *s, ss__kern_fn fn, const char *what,
          const ss_node_t *n)
{
    memset(s, 0, sizeof(*s));
    s->fn = fn;
    s->what = what;
    s->node = n;
}

static int64_t
prod(const int64_t *d, int from, int to)
{
    int64_t p = 1;

    for (int i = from; i < to; i++)
        p *= d[i];
    return p;
}

/* ---- broadcasting helpers ------------------------------------------------ */

/* aux for k_binary / k_binary_bwd / k_reduce / k_expand. */
static int
bc_aux(ss__step_t *s, int fnd, const int64_t *fdims, int n, const int *nd,
       const int64_t *const *dims, ss_err_t *err)
{
    ss__bc_t *bc = ss_malloc(sizeof(*bc));

    if (bc == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a step");
    ss__bc_init(bc, fnd, fdims, n, nd, dims);
    s->aux = bc;
    return 0;
}

/* A one-input step between the full shape fdims and another shape
 * odims (numpy-aligned to it): k_reduce sums src (full) into dst (odims),
 * k_expand broadcasts src (odims) to dst (full); both times scale. */
static int
emit_bc1(ss__tb_t *b, const ss_node_t *n, ss__kern_fn fn, const char *what,
         int src, int dst, int fnd, const int64_t *fdims, int ond,
         const int64_t *odims, float scale, int acc, ss_err_t *err)
{
    ss__step_t s;
    int nd[2] = { fnd, ond };
    const int64_t *dd[2] = { fdims, odims };
    int rc;

    step_init(&s, fn, what, n);
    s.n_in = 1;
    s.in[0] = src;
    s.n_out = 1;
    s.out[0] = dst;
    s.acc = acc ? 1 : 0;
    s.f[0] = scale;
    if ((rc = bc_aux(&s, fnd, fdims, 2, nd, dd, err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}

/* Sums src (full shape fdims) into dst of shape ddims, times scale. */
static int
emit_reduce(ss__tb_t *b, const ss_node_t *n, int src, int fnd,
            const int64_t *fdims, int dst, int dnd, const int64_t *ddims,
            float scale, int acc, ss_err_t *err)
{
    return emit_bc1(b, n, ss__k_reduce, "reduce", src, dst, fnd, fdims, dnd,
                    ddims, scale, acc, err);
}

/* dst (full shape fdims) = broadcast(src of shape sdims) * scale. */
static int
emit_expand(ss__tb_t *b, const ss_node_t *n, int src, int snd,
            const int64_t *sdims, int dst, int fnd, const int64_t *fdims,
            float scale, int acc, ss_err_t *err)
{
    return emit_bc1(b, n, ss__k_expand, "expand", src, dst, fnd, fdims, snd,
                    sdims, scale, acc, err);
}

static int
emit_copy(ss__tb_t *b, const ss_node_t *n, int src, int dst, int acc,
          ss_err_t *err)
{
    ss__step_t s;

    step_init(&s, V(b, dst)->act16 ? ss__k_copy16 : ss__k_copy, "copy", n);
    s.n_in = 1;
    s.in[0] = src;
    s.n_out = 1;
    s.out[0] = dst;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}

/* The start of a backward that writes input 0's gradient from output
 * 0's: 1 with *gy, *gx and *acc set, or 0 when dy does not exist or x
 * needs no gradient (nothing to emit), or a negative code. */
static int
dx_target(ss__tb_t *b, const ss_node_t *n, int *gy, int *gx, int *acc,
          ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);

    *gy = ss__tb_grad_have(b, ss__tb_out(b, n, 0));
    if (*gy < 0 || !ss__tb_needs(b, x))
        return 0;
    if ((*gx = ss__tb_grad(b, x, acc, err)) < 0)
        return *gx;
    return 1;
}

/* A step reading dy as in[0] and writing (acc: adding) dx as out[0]. */
static void
dx_step(ss__step_t *s, ss__kern_fn fn, const char *what, const ss_node_t *n,
        int gy, int gx, int acc)
{
    step_init(s, fn, what, n);
    s->n_in = 1;
    s->in[0] = gy;
    s->n_out = 1;
    s->out[0] = gx;
    s->acc = acc ? 1 : 0;
}

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
static int
low_prim(ss__tb_t *b, ss_dnn_matmul_desc_t *d, ss_dnn_conv_desc_t *cd,
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

/* out = A x B (+ bias broadcast, as a post-op), written or added. */
static int
emit_mm(ss__tb_t *b, const ss_node_t *n, const mmop_t *A, const mmop_t *B,
        int out, int acc, int bias, const char *what, ss_err_t *err)
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
    step_init(&s, ss__k_dnn, what, n);
    if ((rc = low_prim(b, &d, NULL, 0, 0, &s.prim, err)) < 0)
        return rc;
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

/* ---- views ------------------------------------------------------------- */

static int
fwd_view(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);
    ss__tv_t *yv = &b->t->tv[y];

    if (yv->numel != V(b, x)->numel)
        return ss_err_set(err, SS_EINTERNAL, "trainer: node '%s' changes "
                          "the element count", label(n));
    yv->kind = SS__TV_VIEW;
    yv->alias = x;
    return 0;
}

/* Whether value x's bytes are a parameter's (its gradient is the flat
 * array's slot, never a view of another gradient). */
static bool
param_root(const ss__tb_t *b, int x)
{
    while (V(b, x)->kind == SS__TV_VIEW)
        x = V(b, x)->alias;
    return V(b, x)->kind == SS__TV_PARAM;
}

static int
bwd_view(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), gx, acc;

    if (!ss__tb_needs(b, x) || gy < 0)
        return 0;
    if (ss__tb_grad_have(b, x) < 0 && !param_root(b, x)) {
        /* nothing wrote dx yet: it is dy's bytes; later contributions
         * add into them (dy has no other reader) */
        if ((gx = ss__tv_view(b, gy, V(b, x)->ndim, V(b, x)->dims, err)) < 0)
            return gx;
        b->grad[x] = gx;
        return 0;
    }
    if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
        return gx;
    return emit_copy(b, n, gy, gx, acc, err);
}

/* ---- unary ------------------------------------------------------------- */

static int
unary_code(const ss_node_t *n, float *alpha)
{
    static const struct { const char *op; int code; } map[] = {
        { "Relu", SS__U_RELU }, { "LeakyRelu", SS__U_LEAKY },
        { "Erf", SS__U_ERF }, { "Sqrt", SS__U_SQRT }, { "Tanh", SS__U_TANH },
        { "Sigmoid", SS__U_SIGMOID }, { "Exp", SS__U_EXP },
        { "Log", SS__U_LOG }, { "Neg", SS__U_NEG },
        { "Reciprocal", SS__U_RECIP }, { "Abs", SS__U_ABS },
        { "Softplus", SS__U_SOFTPLUS }, { "Gelu", SS__U_GELU },
    };

    *alpha = 0;
    if (strcmp(n->op_type, "LeakyRelu") == 0)
        *alpha = ss__attr_float(n, "alpha", 0.01f);
    if (strcmp(n->op_type, "Gelu") == 0 &&
        strcmp(ss__attr_string(n, "approximate", "none"), "tanh") == 0)
        return SS__U_GELU_TANH;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].op, n->op_type) == 0)
            return map[i].code;
    return 0;
}

static int
fwd_unary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc;

    step_init(&s, ss__k_unary, n->op_type, n);
    s.op = unary_code(n, &s.f[0]);
    s.n_in = 1;
    s.in[0] = ss__tb_in(b, n, 0);
    s.n_out = 1;
    s.out[0] = ss__tb_out(b, n, 0);
    if (V(b, s.in[0])->dtype != SS_DTYPE_F32 && !V(b, s.in[0])->act16)
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' (%s) on "
                          "non-float data", label(n), n->op_type);
    /* element by element: any layout, the output's is the input's */
    b->t->tv[s.out[0]].lay = V(b, s.in[0])->lay;
    if ((rc = ss__nn_eltwise(b, &s, 0, err)) < 0)
        return rc;
    if (V(b, s.in[0])->act16) {
        /* bf16 in, bf16 out on oneDNN; else the C kernel on f32 */
        if (rc == 1)
            ss__tv_set_act16(b, s.out[0]);
        else if ((rc = ss__tb_node_f32(b, n, err)) < 0)
            return rc;
        s.in[0] = ss__tb_in(b, n, 0);
    }
    return ss__step_add(b, &s, err);
}

static int
bwd_unary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    dx_step(&s, ss__k_unary_bwd, n->op_type, n, gy, gx, acc);
    s.op = unary_code(n, &s.f[0]);
    s.n_in = 3;
    s.in[1] = ss__tb_in(b, n, 0);
    s.in[2] = ss__tb_out(b, n, 0);
    if ((rc = ss__nn_eltwise(b, &s, 1, err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}

/* ---- binary ------------------------------------------------------------ */

static int
binary_code(const ss_node_t *n)
{
    const char *op = n->op_type;

    return strcmp(op, "Add") == 0 ? SS__B_ADD
         : strcmp(op, "Sub") == 0 ? SS__B_SUB
         : strcmp(op, "Mul") == 0 ? SS__B_MUL
         : strcmp(op, "Div") == 0 ? SS__B_DIV
         : SS__B_POW;
}

/* The operands node n's binary step reads, and its output's layout:
 * operands of one shape are taken in the layout of the first that is
 * not plain (the step is element by element: a residual Add of two
 * blocked activations stays blocked); broadcasting ones plain.  The
 * forward makes the copies, the backward finds the same ones. */
static int
bin_operands(ss__tb_t *b, const ss_node_t *n, int *a, int *c,
             ss_dnn_layout_t *l, ss_err_t *err)
{
    const ss__tv_t *av, *cv, *yv;

    *a = ss__tb_in(b, n, 0);
    *c = ss__tb_in(b, n, 1);
    av = V(b, *a);
    cv = V(b, *c);
    yv = V(b, ss__tb_out(b, n, 0));
    *l = SS_DNN_PLAIN;
    if (av->ndim == 4 && av->ndim == cv->ndim && av->ndim == yv->ndim &&
        (av->dtype == SS_DTYPE_F32 || av->act16) &&
        (cv->dtype == SS_DTYPE_F32 || cv->act16) &&
        memcmp(av->dims, cv->dims, 4 * sizeof(av->dims[0])) == 0 &&
        memcmp(av->dims, yv->dims, 4 * sizeof(av->dims[0])) == 0)
        *l = av->lay != SS_DNN_PLAIN ? av->lay : cv->lay;
    if (*l == SS_DNN_PLAIN && av->dtype != SS_DTYPE_F32 && !av->act16)
        return 0;       /* fwd_binary refuses it */
    if ((*a = ss__tb_lay(b, *a, *l, err)) < 0)
        return *a;
    if ((V(b, *c)->dtype == SS_DTYPE_F32 || V(b, *c)->act16) &&
        (*c = ss__tb_lay(b, *c, *l, err)) < 0)
        return *c;
    return 0;
}

/* A residual Add of two bf16 activations of one shape and layout:
 * oneDNN's binary in bf16 (sums in f32, rounds once). */
static int
fwd_add16(ss__tb_t *b, const ss_node_t *n, int a, int c, ss_dnn_layout_t l,
          ss_err_t *err)
{
    int y = ss__tb_out(b, n, 0);
    ss_dnn_binary_desc_t d;
    ss__step_t s;
    int rc;

    memset(&d, 0, sizeof(d));
    d.dtype = SS_DTYPE_BF16;
    d.alg = SS_DNN_ADD;
    d.a_ndim = d.b_ndim = 4;
    memcpy(d.a_dims, V(b, a)->dims, 4 * sizeof(d.a_dims[0]));
    memcpy(d.b_dims, V(b, c)->dims, 4 * sizeof(d.b_dims[0]));
    d.layout = l;
    step_init(&s, ss__k_dnn, "Add", n);
    if ((rc = ss_dnn_binary_new(&d, &s.prim, err)) < 0)
        return ss_err_wrap(err, rc, "trainer: node '%s' (Add): ", label(n));
    s.n_in = 2;
    s.in[0] = a;
    s.in[1] = c;
    s.n_out = 1;
    s.out[0] = y;
    b->t->tv[y].lay = l;
    ss__tv_set_act16(b, y);
    return ss__step_add(b, &s, err);
}

static int
fwd_binary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a, c, y = ss__tb_out(b, n, 0);
    int nd[2];
    const int64_t *dd[2];
    ss_dnn_layout_t l;
    ss__step_t s;
    int rc;

    if ((rc = bin_operands(b, n, &a, &c, &l, err)) < 0)
        return rc;
    if (V(b, a)->act16 || V(b, c)->act16) {
        if (binary_code(n) == SS__B_ADD && V(b, a)->act16 &&
            V(b, c)->act16 && V(b, a)->lay == l && V(b, c)->lay == l &&
            V(b, a)->numel == V(b, y)->numel &&
            V(b, c)->numel == V(b, y)->numel)
            return fwd_add16(b, n, a, c, l, err);
        /* the C kernel on f32 copies */
        if ((rc = ss__tb_node_f32(b, n, err)) < 0 ||
            (rc = bin_operands(b, n, &a, &c, &l, err)) < 0)
            return rc;
    }
    b->t->tv[y].lay = l;
    nd[0] = V(b, a)->ndim;
    nd[1] = V(b, c)->ndim;
    dd[0] = V(b, a)->dims;
    dd[1] = V(b, c)->dims;

    if (V(b, y)->dtype != SS_DTYPE_F32 || V(b, a)->dtype != SS_DTYPE_F32 ||
        V(b, c)->dtype != SS_DTYPE_F32)
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' (%s) on "
                          "non-float data", label(n), n->op_type);
    step_init(&s, ss__k_binary, n->op_type, n);
    s.op = binary_code(n);
    s.n_in = 2;
    s.in[0] = a;
    s.in[1] = c;
    s.n_out = 1;
    s.out[0] = y;
    if ((rc = bc_aux(&s, V(b, y)->ndim, V(b, y)->dims, 2, nd, dd, err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}

static int
bwd_binary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a, c, y = ss__tb_out(b, n, 0), gy = ss__tb_grad_have(b, y);
    int op = binary_code(n);
    ss_dnn_layout_t l;
    int rc0;

    if (gy < 0)
        return 0;
    if ((rc0 = bin_operands(b, n, &a, &c, &l, err)) < 0)
        return rc0;
    for (int slot = 0; slot < 2; slot++) {
        int x = slot ? c : a, gx, acc, rc;
        int nd[3] = { V(b, a)->ndim, V(b, c)->ndim, V(b, x)->ndim };
        const int64_t *dd[3] = { V(b, a)->dims, V(b, c)->dims,
                                 V(b, x)->dims };
        ss__step_t s;

        if (!ss__tb_needs(b, x))
            continue;
        /* d(a+b)/db = 1, b of dy's shape and layout, nothing wrote db
         * yet: db is dy's bytes (a's copy was taken first; dy has no
         * other reader, later contributions add into them) */
        if (op == SS__B_ADD && slot && ss__tb_grad_have(b, x) < 0 &&
            V(b, x)->numel == V(b, y)->numel &&
            V(b, x)->lay == V(b, gy)->lay &&
            V(b, x)->act16 == V(b, gy)->act16 && !param_root(b, x)) {
            if ((gx = ss__tv_view(b, gy, V(b, x)->ndim, V(b, x)->dims,
                                  err)) < 0)
                return gx;
            b->t->tv[gx].lay = V(b, gy)->lay;
            b->t->tv[gx].act16 = V(b, gy)->act16;
            b->grad[x] = gx;
            continue;
        }
        if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
            return gx;
        /* d(a+b)/da = 1: of the same shape (a residual), a copy */
        if ((op == SS__B_ADD || (op == SS__B_SUB && !slot)) &&
            V(b, x)->numel == V(b, y)->numel &&
            V(b, x)->lay == V(b, y)->lay &&
            V(b, gx)->dtype == V(b, gy)->dtype) {
            if ((rc = emit_copy(b, n, gy, gx, acc, err)) < 0)
                return rc;
            continue;
        }
        /* d(a+b)/da = 1, d(a-b)/db = -1: a plain (reducing) copy */
        if (op == SS__B_ADD || op == SS__B_SUB) {
            if ((rc = emit_reduce(b, n, gy, V(b, y)->ndim, V(b, y)->dims,
                                  gx, V(b, x)->ndim, V(b, x)->dims,
                                  op == SS__B_SUB && slot ? -1.0f : 1.0f,
                                  acc, err)) < 0)
                return rc;
            continue;
        }
        step_init(&s, ss__k_binary_bwd, n->op_type, n);
        s.op = op;
        s.p[0] = slot;
        s.n_in = 4;
        s.in[0] = gy;
        s.in[1] = a;
        s.in[2] = c;
        s.in[3] = y;
        s.n_out = 1;
        s.out[0] = gx;
        s.acc = acc ? 1 : 0;
        if ((rc = bc_aux(&s, V(b, y)->ndim, V(b, y)->dims, 3, nd, dd,
                         err)) < 0 ||
            (rc = ss__step_add(b, &s, err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- Gemm and MatMul --------------------------------------------------- */

static int
fwd_gemm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
    return emit_mm(b, n, &A, &B, y, 0, c, "Gemm", err);
}

static int
bwd_gemm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, "Gemm dA", err)) < 0)
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
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, "Gemm dB", err)) < 0)
            return rc;
    }
    if (c >= 0 && ss__tb_needs(b, c)) {
        if ((g = ss__tb_grad(b, c, &acc, err)) < 0)
            return g;
        if ((rc = emit_reduce(b, n, gy, 2, V(b, gy)->dims, g, V(b, c)->ndim,
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

static int
fwd_matmul(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int y = ss__tb_out(b, n, 0), nd, rc;
    mmop_t A, B;

    if ((rc = matmul_ranks(b, n, a, w, &nd, err)) < 0)
        return rc;
    mm_op(&A, a, nd, V(b, a)->dims, V(b, a)->ndim, 0);
    mm_op(&B, w, nd, V(b, w)->dims, V(b, w)->ndim, 0);
    return emit_mm(b, n, &A, &B, y, 0, -1, "MatMul", err);
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
    if ((rc = emit_mm(b, n, X, Y, tmp, 0, -1, "MatMul' batches", err)) < 0)
        return rc;
    return emit_reduce(b, n, tmp, nd, td, out, ond, od, 1.0f, acc, err);
}

static int
bwd_matmul(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int a = ss__tb_in(b, n, 0), w = ss__tb_in(b, n, 1);
    int y = ss__tb_out(b, n, 0), gy = ss__tb_grad_have(b, y);
    int nd, rc, g, acc, i;
    mmop_t X, Y, O;

    if (gy < 0)
        return 0;
    if ((rc = matmul_ranks(b, n, a, w, &nd, err)) < 0)
        return rc;
    mm_op(&O, y, nd, V(b, y)->dims, V(b, y)->ndim, 0);
    if (ss__tb_needs(b, a)) {
        int bcast = 0;

        mm_op(&X, a, nd, V(b, a)->dims, V(b, a)->ndim, 0);
        for (i = 0; i < nd - 2; i++)
            bcast |= X.dims[i] != O.dims[i];
        if ((g = ss__tb_grad(b, a, &acc, err)) < 0)
            return g;
        mm_op(&X, gy, nd, V(b, gy)->dims, V(b, gy)->ndim, 0);
        mm_op(&Y, w, nd, V(b, w)->dims, V(b, w)->ndim, 1);
        if (bcast) {
            /* every batch's product, then the sum over broadcast ones */
            if ((rc = mm_reduced(b, n, &X, &Y, nd, O.dims, g, acc,
                                 V(b, a)->ndim, V(b, a)->dims, err)) < 0)
                return rc;
        } else if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, "MatMul dA",
                                 err)) < 0) {
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
        if ((rc = emit_mm(b, n, &X, &Y, g, acc, -1, "MatMul dB", err)) < 0)
            return rc;
    }
    return 0;
}

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

static int
fwd_softmax(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc;

    step_init(&s, ss__k_softmax, n->op_type, n);
    s.op = strcmp(n->op_type, "LogSoftmax") == 0;
    s.n_in = 1;
    s.in[0] = ss__tb_in(b, n, 0);
    s.n_out = 1;
    s.out[0] = ss__tb_out(b, n, 0);
    if ((rc = softmax_geom(b, n, s.in[0], s.p, err)) < 0)
        return rc;
    {
        /* oneDNN's vectorized softmax over the middle of [outer, n,
         * inner]: the trainer's loop costs a fifth of a transformer
         * step (attention); its own kernel stays for what oneDNN
         * refuses */
        ss_dnn_softmax_desc_t d;
        ss_err_t e2;

        memset(&d, 0, sizeof(d));
        d.ndim = 3;
        memcpy(d.dims, s.p, 3 * sizeof(int64_t));
        d.axis = 1;
        d.log = s.op;
        if (ss_dnn_softmax_new(&d, &s.prim, &e2) == 0)
            s.fn = ss__k_dnn;
    }
    return ss__step_add(b, &s, err);
}

static int
bwd_softmax(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    dx_step(&s, ss__k_softmax_bwd, n->op_type, n, gy, gx, acc);
    s.op = strcmp(n->op_type, "LogSoftmax") == 0;
    s.n_in = 2;
    s.in[1] = ss__tb_out(b, n, 0);
    if ((rc = softmax_geom(b, n, ss__tb_in(b, n, 0), s.p, err)) < 0)
        return rc;
    if (!acc) {
        /* oneDNN's, as the forward; it cannot add, so a second
         * contribution keeps the trainer's kernel */
        ss_dnn_softmax_desc_t d;
        ss_err_t e2;

        memset(&d, 0, sizeof(d));
        d.ndim = 3;
        memcpy(d.dims, s.p, 3 * sizeof(int64_t));
        d.axis = 1;
        d.log = s.op;
        if (ss_dnn_softmax_bwd_new(&d, &s.prim, &e2) == 0)
            s.fn = ss__k_dnn;
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

static int
fwd_layernorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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

static int
bwd_layernorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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

static int
fwd_batchnorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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

static int
bwd_batchnorm(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
    if ((rc = low_prim(b, NULL, &d, pass, bias >= 0, &s.prim, err)) < 0)
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
    return acc ? emit_copy(b, n, tmp, out, 1, err) : 0;
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
 * else f32, counted as low_prim does). */
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

static int
fwd_conv(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
        step_init(&s, ss__k_chsum, "Conv dB", n);
        s.n_in = 1;
        s.in[0] = gy;
        s.n_out = 1;
        s.out[0] = g;
        s.acc = acc ? 1 : 0;
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
        if (acc && (rc = emit_copy(b, n, tmp, g, 1, err)) < 0)
            return rc;
    }
    return 0;
}

static int
bwd_conv(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
        if ((rc = emit_reduce(b, n, gy, 3, fd, g, 3, bd, 1.0f, acc,
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

static int
fwd_pool(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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

static int
bwd_pool(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    dx_step(&s, ss__k_pool_bwd, n->op_type, n, gy, gx, acc);
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

/* ---- Concat, Slice: index maps ------------------------------------------ */

/*
 * Concat and Slice move elements without arithmetic, so their backward
 * is a gather or scatter through an index map, and the map is made once,
 * at build time, by running the op's own reference kernel on int64
 * element ids in place of the data: whatever the engine's Slice does with
 * negative, clamped or stepped ranges, the map does too, with no second
 * reading of the attributes to keep in line.
 */

/* Runs node n's reference kernel with input k replaced by ids (and
 * every other input as the graph has it, constant or a same-shaped id
 * tensor when it is the data of another Concat input).  base[i] is the
 * first id of input i (ids of input i run base[i] .. + numel).  *ys gets
 * the output's ids (ss_free), numel(y) of them. */
static int
run_ids(ss__tb_t *b, const ss_node_t *n, int n_data, int64_t **ys,
        ss_err_t *err)
{
    const ss_op_t *op = ss__op_find(n->op_type);
    ss_tensor_t in[SS__STEP_IN], out;
    const ss_tensor_t *inp[SS__STEP_IN];
    const ss__tv_t *yv = V(b, ss__tb_out(b, n, 0));
    int64_t base = 0;
    int k, rc = 0;

    *ys = NULL;
    if (op == NULL || n->n_inputs > SS__STEP_IN)
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' (%s): no "
                          "index map", label(n), n->op_type);
    memset(in, 0, sizeof(in));
    for (k = 0; k < n->n_inputs; k++) {
        int v = ss__tb_in(b, n, k);
        const ss__tv_t *xv;

        inp[k] = NULL;
        if (v < 0)
            continue;
        xv = V(b, v);
        in[k].dtype = xv->dtype;
        in[k].ndim = xv->ndim;
        memcpy(in[k].dims, xv->dims, sizeof(in[k].dims));
        inp[k] = &in[k];
        if (k < n_data) {
            int64_t *id = ss_malloc((size_t)(xv->numel ? xv->numel : 1) *
                                    sizeof(int64_t));

            if (id == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for an index "
                                "map");
                goto done;
            }
            for (int64_t i = 0; i < xv->numel; i++)
                id[i] = base + i;
            base += xv->numel;
            in[k].dtype = SS_DTYPE_I64;
            in[k].data = id;
        } else if (xv->kind == SS__TV_CONST) {
            in[k].data = xv->cdata->data;
        } else {
            rc = ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s': input %d "
                            "is computed at run time, not a constant",
                            n->op_type, label(n), k);
            goto done;
        }
    }
    memset(&out, 0, sizeof(out));
    out.dtype = SS_DTYPE_I64;
    out.ndim = yv->ndim;
    memcpy(out.dims, yv->dims, sizeof(out.dims));
    if ((out.data = ss_malloc((size_t)(yv->numel ? yv->numel : 1) *
                              sizeof(int64_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for an index map");
        goto done;
    }
    if ((rc = op->run(n, b->g->opset, inp, &out, err)) < 0) {
        ss_free(out.data);
        goto done;
    }
    *ys = out.data;
done:
    for (k = 0; k < n_data && k < n->n_inputs; k++)
        if (inp[k] != NULL)
            ss_free(in[k].data);
    return rc;
}

/* out (+)= in through map (aux, taken): gather out[j] = in[map[j]], or
 * scatter out[map[i]] = in[i] over a zeroed out. */
static int
emit_index(ss__tb_t *b, const ss_node_t *n, int scatter, int64_t *map,
           int in, int out, int acc, ss_err_t *err)
{
    ss__step_t s;

    dx_step(&s, ss__k_index, scatter ? "scatter" : "gather", n, in, out,
            acc);
    s.aux = map;
    s.op = scatter;
    return ss__step_add(b, &s, err);
}

static int
bwd_concat(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int y = ss__tb_out(b, n, 0), gy = ss__tb_grad_have(b, y);
    int64_t *ys = NULL, base = 0, ny = V(b, y)->numel;
    int k, rc = 0;

    if (gy < 0)
        return 0;
    if ((rc = run_ids(b, n, n->n_inputs, &ys, err)) < 0)
        return rc;
    for (k = 0; k < n->n_inputs; k++) {
        int x = ss__tb_in(b, n, k), gx, acc;
        int64_t nx = V(b, x)->numel, *map;

        if (!ss__tb_needs(b, x)) {
            base += nx;
            continue;
        }
        if ((map = ss_malloc((size_t)(nx ? nx : 1) * sizeof(*map))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for an index map");
            break;
        }
        /* input k's ids sit somewhere in y: invert */
        for (int64_t o = 0; o < ny; o++)
            if (ys[o] >= base && ys[o] < base + nx)
                map[ys[o] - base] = o;
        base += nx;
        if ((gx = ss__tb_grad(b, x, &acc, err)) < 0) {
            ss_free(map);
            rc = gx;
            break;
        }
        if ((rc = emit_index(b, n, 0, map, gy, gx, acc, err)) < 0)
            break;
    }
    ss_free(ys);
    return rc;
}

static int
bwd_slice(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    int64_t *ys;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0 ||
        (rc = run_ids(b, n, 1, &ys, err)) < 0)
        return rc;
    return emit_index(b, n, 1, ys, gy, gx, acc, err);
}

/* ---- Where ------------------------------------------------------------- */

/* dX = reduce(Where(c, dy, 0)), dY = reduce(Where(c, 0, dy)): the
 * engine's Where kernel on the condition the forward read. */
static int
bwd_where(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int c = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), zero = -1;
    const ss__tv_t *yv = V(b, y);
    int64_t one = 1;
    ss__step_t s;

    if (gy < 0)
        return 0;
    for (int slot = 1; slot <= 2; slot++) {
        int x = ss__tb_in(b, n, slot), gx, acc, tmp, rc;
        const ss__tv_t *xv;

        if (!ss__tb_needs(b, x))
            continue;
        if (zero < 0) {
            if ((zero = ss__tv_new(b, SS_DTYPE_F32, 1, &one, err)) < 0)
                return zero;
            step_init(&s, ss__k_zero, "zero", n);
            s.n_out = 1;
            s.out[0] = zero;
            if ((rc = ss__step_add(b, &s, err)) < 0)
                return rc;
        }
        if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
            return gx;
        xv = V(b, x);
        /* straight into dx when it has y's shape and is written */
        tmp = gx;
        if ((acc || xv->numel != yv->numel) &&
            (tmp = ss__tv_new(b, SS_DTYPE_F32, yv->ndim, yv->dims,
                              err)) < 0)
            return tmp;
        step_init(&s, ss__k_ref, "Where'", n);
        s.ref = ss__op_find("Where");
        s.n_in = 3;
        s.in[0] = c;
        s.in[1] = slot == 1 ? gy : zero;
        s.in[2] = slot == 1 ? zero : gy;
        s.n_out = 1;
        s.out[0] = tmp;
        if (s.ref == NULL)
            return ss_err_set(err, SS_EINTERNAL, "trainer: no Where kernel");
        if ((rc = ss__step_add(b, &s, err)) < 0)
            return rc;
        if (tmp != gx &&
            (rc = emit_reduce(b, n, tmp, yv->ndim, yv->dims, gx, xv->ndim,
                              xv->dims, 1.0f, acc, err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- Transpose ---------------------------------------------------------- */

/* aux for k_transpose: int64 [0] nd, [1..8] in dims, [9..16] perm */
static int
transpose_step(ss__tb_t *b, const ss_node_t *n, int x, const int64_t *perm,
               int y, int acc, ss_err_t *err)
{
    const ss__tv_t *xv = V(b, x);
    ss__step_t s;

    step_init(&s, ss__k_transpose, "Transpose", n);
    s.p[0] = xv->ndim;
    for (int i = 0; i < xv->ndim; i++) {
        s.p[1 + i] = xv->dims[i];
        s.p[9 + i] = perm[i];
    }
    s.n_in = 1;
    s.in[0] = x;
    s.n_out = 1;
    s.out[0] = y;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}

static int
read_perm(ss__tb_t *b, const ss_node_t *n, int r, int64_t *perm,
          ss_err_t *err)
{
    const int64_t *pv;
    int np = ss__attr_ints(n, "perm", &pv);

    if (r > 8)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Transpose '%s' of rank "
                          "%d", label(n), r);
    for (int i = 0; i < r; i++)
        perm[i] = np < 0 ? r - 1 - i : pv[i];
    (void)b;
    return 0;
}

static int
fwd_transpose(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);
    int64_t perm[8];
    int rc;

    if ((rc = read_perm(b, n, V(b, x)->ndim, perm, err)) < 0)
        return rc;
    return transpose_step(b, n, x, perm, ss__tb_out(b, n, 0), 0, err);
}

static int
bwd_transpose(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, r = V(b, ss__tb_in(b, n, 0))->ndim, rc;
    int64_t perm[8], inv[8];

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if ((rc = read_perm(b, n, r, perm, err)) < 0)
        return rc;
    for (int i = 0; i < r; i++)
        inv[perm[i]] = i;
    return transpose_step(b, n, gy, inv, gx, acc, err);
}

/* ---- Gather ----------------------------------------------------------- */

static int
bwd_gather(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int ix = ss__tb_in(b, n, 1), gy, gx, acc, rc;
    const ss__tv_t *xv = V(b, ss__tb_in(b, n, 0));
    int64_t axis = ss__attr_int(n, "axis", 0);
    ss__step_t s;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if (axis < 0)
        axis += xv->ndim;
    dx_step(&s, ss__k_gather_bwd, "Gather'", n, gy, gx, acc);
    s.n_in = 2;
    s.in[1] = ix;
    s.p[0] = prod(xv->dims, 0, (int)axis);
    s.p[1] = xv->dims[axis];
    s.p[2] = prod(xv->dims, (int)axis + 1, xv->ndim);
    s.p[3] = V(b, ix)->numel;
    return ss__step_add(b, &s, err);
}

/* ---- ReduceMean / ReduceSum ----------------------------------------------- */

/* The input's shape with reduced axes as 1 (keepdims) and the count. */
static int
reduce_geom(ss__tb_t *b, const ss_node_t *n, int64_t *kd, int64_t *count,
            ss_err_t *err)
{
    const ss__tv_t *xv = V(b, ss__tb_in(b, n, 0));
    int64_t axes[SS_MAX_DIMS];
    int na = -1, r = xv->ndim, i;
    const int64_t *av;
    int ai = ss__tb_in(b, n, 1);

    if (ai >= 0) {
        const ss__tv_t *a = V(b, ai);

        if (a->kind != SS__TV_CONST || a->numel > SS_MAX_DIMS)
            return ss_err_set(err, SS_EUNSUPP, "trainer: %s '%s' with axes "
                              "not constant", n->op_type, label(n));
        na = (int)a->numel;
        for (i = 0; i < na; i++)
            axes[i] = ((const int64_t *)a->cdata->data)[i];
    } else if ((na = ss__attr_ints(n, "axes", &av)) >= 0) {
        if (na > SS_MAX_DIMS)
            return ss_err_set(err, SS_EINVAL, "trainer: %s '%s': too many "
                              "axes", n->op_type, label(n));
        for (i = 0; i < na; i++)
            axes[i] = av[i];
    }
    memcpy(kd, xv->dims, sizeof(int64_t) * (size_t)r);
    *count = 1;
    if (na <= 0) {
        if (na == 0 && ss__attr_int(n, "noop_with_empty_axes", 0))
            return 0;
        for (i = 0; i < r; i++) {
            *count *= kd[i];
            kd[i] = 1;
        }
        return 0;
    }
    for (i = 0; i < na; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];

        if (a < 0 || a >= r)
            return ss_err_set(err, SS_EINVAL, "trainer: %s '%s': axis out "
                              "of range", n->op_type, label(n));
        if (kd[a] != 1 || xv->dims[a] == 1) {
            *count *= kd[a];
            kd[a] = 1;
        }
    }
    return 0;
}

static int
fwd_reduce(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0), rc;
    int64_t kd[SS_MAX_DIMS], count;
    float scale;

    if ((rc = reduce_geom(b, n, kd, &count, err)) < 0)
        return rc;
    scale = strcmp(n->op_type, "ReduceMean") == 0 ? 1.0f / (float)count
                                                  : 1.0f;
    return emit_reduce(b, n, x, V(b, x)->ndim, V(b, x)->dims, y,
                       V(b, x)->ndim, kd, scale, 0, err);
}

static int
bwd_reduce(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), gy, gx, acc, rc;
    int64_t kd[SS_MAX_DIMS], count;
    float scale;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if ((rc = reduce_geom(b, n, kd, &count, err)) < 0)
        return rc;
    scale = strcmp(n->op_type, "ReduceMean") == 0 ? 1.0f / (float)count
                                                  : 1.0f;
    return emit_expand(b, n, gy, V(b, x)->ndim, kd, gx, V(b, x)->ndim,
                       V(b, x)->dims, scale, acc, err);
}

/* ---- Expand ------------------------------------------------------------ */

static int
fwd_expand(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);

    return emit_expand(b, n, x, V(b, x)->ndim, V(b, x)->dims, y,
                       V(b, y)->ndim, V(b, y)->dims, 1.0f, 0, err);
}

static int
bwd_expand(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0), gy, gx, acc, rc;

    if ((rc = dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    return emit_reduce(b, n, gy, V(b, y)->ndim, V(b, y)->dims, gx,
                       V(b, x)->ndim, V(b, x)->dims, 1.0f, acc, err);
}

/* ---- the table ---------------------------------------------------------- */

#define D0 1u
#define D01 3u
#define D012 7u
#define D12 6u
#define DALL (~0u)
#define L SS__R_LAYOUT
#define LB (SS__R_LAYOUT | SS__R_BF16)

static const ss__rule_t rules[] = {
    /* op                diff  forward          backward          flags */
    { "Add",             D01,  fwd_binary,      bwd_binary,     LB },
    { "Sub",             D01,  fwd_binary,      bwd_binary,     L },
    { "Mul",             D01,  fwd_binary,      bwd_binary,     L },
    { "Div",             D01,  fwd_binary,      bwd_binary,     L },
    { "Pow",             D01,  fwd_binary,      bwd_binary,     L },
    { "Relu",            D0,   fwd_unary,       bwd_unary,      LB },
    { "LeakyRelu",       D0,   fwd_unary,       bwd_unary,      L },
    { "Erf",             D0,   fwd_unary,       bwd_unary,      L },
    { "Sqrt",            D0,   fwd_unary,       bwd_unary,      L },
    { "Tanh",            D0,   fwd_unary,       bwd_unary,      L },
    { "Sigmoid",         D0,   fwd_unary,       bwd_unary,      L },
    { "Exp",             D0,   fwd_unary,       bwd_unary,      L },
    { "Log",             D0,   fwd_unary,       bwd_unary,      L },
    { "Neg",             D0,   fwd_unary,       bwd_unary,      L },
    { "Reciprocal",      D0,   fwd_unary,       bwd_unary,      L },
    { "Abs",             D0,   fwd_unary,       bwd_unary,      L },
    { "Softplus",        D0,   fwd_unary,       bwd_unary,      L },
    { "Gelu",            D0,   fwd_unary,       bwd_unary,      LB },
    { "Gemm",            D012, fwd_gemm,        bwd_gemm,       0 },
    { "MatMul",          D01,  fwd_matmul,      bwd_matmul,     0 },
    { "Conv",            D012, fwd_conv,        bwd_conv,       LB },
    { "Softmax",         D0,   fwd_softmax,     bwd_softmax,    0 },
    { "LogSoftmax",      D0,   fwd_softmax,     bwd_softmax,    0 },
    { "LayerNormalization", D012, fwd_layernorm, bwd_layernorm, 0 },
    { "BatchNormalization", D012, fwd_batchnorm, bwd_batchnorm, LB },
    { "MaxPool",         D0,   fwd_pool,        bwd_pool,       LB },
    { "AveragePool",     D0,   fwd_pool,        bwd_pool,       LB },
    { "GlobalAveragePool", D0, fwd_pool,        bwd_pool,       LB },
    { "Transpose",       D0,   fwd_transpose,   bwd_transpose,  0 },
    { "Gather",          D0,   NULL,            bwd_gather,     0 },
    { "Concat",          DALL, NULL,            bwd_concat,     0 },
    { "Slice",           D0,   NULL,            bwd_slice,      0 },
    { "Where",           D12,  NULL,            bwd_where,      0 },
    { "ReduceMean",      D0,   fwd_reduce,      bwd_reduce,     0 },
    { "ReduceSum",       D0,   fwd_reduce,      bwd_reduce,     0 },
    { "Expand",          D0,   fwd_expand,      bwd_expand,     0 },
    { "Reshape",         D0,   fwd_view,        bwd_view,       0 },
    { "Flatten",         D0,   fwd_view,        bwd_view,       0 },
    { "Squeeze",         D0,   fwd_view,        bwd_view,       0 },
    { "Unsqueeze",       D0,   fwd_view,        bwd_view,       0 },
    { "Identity",        D0,   fwd_view,        bwd_view,       0 },
    { "Dropout",         D0,   fwd_view,        bwd_view,       0 },
    /* QAT: straight-through (rules_q.c); forward: the reference kernel */
    { "QuantizeLinear",  D01,  NULL,            ss__bwd_qdq,    0 },
    { "DequantizeLinear", D01, NULL,            ss__bwd_qdq,    0 },
};
#undef L
#undef LB

const ss__rule_t *
ss__rules(int *n)
{
    *n = (int)(sizeof(rules) / sizeof(rules[0]));
    return rules;
}

const ss__rule_t *
ss__rule_find(const char *op)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rules[i].op, op) == 0)
            return &rules[i];
    return NULL;
}
