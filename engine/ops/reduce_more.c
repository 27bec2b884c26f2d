/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The norm-like reductions, as plain C reference kernels: ReduceL1,
 * ReduceL2, ReduceLogSum and ReduceLogSumExp (axes as an attribute, as
 * every version up to opset 17 has them; keepdims).
 *
 * DESIGN.  One pass maps each input element to its output element with an
 * odometer and accumulates in double (LogSumExp first takes each output's
 * maximum, so exp never overflows); results are stored in the input's
 * type.  Float types (float32/64, float16) and, for L1/L2, int32/int64.
 * An empty reduction gives 0 (L1, L2) or -inf (LogSum, LogSumExp), as
 * numpy does.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

typedef enum { R_L1, R_L2, R_LOGSUM, R_LOGSUMEXP } rop_t;

static int
axes_of(const ss_node_t *n, int r, bool *red, ss_err_t *err)
{
    const int64_t *a;
    int cnt = ss__attr_ints(n, "axes", &a), rc;

    memset(red, 0, sizeof(bool) * SS_MAX_DIMS);
    if (cnt > SS_MAX_DIMS)
        return ss__ops_fail(err, n, "too many axes (%d)", cnt);
    if (cnt <= 0) {
        for (int d = 0; d < r; d++)
            red[d] = true;
        return 0;
    }
    for (int i = 0; i < cnt; i++) {
        int ax;

        if ((rc = ss__ops_axis(n, a[i], r, false, &ax, err)) < 0)
            return rc;
        red[ax] = true;
    }
    return 0;
}

static int
infer_red(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
          rop_t op, ss_err_t *err)
{
    bool red[SS_MAX_DIMS], keep = ss__attr_int(n, "keepdims", 1) != 0;
    int64_t dims[SS_MAX_DIMS];
    ss_dtype_t t;
    int rc, k = 0;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (ss__ops_has_input(n, in, 1))
        return ss__ops_failc(err, SS_EUNSUPP, n, "axes as an input (opset "
                             "18) is not supported");
    t = in[0]->dtype;
    if (!ss__dyn_is_float(t) && !((op == R_L1 || op == R_L2)
                                  && (t == SS_DTYPE_I32
                                      || t == SS_DTYPE_I64)))
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not "
                             "supported", n->op_type,
                             ss__ops_dtype_name(t));
    if ((rc = axes_of(n, in[0]->ndim, red, err)) < 0)
        return rc;
    for (int d = 0; d < in[0]->ndim; d++) {
        if (!red[d])
            dims[k++] = in[0]->dims[d];
        else if (keep)
            dims[k++] = 1;
    }
    return ss__ops_set_out(n, &out[0], t, k, dims, err);
}

/* Output element of every input element, through an odometer. */
static void
map_out(const ss_tensor_t *x, const bool *red, int64_t *oidx)
{
    int64_t coord[SS_MAX_DIMS] = { 0 }, ostride[SS_MAX_DIMS];
    int64_t cnt = ss__ops_numel(x), s = 1, o = 0;
    int r = x->ndim;

    for (int d = r - 1; d >= 0; d--) {
        ostride[d] = red[d] ? 0 : s;
        if (!red[d])
            s *= x->dims[d];
    }
    for (int64_t i = 0; i < cnt; i++) {
        oidx[i] = o;
        for (int d = r - 1; d >= 0; d--) {
            coord[d]++;
            o += ostride[d];
            if (coord[d] < x->dims[d])
                break;
            o -= ostride[d] * x->dims[d];
            coord[d] = 0;
        }
    }
}

static int
run_red(const ss_node_t *n, const ss_tensor_t *const *in, ss_tensor_t *out,
        rop_t op, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    int64_t cnt = ss__ops_numel(x), ocnt = ss__ops_numel(&out[0]);
    int64_t *oidx = NULL;
    double *acc = NULL, *mx = NULL;
    bool red[SS_MAX_DIMS];
    int rc;

    if ((rc = axes_of(n, x->ndim, red, err)) < 0)
        return rc;
    oidx = ss_malloc(sizeof(*oidx) * (size_t)(cnt + 1));
    acc = ss_calloc((size_t)ocnt + 1, sizeof(*acc));
    mx = ss_malloc(sizeof(*mx) * (size_t)(ocnt + 1));
    if (oidx == NULL || acc == NULL || mx == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %s", n->op_type);
        goto done;
    }
    map_out(x, red, oidx);
    for (int64_t o = 0; o < ocnt; o++)
        mx[o] = -INFINITY;
    if (op == R_LOGSUMEXP)
        for (int64_t i = 0; i < cnt; i++)
            mx[oidx[i]] = fmax(mx[oidx[i]], ss__dyn_get(x->data, x->dtype,
                                                        i));
    for (int64_t i = 0; i < cnt; i++) {
        double v = ss__dyn_get(x->data, x->dtype, i);
        double m = mx[oidx[i]];

        switch (op) {
        case R_L1: acc[oidx[i]] += fabs(v); break;
        case R_L2: acc[oidx[i]] += v * v; break;
        case R_LOGSUM: acc[oidx[i]] += v; break;
        case R_LOGSUMEXP:
            acc[oidx[i]] += isinf(m) ? exp(v) : exp(v - m);
            break;
        }
    }
    for (int64_t o = 0; o < ocnt; o++) {
        double r = acc[o];

        switch (op) {
        case R_L1: break;
        case R_L2: r = sqrt(r); break;
        case R_LOGSUM: r = log(r); break;
        case R_LOGSUMEXP: r = isinf(mx[o]) ? log(r) : log(r) + mx[o]; break;
        }
        if (ss__ops_is_int(out[0].dtype))
            r = nearbyint(r);
        ss__dyn_set(out[0].data, out[0].dtype, o, r);
    }
done:
    ss_free(oidx);
    ss_free(acc);
    ss_free(mx);
    return rc;
}

#define RED(NAME, OP)                                                      \
    static int                                                             \
    infer_##NAME(const ss_node_t *n, int opset,                            \
                 const ss_tensor_t *const *in, ss_tensor_t *out,           \
                 ss_err_t *err)                                            \
    {                                                                      \
        (void)opset;                                                       \
        return infer_red(n, in, out, OP, err);                             \
    }                                                                      \
    static int                                                             \
    run_##NAME(const ss_node_t *n, int opset, const ss_tensor_t *const *in, \
               ss_tensor_t *out, ss_err_t *err)                            \
    {                                                                      \
        (void)opset;                                                       \
        return run_red(n, in, out, OP, err);                               \
    }

RED(l1, R_L1)
RED(l2, R_L2)
RED(logsum, R_LOGSUM)
RED(logsumexp, R_LOGSUMEXP)

const ss_op_t ss__ops_reduce_more[] = {
    { "ReduceL1", infer_l1, run_l1 },
    { "ReduceL2", infer_l2, run_l2 },
    { "ReduceLogSum", infer_logsum, run_logsum },
    { "ReduceLogSumExp", infer_logsumexp, run_logsumexp },
    { NULL, NULL, NULL }
};
