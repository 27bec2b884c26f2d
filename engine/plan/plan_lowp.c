/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Low-precision compilation, the shared part: what the int8 pass
 * (plan_qdq.c) and the bf16 pass (plan_bf16.c) both need, and the entry
 * point.  Both run before the f32 fusion (plan_fuse.c), which then
 * handles whatever is left; values they add (converted copies) get their
 * layout recorded for the layout pass (plan_layout.c).
 *
 * THREADS: runs inside ss_plan_new.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/edit.h"
#include "engine/plan/internal.h"

/* ---- inserted steps --------------------------------------------------- */

/* The NHWC copy of v made so far, or -1. */
int
ss__lp_twin_of(const ss__lp_inslist_t *l, int v)
{
    for (int i = 0; i < l->n_twin; i++)
        if (l->twin[2 * i] == v)
            return l->twin[2 * i + 1];
    return -1;
}

void
ss__lp_twin_add(ss__lp_inslist_t *l, int v, int nhwc)
{
    if (l->n_twin < 64) {
        l->twin[2 * l->n_twin] = v;
        l->twin[2 * l->n_twin + 1] = nhwc;
        l->n_twin++;
    }
}

/* A new plan value: v's shape in type dt, in the arena, stored in layout
 * l (plan_layout.c reads it: it must not "fix" what we convert). */
int
ss__lp_add_pval(ss_plan_t *p, int v, ss_dtype_t dt, ss_dnn_layout_t l,
         ss_err_t *err)
{
    ss_pval_t *vals = ss_realloc(p->vals, ((size_t)p->n_vals + 1)
                                          * sizeof(*vals));
    ss_pval_t *nv;

    if (vals == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for plan values");
    p->vals = vals;
    nv = &p->vals[p->n_vals];
    memset(nv, 0, sizeof(*nv));
    nv->t = p->vals[v].t;
    nv->t.dtype = dt;
    nv->t.data = NULL;
    nv->kind = SS_PV_ARENA;
    nv->alias = -1;
    nv->layout = l;
    (void)ss__tensor_bytes(&nv->t, &nv->bytes);
    return p->n_vals++;
}

/* Whether v is (or is viewed by) a graph output. */
int
ss__lp_is_graph_out(const ss_plan_t *p, int v)
{
    for (int i = 0; i < p->g->n_outputs; i++)
        for (int o = p->g->outputs[i]; o >= 0; o = p->vals[o].alias)
            if (o == v)
                return 1;
    return 0;
}

/* Queues a conversion step in -> out (cd says how) before/after `at`. */
int
ss__lp_ins_convert(ss_plan_t *p, ss__lp_inslist_t *l, int at, int after,
            const ss_dnn_convert_desc_t *cd, int in, int out,
            const char *what, ss_err_t *err)
{
    ss_step_t st = { 0 };
    int rc;

    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        ss__lp_ins_t *v = ss_realloc(l->v, (size_t)cap * sizeof(*v));

        if (v == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        l->v = v;
        l->cap = cap;
    }
    st.kind = SS_STEP_DNN;
    st.node = p->steps[at].node;
    st.n_in = 1;
    st.n_out = 1;
    snprintf(st.what, sizeof(st.what), "%s", what);
    if ((st.in = ss_malloc(sizeof(int))) == NULL
        || (st.out = ss_malloc(sizeof(int))) == NULL) {
        ss__plan_step_clear(&st);
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    }
    st.in[0] = in;
    st.out[0] = out;
    if ((rc = ss_dnn_convert_new(cd, &st.prim, err)) < 0) {
        ss__plan_step_clear(&st);
        return rc;
    }
    if (ss_dnn_prim_scratch_size(st.prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(st.prim);
    l->v[l->n++] = (ss__lp_ins_t){ at, after, st };
    return 0;
}

/* Rebuilds the step array with the queued steps in place; drops the
 * holes fusion left.  Takes the queued steps. */
int
ss__lp_ins_apply(ss_plan_t *p, ss__lp_inslist_t *l, ss_err_t *err)
{
    ss_step_t *steps;
    int n = 0;

    if (l->n == 0)
        return 0;
    if ((steps = ss_calloc((size_t)(p->n_steps + l->n), sizeof(*steps)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    for (int s = 0; s < p->n_steps; s++) {
        for (int i = 0; i < l->n; i++)
            if (l->v[i].at == s && !l->v[i].after)
                steps[n++] = l->v[i].st;
        if (p->steps[s].kind != 0)
            steps[n++] = p->steps[s];
        for (int i = 0; i < l->n; i++)
            if (l->v[i].at == s && l->v[i].after)
                steps[n++] = l->v[i].st;
    }
    for (int s = 0; s < n; s++)
        if (steps[s].n_in > p->max_io)
            p->max_io = steps[s].n_in;
    ss_free(p->steps);
    p->steps = steps;
    p->n_steps = n;
    p->cap_steps = n;
    l->n = 0;
    return 0;
}

void
ss__lp_ins_free(ss__lp_inslist_t *l)
{
    for (int i = 0; i < l->n; i++)
        ss__plan_step_clear(&l->v[i].st);
    ss_free(l->v);
}

int
ss__plan_lowp(ss_plan_t *p, ss_err_t *err)
{
    int rc;

    if ((rc = ss__lp_int8(p, err)) < 0)
        return rc;
    if (ss_graph_precision(p->g) == SS_DTYPE_BF16)
        rc = ss__lp_bf16(p, err);
    return rc;
}
