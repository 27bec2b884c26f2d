/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The row-independence analysis' op rules (plan_indep.c says what they
 * compute):
 * element-wise ops, ops along an axis, products and sequences here, the
 * shape and layout ops in plan_indep_shape.c; one row per op in `rules`
 * (here), each a function from its inputs' states to its outputs' or to
 * the reason the node mixes rows.  A rule runs only when some input
 * depends on the batch.
 *
 * THREADS: [any]; the table is constant.
 */

#include <string.h>

#include "engine/plan/plan_indep.h"

#define IN(k) SS_INDEP_IN(c, k)
#define OUT(k) SS_INDEP_OUT(c, k)
#define MIX_CONTRACT "it multiplies one row's values with another row's " \
    "(the batch axis is contracted or paired with another operand's)"

/* ---- element-wise ------------------------------------------------------ */

/* Cast, Identity: shape vectors pass. */
int
ss__indep_r_cast(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);

    if (x == NULL)
        return ss__indep_mix(c, "its input 0 is omitted");
    if (x->sv || x->axis < 0) {
        ss__indep_set_sv(c, 0, x->tag, x->sv ? x->n : 0);
        return 0;
    }
    ss__indep_set_all(c, x->axis, x);
    return 0;
}

/* One input computed element by element; the others parameters. */
int
ss__indep_r_unary(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);

    if (x == NULL || x->sv || x->axis < 0)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if (ss__indep_params(c, 1) < 0)
        return -1;
    ss__indep_set_all(c, x->axis, x);
    return 0;
}

/* Broadcasting element-wise ops: the inputs that carry rows carry them
 * on the same output axis, and the others broadcast along it. */
static int
r_bcast(ss__indep_t *c)
{
    int r = ss__indep_rank(c, OUT(0)), oa = -1, sv = 0, rows = 0;
    const ss__rv_t *gx = NULL;

    for (int k = 0; k < c->n->n_inputs; k++) {
        const ss__rv_t *x = ss__indep_in(c, k);

        sv |= x != NULL && x->sv;
        rows |= x != NULL && x->axis >= 0;
    }
    if (!rows)
        return ss__indep_sv_bcast(c);
    if (sv)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    for (int k = 0; k < c->n->n_inputs; k++) {
        const ss__rv_t *x = ss__indep_in(c, k);
        int a;

        if (x == NULL || x->axis < 0)
            continue;
        a = x->axis + r - ss__indep_rank(c, IN(k));
        if (gx != NULL && (a != oa || !ss__indep_same(x, gx)))
            return ss__indep_mix(c, "it pairs rows along different axes "
                                "of its inputs");
        if (ss__indep_dim(c, IN(k), x->axis) != ss__indep_dim(c, OUT(0), a))
            return ss__indep_mix(c, "it broadcasts the batch axis");
        oa = a;
        gx = x;
    }
    for (int k = 0; k < c->n->n_inputs; k++) {
        int pos = oa - (r - ss__indep_rank(c, IN(k)));

        if (ss__indep_in(c, k) != NULL && ss__indep_in(c, k)->axis < 0
            && pos >= 0 && ss__indep_dim(c, IN(k), pos) != 1)
            return ss__indep_mix(c, "its input %d spans the batch axis "
                                "without depending on the batch", k);
    }
    ss__indep_set_all(c, oa, gx);
    return 0;
}

/* QuantizeLinear, DequantizeLinear: per-axis scales not on the rows. */
static int
r_qdq(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0));

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (c->n->n_inputs > 1
        && ss_tensor_numel(&c->p->vals[IN(1)].t) > 1
        && ss__indep_axis(ss__attr_int(c->n, "axis", 1), r) == x->axis)
        return ss__indep_mix(c, "its scales run along the batch axis");
    return 0;
}

/* ---- ops along one axis ------------------------------------------------ */

/* Softmax, LogSoftmax, Hardmax, CumSum, TopK, ArgMax, ArgMin, Split,
 * LpNormalization, Compress: along an axis other than the rows'. */
static int
r_along(ss__indep_t *c)
{
    const char *op = c->n->op_type;
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0)), a, old = 0;
    int64_t dflt = -1, ax, v[1];

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (strstr(op, "max") != NULL) {    /* Softmax, LogSoftmax, Hardmax */
        old = SS_INDEP_OPSET(c) < 13;
        dflt = old ? 1 : -1;
    } else if (strncmp(op, "Arg", 3) == 0 || strcmp(op, "Split") == 0) {
        dflt = 0;
    }
    ax = ss__attr_int(c->n, "axis", dflt);
    if (strcmp(op, "CumSum") == 0)
        ax = ss__indep_ints(c, IN(1), v, 1) == 1 ? v[0] : x->axis;
    if (strcmp(op, "Compress") == 0 && ss__attr_find(c->n, "axis") == NULL)
        return ss__indep_mix(c, "it flattens the batch first");
    a = ss__indep_axis(ax, r);
    if (a == x->axis || (old && x->axis >= a))
        return ss__indep_mix(c, "it computes along the batch axis");
    a = x->axis;
    if (strncmp(op, "Arg", 3) == 0 && !ss__attr_int(c->n, "keepdims", 1)
        && ss__indep_axis(ax, r) < a)
        a--;
    ss__indep_set_all(c, a, x);
    return 0;
}

/* Reduce*: over axes other than the rows'. */
static int
r_reduce(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int64_t ax[SS_MAX_DIMS];
    int r = ss__indep_rank(c, IN(0)), n, a;

    if (x == NULL || x->axis < 0 || x->sv)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    n = ss__indep_axes(c, "axes", strcmp(c->n->op_type, "ReduceSum") == 0 ? 13
                                                                   : 18,
                1, ax);
    if (n < 0)
        return ss__indep_mix(c, "its axes are not known");
    if (n == 0 && ss__attr_int(c->n, "noop_with_empty_axes", 0)) {
        ss__indep_set_all(c, x->axis, x);
        return 0;
    }
    if (n == 0 || ss__indep_in_axes(ax, n, r, x->axis))
        return ss__indep_mix(c, "it reduces over the batch axis");
    a = x->axis;
    if (!ss__attr_int(c->n, "keepdims", 1))
        for (int i = 0; i < n; i++)
            a -= ss__indep_axis(ax[i], r) < x->axis;
    ss__indep_set_all(c, a, x);
    return 0;
}

/* LayerNormalization, MeanVarianceNormalization, InstanceNormalization,
 * BatchNormalization (inference), LRN: statistics over other axes. */
static int
r_norm(ss__indep_t *c)
{
    const char *op = c->n->op_type;
    const ss__rv_t *x = ss__indep_in(c, 0);
    int64_t dax[] = { 0, 2, 3 };
    const int64_t *ax = dax;
    int r = ss__indep_rank(c, IN(0)), n = 3, bad;

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (strcmp(op, "LayerNormalization") == 0)
        bad = x->axis >= ss__indep_axis(ss__attr_int(c->n, "axis", -1), r);
    else if (strcmp(op, "MeanVarianceNormalization") == 0) {
        if ((n = ss__attr_ints(c->n, "axes", &ax)) < 0) {
            ax = dax;
            n = 3;
        }
        bad = ss__indep_in_axes(ax, n, r, x->axis);
    } else if (strcmp(op, "InstanceNormalization") == 0)
        bad = x->axis != 0;
    else if (strcmp(op, "BatchNormalization") == 0)
        bad = x->axis == 1 || ss__attr_int(c->n, "training_mode", 0) != 0;
    else
        bad = x->axis == 1;     /* LRN: across channels */
    if (bad)
        return ss__indep_mix(c, "it normalises over the batch axis");
    return 0;
}

/* Ops on (N, C, spatial...) with the rows first: convolutions, pooling,
 * DepthToSpace, SpaceToDepth. */
static int
r_nchw(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (x->axis != 0)
        return ss__indep_mix(c, "it needs the batch first");
    if (strcmp(c->n->op_type, "MaxPool") == 0 && ss__indep_out(c, 1) != NULL)
        return ss__indep_mix(c, "its indices count the batch's rows");
    return 0;
}

/* ---- products ---------------------------------------------------------- */

/* MatMul, MatMulInteger, QLinearMatMul: rows of A (or columns of B), or
 * a broadcast batch dim both share; never the contracted axis. */
static int
r_matmul(ss__indep_t *c)
{
    int q = c->n->op_type[0] == 'Q', ib = q ? 3 : 1;
    const ss__rv_t *A = ss__indep_in(c, 0), *B = ss__indep_in(c, ib);
    int ra = ss__indep_rank(c, IN(0)), rb = ss__indep_rank(c, IN(ib));
    int r = ss__indep_rank(c, OUT(0)), oa = -1, ob = -1;

    for (int k = 1; k < c->n->n_inputs; k++)
        if (k != ib && !ss__indep_ind(c, k))
            return ss__indep_mix(c, "its input %d (a parameter) depends on "
                                "the batch", k);
    if (A->sv || B->sv)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if (A->axis >= 0) {
        if (ra == 1 || A->axis == ra - 1)
            return ss__indep_mix(c, MIX_CONTRACT);
        oa = rb == 1 ? A->axis : A->axis == ra - 2 ? r - 2
                                                   : A->axis + r - ra;
    }
    if (B->axis >= 0) {
        if (rb == 1 || B->axis == rb - 2)
            return ss__indep_mix(c, MIX_CONTRACT);
        ob = B->axis == rb - 1 ? r - 1 : ra == 1 ? B->axis
                                                 : B->axis + r - rb;
    }
    if (oa >= 0 && ob >= 0 && (oa != ob || oa >= r - 2
                               || !ss__indep_same(A, B)))
        return ss__indep_mix(c, MIX_CONTRACT);
    if (oa >= 0 && ob < 0 && oa < r - 2 && rb >= 2
        && oa - (r - rb) >= 0 && ss__indep_dim(c, IN(ib), oa - (r - rb)) != 1)
        return ss__indep_mix(c, "its operand B spans the batch axis");
    if (ob >= 0 && oa < 0 && ob < r - 2 && ra >= 2
        && ob - (r - ra) >= 0 && ss__indep_dim(c, IN(0), ob - (r - ra)) != 1)
        return ss__indep_mix(c, "its operand A spans the batch axis");
    ss__indep_set_all(c, oa >= 0 ? oa : ob, A->axis >= 0 ? A : B);
    return 0;
}

static int
r_gemm(ss__indep_t *c)
{
    const ss__rv_t *A = ss__indep_in(c, 0), *B = ss__indep_in(c, 1);
    const ss__rv_t *C = ss__indep_in(c, 2);
    int ta = (int)ss__attr_int(c->n, "transA", 0);
    int tb = (int)ss__attr_int(c->n, "transB", 0), oa = -1, rc;
    const ss__rv_t *gx = NULL;

    if (A->sv || B->sv || (C != NULL && C->sv))
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if (A->axis >= 0) {
        if (A->axis != (ta ? 1 : 0))
            return ss__indep_mix(c, MIX_CONTRACT);
        oa = 0;
        gx = A;
    }
    if (B->axis >= 0) {
        if (B->axis != (tb ? 0 : 1) || oa >= 0)
            return ss__indep_mix(c, MIX_CONTRACT);
        oa = 1;
        gx = B;
    }
    if (C != NULL) {
        rc = ss__indep_rank(c, IN(2));
        if (C->axis >= 0 && ((oa >= 0 && C->axis + 2 - rc != oa)
                             || (oa >= 0 && !ss__indep_same(C, gx))))
            return ss__indep_mix(c, "its C carries rows elsewhere");
        if (C->axis >= 0 && oa < 0) {
            oa = C->axis + 2 - rc;
            gx = C;
        }
        if (C->axis < 0 && oa - (2 - rc) >= 0
            && ss__indep_dim(c, IN(2), oa - (2 - rc)) != 1)
            return ss__indep_mix(c, "its C spans the batch axis");
    }
    ss__indep_set_all(c, oa, gx);
    return 0;
}

/* Einsum without ellipsis: the rows' letter is in every operand that
 * carries rows, in no other, and in the output. */
static int
r_einsum(ss__indep_t *c)
{
    const char *eq = ss__attr_string(c->n, "equation", "");
    char terms[8][SS_MAX_DIMS + 1], out[SS_MAX_DIMS + 1], L = 0;
    int nt = 0, len = 0, arrow = 0, cnt[128] = { 0 };
    const ss__rv_t *gx = NULL;

    memset(terms, 0, sizeof(terms));
    memset(out, 0, sizeof(out));
    for (const char *s = eq; *s != '\0'; s++) {
        int64_t ch = (unsigned char)*s;

        if (ch == ' ')
            continue;
        if (ch == '.' || nt >= 8 || len >= SS_MAX_DIMS)
            return ss__indep_mix(c, "its equation is not one this analysis "
                                "reads");
        if (ch == ',' || (ch == '-' && s[1] == '>')) {
            nt++;
            len = 0;
            if (ch == '-') {
                arrow = 1;
                s++;
            }
            continue;
        }
        if (arrow)
            out[len++] = (char)ch;
        else {
            terms[nt][len++] = (char)ch;
            cnt[ch & 127]++;
        }
    }
    if (!arrow) {
        nt++;
        for (int ch = 'A'; ch <= 'z'; ch++)
            if (cnt[ch] == 1 && len < SS_MAX_DIMS)
                out[len++] = (char)ch;
    }
    for (int k = 0; k < c->n->n_inputs && k < nt; k++) {
        const ss__rv_t *x = ss__indep_in(c, k);

        if (x->sv || (x->axis >= 0 && ((L != 0 && (terms[k][x->axis] != L
                                                   || !ss__indep_same(x, gx)))
                                      || strchr(terms[k], terms[k][x->axis])
                                         != strrchr(terms[k],
                                                    terms[k][x->axis]))))
            return ss__indep_mix(c, MIX_CONTRACT);
        if (x->axis >= 0) {
            L = terms[k][x->axis];
            gx = x;
        }
    }
    for (int k = 0; k < c->n->n_inputs && k < nt; k++)
        if (ss__indep_in(c, k)->axis < 0 && strchr(terms[k], L) != NULL)
            return ss__indep_mix(c, MIX_CONTRACT);
    if (L == 0 || strchr(out, L) == NULL)
        return ss__indep_mix(c, MIX_CONTRACT);
    ss__indep_set_all(c, (int)(strchr(out, L) - out), gx);
    return 0;
}

/* ---- sequences and the rest -------------------------------------------- */

static int
r_rnn(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int lay = (int)ss__attr_int(c->n, "layout", 0), xa = lay ? 0 : 1;

    if (x->sv || x->axis != xa || x->outer * x->group != 1)
        return ss__indep_mix(c, "it runs along the batch axis");
    for (int k = 1; k < c->n->n_inputs; k++) {
        const ss__rv_t *y = ss__indep_in(c, k);
        int want = k == 4 ? 0 : k == 5 || k == 6 ? (lay ? 0 : 1) : -1;

        if (y != NULL && (y->sv || y->axis != want
                          || (want >= 0 && y->outer * y->group != 1)))
            return ss__indep_mix(c, "its input %d does not carry the rows "
                                "as X does", k);
    }
    for (int k = 0; k < c->n->n_outputs; k++)
        if (ss__indep_out(c, k) != NULL) {
            *ss__indep_out(c, k) = *x;
            ss__indep_out(c, k)->axis = lay ? 0 : k == 0 ? 2 : 1;
        }
    return 0;
}

static int
r_onehot(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, OUT(0)), ax;

    if (ss__indep_r_unary(c) < 0)
        return -1;
    ax = ss__indep_axis(ss__attr_int(c->n, "axis", -1), r);
    ss__indep_set_all(c, x->axis < ax ? x->axis : x->axis + 1, x);
    return 0;
}

/* Trilu, Det: the last two axes. */
static int
r_matrix(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (x->axis >= ss__indep_rank(c, IN(0)) - 2)
        return ss__indep_mix(c, "its matrices span the batch axis");
    return 0;
}

static int
r_revseq(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0), *l = ss__indep_in(c, 1);

    if (x->sv || x->axis != ss__attr_int(c->n, "batch_axis", 1)
        || l->axis != 0 || x->outer * x->group != 1
        || l->outer * l->group != 1)
        return ss__indep_mix(c, "its batch axis is not the rows'");
    ss__indep_set_all(c, x->axis, NULL);
    return 0;
}

static int
r_gridsample(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0), *t = ss__indep_in(c, 1);

    if (x->axis != 0 || t->axis != 0 || !ss__indep_same(x, t))
        return ss__indep_mix(c, "its input and grid do not both carry the "
                            "rows first");
    ss__indep_set_all(c, 0, x);
    return 0;
}

/* com.microsoft.MoE / QMoE: tokens routed one by one; the router's
 * rows are the input's tokens. */
static int
r_moe(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0), *l = ss__indep_in(c, 1);
    int rx = ss__indep_rank(c, IN(0)), rl = ss__indep_rank(c, IN(1));
    const int64_t *dx = c->p->vals[IN(0)].t.dims;
    const int64_t *dl = c->p->vals[IN(1)].t.dims;
    int64_t tx = x->group, tl = l->group;

    if (x->outer != 1 || l->outer != 1)
        return ss__indep_mix(c, "its router's rows are not its input's "
                            "tokens");

    for (int i = 1; i < rx - 1; i++)
        tx *= dx[i];
    for (int i = 1; i < rl - 1; i++)
        tl *= dl[i];
    if (x->axis != 0 || l->axis != 0 || tx != tl
        || ss__indep_params(c, 2) < 0)
        return ss__indep_mix(c, "its router's rows are not its input's "
                            "tokens");
    ss__indep_set_all(c, 0, x);
    return 0;
}

static const struct {
    const char *op;
    ss__indep_rule_t rule;
} rules[] = {
    { "Cast", ss__indep_r_cast }, { "CastLike", ss__indep_r_cast },
    { "Identity", ss__indep_r_cast }, { "Abs", ss__indep_r_unary },
    { "Acos", ss__indep_r_unary }, { "Acosh", ss__indep_r_unary },
    { "Asin", ss__indep_r_unary }, { "Asinh", ss__indep_r_unary },
    { "Atan", ss__indep_r_unary }, { "Atanh", ss__indep_r_unary },
    { "Ceil", ss__indep_r_unary }, { "Celu", ss__indep_r_unary },
    { "Clip", ss__indep_r_unary }, { "Cos", ss__indep_r_unary },
    { "Cosh", ss__indep_r_unary }, { "Dropout", ss__indep_r_unary },
    { "Elu", ss__indep_r_unary }, { "Erf", ss__indep_r_unary },
    { "Exp", ss__indep_r_unary }, { "Floor", ss__indep_r_unary },
    { "Gelu", ss__indep_r_unary }, { "HardSigmoid", ss__indep_r_unary },
    { "HardSwish", ss__indep_r_unary }, { "IsInf", ss__indep_r_unary },
    { "IsNaN", ss__indep_r_unary }, { "LeakyRelu", ss__indep_r_unary },
    { "Log", ss__indep_r_unary }, { "Neg", ss__indep_r_unary },
    { "Not", ss__indep_r_unary }, { "Reciprocal", ss__indep_r_unary },
    { "Relu", ss__indep_r_unary }, { "Round", ss__indep_r_unary },
    { "Selu", ss__indep_r_unary }, { "Shrink", ss__indep_r_unary },
    { "Sigmoid", ss__indep_r_unary }, { "Sign", ss__indep_r_unary },
    { "Sin", ss__indep_r_unary }, { "Sinh", ss__indep_r_unary },
    { "Softplus", ss__indep_r_unary }, { "Softsign", ss__indep_r_unary },
    { "Sqrt", ss__indep_r_unary }, { "Tan", ss__indep_r_unary },
    { "Tanh", ss__indep_r_unary }, { "ThresholdedRelu", ss__indep_r_unary },
    { "QuantizeLinear", r_qdq }, { "DequantizeLinear", r_qdq },
    { "Add", r_bcast }, { "Sub", r_bcast }, { "Mul", r_bcast },
    { "Div", r_bcast }, { "Pow", r_bcast }, { "Max", r_bcast },
    { "Min", r_bcast }, { "Mean", r_bcast }, { "Sum", r_bcast },
    { "Mod", r_bcast }, { "And", r_bcast }, { "Or", r_bcast },
    { "Xor", r_bcast }, { "Equal", r_bcast }, { "Greater", r_bcast },
    { "GreaterOrEqual", r_bcast }, { "Less", r_bcast },
    { "LessOrEqual", r_bcast }, { "Where", r_bcast }, { "BitShift", r_bcast },
    { "PRelu", r_bcast }, { "Softmax", r_along }, { "LogSoftmax", r_along },
    { "Hardmax", r_along }, { "CumSum", r_along }, { "TopK", r_along },
    { "ArgMax", r_along }, { "ArgMin", r_along }, { "Split", r_along },
    { "Compress", r_along }, { "ReduceL1", r_reduce },
    { "ReduceL2", r_reduce }, { "ReduceLogSum", r_reduce },
    { "ReduceLogSumExp", r_reduce }, { "ReduceMax", r_reduce },
    { "ReduceMean", r_reduce }, { "ReduceMin", r_reduce },
    { "ReduceProd", r_reduce }, { "ReduceSum", r_reduce },
    { "ReduceSumSquare", r_reduce }, { "LayerNormalization", r_norm },
    { "BatchNormalization", r_norm }, { "MeanVarianceNormalization", r_norm },
    { "InstanceNormalization", r_norm }, { "LRN", r_norm }, { "Conv", r_nchw },
    { "ConvTranspose", r_nchw }, { "ConvInteger", r_nchw },
    { "QLinearConv", r_nchw }, { "MaxPool", r_nchw },
    { "AveragePool", r_nchw }, { "GlobalAveragePool", r_nchw },
    { "GlobalMaxPool", r_nchw }, { "DepthToSpace", r_nchw },
    { "SpaceToDepth", r_nchw }, { "Shape", ss__indep_r_shape },
    { "Size", ss__indep_r_shape }, { "Transpose", ss__indep_r_transpose },
    { "Reshape", ss__indep_r_reshape }, { "Flatten", ss__indep_r_flatten },
    { "Squeeze", ss__indep_r_squeeze }, { "Unsqueeze", ss__indep_r_squeeze },
    { "Concat", ss__indep_r_concat }, { "Slice", ss__indep_r_slice },
    { "Gather", ss__indep_r_gather },
    { "GatherElements", ss__indep_r_elements },
    { "ScatterElements", ss__indep_r_elements },
    { "Scatter", ss__indep_r_elements }, { "GatherND", ss__indep_r_gathernd },
    { "Expand", ss__indep_r_expand }, { "Tile", ss__indep_r_expand },
    { "ConstantOfShape", ss__indep_r_expand }, { "Pad", ss__indep_r_pad },
    { "Resize", ss__indep_r_resize }, { "Upsample", ss__indep_r_resize },
    { "MatMul", r_matmul }, { "MatMulInteger", r_matmul },
    { "QLinearMatMul", r_matmul }, { "Gemm", r_gemm }, { "Einsum", r_einsum },
    { "RNN", r_rnn }, { "GRU", r_rnn }, { "LSTM", r_rnn },
    { "OneHot", r_onehot }, { "Trilu", r_matrix }, { "Det", r_matrix },
    { "ReverseSequence", r_revseq }, { "GridSample", r_gridsample },
    { "com.microsoft.MoE", r_moe }, { "com.microsoft.QMoE", r_moe },
};

ss__indep_rule_t
ss__indep_rule(const ss_node_t *n)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rules[i].op, n->op_type) == 0)
            return rules[i].rule;
    return NULL;
}
