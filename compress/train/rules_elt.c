/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Gradient rules of elementwise ops (unary, binary with numpy
 * broadcasting, Where) and of the broadcasting ones (ReduceMean,
 * ReduceSum, Expand).  Conventions: rules.c.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- unary ------------------------------------------------------------- */

/* A Clip bound (opset >= 11: an optional input, which must be a
 * constant) into *v; absent, *v stays what it was. */
static int
clip_bound(const ss__tb_t *b, const ss_node_t *n, int i, float *v,
           ss_err_t *err)
{
    int x = ss__tb_in(b, n, i);
    const ss__tv_t *xv;

    if (x < 0)
        return 0;
    xv = V(b, x);
    if (xv->kind != SS__TV_CONST || xv->numel != 1 ||
        xv->dtype != SS_DTYPE_F32)
        return ss_err_set(err, SS_EUNSUPP, "trainer: Clip '%s' with a %s "
                          "bound that is not a float constant", label(n),
                          i == 1 ? "min" : "max");
    *v = *(const float *)xv->cdata->data;
    return 0;
}

/* The ss__k_unary code of node n and its scalars f[0], f[1], or a
 * negative code. */
static int
unary_code(const ss__tb_t *b, const ss_node_t *n, float *f, ss_err_t *err)
{
    static const struct { const char *op; int code; } map[] = {
        { "Relu", SS__U_RELU }, { "LeakyRelu", SS__U_LEAKY },
        { "Erf", SS__U_ERF }, { "Sqrt", SS__U_SQRT }, { "Tanh", SS__U_TANH },
        { "Sigmoid", SS__U_SIGMOID }, { "Exp", SS__U_EXP },
        { "Log", SS__U_LOG }, { "Neg", SS__U_NEG },
        { "Reciprocal", SS__U_RECIP }, { "Abs", SS__U_ABS },
        { "Softplus", SS__U_SOFTPLUS }, { "Gelu", SS__U_GELU },
        { "Clip", SS__U_CLIP }, { "HardSigmoid", SS__U_HSIGMOID },
        { "HardSwish", SS__U_HSWISH },
    };
    const char *op = n->op_type;
    int rc;

    f[0] = f[1] = 0;
    if (strcmp(op, "LeakyRelu") == 0)
        f[0] = ss__attr_float(n, "alpha", 0.01f);
    if (strcmp(op, "HardSigmoid") == 0) {
        f[0] = ss__attr_float(n, "alpha", 0.2f);
        f[1] = ss__attr_float(n, "beta", 0.5f);
    }
    if (strcmp(op, "Clip") == 0) {
        /* bounds: attributes before opset 11, optional inputs since;
         * either may be absent (no bound on that side) */
        f[0] = ss__attr_float(n, "min", -INFINITY);
        f[1] = ss__attr_float(n, "max", INFINITY);
        if ((rc = clip_bound(b, n, 1, &f[0], err)) < 0 ||
            (rc = clip_bound(b, n, 2, &f[1], err)) < 0)
            return rc;
    }
    if (strcmp(op, "Gelu") == 0 &&
        strcmp(ss__attr_string(n, "approximate", "none"), "tanh") == 0)
        return SS__U_GELU_TANH;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].op, op) == 0)
            return map[i].code;
    return ss_err_set(err, SS_EINTERNAL, "trainer: no unary kernel for %s",
                      op);
}

int
ss__fwd_unary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    ss__step_t s;
    int rc;

    step_init(&s, ss__k_unary, n->op_type, n);
    if ((s.op = unary_code(b, n, s.f, err)) < 0)
        return s.op;
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

int
ss__bwd_unary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int gy, gx, acc, rc;
    ss__step_t s;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    ss__r_dx_step(&s, ss__k_unary_bwd, n->op_type, n, gy, gx, acc);
    if ((s.op = unary_code(b, n, s.f, err)) < 0)
        return s.op;
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
        return 0;       /* ss__fwd_binary refuses it */
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

int
ss__fwd_binary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
    if ((rc = ss__r_bc_aux(&s, V(b, y)->ndim, V(b, y)->dims, 2, nd, dd,
                           err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}

int
ss__bwd_binary(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
            V(b, x)->act16 == V(b, gy)->act16 && !ss__r_param_root(b, x)) {
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
            if ((rc = ss__r_copy(b, n, gy, gx, acc, err)) < 0)
                return rc;
            continue;
        }
        /* d(a+b)/da = 1, d(a-b)/db = -1: a plain (reducing) copy */
        if (op == SS__B_ADD || op == SS__B_SUB) {
            if ((rc = ss__r_reduce(b, n, gy, V(b, y)->ndim, V(b, y)->dims,
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
        if ((rc = ss__r_bc_aux(&s, V(b, y)->ndim, V(b, y)->dims, 3, nd, dd,
                               err)) < 0 ||
            (rc = ss__step_add(b, &s, err)) < 0)
            return rc;
    }
    return 0;
}

/* ---- Where ------------------------------------------------------------- */

/* dX = reduce(Where(c, dy, 0)), dY = reduce(Where(c, 0, dy)): the
 * engine's Where kernel on the condition the forward read. */
int
ss__bwd_where(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
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
            (rc = ss__r_reduce(b, n, tmp, yv->ndim, yv->dims, gx, xv->ndim,
                               xv->dims, 1.0f, acc, err)) < 0)
            return rc;
    }
    return 0;
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

int
ss__fwd_reduce(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0), rc;
    int64_t kd[SS_MAX_DIMS], count;
    float scale;

    if ((rc = reduce_geom(b, n, kd, &count, err)) < 0)
        return rc;
    scale = strcmp(n->op_type, "ReduceMean") == 0 ? 1.0f / (float)count
                                                  : 1.0f;
    return ss__r_reduce(b, n, x, V(b, x)->ndim, V(b, x)->dims, y,
                        V(b, x)->ndim, kd, scale, 0, err);
}

int
ss__bwd_reduce(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), gy, gx, acc, rc;
    int64_t kd[SS_MAX_DIMS], count;
    float scale;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    if ((rc = reduce_geom(b, n, kd, &count, err)) < 0)
        return rc;
    scale = strcmp(n->op_type, "ReduceMean") == 0 ? 1.0f / (float)count
                                                  : 1.0f;
    return ss__r_expand(b, n, gy, V(b, x)->ndim, kd, gx, V(b, x)->ndim,
                        V(b, x)->dims, scale, acc, err);
}

/* ---- Expand ------------------------------------------------------------ */

int
ss__fwd_expand(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);

    return ss__r_expand(b, n, x, V(b, x)->ndim, V(b, x)->dims, y,
                        V(b, y)->ndim, V(b, y)->dims, 1.0f, 0, err);
}

int
ss__bwd_expand(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0), gy, gx, acc, rc;

    if ((rc = ss__r_dx_target(b, n, &gy, &gx, &acc, err)) <= 0)
        return rc;
    return ss__r_reduce(b, n, gy, V(b, y)->ndim, V(b, y)->dims, gx,
                        V(b, x)->ndim, V(b, x)->dims, 1.0f, acc, err);
}
