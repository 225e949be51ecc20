#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "util/forkfd.h"

#define SLOTS 64

/* fd + 1, or 0 for a free slot: no lock, since the child's handler may not
 * take one (another thread may have held it at the fork). */
static atomic_int slots[SLOTS];
static pthread_once_t registered = PTHREAD_ONCE_INIT;

/* In the child, right after fork(): async-signal-safe. */
static void close_in_child(void)
{
    for (int i = 0; i < SLOTS; i++) {
        int v = atomic_load_explicit(&slots[i], memory_order_relaxed);
        if (v > 0) {
            atomic_store_explicit(&slots[i], 0, memory_order_relaxed);
            close(v - 1);
        }
    }
}

static void register_handler(void)
{
    (void)pthread_atfork(NULL, NULL, close_in_child);
}

void eddy__forkfd_add(int fd)
{
    if (fd < 0)
        return;
    pthread_once(&registered, register_handler);
    for (int i = 0; i < SLOTS; i++) {
        int free_slot = 0;
        if (atomic_compare_exchange_strong(&slots[i], &free_slot, fd + 1))
            return;
    }
}

void eddy__forkfd_remove(int fd)
{
    if (fd < 0)
        return;
    for (int i = 0; i < SLOTS; i++) {
        int v = fd + 1;
        if (atomic_compare_exchange_strong(&slots[i], &v, 0))
            return;
    }
}
