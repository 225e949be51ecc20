#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

/* The hook and its argument, changed and read as a pair: a message never
 * reaches one hook with another's argument, and once eddy_set_log_hook()
 * returns, the hook it replaced runs no more. */
static pthread_rwlock_t hook_lock = PTHREAD_RWLOCK_INITIALIZER;
static eddy_log_fn hook;
static void *hook_arg;

void eddy_set_log_hook(eddy_log_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&hook_lock);
    hook = fn;
    hook_arg = arg;
    pthread_rwlock_unlock(&hook_lock);
}

void eddy__log(int level, const char *fmt, ...)
{
    /* Small: this runs on coroutine stacks too (a durable call's warning),
     * which may be as small as 16 KiB; a longer message is allocated. */
    char small[256], *text = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(small) && (text = malloc((size_t)n + 1)) != NULL) {
        va_start(ap, fmt);
        vsnprintf(text, (size_t)n + 1, fmt, ap);
        va_end(ap);
    } else if (text == NULL) {
        text = small; /* for want of memory: cut short rather than lost */
    }
    pthread_rwlock_rdlock(&hook_lock);
    if (hook != NULL)
        hook(level, text, hook_arg);
    else
        fprintf(stderr, "eddy: %s: %s\n", level == EDDY_LOG_WARNING ? "warning" : "note", text);
    pthread_rwlock_unlock(&hook_lock);
    if (text != small)
        free(text);
}
