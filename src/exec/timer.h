/*
 * Sleeps: an action waits a while (eddy_ctx_sleep, Python's ctx.sleep)
 * without holding a thread.
 *
 * Design notes
 * ------------
 * A sleep is a timer of the mailbox loop, never sleep() on a thread: the
 * sleeping task is suspended as on a call, but waits for no worker (with
 * --async-threads 1, any number of keys sleep at once and a call of another
 * key still finds the worker free). It is in no queue: the timer alone holds
 * it, and nothing polls it; when the timer fires, its done callback makes the
 * task ready (in the loop's timer phase, so its step runs in the same turn).
 * The loop blocks in its poll until the earliest timer is due.
 *
 * A sleeping task is live work: its run is in flight, and the runtime does
 * not end before it wakes. A stop (eddy_runtime_stop, an action failure, an
 * I/O or store error) ends every pending sleep at once with EDDY_ECANCELED,
 * without waiting for its time; the action then unwinds as after a canceled
 * call.
 *
 * The waiter (eddy__sleep) lives in what waits: on the C action's coroutine
 * stack, in the Python awaitable. The uv_timer_t it holds while pending comes
 * from a pool of initialised timers that the runtime keeps and reuses: no
 * allocation per sleep once the pool holds as many timers as sleeps run at
 * once, and no handle is closed and reused (libuv needs a closed handle's
 * close callback to run before its memory is used again). Timers beyond the
 * pool's bound are closed and freed by their close callback; the pool's are
 * closed when the runtime is freed.
 *
 * Sleeps are not journaled: a re-run after a crash sleeps again.
 */
#ifndef EDDY_EXEC_TIMER_H
#define EDDY_EXEC_TIMER_H

#include <stdint.h>

#include "exec/runtime.h"

typedef struct eddy__sleep eddy__sleep;

struct eddy__sleep {
    /* Set by the caller before eddy__sleep_start: */
    eddy_ctx *task;
    void (*done)(eddy__sleep *s); /* mailbox thread, once; s->rc is set */
    /* Set by the timer: EDDY_OK when the time passed, EDDY_ECANCELED when
     * eddy stopped first. */
    int rc;
    struct eddy__timer *timer; /* held while pending */
};

/* Start sleep s for ms > 0 milliseconds (mailbox thread). EDDY_OK: done
 * will be called, once. EDDY_ECANCELED when the runtime is stopping, and
 * EDDY_ENOMEM: nothing started, done will not be called. */
int eddy__sleep_start(eddy__sleep *s, uint64_t ms);

/* End every pending sleep now with EDDY_ECANCELED (the runtime stops). */
void eddy__sleep_cancel_all(struct eddy_runtime *rt);

/* The runtime is freed: end the pending sleeps and close the timers (the
 * loop must run once more for their close callbacks). */
void eddy__sleep_close(struct eddy_runtime *rt);

/* The checks of every call that suspends the action (ctx.c): EDDY_OK, or
 * EDDY_EINVAL, EDDY_EWRONGTHREAD, EDDY_ESTATE, EDDY_ECANCELED. */
int eddy__ctx_can_suspend(eddy_ctx *ctx);

#endif /* EDDY_EXEC_TIMER_H */
