/* SPDX-License-Identifier: Apache-2.0 */
/*
 * MoEfication's experts and router (moefy.c says what and why): balanced
 * k-means of the hidden neurons by co-activation, the activation mass
 * each expert carries per token, and the router trained on it.
 *
 * THREADS: runs on the compress thread.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/moefy_int.h"

#define KM_ITERS 30

/* ---- clustering -------------------------------------------------------- */

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

typedef struct pair {
    float d;
    int i, e;
} pair_t;

static int
cmp_pair(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;

    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    if (x->i != y->i)
        return x->i < y->i ? -1 : 1;
    return (x->e > y->e) - (x->e < y->e);
}

/* Balanced k-means of n unit (or zero) vectors F [n, S] into E groups of
 * n / E (the first n % E one more); assign[i] gets the group. */
int
ss__moefy_kmeans(const float *F, int64_t n, int64_t S, int E, uint64_t seed,
                 int *assign, int *iters, ss_err_t *err)
{
    float *C = NULL, *dmin = NULL;
    pair_t *pairs = NULL;
    int64_t *cap = NULL, *cnt = NULL;
    uint64_t rs = seed * 0x9e3779b97f4a7c15ULL + 0x1234567ULL;
    int rc = 0, it;

    *iters = 0;
    if ((C = ss_calloc((size_t)(E * S), sizeof(float))) == NULL
        || (dmin = ss_malloc(sizeof(float) * (size_t)n)) == NULL
        || (pairs = ss_malloc(sizeof(pair_t) * (size_t)(n * E))) == NULL
        || (cap = ss_malloc(sizeof(int64_t) * (size_t)E)) == NULL
        || (cnt = ss_malloc(sizeof(int64_t) * (size_t)E)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for clustering");
        goto done;
    }
    for (int e = 0; e < E; e++)
        cap[e] = n / E + (e < n % E);
    /* k-means++: the first centre at random, each next one with
     * probability proportional to the squared distance to the nearest */
    {
        int64_t first = (int64_t)(rnd(&rs) % (uint64_t)n);

        memcpy(C, F + first * S, sizeof(float) * (size_t)S);
        for (int64_t i = 0; i < n; i++)
            dmin[i] = INFINITY;
        for (int e = 1; e < E; e++) {
            double tot = 0, pick, acc = 0;
            int64_t sel = n - 1;

            for (int64_t i = 0; i < n; i++) {
                double d = 0;

                for (int64_t s = 0; s < S; s++) {
                    double t = F[i * S + s] - C[(e - 1) * S + s];

                    d += t * t;
                }
                if (d < dmin[i])
                    dmin[i] = (float)d;
                tot += dmin[i];
            }
            pick = (double)(rnd(&rs) >> 11) / 9007199254740992.0 * tot;
            for (int64_t i = 0; i < n; i++) {
                acc += dmin[i];
                if (acc > pick) {
                    sel = i;
                    break;
                }
            }
            memcpy(C + e * S, F + sel * S, sizeof(float) * (size_t)S);
        }
    }
    for (int64_t i = 0; i < n; i++)
        assign[i] = -1;
    for (it = 0; it < KM_ITERS; it++) {
        int64_t changed = 0, np = 0;

        for (int64_t i = 0; i < n; i++)
            for (int e = 0; e < E; e++) {
                double d = 0;

                for (int64_t s = 0; s < S; s++) {
                    double t = F[i * S + s] - C[e * S + s];

                    d += t * t;
                }
                pairs[np].d = (float)d;
                pairs[np].i = (int)i;
                pairs[np].e = e;
                np++;
            }
        qsort(pairs, (size_t)np, sizeof(*pairs), cmp_pair);
        for (int e = 0; e < E; e++)
            cnt[e] = 0;
        for (int64_t i = 0; i < n; i++)
            dmin[i] = -1;       /* here: the new group, as a float */
        for (int64_t p = 0; p < np; p++) {
            const pair_t *q = &pairs[p];

            if (dmin[q->i] >= 0 || cnt[q->e] == cap[q->e])
                continue;
            dmin[q->i] = (float)q->e;
            cnt[q->e]++;
        }
        for (int64_t i = 0; i < n; i++) {
            int e = (int)dmin[i];

            changed += assign[i] != e;
            assign[i] = e;
        }
        *iters = it + 1;
        if (changed == 0)
            break;
        memset(C, 0, sizeof(float) * (size_t)(E * S));
        for (int64_t i = 0; i < n; i++)
            for (int64_t s = 0; s < S; s++)
                C[assign[i] * S + s] += F[i * S + s];
        for (int e = 0; e < E; e++)
            for (int64_t s = 0; s < S; s++)
                C[e * S + s] /= (float)(cap[e] > 0 ? cap[e] : 1);
    }
done:
    ss_free(C);
    ss_free(dmin);
    ss_free(pairs);
    ss_free(cap);
    ss_free(cnt);
    return rc;
}

/* ---- the router -------------------------------------------------------- */

/* Each token's share of the activation mass per expert: T [tokens, E]. */
void
ss__moefy_mass_shares(const float *H, int64_t tokens, int64_t hidden, const int *assign,
                      const double *w2n, int E, float *T)
{
    for (int64_t t = 0; t < tokens; t++) {
        double m[256] = { 0 }, tot = 0;

        for (int64_t i = 0; i < hidden; i++)
            m[assign[i]] += fabs((double)H[t * hidden + i]) * w2n[i];
        for (int e = 0; e < E; e++)
            tot += m[e];
        for (int e = 0; e < E; e++)
            T[t * E + e] = (float)(tot > 0 ? m[e] / tot : 1.0 / E);
    }
}

void
ss__moefy_top_k(const float *s, int E, int k, char *taken)
{
    memset(taken, 0, (size_t)E);
    for (int j = 0; j < k; j++) {
        int best = -1;

        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || s[e] > s[best]))
                best = e;
        taken[best] = 1;
    }
}

/* Fraction of the mass the top k of the logits P [tokens, E] select, and
 * (P NULL) the best any router could. */
double
ss__moefy_captured(const float *P, const float *T, int64_t tokens, int E,
                   int k)
{
    double got = 0;

    for (int64_t t = 0; t < tokens; t++) {
        char taken[256];

        ss__moefy_top_k(P != NULL ? P + t * E : T + t * E, E, k, taken);
        for (int e = 0; e < E; e++)
            got += taken[e] ? T[t * E + e] : 0.0;
    }
    return tokens > 0 ? got / (double)tokens : 0;
}

/* The router's logits over the first rows calibration rows, by running
 * g with them as an extra output: *P [rows * tpr, E] (new). */
int
ss__moefy_router_logits(ss__cx_t *cx, const ss_graph_t *g, const char *pname,
                        float **P, ss_err_t *err)
{
    ss_graph_t *c = NULL;
    ss__runner_t r = {0};
    ss__outputs_t o = {0};
    int rc;

    *P = NULL;
    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (rc = ss_graph_add_output(c, ss_graph_find_value(c, pname),
                                     err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0
        || (rc = ss__runner_init(&r, c, cx->ctl->threads, err)) < 0
        || (rc = ss__collect(&r, cx->calib, cx->ctl->cancel, &o, err)) < 0)
        goto done;
    *P = o.data[g->n_outputs];
    o.data[g->n_outputs] = NULL;
done:
    ss__outputs_clear(&o);
    ss__runner_close(&r);
    ss_graph_free(c);
    return rc;
}

static size_t
row_bytes(const ss_tensor_t *t)
{
    return (size_t)(ss_tensor_numel(t) / t->dims[0])
           * ss_dtype_size(t->dtype);
}

/* Trains the router of g (names rw, rb; logits pname) alone with the
 * trainer: KL to the mass shares T [rows * tpr, E] of the first rows
 * calibration rows.  *why gets a sentence when the trainer cannot train
 * this model (not an error: the centroid router stays). */
int
ss__moefy_train_router(ss__cx_t *cx, const ss_method_t *m, ss_graph_t *g,
                       const char *rw, const char *rb, const char *pname,
                       const float *T, int64_t rows, int64_t tpr, int E,
                       json_t *fnote, ss_err_t *err)
{
    const ss_dataset_t *ds = cx->calib;
    ss_graph_t *c = NULL;
    ss_train_t *t = NULL;
    ss_train_opts_t o;
    ss_tensor_t shapes[MAX_IN], teacher;
    const char **frozen = NULL;
    int64_t B = rows < 64 ? rows : 64, *perm = NULL, steps, per_epoch;
    uint64_t rs = (uint64_t)m->u.moefy.seed * 0x2545f4914f6cdd1dULL + 77;
    int rc = 0, n_frozen = 0, out;
    double loss = 0, first = -1;
    ss_err_t terr = {0};

    memset(shapes, 0, sizeof(shapes));
    memset(&teacher, 0, sizeof(teacher));
    if (m->u.moefy.epochs == 0 || rows / B == 0) {
        json_object_set_new(fnote, "router_training", json_string(
            "none (epochs 0): the centroid router"));
        return 0;
    }
    if (ds->n_inputs > MAX_IN)
        return ss_err_set(err, SS_EUNSUPP, "moefy: more than %d inputs",
                          MAX_IN);
    if ((rc = ss_graph_clone(g, &c, err)) < 0
        || (out = rc = ss_graph_add_output(c, ss_graph_find_value(c, pname),
                                           err)) < 0
        || (rc = ss_graph_finalize(c, err)) < 0)
        goto done;
    if ((frozen = ss_calloc((size_t)c->n_values + 1, sizeof(char *))) == NULL
        || (perm = ss_malloc(sizeof(int64_t) * (size_t)rows)) == NULL)
        goto nomem;
    for (int i = 0; i < c->n_values; i++)
        if (c->values[i].constant != NULL && strcmp(c->values[i].name, rw)
            && strcmp(c->values[i].name, rb))
            frozen[n_frozen++] = c->values[i].name;
    for (int i = 0; i < ds->n_inputs; i++) {
        shapes[i] = ds->inputs[i];
        shapes[i].dims[0] = B;
        if ((shapes[i].data = ss_malloc(row_bytes(&ds->inputs[i])
                                        * (size_t)B)) == NULL)
            goto nomem;
    }
    ss_train_opts_default(&o);
    o.output = out;
    o.loss = SS_LOSS_KL;
    o.temperature = 1.0;
    o.lr = m->u.moefy.lr;
    o.weight_decay = 0;
    o.seed = (uint64_t)m->u.moefy.seed;
    o.threads = cx->ctl->threads;
    o.frozen = frozen;
    o.n_frozen = n_frozen;
    per_epoch = rows / B;
    steps = per_epoch * m->u.moefy.epochs;
    o.sched = SS_SCHED_COSINE;
    o.total_steps = steps;
    if ((rc = ss_train_new(c, shapes, &o, &t, &terr)) < 0) {
        /* the centroid router stays */
        char why[640];

        snprintf(why, sizeof(why), "skipped: the trainer cannot train "
                 "this model (%s); the centroid router stays", terr.msg);
        json_object_set_new(fnote, "router_training", json_string(why));
        rc = rc == SS_ENOMEM ? ss_err_set(err, rc, "%s", terr.msg) : 0;
        goto done;
    }
    teacher.dtype = SS_DTYPE_F32;
    teacher.ndim = 2;
    teacher.dims[0] = B * tpr;
    teacher.dims[1] = E;
    if ((teacher.data = ss_malloc(sizeof(float) * (size_t)(B * tpr * E)))
        == NULL)
        goto nomem;
    for (int64_t i = 0; i < rows; i++)
        perm[i] = i;
    for (int64_t s = 0; s < steps; s++) {
        ss_train_batch_t b = { shapes, NULL, &teacher };
        int64_t at = (s % per_epoch) * B;

        if (at == 0)
            for (int64_t i = rows - 1; i > 0; i--) {
                int64_t j = (int64_t)(rnd(&rs) % (uint64_t)(i + 1)), x;

                x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
            }
        if ((rc = ss__cx_cancelled(cx)) < 0) {
            ss_err_set(err, rc, "cancelled");
            goto done;
        }
        for (int64_t r = 0; r < B; r++) {
            int64_t src = perm[at + r];
            float *tt = teacher.data;

            for (int i = 0; i < ds->n_inputs; i++) {
                size_t rb_ = row_bytes(&ds->inputs[i]);

                memcpy((char *)shapes[i].data + (size_t)r * rb_,
                       (const char *)ds->inputs[i].data + (size_t)src * rb_,
                       rb_);
            }
            /* log of the shares: their softmax is the shares */
            for (int64_t j = 0; j < tpr * E; j++)
                tt[r * tpr * E + j] = logf(T[src * tpr * E + j] + 1e-6f);
        }
        if ((rc = ss_train_step(t, &b, &loss, err)) < 0)
            goto done;
        if (first < 0)
            first = loss;
        if (!isfinite(loss)) {
            rc = ss_err_set(err, SS_EINVAL, "moefy: the router's loss is "
                            "not finite: lower lr");
            goto done;
        }
    }
    /* the trained router back into g */
    for (int i = 0; i < ss_train_num_params(t); i++) {
        ss_train_param_info_t pi;
        int id;

        if (ss_train_param(t, i, &pi) < 0
            || (id = ss_graph_find_value(g, pi.name)) < 0
            || ss_tensor_numel(g->values[id].constant) != pi.numel)
            continue;
        memcpy(g->values[id].constant->data, ss_train_params(t) + pi.offset,
               sizeof(float) * (size_t)pi.numel);
    }
    json_object_set_new(fnote, "router_training", json_pack(
        "{s:I, s:I, s:f, s:f, s:f}", "steps", (json_int_t)steps,
        "batch_size", (json_int_t)B, "lr", o.lr, "loss_first", first,
        "loss_last", loss));
    rc = 0;
    goto done;
nomem:
    rc = ss_err_set(err, SS_ENOMEM, "no memory to train the router");
done:
    ss_train_free(t);
    ss_graph_free(c);
    for (int i = 0; i < ds->n_inputs && i < MAX_IN; i++)
        ss_free(shapes[i].data);
    ss_free(teacher.data);
    ss_free(frozen);
    ss_free(perm);
    return rc;
}
