/*
 * A counting semaphore whose post takes a count: eddy__sem_post(s, n)
 * makes n more waits return, with one system call for all of them where a
 * semaphore's post costs one each.
 *
 * The worker pool hands out jobs in batches (a loop turn's submissions, or
 * the jobs a sync released): with one post per job, the mailbox made a
 * futex call per woken worker (W3 at 256 runs in flight: ~1.4 per run, most
 * of its futex calls). On Linux the count is a futex word and a post wakes
 * up to n sleepers with one FUTEX_WAKE; elsewhere it is a uv_sem_t posted n
 * times.
 *
 * The futex protocol: post adds n to value, then wakes only if a waiter
 * said it sleeps; a waiter first tries to take one from value, and
 * otherwise says it sleeps (sleepers) and sleeps only while value is still
 * 0 (FUTEX_WAIT compares it in the kernel). Both sides use sequentially
 * consistent operations, so a post either sees the sleeper counted, or the
 * sleeper's FUTEX_WAIT sees the value it added and returns at once.
 */
#ifndef EDDY_UTIL_SEM_H
#define EDDY_UTIL_SEM_H

#include <stddef.h>

#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct eddy__sem {
    atomic_int value;    /* posts not yet taken */
    atomic_int sleepers; /* waiters in, or about to be in, FUTEX_WAIT */
} eddy__sem;

static inline int eddy__sem_init(eddy__sem *s)
{
    atomic_init(&s->value, 0);
    atomic_init(&s->sleepers, 0);
    return 0;
}

static inline void eddy__sem_destroy(eddy__sem *s)
{
    (void)s;
}

static inline void eddy__sem_post(eddy__sem *s, size_t n)
{
    if (n == 0)
        return;
    atomic_fetch_add(&s->value, (int)n);
    if (atomic_load(&s->sleepers) > 0)
        syscall(SYS_futex, &s->value, FUTEX_WAKE_PRIVATE, n > INT_MAX ? INT_MAX : (int)n, NULL,
                NULL, 0);
}

static inline void eddy__sem_wait(eddy__sem *s)
{
    for (;;) {
        int v = atomic_load(&s->value);
        while (v > 0)
            if (atomic_compare_exchange_weak(&s->value, &v, v - 1))
                return;
        atomic_fetch_add(&s->sleepers, 1);
        /* Returns at once (EAGAIN) when value is no longer 0; EINTR and
         * spurious wake-ups just try again. */
        syscall(SYS_futex, &s->value, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        atomic_fetch_sub(&s->sleepers, 1);
    }
}

#else /* not Linux: a plain semaphore */
#include <uv.h>

typedef struct eddy__sem {
    uv_sem_t sem;
} eddy__sem;

static inline int eddy__sem_init(eddy__sem *s)
{
    return uv_sem_init(&s->sem, 0);
}

static inline void eddy__sem_destroy(eddy__sem *s)
{
    uv_sem_destroy(&s->sem);
}

static inline void eddy__sem_post(eddy__sem *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        uv_sem_post(&s->sem);
}

static inline void eddy__sem_wait(eddy__sem *s)
{
    uv_sem_wait(&s->sem);
}
#endif

#endif /* EDDY_UTIL_SEM_H */
