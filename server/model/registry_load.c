/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry's pool-thread half: reading a model's folder (its version
 * folders, the fingerprint of the files a load reads) and a task's work
 * (ss__registry_task_work): which versions to load, loading them (graph
 * import, batcher start, plan warm-up), and persisting the active
 * version before it is switched.  registry.c publishes the result on the
 * loop thread.
 *
 * THREADS: [pool] for the task work, which touches only its task;
 * the folder readers are [any].
 */
#include "config.h"

#include "server/model/registry.h"
#include "server/model/internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/log.h"
#include "server/model/adapter.h"

/* ---- scanning a model folder ------------------------------------------- */

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Lists the version folders holding a model.onnx, ascending. */
int
ss__registry_list_versions(const char *dir, int64_t *out, int max)
{
    struct dirent *e;
    char path[4096];
    struct stat st;
    DIR *d;
    int n = 0;

    if ((d = opendir(dir)) == NULL)
        return -errno;
    while ((e = readdir(d)) != NULL && n < max) {
        char *end;
        long long v;

        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        errno = 0;
        v = strtoll(e->d_name, &end, 10);
        if (errno != 0 || *end != '\0' || v <= 0)
            continue;
        if (snprintf(path, sizeof(path), "%s/%s/model.onnx", dir,
                     e->d_name) >= (int)sizeof(path))
            continue;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            out[n++] = v;
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof(*out), cmp_i64);
    return n;
}

int
ss__registry_file_stamp(const char *dir, int64_t v, int64_t *mtime, int64_t *size)
{
    char path[4096];
    struct stat st;

    if (snprintf(path, sizeof(path), "%s/%lld/model.onnx", dir,
                 (long long)v) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    if (stat(path, &st) < 0)
        return -errno;
    *mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    *size = (int64_t)st.st_size;
    return 0;
}

/* FNV-1a over the bytes of v. */
static uint64_t
fp_mix(uint64_t h, const void *v, size_t n)
{
    const unsigned char *p = v;

    while (n-- > 0)
        h = (h ^ *p++) * 1099511628211ull;
    return h;
}

static uint64_t
fp_stat(uint64_t h, const char *path)
{
    struct stat st;
    int64_t f[4] = { 0 };

    if (stat(path, &st) == 0) {
        f[0] = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        f[1] = (int64_t)st.st_size;
        f[2] = (int64_t)st.st_ino;
        f[3] = 1;
    }
    return fp_mix(h, f, sizeof(f));
}

/* The LoRA adapters a load reads (adapter.h): per folder of adapters/
 * (not the hidden temporaries a job writes), its name and its two files.
 * Summed, so the order readdir gives does not matter. */
static uint64_t
fp_adapters(const char *dir)
{
    char path[4400];
    struct dirent *e;
    uint64_t sum = 0;
    DIR *d;

    if (snprintf(path, sizeof(path), "%s/adapters", dir) >= (int)sizeof(path)
        || (d = opendir(path)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t h = 14695981039346656037ull;

        if (e->d_name[0] == '.')
            continue;
        h = fp_mix(h, e->d_name, strlen(e->d_name));
        snprintf(path, sizeof(path), "%s/adapters/%s/adapter_config.json",
                 dir, e->d_name);
        h = fp_stat(h, path);
        snprintf(path, sizeof(path),
                 "%s/adapters/%s/adapter_model.safetensors", dir, e->d_name);
        sum += fp_stat(h, path);
    }
    closedir(d);
    return sum + 1;
}

uint64_t
ss__registry_files_fp(const char *dir)
{
    int64_t vs[SS_MAX_ON_DISK];
    char path[4096];
    uint64_t h = 14695981039346656037ull, ad = fp_adapters(dir);
    int i, n;

    if (snprintf(path, sizeof(path), "%s/config.json", dir) <
        (int)sizeof(path))
        h = fp_stat(h, path);
    n = ss__registry_list_versions(dir, vs, SS_MAX_ON_DISK);
    for (i = 0; i < n; i++) {
        h = fp_mix(h, &vs[i], sizeof(vs[i]));
        if (snprintf(path, sizeof(path), "%s/%lld/model.onnx", dir,
                     (long long)vs[i]) < (int)sizeof(path))
            h = fp_stat(h, path);
    }
    h = fp_mix(h, &ad, sizeof(ad));
    return fp_mix(h, &n, sizeof(n));
}

/* ---- loading (pool thread) --------------------------------------------- */

/* A model whose graph inputs have a fixed first dim cannot batch.  Nor
 * may one whose rows mix (request isolation, docs/architecture.md,
 * "Request path"): one with control flow (an If's branch or a Loop's
 * trip count may be decided by the whole batch: x.sum() > 0,
 * x.size(0) == 1), or one where a node computes a row from others (a
 * mean over axis 0, x @ x.T, x.reshape(1, -1), the batch size read as a
 * number: ss_graph_rows), so that one client's rows would change
 * another's answer.  Those run each request on its own, with a notice
 * and the reason in v->unbatched.  Models that decide shapes by their
 * inputs' values never batch (the batcher), so need no analysis. */
static int
effective_max_batch(ss_version_t *v, int configured, ss_err_t *err)
{
    const ss_graph_t *g = v->graph;
    const char *model = v->model->name, *node, *op = "";
    int i, n = ss_graph_num_inputs(g), rc;
    ss_rows_t rows;

    v->unbatched[0] = '\0';
    if (configured == 0)
        return 0;
    if ((node = ss_graph_control_node(g, &op)) != NULL) {
        snprintf(v->unbatched, sizeof(v->unbatched), "its %s node '%s' "
                 "may decide by the whole batch", op, node);
        goto alone;
    }
    for (i = 0; i < n; i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);

        if (io->ndim < 1 || io->dims[0] != -1)
            return 0;
    }
    if (ss_graph_shape_inputs(g, NULL) > 0)
        return configured;
    if ((rc = ss_graph_rows(g, &rows, err)) < 0)
        return rc;
    if (rows.independent)
        return configured;
    if (rows.node[0] != '\0' || rows.op[0] != '\0')
        snprintf(v->unbatched, sizeof(v->unbatched), "its %s node '%s' "
                 "mixes the batch's rows: %s", rows.op, rows.node, rows.why);
    else
        snprintf(v->unbatched, sizeof(v->unbatched), "its rows may mix: %s",
                 rows.why);
alone:
    ss_log_notice("model=%s runs each request on its own (max_batch_size "
                  "0): %s", model, v->unbatched);
    return 0;
}

static int
load_version(ss__registry_task_t *t, int64_t number, ss_version_t **out,
             ss_err_t *err)
{
    ss_registry_t *r = t->reg;
    ss_version_t *v;
    char path[4096];
    ss_batch_opts_t bo;
    ss_lora_opts_t lo;
    int warm[SS_MAX_PREFERRED + 2], nwarm = 0, i, rc;

    *out = NULL;
    if ((v = ss_calloc(1, sizeof(*v))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    ss_ref_init(&v->ref);
    v->model = t->model;
    v->number = number;
    snprintf(v->label, sizeof(v->label), "%lld", (long long)number);
    v->cfg = t->cfg;
    if (snprintf(path, sizeof(path), "%s/%lld/model.onnx", t->dir,
                 (long long)number) >= (int)sizeof(path)) {
        rc = ss_err_set(err, SS_EINVAL, "path too long");
        goto fail;
    }
    ss__registry_file_stamp(t->dir, number, &v->file_mtime_ns, &v->file_size);
    if ((rc = ss_graph_load_onnx(path, &v->graph, err)) < 0)
        goto fail;
    /* LoRA adapters when the model has an adapters/ folder: taps the
     * graph before its first plan (adapter.h). */
    lo = r->lora_metrics;
    lo.max_adapters = v->cfg.max_adapters;
    lo.max_bytes = v->cfg.max_adapter_bytes;
    lo.resident_bytes = v->cfg.adapter_resident_bytes;
    lo.model = t->model->name;
    lo.version = v->label;
    if ((rc = ss_lora_new(v->graph, t->dir, &lo, &v->lora, err)) < 0
        && rc != SS_ENOTFOUND)
        goto fail;
    ss_err_clear(err);
    v->weight_bytes = ss_graph_weight_bytes(v->graph);
    if ((rc = effective_max_batch(v, t->cfg.max_batch_size, err)) < 0)
        goto fail;
    v->cfg.max_batch_size = rc;
    memset(&bo, 0, sizeof(bo));
    bo.max_batch_size = v->cfg.max_batch_size;
    bo.max_queue_delay_us = v->cfg.max_queue_delay_us;
    bo.preferred_batch_sizes = v->cfg.preferred;
    bo.n_preferred = v->cfg.n_preferred;
    /* The registry's pool runs every version: instances caps how many of
     * its executors run this one at once, threads (0: one) are OpenMP
     * threads per batch. */
    bo.pool = r->pool;
    bo.instances = v->cfg.instances;
    bo.threads = v->cfg.threads;
    bo.max_queue_size = v->cfg.max_queue_size;
    bo.max_output_bytes = v->cfg.max_response_bytes;
    bo.max_plan_bytes = v->cfg.max_plan_bytes;
    bo.model = t->model->name;
    bo.version = v->label;
    bo.metrics = r->batch_metrics;
    bo.cpus = r->pin ? &r->cpus : NULL;
    bo.tap = v->lora != NULL ? ss_lora_tap : NULL;
    bo.tap_user = v->lora;
    bo.pin = v->lora != NULL ? ss_lora_pin : NULL;
    bo.unpin = v->lora != NULL ? ss_lora_unpin : NULL;
    if ((rc = ss_batcher_new(v->graph, &bo, &v->batcher, err)) < 0)
        goto fail;
    /* Warm-up.  "all": the sizes the batcher will form most, kept.
     * "check" (the default): batch 1 only, to refuse a model that does
     * not compile at load rather than at its first request, then freed:
     * a plan holds the packed weights (as large as the raw ones) and ~27
     * KB of primitives on the MNIST MLP, so a repository of 1,000 models
     * that mostly sit idle would hold 3x their weights in plans nobody
     * runs.  A batch size then compiles on its first use (0.3 ms for
     * that MLP's batch 1, measured). */
    warm[nwarm++] = 1;
    if (v->cfg.max_batch_size > 0 && v->cfg.warmup_all) {
        for (i = 0; i < v->cfg.n_preferred; i++)
            warm[nwarm++] = v->cfg.preferred[i];
        warm[nwarm++] = v->cfg.max_batch_size;
    }
    if ((rc = ss_batcher_warmup(v->batcher, warm, nwarm, err)) < 0)
        goto fail;
    if (!v->cfg.warmup_all)
        ss_batcher_drop_plans(v->batcher);
    *out = v;
    return 0;
fail:
    /* The engine's messages name the file already. */
    ss_err_wrap(err, rc, "version %lld", (long long)number);
    ss__version_destroy(v);
    return rc;
}

static int
find_have(const ss__registry_task_t *t, int64_t v)
{
    int i;

    for (i = 0; i < t->n_have; i++)
        if (t->have[i]->number == v)
            return i;
    return -1;
}

/* LOAD: the model's config.json (with the override over it), its version
 * folders, and which versions to (re)load: those the policy wants, or the
 * configured active one, unless already loaded from the same file with
 * the same config. */
static void
plan_load(ss__registry_task_t *t)
{
    ss_model_config_t *cfg = &t->cfg;
    int i, n;

    n = ss__registry_list_versions(t->dir, t->on_disk, SS_MAX_ON_DISK);
    if (n < 0) {
        t->rc = ss_err_set(&t->err, SS_ENOTFOUND, "unknown model '%s'",
                           t->name);
        return;
    }
    t->n_on_disk = n;
    t->found = true;
    if ((t->rc = ss_model_config_load(t->dir, cfg, &t->err)) < 0)
        return;
    if (t->override != NULL &&
        (t->rc = ss_model_config_apply(cfg, t->override, &t->err)) < 0) {
        ss_err_wrap(&t->err, t->rc, "config override");
        return;
    }
    for (i = 0; i < n && t->n_load < SS_MAX_LOADED; i++) {
        int64_t v = t->on_disk[i], mt = 0, sz = 0;
        int h = find_have(t, v);
        const ss_version_t *have = h >= 0 ? t->have[h] : NULL;

        if (!ss_model_config_wants(cfg, v, t->on_disk, n) &&
            v != cfg->active_version)
            continue;
        ss__registry_file_stamp(t->dir, v, &mt, &sz);
        /* Unchanged files keep their loaded version, unless the config
         * changed how it runs; its LoRA adapters follow the folder. */
        if (have != NULL && have->file_mtime_ns == mt &&
            have->file_size == sz &&
            memcmp(&have->cfg, cfg, sizeof(*cfg)) == 0) {
            if (have->lora != NULL)
                ss_lora_sync(have->lora, t->dir);
            continue;
        }
        if (have != NULL && have->file_mtime_ns == mt &&
            have->file_size == sz && t->override == NULL &&
            have->cfg.active_version != cfg->active_version)
            continue;
        t->load[t->n_load++] = v;
    }
}

/* ADD: the version must exist before anything is loaded or written. */
static void
plan_add(ss__registry_task_t *t)
{
    int64_t mt, sz;

    if (t->n_have == 0) {
        if (ss__registry_file_stamp(t->dir, t->version, &mt, &sz) < 0) {
            t->rc = ss_err_set(&t->err, SS_ENOTFOUND, "model '%s' has no "
                               "version %lld", t->name,
                               (long long)t->version);
            return;
        }
        t->load[0] = t->version;
        t->n_load = 1;
    }
}

void
ss__registry_task_work(uv_work_t *w)
{
    ss__registry_task_t *t = w->data;
    int i;

    /* Before anything is read: a change made while this load reads is
     * seen by the next scan. */
    t->files_fp = ss__registry_files_fp(t->dir);
    if (t->kind == SS__REGISTRY_TASK_LOAD)
        plan_load(t);
    else
        plan_add(t);
    if (t->rc < 0)
        return;
    for (i = 0; i < t->n_load; i++) {
        ss_err_t e = { 0 };
        ss_version_t *v = NULL;

        if (load_version(t, t->load[i], &v, &e) < 0) {
            snprintf(t->verr[i], sizeof(t->verr[i]), "%.*s",
                     (int)sizeof(t->verr[i]) - 1, e.msg);
            continue;
        }
        t->loaded[i] = v;
    }
    /* The active version is persisted before it is switched: a failed
     * write changes nothing, and a restart serves the same version. */
    if (t->kind == SS__REGISTRY_TASK_ADD &&
        (t->n_have > 0 || t->loaded[0] != NULL)) {
        t->persist_rc = ss_model_config_save_active(t->dir, t->version,
                                                    &t->persist_err);
        /* Our own write is not a change to pick up. */
        t->files_fp = ss__registry_files_fp(t->dir);
    }
}
