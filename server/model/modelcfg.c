/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Model configuration files.
 *
 * DESIGN: the file is JSON with flat keys plus three small objects
 * (version_policy, queue, sampling).  Parsing walks the object and looks
 * each key up, so a misspelt key is an error, not a silent default.
 * Writing the active version re-reads the file as JSON, sets one key and
 * writes it back atomically, so comments-free user content survives.
 */
#include "config.h"

#include "server/model/modelcfg.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "engine/engine.h"
#include "engine/io/npy.h"
#include "server/model/adapter.h"

/* config.json is a few keys; anything larger is not one. */
#define CONFIG_MAX (1 << 20)

/* Set once at start (ss_model_config_set_reject_default), read by every
 * load after. */
static bool reject_default;

void
ss_model_config_set_reject_default(bool on)
{
    reject_default = on;
}

/* As reject_default: ss_model_config_set_response_default. */
static int64_t response_default;

void
ss_model_config_set_response_default(int64_t bytes)
{
    response_default = bytes;
}

/* As reject_default: ss_model_config_set_plan_default. */
static int64_t plan_default;

void
ss_model_config_set_plan_default(int64_t bytes)
{
    plan_default = bytes;
}

void
ss_model_config_default(ss_model_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->reject_non_finite = reject_default;
    c->max_response_bytes = response_default;
    c->max_plan_bytes = plan_default;
    c->max_batch_size = 32;
    c->max_queue_delay_us = 0;
    c->instances = 0;           /* every executor of the pool */
    c->threads = 0;
    c->policy = SS_POLICY_LATEST;
    c->latest_n = 1;
    c->max_queue_size = 1024;
    c->timeout_us = 0;
    c->sample_capacity = 0;
    c->sample_probability = 1.0;
    c->sample_max_bytes = 64 << 20;
}

static int
get_int(json_t *v, const char *key, int64_t lo, int64_t hi, int64_t *out,
        ss_err_t *err)
{
    int64_t x;

    if (!json_is_integer(v))
        return ss_err_set(err, SS_EINVAL, "'%s' must be an integer", key);
    x = json_integer_value(v);
    if (x < lo || x > hi)
        return ss_err_set(err, SS_EINVAL, "'%s' must be in %lld..%lld, not "
                          "%lld", key, (long long)lo, (long long)hi,
                          (long long)x);
    *out = x;
    return 0;
}

static int
apply_policy(ss_model_config_t *c, json_t *v, ss_err_t *err)
{
    const char *key;
    json_t *x;
    int64_t n;
    size_t i;
    int rc;

    if (!json_is_object(v) || json_object_size(v) != 1)
        return ss_err_set(err, SS_EINVAL, "'version_policy' must be one of "
                          "{\"latest\": N}, {\"all\": {}}, "
                          "{\"specific\": [versions]}");
    json_object_foreach(v, key, x) {
        if (strcmp(key, "latest") == 0) {
            /* Triton writes {"latest": {"num_versions": N}}. */
            if (json_is_object(x))
                x = json_object_get(x, "num_versions");
            if ((rc = get_int(x, "version_policy.latest", 1, 1000, &n,
                              err)) < 0)
                return rc;
            c->policy = SS_POLICY_LATEST;
            c->latest_n = (int)n;
        } else if (strcmp(key, "all") == 0) {
            c->policy = SS_POLICY_ALL;
        } else if (strcmp(key, "specific") == 0) {
            if (json_is_object(x))
                x = json_object_get(x, "versions");
            if (!json_is_array(x) || json_array_size(x) == 0 ||
                json_array_size(x) > SS_MAX_SPECIFIC)
                return ss_err_set(err, SS_EINVAL, "'version_policy.specific'"
                                  " must list 1..%d versions",
                                  SS_MAX_SPECIFIC);
            for (i = 0; i < json_array_size(x); i++) {
                if ((rc = get_int(json_array_get(x, i),
                                  "version_policy.specific", 1, INT64_MAX,
                                  &c->specific[i], err)) < 0)
                    return rc;
            }
            c->n_specific = (int)json_array_size(x);
            c->policy = SS_POLICY_SPECIFIC;
        } else {
            return ss_err_set(err, SS_EINVAL, "'version_policy': unknown "
                              "kind '%s'", key);
        }
    }
    return 0;
}

static int
apply_sub(ss_model_config_t *c, const char *obj, json_t *v, ss_err_t *err)
{
    const char *key;
    json_t *x;
    int64_t n;
    int rc;

    if (!json_is_object(v))
        return ss_err_set(err, SS_EINVAL, "'%s' must be an object", obj);
    json_object_foreach(v, key, x) {
        char full[96];

        snprintf(full, sizeof(full), "%s.%s", obj, key);
        if (strcmp(obj, "queue") == 0 && strcmp(key, "max_size") == 0) {
            if ((rc = get_int(x, full, 1, 1 << 24, &n, err)) < 0)
                return rc;
            c->max_queue_size = (int)n;
        } else if (strcmp(obj, "queue") == 0 &&
                   strcmp(key, "timeout_ms") == 0) {
            if ((rc = get_int(x, full, 0, 86400000, &n, err)) < 0)
                return rc;
            c->timeout_us = n * 1000;
        } else if (strcmp(obj, "sampling") == 0 &&
                   strcmp(key, "capacity") == 0) {
            if ((rc = get_int(x, full, 0, 1 << 24, &n, err)) < 0)
                return rc;
            c->sample_capacity = (int)n;
        } else if (strcmp(obj, "sampling") == 0 &&
                   strcmp(key, "max_bytes") == 0) {
            if ((rc = get_int(x, full, 1, (int64_t)1 << 40, &n, err)) < 0)
                return rc;
            c->sample_max_bytes = n;
        } else if (strcmp(obj, "sampling") == 0 &&
                   strcmp(key, "probability") == 0) {
            if (!json_is_number(x) || json_number_value(x) < 0 ||
                json_number_value(x) > 1)
                return ss_err_set(err, SS_EINVAL, "'%s' must be a number in "
                                  "0..1", full);
            c->sample_probability = json_number_value(x);
        } else {
            return ss_err_set(err, SS_EINVAL, "unknown key '%s'", full);
        }
    }
    return 0;
}

int
ss_model_config_apply(ss_model_config_t *c, json_t *obj, ss_err_t *err)
{
    const char *key;
    json_t *v;
    int64_t n;
    size_t i;
    int rc;

    if (!json_is_object(obj))
        return ss_err_set(err, SS_EINVAL, "a model config must be a JSON "
                          "object");
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "max_batch_size") == 0) {
            if ((rc = get_int(v, key, 0, 4096, &n, err)) < 0)
                return rc;
            c->max_batch_size = (int)n;
        } else if (strcmp(key, "max_queue_delay_us") == 0) {
            if ((rc = get_int(v, key, 0, 10000000, &n, err)) < 0)
                return rc;
            c->max_queue_delay_us = n;
        } else if (strcmp(key, "preferred_batch_sizes") == 0) {
            if (!json_is_array(v) || json_array_size(v) > SS_MAX_PREFERRED)
                return ss_err_set(err, SS_EINVAL, "'%s' must be an array of "
                                  "at most %d sizes", key, SS_MAX_PREFERRED);
            for (i = 0; i < json_array_size(v); i++) {
                if ((rc = get_int(json_array_get(v, i), key, 1, 4096, &n,
                                  err)) < 0)
                    return rc;
                c->preferred[i] = (int)n;
            }
            c->n_preferred = (int)json_array_size(v);
        } else if (strcmp(key, "instances") == 0) {
            if ((rc = get_int(v, key, 0, 1024, &n, err)) < 0)
                return rc;
            c->instances = (int)n;
        } else if (strcmp(key, "threads") == 0) {
            if ((rc = get_int(v, key, 0, 1024, &n, err)) < 0)
                return rc;
            c->threads = (int)n;
        } else if (strcmp(key, "active_version") == 0) {
            if ((rc = get_int(v, key, 0, INT64_MAX, &n, err)) < 0)
                return rc;
            c->active_version = n;
        } else if (strcmp(key, "reject_non_finite") == 0) {
            if (!json_is_boolean(v))
                return ss_err_set(err, SS_EINVAL, "'%s' must be true or "
                                  "false", key);
            c->reject_non_finite = json_is_true(v);
        } else if (strcmp(key, "max_response_bytes") == 0) {
            if ((rc = get_int(v, key, 0, (int64_t)1 << 40, &n, err)) < 0)
                return rc;
            c->max_response_bytes = n;
        } else if (strcmp(key, "max_plan_bytes") == 0) {
            if ((rc = get_int(v, key, 0, (int64_t)1 << 40, &n, err)) < 0)
                return rc;
            c->max_plan_bytes = n;
        } else if (strcmp(key, "max_adapters") == 0) {
            /* LoRA (docs/lora.md): adapter.h's SS_LORA_MAX_ADAPTERS */
            if ((rc = get_int(v, key, 1, 256, &n, err)) < 0)
                return rc;
            c->max_adapters = (int)n;
        } else if (strcmp(key, "max_adapter_bytes") == 0) {
            if ((rc = get_int(v, key, 1, INT64_MAX, &n, err)) < 0)
                return rc;
            c->max_adapter_bytes = n;
        } else if (strcmp(key, "adapter_resident_bytes") == 0) {
            if ((rc = get_int(v, key, 1, INT64_MAX, &n, err)) < 0)
                return rc;
            c->adapter_resident_bytes = n;
        } else if (strcmp(key, "warmup") == 0) {
            if (!json_is_string(v) ||
                (strcmp(json_string_value(v), "all") != 0 &&
                 strcmp(json_string_value(v), "check") != 0))
                return ss_err_set(err, SS_EINVAL, "'%s' must be \"all\" or "
                                  "\"check\"", key);
            c->warmup_all = strcmp(json_string_value(v), "all") == 0;
        } else if (strcmp(key, "version_policy") == 0) {
            if ((rc = apply_policy(c, v, err)) < 0)
                return rc;
        } else if (strcmp(key, "queue") == 0 ||
                   strcmp(key, "sampling") == 0) {
            if ((rc = apply_sub(c, key, v, err)) < 0)
                return rc;
        } else {
            return ss_err_set(err, SS_EINVAL, "unknown key '%s'", key);
        }
    }
    for (i = 0; i < (size_t)c->n_preferred; i++)
        if (c->max_batch_size > 0 && c->preferred[i] > c->max_batch_size)
            return ss_err_set(err, SS_EINVAL, "'preferred_batch_sizes': %d "
                              "exceeds max_batch_size %d", c->preferred[i],
                              c->max_batch_size);
    return 0;
}

/* Reads config.json: 1 when there is none.  Only a regular file of at
 * most CONFIG_MAX bytes is read, and opening never waits (a FIFO under
 * that name would hold a pool thread forever).  Messages name the model's
 * config.json, not its path. */
static int
load_json(const char *path, const char *what, json_t **out, ss_err_t *err)
{
    json_error_t jerr;
    struct stat st;
    int fd, rc = 0;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        return errno == ENOENT ? 1
                               : ss_err_set(err, SS_EIO, "%s: %s", what,
                                            strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        rc = ss_err_set(err, SS_EINVAL, "%s: not a regular file", what);
    else if (st.st_size > CONFIG_MAX)
        rc = ss_err_set(err, SS_EINVAL, "%s: %lld bytes, more than %d",
                        what, (long long)st.st_size, CONFIG_MAX);
    else if ((*out = json_loadfd(fd, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        rc = ss_err_set(err, SS_EINVAL, "%s: line %d: %s", what, jerr.line,
                        jerr.text);
    close(fd);
    return rc;
}

/* The name config.json is known by in messages: "<model>/config.json". */
static const char *
short_name(const char *dir, char *buf, size_t cap)
{
    const char *base = strrchr(dir, '/');

    snprintf(buf, cap, "%s/config.json", base ? base + 1 : dir);
    return buf;
}

int
ss_model_config_load(const char *dir, ss_model_config_t *c, ss_err_t *err)
{
    char path[4096], what[256];
    json_t *root = NULL;
    int rc;

    ss_model_config_default(c);
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >=
        (int)sizeof(path))
        return ss_err_set(err, SS_EINVAL, "path too long: %s", dir);
    short_name(dir, what, sizeof(what));
    if ((rc = load_json(path, what, &root, err)) != 0)
        return rc > 0 ? 0 : rc;
    rc = ss_model_config_apply(c, root, err);
    if (rc < 0)
        ss_err_wrap(err, rc, "%s", what);
    json_decref(root);
    return rc;
}

/* Sets active_version (0 removes it; only_if_absent leaves a version
 * already named) under save_lock: config.json is read, changed and
 * written back whole, and the registry (pool threads) and jobs (the job
 * thread) both write it. */
static int
save_active(const char *dir, int64_t version, bool only_if_absent,
            ss_err_t *err)
{
    ss_atomic_file_t af = { .fd = -1 };
    char path[4096], what[256];
    json_t *root = NULL;
    char *text = NULL;
    int rc;

    if (snprintf(path, sizeof(path), "%s/config.json", dir) >=
        (int)sizeof(path))
        return ss_err_set(err, SS_EINVAL, "path too long: %s", dir);
    short_name(dir, what, sizeof(what));
    if ((rc = load_json(path, what, &root, err)) < 0)
        return rc;
    rc = 0;
    if (root == NULL && (root = json_object()) == NULL)
        return ss_err_set(err, SS_ENOMEM, "out of memory");
    if (only_if_absent &&
        json_integer_value(json_object_get(root, "active_version")) > 0)
        goto done;
    if (version > 0)
        rc = json_object_set_new(root, "active_version",
                                 json_integer(version));
    else
        json_object_del(root, "active_version");
    if (rc < 0 || (text = json_dumps(root, JSON_INDENT(4) |
                                     JSON_PRESERVE_ORDER)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = ss_atomic_open(&af, path, err)) < 0 ||
        (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0 ||
        (rc = ss_atomic_write(&af, "\n", 1, err)) < 0 ||
        (rc = ss_atomic_commit(&af, err)) < 0)
        goto done;
done:
    ss_atomic_abort(&af);
    free(text);
    json_decref(root);
    return rc;
}

static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;

int
ss_model_config_save_active(const char *dir, int64_t version, ss_err_t *err)
{
    int rc;

    pthread_mutex_lock(&save_lock);
    rc = save_active(dir, version, false, err);
    pthread_mutex_unlock(&save_lock);
    return rc;
}

int
ss_model_config_pin_active(const char *dir, int64_t version, ss_err_t *err)
{
    int rc;

    pthread_mutex_lock(&save_lock);
    rc = save_active(dir, version, true, err);
    pthread_mutex_unlock(&save_lock);
    return rc;
}

json_t *
ss_model_config_json(const ss_model_config_t *c)
{
    json_t *pref = json_array(), *policy, *dyn, *limits;
    int i;

    for (i = 0; i < c->n_preferred; i++)
        json_array_append_new(pref, json_integer(c->preferred[i]));
    if (c->policy == SS_POLICY_ALL) {
        policy = json_pack("{s:{}}", "all");
    } else if (c->policy == SS_POLICY_SPECIFIC) {
        json_t *vs = json_array();

        for (i = 0; i < c->n_specific; i++)
            json_array_append_new(vs, json_integer(c->specific[i]));
        policy = json_pack("{s:{s:o}}", "specific", "versions", vs);
    } else {
        policy = json_pack("{s:{s:i}}", "latest", "num_versions",
                           c->latest_n);
    }
    dyn = c->max_batch_size > 0
              ? json_pack("{s:o,s:I,s:{s:I}}", "preferred_batch_size", pref,
                          "max_queue_delay_microseconds",
                          (json_int_t)c->max_queue_delay_us,
                          "default_queue_policy",
                          "default_timeout_microseconds",
                          (json_int_t)c->timeout_us)
              : (json_decref(pref), json_null());
    /* What one request may make the daemon do, with the defaults
     * resolved: an operator reads here the numbers a 413 or a 503 came
     * from. */
    limits = json_pack("{s:i,s:I,s:I,s:I,s:b,s:i,s:I,s:I}",
                       "max_queue_size", c->max_queue_size,
                       "queue_timeout_us", (json_int_t)c->timeout_us,
                       "max_response_bytes",
                       (json_int_t)c->max_response_bytes,
                       "max_plan_bytes",
                       (json_int_t)(c->max_plan_bytes > 0
                                        ? (size_t)c->max_plan_bytes
                                        : ss_plan_default_budget()),
                       "reject_non_finite", c->reject_non_finite,
                       "max_adapters",
                       c->max_adapters > 0 ? c->max_adapters
                                           : SS_LORA_MAX_ADAPTERS,
                       "max_adapter_bytes",
                       (json_int_t)c->max_adapter_bytes,
                       "adapter_resident_bytes",
                       (json_int_t)c->adapter_resident_bytes);
    return json_pack("{s:i,s:o,s:o,s:[{s:i,s:s}],s:o}", "max_batch_size",
                     c->max_batch_size, "dynamic_batching", dyn,
                     "version_policy", policy, "instance_group", "count",
                     c->instances, "kind", "KIND_CPU", "limits", limits);
}

bool
ss_model_config_wants(const ss_model_config_t *c, int64_t v,
                      const int64_t *all, int n)
{
    int i;

    switch (c->policy) {
    case SS_POLICY_ALL:
        return true;
    case SS_POLICY_SPECIFIC:
        for (i = 0; i < c->n_specific; i++)
            if (c->specific[i] == v)
                return true;
        return false;
    case SS_POLICY_LATEST:
        for (i = 0; i < n && i < n - c->latest_n; i++)
            if (all[i] == v)
                return false;
        return true;
    }
    return false;
}
