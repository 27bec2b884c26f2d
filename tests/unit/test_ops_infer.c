/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shape inference refuses what it must: wrong ranks, shapes that do not
 * broadcast, missing constant shape inputs, bad attributes, and hostile
 * values (huge, negative, overflowing dims) -- each with SS_EINVAL (or
 * SS_EUNSUPP for valid but unsupported) and a message naming the node.
 * Then integer edge cases that must not hit undefined behaviour, and a
 * bounded random sweep of every op with garbage shapes and attributes,
 * which must never crash (run it under ASan/UBSan).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/ir/ir.h"
#include "tests/tap.h"

typedef struct {
    ss_node_t n;
    int ins[8], outs[4];
    ss_attr_t attrs[8];
} tnode_t;

static void
node(tnode_t *t, const char *name, const char *op, int nin, int nout)
{
    memset(t, 0, sizeof(*t));
    t->n.name = (char *)name;
    t->n.op_type = (char *)op;
    t->n.n_inputs = nin;
    t->n.inputs = t->ins;
    t->n.n_outputs = nout;
    t->n.outputs = t->outs;
    t->n.attrs = t->attrs;
    for (int i = 0; i < nin; i++)
        t->ins[i] = i;
    for (int k = 0; k < nout; k++)
        t->outs[k] = 10 + k;
}

static ss_attr_t *
attr(tnode_t *t, const char *name, ss_attr_type_t type)
{
    ss_attr_t *a = &t->attrs[t->n.n_attrs++];

    memset(a, 0, sizeof(*a));
    a->name = (char *)name;
    a->type = type;
    return a;
}

static void
attr_i(tnode_t *t, const char *name, int64_t v)
{
    attr(t, name, SS_ATTR_INT)->i = v;
}

static void
attr_is(tnode_t *t, const char *name, int cnt, int64_t *v)
{
    ss_attr_t *a = attr(t, name, SS_ATTR_INTS);

    a->n = cnt;
    a->ints = v;
}

static ss_tensor_t
T(ss_dtype_t dt, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
  void *data)
{
    ss_tensor_t t = { dt, ndim, { d0, d1, d2, d3 }, data };

    return t;
}

static int
infer(tnode_t *t, int opset, ss_tensor_t *in, ss_tensor_t *out,
      ss_err_t *err)
{
    const ss_tensor_t *p[8];
    const ss_op_t *op = ss__op_find(t->n.op_type);

    for (int i = 0; i < t->n.n_inputs; i++)
        p[i] = t->ins[i] >= 0 ? &in[i] : NULL;
    ss_err_clear(err);
    return op ? op->infer(&t->n, opset, p, out, err) : -1;
}

static int
run(tnode_t *t, int opset, ss_tensor_t *in, ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *p[8];
    const ss_op_t *op = ss__op_find(t->n.op_type);

    for (int i = 0; i < t->n.n_inputs; i++)
        p[i] = t->ins[i] >= 0 ? &in[i] : NULL;
    ss_err_clear(err);
    return op->run(&t->n, opset, p, out, err);
}

/* Infer must fail with code and a message that names the node and
 * contains want. */
#define FAILS(t, opset, in, code, want, desc)                               \
    do {                                                                   \
        ss_tensor_t o_[4] = { { 0 } };                                     \
        ss_err_t e_;                                                       \
        int rc_ = infer(t, opset, in, o_, &e_);                            \
        if (!ok(rc_ == (code) && strstr(e_.msg, want) != NULL &&            \
                strstr(e_.msg, (t)->n.name) != NULL, "%s", desc))            \
            tap_diag("rc %d (%s), msg \"%s\"", rc_, ss_err_name(rc_),      \
                     e_.msg);                                              \
    } while (0)

static void
test_messages(void)
{
    tnode_t t;
    ss_tensor_t in[5];
    int64_t big = (int64_t)1 << 40;

    node(&t, "Conv_3", "Conv", 2, 1);
    in[0] = T(SS_DTYPE_F32, 4, 1, 8, 5, 5, NULL);
    in[1] = T(SS_DTYPE_F32, 4, 4, 3, 3, 3, NULL);
    FAILS(&t, 17, in, SS_EINVAL,
          "node 'Conv_3' (Conv): input channels 8 do not match weight's 3 x "
          "group 1", "Conv: channel mismatch names node, op and numbers");
    in[0] = T(SS_DTYPE_F32, 3, 1, 3, 5, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "W has rank 4", "Conv: rank mismatch");
    in[0] = T(SS_DTYPE_F32, 4, 1, 3, 2, 2, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "larger than the padded input",
          "Conv: kernel larger than the input");
    {
        int64_t st[2] = { 0, 1 }, pads[4] = { big * 4, 0, 0, 0 };

        in[0] = T(SS_DTYPE_F32, 4, 1, 3, 5, 5, NULL);
        attr_is(&t, "strides", 2, st);
        FAILS(&t, 17, in, SS_EINVAL, "strides[0] = 0", "Conv: stride 0");
        node(&t, "c", "Conv", 2, 1);
        attr_is(&t, "pads", 4, pads);
        FAILS(&t, 17, in, SS_EINVAL, "pads[0]", "Conv: huge pads");
        node(&t, "c", "Conv", 2, 1);
        attr_i(&t, "group", 0);
        FAILS(&t, 17, in, SS_EINVAL, "group 0", "Conv: group 0");
        node(&t, "c", "Conv", 2, 1);
        attr(&t, "auto_pad", SS_ATTR_STRING)->s = (char *)"BOGUS";
        FAILS(&t, 17, in, SS_EINVAL, "auto_pad 'BOGUS'", "Conv: bad auto_pad");
    }
    node(&t, "add1", "Add", 2, 1);
    in[0] = T(SS_DTYPE_F32, 2, 2, 3, 0, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 1, 4, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "[2,3] and [4] do not broadcast",
          "Add: shapes that do not broadcast");
    in[1] = T(SS_DTYPE_I64, 1, 3, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "input types differ", "Add: mixed types");
    node(&t, "add1", "Add", 1, 1);
    FAILS(&t, 17, in, SS_EINVAL, "needs 2 inputs", "Add: one input");

    node(&t, "mm", "MatMul", 2, 1);
    in[0] = T(SS_DTYPE_F32, 2, 3, 4, 0, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 2, 5, 6, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "inner dimensions differ: 4 vs 5",
          "MatMul: inner mismatch");
    in[0] = T(SS_DTYPE_F32, 3, 2, 3, 4, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 3, 3, 4, 5, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "batch axis 0 does not broadcast",
          "MatMul: batch mismatch");
    node(&t, "g", "Gemm", 2, 1);
    in[0] = T(SS_DTYPE_F32, 3, 2, 3, 4, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 2, 4, 5, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "must be 2-D", "Gemm: rank-3 A");
    node(&t, "g", "Gemm", 3, 1);
    in[0] = T(SS_DTYPE_F32, 2, 3, 4, 0, 0, NULL);
    in[2] = T(SS_DTYPE_F32, 1, 4, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "does not broadcast to [3, 5]",
          "Gemm: C that does not broadcast");
    node(&t, "g", "Gemm", 1, 1);
    FAILS(&t, 17, in, SS_EINVAL, "needs 2 inputs", "Gemm: missing B");
}

static void
test_shape_inputs(void)
{
    tnode_t t;
    ss_tensor_t in[5], out[4];
    ss_err_t err;
    int64_t shp[3] = { -1, -1, 2 }, shp2[2] = { 5, -1 };
    int64_t huge[2] = { (int64_t)1 << 62, (int64_t)1 << 62 };
    int64_t neg[2] = { -2, 6 }, zero3[3] = { 0, 0, 0 };

    node(&t, "r", "Reshape", 2, 1);
    in[0] = T(SS_DTYPE_F32, 2, 3, 4, 0, 0, NULL);
    in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EUNSUPP, "must be a constant",
          "Reshape: shape not known at compile time");
    in[1] = T(SS_DTYPE_I64, 1, 3, 0, 0, 0, shp);
    FAILS(&t, 17, in, SS_EINVAL, "more than one -1", "Reshape: two -1");
    in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, shp2);
    FAILS(&t, 17, in, SS_EINVAL, "cannot infer the -1",
          "Reshape: -1 that does not divide");
    in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, huge);
    FAILS(&t, 17, in, SS_EINVAL, "invalid", "Reshape: 2^62 x 2^62");
    in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, neg);
    FAILS(&t, 17, in, SS_EINVAL, "shape[0] = -2 is invalid",
          "Reshape: -2");
    in[1] = T(SS_DTYPE_I64, 1, 3, 0, 0, 0, zero3);
    FAILS(&t, 17, in, SS_EINVAL, "copies an axis the input (rank 2) lacks",
          "Reshape: 0 past the input's rank");
    in[1] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, shp2);
    FAILS(&t, 17, in, SS_EINVAL, "must be int64 or int32",
          "Reshape: float shape");

    node(&t, "e", "Expand", 2, 1);
    {
        int64_t s[2] = { 4, 5 };

        in[0] = T(SS_DTYPE_F32, 2, 3, 1, 0, 0, NULL);
        in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, s);
        FAILS(&t, 17, in, SS_EINVAL, "do not broadcast",
              "Expand: shape that does not broadcast");
        in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, huge);
        FAILS(&t, 17, in, SS_EINVAL, "invalid", "Expand: huge shape");
    }
    node(&t, "u", "Unsqueeze", 2, 1);
    {
        int64_t ax[2] = { 0, 0 }, ax1[1] = { 0 };

        in[0] = T(SS_DTYPE_F32, 2, 3, 1, 0, 0, NULL);
        in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, ax);
        FAILS(&t, 13, in, SS_EINVAL, "axis 0 is repeated",
              "Unsqueeze: repeated axis");
        in[0] = T(SS_DTYPE_F32, 8, 1, 1, 1, 1, NULL);
        for (int d = 4; d < 8; d++)
            in[0].dims[d] = 1;
        in[1] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, ax1);
        FAILS(&t, 13, in, SS_EUNSUPP, "output rank 9",
              "Unsqueeze: rank 9");
    }
    node(&t, "s", "Squeeze", 2, 1);
    {
        int64_t ax[1] = { 0 };

        in[0] = T(SS_DTYPE_F32, 2, 3, 1, 0, 0, NULL);
        in[1] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, ax);
        FAILS(&t, 13, in, SS_EINVAL, "cannot squeeze axis 0 of size 3",
              "Squeeze: axis of size 3");
        ax[0] = 2;
        FAILS(&t, 13, in, SS_EINVAL, "axis 2 is out of range for rank 2",
              "Squeeze: axis out of range");
    }
    node(&t, "sl", "Slice", 5, 1);
    {
        int64_t st[1] = { 0 }, en[1] = { 2 }, ax[1] = { 0 }, sp[1] = { 0 };
        int64_t en2[2] = { 1, 2 };

        in[0] = T(SS_DTYPE_F32, 2, 3, 4, 0, 0, NULL);
        in[1] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, st);
        in[2] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, en);
        in[3] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, ax);
        in[4] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, sp);
        FAILS(&t, 13, in, SS_EINVAL, "step must not be 0", "Slice: step 0");
        in[2] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, en2);
        FAILS(&t, 13, in, SS_EINVAL, "differ in length",
              "Slice: ends longer than starts");
    }
    /* Slice with the extreme int64 values torch writes for "to the end". */
    node(&t, "sl", "Slice", 5, 1);
    {
        int64_t st[1] = { INT64_MAX }, en[1] = { INT64_MIN }, ax[1] = { -1 };
        int64_t sp[1] = { INT64_MIN };
        float x[4] = { 1, 2, 3, 4 }, y[4] = { 0 };
        int rc;

        in[0] = T(SS_DTYPE_F32, 1, 4, 0, 0, 0, x);
        in[1] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, st);
        in[2] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, en);
        in[3] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, ax);
        in[4] = T(SS_DTYPE_I64, 1, 1, 0, 0, 0, sp);
        memset(out, 0, sizeof(out));
        rc = infer(&t, 13, in, out, &err);
        ok(rc == 0 && out[0].ndim == 1 && out[0].dims[0] == 1,
           "Slice: INT64_MAX:INT64_MIN:INT64_MIN takes one element");
        out[0].data = y;
        rc = rc == 0 ? run(&t, 13, in, out, &err) : rc;
        ok(rc == 0 && y[0] == 4 && y[1] == 0, "Slice: and it is the last");
    }
}

static void
test_hostile_inputs(void)
{
    tnode_t t;
    ss_tensor_t in[5], out[4];
    ss_err_t err;
    int64_t big = (int64_t)1 << 40;
    int rc;

    node(&t, "x", "Relu", 1, 1);
    in[0] = T(SS_DTYPE_F32, 2, -1, 4, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "negative, unknown or too large",
          "Relu: negative dim");
    in[0] = T(SS_DTYPE_F32, 3, big, big, big, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "too large", "Relu: dims whose product "
          "overflows");
    in[0] = T(SS_DTYPE_F32, 9, 1, 1, 1, 1, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "rank 9", "Relu: rank 9");
    in[0] = T(SS_DTYPE_STRING, 1, 1, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EUNSUPP, "unsupported type string",
          "Relu: string input");
    in[0] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, NULL);
    t.n.op_type = (char *)"Sigmoid";
    FAILS(&t, 17, in, SS_EUNSUPP, "int64", "Sigmoid: int64 input");
    node(&t, "x", "Relu", 1, 1);
    t.ins[0] = -1;
    FAILS(&t, 17, in, SS_EINVAL, "input 0 is missing", "Relu: no input");

    node(&t, "t", "Transpose", 1, 1);
    {
        int64_t perm[3] = { 0, 0, 1 };

        attr_is(&t, "perm", 3, perm);
        in[0] = T(SS_DTYPE_F32, 3, 2, 3, 4, 0, NULL);
        FAILS(&t, 17, in, SS_EINVAL, "not a permutation",
              "Transpose: repeated axis in perm");
        perm[1] = 7;
        FAILS(&t, 17, in, SS_EINVAL, "not a permutation",
              "Transpose: perm out of range");
    }
    node(&t, "c", "Concat", 2, 1);
    in[0] = T(SS_DTYPE_F32, 2, 2, 3, 0, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 2, 3, 3, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "axis is required", "Concat: no axis");
    attr_i(&t, "axis", 1);
    FAILS(&t, 17, in, SS_EINVAL, "input 1 axis 0 is 3", "Concat: mismatch");
    node(&t, "sp", "Split", 2, 2);
    {
        int64_t s[2] = { 1, 1 };

        in[0] = T(SS_DTYPE_F32, 2, 3, 4, 0, 0, NULL);
        in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, s);
        FAILS(&t, 13, in, SS_EINVAL, "split sums to 2, axis has 3",
              "Split: sizes that do not sum");
        node(&t, "sp", "Split", 1, 2);
        FAILS(&t, 13, in, SS_EINVAL, "does not split evenly",
              "Split: uneven before opset 18");
    }
    node(&t, "ga", "Gather", 2, 1);
    {
        int64_t idx[2] = { 0, 3 };
        float x[6] = { 1, 2, 3, 4, 5, 6 }, y[4];

        in[0] = T(SS_DTYPE_F32, 2, 3, 2, 0, 0, x);
        in[1] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, idx);
        FAILS(&t, 13, in, SS_EINVAL, "index 3 is out of range",
              "Gather: constant index out of range");
        /* A data-dependent index is checked when the kernel runs. */
        in[1].data = NULL;
        memset(out, 0, sizeof(out));
        rc = infer(&t, 13, in, out, &err);
        in[1].data = idx;
        out[0].data = y;
        rc = rc == 0 ? run(&t, 13, in, out, &err) : rc;
        ok(rc == SS_EINVAL && strstr(err.msg, "out of range"),
           "Gather: run refuses an index out of range");
        in[1] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, NULL);
        FAILS(&t, 13, in, SS_EINVAL, "indices must be int64",
              "Gather: float indices");
    }
    node(&t, "w", "Where", 3, 1);
    in[0] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, NULL);
    in[2] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "condition must be bool",
          "Where: float condition");
    node(&t, "sm", "Softmax", 1, 1);
    attr_i(&t, "axis", 3);
    in[0] = T(SS_DTYPE_F32, 2, 2, 3, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "axis 3 is out of range for rank 2",
          "Softmax: axis out of range");
    node(&t, "mp", "MaxPool", 1, 1);
    in[0] = T(SS_DTYPE_F32, 4, 1, 1, 4, 4, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "kernel_shape is required",
          "MaxPool: no kernel_shape");
    node(&t, "ln", "LayerNormalization", 2, 1);
    in[0] = T(SS_DTYPE_F32, 2, 2, 8, 0, 0, NULL);
    in[1] = T(SS_DTYPE_F32, 1, 7, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EINVAL, "Scale axis 0 is 7, X has 8",
          "LayerNorm: scale of the wrong size");
    node(&t, "bn", "BatchNormalization", 5, 1);
    in[0] = T(SS_DTYPE_F32, 4, 1, 3, 2, 2, NULL);
    for (int i = 1; i < 5; i++)
        in[i] = T(SS_DTYPE_F32, 1, 3, 0, 0, 0, NULL);
    in[3].dims[0] = 4;
    FAILS(&t, 17, in, SS_EINVAL, "mean must be [3]",
          "BatchNorm: mean of the wrong size");
    node(&t, "rg", "Range", 3, 1);
    {
        float s = 0, l = 1e30f, d = 1, z = 0;

        in[0] = T(SS_DTYPE_F32, 0, 0, 0, 0, 0, &s);
        in[1] = T(SS_DTYPE_F32, 0, 0, 0, 0, 0, &l);
        in[2] = T(SS_DTYPE_F32, 0, 0, 0, 0, 0, &d);
        FAILS(&t, 17, in, SS_EINVAL, "too large", "Range: 1e30 elements");
        in[2].data = &z;
        FAILS(&t, 17, in, SS_EINVAL, "delta must be non-zero",
              "Range: delta 0");
    }
    node(&t, "cs", "ConstantOfShape", 1, 1);
    {
        int64_t s[2] = { 4, -3 }, h[3] = { big, big, 2 };

        in[0] = T(SS_DTYPE_I64, 1, 2, 0, 0, 0, s);
        FAILS(&t, 17, in, SS_EINVAL, "negative or too large",
              "ConstantOfShape: negative dim");
        in[0] = T(SS_DTYPE_I64, 1, 3, 0, 0, 0, h);
        FAILS(&t, 17, in, SS_EINVAL, "negative or too large",
              "ConstantOfShape: 2^81 elements");
    }
    node(&t, "ca", "Cast", 1, 1);
    attr_i(&t, "to", SS_DTYPE_STRING);
    in[0] = T(SS_DTYPE_F32, 1, 2, 0, 0, 0, NULL);
    FAILS(&t, 17, in, SS_EUNSUPP, "not supported", "Cast: to string");
    ok(ss__op_find("NoSuchOp") == NULL && ss__op_find(NULL) == NULL,
       "unknown op types have no kernel");
    node(&t, "x", "Conv", 2, 1);
    in[0] = T(SS_DTYPE_F32, 4, 1, 8, 5, 5, NULL);
    in[1] = T(SS_DTYPE_F32, 4, 4, 3, 3, 3, NULL);
    ok(infer(&t, 17, in, out, NULL) == SS_EINVAL, "a NULL err is fine");
}

/* Integer maths wraps and divides by zero without undefined behaviour
 * (UBSan would stop the test). */
static void
test_int_edges(void)
{
    tnode_t t;
    ss_tensor_t in[2], out[1];
    ss_err_t err;
    int64_t a[4] = { INT64_MIN, INT64_MAX, 7, -9 }, b[4] = { -1, 1, 0, 2 };
    int64_t y[4];
    float f[3] = { 3e38f, -3e38f, NAN };
    int rc;

    node(&t, "d", "Div", 2, 1);
    in[0] = T(SS_DTYPE_I64, 1, 4, 0, 0, 0, a);
    in[1] = T(SS_DTYPE_I64, 1, 4, 0, 0, 0, b);
    rc = infer(&t, 17, in, out, &err);
    out[0].data = y;
    rc = rc == 0 ? run(&t, 17, in, out, &err) : rc;
    ok(rc == 0 && y[0] == INT64_MIN && y[1] == INT64_MAX && y[2] == 0 &&
       y[3] == -4, "Div int64: MIN/-1 wraps, x/0 is 0, truncates");
    node(&t, "a", "Add", 2, 1);
    rc = infer(&t, 17, in, out, &err);
    out[0].data = y;
    rc = rc == 0 ? run(&t, 17, in, out, &err) : rc;
    ok(rc == 0 && y[0] == INT64_MAX && y[1] == INT64_MIN,
       "Add int64 wraps on overflow");
    node(&t, "c", "Cast", 1, 1);
    attr_i(&t, "to", SS_DTYPE_I64);
    in[0] = T(SS_DTYPE_F32, 1, 3, 0, 0, 0, f);
    rc = infer(&t, 17, in, out, &err);
    out[0].data = y;
    rc = rc == 0 ? run(&t, 17, in, out, &err) : rc;
    ok(rc == 0 && y[0] == INT64_MAX && y[1] == INT64_MIN && y[2] == 0,
       "Cast float->int64 saturates, NaN is 0");
}

/* ---- random sweep ------------------------------------------------------ */

static const char *const all_ops[] = {
    "Relu", "LeakyRelu", "Gelu", "Tanh", "Sigmoid", "Clip", "Sqrt", "Neg",
    "Exp", "Log", "Erf", "Abs", "Reciprocal", "Floor", "Ceil", "Not",
    "Softplus", "Elu", "HardSigmoid", "Add", "Sub", "Mul", "Div", "Pow",
    "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "And", "Or", "Xor", "Where", "Gemm", "MatMul", "Conv",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Softmax", "LogSoftmax", "LayerNormalization", "BatchNormalization",
    "Identity", "Dropout", "Shape", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Expand", "ConstantOfShape", "Constant", "Range", "Cast",
    "Transpose", "Slice", "Concat", "Split", "Gather", "ReduceSum",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
    "ReduceSumSquare", "Tile", "Size"
};
#define N_OPS (sizeof(all_ops) / sizeof(all_ops[0]))

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Mostly small values, sometimes hostile ones. */
static int64_t
rnd_val(void)
{
    switch (rnd() % 16) {
    case 0: return -(int64_t)(rnd() % 5);
    case 1: return (int64_t)1 << (rnd() % 63);
    case 2: return INT64_MIN + (int64_t)(rnd() % 2);
    case 3: return INT64_MAX;
    default: return (int64_t)(rnd() % 5);
    }
}

static const ss_dtype_t dtypes[] = {
    SS_DTYPE_F32, SS_DTYPE_F32, SS_DTYPE_F32, SS_DTYPE_I64, SS_DTYPE_I64,
    SS_DTYPE_BOOL, SS_DTYPE_I32, SS_DTYPE_F64, SS_DTYPE_U8, SS_DTYPE_STRING
};

static size_t
esz(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_F32: case SS_DTYPE_I32: case SS_DTYPE_U32: return 4;
    case SS_DTYPE_I64: case SS_DTYPE_F64: case SS_DTYPE_U64: return 8;
    case SS_DTYPE_I16: case SS_DTYPE_U16: case SS_DTYPE_F16:
    case SS_DTYPE_BF16: return 2;
    default: return 1;
    }
}

static int64_t
count(const ss_tensor_t *t, bool *bad)
{
    int64_t p = 1;

    if (t->ndim < 0 || t->ndim > SS_MAX_DIMS) {
        *bad = true;
        return 0;
    }
    for (int d = 0; d < t->ndim; d++) {
        if (t->dims[d] < 0 || t->dims[d] > 4096 ||
            __builtin_mul_overflow(p, t->dims[d], &p) || p > 4096) {
            *bad = true;
            return 0;
        }
    }
    return p;
}

static void
test_sweep(void)
{
    static const char *const anames[] = {
        "axis", "axes", "perm", "kernel_shape", "strides", "pads",
        "dilations", "group", "keepdims", "transA", "transB", "split",
        "start", "end", "to", "allowzero", "ceil_mode", "num_outputs",
        "noop_with_empty_axes", "count_include_pad"
    };
    int iters = 30000, ran = 0, inferred = 0;

    for (int it = 0; it < iters; it++) {
        tnode_t t;
        ss_tensor_t in[5], out[4];
        void *bufs[9] = { NULL };
        int64_t vals[8][8];
        const char *op = all_ops[rnd() % N_OPS];
        int nin = (int)(rnd() % 6), nout = 1 + (int)(rnd() % 3), nb = 0;
        int opset = 10 + (int)(rnd() % 9);
        bool bad = false;
        ss_err_t err;
        int rc;

        node(&t, "fuzz", op, nin, nout);
        for (int a = 0; a < (int)(rnd() % 4); a++) {
            const char *nm = anames[rnd() % (sizeof(anames) /
                                            sizeof(anames[0]))];

            if (rnd() % 2) {
                attr_i(&t, nm, rnd_val());
            } else {
                int cnt = (int)(rnd() % 6);

                for (int k = 0; k < cnt; k++)
                    vals[a][k] = rnd_val();
                attr_is(&t, nm, cnt, vals[a]);
            }
        }
        for (int i = 0; i < nin; i++) {
            ss_tensor_t *x = &in[i];
            int64_t cnt;

            memset(x, 0, sizeof(*x));
            x->dtype = dtypes[rnd() % (sizeof(dtypes) / sizeof(dtypes[0]))];
            x->ndim = (int)(rnd() % 6) - (rnd() % 50 == 0 ? 3 : 0);
            if (rnd() % 40 == 0)
                x->ndim = 9;
            for (int d = 0; d < x->ndim && d < SS_MAX_DIMS; d++)
                x->dims[d] = rnd() % 8 == 0 ? rnd_val()
                                            : (int64_t)(rnd() % 4);
            if (rnd() % 10 == 0)
                t.ins[i] = -1;
            cnt = count(x, &bad);
            if (!bad && x->dtype != SS_DTYPE_STRING) {
                unsigned char *p = ss_malloc((size_t)cnt * esz(x->dtype) + 1);

                if (p == NULL)
                    bad = true;
                else
                    for (size_t k = 0; k < (size_t)cnt * esz(x->dtype); k++)
                        p[k] = x->dtype == SS_DTYPE_I64 && k % 8 > 0 &&
                               rnd() % 4 ? (p[k - k % 8] & 0x80 ? 0xff : 0)
                                         : (unsigned char)rnd();
                x->data = p;
                bufs[nb++] = p;
            }
        }
        memset(out, 0, sizeof(out));
        rc = infer(&t, opset, in, out, &err);
        if (rc == 0) {
            inferred++;
            for (int k = 0; k < nout && !bad; k++) {
                int64_t cnt = count(&out[k], &bad);

                if (!bad) {
                    out[k].data = ss_malloc((size_t)cnt * esz(out[k].dtype) +
                                            1);
                    bufs[nb++] = out[k].data;
                    if (out[k].data == NULL)
                        bad = true;
                }
            }
            for (int i = 0; i < nin; i++)
                if (t.ins[i] >= 0 && in[i].data == NULL)
                    bad = true;
            if (!bad) {
                /* The output sizes are right or ASan says otherwise. */
                (void)run(&t, opset, in, out, &err);
                ran++;
            }
        } else if (strstr(err.msg, "fuzz") == NULL) {
            ok(0, "sweep: an error without the node name: %s", err.msg);
        }
        for (int k = 0; k < nb; k++)
            ss_free(bufs[k]);
    }
    ok(inferred > 500 && ran > 300, "sweep: %d random nodes, %d inferred, "
       "%d ran, none crashed", iters, inferred, ran);
    for (size_t i = 0; i < N_OPS; i++)
        if (ss__op_find(all_ops[i]) == NULL)
            ok(0, "%s has a kernel", all_ops[i]);
}


/* ---- random windows against naive loops ------------------------------ */

/* Random Conv, MaxPool and AveragePool geometries (strides, dilations,
 * asymmetric pads, groups, ceil_mode, auto_pad) against direct loops over
 * a zero-padded index test written here.  Outputs are allocated to the
 * inferred size exactly, so ASan catches any write past it.  Tolerance:
 * 1e-5 relative + 1e-5 absolute (sums of at most 4 * 3 * 3 products). */
static float
naive_at(const float *x, int64_t h, int64_t w, int64_t y, int64_t xx,
         bool *inside)
{
    *inside = y >= 0 && y < h && xx >= 0 && xx < w;
    return *inside ? x[y * w + xx] : 0.0f;
}

static void
test_random_windows(void)
{
    int bad = 0, done_n = 0;
    static const char *const pads_modes[] = { "NOTSET", "SAME_UPPER",
                                              "SAME_LOWER", "VALID" };

    for (int it = 0; it < 400; it++) {
        int kind = (int)(rnd() % 3);            /* conv, max, avg */
        int64_t g = kind == 0 ? 1 + (int64_t)(rnd() % 2) : 1;
        int64_t cg = 1 + (int64_t)(rnd() % 2), c = cg * g;
        int64_t m = kind == 0 ? g * (1 + (int64_t)(rnd() % 2)) : c;
        int64_t h = 1 + (int64_t)(rnd() % 7), w = 1 + (int64_t)(rnd() % 7);
        int64_t k[2] = { 1 + (int64_t)(rnd() % 3), 1 + (int64_t)(rnd() % 3) };
        int64_t st[2] = { 1 + (int64_t)(rnd() % 3), 1 + (int64_t)(rnd() % 3) };
        int64_t dl[2] = { 1 + (int64_t)(rnd() % 2), 1 + (int64_t)(rnd() % 2) };
        int64_t pd[4], pb[2], ks[2] = { k[0], k[1] };
        const char *ap = pads_modes[rnd() % 4];
        bool ceil_mode = kind != 0 && rnd() % 2, incl = rnd() % 2;
        float *x = NULL, *wt = NULL, *y = NULL;
        ss_tensor_t in[3], out[2];
        ss_err_t err;
        tnode_t t;
        int rc;

        for (int i = 0; i < 4; i++)
            pd[i] = (int64_t)(rnd() % 3);
        node(&t, "win", kind == 0 ? "Conv" : kind == 1 ? "MaxPool"
                                                      : "AveragePool",
             kind == 0 ? 2 : 1, 1);
        attr_is(&t, "kernel_shape", 2, ks);
        attr_is(&t, "strides", 2, st);
        if (kind != 2)
            attr_is(&t, "dilations", 2, dl);
        else
            dl[0] = dl[1] = 1;
        attr_is(&t, "pads", 4, pd);
        attr(&t, "auto_pad", SS_ATTR_STRING)->s = (char *)ap;
        attr_i(&t, "group", g);
        attr_i(&t, "ceil_mode", ceil_mode);
        attr_i(&t, "count_include_pad", incl);
        x = ss_malloc(sizeof(float) * (size_t)(2 * c * h * w));
        wt = ss_malloc(sizeof(float) * (size_t)(m * cg * k[0] * k[1]));
        if (x == NULL || wt == NULL)
            goto next;
        for (int64_t i = 0; i < 2 * c * h * w; i++)
            x[i] = (float)((int64_t)(rnd() % 2001) - 1000) / 500.0f;
        for (int64_t i = 0; i < m * cg * k[0] * k[1]; i++)
            wt[i] = (float)((int64_t)(rnd() % 2001) - 1000) / 500.0f;
        in[0] = T(SS_DTYPE_F32, 4, 2, c, h, w, x);
        in[1] = T(SS_DTYPE_F32, 4, m, cg, k[0], k[1], wt);
        memset(out, 0, sizeof(out));
        if ((rc = infer(&t, 17, in, out, &err)) < 0)
            goto next;          /* a kernel larger than the input */
        /* The padding the output size implies, recomputed here. */
        for (int a = 0; a < 2; a++) {
            int64_t len = a ? w : h, eff = (k[a] - 1) * dl[a] + 1;

            if (strcmp(ap, "NOTSET") == 0) {
                pb[a] = pd[a];
            } else if (strcmp(ap, "VALID") == 0) {
                pb[a] = 0;
            } else {
                int64_t o = (len + st[a] - 1) / st[a];
                int64_t tot = (o - 1) * st[a] + eff - len;

                tot = tot < 0 ? 0 : tot;
                pb[a] = ap[5] == 'U' ? tot / 2 : tot - tot / 2;
            }
        }
        y = ss_malloc(sizeof(float) * (size_t)(out[0].dims[0] *
                                               out[0].dims[1] *
                                               out[0].dims[2] *
                                               out[0].dims[3]));
        if (y == NULL)
            goto next;
        out[0].data = y;
        if ((rc = run(&t, 17, in, out, &err)) < 0) {
            bad++;
            goto next;
        }
        done_n++;
        for (int64_t b = 0; b < 2; b++)
        for (int64_t oc = 0; oc < out[0].dims[1]; oc++)
        for (int64_t i = 0; i < out[0].dims[2]; i++)
        for (int64_t j = 0; j < out[0].dims[3]; j++) {
            double acc = 0, best = -INFINITY;
            int64_t cnt = 0, taps = 0;
            float got = y[((b * out[0].dims[1] + oc) * out[0].dims[2] + i) *
                          out[0].dims[3] + j];
            double want;

            for (int64_t ic = 0; ic < (kind == 0 ? cg : 1); ic++)
            for (int64_t p = 0; p < k[0]; p++)
            for (int64_t q = 0; q < k[1]; q++) {
                int64_t yy = i * st[0] - pb[0] + p * dl[0];
                int64_t xx = j * st[1] - pb[1] + q * dl[1];
                int64_t ch = kind == 0 ? (oc / (m / g)) * cg + ic : oc;
                bool inside;
                float v = naive_at(x + (b * c + ch) * h * w, h, w, yy, xx,
                                   &inside);

                if (kind == 0) {
                    acc += (double)v * wt[((oc * cg + ic) * k[0] + p) *
                                          k[1] + q];
                } else if (inside) {
                    acc += v;
                    cnt++;
                    best = v > best ? v : best;
                }
                /* Taps inside the padded extent, for count_include_pad. */
                if (yy < h + (strcmp(ap, "NOTSET") ? h : pd[2]) &&
                    xx < w + (strcmp(ap, "NOTSET") ? w : pd[3]))
                    taps++;
            }
            want = kind == 0 ? acc : kind == 1 ? best
                   : acc / (double)(incl && !strcmp(ap, "NOTSET") ? taps
                                                                  : cnt);
            if (kind == 2 && incl && strcmp(ap, "NOTSET") != 0)
                continue;       /* implicit pads: not pinned down here */
            if (kind != 0 && cnt == 0)
                continue;       /* a window wholly in the padding */
            if (!(fabs(got - want) <= 1e-5 + 1e-5 * fabs(want))) {
                if (bad++ < 3)
                    tap_diag("%s %s k %lldx%lld s %lldx%lld d %lldx%lld "
                             "ceil %d: got %g want %g", t.n.op_type, ap,
                             (long long)k[0], (long long)k[1],
                             (long long)st[0], (long long)st[1],
                             (long long)dl[0], (long long)dl[1], ceil_mode,
                             got, want);
            }
        }
next:
        ss_free(x);
        ss_free(wt);
        ss_free(y);
        y = NULL;
    }
    ok(bad == 0 && done_n > 200, "random Conv/MaxPool/AveragePool: %d "
       "geometries match naive loops", done_n);
}

int
main(void)
{
    test_messages();
    test_shape_inputs();
    test_hostile_inputs();
    test_int_edges();
    test_sweep();
    test_random_windows();
    return tap_done();
}
