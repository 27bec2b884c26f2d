/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_train_dp_t over MPI (see trainmpi.h).
 *
 * DESIGN.  A ZeRO-1 step needs, per process, the sum of its own slice of
 * every process's gradient, then every other process's updated slice of
 * the parameters.  Two ways, picked once per trainer (every process the
 * same way):
 *
 * Shared memory (every process of the run on one machine, the default
 * there).  The trainer's flat arrays live in one MPI shared-memory
 * window (MPI_Win_allocate_shared on the node communicator): one
 * parameter array all processes read and write, and one gradient array
 * per process.  Reduce: each process puts its gradient's weight (its
 * share of the global batch) in its segment's header; a barrier (every
 * backward is done); then each process sums its slice straight from
 * every process's gradient, weighting each as it reads it, in rank
 * order, into its own gradient array (so the trainer makes no
 * weighting pass over the whole gradient).  Gather: a barrier (every
 * slice is updated).  Nothing is copied: the update writes the shared
 * parameters in place and every process's next forward reads them.  Why
 * the barriers are enough: a process writes only its own gradient array
 * (backward) and, between the two barriers, its own slice of the
 * parameters and of its gradient array; the others read its gradient
 * array only between the same two barriers, and the parameters only
 * outside them.  MPI_Win_sync around each barrier orders the stores
 * (the "unified" memory model of shared windows).
 *
 * Collective (processes on several machines, a window that cannot be
 * allocated, or SS_TRAIN_MPI_PATH=coll).  The gradient weighted in
 * place, then MPI_Reduce_scatter of it with the slices of
 * ss_train_shard_range() as counts (each process receives its slice of
 * the sum in a buffer of ours, half the bytes of the MPI_Allreduce it
 * replaced), then MPI_Allgatherv in place of the parameters.
 *
 * Measured on a 2-core EPYC (bench/train_mpi.py, MLP 784-1024-1024-10,
 * 1.86 M parameters, 2 processes): the MPI_Allreduce + MPI_Allgatherv of
 * the first version moved ~11 MB a step through Open MPI's vader
 * transport, ~5 ms, up to half of the step; see docs/scale-out.md for
 * the paths' numbers.
 *
 * For two processes the two paths add the same two floats per element
 * (float addition commutes), so they give the same bytes; for more, the
 * order of the sums may differ from Open MPI's by an ulp.
 *
 * MPI_COMM_WORLD is set to return errors rather than abort inside MPI,
 * so a failed collective becomes an ss_err_t sentence.
 *
 * THREADS: see trainmpi.h.
 */

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <mpi.h>

#include "common/alloc.h"
#include "compress/train/mpi/trainmpi.h"

#define CHUNK (1 << 28)         /* elements per MPI call */
#define PAGE 4096               /* segments of the window start on pages */

/* One trainer's shared flat arrays (ss_train_shared_t.h). */
typedef struct shm {
    MPI_Win win;
    int64_t n;
    float *w;                   /* the parameters, shared */
    float **g;                  /* per process: its gradient array */
    float **wt;                 /* per process: its gradient's weight
                                 * this step (a header of 64 bytes
                                 * before g) */
    struct shm *next;
} shm_t;

/* The run.  [init] then the MPI thread only. */
static struct {
    bool inited;
    MPI_Comm node;              /* processes on this machine */
    bool one_node;              /* node is every process */
    int rank, size;
    ss_train_mpi_path_t want;   /* SS_TRAIN_MPI_PATH */
    ss_train_mpi_path_t last;   /* of the last trainer */
    char why[160];              /* why the last trainer took it */
    shm_t *shms;                /* windows of live trainers */
    float *recv;                /* the collective path's summed slice */
    int64_t recv_n;
    int *counts, *displs;       /* per process: its slice, for size n */
    int64_t counts_n;
} M = { .node = MPI_COMM_NULL };

/* err from an MPI return code. */
static int
mpi_fail(int code, const char *what, ss_err_t *err)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;

    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = '\0';
    return ss_err_set(err, SS_EIO, "MPI: %s failed: %s", what,
                      len ? msg : "unknown error");
}

/* counts/displs of the slices of n elements (int: MPI's count type). */
static int
slices(int64_t n, ss_err_t *err)
{
    int64_t lo, hi;

    if (n > INT_MAX)
        return ss_err_set(err, SS_EUNSUPP, "MPI: %lld parameters are more "
                          "than one MPI call takes", (long long)n);
    if (M.counts_n == n)
        return 0;
    if (M.counts == NULL
        && ((M.counts = ss_calloc((size_t)M.size, sizeof(int))) == NULL
            || (M.displs = ss_calloc((size_t)M.size, sizeof(int))) == NULL))
        return ss_err_set(err, SS_ENOMEM, "no memory for %d slices", M.size);
    for (int r = 0; r < M.size; r++) {
        ss_train_shard_range(n, r, M.size, &lo, &hi);
        M.displs[r] = (int)lo;
        M.counts[r] = (int)(hi - lo);
    }
    M.counts_n = n;
    return 0;
}

static shm_t *
find(const float *p)
{
    for (shm_t *s = M.shms; s != NULL; s = s->next)
        if (s->w == p || s->g[M.rank] == p)
            return s;
    return NULL;
}

/* Every store to the window before it is seen by every process after. */
static int
shm_barrier(shm_t *s, ss_err_t *err)
{
    int rc;

    MPI_Win_sync(s->win);
    if ((rc = MPI_Barrier(M.node)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Barrier", err);
    MPI_Win_sync(s->win);
    return 0;
}

/* out[i] = x[i] * b[i] (+ out[i] when acc), float products then float
 * sums as a separate multiply and add would give them (no fused
 * multiply-add: x86-64's baseline has none, and the scalar tail must
 * round as the vector body does); out may be b. */
static void
axpy(float *out, float x, const float *b, int acc, int64_t n)
{
    int64_t i = 0;

#if defined(__x86_64__)
    /* SSE2 is in every x86-64, and 16 bytes a load already outrun the
     * memory this loop waits on. */
    const __m128 xv = _mm_set1_ps(x);

    for (; i + 8 <= n; i += 8) {
        __m128 y0 = _mm_mul_ps(xv, _mm_loadu_ps(b + i));
        __m128 y1 = _mm_mul_ps(xv, _mm_loadu_ps(b + i + 4));

        if (acc) {
            y0 = _mm_add_ps(_mm_loadu_ps(out + i), y0);
            y1 = _mm_add_ps(_mm_loadu_ps(out + i + 4), y1);
        }
        _mm_storeu_ps(out + i, y0);
        _mm_storeu_ps(out + i + 4, y1);
    }
#endif
    for (; i < n; i++) {
        volatile float y = x * b[i];    /* rounded before the add */

        out[i] = acc ? out[i] + y : y;
    }
}

/* out[i] = x * a[i] + y * b[i] (each product rounded); out may be a. */
static void
sum2(float *out, float x, const float *a, float y, const float *b,
     int64_t n)
{
    int64_t i = 0;

#if defined(__x86_64__)
    const __m128 xv = _mm_set1_ps(x), yv = _mm_set1_ps(y);

    for (; i + 8 <= n; i += 8) {
        __m128 p0 = _mm_mul_ps(xv, _mm_loadu_ps(a + i));
        __m128 p1 = _mm_mul_ps(xv, _mm_loadu_ps(a + i + 4));
        __m128 q0 = _mm_mul_ps(yv, _mm_loadu_ps(b + i));
        __m128 q1 = _mm_mul_ps(yv, _mm_loadu_ps(b + i + 4));

        _mm_storeu_ps(out + i, _mm_add_ps(p0, q0));
        _mm_storeu_ps(out + i + 4, _mm_add_ps(p1, q1));
    }
#endif
    for (; i < n; i++) {
        volatile float p = x * a[i], q = y * b[i];

        out[i] = p + q;
    }
}

static int
sum_f32(void *arg, float *buf, int64_t n, ss_err_t *err)
{
    int rc;

    (void)arg;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int c = (int)(n - i < CHUNK ? n - i : CHUNK);

        if ((rc = MPI_Allreduce(MPI_IN_PLACE, buf + i, c, MPI_FLOAT, MPI_SUM,
                                MPI_COMM_WORLD)) != MPI_SUCCESS)
            return mpi_fail(rc, "MPI_Allreduce", err);
    }
    return 0;
}

static int
sum_f64(void *arg, double *buf, int n, ss_err_t *err)
{
    int rc;

    (void)arg;
    if ((rc = MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM,
                            MPI_COMM_WORLD)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Allreduce of the loss", err);
    return 0;
}

static int
reduce_f32(void *arg, float *buf, int64_t n, float weight, float **sum,
           ss_err_t *err)
{
    shm_t *s = find(buf);
    int64_t lo, hi;
    int rc;

    (void)arg;
    ss_train_shard_range(n, M.rank, M.size, &lo, &hi);
    if (s != NULL && s->n == n) {
        /* Every backward is done: sum this slice in rank order, each
         * gradient weighted as it is read (no pass of its own). */
        float *out = s->g[M.rank] + lo;

        *s->wt[M.rank] = weight;
        if ((rc = shm_barrier(s, err)) < 0)
            return rc;
        if (M.size == 1) {
            axpy(out, weight, out, 0, hi - lo);
        } else {
            sum2(out, *s->wt[0], s->g[0] + lo, *s->wt[1], s->g[1] + lo,
                 hi - lo);
            for (int r = 2; r < M.size; r++)
                axpy(out, *s->wt[r], s->g[r] + lo, 1, hi - lo);
        }
        *sum = out;
        return 0;
    }
    if (weight != 1.0f)
        axpy(buf, weight, buf, 0, n);
    if ((rc = slices(n, err)) < 0)
        return rc;
    if (M.recv_n < hi - lo) {
        float *p = ss_aligned_alloc((size_t)(hi - lo) * sizeof(float));

        if (p == NULL)
            return ss_err_set(err, SS_ENOMEM, "no memory for the summed "
                              "gradient (%lld floats)",
                              (long long)(hi - lo));
        ss_free(M.recv);
        M.recv = p;
        M.recv_n = hi - lo;
    }
    if ((rc = MPI_Reduce_scatter(buf, M.recv, M.counts, MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Reduce_scatter of the gradients", err);
    *sum = M.recv;
    return 0;
}

static int
gather_f32(void *arg, float *buf, int64_t n, ss_err_t *err)
{
    shm_t *s = find(buf);
    int rc;

    (void)arg;
    if (s != NULL && s->w == buf && s->n == n)
        return shm_barrier(s, err);     /* every slice is written */
    if ((rc = slices(n, err)) < 0)
        return rc;
    if ((rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf,
                             M.counts, M.displs, MPI_FLOAT, MPI_COMM_WORLD))
        != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Allgatherv of the parameters", err);
    return 0;
}

static void
shm_free(shm_t *s)
{
    if (s == NULL)
        return;
    if (s->win != MPI_WIN_NULL) {
        MPI_Win_unlock_all(s->win);
        MPI_Win_free(&s->win);
    }
    ss_free(s->g);
    ss_free(s->wt);
    ss_free(s);
}

static size_t
round_page(size_t n)
{
    return (n + PAGE - 1) / PAGE * PAGE;
}

/* A window: each process's segment holds a header of 64 bytes (its
 * gradient's weight), process 0's then the parameters, then each its
 * gradient array.  Collective over M.node:
 * every process calls MPI_Win_allocate_shared whatever failed before. */
static int
shm_new(int64_t n, shm_t **out, ss_err_t *err)
{
    size_t fl = round_page((size_t)n * sizeof(float));
    MPI_Info info = MPI_INFO_NULL;
    MPI_Win win = MPI_WIN_NULL;
    bool ok = true, locked = false;
    shm_t *s = NULL;
    MPI_Aint sz;
    int du, rc = 0;
    void *base;

    *out = NULL;
    if ((s = ss_calloc(1, sizeof(*s))) == NULL
        || (s->g = ss_calloc((size_t)M.size, sizeof(float *))) == NULL
        || (s->wt = ss_calloc((size_t)M.size, sizeof(float *))) == NULL) {
        ok = false;
        rc = ss_err_set(err, SS_ENOMEM, "no memory");
    }
    /* Each segment on its own pages (the process that writes it first
     * places it, near its core). */
    if (MPI_Info_create(&info) == MPI_SUCCESS)
        MPI_Info_set(info, "alloc_shared_noncontig", "true");
    /* A page more than asked: Open MPI need not start a segment on a
     * 64-byte boundary (the trainer's arrays are), we align it. */
    if ((du = MPI_Win_allocate_shared((MPI_Aint)((M.rank == 0 ? 2 * fl : fl)
                                                 + 64 + PAGE),
                                      sizeof(float), info, M.node, &base,
                                      &win)) != MPI_SUCCESS) {
        win = MPI_WIN_NULL;
        if (ok)
            rc = mpi_fail(du, "MPI_Win_allocate_shared", err);
        ok = false;
    }
    if (info != MPI_INFO_NULL)
        MPI_Info_free(&info);
    for (int r = 0; ok && r < M.size; r++) {
        char *p;

        if (MPI_Win_shared_query(win, r, &sz, &du, &p) != MPI_SUCCESS
            || p == NULL
            || (size_t)sz < (r == 0 ? 2 * fl : fl) + 64 + PAGE) {
            ok = false;
            rc = ss_err_set(err, SS_EIO, "MPI: process %d's segment of the "
                            "window is not usable", r);
            break;
        }
        p += (64 - (uintptr_t)p % 64) % 64;
        s->wt[r] = (float *)p;
        p += 64;
        if (r == 0) {
            s->w = (float *)p;
            p += fl;
        }
        s->g[r] = (float *)p;
    }
    if (ok && !(locked = MPI_Win_lock_all(MPI_MODE_NOCHECK, win)
                         == MPI_SUCCESS)) {
        ok = false;
        rc = ss_err_set(err, SS_EIO, "MPI_Win_lock_all failed");
    }
    /* Every process takes the same path. */
    if (!ss_train_mpi_all_ok(ok)) {
        if (ok)
            rc = ss_err_set(err, SS_EIO, "another process could not map "
                            "the shared window");
        if (locked)
            MPI_Win_unlock_all(win);
        if (win != MPI_WIN_NULL)
            MPI_Win_free(&win);
        if (s != NULL) {
            ss_free(s->g);
            ss_free(s->wt);
        }
        ss_free(s);
        return rc;
    }
    s->win = win;
    s->n = n;
    *out = s;
    return 0;
}

/* The path of this trainer, said once on process 0's stderr (the job's
 * log). */
static int
took(ss_train_mpi_path_t p, int ret)
{
    M.last = p;
    if (M.rank == 0)
        fprintf(stderr, "slimserve-train: data parallel over %d processes: "
                "%s (%s)\n", M.size, p == SS_TRAIN_MPI_SHM
                ? "shared-memory window" : "MPI collectives", M.why);
    return ret;
}

static int
share(void *arg, int64_t n, ss_train_shared_t *sh, ss_err_t *err)
{
    ss_err_t e = { 0 };
    shm_t *s = NULL;
    int rc;

    (void)arg;
    memset(sh, 0, sizeof(*sh));
    if (M.want == SS_TRAIN_MPI_COLL) {
        snprintf(M.why, sizeof(M.why), "SS_TRAIN_MPI_PATH=coll");
        return took(SS_TRAIN_MPI_COLL, 0);
    }
    if (!M.one_node) {
        if (M.want == SS_TRAIN_MPI_SHM)
            return ss_err_set(err, SS_EUNSUPP, "SS_TRAIN_MPI_PATH=shm: the "
                              "processes are not all on one machine");
        snprintf(M.why, sizeof(M.why), "the processes are on several "
                 "machines");
        return took(SS_TRAIN_MPI_COLL, 0);
    }
    if ((rc = shm_new(n, &s, &e)) < 0) {
        if (M.want == SS_TRAIN_MPI_SHM) {
            if (err != NULL)
                *err = e;
            return ss_err_wrap(err, rc, "SS_TRAIN_MPI_PATH=shm: ");
        }
        snprintf(M.why, sizeof(M.why), "no shared window: %.120s", e.msg);
        return took(SS_TRAIN_MPI_COLL, 0);
    }
    s->next = M.shms;
    M.shms = s;
    sh->w = s->w;
    sh->g = s->g[M.rank];
    sh->h = s;
    snprintf(M.why, sizeof(M.why), "all on one machine");
    return took(SS_TRAIN_MPI_SHM, 1);
}

static void
unshare(void *arg, ss_train_shared_t *sh)
{
    shm_t **pp = &M.shms;

    (void)arg;
    while (*pp != NULL && *pp != sh->h)
        pp = &(*pp)->next;
    if (*pp != NULL) {
        shm_t *s = *pp;

        *pp = s->next;
        shm_free(s);
    }
    memset(sh, 0, sizeof(*sh));
}

bool
ss_train_mpi_launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL
           || getenv("PMI_SIZE") != NULL || getenv("PMIX_RANK") != NULL;
}

int
ss_train_mpi_init(int *argc, char ***argv, ss_train_dp_t *dp, ss_err_t *err)
{
    const char *p = getenv("SS_TRAIN_MPI_PATH");
    int provided, rc, local = 0;

    if (p == NULL || !*p || strcmp(p, "auto") == 0)
        M.want = SS_TRAIN_MPI_AUTO;
    else if (strcmp(p, "shm") == 0)
        M.want = SS_TRAIN_MPI_SHM;
    else if (strcmp(p, "coll") == 0)
        M.want = SS_TRAIN_MPI_COLL;
    else
        return ss_err_set(err, SS_EINVAL, "SS_TRAIN_MPI_PATH is '%s', not "
                          "auto, shm or coll", p);
    /* A process waiting in a barrier or collective yields its core
     * (sched_yield) instead of spinning on it: the other process may need
     * that core, always so on a shared machine or beside the daemon's
     * serving threads (bench/train_mpi.py at load average ~21 on 2
     * cores: 2 processes 1.33x the samples/s with it, batch 64 and 256).
     * On free cores it costs a system call per poll.  Open MPI's
     * parameter; an explicit one (mpirun --mca mpi_yield_when_idle 0,
     * or the environment) wins. */
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    if ((rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided))
        != MPI_SUCCESS)
        return ss_err_set(err, SS_EIO, "MPI_Init failed (%d)", rc);
    M.inited = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &M.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &M.size);
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0,
                            MPI_INFO_NULL, &M.node) == MPI_SUCCESS)
        MPI_Comm_size(M.node, &local);
    else
        M.node = MPI_COMM_NULL;
    /* Every process must see the same answer: one node is all or none. */
    M.one_node = ss_train_mpi_all_ok(local == M.size);
    if (!ss_train_mpi_all_ok(M.want != SS_TRAIN_MPI_COLL))
        M.want = SS_TRAIN_MPI_COLL;
    M.last = SS_TRAIN_MPI_AUTO;
    dp->weight = 1.0;
    dp->arg = NULL;
    dp->sum_f32 = sum_f32;
    dp->sum_f64 = sum_f64;
    dp->reduce_f32 = reduce_f32;
    dp->gather_f32 = gather_f32;
    dp->share = share;
    dp->unshare = unshare;
    dp->rank = M.rank;
    dp->size = M.size;
    return 0;
}

int
ss_train_mpi_local_size(void)
{
    int n = 1;

    if (M.node != MPI_COMM_NULL)
        MPI_Comm_size(M.node, &n);
    return n > 0 ? n : 1;
}

ss_train_mpi_path_t
ss_train_mpi_path(const char **why)
{
    if (why != NULL)
        *why = M.why;
    return M.last;
}

const char *
ss_train_mpi_path_name(ss_train_mpi_path_t p)
{
    switch (p) {
    case SS_TRAIN_MPI_SHM: return "shm";
    case SS_TRAIN_MPI_COLL: return "coll";
    default: return "auto";
    }
}

bool
ss_train_mpi_all_ok(bool ok)
{
    int mine = ok ? 1 : 0, all = 0;

    if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD)
        != MPI_SUCCESS)
        return false;
    return all == 1;
}

void
ss_train_mpi_abort(int code)
{
    MPI_Abort(MPI_COMM_WORLD, code);
}

void
ss_train_mpi_finalize(void)
{
    if (!M.inited)
        return;
    while (M.shms != NULL) {
        shm_t *s = M.shms;

        M.shms = s->next;
        shm_free(s);
    }
    if (M.node != MPI_COMM_NULL)
        MPI_Comm_free(&M.node);
    ss_free(M.recv);
    ss_free(M.counts);
    ss_free(M.displs);
    M.recv = NULL;
    M.counts = M.displs = NULL;
    M.recv_n = M.counts_n = 0;
    MPI_Finalize();
    M.inited = false;
}
