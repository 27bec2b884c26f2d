/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Low-rank factorization of 2-D convolutions (lowrank.c does MatMul and
 * Gemm and calls this for a Conv).
 *
 * DESIGN: a KxK conv W [O, I, kh, kw] has two matrix views, each
 * factored by the same truncated SVD (ss__svd_factor: rank from the
 * energy or ratio, sqrt(S) in both factors):
 *  - channel: W as [O, I kh kw] ~ A [O, r] B [r, I kh kw], i.e. a conv
 *    with r outputs and W's kernel, strides, pads and dilations, then a
 *    1x1 conv to O carrying the bias; r (I kh kw + O) multiply-adds per
 *    output pixel instead of O I kh kw;
 *  - spatial (Jaderberg et al. 2014, scheme 2): W[o, i, y, x] as the
 *    matrix [(i, y), (o, x)] ~ V [(i, y), r] H [r, (o, x)], i.e. a kh x 1
 *    conv (vertical stride, pads, dilation) to r channels, then a 1 x kw
 *    conv (horizontal ones) to O with the bias.  Exact for the rank it
 *    keeps: the zero columns the second conv pads with are what the
 *    first would have made of zero-padded input.  r I kh sw + r O kw per
 *    output pixel (the first conv runs over every input column, sw per
 *    output column).
 * The cheaper view wins if it pays (ss__lowrank_pays: at most half the
 * multiply-adds of W as channel factors, a third as spatial ones); else
 * the layer is kept (rank 0 in the details).  Not merely fewer: two convs
 * and the r-channel tensor between them cost more per multiply-add than
 * one.  Measured on the 2-vCPU EPYC (AVX-512, 1 thread, batch 32, 128->128
 * 3x3 at 28x28 between 1x1 convs; bench/lowrank_cost.py --kind conv):
 * channel rank 96/64/32 (0.83/0.56/0.28 of the MACs) ran 1.14/1.02/0.72x
 * the conv's time, spatial 0.67/0.33 ran 1.36/0.91x; resnet18 with every
 * conv factored at energy 0.9 (MACs -20..25%) ran 0.88x.  Grouped convs,
 * 1-D/3-D ones and auto_pad are kept as they are.  The two new nodes are named
 * "<name>/lowrank_a" and "<name>/lowrank_b" like the MatMul factors (the
 * search maps them back to the layer).
 *
 * THREADS: runs on the compress thread.
 */

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/internal.h"

/* Up to two of a conv's spatial attribute values (def when absent). */
static void
attr2(const ss_node_t *nd, const char *name, int64_t def, int64_t *v, int n)
{
    const int64_t *a = NULL;
    int k, c = ss__attr_ints(nd, name, &a);

    for (k = 0; k < n; k++)
        v[k] = c == n ? a[k] : def;
}

/* Adds a Conv node: weight [O, C, kh, kw] from data, attributes given. */
static int
add_conv(ss_graph_t *g, const char *name, int x, int y, int bias,
         const int64_t wd[4], const float *data, const int64_t st[2],
         const int64_t pads[4], const int64_t dil[2], ss_err_t *err)
{
    int64_t ks[2] = { wd[2], wd[3] }, st_[2], dil_[2], pads_[4];
    ss_attr_t at[4];
    float *p;
    int w, ins[3], outs[1];

    memcpy(st_, st, sizeof(st_));
    memcpy(dil_, dil, sizeof(dil_));
    memcpy(pads_, pads, sizeof(pads_));
    if ((w = ss__new_const(g, NULL, SS_DTYPE_F32, 4, wd, (void **)&p,
                           err)) < 0)
        return w;
    memcpy(p, data, sizeof(float) * (size_t)(wd[0] * wd[1] * wd[2] * wd[3]));
    memset(at, 0, sizeof(at));
    at[0].name = "kernel_shape";
    at[0].ints = ks;
    at[1].name = "strides";
    at[1].ints = st_;
    at[2].name = "dilations";
    at[2].ints = dil_;
    at[0].n = at[1].n = at[2].n = 2;
    at[3].name = "pads";
    at[3].ints = pads_;
    at[3].n = 4;
    at[0].type = at[1].type = at[2].type = at[3].type = SS_ATTR_INTS;
    ins[0] = x;
    ins[1] = w;
    ins[2] = bias;
    outs[0] = y;
    return ss_graph_add_node(g, "Conv", name, bias >= 0 ? 3 : 2, ins, 1,
                             outs, 4, at, err);
}

int
ss__lowrank_conv(ss_graph_t *g, const ss__layer_t *l, double energy,
                 double ratio, json_t *info, ss_err_t *err)
{
    const ss_node_t *nd = &g->nodes[l->node];
    const ss_tensor_t *wt = g->values[l->w].constant;
    int64_t O, I, kh, kw, st[2], dil[2], pads[4], r_ch = 0, r_sp = 0;
    int64_t orig, c_ch = 0, c_sp = 0, i, o, y, x, wd[4], s1[2], p1[4], d1[2];
    float *Ach = NULL, *Bch = NULL, *Asp = NULL, *Bsp = NULL, *m = NULL;
    float *w1 = NULL, *w2 = NULL;
    const float *w;
    const char *ap = ss__attr_string(nd, "auto_pad", "NOTSET");
    int node = l->node, in_x = l->x, out_y = nd->outputs[0], bias = l->b;
    int mid, rc = 0;
    int64_t j;
    bool spatial;
    char name[256], *base = NULL;

    if (wt->ndim != 4 || ss__attr_int(nd, "group", 1) != 1
        || strcmp(ap, "NOTSET") != 0 || wt->dtype != SS_DTYPE_F32)
        return 0;
    O = wt->dims[0];
    I = wt->dims[1];
    kh = wt->dims[2];
    kw = wt->dims[3];
    w = wt->data;
    attr2(nd, "strides", 1, st, 2);
    attr2(nd, "dilations", 1, dil, 2);
    attr2(nd, "pads", 0, pads, 4);
    orig = O * I * kh * kw;
    /* channel view: W as [O, I kh kw], already in that order */
    if ((rc = ss__svd_factor(w, O, I * kh * kw, energy, ratio, &r_ch, &Ach,
                             &Bch, err)) < 0)
        goto done;
    c_ch = r_ch * (I * kh * kw + O);
    if (kh > 1 && kw > 1) {
        /* spatial view: m[(i, y), (o, x)] = W[o, i, y, x] */
        if ((m = ss_malloc(sizeof(float) * (size_t)orig)) == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for a conv SVD");
            goto done;
        }
        for (o = 0; o < O; o++)
            for (i = 0; i < I; i++)
                for (y = 0; y < kh; y++)
                    for (x = 0; x < kw; x++)
                        m[(i * kh + y) * O * kw + o * kw + x] =
                            w[((o * I + i) * kh + y) * kw + x];
        if ((rc = ss__svd_factor(m, I * kh, O * kw, energy, ratio, &r_sp,
                                 &Asp, &Bsp, err)) < 0)
            goto done;
        c_sp = r_sp * (I * kh * st[1] + O * kw);
    }
    json_object_set_new(info, "macs_fraction", json_real(
        (double)(r_sp > 0 && c_sp < c_ch ? c_sp : c_ch) / (double)orig));
    if (r_sp > 0 && !ss__lowrank_pays(SS__LR_SPATIAL, c_sp, orig))
        r_sp = 0;
    if (!ss__lowrank_pays(SS__LR_CHANNEL, c_ch, orig))
        r_ch = 0;
    if (r_ch == 0 && r_sp == 0)
        goto done;              /* neither pays: the layer stays */
    spatial = r_sp > 0 && (r_ch == 0 || c_sp < c_ch);
    if ((base = ss_strdup(ss__node_label(g, node))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a name");
        goto done;
    }
    if ((mid = ss_graph_add_value(g, NULL, NULL, err)) < 0) {
        rc = mid;
        goto done;
    }
    ss_graph_kill_node(g, node);
    snprintf(name, sizeof(name), "%s/lowrank_a", base);
    if (spatial) {
        int64_t r = r_sp;

        /* V [r, I, kh, 1] from Asp [(i, y), r]; H [O, r, 1, kw] from
         * Bsp [r, (o, x)]. */
        if ((w1 = ss_malloc(sizeof(float) * (size_t)(r * I * kh))) == NULL
            || (w2 = ss_malloc(sizeof(float) * (size_t)(O * r * kw)))
               == NULL) {
            rc = ss_err_set(err, SS_ENOMEM, "no memory for conv factors");
            goto done;
        }
        for (j = 0; j < r; j++)
            for (i = 0; i < I * kh; i++)
                w1[j * I * kh + i] = Asp[i * r + j];
        for (o = 0; o < O; o++)
            for (j = 0; j < r; j++)
                for (x = 0; x < kw; x++)
                    w2[(o * r + j) * kw + x] = Bsp[j * O * kw + o * kw + x];
        /* vertical: kh x 1, the rows' stride, pads and dilation */
        wd[0] = r;
        wd[1] = I;
        wd[2] = kh;
        wd[3] = 1;
        s1[0] = st[0];
        s1[1] = 1;
        p1[0] = pads[0];
        p1[1] = 0;
        p1[2] = pads[2];
        p1[3] = 0;
        d1[0] = dil[0];
        d1[1] = 1;
        if ((rc = add_conv(g, name, in_x, mid, -1, wd, w1, s1, p1, d1,
                           err)) < 0)
            goto done;
        /* horizontal: 1 x kw, the columns' */
        wd[0] = O;
        wd[1] = r;
        wd[2] = 1;
        wd[3] = kw;
        s1[0] = 1;
        s1[1] = st[1];
        p1[0] = 0;
        p1[1] = pads[1];
        p1[2] = 0;
        p1[3] = pads[3];
        d1[0] = 1;
        d1[1] = dil[1];
        snprintf(name, sizeof(name), "%s/lowrank_b", base);
        rc = add_conv(g, name, mid, out_y, bias, wd, w2, s1, p1, d1, err);
    } else {
        int64_t one[2] = { 1, 1 }, zero[4] = { 0, 0, 0, 0 };

        wd[0] = r_ch;
        wd[1] = I;
        wd[2] = kh;
        wd[3] = kw;
        if ((rc = add_conv(g, name, in_x, mid, -1, wd, Bch, st, pads, dil,
                           err)) < 0)
            goto done;
        wd[0] = O;
        wd[1] = r_ch;
        wd[2] = 1;
        wd[3] = 1;
        snprintf(name, sizeof(name), "%s/lowrank_b", base);
        rc = add_conv(g, name, mid, out_y, bias, wd, Ach, one, zero, one,
                      err);
    }
    if (rc < 0)
        goto done;
    rc = 0;
    json_object_set_new(info, "factorization",
                        json_string(spatial ? "spatial" : "channel"));
    json_object_set_new(info, "rank", json_integer(spatial ? r_sp : r_ch));
    json_object_set_new(info, "macs_per_pixel", json_integer(orig));
    json_object_set_new(info, "macs_per_pixel_after",
                        json_integer(spatial ? c_sp : c_ch));
done:
    ss_free(Ach);
    ss_free(Bch);
    ss_free(Asp);
    ss_free(Bsp);
    ss_free(m);
    ss_free(w1);
    ss_free(w2);
    ss_free(base);
    return rc;
}
