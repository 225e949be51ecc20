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

/* Static TLS, as exec/runtime.h's EDDY__TLS_FAST (4 bytes): one load from
 * the thread pointer. */
#if defined(__GNUC__)
#define EDDY__JALLOC_TLS __attribute__((tls_model("initial-exec")))
#else
#define EDDY__JALLOC_TLS
#endif

/*
 * Allocations of jansson's that failed on this thread (it wraps around).
 * jansson's parser reports running out of memory as a parse error ("invalid
 * token near ...", say), so that its caller cannot tell a text that is not
 * JSON from a valid one that was not parsed; worse, where its lexer's
 * buffer fails to grow it drops the character and goes on (2.14), and
 * hands back a value that is not the text's. So a parser's caller reads
 * this count before the parse and after it: if the count moved, whatever
 * the parse returned is dropped and memory ran out (EDDY_ENOMEM).
 * Incremented on the failure path only. Counted where jansson's allocator
 * was malloc and free when libeddy loaded (eddy__jalloc_counting()); else
 * it stays 0, and an allocation failure looks like bad text, as it did.
 */
extern _Thread_local unsigned eddy__jalloc_failures EDDY__JALLOC_TLS;

/* 1 if jansson's allocation failures are counted in this process. */
int eddy__jalloc_counting(void);

/* What the mailbox thread keeps while it runs. */
#define EDDY__JALLOC_MAILBOX (1024 * 1024)

/* The calling thread takes the cache, if no other thread has it, and keeps
 * at most bytes of freed blocks in it; 0 empties the cache and lets it go. */
void eddy__jalloc_budget(size_t bytes);

/* The budget of the cache if the calling thread has it, else 0: what to
 * give eddy__jalloc_budget() back after a run inside a run (a runtime run
 * from an action) took it. */
size_t eddy__jalloc_budget_held(void);

/* Bytes held in the cache if the calling thread has it, else 0 (tests). */
size_t eddy__jalloc_cached(void);

#endif
