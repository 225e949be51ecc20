/*
 * A cache of freed blocks under jansson's allocator, for the mailbox thread.
 *
 * Every JSON value an agent builds is a few small allocations (the value,
 * an object's table and one entry per member, a string's text), freed as
 * soon as the call that used it returns: a durable call of W4's agent makes
 * about eight of them, and glibc's malloc and free took ~150 instructions
 * per pair, a quarter of what a journal record cost the mailbox thread.
 * Freed blocks of up to 248 bytes are kept here, per size class, and
 * handed back by the next allocation of their class: about
 * twenty instructions per pair.
 *
 * Every block is a block of malloc's, sized to its class, and its class is
 * read back from malloc_usable_size(): no header is added. So a value
 * allocated before the cache was installed, or freed after it was replaced,
 * is fine either way, and a block allocated on another thread (a worker's
 * result freed on the mailbox) simply joins the cache.
 *
 * The cache is one, owned by one thread at a time: the mailbox thread while
 * eddy_runtime_run runs (a turn frees thousands of values: W4's ~1,900
 * records a commit need about 1 MiB), emptied and let go when the run
 * returns. Other threads (workers, the reader, a second runtime's mailbox)
 * allocate and free as before, after one comparison, so that hundreds of
 * workers hold no blocks they never reuse. No thread-local storage: in a
 * shared library it costs a call per access, or static TLS, of which a
 * dlopen gets only glibc's small surplus (the context checks' 12 bytes use
 * some: exec/runtime.h). libeddy is linked not to be unloaded (-z nodelete), since
 * jansson keeps pointers to these functions.
 *
 * The cache is installed when libeddy loads, and only if jansson's
 * allocator is still malloc and free (an application that set its own
 * keeps it). It is left out of sanitizer builds, where it would hide a use
 * after free from AddressSanitizer, and off when EDDY_JSON_CACHE=0 is in
 * the environment (for memory debuggers).
 *
 * Either way, where jansson's allocator was malloc and free, an allocation
 * of jansson's that fails is counted in eddy__jalloc_failures: jansson's
 * parser says "invalid token" or the like when it ran out of memory, or
 * drops a character and goes on, and only this count tells its caller (see
 * jalloc.h). Without the cache the allocator is malloc and this count.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/fault.h"
#include "util/jalloc.h"

_Thread_local unsigned eddy__jalloc_failures EDDY__JALLOC_TLS;
static int counting;

/* malloc, counting its failures (and failing at the fault site
 * alloc.json). Only the failure path touches the thread's count. */
static void *counted_malloc(size_t size)
{
    void *p = eddy__fault("alloc.json") ? NULL : malloc(size);
    if (p == NULL)
        eddy__jalloc_failures++;
    return p;
}

int eddy__jalloc_counting(void)
{
    return counting;
}

#if EDDY__JALLOC_BUILT
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>

#define NCLASS   16  /* class c holds blocks of at least 16c + 8 bytes */
#define MAX_SIZE 248 /* the largest class's */

typedef struct block {
    struct block *next;
} block;

static struct {
    block *head[NCLASS];
    size_t bytes;  /* held in all classes */
    size_t budget; /* at most this many bytes held */
} cache;

/* The owning thread (self_id), 0 when none. Written by the owner as it
 * takes or lets go of the cache; read by every allocation. */
static _Atomic uintptr_t owner;
static int installed;

/* The calling thread's identity: its thread pointer, one instruction where
 * the compiler has it (every allocation asks). */
static inline uintptr_t self_id(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 11
    return (uintptr_t)__builtin_thread_pointer();
#else
    return (uintptr_t)pthread_self();
#endif
}

static inline int mine(void)
{
    return atomic_load_explicit(&owner, memory_order_relaxed) == self_id();
}

static void drain(void)
{
    for (int i = 0; i < NCLASS; i++) {
        while (cache.head[i] != NULL) {
            block *b = cache.head[i];
            cache.head[i] = b->next;
            free(b);
        }
    }
    cache.bytes = 0;
}

static void *jalloc(size_t size)
{
    if (size > MAX_SIZE || !mine())
        return counted_malloc(size);
    /* The class whose blocks hold size bytes: 16c + 8 >= size. */
    size_t k = size <= 24 ? 1 : (size + 7) >> 4;
    block *b = cache.head[k];
    if (b != NULL) {
        cache.head[k] = b->next;
        cache.bytes -= (k << 4) + 8;
        return b;
    }
    return counted_malloc((k << 4) + 8);
}

static void jfree(void *p)
{
    if (p == NULL)
        return;
    if (mine()) {
        /* The largest class the block can serve: 16k + 8 <= its size. */
        size_t k = (malloc_usable_size(p) - 8) >> 4;
        size_t sz = (k << 4) + 8;
        if (k < NCLASS && cache.bytes + sz <= cache.budget) {
            block *b = p;
            b->next = cache.head[k];
            cache.head[k] = b;
            cache.bytes += sz;
            return;
        }
    }
    free(p);
}

void eddy__jalloc_budget(size_t bytes)
{
    if (!installed)
        return;
    uintptr_t self = self_id();
    if (bytes > 0) {
        /* Take the cache if no thread has it (a second runtime running at
         * the same time goes without). */
        uintptr_t none = 0;
        if (!atomic_compare_exchange_strong(&owner, &none, self) && none != self)
            return;
        cache.budget = bytes;
        if (cache.bytes > bytes)
            drain();
    } else if (atomic_load(&owner) == self) {
        cache.budget = 0;
        drain();
        atomic_store(&owner, 0);
    }
}

int eddy__jalloc_installed(void)
{
    return installed;
}

size_t eddy__jalloc_budget_held(void)
{
    return mine() ? cache.budget : 0;
}

size_t eddy__jalloc_cached(void)
{
    return mine() ? cache.bytes : 0;
}

#else

int eddy__jalloc_installed(void)
{
    return 0;
}

size_t eddy__jalloc_cached(void)
{
    return 0;
}

void eddy__jalloc_budget(size_t bytes)
{
    (void)bytes;
}

size_t eddy__jalloc_budget_held(void)
{
    return 0;
}

#endif

/* Installed while jansson's allocator is malloc's: the cache (unless
 * EDDY_JSON_CACHE=0, or not built), else malloc with the failure count. */
__attribute__((constructor)) static void jalloc_install(void)
{
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    if (m != malloc || f != free)
        return;
    counting = 1;
#if EDDY__JALLOC_BUILT
    const char *off = getenv("EDDY_JSON_CACHE");
    if (off == NULL || strcmp(off, "0") != 0) {
        json_set_alloc_funcs(jalloc, jfree);
        installed = 1;
        return;
    }
#endif
    json_set_alloc_funcs(counted_malloc, free);
}
