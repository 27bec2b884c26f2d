/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Attention groups (engine/plan/plan_fuse_mm.c): softmax(q k^T / 8) v
 * over [B, 4, 96, 32] (k^T an explicit Transpose, q scaled before the
 * product as torch writes it; q, v (then twice as wide) and the output
 * of P v in the arena, the first product reading a value no later step
 * does) runs its three batched steps group by
 * group of batch entries when S and P whole pass 1 MB: at B = 6 (24
 * entries, 72 KB of S and P each) in 2 groups of 12, S and P each in a
 * one-group buffer, and u (q before its scale) keeps its bytes until the
 * last step of the last group has run; at B = 1 (288 KB) whole.  Against the reference plan
 * (SS_ENGINE_NO_FUSION=1), f32: max |y - ref| <= 1e-5 max |ref|; a guard
 * element after the output stays 0.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan/internal.h"
#include "tests/tap.h"
#include "tests/unit/onnx_build.h"
#include "tests/unit/plan_runs.h"

static ss_graph_t *
build_attn(void)
{
    mb_t *b = mb_new(17);
    const int64_t perm[4] = { 0, 1, 3, 2 };
    const float eight = 8.0f;
    Onnx__NodeProto *n;
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };
    uint8_t *buf;
    size_t len;

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 96, 32 });
    mb_const(b, "c", SS_DTYPE_F32, 0, NULL, &eight, 4);
    mb_node(b, "Neg", "negq", "x", "u");
    mb_node(b, "Div", "prescale", "u,c", "q");
    mb_node(b, "Neg", "negv", "x", "v");
    n = mb_node(b, "Transpose", "kt", "v", "vt");
    mb_attr_ints(b, n, "perm", 4, perm);
    mb_node(b, "MatMul", "qk", "q,vt", "s");
    n = mb_node(b, "Softmax", "sm", "s", "a");
    mb_attr_int(b, n, "axis", -1);
    n = mb_node(b, "Concat", "vv", "v,v", "v2");
    mb_attr_int(b, n, "axis", -1);
    mb_node(b, "MatMul", "av", "a,v2", "o");
    mb_node(b, "Neg", "nego", "o", "y");
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 96, 64 });
    buf = mb_pack(b, &len);
    if (ss_graph_load_onnx_buffer(buf, len, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    free(buf);
    mb_free(b);
    return g;
}

/* Batch `batch`: the fused plan's three attention steps run in groups of
 * `want` entries of 4 * batch (0: whole), and y matches the reference. */
static void
attn_case(int64_t batch, int64_t want)
{
    ss_graph_t *g = build_attn();
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    float *y[3][N_OUT] = { { NULL } }, *x;
    int64_t n[3][N_OUT] = { { 0 } }, numel = batch * 4 * 96 * 32;
    int64_t ny = 2 * numel;
    int rc[3] = { -1, -1, -1 }, steps = 0, grouped = 0, one = 0;
    double e;

    x = malloc((size_t)numel * sizeof(float));
    for (int64_t i = 0; x != NULL && i < numel; i++)
        x[i] = frand() * 4;
    ok(g != NULL && x != NULL, "attention batch %lld: model loads",
       (long long)batch);
    for (int m = REF; g != NULL && x != NULL && m <= BLOCKED;
         m += BLOCKED - REF)
        rc[m] = run(g, m, 4, (int64_t[]){ batch, 4, 96, 32 }, x, 1, y[m],
                    n[m], &p[m]);
    ok(rc[REF] == 0 && rc[BLOCKED] == 0, "attention batch %lld: the plans "
       "compile and run", (long long)batch);
    if (rc[REF] || rc[BLOCKED])
        goto done;
    e = max_rel_err(y[BLOCKED][0], y[REF][0], n[REF][0]);
    ok(n[BLOCKED][0] == ny && n[REF][0] == ny && e < 1e-5
       && y[BLOCKED][0][ny] == 0, "attention batch %lld: vs reference: max "
       "err %.2g of max |y|, guard %g", (long long)batch, e,
       y[BLOCKED][0][ny]);
    for (int s = 0; s < p[BLOCKED]->n_steps; s++) {
        const ss_step_t *st = &p[BLOCKED]->steps[s];

        if (st->kind != SS_STEP_DNN || (strncmp(st->what, "MatMul", 6) != 0
                                        && strstr(st->what, "+MatMul") == NULL
                                        && strcmp(st->what, "Softmax") != 0))
            continue;
        steps++;
        grouped += want > 0 ? st->chunk == want && st->rows == 4 * batch
                            : st->chunk == 0;
        one += p[BLOCKED]->vals[st->out[0]].one_chunk;
    }
    ok(steps == 3, "attention batch %lld: 3 oneDNN steps (%d)",
       (long long)batch, steps);
    if (want > 0) {
        ok(grouped == 3, "attention batch %lld: all 3 in groups of %lld "
           "of %lld entries (%d)", (long long)batch, (long long)want,
           (long long)(4 * batch), grouped);
        ok(one == 2, "attention batch %lld: S and P hold one group (%d)",
           (long long)batch, one);
    } else {
        ok(grouped == 3 && one == 0, "attention batch %lld: whole (%d, %d)",
           (long long)batch, grouped, one);
    }
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

int
main(void)
{
    attn_case(6, 12);
    attn_case(1, 0);
    return tap_done();
}
