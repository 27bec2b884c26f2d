/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_TESTS_TEST_BATCH_H
#define SS_TESTS_TEST_BATCH_H

/*
 * Shared scaffolding of the batcher tests: work items that record their
 * completion, and a wait for n completions with a timeout.
 */

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/batch/batch.h"

typedef struct titem {
    ss_work_t w;
    ss_tensor_t in[2];
    int row0;                   /* first row of the data it carries */
    int n;                      /* samples */
    int calls;                  /* done callbacks seen (must end at 1) */
    int64_t done_ns;            /* when done ran */
    int resubmit_rc;            /* see on_done_resubmit */
} titem_t;

static pthread_mutex_t tb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tb_cond = PTHREAD_COND_INITIALIZER;
static int tb_done;

static void
tb_on_done(ss_work_t *w, void *arg)
{
    titem_t *it = arg;

    (void)w;
    pthread_mutex_lock(&tb_lock);
    it->calls++;
    it->done_ns = ss_clock_mono_ns();
    tb_done++;
    pthread_cond_broadcast(&tb_cond);
    pthread_mutex_unlock(&tb_lock);
}

static inline void
tb_reset(void)
{
    pthread_mutex_lock(&tb_lock);
    tb_done = 0;
    pthread_mutex_unlock(&tb_lock);
}

/* Waits until n items completed in all; returns the count reached. */
static inline int
tb_wait(int n, double seconds)
{
    int64_t until = ss_clock_mono_ns() + (int64_t)(seconds * 1e9);
    int got;

    pthread_mutex_lock(&tb_lock);
    while (tb_done < n && ss_clock_mono_ns() < until) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&tb_cond, &tb_lock, &ts);
    }
    got = tb_done;
    pthread_mutex_unlock(&tb_lock);
    return got;
}

/* An item over rows [row0, row0 + n) of a [rows, cols] f32 matrix. */
static inline void
tb_item_f32(titem_t *it, float *data, int64_t cols, int row0, int n)
{
    memset(it, 0, sizeof *it);
    it->row0 = row0;
    it->n = n;
    it->in[0].dtype = SS_DTYPE_F32;
    it->in[0].ndim = 2;
    it->in[0].dims[0] = n;
    it->in[0].dims[1] = cols;
    it->in[0].data = data + (size_t)row0 * (size_t)cols;
    it->w.n_inputs = 1;
    it->w.inputs = it->in;
    it->w.done = tb_on_done;
    it->w.arg = it;
}

/* Options with defaults the tests then adjust. */
static inline ss_batch_opts_t
tb_opts(int max_batch, int64_t delay_us)
{
    ss_batch_opts_t o;

    memset(&o, 0, sizeof o);
    o.max_batch_size = max_batch;
    o.max_queue_delay_us = delay_us;
    o.instances = 1;
    o.threads = 1;
    o.max_queue_size = 0;
    return o;
}

#endif
