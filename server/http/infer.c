/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inference requests: from an HTTP body to a batcher work item and back.
 *
 * DESIGN: on the loop thread a request is decoded (kserve.c), validated
 * against the version's graph inputs, offered to the traffic sampler, and
 * submitted to the version's batcher with the connection suspended.  The
 * batcher calls done on an executor thread, which encodes the answer
 * there (keeping JSON writing off the loop), records metrics, drops the
 * version reference and hands the answer back with ss_req_finish().
 *
 * A request holds a reference to the version it was admitted to, so a hot
 * swap never changes the model under a queued request.
 *
 * THREADS: infer() [loop]; done() [worker]; the ctx belongs to whichever
 * of the two holds the request.
 */
#include "config.h"

#include "server/http/infer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "server/http/router.h"
#include "server/kserve/kserve.h"
#include "server/model/adapter.h"
#include "server/model/sampler.h"

typedef struct ctx {
    ss_req_t *req;
    ss_version_t *v;
    const ss_infer_metrics_t *im;
    ss_kserve_request_t *kr;
    /* Sized for the graph, in the same allocation after the struct. */
    ss_tensor_t *inputs;        /* graph order, data borrowed from kr */
    int *out_sel;               /* graph output indices to return */
    bool *out_bin;
    int n_out;
    int64_t start_ns;
    ss_work_t work;
} ctx_t;

#define MAX_IO 64

int
ss_infer_metrics_init(ss_metrics_t *m, ss_infer_metrics_t *out)
{
    static const char *const l3[] = { "model", "version", "result" };
    static const char *const l2[] = { "model", "version" };

    out->requests = ss_metrics_counter(
        m, "slimserve_model_requests_total",
        "Inference requests by model, version and result (success, "
        "bad_input, queue_full, timeout, error).", 3, l3);
    out->duration = ss_metrics_histogram(
        m, "slimserve_model_request_duration_seconds",
        "Inference request time from admission to answer.", 2, l2,
        (const double[]){ 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                          0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                          5, 10 },
        17);
    return out->requests && out->duration ? 0 : SS_ENOMEM;
}

/*
 * Looking a series up by its labels takes the metrics registry's mutex:
 * one global lock per request, on every loop and executor.  So each
 * thread keeps the series it used last for a few (model, version,
 * result) keys.  A model is stable for the registry's life and a
 * version's number names the same series whatever ss_version_t carries
 * it, and removed series are retired rather than freed, so a cached
 * pointer stays right even after the version is gone.
 */
#define SERIES_CACHE 8

typedef struct series_slot {
    const ss_infer_metrics_t *im;
    const ss_model_t *model;
    int64_t number;
    const char *result;         /* a string literal from result_name() */
    ss_series_t *requests;
    ss_series_t *duration;
} series_slot_t;

static __thread series_slot_t series_cache[SERIES_CACHE];

static void
count(const ss_infer_metrics_t *im, const ss_version_t *v,
      const char *result, int64_t start_ns)
{
    uintptr_t h = (uintptr_t)v->model ^ (uintptr_t)v->number * 31u ^
                  (uintptr_t)result >> 3;
    series_slot_t *slot = &series_cache[(h ^ h >> 7) % SERIES_CACHE];

    if (im == NULL || im->requests == NULL)
        return;
    if (slot->im != im || slot->model != v->model ||
        slot->number != v->number || slot->result != result) {
        const char *lv[3] = { ss_model_name(v->model), v->label, result };
        ss_series_t *rq = ss_metric_series(im->requests, lv);
        ss_series_t *du = ss_metric_series(im->duration, lv);

        if (rq == NULL || du == NULL) {
            /* Out of memory for a series: count nothing, cache nothing. */
            slot->im = NULL;
            return;
        }
        *slot = (series_slot_t){ im, v->model, v->number, result, rq, du };
    }
    ss_series_add(slot->requests, 1);
    if (start_ns > 0)
        ss_series_observe(slot->duration,
                          (double)(ss_clock_mono_ns() - start_ns) / 1e9);
}

static const char *
result_name(int rc)
{
    switch (rc) {
    case 0: return "success";
    case SS_EINVAL:
    case SS_EUNSUPP:
    case SS_ETOOBIG: return "bad_input";   /* the request's sizes */
    case SS_EBUSY: return "queue_full";
    case SS_ETIMEDOUT: return "timeout";
    default: return "error";
    }
}

static char *
error_body(const char *msg, size_t *len)
{
    char buf[SS_ERR_MSG_MAX * 3];
    json_t *j;

    /* Messages may quote names from the model file: JSON wants UTF-8. */
    ss_utf8_sanitize(buf, sizeof(buf), msg);
    j = json_pack("{s:s}", "error", buf);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

static void
ctx_free(ctx_t *c)
{
    if (c == NULL)
        return;
    ss_work_clear_outputs(&c->work);
    ss_kserve_request_free(c->kr);
    ss_adapter_unref(c->work.tag);      /* LoRA: the request's adapter */
    ss_version_unref(c->v);
    ss_free(c);
}

/* [worker] The batch is done: encode and answer. */
static void
done(ss_work_t *w, void *arg)
{
    ctx_t *c = arg;
    ss_kserve_output_t outs[MAX_IO];
    char *body = NULL;
    size_t len = 0, hlen = 0;
    ss_err_t err = { 0 };
    ss_req_t *req = c->req;
    int status = 200, i, rc = w->status;

    if (rc == 0) {
        for (i = 0; i < c->n_out; i++) {
            const ss_tensor_t *t = &w->outputs[c->out_sel[i]];

            outs[i].name = ss_graph_output(c->v->graph, c->out_sel[i])->name;
            outs[i].dtype = t->dtype;
            outs[i].ndim = t->ndim;
            outs[i].dims = t->dims;
            outs[i].data = t->data;
            outs[i].binary = c->out_bin[i];
        }
        rc = ss_kserve_encode_max(ss_model_name(c->v->model), c->v->label,
                                  c->kr->id, outs, c->n_out,
                                  (size_t)c->v->cfg.max_response_bytes,
                                  &body, &len, &hlen, &err);
    } else {
        err = w->err;
    }
    count(c->im, c->v, result_name(rc), c->start_ns);
    if (rc < 0) {
        status = ss_http_status_of(rc);
        free(body);
        body = error_body(err.msg, &len);
        ss_req_finish(req, status, "application/json", body, len);
    } else if (hlen < len) {
        char hl[32];

        snprintf(hl, sizeof(hl), "%zu", hlen);
        ss_req_add_header(req, "Inference-Header-Content-Length", hl);
        ss_req_finish(req, 200, "application/octet-stream", body, len);
    } else {
        ss_req_finish(req, 200, "application/json", body, len);
    }
    ctx_free(c);
}

static int
find_output(const ss_graph_t *g, const char *name)
{
    int i;

    for (i = 0; i < ss_graph_num_outputs(g); i++)
        if (strcmp(ss_graph_output(g, i)->name, name) == 0)
            return i;
    return -1;
}

/* The first element of t that is NaN or infinite, or -1.  Bit tests, so
 * any float format is read the same way and nothing traps. */
static int64_t
non_finite(const ss_tensor_t *t)
{
    int64_t i, n = ss_tensor_numel(t);

    switch (t->dtype) {
    case SS_DTYPE_F32:
        for (i = 0; i < n; i++)
            if ((((const uint32_t *)t->data)[i] & 0x7f800000u) ==
                0x7f800000u)
                return i;
        return -1;
    case SS_DTYPE_F64:
        for (i = 0; i < n; i++)
            if ((((const uint64_t *)t->data)[i] &
                 0x7ff0000000000000ull) == 0x7ff0000000000000ull)
                return i;
        return -1;
    case SS_DTYPE_F16:
        for (i = 0; i < n; i++)
            if ((((const uint16_t *)t->data)[i] & 0x7c00u) == 0x7c00u)
                return i;
        return -1;
    case SS_DTYPE_BF16:
        for (i = 0; i < n; i++)
            if ((((const uint16_t *)t->data)[i] & 0x7f80u) == 0x7f80u)
                return i;
        return -1;
    default:
        return -1;
    }
}

/* With reject_non_finite, a NaN or an infinity in any input is bad input:
 * the kernels do not propagate NaN as PyTorch does (oneDNN's ReLU and
 * max-pooling return the other operand), so the answer would be a
 * finite number that means nothing. */
static int
check_finite(const ctx_t *c, ss_err_t *err)
{
    const ss_graph_t *g = c->v->graph;
    int i;

    if (!c->v->cfg.reject_non_finite)
        return 0;
    for (i = 0; i < ss_graph_num_inputs(g); i++) {
        int64_t at = non_finite(&c->inputs[i]);

        if (at >= 0)
            return ss_err_set(err, SS_EINVAL, "input '%s': element %lld is "
                              "NaN or infinite (the model sets "
                              "reject_non_finite)", ss_graph_input(g, i)->name,
                              (long long)at);
    }
    return 0;
}

/* Checks the decoded inputs against the graph and lays them out in graph
 * order.  Returns the batch (rows; 1 for models that do not batch). */
static int64_t
validate(ctx_t *c, ss_err_t *err)
{
    const ss_graph_t *g = c->v->graph;
    const ss_kserve_request_t *kr = c->kr;
    ss_tensor_t given[MAX_IO];
    const char *names[MAX_IO];
    int i, batched, rc;
    int64_t batch;

    batched = c->v->cfg.max_batch_size > 0;
    if (ss_graph_num_inputs(g) > MAX_IO || ss_graph_num_outputs(g) > MAX_IO)
        return ss_err_set(err, SS_EUNSUPP, "model has too many inputs or "
                          "outputs");
    if (kr->n_inputs > MAX_IO)
        return ss_err_set(err, SS_EINVAL, "more than %d inputs", MAX_IO);
    for (i = 0; i < kr->n_inputs; i++) {
        const ss_kserve_input_t *in = &kr->inputs[i];

        names[i] = in->name;
        given[i].dtype = in->dtype;
        given[i].ndim = in->ndim;
        memcpy(given[i].dims, in->dims, sizeof(in->dims));
        given[i].data = in->data;
    }
    if ((rc = ss_graph_check_inputs(g, kr->n_inputs, given, names,
                                    batched ? SS_INPUTS_ROWS : 0, c->inputs,
                                    &batch, err)) < 0)
        return rc;
    if (batched && batch > c->v->cfg.max_batch_size)
        return ss_err_set(err, SS_EINVAL, "batch of %lld exceeds the "
                          "model's max_batch_size %d: split the request",
                          (long long)batch, c->v->cfg.max_batch_size);
    /* Outputs: all, or the ones asked for. */
    if (kr->n_outputs == 0) {
        c->n_out = ss_graph_num_outputs(g);
        for (i = 0; i < c->n_out; i++) {
            c->out_sel[i] = i;
            c->out_bin[i] = kr->binary_output;
        }
    } else {
        if (kr->n_outputs > ss_graph_num_outputs(g))
            return ss_err_set(err, SS_EINVAL, "%d outputs requested; the "
                              "model has %d", kr->n_outputs,
                              ss_graph_num_outputs(g));
        for (i = 0; i < kr->n_outputs; i++) {
            int o = find_output(g, kr->outputs[i].name);

            if (o < 0)
                return ss_err_set(err, SS_EINVAL, "unknown output '%s'",
                                  kr->outputs[i].name);
            c->out_sel[i] = o;
            c->out_bin[i] = kr->outputs[i].binary || kr->binary_output;
        }
        c->n_out = kr->n_outputs;
    }
    return batched ? batch : 1;
}

void
ss_infer_handle(ss_req_t *r, ss_registry_t *reg,
                const ss_infer_metrics_t *im, const char *model,
                const char *version, int64_t timeout_us)
{
    static const ss_kserve_limits_t lim = { 64, (size_t)1 << 31 };
    const char *hl, *body;
    ss_err_t err = { 0 };
    ss_version_t *v;
    int64_t vnum = 0, rows, hlen = -1;
    size_t len;
    char *end;
    ctx_t *c;
    int rc;

    if (version != NULL) {
        if ((vnum = ss_route_number(version)) <= 0) {
            ss_req_fail(r, SS_ENOTFOUND, "model '%s' has no version '%s'",
                        model, version);
            return;
        }
    }
    if ((rc = ss_registry_acquire(reg, model, vnum, &v, &err)) < 0) {
        ss_req_fail(r, rc, "%s", err.msg);
        return;
    }
    {
        /* One allocation, and only the header zeroed: this runs for every
         * request. */
        size_t ni = (size_t)ss_graph_num_inputs(v->graph),
               no = (size_t)ss_graph_num_outputs(v->graph);

        if ((c = ss_malloc(sizeof(*c) + ni * sizeof(ss_tensor_t) +
                           no * (sizeof(int) + sizeof(bool)))) == NULL) {
            ss_version_unref(v);
            ss_req_fail(r, SS_ENOMEM, "out of memory");
            return;
        }
        memset(c, 0, sizeof(*c));
        c->inputs = (ss_tensor_t *)(c + 1);
        c->out_sel = (int *)(c->inputs + ni);
        c->out_bin = (bool *)(c->out_sel + no);
    }
    c->req = r;
    c->v = v;
    c->im = im;
    c->start_ns = ss_clock_mono_ns();
    if ((hl = ss_req_header(r, "Inference-Header-Content-Length")) != NULL) {
        /* Digits only, in range, with blanks (SP, HTAB) around them: a
         * header value's optional whitespace (RFC 9110 5.5), which
         * libmicrohttpd strips before the value but not after.  strtoll
         * alone takes "", a sign, blanks in front only, and clamps what
         * overflows, none of which is a length. */
        const char *at = hl + strspn(hl, " \t");

        errno = 0;
        hlen = strtoll(at, &end, 10);
        end += strspn(end, " \t");
        if (at[0] < '0' || at[0] > '9' || *end != '\0' || errno != 0) {
            rc = ss_err_set(&err, SS_EINVAL, "bad "
                            "Inference-Header-Content-Length '%s'", hl);
            goto fail;
        }
    }
    body = ss_req_body(r, &len);
    if ((rc = ss_kserve_decode(body, len, hlen, &lim, &c->kr, &err)) < 0)
        goto fail;
    if ((rows = validate(c, &err)) < 0) {
        rc = (int)rows;
        goto fail;
    }
    if ((rc = check_finite(c, &err)) < 0)
        goto fail;
    /* LoRA: parameters.adapter names a loaded adapter of this version
     * (404 naming it otherwise); the request holds a reference to it
     * until ctx_free, so an unload drops no request. */
    if (c->kr->adapter != NULL) {
        ss_adapter_t *a;

        if ((rc = ss_lora_acquire(v->lora, c->kr->adapter, &a, &err)) < 0) {
            ss_err_wrap(&err, rc, "model '%s' version %s", model, v->label);
            goto fail;
        }
        c->work.tag = a;
        ss_adapter_count(a, rows);
    }
    if (ss_model_sampler(v->model) != NULL)
        ss_sampler_offer(ss_model_sampler(v->model),
                         ss_graph_num_inputs(v->graph), c->inputs, rows);
    c->work.n_inputs = ss_graph_num_inputs(v->graph);
    c->work.inputs = c->inputs;
    c->work.deadline_ns = v->cfg.timeout_us > 0
                              ? c->start_ns + v->cfg.timeout_us * 1000
                              : timeout_us > 0
                                    ? c->start_ns + timeout_us * 1000
                                    : 0;
    c->work.done = done;
    c->work.arg = c;
    ss_req_suspend(r);
    if ((rc = ss_batcher_submit(v->batcher, &c->work, &err)) < 0) {
        size_t blen;
        char *eb = error_body(err.msg, &blen);

        count(im, v, result_name(rc), c->start_ns);
        ss_req_finish(r, ss_http_status_of(rc), "application/json", eb, blen);
        ctx_free(c);
    }
    return;
fail:
    count(im, v, result_name(rc), c->start_ns);
    ss_req_fail(r, rc, "%s", err.msg);
    ctx_free(c);
}
