/* SPDX-License-Identifier: Apache-2.0 */
/*
 * More elementwise maths, as plain C reference kernels: trigonometric and
 * hyperbolic functions, Sign, Round, Softsign, Selu, Celu,
 * ThresholdedRelu, HardSwish, Shrink, IsNaN, IsInf, and the broadcasting
 * PRelu and Mod.
 *
 * DESIGN.  Each float op is one function on double applied per element
 * and stored back in the input's type (float32, float64, float16; the
 * node suite's and exporters' types), so float32 results are correctly
 * rounded.  Sign, Shrink and Mod also take every integer type; integer Mod
 * is exact in int64 / uint64 arithmetic.  Any other type is refused naming
 * op, node and type.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

typedef enum {
    M_COS, M_SIN, M_TAN, M_ACOS, M_ASIN, M_ATAN, M_COSH, M_SINH, M_ACOSH,
    M_ASINH, M_ATANH, M_SIGN, M_ROUND, M_SOFTSIGN, M_SELU, M_CELU,
    M_THRESHOLDED, M_HARDSWISH, M_SHRINK, M_ISNAN, M_ISINF
} mop_t;

typedef struct {
    mop_t op;
    double a, b;            /* alpha/gamma, bias/lambd, ... */
    bool neg, pos;          /* IsInf */
} mctx_t;

static bool
takes_int(mop_t op)
{
    return op == M_SIGN || op == M_SHRINK;
}

static double
apply(const mctx_t *c, double x)
{
    switch (c->op) {
    case M_COS: return cos(x);
    case M_SIN: return sin(x);
    case M_TAN: return tan(x);
    case M_ACOS: return acos(x);
    case M_ASIN: return asin(x);
    case M_ATAN: return atan(x);
    case M_COSH: return cosh(x);
    case M_SINH: return sinh(x);
    case M_ACOSH: return acosh(x);
    case M_ASINH: return asinh(x);
    case M_ATANH: return atanh(x);
    case M_SIGN: return x > 0 ? 1.0 : x < 0 ? -1.0 : x == 0 ? 0.0 : x;
    case M_ROUND: return nearbyint(x);      /* half to even (default mode) */
    case M_SOFTSIGN: return x / (1.0 + fabs(x));
    case M_SELU: return c->b * (x > 0 ? x : c->a * (exp(x) - 1.0));
    case M_CELU: return fmax(0.0, x) + fmin(0.0, c->a * expm1(x / c->a));
    case M_THRESHOLDED: return x > c->a ? x : 0.0;
    case M_HARDSWISH: return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5));
    case M_SHRINK:
        return x < -c->b ? x + c->a : x > c->b ? x - c->a : 0.0;
    case M_ISNAN: return x != x;
    case M_ISINF:
        return isinf(x) && ((x > 0 && c->pos) || (x < 0 && c->neg));
    }
    return x;
}

static int
mctx(const ss_node_t *n, mop_t op, mctx_t *c)
{
    memset(c, 0, sizeof(*c));
    c->op = op;
    switch (op) {
    case M_SELU:
        c->a = ss__attr_float(n, "alpha", 1.67326319217681884765625f);
        c->b = ss__attr_float(n, "gamma", 1.05070102214813232421875f);
        break;
    case M_CELU: c->a = ss__attr_float(n, "alpha", 1.0f); break;
    case M_THRESHOLDED: c->a = ss__attr_float(n, "alpha", 1.0f); break;
    case M_SHRINK:
        c->a = ss__attr_float(n, "bias", 0.0f);
        c->b = ss__attr_float(n, "lambd", 0.5f);
        break;
    case M_ISINF:
        c->neg = ss__attr_int(n, "detect_negative", 1) != 0;
        c->pos = ss__attr_int(n, "detect_positive", 1) != 0;
        break;
    default: break;
    }
    return c->op == M_CELU && c->a == 0 ? -1 : 0;
}

static int
infer_math(const ss_node_t *n, const ss_tensor_t *const *in,
           ss_tensor_t *out, mop_t op, ss_err_t *err)
{
    ss_dtype_t t;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    t = in[0]->dtype;
    if (!ss__dyn_is_float(t) && !(takes_int(op) && ss__ops_is_int(t)))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not "
                             "supported", n->op_type,
                             ss__ops_dtype_name(t));
    if (op == M_CELU && ss__attr_float(n, "alpha", 1.0f) == 0.0f)
        return ss__ops_fail(err, n, "alpha must not be 0");
    return ss__ops_set_out(n, &out[0], op == M_ISNAN || op == M_ISINF
                           ? SS_DTYPE_BOOL : t, in[0]->ndim, in[0]->dims,
                           err);
}

static int
run_math(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
         mop_t op, ss_err_t *err)
{
    int64_t cnt = ss__ops_numel(in[0]);
    ss_dtype_t t = in[0]->dtype;
    mctx_t c;

    if (mctx(n, op, &c) < 0)
        return ss__ops_fail(err, n, "alpha must not be 0");
    if (ss__ops_is_int(t) && op == M_SIGN) {
        for (int64_t i = 0; i < cnt; i++) {
            int64_t v = ss__dyn_geti(in[0]->data, t, i);

            ss__dyn_seti(out->data, t, i, v > 0 ? 1 : v < 0 ? -1 : 0);
        }
        return 0;
    }
    for (int64_t i = 0; i < cnt; i++)
        ss__dyn_set(out->data, out->dtype, i,
                    apply(&c, ss__dyn_get(in[0]->data, t, i)));
    return 0;
}

#define MATH(NAME, OP)                                                     \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        (void)opset;                                                       \
        return infer_math(n, in, out, OP, err);                            \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        (void)opset;                                                       \
        return run_math(n, in, out, OP, err);                              \
    }

MATH(cos, M_COS)
MATH(sin, M_SIN)
MATH(tan, M_TAN)
MATH(acos, M_ACOS)
MATH(asin, M_ASIN)
MATH(atan, M_ATAN)
MATH(cosh, M_COSH)
MATH(sinh, M_SINH)
MATH(acosh, M_ACOSH)
MATH(asinh, M_ASINH)
MATH(atanh, M_ATANH)
MATH(sign, M_SIGN)
MATH(round, M_ROUND)
MATH(softsign, M_SOFTSIGN)
MATH(selu, M_SELU)
MATH(celu, M_CELU)
MATH(thresholded, M_THRESHOLDED)
MATH(hardswish, M_HARDSWISH)
MATH(shrink, M_SHRINK)
MATH(isnan, M_ISNAN)
MATH(isinf, M_ISINF)

/* ---- PRelu, Mod: two inputs, broadcast --------------------------------- */

typedef struct {
    ss_dtype_t t;
    bool fmod;
} bctx_t;

static int
infer_pair(const ss_node_t *n, const ss_tensor_t *const *in,
           ss_tensor_t *out, bool ints, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    int ndim, rc;
    ss_dtype_t t;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    t = in[0]->dtype;
    if (in[1]->dtype != t)
        return ss__ops_fail(err, n, "inputs are %s and %s (must match)",
                            ss__ops_dtype_name(t),
                            ss__ops_dtype_name(in[1]->dtype));
    if (!ss__dyn_is_float(t) && !(ints && ss__ops_is_int(t)))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not "
                             "supported", n->op_type,
                             ss__ops_dtype_name(t));
    if ((rc = ss__bcast_shape(n, 2, in, &ndim, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], t, ndim, dims, err);
}

static void
row_prelu(void *ctx, void *out, const void *const *in, const int64_t *step,
          int64_t count)
{
    bctx_t *c = ctx;

    for (int64_t i = 0; i < count; i++) {
        double x = ss__dyn_get(in[0], c->t, i * step[0]);
        double s = ss__dyn_get(in[1], c->t, i * step[1]);

        ss__dyn_set(out, c->t, i, x < 0 ? s * x : x);
    }
}

static int64_t
imod(int64_t a, int64_t b, bool fmod_)
{
    int64_t r;

    if (b == 0)
        return 0;                   /* numpy gives 0 too (with a warning) */
    if (b == -1)
        return 0;                   /* INT64_MIN % -1 traps */
    r = a % b;
    if (!fmod_ && r != 0 && ((r < 0) != (b < 0)))
        r += b;
    return r;
}

static void
row_mod(void *ctx, void *out, const void *const *in, const int64_t *step,
        int64_t count)
{
    bctx_t *c = ctx;

    for (int64_t i = 0; i < count; i++) {
        if (c->t == SS_DTYPE_U64) {
            uint64_t a = ((const uint64_t *)in[0])[i * step[0]];
            uint64_t b = ((const uint64_t *)in[1])[i * step[1]];

            ((uint64_t *)out)[i] = b ? a % b : 0;
        } else if (ss__ops_is_int(c->t)) {
            ss__dyn_seti(out, c->t, i,
                         imod(ss__dyn_geti(in[0], c->t, i * step[0]),
                              ss__dyn_geti(in[1], c->t, i * step[1]),
                              c->fmod));
        } else {
            double a = ss__dyn_get(in[0], c->t, i * step[0]);
            double b = ss__dyn_get(in[1], c->t, i * step[1]);
            double r = fmod(a, b);

            if (!c->fmod && r != 0 && ((r < 0) != (b < 0)))
                r += b;
            ss__dyn_set(out, c->t, i, r);
        }
    }
}

static int
run_pair(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
         bctx_t *c, ss_bcast_row_fn row)
{
    const void *ptr[2] = { in[0]->data, in[1]->data };
    size_t es[2], osize = ss__ops_dtype_size(out->dtype);
    ss_bcast_t it;

    (void)n;
    es[0] = es[1] = osize;
    c->t = out->dtype;
    ss__bcast_init(&it, 2, in, out);
    ss__bcast_run(&it, out->data, osize, ptr, es, row, c);
    return 0;
}

static int
infer_prelu(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = infer_pair(n, in, out, false, err)) < 0)
        return rc;
    /* the slope broadcasts to X, never X to the slope */
    if (out[0].ndim != in[0]->ndim
        || memcmp(out[0].dims, in[0]->dims,
                  sizeof(int64_t) * (size_t)in[0]->ndim) != 0)
        return ss__ops_fail(err, n, "slope does not broadcast to X");
    return 0;
}

static int
run_prelu(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    bctx_t c = { 0 };

    (void)opset;
    (void)err;
    return run_pair(n, in, out, &c, row_prelu);
}

static int
infer_mod(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int rc;

    (void)opset;
    if ((rc = infer_pair(n, in, out, true, err)) < 0)
        return rc;
    if (ss__dyn_is_float(in[0]->dtype) && ss__attr_int(n, "fmod", 0) == 0)
        return ss__ops_fail(err, n, "fmod=0 on floats is invalid (the "
                            "spec asks fmod=1)");
    return 0;
}

static int
run_mod(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    bctx_t c = { .fmod = ss__attr_int(n, "fmod", 0) != 0 };

    (void)opset;
    (void)err;
    return run_pair(n, in, out, &c, row_mod);
}

const ss_op_t ss__ops_math[] = {
    { "Cos", infer_cos, run_cos },
    { "Sin", infer_sin, run_sin },
    { "Tan", infer_tan, run_tan },
    { "Acos", infer_acos, run_acos },
    { "Asin", infer_asin, run_asin },
    { "Atan", infer_atan, run_atan },
    { "Cosh", infer_cosh, run_cosh },
    { "Sinh", infer_sinh, run_sinh },
    { "Acosh", infer_acosh, run_acosh },
    { "Asinh", infer_asinh, run_asinh },
    { "Atanh", infer_atanh, run_atanh },
    { "Sign", infer_sign, run_sign },
    { "Round", infer_round, run_round },
    { "Softsign", infer_softsign, run_softsign },
    { "Selu", infer_selu, run_selu },
    { "Celu", infer_celu, run_celu },
    { "ThresholdedRelu", infer_thresholded, run_thresholded },
    { "HardSwish", infer_hardswish, run_hardswish },
    { "Shrink", infer_shrink, run_shrink },
    { "IsNaN", infer_isnan, run_isnan },
    { "IsInf", infer_isinf, run_isinf },
    { "PRelu", infer_prelu, run_prelu },
    { "Mod", infer_mod, run_mod },
    { NULL, NULL, NULL }
};
