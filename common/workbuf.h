/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_WORKBUF_H
#define SS_COMMON_WORKBUF_H

/*
 * A reused work buffer (an executor's arena, a batch's concatenated
 * inputs) that grows to what a run needs and gives back what an outlier
 * left behind.
 *
 * Grown on demand and kept, a buffer ends at the largest size ever asked
 * for: one request of 10x the usual rows left its executor holding 10x
 * the memory for good.  The owner counts its runs in windows of
 * SS_WORKBUF_WINDOW and calls ss_workbuf_roll on each buffer at a
 * window's end (or when its thread goes idle).  A buffer remembers the
 * largest need of the current window and of the one before; at a roll,
 * if it holds more than twice the larger of the two and at least
 * SS_WORKBUF_SLACK more, it is replaced by one of that size (freed when
 * it is 0).  So:
 *   - a size asked for at least once in every window is kept: a steady
 *     load never reallocates, nor one alternating between sizes within 2x;
 *   - an outlier is released at the end of the second window after its
 *     own, 32 to 47 runs after it, with one allocation of the working
 *     size (a request of the outlier's size every 50 runs pays one
 *     allocation and its page faults each time);
 *   - an excess under 1 MiB is left alone (its reallocation would cost
 *     more than it gives back).
 * The contents are scratch: a roll does not keep them.
 *
 * THREADS: a buffer belongs to its owner's thread.
 */

#include <stddef.h>

#define SS_WORKBUF_WINDOW 16                    /* runs per window */
#define SS_WORKBUF_SLACK ((size_t)1 << 20)      /* bytes */

typedef struct ss_workbuf {
    void *p;            /* 64-byte aligned (ss_aligned_alloc), or NULL */
    size_t cap;
    size_t peak;        /* largest need this window */
    size_t peak_last;   /* in the window before */
} ss_workbuf_t;

/* Makes b hold at least need bytes (contents not kept when it grows) and
 * counts need in the window.  0, or SS_ENOMEM with b unchanged but for
 * the count. */
int ss_workbuf_reserve(ss_workbuf_t *b, size_t need);
/* Ends b's window: shrinks b as above.  Returns the bytes given back (0
 * when kept).  A shrink that cannot allocate the smaller buffer leaves b
 * empty; the next reserve allocates. */
size_t ss_workbuf_roll(ss_workbuf_t *b);
/* Frees b's memory; b is empty afterwards.  NULL is fine. */
void ss_workbuf_free(ss_workbuf_t *b);
/* Returns freed bytes to the operating system after rolls gave back
 * `released` bytes in all: glibc keeps a freed block that did not come
 * from mmap (under its mmap threshold, which rises to 32 MiB as large
 * blocks are freed) in its heaps, so the process's RSS would not move.
 * Does nothing under SS_WORKBUF_SLACK. */
void ss_workbuf_trim(size_t released);

#endif
