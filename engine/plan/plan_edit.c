/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plan edits the passes share: clearing a step, appending a value, asking
 * whether a value is a graph output or has views, and inserting steps
 * (conversions, reorders).
 *
 * DESIGN: a pass walks p->steps by index, so it cannot insert while it
 * walks: it queues the new steps (ss__plan_ins_step, ss__plan_ins_convert)
 * with the index they go before or after, and applies the queue at its
 * end (ss__plan_ins_apply), one rebuild of the array whatever the number
 * of insertions.  Values are appended, so ids stay stable, but p->vals
 * may move: hold ids, not pointers, across ss__plan_add_value.
 *
 * THREADS: runs inside ss_plan_new; no state of its own.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/internal.h"

void
ss__plan_step_clear(ss_step_t *s)
{
    ss_free(s->in);
    ss_free(s->out);
    ss_dnn_prim_free(s->prim);
    ss_dnn_prim_free(s->prim_tail);
    ss__moe_free(s->moe);
    ss__ctrl_free(s->ctrl);
    memset(s, 0, sizeof(*s));
}

int
ss__plan_add_value(ss_plan_t *p, int v, ss_dtype_t dt, ss_dnn_layout_t l,
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

int
ss__plan_is_graph_out(const ss_plan_t *p, int v)
{
    for (int i = 0; i < p->g->n_outputs; i++)
        for (int o = p->g->outputs[i]; o >= 0; o = p->vals[o].alias)
            if (o == v)
                return 1;
    /* Taps (engine.h) are kept as graph outputs are. */
    for (int i = 0; p->taps && i < p->g->n_taps; i++)
        for (int o = p->g->taps[i]; o >= 0; o = p->vals[o].alias)
            if (o == v)
                return 1;
    return 0;
}

int
ss__plan_has_views(const ss_plan_t *p, int v)
{
    for (int w = 0; w < p->n_vals; w++)
        if (p->vals[w].alias == v)
            return 1;
    return 0;
}

/* ---- inserted steps --------------------------------------------------- */

int
ss__plan_ins_step(ss__plan_inslist_t *l, int at, int after, ss_step_t *st,
                  ss_err_t *err)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        ss__plan_ins_t *v = ss_realloc(l->v, (size_t)cap * sizeof(*v));

        if (v == NULL) {
            ss__plan_step_clear(st);
            return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (ss__plan_ins_t){ at, after, *st };
    memset(st, 0, sizeof(*st));
    return 0;
}

int
ss__plan_ins_prim(ss_plan_t *p, ss__plan_inslist_t *l, int at, int after,
                  ss_dnn_prim_t *prim, int in, int out, const char *what,
                  ss_err_t *err)
{
    ss_step_t st = { 0 };

    st.kind = SS_STEP_DNN;
    st.node = p->steps[at].node;
    st.n_in = 1;
    st.n_out = 1;
    st.prim = prim;
    snprintf(st.what, sizeof(st.what), "%s", what);
    if ((st.in = ss_malloc(sizeof(int))) == NULL
        || (st.out = ss_malloc(sizeof(int))) == NULL) {
        ss__plan_step_clear(&st);
        return ss_err_set(err, SS_ENOMEM, "no memory for plan steps");
    }
    st.in[0] = in;
    st.out[0] = out;
    if (ss_dnn_prim_scratch_size(st.prim) > p->scratch_bytes)
        p->scratch_bytes = ss_dnn_prim_scratch_size(st.prim);
    return ss__plan_ins_step(l, at, after, &st, err);
}

int
ss__plan_ins_convert(ss_plan_t *p, ss__plan_inslist_t *l, int at,
                     int after, const ss_dnn_convert_desc_t *cd, int in,
                     int out, const char *what, ss_err_t *err)
{
    ss_dnn_prim_t *prim = NULL;
    int rc;

    if ((rc = ss_dnn_convert_new(cd, &prim, err)) < 0)
        return rc;
    return ss__plan_ins_prim(p, l, at, after, prim, in, out, what, err);
}

int
ss__plan_ins_apply(ss_plan_t *p, ss__plan_inslist_t *l, ss_err_t *err)
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
ss__plan_ins_free(ss__plan_inslist_t *l)
{
    for (int i = 0; i < l->n; i++)
        ss__plan_step_clear(&l->v[i].st);
    ss_free(l->v);
}
