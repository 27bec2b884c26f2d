/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Dynamic batching for one served model version: the queue, how batches
 * form, and the batcher's life on an executor pool.
 *
 * DESIGN.  Submitters append work items to a FIFO (a list threaded through
 * the items themselves, so queuing allocates nothing).  The batcher does
 * not own threads: it asks its pool for a visit (server/batch/pool.c) when
 * it has work an executor could take, and the pool hands it to the next
 * free executor, batchers with work taking turns.  A visit, under the
 * lock, drops items whose deadline has passed, looks at the oldest item,
 * counts the queued samples that could share its batch (same dims besides
 * the batch dim), and either takes a batch or asks the pool to come back
 * when the oldest item's delay expires (or the next deadline; a new item
 * brings the visit forward).  The batch leaves the queue as a list;
 * everything else -- concatenating inputs, the plan lookup (and a compile
 * on a new shape), the run, splitting outputs, the done callbacks --
 * happens without the lock (server/batch/batch_run.c), so submitters never
 * wait behind a run.
 *
 * A batcher asks for a visit at most once at a time (`scheduled`): under
 * load the submit path takes only the batcher's own lock, and the pool's
 * lock once per visit.  `running` counts visits whose items are not yet
 * completed; it is what `instances` caps and what free() waits for.
 *
 * The trigger and the size: a batch forms when the compatible samples
 * reach max_batch_size, or reach the largest preferred size (waiting can
 * not produce a better preferred batch), or the oldest item has waited
 * max_queue_delay_us, or the batcher is closing.  Before the delay expires
 * it takes the largest preferred size that is available (max_batch_size
 * when none are configured); after, everything up to max_batch_size.
 * The oldest item is always in the batch, so nothing starves; items that
 * would overflow the target are left for the next one.
 *
 * THREADS: submit, queue_depth and pause are [any]; visits run on the
 * executor threads; new, warmup and free run on the owner's thread (never
 * in a done callback).  b->lock guards the queue, depth, n_deadline,
 * running, scheduled, closing and paused; the pool's lock (taken inside
 * b->lock) guards the pool lists.  Metric series are lock-free.
 */

#include "server/batch/batch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "server/batch/internal.h"

/* Idle plans kept per batcher: every batch size up to a large
 * max_batch_size, without letting varying non-batch dims grow it without
 * bound. */
#define PLAN_CACHE_CAP 64

/* ---- metrics ---------------------------------------------------------- */

int
ss_batch_metrics_init(ss_metrics_t *m, ss_batch_metrics_t *out)
{
    static const char *const labels[] = {"model", "version"};
    double lat[20], sizes[11];
    int rc;

    memset(out, 0, sizeof *out);
    /* 50 us to 26 s: a queue wait is often microseconds, a big batch
     * seconds. */
    if ((rc = ss_metrics_exp_buckets(50e-6, 2, 20, lat)) < 0 ||
        (rc = ss_metrics_exp_buckets(1, 2, 11, sizes)) < 0)
        goto done;
    rc = SS_EINVAL;
    out->inference_count = ss_metrics_counter(m,
        "slimserve_inference_count_total",
        "Samples inferred (a batch of n counts n).", 2, labels);
    out->execution_count = ss_metrics_counter(m,
        "slimserve_execution_count_total",
        "Batches executed.", 2, labels);
    out->queue_duration = ss_metrics_histogram(m,
        "slimserve_queue_duration_seconds",
        "Time a request waited in the batch queue.", 2, labels, lat, 20);
    out->compute_duration = ss_metrics_histogram(m,
        "slimserve_compute_duration_seconds",
        "Time to run one batch: gather inputs, execute, split outputs.",
        2, labels, lat, 20);
    out->batch_size = ss_metrics_histogram(m, "slimserve_batch_size",
        "Samples per executed batch.", 2, labels, sizes, 11);
    out->queue_depth = ss_metrics_gauge(m, "slimserve_queue_depth",
        "Requests queued for an executor.", 2, labels);
    out->moe_rows = ss_metrics_counter(m, "slimserve_moe_expert_rows_total",
        "Rows routed to each expert of a mixture-of-experts layer.", 4,
        (const char *[]){"model", "version", "layer", "expert"});
    if (out->inference_count && out->execution_count &&
        out->queue_duration && out->compute_duration && out->batch_size &&
        out->queue_depth && out->moe_rows)
        rc = 0;
done:
    return rc;
}

static int
metrics_attach(ss_batcher_t *b, const ss_batch_opts_t *o, ss_err_t *err)
{
    const ss_batch_metrics_t *mf = o->metrics;

    if (mf == NULL)
        return 0;
    b->model = ss_strdup(o->model != NULL ? o->model : "");
    b->version = ss_strdup(o->version != NULL ? o->version : "");
    if (b->model == NULL || b->version == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for metric labels");
    b->labels[0] = b->model;
    b->labels[1] = b->version;
    b->mf = mf;
    b->m_inferences = ss_metric_series(mf->inference_count, b->labels);
    b->m_executions = ss_metric_series(mf->execution_count, b->labels);
    b->m_queue = ss_metric_series(mf->queue_duration, b->labels);
    b->m_compute = ss_metric_series(mf->compute_duration, b->labels);
    b->m_batch = ss_metric_series(mf->batch_size, b->labels);
    b->m_depth = ss_metric_series(mf->queue_depth, b->labels);
    if (!b->m_inferences || !b->m_executions || !b->m_queue ||
        !b->m_compute || !b->m_batch || !b->m_depth)
        return ss_err_set(err, SS_ENOMEM, "no memory for metric series");
    return 0;
}

static void
metrics_detach(ss_batcher_t *b)
{
    const ss_batch_metrics_t *mf = b->mf;

    if (mf == NULL)
        return;
    ss_metric_series_remove(mf->inference_count, b->labels);
    ss_metric_series_remove(mf->execution_count, b->labels);
    ss_metric_series_remove(mf->queue_duration, b->labels);
    ss_metric_series_remove(mf->compute_duration, b->labels);
    ss_metric_series_remove(mf->batch_size, b->labels);
    ss_metric_series_remove(mf->queue_depth, b->labels);
    ss__batch_moe_remove(b);
}

/* [locked] */
static void
set_depth(ss_batcher_t *b)
{
    if (b->m_depth != NULL)
        ss_series_set(b->m_depth, b->depth);
}

/* ---- items -------------------------------------------------------------- */

void
ss_work_clear_outputs(ss_work_t *w)
{
    if (w == NULL || w->outputs == NULL)
        return;
    for (int i = 0; i < w->n_outputs; i++)
        ss_free(w->outputs[i].data);
    ss_free(w->outputs);
    w->outputs = NULL;
    w->n_outputs = 0;
}

/* Checks w's inputs against the graph and finds its batch. */
static int
check_item(ss_batcher_t *b, const ss_work_t *w, int64_t *samples,
           ss_err_t *err)
{
    int64_t n;
    int rc;

    *samples = 0;
    if (w->done == NULL)
        return ss_err_set(err, SS_EINVAL, "work item without a callback");
    if ((rc = ss_graph_check_inputs(b->g, w->n_inputs, w->inputs, NULL,
                                    b->max_batch > 0 ? SS_INPUTS_ROWS : 0,
                                    NULL, &n, err)) < 0)
        return rc;
    if (b->max_batch > 0 && (n < 1 || n > b->max_batch))
        return ss_err_set(err, SS_EINVAL, "batch of %lld samples, the "
                          "model takes 1 to %d per request", (long long)n,
                          b->max_batch);
    /* Values that would fail the run (an index out of range): refused
     * here, alone, instead of failing a batch with others in it. */
    if (b->check != NULL &&
        (rc = ss_input_check_run(b->check, w->inputs, err)) < 0)
        return rc;
    *samples = b->max_batch == 0 ? 1 : n;
    return 0;
}

/* [locked] Asks the pool for a visit if b has work an executor may take
 * now: not while paused (unless closing) or at its cap (the visit that
 * frees a slot asks again).  A batcher waiting in the timed list is
 * brought forward: new work may complete its batch. */
static void
kick(ss_batcher_t *b)
{
    if (b->head == NULL || (b->paused && !b->closing) ||
        b->running >= b->cap)
        return;
    if (!b->scheduled) {
        b->scheduled = true;
        b->sched_timed = false;
        ss__pool_push_ready(b->pool, b);
    } else if (b->sched_timed) {
        b->sched_timed = false;
        ss__pool_promote(b->pool, b);
    }
}

int
ss_batcher_submit(ss_batcher_t *b, ss_work_t *w, ss_err_t *err)
{
    int64_t samples;
    int rc;

    if ((rc = check_item(b, w, &samples, err)) < 0)
        return rc;
    w->status = 0;
    ss_err_clear(&w->err);
    w->n_outputs = 0;
    w->outputs = NULL;
    w->queue_ns = w->compute_ns = 0;
    w->batch_size = 0;
    w->samples_ = samples;
    w->next_ = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->closing) {
        rc = ss_err_set(err, SS_ENOTREADY, "the model is being unloaded");
    } else if (b->max_queue > 0 && b->depth >= b->max_queue) {
        rc = ss_err_set(err, SS_EBUSY, "the queue is full (%d requests)",
                        b->depth);
    } else {
        w->enqueue_ns_ = ss_clock_mono_ns();
        if (b->tail != NULL)
            b->tail->next_ = w;
        else
            b->head = w;
        b->tail = w;
        b->depth++;
        if (w->deadline_ns > 0)
            b->n_deadline++;
        set_depth(b);
        kick(b);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int
ss_batcher_queue_depth(ss_batcher_t *b)
{
    int n;

    pthread_mutex_lock(&b->lock);
    n = b->depth;
    pthread_mutex_unlock(&b->lock);
    return n;
}

void
ss_batcher_pause(ss_batcher_t *b, bool paused)
{
    pthread_mutex_lock(&b->lock);
    b->paused = paused;
    kick(b);
    pthread_mutex_unlock(&b->lock);
}

/* ---- batch formation (all [locked]) ------------------------------- */

/* Unlinks w, whose predecessor is prev (NULL at the head). */
static void
unlink_item(ss_batcher_t *b, ss_work_t *prev, ss_work_t *w)
{
    if (prev != NULL)
        prev->next_ = w->next_;
    else
        b->head = w->next_;
    if (b->tail == w)
        b->tail = prev;
    w->next_ = NULL;
    b->depth--;
    if (w->deadline_ns > 0)
        b->n_deadline--;
}

/* Moves items past their deadline to *expired (in queue order); returns
 * the earliest deadline still pending, or 0. */
static int64_t
reap_expired(ss_batcher_t *b, int64_t now, ss_work_t **expired)
{
    ss_work_t *prev = NULL, *w, *next, **tail = expired;
    int64_t next_deadline = 0;

    if (b->n_deadline == 0)
        return 0;
    for (w = b->head; w != NULL; w = next) {
        next = w->next_;
        if (w->deadline_ns > 0 && w->deadline_ns <= now) {
            unlink_item(b, prev, w);
            *tail = w;
            tail = &w->next_;
            continue;
        }
        if (w->deadline_ns > 0 &&
            (next_deadline == 0 || w->deadline_ns < next_deadline))
            next_deadline = w->deadline_ns;
        prev = w;
    }
    return next_deadline;
}

/* Whether w can share a batch with h: every non-batch dim agrees (dtypes
 * and ranks were checked against the graph at submit).  Never when an
 * input decides shapes by its values (a TopK's K, a NonZero's data): the
 * batch's concatenated values would decide them for every item at once,
 * so each item runs alone, on the plan for its own values, and a value
 * that makes no valid shape fails its own request only. */
static bool
compatible(const ss_batcher_t *b, const ss_work_t *h, const ss_work_t *w)
{
    if (b->shape_inputs > 0)
        return false;
    for (int i = 0; i < b->n_inputs; i++) {
        const ss_tensor_t *x = &h->inputs[i], *y = &w->inputs[i];

        for (int d = 1; d < x->ndim; d++)
            if (x->dims[d] != y->dims[d])
                return false;
    }
    return true;
}

/* The batch to form now, given avail compatible samples, or 0 to wait. */
static int64_t
batch_target(const ss_batcher_t *b, int64_t avail, bool delay_over)
{
    int64_t best = 0;
    int pref_max = b->n_preferred > 0 ? b->preferred[b->n_preferred - 1] : 0;

    if (delay_over)
        return avail < b->max_batch ? avail : b->max_batch;
    if (avail < b->max_batch && (pref_max == 0 || avail < pref_max))
        return 0;
    for (int i = 0; i < b->n_preferred; i++)
        if (b->preferred[i] <= avail)
            best = b->preferred[i];
    if (best == 0)
        best = b->max_batch;
    return best;
}

/* Takes the batch headed by the oldest item if it is time; returns it (a
 * list) and its samples, or NULL and the time to wake up (0: no timer). */
static ss_work_t *
take_batch(ss_batcher_t *b, int64_t now, int64_t *samples, int64_t *wake)
{
    ss_work_t *h = b->head, *w, *prev, *next, *batch = NULL, **tail = &batch;
    int64_t avail = 0, target, taken = 0;
    bool delay_over;

    *samples = 0;
    *wake = 0;
    if (b->max_batch == 0) {
        unlink_item(b, NULL, h);
        *samples = h->samples_;
        return h;
    }
    for (w = h; w != NULL && avail < b->max_batch; w = w->next_)
        if (w == h || compatible(b, h, w))
            avail += w->samples_;
    delay_over = b->closing || now - h->enqueue_ns_ >= b->delay_ns;
    if ((target = batch_target(b, avail, delay_over)) == 0) {
        *wake = h->enqueue_ns_ + b->delay_ns;
        return NULL;
    }
    if (target < h->samples_)
        target = h->samples_;
    prev = NULL;
    for (w = h; w != NULL && taken < target; w = next) {
        next = w->next_;
        if ((w == h || compatible(b, h, w)) && taken + w->samples_ <= target) {
            unlink_item(b, prev, w);
            taken += w->samples_;
            *tail = w;
            tail = &w->next_;
        } else {
            prev = w;
        }
    }
    *samples = taken;
    return batch;
}

/* [locked] After a visit: when must the pool come back?  Now when work
 * may be taken at once, at `when` (the delay of the oldest item, or the
 * next deadline) when only time can make a batch, never when there is no
 * work, while paused or at the cap. */
static void
reschedule(ss_batcher_t *b, bool took, int64_t when)
{
    if (b->head == NULL || (b->paused && !b->closing) ||
        b->running >= b->cap)
        return;
    b->scheduled = true;
    if (took || when <= 0) {
        b->sched_timed = false;
        ss__pool_push_ready(b->pool, b);
    } else {
        b->sched_timed = true;
        ss__pool_push_timed(b->pool, b, when);
    }
}

void
ss__batch_visit(ss_batcher_t *b, ss_work_t **batch, int64_t *samples,
                ss_work_t **expired)
{
    int64_t now, wake = 0, deadline = 0;

    *batch = *expired = NULL;
    *samples = 0;
    pthread_mutex_lock(&b->lock);
    b->scheduled = false;
    if (!b->paused || b->closing) {
        now = ss_clock_mono_ns();
        deadline = reap_expired(b, now, expired);
        if (b->head != NULL && b->running < b->cap)
            *batch = take_batch(b, now, samples, &wake);
        if (*batch != NULL || *expired != NULL)
            b->running++;
        if (deadline > 0 && (wake == 0 || deadline < wake))
            wake = deadline;
        /* What is left may make a batch for another executor at once. */
        reschedule(b, *batch != NULL || *expired != NULL, wake);
    }
    set_depth(b);
    if (b->closing)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void
ss__batch_visit_done(ss_batcher_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->running--;
    kick(b);
    if (b->closing)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* ---- life cycle ------------------------------------------------------ */

static int
cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

/* Keeps the preferred sizes in 1..max_batch, sorted, without duplicates. */
static int
copy_preferred(ss_batcher_t *b, const ss_batch_opts_t *o, ss_err_t *err)
{
    int n = 0;

    if (o->n_preferred <= 0 || o->preferred_batch_sizes == NULL ||
        b->max_batch == 0)
        return 0;
    b->preferred = ss_calloc((size_t)o->n_preferred, sizeof *b->preferred);
    if (b->preferred == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for batch sizes");
    for (int i = 0; i < o->n_preferred; i++) {
        int s = o->preferred_batch_sizes[i];

        if (s >= 1 && s <= b->max_batch)
            b->preferred[n++] = s;
    }
    qsort(b->preferred, (size_t)n, sizeof *b->preferred, cmp_int);
    b->n_preferred = 0;
    for (int i = 0; i < n; i++)
        if (i == 0 || b->preferred[i] != b->preferred[i - 1])
            b->preferred[b->n_preferred++] = b->preferred[i];
    return 0;
}

static int
check_opts(const ss_graph_t *g, const ss_batch_opts_t *o, ss_err_t *err)
{
    if (o->instances < (o->pool != NULL ? 0 : 1) || o->max_batch_size < 0 ||
        o->max_queue_delay_us < 0 || o->max_queue_size < 0 ||
        o->threads < 0 || o->n_preferred < 0)
        return ss_err_set(err, SS_EINVAL, "bad batching options (instances "
                          "%d, max_batch_size %d, delay %lld us, queue %d)",
                          o->instances, o->max_batch_size,
                          (long long)o->max_queue_delay_us,
                          o->max_queue_size);
    if (o->max_batch_size == 0)
        return 0;
    for (int i = 0; i < ss_graph_num_inputs(g); i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);

        if (io->ndim < 1 || io->dims[0] >= 0)
            return ss_err_set(err, SS_EINVAL, "input '%s' has no symbolic "
                              "batch dimension, so max_batch_size must be "
                              "0", io->name);
    }
    return 0;
}

static int
sync_init(ss_batcher_t *b, ss_err_t *err)
{
    pthread_condattr_t ca;
    int ok;

    if (pthread_condattr_init(&ca) != 0)
        return ss_err_set(err, SS_ENOMEM, "cannot create a condition");
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&b->cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok)
        return ss_err_set(err, SS_ENOMEM, "cannot create a condition");
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        pthread_cond_destroy(&b->cond);
        return ss_err_set(err, SS_ENOMEM, "cannot create a mutex");
    }
    if (pthread_mutex_init(&b->log_lock, NULL) != 0) {
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->cond);
        return ss_err_set(err, SS_ENOMEM, "cannot create a mutex");
    }
    return 0;
}

/* Closes b: no new items, everything queued runs (the delay and a pause
 * no longer hold it back), and this batcher's visits finish, done
 * callbacks included; other batchers on the pool are not waited for.
 * Then frees what b holds.  Copes with a batcher that ss_batcher_new left
 * half built (synced: its locks exist; attached: the pool counts it). */
static void
destroy(ss_batcher_t *b, bool synced, bool attached)
{
    if (synced) {
        pthread_mutex_lock(&b->lock);
        b->closing = true;
        kick(b);
        while (b->head != NULL || b->running > 0 || b->scheduled)
            pthread_cond_wait(&b->cond, &b->lock);
        pthread_mutex_unlock(&b->lock);
    }
    if (attached)
        ss__pool_attach(b->pool, -1);
    ss_exec_pool_free(b->own_pool);
    ss__plancache_free(b->plans);
    ss__plancache_free(b->tplans);
    ss_input_check_free(b->check);
    metrics_detach(b);
    ss_free(b->model);
    ss_free(b->version);
    ss_free(b->preferred);
    ss_free(b->out_batched);
    if (synced) {
        pthread_mutex_destroy(&b->log_lock);
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
    }
    ss_free(b);
}

int
ss_batcher_new(const ss_graph_t *g, const ss_batch_opts_t *opts,
               ss_batcher_t **out, ss_err_t *err)
{
    ss_batcher_t *b = NULL;
    bool synced = false, attached = false;
    size_t budget = opts->max_plan_bytes > 0 ? (size_t)opts->max_plan_bytes
                                             : 0;
    int rc, size;

    *out = NULL;
    if ((rc = check_opts(g, opts, err)) < 0)
        goto done;
    if ((b = ss_calloc(1, sizeof *b)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a batcher");
        goto done;
    }
    b->g = g;
    b->n_inputs = ss_graph_num_inputs(g);
    b->n_outputs = ss_graph_num_outputs(g);
    b->max_batch = opts->max_batch_size;
    b->max_out = opts->max_output_bytes > 0
                 ? (size_t)opts->max_output_bytes : 0;
    b->shape_inputs = ss_graph_shape_inputs(g, NULL);
    b->delay_ns = opts->max_queue_delay_us * 1000;
    b->max_queue = opts->max_queue_size;
    if ((b->out_batched = ss_calloc((size_t)b->n_outputs + 1, 1)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a batcher");
        goto done;
    }
    for (int o = 0; o < b->n_outputs; o++) {
        const ss_io_info_t *io = ss_graph_output(g, o);

        b->out_batched[o] = b->max_batch == 0 ? 0 :
                            io->ndim == 0 ? -1 : io->dims[0] < 0;
    }
    if ((rc = copy_preferred(b, opts, err)) < 0 ||
        (rc = ss_input_check_new(g, &b->check, err)) < 0)
        goto done;
    if (opts->pool != NULL) {
        b->pool = opts->pool;
        size = ss_exec_pool_size(b->pool);
        b->cap = opts->instances > 0 && opts->instances < size
                     ? opts->instances : size;
        /* One executor per core already keeps every core busy. */
        b->threads = opts->threads > 0 ? opts->threads : 1;
    } else {
        if ((rc = ss_exec_pool_new(opts->instances, opts->cpus, &b->own_pool,
                                   err)) < 0)
            goto done;
        b->pool = b->own_pool;
        b->cap = opts->instances;
        b->threads = opts->threads;
    }
    b->tap = opts->tap;
    b->tap_user = opts->tap_user;
    b->pin = opts->pin;
    b->unpin = opts->unpin;
    if ((rc = sync_init(b, err)) < 0)
        goto done;
    synced = true;
    if (b->tap != NULL) {
        if ((rc = ss__plancache_new(g, PLAN_CACHE_CAP, &b->tplans,
                                    err)) < 0)
            goto done;
        ss__plancache_set_tapped(b->tplans);
        ss__plancache_set_output_limit(b->tplans, b->max_out,
                                       b->max_batch > 0);
        ss__plancache_set_plan_budget(b->tplans, budget);
    }
    if ((rc = ss__plancache_new(g, PLAN_CACHE_CAP, &b->plans, err)) < 0 ||
        (rc = metrics_attach(b, opts, err)) < 0)
        goto done;
    ss__plancache_set_output_limit(b->plans, b->max_out, b->max_batch > 0);
    ss__plancache_set_plan_budget(b->plans, budget);
    ss__pool_attach(b->pool, 1);
    attached = true;
    set_depth(b);
    *out = b;
    b = NULL;
done:
    if (b != NULL)
        destroy(b, synced, attached);
    return rc;
}

int
ss_batcher_warmup(ss_batcher_t *b, const int *sizes, int n, ss_err_t *err)
{
    ss_tensor_t *shapes = NULL;
    ss__plan_entry_t *pin;
    const ss_plan_t *plan;
    int rc = 0, runs = b->max_batch == 0 ? 1 : n;
    int omp_saved = ss__batch_omp_enter(b);

    if (b->shape_inputs > 0)
        goto done;              /* plans need a request's values */
    shapes = ss_calloc((size_t)b->n_inputs + 1, sizeof *shapes);
    if (shapes == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for warm-up shapes");
        goto done;
    }
    for (int i = 0; i < b->n_inputs; i++) {
        const ss_io_info_t *io = ss_graph_input(b->g, i);

        if (io->ndim < 0)
            goto done;          /* rank unknown until a request */
        shapes[i].dtype = io->dtype;
        shapes[i].ndim = io->ndim;
        memcpy(shapes[i].dims, io->dims, sizeof shapes[i].dims);
        for (int d = b->max_batch == 0 ? 0 : 1; d < io->ndim; d++)
            if (io->dims[d] < 0)
                goto done;      /* shape unknown until a request */
    }
    for (int k = 0; k < runs; k++) {
        if (b->max_batch > 0) {
            if (sizes[k] < 1 || sizes[k] > b->max_batch)
                continue;
            for (int i = 0; i < b->n_inputs; i++)
                shapes[i].dims[0] = sizes[k];
        }
        if ((rc = ss__plancache_get(b->plans, shapes, &plan, &pin, err)) < 0)
            goto done;
        ss__plancache_release(b->plans, pin);
        /* LoRA: the tapped plan of the size too, so the first request
         * with an adapter does not compile it (docs/lora.md) */
        if (b->tap != NULL) {
            if ((rc = ss__plancache_get(b->tplans, shapes, &plan, &pin,
                                        err)) < 0)
                goto done;
            ss__plancache_release(b->tplans, pin);
        }
    }
done:
    ss__batch_omp_restore(b, omp_saved);
    ss_free(shapes);
    return rc;
}

int
ss_batcher_drop_plans(ss_batcher_t *b)
{
    return ss__plancache_drop_idle(b->plans)
           + (b->tap != NULL ? ss__plancache_drop_idle(b->tplans) : 0);
}

int
ss_batcher_plan_count(ss_batcher_t *b)
{
    return ss__plancache_count(b->plans);
}

void
ss_batcher_free(ss_batcher_t *b)
{
    if (b != NULL)
        destroy(b, true, true);
}
