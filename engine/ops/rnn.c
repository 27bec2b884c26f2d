/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The recurrent ops RNN, GRU and LSTM, as plain C reference kernels:
 * forward, reverse and bidirectional, sequence_lens, initial states,
 * biases, LSTM peepholes and input_forget, GRU linear_before_reset, clip,
 * layout 0 and 1, activations Sigmoid, Tanh and Relu.
 *
 * DESIGN.  The equations of the ONNX spec, step by step in double: for
 * each direction, batch row and time step (reverse walks each row's own
 * sequence length backwards), the gates are X_t W^T + H_{t-1} R^T plus
 * the biases (and peepholes); steps past a row's length leave its state
 * alone and write zeros to Y.  Gate order as in the spec: GRU z, r, h;
 * LSTM i, o, f, c.  float32 and float64.
 *
 * THREADS: [any]; no state.
 */
#include "engine/ops/dyn.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"

typedef enum { K_RNN, K_GRU, K_LSTM } rkind_t;
typedef enum { A_SIGMOID, A_TANH, A_RELU } ract_t;

typedef struct {
    rkind_t kind;
    int gates, dirs, layout;
    int64_t seq, batch, in, hid;
    ract_t act[6];
    double clip;
    bool lbr, input_forget;
} rgeo_t;

static int
parse(const ss_node_t *n, const ss_tensor_t *const *in, rgeo_t *g,
      ss_err_t *err)
{
    const char *dir = ss__attr_string(n, "direction", "forward");
    int nact = 0, rc;
    const ss_attr_t *acts = ss__attr_find(n, "activations");
    static const ract_t dflt[3][3] = {
        { A_TANH }, { A_SIGMOID, A_TANH }, { A_SIGMOID, A_TANH, A_TANH }
    };

    memset(g, 0, sizeof(*g));
    g->kind = strcmp(n->op_type, "GRU") == 0 ? K_GRU
              : strcmp(n->op_type, "LSTM") == 0 ? K_LSTM : K_RNN;
    g->gates = g->kind == K_RNN ? 1 : g->kind == K_GRU ? 3 : 4;
    nact = g->kind == K_RNN ? 1 : g->kind == K_GRU ? 2 : 3;
    if ((rc = ss__ops_check_inputs(n, in, 3, err)) < 0)
        return rc;
    g->dirs = strcmp(dir, "bidirectional") == 0 ? 2 : 1;
    if (g->dirs == 1 && strcmp(dir, "forward") != 0
        && strcmp(dir, "reverse") != 0)
        return ss__ops_fail(err, n, "direction '%s' is invalid", dir);
    g->layout = (int)ss__attr_int(n, "layout", 0);
    g->hid = ss__attr_int(n, "hidden_size", 0);
    g->clip = ss__attr_float(n, "clip", 0.0f);
    g->lbr = ss__attr_int(n, "linear_before_reset", 0) != 0;
    g->input_forget = ss__attr_int(n, "input_forget", 0) != 0;
    if (in[0]->ndim != 3 || in[1]->ndim != 3 || in[2]->ndim != 3)
        return ss__ops_fail(err, n, "X, W and R must have rank 3");
    g->seq = in[0]->dims[g->layout ? 1 : 0];
    g->batch = in[0]->dims[g->layout ? 0 : 1];
    g->in = in[0]->dims[2];
    if (g->hid <= 0)
        g->hid = in[2]->dims[2];
    if (in[1]->dims[0] != g->dirs || in[1]->dims[1] != g->gates * g->hid
        || in[1]->dims[2] != g->in || in[2]->dims[0] != g->dirs
        || in[2]->dims[1] != g->gates * g->hid || in[2]->dims[2] != g->hid)
        return ss__ops_fail(err, n, "W or R has the wrong shape");
    if (ss__ops_has_input(n, in, 3)
        && ss__ops_numel(in[3]) != g->dirs * 2 * g->gates * g->hid)
        return ss__ops_fail(err, n, "B has the wrong shape");
    if (ss__ops_has_input(n, in, 4) && (ss__ops_numel(in[4]) != g->batch
                                        || !ss__ops_is_int(in[4]->dtype)))
        return ss__ops_fail(err, n, "sequence_lens must be %lld integers",
                            (long long)g->batch);
    for (int k = 5; k <= 6; k++)
        if (ss__ops_has_input(n, in, k) && (k == 5 || g->kind == K_LSTM)
            && ss__ops_numel(in[k]) != g->dirs * g->batch * g->hid)
            return ss__ops_fail(err, n, "initial state %d has the wrong "
                                "shape", k);
    if (g->kind == K_LSTM && ss__ops_has_input(n, in, 7)
        && ss__ops_numel(in[7]) != g->dirs * 3 * g->hid)
        return ss__ops_fail(err, n, "P has the wrong shape");
    for (int i = 0; i < nact * g->dirs; i++)
        g->act[i] = dflt[g->kind][i % nact];
    if (acts != NULL) {
        if (acts->type != SS_ATTR_STRINGS || acts->n != nact * g->dirs)
            return ss__ops_fail(err, n, "activations must list %d names",
                                nact * g->dirs);
        for (int i = 0; i < acts->n; i++) {
            const char *a = acts->strings[i];

            if (strcmp(a, "Sigmoid") == 0)
                g->act[i] = A_SIGMOID;
            else if (strcmp(a, "Tanh") == 0)
                g->act[i] = A_TANH;
            else if (strcmp(a, "Relu") == 0)
                g->act[i] = A_RELU;
            else
                return ss__ops_failc(err, SS_EUNSUPP, n, "activation '%s' "
                                     "is not supported (Sigmoid, Tanh, "
                                     "Relu are)", a);
        }
    }
    if (in[0]->dtype != SS_DTYPE_F32 && in[0]->dtype != SS_DTYPE_F64)
        return ss__ops_failc(err, SS_EUNSUPP, n, "%s on %s is not "
                             "supported", n->op_type,
                             ss__ops_dtype_name(in[0]->dtype));
    if (g->layout != 0 && g->layout != 1)
        return ss__ops_fail(err, n, "layout must be 0 or 1");
    return 0;
}

static int
infer_rnn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
          ss_tensor_t *out, ss_err_t *err)
{
    rgeo_t g;
    int64_t y[4], h[3];
    int rc;

    (void)opset;
    if ((rc = parse(n, in, &g, err)) < 0)
        return rc;
    if (g.layout == 0) {
        y[0] = g.seq, y[1] = g.dirs, y[2] = g.batch, y[3] = g.hid;
        h[0] = g.dirs, h[1] = g.batch, h[2] = g.hid;
    } else {
        y[0] = g.batch, y[1] = g.seq, y[2] = g.dirs, y[3] = g.hid;
        h[0] = g.batch, h[1] = g.dirs, h[2] = g.hid;
    }
    for (int k = 0; k < n->n_outputs && k < 3; k++) {
        if (n->outputs[k] < 0 || (k == 2 && g.kind != K_LSTM))
            continue;
        if ((rc = ss__ops_set_out(n, &out[k], in[0]->dtype, k ? 3 : 4,
                                  k ? h : y, err)) < 0)
            return rc;
    }
    return 0;
}

static double
act(ract_t a, double x)
{
    switch (a) {
    case A_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case A_TANH: return tanh(x);
    default: return x > 0 ? x : 0;
    }
}

static double
clipv(const rgeo_t *g, double x)
{
    if (g->clip > 0)
        return x < -g->clip ? -g->clip : x > g->clip ? g->clip : x;
    return x;
}

/* Element (d, b, j) of a state tensor in its layout. */
static int64_t
st_idx(const rgeo_t *g, int d, int64_t b, int64_t j)
{
    return g->layout ? (b * g->dirs + d) * g->hid + j
                     : ((int64_t)d * g->batch + b) * g->hid + j;
}

static int
run_rnn(const ss_node_t *n, int opset, const ss_tensor_t *const *in,
        ss_tensor_t *out, ss_err_t *err)
{
    const ss_tensor_t *X = in[0], *W = in[1], *R = in[2];
    ss_dtype_t t;
    int64_t G, H;
    double *h = NULL, *c = NULL, *hn = NULL, *gt = NULL;
    rgeo_t g;
    int rc;

    (void)opset;
    if ((rc = parse(n, in, &g, err)) < 0)
        return rc;
    t = X->dtype;
    H = g.hid;
    G = g.gates * H;
    h = ss_calloc((size_t)H + 1, sizeof(double));
    c = ss_calloc((size_t)H + 1, sizeof(double));
    hn = ss_calloc((size_t)H + 1, sizeof(double));
    gt = ss_calloc((size_t)G + 1, sizeof(double));
    if (h == NULL || c == NULL || hn == NULL || gt == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %s", n->op_type);
        goto done;
    }
    if (ss__ops_want_output(n, out, 0))
        memset(out[0].data, 0, (size_t)ss__ops_numel(&out[0])
                               * ss__ops_dtype_size(t));
    for (int d = 0; d < g.dirs; d++) {
        bool rev = g.dirs == 2 ? d == 1
                   : strcmp(ss__attr_string(n, "direction", "forward"),
                            "reverse") == 0;
        const ract_t *fa = &g.act[d * (g.kind == K_RNN ? 1
                                      : g.kind == K_GRU ? 2 : 3)];

        for (int64_t b = 0; b < g.batch; b++) {
            int64_t len = ss__ops_has_input(n, in, 4)
                          ? ss__dyn_geti(in[4]->data, in[4]->dtype, b)
                          : g.seq;

            if (len < 0 || len > g.seq) {
                rc = ss__ops_fail(err, n, "sequence_lens[%lld] = %lld",
                                  (long long)b, (long long)len);
                goto done;
            }
            for (int64_t j = 0; j < H; j++) {
                h[j] = ss__ops_has_input(n, in, 5)
                       ? ss__dyn_get(in[5]->data, t, st_idx(&g, d, b, j))
                       : 0;
                c[j] = g.kind == K_LSTM && ss__ops_has_input(n, in, 6)
                       ? ss__dyn_get(in[6]->data, t, st_idx(&g, d, b, j))
                       : 0;
            }
            for (int64_t s = 0; s < len; s++) {
                int64_t ts = rev ? len - 1 - s : s;
                int64_t xo = g.layout ? (b * g.seq + ts) * g.in
                                      : (ts * g.batch + b) * g.in;

                /* gates = X_t W^T + Wb (+ H R^T + Rb, except GRU's h) */
                for (int64_t q = 0; q < G; q++) {
                    double v = 0;

                    for (int64_t k = 0; k < g.in; k++)
                        v += ss__dyn_get(X->data, t, xo + k)
                             * ss__dyn_get(W->data, t,
                                           ((int64_t)d * G + q) * g.in + k);
                    if (ss__ops_has_input(n, in, 3))
                        v += ss__dyn_get(in[3]->data, t,
                                         (int64_t)d * 2 * G + q);
                    gt[q] = v;
                }
                for (int64_t q = 0; q < G; q++) {
                    bool gru_h = g.kind == K_GRU && q >= 2 * H;
                    double rv = 0, rb = ss__ops_has_input(n, in, 3)
                                ? ss__dyn_get(in[3]->data, t,
                                              (int64_t)d * 2 * G + G + q)
                                : 0;

                    for (int64_t k = 0; k < H; k++) {
                        double hk = h[k];

                        if (gru_h && !g.lbr)    /* (r . H) R_h^T */
                            hk *= act(fa[0], clipv(&g, gt[H + k]));
                        rv += hk * ss__dyn_get(R->data, t,
                                               ((int64_t)d * G + q) * H + k);
                    }
                    if (gru_h && g.lbr)
                        rv = act(fa[0], clipv(&g, gt[H + q - 2 * H]))
                             * (rv + rb);
                    else
                        rv += rb;
                    gt[q] += rv;
                }
                for (int64_t j = 0; j < H; j++) {
                    double hv;

                    if (g.kind == K_RNN) {
                        hv = act(fa[0], clipv(&g, gt[j]));
                    } else if (g.kind == K_GRU) {
                        double z = act(fa[0], clipv(&g, gt[j]));
                        double hh = act(fa[1], clipv(&g, gt[2 * H + j]));

                        hv = (1 - z) * hh + z * h[j];
                    } else {
                        const ss_tensor_t *P = ss__ops_has_input(n, in, 7)
                                               ? in[7] : NULL;
                        double pi = P ? ss__dyn_get(P->data, t,
                                                    d * 3 * H + j) : 0;
                        double po = P ? ss__dyn_get(P->data, t,
                                                    d * 3 * H + H + j) : 0;
                        double pf = P ? ss__dyn_get(P->data, t,
                                                    d * 3 * H + 2 * H + j)
                                      : 0;
                        double ig = act(fa[0], clipv(&g, gt[j] + pi * c[j]));
                        double fg = g.input_forget ? 1 - ig
                                    : act(fa[0], clipv(&g, gt[2 * H + j]
                                                       + pf * c[j]));
                        double cc = act(fa[1], clipv(&g, gt[3 * H + j]));
                        double og;

                        c[j] = fg * c[j] + ig * cc;
                        og = act(fa[0], clipv(&g, gt[H + j] + po * c[j]));
                        hv = og * act(fa[2], c[j]);
                    }
                    hn[j] = hv;
                }
                memcpy(h, hn, sizeof(double) * (size_t)H);
                if (ss__ops_want_output(n, out, 0))
                    for (int64_t j = 0; j < H; j++) {
                        int64_t yo = g.layout
                            ? ((b * g.seq + ts) * g.dirs + d) * H + j
                            : ((ts * g.dirs + d) * g.batch + b) * H + j;

                        ss__dyn_set(out[0].data, t, yo, h[j]);
                    }
            }
            for (int64_t j = 0; j < H; j++) {
                if (ss__ops_want_output(n, out, 1))
                    ss__dyn_set(out[1].data, t, st_idx(&g, d, b, j), h[j]);
                if (g.kind == K_LSTM && ss__ops_want_output(n, out, 2))
                    ss__dyn_set(out[2].data, t, st_idx(&g, d, b, j), c[j]);
            }
        }
    }
done:
    ss_free(h);
    ss_free(c);
    ss_free(hn);
    ss_free(gt);
    return rc;
}

const ss_op_t ss__ops_rnn[] = {
    { "RNN", infer_rnn, run_rnn },
    { "GRU", infer_rnn, run_rnn },
    { "LSTM", infer_rnn, run_rnn },
    { NULL, NULL, NULL }
};
