/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TRAIN_H
#define SS_TRAIN_H

/*
 * The trainer: gradient descent on a model's own forward graph.
 *
 * ss_train_new() derives, once, a training graph from a forward graph for
 * one fixed batch shape: the forward ops the loss needs, the loss, and the
 * backward ops, each from the gradient rule of its forward op (an op that
 * gradients must flow through and that has no rule is refused, naming the
 * op and the node).  Memory is planned then: after that a step allocates
 * nothing.  ss_train_step() runs forward, loss, backward and one optimizer
 * update on one batch.  ss_train_export() writes the trained weights back
 * into a copy of the graph, ready for ss_graph_save_onnx().
 *
 * Parameters are the float initializers with at least two elements that a
 * differentiable input of an op reads, minus the frozen ones (opts.frozen,
 * by initializer name).  Scalars are never parameters: exporters store
 * literal numbers (0.5, sqrt(d), Pow's 2) as scalar initializers.  Frozen
 * initializers stay constants, and get no gradient.  Parameters, their
 * gradients and the optimizer state are flat f32 arrays, one each, with a
 * per-parameter offset (ss_train_param()), so an optimizer is one loop and
 * a data-parallel step is one all-reduce of ss_train_grads().
 *
 * BatchNormalization trains in batch mode by default (statistics of the
 * batch, running statistics updated with the node's momentum and written
 * back on export), as PyTorch's model.train() does; opts.bn = SS_BN_FROZEN
 * keeps the running statistics and trains the affine part only (better
 * for tiny batches).  Dropout is the identity (the exported graph is in
 * eval mode, so is training: recovery fine-tuning and distillation do not
 * need it).
 *
 * Losses read one model output (opts.output), seen as [rows, classes]
 * with the last dim the classes: cross-entropy on integer labels, KL
 * divergence to a teacher's logits at temperature T scaled by T^2, MSE to
 * a target tensor, and the distillation mix alpha * KL + (1 - alpha) * CE.
 *
 * Optimizers: AdamW (decoupled weight decay, PyTorch's formula), SGD with
 * momentum (PyTorch's, optionally Nesterov), and Sophia (SophiaG: a
 * diagonal Gauss-Newton-Bartlett Hessian estimate every k steps, from the
 * gradient of the cross-entropy against labels sampled from the model's
 * own softmax, and a clipped update).  Learning rate: linear warm-up, then
 * constant, cosine or linear decay to min_lr_ratio * lr at total_steps.
 * Gradients can be clipped by their global L2 norm first.
 *
 * Mixed precision (opts.bf16): the products (MatMul, Gemm, Conv forward,
 * and their backward by data and by weights) read bf16 copies of their
 * two operands and write f32, except that a convolution writes a bf16
 * activation, which BatchNorm, Relu, pooling and residual Adds (on
 * oneDNN) keep bf16, forward and backward, up to the first op that needs
 * f32 (ss_train_bf16_acts(); opts.f32_acts turns it off), and the
 * shape ops between products (a transformer's Reshape, Transpose and
 * Gathers of q, k, v and of the heads) carry bf16 where every path from
 * them ends at a MatMul; everything
 * else (other element-wise ops, norms, softmax, the loss, parameter
 * gradients, the optimizer) stays f32, and so do
 * the master weights and the optimizer state in the flat arrays.  Each
 * operand is rounded once per step, where it is made (a weight after the
 * update, an activation after its forward op, a gradient when complete),
 * and the copy serves both the forward and the backward products.  No
 * loss scaling: bf16 keeps f32's exponent range, so the small gradients
 * fp16 would flush to zero are representable (rounded to 8 bits of
 * mantissa).  It needs a CPU where oneDNN runs bf16 natively
 * (ss_dnn_bf16_native(): AVX512_BF16 or AMX); ss_train_new refuses it
 * elsewhere (SS_EUNSUPP, saying why).  A product oneDNN has no native
 * bf16 kernel for runs in f32 and is counted (ss_train_precision()).
 *
 * Layouts: convolutions run on oneDNN's blocked kernels.  Each Conv
 * asks oneDNN which activation layouts it runs fastest in (nChw16c,
 * NHWC, or NCHW for a first layer of few channels) and leaves its output
 * in that layout; BatchNorm, pooling, element-wise ops and same-shape
 * binary ops (a residual Add) take any layout and keep it, so a chain of
 * them stays blocked; the backward's gradients take their values'
 * layouts.  Other ops read NCHW copies (made once, by a reorder step),
 * and the gradient they write for a copy is reordered into the value's.
 * Weights stay dense f32 in the flat arrays (the optimizer's master
 * copy): a reorder step per pass gives a convolution its own layout
 * (bf16 in mixed precision), and one adds its weight gradient back.
 * opts.nchw keeps everything NCHW with dense weights (oneDNN's
 * gemm-based convolutions: the trainer as it was, for comparison).
 *
 * Learned step sizes (opts.scales, LSQ after Esser et al.): the named
 * initializers, read as the scale of QuantizeLinear / DequantizeLinear
 * (per tensor or per axis), become parameters, scalars included.  Their
 * gradient through a Q -> DQ pair is LSQ's: dy * (q - z - x / s) where
 * x was not clipped, dy * (q - z) where it was (DequantizeLinear gives
 * the (q - z) part, QuantizeLinear the -x / s part through its
 * straight-through dq).  They take no weight decay, and they are updated
 * by Adam on log s at opts.scale_lr, whatever the optimizer of the
 * weights: a step size must stay positive, and how far it has to move
 * is relative to itself (a scale calibrated on an outlier can be 100x
 * too coarse), which an additive step at the weights' lr does not do.
 * They sit at the end of the flat arrays, after the weights.
 *
 * Determinism: the same graph, options, data and thread count on the same
 * machine give the same bytes: every reduction has a fixed order for a
 * given thread count, and the only randomness (Sophia's label sampling)
 * comes from opts.seed.
 *
 * Data parallelism (opts.dp, ZeRO stage 1): N processes each build a
 * trainer for their shard of every global batch (rows [B r / N,
 * B (r + 1) / N) of it; the caller cuts them).  A step computes the
 * local gradient (of the shard's mean loss) and reduce-scatters it
 * weighted by the shard's share of the global batch (dp->weight;
 * dp->reduce_f32): each process receives the sum over the processes
 * of its own slice of the flat arrays (ss_train_shard_range()) -- the
 * gradient of the global batch's mean loss there, as one process
 * would compute it up to the order of float sums.  The weighted losses
 * are summed the same way (dp->sum_f64).  Each process keeps optimizer
 * state for its own slice only (about 1/N of AdamW's 2 floats per
 * parameter), updates the parameters of that slice, and dp->gather_f32
 * hands every process every slice, so the parameters stay the same
 * bytes everywhere.  Gradient clipping needs the global norm: each
 * process sums the squares of its slice and dp->sum_f64 adds them.
 * BatchNorm running statistics are averaged across processes after
 * each step (an average of moving averages is the moving average of
 * the averages); batch statistics stay per shard, as in PyTorch's DDP
 * without SyncBatchNorm.  Sophia is refused: its Hessian estimate
 * samples labels per process.  The callbacks carry no MPI: the glue is
 * compress/train/mpi/.  When dp->share is set, the trainer asks for
 * its parameter and gradient arrays in memory the processes of one
 * machine share (compress/train/mpi/: an MPI shared-memory window):
 * the glue then sums slices straight from the other processes'
 * gradients and the gather is a barrier, with no copies.

 * Hyper-parameters are described by a table (ss_train_params_table()): a
 * job parser sets them by name with ss_train_opts_set(), which checks
 * each value against its row's range; nothing else validates them.
 *
 * Threads (opts.threads = T > 1): when every row's loss depends on its
 * own row alone (the forward graph computes rows independently, no
 * BatchNorm on batch statistics, not Sophia, not under opts.dp, at least
 * 8 rows), a step runs its forward and backward as T slices of the
 * batch, each a trainer for one thread, claimed by the calling thread and
 * T - 1 helper threads of the trainer's own ("ss-train"), and the
 * gradient is their sum weighted by rows (compress/train/slices.c says
 * why: OpenMP teams of small steps cost what the second core gives).
 * Otherwise every kernel and oneDNN primitive is an OpenMP team of T.
 * A step whose forward products are small (under 8 M multiply-adds) is
 * built for one thread instead, and slices are skipped where their
 * gradient sums would cost more than the teams' barriers (many
 * parameters in few steps).  ss_train_describe() says which and why.
 * SS_TRAIN_SLICES=0 turns slices off, =1 slices whenever correct.
 *
 * THREADS: a trainer belongs to one thread at a time (a job thread); it
 * runs its kernels on opts.threads OpenMP/oneDNN threads, or its slices
 * on helper threads of its own, started at its first step on the CPUs
 * its thread may use, which call its thread's pace hook (common/pace.h)
 * between ops as its thread does.  The source graph is only read (it may be served at the same
 * time) and must outlive the trainer.
 */

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"

typedef enum {
    SS_LOSS_CE = 1,     /* labels */
    SS_LOSS_KL,         /* teacher logits, temperature */
    SS_LOSS_KD,         /* alpha * KL + (1 - alpha) * CE */
    SS_LOSS_MSE         /* target tensor of the output's shape */
} ss_loss_kind_t;

typedef enum {
    SS_OPT_ADAMW = 1,
    SS_OPT_SGD,
    SS_OPT_SOPHIA
} ss_opt_kind_t;

typedef enum {
    SS_SCHED_CONSTANT = 0,
    SS_SCHED_COSINE,
    SS_SCHED_LINEAR
} ss_sched_kind_t;

typedef enum { SS_BN_BATCH = 0, SS_BN_FROZEN } ss_bn_mode_t;

/* Flat arrays a data-parallel trainer keeps in memory its processes
 * share (dp->share): w one array for all processes, g this process's
 * own (the others' readable by the glue).  The bf16 copies of mixed
 * precision stay each process's. */
typedef struct ss_train_shared {
    float *w;                   /* n parameters, shared */
    float *g;                   /* n gradients, this process's */
    void *h;                    /* the glue's */
} ss_train_shared_t;

/* The collectives of a data-parallel run (see above); borrowed, must
 * outlive the trainer.  Each returns 0 or a negative code with err set;
 * a failure is fatal to the run (the other processes are stuck in the
 * same call: the glue ends them). */
typedef struct ss_train_dp {
    int rank, size;             /* this process of size (size >= 1) */
    double weight;              /* this shard's rows / the global batch */
    void *arg;
    /* buf[0, n) summed over the processes, in place, on every one. */
    int (*sum_f32)(void *arg, float *buf, int64_t n, ss_err_t *err);
    int (*sum_f64)(void *arg, double *buf, int n, ss_err_t *err);
    /* Reduce-scatter: buf[0, n) of every process times its weight
     * (float products, then float sums), summed; on return *sum points
     * at this process's slice [lo, hi) of the sum
     * (ss_train_shard_range(n, rank, size)): in buf, or in memory of
     * the glue's valid until its next call.  The rest of buf is
     * undefined. */
    int (*reduce_f32)(void *arg, float *buf, int64_t n, float weight,
                      float **sum, ss_err_t *err);
    /* Every process passes all of buf[0, n) holding its own slice
     * (ss_train_shard_range(n, rank, size)); on return every slice. */
    int (*gather_f32)(void *arg, float *buf, int64_t n, ss_err_t *err);
    /* Optional (NULL: never shared).  Called by every process at the
     * same point of the build (a collective): 1 and *sh filled when
     * the flat arrays of n elements can live in memory the processes
     * share, 0 when not (the trainer allocates its own; every process
     * gets the same answer), or a negative code.  Process 0 then
     * writes the initial parameters and gather_f32 over sh->w is the
     * barrier after which the others read them.  reduce_f32 and
     * gather_f32 on sh's arrays move no bytes through MPI.  unshare
     * (collective too) takes them back. */
    int (*share)(void *arg, int64_t n, ss_train_shared_t *sh,
                 ss_err_t *err);
    void (*unshare)(void *arg, ss_train_shared_t *sh);
} ss_train_dp_t;

/* Slice [*lo, *hi) of n elements owned by rank of size: n / size each,
 * the first n % size ranks one more.  [any] */
void ss_train_shard_range(int64_t n, int rank, int size, int64_t *lo,
                          int64_t *hi);

/* What runs BatchNorm (batch statistics), Relu and pooling of 4-D
 * activations.  AUTO: oneDNN's jit primitives for Relu and max pooling
 * (exact either way) and, in bf16 (mixed precision), for BatchNorm and
 * average pooling too; in f32 those two stay on the trainer's portable-C
 * kernels, which sum in double and match PyTorch's f32 AdamW within 1e-4
 * (oneDNN's f32 sums do not: a bias before a BatchNorm gets a gradient of
 * rounding noise, which AdamW turns into full steps).  C and DNN force
 * one or the other for all four (benchmarks compare them). */
typedef enum {
    SS_TRAIN_NN_AUTO = 0,
    SS_TRAIN_NN_C,
    SS_TRAIN_NN_DNN
} ss_train_nn_t;

typedef struct ss_train_opts {
    /* what to train */
    int output;                 /* graph output the loss reads */
    ss_loss_kind_t loss;
    double temperature;         /* KL/KD */
    double alpha;               /* KD: weight of KL */
    ss_bn_mode_t bn;
    const char *const *frozen;  /* initializer names; borrowed */
    int n_frozen;
    const char *const *scales;  /* learned step sizes (LSQ, below); names
                                 * of f32 initializers; borrowed */
    int n_scales;
    /* optimizer */
    ss_opt_kind_t opt;
    double lr;
    double weight_decay;
    double beta1, beta2;        /* AdamW, Sophia */
    double eps;                 /* AdamW */
    double momentum;            /* SGD */
    int nesterov;               /* SGD */
    double rho;                 /* Sophia: clip scale */
    int hessian_every;          /* Sophia: k */
    double clip_norm;           /* global L2 norm; 0: no clipping */
    double scale_lr;            /* learned step sizes: Adam on log s */
    /* schedule */
    ss_sched_kind_t sched;
    int64_t warmup_steps;
    int64_t total_steps;        /* decay horizon; 0: no decay */
    double min_lr_ratio;
    /* run */
    uint64_t seed;
    int threads;                /* 0: oneDNN's default */
    int bf16;                   /* 1: mixed precision (see below) */
    int nchw;                   /* 1: every activation stays NCHW and
                                 * convolutions read dense weights (the
                                 * trainer before blocked layouts; tests
                                 * compare the two) */
    ss_train_nn_t nn;           /* what runs BatchNorm, Relu and pooling
                                 * (below) */
    int f32_acts;               /* mixed precision: 1 keeps activations
                                 * f32 (only the products' operands in
                                 * bf16: the trainer before bf16
                                 * activations; benchmarks compare) */
    const ss_train_dp_t *dp;    /* data parallelism; NULL: one process */
} ss_train_opts_t;

/* One hyper-parameter: its name in a job body, its type, range and
 * default, and where it lives in ss_train_opts_t. */
typedef enum {
    SS_TP_DOUBLE = 1,
    SS_TP_INT,                  /* int or int64_t per size */
    SS_TP_ENUM                  /* names in choices, value = index + base */
} ss_train_ptype_t;

typedef struct ss_train_param_row {
    const char *name;
    ss_train_ptype_t type;
    size_t offset;              /* in ss_train_opts_t */
    size_t size;                /* of the field */
    double dflt, min, max;      /* inclusive; min_open: min excluded */
    int min_open;
    const char *const *choices; /* ENUM: NULL-terminated */
    int base;                   /* ENUM: value of choices[0] */
    const char *doc;
} ss_train_param_row_t;

/* The table (n rows).  [any] */
const ss_train_param_row_t *ss_train_params_table(int *n);
/* Every row's default. */
void ss_train_opts_default(ss_train_opts_t *o);
/* Sets a numeric parameter by name, checked against its row: SS_EINVAL
 * with a sentence naming it and its range when out of it or unknown. */
int ss_train_opts_set(ss_train_opts_t *o, const char *name, double v,
                      ss_err_t *err);
/* Sets an ENUM parameter ("opt": "adamw") by name. */
int ss_train_opts_set_name(ss_train_opts_t *o, const char *name,
                           const char *value, ss_err_t *err);
/* Checks the options together (ranges, and e.g. KD's temperature). */
int ss_train_opts_check(const ss_train_opts_t *o, ss_err_t *err);

typedef struct ss_train ss_train_t;

/* Builds a trainer for g at the fixed input shapes (one per graph input,
 * only dtype/ndim/dims read; dims[0] is the batch).  Borrows g (it must
 * outlive the trainer) and o (copied, except frozen, read now).  The
 * initial parameters are g's initializers.  [worker] */
int ss_train_new(const ss_graph_t *g, const ss_tensor_t *input_shapes,
                 const ss_train_opts_t *o, ss_train_t **out, ss_err_t *err);
void ss_train_free(ss_train_t *t);

/* The data of one step, all borrowed for the call.  inputs: one per graph
 * input, of the shapes given to ss_train_new.  labels: INT64 or INT32
 * [rows] (CE, KD); teacher: F32 of the loss output's shape (KL, KD: the
 * teacher's logits; MSE: the target). */
typedef struct ss_train_batch {
    const ss_tensor_t *inputs;
    const ss_tensor_t *labels;
    const ss_tensor_t *teacher;
} ss_train_batch_t;

/* Forward, loss, backward and one optimizer update; *loss (may be NULL)
 * is the batch's loss before the update (under opts.dp: the global
 * batch's, the same on every process).  [worker] */
int ss_train_step(ss_train_t *t, const ss_train_batch_t *b, double *loss,
                  ss_err_t *err);
/* The two halves of a step, for gradient checks and data-parallel runs:
 * ss_train_grads_compute() leaves the gradients in ss_train_grads() (and
 * updates BatchNorm running statistics); ss_train_apply() takes one
 * optimizer step with whatever the gradient buffer holds then (e.g.
 * after an all-reduce).  Under opts.dp, grads_compute stays local and
 * apply updates this process's slice, then gathers every slice. */
int ss_train_grads_compute(ss_train_t *t, const ss_train_batch_t *b,
                           double *loss, ss_err_t *err);
int ss_train_apply(ss_train_t *t, ss_err_t *err);

/* Runs the forward graph alone with the current parameters (batch mode
 * BatchNorm uses the running statistics here, as inference does) and
 * copies the loss output into out (F32, the output's shape; caller's
 * buffer). */
int ss_train_forward(ss_train_t *t, const ss_tensor_t *inputs, float *out,
                     ss_err_t *err);

/* Parameters.  Names are borrowed from the graph. */
typedef struct ss_train_param_info {
    const char *name;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    int64_t numel;
    int64_t offset;             /* in elements, into the flat arrays */
} ss_train_param_info_t;

int ss_train_num_params(const ss_train_t *t);
int ss_train_param(const ss_train_t *t, int i, ss_train_param_info_t *out);
/* The flat arrays (borrowed; the trainer owns them); their length in
 * elements is ss_train_flat_size().  Writing parameters or gradients
 * between steps is allowed ([worker], the trainer's thread). */
float *ss_train_params(ss_train_t *t);
float *ss_train_grads(ss_train_t *t);
int64_t ss_train_flat_size(const ss_train_t *t);
/* Bytes of optimizer state this process holds (its slice only under
 * opts.dp), and its slice of the flat arrays. */
size_t ss_train_optim_bytes(const ss_train_t *t, int64_t *lo, int64_t *hi);
/* Seconds spent in opts.dp's collectives so far (waiting for the other
 * processes included). */
double ss_train_dp_seconds(const ss_train_t *t);
/* Whether the flat arrays live in memory shared with the other
 * processes (opts.dp->share said yes). */
bool ss_train_dp_shared(const ss_train_t *t);
/* Optimizer steps taken, and the learning rate of the next one. */
int64_t ss_train_steps_done(const ss_train_t *t);
double ss_train_lr(const ss_train_t *t);
/* Products computed in bf16 and, of those opts.bf16 asked for, products
 * left in f32 (no native bf16 kernel for them); returns the first. */
int ss_train_precision(const ss_train_t *t, int *f32_fallbacks);
/* Activations (forward values) the trainer keeps in bf16: 0 in f32, with
 * opts.f32_acts, or for a model without convolutions. */
int ss_train_bf16_acts(const ss_train_t *t);
/* A line about the training graph (steps, arena bytes, parameters) for
 * logs, into buf; returns buf. */
const char *ss_train_describe(const ss_train_t *t, char *buf, size_t len);

/* A new copy of the source graph with the current parameters and
 * BatchNorm running statistics in place of the initial ones (finalized,
 * ready to plan or save).  [worker] */
int ss_train_export(const ss_train_t *t, ss_graph_t **out, ss_err_t *err);

#endif
