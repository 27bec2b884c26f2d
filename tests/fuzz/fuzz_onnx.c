/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the ONNX loader, and for models that load, a plan at
 * batch 1 (symbolic dims set to 1) run once on zeros.  Any crash,
 * sanitizer report or leak is a bug: hostile models must fail with an
 * error.  Built and run by tests/fuzz/run.sh, not by make.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/engine.h"

/* Inputs and outputs beyond this are skipped, not run: the fuzzer looks
 * for crashes, not for the memory limit. */
#define MAX_ELEMS ((int64_t)1 << 22)

/* The plan's memory budget, far under libFuzzer's -malloc_limit_mb: a
 * model over it must fail with SS_ETOOBIG, not reach the allocator. */
#define PLAN_BUDGET "256M"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("SS_ENGINE_MAX_PLAN_BYTES", PLAN_BUDGET, 0);
    return 0;
}

static void *
zeros(const ss_dtype_t dt, int64_t numel)
{
    size_t es = ss_dtype_size(dt), n;

    if (es == 0 || numel < 0 || numel > MAX_ELEMS ||
        ss_mul_overflow(es, (size_t)numel, &n) < 0)
        return NULL;
    return ss_calloc(1, n ? n : 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_tensor_t in[16], out[16];
    ss_graph_t *g = NULL;
    ss_plan_t *p = NULL;
    ss_exec_ctx_t *ctx = NULL;
    int nin = 0, nout = 0, i;

    memset(in, 0, sizeof(in));
    memset(out, 0, sizeof(out));
    if (ss_graph_load_onnx_buffer(data, size, &g, NULL) < 0)
        return 0;
    nin = ss_graph_num_inputs(g);
    nout = ss_graph_num_outputs(g);
    if (nin < 0 || nin > 16 || nout < 0 || nout > 16)
        goto done;
    for (i = 0; i < nin; i++) {
        const ss_io_info_t *io = ss_graph_input(g, i);

        in[i].dtype = io->dtype;
        in[i].ndim = io->ndim;
        for (int k = 0; k < io->ndim && k < SS_MAX_DIMS; k++)
            in[i].dims[k] = io->dims[k] < 0 ? 1 : io->dims[k];
        if ((in[i].data = zeros(in[i].dtype, ss_tensor_numel(&in[i]))) ==
            NULL)
            goto done;
    }
    if (ss_plan_new(g, in, &p, NULL) < 0)
        goto done;
    for (i = 0; i < nout; i++) {
        const ss_io_info_t *io = ss_plan_output(p, i);

        out[i].dtype = io->dtype;
        out[i].ndim = io->ndim;
        memcpy(out[i].dims, io->dims, sizeof(out[i].dims));
        if ((out[i].data = zeros(out[i].dtype,
                                 ss_tensor_numel(&out[i]))) == NULL)
            goto done;
    }
    if (ss_exec_ctx_new(1, &ctx, NULL) < 0)
        goto done;
    (void)ss_plan_run(p, ctx, in, out, NULL);
done:
    for (i = 0; i < 16; i++) {
        ss_free(in[i].data);
        ss_free(out[i].data);
    }
    ss_exec_ctx_free(ctx);
    ss_plan_free(p);
    ss_graph_free(g);
    return 0;
}
