/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_ALLOC_H
#define SS_COMMON_ALLOC_H

/*
 * Allocation with a fault-injection hook.
 *
 * Everything that allocates memory sized by input (tensors, graphs, bodies)
 * goes through these so tests can fail the N-th allocation and check that
 * the error path leaves no leak and no half-built state.
 *
 * THREADS: [any].  The fail-after counter is atomic.
 */

#include <stddef.h>

void *ss_malloc(size_t n);
void *ss_calloc(size_t count, size_t size);
void *ss_realloc(void *p, size_t n);
void ss_free(void *p);
char *ss_strdup(const char *s);
char *ss_strndup(const char *s, size_t n);

/* 64-byte aligned, for tensors (oneDNN and AVX-512 like it); free with
 * ss_free. */
void *ss_aligned_alloc(size_t n);
/* The same for a large buffer read over and over (packed weights): from
 * 2 MB on, aligned to 2 MB and advised as transparent huge pages
 * (MADV_HUGEPAGE), so the pages are 2 MB where the kernel has them.
 * ViT-B/16 streams its 330 MB of weights on every run: on 4 KB pages the
 * CPU's prefetchers stop at each page's end.  Free with ss_free. */
void *ss_aligned_alloc_huge(size_t n);

/* Make the n-th allocation from now fail (1 = the next one); 0 disables.
 * For tests only. */
void ss_alloc_fail_after(long n);

/* Multiplies with an overflow check: returns 0 and sets *out, or -1. */
static inline int
ss_mul_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

/* Adds with an overflow check: returns 0 and sets *out, or -1. */
static inline int
ss_add_overflow(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

#endif
