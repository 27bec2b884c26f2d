/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Elementwise ops with more than one input, all on the one broadcasting
 * iterator (util.c): arithmetic (Add, Sub, Mul, Div, Pow, Max, Min, Sum,
 * Mean), comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual),
 * logic (And, Or, Xor) and Where.
 *
 * Arithmetic runs on float32, float64, float16 (in float32, rounded to
 * nearest even once per op, as numpy's float16 does) and every integer
 * type (shape arithmetic after Shape is int64); Pow on float32, float64,
 * int64 and int32.  Integer maths wraps instead of overflowing (the
 * fuzzer feeds hostile constants and signed overflow is undefined) and
 * integer division by zero gives 0.  Variadic ops fold their inputs into
 * the output one at a time, so any number of inputs broadcasts.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

typedef enum {
    B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MAX, B_MIN, B_COPY,
    B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR, B_XOR
} bop_t;

typedef struct {
    bop_t op;
    ss_dtype_t a, b, o;     /* for the generic (mixed-type) Pow */
} bctx_t;

/* One loop per stride pattern so the common cases vectorize. */
#define LOOP(T_O, T_A, T_B, EXPR)                                          \
    do {                                                                   \
        T_O *o_ = out;                                                     \
        const T_A *pa_ = in[0];                                            \
        const T_B *pb_ = in[1];                                            \
        if (st[0] && st[1]) {                                              \
            for (int64_t i = 0; i < cnt; i++) {                            \
                T_A x = pa_[i]; T_B y = pb_[i]; o_[i] = (EXPR);            \
            }                                                              \
        } else if (st[0]) {                                                \
            T_B y = pb_[0];                                                \
            for (int64_t i = 0; i < cnt; i++) {                            \
                T_A x = pa_[i]; o_[i] = (EXPR);                            \
            }                                                              \
        } else if (st[1]) {                                                \
            T_A x = pa_[0];                                                \
            for (int64_t i = 0; i < cnt; i++) {                            \
                T_B y = pb_[i]; o_[i] = (EXPR);                            \
            }                                                              \
        } else {                                                           \
            T_A x = pa_[0]; T_B y = pb_[0];                                \
            for (int64_t i = 0; i < cnt; i++)                              \
                o_[i] = (EXPR);                                            \
        }                                                                  \
    } while (0)

#define CMP_CASES(T)                                                       \
    case B_EQ: LOOP(uint8_t, T, T, x == y); break;                         \
    case B_LT: LOOP(uint8_t, T, T, x < y); break;                          \
    case B_GT: LOOP(uint8_t, T, T, x > y); break;                          \
    case B_LE: LOOP(uint8_t, T, T, x <= y); break;                         \
    case B_GE: LOOP(uint8_t, T, T, x >= y); break

#define CMP_CASES_F16                                                      \
    case B_EQ: LOOP(uint8_t, uint16_t, uint16_t, H(x) == H(y)); break;     \
    case B_LT: LOOP(uint8_t, uint16_t, uint16_t, H(x) < H(y)); break;      \
    case B_GT: LOOP(uint8_t, uint16_t, uint16_t, H(x) > H(y)); break;      \
    case B_LE: LOOP(uint8_t, uint16_t, uint16_t, H(x) <= H(y)); break;     \
    case B_GE: LOOP(uint8_t, uint16_t, uint16_t, H(x) >= H(y)); break

static void
row_f32(void *ctx, void *out, const void *const *in, const int64_t *st,
        int64_t cnt)
{
    switch (((const bctx_t *)ctx)->op) {
    case B_ADD: LOOP(float, float, float, x + y); break;
    case B_SUB: LOOP(float, float, float, x - y); break;
    case B_MUL: LOOP(float, float, float, x * y); break;
    case B_DIV: LOOP(float, float, float, x / y); break;
    case B_POW: LOOP(float, float, float, powf(x, y)); break;
    /* NaN propagates, as in numpy's maximum. */
    case B_MAX: LOOP(float, float, float, x != x || x > y ? x : y); break;
    case B_MIN: LOOP(float, float, float, x != x || x < y ? x : y); break;
    case B_COPY: LOOP(float, float, float, ((void)x, y)); break;
    CMP_CASES(float);
    default: break;
    }
}

static void
row_f64(void *ctx, void *out, const void *const *in, const int64_t *st,
        int64_t cnt)
{
    switch (((const bctx_t *)ctx)->op) {
    case B_ADD: LOOP(double, double, double, x + y); break;
    case B_SUB: LOOP(double, double, double, x - y); break;
    case B_MUL: LOOP(double, double, double, x * y); break;
    case B_DIV: LOOP(double, double, double, x / y); break;
    case B_POW: LOOP(double, double, double, pow(x, y)); break;
    case B_MAX: LOOP(double, double, double, x != x || x > y ? x : y); break;
    case B_MIN: LOOP(double, double, double, x != x || x < y ? x : y); break;
    case B_COPY: LOOP(double, double, double, ((void)x, y)); break;
    CMP_CASES(double);
    default: break;
    }
}

/* Wrapping integer maths through the unsigned type of the same width. */
#define INT_ROW(NAME, T, UT)                                         \
    static void                                                            \
    NAME(void *ctx, void *out, const void *const *in, const int64_t *st,  \
         int64_t cnt)                                                      \
    {                                                                      \
        switch (((const bctx_t *)ctx)->op) {                               \
        case B_ADD: LOOP(T, T, T, (T)((UT)x + (UT)y)); break;              \
        case B_SUB: LOOP(T, T, T, (T)((UT)x - (UT)y)); break;              \
        case B_MUL: LOOP(T, T, T, (T)((UT)x * (UT)y)); break;              \
        case B_DIV:                                                        \
            LOOP(T, T, T, y == 0 ? 0 : (y == -1 ? (T)(0 - (UT)x) : x / y)); \
            break;                                                         \
        case B_MAX: LOOP(T, T, T, x > y ? x : y); break;                   \
        case B_MIN: LOOP(T, T, T, x < y ? x : y); break;                   \
        case B_COPY: LOOP(T, T, T, ((void)x, y)); break;         \
        CMP_CASES(T);                                                      \
        default: break;                                                    \
        }                                                                  \
    }

INT_ROW(row_i64, int64_t, uint64_t)
INT_ROW(row_i32, int32_t, uint32_t)
INT_ROW(row_i16, int16_t, uint16_t)
INT_ROW(row_i8, int8_t, uint8_t)

/* Unsigned: wrapping is the C semantics already (through unsigned int
 * for the types int promotion would make signed). */
#define UINT_ROW(NAME, T, W)                                              \
    static void                                                            \
    NAME(void *ctx, void *out, const void *const *in, const int64_t *st,  \
         int64_t cnt)                                                      \
    {                                                                      \
        switch (((const bctx_t *)ctx)->op) {                               \
        case B_ADD: LOOP(T, T, T, (T)((W)x + (W)y)); break;                \
        case B_SUB: LOOP(T, T, T, (T)((W)x - (W)y)); break;                \
        case B_MUL: LOOP(T, T, T, (T)((W)x * (W)y)); break;                \
        case B_DIV: LOOP(T, T, T, y == 0 ? 0 : (T)(x / y)); break;        \
        case B_MAX: LOOP(T, T, T, x > y ? x : y); break;                   \
        case B_MIN: LOOP(T, T, T, x < y ? x : y); break;                   \
        case B_COPY: LOOP(T, T, T, ((void)x, y)); break;                   \
        CMP_CASES(T);                                                      \
        default: break;                                                    \
        }                                                                  \
    }

UINT_ROW(row_u64, uint64_t, uint64_t)
UINT_ROW(row_u32, uint32_t, uint32_t)
UINT_ROW(row_u16, uint16_t, unsigned)
UINT_ROW(row_u8, uint8_t, unsigned)

/* float16: each element to float32 and back (exact both ways but for the
 * one rounding of the result). */
#define H(v) ss__dyn_h2f(v)
#define HR(e) ss__dyn_f2h(e)

static void
row_f16(void *ctx, void *out, const void *const *in, const int64_t *st,
        int64_t cnt)
{
    switch (((const bctx_t *)ctx)->op) {
    case B_ADD: LOOP(uint16_t, uint16_t, uint16_t, HR(H(x) + H(y))); break;
    case B_SUB: LOOP(uint16_t, uint16_t, uint16_t, HR(H(x) - H(y))); break;
    case B_MUL: LOOP(uint16_t, uint16_t, uint16_t, HR(H(x) * H(y))); break;
    case B_DIV: LOOP(uint16_t, uint16_t, uint16_t, HR(H(x) / H(y))); break;
    case B_MAX:
        LOOP(uint16_t, uint16_t, uint16_t,
             H(x) != H(x) || H(x) > H(y) ? x : y);
        break;
    case B_MIN:
        LOOP(uint16_t, uint16_t, uint16_t,
             H(x) != H(x) || H(x) < H(y) ? x : y);
        break;
    case B_COPY: LOOP(uint16_t, uint16_t, uint16_t, ((void)x, y)); break;
    CMP_CASES_F16;
    default: break;
    }
}

#undef H
#undef HR

static void
row_bool(void *ctx, void *out, const void *const *in, const int64_t *st,
         int64_t cnt)
{
    switch (((const bctx_t *)ctx)->op) {
    case B_AND: LOOP(uint8_t, uint8_t, uint8_t, (x != 0) & (y != 0)); break;
    case B_OR: LOOP(uint8_t, uint8_t, uint8_t, (x != 0) | (y != 0)); break;
    case B_XOR: LOOP(uint8_t, uint8_t, uint8_t, (x != 0) ^ (y != 0)); break;
    case B_EQ: LOOP(uint8_t, uint8_t, uint8_t, (x != 0) == (y != 0)); break;
    case B_COPY: LOOP(uint8_t, uint8_t, uint8_t, ((void)x, y)); break;
    default: break;
    }
}

/* Pow with a base and exponent of different types: slow but exact
 * enough, and torch only writes it for tiny constant exponents. */
static void
row_pow_mixed(void *ctx, void *out, const void *const *in, const int64_t *st,
              int64_t cnt)
{
    const bctx_t *c = ctx;

    for (int64_t i = 0; i < cnt; i++) {
        double x = ss__ops_get_f64(in[0], c->a, i * st[0]);
        double y = ss__ops_get_f64(in[1], c->b, i * st[1]);
        double r = pow(x, y);

        switch (c->o) {
        case SS_DTYPE_F32: ((float *)out)[i] = (float)r; break;
        case SS_DTYPE_F64: ((double *)out)[i] = r; break;
        case SS_DTYPE_I64:
            ((int64_t *)out)[i] = r != r || fabs(r) >= 9.2e18 ? 0
                                                             : (int64_t)r;
            break;
        case SS_DTYPE_I32:
            ((int32_t *)out)[i] = r != r || fabs(r) >= 2.1e9 ? 0
                                                            : (int32_t)r;
            break;
        default: break;
        }
    }
}

static ss_bcast_row_fn
pick_row(bop_t op, ss_dtype_t dt)
{
    if (op == B_AND || op == B_OR || op == B_XOR)
        return dt == SS_DTYPE_BOOL ? row_bool : NULL;
    switch (dt) {
    case SS_DTYPE_F32: return row_f32;
    case SS_DTYPE_F64: return row_f64;
    case SS_DTYPE_I64: return op == B_POW ? NULL : row_i64;
    case SS_DTYPE_I32: return op == B_POW ? NULL : row_i32;
    case SS_DTYPE_I16: return op == B_POW ? NULL : row_i16;
    case SS_DTYPE_I8: return op == B_POW ? NULL : row_i8;
    case SS_DTYPE_U64: return op == B_POW ? NULL : row_u64;
    case SS_DTYPE_U32: return op == B_POW ? NULL : row_u32;
    case SS_DTYPE_U16: return op == B_POW ? NULL : row_u16;
    case SS_DTYPE_U8: return op == B_POW ? NULL : row_u8;
    case SS_DTYPE_F16: return op == B_POW ? NULL : row_f16;
    case SS_DTYPE_BOOL:
        return op == B_EQ || op == B_COPY ? row_bool : NULL;
    default: return NULL;
    }
}

static bool
is_cmp(bop_t op)
{
    return op == B_EQ || op == B_LT || op == B_GT || op == B_LE ||
           op == B_GE;
}

static const char *const bop_names[] = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Copy",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "And", "Or", "Xor"
};

static int
infer_binary(const ss_node_t *n, const ss_tensor_t *const *in,
             ss_tensor_t *out, bop_t op, bool variadic, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    int rc, ndim, n_in = n->n_inputs;
    ss_dtype_t dt;

    if (!variadic && n_in != 2)
        return ss__ops_fail(err, n, "needs 2 inputs, has %d", n_in);
    if (variadic && n_in < 1)
        return ss__ops_fail(err, n, "needs at least one input");
    if ((rc = ss__ops_check_inputs(n, in, n_in, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    for (int i = 1; i < n_in; i++)
        if (in[i]->dtype != dt && op != B_POW)
            return ss__ops_fail(err, n,
                                "input types differ: %s and %s",
                                ss__ops_dtype_name(dt),
                                ss__ops_dtype_name(in[i]->dtype));
    if (op == B_POW) {
        if (!ss__ops_is_float(dt) && dt != SS_DTYPE_I64 &&
            dt != SS_DTYPE_I32)
            return ss__ops_failc(err, SS_EUNSUPP, n,
                                 "Pow on %s is not supported",
                                 ss__ops_dtype_name(dt));
        if (!ss__ops_is_float(in[1]->dtype) && !ss__ops_is_int(in[1]->dtype))
            return ss__ops_failc(err, SS_EUNSUPP, n,
                                 "exponent of type %s is not supported",
                                 ss__ops_dtype_name(in[1]->dtype));
    } else if (pick_row(op, dt) == NULL) {
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not supported",
                             bop_names[op], ss__ops_dtype_name(dt));
    }
    if (n_in > 16 && variadic)
        return ss__ops_failc(err, SS_EUNSUPP, n, "more than 16 inputs");
    if ((rc = ss__bcast_shape(n, n_in, in, &ndim, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], is_cmp(op) ? SS_DTYPE_BOOL : dt, ndim,
                           dims, err);
}

/* out = a op b with broadcasting (a may be out itself, walked in place). */
static void
apply(const ss_tensor_t *a, const ss_tensor_t *b, ss_tensor_t *out,
      const bctx_t *c, ss_bcast_row_fn row)
{
    const ss_tensor_t *pair[2] = { a, b };
    const void *ptr[2] = { a->data, b->data };
    size_t es[2] = { ss__ops_dtype_size(a->dtype),
                     ss__ops_dtype_size(b->dtype) };
    ss_bcast_t it;

    ss__bcast_init(&it, 2, pair, out);
    ss__bcast_run(&it, out->data, ss__ops_dtype_size(out->dtype), ptr, es,
                  row, (void *)c);
}

static int
run_binary(const ss_node_t *n, const ss_tensor_t *const *in,
           ss_tensor_t *out, bop_t op, ss_err_t *err)
{
    bctx_t c = { op, in[0]->dtype, in[1]->dtype, out[0].dtype };
    ss_bcast_row_fn row;

    if (op == B_POW && (in[0]->dtype != in[1]->dtype ||
                        ss__ops_is_int(in[0]->dtype)))
        row = row_pow_mixed;
    else
        row = pick_row(op, in[0]->dtype);
    if (row == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "unsupported types");
    apply(in[0], in[1], &out[0], &c, row);
    return 0;
}

/* Max, Min, Sum, Mean: copy input 0 into the output, fold the rest in. */
static int
run_variadic(const ss_node_t *n, const ss_tensor_t *const *in,
             ss_tensor_t *out, bop_t op, bool mean, ss_err_t *err)
{
    ss_dtype_t dt = in[0]->dtype;
    ss_bcast_row_fn row = pick_row(op, dt);
    bctx_t copy = { B_COPY, dt, dt, dt }, c = { op, dt, dt, dt };
    int64_t cnt = ss__ops_numel(&out[0]);

    if (row == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "unsupported type");
    apply(&out[0], in[0], &out[0], &copy, row);
    for (int i = 1; i < n->n_inputs; i++)
        apply(&out[0], in[i], &out[0], &c, row);
    if (mean) {
        int k = n->n_inputs;

        for (int64_t i = 0; i < cnt; i++) {
            switch (dt) {
            case SS_DTYPE_F32: ((float *)out[0].data)[i] /= (float)k; break;
            case SS_DTYPE_F64: ((double *)out[0].data)[i] /= k; break;
            case SS_DTYPE_I64: ((int64_t *)out[0].data)[i] /= k; break;
            case SS_DTYPE_I32: ((int32_t *)out[0].data)[i] /= k; break;
            case SS_DTYPE_F16: {
                uint16_t *h = out[0].data;

                h[i] = ss__dyn_f2h(ss__dyn_h2f(h[i]) / (float)k);
                break;
            }
            default: break;
            }
        }
    }
    return 0;
}

#define BINARY(NAME, OP)                                                   \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        return infer_binary(n, in, out, OP, false, err);                   \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        return run_binary(n, in, out, OP, err);                            \
    }

#define VARIADIC(NAME, OP, MEAN)                                           \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        return infer_binary(n, in, out, OP, true, err);                    \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        return run_variadic(n, in, out, OP, MEAN, err);                    \
    }

BINARY(add, B_ADD)
BINARY(sub, B_SUB)
BINARY(mul, B_MUL)
BINARY(div, B_DIV)
BINARY(pow, B_POW)
BINARY(eq, B_EQ)
BINARY(lt, B_LT)
BINARY(gt, B_GT)
BINARY(le, B_LE)
BINARY(ge, B_GE)
BINARY(and, B_AND)
BINARY(or, B_OR)
BINARY(xor, B_XOR)
VARIADIC(max, B_MAX, false)
VARIADIC(min, B_MIN, false)
VARIADIC(sum, B_ADD, false)
VARIADIC(mean, B_ADD, true)

/* ---- Where -------------------------------------------------------------- */

#define WHERE_ROW(NAME, T)                                                 \
    static void                                                            \
    NAME(void *ctx, void *out, const void *const *in, const int64_t *st,  \
         int64_t cnt)                                                      \
    {                                                                      \
        const uint8_t *c = in[0];                                          \
        const T *x = in[1], *y = in[2];                                    \
        T *o = out;                                                        \
        for (int64_t i = 0; i < cnt; i++)                                  \
            o[i] = c[i * st[0]] ? x[i * st[1]] : y[i * st[2]];             \
    }

WHERE_ROW(where1, uint8_t)
WHERE_ROW(where2, uint16_t)
WHERE_ROW(where4, uint32_t)
WHERE_ROW(where8, uint64_t)

static int
infer_where(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    int rc, ndim;

    if (n->n_inputs != 3)
        return ss__ops_fail(err, n, "needs 3 inputs, has %d", n->n_inputs);
    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0)
        return rc;
    if (in[0]->dtype != SS_DTYPE_BOOL)
        return ss__ops_fail(err, n, "condition must be bool, not %s",
                            ss__ops_dtype_name(in[0]->dtype));
    if (in[1]->dtype != in[2]->dtype)
        return ss__ops_fail(err, n, "X is %s but Y is %s",
                            ss__ops_dtype_name(in[1]->dtype),
                            ss__ops_dtype_name(in[2]->dtype));
    if ((rc = ss__bcast_shape(n, 3, in, &ndim, dims, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[1]->dtype, ndim, dims, err);
}

static int
run_where(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[1]->dtype);
    size_t esz[3] = { 1, es, es };
    const void *ptr[3] = { in[0]->data, in[1]->data, in[2]->data };
    ss_bcast_row_fn row;
    ss_bcast_t it;

    switch (es) {
    case 1: row = where1; break;
    case 2: row = where2; break;
    case 4: row = where4; break;
    case 8: row = where8; break;
    default:
        return ss__ops_failc(err, SS_EUNSUPP, n, "unsupported type");
    }
    ss__bcast_init(&it, 3, in, &out[0]);
    ss__bcast_run(&it, out[0].data, es, ptr, esz, row, NULL);
    return 0;
}

const ss_op_t ss__ops_binary[] = {
    { "Add", infer_add, run_add },
    { "Sub", infer_sub, run_sub },
    { "Mul", infer_mul, run_mul },
    { "Div", infer_div, run_div },
    { "Pow", infer_pow, run_pow },
    { "Max", infer_max, run_max },
    { "Min", infer_min, run_min },
    { "Sum", infer_sum, run_sum },
    { "Mean", infer_mean, run_mean },
    { "Equal", infer_eq, run_eq },
    { "Less", infer_lt, run_lt },
    { "Greater", infer_gt, run_gt },
    { "LessOrEqual", infer_le, run_le },
    { "GreaterOrEqual", infer_ge, run_ge },
    { "And", infer_and, run_and },
    { "Or", infer_or, run_or },
    { "Xor", infer_xor, run_xor },
    { "Where", infer_where, run_where },
    { NULL, NULL, NULL }
};
