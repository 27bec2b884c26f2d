/* SPDX-License-Identifier: Apache-2.0 */
/*
 * distill {"student": {"layers": [0, 2]}}: a student that keeps only some
 * of the teacher's repeated blocks (transformer layers, residual stages),
 * as DistilBERT keeps every other layer of BERT.
 *
 * DESIGN: a residual step is an Add(x, f(x)) whose two inputs are not
 * constants, where x reaches f(x) and the output has x's shape (where
 * the graph knows both): without it, the stream goes on as x.  The steps that follow one another (one's
 * output is the next one's x) form the residual stream; its longest chain
 * is the model's.  A block is the shortest run of steps that repeats
 * along the chain: each step's signature is the op types of its nodes
 * (those x reaches and that reach the Add), in node order, and the block
 * length is the smallest period of the signatures that divides their
 * count (a pre-norm transformer layer is an attention step and a
 * feed-forward step: period 2).  Removing a block rewires the readers of
 * its output to its input; finalize drops what no output needs any more,
 * weights included.  The kept blocks keep the teacher's weights: the
 * student starts as the teacher with layers skipped, which the residual
 * form makes a good start (each block is a correction to the stream).
 *
 * THREADS: runs on the compress thread (ss_distill_check_layers: [any]).
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/internal.h"

#define MAX_STEPS 256

typedef struct step {
    int add;                    /* the Add node */
    int in, out;                /* stream value ids */
    char sig[512];              /* op types of its nodes */
} step_t;

typedef struct blocks {
    int n_steps;
    step_t steps[MAX_STEPS];
    int period;                 /* steps per block */
    int n_blocks;
} blocks_t;

/* Marks in mark[] every node that value v depends on. */
static void
mark_up(const ss_graph_t *g, int v, unsigned char *mark)
{
    int *stack, n = 0, i;

    if ((stack = ss_malloc(sizeof(int) * ((size_t)g->n_nodes + 1))) == NULL)
        return;
    if (g->values[v].producer >= 0 && !mark[g->values[v].producer]) {
        mark[g->values[v].producer] = 1;
        stack[n++] = g->values[v].producer;
    }
    while (n > 0) {
        const ss_node_t *nd = &g->nodes[stack[--n]];

        for (i = 0; i < nd->n_inputs; i++) {
            int p = nd->inputs[i] >= 0 ? g->values[nd->inputs[i]].producer
                                       : -1;

            if (p >= 0 && !mark[p]) {
                mark[p] = 1;
                stack[n++] = p;
            }
        }
    }
    ss_free(stack);
}

/* Does node k read (directly or not) value v?  down[] marks the nodes
 * that depend on v (filled on first use). */
static void
mark_down(const ss_graph_t *g, int v, unsigned char *down)
{
    int k, i;

    /* nodes are in topological order: one pass */
    for (k = 0; k < g->n_nodes; k++) {
        const ss_node_t *nd = &g->nodes[k];

        for (i = 0; i < nd->n_inputs && !down[k]; i++) {
            int x = nd->inputs[i], p;

            if (x < 0)
                continue;
            p = g->values[x].producer;
            if (x == v || (p >= 0 && down[p]))
                down[k] = 1;
        }
    }
}

/* Where the graph knows both shapes, they must agree; intermediate
 * values of a loaded graph often have none. */
static bool
same_shape(const ss_value_t *a, const ss_value_t *b)
{
    if (a->ndim < 0 || b->ndim < 0)
        return true;
    return a->ndim == b->ndim
           && memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->ndim)
              == 0;
}

/* The residual steps of g and their blocks; n_blocks 0 when none. */
static int
find_blocks(const ss_graph_t *g, blocks_t *B, ss_err_t *err)
{
    unsigned char *up = NULL, *down = NULL;
    step_t *all = NULL;
    int n_all = 0, k, i, j, rc = 0;

    memset(B, 0, sizeof(*B));
    if ((up = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL
        || (down = ss_calloc((size_t)g->n_nodes + 1, 1)) == NULL
        || (all = ss_calloc(MAX_STEPS, sizeof(*all))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to find blocks");
        goto done;
    }
    for (k = 0; k < g->n_nodes && n_all < MAX_STEPS; k++) {
        const ss_node_t *nd = &g->nodes[k];

        if (strcmp(nd->op_type, "Add") != 0 || nd->n_inputs != 2)
            continue;
        for (i = 0; i < 2; i++) {
            int x = nd->inputs[i], fx = nd->inputs[1 - i];
            int p = fx >= 0 ? g->values[fx].producer : -1;
            size_t len = 0;

            if (x < 0 || p < 0 || g->values[x].constant != NULL
                || !same_shape(&g->values[x], &g->values[nd->outputs[0]]))
                continue;
            memset(down, 0, (size_t)g->n_nodes);
            mark_down(g, x, down);
            if (!down[p])
                continue;
            /* its nodes: x reaches them and they reach the Add */
            memset(up, 0, (size_t)g->n_nodes);
            mark_up(g, nd->outputs[0], up);
            all[n_all].add = k;
            all[n_all].in = x;
            all[n_all].out = nd->outputs[0];
            for (j = 0; j < g->n_nodes; j++)
                if (up[j] && down[j] && len + 32 < sizeof(all[0].sig))
                    len += (size_t)snprintf(all[n_all].sig + len,
                                            sizeof(all[0].sig) - len,
                                            "%s,", g->nodes[j].op_type);
            n_all++;
            break;
        }
    }
    /* The longest chain of steps, each reading the one before. */
    for (i = 0; i < n_all; i++) {
        int n = 1, cur = i;

        for (j = i + 1; j < n_all; j++)
            if (all[j].in == all[cur].out) {
                n++;
                cur = j;
            }
        if (n > B->n_steps) {
            B->n_steps = 0;
            cur = i;
            B->steps[B->n_steps++] = all[i];
            for (j = i + 1; j < n_all; j++)
                if (all[j].in == all[cur].out) {
                    B->steps[B->n_steps++] = all[j];
                    cur = j;
                }
        }
    }
    /* The smallest period of the signatures that divides the chain. */
    for (B->period = 1; B->period <= B->n_steps; B->period++) {
        bool ok = B->n_steps % B->period == 0;

        for (i = B->period; ok && i < B->n_steps; i++)
            ok = strcmp(B->steps[i].sig, B->steps[i % B->period].sig) == 0;
        if (ok)
            break;
    }
    B->n_blocks = B->n_steps > 0 ? B->n_steps / B->period : 0;
    /* one block repeated nowhere is not a stack of layers */
    if (B->n_blocks < 2)
        B->n_blocks = 0;
done:
    ss_free(up);
    ss_free(down);
    ss_free(all);
    return rc;
}

int
ss_distill_check_layers(const ss_graph_t *src, const ss_method_t *m,
                        ss_err_t *err)
{
    blocks_t *B;
    int i, rc;

    if (m->kind != SS_METHOD_DISTILL || m->u.train.n_layers == 0)
        return 0;
    if ((B = ss_malloc(sizeof(*B))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory to find blocks");
    if ((rc = find_blocks(src, B, err)) < 0)
        goto done;
    if (B->n_blocks == 0) {
        rc = ss_err_set(err, SS_EINVAL, "distill: student layers: this "
                        "model has no repeated residual blocks");
        goto done;
    }
    for (i = 0; i < m->u.train.n_layers; i++)
        if (m->u.train.layers[i] >= B->n_blocks) {
            rc = ss_err_set(err, SS_EINVAL, "distill: student layer %d: "
                            "the model has %d blocks (0..%d)",
                            m->u.train.layers[i], B->n_blocks,
                            B->n_blocks - 1);
            goto done;
        }
    if (m->u.train.n_layers >= B->n_blocks)
        rc = ss_err_set(err, SS_EINVAL, "distill: a student of all %d "
                        "blocks is the teacher: keep fewer", B->n_blocks);
done:
    ss_free(B);
    return rc;
}

int
ss__distill_layers(const ss_method_t *m, ss_graph_t *g, json_t *snote,
                   ss_err_t *err)
{
    blocks_t *B;
    json_t *kept = json_array();
    int b, i, rc;

    if ((B = ss_malloc(sizeof(*B))) == NULL || kept == NULL) {
        ss_free(B);
        json_decref(kept);
        return ss_err_set(err, SS_ENOMEM, "no memory to find blocks");
    }
    if ((rc = ss_distill_check_layers(g, m, err)) < 0
        || (rc = find_blocks(g, B, err)) < 0)
        goto done;
    /* Last block first: a removed block's input is an earlier block's
     * output, which must still be the value readers are moved to. */
    for (b = B->n_blocks - 1; b >= 0; b--) {
        bool keep = false;

        for (i = 0; i < m->u.train.n_layers; i++)
            keep |= m->u.train.layers[i] == b;
        if (keep)
            continue;
        ss_graph_replace_uses(g, B->steps[(b + 1) * B->period - 1].out,
                              B->steps[b * B->period].in);
    }
    if ((rc = ss_graph_finalize(g, err)) < 0)
        goto done;
    for (i = 0; i < m->u.train.n_layers; i++)
        json_array_append_new(kept, json_integer(m->u.train.layers[i]));
    json_object_set_new(snote, "blocks", json_integer(B->n_blocks));
    json_object_set_new(snote, "steps_per_block", json_integer(B->period));
    json_object_set(snote, "layers", kept);
done:
    json_decref(kept);
    ss_free(B);
    return rc;
}
