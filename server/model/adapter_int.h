/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_SERVER_ADAPTER_INT_H
#define SS_SERVER_ADAPTER_INT_H

/*
 * Internals shared by server/model/adapter.c (the set, the update),
 * adapter_read.c (reading and checking a PEFT adapter) and
 * adapter_cache.c (which adapters' weights are resident).  Nobody else
 * includes this.  THREADS: adapter.h; the fields say what guards them.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/refcount.h"
#include "engine/ir/sites.h"
#include "server/model/adapter.h"
#include "server/model/lora_rows.h"

/* Most sites a graph may have tapped (a 48-layer encoder has ~200). */
#define SS__LORA_MAX_SITES 1024

/* An adapter's weights at one site (lora_rows.h: A^T, and s B^T packed
 * in panels of 16 outputs so the loops read each in order).  w.at and
 * w.bp are NULL while the adapter is cold (adapter_cache.c). */
typedef struct ss__lmod {
    int site;
    ss_lora_w_t w;
} ss__lmod_t;

/* What a file was when the adapter was read (a changed file is noticed
 * before its weights are read back). */
typedef struct ss__file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
} ss__file_id_t;

struct ss_adapter {
    ss_ref_t ref;
    char *name;
    int r;
    float alpha, scale;
    int n_mods;
    ss__lmod_t *mods;
    int *of_site;           /* per site: index in mods, or -1 */
    size_t bytes;           /* r (in + out) floats per module: PEFT's */
    ss_series_t *s_requests, *s_samples;    /* set when it enters a set */

    /* Residency (adapter_cache.c).  Immutable after the read: */
    size_t w_bytes;         /* the packed weights' allocation (panels
                             * padded to 16 outputs) */
    size_t meta_bytes;      /* what a cold adapter still holds */
    uint64_t sum;           /* of the packed weights (bit-identity) */
    ss__file_id_t f_config, f_weights;
    /* Guarded by the lora's set_lock: */
    bool in_set;            /* counted in the set's resident bytes */
    bool resident;          /* weights present */
    bool loading;           /* an executor reads them back now */
    int pins;               /* batches running with it: never evicted */
    uint64_t last_use;      /* the lora's tick at its last pin */
    uint64_t load_gen;      /* read-backs finished (waiters' check) */
    int load_rc;            /* the last read-back's result */
    char *load_msg;         /* and its message (NULL: none, or no
                             * memory): kept off the struct, which every
                             * cold adapter keeps */
};

struct ss_lora {
    const ss_graph_t *g;
    int n_sites;
    ss_site_t *sites;
    char *dir;                  /* the model's folder (read-backs) */
    pthread_mutex_t set_lock;
    pthread_cond_t load_cond;   /* a read-back finished */
    int n_set;
    ss_adapter_t *set[SS_LORA_MAX_ADAPTERS];    /* one reference each */
    int64_t set_bytes;          /* of the set; guarded by set_lock */
    ss_lora_opts_t o;           /* model and version are copies */
    char model[128], version[32];
    ss_series_t *s_loaded, *s_bytes;
    /* Residency (adapter_cache.c); guarded by set_lock. */
    int64_t res_bytes;          /* in-set adapters' resident w_bytes */
    int n_res;
    uint64_t tick;
    int64_t over_log_ns;        /* last "over the budget" line */
    ss_series_t *s_res, *s_res_bytes, *s_hits, *s_misses, *s_evict,
        *s_load_s, *s_over;
};

/* adapter_read.c: frees a (its weights too, when resident).  Accepts
 * NULL. */
void ss__adapter_free(ss_adapter_t *a);
/* The site whose module (or alternative name) is module, or -1. */
int ss__lora_find_site(const ss_lora_t *l, const char *module);
/* a's two files' identities now (0, or -errno). */
int ss__adapter_file_ids(const char *model_dir, const char *name,
                         ss__file_id_t *config, ss__file_id_t *weights);
/* Whether two identities are the same file, unchanged. */
bool ss__file_id_same(const ss__file_id_t *x, const ss__file_id_t *y);
/* A checksum of a's packed weights (FNV-1a over their bytes). */
uint64_t ss__adapter_sum(const ss_adapter_t *a);
/* Frees a's packed weights (it is cold afterwards). */
void ss__adapter_drop_weights(ss_adapter_t *a);

/* adapter_cache.c, with set_lock held: a enters (in_set) or leaves the
 * set (its resident bytes counted or not); make_room evicts the least
 * recently used unpinned in-set adapters until the resident bytes are
 * within the budget, and says (metric, log) when pinned ones keep them
 * over it.  publish updates the gauges. */
void ss__lora_cache_enter(ss_lora_t *l, ss_adapter_t *a);
void ss__lora_cache_leave(ss_lora_t *l, ss_adapter_t *a);
void ss__lora_cache_make_room(ss_lora_t *l);
void ss__lora_cache_publish(ss_lora_t *l);
/* With a budget, after reading many adapters (start, sync; a pool
 * thread): hands the heap's free pages back (malloc_trim), so the
 * process holds what stayed resident, not every adapter once read. */
void ss__lora_cache_trim(ss_lora_t *l);
/* Registers the residency families (ss_lora_metrics_init). */
int ss__lora_cache_metrics_init(ss_metrics_t *m, ss_lora_opts_t *o);
/* Looks up the residency metric series ([init], ss_lora_new). */
void ss__lora_cache_series(ss_lora_t *l);
/* Removes them (ss_lora_free). */
void ss__lora_cache_remove_series(ss_lora_t *l);

#endif
