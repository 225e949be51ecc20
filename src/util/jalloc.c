/*
 * A per-thread cache of freed blocks under jansson's allocator.
 *
 * Every JSON value an agent builds is a few small allocations (the value,
 * an object's table and one entry per member, a string's text), freed as
 * soon as the call that used it returns: a durable call of W4's agent makes
 * about eight of them, and glibc's malloc and free took ~150 instructions
 * per pair, a quarter of what a journal record cost the mailbox thread.
 * Freed blocks of up to 248 bytes are kept here, per thread and per size
 * class, and handed back by the next allocation of their class: about
 * twenty instructions per pair.
 *
 * Every block is a block of malloc's, sized to its class, and its class is
 * read back from malloc_usable_size(): no header is added. So a value
 * allocated before the cache was installed, or freed after it was replaced,
 * is fine either way, and a block allocated on another thread (a worker's
 * result freed on the mailbox) simply joins the freeing thread's cache.
 * Only a thread given a budget keeps blocks, up to that many bytes, the
 * rest going back to free(): the mailbox thread while eddy_runtime_run
 * runs (a turn frees thousands of values: W4's ~1,900 records a commit
 * need about 1 MiB), and the cache is emptied when the run returns or the
 * thread exits. Other threads (workers, the reader) free at once, so that
 * hundreds of workers do not each hold blocks they never reuse.
 *
 * The cache is installed when libeddy loads, and only if jansson's
 * allocator is still malloc and free (an application that set its own
 * keeps it). It is left out of sanitizer builds, where it would hide a use
 * after free from AddressSanitizer, and off when EDDY_JSON_CACHE=0 is in
 * the environment (for memory debuggers).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/jalloc.h"

#if EDDY__JALLOC_BUILT
#include <malloc.h>

#define NCLASS 16 /* class c holds blocks of at least 16c + 8 bytes */

typedef struct block {
    struct block *next;
} block;

typedef struct cache {
    block *head[NCLASS];
    size_t bytes;   /* held in all classes */
    size_t budget;  /* at most this many bytes held */
    int registered; /* the exit destructor knows this thread's cache */
} cache;

static __thread cache tcache __attribute__((tls_model("initial-exec")));
static pthread_key_t exit_key;
static int installed;

static void drain(void *arg)
{
    cache *c = arg;
    for (int i = 0; i < NCLASS; i++) {
        while (c->head[i] != NULL) {
            block *b = c->head[i];
            c->head[i] = b->next;
            free(b);
        }
    }
    c->bytes = 0;
}

static void *jalloc(size_t size)
{
    /* The class whose blocks hold size bytes: 16c + 8 >= size. */
    size_t k = size <= 24 ? 1 : (size + 7) >> 4;
    if (k < NCLASS) {
        block *b = tcache.head[k];
        if (b != NULL) {
            tcache.head[k] = b->next;
            tcache.bytes -= (k << 4) + 8;
            return b;
        }
        return malloc((k << 4) + 8);
    }
    return malloc(size);
}

static void jfree(void *p)
{
    if (p == NULL)
        return;
    /* The largest class the block can serve: 16k + 8 <= its size. */
    size_t k = (malloc_usable_size(p) - 8) >> 4;
    size_t sz = (k << 4) + 8;
    if (k < NCLASS && tcache.bytes + sz <= tcache.budget) {
        block *b = p;
        b->next = tcache.head[k];
        tcache.head[k] = b;
        tcache.bytes += sz;
        return;
    }
    free(p);
}

void eddy__jalloc_budget(size_t bytes)
{
    if (!installed)
        return;
    if (bytes > 0 && !tcache.registered) {
        /* Before the thread keeps a block: the cache is emptied when the
         * thread exits. */
        if (pthread_setspecific(exit_key, &tcache) != 0)
            return;
        tcache.registered = 1;
    }
    tcache.budget = bytes;
    if (tcache.bytes > bytes)
        drain(&tcache);
}

__attribute__((constructor)) static void jalloc_install(void)
{
    const char *off = getenv("EDDY_JSON_CACHE");
    if (off != NULL && strcmp(off, "0") == 0)
        return;
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    if (m != malloc || f != free)
        return;
    if (pthread_key_create(&exit_key, drain) != 0)
        return;
    json_set_alloc_funcs(jalloc, jfree);
    installed = 1;
}

int eddy__jalloc_installed(void)
{
    return installed;
}

size_t eddy__jalloc_cached(void)
{
    return tcache.bytes;
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

#endif
