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
 * compress.c next to the run.
 *
 * THREADS: [any]; the table is constant.
 */

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compress/compress.h"

#define FIELD(f) offsetof(ss_method_t, u.f), sizeof(((ss_method_t *)0)->u.f)

static const ss_param_choice_t calibs[] = {
    { "minmax", SS_CALIB_MINMAX },
    { "percentile", SS_CALIB_PERCENTILE },
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

const ss_method_param_t ss_method_params[] = {
    { SS_METHOD_PTQ, "calibration", SS_PARAM_CHOICE, SS_CALIB_MINMAX, 0, 0,
      false, false, calibs, NULL, 0,
      "activation ranges: min/max, or a percentile of |x|",
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

/* What the row accepts, for messages: "a number in (0, 1]". */
static void
describe(const ss_method_param_t *p, char *buf, size_t n)
{
    size_t k = 0;
    int i;

    switch (p->type) {
    case SS_PARAM_NUMBER:
        snprintf(buf, n, "a number in %s%g, %g%s", p->min_open ? "(" : "[",
                 p->min, p->max, p->max_open ? ")" : "]");
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
           && (p->max_open ? x < p->max : x <= p->max);
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
    for (i = 0; i < ss_method_n_params; i++)
        if (ss_method_params[i].method == kind)
            store(m, &ss_method_params[i], ss_method_params[i].def);
}

int
ss_method_param_set(ss_method_t *m, const ss_method_param_t *p,
                    const ss_param_value_t *v, ss_err_t *err)
{
    const char *method = ss_method_name(p->method);
    char want[128];
    size_t i;

    describe(p, want, sizeof(want));
    if (m->kind != p->method || v->type != (int)p->type)
        return ss_err_set(err, SS_EINVAL, "%s: %s must be %s", method,
                          p->name, want);
    switch (p->type) {
    case SS_PARAM_NUMBER:
        if (!in_range(p, v->number))
            return ss_err_set(err, SS_EINVAL, "%s: %s must be %s, not %g",
                              method, p->name, want, v->number);
        store(m, p, v->number);
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
ss_method_check_params(const ss_method_t *m, ss_err_t *err)
{
    const char *method = ss_method_name(m->kind);
    char want[128];
    size_t i;

    for (i = 0; i < ss_method_n_params; i++) {
        const ss_method_param_t *p = &ss_method_params[i];
        double x;

        if (p->method != m->kind)
            continue;
        x = load(m, p);
        if ((p->flags & SS_PARAM_ZERO_UNSET) && x == 0)
            continue;
        if ((p->type == SS_PARAM_NUMBER && !in_range(p, x))
            || (p->type == SS_PARAM_CHOICE && choice_of(p, x) == NULL)) {
            describe(p, want, sizeof(want));
            return ss_err_set(err, SS_EINVAL, "%s: %s must be %s, not %g",
                              method, p->name, want, x);
        }
    }
    return 0;
}
