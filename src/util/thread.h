/*
 * Names for eddy's threads, so that top -H, perf and gdb tell the mailbox
 * (the thread that calls eddy_runtime_run, left as it is) from the workers,
 * the syncer and the reader. Linux only; elsewhere a no-op. A name is at most
 * 15 bytes.
 */
#ifndef EDDY_UTIL_THREAD_H
#define EDDY_UTIL_THREAD_H

#ifdef __linux__
#include <pthread.h>
#include <sys/prctl.h>
#endif

static inline void eddy__thread_name(const char *name)
{
#ifdef __linux__
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

/* Timers of the calling thread (its sleeps, poll and futex timeouts) end
 * when asked rather than up to 50 us later, Linux's default slack for a
 * thread: a worker runs the agents' calls, whose waits are their latency. */
static inline void eddy__thread_precise_timers(void)
{
#ifdef __linux__
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
}

#endif
