/*
 * Python agents: the interpreter's lifetime, loading an agent file into a
 * plan, and the driver that steps Python action executions. See the design
 * notes in py.h.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/event.h"
#include "py/py.h"

/* ---------------------------------------------------------------- interpreter */

/*
 * Plans load and free on any thread, at once: the count of the
 * interpreter's users, and its initialisation and finalisation, are under
 * py_lock, held until the interpreter is up (a second load waits for it) or
 * gone (a load waits, and initialises it again). Lock order: py_lock, then
 * the GIL. No eddy path waits for py_lock with the GIL held (the loader and
 * the frees call in without it), so the program must not either: its
 * finalise hook, called under py_lock, may not load or free a Python plan.
 */
static pthread_mutex_t py_lock = PTHREAD_MUTEX_INITIALIZER;
static int py_users; /* plans (and tests) holding the interpreter; py_lock */
static int py_owned; /* eddy initialised it (and finalises it); py_lock */

static PyObject *init_module(void)
{
    return eddy__py_module_init();
}

/*
 * sys.stdout is block-buffered when fd 1 is not a terminal, and flushed when
 * the interpreter ends: after eddy's last messages. When fd 1 is the file fd
 * 2 is (the eddy command points fd 1 at stderr while its output goes to
 * stdout; or `>log 2>&1`), make it line-buffered, as sys.stderr is, so that
 * what agents print comes out in order with eddy's messages. GIL held.
 */
static void stdout_like_stderr(void)
{
    struct stat o, e;
    if (fstat(STDOUT_FILENO, &o) != 0 || fstat(STDERR_FILENO, &e) != 0 || o.st_dev != e.st_dev ||
        o.st_ino != e.st_ino)
        return;
    PyObject *out = PySys_GetObject("stdout"); /* borrowed; None when fd 1 was closed */
    PyObject *reconf =
        out != NULL && out != Py_None ? PyObject_GetAttrString(out, "reconfigure") : NULL;
    PyObject *args = PyTuple_New(0), *kw = Py_BuildValue("{s:O}", "line_buffering", Py_True);
    PyObject *r =
        reconf != NULL && args != NULL && kw != NULL ? PyObject_Call(reconf, args, kw) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(reconf);
    PyErr_Clear(); /* a nicety: sys.stdout stays as it was */
}

/* The first user: initialise the interpreter, or use the program's. */
static int py_start(eddy_error **err)
{
    if (Py_IsInitialized()) {
        /* Embedded in a process that runs Python already: use it as it is. */
        py_owned = 0;
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *m = PyImport_ImportModule("eddy");
        Py_XDECREF(m);
        if (m == NULL)
            PyErr_Clear();
        PyGILState_Release(g);
        /* Only eddy's own module, made by its init here, will do: another
         * module named eddy leaves eddy__py empty. */
        if (m == NULL || eddy__py.helpers == NULL)
            return eddy__error_set(err, EDDY_ENOTSUP, "plan",
                                   "Python is already running in this process without the "
                                   "eddy module");
        return EDDY_OK;
    }
    /* The inittab is reset by every finalisation: register each time. */
    if (PyImport_AppendInittab("eddy", init_module) != 0)
        return eddy__error_set(err, EDDY_ENOMEM, "memory", "cannot register the eddy module");
    Py_InitializeEx(0); /* no signal handlers: the program installs its own */
    py_owned = 1;
    PyObject *m = PyImport_ImportModule("eddy");
    if (m == NULL) {
        PyErr_Print();
        Py_FinalizeEx();
        return eddy__error_set(err, EDDY_EPLAN, "plan", "cannot initialise the eddy module");
    }
    Py_DECREF(m);
    /* threading's main thread is the thread that first imports it. Imported
     * later by a thread other than this one (a plan loaded elsewhere), it
     * would take a thread whose Python state goes after each call, which
     * releases its lock: Python's exit then finds the main thread ended and
     * no longer waits for the agent's threads. This thread's state lives
     * until the finalisation. */
    PyObject *th = PyImport_ImportModule("threading");
    Py_XDECREF(th);
    PyErr_Clear();
    stdout_like_stderr();
    eddy__py_guard_signals();
    /* From here on the GIL is taken only to run Python. */
    PyEval_SaveThread();
    return EDDY_OK;
}

/* The last user is gone: forget the module and, when eddy initialised the
 * interpreter, finalise it. */
static void py_stop(void)
{
    /* In the program's interpreter, the module stays in sys.modules and is
     * not made again: what it holds stays for the next load. */
    if (!py_owned)
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_CLEAR(eddy__py.module);
    Py_CLEAR(eddy__py.ctx_type);
    Py_CLEAR(eddy__py.mem_type);
    Py_CLEAR(eddy__py.call_type);
    Py_CLEAR(eddy__py.gather_type);
    Py_CLEAR(eddy__py.await_type);
    Py_CLEAR(eddy__py.s_eddy_type);
    eddy__py.nfound = 0;
    eddy__py.helpers = NULL;
    eddy__py_before_finalize(); /* finalising waits for the agent's threads */
    /* Finalise on the thread that holds the GIL; the thread state goes too. */
    Py_FinalizeEx();
    (void)g;
}

/* Holds taken with eddy_python_hold(), each one of py_users; py_lock. */
static int py_holds;

/* One more user of the interpreter (started when it had none); py_lock. */
static int use_locked(eddy_error **err)
{
    int rc = py_users > 0 ? EDDY_OK : py_start(err);
    if (rc == EDDY_OK)
        py_users++;
    return rc;
}

/* One fewer (finalised when none is left); py_lock. */
static void unuse_locked(void)
{
    if (--py_users == 0)
        py_stop();
}

int eddy__py_acquire(eddy_error **err)
{
    pthread_mutex_lock(&py_lock);
    int rc = use_locked(err);
    pthread_mutex_unlock(&py_lock);
    return rc;
}

void eddy__py_release(void)
{
    pthread_mutex_lock(&py_lock);
    if (py_users > py_holds) /* a plan's use, not a hold */
        unuse_locked();
    pthread_mutex_unlock(&py_lock);
}

int eddy_python_hold(eddy_error **err)
{
    pthread_mutex_lock(&py_lock);
    int rc = use_locked(err);
    if (rc == EDDY_OK)
        py_holds++;
    pthread_mutex_unlock(&py_lock);
    return rc;
}

void eddy_python_release(void)
{
    pthread_mutex_lock(&py_lock);
    if (py_holds > 0) { /* a release of no hold must not end a plan's use */
        py_holds--;
        unuse_locked();
    }
    pthread_mutex_unlock(&py_lock);
}

static void lang_free(void *lang)
{
    (void)lang;
    eddy__py_release();
}

/* ---------------------------------------------------------------- failures */

/* The Python exception being raised (cleared), as an eddy error: type is the
 * exception's qualified class name, message str(exc) and the traceback as
 * the module's function format (_format_exception, say) writes it. Each
 * part stands on its own: a str() that raises leaves the type and the
 * traceback (traceback prints such an exception too), and a lone surrogate
 * (text decoded from bytes with errors="surrogateescape", by os.fsdecode,
 * say) is written as a backslash escape, since the error goes to stderr and
 * into JSON dead letters, which hold UTF-8. */
static eddy_error *error_from_exception(const char *format)
{
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    if (val == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return eddy_error_new("SystemError", "an exception without a value");
    }
    if (tb != NULL)
        PyException_SetTraceback(val, tb);
    PyObject *cls = (PyObject *)Py_TYPE(val);
    PyObject *q =
        PyObject_Vectorcall(PyDict_GetItemString(eddy__py.helpers, "_qualified"), &cls, 1, NULL);
    PyObject *qname = q != NULL ? eddy__py_text(q) : NULL;
    PyErr_Clear();
    PyObject *s = PyObject_Vectorcall(PyDict_GetItemString(eddy__py.helpers, "_exception_message"),
                                      &val, 1, NULL);
    PyObject *msg = s != NULL ? eddy__py_text(s) : NULL;
    PyErr_Clear();
    PyObject *t =
        PyObject_Vectorcall(PyDict_GetItemString(eddy__py.helpers, format), &val, 1, NULL);
    PyObject *trace = t != NULL ? eddy__py_text(t) : NULL;
    PyErr_Clear();
    const char *m = msg != NULL ? PyBytes_AS_STRING(msg) : "(the exception cannot be formatted)";
    const char *hint = "";
    if (PyErr_GivenExceptionMatches(val, PyExc_RuntimeError) &&
        (strstr(m, "no running event loop") != NULL ||
         strstr(m, "await wasn't used with future") != NULL))
        hint = " (eddy runs actions without an asyncio event loop: await only "
               "ctx.execute_async(), ctx.durable_execute_async(), ctx.gather() or "
               "ctx.sleep(), which takes the place of asyncio.sleep())";
    if (m[0] == '\0')
        /* raise ValueError(), or CPython's own MemoryError: the line would
         * end at "ValueError: ". */
        m = PyErr_GivenExceptionMatches(val, PyExc_MemoryError) ? "out of memory" : "(no message)";
    eddy_error *e =
        eddy_error_newf(qname != NULL ? PyBytes_AS_STRING(qname) : Py_TYPE(val)->tp_name,
                        "%s%s\n%s", m, hint, trace != NULL ? PyBytes_AS_STRING(trace) : "");
    Py_XDECREF(trace);
    Py_XDECREF(t);
    Py_XDECREF(msg);
    Py_XDECREF(s);
    Py_XDECREF(qname);
    Py_XDECREF(q);
    Py_XDECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return e;
}

void eddy__py_fail_task(eddy_ctx *t)
{
    eddy_error *e = error_from_exception("_format_exception");
    eddy_error_free(t->err);
    t->err = e != NULL ? e : eddy_error_new("memory", "out of memory");
    t->rc = EDDY_EACTION;
}

/* ---------------------------------------------------------------- the driver */

/* Enter the action execution's contextvars context (see py.h): 1, or 0 with
 * an exception set. */
static int context_enter(eddy__py_task *pt)
{
    return PyContext_Enter(pt->pyctx) == 0;
}

/* Leave it; no exception is pending (the step's failure went into the
 * task's error). It fails only when what ran left another context current
 * (a C extension that entered one and did not leave it): nothing to undo. */
static void context_exit(eddy__py_task *pt)
{
    if (PyContext_Exit(pt->pyctx) != 0)
        PyErr_Clear();
}

static void task_state_free(eddy_ctx *t)
{
    eddy__py_task *pt = t->lang;
    if (pt == NULL)
        return;
    /* Before the context is refused: the calls the action left (its
     * locals are gone with its end) are counted by then. */
    eddy__py_unawaited_end(t, pt->coro == NULL && t->rc == EDDY_OK);
    /* An unfinished coroutine (the runtime drops it) is closed: its finally
     * blocks run, and find the context refused, as after the end of an
     * action: what they would send or write would be discarded with it.
     * They run in the action's contextvars context, as its steps did. */
    eddy__py_ctx_invalidate(pt->ctxobj, pt->coro != NULL);
    if (pt->coro != NULL) {
        int entered = pt->pyctx != NULL && context_enter(pt);
        if (!entered)
            PyErr_Clear(); /* an entry refused: closed in the context current */
        PyObject *r = PyObject_CallMethod(pt->coro, "close", NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
        if (entered)
            context_exit(pt);
    }
    Py_CLEAR(pt->coro);
    Py_CLEAR(pt->ctxobj);
    Py_CLEAR(pt->waiting);
    Py_CLEAR(pt->pyctx);
    /* What closing the coroutine freed went away unwarned; what it left
     * still points at pt. */
    eddy__py_unawaited_end(t, 0);
    free(pt);
    t->lang = NULL;
}

/* Why eddy refuses what a coroutine yielded: one bit each. */
enum {
    REFUSED_NOT_EDDY = 1, /* not a call or a gather (asyncio's, say) */
    REFUSED_DIRECT = 2,   /* a call or a gather not yielded by its awaiter */
    REFUSED_FOREIGN = 4,  /* a call of another action execution */
    REFUSED_STOPPING = 8, /* eddy is stopping: a durable call's start is not journaled */
    REFUSED_RUNNING = 16, /* awaited while already running */
};

/* The coroutine yielded y: submit the calls it waits for and return 1, or
 * return 0 with *throw set to the exception to throw into the coroutine and
 * *why to why (a REFUSED_ bit). */
static int submit(eddy_ctx *t, eddy__py_task *pt, PyObject *y, PyObject **throw, int *why)
{
    PyObject *calls[1];
    PyObject *const *v = calls;
    Py_ssize_t n = 0;
    if (Py_IS_TYPE(y, eddy__py.call_type)) {
        calls[0] = y;
        n = 1;
    } else if (Py_IS_TYPE(y, eddy__py.gather_type)) {
        PyObject *tuple = ((eddy__py_gather *)y)->calls;
        v = &PyTuple_GET_ITEM(tuple, 0);
        n = PyTuple_GET_SIZE(tuple);
    } else {
        eddy__py_not_eddy(y);
        *why = REFUSED_NOT_EDDY;
        *throw = eddy__py_fetch_exception();
        return 0;
    }
    if (!eddy__py_take_handed(y)) {
        *why = REFUSED_DIRECT;
        *throw = eddy__py_fetch_exception();
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        eddy__py_call *c = (eddy__py_call *)v[i];
        if (eddy__py_ctx_task(c->ctxobj) != t) {
            PyErr_SetString(PyExc_RuntimeError,
                            "an awaitable of another action execution was awaited");
            *why = REFUSED_FOREIGN;
            *throw = eddy__py_fetch_exception();
            return 0;
        }
    }
    size_t submitted = 0, started = 0, jobs = 0;
    int nomem = 0;
    /* The calls run once the results the run went on with are on disk, and
     * a call with a reconciler once its start is (journaled PENDING: after
     * a crash in the call, its reconciler runs in its place). */
    uint64_t barrier = eddy__durable_barrier(t);
    for (Py_ssize_t i = 0; i < n; i++) {
        eddy__py_call *c = (eddy__py_call *)v[i];
        if (c->state != EDDY_PY_CALL_NEW || !c->journal || c->dc.what != EDDY_DCALL_RUN_PENDING)
            continue;
        if (eddy__durable_record(t, c->fn_id, &c->dc, EDDY_JCALL_PENDING, NULL, NULL, NULL) !=
            EDDY_OK) {
            PyErr_SetString(PyExc_RuntimeError, "eddy is stopping: durable call canceled");
            *why = REFUSED_STOPPING;
            *throw = eddy__py_fetch_exception();
            return 0;
        }
        barrier = eddy__durable_barrier_open(t);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        eddy__py_call *c = (eddy__py_call *)v[i];
        if (c->state != EDDY_PY_CALL_NEW)
            continue;
        started++;
        if (c->is_sleep) {
            /* A loop timer, no worker. 0 ms, or a stopping runtime (which
             * drops the task at its next step): done at once. */
            int rc = c->sleep_ms > 0 ? eddy__sleep_start(&c->sleep, c->sleep_ms) : EDDY_ECANCELED;
            nomem |= rc == EDDY_ENOMEM;
            c->state = rc == EDDY_OK ? EDDY_PY_CALL_RUNNING : EDDY_PY_CALL_DONE;
            submitted += rc == EDDY_OK;
            continue;
        }
        c->state = EDDY_PY_CALL_RUNNING;
        c->job.work = eddy__py_call_work;
        c->job.done = eddy__py_call_done;
        eddy__pool_submit_after(t->rt->pool, &c->job, barrier);
        submitted++;
        jobs++;
    }
    if (started == 0) {
        PyErr_SetString(PyExc_RuntimeError, "an eddy call was awaited while already running");
        *why = REFUSED_RUNNING;
        *throw = eddy__py_fetch_exception();
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        eddy__py_call_awaited((eddy__py_call *)v[i]);
    t->waiting += submitted;
    t->rt->stats.async_calls += jobs;
    Py_XSETREF(pt->waiting, Py_NewRef(y));
    if (submitted == 0) /* only sleeps of 0 s: a yield, behind every ready task */
        eddy__task_ready_last(t);
    if (nomem) /* not the action's fault: eddy stops (which drops the task) */
        eddy__runtime_fail(t->rt, EDDY_ENOMEM,
                           eddy_error_new("memory", "out of memory for a sleep's timer"));
    return 1;
}

/* coro.throw(exc): like PyIter_Send. */
static PySendResult throw_into(PyObject *coro, PyObject *exc, PyObject **res)
{
    *res = PyObject_CallMethod(coro, "throw", "O", exc);
    if (*res != NULL)
        return PYGEN_NEXT;
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb);
        PyErr_NormalizeException(&type, &val, &tb);
        *res = val != NULL ? PyObject_GetAttrString(val, "value") : Py_NewRef(Py_None);
        Py_XDECREF(type);
        Py_XDECREF(val);
        Py_XDECREF(tb);
        return *res != NULL ? PYGEN_RETURN : PYGEN_ERROR;
    }
    return PYGEN_ERROR;
}

/*
 * The coroutine caught the error eddy raised in it for what it yielded and
 * yielded res, which eddy refuses for the same reason (with refusal): fail
 * the action. Raised in again, the error could be caught again, and so on
 * for ever, on the mailbox thread: every key starved, and a stop unseen
 * (the loop that takes it in does not run meanwhile).
 */
static void fail_swallowed(eddy_ctx *t, PyObject *coro, PyObject *res, PyObject *refusal)
{
    /* Where it yielded: the frames of the coroutine and of what it awaits
     * (its `yield from` chain), outermost first. */
    PyObject *frames = PyList_New(0);
    PyObject *o = Py_NewRef(coro);
    while (frames != NULL && o != NULL && PyList_GET_SIZE(frames) < 64) {
        int coroutine = PyCoro_CheckExact(o);
        if (!coroutine && !PyGen_Check(o))
            break; /* an iterator of another kind: no frame */
        PyObject *f = PyObject_GetAttrString(o, coroutine ? "cr_frame" : "gi_frame");
        if (f != NULL && PyFrame_Check(f) && PyList_Append(frames, f) != 0)
            Py_CLEAR(frames);
        Py_XDECREF(f);
        Py_SETREF(o, PyObject_GetAttrString(o, coroutine ? "cr_await" : "gi_yieldfrom"));
    }
    Py_XDECREF(o);
    PyErr_Clear(); /* the frames are a nicety */
    PyObject *r = eddy__py_repr(res);
    if (r != NULL)
        PyErr_Format((PyObject *)Py_TYPE(refusal),
                     "action '%s' for key %s caught the %s that eddy raised in it for what it "
                     "awaited, and then yielded %U: eddy fails the action rather than raise an "
                     "error in it again, which it could catch again for ever (%S)",
                     t->action->name, t->key->text, Py_TYPE(refusal)->tp_name, r, refusal);
    Py_XDECREF(r);
    for (Py_ssize_t i = frames != NULL ? PyList_GET_SIZE(frames) : 0; i-- > 0;)
        PyTraceBack_Here((PyFrameObject *)PyList_GET_ITEM(frames, i)); /* innermost first */
    Py_XDECREF(frames);
    eddy__py_fail_task(t);
}

/*
 * Run the coroutine until it finishes (1) or waits for calls (0). What it
 * yields that eddy refuses gets an error thrown into it, which it may catch
 * and go on; but when, in the same step, it yields again something refused
 * for a reason it has already been told (refused: the REFUSED_ bits thrown
 * in this step), the action fails at once, instead of an error raised in
 * it again that it could catch again for ever (fail_swallowed). Each reason
 * is thrown once per step at most: an error of another reason is thrown
 * as the first one was.
 */
static int drive(eddy_ctx *t, eddy__py_task *pt)
{
    PyObject *exc = NULL;
    int refused = 0;
    for (;;) {
        PyObject *res = NULL;
        PySendResult r;
        if (exc != NULL) {
            r = throw_into(pt->coro, exc, &res);
            Py_CLEAR(exc);
        } else {
            r = PyIter_Send(pt->coro, Py_None, &res);
        }
        int finished = 1, suspended = 0;
        if (r == PYGEN_RETURN) {
            Py_XDECREF(res);
            Py_CLEAR(pt->coro);
            t->rc = EDDY_OK;
        } else if (r == PYGEN_ERROR) {
            Py_CLEAR(pt->coro); /* finished by its exception */
            eddy__py_fail_task(t);
        } else {
            int why = 0;
            suspended = submit(t, pt, res, &exc, &why);
            if (!suspended && (refused & why) != 0) /* refused again: the task ends */
                fail_swallowed(t, pt->coro, res, exc);
            else
                finished = 0;
            refused |= why;
            Py_DECREF(res);
        }
        if (finished) {
            Py_XDECREF(exc);
            return 1; /* an unfinished coroutine is closed as the task is freed */
        }
        if (suspended)
            return 0;
    }
}

/* Whether generator r is a generator-based coroutine (@types.coroutine),
 * which is stepped like a coroutine; a plain generator is not awaitable. */
int eddy__py_is_iterable_coroutine(PyObject *r)
{
    PyObject *code = PyObject_GetAttrString(r, "gi_code");
    int yes = code != NULL && PyCode_Check(code) &&
              (((PyCodeObject *)code)->co_flags & CO_ITERABLE_COROUTINE) != 0;
    if (code == NULL)
        PyErr_Clear();
    Py_XDECREF(code);
    return yes;
}

/* The first step of an action execution, in its contextvars context: call
 * the action; a coroutine is driven on. */
static int call_action(eddy_ctx *t, eddy__py_task *pt, PyObject *fn)
{
    PyObject *attrs = eddy__py_from_json(eddy_event_attrs(t->event));
    PyObject *type = attrs != NULL ? PyUnicode_FromString(eddy_event_type(t->event)) : NULL;
    PyObject *args[2] = {type, attrs};
    PyObject *ev = type != NULL
                       ? PyObject_Vectorcall(PyDict_GetItemString(eddy__py.helpers, "_make_event"),
                                             args, 2, NULL)
                       : NULL;
    Py_XDECREF(type);
    Py_XDECREF(attrs);
    if (ev == NULL) {
        eddy__py_fail_task(t);
        return 1;
    }
    PyObject *cargs[2] = {ev, pt->ctxobj};
    PyObject *r = PyObject_Vectorcall(fn, cargs, 2, NULL);
    Py_DECREF(ev);
    if (r == NULL) {
        eddy__py_fail_task(t);
        return 1;
    }
    if (PyCoro_CheckExact(r) || (PyGen_CheckExact(r) && eddy__py_is_iterable_coroutine(r))) {
        pt->coro = r;
        return drive(t, pt);
    }
    if (PyAsyncGen_CheckExact(r) || PyGen_CheckExact(r)) {
        /* The decorator refuses generator functions, but a callable object
         * (or a wrapper) can still return a generator or an async generator,
         * which the driver cannot step as a coroutine. */
        PyErr_Format(PyExc_TypeError,
                     "action '%s' returned %s %R, which eddy does not run: an action is a "
                     "function or a coroutine function (async def), without yield",
                     t->action->name,
                     PyAsyncGen_CheckExact(r) ? "an async generator" : "a generator", r);
        Py_DECREF(r);
        eddy__py_fail_task(t);
        return 1;
    }
    Py_DECREF(r); /* a def action's return value is ignored */
    t->rc = EDDY_OK;
    return 1;
}

static int first_step(eddy_ctx *t, PyObject *fn)
{
    eddy__py_task *pt = calloc(1, sizeof(*pt));
    if (pt == NULL) {
        t->rc = EDDY_ENOMEM;
        return 1;
    }
    t->lang = pt;
    eddy__queue_init(&pt->unawaited);
    if ((pt->ctxobj = eddy__py_ctx_new(t)) == NULL ||
        (pt->pyctx = PyContext_CopyCurrent()) == NULL || !context_enter(pt)) {
        eddy__py_fail_task(t);
        return 1;
    }
    int finished = call_action(t, pt, fn);
    context_exit(pt);
    return finished;
}

/*
 * The GIL on the mailbox thread: the first Python step of a batch takes it
 * and keeps it for the next ones, up to GIL_BATCH steps; the runtime calls
 * py_pause() when the batch ends. Taken and released per step, it went to
 * a waiting worker after every step, and the mailbox queued behind the
 * workers for the next one (at 64 workers, ~2.5 ms per call of a run).
 */
#define GIL_BATCH 64

static _Thread_local struct {
    int held, steps;
    PyGILState_STATE g;
} batch;

static void py_pause(void)
{
    if (batch.held) {
        batch.held = 0;
        PyGILState_Release(batch.g);
    }
}

static void gil_take(void)
{
    if (batch.held && batch.steps >= GIL_BATCH)
        py_pause();
    if (!batch.held) {
        batch.g = PyGILState_Ensure();
        batch.held = 1;
        batch.steps = 0;
    }
    batch.steps++;
}

static int py_step(eddy_ctx *t)
{
    gil_take();
    eddy__py_task *pt = t->lang;
    int finished;
    if (pt == NULL) {
        finished = first_step(t, t->action->impl);
    } else if (t->rt->stopping) {
        t->rc = EDDY_ECANCELED; /* its effects are discarded anyway */
        finished = 1;
    } else if (!context_enter(pt)) {
        eddy__py_fail_task(t);
        finished = 1;
    } else {
        Py_CLEAR(pt->waiting);
        finished = drive(t, pt);
        context_exit(pt);
    }
    if (finished)
        task_state_free(t);
    return finished; /* the GIL stays for the next step: py_pause() */
}

static void py_discard(eddy_ctx *t)
{
    PyGILState_STATE g = PyGILState_Ensure();
    task_state_free(t);
    PyGILState_Release(g);
}

static void py_free_impl(void *impl)
{
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)impl);
    PyGILState_Release(g);
}

static const eddy__action_ops py_ops = {
    .step = py_step,
    .discard = py_discard,
    .free_impl = py_free_impl,
    .pause = py_pause,
};

/* ---------------------------------------------------------------- loading */

/*
 * Every load error reads "cannot load Python agent PATH: ...", PATH as the
 * caller gave it. A failure eddy finds itself (_LoadError: the file cannot be
 * read, no actions, ...) is one line; an exception from the agent's own code
 * comes with its traceback, less eddy's and importlib's frames.
 */
static int load_error(eddy_error **err, const char *path)
{
    PyObject *load_error_type = PyDict_GetItemString(eddy__py.helpers, "_LoadError");
    if (load_error_type != NULL && PyErr_ExceptionMatches(load_error_type)) {
        PyObject *exc = eddy__py_fetch_exception();
        PyObject *msg = exc != NULL ? eddy__py_text(exc) : NULL;
        const char *m = msg != NULL ? PyBytes_AS_STRING(msg) : NULL;
        int rc = eddy__error_set(err, EDDY_EPLAN, "plan", "cannot load Python agent %s: %s", path,
                                 m != NULL ? m : "(the error cannot be formatted)");
        PyErr_Clear();
        Py_XDECREF(msg);
        Py_XDECREF(exc);
        return rc;
    }
    eddy_error *e = error_from_exception("_format_load_exception");
    const char *m = e != NULL ? eddy_error_message(e) : "out of memory";
    size_t n = strlen(m);
    while (n > 0 && m[n - 1] == '\n') /* the traceback's own end of line */
        n--;
    int rc = eddy__error_set(err, EDDY_EPLAN, "plan", "cannot load Python agent %s: %s: %.*s", path,
                             e != NULL ? eddy_error_type(e) : "MemoryError", (int)n, m);
    eddy_error_free(e);
    return rc;
}

static int add_actions(eddy_plan *plan, const char *path, PyObject *list, eddy_error **err)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *a = PyList_GET_ITEM(list, i);
        const char *name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(a, 0));
        PyObject *fn = PyTuple_GET_ITEM(a, 1);
        PyObject *types = PyTuple_GET_ITEM(a, 2);
        Py_ssize_t nt = PyTuple_GET_SIZE(types);
        if (name == NULL) {
            /* A surrogate in a name set through __name__, say. */
            PyErr_Clear();
            return eddy__error_set(err, EDDY_EPLAN, "plan",
                                   "cannot load Python agent %s: the name of its action %zd "
                                   "cannot be encoded as UTF-8",
                                   path, (size_t)i + 1);
        }
        if (*name == '\0')
            return eddy__error_set(err, EDDY_EPLAN, "plan",
                                   "cannot load Python agent %s: its action %zd has an empty "
                                   "name",
                                   path, (size_t)i + 1);
        const char **tv = calloc((size_t)nt + 1, sizeof(*tv));
        if (tv == NULL)
            return eddy__error_set(err, EDDY_ENOMEM, "memory", "out of memory");
        for (Py_ssize_t k = 0; k < nt; k++) {
            if ((tv[k] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(types, k))) == NULL) {
                PyErr_Clear();
                free(tv);
                return eddy__error_set(err, EDDY_EPLAN, "plan",
                                       "cannot load Python agent %s: action '%s' listens to an "
                                       "event type that cannot be encoded as UTF-8",
                                       path, name);
            }
        }
        int rc = eddy__plan_add(plan, name, tv, NULL, NULL, &py_ops, fn);
        free(tv);
        if (rc == EDDY_OK) {
            Py_INCREF(fn); /* the plan's reference */
            continue;
        }
        if (rc == EDDY_EINVAL) /* plan->why names the action and says why */
            return eddy__error_set(err, EDDY_EPLAN, "plan", "cannot load Python agent %s: %s", path,
                                   plan->why);
        return eddy__error_set(err, rc, "memory",
                               "cannot load Python agent %s: cannot add action '%s': %s", path,
                               name, eddy_strerror(rc));
    }
    return EDDY_OK;
}

int eddy_plan_load_python(eddy_plan *plan, const char *path, const char *agent_class,
                          eddy_error **err)
{
    if (plan == NULL || path == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "plan", "eddy_plan_load_python: %s is NULL",
                               plan == NULL ? "plan" : "path");
    if (plan->lang != NULL && plan->lang_free != lang_free)
        return eddy__error_set(err, EDDY_EINVAL, "plan",
                               "cannot load Python agent %s: the plan already holds another "
                               "language runtime",
                               path);
    int rc = eddy__py_acquire(err);
    if (rc != EDDY_OK)
        return rc;
    if (plan->lang == NULL) {
        plan->lang = &py_users;
        plan->lang_free = lang_free;
    } else {
        eddy__py_release(); /* the plan holds the interpreter already */
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *args[2] = {PyUnicode_DecodeFSDefault(path), agent_class != NULL
                                                              ? PyUnicode_FromString(agent_class)
                                                              : Py_NewRef(Py_None)};
    PyObject *list = NULL;
    if (args[0] != NULL && args[1] != NULL)
        list = PyObject_Vectorcall(PyDict_GetItemString(eddy__py.helpers, "_load"), args, 2, NULL);
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    size_t before = plan->n;
    if (list == NULL)
        rc = load_error(err, path);
    else
        rc = add_actions(plan, path, list, err);
    if (rc == EDDY_OK && eddy__plan_add_file(plan, path) != EDDY_OK)
        rc = eddy__error_set(err, EDDY_ENOMEM, "memory", "cannot load Python agent %s: %s", path,
                             eddy_strerror(EDDY_ENOMEM));
    /* The interpreter stays: finalising it now could break a later load of a
     * module that does not survive re-initialisation. */
    if (rc != EDDY_OK)
        eddy__plan_truncate(plan, before);
    Py_XDECREF(list);
    PyGILState_Release(g);
    return rc;
}
