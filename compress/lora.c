/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lora: trains a LoRA adapter (docs/lora.md) on the served model, frozen:
 * per targeted Gemm/MatMul weight W, an update (alpha / r) B A with A
 * [r, in] and B [out, r] the only trained parameters, as PEFT trains
 * them; then either writes the adapter in PEFT's layout (the job does,
 * through ss_lora_adapter_write) or folds the update into the weights
 * ("merge": a new version).
 *
 * DESIGN: the update is built into a private copy of the graph as a side
 * branch of each site, y' = y + s ((x At) Bt) with s = alpha / r, At
 * [in, r] and Bt [r, out] new initializers (A and B transposed: MatMul
 * then takes a [.., in] input of any rank, as the transformer's 3-D
 * MatMul sites have), s a scalar constant.  Every initializer of the
 * model is frozen by name (compress/train/train.h: frozen initializers
 * stay constants and get no gradient, so no base-weight gradient is
 * computed), so the trainer trains At and Bt alone, with the loss of the
 * other training methods at KD weight 0: cross-entropy on the labels
 * (finetune.c's loop: batches, schedule, validation, progress).  A is
 * initialized as PEFT does (kaiming_uniform with a = sqrt(5): U(-1/sqrt
 * (in), 1/sqrt(in))) and B is zero, so training starts from the base
 * model's outputs exactly.  Sites, their module names and the matching
 * of targets (PEFT's target_modules: a list of names, or one string, a
 * regular expression) are the server's (engine/ir/sites.h), so what
 * this trains is what the server loads.
 *
 * THREADS: runs inside ss_compress_run (a job thread); no state.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/atomicfile.h"
#include "compress/internal.h"
#include "engine/io/safetensors.h"
#include "engine/ir/edit.h"
#include "engine/ir/sites.h"

typedef ss_site_t site_t;     /* engine/ir/sites.h */

/* The names of a site's trained initializers in the training graph. */
#define AT_NAME(buf, s) snprintf(buf, sizeof(buf), "lora.%s.A_t", (s)->module)
#define BT_NAME(buf, s) snprintf(buf, sizeof(buf), "lora.%s.B_t", (s)->module)

void
ss_lora_adapter_free(ss_lora_adapter_t *a)
{
    if (a == NULL)
        return;
    for (int i = 0; a->modules != NULL && i < a->n_modules; i++) {
        ss_free(a->modules[i].a.data);
        ss_free(a->modules[i].b.data);
    }
    ss_free(a->modules);
    ss_free(a);
}

/* Whether m targets site s: PEFT's target_modules (ss_site_targeted);
 * no targets: every site. */
static int
matches(const ss_method_t *m, const site_t *s)
{
    const char *names[SS_LORA_MAX_TARGETS];

    if (m->u.train.n_targets == 0)
        return 1;
    if (m->u.train.targets_pattern)
        return ss_site_targeted(s, m->u.train.targets[0], NULL, 0);
    for (int i = 0; i < m->u.train.n_targets; i++)
        names[i] = m->u.train.targets[i];
    return ss_site_targeted(s, NULL, names, m->u.train.n_targets);
}

/* splitmix64: A's initialization, from the method's seed. */
static double
uniform(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* A zeroed f32 tensor of ndim (0 or 2) dims. */
static int
new_const(int ndim, int64_t d0, int64_t d1, ss_tensor_t **t, ss_err_t *err)
{
    int64_t dims[2] = { d0, d1 };

    return ss__tensor_new(SS_DTYPE_F32, ndim, dims, t, err);
}

/* Adds the branch of site s to g: y' = y + scale ((x At) Bt). */
static int
add_branch(ss_graph_t *g, const site_t *s, int r, float scale, uint64_t *rng,
           ss_err_t *err)
{
    ss_tensor_t *at = NULL, *bt = NULL, *sc = NULL;
    int vat, vbt, vsc, t, d, ds, y2, in[2], rc;
    double bound = 1.0 / sqrt((double)s->in);
    char an[SS_SITE_NAME_MAX + 16], bn[SS_SITE_NAME_MAX + 16];

    AT_NAME(an, s);
    BT_NAME(bn, s);
    if ((rc = new_const(2, s->in, r, &at, err)) < 0
        || (rc = new_const(2, r, s->out, &bt, err)) < 0
        || (rc = new_const(0, 0, 0, &sc, err)) < 0) {
        ss__tensor_free(at);
        ss__tensor_free(bt);
        return rc;
    }
    for (int64_t i = 0; i < s->in * r; i++)
        ((float *)at->data)[i] = (float)((2.0 * uniform(rng) - 1.0) * bound);
    *(float *)sc->data = scale;     /* B (bt) stays zero */
    if ((vat = ss_graph_add_value(g, an, at, err)) < 0) {
        ss__tensor_free(bt);
        ss__tensor_free(sc);
        return vat;
    }
    if ((vbt = ss_graph_add_value(g, bn, bt, err)) < 0) {
        ss__tensor_free(sc);
        return vbt;
    }
    if ((vsc = ss_graph_add_value(g, NULL, sc, err)) < 0)
        return vsc;
    if ((t = ss_graph_add_value(g, NULL, NULL, err)) < 0
        || (d = ss_graph_add_value(g, NULL, NULL, err)) < 0
        || (ds = ss_graph_add_value(g, NULL, NULL, err)) < 0
        || (y2 = ss_graph_add_value(g, NULL, NULL, err)) < 0)
        return SS_ENOMEM;
    /* every reader of y reads y' from now on (before the Add that reads
     * y is made) */
    ss_graph_replace_uses(g, s->y, y2);
    in[0] = s->x;
    in[1] = vat;
    if ((rc = ss_graph_add_node(g, "MatMul", NULL, 2, in, 1, &t, 0, NULL,
                                err)) < 0)
        return rc;
    in[0] = t;
    in[1] = vbt;
    if ((rc = ss_graph_add_node(g, "MatMul", NULL, 2, in, 1, &d, 0, NULL,
                                err)) < 0)
        return rc;
    in[0] = d;
    in[1] = vsc;
    if ((rc = ss_graph_add_node(g, "Mul", NULL, 2, in, 1, &ds, 0, NULL,
                                err)) < 0)
        return rc;
    in[0] = s->y;
    in[1] = ds;
    return ss_graph_add_node(g, "Add", NULL, 2, in, 1, &y2, 0, NULL, err);
}

/* W += scale * B A in W's storage ([out, in] when w_nk, else [in, out]),
 * from the trained At [in, r] and Bt [r, out]. */
static void
merge_site(float *w, const site_t *s, int r, float scale, const float *at,
           const float *bt)
{
    for (int64_t i = 0; i < s->in; i++)
        for (int64_t o = 0; o < s->out; o++) {
            double acc = 0;

            for (int j = 0; j < r; j++)
                acc += (double)at[i * r + j] * bt[j * s->out + o];
            w[s->w_nk ? o * s->in + i : i * s->out + o] += (float)(scale
                                                                   * acc);
        }
}

/* A [r, in] and B [out, r] of the module, from At and Bt. */
static int
to_peft(ss_lora_module_t *mod, const site_t *s, int r, const float *at,
        const float *bt, ss_err_t *err)
{
    float *a = ss_aligned_alloc((size_t)(r * s->in) * sizeof(float) + 1);
    float *b = ss_aligned_alloc((size_t)(r * s->out) * sizeof(float) + 1);

    if (a == NULL || b == NULL) {
        ss_free(a);
        ss_free(b);
        return ss_err_set(err, SS_ENOMEM, "no memory for the adapter");
    }
    for (int64_t i = 0; i < s->in; i++)
        for (int j = 0; j < r; j++)
            a[j * s->in + i] = at[i * r + j];
    for (int j = 0; j < r; j++)
        for (int64_t o = 0; o < s->out; o++)
            b[o * r + j] = bt[j * s->out + o];
    snprintf(mod->name, sizeof(mod->name), "%s", s->module);
    mod->a.dtype = mod->b.dtype = SS_DTYPE_F32;
    mod->a.ndim = mod->b.ndim = 2;
    mod->a.dims[0] = r;
    mod->a.dims[1] = s->in;
    mod->b.dims[0] = s->out;
    mod->b.dims[1] = r;
    mod->a.data = a;
    mod->b.data = b;
    return 0;
}

int
ss__lora(ss__cx_t *cx, const ss_method_t *m, ss_graph_t **g, json_t *note,
         ss_err_t *err)
{
    const ss_graph_t *base = *g;
    ss_method_t tm = *m;
    ss_graph_t *tg = NULL, *merged = NULL;
    ss_lora_adapter_t *ad = NULL;
    site_t *sites = NULL;
    const char **frozen = NULL;
    int n_sites = 0, n_all = 0, n_frozen = 0, r = m->u.train.rank, rc = 0;
    float scale = (float)(m->u.train.lora_alpha / r);
    uint64_t rng = m->u.train.opt.seed * 0x2545f4914f6cdd1dULL + 1;
    int64_t trainable = 0, base_params = 0;
    json_t *mods = NULL;

    if (cx->train == NULL || cx->train->labels == NULL) {
        rc = ss_err_set(err, SS_EINVAL, "lora: the training data needs "
                        "labels (\"training\": {\"file\": ...} with a "
                        "labels array)");
        goto done;
    }
    if ((frozen = ss_calloc((size_t)base->n_values + 1,
                            sizeof(char *))) == NULL
        || (mods = json_array()) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for lora");
        goto done;
    }
    if ((rc = ss_sites_find(base, &sites, &n_all, err)) < 0)
        goto done;
    /* every target must name something: a typo would train nothing */
    if (m->u.train.targets_pattern) {
        if ((rc = ss_sites_pattern_ok(m->u.train.targets[0], err)) < 0) {
            ss_err_wrap(err, rc, "lora");
            goto done;
        }
    }
    for (int t = 0; t < m->u.train.n_targets; t++) {
        ss_method_t one = *m;
        int hit = 0;

        one.u.train.n_targets = 1;
        memcpy(one.u.train.targets[0], m->u.train.targets[t],
               SS_LORA_NAME_MAX);
        for (int k = 0; k < n_all && !hit; k++)
            hit = matches(&one, &sites[k]);
        if (!hit) {
            rc = ss_err_set(err, SS_EINVAL, "lora: target%s '%s' is not "
                            "%sa Gemm or MatMul weight of the model",
                            m->u.train.targets_pattern ? "_modules" : "",
                            m->u.train.targets[t],
                            m->u.train.targets_pattern ? "the name of " : "");
            goto done;
        }
    }
    /* the targeted sites, in node order, first */
    for (int k = 0; k < n_all; k++)
        if (matches(m, &sites[k]))
            sites[n_sites++] = sites[k];
    if (n_sites == 0) {
        rc = ss_err_set(err, SS_EINVAL, "lora: the model has no Gemm or "
                        "MatMul weight to adapt");
        goto done;
    }
    for (int v = 0; v < base->n_values; v++)
        if (base->values[v].constant != NULL) {
            frozen[n_frozen++] = base->values[v].name;
            if (base->values[v].constant->dtype == SS_DTYPE_F32)
                base_params += ss_tensor_numel(base->values[v].constant);
        }
    if ((rc = ss_graph_clone(base, &tg, err)) < 0)
        goto done;
    for (int k = 0; k < n_sites; k++) {
        if ((rc = add_branch(tg, &sites[k], r, scale, &rng, err)) < 0)
            goto done;
        trainable += (int64_t)r * (sites[k].in + sites[k].out);
        json_array_append_new(mods, json_string(sites[k].module));
    }
    if ((rc = ss_graph_finalize(tg, err)) < 0) {
        ss_err_wrap(err, rc, "lora: the training graph");
        goto done;
    }
    /* cross-entropy on the labels: the KD mix at teacher weight 0 */
    tm.u.train.opt.alpha = 0.0;
    /* frozen names point into base, which outlives the run */
    if ((rc = ss__train_graph(cx, &tm, &tg, frozen, n_frozen, note,
                              err)) < 0)
        goto done;
    if ((rc = ss_graph_clone(base, &merged, err)) < 0)
        goto done;
    if (!m->u.train.merge
        && ((ad = ss_calloc(1, sizeof(*ad))) == NULL
            || (ad->modules = ss_calloc((size_t)n_sites,
                                        sizeof(ss_lora_module_t))) == NULL)) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for the adapter");
        goto done;
    }
    for (int k = 0; k < n_sites; k++) {
        char an[SS_SITE_NAME_MAX + 16], bn[SS_SITE_NAME_MAX + 16];
        const ss_tensor_t *ta = NULL, *tb = NULL;
        ss_tensor_t *w = merged->values[sites[k].w].constant;
        int va, vb;

        AT_NAME(an, &sites[k]);
        BT_NAME(bn, &sites[k]);
        va = ss_graph_find_value(tg, an);
        vb = ss_graph_find_value(tg, bn);
        ta = va >= 0 ? tg->values[va].constant : NULL;
        tb = vb >= 0 ? tg->values[vb].constant : NULL;

        if (ta == NULL || tb == NULL) {
            rc = ss_err_set(err, SS_EINTERNAL, "lora: the trained graph "
                            "lost %s", an);
            goto done;
        }
        merge_site(w->data, &sites[k], r, scale, ta->data, tb->data);
        if (ad != NULL) {
            if ((rc = to_peft(&ad->modules[k], &sites[k], r, ta->data,
                              tb->data, err)) < 0)
                goto done;
            ad->n_modules++;
        }
    }
    if ((rc = ss_graph_finalize(merged, err)) < 0)
        goto done;
    json_object_set_new(note, "rank", json_integer(r));
    json_object_set_new(note, "alpha", json_real(m->u.train.lora_alpha));
    json_object_set_new(note, "modules", mods);
    mods = NULL;
    json_object_set_new(note, "trainable_params", json_integer(trainable));
    json_object_set_new(note, "trainable_fraction",
                        json_real(base_params > 0 ? (double)trainable
                                  / (double)base_params : 0.0));
    json_object_set_new(note, "merged", json_boolean(m->u.train.merge));
    if (ad != NULL) {
        snprintf(ad->name, sizeof(ad->name), "%s", m->u.train.adapter);
        ad->r = r;
        ad->alpha = m->u.train.lora_alpha;
        json_object_set_new(note, "adapter", json_string(ad->name));
        ss_lora_adapter_free(cx->adapter);
        cx->adapter = ad;
        ad = NULL;
    }
    ss_graph_free(*g);
    *g = merged;
    merged = NULL;
done:
    json_decref(mods);
    ss_lora_adapter_free(ad);
    ss_graph_free(tg);
    ss_graph_free(merged);
    ss_free(sites);
    ss_free(frozen);
    return rc;
}

/* ---- PEFT's layout on disk ------------------------------------------------ */

int
ss_lora_adapter_write(const ss_lora_adapter_t *a, const char *dir,
                      ss_err_t *err)
{
    char path[4200];
    const char **names = NULL;
    ss_tensor_t *ts = NULL;
    json_t *cfg = NULL, *tm = NULL;
    char *text = NULL;
    ss_atomic_file_t af = { .fd = -1 };
    int n = 2 * a->n_modules, rc = 0;

    if ((names = ss_calloc((size_t)n + 1, sizeof(char *))) == NULL
        || (ts = ss_calloc((size_t)n + 1, sizeof(ss_tensor_t))) == NULL
        || (tm = json_array()) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to write the adapter");
        goto done;
    }
    for (int i = 0; i < a->n_modules; i++) {
        for (int h = 0; h < 2; h++) {
            size_t len = strlen(a->modules[i].name) + 40;
            char *k = ss_malloc(len);

            if (k == NULL) {
                rc = ss_err_set(err, SS_ENOMEM, "no memory to write the "
                                "adapter");
                goto done;
            }
            snprintf(k, len, "base_model.model.%s.lora_%c.weight",
                     a->modules[i].name, h == 0 ? 'A' : 'B');
            names[2 * i + h] = k;
            ts[2 * i + h] = h == 0 ? a->modules[i].a : a->modules[i].b;
        }
        json_array_append_new(tm, json_string(a->modules[i].name));
    }
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    if ((rc = ss_safetensors_write(path, n, names, ts, 0, NULL, err)) < 0)
        goto done;
    /* PEFT's adapter_config.json: what PEFT reads to load it back */
    cfg = json_pack("{s:s, s:s, s:i, s:f, s:O, s:f, s:b, s:s, s:b, s:b}",
                    "peft_type", "LORA", "task_type", "FEATURE_EXTRACTION",
                    "r", a->r, "lora_alpha", a->alpha, "target_modules", tm,
                    "lora_dropout", 0.0, "fan_in_fan_out", 0, "bias", "none",
                    "use_rslora", 0, "inference_mode", 1);
    if (cfg == NULL
        || (text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS))
               == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to write the adapter");
        goto done;
    }
    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    if ((rc = ss_atomic_open(&af, path, err)) < 0
        || (rc = ss_atomic_write(&af, text, strlen(text), err)) < 0
        || (rc = ss_atomic_commit(&af, err)) < 0)
        goto done;
done:
    ss_atomic_abort(&af);
    for (int i = 0; names != NULL && i < n; i++)
        ss_free((void *)names[i]);
    ss_free(names);
    ss_free(ts);
    json_decref(tm);
    json_decref(cfg);
    free(text);
    return rc;
}
