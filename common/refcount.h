/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_REFCOUNT_H
#define SS_COMMON_REFCOUNT_H

/*
 * Atomic reference counts for objects shared across threads.
 *
 * ss_ref_get takes a reference the caller must already be entitled to (it
 * holds one, or a lock keeps the object alive); ss_ref_put returns 1 when
 * the caller dropped the last one and must free the object.  Both assert
 * that the count was above zero: a get or put after the count reached
 * zero is a use-after-free that must stop the process, not go on.
 *
 * THREADS: [any].
 */

#include <stdatomic.h>

#include "common/assert.h"

typedef struct {
    atomic_int n;
} ss_ref_t;

static inline void
ss_ref_init(ss_ref_t *r)
{
    atomic_init(&r->n, 1);
}

static inline void
ss_ref_get(ss_ref_t *r)
{
    int old = atomic_fetch_add_explicit(&r->n, 1, memory_order_relaxed);

    SS_ASSERT(old > 0);
}

static inline int
ss_ref_put(ss_ref_t *r)
{
    int old = atomic_fetch_sub_explicit(&r->n, 1, memory_order_acq_rel);

    SS_ASSERT(old > 0);
    return old == 1;
}

static inline int
ss_ref_count(ss_ref_t *r)
{
    return atomic_load_explicit(&r->n, memory_order_relaxed);
}

#endif
