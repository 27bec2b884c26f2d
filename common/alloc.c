/* SPDX-License-Identifier: Apache-2.0 */
#include "common/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static atomic_long fail_after;

static int
should_fail(void)
{
    long v = atomic_load_explicit(&fail_after, memory_order_relaxed);

    if (v <= 0)
        return 0;
    return atomic_fetch_sub(&fail_after, 1) == 1;
}

void
ss_alloc_fail_after(long n)
{
    atomic_store(&fail_after, n);
}

void *
ss_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *
ss_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *
ss_realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void
ss_free(void *p)
{
    free(p);
}

char *
ss_strdup(const char *s)
{
    return s ? ss_strndup(s, strlen(s)) : NULL;
}

char *
ss_strndup(const char *s, size_t n)
{
    char *d;

    if ((d = ss_malloc(n + 1)) == NULL)
        return NULL;
    if (n > 0)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void *
ss_aligned_alloc(size_t n)
{
    void *p = NULL;

    if (should_fail())
        return NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0)
        return NULL;
    return p;
}

void *
ss_aligned_alloc_huge(size_t n)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;

    if (n < huge)
        return ss_aligned_alloc(n);
    if (should_fail())
        return NULL;
    if (posix_memalign(&p, huge, n) != 0)
        return NULL;
    /* advice only: without THP (or with "never") the pages stay 4 KB */
    (void)madvise(p, n, MADV_HUGEPAGE);
    return p;
}
