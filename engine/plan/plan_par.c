/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helper threads for parallel batch slices: n pieces of work, the calling
 * thread taking part, with helpers that only help.
 *
 * DESIGN: a plan compiled for T threads whose graph computes sample by
 * sample runs as T slices of the batch, each a plan for one thread
 * (plan_slice.c).  The slices are claimed one by one from an atomic
 * counter by the caller and by whichever idle helper threads of this
 * process's pool wake up in time: unlike an OpenMP team, whose fork and
 * join wait for every member, a helper that the scheduler has not run yet
 * is simply not waited for -- the caller runs the slices nobody claimed
 * and waits only for those a helper has started.  On a quiet machine the
 * slices run side by side; on one whose cores other processes want, the
 * run degrades to the caller's own speed instead of waiting a scheduler
 * slice for a spinning or sleeping partner at every primitive (each
 * oneDNN primitive is an OpenMP team with a barrier: the 8x8 CNN at batch
 * 32 took 0.29 ms on 2 threads against 0.22 on one, bench/README.md).
 *
 * A helper spins SS_PAR_SPIN_NS after its last piece before it sleeps on
 * the condition variable (a wake-up costs tens of microseconds, a
 * slice of the CNN at batch 32 about 100), so back-to-back runs find it
 * awake; SS_ENGINE_PAR_SPIN_US=N replaces the spin (0: none).
 *
 * Oversubscription: the pool has at most one helper per CPU the caller
 * may run on less one (helpers inherit the first caller's CPUs: the
 * daemon's executors are pinned to the serving CPUs), and a run posts
 * its work only when the threads already running parallel slices
 * (callers and helpers) leave one of those CPUs free: two daemon
 * executors running such plans at once on two CPUs each run their own
 * slices, one thread each.  Helpers set their own OpenMP count to 1, so
 * a oneDNN primitive that asks for the current count runs inline.
 *
 * THREADS: ss__par_run is [any] (many callers at once); the pool is
 * process-wide, its helpers started on first use and never stopped
 * (blocked on a condition variable when idle).
 */

#include "config.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common/clock.h"
#include "engine/plan/internal.h"

#define SS_PAR_MAX_HELPERS 63
#define SS_PAR_SPIN_NS ((int64_t)100 * 1000)

struct par_job {
    void (*fn)(void *arg, int i);
    void *arg;
    int n;
    atomic_int next;            /* the next piece to claim */
    int joined;                 /* helpers inside (under the pool's lock) */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;        /* helpers: a job was posted */
    pthread_cond_t left;        /* callers: a helper left a job */
    struct par_job *job;        /* posted, or NULL */
    atomic_uint gen;            /* bumped at every post */
    int helpers;                /* started */
    int sleeping;               /* helpers waiting on wake */
    atomic_int running;         /* threads inside parallel slices */
    int64_t spin_ns;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .left = PTHREAD_COND_INITIALIZER,
};

static void
claim_all(struct par_job *j)
{
    int i;

    while ((i = atomic_fetch_add(&j->next, 1)) < j->n)
        j->fn(j->arg, i);
}

static void *
helper_main(void *unused)
{
    unsigned seen = 0;

    (void)unused;
    /* a oneDNN primitive asking for the current count (parallel(0, ..))
     * runs inline here, as the slices' primitives were made for */
    omp_set_num_threads(1);
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        struct par_job *j;

        if (pool.job == NULL || atomic_load(&pool.gen) == seen) {
            int64_t until = ss_clock_mono_ns() + pool.spin_ns;

            /* spin a little unlocked before sleeping: the next run of a
             * benchmark or a busy executor comes within microseconds */
            pthread_mutex_unlock(&pool.lock);
            while (atomic_load(&pool.gen) == seen
                   && ss_clock_mono_ns() < until)
                ;
            pthread_mutex_lock(&pool.lock);
            if (pool.job == NULL || atomic_load(&pool.gen) == seen) {
                pool.sleeping++;
                while (pool.job == NULL || atomic_load(&pool.gen) == seen)
                    pthread_cond_wait(&pool.wake, &pool.lock);
                pool.sleeping--;
            }
        }
        j = pool.job;
        seen = atomic_load(&pool.gen);
        j->joined++;
        atomic_fetch_add(&pool.running, 1);
        pthread_mutex_unlock(&pool.lock);
        claim_all(j);
        atomic_fetch_sub(&pool.running, 1);
        pthread_mutex_lock(&pool.lock);
        if (--j->joined == 0)
            pthread_cond_broadcast(&pool.left);
    }
    return NULL;
}

/* Starts helpers up to want (and the CPUs' bound); under pool.lock.  A
 * helper that cannot start leaves the pool smaller: runs do not need
 * one. */
/* The CPUs the calling thread may run on (1 if unknown). */
static int
my_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 1;
    return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
}

static void
grow(int want, int cpus)
{
    if (pool.helpers == 0) {
        const char *e = getenv("SS_ENGINE_PAR_SPIN_US");

        pool.spin_ns = e != NULL && e[0] != '\0'
                       ? strtoll(e, NULL, 10) * 1000 : SS_PAR_SPIN_NS;
    }
    if (want > cpus - 1)
        want = (int)cpus - 1;
    if (want > SS_PAR_MAX_HELPERS)
        want = SS_PAR_MAX_HELPERS;
    while (pool.helpers < want) {
        pthread_t t;
        pthread_attr_t a;
        int rc;

        if (pthread_attr_init(&a) != 0)
            return;
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &a, helper_main, NULL);
        pthread_attr_destroy(&a);
        if (rc != 0)
            return;
        pthread_setname_np(t, "ss-slice");
        pool.helpers++;
    }
}

void
ss__par_run(int n, int threads, void (*fn)(void *arg, int i), void *arg)
{
    struct par_job j = {.fn = fn, .arg = arg, .n = n};
    int posted = 0, mine, cpus;

    atomic_init(&j.next, 0);
    mine = atomic_fetch_add(&pool.running, 1) + 1;
    if (n > 1 && threads > 1 && mine < (cpus = my_cpus())) {
        pthread_mutex_lock(&pool.lock);
        grow(threads - 1, cpus);
        if (pool.job == NULL && pool.helpers > 0) {
            pool.job = &j;
            atomic_fetch_add(&pool.gen, 1);
            if (pool.sleeping > 0)
                pthread_cond_broadcast(&pool.wake);
            posted = 1;
        }
        pthread_mutex_unlock(&pool.lock);
    }
    claim_all(&j);
    if (posted) {
        /* no helper joins from now on; wait for those inside */
        pthread_mutex_lock(&pool.lock);
        pool.job = NULL;
        while (j.joined > 0)
            pthread_cond_wait(&pool.left, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    atomic_fetch_sub(&pool.running, 1);
}
