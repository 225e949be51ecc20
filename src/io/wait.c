#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "io/wait.h"

/* Set before anything runs (see eddy_set_wait_hook); read by any thread. */
static _Atomic(eddy_wait_fn) wait_hook;
static void *_Atomic wait_hook_arg;

void eddy_set_wait_hook(eddy_wait_fn fn, void *arg)
{
    atomic_store(&wait_hook_arg, arg);
    atomic_store(&wait_hook, fn);
}

void eddy__wait_begin(int what, const char *name)
{
    eddy_wait_fn fn = atomic_load(&wait_hook);
    if (fn != NULL)
        fn(what, name, atomic_load(&wait_hook_arg));
}

void eddy__wait_end(void)
{
    eddy_wait_fn fn = atomic_load(&wait_hook);
    if (fn != NULL)
        fn(EDDY_WAIT_NONE, NULL, atomic_load(&wait_hook_arg));
}

int eddy__wait_open(const char *path, int flags, int mode, int what)
{
    struct stat st;
    int fifo = atomic_load(&wait_hook) != NULL && stat(path, &st) == 0 && S_ISFIFO(st.st_mode);
    if (fifo)
        eddy__wait_begin(what, path);
    int fd = open(path, flags, mode);
    int e = errno;
    if (fifo)
        eddy__wait_end();
    errno = e;
    return fd;
}
