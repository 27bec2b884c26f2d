/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unique, as a plain C reference kernel: the distinct elements (no axis)
 * or slices along an axis, sorted (numpy's lexicographic order of the
 * slices) or in order of first occurrence, with indices, inverse_indices
 * and counts.
 *
 * DESIGN.  The input is seen as L rows (the slices along axis, each row
 * the slice's elements in C order; without axis, L = numel rows of one
 * element).  Each row is compared with the distinct rows found so far
 * (quadratic: correct first, Unique is rare in served models), then the
 * distinct rows are sorted when asked.  The output's size is the data's,
 * so the input must be a constant when the plan is compiled.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

typedef struct {
    const ss_tensor_t *x;
    int axis;                   /* -1: flattened */
    int64_t L, outer, inner;
    int64_t U;
    int64_t *first;             /* [U] first row of each distinct row */
    int64_t *inv;               /* [L] position of each row's distinct */
    int64_t *count;             /* [U] */
} uq_t;

static double
el(const uq_t *q, int64_t row, int64_t k)
{
    int64_t o = k / q->inner, i = k % q->inner;

    return ss__dyn_get(q->x->data, q->x->dtype,
                       (o * q->L + row) * q->inner + i);
}

static int
row_cmp(const uq_t *q, int64_t a, int64_t b)
{
    int64_t S = q->outer * q->inner;

    for (int64_t k = 0; k < S; k++) {
        double va = el(q, a, k), vb = el(q, b, k);

        if (va != vb)
            return va < vb ? -1 : 1;
    }
    return 0;
}

/* qsort has no context argument: the rows compared are this call's. */
static _Thread_local const uq_t *sort_q;

static int
by_row(const void *pa, const void *pb)
{
    return row_cmp(sort_q, *(const int64_t *)pa, *(const int64_t *)pb);
}

static void
uq_free(uq_t *q)
{
    ss_free(q->first);
    ss_free(q->inv);
    ss_free(q->count);
}

static int
uq_run(const ss_node_t *n, const ss_tensor_t *x, uq_t *q, ss_err_t *err)
{
    const ss_attr_t *a = ss__attr_find(n, "axis");
    bool sorted = ss__attr_int(n, "sorted", 1) != 0;
    int64_t *pos = NULL;
    int rc = 0;

    memset(q, 0, sizeof(*q));
    q->x = x;
    q->axis = -1;
    if (a != NULL && (rc = ss__ops_axis(n, a->i, x->ndim, false, &q->axis,
                                        err)) < 0)
        return rc;
    if (q->axis < 0) {
        q->L = ss__ops_numel(x);
        q->outer = q->inner = 1;
    } else {
        q->L = x->dims[q->axis];
        q->outer = ss__ops_prod(x->dims, 0, q->axis);
        q->inner = ss__ops_prod(x->dims, q->axis + 1, x->ndim);
    }
    q->first = ss_malloc(sizeof(int64_t) * (size_t)(q->L + 1));
    q->inv = ss_malloc(sizeof(int64_t) * (size_t)(q->L + 1));
    q->count = ss_calloc((size_t)q->L + 1, sizeof(int64_t));
    pos = ss_malloc(sizeof(int64_t) * (size_t)(q->L + 1));
    if (q->first == NULL || q->inv == NULL || q->count == NULL
        || pos == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for Unique");
        goto done;
    }
    for (int64_t l = 0; l < q->L; l++) {
        int64_t u = 0;

        while (u < q->U && row_cmp(q, q->first[u], l) != 0)
            u++;
        if (u == q->U)
            q->first[q->U++] = l;
        q->inv[l] = u;
        q->count[u]++;
    }
    if (sorted) {
        int64_t *cnt = ss_malloc(sizeof(int64_t) * (size_t)(q->U + 1));

        if (cnt == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for Unique");
            goto done;
        }
        /* pos[u] = the sorted place of distinct u */
        for (int64_t u = 0; u < q->U; u++)
            pos[u] = q->first[u];
        sort_q = q;
        qsort(pos, (size_t)q->U, sizeof(*pos), by_row);
        for (int64_t s = 0; s < q->U; s++) {
            int64_t u = q->inv[pos[s]];

            cnt[s] = q->count[u];
            q->first[s] = pos[s];
            pos[s] = u;     /* sorted place s holds distinct u */
        }
        for (int64_t s = 0; s < q->U; s++)
            q->count[s] = cnt[s];
        /* old distinct u -> sorted place */
        for (int64_t s = 0; s < q->U; s++)
            cnt[pos[s]] = s;
        for (int64_t l = 0; l < q->L; l++)
            q->inv[l] = cnt[q->inv[l]];
        ss_free(cnt);
    }
done:
    ss_free(pos);
    if (rc < 0)
        uq_free(q);
    return rc;
}

static int
infer_unique(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    uq_t q;
    int rc, nd;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0)
        return rc;
    if (in[0]->data == NULL)
        return ss__ops_failc(err, SS_EUNSUPP, n, "the input decides the "
                             "output's shape: it must be a constant known "
                             "when the plan is compiled");
    if (!ss__dyn_is_float(in[0]->dtype) && !ss__ops_is_int(in[0]->dtype))
        return ss__ops_failc(err, SS_EUNSUPP, n, "Unique on %s is not "
                             "supported", ss__ops_dtype_name(in[0]->dtype));
    if ((rc = uq_run(n, in[0], &q, err)) < 0)
        return rc;
    if (q.axis < 0) {
        nd = 1;
        dims[0] = q.U;
    } else {
        nd = in[0]->ndim;
        memcpy(dims, in[0]->dims, sizeof(int64_t) * (size_t)nd);
        dims[q.axis] = q.U;
    }
    rc = ss__ops_set_out(n, &out[0], in[0]->dtype, nd, dims, err);
    for (int k = 1; k < 4 && rc == 0; k++)
        if (k < n->n_outputs && n->outputs[k] >= 0)
            rc = ss__ops_set_out(n, &out[k], SS_DTYPE_I64, 1,
                                 k == 2 ? &q.L : &q.U, err);
    uq_free(&q);
    return rc;
}

static int
run_unique(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    uq_t q;
    int rc;

    (void)opset;
    if ((rc = uq_run(n, in[0], &q, err)) < 0)
        return rc;
    if (q.axis < 0 ? out[0].dims[0] != q.U : out[0].dims[q.axis] != q.U) {
        uq_free(&q);
        return ss__ops_fail(err, n, "found %lld distinct, planned other",
                            (long long)q.U);
    }
    for (int64_t o = 0; o < q.outer; o++)
        for (int64_t u = 0; u < q.U; u++)
            memcpy((char *)out[0].data + (o * q.U + u) * q.inner
                   * (int64_t)es,
                   (const char *)in[0]->data
                   + (o * q.L + q.first[u]) * q.inner * (int64_t)es,
                   (size_t)q.inner * es);
    if (ss__ops_want_output(n, out, 1))
        memcpy(out[1].data, q.first, sizeof(int64_t) * (size_t)q.U);
    if (ss__ops_want_output(n, out, 2))
        memcpy(out[2].data, q.inv, sizeof(int64_t) * (size_t)q.L);
    if (ss__ops_want_output(n, out, 3))
        memcpy(out[3].data, q.count, sizeof(int64_t) * (size_t)q.U);
    uq_free(&q);
    return 0;
}

const ss_op_t ss__ops_unique[] = {
    { "Unique", infer_unique, run_unique },
    { NULL, NULL, NULL }
};
