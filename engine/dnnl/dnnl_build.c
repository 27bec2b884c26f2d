/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, the constructor kit: what every constructor
 * of dnnl_ops.c (f32/bf16) and dnnl_q.c (int8/bf16) shares.  A
 * constructor checks its descriptor, makes the memory descriptors and the
 * attribute, then hands the op descriptor and its argument table to
 * ss__dnn_build_op, which creates the primitive descriptor, registers the
 * arguments in a fixed order (run-time inputs, constants, dst) and lets
 * ss__dnn_finish (dnnl.c) pack the constants and size the scratchpad.
 * ss__dnn_build_end releases what the build held, whatever happened.
 *
 * THREADS: [any]; everything here touches only the object being built.
 */

#include "config.h"

#include <string.h>

#include "engine/dnnl/internal.h"

int
ss__dnn_build_start(ss__dnn_build_t *b, const char *what, ss_err_t *err)
{
    memset(b, 0, sizeof(*b));
    b->what = what;
    return ss__dnn_prim_alloc(what, &b->p, err);
}

int
ss__dnn_build_end(ss__dnn_build_t *b, int rc, ss_dnn_prim_t **out)
{
    if (b->pd)
        dnnl_primitive_desc_destroy(b->pd);
    if (b->attr)
        dnnl_primitive_attr_destroy(b->attr);
    if (rc < 0) {
        ss_dnn_prim_free(b->p);
        b->p = NULL;
    }
    *out = b->p;
    return rc;
}

void
ss__dnn_set_dst(ss_dnn_prim_t *p, int ndim, const int64_t *dims)
{
    p->dst_ndim = ndim;
    memcpy(p->dst_dims, dims, (size_t)ndim * sizeof(*dims));
}

int
ss__dnn_build_op(ss__dnn_build_t *b, const_dnnl_op_desc_t od,
                 const int *in_args, int n_in, const ss__dnn_carg_t *cargs,
                 int n_cargs, int dst_arg, const ss_dnn_postops_t *po,
                 ss_err_t *err)
{
    int i, rc = 0;

    if (od && (rc = ss__dnn_pd(od, b->attr, &b->pd, err, b->what)) < 0)
        goto done;
    for (i = 0; i < n_in; i++)
        if ((rc = ss__dnn_add_arg(b->p, in_args[i], i, err)) < 0)
            goto done;
    for (i = 0; i < n_cargs; i++)
        if ((cargs[i].data || !cargs[i].optional) &&
            (rc = ss__dnn_add_const(b->p, cargs[i].arg, cargs[i].md,
                                    cargs[i].data, err)) < 0)
            goto done;
    if ((rc = ss__dnn_add_arg(b->p, dst_arg, SS__DNN_SRC_OUT, err)) < 0)
        goto done;
    b->p->n_in = n_in;
    rc = ss__dnn_finish(b->p, b->pd, po, n_in, err);
done:
    return rc;
}

int
ss__dnn_md_any(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
               dnnl_data_type_t dt, ss_err_t *err, const char *what)
{
    dnnl_dims_t d;
    int i;

    for (i = 0; i < ndim; i++)
        d[i] = dims[i];
    return ss__dnn_check(dnnl_memory_desc_init_by_tag(md, ndim, d, dt,
                                                      dnnl_format_tag_any),
                         err, "dnnl_memory_desc_init_by_tag", what);
}

static int64_t
or1(int64_t v)
{
    return v == 0 ? 1 : v;
}

/* The output length of a window of k taps dilated by dil. */
static int64_t
out_len(int64_t in, int64_t k, int64_t stride, int64_t dil, int64_t pb,
        int64_t pe)
{
    int64_t span = (k - 1) * dil + 1;

    if (in + pb + pe < span || stride < 1)
        return 0;
    return (in + pb + pe - span) / stride + 1;
}

int
ss__dnn_geom(ss__dnn_geom_t *g, int nsp, const ss_dnn_depth_t *depth,
             int64_t ih, int64_t iw, const int64_t k[2],
             const int64_t stride[2], const int64_t dilation[2],
             const int64_t pad_begin[2], const int64_t pad_end[2],
             ss_err_t *err, const char *what)
{
    int h = 0, o = 0;

    memset(g, 0, sizeof(*g));
    g->nsp = nsp ? nsp : 2;
    if (g->nsp < 1 || g->nsp > 3)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: %d spatial dims",
                          what, nsp);
    if (g->nsp == 3) {      /* depth first */
        g->in[0] = depth->in;
        g->k[0] = depth->k;
        g->stride[0] = depth->stride;
        g->dil[0] = depth->dilation;
        g->pb[0] = depth->pad_begin;
        g->pe[0] = depth->pad_end;
        o = 1;
    }
    if (g->nsp == 1) {      /* W only */
        if (ih != 1 || k[0] != 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: a 1-D window "
                              "with height %lld, kernel %lld", what,
                              (long long)ih, (long long)k[0]);
        h = 1;
    }
    for (int i = h; i < 2; i++, o++) {
        g->in[o] = i ? iw : ih;
        g->k[o] = k[i];
        g->stride[o] = stride[i];
        g->dil[o] = dilation[i];
        g->pb[o] = pad_begin[i];
        g->pe[o] = pad_end[i];
    }
    return 0;
}

int
ss__dnn_window_of(ss__dnn_window_t *w, const ss__dnn_geom_t *g,
                  ss_err_t *err, const char *what)
{
    for (int i = 0; i < g->nsp; i++) {
        w->kernel[i] = g->k[i];
        w->strides[i] = or1(g->stride[i]);
        w->dil[i] = or1(g->dil[i]) - 1;
        w->pl[i] = g->pb[i];
        w->pr[i] = g->pe[i];
        if (w->kernel[i] < 1 || w->strides[i] < 1 || w->dil[i] < 0 ||
            w->pl[i] < 0 || w->pr[i] < 0)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: bad kernel, "
                              "stride, dilation or pad", what);
        w->out[i] = out_len(g->in[i], w->kernel[i], w->strides[i],
                            w->dil[i] + 1, w->pl[i], w->pr[i]);
    }
    return 0;
}

int
ss__dnn_window(ss__dnn_window_t *w, int64_t ih, int64_t iw,
               const int64_t kernel[2], const int64_t stride[2],
               const int64_t dilation[2], const int64_t pad_begin[2],
               const int64_t pad_end[2], ss_err_t *err, const char *what)
{
    ss__dnn_geom_t g;
    int rc;

    if ((rc = ss__dnn_geom(&g, 2, NULL, ih, iw, kernel, stride, dilation,
                           pad_begin, pad_end, err, what)) < 0)
        return rc;
    return ss__dnn_window_of(w, &g, err, what);
}

int
ss__dnn_pool_geom(const ss_dnn_pool_desc_t *d, dnnl_alg_kind_t *alg,
                  ss__dnn_window_t *win, int64_t *dd, ss_err_t *err,
                  const char *what)
{
    ss__dnn_geom_t g;
    int rc;

    switch (d->alg) {
    case SS_DNN_POOL_MAX: *alg = dnnl_pooling_max; break;
    case SS_DNN_POOL_AVG_INCLUDE: *alg = dnnl_pooling_avg_include_padding;
        break;
    case SS_DNN_POOL_AVG_EXCLUDE: *alg = dnnl_pooling_avg_exclude_padding;
        break;
    default:
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: alg %d", what,
                          (int)d->alg);
    }
    if ((rc = ss__dnn_geom(&g, d->nsp, &d->depth, d->ih, d->iw, d->kernel,
                           d->stride, d->dilation, d->pad_begin, d->pad_end,
                           err, what)) < 0 ||
        (rc = ss__dnn_window_of(win, &g, err, what)) < 0)
        return rc;
    dd[0] = d->n;
    dd[1] = d->c;
    for (int i = 0; i < g.nsp; i++)
        dd[2 + i] = win->out[i];
    return 0;
}

int
ss__dnn_conv_wdims(int64_t group, int64_t oc, int64_t ic, int nsp,
                   const int64_t *k, int64_t wd[6])
{
    int64_t g = or1(group);
    int wn = 0;

    if (g > 1)
        wd[wn++] = g;
    wd[wn++] = oc / g;
    wd[wn++] = ic / g;
    for (int i = 0; i < nsp; i++)
        wd[wn++] = k[i];
    return wn;
}

int
ss__dnn_conv_md(ss__dnn_conv_md_t *m, const ss_dnn_conv_desc_t *g,
                const dnnl_data_type_t dt[4], ss_dnn_layout_t src_layout,
                ss_dnn_layout_t dst_layout, int has_bias, ss_err_t *err,
                const char *what)
{
    ss__dnn_geom_t sp;
    int64_t grp = or1(g->group), sd[5], wd[6];
    int wn, rc;

    memset(m, 0, sizeof(*m));
    if ((rc = ss__dnn_geom(&sp, g->nsp, &g->depth, g->ih, g->iw,
                           (const int64_t[2]){ g->kh, g->kw }, g->stride,
                           g->dilation, g->pad_begin, g->pad_end, err,
                           what)) < 0)
        return rc;
    m->nd = sp.nsp + 2;
    sd[0] = m->dd[0] = g->n;
    sd[1] = g->ic;
    m->dd[1] = g->oc;
    memcpy(sd + 2, sp.in, (size_t)sp.nsp * sizeof(*sd));
    for (int i = 0; i < m->nd; i++)
        if (sd[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: input dim %d is "
                              "%lld", what, i, (long long)sd[i]);
    if (grp < 1 || g->oc < 1 || g->ic % grp || g->oc % grp)
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: oc %lld, ic %lld, "
                          "group %lld", what, (long long)g->oc,
                          (long long)g->ic, (long long)grp);
    /* (a kernel dim < 1 is the window's error) */
    if ((rc = ss__dnn_window_of(&m->win, &sp, err, what)) < 0)
        return rc;
    memcpy(m->dd + 2, m->win.out, (size_t)sp.nsp * sizeof(*m->dd));
    for (int i = 2; i < m->nd; i++)
        if (m->dd[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: empty output",
                              what);
    wn = ss__dnn_conv_wdims(grp, g->oc, g->ic, sp.nsp, sp.k, wd);
    if ((rc = ss__dnn_md_layout(&m->src, m->nd, sd, dt[0], src_layout, err,
                                what)) < 0 ||
        (rc = ss__dnn_md_layout(&m->dst, m->nd, m->dd, dt[1], dst_layout,
                                err, what)) < 0 ||
        (rc = ss__dnn_md_any(&m->w, wn, wd, dt[2], err, what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->wuser, wn, wd, dt[3], err, what)) < 0 ||
        (rc = ss__dnn_md_dense(&m->bias, 1, &g->oc, dnnl_f32, err,
                               what)) < 0)
        return rc;
    return ss__dnn_check(dnnl_dilated_convolution_forward_desc_init(
                             &m->od, dnnl_forward_inference,
                             dnnl_convolution_direct, &m->src, &m->w,
                             has_bias ? &m->bias : NULL, &m->dst,
                             m->win.strides, m->win.dil, m->win.pl,
                             m->win.pr),
                         err, "dnnl_dilated_convolution_forward_desc_init",
                         what);
}
