/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oneDNN post-ops: the mapping of our eltwise/binary algorithms onto
 * oneDNN's, the one way a post-op list grows (ss_dnn_postops_add_eltwise),
 * and the primitive attribute built from a list (ss__dnn_attr).
 *
 * Why one way in: oneDNN 2.6's post-op injector keeps one eltwise
 * injector per algorithm, so a second eltwise of an algorithm already in
 * the list would run with the first one's alpha/beta (MatMul * 0.7 * 0.5
 * gave MatMul * 0.49).  ss_dnn_postops_add_eltwise folds a linear after a
 * linear and refuses any other repeat with other parameters, and
 * ss__dnn_attr refuses a list built otherwise.
 *
 * THREADS: [any]; lists are the caller's.
 */

#include <stdint.h>
#include <string.h>

#include "engine/dnnl/internal.h"

dnnl_alg_kind_t
ss__dnn_eltwise_alg(int alg)
{
    switch (alg) {
    case SS_DNN_RELU: return dnnl_eltwise_relu;
    case SS_DNN_GELU_ERF: return dnnl_eltwise_gelu_erf;
    case SS_DNN_GELU_TANH: return dnnl_eltwise_gelu_tanh;
    case SS_DNN_TANH: return dnnl_eltwise_tanh;
    case SS_DNN_LOGISTIC: return dnnl_eltwise_logistic;
    case SS_DNN_CLIP: return dnnl_eltwise_clip_v2;
    case SS_DNN_EXP: return dnnl_eltwise_exp;
    case SS_DNN_LOG: return dnnl_eltwise_log;
    case SS_DNN_SQRT: return dnnl_eltwise_sqrt;
    case SS_DNN_ABS: return dnnl_eltwise_abs;
    case SS_DNN_SQUARE: return dnnl_eltwise_square;
    case SS_DNN_LINEAR: return dnnl_eltwise_linear;
    case SS_DNN_POW: return dnnl_eltwise_pow;
    case SS_DNN_ELU: return dnnl_eltwise_elu;
    case SS_DNN_SWISH: return dnnl_eltwise_swish;
    case SS_DNN_SOFT_RELU: return dnnl_eltwise_soft_relu;
    case SS_DNN_HARDSWISH: return dnnl_eltwise_hardswish;
    case SS_DNN_ROUND: return dnnl_eltwise_round;
    }
    return dnnl_alg_kind_undef;
}

dnnl_alg_kind_t
ss__dnn_binary_alg(int alg)
{
    switch (alg) {
    case SS_DNN_ADD: return dnnl_binary_add;
    case SS_DNN_SUB: return dnnl_binary_sub;
    case SS_DNN_MUL: return dnnl_binary_mul;
    case SS_DNN_DIV: return dnnl_binary_div;
    case SS_DNN_MAX: return dnnl_binary_max;
    case SS_DNN_MIN: return dnnl_binary_min;
    }
    return dnnl_alg_kind_undef;
}

/* The md of a BINARY post-op tensor: its dims right-aligned against dst,
 * leading 1s added, each 1 or dst's. */
static int
po_md(const ss_dnn_postop_t *o, int dst_ndim, const int64_t *dst_dims,
      dnnl_data_type_t dt, ss_dnn_layout_t l, dnnl_memory_desc_t *md,
      ss_err_t *err, const char *what)
{
    int64_t d[SS_DNN_MAX_DIMS];
    int i, off, full = 1;

    if (o->ndim < 1 || o->ndim > dst_ndim)
        return ss_err_set(err, SS_EUNSUPP,
                          "oneDNN %s: binary post-op of %d dims on %d",
                          what, o->ndim, dst_ndim);
    off = dst_ndim - o->ndim;
    for (i = 0; i < dst_ndim; i++) {
        d[i] = i < off ? 1 : o->dims[i - off];
        if (d[i] != 1 && d[i] != dst_dims[i])
            return ss_err_set(err, SS_EUNSUPP,
                              "oneDNN %s: binary post-op dim %d is %lld, "
                              "dst has %lld", what, i, (long long)d[i],
                              (long long)dst_dims[i]);
        full &= d[i] == dst_dims[i];
    }
    return ss__dnn_md_layout(md, dst_ndim, d, dt, full ? l : SS_DNN_PLAIN,
                             err, what);
}

/* Whether eltwise post-ops a and b would share one injector with
 * different parameters (ss_dnn_postops_add_eltwise says why). */
static int
eltwise_clash(const ss_dnn_postop_t *a, const ss_dnn_postop_t *b)
{
    return a->kind == SS_DNN_PO_ELTWISE && b->kind == SS_DNN_PO_ELTWISE
           && a->alg == b->alg && (a->alpha != b->alpha || a->beta != b->beta);
}

int
ss_dnn_postops_add_eltwise(ss_dnn_postops_t *po, int alg, float alpha,
                           float beta)
{
    ss_dnn_postop_t o = { .kind = SS_DNN_PO_ELTWISE, .alg = alg,
                          .alpha = alpha, .beta = beta };
    ss_dnn_postop_t *last = po->n > 0 ? &po->op[po->n - 1] : NULL;
    int n = po->n;

    if (alg == SS_DNN_LINEAR && last != NULL
        && last->kind == SS_DNN_PO_ELTWISE && last->alg == SS_DNN_LINEAR) {
        o.alpha = alpha * last->alpha;
        o.beta = alpha * last->beta + beta;
        n--;                    /* o replaces the last */
    } else if (n >= SS_DNN_MAX_POST) {
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (eltwise_clash(&po->op[i], &o))
            return 0;
    po->op[n] = o;
    po->n = n + 1;
    return 1;
}

int
ss__dnn_attr(const ss_dnn_postops_t *po, int dst_ndim,
             const int64_t *dst_dims, dnnl_data_type_t dt, ss_dnn_layout_t l,
             dnnl_primitive_attr_t *out, ss_err_t *err, const char *what)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_memory_desc_t md;
    dnnl_status_t st;
    int i, rc, n = po ? po->n : 0;

    *out = NULL;
    rc = ss__dnn_check(dnnl_primitive_attr_create(&attr), err,
                       "dnnl_primitive_attr_create", what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_primitive_attr_set_scratchpad_mode(
                           attr, dnnl_scratchpad_mode_user),
                       err, "dnnl_primitive_attr_set_scratchpad_mode", what);
    if (rc < 0 || n == 0)
        goto done;
    if (n < 0 || n > SS_DNN_MAX_POST) {
        rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: %d post-ops", what, n);
        goto done;
    }
    rc = ss__dnn_check(dnnl_post_ops_create(&ops), err,
                       "dnnl_post_ops_create", what);
    if (rc < 0)
        goto done;
    for (i = 0; i < n; i++) {
        const ss_dnn_postop_t *o = &po->op[i];

        for (int j = 0; j < i; j++)
            if (eltwise_clash(&po->op[j], o)) {
                /* a list not built by ss_dnn_postops_add_eltwise */
                rc = ss_err_set(err, SS_EUNSUPP, "oneDNN %s: eltwise post-"
                                "ops %d and %d of one algorithm with other "
                                "parameters (oneDNN 2.6 would run both with "
                                "the first's)", what, j, i);
                goto done;
            }
        switch (o->kind) {
        case SS_DNN_PO_ELTWISE:
            if (ss__dnn_eltwise_alg(o->alg) == dnnl_alg_kind_undef) {
                rc = ss_err_set(err, SS_EINVAL,
                                "oneDNN %s: eltwise post-op %d", what,
                                o->alg);
                goto done;
            }
            st = dnnl_post_ops_append_eltwise(ops, 1.f,
                                              ss__dnn_eltwise_alg(o->alg),
                                              o->alpha, o->beta);
            rc = ss__dnn_check(st, err, "dnnl_post_ops_append_eltwise",
                               what);
            break;
        case SS_DNN_PO_SUM:
            st = dnnl_post_ops_append_sum(ops,
                                          o->alpha == 0.f ? 1.f : o->alpha);
            rc = ss__dnn_check(st, err, "dnnl_post_ops_append_sum", what);
            break;
        case SS_DNN_PO_DW:
            /* the stride in alpha (1 or 2), set by ss_dnn_conv_new */
            st = dnnl_post_ops_append_dw(ops, dt, dt, dt, 3,
                                         (dnnl_dim_t)o->alpha, 1, 0, 0,
                                         NULL);
            rc = ss__dnn_check(st, err, "dnnl_post_ops_append_dw", what);
            break;
        case SS_DNN_PO_BINARY:
            if (ss__dnn_binary_alg(o->alg) == dnnl_alg_kind_undef) {
                rc = ss_err_set(err, SS_EINVAL,
                                "oneDNN %s: binary post-op %d", what,
                                o->alg);
                goto done;
            }
            if ((rc = po_md(o, dst_ndim, dst_dims, dt, l, &md, err, what)) < 0)
                goto done;
            st = dnnl_post_ops_append_binary(ops, ss__dnn_binary_alg(o->alg),
                                             &md);
            rc = ss__dnn_check(st, err, "dnnl_post_ops_append_binary", what);
            break;
        default:
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: post-op kind %d",
                            what, (int)o->kind);
        }
        if (rc < 0)
            goto done;
    }
    rc = ss__dnn_check(dnnl_primitive_attr_set_post_ops(attr, ops), err,
                       "dnnl_primitive_attr_set_post_ops", what);
done:
    if (ops)
        dnnl_post_ops_destroy(ops);
    if (rc < 0 && attr) {
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
    }
    *out = attr;
    return rc;
}
