/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_ENGINE_SAFETENSORS_H
#define SS_ENGINE_SAFETENSORS_H

/*
 * The safetensors format (Hugging Face), read and written without Python:
 * what PEFT stores LoRA adapters in (adapter_model.safetensors).
 *
 *   8 bytes     N, the header's length, unsigned little-endian
 *   N bytes     a JSON object, UTF-8, possibly padded with spaces:
 *                 "<name>": {"dtype": "F32", "shape": [r, in],
 *                            "data_offsets": [begin, end]}, ...
 *                 "__metadata__": {"<key>": "<string>", ...}  (optional)
 *   the rest    the tensors' bytes, row-major, little-endian; offsets are
 *               relative to the start of this part
 *
 * Reading checks everything before it is used, as the reference
 * implementation does, so a hostile file is refused and never read out of
 * bounds: N at least 2, at most 100 MB and within the file; the header an
 * object of objects with exactly these keys, no duplicate names;
 * dtype known (F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL); a
 * shape of 0..SS_MAX_DIMS non-negative dims; 0 <= begin <= end <= the
 * data part; end - begin = the element count times the element size
 * (overflow checked); the tensors, sorted by offset, tile the data part
 * exactly (no overlap, no hole, nothing after the last); __metadata__
 * string to string.  Nothing is allocated beyond max_bytes of file.
 * Errors: SS_EINVAL (malformed; SS_ETOOBIG over max_bytes), SS_EIO (a
 * system error), SS_ENOMEM; the message names the file and the tensor.
 *
 * Writing produces what the Python package does (tensors in the order
 * given, offsets contiguous, the header padded with spaces to a multiple
 * of 8), atomically (common/atomicfile.h).
 *
 * Tensors returned here own their data (ss_aligned_alloc; released with
 * ss_tensor_free_data() of engine/io/npy.h, or with the file).
 *
 * THREADS: [any].  No global state; an ss_safetensors_t belongs to one
 * thread at a time.
 */

#include <stddef.h>

#include "common/err.h"
#include "engine/engine.h"

/* The largest header the reader accepts (the reference's limit). */
#define SS_SAFETENSORS_MAX_HEADER ((size_t)100 << 20)

typedef struct ss_safetensors ss_safetensors_t;

/* Reads a whole file (a regular file of at most max_bytes).  Returns a new
 * ss_safetensors_t in *out (NULL on failure). */
int ss_safetensors_read(const char *path, size_t max_bytes,
                        ss_safetensors_t **out, ss_err_t *err);
/* The same from an open file (borrowed; read from offset 0 with pread);
 * what names it in messages. */
int ss_safetensors_read_fd(int fd, const char *what, size_t max_bytes,
                           ss_safetensors_t **out, ss_err_t *err);
/* The same from memory (borrowed, copied from). */
int ss_safetensors_read_buffer(const void *buf, size_t len, const char *what,
                               size_t max_bytes, ss_safetensors_t **out,
                               ss_err_t *err);
void ss_safetensors_free(ss_safetensors_t *st);

/* Tensors in file order (by data offset).  Names and tensors are borrowed
 * from st. */
int ss_safetensors_count(const ss_safetensors_t *st);
const char *ss_safetensors_name(const ss_safetensors_t *st, int i);
const ss_tensor_t *ss_safetensors_tensor(const ss_safetensors_t *st, int i);
/* Index of the tensor called name, or -1. */
int ss_safetensors_find(const ss_safetensors_t *st, const char *name);
/* __metadata__[key] (borrowed), or NULL. */
const char *ss_safetensors_meta(const ss_safetensors_t *st, const char *key);

/* "F32", "BF16", ... for a dtype; NULL when the format has none. */
const char *ss_safetensors_dtype_name(ss_dtype_t t);

/* Serializes n tensors (borrowed; names non-empty, unique, not
 * "__metadata__") and n_meta key/value pairs (meta[2k], meta[2k+1]; may be
 * 0/NULL) into a new buffer (*out, free with ss_free; *len bytes). */
int ss_safetensors_encode(int n, const char *const *names,
                          const ss_tensor_t *tensors, int n_meta,
                          const char *const *meta, void **out, size_t *len,
                          ss_err_t *err);
/* The same written to path atomically. */
int ss_safetensors_write(const char *path, int n, const char *const *names,
                         const ss_tensor_t *tensors, int n_meta,
                         const char *const *meta, ss_err_t *err);

#endif
