/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_PLAN_INT_H
#define SS_ENGINE_PLAN_INT_H

/*
 * engine/plan's one internal header: the compiled plan's internals, the
 * passes that build it, and the helpers those passes share.
 *
 * Plan values mirror the graph's values one to one (same ids; passes may
 * append more), with the concrete shape of this compile and where the
 * bytes live at run time.  Steps are what runs: a reference kernel for
 * one node, a oneDNN primitive for one or several fused nodes, or a copy
 * into a graph output.
 *
 * Who calls whom: each layer calls only the layers below it; no pass
 * calls another pass (plan_fuse.c calls its own anchors); among the
 * helpers, plan_chain.c and plan_layout_rules.c call plan_edit.c, which
 * calls no other file of the folder.
 *
 *   driver   plan.c               compiles a plan: inputs,     ss_plan_new
 *                                 the passes, pruning, arena
 *            plan_node.c          one node: shapes, folding,   ss__plan_node
 *                                 views, reference steps
 *            exec.c               runs a plan                  ss_plan_run
 *   passes   pass_moe.c           sparse mixture of experts    ss__plan_moe
 *                                 (runs first; its step is
 *            moe_step.c           moe_step.c's)                ss__moe_*
 *            plan_deadrows.c      dead rows: only the prefix   ss__plan_dead_rows
 *                                 a Gather/Slice reads
 *            plan_qdq.c           int8 (QDQ patterns)          ss__plan_int8
 *            plan_bf16.c          bf16 compute                 ss__plan_bf16
 *            plan_fuse.c          f32 fusion: the pass,        ss__plan_fuse
 *            plan_fuse_ops.c      its anchors                  ss__fuse_*
 *            plan_fuse_mm.c       (batched MatMul, Softmax:
 *                                 attention in groups)
 *            plan_fuse_move.c     (Transpose as a reorder)
 *            plan_fuse_ln.c
 *            plan_layout.c        reorders between layouts     ss__plan_layout
 *   (walk)   plan_ctrl.c          If and Loop: inlined, or     ss__plan_ctrl
 *            plan_ctrl_scan.c     steps running subgraph plans;
 *                                 Scan (plan_ctrl.h shared)
 *   helpers  plan_chain.c         the fusion toolkit           ss__fz_*
 *            plan_layout_rules.c  layout choices               ss__lay_*
 *            plan_edit.c          steps, values, insertions    ss__plan_*
 *   below    engine/dnnl (oneDNN primitives), engine/ops (reference
 *            kernels), engine/ir (graphs, attributes)
 *
 * THREADS: a plan is built inside ss_plan_new (everything below but the
 * types and ss__plan_root serves that build only) and is immutable once
 * it returns; exec.c reads it from any number of threads.
 */

#include <pthread.h>
#include <string.h>

#include "common/workbuf.h"
#include "engine/dnnl/dnnl.h"
#include "engine/dnnl/dnnl_q.h"
#include "engine/ir/ir.h"

/* Default budget of one plan: any one value, and the folded constants
 * plus arena plus oneDNN scratch together, in bytes.  The environment
 * variable SS_ENGINE_MAX_PLAN_BYTES (a number, optionally suffixed K, M
 * or G) overrides it. */
#define SS_PLAN_MAX_BYTES ((size_t)4 << 30)

typedef enum {
    SS_PV_UNSET = 0,    /* not computed (dead, or inside a fusion) */
    SS_PV_INPUT,        /* the caller's input buffer */
    SS_PV_CONST,        /* data known at compile time */
    SS_PV_ARENA,        /* at offset in the executor's arena */
    SS_PV_OUTPUT        /* the caller's output buffer */
} ss_pv_kind_t;

typedef struct ss_pval {
    ss_tensor_t t;      /* dtype, ndim, dims; data for SS_PV_CONST */
    ss_pv_kind_t kind;
    int index;          /* graph input / output index */
    int alias;          /* shares the bytes of this value (a view), or -1 */
    int owned;          /* t.data belongs to the plan (folded constant) */
    size_t bytes;
    size_t offset;      /* SS_PV_ARENA */
    int n_uses;         /* steps that read it, after fusion */
    ss_dnn_layout_t layout; /* how its producer writes it (plan_layout.c) */
    /* A chunked step's output only the chunked step after it reads
     * (plan_chunkbuf.c): bytes holds one chunk, which every chunk's rows
     * use from its start; t keeps the whole value's shape. */
    int one_chunk;
    /* Computed from a request's values or shapes (a graph input's,
     * through any op): what ss_plan_opts_t's limit holds to when folded. */
    int from_req;
} ss_pval_t;

typedef enum {
    SS_STEP_REF = 1,    /* node's reference kernel */
    SS_STEP_DNN,        /* a oneDNN primitive */
    SS_STEP_COPY,       /* in[0] → out[0], same bytes */
    SS_STEP_MOE,        /* sparse mixture of experts (moe_step.c) */
    SS_STEP_CTRL        /* If / Loop running subgraph plans (plan_ctrl.c) */
} ss_step_kind_t;

#define SS_STEP_MAX_DNN_IN (2 + SS_DNN_MAX_POST)

typedef struct ss_step {
    ss_step_kind_t kind;
    const ss_node_t *node;  /* REF: the node; DNN: the first fused node */
    const ss_op_t *op;
    int n_in, n_out;
    int *in, *out;          /* plan value ids, -1 when omitted */
    ss_dnn_prim_t *prim;    /* DNN */
    struct ss__moe *moe;    /* MOE: in x, scores; out y, workspace */
    struct ss__ctrl *ctrl;  /* CTRL: the subgraphs' plans; in: the node's
                             * inputs, then the outer values they read */
    char what[48];          /* DNN: "Conv+Relu+Add", for logs */
    /* DNN steps of a tapped plan run in row chunks (engine.h, taps;
     * ss__fuse_linear and ss__fuse_tapped_eltwise): prim runs on `chunk`
     * rows at a time of in[0] [rows, in_cols] and out[0] [rows,
     * out_cols], prim_tail on the last rows % chunk (NULL when none).
     * chunk 0: the step runs whole. */
    int64_t chunk, rows, in_cols, out_cols;
    ss_dnn_prim_t *prim_tail;
    /* A chunked batched MatMul's runtime B (in[1]) advances in1_cols
     * elements per row (a batch entry) as in[0] does in_cols
     * (plan_fuse_mm.c: attention chunks); 0: in[1] is not chunked. */
    int64_t in1_cols;
    /* DNN steps of a tapped plan: the activation after a tap, which the
     * tap's fn may apply instead (engine.h: ss_tap_act_t; set by
     * ss__fuse_tapped_eltwise, kept by ss__plan_chunk_bufs where the run
     * can offer it): a ss_tap_act_kind_t, or 0. */
    int tap_act;
    float tap_alpha;
    /* DNN: bit k set when in[k] is read as the bytes it is stored in,
     * whatever its layout (a 2-D Linear adding a 4-D NHWC residual as
     * its [N*H*W, C] rows, plan_fuse_scale.c): the layout pass inserts
     * no reorder for it. */
    unsigned raw_in;
} ss_step_t;

struct ss_plan {
    const ss_graph_t *g;
    int n_vals;
    ss_pval_t *vals;
    int n_steps, cap_steps;
    ss_step_t *steps;
    ss_io_info_t *out_info;
    size_t arena_bytes;
    size_t scratch_bytes;
    size_t max_bytes;       /* the budget (ss_plan_opts_t, else
                             * SS_PLAN_MAX_BYTES) */
    size_t max_out;         /* a graph output's limit (ss_plan_opts_t,
                             * times its rows); 0: none */
    int64_t out_rows;       /* those rows; 0: the limit is whole */
    size_t const_bytes;     /* constants folded so far */
    int max_io;             /* most inputs or outputs of one step */
    int fuse;               /* fusion and oneDNN enabled */
    int n_fused;            /* nodes folded into oneDNN steps */
    /* NaN/Inf: oneDNN's ReLU, clip, max pooling and softmax return the
     * bound for a NaN where PyTorch returns NaN.  A run whose float
     * inputs hold a non-finite value runs `ref` instead: the same graph
     * on reference kernels, which propagate NaN as PyTorch does.  It is
     * compiled on the first such run, under ref_lock (the one mutable
     * part of a plan); ref_rc keeps a failed compile's code. */
    int nan_guard;          /* oneDNN steps and a float input */
    pthread_mutex_t ref_lock;
    struct ss_plan *ref;    /* guarded by ref_lock */
    int ref_rc;             /* guarded by ref_lock */
    /* Taps (engine.h, ss_graph_set_taps), honoured by plans from
     * ss_plan_new_tapped only: per tap of g, the step after which it is
     * called, -1 before the first step (a graph input), or n_steps:
     * never (folded to a constant, or dead). */
    int taps;
    int *tap_after;
    /* What this plan charged to its graph's account (common/memacct.h)
     * besides oneDNN's packed weights, which their buffers charge:
     * credited, and the reference dropped, by ss_plan_free. */
    struct ss_memacct *acct;
    size_t charged;
    /* Batch slices (plan_slice.c): when set, this plan has no steps and
     * runs as slice on slice_rows rows at a time, slice_tail on the rest
     * (NULL when slice_rows divides the batch). */
    struct ss_plan *slice, *slice_tail;
    int64_t slice_rows;
    /* ... or, with slice_prefix set, only the slices' steps (cut short
     * after the last writing value slice_cut) run slice by slice, each
     * writing its rows of slice_cut in this plan's arena, and this
     * plan's own steps (those after it) then run on the whole batch. */
    int slice_prefix;
    int slice_cut;
    /* ... or, with slice_par > 1, the slices (compiled for one thread
     * each) run side by side, one OpenMP thread each (plan_slice.c:
     * parallel slices). */
    int slice_par;
    /* Compiled, and run, on one OpenMP thread (plan_threads.c). */
    int one_thread;
    /* Row independence (plan_indep.c): -1 when the graph computes every
     * row of the batch on its own, else the node that mixes them
     * (g->n_nodes: a graph input or output) and why; not computed for a
     * subgraph's plan (-1 there). */
    int mix_node;
    char mix_why[200];
    /* ... and every value computed from the rows holds them along axis
     * 0, unmerged (what batch slices were measured on). */
    int samples_first;
};

/* Compiles g for input_shapes as ss_plan_new does; fuse = 0 gives
 * reference kernels only (no oneDNN step, no NaN guard).  fuse may carry
 * SS__PLAN_TAPS: honour g's taps (ss_plan_new_tapped).  budget: as
 * ss_plan_opts_t.max_plan_bytes (0: the default; a plan's own slices and
 * twin pass its max_bytes). */
#define SS__PLAN_TAPS 2
/* ... or SS__PLAN_NOSLICE: no batch slices (a slice's own compile). */
#define SS__PLAN_NOSLICE 4
int ss__plan_build(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                   int fuse, size_t budget, ss_plan_t **out, ss_err_t *err);

/* ... or SS__PLAN_SUB: a subgraph's plan (plan_ctrl.c), which its outer
 * plan runs: no NaN guard of its own (the outer plan's guards it). */
#define SS__PLAN_SUB 8
/* A subgraph's plan: as ss__plan_build, and the values outer (the plan
 * running it) holds as constants are constants here too (borrowed: outer
 * outlives it); inputs i with bind[i] (NULL: none) are taken by value as
 * shape-deciding inputs are. */
int ss__plan_build_sub(const ss_graph_t *g, const ss_plan_t *outer,
                       const ss_tensor_t *input_shapes,
                       const unsigned char *bind, int fuse, ss_plan_t **out,
                       ss_err_t *err);
/* The walk's step for one node (plan_node.c): infers, folds, or appends a
 * step; plan_ctrl.c compiles an inlined If branch's nodes through it. */
int ss__plan_node(ss_plan_t *p, const ss_node_t *n, ss_err_t *err);
/* Makes value v a constant the plan owns (data, ss_aligned_alloc'ed, is
 * taken). */
void ss__plan_own_const(ss_plan_t *p, int v, void *data);
/* Appends step s (taken on success; the caller clears it on failure). */
int ss__plan_append(ss_plan_t *p, const ss_step_t *s, ss_err_t *err);
/* A node's name for messages: its name, else its op type. */
const char *ss__plan_label(const ss_node_t *n);
/* A ss_malloc'ed copy of n ids (at least one slot); NULL without memory. */
int *ss__plan_dup_ids(const int *ids, int n);
/* The phases after the passes (plan_finish.c), in the order build calls
 * them: drop unneeded steps and count uses; bind graph outputs to the
 * caller's buffers; give intermediates arena offsets within the budget;
 * place the taps.  ss__plan_dump prints the result (SS_ENGINE_DUMP=1). */
int ss__plan_prune(ss_plan_t *p, ss_err_t *err);
int ss__plan_bind_outputs(ss_plan_t *p, ss_err_t *err);
int ss__plan_arena(ss_plan_t *p, ss_err_t *err);
int ss__plan_taps(ss_plan_t *p, ss_err_t *err);
void ss__plan_dump(const ss_plan_t *p);
/* Sets value v's shape (node n's output) to t's, within the budget. */
int ss__plan_set_shape(ss_plan_t *p, const ss_node_t *n, int v,
                       const ss_tensor_t *t, ss_err_t *err);
/* Node n's output v is value src (Identity): its shape, and its bytes or
 * constant data. */
int ss__plan_alias(ss_plan_t *p, const ss_node_t *n, int v, int src,
                   ss_err_t *err);

/* ---- control flow (plan_ctrl.c) -------------------------------------------
 * If and Loop: an If whose condition is a constant of the plan (folded
 * from shapes, or a shape-deciding input) is replaced by its branch's
 * nodes; otherwise the node becomes a CTRL step running the subgraphs'
 * own plans, compiled here for the shapes they see. */
int ss__plan_ctrl(ss_plan_t *p, const ss_node_t *n, ss_err_t *err);
void ss__ctrl_free(struct ss__ctrl *c);
/* Runs a CTRL step: tab holds every value of the outer plan's run (by
 * value id), sub is a context for the subgraphs' plans, buf a buffer of
 * the outer context the step may grow (rolled with that context's arena:
 * a Loop with outsized carried values once does not keep them).
 * [worker] */
int ss__ctrl_run(const struct ss__ctrl *c, ss_tensor_t *tab,
                 ss_exec_ctx_t *sub, ss_workbuf_t *buf, ss_err_t *err);

/* Batch slices (plan_slice.c): at the end of ss__plan_build, makes p (its
 * steps compiled for shapes, with fuse as given) run as a plan for fewer
 * rows, slice after slice, when its graph computes sample by sample and
 * one sample's activations are small; leaves p whole otherwise.  Only
 * SS_ENOMEM fails. */
int ss__plan_slice(ss_plan_t *p, const ss_tensor_t *shapes, int fuse,
                   ss_err_t *err);
/* Row independence (plan_indep.c): sets p->mix_node, p->mix_why and
 * p->samples_first from p's graph and the shapes and constants of this
 * compile.  0 or SS_ENOMEM. */
int ss__plan_indep(ss_plan_t *p);
/* Small plans on one thread (plan_threads.c): before p's primitives are
 * made, sets p->one_thread and the calling thread's OpenMP count to 1
 * when p's work is small; returns the count to give back to _end (0:
 * none changed). */
int ss__plan_threads_begin(ss_plan_t *p);
void ss__plan_threads_end(int was);

/* The plan for the slice of a sliced plan p's run at row r0 (the slice
 * or the tail), io[0 .. n_inputs + n_outputs - 1] pointed at its rows of
 * inputs and outputs. */
const ss_plan_t *ss__plan_slice_at(const ss_plan_t *p, int64_t r0,
                                   const ss_tensor_t *inputs,
                                   const ss_tensor_t *outputs,
                                   ss_tensor_t *io);
/* Runs a sliced plan (p->slice set) on inputs already checked; parallel
 * slices (p->slice_par) each in a context of their own (exec.c). */
int ss__plan_run_sliced(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                        const ss_tensor_t *inputs, ss_tensor_t *outputs,
                        ss_err_t *err);

/* Sets out[0 .. n - 1] to contexts of c's own for a parallel slices'
 * run (made at the first such run, kept, rolled and freed with c; their
 * streams leave OpenMP's count be).  0 or SS_ENOMEM.  [worker] */
int ss__exec_ctx_parts(ss_exec_ctx_t *c, int n, ss_exec_ctx_t **out,
                       ss_err_t *err);

/* Runs fn(arg, i) for i in 0 .. n - 1, on the calling thread and on up
 * to threads - 1 helper threads that are idle and free to come
 * (crew.c); returns when all have run.  [any] */
void ss__par_run(int n, int threads, void (*fn)(void *arg, int i),
                 void *arg);

/* The value whose bytes v shares (v itself when it is no view). */
static inline int
ss__plan_root(const ss_plan_t *p, int v)
{
    while (p->vals[v].alias >= 0)
        v = p->vals[v].alias;
    return v;
}

/* Value v's tensor: its dtype and shape, and its data when constant. */
static inline const ss_tensor_t *
ss__plan_tensor(const ss_plan_t *p, int v)
{
    return &p->vals[v].t;
}

/* Step st is a reference step of ONNX op `op`. */
static inline int
ss__plan_is_op(const ss_step_t *st, const char *op)
{
    return st->kind == SS_STEP_REF && strcmp(st->node->op_type, op) == 0;
}

/* ---- the passes: ss_plan_new (plan.c) runs them in this order -------------
 * Each returns 0 with a valid plan (what it could not do stays as it
 * was) or a negative code that stops the compile.  SS_ENGINE_NO_FUSION=1
 * skips them all. */

/* Values a Gather or Slice reads only a prefix of are computed only for
 * that prefix (plan_deadrows.c); runs on reference steps, before fusion.  May
 * append plan values (views, copies of rows). */
int ss__plan_dead_rows(ss_plan_t *p, ss_err_t *err);

/* QDQ patterns onto int8 primitives, leftover Q/DQ onto oneDNN reorders
 * (plan_qdq.c).  May append plan values (NHWC copies). */
int ss__plan_int8(ss_plan_t *p, ss_err_t *err);

/* bf16 compute when the graph asks for it (ss_graph_precision), else
 * nothing (plan_bf16.c).  May append plan values (bf16 copies). */
int ss__plan_bf16(ss_plan_t *p, ss_err_t *err);

/* Replaces the dense mixture-of-experts pattern PyTorch exports by one
 * sparse MoE step (pass_moe.c); runs first, on reference steps. */
int ss__plan_moe(ss_plan_t *p, ss_err_t *err);

/* Replaces runs of reference steps by fused f32 oneDNN steps where it
 * can (plan_fuse.c). */
int ss__plan_fuse(ss_plan_t *p, ss_err_t *err);

/* Puts a reorder before every read of a value in a layout other than the
 * one its producer wrote (plan_layout.c). */
int ss__plan_layout(ss_plan_t *p, ss_err_t *err);

/* ---- the MoE step (moe_step.c) ------------------------------------------
 * Built by pass_moe.c, run by exec.c.  Descriptors are borrowed for the
 * call; the weights are packed into the step's primitives. */

#define SS_MOE_MAX_LAYERS 8
#define SS_MOE_MAX_EXPERTS 256

typedef struct ss__moe_layer_desc {
    int64_t k, n;               /* in and out features */
    const float *w;             /* see w_nk */
    int w_nk;                   /* 1: w is [n,k]; 0: [k,n] */
    const float *bias;          /* [n] or NULL */
    ss_dnn_postops_t post;      /* ELTWISE only */
    int q;                      /* 1: the input is QDQ-quantized (per
                                 * tensor in_scale, in_zp, in_dtype U8
                                 * or I8): the layer runs int8, weights
                                 * s8 per output channel, f32 out */
    float in_scale;
    int in_zp;
    ss_dtype_t in_dtype;
} ss__moe_layer_desc_t;

typedef struct ss__moe_expert_desc {
    int n_layers;
    int gated;          /* layers[1] also reads the expert's input, and
                         * its output multiplies layers[0]'s before
                         * layers[2] (a gated FFN: fc2(act(fc1 x) *
                         * fc3 x)); needs 3 layers or more */
    ss__moe_layer_desc_t layers[SS_MOE_MAX_LAYERS];
} ss__moe_expert_desc_t;

typedef struct ss__moe_desc {
    int n_exp, k;
    int norm;                   /* gates divided by their sum */
    int unit;                   /* every selected expert weighs 1 (a
                                 * top-k mask, MoEfication) */
    int ort;                    /* com.microsoft.MoE: the scores are
                                 * logits (softmax first), ties go to
                                 * the higher expert, zero gates skip */
    int bf16;                   /* layers compute in bf16 (f32 out) */
    int64_t rows, d_in, d_out;
    const ss__moe_expert_desc_t *ex;    /* [n_exp] */
} ss__moe_desc_t;

typedef struct ss__moe ss__moe_t;

int ss__moe_new(const ss__moe_desc_t *d, ss__moe_t **out, ss_err_t *err);
void ss__moe_free(ss__moe_t *m);
/* Bytes of the workspace value and of oneDNN scratch a run needs. */
size_t ss__moe_ws_bytes(const ss__moe_t *m);
size_t ss__moe_scratch_bytes(const ss__moe_t *m);
/* y[rows, d_out] = sum over each row's top k experts of gate * expert(x);
 * score is [rows, E].  [worker] */
int ss__moe_run(const ss__moe_t *m, ss_dnn_stream_t *s, const float *x,
                const float *score, float *y, void *ws, void *scratch,
                ss_err_t *err);

/* ---- plan edits (plan_edit.c), for every pass -------------------------- */

/* Frees what s owns (in, out, prim) and zeroes it: a hole (kind 0). */
void ss__plan_step_clear(ss_step_t *s);

/* A new plan value: v's shape in type dt, in the arena, stored in layout
 * l (the layout pass reads it).  Returns its id or a negative code;
 * p->vals may move. */
int ss__plan_add_value(ss_plan_t *p, int v, ss_dtype_t dt,
                       ss_dnn_layout_t l, ss_err_t *err);

/* Whether v is (or is viewed by) a graph output. */
int ss__plan_is_graph_out(const ss_plan_t *p, int v);

/* Whether some value is a view of v (shares its bytes directly). */
int ss__plan_has_views(const ss_plan_t *p, int v);

/* A step queued for insertion before (after = 0) or after step `at`. */
typedef struct ss__plan_ins {
    int at, after;
    ss_step_t st;
} ss__plan_ins_t;

/* The queue of a pass; zero-initialize it. */
typedef struct ss__plan_inslist {
    ss__plan_ins_t *v;
    int n, cap;
} ss__plan_inslist_t;

/* Queues st before (after = 0) or after step `at`; takes st (clears it,
 * on failure too). */
int ss__plan_ins_step(ss__plan_inslist_t *l, int at, int after,
                      ss_step_t *st, ss_err_t *err);
/* Queues a oneDNN step running prim (one input, one output: a reorder
 * or conversion; taken, on failure too) in -> out before (after = 0) or
 * after step `at`. */
int ss__plan_ins_prim(ss_plan_t *p, ss__plan_inslist_t *l, int at, int after,
                      ss_dnn_prim_t *prim, int in, int out, const char *what,
                      ss_err_t *err);
/* Queues a conversion step in -> out (cd says how) before (after = 0) or
 * after step `at`. */
int ss__plan_ins_convert(ss_plan_t *p, ss__plan_inslist_t *l, int at,
                         int after, const ss_dnn_convert_desc_t *cd, int in,
                         int out, const char *what, ss_err_t *err);
/* Rebuilds the step array with the queued steps in place (taken), and
 * without the holes fused chains left; with nothing queued, leaves the
 * array as it is. */
int ss__plan_ins_apply(ss_plan_t *p, ss__plan_inslist_t *l, ss_err_t *err);
/* Frees the queue and the steps still in it. */
void ss__plan_ins_free(ss__plan_inslist_t *l);

/* ---- the fusion toolkit (plan_chain.c), for the anchors of every pass ---- */

/* The reader index of a plan: built once per pass by ss__fz_init; not
 * updated by commits (the steps it names may have become holes or fused
 * steps since: ss__fz_single returns reference steps only). */
typedef struct ss__fz {
    ss_plan_t *p;
    int *start;     /* CSR of readers per root value: list[start[v]..] */
    int *list;      /* step indices */
    char *is_out;   /* value is (or is viewed by) a graph output */
    int *prod;      /* step producing the value, or -1 */
} ss__fz_t;

#define SS_CHAIN_MAX 32

/* A fusion in progress: the anchor step, absorbed steps, post-ops. */
typedef struct ss__chain {
    int steps[SS_CHAIN_MAX];
    int n_steps;
    int src;                /* the anchor's main source value */
    int out;                /* the value the fused step writes */
    int dst_ndim;           /* the primitive's dst, for operand mapping */
    int64_t dst_dims[SS_DNN_MAX_DIMS];
    int max_post;           /* 0: SS_DNN_MAX_POST */
    ss_dnn_postops_t post;
    int bin[SS_DNN_MAX_POST];   /* value per BINARY post-op */
    int n_bin;
    char what[48];
} ss__chain_t;

/* Builds fz for p's current steps: -1 when out of memory (ss__fz_close
 * frees what was made either way). */
int ss__fz_init(ss__fz_t *fz, ss_plan_t *p);
void ss__fz_close(ss__fz_t *fz);
/* The one step that reads v, directly and once; -1 when v has other
 * readers, views, or is a graph output. */
int ss__fz_single(const ss__fz_t *fz, int v);

/* Constants and attributes. */
int ss__fz_is_const(const ss_plan_t *p, int v);
/* v is a constant of type dt. */
static inline int
ss__fz_const_of(const ss_plan_t *p, int v, ss_dtype_t dt)
{
    return ss__fz_is_const(p, v) && ss__plan_tensor(p, v)->dtype == dt;
}
/* A constant f32 or f64 scalar (any shape of one element) into *out. */
int ss__fz_scalar(const ss_plan_t *p, int v, float *out);
/* A constant f32 vector of n elements (leading dims 1), or NULL. */
const float *ss__fz_vec(const ss_plan_t *p, int v, int64_t n);
/* Reads count ints of attribute name into out (all dflt when absent); 0
 * when it has another count. */
int ss__fz_attr_n(const ss_node_t *n, const char *name, int64_t dflt,
                  int64_t *out, int count);
/* auto_pad is NOTSET (or empty): the pads attribute says it all. */
int ss__fz_notset(const ss_node_t *n);

/* Post-op chains. */
void ss__fz_chain_start(ss__chain_t *c, int step, int src, int out,
                        const char *what);
/* Absorbs single-use consumers of c->out that map onto post-ops. */
int ss__fz_chain(ss__fz_t *fz, ss__chain_t *c);
/* ss__fz_chain for an inner product (any precision): absorbs post-ops up
 * to, not including, a residual Add (a BINARY post-op of the full dst
 * shape), which oneDNN 2.6 would run on its slower gemm kernel. */
void ss__fz_linear_chain(ss__fz_t *fz, ss__chain_t *c);
/* The chain's last step: where the fused step lands. */
int ss__fz_chain_last(const ss__chain_t *c);
/* Commits the chain as one DNN step reading lead_in then c->bin, at the
 * chain's last step; the other steps become holes.  Takes prim, on
 * failure too. */
int ss__fz_emit(ss__fz_t *fz, ss__chain_t *c, ss_dnn_prim_t *prim,
                const int *lead_in, int n_lead, ss_err_t *err);
/* A oneDNN constructor's failure: ENOMEM stops the compile, anything
 * else leaves the op on its reference kernel. */
static inline int
ss__fz_fallback(int rc, ss_err_t *err)
{
    if (rc == SS_ENOMEM)
        return rc;
    ss_err_clear(err);
    return 0;
}

/* What the anchors of every precision share. */
/* The next step is Add of a constant [N] keeping the rank: a bias,
 * absorbed into c; NULL when not. */
const float *ss__fz_take_bias(ss__fz_t *fz, ss__chain_t *c, int64_t n);
/* Folds BatchNormalization step bn (inputs scale, B, mean, var, each of
 * oc constants) into conv weights w (oc rows of nw / oc) and bias (NULL:
 * 0): new arrays in *wf and *bf, the caller's to free. */
int ss__fz_fold_bn(const ss_plan_t *p, const ss_step_t *bn, int64_t oc,
                   const float *w, int64_t nw, const float *bias,
                   float **wf, float **bf, ss_err_t *err);
/* A MatMul/Gemm by a constant weight, as ss__fz_linear_shape reads it. */
typedef struct ss__fz_lin {
    int64_t m, k, n;
    int w_nk;
    int wv;                 /* the f32 weight value */
    const float *bias;      /* real units, or NULL */
    float *owned;           /* Gemm beta != 1: scaled copy */
} ss__fz_lin_t;
/* MatMul/Gemm by a constant 2-D weight, f32 activations: fills L and
 * starts chain c (with a following bias Add taken); 1 when it applies,
 * 0 when not, < 0 on errors.  L->owned is the caller's to free. */
int ss__fz_linear_shape(ss__fz_t *fz, int s, ss__fz_lin_t *L,
                        ss__chain_t *c, ss_err_t *err);
/* Conv geometry (2-D or 3-D) and bias from the node into d; 0
 * when it is not a plain Conv with constant f32 weights. */
int ss__fz_conv_shape(const ss_plan_t *p, const ss_step_t *st,
                      ss_dnn_qconv_desc_t *d);

/* ---- layout rules (plan_layout_rules.c): what the anchors ask when they
 * create a primitive; the layout pass (ss__plan_layout) then makes every
 * read agree with the write ---------------------------------------------- */

/* The layout v's root is stored in (its producer's choice). */
ss_dnn_layout_t ss__lay_of(const ss_plan_t *p, int v);
/* t's rank has layouts: 4-D or 5-D (plan_layout_rules.c). */
int ss__lay_rank(const ss_tensor_t *t);

/* Whether layouts a and b of t are the same bytes (they are when H * W
 * is 1, for NHWC and NCHW when C is 1, for nChw16c and NHWC when C is
 * 16): then no reorder is needed between them. */
int ss__lay_same(ss_dnn_layout_t a, ss_dnn_layout_t b, const ss_tensor_t *t);

/* The fast layout for a 4-D tensor t: BLOCKED when C % 16 == 0, else
 * NHWC. */
ss_dnn_layout_t ss__lay_natural(const ss_tensor_t *t);

/* The layout a conv from x to y runs in: BLOCKED when both channel counts
 * are multiples of 16, NHWC otherwise. */
ss_dnn_layout_t ss__lay_conv_family(const ss_tensor_t *x,
                                    const ss_tensor_t *y);

/* The layout an anchor should write v in: PLAIN for a graph output, a
 * value with views (a Flatten reads NCHW bytes) or one no reader wants
 * otherwise; else the BLOCKED or NHWC layout most of its readers want
 * (convs their family's, pools the natural one; a same-shape binary op
 * takes any).  Always PLAIN with SS_ENGINE_NO_BLOCKED=1. */
ss_dnn_layout_t ss__lay_dst(const ss__fz_t *fz, int v);

/* A conv from value src (tensor x) to y whose readers want another
 * layout than its source is in: the source's layout, when running the
 * conv in it and reordering the (smaller) output costs less than
 * reordering the input (a stride-2 depthwise conv between a blocked
 * expansion and a projection to 24 channels, NHWC, in MobileNetV2);
 * else PLAIN (no such choice). */
ss_dnn_layout_t ss__lay_conv_keep(const ss_plan_t *p, int src,
                                  const ss_tensor_t *y,
                                  ss_dnn_layout_t want_dst);

/* A ReduceMean or ReduceMax over exactly H and W of a 4-D value (torch's
 * x.mean((2, 3))), axes by attribute or constant input: its pooling
 * algorithm (a global pool, ss__fuse_pool), else 0. */
int ss__plan_reduce_hw(const ss_plan_t *p, const ss_step_t *st);

/* The layout of an op that keeps one layout from src to dst (pooling,
 * binary): the source's, when dst may be written in it; else PLAIN. */
ss_dnn_layout_t ss__lay_follow(const ss__fz_t *fz, int src, int dst);

/* ---- the f32 fusion pass's anchors (plan_fuse_ops.c, _mm.c, _ln.c,
 * _move.c) ---
 * Called by ss__plan_fuse (plan_fuse.c) only, in its table's order.  Each
 * returns 1 when it fused step s, 0 when it left it alone and < 0 on an
 * error that must stop the compile. */

int ss__fuse_linear(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fuse_matmul(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fuse_conv(ss__fz_t *fz, int s, ss_err_t *err);
/* ConvTranspose as a oneDNN deconvolution (plan_fuse_conv.c). */
int ss__fuse_convt(ss__fz_t *fz, int s, ss_err_t *err);
/* Concat along the channels of 4-D/5-D f32 values as oneDNN's concat in
 * its inputs' layouts (plan_fuse_cat.c); ss__lay_concat says whether
 * step st is one the anchor takes (its inputs then want their natural
 * layout, plan_layout_rules.c). */
int ss__fuse_concat(ss__fz_t *fz, int s, ss_err_t *err);
int ss__lay_concat(const ss_plan_t *p, const ss_step_t *st);
/* Called by ss__fuse_conv with its chain c and conv d (post-ops set) of
 * source value src: fuses the depthwise conv that reads c's output into
 * it (plan_fuse_dw.c); 1 when it emitted the fused step, 0 when it left
 * everything as it was, < 0 on failure. */
int ss__fuse_conv_dw(ss__fz_t *fz, const ss__chain_t *c,
                     const ss_dnn_conv_desc_t *d, int src, ss_err_t *err);
/* A BatchNormalization right after the conv chain c starts, folded into
 * its weights and bias (new arrays in *wf, *bf, the caller's to free, and
 * *w, *bias pointed at them) and added to c: 1, 0 when there is none to
 * fold, < 0 on errors (plan_fuse_conv.c). */
int ss__fz_conv_bn(ss__fz_t *fz, ss__chain_t *c, int64_t oc, const float **w,
                   int64_t nw, const float **bias, float **wf, float **bf,
                   ss_err_t *err);
/* The window attributes of an nsp-D (1-3) Conv or pooling node in the
 * terms of ss_dnn_conv_desc_t / ss_dnn_pool_desc_t (plan_fuse_conv.c):
 * stride, dilation, pads of H and W, the depth axis's in depth;
 * kernel_shape in ks (0 when not given).  0 when malformed. */
int ss__fz_window(const ss_node_t *n, int nsp, int64_t stride[2],
                  int64_t dilation[2], int64_t pad_begin[2],
                  int64_t pad_end[2], int64_t ks[3], ss_dnn_depth_t *depth);
/* The geometry of Conv step st (rank 3-5: 1-D, 2-D, 3-D) into d's nsp,
 * n, ic, ih, iw, oc, kh, kw, depth, group, stride, dilation and pads; 0
 * when its attributes or shapes do not fit. */
int ss__fz_conv_geom(const ss_plan_t *p, const ss_step_t *st,
                     ss_dnn_conv_desc_t *d);
/* Only output 0 of step st is used (others omitted or unread). */
int ss__fz_only_out0(const ss__fz_t *fz, const ss_step_t *st);
/* prim runs oneDNN's reference code: a blocked or NHWC one is slower than
 * the plain one (callers try other layouts), a 1-D or 3-D one no faster
 * than our reference kernels. */
int ss__fz_slow(const ss_dnn_prim_t *prim);
int ss__fuse_softmax(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fuse_layernorm(ss__fz_t *fz, int s, ss_err_t *err);
int ss__fuse_pool(ss__fz_t *fz, int s, ss_err_t *err);
/* The oneDNN pooling of a MaxPool/AveragePool/GlobalAveragePool step over
 * its 3- to 5-D source (nsp 1-3; dtype the source's, layout PLAIN): 1, or
 * 0 when the step has another op or attributes oneDNN does not take. */
int ss__fz_pool_desc(const ss_plan_t *p, const ss_step_t *st,
                     ss_dnn_pool_desc_t *d);
int ss__fuse_binary(ss__fz_t *fz, int s, ss_err_t *err);
/* A channels-first/last Transpose whose source a oneDNN step wrote in
 * the other order: absorbed into that step (plan_fuse_ops.c). */
int ss__fuse_transpose(ss__fz_t *fz, int s, ss_err_t *err);
/* The f32 Linear of chain c (desc d) followed by a (0,3,1,2) Transpose,
 * a per-channel constant Mul and a residual Add stored NHWC (ConvNeXt's
 * block tail): the scale folded into new weights and bias (*wown, *bown,
 * the caller's to free; d points at them), the three steps and the Add
 * as a binary post-op joined to c: 1; 0 when the steps are not that
 * (plan_fuse_scale.c).  The caller marks the output NHWC and the
 * residual, in[1], raw. */
int ss__fz_layer_scale(ss__fz_t *fz, ss__chain_t *c,
                       ss_dnn_linear_desc_t *d, float **wown, float **bown,
                       ss_err_t *err);
/* The Add of chain c's output (a Linear without post-ops) and a plain
 * residual of its shape, joined to c as a SUM post-op: 1, else 0
 * (plan_fuse_scale.c).  SS_ENGINE_NO_RESIDUAL_SUM=1 turns both off. */
int ss__fz_residual_sum(ss__fz_t *fz, ss__chain_t *c);
/* Any other f32 Transpose of 64 KB or more, but of 4 dims: a oneDNN
 * reorder (plan_fuse_move.c). */
int ss__fuse_transpose_reorder(ss__fz_t *fz, int s, ss_err_t *err);
/* st is a reference Transpose (0,2,3,1) of the 4-D f32 value v, which
 * then reads v best as NHWC (the same bytes as its output). */
int ss__lay_transpose_reader(const ss_plan_t *p, const ss_step_t *st, int v);
int ss__fuse_ln_decomposed(ss__fz_t *fz, int s, ss_err_t *err);
/* One-chunk buffers (plan_chunkbuf.c: tapped GEMMs, attention groups),
 * before the arena is laid out; whether chunked step s runs chunk by
 * chunk together with step s + 1 (its output's one reader, exec.c:
 * run_chunked; a chain when s + 1 pairs with s + 2 in turn). */
void ss__plan_chunk_bufs(ss_plan_t *p);
int ss__plan_chunk_pair(const ss_plan_t *p, int s);
/* The last step of the chain chunked step s heads (s: none). */
int ss__plan_chunk_end(const ss_plan_t *p, int s);
/* Plans with taps only: the activation after a tapped value. */
int ss__fuse_tapped_eltwise(ss__fz_t *fz, int s, ss_err_t *err);

#endif
