/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Editing graphs: clone, append values and nodes, kill and rewire, then
 * finalize back into a graph the plan compiler accepts (engine/ir/edit.h).
 *
 * DESIGN: edits only append or mark; nothing is renumbered until
 * ss_graph_finalize, so value ids and node indices a caller holds stay
 * valid through a whole editing session.  A dead node is one without
 * outputs (every live node has output 0, the importer makes sure of it),
 * so killing needs no extra field; ss_graph_finalize (edit_finalize.c)
 * renumbers.
 * Metadata lives in two parallel string arrays on the graph.
 *
 * THREADS: a graph being edited belongs to one thread.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/edit.h"

#define PRECISION_KEY "slimserve.precision"

static int
tensor_dup(const ss_tensor_t *t, ss_tensor_t **out, ss_err_t *err)
{
    size_t bytes;
    int rc;

    *out = NULL;
    if (ss__tensor_bytes(t, &bytes) < 0)
        return ss_err_set(err, SS_EINVAL, "cannot copy a tensor of "
                          "unsized type %d", (int)t->dtype);
    if ((rc = ss__tensor_new(t->dtype, t->ndim, t->dims, out, err)) < 0)
        return rc;
    if (bytes > 0)
        memcpy((*out)->data, t->data, bytes);
    return 0;
}

static int
attr_copy(ss_attr_t *d, const ss_attr_t *s, ss_err_t *err)
{
    int rc = 0;

    memset(d, 0, sizeof(*d));
    if (s->type == SS_ATTR_GRAPH)     /* ids inside would need remapping */
        return ss_err_set(err, SS_EUNSUPP, "editing a graph with control "
                          "flow (attribute '%s' is a subgraph) is not "
                          "supported", s->name);
    d->type = s->type;
    d->f = s->f;
    d->i = s->i;
    d->n = s->n;
    if ((d->name = ss_strdup(s->name ? s->name : "")) == NULL
        || (s->s != NULL && (d->s = ss_strdup(s->s)) == NULL))
        goto nomem;
    if (s->t != NULL && (rc = tensor_dup(s->t, &d->t, err)) < 0)
        goto done;
    if (s->floats != NULL && s->n > 0) {
        if ((d->floats = ss_malloc((size_t)s->n * sizeof(float))) == NULL)
            goto nomem;
        memcpy(d->floats, s->floats, (size_t)s->n * sizeof(float));
    }
    if (s->ints != NULL && s->n > 0) {
        if ((d->ints = ss_malloc((size_t)s->n * sizeof(int64_t))) == NULL)
            goto nomem;
        memcpy(d->ints, s->ints, (size_t)s->n * sizeof(int64_t));
    }
    if (s->strings != NULL && s->n > 0) {
        if ((d->strings = ss_calloc((size_t)s->n, sizeof(char *))) == NULL)
            goto nomem;
        for (int i = 0; i < s->n; i++)
            if ((d->strings[i] = ss_strdup(s->strings[i] ? s->strings[i]
                                                         : "")) == NULL)
                goto nomem;
    }
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory to copy attributes");
done:
    if (rc < 0)
        ss__attr_clear(d);
    return rc;
}

static int *
ids_dup(const int *ids, int n)
{
    int *c = ss_malloc((size_t)(n > 0 ? n : 1) * sizeof(int));

    if (c != NULL && n > 0)
        memcpy(c, ids, (size_t)n * sizeof(int));
    return c;
}

/* Fills d (zeroed by the caller) from the given fields; d owns copies. */
static int
node_fill(ss_node_t *d, const char *op_type, const char *name,
          const char *domain, int n_in, const int *in, int n_out,
          const int *out, int n_attrs, const ss_attr_t *attrs, ss_err_t *err)
{
    int rc = 0;

    if ((d->op_type = ss_strdup(op_type)) == NULL
        || (d->name = ss_strdup(name ? name : "")) == NULL
        || (d->domain = ss_strdup(domain ? domain : "")) == NULL
        || (d->inputs = ids_dup(in, n_in)) == NULL
        || (d->outputs = ids_dup(out, n_out)) == NULL
        || (n_attrs > 0
            && (d->attrs = ss_calloc((size_t)n_attrs, sizeof(ss_attr_t)))
               == NULL)) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a node");
        goto done;
    }
    d->n_inputs = n_in;
    d->n_outputs = n_out;
    for (int a = 0; a < n_attrs; a++) {
        if ((rc = attr_copy(&d->attrs[a], &attrs[a], err)) < 0)
            goto done;
        d->n_attrs++;
    }
done:
    if (rc < 0)
        ss__node_clear(d);
    return rc;
}

static int
strs_dup(char **dst, char *const *src, int n)
{
    for (int i = 0; i < n; i++)
        if ((dst[i] = ss_strdup(src[i])) == NULL)
            return -1;
    return 0;
}

int
ss_graph_clone(const ss_graph_t *g, ss_graph_t **out, ss_err_t *err)
{
    ss_graph_t *c = NULL;
    int rc = 0;

    *out = NULL;
    if ((c = ss_calloc(1, sizeof(*c))) == NULL
        || (c->source = ss_strdup(g->source ? g->source : "<edit>")) == NULL
        || (c->values = ss_calloc((size_t)g->n_values + 1,
                                  sizeof(ss_value_t))) == NULL
        || (c->nodes = ss_calloc((size_t)g->n_nodes + 1,
                                 sizeof(ss_node_t))) == NULL
        || (c->inputs = ids_dup(g->inputs, g->n_inputs)) == NULL
        || (c->outputs = ids_dup(g->outputs, g->n_outputs)) == NULL
        || (c->input_info = ss_calloc((size_t)g->n_inputs + 1,
                                      sizeof(ss_io_info_t))) == NULL
        || (c->output_info = ss_calloc((size_t)g->n_outputs + 1,
                                       sizeof(ss_io_info_t))) == NULL)
        goto nomem;
    c->opset = g->opset;
    c->weight_bytes = g->weight_bytes;
    for (int v = 0; v < g->n_values; v++) {
        const ss_value_t *s = &g->values[v];
        ss_value_t *d = &c->values[v];

        *d = *s;
        d->name = NULL;
        d->constant = NULL;
        c->n_values++;
        if ((d->name = ss_strdup(s->name)) == NULL)
            goto nomem;
        if (s->constant != NULL
            && (rc = tensor_dup(s->constant, &d->constant, err)) < 0)
            goto done;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *s = &g->nodes[i];

        if ((rc = node_fill(&c->nodes[i], s->op_type, s->name, s->domain,
                            s->n_inputs, s->inputs, s->n_outputs, s->outputs,
                            s->n_attrs, s->attrs, err)) < 0)
            goto done;
        c->n_nodes++;
    }
    c->n_inputs = g->n_inputs;
    for (int i = 0; i < g->n_inputs; i++) {
        c->input_info[i] = g->input_info[i];
        c->input_info[i].name = c->values[c->inputs[i]].name;
    }
    c->n_outputs = g->n_outputs;
    for (int i = 0; i < g->n_outputs; i++) {
        c->output_info[i] = g->output_info[i];
        c->output_info[i].name = c->values[c->outputs[i]].name;
    }
    if (g->n_meta > 0) {
        if ((c->meta_keys = ss_calloc((size_t)g->n_meta, sizeof(char *)))
            == NULL
            || (c->meta_values = ss_calloc((size_t)g->n_meta,
                                           sizeof(char *))) == NULL)
            goto nomem;
        c->n_meta = g->n_meta;
        if (strs_dup(c->meta_keys, g->meta_keys, g->n_meta) < 0
            || strs_dup(c->meta_values, g->meta_values, g->n_meta) < 0)
            goto nomem;
    }
    *out = c;
    c = NULL;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory to copy a graph");
done:
    ss_graph_free(c);
    return rc;
}

int
ss_graph_find_value(const ss_graph_t *g, const char *name)
{
    if (name == NULL)
        return -1;
    for (int v = 0; v < g->n_values; v++)
        if (strcmp(g->values[v].name, name) == 0)
            return v;
    return -1;
}

int
ss_graph_add_value(ss_graph_t *g, const char *name, ss_tensor_t *constant,
                   ss_err_t *err)
{
    char fresh[32];
    ss_value_t *vals, *v;
    int rc = 0;

    if (name == NULL) {
        static const char prefix[] = "ss_v";
        int k = g->n_values;

        do
            snprintf(fresh, sizeof(fresh), "%s%d", prefix, k++);
        while (ss_graph_find_value(g, fresh) >= 0);
        name = fresh;
    } else if (name[0] == '\0' || ss_graph_find_value(g, name) >= 0) {
        rc = ss_err_set(err, SS_EINVAL, "%s: value name '%s' is empty or "
                        "taken", g->source, name);
        goto done;
    }
    if ((vals = ss_realloc(g->values, ((size_t)g->n_values + 1)
                                      * sizeof(*vals))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a value");
        goto done;
    }
    g->values = vals;
    /* io infos borrow names, which do not move with the array */
    v = &g->values[g->n_values];
    memset(v, 0, sizeof(*v));
    if ((v->name = ss_strdup(name)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a value");
        goto done;
    }
    v->producer = -1;
    v->ndim = -1;
    for (int d = 0; d < SS_MAX_DIMS; d++)
        v->dims[d] = -1;
    if (constant != NULL) {
        v->constant = constant;
        v->dtype = constant->dtype;
        v->ndim = constant->ndim;
        memcpy(v->dims, constant->dims, sizeof(v->dims));
        constant = NULL;
    }
    rc = g->n_values++;
done:
    ss__tensor_free(constant);
    return rc;
}

static int
id_ok(const ss_graph_t *g, int v, int optional)
{
    return (optional && v == -1) || (v >= 0 && v < g->n_values);
}

int
ss_graph_add_node(ss_graph_t *g, const char *op_type, const char *name,
                  int n_in, const int *in, int n_out, const int *out,
                  int n_attrs, const ss_attr_t *attrs, ss_err_t *err)
{
    ss_node_t *nodes;
    int rc;

    if (op_type == NULL || op_type[0] == '\0' || n_in < 0 || n_out < 1
        || n_attrs < 0 || (n_in > 0 && in == NULL) || out == NULL
        || !id_ok(g, out[0], 0))
        return ss_err_set(err, SS_EINVAL, "%s: bad node '%s'", g->source,
                          name ? name : "");
    for (int k = 0; k < n_in; k++)
        if (!id_ok(g, in[k], 1))
            return ss_err_set(err, SS_EINVAL, "%s: node '%s' reads value "
                              "id %d, which does not exist", g->source,
                              name ? name : "", in[k]);
    for (int k = 1; k < n_out; k++)
        if (!id_ok(g, out[k], 1))
            return ss_err_set(err, SS_EINVAL, "%s: node '%s' writes value "
                              "id %d, which does not exist", g->source,
                              name ? name : "", out[k]);
    if ((nodes = ss_realloc(g->nodes, ((size_t)g->n_nodes + 1)
                                      * sizeof(*nodes))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a node");
    g->nodes = nodes;
    memset(&g->nodes[g->n_nodes], 0, sizeof(ss_node_t));
    if ((rc = node_fill(&g->nodes[g->n_nodes], op_type, name, "", n_in, in,
                        n_out, out, n_attrs, attrs, err)) < 0)
        return rc;
    return g->n_nodes++;
}

int
ss_graph_set_constant(ss_graph_t *g, int id, ss_tensor_t *t, ss_err_t *err)
{
    ss_value_t *v;

    if (id < 0 || id >= g->n_values || t == NULL) {
        ss__tensor_free(t);
        return ss_err_set(err, SS_EINVAL, "%s: no value id %d", g->source,
                          id);
    }
    v = &g->values[id];
    ss__tensor_free(v->constant);
    v->constant = t;
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    memcpy(v->dims, t->dims, sizeof(v->dims));
    return 0;
}

void
ss_graph_kill_node(ss_graph_t *g, int idx)
{
    ss_node_t *n;

    if (idx < 0 || idx >= g->n_nodes)
        return;
    n = &g->nodes[idx];
    /* no outputs: dead (see the top of this file) */
    n->n_outputs = 0;
    n->n_inputs = 0;
}

void
ss_graph_replace_uses(ss_graph_t *g, int from, int to)
{
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == from)
                g->nodes[i].inputs[k] = to;
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == from) {
            g->outputs[i] = to;
            g->output_info[i].name = g->values[to].name;
        }
}

int
ss_graph_add_output(ss_graph_t *g, int id, ss_err_t *err)
{
    int *outs;
    ss_io_info_t *info;
    const ss_value_t *v;

    if (id < 0 || id >= g->n_values)
        return ss_err_set(err, SS_EINVAL, "%s: no value id %d", g->source,
                          id);
    if ((outs = ss_realloc(g->outputs, ((size_t)g->n_outputs + 1)
                                       * sizeof(int))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an output");
    g->outputs = outs;
    if ((info = ss_realloc(g->output_info, ((size_t)g->n_outputs + 1)
                                           * sizeof(*info))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for an output");
    g->output_info = info;
    v = &g->values[id];
    g->outputs[g->n_outputs] = id;
    info = &g->output_info[g->n_outputs];
    memset(info, 0, sizeof(*info));
    info->name = v->name;
    info->dtype = v->dtype;
    info->ndim = v->ndim;
    memcpy(info->dims, v->dims, sizeof(info->dims));
    return g->n_outputs++;
}

/* ---- metadata --------------------------------------------------------- */

int
ss_graph_set_meta(ss_graph_t *g, const char *key, const char *value,
                  ss_err_t *err)
{
    char *k = NULL, *v = NULL, **nk, **nv;
    int rc = 0;

    if (key == NULL || value == NULL)
        return ss_err_set(err, SS_EINVAL, "metadata needs a key and a value");
    if ((v = ss_strdup(value)) == NULL)
        goto nomem;
    for (int i = 0; i < g->n_meta; i++)
        if (strcmp(g->meta_keys[i], key) == 0) {
            ss_free(g->meta_values[i]);
            g->meta_values[i] = v;
            return 0;
        }
    if ((k = ss_strdup(key)) == NULL)
        goto nomem;
    if ((nk = ss_realloc(g->meta_keys, ((size_t)g->n_meta + 1)
                                       * sizeof(char *))) == NULL)
        goto nomem;
    g->meta_keys = nk;
    if ((nv = ss_realloc(g->meta_values, ((size_t)g->n_meta + 1)
                                         * sizeof(char *))) == NULL)
        goto nomem;
    g->meta_values = nv;
    g->meta_keys[g->n_meta] = k;
    g->meta_values[g->n_meta] = v;
    g->n_meta++;
    return 0;
nomem:
    ss_free(k);
    ss_free(v);
    rc = ss_err_set(err, SS_ENOMEM, "no memory for metadata");
    return rc;
}

const char *
ss_graph_meta(const ss_graph_t *g, const char *key)
{
    for (int i = 0; i < g->n_meta; i++)
        if (strcmp(g->meta_keys[i], key) == 0)
            return g->meta_values[i];
    return NULL;
}

ss_dtype_t
ss_graph_precision(const ss_graph_t *g)
{
    const char *p = ss_graph_meta(g, PRECISION_KEY);

    return p != NULL && strcmp(p, "bf16") == 0 ? SS_DTYPE_BF16
                                               : SS_DTYPE_F32;
}

/* 1 when name (len bytes) is an entry of the ','-joined list. */
static int
list_has(const char *list, const char *name, size_t len)
{
    const char *e;

    if (list == NULL || len == 0)
        return 0;
    for (;; list = e + 1) {
        e = strchr(list, ',');
        if (e == NULL)
            e = list + strlen(list);
        if ((size_t)(e - list) == len && memcmp(list, name, len) == 0)
            return 1;
        if (*e == '\0')
            return 0;
    }
}

int
ss_graph_node_bf16(const ss_graph_t *g, const char *name)
{
    if (ss_graph_precision(g) == SS_DTYPE_BF16)
        return 1;
    return name != NULL
           && list_has(ss_graph_meta(g, SS_GRAPH_BF16_NODES), name,
                           strlen(name));
}

int
ss_graph_set_bf16_nodes(ss_graph_t *g, int n, const char *const *names,
                        ss_err_t *err)
{
    size_t len = 1, at = 0;
    char *v;
    int rc;

    for (int i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0'
            || strchr(names[i], ',') != NULL)
            return ss_err_set(err, SS_EINVAL, "bf16 nodes: cannot list "
                              "node name '%s' (empty or with a ',')",
                              names[i] ? names[i] : "(null)");
        len += strlen(names[i]) + 1;
    }
    if ((v = ss_malloc(len)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for metadata");
    v[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t l = strlen(names[i]);

        if (i > 0)
            v[at++] = ',';
        memcpy(v + at, names[i], l);
        at += l;
        v[at] = '\0';
    }
    rc = ss_graph_set_meta(g, SS_GRAPH_BF16_NODES, v, err);
    ss_free(v);
    return rc;
}
