/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layout rules: which layout a fusion anchor writes a 4-D or 5-D value
 * in, and when two layouts are the same bytes.  A 5-D value (a 3-D conv
 * net's [N, C, D, H, W]) follows the rules of a 4-D one, nCdhw16c and
 * ndhwc for nChw16c and NHWC; 3-D values ([N, C, W] of a 1-D conv, a
 * transformer's [B, T, C]) stay PLAIN.  The anchors of every pass ask
 * these as they create each primitive, in step order; the layout pass
 * (plan_layout.c, where the design is) then makes every read agree with
 * the write.  The rules:
 *
 *   - a conv runs in its family's layout: BLOCKED when its input and
 *     output channels are both multiples of 16, NHWC otherwise; a first
 *     layer (C < 16) reads NCHW straight into a blocked output, which
 *     oneDNN's kernels do well;
 *   - a conv whose output is smaller than its input (stride 2) keeps
 *     its source's layout when its readers want another: the output is
 *     reordered instead of the input (ss__lay_conv_keep);
 *   - pooling and binary ops keep their source's layout; a ReduceMean
 *     or ReduceMax over H and W is a global pool;
 *   - a reference Transpose (0,2,3,1) wants its source NHWC: those bytes
 *     are its output's, and ss__fuse_transpose (plan_fuse_ops.c) then
 *     drops the copy (ConvNeXt's permutes around LayerNorm);
 *   - an op writes its output in the layout ss__lay_dst() picks from the
 *     value's readers: PLAIN for a graph output or a value with views (a
 *     Flatten reads NCHW bytes), else what most readers want (a conv its
 *     family's layout, a pool the natural one, a oneDNN step what its
 *     primitive reads), PLAIN if none wants another.
 *
 * SS_ENGINE_NO_BLOCKED=1 keeps every value PLAIN (for comparisons).
 *
 * THREADS: runs inside ss_plan_new; no state.
 */

#include <stdlib.h>
#include <string.h>

#include "engine/plan/internal.h"

static int
blocked_off(void)
{
    const char *s = getenv("SS_ENGINE_NO_BLOCKED");

    return s != NULL && s[0] != '\0' && strcmp(s, "0") != 0;
}

ss_dnn_layout_t
ss__lay_of(const ss_plan_t *p, int v)
{
    return p->vals[ss__plan_root(p, v)].layout;
}

int
ss__lay_rank(const ss_tensor_t *t)
{
    return t->ndim == 4 || t->ndim == 5;
}

/* One name per arrangement of bytes: H * W (D * H * W) == 1 makes all
 * three layouts NCHW, C == 1 makes NHWC NCHW, and C == 16 makes nChw16c
 * NHWC. */
static ss_dnn_layout_t
canon(ss_dnn_layout_t l, const ss_tensor_t *t)
{
    int64_t sp = 1;

    for (int i = 2; i < t->ndim; i++)
        sp *= t->dims[i];
    if (!ss__lay_rank(t) || l == SS_DNN_PLAIN || sp == 1)
        return SS_DNN_PLAIN;
    if (l == SS_DNN_NHWC && t->dims[1] == 1)
        return SS_DNN_PLAIN;
    if (l == SS_DNN_BLOCKED && t->dims[1] == 16)
        return SS_DNN_NHWC;
    return l;
}

int
ss__lay_same(ss_dnn_layout_t a, ss_dnn_layout_t b, const ss_tensor_t *t)
{
    return a == b || canon(a, t) == canon(b, t);
}

ss_dnn_layout_t
ss__lay_natural(const ss_tensor_t *t)
{
    return ss__lay_rank(t) && ss_dnn_blocked_ok(t->ndim, t->dims)
           ? SS_DNN_BLOCKED : SS_DNN_NHWC;
}

ss_dnn_layout_t
ss__lay_conv_family(const ss_tensor_t *x, const ss_tensor_t *y)
{
    return ss_dnn_blocked_ok(x->ndim, x->dims)
           && ss_dnn_blocked_ok(y->ndim, y->dims) ? SS_DNN_BLOCKED
                                                  : SS_DNN_NHWC;
}

#define ANY (-1)

int
ss__plan_reduce_hw(const ss_plan_t *p, const ss_step_t *st)
{
    int mean = ss__plan_is_op(st, "ReduceMean");
    const int64_t *av;
    int64_t a[2];

    if (!(mean || ss__plan_is_op(st, "ReduceMax")) || st->n_in < 1
        || st->in[0] < 0 || st->n_out != 1 || st->out[0] < 0
        || ss__plan_tensor(p, st->in[0])->ndim != 4)
        return 0;
    if (st->n_in > 1 && st->in[1] >= 0) {   /* opset 18: an input */
        if (!ss__fz_const_of(p, st->in[1], SS_DTYPE_I64)
            || ss_tensor_numel(ss__plan_tensor(p, st->in[1])) != 2)
            return 0;
        av = ss__plan_tensor(p, st->in[1])->data;
    } else if (ss__attr_ints(st->node, "axes", &av) != 2) {
        return 0;
    }
    for (int i = 0; i < 2; i++)
        a[i] = av[i] < 0 ? av[i] + 4 : av[i];
    if (!((a[0] == 2 && a[1] == 3) || (a[0] == 3 && a[1] == 2)))
        return 0;
    return mean ? SS_DNN_POOL_AVG_EXCLUDE : SS_DNN_POOL_MAX;
}

/* The layout reader st would like v in: a conv its family's, a pool the
 * natural one, a same-shape binary op ANY (it follows its first operand),
 * a oneDNN step what its primitive reads, anything else PLAIN. */
static int
wants(const ss_plan_t *p, const ss_step_t *st, int k, int v)
{
    const ss_tensor_t *t = &p->vals[v].t;
    const char *op;

    if (st->kind == SS_STEP_DNN)
        return ss_dnn_prim_layout(st->prim, k);
    if (st->kind != SS_STEP_REF)
        return SS_DNN_PLAIN;
    /* NHWC bytes are its output's: ss__fuse_transpose drops the copy */
    if (ss__lay_transpose_reader(p, st, v))
        return SS_DNN_NHWC;
    op = st->node->op_type;
    /* a channel Concat on oneDNN reads any layout (plan_fuse_cat.c) */
    if (ss__lay_concat(p, st))
        return ANY;
    /* a mean or max over H, W: a global pool (ss__fuse_pool) */
    if (k == 0 && t->dtype == SS_DTYPE_F32 && ss__plan_reduce_hw(p, st))
        return ss__lay_natural(t);
    if (strcmp(op, "Conv") == 0 || strcmp(op, "ConvTranspose") == 0
        || strcmp(op, "MaxPool") == 0
        || strcmp(op, "AveragePool") == 0
        || strcmp(op, "GlobalAveragePool") == 0) {
        const ss_tensor_t *y;

        if (k != 0 || st->n_out < 1 || st->out[0] < 0)
            return SS_DNN_PLAIN;
        y = &p->vals[st->out[0]].t;
        if (!ss__lay_rank(y) || y->ndim != t->ndim
            || y->dtype != SS_DTYPE_F32)
            return SS_DNN_PLAIN;
        return op[0] == 'C' ? ss__lay_conv_family(t, y) : ss__lay_natural(t);
    }
    if ((strcmp(op, "Add") == 0 || strcmp(op, "Sub") == 0
         || strcmp(op, "Mul") == 0 || strcmp(op, "Div") == 0)
        && st->n_in == 2 && st->n_out >= 1 && st->out[0] >= 0) {
        const ss_tensor_t *y = &p->vals[st->out[0]].t;

        if (y->ndim == t->ndim
            && memcmp(y->dims, t->dims, (size_t)t->ndim * sizeof(int64_t))
               == 0)
            return ANY;
    }
    return SS_DNN_PLAIN;
}

ss_dnn_layout_t
ss__lay_dst(const ss__fz_t *fz, int v)
{
    const ss_plan_t *p = fz->p;
    const ss_tensor_t *t;
    int n[3] = { 0, 0, 0 }, any = 0;

    if (v < 0 || blocked_off())
        return SS_DNN_PLAIN;
    t = &p->vals[v].t;
    if (t->dtype != SS_DTYPE_F32 || !ss__lay_rank(t) || p->vals[v].alias >= 0)
        return SS_DNN_PLAIN;
    if (canon(ss__lay_natural(t), t) == SS_DNN_PLAIN)
        return ss__lay_natural(t);      /* the same bytes as NCHW */
    if (fz->is_out[v] || ss__plan_has_views(p, v))
        return SS_DNN_PLAIN;
    /* the current steps, not fz's reader index: steps fused since it was
     * built moved (a chain lands on its last step's slot) */
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        for (int k = 0; k < st->n_in; k++) {
            int w;

            if (st->in[k] != v)
                continue;
            if ((w = wants(p, st, k, v)) == ANY)
                any++;
            else
                n[w]++;
        }
    }
    /* a reader that wants NCHW gets a reorder: cheaper than slowing the
     * producer and every conv reader down */
    if (n[SS_DNN_BLOCKED] + n[SS_DNN_NHWC] == 0)
        return any > 0 && n[SS_DNN_PLAIN] == 0 ? ss__lay_natural(t)
                                              : SS_DNN_PLAIN;
    if (n[SS_DNN_BLOCKED] >= n[SS_DNN_NHWC]
        && ss_dnn_blocked_ok(t->ndim, t->dims))
        return SS_DNN_BLOCKED;
    return SS_DNN_NHWC;
}

ss_dnn_layout_t
ss__lay_follow(const ss__fz_t *fz, int src, int dst)
{
    const ss_plan_t *p = fz->p;
    ss_dnn_layout_t l = ss__lay_of(p, src);
    ss_dnn_layout_t want = ss__lay_dst(fz, dst);
    const ss_tensor_t *x = &p->vals[src].t, *y = &p->vals[dst].t;

    if (!ss__lay_rank(x) || x->ndim != y->ndim)
        return SS_DNN_PLAIN;
    if (ss__lay_same(ss__lay_natural(x), SS_DNN_PLAIN, x))
        l = want;   /* src's bytes read as any layout (H*W == 1) */
    /* a plain src stays plain: reordering the (smaller) output for its
     * readers is cheaper than the input */
    if (l == SS_DNN_PLAIN
        || (l == SS_DNN_BLOCKED && !ss_dnn_blocked_ok(y->ndim, y->dims))
        || (want == SS_DNN_PLAIN && !ss__lay_same(l, SS_DNN_PLAIN, y)))
        return SS_DNN_PLAIN;
    return l;
}

ss_dnn_layout_t
ss__lay_conv_keep(const ss_plan_t *p, int src, const ss_tensor_t *y,
                  ss_dnn_layout_t want_dst)
{
    const ss_tensor_t *x = &p->vals[src].t;
    ss_dnn_layout_t have = ss__lay_of(p, src);

    if (have == SS_DNN_PLAIN || want_dst == SS_DNN_PLAIN
        || ss__lay_same(have, want_dst, y)
        || ss_tensor_numel(y) >= ss_tensor_numel(x))
        return SS_DNN_PLAIN;
    if (have == SS_DNN_BLOCKED && ss__lay_conv_family(x, y) != SS_DNN_BLOCKED)
        return SS_DNN_PLAIN;
    return have;
}
