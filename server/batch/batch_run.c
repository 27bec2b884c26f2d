/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The executor threads of the dynamic batcher (see server/batch/batch.c for the
 * queue and how batches form).
 *
 * DESIGN.  An executor owns, for life, an engine execution context (oneDNN
 * stream, scratch arena) and buffers for one batch's inputs and outputs.
 * A batch of one item runs on the item's own input buffers and writes
 * straight into the item's freshly allocated outputs.  A larger batch is
 * copied into the executor's input buffers and run into its output
 * buffers, both grown to the largest batch seen and then reused, and the
 * outputs are split into per-item allocations: a warm batch allocates only
 * what it hands back.  An output whose first dim is not the batch (fixed
 * in the graph: a model that also returns a constant) is copied whole to
 * every item, even when that dim happens to equal the batch size.
 *
 * THREADS: everything here runs on one executor thread, without the
 * batcher's lock; struct exec belongs to its thread.  The plan cache has
 * its own lock; metric series are lock-free.
 */

#include <omp.h>
#include <string.h>

#include "common/alloc.h"
#include "common/cpus.h"
#include "common/log.h"
#include "server/batch/internal.h"

static int
grow(void **buf, size_t *cap, size_t need)
{
    void *p;

    if (need <= *cap)
        return 0;
    if ((p = ss_aligned_alloc(need)) == NULL)
        return SS_ENOMEM;
    ss_free(*buf);
    *buf = p;
    *cap = need;
    return 0;
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
gather(struct exec *x, ss_work_t *batch, int64_t samples, ss_err_t *err)
{
    ss_batcher_t *b = x->b;

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
            grow(&x->in_buf[i], &x->in_cap[i], need) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for a batch of %lld",
                              (long long)samples);
        dst = x->in_buf[i];
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

/* Gives w its outputs: the slice of rows [row0, row0 + w->samples_) of
 * every batch output whose first dim is the batch, a whole copy of any
 * other output. */
static int
split(struct exec *x, const ss_plan_t *plan, ss_work_t *w, int64_t row0,
      int64_t samples)
{
    ss_batcher_t *b = x->b;
    ss_tensor_t *outs;

    if ((outs = ss_calloc((size_t)b->n_outputs, sizeof *outs)) == NULL)
        return ss_err_set(&w->err, SS_ENOMEM, "no memory for outputs");
    w->outputs = outs;
    w->n_outputs = b->n_outputs;
    for (int o = 0; o < b->n_outputs; o++) {
        const ss_io_info_t *io = ss_plan_output(plan, o);
        size_t all = info_bytes(io), off = 0, n = all;

        outs[o].dtype = io->dtype;
        outs[o].ndim = io->ndim;
        memcpy(outs[o].dims, io->dims, sizeof outs[o].dims);
        if (io->ndim >= 1 && io->dims[0] == samples &&
            b->out_batched[o] != 0) {
            size_t row = all / (size_t)samples;

            off = row * (size_t)row0;
            n = row * (size_t)w->samples_;
            outs[o].dims[0] = w->samples_;
        }
        if ((outs[o].data = ss_aligned_alloc(n)) == NULL) {
            ss_work_clear_outputs(w);
            return ss_err_set(&w->err, SS_ENOMEM, "no memory for outputs");
        }
        memcpy(outs[o].data, (const char *)x->out_buf[o] + off, n);
    }
    return 0;
}

/* Runs a batch of one item straight into its own new output buffers. */
static int
run_single(struct exec *x, const ss_plan_t *plan, ss_work_t *w,
           ss_err_t *err)
{
    ss_batcher_t *b = x->b;
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
    if ((rc = ss_plan_run(plan, x->ctx, x->in, outs, err)) < 0)
        ss_work_clear_outputs(w);
    return rc;
}

static int
run_many(struct exec *x, const ss_plan_t *plan, ss_err_t *err)
{
    ss_batcher_t *b = x->b;

    for (int o = 0; o < b->n_outputs; o++) {
        if (grow(&x->out_buf[o], &x->out_cap[o],
                 info_bytes(ss_plan_output(plan, o))) < 0)
            return ss_err_set(err, SS_ENOMEM, "no memory for outputs");
        x->out[o].data = x->out_buf[o];
    }
    return ss_plan_run(plan, x->ctx, x->in, x->out, err);
}

static void
complete(ss_batcher_t *b, ss_work_t *list)
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
    complete(b, list);
}

static void
run_batch(struct exec *x, ss_work_t *batch, int64_t samples)
{
    ss_batcher_t *b = x->b;
    ss__plan_entry_t *pin = NULL;
    const ss_plan_t *plan = NULL;
    int64_t t0 = ss__batch_now_ns(), t1, row0 = 0;
    int rc;

    ss_err_clear(&x->err);
    for (ss_work_t *w = batch; w != NULL; w = w->next_)
        w->queue_ns = t0 - w->enqueue_ns_;
    if ((rc = gather(x, batch, samples, &x->err)) < 0 ||
        (rc = ss__plancache_get(b->plans, x->in, &plan, &pin, &x->err)) < 0)
        goto done;
    if (batch->next_ == NULL) {
        rc = run_single(x, plan, batch, &x->err);
        goto done;
    }
    if ((rc = run_many(x, plan, &x->err)) < 0)
        goto done;
    for (ss_work_t *w = batch; w != NULL; w = w->next_) {
        w->status = split(x, plan, w, row0, samples);
        row0 += w->samples_;
    }
done:
    ss__plancache_release(b->plans, pin);
    t1 = ss__batch_now_ns();
    for (ss_work_t *w = batch; w != NULL; w = w->next_) {
        if (rc < 0) {
            w->status = rc;
            w->err = x->err;
        }
        w->compute_ns = t1 - t0;
        w->batch_size = (int)samples;
        if (b->m_queue != NULL)
            ss_series_observe(b->m_queue, w->queue_ns / 1e9);
    }
    if (rc < 0)
        ss_log_warn("model=%s@%s batch of %lld failed: %s",
                    b->model ? b->model : "?", b->version ? b->version : "?",
                    (long long)samples, x->err.msg);
    if (rc == 0 && b->mf != NULL) {
        ss_series_add(b->m_inferences, (double)samples);
        ss_series_add(b->m_executions, 1);
        ss_series_observe(b->m_compute, (t1 - t0) / 1e9);
        ss_series_observe(b->m_batch, (double)samples);
    }
    complete(b, batch);
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

void *
ss__batch_exec_main(void *arg)
{
    struct exec *x = arg;

    /* Executors keep to the serving CPUs (their OpenMP threads inherit
     * the mask), away from compression jobs. */
    if (x->b->pin)
        ss_cpus_pin_self(&x->b->cpus);
    /* Before the first compile on this thread, not just before the first
     * run (where the engine's stream sets it). */
    ss__batch_omp_enter(x->b);

    for (;;) {
        ss_work_t *batch, *expired;
        int64_t samples;

        ss__batch_next_work(x->b, &batch, &samples, &expired);
        if (batch == NULL && expired == NULL)
            break;
        if (expired != NULL)
            expire(x->b, expired, ss__batch_now_ns());
        if (batch != NULL)
            run_batch(x, batch, samples);
    }
    return NULL;
}

int
ss__batch_exec_init(ss_batcher_t *b, struct exec *x, int threads,
                    ss_err_t *err)
{
    size_t ni = (size_t)b->n_inputs, no = (size_t)b->n_outputs;

    x->b = b;
    x->in = ss_calloc(ni ? ni : 1, sizeof *x->in);
    x->in_buf = ss_calloc(ni ? ni : 1, sizeof *x->in_buf);
    x->in_cap = ss_calloc(ni ? ni : 1, sizeof *x->in_cap);
    x->out = ss_calloc(no ? no : 1, sizeof *x->out);
    x->out_buf = ss_calloc(no ? no : 1, sizeof *x->out_buf);
    x->out_cap = ss_calloc(no ? no : 1, sizeof *x->out_cap);
    if (!x->in || !x->in_buf || !x->in_cap || !x->out || !x->out_buf ||
        !x->out_cap)
        return ss_err_set(err, SS_ENOMEM, "no memory for an executor");
    return ss_exec_ctx_new(threads, &x->ctx, err);
}

void
ss__batch_exec_close(ss_batcher_t *b, struct exec *x)
{
    ss_exec_ctx_free(x->ctx);
    for (int i = 0; x->in_buf != NULL && i < b->n_inputs; i++)
        ss_free(x->in_buf[i]);
    for (int i = 0; x->out_buf != NULL && i < b->n_outputs; i++)
        ss_free(x->out_buf[i]);
    ss_free(x->in);
    ss_free(x->in_buf);
    ss_free(x->in_cap);
    ss_free(x->out);
    ss_free(x->out_buf);
    ss_free(x->out_cap);
}

/* Stops the executors after they drained the queue, and frees b.  Copes
 * with a batcher that ss_batcher_new left half built. */
