/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plans of one small conv graph compiled three ways and run: the
 * reference kernels (SS_ENGINE_NO_FUSION=1), oneDNN without blocked
 * layouts (SS_ENGINE_NO_BLOCKED=1) and the default; random weights and
 * the error measure the layout and slice tests share.  Header-only: each
 * test program includes it once.
 */
#ifndef SS_TESTS_PLAN_RUNS_H
#define SS_TESTS_PLAN_RUNS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

enum { REF, PLAIN, BLOCKED };

#define N_OUT 3

static uint32_t seed = 77;

static float
frand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static inline void
init_rand(mb_t *b, const char *name, int ndim, const int64_t *dims,
          float scale)
{
    int64_t n = 1;
    float *v;

    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    v = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        v[i] = frand() * scale;
    mb_init_f32(b, name, ndim, dims, v);
    free(v);
}

static inline Onnx__NodeProto *
conv(mb_t *b, const char *name, const char *ins, const char *out,
     int64_t pad, int64_t stride, int64_t group)
{
    Onnx__NodeProto *n = mb_node(b, "Conv", name, ins, out);
    const int64_t pads[4] = { pad, pad, pad, pad }, st[2] = { stride, stride };

    if (pad)
        mb_attr_ints(b, n, "pads", 4, pads);
    if (stride != 1)
        mb_attr_ints(b, n, "strides", 2, st);
    if (group != 1)
        mb_attr_int(b, n, "group", group);
    return n;
}

/* The OpenMP threads of run()'s execution context. */
static int run_threads = 1;

static void
set_mode(int mode)
{
    if (mode == REF)
        setenv("SS_ENGINE_NO_FUSION", "1", 1);
    else
        unsetenv("SS_ENGINE_NO_FUSION");
    if (mode == PLAIN)
        setenv("SS_ENGINE_NO_BLOCKED", "1", 1);
    else
        unsetenv("SS_ENGINE_NO_BLOCKED");
}

/* Compiles g in mode for x (ndim dims) and runs it; y[k] get the n_out
 * outputs (malloc'ed), n[k] their sizes.  The plan is kept in *keep. */
static int
run(const ss_graph_t *g, int mode, int ndim, const int64_t *dims,
    const float *x, int n_out, float **y, int64_t *n, ss_plan_t **keep)
{
    ss_tensor_t in = { .dtype = SS_DTYPE_F32, .ndim = ndim };
    ss_tensor_t out[N_OUT];
    ss_exec_ctx_t *c = NULL;
    ss_err_t err = { 0 };
    int rc;

    memset(out, 0, sizeof(out));
    memcpy(in.dims, dims, (size_t)ndim * sizeof(int64_t));
    in.data = (void *)x;
    set_mode(mode);
    rc = ss_plan_new(g, &in, keep, &err);
    set_mode(BLOCKED);
    if (rc < 0 || (rc = ss_exec_ctx_new(run_threads, &c, &err)) < 0) {
        tap_diag("compile: %s", err.msg);
        goto done;
    }
    for (int k = 0; k < n_out; k++) {
        const ss_io_info_t *oi = ss_plan_output(*keep, k);

        out[k].dtype = oi->dtype;
        out[k].ndim = oi->ndim;
        memcpy(out[k].dims, oi->dims, sizeof(oi->dims));
        n[k] = ss_tensor_numel(&out[k]);
        y[k] = calloc((size_t)n[k] + 1, sizeof(float));
        out[k].data = y[k];
    }
    if ((rc = ss_plan_run(*keep, c, &in, out, &err)) < 0)
        tap_diag("run: %s", err.msg);
done:
    ss_exec_ctx_free(c);
    return rc;
}

/* The largest difference relative to the largest |want|: a ReLU output
 * near 0 makes an element-wise relative error meaningless. */
static double
max_rel_err(const float *got, const float *want, int64_t n)
{
    double m = 0, scale = 1e-6;

    for (int64_t i = 0; i < n; i++)
        if (fabs(want[i]) > scale)
            scale = fabs(want[i]);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / scale;

        if (!(d <= m))
            m = d;
    }
    return m;
}

/* The oneDNN steps of p whose fused ops read what ("Conv+Clip"). */
static inline int
count_steps(const ss_plan_t *p, const char *what)
{
    int n = 0;

    for (int s = 0; s < p->n_steps; s++)
        n += p->steps[s].kind == SS_STEP_DNN
             && strcmp(p->steps[s].what, what) == 0;
    return n;
}

/* The three plans of a test (REF, PLAIN, BLOCKED), their outputs and the
 * input. */
static void
free_runs(ss_plan_t *p[3], float *y[3][N_OUT], float *x)
{
    for (int m = 0; m < 3; m++) {
        for (int k = 0; k < N_OUT; k++)
            free(y[m][k]);
        ss_plan_free(p[m]);
    }
    free(x);
}

#endif
