#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <uv.h>

#include "exec/pool.h"

/* A job that records where and how often it ran. */
typedef struct tjob {
    eddy__job job;
    size_t index;
    struct fixture *fx;
    atomic_int works;
    int dones;
    uv_thread_t work_thread;
} tjob;

typedef struct fixture {
    uv_loop_t loop;
    uv_thread_t loop_thread;
    eddy__pool *pool;
    tjob *jobs;
    size_t njobs;
    size_t ndone;
    size_t *order; /* index of each job, in done order */
    int wrong_thread;
    size_t resubmit_at; /* the done of this index submits extra (when not SIZE_MAX) */
    tjob extra;
    size_t close_at; /* the done of this index closes the pool (when not SIZE_MAX) */
} fixture;

static void work_cb(eddy__job *job)
{
    tjob *t = (tjob *)job;
    t->work_thread = uv_thread_self();
    atomic_fetch_add(&t->works, 1);
}

static void done_cb(eddy__job *job)
{
    tjob *t = (tjob *)job;
    fixture *fx = t->fx;
    uv_thread_t self = uv_thread_self();
    if (!uv_thread_equal(&self, &fx->loop_thread))
        fx->wrong_thread++;
    if (uv_thread_equal(&t->work_thread, &fx->loop_thread))
        fx->wrong_thread++;
    t->dones++;
    fx->order[fx->ndone++] = t->index;
    if (t->index == fx->resubmit_at) {
        fx->extra.job.work = work_cb;
        fx->extra.job.done = done_cb;
        fx->extra.fx = fx;
        fx->extra.index = fx->njobs; /* one past the array */
        eddy__pool_submit(fx->pool, &fx->extra.job);
    }
    if (t->index == fx->close_at) {
        eddy__pool_close(fx->pool);
        fx->pool = NULL;
    }
}

static fixture *fixture_new(size_t njobs, unsigned nthreads)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fx->loop_thread = uv_thread_self();
    fx->pool = eddy__pool_new(&fx->loop, nthreads);
    assert_non_null(fx->pool);
    assert_int_equal(eddy__pool_threads(fx->pool), nthreads);
    fx->jobs = calloc(njobs, sizeof(*fx->jobs));
    fx->order = calloc(njobs + 1, sizeof(*fx->order));
    assert_non_null(fx->jobs);
    assert_non_null(fx->order);
    fx->njobs = njobs;
    fx->resubmit_at = SIZE_MAX;
    fx->close_at = SIZE_MAX;
    for (size_t i = 0; i < njobs; i++) {
        fx->jobs[i].job.work = work_cb;
        fx->jobs[i].job.done = done_cb;
        fx->jobs[i].index = i;
        fx->jobs[i].fx = fx;
    }
    return fx;
}

/* Close the pool if still open, let the loop run its close callback, check
 * that the loop has nothing left, free everything. */
static void fixture_free(fixture *fx)
{
    eddy__pool_close(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx->jobs);
    free(fx->order);
    free(fx);
}

static void check_all_once(fixture *fx)
{
    assert_int_equal(fx->wrong_thread, 0);
    for (size_t i = 0; i < fx->njobs; i++) {
        assert_int_equal(atomic_load(&fx->jobs[i].works), 1);
        assert_int_equal(fx->jobs[i].dones, 1);
    }
}

static void test_many_jobs_once(void **state)
{
    (void)state;
    const size_t n = 100000;
    fixture *fx = fixture_new(n, 4);
    for (size_t i = 0; i < n; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    eddy__pool_flush(fx->pool);
    assert_int_equal(eddy__pool_pending(fx->pool), n);
    /* The pool keeps the loop alive exactly while jobs are pending. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, n);
    assert_int_equal(eddy__pool_pending(fx->pool), 0);
    check_all_once(fx);
    fixture_free(fx);
}

static void test_one_thread_fifo_batched(void **state)
{
    (void)state;
    const size_t n = 1000;
    fixture *fx = fixture_new(n, 1);
    for (size_t i = 0; i < n; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    eddy__pool_flush(fx->pool);
    /* Count the loop turns that delivered something: completions arrive in
     * batches, not one wake-up per job. Each UV_RUN_ONCE blocks until the
     * async handle fires. */
    size_t turns = 0;
    while (eddy__pool_pending(fx->pool) > 0) {
        size_t before = fx->ndone;
        uv_run(&fx->loop, UV_RUN_ONCE);
        if (fx->ndone > before)
            turns++;
    }
    assert_true(turns < n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(fx->order[i], i); /* one worker: completion order = submit order */
    check_all_once(fx);
    fixture_free(fx);
}

/* Work that takes a little while, so that completions pile up. */
static void slow_work_cb(eddy__job *job)
{
    work_cb(job);
    volatile unsigned x = 0;
    for (unsigned i = 0; i < 20000; i++)
        x += i;
}

static uv_sem_t sentinel_sem;

static void sentinel_work_cb(eddy__job *job)
{
    work_cb(job);
    uv_sem_post(&sentinel_sem);
}

static void test_batching(void **state)
{
    (void)state;
    const size_t n = 200;
    fixture *fx = fixture_new(n, 1);
    assert_int_equal(uv_sem_init(&sentinel_sem, 0), 0);
    for (size_t i = 0; i < n; i++) {
        fx->jobs[i].job.work = i == n - 1 ? sentinel_work_cb : work_cb;
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    }
    eddy__pool_flush(fx->pool);
    /* The single worker runs the jobs in order, so when the last one runs,
     * the completions of all the others are queued. The loop has not run
     * yet: one async callback must now deliver all of them. */
    uv_sem_wait(&sentinel_sem);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    assert_true(fx->ndone >= n - 1);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, n);
    uv_sem_destroy(&sentinel_sem);
    check_all_once(fx);
    fixture_free(fx);
}

static void test_several_threads(void **state)
{
    (void)state;
    const size_t n = 50000;
    fixture *fx = fixture_new(n, 8);
    /* Submit in uneven bursts, flushing between them, some left to auto-flush. */
    size_t i = 0;
    while (i < n) {
        size_t burst = 1 + (i * 7919) % 300;
        for (size_t k = 0; k < burst && i < n; k++, i++)
            eddy__pool_submit(fx->pool, &fx->jobs[i].job);
        if (i % 3 == 0)
            eddy__pool_flush(fx->pool);
        uv_run(&fx->loop, UV_RUN_NOWAIT);
    }
    eddy__pool_flush(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, n);
    check_all_once(fx);
    /* Every index delivered exactly once. */
    char *seen = calloc(n, 1);
    for (size_t k = 0; k < n; k++) {
        assert_true(fx->order[k] < n);
        assert_int_equal(seen[fx->order[k]]++, 0);
    }
    free(seen);
    fixture_free(fx);
}

static void test_autoflush(void **state)
{
    (void)state;
    fixture *fx = fixture_new(64, 2);
    for (size_t i = 0; i < 64; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    /* No explicit flush: the 64th submit handed the batch to the workers. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, 64);
    check_all_once(fx);
    fixture_free(fx);
}

static void test_close_delivers_pending(void **state)
{
    (void)state;
    const size_t n = 5000;
    fixture *fx = fixture_new(n, 3);
    for (size_t i = 0; i < n; i++) {
        fx->jobs[i].job.work = i % 2 ? slow_work_cb : work_cb;
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    }
    /* Some flushed by the auto-flush, the tail (5000 % 64) not flushed at all. */
    assert_int_equal(eddy__pool_pending(fx->pool), n);
    eddy__pool_close(fx->pool);
    fx->pool = NULL;
    assert_int_equal(fx->ndone, n); /* every done ran inside close */
    check_all_once(fx);
    fixture_free(fx);
}

static void test_submit_from_done(void **state)
{
    (void)state;
    /* One worker: with two, the worker holding job 0 may be preempted while
     * the other runs the rest and the extra job, which then does not end
     * last (seen under ASan on a loaded machine). */
    fixture *fx = fixture_new(10, 1);
    fx->resubmit_at = 3;
    for (size_t i = 0; i < 10; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    eddy__pool_flush(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, 11);
    assert_int_equal(fx->extra.dones, 1);
    assert_int_equal(atomic_load(&fx->extra.works), 1);
    assert_int_equal(fx->order[10], 10); /* the extra job came last */
    check_all_once(fx);
    fixture_free(fx);
}

static void test_submit_from_done_during_close(void **state)
{
    (void)state;
    fixture *fx = fixture_new(10, 1);
    fx->resubmit_at = 9;
    for (size_t i = 0; i < 10; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    eddy__pool_close(fx->pool);
    fx->pool = NULL;
    assert_int_equal(fx->ndone, 11);
    assert_int_equal(fx->extra.dones, 1);
    check_all_once(fx);
    fixture_free(fx);
}

static void test_close_from_done(void **state)
{
    (void)state;
    const size_t n = 300;
    fixture *fx = fixture_new(n, 2);
    fx->close_at = 0;
    for (size_t i = 0; i < n; i++)
        eddy__pool_submit(fx->pool, &fx->jobs[i].job);
    eddy__pool_flush(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_null(fx->pool);
    assert_int_equal(fx->ndone, n);
    check_all_once(fx);
    fixture_free(fx);
}

static void test_pending_count(void **state)
{
    (void)state;
    fixture *fx = fixture_new(3, 1);
    assert_int_equal(eddy__pool_pending(fx->pool), 0);
    /* An idle pool does not keep the loop alive. */
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    eddy__pool_submit(fx->pool, &fx->jobs[0].job);
    assert_int_equal(eddy__pool_pending(fx->pool), 1);
    eddy__pool_submit(fx->pool, &fx->jobs[1].job);
    eddy__pool_flush(fx->pool);
    eddy__pool_submit(fx->pool, &fx->jobs[2].job);
    assert_int_equal(eddy__pool_pending(fx->pool), 3);
    eddy__pool_flush(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(eddy__pool_pending(fx->pool), 0);
    assert_int_equal(fx->ndone, 3);
    check_all_once(fx);
    fixture_free(fx);
}

/* Jobs behind a barrier wait until eddy__pool_synced()
 * reaches it, in any order of barriers; jobs without one go by meanwhile.
 * When the barrier cannot come (sync failed, or close), work is skipped and
 * the job marked canceled, and done still runs. */
static void test_barriers(void **state)
{
    (void)state;
    fixture *fx = fixture_new(6, 3);
    eddy__pool_submit_after(fx->pool, &fx->jobs[0].job, 2);
    eddy__pool_submit_after(fx->pool, &fx->jobs[1].job, 1);
    eddy__pool_submit(fx->pool, &fx->jobs[2].job);
    eddy__pool_flush(fx->pool);
    /* Only the job without a barrier completes. */
    while (fx->ndone < 1)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[0], 2);
    assert_int_equal(atomic_load(&fx->jobs[0].works), 0);
    assert_int_equal(atomic_load(&fx->jobs[1].works), 0);
    eddy__pool_synced(fx->pool, 1);
    while (fx->ndone < 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[1], 1);
    assert_int_equal(atomic_load(&fx->jobs[0].works), 0);
    eddy__pool_synced(fx->pool, 3); /* past it: runs too */
    while (fx->ndone < 3)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[2], 0);
    /* A barrier already reached does not wait. */
    eddy__pool_submit_after(fx->pool, &fx->jobs[3].job, 3);
    eddy__pool_flush(fx->pool);
    while (fx->ndone < 4)
        uv_run(&fx->loop, UV_RUN_ONCE);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(atomic_load(&fx->jobs[i].works), 1);
        assert_false(fx->jobs[i].job.canceled);
    }
    /* A failed sync cancels the job waiting for it; close cancels another. */
    eddy__pool_submit_after(fx->pool, &fx->jobs[4].job, 4);
    eddy__pool_flush(fx->pool);
    eddy__pool_sync_failed(fx->pool);
    while (fx->ndone < 5)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->jobs[4].job.canceled);
    assert_int_equal(atomic_load(&fx->jobs[4].works), 0);
    fixture_free(fx);

    fx = fixture_new(1, 1);
    eddy__pool_submit_after(fx->pool, &fx->jobs[0].job, 7);
    eddy__pool_flush(fx->pool);
    eddy__pool_close(fx->pool); /* does not wait for ever */
    fx->pool = NULL;
    assert_int_equal(fx->jobs[0].dones, 1);
    assert_true(fx->jobs[0].job.canceled);
    assert_int_equal(atomic_load(&fx->jobs[0].works), 0);
    fixture_free(fx);
}

/* A job behind a barrier holds no worker: with one thread, jobs submitted
 * after it run while it waits, and it runs once its barrier is reached. */
static void test_held_job_takes_no_worker(void **state)
{
    (void)state;
    fixture *fx = fixture_new(4, 1);
    eddy__pool_submit_after(fx->pool, &fx->jobs[0].job, 5);
    eddy__pool_flush(fx->pool);
    eddy__pool_submit_after(fx->pool, &fx->jobs[1].job, 9);
    eddy__pool_submit(fx->pool, &fx->jobs[2].job);
    eddy__pool_submit(fx->pool, &fx->jobs[3].job);
    eddy__pool_flush(fx->pool);
    while (fx->ndone < 2)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[0], 2);
    assert_int_equal(fx->order[1], 3);
    assert_int_equal(atomic_load(&fx->jobs[0].works), 0);
    assert_int_equal(atomic_load(&fx->jobs[1].works), 0);
    eddy__pool_synced(fx->pool, 5); /* releases job 0 only */
    while (fx->ndone < 3)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[2], 0);
    assert_int_equal(atomic_load(&fx->jobs[1].works), 0);
    eddy__pool_synced(fx->pool, 9);
    while (fx->ndone < 4)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->order[3], 1);
    for (size_t i = 0; i < 4; i++)
        assert_false(fx->jobs[i].job.canceled);
    fixture_free(fx);
}

static void test_new_and_close_idle(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(eddy__pool_new(&loop, 0));
    eddy__pool *pool = eddy__pool_new(&loop, 2);
    assert_non_null(pool);
    eddy__pool_close(pool);
    eddy__pool_close(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

#ifdef __linux__
#include <sys/prctl.h>

static atomic_long slack_seen;

static void slack_work(eddy__job *job)
{
    (void)job;
    atomic_store(&slack_seen, (long)prctl(PR_GET_TIMERSLACK, 0UL, 0UL, 0UL, 0UL));
}

/* Workers run the agents' calls with precise timers: a call's 10 ms sleep
 * must not end up to 50 us late (Linux's default timer slack). */
static void test_workers_have_precise_timers(void **state)
{
    (void)state;
    fixture *fx = fixture_new(1, 1);
    fx->jobs[0].job.work = slack_work;
    atomic_store(&slack_seen, -1);
    eddy__pool_submit(fx->pool, &fx->jobs[0].job);
    eddy__pool_flush(fx->pool);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(atomic_load(&slack_seen), 1);
    fixture_free(fx);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_jobs_once),
        cmocka_unit_test(test_one_thread_fifo_batched),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_several_threads),
        cmocka_unit_test(test_autoflush),
        cmocka_unit_test(test_close_delivers_pending),
        cmocka_unit_test(test_submit_from_done),
        cmocka_unit_test(test_submit_from_done_during_close),
        cmocka_unit_test(test_close_from_done),
        cmocka_unit_test(test_pending_count),
        cmocka_unit_test(test_new_and_close_idle),
        cmocka_unit_test(test_barriers),
        cmocka_unit_test(test_held_job_takes_no_worker),
#ifdef __linux__
        cmocka_unit_test(test_workers_have_precise_timers),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
