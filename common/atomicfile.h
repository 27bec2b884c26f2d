/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Atomic files: the one writer every module uses for files that must
 * appear whole or not at all (models, npz, config.json, variant.json).
 *
 * THREADS: [any]; an ss_atomic_file_t belongs to one thread.
 */
#ifndef SS_COMMON_ATOMICFILE_H
#define SS_COMMON_ATOMICFILE_H

#include <stddef.h>

#include "common/err.h"

/* A file that appears under its name only when committed: written to a
 * temporary file in the same directory, then fsync, rename, fsync of the
 * directory.  abort (or a failed commit) removes the temporary file. */
typedef struct ss_atomic_file {
    int fd;
    char *path;
    char *tmp;
} ss_atomic_file_t;

int ss_atomic_open(ss_atomic_file_t *af, const char *path, ss_err_t *err);
int ss_atomic_write(ss_atomic_file_t *af, const void *buf, size_t n,
                    ss_err_t *err);
int ss_atomic_commit(ss_atomic_file_t *af, ss_err_t *err);
/* Accepts a file already committed or aborted. */
void ss_atomic_abort(ss_atomic_file_t *af);

#endif
