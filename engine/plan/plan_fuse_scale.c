/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ConvNeXt's block tail for the f32 Linear anchor (plan_fuse_ops.c):
 *
 *     h = x W + b            [N,H,W,C], the block's second Linear
 *     t = Transpose(h)       (0,3,1,2): back to [N,C,H,W]
 *     u = t * gamma          layer scale, a constant [C,1,1]
 *     z = u + r              the residual, [N,C,H,W]
 *
 * as torchvision exports CNBlock.  The per-channel scale is folded into
 * the weights and bias (W' = W diag(gamma), b' = b gamma: one rounding
 * apart, the products are the same), the Transpose is a relabelling (the
 * Linear's [N*H*W, C] rows are the NHWC bytes of t, as
 * ss__fuse_transpose would make them) and the residual becomes a binary
 * post-op reading r where r is already stored NHWC.  The four steps are
 * one GEMM: the separate Mul+Add pass over the block's output (1% of a
 * convnext_tiny run at batch 1) is gone.
 *
 * THREADS: inside ss_plan_new only.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

/* The constant layer scale of u = t * gamma: gamma's n values when it
 * is [n,1,1] or [1,n,1,1] against the 4-D t = [N,n,H,W]. */
static const float *
channel_scale(const ss_plan_t *p, const ss_step_t *mul, int t, int64_t n)
{
    int g = mul->in[0] == t ? mul->in[1] : mul->in[0];
    const ss_tensor_t *gt;
    int64_t lead;

    if (!ss__fz_const_of(p, g, SS_DTYPE_F32))
        return NULL;
    gt = ss__plan_tensor(p, g);
    if (gt->ndim < 3 || gt->ndim > 4 || ss_tensor_numel(gt) != n)
        return NULL;
    lead = gt->ndim == 4 ? gt->dims[0] : 1;
    if (lead != 1 || gt->dims[gt->ndim - 3] != n || gt->dims[gt->ndim - 2] != 1
        || gt->dims[gt->ndim - 1] != 1)
        return NULL;
    return gt->data;
}

/* Step s reads v and w once each, no other input: an Add (or Mul) of
 * two distinct values. */
static int
binary_of(const ss_plan_t *p, int s, const char *op, int v)
{
    const ss_step_t *st = &p->steps[s];

    return s >= 0 && ss__plan_is_op(st, op) && st->n_in == 2
           && st->n_out == 1 && st->in[0] != st->in[1]
           && (st->in[0] == v || st->in[1] == v);
}

static int
same_shape(const ss_tensor_t *a, const ss_tensor_t *b)
{
    return a->ndim == b->ndim && a->dtype == b->dtype
           && memcmp(a->dims, b->dims, (size_t)a->ndim * sizeof(int64_t))
              == 0;
}

/* The one step that reads u, and the value it reads in *via: u itself,
 * or (plain only) a view of u -- torchvision's out-projection writes
 * [T*B, C] rows that its residual Add reads as [B, T, C] through a
 * Reshape and, at batch 1, a Transpose moving a dim of 1: the same
 * bytes.  -1 when u has other readers or is a graph output. */
static int
single_reader(const ss__fz_t *fz, int u, ss_dnn_layout_t lay, int *via)
{
    const ss_plan_t *p = fz->p;
    int s;

    *via = u;
    if ((s = ss__fz_single(fz, u)) >= 0 || lay != SS_DNN_PLAIN
        || p->vals[u].alias >= 0 || fz->is_out[u]
        || fz->start[u + 1] - fz->start[u] != 1)
        return s;
    s = fz->list[fz->start[u]];
    for (int k = 0; k < p->steps[s].n_in; k++)
        if (p->steps[s].in[k] >= 0 && ss__plan_root(p, p->steps[s].in[k]) == u)
            *via = p->steps[s].in[k];
    return s;
}

/* The Add step reading u (the chain's output, or a view of it) and a
 * residual r of that shape stored in layout lay, which the GEMM can add
 * as a SUM post-op: the step, r in *r; -1 when not. */
static int
residual_add(ss__fz_t *fz, const ss__chain_t *c, int u, ss_dnn_layout_t lay,
             int *r)
{
    const ss_plan_t *p = fz->p;
    const ss_tensor_t *ut;
    int as, z;

    if ((as = single_reader(fz, u, lay, &u)) < 0
        || !binary_of(p, as, "Add", u))
        return -1;
    ut = ss__plan_tensor(p, u);
    *r = p->steps[as].in[0] == u ? p->steps[as].in[1] : p->steps[as].in[0];
    z = p->steps[as].out[0];
    if (p->vals[*r].alias >= 0 || ss__fz_is_const(p, *r)
        || !same_shape(ss__plan_tensor(p, *r), ut)
        || !ss__lay_same(p->vals[*r].layout, lay, ut)
        || z < 0 || !same_shape(ss__plan_tensor(p, z), ut)
        /* the layout pass reorders a value with views or a graph output
         * to NCHW after its producer (plain_out): r and z must stay */
        || (lay != SS_DNN_PLAIN && (fz->is_out[z] || ss__plan_has_views(p, z)
                                    || fz->is_out[*r]
                                    || ss__plan_has_views(p, *r))))
        return -1;
    for (int k = 0; k < c->n_steps; k++)
        if (fz->prod[*r] == c->steps[k])
            return -1;
    return as;
}

/* Joins Add step as (residual r) to c as a SUM post-op: brgemm adds a
 * binary post-op's tensor through its injector, 0.2 ms more per
 * 3136x384x96 GEMM than the 0.07 ms Mul+Add step it would replace; a
 * SUM is its own beta = 1 accumulation, and in place (plan_finish.c)
 * reads nothing more. */
static void
add_sum(const ss__fz_t *fz, ss__chain_t *c, int as, int r, const char *what)
{
    ss_dnn_postop_t *po = &c->post.op[c->post.n++];
    size_t l = strlen(c->what);

    memset(po, 0, sizeof(*po));
    po->kind = SS_DNN_PO_SUM;
    po->alpha = 1.0f;
    c->bin[c->n_bin++] = r;
    c->steps[c->n_steps++] = as;
    c->out = fz->p->steps[as].out[0];
    snprintf(c->what + l, sizeof(c->what) - l, "%s", what);
}

/* SS_ENGINE_NO_RESIDUAL_SUM=1: the Mul and Add steps as before (A/B). */
static int
no_fold(void)
{
    const char *e = getenv("SS_ENGINE_NO_RESIDUAL_SUM");

    return e != NULL && e[0] != '\0' && e[0] != '0';
}

int
ss__fz_layer_scale(ss__fz_t *fz, ss__chain_t *c, ss_dnn_linear_desc_t *d,
                   float **wown, float **bown, ss_err_t *err)
{
    ss_plan_t *p = fz->p;
    int ts, ms, as, t, u, r;
    const ss_tensor_t *h = ss__plan_tensor(p, c->out), *tt;
    const float *gamma;
    int64_t perm[4];

    *wown = *bown = NULL;
    if (no_fold() || p->taps || c->post.n > 0 || h->ndim != 4
        || h->dims[3] != d->n || (ts = ss__fz_single(fz, c->out)) < 0)
        return 0;
    if (!ss__plan_is_op(&p->steps[ts], "Transpose")
        || p->steps[ts].n_in != 1 || p->steps[ts].n_out != 1
        || !ss__fz_attr_n(p->steps[ts].node, "perm", -1, perm, 4)
        || perm[0] != 0 || perm[1] != 3 || perm[2] != 1 || perm[3] != 2)
        return 0;
    t = p->steps[ts].out[0];
    tt = ss__plan_tensor(p, t);
    if ((ms = ss__fz_single(fz, t)) < 0 || !binary_of(p, ms, "Mul", t)
        || (gamma = channel_scale(p, &p->steps[ms], t, d->n)) == NULL)
        return 0;
    u = p->steps[ms].out[0];
    if (u < 0 || !same_shape(ss__plan_tensor(p, u), tt))
        return 0;
    /* the residual: r read NHWC is r's [N*H*W, C] rows, like the dst */
    if ((as = residual_add(fz, c, u, SS_DNN_NHWC, &r)) < 0)
        return 0;
    if ((*wown = ss_malloc((size_t)(d->k * d->n) * sizeof(float))) == NULL
        || (*bown = ss_malloc((size_t)d->n * sizeof(float))) == NULL) {
        ss_free(*wown);
        *wown = NULL;
        return ss_err_set(err, SS_ENOMEM, "no memory to fold a layer scale");
    }
    for (int64_t i = 0; i < d->k * d->n; i++) {
        int64_t col = d->w_nk ? i / d->k : i % d->n;

        (*wown)[i] = d->w[i] * gamma[col];
    }
    for (int64_t j = 0; j < d->n; j++)
        (*bown)[j] = d->bias != NULL ? d->bias[j] * gamma[j] : 0.0f;
    d->w = *wown;
    d->bias = *bown;
    c->steps[c->n_steps++] = ts;
    c->steps[c->n_steps++] = ms;
    c->out = u;
    add_sum(fz, c, as, r, "+Scale+Add");
    return 1;
}

int
ss__fz_residual_sum(ss__fz_t *fz, ss__chain_t *c)
{
    int as, r;

    if (c->post.n > 0 || no_fold() || fz->p->taps
        || (as = residual_add(fz, c, c->out, SS_DNN_PLAIN, &r)) < 0)
        return 0;
    add_sum(fz, c, as, r, "+Add");
    return 1;
}
