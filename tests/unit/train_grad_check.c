/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_train_grad's check: a trainer's analytic gradient against central
 * finite differences (test_train_grad.c says how and why).
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

int
loss_at(ss_train_t *t, const ss_train_batch_t *bt, double *l)
{
    ss_err_t err;

    return ss_train_grads_compute(t, bt, l, &err);
}

int nn_dnn_steps;
int blocked_values;
int bf16_acts, bf16_nn_steps;
int divmul_steps;

void
check(const char *name, ss_graph_t *g, const ss_train_opts_t *base)
{
    check_tol(name, g, base, NULL, 2e-2);
}

void
check_bf16(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
           double tol)
{
    ss_train_opts_t o;

    if (base)
        o = *base;
    else
        ss_train_opts_default(&o);
    o.bf16 = 1;
    check_tol(name, g, base, &o, tol);
}

void
check_tol(const char *name, ss_graph_t *g, const ss_train_opts_t *base,
          const ss_train_opts_t *gopts, double tol)
{
    ss_train_opts_t o;
    ss_train_t *t = NULL, *tb = NULL;
    ss_err_t err;
    ss_tensor_t target;
    ss_train_batch_t bt = { 0 };
    float *w, *grad = NULL, *tg = NULL;
    double l, lp, lm, h = 3e-3, worst = 0, gmax = 0;
    int64_t n;
    const ss_io_info_t *oi;
    int rc;

    if (g == NULL) {
        ok(0, "%s: graph built", name);
        return;
    }
    if (base)
        o = *base;
    else
        ss_train_opts_default(&o);
    o.loss = SS_LOSS_MSE;
    o.threads = 2;
    rc = ss_train_new(g, NULL, &o, &t, &err);
    if (rc == 0 && gopts) {
        ss_train_opts_t ob = *gopts;

        ob.loss = o.loss;
        ob.threads = o.threads;
        rc = ss_train_new(g, NULL, &ob, &tb, &err);
    }
    if (!ok(rc == 0, "%s: trainer built", name)) {
        tap_diag("%s", err.msg);
        ss_train_free(t);
        ss_graph_free(g);
        return;
    }
    nn_dnn_steps = blocked_values = bf16_acts = bf16_nn_steps = 0;
    divmul_steps = 0;
    for (int i = 0; i < t->n_steps; i++)
        divmul_steps += t->steps[i].node &&
                        (strcmp(t->steps[i].node->op_type, "Div") == 0 ||
                         strcmp(t->steps[i].node->op_type, "Mul") == 0);
    for (int i = 0; i < t->n_tv; i++)
        blocked_values += t->tv[i].lay == SS_DNN_BLOCKED;
    if (tb) {
        bf16_acts = ss_train_bf16_acts(tb);
        for (int i = 0; i < tb->n_steps; i++) {
            const ss__step_t *st = &tb->steps[i];

            bf16_nn_steps += (st->fn == ss__k_dnn_x ||
                              st->fn == ss__k_bn_dnn ||
                              st->fn == ss__k_bn_dnn_bwd ||
                              (st->fn == ss__k_dnn && st->node &&
                               strcmp(st->node->op_type, "Add") == 0)) &&
                             tb->tv[st->in[0]].dtype == SS_DTYPE_BF16;
        }
    }
    for (int i = 0; i < t->n_steps; i++)
        nn_dnn_steps += t->steps[i].fn == ss__k_dnn_x ||
                        t->steps[i].fn == ss__k_bn_dnn ||
                        t->steps[i].fn == ss__k_bn_dnn_bwd;
    oi = ss_graph_output(g, 0);
    memset(&target, 0, sizeof(target));
    target.dtype = SS_DTYPE_F32;
    {
        const ss__tv_t *ov = &t->tv[t->out_tv];

        target.ndim = ov->ndim;
        memcpy(target.dims, ov->dims, sizeof(target.dims));
        tg = ss_malloc((size_t)ov->numel * sizeof(float) + 4);
        for (int64_t i = 0; i < ov->numel; i++)
            tg[i] = (float)(gb_urand() * 2 - 1);
    }
    (void)oi;
    target.data = tg;
    bt.teacher = &target;
    n = ss_train_flat_size(t);
    grad = ss_malloc((size_t)n * sizeof(float) + 4);
    rc = loss_at(tb ? tb : t, &bt, &l);
    memcpy(grad, ss_train_grads(tb ? tb : t), (size_t)n * sizeof(float));
    w = ss_train_params(t);
    for (int p = 0; p < ss_train_num_params(t) && rc == 0; p++) {
        ss_train_param_info_t pi;

        ss_train_param(t, p, &pi);
        for (int64_t i = pi.offset; i < pi.offset + pi.numel; i++) {
            float keep = w[i];
            double fd, d;

            w[i] = keep + (float)h;
            rc |= loss_at(t, &bt, &lp);
            w[i] = keep - (float)h;
            rc |= loss_at(t, &bt, &lm);
            w[i] = keep;
            fd = (lp - lm) / (2 * h);
            d = fabs(fd - grad[i]);
            if (fabs(fd) > gmax)
                gmax = fabs(fd);
            if (d > worst)
                worst = d;
        }
    }
    ok(rc == 0 && ss_train_num_params(t) > 0 && gmax > 0 &&
       worst <= tol * gmax + 1e-4,
       "%s: gradient matches finite differences within %.0e (max err "
       "%.2e, max |g| %.2e, %d params)", name, tol, worst, gmax,
       ss_train_num_params(t));
    ss_free(grad);
    ss_free(tg);
    ss_train_free(tb);
    ss_train_free(t);
    ss_graph_free(g);
}
