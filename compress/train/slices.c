/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Parallel batch slices: a trainer for T > 1 threads runs its forward
 * and backward as K <= T slices of the batch, each a trainer for one
 * thread, on a crew (engine/plan/crew.h), and sums their gradients.
 *
 * DESIGN.  A step of the whole batch on T threads makes every oneDNN
 * primitive and every kernel loop an OpenMP team with a barrier at its
 * end.  The fixtures' steps are many and small (a transformer step is
 * ~300 of them, most 10-100 us at batch 64), so on 2 threads the
 * barriers cost what the second core gives: the MLP fixture trained at
 * half its one-thread speed, the transformer in bf16 at 0.7x, which left
 * bf16 no faster than f32 (docs/training.md).  The same cure as
 * inference's (docs/threads.md): cut the batch into row slices, run each
 * start to end on one thread, and hand out whole slices instead of
 * single primitives.  A slice's trainer is built for its rows with the
 * same graph and options and one thread; it reads the parent's
 * parameters and their bf16 copies in place, and writes a gradient of its
 * own: that of its rows' mean loss.  The parent's gradient is then their
 * sum weighted by each slice's share of the batch (in slice order, in
 * pieces spread over the crew), which is the whole batch's mean-loss
 * gradient up to the order of float sums, and the optimizer runs on it
 * as before.
 *
 * When it holds: only when every row's loss depends on its own row
 * alone, so that the sum is the whole batch's gradient --
 *   - the forward graph computes every row on its own (the engine's
 *     row analysis, ss_graph_rows, which the daemon's request batching
 *     relies on);
 *   - no BatchNormalization trains on batch statistics (they mix the
 *     rows; opts.bn = frozen reads running statistics and slices);
 *   - not Sophia (its Hessian estimate samples labels in row order from
 *     one generator), not a data-parallel process (opts.dp: it already
 *     has one shard of the batch per process);
 *   - the batch has at least 2 x SS_TRAIN_SLICE_ROWS rows;
 * and when it pays (SS__STEP_FLOATS below: a model of many parameters in
 * few steps, a wide MLP, trains faster as teams).  A small step (under
 * SS__ONE_THREAD_MACS) is built for one thread instead of either.  Otherwise the batch
 * runs whole, on OpenMP teams, and the reason is in ss_train_describe().
 * SS_TRAIN_SLICES=0 turns slices off, =1 slices whenever that is
 * correct (the cost rule aside).
 *
 * Same bytes: K is fixed by the thread count and the batch, each slice
 * runs on one thread with primitives made for one thread (whichever
 * thread takes it), and the weighted sum has a fixed order: the same job
 * on the same machine and thread count gives the same bytes, as before.
 * A different thread count sums in another order (within float
 * rounding, as OpenMP teams of another size did).
 *
 * Memory: each slice has its own arena for its rows; the whole batch's
 * arena is freed once the slices are built (ss_train_forward runs as
 * slices too, export reads only the flat arrays), so activations take
 * about what the whole batch's did.  A graph whose input dims fix the
 * batch size cannot build a slice and runs whole (the reason says so).
 *
 * THREADS: [worker], the trainer's thread; the slices run on it and on
 * the crew's helpers, which exist only inside ss__slices_grads.
 */

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pace.h"
#include "compress/train/internal.h"
#include "engine/plan/crew.h"

#define SS__SLICE_ROWS 4        /* fewest rows a slice gets */
#define SS__SUM_PIECE 32768     /* floats of the gradient sum per piece */
/* The cost rule: slices write k gradients where a team writes one, and
 * the update reads them all back: (k - 1) extra passes over the flat
 * arrays; a team costs a barrier per step.  Slices only when the first
 * is the smaller: (k - 1) x parameters <= SS__STEP_FLOATS x steps.
 * Measured (AMD EPYC, 2 threads, quiet; bench/train.py --teams): a
 * barrier costs ~6 us, what ~7 500 floats' extra pass costs; the MLP
 * fixture (17 k parameters, ~20 steps) 1.43x faster sliced, the
 * transformer (20 k, 127 steps) 1.70x; the MNIST-sized MLP (535 k, 15
 * steps) 0.69x and the wide one (1.9 M) 0.82x: they run whole. */
#define SS__STEP_FLOATS 7500.0
/* A step whose forward products are under this many multiply-adds runs
 * on one thread whatever the thread count (the engine's bound for small
 * plans, plan_threads.c): the MLP fixture's (1.1 M) took 78 us a step
 * on one thread, 106-116 us as 2 slices and 159 us as teams of 2; the
 * CNN fixture (34 M) and the MNIST-sized MLP (34 M) gain a little from
 * teams.  SS_TRAIN_ONE_THREAD_MACS=N replaces it (0: off). */
#define SS__ONE_THREAD_MACS ((int64_t)8 << 20)

struct ss__slices {
    int k;                      /* slices */
    int threads;                /* T */
    ss__tr_t **tr;              /* owned, k */
    int64_t *lo;                /* k + 1 row bounds */
    float *share;               /* k: rows / batch */
    ss_crew_t *crew;
    /* one step's views and results (planned here: a step allocates
     * nothing) */
    float **part;               /* k: the slices' gradients */
    ss__gparts_t gp;            /* their sum, as the update takes it */
    int pending;                /* the sum of the last step is not done */
    ss_tensor_t *in;            /* k x n_inputs */
    ss_tensor_t *lab, *tea;     /* k */
    ss_train_batch_t *b;        /* k */
    double *loss;
    int *rc;
    ss_err_t *err;
    /* the trainer's thread's pace hook (common/pace.h), which helpers
     * call too while they run a slice, one thread at a time (the daemon's
     * hook keeps per-job sums) */
    ss_pace_fn pace;
    void *pace_arg;
    pthread_mutex_t pace_lock;
};

/* SS_TRAIN_SLICES: "0" never, "1" whenever correct (no cost rule), else
 * by the cost rule. */
static int
env_slices(void)
{
    const char *e = getenv("SS_TRAIN_SLICES");

    return e == NULL ? -1 : strcmp(e, "0") == 0 ? 0
                          : strcmp(e, "1") == 0 ? 1 : -1;
}

static int64_t
min_rows(void)
{
    const char *e = getenv("SS_TRAIN_SLICE_ROWS");
    long long v = e != NULL && e[0] != '\0' ? strtoll(e, NULL, 10) : 0;

    return v >= 1 ? v : SS__SLICE_ROWS;
}

/* Why t's batch must run whole, written into t->slice_why; NULL when it
 * may run as slices, or with err->code set when out of memory. */
static const char *
whole_why(ss__tr_t *t, const ss_tensor_t *shapes, const ss_train_opts_t *o,
          int T, int64_t k, ss_err_t *err)
{
    const ss_graph_t *g = t->g;
    char *w = t->slice_why;
    size_t wl = sizeof(t->slice_why);
    ss_rows_t r;

    if (env_slices() == 0)
        return snprintf(w, wl, "SS_TRAIN_SLICES=0"), w;
    if (T <= 1)
        return snprintf(w, wl, "one thread"), w;
    if (o->dp != NULL)
        return snprintf(w, wl, "a data-parallel process"), w;
    if (o->opt == SS_OPT_SOPHIA)
        return snprintf(w, wl, "Sophia samples labels over the batch"), w;
    if (t->batch < 2 * min_rows())
        return snprintf(w, wl, "a batch of %lld rows", (long long)t->batch),
               w;
    for (int i = 0; i < g->n_inputs; i++)
        if (shapes[i].dims[0] != t->batch)
            return snprintf(w, wl, "input '%s' has %lld rows, not %lld",
                            g->input_info[i].name,
                            (long long)shapes[i].dims[0],
                            (long long)t->batch), w;
    for (int i = 0; i < g->n_nodes; i++)
        if (o->bn == SS_BN_BATCH
            && strcmp(g->nodes[i].op_type, "BatchNormalization") == 0)
            return snprintf(w, wl, "BatchNormalization '%s' trains on the "
                            "batch's statistics", g->nodes[i].name), w;
    if (env_slices() != 1
        && (double)(k - 1) * (double)t->flat
           > SS__STEP_FLOATS * (double)t->n_steps)
        return snprintf(w, wl, "%lld parameters in %d steps: the slices' "
                        "gradient sums would cost more than the teams' "
                        "barriers", (long long)t->flat, t->n_steps), w;
    if (ss_graph_rows(g, &r, err) < 0)
        return NULL;
    if (!r.independent)
        return snprintf(w, wl, "rows mix at %.24s '%.48s': %.96s", r.op,
                        r.node, r.why), w;
    return NULL;
}

static int
alloc_slices(ss__tr_t *t, int k, int T, ss_err_t *err)
{
    struct ss__slices *s = ss_calloc(1, sizeof(*s));

    t->sl = s;
    if (s == NULL
        || (s->tr = ss_calloc((size_t)k, sizeof(*s->tr))) == NULL
        || (s->lo = ss_calloc((size_t)k + 1, sizeof(*s->lo))) == NULL
        || (s->share = ss_calloc((size_t)k, sizeof(*s->share))) == NULL
        || (s->part = ss_calloc((size_t)k, sizeof(*s->part))) == NULL
        || (s->in = ss_calloc((size_t)k * (size_t)(t->n_inputs + 1),
                              sizeof(*s->in))) == NULL
        || (s->lab = ss_calloc((size_t)k, sizeof(*s->lab))) == NULL
        || (s->tea = ss_calloc((size_t)k, sizeof(*s->tea))) == NULL
        || (s->b = ss_calloc((size_t)k, sizeof(*s->b))) == NULL
        || (s->loss = ss_calloc((size_t)k, sizeof(*s->loss))) == NULL
        || (s->rc = ss_calloc((size_t)k, sizeof(*s->rc))) == NULL
        || (s->err = ss_calloc((size_t)k, sizeof(*s->err))) == NULL
        || (s->crew = ss_crew_new("ss-train", T - 1)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for batch slices");
    pthread_mutex_init(&s->pace_lock, NULL);
    s->k = k;
    s->threads = T;
    for (int i = 0; i <= k; i++)
        s->lo[i] = t->batch * i / k;
    for (int i = 0; i < k; i++)
        s->share[i] = (float)(s->lo[i + 1] - s->lo[i]) / (float)t->batch;
    return 0;
}

int
ss__slices_init(ss__tr_t *t, const ss_tensor_t *shapes,
                const ss_train_opts_t *o, ss_err_t *err)
{
    int T = o->threads > 0 ? o->threads : omp_get_max_threads();
    ss_tensor_t *sh = NULL;
    ss_train_opts_t o1 = *o;
    ss_err_t e = { 0 };
    int64_t k;
    int rc = 0;

    k = t->batch / min_rows();
    if (k > T)
        k = T;
    if (whole_why(t, shapes, o, T, k, &e) != NULL)
        return 0;
    if (e.code != 0)
        return ss_err_set(err, e.code, "%s", e.msg);
    if ((rc = alloc_slices(t, (int)k, T, err)) < 0 ||
        (sh = ss_calloc((size_t)t->n_inputs + 1, sizeof(*sh))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for batch slices");
        goto done;
    }
    o1.threads = 1;
    o1.dp = NULL;
    memcpy(sh, shapes, (size_t)t->n_inputs * sizeof(*sh));
    for (int i = 0; i < k; i++) {
        for (int j = 0; j < t->n_inputs; j++)
            sh[j].dims[0] = t->sl->lo[i + 1] - t->sl->lo[i];
        if ((rc = ss__train_build(t->g, sh, &o1, t, &t->sl->tr[i], &e)) < 0) {
            /* the whole batch trains anyway: say why, do not fail */
            snprintf(t->slice_why, sizeof(t->slice_why), "a slice of %lld "
                     "rows does not build: %.140s", (long long)sh[0].dims[0],
                     e.msg);
            rc = rc == SS_ENOMEM ? ss_err_set(err, rc, "%s", e.msg) : 0;
            goto done;
        }
    }
    for (int i = 0; i < k; i++)
        t->sl->part[i] = t->sl->tr[i]->gr;
    t->sl->gp.k = (int)k;
    t->sl->gp.part = t->sl->part;
    t->sl->gp.share = t->sl->share;
    t->n_slices = (int)k;
    t->sl_threads = T;
    /* the whole batch's steps never run again (train.c: forward and
     * step go to the slices): their memory goes */
    ss_free(t->arena);
    ss_free(t->scratch);
    t->arena = t->scratch = NULL;
    t->arena_bytes = t->scratch_bytes = 0;
    for (int i = 0; i < k; i++)
        t->arena_bytes += t->sl->tr[i]->arena_bytes;
done:
    ss_free(sh);
    if (t->n_slices == 0)
        ss__slices_free(t);
    /* the slices' builds set the count to one */
    omp_set_num_threads(T);
    return rc;
}

void
ss__slices_free(ss__tr_t *t)
{
    struct ss__slices *s = t->sl;

    if (s == NULL)
        return;
    ss_crew_free(s->crew);
    for (int i = 0; s->tr != NULL && i < s->k; i++)
        ss_train_free(s->tr[i]);
    ss_free(s->tr);
    ss_free(s->lo);
    ss_free(s->share);
    ss_free(s->part);
    ss_free(s->in);
    ss_free(s->lab);
    ss_free(s->tea);
    ss_free(s->b);
    ss_free(s->loss);
    ss_free(s->rc);
    ss_free(s->err);
    if (s->k > 0)
        pthread_mutex_destroy(&s->pace_lock);
    ss_free(s);
    t->sl = NULL;
    t->n_slices = 0;
}

/* Rows [lo, hi) of x, whose first dim has rows rows, as a 1-D view when
 * flat (labels and teacher outputs: the slice checks only their count). */
static void
row_view(const ss_tensor_t *x, int64_t rows, int64_t lo, int64_t hi,
         int flat, ss_tensor_t *out)
{
    int64_t per = ss_tensor_numel(x) / rows;

    *out = *x;
    out->data = (char *)x->data + lo * per * (int64_t)ss_dtype_size(x->dtype);
    if (flat) {
        out->ndim = 1;
        out->dims[0] = (hi - lo) * per;
    } else {
        out->dims[0] = hi - lo;
    }
}

/* A slice's pace point: the trainer's thread's hook, under a lock. */
static void
slice_pace(void *arg)
{
    struct ss__slices *s = arg;

    pthread_mutex_lock(&s->pace_lock);
    s->pace(s->pace_arg);
    pthread_mutex_unlock(&s->pace_lock);
}

/* The bf16 copies the parent's update did not round (before the first
 * step, after ss_train_params): the slices read the parent's. */
static void
round_stale(ss__tr_t *t)
{
    if (t->wbf_stale && t->wbf != NULL) {
        ss__bf16_round_n(t->w, t->wbf, t->flat);
        t->wbf_stale = 0;
    }
}

static void
run_slice(void *arg, int i)
{
    ss__tr_t *t = arg;
    struct ss__slices *s = t->sl;
    ss_pace_fn was;
    void *was_arg;

    /* on a helper, waits where the trainer's thread would (the daemon:
     * while serving is busy) instead of computing beside serving */
    ss_pace_get(&was, &was_arg);
    ss_pace_set(s->pace != NULL ? slice_pace : NULL, s);
    s->rc[i] = ss_train_grads_compute(s->tr[i], &s->b[i], &s->loss[i],
                                      &s->err[i]);
    ss_pace_set(was, was_arg);
}

/* gr = the slices' gradients weighted by their shares, piece i of it. */
static void
sum_piece(void *arg, int i)
{
    ss__tr_t *t = arg;
    int64_t lo = (int64_t)i * SS__SUM_PIECE;

    ss__gsum(t->gr, &t->sl->gp, lo, t->flat - lo < SS__SUM_PIECE
                                    ? t->flat - lo : SS__SUM_PIECE);
}

void
ss__slices_sum_pending(ss__tr_t *t)
{
    struct ss__slices *s = t->sl;

    if (s == NULL || !s->pending)
        return;
    s->pending = 0;
    omp_set_num_threads(1);
    ss_crew_run(s->crew, (int)((t->flat + SS__SUM_PIECE - 1)
                               / SS__SUM_PIECE), s->threads, sum_piece, t);
    omp_set_num_threads(s->threads);
}

const struct ss__gparts *
ss__slices_take_parts(ss__tr_t *t)
{
    if (t->sl == NULL || !t->sl->pending)
        return NULL;
    t->sl->pending = 0;
    return &t->sl->gp;
}

int
ss__slices_grads(ss__tr_t *t, const ss_train_batch_t *b, double *loss,
                 ss_err_t *err)
{
    struct ss__slices *s = t->sl;
    double l = 0;
    int rc;

    if ((rc = ss__train_check_batch(t, b, err)) < 0)
        return rc;
    /* no OpenMP team on this thread: its threads would spin beside the
     * crew's (the slices set one thread for their own steps too) */
    omp_set_num_threads(1);
    round_stale(t);
    for (int i = 0; i < s->k; i++) {
        ss_tensor_t *in = &s->in[(size_t)i * (size_t)t->n_inputs];
        int64_t lo = s->lo[i], hi = s->lo[i + 1];

        for (int j = 0; j < t->n_inputs; j++)
            row_view(&b->inputs[j], t->batch, lo, hi, 0, &in[j]);
        s->b[i].inputs = in;
        s->b[i].labels = NULL;
        s->b[i].teacher = NULL;
        if (b->labels != NULL && b->labels->data != NULL) {
            row_view(b->labels, t->batch, lo, hi, 1, &s->lab[i]);
            s->b[i].labels = &s->lab[i];
        }
        if (b->teacher != NULL && b->teacher->data != NULL) {
            row_view(b->teacher, t->batch, lo, hi, 1, &s->tea[i]);
            s->b[i].teacher = &s->tea[i];
        }
        s->rc[i] = 0;
        ss_err_clear(&s->err[i]);
    }
    ss_pace_get(&s->pace, &s->pace_arg);
    ss_crew_run(s->crew, s->k, s->threads, run_slice, t);
    ss_pace_set(s->pace, s->pace_arg);
    for (int i = 0; i < s->k; i++) {
        if (s->rc[i] < 0) {
            omp_set_num_threads(s->threads);
            return ss_err_set(err, s->rc[i], "%s", s->err[i].msg);
        }
        l += (double)s->share[i] * s->loss[i];
    }
    /* With nothing to read the whole gradient before the update (no
     * clipping by its norm, no learned step sizes), the update sums each
     * block as it goes (update.c): one pass over the arrays less. */
    s->pending = 1;
    omp_set_num_threads(s->threads);
    if (t->o.clip_norm > 0 || t->flat_decay < t->flat)
        ss__slices_sum_pending(t);
    if (loss != NULL)
        *loss = l;
    return 0;
}

int
ss__slices_one_thread(ss__tr_t *t, const ss_train_opts_t *o)
{
    const char *e = getenv("SS_TRAIN_ONE_THREAD_MACS");
    int64_t bound = e != NULL && e[0] != '\0' ? strtoll(e, NULL, 10)
                                              : SS__ONE_THREAD_MACS;
    int T = o->threads > 0 ? o->threads : omp_get_max_threads();
    int64_t m;

    if (T <= 1 || bound <= 0 || env_slices() == 1
        || (m = ss__train_fwd_macs(t)) >= bound)
        return 0;
    snprintf(t->slice_why, sizeof(t->slice_why), "one thread: a small "
             "step, %.2f M multiply-adds forward", (double)m / 1e6);
    return 1;
}

int64_t
ss__train_fwd_macs(const ss__tr_t *t)
{
    int64_t m = 0;

    for (int i = 0; i < t->n_fwd; i++) {
        const ss__step_t *s = &t->steps[i];
        const char *op = s->node != NULL ? s->node->op_type : "";
        const ss__tv_t *a, *y;

        if (s->n_in < 2 || s->in[0] < 0 || s->in[1] < 0 || s->out[0] < 0)
            continue;
        a = &t->tv[s->in[0]];
        y = &t->tv[s->out[0]];
        if (a->ndim < 1)
            continue;
        if (strcmp(op, "Conv") == 0) {
            /* the step reads the weights in oneDNN's layout, a buffer of
             * bytes: the node's own weight value has the shape */
            const ss_value_t *wv = s->node->n_inputs > 1
                                   && s->node->inputs[1] >= 0
                                   ? &t->g->values[s->node->inputs[1]]
                                   : NULL;
            int64_t wn = 1;

            if (wv == NULL || wv->ndim < 2 || wv->dims[0] <= 0)
                continue;
            for (int d = 1; d < wv->ndim; d++)
                wn *= wv->dims[d] > 0 ? wv->dims[d] : 1;
            m += y->numel * wn;
        }
        else if (strcmp(op, "Gemm") == 0 || strcmp(op, "MatMul") == 0)
            m += y->numel * a->dims[a->ndim - 1];
    }
    return m;
}

struct ss_crew *
ss__slices_crew(const ss__tr_t *t, int *threads)
{
    if (t->sl == NULL || t->n_slices == 0)
        return NULL;
    *threads = t->sl->threads;
    return t->sl->crew;
}

/* ss_train_forward's arguments, for the slices */
struct fwd {
    ss__tr_t *t;
    float *out;
    int64_t per;                /* output floats per row */
};

static void
fwd_slice(void *arg, int i)
{
    struct fwd *f = arg;
    struct ss__slices *s = f->t->sl;

    s->rc[i] = ss_train_forward(s->tr[i], s->b[i].inputs,
                                f->out + s->lo[i] * f->per, &s->err[i]);
}

int
ss__slices_forward(ss__tr_t *t, const ss_tensor_t *inputs, float *out,
                   ss_err_t *err)
{
    struct ss__slices *s = t->sl;
    struct fwd f = { t, out, t->tv[t->out_tv].numel / t->batch };
    int rc = 0;

    if ((rc = ss__train_check_inputs(t, inputs, err)) < 0)
        return rc;
    omp_set_num_threads(1);
    round_stale(t);
    for (int i = 0; i < s->k; i++) {
        ss_tensor_t *in = &s->in[(size_t)i * (size_t)t->n_inputs];

        for (int j = 0; j < t->n_inputs; j++)
            row_view(&inputs[j], t->batch, s->lo[i], s->lo[i + 1], 0,
                     &in[j]);
        s->b[i].inputs = in;
        s->rc[i] = 0;
        ss_err_clear(&s->err[i]);
    }
    ss_crew_run(s->crew, s->k, s->threads, fwd_slice, &f);
    omp_set_num_threads(s->threads);
    for (int i = 0; i < s->k && rc == 0; i++)
        if (s->rc[i] < 0)
            rc = ss_err_set(err, s->rc[i], "%s", s->err[i].msg);
    return rc;
}
