/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Step 6 of the training graph build (build.c): the flat parameter,
 * gradient and state arrays, value lifetimes and arena offsets by first
 * fit, and every value's pointer.
 *
 * THREADS: [worker]; a trainer belongs to one thread.
 */

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "compress/train/internal.h"

#define ALIGN 64

/* ---- step 6: memory ----------------------------------------------------- */

typedef struct blk {
    size_t off, size;
    int last;
} blk_t;

static int
cmp_first(const void *a, const void *b, void *arg)
{
    const ss__tr_t *t = arg;
    int x = *(const int *)a, y = *(const int *)b;

    if (t->tv[x].first != t->tv[y].first)
        return t->tv[x].first < t->tv[y].first ? -1 : 1;
    return x < y ? -1 : x > y;
}

int
ss__mem_plan(ss__tr_t *t, ss_err_t *err)
{
    int *order = NULL, n = 0, i, k, nb = 0, rc = 0;
    blk_t *live = NULL;
    size_t top = 0;

    for (i = 0; i < t->n_steps; i++) {
        const ss__step_t *s = &t->steps[i];

        for (k = 0; k < s->n_in + s->n_out; k++) {
            int v = k < s->n_in ? s->in[k] : s->out[k - s->n_in];

            if (v < 0)
                continue;
            v = ss__tv_root(t, v);
            if (t->tv[v].first < 0 || i < t->tv[v].first)
                t->tv[v].first = i;
            if (i > t->tv[v].last)
                t->tv[v].last = i;
        }
    }
    if ((order = ss_malloc((size_t)(t->n_tv + 1) * sizeof(int))) == NULL ||
        (live = ss_malloc((size_t)(t->n_tv + 1) * sizeof(*live))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory to plan the arena");
        goto done;
    }
    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_ARENA && t->tv[i].first >= 0)
            order[n++] = i;
    qsort_r(order, (size_t)n, sizeof(int), cmp_first, t);
    for (i = 0; i < n; i++) {
        ss__tv_t *v = &t->tv[order[i]];
        size_t size = (v->bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
        size_t off = 0;
        int j, w;

        if (size == 0)
            size = ALIGN;
        /* drop blocks whose last reader ran before this value's writer */
        for (j = w = 0; j < nb; j++)
            if (live[j].last >= v->first)
                live[w++] = live[j];
        nb = w;
        /* live is sorted by offset: take the first gap that fits */
        for (j = 0; j < nb; j++) {
            if (live[j].off >= off + size)
                break;
            if (live[j].off + live[j].size > off)
                off = live[j].off + live[j].size;
        }
        memmove(&live[j + 1], &live[j], (size_t)(nb - j) * sizeof(*live));
        live[j].off = off;
        live[j].size = size;
        live[j].last = v->last;
        nb++;
        v->offset = off;
        if (off + size > top)
            top = off + size;
    }
    t->arena_bytes = top;
done:
    ss_free(order);
    ss_free(live);
    return rc;
}

int
ss__mem_resolve(ss__tr_t *t, ss_err_t *err)
{
    size_t scratch = 0;
    int i;

    if ((t->arena = ss_aligned_alloc(t->arena_bytes ? t->arena_bytes
                                                    : ALIGN)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the training "
                          "arena (%zu bytes)", t->arena_bytes);
    memset(t->arena, 0, t->arena_bytes);
    for (i = 0; i < t->n_tv; i++) {
        ss__tv_t *v = &t->tv[i];

        switch (v->kind) {
        case SS__TV_CONST: v->data = v->cdata->data; break;
        case SS__TV_PARAM: v->data = t->w + v->offset; break;
        case SS__TV_PGRAD: v->data = t->gr + v->offset; break;
        case SS__TV_STATE: v->data = t->state + v->offset; break;
        case SS__TV_ARENA:
            v->data = (char *)t->arena + v->offset;
            break;
        case SS__TV_INPUT:
            if ((v->data = ss_aligned_alloc(v->bytes ? v->bytes
                                                     : ALIGN)) == NULL)
                return ss_err_set(err, SS_ENOMEM, "no memory for inputs");
            memset(v->data, 0, v->bytes);
            break;
        case SS__TV_WBF16: v->data = t->wbf + v->offset; break;
        case SS__TV_VIEW: break;
        }
    }
    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_VIEW)
            t->tv[i].data = t->tv[ss__tv_root(t, i)].data;
    for (i = 0; i < t->n_steps; i++)
        if (t->steps[i].prim &&
            ss_dnn_prim_scratch_size(t->steps[i].prim) > scratch)
            scratch = ss_dnn_prim_scratch_size(t->steps[i].prim);
    t->scratch_bytes = scratch;
    if (scratch && (t->scratch = ss_aligned_alloc(scratch)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for oneDNN scratch");
    return 0;
}

/* A slice's trainer (slices.c) reads its parent's parameters and their
 * bf16 copies, which must be laid out alike (the same graph and options
 * give the same order; checked, since a slice is another batch size);
 * it keeps its own gradients and running statistics, and no optimizer
 * state. */
static int
mem_flat_slice(ss__tr_t *t, int bf, size_t n, size_t ns, ss_err_t *err)
{
    const ss__tr_t *p = t->parent;

    if (t->flat != p->flat || t->flat_decay != p->flat_decay
        || t->n_params != p->n_params || t->n_state != p->n_state
        || (bf && p->wbf == NULL))
        return ss_err_set(err, SS_EUNSUPP, "a slice's parameters are laid "
                          "out unlike the whole batch's");
    for (int i = 0; i < t->n_params; i++)
        if (t->tv[t->params[i].tv].offset != p->tv[p->params[i].tv].offset
            || t->tv[t->params[i].tv].numel != p->tv[p->params[i].tv].numel)
            return ss_err_set(err, SS_EUNSUPP, "a slice's parameter %d is "
                              "laid out unlike the whole batch's", i);
    t->w = p->w;
    t->wbf = bf ? p->wbf : NULL;
    if ((t->gr = ss_aligned_alloc(n)) == NULL
        || (t->state = ss_aligned_alloc(ns)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for a slice's "
                          "gradients");
    memset(t->gr, 0, n);
    memcpy(t->state, p->state, ns);
    return 0;
}

int
ss__mem_flat(ss__tr_t *t, ss_err_t *err)
{
    size_t n = (size_t)(t->flat ? t->flat : 16) * sizeof(float);
    size_t ns = (size_t)(t->n_state ? t->n_state : 16) * sizeof(float);
    const ss_train_dp_t *dp = t->o.dp;
    int i, bf = 0, rc;

    for (i = 0; i < t->n_tv; i++)
        if (t->tv[i].kind == SS__TV_WBF16)
            bf = 1;
    /* Data parallel on one machine: the glue may hand out arrays the
     * processes share (train.h); every process gets the same answer. */
    if (dp != NULL && dp->size > 1 && dp->share != NULL) {
        if ((rc = dp->share(dp->arg, t->flat ? t->flat : 16, &t->sh,
                            err)) < 0)
            return rc;
        t->shared = rc == 1;
    }
    if (t->parent != NULL)
        return mem_flat_slice(t, bf, n, ns, err);
    if (t->shared) {
        t->w = t->sh.w;
        t->gr = t->sh.g;
    } else if ((t->w = ss_aligned_alloc(n)) == NULL
               || (t->gr = ss_aligned_alloc(n)) == NULL) {
        return ss_err_set(err, SS_ENOMEM, "no memory for %lld parameters",
                          (long long)t->flat);
    }
    if ((bf && (t->wbf = ss_aligned_alloc(n / 2)) == NULL)
        || (t->state = ss_aligned_alloc(ns)) == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for the bf16 weights "
                          "and running statistics");
    t->wbf_stale = bf;          /* rounded before the first step */
    memset(t->gr, 0, n);
    memset(t->state, 0, ns);
    /* Shared parameters: process 0 writes them while the others wait
     * (they may be training already otherwise). */
    if (!t->shared || dp->rank == 0)
        memset(t->w, 0, n);
    for (i = 0; i < t->n_tv; i++) {
        const ss__tv_t *v = &t->tv[i];

        if (v->kind == SS__TV_PARAM && (!t->shared || dp->rank == 0))
            memcpy(t->w + v->offset, v->cdata->data, v->bytes);
        else if (v->kind == SS__TV_STATE)
            memcpy(t->state + v->offset, v->cdata->data, v->bytes);
    }
    if (t->shared && (rc = dp->gather_f32(dp->arg, t->w, t->flat ? t->flat
                                                               : 16,
                                          err)) < 0)
        return rc;
    return ss__optim_alloc(t, err);
}
