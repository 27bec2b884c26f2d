/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TRAINMPI_H
#define SS_TRAINMPI_H

/*
 * The trainer's collectives (ss_train_dp_t, compress/train/train.h) over
 * MPI, for slimserve-train under mpirun.  Only this library includes
 * <mpi.h>: it is built when configure finds MPI (pkg-config ompi-c, or
 * mpicc), and only slimserve-train links it; the daemon and the other
 * libraries never link MPI.
 *
 * Two paths for the gradient's reduce-scatter and the parameters'
 * gather (the design is at the top of trainmpi.c): through a
 * shared-memory window when every process is on one machine (the
 * default there), else Open MPI's collectives (MPI_Reduce_scatter,
 * MPI_Allgatherv).  SS_TRAIN_MPI_PATH in the environment of every
 * process picks one: "auto" (the default), "shm" (fail rather than fall
 * back), "coll" (always the collectives).  MPI_COMM_WORLD is set to
 * return errors rather than abort inside MPI, so a failed collective
 * becomes an ss_err_t sentence; the caller then ends the whole run
 * with ss_train_mpi_abort(), because the other processes may wait in a
 * collective that will never complete.  A process that dies (a signal,
 * the OOM killer) makes mpirun end the others.

 * THREADS: [init] for init/finalize; the rest on the one thread that
 * called ss_train_mpi_init() (MPI_THREAD_FUNNELED: the trainer's OpenMP
 * threads never call MPI).
 */

#include <stdbool.h>

#include "common/err.h"
#include "compress/train/train.h"

/* Was this process started by an MPI launcher (mpirun / mpiexec of
 * OpenMPI or MPICH sets the environment it reads)?  Without one,
 * slimserve-train does not call MPI_Init at all.  [any] */
bool ss_train_mpi_launched(void);

typedef enum {
    SS_TRAIN_MPI_AUTO = 0,      /* no trainer yet; or: pick */
    SS_TRAIN_MPI_SHM,           /* the shared-memory window */
    SS_TRAIN_MPI_COLL           /* MPI collectives */
} ss_train_mpi_path_t;

/* MPI_Init; fills dp (rank, size, the callbacks; weight 1).  Refuses a
 * bad SS_TRAIN_MPI_PATH before MPI_Init.  [init] */
int ss_train_mpi_init(int *argc, char ***argv, ss_train_dp_t *dp,
                      ss_err_t *err);
/* Processes of this run on this machine (>= 1). */
int ss_train_mpi_local_size(void);
/* The path the last trainer took (AUTO before any) and, in *why (may be
 * NULL; a borrowed sentence), why; its name "shm", "coll" or "auto". */
ss_train_mpi_path_t ss_train_mpi_path(const char **why);
const char *ss_train_mpi_path_name(ss_train_mpi_path_t p);
/* Every process passes whether it is fine; true when all are.  A
 * collective: every process must call it at the same point. */
bool ss_train_mpi_all_ok(bool ok);
/* Ends every process of the run with status code (MPI_Abort). */
void ss_train_mpi_abort(int code);
/* MPI_Finalize (when init succeeded). */
void ss_train_mpi_finalize(void);

#endif
