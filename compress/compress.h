/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMPRESS_H
#define SS_COMPRESS_H

/*
 * Model compression: from a served graph and some data to a smaller,
 * faster variant graph, measured against the source.
 *
 * ss_compress_run() applies a pipeline of methods (e.g. prune then PTQ) to
 * a private copy of the source graph, evaluates source and variant on the
 * validation data (accuracy when labels exist, top-1 agreement with the
 * source, maximum relative error of the outputs), measures their latency
 * at batch 1 and 32 and their weight bytes, and checks the gate.  PTQ is
 * accuracy-aware: while the gate fails it returns the layers that hurt
 * most to f32, one at a time, until it holds or nothing is left.
 *
 * Training methods (finetune, distill, qat) train through the trainer
 * (compress/train/train.h) on ctl->train, with the source as the teacher:
 * its logits over the training rows are the targets (KL at a
 * temperature; with labels the KD mix), so unlabeled data is enough.
 * finetune trains the variant the methods before it made; distill trains
 * a smaller student (every hidden width scaled, or a user's graph).
 * Progress arrives per step through ctl->train_progress.
 *
 * The variant is standard ONNX once saved (ss_graph_save_onnx): int8 as
 * QuantizeLinear/DequantizeLinear around weights and activations; bf16 as
 * the f32 graph with metadata "slimserve.precision" = "bf16"; pruned and
 * low-rank variants as plain smaller f32 graphs.
 *
 * Nothing here knows about HTTP; jansson is used only for the free-form
 * details of a result.
 *
 * THREADS: ss_compress_run() runs on the caller's thread (an admin job
 * thread) and uses ctl->threads oneDNN threads; it reads the source graph
 * (immutable, may be served concurrently) and never changes it.  Cancel by
 * setting *ctl->cancel: the run stops at the next step with SS_ECANCELED.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"
#include "compress/train/train.h"
#include "engine/engine.h"

/* Calibration or validation data: one tensor per graph input, in graph
 * order, batch dim first (rows), plus optional integer class labels. */
typedef struct ss_dataset {
    int n_inputs;
    ss_tensor_t *inputs;        /* borrowed */
    int64_t rows;
    const ss_tensor_t *labels;  /* INT64 [rows] or NULL */
} ss_dataset_t;

typedef enum {
    SS_METHOD_PTQ = 1,
    SS_METHOD_BF16,
    SS_METHOD_PRUNE,
    SS_METHOD_LOWRANK,
    SS_METHOD_FINETUNE,         /* train the variant so far, teacher: the
                                 * source */
    SS_METHOD_DISTILL,          /* train a smaller student */
    SS_METHOD_QAT,              /* fake-quantized training, then int8 */
    SS_METHOD_MOEFY,            /* dense FFNs split into experts and a
                                 * router (compress/moefy.c) */
    SS_METHOD_LORA              /* a LoRA adapter trained on the frozen
                                 * model (compress/lora.c) */
} ss_method_kind_t;

/* Is kind one of the methods that train the model on training data
 * (finetune, distill, qat, lora)?  (moefy trains its router alone, on
 * the calibration data.) */
#define SS_METHOD_TRAINS(kind) \
    (((kind) >= SS_METHOD_FINETUNE && (kind) <= SS_METHOD_QAT) \
     || (kind) == SS_METHOD_LORA)

typedef enum { SS_PRECISION_F32 = 0, SS_PRECISION_BF16 } ss_precision_t;

#define SS_MAX_STUDENT_LAYERS 32
/* lora: most target names, and the longest name (module or adapter). */
#define SS_LORA_MAX_TARGETS 32
#define SS_LORA_NAME_MAX 128

typedef enum {
    SS_CALIB_MINMAX = 0, SS_CALIB_PERCENTILE, SS_CALIB_MSE
} ss_calib_kind_t;
typedef enum { SS_PRUNE_UNSTRUCTURED = 0, SS_PRUNE_STRUCTURED } ss_prune_kind_t;
typedef enum { SS_SCORE_L1 = 0, SS_SCORE_L2, SS_SCORE_ACTIVATION } ss_score_t;

typedef struct ss_method {
    ss_method_kind_t kind;
    union {
        struct {
            ss_calib_kind_t calib;
            double percentile;      /* e.g. 99.99, for SS_CALIB_PERCENTILE */
            bool fallback;          /* accuracy-aware fallback (default on) */
        } ptq;
        struct {
            ss_prune_kind_t kind;
            double sparsity;        /* fraction removed, 0..1 */
            bool global;            /* unstructured: one threshold */
            ss_score_t score;       /* structured importance */
        } prune;
        struct {
            double energy;          /* retained spectral energy, 0..1; or */
            double ratio;           /* rank / min(m, n) when energy <= 0 */
        } lowrank;
        /* finetune, distill, qat (compress/finetune.c) */
        struct {
            int epochs;
            int batch_size;
            int precision;          /* ss_precision_t */
            double width;           /* distill: student width in (0, 1);
                                     * 0: not given */
            char student_file[256]; /* distill: a user's student, by the
                                     * name the request gave; "" none */
            const ss_graph_t *student; /* its graph: borrowed, loaded and
                                     * checked by the caller (it must
                                     * outlive the run) */
            int layers[SS_MAX_STUDENT_LAYERS]; /* distill: the teacher's
                                     * blocks the student keeps */
            int n_layers;           /* 0: not given */
            int calib;              /* qat: ss_calib_kind_t of the
                                     * activation scales */
            double percentile;      /* qat: for SS_CALIB_PERCENTILE */
            int weight_scales;      /* qat: 1 learned (LSQ), 0 max|w|/127
                                     * of the trained weights */
            int min_steps;          /* qat: more epochs than asked while
                                     * the run would take fewer steps */
            /* lora (compress/lora.c) */
            char adapter[SS_LORA_NAME_MAX]; /* the adapter's name */
            int rank;               /* r */
            double lora_alpha;      /* the update is (alpha / r) B A */
            int n_targets;          /* 0: every Gemm/MatMul weight */
            char targets[SS_LORA_MAX_TARGETS][SS_LORA_NAME_MAX];
            /* targets was one string: targets[0] is a regular
             * expression (PEFT's target_modules as a string), not a
             * name */
            bool targets_pattern;
            bool merge;             /* a version with the update folded
                                     * into the weights, not an adapter */
            ss_train_opts_t opt;    /* loss weights, optimizer, schedule,
                                     * seed: the trainer's own table */
        } train;
        /* moefy (compress/moefy.c) */
        struct {
            int experts;            /* E per FFN */
            int k;                  /* experts each row runs, < E */
            int epochs;             /* router training passes over the
                                     * calibration rows */
            double lr;              /* router training */
            int seed;               /* clustering and shuffling */
        } moefy;
    } u;
    /* Per-layer choice, for the variant search (compress/search.h), not
     * part of a request: called [the compress thread] with the label of
     * each layer ptq, prune (structured) or lowrank would change (the
     * node's name), it returns that layer's value -- prune's sparsity,
     * lowrank's ratio, ptq's > 0 to quantize -- or <= 0 to leave the
     * layer alone.  NULL: every layer, with the parameters above. */
    double (*per_layer)(void *arg, const char *layer);
    void *per_layer_arg;
} ss_method_t;

/* Defaults for a method kind (what a bare "ptq" means), from the
 * parameter table below. */
void ss_method_default(ss_method_t *m, ss_method_kind_t kind);
const char *ss_method_name(ss_method_kind_t kind);

/* ---- method parameters: one table (compress/params.c) ------------------- */

typedef enum {
    SS_PARAM_NUMBER = 1,        /* a double */
    SS_PARAM_BOOL,
    SS_PARAM_CHOICE,            /* one of named values (an enum) */
    SS_PARAM_INT,               /* an integral number, stored in an int */
    SS_PARAM_TRAIN,             /* a trainer hyper-parameter of the same
                                 * name (train.h's table: its type and
                                 * bounds), with this row's default */
    SS_PARAM_OBJECT,            /* an object: each key goes through the
                                 * row's set_key */
    SS_PARAM_LIST,              /* a value only: a list of numbers, inside
                                 * an object ("layers": [0, 2]) */
    SS_PARAM_STRINGS            /* a string or a list of strings: the
                                 * row's set_key checks and stores it (key:
                                 * the parameter's name) */
} ss_param_type_t;

typedef struct ss_param_choice {
    const char *name;           /* as a request spells it */
    int value;
} ss_param_choice_t;

enum {
    /* 0 means "not given" (one of an either-or pair), not a value. */
    SS_PARAM_ZERO_UNSET = 1 << 0
};

/* One parameter of one method: the one place its name, type, default,
 * bounds and help are declared.  Requests name parameters as the rows
 * do (the admin API's "params"). */
struct ss_param_value;
struct ss_method;

/* One key of an OBJECT parameter ("optimizer": {"lr": 1e-3}); checks and
 * stores the value, or SS_EINVAL naming the key. */
typedef int (*ss_param_key_fn)(struct ss_method *m, const char *key,
                               const struct ss_param_value *v,
                               ss_err_t *err);

typedef struct ss_method_param {
    ss_method_kind_t method;
    const char *name;
    ss_param_type_t type;
    double def;                 /* NUMBER; BOOL 0/1; CHOICE its value */
    double min, max;            /* NUMBER: the bounds, */
    bool min_open, max_open;    /* excluded when open */
    const ss_param_choice_t *choices; /* CHOICE: ends with a NULL name */
    const char *clears;         /* setting this one unsets that one */
    unsigned flags;             /* SS_PARAM_ZERO_UNSET */
    const char *help;
    size_t offset, size;        /* where the value lives in ss_method_t */
    ss_param_key_fn set_key;    /* OBJECT: sets one of its keys */
} ss_method_param_t;

extern const ss_method_param_t ss_method_params[];
extern const size_t ss_method_n_params;

/* A method's parameter by name; NULL when it has none of that name. */
const ss_method_param_t *ss_method_param_find(ss_method_kind_t kind,
                                              const char *name);

/* A value as a request gives it: type says which member holds it (0 when
 * it is none of these, e.g. a JSON array). */
typedef struct ss_param_value {
    int type;                   /* ss_param_type_t, or 0 */
    double number;
    bool boolean;
    const char *text;           /* CHOICE: the name */
    const double *list;         /* LIST: n_list numbers (borrowed) */
    int n_list;
    const char *const *strings; /* STRINGS: a list of n_strings (borrowed;
                                 * a lone string is CHOICE's text) */
    int n_strings;
} ss_param_value_t;

/* Sets key of OBJECT parameter p in m ("optimizer", "lr"). */
int ss_method_param_set_key(ss_method_t *m, const ss_method_param_t *p,
                            const char *key, const ss_param_value_t *v,
                            ss_err_t *err);

/* Sets p in m (m->kind must be p's method) after checking the value
 * against the row.  Returns 0, or SS_EINVAL with err naming the method,
 * the parameter and what it takes ("prune: sparsity must be a number in
 * [0, 1), not 1.5"). */
int ss_method_param_set(ss_method_t *m, const ss_method_param_t *p,
                        const ss_param_value_t *v, ss_err_t *err);
/* Checks the order of a pipeline: a training method after ptq, qat or
 * bf16 is SS_EINVAL (ss_compress_run does; request parsers too). */
int ss_method_check_order(const ss_method_t *methods, int n, ss_err_t *err);
/* Checks every parameter of m against its row (ss_compress_run does),
 * and what the rows cannot say alone: the trainer's options together,
 * and bf16 training on this CPU.  A request parser calls it too, so that
 * a bad body is refused before a job exists. */
int ss_method_check_params(const ss_method_t *m, ss_err_t *err);

/* A method from JSON: a name ("ptq") or {"method": name, "params":
 * {...}} (borrowed); m gets the defaults, then each parameter through
 * the table, then ss_method_check_params().  SS_EINVAL naming the
 * method and the parameter. */
int ss_method_from_json(json_t *v, ss_method_t *m, ss_err_t *err);

/* distill: checks that a user's student takes the inputs and gives the
 * outputs of the source (names, dtypes, ranks, every dim but the batch);
 * SS_EINVAL naming the first difference. */
int ss_distill_check_student(const ss_graph_t *src,
                             const ss_graph_t *student, ss_err_t *err);
/* distill {"layers": [...]}: checks the block indices against the
 * source's repeated residual blocks (compress/distill_layers.c); SS_EINVAL
 * for an unknown block, a model without blocks, or every block kept. */
int ss_distill_check_layers(const ss_graph_t *src, const ss_method_t *m,
                            ss_err_t *err);
/* distill {"width": w}: SS_EINVAL when no hidden width of the source can
 * be scaled (no pair of layers structured pruning can cut: every width
 * reaches a residual Add, a normalization or a reshape, as in a ResNet
 * or a DenseNet), before a job exists. */
int ss_distill_check_width(const ss_graph_t *src, const ss_method_t *m,
                           ss_err_t *err);

typedef struct ss_gate {
    double max_accuracy_drop;   /* relative (0.01 = 1% of the source's
                                 * accuracy); < 0 when unset; needs labels */
    double min_agreement;       /* top-1 agreement with the source; < 0 */
    double max_relative_error;  /* max |a-b| / max |b| over outputs; < 0 */
} ss_gate_t;

/* A gate from JSON ({"max_accuracy_drop": 0.01, "min_agreement": ...,
 * "max_relative_error": ...}; NULL: every bound unset, -1). */
int ss_gate_from_json(json_t *v, ss_gate_t *g, ss_err_t *err);

/* Where a training method is, for a job's status: after every step, and
 * after each epoch's validation. */
typedef struct ss_train_progress {
    const char *method;         /* "finetune", "distill", "qat" */
    int epoch, epochs;          /* the current epoch, from 1 */
    int64_t step, steps;        /* optimizer steps done, planned */
    int64_t samples;            /* training samples seen */
    double loss;                /* of the last step */
    double epoch_loss;          /* mean over this epoch's steps so far */
    double lr;                  /* of the next step */
    double val_metric;          /* after the last finished epoch: accuracy
                                 * (labels) or agreement with the source;
                                 * < 0 before the first */
    const char *val_name;       /* "accuracy" or "agreement" */
    double samples_per_s;
    double eta_s;               /* until the method ends */
    bool epoch_end;             /* this call follows a validation */
} ss_train_progress_t;

typedef struct ss_compress_ctl {
    atomic_int *cancel;         /* may be NULL */
    /* Progress: fraction 0..1 and the current step ("calibrating"); may be
     * NULL.  Called on the running thread. */
    void (*progress)(void *arg, double fraction, const char *step);
    void *arg;
    /* Training methods also report this (may be NULL; same thread and
     * arg as progress). */
    void (*train_progress)(void *arg, const ss_train_progress_t *p);
    int threads;                /* oneDNN threads; 0: default */
    int latency_runs;           /* per latency measurement; 0: 20 */
    /* Training data of finetune, distill and qat (borrowed; NULL when
     * none): one tensor per graph input, optional labels. */
    const ss_dataset_t *train;
    /* Data-parallel training (compress/train/train.h; may be NULL): each
     * process runs the same pipeline on the same data, and the training
     * methods train on its shard of every global batch ("batch_size"
     * rows, cut in dp->size) with the trainer's collectives.  Every
     * process ends with the same variant; the caller keeps one.  dp's
     * weight is set by the loop.  Borrowed. */
    const ss_train_dp_t *dp;
} ss_compress_ctl_t;

typedef struct ss_eval {
    double accuracy;            /* -1 without labels */
    double agreement;           /* vs the source; 1 for the source */
    double max_relative_error;  /* vs the source; 0 for the source */
    double latency_ms_b1;       /* median */
    double latency_ms_b32;
    size_t weight_bytes;
} ss_eval_t;

/* A trained LoRA adapter in PEFT's terms (lora without merge): per
 * module, A [r, in] and B [out, r], the update (alpha / r) B A. */
typedef struct ss_lora_module {
    char name[SS_LORA_NAME_MAX];    /* "fc1", "layers.0.attn.qkv" */
    ss_tensor_t a, b;               /* F32; data owned */
} ss_lora_module_t;

typedef struct ss_lora_adapter {
    char name[SS_LORA_NAME_MAX];
    int r;
    double alpha;
    int n_modules;
    ss_lora_module_t *modules;      /* owned */
} ss_lora_adapter_t;

void ss_lora_adapter_free(ss_lora_adapter_t *a);
/* Writes a into dir (which must exist) as PEFT does:
 * adapter_config.json and adapter_model.safetensors (keys
 * base_model.model.<module>.lora_A.weight / lora_B.weight), each file
 * atomically.  The caller makes the folder appear whole (jobs.c). */
int ss_lora_adapter_write(const ss_lora_adapter_t *a, const char *dir,
                          ss_err_t *err);

typedef struct ss_compress_result {
    ss_graph_t *variant;        /* owned by the result; NULL on failure */
    ss_lora_adapter_t *adapter; /* lora without merge: the adapter (owned;
                                 * variant is then the base model with it
                                 * merged, what the gate judged) */
    bool passed;                /* the gate held */
    bool unchanged;             /* a method changed nothing (its note says
                                 * "changed": false): not passed, whatever
                                 * the gate, with gate_reason saying which
                                 * and why; variant_eval is the source's */
    char gate_reason[256];      /* why it did not; "" when it held */
    ss_eval_t source;
    ss_eval_t variant_eval;
    json_t *details;            /* {"methods": [per-method notes: layers
                                 * quantized, fallen back, pruned,
                                 * ranks...]}; owned */
} ss_compress_result_t;

/* Runs the pipeline.  calib may be NULL for methods that need no data
 * (unstructured/L1/L2 pruning, low-rank, bf16); val must have rows > 0.
 * Returns 0 with res filled (check res->passed), or a negative code
 * (SS_EINVAL bad parameters, SS_ECANCELED, SS_EUNSUPP, ...) with err set.
 * The result must be released with ss_compress_result_clear() either
 * way. */
int ss_compress_run(const ss_graph_t *src, const ss_method_t *methods,
                    int n_methods, const ss_dataset_t *calib,
                    const ss_dataset_t *val, const ss_gate_t *gate,
                    const ss_compress_ctl_t *ctl, ss_compress_result_t *res,
                    ss_err_t *err);
void ss_compress_result_clear(ss_compress_result_t *res);

/* The measurements of one graph as JSON (new reference; NULL when out of
 * memory): {"accuracy": a fraction, or null without labels, "agreement",
 * "max_relative_error" (null when not finite), "latency_ms": {"batch1",
 * "batch32"}, "weight_bytes"}. */
json_t *ss_eval_json(const ss_eval_t *e);

/* The one record of a run's results (new reference; NULL when out of
 * memory): {"source": eval, "variant": eval, "gate": {"passed", "reason"
 * (when it failed), "max_accuracy_drop", "min_agreement",
 * "max_relative_error" (the bounds judged; null when unset)},
 * "details": res->details}.  Admin jobs answer it (adding "version" and
 * "activated") and variant.json keeps it as "measurements". */
json_t *ss_compress_result_json(const ss_compress_result_t *res,
                                const ss_gate_t *gate);

/* Evaluates g alone on val (outputs of ref, when given, are the reference
 * for agreement and error); used by the run and by tests. */
int ss_compress_evaluate(const ss_graph_t *g, const ss_dataset_t *val,
                         const ss_graph_t *ref, const ss_compress_ctl_t *ctl,
                         ss_eval_t *out, ss_err_t *err);

#endif
