/*
 * eddy: a runtime for event-driven agents over keyed event streams.
 *
 * This is the only public header. What is not declared here is not API.
 *
 * Threads
 * -------
 * A runtime and everything it owns (its plan, contexts, memory handles, events
 * handed to it) belong to its mailbox thread: the thread that created it with
 * eddy_runtime_new(), which must also be the one to call eddy_runtime_run()
 * (from any other, that returns EDDY_EWRONGTHREAD). Every eddy_ctx_* and
 * eddy_memory_* call first compares its context or memory handle with the
 * action execution that runs on the calling thread, reading nothing of the
 * handle before, and refuses, without touching state (the getters return
 * NULL instead):
 *  - with EDDY_EWRONGTHREAD, on a thread that is no mailbox thread (one
 *    that made a runtime not yet freed): a worker running an eddy_call_fn,
 *    a thread of the application; and inside the body of
 *    eddy_ctx_durable_execute(), which runs on the mailbox thread;
 *  - with EDDY_ESTATE, on a mailbox thread, a handle that is not the
 *    running action execution's: one kept past its action execution (in a
 *    static, say; it may have been freed since), another action
 *    execution's, another runtime's, or any handle used between action
 *    executions (from the progress callback, after eddy_runtime_run()).
 * Keep none: eddy reuses the memory behind a handle, so that a kept one may
 * even be the running action's own again, and then works as it.
 * Events are not checked: an event an action receives or sends may be used
 * on the mailbox thread only (eddy_event_id() fills a cache on first use).
 *
 * The functions given to eddy_ctx_execute_async() and friends (eddy_call_fn)
 * run on a worker thread, except that eddy_ctx_durable_execute() runs its
 * function inline on the mailbox thread. Either way they may use their
 * arguments and build their result, nothing else of the runtime: an
 * eddy_ctx_* or eddy_memory_* call from one fails with EDDY_EWRONGTHREAD
 * (eddy_ctx_key() and the memory handles are NULL there), so that what a
 * journaled call did is all in its result.
 *
 * Thread-safe: eddy_strerror(), eddy_error_*() on an error object that the
 * calling thread owns, eddy_version(), eddy_runtime_stop(),
 * eddy_state_inspect(). Plans, configurations and events not yet handed to a
 * runtime may be built on any thread, one thread at a time.
 *
 * JSON values
 * -----------
 * Values are jansson's. When libeddy loads, and only if jansson's allocator
 * is still malloc and free, it installs an allocator that keeps the values
 * freed on the mailbox thread while eddy_runtime_run() runs, for reuse (up
 * to 1 MiB; emptied when the run returns; one running runtime at a time has
 * it). libeddy is therefore never unloaded (linked with -z nodelete). Its blocks are malloc's, so
 * values made before or freed after are fine; an application that sets its
 * own with json_set_alloc_funcs() must do so before any value exists, as
 * jansson requires. EDDY_JSON_CACHE=0 in the environment turns the cache
 * off (for memory debuggers), as sanitizer builds have it: the allocator
 * installed is then malloc itself, and only counts its failures, so that an
 * input line that jansson failed to parse for want of memory stops the run
 * (EDDY_ENOMEM) rather than being dead-lettered as not JSON. With an
 * allocator of the application's, such a line is dead-lettered.
 *
 * Ownership words used below
 * --------------------------
 * borrowed: the callee neither keeps nor frees it; valid as documented.
 * stolen:   the callee takes the reference, on success and on failure alike.
 * taken:    the callee takes it on success only; on failure the caller still owns it.
 * new:      the caller receives a reference it must release.
 */
#ifndef EDDY_EDDY_H
#define EDDY_EDDY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "eddy/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EDDY_API __attribute__((visibility("default")))
#else
#define EDDY_API
#endif

/* The deepest nesting of arrays and objects in a value an agent hands to eddy:
 * an event's attributes, an output (within {"output": ...}), memory (the
 * path's objects included) and a durable call's result. Deeper values are
 * refused with EDDY_ELIMIT where they enter, so that what eddy writes to its
 * files and journal always reads back. */
#define EDDY_VALUE_MAX_DEPTH 1000

/* ---------------------------------------------------------------- errors */

/*
 * All error codes. EDDY_OK is 0; every error is negative so that functions
 * that return a count can share the convention.
 */
#define EDDY_ERRNO_MAP(X)                                                                    \
    X(OK, 0, "success")                                                                      \
    X(ENOMEM, -1, "out of memory")                                                           \
    X(EINVAL, -2, "invalid argument")                                                        \
    X(EWRONGTHREAD, -3, "called from a thread that does not own the runtime")                \
    X(ENOTFOUND, -4, "not found")                                                            \
    X(EPATH, -5,                                                                             \
      "memory path conflict (a value stands where an object is needed, or the reverse)")     \
    X(ECALL, -6, "the call failed (see its error object)")                                   \
    X(EACTION, -7, "an action failed")                                                       \
    X(EIO, -8, "input/output error")                                                         \
    X(EPLAN, -9, "invalid agent plan")                                                       \
    X(ECONFIG, -10, "invalid configuration")                                                 \
    X(ESTATE, -11, "wrong state for this call")                                              \
    X(ECANCELED, -12, "canceled: the runtime is stopping")                                   \
    X(ENOTSUP, -13, "not supported")                                                         \
    X(ESTORE, -14, "state store failure")                                                    \
    X(ENONDET, -15, "non-deterministic durable call")                                        \
    X(EBUSY, -16, "resource busy (for example a state directory locked by another process)") \
    X(ESTOPPED, -17, "the runtime was stopped before the input was finished")                \
    X(ELIMIT, -18, "a limit was reached (for example max-run-actions)")

typedef enum eddy_errno {
#define EDDY__ERRNO_ENUM(name, val, text) EDDY_##name = (val),
    EDDY_ERRNO_MAP(EDDY__ERRNO_ENUM)
#undef EDDY__ERRNO_ENUM
} eddy_errno;

/* A static, human-readable description of an error code. Never NULL. Thread-safe. */
EDDY_API const char *eddy_strerror(int code);
/* The symbolic name of an error code ("EDDY_EPATH"). Never NULL. Thread-safe. */
EDDY_API const char *eddy_err_name(int code);

/*
 * An error object: a type (for example "ValueError", "timeout", "io") and a
 * message. Failures that carry text come back as one of these.
 *
 * A function that reports through an eddy_error **err sets *err only when err
 * is not NULL and *err is NULL: an error already there is kept (the first
 * cause wins), so pass a variable set to NULL, and set it to NULL again after
 * eddy_error_free() before reusing it. The exception is a call's outcome
 * (eddy_ctx_execute_async() and the durable calls): their *result and *err are
 * always set, NULL when there is none, as out-parameters.
 */
typedef struct eddy_error eddy_error;

/* New error; copies both strings. type NULL or "" means "error", message NULL "".
 * Returns NULL on ENOMEM. */
EDDY_API eddy_error *eddy_error_new(const char *type, const char *message);
/* printf-style message. Returns NULL on ENOMEM. */
EDDY_API eddy_error *eddy_error_newf(const char *type, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Borrowed strings, valid until eddy_error_free(). Never NULL for a non-NULL e. */
EDDY_API const char *eddy_error_type(const eddy_error *e);
EDDY_API const char *eddy_error_message(const eddy_error *e);
/* Free; NULL is a no-op. */
EDDY_API void eddy_error_free(eddy_error *e);

/* ---------------------------------------------------------------- notes and warnings */

/*
 * What a run says that is no error: a durable call that no longer matches
 * its journal and runs again, a last line left unread, Python calls never
 * awaited, two event classes of one name, a note on an output file. By
 * default each goes to stderr as one line, "eddy: note: MESSAGE" or "eddy:
 * warning: MESSAGE"; with a hook set, to fn instead (message: the text
 * alone, no prefix and no newline, borrowed for the call), so that a
 * program can put them in its own log. fn is called on the thread that
 * says it (the mailbox thread mostly, on an action's stack; a worker's, the
 * loading thread, or a thread an agent started too), maybe with Python's
 * GIL held, and may be called from several at once; it must not call back
 * into the runtime, nor eddy_set_log_hook(). fn NULL gives stderr back.
 * Process-wide; a change may come at any time: each message reaches one
 * hook with its own arg, and once the call returns, the hook replaced runs
 * no more (its arg may be freed). A message that comes before an abort() (a
 * misuse of the API, a stack overflow) goes to stderr regardless.
 */
enum { EDDY_LOG_NOTE = 1, EDDY_LOG_WARNING = 2 };
typedef void (*eddy_log_fn)(int level, const char *message, void *arg);
EDDY_API void eddy_set_log_hook(eddy_log_fn fn, void *arg);

/* ---------------------------------------------------------------- version */

/* "MAJOR.MINOR.PATCH". Thread-safe. */
EDDY_API const char *eddy_version(void);

/* ---------------------------------------------------------------- types */

typedef struct eddy_plan eddy_plan;
typedef struct eddy_event eddy_event;
typedef struct eddy_ctx eddy_ctx;
typedef struct eddy_memory eddy_memory;
typedef struct eddy_config eddy_config;
typedef struct eddy_runtime eddy_runtime;

/* Built-in event types. */
#define EDDY_INPUT_EVENT  "InputEvent"
#define EDDY_OUTPUT_EVENT "OutputEvent"

/* ---------------------------------------------------------------- events */

/*
 * New event of the given type with the given attributes (a JSON object; NULL
 * means an empty object). attrs is stolen, also on failure. Returns NULL on
 * ENOMEM, or when type is empty or not UTF-8 (types are journaled and shown
 * as JSON) or attrs is not an object.
 * An OutputEvent carries what goes to the sink in attribute "output", which
 * it must have to be sent (eddy_ctx_send_event).
 */
EDDY_API eddy_event *eddy_event_new(const char *type, json_t *attrs);
/* Free an event that was not handed to the runtime. NULL is a no-op. */
EDDY_API void eddy_event_free(eddy_event *ev);
/* Borrowed; valid while the event lives. */
EDDY_API const char *eddy_event_type(const eddy_event *ev);
/* Borrowed attributes object. Actions must not modify the attributes of the
 * event that triggered them. */
EDDY_API json_t *eddy_event_attrs(const eddy_event *ev);
/* The event's id: 16 hex digits, derived deterministically from the key, the
 * run and the event's place in the run (so a re-run after a crash reproduces
 * it). An event not yet sent has id "0000000000000000". Borrowed. */
EDDY_API const char *eddy_event_id(const eddy_event *ev);

/* ---------------------------------------------------------------- plans */

/*
 * An action: called once per triggering event, on the mailbox thread, on its
 * own coroutine stack. Return EDDY_OK when done, or an error code; to give
 * the error a text, call eddy_ctx_fail() before returning. Without one, an
 * action that returns the code with which its last context or memory call
 * refused its arguments (eddy_ctx_send_output(ctx, NULL) after a json_pack
 * that failed) fails with that call's name and reason in the message (a
 * memory call's names the path). Only calls that return a code count: a
 * refusal followed by such a call that went through is not named, since it
 * is not the likely cause.
 * ev is borrowed for the duration of the action execution.
 */
typedef int (*eddy_action_fn)(eddy_ctx *ctx, const eddy_event *ev, void *arg);

/* What a C agent shared object exports. Registers its actions; returns EDDY_OK
 * or an error code. */
typedef int (*eddy_agent_init_fn)(eddy_plan *plan);
#define EDDY_AGENT_INIT_SYMBOL "eddy_agent_init"
/* Declared here so that an agent's definition is checked and exported; the
 * agent defines it, libeddy does not. */
EDDY_API int eddy_agent_init(eddy_plan *plan);

/* New empty plan. NULL on ENOMEM. */
EDDY_API eddy_plan *eddy_plan_new(void);
/* Free; NULL is a no-op. A plan given to eddy_runtime_new() belongs to it. */
EDDY_API void eddy_plan_free(eddy_plan *plan);

/*
 * Add an action named name (unique in the plan) triggered by each of the
 * NULL-terminated event_types (at least one). arg is passed to fn.
 * Errors: EDDY_EINVAL (empty or duplicate name, no event types, NULL fn; a
 * name or an event type that is not UTF-8; triggering on OutputEvent, which
 * never triggers actions), EDDY_ENOMEM.
 * On failure the plan is left as it was. The plan keeps why its last call
 * refused an action, for eddy_plan_load_shared() to say.
 */
EDDY_API int eddy_plan_add_action(eddy_plan *plan, const char *name, const char *const *event_types,
                                  eddy_action_fn fn, void *arg);
/* Number of actions. */
EDDY_API size_t eddy_plan_action_count(const eddy_plan *plan);
/* Name of action i (registration order), borrowed; NULL when out of range. */
EDDY_API const char *eddy_plan_action_name(const eddy_plan *plan, size_t i);
/* Event type j (in the order given when it was added) that action i listens to,
 * borrowed; NULL when i or j is out of range. */
EDDY_API const char *eddy_plan_action_event_type(const eddy_plan *plan, size_t i, size_t j);

/*
 * Load a C agent: dlopen(path) and call its eddy_agent_init(plan), which must
 * add at least one action. A plan holds one C agent. An agent is a file, not
 * a library to look for: a path without a slash names one in the current
 * directory ("agent.so" is opened as "./agent.so"), never one that dlopen()
 * would search for on the library path (LD_LIBRARY_PATH, the system's
 * directories).
 * On failure returns an error code and, when err is not NULL, sets *err to a
 * new error naming the file and the cause (for the caller to free), of type
 * "plan" (EDDY_EINVAL: plan or path NULL, or the plan has a C agent already;
 * EDDY_EPLAN: the file does not load or export eddy_agent_init(), or its init
 * fails or adds no action) or "memory" (EDDY_ENOMEM). An init that returns
 * EDDY_EINVAL when its last eddy_plan_add_action() call refused an action
 * fails with that action's name and the reason ("eddy_agent_init() failed:
 * invalid argument (eddy_plan_add_action: action 'audit' listens to
 * OutputEvent, ...)"). A failed load leaves the plan as it was: the actions
 * the init added are removed and the file is closed, so the plan may load
 * another agent.
 * The agent's eddy_* calls must reach this copy of libeddy: another copy
 * (libeddy.so brought in by an agent linked with -leddy into a program
 * linked with libeddy.a) runs no action, and refuses every context call
 * with EDDY_EWRONGTHREAD. So an agent is linked without -leddy, its eddy_*
 * symbols bound as it loads to those already in the process; a program
 * linked with libeddy.a that loads C agents exports all of them (-rdynamic,
 * and libeddy.a linked with --whole-archive), else the agent's load fails
 * with EDDY_EPLAN ("undefined symbol"). README.md, "Embedding libeddy".
 */
EDDY_API int eddy_plan_load_shared(eddy_plan *plan, const char *path, eddy_error **err);

/*
 * Load a Python agent from a source file (a name ending in .py, in any case:
 * agent.PY is read as source too): import it, find the one Agent subclass
 * (or the one named agent_class when not NULL) and add its actions.
 * Errors as eddy_plan_load_shared() (EDDY_EPLAN also when the file raises or
 * an action's name is taken); EDDY_ENOTSUP when eddy was built without
 * Python. A failed load removes the actions it added, but the Python
 * interpreter it started, and whatever the file's import did in it, stay
 * until the plan is freed. agent_class is the command line's --agent, as
 * the messages call it ("choose one with --agent NAME").
 * Threads: unlike other plan calls, loads of Python agents and frees of
 * plans that hold one (eddy_plan_free(), and eddy_runtime_free() of each
 * runtime on its own mailbox thread) may run on any threads at once, each
 * plan on one thread at a time: the process's one
 * interpreter is started by the first load and finalised by the last free
 * (or by the release of the last hold: eddy_python_hold())
 * under a process-wide lock, which a load or free meanwhile waits for. Call
 * them without holding the GIL (in a process that ran Python before eddy,
 * say): they take that lock, then the GIL. The thread of the first load
 * (the one that initialises Python) is Python's main thread, threading's
 * too: a thread that an agent starts from another thread (actions run on
 * their runtime's mailbox thread) is a daemon thread unless it asks
 * otherwise, as in any program that runs Python on threads it made itself,
 * and daemon threads are not waited for when the interpreter ends.
 */
EDDY_API int eddy_plan_load_python(eddy_plan *plan, const char *path, const char *agent_class,
                                   eddy_error **err);

/*
 * Keep the process's Python interpreter between plans. eddy_python_hold()
 * starts it when it is not running (on this thread, as a first load would:
 * see eddy_plan_load_python()) and keeps it until the matching
 * eddy_python_release(), whatever plans are loaded and freed meanwhile: a
 * program that runs Python agents one after another then starts and
 * finalises it once, not once per plan (a finalisation runs the agents'
 * atexit work and waits for their threads, and some extension modules do
 * not start again cleanly in a new interpreter). Holds count: as many
 * releases as holds; a release without a hold does nothing. The release
 * that ends the last hold, when no plan holds Python either, finalises it
 * (the finalise hook below runs). Returns EDDY_OK, the error of the start
 * as a first load would give it, or EDDY_ENOTSUP when eddy was built
 * without Python. Lock and
 * GIL as for a load and a free (eddy_plan_load_python()).
 */
EDDY_API int eddy_python_hold(eddy_error **err);
EDDY_API void eddy_python_release(void);

/*
 * A Python agent runs in the process's interpreter, and its signal handlers
 * and threads are the process's. These two hooks let a program that cares
 * hear of them (the eddy command sets both). Each is process-wide; fn NULL
 * removes it. Set them before loading a Python agent, on the thread that
 * loads it. Both are no-ops in an eddy built without Python, and neither is
 * called when the process ran Python before eddy (eddy then neither
 * initialises nor finalises the interpreter).
 *
 * Signal hook: fn(signo, action, arg) is called when the agent calls
 * Python's signal.signal(signo, handler) (at its import or in an action; on
 * that thread, which holds the GIL), before anything is installed; action
 * is what handler asks for: EDDY_PYTHON_SIG_DFL, EDDY_PYTHON_SIG_IGN or
 * EDDY_PYTHON_SIG_HANDLER (a Python function). When fn returns nonzero the
 * program keeps signo's handler: the agent's is not installed, and the call
 * returns what signal.getsignal(signo) says (None for a handler not
 * installed from Python); the program may say so. Zero lets the call go on.
 * Only calls that Python would take are shown (on the main thread, a valid
 * signal number and handler); any other is Python's, errors included, and
 * so is any call in a child process that the agent forked. Without a hook
 * when the agent loads, eddy does nothing to Python's signal handling (it
 * does not even import _signal, whose import in CPython 3.11 installs
 * Python's SIGINT handler where SIGINT has its default action). Handlers
 * installed in other ways (sigaction(2) from C, in a C agent or an
 * extension module) are not seen: a program checks for them with
 * sigaction(2) where it can (after the agent loaded, after a run).
 *
 * Finalise hook: freeing the last plan that uses the interpreter
 * (eddy_runtime_free() frees its runtime's plan, after closing the state
 * and the outputs), or releasing the last hold when no plan uses it,
 * finalises it, as Python does at exit: it waits for the
 * threads the agent started with `threading` that are not daemon threads,
 * however long they run, then runs the atexit handlers (multiprocessing's
 * joins the non-daemon child processes). Just before, fn(n, names, ids,
 * arg) is called on the freeing thread (GIL held), after sys.stdout and
 * sys.stderr were flushed, with the number of such threads alive (0 if
 * none), their names and their native thread ids (threading.get_native_id(),
 * 0 where unknown; borrowed for the call). When fn returns nonzero the join
 * of those threads is skipped (they run on, unwaited for, like daemon
 * threads) and the rest of the finalisation runs; zero lets Python wait.
 * fn is called under the lock that loads and frees wait for (see
 * eddy_plan_load_python()): it must not load or free a Python plan, nor
 * call eddy_python_hold() or eddy_python_release().
 * The freeing thread need not be the loading one: the thread where the
 * agent first imported threading (its threading.main_thread()) then counts
 * as ended, as Python's main thread does at exit, for the agent's threads
 * that wait for it.
 * The finalisation has ended when the free returns: a program may watch
 * how long it takes, and end without waiting (_exit(2)).
 */
enum {
    EDDY_PYTHON_SIG_DFL = 0,    /* signal.SIG_DFL */
    EDDY_PYTHON_SIG_IGN = 1,    /* signal.SIG_IGN */
    EDDY_PYTHON_SIG_HANDLER = 2 /* a Python callable */
};
typedef int (*eddy_python_signal_fn)(int signo, int action, void *arg);
EDDY_API void eddy_python_set_signal_hook(eddy_python_signal_fn fn, void *arg);
typedef int (*eddy_python_finalize_fn)(size_t n, const char *const *names, const long *ids,
                                       void *arg);
EDDY_API void eddy_python_set_finalize_hook(eddy_python_finalize_fn fn, void *arg);

/* ---------------------------------------------------------------- waits */

/*
 * Some waits of a run last as long as another process chooses, and no stop
 * ends them: opening a FIFO (--input waits for a writer, --output and
 * --dead-letter for a reader) and writing to a pipe, FIFO or terminal whose
 * reader does not read. The wait hook hears of them: fn(what, name, arg) is
 * called on the waiting thread just before one, what being
 * EDDY_WAIT_OPEN_READ or EDDY_WAIT_OPEN_WRITE (name: the FIFO's path), or
 * EDDY_WAIT_WRITE_OUTPUT or EDDY_WAIT_WRITE_DEAD_LETTER (name: the file, or
 * "standard output", "standard error"; only for a file that is not a regular
 * file), and with EDDY_WAIT_NONE and name NULL just after it. name is
 * borrowed: valid until the runtime that waits is freed. An open waits
 * in eddy_runtime_new(), before anything of the run has run: a program may
 * end the process then (_exit(2); a state directory is safe). fn must keep errno, and not call into
 * eddy. The hook is process-wide, for every runtime; set it before any runs, fn NULL removes it
 * (the eddy command sets one).
 */
enum {
    EDDY_WAIT_NONE = 0,
    EDDY_WAIT_OPEN_READ = 1,
    EDDY_WAIT_OPEN_WRITE = 2,
    EDDY_WAIT_WRITE_OUTPUT = 3,
    EDDY_WAIT_WRITE_DEAD_LETTER = 4
};
typedef void (*eddy_wait_fn)(int what, const char *name, void *arg);
EDDY_API void eddy_set_wait_hook(eddy_wait_fn fn, void *arg);

/* ---------------------------------------------------------------- contexts */

/* The key of the running action execution, as JSON text ("\"u1\"", "42").
 * Borrowed, valid during the action execution. NULL from a wrong thread or
 * with another action execution's context (see Threads). */
EDDY_API const char *eddy_ctx_key(eddy_ctx *ctx);

/*
 * Send an event. It is buffered and released when this action execution
 * finishes: an OutputEvent goes to the sink, any other event triggers the
 * actions of this run that listen to its type. ev is taken on success.
 * An action cannot send an InputEvent: eddy makes the InputEvent of each
 * input itself, and one sent would run the input's actions again. An
 * OutputEvent must have the attribute "output" (JSON null writes a null line).
 * Errors: EDDY_EWRONGTHREAD, EDDY_ESTATE (another action execution's
 * context, see Threads), EDDY_EINVAL (NULL, an event already sent, an
 * InputEvent, or an OutputEvent without "output"),
 * EDDY_ELIMIT (its attributes nest arrays and objects deeper than
 * EDDY_VALUE_MAX_DEPTH levels), EDDY_ENOMEM.
 */
EDDY_API int eddy_ctx_send_event(eddy_ctx *ctx, eddy_event *ev);

/*
 * Send an OutputEvent whose attributes are {"output": output}: the same as
 * eddy_ctx_send_event(ctx, eddy_event_new(EDDY_OUTPUT_EVENT, attrs)) with
 * attrs built so, but the event and its attributes object come from the
 * OutputEvents the runtime released earlier, so a steady stream of outputs
 * allocates none. output is stolen (also on failure), as jansson's _new
 * functions steal theirs. Errors: EDDY_EWRONGTHREAD, EDDY_ESTATE,
 * EDDY_EINVAL (ctx or output NULL), EDDY_ELIMIT (the attributes would nest deeper than
 * EDDY_VALUE_MAX_DEPTH levels), EDDY_ENOMEM.
 */
EDDY_API int eddy_ctx_send_output(eddy_ctx *ctx, json_t *output);

/* The key's short-term memory (kept across runs) and sensory memory (cleared
 * when the run ends). Borrowed handles valid during the action execution;
 * NULL from a wrong thread or with another action execution's context. */
EDDY_API eddy_memory *eddy_ctx_short_term_memory(eddy_ctx *ctx);
EDDY_API eddy_memory *eddy_ctx_sensory_memory(eddy_ctx *ctx);

/*
 * Give the action's failure a type and message (copied; NULL as for
 * eddy_error_new()). The action then returns an error code. A later call
 * replaces the text (the last one is the failure's). Returns EDDY_OK or
 * EDDY_EWRONGTHREAD/EDDY_ESTATE/EDDY_ENOMEM, EDDY_EINVAL with ctx NULL. err
 * is stolen when not NULL (eddy_ctx_fail_error); err NULL, what
 * eddy_error_new() gives for want of memory, is EDDY_ENOMEM, and the text
 * stays as it was.
 */
EDDY_API int eddy_ctx_fail(eddy_ctx *ctx, const char *type, const char *message);
EDDY_API int eddy_ctx_fail_error(eddy_ctx *ctx, eddy_error *err);

/* ---------------------------------------------------------------- memory */

/*
 * Memory is a tree of JSON objects addressed by dotted paths ("a.b.c").
 * An action execution reads the key's committed memory plus its own writes;
 * its writes apply to the key when it finishes.
 *
 * eddy_memory_get: a new reference to a copy of the value at path (objects
 * come back as JSON objects; "" is the whole tree), or NULL when absent, on a
 * wrong thread (or another action execution's handle) or ENOMEM.
 */
EDDY_API json_t *eddy_memory_get(eddy_memory *m, const char *path);
/*
 * Set path to value (stolen, also on failure), creating missing parent
 * objects. The memory keeps value itself until the action finishes: a caller
 * that kept a reference must not change it afterwards. An object value
 * replaces what stands at path, an object included. Errors: EDDY_EINVAL
 * (bad path, NULL value), EDDY_EPATH (a value stands where a parent object is
 * needed, or value is not an object and an object stands at path), EDDY_ELIMIT (the path's objects
 * and value together nest deeper than EDDY_VALUE_MAX_DEPTH levels: "a.b" and
 * [[1]] make 4), EDDY_EWRONGTHREAD, EDDY_ESTATE (another action execution's
 * handle), EDDY_ENOMEM.
 */
EDDY_API int eddy_memory_set(eddy_memory *m, const char *path, json_t *value);
/* Make an empty object at path (parents created). An object already there is
 * kept as it is. Errors as eddy_memory_set(). */
EDDY_API int eddy_memory_new_object(eddy_memory *m, const char *path);
/* 1 when path exists ("" always does), 0 when not, or a negative error code. */
EDDY_API int eddy_memory_exists(eddy_memory *m, const char *path);
/* New JSON array of the field names of the object at path ("" is the root),
 * or NULL when path is absent or not an object, on a wrong thread (or with
 * another action execution's handle) or ENOMEM. */
EDDY_API json_t *eddy_memory_field_names(eddy_memory *m, const char *path);

/* ---------------------------------------------------------------- async calls */

/*
 * A slow call: runs on a worker thread. args is borrowed (read only). On
 * success set *result to a new reference (NULL means JSON null: the durable
 * calls hand it out as json_null(), eddy_ctx_execute_async() as NULL) and
 * return EDDY_OK; on failure set *err (eddy_error_new) and return an error
 * code.
 */
typedef int (*eddy_call_fn)(const json_t *args, void *arg, json_t **result, eddy_error **err);

/*
 * Run fn(args, arg) on the worker pool and suspend the action until it
 * completes; other keys and other actions run meanwhile. Nothing polls: the
 * worker signals the completion.
 * *result and *err (when not NULL) are always set: on success EDDY_OK,
 * *result (new reference, may be NULL for JSON null) and *err NULL; when fn
 * fails its code, *result NULL and *err (new; caller frees; an error named
 * after the code when fn set none). Before the call runs: EDDY_EINVAL,
 * EDDY_EWRONGTHREAD, EDDY_ESTATE outside an action's coroutine (or with
 * another action execution's context), EDDY_ECANCELED
 * when the runtime is stopping (or a sync of the state failed) before a worker
 * takes the call; both NULL then. A call already running when the runtime is
 * asked to stop completes, and its outcome is returned; the action's next call
 * gets EDDY_ECANCELED.
 * args must stay unmodified until the call returns.
 */
EDDY_API int eddy_ctx_execute_async(eddy_ctx *ctx, eddy_call_fn fn, const json_t *args, void *arg,
                                    json_t **result, eddy_error **err);

/*
 * Several calls in flight at once from one action. Fill fn, args and arg of
 * each; eddy_ctx_execute_async_all() starts them all, suspends until every one
 * has completed and fills rc, result (new) and err (new) of each.
 * Returns EDDY_OK when every call succeeded, EDDY_ECALL when at least one
 * failed (see each rc), EDDY_ECANCELED when the runtime stopped (or a sync of
 * the state failed) before a worker took some of the calls: their rc is
 * EDDY_ECANCELED with result and err NULL, while the calls that had started
 * ran to their end and are filled as usual (free their result and err). When
 * the runtime was stopping already, none starts and every call is filled so.
 * EDDY_EWRONGTHREAD, EDDY_ESTATE, EDDY_EINVAL and EDDY_ENOMEM (no memory for
 * more than 8 calls) come before anything started, with the calls untouched.
 */
typedef struct eddy_async_call {
    eddy_call_fn fn;
    const json_t *args;
    void *arg;
    int rc;
    json_t *result;
    eddy_error *err;
} eddy_async_call;

EDDY_API int eddy_ctx_execute_async_all(eddy_ctx *ctx, eddy_async_call *calls, size_t n);

/*
 * Suspend the action for ms milliseconds (a retry's back-off, a poll's
 * interval) on a timer of the mailbox loop: no worker thread is used and
 * nothing polls; other keys and other actions run meanwhile. ms 0 yields once:
 * the action goes behind every task ready at that moment, new ones included,
 * and goes on after them. The time is counted in whole milliseconds of the
 * loop's clock.
 * A sleeping action is work in flight: its run is not over, and
 * eddy_runtime_run() does not return before it wakes. A stop
 * (eddy_runtime_stop(), SIGINT/SIGTERM in the eddy command, an action failure
 * under on-error=stop) does not wait for the time: the sleep returns
 * EDDY_ECANCELED at once, and the action should unwind (its effects are
 * discarded, as after a canceled call).
 * A sleep is not journaled: after a crash the re-run of the action sleeps
 * again (its durable calls before and after replay as usual).
 * Returns EDDY_OK when the time has passed; EDDY_ECANCELED (the runtime is
 * stopping, also before the sleep began); EDDY_EWRONGTHREAD (another thread,
 * or inside the body of a durable call); EDDY_ESTATE outside the action's
 * own coroutine or with another action execution's context (one kept past
 * its action execution, see Threads); EDDY_EINVAL (ctx NULL); EDDY_ENOMEM.
 */
EDDY_API int eddy_ctx_sleep(eddy_ctx *ctx, uint64_t ms);

/* ---------------------------------------------------------------- durable calls */

/*
 * Run fn once and journal its result (or error, type and message kept). When
 * the action execution re-runs after a crash, a journaled call returns its
 * result or error from the journal without calling fn. A call is identified by
 * its position in the action execution, fn_id (a stable name of the function)
 * and a digest of the canonical JSON of args.
 * eddy_ctx_durable_execute runs fn on the mailbox thread;
 * eddy_ctx_durable_execute_async on the worker pool (suspending the action).
 * Returns EDDY_OK with *result (new, never NULL: a NULL result of fn is JSON
 * null, handed out as json_null() on the first run as on a replay, which
 * reads it from the journal), or EDDY_ECALL with *err (new) when fn
 * failed (a code without an error object becomes an error whose type is the
 * code's name), now or in the journaled run; EDDY_ENONDET when the journal
 * holds a different call at this position and strict determinism is on (the
 * action's failure names both calls: the action execution fails with it
 * whatever the action then returns, and every later durable call of the
 * action execution returns EDDY_ENONDET too, without running or replaying);
 * EDDY_ECANCELED, EDDY_EWRONGTHREAD;
 * a result nesting deeper than EDDY_VALUE_MAX_DEPTH levels is the call's
 * failure (EDDY_ECALL, error type "limit"), journaled as such;
 * EDDY_ESTATE outside an action's coroutine (durable_execute may run outside
 * one only without a state directory) or with another action execution's
 * context; EDDY_EINVAL (NULL fn, empty fn_id or one that is not UTF-8),
 * EDDY_ENOMEM. *result and *err (when not NULL) are always set: NULL but for
 * the outcome above.
 * Without a state directory the journal lives in memory.
 */
EDDY_API int eddy_ctx_durable_execute(eddy_ctx *ctx, const char *fn_id, const json_t *args,
                                      eddy_call_fn fn, void *arg, json_t **result,
                                      eddy_error **err);
EDDY_API int eddy_ctx_durable_execute_async(eddy_ctx *ctx, const char *fn_id, const json_t *args,
                                            eddy_call_fn fn, void *arg, json_t **result,
                                            eddy_error **err);
/*
 * As eddy_ctx_durable_execute_async(), with a reconciler: the call is journaled
 * PENDING (and committed) before fn runs. If recovery finds it PENDING (the
 * process died while fn ran, or before it started), reconcile(args, arg, ...)
 * runs on the worker pool instead of fn and its outcome is journaled as the
 * call's. A stop (eddy_runtime_stop(), an action's failure under on-error
 * stop) leaves no PENDING record of its own: a call running then completes
 * and its outcome is journaled; one that had not started (waiting for a
 * worker) has its record removed, and fn runs on the resume.
 */
EDDY_API int eddy_ctx_durable_execute_reconciled(eddy_ctx *ctx, const char *fn_id,
                                                 const json_t *args, eddy_call_fn fn,
                                                 eddy_call_fn reconcile, void *arg, json_t **result,
                                                 eddy_error **err);

/*
 * Several durable calls in flight at once from one action: the durable
 * counterpart of eddy_ctx_execute_async_all(). Fill fn_id, args, fn, arg and
 * reconcile (NULL for none) of each; eddy_ctx_durable_execute_async_all()
 * gives the calls the action's next n journal positions, in array order,
 * and treats each as eddy_ctx_durable_execute_async() (or, with a reconcile,
 * eddy_ctx_durable_execute_reconciled()) treats one: checked against the
 * journal at its position, a journaled call is answered from the journal,
 * the others run at once on the worker pool, concurrently (a call with a
 * reconcile once its PENDING record is on disk; one found PENDING runs its
 * reconcile instead), and each outcome is journaled as it completes. The
 * action resumes once every call has completed and its record is committed.
 * args (and fn_id) must stay unmodified until it returns.
 * It fills rc, result and err of each: EDDY_OK with result (new, never NULL:
 * a NULL result of fn is JSON null, handed out as json_null() on the first
 * run as on a replay), or EDDY_ECALL with err (new): fn failed, now or in the
 * journaled run (error type kept; a code without an error object becomes an
 * error named after the code; a result nesting deeper than
 * EDDY_VALUE_MAX_DEPTH levels is the call's failure, type "limit",
 * journaled as such).
 * Returns EDDY_OK when every call succeeded, EDDY_ECALL when at least one
 * failed (see each rc). Any other code is the whole batch's, and then no
 * outcome is handed out: every rc is that code, result and err NULL:
 * EDDY_ENONDET (the journal holds a different call at a call's position and
 * strict determinism is on; nothing ran; the action's failure names both
 * calls), EDDY_ECANCELED (the runtime is stopping, or a sync of the state
 * failed: the calls that had started ran to their end and their outcomes
 * are journaled, so the resume replays them; the others never ran, and
 * their PENDING records are removed), EDDY_EWRONGTHREAD, EDDY_ESTATE (another
 * action execution's context, such as one kept past its action execution,
 * see Threads; outside an action's coroutine; or a journaled record does
 * not decode), EDDY_EINVAL (calls NULL, a NULL fn, an empty fn_id or one
 * that is not UTF-8), EDDY_ENOMEM, EDDY_ESTORE. n 0 returns EDDY_OK and
 * takes no position. Without a state directory the journal lives in
 * memory.
 */
typedef struct eddy_durable_call {
    const char *fn_id;
    const json_t *args;
    eddy_call_fn fn;
    eddy_call_fn reconcile; /* or NULL */
    void *arg;
    int rc;
    json_t *result;
    eddy_error *err;
} eddy_durable_call;

EDDY_API int eddy_ctx_durable_execute_async_all(eddy_ctx *ctx, eddy_durable_call *calls, size_t n);

/* ---------------------------------------------------------------- configuration */

/*
 * Runtime configuration: string names and values, as on the command line
 * (without the leading "--"). eddy's messages name a setting as the command
 * line does: "raise --stack-size" means the name "stack-size" here.
 *   input            path of the JSONL input, "-" for stdin (default "-")
 *   output           path of the JSONL output, "-" for stdout (default "-")
 *   dead-letter      path of the dead-letter JSONL file (default "<output>.dead.jsonl",
 *                    or "-" meaning stderr when output is stdout or not a regular
 *                    file, such as /dev/null); "" gives the default back
 *   key              top-level field of each input record holding its key (default "key";
 *                    UTF-8, as a JSON field name is)
 *   async-threads    worker threads, 1..1024 (default 2 x online cores)
 *   max-in-flight    runs in flight (keys with a run going), at most; at least 1
 *                    (default 10000)
 *   max-pending      admitted inputs that wait in their key's FIFO behind its run,
 *                    at most; at least 1 (default 10000). Inputs are admitted in
 *                    input order while both limits hold: one whose key is idle
 *                    starts a run, one whose key is busy waits. When either limit
 *                    is reached, admission stops until a run ends
 *   max-run-actions  action executions one input's run may start, at most; 0 for
 *                    no limit (default 100000). A run whose actions keep sending
 *                    one another events fails there (error type "limit"), as an
 *                    action failure of the action that sent the event
 *   on-error         "stop" (default) or "skip"
 *   max-line-bytes   longest accepted input line, 1024..1099511627776 (1 TiB;
 *                    default 16777216)
 *   max-depth        deepest nesting of arrays and objects in an input line, the
 *                    record itself counting as 1, 1..2047 (default 64); a deeper
 *                    line goes to the dead-letter file ("nesting too deep")
 *   state            state directory; empty means in-memory (default "")
 *   key-cache        with a state: idle keys (no run in flight, no input waiting,
 *                    memory saved) whose short-term memory stays in memory, at
 *                    most; the least recently used beyond it are let go, and a
 *                    key's memory is read back from the state when its next run
 *                    starts; 0 for no bound on the count (default 100000;
 *                    key-cache-bytes bounds their bytes). Without a state
 *                    every key's memory stays in memory, and this is not used
 *   key-cache-bytes  with a state: the idle keys kept in memory, in bytes, at
 *                    most, each counted as its memory as stored (its JSON text)
 *                    and 768 bytes for the key; the least recently used beyond
 *                    it are let go as for key-cache (also with key-cache 0); 0
 *                    for no bound (default 268435456)
 *   commit-interval-ms  longest wait before a group commit, 0..10000 (default 2)
 *   strict-determinism  "true", "false", "yes", "no", "1" or "0" (default
 *                    "false"; eddy_config_get() gives "true" or "false")
 *   retry-failed-calls  the same values (default "false"): with a state, a
 *                    durable call of an unfinished action execution whose
 *                    journaled outcome is an error runs again when its run
 *                    resumes instead of returning the error (the calls after
 *                    it replay while the action makes the same ones)
 *   stack-size       coroutine stack size in bytes, 16384..67108864 (default
 *                    262144); rounded up to whole pages, so a stack holds a
 *                    little more, but an overflow's message names this size
 */
EDDY_API eddy_config *eddy_config_new(void);
EDDY_API void eddy_config_free(eddy_config *conf);
/* Set name to value (copied). EDDY_ECONFIG with a message in *err (new, when
 * err is not NULL) for an unknown name or a bad value; EDDY_EINVAL when conf,
 * name or value is NULL. */
EDDY_API int eddy_config_set(eddy_config *conf, const char *name, const char *value,
                             eddy_error **err);
/* Current value, borrowed; NULL for an unknown name. */
EDDY_API const char *eddy_config_get(const eddy_config *conf, const char *name);

/* ---------------------------------------------------------------- runtime */

/*
 * New runtime for plan with conf. plan is taken on success; conf is borrowed
 * (copied). Opens the input, output and dead-letter files and the state store.
 * On failure returns NULL and sets *err (new) when err is not NULL; its type
 * says what failed: "store" or "state" (the state directory cannot be used:
 * locked by another process, made by another plan or a newer eddy, damaged,
 * not writable), "io" (a file cannot be opened), "output" (writing the
 * output lines a previous run left unwritten failed), "config" (among
 * others: two of the input, output and dead-letter file are the same file,
 * or the output or dead-letter file is a file an agent of plan was loaded
 * from),
 * "plan", "memory". The state directory is created, and the outputs cut, only once
 * the input, output and dead-letter files are known to open; the outputs are
 * cut once the state is open and checked and the input is open (an input
 * FIFO's open waits for a writer there; an output or dead-letter FIFO's open
 * waits for a reader after it).
 * The calling thread becomes the runtime's mailbox thread.
 */
EDDY_API eddy_runtime *eddy_runtime_new(eddy_plan *plan, const eddy_config *conf, eddy_error **err);

/*
 * Run until the input is exhausted and every run has finished, or until an
 * action fails under on-error=stop, or eddy_runtime_stop() is called.
 * Returns EDDY_OK, EDDY_EACTION (see eddy_runtime_error()), EDDY_EIO (reading
 * the input or writing an output failed), EDDY_ESTORE (the state store
 * failed), EDDY_ESTATE (the state cannot be used: the input is not the one it
 * was reading, a journal record does not decode; also a second
 * eddy_runtime_run() of one runtime), EDDY_ENOMEM, EDDY_ESTOPPED,
 * EDDY_EWRONGTHREAD, or EDDY_EINVAL (rt NULL).
 *
 * So that an action that overflows its coroutine stack is named before the
 * process dies, the first run installs a SIGSEGV handler (SA_ONSTACK), once
 * per process and only where SIGSEGV has its default action (a program's own
 * handler stays), and gives the calling thread an alternate signal stack of
 * 64 KiB (sigaltstack) if it has none; that stack is freed when the thread
 * exits. The handler prints one line and restores the default action.
 *
 * Runs nest: a C action may create, run and free a runtime of its own (on
 * its coroutine's stack: mind --stack-size), and goes on as before when that
 * run returns, its calls included. Meanwhile its own runtime waits: none of
 * its other actions, timers or completions advance until the inner run
 * returns (its workers finish the calls they have). Each runtime's handles
 * are refused (EDDY_ESTATE) in the other's action executions.
 */
EDDY_API int eddy_runtime_run(eddy_runtime *rt);

/* Ask a running runtime to stop soon (thread-safe and async-signal-safe once
 * the runtime runs). In-flight work is committed or left to re-run. Asked
 * before eddy_runtime_run(), the stop is kept: the run starts what it had
 * admitted, stops, and returns EDDY_ESTOPPED. */
EDDY_API void eddy_runtime_stop(eddy_runtime *rt);

/* The error that ended the last eddy_runtime_run(), borrowed (NULL if none). */
EDDY_API const eddy_error *eddy_runtime_error(const eddy_runtime *rt);

/* Counters, readable from the mailbox thread at any time (from the progress
 * callback, for instance). outputs and dead_lettered count lines written out
 * (write(2) took them), not lines buffered, waiting in the state's outbox or
 * lost to a failed write; with a state they include the lines a previous run
 * left in the outbox that this run wrote (after a failed run, also the lines
 * it wrote and counted before their sync). */
typedef struct eddy_stats {
    uint64_t inputs;           /* input lines accepted */
    uint64_t dead_lettered;    /* dead letters written: bad lines and failed runs, one count */
    uint64_t outputs;          /* output lines written (one per OutputEvent) */
    uint64_t runs_finished;    /* runs finished (including skipped failures) */
    uint64_t runs_in_flight;   /* runs in flight: keys with a run going (max-in-flight) */
    uint64_t actions_executed; /* action executions finished */
    uint64_t events;           /* events released (all types) */
    uint64_t unhandled_events; /* non-output events that triggered no action */
    uint64_t async_calls;      /* calls run on the worker pool */
    uint64_t durable_calls;    /* durable calls made (run or replayed) */
    uint64_t durable_replayed; /* durable calls answered from the journal */
    uint64_t actions_replayed; /* finished action executions re-applied from the journal */
    uint64_t commits;          /* store transactions committed */
    double elapsed_s;          /* wall time in eddy_runtime_run() */
    int durable;               /* 1 with a state directory, 0 in memory */
    uint64_t syncs;            /* disk syncs making commits durable (one covers many) */
    /* With a state, what this run took up from the one before it:
     * runs_resumed, the inputs that run accepted and did not finish (its
     * pending inputs, those of its runs in flight included), each counted
     * as its run starts here (not in inputs: they are not read again; the
     * summary says "N pending inputs taken up from the state", and the runs
     * among them that were in flight are runs_in_flight_resumed, below);
     * outputs_from_state and
     * dead_lettered_from_state, the lines it left in the outbox, written by
     * this run before it read on (also in outputs and dead_lettered). */
    uint64_t runs_resumed;
    uint64_t outputs_from_state;
    uint64_t dead_lettered_from_state;
    /* Inputs admitted that wait in their key's FIFO behind its run in
     * flight (max-pending); with runs_in_flight, every input admitted and
     * not finished. */
    uint64_t inputs_pending;
    /* Of runs_resumed, the runs that were in flight when that run stopped
     * (each key's first input taken up: what eddy inspect lists as runs in
     * flight), resumed from their journal; the others waited behind them. */
    uint64_t runs_in_flight_resumed;
    /* Of runs_in_flight_resumed, the runs that had failed (--on-error skip
     * dead-lettered their input) before that run stopped, while actions of
     * theirs were still in flight: ended as they stood, none of their
     * actions run again. */
    uint64_t runs_failed_resumed;
    /* Keys in memory now: those with runs in flight or inputs waiting, and
     * idle ones (see key-cache). keys_evicted counts the idle keys let go:
     * with a state, beyond key-cache (memory or not); without one, keys
     * with empty memory beyond 65,536. keys_loaded counts the reads of a
     * key's short-term memory back from the state, one when a run of a key
     * not resident starts or resumes: a key let go and read back several
     * times counts each time (a key the state holds no memory of is not
     * counted). */
    uint64_t keys_resident;
    uint64_t keys_evicted;
    uint64_t keys_loaded;
} eddy_stats;

EDDY_API void eddy_runtime_stats(const eddy_runtime *rt, eddy_stats *out);

/* The i-th of the first four distinct types of the events that triggered no
 * action (stats.unhandled_events counts them all), in the order they were
 * met, borrowed until eddy_runtime_free(); NULL past the last one kept.
 * Mailbox thread, as the stats. */
EDDY_API const char *eddy_runtime_unhandled_type(const eddy_runtime *rt, size_t i);

/* Called on the mailbox thread about every interval_ms (0 means 500) while
 * eddy_runtime_run() runs; fn NULL: none. Set before eddy_runtime_run(),
 * which starts the timer, or during the run (from an action or from the
 * callback itself: the new fn, arg and interval from then on; fn NULL stops
 * the calls). Returns EDDY_OK, EDDY_EINVAL (rt NULL), EDDY_EWRONGTHREAD, or
 * EDDY_ESTATE once eddy_runtime_run() has returned. */
typedef void (*eddy_progress_fn)(const eddy_stats *stats, void *arg);
EDDY_API int eddy_runtime_set_progress(eddy_runtime *rt, eddy_progress_fn fn, void *arg,
                                       unsigned interval_ms);

/* Free, on the mailbox thread; NULL is a no-op. Must not be called while
 * eddy_runtime_run() runs. Actions still suspended are resumed to unwind:
 * their calls return EDDY_ECANCELED. Either misuse (a free on another thread,
 * or from a callback or an action during the run) would use freed memory:
 * it writes a line to stderr and aborts the process instead. */
EDDY_API void eddy_runtime_free(eddy_runtime *rt);

/* ---------------------------------------------------------------- inspection */

/*
 * A read-only report of the state directory dir, as a new JSON object:
 *   state (dir, as valid UTF-8 text: a byte of its name that is not written
 *   \xNN), source {offset, line} (how much of the input was read: bytes,
 *   and lines, so reading resumes at line line + 1; `eddy inspect` shows
 *   the same two numbers), key_field
 *   (the --key field the state was filled with; null in states written
 *   before eddy kept its name), plan ([{name, event_types}], the actions of
 *   the plan that filled it, as recorded; null in older states), next_run
 *   (the next run number: one counter for all keys), output_offset and
 *   dead_letter_offset (committed file lengths; for a standard stream,
 *   where it stood, which is no count of lines eddy wrote), output_stream
 *   and dead_letter_stream (true when the last run wrote to a standard
 *   stream, "-", false for a file, null in states that do not say),
 *   counts {keys, pending,
 *   journal, outbox}, in_flight [{key, seq, line, pending, failed}] (keys
 *   with runs in flight, in arrival order; pending counts the run's input
 *   too; failed is true for a run that failed under --on-error skip, its
 *   input dead-lettered, before its actions in flight had ended: the next
 *   run ends it without running its actions), journal [{key, seq, event_id,
 *   action, idx, status ("ok", "error" or "pending" for a call, "finished"
 *   or "failed" for an action execution), fn_id, digest, result | record,
 *   error}] (journal entries of the runs in flight; pruned when a run ends).
 * With key (the key as JSON text, "\"u1\"" or "42"), also "key": {key,
 * next_seq (next_run, kept for older readers), short_term_memory, pending
 * [{seq, line, record}], journal (that key's entries; the top-level journal
 * stays every run's)}.
 * Safe while an eddy process works on dir (it reads a committed snapshot,
 * taking only SQLite's shared locks, and writes nothing). Returns NULL and sets *err (new): of type
 * "state" when the key is unknown (its message says the key "is not in" the state), else of type
 * "store" (dir is NULL, holds no state, cannot be read, or holds a damaged or foreign database; the
 * message says which). Any thread.
 */
EDDY_API json_t *eddy_state_inspect(const char *dir, const char *key, eddy_error **err);

/*
 * As eddy_state_inspect(), with flags. EDDY_INSPECT_KEY_ONLY (with a key):
 * the top-level journal is left out (counts.journal still counts every
 * entry), so that a report of one key in a state of millions of journal
 * entries holds that key's alone: every entry is still read, but only the
 * key's are kept (a full report takes ~2 KB per entry).
 */
enum { EDDY_INSPECT_KEY_ONLY = 1 };
EDDY_API json_t *eddy_state_inspect_ex(const char *dir, const char *key, unsigned flags,
                                       eddy_error **err);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_EDDY_H */
