/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Atomic files: the one writer every module uses for files that must
 * appear whole or not at all (models, npz, config.json, variant.json),
 * and for folders published whole (a model version).
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

/* Publishes a whole folder (or file) built under a temporary name: renames
 * from to to (same file system; to must not be a non-empty folder) and
 * fsyncs to's directory so the rename survives a crash.  Files inside
 * from should be written with ss_atomic_* (which syncs them and from). */
int ss_atomic_rename(const char *from, const char *to, ss_err_t *err);

#endif
