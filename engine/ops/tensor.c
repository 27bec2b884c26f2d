/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ops that move data without arithmetic: Transpose, Slice, Concat, Split,
 * Gather, Tile.  They work on any element type by size (1, 2, 4 or 8 bytes).
 *
 * Transpose and Slice share one strided copy: every output axis has a
 * (possibly negative) stride into the input, the innermost axis is a
 * plain loop, or a memcpy where it is contiguous in the input (the
 * loop with a run-time stride is not vectorised: a Slice of 768-float
 * rows ran at ~8 GB/s).  Gather checks its indices again at run time, since they
 * are data.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/ops.h"

#include <string.h>

#define STRIDED(T)                                                         \
    do {                                                                   \
        const T *x_ = in;                                                  \
        T *y_ = out;                                                       \
        for (int64_t r = 0; r < rows; r++) {                               \
            const T *xr = x_ + off;                                        \
            if (ist == 1)                                                  \
                memcpy(y_, xr, (size_t)inner * sizeof(T));                 \
            else                                                           \
                for (int64_t i = 0; i < inner; i++)                        \
                    y_[i] = xr[i * ist];                                   \
            y_ += inner;                                                   \
            for (int d = ndim - 2; d >= 0; d--) {                          \
                idx[d]++;                                                  \
                off += str[d];                                             \
                if (idx[d] < dims[d])                                      \
                    break;                                                 \
                off -= str[d] * dims[d];                                   \
                idx[d] = 0;                                                \
            }                                                              \
        }                                                                  \
    } while (0)

/* out[i...] = in[off + sum(i_d * str[d])], elements of es bytes. */
static void
strided_copy(void *out, const void *in, size_t es, int ndim,
             const int64_t *dims, const int64_t *str, int64_t off)
{
    int64_t idx[SS_MAX_DIMS] = { 0 }, inner, ist, rows;

    if (ndim == 0) {
        memcpy(out, (const char *)in + off * (int64_t)es, es);
        return;
    }
    inner = dims[ndim - 1];
    ist = str[ndim - 1];
    rows = ss__ops_prod(dims, 0, ndim - 1);
    if (inner == 0 || rows == 0)
        return;
    switch (es) {
    case 1: STRIDED(uint8_t); break;
    case 2: STRIDED(uint16_t); break;
    case 4: STRIDED(uint32_t); break;
    case 8: STRIDED(uint64_t); break;
    default: break;
    }
}

static void
row_strides(const ss_tensor_t *t, int64_t *st)
{
    int64_t s = 1;

    for (int d = t->ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= t->dims[d];
    }
}

/* ---- Transpose -------------------------------------------------------------- */

static int
read_perm(const ss_node_t *n, int r, int *perm, ss_err_t *err)
{
    const int64_t *p;
    bool seen[SS_MAX_DIMS] = { false };
    int cnt = ss__attr_ints(n, "perm", &p);

    if (cnt < 0) {
        for (int d = 0; d < r; d++)
            perm[d] = r - 1 - d;
        return 0;
    }
    if (cnt != r)
        return ss__ops_fail(err, n, "perm has %d values, input has rank %d",
                            cnt, r);
    for (int d = 0; d < r; d++) {
        if (p[d] < 0 || p[d] >= r || seen[p[d]])
            return ss__ops_fail(err, n, "perm is not a permutation of 0..%d",
                                r - 1);
        seen[p[d]] = true;
        perm[d] = (int)p[d];
    }
    return 0;
}

static int
infer_transpose(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                ss_tensor_t *out, ss_err_t *err)
{
    int perm[SS_MAX_DIMS], rc;
    int64_t dims[SS_MAX_DIMS];

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = read_perm(n, in[0]->ndim, perm, err)) < 0)
        return rc;
    for (int d = 0; d < in[0]->ndim; d++)
        dims[d] = in[0]->dims[perm[d]];
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, dims, err);
}

static int
run_transpose(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
              ss_tensor_t *out, ss_err_t *err)
{
    int64_t ist[SS_MAX_DIMS], str[SS_MAX_DIMS];
    int perm[SS_MAX_DIMS], rc;

    if ((rc = read_perm(n, in[0]->ndim, perm, err)) < 0)
        return rc;
    row_strides(in[0], ist);
    for (int d = 0; d < in[0]->ndim; d++)
        str[d] = ist[perm[d]];
    strided_copy(out[0].data, in[0]->data, ss__ops_dtype_size(in[0]->dtype),
                 out[0].ndim, out[0].dims, str, 0);
    return 0;
}

/* ---- Slice ------------------------------------------------------------------ */

typedef struct {
    int64_t start[SS_MAX_DIMS], step[SS_MAX_DIMS], dims[SS_MAX_DIMS];
} slice_t;

static int
slice_params(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             slice_t *s, ss_err_t *err)
{
    int64_t st[SS_MAX_DIMS], en[SS_MAX_DIMS], ax[SS_MAX_DIMS];
    int64_t sp[SS_MAX_DIMS];
    bool seen[SS_MAX_DIMS] = { false };
    const ss_tensor_t *x = in[0];
    int ns, ne, na, nstep, r = x->ndim, rc;

    if (opset < 10) {
        const int64_t *a;

        ns = ss__attr_ints(n, "starts", &a);
        if (ns > SS_MAX_DIMS)
            return ss__ops_fail(err, n, "too many starts");
        if (ns > 0)
            memcpy(st, a, (size_t)ns * sizeof(*a));
        ne = ss__attr_ints(n, "ends", &a);
        if (ne > SS_MAX_DIMS)
            return ss__ops_fail(err, n, "too many ends");
        if (ne > 0)
            memcpy(en, a, (size_t)ne * sizeof(*a));
        na = ss__attr_ints(n, "axes", &a);
        if (na > SS_MAX_DIMS)
            return ss__ops_fail(err, n, "too many axes");
        if (na > 0)
            memcpy(ax, a, (size_t)na * sizeof(*a));
        nstep = -1;
        if (ns < 0 || ne < 0)
            return ss__ops_fail(err, n, "starts and ends are required");
    } else {
        if (!ss__ops_has_input(n, in, 1) || !ss__ops_has_input(n, in, 2))
            return ss__ops_fail(err, n, "starts and ends are required");
        if ((ns = ss__ops_read_ints(n, in[1], "starts", st, SS_MAX_DIMS,
                                    err)) < 0)
            return ns;
        if ((ne = ss__ops_read_ints(n, in[2], "ends", en, SS_MAX_DIMS,
                                    err)) < 0)
            return ne;
        na = nstep = -1;
        if (ss__ops_has_input(n, in, 3) &&
            (na = ss__ops_read_ints(n, in[3], "axes", ax, SS_MAX_DIMS,
                                    err)) < 0)
            return na;
        if (ss__ops_has_input(n, in, 4) &&
            (nstep = ss__ops_read_ints(n, in[4], "steps", sp, SS_MAX_DIMS,
                                       err)) < 0)
            return nstep;
    }
    if (ne != ns || (na >= 0 && na != ns) || (nstep >= 0 && nstep != ns))
        return ss__ops_fail(err, n, "starts, ends, axes and steps differ in "
                            "length");
    for (int d = 0; d < r; d++) {
        s->start[d] = 0;
        s->step[d] = 1;
        s->dims[d] = x->dims[d];
    }
    for (int i = 0; i < ns; i++) {
        int64_t dim, b, e, k, cnt;
        int a = i;

        if (na >= 0 && (rc = ss__ops_axis(n, ax[i], r, false, &a, err)) < 0)
            return rc;
        if (na < 0 && i >= r)
            return ss__ops_fail(err, n, "more starts than axes");
        if (seen[a])
            return ss__ops_fail(err, n, "axis %d is repeated", a);
        seen[a] = true;
        k = nstep >= 0 ? sp[i] : 1;
        if (k == 0)
            return ss__ops_fail(err, n, "step must not be 0");
        dim = x->dims[a];
        /* A step longer than the axis takes one element either way;
         * clamping keeps the arithmetic below from overflowing. */
        if (k > SS_OPS_MAX_NUMEL)
            k = SS_OPS_MAX_NUMEL + 1;
        if (k < -SS_OPS_MAX_NUMEL)
            k = -SS_OPS_MAX_NUMEL - 1;
        b = st[i];
        e = en[i];
        /* dim <= 2^40, so neither addition can overflow. */
        if (b < 0)
            b += dim;
        if (e < 0)
            e += dim;
        if (k > 0) {
            b = b < 0 ? 0 : b > dim ? dim : b;
            e = e < 0 ? 0 : e > dim ? dim : e;
            cnt = e > b ? (e - b + k - 1) / k : 0;
        } else {
            b = b < 0 ? -1 : b > dim - 1 ? dim - 1 : b;
            e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
            cnt = b > e ? (b - e + (-k) - 1) / (-k) : 0;
        }
        s->start[a] = cnt > 0 ? b : 0;
        s->step[a] = k;
        s->dims[a] = cnt;
    }
    return 0;
}

static int
infer_slice(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    slice_t s;
    int rc;

    if ((rc = ss__ops_check_inputs(n, in, opset < 10 ? 1 : 3, err)) < 0 ||
        (rc = slice_params(n, opset, in, &s, err)) < 0)
        return rc;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, in[0]->ndim, s.dims,
                           err);
}

int
ss__ops_slice_view(const ss_node_t *n, int opset,
                   const ss_tensor_t *const *in, int64_t *dims,
                   int64_t *str, int64_t *off, ss_err_t *err)
{
    int64_t ist[SS_MAX_DIMS];
    slice_t s;
    int rc;

    if ((rc = slice_params(n, opset, in, &s, err)) < 0)
        return rc;
    row_strides(in[0], ist);
    *off = 0;
    for (int d = 0; d < in[0]->ndim; d++) {
        dims[d] = s.dims[d];
        str[d] = ist[d] * s.step[d];
        *off += s.start[d] * ist[d];
    }
    return 0;
}

static int
run_slice(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], str[SS_MAX_DIMS], off;
    int rc;

    if ((rc = ss__ops_slice_view(n, opset, in, dims, str, &off, err)) < 0)
        return rc;
    strided_copy(out[0].data, in[0]->data, ss__ops_dtype_size(in[0]->dtype),
                 in[0]->ndim, dims, str, off);
    return 0;
}

/* ---- Concat ----------------------------------------------------------------- */

static int
infer_concat(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS], total = 0;
    const ss_attr_t *ax = ss__attr_find(n, "axis");
    int a, rc, r;

    if (n->n_inputs < 1)
        return ss__ops_fail(err, n, "needs at least one input");
    if ((rc = ss__ops_check_inputs(n, in, n->n_inputs, err)) < 0)
        return rc;
    if (ax == NULL || ax->type != SS_ATTR_INT)
        return ss__ops_fail(err, n, "axis is required");
    r = in[0]->ndim;
    if (r == 0)
        return ss__ops_fail(err, n, "inputs must have rank >= 1");
    if ((rc = ss__ops_axis(n, ax->i, r, false, &a, err)) < 0)
        return rc;
    for (int i = 0; i < n->n_inputs; i++) {
        const ss_tensor_t *t = in[i];

        if (t->dtype != in[0]->dtype || t->ndim != r)
            return ss__ops_fail(err, n, "input %d is %s rank %d; input 0 is "
                                "%s rank %d", i, ss__ops_dtype_name(t->dtype),
                                t->ndim, ss__ops_dtype_name(in[0]->dtype), r);
        for (int d = 0; d < r; d++)
            if (d != a && t->dims[d] != in[0]->dims[d])
                return ss__ops_fail(err, n, "input %d axis %d is %lld; input "
                                    "0 has %lld", i, d,
                                    (long long)t->dims[d],
                                    (long long)in[0]->dims[d]);
        total += t->dims[a];   /* each <= 2^40; at most 2^31 inputs */
    }
    memcpy(dims, in[0]->dims, sizeof(dims));
    dims[a] = total;
    return ss__ops_set_out(n, &out[0], in[0]->dtype, r, dims, err);
}

static int
run_concat(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(out[0].dtype);
    int a = 0, rc;
    int64_t outer, inner, orow;
    char *y = out[0].data;

    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), out[0].ndim,
                           false, &a, err)) < 0)
        return rc;
    outer = ss__ops_prod(out[0].dims, 0, a);
    inner = ss__ops_prod(out[0].dims, a + 1, out[0].ndim) * (int64_t)es;
    orow = out[0].dims[a] * inner;
    for (int64_t o = 0; o < outer; o++) {
        int64_t pos = 0;

        for (int i = 0; i < n->n_inputs; i++) {
            int64_t chunk = in[i]->dims[a] * inner;

            if (chunk > 0)
                memcpy(y + o * orow + pos,
                       (const char *)in[i]->data + o * chunk, (size_t)chunk);
            pos += chunk;
        }
    }
    return 0;
}

/* ---- Split ------------------------------------------------------------------ */

#define MAX_SPLIT 1024

static int
split_sizes(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            int *axis, int64_t *sizes, ss_err_t *err)
{
    int no = n->n_outputs, rc, cnt = -1;
    int64_t dim, sum = 0;
    const int64_t *a;

    if (no < 1 || no > MAX_SPLIT)
        return ss__ops_failc(err, SS_EUNSUPP, n, "%d outputs (1 to %d "
                             "supported)", no, MAX_SPLIT);
    if (in[0]->ndim == 0)
        return ss__ops_fail(err, n, "input must have rank >= 1");
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), in[0]->ndim,
                           false, axis, err)) < 0)
        return rc;
    dim = in[0]->dims[*axis];
    if (opset >= 13 && ss__ops_has_input(n, in, 1)) {
        if ((cnt = ss__ops_read_ints(n, in[1], "split", sizes, MAX_SPLIT,
                                     err)) < 0)
            return cnt;
    } else if (opset < 13 && (cnt = ss__attr_ints(n, "split", &a)) >= 0) {
        if (cnt > MAX_SPLIT)
            return ss__ops_fail(err, n, "split has too many values");
        memcpy(sizes, a, (size_t)cnt * sizeof(*a));
    }
    if (cnt >= 0) {
        if (cnt != no)
            return ss__ops_fail(err, n, "split has %d values for %d outputs",
                                cnt, no);
        for (int i = 0; i < cnt; i++) {
            if (sizes[i] < 0 || sizes[i] > SS_OPS_MAX_NUMEL)
                return ss__ops_fail(err, n, "split[%d] = %lld is invalid", i,
                                    (long long)sizes[i]);
            sum += sizes[i];
        }
        if (sum != dim)
            return ss__ops_fail(err, n, "split sums to %lld, axis has %lld",
                                (long long)sum, (long long)dim);
        return 0;
    }
    {
        int64_t num = ss__attr_int(n, "num_outputs", no), chunk;

        if (num != no)
            return ss__ops_fail(err, n, "num_outputs %lld but %d outputs",
                                (long long)num, no);
        if (opset < 18 && dim % no != 0)
            return ss__ops_fail(err, n, "axis of %lld does not split evenly "
                                "into %d", (long long)dim, no);
        /* Opset 18: ceil-sized chunks, the last one smaller. */
        chunk = (dim + no - 1) / no;
        for (int i = 0; i < no; i++) {
            int64_t left = dim - (int64_t)i * chunk;

            sizes[i] = left < 0 ? 0 : left < chunk ? left : chunk;
        }
    }
    return 0;
}

static int
infer_split(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t sizes[MAX_SPLIT], dims[SS_MAX_DIMS];
    int a, rc;

    if ((rc = ss__ops_check_inputs(n, in, 1, err)) < 0 ||
        (rc = split_sizes(n, opset, in, &a, sizes, err)) < 0)
        return rc;
    memcpy(dims, in[0]->dims, sizeof(dims));
    for (int k = 0; k < n->n_outputs; k++) {
        dims[a] = sizes[k];
        if ((rc = ss__ops_set_out(n, &out[k], in[0]->dtype, in[0]->ndim,
                                  dims, err)) < 0)
            return rc;
    }
    return 0;
}

static int
run_split(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    size_t es = ss__ops_dtype_size(in[0]->dtype);
    int64_t outer, inner, irow, pos = 0;
    int a = 0, rc;

    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), in[0]->ndim,
                           false, &a, err)) < 0)
        return rc;
    outer = ss__ops_prod(in[0]->dims, 0, a);
    inner = ss__ops_prod(in[0]->dims, a + 1, in[0]->ndim) * (int64_t)es;
    irow = in[0]->dims[a] * inner;
    for (int k = 0; k < n->n_outputs; k++) {
        int64_t chunk = out[k].dims[a] * inner;

        if (ss__ops_want_output(n, out, k) && chunk > 0)
            for (int64_t o = 0; o < outer; o++)
                memcpy((char *)out[k].data + o * chunk,
                       (const char *)in[0]->data + o * irow + pos,
                       (size_t)chunk);
        pos += chunk;
    }
    return 0;
}

/* ---- Gather ------------------------------------------------------------------ */

static int
infer_gather(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
             ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[2 * SS_MAX_DIMS];
    const ss_tensor_t *x, *ix;
    int a, rc, r = 0;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    x = in[0];
    ix = in[1];
    if (ix->dtype != SS_DTYPE_I64 && ix->dtype != SS_DTYPE_I32)
        return ss__ops_fail(err, n, "indices must be int64 or int32, not %s",
                            ss__ops_dtype_name(ix->dtype));
    if (x->ndim == 0)
        return ss__ops_fail(err, n, "data must have rank >= 1");
    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), x->ndim, false,
                           &a, err)) < 0)
        return rc;
    if (ix->data != NULL) {
        int64_t cnt = ss__ops_numel(ix);

        for (int64_t i = 0; i < cnt; i++) {
            int64_t v = ss__ops_get_i64(ix->data, ix->dtype, i);

            if (v < -x->dims[a] || v >= x->dims[a])
                return ss__ops_fail(err, n, "index %lld is out of range for "
                                    "axis %d of size %lld", (long long)v, a,
                                    (long long)x->dims[a]);
        }
    }
    for (int d = 0; d < a; d++)
        dims[r++] = x->dims[d];
    for (int d = 0; d < ix->ndim; d++)
        dims[r++] = ix->dims[d];
    for (int d = a + 1; d < x->ndim; d++)
        dims[r++] = x->dims[d];
    return ss__ops_set_out(n, &out[0], x->dtype, r, dims, err);
}

static int
run_gather(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *ix = in[1];
    size_t es = ss__ops_dtype_size(x->dtype);
    int64_t outer, inner, cnt, dim;
    const char *xd = x->data;
    char *y = out[0].data;
    int a = 0, rc;

    if ((rc = ss__ops_axis(n, ss__attr_int(n, "axis", 0), x->ndim, false, &a,
                           err)) < 0)
        return rc;
    dim = x->dims[a];
    outer = ss__ops_prod(x->dims, 0, a);
    inner = ss__ops_prod(x->dims, a + 1, x->ndim) * (int64_t)es;
    cnt = ss__ops_numel(ix);
    for (int64_t i = 0; i < cnt; i++) {
        int64_t v = ss__ops_get_i64(ix->data, ix->dtype, i);

        if (v < -dim || v >= dim)
            return ss__ops_fail(err, n, "index %lld is out of range for axis "
                                "%d of size %lld", (long long)v, a,
                                (long long)dim);
    }
    if (inner == 0)
        return 0;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < cnt; i++) {
            int64_t v = ss__ops_get_i64(ix->data, ix->dtype, i);

            if (v < 0)
                v += dim;
            memcpy(y, xd + (o * dim + v) * inner, (size_t)inner);
            y += inner;
        }
    }
    return 0;
}

/* ---- Tile ------------------------------------------------------------------- */

static int
infer_tile(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
           ss_tensor_t *out, ss_err_t *err)
{
    int64_t reps[SS_MAX_DIMS], dims[SS_MAX_DIMS];
    int rc, cnt;

    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0)
        return rc;
    if ((cnt = ss__ops_read_ints(n, in[1], "repeats", reps, SS_MAX_DIMS,
                                 err)) < 0)
        return cnt;
    if (cnt != in[0]->ndim)
        return ss__ops_fail(err, n, "repeats has %d values, input has rank "
                            "%d", cnt, in[0]->ndim);
    for (int d = 0; d < cnt; d++) {
        if (reps[d] < 0 || reps[d] > SS_OPS_MAX_NUMEL)
            return ss__ops_fail(err, n, "repeats[%d] = %lld is invalid", d,
                                (long long)reps[d]);
        /* Two factors of up to 2^40 can wrap int64: check, and let
         * set_out refuse what passes the element limit. */
        if (__builtin_mul_overflow(in[0]->dims[d], reps[d], &dims[d]))
            return ss__ops_fail(err, n, "output is too large");
    }
    return ss__ops_set_out(n, &out[0], in[0]->dtype, cnt, dims, err);
}

static int
run_tile(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
         ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0];
    size_t es = ss__ops_dtype_size(x->dtype);
    int64_t ist[SS_MAX_DIMS], idx[SS_MAX_DIMS] = { 0 }, rows, inner, w;
    int r = x->ndim;
    char *y = out[0].data;

    if (ss__ops_numel(&out[0]) == 0)
        return 0;
    if (r == 0) {
        memcpy(y, x->data, es);
        return 0;
    }
    row_strides(x, ist);
    inner = out[0].dims[r - 1];
    w = x->dims[r - 1];
    rows = ss__ops_prod(out[0].dims, 0, r - 1);
    for (int64_t row = 0; row < rows; row++) {
        int64_t off = 0;

        for (int d = 0; d < r - 1; d++)
            off += (idx[d] % x->dims[d]) * ist[d];
        /* The input row repeated along the last axis. */
        for (int64_t c = 0; c < inner; c += w)
            memcpy(y + c * (int64_t)es,
                   (const char *)x->data + off * (int64_t)es,
                   (size_t)w * es);
        y += inner * (int64_t)es;
        for (int d = r - 2; d >= 0; d--) {
            if (++idx[d] < out[0].dims[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}

const ss_op_t ss__ops_tensor[] = {
    { "Tile", infer_tile, run_tile },
    { "Transpose", infer_transpose, run_transpose },
    { "Slice", infer_slice, run_slice },
    { "Concat", infer_concat, run_concat },
    { "Split", infer_split, run_split },
    { "Gather", infer_gather, run_gather },
    { NULL, NULL, NULL }
};
