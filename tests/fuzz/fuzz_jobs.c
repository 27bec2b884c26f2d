/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the admin compress request parser
 * (ss__jobs_parse, server/jobs/jobs_parse.c).
 *
 * Input: one byte of framing, then the body.  Byte 0 bit 0 picks the
 * source model: without traffic sampling, or with a sampler (so that
 * "traffic" and the traffic default are reachable).  The body goes
 * through what ss_jobs_submit does before the parser (json_loadb with
 * duplicates refused, an object, a positive source_version), then the
 * parser against a real graph (tests/fixtures/mlp_op17, loaded once), and
 * the job's data is released as job_free releases it.  A failed parse must
 * leave an error message; a good one must leave a job the runner can
 * take: 1..8 methods, a data source, a gate within bounds, a data file
 * that is a plain .npz/.npy name, inline tensors laid out for the graph.
 *
 * The model is found at $SS_FUZZ_SRCDIR/tests/fixtures/mlp_op17/model.onnx,
 * SS_FUZZ_SRCDIR defaulting to the source tree the target was built from.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "server/jobs/internal.h"
#include "server/model/internal.h"
#include "server/model/sampler.h"

#ifndef SS_FUZZ_SRCDIR
#define SS_FUZZ_SRCDIR "."
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Built once, read-only afterwards: the parser only reads the version,
 * its graph and the model's sampler pointer. */
static ss_graph_t *graph;
static ss_model_t plain_model, sampled_model;
static ss_version_t plain_ver, sampled_ver;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("SS_FUZZ_SRCDIR");
    char path[4096];
    ss_err_t err;

    (void)argc;
    (void)argv;
    snprintf(path, sizeof(path), "%s/tests/fixtures/mlp_op17/model.onnx",
             dir ? dir : SS_FUZZ_SRCDIR);
    if (ss_graph_load_onnx(path, &graph, &err) < 0) {
        fprintf(stderr, "fuzz_jobs: %s: %s\n", path, err.msg);
        abort();
    }
    sampled_model.sampler = ss_sampler_new(64, 1.0, 1 << 20, NULL,
                                           "mlp");
    if (sampled_model.sampler == NULL)
        abort();
    plain_ver.model = &plain_model;
    plain_ver.graph = graph;
    sampled_ver.model = &sampled_model;
    sampled_ver.graph = graph;
    return 0;
}

/* As jobs.c's data_clear: the data owns its tensors. */
static void
data_clear(ss__job_data_t *d)
{
    for (int i = 0; i < d->n; i++)
        ss_free(d->inputs[i].data);
    ss_free(d->labels.data);
}

static bool
gate_ok(double x, bool fraction)
{
    return x == -1 || (x >= 0 && isfinite(x) && (!fraction || x <= 1));
}

static void
check_data(const ss__job_data_t *d)
{
    size_t n;

    switch (d->kind) {
    case SS__JOB_DATA_NONE:
    case SS__JOB_DATA_TRAFFIC:
        if (d->n != 0 || d->has_labels)
            __builtin_trap();
        break;
    case SS__JOB_DATA_FILE:
        n = strlen(d->file);
        if (n < 5 || strchr(d->file, '/') != NULL || d->file[0] == '.' ||
            (strcmp(d->file + n - 4, ".npz") != 0 &&
             strcmp(d->file + n - 4, ".npy") != 0))
            __builtin_trap();
        break;
    case SS__JOB_DATA_INLINE:
        /* Every graph input, in graph order, with the same row count. */
        if (d->n != ss_graph_num_inputs(graph) || d->rows <= 0)
            __builtin_trap();
        for (int i = 0; i < d->n; i++) {
            const ss_io_info_t *io = ss_graph_input(graph, i);

            if (d->inputs[i].dtype != io->dtype ||
                d->inputs[i].ndim != io->ndim ||
                d->inputs[i].dims[0] != d->rows ||
                d->inputs[i].data == NULL)
                __builtin_trap();
        }
        if (d->has_labels && (d->labels.ndim != 1 ||
                              d->labels.dims[0] != d->rows))
            __builtin_trap();
        break;
    default:
        __builtin_trap();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss__job_t *j = NULL;
    json_error_t je;
    json_t *root, *sv;
    ss_err_t err;
    int rc;

    if (size < 1)
        return 0;
    root = json_loadb((const char *)data + 1, size - 1,
                      JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return 0;
    if (!json_is_object(root))
        goto done;
    sv = json_object_get(root, "source_version");
    if (sv != NULL && (!json_is_integer(sv) || json_integer_value(sv) <= 0))
        goto done;
    if ((j = ss_calloc(1, sizeof(*j))) == NULL)
        goto done;
    j->src = data[0] & 1 ? &sampled_ver : &plain_ver;
    err.msg[0] = '\0';
    rc = ss__jobs_parse(j, root, &err);
    if (rc < 0) {
        if (err.msg[0] == '\0')
            __builtin_trap();
    } else {
        if (rc != 0 || j->n_methods < 1 ||
            j->n_methods > SS_JOB_MAX_METHODS)
            __builtin_trap();
        if (!gate_ok(j->gate.max_accuracy_drop, true) ||
            !gate_ok(j->gate.min_agreement, true) ||
            !gate_ok(j->gate.max_relative_error, false))
            __builtin_trap();
        if (j->val.kind == SS__JOB_DATA_NONE &&
            j->calib.kind == SS__JOB_DATA_NONE)
            __builtin_trap();
        check_data(&j->calib);
        check_data(&j->val);
    }
    data_clear(&j->calib);
    data_clear(&j->val);
done:
    ss_free(j);
    json_decref(root);
    return 0;
}
