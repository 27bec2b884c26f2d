/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oneDNN primitive layer, core: engine, streams, status mapping, the
 * generic object (arguments, constant packing, scratchpad).  The run
 * path is dnnl_run.c, the per-kind constructors dnnl_ops.c, post-ops and
 * attributes dnnl_postops.c.
 *
 * DESIGN.  One CPU engine per process.  A primitive object is built once
 * for concrete shapes and never changes: constants (weights, bias, gamma)
 * are reordered at build time into the layout oneDNN picked for them
 * (format_tag_any) and owned by the object; activations stay plain so the
 * plan can interleave oneDNN and reference kernels without reorders.  The
 * scratchpad is user-managed (dnnl_scratchpad_mode_user): the object only
 * reports its size and the caller passes memory from its own arena.  This
 * is what makes one object safe to run from several threads at once.
 *
 * A run wraps each pointer in a dnnl_memory_t; the object keeps one spare
 * set of them that a run takes for itself (dnnl_run.c).
 *
 * Packed constants are shared between objects.  A plan is compiled per
 * input shape, so one model version holds several objects (batch 1, 8,
 * 16, 32...) that pack the same initializer into the same layout; each
 * kept its own copy, which cost more than the weights themselves.  A
 * process-wide table keyed by (source address, source layout, packed
 * layout, hash of the source bytes) hands out reference-counted packed
 * buffers instead.  The hash guards against a freed source whose address
 * is reused for different bytes while an old entry is still referenced;
 * the address keeps sharing within one model (two models with equal
 * weights still pack their own).  Entries are immutable once published.
 *
 * THREADS: the engine is created under pthread_once; objects are
 * read-only after build; a stream is used by one thread at a time.
 * share_lock guards the packed-constant table and its reference counts.  The
 * OpenMP thread count is a per-thread setting (nthreads-var), so each
 * stream sets it on its own thread before a run.
 */

#include "config.h"

#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "common/memacct.h"
#include "engine/dnnl/internal.h"

/* A packed constant, shared by every object whose argument has the same
 * key.  Owned by the table; refs counts the arguments pointing at it. */
struct ss__dnn_packed {
    struct ss__dnn_packed *next;    /* bucket chain */
    const void *src;
    dnnl_memory_desc_t src_md, md;
    uint64_t hash;
    long refs;                      /* share_lock */
    dnnl_memory_t cmem;
    void *cbuf;
    struct ss_memacct *acct;        /* charged for cbuf: the account of */
    size_t charged;                 /* the compile that packed it */
};

#define SHARE_BUCKETS 1024

static pthread_mutex_t share_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ss__dnn_packed *share_table[SHARE_BUCKETS];

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_status_t engine_status;

static void
engine_create(void)
{
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

int
ss__dnn_engine(dnnl_engine_t *out, ss_err_t *err)
{
    pthread_once(&engine_once, engine_create);
    *out = engine;
    return ss__dnn_check(engine_status, err, "dnnl_engine_create",
                         "CPU engine");
}

static const char *
status_name(dnnl_status_t st)
{
    switch (st) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "unimplemented";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    }
    return "unknown status";
}

int
ss__dnn_check(dnnl_status_t st, ss_err_t *err, const char *call,
              const char *what)
{
    int code;

    if (st == dnnl_success)
        return 0;
    if (st == dnnl_unimplemented)
        code = SS_EUNSUPP;
    else if (st == dnnl_out_of_memory)
        code = SS_ENOMEM;
    else
        code = SS_EDNNL;
    return ss_err_set(err, code, "oneDNN %s: %s failed: %s", what, call,
                      status_name(st));
}

dnnl_data_type_t
ss__dnn_dtype(ss_dtype_t t)
{
    switch (t) {
    case SS_DTYPE_UNDEFINED:
    case SS_DTYPE_F32: return dnnl_f32;
    case SS_DTYPE_BF16: return dnnl_bf16;
    case SS_DTYPE_F16: return dnnl_f16;
    case SS_DTYPE_I8: return dnnl_s8;
    case SS_DTYPE_U8: return dnnl_u8;
    case SS_DTYPE_I32: return dnnl_s32;
    default: return dnnl_data_type_undef;
    }
}

int
ss__dnn_md_strided(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                   const int64_t *strides, dnnl_data_type_t dt,
                   ss_err_t *err, const char *what)
{
    dnnl_dims_t d, s;
    int i;

    if (ndim < 1 || ndim > SS_DNN_MAX_DIMS)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: %d dims", what, ndim);
    for (i = ndim - 1; i >= 0; i--) {
        if (dims[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: dim %d is %lld",
                              what, i, (long long)dims[i]);
        d[i] = dims[i];
        if (strides)
            s[i] = strides[i];
        else
            s[i] = i == ndim - 1 ? 1 : s[i + 1] * d[i + 1];
        if (s[i] < 0)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: stride %d is %lld",
                              what, i, (long long)s[i]);
    }
    return ss__dnn_check(dnnl_memory_desc_init_by_strides(md, ndim, d, dt, s),
                         err, "dnnl_memory_desc_init_by_strides", what);
}

int
ss__dnn_md_dense(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                 dnnl_data_type_t dt, ss_err_t *err, const char *what)
{
    return ss__dnn_md_strided(md, ndim, dims, NULL, dt, err, what);
}

int
ss_dnn_blocked_ok(int ndim, const int64_t *dims)
{
    return ndim >= 3 && ndim <= 5 && dims[1] > 0 && dims[1] % 16 == 0;
}

int
ss__dnn_md_layout(dnnl_memory_desc_t *md, int ndim, const int64_t *dims,
                  dnnl_data_type_t dt, ss_dnn_layout_t l, ss_err_t *err,
                  const char *what)
{
    /* by spatial rank 1, 2, 3 */
    static const dnnl_format_tag_t blk[3] = { dnnl_nCw16c, dnnl_nChw16c,
                                              dnnl_nCdhw16c };
    static const dnnl_format_tag_t last[3] = { dnnl_nwc, dnnl_nhwc,
                                               dnnl_ndhwc };
    dnnl_dims_t d;
    int i;

    if (l == SS_DNN_PLAIN)
        return ss__dnn_md_dense(md, ndim, dims, dt, err, what);
    if ((l != SS_DNN_BLOCKED && l != SS_DNN_NHWC) || ndim < 3 || ndim > 5 ||
        (l == SS_DNN_BLOCKED && !ss_dnn_blocked_ok(ndim, dims)))
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: layout %d for %d "
                          "dims (blocked needs 3-5 and C %% 16 == 0, NHWC "
                          "3-5)", what, (int)l, ndim);
    for (i = 0; i < ndim; i++) {
        if (dims[i] < 1)
            return ss_err_set(err, SS_EINVAL, "oneDNN %s: dim %d is %lld",
                              what, i, (long long)dims[i]);
        d[i] = dims[i];
    }
    return ss__dnn_check(dnnl_memory_desc_init_by_tag(
                             md, ndim, d, dt,
                             l == SS_DNN_NHWC ? last[ndim - 3]
                                              : blk[ndim - 3]),
                         err, "dnnl_memory_desc_init_by_tag", what);
}

int
ss_dnn_stream_new(int threads, ss_dnn_stream_t **out, ss_err_t *err)
{
    ss_dnn_stream_t *s = NULL;
    dnnl_engine_t eng;
    int rc;

    *out = NULL;
    if ((rc = ss__dnn_engine(&eng, err)) < 0)
        goto done;
    if ((s = ss_calloc(1, sizeof(*s))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for a oneDNN stream");
        goto done;
    }
    s->threads = threads;
    rc = ss__dnn_check(dnnl_stream_create(&s->stream, eng,
                                          dnnl_stream_default_flags),
                       err, "dnnl_stream_create", "stream");
    if (rc < 0)
        goto done;
    *out = s;
    s = NULL;
done:
    ss_dnn_stream_free(s);
    return rc;
}

int
ss_dnn_stream_threads(ss_dnn_stream_t *s, int threads)
{
    int was = s->threads;

    s->threads = threads;
    return was;
}

void
ss_dnn_stream_free(ss_dnn_stream_t *s)
{
    if (s == NULL)
        return;
    if (s->stream)
        dnnl_stream_destroy(s->stream);
    ss_free(s);
}

int
ss__dnn_prim_alloc(const char *what, ss_dnn_prim_t **out, ss_err_t *err)
{
    ss_dnn_prim_t *p;

    if ((p = ss_calloc(1, sizeof(*p))) == NULL) {
        *out = NULL;
        return ss_err_set(err, SS_ENOMEM, "no memory for a oneDNN %s", what);
    }
    p->what = what;
    p->sum_in = -1;
    *out = p;
    return 0;
}

/* Hash of n bytes, 8 at a time (a multiply-xorshift mix): a content
 * check for the table, not a cryptographic one. */
static uint64_t
bytes_hash(const void *data, size_t n)
{
    const unsigned char *b = data;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
    size_t i;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    h ^= h >> 29;
    return h * 0xc4ceb9fe1a85ec53ULL;
}

static struct ss__dnn_packed **
share_bucket(const void *src, uint64_t hash)
{
    uint64_t k = hash ^ (uint64_t)(uintptr_t)src;

    return &share_table[(k ^ (k >> 17)) % SHARE_BUCKETS];
}

/* [locked] The entry for a key, or NULL. */
static struct ss__dnn_packed *
share_find(const void *src, const dnnl_memory_desc_t *src_md,
           const dnnl_memory_desc_t *md, uint64_t hash)
{
    struct ss__dnn_packed *e;

    for (e = *share_bucket(src, hash); e != NULL; e = e->next)
        if (e->src == src && e->hash == hash &&
            dnnl_memory_desc_equal(&e->src_md, src_md) &&
            dnnl_memory_desc_equal(&e->md, md))
            return e;
    return NULL;
}

/* Credits a packed buffer's bytes to the account it was charged to
 * (common/memacct.h) and drops that reference. */
static void
uncharge(struct ss_memacct **acct, size_t n)
{
    ss_memacct_credit(*acct, n);
    ss_memacct_unref(*acct);
    *acct = NULL;
}

/* Takes a reference to an existing entry for a's key, or NULL. */
static struct ss__dnn_packed *
share_get(const ss__dnn_arg_t *a, const dnnl_memory_desc_t *want,
          uint64_t hash)
{
    struct ss__dnn_packed *e;

    pthread_mutex_lock(&share_lock);
    if ((e = share_find(a->udata, &a->md, want, hash)) != NULL)
        e->refs++;
    pthread_mutex_unlock(&share_lock);
    return e;
}

/* Publishes a's freshly packed buffer under its key, or, if another
 * thread published the same key meanwhile, frees a's copy and takes a
 * reference to that one.  Without memory for an entry a keeps its own
 * copy (sharing is an optimisation, not a requirement). */
static void
share_put(ss__dnn_arg_t *a, const dnnl_memory_desc_t *want, uint64_t hash)
{
    struct ss__dnn_packed *e, *n = ss_calloc(1, sizeof *n);

    pthread_mutex_lock(&share_lock);
    if ((e = share_find(a->udata, &a->md, want, hash)) != NULL) {
        e->refs++;
        pthread_mutex_unlock(&share_lock);
        ss_free(n);
        dnnl_memory_destroy(a->cmem);
        ss_free(a->cbuf);
        a->cbuf = NULL;
        uncharge(&a->acct, a->charged);
        a->cmem = e->cmem;
        a->shared = e;
        return;
    }
    if (n != NULL) {
        struct ss__dnn_packed **bucket = share_bucket(a->udata, hash);

        n->src = a->udata;
        n->src_md = a->md;
        n->md = *want;
        n->hash = hash;
        n->refs = 1;
        n->cmem = a->cmem;
        n->cbuf = a->cbuf;
        n->acct = a->acct;
        n->charged = a->charged;
        a->acct = NULL;
        n->next = *bucket;
        *bucket = n;
        a->cbuf = NULL;
        a->shared = n;
    }
    pthread_mutex_unlock(&share_lock);
}

/* Drops a reference; the last one frees the packed buffer. */
static void
share_release(struct ss__dnn_packed *e)
{
    struct ss__dnn_packed **pp;
    int last;

    pthread_mutex_lock(&share_lock);
    last = --e->refs == 0;
    if (last) {
        for (pp = share_bucket(e->src, e->hash); *pp != e; pp = &(*pp)->next)
            ;
        *pp = e->next;
    }
    pthread_mutex_unlock(&share_lock);
    if (last) {
        dnnl_memory_destroy(e->cmem);
        ss_free(e->cbuf);
        uncharge(&e->acct, e->charged);
        ss_free(e);
    }
}

void
ss_dnn_prim_free(ss_dnn_prim_t *p)
{
    int i;

    if (p == NULL)
        return;
    for (i = 0; i < p->n_args; i++) {
        if (p->args[i].shared) {
            share_release(p->args[i].shared);
            continue;
        }
        if (p->args[i].cmem)
            dnnl_memory_destroy(p->args[i].cmem);
        ss_free(p->args[i].cbuf);
        uncharge(&p->args[i].acct, p->args[i].charged);
    }
    ss__dnn_mems_free(atomic_load(&p->spare));
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    ss_free(p->kern);
    ss_free(p->args);
    ss_free(p);
}

/* Appends an argument; *out points into p->args until the next one. */
static int
new_arg(ss_dnn_prim_t *p, int arg, ss__dnn_arg_t **out, ss_err_t *err)
{
    ss__dnn_arg_t *a;

    *out = NULL;
    if (p->n_args >= SS__DNN_MAX_ARGS)
        return ss_err_set(err, SS_EUNSUPP, "oneDNN %s: too many arguments",
                          p->what);
    if (p->n_args == p->cap_args) {
        int cap = p->cap_args ? 2 * p->cap_args : 4;

        if (cap > SS__DNN_MAX_ARGS)
            cap = SS__DNN_MAX_ARGS;
        if ((a = ss_realloc(p->args, (size_t)cap * sizeof(*a))) == NULL)
            return ss_err_set(err, SS_ENOMEM, "oneDNN %s: no memory for "
                              "an argument", p->what);
        p->args = a;
        p->cap_args = cap;
    }
    a = &p->args[p->n_args++];
    memset(a, 0, sizeof(*a));
    a->arg = arg;
    *out = a;
    return 0;
}

int
ss__dnn_add_arg(ss_dnn_prim_t *p, int arg, int src, ss_err_t *err)
{
    ss__dnn_arg_t *a;
    int rc;

    if ((rc = new_arg(p, arg, &a, err)) < 0)
        return rc;
    a->src = src;
    return 0;
}

int
ss__dnn_add_const(ss_dnn_prim_t *p, int arg,
                  const dnnl_memory_desc_t *user_md, const void *data,
                  ss_err_t *err)
{
    ss__dnn_arg_t *a;
    int rc;

    if (data == NULL)
        return ss_err_set(err, SS_EINVAL, "oneDNN %s: constant %d is NULL",
                          p->what, arg);
    if ((rc = new_arg(p, arg, &a, err)) < 0)
        return rc;
    a->src = SS__DNN_SRC_CONST;
    a->md = *user_md;
    a->udata = data;
    return 0;
}

int
ss__dnn_pd(const_dnnl_op_desc_t op_desc, const_dnnl_primitive_attr_t a,
           dnnl_primitive_desc_t *out, ss_err_t *err, const char *what)
{
    dnnl_engine_t eng;
    int rc;

    *out = NULL;
    if ((rc = ss__dnn_engine(&eng, err)) < 0)
        return rc;
    return ss__dnn_check(dnnl_primitive_desc_create(out, op_desc, a, eng,
                                                    NULL),
                         err, "dnnl_primitive_desc_create", what);
}

/* Reorders a constant from the caller's layout into the one the primitive
 * wants, into a buffer the object owns. */
static int
pack(ss_dnn_prim_t *p, ss__dnn_arg_t *a, const dnnl_memory_desc_t *want,
     ss_err_t *err)
{
    dnnl_engine_t eng;
    dnnl_memory_t from = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    dnnl_stream_t s = NULL;
    dnnl_exec_arg_t args[2];
    size_t n = dnnl_memory_desc_get_size(want);
    uint64_t hash = bytes_hash(a->udata, dnnl_memory_desc_get_size(&a->md));
    int rc, nt;

    if ((rc = ss__dnn_engine(&eng, err)) < 0)
        goto done;
    /* The budget counts the bytes as if owned: a plan's size must not
     * depend on which other plans are alive. */
    p->const_bytes += n;
    if ((a->shared = share_get(a, want, hash)) != NULL) {
        a->cmem = a->shared->cmem;
        goto set;
    }
    if ((a->cbuf = ss_aligned_alloc_huge(n ? n : 64)) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "oneDNN %s: no memory for %zu bytes "
                        "of packed constants", p->what, n);
        goto done;
    }
    /* the model whose plan is compiling pays for it (plan.c sets the
     * thread's account), for as long as the buffer lives */
    if ((a->acct = ss_memacct_current()) != NULL) {
        ss_memacct_ref(a->acct);
        a->charged = n ? n : 64;
        ss_memacct_charge(a->acct, a->charged);
    }
    rc = ss__dnn_check(dnnl_memory_create(&a->cmem, want, eng, a->cbuf),
                       err, "dnnl_memory_create", p->what);
    if (rc < 0)
        goto done;
    if (dnnl_memory_desc_equal(want, &a->md)) {
        memcpy(a->cbuf, a->udata, n);
        goto publish;
    }
    rc = ss__dnn_check(dnnl_memory_create(&from, &a->md, eng,
                                          (void *)a->udata),
                       err, "dnnl_memory_create", p->what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_reorder_primitive_desc_create(&rpd, &a->md, eng,
                                                          want, eng, NULL),
                       err, "dnnl_reorder_primitive_desc_create", p->what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_primitive_create(&r, rpd), err,
                       "dnnl_primitive_create(reorder)", p->what);
    if (rc < 0)
        goto done;
    rc = ss__dnn_check(dnnl_stream_create(&s, eng, dnnl_stream_default_flags),
                       err, "dnnl_stream_create", p->what);
    if (rc < 0)
        goto done;
    args[0].arg = DNNL_ARG_FROM;
    args[0].memory = from;
    args[1].arg = DNNL_ARG_TO;
    args[1].memory = a->cmem;
    /* one thread: weights are small, and an OpenMP team waits for its
     * second thread when the other core is busy (milliseconds per
     * reorder, seen here as 15-40 ms compiles of the CNN fixture) */
    nt = omp_get_max_threads();
    omp_set_num_threads(1);
    rc = ss__dnn_check(dnnl_primitive_execute(r, s, 2, args), err,
                       "dnnl_primitive_execute(reorder)", p->what);
    if (rc == 0)
        rc = ss__dnn_check(dnnl_stream_wait(s), err, "dnnl_stream_wait",
                           p->what);
    omp_set_num_threads(nt);
    if (rc < 0)
        goto done;
publish:
    share_put(a, want, hash);
set:
    /* Packed: if the caller's copy is a model file's pages, they leave
     * the resident set now (they fault back in for whoever reads the
     * constant next: another plan, a compression job), so a compile
     * never holds a weight twice (issue 12, common/filemap.h). */
    ss_filemap_release(a->udata, dnnl_memory_desc_get_size(&a->md));
    a->md = *want;
    a->udata = NULL;
done:
    if (s)
        dnnl_stream_destroy(s);
    if (r)
        dnnl_primitive_destroy(r);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (from)
        dnnl_memory_destroy(from);
    return rc;
}

int
ss__dnn_finish(ss_dnn_prim_t *p, const_dnnl_primitive_desc_t pd,
               const ss_dnn_postops_t *po, int po_first_in, ss_err_t *err)
{
    const dnnl_memory_desc_t *md;
    const char *impl = NULL;
    int i, nbin = 0, rc = 0;

    for (i = 0; po && i < po->n; i++) {
        if (po->op[i].kind != SS_DNN_PO_BINARY)
            continue;
        rc = ss__dnn_add_arg(p, DNNL_ARG_ATTR_MULTIPLE_POST_OP(i) |
                                    DNNL_ARG_SRC_1,
                             po_first_in + nbin, err);
        if (rc < 0)
            goto done;
        nbin++;
    }
    if (po_first_in + nbin > p->n_in)
        p->n_in = po_first_in + nbin;
    for (i = 0; i < p->n_args; i++) {
        ss__dnn_arg_t *a = &p->args[i];

        md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, a->arg);
        if (md == NULL || md->ndims == 0) {
            rc = ss_err_set(err, SS_EINTERNAL,
                            "oneDNN %s: no layout for argument %d", p->what,
                            a->arg);
            goto done;
        }
        if (a->src == SS__DNN_SRC_CONST) {
            if ((rc = pack(p, a, md, err)) < 0)
                goto done;
        } else {
            a->md = *md;
        }
    }
    md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (md) {
        p->scratch_md = *md;
        p->scratch = dnnl_memory_desc_get_size(md);
    }
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0,
                                  (void *)&impl) == dnnl_success && impl)
        snprintf(p->impl, sizeof(p->impl), "%s", impl);
    rc = ss__dnn_check(dnnl_primitive_create(&p->prim, pd), err,
                       "dnnl_primitive_create", p->what);
done:
    return rc;
}

size_t
ss_dnn_prim_scratch_size(const ss_dnn_prim_t *p)
{
    return p->scratch;
}

int
ss_dnn_prim_num_inputs(const ss_dnn_prim_t *p)
{
    return p->n_in;
}

int
ss_dnn_prim_sum_input(const ss_dnn_prim_t *p)
{
    return p->sum_in;
}

int
ss_dnn_prim_dst_dims(const ss_dnn_prim_t *p, int64_t dims[SS_DNN_MAX_DIMS])
{
    memcpy(dims, p->dst_dims, sizeof(p->dst_dims));
    return p->dst_ndim;
}

size_t
ss_dnn_prim_const_bytes(const ss_dnn_prim_t *p)
{
    return p->const_bytes;
}

/* Dense strides of an md in the dim order ord (outermost first). */
static int
dense_in(const dnnl_memory_desc_t *md, const int *ord)
{
    const dnnl_dims_t *s = &md->format_desc.blocking.strides;
    dnnl_dim_t want = 1;
    int k;

    for (k = md->ndims - 1; k >= 0; k--) {
        if (md->dims[ord[k]] != 1 && (*s)[ord[k]] != want)
            return 0;
        want *= md->dims[ord[k]];
    }
    return 1;
}

/* Channels first (NCHW) or channels last (NHWC) order of md's ndims. */
static int
is_order(const dnnl_memory_desc_t *md, int last)
{
    int ord[SS_DNN_MAX_DIMS], n = md->ndims;

    for (int k = 0; k < n; k++)
        ord[k] = !last || k == 0 ? k : k == n - 1 ? 1 : k + 1;
    return dense_in(md, ord);
}

ss_dnn_layout_t
ss_dnn_prim_layout(const ss_dnn_prim_t *p, int i)
{
    int k;

    if (i >= 0 && i == p->sum_in)
        i = -1;             /* copied into dst: dst's layout */
    for (k = 0; k < p->n_args; k++) {
        const ss__dnn_arg_t *a = &p->args[k];
        const dnnl_blocking_desc_t *b = &a->md.format_desc.blocking;
        int nd = a->md.ndims;

        if (a->src != (i < 0 ? SS__DNN_SRC_OUT : i))
            continue;
        if (!(nd == 4 || (p->layouts && (nd == 3 || nd == 5)))
            || a->md.format_kind != dnnl_blocked)
            return SS_DNN_PLAIN;
        if (b->inner_nblks == 1 && b->inner_idxs[0] == 1 &&
            b->inner_blks[0] == 16)
            return SS_DNN_BLOCKED;
        return b->inner_nblks == 0 && is_order(&a->md, 1)
               && !is_order(&a->md, 0) ? SS_DNN_NHWC : SS_DNN_PLAIN;
    }
    return SS_DNN_PLAIN;
}

const char *
ss_dnn_prim_impl(const ss_dnn_prim_t *p)
{
    return p->impl;
}
