/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_H
#define SS_ENGINE_H

/*
 * The engine: ONNX models in, compiled plans out, tensors through.
 *
 * A model is loaded once into an immutable graph (ss_graph_t).  For every
 * concrete input shape (in practice: every batch size or batch bucket) a
 * plan is compiled (ss_plan_t): shapes inferred, constant and shape
 * subgraphs folded, ops fused into oneDNN primitives, weights pre-packed,
 * intermediate buffers planned into one arena.  A plan runs with a
 * per-thread context (ss_exec_ctx_t) that owns a oneDNN stream and the
 * scratch arena.
 *
 * Nothing here knows about HTTP or JSON.
 *
 * THREADS: graphs and plans are immutable after creation; any number of
 * threads may run one plan at once, each with its own ss_exec_ctx_t.
 * Nothing here locks.
 */

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Element types use ONNX's TensorProto.DataType numbers, so they reach disk
 * and wire unchanged. */
typedef enum {
    SS_DTYPE_UNDEFINED = 0,
    SS_DTYPE_F32 = 1,
    SS_DTYPE_U8 = 2,
    SS_DTYPE_I8 = 3,
    SS_DTYPE_U16 = 4,
    SS_DTYPE_I16 = 5,
    SS_DTYPE_I32 = 6,
    SS_DTYPE_I64 = 7,
    SS_DTYPE_STRING = 8,
    SS_DTYPE_BOOL = 9,
    SS_DTYPE_F16 = 10,
    SS_DTYPE_F64 = 11,
    SS_DTYPE_U32 = 12,
    SS_DTYPE_U64 = 13,
    SS_DTYPE_BF16 = 16
} ss_dtype_t;

#define SS_MAX_DIMS 8

/* Bytes per element; 0 for types without a fixed size. */
size_t ss_dtype_size(ss_dtype_t t);
/* "FP32", "INT64", ... as KServe V2 spells them; NULL if none. */
const char *ss_dtype_kserve_name(ss_dtype_t t);
/* The inverse; SS_DTYPE_UNDEFINED when unknown. */
ss_dtype_t ss_dtype_from_kserve(const char *name);

/* A dense, row-major tensor.  Who owns data is said where one is passed. */
typedef struct ss_tensor {
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    void *data;
} ss_tensor_t;

/* Element count, or -1 on overflow or a negative dim. */
int64_t ss_tensor_numel(const ss_tensor_t *t);

/* Describes a graph input or output: dims are -1 where symbolic (the batch
 * axis of a torch.onnx.export with dynamic_axes). */
typedef struct ss_io_info {
    const char *name; /* borrowed from the graph */
    ss_dtype_t dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
} ss_io_info_t;

typedef struct ss_graph ss_graph_t;
typedef struct ss_plan ss_plan_t;
typedef struct ss_exec_ctx ss_exec_ctx_t;

/* Loads an ONNX file (external data resolved next to it).  Returns 0 and a
 * new graph, or a negative code with err naming the problem (every
 * unsupported op with its node name, in one message). */
int ss_graph_load_onnx(const char *path, ss_graph_t **out, ss_err_t *err);
/* The same from memory (fuzzing, tests); external data is refused. */
int ss_graph_load_onnx_buffer(const void *buf, size_t len, ss_graph_t **out,
                              ss_err_t *err);
void ss_graph_free(ss_graph_t *g);

int ss_graph_num_inputs(const ss_graph_t *g);
int ss_graph_num_outputs(const ss_graph_t *g);
/* Borrowed views valid while g lives. */
const ss_io_info_t *ss_graph_input(const ss_graph_t *g, int i);
const ss_io_info_t *ss_graph_output(const ss_graph_t *g, int i);
/* Bytes held by initializers (weights). */
size_t ss_graph_weight_bytes(const ss_graph_t *g);
/* The first node of g's top level that runs a subgraph (If, Loop, Scan),
 * or NULL.  Its branch or trip count may depend on the values or the
 * number of every row of a run, so the daemon does not batch such a
 * model across requests.  Borrowed, valid while g lives. */
const char *ss_graph_control_node(const ss_graph_t *g, const char **op);

/* Rows (request isolation): whether g computes every row of a batch
 * along axis 0 on its own, so that requests batched together get the
 * answers each would get alone.  Not so when a node mixes rows (a mean
 * or a softmax over axis 0, x @ x.T, x.reshape(1, -1), a Gather of row
 * 0, the batch size x.size(0) used as a number, ...) or runs an op the
 * analysis does not know: `node` and `op` name the first such node (""
 * for a graph input or output), `why` says how.  The analysis is
 * engine/plan/plan_indep.c's, on a plan compiled without fusion for 3
 * rows (unknown dims past the batch 5, else 1, 32, 64, 224 or 512, the
 * first that compiles); a graph that does not compile so is reported
 * not independent, with the compiler's message.  0 or SS_ENOMEM.
 * [any] */
typedef struct ss_rows {
    int independent;
    char node[128];
    char op[64];
    char why[320];
} ss_rows_t;
int ss_graph_rows(const ss_graph_t *g, ss_rows_t *out, ss_err_t *err);

/* The memory a graph and the plans compiled from it hold now (issue 12;
 * docs/architecture.md, "Model memory").  engine_bytes: what the engine
 * allocated for it and counted where it allocated: the graph's
 * constants on the heap, and per live plan its folded constants,
 * bookkeeping and the weights oneDNN packed for it (a packing shared by
 * several plans counted once).  mapped_bytes: the size of the file
 * mappings its constants point into; mapped_resident_bytes: how much
 * of those this process has resident now (ss_filemap_resident). */
typedef struct ss_graph_memory {
    size_t engine_bytes;
    size_t mapped_bytes;
    size_t mapped_resident_bytes;
} ss_graph_memory_t;
/* [any] Reads /proc (a few hundred microseconds per 300 MB mapped): for
 * a scrape, not a request.  Safe while plans of g compile or run. */
void ss_graph_memory(const ss_graph_t *g, ss_graph_memory_t *out);

/* Flags of ss_graph_check_inputs(). */
enum {
    /* Dim 0 counts rows (a batch, a dataset's samples): at least 1, the
     * same in every input, and not compared with the graph's dim 0. */
    SS_INPUTS_ROWS = 1 << 0,
    /* Named tensors that are not graph inputs are skipped (an .npz with a
     * labels array), not refused. */
    SS_INPUTS_EXTRA_OK = 1 << 1
};

/* The one check of a caller's input tensors against g's inputs, for
 * requests, batcher items and datasets alike.
 *
 * names NULL: inputs are in graph order, n of them, one per graph input.
 * names given: names[i] names inputs[i] (any order); every graph input
 * must be there, and, without SS_INPUTS_EXTRA_OK, nothing else.  Then for
 * each graph input: the dtype, the rank (when the graph knows it), every
 * dim (at least 1, and equal to the graph's where the graph fixes it),
 * the data (present unless the tensor is empty), and with SS_INPUTS_ROWS
 * the row count.
 *
 * ordered (may be NULL) gets one tensor per graph input in graph order,
 * copied from the caller's (data borrowed).  *rows (may be NULL) gets the
 * row count with SS_INPUTS_ROWS (0 for a graph without inputs), else 1.
 * Returns 0, or SS_EINVAL with err naming the input and what is wrong
 * ("input 'x': datatype INT64, expected FP32"; shapes written as [1,64],
 * symbolic dims as -1).  Only dtype, ndim, dims and data are read. */
int ss_graph_check_inputs(const ss_graph_t *g, int n,
                          const ss_tensor_t *inputs,
                          const char *const *names, unsigned flags,
                          ss_tensor_t *ordered, int64_t *rows,
                          ss_err_t *err);

/* Value checks of one request's inputs, derived once from a graph: the
 * values that would make a run fail where shapes and dtypes are fine.
 * Today: an integer input that reaches the indices of a Gather or
 * GatherElements (directly or through Identity, Cast to an integer type,
 * Reshape, Flatten, Squeeze, Unsqueeze, Transpose or Expand) whose data
 * has a size s fixed in the graph along the gathered axis must lie in
 * [-s, s - 1]: a token id past an embedding table.  A server checks each
 * request before it joins a batch, so one request's bad values never
 * fail the others' (the run would report them too, for the whole batch).
 * new borrows g, which must outlive the check; _run is [any]. */
typedef struct ss_input_check ss_input_check_t;
int ss_input_check_new(const ss_graph_t *g, ss_input_check_t **out,
                       ss_err_t *err);
void ss_input_check_free(ss_input_check_t *c);
/* Graph inputs that have a check. */
int ss_input_check_count(const ss_input_check_t *c);
/* inputs: one tensor per graph input, in graph order, of the graph's
 * dtypes (checked before).  Returns 0, or SS_EINVAL with err naming the
 * input, the value, its position and the range ("input 'ids': value 1000
 * at [0,3] is out of range: the model takes -1000 to 999 (node 'emb')").
 * Cost: one pass over each checked input. */
int ss_input_check_run(const ss_input_check_t *c, const ss_tensor_t *inputs,
                       ss_err_t *err);

/* Graph inputs whose values decide shapes: a value reaches an input an
 * op reads when it infers shapes (Reshape's shape, Slice's starts, TopK's
 * K, Resize's scales, the axes of Squeeze from opset 13, the data of
 * NonZero or Unique, ...), through any ops but Shape and Size.  flags
 * (may be NULL) gets 1 for each such input, 0 for the others, in graph
 * order.  Returns how many there are.  A plan for such a graph is
 * specialised to those inputs' values (ss_plan_new). */
int ss_graph_shape_inputs(const ss_graph_t *g, unsigned char *flags);

/* Compiles a plan for concrete input shapes (one ss_tensor_t per graph
 * input, in graph order; dtype/ndim/dims are read, and the data of the
 * inputs ss_graph_shape_inputs names, which must be given: the plan is
 * specialised to those values, copied, and ss_plan_run refuses other
 * values with SS_EINVAL).  Values a shape cannot be made of fail with
 * SS_EINVAL naming the input (SS_ETOOBIG when over the budget).  Borrows
 * g, which must outlive the plan.  A plan's memory (any one value; folded
 * constants plus intermediates together) is capped at 4 GiB, or at what
 * the environment variable SS_ENGINE_MAX_PLAN_BYTES says ("512M", "8G"),
 * or ss_plan_opts_t.max_plan_bytes;
 * past it the compile fails with SS_ETOOBIG naming the node.
 *
 * Batch slices: a plan for a batch whose graph computes each sample on
 * its own (convs, pools, element-wise ops, Flatten, Gemm/MatMul by
 * constant weights, Softmax over a later axis...), with at most 16 MB of
 * weights and a largest activation past 2 MB per OpenMP thread, is also
 * compiled for S rows (the largest power of two whose activation still
 * fits, 1 if none, and once more for the batch % S left) and runs as that,
 * slice after slice, so activations stay in cache: the compile costs two
 * or three plans' time.  The slices stop at the first point after which
 * the whole batch's activations fit (one value crossing it), and the
 * batch's own plan runs the rest, else they run the whole graph.  The
 * environment variable SS_ENGINE_BATCH_SLICE=S (0: never) replaces the
 * rule for S; SS_ENGINE_SLICE_PREFIX=0 makes the slices run the whole
 * graph.
 *
 * Small plans: a plan of at most 8 M multiply-adds (convs, Gemm, MatMul;
 * a 28x28 CNN at batch 1) is compiled and run on one OpenMP thread
 * whatever the context's count (waking a team costs more than it
 * saves); the calling thread's count is the same after compile and run.
 * SS_ENGINE_ONE_THREAD_MACS=N replaces the bound (0: never).
 *
 * Parallel slices: a larger plan for T > 1 threads whose graph computes
 * each sample on its own, with at most 64 MB of weights, runs as slices
 * of at most 16 rows, each compiled for one thread, taken by the calling
 * thread and by idle helper threads of a process-wide pool (at most one
 * per CPU of the caller less one, only while a CPU is free): every step
 * of the run is spread, not only oneDNN's, and a helper the scheduler
 * has not run is not waited for (docs/threads.md).
 * SS_ENGINE_PAR_SLICES=0 turns them off. */
int ss_plan_new(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                ss_plan_t **out, ss_err_t *err);
void ss_plan_free(ss_plan_t *p);
/* Output shapes as compiled, to size the caller's buffers. */
const ss_io_info_t *ss_plan_output(const ss_plan_t *p, int i);

/* A per-thread execution context: oneDNN stream and scratch arena.
 * threads: oneDNN/OpenMP threads it may use (0 = library default).  It
 * also sets the calling thread's OpenMP thread count, so create it before
 * compiling the plans it will run: oneDNN tunes a primitive for the thread
 * count current when the primitive is created. */
int ss_exec_ctx_new(int threads, ss_exec_ctx_t **out, ss_err_t *err);
void ss_exec_ctx_free(ss_exec_ctx_t *c);

/* The bytes c's buffers hold (arena, oneDNN scratch, control flow's).
 * They grow to what a run needs; every SS_WORKBUF_WINDOW (16) runs one
 * over twice the largest need of the last 16 to 31 runs shrinks to that
 * need (common/workbuf.h), so an outlier's memory is given back 32 to 47
 * runs after it.
 * ss_exec_ctx_release frees them all now, between runs (a caller whose
 * thread went idle), and returns the bytes freed; the caller may then
 * return them to the system (ss_workbuf_trim); the next run allocates
 * afresh.  Both [c's thread]. */
size_t ss_exec_ctx_held(const ss_exec_ctx_t *c);
size_t ss_exec_ctx_release(ss_exec_ctx_t *c);

/* Runs p.  inputs are borrowed; outputs[i].data must point to a buffer of
 * the size ss_plan_output() gives (the caller owns it).  [worker] */
int ss_plan_run(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                const ss_tensor_t *inputs, ss_tensor_t *outputs,
                ss_err_t *err);

/* Taps: values of a run its caller sees, and may change, between two
 * steps.  A server adding a per-request low-rank update to a MatMul's
 * output (LoRA adapters, server/model/adapter.c) taps the MatMul's input
 * and output; the engine knows nothing of what the caller does there.
 *
 * ss_graph_set_taps names the values (computed values, not weights) once,
 * before any plan is compiled from g [init]; it replaces an earlier list.
 * Returns SS_EINVAL naming an unknown name.  Plans from ss_plan_new
 * ignore taps.  A plan from ss_plan_new_tapped keeps each tapped value
 * whole: dense, row-major, in the graph's dtype, written by a step of its
 * own (fusion and layout changes stop at it, as at a graph output: a
 * tapped MatMul output is no longer fused with the activation after it,
 * which runs as a oneDNN step of its own after the tap; so a caller
 * keeps both kinds of plan and runs the tapped one only when it has
 * something to do).
 *
 * Row chunks: a tapped value that a Gemm/MatMul by a constant weight
 * writes (its bias included) and that is larger than a cache's worth
 * (SS_TAP_CHUNK_BYTES of the step's input and output rows together) is
 * computed in chunks of rows: the GEMM on a chunk, the tap on those rows,
 * and the activation step right after it (when it reads the value) on
 * them too, while they are in cache; then the next chunk.  Rows are those
 * of the value flattened to [rows, last dim].  The environment variable
 * SS_ENGINE_TAP_CHUNK_ROWS (a row count, for tests) replaces the rule.
 *
 * ss_plan_run_tapped runs p as ss_plan_run does, and calls fn(user, k,
 * value, row0, act, err) once per tap k whose value the run computes (per
 * chunk of it, when chunked): for a graph input before the first step,
 * else right after the step (or chunk) that writes it and before any
 * step reads it.  value (borrowed for the call) holds rows row0 ..
 * row0 + value->dims[0] - 1 of the tapped value, as [rows, last dim],
 * when chunked; otherwise the whole value in its own shape and row0 = 0.
 * It may be written in place (never a graph input's).  A tapped value's
 * bytes stay as they are until the last step reading it has run and,
 * after it, the first step writing a tapped value, so fn may keep an
 * earlier tap's data pointer (minus row0 rows) for that later tap (a
 * MatMul's input, at the output of the bias Add after it, fused with it
 * or not) -- except a chunked value that only the chunked activation
 * after it reads: the plan holds one chunk of it, so its rows are valid
 * in the call that has them only.  A tap folded to a constant is never
 * called.  fn returns 0 or a negative code with err set, which ends the
 * run.  fn NULL, or a plan without taps, is ss_plan_run.  [worker]
 *
 * Activations: when the value's one reader is an element-wise step the
 * plan runs right after the tap (the GELU or ReLU after a tapped Gemm)
 * of a kind below, act (else NULL) offers it to fn: fn may write
 * act(value) into act->dst (as many elements as value has, contiguous,
 * f32) and return 1, and the plan skips that step for these rows; the
 * value's own rows may then be left as they are.  A caller that changes
 * the rows anyway (a LoRA update) applies the function while they are
 * still in its cache, without a oneDNN call (a few microseconds each:
 * the MNIST-sized MLP at batch 1 runs 33 us, two such steps).  fn
 * returning 0 leaves the step to the plan. */
#define SS_TAP_CHUNK_BYTES ((int64_t)512 << 10)
int ss_graph_set_taps(ss_graph_t *g, int n, const char *const *names,
                      ss_err_t *err);
int ss_plan_new_tapped(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                       ss_plan_t **out, ss_err_t *err);

/* Compile options; all zero is ss_plan_new.
 *
 * max_plan_bytes: the plan's budget (any one value; folded constants plus
 * intermediates plus oneDNN scratch together) instead of the default
 * (SS_ENGINE_MAX_PLAN_BYTES, or 4 GiB); past it the compile fails with
 * SS_ETOOBIG naming the node, before anything is allocated for it.  The
 * plans a plan makes for itself (batch slices, subgraphs, the NaN
 * guard's reference twin) have the same budget.  A daemon sets it from
 * its max_plan_bytes: what one request may make an executor hold.
 *
 * max_output_bytes: a graph output larger than this (times output_rows
 * when that is > 0: a batch's rows, for a limit per sample) fails the
 * compile with SS_ETOOBIG naming the node and the output, at shape
 * inference: before a fold computes it, before the arena is planned.  It
 * is what a server puts between a request's values and an output whose
 * size they choose (Range's limit, ConstantOfShape's or Expand's shape
 * taken from an input); intermediates stay under the plan's budget
 * only. */
typedef struct ss_plan_opts {
    int tapped;                 /* as ss_plan_new_tapped */
    size_t max_output_bytes;    /* 0: no limit but the budget */
    int64_t output_rows;
    size_t max_plan_bytes;      /* 0: the default budget */
} ss_plan_opts_t;
int ss_plan_new_opts(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                     const ss_plan_opts_t *o, ss_plan_t **out,
                     ss_err_t *err);
/* The budget of a plan compiled with max_plan_bytes 0:
 * SS_ENGINE_MAX_PLAN_BYTES when set and valid, else 4 GiB. */
size_t ss_plan_default_budget(void);
typedef enum {
    SS_TAP_ACT_GELU_ERF = 1,    /* 0.5 x (1 + erf(x / sqrt 2)) */
    SS_TAP_ACT_RELU             /* x > 0 ? x : alpha * x */
} ss_tap_act_kind_t;
typedef struct ss_tap_act {
    ss_tap_act_kind_t kind;
    float alpha;
    void *dst;
} ss_tap_act_t;
typedef int (*ss_tap_fn)(void *user, int tap, ss_tensor_t *value,
                         int64_t row0, const ss_tap_act_t *act,
                         ss_err_t *err);
int ss_plan_run_tapped(const ss_plan_t *p, ss_exec_ctx_t *ctx,
                       const ss_tensor_t *inputs, ss_tensor_t *outputs,
                       ss_tap_fn fn, void *user, ss_err_t *err);

/* Mixture of experts (docs/moe.md): the sparse MoE layers of p (its MoE
 * steps, in plan order), the experts of one, and the rows routed to an
 * expert since the last take: each routed row is reported once, whichever
 * thread takes (the server's slimserve_moe_expert_rows_total).  0 for a
 * plan, layer or expert that does not exist.  [any] */
int ss_plan_moe_layers(const ss_plan_t *p);
int ss_plan_moe_experts(const ss_plan_t *p, int layer);
uint64_t ss_plan_moe_take(const ss_plan_t *p, int layer, int expert);

#endif
