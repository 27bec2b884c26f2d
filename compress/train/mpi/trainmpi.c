/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ss_train_dp_t over MPI (see trainmpi.h).
 *
 * DESIGN: the gradient sum is one MPI_Allreduce over the flat gradient
 * array (chunked below INT_MAX elements, MPI's count type), not a
 * reduce-scatter: every process then holds the whole summed gradient,
 * so a clipping norm is computed from the same numbers everywhere with
 * no second collective, and the parameters are gathered after the
 * update anyway (a reduce-scatter would move half the bytes of the
 * allreduce; bench/train_mpi.py says when that matters).
 * MPI_Allgatherv hands each process the slices the others updated;
 * slices come from ss_train_shard_range() on every side, so no offsets
 * travel.
 *
 * THREADS: see trainmpi.h.
 */

#include <limits.h>
#include <stdlib.h>

#include <mpi.h>

#include "common/alloc.h"
#include "compress/train/mpi/trainmpi.h"

#define CHUNK (1 << 28)         /* elements per MPI call */

static bool inited;

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

static int
sum_f32(void *arg, float *buf, int64_t n, ss_err_t *err)
{
    int rc;

    (void)arg;
    for (int64_t i = 0; i < n; i += CHUNK) {
        int c = (int)(n - i < CHUNK ? n - i : CHUNK);

        if ((rc = MPI_Allreduce(MPI_IN_PLACE, buf + i, c, MPI_FLOAT, MPI_SUM,
                                MPI_COMM_WORLD)) != MPI_SUCCESS)
            return mpi_fail(rc, "MPI_Allreduce of the gradients", err);
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
gather_f32(void *arg, float *buf, int64_t n, ss_err_t *err)
{
    int size, r, rc = 0;
    int *counts = NULL, *displs = NULL;
    int64_t lo, hi;

    (void)arg;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (n > INT_MAX)
        return ss_err_set(err, SS_EUNSUPP, "MPI: %lld parameters are more "
                          "than one MPI_Allgatherv takes", (long long)n);
    if ((counts = ss_malloc((size_t)size * sizeof(int))) == NULL
        || (displs = ss_malloc((size_t)size * sizeof(int))) == NULL) {
        rc = ss_err_set(err, SS_ENOMEM, "no memory for %d slices", size);
        goto done;
    }
    for (r = 0; r < size; r++) {
        ss_train_shard_range(n, r, size, &lo, &hi);
        displs[r] = (int)lo;
        counts[r] = (int)(hi - lo);
    }
    if ((rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts,
                             displs, MPI_FLOAT, MPI_COMM_WORLD))
        != MPI_SUCCESS)
        rc = mpi_fail(rc, "MPI_Allgatherv of the parameters", err);
done:
    ss_free(counts);
    ss_free(displs);
    return rc;
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
    int provided, rc;

    if ((rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided))
        != MPI_SUCCESS)
        return ss_err_set(err, SS_EIO, "MPI_Init failed (%d)", rc);
    inited = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    dp->weight = 1.0;
    dp->arg = NULL;
    dp->sum_f32 = sum_f32;
    dp->sum_f64 = sum_f64;
    dp->gather_f32 = gather_f32;
    MPI_Comm_rank(MPI_COMM_WORLD, &dp->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dp->size);
    return 0;
}

int
ss_train_mpi_local_size(void)
{
    MPI_Comm local;
    int n = 1;

    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0,
                            MPI_INFO_NULL, &local) != MPI_SUCCESS)
        return 1;
    MPI_Comm_size(local, &n);
    MPI_Comm_free(&local);
    return n > 0 ? n : 1;
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
    if (inited)
        MPI_Finalize();
    inited = false;
}
