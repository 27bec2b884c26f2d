/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hand-off queue (queue.h).
 *
 * DESIGN: a singly linked FIFO with head and tail pointers under one
 * mutex, and a condition variable for consumers that block.  Pushing
 * signals one waiter (a hand-off has one taker); closing broadcasts.  The
 * length is kept so owners can bound a queue or report its depth without
 * walking it.
 *
 * THREADS: see queue.h; the lock guards every field but itself.
 */
#include "common/queue.h"

void
ss_queue_init(ss_queue_t *q)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->head = q->tail = NULL;
    q->len = 0;
    q->closed = false;
}

void
ss_queue_destroy(ss_queue_t *q)
{
    if (q == NULL)
        return;
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
}

void
ss_queue_lock(ss_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
}

void
ss_queue_unlock(ss_queue_t *q)
{
    pthread_mutex_unlock(&q->lock);
}

size_t
ss_queue_push_locked(ss_queue_t *q, ss_qlink_t *l)
{
    l->next = NULL;
    if (q->tail != NULL)
        q->tail->next = l;
    else
        q->head = l;
    q->tail = l;
    pthread_cond_signal(&q->cond);
    return ++q->len;
}

ss_qlink_t *
ss_queue_pop_locked(ss_queue_t *q)
{
    ss_qlink_t *l = q->head;

    if (l != NULL)
        ss_queue_unlink_locked(q, NULL, l);
    return l;
}

void
ss_queue_unlink_locked(ss_queue_t *q, ss_qlink_t *prev, ss_qlink_t *l)
{
    if (prev != NULL)
        prev->next = l->next;
    else
        q->head = l->next;
    if (q->tail == l)
        q->tail = prev;
    l->next = NULL;
    q->len--;
}

size_t
ss_queue_push(ss_queue_t *q, ss_qlink_t *l)
{
    size_t n;

    pthread_mutex_lock(&q->lock);
    n = ss_queue_push_locked(q, l);
    pthread_mutex_unlock(&q->lock);
    return n;
}

ss_qlink_t *
ss_queue_pop(ss_queue_t *q)
{
    ss_qlink_t *l;

    pthread_mutex_lock(&q->lock);
    l = ss_queue_pop_locked(q);
    pthread_mutex_unlock(&q->lock);
    return l;
}

ss_qlink_t *
ss_queue_pop_wait(ss_queue_t *q)
{
    ss_qlink_t *l;

    pthread_mutex_lock(&q->lock);
    while (q->head == NULL && !q->closed)
        pthread_cond_wait(&q->cond, &q->lock);
    l = ss_queue_pop_locked(q);
    pthread_mutex_unlock(&q->lock);
    return l;
}

ss_qlink_t *
ss_queue_take_all(ss_queue_t *q)
{
    ss_qlink_t *l;

    pthread_mutex_lock(&q->lock);
    l = q->head;
    q->head = q->tail = NULL;
    q->len = 0;
    pthread_mutex_unlock(&q->lock);
    return l;
}

bool
ss_queue_remove(ss_queue_t *q, ss_qlink_t *l)
{
    ss_qlink_t *prev = NULL, *x;

    pthread_mutex_lock(&q->lock);
    for (x = q->head; x != NULL && x != l; x = x->next)
        prev = x;
    if (x != NULL)
        ss_queue_unlink_locked(q, prev, x);
    pthread_mutex_unlock(&q->lock);
    return x != NULL;
}

void
ss_queue_close(ss_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

size_t
ss_queue_len(ss_queue_t *q)
{
    size_t n;

    pthread_mutex_lock(&q->lock);
    n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}
