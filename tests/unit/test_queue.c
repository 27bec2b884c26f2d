/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The hand-off queue (common/queue.h): order, removal, take-all, the
 * locked calls, close, and a producer/consumer hand-off across threads
 * that must deliver every item exactly once, in order.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/queue.h"
#include "tests/tap.h"

typedef struct item {
    int v;
    ss_qlink_t link;
} item_t;

static int
val(ss_qlink_t *l)
{
    return l != NULL ? SS_QUEUE_ENTRY(l, item_t, link)->v : -1;
}

static void
test_fifo(void)
{
    item_t it[5];
    ss_queue_t q;
    ss_qlink_t *l;
    int i, order = 1;

    ss_queue_init(&q);
    ok(ss_queue_pop(&q) == NULL, "an empty queue pops NULL");
    is_int(ss_queue_len(&q), 0, "an empty queue has length 0");
    for (i = 0; i < 5; i++) {
        it[i].v = i;
        is_int(ss_queue_push(&q, &it[i].link), i + 1,
               "push %d returns the new length", i);
    }
    for (i = 0; i < 5; i++)
        order &= val(ss_queue_pop(&q)) == i;
    ok(order, "items come out oldest first");
    ok(ss_queue_pop(&q) == NULL && ss_queue_len(&q) == 0,
       "empty again after popping everything");

    for (i = 0; i < 5; i++)
        ss_queue_push(&q, &it[i].link);
    ok(ss_queue_remove(&q, &it[2].link), "remove a middle item");
    ok(ss_queue_remove(&q, &it[4].link), "remove the tail");
    ok(!ss_queue_remove(&q, &it[4].link), "removing it again says no");
    is_int(ss_queue_len(&q), 3, "length counts removals");
    ss_queue_push(&q, &it[4].link);
    l = ss_queue_take_all(&q);
    is_int(val(l), 0, "take_all: oldest first (0)");
    l = l->next;
    is_int(val(l), 1, "take_all: then 1");
    l = l->next;
    is_int(val(l), 3, "take_all: then 3 (2 was removed)");
    l = l->next;
    is_int(val(l), 4, "take_all: then 4, pushed after the tail went");
    ok(l->next == NULL, "take_all: the chain ends");
    ok(ss_queue_len(&q) == 0 && ss_queue_pop(&q) == NULL,
       "take_all empties the queue");
    ok(ss_queue_take_all(&q) == NULL, "take_all of an empty queue is NULL");

    ok(ss_queue_remove(&q, &it[0].link) == false,
       "remove from an empty queue says no");
    ss_queue_push(&q, &it[0].link);
    ok(ss_queue_remove(&q, &it[0].link) && q.head == NULL && q.tail == NULL,
       "removing the only item leaves head and tail NULL");
    ss_queue_push(&q, &it[1].link);
    is_int(val(ss_queue_pop(&q)), 1, "the queue works after that");
    ss_queue_destroy(&q);
}

static void
test_locked(void)
{
    item_t it[4];
    ss_queue_t q;
    ss_qlink_t *l, *prev = NULL;
    int i, sum = 0;

    ss_queue_init(&q);
    ss_queue_lock(&q);
    for (i = 0; i < 4; i++) {
        it[i].v = i + 1;
        ss_queue_push_locked(&q, &it[i].link);
    }
    /* Drop the even values while scanning, as an owner that filters its
     * queue under the lock does. */
    for (l = q.head; l != NULL;) {
        ss_qlink_t *next = l->next;

        if (val(l) % 2 == 0)
            ss_queue_unlink_locked(&q, prev, l);
        else
            prev = l;
        l = next;
    }
    is_int(q.len, 2, "unlink_locked keeps the length");
    is_int(val(q.tail), 3, "the tail follows an unlinked tail");
    while ((l = ss_queue_pop_locked(&q)) != NULL)
        sum = sum * 10 + val(l);
    ss_queue_unlock(&q);
    is_int(sum, 13, "the odd values remain, in order");
    ss_queue_destroy(&q);
}

/* ---- threads ------------------------------------------------------------ */

#define N_ITEMS 20000

static item_t items[N_ITEMS];

static void *
producer(void *arg)
{
    ss_queue_t *q = arg;

    for (int i = 0; i < N_ITEMS; i++) {
        items[i].v = i;
        ss_queue_push(q, &items[i].link);
        if (i % 1000 == 0)
            usleep(100);        /* let the consumer catch up and wait */
    }
    ss_queue_close(q);
    return NULL;
}

static void
test_handoff(void)
{
    ss_queue_t q;
    pthread_t t;
    ss_qlink_t *l;
    int n = 0, in_order = 1;

    ss_queue_init(&q);
    pthread_create(&t, NULL, producer, &q);
    /* pop_wait returns NULL only once the producer closed an empty
     * queue: every item must arrive, once, in order. */
    while ((l = ss_queue_pop_wait(&q)) != NULL) {
        in_order &= val(l) == n;
        n++;
    }
    pthread_join(t, NULL);
    is_int(n, N_ITEMS, "every item handed over once");
    ok(in_order, "in the order pushed");
    ss_queue_destroy(&q);
}

static void *
waiter(void *arg)
{
    ss_queue_t *q = arg;

    return ss_queue_pop_wait(q);
}

static void
test_close_wakes(void)
{
    ss_queue_t q;
    pthread_t t[2];
    void *r[2];
    item_t it = { 7, { NULL } };

    ss_queue_init(&q);
    pthread_create(&t[0], NULL, waiter, &q);
    pthread_create(&t[1], NULL, waiter, &q);
    usleep(20000);
    ss_queue_push(&q, &it.link);
    usleep(20000);
    ss_queue_close(&q);
    pthread_join(t[0], &r[0]);
    pthread_join(t[1], &r[1]);
    ok((r[0] == &it.link) != (r[1] == &it.link),
       "one waiter gets the item");
    ok(r[0] == NULL || r[1] == NULL, "close wakes the other with NULL");
    ok(ss_queue_pop_wait(&q) == NULL, "pop_wait on a closed empty queue "
       "does not block");
    ss_queue_push(&q, &it.link);
    is_int(val(ss_queue_pop_wait(&q)), 7, "a closed queue still hands over "
           "what is pushed");
    ss_queue_destroy(&q);
}

int
main(void)
{
    test_fifo();
    test_locked();
    test_handoff();
    test_close_wakes();
    return tap_done();
}
