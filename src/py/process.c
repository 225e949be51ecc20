/*
 * Python agents and the process: what an agent does to the process's signal
 * handlers and threads, and the hooks through which the program hears of
 * it (eddy_python_set_signal_hook, eddy_python_set_finalize_hook in
 * eddy.h).
 *
 * Signals: Python's signal.signal() calls _signal.signal(), looked up on the
 * _signal module at each call; that attribute is replaced by guarded_signal,
 * which asks the program's hook first. Nothing is checked or polled
 * otherwise: the cost is paid by the calls alone.
 *
 * Finalisation: Py_FinalizeEx() waits (threading._shutdown) for the
 * non-daemon threads that `threading` started, for as long as they run,
 * then runs the atexit handlers (multiprocessing's joins its children).
 * Before it, the program is told, with the threads alive, and may have
 * the threads' join skipped. Finalising on another thread than the one
 * that imported threading first needs a hand (end_main_thread_here).
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/py.h"

static eddy_python_signal_fn signal_hook;
static void *signal_hook_arg;
static eddy_python_finalize_fn finalize_hook;
static void *finalize_hook_arg;

void eddy_python_set_signal_hook(eddy_python_signal_fn fn, void *arg)
{
    signal_hook = fn;
    signal_hook_arg = arg;
}

void eddy_python_set_finalize_hook(eddy_python_finalize_fn fn, void *arg)
{
    finalize_hook = fn;
    finalize_hook_arg = arg;
}

/* ---------------------------------------------------------------- signal.signal */

static pid_t owner_pid;          /* the process that initialised the interpreter */
static unsigned long main_ident; /* its thread that did: Python's main thread */

/* What handler asks for, as CPython 3.11's _signal.signal() reads it (a
 * callable; else exactly the int SIG_IGN or SIG_DFL, no subclass), or -1
 * for a handler it refuses with TypeError. */
static int handler_action(PyObject *handler)
{
    if (PyCallable_Check(handler))
        return EDDY_PYTHON_SIG_HANDLER;
    if (!PyLong_CheckExact(handler))
        return -1;
    long v = PyLong_AsLong(handler);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    return v == (long)(intptr_t)SIG_IGN   ? EDDY_PYTHON_SIG_IGN
           : v == (long)(intptr_t)SIG_DFL ? EDDY_PYTHON_SIG_DFL
                                          : -1;
}

/*
 * _signal.signal(signalnum, handler). A call that Python would take (on the
 * main thread, a valid signal number and handler, no keywords) in the
 * process that loaded the agent is first shown to the hook: when it keeps
 * the signal, nothing is installed and the call returns what
 * _signal.getsignal() says is in place (None for a handler not installed
 * from Python), after running the Python handlers of signals pending, as
 * Python does before it changes a handler. Any other call is Python's own
 * (its errors are Python's). A child forked by the agent (multiprocessing)
 * is left alone: its handlers are its own. self is the _signal module, as
 * for Python's; cls a class made for the guard whose attributes are
 * Python's signal and getsignal.
 */
static PyObject *guarded_signal(PyObject *self, PyTypeObject *cls, PyObject *const *args,
                                Py_ssize_t nargs, PyObject *kwnames)
{
    (void)self;
    PyObject *orig_signal = PyDict_GetItemString(cls->tp_dict, "signal"); /* borrowed */
    PyObject *orig_getsignal = PyDict_GetItemString(cls->tp_dict, "getsignal");
    if (orig_signal == NULL || orig_getsignal == NULL) {
        PyErr_SetString(PyExc_SystemError, "eddy's guard of _signal.signal lost Python's");
        return NULL;
    }
    eddy_python_signal_fn hook = signal_hook;
    int action;
    if (hook != NULL && kwnames == NULL && nargs == 2 && getpid() == owner_pid &&
        PyThread_get_thread_ident() == main_ident && (action = handler_action(args[1])) >= 0) {
        PyObject *num = PyNumber_Index(args[0]);
        int overflow = 0;
        long signo = num != NULL ? PyLong_AsLongAndOverflow(num, &overflow) : -1;
        Py_XDECREF(num);
        if (signo == -1 && PyErr_Occurred())
            PyErr_Clear(); /* Python's own says what is wrong */
        else if (overflow == 0 && signo > 0 && signo < NSIG &&
                 hook((int)signo, action, signal_hook_arg) != 0) {
            if (PyErr_CheckSignals() != 0)
                return NULL;
            PyObject *n = PyLong_FromLong(signo);
            PyObject *r = n != NULL ? PyObject_CallOneArg(orig_getsignal, n) : NULL;
            Py_XDECREF(n);
            return r;
        }
    }
    return PyObject_Vectorcall(orig_signal, args, (size_t)nargs, kwnames);
}

static PyMethodDef guarded_signal_def = {
    "signal", (PyCFunction)(void (*)(void))guarded_signal,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS,
    "signal($module, signalnum, handler, /)\n--\n\n"
    "Set the action for the given signal, as Python's _signal.signal does, unless the\n"
    "program running the agent keeps that signal's handler (see eddy's docs/python.md)."};

void eddy__py_guard_signals(void)
{
    /* Without a hook, nothing is done: importing _signal while SIGINT has
     * its default action would install Python's SIGINT handler (CPython
     * 3.11 does so at the module's import, whatever Py_InitializeEx said). */
    if (signal_hook == NULL)
        return;
    owner_pid = getpid();
    main_ident = PyThread_get_thread_ident();
    PyObject *mod = PyImport_ImportModule("_signal");
    PyObject *sig = mod != NULL ? PyObject_GetAttrString(mod, "signal") : NULL;
    PyObject *get = mod != NULL ? PyObject_GetAttrString(mod, "getsignal") : NULL;
    PyObject *cls =
        sig != NULL && get != NULL
            ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(){sOsO}", "eddy_signal_guard",
                                    "signal", sig, "getsignal", get)
            : NULL;
    PyObject *name = PyUnicode_FromString("_signal");
    PyObject *guard = cls != NULL && name != NULL && PyType_Check(cls)
                          ? PyCMethod_New(&guarded_signal_def, mod, name, (PyTypeObject *)cls)
                          : NULL;
    if (guard != NULL)
        (void)PyObject_SetAttrString(mod, "signal", guard);
    Py_XDECREF(guard);
    Py_XDECREF(name);
    Py_XDECREF(cls);
    Py_XDECREF(get);
    Py_XDECREF(sig);
    Py_XDECREF(mod);
    /* Without the guard, Python's own signal.signal works as ever: the
     * program can still see (and undo) what it did, with sigaction(2). */
    PyErr_Clear();
}

/* ---------------------------------------------------------------- finalisation */

/* Run code (statements) in a fresh namespace with the builtins; its
 * exceptions are cleared. Returns the namespace (a new reference), or NULL
 * when it could not run to its end. */
static PyObject *run_snippet(const char *code)
{
    PyObject *globals = PyDict_New();
    PyObject *r = NULL;
    if (globals != NULL && PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) == 0)
        r = PyRun_String(code, Py_file_input, globals, globals);
    PyErr_Clear();
    if (r == NULL) {
        Py_XDECREF(globals);
        return NULL;
    }
    Py_DECREF(r);
    return globals;
}

/* The non-daemon threads alive other than this one and the main thread:
 * those threading._shutdown() waits for, as a list of (name, native id)
 * pairs. A new list, or NULL (no exception set) when there are none or they
 * cannot be listed. */
static PyObject *threads_left(void)
{
    static const char code[] = "import sys\n"
                               "t = sys.modules.get('threading')\n"
                               "left = [] if t is None else [\n"
                               "    (th.name, getattr(th, 'native_id', None) or 0)\n"
                               "    for th in t.enumerate()\n"
                               "    if th is not t.main_thread() and th.ident != t.get_ident()\n"
                               "    and not th.daemon and th.is_alive()]\n";
    PyObject *globals = run_snippet(code);
    PyObject *left = globals != NULL ? PyDict_GetItemString(globals, "left") : NULL; /* borrowed */
    if (left != NULL && PyList_Check(left) && PyList_GET_SIZE(left) > 0)
        Py_INCREF(left);
    else
        left = NULL;
    Py_XDECREF(globals);
    PyErr_Clear();
    return left;
}

/* The modules alive when the threads' join was skipped (see below). Only
 * ever written: the list belongs to the interpreter finalised since. */
static PyObject *kept_modules;

/*
 * Have Python's finalisation not join the threads alive now. CPython 3.11's
 * threading._shutdown() (called by Py_FinalizeEx) runs the threading
 * atexit callbacks, then joins the locks in threading._shutdown_locks, one
 * per non-daemon thread alive; clearing that set skips the join and nothing
 * else (atexit handlers run). This is private API of the
 * pinned Python 3.11: test_skip_thread_joins in tests/unit/test_py.c and the
 * e2e test of an interrupted run with a thread left catch its change.
 *
 * A thread left so keeps its frames past the end, and with them the
 * globals of its functions' modules: once sys.modules lets go of such a
 * module, its dictionary outlives the module object and is never cleared,
 * so a file object held there (a log the agent opened at import) was never
 * flushed, as happens to a daemon thread's module in plain Python. Holding
 * every module until the end makes finalisation clear them as it clears
 * any module still alive (setting their globals to None), so the agent's
 * files are flushed and closed.
 */
static void skip_thread_joins(void)
{
    static const char code[] = "import sys\n"
                               "t = sys.modules.get('threading')\n"
                               "if t is not None:\n"
                               "    with t._shutdown_locks_lock:\n"
                               "        t._shutdown_locks.clear()\n";
    Py_XDECREF(run_snippet(code)); /* when it fails, Python waits for them, as it would */
    kept_modules = PyDict_Values(PyImport_GetModuleDict()); /* never released */
    PyErr_Clear();
}

/*
 * Finalising on a thread other than threading's main thread (the thread
 * that first imported threading: a plan loaded on one thread and freed on
 * another) waited for ever. CPython 3.11's threading._shutdown() means to
 * ignore the main thread then ("similar behavior than for threads spawned
 * by C libraries"), but its join takes every lock in _shutdown_locks, the
 * main thread's _tstate_lock among them, which is released only when that
 * thread's state is deleted: by Py_FinalizeEx(), after _shutdown() returns
 * (_PyThreadState_DeleteExcept). A threading atexit callback, which
 * _shutdown() runs after its check that it did not run already and before
 * its join, releases that lock as _shutdown() itself does on the main
 * thread: the join passes it, the agent's threads that wait for the main
 * thread (main_thread().join(), is_alive()) see it end, as when the plan is
 * freed on the thread that loaded it, and the non-daemon threads are joined
 * as ever. It goes first in the list, which runs last to first: after the
 * agent's own callbacks, as on the main thread. An exception in the callback
 * would end _shutdown() before the join: none leaves it. (The main thread
 * is the thread that initialised Python: eddy imports threading there.)
 * This is private API of the pinned Python 3.11
 * (_threading_atexits, _tstate_lock): test_free_on_another_thread in
 * tests/unit/test_py.c catches its change, in a child that it does not wait
 * for for ever.
 */
static void end_main_thread_here(void)
{
    static const char code[] = "import sys\n"
                               "t = sys.modules.get('threading')\n"
                               "if t is not None and t.main_thread().ident != t.get_ident():\n"
                               "    def end_main_thread(m=t.main_thread()):\n"
                               "        try:\n"
                               "            lock = m._tstate_lock\n"
                               "            if lock is not None and lock.locked():\n"
                               "                lock.release()\n"
                               "        except Exception:\n"
                               "            pass\n"
                               "    t._threading_atexits.insert(0, end_main_thread)\n";
    Py_XDECREF(run_snippet(code));
}

/* Flush sys.stdout and sys.stderr (what the agent printed comes out before
 * the program's note, and is not lost if the program ends at once). */
static void flush_std_streams(void)
{
    static const char *const streams[] = {"stdout", "stderr"};
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        PyObject *f = PySys_GetObject(streams[i]); /* borrowed */
        PyObject *r = f != NULL && f != Py_None ? PyObject_CallMethod(f, "flush", NULL) : NULL;
        Py_XDECREF(r);
    }
    PyErr_Clear();
}

void eddy__py_before_finalize(void)
{
    end_main_thread_here();
    eddy_python_finalize_fn hook = finalize_hook;
    if (hook == NULL)
        return;
    PyObject *left = threads_left();
    size_t n = left != NULL ? (size_t)PyList_GET_SIZE(left) : 0;
    const char **v = calloc(n + 1, sizeof(*v));
    long *ids = calloc(n + 1, sizeof(*ids));
    if (v == NULL || ids == NULL)
        n = 0; /* the hook is still told that finalisation begins */
    for (size_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(left, (Py_ssize_t)i);
        PyObject *s = PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 2 ? PyTuple_GET_ITEM(t, 0) : NULL;
        v[i] = s != NULL && PyUnicode_Check(s) ? PyUnicode_AsUTF8(s) : NULL;
        if (v[i] == NULL) {
            PyErr_Clear();
            v[i] = "?";
        }
        ids[i] = s != NULL ? PyLong_AsLong(PyTuple_GET_ITEM(t, 1)) : 0;
        if (ids[i] == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            ids[i] = 0;
        }
    }
    flush_std_streams();
    if (hook(n, v, ids, finalize_hook_arg) != 0 && n > 0)
        skip_thread_joins();
    free(ids);
    free(v);
    Py_XDECREF(left);
}
