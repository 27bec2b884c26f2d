/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Read-only file mappings that tensors point into (see filemap.h).
 *
 * DESIGN: a tensor is a bare data pointer (engine.h), freed with
 * ss__tensor_free; rather than widen that struct and every copy of it,
 * the live mappings sit in a small registry of address ranges, and
 * ss__tensor_free asks it whether a pointer is a mapping's (drop a
 * reference) or the heap's (free it).  There is one mapping per loaded
 * model file, so a linear scan is enough; an atomic count lets the
 * common case (no mapping at all: tests, buffers) skip the lock.
 *
 * THREADS: [any]; `lock` guards `head` and every mapping's list link;
 * references are atomic.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/filemap.h"
#include "common/refcount.h"

struct ss_filemap {
    ss_ref_t ref;
    uint8_t *base;
    size_t len;
    ss_filemap_t *next;         /* registry link, under lock */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ss_filemap_t *head;      /* under lock */
static atomic_int n_live;       /* entries in head's list */

int
ss_filemap_open(int fd, size_t len, ss_filemap_t **out)
{
    ss_filemap_t *m = NULL;
    void *p;

    *out = NULL;
    if (len == 0)
        return -EINVAL;
    if ((m = ss_calloc(1, sizeof(*m))) == NULL)
        return -ENOMEM;
    p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;

        ss_free(m);
        return -e;
    }
    ss_ref_init(&m->ref);
    m->base = p;
    m->len = len;
    pthread_mutex_lock(&lock);
    m->next = head;
    head = m;
    atomic_fetch_add(&n_live, 1);
    pthread_mutex_unlock(&lock);
    *out = m;
    return 0;
}

const void *
ss_filemap_base(const ss_filemap_t *m)
{
    return m->base;
}

size_t
ss_filemap_len(const ss_filemap_t *m)
{
    return m->len;
}

void
ss_filemap_ref(ss_filemap_t *m)
{
    ss_ref_get(&m->ref);
}

void
ss_filemap_unref(ss_filemap_t *m)
{
    ss_filemap_t **pp;

    if (m == NULL || !ss_ref_put(&m->ref))
        return;
    pthread_mutex_lock(&lock);
    for (pp = &head; *pp != NULL; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            atomic_fetch_sub(&n_live, 1);
            break;
        }
    pthread_mutex_unlock(&lock);
    munmap(m->base, m->len);
    ss_free(m);
}

/* The mapping holding p, under lock; NULL if none. */
static ss_filemap_t *
find(const void *p)
{
    uintptr_t a = (uintptr_t)p;

    for (ss_filemap_t *m = head; m != NULL; m = m->next)
        if (a >= (uintptr_t)m->base && a - (uintptr_t)m->base < m->len)
            return m;
    return NULL;
}

int
ss_filemap_put_at(const void *p)
{
    ss_filemap_t *m;

    if (p == NULL || atomic_load(&n_live) == 0)
        return 0;
    pthread_mutex_lock(&lock);
    m = find(p);
    pthread_mutex_unlock(&lock);
    /* the reference the caller gives back keeps m alive until here */
    if (m == NULL)
        return 0;
    ss_filemap_unref(m);
    return 1;
}

int
ss_filemap_contains(const void *p)
{
    int in;

    if (p == NULL || atomic_load(&n_live) == 0)
        return 0;
    pthread_mutex_lock(&lock);
    in = find(p) != NULL;
    pthread_mutex_unlock(&lock);
    return in;
}

/* Drops the pages under [a, a + n) clipped to m; under lock (or with a
 * reference), so m stays mapped. */
static void
drop(ss_filemap_t *m, uintptr_t a, size_t n)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)m->base, hi = lo + m->len;
    uintptr_t s = a & ~(pg - 1), e = (a + n + pg - 1) & ~(pg - 1);

    /* m->base is page-aligned; the end of the last page is still the
     * mapping's (the kernel maps whole pages) */
    hi = (hi + pg - 1) & ~(pg - 1);
    if (s < lo)
        s = lo;
    if (e > hi)
        e = hi;
    /* A private mapping that was never written holds only the file's
     * clean pages: MADV_DONTNEED forgets them, and a later read faults
     * the same bytes back in. */
    if (e > s)
        (void)madvise((void *)s, e - s, MADV_DONTNEED);
}

void
ss_filemap_release(const void *p, size_t n)
{
    ss_filemap_t *m;

    if (p == NULL || n == 0 || atomic_load(&n_live) == 0)
        return;
    pthread_mutex_lock(&lock);
    if ((m = find(p)) != NULL)
        drop(m, (uintptr_t)p, n);
    pthread_mutex_unlock(&lock);
}

void
ss_filemap_release_all(ss_filemap_t *m)
{
    if (m != NULL)
        drop(m, (uintptr_t)m->base, m->len);
}

ss_filemap_t *
ss_filemap_at(const void *p)
{
    ss_filemap_t *m;

    if (p == NULL || atomic_load(&n_live) == 0)
        return NULL;
    pthread_mutex_lock(&lock);
    m = find(p);
    pthread_mutex_unlock(&lock);
    return m;
}

int
ss_filemap_resident(const ss_filemap_t *m, size_t *out)
{
    /* pagemap: one little-endian u64 per virtual page, bit 63 "present
     * in RAM" (readable without privileges; only the frame numbers are
     * hidden).  A swapped-out page (bit 62) is not resident. */
    enum { CHUNK = 512 };
    uint64_t ent[CHUNK];
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    size_t first = (uintptr_t)m->base / pg;
    size_t n = (m->len + pg - 1) / pg, done = 0, present = 0;
    int fd, rc = 0;

    *out = 0;
    if ((fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    while (done < n) {
        size_t want = n - done < CHUNK ? n - done : CHUNK;
        ssize_t got = pread(fd, ent, want * sizeof(ent[0]),
                            (off_t)((first + done) * sizeof(ent[0])));

        if (got <= 0) {
            rc = got < 0 ? -errno : -EIO;
            break;
        }
        want = (size_t)got / sizeof(ent[0]);
        for (size_t i = 0; i < want; i++)
            present += (ent[i] >> 63) & 1;
        done += want;
    }
    close(fd);
    if (rc == 0)
        *out = present * pg;
    return rc;
}
