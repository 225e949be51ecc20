#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

static _Atomic(eddy_log_fn) hook;
static _Atomic(void *) hook_arg;

void eddy_set_log_hook(eddy_log_fn fn, void *arg)
{
    atomic_store(&hook_arg, arg);
    atomic_store(&hook, fn);
}

void eddy__log(int level, const char *fmt, ...)
{
    char small[1024], *text = small;
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
    eddy_log_fn fn = atomic_load(&hook);
    if (fn != NULL)
        fn(level, text, atomic_load(&hook_arg));
    else
        fprintf(stderr, "eddy: %s: %s\n", level == EDDY_LOG_WARNING ? "warning" : "note", text);
    if (text != small)
        free(text);
}
