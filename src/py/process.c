/*
 * Python agents and the process: what an agent does to the process's signal
 * handlers and threads, and the hooks through which the program hears of
 * it (eddy_python_set_signal_hook, eddy_python_set_thread_wait_hook in
 * eddy.h).
 *
 * Signals: Python's signal.signal() calls _signal.signal(), looked up on the
 * _signal module at each call; that attribute is replaced by guarded_signal,
 * which asks the program's hook first. Nothing is checked or polled
 * otherwise: the cost is paid by the calls alone.
 *
 * Threads: Py_FinalizeEx() waits (threading._shutdown) for the non-daemon
 * threads that `threading` started, without a word and for as long as they
 * run. Before it, the threads alive are listed and the program is told.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/py.h"

static eddy_python_signal_fn signal_hook;
static void *signal_hook_arg;
static eddy_python_thread_wait_fn thread_wait_hook;
static void *thread_wait_hook_arg;

void eddy_python_set_signal_hook(eddy_python_signal_fn fn, void *arg)
{
    signal_hook = fn;
    signal_hook_arg = arg;
}

void eddy_python_set_thread_wait_hook(eddy_python_thread_wait_fn fn, void *arg)
{
    thread_wait_hook = fn;
    thread_wait_hook_arg = arg;
}

/* ---------------------------------------------------------------- signal.signal */

static pid_t owner_pid;          /* the process that initialised the interpreter */
static unsigned long main_ident; /* its thread that did: Python's main thread */

/* Whether handler is one signal.signal() takes: a callable, SIG_DFL or SIG_IGN. */
static int valid_handler(PyObject *handler)
{
    if (PyCallable_Check(handler))
        return 1;
    if (!PyLong_Check(handler))
        return 0;
    long v = PyLong_AsLong(handler);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return v == (long)(intptr_t)SIG_DFL || v == (long)(intptr_t)SIG_IGN;
}

/*
 * _signal.signal(signalnum, handler). A call that Python would take (on the
 * main thread, a valid handler) in the process that loaded the agent is
 * first shown to the hook: when it keeps the signal, nothing is installed
 * and the call returns what _signal.getsignal() says is in place (None for
 * a handler not installed from Python). A child forked by the agent
 * (multiprocessing) is left alone: its handlers are its own. self is the
 * tuple (_signal.signal, _signal.getsignal) as Python made them.
 */
static PyObject *guarded_signal(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *orig_signal = PyTuple_GET_ITEM(self, 0), *orig_getsignal = PyTuple_GET_ITEM(self, 1);
    eddy_python_signal_fn hook = signal_hook;
    if (hook != NULL && nargs == 2 && PyLong_Check(args[0]) && getpid() == owner_pid &&
        PyThread_get_thread_ident() == main_ident && valid_handler(args[1])) {
        int overflow = 0;
        long signo = PyLong_AsLongAndOverflow(args[0], &overflow);
        if (signo == -1 && PyErr_Occurred())
            PyErr_Clear();
        else if (overflow == 0 && signo > 0 && signo < NSIG &&
                 hook((int)signo, signal_hook_arg) != 0)
            return PyObject_Vectorcall(orig_getsignal, args, 1, NULL);
    }
    return PyObject_Vectorcall(orig_signal, args, (size_t)nargs, NULL);
}

static PyMethodDef guarded_signal_def = {
    "signal", (PyCFunction)(void (*)(void))guarded_signal, METH_FASTCALL,
    "signal($module, signalnum, handler, /)\n--\n\n"
    "Set the action for the given signal, as Python's _signal.signal does, unless the\n"
    "program running the agent keeps that signal's handler (see eddy's docs/python.md)."};

void eddy__py_guard_signals(void)
{
    owner_pid = getpid();
    main_ident = PyThread_get_thread_ident();
    PyObject *mod = PyImport_ImportModule("_signal");
    PyObject *sig = mod != NULL ? PyObject_GetAttrString(mod, "signal") : NULL;
    PyObject *get = mod != NULL ? PyObject_GetAttrString(mod, "getsignal") : NULL;
    PyObject *orig = sig != NULL && get != NULL ? PyTuple_Pack(2, sig, get) : NULL;
    PyObject *guard = orig != NULL ? PyCFunction_New(&guarded_signal_def, orig) : NULL;
    if (guard != NULL)
        (void)PyObject_SetAttrString(mod, "signal", guard);
    Py_XDECREF(guard);
    Py_XDECREF(orig);
    Py_XDECREF(get);
    Py_XDECREF(sig);
    Py_XDECREF(mod);
    /* Without the guard, Python's own signal.signal works as ever: the
     * program can still see (and undo) what it did, with sigaction(2). */
    PyErr_Clear();
}

/* ---------------------------------------------------------------- threads left */

/* The names of the non-daemon threads alive other than this one and the
 * main thread: those threading._shutdown() waits for. A new list, or NULL
 * (no exception set) when there are none or they cannot be listed. */
static PyObject *threads_left(void)
{
    static const char code[] = "import sys\n"
                               "t = sys.modules.get('threading')\n"
                               "names = [] if t is None else [\n"
                               "    th.name for th in t.enumerate()\n"
                               "    if th is not t.main_thread() and th.ident != t.get_ident()\n"
                               "    and not th.daemon and th.is_alive()]\n";
    PyObject *globals = PyDict_New();
    PyObject *names = NULL;
    if (globals != NULL &&
        PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) == 0) {
        PyObject *r = PyRun_String(code, Py_file_input, globals, globals);
        names = r != NULL ? PyDict_GetItemString(globals, "names") : NULL; /* borrowed */
        Py_XDECREF(r);
    }
    if (names != NULL && PyList_Check(names) && PyList_GET_SIZE(names) > 0)
        Py_INCREF(names);
    else
        names = NULL;
    Py_XDECREF(globals);
    PyErr_Clear();
    return names;
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
    eddy_python_thread_wait_fn hook = thread_wait_hook;
    if (hook == NULL)
        return;
    PyObject *names = threads_left();
    if (names == NULL)
        return;
    size_t n = (size_t)PyList_GET_SIZE(names);
    const char **v = calloc(n, sizeof(*v));
    if (v != NULL) {
        for (size_t i = 0; i < n; i++) {
            PyObject *s = PyList_GET_ITEM(names, (Py_ssize_t)i);
            v[i] = PyUnicode_Check(s) ? PyUnicode_AsUTF8(s) : NULL;
            if (v[i] == NULL) {
                PyErr_Clear();
                v[i] = "?";
            }
        }
        flush_std_streams();
        hook(n, v, thread_wait_hook_arg);
        free(v);
    }
    Py_DECREF(names);
}
