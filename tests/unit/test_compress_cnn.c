/* SPDX-License-Identifier: Apache-2.0 */
/*
 * compress/ on the convolution architectures torchvision has (issue 12):
 * structured pruning through a mobilenet_v2 inverted residual (expand ->
 * depthwise -> project), of grouped convs, and of a resnet basic block
 * (only the width inside the block shrinks); low-rank factorization of
 * convolutions (channel and spatial); and methods that change nothing
 * ending rejected.
 *
 * The reference for a cut is the source with the removed channels'
 * columns zeroed in the layer that reads them: what the kept channels
 * alone compute.  Those channels are made the least important ones (their
 * producer's weights scaled by 1/100), so the weight-norm score must pick
 * exactly them, and the variant must agree with the reference within
 * 1e-5 (relative to the largest output).
 */

#include <math.h>
#include <stdio.h>

#include "tests/unit/onnx_build.h"
#include "tests/unit/test_compress_util.h"

static uint32_t seed = 11;

/* n random floats in [-s, s); with C > 0, the odd rows of a [C, ...]
 * tensor are 100x smaller (the channels to be removed).  With zero_odd,
 * the odd columns of a [O, C, ...] weight are zero instead (the
 * reference: the removed channels read by nobody). */
static float *
param(const int64_t *d, int nd, float s, int64_t C, bool zero_odd)
{
    int64_t n = 1, i, inner = 1;
    float *v;
    int k;

    for (k = 0; k < nd; k++)
        n *= d[k];
    for (k = 2; k < nd; k++)
        inner *= d[k];
    if ((v = malloc((size_t)n * sizeof(float))) == NULL)
        abort();
    for (i = 0; i < n; i++) {
        v[i] = mb_rand(&seed) * s;
        if (C > 0 && (i / (n / C)) % 2 == 1)
            v[i] *= 0.01f;
        if (zero_odd && (i / inner) % d[1] % 2 == 1)
            v[i] = 0.0f;
    }
    return v;
}

static void
init(mb_t *b, const char *name, int nd, const int64_t *d, float s,
     int64_t C, bool zero_odd)
{
    float *v = param(d, nd, s, C, zero_odd);

    mb_init_f32(b, name, nd, d, v);
    free(v);
}

/* BatchNormalization "name" over C channels (random affine and running
 * statistics, so that it is not the identity). */
static void
bn(mb_t *b, const char *name, const char *x, const char *y, int64_t C)
{
    char n[64], ins[256];
    const char *sfx[4] = { "g", "b", "m", "v" };
    int k;

    for (k = 0; k < 4; k++) {
        float *v = malloc((size_t)C * sizeof(float));
        int64_t c;

        for (c = 0; c < C; c++)
            v[c] = k == 0 || k == 3 ? 1.0f + 0.3f * mb_rand(&seed)
                                    : 0.2f * mb_rand(&seed);
        snprintf(n, sizeof(n), "%s_%s", name, sfx[k]);
        mb_init_f32(b, n, 1, &C, v);
        free(v);
    }
    snprintf(ins, sizeof(ins), "%s,%s_g,%s_b,%s_m,%s_v", x, name, name, name,
             name);
    mb_node(b, "BatchNormalization", name, ins, y);
}

static void
conv(mb_t *b, const char *name, const char *ins, const char *y, int64_t k,
     int64_t group, int64_t stride)
{
    Onnx__NodeProto *n = mb_node(b, "Conv", name, ins, y);
    const int64_t pads[4] = { k / 2, k / 2, k / 2, k / 2 };
    const int64_t st[2] = { stride, stride };

    mb_attr_ints(b, n, "pads", 4, pads);
    mb_attr_ints(b, n, "strides", 2, st);
    if (group != 1)
        mb_attr_int(b, n, "group", group);
}

/*
 * x [N, 4, 6, 6] -> e 1x1 4->16 (+b) -> BN -> Clip(0, 6) -> d 3x3
 *   depthwise (group 16, +b) -> BN -> Clip -> p 1x1 16->4 (+b) -> BN
 *   -> Add x  (y: mobilenet_v2's inverted residual)
 * x -> g1 3x3 4->8 -> Relu -> g2 3x3 8->8 group 2 -> Relu -> g3 1x1 8->4
 *   (z: a grouped conv as consumer and as producer)
 * x -> c1 3x3 4->8 (+b) -> BN -> Relu -> c2 3x3 8->4 (+b) -> BN -> Add x
 *   -> Relu -> GlobalAveragePool -> Flatten -> fc 4->10  (w: resnet's
 *   basic block)
 * The odd channels of e, g1, g2 and c1 are the small ones; ref zeroes
 * their columns in p, g2, g3 and c2 instead.
 */
static ss_graph_t *
cnn(bool ref)
{
    const int64_t we[4] = { 16, 4, 1, 1 }, b16[1] = { 16 },
                  wd[4] = { 16, 1, 3, 3 }, wp[4] = { 4, 16, 1, 1 },
                  b4[1] = { 4 }, wg1[4] = { 8, 4, 3, 3 },
                  wg2[4] = { 8, 4, 3, 3 }, wg3[4] = { 4, 8, 1, 1 },
                  wc1[4] = { 8, 4, 3, 3 }, b8[1] = { 8 },
                  wc2[4] = { 4, 8, 3, 3 }, wfc[2] = { 10, 4 }, one = 1;
    const float lo = 0.0f, hi = 6.0f;
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    seed = 11;
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 6, 6 });
    init(b, "we", 4, we, 0.5f, 16, false);
    init(b, "be", 1, b16, 0.3f, 16, false);
    init(b, "wd", 4, wd, 0.5f, 0, false);
    init(b, "bd", 1, b16, 0.3f, 0, false);
    init(b, "wp", 4, wp, 0.5f, 0, ref);
    init(b, "bp", 1, b4, 0.3f, 0, false);
    mb_init_f32(b, "lo", 0, &one, &lo);
    mb_init_f32(b, "hi", 0, &one, &hi);
    conv(b, "e", "x,we,be", "e", 1, 1, 1);
    bn(b, "bn_e", "e", "ebn", 16);
    mb_node(b, "Clip", "clip_e", "ebn,lo,hi", "er");
    conv(b, "d", "er,wd,bd", "d", 3, 16, 1);
    bn(b, "bn_d", "d", "dbn", 16);
    mb_node(b, "Clip", "clip_d", "dbn,lo,hi", "dr");
    conv(b, "p", "dr,wp,bp", "p", 1, 1, 1);
    bn(b, "bn_p", "p", "pbn", 4);
    mb_node(b, "Add", "res", "pbn,x", "y");

    init(b, "wg1", 4, wg1, 0.5f, 8, false);
    init(b, "wg2", 4, wg2, 0.5f, 8, ref);
    init(b, "wg3", 4, wg3, 0.5f, 0, ref);
    conv(b, "g1", "x,wg1", "g1", 3, 1, 1);
    mb_node(b, "Relu", "rg1", "g1", "rg1");
    conv(b, "g2", "rg1,wg2", "g2", 3, 2, 1);
    mb_node(b, "Relu", "rg2", "g2", "rg2");
    conv(b, "g3", "rg2,wg3", "z", 1, 1, 1);

    init(b, "wc1", 4, wc1, 0.5f, 8, false);
    init(b, "bc1", 1, b8, 0.3f, 0, false);
    init(b, "wc2", 4, wc2, 0.5f, 0, ref);
    init(b, "bc2", 1, b4, 0.3f, 0, false);
    init(b, "wfc", 2, wfc, 0.5f, 0, false);
    conv(b, "c1", "x,wc1,bc1", "c1", 3, 1, 1);
    bn(b, "bn_c1", "c1", "c1bn", 8);
    mb_node(b, "Relu", "rc1", "c1bn", "rc1");
    conv(b, "c2", "rc1,wc2,bc2", "c2", 3, 1, 1);
    bn(b, "bn_c2", "c2", "c2bn", 4);
    mb_node(b, "Add", "res2", "c2bn,x", "a2");
    mb_node(b, "Relu", "ra2", "a2", "ra2");
    mb_node(b, "GlobalAveragePool", "gap", "ra2", "gp");
    mb_node(b, "Flatten", "fl", "gp", "f");
    mb_attr_int(b, mb_node(b, "Gemm", "fc", "f,wfc", "w"), "transB", 1);
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 6, 6 });
    mb_output(b, "z", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 6, 6 });
    mb_output(b, "w", SS_DTYPE_F32, 2, (int64_t[]){ -1, 10 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("cnn: %s", err.msg);
    return g;
}

static int64_t
group_of(const ss_graph_t *g, const char *node)
{
    int i;

    for (i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, node) == 0)
            return ss__attr_int(&g->nodes[i], "group", 1);
    return -1;
}

/* Rows of x: random in [-2, 2). */
static void
data(ss_tensor_t *x, ss_dataset_t *ds, int64_t rows, int64_t c, int64_t hw)
{
    int64_t i, n = rows * c * hw * hw;

    memset(x, 0, sizeof(*x));
    x->dtype = SS_DTYPE_F32;
    x->ndim = 4;
    x->dims[0] = rows;
    x->dims[1] = c;
    x->dims[2] = x->dims[3] = hw;
    if ((x->data = malloc((size_t)n * sizeof(float))) == NULL)
        abort();
    for (i = 0; i < n; i++)
        ((float *)x->data)[i] = mb_rand(&seed) * 2.0f;
    memset(ds, 0, sizeof(*ds));
    ds->n_inputs = 1;
    ds->inputs = x;
    ds->rows = rows;
}

static void
test_prune_cnn(void)
{
    ss_graph_t *g = cnn(false), *ref = cnn(true);
    ss_tensor_t x;
    ss_dataset_t ds;
    ss_compress_result_t res;
    ss_method_t m;
    ss_eval_t ev;
    ss_err_t err = { 0 };
    int rc;

    if (g == NULL || ref == NULL) {
        ok(0, "the mobilenet/grouped/resnet test net builds");
        goto out;
    }
    data(&x, &ds, 16, 4, 6);
    ss_method_default(&m, SS_METHOD_PRUNE);
    m.u.prune.kind = SS_PRUNE_STRUCTURED;
    m.u.prune.sparsity = 0.5;
    m.u.prune.score = SS_SCORE_L2;
    rc = run1(g, &m, 1, NULL, &ds, &no_gate, &res, &err);
    is_int(rc, 0, "structured 50%% on the conv net: %s", err.msg);
    report("prune structured 50% conv net", &res);
    if (res.variant != NULL) {
        const ss_graph_t *v = res.variant;

        is_int(weight_dim(v, "e", 0), 8, "expand keeps 8 of 16");
        is_int(weight_dim(v, "d", 0), 8, "depthwise keeps 8 filters");
        is_int(group_of(v, "d"), 8, "depthwise group is 8");
        is_int(const_in((ss_graph_t *)v, "bn_d", 1)->dims[0], 8,
               "the depthwise conv's BatchNorm keeps 8");
        is_int(weight_dim(v, "p", 1), 8, "project reads 8");
        is_int(weight_dim(v, "p", 0), 4, "project feeds the residual: 4");
        is_int(weight_dim(v, "e", 1), 4, "expand reads the residual: 4");
        is_int(weight_dim(v, "g1", 0), 4, "g1 keeps 4 of 8 (2 per group)");
        is_int(weight_dim(v, "g2", 1), 2, "g2 reads 2 of 4 per group");
        is_int(weight_dim(v, "g2", 0), 4, "g2 keeps 4 of 8 (2 per group)");
        is_int(group_of(v, "g2"), 2, "g2 keeps its 2 groups");
        is_int(weight_dim(v, "g3", 1), 4, "g3 reads 4");
        is_int(weight_dim(v, "c1", 0), 4, "block conv1 keeps 4 of 8");
        is_int(weight_dim(v, "c2", 1), 4, "block conv2 reads 4");
        is_int(weight_dim(v, "c2", 0), 4, "block conv2 feeds the residual");
        rc = ss_compress_evaluate(v, &ds, ref, &ctl, &ev, &err);
        is_int(rc, 0, "the pruned net runs: %s", err.msg);
        ok(rc == 0 && ev.max_relative_error < 1e-5,
           "pruned net = the source with the removed channels unread "
           "(max rel err %g)", ev.max_relative_error);
        ok(res.variant_eval.max_relative_error > 1e-4,
           "and not the source itself (rel err %g: the small channels "
           "did contribute)", res.variant_eval.max_relative_error);
    }
    ss_compress_result_clear(&res);
    free(x.data);
out:
    ss_graph_free(g);
    ss_graph_free(ref);
}

/*
 * x [N, 16, 8, 8] -> Conv 3x3 16->16 (+b, pads 1, strides s) -> y with
 * W of channel rank 2 (W = A B, A [16, 2], B [2, 144]) or of spatial rank
 * 2 (W[o, i, y, x] = sum_r H[o, r, x] V[r, i, y]), or random (full).
 */
static ss_graph_t *
rank_conv(int kind, int64_t stride, float **wout)
{
    const int64_t wd[4] = { 16, 16, 3, 3 }, bd[1] = { 16 };
    float *w = calloc(16 * 144, sizeof(float)), *bias = malloc(64);
    float a[16][2], bb[2][144], h[16][2][3], v[2][16][3];
    int o, i, y, x, r;
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_err_t err = { 0 };

    if (w == NULL || bias == NULL)
        abort();
    for (o = 0; o < 16; o++)
        for (r = 0; r < 2; r++) {
            a[o][r] = mb_rand(&seed);
            for (x = 0; x < 3; x++)
                h[o][r][x] = mb_rand(&seed);
        }
    for (r = 0; r < 2; r++)
        for (i = 0; i < 144; i++) {
            bb[r][i] = mb_rand(&seed) * 0.5f;
            v[r][i / 9][(i / 3) % 3] = mb_rand(&seed);
        }
    for (o = 0; o < 16; o++)
        for (i = 0; i < 16; i++)
            for (y = 0; y < 3; y++)
                for (x = 0; x < 3; x++) {
                    float *p = &w[((o * 16 + i) * 3 + y) * 3 + x];

                    for (r = 0; r < 2 && kind < 2; r++)
                        *p += kind == 0 ? a[o][r] * bb[r][(i * 3 + y) * 3 + x]
                                        : h[o][r][x] * v[r][i][y];
                    if (kind == 2)
                        *p = mb_rand(&seed);
                }
    for (o = 0; o < 16; o++)
        bias[o] = mb_rand(&seed);
    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, 8, 8 });
    mb_init_f32(b, "w", 4, wd, w);
    mb_init_f32(b, "b", 1, bd, bias);
    conv(b, "conv", "x,w,b", "y", 3, 1, stride);
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, 16, -1, -1 });
    if (mb_load(b, &g, &err) < 0)
        tap_diag("rank_conv: %s", err.msg);
    *wout = w;
    free(bias);
    return g;
}

static void
test_lowrank_conv(void)
{
    static const char *const kinds[3] = { "channel", "spatial", "full" };
    ss_tensor_t x;
    ss_dataset_t ds;
    int kind;

    data(&x, &ds, 8, 16, 8);
    for (kind = 0; kind < 3; kind++) {
        float *w = NULL;
        ss_graph_t *g = rank_conv(kind, kind == 1 ? 2 : 1, &w);
        ss_compress_result_t res;
        ss_method_t m;
        ss_err_t err = { 0 };
        json_t *note, *l;
        int rc;

        if (g == NULL) {
            ok(0, "the %s-rank conv builds", kinds[kind]);
            free(w);
            continue;
        }
        ss_method_default(&m, SS_METHOD_LOWRANK);
        m.u.lowrank.energy = 0.9999;
        rc = run1(g, &m, 1, NULL, &ds, &no_gate, &res, &err);
        is_int(rc, 0, "low-rank on the %s-rank conv: %s", kinds[kind],
               err.msg);
        note = json_array_get(json_object_get(res.details, "methods"), 0);
        l = json_array_get(json_object_get(note, "layers"), 0);
        if (kind == 2) {
            /* Full rank: no factorization saves; nothing is written. */
            ok(!res.passed && res.unchanged
               && strstr(res.gate_reason, "lowrank changed nothing") != NULL,
               "full-rank conv: rejected, unchanged (%s)", res.gate_reason);
            ok(json_is_false(json_object_get(note, "changed")),
               "full-rank conv: the note says changed false");
            is_int(json_integer_value(json_object_get(l, "rank")), 0,
                   "full-rank conv: rank 0 (kept)");
        } else {
            is_str(json_string_value(json_object_get(l, "factorization")),
                   kinds[kind], "rank-2 conv: the %s factorization is the "
                   "cheaper", kinds[kind]);
            is_int(json_integer_value(json_object_get(l, "rank")), 2,
                   "%s: rank 2 keeps 99.99%% of the energy", kinds[kind]);
            ok(res.passed && !res.unchanged, "%s: passes", kinds[kind]);
            ok(res.variant_eval.max_relative_error < 1e-5,
               "%s: the two convs compute the conv (max rel err %g)",
               kinds[kind], res.variant_eval.max_relative_error);
            if (res.variant != NULL) {
                is_int(count_op(res.variant, "Conv"), 2,
                       "%s: two convs", kinds[kind]);
                is_int(weight_dim(res.variant, "conv/lowrank_a", 0), 2,
                       "%s: the first has 2 outputs", kinds[kind]);
                is_int(weight_dim(res.variant, "conv/lowrank_a", 3),
                       kind == 0 ? 3 : 1, "%s: its kernel is %s",
                       kinds[kind], kind == 0 ? "3x3" : "3x1");
                is_int(weight_dim(res.variant, "conv/lowrank_b", 3),
                       kind == 0 ? 1 : 3, "%s: the second's is %s",
                       kinds[kind], kind == 0 ? "1x1" : "1x3");
            }
        }
        ss_compress_result_clear(&res);
        ss_graph_free(g);
        free(w);
    }
    free(x.data);
}

/* Structured pruning of a net whose every width reaches a residual: no
 * channel can go, and the job says so rather than writing the source
 * again. */
static void
test_prune_nothing(void)
{
    const int64_t wd[4] = { 4, 4, 3, 3 };
    mb_t *b = mb_new(13);
    ss_graph_t *g = NULL;
    ss_tensor_t x;
    ss_dataset_t ds;
    ss_compress_result_t res;
    ss_method_t m;
    ss_err_t err = { 0 };
    int rc;

    mb_input(b, "x", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 6, 6 });
    init(b, "w", 4, wd, 0.5f, 0, false);
    conv(b, "c", "x,w", "c", 3, 1, 1);
    mb_node(b, "Add", "res", "c,x", "a");
    mb_node(b, "Relu", "r", "a", "y");
    mb_output(b, "y", SS_DTYPE_F32, 4, (int64_t[]){ -1, 4, 6, 6 });
    if (mb_load(b, &g, &err) < 0) {
        ok(0, "the residual net builds: %s", err.msg);
        return;
    }
    data(&x, &ds, 8, 4, 6);
    ss_method_default(&m, SS_METHOD_PRUNE);
    m.u.prune.kind = SS_PRUNE_STRUCTURED;
    m.u.prune.sparsity = 0.5;
    rc = run1(g, &m, 1, NULL, &ds, &no_gate, &res, &err);
    is_int(rc, 0, "structured 50%% on a residual-only net: %s", err.msg);
    ok(!res.passed && res.unchanged
       && strstr(res.gate_reason, "prune changed nothing: no prunable "
                 "channels") != NULL,
       "residual-only net: rejected with the reason (%s)", res.gate_reason);
    ss_compress_result_clear(&res);
    free(x.data);
    ss_graph_free(g);
}

/* The scales of g's QuantizeLinear nodes in node order (up to n), and
 * whether each quantizes to u8; returns how many. */
static int
q_scales(const ss_graph_t *g, double *sc, bool *u8, int n)
{
    int i, k = 0;

    for (i = 0; g != NULL && i < g->n_nodes && k < n; i++) {
        const ss_node_t *nd = &g->nodes[i];
        const ss_tensor_t *s, *z;

        if (strcmp(nd->op_type, "QuantizeLinear") != 0 || nd->n_inputs < 3)
            continue;
        s = g->values[nd->inputs[1]].constant;
        z = g->values[nd->inputs[2]].constant;
        if (s == NULL || z == NULL)
            continue;
        sc[k] = *(const float *)s->data;
        u8[k++] = z->dtype == SS_DTYPE_U8;
    }
    return k;
}

/* minmax calibration reads ReduceMin/ReduceMax of each activation (the
 * convs of its graph keep their layouts), the other calibrations the
 * tensors whole: at percentile 100 both give the same ranges (up to the
 * kernels' rounding, the plans differ), and the input's scale is its
 * max |x| / 127 (s8: x has negatives). */
static void
test_calib_minmax(void)
{
    ss_graph_t *g = cnn(false);
    ss_compress_result_t r1 = { 0 }, r2 = { 0 };
    ss_tensor_t x;
    ss_dataset_t ds;
    ss_method_t m;
    ss_err_t err = { 0 };
    double s1[32], s2[32], worst = 0, xmax = 0;
    bool u1[32], u2[32], same = true;
    int n1, n2, i;

    if (g == NULL) {
        ok(0, "the calibration test net builds");
        return;
    }
    data(&x, &ds, 16, 4, 6);
    for (i = 0; i < 16 * 4 * 6 * 6; i++)
        xmax = fmax(xmax, fabs(((const float *)x.data)[i]));
    ss_method_default(&m, SS_METHOD_PTQ);
    m.u.ptq.calib = SS_CALIB_MINMAX;
    is_int(run1(g, &m, 1, &ds, &ds, &no_gate, &r1, &err), 0,
           "ptq minmax on the CNN: %s", err.msg);
    ss_method_default(&m, SS_METHOD_PTQ);
    m.u.ptq.calib = SS_CALIB_PERCENTILE;
    m.u.ptq.percentile = 100;
    is_int(run1(g, &m, 1, &ds, &ds, &no_gate, &r2, &err), 0,
           "ptq percentile 100 on the CNN: %s", err.msg);
    n1 = q_scales(r1.variant, s1, u1, 32);
    n2 = q_scales(r2.variant, s2, u2, 32);
    ok(n1 >= 4 && n1 == n2, "both quantize the same activations (%d, %d)",
       n1, n2);
    for (i = 0; i < n1 && i < n2; i++) {
        worst = fmax(worst, fabs(s1[i] - s2[i]) / s2[i]);
        same &= u1[i] == u2[i];
    }
    ok(worst < 1e-4 && same, "minmax from reductions = the whole tensors' "
       "ranges (max rel diff %g, u8/s8 alike: %d)", worst, same);
    is_close(s1[0], xmax / 127.0, 1e-6, 0, "the input's scale: max |x| "
             "/ 127");
    ss_compress_result_clear(&r1);
    ss_compress_result_clear(&r2);
    free(x.data);
    ss_graph_free(g);
}

int
main(void)
{
    test_calib_minmax();
    test_prune_cnn();
    test_lowrank_conv();
    test_prune_nothing();
    return tap_done();
}
