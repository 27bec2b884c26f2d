/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Control flow: Loop (plan_ctrl.c says how a subgraph is compiled and
 * run).  The body's plans follow the shapes its carried values take
 * iteration after iteration (one plan per distinct shapes, and per
 * iteration number where the body's shapes depend on it, at most
 * MAX_BODY_PLANS); scan outputs are written in place, iteration i at row
 * i; carried values alternate between two buffers.
 *
 * THREADS: compiled inside ss_plan_new; runs are [worker], on plans that
 * are immutable.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/plan/plan_ctrl.h"

#define MAX_BODY_PLANS 64       /* distinct shapes/iteration numbers */
#define ALIGN 64

/* ---- Loop ------------------------------------------------------------ */

typedef struct loop_cx {
    ss_plan_t *p;
    const ss_node_t *n;
    struct ss__ctrl *c;
    const ss_graph_t *body;
    ss_graph_t *vg;
    int N, K;
    ss_tensor_t *first;     /* iter, cond, carried: the formal inputs */
    ss_tensor_t *shapes;    /* all of vg's inputs */
    unsigned char *bind;
    int64_t iv;
    unsigned char cb;
} loop_cx_t;

/* The body plan for iteration i whose carried inputs have first's
 * shapes: an earlier one that fits, or a new one; its index in *out. */
static int
body_plan(loop_cx_t *L, int64_t i, int *out, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int rc;
    ss_plan_t *pl = NULL;

    for (int k = 0; k < c->n_plans; k++) {
        const ss_plan_t *q = c->plans[k];
        int fits = !L->bind[0]
                   || *(const int64_t *)q->vals[L->vg->inputs[0]].t.data == i;

        for (int j = 0; j < L->N && fits; j++) {
            const ss_tensor_t *a = &q->vals[L->vg->inputs[2 + j]].t;

            fits = a->ndim == L->first[2 + j].ndim
                   && memcmp(a->dims, L->first[2 + j].dims,
                             (size_t)a->ndim * sizeof(int64_t)) == 0;
        }
        if (fits) {
            *out = k;
            return 0;
        }
    }
    if (c->n_plans == MAX_BODY_PLANS)
        return ss__ctrl_refuse(L->p, L->n, err, "the body needs more than 64 plans "
                      "(its shapes change with every iteration)");
    L->iv = i;
    if ((rc = ss__ctrl_view_shapes(L->p, c->view[0], L->first, L->N + 2, L->shapes,
                          L->n, err)) < 0
        || (rc = ss__plan_build_sub(L->vg, L->p, L->shapes, L->bind,
                                    L->p->fuse, &pl, err)) < 0
        || (rc = ss__ctrl_add_plan(c, pl, err)) < 0)
        return rc < 0 ? ss_err_wrap(err, rc, "node '%s' (Loop): the body",
                                    ss__ctrl_label(L->n)) : rc;
    *out = c->n_plans - 1;
    return 0;
}

static int
sched_add(struct ss__ctrl *c, int k, ss_err_t *err)
{
    int *s;

    if (c->n_sched >= (1 << 20))
        return ss_err_set(err, SS_EUNSUPP, "a Loop's shapes change over "
                          "more than 2^20 iterations");
    if ((s = ss_realloc(c->sched, (size_t)(c->n_sched + 1) * sizeof(int)))
        == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
    c->sched = s;
    c->sched[c->n_sched++] = k;
    return 0;
}

/* Carried shapes after plan k into L->first; whether they changed. */
static int
next_shapes(loop_cx_t *L, int k)
{
    int changed = 0;

    for (int j = 0; j < L->N; j++) {
        const ss_io_info_t *o = ss_plan_output(L->c->plans[k], 1 + j);
        ss_tensor_t *t = &L->first[2 + j];

        changed |= o->dtype != t->dtype || o->ndim != t->ndim
                   || memcmp(o->dims, t->dims,
                             (size_t)o->ndim * sizeof(int64_t)) != 0;
        t->dtype = o->dtype;
        t->ndim = o->ndim;
        memcpy(t->dims, o->dims, sizeof(t->dims));
    }
    return changed;
}

/* Iterations known now: M and the condition are constants here, and so
 * is the body's condition in every body plan.  Sets c->trips, or leaves
 * it -1 when the body's condition is computed at run time. */
static int
simulate(loop_cx_t *L, int64_t m, int cond, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int64_t i = 0;
    int rc, k;

    L->bind[1] = 1;             /* the condition in is true while it runs */
    L->cb = 1;
    while (cond && i < m) {
        const ss_plan_t *q;
        int cr, changed;

        if ((rc = body_plan(L, i, &k, err)) < 0
            || (rc = sched_add(c, k, err)) < 0)
            return rc;
        q = c->plans[k];
        cr = ss__plan_root(q, L->body->outputs[0]);
        if (q->vals[cr].kind != SS_PV_CONST)
            return 0;           /* computed at run time */
        cond = ss__ctrl_truth(&q->vals[cr].t);
        changed = next_shapes(L, k);
        i++;
        if (cond && i < m && !changed && !L->bind[0]) {
            /* the same plan from here on, until m */
            if (m == INT64_MAX)
                return ss__ctrl_refuse(L->p, L->n, err, "the loop has no trip "
                              "count and its condition is always true");
            i = m;
        }
    }
    c->trips = i;
    return 0;
}

/* Iterations decided at run time: one body plan, carried shapes kept. */
static int
dynamic(loop_cx_t *L, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    int rc, k;

    if (L->K > 0)
        return ss__ctrl_refuse(L->p, L->n, err, "the body's condition is computed "
                      "at run time, and the loop has scan outputs, whose "
                      "shapes depend on the number of iterations");
    if (L->bind[0])
        return ss__ctrl_refuse(L->p, L->n, err, "the body's shapes depend on the "
                      "iteration number, and the number of iterations is "
                      "known only at run time");
    for (int i = 0; i < c->n_plans; i++)
        ss_plan_free(c->plans[i]);
    c->n_plans = 0;
    c->n_sched = 0;
    L->bind[1] = 0;
    for (int j = 0; j < L->N; j++) {
        L->first[2 + j] = L->p->vals[L->n->inputs[2 + j]].t;
        L->first[2 + j].data = NULL;
    }
    if ((rc = body_plan(L, 0, &k, err)) < 0
        || (rc = sched_add(c, k, err)) < 0)
        return rc;
    if (next_shapes(L, k))
        return ss__ctrl_refuse(L->p, L->n, err, "a loop-carried value changes shape, "
                      "and the number of iterations is known only at run "
                      "time");
    {
        const ss_plan_t *q = c->plans[k];
        int cr = ss__plan_root(q, L->body->outputs[0]);

        if (L->n->inputs[0] < 0 && q->vals[cr].kind == SS_PV_CONST
            && ss__ctrl_truth(&q->vals[cr].t))
            return ss__ctrl_refuse(L->p, L->n, err, "the loop has no trip count "
                          "and its body's condition is always true");
    }
    c->trips = -1;
    return 0;
}

/* The outputs' shapes and the run's buffer sizes. */
static int
loop_outputs(loop_cx_t *L, ss_err_t *err)
{
    struct ss__ctrl *c = L->c;
    const ss_node_t *n = L->n;
    int rc, k;
    size_t off = 0;

    if (L->K > 0 && c->n_plans == 0 && (rc = body_plan(L, 0, &k, err)) < 0)
        return rc;      /* no iteration: the scan outputs' shapes */
    if ((c->carried_off = ss_calloc((size_t)L->N + 1, sizeof(size_t)))
        == NULL
        || (c->carried_max = ss_calloc((size_t)L->N + 1, sizeof(size_t)))
           == NULL
        || (c->scan_bytes = ss_calloc((size_t)L->K + 1, sizeof(size_t)))
           == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
    for (int j = 0; j < L->N; j++) {
        ss_io_info_t io = { .dtype = L->first[2 + j].dtype,
                            .ndim = L->first[2 + j].ndim };

        memcpy(io.dims, L->first[2 + j].dims, sizeof(io.dims));
        if ((rc = ss__ctrl_set_out(L->p, n, n->outputs[j], &io, -1, err)) < 0)
            return rc;
        for (int q = 0; q < c->n_plans; q++) {
            const ss_io_info_t *o = ss_plan_output(c->plans[q], 1 + j);
            ss_tensor_t t = { .dtype = o->dtype, .ndim = o->ndim };
            size_t b = 0;

            memcpy(t.dims, o->dims, sizeof(t.dims));
            (void)ss__tensor_bytes(&t, &b);
            b = (b + ALIGN - 1) & ~(size_t)(ALIGN - 1);
            if (b > c->carried_max[j])
                c->carried_max[j] = b;
        }
        c->carried_off[j] = off;
        off += 2 * c->carried_max[j];
    }
    c->carried_bytes = off;
    for (int s = 0; s < L->K; s++) {
        const ss_io_info_t *o = ss_plan_output(c->plans[0], 1 + L->N + s);
        ss_tensor_t t = { .dtype = o->dtype, .ndim = o->ndim };

        for (int q = 1; q < c->n_plans; q++)
            if (!ss__ctrl_same_shape(o, ss_plan_output(c->plans[q], 1 + L->N + s)))
                return ss__ctrl_refuse(L->p, n, err, "a scan output changes shape "
                              "from one iteration to the next");
        memcpy(t.dims, o->dims, sizeof(t.dims));
        (void)ss__tensor_bytes(&t, &c->scan_bytes[s]);
        if ((rc = ss__ctrl_set_out(L->p, n, n->outputs[L->N + s], o,
                          c->trips, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss__ctrl_loop(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    const ss_graph_t *body = ss__attr_graph(n, "body");
    loop_cx_t L = { .p = p, .n = n, .body = body };
    unsigned char *decides = NULL;
    int64_t m = -1;
    int cond = -1, rc = 0;

    if (body == NULL || n->n_inputs < 2 || body->n_inputs != n->n_inputs
        || body->n_outputs < n->n_inputs - 1
        || n->n_outputs != body->n_outputs - 1)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): its "
                          "inputs, outputs and body's do not agree",
                          p->g->source, ss__ctrl_label(n));
    if (!ss__ctrl_named(n))
        return ss__ctrl_refuse(p, n, err, "an omitted output is not supported");
    L.N = n->n_inputs - 2;
    L.K = n->n_outputs - L.N;
    for (int j = 0; j < L.N; j++)
        if (n->inputs[2 + j] < 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): "
                              "loop-carried input %d is omitted",
                              p->g->source, ss__ctrl_label(n), j);
    /* M and cond: absent (none, true), known now, or at run time */
    if (n->inputs[0] < 0)
        m = INT64_MAX;
    else if (p->vals[ss__plan_root(p, n->inputs[0])].kind == SS_PV_CONST) {
        const ss_tensor_t *t = &p->vals[ss__plan_root(p, n->inputs[0])].t;

        if (t->dtype != SS_DTYPE_I64 || ss_tensor_numel(t) != 1)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): M "
                              "is not one int64", p->g->source, ss__ctrl_label(n));
        m = *(const int64_t *)t->data;
        if (m < 0)
            m = 0;
    }
    if (n->inputs[1] < 0)
        cond = 1;
    else if (p->vals[ss__plan_root(p, n->inputs[1])].kind == SS_PV_CONST)
        cond = ss__ctrl_truth(&p->vals[ss__plan_root(p, n->inputs[1])].t);
    if ((L.c = ss_calloc(1, sizeof(*L.c))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
        goto done;
    }
    L.c->loop = 1;
    L.c->node = n;
    L.c->n_carried = L.N;
    L.c->n_scan = L.K;
    L.c->trips = -1;
    if ((rc = ss__ctrl_view(p, body, &L.c->view[0], err)) < 0)
        goto done;
    L.vg = &L.c->view[0]->g;
    L.c->max_in = L.vg->n_inputs;
    if ((decides = ss_calloc((size_t)L.vg->n_inputs + 1, 1)) == NULL
        || (L.bind = ss_calloc((size_t)L.vg->n_inputs + 1, 1)) == NULL
        || (L.first = ss_calloc((size_t)L.N + 2, sizeof(ss_tensor_t)))
           == NULL
        || (L.shapes = ss_calloc((size_t)L.vg->n_inputs + 1,
                                 sizeof(ss_tensor_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a Loop");
        goto done;
    }
    (void)ss_graph_shape_inputs(L.vg, decides);
    for (int i = 2; i < L.vg->n_inputs; i++)
        if (decides[i]) {
            rc = ss__ctrl_refuse(p, n, err, "the body's shapes depend on the value "
                        "of a loop-carried or outer value");
            goto done;
        }
    L.bind[0] = decides[0];
    L.first[0] = (ss_tensor_t){ .dtype = SS_DTYPE_I64, .data = &L.iv };
    L.first[1] = (ss_tensor_t){ .dtype = SS_DTYPE_BOOL, .data = &L.cb };
    for (int j = 0; j < L.N; j++) {
        L.first[2 + j] = p->vals[n->inputs[2 + j]].t;
        L.first[2 + j].data = NULL;
        if (L.first[2 + j].ndim < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Loop): "
                            "loop-carried input %d has no known shape",
                            p->g->source, ss__ctrl_label(n), j);
            goto done;
        }
    }
    if (m >= 0 && cond >= 0 && (rc = simulate(&L, m, cond, err)) < 0)
        goto done;
    if (L.c->trips < 0 && (rc = dynamic(&L, err)) < 0)
        goto done;
    if ((rc = loop_outputs(&L, err)) < 0)
        goto done;
    rc = ss__ctrl_step(p, n, L.c, L.N + 2, err);
    L.c = NULL;
done:
    ss__ctrl_free(L.c);
    ss_free(decides);
    ss_free(L.bind);
    ss_free(L.first);
    ss_free(L.shapes);
    return rc;
}


int
ss__ctrl_run_loop(const struct ss__ctrl *c, ss_tensor_t *tab, ss_exec_ctx_t *sub,
         ss_tensor_t *ins, ss_tensor_t *outs, char *carried, ss_err_t *err)
{
    const ss_node_t *n = c->node;
    const ss_graph_t *vg = &c->view[0]->g;
    int N = c->n_carried, K = c->n_scan, rc;
    int64_t m = c->trips, iv = 0;
    unsigned char cb = 1, *cond_out = (unsigned char *)carried
                                      + c->carried_bytes;

    if (m < 0) {
        m = n->inputs[0] < 0 ? INT64_MAX : *(int64_t *)tab[n->inputs[0]].data;
        cb = n->inputs[1] < 0 ? 1 : (unsigned char)ss__ctrl_truth(&tab[n->inputs[1]]);
    }
    for (int j = 0; j < N; j++)
        ins[2 + j] = tab[n->inputs[2 + j]];
    for (int i = 2 + N; i < vg->n_inputs; i++)
        ins[i] = tab[vg->inputs[i]];
    memset(outs, 0, (size_t)(1 + N + K) * sizeof(*outs));
    for (iv = 0; iv < m && cb; iv++) {
        const ss_plan_t *pl = c->plans[c->sched[iv < c->n_sched
                                                ? iv : c->n_sched - 1]];

        ins[0] = (ss_tensor_t){ .dtype = SS_DTYPE_I64, .data = &iv };
        ins[1] = (ss_tensor_t){ .dtype = SS_DTYPE_BOOL, .data = &cb };
        outs[0] = (ss_tensor_t){ .data = cond_out };
        for (int j = 0; j < N; j++)
            outs[1 + j].data = carried + c->carried_off[j]
                               + (iv & 1) * c->carried_max[j];
        for (int k = 0; k < K; k++)
            outs[1 + N + k].data = (char *)tab[n->outputs[N + k]].data
                                   + (size_t)iv * c->scan_bytes[k];
        if ((rc = ss_plan_run(pl, sub, ins, outs, err)) < 0)
            return ss_err_wrap(err, rc, "iteration %lld", (long long)iv);
        for (int j = 0; j < N; j++)
            ins[2 + j] = outs[1 + j];
        if (c->trips < 0)
            cb = *cond_out != 0;
    }
    for (int j = 0; j < N; j++) {
        size_t b = 0;

        (void)ss__tensor_bytes(&ins[2 + j], &b);
        if (b > 0)
            memmove(tab[n->outputs[j]].data, ins[2 + j].data, b);
    }
    return 0;
}
