/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Elementwise ops with one data input: activations (Relu, LeakyRelu,
 * Gelu, Tanh, Sigmoid, Clip, Softplus, Elu, HardSigmoid) and maths (Sqrt,
 * Neg, Exp, Log, Erf, Abs, Reciprocal, Floor, Ceil, Not).  Float ops run
 * on float32 (and float64 where torch can produce it); Neg, Abs, Relu and
 * Clip also on int64/int32, Not on bool.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

typedef enum {
    U_RELU, U_LEAKY, U_GELU, U_TANH, U_SIGMOID, U_CLIP, U_SQRT, U_NEG,
    U_EXP, U_LOG, U_ERF, U_ABS, U_RECIP, U_FLOOR, U_CEIL, U_NOT,
    U_SOFTPLUS, U_ELU, U_HARDSIGMOID
} uop_t;

/* Which types each op takes beyond float32/float64. */
static bool
takes_int(uop_t op)
{
    return op == U_RELU || op == U_NEG || op == U_ABS || op == U_CLIP;
}

/* Clip's bounds: attributes before opset 11, optional inputs after. */
static int
clip_bounds(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            double *lo, double *hi, ss_err_t *err)
{
    int rc;

    *lo = -INFINITY;
    *hi = INFINITY;
    if (opset < 11) {
        *lo = ss__attr_float(n, "min", -INFINITY);
        *hi = ss__attr_float(n, "max", INFINITY);
        return 0;
    }
    if (ss__ops_has_input(n, in, 1) &&
        (rc = ss__ops_read_scalar(n, in[1], "min", lo, err)) < 0)
        return rc;
    if (ss__ops_has_input(n, in, 2) &&
        (rc = ss__ops_read_scalar(n, in[2], "max", hi, err)) < 0)
        return rc;
    return 0;
}

static int
infer_unary(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, uop_t op, ss_err_t *err)
{
    ss_dtype_t dt;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    if (op == U_NOT) {
        if (dt != SS_DTYPE_BOOL)
            return ss__ops_fail(err, n, "input must be bool, not %s",
                                ss__ops_dtype_name(dt));
    } else if (!ss__ops_is_float(dt) &&
               !(takes_int(op) && ss__ops_is_int(dt)
                 && dt != SS_DTYPE_U64 && dt != SS_DTYPE_U32)) {
        return ss__ops_failc(err, SS_EUNSUPP, n, "input type %s is not "
                             "supported", ss__ops_dtype_name(dt));
    }
    if (op == U_CLIP && opset >= 11) {
        for (int i = 1; i < 3; i++) {
            if (!ss__ops_has_input(n, in, i))
                continue;
            if (in[i]->dtype != dt)
                return ss__ops_fail(err, n, "bound %d is %s, input is %s",
                                    i, ss__ops_dtype_name(in[i]->dtype),
                                    ss__ops_dtype_name(dt));
            if (in[i]->ndim < 0 || in[i]->ndim > SS_MAX_DIMS ||
                ss__ops_prod(in[i]->dims, 0, in[i]->ndim) != 1)
                return ss__ops_fail(err, n, "bound %d must be a scalar", i);
        }
    }
    if (op == U_GELU) {
        const char *a = ss__attr_string(n, "approximate", "none");

        if (strcmp(a, "none") != 0 && strcmp(a, "tanh") != 0)
            return ss__ops_fail(err, n, "approximate='%s' is not 'none' or "
                                "'tanh'", a);
    }
    return ss__ops_set_out(n, &out[0], dt, in[0]->ndim, in[0]->dims, err);
}

static double
gelu_tanh(double x)
{
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x *
                                                        x * x)));
}

/* One loop per op so each is a simple vectorizable pass. */
#define MAP(T, EXPR)                                                       \
    do {                                                                   \
        const T *a_ = in[0]->data;                                         \
        T *o_ = out[0].data;                                               \
        for (int64_t i = 0; i < cnt; i++) {                                \
            T x = a_[i];                                                   \
            o_[i] = (EXPR);                                                \
        }                                                                  \
    } while (0)

#define FLOAT_OPS(T, F)                                                    \
    switch (op) {                                                          \
    /* NaN stays NaN, as in PyTorch (x > 0 ? x : 0 would give 0). */     \
    case U_RELU: MAP(T, x < 0 ? 0 : x); break;                             \
    case U_LEAKY: MAP(T, x >= 0 ? x : x * (T)alpha); break;                \
    case U_GELU:                                                           \
        if (tanh_gelu)                                                     \
            MAP(T, (T)gelu_tanh(x));                                       \
        else                                                               \
            MAP(T, (T)(0.5 * x * (1.0 + erf(x * 0.7071067811865476))));    \
        break;                                                             \
    case U_TANH: MAP(T, tanh##F(x)); break;                                \
    case U_SIGMOID:                                                        \
        MAP(T, x >= 0 ? 1 / (1 + exp##F(-x)) : exp##F(x) / (1 + exp##F(x))); \
        break;                                                             \
    case U_CLIP: MAP(T, x < (T)lo ? (T)lo : (x > (T)hi ? (T)hi : x)); break; \
    case U_SQRT: MAP(T, sqrt##F(x)); break;                                \
    case U_NEG: MAP(T, -x); break;                                         \
    case U_EXP: MAP(T, exp##F(x)); break;                                  \
    case U_LOG: MAP(T, log##F(x)); break;                                  \
    case U_ERF: MAP(T, erf##F(x)); break;                                  \
    case U_ABS: MAP(T, fabs##F(x)); break;                                 \
    case U_RECIP: MAP(T, 1 / x); break;                                    \
    case U_FLOOR: MAP(T, floor##F(x)); break;                              \
    case U_CEIL: MAP(T, ceil##F(x)); break;                                \
    case U_SOFTPLUS:                                                       \
        MAP(T, x > 0 ? x + log1p##F(exp##F(-x)) : log1p##F(exp##F(x)));    \
        break;                                                             \
    case U_ELU: MAP(T, x >= 0 ? x : (T)alpha * (exp##F(x) - 1)); break;     \
    case U_HARDSIGMOID:                                                    \
        MAP(T, fmax##F(0, fmin##F(1, (T)alpha * x + (T)beta)));            \
        break;                                                             \
    default: break;                                                        \
    }

/* Clip bounds for integer inputs, saturated to the type's range. */
static int64_t
sat(double v, int64_t mn, int64_t mx)
{
    if (v != v)
        return mn;
    if (v <= (double)mn)
        return mn;
    if (v >= (double)mx)
        return mx;
    return (int64_t)v;
}

/* Integers wrap through unsigned maths. */
#define INT_OPS(T, UT, MN, MX)                                             \
    do {                                                                   \
        T ilo = (T)sat(lo, MN, MX), ihi = (T)sat(hi, MN, MX);              \
        switch (op) {                                                      \
        case U_RELU: MAP(T, x > 0 ? x : 0); break;                         \
        case U_NEG: MAP(T, (T)(0 - (UT)x)); break;                         \
        case U_ABS: MAP(T, x < 0 ? (T)(0 - (UT)x) : x); break;             \
        case U_CLIP: MAP(T, x < ilo ? ilo : (x > ihi ? ihi : x)); break;   \
        default: break;                                                    \
        }                                                                  \
    } while (0)

/* Unsigned: Relu and Abs are the identity, Neg wraps. */
#define UINT_OPS(T, MX)                                                    \
    do {                                                                   \
        T ilo = (T)sat(lo, 0, MX), ihi = (T)sat(hi, 0, MX);                \
        switch (op) {                                                      \
        case U_RELU: case U_ABS: MAP(T, x); break;                         \
        case U_NEG: MAP(T, (T)(0u - (unsigned)x)); break;                  \
        case U_CLIP: MAP(T, x < ilo ? ilo : (x > ihi ? ihi : x)); break;   \
        default: break;                                                    \
        }                                                                  \
    } while (0)

static int
run_unary(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, uop_t op, ss_err_t *err)
{
    int64_t cnt = ss__ops_numel(in[0]);
    double lo = 0, hi = 0;
    float alpha = 0, beta = 0;
    bool tanh_gelu = false;
    int rc;

    switch (op) {
    case U_LEAKY: alpha = ss__attr_float(n, "alpha", 0.01f); break;
    case U_ELU: alpha = ss__attr_float(n, "alpha", 1.0f); break;
    case U_HARDSIGMOID:
        alpha = ss__attr_float(n, "alpha", 0.2f);
        beta = ss__attr_float(n, "beta", 0.5f);
        break;
    case U_GELU:
        tanh_gelu = strcmp(ss__attr_string(n, "approximate", "none"),
                           "tanh") == 0;
        break;
    case U_CLIP:
        if ((rc = clip_bounds(n, opset, in, &lo, &hi, err)) < 0)
            return rc;
        break;
    default: break;
    }
    switch (in[0]->dtype) {
    case SS_DTYPE_F32: FLOAT_OPS(float, f); break;
    case SS_DTYPE_F64: FLOAT_OPS(double, ); break;
    case SS_DTYPE_I64: INT_OPS(int64_t, uint64_t, INT64_MIN, INT64_MAX); break;
    case SS_DTYPE_I32: INT_OPS(int32_t, uint32_t, INT32_MIN, INT32_MAX); break;
    case SS_DTYPE_I16: INT_OPS(int16_t, uint16_t, INT16_MIN, INT16_MAX); break;
    case SS_DTYPE_I8: INT_OPS(int8_t, uint8_t, INT8_MIN, INT8_MAX); break;
    case SS_DTYPE_U16: UINT_OPS(uint16_t, UINT16_MAX); break;
    case SS_DTYPE_U8: UINT_OPS(uint8_t, UINT8_MAX); break;
    case SS_DTYPE_BOOL: MAP(uint8_t, !x); break;
    default:
        return ss__ops_failc(err, SS_EUNSUPP, n, "unsupported type");
    }
    return 0;
}

#define UNARY(NAME, OP)                                                    \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        return infer_unary(n, opset, in, out, OP, err);                    \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        return run_unary(n, opset, in, out, OP, err);                      \
    }

UNARY(relu, U_RELU)
UNARY(leaky, U_LEAKY)
UNARY(gelu, U_GELU)
UNARY(tanh, U_TANH)
UNARY(sigmoid, U_SIGMOID)
UNARY(clip, U_CLIP)
UNARY(sqrt, U_SQRT)
UNARY(neg, U_NEG)
UNARY(exp, U_EXP)
UNARY(log, U_LOG)
UNARY(erf, U_ERF)
UNARY(abs, U_ABS)
UNARY(recip, U_RECIP)
UNARY(floor, U_FLOOR)
UNARY(ceil, U_CEIL)
UNARY(not, U_NOT)
UNARY(softplus, U_SOFTPLUS)
UNARY(elu, U_ELU)
UNARY(hardsigmoid, U_HARDSIGMOID)

const ss_op_t ss__ops_unary[] = {
    { "Relu", infer_relu, run_relu },
    { "LeakyRelu", infer_leaky, run_leaky },
    { "Gelu", infer_gelu, run_gelu },
    { "Tanh", infer_tanh, run_tanh },
    { "Sigmoid", infer_sigmoid, run_sigmoid },
    { "Clip", infer_clip, run_clip },
    { "Sqrt", infer_sqrt, run_sqrt },
    { "Neg", infer_neg, run_neg },
    { "Exp", infer_exp, run_exp },
    { "Log", infer_log, run_log },
    { "Erf", infer_erf, run_erf },
    { "Abs", infer_abs, run_abs },
    { "Reciprocal", infer_recip, run_recip },
    { "Floor", infer_floor, run_floor },
    { "Ceil", infer_ceil, run_ceil },
    { "Not", infer_not, run_not },
    { "Softplus", infer_softplus, run_softplus },
    { "Elu", infer_elu, run_elu },
    { "HardSigmoid", infer_hardsigmoid, run_hardsigmoid },
    { NULL, NULL, NULL }
};
