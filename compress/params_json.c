/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A method from its JSON form, as a compress request (the daemon's admin
 * API) and slimserve-train's job file spell it: a name, or
 * {"method": name, "params": {...}}; and the gate.
 *
 * DESIGN: every parameter goes through its row of the table (params.c);
 * an object parameter ("optimizer", "student") key by key through the
 * row's set_key; then the method is checked whole, so that a bad body
 * is refused before any work, by whichever program reads it.
 *
 * THREADS: [any].
 */

#include <math.h>
#include <string.h>

#include "compress/compress.h"

/* A JSON scalar as the parameter table takes it (type 0: neither). */
static ss_param_value_t
value_of(json_t *v)
{
    ss_param_value_t val = { 0 };

    if (json_is_number(v)) {
        val.type = SS_PARAM_NUMBER;
        val.number = json_number_value(v);
    } else if (json_is_boolean(v)) {
        val.type = SS_PARAM_BOOL;
        val.boolean = json_is_true(v);
    } else if (json_is_string(v)) {
        val.type = SS_PARAM_CHOICE;
        val.text = json_string_value(v);
    }
    return val;
}

/* An object parameter ("optimizer": {...}, "student": {...}): each key
 * through the table's row. */
static int
parse_object(ss_method_t *m, const ss_method_param_t *p, json_t *obj,
             ss_err_t *err)
{
    const char *key;
    json_t *v;
    int rc;

    if (!json_is_object(obj))
        return ss_err_set(err, SS_EINVAL, "%s: %s must be an object",
                          ss_method_name(m->kind), p->name);
    json_object_foreach(obj, key, v) {
        ss_param_value_t val = value_of(v);
        double list[SS_MAX_STUDENT_LAYERS];
        size_t i;

        if (json_is_array(v)) {
            /* a list of numbers; longer ones are refused by the row */
            val.type = SS_PARAM_LIST;
            val.list = list;
            val.n_list = (int)json_array_size(v);
            for (i = 0; i < json_array_size(v); i++) {
                if (i >= SS_MAX_STUDENT_LAYERS
                    || !json_is_number(json_array_get(v, i))) {
                    val.type = 0;
                    break;
                }
                list[i] = json_number_value(json_array_get(v, i));
            }
        }

        if ((rc = ss_method_param_set_key(m, p, key, &val, err)) < 0)
            return rc;
    }
    return 0;
}

/* Parameters by the table compress/ owns (compress.h): names, types,
 * bounds and defaults are declared there once. */
static int
parse_params(ss_method_t *m, json_t *params, ss_err_t *err)
{
    const char *key;
    json_t *v;
    int rc;

    if (params == NULL)
        return 0;
    if (!json_is_object(params))
        return ss_err_set(err, SS_EINVAL, "%s: params must be an object",
                          ss_method_name(m->kind));
    json_object_foreach(params, key, v) {
        const ss_method_param_t *p = ss_method_param_find(m->kind, key);
        ss_param_value_t val = { 0 };

        if (p == NULL)
            return ss_err_set(err, SS_EINVAL, "%s: unknown parameter '%s'",
                              ss_method_name(m->kind), key);
        if (p->type == SS_PARAM_OBJECT) {
            if ((rc = parse_object(m, p, v, err)) < 0)
                return rc;
            continue;
        }
        val = value_of(v);
        if (p->type == SS_PARAM_STRINGS && json_is_array(v)) {
            const char *names[SS_LORA_MAX_TARGETS];
            size_t i;

            /* a list of strings; longer ones are refused by the row */
            val.type = SS_PARAM_STRINGS;
            val.strings = names;
            val.n_strings = (int)json_array_size(v);
            for (i = 0; i < json_array_size(v); i++) {
                if (i >= SS_LORA_MAX_TARGETS
                    || (names[i] = json_string_value(json_array_get(v, i)))
                           == NULL) {
                    val.type = 0;
                    break;
                }
            }
            if ((rc = ss_method_param_set(m, p, &val, err)) < 0)
                return rc;
            continue;
        }
        if ((rc = ss_method_param_set(m, p, &val, err)) < 0)
            return rc;
    }
    return 0;
}

int
ss_method_from_json(json_t *v, ss_method_t *m, ss_err_t *err)
{
    static const ss_method_kind_t kinds[] = { SS_METHOD_PTQ, SS_METHOD_BF16,
                                              SS_METHOD_PRUNE,
                                              SS_METHOD_LOWRANK,
                                              SS_METHOD_FINETUNE,
                                              SS_METHOD_DISTILL,
                                              SS_METHOD_QAT,
                                              SS_METHOD_MOEFY,
                                              SS_METHOD_LORA };
    json_t *params = NULL;
    const char *name;
    size_t i;
    int rc;

    if (json_is_object(v)) {
        const char *key;
        json_t *x;

        json_object_foreach(v, key, x) {
            if (strcmp(key, "method") != 0 && strcmp(key, "params") != 0)
                return ss_err_set(err, SS_EINVAL, "a method object has "
                                  "\"method\" and \"params\", not '%s'",
                                  key);
        }
        params = json_object_get(v, "params");
        v = json_object_get(v, "method");
    }
    if ((name = json_string_value(v)) == NULL)
        return ss_err_set(err, SS_EINVAL, "a method is a name or "
                          "{\"method\": name, \"params\": {...}}");
    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (strcmp(name, ss_method_name(kinds[i])) == 0) {
            ss_method_default(m, kinds[i]);
            if ((rc = parse_params(m, params, err)) < 0)
                return rc;
            /* What the rows cannot say alone (distill needs a student,
             * bf16 training on this CPU), also for a bare name. */
            return ss_method_check_params(m, err);
        }
    }
    return ss_err_set(err, SS_EINVAL, "unknown method '%s' (ptq, bf16, "
                      "prune, lowrank, finetune, distill, qat, moefy, lora)",
                      name);
}

static int
get_fraction(json_t *v, const char *what, bool open_zero, double *out,
             ss_err_t *err)
{
    double x;

    if (!json_is_number(v))
        return ss_err_set(err, SS_EINVAL, "%s must be a number", what);
    x = json_number_value(v);
    if (!(x >= 0 && x <= 1) || (open_zero && x == 0))
        return ss_err_set(err, SS_EINVAL, "%s must be in %s0..1], not %g",
                          what, open_zero ? "(" : "[", x);
    *out = x;
    return 0;
}

int
ss_gate_from_json(json_t *v, ss_gate_t *g, ss_err_t *err)
{
    const char *key;
    json_t *x;
    int rc;

    g->max_accuracy_drop = g->min_agreement = g->max_relative_error = -1;
    if (v == NULL)
        return 0;
    if (!json_is_object(v) || json_object_size(v) == 0)
        return ss_err_set(err, SS_EINVAL, "gate must be an object with "
                          "max_accuracy_drop, min_agreement or "
                          "max_relative_error");
    json_object_foreach(v, key, x) {
        double *slot;

        if (strcmp(key, "max_accuracy_drop") == 0)
            slot = &g->max_accuracy_drop;
        else if (strcmp(key, "min_agreement") == 0)
            slot = &g->min_agreement;
        else if (strcmp(key, "max_relative_error") == 0)
            slot = &g->max_relative_error;
        else
            return ss_err_set(err, SS_EINVAL, "gate: unknown key '%s'", key);
        if (strcmp(key, "max_relative_error") == 0) {
            if (!json_is_number(x) || !(json_number_value(x) >= 0) ||
                !isfinite(json_number_value(x)))
                return ss_err_set(err, SS_EINVAL, "gate: %s must be a "
                                  "number >= 0", key);
            *slot = json_number_value(x);
        } else if ((rc = get_fraction(x, key, false, slot, err)) < 0) {
            return rc;
        }
    }
    return 0;
}
