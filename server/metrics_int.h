/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_METRICS_INT_H
#define SS_SERVER_METRICS_INT_H

/*
 * The metrics registry's structures, shared by metrics.c (registering,
 * updating) and metrics_render.c (the text format).  Private to those.
 *
 * THREADS: reg->lock guards the family lists, every series list and the
 * gauge callbacks; hook_lock the render hooks; series values are atomics.
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "server/metrics.h"

enum kind { COUNTER, GAUGE, HISTOGRAM, GAUGE_FN };

struct ss_series {
    struct ss_series *next;
    ss_metric_t *family;
    uint64_t hash;
    char **values;               /* family->nlabels strings */
    _Atomic uint64_t value;      /* double bits: the value, or a sum */
    _Atomic uint64_t counts[];   /* histogram: nbuckets + 1, last is +Inf */
};

struct ss_metric {
    struct ss_metric *next;
    ss_metrics_t *reg;
    enum kind kind;
    char *name;
    char *help;
    int nlabels;
    char **label_names;
    int nbuckets;
    double *buckets;
    double (*fn)(void *arg);
    void *arg;
    ss_series_t *series;         /* rendered, in creation order */
    ss_series_t **series_tail;
    ss_series_t *retired;        /* removed, kept for stale pointers */
};

struct ss_metrics {
    pthread_mutex_t lock;
    ss_metric_t *families;
    ss_metric_t **families_tail;
    /* render hooks; hook_lock guards them and serialises their runs */
    pthread_mutex_t hook_lock;
    struct {
        void (*fn)(void *);
        void *arg;
    } hooks[SS_METRICS_MAX_HOOKS];
    int n_hooks;
};

#endif
