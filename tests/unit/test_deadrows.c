/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Dead rows (engine/plan/plan_deadrows.c) on a transformer block's tail as
 * torch's nn.MultiheadAttention writes it: x [B, 5, 16] -> qkv MatMul ->
 * q/k/v Slices -> q k^T (k^T an explicit Transpose) -> Softmax -> P v ->
 * [T, B, C] Transpose -> Reshape -> out-projection Gemm -> Reshape ->
 * Transpose back -> residual Add (of the input) -> LayerNormalization ->
 * MatMul, Erf, Mul -> MatMul, bias Add -> residual Add -> z.  Outputs:
 * z[:, 0] (Gather), and in one case also z[:, 0:2] (Slice), in another
 * z itself; or z[:, -4] (a negative index counts from the end of the
 * axis the kernel sees: nothing shrinks).
 *
 * Asserted, at batch 1 (q and the residual read as views of the first
 * rows of qkv and x) and 2 (those rows are strided: two "Rows" copy
 * steps), against the
 * reference plan (SS_ENGINE_NO_FUSION=1, which computes every row): max
 * |y - ref| <= 1e-5 max |ref|, a guard element after each output stays
 * 0; in the fused plan z, the LayerNorm, the out-projection and the
 * scores have only the rows the outputs read (1, or 2 with the Slice),
 * qkv and k^T all 5; with z an output, every row.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ir/edit.h"
#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/plan_runs.h"

enum { GATHER, GATHER_SLICE, GATHER_Z, GATHER_NEG };

/* out = in[s:e] along axis (constant starts, ends, axes). */
static Onnx__NodeProto *
slice(mb_t *b, const char *in, const char *out, int64_t s, int64_t e,
      int64_t axis)
{
    const int64_t v[3] = { s, e, axis };
    const char *sfx[3] = { "s", "e", "a" };
    char name[32], ins[128];

    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "%s_%s", out, sfx[i]);
        mb_init_i64(b, name, 1, (int64_t[]){ 1 }, &v[i]);
    }
    snprintf(ins, sizeof(ins), "%s,%s_s,%s_e,%s_a", in, out, out, out);
    return mb_node(b, "Slice", NULL, ins, out);
}

static ss_graph_t *
build(int kind)
{
    mb_t *b = mb_new(17);
    const int64_t p021[3] = { 0, 2, 1 }, p102[3] = { 1, 0, 2 };
    const int64_t flat[2] = { -1, 16 }, back[3] = { 5, -1, 16 };
    const int64_t zero = kind == GATHER_NEG ? -4 : 0;
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    mb_input(b, "x", SS_DTYPE_F32, 3, (int64_t[]){ -1, 5, 16 });
    init_rand(b, "wqkv", 2, (int64_t[]){ 16, 48 }, 0.5f);
    init_rand(b, "wo", 2, (int64_t[]){ 16, 16 }, 0.5f);
    init_rand(b, "bo", 1, (int64_t[]){ 16 }, 0.5f);
    init_rand(b, "gamma", 1, (int64_t[]){ 16 }, 1.0f);
    init_rand(b, "beta", 1, (int64_t[]){ 16 }, 1.0f);
    init_rand(b, "w1", 2, (int64_t[]){ 16, 32 }, 0.5f);
    init_rand(b, "w2", 2, (int64_t[]){ 32, 16 }, 0.5f);
    init_rand(b, "b2", 1, (int64_t[]){ 16 }, 0.5f);
    mb_init_i64(b, "flat", 1, (int64_t[]){ 2 }, flat);
    mb_init_i64(b, "back", 1, (int64_t[]){ 3 }, back);
    mb_init_i64(b, "zero", 0, NULL, &zero);
    mb_node(b, "MatMul", "qkv", "x,wqkv", "qkv");
    slice(b, "qkv", "q", 0, 16, 2);
    slice(b, "qkv", "k", 16, 32, -1);
    slice(b, "qkv", "v", 32, 48, 2);
    n = mb_node(b, "Transpose", "kt", "k", "kt");
    mb_attr_ints(b, n, "perm", 3, p021);
    mb_node(b, "MatMul", "s", "q,kt", "s");
    n = mb_node(b, "Softmax", "a", "s", "a");
    mb_attr_int(b, n, "axis", -1);
    mb_node(b, "MatMul", "o", "a,v", "o");
    n = mb_node(b, "Transpose", "ot", "o", "ot");
    mb_attr_ints(b, n, "perm", 3, p102);
    mb_node(b, "Reshape", "f", "ot,flat", "f");
    n = mb_node(b, "Gemm", "proj", "f,wo,bo", "proj");
    mb_attr_int(b, n, "transB", 0);
    mb_node(b, "Reshape", "gr", "proj,back", "gr");
    n = mb_node(b, "Transpose", "gt", "gr", "gt");
    mb_attr_ints(b, n, "perm", 3, p102);
    mb_node(b, "Add", "r", "gt,x", "r");
    n = mb_node(b, "LayerNormalization", "ln", "r,gamma,beta", "ln");
    mb_attr_int(b, n, "axis", -1);
    mb_node(b, "MatMul", "m", "ln,w1", "m");
    mb_node(b, "Erf", "e", "m", "e");
    mb_node(b, "Mul", "h", "m,e", "h");
    mb_node(b, "MatMul", "y", "h,w2", "y");
    mb_node(b, "Add", "yb", "y,b2", "yb");
    mb_node(b, "Add", "z", "yb,r", "z");
    n = mb_node(b, "Gather", "cls", "z,zero", "cls");
    mb_attr_int(b, n, "axis", 1);
    mb_output(b, "cls", SS_DTYPE_F32, 2, (int64_t[]){ -1, 16 });
    if (kind == GATHER_SLICE) {
        slice(b, "z", "two", 0, 2, 1);
        mb_output(b, "two", SS_DTYPE_F32, 3, (int64_t[]){ -1, 2, 16 });
    } else if (kind == GATHER_Z) {
        mb_output(b, "z", SS_DTYPE_F32, 3, (int64_t[]){ -1, 5, 16 });
    }
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    return g;
}

/* Rows of value `name` along axis ax in plan p (-1 when absent). */
static int64_t
rows(const ss_plan_t *p, const char *name, int ax)
{
    int v = ss_graph_find_value(p->g, name);

    return v < 0 ? -1 : p->vals[v].t.dims[ax];
}

static void
rows_case(int kind, int64_t batch)
{
    static const char *const kinds[] = { "z[:,0]", "z[:,0] and z[:,0:2]",
                                         "z[:,0] and z", "z[:,-4]" };
    ss_graph_t *g = build(kind);
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    float *y[3][N_OUT] = { { NULL } }, *x;
    int64_t n[3][N_OUT] = { { 0 } }, numel = batch * 5 * 16, want;
    int rc[3] = { -1, -1, -1 }, copies = 0;
    int n_out = kind == GATHER || kind == GATHER_NEG ? 1 : 2;
    int good = 1;

    want = kind == GATHER ? 1 : kind == GATHER_SLICE ? 2 : 5;
    x = malloc((size_t)numel * sizeof(float));
    for (int64_t i = 0; x != NULL && i < numel; i++)
        x[i] = frand() * 2;
    ok(g != NULL && x != NULL, "%s, batch %lld: model loads", kinds[kind],
       (long long)batch);
    for (int m = REF; g != NULL && x != NULL && m <= BLOCKED;
         m += BLOCKED - REF)
        rc[m] = run(g, m, 3, (int64_t[]){ batch, 5, 16 }, x, n_out, y[m],
                    n[m], &p[m]);
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "%s, batch %lld: the plans "
       "compile and run", kinds[kind], (long long)batch);
    if (rc[REF] || rc[BLOCKED])
        goto done;
    for (int k = 0; k < n_out; k++) {
        double e = max_rel_err(y[BLOCKED][k], y[REF][k], n[REF][k]);

        ok(n[BLOCKED][k] == n[REF][k] && e < 1e-5
           && y[BLOCKED][k][n[REF][k]] == 0, "%s, batch %lld: output %d vs "
           "reference: max err %.2g of max |y|", kinds[kind],
           (long long)batch, k, e);
    }
    good = rows(p[BLOCKED], "z", 1) == want && rows(p[BLOCKED], "ln", 1) == want
           && rows(p[BLOCKED], "s", 1) == want
           && rows(p[BLOCKED], "proj", 0) == want * batch
           && rows(p[BLOCKED], "qkv", 1) == 5 && rows(p[BLOCKED], "kt", 2) == 5
           && rows(p[REF], "z", 1) == 5;
    ok(good, "%s, batch %lld: z, ln, s have %lld rows (%lld %lld %lld), "
       "proj %lld (%lld), qkv and k^T 5 (%lld %lld)", kinds[kind],
       (long long)batch, (long long)want, (long long)rows(p[BLOCKED], "z", 1),
       (long long)rows(p[BLOCKED], "ln", 1),
       (long long)rows(p[BLOCKED], "s", 1), (long long)(want * batch),
       (long long)rows(p[BLOCKED], "proj", 0),
       (long long)rows(p[BLOCKED], "qkv", 1),
       (long long)rows(p[BLOCKED], "kt", 2));
    for (int s = 0; s < p[BLOCKED]->n_steps; s++)
        copies += p[BLOCKED]->steps[s].kind == SS_STEP_DNN
                  && strcmp(p[BLOCKED]->steps[s].what, "Rows") == 0;
    /* batch 2: q's first rows of qkv and the residual's of x */
    ok(copies == (want < 5 && batch > 1 ? 2 : 0), "%s, batch %lld: %d row "
       "copies",
       kinds[kind], (long long)batch, copies);
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

int
main(void)
{
    for (int64_t b = 1; b <= 2; b++) {
        rows_case(GATHER, b);
        rows_case(GATHER_SLICE, b);
        rows_case(GATHER_Z, b);
        rows_case(GATHER_NEG, b);
    }
    return tap_done();
}
