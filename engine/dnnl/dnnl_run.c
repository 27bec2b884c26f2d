/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The run path of a oneDNN object: its argument table turned into
 * dnnl_exec_arg_t over the caller's pointers, executed on a stream.
 *
 * DESIGN.  oneDNN executes on memory objects, not pointers.  Making one
 * (dnnl_memory_create) and dropping it costs ~0.4-0.8 us here, and a run
 * wraps 2-4 pointers: for mobilenet_v2 at batch 1 (56 steps, ~4.2 ms)
 * that was ~0.1-0.2 ms a run, 3-4%.  Setting a kept object's data handle
 * costs ~6 ns.  An object is shared by every thread that runs its plan,
 * so a kept set cannot simply live in it: a run takes the object's spare
 * set with an atomic exchange (NULL then for anyone else), points it at
 * its buffers, runs, and puts it back with a compare-exchange; a run that
 * finds no spare (another thread holds it) makes a set of its own and
 * destroys it after if the slot got refilled meanwhile.  One thread
 * running a plan again and again makes each set once.
 *
 * Not kept: an object with a padded run-time argument.  Setting a data
 * handle zero-fills the padding (dnnl_memory_set_data_handle), which
 * creating a memory object over the pointer does not: that would be a
 * write the caller never asked for.  Activations here are never padded
 * (nChw16c needs C % 16 == 0), so this is a guard, not a path.
 *
 * THREADS: see above; a stream is used by one thread at a time.
 */

#include "config.h"

#include <omp.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/dnnl/internal.h"

_Atomic long ss__dnn_mems_made;

void
ss__dnn_mems_free(ss__dnn_mems_t *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->n; i++)
        dnnl_memory_destroy(m->m[i]);
    ss_free(m);
}

/* md's elements fill its buffer: no padding a data handle change would
 * zero-fill. */
static int
unpadded(const dnnl_memory_desc_t *md)
{
    if (md->format_kind != dnnl_blocked)
        return 0;
    for (int i = 0; i < md->ndims; i++)
        if (md->padded_dims[i] != md->dims[i] || md->padded_offsets[i] != 0)
            return 0;
    return 1;
}

/* Whether p's sets of memory objects may be kept (internal.h). */
static int
keep_ok(const ss_dnn_prim_t *p)
{
    ss_dnn_prim_t *mp = (ss_dnn_prim_t *)p;   /* keep_mems: atomic */
    int k = atomic_load_explicit(&mp->keep_mems, memory_order_relaxed);

    if (k != 0)
        return k > 0;
    k = 1;
    for (int i = 0; i < p->n_args; i++)
        if (p->args[i].src != SS__DNN_SRC_CONST && !unpadded(&p->args[i].md))
            k = -1;
    atomic_store_explicit(&mp->keep_mems, k, memory_order_relaxed);
    return k > 0;
}

/* A new set of memory objects for p's run-time arguments (and its
 * scratchpad), their data handles NULL until a run sets them. */
static int
mems_new(const ss_dnn_prim_t *p, dnnl_engine_t eng, ss__dnn_mems_t **out,
         ss_err_t *err)
{
    ss__dnn_mems_t *m = ss_calloc(1, sizeof(*m));
    int rc = 0;

    *out = NULL;
    if (m == NULL)
        return ss_err_set(err, SS_ENOMEM, "no memory for oneDNN %s's "
                          "memory objects", p->what);
    for (int i = 0; i <= p->n_args && rc == 0; i++) {
        const dnnl_memory_desc_t *md;

        if (i == p->n_args)
            md = p->scratch ? &p->scratch_md : NULL;
        else
            md = p->args[i].src == SS__DNN_SRC_CONST ? NULL : &p->args[i].md;
        if (md == NULL)
            continue;
        rc = ss__dnn_check(dnnl_memory_create(&m->m[m->n], md, eng, NULL),
                           err, "dnnl_memory_create", p->what);
        m->n += rc == 0;
    }
    if (rc < 0) {
        ss__dnn_mems_free(m);
        return rc;
    }
    atomic_fetch_add_explicit(&ss__dnn_mems_made, 1, memory_order_relaxed);
    *out = m;
    return 0;
}

/* Gives m back to p as its spare, or destroys it when p has one. */
static void
mems_put(const ss_dnn_prim_t *p, ss__dnn_mems_t *m)
{
    ss_dnn_prim_t *mp = (ss_dnn_prim_t *)p;   /* spare: atomic */
    ss__dnn_mems_t *none = NULL;

    if (!atomic_compare_exchange_strong(&mp->spare, &none, m))
        ss__dnn_mems_free(m);
}

int
ss_dnn_run(const ss_dnn_prim_t *p, ss_dnn_stream_t *s,
           const void *const *in, void *out, void *scratch, ss_err_t *err)
{
    dnnl_exec_arg_t args[SS__DNN_MAX_ARGS + 1];
    ss_dnn_prim_t *mp = (ss_dnn_prim_t *)p;   /* spare: atomic */
    ss__dnn_mems_t *m = NULL;
    dnnl_engine_t eng;
    int i, n = 0, nm = 0, rc, keep;
    void *h;

    if ((rc = ss__dnn_engine(&eng, err)) < 0)
        return rc;
    if (out == NULL || (p->scratch && scratch == NULL) ||
        (p->n_in > 0 && in == NULL))
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: NULL buffer", p->what);
    if (p->kern != NULL) {
        if (in[0] == NULL)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: in[0] is NULL",
                              p->what);
        ss__dnn_kern_run(p->kern, in[0], out);
        return 0;
    }
    if (s->threads > 0)
        omp_set_num_threads(s->threads);
    if (p->sum_in >= 0) {
        if (in[p->sum_in] == NULL)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: in[%d] is NULL",
                              p->what, p->sum_in);
        if (in[p->sum_in] != out)
            memcpy(out, in[p->sum_in], p->sum_bytes);
    }
    keep = keep_ok(p);
    if (keep)
        m = atomic_exchange(&mp->spare, NULL);
    if (m == NULL && (rc = mems_new(p, eng, &m, err)) < 0)
        return rc;
    for (i = 0; i <= p->n_args; i++) {
        const ss__dnn_arg_t *a = &p->args[i];

        if (i == p->n_args) {
            if (!p->scratch)
                break;
            args[n].arg = DNNL_ARG_SCRATCHPAD;
            h = scratch;
        } else if (a->src == SS__DNN_SRC_CONST) {
            args[n].arg = a->arg;
            args[n++].memory = a->cmem;
            continue;
        } else {
            args[n].arg = a->arg;
            h = a->src == SS__DNN_SRC_OUT ? out : (void *)in[a->src];
        }
        if (h == NULL) {
            rc = ss_err_set(err, SS_EINVAL, "oneDNN %s: in[%d] is NULL",
                            p->what, a->src);
            goto done;
        }
        rc = ss__dnn_check(dnnl_memory_set_data_handle(m->m[nm], h), err,
                           "dnnl_memory_set_data_handle", p->what);
        if (rc < 0)
            goto done;
        args[n++].memory = m->m[nm++];
    }
    rc = ss__dnn_check(dnnl_primitive_execute(p->prim, s->stream, n, args),
                       err, "dnnl_primitive_execute", p->what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_stream_wait(s->stream), err, "dnnl_stream_wait",
                       p->what);
done:
    if (keep)
        mems_put(p, m);
    else
        ss__dnn_mems_free(m);
    return rc;
}
