/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The plan compiler: a graph plus concrete input shapes → an immutable
 * list of steps and an arena layout.
 *
 * DESIGN: one walk over the graph's nodes in topological order infers
 * every value's shape through its op's infer (constant inputs passed with
 * their data, so Reshape/Slice/Expand see their shape arguments).  A node
 * whose inputs are all constant runs now, through its reference kernel,
 * and its outputs become constants: this folds the Shape → Gather →
 * Unsqueeze → Concat chains torch.onnx.export writes (Shape itself is
 * constant once input shapes are).  Identity and Dropout, and the
 * reshaping ops (Reshape, Flatten, Squeeze, Unsqueeze), become views that
 * share their input's bytes.  Every other node becomes a step.  Then the
 * passes replace steps by oneDNN primitives (int8 in plan_qdq.c, bf16 in
 * plan_bf16.c, f32 fusion in plan_fuse.c, reorders between layouts in
 * plan_layout.c; internal.h draws the map), steps nobody needs are
 * dropped, graph outputs are bound to the caller's buffers, and every
 * remaining intermediate gets an offset in one arena by liveness (first
 * fit, 64-byte aligned), so running a plan allocates nothing.  This file
 * calls the passes and is called by none of them; the walk's step for one
 * node is in plan_node.c, the phases after the passes in plan_finish.c.
 *
 * Memory is budgeted at compile time, so that a hostile model (a
 * ConstantOfShape whose shape input asks for gigabytes) fails here with
 * SS_ETOOBIG naming the node, not in an allocation at fold or run time:
 * every value must fit the budget, and so must the folded constants plus
 * the arena plus oneDNN's scratch, together (internal.h has the default;
 * SS_ENGINE_MAX_PLAN_BYTES overrides it).
 *
 * Inputs that decide shapes (ss_graph_shape_inputs: Reshape's shape,
 * TopK's K, Resize's scales, NonZero's data, ... given as graph inputs)
 * are taken by value: the plan copies their values in as constants, so
 * everything downstream folds and infers exactly as with initializers,
 * and ss_plan_run refuses a run whose values differ.  A caller keeps one
 * plan per distinct value, as it keeps one per batch size (the daemon's
 * plan cache keys on both; slimserve-infer compiles per call).  The other
 * way, output shapes computed at run time, was not taken: every step
 * would have to re-infer shapes, the arena could not be planned ahead,
 * and oneDNN primitives (made for fixed shapes) would be created while
 * running; for the values these inputs take in practice (a few reshape
 * targets, a K, a resize scale) a handful of cached plans costs less and
 * keeps runs allocation-free.  The price is a compile per new value,
 * bounded by the caller's cache.
 *
 * Set SS_ENGINE_NO_FUSION=1 to compile with reference kernels only.
 *
 * THREADS: ss_plan_new is [any]; the plan is immutable afterwards.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "common/memacct.h"
#include "common/pace.h"
#include "engine/plan/internal.h"

const char *
ss__plan_label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

/* Takes the in/out arrays (ss_malloc'ed). */
int
ss__plan_append(ss_plan_t *p, const ss_step_t *s, ss_err_t *err)
{
    if (p->n_steps == p->cap_steps) {
        int cap = p->cap_steps ? 2 * p->cap_steps : 64;
        ss_step_t *st = ss_realloc(p->steps, (size_t)cap * sizeof(*st));

        if (st == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        p->steps = st;
        p->cap_steps = cap;
    }
    p->steps[p->n_steps++] = *s;
    if (s->n_in > p->max_io)
        p->max_io = s->n_in;
    if (s->n_out > p->max_io)
        p->max_io = s->n_out;
    return 0;
}

int *
ss__plan_dup_ids(const int *ids, int n)
{
    int *c = ss_malloc((size_t)(n > 0 ? n : 1) * sizeof(int));

    if (c != NULL && n > 0)
        memcpy(c, ids, (size_t)n * sizeof(int));
    return c;
}

/* Budgets past this are taken as this: sums of a few budget-sized terms
 * cannot wrap. */
#define BUDGET_CAP ((size_t)1 << 48)

size_t
ss_plan_default_budget(void)
{
    const char *s = getenv("SS_ENGINE_MAX_PLAN_BYTES");
    unsigned long long v;
    char *end;
    int shift = 0;

    if (s == NULL || *s < '0' || *s > '9')
        return SS_PLAN_MAX_BYTES;
    v = strtoull(s, &end, 10);
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    default: break;
    }
    if (*end != '\0' || v == 0 || v > (BUDGET_CAP >> shift))
        return SS_PLAN_MAX_BYTES;
    return (size_t)v << shift;
}

static int build(const ss_graph_t *g, const ss_plan_t *outer,
                 const ss_tensor_t *input_shapes, const unsigned char *bind,
                 int fuse, const ss_plan_opts_t *o, ss_plan_t **out,
                 ss_err_t *err);


/* Input i decides shapes: the plan holds a copy of its value as a
 * constant (see "Inputs that decide shapes" at the top). */
static int
bind_value(ss_plan_t *p, int i, const ss_tensor_t *s, ss_err_t *err)
{
    ss_pval_t *pv = &p->vals[p->g->inputs[i]];
    void *data;

    if (s->data == NULL && pv->bytes > 0)
        return ss_err_set(err, SS_EINVAL, "input '%s' decides shapes: a "
                          "plan is compiled for its value, and none was "
                          "given", p->g->input_info[i].name);
    if ((data = ss_aligned_alloc(pv->bytes + 1)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for input '%s'",
                          p->g->input_info[i].name);
    if (pv->bytes > 0)
        memcpy(data, s->data, pv->bytes);
    ss__plan_own_const(p, p->g->inputs[i], data);
    pv->index = i;
    p->const_bytes += pv->bytes;
    return 0;
}

static int
check_inputs(ss_plan_t *p, const ss_tensor_t *shapes,
             const unsigned char *decides, ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    int rc;

    for (int i = 0; i < g->n_inputs; i++) {
        const ss_io_info_t *io = &g->input_info[i];
        const ss_tensor_t *s = &shapes[i];
        ss_pval_t *pv = &p->vals[g->inputs[i]];

        if (s->dtype != io->dtype || s->ndim < 0 || s->ndim > SS_MAX_DIMS
            || (io->ndim >= 0 && s->ndim != io->ndim))
            return ss_err_set(err, SS_EINVAL, "input '%s': expected %s of "
                              "rank %d, got %s of rank %d", io->name,
                              ss__dtype_onnx_name(io->dtype), io->ndim,
                              ss__dtype_onnx_name(s->dtype), s->ndim);
        for (int d = 0; d < s->ndim; d++)
            if (s->dims[d] < 0
                || (io->ndim >= 0 && io->dims[d] >= 0
                    && io->dims[d] != s->dims[d]))
                return ss_err_set(err, SS_EINVAL, "input '%s': dim %d is "
                                  "%lld, the model wants %lld", io->name, d,
                                  (long long)s->dims[d],
                                  (long long)io->dims[d]);
        pv->t.dtype = s->dtype;
        pv->t.ndim = s->ndim;
        memcpy(pv->t.dims, s->dims, sizeof(s->dims));
        if (ss__tensor_bytes(&pv->t, &pv->bytes) < 0)
            return ss_err_set(err, SS_EINVAL, "input '%s' is too large",
                              io->name);
        if (pv->bytes > p->max_bytes)
            return ss_err_set(err, SS_ETOOBIG, "input '%s' is over the "
                              "plan's %zu-byte budget", io->name,
                              p->max_bytes);
        pv->kind = SS_PV_INPUT;
        pv->index = i;
        if (decides[i] && (rc = bind_value(p, i, s, err)) < 0)
            return rc;
    }
    return 0;
}

/* The passes onto oneDNN, in order, after the walk over the nodes: dead
 * rows shrink the shapes the others see, int8 and bf16 take what they
 * can first, the f32 fusion the rest, and the
 * layout pass reorders where a read and its write disagree.  Each leaves
 * a valid plan; SS_ENGINE_NO_FUSION=1 skips them all. */
static int (*const passes[])(ss_plan_t *, ss_err_t *) = {
    ss__plan_moe, ss__plan_dead_rows, ss__plan_int8, ss__plan_bf16,
    ss__plan_fuse, ss__plan_layout,
};

/* p runs a oneDNN or control-flow step -- or its prefix slices do,
 * which its run calls (plan_slice.c) -- so a NaN could come out as a
 * bound (internal.h: nan_guard). */
static int
guarded_steps(const ss_plan_t *p)
{
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_DNN
            || p->steps[s].kind == SS_STEP_CTRL)
            return 1;
    return p->slice_prefix && p->slice->nan_guard;
}

/* A float graph input (where a caller's NaN or Inf can enter). */
static int
float_input(const ss_plan_t *p)
{
    for (int i = 0; i < p->g->n_inputs; i++)
        switch (p->vals[p->g->inputs[i]].t.dtype) {
        case SS_DTYPE_F32: case SS_DTYPE_F64:
        case SS_DTYPE_F16: case SS_DTYPE_BF16:
            return 1;
        default:
            break;
        }
    return 0;
}

/* Prefixes err with the inputs whose values decided shapes:
 * "with the values given for inputs 'shape', 'k' (deciding shapes): ". */
static int
wrap_values(const ss_graph_t *g, const unsigned char *decides, ss_err_t *err)
{
    char names[160];
    size_t len = 0;
    int n = 0;

    names[0] = '\0';
    for (int i = 0; i < g->n_inputs; i++) {
        int w;

        if (!decides[i])
            continue;
        w = snprintf(names + len, sizeof(names) - len, "%s'%s'",
                     n++ ? ", " : "", g->input_info[i].name);
        if (w < 0 || (size_t)w >= sizeof(names) - len) {
            snprintf(names + len, sizeof(names) - len, ", ...");
            break;
        }
        len += (size_t)w;
    }
    return ss_err_wrap(err, SS_EINVAL, "with the value%s given for "
                       "input%s %s (deciding shapes)", n > 1 ? "s" : "",
                       n > 1 ? "s" : "", names);
}

int
ss_plan_new_opts(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                 const ss_plan_opts_t *o, ss_plan_t **out, ss_err_t *err)
{
    const char *nf = getenv("SS_ENGINE_NO_FUSION");
    int fuse = nf == NULL || nf[0] == '\0' || strcmp(nf, "0") == 0;

    if (o != NULL && o->tapped)
        fuse |= SS__PLAN_TAPS;
    return build(g, NULL, input_shapes, NULL, fuse, o, out, err);
}

int
ss_plan_new(const ss_graph_t *g, const ss_tensor_t *input_shapes,
            ss_plan_t **out, ss_err_t *err)
{
    return ss_plan_new_opts(g, input_shapes, NULL, out, err);
}

int
ss_plan_new_tapped(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                   ss_plan_t **out, ss_err_t *err)
{
    const ss_plan_opts_t o = { .tapped = 1 };

    return ss_plan_new_opts(g, input_shapes, &o, out, err);
}

/* Charges acct with what p owns besides its steps' packed weights: the
 * constants it folded and its tables.  The steps' oneDNN objects (their
 * JIT code, descriptors) and the executor's arena are not counted: the
 * first are oneDNN's, the second the executor's, shared by every plan
 * it runs (docs/architecture.md, "Model memory"). */
static void
charge(ss_plan_t *p, ss_memacct_t *acct)
{
    size_t n = sizeof(*p) + (size_t)p->n_vals * sizeof(ss_pval_t)
               + (size_t)p->cap_steps * sizeof(ss_step_t);

    for (int v = 0; v < p->n_vals; v++)
        if (p->vals[v].owned)
            n += p->vals[v].bytes;
    for (int s = 0; s < p->n_steps; s++)
        n += (size_t)(p->steps[s].n_in + p->steps[s].n_out) * sizeof(int);
    if (acct == NULL)
        return;
    ss_memacct_ref(acct);
    ss_memacct_charge(acct, n);
    p->acct = acct;
    p->charged = n;
}

int
ss__plan_build(const ss_graph_t *g, const ss_tensor_t *input_shapes,
               int fuse, size_t budget, ss_plan_t **out, ss_err_t *err)
{
    const ss_plan_opts_t o = { .max_plan_bytes = budget };

    return build(g, NULL, input_shapes, NULL, fuse, &o, out, err);
}

int
ss__plan_build_sub(const ss_graph_t *g, const ss_plan_t *outer,
                   const ss_tensor_t *input_shapes,
                   const unsigned char *bind, int fuse, ss_plan_t **out,
                   ss_err_t *err)
{
    return build(g, outer, input_shapes, bind, fuse | SS__PLAN_SUB
                 | SS__PLAN_NOSLICE, NULL, out, err);
}

static int
build(const ss_graph_t *g, const ss_plan_t *outer,
      const ss_tensor_t *input_shapes, const unsigned char *bind, int fuse,
      const ss_plan_opts_t *o, ss_plan_t **out, ss_err_t *err)
{
    ss_plan_t *p = NULL;
    unsigned char *decides = NULL;
    int rc = 0, n_decide = 0, walking = 0, threads_was = 0;
    /* oneDNN's packed weights are charged to g where they are allocated
     * (engine/dnnl/dnnl.c), for as long as this compile runs */
    ss_memacct_t *acct = ss__graph_acct(g);
    ss_memacct_t *was = ss_memacct_swap_current(acct);

    *out = NULL;
    if (acct == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a memory account");
        goto done;
    }
    if ((p = ss_calloc(1, sizeof(*p))) == NULL
        || (p->vals = ss_calloc((size_t)g->n_values + 1,
                                sizeof(ss_pval_t))) == NULL
        || (decides = ss_calloc((size_t)g->n_inputs + 1, 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a plan");
        goto done;
    }
    p->g = g;
    p->n_vals = g->n_values;
    p->max_bytes = o != NULL && o->max_plan_bytes > 0
                   ? (o->max_plan_bytes < BUDGET_CAP ? o->max_plan_bytes
                                                     : BUDGET_CAP)
                   : outer != NULL ? outer->max_bytes : ss_plan_default_budget();
    if (o != NULL) {
        p->max_out = o->max_output_bytes;
        p->out_rows = o->output_rows;
    }
    p->fuse = fuse & 1;
    p->taps = (fuse & SS__PLAN_TAPS) != 0 && g->n_taps > 0;
    for (int v = 0; v < g->n_values; v++) {
        ss_pval_t *pv = &p->vals[v];

        pv->alias = -1;
        pv->t.ndim = -1;
        if (g->values[v].constant != NULL) {
            pv->t = *g->values[v].constant;   /* data borrowed */
            pv->kind = SS_PV_CONST;
            (void)ss__tensor_bytes(&pv->t, &pv->bytes);
        } else if (outer != NULL && v < outer->n_vals
                   && outer->vals[ss__plan_root(outer, v)].kind
                      == SS_PV_CONST) {
            pv->t = outer->vals[v].t;   /* data borrowed from outer */
            pv->t.data = outer->vals[ss__plan_root(outer, v)].t.data;
            pv->kind = SS_PV_CONST;
            pv->bytes = outer->vals[v].bytes;
        }
    }
    n_decide = ss_graph_shape_inputs(g, decides);
    for (int i = 0; bind != NULL && i < g->n_inputs; i++)
        if (bind[i] && !decides[i]) {
            decides[i] = 1;
            n_decide++;
        }
    if ((rc = check_inputs(p, input_shapes, decides, err)) < 0)
        goto done;
    for (int i = 0; i < g->n_inputs; i++)
        p->vals[g->inputs[i]].from_req = 1;
    /* A compile on a job's thread is background work like its runs: it
     * may wait for serving between nodes and between passes (a no-op on
     * serving threads, common/pace.h). */
    walking = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        if ((rc = ss__plan_node(p, &g->nodes[i], err)) < 0)
            goto done;
        ss_pace_point();
    }
    walking = 0;
    p->mix_node = -1;
    if (!(fuse & SS__PLAN_SUB) && (rc = ss__plan_indep(p)) < 0) {
        rc = ss_err_set(err, rc, "no memory for the rows' analysis");
        goto done;
    }
    threads_was = ss__plan_threads_begin(p);
    for (size_t i = 0; p->fuse && i < sizeof(passes) / sizeof(passes[0]);
         i++) {
        if ((rc = passes[i](p, err)) < 0)
            goto done;
        ss_pace_point();
    }
    ss__plan_threads_end(threads_was);
    threads_was = 0;
    if ((rc = ss__plan_prune(p, err)) < 0 || (rc = ss__plan_bind_outputs(p, err)) < 0)
        goto done;
    ss__plan_chunk_bufs(p);
    if ((rc = ss__plan_arena(p, err)) < 0 || (rc = ss__plan_taps(p, err)) < 0)
        goto done;
    /* (a plan sliced whole has no steps: its slices guard themselves) */
    if ((rc = ss__plan_slice(p, input_shapes, fuse, err)) < 0)
        goto done;
    if (p->fuse && !(fuse & SS__PLAN_SUB) && guarded_steps(p)
        && float_input(p)) {
        if (pthread_mutex_init(&p->ref_lock, NULL) != 0) {
            rc = ss_err_set(err, SS_ENOMEM, "no mutex for a plan");
            goto done;
        }
        p->nan_guard = 1;
    }
    if (getenv("SS_ENGINE_DUMP") != NULL)
        ss__plan_dump(p);
    /* Constants that lie in a model file's mapping and were read while
     * compiling (transposed, converted, folded, hashed) leave the
     * resident set: the packed copies are what runs, and what a kernel
     * still reads from the graph faults back in (common/filemap.h). */
    for (int v = 0; v < g->n_values; v++) {
        const ss_tensor_t *c = g->values[v].constant;
        size_t n;

        if (c != NULL && ss__tensor_bytes(c, &n) == 0)
            ss_filemap_release(c->data, n);
    }
    charge(p, acct);
    *out = p;
    p = NULL;
done:
    ss__plan_threads_end(threads_was);
    ss_plan_free(p);
    (void)ss_memacct_swap_current(was);
    /* With inputs that decide shapes, a shape the model cannot take comes
     * from the caller's values (a Reshape to 5x7 of 12 elements): the
     * caller's error, not the model's, and the message says which values
     * took part. */
    if (walking && n_decide > 0 && (rc == SS_EINVAL || rc == SS_EBADMODEL))
        rc = wrap_values(g, decides, err);
    ss_free(decides);
    if (rc < 0)
        ss__err_scrub(err);
    return rc;
}

void
ss_plan_free(ss_plan_t *p)
{
    if (p == NULL)
        return;
    for (int s = 0; s < p->n_steps; s++)
        ss__plan_step_clear(&p->steps[s]);
    ss_free(p->steps);
    if (p->vals != NULL)
        for (int v = 0; v < p->n_vals; v++)
            if (p->vals[v].owned)
                ss_free(p->vals[v].t.data);
    ss_free(p->vals);
    ss_free(p->out_info);
    ss_free(p->tap_after);
    ss_plan_free(p->slice);
    ss_plan_free(p->slice_tail);
    if (p->nan_guard) {
        ss_plan_free(p->ref);
        pthread_mutex_destroy(&p->ref_lock);
    }
    ss_memacct_credit(p->acct, p->charged);
    ss_memacct_unref(p->acct);
    ss_free(p);
}

const ss_io_info_t *
ss_plan_output(const ss_plan_t *p, int i)
{
    return i >= 0 && i < p->g->n_outputs ? &p->out_info[i] : NULL;
}
