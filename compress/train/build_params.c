/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Steps 1 and 2 of the training graph build (build.c): the nodes the
 * loss depends on, and what each initializer is (parameter, state,
 * constant), with tied parameters untied and constants made.
 *
 * THREADS: [worker]; a trainer belongs to one thread.
 */

#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

/* ---- step 1 and 2: what runs, what trains ------------------------------- */

int
ss__tb_mark_needed(const ss_graph_t *g, int out_value, uint8_t *need,
                   ss_err_t *err)
{
    uint8_t *vneed = ss_calloc((size_t)g->n_values, 1);
    int i, k;

    if (vneed == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory");
    vneed[out_value] = 1;
    for (i = g->n_nodes - 1; i >= 0; i--) {
        const ss_node_t *n = &g->nodes[i];
        int any = 0;

        for (k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= 0 && vneed[n->outputs[k]])
                any = 1;
        if (!any)
            continue;
        need[i] = 1;
        for (k = 0; k < n->n_inputs; k++)
            if (n->inputs[k] >= 0)
                vneed[n->inputs[k]] = 1;
    }
    ss_free(vneed);
    return 0;
}

static bool
is_frozen(const ss_train_opts_t *o, const char *name)
{
    for (int i = 0; i < o->n_frozen; i++)
        if (o->frozen[i] && strcmp(o->frozen[i], name) == 0)
            return true;
    return false;
}

static bool
is_scale(const ss_train_opts_t *o, const char *name)
{
    for (int i = 0; i < o->n_scales; i++)
        if (o->scales[i] && strcmp(o->scales[i], name) == 0)
            return true;
    return false;
}

enum { C_CONST = 0, C_PARAM = 1, C_STATE = 2, C_SCALE = 3 };

/* The f32 constant v is an Identity of (torch's exporter ties equal
 * initializers so), or NULL. */
static const ss_tensor_t *
tied_const(const ss_graph_t *g, int v)
{
    const ss_node_t *n;
    const ss_tensor_t *c;

    if (g->values[v].constant != NULL || g->values[v].producer < 0)
        return NULL;
    n = &g->nodes[g->values[v].producer];
    if (strcmp(n->op_type, "Identity") != 0 || n->n_inputs < 1 ||
        n->inputs[0] < 0 || (c = g->values[n->inputs[0]].constant) == NULL ||
        c->dtype != SS_DTYPE_F32)
        return NULL;
    return c;
}

/* Per graph value: C_PARAM, C_STATE or C_CONST (see the top). */
int
ss__tb_classify(const ss_graph_t *g, const ss_train_opts_t *o,
                const uint8_t *need, uint8_t *cls, ss_err_t *err)
{
    /* BatchNorm statistics read through an Identity of an initializer
     * (an untrained export's equal running means and variances, stored
     * once): each such Identity output is statistics of its own, which
     * untie() gives a state slot, so no BatchNorm updates another's; the
     * Identity then runs nowhere (below: its input is no parameter). */
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        if (need[i] && strcmp(n->op_type, "BatchNormalization") == 0)
            for (int k = 3; k < n->n_inputs && k < 5; k++)
                if (n->inputs[k] >= 0 && tied_const(g, n->inputs[k]))
                    cls[n->inputs[k]] = C_STATE;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        const ss__rule_t *r = ss__rule_find(n->op_type);
        bool bn = strcmp(n->op_type, "BatchNormalization") == 0;

        if (!need[i] || (strcmp(n->op_type, "Identity") == 0 &&
                         n->n_outputs > 0 && n->outputs[0] >= 0 &&
                         cls[n->outputs[0]] == C_STATE))
            continue;
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k];
            const ss_value_t *gv;

            if (v < 0)
                continue;
            gv = &g->values[v];
            if (gv->constant == NULL || gv->constant->dtype != SS_DTYPE_F32)
                continue;
            if (bn && k >= 3 && o->bn == SS_BN_BATCH) {
                if (cls[v] == C_PARAM)
                    return ss_err_set(err, SS_EUNSUPP, "trainer: '%s' is "
                                      "both a weight and BatchNorm "
                                      "statistics (node '%s')", gv->name,
                                      label(n));
                cls[v] = C_STATE;
                continue;
            }
            if (is_scale(o, gv->name)) {
                /* the scale of a Q/DQ, learned (LSQ): scalars too */
                if (r == NULL || r->bwd != ss__bwd_qdq || k != 1)
                    return ss_err_set(err, SS_EINVAL, "trainer: step size "
                                      "'%s' is read by node '%s' as input "
                                      "%d, not as a Q/DQ scale", gv->name,
                                      label(n), k);
                cls[v] = C_SCALE;
                continue;
            }
            if (ss_tensor_numel(gv->constant) < 2 || is_frozen(o, gv->name)
                || (r != NULL && r->bwd == ss__bwd_qdq && k > 0))
                continue;
            /* an op without a row: make it a parameter so that the
             * forward walk refuses the op by name */
            if (r == NULL || (r->diff & (1u << k))) {
                if (cls[v] == C_STATE)
                    return ss_err_set(err, SS_EUNSUPP, "trainer: '%s' is "
                                      "both a weight and BatchNorm "
                                      "statistics (node '%s')", gv->name,
                                      label(n));
                cls[v] = C_PARAM;
            }
        }
    }
    return 0;
}

static int64_t
pad16(int64_t n)
{
    return (n + 15) & ~(int64_t)15;
}
/* torch.onnx.export stores equal initializers once and reads the copies
 * through Identity nodes (a ResNet's zero-initialized BatchNorm biases
 * end up as Identity(block2.bn2.bias)).  In the model those were separate
 * parameters: give each Identity of a parameter its own slot, initialized
 * from the shared value, so training does not tie them (export writes
 * the Identity's output back as an initializer of its own).  Likewise a
 * BatchNorm's statistics read through an Identity get a state slot of
 * their own. */
static int
untie(ss__tb_t *b, const uint8_t *cls, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    const ss_graph_t *g = b->g;

    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        int src, out, id, gid;
        const ss__tv_t *sv;
        ss__param_t *p, *np;

        if (strcmp(n->op_type, "Identity") != 0 || n->n_inputs < 1 ||
            (src = n->inputs[0]) < 0 || (out = n->outputs[0]) < 0)
            continue;
        if (cls[out] == C_STATE) {
            const ss_tensor_t *c = tied_const(g, out);

            /* statistics of their own (ss__tb_classify) */
            if ((id = ss__tv_add(b, SS__TV_STATE, SS_DTYPE_F32, c->ndim,
                                 c->dims, err)) < 0)
                return id;
            t->tv[id].name = g->values[out].name;
            t->tv[id].graph_id = out;
            t->tv[id].cdata = c;
            t->tv[id].offset = (size_t)t->n_state;
            t->n_state += pad16(t->tv[id].numel);
            b->vmap[out] = id;
            continue;
        }
        if (cls[src] != C_PARAM || is_frozen(&t->o0, g->values[out].name))
            continue;
        sv = &t->tv[b->vmap[src]];
        if ((np = ss_realloc(t->params, (size_t)(t->n_params + 1) *
                                        sizeof(*np))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for parameters");
        t->params = np;
        if ((id = ss__tv_add(b, SS__TV_PARAM, SS_DTYPE_F32, sv->ndim, sv->dims,
                             err)) < 0)
            return id;
        sv = &t->tv[b->vmap[src]];
        t->tv[id].name = g->values[out].name;
        t->tv[id].graph_id = out;
        t->tv[id].cdata = sv->cdata;
        t->tv[id].offset = (size_t)t->flat;
        b->vmap[out] = id;
        b->rg[id] = 1;
        if ((gid = ss__tv_add(b, SS__TV_PGRAD, SS_DTYPE_F32, sv->ndim,
                              sv->dims, err)) < 0)
            return gid;
        t->tv[gid].offset = (size_t)t->flat;
        p = &t->params[t->n_params++];
        p->tv = id;
        p->grad = gid;
        p->graph_id = out;
        t->flat += pad16(t->tv[id].numel);
    }
    return 0;
}

int
ss__tb_constants(ss__tb_t *b, const uint8_t *cls, ss_err_t *err)
{
    ss__tr_t *t = b->t;
    const ss_graph_t *g = b->g;
    int n_params = 0, v, pass, rc;

    for (v = 0; v < g->n_values; v++)
        n_params += g->values[v].constant &&
                    (cls[v] == C_PARAM || cls[v] == C_SCALE);
    if ((t->params = ss_calloc((size_t)(n_params ? n_params : 1),
                               sizeof(*t->params))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for parameters");
    /* weights first, learned step sizes last (after untie's copies) */
    for (pass = 0; pass < 2; pass++)
    for (v = 0; v < g->n_values; v++) {
        const ss_tensor_t *c = g->values[v].constant;
        ss__tv_kind_t kind = cls[v] == C_PARAM || cls[v] == C_SCALE
                           ? SS__TV_PARAM
                           : cls[v] == C_STATE ? SS__TV_STATE
                           : SS__TV_CONST;
        int id;

        if (c == NULL || (pass == 1) != (cls[v] == C_SCALE))
            continue;
        if (pass == 1 && t->flat_decay < 0) {
            t->flat_decay = t->flat;
            if ((rc = untie(b, cls, err)) < 0)
                return rc;
            t->flat_decay = t->flat;
        }
        if ((id = ss__tv_add(b, kind, c->dtype, c->ndim, c->dims, err)) < 0)
            return id;
        t->tv[id].name = g->values[v].name;
        t->tv[id].graph_id = v;
        t->tv[id].cdata = c;
        b->vmap[v] = id;
        if (kind == SS__TV_PARAM) {
            ss__param_t *p;
            int gid;

            /* untie may have resized the table to what it holds */
            if ((p = ss_realloc(t->params, (size_t)(t->n_params + 1) *
                                           sizeof(*p))) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for "
                                  "parameters");
            t->params = p;
            p = &t->params[t->n_params++];

            p->tv = id;
            p->graph_id = v;
            t->tv[id].offset = (size_t)t->flat;
            b->rg[id] = 1;
            if ((gid = ss__tv_add(b, SS__TV_PGRAD, SS_DTYPE_F32, c->ndim,
                                  c->dims, err)) < 0)
                return gid;
            t->tv[gid].offset = (size_t)t->flat;
            p->grad = gid;
            t->flat += pad16(t->tv[id].numel);
        } else if (kind == SS__TV_STATE) {
            t->tv[id].offset = (size_t)t->n_state;
            t->n_state += pad16(t->tv[id].numel);
        }
    }
    if (t->flat_decay >= 0)
        return 0;
    if ((rc = untie(b, cls, err)) < 0)
        return rc;
    t->flat_decay = t->flat;
    return 0;
}
