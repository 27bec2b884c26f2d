/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_NPY_H
#define SS_ENGINE_NPY_H

/*
 * numpy's file formats: .npy (one array) and .npz (a zip of .npy files),
 * read and written without Python.  The offline CLI reads its inputs and
 * writes its outputs with these; the server parses calibration uploads and
 * writes .npz results with them.
 *
 * Reading accepts .npy format versions 1.0, 2.0 and 3.0; little- and
 * big-endian element types f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1 (big-endian
 * data is swapped to host order); fortran_order True (the data is transposed
 * to row-major); shapes from () to SS_MAX_DIMS dims.  .npz entries may be
 * stored (np.savez) or deflated (np.savez_compressed), with or without zip64
 * extra fields.  Every size and offset in a file is checked before it is
 * used; nothing is allocated beyond max_bytes of array data (the sum over
 * all arrays of an .npz), and CRC-32s are verified.  Errors are SS_EINVAL
 * (malformed, or over max_bytes: SS_ETOOBIG), SS_EUNSUPP (valid numpy, but
 * a type we do not handle, e.g. structured or object arrays), SS_EIO
 * (-errno from the system is reported as SS_EIO) or SS_ENOMEM, with a
 * message naming the file and the array.
 *
 * Writing produces .npy version 1.0 and .npz with stored entries, the way
 * np.save / np.savez do; files are written atomically (temporary file in
 * the same directory, fsync, rename, fsync of the directory), so a reader
 * never sees half a file.
 *
 * Tensors returned here own their data: it is allocated with
 * ss_aligned_alloc (64-byte aligned, never NULL even for 0 elements) and
 * released with ss_tensor_free_data().
 *
 * THREADS: [any].  Nothing here has global state; an ss_npz_t belongs to
 * one thread at a time.
 */

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/engine.h"

/* The max_bytes to pass when there is no better limit: 16 GiB. */
#define SS_NPY_DEFAULT_MAX_BYTES ((size_t)16 << 30)

/* Frees t->data (which must come from this module or ss_aligned_alloc) and
 * clears t.  Accepts NULL and a tensor without data. */
void ss_tensor_free_data(ss_tensor_t *t);

/* Bytes of t's data (numel * element size); 0 when t is malformed (bad
 * dtype, negative dim, overflow): check with ss_npy_check_tensor first. */
size_t ss_npy_nbytes(const ss_tensor_t *t);

/* Returns 0 if t can be written (dtype numpy knows, 0..SS_MAX_DIMS dims,
 * no negative dim, size fits in memory); else SS_EINVAL naming what. */
int ss_npy_check_tensor(const ss_tensor_t *t, const char *what,
                        ss_err_t *err);

/* numpy's descr for a dtype, little-endian ("<f4", "|u1", ...); NULL when
 * numpy has no equivalent (bf16, strings). */
const char *ss_npy_descr(ss_dtype_t t);

/* --- .npy ------------------------------------------------------------ */

/* Reads one array.  On success *out owns new data; on failure *out is
 * cleared.  max_bytes caps the array's data. */
int ss_npy_read(const char *path, size_t max_bytes, ss_tensor_t *out,
                ss_err_t *err);
/* The same from an open file (borrowed, read from its current offset);
 * what names it in messages. */
int ss_npy_read_fd(int fd, const char *what, size_t max_bytes,
                   ss_tensor_t *out, ss_err_t *err);
/* The same from memory; what names the buffer in messages ("upload"). The
 * buffer is borrowed and copied from. */
int ss_npy_read_buffer(const void *buf, size_t len, const char *what,
                       size_t max_bytes, ss_tensor_t *out, ss_err_t *err);

/* Writes t (borrowed) to path atomically. */
int ss_npy_write(const char *path, const ss_tensor_t *t, ss_err_t *err);
/* Serializes t into a new buffer (*out, free with ss_free; *len bytes). */
int ss_npy_encode(const ss_tensor_t *t, void **out, size_t *len,
                  ss_err_t *err);

/* --- .npz ------------------------------------------------------------ */

typedef struct ss_npz ss_npz_t;

/* Reads every .npy entry of an archive ("x.npy" becomes the array "x";
 * other entries and directories are skipped; duplicate names are an
 * error).  Returns a new archive in *out (NULL on failure). */
int ss_npz_read(const char *path, size_t max_bytes, ss_npz_t **out,
                ss_err_t *err);
/* The same from an open regular file (borrowed; read with pread);
 * what names it in messages. */
int ss_npz_read_fd(int fd, const char *what, size_t max_bytes,
                   ss_npz_t **out, ss_err_t *err);
int ss_npz_read_buffer(const void *buf, size_t len, const char *what,
                       size_t max_bytes, ss_npz_t **out, ss_err_t *err);
void ss_npz_free(ss_npz_t *z);

/* Arrays in archive order.  Names and tensors are borrowed from z. */
int ss_npz_count(const ss_npz_t *z);
const char *ss_npz_name(const ss_npz_t *z, int i);
const ss_tensor_t *ss_npz_tensor(const ss_npz_t *z, int i);
/* Index of the array called name, or -1. */
int ss_npz_find(const ss_npz_t *z, const char *name);
/* Moves array i's data into *out (the caller owns it now); the archive
 * keeps the name and an empty tensor.  Returns SS_EINVAL for a bad i. */
int ss_npz_take(ss_npz_t *z, int i, ss_tensor_t *out);

/* Writes n arrays (all borrowed) as an archive of stored entries
 * "<name>.npy", atomically.  Names must be non-empty, unique and at most
 * 60000 bytes.  zip64 fields are written where sizes or offsets need
 * them. */
int ss_npz_write(const char *path, int n, const char *const *names,
                 const ss_tensor_t *tensors, ss_err_t *err);
/* The same into a new buffer (free with ss_free).  force_zip64 writes zip64
 * fields even for small archives (as numpy does; tests use it). */
int ss_npz_encode(int n, const char *const *names,
                  const ss_tensor_t *tensors, int force_zip64, void **out,
                  size_t *len, ss_err_t *err);

#endif
