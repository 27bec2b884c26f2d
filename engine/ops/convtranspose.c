/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ConvTranspose, as a plain C reference kernel: 1-D to 3-D (any spatial
 * rank up to 6), groups, strides, dilations, pads, output_padding,
 * output_shape and auto_pad.
 *
 * DESIGN.  The direct scatter form: every input element, times every
 * kernel tap, adds to output position i * stride - pad_begin + k * dilation
 * when that lands inside the output; the output starts as the bias.
 * Without output_shape the output size is
 *   stride * (in - 1) + output_padding + (kernel - 1) * dilation + 1
 *   - pad_begin - pad_end;
 * with output_shape (or auto_pad SAME_*: in * stride) the total padding
 * follows from it and splits as the spec says (SAME_UPPER: the smaller
 * half first); a negative total pads at the end.  float32 and float64,
 * accumulated in double.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <string.h>

#include "common/alloc.h"

#define MAX_SP SS_OPS_CONVT_MAX_SP

typedef ss__ops_convt_t ct_t;

static int
ints_attr(const ss_node_t *n, const char *name, int count, int64_t dflt,
          int64_t *v, ss_err_t *err)
{
    const int64_t *a;
    int cnt = ss__attr_ints(n, name, &a);

    if (cnt < 0) {
        for (int i = 0; i < count; i++)
            v[i] = dflt;
        return 0;
    }
    if (cnt != count)
        return ss__ops_fail(err, n, "%s has %d values for %d axes", name,
                            cnt, count);
    memcpy(v, a, sizeof(*a) * (size_t)count);
    return 1;
}

int
ss__ops_convt_geom(const ss_node_t *n, const ss_tensor_t *x,
                   const ss_tensor_t *w, ss__ops_convt_t *g, ss_err_t *err)
{
    const char *ap = ss__attr_string(n, "auto_pad", "NOTSET");
    int64_t pads[2 * MAX_SP], op[MAX_SP], os[MAX_SP];
    int rc, has_os;

    memset(g, 0, sizeof(*g));
    g->nsp = x->ndim - 2;
    if (g->nsp < 1 || g->nsp > MAX_SP || w->ndim != x->ndim)
        return ss__ops_fail(err, n, "X and W must have the same rank, 3 to "
                            "%d", MAX_SP + 2);
    g->N = x->dims[0];
    g->C = x->dims[1];
    g->group = ss__attr_int(n, "group", 1);
    if (g->group < 1 || g->C % g->group != 0 || w->dims[0] != g->C)
        return ss__ops_fail(err, n, "W's first dim must be X's channels, a "
                            "multiple of group");
    g->M = w->dims[1] * g->group;
    for (int i = 0; i < g->nsp; i++) {
        g->in[i] = x->dims[2 + i];
        g->k[i] = w->dims[2 + i];
    }
    if ((rc = ints_attr(n, "strides", g->nsp, 1, g->s, err)) < 0
        || (rc = ints_attr(n, "dilations", g->nsp, 1, g->d, err)) < 0
        || (rc = ints_attr(n, "output_padding", g->nsp, 0, op, err)) < 0
        || (rc = ints_attr(n, "pads", 2 * g->nsp, 0, pads, err)) < 0
        || (has_os = ints_attr(n, "output_shape", g->nsp, 0, os, err)) < 0)
        return rc < 0 ? rc : has_os;
    for (int i = 0; i < g->nsp; i++) {
        int64_t full;

        if (g->s[i] < 1 || g->d[i] < 1 || g->s[i] > 4096 || g->d[i] > 4096
            || op[i] < 0 || op[i] >= g->s[i] + g->d[i]
            || pads[i] < 0 || pads[g->nsp + i] < 0 || g->k[i] > 4096)
            return ss__ops_fail(err, n, "bad strides, dilations, pads or "
                                "output_padding on axis %d", i);
        full = g->s[i] * (g->in[i] - 1) + op[i] + (g->k[i] - 1) * g->d[i]
               + 1;
        if (has_os || strcmp(ap, "SAME_UPPER") == 0
            || strcmp(ap, "SAME_LOWER") == 0) {
            int64_t want = has_os ? os[i] : g->in[i] * g->s[i];
            int64_t total = full - want;

            g->out[i] = want;
            if (total <= 0)
                g->pb[i] = 0;
            else if (strcmp(ap, "SAME_UPPER") == 0)
                g->pb[i] = total / 2;
            else
                g->pb[i] = total - total / 2;
        } else if (strcmp(ap, "NOTSET") == 0 || strcmp(ap, "VALID") == 0) {
            bool valid = strcmp(ap, "VALID") == 0;

            g->pb[i] = valid ? 0 : pads[i];
            g->out[i] = full - (valid ? 0 : pads[i] + pads[g->nsp + i]);
        } else {
            return ss__ops_fail(err, n, "auto_pad '%s' is invalid", ap);
        }
        if (g->out[i] < 0 || g->out[i] > SS_OPS_MAX_NUMEL)
            return ss__ops_fail(err, n, "output size %lld on axis %d",
                                (long long)g->out[i], i);
    }
    return 0;
}

static int
infer_convt(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
            ss_tensor_t *out, ss_err_t *err)
{
    int64_t dims[SS_MAX_DIMS];
    ct_t g;
    int rc;

    (void)opset;
    if ((rc = ss__ops_check_inputs(n, in, 2, err)) < 0
        || (rc = ss__ops_convt_geom(n, in[0], in[1], &g, err)) < 0)
        return rc;
    if ((in[0]->dtype != SS_DTYPE_F32 && in[0]->dtype != SS_DTYPE_F64)
        || in[1]->dtype != in[0]->dtype)
        return ss__ops_failc(err, SS_EUNSUPP, n, "ConvTranspose on %s is "
                             "not supported (float32, float64)",
                             ss__ops_dtype_name(in[0]->dtype));
    if (ss__ops_has_input(n, in, 2) && (ss__ops_numel(in[2]) != g.M
                                        || in[2]->dtype != in[0]->dtype))
        return ss__ops_fail(err, n, "B must have %lld elements",
                            (long long)g.M);
    dims[0] = g.N;
    dims[1] = g.M;
    memcpy(&dims[2], g.out, sizeof(int64_t) * (size_t)g.nsp);
    return ss__ops_set_out(n, &out[0], in[0]->dtype, g.nsp + 2, dims, err);
}

static int
run_convt(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *x = in[0], *w = in[1];
    ss_dtype_t t = x->dtype;
    int64_t isz, ksz, osz, cg, mg, cnt;
    double *acc;
    ct_t g;
    int rc;

    (void)opset;
    if ((rc = ss__ops_convt_geom(n, in[0], in[1], &g, err)) < 0)
        return rc;
    isz = ss__ops_prod(g.in, 0, g.nsp);
    ksz = ss__ops_prod(g.k, 0, g.nsp);
    osz = ss__ops_prod(g.out, 0, g.nsp);
    cg = g.C / g.group;
    mg = g.M / g.group;
    cnt = g.N * g.M * osz;
    if ((acc = ss_calloc((size_t)cnt + 1, sizeof(*acc))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for ConvTranspose");
    for (int64_t b = 0; b < g.N; b++)
        for (int64_t c = 0; c < g.C; c++) {
            int64_t gi = c / cg;

            for (int64_t i = 0; i < isz; i++) {
                int64_t ic[MAX_SP], rem = i;
                double xv = ss__dyn_get(x->data, t, (b * g.C + c) * isz + i);

                for (int a = g.nsp - 1; a >= 0; a--) {
                    ic[a] = rem % g.in[a];
                    rem /= g.in[a];
                }
                for (int64_t kk = 0; kk < ksz; kk++) {
                    int64_t o = 0, krem = kk;
                    bool inside = true;
                    int64_t kc[MAX_SP];

                    for (int a = g.nsp - 1; a >= 0; a--) {
                        kc[a] = krem % g.k[a];
                        krem /= g.k[a];
                    }
                    for (int a = 0; a < g.nsp && inside; a++) {
                        int64_t p = ic[a] * g.s[a] - g.pb[a]
                                    + kc[a] * g.d[a];

                        inside = p >= 0 && p < g.out[a];
                        o = o * g.out[a] + p;
                    }
                    if (!inside)
                        continue;
                    for (int64_t m = 0; m < mg; m++) {
                        double wv = ss__dyn_get(w->data, t,
                                                (c * mg + m) * ksz + kk);

                        acc[(b * g.M + gi * mg + m) * osz + o] += xv * wv;
                    }
                }
            }
        }
    for (int64_t e = 0; e < cnt; e++) {
        double bias = ss__ops_has_input(n, in, 2)
                      ? ss__dyn_get(in[2]->data, t, (e / osz) % g.M) : 0;

        ss__dyn_set(out[0].data, t, e, acc[e] + bias);
    }
    ss_free(acc);
    return 0;
}

const ss_op_t ss__ops_convtranspose[] = {
    { "ConvTranspose", infer_convt, run_convt },
    { NULL, NULL, NULL }
};
