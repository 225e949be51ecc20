#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <uv.h>

#include "util/sem.h"

/*
 * The batch semaphore (src/util/sem.h). A lost wake-up shows as a waiter
 * that never returns: every test waits for its threads through a watchdog
 * that fails the test after WATCHDOG_MS instead of hanging ctest.
 */
#define WATCHDOG_MS 30000

typedef struct shared {
    eddy__sem sem;
    atomic_int taken; /* waits that returned */
    int waits_each;   /* waits per waiter thread */
    uv_mutex_t lock;
    uv_cond_t cond;
    int finished; /* waiter threads done */
} shared;

static void waiter(void *arg)
{
    shared *sh = arg;
    for (int i = 0; i < sh->waits_each; i++) {
        eddy__sem_wait(&sh->sem);
        atomic_fetch_add(&sh->taken, 1);
    }
    uv_mutex_lock(&sh->lock);
    sh->finished++;
    uv_cond_signal(&sh->cond);
    uv_mutex_unlock(&sh->lock);
}

static void shared_init(shared *sh, int waits_each)
{
    memset(sh, 0, sizeof(*sh));
    assert_int_equal(eddy__sem_init(&sh->sem), 0);
    atomic_init(&sh->taken, 0);
    sh->waits_each = waits_each;
    assert_int_equal(uv_mutex_init(&sh->lock), 0);
    assert_int_equal(uv_cond_init(&sh->cond), 0);
}

static void shared_destroy(shared *sh)
{
    uv_cond_destroy(&sh->cond);
    uv_mutex_destroy(&sh->lock);
    eddy__sem_destroy(&sh->sem);
}

/* Wait until n waiter threads finished; 0 when the watchdog fired. */
static int wait_finished(shared *sh, int n)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)WATCHDOG_MS * 1000000u;
    uv_mutex_lock(&sh->lock);
    while (sh->finished < n) {
        uint64_t now = uv_hrtime();
        if (now >= deadline)
            break;
        (void)uv_cond_timedwait(&sh->cond, &sh->lock, deadline - now);
    }
    int ok = sh->finished >= n;
    uv_mutex_unlock(&sh->lock);
    return ok;
}

/* Wait until at least n waits returned; 0 when the watchdog fired. */
static int wait_taken(shared *sh, int n)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)WATCHDOG_MS * 1000000u;
    while (atomic_load(&sh->taken) < n) {
        if (uv_hrtime() >= deadline)
            return 0;
        uv_sleep(1);
    }
    return 1;
}

/* Posts made before anyone waits are each taken once, without sleeping. */
static void test_posts_before_waits(void **state)
{
    (void)state;
    shared sh;
    shared_init(&sh, 5);
    eddy__sem_post(&sh.sem, 2);
    eddy__sem_post(&sh.sem, 0); /* nothing */
    eddy__sem_post(&sh.sem, 3);
    waiter(&sh); /* on this thread: would block for ever on a lost post */
    assert_int_equal(atomic_load(&sh.taken), 5);
    shared_destroy(&sh);
}

/*
 * Eight threads asleep on the semaphore; batches of posts wake exactly as
 * many waits as they post: after each batch the count of returned waits
 * reaches the posts so far and, a moment later, has not gone past them.
 */
static void test_batch_wakes_that_many(void **state)
{
    (void)state;
    enum { THREADS = 8, EACH = 3 };
    shared sh;
    shared_init(&sh, EACH);
    uv_thread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(uv_thread_create(&t[i], waiter, &sh), 0);
    uv_sleep(20); /* let them fall asleep (the test holds either way) */
    static const int batches[] = {1, 3, 0, 8, 2, 1, 5, 4};
    int posted = 0;
    for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
        eddy__sem_post(&sh.sem, (size_t)batches[b]);
        posted += batches[b];
        assert_true(wait_taken(&sh, posted));
        uv_sleep(5);
        assert_int_equal(atomic_load(&sh.taken), posted);
    }
    assert_int_equal(posted, THREADS * EACH);
    assert_true(wait_finished(&sh, THREADS));
    for (int i = 0; i < THREADS; i++)
        uv_thread_join(&t[i]);
    shared_destroy(&sh);
}

typedef struct poster {
    shared *sh;
    int total; /* posts to make, in batches of 1 to 7 */
    unsigned seed;
} poster;

static void post_main(void *arg)
{
    poster *p = arg;
    int left = p->total;
    while (left > 0) {
        p->seed = p->seed * 1103515245u + 12345u;
        int n = 1 + (int)((p->seed >> 16) % 7);
        if (n > left)
            n = left;
        eddy__sem_post(&p->sh->sem, (size_t)n);
        left -= n;
        if ((p->seed >> 8) % 4 == 0)
            uv_sleep(0); /* now and then let the waiters fall asleep */
    }
}

/* Two posting threads against six waiting ones, 60,000 posts in random
 * batches: every post is taken, no waiter is left asleep. */
static void test_concurrent_posts_and_waits(void **state)
{
    (void)state;
    enum { WAITERS = 6, EACH = 10000, POSTERS = 2 };
    shared sh;
    shared_init(&sh, EACH);
    uv_thread_t w[WAITERS], p[POSTERS];
    poster ps[POSTERS];
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(uv_thread_create(&w[i], waiter, &sh), 0);
    for (int i = 0; i < POSTERS; i++) {
        ps[i] = (poster){&sh, WAITERS * EACH / POSTERS, 7u + (unsigned)i};
        assert_int_equal(uv_thread_create(&p[i], post_main, &ps[i]), 0);
    }
    for (int i = 0; i < POSTERS; i++)
        uv_thread_join(&p[i]);
    assert_true(wait_finished(&sh, WAITERS));
    for (int i = 0; i < WAITERS; i++)
        uv_thread_join(&w[i]);
    assert_int_equal(atomic_load(&sh.taken), WAITERS * EACH);
    shared_destroy(&sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posts_before_waits),
        cmocka_unit_test(test_batch_wakes_that_many),
        cmocka_unit_test(test_concurrent_posts_and_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
