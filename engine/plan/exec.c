/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Running a plan: execution contexts and the step loop.
 *
 * DESIGN: a context (one per executor thread) owns a oneDNN stream, the
 * arena the plan's intermediates live in, the scratch oneDNN primitives
 * need, and a table of tensor views; all are grown on demand and
 * reused, so a warm run allocates nothing.  The arena and scratch give
 * back what an outlier left (common/workbuf.h), and so does a control-flow
 * step's buffer of loop-carried values: every SS_WORKBUF_WINDOW
 * runs, a buffer over twice the largest need of the last one or two
 * windows shrinks to that need, and the heap is trimmed, so one request
 * of 10x the usual rows does not leave its executor holding 10x the
 * memory (a control-flow step's context is rolled with its parent's,
 * never inside a run).
 * A run resolves every plan value to a pointer (caller's input or output
 * buffer, a constant, or arena + offset; views take their root's
 * pointer), then runs the steps in order.
 *
 * THREADS: a context belongs to one thread at a time; plans are shared
 * read-only.  ss_plan_run is [worker].
 */

#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/workbuf.h"
#include "engine/plan/internal.h"

struct ss_exec_ctx {
    int threads;
    ss_dnn_stream_t *stream;
    ss_workbuf_t arena;
    ss_workbuf_t scratch;
    int runs;           /* top-level runs in this window */
    int busy;           /* inside a run: nested runs do not roll */
    ss_tensor_t *tab;
    int tab_cap;
    const ss_tensor_t **in;
    ss_tensor_t *out;
    const void **dnn_in;
    int io_cap;
    /* Control flow (plan_ctrl.c): the context a CTRL step runs its
     * subgraphs' plans in (made at the first such step, one per depth of
     * nesting), and the step's own buffer (loop-carried values). */
    struct ss_exec_ctx *sub;
    ss_workbuf_t cbuf;
    /* Parallel slices (plan_slice.c): a context per slice, rolled with
     * this one (never inside a run). */
    struct ss_exec_ctx **part;
    int n_part;
};

int
ss_exec_ctx_new(int threads, ss_exec_ctx_t **out, ss_err_t *err)
{
    ss_exec_ctx_t *c;
    int rc = 0;

    *out = NULL;
    if ((c = ss_calloc(1, sizeof(*c))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an execution "
                          "context");
    c->threads = threads;
    if ((rc = ss_dnn_stream_new(threads, &c->stream, err)) < 0) {
        ss_exec_ctx_free(c);
        return rc;
    }
    /* oneDNN fixes a primitive's work split at creation from the calling
     * thread's OpenMP thread count: plans compiled on this thread from now
     * on are tuned for the context's threads (measured: a batch-32 MLP
     * plan compiled for 2 threads and run on 1 costs 2.5x the CPU). */
    if (threads > 0)
        omp_set_num_threads(threads);
    *out = c;
    return 0;
}

void
ss_exec_ctx_free(ss_exec_ctx_t *c)
{
    if (c == NULL)
        return;
    ss_dnn_stream_free(c->stream);
    ss_workbuf_free(&c->arena);
    ss_workbuf_free(&c->scratch);
    ss_free(c->tab);
    ss_free(c->in);
    ss_free(c->out);
    ss_free(c->dnn_in);
    ss_exec_ctx_free(c->sub);
    ss_workbuf_free(&c->cbuf);
    for (int i = 0; i < c->n_part; i++)
        ss_exec_ctx_free(c->part[i]);
    ss_free(c->part);
    ss_free(c);
}

int
ss__exec_ctx_parts(ss_exec_ctx_t *c, int n, ss_exec_ctx_t **out,
                   ss_err_t *err)
{
    int rc;

    if (n > c->n_part) {
        ss_exec_ctx_t **a = ss_realloc(c->part, (size_t)n * sizeof(*a));

        if (a == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a run");
        c->part = a;
        for (; c->n_part < n; c->n_part++) {
            /* threads 0: its stream leaves OpenMP's count be (one, on
             * the threads that run slices) */
            if ((rc = ss_exec_ctx_new(0, &a[c->n_part], err)) < 0)
                return rc;
            a[c->n_part]->busy = 1;     /* rolled by c, not by itself */
        }
    }
    memcpy(out, c->part, (size_t)n * sizeof(*out));
    return 0;
}

/* Where a prefix-sliced plan's slices keep their arena: after p's. */
static size_t
slice_arena_at(const ss_plan_t *p)
{
    return (p->arena_bytes + 63) & ~(size_t)63;
}

/* The most any of p, and its prefix slices (internal.h: slice_prefix),
 * need of each of a context's buffers. */
static void
needs(const ss_plan_t *p, size_t *arena, size_t *scratch, int *n_vals,
      int *max_io)
{
    const ss_plan_t *sl[2] = { p->slice, p->slice_tail };

    *arena = p->arena_bytes;
    *scratch = p->scratch_bytes;
    *n_vals = p->n_vals;
    *max_io = p->max_io;
    for (int i = 0; p->slice_prefix && i < 2; i++) {
        if (sl[i] == NULL)
            continue;
        if (slice_arena_at(p) + sl[i]->arena_bytes > *arena)
            *arena = slice_arena_at(p) + sl[i]->arena_bytes;
        if (sl[i]->scratch_bytes > *scratch)
            *scratch = sl[i]->scratch_bytes;
        if (sl[i]->n_vals > *n_vals)
            *n_vals = sl[i]->n_vals;
        if (sl[i]->max_io > *max_io)
            *max_io = sl[i]->max_io;
    }
}

static int
reserve(ss_exec_ctx_t *c, const ss_plan_t *p, ss_err_t *err)
{
    size_t arena, scratch;
    int n_vals, max_io;

    needs(p, &arena, &scratch, &n_vals, &max_io);
    if (ss_workbuf_reserve(&c->arena, arena) < 0
        || ss_workbuf_reserve(&c->scratch, scratch) < 0)
        return ss_err_set(err, SS_ENOMEM, "no memory for a %zu-byte arena",
                          arena + scratch);
    if (n_vals > c->tab_cap) {
        ss_tensor_t *t = ss_malloc((size_t)n_vals * sizeof(*t));

        if (t == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a run");
        ss_free(c->tab);
        c->tab = t;
        c->tab_cap = n_vals;
    }
    if (max_io + 1 > c->io_cap) {
        int n = max_io + 1 > SS_STEP_MAX_DNN_IN ? max_io + 1
                                                : SS_STEP_MAX_DNN_IN;

        ss_free(c->in);
        ss_free(c->out);
        ss_free(c->dnn_in);
        c->io_cap = 0;
        if ((c->in = ss_calloc((size_t)n, sizeof(*c->in))) == NULL
            || (c->out = ss_calloc((size_t)n, sizeof(*c->out))) == NULL
            || (c->dnn_in = ss_calloc((size_t)n, sizeof(*c->dnn_in))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for a run");
        c->io_cap = n;
    }
    return 0;
}

static int
check_io(const ss_plan_t *p, const ss_tensor_t *inputs,
         ss_tensor_t *outputs, ss_err_t *err)
{
    const ss_graph_t *g = p->g;

    for (int i = 0; i < g->n_inputs; i++) {
        const ss_tensor_t *want = &p->vals[g->inputs[i]].t;
        const ss_tensor_t *got = &inputs[i];

        if (got->dtype != want->dtype || got->ndim != want->ndim
            || memcmp(got->dims, want->dims,
                      (size_t)want->ndim * sizeof(int64_t)) != 0
            || (got->data == NULL && p->vals[g->inputs[i]].bytes > 0))
            return ss_err_set(err, SS_EINVAL, "input '%s' does not have the "
                              "shape the plan was compiled for",
                              g->input_info[i].name);
        /* an input that decides shapes: the plan holds its value */
        if (p->vals[g->inputs[i]].kind == SS_PV_CONST
            && p->vals[g->inputs[i]].bytes > 0
            && memcmp(got->data, want->data,
                      p->vals[g->inputs[i]].bytes) != 0)
            return ss_err_set(err, SS_EINVAL, "input '%s' decides shapes, "
                              "and this plan was compiled for another "
                              "value of it", g->input_info[i].name);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        const ss_io_info_t *io = &p->out_info[i];

        if (outputs[i].data == NULL
            && p->vals[g->outputs[i]].bytes > 0)
            return ss_err_set(err, SS_EINVAL, "output '%s' has no buffer",
                              io->name);
        outputs[i].dtype = io->dtype;
        outputs[i].ndim = io->ndim;
        memcpy(outputs[i].dims, io->dims, sizeof(io->dims));
    }
    return 0;
}

/* What empty values point at when the caller passed NULL for them (see
 * ir.h: kernels never see NULL data); nothing reads or writes it. */
static _Alignas(64) char empty[64];

/* Points c->tab[v] at the bytes of every value v for this run, p's
 * arena at arena. */
static void
resolve_values(const ss_plan_t *p, ss_exec_ctx_t *c, char *arena,
               const ss_tensor_t *inputs, const ss_tensor_t *outputs)
{
    for (int v = 0; v < p->n_vals; v++) {
        const ss_pval_t *pv = &p->vals[v];
        const ss_pval_t *r = &p->vals[ss__plan_root(p, v)];
        ss_tensor_t *t = &c->tab[v];

        *t = pv->t;
        switch (r->kind) {
        case SS_PV_INPUT:
            t->data = inputs[r->index].data;
            break;
        case SS_PV_OUTPUT:
            t->data = outputs[r->index].data;
            break;
        case SS_PV_ARENA:
            t->data = arena + r->offset;
            break;
        case SS_PV_CONST:
            t->data = r->t.data;
            break;
        default:
            t->data = NULL;
            break;
        }
        if (t->data == NULL && r->kind != SS_PV_UNSET)
            t->data = empty;
    }
}

static int
run_step(const ss_plan_t *p, ss_exec_ctx_t *c, const ss_step_t *st,
         ss_tensor_t *outputs, ss_err_t *err)
{
    int rc = 0;

    switch (st->kind) {
    case SS_STEP_REF:
        for (int k = 0; k < st->n_in; k++)
            c->in[k] = st->in[k] >= 0 ? &c->tab[st->in[k]] : NULL;
        for (int k = 0; k < st->n_out; k++) {
            if (st->out[k] >= 0)
                c->out[k] = c->tab[st->out[k]];
            else
                memset(&c->out[k], 0, sizeof(c->out[k]));
        }
        rc = st->op->run(st->node, p->g->opset, c->in, c->out, err);
        break;
    case SS_STEP_DNN:
        for (int k = 0; k < st->n_in; k++)
            c->dnn_in[k] = c->tab[st->in[k]].data;
        rc = ss_dnn_run(st->prim, c->stream, c->dnn_in,
                        c->tab[st->out[0]].data,
                        p->scratch_bytes ? c->scratch.p : NULL, err);
        break;
    case SS_STEP_MOE:
        rc = ss__moe_run(st->moe, c->stream, c->tab[st->in[0]].data,
                         c->tab[st->in[1]].data, c->tab[st->out[0]].data,
                         c->tab[st->out[1]].data,
                         p->scratch_bytes ? c->scratch.p : NULL, err);
        break;
    case SS_STEP_CTRL:
        if (c->sub == NULL
            && (rc = ss_exec_ctx_new(c->threads, &c->sub, err)) < 0)
            break;
        /* its runs are inside this one: it rolls with c (roll), not on
         * its own in the middle of a loop */
        c->sub->busy = 1;
        rc = ss__ctrl_run(st->ctrl, c->tab, c->sub, &c->cbuf, err);
        break;
    case SS_STEP_COPY: {
        const ss_tensor_t *src = &c->tab[st->in[0]];

        if (p->vals[st->in[0]].bytes > 0)
            memcpy(outputs[st->out[0]].data, src->data,
                   p->vals[st->in[0]].bytes);
        break;
    }
    }
    if (rc < 0 && st->node != NULL)
        ss_err_wrap(err, rc, "running node '%s' (%s)",
                    st->node->name[0] ? st->node->name : "?",
                    st->what[0] ? st->what : st->node->op_type);
    return rc;
}

/* Any NaN or Inf among n elements of a float type: its bits without the
 * sign, read as a signed integer, above the largest finite value's.  A
 * branch-free OR, vectorized: GCC's -O2 cost model leaves it scalar,
 * hence O3 and AVX2/AVX-512 clones here (clang vectorizes it at -O2).
 * Measured: about 1.5 us for 256 x 64 floats (64 KiB) on this machine,
 * 4x less than the scalar loop.  No clones under ThreadSanitizer: their
 * ifunc resolver runs while the dynamic linker relocates, before the TSan
 * runtime is initialised, and its instrumented entry crashes the program
 * before main. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) &&    \
    !defined(__SANITIZE_THREAD__)
#define VECTORIZE __attribute__((optimize("O3"),                           \
                                 target_clones("avx512f", "avx2", "default")))
#elif defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("O3")))
#else
#define VECTORIZE
#endif

#define NONFINITE(T, ABS, MAXFIN)                                          \
    do {                                                                   \
        const T *u_ = data;                                                \
        T any_ = 0;                                                        \
        for (int64_t i_ = 0; i_ < n; i_++)                                 \
            any_ |= (T)((T)(u_[i_] & (ABS)) > (T)(MAXFIN));                \
        return any_ != 0;                                                  \
    } while (0)

static int VECTORIZE
nonfinite(ss_dtype_t dt, const void *data, int64_t n)
{
    switch (dt) {
    case SS_DTYPE_F32: NONFINITE(int32_t, 0x7fffffff, 0x7f7fffff);
    case SS_DTYPE_F64:
        NONFINITE(int64_t, 0x7fffffffffffffffll, 0x7fefffffffffffffll);
    case SS_DTYPE_F16: NONFINITE(int16_t, 0x7fff, 0x7bff);
    case SS_DTYPE_BF16: NONFINITE(int16_t, 0x7fff, 0x7f7f);
    default: return 0;
    }
}

/* Runs p's reference twin (internal.h: nan_guard), compiling it first
 * if no run has yet. */
static int
run_ref(const ss_plan_t *p, ss_exec_ctx_t *ctx, const ss_tensor_t *inputs,
        ss_tensor_t *outputs, ss_tap_fn fn, void *user, ss_err_t *err)
{
    ss_plan_t *mp = (ss_plan_t *)p;     /* ref and ref_rc, under the lock */
    ss_tensor_t *shapes = NULL;
    ss_plan_t *ref;
    int rc = 0, n = p->g->n_inputs;

    pthread_mutex_lock(&mp->ref_lock);
    if (mp->ref == NULL && mp->ref_rc == 0) {
        if ((shapes = ss_calloc((size_t)n + 1, sizeof(*shapes))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a reference "
                            "plan");
        } else {
            for (int i = 0; i < n; i++)
                shapes[i] = p->vals[p->g->inputs[i]].t;
            if ((rc = ss__plan_build(p->g, shapes,
                                     p->taps ? SS__PLAN_TAPS : 0,
                                     p->max_bytes, &mp->ref,
                                     err)) < 0)
                mp->ref_rc = rc;
            ss_free(shapes);
        }
    } else if (mp->ref == NULL) {
        rc = ss_err_set(err, mp->ref_rc, "no reference plan for a "
                        "non-finite input");
    }
    ref = mp->ref;
    pthread_mutex_unlock(&mp->ref_lock);
    return rc < 0 ? rc : ss_plan_run_tapped(ref, ctx, inputs, outputs, fn,
                                            user, err);
}

/* Where rows row0.. of value v ([rows, cols], at data) are: row0 rows
 * in, or at data itself when v holds one chunk (plan_chunkbuf.c). */
static void *
chunk_at(const ss_plan_t *p, int v, void *data, int64_t row0, int64_t cols)
{
    if (p->vals[ss__plan_root(p, v)].one_chunk)
        return data;
    return (char *)data + (size_t)(row0 * cols)
                          * ss_dtype_size(p->vals[v].t.dtype);
}

/* Calls the taps (engine.h) due after step s (-1: before the first):
 * with the whole value (n < 0), or with its rows row0 .. row0 + n - 1
 * when step s ran them as a chunk.  e (or NULL): the activation step run
 * next, offered to the tap it reads (internal.h: tap_act); *claimed is
 * set when that tap's fn applied it. */
static int
run_taps(const ss_plan_t *p, ss_exec_ctx_t *c, int s, int64_t row0,
         int64_t n, const ss_step_t *e, int *claimed, ss_tap_fn fn,
         void *user, ss_err_t *err)
{
    int rc = 0;

    for (int k = 0; k < p->g->n_taps && rc >= 0; k++) {
        const ss_tensor_t *t = &c->tab[p->g->taps[k]];
        ss_tensor_t rows, *value = &rows;
        ss_tap_act_t act, *a = NULL;
        int64_t cols;

        if (p->tap_after[k] != s)
            continue;
        if (n < 0) {
            value = &c->tab[p->g->taps[k]];
        } else {
            cols = t->ndim > 0 ? t->dims[t->ndim - 1] : 1;
            rows = *t;
            rows.ndim = 2;
            rows.dims[0] = n;
            rows.dims[1] = cols;
            rows.data = chunk_at(p, p->g->taps[k], t->data, row0, cols);
        }
        if (e != NULL && e->tap_act
            && ss__plan_root(p, e->in[0]) == ss__plan_root(p, p->g->taps[k])) {
            act.kind = (ss_tap_act_kind_t)e->tap_act;
            act.alpha = e->tap_alpha;
            act.dst = n < 0 ? c->tab[e->out[0]].data
                            : chunk_at(p, e->out[0], c->tab[e->out[0]].data,
                                       row0, e->out_cols);
            a = &act;
        }
        rc = fn(user, k, value, n < 0 ? 0 : row0, a, err);
        if (rc == 1 && a != NULL)
            *claimed = 1;
    }
    return rc < 0 ? rc : 0;
}

/* Runs rows row0 .. row0 + n - 1 of a chunked step (internal.h). */
static int
run_rows(const ss_plan_t *p, ss_exec_ctx_t *c, const ss_step_t *st,
         int64_t row0, int64_t n, ss_err_t *err)
{
    const ss_tensor_t *x = &c->tab[st->in[0]], *y = &c->tab[st->out[0]];
    const void *in[2];
    int rc;

    in[0] = chunk_at(p, st->in[0], x->data, row0, st->in_cols);
    if (st->n_in > 1)   /* a batched MatMul's B (internal.h: in1_cols) */
        in[1] = chunk_at(p, st->in[1], c->tab[st->in[1]].data, row0,
                         st->in1_cols);
    rc = ss_dnn_run(n == st->chunk ? st->prim : st->prim_tail, c->stream, in,
                    chunk_at(p, st->out[0], y->data, row0, st->out_cols),
                    p->scratch_bytes ? c->scratch.p : NULL, err);
    if (rc < 0)
        ss_err_wrap(err, rc, "running node '%s' (%s, rows %lld..%lld)",
                    st->node->name[0] ? st->node->name : "?", st->what,
                    (long long)row0, (long long)(row0 + n - 1));
    return rc;
}

/* Runs chunked step s chunk by chunk, each chunk's taps after it and, when
 * the next step is chunked alike and reads this one's output (the
 * activation after a tapped GEMM; the Softmax and MatMul after an
 * attention MatMul, plan_fuse_mm.c), that step on the chunk too, and so
 * on along the chain: the rows stay in cache from step to step.  *more
 * is the number of steps after s that ran here. */
static int
run_chunked(const ss_plan_t *p, ss_exec_ctx_t *c, int s, ss_tap_fn fn,
            void *user, int *more, ss_err_t *err)
{
    const ss_step_t *st = &p->steps[s];
    int e, rc = 0;

    e = ss__plan_chunk_end(p, s);
    *more = e - s;
    for (int64_t r0 = 0; r0 < st->rows && rc == 0; r0 += st->chunk) {
        int64_t n = st->rows - r0 < st->chunk ? st->rows - r0 : st->chunk;
        int claimed = 0;

        for (int t = s; t <= e && rc == 0; t++) {
            /* the tap before t applied t's activation: only its taps */
            int skip = claimed;

            claimed = 0;
            if (!skip && (rc = run_rows(p, c, &p->steps[t], r0, n, err)) < 0)
                break;
            if (fn != NULL)
                rc = run_taps(p, c, t, r0, n, t < e ? &p->steps[t + 1] : NULL,
                              &claimed, fn, user, err);
        }
    }
    return rc;
}

/* The slices of a prefix-sliced plan (internal.h: slice_prefix), one
 * after the other, each writing its rows of p's value slice_cut in p's
 * arena; their own values live after p's (slice_arena_at). */
static int
run_prefix(const ss_plan_t *p, ss_exec_ctx_t *c, const ss_tensor_t *inputs,
           ss_tensor_t *outputs, ss_err_t *err)
{
    const ss_graph_t *g = p->g;
    const ss_pval_t *cut = &p->vals[p->slice_cut];
    int64_t n = p->vals[g->inputs[0]].t.dims[0];
    ss_tensor_t *io = ss_malloc(((size_t)g->n_inputs + g->n_outputs + 1)
                                * sizeof(*io));
    char *qa = (char *)c->arena.p + slice_arena_at(p);
    int rc = 0;

    if (io == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a run");
    for (int64_t r0 = 0; r0 < n && rc == 0; r0 += p->slice_rows) {
        const ss_plan_t *q = ss__plan_slice_at(p, r0, inputs, outputs, io);

        resolve_values(q, c, qa, io, io + g->n_inputs);
        for (int v = 0; v < q->n_vals; v++)
            if (ss__plan_root(q, v) == p->slice_cut)
                c->tab[v].data = (char *)c->arena.p + cut->offset
                                 + cut->bytes / (size_t)n * (size_t)r0;
        for (int s = 0; s < q->n_steps && rc == 0; s++) {
            int more = 0;

            if (q->steps[s].chunk > 0) {
                rc = run_chunked(q, c, s, NULL, NULL, &more, err);
                s += more;
            } else {
                rc = run_step(q, c, &q->steps[s], io + g->n_inputs, err);
            }
        }
    }
    ss_free(io);
    return rc;
}

int
ss_plan_run(const ss_plan_t *p, ss_exec_ctx_t *ctx,
            const ss_tensor_t *inputs, ss_tensor_t *outputs, ss_err_t *err)
{
    return ss_plan_run_tapped(p, ctx, inputs, outputs, NULL, NULL, err);
}

static int run_plan(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                    const ss_tensor_t *inputs, ss_tensor_t *outputs,
                    ss_tap_fn fn, void *user, ss_err_t *err);

size_t
ss_exec_ctx_held(const ss_exec_ctx_t *c)
{
    if (c == NULL)
        return 0;
    size_t n = c->arena.cap + c->scratch.cap + c->cbuf.cap
               + ss_exec_ctx_held(c->sub);

    for (int i = 0; i < c->n_part; i++)
        n += ss_exec_ctx_held(c->part[i]);
    return n;
}

/* Ends c's window (and its control-flow context's): the bytes given
 * back. */
static size_t
roll(ss_exec_ctx_t *c)
{
    size_t n;

    if (c == NULL)
        return 0;
    c->runs = 0;
    n = ss_workbuf_roll(&c->arena) + ss_workbuf_roll(&c->scratch)
        + ss_workbuf_roll(&c->cbuf) + roll(c->sub);
    for (int i = 0; i < c->n_part; i++)
        n += roll(c->part[i]);
    return n;
}

size_t
ss_exec_ctx_release(ss_exec_ctx_t *c)
{
    size_t n;

    if (c == NULL)
        return 0;
    n = c->arena.cap + c->scratch.cap + c->cbuf.cap;
    ss_workbuf_free(&c->arena);
    ss_workbuf_free(&c->scratch);
    ss_workbuf_free(&c->cbuf);  /* a control-flow step's, per run */
    c->runs = 0;
    for (int i = 0; i < c->n_part; i++)
        n += ss_exec_ctx_release(c->part[i]);
    return n + ss_exec_ctx_release(c->sub);
}

static int
run_top(const ss_plan_t *p, ss_exec_ctx_t *ctx, const ss_tensor_t *inputs,
        ss_tensor_t *outputs, ss_tap_fn fn, void *user, ss_err_t *err)
{
    int was, st, rc;

    if (!p->one_thread)
        return run_plan(p, ctx, inputs, outputs, fn, user, err);
    /* a small plan's primitives were made for one thread (plan_threads.c):
     * they run on one, and the caller's count is put back */
    was = omp_get_max_threads();
    st = ss_dnn_stream_threads(ctx->stream, 1);
    omp_set_num_threads(1);
    rc = run_plan(p, ctx, inputs, outputs, fn, user, err);
    ss_dnn_stream_threads(ctx->stream, st);
    omp_set_num_threads(was);
    return rc;
}

int
ss_plan_run_tapped(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                   const ss_tensor_t *inputs, ss_tensor_t *outputs,
                   ss_tap_fn fn, void *user, ss_err_t *err)
{
    int rc;

    /* a run inside a run (batch slices, the reference twin) shares the
     * buffers of the one around it: only the outermost counts */
    if (ctx->busy)
        return run_top(p, ctx, inputs, outputs, fn, user, err);
    ctx->busy = 1;
    rc = run_top(p, ctx, inputs, outputs, fn, user, err);
    ctx->busy = 0;
    if (++ctx->runs >= SS_WORKBUF_WINDOW)
        ss_workbuf_trim(roll(ctx));
    return rc;
}

static int
run_plan(const ss_plan_t *p, ss_exec_ctx_t *ctx, const ss_tensor_t *inputs,
         ss_tensor_t *outputs, ss_tap_fn fn, void *user, ss_err_t *err)
{
    int rc;

    if (p->tap_after == NULL)
        fn = NULL;      /* g has no taps */

    if ((rc = check_io(p, inputs, outputs, err)) < 0)
        goto done;
    if (p->slice != NULL && !p->slice_prefix) {
        rc = ss__plan_run_sliced(p, ctx, inputs, outputs, err);
        goto done;
    }
    for (int i = 0; p->nan_guard && i < p->g->n_inputs; i++)
        if (nonfinite(inputs[i].dtype, inputs[i].data,
                      ss_tensor_numel(&inputs[i])))
            return run_ref(p, ctx, inputs, outputs, fn, user, err);
    if ((rc = reserve(ctx, p, err)) < 0)
        goto done;
    if (p->slice_prefix
        && (rc = run_prefix(p, ctx, inputs, outputs, err)) < 0)
        goto done;
    resolve_values(p, ctx, ctx->arena.p, inputs, outputs);
    if (fn != NULL && (rc = run_taps(p, ctx, -1, 0, -1, NULL, NULL, fn,
                                     user, err)) < 0)
        goto done;
    for (int s = 0; s < p->n_steps; s++) {
        const ss_step_t *e = s + 1 < p->n_steps && p->steps[s + 1].tap_act
                             ? &p->steps[s + 1] : NULL;
        int more = 0, claimed = 0;

        if (p->steps[s].chunk > 0) {
            if ((rc = run_chunked(p, ctx, s, fn, user, &more, err)) < 0)
                goto done;
            s += more;
            continue;
        }
        if ((rc = run_step(p, ctx, &p->steps[s], outputs, err)) < 0)
            goto done;
        if (fn != NULL
            && (rc = run_taps(p, ctx, s, 0, -1, e, &claimed, fn, user,
                              err)) < 0)
            goto done;
        /* the tap applied the activation: its step is done, not its
         * taps */
        if (claimed
            && (rc = run_taps(p, ctx, ++s, 0, -1, NULL, NULL, fn, user,
                              err)) < 0)
            goto done;
    }
done:
    if (rc < 0)
        ss__err_scrub(err);
    return rc;
}
