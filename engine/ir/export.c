/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Graph IR → ONNX ModelProto (engine/ir/edit.h): what a compressed variant is
 * written as.
 *
 * DESIGN: the protobuf-c structs generated from engine/ir/onnx.proto are
 * filled to point at the graph's own strings and tensor bytes (raw_data,
 * little-endian like the host), so encoding copies the weights once, into
 * the packed buffer.  Every struct and pointer array made here is recorded
 * in a small pool and freed after packing.  Constants (initializers and
 * the importer's folded Constant nodes alike) become initializers; graph
 * inputs and outputs get ValueInfos from the io infos (a symbolic dim
 * becomes dim_param "batch" on axis 0, "d<k>" elsewhere); metadata goes to
 * metadata_props.  Saving writes through common/atomicfile.h.
 *
 * THREADS: [any]; reads the graph only.
 */

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "engine/ir/edit.h"
#include "engine/ir/internal.h"
#include "engine/ir/onnx.pb-c.h"

typedef struct pool {
    void **p;
    size_t n, cap;
    int oom;
} pool_t;

static void *
pnew(pool_t *pl, size_t n)
{
    void *m;

    if (pl->oom)
        return NULL;
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 256;
        void **np = ss_realloc(pl->p, cap * sizeof(void *));

        if (np == NULL) {
            pl->oom = 1;
            return NULL;
        }
        pl->p = np;
        pl->cap = cap;
    }
    if ((m = ss_calloc(1, n ? n : 1)) == NULL) {
        pl->oom = 1;
        return NULL;
    }
    pl->p[pl->n++] = m;
    return m;
}

static void
pool_free(pool_t *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        ss_free(pl->p[i]);
    ss_free(pl->p);
}

static char *
pstr(pool_t *pl, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = pnew(pl, n);

    if (c != NULL)
        memcpy(c, s, n);
    return c;
}

static Onnx__TensorProto *
tensor(pool_t *pl, const ss_tensor_t *t, const char *name)
{
    static const Onnx__TensorProto init = ONNX__TENSOR_PROTO__INIT;
    Onnx__TensorProto *tp = pnew(pl, sizeof(*tp));
    size_t bytes;

    if (tp == NULL || ss__tensor_bytes(t, &bytes) < 0)
        return NULL;
    *tp = init;
    tp->name = (char *)name;
    tp->n_dims = (size_t)t->ndim;
    tp->dims = (int64_t *)t->dims;
    tp->has_data_type = 1;
    tp->data_type = (int32_t)t->dtype;
    tp->has_raw_data = 1;
    tp->raw_data.len = bytes;
    tp->raw_data.data = t->data;
    return tp;
}

static Onnx__AttributeProto *
attr(pool_t *pl, const ss_attr_t *a)
{
    static const Onnx__AttributeProto init = ONNX__ATTRIBUTE_PROTO__INIT;
    Onnx__AttributeProto *ap = pnew(pl, sizeof(*ap));

    if (ap == NULL)
        return NULL;
    *ap = init;
    ap->name = a->name;
    ap->has_type = 1;
    ap->type = (Onnx__AttributeProto__AttributeType)a->type;
    switch (a->type) {
    case SS_ATTR_FLOAT:
        ap->has_f = 1;
        ap->f = a->f;
        break;
    case SS_ATTR_INT:
        ap->has_i = 1;
        ap->i = a->i;
        break;
    case SS_ATTR_STRING:
        ap->has_s = 1;
        ap->s.data = (uint8_t *)(a->s ? a->s : "");
        ap->s.len = a->s ? strlen(a->s) : 0;
        break;
    case SS_ATTR_TENSOR:
        if (a->t == NULL || (ap->t = tensor(pl, a->t, NULL)) == NULL)
            return NULL;
        break;
    case SS_ATTR_FLOATS:
        ap->n_floats = (size_t)a->n;
        ap->floats = a->floats;
        break;
    case SS_ATTR_INTS:
        ap->n_ints = (size_t)a->n;
        ap->ints = a->ints;
        break;
    case SS_ATTR_STRINGS:
        ap->n_strings = (size_t)a->n;
        if (a->n > 0 && (ap->strings = pnew(pl, (size_t)a->n
                                            * sizeof(ProtobufCBinaryData)))
                        == NULL)
            return NULL;
        for (int i = 0; i < a->n; i++) {
            ap->strings[i].data = (uint8_t *)a->strings[i];
            ap->strings[i].len = strlen(a->strings[i]);
        }
        break;
    default:
        return NULL;
    }
    return ap;
}

/*
 * Raising a graph below opset 13 to 13 (pick_opset).  ONNX's version 13
 * of most ops only added types (bfloat16) to the version before, and the
 * versions between 7 and 12 of the ops below only added types, negative
 * axes or optional inputs: a node of one of these ops whose own version is
 * at least `from` means the same at 13.  Older versions had other
 * attributes or defaults (Resize 10's coordinates, Clip 6's min/max, Pad
 * 2's pads, Slice 1's starts/ends attributes, TopK 1's k), and an op
 * not listed (Upsample, Scan 8, Conv and pooling before 11, ...) is never
 * raised.  MaxPool 12 only added int8 types to 11 (every CNN exported at
 * opset 11 has one).  Three kinds change at 13 and
 * are written in 13's form: Squeeze, Unsqueeze and ReduceSum take their
 * axes, Split its sizes, as an input (RAISE_TO_INPUT: the attribute is
 * written as an int64 initializer); Softmax, LogSoftmax and Hardmax
 * coerced their input to 2-D at the axis before 13 (RAISE_LAST_AXIS: the
 * same only when the axis is the last one: -1, or the rank less one where
 * the rank can be derived, engine/ir/rank.c).
 */
enum { RAISE_SAME, RAISE_TO_INPUT, RAISE_LAST_AXIS };

static const struct {
    const char *op;
    unsigned char from, how;
} raise13[] = {
    { "Abs", 6, 0 }, { "Add", 7, 0 }, { "And", 7, 0 }, { "ArgMax", 1, 0 },
    { "ArgMin", 1, 0 }, { "AveragePool", 11, 0 }, { "Cast", 6, 0 },
    { "Ceil", 6, 0 }, { "Clip", 11, 0 }, { "Concat", 4, 0 },
    { "Constant", 9, 0 },
    { "DepthToSpace", 1, 0 }, { "DequantizeLinear", 10, 0 },
    { "Div", 7, 0 }, { "Dropout", 7, 0 }, { "Equal", 7, 0 },
    { "Erf", 9, 0 }, { "Exp", 6, 0 }, { "Expand", 8, 0 },
    { "Flatten", 9, 0 }, { "Floor", 6, 0 }, { "Gather", 1, 0 },
    { "GatherElements", 11, 0 }, { "GatherND", 11, 0 }, { "Gemm", 7, 0 },
    { "Greater", 7, 0 }, { "Hardmax", 11, RAISE_LAST_AXIS },
    { "Identity", 1, 0 }, { "IsNaN", 9, 0 }, { "LRN", 1, 0 },
    { "Less", 7, 0 }, { "Log", 6, 0 }, { "LogSoftmax", 11, RAISE_LAST_AXIS },
    { "MatMul", 1, 0 }, { "Max", 8, 0 }, { "MaxPool", 11, 0 },
    { "Mean", 8, 0 },
    { "MeanVarianceNormalization", 9, 0 }, { "Min", 8, 0 },
    { "Mod", 10, 0 }, { "Mul", 7, 0 }, { "Neg", 6, 0 }, { "NonZero", 9, 0 },
    { "Pad", 11, 0 }, { "Pow", 7, 0 }, { "QuantizeLinear", 10, 0 },
    { "Reciprocal", 6, 0 }, { "ReduceL1", 1, 0 }, { "ReduceL2", 1, 0 },
    { "ReduceLogSum", 1, 0 }, { "ReduceLogSumExp", 1, 0 },
    { "ReduceMax", 1, 0 }, { "ReduceMean", 1, 0 }, { "ReduceMin", 1, 0 },
    { "ReduceProd", 1, 0 }, { "ReduceSum", 1, RAISE_TO_INPUT },
    { "ReduceSumSquare", 1, 0 }, { "Relu", 6, 0 }, { "Reshape", 5, 0 },
    { "Resize", 11, 0 }, { "ScatterElements", 11, 0 },
    { "ScatterND", 11, 0 }, { "Shape", 1, 0 }, { "Sigmoid", 6, 0 },
    { "Sign", 9, 0 }, { "Size", 1, 0 }, { "Slice", 10, 0 },
    { "Softmax", 11, RAISE_LAST_AXIS }, { "SpaceToDepth", 1, 0 },
    { "Split", 2, RAISE_TO_INPUT }, { "Sqrt", 6, 0 },
    { "Squeeze", 1, RAISE_TO_INPUT }, { "Sub", 7, 0 }, { "Sum", 8, 0 },
    { "Tanh", 6, 0 }, { "Tile", 6, 0 }, { "TopK", 10, 0 },
    { "Transpose", 1, 0 },
    { "Unsqueeze", 1, RAISE_TO_INPUT },
};

/* The attribute of n that 13 reads as input 1 instead, or NULL. */
static const ss_attr_t *
to_input_attr(const ss_node_t *n)
{
    const char *name = strcmp(n->op_type, "Split") == 0 ? "split" : "axes";
    const ss_attr_t *a = ss__attr_find(n, name);

    return a != NULL && a->type == SS_ATTR_INTS && n->n_inputs == 1 ? a
                                                                   : NULL;
}

static int
raise_how(const char *op)
{
    for (size_t i = 0; i < sizeof(raise13) / sizeof(raise13[0]); i++)
        if (strcmp(raise13[i].op, op) == 0)
            return raise13[i].how;
    return RAISE_SAME;
}

/* The int64 initializer holding a's values as input 1 of n (written at
 * 13), named after n's first output and unused by any value of g. */
static Onnx__TensorProto *
attr_tensor(pool_t *pl, const ss_graph_t *g, const ss_node_t *n,
            const ss_attr_t *a)
{
    static const Onnx__TensorProto init = ONNX__TENSOR_PROTO__INIT;
    Onnx__TensorProto *tp = pnew(pl, sizeof(*tp));
    int64_t *dims = pnew(pl, sizeof(int64_t));
    const char *base = g->values[n->outputs[0]].name;
    char *name = pnew(pl, strlen(base) + 32);

    if (tp == NULL || dims == NULL || name == NULL)
        return NULL;
    for (int k = 0;; k++) {
        snprintf(name, strlen(base) + 32, "%s_%s%d", base, a->name, k);
        if (ss_graph_find_value(g, name) < 0)
            break;
    }
    *tp = init;
    *dims = a->n;
    tp->name = name;
    tp->n_dims = 1;
    tp->dims = dims;
    tp->has_data_type = 1;
    tp->data_type = (int32_t)SS_DTYPE_I64;
    tp->has_raw_data = 1;
    tp->raw_data.len = (size_t)a->n * sizeof(int64_t);
    tp->raw_data.data = (uint8_t *)(a->n > 0 ? (void *)a->ints
                                             : (void *)dims);
    return tp;
}

static Onnx__NodeProto *
node(pool_t *pl, const ss_graph_t *g, const ss_node_t *n, bool raise,
     Onnx__GraphProto *gp)
{
    static const Onnx__NodeProto init = ONNX__NODE_PROTO__INIT;
    Onnx__NodeProto *np = pnew(pl, sizeof(*np));
    static char empty[] = "";
    const ss_attr_t *moved;

    if (np == NULL)
        return NULL;
    *np = init;
    np->name = n->name[0] ? n->name : NULL;
    np->op_type = n->op_type;
    np->domain = n->domain != NULL && n->domain[0] ? n->domain : NULL;
    /* another domain's op is held as "<domain>.<op_type>" (onnx.c) */
    if (np->domain != NULL && strncmp(n->op_type, np->domain,
                                      strlen(np->domain)) == 0
        && n->op_type[strlen(np->domain)] == '.')
        np->op_type = n->op_type + strlen(np->domain) + 1;
    moved = raise && raise_how(n->op_type) == RAISE_TO_INPUT
            ? to_input_attr(n) : NULL;
    np->n_input = (size_t)n->n_inputs + (moved != NULL);
    np->n_output = (size_t)n->n_outputs;
    np->n_attribute = 0;
    if ((np->input = pnew(pl, (np->n_input + 1) * sizeof(char *))) == NULL
        || (np->output = pnew(pl, (np->n_output + 1) * sizeof(char *)))
           == NULL
        || (np->attribute = pnew(pl, ((size_t)n->n_attrs + 1)
                                     * sizeof(void *))) == NULL)
        return NULL;
    for (int k = 0; k < n->n_inputs; k++)
        np->input[k] = n->inputs[k] >= 0 ? g->values[n->inputs[k]].name
                                         : empty;
    for (int k = 0; k < n->n_outputs; k++)
        np->output[k] = n->outputs[k] >= 0 ? g->values[n->outputs[k]].name
                                           : empty;
    for (int a = 0; a < n->n_attrs; a++)
        if (&n->attrs[a] != moved
            && (np->attribute[np->n_attribute++] = attr(pl, &n->attrs[a]))
               == NULL)
            return NULL;
    if (moved != NULL) {
        Onnx__TensorProto *tp = attr_tensor(pl, g, n, moved);

        if (tp == NULL)
            return NULL;
        np->input[1] = tp->name;
        gp->initializer[gp->n_initializer++] = tp;
    }
    return np;
}

static Onnx__ValueInfoProto *
value_info(pool_t *pl, const ss_io_info_t *io)
{
    static const Onnx__ValueInfoProto vinit = ONNX__VALUE_INFO_PROTO__INIT;
    static const Onnx__TypeProto tinit = ONNX__TYPE_PROTO__INIT;
    static const Onnx__TypeProto__Tensor ttinit =
        ONNX__TYPE_PROTO__TENSOR__INIT;
    static const Onnx__TensorShapeProto sinit = ONNX__TENSOR_SHAPE_PROTO__INIT;
    static const Onnx__TensorShapeProto__Dimension dinit =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    Onnx__ValueInfoProto *vi = pnew(pl, sizeof(*vi));
    Onnx__TypeProto *tp = pnew(pl, sizeof(*tp));
    Onnx__TypeProto__Tensor *tt = pnew(pl, sizeof(*tt));
    Onnx__TensorShapeProto *sh;
    char buf[24];

    if (vi == NULL || tp == NULL || tt == NULL)
        return NULL;
    *vi = vinit;
    *tp = tinit;
    *tt = ttinit;
    vi->name = (char *)io->name;
    vi->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = (int32_t)(io->dtype != SS_DTYPE_UNDEFINED ? io->dtype
                                                              : SS_DTYPE_F32);
    if (io->ndim < 0)
        return vi;
    if ((sh = pnew(pl, sizeof(*sh))) == NULL
        || (sh->dim = pnew(pl, ((size_t)io->ndim + 1) * sizeof(void *)))
           == NULL)
        return NULL;
    {
        Onnx__TensorShapeProto__Dimension **dims = sh->dim;

        *sh = sinit;
        sh->dim = dims;
    }
    sh->n_dim = (size_t)io->ndim;
    tt->shape = sh;
    for (int d = 0; d < io->ndim; d++) {
        Onnx__TensorShapeProto__Dimension *dm = pnew(pl, sizeof(*dm));

        if (dm == NULL)
            return NULL;
        *dm = dinit;
        if (io->dims[d] >= 0) {
            dm->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dm->dim_value = io->dims[d];
        } else {
            if (d == 0)
                snprintf(buf, sizeof(buf), "batch");
            else
                snprintf(buf, sizeof(buf), "d%d", d);
            dm->value_case =
                ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            if ((dm->dim_param = pstr(pl, buf)) == NULL)
                return NULL;
        }
        sh->dim[d] = dm;
    }
    return vi;
}

static int
fill_graph(pool_t *pl, const ss_graph_t *g, bool raise,
           Onnx__GraphProto *gp, ss_err_t *err)
{
    size_t n_init = 0;

    for (int i = 0; raise && i < g->n_nodes; i++)
        n_init += raise_how(g->nodes[i].op_type) == RAISE_TO_INPUT
                  && to_input_attr(&g->nodes[i]) != NULL;

    for (int v = 0; v < g->n_values; v++) {
        const ss_tensor_t *t = g->values[v].constant;

        if (t == NULL)
            continue;
        if (ss_dtype_size(t->dtype) == 0 || t->dtype == SS_DTYPE_STRING)
            return ss_err_set(err, SS_EUNSUPP, "%s: constant '%s' has type "
                              "%s, which export does not write", g->source,
                              g->values[v].name,
                              ss__dtype_onnx_name(t->dtype));
        n_init++;
    }
    gp->name = (char *)"slimserve";
    if ((gp->node = pnew(pl, ((size_t)g->n_nodes + 1) * sizeof(void *)))
        == NULL
        || (gp->initializer = pnew(pl, (n_init + 1) * sizeof(void *)))
           == NULL
        || (gp->input = pnew(pl, ((size_t)g->n_inputs + 1)
                                 * sizeof(void *))) == NULL
        || (gp->output = pnew(pl, ((size_t)g->n_outputs + 1)
                                  * sizeof(void *))) == NULL)
        goto nomem;
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].constant != NULL) {
            Onnx__TensorProto *tp = tensor(pl, g->values[v].constant,
                                           g->values[v].name);

            if (tp == NULL)
                goto nomem;
            gp->initializer[gp->n_initializer++] = tp;
        }
    for (int i = 0; i < g->n_nodes; i++)
        if ((gp->node[gp->n_node++] = node(pl, g, &g->nodes[i], raise, gp))
            == NULL)
            goto nomem;
    for (int i = 0; i < g->n_inputs; i++)
        if ((gp->input[gp->n_input++] = value_info(pl, &g->input_info[i]))
            == NULL)
            goto nomem;
    for (int i = 0; i < g->n_outputs; i++)
        if ((gp->output[gp->n_output++]
             = value_info(pl, &g->output_info[i])) == NULL)
            goto nomem;
    return 0;
nomem:
    return ss_err_set(err, SS_ENOMEM, "no memory to encode %s", g->source);
}

/* Whether node n, of version v at g's opset, means the same at 13 when
 * written as node() writes it (the table above). */
static bool
raisable(const ss_graph_t *g, const ss_node_t *n, int v, int *memo)
{
    for (size_t i = 0; i < sizeof(raise13) / sizeof(raise13[0]); i++) {
        int64_t axis;

        if (strcmp(raise13[i].op, n->op_type) != 0)
            continue;
        if (v < raise13[i].from)
            return false;
        if (raise13[i].how != RAISE_LAST_AXIS)
            return true;
        if (n->n_inputs < 1 || n->inputs[0] < 0)
            return false;
        axis = ss__attr_int(n, "axis", 1);
        return axis == -1
               || (memo != NULL
                   && axis == ss__ir_rank(g, n->inputs[0], memo) - 1);
    }
    return false;
}

/*
 * The opset to write.  QDQ with per-axis scales needs 13, so a graph
 * below 13 with such nodes is raised to 13 when every node means the same
 * there (raisable); a graph where some node would not is refused, naming
 * it: raising would silently change what it computes (Upsample, Resize
 * 10, Softmax's coercion on an axis that is not the last).  Any other
 * graph is raised only when that changes no node's version (the same
 * definitions), else keeps its opset.
 */
static int
pick_opset(const ss_graph_t *g, int64_t *out, ss_err_t *err)
{
    bool same = true, per_axis = false;
    const ss_node_t *block = NULL;
    int block_v = 0, *memo;

    *out = g->opset;
    if (g->opset >= 13)
        return 0;
    /* without memory a Softmax is just not raised (refused, not wrong) */
    if ((memo = ss_malloc((size_t)g->n_values * sizeof(int) + 1)) != NULL)
        for (int i = 0; i < g->n_values; i++)
            memo[i] = -2;
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];
        int v = ss__ir_op_version(n->op_type, g->opset);

        if (v >= 0 && v != ss__ir_op_version(n->op_type, 13)) {
            same = false;
            if (block == NULL && !raisable(g, n, v, memo)) {
                block = n;
                block_v = v;
            }
        }
        if ((strcmp(n->op_type, "QuantizeLinear") == 0
             || strcmp(n->op_type, "DequantizeLinear") == 0)
            && n->n_inputs > 1 && n->inputs[1] >= 0
            && g->values[n->inputs[1]].constant != NULL
            && ss_tensor_numel(g->values[n->inputs[1]].constant) > 1)
            per_axis = true;
    }
    ss_free(memo);
    if (same || (per_axis && block == NULL))
        *out = 13;
    else if (per_axis)
        return ss_err_set(err, SS_EUNSUPP, "%s: per-axis quantization needs "
                          "opset 13, and node '%s' (%s, version %d at this "
                          "graph's opset %d) would mean something else "
                          "there", g->source,
                          block->name[0] ? block->name
                          : g->values[block->outputs[0]].name,
                          block->op_type, block_v, g->opset);
    return 0;
}

int
ss_graph_encode_onnx(const ss_graph_t *g, void **buf, size_t *len,
                     ss_err_t *err)
{
    static const Onnx__ModelProto minit = ONNX__MODEL_PROTO__INIT;
    static const Onnx__GraphProto ginit = ONNX__GRAPH_PROTO__INIT;
    static const Onnx__OperatorSetIdProto oinit =
        ONNX__OPERATOR_SET_ID_PROTO__INIT;
    static const Onnx__StringStringEntryProto einit =
        ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    Onnx__ModelProto m = minit;
    Onnx__GraphProto gp = ginit;
    Onnx__OperatorSetIdProto op = oinit, ms = oinit;
    Onnx__OperatorSetIdProto *ops[2] = { &op, &ms };
    pool_t pl = { 0 };
    uint8_t *out = NULL;
    size_t n;
    int rc = 0;

    *buf = NULL;
    *len = 0;
    op.has_version = 1;
    /* subgraphs share the model's value table (ir.h): not written yet */
    for (int i = 0; i < g->n_nodes; i++)
        if (ss__attr_graph_any(&g->nodes[i]) != NULL) {
            rc = ss_err_set(err, SS_EUNSUPP, "%s: node '%s' (%s) has a "
                            "subgraph; writing models with control flow "
                            "is not supported", g->source,
                            g->nodes[i].name, g->nodes[i].op_type);
            goto done;
        }
    if ((rc = pick_opset(g, &op.version, err)) < 0)
        goto done;
    m.has_ir_version = 1;
    m.ir_version = op.version >= 15 ? 8 : 7;
    m.producer_name = (char *)"slimserve";
    m.n_opset_import = 1;
    m.opset_import = ops;
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].domain != NULL
            && strcmp(g->nodes[i].domain, "com.microsoft") == 0) {
            ms.domain = (char *)"com.microsoft";
            ms.has_version = 1;
            ms.version = 1;
            m.n_opset_import = 2;
        }
    m.graph = &gp;
    if ((rc = fill_graph(&pl, g, op.version > g->opset, &gp, err)) < 0)
        goto done;
    if (g->n_meta > 0) {
        if ((m.metadata_props = pnew(&pl, (size_t)g->n_meta
                                          * sizeof(void *))) == NULL)
            goto nomem;
        for (int i = 0; i < g->n_meta; i++) {
            Onnx__StringStringEntryProto *e = pnew(&pl, sizeof(*e));

            if (e == NULL)
                goto nomem;
            *e = einit;
            e->key = g->meta_keys[i];
            e->value = g->meta_values[i];
            m.metadata_props[m.n_metadata_props++] = e;
        }
    }
    n = onnx__model_proto__get_packed_size(&m);
    if ((out = ss_malloc(n ? n : 1)) == NULL)
        goto nomem;
    if (onnx__model_proto__pack(&m, out) != n) {
        rc = ss_err_set(err, SS_EINTERNAL, "%s: protobuf packing wrote an "
                        "unexpected size", g->source);
        goto done;
    }
    *buf = out;
    *len = n;
    out = NULL;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory to encode %s", g->source);
done:
    ss_free(out);
    pool_free(&pl);
    return rc;
}

int
ss_graph_save_onnx(const ss_graph_t *g, const char *path, ss_err_t *err)
{
    ss_atomic_file_t af = { .fd = -1 };
    void *buf = NULL;
    size_t len = 0;
    int rc;

    if ((rc = ss_graph_encode_onnx(g, &buf, &len, err)) < 0)
        goto done;
    if ((rc = ss_atomic_open(&af, path, err)) < 0)
        goto done;
    if ((rc = ss_atomic_write(&af, buf, len, err)) < 0
        || (rc = ss_atomic_commit(&af, err)) < 0)
        goto done;
done:
    ss_atomic_abort(&af);
    ss_free(buf);
    return rc;
}
