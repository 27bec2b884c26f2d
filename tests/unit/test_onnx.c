/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ONNX import: values, constants, typed and external data, and every way a
 * hostile or broken file must fail cleanly (checked under ASan in CI).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "engine/ir/edit.h"
#include "engine/ir/ir.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"

static int
load_mb(mb_t *b, ss_graph_t **g, ss_err_t *err)
{
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    int rc = ss_graph_load_onnx_buffer(buf, len, g, err);

    free(buf);
    return rc;
}

static int
find_value(const ss_graph_t *g, const char *name)
{
    for (int i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return i;
    return -1;
}

/* A model with everything the importer handles without kernels. */
static mb_t *
basic_model(void)
{
    mb_t *b = mb_new(17);
    const float w[6] = { 1, 2, 3, 4, 5, 6 };
    const int64_t k = 42;
    Onnx__NodeProto *n;

    mb_input(b, "x", SS_DTYPE_F32, 2, (int64_t[]){ -1, 3 });
    mb_input(b, "w", SS_DTYPE_F32, 2, (int64_t[]){ 2, 3 });
    mb_init_f32(b, "w", 2, (int64_t[]){ 2, 3 }, w);
    mb_const(b, "k", SS_DTYPE_I64, 0, NULL, &k, 8);
    n = mb_node(b, "Constant", "cf", "", "cf");
    {
        Onnx__AttributeProto *a = mb_attr(b, n, "value_floats", 6);

        a->n_floats = 2;
        a->floats = mb_alloc(b, 2 * sizeof(float));
        a->floats[0] = 0.5f;
        a->floats[1] = -1.5f;
    }
    /* out of order on purpose: y2 reads y before its node */
    mb_node(b, "Identity", "id2", "y", "y2");
    mb_node(b, "Identity", "id1", "x", "y");
    mb_output(b, "y2", SS_DTYPE_F32, 2, (int64_t[]){ -1, 3 });
    return b;
}

static void
test_basic(void)
{
    mb_t *b = basic_model();
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int rc = load_mb(b, &g, &err);

    is_int(rc, 0, "basic model loads (%s)", err.msg);
    if (rc == 0) {
        const ss_io_info_t *in = ss_graph_input(g, 0);
        int w = find_value(g, "w"), k = find_value(g, "k");
        int cf = find_value(g, "cf");

        is_int(ss_graph_num_inputs(g), 1, "initializer input is not an input");
        is_str(in->name, "x", "input name");
        is_int(in->dtype, SS_DTYPE_F32, "input dtype");
        is_int(in->ndim, 2, "input rank");
        is_int(in->dims[0], -1, "symbolic dim is -1");
        is_int(in->dims[1], 3, "fixed dim");
        is_int(ss_graph_num_outputs(g), 1, "one output");
        is_str(ss_graph_output(g, 0)->name, "y2", "output name");
        ok(ss_graph_input(g, 1) == NULL, "input index out of range is NULL");
        is_int(g->n_nodes, 2, "Constant nodes are gone");
        is_str(g->nodes[0].name, "id1", "nodes sorted topologically");
        ok(w >= 0 && g->values[w].constant != NULL
           && ((float *)g->values[w].constant->data)[5] == 6.0f,
           "raw_data initializer");
        ok(k >= 0 && g->values[k].constant != NULL
           && g->values[k].constant->ndim == 0
           && *(int64_t *)g->values[k].constant->data == 42,
           "Constant value tensor");
        ok(cf >= 0 && g->values[cf].constant != NULL
           && g->values[cf].constant->dims[0] == 2
           && ((float *)g->values[cf].constant->data)[1] == -1.5f,
           "Constant value_floats");
        is_int(ss_graph_weight_bytes(g), 24 + 8 + 8, "weight bytes");
        is_int(g->values[find_value(g, "y")].producer, 0, "producer set");
        is_int(g->opset, 17, "opset");
    }
    ss_graph_free(g);
    mb_free(b);
}

static void
test_typed_fields(void)
{
    mb_t *b = mb_new(13);
    Onnx__TensorProto *t;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int rc;

    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    t = mb_init(b, "f", SS_DTYPE_F32, 1, (int64_t[]){ 2 }, NULL, 0);
    t->n_float_data = 2;
    t->float_data = mb_alloc(b, 8);
    t->float_data[0] = 3.25f;
    t->float_data[1] = -7.0f;
    t = mb_init(b, "i8", SS_DTYPE_I8, 1, (int64_t[]){ 3 }, NULL, 0);
    t->n_int32_data = 3;
    t->int32_data = mb_alloc(b, 12);
    t->int32_data[0] = -5;
    t->int32_data[1] = 127;
    t->int32_data[2] = -128;
    t = mb_init(b, "bo", SS_DTYPE_BOOL, 1, (int64_t[]){ 2 }, NULL, 0);
    t->n_int32_data = 2;
    t->int32_data = mb_alloc(b, 8);
    t->int32_data[1] = 1;
    t = mb_init(b, "i64", SS_DTYPE_I64, 2, (int64_t[]){ 1, 2 }, NULL, 0);
    t->n_int64_data = 2;
    t->int64_data = mb_alloc(b, 16);
    t->int64_data[0] = -((int64_t)1 << 40);
    t = mb_init(b, "d", SS_DTYPE_F64, 1, (int64_t[]){ 1 }, NULL, 0);
    t->n_double_data = 1;
    t->double_data = mb_alloc(b, 8);
    t->double_data[0] = 0.125;
    mb_init(b, "empty", SS_DTYPE_F32, 2, (int64_t[]){ 0, 5 }, NULL, 0);
    mb_node(b, "Identity", NULL, "x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 2 });
    rc = load_mb(b, &g, &err);
    is_int(rc, 0, "typed fields load (%s)", err.msg);
    if (rc == 0) {
        ss_tensor_t *c;

        c = g->values[find_value(g, "f")].constant;
        ok(((float *)c->data)[0] == 3.25f && ((float *)c->data)[1] == -7.0f,
           "float_data");
        c = g->values[find_value(g, "i8")].constant;
        ok(((int8_t *)c->data)[0] == -5 && ((int8_t *)c->data)[2] == -128,
           "int8 from int32_data");
        c = g->values[find_value(g, "bo")].constant;
        ok(((uint8_t *)c->data)[0] == 0 && ((uint8_t *)c->data)[1] == 1,
           "bool from int32_data");
        c = g->values[find_value(g, "i64")].constant;
        ok(((int64_t *)c->data)[0] == -((int64_t)1 << 40), "int64_data");
        c = g->values[find_value(g, "d")].constant;
        ok(((double *)c->data)[0] == 0.125, "double_data");
        c = g->values[find_value(g, "empty")].constant;
        ok(c != NULL && c->dims[0] == 0 && ss_tensor_numel(c) == 0,
           "empty tensor");
        is_str(g->nodes[0].name, "", "unnamed node has an empty name");
    }
    ss_graph_free(g);
    mb_free(b);
}

/* Loads b and expects failure with code and a message containing want. */
static void
expect_fail(mb_t *b, int code, const char *want, const char *what)
{
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int rc = load_mb(b, &g, &err);

    ok(rc == code && g == NULL && strstr(err.msg, want) != NULL,
       "%s fails", what);
    if (rc != code || strstr(err.msg, want) == NULL)
        tap_diag("rc %d (%s), message: %s", rc, ss_err_name(rc), err.msg);
    ss_graph_free(g);
    mb_free(b);
}

static mb_t *
id_model(int opset)
{
    mb_t *b = mb_new(opset);

    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_node(b, "Identity", "id", "x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    return b;
}

/* Opsets 7..17 load whole; below 7 a node loads only when opset 7 has
 * the same version of its op; training-mode Dropout is refused. */
static void
test_versions(void)
{
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    mb_t *b;
    float r = 0.5f;
    uint8_t t0 = 0;

    b = id_model(7);
    ok(load_mb(b, &g, &err) == 0 && g != NULL && g->opset == 7,
       "opset 7 loads (%s)", err.msg);
    ss_graph_free(g);
    g = NULL;
    mb_free(b);

    b = mb_new(6);          /* Relu 6 is Relu at opset 7 too */
    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_node(b, "Relu", "r", "x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    ok(load_mb(b, &g, &err) == 0 && g != NULL, "Relu at opset 6 loads (%s)",
       err.msg);
    ss_graph_free(g);
    g = NULL;
    mb_free(b);

    b = mb_new(6);          /* Add 6 has "broadcast"/"axis": not Add 7 */
    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_node(b, "Add", "plus", "x,x", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    expect_fail(b, SS_EUNSUPP, "node 'plus' (Add version 6, opset 6)",
                "Add version 6");

    b = mb_new(13);         /* training_mode as a run-time input */
    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_input(b, "t", SS_DTYPE_BOOL, 0, NULL);
    mb_init(b, "r", SS_DTYPE_F32, 0, NULL, &r, sizeof(r));
    mb_node(b, "Dropout", "drop", "x,r,t", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    expect_fail(b, SS_EUNSUPP, "node 'drop' (Dropout version 13, opset 13): "
                "training_mode is a run-time input", "Dropout training_mode "
                "input");

    b = mb_new(13);         /* a constant false training_mode is inference */
    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_init(b, "t", SS_DTYPE_BOOL, 0, NULL, &t0, sizeof(t0));
    mb_init(b, "r", SS_DTYPE_F32, 0, NULL, &r, sizeof(r));
    mb_node(b, "Dropout", "drop", "x,r,t", "y");
    mb_output(b, "y", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    ok(load_mb(b, &g, &err) == 0 && g != NULL,
       "Dropout with training_mode false loads (%s)", err.msg);
    ss_graph_free(g);
    mb_free(b);
}

/* ss_graph_bind_input: the input becomes a constant and leaves the
 * graph's inputs; a wrong name or type is refused. */
static void
test_bind(void)
{
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int64_t shape[2] = { 2, 2 };
    ss_tensor_t v = { .dtype = SS_DTYPE_I64, .ndim = 1, .dims = { 2 },
                      .data = shape };
    ss_tensor_t bad = v;
    mb_t *b = mb_new(13);
    int id;

    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    mb_input(b, "s", SS_DTYPE_I64, 1, (int64_t[]){ 2 });
    mb_node(b, "Reshape", "r", "x,s", "y");
    mb_output(b, "y", SS_DTYPE_F32, 2, (int64_t[]){ 2, 2 });
    ok(load_mb(b, &g, &err) == 0 && ss_graph_num_inputs(g) == 2,
       "Reshape with a shape input loads (%s)", err.msg);
    ok(g != NULL && ss_graph_bind_input(g, "nope", &v, &err) == SS_EINVAL
       && strstr(err.msg, "no input 'nope'") != NULL, "unknown name: %s",
       err.msg);
    bad.dtype = SS_DTYPE_I32;
    ok(g != NULL && ss_graph_bind_input(g, "s", &bad, &err) == SS_EINVAL,
       "wrong dtype refused: %s", err.msg);
    ok(g != NULL && ss_graph_bind_input(g, "s", &v, &err) == 0
       && ss_graph_num_inputs(g) == 1
       && strcmp(ss_graph_input(g, 0)->name, "x") == 0,
       "bound: one input left (%s)", err.msg);
    id = g != NULL ? ss_graph_find_value(g, "s") : -1;
    ok(id >= 0 && g->values[id].constant != NULL
       && ((int64_t *)g->values[id].constant->data)[1] == 2
       && g->values[id].constant->data != (void *)shape,
       "s is a constant holding a copy");
    ss_graph_free(g);
    mb_free(b);
}

static void
test_hostile(void)
{
    mb_t *b;
    Onnx__TensorProto *t;
    float f4[4] = { 0 };

    expect_fail(id_model(0), SS_EUNSUPP, "opset 0", "opset 0");
    expect_fail(id_model(18), SS_EUNSUPP, "opset 18", "opset 18");
    b = id_model(17);
    b->opset.domain = mb_str(b, "com.microsoft");
    expect_fail(b, SS_EBADMODEL, "default ONNX opset", "no default opset");

    b = id_model(17);
    mb_node(b, "FooOp", "first", "x", "a");
    mb_node(b, "Relu6", "second", "a", "c");
    {
        Onnx__NodeProto *n = mb_node(b, "Gelu", "third", "c", "d");

        n->domain = mb_str(b, "com.microsoft");
    }
    expect_fail(b, SS_EUNSUPP, "FooOp (node 'first'), Relu6 (node 'second'), "
                "com.microsoft::Gelu (node 'third')",
                "every unsupported op in one message");

    b = id_model(17);
    mb_init_f32(b, "big", 9, (int64_t[]){ 1, 1, 1, 1, 1, 1, 1, 1, 1 }, f4);
    expect_fail(b, SS_EBADMODEL, "9 dims", "rank 9");

    b = id_model(17);
    mb_init(b, "neg", SS_DTYPE_F32, 1, (int64_t[]){ -4 }, f4, 16);
    expect_fail(b, SS_EBADMODEL, "negative dim", "negative dim");

    b = id_model(17);
    t = mb_init(b, "huge", SS_DTYPE_F32, 3,
                (int64_t[]){ (int64_t)1 << 30, (int64_t)1 << 30, 1 << 20 },
                f4, 16);
    expect_fail(b, SS_EBADMODEL, "too large", "overflowing element count");

    b = id_model(17);
    mb_init(b, "lie", SS_DTYPE_F32, 2, (int64_t[]){ 1 << 20, 1 << 10 }, f4,
            16);
    expect_fail(b, SS_EBADMODEL, "raw_data holds 16 bytes",
                "raw_data shorter than the shape");

    b = id_model(17);
    t = mb_init(b, "few", SS_DTYPE_F32, 1, (int64_t[]){ 3 }, NULL, 0);
    t->n_float_data = 2;
    t->float_data = mb_alloc(b, 8);
    expect_fail(b, SS_EBADMODEL, "holds 2 elements", "float_data too short");

    b = id_model(17);
    mb_init(b, "nodata", SS_DTYPE_F32, 1, (int64_t[]){ 3 }, NULL, 0);
    expect_fail(b, SS_EBADMODEL, "holds 0 elements", "tensor without data");

    b = id_model(17);
    mb_init(b, "s", SS_DTYPE_STRING, 1, (int64_t[]){ 1 }, NULL, 0);
    expect_fail(b, SS_EUNSUPP, "element type 8", "string tensor");

    b = id_model(17);
    mb_node(b, "Identity", "dup", "x", "y");
    expect_fail(b, SS_EBADMODEL, "'y' is defined twice", "duplicate output");

    b = id_model(17);
    mb_init_f32(b, "x", 1, (int64_t[]){ 4 }, f4);
    mb_init_f32(b, "x", 1, (int64_t[]){ 4 }, f4);
    expect_fail(b, SS_EBADMODEL, "defined twice", "duplicate initializer");

    b = id_model(17);
    mb_node(b, "Identity", "dangle", "nowhere", "z");
    expect_fail(b, SS_EBADMODEL, "reads 'nowhere'", "dangling input");

    b = id_model(17);
    mb_output(b, "ghost", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    expect_fail(b, SS_EBADMODEL, "'ghost'", "dangling output");

    b = id_model(17);
    mb_node(b, "Identity", "c1", "q", "p");
    mb_node(b, "Identity", "c2", "p", "q");
    expect_fail(b, SS_EBADMODEL, "cycle", "cycle");

    b = id_model(17);
    b->m.graph = NULL;
    expect_fail(b, SS_EBADMODEL, "no graph", "no graph");

    b = mb_new(17);
    mb_input(b, "x", SS_DTYPE_F32, 1, (int64_t[]){ 4 });
    expect_fail(b, SS_EBADMODEL, "no outputs", "no outputs");

    b = id_model(17);
    {
        Onnx__NodeProto *n = mb_node(b, "Identity", "sub", "x", "z");
        Onnx__AttributeProto *a = mb_attr(b, n, "body", 5);

        (void)a;
    }
    /* subgraphs are read (If, Loop): one that is missing is an error */
    expect_fail(b, SS_EBADMODEL, "has no graph", "graph attribute without "
                "a graph");

    b = id_model(17);
    {
        Onnx__NodeProto *n = mb_node(b, "Identity", "sub", "x", "z");

        (void)mb_attr(b, n, "bodies", 10);
    }
    expect_fail(b, SS_EUNSUPP, "type 10", "graphs attribute");

    b = id_model(17);
    {
        Onnx__NodeProto *n = mb_node(b, "Constant", "cs", "", "cs");

        mb_attr_string(b, n, "value_string", "hi");
    }
    expect_fail(b, SS_EUNSUPP, "Constant (node 'cs')", "string Constant");

    b = id_model(17);
    t = mb_init_f32(b, "seg", 1, (int64_t[]){ 4 }, f4);
    t->segment = mb_alloc(b, sizeof(*t->segment));
    onnx__tensor_proto__segment__init(t->segment);
    expect_fail(b, SS_EUNSUPP, "segmented", "segmented tensor");

    b = id_model(17);
    t = mb_init_f32(b, "ext", 1, (int64_t[]){ 4 }, NULL);
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    expect_fail(b, SS_EBADMODEL, "from memory", "external data from memory");
}

/* NULL when g keeps the invariants ir.h promises for a loaded graph: ids
 * in range, nodes in topological order, every value produced by the node
 * it names or else an input or a constant; else what is broken. */
static const char *
graph_broken(const ss_graph_t *g)
{
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] < 0 || g->inputs[i] >= g->n_values)
            return "graph input id out of range";
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] < 0 || g->outputs[i] >= g->n_values)
            return "graph output id out of range";
    for (int v = 0; v < g->n_values; v++) {
        const ss_value_t *val = &g->values[v];
        int p = val->producer, found = 0;

        if (val->name == NULL)
            return "a value without a name";
        if (val->constant != NULL && val->constant->data == NULL)
            return "a constant without data";
        if (p < -1 || p >= g->n_nodes)
            return "producer out of range";
        for (int k = 0; p >= 0 && k < g->nodes[p].n_outputs; k++)
            found |= g->nodes[p].outputs[k] == v;
        if (p >= 0 && !found)
            return "a value's producer does not write it";
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ss_node_t *n = &g->nodes[i];

        if (n->op_type == NULL || n->n_outputs < 1 || n->outputs[0] < 0)
            return "a node without op type or first output";
        for (int k = 0; k < n->n_outputs; k++)
            if (n->outputs[k] >= g->n_values || n->outputs[k] < -1)
                return "node output id out of range";
        for (int k = 0; k < n->n_inputs; k++) {
            int v = n->inputs[k], is_input = 0;

            if (v < -1 || v >= g->n_values)
                return "node input id out of range";
            if (v < 0)
                continue;
            for (int j = 0; j < g->n_inputs; j++)
                is_input |= g->inputs[j] == v;
            if (g->values[v].producer >= i)
                return "nodes not in topological order";
            if (g->values[v].producer < 0 && g->values[v].constant == NULL
                && !is_input)
                return "a node reads a value nothing defines";
        }
    }
    return NULL;
}

/* NULL when a failed load left nothing behind, said why, and returned one
 * of the codes a bad file may cause. */
static const char *
load_failure_broken(int rc, const ss_graph_t *g, const ss_err_t *err)
{
    if (g != NULL)
        return "a failed load left a graph";
    if (err->msg[0] == '\0')
        return "a failed load without a message";
    if (rc != SS_EBADMODEL && rc != SS_EUNSUPP && rc != SS_ETOOBIG)
        return "a failed load with a code a bad file should not cause";
    return NULL;
}

static void
test_truncated_and_corrupt(void)
{
    mb_t *b = basic_model();
    size_t len, fails = 0, ok_loads = 0, bad = 0;
    uint8_t *buf = mb_pack(b, &len), *copy = malloc(len);
    uint32_t seed = 12345;

    for (size_t n = 0; n < len; n++) {
        ss_graph_t *g = NULL;
        ss_err_t err = { 0 };

        memcpy(copy, buf, n);
        if (ss_graph_load_onnx_buffer(copy, n, &g, &err) < 0 && g == NULL
            && err.msg[0] != '\0')
            fails++;
        ss_graph_free(g);
    }
    is_int(fails, len, "every one of %zu truncations fails with a message",
           len);
    for (int round = 0; round < 3000; round++) {
        ss_graph_t *g = NULL;
        ss_err_t err = { 0 };
        const char *why;
        int rc;

        memcpy(copy, buf, len);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            copy[(seed >> 8) % len] ^= (uint8_t)(1u << ((seed >> 4) % 8));
        }
        rc = ss_graph_load_onnx_buffer(copy, len, &g, &err);
        if (rc == 0) {
            ok_loads++;
            why = g == NULL ? "success without a graph" : graph_broken(g);
        } else {
            why = load_failure_broken(rc, g, &err);
        }
        if (why != NULL && bad++ < 5)
            tap_diag("corrupted copy %d: rc %d (%s): %s", round, rc,
                     ss_err_name(rc), why);
        ss_graph_free(g);
    }
    is_int(bad, 0, "3000 corrupted copies: each loads a consistent graph "
           "or fails with a message and a load error code");
    /* Bit flips in weights load, flips in structure do not: both paths
     * run, so the check above covers both. */
    ok(ok_loads > 0 && ok_loads < 3000,
       "corrupted copies both load (%zu) and fail (%zu)", ok_loads,
       3000 - ok_loads);
    free(copy);
    free(buf);
    mb_free(b);
}

static void
test_alloc_failures(void)
{
    mb_t *b = basic_model();
    size_t len;
    uint8_t *buf = mb_pack(b, &len);
    int n, bad = 0;

    for (n = 1; n < 1000; n++) {
        ss_graph_t *g = NULL;
        ss_err_t err = { 0 };
        int rc;

        ss_alloc_fail_after(n);
        rc = ss_graph_load_onnx_buffer(buf, len, &g, &err);
        ss_alloc_fail_after(0);
        if (rc == 0) {
            ss_graph_free(g);
            break;
        }
        if (g != NULL || err.msg[0] == '\0')
            bad++;
        ss_graph_free(g);
    }
    ok(n > 5 && n < 1000 && bad == 0,
       "allocation failure %d times over, each a clean error", n - 1);
    free(buf);
    mb_free(b);
}

static int
write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int rc = -1;

    if (f != NULL && fwrite(data, 1, len, f) == len)
        rc = 0;
    if (f != NULL && fclose(f) != 0)
        rc = -1;
    return rc;
}

static mb_t *
ext_model(const char *loc, const char *offset, const char *length)
{
    mb_t *b = id_model(17);
    Onnx__TensorProto *t = mb_init_f32(b, "w", 1, (int64_t[]){ 3 }, NULL);
    const char *kv[3][2] = { { "location", loc }, { "offset", offset },
                             { "length", length } };

    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    for (int i = 0; i < 3; i++) {
        Onnx__StringStringEntryProto *e;

        if (kv[i][1] == NULL)
            continue;
        e = mb_alloc(b, sizeof(*e));
        onnx__string_string_entry_proto__init(e);
        e->key = mb_str(b, kv[i][0]);
        e->value = mb_str(b, kv[i][1]);
        mb_push(b, (void ***)&t->external_data, &t->n_external_data, e);
    }
    return b;
}

static int
load_ext(const char *dir, mb_t *b, ss_graph_t **g, ss_err_t *err)
{
    char path[512];
    int rc;

    snprintf(path, sizeof(path), "%s/m/model.onnx", dir);
    rc = mb_write(b, path) < 0 ? -1
         : ss_graph_load_onnx(path, g, err);
    mb_free(b);
    return rc;
}

static void
test_external(void)
{
    char dir[] = "/tmp/ss_test_onnx_XXXXXX", p[512], q[512];
    const float data[5] = { 9, 1.5f, -2, 4, 8 };
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    int rc;

    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return;
    }
    snprintf(p, sizeof(p), "%s/m", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/m/sub", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/m/sub/w.bin", dir);
    write_file(p, data, sizeof(data));
    snprintf(p, sizeof(p), "%s/outside.bin", dir);
    write_file(p, data, sizeof(data));
    snprintf(q, sizeof(q), "%s/m/link.bin", dir);
    rc = symlink(p, q);

    rc = load_ext(dir, ext_model("sub/w.bin", "4", "12"), &g, &err);
    is_int(rc, 0, "external data loads (%s)", err.msg);
    if (rc == 0) {
        float *w = g->values[find_value(g, "w")].constant->data;

        ok(w[0] == 1.5f && w[1] == -2 && w[2] == 4, "external data at offset");
    }
    ss_graph_free(g);
    g = NULL;

    rc = load_ext(dir, ext_model("sub/w.bin", NULL, NULL), &g, &err);
    ok(rc == 0 && ((float *)g->values[find_value(g, "w")].constant->data)[2]
       == -2, "external data without offset/length");
    ss_graph_free(g);
    g = NULL;

    rc = load_ext(dir, ext_model("../outside.bin", NULL, NULL), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "relative path"), "'..' refused");
    rc = load_ext(dir, ext_model(p, NULL, NULL), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "relative path"),
       "absolute path refused");
    rc = load_ext(dir, ext_model("link.bin", NULL, NULL), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "outside"),
       "symlink out of the directory refused");
    rc = load_ext(dir, ext_model("sub/w.bin", "12", NULL), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "holding 12 bytes"),
       "offset past the end refused");
    rc = load_ext(dir, ext_model("sub/w.bin", "0", "8"), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "length 8"),
       "length that disagrees with the shape refused");
    rc = load_ext(dir, ext_model("sub/w.bin", "-4", NULL), &g, &err);
    ok(rc == SS_EBADMODEL, "negative offset refused");
    rc = load_ext(dir, ext_model("missing.bin", NULL, NULL), &g, &err);
    ok(rc == SS_EBADMODEL && strstr(err.msg, "missing.bin"),
       "missing file refused (%s)", err.msg);
    ok(g == NULL, "nothing loaded on failure");

    rc = ss_graph_load_onnx("/nonexistent/model.onnx", &g, &err);
    is_int(rc, SS_ENOTFOUND, "missing model file");

    snprintf(p, sizeof(p), "%s/m/model.onnx", dir);
    unlink(p);
    unlink(q);
    snprintf(p, sizeof(p), "%s/m/sub/w.bin", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/m/sub", dir);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/m", dir);
    rmdir(p);
    snprintf(p, sizeof(p), "%s/outside.bin", dir);
    unlink(p);
    rmdir(dir);
}

static void
test_dtypes(void)
{
    ss_tensor_t t = { .dtype = SS_DTYPE_F32, .ndim = 2, .dims = { 3, 4 } };

    is_int(ss_dtype_size(SS_DTYPE_F32), 4, "f32 size");
    is_int(ss_dtype_size(SS_DTYPE_I64), 8, "i64 size");
    is_int(ss_dtype_size(SS_DTYPE_STRING), 0, "string has no size");
    is_str(ss_dtype_kserve_name(SS_DTYPE_F32), "FP32", "kserve FP32");
    is_int(ss_dtype_from_kserve("INT64"), SS_DTYPE_I64, "kserve INT64");
    is_int(ss_dtype_from_kserve("NOPE"), SS_DTYPE_UNDEFINED, "kserve unknown");
    is_int(ss_tensor_numel(&t), 12, "numel");
    t.dims[0] = -1;
    is_int(ss_tensor_numel(&t), -1, "numel of a negative dim");
    t.dims[0] = INT64_MAX / 2;
    is_int(ss_tensor_numel(&t), -1, "numel overflow");
}

int
main(void)
{
    test_dtypes();
    test_basic();
    test_typed_fields();
    test_hostile();
    test_versions();
    test_bind();
    test_truncated_and_corrupt();
    test_alloc_failures();
    test_external();
    return tap_done();
}
