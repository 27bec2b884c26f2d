/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry as JSON: Triton's repository index, KServe model metadata,
 * Triton's model configuration, and the admin list of versions with their
 * lineage.
 *
 * THREADS: [loop], except ss_version_metadata() and ss_version_config()
 * [any]: the version is immutable; the model's list is read under its
 * lock.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "server/model/registry.h"
#include "server/model/internal.h"

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

json_t *
ss_registry_index(ss_registry_t *r, bool ready_only)
{
    json_t *arr = json_array();
    const ss_model_t *m;
    char vs[24];
    int i;

    for (m = r->models; m != NULL; m = m->next) {
        int64_t disk[SS_MAX_ON_DISK];
        int n = ss__registry_list_versions(m->dir, disk, SS_MAX_ON_DISK);

        for (i = 0; i < n; i++) {
            int loaded = is_loaded(m, disk[i]);
            const char *st = loaded ? "READY" : state_name(m->state);
            json_t *e;

            if (!loaded && m->state == SS_MODEL_READY)
                st = "UNAVAILABLE";
            if (ready_only && !loaded)
                continue;
            snprintf(vs, sizeof(vs), "%lld", (long long)disk[i]);
            e = json_pack("{s:s,s:s,s:s}", "name", m->name, "version", vs,
                          "state", st);
            if (!loaded && m->reason[0])
                json_object_set_new(e, "reason", json_string(m->reason));
            else if (!loaded && m->state == SS_MODEL_READY)
                json_object_set_new(e, "reason",
                                    json_string("not wanted by the version "
                                                "policy"));
            json_array_append_new(arr, e);
        }
        if (n <= 0 && !ready_only)
            json_array_append_new(
                arr, json_pack("{s:s,s:s,s:s}", "name", m->name, "state",
                               "UNAVAILABLE", "reason",
                               m->reason[0] ? m->reason : "no versions"));
    }
    return arr;
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
    return json_pack("{s:s,s:o,s:s,s:o,s:o}", "name", m->name, "versions",
                     vers, "platform", "onnxruntime_onnx", "inputs", ins,
                     "outputs", outs);
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
    return c;
}

json_t *
ss_registry_versions(ss_registry_t *r, const char *name, ss_err_t *err)
{
    const ss_model_t *m = ss__registry_find(r, name);
    int64_t disk[SS_MAX_ON_DISK];
    json_t *arr, *hist;
    int i, n;

    if (m == NULL) {
        ss_err_set(err, SS_ENOTFOUND, "unknown model '%s'", name);
        return NULL;
    }
    n = ss__registry_list_versions(m->dir, disk, SS_MAX_ON_DISK);
    arr = json_array();
    for (i = 0; i < n; i++) {
        char path[4200];
        json_error_t je;
        json_t *e, *lineage;

        e = json_pack("{s:I,s:b,s:b}", "version", (json_int_t)disk[i],
                      "loaded", is_loaded(m, disk[i]), "active",
                      m->active != NULL && m->active->number == disk[i]);
        snprintf(path, sizeof(path), "%s/%lld/variant.json", m->dir,
                 (long long)disk[i]);
        lineage = json_load_file(path, 0, &je);
        if (lineage != NULL)
            json_object_set_new(e, "variant", lineage);
        json_array_append_new(arr, e);
    }
    hist = json_array();
    for (i = 0; i < m->n_history; i++)
        json_array_append_new(hist, json_integer(m->history[i]));
    return json_pack("{s:s,s:s,s:I,s:o,s:o}", "name", m->name, "state",
                     state_name(m->state), "active_version",
                     (json_int_t)(m->active ? m->active->number : 0),
                     "versions", arr, "history", hist);
}
