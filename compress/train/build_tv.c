/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The training graph builder's values and steps: adding values (arena,
 * views, bf16 copies), steps, the node-to-value maps, gradients' targets,
 * layouts and their copies.  The transform itself: build.c.
 *
 * THREADS: [worker]; a trainer belongs to one thread.
 */

#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/dnnl/dnnl_q.h"

/* ---- values and steps --------------------------------------------------- */

static int
grow_tv(ss__tb_t *b, ss_err_t *err)
{
    ss__tr_t *t = b->t;

    if (t->n_tv == t->cap_tv) {
        int cap = t->cap_tv ? 2 * t->cap_tv : 256;
        ss__tv_t *tv = ss_realloc(t->tv, (size_t)cap * sizeof(*tv));
        int *gr;
        uint8_t *rg;

        if (tv == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for values");
        t->tv = tv;
        t->cap_tv = cap;
        if ((gr = ss_realloc(b->grad, (size_t)cap * sizeof(*gr))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for values");
        b->grad = gr;
        if ((rg = ss_realloc(b->rg, (size_t)cap)) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for values");
        b->rg = rg;
        if ((gr = ss_realloc(b->bf, (size_t)cap * sizeof(*gr))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for values");
        b->bf = gr;
        if ((gr = ss_realloc(b->lc_of, (size_t)cap * sizeof(*gr))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for values");
        b->lc_of = gr;
        {
            int (*lc)[3] = ss_realloc(b->lc, (size_t)cap * sizeof(*lc));

            if (lc == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for values");
            b->lc = lc;
            if ((lc = ss_realloc(b->fc, (size_t)cap * sizeof(*lc))) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for values");
            b->fc = lc;
        }
        b->cap = cap;
    }
    return 0;
}

int
ss__tv_add(ss__tb_t *b, ss__tv_kind_t kind, ss_dtype_t dt, int ndim,
           const int64_t *dims, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    ss__tv_t *v;
    int64_t n = 1, d[SS_MAX_DIMS];
    size_t es = ss_dtype_size(dt);
    int rc, i;

    if (ndim < 0 || ndim > SS_MAX_DIMS || es == 0)
        return ss_err_set(err, SS_EUNSUPP, "trainer: a value of rank %d, "
                          "dtype %d", ndim, (int)dt);
    /* dims may point into t->tv, which growing moves */
    if (ndim > 0)
        memcpy(d, dims, (size_t)ndim * sizeof(*dims));
    dims = d;
    if ((rc = grow_tv(b, err)) < 0)
        return rc;
    for (i = 0; i < ndim; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && n > ((int64_t)1 << 40) / dims[i]))
            return ss_err_set(err, SS_ETOOBIG, "trainer: a value too big");
        n *= dims[i];
    }
    v = &t->tv[t->n_tv];
    memset(v, 0, sizeof(*v));
    v->kind = kind;
    v->dtype = dt;
    v->ndim = ndim;
    if (ndim > 0)
        memcpy(v->dims, dims, (size_t)ndim * sizeof(*dims));
    v->numel = n;
    v->bytes = (size_t)n * es;
    v->alias = -1;
    v->graph_id = -1;
    v->first = -1;
    v->last = -1;
    b->grad[t->n_tv] = -1;
    b->rg[t->n_tv] = 0;
    b->bf[t->n_tv] = -1;
    b->lc_of[t->n_tv] = -1;
    for (i = 0; i < 3; i++)
        b->lc[t->n_tv][i] = b->fc[t->n_tv][i] = -1;
    return t->n_tv++;
}

int
ss__tv_new(ss__tb_t *b, ss_dtype_t dt, int ndim, const int64_t *dims,
           ss_err_t *err)
{
    return ss__tv_add(b, SS__TV_ARENA, dt ? dt : SS_DTYPE_F32, ndim, dims,
                      err);
}

int
ss__tv_root(const ss__tr_t *t, int v)
{
    while (t->tv[v].kind == SS__TV_VIEW)
        v = t->tv[v].alias;
    return v;
}

int
ss__tv_view(ss__tb_t *b, int of, int ndim, const int64_t *dims,
            ss_err_t *err)
{
    int v = ss__tv_add(b, SS__TV_VIEW, b->t->tv[of].dtype, ndim, dims, err);

    if (v < 0)
        return v;
    if (b->t->tv[v].numel != b->t->tv[of].numel)
        return ss_err_set(err, SS_EINTERNAL, "trainer: a view of %lld "
                          "elements on %lld", (long long)b->t->tv[v].numel,
                          (long long)b->t->tv[of].numel);
    b->t->tv[v].alias = of;
    return v;
}

int
ss__step_add(ss__tb_t *b, ss__step_t *s, ss_err_t *err)
{
    ss__tr_t *t = b->t;

    if (t->n_steps == t->cap_steps) {
        int cap = t->cap_steps ? 2 * t->cap_steps : 128;
        ss__step_t *st = ss_realloc(t->steps, (size_t)cap * sizeof(*st));

        if (st == NULL) {
            ss_free(s->aux);
            ss_dnn_prim_free(s->prim);
            return ss_err_set(err, SS_ENOMEM, "no memory for steps");
        }
        t->steps = st;
        t->cap_steps = cap;
    }
    for (int i = s->n_in; i < SS__STEP_IN; i++)
        s->in[i] = -1;
    for (int i = s->n_out; i < SS__STEP_OUT; i++)
        s->out[i] = -1;
    s->phase = b->phase;
    t->steps[t->n_steps] = *s;
    return t->n_steps++;
}

int
ss__tb_node_index(const ss__tb_t *b, const ss_node_t *n)
{
    for (int i = 0; i < b->t->n_fused; i++)
        if (n == &b->t->fused[i].n)
            return b->t->fused[i].idx;
    return (int)(n - b->g->nodes);
}

int
ss__tb_in(const ss__tb_t *b, const ss_node_t *n, int i)
{
    int v;

    if (i >= n->n_inputs || n->inputs[i] < 0)
        return -1;
    v = b->vmap[n->inputs[i]];
    if (v >= 0 && b->t->tv[v].act16 && b->nf32[ss__tb_node_index(b, n)]) {
        /* the f32 copy forward_node or the rule made */
        int c = b->fc[v][b->plain_only ? SS_DNN_PLAIN : b->t->tv[v].lay];

        return c >= 0 ? c : b->fc[v][SS_DNN_PLAIN];
    }
    if (b->plain_only && v >= 0 && b->lc[v][SS_DNN_PLAIN] >= 0)
        return b->lc[v][SS_DNN_PLAIN];
    return v;
}

int
ss__tb_out(const ss__tb_t *b, const ss_node_t *n, int i)
{
    if (i >= n->n_outputs || n->outputs[i] < 0)
        return -1;
    return b->vmap[n->outputs[i]];
}

bool
ss__tb_needs(const ss__tb_t *b, int v)
{
    return v >= 0 && b->rg[v];
}

int
ss__tb_grad(ss__tb_t *b, int v, int *acc, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int gv;

    *acc = 0;
    if (b->grad[v] >= 0) {
        *acc = 1;
        return b->grad[v];
    }
    if (t->tv[v].kind == SS__TV_PARAM) {
        for (int i = 0; i < t->n_params; i++)
            if (t->params[i].tv == v) {
                b->grad[v] = t->params[i].grad;
                return b->grad[v];
            }
        return ss_err_set(err, SS_EINTERNAL, "trainer: a parameter "
                          "without a gradient slot");
    }
    /* a bf16 activation's gradient is bf16 (act16.c) */
    if ((gv = ss__tv_new(b, t->tv[v].act16 ? SS_DTYPE_BF16 : SS_DTYPE_F32,
                         t->tv[v].ndim, t->tv[v].dims, err)) < 0)
        return gv;
    t->tv[gv].lay = t->tv[v].lay;
    t->tv[gv].act16 = t->tv[v].act16;
    b->grad[v] = gv;
    return gv;
}

int
ss__tb_grad_have(const ss__tb_t *b, int v)
{
    return v >= 0 ? b->grad[v] : -1;
}

/* The bf16 copy of constant v (root r), rounded now. */
static int
const_bf16(ss__tb_t *b, int v, int r, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    ss_tensor_t *o = NULL;
    int c, rc;

    if ((rc = ss__tensor_new(SS_DTYPE_BF16, t->tv[v].ndim, t->tv[v].dims,
                             &o, err)) < 0)
        return rc;
    ss__bf16_round_n(t->tv[r].cdata->data, o->data, t->tv[v].numel);
    if ((c = ss__tv_add(b, SS__TV_CONST, SS_DTYPE_BF16, t->tv[v].ndim,
                        t->tv[v].dims, err)) < 0) {
        ss__tensor_free(o);
        return c;
    }
    t->tv[c].owned = o;
    t->tv[c].cdata = o;
    b->bf[v] = c;
    return c;
}

int
ss__tb_bf16(ss__tb_t *b, int v, ss_err_t *err)
{
    ss_dnn_convert_desc_t d;
    ss__step_t s;
    int c, r, rc;

    if (b->bf[v] >= 0)
        return b->bf[v];
    if (b->t->tv[v].act16)      /* a bf16 activation or its gradient */
        return v;
    if (b->t->tv[v].dtype != SS_DTYPE_F32)
        return ss_err_set(err, SS_EINTERNAL, "trainer: a bf16 copy of a "
                          "value of dtype %d", (int)b->t->tv[v].dtype);
    r = ss__tv_root(b->t, v);
    if (b->t->tv[r].kind == SS__TV_PARAM) {
        /* the update rounds it, in the same pass as the weight */
        if ((c = ss__tv_add(b, SS__TV_WBF16, SS_DTYPE_BF16, b->t->tv[v].ndim,
                            b->t->tv[v].dims, err)) < 0)
            return c;
        b->t->tv[c].offset = b->t->tv[r].offset;
        b->bf[v] = c;
        return c;
    }
    if (b->t->tv[r].kind == SS__TV_CONST)   /* a frozen weight: once */
        return const_bf16(b, v, r, err);
    if ((c = ss__tv_new(b, SS_DTYPE_BF16, b->t->tv[v].ndim,
                        b->t->tv[v].dims, err)) < 0)
        return c;
    b->t->tv[c].lay = b->t->tv[v].lay;     /* a conversion keeps it */
    memset(&d, 0, sizeof(d));
    d.src_dtype = SS_DTYPE_F32;
    d.dst_dtype = SS_DTYPE_BF16;
    d.ndim = 1;
    d.dims[0] = b->t->tv[v].numel;
    memset(&s, 0, sizeof(s));
    s.fn = ss__k_dnn;
    s.what = "to bf16";
    if ((rc = ss_dnn_convert_new(&d, &s.prim, err)) < 0)
        return rc;
    s.n_in = 1;
    s.in[0] = v;
    s.n_out = 1;
    s.out[0] = c;
    if ((rc = ss__step_add(b, &s, err)) < 0)
        return rc;
    b->bf[v] = c;
    return c;
}

/* ---- layouts ----------------------------------------------------------- */

int64_t
ss__tv_lanes(const ss__tv_t *v)
{
    if (v->ndim != 4 || v->lay == SS_DNN_PLAIN)
        return 1;
    return v->lay == SS_DNN_BLOCKED ? 16 : v->dims[1];
}

bool
ss__tv_lay_same(const ss__tv_t *v, int l1, int l2)
{
    if (l1 == l2 || v->ndim != 4 || v->dims[2] * v->dims[3] == 1)
        return true;
    /* NHWC with one channel is NCHW; nChw16c is neither unless H*W = 1 */
    return l1 != SS_DNN_BLOCKED && l2 != SS_DNN_BLOCKED && v->dims[1] == 1;
}

int
ss__tb_relayout(ss__tb_t *b, int src, int dst, int acc, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    ss_dnn_reorder_desc_t d;
    ss__step_t s;
    int tmp = dst, rc;

    if (acc) {
        if ((tmp = ss__tv_new(b, t->tv[dst].dtype, t->tv[dst].ndim,
                              t->tv[dst].dims, err)) < 0)
            return tmp;
        t->tv[tmp].lay = t->tv[dst].lay;
    }
    memset(&d, 0, sizeof(d));
    d.dtype = t->tv[src].dtype;
    d.dst_dtype = t->tv[dst].dtype;
    d.ndim = t->tv[src].ndim;
    memcpy(d.dims, t->tv[src].dims, (size_t)d.ndim * sizeof(d.dims[0]));
    d.src_layout = t->tv[src].lay;
    d.dst_layout = t->tv[dst].lay;
    memset(&s, 0, sizeof(s));
    s.fn = ss__k_dnn;
    s.what = d.dtype == d.dst_dtype ? "relayout"
           : d.dst_dtype == SS_DTYPE_F32 ? "bf16 -> f32" : "f32 -> bf16";
    if ((rc = ss_dnn_reorder_new(&d, &s.prim, err)) < 0)
        return rc;
    s.n_in = 1;
    s.in[0] = src;
    s.n_out = 1;
    s.out[0] = tmp;
    if ((rc = ss__step_add(b, &s, err)) < 0 || !acc)
        return rc;
    memset(&s, 0, sizeof(s));
    s.fn = t->tv[dst].act16 ? ss__k_copy16 : ss__k_copy;
    s.what = "relayout +";
    s.n_in = 1;
    s.in[0] = tmp;
    s.n_out = 1;
    s.out[0] = dst;
    s.acc = 1;
    return ss__step_add(b, &s, err);
}

int
ss__tb_lay(ss__tb_t *b, int v, ss_dnn_layout_t l, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int c;

    if (v < 0)
        return v;
    if (b->lc_of[v] >= 0) {
        int o = b->lc_of[v];

        /* an f32 copy of a bf16 activation: its f32 copy in l */
        if (t->tv[o].act16 && !t->tv[v].act16)
            return ss__tb_f32(b, o, l, err);
        v = o;
    }
    if (ss__tv_lay_same(&t->tv[v], (int)t->tv[v].lay, (int)l))
        return v;
    if (b->lc[v][l] >= 0)
        return b->lc[v][l];
    if (t->tv[v].dtype != SS_DTYPE_F32 && !t->tv[v].act16)
        return ss_err_set(err, SS_EINTERNAL, "trainer: a layout copy of a "
                          "value of dtype %d", (int)t->tv[v].dtype);
    if ((c = ss__tb_copy_new(b, v, t->tv[v].dtype, l, err)) < 0)
        return c;
    b->lc[v][l] = c;
    return c;
}

int
ss__tb_copy_new(ss__tb_t *b, int v, ss_dtype_t dt, ss_dnn_layout_t l,
                ss_err_t *err)
{
    ss__tr_t *t = b->t;
    int c, rc;

    if ((c = ss__tv_new(b, dt, t->tv[v].ndim, t->tv[v].dims, err)) < 0)
        return c;
    t->tv[c].lay = l;
    t->tv[c].name = t->tv[v].name;
    t->tv[c].act16 = t->tv[v].act16 && dt == SS_DTYPE_BF16;
    if ((rc = ss__tb_relayout(b, v, c, 0, err)) < 0)
        return rc;
    b->lc_of[c] = v;
    b->rg[c] = b->rg[v];
    return c;
}

int
ss__tb_merge(ss__tb_t *b, int v, ss_err_t *err)
{
    if (v < 0)
        return 0;
    for (int k = 0; k < 6; k++) {
        int c = k < 3 ? b->lc[v][k] : b->fc[v][k - 3], gc, gv, acc, rc;

        if (c < 0 || (gc = b->grad[c]) < 0)
            continue;
        if ((gv = ss__tb_grad(b, v, &acc, err)) < 0)
            return gv;
        if ((rc = ss__tb_relayout(b, gc, gv, acc, err)) < 0)
            return rc;
        b->grad[c] = -1;        /* merged: nothing adds to it any more */
    }
    return 0;
}

int
ss__tb_save(ss__tb_t *b, int node, const int *vals, int n, ss_err_t *err)
{
    int *c = ss_malloc((size_t)(n > 0 ? n : 1) * sizeof(int));

    if (c == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for saved values");
    memcpy(c, vals, (size_t)n * sizeof(int));
    ss_free(b->saved[node]);
    b->saved[node] = c;
    b->n_saved[node] = n;
    return 0;
}

int
ss__tb_saved(const ss__tb_t *b, int node, int k)
{
    return k < b->n_saved[node] ? b->saved[node][k] : -1;
}
