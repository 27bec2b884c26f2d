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
 * SS_SLICE_BYTES per thread; S is the largest power of two whose
 * slice's still fits it (1 when one sample's does not).
 * SS_ENGINE_BATCH_SLICE=S (for tests and measurements; 0 = never)
 * replaces the rule.
 *
 * Prefix slices: a net's activations shrink layer by layer, and once
 * the whole batch's fit the budget, slices only lose -- each reads the
 * layer's weights again and gives the kernels fewer rows.  MobileNetV2
 * at batch 8, one thread, per image: its 112x112 and 56x56 layers cost
 * 1.55 ms in slices of 1 and 1.93 whole, its 7x7 layers and classifier
 * 1.21 in slices and 0.84 whole (the 1280x1000 Gemm 0.15 against 0.03).
 * So the slices run only as far as the first step k of the plan for N
 * after which every value written, and the one value c that the steps
 * up to k write and those after read, fit the budget for the whole
 * batch: each slice's steps end at the last one writing c, which they
 * write as their rows of c in the plan for N's arena (so c must be
 * stored alike in both: same layout, batch outermost), and the plan for
 * N then runs its steps after k on the whole batch.  No such k (a value
 * crossing the cut beside c, a graph output written before it): the
 * slices run the whole graph, and the plan for N keeps its value shapes
 * (ss_plan_output, the inputs' check) and drops its steps.  Either way
 * each step's packed weights are held once.  Measured (MobileNetV2 b8,
 * one thread, CPU medians interleaved with ORT, load 12-14): whole-graph
 * slices of 2 38.2 ms, prefix slices of 2 37.0, of 1 34.9-36.0 (cut
 * after features.14's depthwise conv; at 2 threads after features.7's);
 * the 28x28 CNN at batch 32 and 256 the same either way.
 * SS_ENGINE_SLICE_PREFIX=0 keeps the slices whole.
 *
 * Whether the graph computes sample by sample is the row-independence
 * analysis' (plan_indep.c, p->mix_node), the same that decides whether
 * the daemon batches requests together; slices also want every value computed from
 * the samples to hold them first (p->samples_first: the nets the sizes
 * above were measured on), and a Reshape to (B, ...) whose B is read
 * from Shape(x)[0] keeps that (each slice's plan folds its own Shape).
 *
 * Parallel slices: a plan compiled for T > 1 OpenMP threads whose graph
 * computes sample by sample runs as slices of at most SS_PAR_ROWS rows
 * (fewer when n / T is less), each compiled for one thread (and free to
 * slice itself as above), run side by side by the calling thread and idle
 * helper threads (crew.c), each slice in a context of its own.  An
 * OpenMP team per primitive waits at every primitive's barrier for its
 * slowest member: the 8x8 CNN at batch 32 ran slower on 2 threads than
 * on 1 (0.29 against 0.22 ms, idle machine), and with other processes on
 * the cores 100x slower (27-200 ms a run at load 15-30); slices hand out
 * work once a run and wait only for slices already begun
 * (docs/threads.md, bench/README.md).  SS_ENGINE_PAR_SLICES=0 turns
 * them off, SS_ENGINE_PAR_ROWS=R sets the rows.
 *
 * THREADS: runs inside ss_plan_new; the slices are plans like any other
 * (immutable once compiled); parallel slices run on several threads at
 * once, each in its own context.
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
/* The most rows of a parallel slice: a helper the scheduler stops holds
 * one slice's work, not half the batch's, and the 8x8 CNN costs the same
 * per sample from 8 to 32 rows (6.7-7.5 us, one thread, load 16) and more
 * at 256 (7.8-9.0). */
#define SS_PAR_ROWS 16
/* Each parallel slice reads every weight: resnet18's 46 MB in 2 slices of
 * 4 at batch 8 (2 threads, load 25, interleaved with ORT) took 572 ms
 * against 1208 as OpenMP teams (ORT 991); vit_b_16's 346 MB and
 * convnext_tiny's 114 MB were not measured and keep their teams. */
#define SS_PAR_WEIGHTS ((size_t)64 << 20)

/* What a step's activations may take: SS_SLICE_BYTES per thread (each
 * thread's share of a step is in its own core's L2). */
static size_t
slice_fit(void)
{
    return SS_SLICE_BYTES * (size_t)(omp_get_max_threads() > 1
                                     ? omp_get_max_threads() : 1);
}

/* The bytes of p's graph's constants (its weights). */
static size_t
weight_bytes(const ss_plan_t *p)
{
    size_t w = 0, b;

    for (int v = 0; v < p->g->n_values; v++)
        if (p->g->values[v].constant != NULL
            && ss__tensor_bytes(p->g->values[v].constant, &b) == 0)
            w += b;
    return w;
}

/* S for a plan of n rows: the environment's, or 0 (none) when the
 * weights pass SS_SLICE_WEIGHTS or the whole batch's largest activation
 * fits SS_SLICE_BYTES per thread, else the largest power of two from 2 whose
 * slice's fits it. */
static int64_t
slice_rows(const ss_plan_t *p, int64_t n)
{
    const char *e = getenv("SS_ENGINE_BATCH_SLICE");
    size_t big = 0, fit;
    int64_t s;

    if (e != NULL && e[0] != '\0') {
        s = strtoll(e, NULL, 10);
        return s > 0 && s < n ? s : 0;
    }
    for (int v = 0; v < p->n_vals; v++)
        if (p->vals[v].kind == SS_PV_ARENA && p->vals[v].bytes > big)
            big = p->vals[v].bytes;
    fit = slice_fit();
    if (weight_bytes(p) > SS_SLICE_WEIGHTS || big <= fit)
        return 0;
    big /= (size_t)n;   /* one sample's */
    for (s = 1; s * 2 < n && (size_t)(s * 2) * big <= fit; s *= 2)
        ;
    return s < n ? s : 0;
}

/* The most rows of a parallel slice: SS_PAR_ROWS, or the environment's
 * SS_ENGINE_PAR_ROWS. */
static int64_t
par_rows(void)
{
    const char *e = getenv("SS_ENGINE_PAR_ROWS");
    int64_t r = e != NULL && e[0] != '\0' ? strtoll(e, NULL, 10) : 0;

    return r > 0 ? r : SS_PAR_ROWS;
}

/* How many threads the parallel slices of a plan of n rows compiled for
 * the calling thread's OpenMP count are for: that count (at most n), or
 * 0 (no parallel slices) for one thread, a small plan (run on one:
 * plan_threads.c), weights past SS_PAR_WEIGHTS (SS_ENGINE_PAR_SLICES=1
 * slices anyway) or
 * SS_ENGINE_PAR_SLICES=0. */
static int
par_slices(const ss_plan_t *p, int64_t n)
{
    const char *e = getenv("SS_ENGINE_PAR_SLICES");
    int t = omp_get_max_threads();

    if ((e != NULL && strcmp(e, "0") == 0) || t < 2 || p->one_thread
        || (weight_bytes(p) > SS_PAR_WEIGHTS
            && (e == NULL || strcmp(e, "1") != 0)))
        return 0;
    return n < t ? (int)n : t;
}

/* The first and last step of p writing each value's root (n_steps:
 * none, -1), in first[] and last[] of p->n_vals; -1 when p has a step
 * the prefix cut does not follow (control flow, experts). */
static int
writers(const ss_plan_t *p, int *first, int *last)
{
    for (int v = 0; v < p->n_vals; v++) {
        first[v] = p->n_steps;
        last[v] = -1;
    }
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        if (st->kind == SS_STEP_CTRL || st->kind == SS_STEP_MOE)
            return -1;
        for (int o = 0; st->kind != SS_STEP_COPY && o < st->n_out; o++) {
            int r;

            if (st->out[o] < 0)
                continue;
            r = ss__plan_root(p, st->out[o]);
            if (first[r] > s)
                first[r] = s;
            last[r] = s;
        }
    }
    return 0;
}

/* The one value c whose bytes the steps of p up to k write and the steps
 * after k read -- or -1: none or more than one, a value written on both
 * sides, a graph input read after k, a graph output written up to k. */
static int
cut_after(const ss_plan_t *p, int k, const int *first, const int *last)
{
    int c = -1;

    for (int v = 0; v < p->n_vals; v++)
        if (first[v] <= k && last[v] > k)
            return -1;
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *st = &p->steps[s];

        if (s <= k) {
            if (st->kind == SS_STEP_COPY)
                return -1;
            for (int o = 0; o < st->n_out; o++)
                if (st->out[o] >= 0 && p->vals[ss__plan_root(p, st->out[o])]
                                       .kind == SS_PV_OUTPUT)
                    return -1;
            continue;
        }
        for (int i = 0; i < st->n_in; i++) {
            int r = st->in[i] >= 0 ? ss__plan_root(p, st->in[i]) : -1;

            if (r < 0 || p->vals[r].kind == SS_PV_CONST)
                continue;
            if (p->vals[r].kind == SS_PV_INPUT)
                return -1;
            if (first[r] > k)
                continue;
            if (p->vals[r].kind != SS_PV_ARENA || (c >= 0 && c != r))
                return -1;
            c = r;
        }
    }
    return c;
}

/* Where the plan for n rows (p) takes over from the slices: the first
 * step k after which every value written, and the one value c crossing
 * the cut, fit the activation budget for the whole batch.  Returns c and
 * sets *k, or -1. */
static int
find_cut(const ss_plan_t *p, int *k)
{
    size_t fit = slice_fit(), *after;
    int *first = ss_malloc((size_t)p->n_vals * 2 * sizeof(int));
    int c = -1;

    after = ss_malloc(((size_t)p->n_steps + 1) * sizeof(*after));
    if (first == NULL || after == NULL || writers(p, first,
                                                  first + p->n_vals) < 0)
        goto done;
    /* after[s]: the largest value steps s.. write */
    after[p->n_steps] = 0;
    for (int s = p->n_steps - 1; s >= 0; s--) {
        const ss_step_t *st = &p->steps[s];

        after[s] = after[s + 1];
        for (int o = 0; st->kind != SS_STEP_COPY && o < st->n_out; o++)
            if (st->out[o] >= 0) {
                const ss_pval_t *r = &p->vals[ss__plan_root(p, st->out[o])];

                if (r->kind == SS_PV_ARENA && r->bytes > after[s])
                    after[s] = r->bytes;
            }
    }
    for (int s = 0; s + 1 < p->n_steps && c < 0; s++) {
        if (after[s + 1] > fit)
            continue;
        c = cut_after(p, s, first, first + p->n_vals);
        if (c >= 0 && (c >= p->g->n_values || p->vals[c].bytes > fit
                       || p->vals[c].one_chunk))
            c = -1;
        *k = s;
    }
done:
    ss_free(first);
    ss_free(after);
    return c;
}

/* The last step of q (the plan for s of p's n rows) writing c, when q
 * stores c as p does and its steps up to there write no graph output;
 * else -1. */
static int
cut_slice(const ss_plan_t *p, const ss_plan_t *q, int c, int64_t n,
          int64_t s)
{
    int k = -1;

    if (q == NULL || c >= q->n_vals || ss__plan_root(q, c) != c
        || q->vals[c].kind != SS_PV_ARENA || q->vals[c].one_chunk
        || q->vals[c].layout != p->vals[c].layout
        || q->vals[c].bytes * (size_t)n != p->vals[c].bytes * (size_t)s
        || q->one_thread != p->one_thread)
        return -1;
    for (int i = 0; i < q->n_steps; i++) {
        const ss_step_t *st = &q->steps[i];

        if (st->kind == SS_STEP_CTRL || st->kind == SS_STEP_MOE)
            return -1;
        for (int o = 0; st->kind != SS_STEP_COPY && o < st->n_out; o++)
            if (st->out[o] >= 0 && ss__plan_root(q, st->out[o]) == c)
                k = i;
    }
    for (int i = 0; i <= k; i++) {
        const ss_step_t *st = &q->steps[i];

        if (st->kind == SS_STEP_COPY)
            return -1;
        for (int o = 0; o < st->n_out; o++)
            if (st->out[o] >= 0
                && q->vals[ss__plan_root(q, st->out[o])].kind == SS_PV_OUTPUT)
                return -1;
    }
    return k;
}

/* Keeps steps [from, to) of p, first. */
static void
keep_steps(ss_plan_t *p, int from, int to)
{
    for (int s = 0; s < p->n_steps; s++)
        if (s < from || s >= to)
            ss__plan_step_clear(&p->steps[s]);
    memmove(p->steps, p->steps + from, (size_t)(to - from)
                                        * sizeof(*p->steps));
    p->n_steps = to - from;
}

/* The plan for n keeps its shapes (ss_plan_output, the inputs' check),
 * not its steps: its slices run the whole graph. */
static void
slice_whole(ss_plan_t *p)
{
    keep_steps(p, 0, 0);
    p->arena_bytes = 0;
    p->scratch_bytes = 0;
}

/* p's graph compiled for rows of its batch (fuse: the build's flags). */
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
    rc = ss__plan_build(g, sh, fuse, p->max_bytes, out, err);
    ss_free(sh);
    return rc;
}

int
ss__plan_slice(ss_plan_t *p, const ss_tensor_t *shapes, int fuse,
               ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    ss_plan_t *q = NULL, *t = NULL;
    const char *e;
    int64_t n, s;
    int rc = 0, c, k = -1, kq = -1, kt = -1, par;

    if (!p->fuse || p->taps || (fuse & SS__PLAN_NOSLICE) || g->n_inputs < 1
        || ss_graph_shape_inputs(g, NULL) > 0)
        return 0;
    n = shapes[0].ndim >= 1 ? shapes[0].dims[0] : 0;
    for (int i = 0; i < g->n_inputs; i++)
        if (shapes[i].ndim < 1 || shapes[i].dims[0] != n)
            return 0;
    if (n < 2 || p->mix_node >= 0 || !p->samples_first)
        return 0;
    if ((par = par_slices(p, n)) > 1) {
        /* each slice one thread's: compiled for one (and free to slice
         * itself for its cache), the tail for what the others leave */
        int was = omp_get_max_threads();

        s = (n + par - 1) / par;
        if (s > par_rows())
            s = par_rows();
        par = (int)((n + s - 1) / s);
        omp_set_num_threads(1);
        if ((rc = build_rows(p, shapes, s, fuse, &q, err)) == 0 && n % s != 0)
            rc = build_rows(p, shapes, n % s, fuse, &t, err);
        omp_set_num_threads(was);
        if (rc < 0)
            goto skip;
        p->slice_par = par;
        slice_whole(p);
        goto keep;
    }
    if ((s = slice_rows(p, n)) <= 0)
        return 0;
    if ((rc = build_rows(p, shapes, s, fuse | SS__PLAN_NOSLICE, &q, err)) < 0)
        goto skip;
    if (n % s != 0
        && (rc = build_rows(p, shapes, n % s, fuse | SS__PLAN_NOSLICE, &t,
                            err)) < 0)
        goto skip;
    e = getenv("SS_ENGINE_SLICE_PREFIX");
    if ((e == NULL || strcmp(e, "0") != 0) && (c = find_cut(p, &k)) >= 0
        && (kq = cut_slice(p, q, c, n, s)) >= 0
        && (t == NULL || (kt = cut_slice(p, t, c, n, n % s)) >= 0)) {
        /* the slices run up to c, the plan for n after it */
        keep_steps(q, 0, kq + 1);
        if (t != NULL)
            keep_steps(t, 0, kt + 1);
        keep_steps(p, k + 1, p->n_steps);
        p->slice_prefix = 1;
        p->slice_cut = c;
    } else {
        slice_whole(p);
    }
keep:
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

const ss_plan_t *
ss__plan_slice_at(const ss_plan_t *p, int64_t r0, const ss_tensor_t *inputs,
                  const ss_tensor_t *outputs, ss_tensor_t *io)
{
    const ss_graph_t *g = p->g;
    int64_t n = p->vals[g->inputs[0]].t.dims[0];
    int64_t rows = n - r0 < p->slice_rows ? n - r0 : p->slice_rows;

    for (int i = 0; i < g->n_inputs; i++)
        rows_of(&inputs[i], n, r0, rows, &io[i]);
    for (int i = 0; i < g->n_outputs; i++)
        rows_of(&outputs[i], n, r0, rows, &io[g->n_inputs + i]);
    return rows == p->slice_rows ? p->slice : p->slice_tail;
}

struct par_run {
    const ss_plan_t *p;
    const ss_tensor_t *inputs;
    const ss_tensor_t *outputs;
    ss_tensor_t *io;            /* n_inputs + n_outputs per slice */
    ss_exec_ctx_t **cx;
    ss_err_t *errs;
};

static void
par_one(void *arg, int i)
{
    struct par_run *r = arg;
    const ss_graph_t *g = r->p->g;
    ss_tensor_t *x = r->io + (size_t)i * (size_t)(g->n_inputs
                                                  + g->n_outputs);
    const ss_plan_t *q = ss__plan_slice_at(r->p, i * r->p->slice_rows,
                                           r->inputs, r->outputs, x);

    r->errs[i].code = ss_plan_run(q, r->cx[i], x, x + g->n_inputs,
                                  &r->errs[i]);
}

/* Parallel slices: slice i on rows i * slice_rows.. in a context of its
 * own, on the calling thread and on idle helpers (crew.c), up to
 * the calling thread's OpenMP count of threads.  The slices' primitives
 * were made for one thread, and the calling thread's count is 1 while
 * it runs them (a primitive asking for the current count runs inline). */
static int
run_par(const ss_plan_t *p, ss_exec_ctx_t *ctx, const ss_tensor_t *inputs,
        ss_tensor_t *outputs, ss_tensor_t *io, ss_err_t *err)
{
    int np = p->slice_par, was = omp_get_max_threads();
    struct par_run r = {.p = p, .inputs = inputs, .outputs = outputs,
                        .io = io};
    int rc;

    r.cx = ss_malloc((size_t)np * sizeof(*r.cx));
    r.errs = ss_calloc((size_t)np, sizeof(*r.errs));
    if (r.cx == NULL || r.errs == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a run");
        goto done;
    }
    if ((rc = ss__exec_ctx_parts(ctx, np, r.cx, err)) < 0)
        goto done;
    omp_set_num_threads(1);
    ss__par_run(np, was, par_one, &r);
    omp_set_num_threads(was);
    for (int i = 0; i < np && rc == 0; i++)
        if (r.errs[i].code < 0) {
            if (err != NULL)
                *err = r.errs[i];
            rc = r.errs[i].code;
        }
done:
    ss_free(r.cx);
    ss_free(r.errs);
    return rc;
}

int
ss__plan_run_sliced(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                    const ss_tensor_t *inputs, ss_tensor_t *outputs,
                    ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    int64_t n = p->vals[g->inputs[0]].t.dims[0];
    size_t nio = (size_t)g->n_inputs + g->n_outputs;
    ss_tensor_t *io = ss_malloc((nio * (size_t)(p->slice_par > 1
                                                ? p->slice_par : 1) + 1)
                                * sizeof(*io));
    int rc = 0;

    if (io == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a run");
    if (p->slice_par > 1) {
        rc = run_par(p, ctx, inputs, outputs, io, err);
        goto done;
    }
    for (int64_t r0 = 0; r0 < n && rc == 0; r0 += p->slice_rows) {
        const ss_plan_t *q = ss__plan_slice_at(p, r0, inputs, outputs, io);

        rc = ss_plan_run(q, ctx, io, io + g->n_inputs, err);
    }
done:
    ss_free(io);
    return rc;
}
