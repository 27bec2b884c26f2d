/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reused work buffers that shrink back after an outlier (workbuf.h has
 * the rule and why).
 *
 * THREADS: a buffer belongs to its owner's thread; ss_workbuf_trim is
 * [any] (malloc_trim takes each malloc arena's lock in turn).
 */
#include "common/workbuf.h"

#include <malloc.h>

#include "common/alloc.h"
#include "common/err.h"

int
ss_workbuf_reserve(ss_workbuf_t *b, size_t need)
{
    void *p;

    if (need > b->peak)
        b->peak = need;
    if (need <= b->cap)
        return 0;
    if ((p = ss_aligned_alloc(need)) == NULL)
        return SS_ENOMEM;
    ss_free(b->p);
    b->p = p;
    b->cap = need;
    return 0;
}

size_t
ss_workbuf_roll(ss_workbuf_t *b)
{
    size_t keep = b->peak > b->peak_last ? b->peak : b->peak_last;
    size_t was = b->cap;

    b->peak_last = b->peak;
    b->peak = 0;
    if (was / 2 <= keep || was - keep < SS_WORKBUF_SLACK)
        return 0;
    ss_free(b->p);
    b->p = keep > 0 ? ss_aligned_alloc(keep) : NULL;
    b->cap = b->p != NULL ? keep : 0;
    return was - b->cap;
}

void
ss_workbuf_free(ss_workbuf_t *b)
{
    if (b == NULL)
        return;
    ss_free(b->p);
    b->p = NULL;
    b->cap = b->peak = b->peak_last = 0;
}

void
ss_workbuf_trim(size_t released)
{
    if (released >= SS_WORKBUF_SLACK)
        (void)malloc_trim(0);
}
