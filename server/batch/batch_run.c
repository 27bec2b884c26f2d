/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Running one batch on an executor of the pool (see server/batch/batch.c
 * for the queue and how batches form, server/batch/pool.c for the
 * executors and their schedule).
 *
 * DESIGN.  An executor owns, for life, an engine execution context
 * (oneDNN stream, scratch arena) and buffers for one batch's inputs and
 * outputs, shared by every batcher it runs.  A batch of one item runs on
 * the item's own input buffers and writes straight into the item's
 * freshly allocated outputs.  A larger batch is copied into the
 * executor's input buffers and run into its output buffers, both grown to
 * the largest batch seen and then reused, and the outputs are split into
 * per-item allocations: a warm batch allocates only what it hands back.
 * After an outlier (a batch of 10x the usual rows) those buffers, and the
 * context's arena, shrink back (common/workbuf.h: every
 * SS_WORKBUF_WINDOW batches to the largest need of the last 16 to 31;
 * all of them once the executor has been idle, pool.c).
 * An output whose first dim is not the batch (fixed in the graph: a model
 * that also returns a constant) is copied whole to every item, even when
 * that dim happens to equal the batch size.
 *
 * Isolation.  A batch of several items that fails is run again one item
 * at a time, each into its own outputs and with its own error detail, so
 * one request's bad values fail only that request (submit already
 * refuses what the engine can check ahead: ss_input_check_run).  The
 * batch's own error text goes to the debug log only, never to an item.
 * Failures are logged at most once per second per batcher, the next line
 * counting the ones left out: a client that sends a bad request in a loop
 * must not flood the log (3,515 lines in 10 s were seen before).
 *
 * OpenMP: each batcher says how many threads its batches run with (its
 * plans are compiled for that count); the executor sets its own count
 * before a batcher's compile or run when it differs from the last one.
 *
 * THREADS: everything here runs on one executor thread, without the
 * batcher's or the pool's lock; struct exec belongs to its thread.  The
 * plan cache has its own lock; the log limiter b->log_lock; metric series
 * are lock-free.
 */

#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/batch/internal.h"

/* At most one failure line per batcher per this interval. */
#define LOG_INTERVAL_NS 1000000000LL

/* Grows an array of n elements of size sz to want, zeroing the new part;
 * the old elements are kept. */
static int
grow_array(void **arr, int n, int want, size_t sz)
{
    char *p;

    if (want <= n)
        return 0;
    if ((p = ss_calloc((size_t)want, sz)) == NULL)
        return SS_ENOMEM;
    if (*arr != NULL)
        memcpy(p, *arr, (size_t)n * sz);
    ss_free(*arr);
    *arr = p;
    return 0;
}

/* Makes x's per-input and per-output arrays hold b's inputs and outputs. */
static int
ensure_io(struct exec *x, const ss_batcher_t *b, ss_err_t *err)
{
    int ni = b->n_inputs > 0 ? b->n_inputs : 1;
    int no = b->n_outputs > 0 ? b->n_outputs : 1;

    if (ni > x->cap_in) {
        if (grow_array((void **)&x->in, x->cap_in, ni, sizeof *x->in) < 0 ||
            grow_array((void **)&x->in_buf, x->cap_in, ni,
                       sizeof *x->in_buf) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for a batch");
        x->cap_in = ni;
    }
    if (no > x->cap_out) {
        if (grow_array((void **)&x->out, x->cap_out, no,
                       sizeof *x->out) < 0 ||
            grow_array((void **)&x->out_buf, x->cap_out, no,
                       sizeof *x->out_buf) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for a batch");
        x->cap_out = no;
    }
    return 0;
}

/* The OpenMP thread count b's plans were compiled for. */
static void
omp_for(struct exec *x, const ss_batcher_t *b)
{
    int want = b->threads > 0 ? b->threads : x->omp_default;

    if (want != x->omp_now) {
        omp_set_num_threads(want);
        x->omp_now = want;
    }
}

static size_t
tensor_bytes(const ss_tensor_t *t)
{
    return (size_t)ss_tensor_numel(t) * ss_dtype_size(t->dtype);
}

static size_t
info_bytes(const ss_io_info_t *io)
{
    ss_tensor_t t = {.dtype = io->dtype, .ndim = io->ndim};
    int64_t n;

    memcpy(t.dims, io->dims, sizeof t.dims);
    n = ss_tensor_numel(&t);
    return n < 0 ? 0 : (size_t)n * ss_dtype_size(io->dtype);
}

/* Sets x->in to the batch's inputs: the item's own tensors for a batch of
 * one, else the items' rows concatenated in x's buffers. */
static int
gather(struct exec *x, const ss_batcher_t *b, ss_work_t *batch,
       int64_t samples, ss_err_t *err)
{
    if (batch->next_ == NULL) {
        memcpy(x->in, batch->inputs, (size_t)b->n_inputs * sizeof x->in[0]);
        return 0;
    }
    for (int i = 0; i < b->n_inputs; i++) {
        const ss_tensor_t *t0 = &batch->inputs[i];
        size_t row = tensor_bytes(t0) / (size_t)batch->samples_;
        size_t need, off = 0;
        char *dst;

        if (ss_mul_overflow(row, (size_t)samples, &need) < 0 ||
            ss_workbuf_reserve(&x->in_buf[i], need) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for a batch of %lld",
                              (long long)samples);
        dst = x->in_buf[i].p;
        for (ss_work_t *w = batch; w != NULL; w = w->next_) {
            size_t n = row * (size_t)w->samples_;

            memcpy(dst + off, w->inputs[i].data, n);
            off += n;
        }
        x->in[i] = *t0;
        x->in[i].dims[0] = samples;
        x->in[i].data = dst;
    }
    return 0;
}

/* Whether output o (io as compiled for samples) has the batch as its
 * first dim: split into rows, not copied whole to each item. */
static bool
batch_first(const ss_batcher_t *b, const ss_io_info_t *io, int o,
            int64_t samples)
{
    return io->ndim >= 1 && io->dims[0] == samples && b->out_batched[o] != 0;
}

/* The bytes of output o an item of rows samples gets from a batch of
 * samples. */
static size_t
item_bytes(const ss_batcher_t *b, const ss_io_info_t *io, int o,
           int64_t rows, int64_t samples)
{
    size_t all = info_bytes(io);

    return batch_first(b, io, o, samples)
           ? all / (size_t)samples * (size_t)rows : all;
}

/* An item whose share of an output is over b->max_out fails before the
 * batch runs (the outputs are not even allocated).  In a batch of several
 * the batch fails, and run_each runs the items one by one: each gets its
 * own verdict, and the others are served. */
static int
check_sizes(const ss_batcher_t *b, const ss_plan_t *plan,
            const ss_work_t *batch, int64_t samples, ss_err_t *err)
{
    for (const ss_work_t *w = batch; b->max_out > 0 && w != NULL;
         w = w->next_)
        for (int o = 0; o < b->n_outputs; o++) {
            size_t n = item_bytes(b, ss_plan_output(plan, o), o, w->samples_,
                                  samples);

            if (n > b->max_out)
                return ss_err_set(err, SS_ETOOBIG, "output '%s' would take "
                                  "%zu bytes, over the limit of %zu bytes "
                                  "on a response", ss_graph_output(b->g,
                                                                   o)->name,
                                  n, b->max_out);
        }
    return 0;
}

/* Gives w its outputs: the slice of rows [row0, row0 + w->samples_) of
 * every batch output whose first dim is the batch, a whole copy of any
 * other output. */
static int
split(struct exec *x, const ss_batcher_t *b, const ss_plan_t *plan,
      ss_work_t *w, int64_t row0, int64_t samples)
{
    ss_tensor_t *outs;

    if ((outs = ss_calloc((size_t)b->n_outputs, sizeof *outs)) == NULL)
        return ss_err_set(&w->err, SS_ENOMEM, "no memory for outputs");
    w->outputs = outs;
    w->n_outputs = b->n_outputs;
    for (int o = 0; o < b->n_outputs; o++) {
        const ss_io_info_t *io = ss_plan_output(plan, o);
        size_t off = 0, n = item_bytes(b, io, o, w->samples_, samples);

        outs[o].dtype = io->dtype;
        outs[o].ndim = io->ndim;
        memcpy(outs[o].dims, io->dims, sizeof outs[o].dims);
        if (batch_first(b, io, o, samples)) {
            off = n / (size_t)w->samples_ * (size_t)row0;
            outs[o].dims[0] = w->samples_;
        }
        if ((outs[o].data = ss_aligned_alloc(n)) == NULL) {
            ss_work_clear_outputs(w);
            return ss_err_set(&w->err, SS_ENOMEM, "no memory for outputs");
        }
        memcpy(outs[o].data, (const char *)x->out_buf[o].p + off, n);
    }
    return 0;
}

/* The batch's tap hook (ss_batch_opts_t.tap), as the engine calls it. */
typedef struct tap_ctx {
    const ss_batcher_t *b;
    const ss_work_t *batch;
} tap_ctx_t;

static int
on_tap(void *user, int tap, ss_tensor_t *value, int64_t row0,
       const ss_tap_act_t *act, ss_err_t *err)
{
    const tap_ctx_t *t = user;

    return t->b->tap(t->b->tap_user, t->batch, tap, value, row0, act, err);
}

/* Whether batch runs through b's tap hook: b has one and an item has a
 * tag (LoRA: a batch of base-model requests runs the fused plans). */
static bool
tapped(const ss_batcher_t *b, const ss_work_t *batch)
{
    for (const ss_work_t *w = batch; b->tap != NULL && w != NULL;
         w = w->next_)
        if (w->tag != NULL)
            return true;
    return false;
}

/* Runs plan, from the tapped cache when tapped(b, batch). */
static int
run_plan(struct exec *x, const ss_batcher_t *b, const ss_plan_t *plan,
         const ss_work_t *batch, ss_tensor_t *outs, ss_err_t *err)
{
    tap_ctx_t t = { b, batch };

    if (tapped(b, batch))
        return ss_plan_run_tapped(plan, x->ctx, x->in, outs, on_tap, &t,
                                  err);
    return ss_plan_run(plan, x->ctx, x->in, outs, err);
}

/* Runs a batch of one item straight into its own new output buffers. */
static int
run_single(struct exec *x, const ss_batcher_t *b, const ss_plan_t *plan,
           ss_work_t *w, ss_err_t *err)
{
    ss_tensor_t *outs;
    int rc;

    if ((outs = ss_calloc((size_t)b->n_outputs, sizeof *outs)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for outputs");
    w->outputs = outs;
    w->n_outputs = b->n_outputs;
    for (int o = 0; o < b->n_outputs; o++) {
        if ((outs[o].data = ss_aligned_alloc(
                 info_bytes(ss_plan_output(plan, o)))) == NULL) {
            ss_work_clear_outputs(w);
            return ss_err_set(err, SS_ENOMEM, "no memory for outputs");
        }
    }
    if ((rc = run_plan(x, b, plan, w, outs, err)) < 0)
        ss_work_clear_outputs(w);
    return rc;
}

static int
run_many(struct exec *x, const ss_batcher_t *b, const ss_plan_t *plan,
         const ss_work_t *batch, ss_err_t *err)
{
    for (int o = 0; o < b->n_outputs; o++) {
        if (ss_workbuf_reserve(&x->out_buf[o],
                               info_bytes(ss_plan_output(plan, o))) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for outputs");
        x->out[o].data = x->out_buf[o].p;
    }
    return run_plan(x, b, plan, batch, x->out, err);
}

/* Runs the items of batch (a list, samples in all) as one batch.  On
 * success every item has its outputs, or its own status and error when
 * splitting ran out of memory; on failure no item was given anything and
 * err says why. */
static int
run_once(struct exec *x, ss_batcher_t *b, ss_work_t *batch, int64_t samples,
         ss_err_t *err)
{
    ss__plan_entry_t *pin = NULL;
    const ss_plan_t *plan = NULL;
    ss__plancache_t *cache = tapped(b, batch) ? b->tplans : b->plans;
    int64_t row0 = 0;
    int rc;

    if ((rc = gather(x, b, batch, samples, err)) < 0 ||
        (rc = ss__plancache_get(cache, x->in, &plan, &pin, err)) < 0 ||
        (rc = check_sizes(b, plan, batch, samples, err)) < 0)
        goto done;
    if (batch->next_ == NULL) {
        rc = run_single(x, b, plan, batch, err);
        goto done;
    }
    if ((rc = run_many(x, b, plan, batch, err)) < 0)
        goto done;
    for (ss_work_t *w = batch; w != NULL; w = w->next_) {
        w->status = split(x, b, plan, w, row0, samples);
        row0 += w->samples_;
    }
done:
    if (rc >= 0 && plan != NULL)
        ss__batch_moe_count(b, plan);
    ss__plancache_release(cache, pin);
    return rc;
}

/* Logs a failed request, at most once per LOG_INTERVAL_NS per batcher. */
static void
log_failure(ss_batcher_t *b, const ss_work_t *w)
{
    int64_t now = ss_clock_mono_ns();
    uint64_t quiet = 0;
    bool say = false;

    pthread_mutex_lock(&b->log_lock);
    if (b->log_last_ns == 0 || now - b->log_last_ns >= LOG_INTERVAL_NS) {
        say = true;
        quiet = b->log_quiet;
        b->log_quiet = 0;
        b->log_last_ns = now;
    } else {
        b->log_quiet++;
    }
    pthread_mutex_unlock(&b->log_lock);
    if (!say)
        return;
    if (quiet > 0)
        ss_log_warn("model=%s@%s request of %lld sample(s) failed: %s "
                    "(%llu more failed since the last such line)",
                    b->model ? b->model : "?", b->version ? b->version : "?",
                    (long long)w->samples_, w->err.msg,
                    (unsigned long long)quiet);
    else
        ss_log_warn("model=%s@%s request of %lld sample(s) failed: %s",
                    b->model ? b->model : "?", b->version ? b->version : "?",
                    (long long)w->samples_, w->err.msg);
}

/* Each layer and expert gets its series on its first rows: a model
 * without MoE layers has none. */
void
ss__batch_moe_count(ss_batcher_t *b, const ss_plan_t *plan)
{
    int nl = ss_plan_moe_layers(plan);

    for (int l = 0; l < nl; l++) {
        int ne = ss_plan_moe_experts(plan, l);

        for (int e = 0; e < ne; e++) {
            uint64_t rows = ss_plan_moe_take(plan, l, e);
            char ls[16], es[16];
            const char *v[4] = { b->labels[0], b->labels[1], ls, es };

            if (rows == 0)
                continue;
            if (l < SS__BATCH_MOE_LAYERS && e < SS__BATCH_MOE_EXPERTS)
                atomic_fetch_add(&b->moe_rows[l][e], rows);
            if (b->mf == NULL)
                continue;
            snprintf(ls, sizeof ls, "%d", l);
            snprintf(es, sizeof es, "%d", e);
            ss_series_add(ss_metric_series(b->mf->moe_rows, v),
                          (double)rows);
        }
        if (ne > atomic_load(&b->moe_experts))
            atomic_store(&b->moe_experts, ne);
    }
    if (nl > atomic_load(&b->moe_layers))
        atomic_store(&b->moe_layers, nl);
}

int
ss_batcher_moe_rows(const ss_batcher_t *b, int layer, uint64_t *rows,
                    int cap)
{
    int ne = atomic_load(&b->moe_experts);

    if (layer < 0 || layer >= atomic_load(&b->moe_layers)
        || layer >= SS__BATCH_MOE_LAYERS)
        return 0;
    if (ne > SS__BATCH_MOE_EXPERTS)
        ne = SS__BATCH_MOE_EXPERTS;
    for (int e = 0; e < ne && e < cap; e++)
        rows[e] = atomic_load(&b->moe_rows[layer][e]);
    return ne;
}

void
ss__batch_moe_remove(ss_batcher_t *b)
{
    int nl = atomic_load(&b->moe_layers), ne = atomic_load(&b->moe_experts);

    for (int l = 0; l < nl; l++)
        for (int e = 0; e < ne; e++) {
            char ls[16], es[16];
            const char *v[4] = { b->labels[0], b->labels[1], ls, es };

            snprintf(ls, sizeof ls, "%d", l);
            snprintf(es, sizeof es, "%d", e);
            ss_metric_series_remove(b->mf->moe_rows, v);
        }
}

static void
count_run(ss_batcher_t *b, int64_t samples, int64_t ns)
{
    if (b->mf == NULL)
        return;
    ss_series_add(b->m_inferences, (double)samples);
    ss_series_add(b->m_executions, 1);
    ss_series_observe(b->m_compute, ns / 1e9);
    ss_series_observe(b->m_batch, (double)samples);
}

static void
complete(ss_work_t *list)
{
    while (list != NULL) {
        ss_work_t *next = list->next_;

        list->next_ = NULL;
        list->done(list, list->arg);  /* may free list */
        list = next;
    }
}

static void
expire(ss_batcher_t *b, ss_work_t *list, int64_t now)
{
    for (ss_work_t *w = list; w != NULL; w = w->next_) {
        w->queue_ns = now - w->enqueue_ns_;
        w->status = ss_err_set(&w->err, SS_ETIMEDOUT, "timed out after "
                               "%.3f ms in the queue", w->queue_ns / 1e6);
        if (b->m_queue != NULL)
            ss_series_observe(b->m_queue, w->queue_ns / 1e9);
    }
    complete(list);
}

/* Runs each item of a failed batch alone: its outputs or its own error. */
static void
run_each(struct exec *x, ss_batcher_t *b, ss_work_t *batch)
{
    for (ss_work_t *w = batch, *next; w != NULL; w = next) {
        int64_t t0 = ss_clock_mono_ns();

        next = w->next_;
        w->next_ = NULL;
        ss_err_clear(&w->err);
        w->status = run_once(x, b, w, w->samples_, &w->err);
        w->next_ = next;
        w->batch_size = (int)w->samples_;
        if (w->status == 0)
            count_run(b, w->samples_, ss_clock_mono_ns() - t0);
    }
}

static void
run_batch(struct exec *x, ss_batcher_t *b, ss_work_t *batch, int64_t samples)
{
    int64_t t0 = ss_clock_mono_ns(), t1;
    int rc;

    ss_err_clear(&x->err);
    for (ss_work_t *w = batch; w != NULL; w = w->next_) {
        w->queue_ns = t0 - w->enqueue_ns_;
        w->batch_size = (int)samples;
    }
    rc = run_once(x, b, batch, samples, &x->err);
    t1 = ss_clock_mono_ns();
    if (rc == 0) {
        count_run(b, samples, t1 - t0);
    } else if (batch->next_ == NULL) {
        batch->status = rc;
        batch->err = x->err;
    } else {
        ss_log_debug("model=%s@%s batch of %lld failed (%s); running its "
                     "requests one by one", b->model ? b->model : "?",
                     b->version ? b->version : "?", (long long)samples,
                     x->err.msg);
        run_each(x, b, batch);
        t1 = ss_clock_mono_ns();
    }
    for (ss_work_t *w = batch; w != NULL; w = w->next_) {
        w->compute_ns = t1 - t0;
        if (b->m_queue != NULL)
            ss_series_observe(b->m_queue, w->queue_ns / 1e9);
        if (w->status < 0)
            log_failure(b, w);
        /* the done callback may drop the item's last hold on its tag */
        if (b->unpin != NULL && w->tag != NULL)
            b->unpin(b->tap_user, w->tag);
    }
    complete(batch);
}

/* Pins each tagged item's tag (ss_batch_opts_t.pin: LoRA makes the
 * adapter's weights resident, maybe reading them): the items whose pin
 * fails leave the batch (and *samples) and are completed with their own
 * error, the others stay in order.  Returns what is left to run. */
static ss_work_t *
pin_items(ss_batcher_t *b, ss_work_t *batch, int64_t *samples)
{
    ss_work_t *keep = NULL, **kt = &keep, *failed = NULL, **ft = &failed;
    int64_t now;

    for (ss_work_t *w = batch, *next; w != NULL; w = next) {
        next = w->next_;
        w->next_ = NULL;
        if (w->tag != NULL
            && (w->status = b->pin(b->tap_user, w->tag, &w->err)) < 0) {
            *samples -= w->samples_;
            *ft = w;
            ft = &w->next_;
        } else {
            *kt = w;
            kt = &w->next_;
        }
    }
    now = ss_clock_mono_ns();
    for (ss_work_t *w = failed; w != NULL; w = w->next_) {
        w->queue_ns = now - w->enqueue_ns_;
        w->batch_size = 0;
        log_failure(b, w);
    }
    complete(failed);
    return keep;
}

/* Ends the window of x's batch buffers (the context rolls its own, per
 * run: engine.h). */
static void
roll(struct exec *x)
{
    size_t n = 0;

    for (int i = 0; i < x->cap_in; i++)
        n += ss_workbuf_roll(&x->in_buf[i]);
    for (int o = 0; o < x->cap_out; o++)
        n += ss_workbuf_roll(&x->out_buf[o]);
    x->runs = 0;
    ss_workbuf_trim(n);
}

size_t
ss__batch_exec_release(struct exec *x)
{
    size_t n = ss_exec_ctx_release(x->ctx);

    for (int i = 0; i < x->cap_in; i++) {
        n += x->in_buf[i].cap;
        ss_workbuf_free(&x->in_buf[i]);
    }
    for (int o = 0; o < x->cap_out; o++) {
        n += x->out_buf[o].cap;
        ss_workbuf_free(&x->out_buf[o]);
    }
    x->runs = 0;
    x->last_ns = 0;
    ss_workbuf_trim(n);
    return n;
}

void
ss__batch_run(struct exec *x, ss_batcher_t *b, ss_work_t *batch,
              int64_t samples, ss_work_t *expired)
{
    if (expired != NULL)
        expire(b, expired, ss_clock_mono_ns());
    if (batch == NULL)
        return;
    if (ensure_io(x, b, &x->err) < 0) {
        for (ss_work_t *w = batch; w != NULL; w = w->next_) {
            w->status = SS_ENOMEM;
            w->err = x->err;
        }
        complete(batch);
        return;
    }
    if (b->pin != NULL && tapped(b, batch)
        && (batch = pin_items(b, batch, &samples)) == NULL)
        return;
    omp_for(x, b);
    run_batch(x, b, batch, samples);
    x->last_ns = ss_clock_mono_ns();
    if (++x->runs >= SS_WORKBUF_WINDOW)
        roll(x);
}

int
ss__batch_omp_enter(const ss_batcher_t *b)
{
    int saved = omp_get_max_threads();

    if (b->threads > 0)
        omp_set_num_threads(b->threads);
    return saved;
}

void
ss__batch_omp_restore(const ss_batcher_t *b, int saved)
{
    if (b->threads > 0)
        omp_set_num_threads(saved);
}

int
ss__batch_exec_init(struct exec *x, ss_err_t *err)
{
    /* threads 0: the stream does not set OpenMP's count; omp_for does,
     * per batcher. */
    return ss_exec_ctx_new(0, &x->ctx, err);
}

void
ss__batch_exec_close(struct exec *x)
{
    ss_exec_ctx_free(x->ctx);
    for (int i = 0; x->in_buf != NULL && i < x->cap_in; i++)
        ss_workbuf_free(&x->in_buf[i]);
    for (int i = 0; x->out_buf != NULL && i < x->cap_out; i++)
        ss_workbuf_free(&x->out_buf[i]);
    ss_free(x->in);
    ss_free(x->in_buf);
    ss_free(x->out);
    ss_free(x->out_buf);
}
