/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Batch slices: a plan for a large batch that runs as a plan for a few
 * samples, slice after slice.
 *
 * DESIGN: a convolution net's activations grow with the batch and its
 * weights do not.  At batch 256 the 28x28 CNN's first conv writes 26 MB
 * that its pool reads back from memory; at batch 16 both fit in L2, and
 * a sample costs 45-50 us of CPU against 60-64 at batch 256 (measured
 * here, one thread, oneDNN's own kernels either way).  So a plan whose
 * graph computes every sample on its own (no op mixes samples: convs,
 * pools, element-wise ops, BatchNormalization in inference, Flatten,
 * Gemm/MatMul by constant weights, Softmax over a later axis, Reshape
 * and Transpose that keep the batch first) and whose largest activation
 * of one sample is small enough runs as `slice`, the same graph compiled
 * for S samples (and `slice_tail` for the N % S left), on consecutive
 * rows of every input and output.  Each slice reads all the weights
 * again, so only nets with few of them (SS_SLICE_WEIGHTS) are sliced,
 * and only when the whole batch's largest activation passes
 * SS_SLICE_BYTES per thread; S is the largest power of two (from 2)
 * whose slice's still fits it.  MobileNetV2 at batch 8 (4.8 MB a sample
 * at 112x112) runs in slices of 2: 4-13% less CPU on one thread than
 * the whole batch, the more the busier the machine (slices of 1 or 4
 * the same).  SS_ENGINE_BATCH_SLICE=S (for tests and measurements; 0 =
 * never) replaces the rule.  The plan for N keeps its value shapes
 * (ss_plan_output, the inputs' check) and drops its steps: the slices'
 * packed weights are the ones held.
 *
 * The test is on the plan compiled for N and the one for S, node by
 * node: each non-constant value a node reads or writes has N rows in the
 * first and S in the second (a value that mixes samples -- a reduction
 * over the batch, a Reshape that moves it -- has neither), and the op is
 * one of those above with the batch axis untouched by its attributes.
 *
 * THREADS: runs inside ss_plan_new; the slices are plans like any other
 * (immutable once compiled).
 */

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

/* One slice's largest activation per OpenMP thread (the count the plan
 * is compiled for): about L2's size on the machines here, where the
 * per-sample cost of the 28x28 CNN is lowest (batch 8-16, one thread).
 * At 2 threads (passive wait, load 10) its batch 32 in two slices of 16
 * took twice the wall time of the whole batch: each step's team waits
 * at twice as many barriers, and two cores hold twice the L2. */
#define SS_SLICE_BYTES ((size_t)2 << 20)
/* Each slice reads every weight again: past L3's share (16 MB) they come
 * from memory each time.  resnet18's 46 MB in slices of 1, 2 or 4 at
 * batch 8 cost 5-12% more CPU than the whole batch; mobilenet_v2's 14 MB
 * gained 12-14% (one thread, load 10). */
#define SS_SLICE_WEIGHTS ((size_t)16 << 20)

/* Ops that treat each row along axis 0 on its own when every tensor
 * they read and write (constants aside) has the batch first. */
static const char *const per_sample_ops[] = {
    "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
    "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus", "Erf", "Gelu",
    "Identity", "Dropout", "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow",
    "Sqrt", "Exp", "Neg", "Abs", "Flatten", "Reshape", "Gemm", "MatMul",
    "Softmax", "LogSoftmax", "Transpose", "Concat",
};

static int
is_const(const ss_plan_t *p, int v)
{
    return v < 0 || p->vals[v].kind == SS_PV_CONST;
}

/* The attributes of node n leave axis 0 alone (the op is on the list). */
static int
batch_kept(const ss_plan_t *p, const ss_node_t *n)
{
    const char *op = n->op_type;
    const int64_t *perm;
    int rank = n->n_outputs > 0 && n->outputs[0] >= 0
               ? p->vals[n->outputs[0]].t.ndim : 0;
    size_t i;

    for (i = 0; i < sizeof(per_sample_ops) / sizeof(per_sample_ops[0]); i++)
        if (strcmp(op, per_sample_ops[i]) == 0)
            break;
    if (i == sizeof(per_sample_ops) / sizeof(per_sample_ops[0])
        || n->domain[0] != '\0')
        return 0;
    if (strcmp(op, "BatchNormalization") == 0)
        return ss__attr_int(n, "training_mode", 0) == 0;
    if (strcmp(op, "Dropout") == 0)
        return n->n_inputs < 3 || is_const(p, n->inputs[2]);
    if (strcmp(op, "Flatten") == 0)
        return ss__attr_int(n, "axis", 1) != 0;
    if (strcmp(op, "Gemm") == 0)
        return ss__attr_int(n, "transA", 0) == 0 && n->n_inputs >= 2
               && is_const(p, n->inputs[1]);
    if (strcmp(op, "MatMul") == 0)
        return n->n_inputs == 2 && is_const(p, n->inputs[1]);
    if (strcmp(op, "Softmax") == 0 || strcmp(op, "LogSoftmax") == 0
        || strcmp(op, "Concat") == 0) {
        int64_t ax = ss__attr_int(n, "axis", op[0] == 'C' ? 0 : -1);

        return ax != 0 && ax != -rank;
    }
    if (strcmp(op, "Transpose") == 0)
        return ss__attr_ints(n, "perm", &perm) == rank && rank > 0
               && perm[0] == 0;
    return 1;
}

/* Every node of g computes sample by sample: compiled for n rows in p
 * and s in q. */
static int
sliceable(const ss_plan_t *p, const ss_plan_t *q, int64_t n, int64_t s)
{
    const ss_graph_t *g = p->g;

    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *nd = &g->nodes[i];
        int live = 0;

        for (int k = 0; k < nd->n_outputs; k++)
            live |= !is_const(p, nd->outputs[k]);
        /* a batch size computed with is the slice's in the slices */
        if (strcmp(nd->op_type, "Shape") == 0
            || strcmp(nd->op_type, "Size") == 0)
            return 0;
        if (!live)
            continue;   /* folded at compile time */
        if (!batch_kept(p, nd))
            return 0;
        for (int k = 0; k < nd->n_inputs + nd->n_outputs; k++) {
            int v = k < nd->n_inputs ? nd->inputs[k]
                                     : nd->outputs[k - nd->n_inputs];

            if (is_const(p, v))
                continue;
            if (p->vals[v].t.ndim < 1 || q->vals[v].t.ndim < 1
                || p->vals[v].t.dims[0] != n || q->vals[v].t.dims[0] != s)
                return 0;
        }
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i];

        if (p->vals[v].t.ndim < 1 || p->vals[v].t.dims[0] != n)
            return 0;
    }
    return 1;
}

/* S for a plan of n rows: the environment's, or 0 (none) when the
 * weights pass SS_SLICE_WEIGHTS or the whole batch's largest activation
 * fits SS_SLICE_BYTES per thread, else the largest power of two from 2 whose
 * slice's fits it. */
static int64_t
slice_rows(const ss_plan_t *p, int64_t n)
{
    const char *e = getenv("SS_ENGINE_BATCH_SLICE");
    size_t big = 0, w = 0, b, fit;
    int64_t s;

    if (e != NULL && e[0] != '\0') {
        s = strtoll(e, NULL, 10);
        return s > 0 && s < n ? s : 0;
    }
    for (int v = 0; v < p->g->n_values; v++)
        if (p->g->values[v].constant != NULL
            && ss__tensor_bytes(p->g->values[v].constant, &b) == 0)
            w += b;
    for (int v = 0; v < p->n_vals; v++)
        if (p->vals[v].kind == SS_PV_ARENA && p->vals[v].bytes > big)
            big = p->vals[v].bytes;
    /* each thread's share of a step is in its own core's L2 */
    fit = SS_SLICE_BYTES * (size_t)(omp_get_max_threads() > 1
                                    ? omp_get_max_threads() : 1);
    if (w > SS_SLICE_WEIGHTS || big <= fit)
        return 0;
    big /= (size_t)n;   /* one sample's */
    for (s = 2; s * 2 < n && (size_t)(s * 2) * big <= fit; s *= 2)
        ;
    return s < n ? s : 0;
}

static int
build_rows(const ss_plan_t *p, const ss_tensor_t *shapes, int64_t rows,
           int fuse, ss_plan_t **out, ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    ss_tensor_t *sh = ss_malloc(((size_t)g->n_inputs + 1) * sizeof(*sh));
    int rc;

    if (sh == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a batch slice");
    memcpy(sh, shapes, (size_t)g->n_inputs * sizeof(*sh));
    for (int i = 0; i < g->n_inputs; i++)
        sh[i].dims[0] = rows;
    rc = ss__plan_build(g, sh, fuse | SS__PLAN_NOSLICE, out, err);
    ss_free(sh);
    return rc;
}

int
ss__plan_slice(ss_plan_t *p, const ss_tensor_t *shapes, int fuse,
               ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    ss_plan_t *q = NULL, *t = NULL;
    int64_t n, s;
    int rc = 0;

    if (!p->fuse || p->taps || (fuse & SS__PLAN_NOSLICE) || g->n_inputs < 1
        || ss_graph_shape_inputs(g, NULL) > 0)
        return 0;
    n = shapes[0].ndim >= 1 ? shapes[0].dims[0] : 0;
    for (int i = 0; i < g->n_inputs; i++)
        if (shapes[i].ndim < 1 || shapes[i].dims[0] != n)
            return 0;
    if (n < 2 || (s = slice_rows(p, n)) <= 0)
        return 0;
    if ((rc = build_rows(p, shapes, s, fuse, &q, err)) < 0)
        goto skip;
    if (!sliceable(p, q, n, s))
        goto done;
    if (n % s != 0 && (rc = build_rows(p, shapes, n % s, fuse, &t, err)) < 0)
        goto skip;
    /* the plan for n keeps its shapes, not its steps */
    for (int k = 0; k < p->n_steps; k++)
        ss__plan_step_clear(&p->steps[k]);
    p->n_steps = 0;
    p->arena_bytes = 0;
    p->scratch_bytes = 0;
    p->slice = q;
    p->slice_tail = t;
    p->slice_rows = s;
    q = t = NULL;
    goto done;
skip:
    /* a slice that does not compile leaves the plan whole */
    if (rc != SS_ENOMEM) {
        ss_err_clear(err);
        rc = 0;
    }
done:
    ss_plan_free(q);
    ss_plan_free(t);
    return rc;
}

/* The rows r0 .. r0 + rows - 1 of x (rows of n). */
static void
rows_of(const ss_tensor_t *x, int64_t n, int64_t r0, int64_t rows,
        ss_tensor_t *out)
{
    size_t bytes = 0;

    *out = *x;
    (void)ss__tensor_bytes(x, &bytes);
    out->dims[0] = rows;
    out->data = (char *)x->data + bytes / (size_t)n * (size_t)r0;
}

int
ss__plan_run_sliced(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                    const ss_tensor_t *inputs, ss_tensor_t *outputs,
                    ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    int64_t n = p->vals[g->inputs[0]].t.dims[0];
    ss_tensor_t *io = ss_malloc(((size_t)g->n_inputs + g->n_outputs + 1)
                                * sizeof(*io));
    int rc = 0;

    if (io == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a run");
    for (int64_t r0 = 0; r0 < n && rc == 0; r0 += p->slice_rows) {
        int64_t rows = n - r0 < p->slice_rows ? n - r0 : p->slice_rows;
        const ss_plan_t *q = rows == p->slice_rows ? p->slice
                                                   : p->slice_tail;

        for (int i = 0; i < g->n_inputs; i++)
            rows_of(&inputs[i], n, r0, rows, &io[i]);
        for (int i = 0; i < g->n_outputs; i++)
            rows_of(&outputs[i], n, r0, rows, &io[g->n_inputs + i]);
        rc = ss_plan_run(q, ctx, io, io + g->n_inputs, err);
    }
    ss_free(io);
    return rc;
}
