/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Scan (versions 8, 9, 11, 16; plan_ctrl.c has the design of control
 * flow): the body runs once per element of the scan inputs' scanned
 * axis, state values carried from one iteration to the next, and the
 * scan outputs stacked along a new axis.
 *
 * Runs as a Loop with a trip count known from shapes: one body plan
 * (the states must keep their shapes), scan input slices read in place
 * and scan output slices written in place -- so the scanned axes must be
 * the first (after version 8's batch axis; scan_input_axes and
 * scan_output_axes 0), in either direction.  Version 8's sequence_lens
 * is refused when given (every sequence the full length is what it
 * means when absent).
 *
 * THREADS: as plan_ctrl.c.
 */

#include <string.h>

#include "common/alloc.h"
#include "engine/plan/plan_ctrl.h"

#define ALIGN 64

/* Attribute name (count values, all 0 when absent) into out: each
 * normalized to [0, rank) when rank > 0; 0 when the count differs. */
static int
axes_attr(const ss_node_t *n, const char *name, int count, int rank,
          int64_t *out)
{
    const int64_t *v;
    int c = ss__attr_ints(n, name, &v);

    for (int i = 0; i < count; i++)
        out[i] = 0;
    if (c < 0)
        return 1;
    if (c != count)
        return 0;
    for (int i = 0; i < count; i++)
        out[i] = rank > 0 && v[i] < 0 ? v[i] + rank : v[i];
    return 1;
}

/* t without its first `drop` dims. */
static ss_tensor_t
inner(const ss_tensor_t *t, int drop)
{
    ss_tensor_t r = { .dtype = t->dtype, .ndim = t->ndim - drop };

    memcpy(r.dims, t->dims + drop, (size_t)r.ndim * sizeof(int64_t));
    return r;
}

static size_t
bytes_of(const ss_tensor_t *t)
{
    size_t b = 0;

    (void)ss__tensor_bytes(t, &b);
    return b;
}

/* Checks the node against its version and fills c's layout fields. */
static int
scan_layout(ss_plan_t *p, const ss_node_t *n, const ss_graph_t *body,
            struct ss__ctrl *c, ss_err_t *err)
{
    int v8 = ss__ir_op_version(n->op_type, p->g->opset) < 9;
    int64_t m = ss__attr_int(n, "num_scan_inputs", -1), ax[64];
    const int64_t *dirs;
    int nd, N, K;

    c->in_first = v8 ? 1 : 0;
    if (body == NULL || m < 1 || m > 64 || n->n_inputs - c->in_first < m
        || body->n_inputs != n->n_inputs - c->in_first
        || body->n_outputs != n->n_outputs)
        return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Scan): its "
                          "inputs, outputs, num_scan_inputs and body's do "
                          "not agree", p->g->source,
                          n->name[0] ? n->name : "Scan");
    if (!ss__ctrl_named(n))
        return ss__ctrl_refuse(p, n, err, "an omitted output is not "
                               "supported");
    if (v8 && n->inputs[0] >= 0)
        return ss__ctrl_refuse(p, n, err, "sequence_lens is not supported "
                               "(omit it: every sequence full length)");
    c->n_scan_in = (int)m;
    N = n->n_inputs - c->in_first - (int)m;
    K = n->n_outputs - N;
    if (K > 64)
        return ss__ctrl_refuse(p, n, err, "more than 64 scan outputs");
    c->n_carried = N;
    c->n_scan = K;
    for (int j = 0; j < n->n_inputs; j++)
        if (j >= c->in_first && n->inputs[j] < 0)
            return ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Scan): "
                              "input %d is omitted", p->g->source,
                              n->name, j);
    if ((c->in_rev = ss_calloc((size_t)m + 1, 1)) == NULL
        || (c->out_rev = ss_calloc((size_t)K + 1, 1)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Scan");
    /* directions: version 8's "directions", later scan_input_directions */
    nd = ss__attr_ints(n, v8 ? "directions" : "scan_input_directions",
                       &dirs);
    for (int j = 0; j < nd && j < m; j++)
        c->in_rev[j] = dirs[j] != 0;
    if (nd >= 0 && nd != m)
        return ss__ctrl_refuse(p, n, err, "scan input directions do not "
                               "match num_scan_inputs");
    nd = ss__attr_ints(n, "scan_output_directions", &dirs);
    for (int k = 0; k < nd && k < K; k++)
        c->out_rev[k] = dirs[k] != 0;
    if (nd >= 0 && nd != K)
        return ss__ctrl_refuse(p, n, err, "scan output directions do not "
                               "match the scan outputs");
    if (v8)
        return 0;
    for (int j = 0; j < m; j++) {
        const ss_tensor_t *x = &p->vals[n->inputs[N + j]].t;

        if (!axes_attr(n, "scan_input_axes", (int)m, x->ndim, ax))
            return ss__ctrl_refuse(p, n, err, "scan_input_axes does not "
                                   "match num_scan_inputs");
        if (ax[j] != 0)
            return ss__ctrl_refuse(p, n, err, "a scan input axis other "
                                   "than 0 is not supported");
    }
    if (!axes_attr(n, "scan_output_axes", K, 0, ax))
        return ss__ctrl_refuse(p, n, err, "scan_output_axes does not match "
                               "the scan outputs");
    for (int k = 0; k < K; k++)
        if (ax[k] != 0)
            return ss__ctrl_refuse(p, n, err, "a scan output axis other "
                                   "than 0 is not supported");
    return 0;
}

int
ss__ctrl_scan(ss_plan_t *p, const ss_node_t *n, ss_err_t *err)
{
    const ss_graph_t *body = ss__attr_graph(n, "body");
    struct ss__ctrl *c = ss_calloc(1, sizeof(*c));
    ss_tensor_t *first = NULL, *shapes = NULL;
    unsigned char *decides = NULL;
    ss_plan_t *pl = NULL;
    int rc = 0, N, M, K, lead, nf;
    size_t off = 0;

    if (c == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a Scan");
    c->loop = 2;
    c->node = n;
    if ((rc = scan_layout(p, n, body, c, err)) < 0)
        goto done;
    N = c->n_carried;
    M = c->n_scan_in;
    K = c->n_scan;
    nf = N + M;
    lead = c->in_first;         /* version 8: a batch axis first */
    if ((rc = ss__ctrl_view(p, body, &c->view[0], err)) < 0)
        goto done;
    c->max_in = c->view[0]->g.n_inputs;
    if ((first = ss_calloc((size_t)nf + 1, sizeof(*first))) == NULL
        || (shapes = ss_calloc((size_t)c->max_in + 1, sizeof(*shapes)))
           == NULL
        || (decides = ss_calloc((size_t)c->max_in + 1, 1)) == NULL
        || (c->scan_in_bytes = ss_calloc((size_t)M + 1, sizeof(size_t)))
           == NULL
        || (c->carried_off = ss_calloc((size_t)N + 1, sizeof(size_t)))
           == NULL
        || (c->carried_max = ss_calloc((size_t)N + 1, sizeof(size_t)))
           == NULL
        || (c->scan_bytes = ss_calloc((size_t)K + 1, sizeof(size_t)))
           == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a Scan");
        goto done;
    }
    c->batch = 1;
    c->steps = -1;
    for (int j = 0; j < nf; j++) {
        const ss_tensor_t *x = &p->vals[n->inputs[c->in_first + j]].t;
        int scan = j >= N, drop = lead + scan;

        if (x->ndim < drop) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node '%s' (Scan): input "
                            "%d has rank %d", p->g->source, n->name,
                            c->in_first + j, x->ndim);
            goto done;
        }
        if (lead && (j == 0 || x->dims[0] != c->batch)) {
            if (j > 0) {
                rc = ss__ctrl_refuse(p, n, err, "the inputs' batch sizes "
                                     "differ");
                goto done;
            }
            c->batch = x->dims[0];
        }
        if (scan && c->steps >= 0 && x->dims[lead] != c->steps) {
            rc = ss__ctrl_refuse(p, n, err, "the scan inputs' lengths "
                                 "differ");
            goto done;
        }
        if (scan)
            c->steps = x->dims[lead];
        first[j] = inner(x, drop);
        if (scan)
            c->scan_in_bytes[j - N] = bytes_of(&first[j]);
    }
    (void)ss_graph_shape_inputs(&c->view[0]->g, decides);
    for (int j = 0; j < nf; j++)
        if (decides[j]) {
            rc = ss__ctrl_refuse(p, n, err, "the body's shapes depend on "
                                 "the value of a state or scan input");
            goto done;
        }
    if ((rc = ss__ctrl_view_shapes(p, c->view[0], first, nf, shapes, n,
                                   err)) < 0
        || (rc = ss__plan_build_sub(&c->view[0]->g, p, shapes, NULL,
                                    p->fuse, &pl, err)) < 0
        || (rc = ss__ctrl_add_plan(c, pl, err)) < 0)
        goto done;
    pl = c->plans[0];
    for (int j = 0; j < N; j++) {
        const ss_io_info_t *o = ss_plan_output(pl, j);
        ss_io_info_t io = { .dtype = first[j].dtype, .ndim = first[j].ndim };

        memcpy(io.dims, first[j].dims, sizeof(io.dims));
        if (!ss__ctrl_same_shape(o, &io)) {
            rc = ss__ctrl_refuse(p, n, err, "a state changes shape from "
                                 "one iteration to the next");
            goto done;
        }
        c->carried_max[j] = (bytes_of(&first[j]) + ALIGN - 1)
                            & ~(size_t)(ALIGN - 1);
        c->carried_off[j] = off;
        off += 2 * c->carried_max[j];
        if ((rc = ss__ctrl_set_out(p, n, n->outputs[j], &io,
                                   lead ? c->batch : -1, err)) < 0)
            goto done;
    }
    c->carried_bytes = off;
    for (int k = 0; k < K; k++) {
        const ss_io_info_t *o = ss_plan_output(pl, N + k);
        ss_io_info_t io = *o;
        ss_tensor_t t = { .dtype = o->dtype, .ndim = o->ndim };

        memcpy(t.dims, o->dims, sizeof(t.dims));
        c->scan_bytes[k] = bytes_of(&t);
        if (lead) {             /* [batch, steps, ...] */
            if (io.ndim + 1 > SS_MAX_DIMS) {
                rc = ss__ctrl_refuse(p, n, err, "a scan output has too "
                                     "many dims");
                goto done;
            }
            memmove(&io.dims[1], &io.dims[0],
                    (size_t)io.ndim * sizeof(int64_t));
            io.dims[0] = c->steps;
            io.ndim++;
        }
        if ((rc = ss__ctrl_set_out(p, n, n->outputs[N + k], &io,
                                   lead ? c->batch : c->steps, err)) < 0)
            goto done;
    }
    rc = ss__ctrl_step(p, n, c, nf, err);
    c = NULL;
done:
    ss__ctrl_free(c);
    ss_free(first);
    ss_free(shapes);
    ss_free(decides);
    return rc;
}

int
ss__ctrl_run_scan(const struct ss__ctrl *c, ss_tensor_t *tab,
                  ss_exec_ctx_t *sub, ss_tensor_t *ins, ss_tensor_t *outs,
                  char *carried, ss_err_t *err)
{
    const ss_node_t *n = c->node;
    const ss_graph_t *vg = &c->view[0]->g;
    const ss_plan_t *pl = c->plans[0];
    int N = c->n_carried, M = c->n_scan_in, K = c->n_scan, nf = N + M;
    int lead = c->in_first, rc;

    for (int i = nf; i < vg->n_inputs; i++)
        ins[i] = tab[vg->inputs[i]];
    memset(outs, 0, (size_t)(N + K + 1) * sizeof(*outs));
    for (int64_t b = 0; b < c->batch; b++) {
        for (int j = 0; j < N; j++) {
            const ss_tensor_t *x = &tab[n->inputs[c->in_first + j]];

            ins[j] = inner(x, lead);
            ins[j].data = (char *)x->data + (size_t)b * bytes_of(&ins[j]);
        }
        for (int64_t i = 0; i < c->steps; i++) {
            for (int j = 0; j < M; j++) {
                const ss_tensor_t *x = &tab[n->inputs[c->in_first + N + j]];
                int64_t t = c->in_rev[j] ? c->steps - 1 - i : i;

                ins[N + j] = inner(x, lead + 1);
                ins[N + j].data = (char *)x->data + (size_t)(b * c->steps + t)
                                  * c->scan_in_bytes[j];
            }
            for (int j = 0; j < N; j++)
                outs[j].data = carried + c->carried_off[j]
                               + (size_t)(i & 1) * c->carried_max[j];
            for (int k = 0; k < K; k++) {
                int64_t t = c->out_rev[k] ? c->steps - 1 - i : i;

                outs[N + k].data = (char *)tab[n->outputs[N + k]].data
                                   + (size_t)(b * c->steps + t)
                                     * c->scan_bytes[k];
            }
            if ((rc = ss_plan_run(pl, sub, ins, outs, err)) < 0)
                return ss_err_wrap(err, rc, "iteration %lld", (long long)i);
            for (int j = 0; j < N; j++)
                ins[j] = outs[j];
        }
        for (int j = 0; j < N; j++) {
            size_t bytes = bytes_of(&ins[j]);

            if (bytes > 0)
                memmove((char *)tab[n->outputs[j]].data + (size_t)b * bytes,
                        ins[j].data, bytes);
        }
    }
    return 0;
}
