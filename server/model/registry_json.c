/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry as JSON: Triton's repository index, KServe model metadata,
 * Triton's model configuration, and the admin list of versions with their
 * lineage.
 *
 * THREADS: [loop], except ss_version_metadata() and ss_version_config()
 * [any]: the version is immutable; the model's list is read under its
 * lock.  The index and the versions list read the repository on a pool
 * thread (rd_work) and are built on the loop (rd_done).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/utf8.h"
#include "server/model/adapter.h"
#include "server/model/registry.h"
#include "server/model/internal.h"

json_t *
ss__registry_json_text(const char *text)
{
    char buf[SS_ERR_MSG_MAX * 3];

    ss_utf8_sanitize(buf, sizeof(buf), text);
    return json_string(buf);
}

static const char *
state_name(ss_model_state_t s)
{
    switch (s) {
    case SS_MODEL_LOADING: return "LOADING";
    case SS_MODEL_READY: return "READY";
    case SS_MODEL_UNLOADING: return "UNLOADING";
    default: return "UNAVAILABLE";
    }
}

static int
is_loaded(const ss_model_t *m, int64_t v)
{
    int i;

    for (i = 0; i < m->n_versions; i++)
        if (m->versions[i]->number == v)
            return 1;
    return 0;
}

/* ---- reads of the repository (pool thread), answered on the loop -------- */

/* One index or versions request: the pool thread lists folders and reads
 * variant.json files into its own arrays; the loop thread then joins them
 * with the loaded state it owns.  Models are never freed before the
 * registry, and the registry waits for these (r->tasks). */
typedef struct rd_model {
    ss_model_t *m;
    int n;                      /* versions on disk, or -errno */
    int64_t disk[SS_MAX_ON_DISK];
    json_t *variant[SS_MAX_ON_DISK]; /* versions: each variant.json */
} rd_model_t;

typedef struct rd {
    uv_work_t work;
    ss_registry_t *reg;
    bool versions;              /* else the index */
    bool ready_only;
    int n;
    rd_model_t *models;
    ss_registry_json_cb cb;
    void *arg;
} rd_t;

static void
rd_free(rd_t *q)
{
    int i, k;

    if (q == NULL)
        return;
    for (i = 0; i < q->n; i++)
        for (k = 0; k < SS_MAX_ON_DISK; k++)
            json_decref(q->models[i].variant[k]);
    ss_free(q->models);
    ss_free(q);
}

/* variant.json of a version: a small regular file, or nothing. */
static json_t *
read_variant(const char *dir, int64_t v)
{
    char path[4200];
    struct stat st;
    json_error_t je;
    json_t *j = NULL;
    int fd;

    snprintf(path, sizeof(path), "%s/%lld/variant.json", dir, (long long)v);
    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= 1 << 20)
        j = json_loadfd(fd, 0, &je);
    close(fd);
    return j;
}

static void
rd_work(uv_work_t *w)
{
    rd_t *q = w->data;
    int i, k;

    for (i = 0; i < q->n; i++) {
        rd_model_t *x = &q->models[i];

        x->n = ss__registry_list_versions(x->m->dir, x->disk,
                                          SS_MAX_ON_DISK);
        for (k = 0; q->versions && k < x->n; k++)
            x->variant[k] = read_variant(x->m->dir, x->disk[k]);
    }
}

static json_t *
index_json(const rd_t *q)
{
    json_t *arr = json_array();
    char vs[24];
    int i, k;

    for (i = 0; i < q->n; i++) {
        const rd_model_t *x = &q->models[i];
        const ss_model_t *m = x->m;

        for (k = 0; k < x->n; k++) {
            int loaded = is_loaded(m, x->disk[k]);
            const char *st = loaded ? "READY" : state_name(m->state);
            json_t *e;

            if (!loaded && m->state == SS_MODEL_READY)
                st = "UNAVAILABLE";
            if (q->ready_only && !loaded)
                continue;
            snprintf(vs, sizeof(vs), "%lld", (long long)x->disk[k]);
            e = json_pack("{s:s,s:s,s:s}", "name", m->name, "version", vs,
                          "state", st);
            if (!loaded && m->reason[0])
                json_object_set_new(e, "reason",
                                    ss__registry_json_text(m->reason));
            else if (!loaded && m->state == SS_MODEL_READY)
                json_object_set_new(e, "reason",
                                    json_string("not wanted by the version "
                                                "policy"));
            json_array_append_new(arr, e);
        }
        if (x->n <= 0 && !q->ready_only)
            json_array_append_new(
                arr, json_pack("{s:s,s:s,s:o}", "name", m->name, "state",
                               "UNAVAILABLE", "reason",
                               ss__registry_json_text(m->reason[0]
                                                          ? m->reason
                                                          : "no versions")));
    }
    return arr;
}

/* "moe_expert_rows": per sparse MoE layer of loaded version v, the rows
 * routed to each expert (docs/moe.md); absent without MoE layers. */
static void
moe_rows(const ss_model_t *m, int64_t v, json_t *e)
{
    uint64_t rows[128];
    json_t *layers;
    int n;

    for (int i = 0; i < m->n_versions; i++) {
        const ss_version_t *ver = m->versions[i];

        if (ver->number != v || ver->batcher == NULL
            || (layers = json_array()) == NULL)
            continue;
        for (int l = 0;
             (n = ss_batcher_moe_rows(ver->batcher, l, rows, 128)) > 0;
             l++) {
            json_t *a = json_array();

            for (int k = 0; k < n && k < 128; k++)
                json_array_append_new(a, json_integer((json_int_t)rows[k]));
            json_array_append_new(layers, a);
        }
        if (json_array_size(layers) > 0)
            json_object_set_new(e, "moe_expert_rows", layers);
        else
            json_decref(layers);
    }
}

static json_t *
versions_json(rd_t *q)
{
    rd_model_t *x = &q->models[0];
    const ss_model_t *m = x->m;
    json_t *arr = json_array(), *hist = json_array();
    int i;

    for (i = 0; i < x->n; i++) {
        json_t *e = json_pack("{s:I,s:b,s:b}", "version",
                              (json_int_t)x->disk[i], "loaded",
                              is_loaded(m, x->disk[i]), "active",
                              m->active != NULL &&
                                  m->active->number == x->disk[i]);

        if (x->variant[i] != NULL) {
            json_object_set_new(e, "variant", x->variant[i]);
            x->variant[i] = NULL;
        }
        moe_rows(m, x->disk[i], e);
        json_array_append_new(arr, e);
    }
    for (i = 0; i < m->n_history; i++)
        json_array_append_new(hist, json_integer(m->history[i]));
    return json_pack("{s:s,s:s,s:I,s:o,s:o}", "name", m->name, "state",
                     state_name(m->state), "active_version",
                     (json_int_t)(m->active ? m->active->number : 0),
                     "versions", arr, "history", hist);
}

static void
rd_done(uv_work_t *w, int status)
{
    rd_t *q = w->data;
    ss_registry_t *r = q->reg;
    ss_err_t err = { 0 };
    json_t *j = NULL;
    int rc = 0;

    r->tasks--;
    if (r->closing || status != 0)
        rc = ss_err_set(&err, SS_ENOTREADY, "the server is shutting down");
    else if ((j = q->versions ? versions_json(q) : index_json(q)) == NULL)
        rc = ss_err_set(&err, SS_ENOMEM, "out of memory");
    q->cb(q->arg, rc, j, rc < 0 ? &err : NULL);
    rd_free(q);
}

static int
rd_start(ss_registry_t *r, ss_model_t *only, bool ready_only,
         ss_registry_json_cb cb, void *arg, ss_err_t *err)
{
    ss_model_t *m;
    rd_t *q;
    int n = 0;

    if (r->closing)
        return ss_err_set(err, SS_ENOTREADY, "the server is shutting down");
    for (m = r->models; m != NULL; m = m->next)
        n++;
    if (only != NULL)
        n = 1;
    if ((q = ss_calloc(1, sizeof(*q))) == NULL ||
        (n > 0 && (q->models = ss_calloc((size_t)n,
                                         sizeof(*q->models))) == NULL)) {
        ss_free(q);
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    }
    q->reg = r;
    q->versions = only != NULL;
    q->ready_only = ready_only;
    q->cb = cb;
    q->arg = arg;
    if (only != NULL)
        q->models[q->n++].m = only;
    for (m = r->models; only == NULL && m != NULL; m = m->next)
        q->models[q->n++].m = m;
    q->work.data = q;
    if (uv_queue_work(r->loop, &q->work, rd_work, rd_done) < 0) {
        rd_free(q);
        return ss_err_set(err, SS_EINTERNAL, "cannot queue the read");
    }
    r->tasks++;
    return 0;
}

int
ss_registry_index(ss_registry_t *r, bool ready_only, ss_registry_json_cb cb,
                  void *arg, ss_err_t *err)
{
    return rd_start(r, NULL, ready_only, cb, arg, err);
}

static json_t *
io_json(const ss_io_info_t *io)
{
    json_t *shape = json_array();
    const char *dt = ss_dtype_kserve_name(io->dtype);
    int i;

    for (i = 0; i < io->ndim; i++)
        json_array_append_new(shape, json_integer(io->dims[i]));
    return json_pack("{s:s,s:s,s:o}", "name", io->name, "datatype",
                     dt ? dt : "UNKNOWN", "shape", shape);
}

json_t *
ss_version_metadata(const ss_version_t *v)
{
    ss_model_t *m = v->model;
    json_t *ins = json_array(), *outs = json_array(), *vers = json_array();
    json_t *md;
    int i;

    /* The list changes on the loop thread; this runs on an HTTP loop. */
    pthread_mutex_lock(&m->lock);
    for (i = 0; i < m->n_versions; i++)
        json_array_append_new(vers, json_string(m->versions[i]->label));
    pthread_mutex_unlock(&m->lock);
    for (i = 0; i < ss_graph_num_inputs(v->graph); i++)
        json_array_append_new(ins, io_json(ss_graph_input(v->graph, i)));
    for (i = 0; i < ss_graph_num_outputs(v->graph); i++)
        json_array_append_new(outs, io_json(ss_graph_output(v->graph, i)));
    md = json_pack("{s:s,s:o,s:s,s:o,s:o}", "name", m->name, "versions",
                   vers, "platform", "onnxruntime_onnx", "inputs", ins,
                   "outputs", outs);
    /* LoRA: the names of the adapters a request may choose (adapter.h). */
    if (md != NULL && v->lora != NULL) {
        json_t *names = json_array(), *list = ss_lora_list(v->lora), *a;
        size_t k;

        json_array_foreach(list, k, a)
            json_array_append(names, json_object_get(a, "name"));
        json_object_set_new(md, "adapters", names);
        json_decref(list);
    }
    return md;
}

static json_t *
io_config(const ss_io_info_t *io, int skip_batch)
{
    char type[32];
    const char *dt = ss_dtype_kserve_name(io->dtype);
    json_t *dims = json_array();
    int i;

    /* Triton spells FP32 as TYPE_FP32 and leaves the batch dim out. */
    snprintf(type, sizeof(type), "TYPE_%s", dt ? dt : "INVALID");
    for (i = skip_batch ? 1 : 0; i < io->ndim; i++)
        json_array_append_new(dims, json_integer(io->dims[i]));
    return json_pack("{s:s,s:s,s:o}", "name", io->name, "data_type", type,
                     "dims", dims);
}

json_t *
ss_version_config(const ss_version_t *v)
{
    const ss_model_t *m = v->model;
    json_t *c = ss_model_config_json(&v->cfg), *ins = json_array(),
           *outs = json_array();
    int skip = v->cfg.max_batch_size > 0, i;

    for (i = 0; i < ss_graph_num_inputs(v->graph); i++)
        json_array_append_new(ins,
                              io_config(ss_graph_input(v->graph, i), skip));
    for (i = 0; i < ss_graph_num_outputs(v->graph); i++)
        json_array_append_new(outs,
                              io_config(ss_graph_output(v->graph, i), skip));
    json_object_set_new(c, "name", json_string(m->name));
    json_object_set_new(c, "platform", json_string("onnxruntime_onnx"));
    json_object_set_new(c, "backend", json_string("slimserve"));
    json_object_set_new(c, "input", ins);
    json_object_set_new(c, "output", outs);
    if (v->unbatched[0] != '\0')
        json_object_set_new(c, "batching_disabled",
                            json_string(v->unbatched));
    return c;
}

int
ss_registry_versions(ss_registry_t *r, const char *name,
                     ss_registry_json_cb cb, void *arg, ss_err_t *err)
{
    ss_model_t *m = ss__registry_find(r, name);

    if (m == NULL)
        return ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
    return rd_start(r, m, false, cb, arg, err);
}
