/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GELU pattern matcher (see gelu_pat.h for what it finds).
 *
 * DESIGN: a walk forward from x along single-reader values, one
 * expected op at a time; the first reader of x that starts a pattern
 * wins.  Constants are compared against the exact values (double) with
 * the caller's relative tolerance; 0.5, 1 and 3 must be exact.
 *
 * THREADS: [any]; no state.
 */

#include <math.h>
#include <string.h>

#include "engine/ir/gelu_pat.h"

#define MAX_READERS 32

typedef struct walk {
    const ss_gelu_view_t *v;
    ss_gelu_match_t *m;
    int x;
    int xr[MAX_READERS];        /* x's readers */
    int n_xr;
} walk_t;

static int
out_of(const walk_t *w, int h)
{
    return w->v->out(w->v->ctx, h);
}

/* The one node that reads u, once; -1 otherwise. */
static int
single(const walk_t *w, int u)
{
    int r[1];

    return u >= 0 && w->v->readers(w->v->ctx, u, r, 1) == 1 ? r[0] : -1;
}

/* Node h is op with n inputs, none absent. */
static int
is_op(const walk_t *w, int h, const char *op, int n)
{
    const char *o = h >= 0 ? w->v->op(w->v->ctx, h) : NULL;

    if (o == NULL || strcmp(o, op) != 0 || w->v->n_in(w->v->ctx, h) != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (w->v->in(w->v->ctx, h, i) < 0)
            return 0;
    return 1;
}

/* Binary node h's operand that is not a (-1 when neither is a). */
static int
other(const walk_t *w, int h, int a)
{
    int i0 = w->v->in(w->v->ctx, h, 0), i1 = w->v->in(w->v->ctx, h, 1);

    return i0 == a ? i1 : i1 == a ? i0 : -1;
}

/* h is `a op c` for a constant scalar c equal to want (exact, or within
 * the view's tolerance); Div only with a as the dividend. */
static int
bin_const(const walk_t *w, int h, const char *op, int a, double want,
          int exact)
{
    float c;
    int o;

    if (!is_op(w, h, op, 2) || (o = other(w, h, a)) < 0 || o == a
        || (op[0] == 'D' && w->v->in(w->v->ctx, h, 0) != a)
        || !w->v->scalar(w->v->ctx, o, &c))
        return 0;
    return exact ? (double)c == want
                 : fabs((double)c - want) <= w->v->tol * fabs(want);
}

static void
add(walk_t *w, int h)
{
    w->m->nodes[w->m->n++] = h;
}

/* h halves a: a * 0.5, 0.5 * a or a / 2. */
static int
half(const walk_t *w, int h, int a)
{
    return bin_const(w, h, "Mul", a, 0.5, 1) ||
           bin_const(w, h, "Div", a, 2.0, 1);
}

/* From u = 1 + f(x): x * u * 0.5 with the half last, or (x * 0.5) * u. */
static int
tail(walk_t *w, int u)
{
    int m = single(w, u), o, h;

    if (!is_op(w, m, "Mul", 2) || (o = other(w, m, u)) < 0)
        return 0;
    if (o == w->x) {
        if (!half(w, h = single(w, out_of(w, m)), out_of(w, m)))
            return 0;
        add(w, m);
        add(w, h);
        w->m->last = h;
    } else {
        for (h = 0; h < w->n_xr; h++)
            if (half(w, w->xr[h], w->x) && out_of(w, w->xr[h]) == o &&
                single(w, o) == m)
                break;
        if (h == w->n_xr)
            return 0;
        add(w, w->xr[h]);
        add(w, m);
        w->m->last = m;
    }
    w->m->x_reads++;
    w->m->y = out_of(w, w->m->last);
    return 1;
}

/* pre's output -> op (Erf or Tanh) -> + 1: those two nodes. */
static int
fn_plus_one(walk_t *w, int pre, const char *op, int *f, int *a)
{
    *f = single(w, out_of(w, pre));
    if (!is_op(w, *f, op, 1))
        return 0;
    *a = single(w, out_of(w, *f));
    return bin_const(w, *a, "Add", out_of(w, *f), 1.0, 1);
}

/* s = x / sqrt 2 or x * (1/sqrt 2), then Erf, + 1, the tail. */
static int
from_erf(walk_t *w, int s)
{
    int e, a;

    if ((!bin_const(w, s, "Div", w->x, M_SQRT2, 0) &&
         !bin_const(w, s, "Mul", w->x, M_SQRT1_2, 0)) ||
        !fn_plus_one(w, s, "Erf", &e, &a))
        return 0;
    w->m->n = 0;
    w->m->x_reads = 1;
    add(w, s);
    add(w, e);
    add(w, a);
    w->m->kind = SS_GELU_ERF;
    return tail(w, out_of(w, a));
}

/* c0 = Pow(x, 3) or Mul(x, x) then Mul by x; * 0.044715, + x,
 * * sqrt(2/pi), Tanh, + 1, the tail. */
static int
from_tanh(walk_t *w, int c0)
{
    const double beta = 0.79788456080286535588; /* sqrt(2/pi) */
    int cu, c1 = -1, k, ad, be, th, a1, xr;

    if (bin_const(w, c0, "Pow", w->x, 3.0, 1)) {
        cu = out_of(w, c0);
        xr = 1;
    } else if (is_op(w, c0, "Mul", 2) && w->v->in(w->v->ctx, c0, 0) == w->x
               && w->v->in(w->v->ctx, c0, 1) == w->x) {
        c1 = single(w, out_of(w, c0));
        if (!is_op(w, c1, "Mul", 2) || other(w, c1, out_of(w, c0)) != w->x)
            return 0;
        cu = out_of(w, c1);
        xr = 3;
    } else {
        return 0;
    }
    k = single(w, cu);
    if (!bin_const(w, k, "Mul", cu, 0.044715, 0))
        return 0;
    ad = single(w, out_of(w, k));
    if (!is_op(w, ad, "Add", 2) || other(w, ad, out_of(w, k)) != w->x)
        return 0;
    be = single(w, out_of(w, ad));
    if (!bin_const(w, be, "Mul", out_of(w, ad), beta, 0) ||
        !fn_plus_one(w, be, "Tanh", &th, &a1))
        return 0;
    w->m->n = 0;
    w->m->x_reads = xr + 1;
    add(w, c0);
    if (c1 >= 0)
        add(w, c1);
    add(w, k);
    add(w, ad);
    add(w, be);
    add(w, th);
    add(w, a1);
    w->m->kind = SS_GELU_TANH;
    return tail(w, out_of(w, a1));
}

int
ss_gelu_csr_readers(const int *start, const int *list, int v, int *r,
                    int max)
{
    int n = start[v + 1] - start[v];

    for (int i = 0; i < n && i < max; i++)
        r[i] = list[start[v] + i];
    return n;
}

int
ss_gelu_match(const ss_gelu_view_t *v, int x, unsigned kinds,
              ss_gelu_match_t *m)
{
    walk_t w;

    memset(m, 0, sizeof(*m));
    w.v = v;
    w.m = m;
    w.x = x;
    w.n_xr = x >= 0 ? v->readers(v->ctx, x, w.xr, MAX_READERS) : -1;
    if (w.n_xr < 2 || w.n_xr > MAX_READERS)
        return 0;
    for (int i = 0; i < w.n_xr; i++) {
        if ((kinds & (1u << SS_GELU_ERF)) && from_erf(&w, w.xr[i]))
            return 1;
        if ((kinds & (1u << SS_GELU_TANH)) && from_tanh(&w, w.xr[i]))
            return 1;
    }
    memset(m, 0, sizeof(*m));
    return 0;
}
