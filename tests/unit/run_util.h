/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_RUN_UTIL_H
#define SS_TESTS_RUN_UTIL_H

/*
 * Test helpers: fixture paths, and running a graph on the arrays of an
 * .npz named after its inputs.  Memory errors abort: test scaffolding.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "engine/engine.h"
#include "engine/io/npy.h"

static inline const char *
fx_path(char *buf, size_t len, const char *model, const char *file)
{
    const char *src = getenv("top_srcdir");

    snprintf(buf, len, "%s/tests/fixtures/%s/%s", src ? src : ".", model,
             file);
    return buf;
}

/* Threads each run's context uses (0: the library default).  Timings
 * use 1: on a loaded machine OpenMP barriers make 2-thread medians
 * meaningless. */
static int run_threads;

typedef struct run {
    ss_plan_t *plan;
    ss_exec_ctx_t *ctx;
    ss_tensor_t in[4];
    ss_tensor_t out[16];
    int n_out;
} run_t;

/* Compiles g for the inputs in z (by name); 0 or a negative code. */
static inline int
run_prepare(run_t *r, const ss_graph_t *g, const ss_npz_t *z, ss_err_t *err)
{
    int rc, n_in = ss_graph_num_inputs(g);

    memset(r, 0, sizeof(*r));
    for (int i = 0; i < n_in && i < 4; i++) {
        int k = ss_npz_find(z, ss_graph_input(g, i)->name);

        if (k < 0)
            return ss_err_set(err, SS_EINVAL, "no input %s",
                              ss_graph_input(g, i)->name);
        r->in[i] = *ss_npz_tensor(z, k);
    }
    if ((rc = ss_plan_new(g, r->in, &r->plan, err)) < 0)
        return rc;
    if ((rc = ss_exec_ctx_new(run_threads, &r->ctx, err)) < 0)
        return rc;
    r->n_out = ss_graph_num_outputs(g);
    for (int i = 0; i < r->n_out && i < 16; i++) {
        const ss_io_info_t *io = ss_plan_output(r->plan, i);
        size_t n = ss_dtype_size(io->dtype);

        for (int d = 0; d < io->ndim; d++)
            n *= (size_t)io->dims[d];
        r->out[i].data = ss_aligned_alloc(n + 1);
        if (r->out[i].data == NULL)
            abort();
    }
    return 0;
}

static inline int
run_once(run_t *r, ss_err_t *err)
{
    return ss_plan_run(r->plan, r->ctx, r->in, r->out, err);
}

static inline void
run_close(run_t *r)
{
    for (int i = 0; i < r->n_out && i < 16; i++)
        ss_free(r->out[i].data);
    ss_exec_ctx_free(r->ctx);
    ss_plan_free(r->plan);
    memset(r, 0, sizeof(*r));
}

static inline int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Median wall time of one run in microseconds over iters (after warm-up):
 * the median, because the machine is shared and a mean catches every
 * descheduling. */
static inline double
run_time_us(run_t *r, int iters)
{
    struct timespec a, b;
    double *t = malloc((size_t)iters * sizeof(double)), med;

    if (t == NULL)
        abort();
    for (int i = 0; i < 3; i++)
        (void)run_once(r, NULL);
    for (int i = 0; i < iters; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        (void)run_once(r, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = (double)(b.tv_sec - a.tv_sec) * 1e6
               + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    med = t[iters / 2];
    free(t);
    return med;
}

static inline int64_t
out_numel(const run_t *r, int i)
{
    return ss_tensor_numel(&r->out[i]);
}

#endif
