/*
 * Stackful coroutines for C action executions.
 *
 * Design notes
 * ------------
 * Every coroutine runs on its own mmap'd stack with a PROT_NONE guard page
 * below it, so an overflow faults instead of corrupting a neighbour. Stacks
 * are pooled: a finished coroutine's stack goes back to its pool's free list
 * and is reused by the next eddy__coro_new(), so starting an action execution
 * does not map memory in the steady state.
 *
 * The switch is Boost.Context's fcontext (jump_fcontext/make_fcontext, which
 * libboost_context exports as C symbols): a few nanoseconds, no system call.
 * Switches carry the sanitizers' fiber annotations (ASan
 * __sanitizer_start/finish_switch_fiber, TSan __tsan_switch_to_fiber) so that
 * sanitizer builds understand the stack changes.
 *
 * A pool and its coroutines belong to one thread (the mailbox thread). A
 * coroutine is resumed only by that thread and yields back to the point that
 * resumed it. Coroutines nest: a coroutine may resume another (an action
 * that runs a runtime of its own resumes that runtime's actions), and is
 * the current one again when that one yields or returns.
 */
#ifndef EDDY_EXEC_CORO_H
#define EDDY_EXEC_CORO_H

#include <stddef.h>

typedef struct eddy__coro eddy__coro;
typedef struct eddy__coro_pool eddy__coro_pool;
typedef void (*eddy__coro_fn)(void *arg);

/* New pool whose stacks have stack_size usable bytes (rounded up to pages),
 * keeping at most max_cached free stacks. NULL on ENOMEM. */
eddy__coro_pool *eddy__coro_pool_new(size_t stack_size, size_t max_cached);
/* Unmap every cached stack. Every coroutine must have been freed. NULL is a no-op. */
void eddy__coro_pool_free(eddy__coro_pool *pool);

/* New coroutine that will run fn(arg) when first resumed. NULL on ENOMEM. */
eddy__coro *eddy__coro_new(eddy__coro_pool *pool, eddy__coro_fn fn, void *arg);

/* Run c until it yields or fn returns. Returns 1 when fn has returned (the
 * coroutine is finished), 0 when it yielded. Must not be called on a finished
 * or running coroutine (the caller's own, or one that resumed it). From
 * inside a coroutine, that one is current again on return. */
int eddy__coro_resume(eddy__coro *c);

/* From inside a coroutine: switch back to the thread that resumed it. */
void eddy__coro_yield(void);

/* The number in the file at path (vm.max_map_count: /proc/sys/vm/max_map_count),
 * or 65530, the kernel's default, when it holds none. One read(2) into a
 * buffer on the stack: stdio, when it could not allocate its buffer, read
 * the file a byte at a time, and a file of /proc/sys answers a read at an
 * offset past 0 with end of file (65530 read as 6). */
long eddy__coro_map_cap(const char *path);

/* The coroutine running on this thread, or NULL outside of any. */
eddy__coro *eddy__coro_current(void);

/* Name a stack overflow (a write into a guard page) on stderr before the
 * process dies of it, on the calling thread (it gets a signal stack) and, the
 * first time, for the process (when SIGSEGV has its default disposition).
 * note(arg, put), when not NULL, describes the coroutine whose fn got arg,
 * with put only (in a signal handler: no allocation, no stdio). */
void eddy__coro_overflow_init(void (*note)(void *arg, void (*put)(const char *)));

/* Return c's stack to its pool. c must be finished or never resumed. NULL is a no-op.
 * Freeing a suspended coroutine is a bug (an assertion in debug builds): its
 * frames are dropped without unwinding, so whatever they own leaks. */
void eddy__coro_free(eddy__coro *c);

/* Stacks pool has mapped now (live coroutines plus cached free stacks), and
 * how many of those are cached. For tests and statistics. */
size_t eddy__coro_pool_mapped(const eddy__coro_pool *pool);
size_t eddy__coro_pool_cached(const eddy__coro_pool *pool);

#endif /* EDDY_EXEC_CORO_H */
