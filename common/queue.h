/* SPDX-License-Identifier: Apache-2.0 */
#ifndef SS_COMMON_QUEUE_H
#define SS_COMMON_QUEUE_H

/*
 * A mutex-guarded hand-off queue: one thread pushes, another takes.
 *
 * The queue is intrusive: an item embeds an ss_qlink_t and the queue
 * links those, so pushing never allocates and cannot fail.  Items come out
 * oldest first.  ss_queue_pop_wait() blocks on the queue's condition
 * variable for a consumer thread of its own (a reaper, a job thread);
 * ss_queue_take_all() empties the queue in one lock for a consumer woken
 * by uv_async_send, whose wake-ups coalesce.  SS_QUEUE_ENTRY() turns a
 * link back into its item.
 *
 *   struct job { ...; ss_qlink_t link; };
 *   ss_queue_push(&q, &j->link);                     producer
 *   while ((l = ss_queue_pop_wait(&q)) != NULL)      consumer
 *       run(SS_QUEUE_ENTRY(l, struct job, link));
 *
 * Owners that keep more state under the same lock (counters, bounds) or
 * scan the queue take the lock themselves (ss_queue_lock) and use the
 * _locked calls; q->head, q->tail and link->next may be read then.
 *
 * An item is in at most one queue at a time; while queued, its link
 * belongs to the queue.  The queue owns no item: whoever destroys a queue
 * that is not empty drains it first.
 *
 * THREADS: everything is [any] except ss_queue_init/ss_queue_destroy
 * (one thread, with no other user); the _locked calls need the lock held.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct ss_qlink {
    struct ss_qlink *next;
} ss_qlink_t;

typedef struct ss_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* signalled on push and on close */
    ss_qlink_t *head;           /* oldest; guarded by lock */
    ss_qlink_t *tail;           /* newest; guarded by lock */
    size_t len;                 /* guarded by lock */
    bool closed;                /* guarded by lock */
} ss_queue_t;

/* The item that embeds link as its member. */
#define SS_QUEUE_ENTRY(link, type, member)                                  \
    ((type *)(void *)((char *)(link) - offsetof(type, member)))

void ss_queue_init(ss_queue_t *q);
/* Releases the lock and condition variable; the items still queued are
 * not touched (drain them first). */
void ss_queue_destroy(ss_queue_t *q);

/* Appends l and wakes one waiter.  Returns the length after the push (1:
 * the queue was empty, which is when a consumer may need waking).  Pushes
 * after close still queue: the owner drains them. */
size_t ss_queue_push(ss_queue_t *q, ss_qlink_t *l);
/* The oldest item, removed; NULL when empty.  Never blocks. */
ss_qlink_t *ss_queue_pop(ss_queue_t *q);
/* The oldest item, removed, waiting for one while the queue is empty and
 * open.  NULL once the queue is closed and empty. */
ss_qlink_t *ss_queue_pop_wait(ss_queue_t *q);
/* Every item, oldest first, as a chain linked by next (NULL-terminated);
 * the queue is empty after.  NULL when it was empty. */
ss_qlink_t *ss_queue_take_all(ss_queue_t *q);
/* Unlinks l when it is queued; false when it is not (already taken). */
bool ss_queue_remove(ss_queue_t *q, ss_qlink_t *l);
/* Wakes every waiter; ss_queue_pop_wait no longer blocks. */
void ss_queue_close(ss_queue_t *q);
size_t ss_queue_len(ss_queue_t *q);

/* ---- with the lock held ------------------------------------------------- */

void ss_queue_lock(ss_queue_t *q);
void ss_queue_unlock(ss_queue_t *q);
/* As ss_queue_push (it wakes a waiter too). */
size_t ss_queue_push_locked(ss_queue_t *q, ss_qlink_t *l);
ss_qlink_t *ss_queue_pop_locked(ss_queue_t *q);
/* Unlinks l, whose predecessor is prev (NULL when l is the head). */
void ss_queue_unlink_locked(ss_queue_t *q, ss_qlink_t *prev, ss_qlink_t *l);

#endif
