# SPDX-License-Identifier: Apache-2.0
#
# The trainer's collectives over MPI (compress/train/mpi/trainmpi.h),
# built when configure finds MPI; only slimserve-train links it.
if HAVE_MPI
noinst_LIBRARIES += compress/train/mpi/libsstrainmpi.a
compress_train_mpi_libsstrainmpi_a_SOURCES = \
	compress/train/mpi/trainmpi.h compress/train/mpi/trainmpi.c
compress_train_mpi_libsstrainmpi_a_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
SS_TRAIN_MPI_LIBS = compress/train/mpi/libsstrainmpi.a
else
SS_TRAIN_MPI_LIBS =
EXTRA_DIST += compress/train/mpi/trainmpi.h compress/train/mpi/trainmpi.c
endif

# slimserve-train under mpirun -np 2 against one process; a TAP skip
# with the reason when built without MPI or without mpirun.
TESTS += tests/integration/test_train_mpi.py
EXTRA_DIST += tests/integration/test_train_mpi.py
EXTRA_DIST += bench/train_mpi.py
