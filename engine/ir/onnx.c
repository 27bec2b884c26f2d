/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ONNX ModelProto → graph IR.
 *
 * DESIGN: the file is parsed whole by protobuf-c (code generated at build
 * time from engine/ir/onnx.proto), with the project's allocator so allocation
 * failures are injectable.  Then, in order: the default-domain opset must be
 * 1..17; every node's op must have a kernel (onnx_ops.c: one error lists
 * them all, and nothing is built); values are created for graph inputs,
 * initializers and node outputs, each name exactly once; Constant nodes turn into constant
 * values and vanish; node inputs and graph outputs are resolved by name
 * (a dangling name is an error); nodes are put in topological order (a
 * cycle is an error); last, each node's op version must be one the
 * engine runs (opset.c: 7..17, older ones when opset 7 kept them).  Names
 * are looked up through a small open-addressing hash table so hostile
 * files with many nodes stay linear.
 *
 * THREADS: [any]; a load touches only its own objects.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "engine/ir/edit.h"
#include "engine/ir/internal.h"

#define MAX_COUNT (1 << 24)     /* nodes, values, attributes ... */

static const char *
nz(const char *s)
{
    return s != NULL ? s : "";
}

/* ---- protobuf-c allocator ------------------------------------------- */

static void *
pb_alloc(void *data, size_t n)
{
    (void)data;
    return ss_malloc(n);
}

static void
pb_free(void *data, void *p)
{
    (void)data;
    ss_free(p);
}

static ProtobufCAllocator pb_allocator = { pb_alloc, pb_free, NULL };

/* ---- name table ------------------------------------------------------ */

typedef struct names {
    size_t cap;     /* power of two */
    int *slot;      /* value id, or -1 */
    ss_value_t *values;
} names_t;

static uint64_t
hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int
names_init(names_t *t, size_t n, ss_value_t *values)
{
    t->cap = 16;
    while (t->cap < 2 * n + 1)
        t->cap *= 2;
    t->values = values;
    if ((t->slot = ss_malloc(t->cap * sizeof(int))) == NULL)
        return -1;
    memset(t->slot, 0xff, t->cap * sizeof(int));
    return 0;
}

/* The slot where name is or would go. */
static size_t
names_probe(const names_t *t, const char *name)
{
    size_t i = (size_t)hash(name) & (t->cap - 1);

    while (t->slot[i] >= 0 && strcmp(t->values[t->slot[i]].name, name) != 0)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static int
names_get(const names_t *t, const char *name)
{
    return t->slot[names_probe(t, name)];
}

/* ---- the import ------------------------------------------------------- */

typedef struct import {
    ss__onnx_ctx_t cx;
    const Onnx__GraphProto *gp;
    ss_graph_t *g;
    names_t names;
    int cap_values;
    ss__onnx_stripped_t st;     /* the model protobuf-c saw, if stripped */
    /* Subgraphs (ir.h, struct ss_graph): a subgraph's import has its own
     * names (its scope) and g, and shares its root's value table. */
    struct import *up;          /* the enclosing graph's import, or NULL */
    ss_graph_t *root;           /* the model's graph */
} import_t;

/* The name of output k of node i: NULL when omitted.  RNN, GRU and LSTM
 * may omit Y (output 0) and keep Y_h; their kernels compute Y anyway, so
 * it gets a value of its own, named "ss:<op>#<node index>:Y", that
 * nothing reads. */
static const char *
out_name(const Onnx__NodeProto *np, size_t i, size_t k, char *buf,
         size_t len)
{
    const char *op = nz(np->op_type);

    if (np->output[k][0] != '\0')
        return np->output[k];
    if (k != 0 || !ss__onnx_default_domain(np->domain)
        || (strcmp(op, "RNN") != 0 && strcmp(op, "GRU") != 0
            && strcmp(op, "LSTM") != 0))
        return NULL;
    snprintf(buf, len, "ss:%s#%zu:Y", op, i);
    return buf;
}

/* Adds a value named name; fails when the name is taken. */
static int
add_value(import_t *im, const char *name, int *id, ss_err_t *err)
{
    ss_graph_t *g = im->root;
    size_t slot;
    ss_value_t *v;

    *id = -1;
    if (name == NULL || name[0] == '\0')
        return ss_err_set(err, SS_EBADMODEL, "%s: a value has no name",
                          im->cx.source);
    slot = names_probe(&im->names, name);
    if (im->names.slot[slot] >= 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: value '%s' is defined "
                          "twice", im->cx.source, name);
    if (g->n_values >= im->cap_values)
        return ss_err_set(err, SS_EINTERNAL, "%s: value table overflow",
                          im->cx.source);
    v = &g->values[g->n_values];
    if ((v->name = ss_strdup(name)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for value names");
    v->ndim = -1;
    v->producer = -1;
    for (int d = 0; d < SS_MAX_DIMS; d++)
        v->dims[d] = -1;
    im->names.slot[slot] = g->n_values;
    *id = g->n_values++;
    for (import_t *s = im; s != NULL; s = s->up)
        s->g->n_values = g->n_values;     /* subgraphs share the table */
    return 0;
}

/* Fills dtype/ndim/dims from a ValueInfoProto (symbolic dims → -1). */
static int
read_type(import_t *im, const Onnx__ValueInfoProto *vi, ss_dtype_t *dtype,
          int *ndim, int64_t *dims, ss_err_t *err)
{
    const Onnx__TypeProto__Tensor *tt;
    const Onnx__TensorShapeProto *sh;

    *dtype = SS_DTYPE_UNDEFINED;
    *ndim = -1;
    if (vi->type == NULL || vi->type->value_case
        != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
        return ss_err_set(err, SS_EUNSUPP, "%s: '%s' is not a tensor",
                          im->cx.source, nz(vi->name));
    }
    tt = vi->type->tensor_type;
    if (tt->has_elem_type)
        *dtype = (ss_dtype_t)tt->elem_type;
    if (ss_dtype_size(*dtype) == 0)
        return ss_err_set(err, SS_EUNSUPP, "%s: '%s' has element type %d, "
                          "which is not supported", im->cx.source,
                          nz(vi->name), (int)*dtype);
    if ((sh = tt->shape) == NULL)
        return 0;
    if (sh->n_dim > SS_MAX_DIMS)
        return ss_err_set(err, SS_EBADMODEL, "%s: '%s' has %zu dims (at "
                          "most %d)", im->cx.source, nz(vi->name), sh->n_dim,
                          SS_MAX_DIMS);
    for (size_t d = 0; d < sh->n_dim; d++) {
        const Onnx__TensorShapeProto__Dimension *dm = sh->dim[d];

        dims[d] = -1;
        if (dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (dm->dim_value < 0)
                return ss_err_set(err, SS_EBADMODEL, "%s: '%s' has negative "
                                  "dim %lld", im->cx.source, nz(vi->name),
                                  (long long)dm->dim_value);
            dims[d] = dm->dim_value;
        }
    }
    *ndim = (int)sh->n_dim;
    return 0;
}

/* A NUL-terminated copy of protobuf bytes, whose data is NULL when
 * empty. */
static char *
bytes_dup(const ProtobufCBinaryData *b)
{
    return ss_strndup(b->len > 0 ? (const char *)b->data : "", b->len);
}

static int import_sub(import_t *im, const Onnx__GraphProto *gp,
                      const char *label, const char *attr, ss_graph_t **out,
                      ss_err_t *err);

static int
read_attr(import_t *im, const Onnx__AttributeProto *ap, const char *label,
          ss_attr_t *a, ss_err_t *err)
{
    char what[160];
    int rc = 0;

    if ((a->name = ss_strdup(nz(ap->name))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for attributes");
    if (ap->ref_attr_name != NULL && ap->ref_attr_name[0] != '\0')
        return ss_err_set(err, SS_EUNSUPP, "%s: node %s: attribute '%s' "
                          "refers to a function's attribute", im->cx.source,
                          label, a->name);
    a->type = ap->has_type ? (ss_attr_type_t)ap->type : SS_ATTR_UNDEFINED;
    switch (a->type) {
    case SS_ATTR_FLOAT:
        a->f = ap->f;
        break;
    case SS_ATTR_INT:
        a->i = ap->i;
        break;
    case SS_ATTR_STRING:
        if ((a->s = bytes_dup(&ap->s)) == NULL)
            rc = ss_err_set(err, SS_ENOMEM, "no memory for attributes");
        break;
    case SS_ATTR_TENSOR:
        if (ap->t == NULL) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node %s: attribute '%s' "
                            "has no tensor", im->cx.source, label, a->name);
            break;
        }
        snprintf(what, sizeof(what), "node %s attribute '%s'", label, a->name);
        rc = ss__onnx_tensor(&im->cx, ap->t, what, &a->t, err);
        break;
    case SS_ATTR_GRAPH:
        if (ap->g == NULL) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: node %s: attribute '%s' "
                            "has no graph", im->cx.source, label, a->name);
            break;
        }
        rc = import_sub(im, ap->g, label, a->name, &a->g, err);
        break;
    case SS_ATTR_FLOATS:
        a->n = (int)ap->n_floats;
        if (ap->n_floats > 0 && (a->floats = ss_malloc(ap->n_floats
                                                        * sizeof(float))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for attributes");
            break;
        }
        if (ap->n_floats > 0)
            memcpy(a->floats, ap->floats, ap->n_floats * sizeof(float));
        break;
    case SS_ATTR_INTS:
        a->n = (int)ap->n_ints;
        if (ap->n_ints > 0 && (a->ints = ss_malloc(ap->n_ints
                                                   * sizeof(int64_t))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for attributes");
            break;
        }
        if (ap->n_ints > 0)
            memcpy(a->ints, ap->ints, ap->n_ints * sizeof(int64_t));
        break;
    case SS_ATTR_STRINGS:
        if (ap->n_strings > 0
            && (a->strings = ss_calloc(ap->n_strings, sizeof(char *))) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for attributes");
            break;
        }
        a->n = (int)ap->n_strings;
        for (size_t i = 0; i < ap->n_strings && rc == 0; i++)
            if ((a->strings[i] = bytes_dup(&ap->strings[i])) == NULL)
                rc = ss_err_set(err, SS_ENOMEM, "no memory for attributes");
        break;
    default:
        rc = ss_err_set(err, SS_EUNSUPP, "%s: node %s: attribute '%s' has "
                        "type %d, which is not supported", im->cx.source,
                        label, a->name, (int)a->type);
        break;
    }
    return rc;
}

/* The tensor a Constant node holds (checked by constant_supported). */
static int
constant_value(import_t *im, const Onnx__NodeProto *np, const char *label,
               ss_tensor_t **out, ss_err_t *err)
{
    const Onnx__AttributeProto *ap = np->attribute[0];
    const char *an = nz(ap->name);
    char what[160];
    int64_t n;
    int rc = 0;

    *out = NULL;
    if (strcmp(an, "value") == 0) {
        if (ap->t == NULL)
            return ss_err_set(err, SS_EBADMODEL, "%s: Constant %s has no "
                              "tensor", im->cx.source, label);
        snprintf(what, sizeof(what), "Constant %s", label);
        return ss__onnx_tensor(&im->cx, ap->t, what, out, err);
    }
    if (strcmp(an, "value_float") == 0 || strcmp(an, "value_int") == 0) {
        int isf = an[6] == 'f';

        if ((rc = ss__tensor_new(isf ? SS_DTYPE_F32 : SS_DTYPE_I64, 0, NULL,
                                 out, err)) < 0)
            return rc;
        if (isf)
            *(float *)(*out)->data = ap->f;
        else
            *(int64_t *)(*out)->data = ap->i;
        return 0;
    }
    /* value_floats / value_ints: 1-D */
    {
        int isf = strcmp(an, "value_floats") == 0;

        n = isf ? (int64_t)ap->n_floats : (int64_t)ap->n_ints;
        if ((rc = ss__tensor_new(isf ? SS_DTYPE_F32 : SS_DTYPE_I64, 1, &n,
                                 out, err)) < 0)
            return rc;
        if (n > 0)
            memcpy((*out)->data, isf ? (void *)ap->floats : (void *)ap->ints,
                   (size_t)n * (isf ? sizeof(float) : sizeof(int64_t)));
    }
    return 0;
}

static int
make_values(import_t *im, ss_err_t *err)
{
    const Onnx__GraphProto *gp = im->gp;
    ss_graph_t *g = im->g;
    char what[160], label[96];
    int id, rc = 0;

    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];

        if ((rc = add_value(im, tp->name, &id, err)) < 0)
            goto done;
        snprintf(what, sizeof(what), "initializer '%s'", nz(tp->name));
        im->cx.raw = im->st.refs != NULL ? &im->st.refs[i] : NULL;
        rc = ss__onnx_tensor(&im->cx, tp, what, &g->values[id].constant,
                             err);
        im->cx.raw = NULL;
        if (rc < 0)
            goto done;
    }
    if ((g->inputs = ss_calloc(gp->n_input + 1, sizeof(int))) == NULL
        || (g->input_info = ss_calloc(gp->n_input + 1,
                                      sizeof(ss_io_info_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for graph inputs");
        goto done;
    }
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        ss_value_t *v;

        /* An input that is also an initializer is a constant with a
         * default a caller could override; we serve the default. */
        if (vi->name != NULL && vi->name[0] != '\0'
            && names_get(&im->names, vi->name) >= 0)
            continue;
        if ((rc = add_value(im, vi->name, &id, err)) < 0)
            goto done;
        v = &g->values[id];
        if ((im->up == NULL || vi->type != NULL)
            && (rc = read_type(im, vi, &v->dtype, &v->ndim, v->dims,
                               err)) < 0)
            goto done;
        g->inputs[g->n_inputs] = id;
        g->input_info[g->n_inputs] = (ss_io_info_t){
            .name = v->name, .dtype = v->dtype, .ndim = v->ndim
        };
        memcpy(g->input_info[g->n_inputs].dims, v->dims, sizeof(v->dims));
        g->n_inputs++;
    }
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];

        for (size_t k = 0; k < np->n_output; k++) {
            char buf[64];
            const char *name = out_name(np, i, k, buf, sizeof(buf));

            if (name == NULL)
                continue;
            if ((rc = add_value(im, name, &id, err)) < 0)
                goto done;
        }
        if (strcmp(nz(np->op_type), "Constant") == 0) {
            ss__onnx_node_label(np, i, label, sizeof(label));
            if (np->output[0][0] == '\0') {
                rc = ss_err_set(err, SS_EBADMODEL, "%s: Constant %s has no "
                                "output name", im->cx.source, label);
                goto done;
            }
            if ((rc = constant_value(im, np, label,
                                     &g->values[id].constant, err)) < 0)
                goto done;
        }
    }
    for (int i = 0; i < g->n_values; i++) {
        ss_value_t *v = &g->values[i];

        if (v->constant != NULL) {
            v->dtype = v->constant->dtype;
            v->ndim = v->constant->ndim;
            memcpy(v->dims, v->constant->dims, sizeof(v->dims));
            g->weight_bytes += (size_t)ss_tensor_numel(v->constant)
                               * ss_dtype_size(v->dtype);
        }
    }
done:
    return rc;
}

/* The value a graph reads as name: its own, or the nearest enclosing
 * graph's, which then goes on the `outer` list of every graph between
 * (ir.h); -1 when nothing defines it, -2 without memory. */
static int
lookup(import_t *im, const char *name)
{
    import_t *s = im;
    int id = -1;

    while (s != NULL && (id = names_get(&s->names, name)) < 0)
        s = s->up;
    for (import_t *t = im; id >= 0 && t != s; t = t->up) {
        ss_graph_t *g = t->g;
        int k = 0, *o;

        while (k < g->n_outer && g->outer[k] != id)
            k++;
        if (k < g->n_outer)
            continue;
        if ((o = ss_realloc(g->outer, (size_t)(g->n_outer + 1)
                                      * sizeof(int))) == NULL)
            return -2;
        g->outer = o;
        g->outer[g->n_outer++] = id;
    }
    return id;
}

static int
resolve(import_t *im, const char *name, const char *label, int *id,
        ss_err_t *err)
{
    if (name[0] == '\0') {
        *id = -1;
        return 0;
    }
    if ((*id = lookup(im, name)) == -2)
        return ss_err_set(err, SS_ENOMEM, "no memory for a subgraph");
    if (*id < 0)
        return ss_err_set(err, SS_EBADMODEL, "%s: %s reads '%s', which "
                          "nothing defines", im->cx.source, label, name);
    return 0;
}

/* Builds the IR nodes (Constant nodes dropped), in file order. */
static int
make_nodes(import_t *im, ss_err_t *err)
{
    const Onnx__GraphProto *gp = im->gp;
    ss_graph_t *g = im->g;
    char label[96], ctx[128], buf[64], qname[160];
    int rc = 0;

    if (gp->n_node > 0
        && (g->nodes = ss_calloc(gp->n_node, sizeof(ss_node_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for nodes");
        goto done;
    }
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        ss_node_t *n;

        if (strcmp(nz(np->op_type), "Constant") == 0)
            continue;
        n = &g->nodes[g->n_nodes++];
        ss__onnx_node_label(np, i, label, sizeof(label));
        snprintf(ctx, sizeof(ctx), "node %s (%s)", label, nz(np->op_type));
        if ((n->name = ss_strdup(nz(np->name))) == NULL
            || (n->op_type = ss_strdup(ss__onnx_qualified(np, qname,
                                                 sizeof(qname)))) == NULL
            || (n->domain = ss_strdup(ss__onnx_default_domain(np->domain)
                                      ? "" : np->domain)) == NULL
            || (np->n_input > 0
                && (n->inputs = ss_calloc(np->n_input, sizeof(int))) == NULL)
            || (np->n_output > 0
                && (n->outputs = ss_calloc(np->n_output, sizeof(int))) == NULL)
            || (np->n_attribute > 0
                && (n->attrs = ss_calloc(np->n_attribute,
                                         sizeof(ss_attr_t))) == NULL)) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for nodes");
            goto done;
        }
        n->n_inputs = (int)np->n_input;
        for (size_t k = 0; k < np->n_input; k++)
            if ((rc = resolve(im, np->input[k], ctx, &n->inputs[k], err)) < 0)
                goto done;
        /* Output 0 is required by every op: kernels write it
         * unconditionally (out_name() names the recurrent ops' Y). */
        if (np->n_output == 0 || out_name(np, i, 0, buf, sizeof(buf))
                                 == NULL) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: %s has no output",
                            im->cx.source, ctx);
            goto done;
        }
        n->n_outputs = (int)np->n_output;
        for (size_t k = 0; k < np->n_output; k++) {
            const char *name = out_name(np, i, k, buf, sizeof(buf));

            n->outputs[k] = name == NULL ? -1 : names_get(&im->names, name);
        }
        for (size_t k = 0; k < np->n_attribute; k++) {
            n->n_attrs++;
            if ((rc = read_attr(im, np->attribute[k], label, &n->attrs[k],
                                err)) < 0)
                goto done;
        }
    }
done:
    return rc;
}

static int
make_outputs(import_t *im, ss_err_t *err)
{
    const Onnx__GraphProto *gp = im->gp;
    ss_graph_t *g = im->g;
    int rc = 0;

    if (gp->n_output == 0) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: the graph has no outputs",
                        im->cx.source);
        goto done;
    }
    if ((g->outputs = ss_calloc(gp->n_output, sizeof(int))) == NULL
        || (g->output_info = ss_calloc(gp->n_output,
                                       sizeof(ss_io_info_t))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for graph outputs");
        goto done;
    }
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        ss_io_info_t *io = &g->output_info[i];
        int id;

        if (vi->name == NULL || vi->name[0] == '\0'
            || (id = lookup(im, vi->name)) < 0) {
            rc = ss_err_set(err, SS_EBADMODEL, "%s: graph output '%s' is "
                            "not defined by anything", im->cx.source,
                            nz(vi->name));
            goto done;
        }
        g->outputs[i] = id;
        g->n_outputs++;
        io->name = g->values[id].name;
        io->ndim = -1;
        for (int d = 0; d < SS_MAX_DIMS; d++)
            io->dims[d] = -1;
        if (im->up != NULL && vi->type == NULL)
            continue;   /* a subgraph's may say nothing: the plan infers */
        if ((rc = read_type(im, vi, &io->dtype, &io->ndim, io->dims,
                            err)) < 0)
            goto done;
    }
done:
    return rc;
}

#define MAX_DEPTH 16            /* subgraphs in subgraphs */

/* Values gp's subgraphs define, nested ones included, added to *total
 * (past MAX_COUNT: stop); depth past MAX_DEPTH makes it MAX_COUNT + 1. */
static void
count_sub(const Onnx__GraphProto *gp, int depth, size_t *total)
{
    for (size_t i = 0; i < gp->n_node && *total <= MAX_COUNT; i++)
        for (size_t k = 0; k < gp->node[i]->n_attribute; k++) {
            const Onnx__GraphProto *sg = gp->node[i]->attribute[k]->g;

            if (sg == NULL)
                continue;
            if (depth >= MAX_DEPTH || sg->n_node > MAX_COUNT
                || sg->n_input > MAX_COUNT || sg->n_initializer > MAX_COUNT) {
                *total = (size_t)MAX_COUNT + 1;
                return;
            }
            *total += sg->n_input + sg->n_initializer;
            for (size_t j = 0; j < sg->n_node; j++)
                *total += sg->node[j]->n_output > MAX_COUNT
                          ? (size_t)MAX_COUNT + 1 : sg->node[j]->n_output;
            count_sub(sg, depth + 1, total);
        }
}

/* Gives every subgraph of g the root's final value count. */
static void
share_values(ss_graph_t *g, int n_values)
{
    g->n_values = n_values;
    for (int i = 0; i < g->n_nodes; i++)
        for (int a = 0; a < g->nodes[i].n_attrs; a++)
            if (g->nodes[i].attrs[a].g != NULL)
                share_values(g->nodes[i].attrs[a].g, n_values);
}

/* Imports subgraph gp (attribute attr of node label) into *out: its own
 * scope of names, the root's value table (ir.h, struct ss_graph). */
static int
import_sub(import_t *im, const Onnx__GraphProto *gp, const char *label,
           const char *attr, ss_graph_t **out, ss_err_t *err)
{
    import_t sub = { .cx = im->cx, .gp = gp, .cap_values = im->cap_values,
                     .up = im, .root = im->root };
    ss_graph_t *g = NULL;
    size_t own = gp->n_input + gp->n_initializer;
    int rc = 0;

    *out = NULL;
    sub.cx.raw = NULL;          /* only the root's payloads are stripped */
    for (size_t j = 0; j < gp->n_node; j++)
        own += gp->node[j]->n_output;
    if ((g = ss_calloc(1, sizeof(*g))) == NULL
        || (g->source = ss_strdup(im->root->source)) == NULL
        || names_init(&sub.names, own, im->root->values) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a subgraph");
        goto done;
    }
    g->parent = im->g;
    g->values = im->root->values;
    g->n_values = im->root->n_values;
    g->opset = im->root->opset;
    sub.g = g;
    if ((rc = ss__onnx_check_ops(sub.gp, sub.g, sub.cx.source, err)) < 0
        || (rc = make_values(&sub, err)) < 0
        || (rc = make_nodes(&sub, err)) < 0
        || (rc = ss__ir_sort_nodes(sub.g, sub.cx.source, err)) < 0
        || (rc = make_outputs(&sub, err)) < 0
        || (rc = ss__ir_check_versions(g, err)) < 0)
        goto done;
    *out = g;
    g = NULL;
done:
    im->cx.budget = sub.cx.budget;
    ss_free(sub.names.slot);
    ss_graph_free(g);
    if (rc < 0)
        ss_err_wrap(err, rc, "node %s, subgraph '%s'", label, attr);
    return rc;
}

static int
check_counts(import_t *im, const Onnx__GraphProto *gp, ss_err_t *err)
{
    size_t total = gp->n_input + gp->n_initializer;

    for (size_t i = 0; i < gp->n_node; i++) {
        if (gp->node[i]->n_input > MAX_COUNT
            || gp->node[i]->n_output > MAX_COUNT
            || gp->node[i]->n_attribute > MAX_COUNT)
            total = (size_t)MAX_COUNT + 1;
        total += gp->node[i]->n_output;
        for (size_t k = 0; k < gp->node[i]->n_attribute; k++) {
            const Onnx__AttributeProto *a = gp->node[i]->attribute[k];

            if (a->n_ints > MAX_COUNT || a->n_floats > MAX_COUNT
                || a->n_strings > MAX_COUNT)
                total = (size_t)MAX_COUNT + 1;
        }
        if (total > MAX_COUNT)
            break;
    }
    if (total <= MAX_COUNT)
        count_sub(gp, 0, &total);
    if (gp->n_node > MAX_COUNT || total > MAX_COUNT)
        return ss_err_set(err, SS_EBADMODEL, "%s: too many nodes or values "
                          "(or subgraphs nested too deep)",
                          im->cx.source);
    im->cap_values = (int)total;
    return 0;
}

/* map: buf is this file mapping (NULL for a caller's buffer); its pages
 * may be dropped once read, and tensors may point into it. */
int
ss__onnx_load(const void *buf, size_t len, const char *source,
              const char *dir, ss_filemap_t *map, ss_graph_t **out,
              ss_err_t *err)
{
    Onnx__ModelProto *m = NULL;
    import_t im = { .cx = { .source = source, .dir = dir,
                            .budget = SS_MODEL_MAX_BYTES,
                            .raw_src = buf, .raw_mapped = map != NULL,
                            .map = map } };
    int rc = 0;

    *out = NULL;
    if ((im.g = ss_calloc(1, sizeof(*im.g))) == NULL
        || (im.g->source = ss_strdup(source)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a graph");
        goto done;
    }
    im.root = im.g;
    /* Initializers' payloads are copied once, from buf, not through
     * protobuf-c (onnx_strip.c); a model the walk cannot parse goes to
     * protobuf-c whole, for its verdict. */
    if ((rc = ss__onnx_strip(buf, len, &im.st)) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to read %s", source);
        goto done;
    }
    if (rc == 0)
        m = onnx__model_proto__unpack(&pb_allocator, im.st.len, im.st.buf);
    else
        m = onnx__model_proto__unpack(&pb_allocator, len, buf);
    rc = 0;
    if (m == NULL) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: not a valid ONNX model "
                        "(truncated or corrupt protobuf)", source);
        goto done;
    }
    if ((rc = ss__onnx_check_opset(m, im.g, im.cx.source, err)) < 0)
        goto done;
    if ((im.gp = m->graph) == NULL) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: the model has no graph",
                        source);
        goto done;
    }
    if ((rc = ss__onnx_check_ops(im.gp, im.g, im.cx.source, err)) < 0
        || (rc = check_counts(&im, im.gp, err)) < 0)
        goto done;
    if (im.st.refs != NULL && im.st.n_refs != im.gp->n_initializer) {
        rc = ss_err_set(err, SS_EBADMODEL, "%s: %zu initializers, but %zu "
                        "in the wire format", source, im.gp->n_initializer,
                        im.st.n_refs);
        goto done;
    }
    /* payloads that cannot be read in place get an aligned file copy */
    ss__onnx_realign(&im.cx, im.gp, im.st.refs);
    if ((im.g->values = ss_calloc((size_t)im.cap_values + 1,
                                  sizeof(ss_value_t))) == NULL
        || names_init(&im.names, (size_t)im.cap_values, im.g->values) < 0) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the value table");
        goto done;
    }
    if ((rc = make_values(&im, err)) < 0 || (rc = make_nodes(&im, err)) < 0
        || (rc = ss__ir_sort_nodes(im.g, im.cx.source, err)) < 0
        || (rc = make_outputs(&im, err)) < 0
        || (rc = ss__ir_check_versions(im.g, err)) < 0)
        goto done;
    share_values(im.g, im.g->n_values);
    /* metadata_props: e.g. slimserve.precision (engine/ir/edit.h) */
    for (size_t i = 0; i < m->n_metadata_props; i++)
        if (m->metadata_props[i]->key != NULL
            && (rc = ss_graph_set_meta(im.g, m->metadata_props[i]->key,
                                       nz(m->metadata_props[i]->value),
                                       err)) < 0)
            goto done;
    *out = im.g;
    im.g = NULL;
done:
    if (m != NULL)
        onnx__model_proto__free_unpacked(m, &pb_allocator);
    ss_free(im.names.slot);
    ss__onnx_stripped_free(&im.st);
    ss_graph_free(im.g);
    /* the tensors hold their own references on it */
    ss_filemap_unref(im.cx.side);
    if (rc < 0)
        ss__err_scrub(err);
    return rc;
}

int
ss_graph_load_onnx_buffer(const void *buf, size_t len, ss_graph_t **out,
                          ss_err_t *err)
{
    return ss__onnx_load(buf, len, "<buffer>", NULL, NULL, out, err);
}
