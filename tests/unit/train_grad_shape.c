/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_train_grad's cases: Concat, Slice, Where; accumulation, frozen initializers, refusals; the
 * rule table's coverage.
 */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/io/npy.h"
#include "engine/ir/edit.h"
#include "tests/tap.h"
#include "tests/unit/train_gb.h"
#include "tests/unit/train_grad.h"

/* ---- Concat, Slice, Where ----------------------------------------------- */

static int
gb_bools(gb_t *b, const char *name, int nd, const int64_t *dims)
{
    ss_tensor_t *t = NULL;
    int64_t n;

    if (ss__tensor_new(SS_DTYPE_BOOL, nd, dims, &t, &b->err) < 0)
        return -1;
    n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((uint8_t *)t->data)[i] = gb_urand() < 0.5;
    return ss_graph_add_value(b->g, name, t, &b->err);
}

void
index_cases(void)
{
    {   /* x twice: its gradient is two gathers, the second adding */
        gb_t b;
        int64_t dx[3] = { 2, 3, 4 }, dz[3] = { 2, 2, 4 };
        int in[3];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, dx, -1, 1);
        in[1] = gb_param(&b, "z", 3, dz, -1, 1);
        in[2] = in[0];
        attr_i(&b, "axis", 1);
        check("Concat axis 1 (x, z, x)",
              gb_done(&b, gb_node(&b, "Concat", 3, in)), NULL);
    }
    {   /* negative start and step, two axes */
        gb_t b;
        int64_t d[3] = { 4, 6, 5 }, two = 2;
        int64_t st[2] = { 1, -1 }, en[2] = { 4, -7 }, ax[2] = { 0, 1 };
        int64_t sp[2] = { 2, -2 };
        int in[5];

        gb_init(&b, 17);
        in[0] = gb_param(&b, "x", 3, d, -1, 1);
        in[1] = gb_ints(&b, "starts", 1, &two, st);
        in[2] = gb_ints(&b, "ends", 1, &two, en);
        in[3] = gb_ints(&b, "axes", 1, &two, ax);
        in[4] = gb_ints(&b, "steps", 1, &two, sp);
        check("Slice steps [2, -2], negative start",
              gb_done(&b, gb_node(&b, "Slice", 5, in)), NULL);
    }
    {   /* x[:, 3:] ++ x[:, :4]: overlapping slices, the second adds */
        gb_t b;
        int64_t d[2] = { 3, 5 }, one = 1;
        int x, s1, s2, in[3];

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        in[0] = x;
        in[1] = gb_ints(&b, "s1", 1, &one, (int64_t[]){ 3 });
        in[2] = gb_ints(&b, "e1", 1, &one, (int64_t[]){ 100 });
        s1 = gb_node(&b, "Slice", 3, in);
        in[1] = gb_ints(&b, "s2", 1, &one, (int64_t[]){ 0 });
        in[2] = gb_ints(&b, "e2", 1, &one, (int64_t[]){ 4 });
        s2 = gb_node(&b, "Slice", 3, in);
        attr_i(&b, "axis", 0);
        check("Slice twice of one value, then Concat",
              gb_done(&b, gb_node(&b, "Concat", 2, (int[]){ s1, s2 })),
              NULL);
    }
    {   /* Y broadcasts: its gradient sums over the rows it fills */
        gb_t b;
        int64_t d[3] = { 2, 3, 4 }, dy[2] = { 1, 4 };
        int in[3];

        gb_init(&b, 17);
        in[0] = gb_bools(&b, "cond", 3, d);
        in[1] = gb_param(&b, "x", 3, d, -1, 1);
        in[2] = gb_param(&b, "y", 2, dy, -1, 1);
        check("Where, Y [1, 4] broadcast",
              gb_done(&b, gb_node(&b, "Where", 3, in)), NULL);
    }
    {   /* X used twice: the second Where' adds into its gradient */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int x, c, w, in[3];

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        c = gb_bools(&b, "cond", 2, d);
        in[0] = c;
        in[1] = x;
        in[2] = gb_scalar(&b, "minus", -2.0f);
        w = gb_node(&b, "Where", 3, in);
        check("Where, scalar Y constant, X also added",
              gb_done(&b, gb_node(&b, "Add", 2, (int[]){ w, x })), NULL);
    }
}

/* ---- accumulation, frozen, refusal ---------------------------------------- */

void
structure_cases(void)
{
    {   /* y = x * x + relu(x) + reshape(x): four uses of one value */
        gb_t b;
        int64_t d[2] = { 3, 4 }, sv[2] = { 3, 4 }, two = 2;
        int x, a, r, s, sh, y;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        a = gb_node(&b, "Mul", 2, (int[]){ x, x });
        r = gb_node(&b, "Relu", 1, &x);
        sh = gb_ints(&b, "shape", 1, &two, sv);
        s = gb_node(&b, "Reshape", 2, (int[]){ x, sh });
        y = gb_node(&b, "Add", 2, (int[]){ a, r });
        y = gb_node(&b, "Add", 2, (int[]){ y, s });
        check("one value used four times (accumulation)", gb_done(&b, y),
              NULL);
    }
    {   /* an MLP: Gemm, Relu, Gemm, Softmax */
        gb_t b;
        int64_t xd[2] = { 4, 6 }, w1[2] = { 8, 6 }, b1[1] = { 8 };
        int64_t w2[2] = { 8, 3 }, b2[1] = { 3 };
        int x, h, y;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, xd, -1, 1);
        attr_i(&b, "transB", 1);
        h = gb_node(&b, "Gemm", 3, (int[]){ x, gb_param(&b, "w1", 2, w1,
                                                         -1, 1),
                                             gb_param(&b, "b1", 1, b1, -1,
                                                      1) });
        h = gb_node(&b, "Relu", 1, &h);
        y = gb_node(&b, "Gemm", 3, (int[]){ h, gb_param(&b, "w2", 2, w2,
                                                         -1, 1),
                                             gb_param(&b, "b2", 1, b2, -1,
                                                      1) });
        y = gb_node(&b, "Softmax", 1, &y);
        check("Gemm-Relu-Gemm-Softmax chain", gb_done(&b, y), NULL);
    }
    {   /* frozen: no slot, no gradient; the rest still trains */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int in[2];
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;
        static const char *const fz[] = { "a" };
        ss_train_param_info_t pi;

        gb_init(&b, 17);
        in[0] = gb_param(&b, "a", 2, d, -1, 1);
        in[1] = gb_param(&b, "b", 2, d, -1, 1);
        g = gb_done(&b, gb_node(&b, "Mul", 2, in));
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        o.frozen = fz;
        o.n_frozen = 1;
        ok(g && ss_train_new(g, NULL, &o, &t, &err) == 0 &&
           ss_train_num_params(t) == 1 && ss_train_param(t, 0, &pi) == 0 &&
           strcmp(pi.name, "b") == 0,
           "a frozen initializer is no parameter");
        ss_train_free(t);
        t = NULL;
        {
            static const char *const both[] = { "a", "b" };

            o.frozen = both;
            o.n_frozen = 2;
            ok(g && ss_train_new(g, NULL, &o, &t, &err) == SS_EINVAL &&
               strstr(err.msg, "nothing to train") != NULL,
               "everything frozen is refused (%s)", err.msg);
        }
        ss_train_free(t);
        ss_graph_free(g);
    }
    {   /* no rule: refused, naming the op and the node */
        gb_t b;
        int64_t d[2] = { 3, 4 };
        int x;
        ss_graph_t *g;
        ss_train_opts_t o;
        ss_train_t *t = NULL;
        ss_err_t err;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 2, d, -1, 1);
        x = gb_node(&b, "Floor", 1, &x);
        g = gb_done(&b, x);
        ss_train_opts_default(&o);
        o.loss = SS_LOSS_MSE;
        ok(g && ss_train_new(g, NULL, &o, &t, &err) == SS_EUNSUPP &&
           strstr(err.msg, "no gradient rule for Floor (node 'Floor')"),
           "an op without a rule is refused by name (%s)", err.msg);
        ss_train_free(t);
        ss_graph_free(g);
    }
}

void
table_covers(void)
{
    int n;
    const ss__rule_t *r = ss__rules(&n);
    bool all = n > 30;

    for (int i = 0; i < n; i++)
        all &= r[i].bwd != NULL && r[i].diff != 0 &&
               ss__op_find(r[i].op) != NULL;
    ok(all, "every rule has a backward, a diff mask and an engine op (%d "
       "rules)", n);
}

/* ---- BatchNorm statistics tied through Identity nodes -------------------- */

/* Two BatchNorms over x and Relu(x) whose running statistics are one
 * pair of initializers read through Identity nodes, as torch's exporter
 * writes an untrained net's (equal) statistics. */
static ss_graph_t *
tied_bn_graph(void)
{
    int64_t d[4] = { 4, 3, 2, 2 }, c = 3;
    int x, m, v, y1, y2;
    gb_t b;

    gb_init(&b, 15);
    x = gb_param(&b, "x", 4, d, -2, 2);
    m = gb_param(&b, "rm", 1, &c, -0.5, 0.5);
    v = gb_param(&b, "rv", 1, &c, 0.5, 1.5);
    y1 = gb_node_named(&b, "bn1", "BatchNormalization", 5, (int[]){
        x, gb_param(&b, "g1", 1, &c, 0.5, 1.5),
        gb_param(&b, "b1", 1, &c, -1, 1),
        gb_node_named(&b, "m1", "Identity", 1, &m),
        gb_node_named(&b, "v1", "Identity", 1, &v) });
    y2 = gb_node(&b, "Relu", 1, &x);
    y2 = gb_node_named(&b, "bn2", "BatchNormalization", 5, (int[]){
        y2, gb_param(&b, "g2", 1, &c, 0.5, 1.5),
        gb_param(&b, "b2", 1, &c, -1, 1),
        gb_node_named(&b, "m2", "Identity", 1, &m),
        gb_node_named(&b, "v2", "Identity", 1, &v) });
    return gb_done(&b, gb_node(&b, "Add", 2, (int[]){ y1, y2 }));
}

/* The running mean the exported graph gives BatchNorm node name, or NULL
 * when it is not an initializer of its own. */
static const float *
exported_mean(const ss_graph_t *g, const char *name)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0 &&
            g->nodes[i].n_inputs == 5)
            return g->values[g->nodes[i].inputs[3]].constant
                   ? g->values[g->nodes[i].inputs[3]].constant->data
                   : NULL;
    return NULL;
}

void
tied_bn_case(void)
{
    ss_graph_t *g = tied_bn_graph(), *out = NULL;
    ss_train_opts_t o;
    ss_train_t *t = NULL;
    ss_err_t err;
    static float zero[48];
    ss_tensor_t target = { SS_DTYPE_F32, 4, { 4, 3, 2, 2 }, zero };
    ss_train_batch_t bt = { NULL, NULL, &target };
    const float *m1, *m2, *m0;
    double l = 0, d12 = 0;
    int rc;

    check("BatchNorm statistics tied through Identity nodes",
          tied_bn_graph(), NULL);
    ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    o.opt = SS_OPT_SGD;
    rc = g ? ss_train_new(g, NULL, &o, &t, &err) : -1;
    if (rc == 0)
        rc = ss_train_step(t, &bt, &l, &err);
    if (rc == 0)
        rc = ss_train_export(t, &out, &err);
    if (!ok(rc == 0, "tied statistics: a step and the export (%s)",
            rc == 0 ? "" : err.msg)) {
        ss_train_free(t);
        ss_graph_free(g);
        return;
    }
    m1 = exported_mean(out, "bn1");
    m2 = exported_mean(out, "bn2");
    m0 = g->values[ss_graph_find_value(g, "rm")].constant->data;
    for (int i = 0; m1 && m2 && i < 3; i++)
        d12 = fmax(d12, fabs((double)m1[i] - m2[i]));
    /* x and Relu(x) have different batch means: each BatchNorm moved its
     * own running mean from the shared start */
    ok(m1 && m2 && m1 != m2 && d12 > 1e-3 && m1[0] != m0[0] &&
       m2[0] != m0[0],
       "tied statistics: each BatchNorm updates and exports its own "
       "running mean (differ by %.3g)", d12);
    ss_graph_free(out);
    ss_train_free(t);
    ss_graph_free(g);
}

/*
 * Mixed precision through attention's shape ops (compress/train/rules.c):
 * x [2, 5, 8], LayerNorm, times a qkv weight plus bias, Reshape to [B,
 * L, 3, H, dh],
 * Transpose to [3, B, H, L, dh], Gathers of q, k, v, K's Transpose,
 * the scaled scores, Softmax, times V, the heads' Transpose and Reshape
 * into the output Linear.  Every path from the qkv Linear ends at a
 * MatMul operand, so it writes bf16 and the Transposes and Gathers move
 * bf16 (forward, and the gradients backward: the Gathers' three
 * contributions add into one bf16 gradient); so do the heads.  The bf16
 * trainer's gradient against finite differences of the f32 one (3e-2 of
 * the largest, as bf16_cases), and the 10 bf16 activations (the qkv
 * Linear, its Transpose, the three Gathers, K's Transpose, the scores,
 * the probabilities, the heads and their Transpose; the LayerNorm's
 * output stays f32, the Linear reads a bf16 copy).  k 1: v is also read
 * by a Mul, so q, k, v and the qkv Linear stay f32 (4 bf16 activations:
 * the scores, the probabilities, the heads and their Transpose).  Last
 * in main.
 */
void
attention16_shape_cases(void)
{
    static const char *const nm[2] = {
        "bf16 attention through Reshape, Transpose and Gathers",
        "bf16 attention, v also read by a Mul (f32 qkv)" };

    if (!ss_dnn_bf16_native(NULL)) {
        ok(1, "# SKIP bf16 attention shape ops: oneDNN does not run bf16 "
           "here");
        return;
    }
    for (int k = 0; k < 2; k++) {
        gb_t b;
        int64_t xd[3] = { 2, 5, 8 }, wd[2] = { 8, 24 }, od[2] = { 8, 8 };
        int64_t rd[5] = { 2, 5, 3, 2, 4 }, hd[3] = { 2, 5, 8 }, five = 5;
        int64_t three = 3, p5[5] = { 2, 0, 3, 1, 4 }, pk[4] = { 0, 1, 3, 2 };
        int64_t ph[4] = { 0, 2, 1, 3 }, one = 1, zero = 0, two = 2;
        int x, y, h[3], s;

        gb_init(&b, 17);
        x = gb_param(&b, "x", 3, xd, -1, 1);
        attr_f(&b, "epsilon", 1e-5f);
        x = gb_node(&b, "LayerNormalization", 3, (int[]){
            x, gb_param(&b, "g", 1, &xd[2], 0.5, 1.5),
            gb_param(&b, "b", 1, &xd[2], -1, 1) });
        y = gb_node(&b, "MatMul", 2, (int[]){
            x, gb_param(&b, "wqkv", 2, wd, -1, 1) });
        y = gb_node(&b, "Add", 2, (int[]){
            y, gb_param(&b, "bqkv", 1, &wd[1], -1, 1) });
        y = gb_node(&b, "Reshape", 2, (int[]){
            y, gb_ints(&b, "shape", 1, &five, rd) });
        attr_ints(&b, "perm", 5, p5);
        y = gb_node(&b, "Transpose", 1, &y);
        for (int j = 0; j < 3; j++) {
            attr_i(&b, "axis", 0);
            h[j] = gb_node(&b, "Gather", 2, (int[]){
                y, gb_ints(&b, j == 0 ? "i0" : j == 1 ? "i1" : "i2", 0,
                           NULL, j == 0 ? &zero : j == 1 ? &one : &two) });
        }
        attr_ints(&b, "perm", 4, pk);
        h[1] = gb_node(&b, "Transpose", 1, &h[1]);
        s = gb_node(&b, "MatMul", 2, (int[]){ h[0], h[1] });
        s = gb_node(&b, "Div", 2, (int[]){ s, gb_scalar(&b, "c", 2.0f) });
        s = gb_node(&b, "Softmax", 1, &s);
        y = gb_node(&b, "MatMul", 2, (int[]){ s, h[2] });
        attr_ints(&b, "perm", 4, ph);
        y = gb_node(&b, "Transpose", 1, &y);
        y = gb_node(&b, "Reshape", 2, (int[]){
            y, gb_ints(&b, "hshape", 1, &three, hd) });
        y = gb_node(&b, "MatMul", 2, (int[]){
            y, gb_param(&b, "wout", 2, od, -1, 1) });
        if (k == 1)
            y = gb_node(&b, "Add", 2, (int[]){
                y, gb_node(&b, "ReduceMean", 1, (int[]){
                       gb_node(&b, "Mul", 2, (int[]){ h[2], h[2] }) }) });
        check_bf16(nm[k], gb_done(&b, y), NULL, 3e-2);
        ok(bf16_acts == (k ? 4 : 10), "%s: %d activations in bf16 (want "
           "%d)", nm[k], bf16_acts, k ? 4 : 10);
    }
}
