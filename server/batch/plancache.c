/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The batcher's plan cache.
 *
 * DESIGN.  A short list of entries keyed by the input shapes (a served
 * model sees a few batch sizes, so a list beats a hash table), each with a
 * pin count and a last-use tick.  A miss inserts a placeholder marked
 * "compiling", drops the lock, compiles, and publishes the plan; other
 * threads that want the same shape wait on the condition variable instead
 * of compiling it twice, and threads that want other shapes are not held
 * up.  A failed compile removes its placeholder, so the next request tries
 * again (and reports its own error).  Over capacity, the least recently
 * used unpinned plan is freed; pinned ones never are, so a plan cannot
 * disappear under a running batch.  Inputs that decide shapes
 * (ss_graph_shape_inputs: a Reshape's shape, a TopK's K) are part of the
 * key by value: the engine compiles a plan per value (engine/plan/plan.c),
 * and the entry keeps a copy of the values it was compiled for.
 *
 * THREADS: [any]; c->lock guards the list and every entry's bookkeeping.
 * Plans themselves are immutable once published.
 */

#include "server/batch/plancache.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"

struct ss__plan_entry {
    ss__plan_entry_t *next;
    ss_plan_t *plan;            /* NULL while compiling */
    int compiling;
    int pins;
    uint64_t used;              /* LRU tick */
    uint64_t hash;
    ss_tensor_t key[];          /* one per graph input; data NULL but for
                                 * inputs that decide shapes: a copy of
                                 * their values, after key[] */
};

struct ss__plancache {
    const ss_graph_t *g;
    int n_inputs;
    unsigned char *decides;     /* per input: its value is in the key */
    int cap;
    int count;                  /* entries with a plan */
    uint64_t tick;
    ss__plan_entry_t *list;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int tapped;                 /* plans honour the graph's taps [init] */
    size_t max_out;             /* an output's limit, per row when */
    int batched;                /* batched [init] */
    size_t budget;              /* max_plan_bytes [init] */
};

void
ss__plancache_set_tapped(ss__plancache_t *c)
{
    c->tapped = 1;
}

void
ss__plancache_set_output_limit(ss__plancache_t *c, size_t bytes,
                               int batched)
{
    c->max_out = bytes;
    c->batched = batched;
}

void
ss__plancache_set_plan_budget(ss__plancache_t *c, size_t bytes)
{
    c->budget = bytes;
}

int
ss__plancache_new(const ss_graph_t *g, int cap, ss__plancache_t **out,
                  ss_err_t *err)
{
    ss__plancache_t *c;
    int rc = 0;

    *out = NULL;
    if ((c = ss_calloc(1, sizeof *c)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a plan cache");
        goto done;
    }
    c->g = g;
    c->n_inputs = ss_graph_num_inputs(g);
    c->cap = cap < 1 ? 1 : cap;
    if ((c->decides = ss_calloc((size_t)c->n_inputs + 1, 1)) == NULL) {
        ss_free(c);
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a plan cache");
        goto done;
    }
    (void)ss_graph_shape_inputs(g, c->decides);
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        ss_free(c->decides);
        ss_free(c);
        rc = ss_err_set(err, SS_ENOMEM, "cannot create a mutex");
        goto done;
    }
    if (pthread_cond_init(&c->cond, NULL) != 0) {
        pthread_mutex_destroy(&c->lock);
        ss_free(c->decides);
        ss_free(c);
        rc = ss_err_set(err, SS_ENOMEM, "cannot create a condition");
        goto done;
    }
    *out = c;
done:
    return rc;
}

void
ss__plancache_free(ss__plancache_t *c)
{
    ss__plan_entry_t *e, *next;

    if (c == NULL)
        return;
    for (e = c->list; e != NULL; e = next) {
        next = e->next;
        ss_plan_free(e->plan);
        ss_free(e);
    }
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    ss_free(c->decides);
    ss_free(c);
}

/* Bytes of input i's value in the key: 0 unless it decides shapes. */
static size_t
value_bytes(const ss__plancache_t *c, const ss_tensor_t *t, int i)
{
    int64_t n;

    if (!c->decides[i] || t->data == NULL || (n = ss_tensor_numel(t)) <= 0)
        return 0;
    return (size_t)n * ss_dtype_size(t->dtype);
}

static uint64_t
hash_shapes(const ss__plancache_t *c, const ss_tensor_t *t, int n)
{
    uint64_t h = 14695981039346656037ULL;

    for (int i = 0; i < n; i++) {
        const unsigned char *v = t[i].data;
        size_t nb = value_bytes(c, &t[i], i);

        h = (h ^ (uint64_t)t[i].dtype) * 1099511628211ULL;
        h = (h ^ (uint64_t)t[i].ndim) * 1099511628211ULL;
        for (int d = 0; d < t[i].ndim; d++)
            h = (h ^ (uint64_t)t[i].dims[d]) * 1099511628211ULL;
        for (size_t k = 0; k < nb; k++)
            h = (h ^ v[k]) * 1099511628211ULL;
    }
    return h;
}

static int
same_shapes(const ss__plancache_t *c, const ss_tensor_t *a,
            const ss_tensor_t *b, int n)
{
    for (int i = 0; i < n; i++) {
        size_t nb;

        if (a[i].dtype != b[i].dtype || a[i].ndim != b[i].ndim)
            return 0;
        if (memcmp(a[i].dims, b[i].dims,
                   (size_t)a[i].ndim * sizeof a[i].dims[0]) != 0)
            return 0;
        if ((nb = value_bytes(c, &a[i], i)) > 0
            && memcmp(a[i].data, b[i].data, nb) != 0)
            return 0;
    }
    return 1;
}

/* [locked] */
static ss__plan_entry_t *
find(ss__plancache_t *c, const ss_tensor_t *shapes, uint64_t hash)
{
    for (ss__plan_entry_t *e = c->list; e != NULL; e = e->next)
        if (e->hash == hash && same_shapes(c, e->key, shapes, c->n_inputs))
            return e;
    return NULL;
}

/* [locked] */
static void
unlink_entry(ss__plancache_t *c, ss__plan_entry_t *e)
{
    ss__plan_entry_t **pp;

    for (pp = &c->list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            return;
        }
    }
}

/* [locked] Unlinks the least recently used idle plan, or returns NULL. */
static ss__plan_entry_t *
pick_victim(ss__plancache_t *c)
{
    ss__plan_entry_t *v = NULL;

    for (ss__plan_entry_t *e = c->list; e != NULL; e = e->next)
        if (e->plan != NULL && e->pins == 0 && (v == NULL || e->used < v->used))
            v = e;
    if (v != NULL) {
        unlink_entry(c, v);
        c->count--;
    }
    return v;
}

int
ss__plancache_get(ss__plancache_t *c, const ss_tensor_t *shapes,
                  const ss_plan_t **plan, ss__plan_entry_t **entry,
                  ss_err_t *err)
{
    uint64_t hash = hash_shapes(c, shapes, c->n_inputs);
    ss__plan_entry_t *e, *victims = NULL;
    ss_plan_t *p = NULL;
    size_t head, values = 0;
    char *at;
    int rc = 0;

    *plan = NULL;
    *entry = NULL;
    pthread_mutex_lock(&c->lock);
    while ((e = find(c, shapes, hash)) != NULL && e->compiling)
        pthread_cond_wait(&c->cond, &c->lock);
    if (e != NULL) {
        e->pins++;
        e->used = ++c->tick;
        pthread_mutex_unlock(&c->lock);
        *plan = e->plan;
        *entry = e;
        goto done;
    }
    head = sizeof *e + (size_t)c->n_inputs * sizeof e->key[0];
    for (int i = 0; i < c->n_inputs; i++)
        values += (value_bytes(c, &shapes[i], i) + 15) & ~(size_t)15;
    e = ss_calloc(1, head + values);
    if (e == NULL) {
        pthread_mutex_unlock(&c->lock);
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a plan cache entry");
        goto done;
    }
    for (int i = 0; i < c->n_inputs; i++) {
        e->key[i].dtype = shapes[i].dtype;
        e->key[i].ndim = shapes[i].ndim;
        memcpy(e->key[i].dims, shapes[i].dims, sizeof e->key[i].dims);
    }
    at = (char *)e + head;
    for (int i = 0; i < c->n_inputs; i++) {
        size_t nb = value_bytes(c, &shapes[i], i);

        if (nb > 0) {
            e->key[i].data = memcpy(at, shapes[i].data, nb);
            at += (nb + 15) & ~(size_t)15;
        }
    }
    e->hash = hash;
    e->compiling = 1;
    e->pins = 1;
    e->next = c->list;
    c->list = e;
    pthread_mutex_unlock(&c->lock);

    {
        /* a batch's rows are the first dim of its inputs */
        const ss_plan_opts_t o = {
            .tapped = c->tapped,
            .max_output_bytes = c->max_out,
            .output_rows = c->batched && c->n_inputs > 0
                           && e->key[0].ndim > 0 ? e->key[0].dims[0] : 0,
            .max_plan_bytes = c->budget,
        };

        rc = ss_plan_new_opts(c->g, e->key, &o, &p, err);
    }

    pthread_mutex_lock(&c->lock);
    e->compiling = 0;
    if (rc < 0) {
        unlink_entry(c, e);
        ss_free(e);
        e = NULL;
    } else {
        ss__plan_entry_t *v;

        e->plan = p;
        e->used = ++c->tick;
        c->count++;
        while (c->count > c->cap && (v = pick_victim(c)) != NULL) {
            v->next = victims;
            victims = v;
        }
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    while (victims != NULL) {
        ss__plan_entry_t *next = victims->next;

        ss_plan_free(victims->plan);
        ss_free(victims);
        victims = next;
    }
    if (e != NULL) {
        *plan = e->plan;
        *entry = e;
    }
done:
    return rc;
}

void
ss__plancache_release(ss__plancache_t *c, ss__plan_entry_t *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    e->pins--;
    pthread_mutex_unlock(&c->lock);
}

int
ss__plancache_drop_idle(ss__plancache_t *c)
{
    ss__plan_entry_t *v, *victims = NULL;
    int n = 0;

    pthread_mutex_lock(&c->lock);
    while ((v = pick_victim(c)) != NULL) {
        v->next = victims;
        victims = v;
    }
    pthread_mutex_unlock(&c->lock);
    /* Outside the lock: freeing a plan releases its packed constants. */
    while (victims != NULL) {
        v = victims->next;
        ss_plan_free(victims->plan);
        ss_free(victims);
        victims = v;
        n++;
    }
    return n;
}

int
ss__plancache_count(ss__plancache_t *c)
{
    int n;

    pthread_mutex_lock(&c->lock);
    n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}
