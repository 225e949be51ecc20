/*
 * Python agents: the embedded interpreter, the `eddy` module and the driver
 * of Python action executions.
 *
 * Design notes
 * ------------
 * One interpreter per process, initialised by the first
 * eddy_plan_load_python() (Py_InitializeEx(0): no signal handlers) and
 * finalised when the last plan that uses it is freed, on any thread: both
 * under a process-wide lock taken before the GIL (agent.c).
 *
 * The GIL: the loading thread (the future mailbox thread) releases the GIL as
 * soon as the interpreter is up. From then on every entry into Python takes
 * it (PyGILState_Ensure) and gives it back when it returns, with two
 * exceptions for speed: the mailbox keeps it across up to 64 steps of one
 * batch and gives it back when the batch ends (py_pause, called by the
 * runtime), never holding it while the loop waits; and each worker keeps
 * its thread state from its first call to its exit. Workers take the GIL to
 * run the functions handed to ctx.execute_async() and friends.
 *
 * A Python action execution keeps its state in task->lang (a py_task): the
 * RunnerContext handed to the action and, for an `async def` action, its
 * coroutine. Coroutines are stepped with PyIter_Send() on the mailbox
 * thread's own stack, never on a C coroutine stack (task->coro stays NULL).
 * The awaitables that ctx.execute_async(), ctx.durable_execute_async() and
 * ctx.gather() return yield themselves to the driver the first time they are
 * awaited; the driver submits their pool jobs and suspends the task. The
 * jobs' done callbacks (loop thread, no GIL) journal durable outcomes and
 * make the task ready (or queue it for the group commit) when the last one
 * completed; the next step sends None and the awaitable returns its result
 * or raises. Anything else yielded is refused with a TypeError thrown into
 * the coroutine. ctx.gather() of coroutines (any awaitable but a call
 * among its arguments) returns a _Branches (module_py.h) instead, which steps
 * them itself, in rounds, and yields each round's calls to the driver as one
 * gather. ctx.sleep() returns a call too, without a function: the
 * driver starts a loop timer for it (src/exec/timer.h) rather than a job, or,
 * for 0 seconds, puts the task back at the end of the ready queue.
 *
 * contextvars: each action execution has a context of its own, copied from
 * the mailbox thread's when it starts, and entered around each of its steps
 * (and around the closing of an unfinished coroutine), as asyncio gives each
 * Task one: a ContextVar set (or decimal.localcontext() entered) by one
 * action is not seen by another stepped in between. A function run on a
 * worker runs in a copy of the action's context made when the call was made
 * (asyncio.to_thread's rule); one run by ctx.durable_execute() runs in the
 * action's own, as any function it calls.
 *
 * Durable calls follow the C rules (src/exec/durable.h): the journal
 * position is taken when ctx.durable_execute_async() is called, the outcome
 * is encoded on the worker (JSON, or pickle in a JSON wrapper) and journaled
 * by the done callback, and the task resumes after the commit. Without a
 * store nothing is encoded: durable calls simply run.
 */
#ifndef EDDY_PY_PY_H
#define EDDY_PY_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "exec/durable.h"
#include "exec/runtime.h"
#include "exec/timer.h"

/* What the messages say of a value past EDDY_VALUE_MAX_DEPTH. */
#define EDDY__PY_TOO_DEEP "nested deeper than EDDY_VALUE_MAX_DEPTH (1000) levels of lists and dicts"
_Static_assert(EDDY_VALUE_MAX_DEPTH == 1000, "EDDY__PY_TOO_DEEP names it");

/* ---------------------------------------------------------------- conversion (GIL held) */

/* New Python value for j (NULL is None); NULL with an exception set. */
PyObject *eddy__py_from_json(const json_t *j);

/*
 * New JSON value for o: dict (str keys), list, tuple, str, int (64-bit),
 * float (finite), bool, None. On failure returns NULL with a TypeError (or
 * ValueError, OverflowError) whose message starts with what and names the
 * place inside o ("attribute 'x' at ['a'][2]: ..."); a str (or dict key)
 * with a lone surrogate, which is not UTF-8, is a ValueError too.
 */
json_t *eddy__py_to_json(PyObject *o, const char *what);
/* The same with the name given as a format with up to two %s, filled from
 * arg1 and arg2 only when a message needs it ("%s attribute '%s'"). */
json_t *eddy__py_to_json_named(PyObject *o, const char *what, const char *arg1, const char *arg2);
/*
 * New JSON value for o when o is made exactly of dict (str keys), list, str,
 * int (64-bit), float (finite), bool and None, recursively: no tuple, no
 * subclass, so that eddy__py_from_json gives back the same types (a durable
 * result's replay must not differ from the first run). Otherwise NULL with a
 * TypeError, ValueError or OverflowError (without a message: the caller
 * pickles the value instead), or another exception (out of memory).
 */
json_t *eddy__py_to_json_exact(PyObject *o);

/* Why str s, which cannot be encoded as UTF-8, is refused, written into buf
 * (of size bytes): "'caf\udce9' holds a lone surrogate ('\udce9' at index
 * 3), which is not UTF-8 text (...)", for a message that says what s is. */
void eddy__py_surrogate_why(PyObject *s, char *buf, size_t size);

/* str(o) (o itself when it is a str) as UTF-8, in a new bytes object, with
 * each lone surrogate (what errors="surrogateescape" and os.fsdecode make of
 * bytes that are not UTF-8) written as a backslash escape (\udce9), so that
 * the text is valid UTF-8 wherever it goes (stderr, JSON, the journal).
 * NULL with an exception when str() fails. */
PyObject *eddy__py_text(PyObject *o);

/* The id of a durable call's function, fn.__module__ + "." +
 * fn.__qualname__, malloc'd into *out: 0, or -1 with an exception. A plain
 * function is read directly; anything else (partials, callable objects)
 * goes through the module's _function_id, whose result this equals. */
int eddy__py_function_id(PyObject *fn, char **out);

/* repr(o) for a message, which a repr that raises (or returns no str) does
 * not lose: then "<Foo object (repr failed)>", Foo the type's name. A new
 * reference; NULL with an exception only when out of memory. GIL held. */
PyObject *eddy__py_repr(PyObject *o);

/* The exception being raised, normalised, with its traceback attached; the
 * error indicator is cleared. A new reference (NULL when none is set). GIL held. */
PyObject *eddy__py_fetch_exception(void);

/* ---------------------------------------------------------------- interpreter */

/* Initialise the interpreter (first call) and take a reference on it. The
 * GIL is not held on return. */
int eddy__py_acquire(eddy_error **err);
/* Drop a reference; the last one finalises the interpreter. */
void eddy__py_release(void);

/* The interpreter eddy initialised is up (GIL held): put the guard that
 * shows the program's signal hook an agent's signal.signal() (process.c). */
void eddy__py_guard_signals(void);
/* It is about to be finalised (GIL held): let it finalise on a thread that
 * is not threading's main thread, and tell the program's thread-wait hook
 * of the agent's threads that finalising waits for (process.c). */
void eddy__py_before_finalize(void);

/* ---------------------------------------------------------------- the eddy module */

/* Types and helpers of the module, valid while the interpreter lives. */
typedef struct eddy__py_mod {
    PyObject *module;
    PyTypeObject *ctx_type;
    PyTypeObject *mem_type;
    PyTypeObject *call_type;
    PyTypeObject *gather_type;
    PyTypeObject *await_type; /* what __await__() of a call or a gather makes */
    PyObject *helpers;        /* the module's dict: the Python-level helpers */
    /* Helpers found so far, by the address of their name (a literal at each
     * call site): a lookup by C string made a str object each time. */
    struct {
        const char *name;
        PyObject *fn; /* borrowed from helpers */
    } found[16];
    int nfound;
    PyObject *s_eddy_type; /* "_eddy_type", interned */
} eddy__py_mod;

extern eddy__py_mod eddy__py;

/* The module's init function (for PyImport_AppendInittab). */
PyObject *eddy__py_module_init(void);

/* A call awaitable (ctx.execute_async, ctx.durable_execute_async, and
 * ctx.sleep, which waits on a loop timer instead of a worker). */
enum { EDDY_PY_CALL_NEW = 0, EDDY_PY_CALL_RUNNING, EDDY_PY_CALL_DONE };

typedef struct eddy__py_call {
    PyObject ob_base;
    eddy__job job;
    PyObject *ctxobj; /* the owner RunnerContext */
    PyObject *fn, *args, *kwargs;
    /* A call run on a worker (not a sleep, not a replay): a copy of the
     * action's contextvars context at the call, which the function runs in
     * (as asyncio.to_thread runs it). */
    PyObject *pyctx;
    int state;
    int durable;
    int journal;    /* durable, with a store: the worker encodes the outcome */
    char *fn_id;    /* durable: module + qualified name */
    eddy__dcall dc; /* durable: the call's planned position */
    PyObject *result, *exc;
    /* Durable: the outcome encoded by the worker for the journal. */
    char *payload, *err_type, *err_msg;
    /* ctx.sleep(): no function; the driver starts the sleep, whose done
     * callback (loop thread, no GIL) ends the call. */
    int is_sleep;
    uint64_t sleep_ms;
    eddy__sleep sleep;
    /* In its task's list of calls not awaited yet (eddy__py_task.unawaited)
     * from its making by execute_async or durable_execute_async until it is
     * awaited (the driver starts it, or a replay's result is returned) or
     * its end; else self-linked.
     * Touched with the GIL held only. */
    eddy__queue unawaited;
    /* The awaiter (borrowed) whose last step yielded the call, until the
     * driver takes it (eddy__py_take_handed). */
    PyObject *handed;
} eddy__py_call;

typedef struct eddy__py_gather {
    PyObject ob_base;
    PyObject *ctxobj;
    PyObject *calls; /* tuple of eddy__py_call */
    int return_exceptions;
    PyObject *handed; /* as a call's */
} eddy__py_gather;

/* What a Python action execution keeps in task->lang. */
typedef struct eddy__py_task {
    PyObject *ctxobj; /* the RunnerContext handed to the action */
    PyObject *coro;   /* an async action's coroutine while unfinished */
    /* Its contextvars context: a copy of the one current when it started,
     * entered around its call (def) and each step of its coroutine, as
     * asyncio runs each Task in a copy of its own. */
    PyObject *pyctx;
    PyObject *waiting; /* the call or gather it waits for */
    int commit_wait;   /* a durable outcome was journaled: resume after the commit */
    /* Calls made and not awaited (yet): those alive, in a list, and those
     * already gone, counted, with the function of the first (a reference).
     * A call never awaited never runs: the end of the action warns. */
    eddy__queue unawaited;
    size_t unawaited_gone;
    PyObject *unawaited_fn;
} eddy__py_task;

/* A new RunnerContext for task t. */
PyObject *eddy__py_ctx_new(eddy_ctx *t);
/* The task of a RunnerContext, NULL once invalidated. */
eddy_ctx *eddy__py_ctx_task(PyObject *ctxobj);
/* The action execution ended (dropped: unfinished, its effects discarded):
 * the context (and its memory objects) refuse further use. */
void eddy__py_ctx_invalidate(PyObject *ctxobj, int dropped);

/* The action execution of t ends (finished: it returned, without an
 * exception): with finished, warn on stderr when it made calls it never
 * awaited; either way forget them. GIL held. */
void eddy__py_unawaited_end(eddy_ctx *t, int finished);

/* Whether aw, a call or a gather that the coroutine yielded to the driver,
 * comes from the iterator of its __await__() (whose last step yielded it,
 * and which gives the action its result): 1, taking the mark; else 0 with a
 * TypeError set (yielded directly, say by an __await__ that yields the call
 * itself: its result would be lost). GIL held. */
int eddy__py_take_handed(PyObject *aw);

/* Whether generator r is a generator-based coroutine (@types.coroutine),
 * which is stepped like a coroutine; a plain generator is not awaitable. */
int eddy__py_is_iterable_coroutine(PyObject *r);

/* y, which a coroutine yielded to eddy, is not a call or a gather (asyncio's
 * future, say): set the TypeError that eddy throws into the coroutine. GIL
 * held. */
void eddy__py_not_eddy(PyObject *y);

/* Call c is awaited (the driver starts it): no longer one the action's end
 * warns about as never awaited. GIL held. */
void eddy__py_call_awaited(eddy__py_call *c);

/* The job callbacks of a call (agent.c). */
void eddy__py_call_work(eddy__job *job);
void eddy__py_call_done(eddy__job *job);
/* The done callback of a ctx.sleep() call's sleep (loop thread, no GIL). */
void eddy__py_sleep_done(eddy__sleep *s);

/* Set the task's failure from the Python exception being raised (cleared). */
void eddy__py_fail_task(eddy_ctx *t);

#endif /* EDDY_PY_PY_H */
