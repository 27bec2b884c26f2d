/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small plans run on one thread.
 *
 * DESIGN: each oneDNN step is an OpenMP team of the context's threads
 * with a static split and a barrier at its end.  A plan whose work is a
 * few million multiply-adds (the 28x28 CNN at batch 1: 5.8 M, 60 us on
 * one core) spends more on waking the team and waiting at those
 * barriers than the second thread saves: measured here, batch 1 on 2
 * threads took 0.113 ms (libgomp spinning) and 0.172 ms (passive wait)
 * against 0.058 / 0.063 on one (load 8).  So a plan of at most
 * SS_ONE_THREAD_MACS multiply-adds (convs, Gemm, MatMul) is compiled
 * with the calling thread's OpenMP count at 1 (oneDNN fixes a
 * primitive's split when it is created) and runs at 1, the caller's
 * count put back after.  SS_ENGINE_ONE_THREAD_MACS=N replaces the bound
 * (0: never).
 *
 * THREADS: the OpenMP count is the calling thread's own setting
 * (omp_set_num_threads); compile and run change it only for their own
 * duration.
 */

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan/internal.h"

#define SS_ONE_THREAD_MACS ((int64_t)8 << 20)

static int64_t
numel_of(const ss_plan_t *p, int v)
{
    return v >= 0 && p->vals[v].t.ndim >= 0 ? ss_tensor_numel(&p->vals[v].t)
                                            : 0;
}

/* Multiply-adds of the convs, Gemms and MatMuls that run (not folded). */
static int64_t
macs(const ss_plan_t *p)
{
    const ss_graph_t *g = p->g;
    int64_t m = 0;

    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        const ss_tensor_t *a, *w;
        int y = n->outputs[0];

        if (n->n_inputs < 2 || n->inputs[0] < 0 || n->inputs[1] < 0
            || p->vals[y].kind == SS_PV_CONST || p->vals[y].t.ndim < 0)
            continue;
        a = &p->vals[n->inputs[0]].t;
        w = &p->vals[n->inputs[1]].t;
        if (a->ndim < 1 || w->ndim < 1)
            continue;
        if (strcmp(n->op_type, "Conv") == 0)
            m += numel_of(p, y) * (ss_tensor_numel(w) / w->dims[0]);
        else if (strcmp(n->op_type, "Gemm") == 0)
            m += numel_of(p, y)
                 * a->dims[ss__attr_int(n, "transA", 0) ? 0 : a->ndim - 1];
        else if (strcmp(n->op_type, "MatMul") == 0)
            m += numel_of(p, y) * a->dims[a->ndim - 1];
    }
    return m;
}

int
ss__plan_threads_begin(ss_plan_t *p)
{
    const char *e = getenv("SS_ENGINE_ONE_THREAD_MACS");
    int64_t bound = e != NULL && e[0] != '\0' ? strtoll(e, NULL, 10)
                                              : SS_ONE_THREAD_MACS;
    int was = omp_get_max_threads();

    if (!p->fuse || was <= 1 || bound <= 0 || macs(p) > bound)
        return 0;
    p->one_thread = 1;
    omp_set_num_threads(1);
    return was;
}

void
ss__plan_threads_end(int was)
{
    if (was > 1)
        omp_set_num_threads(was);
}
