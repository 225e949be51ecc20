/*
 * Worker pool for the bodies of async calls, with completions signalled back
 * to the loop.
 *
 * Design notes
 * ------------
 * Who runs where: eddy__pool_submit() and eddy__pool_flush() run on the loop
 * (mailbox) thread; job->work runs on a worker; job->done runs on the loop
 * thread, in a loop turn after the work finished.
 *
 * Submission is batched: submit appends to a loop-local list without locking;
 * flush (called once per loop turn by the operator, and by submit itself when
 * the list grows long) moves the list to the shared queue under one lock and,
 * with the lock let go, posts the workers' semaphore once per new job: a
 * post wakes a sleeping worker, or is taken without a system call by a busy
 * one when it comes back for work.
 *
 * Completion: a worker appends the finished job to the completion list under
 * the completion lock, and calls uv_async_send() only when the list was empty
 * (libuv coalesces wake-ups anyway; this saves the write). The loop's async
 * callback takes the whole list at once and calls done for each job in the
 * order they completed, then flushes the jobs those done callbacks submitted.
 * Nothing polls. The async handle holds a reference on the loop only while
 * jobs are pending, so an idle pool does not keep uv_run(UV_RUN_DEFAULT) alive.
 *
 * Barriers: a job submitted with eddy__pool_submit_after() carries the commit
 * that must be durable before its work runs. Flushed before that, it waits in
 * a held list (under the queue lock, in barrier order) rather than on a
 * worker, so it occupies no thread; eddy__pool_synced(), called by the
 * syncer, moves the jobs it reaches to the queue and wakes a worker for
 * each: the hand-over overlaps the disk's sync, and the job's worker is
 * woken once. A failed sync or close cancels held jobs: work is skipped,
 * done still runs.
 *
 * Lock order: the queue lock and the completion lock are never held together,
 * and callers hold no lock of theirs when they call in (the syncer lets its
 * own go before eddy__pool_synced).
 *
 * Shutdown: eddy__pool_close() lets queued jobs run and delivers their
 * completions (done callbacks run inside close, and may still submit jobs:
 * close waits for those too; the loop thread blocks on a condition variable
 * meanwhile), then joins the workers and closes the async handle; the loop must then run once more
 * for the handle close callback before the loop closes (uv_run(loop, UV_RUN_NOWAIT) or
 * UV_RUN_DEFAULT once nothing else is active). Close may be called from a done callback.
 */
#ifndef EDDY_EXEC_POOL_H
#define EDDY_EXEC_POOL_H

#include <stdint.h>
#include <uv.h>

#include "util/queue.h"

typedef struct eddy__pool eddy__pool;

typedef struct eddy__job {
    eddy__queue node;                    /* owned by the pool while submitted */
    void (*work)(struct eddy__job *job); /* runs on a worker thread */
    void (*done)(struct eddy__job *job); /* runs on the loop thread */
    /* Set by submit: */
    uint64_t barrier; /* 0, or the commit that must be durable before work runs */
    int canceled;     /* the barrier can no longer be reached: work was skipped */
} eddy__job;

/* New pool with nthreads workers (>= 1) attached to loop. Call it on the loop
 * thread: the other loop-thread calls assert that they run on the thread that
 * created the pool. NULL on failure (nthreads 0, ENOMEM or thread creation). */
eddy__pool *eddy__pool_new(uv_loop_t *loop, unsigned nthreads);

/* Queue job (loop thread only). job->work and job->done must be set. The job
 * memory must stay valid until done has been called. Submit flushes by itself
 * when 64 jobs wait unflushed. May be called from a done callback. */
void eddy__pool_submit(eddy__pool *pool, eddy__job *job);

/* As submit, but work runs only once commit barrier is durable
 * (eddy__pool_synced() reached it); until then the job is held in the pool,
 * on its way while the disk syncs, and no worker waits for it. When the barrier can
 * no longer be reached (eddy__pool_sync_failed(), or close), work is skipped
 * and job->canceled set before done runs. barrier 0 is plain submit. */
void eddy__pool_submit_after(eddy__pool *pool, eddy__job *job, uint64_t barrier);

/* Hand the jobs submitted since the last flush to the workers (loop thread). */
void eddy__pool_flush(eddy__pool *pool);

/* Jobs submitted whose done callback has not run yet (loop thread). A job no
 * longer counts once its done callback has been entered. */
size_t eddy__pool_pending(const eddy__pool *pool);

/* 1 when finished jobs wait for the loop to take them (loop thread; a hint,
 * read without a lock: the loop's next poll delivers them). */
int eddy__pool_completions_waiting(eddy__pool *pool);

/* Number of worker threads. */
unsigned eddy__pool_threads(const eddy__pool *pool);

/* Commits up to txn are durable: jobs whose barrier it reaches may run (any
 * thread; the value only goes up). */
void eddy__pool_synced(eddy__pool *pool, uint64_t txn);

/* No further commit will be made durable: jobs waiting on a barrier are
 * canceled (any thread). */
void eddy__pool_sync_failed(eddy__pool *pool);

/* The runtime stops: every job no worker has taken yet, held or queued, or
 * submitted from now on, is canceled (skipped, job->canceled set); those
 * running finish (any thread). Without it a stop waited for every queued
 * call to run, one worker's turn after another. */
void eddy__pool_cancel(eddy__pool *pool);

/* Flush, finish every job, deliver their completions, join the workers,
 * close the async handle and free the pool (its memory is released by the
 * handle's close callback). NULL is a no-op. */
void eddy__pool_close(eddy__pool *pool);

#endif /* EDDY_EXEC_POOL_H */
