/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMPRESS_INTERNAL_H
#define SS_COMPRESS_INTERNAL_H

/*
 * What the files of compress/ share: a runner (a graph with an execution
 * context and a small plan cache), the outputs of a graph over a dataset
 * and the metrics computed from them, the layer finder, and one entry
 * point per method.
 *
 * THREADS: everything here runs on the thread of ss_compress_run(); a
 * runner belongs to one thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "compress/compress.h"
#include "engine/ir/edit.h"
#include "engine/ir/ir.h"

/* ---- running graphs (eval.c) -------------------------------------------- */

#define SS__CX_CHUNK 64        /* rows per run over a dataset */
#define SS__CX_PLANS 4         /* plans cached per runner */

typedef struct ss__runner {
    const ss_graph_t *g;        /* borrowed */
    ss_exec_ctx_t *ctx;
    int n_plans;
    int64_t batch[SS__CX_PLANS];
    ss_plan_t *plans[SS__CX_PLANS];
    ss_tensor_t *outs[SS__CX_PLANS]; /* output buffers of each plan */
    int next;                   /* round-robin eviction */
} ss__runner_t;

int ss__runner_init(ss__runner_t *r, const ss_graph_t *g, int threads,
                    ss_err_t *err);
void ss__runner_close(ss__runner_t *r);
/* Runs g on inputs (batch = dims[0] of the first input); *outs points to
 * the runner's buffers, valid until the next run. */
int ss__runner_run(ss__runner_t *r, const ss_tensor_t *inputs,
                   const ss_tensor_t **outs, ss_err_t *err);

/* Checks ds against g's inputs (ss_graph_check_inputs, rows first) and
 * its labels. */
int ss__dataset_check(const ss_graph_t *g, const ss_dataset_t *ds,
                      const char *what, ss_err_t *err);
/* Views of rows [r0, r0 + n) of every input (no copy). */
void ss__dataset_slice(const ss_dataset_t *ds, int64_t r0, int64_t n,
                       ss_tensor_t *views);

/* Every output of a graph over a dataset, as f32, rows first. */
typedef struct ss__outputs {
    int n;
    int64_t rows;
    int64_t *row_elems;         /* per output: elements per row */
    float **data;               /* per output: rows * row_elems */
} ss__outputs_t;

void ss__outputs_clear(ss__outputs_t *o);
/* Runs r over ds in chunks; cancel is checked between chunks. */
int ss__collect(ss__runner_t *r, const ss_dataset_t *ds, atomic_int *cancel,
                ss__outputs_t *out, ss_err_t *err);

/* Metrics of output 0: argmax accuracy against labels (-1 without),
 * top-1 agreement, and max |a - b| / max |b| over all outputs. */
double ss__accuracy(const ss__outputs_t *o, const ss_tensor_t *labels);
double ss__agreement(const ss__outputs_t *a, const ss__outputs_t *b);
double ss__max_rel_error(const ss__outputs_t *a, const ss__outputs_t *b);

/* Median milliseconds of runs runs (after a warm-up) at batch rows taken
 * cyclically from ds; cancel (may be NULL) is checked between runs. */
int ss__latency(ss__runner_t *r, const ss_dataset_t *ds, int64_t batch,
                int runs, atomic_int *cancel, double *ms, ss_err_t *err);

/* Does an eval pass the gate?  src_acc is the source's accuracy (-1 when
 * unknown).  why gets a sentence when it does not. */
bool ss__gate_ok(const ss_gate_t *gate, double src_acc, const ss_eval_t *v,
                 char *why, size_t why_len);

/* ---- graph helpers (layers.c) ------------------------------------------- */

typedef enum { SS__LAYER_MATMUL, SS__LAYER_GEMM, SS__LAYER_CONV } ss__lkind_t;

/* A MatMul/Gemm/Conv node whose weight (input 1) is a constant. */
typedef struct ss__layer {
    int node;
    ss__lkind_t kind;
    int x;                      /* activation value id */
    int w;                      /* weight value id */
    int b;                      /* Gemm/Conv bias value id, or -1 */
    int out_axis;               /* axis of W that indexes output channels */
    int64_t n_out, n_in;        /* output channels, reduction size */
} ss__layer_t;

/* Finds the layers in node order; *out is new (ss_free). */
int ss__find_layers(const ss_graph_t *g, ss__layer_t **out, int *n,
                    ss_err_t *err);
/* Readers of each value: counts and node lists (one array each, new). */
typedef struct ss__uses {
    int n;                      /* values */
    int *count;                 /* per value */
    int **nodes;                /* per value: reader node indices */
    bool *is_output;            /* per value: a graph output */
} ss__uses_t;
int ss__uses_build(const ss_graph_t *g, ss__uses_t *u, ss_err_t *err);
void ss__uses_clear(ss__uses_t *u);

/* A new f32 constant value (zeroed) of the given shape; returns its id
 * and sets *data to its buffer. */
int ss__new_const(ss_graph_t *g, const char *name, ss_dtype_t dtype,
                  int ndim, const int64_t *dims, void **data, ss_err_t *err);
const char *ss__node_label(const ss_graph_t *g, int node);
/* Folds every BatchNormalization that alone reads a Conv's output into
 * that Conv; finalizes g when anything changed. */
int ss__fold_bn(ss_graph_t *g, int *n_folded, ss_err_t *err);
/* Gives every Identity of a constant (torch's exporter ties parameters of
 * equal value that way) a copy of its own as a plain constant; finalizes
 * g when anything changed. */
int ss__untie_consts(ss_graph_t *g, int *n_untied, ss_err_t *err);
/* Whether ss__untie_consts would change g. */
bool ss__has_tied_consts(const ss_graph_t *g);

/* ---- methods ------------------------------------------------------------ */

/* What a method may use besides the graph. */
typedef struct ss__cx {
    const ss_graph_t *src;      /* the source: the teacher of training */
    const ss_dataset_t *train;  /* training data, or NULL */
    const ss_dataset_t *calib;
    const ss_dataset_t *val;
    const ss_gate_t *gate;
    const ss_compress_ctl_t *ctl;
    const ss__outputs_t *src_out; /* source outputs over val */
    double src_acc;
    double p0, p1;              /* progress range of this method */
    ss_lora_adapter_t *adapter; /* lora without merge: what it trained
                                 * (owned; the result takes it) */
    /* Training runs (ss__train_graph) call it twice per step: with
     * after 0 once the gradients are computed (it may add to
     * ss_train_grads(): a penalty), with after 1 once the update is
     * done (it may project ss_train_params()).  NULL: plain steps.  The
     * search's width masks use it (search_mask.c); not with ctl->dp. */
    int (*step_hook)(void *arg, ss_train_t *t, int after, ss_err_t *err);
    void *step_hook_arg;
} ss__cx_t;

/* SS_ECANCELED once the job was cancelled, else 0; also a pacing point
 * (common/pace.h): the calling thread may wait here for serving. */
int ss__cx_cancelled(const ss__cx_t *cx);
void ss__cx_progress(const ss__cx_t *cx, double f, const char *step);

/* Each replaces *g (owned, finalized) by the transformed graph and adds
 * its notes to note (an object). */
int ss__ptq(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            json_t *note, ss_err_t *err);
int ss__prune(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
              json_t *note, ss_err_t *err);
int ss__lowrank(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                json_t *note, ss_err_t *err);
int ss__finetune(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                 json_t *note, ss_err_t *err);
int ss__distill(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                json_t *note, ss_err_t *err);
int ss__qat(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
            json_t *note, ss_err_t *err);
/* MoEfication (moefy.c): notes say "changed": false when no FFN was
 * found. */
int ss__moefy(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
              json_t *note, ss_err_t *err);
/* lora.c: trains A and B on *g frozen; *g becomes g with the update
 * merged, and without merge cx->adapter the adapter. */
int ss__lora(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
             json_t *note, ss_err_t *err);
/* distill's layer student: g without the blocks m does not keep
 * (distill_layers.c); notes into snote. */
int ss__distill_layers(const ss_method_t *m, ss_graph_t *g, json_t *snote,
                       ss_err_t *err);

/* The training loop of the three (finetune.c): trains *g against the
 * source's outputs on cx->train (KL at the method's temperature; with
 * labels the KD mix), validates after every epoch, and replaces *g by
 * the trained graph.  frozen (may be NULL) names initializers left
 * alone.  Adds "training" to note. */
int ss__train_graph(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                    const char *const *frozen, int n_frozen, json_t *note,
                    ss_err_t *err);
/* The same, learning the step sizes named in scales too (qat's LSQ; see
 * compress/train/train.h). */
int ss__train_graph_lsq(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g,
                        const char *const *frozen, int n_frozen,
                        const char *const *scales, int n_scales,
                        json_t *note, ss_err_t *err);

/* Calibration "mse" (calib_mse.c): scores clips of one activation by
 * the squared quantization error its readers (the quantized layers
 * reading it, n >= 1) see, each input channel weighted by the squared
 * norm of the weight columns reading it.  sample: one calibration
 * output of the tensor (its shape); absmax: its min/max clip; u8: the
 * build quantizes it unsigned; total: values the passes will show.  Add
 * every calibration output, then take the best clip. */
typedef struct ss__mse ss__mse_t;
/* "minmax", "percentile" or "mse" (the details' name) */
const char *ss__calib_name(ss_calib_kind_t kind);
int ss__mse_new(const ss_graph_t *g, const ss__layer_t *const *readers,
                int n, const ss_tensor_t *sample, float absmax, bool u8,
                double total, ss__mse_t **out, ss_err_t *err);
void ss__mse_add(ss__mse_t *a, const ss_tensor_t *t);
float ss__mse_clip(const ss__mse_t *a);
void ss__mse_free(ss__mse_t *a);

/* PTQ's plan, which qat reuses (quant.c): the layers of g (f32, its
 * BatchNorms folded; borrowed, read again by build, so its constants may
 * be replaced in between) with calibrated activation ranges. */
typedef struct ss__qplan ss__qplan_t;
int ss__qplan_new(ss__cx_t *cx, const ss_method_t *ptq, const ss_graph_t *g,
                  ss__qplan_t **out, ss_err_t *err);
int ss__qplan_layers(const ss__qplan_t *q);
/* A new QDQ graph of every layer: s8 weights, or with fake the f32
 * weights behind QuantizeLinear + DequantizeLinear (trainable). */
int ss__qplan_build(const ss__qplan_t *q, bool fake, ss_graph_t **out,
                    ss_err_t *err);
json_t *ss__qplan_list(const ss__qplan_t *q);
/* The quantized activations: how many; the name build gives activation
 * i's scale (-1 when it does not fit buf); its scale now; and a learned
 * one (qat's LSQ) that the next build uses.  [the compress thread] */
int ss__qplan_n_acts(const ss__qplan_t *q);
int ss__qplan_act_scale_name(const ss__qplan_t *q, int i, char *buf,
                             size_t len);
float ss__qplan_act_scale(const ss__qplan_t *q, int i);
void ss__qplan_set_act_scale(ss__qplan_t *q, int i, float scale);
/* Layer i's weight scales (per output channel): the name build gives
 * them with fake (-1 when it does not fit buf), and learned ones (qat's
 * LSQ; n of them, each > 0, copied) that later builds quantize the
 * weight with, instead of max|w| / 127.  [the compress thread] */
int ss__qplan_weight_scale_name(const ss__qplan_t *q, int i, char *buf,
                                size_t len);
int ss__qplan_set_weight_scale(ss__qplan_t *q, int i, const float *scale,
                               int64_t n, ss_err_t *err);
void ss__qplan_free(ss__qplan_t *q);

/* Tensor-level pieces, tested on their own (quant.c, lowrank.c). */
/* Per-channel symmetric s8: scale[c] = max|w[c]| / 127 (1 when all
 * zero); w is f32 with dims, channels along axis. */
int ss__quantize_weight(const float *w, int ndim, const int64_t *dims,
                        int axis, int8_t *q, float *scale);
/* Truncated SVD of row-major a (m x n): a ~ A (m x r) B (r x n), rank by
 * energy (>0) or ratio, 1 <= r <= min(m, n); A and B are new (ss_free).
 * Whether the factors pay is the caller's question (ss__lowrank_pays). */
int ss__svd_factor(const float *a, int64_t m, int64_t n, double energy,
                   double ratio, int64_t *r, float **A, float **B,
                   ss_err_t *err);
/* The ways a layer is factored, each with the largest share of the
 * layer's multiply-adds its factors may cost (lowrank.c's table, from
 * measurements: two products and the tensor between them cost more per
 * multiply-add than one). */
typedef enum {
    SS__LR_LINEAR,              /* MatMul/Gemm: x A then B */
    SS__LR_CHANNEL,             /* conv to r channels, then 1x1 */
    SS__LR_SPATIAL,             /* kh x 1 conv, then 1 x kw */
    SS__LR_N
} ss__lr_kind_t;
/* True when factors costing after multiply-adds (per row or per output
 * pixel) pay for a layer costing before. */
bool ss__lowrank_pays(ss__lr_kind_t kind, int64_t after, int64_t before);
/* Replaces 2-D conv layer l by the cheaper of its channel and spatial
 * factorizations (lowrank_conv.c) when it pays (ss__lowrank_pays);
 * info gets "factorization", "rank" and the costs when it was replaced,
 * "macs_fraction" (the cheaper candidate's share) either way. */
int ss__lowrank_conv(ss_graph_t *g, const ss__layer_t *l, double energy,
                     double ratio, json_t *info, ss_err_t *err);

#endif
