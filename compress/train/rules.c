/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gradient rules: one row per op (the table at the bottom), each a
 * forward emitter and a backward emitter over the builder of build.c.
 * The emitters live by op family in rules_*.c (rules.h maps them); this
 * file holds the helpers they share, the view ops and the table.
 *
 * Conventions.  A forward emitter finds its outputs made and shaped (by
 * the engine's infer) and adds the steps that compute them, saving what
 * its backward reads.  A backward emitter reads the output gradient(s)
 * with ss__tb_grad_have() and, for each input in the row's diff mask that
 * needs a gradient, asks ss__tb_grad() for the target and whether to
 * write or add, and adds the steps.  Matrix products, forward and
 * backward, are oneDNN matmuls on (possibly transposed, by strides)
 * operands: dA = dC B^T, dB = A^T dC.  Conv runs oneDNN's convolution
 * forward (training), backward-data and backward-weights on run-time
 * weights.
 *
 * THREADS: [worker], build time only.
 */

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"
#include "compress/train/rules.h"
#include "engine/ops/ops.h"

/* ---- broadcasting helpers ------------------------------------------------ */

/* aux for k_binary / k_binary_bwd / k_reduce / k_expand. */
int
ss__r_bc_aux(ss__step_t *s, int fnd, const int64_t *fdims, int n,
             const int *nd, const int64_t *const *dims, ss_err_t *err)
{
    ss__bc_t *bc = ss_malloc(sizeof(*bc));

    if (bc == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a step");
    ss__bc_init(bc, fnd, fdims, n, nd, dims);
    s->aux = bc;
    return 0;
}

/* A one-input step between the full shape fdims and another shape
 * odims (numpy-aligned to it): k_reduce sums src (full) into dst (odims),
 * k_expand broadcasts src (odims) to dst (full); both times scale. */
static int
emit_bc1(ss__tb_t *b, const ss_node_t *n, ss__kern_fn fn, const char *what,
         int src, int dst, int fnd, const int64_t *fdims, int ond,
         const int64_t *odims, float scale, int acc, ss_err_t *err)
{
    ss__step_t s;
    int nd[2] = { fnd, ond };
    const int64_t *dd[2] = { fdims, odims };
    int rc;

    step_init(&s, fn, what, n);
    s.n_in = 1;
    s.in[0] = src;
    s.n_out = 1;
    s.out[0] = dst;
    s.acc = acc ? 1 : 0;
    s.f[0] = scale;
    if ((rc = ss__r_bc_aux(&s, fnd, fdims, 2, nd, dd, err)) < 0)
        return rc;
    return ss__step_add(b, &s, err);
}

/* Sums src (full shape fdims) into dst of shape ddims, times scale. */
int
ss__r_reduce(ss__tb_t *b, const ss_node_t *n, int src, int fnd,
             const int64_t *fdims, int dst, int dnd, const int64_t *ddims,
             float scale, int acc, ss_err_t *err)
{
    return emit_bc1(b, n, ss__k_reduce, "reduce", src, dst, fnd, fdims, dnd,
                    ddims, scale, acc, err);
}

/* dst (full shape fdims) = broadcast(src of shape sdims) * scale. */
int
ss__r_expand(ss__tb_t *b, const ss_node_t *n, int src, int snd,
             const int64_t *sdims, int dst, int fnd, const int64_t *fdims,
             float scale, int acc, ss_err_t *err)
{
    return emit_bc1(b, n, ss__k_expand, "expand", src, dst, fnd, fdims, snd,
                    sdims, scale, acc, err);
}

int
ss__r_copy(ss__tb_t *b, const ss_node_t *n, int src, int dst, int acc,
           ss_err_t *err)
{
    ss__step_t s;

    step_init(&s, V(b, dst)->act16 ? ss__k_copy16 : ss__k_copy, "copy", n);
    s.n_in = 1;
    s.in[0] = src;
    s.n_out = 1;
    s.out[0] = dst;
    s.acc = acc ? 1 : 0;
    return ss__step_add(b, &s, err);
}

/* The start of a backward that writes input 0's gradient from output
 * 0's: 1 with *gy, *gx and *acc set, or 0 when dy does not exist or x
 * needs no gradient (nothing to emit), or a negative code. */
int
ss__r_dx_target(ss__tb_t *b, const ss_node_t *n, int *gy, int *gx, int *acc,
                ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0);

    *gy = ss__tb_grad_have(b, ss__tb_out(b, n, 0));
    if (*gy < 0 || !ss__tb_needs(b, x))
        return 0;
    if ((*gx = ss__tb_grad(b, x, acc, err)) < 0)
        return *gx;
    return 1;
}

/* A step reading dy as in[0] and writing (acc: adding) dx as out[0]. */
void
ss__r_dx_step(ss__step_t *s, ss__kern_fn fn, const char *what,
              const ss_node_t *n, int gy, int gx, int acc)
{
    step_init(s, fn, what, n);
    s->n_in = 1;
    s->in[0] = gy;
    s->n_out = 1;
    s->out[0] = gx;
    s->acc = acc ? 1 : 0;
}

/* ---- bf16 through shape ops ----------------------------------------- */

/* Mixed precision: the ops that move elements without arithmetic
 * between attention's products -- the qkv Linear's Reshape, Transpose
 * and per-head Gathers, K's Transpose, the heads' Transpose and Reshape
 * into the output Linear -- carry bf16 activations as they are (half
 * the bytes moved, forward and backward) where every path from their
 * output ends at a MatMul operand: the products read them as they are,
 * so the bf16 copies of q, k^T, v, the heads and of their gradients go.
 * The values are rounded where the producing product writes them, as
 * those copies rounded them, so the numbers stay the same but for sums
 * of several gradient contributions (rounded per addition, act16.c). */
static bool
passes_bf16(const ss_node_t *m, int k)
{
    static const char *const ops[] = { "Transpose", "Gather", "Reshape",
                                       "Flatten", "Squeeze", "Unsqueeze",
                                       "Identity" };

    if (k != 0 || m->n_outputs != 1)
        return false;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(m->op_type, ops[i]) == 0)
            return true;
    return false;
}

bool
ss__r_bf16_to_products(const ss__tb_t *b, int y, int depth)
{
    const ss_graph_t *g = b->g;
    bool any = false;
    int i, k;

    if (y < 0 || depth > 8)
        return false;
    for (i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == y)
            return false;
    for (i = 0; i < g->n_nodes; i++) {
        const ss_node_t *m = ss__tb_node(b, i);

        if (b->need != NULL && !b->need[i])
            continue;
        for (k = 0; k < m->n_inputs; k++) {
            if (m->inputs[k] != y)
                continue;
            if (strcmp(m->op_type, "Shape") == 0 ||
                strcmp(m->op_type, "Size") == 0)
                continue;       /* folded at build time: dims only */
            any = true;
            if (k < 2 && strcmp(m->op_type, "MatMul") == 0)
                continue;
            if (!passes_bf16(m, k) ||
                !ss__r_bf16_to_products(b, m->outputs[0], depth + 1))
                return false;
        }
    }
    return any;
}

bool
ss__r_takes_bf16(const ss__tb_t *b, const ss_node_t *n, const ss__rule_t *r)
{
    if (r != NULL && (r->flags & SS__R_BF16))
        return true;
    return ss__tb_act16_on(b) && passes_bf16(n, 0) &&
           ss__r_bf16_to_products(b, n->outputs[0], 0);
}

/* The view of a bf16 activation (forward) or gradient is one too. */
static void
view_dtype(ss__tb_t *b, int y, int x)
{
    ss__tv_t *yv = &b->t->tv[y];

    if (!V(b, x)->act16)
        return;
    yv->dtype = SS_DTYPE_BF16;
    yv->bytes = (size_t)yv->numel * 2;
    yv->act16 = 1;
}

/* ---- views ------------------------------------------------------------- */

static int
fwd_view(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);
    ss__tv_t *yv = &b->t->tv[y];

    if (yv->numel != V(b, x)->numel)
        return ss_err_set(err, SS_EINTERNAL, "trainer: node '%s' changes "
                          "the element count", label(n));
    yv->kind = SS__TV_VIEW;
    yv->alias = x;
    view_dtype(b, y, x);
    return 0;
}

/* Whether value x's bytes are a parameter's (its gradient is the flat
 * array's slot, never a view of another gradient). */
bool
ss__r_param_root(const ss__tb_t *b, int x)
{
    while (V(b, x)->kind == SS__TV_VIEW)
        x = V(b, x)->alias;
    return V(b, x)->kind == SS__TV_PARAM;
}

static int
bwd_view(ss__tb_t *b, const ss_node_t *n, ss_err_t *err)
{
    int x = ss__tb_in(b, n, 0), y = ss__tb_out(b, n, 0);
    int gy = ss__tb_grad_have(b, y), gx, acc;

    if (!ss__tb_needs(b, x) || gy < 0)
        return 0;
    if (ss__tb_grad_have(b, x) < 0 && !ss__r_param_root(b, x)) {
        /* nothing wrote dx yet: it is dy's bytes; later contributions
         * add into them (dy has no other reader) */
        if ((gx = ss__tv_view(b, gy, V(b, x)->ndim, V(b, x)->dims, err)) < 0)
            return gx;
        view_dtype(b, gx, gy);
        b->grad[x] = gx;
        return 0;
    }
    if ((gx = ss__tb_grad(b, x, &acc, err)) < 0)
        return gx;
    return ss__r_copy(b, n, gy, gx, acc, err);
}

/* ---- the table ---------------------------------------------------------- */

#define D0 1u
#define D01 3u
#define D012 7u
#define D12 6u
#define DALL (~0u)
#define L SS__R_LAYOUT
#define LB (SS__R_LAYOUT | SS__R_BF16)
#define B SS__R_BF16

static const ss__rule_t rules[] = {
    /* op                 diff  forward            backward           flags */
    { "Add",              D01,  ss__fwd_binary,    ss__bwd_binary,    LB },
    { "Sub",              D01,  ss__fwd_binary,    ss__bwd_binary,    L },
    { "Mul",              D01,  ss__fwd_binary,    ss__bwd_binary,    L },
    { "Div",              D01,  ss__fwd_binary,    ss__bwd_binary,    L },
    { "Pow",              D01,  ss__fwd_binary,    ss__bwd_binary,    L },
    { "Relu",             D0,   ss__fwd_unary,     ss__bwd_unary,     LB },
    { "LeakyRelu",        D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Erf",              D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Sqrt",             D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Tanh",             D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Sigmoid",          D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Exp",              D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Log",              D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Neg",              D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Reciprocal",       D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Abs",              D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Softplus",         D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Gelu",             D0,   ss__fwd_unary,     ss__bwd_unary,     LB },
    { "Clip",             D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "HardSigmoid",      D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "HardSwish",        D0,   ss__fwd_unary,     ss__bwd_unary,     L },
    { "Gemm",             D012, ss__fwd_gemm,      ss__bwd_gemm,      0 },
    { "MatMul",           D012, ss__fwd_matmul,    ss__bwd_matmul,    B },
    { "Conv",             D012, ss__fwd_conv,      ss__bwd_conv,      LB },
    { "Softmax",          D0,   ss__fwd_softmax,   ss__bwd_softmax,   B },
    { "LogSoftmax",       D0,   ss__fwd_softmax,   ss__bwd_softmax,   B },
    { "LayerNormalization", D012, ss__fwd_layernorm, ss__bwd_layernorm, 0 },
    { "BatchNormalization", D012, ss__fwd_batchnorm, ss__bwd_batchnorm, LB },
    { "MaxPool",          D0,   ss__fwd_pool,      ss__bwd_pool,      LB },
    { "AveragePool",      D0,   ss__fwd_pool,      ss__bwd_pool,      LB },
    { "GlobalAveragePool", D0, ss__fwd_pool,      ss__bwd_pool,      LB },
    { "Transpose",        D0,   ss__fwd_transpose, ss__bwd_transpose, 0 },
    { "Gather",           D0,   ss__fwd_gather,    ss__bwd_gather,    0 },
    { "Concat",           DALL, NULL,              ss__bwd_concat,    0 },
    { "Slice",            D0,   NULL,              ss__bwd_slice,     0 },
    { "Pad",              D0,   NULL,              ss__bwd_pad,       0 },
    { "Where",            D12,  NULL,              ss__bwd_where,     0 },
    { "ReduceMean",       D0,   ss__fwd_reduce,    ss__bwd_reduce,    0 },
    { "ReduceSum",        D0,   ss__fwd_reduce,    ss__bwd_reduce,    0 },
    { "Expand",           D0,   ss__fwd_expand,    ss__bwd_expand,    0 },
    { "Reshape",          D0,   fwd_view,          bwd_view,          0 },
    { "Flatten",          D0,   fwd_view,          bwd_view,          0 },
    { "Squeeze",          D0,   fwd_view,          bwd_view,          0 },
    { "Unsqueeze",        D0,   fwd_view,          bwd_view,          0 },
    { "Identity",         D0,   fwd_view,          bwd_view,          0 },
    { "Dropout",          D0,   fwd_view,          bwd_view,          0 },
    /* QAT: straight-through (rules_q.c); forward: the reference kernel */
    { "QuantizeLinear",   D01,  NULL,              ss__bwd_qdq,       0 },
    { "DequantizeLinear", D01,  NULL,              ss__bwd_qdq,       0 },
};
#undef L
#undef LB
#undef B

const ss__rule_t *
ss__rules(int *n)
{
    *n = (int)(sizeof(rules) / sizeof(rules[0]));
    return rules;
}

const ss__rule_t *
ss__rule_find(const char *op)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rules[i].op, op) == 0)
            return &rules[i];
    return NULL;
}
