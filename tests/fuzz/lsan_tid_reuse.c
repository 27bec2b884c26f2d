/* SPDX-License-Identifier: Apache-2.0
 *
 * LeakSanitizer's exit-time check after the kernel has reused thread ids
 * within one process: no slimserve code, only threads that use OpenMP
 * (libgomp) the way the executors do, then two that stay alive.  Their
 * libgomp state (the thread pool, the ICV task of omp_set_num_threads:
 * 216 bytes) is pointed to only from their TLS.  With fewer thread
 * creations than the kernel has thread ids (kernel.pid_max, 32768 here)
 * the check is clean; with more, it reports that state as leaked: it no
 * longer scans the live threads.  This is the exit-time report of the
 * 10 M fuzz_http campaign (README, "Exit-time leak reports").
 *
 *   clang -fsanitize=address -g -O1 tests/fuzz/lsan_tid_reuse.c \
 *       -o /tmp/lsan_tid_reuse -lgomp -lpthread
 *   OMP_WAIT_POLICY=passive /tmp/lsan_tid_reuse 3000    # 12 k threads
 *   OMP_WAIT_POLICY=passive /tmp/lsan_tid_reuse 9000    # 36 k threads
 *
 * Not built by make: it demonstrates the tool's limit, it tests nothing
 * of ours. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* libgomp's entry points, without -fopenmp (clang would use libomp). */
void omp_set_num_threads(int n);
void GOMP_parallel(void (*fn)(void *), void *data, unsigned n,
                   unsigned flags);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void
body(void *arg)
{
    (void)arg;
}

/* An executor's life: set the thread count (allocates the ICV task), run
 * parallel regions (a thread pool and a worker thread); keep != NULL:
 * then stay alive until the process exits. */
static void *
worker(void *keep)
{
    omp_set_num_threads(1);
    GOMP_parallel(body, NULL, 2, 0);
    omp_set_num_threads(2);
    GOMP_parallel(body, NULL, 0, 0);
    if (keep != NULL) {
        fprintf(stderr, "live thread, tid %d\n", (int)gettid());
        pthread_mutex_lock(&mu);
        for (;;)
            pthread_cond_wait(&cv, &mu);
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 1000;
    pthread_t t[2];

    /* Each round: two threads and their OpenMP workers, about 4 ids. */
    for (long i = 0; i < rounds; i++) {
        if (pthread_create(&t[0], NULL, worker, NULL) != 0 ||
            pthread_create(&t[1], NULL, worker, NULL) != 0) {
            perror("pthread_create");
            return 2;
        }
        pthread_join(t[0], NULL);
        pthread_join(t[1], NULL);
    }
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)1) != 0) {
            perror("pthread_create");
            return 2;
        }
    usleep(200000);
    fprintf(stderr, "exit after %ld rounds, two live threads\n", rounds);
    return 0;
}
