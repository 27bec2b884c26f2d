/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crews (crew.h): n pieces of work, the calling thread taking part, with
 * helpers that only help.
 *
 * DESIGN: a plan compiled for T threads whose graph computes sample by
 * sample runs as T slices of the batch, each a plan for one thread
 * (plan_slice.c); a trainer for T threads whose graph does the same runs
 * its forward and backward as T slices of the batch, each a trainer for
 * one thread (compress/train/slices.c).  The slices are claimed one by
 * one from an atomic counter by the caller and by whichever idle helper
 * threads of the crew wake up in time: unlike an OpenMP team, whose fork
 * and join wait for every member, a helper that the scheduler has not
 * run yet is simply not waited for -- the caller runs the slices nobody
 * claimed and waits only for those a helper has started.  On a quiet
 * machine the slices run side by side; on one whose cores other
 * processes want, the run degrades to the caller's own speed instead of
 * waiting a scheduler slice for a spinning or sleeping partner at every
 * primitive (each oneDNN primitive is an OpenMP team with a barrier: the
 * 8x8 CNN at batch 32 took 0.29 ms on 2 threads against 0.22 on one,
 * bench/README.md).
 *
 * A helper spins SS_CREW_SPIN_NS after its last piece before it sleeps on
 * the condition variable (a wake-up costs tens of microseconds, a slice
 * of the CNN at batch 32 about 100), so back-to-back runs find it awake;
 * SS_ENGINE_PAR_SPIN_US=N replaces the spin (0: none).
 *
 * Oversubscription: a crew has at most one helper per CPU of the thread
 * that starts them, less one (helpers inherit its CPUs: the daemon's
 * executors are pinned to the serving CPUs, its jobs to the job CPUs),
 * and a run posts its work only when the threads already running the
 * crew's pieces (callers and helpers) leave one of the caller's CPUs
 * free: two daemon executors running such plans at once on two CPUs
 * each run their own slices, one thread each.  Helpers set their own
 * OpenMP count to 1, so a oneDNN primitive that asks for the current
 * count runs inline.
 *
 * THREADS: ss_crew_run is [any]; the crew's state is under its lock,
 * except the counters that are atomics.  The engine's crew
 * (ss__par_run) is process-wide, started on first use and never freed.
 */

#include "config.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "engine/plan/crew.h"
#include "engine/plan/internal.h"

#define SS_CREW_MAX_HELPERS 63
#define SS_CREW_SPIN_NS ((int64_t)100 * 1000)

struct crew_job {
    void (*fn)(void *arg, int i);
    void *arg;
    int n;
    atomic_int next;            /* the next piece to claim */
    atomic_int joined;          /* helpers inside (changed under the
                                 * crew's lock; the caller may spin on
                                 * it) */
};

struct ss_crew {
    pthread_mutex_t lock;
    pthread_cond_t wake;        /* helpers: a job was posted, or stop */
    pthread_cond_t left;        /* callers: a helper left a job */
    struct crew_job *job;       /* posted, or NULL */
    atomic_uint gen;            /* bumped at every post */
    atomic_int stop;            /* ss_crew_free: helpers leave */
    int max;                    /* helpers wanted at most */
    int helpers;                /* started */
    int sleeping;               /* helpers waiting on wake */
    atomic_int running;         /* threads inside pieces */
    int64_t spin_ns;
    char name[16];
    pthread_t tid[SS_CREW_MAX_HELPERS];
};

static void
claim_all(struct crew_job *j)
{
    int i;

    while ((i = atomic_fetch_add(&j->next, 1)) < j->n)
        j->fn(j->arg, i);
}

/* Whether there is nothing new for a helper that saw generation seen. */
static int
nothing(ss_crew_t *c, unsigned seen)
{
    return !atomic_load(&c->stop)
           && (c->job == NULL || atomic_load(&c->gen) == seen);
}

static void *
helper_main(void *arg)
{
    ss_crew_t *c = arg;
    unsigned seen = 0;

    /* a oneDNN primitive asking for the current count (parallel(0, ..))
     * runs inline here, as the slices' primitives were made for */
    omp_set_num_threads(1);
    pthread_mutex_lock(&c->lock);
    for (;;) {
        struct crew_job *j;

        if (nothing(c, seen)) {
            int64_t until = ss_clock_mono_ns() + c->spin_ns;

            /* spin a little unlocked before sleeping: the next run of a
             * benchmark, a busy executor or a trainer's next step comes
             * within microseconds */
            pthread_mutex_unlock(&c->lock);
            while (atomic_load(&c->gen) == seen && !atomic_load(&c->stop)
                   && ss_clock_mono_ns() < until)
                ;
            pthread_mutex_lock(&c->lock);
            if (nothing(c, seen)) {
                c->sleeping++;
                while (nothing(c, seen))
                    pthread_cond_wait(&c->wake, &c->lock);
                c->sleeping--;
            }
        }
        if (atomic_load(&c->stop))
            break;
        j = c->job;
        seen = atomic_load(&c->gen);
        atomic_fetch_add(&j->joined, 1);
        atomic_fetch_add(&c->running, 1);
        pthread_mutex_unlock(&c->lock);
        claim_all(j);
        atomic_fetch_sub(&c->running, 1);
        pthread_mutex_lock(&c->lock);
        /* the last touch of j: its caller may return as soon as it
         * sees 0 */
        if (atomic_fetch_sub(&j->joined, 1) == 1)
            pthread_cond_broadcast(&c->left);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* The CPUs the calling thread may run on (1 if unknown). */
static int
my_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) < 0)
        return 1;
    return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
}

/* Starts helpers up to want (and the CPUs' bound); under c->lock.  A
 * helper that cannot start leaves the crew smaller: runs do not need
 * one. */
static void
grow(ss_crew_t *c, int want, int cpus)
{
    if (want > cpus - 1)
        want = cpus - 1;
    if (want > c->max)
        want = c->max;
    while (c->helpers < want) {
        if (pthread_create(&c->tid[c->helpers], NULL, helper_main, c) != 0)
            return;
        pthread_setname_np(c->tid[c->helpers], c->name);
        c->helpers++;
    }
}

ss_crew_t *
ss_crew_new(const char *name, int max_helpers)
{
    ss_crew_t *c = ss_calloc(1, sizeof(*c));
    const char *e = getenv("SS_ENGINE_PAR_SPIN_US");

    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->left, NULL);
    atomic_init(&c->gen, 0);
    atomic_init(&c->stop, 0);
    atomic_init(&c->running, 0);
    c->max = max_helpers < SS_CREW_MAX_HELPERS ? max_helpers
                                               : SS_CREW_MAX_HELPERS;
    c->spin_ns = e != NULL && e[0] != '\0' ? strtoll(e, NULL, 10) * 1000
                                           : SS_CREW_SPIN_NS;
    snprintf(c->name, sizeof(c->name), "%s", name);
    return c;
}

void
ss_crew_free(ss_crew_t *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stop, 1);
    pthread_cond_broadcast(&c->wake);
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < c->helpers; i++)
        pthread_join(c->tid[i], NULL);
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->left);
    pthread_mutex_destroy(&c->lock);
    ss_free(c);
}

int
ss_crew_helpers(ss_crew_t *c)
{
    int n;

    pthread_mutex_lock(&c->lock);
    n = c->helpers;
    pthread_mutex_unlock(&c->lock);
    return n;
}

void
ss_crew_run(ss_crew_t *c, int n, int threads, void (*fn)(void *arg, int i),
            void *arg)
{
    struct crew_job j = {.fn = fn, .arg = arg, .n = n};
    int posted = 0, mine, cpus;

    atomic_init(&j.next, 0);
    atomic_init(&j.joined, 0);
    mine = atomic_fetch_add(&c->running, 1) + 1;
    if (n > 1 && threads > 1 && mine < (cpus = my_cpus())) {
        pthread_mutex_lock(&c->lock);
        grow(c, threads - 1, cpus);
        if (c->job == NULL && c->helpers > 0) {
            c->job = &j;
            atomic_fetch_add(&c->gen, 1);
            if (c->sleeping > 0)
                pthread_cond_broadcast(&c->wake);
            posted = 1;
        }
        pthread_mutex_unlock(&c->lock);
    }
    claim_all(&j);
    if (posted) {
        int64_t until;

        /* no helper joins from now on; wait for those inside, spinning
         * first: a piece of a trainer's step can be tens of us, which a
         * sleep and a wake-up would double */
        pthread_mutex_lock(&c->lock);
        c->job = NULL;
        pthread_mutex_unlock(&c->lock);
        until = ss_clock_mono_ns() + c->spin_ns;
        while (atomic_load(&j.joined) > 0 && ss_clock_mono_ns() < until)
            ;
        if (atomic_load(&j.joined) > 0) {
            pthread_mutex_lock(&c->lock);
            while (atomic_load(&j.joined) > 0)
                pthread_cond_wait(&c->left, &c->lock);
            pthread_mutex_unlock(&c->lock);
        }
    }
    atomic_fetch_sub(&c->running, 1);
}

/* ---- the engine's crew ------------------------------------------------ */

static ss_crew_t *engine_crew;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void
engine_crew_init(void)
{
    engine_crew = ss_crew_new("ss-slice", SS_CREW_MAX_HELPERS);
}

void
ss__par_run(int n, int threads, void (*fn)(void *arg, int i), void *arg)
{
    int i;

    pthread_once(&engine_once, engine_crew_init);
    if (engine_crew != NULL) {
        ss_crew_run(engine_crew, n, threads, fn, arg);
        return;
    }
    for (i = 0; i < n; i++)     /* no memory for a crew: all here */
        fn(arg, i);
}
