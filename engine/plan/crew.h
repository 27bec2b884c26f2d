/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_CREW_H
#define SS_CREW_H

/*
 * A crew: helper threads that take part in n pieces of work beside the
 * calling thread, and only help (crew.c says why that beats an OpenMP
 * team on a machine whose cores other processes want).  The engine's
 * parallel batch slices run on one crew for the whole process; a
 * trainer that runs its batch as slices has its own (its helpers start
 * in the job's thread and so run on the job's CPUs, not the serving
 * ones).
 *
 * THREADS: ss_crew_run is [any] (many callers at once); new/free belong
 * to the crew's owner, with no run in progress at free.
 */

typedef struct ss_crew ss_crew_t;

/* A crew whose helpers, started at the first run that wants them, are
 * named name (15 bytes at most: top -H) and run on the CPUs of the
 * thread that starts them; at most max_helpers of them, and never more
 * than those CPUs less one.  NULL when out of memory. */
ss_crew_t *ss_crew_new(const char *name, int max_helpers);
/* Stops and joins the helpers.  NULL is fine. */
void ss_crew_free(ss_crew_t *c);

/* Runs fn(arg, i) for i in 0 .. n - 1 on the calling thread and on up to
 * threads - 1 of the crew's helpers that are idle and free to come;
 * returns when all have run.  Pieces are claimed one by one, so which
 * thread runs a piece varies: fn must give the same bytes on any of
 * them.  Helpers run with OpenMP's count at 1. */
void ss_crew_run(ss_crew_t *c, int n, int threads,
                 void (*fn)(void *arg, int i), void *arg);

/* Helpers started so far. */
int ss_crew_helpers(ss_crew_t *c);

#endif
