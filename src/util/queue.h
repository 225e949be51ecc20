/*
 * Intrusive circular doubly linked queues, in the manner of libuv's uv__queue:
 * the node lives inside the object that sits in the queue, so queueing never
 * allocates. A queue head is a node whose next and prev point at itself when
 * empty.
 */
#ifndef EDDY_UTIL_QUEUE_H
#define EDDY_UTIL_QUEUE_H

#include <stddef.h>

typedef struct eddy__queue {
    struct eddy__queue *next;
    struct eddy__queue *prev;
} eddy__queue;

#define eddy__queue_data(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

#define eddy__queue_foreach(q, h) for ((q) = (h)->next; (q) != (h); (q) = (q)->next)

static inline void eddy__queue_init(eddy__queue *q)
{
    q->next = q;
    q->prev = q;
}

static inline int eddy__queue_empty(const eddy__queue *q)
{
    return q == q->next;
}

static inline eddy__queue *eddy__queue_head(const eddy__queue *q)
{
    return q->next;
}

static inline void eddy__queue_insert_tail(eddy__queue *h, eddy__queue *q)
{
    q->next = h;
    q->prev = h->prev;
    q->prev->next = q;
    h->prev = q;
}

static inline void eddy__queue_insert_head(eddy__queue *h, eddy__queue *q)
{
    q->next = h->next;
    q->prev = h;
    q->next->prev = q;
    h->next = q;
}

static inline void eddy__queue_remove(eddy__queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q;
    q->prev = q;
}

/* Move every node of h to the tail of n; h becomes empty. */
static inline void eddy__queue_move(eddy__queue *h, eddy__queue *n)
{
    if (eddy__queue_empty(h))
        return;
    eddy__queue *first = h->next, *last = h->prev;
    first->prev = n->prev;
    n->prev->next = first;
    last->next = n;
    n->prev = last;
    eddy__queue_init(h);
}

#endif /* EDDY_UTIL_QUEUE_H */
