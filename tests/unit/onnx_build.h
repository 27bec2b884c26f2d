/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_ONNX_BUILD_H
#define SS_TESTS_ONNX_BUILD_H

/*
 * Builds small ONNX models in tests with the protobuf-c structs generated
 * from engine/ir/onnx.proto, so tests need neither Python nor fixture files.
 *
 *   mb_t *b = mb_new(17);
 *   mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){-1, 4});   -1: symbolic
 *   mb_init_f32(b, "w", 2, (int64_t[]){4, 3}, w);             raw_data
 *   Onnx__NodeProto *n = mb_node(b, "MatMul", "mm", "x,w", "y");
 *   mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){-1, 3});
 *   buf = mb_pack(b, &len);  ...  free(buf); mb_free(b);
 * or, for a graph:  if (mb_load(b, &g, &err) < 0) ...   (frees b)
 *
 * Every allocation is recorded in the builder and freed by mb_free.
 * Memory errors abort: this is test scaffolding.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/ir/onnx.pb-c.h"

typedef struct mb {
    void **ptrs;
    size_t n_ptrs, cap_ptrs;
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    Onnx__GraphProto saved[4];  /* mb_graph_begin's stack (MB_DEPTH) */
    int depth;
} mb_t;

static inline void *
mb_alloc(mb_t *b, size_t n)
{
    void *p = calloc(1, n ? n : 1);

    if (p == NULL)
        abort();
    if (b->n_ptrs == b->cap_ptrs) {
        b->cap_ptrs = b->cap_ptrs ? 2 * b->cap_ptrs : 64;
        b->ptrs = realloc(b->ptrs, b->cap_ptrs * sizeof(void *));
        if (b->ptrs == NULL)
            abort();
    }
    b->ptrs[b->n_ptrs++] = p;
    return p;
}

/* A uniform float in [-1, 1) from a 32-bit LCG state: test weights and
 * inputs, the same on every machine. */
static inline float
mb_rand(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static inline char *
mb_str(mb_t *b, const char *s)
{
    char *p = mb_alloc(b, strlen(s) + 1);

    memcpy(p, s, strlen(s) + 1);
    return p;
}

/* Appends p to the array *arr of *n pointers. */
static inline void
mb_push(mb_t *b, void ***arr, size_t *n, void *p)
{
    void **a = mb_alloc(b, (*n + 1) * sizeof(void *));

    if (*n)
        memcpy(a, *arr, *n * sizeof(void *));
    a[(*n)++] = p;
    *arr = a;
}

static inline mb_t *
mb_new(int opset)
{
    mb_t *b = calloc(1, sizeof(*b));

    if (b == NULL)
        abort();
    onnx__model_proto__init(&b->m);
    onnx__graph_proto__init(&b->g);
    onnx__operator_set_id_proto__init(&b->opset);
    b->m.has_ir_version = 1;
    b->m.ir_version = 8;
    b->m.graph = &b->g;
    b->g.name = mb_str(b, "test");
    b->opset.domain = mb_str(b, "");
    b->opset.has_version = 1;
    b->opset.version = opset;
    b->opsets[0] = &b->opset;
    b->m.n_opset_import = 1;
    b->m.opset_import = b->opsets;
    return b;
}

static inline Onnx__ValueInfoProto *
mb_vinfo(mb_t *b, const char *name, ss_dtype_t dt, int ndim,
         const int64_t *dims)
{
    Onnx__ValueInfoProto *vi = mb_alloc(b, sizeof(*vi));
    Onnx__TypeProto *tp = mb_alloc(b, sizeof(*tp));
    Onnx__TypeProto__Tensor *tt = mb_alloc(b, sizeof(*tt));
    Onnx__TensorShapeProto *sh = mb_alloc(b, sizeof(*sh));

    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    vi->name = mb_str(b, name);
    vi->type = tp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    tt->has_elem_type = 1;
    tt->elem_type = dt;
    if (ndim >= 0) {
        tt->shape = sh;
        for (int i = 0; i < ndim; i++) {
            Onnx__TensorShapeProto__Dimension *d = mb_alloc(b, sizeof(*d));

            onnx__tensor_shape_proto__dimension__init(d);
            if (dims[i] < 0) {
                d->value_case =
                    ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                d->dim_param = mb_str(b, "N");
            } else {
                d->value_case =
                    ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                d->dim_value = dims[i];
            }
            mb_push(b, (void ***)&sh->dim, &sh->n_dim, d);
        }
    }
    return vi;
}

static inline void
mb_input(mb_t *b, const char *name, ss_dtype_t dt, int ndim,
         const int64_t *dims)
{
    mb_push(b, (void ***)&b->g.input, &b->g.n_input,
            mb_vinfo(b, name, dt, ndim, dims));
}

static inline void
mb_output(mb_t *b, const char *name, ss_dtype_t dt, int ndim,
          const int64_t *dims)
{
    mb_push(b, (void ***)&b->g.output, &b->g.n_output,
            mb_vinfo(b, name, dt, ndim, dims));
}

/* A tensor with raw_data (bytes = numel * size of dt). */
static inline Onnx__TensorProto *
mb_tensor(mb_t *b, const char *name, ss_dtype_t dt, int ndim,
          const int64_t *dims, const void *data, size_t bytes)
{
    Onnx__TensorProto *t = mb_alloc(b, sizeof(*t));

    onnx__tensor_proto__init(t);
    t->name = mb_str(b, name);
    t->has_data_type = 1;
    t->data_type = dt;
    t->n_dims = (size_t)ndim;
    t->dims = mb_alloc(b, (size_t)ndim * sizeof(int64_t));
    if (ndim)
        memcpy(t->dims, dims, (size_t)ndim * sizeof(int64_t));
    if (data != NULL) {
        t->has_raw_data = 1;
        t->raw_data.len = bytes;
        t->raw_data.data = mb_alloc(b, bytes);
        memcpy(t->raw_data.data, data, bytes);
    }
    return t;
}

static inline Onnx__TensorProto *
mb_init(mb_t *b, const char *name, ss_dtype_t dt, int ndim,
        const int64_t *dims, const void *data, size_t bytes)
{
    Onnx__TensorProto *t = mb_tensor(b, name, dt, ndim, dims, data, bytes);

    mb_push(b, (void ***)&b->g.initializer, &b->g.n_initializer, t);
    return t;
}

static inline Onnx__TensorProto *
mb_init_f32(mb_t *b, const char *name, int ndim, const int64_t *dims,
            const float *data)
{
    size_t n = 1;

    for (int i = 0; i < ndim; i++)
        n *= (size_t)dims[i];
    return mb_init(b, name, SS_DTYPE_F32, ndim, dims, data, n * 4);
}

static inline Onnx__TensorProto *
mb_init_i64(mb_t *b, const char *name, int ndim, const int64_t *dims,
            const int64_t *data)
{
    size_t n = 1;

    for (int i = 0; i < ndim; i++)
        n *= (size_t)dims[i];
    return mb_init(b, name, SS_DTYPE_I64, ndim, dims, data, n * 8);
}

/* Splits "a,b,,c" into a string array ("" stays: an omitted input). */
static inline void
mb_names(mb_t *b, const char *list, char ***out, size_t *n)
{
    const char *p = list;

    *n = 0;
    *out = NULL;
    if (list == NULL || *list == '\0')
        return;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        char *s = mb_alloc(b, len + 1);

        memcpy(s, p, len);
        mb_push(b, (void ***)out, n, s);
        if (c == NULL)
            break;
        p = c + 1;
    }
}

static inline Onnx__NodeProto *
mb_node(mb_t *b, const char *op, const char *name, const char *ins,
        const char *outs)
{
    Onnx__NodeProto *n = mb_alloc(b, sizeof(*n));

    onnx__node_proto__init(n);
    n->op_type = mb_str(b, op);
    if (name != NULL)
        n->name = mb_str(b, name);
    mb_names(b, ins, &n->input, &n->n_input);
    mb_names(b, outs, &n->output, &n->n_output);
    mb_push(b, (void ***)&b->g.node, &b->g.n_node, n);
    return n;
}

static inline Onnx__AttributeProto *
mb_attr(mb_t *b, Onnx__NodeProto *n, const char *name, int type)
{
    Onnx__AttributeProto *a = mb_alloc(b, sizeof(*a));

    onnx__attribute_proto__init(a);
    a->name = mb_str(b, name);
    a->has_type = 1;
    a->type = (Onnx__AttributeProto__AttributeType)type;
    mb_push(b, (void ***)&n->attribute, &n->n_attribute, a);
    return a;
}

static inline void
mb_attr_int(mb_t *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, 2);

    a->has_i = 1;
    a->i = v;
}

static inline void
mb_attr_float(mb_t *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, 1);

    a->has_f = 1;
    a->f = v;
}

static inline void
mb_attr_ints(mb_t *b, Onnx__NodeProto *n, const char *name, int count,
             const int64_t *v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, 7);

    a->n_ints = (size_t)count;
    a->ints = mb_alloc(b, (size_t)count * sizeof(int64_t));
    memcpy(a->ints, v, (size_t)count * sizeof(int64_t));
}

static inline void
mb_attr_string(mb_t *b, Onnx__NodeProto *n, const char *name, const char *s)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, 3);

    a->has_s = 1;
    a->s.len = strlen(s);
    a->s.data = (uint8_t *)mb_str(b, s);
}

static inline void
mb_attr_tensor(mb_t *b, Onnx__NodeProto *n, const char *name,
               Onnx__TensorProto *t)
{
    mb_attr(b, n, name, 4)->t = t;
}

/* A Constant node "name" producing output from a tensor. */
static inline void
mb_const(mb_t *b, const char *out, ss_dtype_t dt, int ndim,
         const int64_t *dims, const void *data, size_t bytes)
{
    Onnx__NodeProto *n = mb_node(b, "Constant", out, "", out);

    mb_attr_tensor(b, n, "value", mb_tensor(b, out, dt, ndim, dims, data,
                                            bytes));
}

/* Serialized model; free() it. */
static inline uint8_t *
mb_pack(mb_t *b, size_t *len)
{
    size_t n = onnx__model_proto__get_packed_size(&b->m);
    uint8_t *buf = malloc(n ? n : 1);

    if (buf == NULL)
        abort();
    *len = onnx__model_proto__pack(&b->m, buf);
    return buf;
}

/* Writes the model to path; 0 or -1. */
static inline int
mb_write(mb_t *b, const char *path)
{
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    FILE *f = fopen(path, "wb");
    int rc = -1;

    if (f != NULL && fwrite(buf, 1, len, f) == len)
        rc = 0;
    if (f != NULL && fclose(f) != 0)
        rc = -1;
    free(buf);
    return rc;
}

/* Subgraphs (If branches, Loop and Scan bodies): mb_graph_begin saves
 * the graph being built and starts an empty one, which mb_input,
 * mb_node, mb_init... then fill; mb_graph_end attaches it to node n as
 * graph attribute `name` and goes back to the saved graph.  Saved
 * graphs nest up to MB_DEPTH.  */
#define MB_DEPTH 4

static inline void
mb_graph_begin(mb_t *b, const char *gname)
{
    if (b->depth >= MB_DEPTH)
        abort();
    b->saved[b->depth++] = b->g;
    onnx__graph_proto__init(&b->g);
    b->g.name = mb_str(b, gname);
}

static inline void
mb_graph_end(mb_t *b, Onnx__NodeProto *n, const char *name)
{
    Onnx__GraphProto *sub = mb_alloc(b, sizeof(*sub));
    Onnx__AttributeProto *a;

    if (b->depth == 0)
        abort();
    *sub = b->g;
    b->g = b->saved[--b->depth];
    a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    a->g = sub;
}

static inline void mb_free(mb_t *b);

/* Loads the model into *g (ss_graph_load_onnx_buffer's contract) and
 * frees the builder either way. */
static inline int
mb_load(mb_t *b, ss_graph_t **g, ss_err_t *err)
{
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    int rc = ss_graph_load_onnx_buffer(buf, len, g, err);

    free(buf);
    mb_free(b);
    return rc;
}

static inline void
mb_free(mb_t *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n_ptrs; i++)
        free(b->ptrs[i]);
    free(b->ptrs);
    free(b);
}

#endif
