/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The row-independence analysis' rules for shapes and layout (plan_indep.c
 * says what
 * they compute; the table is plan_indep_ops.c's): Shape and what PyTorch
 * exports between a Shape and the Reshape, Expand or ConstantOfShape
 * that reads it, followed element by element (shape vectors); Reshape,
 * Transpose, Squeeze, Concat, Slice, Gather and their kin on tensors
 * that carry rows.
 *
 * THREADS: [any].
 */

#include <string.h>

#include "engine/plan/plan_indep.h"

#define IN(k) SS_INDEP_IN(c, k)
#define OUT(k) SS_INDEP_OUT(c, k)

static const int64_t zeros[SS_INDEP_SV_MAX];

static int
is_compare(const char *op)
{
    return strcmp(op, "Equal") == 0 || strcmp(op, "Less") == 0
           || strcmp(op, "LessOrEqual") == 0 || strcmp(op, "Greater") == 0
           || strcmp(op, "GreaterOrEqual") == 0;
}

/* Broadcasting ops on shape vectors, element by element: a comparison
 * of the row count with a number <= 0 has the same answer for every
 * batch; Where with such a condition picks an element's tag; a multiple
 * of the row count times a positive number is one (B * heads). */
int
ss__indep_sv_bcast(ss__indep_t *c)
{
    const int64_t *t[3];
    int64_t n[3], val[3][SS_INDEP_SV_MAX], on;
    int64_t out[SS_INDEP_SV_MAX];
    int cmp = is_compare(c->n->op_type), wh = strcmp(c->n->op_type,
                                                     "Where") == 0;

    on = ss_tensor_numel(&c->p->vals[OUT(0)].t);
    if (c->n->n_inputs > 3 || on < 0 || on > SS_INDEP_SV_MAX)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    for (int k = 0; k < c->n->n_inputs; k++)
        if (ss__indep_sv(c, k, &t[k], &n[k]) < 0 || (n[k] != 1 && n[k] != on)
            || ss__indep_ints(c, IN(k), val[k], SS_INDEP_SV_MAX) != n[k])
            return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    for (int64_t i = 0; i < on; i++) {
        int64_t e[3];
        int64_t v[3];

        for (int k = 0; k < c->n->n_inputs; k++) {
            e[k] = t[k][n[k] == 1 ? 0 : i];
            v[k] = val[k][n[k] == 1 ? 0 : i];
        }
        out[i] = SS_IT_IND;
        if (wh)
            out[i] = e[0] != SS_IT_IND ? SS_IT_DEP : e[v[0] ? 1 : 2];
        else if (strcmp(c->n->op_type, "Mul") == 0
                 && ((e[0] > 0 && e[1] == SS_IT_IND && v[1] > 0)
                     || (e[1] > 0 && e[0] == SS_IT_IND && v[0] > 0)))
            out[i] = e[0] > 0 ? e[0] * v[1] : e[1] * v[0];
        else if (cmp && c->n->n_inputs == 2
                 && ((e[0] > 0 && e[1] == SS_IT_IND && v[1] <= 0)
                     || (e[1] > 0 && e[0] == SS_IT_IND
                         && v[0] <= 0)))
            out[i] = SS_IT_IND;
        else
            for (int k = 0; k < c->n->n_inputs; k++)
                if (e[k] != SS_IT_IND)
                    out[i] = SS_IT_DEP;
    }
    ss__indep_set_sv(c, 0, out, on);
    return 0;
}

/* ---- shapes and layout ------------------------------------------------- */

int
ss__indep_r_shape(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int64_t t[SS_INDEP_SV_MAX];
    int r = ss__indep_rank(c, IN(0)), s = 0, e = r;

    if (x->sv || x->axis < 0) {
        ss__indep_set_all(c, -1, NULL);
        return 0;
    }
    if (strcmp(c->n->op_type, "Size") == 0) {
        t[0] = SS_IT_DEP;
        ss__indep_set_sv(c, 0, t, 1);
        return 0;
    }
    if (SS_INDEP_OPSET(c) >= 15) {
        s = (int)ss__attr_int(c->n, "start", 0);
        e = (int)ss__attr_int(c->n, "end", r);
        s = s < 0 ? s + r : s;
        e = e < 0 ? e + r : e;
        s = s < 0 ? 0 : s > r ? r : s;
        e = e < s ? s : e > r ? r : e;
    }
    for (int i = s; i < e; i++)
        t[i - s] = i != x->axis ? SS_IT_IND
                   : x->outer * x->group;
    ss__indep_set_sv(c, 0, t, e - s);
    return 0;
}

int
ss__indep_r_transpose(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    const int64_t *perm;
    int r = ss__indep_rank(c, IN(0)), np;

    if (x->sv)
        return ss__indep_r_cast(c);
    np = ss__attr_ints(c->n, "perm", &perm);
    for (int k = 0; k < r; k++)
        if ((np == r ? perm[k] : r - 1 - k) == x->axis) {
            ss__indep_set_all(c, k, x);
            return 0;
        }
    return ss__indep_mix(c, "its perm is not known");
}

/* Reshape: the batch's entry of the shape is the row count, -1 or 0. */
int
ss__indep_r_reshape(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    const int64_t *t;
    int64_t n, v[SS_MAX_DIMS];
    int r = ss__indep_rank(c, OUT(0));
    char entry[SS_MAX_DIMS + 1];
    ss__rv_t o;

    if (x->sv || x->axis < 0)  /* a vector, or a constant sized by B */
        return x->sv && ss__indep_ind(c, 1)
               ? ss__indep_r_cast(c) : ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if (SS_INDEP_OPSET(c) < 5 || ss__indep_sv(c, 1, &t, &n) < 0 || n != r
        || ss__indep_ints(c, IN(1), v, SS_MAX_DIMS) != r)
        return ss__indep_mix(c, "its shape is not known");
    if (ss__indep_has(t, n, 1))
        return ss__indep_mix(c, "its shape is computed from the batch size");
    for (int i = 0; i < r; i++)
        entry[i] = t[i] > 0 ? 'B' : v[i] == -1 ? '*'
                   : v[i] == 0 && !ss__attr_int(c->n, "allowzero", 0) ? '0'
                   : 'k';
    if (ss__indep_reshape(c, 0, c->p->vals[OUT(0)].t.dims, r, entry, t,
                         &o) < 0)
        return ss__indep_mix(c, "it merges the batch axis with another or "
                            "splits it");
    ss__indep_set_all(c, o.axis, &o);
    return 0;
}

int
ss__indep_r_flatten(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0));
    int64_t f = ss__attr_int(c->n, "axis", 1);
    ss__rv_t o;

    f = f < 0 ? f + r : f;
    if (x->axis < 0)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if (ss__indep_reshape(c, 0, c->p->vals[OUT(0)].t.dims, 2,
                         x->axis < f ? "*k" : "k*", NULL, &o) < 0)
        return ss__indep_mix(c, "it merges the batch axis with another");
    ss__indep_set_all(c, o.axis, &o);
    return 0;
}

int
ss__indep_r_squeeze(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int64_t ax[SS_MAX_DIMS];
    int r = ss__indep_rank(c, IN(0)), n, a = x->axis;
    int un = strcmp(c->n->op_type, "Unsqueeze") == 0;

    if (x->sv || x->axis < 0)
        return x->sv && ss__indep_ind(c, 1)
               ? ss__indep_r_cast(c) : ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    if ((n = ss__indep_axes(c, "axes", 13, 1, ax)) < 0)
        return ss__indep_mix(c, "its axes are not known");
    if (un) {
        int ro = ss__indep_rank(c, OUT(0)), j = 0;

        for (int p = 0; p < ro; p++)
            if (!ss__indep_in_axes(ax, n, ro, p) && j++ == x->axis) {
                ss__indep_set_all(c, p, x);
                return 0;
            }
        return ss__indep_mix(c, "its axes are not known");
    }
    if (n == 0)
        for (int d = 0; d < r; d++)
            if (ss__indep_dim(c, IN(0), d) == 1)
                ax[n++] = d;
    if (ss__indep_in_axes(ax, n, r, x->axis))
        return ss__indep_mix(c, "it squeezes the batch axis");
    for (int i = 0; i < n; i++)
        a -= ss__indep_axis(ax[i], r) < x->axis;
    ss__indep_set_all(c, a, x);
    return 0;
}

int
ss__indep_r_concat(ss__indep_t *c)
{
    int r = ss__indep_rank(c, OUT(0)), ax, a = -1;
    const ss__rv_t *gx = NULL;
    int64_t n = 0, m;
    int64_t t[SS_INDEP_SV_MAX];
    const int64_t *ti;

    ax = ss__indep_axis(ss__attr_int(c->n, "axis", 0), r);
    for (int k = 0; k < c->n->n_inputs; k++) {
        const ss__rv_t *x = ss__indep_in(c, k);

        if (x != NULL && x->axis >= 0 && a >= 0
            && (x->axis != a || !ss__indep_same(x, gx)))
            return ss__indep_mix(c, "it pairs rows along different axes");
        if (x != NULL && x->axis >= 0) {
            a = x->axis;
            gx = x;
        }
    }
    if (a < 0) {    /* shape vectors end to end */
        for (int k = 0; k < c->n->n_inputs; k++) {
            if (ss__indep_sv(c, k, &ti, &m) < 0 || n + m > SS_INDEP_SV_MAX)
                return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
            memcpy(t + n, ti, (size_t)m * sizeof(*t));
            n += m;
        }
        ss__indep_set_sv(c, 0, t, n);
        return 0;
    }
    if (a == ax)
        return ss__indep_mix(c, "it concatenates along the batch axis");
    for (int k = 0; k < c->n->n_inputs; k++)
        if (ss__indep_in(c, k) != NULL && ss__indep_in(c, k)->axis < 0
            && ss_tensor_numel(&c->p->vals[IN(k)].t) > 0)
            return ss__indep_mix(c, "its input %d spans the batch axis "
                                "without depending on the batch", k);
    ss__indep_set_all(c, a, gx);
    return 0;
}

/* Slice: whole along the rows (start 0, step 1, end the row count or
 * past it); a shape vector's elements are sliced with it. */
int
ss__indep_r_slice(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int64_t p[4][SS_MAX_DIMS], n = 0, m;
    const int64_t *et = zeros;
    int r = ss__indep_rank(c, IN(0)), cnt[4] = { -1, -1, -1, -1 };
    static const char *const names[] = { "starts", "ends", "axes", "steps" };

    for (int k = 0; k < 4; k++) {
        if (SS_INDEP_OPSET(c) < 10) {
            const int64_t *a;

            if (k < 3 && (cnt[k] = ss__attr_ints(c->n, names[k], &a)) > 0
                && cnt[k] <= SS_MAX_DIMS)
                memcpy(p[k], a, (size_t)cnt[k] * sizeof(**p));
            continue;
        }
        if (ss__indep_in(c, k + 1) == NULL)
            continue;
        if ((k != 1 && !ss__indep_ind(c, k + 1))
            || (cnt[k] = ss__indep_ints(c, IN(k + 1), p[k],
                                       SS_MAX_DIMS)) < 0)
            return ss__indep_mix(c, "its %s are not known", names[k]);
        if (k == 1 && (ss__indep_sv(c, 2, &et, &m) < 0
                       || ss__indep_has(et, m, 1)))
            return ss__indep_mix(c, "its ends are computed from the batch "
                                "size");
    }
    if (cnt[0] < 0 || cnt[1] != cnt[0])
        return ss__indep_mix(c, "its starts and ends are not known");
    if (x->sv) {
        int64_t t[SS_INDEP_SV_MAX];
        int64_t s = p[0][0], e = p[1][0], st = cnt[3] > 0 ? p[3][0] : 1;

        if (cnt[0] != 1 || ss__indep_has(et, cnt[1], 0) || st != 1)
            return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
        s = s < 0 ? s + x->n : s;
        e = e < 0 ? e + x->n : e;
        s = s < 0 ? 0 : s > x->n ? x->n : s;
        e = e < s ? s : e > x->n ? x->n : e;
        for (int64_t i = s; i < e; i++)
            t[n++] = x->tag[i];
        ss__indep_set_sv(c, 0, t, n);
        return 0;
    }
    if (x->axis < 0)    /* a constant cut by the row count: table[:B] */
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    for (int j = 0; j < cnt[0]; j++) {
        int a = cnt[2] > 0 ? ss__indep_axis(p[2][j], r) : j;

        if (a != x->axis)
            continue;
        if (p[0][j] != 0 || (cnt[3] > 0 && p[3][j] != 1)
            || (et[j] > 0 ? et[j] != x->outer * x->group
                                     : p[1][j] < (int64_t)INT32_MAX))
            return ss__indep_mix(c, "it slices the batch axis");
    }
    ss__indep_set_all(c, x->axis, x);
    return 0;
}

int
ss__indep_r_gather(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0), *i = ss__indep_in(c, 1);
    int r = ss__indep_rank(c, IN(0)), ri = ss__indep_rank(c, IN(1));
    int ax = ss__indep_axis(ss__attr_int(c->n, "axis", 0), r);
    int64_t idx[SS_INDEP_SV_MAX], n;
    int64_t t[SS_INDEP_SV_MAX];

    if (x->sv) {
        if (!ss__indep_ind(c, 1)
            || (n = ss__indep_ints(c, IN(1), idx, SS_INDEP_SV_MAX)) < 0)
            return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
        for (int64_t j = 0; j < n; j++) {
            int e = ss__indep_axis(idx[j], x->n);

            if (e < 0)
                return ss__indep_mix(c, "its index is out of range");
            t[j] = x->tag[e];
        }
        ss__indep_set_sv(c, 0, t, n);
        return 0;
    }
    if (i->sv || (x->axis >= 0 && i->axis >= 0))
        return ss__indep_mix(c, "its indices depend on the batch");
    if (x->axis < 0) {          /* an embedding: rows of indices */
        ss__indep_set_all(c, ax + i->axis, i);
        return 0;
    }
    if (ax == x->axis)
        return ss__indep_mix(c, "it picks entries along the batch axis");
    ss__indep_set_all(c, ax < x->axis ? x->axis - 1 + ri : x->axis, x);
    return 0;
}

/* GatherElements, ScatterElements, Scatter: every tensor with the rows
 * on one axis, indexing another. */
int
ss__indep_r_elements(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0));

    for (int k = 0; k < c->n->n_inputs; k++) {
        const ss__rv_t *y = ss__indep_in(c, k);

        if (y == NULL || y->sv || y->axis != x->axis
            || !ss__indep_same(x, y) || x->axis < 0)
            return ss__indep_mix(c, "its input %d does not carry the rows "
                                "as its data does", k);
    }
    if (ss__indep_axis(ss__attr_int(c->n, "axis", 0), r) == x->axis)
        return ss__indep_mix(c, "it indexes along the batch axis");
    ss__indep_set_all(c, x->axis, x);
    return 0;
}

int
ss__indep_r_gathernd(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0), *i = ss__indep_in(c, 1);
    int ri = ss__indep_rank(c, IN(1));

    if (x->axis == 0 && i->axis == 0 && x->outer * x->group == 1
        && i->outer * i->group == 1
        && ss__attr_int(c->n, "batch_dims", 0) >= 1) {
        ss__indep_set_all(c, 0, NULL);
        return 0;
    }
    if (x->axis < 0 && !x->sv && !i->sv && i->axis >= 0
        && i->axis < ri - 1) {
        ss__indep_set_all(c, i->axis, i);
        return 0;
    }
    return ss__indep_mix(c, "its indices may address other rows");
}

/* ---- shapes from vectors ----------------------------------------------- */

/* Expand, Tile, ConstantOfShape, Resize, Upsample, Pad: the rows kept
 * whole along their axis, or made from the row count. */
int
ss__indep_r_expand(ss__indep_t *c)
{
    const char *op = c->n->op_type;
    const ss__rv_t *x = ss__indep_in(c, 0);
    int cos = strcmp(op, "ConstantOfShape") == 0;
    int tile = strcmp(op, "Tile") == 0, sk = cos ? 0 : 1;
    int r = ss__indep_rank(c, OUT(0)), rx = cos ? 0 : ss__indep_rank(c, IN(0));
    int64_t n, v[SS_MAX_DIMS], ob = -1;
    const int64_t *t;
    ss__rv_t made = { -1, 1, 1, -1, 0, 0, { 0 } };

    if ((!cos && x->sv) || ss__indep_sv(c, sk, &t, &n) < 0 || n > SS_MAX_DIMS
        || ss__indep_ints(c, IN(sk), v, SS_MAX_DIMS) != n
        || ss__indep_has(t, n, 1) || ss__indep_params(c, sk + 1) < 0)
        return ss__indep_mix(c, "its shape is not known or computed from "
                            "the batch size");
    for (int i = 0; i < n; i++)
        if (t[i] > 0) {
            if (ob >= 0)
                return ss__indep_mix(c, "the row count is in its shape "
                                    "twice");
            ob = i + r - n;
            made.group = t[i];  /* all alike: any split of the axis is */
        }
    if (cos || x->axis < 0) {
        int pos = (int)ob - (r - rx);

        if (ob < 0 || (!cos && pos >= 0 && ss__indep_dim(c, IN(0), pos) != 1))
            return ss__indep_mix(c, "its shape is not known");
        ss__indep_set_all(c, (int)ob, &made);
        return 0;
    }
    /* the rows' entry: the row count, or 1 (kept); Tile's repeats: 1 */
    int oa = x->axis + r - rx, p = tile ? x->axis : oa - (r - (int)n);

    if ((p >= 0 && ((tile && t[p] != SS_IT_IND)
                    || (t[p] > 0 ? t[p] != x->outer * x->group
                                 : v[p] != 1)))
        || (ob >= 0 && ob != oa))
        return ss__indep_mix(c, "it repeats along the batch axis");
    ss__indep_set_all(c, oa, x);
    return 0;
}

int
ss__indep_r_pad(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0)), n, na = r;
    int64_t pads[2 * SS_MAX_DIMS], ax[SS_MAX_DIMS];
    const int64_t *pa;

    if (ss__indep_r_unary(c) < 0)
        return -1;
    if (SS_INDEP_OPSET(c) < 11) {
        if ((n = ss__attr_ints(c->n, "pads", &pa)) != 2 * r)
            return ss__indep_mix(c, "its pads are not known");
        memcpy(pads, pa, (size_t)n * sizeof(*pads));
    } else if ((n = ss__indep_ints(c, IN(1), pads, 2 * SS_MAX_DIMS)) < 0)
        return ss__indep_mix(c, "its pads are not known");
    for (int i = 0; i < r; i++)
        ax[i] = i;
    if (ss__indep_in(c, 3) != NULL
        && (na = ss__indep_ints(c, IN(3), ax, SS_MAX_DIMS)) < 0)
        return ss__indep_mix(c, "its axes are not known");
    if (n != 2 * na)
        return ss__indep_mix(c, "its pads are not known");
    for (int i = 0; i < na; i++)
        if (ss__indep_axis(ax[i], r) == x->axis
            && (pads[i] != 0 || pads[i + na] != 0))
            return ss__indep_mix(c, "it pads the batch axis");
    return 0;
}

int
ss__indep_r_resize(ss__indep_t *c)
{
    const ss__rv_t *x = ss__indep_in(c, 0);
    int r = ss__indep_rank(c, IN(0)), up = c->n->op_type[0] == 'U';
    int si = up || SS_INDEP_OPSET(c) < 11 ? 1 : 2;

    if (x->sv || x->axis < 0)
        return ss__indep_mix(c, SS_INDEP_MIX_SIZE);
    for (int k = 1; k < c->n->n_inputs; k++) {
        const int64_t *t;
        int64_t n;

        if (ss__indep_in(c, k) == NULL || ss__indep_ind(c, k))
            continue;
        if (k != 3 || ss__indep_sv(c, k, &t, &n) < 0 || n != r
            || t[x->axis] != x->outer * x->group || ss__indep_has(t, n, 1))
            return ss__indep_mix(c, "its sizes depend on the batch");
    }
    for (int k = si; k <= 3 && k < c->n->n_inputs; k++) {
        const ss_pval_t *pv = IN(k) >= 0 ? &c->p->vals[IN(k)] : NULL;

        if (pv == NULL || ss_tensor_numel(&pv->t) == 0)
            continue;
        if (k == si && (pv->t.dtype != SS_DTYPE_F32 || pv->t.data == NULL
                        || ((const float *)pv->t.data)[x->axis] != 1.0f))
            return ss__indep_mix(c, "it scales the batch axis");
        if (k == 3 && ss__indep_ind(c, 3))
            return ss__indep_mix(c, "its sizes fix the batch axis");
    }
    if (SS_INDEP_OPSET(c) < 9 && up) {
        const float *s;

        if (ss__attr_floats(c->n, "scales", &s) != r || s[x->axis] != 1.0f)
            return ss__indep_mix(c, "it scales the batch axis");
    }
    ss__indep_set_all(c, x->axis, x);
    return 0;
}

