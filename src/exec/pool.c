/*
 * Worker pool (see pool.h for who runs where, lock order and shutdown).
 *
 * The async handle is referenced on the loop only while jobs are pending, in
 * the manner of libuv's own threadpool, so an idle pool does not keep
 * uv_run(UV_RUN_DEFAULT) from returning.
 */
#include "exec/pool.h"
#include "util/sem.h"
#include "util/thread.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Submit flushes by itself once this many jobs wait in the local list. */
#define POOL_AUTOFLUSH 64

struct eddy__pool {
    /* Loop thread only. */
    uv_loop_t *loop;
    uv_thread_t owner;
    uv_async_t async;
    eddy__queue local; /* submitted, not flushed yet */
    size_t nlocal;
    uint64_t local_barrier; /* the highest barrier in local */
    size_t pending;         /* submitted, done not called yet */
    eddy__queue delivering; /* completions taken from the workers, done not called yet */
    int closing;            /* also read by workers, under clock */

    /* Queue lock: the shared job queue. */
    uv_mutex_t qlock;
    eddy__queue queue;
    int stop;
    /* One post per job put on the queue, and one per worker at the stop: a
     * worker that takes one finds a job, or the stop (see worker). */
    eddy__sem qsem;
    /* Barriers (under the queue lock too): */
    eddy__queue held; /* jobs whose barrier is not reached, by barrier */
    uint64_t synced;  /* the newest durable commit (eddy__pool_synced) */
    int bfail;        /* barriers not reached will never be */
    int cancel;       /* the runtime stops: jobs no worker has taken are skipped */

    /* Completion lock: finished jobs waiting for the loop. */
    uv_mutex_t clock;
    uv_cond_t ccond; /* signalled per completion while close waits */
    eddy__queue completed;
    atomic_int waiting; /* completed holds jobs the loop has not taken (a hint) */

    unsigned nthreads;
    uv_thread_t threads[];
};

/* After the queue lock is let go: n jobs were put on the queue. A post
 * makes a system call only when a worker sleeps on the semaphore, and one
 * for the whole batch (util/sem.h: a flush of a loop turn's calls, or the
 * jobs a sync released, woke its workers with a futex call each before:
 * W3 at C = 256 ~1.4 per run on the mailbox, most of its futex calls); a
 * busy worker takes its post without one when it comes back. Workers sleep
 * on a semaphore rather than a condition variable with the queue lock:
 * woken from a condition variable, glibc takes the mutex back marked
 * contended, so every unlock after it was a futex call that woke no one
 * (one per job), and signalled under the lock, the woken worker slept once
 * more on it (W3 at 256 threads: 5.0 context switches and 75 us of CPU per
 * run, against 3.4 and 65 us once posted after the unlock, and fewer with
 * no condition variable). */
static void wake_workers(eddy__pool *pool, size_t n)
{
    eddy__sem_post(&pool->qsem, n);
}

/* Under the queue lock: job waits in held, kept in barrier order (barriers
 * mostly come in rising order, so the search from the tail is short). */
static void hold(eddy__pool *pool, eddy__job *job)
{
    eddy__queue *q = pool->held.prev;
    while (q != &pool->held && eddy__queue_data(q, eddy__job, node)->barrier > job->barrier)
        q = q->prev;
    eddy__queue_insert_tail(q->next, &job->node);
}

static void worker(void *arg)
{
    eddy__thread_name("eddy-worker");
    eddy__thread_precise_timers();
    eddy__pool *pool = arg;
    for (;;) {
        /* Each post stands for a job on the queue, or for the stop: with
         * the queue empty, this post was the stop's (the queue holds at
         * least as many jobs as there are posts not yet taken for them). */
        eddy__sem_wait(&pool->qsem);
        uv_mutex_lock(&pool->qlock);
        if (eddy__queue_empty(&pool->queue)) {
            assert(pool->stop);
            uv_mutex_unlock(&pool->qlock);
            break;
        }
        eddy__queue *q = eddy__queue_head(&pool->queue);
        eddy__queue_remove(q);
        eddy__job *job = eddy__queue_data(q, eddy__job, node);
        /* Queued with its barrier not reached only after a failed sync. */
        job->canceled = pool->cancel || job->barrier > pool->synced;
        uv_mutex_unlock(&pool->qlock);

        if (!job->canceled)
            job->work(job);

        uv_mutex_lock(&pool->clock);
        int was_empty = eddy__queue_empty(&pool->completed);
        eddy__queue_insert_tail(&pool->completed, &job->node);
        if (was_empty)
            atomic_store_explicit(&pool->waiting, 1, memory_order_relaxed);
        if (pool->closing)
            uv_cond_signal(&pool->ccond);
        uv_mutex_unlock(&pool->clock);
        if (was_empty)
            uv_async_send(&pool->async);
    }
}

/* Stop the workers once the queue is empty, and wait for them. */
static void stop_workers(eddy__pool *pool, unsigned n)
{
    uv_mutex_lock(&pool->qlock);
    pool->stop = 1;
    uv_mutex_unlock(&pool->qlock);
    wake_workers(pool, n);
    for (unsigned i = 0; i < n; i++)
        uv_thread_join(&pool->threads[i]);
}

static void destroy_locks(eddy__pool *pool)
{
    uv_cond_destroy(&pool->ccond);
    uv_mutex_destroy(&pool->clock);
    eddy__sem_destroy(&pool->qsem);
    uv_mutex_destroy(&pool->qlock);
}

/* Take the finished jobs and call done for each, in completion order. The
 * list being delivered lives in the pool so that a done callback may call
 * eddy__pool_close(), which then delivers the rest of it. */
static void deliver(eddy__pool *pool)
{
    uv_mutex_lock(&pool->clock);
    eddy__queue_move(&pool->completed, &pool->delivering);
    atomic_store_explicit(&pool->waiting, 0, memory_order_relaxed);
    uv_mutex_unlock(&pool->clock);
    while (!eddy__queue_empty(&pool->delivering)) {
        eddy__queue *q = eddy__queue_head(&pool->delivering);
        eddy__queue_remove(q);
        eddy__job *job = eddy__queue_data(q, eddy__job, node);
        assert(pool->pending > 0);
        if (--pool->pending == 0)
            uv_unref((uv_handle_t *)&pool->async);
        job->done(job);
    }
}

static void on_async(uv_async_t *handle)
{
    eddy__pool *pool = handle->data;
    deliver(pool);
    /* Jobs that done callbacks submitted start now rather than a turn later.
     * (When a done callback closed the pool, nlocal is 0 here.) */
    if (pool->nlocal > 0)
        eddy__pool_flush(pool);
}

static void on_close(uv_handle_t *handle)
{
    free(handle->data);
}

eddy__pool *eddy__pool_new(uv_loop_t *loop, unsigned nthreads)
{
    if (nthreads == 0)
        return NULL;
    eddy__pool *pool = calloc(1, sizeof(*pool) + nthreads * sizeof(uv_thread_t));
    if (pool == NULL)
        return NULL;
    pool->loop = loop;
    pool->owner = uv_thread_self();
    pool->nthreads = nthreads;
    eddy__queue_init(&pool->local);
    eddy__queue_init(&pool->queue);
    eddy__queue_init(&pool->held);
    eddy__queue_init(&pool->completed);
    eddy__queue_init(&pool->delivering);

    unsigned started = 0;
    if (uv_mutex_init(&pool->qlock) != 0)
        goto fail_qlock;
    if (eddy__sem_init(&pool->qsem) != 0)
        goto fail_qsem;
    if (uv_mutex_init(&pool->clock) != 0)
        goto fail_clock;
    if (uv_cond_init(&pool->ccond) != 0)
        goto fail_ccond;
    /* Workers touch the async handle only after a job was submitted, so they
     * may start before it exists; this keeps the unwinding free of uv_close. */
    for (; started < nthreads; started++)
        if (uv_thread_create(&pool->threads[started], worker, pool) != 0)
            goto fail;
    if (uv_async_init(loop, &pool->async, on_async) != 0)
        goto fail;
    pool->async.data = pool;
    uv_unref((uv_handle_t *)&pool->async);
    return pool;

fail:
    stop_workers(pool, started);
    uv_cond_destroy(&pool->ccond);
fail_ccond:
    uv_mutex_destroy(&pool->clock);
fail_clock:
    eddy__sem_destroy(&pool->qsem);
fail_qsem:
    uv_mutex_destroy(&pool->qlock);
fail_qlock:
    free(pool);
    return NULL;
}

void eddy__pool_submit_after(eddy__pool *pool, eddy__job *job, uint64_t barrier)
{
    uv_thread_t self = uv_thread_self();
    assert(uv_thread_equal(&self, &pool->owner) && "eddy__pool_submit off the loop thread");
    (void)self;
    assert(job->work != NULL && job->done != NULL);
    if (pool->pending++ == 0)
        uv_ref((uv_handle_t *)&pool->async);
    job->barrier = barrier;
    job->canceled = 0;
    if (barrier > pool->local_barrier)
        pool->local_barrier = barrier;
    eddy__queue_insert_tail(&pool->local, &job->node);
    if (++pool->nlocal >= POOL_AUTOFLUSH)
        eddy__pool_flush(pool);
}

void eddy__pool_submit(eddy__pool *pool, eddy__job *job)
{
    eddy__pool_submit_after(pool, job, 0);
}

void eddy__pool_flush(eddy__pool *pool)
{
    uv_thread_t self = uv_thread_self();
    assert(uv_thread_equal(&self, &pool->owner) && "eddy__pool_flush off the loop thread");
    (void)self;
    size_t n = pool->nlocal;
    if (n == 0)
        return;
    pool->nlocal = 0;
    uv_mutex_lock(&pool->qlock);
    if (pool->synced >= pool->local_barrier || pool->bfail || pool->cancel) {
        eddy__queue_move(&pool->local, &pool->queue);
    } else {
        /* Jobs whose barrier is not reached wait in held, not on a worker:
         * a worker is woken once, when the job can run. */
        n = 0;
        while (!eddy__queue_empty(&pool->local)) {
            eddy__queue *q = eddy__queue_head(&pool->local);
            eddy__queue_remove(q);
            eddy__job *job = eddy__queue_data(q, eddy__job, node);
            if (job->barrier > pool->synced) {
                hold(pool, job);
            } else {
                eddy__queue_insert_tail(&pool->queue, q);
                n++;
            }
        }
    }
    pool->local_barrier = 0;
    uv_mutex_unlock(&pool->qlock);
    wake_workers(pool, n);
}

void eddy__pool_synced(eddy__pool *pool, uint64_t txn)
{
    size_t n = 0;
    uv_mutex_lock(&pool->qlock);
    if (txn > pool->synced) {
        pool->synced = txn;
        while (!eddy__queue_empty(&pool->held)) {
            eddy__queue *q = eddy__queue_head(&pool->held);
            if (eddy__queue_data(q, eddy__job, node)->barrier > txn)
                break;
            eddy__queue_remove(q);
            eddy__queue_insert_tail(&pool->queue, q);
            n++;
        }
    }
    uv_mutex_unlock(&pool->qlock);
    wake_workers(pool, n);
}

static void cancel_held(eddy__pool *pool, int *flag)
{
    uv_mutex_lock(&pool->qlock);
    *flag = 1;
    size_t n = 0;
    for (eddy__queue *q = eddy__queue_head(&pool->held); q != &pool->held; q = q->next)
        n++;
    eddy__queue_move(&pool->held, &pool->queue); /* to be canceled */
    uv_mutex_unlock(&pool->qlock);
    wake_workers(pool, n);
}

void eddy__pool_sync_failed(eddy__pool *pool)
{
    cancel_held(pool, &pool->bfail);
}

void eddy__pool_cancel(eddy__pool *pool)
{
    cancel_held(pool, &pool->cancel);
}

int eddy__pool_completions_waiting(eddy__pool *pool)
{
    return atomic_load_explicit(&pool->waiting, memory_order_relaxed);
}

size_t eddy__pool_pending(const eddy__pool *pool)
{
    return pool->pending;
}

unsigned eddy__pool_threads(const eddy__pool *pool)
{
    return pool->nthreads;
}

void eddy__pool_close(eddy__pool *pool)
{
    if (pool == NULL)
        return;
    uv_thread_t self = uv_thread_self();
    assert(uv_thread_equal(&self, &pool->owner) && "eddy__pool_close off the loop thread");
    (void)self;

    /* Jobs waiting for a barrier would wait for ever: cancel them. */
    eddy__pool_sync_failed(pool);
    /* Deliver completions until nothing is pending, waiting on ccond between
     * batches. Done callbacks may submit more jobs; they are flushed and
     * waited for too. The workers are still running here. */
    uv_mutex_lock(&pool->clock);
    pool->closing = 1;
    uv_mutex_unlock(&pool->clock);
    for (;;) {
        eddy__pool_flush(pool);
        if (pool->pending == 0)
            break;
        if (eddy__queue_empty(&pool->delivering)) {
            uv_mutex_lock(&pool->clock);
            while (eddy__queue_empty(&pool->completed))
                uv_cond_wait(&pool->ccond, &pool->clock);
            uv_mutex_unlock(&pool->clock);
        }
        deliver(pool);
    }

    stop_workers(pool, pool->nthreads);
    destroy_locks(pool);
    /* pending is 0, so the handle is unreferenced; closing it still needs one
     * more loop turn, which frees the pool. */
    uv_close((uv_handle_t *)&pool->async, on_close);
}
