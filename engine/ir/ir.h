/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_IR_H
#define SS_ENGINE_IR_H

/*
 * The graph IR, independent of ONNX (internal to engine/).
 *
 * A graph is a list of values (named tensors: graph inputs, initializers,
 * node outputs) and a list of nodes that read and write them by index.
 * Attributes keep ONNX's AttributeType numbers.  The importer (onnx.c)
 * builds it; passes and the plan read it; the graph owns every string,
 * array and constant tensor it points to.
 *
 * THREADS: immutable once ss_graph_load_* returns.
 */

#include "engine/engine.h"

typedef enum {
    SS_ATTR_UNDEFINED = 0,
    SS_ATTR_FLOAT = 1,
    SS_ATTR_INT = 2,
    SS_ATTR_STRING = 3,
    SS_ATTR_TENSOR = 4,
    SS_ATTR_GRAPH = 5,      /* If's branches, Loop's and Scan's body */
    SS_ATTR_FLOATS = 6,
    SS_ATTR_INTS = 7,
    SS_ATTR_STRINGS = 8
} ss_attr_type_t;

typedef struct ss_attr {
    char *name;
    ss_attr_type_t type;
    float f;
    int64_t i;
    char *s;            /* STRING: NUL-terminated copy */
    ss_tensor_t *t;     /* TENSOR: owned, data owned */
    int n;              /* FLOATS / INTS / STRINGS: element count */
    float *floats;
    int64_t *ints;
    char **strings;
    struct ss_graph *g; /* GRAPH: owned subgraph (see struct ss_graph) */
} ss_attr_t;

typedef struct ss_node {
    char *name;         /* "" when the file gave none */
    char *op_type;
    char *domain;       /* "" for the default ONNX domain */
    int n_inputs;
    int *inputs;        /* value ids; -1 for an omitted optional input */
    int n_outputs;
    int *outputs;       /* value ids; -1 for an omitted optional output
                         * (output 0 is always there: the importer
                         * refuses nodes without it) */
    int n_attrs;
    ss_attr_t *attrs;
} ss_node_t;

typedef struct ss_value {
    char *name;
    ss_dtype_t dtype;   /* UNDEFINED until inferred */
    int ndim;           /* -1 when unknown */
    int64_t dims[SS_MAX_DIMS]; /* -1 for symbolic/unknown */
    ss_tensor_t *constant; /* initializer or Constant output; owned */
    int producer;       /* node index, or -1 */
} ss_value_t;

/* Attribute look-ups: NULL / the default when absent or of another type. */
const struct ss_graph *ss__attr_graph(const ss_node_t *n, const char *name);
/* Node n's first subgraph (any GRAPH attribute), or NULL. */
const struct ss_graph *ss__attr_graph_any(const ss_node_t *n);
const ss_attr_t *ss__attr_find(const ss_node_t *n, const char *name);
int64_t ss__attr_int(const ss_node_t *n, const char *name, int64_t dflt);
float ss__attr_float(const ss_node_t *n, const char *name, float dflt);
const char *ss__attr_string(const ss_node_t *n, const char *name,
                            const char *dflt);
/* Returns the count and sets *v, or -1 when absent. */
int ss__attr_ints(const ss_node_t *n, const char *name, const int64_t **v);
int ss__attr_floats(const ss_node_t *n, const char *name, const float **v);

/* The graph: values and nodes by index (see the top of this file). */
struct ss_graph {
    char *source;       /* file name, or "<buffer>", for messages */
    int opset;          /* version of the default ONNX domain */
    int n_values;
    ss_value_t *values;
    int n_nodes;
    ss_node_t *nodes;   /* topological order; Constant nodes removed */
    int n_inputs;       /* graph inputs that are not initializers */
    int *inputs;        /* value ids */
    ss_io_info_t *input_info;
    int n_outputs;
    int *outputs;       /* value ids */
    ss_io_info_t *output_info;
    size_t weight_bytes;
    int n_meta;         /* ModelProto.metadata_props, in file order */
    char **meta_keys;   /* owned; see engine/ir/edit.h */
    char **meta_values;
    int n_taps;         /* values a run shows its caller (engine.h: */
    int *taps;          /* ss_graph_set_taps); value ids, owned */
    /* Subgraphs (an If's branches, a Loop's or Scan's body; the GRAPH
     * attribute of their node owns them): one value table serves a model
     * and all its subgraphs, so a value id means the same value at every
     * depth, and a subgraph reads an enclosing graph's value by its id.
     * A subgraph's `values` and `n_values` are its root's (borrowed, not
     * freed with it); `inputs` are its formal inputs, and `outer` lists
     * the values of enclosing graphs it (or a graph nested in it) reads,
     * which a plan of the subgraph takes as extra inputs. */
    const struct ss_graph *parent;  /* NULL for a model's graph */
    int n_outer;
    int *outer;
    /* What plans compiled from this graph charge (common/memacct.h):
     * made on first use by ss__graph_acct, one reference owned. */
    _Atomic(struct ss_memacct *) acct;
};

/* g's memory account (borrowed, lives as long as g), made on first use;
 * NULL without memory (nothing is then counted).  [any] */
struct ss_memacct *ss__graph_acct(const ss_graph_t *g);

/* Empty tensors: a tensor that exists has data != NULL even with zero
 * elements (tensors get at least one aligned byte, plans and runs point
 * empty values at a shared dummy), so kernels may do pointer arithmetic
 * on any input without a special case.  NULL data means an omitted
 * optional output (see ss__ops_want_output), nothing else. */

/* A new tensor with 64-byte aligned, zeroed data of the size dims give
 * (never NULL, see above).  Fails with SS_ETOOBIG past SS_TENSOR_MAX_BYTES,
 * SS_EINVAL on bad dims, SS_ENOMEM.  Free with ss__tensor_free. */
#define SS_TENSOR_MAX_BYTES ((size_t)4 << 30)
int ss__tensor_new(ss_dtype_t dtype, int ndim, const int64_t *dims,
                   ss_tensor_t **out, ss_err_t *err);
void ss__tensor_free(ss_tensor_t *t);
/* A tensor whose data is `data`, inside the read-only file mapping m
 * (common/filemap.h): it takes a reference on m, which ss__tensor_free
 * drops.  Its data is element-aligned (not necessarily 64-byte aligned)
 * and READ-ONLY: code that changes a constant makes a new tensor (or a
 * copy: ss__tensor_writable) instead of writing into it. */
typedef struct ss_filemap ss_filemap_t;
int ss__tensor_new_mapped(ss_dtype_t dtype, int ndim, const int64_t *dims,
                          ss_filemap_t *m, const void *data,
                          ss_tensor_t **out, ss_err_t *err);
/* Makes t's data a private, writable, 64-byte aligned copy if it lies in
 * a file mapping (for code that edits a constant in place); 0 or
 * SS_ENOMEM. */
int ss__tensor_writable(ss_tensor_t *t, ss_err_t *err);
/* Bytes of t's data: 0 and *out, or -1 on overflow/negative dims/unsized
 * dtype. */
int ss__tensor_bytes(const ss_tensor_t *t, size_t *out);
/* "f32[1,3,224,224]" into buf (always NUL-terminated); returns buf. */
char *ss__tensor_str(const ss_tensor_t *t, char *buf, size_t len);
/* "FLOAT", "INT64", ... (ONNX spelling), "?" when unknown. */
const char *ss__dtype_onnx_name(ss_dtype_t t);

/* Replaces control bytes in err's message by '?': messages quote names
 * from the model file, and end up in logs and HTTP responses. */
void ss__err_scrub(ss_err_t *err);

void ss__attr_clear(ss_attr_t *a);
void ss__node_clear(ss_node_t *n);

/* ---- op kernels (engine/ops/) ------------------------------------------- */

/*
 * Every op has a reference implementation in plain C (used by tests, by
 * constant folding, and as the fallback when no oneDNN path applies).
 *
 * infer: sets out[k].dtype/ndim/dims for every output from the inputs'
 *   dtypes and shapes.  in[i] is NULL for an omitted optional input;
 *   in[i]->data is non-NULL only when that input is a known constant (shape
 *   inputs of Reshape, Slice, Expand, ... must be).  Fails with a message
 *   naming the node when shapes do not agree or a needed constant is
 *   missing.
 * run: computes the outputs.  out[k].data is allocated by the caller with
 *   the inferred size; in[i]->data is always set.
 *
 * Both are [any]: pure functions of their arguments.
 */
typedef struct ss_op {
    const char *op_type;
    int (*infer)(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
                 ss_tensor_t *out, ss_err_t *err);
    int (*run)(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
               ss_tensor_t *out, ss_err_t *err);
} ss_op_t;

/* The version of op_type a model importing `opset` of the default domain
 * runs (engine/ir/opset.c; the newest since_version <= opset); 0 when the op came later, -1
 * for an op opset.c does not know. */
int ss__ir_op_version(const char *op_type, int opset);

/* NULL when op_type (default domain) has no kernel. */
const ss_op_t *ss__op_find(const char *op_type);
/* The inputs of node n whose values its op's infer reads (bit k: input
 * k) at this opset: Reshape's shape, TopK's K, Resize's scales, NonZero's
 * input, ...  A plan needs them as constants (engine/ir/shapein.c). */
unsigned ss__op_value_inputs(const ss_node_t *n, int opset);

#endif
