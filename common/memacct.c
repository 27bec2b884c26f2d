/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory accounts (see memacct.h).
 *
 * THREADS: [any]; the count and the references are atomics, the current
 * account a thread-local pointer.
 */

#include <stdatomic.h>
#include <stdint.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/memacct.h"
#include "common/refcount.h"

struct ss_memacct {
    ss_ref_t ref;
    atomic_size_t bytes;
};

static _Thread_local ss_memacct_t *current;

ss_memacct_t *
ss_memacct_new(void)
{
    ss_memacct_t *a = ss_calloc(1, sizeof(*a));

    if (a == NULL)
        return NULL;
    ss_ref_init(&a->ref);
    atomic_init(&a->bytes, 0);
    return a;
}

void
ss_memacct_ref(ss_memacct_t *a)
{
    ss_ref_get(&a->ref);
}

void
ss_memacct_unref(ss_memacct_t *a)
{
    if (a != NULL && ss_ref_put(&a->ref))
        ss_free(a);
}

void
ss_memacct_charge(ss_memacct_t *a, size_t n)
{
    if (a != NULL)
        atomic_fetch_add_explicit(&a->bytes, n, memory_order_relaxed);
}

void
ss_memacct_credit(ss_memacct_t *a, size_t n)
{
    size_t old;

    if (a == NULL)
        return;
    old = atomic_fetch_sub_explicit(&a->bytes, n, memory_order_relaxed);
    /* a credit without its charge is a bookkeeping bug */
    SS_ASSERT(old >= n);
}

size_t
ss_memacct_bytes(const ss_memacct_t *a)
{
    return a != NULL ? atomic_load_explicit(&a->bytes, memory_order_relaxed)
                     : 0;
}

ss_memacct_t *
ss_memacct_current(void)
{
    return current;
}

ss_memacct_t *
ss_memacct_swap_current(ss_memacct_t *a)
{
    ss_memacct_t *old = current;

    current = a;
    return old;
}
