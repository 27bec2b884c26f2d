/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TRAIN_INTERNAL_H
#define SS_TRAIN_INTERNAL_H

/*
 * What the files of compress/train/ share (see the top of build.c for the
 * design): the training graph's values and steps, the builder the
 * gradient rules emit steps through, the rule table, the kernels.
 *
 * THREADS: a trainer and everything it points to belong to the thread
 * that runs it; kernels use OpenMP inside one call.
 */

#include <stdbool.h>
#include <stdint.h>

#include "compress/train/train.h"
#include "engine/dnnl/dnnl.h"
#include "engine/ir/ir.h"

/* ---- values ------------------------------------------------------------ */

typedef enum {
    SS__TV_CONST = 1,   /* known at build time (initializer, folded) */
    SS__TV_INPUT,       /* a batch tensor, copied in at each step */
    SS__TV_PARAM,       /* in the flat parameter array at offset */
    SS__TV_PGRAD,       /* in the flat gradient array at offset */
    SS__TV_STATE,       /* in the state array (BatchNorm running stats) */
    SS__TV_ARENA,       /* in the arena at offset, planned by liveness */
    SS__TV_VIEW,        /* the bytes of value alias, another shape */
    SS__TV_WBF16        /* bf16 copy of a parameter: in the flat bf16
                         * array at offset, rounded by the update */
} ss__tv_kind_t;

typedef struct ss__tv {
    const char *name;   /* graph value name (borrowed), or NULL */
    ss__tv_kind_t kind;
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    int64_t numel;
    size_t bytes;
    int alias;          /* VIEW: the value whose bytes it uses */
    size_t offset;      /* ARENA: bytes; PARAM/PGRAD/STATE: elements */
    const ss_tensor_t *cdata; /* CONST: borrowed from the graph or owned */
    ss_tensor_t *owned; /* CONST folded here */
    int graph_id;       /* graph value id, or -1 */
    ss_dnn_layout_t lay; /* of a 4-D activation or its gradient: PLAIN
                         * (NCHW), BLOCKED (nChw16c) or NHWC, all the
                         * same bytes (see ss__tb_lay) */
    int act16;          /* an activation kept in bf16 (opts.bf16; its
                         * gradient is bf16 too): see act16.c */
    int first, last;    /* steps that write first / read last */
    void *data;         /* resolved when the build ends */
} ss__tv_t;

/* ---- steps ------------------------------------------------------------- */

typedef struct ss_train ss__tr_t;
typedef struct ss__step ss__step_t;

/* Runs one step.  Returns 0 or a negative code (oneDNN can fail). */
typedef int (*ss__kern_fn)(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);

#define SS__STEP_IN 8
#define SS__STEP_OUT 4

struct ss__step {
    ss__kern_fn fn;
    const char *what;           /* "Relu'", for messages */
    const ss_node_t *node;      /* the forward node it comes from, or NULL */
    int n_in, n_out;
    int in[SS__STEP_IN];        /* value ids, -1 when absent */
    int out[SS__STEP_OUT];
    unsigned acc;               /* bit k: out[k] accumulates (+=) */
    int op;                     /* kernel-specific selector */
    float f[4];                 /* kernel-specific scalars */
    int64_t p[24];              /* kernel-specific integers */
    void *aux;                  /* kernel-specific, owned (ss_free) */
    ss_dnn_prim_t *prim;        /* owned */
    const ss_op_t *ref;         /* engine reference kernel */
    int phase;                  /* 0 forward, 1 loss, 2 backward */
};

/* ---- the trainer ------------------------------------------------------- */

/* A node of the trainer's own standing for several of the graph's (a
 * GELU written out in element-wise ops, a MatMul scaled by a constant:
 * fuse.c). */
typedef struct ss__fnode {
    ss_node_t n;
    int idx;                    /* the graph node it takes the place of */
    int in[3], out[1];
    ss_attr_t attr;
} ss__fnode_t;

typedef struct ss__param {
    int tv;                     /* its PARAM value */
    int grad;                   /* its PGRAD value */
    int graph_id;
} ss__param_t;

struct ss_train {
    const ss_graph_t *g;
    ss_train_opts_t o;
    ss_train_opts_t o0;         /* as given (frozen list borrowed): build
                                 * time only */
    int64_t batch;
    /* values and steps */
    int n_tv, cap_tv;
    ss__tv_t *tv;
    int n_steps, cap_steps;
    ss__step_t *steps;
    int n_fwd;                  /* steps [0, n_fwd) are the forward */
    int n_loss_end;             /* [n_fwd, n_loss_end) the loss */
    /* io */
    int n_inputs;
    int *input_tv;              /* per graph input */
    int out_tv;                 /* the loss output (logits) */
    int labels_tv, teacher_tv;  /* INPUT values, or -1 */
    int loss_tv;                /* f64 scalar */
    /* flat arrays */
    int n_params;
    ss__param_t *params;
    int64_t flat;               /* elements */
    int64_t flat_decay;         /* [0, flat_decay) weights; the rest are
                                 * learned step sizes (no decay, Adam on
                                 * log s) */
    float *w, *gr;              /* parameters, gradients */
    float *m, *v;               /* optimizer state (Sophia: v is h) of
                                 * [shard_lo, shard_hi): m[i - shard_lo] */
    int64_t shard_lo, shard_hi; /* this process's slice (opts.dp), else
                                 * [0, flat) */
    size_t optim_bytes;         /* m and v */
    double dp_seconds;          /* in opts.dp's collectives */
    int shared;                 /* w and gr are sh's (opts.dp's share),
                                 * not ours to free */
    ss_train_shared_t sh;
    float *gsum;                /* the summed gradient of [shard_lo,
                                 * shard_hi) after ss__dp_reduce (in gr or
                                 * the glue's), else NULL: gr + shard_lo */
    uint16_t *wbf;              /* bf16 copies of the parameters (mixed
                                 * precision; NULL when no product reads
                                 * one), kept by the update (the whole
                                 * flat array, like w) */
    int wbf_stale;              /* the caller may have written w
                                 * (ss_train_params): round all again */
    int64_t n_state;
    float *state;               /* BatchNorm running statistics */
    /* memory */
    size_t arena_bytes;
    void *arena;
    size_t scratch_bytes;
    void *scratch;
    ss_dnn_stream_t *stream;
    /* running */
    int64_t step;               /* optimizer steps done */
    uint64_t rng;
    int sample_labels;          /* Sophia: CE on labels drawn from softmax */
    int infer_bn;               /* forward-only: BatchNorm on running stats */
    double last_lr;
    int n_bf16, n_bf16_fallback; /* products in bf16, left in f32 */
    int n_act16;                /* activations kept in bf16 (act16.c) */
    ss__fnode_t *fused;         /* fuse.c's nodes (steps point at them) */
    int n_fused;
    double *kbuf;               /* kernels' scratch (ss__kbuf) */
    size_t kcap;
    /* parallel batch slices (slices.c) */
    int n_slices;               /* 0: the batch runs whole */
    int sl_threads;             /* sliced: T, the OpenMP count to leave */
    struct ss__slices *sl;      /* owned: the slices' trainers, the crew */
    const struct ss_train *parent; /* a slice's trainer: w and wbf are the
                                 * parent's (borrowed), it has no optimizer
                                 * state and never updates */
    char slice_why[192];        /* why the batch runs whole (describe) */
};

/* ---- the builder (build.c) --------------------------------------------- */

typedef struct ss__tb {
    ss__tr_t *t;
    const ss_graph_t *g;
    int *vmap;                  /* graph value id -> value id, -1 */
    int *grad;                  /* value id -> its gradient value, -1 */
    uint8_t *rg;                /* value id -> requires a gradient */
    int cap;                    /* of grad and rg */
    int *bf;                    /* value id -> its bf16 copy, -1 */
    int (*lc)[3];               /* value id -> its copy in each layout
                                 * (ss_dnn_layout_t), -1 */
    int *lc_of;                 /* a layout copy -> the value it copies,
                                 * else -1 (also an f32 copy's) */
    int (*fc)[3];               /* bf16 activation -> its f32 copy in
                                 * each layout, -1 (act16.c) */
    uint8_t *nf32;              /* per node: it reads f32 copies of its
                                 * bf16 activations (ss__tb_in) */
    int plain_only;             /* the rule being emitted is not layout
                                 * aware: ss__tb_in gives plain copies */
    const ss_node_t **subst;    /* per node: the node that runs in its
                                 * place (fuse.c), or NULL */
    const uint8_t *need;        /* per node: the loss needs it (after
                                 * fuse.c) */
    int **saved;                /* per node: values its forward saved */
    int *n_saved;
    int phase;
} ss__tb_t;

/* A new value (ARENA, f32 unless said) of the given shape; returns its id
 * or a negative code. */
int ss__tv_new(ss__tb_t *b, ss_dtype_t dt, int ndim, const int64_t *dims,
               ss_err_t *err);
/* A VIEW of value of with another shape (same element count). */
int ss__tv_view(ss__tb_t *b, int of, int ndim, const int64_t *dims,
                ss_err_t *err);
/* Appends a step (copied; aux and prim taken, also on failure).  Returns
 * its index. */
int ss__step_add(ss__tb_t *b, ss__step_t *s, ss_err_t *err);
/* The forward value of node input / output i (-1 when absent). */
int ss__tb_in(const ss__tb_t *b, const ss_node_t *n, int i);
int ss__tb_out(const ss__tb_t *b, const ss_node_t *n, int i);
/* Whether forward value v needs a gradient. */
bool ss__tb_needs(const ss__tb_t *b, int v);
/* The gradient value of v, made on first use: *acc is 0 for the first
 * contribution (the step writes it) and 1 after (the step adds). */
int ss__tb_grad(ss__tb_t *b, int v, int *acc, ss_err_t *err);
/* The gradient of v when some step produced one, else -1. */
int ss__tb_grad_have(const ss__tb_t *b, int v);
/* The bf16 copy of f32 value v (opts.bf16): made by a conversion step
 * added now, at the first request, then shared by every product that
 * reads v.  A gradient must be complete when asked for (rules ask in
 * their backward, after every reader's). */
int ss__tb_bf16(ss__tb_t *b, int v, ss_err_t *err);
/* Value v (or the value v copies) in layout l: v itself when its bytes
 * are already so (same layout, or one where they coincide: H*W = 1,
 * NHWC with C = 1), else a copy, made by a reorder step added now at
 * the first request and shared by later ones.  A copy needs a gradient
 * when v does; the gradient a rule writes for the copy is reordered
 * into v's when the backward reaches v's producer (ss__tb_merge).  Only
 * f32 values. */
int ss__tb_lay(ss__tb_t *b, int v, ss_dnn_layout_t l, ss_err_t *err);
/* The backward walk calls this for each output v of a node before the
 * node's rule: gradients of v's layout copies (and f32 copies) are added
 * into v's. */
int ss__tb_merge(ss__tb_t *b, int v, ss_err_t *err);
/* A new copy of value v of dtype dt in layout l, made by a step added
 * now; it needs a gradient when v does and maps back to v (lc_of). */
int ss__tb_copy_new(ss__tb_t *b, int v, ss_dtype_t dt, ss_dnn_layout_t l,
                    ss_err_t *err);
/* A step reordering value src into dst (same dims; their layouts and
 * dtypes, f32 <-> bf16 converting); acc: dst += instead (through a
 * temporary). */
int ss__tb_relayout(ss__tb_t *b, int src, int dst, int acc, ss_err_t *err);

/* bf16 activations (act16.c).  In mixed precision a convolution whose
 * primitive runs bf16 writes its output in bf16, and the rules flagged
 * SS__R_BF16 (Conv, BatchNormalization, Relu, Gelu, the poolings, Add) keep
 * such values bf16 where oneDNN takes them; every other reader gets an
 * f32 copy, made once, whose gradient converts back when the backward
 * reaches the producer.  Whether mixed precision keeps activations
 * bf16 (opts.bf16 and not opts.f32_acts). */
bool ss__tb_act16_on(const ss__tb_t *b);
/* Makes forward value v (an f32 activation just made, nothing reads
 * it yet) a bf16 one. */
void ss__tv_set_act16(ss__tb_t *b, int v);
/* The f32 copy of bf16 activation v (or of the value v copies) in layout
 * l, made by a conversion step at the first request; for any other
 * value, ss__tb_lay(v, l). */
int ss__tb_f32(ss__tb_t *b, int v, ss_dnn_layout_t l, ss_err_t *err);
/* Node n reads f32 copies of its bf16 inputs from now on (forward and
 * backward, through ss__tb_in): for a rule that finds it cannot take
 * them (the copies are made now, in its layout or plain). */
int ss__tb_node_f32(ss__tb_t *b, const ss_node_t *n, ss_err_t *err);
/* Elements between channel c and c + 1 in value v's layout, which is
 * [N][C / L][spatial][L] for L = 1 (PLAIN), 16 (BLOCKED), C (NHWC). */
int64_t ss__tv_lanes(const ss__tv_t *v);
/* Whether value v's bytes read the same in layouts l1 and l2. */
bool ss__tv_lay_same(const ss__tv_t *v, int l1, int l2);
/* Saves values for node idx's backward (copied list). */
int ss__tb_save(ss__tb_t *b, int node, const int *vals, int n,
                ss_err_t *err);
int ss__tb_saved(const ss__tb_t *b, int node, int k);
int ss__tb_node_index(const ss__tb_t *b, const ss_node_t *n);
/* Graph node i, or the node that runs in its place (fuse.c). */
const ss_node_t *ss__tb_node(const ss__tb_t *b, int i);
/* Finds GELUs written out in element-wise ops among the nodes the loss
 * needs and makes each one Gelu node, and a MatMul whose one reader
 * divides or multiplies it by a scalar constant one MatMul with an
 * "alpha" (fuse.c): their other nodes are then no longer needed. */
int ss__tb_fuse_gelu(ss__tb_t *b, uint8_t *need, ss_err_t *err);

/* ---- the build's own steps (build_*.c) ----------------------------------- */

/* A node's name for messages, or its op when it has none. */
static inline const char *
label(const ss_node_t *n)
{
    return n->name[0] ? n->name : n->op_type;
}

/* A new value of kind (build_tv.c): its id, or a negative code. */
int ss__tv_add(ss__tb_t *b, ss__tv_kind_t kind, ss_dtype_t dt, int ndim,
               const int64_t *dims, ss_err_t *err);
/* The value whose bytes view v reads (v itself when not a view). */
int ss__tv_root(const ss__tr_t *t, int v);
/* Step 1 (build_params.c): need[i] = 1 for the nodes out_value depends
 * on. */
int ss__tb_mark_needed(const ss_graph_t *g, int out_value, uint8_t *need,
                       ss_err_t *err);
/* Step 2: what each graph value is (a parameter, BatchNorm state, a
 * learned scale or a constant), in cls; then the trainer's values for
 * them, parameters with slots in the flat arrays. */
int ss__tb_classify(const ss_graph_t *g, const ss_train_opts_t *o,
                    const uint8_t *need, uint8_t *cls, ss_err_t *err);
int ss__tb_constants(ss__tb_t *b, const uint8_t *cls, ss_err_t *err);
/* Step 6 (build_mem.c): the flat arrays, the arena plan, the pointers. */
int ss__mem_flat(ss__tr_t *t, ss_err_t *err);
int ss__mem_plan(ss__tr_t *t, ss_err_t *err);
int ss__mem_resolve(ss__tr_t *t, ss_err_t *err);

/* ---- gradient rules (rules.c) ------------------------------------------ */

/*
 * One row per op.  diff: bit i set when input i can get a gradient.  fwd
 * emits the forward steps for node (its outputs exist already, shaped by
 * the engine's infer); NULL means the engine's reference kernel runs it.
 * bwd emits the backward steps; it runs only when some output of the node
 * has a gradient, and must add to the gradient of every input in diff
 * that needs one (ss__tb_needs).
 */
typedef struct ss__rule {
    const char *op;
    unsigned diff;
    int (*fwd)(ss__tb_t *b, const ss_node_t *n, ss_err_t *err);
    int (*bwd)(ss__tb_t *b, const ss_node_t *n, ss_err_t *err);
    unsigned flags;             /* SS__R_* */
} ss__rule_t;

/* The rule takes 4-D activations in any layout (ss__tv_t.lay), sets its
 * outputs' and asks ss__tb_lay for what it needs; a rule without it
 * sees (through ss__tb_in) plain copies of its inputs. */
#define SS__R_LAYOUT 1u
/* The rule may take bf16 activations (ss__tb_act16_on): its emitters
 * see them as they are and call ss__tb_node_f32 where they cannot. */
#define SS__R_BF16 2u

/* Whether node n (rule r, may be NULL) sees bf16 activations as they
 * are: its rule is flagged SS__R_BF16, or it is a shape op (Transpose,
 * Gather, the views) whose output reaches only MatMul operands (rules.c).
 * ss__r_bf16_to_products: whether graph value y reaches only those. */
bool ss__r_takes_bf16(const ss__tb_t *b, const ss_node_t *n,
                      const ss__rule_t *r);
bool ss__r_bf16_to_products(const ss__tb_t *b, int y, int depth);

const ss__rule_t *ss__rule_find(const char *op);
/* QuantizeLinear / DequantizeLinear backward: straight-through
 * (rules_q.c). */
int ss__bwd_qdq(ss__tb_t *b, const ss_node_t *n, ss_err_t *err);
/* The table itself (tests walk it). */
const ss__rule_t *ss__rules(int *n);

/* ---- kernels (kern*.c) ------------------------------------------------- */

/* Data pointer of value v in trainer t. */
#define SS__D(t, v) ((float *)(t)->tv[(v)].data)

/* Scratch of n doubles for a kernel (grows, kept by the trainer). */
double *ss__kbuf(ss__tr_t *t, size_t n);

/* Every kernel has the ss__kern_fn signature; rules name them. */
int ss__k_ref(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_dnn(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_unary(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_unary_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_binary(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_binary_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_copy(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_zero(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_softmax(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_softmax_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_layernorm(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_layernorm_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_batchnorm(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_batchnorm_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_chsum(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_pool(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_pool_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_transpose(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_gather(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_gather_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_index(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_reduce(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_expand(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_loss(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);

/* BatchNorm, Relu and pooling on oneDNN (nn_dnn.c).  The rules build
 * their C step and pass it here: 1 when it now runs a primitive (s->fn,
 * s->prim set), 0 when it stays the C kernel's, or a negative code.
 * Batch-statistics BatchNorm forward (s->in[0] is x) and backward (its
 * forward ran on oneDNN: s->in[4] is the batch variance); Relu and Gelu
 * (ss__k_unary's SS__U_GELU*: any shape, not held to opts.nn's AUTO
 * choice, only C turns it off) forward and backward; pooling forward (*ws: a new value for max pooling's
 * workspace, to add as out[1]) and backward (in[1]: that workspace). */
/* Whether value x can run on oneDNN as opts.nn asks; exact: the op's
 * result does not depend on a summation order (Relu, max pooling). */
int ss__nn_dnn_ok(const ss__tb_t *b, int x, int exact);
int ss__nn_bn(ss__tb_t *b, ss__step_t *s, int bwd, ss_err_t *err);
int ss__nn_eltwise(ss__tb_t *b, ss__step_t *s, int bwd, ss_err_t *err);
int ss__nn_pool(ss__tb_t *b, ss__step_t *s, int bwd, int x, int *ws,
                ss_err_t *err);
int ss__k_dnn_x(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);

/* bf16 activation kernels (act16.c): the copy (acc: y = bf16(y + x),
 * summed in f32), BatchNorm on running statistics of a bf16 x (the
 * forward-only pass), and dst += src over n elements of dtype dt.
 * (ss__k_chsum takes a bf16 gradient as it is.) */
int ss__k_copy16(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_bn16_infer(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
void ss__add_into(void *dst, const void *src, ss_dtype_t dt, int64_t n);
/* Whether the CPU has AVX-512 F, BW and VL (act16.c). */
bool ss__cpu_avx512(void);
int ss__k_bn_dnn(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);
int ss__k_bn_dnn_bwd(ss__tr_t *t, const ss__step_t *s, ss_err_t *err);

/* Unary functions (ss__k_unary op). */
enum {
    SS__U_RELU = 1, SS__U_LEAKY, SS__U_ERF, SS__U_SQRT, SS__U_TANH,
    SS__U_SIGMOID, SS__U_EXP, SS__U_LOG, SS__U_NEG, SS__U_RECIP,
    SS__U_GELU, SS__U_GELU_TANH, SS__U_ABS, SS__U_SOFTPLUS, SS__U_POWC,
    SS__U_IDENT,
    SS__U_CLIP,         /* f[0] min, f[1] max (ReLU6) */
    SS__U_HSIGMOID,     /* clamp(f[0] x + f[1], 0, 1) */
    SS__U_HSWISH        /* x * clamp(x / 6 + 1 / 2, 0, 1) */
};
/* Binary functions (ss__k_binary op). */
enum { SS__B_ADD = 1, SS__B_SUB, SS__B_MUL, SS__B_DIV, SS__B_POW };

/*
 * Broadcasting of up to three operands to one full shape (numpy rules,
 * right-aligned), with adjacent dims merged where every operand walks
 * them alike.  Kernels iterate rows of the last dim.
 */
typedef struct ss__bc {
    int nd;
    int64_t dims[SS_MAX_DIMS];
    int64_t st[3][SS_MAX_DIMS]; /* element strides, 0 on broadcast dims */
    int64_t rows;               /* product of dims[0..nd-1) */
    int64_t numel;
} ss__bc_t;

/* full: the broadcast shape; shapes of n operands (n <= 3). */
void ss__bc_init(ss__bc_t *bc, int fnd, const int64_t *fdims, int n,
                 const int *nd, const int64_t *const *dims);
/* Offsets of row r's first element for each operand. */
void ss__bc_row(const ss__bc_t *bc, int64_t r, int64_t *off);

/* Sums the gradient g (full shape of bc, operand 0) into x (operand 1,
 * maybe broadcast), each term multiplied by fn's factor; see kern.c. */

/* Builds a trainer (build.c); parent non-NULL: one slice's (slices.c). */
int ss__train_build(const ss_graph_t *g, const ss_tensor_t *shapes,
                    const ss_train_opts_t *o, const ss__tr_t *parent,
                    ss__tr_t **out, ss_err_t *err);

/* Parallel batch slices (slices.c): ss__slices_init decides, after t is
 * built, whether its batch runs as slices on a crew (0 either way; why
 * not in t->slice_why) or fails (out of memory); ss__slices_grads is
 * ss_train_grads_compute for a sliced trainer; ss__slices_free frees
 * them. */
int ss__slices_init(ss__tr_t *t, const ss_tensor_t *shapes,
                    const ss_train_opts_t *o, ss_err_t *err);
int ss__slices_grads(ss__tr_t *t, const ss_train_batch_t *b, double *loss,
                     ss_err_t *err);
void ss__slices_free(ss__tr_t *t);
/* Whether t, built for o's threads > 1, is better built for one: its
 * forward products are under SS__ONE_THREAD_MACS multiply-adds (why in
 * t->slice_why).  slices.c. */
int ss__slices_one_thread(ss__tr_t *t, const ss_train_opts_t *o);
/* Multiply-adds of t's forward products (Conv, Gemm, MatMul). */
int64_t ss__train_fwd_macs(const ss__tr_t *t);
/* A sliced trainer's crew and thread count (NULL when not sliced). */
struct ss_crew *ss__slices_crew(const ss__tr_t *t, int *threads);
/* The slices' gradients when their sum was left to the update (no
 * clipping, no learned scales: nothing else reads it first), else NULL;
 * the caller sums them now (the parts are taken). */
const struct ss__gparts *ss__slices_take_parts(ss__tr_t *t);
/* Sums parts the update has not taken into t->gr (ss_train_grads). */
void ss__slices_sum_pending(ss__tr_t *t);
/* ss_train_forward of a sliced trainer: each slice its rows. */
int ss__slices_forward(ss__tr_t *t, const ss_tensor_t *inputs, float *out,
                       ss_err_t *err);
/* Checks a batch, or inputs alone, against the shapes t was built for
 * (train.c). */
int ss__train_check_inputs(const ss__tr_t *t, const ss_tensor_t *in,
                           ss_err_t *err);
int ss__train_check_batch(const ss__tr_t *t, const ss_train_batch_t *b,
                          ss_err_t *err);

/* SS_TRAIN_PROFILE set: prints time per step to stderr (train.c). */
void ss__train_profile_dump(const ss__tr_t *t);

/* The loss (loss.c). */
double ss__loss_value(const ss__tr_t *t);

/* Optimizers (optim.c). */
int ss__optim_alloc(ss__tr_t *t, ss_err_t *err);
int ss__optim_step(ss__tr_t *t, ss_err_t *err);
double ss__sched_lr(const ss_train_opts_t *o, int64_t step);

/* The fused update (update.c): one pass of an optimizer over n elements
 * of the flat arrays, the scalars of this step precomputed. */
enum { SS__UPD_AUTO = 0, SS__UPD_C, SS__UPD_AVX512 };
typedef struct ss__upd {
    int kind;                   /* SS_OPT_* */
    int isa;                    /* SS__UPD_AUTO, or force SS__UPD_C */
    float gscale;               /* gradient clipping's factor; 1: none
                                 * (else g is scaled in place) */
    float decay;                /* 1 - lr wd (AdamW, Sophia) */
    float lr, wd;
    float b1, b2;
    float ssz, bc2s, eps;       /* AdamW: lr / (1 - b1^t), sqrt(1 - b2^t) */
    float mu;                   /* SGD */
    int first, nesterov;        /* SGD */
    float rb;                   /* Sophia: rho * batch */
} ss__upd_t;

/* w, g, m (and v for AdamW/Sophia) are updated in place; wbf (may be
 * NULL) gets the bf16 rounding of every new w.  Blocks of it run on
 * crew with threads (a sliced trainer's), else on OpenMP. */
struct ss_crew;
/* A gradient still in parts (a sliced trainer's, slices.c): its element
 * i is sum over k of share[k] * part[k][i], summed in k order. */
typedef struct ss__gparts {
    int k;
    float *const *part;
    const float *share;
} ss__gparts_t;
/* g[off, off + len) = the parts' sum there. */
void ss__gsum(float *g, const ss__gparts_t *p, int64_t off, int64_t len);
/* gp non-NULL: each block of g is first summed from gp's parts (into g,
 * while it is in cache), then updated. */
void ss__upd_run(const ss__upd_t *u, float *w, float *g, float *m, float *v,
                 uint16_t *wbf, int64_t n, const ss__gparts_t *gp,
                 struct ss_crew *crew, int threads);
/* Which path SS__UPD_AUTO takes on this CPU. */
int ss__upd_isa(void);
/* f32 -> bf16, round to nearest even (NaN stays NaN). */
uint16_t ss__bf16_round(float x);
void ss__bf16_round_n(const float *x, uint16_t *y, int64_t n);
/* Global L2 norm of g[0, n) (double, fixed order). */
double ss__grad_norm(const float *g, int64_t n);
/* Data parallelism (train.c): the gradient's reduce-scatter and the
 * loss sum after a local backward, and the gather after the update of
 * this slice. */
int ss__dp_reduce(ss__tr_t *t, double *loss, ss_err_t *err);
int ss__dp_gather(ss__tr_t *t, ss_err_t *err);
/* The squared norm of the whole gradient from g, this process's summed
 * slice [shard_lo, shard_hi) (a collective). */
int ss__dp_grad_norm2(ss__tr_t *t, const float *g, double *out,
                      ss_err_t *err);

/* bf16 -> f32 (exact). */
static inline float
ss__bf16_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;

    __builtin_memcpy(&f, &u, sizeof(f));
    return f;
}

/* f32 -> bf16, round to nearest even (NaN stays NaN), inline and
 * branch-free so that loops over it vectorize. */
static inline uint16_t
ss__f32_bf16(float f)
{
    uint32_t u, r, q;

    __builtin_memcpy(&u, &f, sizeof(u));
    q = (u >> 16) | 0x40u;
    r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}

/* Random numbers (splitmix64): deterministic from the seed. */
static inline uint64_t
ss__rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline double
ss__rng_unit(uint64_t *s)
{
    return (double)(ss__rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
