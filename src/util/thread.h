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
#endif

static inline void eddy__thread_name(const char *name)
{
#ifdef __linux__
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

#endif
