/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The trainer's graph transform: a forward graph in, a training graph out
 * (forward steps, the loss, backward steps, a memory plan).
 *
 * DESIGN.  Backward is a graph transform, not a tape: the walk over the
 * model happens once per job, for one fixed batch shape, and a step then
 * only runs a fixed list of kernels on fixed pointers.
 *
 *  1. The nodes the loss output depends on are kept; the others (extra
 *     outputs) never run.
 *  2. Initializers are classified: a float one with >= 2 elements that a
 *     differentiable input of a kept node reads is a PARAMETER (unless
 *     frozen by name) and gets a slot in the flat parameter, gradient and
 *     optimizer-state arrays; BatchNorm's running mean and variance are
 *     STATE in batch mode; everything else is a CONSTANT.  A frozen
 *     parameter is just a constant, which is what "no weight gradient"
 *     means: nothing flows to it, nothing is stored for it.
 *  3. A forward walk in topological order infers every value's shape with
 *     the engine's own infer functions (so shapes agree with inference by
 *     construction), folds nodes whose inputs are all constant (the
 *     Shape -> Gather -> Concat chains of dynamic reshapes) with the
 *     engine's reference kernels, and emits one or more steps per node
 *     through the node's row of the rule table (rules.c): its forward
 *     emitter, or, for an op without a row that no gradient flows
 *     through, the engine's reference kernel.  A value "requires a
 *     gradient" when a parameter reaches it through differentiable
 *     inputs; an op without a row that such a value enters is refused
 *     here, by op and node name.  Forward emitters save what their
 *     backward needs (LayerNorm's mean and 1/std, MaxPool's argmax)
 *     as extra values.
 *  4. The loss step reads the loss output and writes the loss and the
 *     output's gradient.
 *  5. A backward walk in reverse topological order calls each node's
 *     gradient rule when some output has a gradient.  Gradients of a
 *     value used several times accumulate: ss__tb_grad() tells a rule
 *     whether its step is the first contribution (it writes) or a later
 *     one (it adds), which kernels and oneDNN (a SUM post-op) do in place,
 *     so no gradient is ever summed in a separate pass.  A reshape's
 *     input gradient is a view of its output gradient when nothing else
 *     wrote it yet.
 *  6. Memory: every ARENA value has a lifetime [first write, last read]
 *     over the step list (forward values the backward reads live until
 *     then); values get offsets in one arena by first fit, so a step
 *     allocates nothing, and activations whose last reader has run are
 *     reused by later gradients.
 *
 * Why a training graph of its own and not ss_plan_t: the inference plan
 * folds every initializer into constants and pre-packs weights once,
 * drops values as soon as the forward no longer needs them, and its
 * steps have no notion of accumulation; the trainer needs parameters that
 * change every step, forward values kept for the backward, and
 * gradient sums.  It reuses what does carry over: the IR, the engine's
 * infer functions and reference kernels (forward of ops without a rule,
 * constant folding), and the oneDNN glue (matmuls forward and backward;
 * convolution forward, backward-data and backward-weights).  Gradient
 * kernels live here, in compress/train, not in engine/ops: they have no
 * ONNX op to be looked up by, the inference registry has no use for
 * them, and they are tested
 * against finite differences through this builder, one rule at a time.
 *
 * THREADS: [worker]; a trainer belongs to one thread.
 */

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pace.h"
#include "compress/train/internal.h"
#include "engine/dnnl/dnnl_q.h"

#define ALIGN 64

static const char *
label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

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

static int
tv_add(ss__tb_t *b, ss__tv_kind_t kind, ss_dtype_t dt, int ndim,
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
    return tv_add(b, SS__TV_ARENA, dt ? dt : SS_DTYPE_F32, ndim, dims, err);
}

static int
root(const ss__tr_t *t, int v)
{
    while (t->tv[v].kind == SS__TV_VIEW)
        v = t->tv[v].alias;
    return v;
}

int
ss__tv_view(ss__tb_t *b, int of, int ndim, const int64_t *dims,
            ss_err_t *err)
{
    int v = tv_add(b, SS__TV_VIEW, b->t->tv[of].dtype, ndim, dims, err);

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
    if ((c = tv_add(b, SS__TV_CONST, SS_DTYPE_BF16, t->tv[v].ndim,
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
    r = root(b->t, v);
    if (b->t->tv[r].kind == SS__TV_PARAM) {
        /* the update rounds it, in the same pass as the weight */
        if ((c = tv_add(b, SS__TV_WBF16, SS_DTYPE_BF16, b->t->tv[v].ndim,
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

/* ---- step 1 and 2: what runs, what trains ------------------------------- */

static int
mark_needed(const ss_graph_t *g, int out_value, uint8_t *need,
            ss_err_t *err)
{
    uint8_t *vneed = ss_calloc((size_t)g->n_values, 1);
    int i, k;

    if (vneed == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory");
    vneed[out_value] = 1;
    for (i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = &g->nodes[i];
        int any = 0;

        for (k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && vneed[n->outputs[k]])
                any = 1;
        if (!any)
            continue;
        need[i] = 1;
        for (k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0)
                vneed[n->inputs[k]] = 1;
    }
    ss_free(vneed);
    return 0;
}

static bool
is_frozen(const ss_train_opts_t *o, const char *name)
{
    for (int i = 0; i < o->n_frozen; i++)
        if (o->frozen[i] && strcmp(o->frozen[i], name) == 0)
            return true;
    return false;
}

static bool
is_scale(const ss_train_opts_t *o, const char *name)
{
    for (int i = 0; i < o->n_scales; i++)
        if (o->scales[i] && strcmp(o->scales[i], name) == 0)
            return true;
    return false;
}

enum { C_CONST = 0, C_PARAM = 1, C_STATE = 2, C_SCALE = 3 };

/* Per graph value: C_PARAM, C_STATE or C_CONST (see the top). */
static int
classify(const ss_graph_t *g, const ss_train_opts_t *o, const uint8_t *need,
         uint8_t *cls, ss_err_t *err)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        const ss__rule_t *r = ss__rule_find(n->op_type);
        bool bn = strcmp(n->op_type, "BatchNormalization") == 0;

        if (!need[i])
            continue;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            const ss_value_t *gv;

            if (v < 0)
                continue;
            gv = &g->values[v];
            if (gv->constant == NULL || gv->constant->dtype != SS_DTYPE_F32)
                continue;
            if (bn && k >= 3 && o->bn == SS_BN_BATCH) {
                if (cls[v] == C_PARAM)
                    return ss_err_set(err, SS_EUNSUPP, "trainer: '%s' is "
                                      "both a weight and BatchNorm "
                                      "statistics (node '%s')", gv->name,
                                      label(n));
                cls[v] = C_STATE;
                continue;
            }
            if (is_scale(o, gv->name)) {
                /* the scale of a Q/DQ, learned (LSQ): scalars too */
                if (r == NULL || r->bwd != ss__bwd_qdq || k != 1)
                    return ss_err_set(err, SS_EINVAL, "trainer: step size "
                                      "'%s' is read by node '%s' as input "
                                      "%d, not as a Q/DQ scale", gv->name,
                                      label(n), k);
                cls[v] = C_SCALE;
                continue;
            }
            if (ss_tensor_numel(gv->constant) < 2 || is_frozen(o, gv->name)
                || (r != NULL && r->bwd == ss__bwd_qdq && k > 0))
                continue;
            /* an op without a row: make it a parameter so that the
             * forward walk refuses the op by name */
            if (r == NULL || (r->diff & (1u << k))) {
                if (cls[v] == C_STATE)
                    return ss_err_set(err, SS_EUNSUPP, "trainer: '%s' is "
                                      "both a weight and BatchNorm "
                                      "statistics (node '%s')", gv->name,
                                      label(n));
                cls[v] = C_PARAM;
            }
        }
    }
    return 0;
}

static int64_t
pad16(int64_t n)
{
    return (n + 15) & ~(int64_t)15;
}
/* torch.onnx.export stores equal initializers once and reads the copies
 * through Identity nodes (a ResNet's zero-initialized BatchNorm biases
 * end up as Identity(block2.bn2.bias)).  In the model those were separate
 * parameters: give each Identity of a parameter its own slot, initialized
 * from the shared value, so training does not tie them (export writes
 * the Identity's output back as an initializer of its own). */
static int
untie(ss__tb_t *b, const uint8_t *cls, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    const ss_graph_t *g = b->g;

    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        int src, out, id, gid;
        const ss__tv_t *sv;
        ss__param_t *p, *np;

        if (strcmp(n->op_type, "Identity") != 0 || n->n_inputs < 1 ||
            (src = n->inputs[0]) < 0 || cls[src] != C_PARAM ||
            (out = n->outputs[0]) < 0 ||
            is_frozen(&t->o0, g->values[out].name))
            continue;
        sv = &t->tv[b->vmap[src]];
        if ((np = ss_realloc(t->params, (size_t)(t->n_params + 1) *
                                        sizeof(*np))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for parameters");
        t->params = np;
        if ((id = tv_add(b, SS__TV_PARAM, SS_DTYPE_F32, sv->ndim, sv->dims,
                         err)) < 0)
            return id;
        sv = &t->tv[b->vmap[src]];
        t->tv[id].name = g->values[out].name;
        t->tv[id].graph_id = out;
        t->tv[id].cdata = sv->cdata;
        t->tv[id].offset = (size_t)t->flat;
        b->vmap[out] = id;
        b->rg[id] = 1;
        if ((gid = tv_add(b, SS__TV_PGRAD, SS_DTYPE_F32, sv->ndim, sv->dims,
                          err)) < 0)
            return gid;
        t->tv[gid].offset = (size_t)t->flat;
        p = &t->params[t->n_params++];
        p->tv = id;
        p->grad = gid;
        p->graph_id = out;
        t->flat += pad16(t->tv[id].numel);
    }
    return 0;
}

static int
make_constants(ss__tb_t *b, const uint8_t *cls, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    const ss_graph_t *g = b->g;
    int n_params = 0, v, pass, rc;

    for (v = 0; v < g->n_values; v++)
        n_params += g->values[v].constant &&
                    (cls[v] == C_PARAM || cls[v] == C_SCALE);
    if ((t->params = ss_calloc((size_t)(n_params ? n_params : 1),
                               sizeof(*t->params))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for parameters");
    /* weights first, learned step sizes last (after untie's copies) */
    for (pass = 0; pass < 2; pass++)
    for (v = 0; v < g->n_values; v++) {
        const ss_tensor_t *c = g->values[v].constant;
        ss__tv_kind_t kind = cls[v] == C_PARAM || cls[v] == C_SCALE
                           ? SS__TV_PARAM
                           : cls[v] == C_STATE ? SS__TV_STATE
                           : SS__TV_CONST;
        int id;

        if (c == NULL || (pass == 1) != (cls[v] == C_SCALE))
            continue;
        if (pass == 1 && t->flat_decay < 0) {
            t->flat_decay = t->flat;
            if ((rc = untie(b, cls, err)) < 0)
                return rc;
            t->flat_decay = t->flat;
        }
        if ((id = tv_add(b, kind, c->dtype, c->ndim, c->dims, err)) < 0)
            return id;
        t->tv[id].name = g->values[v].name;
        t->tv[id].graph_id = v;
        t->tv[id].cdata = c;
        b->vmap[v] = id;
        if (kind == SS__TV_PARAM) {
            ss__param_t *p;
            int gid;

            /* untie may have resized the table to what it holds */
            if ((p = ss_realloc(t->params, (size_t)(t->n_params + 1) *
                                           sizeof(*p))) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for "
                                  "parameters");
            t->params = p;
            p = &t->params[t->n_params++];

            p->tv = id;
            p->graph_id = v;
            t->tv[id].offset = (size_t)t->flat;
            b->rg[id] = 1;
            if ((gid = tv_add(b, SS__TV_PGRAD, SS_DTYPE_F32, c->ndim,
                              c->dims, err)) < 0)
                return gid;
            t->tv[gid].offset = (size_t)t->flat;
            p->grad = gid;
            t->flat += pad16(t->tv[id].numel);
        } else if (kind == SS__TV_STATE) {
            t->tv[id].offset = (size_t)t->n_state;
            t->n_state += pad16(t->tv[id].numel);
        }
    }
    if (t->flat_decay >= 0)
        return 0;
    if ((rc = untie(b, cls, err)) < 0)
        return rc;
    t->flat_decay = t->flat;
    return 0;
}

/* ---- step 3: the forward walk ------------------------------------------- */

static void
shape_of(const ss__tv_t *v, ss_tensor_t *t)
{
    memset(t, 0, sizeof(*t));
    /* a bf16 activation is an f32 value of the model (act16.c) */
    t->dtype = v->act16 ? SS_DTYPE_F32 : v->dtype;
    t->ndim = v->ndim;
    memcpy(t->dims, v->dims, sizeof(t->dims));
    if (v->kind == SS__TV_CONST)
        t->data = v->cdata->data;
}

/* Runs n now on constant inputs; its outputs become constants. */
static int
fold(ss__tb_t *b, const ss_node_t *n, const ss_op_t *op, ss_tensor_t *in,
     ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *inp[SS__STEP_IN * 4];
    static const uint8_t dummy[64];
    int k, rc;

    for (k = 0; k < n->n_inputs; k++) {
        inp[k] = n->inputs[k] >= 0 ? &in[k] : NULL;
        /* Shape and Size read only dims: give them some bytes */
        if (inp[k] && in[k].data == NULL)
            in[k].data = (void *)dummy;
    }
    for (k = 0; k < n->n_outputs; k++) {
        ss_tensor_t *o = NULL;

        if (n->outputs[k] < 0)
            continue;
        if ((rc = ss__tensor_new(out[k].dtype, out[k].ndim, out[k].dims, &o,
                                 err)) < 0)
            return rc;
        out[k].data = o->data;
        o->data = NULL;
        ss__tensor_free(o);
    }
    rc = op->run(n, b->g->opset, inp, out, err);
    for (k = 0; k < n->n_outputs; k++) {
        ss_tensor_t *o;
        int id;

        if (n->outputs[k] < 0)
            continue;
        if (rc < 0 || (o = ss_malloc(sizeof(*o))) == NULL) {
            ss_free(out[k].data);
            if (rc >= 0)
                rc = ss_err_set(err, SS_ENOMEM, "no memory for a constant");
            continue;
        }
        *o = out[k];
        if ((id = tv_add(b, SS__TV_CONST, o->dtype, o->ndim, o->dims,
                         err)) < 0) {
            ss__tensor_free(o);
            rc = id;
            continue;
        }
        b->t->tv[id].owned = o;
        b->t->tv[id].cdata = o;
        b->t->tv[id].name = b->g->values[n->outputs[k]].name;
        b->t->tv[id].graph_id = n->outputs[k];
        b->vmap[n->outputs[k]] = id;
    }
    return rc;
}

static int
forward_node(ss__tb_t *b, int idx, ss_err_t *err)
{
    const ss_graph_t *g = b->g;
    const ss_node_t *n = ss__tb_node(b, idx);
    const ss__rule_t *r = ss__rule_find(n->op_type);
    const ss_op_t *op = ss__op_find(n->op_type);
    ss_tensor_t in[16], out[8];
    const ss_tensor_t *inp[16];
    bool all_const = true, any_rg = false;
    int k, rc;

    if (n->n_outputs > 0 && n->outputs[0] >= 0 &&
        b->vmap[n->outputs[0]] >= 0)
        return 0;       /* an untied Identity (see untie) */
    if (op == NULL || n->domain[0] != '\0')
        return ss_err_set(err, SS_EUNSUPP, "trainer: no kernel for %s "
                          "(node '%s')", n->op_type, label(n));
    if (n->n_inputs > 16 || n->n_outputs > 8)
        return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' has too "
                          "many inputs or outputs", label(n));
    for (k = 0; k < n->n_inputs; k++) {
        int v = ss__tb_in(b, n, k);

        inp[k] = NULL;
        if (n->inputs[k] < 0)
            continue;
        if (v < 0)
            return ss_err_set(err, SS_EINTERNAL, "trainer: node '%s' reads "
                              "a value not computed", label(n));
        shape_of(&b->t->tv[v], &in[k]);
        inp[k] = &in[k];
        if (b->t->tv[v].kind != SS__TV_CONST)
            all_const = false;
        if (b->rg[v] && (r == NULL || (r->diff & (1u << k))))
            any_rg = true;
    }
    memset(out, 0, sizeof(out));
    if ((rc = op->infer(n, g->opset, inp, out, err)) < 0)
        return rc;
    if (all_const || strcmp(n->op_type, "Shape") == 0 ||
        strcmp(n->op_type, "Size") == 0)
        return fold(b, n, op, in, out, err);
    if (any_rg && (r == NULL || r->bwd == NULL))
        return ss_err_set(err, SS_EUNSUPP, "trainer: no gradient rule for "
                          "%s (node '%s')", n->op_type, label(n));
    b->plain_only = r == NULL || !(r->flags & SS__R_LAYOUT);
    if ((r == NULL || !(r->flags & SS__R_BF16)) &&
        (rc = ss__tb_node_f32(b, n, err)) < 0)
        return rc;
    b->plain_only = 0;
    if (r == NULL || !(r->flags & SS__R_LAYOUT))
        for (k = 0; k < n->n_inputs; k++) {
            int v = ss__tb_in(b, n, k);

            if (v >= 0 && (rc = ss__tb_lay(b, v, SS_DNN_PLAIN, err)) < 0)
                return rc;
        }
    for (k = 0; k < n->n_outputs; k++) {
        int id;

        if (n->outputs[k] < 0)
            continue;
        if ((id = ss__tv_new(b, out[k].dtype, out[k].ndim, out[k].dims,
                             err)) < 0)
            return id;
        b->t->tv[id].name = g->values[n->outputs[k]].name;
        b->t->tv[id].graph_id = n->outputs[k];
        b->vmap[n->outputs[k]] = id;
        /* QuantizeLinear's 8-bit output carries a straight-through
         * gradient (rules_q.c); other integer values carry none. */
        b->rg[id] = any_rg && (out[k].dtype == SS_DTYPE_F32
                               || strcmp(n->op_type, "QuantizeLinear") == 0);
    }
    b->plain_only = r == NULL || !(r->flags & SS__R_LAYOUT);
    if (r != NULL && r->fwd != NULL) {
        rc = r->fwd(b, n, err);
        b->plain_only = 0;
        return rc;
    }
    {
        ss__step_t s = { 0 };

        s.fn = ss__k_ref;
        s.what = n->op_type;
        s.node = n;
        s.ref = op;
        s.n_in = n->n_inputs;
        s.n_out = n->n_outputs;
        for (k = 0; k < n->n_inputs; k++)
            s.in[k] = ss__tb_in(b, n, k);
        for (k = 0; k < n->n_outputs; k++)
            s.out[k] = ss__tb_out(b, n, k);
        b->plain_only = 0;
        if (s.n_in > SS__STEP_IN || s.n_out > SS__STEP_OUT)
            return ss_err_set(err, SS_EUNSUPP, "trainer: node '%s' has too "
                              "many inputs or outputs", label(n));
        return ss__step_add(b, &s, err);
    }
}

/* ---- step 4: the loss --------------------------------------------------- */

static int
add_loss(ss__tb_t *b, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    ss__tv_t *o = &t->tv[t->out_tv];
    int64_t rows = o->ndim > 1 ? o->numel / o->dims[o->ndim - 1] : 1;
    int64_t one = 1;
    ss__step_t s = { 0 };
    int gv, acc, id;

    if (o->dtype != SS_DTYPE_F32 || o->ndim < 1 || o->numel < 1)
        return ss_err_set(err, SS_EUNSUPP, "trainer: the loss output '%s' "
                          "is not a float tensor", o->name ? o->name : "?");
    if (!b->rg[t->out_tv])
        return ss_err_set(err, SS_EINVAL, "trainer: nothing to train: no "
                          "parameter reaches output '%s' (all frozen?)",
                          o->name ? o->name : "?");
    t->labels_tv = t->teacher_tv = -1;
    if (t->o.loss == SS_LOSS_CE || t->o.loss == SS_LOSS_KD ||
        t->o.opt == SS_OPT_SOPHIA) {
        if ((id = tv_add(b, SS__TV_INPUT, SS_DTYPE_I64, 1, &rows, err)) < 0)
            return id;
        t->labels_tv = id;
    }
    if (t->o.loss != SS_LOSS_CE) {
        if ((id = tv_add(b, SS__TV_INPUT, SS_DTYPE_F32, o->ndim, o->dims,
                         err)) < 0)
            return id;
        t->teacher_tv = id;
    }
    if ((id = tv_add(b, SS__TV_INPUT, SS_DTYPE_F64, 1, &one, err)) < 0)
        return id;
    t->loss_tv = id;
    if ((gv = ss__tb_grad(b, t->out_tv, &acc, err)) < 0)
        return gv;
    b->phase = 1;
    s.fn = ss__k_loss;
    s.what = "loss";
    s.n_in = 3;
    s.in[0] = t->out_tv;
    s.in[1] = t->labels_tv;
    s.in[2] = t->teacher_tv;
    s.n_out = 2;
    s.out[0] = t->loss_tv;
    s.out[1] = gv;
    s.p[0] = rows;
    s.p[1] = o->dims[o->ndim - 1];
    return ss__step_add(b, &s, err);
}

/* ---- step 6: memory ----------------------------------------------------- */

typedef struct blk {
    size_t off, size;
    int last;
} blk_t;

static int
cmp_first(const void *a, const void *b, void *arg)
{
    const ss__tr_t *t = arg;
    int x = *(const int *)a, y = *(const int *)b;

    if (t->tv[x].first != t->tv[y].first)
        return t->tv[x].first < t->tv[y].first ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int
plan_memory(ss__tr_t *t, ss_err_t *err)
{
    int *order = NULL, n = 0, i, k, nb = 0, rc = 0;
    blk_t *live = NULL;
    size_t top = 0;

    for (i = 0; i < t->n_steps; i++) {
        const ss__step_t *s = &t->steps[i];

        for (k = 0; k < s->n_in + s->n_out; k++) {
            int v = k < s->n_in ? s->in[k] : s->out[k - s->n_in];

            if (v < 0)
                continue;
            v = root(t, v);
            if (t->tv[v].first < 0 || i < t->tv[v].first)
                t->tv[v].first = i;
            if (i > t->tv[v].last)
                t->tv[v].last = i;
        }
    }
    if ((order = ss_malloc((size_t)(t->n_tv + 1) * sizeof(int))) == NULL ||
        (live = ss_malloc((size_t)(t->n_tv + 1) * sizeof(*live))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to plan the arena");
        goto done;
    }
    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_ARENA && t->tv[i].first >= 0)
            order[n++] = i;
    qsort_r(order, (size_t)n, sizeof(int), cmp_first, t);
    for (i = 0; i < n; i++) {
        ss__tv_t *v = &t->tv[order[i]];
        size_t size = (v->bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
        size_t off = 0;
        int j, w;

        if (size == 0)
            size = ALIGN;
        /* drop blocks whose last reader ran before this value's writer */
        for (j = w = 0; j < nb; j++)
            if (live[j].last >= v->first)
                live[w++] = live[j];
        nb = w;
        /* live is sorted by offset: take the first gap that fits */
        for (j = 0; j < nb; j++) {
            if (live[j].off >= off + size)
                break;
            if (live[j].off + live[j].size > off)
                off = live[j].off + live[j].size;
        }
        memmove(&live[j + 1], &live[j], (size_t)(nb - j) * sizeof(*live));
        live[j].off = off;
        live[j].size = size;
        live[j].last = v->last;
        nb++;
        v->offset = off;
        if (off + size > top)
            top = off + size;
    }
    t->arena_bytes = top;
done:
    ss_free(order);
    ss_free(live);
    return rc;
}

static int
resolve(ss__tr_t *t, ss_err_t *err)
{
    size_t scratch = 0;
    int i;

    if ((t->arena = ss_aligned_alloc(t->arena_bytes ? t->arena_bytes
                                                    : ALIGN)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the training "
                          "arena (%zu bytes)", t->arena_bytes);
    memset(t->arena, 0, t->arena_bytes);
    for (i = 0; i < t->n_tv; i++) {
        ss__tv_t *v = &t->tv[i];

        switch (v->kind) {
        case SS__TV_CONST: v->data = v->cdata->data; break;
        case SS__TV_PARAM: v->data = t->w + v->offset; break;
        case SS__TV_PGRAD: v->data = t->gr + v->offset; break;
        case SS__TV_STATE: v->data = t->state + v->offset; break;
        case SS__TV_ARENA:
            v->data = (char *)t->arena + v->offset;
            break;
        case SS__TV_INPUT:
            if ((v->data = ss_aligned_alloc(v->bytes ? v->bytes
                                                     : ALIGN)) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for inputs");
            memset(v->data, 0, v->bytes);
            break;
        case SS__TV_WBF16: v->data = t->wbf + v->offset; break;
        case SS__TV_VIEW: break;
        }
    }
    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_VIEW)
            t->tv[i].data = t->tv[root(t, i)].data;
    for (i = 0; i < t->n_steps; i++)
        if (t->steps[i].prim &&
            ss_dnn_prim_scratch_size(t->steps[i].prim) > scratch)
            scratch = ss_dnn_prim_scratch_size(t->steps[i].prim);
    t->scratch_bytes = scratch;
    if (scratch && (t->scratch = ss_aligned_alloc(scratch)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for oneDNN scratch");
    return 0;
}

static int
alloc_flat(ss__tr_t *t, ss_err_t *err)
{
    size_t n = (size_t)(t->flat ? t->flat : 16) * sizeof(float);
    size_t ns = (size_t)(t->n_state ? t->n_state : 16) * sizeof(float);
    const ss_train_dp_t *dp = t->o.dp;
    int i, bf = 0, rc;

    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_WBF16)
            bf = 1;
    /* Data parallel on one machine: the glue may hand out arrays the
     * processes share (train.h); every process gets the same answer. */
    if (dp != NULL && dp->size > 1 && dp->share != NULL) {
        if ((rc = dp->share(dp->arg, t->flat ? t->flat : 16, &t->sh,
                            err)) < 0)
            return rc;
        t->shared = rc == 1;
    }
    if (t->shared) {
        t->w = t->sh.w;
        t->gr = t->sh.g;
    } else if ((t->w = ss_aligned_alloc(n)) == NULL
               || (t->gr = ss_aligned_alloc(n)) == NULL) {
        return ss_err_set(err, SS_ENOMEM, "no memory for %lld parameters",
                          (long long)t->flat);
    }
    if ((bf && (t->wbf = ss_aligned_alloc(n / 2)) == NULL)
        || (t->state = ss_aligned_alloc(ns)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the bf16 weights "
                          "and running statistics");
    t->wbf_stale = bf;          /* rounded before the first step */
    memset(t->gr, 0, n);
    memset(t->state, 0, ns);
    /* Shared parameters: process 0 writes them while the others wait
     * (they may be training already otherwise). */
    if (!t->shared || dp->rank == 0)
        memset(t->w, 0, n);
    for (i = 0; i < t->n_tv; i++) {
        const ss__tv_t *v = &t->tv[i];

        if (v->kind == SS__TV_PARAM && (!t->shared || dp->rank == 0))
            memcpy(t->w + v->offset, v->cdata->data, v->bytes);
        else if (v->kind == SS__TV_STATE)
            memcpy(t->state + v->offset, v->cdata->data, v->bytes);
    }
    if (t->shared && (rc = dp->gather_f32(dp->arg, t->w, t->flat ? t->flat
                                                               : 16,
                                          err)) < 0)
        return rc;
    return ss__optim_alloc(t, err);
}

/* ---- the whole build ---------------------------------------------------- */

static void
tb_close(ss__tb_t *b, int n_nodes)
{
    if (b->saved)
        for (int i = 0; i < n_nodes; i++)
            ss_free(b->saved[i]);
    ss_free(b->saved);
    ss_free(b->n_saved);
    ss_free(b->vmap);
    ss_free(b->grad);
    ss_free(b->rg);
    ss_free(b->bf);
    ss_free(b->lc);
    ss_free(b->fc);
    ss_free(b->lc_of);
    ss_free(b->nf32);
    ss_free(b->subst);
}

void
ss_train_free(ss_train_t *t)
{
    if (t == NULL)
        return;
    ss__train_profile_dump(t);
    for (int i = 0; i < t->n_steps; i++) {
        ss_free(t->steps[i].aux);
        ss_dnn_prim_free(t->steps[i].prim);
    }
    ss_free(t->steps);
    for (int i = 0; i < t->n_tv; i++) {
        if (t->tv[i].kind == SS__TV_INPUT)
            ss_free(t->tv[i].data);
        ss__tensor_free(t->tv[i].owned);
    }
    ss_free(t->tv);
    ss_free(t->input_tv);
    ss_free(t->fused);
    ss_free(t->params);
    if (t->shared) {
        t->o.dp->unshare(t->o.dp->arg, &t->sh);
    } else {
        ss_free(t->w);
        ss_free(t->gr);
    }
    ss_free(t->wbf);
    ss_free(t->m);
    ss_free(t->v);
    ss_free(t->state);
    ss_free(t->arena);
    ss_free(t->scratch);
    ss_free(t->kbuf);
    ss_dnn_stream_free(t->stream);
    ss_free(t);
}

int
ss_train_new(const ss_graph_t *g, const ss_tensor_t *shapes,
             const ss_train_opts_t *o, ss_train_t **out, ss_err_t *err)
{
    ss__tr_t *t = NULL;
    ss__tb_t b;
    uint8_t *need = NULL, *cls = NULL;
    int i, rc;

    *out = NULL;
    memset(&b, 0, sizeof(b));
    if ((rc = ss_train_opts_check(o, err)) < 0)
        goto done;
    if (o->output < 0 || o->output >= g->n_outputs) {
        rc = ss_err_set(err, SS_EINVAL, "trainer: the model has no output "
                        "%d", o->output);
        goto done;
    }
    if ((t = ss_calloc(1, sizeof(*t))) == NULL ||
        (b.vmap = ss_malloc((size_t)g->n_values * sizeof(int))) == NULL ||
        (b.saved = ss_calloc((size_t)g->n_nodes + 1, sizeof(int *))) ==
            NULL ||
        (b.n_saved = ss_calloc((size_t)g->n_nodes + 1, sizeof(int))) ==
            NULL ||
        (need = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL ||
        (b.nf32 = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL ||
        (cls = ss_calloc((size_t)g->n_values + 1, 1)) == NULL ||
        (t->input_tv = ss_calloc((size_t)g->n_inputs + 1, sizeof(int))) ==
            NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the trainer");
        goto done;
    }
    t->g = g;
    t->flat_decay = -1;
    t->o0 = *o;
    t->o = *o;
    t->o.frozen = NULL;
    t->o.n_frozen = 0;
    t->o.scales = NULL;
    t->o.n_scales = 0;
    t->rng = o->seed ^ 0x5eedf00dULL;
    b.t = t;
    b.g = g;
    for (i = 0; i < g->n_values; i++)
        b.vmap[i] = -1;
    /* oneDNN tunes primitives for the thread count current at creation */
    if (o->threads > 0)
        omp_set_num_threads(o->threads);
    if ((rc = ss_dnn_stream_new(o->threads, &t->stream, err)) < 0)
        goto done;
    if ((rc = mark_needed(g, g->outputs[o->output], need, err)) < 0 ||
        (rc = classify(g, o, need, cls, err)) < 0 ||
        (rc = make_constants(&b, cls, err)) < 0 ||
        (rc = ss__tb_fuse_gelu(&b, need, err)) < 0)
        goto done;
    t->n_inputs = g->n_inputs;
    for (i = 0; i < g->n_inputs; i++) {
        const ss_io_info_t *ii = &g->input_info[i];
        const ss_tensor_t *s = &shapes[i];
        int id;

        if (s->dtype != ii->dtype || s->ndim != ii->ndim || s->ndim < 1) {
            rc = ss_err_set(err, SS_EINVAL, "trainer: input '%s' must be %s "
                            "of rank %d", ii->name,
                            ss__dtype_onnx_name(ii->dtype), ii->ndim);
            goto done;
        }
        for (int d = 0; d < s->ndim; d++)
            if (s->dims[d] < 1 || (ii->dims[d] >= 0 &&
                                   ii->dims[d] != s->dims[d])) {
                rc = ss_err_set(err, SS_EINVAL, "trainer: input '%s' dim "
                                "%d is %lld, the model says %lld", ii->name,
                                d, (long long)s->dims[d],
                                (long long)ii->dims[d]);
                goto done;
            }
        if (i == 0)
            t->batch = s->dims[0];
        if ((id = tv_add(&b, SS__TV_INPUT, s->dtype, s->ndim, s->dims,
                         err)) < 0) {
            rc = id;
            goto done;
        }
        t->tv[id].name = ii->name;
        t->tv[id].graph_id = g->inputs[i];
        b.vmap[g->inputs[i]] = id;
        t->input_tv[i] = id;
    }
    /* building creates a primitive or two per op: a job's thread may
     * wait for serving between ops here as while training (pace.h) */
    b.phase = 0;
    for (i = 0; i < g->n_nodes; i++) {
        if (need[i] && (rc = forward_node(&b, i, err)) < 0)
            goto done;
        ss_pace_point();
    }
    if ((t->out_tv = b.vmap[g->outputs[o->output]]) < 0) {
        rc = ss_err_set(err, SS_EINTERNAL, "trainer: the output was not "
                        "computed");
        goto done;
    }
    /* the loss reads f32 NCHW (a model whose output is a blocked conv's) */
    if ((rc = ss__tb_f32(&b, t->out_tv, SS_DNN_PLAIN, err)) < 0)
        goto done;
    t->out_tv = rc;
    t->n_fwd = t->n_steps;
    if ((rc = add_loss(&b, err)) < 0)
        goto done;
    t->n_loss_end = t->n_steps;
    b.phase = 2;
    for (i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = ss__tb_node(&b, i);
        const ss__rule_t *r;
        bool any = false;

        if (!need[i] || (n->n_outputs > 0 && ss__tb_out(&b, n, 0) >= 0 &&
                         t->tv[ss__tb_out(&b, n, 0)].kind == SS__TV_PARAM))
            continue;   /* not run, or an untied Identity */
        for (int k = 0; k < n->n_outputs; k++) {
            if ((rc = ss__tb_merge(&b, ss__tb_out(&b, n, k), err)) < 0)
                goto done;
            if (ss__tb_grad_have(&b, ss__tb_out(&b, n, k)) >= 0)
                any = true;
        }
        if (!any)
            continue;
        r = ss__rule_find(n->op_type);
        if (r == NULL || r->bwd == NULL) {
            rc = ss_err_set(err, SS_EUNSUPP, "trainer: no gradient rule for "
                            "%s (node '%s')", n->op_type, label(n));
            goto done;
        }
        b.plain_only = !(r->flags & SS__R_LAYOUT);
        rc = r->bwd(&b, n, err);
        b.plain_only = 0;
        if (rc < 0)
            goto done;
        ss_pace_point();
    }
    /* a parameter a rule read in another layout (a Conv's input) */
    for (i = 0; i < t->n_params; i++)
        if ((rc = ss__tb_merge(&b, t->params[i].tv, err)) < 0)
            goto done;
    if ((rc = alloc_flat(t, err)) < 0 || (rc = plan_memory(t, err)) < 0 ||
        (rc = resolve(t, err)) < 0)
        goto done;
    t->last_lr = ss__sched_lr(&t->o, 0);
    *out = t;
    t = NULL;
done:
    if (rc < 0)
        ss__err_scrub(err);
    tb_close(&b, g->n_nodes);
    ss_free(need);
    ss_free(cls);
    ss_train_free(t);
    return rc < 0 ? rc : 0;
}
