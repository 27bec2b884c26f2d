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
 * Files: build.c steps 3 to 5 and the whole build; build_params.c steps
 * 1 and 2; build_mem.c step 6; build_tv.c the builder's values, steps and
 * layouts that every step and rule uses.
 *
 * THREADS: [worker]; a trainer belongs to one thread.
 */

#include <omp.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pace.h"
#include "compress/train/internal.h"

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
        if ((id = ss__tv_add(b, SS__TV_CONST, o->dtype, o->ndim, o->dims,
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
    if (!ss__r_takes_bf16(b, n, r) &&
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
        if ((id = ss__tv_add(b, SS__TV_INPUT, SS_DTYPE_I64, 1, &rows,
                             err)) < 0)
            return id;
        t->labels_tv = id;
    }
    if (t->o.loss != SS_LOSS_CE) {
        if ((id = ss__tv_add(b, SS__TV_INPUT, SS_DTYPE_F32, o->ndim, o->dims,
                             err)) < 0)
            return id;
        t->teacher_tv = id;
    }
    if ((id = ss__tv_add(b, SS__TV_INPUT, SS_DTYPE_F64, 1, &one, err)) < 0)
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
    ss__slices_free(t);
    if (t->shared) {
        t->o.dp->unshare(t->o.dp->arg, &t->sh);
    } else {
        if (t->parent == NULL)
            ss_free(t->w);
        ss_free(t->gr);
    }
    if (t->parent == NULL)
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
ss__train_build(const ss_graph_t *g, const ss_tensor_t *shapes,
                const ss_train_opts_t *o, const ss__tr_t *parent,
                ss__tr_t **out, ss_err_t *err)
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
    t->parent = parent;
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
    if ((rc = ss__tb_mark_needed(g, g->outputs[o->output], need, err)) < 0 ||
        (rc = ss__tb_classify(g, o, need, cls, err)) < 0 ||
        (rc = ss__tb_constants(&b, cls, err)) < 0 ||
        (rc = ss__tb_fuse_gelu(&b, need, err)) < 0)
        goto done;
    b.need = need;
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
        if ((id = ss__tv_add(&b, SS__TV_INPUT, s->dtype, s->ndim, s->dims,
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
                         (t->tv[ss__tb_out(&b, n, 0)].kind == SS__TV_PARAM ||
                          t->tv[ss__tb_out(&b, n, 0)].kind ==
                          SS__TV_STATE)))
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
    if ((rc = ss__mem_flat(t, err)) < 0 || (rc = ss__mem_plan(t, err)) < 0 ||
        (rc = ss__mem_resolve(t, err)) < 0)
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

int
ss_train_new(const ss_graph_t *g, const ss_tensor_t *shapes,
             const ss_train_opts_t *o, ss_train_t **out, ss_err_t *err)
{
    ss__tr_t *t = NULL;
    int rc;

    *out = NULL;
    if ((rc = ss__train_build(g, shapes, o, NULL, &t, err)) < 0)
        return rc;
    if (ss__slices_one_thread(t, o)) {
        /* a small step: one thread, built for one (slices.c) */
        ss_train_opts_t o1 = *o;
        char why[sizeof(t->slice_why)];

        memcpy(why, t->slice_why, sizeof(why));
        o1.threads = 1;
        ss_train_free(t);
        t = NULL;
        if ((rc = ss__train_build(g, shapes, &o1, NULL, &t, err)) < 0)
            return rc;
        memcpy(t->slice_why, why, sizeof(why));
        *out = t;
        return 0;
    }
    if ((rc = ss__slices_init(t, shapes, o, err)) < 0) {
        ss_train_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
