/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The methods' parameters, declared once: one row per parameter with its
 * type, default, bounds and help.  ss_method_default() writes the
 * defaults, ss_compress_run() checks a method against the rows before any
 * work, and a request parser (the admin job body) finds a row by name
 * and sets the value through it, so a bound lives in one place.
 *
 * DESIGN: a row says where its value lives in ss_method_t (offset and
 * size), so setting and checking are generic; the few rules between
 * parameters (energy or ratio; what needs calibration data) stay in
 * compress.c next to the run.  The training methods' hyper-parameters
 * that the trainer already declares (compress/train/train.h: lr,
 * temperature, ...) are not declared again: a TRAIN row names one and
 * gives only this method's default, and the "optimizer" object's keys
 * go straight to the trainer's table.
 *
 * THREADS: [any]; the table is constant.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compress/compress.h"
#include "engine/dnnl/dnnl.h"
#include "engine/ir/sites.h"

/* Where a value lives; the last member (set_key) is for OBJECT rows. */
#define FIELD(f) offsetof(ss_method_t, u.f), \
    sizeof(((ss_method_t *)0)->u.f), NULL

static int optimizer_key(ss_method_t *m, const char *key,
                         const ss_param_value_t *v, ss_err_t *err);
static int student_key(ss_method_t *m, const char *key,
                       const ss_param_value_t *v, ss_err_t *err);
static int lora_key(ss_method_t *m, const char *key,
                    const ss_param_value_t *v, ss_err_t *err);

static const ss_param_choice_t calibs[] = {
    { "minmax", SS_CALIB_MINMAX },
    { "percentile", SS_CALIB_PERCENTILE },
    { "mse", SS_CALIB_MSE },
    { NULL, 0 }
};
static const ss_param_choice_t prune_kinds[] = {
    { "unstructured", SS_PRUNE_UNSTRUCTURED },
    { "structured", SS_PRUNE_STRUCTURED },
    { NULL, 0 }
};
static const ss_param_choice_t scopes[] = {
    { "global", 1 },
    { "layer", 0 },
    { NULL, 0 }
};
static const ss_param_choice_t scores[] = {
    { "l1", SS_SCORE_L1 },
    { "l2", SS_SCORE_L2 },
    { "activation", SS_SCORE_ACTIVATION },
    { NULL, 0 }
};

static const ss_param_choice_t wscales[] = {
    { "learned", 1 },
    { "maxabs", 0 },
    { NULL, 0 }
};

static const ss_param_choice_t precisions[] = {
    { "f32", SS_PRECISION_F32 },
    { "bf16", SS_PRECISION_BF16 },
    { NULL, 0 }
};

/* What every training method takes; temperature's default differs: a
 * student far from its teacher learns from softer targets (4, as Hinton
 * et al.), a pruned or fake-quantized copy is close already and recovers
 * more at T = 1 (see finetune.c). */
#define TRAIN_ROWS(M, EPOCHS, T)                                            \
    { M, "epochs", SS_PARAM_INT, EPOCHS, 1, 1000, false, false, NULL, NULL, \
      0, "passes over the training data", FIELD(train.epochs) },            \
    { M, "batch_size", SS_PARAM_INT, 64, 1, 4096, false, false, NULL, NULL, \
      0, "samples per step (at most the training rows)",                   \
      FIELD(train.batch_size) },                                            \
    { M, "temperature", SS_PARAM_TRAIN, T, 0, 0, false, false, NULL, NULL,  \
      0, "distillation temperature: KL at T, scaled by T^2", 0, 0, NULL },  \
    { M, "alpha", SS_PARAM_TRAIN, 0.5, 0, 0, false, false, NULL, NULL, 0,   \
      "with labels: weight of the KL to the teacher; 1 - alpha weighs "     \
      "cross-entropy", 0, 0, NULL },                                        \
    { M, "seed", SS_PARAM_TRAIN, 0, 0, 0, false, false, NULL, NULL, 0,      \
      "the shuffling and every other random choice", 0, 0, NULL },          \
    { M, "precision", SS_PARAM_CHOICE, SS_PRECISION_F32, 0, 0, false,       \
      false, precisions, NULL, 0, "arithmetic of the training steps",       \
      FIELD(train.precision) },                                             \
    { M, "optimizer", SS_PARAM_OBJECT, 0, 0, 0, false, false, NULL, NULL,   \
      0, "{\"name\": \"adamw\" | \"sgd\" | \"sophia\", \"lr\", "  \
      "\"weight_decay\", ...}: any optimizer or schedule parameter of "   \
      "the trainer", 0, 0, optimizer_key }

const ss_method_param_t ss_method_params[] = {
    { SS_METHOD_PTQ, "calibration", SS_PARAM_CHOICE, SS_CALIB_MINMAX, 0, 0,
      false, false, calibs, NULL, 0,
      "activation ranges: min/max, a percentile of |x|, or mse (the "
      "clip with the least error in the layers reading the tensor)",
      FIELD(ptq.calib) },
    { SS_METHOD_PTQ, "percentile", SS_PARAM_NUMBER, 99.99, 50, 100, true,
      false, NULL, NULL, 0, "the percentile for calibration \"percentile\"",
      FIELD(ptq.percentile) },
    { SS_METHOD_PTQ, "fallback", SS_PARAM_BOOL, 1, 0, 0, false, false, NULL,
      NULL, 0, "while the gate fails, return the layer that hurts most to "
      "f32", FIELD(ptq.fallback) },
    { SS_METHOD_PRUNE, "kind", SS_PARAM_CHOICE, SS_PRUNE_UNSTRUCTURED, 0, 0,
      false, false, prune_kinds, NULL, 0,
      "zero single weights, or remove whole neurons, channels and heads",
      FIELD(prune.kind) },
    { SS_METHOD_PRUNE, "sparsity", SS_PARAM_NUMBER, 0.5, 0, 1, false, true,
      NULL, NULL, 0, "fraction of the weights (or units) removed",
      FIELD(prune.sparsity) },
    { SS_METHOD_PRUNE, "scope", SS_PARAM_CHOICE, 1, 0, 0, false, false,
      scopes, NULL, 0, "unstructured: one threshold for every layer, or "
      "one per layer", FIELD(prune.global) },
    { SS_METHOD_PRUNE, "score", SS_PARAM_CHOICE, SS_SCORE_L2, 0, 0, false,
      false, scores, NULL, 0, "structured: how a unit's importance is "
      "scored (activation needs calibration data)", FIELD(prune.score) },
    { SS_METHOD_LOWRANK, "energy", SS_PARAM_NUMBER, 0.9, 0, 1, true, false,
      NULL, "ratio", SS_PARAM_ZERO_UNSET,
      "spectral energy each factored layer keeps", FIELD(lowrank.energy) },
    { SS_METHOD_LOWRANK, "ratio", SS_PARAM_NUMBER, 0, 0, 1, true, false,
      NULL, "energy", SS_PARAM_ZERO_UNSET,
      "rank / min(m, n), instead of an energy", FIELD(lowrank.ratio) },
    TRAIN_ROWS(SS_METHOD_FINETUNE, 2, 1.0),
    TRAIN_ROWS(SS_METHOD_DISTILL, 10, 4.0),
    { SS_METHOD_DISTILL, "student", SS_PARAM_OBJECT, 0, 0, 0, false, false,
      NULL, NULL, 0, "{\"width\": w}: every hidden width times w, from "
      "the units structured pruning keeps; {\"layers\": [0, 2]}: only "
      "these repeated blocks; {\"file\": \"s.onnx\"}: a student with "
      "the source's inputs and outputs", 0, 0, student_key },
    /* lora: the trainer's rows but "temperature" and "alpha" (here
     * LoRA's alpha; the loss is cross-entropy on the labels) */
    { SS_METHOD_LORA, "adapter", SS_PARAM_STRINGS, 0, 0, 0, false, false,
      NULL, NULL, 0, "the adapter's name (its folder under adapters/)",
      0, 0, lora_key },
    { SS_METHOD_LORA, "rank", SS_PARAM_INT, 8, 1, 1024, false, false, NULL,
      NULL, 0, "r: the rank of the update B A", FIELD(train.rank) },
    { SS_METHOD_LORA, "alpha", SS_PARAM_NUMBER, 16, 0, 1e6, true, false,
      NULL, NULL, 0, "lora_alpha: the update is scaled by alpha / r",
      FIELD(train.lora_alpha) },
    { SS_METHOD_LORA, "targets", SS_PARAM_STRINGS, 0, 0, 0, false, false,
      NULL, NULL, 0, "PEFT's target_modules: a list of module names (a "
      "module matches a name it is or ends with after a dot), or one "
      "string, a regular expression the whole name must match, or "
      "\"all-linear\"; default: every Gemm/MatMul weight", 0, 0, lora_key },
    { SS_METHOD_LORA, "target_modules", SS_PARAM_STRINGS, 0, 0, 0, false,
      false, NULL, NULL, 0, "the same as targets (PEFT's name)", 0, 0,
      lora_key },
    { SS_METHOD_LORA, "merge", SS_PARAM_BOOL, 0, 0, 0, false, false, NULL,
      NULL, 0, "write a new version with the update folded into the "
      "weights instead of an adapter", FIELD(train.merge) },
    { SS_METHOD_LORA, "epochs", SS_PARAM_INT, 3, 1, 1000, false, false, NULL,
      NULL, 0, "passes over the training data", FIELD(train.epochs) },
    { SS_METHOD_LORA, "batch_size", SS_PARAM_INT, 64, 1, 4096, false, false,
      NULL, NULL, 0, "samples per step (at most the training rows)",
      FIELD(train.batch_size) },
    { SS_METHOD_LORA, "seed", SS_PARAM_TRAIN, 0, 0, 0, false, false, NULL,
      NULL, 0, "A's initialization, the shuffling", 0, 0, NULL },
    { SS_METHOD_LORA, "precision", SS_PARAM_CHOICE, SS_PRECISION_F32, 0, 0,
      false, false, precisions, NULL, 0, "arithmetic of the training steps",
      FIELD(train.precision) },
    { SS_METHOD_LORA, "optimizer", SS_PARAM_OBJECT, 0, 0, 0, false, false,
      NULL, NULL, 0, "as finetune's: {\"name\": \"adamw\", \"lr\", ...}",
      0, 0, optimizer_key },
    TRAIN_ROWS(SS_METHOD_QAT, 2, 1.0),
    { SS_METHOD_QAT, "calibration", SS_PARAM_CHOICE, SS_CALIB_MSE, 0, 0,
      false, false, calibs, NULL, 0, "initial activation scales, as ptq's: "
      "min/max, a percentile of |x|, or mse", FIELD(train.calib) },
    { SS_METHOD_QAT, "percentile", SS_PARAM_NUMBER, 99.99, 50, 100, true,
      false, NULL, NULL, 0, "the percentile for calibration \"percentile\"",
      FIELD(train.percentile) },
    { SS_METHOD_QAT, "weight_scales", SS_PARAM_CHOICE, 1, 0, 0, false,
      false, wscales, NULL, 0, "per output channel: learned (LSQ, from "
      "max|w| / 127, at the optimizer's scale_lr) or maxabs (max|w| / 127 "
      "of the trained weights)", FIELD(train.weight_scales) },
    /* qat starts from a trained model and moves its weights and scales
     * to where rounding costs least; 2 epochs of a small set are a few
     * dozen steps, too few (bench/qat.py, 2 000 rows: 62 steps drop
     * 0.16-0.28%, 217 steps -0.13..0.15%; docs/training.md). */
    { SS_METHOD_QAT, "min_steps", SS_PARAM_INT, 200, 0, 1000000, false,
      false, NULL, NULL, 0, "at least this many steps: more epochs than "
      "\"epochs\" when the training data is small (0: exactly epochs)",
      FIELD(train.min_steps) },
    { SS_METHOD_MOEFY, "experts", SS_PARAM_INT, 8, 2, 256, false, false,
      NULL, NULL, 0, "experts each FFN is split into (its hidden neurons, "
      "clustered by co-activation)", FIELD(moefy.experts) },
    { SS_METHOD_MOEFY, "k", SS_PARAM_INT, 2, 1, 255, false, false, NULL,
      NULL, 0, "experts each row runs (below experts)", FIELD(moefy.k) },
    { SS_METHOD_MOEFY, "epochs", SS_PARAM_INT, 30, 0, 1000, false, false,
      NULL, NULL, 0, "router training passes over the calibration rows "
      "(0: the centroid router)", FIELD(moefy.epochs) },
    { SS_METHOD_MOEFY, "lr", SS_PARAM_NUMBER, 1e-2, 0, 1, true, false, NULL,
      NULL, 0, "router training learning rate (AdamW, cosine)",
      FIELD(moefy.lr) },
    { SS_METHOD_MOEFY, "seed", SS_PARAM_INT, 0, 0, 2147483647, false, false,
      NULL, NULL, 0, "clustering and shuffling", FIELD(moefy.seed) },
};

const size_t ss_method_n_params =
    sizeof(ss_method_params) / sizeof(ss_method_params[0]);

const ss_method_param_t *
ss_method_param_find(ss_method_kind_t kind, const char *name)
{
    size_t i;

    for (i = 0; i < ss_method_n_params; i++)
        if (ss_method_params[i].method == kind
            && strcmp(ss_method_params[i].name, name) == 0)
            return &ss_method_params[i];
    return NULL;
}

/* ---- the value of a row in a method ------------------------------------- */

static void
store(ss_method_t *m, const ss_method_param_t *p, double x)
{
    char *f = (char *)m + p->offset;

    if (p->type == SS_PARAM_NUMBER) {
        memcpy(f, &x, sizeof(x));
    } else if (p->size == sizeof(bool)) {
        bool b = x != 0;

        memcpy(f, &b, sizeof(b));
    } else {
        int i = (int)x;

        memcpy(f, &i, sizeof(i));
    }
}

static double
load(const ss_method_t *m, const ss_method_param_t *p)
{
    const char *f = (const char *)m + p->offset;
    double x;
    bool b;
    int i;

    if (p->type == SS_PARAM_NUMBER) {
        memcpy(&x, f, sizeof(x));
        return x;
    }
    if (p->size == sizeof(bool)) {
        memcpy(&b, f, sizeof(b));
        return b;
    }
    memcpy(&i, f, sizeof(i));
    return i;
}

/* The trainer's row of a TRAIN parameter. */
static const ss_train_param_row_t *
train_row(const char *name)
{
    const ss_train_param_row_t *t;
    int i, n;

    t = ss_train_params_table(&n);
    for (i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

/* What the row accepts, for messages: "a number in (0, 1]". */
static void
describe(const ss_method_param_t *p, char *buf, size_t n)
{
    const ss_train_param_row_t *t;
    size_t k = 0;
    int i;

    switch (p->type) {
    case SS_PARAM_NUMBER:
    case SS_PARAM_INT:
        snprintf(buf, n, "%s in %s%g, %g%s",
                 p->type == SS_PARAM_INT ? "an integer" : "a number",
                 p->min_open ? "(" : "[", p->min, p->max,
                 p->max_open ? ")" : "]");
        break;
    case SS_PARAM_TRAIN:
        t = train_row(p->name);
        snprintf(buf, n, "%s in %s%g, %g]",
                 t->type == SS_TP_INT ? "an integer" : "a number",
                 t->min_open ? "(" : "[", t->min, t->max);
        break;
    case SS_PARAM_OBJECT:
        snprintf(buf, n, "an object");
        break;
    case SS_PARAM_LIST:         /* no row is a list: values inside objects */
        snprintf(buf, n, "a list");
        break;
    case SS_PARAM_STRINGS:
        snprintf(buf, n, "a string or a list of strings");
        break;
    case SS_PARAM_BOOL:
        snprintf(buf, n, "true or false");
        break;
    case SS_PARAM_CHOICE:
        buf[0] = '\0';
        for (i = 0; p->choices[i].name != NULL && k < n; i++)
            k += (size_t)snprintf(buf + k, n - k, "%s\"%s\"",
                                  i == 0 ? ""
                                  : p->choices[i + 1].name == NULL ? " or "
                                                                   : ", ",
                                  p->choices[i].name);
        break;
    }
}

static bool
in_range(const ss_method_param_t *p, double x)
{
    return !isnan(x) && (p->min_open ? x > p->min : x >= p->min)
           && (p->max_open ? x < p->max : x <= p->max)
           && (p->type != SS_PARAM_INT || x == floor(x));
}

static const ss_param_choice_t *
choice_of(const ss_method_param_t *p, double x)
{
    int i;

    for (i = 0; p->choices[i].name != NULL; i++)
        if (p->choices[i].value == x)
            return &p->choices[i];
    return NULL;
}

void
ss_method_default(ss_method_t *m, ss_method_kind_t kind)
{
    size_t i;

    memset(m, 0, sizeof(*m));
    m->kind = kind;
    if (SS_METHOD_TRAINS(kind)) {
        /* The trainer's defaults, then this method's: a cosine decay to
         * zero over the planned steps (finetune.c sets total_steps). */
        ss_train_opts_default(&m->u.train.opt);
        m->u.train.opt.sched = SS_SCHED_COSINE;
        /* A student starts far from its teacher and has few steps (ten
         * epochs of a small set): at 1e-3 the width-0.25 digits MLP got
         * 0.81 of accuracy, at 1e-2 0.95 (teacher 0.97). */
        if (kind == SS_METHOD_DISTILL)
            m->u.train.opt.lr = 1e-2;
    }
    for (i = 0; i < ss_method_n_params; i++) {
        const ss_method_param_t *p = &ss_method_params[i];

        if (p->method != kind || p->type == SS_PARAM_OBJECT
            || p->type == SS_PARAM_STRINGS)
            continue;
        if (p->type == SS_PARAM_TRAIN)
            ss_train_opts_set(&m->u.train.opt, p->name, p->def, NULL);
        else
            store(m, p, p->def);
    }
}

int
ss_method_param_set(ss_method_t *m, const ss_method_param_t *p,
                    const ss_param_value_t *v, ss_err_t *err)
{
    const char *method = ss_method_name(p->method);
    int want_type = p->type == SS_PARAM_INT || p->type == SS_PARAM_TRAIN
                    ? SS_PARAM_NUMBER : (int)p->type;
    char want[128];
    size_t i;
    int rc;

    describe(p, want, sizeof(want));
    if (m->kind == p->method && p->type == SS_PARAM_STRINGS) {
        if ((rc = p->set_key(m, p->name, v, err)) < 0)
            return ss_err_wrap(err, rc, "%s", method);
        return 0;
    }
    if (m->kind != p->method || v->type != want_type
        || p->type == SS_PARAM_OBJECT || p->type == SS_PARAM_LIST)
        return ss_err_set(err, SS_EINVAL, "%s: %s must be %s", method,
                          p->name, want);
    switch (p->type) {
    case SS_PARAM_NUMBER:
    case SS_PARAM_INT:
        if (!in_range(p, v->number))
            return ss_err_set(err, SS_EINVAL, "%s: %s must be %s, not %g",
                              method, p->name, want, v->number);
        store(m, p, v->number);
        break;
    case SS_PARAM_TRAIN:
        if ((rc = ss_train_opts_set(&m->u.train.opt, p->name, v->number,
                                    NULL)) < 0)
            return ss_err_set(err, rc, "%s: %s must be %s, not %g", method,
                              p->name, want, v->number);
        break;
    case SS_PARAM_BOOL:
        store(m, p, v->boolean);
        break;
    case SS_PARAM_CHOICE:
        for (i = 0; p->choices[i].name != NULL; i++)
            if (v->text != NULL && strcmp(p->choices[i].name, v->text) == 0)
                break;
        if (p->choices[i].name == NULL)
            return ss_err_set(err, SS_EINVAL, "%s: %s must be %s", method,
                              p->name, want);
        store(m, p, p->choices[i].value);
        break;
    case SS_PARAM_OBJECT:
    case SS_PARAM_LIST:
    case SS_PARAM_STRINGS:
        break;
    }
    /* An either-or pair: giving one unsets the other. */
    if (p->clears != NULL) {
        const ss_method_param_t *o = ss_method_param_find(p->method,
                                                          p->clears);

        if (o != NULL)
            store(m, o, 0);
    }
    return 0;
}

int
ss_method_param_set_key(ss_method_t *m, const ss_method_param_t *p,
                        const char *key, const ss_param_value_t *v,
                        ss_err_t *err)
{
    int rc;

    if (m->kind != p->method || p->type != SS_PARAM_OBJECT)
        return ss_err_set(err, SS_EINVAL, "%s: %s is not an object",
                          ss_method_name(p->method), p->name);
    if ((rc = p->set_key(m, key, v, err)) < 0)
        return ss_err_wrap(err, rc, "%s: %s", ss_method_name(p->method),
                           p->name);
    return 0;
}

/* The optimizer object: "name" picks the optimizer, every other key is
 * the trainer's parameter of that name.  What the loss reads and how it
 * mixes are the method's own parameters, not the optimizer's. */
static int
optimizer_key(ss_method_t *m, const char *key, const ss_param_value_t *v,
              ss_err_t *err)
{
    static const char *const not_here[] = { "output", "loss", "temperature",
                                            "alpha", "threads", "optimizer",
                                            "seed", "batchnorm" };
    ss_train_opts_t *o = &m->u.train.opt;
    size_t i;

    if (strcmp(key, "name") == 0) {
        if (v->type != SS_PARAM_CHOICE)
            return ss_err_set(err, SS_EINVAL, "name must be \"adamw\", "
                              "\"sgd\" or \"sophia\"");
        return ss_train_opts_set_name(o, "optimizer", v->text, err);
    }
    for (i = 0; i < sizeof(not_here) / sizeof(not_here[0]); i++)
        if (strcmp(key, not_here[i]) == 0 || train_row(key) == NULL)
            return ss_err_set(err, SS_EINVAL, "unknown key '%s' (name, lr, "
                              "weight_decay, beta1, beta2, eps, momentum, "
                              "nesterov, rho, hessian_every, clip_norm, "
                              "scale_lr, schedule, warmup_steps, "
                              "total_steps, min_lr_ratio)", key);
    if (v->type == SS_PARAM_CHOICE)
        return ss_train_opts_set_name(o, key, v->text, err);
    if (v->type == SS_PARAM_BOOL)
        return ss_train_opts_set(o, key, v->boolean, err);
    if (v->type != SS_PARAM_NUMBER)
        return ss_err_set(err, SS_EINVAL, "'%s' must be a number", key);
    return ss_train_opts_set(o, key, v->number, err);
}

/* The student object of distill: one of width and file. */
static int
student_key(ss_method_t *m, const char *key, const ss_param_value_t *v,
            ss_err_t *err)
{
    size_t n;

    if (strcmp(key, "width") == 0) {
        if (v->type != SS_PARAM_NUMBER || !(v->number > 0 && v->number < 1))
            return ss_err_set(err, SS_EINVAL, "width must be a number in "
                              "(0, 1), not %g", v->type == SS_PARAM_NUMBER
                                                ? v->number : NAN);
        m->u.train.width = v->number;
        return 0;
    }
    if (strcmp(key, "file") == 0) {
        const char *f = v->type == SS_PARAM_CHOICE ? v->text : NULL;

        /* A plain name: never a path out of the model's folder. */
        n = f != NULL ? strlen(f) : 0;
        if (n < 6 || n >= sizeof(m->u.train.student_file)
            || strchr(f, '/') != NULL || strchr(f, '\\') != NULL
            || f[0] == '.' || strcmp(f + n - 5, ".onnx") != 0)
            return ss_err_set(err, SS_EINVAL, "file must be the name of an "
                              ".onnx file in the model's folder");
        memcpy(m->u.train.student_file, f, n + 1);
        return 0;
    }
    if (strcmp(key, "layers") == 0) {
        int i, k;

        if (v->type != SS_PARAM_LIST || v->n_list < 1
            || v->n_list > SS_MAX_STUDENT_LAYERS)
            return ss_err_set(err, SS_EINVAL, "layers must be a list of 1 "
                              "to %d block indices", SS_MAX_STUDENT_LAYERS);
        for (i = 0; i < v->n_list; i++) {
            double x = v->list[i];

            if (!(x >= 0 && x < 1 << 20) || x != floor(x))
                return ss_err_set(err, SS_EINVAL, "layers[%d] must be a "
                                  "block index (an integer >= 0)", i);
            for (k = 0; k < i; k++)
                if (m->u.train.layers[k] == (int)x)
                    return ss_err_set(err, SS_EINVAL, "layers: block %d "
                                      "twice", (int)x);
            m->u.train.layers[i] = (int)x;
        }
        m->u.train.n_layers = v->n_list;
        return 0;
    }
    return ss_err_set(err, SS_EINVAL, "unknown key '%s' (width, file, "
                      "layers)", key);
}

/* An adapter's name is its folder's: letters, digits, '_', '-', '.',
 * not starting with '.' (as server/model/adapter.c loads them). */
static bool
folder_name(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (n == 0 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'
              || s[i] == '.'))
            return false;
    return true;
}

/* lora's string parameters: "adapter" (a name), "targets" and its PEFT
 * spelling "target_modules" (as PEFT reads target_modules: a list of
 * names, or one string, a regular expression the whole module name must
 * match, or "all-linear"). */
static int
lora_key(ss_method_t *m, const char *key, const ss_param_value_t *v,
         ss_err_t *err)
{
    const char *one[1];
    const char *const *names = v->strings;
    int n = v->n_strings;

    if (strcmp(key, "adapter") == 0) {
        if (v->type != SS_PARAM_CHOICE || !folder_name(v->text))
            return ss_err_set(err, SS_EINVAL, "adapter must be a name of 1 "
                              "to 64 letters, digits, '_', '-' or '.'");
        snprintf(m->u.train.adapter, sizeof(m->u.train.adapter), "%s",
                 v->text);
        return 0;
    }
    if (v->type == SS_PARAM_CHOICE) {
        one[0] = v->text;
        names = one;
        n = 1;
    } else if (v->type != SS_PARAM_STRINGS) {
        n = -1;
    }
    if (n < 1 || n > SS_LORA_MAX_TARGETS)
        return ss_err_set(err, SS_EINVAL, "%s must be a module name or a "
                          "list of 1 to %d", key, SS_LORA_MAX_TARGETS);
    for (int i = 0; i < n; i++) {
        if (names[i] == NULL || names[i][0] == '\0'
            || strlen(names[i]) >= SS_LORA_NAME_MAX)
            return ss_err_set(err, SS_EINVAL, "%s[%d] must be a module "
                              "name of 1 to %d bytes", key, i,
                              SS_LORA_NAME_MAX - 1);
        snprintf(m->u.train.targets[i], SS_LORA_NAME_MAX, "%s", names[i]);
    }
    m->u.train.n_targets = n;
    m->u.train.targets_pattern = v->type == SS_PARAM_CHOICE;
    if (m->u.train.targets_pattern)
        return ss_sites_pattern_ok(names[0], err);
    return 0;
}

/* precision bf16: oneDNN must run bf16 natively here (the trainer checks
 * again when it is built; asking now makes a bad body a 400). */
static int
check_precision(const ss_method_t *m, ss_err_t *err)
{
    const char *isa;

    if (m->u.train.precision != SS_PRECISION_BF16 || ss_dnn_bf16_native(&isa))
        return 0;
    return ss_err_set(err, SS_EINVAL, "%s: precision \"bf16\" needs a CPU "
                      "with AVX512_BF16 or AMX; oneDNN runs at %s here (use "
                      "\"f32\")", ss_method_name(m->kind), isa);
}

int
ss_method_check_params(const ss_method_t *m, ss_err_t *err)
{
    const char *method = ss_method_name(m->kind);
    char want[128];
    size_t i;
    int rc;

    for (i = 0; i < ss_method_n_params; i++) {
        const ss_method_param_t *p = &ss_method_params[i];
        double x;

        if (p->method != m->kind || p->type == SS_PARAM_TRAIN
            || p->type == SS_PARAM_OBJECT || p->type == SS_PARAM_STRINGS)
            continue;
        x = load(m, p);
        if ((p->flags & SS_PARAM_ZERO_UNSET) && x == 0)
            continue;
        if (((p->type == SS_PARAM_NUMBER || p->type == SS_PARAM_INT)
             && !in_range(p, x))
            || (p->type == SS_PARAM_CHOICE && choice_of(p, x) == NULL)) {
            describe(p, want, sizeof(want));
            return ss_err_set(err, SS_EINVAL, "%s: %s must be %s, not %g",
                              method, p->name, want, x);
        }
    }
    if (m->kind == SS_METHOD_MOEFY && m->u.moefy.k >= m->u.moefy.experts)
        return ss_err_set(err, SS_EINVAL, "moefy: k must be below experts "
                          "(%d), not %d", m->u.moefy.experts, m->u.moefy.k);
    if (!SS_METHOD_TRAINS(m->kind))
        return 0;
    if ((rc = ss_train_opts_check(&m->u.train.opt, err)) < 0)
        return ss_err_wrap(err, rc, "%s", method);
    if ((rc = check_precision(m, err)) < 0)
        return rc;
    if (m->kind == SS_METHOD_DISTILL
        && (m->u.train.width > 0) + (m->u.train.student_file[0] != '\0')
               + (m->u.train.n_layers > 0) != 1)
        return ss_err_set(err, SS_EINVAL, "distill: give one student: "
                          "{\"width\": w} with w in (0, 1), {\"layers\": "
                          "[blocks kept]} or {\"file\": \"student.onnx\"}");
    if (m->kind == SS_METHOD_DISTILL && m->u.train.width != 0
        && !(m->u.train.width > 0 && m->u.train.width < 1))
        return ss_err_set(err, SS_EINVAL, "distill: student width must be "
                          "in (0, 1), not %g", m->u.train.width);
    if (m->kind == SS_METHOD_LORA && !m->u.train.merge
        && m->u.train.adapter[0] == '\0')
        return ss_err_set(err, SS_EINVAL, "lora: \"adapter\" names the "
                          "adapter to write (or \"merge\": true for a "
                          "version)");
    return 0;
}
