/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_FILEMAP_H
#define SS_COMMON_FILEMAP_H

/*
 * Read-only file mappings that tensors point into (issue 12: a loaded
 * model's weights are the file's pages, not a copy).
 *
 * A mapping is PROT_READ and MAP_PRIVATE: a write through a pointer into
 * it faults (SIGSEGV) instead of being silently lost or reaching the
 * file.  Its pages are clean file pages, so ss_filemap_release can drop
 * them from the resident set at any time: the next read faults the same
 * bytes back in from the page cache (or the disk).  That lets a reader
 * that has copied a weight elsewhere (oneDNN's packed layout) give its
 * pages back without telling the other readers of the same tensor.
 *
 * Lifetime: counted references.  ss_filemap_open returns one; every
 * tensor whose data points into the mapping holds one more (taken by its
 * creator, dropped by ss_filemap_put_at from ss__tensor_free), so the
 * mapping lives exactly as long as the last tensor that reads it,
 * whichever graph that tensor has ended up in.
 *
 * The file must not change while it is mapped: a private mapping shows
 * later writes to the file's pages (and a truncation turns reads into
 * SIGBUS).  Callers map only files that are replaced by rename, never
 * rewritten in place (model versions: see server/model/store.c and
 * common/atomicfile.c).
 *
 * THREADS: [any]; the registry is guarded by one internal mutex.
 */

#include <stddef.h>

typedef struct ss_filemap ss_filemap_t;

/* Maps len (> 0) bytes of fd from offset 0, read-only.  0, or -errno.
 * The mapping does not keep fd open. */
int ss_filemap_open(int fd, size_t len, ss_filemap_t **out);
const void *ss_filemap_base(const ss_filemap_t *m);
size_t ss_filemap_len(const ss_filemap_t *m);
void ss_filemap_ref(ss_filemap_t *m);
/* Drops a reference; the last one unmaps.  Accepts NULL. */
void ss_filemap_unref(ss_filemap_t *m);

/* If p points into a live mapping, drops one reference on it and
 * returns 1; otherwise returns 0 (p is someone else's memory). */
int ss_filemap_put_at(const void *p);
/* 1 when p points into a live mapping. */
int ss_filemap_contains(const void *p);
/* Drops the resident pages under [p, p + n) that lie in a mapping (the
 * pages are rounded outwards: every byte of a mapping is re-readable);
 * does nothing for memory that is not a mapping.  Call it after copying
 * a weight into another layout. */
void ss_filemap_release(const void *p, size_t n);
/* Drops every resident page of m. */
void ss_filemap_release_all(ss_filemap_t *m);

/* The live mapping holding p, or NULL.  Borrowed: valid while the caller
 * holds what points into it (a tensor's reference). */
ss_filemap_t *ss_filemap_at(const void *p);
/* The bytes of m this process has resident now: its pages that are
 * present in the process's page tables (/proc/self/pagemap), which is
 * what RSS counts.  Not mincore(2): for a file mapping that reports the
 * page cache, where the file's pages stay after MADV_DONTNEED has taken
 * them out of the resident set.  Reads 8 bytes per page of m (a few
 * hundred microseconds for 300 MB): for a scrape, not a request path.
 * 0 and *out, or -errno (no /proc: *out is 0). */
int ss_filemap_resident(const ss_filemap_t *m, size_t *out);

#endif
