/* Sleeps on loop timers; see the design notes in timer.h. */
#include <stdlib.h>

#include "exec/coro.h"
#include "exec/timer.h"

/* Stopped timers kept for the next sleeps; beyond that they are closed. */
#define SPARE_MAX 1024

typedef struct eddy__timer {
    uv_timer_t handle; /* first: the close callback frees the handle */
    eddy__queue node;  /* in sleeps->pending while its sleep waits, else sleeps->spare */
    eddy__sleep *sleep;
} eddy__timer;

struct eddy__sleeps {
    eddy__queue pending; /* timers of the sleeps waiting, in start order */
    eddy__queue spare;   /* stopped timers, for reuse */
    size_t nspare;
};

static void timer_freed(uv_handle_t *h)
{
    free(h); /* the eddy__timer: its handle comes first */
}

/* The timer's sleep ended (or never was): keep it for the next one, or
 * close it when enough are kept. */
static void timer_release(struct eddy__sleeps *ss, eddy__timer *tm)
{
    eddy__queue_remove(&tm->node);
    tm->sleep = NULL;
    if (ss->nspare < SPARE_MAX) {
        eddy__queue_insert_head(&ss->spare, &tm->node);
        ss->nspare++;
    } else {
        uv_close((uv_handle_t *)&tm->handle, timer_freed);
    }
}

/* Its sleep ends with rc. */
static void sleep_end(struct eddy__sleeps *ss, eddy__timer *tm, int rc)
{
    eddy__sleep *s = tm->sleep;
    timer_release(ss, tm);
    s->timer = NULL;
    s->rc = rc;
    s->done(s);
}

static void on_timer(uv_timer_t *h)
{
    eddy__timer *tm = (eddy__timer *)h;
    sleep_end(tm->sleep->task->rt->sleeps, tm, EDDY_OK);
}

int eddy__sleep_start(eddy__sleep *s, uint64_t ms)
{
    eddy_runtime *rt = s->task->rt;
    if (rt->stopping)
        return EDDY_ECANCELED;
    struct eddy__sleeps *ss = rt->sleeps;
    if (ss == NULL) { /* the runtime's first sleep */
        if ((ss = malloc(sizeof(*ss))) == NULL)
            return EDDY_ENOMEM;
        eddy__queue_init(&ss->pending);
        eddy__queue_init(&ss->spare);
        ss->nspare = 0;
        rt->sleeps = ss;
    }
    eddy__timer *tm;
    if (!eddy__queue_empty(&ss->spare)) {
        eddy__queue *q = eddy__queue_head(&ss->spare);
        eddy__queue_remove(q);
        ss->nspare--;
        tm = eddy__queue_data(q, eddy__timer, node);
    } else {
        if ((tm = malloc(sizeof(*tm))) == NULL)
            return EDDY_ENOMEM;
        uv_timer_init(&rt->loop, &tm->handle);
        eddy__queue_init(&tm->node);
    }
    tm->sleep = s;
    s->timer = tm;
    s->rc = EDDY_OK;
    eddy__queue_insert_tail(&ss->pending, &tm->node);
    /* The loop's clock is the time its turn began; steps since then (an
     * action's inline work) would shorten the sleep. */
    uv_update_time(&rt->loop);
    uv_timer_start(&tm->handle, on_timer, ms, 0);
    return EDDY_OK;
}

void eddy__sleep_cancel_all(eddy_runtime *rt)
{
    struct eddy__sleeps *ss = rt->sleeps;
    if (ss == NULL)
        return;
    while (!eddy__queue_empty(&ss->pending)) {
        eddy__timer *tm = eddy__queue_data(eddy__queue_head(&ss->pending), eddy__timer, node);
        uv_timer_stop(&tm->handle);
        sleep_end(ss, tm, EDDY_ECANCELED);
    }
}

void eddy__sleep_close(eddy_runtime *rt)
{
    eddy__sleep_cancel_all(rt);
    struct eddy__sleeps *ss = rt->sleeps;
    if (ss == NULL)
        return;
    while (!eddy__queue_empty(&ss->spare)) {
        eddy__queue *q = eddy__queue_head(&ss->spare);
        eddy__queue_remove(q);
        uv_close((uv_handle_t *)&eddy__queue_data(q, eddy__timer, node)->handle, timer_freed);
    }
    free(ss);
    rt->sleeps = NULL;
}

/* ---------------------------------------------------------------- the C API */

static void ctx_sleep_done(eddy__sleep *s)
{
    if (--s->task->waiting == 0)
        eddy__task_ready(s->task);
}

int eddy_ctx_sleep(eddy_ctx *ctx, uint64_t ms)
{
    int rc = eddy__ctx_can_suspend(ctx);
    if (rc != EDDY_OK)
        return rc;
    if (ms == 0) {
        /* A yield: behind every task ready now, fresh ones included. */
        eddy__task_ready_last(ctx);
        eddy__coro_yield();
        return ctx->rt->stopping ? EDDY_ECANCELED : EDDY_OK;
    }
    eddy__sleep s = {.task = ctx, .done = ctx_sleep_done};
    if ((rc = eddy__sleep_start(&s, ms)) != EDDY_OK)
        return rc;
    ctx->waiting++;
    while (ctx->waiting > 0) {
        ctx->state = EDDY_TASK_SUSPENDED;
        eddy__coro_yield();
    }
    return s.rc;
}
