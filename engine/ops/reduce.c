/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
 * ReduceL2, ReduceSumSquare, with keepdims and noop_with_empty_axes.
 * Axes come from the attribute, or from the second input from opset 13
 * (ReduceSum) and 18 (the others).
 *
 * One helper serves all: the kept axes are walked by an outer odometer,
 * the reduced axes by an inner one, so each output element accumulates
 * in a double (or int64) register with no scratch buffer.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <math.h>
#include <string.h>

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L2, R_SUMSQ } rop_t;

typedef struct {
    bool red[SS_MAX_DIMS];
    bool noop;
} rplan_t;

static int
reduce_plan(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            rop_t op, rplan_t *p, ss_err_t *err)
{
    int64_t axes[SS_MAX_DIMS];
    int cnt = -1, r = in[0]->ndim, rc;
    bool from_input = opset >= 18 || (op == R_SUM && opset >= 13);

    memset(p, 0, sizeof(*p));
    if (from_input) {
        if (ss__ops_has_input(n, in, 1) &&
            (cnt = ss__ops_read_ints(n, in[1], "axes", axes, SS_MAX_DIMS,
                                     err)) < 0)
            return cnt;
    } else {
        const int64_t *a;

        if ((cnt = ss__attr_ints(n, "axes", &a)) > SS_MAX_DIMS)
            return ss__ops_fail(err, n, "too many axes (%d)", cnt);
        if (cnt > 0)
            memcpy(axes, a, (size_t)cnt * sizeof(*a));
    }
    if (cnt <= 0) {
        if (ss__attr_int(n, "noop_with_empty_axes", 0) != 0) {
            p->noop = true;
            return 0;
        }
        for (int d = 0; d < r; d++)
            p->red[d] = true;
        return 0;
    }
    for (int i = 0; i < cnt; i++) {
        int a;

        if ((rc = ss__ops_axis(n, axes[i], r, false, &a, err)) < 0)
            return rc;
        p->red[a] = true;
    }
    return 0;
}

static int
infer_reduce(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, rop_t op, ss_err_t *err)
{
    bool keep = ss__attr_int(n, "keepdims", 1) != 0;
    int64_t dims[SS_MAX_DIMS];
    ss_dtype_t dt;
    rplan_t p;
    int rc, k = 0;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    dt = in[0]->dtype;
    if (dt != SS_DTYPE_F32 && !((dt == SS_DTYPE_I64 || dt == SS_DTYPE_I32) &&
                                op != R_MEAN && op != R_L2))
        return ss__ops_failc(err, SS_EUNSUPP, n, "type %s is not supported",
                             ss__ops_dtype_name(dt));
    if ((rc = reduce_plan(n, opset, in, op, &p, err)) < 0)
        return rc;
    for (int d = 0; d < in[0]->ndim; d++) {
        if (p.noop || !p.red[d])
            dims[k++] = in[0]->dims[d];
        else if (keep)
            dims[k++] = 1;
        if (!p.noop && p.red[d] && in[0]->dims[d] == 0 &&
            (op == R_MAX || op == R_MIN))
            return ss__ops_fail(err, n, "cannot reduce an empty axis %d", d);
    }
    return ss__ops_set_out(n, &out[0], dt, k, dims, err);
}

/* Splits axes into kept (outer) and reduced (inner) lists with input
 * strides. */
typedef struct {
    int nk, nr;
    int64_t kd[SS_MAX_DIMS], ks[SS_MAX_DIMS], rd[SS_MAX_DIMS], rs[SS_MAX_DIMS];
} walk_t;

static void
make_walk(const ss_tensor_t *x, const rplan_t *p, walk_t *w)
{
    int64_t s = 1, st[SS_MAX_DIMS];

    for (int d = x->ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= x->dims[d];
    }
    w->nk = w->nr = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (p->red[d]) {
            w->rd[w->nr] = x->dims[d];
            w->rs[w->nr++] = st[d];
        } else {
            w->kd[w->nk] = x->dims[d];
            w->ks[w->nk++] = st[d];
        }
    }
}

/* Advances an odometer; returns the change of offset. */
static int64_t
step(int64_t *idx, const int64_t *dims, const int64_t *str, int nd)
{
    int64_t delta = 0;

    for (int d = nd - 1; d >= 0; d--) {
        idx[d]++;
        delta += str[d];
        if (idx[d] < dims[d])
            break;
        delta -= str[d] * dims[d];
        idx[d] = 0;
    }
    return delta;
}

#define REDUCE_LOOP(T, ACC, INIT, UPDATE, FINISH)                          \
    do {                                                                   \
        const T *x_ = in[0]->data;                                         \
        T *y_ = out[0].data;                                               \
        int64_t oi[SS_MAX_DIMS] = { 0 }, koff = 0;                         \
        for (int64_t o = 0; o < nout; o++) {                               \
            int64_t ri[SS_MAX_DIMS] = { 0 }, roff = 0;                     \
            ACC acc = (INIT);                                              \
            for (int64_t j = 0; j < nred; j++) {                           \
                T v = x_[koff + roff];                                     \
                UPDATE;                                                    \
                roff += step(ri, w.rd, w.rs, w.nr);                        \
            }                                                              \
            y_[o] = (T)(FINISH);                                           \
            koff += step(oi, w.kd, w.ks, w.nk);                            \
        }                                                                  \
    } while (0)

static int
run_reduce(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, rop_t op, ss_err_t *err)
{
    int64_t nout, nred;
    rplan_t p;
    walk_t w;
    int rc;

    if ((rc = reduce_plan(n, opset, in, op, &p, err)) < 0)
        return rc;
    if (p.noop) {
        size_t bytes = (size_t)ss__ops_numel(in[0]) *
                       ss__ops_dtype_size(in[0]->dtype);

        if (bytes > 0 && out[0].data != in[0]->data)
            memmove(out[0].data, in[0]->data, bytes);
        return 0;
    }
    make_walk(in[0], &p, &w);
    nout = ss__ops_prod(w.kd, 0, w.nk);
    nred = ss__ops_prod(w.rd, 0, w.nr);
    if (in[0]->dtype == SS_DTYPE_F32) {
        switch (op) {
        case R_SUM: REDUCE_LOOP(float, double, 0.0, acc += v, acc); break;
        case R_MEAN:
            REDUCE_LOOP(float, double, 0.0, acc += v,
                        nred ? acc / (double)nred : NAN);
            break;
        case R_MAX:
            REDUCE_LOOP(float, float, -INFINITY,
                        acc = v > acc || v != v ? v : acc, acc);
            break;
        case R_MIN:
            REDUCE_LOOP(float, float, INFINITY,
                        acc = v < acc || v != v ? v : acc, acc);
            break;
        case R_PROD: REDUCE_LOOP(float, double, 1.0, acc *= v, acc); break;
        case R_L2:
            REDUCE_LOOP(float, double, 0.0, acc += (double)v * v, sqrt(acc));
            break;
        case R_SUMSQ:
            REDUCE_LOOP(float, double, 0.0, acc += (double)v * v, acc);
            break;
        }
    } else if (in[0]->dtype == SS_DTYPE_I64) {
        switch (op) {
        case R_SUM:
            REDUCE_LOOP(int64_t, uint64_t, 0, acc += (uint64_t)v, acc);
            break;
        case R_MAX:
            REDUCE_LOOP(int64_t, int64_t, INT64_MIN, acc = v > acc ? v : acc,
                        acc);
            break;
        case R_MIN:
            REDUCE_LOOP(int64_t, int64_t, INT64_MAX, acc = v < acc ? v : acc,
                        acc);
            break;
        case R_PROD:
            REDUCE_LOOP(int64_t, uint64_t, 1, acc *= (uint64_t)v, acc);
            break;
        case R_SUMSQ:
            REDUCE_LOOP(int64_t, uint64_t, 0,
                        acc += (uint64_t)v * (uint64_t)v, acc);
            break;
        default: break;
        }
    } else {
        switch (op) {
        case R_SUM:
            REDUCE_LOOP(int32_t, uint32_t, 0, acc += (uint32_t)v, acc);
            break;
        case R_MAX:
            REDUCE_LOOP(int32_t, int32_t, INT32_MIN, acc = v > acc ? v : acc,
                        acc);
            break;
        case R_MIN:
            REDUCE_LOOP(int32_t, int32_t, INT32_MAX, acc = v < acc ? v : acc,
                        acc);
            break;
        case R_PROD:
            REDUCE_LOOP(int32_t, uint32_t, 1, acc *= (uint32_t)v, acc);
            break;
        case R_SUMSQ:
            REDUCE_LOOP(int32_t, uint32_t, 0,
                        acc += (uint32_t)v * (uint32_t)v, acc);
            break;
        default: break;
        }
    }
    return 0;
}

#define REDUCE(NAME, OP)                                                   \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        return infer_reduce(n, opset, in, out, OP, err);                   \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        return run_reduce(n, opset, in, out, OP, err);                     \
    }

REDUCE(sum, R_SUM)
REDUCE(mean, R_MEAN)
REDUCE(max, R_MAX)
REDUCE(min, R_MIN)
REDUCE(prod, R_PROD)
REDUCE(l2, R_L2)
REDUCE(sumsq, R_SUMSQ)

const ss_op_t ss__ops_reduce[] = {
    { "ReduceSum", infer_sum, run_sum },
    { "ReduceMean", infer_mean, run_mean },
    { "ReduceMax", infer_max, run_max },
    { "ReduceMin", infer_min, run_min },
    { "ReduceProd", infer_prod, run_prod },
    { "ReduceL2", infer_l2, run_l2 },
    { "ReduceSumSquare", infer_sumsq, run_sumsq },
    { NULL, NULL, NULL }
};
