/*
 * A cache of freed blocks under jansson's allocator, installed when libeddy
 * loads and owned by one thread at a time, the mailbox (see jalloc.c).
 */
#ifndef EDDY_UTIL_JALLOC_H
#define EDDY_UTIL_JALLOC_H

#include <stddef.h>
#include <stdlib.h> /* __GLIBC__ */

/* Built with glibc (the class of a block comes from malloc_usable_size) and
 * without sanitizers (the cache would hide a use after free from them). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EDDY__JALLOC_BUILT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define EDDY__JALLOC_BUILT 0
#endif
#endif
#if !defined(EDDY__JALLOC_BUILT) && defined(__GLIBC__)
#define EDDY__JALLOC_BUILT 1
#endif
#ifndef EDDY__JALLOC_BUILT
#define EDDY__JALLOC_BUILT 0
#endif

/* 1 if the cache serves jansson's allocations in this process. */
int eddy__jalloc_installed(void);

/* What the mailbox thread keeps while it runs. */
#define EDDY__JALLOC_MAILBOX (1024 * 1024)

/* The calling thread takes the cache, if no other thread has it, and keeps
 * at most bytes of freed blocks in it; 0 empties the cache and lets it go. */
void eddy__jalloc_budget(size_t bytes);

/* Bytes held in the cache if the calling thread has it, else 0 (tests). */
size_t eddy__jalloc_cached(void);

#endif
