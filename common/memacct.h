/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_MEMACCT_H
#define SS_COMMON_MEMACCT_H

/*
 * Memory accounts: a byte count that the code allocating memory on an
 * owner's behalf charges where it allocates and credits where it frees
 * (issue 12: the memory a loaded model version holds, in metrics).
 *
 * The engine gives each graph an account; a plan compiled from the graph
 * charges it for what the plan owns (folded constants, bookkeeping) and
 * for the weights oneDNN packs for it.  Those packings happen deep in
 * the primitive constructors, so rather than pass the account through
 * every one of them, a thread names the account it is working for
 * (ss_memacct_swap_current) for the span of a compile, and the
 * allocating code asks ss_memacct_current().  Whatever is charged keeps
 * a reference on the account, so the credit at free time finds it even
 * when the graph has gone first.
 *
 * THREADS: [any]; counts and references are atomic; the current account
 * is per thread.
 */

#include <stddef.h>

typedef struct ss_memacct ss_memacct_t;

/* A new account at 0 bytes with one reference, or NULL without memory. */
ss_memacct_t *ss_memacct_new(void);
void ss_memacct_ref(ss_memacct_t *a);
/* Drops a reference; accepts NULL. */
void ss_memacct_unref(ss_memacct_t *a);

/* Adds n bytes (a charge) or takes them back; both accept NULL. */
void ss_memacct_charge(ss_memacct_t *a, size_t n);
void ss_memacct_credit(ss_memacct_t *a, size_t n);
/* The bytes charged and not yet credited. */
size_t ss_memacct_bytes(const ss_memacct_t *a);

/* The account this thread allocates for (borrowed), or NULL. */
ss_memacct_t *ss_memacct_current(void);
/* Makes a (borrowed: the caller keeps it alive for the span) this
 * thread's current account; returns the previous one to restore. */
ss_memacct_t *ss_memacct_swap_current(ss_memacct_t *a);

#endif
