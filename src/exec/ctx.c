/*
 * The context API that actions call: events, memory, async and durable calls.
 * Every entry point first compares its context (or memory handle) with the
 * task being stepped on the calling thread (eddy__running), reading nothing
 * of the handle before: a handle kept past its action points at a task that
 * ended, recycled for another action execution, on the free list or freed.
 * When it is not the running task's, or the call comes from the body of a
 * durable call that runs on the mailbox thread (eddy_ctx.in_body), the call
 * fails without touching state: with EDDY_EWRONGTHREAD off the mailbox
 * threads and in such a body, with EDDY_ESTATE on a mailbox thread (see
 * eddy__ctx_unusable).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "exec/durable.h"
#include "exec/runtime.h"
#include "exec/timer.h"
#include "util/jsonw.h"

/* EDDY_OK when v nests at most max levels, else EDDY_ELIMIT (or ENOMEM). */
static int depth_ok(const json_t *v, size_t max)
{
    int deep = eddy__json_deeper_than(v, (unsigned)max); /* callers keep max <= the bound */
    return deep == 0 ? EDDY_OK : deep == 1 ? EDDY_ELIMIT : deep;
}

/* Levels of objects a memory path makes: one per segment. */
static size_t path_levels(const char *path)
{
    size_t n = 1;
    for (; *path != '\0'; path++)
        n += *path == '.';
    return n;
}

__attribute__((noinline, cold)) int eddy__ctx_unusable(const char *stale)
{
    eddy_ctx *cur = eddy__running;
    if (cur == NULL) /* between steps on a mailbox thread, or on another thread */
        return eddy__mailboxes != 0 ? EDDY_ESTATE : EDDY_EWRONGTHREAD;
    if (cur->in_body)
        return EDDY_EWRONGTHREAD;
    return eddy__ctx_refuse(cur, EDDY_ESTATE, stale);
}

int eddy__ctx_refusef(eddy_ctx *t, int rc, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char *text = strdup(buf);
    if (text == NULL) /* the refusal stands; only its text is lost */
        return eddy__ctx_refuse(t, rc, "a context call refused its arguments");
    free(t->why_buf);
    t->why_buf = text;
    return eddy__ctx_refuse(t, rc, text);
}

/* EDDY_OK when t (not NULL) may be used here and now, else why not (see
 * above); stale: the refusal's text when t is not the running task. */
static inline int usable(eddy_ctx *t, const char *stale)
{
    return eddy__ctx_usable(t, stale);
}

/* usable(), for a call that returns a code: when t may be used, an earlier
 * refusal no longer explains the action's failure (see eddy_ctx.why). */
static inline int usable_call(eddy_ctx *t, const char *stale)
{
    int rc = usable(t, stale);
    if (rc == EDDY_OK)
        eddy__ctx_called(t);
    return rc;
}

#define CTX_STALE(fn) fn ": " EDDY__CTX_STALE
#define MEM_STALE(fn) fn ": the memory handle" EDDY__STALE_WHOSE

#define TOO_DEEP "nested deeper than EDDY_VALUE_MAX_DEPTH (1000) levels"

const char *eddy_ctx_key(eddy_ctx *ctx)
{
    return ctx != NULL && usable(ctx, CTX_STALE("eddy_ctx_key")) == EDDY_OK ? ctx->key->text : NULL;
}

/* Buffer ev (not NULL, not sent) as sent by ctx's action execution. */
static void send_now(eddy_ctx *ctx, eddy_event *ev)
{
    ev->sent = 1;
    eddy__event_set_id(
        ev, eddy__event_child_id(ctx->event->id, (uint32_t)ctx->action->index, ctx->nsent++));
    eddy__queue_insert_tail(&ctx->sent, &ev->node);
}

int eddy_ctx_send_event(eddy_ctx *ctx, eddy_event *ev)
{
    if (ctx == NULL)
        return EDDY_EINVAL;
    int rc = usable_call(ctx, CTX_STALE("eddy_ctx_send_event"));
    if (rc != EDDY_OK)
        return rc;
    if (ev == NULL)
        return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                "eddy_ctx_send_event: the event is NULL, as when "
                                "eddy_event_new() refused its type (empty or not UTF-8) or "
                                "attributes (not an object), or ran out of memory");
    if (ev->sent)
        return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                "eddy_ctx_send_event: the event was sent already");
    if (ev->is_output && json_object_get(ev->attrs, "output") == NULL)
        /* It wrote a null line, as if the action had sent JSON null. */
        return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                "eddy_ctx_send_event: an OutputEvent without an attribute "
                                "\"output\" (what goes to the sink; JSON null for a null line)");
    if (!ev->is_output && strcmp(ev->type, EDDY_INPUT_EVENT) == 0)
        /* It would run the input's actions again, in this run and under this
         * key, as if the input had come twice. */
        return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                "eddy_ctx_send_event: an action cannot send an InputEvent; eddy "
                                "makes the one of each input itself (send an event type of your "
                                "own to trigger other actions)");
    rc = depth_ok(ev->attrs, EDDY__VALUE_MAX_DEPTH);
    if (rc != EDDY_OK)
        return eddy__ctx_refuse(ctx, rc, "eddy_ctx_send_event: its attributes are " TOO_DEEP);
    send_now(ctx, ev);
    return EDDY_OK;
}

int eddy_ctx_send_output(eddy_ctx *ctx, json_t *output)
{
    if (ctx == NULL) {
        json_decref(output);
        return EDDY_EINVAL;
    }
    int rc = usable_call(ctx, CTX_STALE("eddy_ctx_send_output"));
    if (rc != EDDY_OK) {
        json_decref(output);
        return rc;
    }
    if (output == NULL)
        return eddy__ctx_refuse(
            ctx, EDDY_EINVAL,
            "eddy_ctx_send_output: the output is NULL, as when building it failed");
    rc = depth_ok(output, EDDY__VALUE_MAX_DEPTH - 1); /* in {"output": ...} */
    if (rc != EDDY_OK) {
        eddy__json_decref_deep(output); /* on the action's stack: see jsonw.h */
        return eddy__ctx_refuse(ctx, rc, "eddy_ctx_send_output: the output is " TOO_DEEP);
    }
    eddy_runtime *rt = ctx->rt;
    eddy_event *ev;
    if (rt->nspare_outputs > 0) {
        /* Its one member is "output" (output_event_done): set through the
         * iterator, without hashing the key again. */
        ev = rt->spare_outputs[--rt->nspare_outputs];
        ev->refs = 1;
        ev->sent = 0;
        if (json_object_iter_set_new(ev->attrs, json_object_iter(ev->attrs), output) != 0) {
            eddy__event_unref(ev);
            return EDDY_ENOMEM;
        }
    } else {
        json_t *attrs = json_object();
        if (attrs == NULL || json_object_set_new_nocheck(attrs, "output", output) != 0) {
            if (attrs == NULL)
                json_decref(output);
            json_decref(attrs);
            return EDDY_ENOMEM;
        }
        /* eddy_event_new takes attrs, also when it fails. */
        if ((ev = eddy_event_new(EDDY_OUTPUT_EVENT, attrs)) == NULL)
            return EDDY_ENOMEM;
    }
    send_now(ctx, ev); /* checked above; ev is new or was released */
    return EDDY_OK;
}

eddy_memory *eddy_ctx_short_term_memory(eddy_ctx *ctx)
{
    return ctx != NULL && usable(ctx, CTX_STALE("eddy_ctx_short_term_memory")) == EDDY_OK
               ? &ctx->stm
               : NULL;
}

eddy_memory *eddy_ctx_sensory_memory(eddy_ctx *ctx)
{
    return ctx != NULL && usable(ctx, CTX_STALE("eddy_ctx_sensory_memory")) == EDDY_OK
               ? &ctx->sensory
               : NULL;
}

int eddy_ctx_fail_error(eddy_ctx *ctx, eddy_error *err)
{
    if (ctx == NULL) {
        eddy_error_free(err);
        return EDDY_EINVAL;
    }
    int rc = usable_call(ctx, CTX_STALE("eddy_ctx_fail_error"));
    if (rc != EDDY_OK) {
        eddy_error_free(err);
        return rc;
    }
    if (err == NULL)
        return EDDY_ENOMEM;
    eddy_error_free(ctx->err);
    ctx->err = err;
    return EDDY_OK;
}

int eddy_ctx_fail(eddy_ctx *ctx, const char *type, const char *message)
{
    if (ctx != NULL) {
        int rc = usable_call(ctx, CTX_STALE("eddy_ctx_fail"));
        if (rc != EDDY_OK)
            return rc;
    }
    return eddy_ctx_fail_error(ctx, eddy_error_new(type, message));
}

/* ---------------------------------------------------------------- memory */

/* usable() for a memory handle (not NULL): m is one of the running task's
 * two handles, compared before anything of m is read. */
static inline int mem_usable(eddy_memory *m, const char *stale)
{
    eddy_ctx *cur = eddy__running;
    if (cur != NULL && (m == &cur->stm || m == &cur->sensory) && !cur->in_body)
        return EDDY_OK;
    return eddy__ctx_unusable(stale);
}

static inline int mem_usable_call(eddy_memory *m, const char *stale)
{
    int rc = mem_usable(m, stale);
    if (rc == EDDY_OK)
        eddy__ctx_called(m->task);
    return rc;
}

#define MEM_USABLE(m, fn)      mem_usable((m), MEM_STALE(fn))
#define MEM_USABLE_CALL(m, fn) mem_usable_call((m), MEM_STALE(fn))

/* rc of memory call fn on path, remembering why it was refused, with the
 * path (quoted: it may not be printable, or UTF-8). Off the hot path. */
static __attribute__((noinline)) int memory_refused(eddy_memory *m, int rc, const char *fn,
                                                    const char *path)
{
    char q[EDDY__QUOTED_MAX];
    eddy__quote(q, sizeof(q), path);
    switch (rc) {
    case EDDY_EINVAL:
        return eddy__ctx_refusef(
            m->task, rc, "%s: the path %s is not names (UTF-8, not empty) joined by dots", fn, q);
    case EDDY_EPATH: {
        /* Which of the two: a value on a parent, or what stands at path. */
        size_t at = eddy__memview_conflict(&m->view, path);
        char *parent = at > 0 ? strndup(path, at) : NULL;
        if (parent != NULL) {
            char pq[EDDY__QUOTED_MAX];
            eddy__quote(pq, sizeof(pq), parent);
            free(parent);
            return eddy__ctx_refusef(m->task, rc,
                                     "%s: on the path %s, %s holds a value that is not an object, "
                                     "so nothing stands below it (set an object there first)",
                                     fn, q, pq);
        }
        if (strcmp(fn, "eddy_memory_new_object") == 0)
            return eddy__ctx_refusef(m->task, rc,
                                     "%s: a value that is not an object stands at the path %s "
                                     "(set an object there to replace it)",
                                     fn, q);
        return eddy__ctx_refusef(m->task, rc,
                                 "%s: an object stands at the path %s and the value is not one "
                                 "(only an object replaces an object)",
                                 fn, q);
    }
    case EDDY_ELIMIT:
        return eddy__ctx_refusef(m->task, rc, "%s: the value at the path %s would be " TOO_DEEP, fn,
                                 q);
    default:
        return rc;
    }
}

/* A read beside another action execution of the run is noted (runtime.h). */
#define MEM_READ(m, path)                                                       \
    do {                                                                        \
        if ((m)->task->key->live > 1)                                           \
            eddy__mem_read_note((m)->task, (m) == &(m)->task->sensory, (path)); \
    } while (0)

json_t *eddy_memory_get(eddy_memory *m, const char *path)
{
    if (m == NULL || MEM_USABLE(m, "eddy_memory_get") != EDDY_OK || path == NULL)
        return NULL;
    MEM_READ(m, path);
    return eddy__memview_get(&m->view, path);
}

int eddy_memory_set(eddy_memory *m, const char *path, json_t *value)
{
    if (m == NULL) {
        json_decref(value);
        return EDDY_EINVAL;
    }
    int rc = MEM_USABLE_CALL(m, "eddy_memory_set");
    if (rc != EDDY_OK) {
        /* value is stolen, but from a wrong thread even its refcount is not
         * ours to touch safely; jansson's counts are atomic, so this is. */
        json_decref(value);
        return rc;
    }
    if (path == NULL) {
        json_decref(value);
        return eddy__ctx_refuse(m->task, EDDY_EINVAL, "eddy_memory_set: the path is NULL");
    }
    size_t levels = path_levels(path);
    rc = levels <= EDDY__VALUE_MAX_DEPTH ? depth_ok(value, EDDY__VALUE_MAX_DEPTH - levels)
                                         : EDDY_ELIMIT;
    if (rc != EDDY_OK) {
        eddy__json_decref_deep(value); /* on the action's stack: see jsonw.h */
        return memory_refused(m, rc, "eddy_memory_set", path);
    }
    rc = eddy__memview_set(&m->view, path, value);
    return rc == EDDY_OK ? rc : memory_refused(m, rc, "eddy_memory_set", path);
}

int eddy_memory_new_object(eddy_memory *m, const char *path)
{
    if (m == NULL)
        return EDDY_EINVAL;
    int rc = MEM_USABLE_CALL(m, "eddy_memory_new_object");
    if (rc != EDDY_OK)
        return rc;
    if (path == NULL)
        return eddy__ctx_refuse(m->task, EDDY_EINVAL, "eddy_memory_new_object: the path is NULL");
    rc = path_levels(path) + 1 > EDDY__VALUE_MAX_DEPTH ? EDDY_ELIMIT
                                                       : eddy__memview_new_object(&m->view, path);
    return rc == EDDY_OK ? rc : memory_refused(m, rc, "eddy_memory_new_object", path);
}

int eddy_memory_exists(eddy_memory *m, const char *path)
{
    if (m == NULL || path == NULL)
        return EDDY_EINVAL;
    int rc = MEM_USABLE_CALL(m, "eddy_memory_exists");
    if (rc != EDDY_OK)
        return rc;
    MEM_READ(m, path);
    rc = eddy__memview_exists(&m->view, path);
    return rc >= 0 ? rc : memory_refused(m, rc, "eddy_memory_exists", path);
}

json_t *eddy_memory_field_names(eddy_memory *m, const char *path)
{
    if (m == NULL || MEM_USABLE(m, "eddy_memory_field_names") != EDDY_OK || path == NULL)
        return NULL;
    MEM_READ(m, path);
    return eddy__memview_field_names(&m->view, path);
}

/* ---------------------------------------------------------------- async calls */

typedef struct call_job {
    eddy__job job;
    eddy_ctx *task;
    eddy_async_call *call;
} call_job;

static void call_work(eddy__job *job)
{
    call_job *cj = (call_job *)job;
    eddy_async_call *c = cj->call;
    c->result = NULL;
    c->err = NULL;
    c->rc = c->fn(c->args, c->arg, &c->result, &c->err);
    if (c->rc == EDDY_OK) {
        eddy_error_free(c->err);
        c->err = NULL;
    } else {
        /* A failure hands out an error, never a result (eddy.h). */
        json_decref(c->result);
        c->result = NULL;
        if (c->err == NULL)
            c->err = eddy_error_new(eddy_err_name(c->rc), eddy_strerror(c->rc));
    }
}

static void call_done(eddy__job *job)
{
    call_job *cj = (call_job *)job;
    eddy_ctx *t = cj->task;
    if (job->canceled) { /* its run's earlier results never reached the disk */
        cj->call->result = NULL;
        cj->call->err = NULL;
        cj->call->rc = EDDY_ECANCELED;
        t->rt->stats.async_calls--; /* counted when handed over; it never ran */
        eddy__durable_job_canceled(t->rt);
    }
    if (--t->waiting == 0)
        eddy__task_ready(t);
}

/* Checks shared by every suspending call: EDDY_OK, a refusal, or
 * EDDY_ECANCELED when the runtime is stopping (no call starts then). */
static int can_suspend(eddy_ctx *ctx)
{
    if (ctx == NULL)
        return EDDY_EINVAL;
    int rc = usable_call(ctx, CTX_STALE("a call that suspends"));
    if (rc != EDDY_OK)
        return rc;
    if (ctx->coro == NULL || eddy__coro_current() != ctx->coro)
        return eddy__ctx_refuse(ctx, EDDY_ESTATE,
                                "a call that suspends was made outside the action's own coroutine");
    if (ctx->rt->stopping)
        return EDDY_ECANCELED;
    return EDDY_OK;
}

int eddy__ctx_can_suspend(eddy_ctx *ctx) /* for eddy_ctx_sleep (timer.c) */
{
    return can_suspend(ctx);
}

/* Submit n calls and suspend until every one has completed. The jobs live on
 * the suspended coroutine's stack (or in one allocation for many calls). */
static int run_calls(eddy_ctx *ctx, eddy_async_call *calls, size_t n)
{
    call_job local[8];
    call_job *jobs = n <= 8                          ? local
                     : n <= SIZE_MAX / sizeof(*jobs) ? malloc(n * sizeof(*jobs))
                                                     : NULL;
    if (jobs == NULL)
        return EDDY_ENOMEM;
    /* Calls run only once the results their run went on with are on disk:
     * the workers wait for the sync (eddy__durable_barrier tells which). */
    uint64_t barrier = eddy__durable_barrier(ctx);
    for (size_t i = 0; i < n; i++) {
        jobs[i].job.work = call_work;
        jobs[i].job.done = call_done;
        jobs[i].task = ctx;
        jobs[i].call = &calls[i];
        eddy__pool_submit_after(ctx->rt->pool, &jobs[i].job, barrier);
    }
    ctx->waiting += n;
    ctx->rt->stats.async_calls += n;
    while (ctx->waiting > 0) {
        ctx->state = EDDY_TASK_SUSPENDED;
        eddy__coro_yield();
    }
    int canceled = 0;
    for (size_t i = 0; i < n; i++)
        canceled |= jobs[i].job.canceled;
    if (jobs != local)
        free(jobs);
    return canceled ? EDDY_ECANCELED : EDDY_OK;
}

int eddy_ctx_execute_async_all(eddy_ctx *ctx, eddy_async_call *calls, size_t n)
{
    int rc = can_suspend(ctx);
    if (rc != EDDY_OK && rc != EDDY_ECANCELED)
        return rc; /* the calls untouched (eddy.h) */
    if (n > 0 && calls == NULL)
        return eddy__ctx_refuse(ctx, EDDY_EINVAL, "eddy_ctx_execute_async_all: calls is NULL");
    for (size_t i = 0; i < n; i++) {
        if (calls[i].fn == NULL)
            return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                    "eddy_ctx_execute_async_all: a call's fn is NULL");
    }
    if (rc == EDDY_ECANCELED) {
        /* Stopping: no worker takes any of them, and each says so, as a
         * call canceled in the pool does (call_done). */
        for (size_t i = 0; i < n; i++) {
            calls[i].rc = EDDY_ECANCELED;
            calls[i].result = NULL;
            calls[i].err = NULL;
        }
        return rc;
    }
    if (n == 0)
        return EDDY_OK;
    if ((rc = run_calls(ctx, calls, n)) != EDDY_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (calls[i].rc != EDDY_OK)
            return EDDY_ECALL;
    }
    return EDDY_OK;
}

int eddy_ctx_execute_async(eddy_ctx *ctx, eddy_call_fn fn, const json_t *args, void *arg,
                           json_t **result, eddy_error **err)
{
    if (result != NULL)
        *result = NULL;
    if (err != NULL)
        *err = NULL;
    eddy_async_call c = {.fn = fn, .args = args, .arg = arg};
    int rc = can_suspend(ctx);
    if (rc != EDDY_OK)
        return rc;
    if (fn == NULL)
        return eddy__ctx_refuse(ctx, EDDY_EINVAL, "eddy_ctx_execute_async: fn is NULL");
    if ((rc = run_calls(ctx, &c, 1)) != EDDY_OK)
        return rc;
    if (result != NULL)
        *result = c.result;
    else
        json_decref(c.result);
    if (err != NULL)
        *err = c.err;
    else
        eddy_error_free(c.err);
    return c.rc;
}
