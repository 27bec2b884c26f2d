/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GELU written out in element-wise ops, trained as one Gelu step.
 *
 * Why: PyTorch exports nn.GELU() as Div, Erf, Add, Mul, Mul (and
 * approximate='tanh' as nine Mul/Add/Tanh nodes); each ran as its own
 * step forward and backward on the C kernels, libm's erff per element,
 * and they were 30-34% of the MLP and transformer fixtures' steps
 * (docs/training.md).  One Gelu step runs on oneDNN's eltwise gelu_erf /
 * gelu_tanh (nn_dnn.c: forward, and backward from x), f32 or a bf16
 * activation as it comes, in any layout (element by element).
 *
 * DESIGN: before the forward walk, the matcher the inference engine
 * fuses with (engine/ir/gelu_pat.h) looks at every value read by the
 * nodes the loss needs; the constants must be GELU's within 1e-6
 * relative (float32 rounding of the exact ones is < 1e-7), else the
 * nodes stay as they are.  A match becomes a node of the trainer's own
 * (ss__fnode_t: op Gelu, x in, y out, approximate="tanh" for the tanh
 * form) that takes the place of the pattern's last node (b->subst); its
 * other nodes are no longer needed, so neither walk sees them and their
 * values are never made.  The Gelu row of the rule table does the rest,
 * as for an ONNX Gelu node.  opts.nn = C leaves the pattern unfused (the
 * trainer as it was: tests compare the two).
 *
 * Scaled MatMul.  Attention's scores, MatMul(q, k^T) / sqrt(d), were a
 * MatMul and a Div step forward and backward over [N, heads, T, T] (the
 * Div 1.1 ms of a 21 ms transformer step, f32 or bf16); and in mixed
 * precision the Div, an f32 C kernel, kept the scores and their gradient
 * f32, so the gradient was converted for the backward products.  A
 * MatMul whose only reader is a Div by a scalar constant c (or a Mul by
 * one) becomes a fused MatMul node with attribute alpha = 1/c (or c):
 * rules_mat.c runs it as one oneDNN matmul with an eltwise linear
 * post-op, forward and both backward products (dA = alpha dY B^T, dB =
 * alpha A^T dY).  1/c and the division differ by an ulp of f32.
 *
 * THREADS: [worker]; build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "engine/ir/gelu_pat.h"

/* The graph as the matcher sees it: the nodes the loss needs. */
typedef struct gview {
    const ss__tb_t *b;
    const uint8_t *need;
    int *start;         /* CSR of reading nodes per value */
    int *list;
    int loss_out;       /* graph value the loss reads: stays whole */
} gview_t;

static int
gv_readers(const void *ctx, int v, int *r, int max)
{
    const gview_t *w = ctx;

    if (v < 0 || v == w->loss_out)
        return -1;
    return ss_gelu_csr_readers(w->start, w->list, v, r, max);
}

static const char *
gv_op(const void *ctx, int h)
{
    const gview_t *w = ctx;
    const ss_node_t *n = &w->b->g->nodes[h];

    return w->need[h] && n->domain[0] == '\0' && n->n_outputs == 1
               ? n->op_type : NULL;
}

static int
gv_n_in(const void *ctx, int h)
{
    return ((const gview_t *)ctx)->b->g->nodes[h].n_inputs;
}

static int
gv_in(const void *ctx, int h, int i)
{
    const ss_node_t *n = &((const gview_t *)ctx)->b->g->nodes[h];

    return i < n->n_inputs ? n->inputs[i] : -1;
}

static int
gv_out(const void *ctx, int h)
{
    return ((const gview_t *)ctx)->b->g->nodes[h].outputs[0];
}

/* A constant of the trainer (not a parameter, not folded later). */
static int
gv_scalar(const void *ctx, int v, float *c)
{
    const ss__tb_t *b = ((const gview_t *)ctx)->b;
    int id = v >= 0 ? b->vmap[v] : -1;
    const ss_tensor_t *t;

    if (id < 0 || b->t->tv[id].kind != SS__TV_CONST ||
        (t = b->t->tv[id].cdata) == NULL || ss_tensor_numel(t) != 1)
        return 0;
    if (t->dtype == SS_DTYPE_F32)
        *c = *(const float *)t->data;
    else if (t->dtype == SS_DTYPE_F64)
        *c = (float)*(const double *)t->data;
    else
        return 0;
    return 1;
}

/* The readers' index over the needed nodes. */
static int
index_readers(gview_t *w, ss_err_t *err)
{
    const ss_graph_t *g = w->b->g;
    int total = 0, *fill;

    if ((w->start = ss_calloc((size_t)g->n_values + 2, sizeof(int))) ==
        NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the trainer");
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; w->need[i] && k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] >= 0) {
                w->start[g->nodes[i].inputs[k] + 1]++;
                total++;
            }
    for (int v = 0; v < g->n_values; v++)
        w->start[v + 1] += w->start[v];
    if ((w->list = ss_malloc(((size_t)total + 1) * sizeof(int))) == NULL ||
        (fill = ss_malloc(((size_t)g->n_values + 1) * sizeof(int))) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the trainer");
    memcpy(fill, w->start, (size_t)g->n_values * sizeof(int));
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; w->need[i] && k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] >= 0)
                w->list[fill[g->nodes[i].inputs[k]]++] = i;
    ss_free(fill);
    return 0;
}

static char gelu_op[] = "Gelu", gelu_dom[] = "", approx[] = "approximate",
            tanh_s[] = "tanh", matmul_op[] = "MatMul", alpha_s[] = "alpha";

/* The next fused node: op in place of node idx, reading n_in of a, b,
 * c and writing y. */
static ss__fnode_t *
fnode(ss__tr_t *t, int idx, char *op, char *name, int n_in, int a, int b,
      int c, int y)
{
    ss__fnode_t *f = &t->fused[t->n_fused++];

    f->idx = idx;
    f->in[0] = a;
    f->in[1] = b;
    f->in[2] = c;
    f->out[0] = y;
    f->n.name = name;
    f->n.op_type = op;
    f->n.domain = gelu_dom;
    f->n.n_inputs = n_in;
    f->n.inputs = f->in;
    f->n.n_outputs = 1;
    f->n.outputs = f->out;
    return f;
}

/* Node j (needed, not yet fused) scales value x by a scalar constant:
 * *alpha its factor. */
static int
scale_node(const gview_t *w, int j, int x, float *alpha)
{
    const ss_node_t *n = &w->b->g->nodes[j];
    float c;

    if (!w->need[j] || (w->b->subst && w->b->subst[j]) ||
        gv_op(w, j) == NULL || n->n_inputs != 2)
        return 0;
    if (strcmp(n->op_type, "Div") == 0)
        return n->inputs[0] == x && n->inputs[1] != x &&
               gv_scalar(w, n->inputs[1], &c) && c != 0.0f &&
               (*alpha = 1.0f / c, isfinite(*alpha));
    if (strcmp(n->op_type, "Mul") == 0)
        return (n->inputs[0] == x) != (n->inputs[1] == x) &&
               gv_scalar(w, n->inputs[n->inputs[0] == x], &c) &&
               (*alpha = c, 1);
    return 0;
}

/* Node j (needed, not yet fused) adds to x, the output of MatMul node i,
 * a bias: a parameter or constant [N], N the last dim of the MatMul's
 * weight (known: a parameter or constant), so the sum has x's shape.
 * *c: the bias. */
static int
bias_node(const gview_t *w, int j, int i, int x, int *c)
{
    const ss__tb_t *b = w->b;
    const ss_node_t *n = &b->g->nodes[j];
    int wv = b->vmap[b->g->nodes[i].inputs[1]], cv;

    if (!w->need[j] || (b->subst && b->subst[j]) || gv_op(w, j) == NULL ||
        strcmp(n->op_type, "Add") != 0 || n->n_inputs != 2 ||
        (n->inputs[0] == x) == (n->inputs[1] == x))
        return 0;
    *c = n->inputs[n->inputs[0] == x];
    cv = b->vmap[*c];
    if (wv < 0 || cv < 0 || b->t->tv[wv].ndim < 2 ||
        b->t->tv[cv].ndim != 1 ||
        (b->t->tv[cv].kind != SS__TV_PARAM &&
         b->t->tv[cv].kind != SS__TV_CONST) ||
        b->t->tv[cv].dtype != SS_DTYPE_F32 ||
        b->t->tv[cv].dims[0] != b->t->tv[wv].dims[b->t->tv[wv].ndim - 1])
        return 0;
    return 1;
}

/* MatMul node i whose one reader scales it (*alpha its factor, *c -1)
 * or adds a bias to it (*c the bias, *alpha 1): the reader's index,
 * else -1. */
static int
fused_matmul(const gview_t *w, int i, float *alpha, int *c)
{
    const ss_node_t *n = &w->b->g->nodes[i];
    int r[2];

    *alpha = 1.0f;
    *c = -1;
    if (gv_op(w, i) == NULL || strcmp(n->op_type, "MatMul") != 0 ||
        n->n_inputs != 2 || gv_readers(w, n->outputs[0], r, 2) != 1)
        return -1;
    if (scale_node(w, r[0], n->outputs[0], alpha) ||
        bias_node(w, r[0], i, n->outputs[0], c))
        return r[0];
    return -1;
}

int
ss__tb_fuse_gelu(ss__tb_t *b, uint8_t *need, ss_err_t *err)
{
    const ss_graph_t *g = b->g;
    ss__tr_t *t = b->t;
    gview_t w = { b, need, NULL, NULL, g->outputs[t->o.output] };
    const ss_gelu_view_t view = { &w, gv_readers, gv_op, gv_n_in, gv_in,
                                  gv_out, gv_scalar, 1e-6 };
    const unsigned kinds = (1u << SS_GELU_ERF) | (1u << SS_GELU_TANH);
    ss_gelu_match_t m;
    int rc = 0, n = 0;

    if (t->o.nn == SS_TRAIN_NN_C)
        return 0;
    if ((rc = index_readers(&w, err)) < 0 ||
        (b->subst = ss_calloc((size_t)g->n_nodes + 1, sizeof(*b->subst))) ==
            NULL) {
        rc = rc < 0 ? rc : ss_err_set(err, SS_ENOMEM, "no memory for the "
                                      "trainer");
        goto done;
    }
    /* count, then make the nodes (their array does not move after) */
    for (int pass = 0; pass < 2; pass++) {
        for (int x = 0; x < g->n_values; x++) {
            ss__fnode_t *f;

            if (!ss_gelu_match(&view, x, kinds, &m))
                continue;
            if (pass == 0) {
                n++;
                continue;
            }
            f = fnode(t, m.last, gelu_op, g->nodes[m.last].name, 1, x, -1,
                      -1, m.y);
            if (m.kind == SS_GELU_TANH) {
                f->attr.name = approx;
                f->attr.type = SS_ATTR_STRING;
                f->attr.s = tanh_s;
                f->n.n_attrs = 1;
                f->n.attrs = &f->attr;
            }
            for (int i = 0; i < m.n; i++)
                need[m.nodes[i]] = m.nodes[i] == m.last;
            b->subst[m.last] = &f->n;
        }
        for (int i = 0; i < g->n_nodes; i++) {
            ss__fnode_t *f;
            float alpha;
            int c, j = fused_matmul(&w, i, &alpha, &c);

            if (j < 0)
                continue;
            if (pass == 0) {
                n++;
                continue;
            }
            f = fnode(t, j, matmul_op, g->nodes[i].name, c >= 0 ? 3 : 2,
                      g->nodes[i].inputs[0], g->nodes[i].inputs[1], c,
                      g->nodes[j].outputs[0]);
            if (c < 0) {
                f->attr.name = alpha_s;
                f->attr.type = SS_ATTR_FLOAT;
                f->attr.f = alpha;
                f->n.n_attrs = 1;
                f->n.attrs = &f->attr;
            }
            need[i] = 0;
            b->subst[j] = &f->n;
        }
        if (pass == 0) {
            if (n == 0)
                break;
            if ((t->fused = ss_calloc((size_t)n, sizeof(*t->fused))) ==
                NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory for the "
                                "trainer");
                goto done;
            }
        }
    }
done:
    ss_free(w.start);
    ss_free(w.list);
    return rc;
}

const ss_node_t *
ss__tb_node(const ss__tb_t *b, int i)
{
    return b->subst && b->subst[i] ? b->subst[i] : &b->g->nodes[i];
}
