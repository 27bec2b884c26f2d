/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A 1x1 conv and the 3x3 depthwise conv that reads its output as one
 * oneDNN primitive (engine/plan/plan_fuse_dw.c), on MobileNetV2-shaped
 * inverted residual blocks:
 *   x[N,C,H,H] → c0 1x1 C→C             a  (the fused step's source,
 *                                             written by a conv)
 *   c1 1x1 C→E +Clip(0,6)                e
 *   dw 3x3 E, pads 1, stride s +Clip    d
 *   c3 1x1 E→C                           y  (graph output)
 * Each case runs three plans: the reference kernels, the default and the
 * default with SS_ENGINE_NO_DW_FUSION=1; outputs within 1e-5 (of max |y|)
 * of the reference.  Blocked blocks (C = 16) must fuse, into a jit_1x1
 * kernel; a block of 24 channels (NHWC, where oneDNN 2.6's fused kernel
 * is wrong) must not.  One OpenMP thread: oneDNN fuses only when the
 * expanded tensor is over twice the L2 of the threads.
 */

#include <omp.h>
#include <stdio.h>

#include "tests/unit/plan_runs.h"

static const char *
impl_of(const ss_plan_t *p, const char *what)
{
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].kind == SS_STEP_DNN
            && strcmp(p->steps[s].what, what) == 0)
            return ss_dnn_prim_impl(p->steps[s].prim);
    return "(none)";
}

static void
block(int64_t batch, int64_t c, int64_t e, int64_t h, int64_t s, int bias,
      int want_fused)
{
    mb_t *b = mb_new(13);
    const int64_t xd[4] = { batch, c, h, h }, nx = batch * c * h * h;
    const char *fused = "Conv+Clip+DwConv+Clip";
    char name[64];
    ss_graph_t *g = NULL;
    ss_plan_t *p[3] = { NULL, NULL, NULL };
    float *x = NULL, *y[3][N_OUT];
    int64_t n[3][N_OUT];
    ss_err_t err = { 0 };
    int rc[3];

    snprintf(name, sizeof(name), "%lld->%lld at %lldx%lld, stride %lld, "
             "batch %lld", (long long)c, (long long)e, (long long)h,
             (long long)h, (long long)s, (long long)batch);
    memset(y, 0, sizeof(y));
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, c, h, h });
    init_rand(b, "w0", 4, (int64_t[]){ c, c, 1, 1 }, 0.3f);
    init_rand(b, "w1", 4, (int64_t[]){ e, c, 1, 1 }, 0.4f);
    init_rand(b, "b1", 1, (int64_t[]){ e }, 0.5f);
    init_rand(b, "w2", 4, (int64_t[]){ e, 1, 3, 3 }, 0.5f);
    init_rand(b, "b2", 1, (int64_t[]){ e }, 0.5f);
    init_rand(b, "w3", 4, (int64_t[]){ c, e, 1, 1 }, 0.1f);
    mb_init_f32(b, "lo", 0, NULL, (float[]){ 0 });
    mb_init_f32(b, "hi", 0, NULL, (float[]){ 6 });
    conv(b, "c0", "x,w0", "a", 0, 1, 1);
    conv(b, "c1", "a,w1,b1", "e", 0, 1, 1);
    mb_node(b, "Clip", "r1", "e,lo,hi", "er");
    conv(b, "dw", bias ? "er,w2,b2" : "er,w2", "d", 1, s, e);
    mb_node(b, "Clip", "r2", "d,lo,hi", "dr");
    conv(b, "c3", "dr,w3", "y", 0, 1, 1);
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, c, -1, -1 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("load: %s", err.msg);
    x = malloc((size_t)nx * sizeof(float));
    for (int64_t i = 0; i < nx; i++)
        x[i] = frand() * 2;
    /* p[PLAIN] holds the default plan with the fusion off */
    for (int m = 0; m < 3; m++) {
        if (m == PLAIN)
            setenv("SS_ENGINE_NO_DW_FUSION", "1", 1);
        rc[m] = g ? run(g, m == PLAIN ? BLOCKED : m, 4, xd, x, 1, y[m], n[m],
                        &p[m]) : -1;
        unsetenv("SS_ENGINE_NO_DW_FUSION");
    }
    ok(rc[REF] == 0 && rc[PLAIN] == 0 && rc[BLOCKED] == 0,
       "%s: the plans compile and run", name);
    if (rc[REF] || rc[PLAIN] || rc[BLOCKED])
        goto done;
    for (int m = PLAIN; m <= BLOCKED; m++) {
        double d = max_rel_err(y[m][0], y[REF][0], n[REF][0]);

        ok(n[m][0] == n[REF][0] && d < 1e-5, "%s, fusion %s: max err %.2g "
           "of max |y| vs the reference kernels", name,
           m == PLAIN ? "off" : "on", d);
    }
    ok(count_steps(p[PLAIN], fused) == 0, "%s: SS_ENGINE_NO_DW_FUSION=1 "
       "keeps the convs apart", name);
    if (want_fused)
        ok(count_steps(p[BLOCKED], fused) == 1
           && strncmp(impl_of(p[BLOCKED], fused), "jit_1x1", 7) == 0,
           "%s: one fused step (%d), on %s", name,
           count_steps(p[BLOCKED], fused), impl_of(p[BLOCKED], fused));
    else
        ok(count_steps(p[BLOCKED], fused) == 0, "%s: not fused (NHWC: "
           "oneDNN 2.6's fused kernel is wrong there)", name);
done:
    free_runs(p, y, x);
    ss_graph_free(g);
}

int
main(void)
{
    omp_set_num_threads(1);
    block(1, 16, 96, 112, 2, 1, 1);     /* MobileNetV2's features.2 */
    block(1, 16, 96, 112, 1, 0, 1);     /* stride 1, no dw bias */
    block(2, 16, 64, 96, 2, 1, 1);
    block(1, 24, 144, 56, 1, 1, 0);     /* features.3: NHWC */
    return tap_done();
}
