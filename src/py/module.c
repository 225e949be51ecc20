/*
 * The `eddy` module: RunnerContext, MemoryObject and the call awaitables in
 * C; Event, Agent, action and the journal codecs in Python (module_py.h),
 * exec'd into the module after the C types. See the design notes in py.h.
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/log.h"
#include "core/memory.h"
#include "py/py.h"

#include "py/module_py.h"
#include "util/jalloc.h"

eddy__py_mod eddy__py;

/* Borrowed Python-level helper of the module. */
static PyObject *helper(const char *name)
{
    for (int i = 0; i < eddy__py.nfound; i++)
        if (eddy__py.found[i].name == name)
            return eddy__py.found[i].fn;
    PyObject *h = PyDict_GetItemString(eddy__py.helpers, name);
    if (h == NULL) {
        PyErr_Format(PyExc_SystemError, "eddy module helper %s is missing", name);
        return NULL;
    }
    int n = eddy__py.nfound;
    if (n < (int)(sizeof(eddy__py.found) / sizeof(eddy__py.found[0]))) {
        eddy__py.found[n].name = name;
        eddy__py.found[n].fn = h;
        eddy__py.nfound = n + 1;
    }
    return h;
}

static PyObject *call_helper(const char *name, PyObject *const *args, size_t n)
{
    PyObject *h = helper(name);
    return h != NULL ? PyObject_Vectorcall(h, args, n, NULL) : NULL;
}

/* A malloc'd copy of a str (NULL for None), or NULL with an exception. */
static int str_dup(PyObject *s, char **out)
{
    *out = NULL;
    if (s == Py_None)
        return 0;
    const char *u = PyUnicode_AsUTF8(s);
    if (u == NULL)
        return -1;
    if ((*out = strdup(u)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

PyObject *eddy__py_fetch_exception(void)
{
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    if (val != NULL && tb != NULL)
        PyException_SetTraceback(val, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return val;
}

PyObject *eddy__py_repr(PyObject *o)
{
    PyObject *r = PyObject_Repr(o);
    if (r != NULL)
        return r;
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyErr_Clear();
    return PyUnicode_FromFormat("<%s object (repr failed)>", Py_TYPE(o)->tp_name);
}

static void raise_exception(PyObject *exc)
{
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
}

/* ---------------------------------------------------------------- RunnerContext */

typedef struct ctx_obj {
    PyObject ob_base;
    eddy_ctx *task;   /* NULL once the action execution ended */
    int dropped;      /* it ended unfinished */
    int branch_depth; /* > 0 while ctx.gather() steps one of its coroutines */
} ctx_obj;

PyObject *eddy__py_ctx_new(eddy_ctx *t)
{
    ctx_obj *c = PyObject_New(ctx_obj, eddy__py.ctx_type);
    if (c != NULL) {
        c->task = t;
        c->dropped = 0;
        c->branch_depth = 0;
    }
    return (PyObject *)c;
}

eddy_ctx *eddy__py_ctx_task(PyObject *ctxobj)
{
    return ((ctx_obj *)ctxobj)->task;
}

void eddy__py_ctx_invalidate(PyObject *ctxobj, int dropped)
{
    if (ctxobj != NULL) {
        ((ctx_obj *)ctxobj)->task = NULL;
        ((ctx_obj *)ctxobj)->dropped = dropped;
    }
}

static void ctx_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* t is the action execution being stepped now, on this thread (the
 * runtime's eddy__running): the one place src/py asks. */
static int stepped_now(const eddy_ctx *t)
{
    return t == eddy__running;
}

/* The live task of a context, on its mailbox thread, being stepped now;
 * else NULL with an error. */
static eddy_ctx *ctx_task(PyObject *self, const char *what)
{
    eddy_ctx *t = ((ctx_obj *)self)->task;
    if (t == NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this RunnerContext belongs to an action execution that has ended%s", what,
                     ((ctx_obj *)self)->dropped
                         ? " unfinished (eddy dropped it: what it did is discarded)"
                         : "");
        return NULL;
    }
    if (t->in_body && eddy__runtime_on_thread(t->rt)) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s cannot be used inside the body of a durable call: the body may only use "
                     "its arguments (its effects would not be replayed)",
                     what);
        return NULL;
    }
    if (!eddy__runtime_on_thread(t->rt)) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s can only be used by the action itself, on eddy's mailbox thread; not "
                     "from a function run by execute_async/durable_execute_async or from "
                     "another thread",
                     what);
        return NULL;
    }
    if (!stepped_now(t)) {
        /* Kept from another action execution (in a global, say): its calls
         * would take that one's journal positions and send its events. */
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this RunnerContext belongs to another action execution, not the one "
                     "running now (was it kept in a global or an object?); use the context "
                     "your action was given",
                     what);
        return NULL;
    }
    return t;
}

static PyObject *ctx_send_event(PyObject *self, PyObject *ev)
{
    eddy_ctx *t = ctx_task(self, "RunnerContext.send_event");
    if (t == NULL)
        return NULL;
    PyObject *event_cls = helper("Event");
    if (event_cls == NULL)
        return NULL;
    int is = PyObject_IsInstance(ev, event_cls);
    if (is <= 0) {
        if (is == 0)
            PyErr_Format(PyExc_TypeError,
                         "send_event takes an eddy.Event (or a subclass), not '%s'",
                         Py_TYPE(ev)->tp_name);
        return NULL;
    }
    /* The type is the instance's "_eddy_type" when set, else its class's
     * name; the attributes are the instance's other members but those
     * starting with "_eddy" (as the module's _type_name_of and _attributes,
     * without calling them). */
    PyObject *attrs = PyObject_GenericGetDict(ev, NULL);
    PyObject *tname = NULL;
    if (attrs != NULL) {
        PyObject *set = PyDict_GetItemWithError(attrs, eddy__py.s_eddy_type);
        int truthy = set != NULL ? PyObject_IsTrue(set) : 0;
        if (truthy > 0)
            tname = Py_NewRef(set);
        else if (truthy == 0 && !PyErr_Occurred())
            tname = PyType_GetName(Py_TYPE(ev));
    }
    const char *type = tname != NULL ? PyUnicode_AsUTF8(tname) : NULL;
    if (type != NULL && strcmp(type, EDDY_INPUT_EVENT) == 0) {
        /* As eddy_ctx_send_event refuses it, with a Python error. */
        PyErr_SetString(PyExc_TypeError,
                        "send_event: an action cannot send an InputEvent: eddy makes the "
                        "InputEvent of each input itself, and one sent would run the input's "
                        "actions again in this run; send an event type of your own (a subclass "
                        "of Event) to trigger other actions");
        type = NULL;
    }
    json_t *jattrs = type != NULL ? json_object() : NULL;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    int ok = jattrs != NULL, has_output = 0;
    while (ok && PyDict_Next(attrs, &pos, &k, &v)) {
        const char *ks = PyUnicode_AsUTF8(k);
        if (ks == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                char why[512];
                PyErr_Clear();
                eddy__py_surrogate_why(k, why, sizeof(why));
                PyErr_Format(PyExc_ValueError, "%s attribute name %s", type, why);
            }
            ok = 0;
            break;
        }
        if (strncmp(ks, "_eddy", 5) == 0)
            continue;
        has_output |= strcmp(ks, "output") == 0;
        json_t *jv = eddy__py_to_json_named(v, "%s attribute '%s'", type, ks);
        if (jv == NULL || json_object_set_new(jattrs, ks, jv) != 0) {
            if (jv != NULL)
                PyErr_NoMemory(); /* json_object_set_new sets no exception */
            ok = 0;
            break;
        }
    }
    if (jattrs == NULL && type != NULL)
        PyErr_NoMemory();
    if (ok && !has_output && strcmp(type, EDDY_OUTPUT_EVENT) == 0) {
        /* As eddy_ctx_send_event refuses it: it wrote a null line. */
        PyErr_Format(PyExc_TypeError,
                     "send_event: action '%s' for key %s sent an OutputEvent without an output "
                     "(OutputEvent() or no attribute 'output'): give OutputEvent(output=value); "
                     "output=None writes a null line",
                     t->action->name, t->key->text);
        ok = 0;
    }
    eddy_event *cev = NULL;
    if (ok) {
        cev = eddy_event_new(type, jattrs);
        jattrs = NULL;
        if (cev == NULL)
            PyErr_NoMemory();
    }
    json_decref(jattrs);
    Py_XDECREF(tname);
    Py_XDECREF(attrs);
    if (cev == NULL)
        return NULL;
    int rc = eddy_ctx_send_event(t, cev);
    if (rc != EDDY_OK) {
        eddy_event_free(cev);
        if (rc == EDDY_ELIMIT) /* each attribute passed, the event around them did not */
            PyErr_Format(
                PyExc_ValueError,
                "send_event: %s's attributes, in the event's dict of them, are " EDDY__PY_TOO_DEEP,
                type);
        else
            PyErr_Format(PyExc_RuntimeError, "send_event: %s", eddy_strerror(rc));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *ctx_key(PyObject *self, void *closure)
{
    (void)closure;
    eddy_ctx *t = ctx_task(self, "RunnerContext.key");
    if (t == NULL)
        return NULL;
    json_t *j = json_loads(eddy_ctx_key(t), JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (j == NULL)
        return PyErr_NoMemory();
    PyObject *r = eddy__py_from_json(j);
    json_decref(j);
    return r;
}

static PyObject *mem_new(PyObject *ctxobj, int sensory, const char *prefix);

static PyObject *ctx_stm(PyObject *self, void *closure)
{
    (void)closure;
    return ctx_task(self, "RunnerContext.short_term_memory") != NULL ? mem_new(self, 0, "") : NULL;
}

static PyObject *ctx_sensory(PyObject *self, void *closure)
{
    (void)closure;
    return ctx_task(self, "RunnerContext.sensory_memory") != NULL ? mem_new(self, 1, "") : NULL;
}

/* ---------------------------------------------------------------- journal codecs */

/* The key of the JSON wrapper of a pickle (the module's _PICKLE). */
#define PICKLE_KEY "__eddy_pickle__"
/* The type of a NonDeterminismError raised out of an action (_qualified). */
#define NONDET_TYPE "eddy.NonDeterminismError"

/*
 * The journal text of a durable call's result, malloc'd into *out: 0, or -1
 * with an exception. JSON when the result is made exactly of JSON types,
 * which read back as the same types; anything else (a tuple, a subclass such
 * as defaultdict or an IntEnum, an int over 64 bits, NaN) is pickled, so that
 * a replay gives the action what the first run gave it. A dict that looks like
 * the wrapper is pickled too.
 */
static int encode_result(PyObject *r, char **out)
{
    json_t *j = eddy__py_to_json_exact(r);
    if (j != NULL && !(json_is_object(j) && json_object_get(j, PICKLE_KEY) != NULL)) {
        *out = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(j);
        if (*out == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        return 0;
    }
    json_decref(j);
    if (j == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError) &&
            !PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
    }
    PyObject *text = call_helper("_pickle_text", &r, 1);
    int rc = text != NULL ? str_dup(text, out) : -1;
    Py_XDECREF(text);
    return rc;
}

/* Encode a call's outcome for the journal. An unencodable result turns into a
 * TypeError outcome (journaled as such, so that a replay agrees). */
static void encode_outcome(eddy__py_call *c)
{
    if (c->exc == NULL) {
        PyObject *r = c->result != NULL ? c->result : Py_None;
        if (encode_result(r, &c->payload) == 0)
            return;
        PyObject *why = eddy__py_fetch_exception();
        PyObject *s = why != NULL ? PyObject_Str(why) : NULL;
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "the result of durable call %s (a '%s') can be journaled neither as JSON "
                     "nor with pickle: %S",
                     c->fn_id, Py_TYPE(r)->tp_name, s != NULL ? s : Py_None);
        Py_XDECREF(s);
        Py_XDECREF(why);
        Py_CLEAR(c->result);
        c->exc = eddy__py_fetch_exception();
    }
    PyObject *t = call_helper("_encode_error", &c->exc, 1);
    if (t == NULL || !PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 ||
        str_dup(PyTuple_GET_ITEM(t, 0), &c->err_type) != 0 ||
        str_dup(PyTuple_GET_ITEM(t, 1), &c->err_msg) != 0 ||
        str_dup(PyTuple_GET_ITEM(t, 2), &c->payload) != 0) {
        PyErr_Clear();
        if (c->err_type == NULL)
            c->err_type = strdup(Py_TYPE(c->exc)->tp_name);
        if (c->err_msg == NULL)
            c->err_msg = strdup("");
    }
    Py_XDECREF(t);
}

/* Decode a journaled outcome into *result or *exc (one of them set); fn_id
 * is the call's, which an exception's note names (_decode_error). */
static void decode_replay(const eddy__dcall *dc, const char *fn_id, PyObject **result,
                          PyObject **exc)
{
    if (dc->what == EDDY_DCALL_REPLAY_OK) {
        PyObject *text = PyUnicode_FromString(dc->payload);
        *result = text != NULL ? call_helper("_decode_value", &text, 1) : NULL;
        Py_XDECREF(text);
    } else {
        PyObject *args[4] = {PyUnicode_FromString(dc->err_type != NULL ? dc->err_type : "error"),
                             PyUnicode_FromString(dc->err_msg != NULL ? dc->err_msg : ""),
                             dc->payload != NULL ? PyUnicode_FromString(dc->payload)
                                                 : Py_NewRef(Py_None),
                             PyUnicode_FromString(fn_id)};
        if (args[0] != NULL && args[1] != NULL && args[2] != NULL && args[3] != NULL)
            *exc = call_helper("_decode_error", args, 4);
        for (int i = 0; i < 4; i++)
            Py_XDECREF(args[i]);
        if (*exc != NULL)
            return;
    }
    if (*result == NULL)
        *exc = eddy__py_fetch_exception();
}

static int function_id(PyObject *fn, char **out);

int eddy__py_function_id(PyObject *fn, char **out)
{
    if (function_id(fn, out) == 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    /* A lone surrogate in the name (set through __qualname__, say): the id
     * goes into the journal, which holds UTF-8. Said as for a value. */
    PyErr_Clear();
    PyObject *id = call_helper("_function_id", &fn, 1);
    if (id != NULL && PyUnicode_Check(id)) {
        char why[512];
        eddy__py_surrogate_why(id, why, sizeof(why));
        PyErr_Format(PyExc_ValueError,
                     "durable call: the id of its function (fn.__module__ + '.' + "
                     "fn.__qualname__) %s",
                     why);
    } else if (id != NULL) {
        PyErr_SetString(PyExc_ValueError, "durable call: the id of its function is not a str");
    }
    Py_XDECREF(id);
    return -1;
}

static int function_id(PyObject *fn, char **out)
{
    PyObject *mod = PyFunction_Check(fn) ? PyFunction_GET_MODULE(fn) : NULL;
    PyObject *qual = mod != NULL ? ((PyFunctionObject *)fn)->func_qualname : NULL;
    if (qual != NULL && PyUnicode_CheckExact(qual) &&
        (mod == Py_None || PyUnicode_CheckExact(mod))) {
        Py_ssize_t ml = 0, ql = 0;
        const char *ms = mod != Py_None ? PyUnicode_AsUTF8AndSize(mod, &ml) : "";
        const char *qs = ms != NULL ? PyUnicode_AsUTF8AndSize(qual, &ql) : NULL;
        if (qs == NULL)
            return -1;
        if (ml == 0) /* None or "": the helper's `or "?"` */
            ms = "?", ml = 1;
        char *id = malloc((size_t)ml + (size_t)ql + 2);
        if (id == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(id, ms, (size_t)ml);
        id[ml] = '.';
        memcpy(id + ml + 1, qs, (size_t)ql + 1);
        *out = id;
        return 0;
    }
    PyObject *id = call_helper("_function_id", &fn, 1);
    int rc = id != NULL ? str_dup(id, out) : -1;
    Py_XDECREF(id);
    return rc;
}

/*
 * Plan a durable call of fn(*args, **kwargs) for task t: fills *fn_id
 * (malloc'd) and *dc; for a replay, fills *result or *exc. Returns 0, or -1
 * with an exception set.
 */
static int durable_prepare(eddy_ctx *t, PyObject *fn, PyObject *args, PyObject *kwargs,
                           int reconcilable, char **fn_id, eddy__dcall *dc, PyObject **result,
                           PyObject **exc)
{
    *fn_id = NULL;
    *result = *exc = NULL;
    int rc = eddy__py_function_id(fn, fn_id);
    if (rc != 0)
        return -1;
    char digest[17] = "";
    if (t->rt->store != NULL) {
        /* A functools.partial's bound arguments are the call's too: digest
         * what the function behind it is called with. A plain function, a
         * builtin, a class or a bound method is no partial: its digest is
         * that of the call's arguments, as always. */
        PyObject *bound = NULL;
        if (!PyFunction_Check(fn) && !PyCFunction_Check(fn) && !PyType_Check(fn) &&
            !PyMethod_Check(fn)) {
            PyObject *hargs[3] = {fn, args, kwargs != NULL ? kwargs : Py_None};
            if ((bound = call_helper("_partial_args", hargs, 3)) == NULL)
                goto fail;
            if (bound == Py_None) {
                Py_CLEAR(bound);
            } else { /* (args, kwargs): a tuple and a dict */
                args = PyTuple_GET_ITEM(bound, 0);
                kwargs = PyTuple_GET_ITEM(bound, 1);
            }
        }
        PyObject *kw = kwargs != NULL ? Py_NewRef(kwargs) : PyDict_New();
        PyObject *pair = kw != NULL ? PyTuple_Pack(2, args, kw) : NULL;
        Py_XDECREF(kw);
        if (pair == NULL) {
            Py_XDECREF(bound);
            goto fail;
        }
        json_t *j = eddy__py_to_json(pair, "args");
        if (j != NULL) {
            int drc = eddy__durable_digest_json(t->rt, j, digest);
            json_decref(j);
            if (drc != EDDY_OK) {
                PyErr_NoMemory();
                Py_DECREF(pair);
                Py_XDECREF(bound);
                goto fail;
            }
        } else if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            /* Not "not JSON": the pickle's digest would differ from the
             * journal's, and a committed call would run again. */
            Py_DECREF(pair);
            Py_XDECREF(bound);
            goto fail;
        } else {
            /* Not JSON: digest the pickle (or repr). Why not JSON is kept for
             * a RecursionError of both (not eddy's own frames: what failed). */
            PyObject *not_json = eddy__py_fetch_exception();
            PyObject *hargs[2] = {args, kwargs != NULL ? kwargs : PyTuple_GET_ITEM(pair, 1)};
            PyObject *b = call_helper("_args_bytes", hargs, 2);
            if (b == NULL && PyErr_ExceptionMatches(PyExc_RecursionError)) {
                PyErr_Clear();
                PyObject *why = not_json != NULL ? PyObject_Str(not_json) : NULL;
                if (why == NULL)
                    PyErr_Clear();
                PyErr_Format(PyExc_ValueError,
                             "durable call %s: its arguments cannot be digested: they are not "
                             "JSON (%S), and their pickle and repr reached Python's recursion "
                             "limit (arguments nested too deep, or the action's own calls)",
                             *fn_id, why != NULL ? why : Py_None);
                Py_XDECREF(why);
            }
            Py_XDECREF(not_json);
            if (b == NULL || !PyBytes_Check(b)) {
                Py_XDECREF(b);
                Py_DECREF(pair);
                Py_XDECREF(bound);
                goto fail;
            }
            eddy__durable_digest(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b), digest);
            Py_DECREF(b);
        }
        Py_DECREF(pair);
        Py_XDECREF(bound);
    }
    int diverged = t->nondet != NULL;
    rc = eddy__durable_plan(t, *fn_id, digest, reconcilable, dc);
    switch (rc) {
    case EDDY_OK:
        break;
    case EDDY_ENONDET: {
        /* The action execution fails with this whether the action catches it
         * or not (as an uncaught one: same type and message); its later
         * durable calls raise it again. */
        const char *m = eddy_error_message(t->nondet);
        if (!diverged) {
            eddy_error *e = eddy_error_new(NONDET_TYPE, m);
            if (e == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            eddy_error_free(t->nondet);
            t->nondet = e;
            m = eddy_error_message(e);
        }
        PyObject *cls = helper("NonDeterminismError");
        if (cls == NULL)
            goto fail;
        if (diverged)
            PyErr_Format(cls,
                         "durable call of %s refused: an earlier durable call of this action "
                         "execution differed from the journal (--strict-determinism): %s",
                         *fn_id, m);
        else
            PyErr_SetString(cls, m);
        goto fail;
    }
    case EDDY_ECANCELED:
        PyErr_SetString(PyExc_RuntimeError, "eddy is stopping: durable call canceled");
        goto fail;
    default:
        PyErr_Format(PyExc_RuntimeError, "durable call %s: %s", *fn_id, eddy_strerror(rc));
        goto fail;
    }
    if (dc->what == EDDY_DCALL_REPLAY_OK || dc->what == EDDY_DCALL_REPLAY_ERROR)
        decode_replay(dc, *fn_id, result, exc);
    return 0;
fail:
    free(*fn_id);
    *fn_id = NULL;
    return -1;
}

/* ---------------------------------------------------------------- call awaitables */

static eddy__py_call *call_new(PyObject *ctxobj, PyObject *fn, PyObject *args, PyObject *kwargs)
{
    eddy__py_call *c = PyObject_GC_New(eddy__py_call, eddy__py.call_type);
    if (c == NULL)
        return NULL;
    memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
    c->ctxobj = Py_NewRef(ctxobj);
    c->fn = Py_NewRef(fn);
    c->args = Py_NewRef(args);
    c->kwargs = Py_XNewRef(kwargs);
    eddy__queue_init(&c->unawaited);
    PyObject_GC_Track(c);
    return c;
}

/* ---------------------------------------------------------------- calls never awaited */

/* A call made by the action (execute_async, durable_execute_async), to be
 * awaited: listed in its task until then. */
static void unawaited_add(eddy_ctx *t, eddy__py_call *c)
{
    eddy__py_task *pt = t->lang;
    if (pt != NULL)
        eddy__queue_insert_tail(&pt->unawaited, &c->unawaited);
}

/* The call is awaited: the driver starts it, or its result (a replay's)
 * goes to the action. Not before: a call whose awaiter is only stepped
 * (list(call.__await__())) never runs. */
static void unawaited_done(eddy__py_call *c)
{
    eddy__queue_remove(&c->unawaited); /* a no-op when not listed */
}

void eddy__py_call_awaited(eddy__py_call *c)
{
    unawaited_done(c);
}

/* The call goes away (or is cleared by the GC): if it was never awaited
 * while its action execution runs, the action's end warns about it. */
static void unawaited_gone(eddy__py_call *c)
{
    if (eddy__queue_empty(&c->unawaited))
        return;
    eddy__queue_remove(&c->unawaited);
    eddy_ctx *t = c->ctxobj != NULL ? ((ctx_obj *)c->ctxobj)->task : NULL;
    eddy__py_task *pt = t != NULL ? t->lang : NULL;
    if (pt == NULL)
        return;
    if (pt->unawaited_gone++ == 0 && c->fn != NULL)
        pt->unawaited_fn = Py_NewRef(c->fn);
}

void eddy__py_unawaited_end(eddy_ctx *t, int finished)
{
    eddy__py_task *pt = t->lang;
    size_t n = pt->unawaited_gone;
    PyObject *fn = pt->unawaited_fn; /* the reference moves here */
    pt->unawaited_fn = NULL;
    while (!eddy__queue_empty(&pt->unawaited)) {
        eddy__queue *q = eddy__queue_head(&pt->unawaited);
        eddy__queue_remove(q);
        if (n++ == 0)
            fn = Py_XNewRef(eddy__queue_data(q, eddy__py_call, unawaited)->fn);
    }
    pt->unawaited_gone = 0;
    if (finished && n > 0) {
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb); /* none is expected; keep it if one is */
        char *id = NULL;
        if (fn == NULL || eddy__py_function_id(fn, &id) != 0)
            PyErr_Clear();
        /* A call without a function is a ctx.sleep(). */
        const char *name = id != NULL ? id : fn == NULL ? "ctx.sleep" : "?";
        if (n == 1)
            eddy__log(EDDY_LOG_WARNING,
                      "action '%s' for key %s made a call of %s that it never awaited, so it "
                      "never ran (await it, or give it to ctx.gather and await that)",
                      t->action->name, t->key->text, name);
        else
            eddy__log(EDDY_LOG_WARNING,
                      "action '%s' for key %s made %zu calls that it never awaited (the first "
                      "of %s), so they never ran (await them, or give them to ctx.gather and "
                      "await that)",
                      t->action->name, t->key->text, n, name);
        free(id);
        PyErr_Restore(type, val, tb);
    }
    Py_XDECREF(fn);
}

static int call_traverse(PyObject *self, visitproc visit, void *arg)
{
    eddy__py_call *c = (eddy__py_call *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->ctxobj);
    Py_VISIT(c->fn);
    Py_VISIT(c->args);
    Py_VISIT(c->kwargs);
    Py_VISIT(c->pyctx);
    Py_VISIT(c->result);
    Py_VISIT(c->exc);
    return 0;
}

static int call_clear(PyObject *self)
{
    eddy__py_call *c = (eddy__py_call *)self;
    unawaited_gone(c);
    /* A running call is referenced by its task: never garbage. */
    Py_CLEAR(c->ctxobj);
    Py_CLEAR(c->fn);
    Py_CLEAR(c->args);
    Py_CLEAR(c->kwargs);
    Py_CLEAR(c->pyctx);
    Py_CLEAR(c->result);
    Py_CLEAR(c->exc);
    return 0;
}

static void call_dealloc(PyObject *self)
{
    eddy__py_call *c = (eddy__py_call *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    call_clear(self);
    free(c->fn_id);
    free(c->payload);
    free(c->err_type);
    free(c->err_msg);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PySendResult call_send(PyObject *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    eddy__py_call *c = (eddy__py_call *)self;
    if (c->state != EDDY_PY_CALL_DONE) {
        *result = Py_NewRef(self); /* to the driver, which submits it */
        return PYGEN_NEXT;
    }
    unawaited_done(c); /* a replay's result, never given to the driver */
    if (c->exc != NULL) {
        raise_exception(c->exc);
        *result = NULL;
        return PYGEN_ERROR;
    }
    *result = Py_NewRef(c->result != NULL ? c->result : Py_None);
    return PYGEN_RETURN;
}

static PyObject *call_repr(PyObject *self)
{
    eddy__py_call *c = (eddy__py_call *)self;
    static const char *const states[] = {"not started", "running", "done"};
    if (c->is_sleep)
        return PyUnicode_FromFormat("<eddy sleep of %llu ms, %s>", (unsigned long long)c->sleep_ms,
                                    states[c->state]);
    PyObject *fn = eddy__py_repr(c->fn);
    PyObject *r = fn != NULL
                      ? PyUnicode_FromFormat("<eddy %scall of %U, %s>",
                                             c->durable ? "durable " : "", fn, states[c->state])
                      : NULL;
    Py_XDECREF(fn);
    return r;
}

/*
 * A worker keeps its Python thread state from its first call to its exit.
 * PyGILState_Ensure on a thread without one creates it, and the matching
 * Release deletes it again: per call, that was an allocation, two passes
 * under the interpreter's lock and the frees. One more Ensure, never
 * matched by the calls, keeps it; the thread's exit (a pthread key
 * destructor) deletes it. By then the C library may have cleared CPython's
 * own per-thread slot, so the destructor uses the state it was given.
 */
static pthread_key_t worker_key;
static pthread_once_t worker_once = PTHREAD_ONCE_INIT;

static void worker_exit(void *ts)
{
    PyEval_RestoreThread(ts); /* takes the GIL */
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent(); /* and releases it */
}

static void worker_key_init(void)
{
    if (pthread_key_create(&worker_key, worker_exit) != 0)
        worker_key = (pthread_key_t)-1;
}

static void worker_keep_state(void)
{
    pthread_once(&worker_once, worker_key_init);
    if (worker_key == (pthread_key_t)-1 || pthread_getspecific(worker_key) != NULL)
        return;
    if (pthread_setspecific(worker_key, PyThreadState_Get()) == 0)
        PyGILState_Ensure(); /* with the GIL held: only the counter moves */
}

void eddy__py_call_work(eddy__job *job)
{
    eddy__py_call *c = (eddy__py_call *)((char *)job - offsetof(eddy__py_call, job));
    PyGILState_STATE g = PyGILState_Ensure();
    worker_keep_state();
    /* In the copy of the action's context made at the call, as
     * asyncio.to_thread runs a function (contextvars.copy_context().run). */
    int entered = c->pyctx != NULL && PyContext_Enter(c->pyctx) == 0;
    PyObject *r = c->pyctx == NULL || entered ? PyObject_Call(c->fn, c->args, c->kwargs) : NULL;
    if (r != NULL)
        c->result = r;
    else
        c->exc = eddy__py_fetch_exception();
    if (entered && PyContext_Exit(c->pyctx) != 0)
        PyErr_Clear(); /* the function left another context current: nothing to undo */
    if (c->journal)
        encode_outcome(c);
    PyGILState_Release(g);
}

/* One of the calls the task waits for has ended: the last one lets it go
 * on, after the commit of the outcomes journaled meanwhile. */
static void call_settled(eddy_ctx *t, eddy__py_task *pt)
{
    if (--t->waiting > 0)
        return;
    if (pt->commit_wait) {
        pt->commit_wait = 0;
        eddy__durable_wait_commit(t, 1); /* the calls ran on workers */
    } else {
        eddy__task_ready(t);
    }
}

void eddy__py_call_done(eddy__job *job)
{
    /* Loop thread, without the GIL: only C fields are touched. */
    eddy__py_call *c = (eddy__py_call *)((char *)job - offsetof(eddy__py_call, job));
    eddy_ctx *t = ((ctx_obj *)c->ctxobj)->task;
    eddy__py_task *pt = t->lang;
    c->state = EDDY_PY_CALL_DONE;
    if (job->canceled) { /* the stop, or its run's earlier results never reached the disk */
        t->rt->stats.async_calls--; /* counted when handed over; it never ran */
        eddy__durable_job_canceled(t->rt);
        /* It never ran: a start journaled PENDING goes (agent.c submit). */
        if (c->journal && c->dc.what == EDDY_DCALL_RUN_PENDING)
            eddy__durable_unpend(t, &c->dc);
    } else if (c->journal) {
        /* Also while stopping: the call ran, and the stop's last commit
         * takes its result, so that the resume does not run it again (as
         * for a C action, which journals its result as it unwinds). */
        int status = c->err_type != NULL ? EDDY_JCALL_ERROR : EDDY_JCALL_OK;
        if (eddy__durable_record(t, c->fn_id, &c->dc, status, c->payload, c->err_type,
                                 c->err_msg) == EDDY_OK)
            pt->commit_wait = 1;
    }
    call_settled(t, pt);
}

void eddy__py_sleep_done(eddy__sleep *s)
{
    /* Loop thread, without the GIL: only C fields are touched. The call is
     * alive: the task holds what it awaits (pt->waiting) until it goes on. */
    eddy__py_call *c = (eddy__py_call *)((char *)s - offsetof(eddy__py_call, sleep));
    c->state = EDDY_PY_CALL_DONE; /* canceled too: a stopping runtime drops the task */
    call_settled(s->task, s->task->lang);
}

/*
 * Refuse a coroutine function (async def) as the function of a call: called
 * on a worker (or here, for durable_execute), it only makes a coroutine that
 * nothing runs, which came back as the result (or failed to pickle). A plain
 * function is read directly, a builtin or a class needs no look; anything
 * else (a partial, a bound method, a callable object) goes through the
 * module's _is_coroutine_function. 0, or -1 with an exception set.
 */
static int refuse_coroutine_function(PyObject *fn, const char *what)
{
    int is;
    if (PyFunction_Check(fn)) {
        is = (((PyCodeObject *)PyFunction_GET_CODE(fn))->co_flags &
              (CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    } else if (PyCFunction_Check(fn) || PyType_Check(fn)) {
        is = 0;
    } else {
        PyObject *r = call_helper("_is_coroutine_function", &fn, 1);
        is = r != NULL ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
    }
    if (is <= 0)
        return is;
    char *id = NULL;
    if (eddy__py_function_id(fn, &id) != 0)
        PyErr_Clear();
    int here = strcmp(what, "durable_execute") == 0; /* the others run fn on a worker */
    PyErr_Format(PyExc_TypeError,
                 "%s takes a plain function, which %s: %s is a coroutine function (async def), "
                 "and calling it there would only make a coroutine that nothing runs; make it "
                 "a def%s",
                 what, here ? "it calls here, on eddy's mailbox thread" : "runs on a worker thread",
                 id != NULL ? id : "fn", here ? "" : " (it may block: it has a thread of its own)");
    free(id);
    return -1;
}

/* Split (fn, *args) of a METH_VARARGS call. */
static int split_fn(PyObject *args, const char *what, PyObject **fn, PyObject **rest)
{
    if (PyTuple_GET_SIZE(args) < 1 || !PyCallable_Check(PyTuple_GET_ITEM(args, 0))) {
        PyErr_Format(PyExc_TypeError, "%s(fn, *args, **kwargs) needs a callable fn", what);
        return -1;
    }
    *fn = PyTuple_GET_ITEM(args, 0);
    if (refuse_coroutine_function(*fn, what) != 0)
        return -1;
    *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    return *rest != NULL ? 0 : -1;
}

/*
 * Flink Agents' reconciler= keyword: a callable of no arguments that runs in
 * place of fn when the journal holds the call as started but unfinished
 * (the process died while it ran). Takes it out of *kwargs (a new dict
 * without it; the function never sees it) into *reconciler (NULL when
 * absent or None). 0, or -1 with an exception set.
 */
static int take_reconciler(PyObject **kwargs, PyObject **reconciler)
{
    *reconciler = NULL;
    PyObject *r = *kwargs != NULL ? PyDict_GetItemString(*kwargs, "reconciler") : NULL;
    if (r == NULL)
        return 0;
    PyObject *rest = PyDict_Copy(*kwargs);
    if (rest == NULL || PyDict_DelItemString(rest, "reconciler") != 0) {
        Py_XDECREF(rest);
        return -1;
    }
    if (r != Py_None) {
        PyObject *ok = call_helper("_check_reconciler", &r, 1);
        if (ok == NULL) {
            Py_DECREF(rest);
            return -1;
        }
        Py_DECREF(ok);
        *reconciler = Py_NewRef(r);
    }
    *kwargs = rest;
    return 0;
}

static PyObject *ctx_execute_async(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *fn, *rest;
    if (ctx_task(self, "RunnerContext.execute_async") == NULL ||
        split_fn(args, "execute_async", &fn, &rest) != 0)
        return NULL;
    eddy__py_call *c = call_new(self, fn, rest, kwargs);
    Py_DECREF(rest);
    if (c != NULL && (c->pyctx = PyContext_CopyCurrent()) == NULL)
        Py_CLEAR(c);
    if (c != NULL)
        unawaited_add(((ctx_obj *)self)->task, c);
    return (PyObject *)c;
}

static PyObject *ctx_durable_execute_async(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *fn, *rest, *reconciler;
    eddy_ctx *t = ctx_task(self, "RunnerContext.durable_execute_async");
    if (t == NULL || split_fn(args, "durable_execute_async", &fn, &rest) != 0)
        return NULL;
    PyObject *kw = kwargs;
    if (take_reconciler(&kw, &reconciler) != 0) {
        Py_DECREF(rest);
        return NULL;
    }
    eddy__py_call *c = call_new(self, fn, rest, kw);
    if (c == NULL || durable_prepare(t, fn, rest, kw, reconciler != NULL, &c->fn_id, &c->dc,
                                     &c->result, &c->exc) != 0) {
        Py_DECREF(rest);
        Py_CLEAR(c);
        goto out;
    }
    Py_DECREF(rest);
    if (c->result != NULL || c->exc != NULL) {
        c->state = EDDY_PY_CALL_DONE; /* replayed from the journal */
    } else {
        c->durable = 1;
        c->journal = t->rt->store != NULL; /* without a store the call simply runs */
        if (c->dc.what == EDDY_DCALL_RECONCILE) {
            /* Started before a crash, never finished: the reconciler finds
             * out what became of it, and its outcome is the call's. */
            Py_SETREF(c->fn, Py_NewRef(reconciler));
            Py_SETREF(c->args, PyTuple_New(0));
            Py_CLEAR(c->kwargs);
            if (c->args == NULL)
                Py_CLEAR(c);
        }
        if (c != NULL && (c->pyctx = PyContext_CopyCurrent()) == NULL)
            Py_CLEAR(c);
    }
    if (c != NULL)
        unawaited_add(t, c);
out:
    Py_XDECREF(reconciler);
    if (kw != kwargs)
        Py_DECREF(kw);
    return (PyObject *)c;
}

/* durable_execute: runs fn here, on the mailbox thread, and journals the
 * outcome without waiting for the commit (see docs/python.md). */
static PyObject *ctx_durable_execute(PyObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *fn, *rest;
    eddy_ctx *t = ctx_task(self, "RunnerContext.durable_execute");
    if (t == NULL)
        return NULL;
    PyObject *given = kwargs != NULL ? PyDict_GetItemString(kwargs, "reconciler") : NULL;
    if (given != NULL && given != Py_None) {
        /* The call would have to wait for its start to be on disk, and a
         * def action cannot wait: the mailbox would stall every key. */
        PyErr_SetString(PyExc_TypeError,
                        "durable_execute(..., reconciler=...): a call with a reconciler runs "
                        "on a worker; use await ctx.durable_execute_async(fn, *args, "
                        "reconciler=...) in an async def action");
        return NULL;
    }
    PyObject *kw = kwargs, *unused; /* reconciler=None: dropped */
    if (take_reconciler(&kw, &unused) != 0)
        return NULL;
    eddy__py_call *c = NULL;
    if (split_fn(args, "durable_execute", &fn, &rest) == 0) {
        c = call_new(self, fn, rest, kw);
        Py_DECREF(rest);
    }
    if (kw != kwargs)
        Py_DECREF(kw); /* c holds it */
    kwargs = c != NULL ? c->kwargs : NULL;
    if (c == NULL ||
        durable_prepare(t, fn, c->args, kwargs, 0, &c->fn_id, &c->dc, &c->result, &c->exc) != 0) {
        Py_XDECREF(c);
        return NULL;
    }
    if (c->result == NULL && c->exc == NULL) {
        /* Not before the results the action may have gone on with are on
         * disk (the task cannot suspend here: the mailbox commits what an
         * earlier durable_execute journaled, and syncs). */
        if (t->rt->store != NULL && eddy__durable_settle(t) != EDDY_OK) {
            Py_DECREF(c);
            PyErr_SetString(PyExc_RuntimeError, "eddy is stopping: durable call canceled");
            return NULL;
        }
        t->in_body = 1; /* the context refuses the body (see ctx_task) */
        PyObject *r = PyObject_Call(fn, c->args, kwargs);
        t->in_body = 0;
        if (r != NULL)
            c->result = r;
        else
            c->exc = eddy__py_fetch_exception();
        if (t->rt->store != NULL) {
            encode_outcome(c);
            /* The action goes on with the result at once: its run's next
             * call waits for this record's commit and sync. */
            if (eddy__durable_record(t, c->fn_id, &c->dc,
                                     c->err_type != NULL ? EDDY_JCALL_ERROR : EDDY_JCALL_OK,
                                     c->payload, c->err_type, c->err_msg) == EDDY_OK)
                eddy__durable_went_on(t);
        }
    }
    PyObject *r = NULL;
    if (c->exc != NULL)
        raise_exception(c->exc);
    else
        r = Py_NewRef(c->result != NULL ? c->result : Py_None);
    Py_DECREF(c);
    return r;
}

/*
 * ctx.sleep(seconds): an awaitable that suspends the action on a loop timer
 * (no worker). Refused in a def action, which runs in one step and cannot
 * suspend: the call would only make an awaitable that nothing awaits.
 * Seconds as asyncio.sleep takes them: 0 or less yields once; the time is
 * rounded up to whole milliseconds (the loop's timers count those).
 */
static PyObject *ctx_sleep(PyObject *self, PyObject *arg)
{
    eddy_ctx *t = ctx_task(self, "RunnerContext.sleep");
    if (t == NULL)
        return NULL;
    eddy__py_task *pt = t->lang;
    if (pt == NULL || pt->coro == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "ctx.sleep() suspends the action, and action '%s' is a def action, which "
                     "runs in one step and cannot suspend: make it an async def action and "
                     "write `await ctx.sleep(seconds)`",
                     t->action->name);
        return NULL;
    }
    if (!PyFloat_Check(arg) && !PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "ctx.sleep(seconds) takes a number of seconds, not '%s'",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    double sec = PyFloat_AsDouble(arg);
    if (sec == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(sec)) {
        PyErr_SetString(PyExc_ValueError, "ctx.sleep(seconds): seconds is NaN");
        return NULL;
    }
    uint64_t ms = 0;
    if (sec > 0)
        ms = sec * 1000.0 >= 1.8e19 ? UINT64_MAX : (uint64_t)ceil(sec * 1000.0);
    eddy__py_call *c = PyObject_GC_New(eddy__py_call, eddy__py.call_type);
    if (c == NULL)
        return NULL;
    memset((char *)c + sizeof(PyObject), 0, sizeof(*c) - sizeof(PyObject));
    c->ctxobj = Py_NewRef(self);
    c->is_sleep = 1;
    c->sleep_ms = ms;
    c->sleep.task = t;
    c->sleep.done = eddy__py_sleep_done;
    eddy__queue_init(&c->unawaited);
    PyObject_GC_Track(c);
    unawaited_add(t, c);
    return (PyObject *)c;
}

/* ---------------------------------------------------------------- gather */

static int gather_traverse(PyObject *self, visitproc visit, void *arg)
{
    eddy__py_gather *g = (eddy__py_gather *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(g->ctxobj);
    Py_VISIT(g->calls);
    return 0;
}

static int gather_clear(PyObject *self)
{
    eddy__py_gather *g = (eddy__py_gather *)self;
    Py_CLEAR(g->ctxobj);
    Py_CLEAR(g->calls);
    return 0;
}

static void gather_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    gather_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PySendResult gather_send(PyObject *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    eddy__py_gather *g = (eddy__py_gather *)self;
    Py_ssize_t n = PyTuple_GET_SIZE(g->calls);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (((eddy__py_call *)PyTuple_GET_ITEM(g->calls, i))->state != EDDY_PY_CALL_DONE) {
            *result = Py_NewRef(self);
            return PYGEN_NEXT;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) /* replays, never given to the driver */
        unawaited_done((eddy__py_call *)PyTuple_GET_ITEM(g->calls, i));
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return PYGEN_ERROR;
    for (Py_ssize_t i = 0; i < n; i++) {
        eddy__py_call *c = (eddy__py_call *)PyTuple_GET_ITEM(g->calls, i);
        if (c->exc != NULL && !g->return_exceptions) {
            Py_DECREF(list);
            raise_exception(c->exc);
            *result = NULL;
            return PYGEN_ERROR;
        }
        PyObject *v = c->exc != NULL ? c->exc : c->result != NULL ? c->result : Py_None;
        PyList_SET_ITEM(list, i, Py_NewRef(v));
    }
    *result = list;
    return PYGEN_RETURN;
}

static PyObject *gather_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<eddy gather of %zd calls>",
                                PyTuple_GET_SIZE(((eddy__py_gather *)self)->calls));
}

static PyObject *ctx_gather(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (ctx_task(self, "RunnerContext.gather") == NULL)
        return NULL;
    int return_exceptions = 0;
    if (kwargs != NULL) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwargs, &pos, &k, &v)) {
            if (PyUnicode_Check(k) &&
                PyUnicode_CompareWithASCIIString(k, "return_exceptions") == 0) {
                if ((return_exceptions = PyObject_IsTrue(v)) < 0)
                    return NULL;
            } else {
                PyErr_Format(PyExc_TypeError, "gather() got an unexpected keyword argument %R", k);
                return NULL;
            }
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        if (Py_IS_TYPE(a, eddy__py.call_type))
            continue;
        PyAsyncMethods *am = Py_TYPE(a)->tp_as_async;
        if ((am == NULL || am->am_await == NULL) &&
            !(PyGen_Check(a) && eddy__py_is_iterable_coroutine(a))) {
            PyObject *r = eddy__py_repr(a);
            if (r != NULL)
                PyErr_Format(PyExc_TypeError,
                             "gather() takes awaitables (coroutines of async def functions "
                             "that await eddy's calls, and what ctx.execute_async(), "
                             "ctx.durable_execute_async(), ctx.gather() and ctx.sleep() "
                             "return), not %U",
                             r);
            Py_XDECREF(r);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!Py_IS_TYPE(PyTuple_GET_ITEM(args, i), eddy__py.call_type)) {
            /* Coroutines (or gathers, or other awaitables) among them: each
             * is stepped as one branch, in rounds (module_py.h). */
            PyObject *hargs[3] = {self, args, return_exceptions ? Py_True : Py_False};
            return call_helper("_gather_branches", hargs, 3);
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(args, i);
        eddy__py_call *c = (eddy__py_call *)a;
        if (c->ctxobj != self) {
            PyErr_SetString(PyExc_RuntimeError,
                            "gather(): an awaitable belongs to another action execution");
            return NULL;
        }
        if (c->state == EDDY_PY_CALL_RUNNING) {
            PyErr_SetString(PyExc_RuntimeError, "gather(): a call is already being awaited");
            return NULL;
        }
        for (Py_ssize_t j = 0; j < i; j++) {
            if (PyTuple_GET_ITEM(args, j) == a) {
                PyErr_SetString(PyExc_RuntimeError, "gather(): the same call is given twice");
                return NULL;
            }
        }
    }
    eddy__py_gather *g = PyObject_GC_New(eddy__py_gather, eddy__py.gather_type);
    if (g == NULL)
        return NULL;
    g->ctxobj = Py_NewRef(self);
    g->calls = Py_NewRef(args);
    g->return_exceptions = return_exceptions;
    g->handed = NULL;
    PyObject_GC_Track(g);
    return (PyObject *)g;
}

/* ---------------------------------------------------------------- awaiting */

/*
 * What `await` steps for a call or a gather. Its __await__() makes a new
 * iterator of this type (as a coroutine's __await__() makes CPython's
 * coroutine_wrapper), which yields the call or the gather itself to eddy's
 * driver (agent.c submit: through any chain of `yield from`, the driver gets
 * what the innermost iterator yields) until it is done, then returns its
 * result or raises its exception. So an awaitable whose __await__ is a
 * plain generator delegating with `yield from aw.__await__()` steps it as
 * `await aw` does. The call and the gather are not iterators themselves
 * (see awaitable_iter).
 */
typedef struct awaiter {
    PyObject ob_base;
    PyObject *aw; /* the call or the gather */
    int yielded;  /* its last step gave aw to whoever steps it */
    int ended;    /* by throw() or close(): not to be stepped again */
} awaiter;

static int is_call(PyObject *aw)
{
    return Py_IS_TYPE(aw, eddy__py.call_type);
}

/* What the messages call aw, and how to await it. */
static const char *awaitable_name(PyObject *aw)
{
    return !is_call(aw)                      ? "ctx.gather()"
           : ((eddy__py_call *)aw)->is_sleep ? "ctx.sleep()"
                                             : "a call of the context";
}

static const char *awaitable_usage(PyObject *aw)
{
    return !is_call(aw)                      ? "await ctx.gather(...)"
           : ((eddy__py_call *)aw)->is_sleep ? "await ctx.sleep(seconds)"
                                             : "await ctx.execute_async(fn, ...)";
}

/* Whether a call of aw is not started: once the driver has been given aw,
 * it has started each (or thrown into the action why not). */
static int not_started(PyObject *aw)
{
    if (is_call(aw))
        return ((eddy__py_call *)aw)->state == EDDY_PY_CALL_NEW;
    PyObject *calls = ((eddy__py_gather *)aw)->calls;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(calls); i++)
        if (((eddy__py_call *)PyTuple_GET_ITEM(calls, i))->state == EDDY_PY_CALL_NEW)
            return 1;
    return 0;
}

/* Whether aw is done: its call, or every call of the gather, has its result
 * (a replay's, from the journal, or one the driver got). */
static int all_done(PyObject *aw)
{
    if (is_call(aw))
        return ((eddy__py_call *)aw)->state == EDDY_PY_CALL_DONE;
    PyObject *calls = ((eddy__py_gather *)aw)->calls;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(calls); i++)
        if (((eddy__py_call *)PyTuple_GET_ITEM(calls, i))->state != EDDY_PY_CALL_DONE)
            return 0;
    return 1;
}

/* Whether aw is awaited by a coroutine that ctx.gather() is stepping. */
static int in_branch(PyObject *aw)
{
    PyObject *ctxobj =
        is_call(aw) ? ((eddy__py_call *)aw)->ctxobj : ((eddy__py_gather *)aw)->ctxobj;
    return ctxobj != NULL && ((ctx_obj *)ctxobj)->branch_depth > 0;
}

/* Where aw keeps the awaiter whose last step yielded it (borrowed). */
static PyObject **handed_slot(PyObject *aw)
{
    return is_call(aw) ? &((eddy__py_call *)aw)->handed : &((eddy__py_gather *)aw)->handed;
}

void eddy__py_not_eddy(PyObject *y)
{
    PyObject *r = eddy__py_repr(y);
    if (r != NULL)
        PyErr_Format(PyExc_TypeError,
                     "eddy actions can await only ctx.execute_async(), "
                     "ctx.durable_execute_async(), ctx.gather() and ctx.sleep(); the action "
                     "awaited something that yielded %U (asyncio and other event loops are "
                     "not supported: ctx.sleep() takes the place of asyncio.sleep())",
                     r);
    Py_XDECREF(r);
}

int eddy__py_take_handed(PyObject *aw)
{
    PyObject **handed = handed_slot(aw);
    if (*handed != NULL) {
        *handed = NULL;
        return 1;
    }
    /* Yielded by something else than its awaiter (`yield self.call` in an
     * __await__ method, say): run, its result would reach no one (the
     * yield gives None), and a replay, whose call is done at once, would
     * differ. Refused the same whether it is new, running or done. */
    PyErr_Format(PyExc_TypeError,
                 "%s was yielded to eddy directly, not by the iterator of its __await__(), "
                 "which alone gives the action its result: eddy does not run it; write `%s` in "
                 "an async def action, or `yield from aw.__await__()` in an __await__ method",
                 awaitable_name(aw), awaitable_usage(aw));
    return 0;
}

static PyObject *awaiter_new(PyObject *aw)
{
    awaiter *w = PyObject_GC_New(awaiter, eddy__py.await_type);
    if (w == NULL)
        return NULL;
    w->aw = Py_NewRef(aw);
    w->yielded = 0;
    w->ended = 0;
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

static PySendResult awaiter_send(PyObject *self, PyObject *arg, PyObject **result)
{
    awaiter *w = (awaiter *)self;
    *result = NULL;
    if (w->aw == NULL) { /* cleared by the garbage collector */
        PyErr_SetString(PyExc_RuntimeError, "an eddy awaiter was stepped after it was cleared");
        return PYGEN_ERROR;
    }
    if (w->ended) {
        /* As a coroutine's iterator once thrown into or closed. */
        PyErr_Format(PyExc_RuntimeError,
                     "the iterator of the __await__() of %s was stepped after its throw() or "
                     "close() ended it; it cannot be reused",
                     awaitable_name(w->aw));
        return PYGEN_ERROR;
    }
    if (*handed_slot(w->aw) == self)
        *handed_slot(w->aw) = NULL; /* stepped again: what it yielded is no longer its */
    if (w->yielded && not_started(w->aw)) {
        /* What it yielded went elsewhere than to the driver, which never
         * started it: stepped on, it would yield it again, for ever
         * (list(call.__await__()) took it until memory ran out). */
        PyErr_Format(PyExc_TypeError,
                     "%s is awaited, not iterated: the iterator of its __await__() gives it to "
                     "eddy, which runs it, and it went to something else (list(), a for loop, "
                     "next()); write `%s` in an async def action, or `yield from "
                     "aw.__await__()` in an __await__ method",
                     awaitable_name(w->aw), awaitable_usage(w->aw));
        return PYGEN_ERROR;
    }
    PyObject **handed = handed_slot(w->aw);
    if (!w->yielded && in_branch(w->aw) && all_done(w->aw)) {
        /* A coroutine of ctx.gather() awaits what is done already (a
         * replay's result): it gives it to the gather all the same, as in
         * the run that made the call, so that the gather steps its
         * coroutines in the same rounds and their calls take the same
         * journal positions (see _Branches in module_py.h). */
        *result = Py_NewRef(w->aw);
        w->yielded = 1;
        *handed = self;
        return PYGEN_NEXT;
    }
    PySendResult r =
        is_call(w->aw) ? call_send(w->aw, arg, result) : gather_send(w->aw, arg, result);
    w->yielded = r == PYGEN_NEXT;
    if (r == PYGEN_NEXT)
        *handed = self; /* for the driver: the result comes back through here */
    else if (*handed == self)
        *handed = NULL;
    return r;
}

/* The result of a step as tp_iternext and send() give it: the value
 * yielded, or NULL with StopIteration(value) at the end, or an error. */
static PyObject *step_result(PySendResult s, PyObject *r)
{
    if (s == PYGEN_NEXT)
        return r;
    if (s == PYGEN_RETURN) {
        /* The exception made here: PyErr_SetObject would take a tuple value
         * for the exception's arguments. */
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r);
        Py_DECREF(r);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

/* For await under a trace function: CPython then steps the awaiter with
 * tp_iternext. */
static PyObject *awaiter_iternext(PyObject *self)
{
    PyObject *r = NULL;
    PySendResult s = awaiter_send(self, Py_None, &r);
    return step_result(s, r);
}

/* send(value), for an __await__ that delegates by hand (it.send(v)); the
 * value is not used (the driver sends None). */
static PyObject *awaiter_send_method(PyObject *self, PyObject *value)
{
    PyObject *r = NULL;
    PySendResult s = awaiter_send(self, value, &r);
    return step_result(s, r);
}

/*
 * throw() and close() end the awaiter, as they end a coroutine's iterator,
 * and leave its call as it is, as the runtime does for an action that stops
 * awaiting: one not started never runs (and counts as never awaited), one
 * started goes on, and its result (journaled when durable) is dropped.
 */
static void awaiter_end(awaiter *w)
{
    w->ended = 1;
    w->yielded = 0;
    if (w->aw != NULL && *handed_slot(w->aw) == (PyObject *)w)
        *handed_slot(w->aw) = NULL; /* what it yielded is no longer its */
}

/* throw(exc), or throw(type[, value[, traceback]]): raises the exception,
 * as a generator does that does not catch it (the driver throws eddy's
 * refusals into the action through a delegator's throw()). */
static PyObject *awaiter_throw(PyObject *self, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    if (tb == Py_None) {
        tb = NULL;
    } else if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return NULL;
    }
    if (PyExceptionClass_Check(typ)) {
        Py_INCREF(typ);
        Py_XINCREF(val);
        Py_XINCREF(tb);
        PyErr_NormalizeException(&typ, &val, &tb); /* or what making it raised */
    } else if (PyExceptionInstance_Check(typ)) {
        if (val != NULL && val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        val = Py_NewRef(typ);
        typ = Py_NewRef(PyExceptionInstance_Class(val));
        tb = tb != NULL ? Py_NewRef(tb) : PyException_GetTraceback(val);
    } else {
        PyErr_Format(PyExc_TypeError,
                     "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    awaiter_end((awaiter *)self);
    PyErr_Restore(typ, val, tb);
    return NULL;
}

static PyObject *awaiter_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    awaiter_end((awaiter *)self);
    Py_RETURN_NONE;
}

static int awaiter_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((awaiter *)self)->aw);
    return 0;
}

static int awaiter_clear(PyObject *self)
{
    awaiter *w = (awaiter *)self;
    if (w->aw != NULL && *handed_slot(w->aw) == self)
        *handed_slot(w->aw) = NULL;
    Py_CLEAR(w->aw);
    return 0;
}

static void awaiter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    awaiter_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *awaiter_repr(PyObject *self)
{
    awaiter *w = (awaiter *)self;
    return PyUnicode_FromFormat("<eddy awaiter of %R>", w->aw != NULL ? w->aw : Py_None);
}

/* __await__() of a call or a gather. */
static PyObject *awaitable_await(PyObject *self)
{
    return awaiter_new(self);
}

/*
 * iter() of a call or a gather. `yield from call` in a generator-based
 * coroutine (@types.coroutine) is how it awaits, and it runs in such a
 * coroutine's frame: it steps an awaiter, as await does. Anywhere else it is
 * a mistake that never ended: list(ctx.execute_async(f)) took the call
 * itself, again and again, until memory ran out. (await goes through
 * __await__, not here; and so does an __await__ method that delegates with
 * `yield from aw.__await__()`.)
 */
static PyObject *awaitable_iter(PyObject *self)
{
    PyFrameObject *frame = PyEval_GetFrame();
    PyCodeObject *code = frame != NULL ? PyFrame_GetCode(frame) : NULL;
    int in_coroutine = code != NULL && (code->co_flags & CO_ITERABLE_COROUTINE) != 0;
    Py_XDECREF(code);
    if (in_coroutine)
        return awaiter_new(self);
    PyErr_Format(PyExc_TypeError,
                 "%s is awaited, not iterated: write `%s` in an async def action, or `yield "
                 "from aw.__await__()` in an __await__ method",
                 awaitable_name(self), awaitable_usage(self));
    return NULL;
}

/*
 * What ctx.gather() of coroutines (_Branches in module_py.h) steps them with.
 *
 * ctx._branch(fn, arg, context): context.run(fn, arg), fn being a step of
 * one of its coroutines (the send or throw of the iterator of its
 * __await__()), with the context's branch depth raised meanwhile: what the
 * coroutine then awaits gives itself to the gather even when it is done (see
 * awaiter_send).
 */
static PyObject *ctx_branch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_branch() takes fn, arg and context");
        return NULL;
    }
    if (ctx_task(self, "RunnerContext.gather") == NULL)
        return NULL;
    ctx_obj *c = (ctx_obj *)self;
    PyObject *run = PyObject_GetAttrString(args[2], "run");
    if (run == NULL)
        return NULL;
    c->branch_depth++;
    PyObject *r = PyObject_CallFunctionObjArgs(run, args[0], args[1], NULL);
    c->branch_depth--;
    Py_DECREF(run);
    return r;
}

/* ctx._dropped(): whether the action execution ended unfinished (eddy
 * dropped it: stopping, or its run failed), so that what it made and never
 * awaited is not warned about. */
static PyObject *ctx_dropped(PyObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(((ctx_obj *)self)->dropped);
}

/* ctx._in_branch(): whether a gather is stepping one of its coroutines now
 * (a gather inside it then gives its rounds to that one). */
static PyObject *ctx_in_branch(PyObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(((ctx_obj *)self)->branch_depth > 0);
}

/* ctx._round_calls(y): y, what one of a gather's coroutines yielded, checked
 * as the driver checks what an action yields (agent.c submit), and the calls
 * of it that have not started, as a list (empty when y is done: a replay's
 * result). */
static PyObject *ctx_round_calls(PyObject *self, PyObject *y)
{
    if (!is_call(y) && !Py_IS_TYPE(y, eddy__py.gather_type)) {
        eddy__py_not_eddy(y);
        return NULL;
    }
    if (!eddy__py_take_handed(y))
        return NULL;
    PyObject *const *v = &y;
    Py_ssize_t n = 1;
    if (!is_call(y)) {
        PyObject *calls = ((eddy__py_gather *)y)->calls;
        v = &PyTuple_GET_ITEM(calls, 0);
        n = PyTuple_GET_SIZE(calls);
    }
    PyObject *list = PyList_New(0);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        eddy__py_call *c = (eddy__py_call *)v[i];
        if (c->ctxobj != self) {
            PyErr_SetString(PyExc_RuntimeError,
                            "an awaitable of another action execution was awaited");
            Py_CLEAR(list);
        } else if (c->state == EDDY_PY_CALL_RUNNING) {
            PyErr_SetString(PyExc_RuntimeError, "an eddy call was awaited while already running");
            Py_CLEAR(list);
        } else if (c->state == EDDY_PY_CALL_NEW && PyList_Append(list, v[i]) != 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

/* ---------------------------------------------------------------- MemoryObject */

typedef struct mem_obj {
    PyObject ob_base;
    PyObject *ctxobj;
    int sensory;
    char *prefix; /* "" for the root */
} mem_obj;

static PyObject *mem_new(PyObject *ctxobj, int sensory, const char *prefix)
{
    mem_obj *m = PyObject_New(mem_obj, eddy__py.mem_type);
    if (m == NULL)
        return NULL;
    m->ctxobj = Py_NewRef(ctxobj);
    m->sensory = sensory;
    if ((m->prefix = strdup(prefix)) == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    return (PyObject *)m;
}

static void mem_dealloc(PyObject *self)
{
    mem_obj *m = (mem_obj *)self;
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(m->ctxobj);
    free(m->prefix);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* The memory handle and the full path of path (a str, or NULL for the
 * object itself); the path is PyMem-allocated. NULL with an exception. */
static eddy_memory *mem_at(PyObject *self, PyObject *path, const char *what, char **full)
{
    mem_obj *m = (mem_obj *)self;
    *full = NULL;
    eddy_ctx *t = ctx_task(m->ctxobj, what);
    if (t == NULL)
        return NULL;
    const char *p = "";
    Py_ssize_t plen = 0;
    if (path != NULL) {
        if (!PyUnicode_Check(path)) {
            PyErr_Format(PyExc_TypeError, "%s: a memory path is a str, not '%s'", what,
                         Py_TYPE(path)->tp_name);
            return NULL;
        }
        if ((p = PyUnicode_AsUTF8AndSize(path, &plen)) == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                char why[512];
                PyErr_Clear();
                eddy__py_surrogate_why(path, why, sizeof(why));
                PyErr_Format(PyExc_ValueError, "%s: memory path %s", what, why);
            }
            return NULL;
        }
    }
    size_t n = strlen(m->prefix);
    char *f = PyMem_Malloc(n + (size_t)plen + 2);
    if (f == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(f, m->prefix, n);
    if (n > 0 && plen > 0)
        f[n++] = '.';
    memcpy(f + n, p, (size_t)plen + 1);
    if (!eddy__mem_path_valid(f, path == NULL)) {
        PyErr_Format(PyExc_ValueError, "%s: bad memory path '%s' (dotted names, no empty segment)",
                     what, f);
        PyMem_Free(f);
        return NULL;
    }
    *full = f;
    return m->sensory ? eddy_ctx_sensory_memory(t) : eddy_ctx_short_term_memory(t);
}

static PyObject *mem_value(PyObject *self, json_t *v, const char *full)
{
    if (v == NULL)
        Py_RETURN_NONE;
    PyObject *r = json_is_object(v)
                      ? mem_new(((mem_obj *)self)->ctxobj, ((mem_obj *)self)->sensory, full)
                      : eddy__py_from_json(v);
    json_decref(v);
    return r;
}

static PyObject *mem_get(PyObject *self, PyObject *path)
{
    char *full;
    eddy_memory *mem = mem_at(self, path, "MemoryObject.get", &full);
    if (mem == NULL)
        return NULL;
    PyObject *r = mem_value(self, eddy_memory_get(mem, full), full);
    PyMem_Free(full);
    return r;
}

/* ValueError: path's first at bytes name a value on which path would need
 * an object (eddy__memview_conflict). */
static void below_value(const char *path, size_t at, const char *what)
{
    PyObject *parent = PyUnicode_FromStringAndSize(path, (Py_ssize_t)at);
    if (parent != NULL)
        PyErr_Format(PyExc_ValueError,
                     "cannot %s '%s': '%U' holds a value, not a dict, so nothing stands below it "
                     "(set a dict there first)",
                     what, path, parent);
    Py_XDECREF(parent);
}

static PyObject *mem_set(PyObject *self, PyObject *args)
{
    PyObject *path, *value;
    if (!PyArg_ParseTuple(args, "OO:set", &path, &value))
        return NULL;
    char *full;
    eddy_memory *mem = mem_at(self, path, "MemoryObject.set", &full);
    if (mem == NULL)
        return NULL;
    json_t *j = eddy__py_to_json_named(value, "memory path '%s'", full, NULL);
    int rc = j != NULL ? eddy_memory_set(mem, full, j) : EDDY_OK;
    size_t at = rc == EDDY_EPATH ? eddy__memview_conflict(&mem->view, full) : 0;
    if (rc == EDDY_EPATH && at > 0)
        below_value(full, at, "set memory path");
    else if (rc == EDDY_EPATH)
        /* Flink Agents keeps a dict as one value, which any value then
         * replaces; eddy keeps it as nested objects. */
        PyErr_Format(PyExc_ValueError,
                     "cannot set memory path '%s' to a value that is not a dict: an object "
                     "stands there (a dict set there is kept as nested objects, and only a "
                     "dict replaces them: {} empties it; or keep the value under a field of its "
                     "own, '%s.value')",
                     full, full);
    else if (rc == EDDY_ELIMIT)
        PyErr_Format(PyExc_ValueError,
                     "cannot set memory path '%s': the value, in the dicts of the path, would "
                     "be " EDDY__PY_TOO_DEEP,
                     full);
    else if (rc != EDDY_OK)
        PyErr_Format(PyExc_RuntimeError, "cannot set memory path '%s': %s", full,
                     eddy_strerror(rc));
    PyMem_Free(full);
    if (j == NULL || rc != EDDY_OK)
        return NULL;
    Py_RETURN_NONE;
}

/*
 * new_object(path, overwrite=False), as Flink Agents' newObject: an object
 * already at path is kept (its fields too, overwrite or not); a value there
 * is refused, or with overwrite replaced by an empty object. A value on a
 * parent is refused either way.
 */
static PyObject *mem_new_object(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "overwrite", NULL};
    PyObject *path;
    int overwrite = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|p:new_object", kwlist, &path, &overwrite))
        return NULL;
    char *full;
    eddy_memory *mem = mem_at(self, path, "MemoryObject.new_object", &full);
    if (mem == NULL)
        return NULL;
    int rc = EDDY_OK;
    size_t at = 0;
    if (overwrite) {
        json_t *v = eddy_memory_get(mem, full);
        if (v != NULL && !json_is_object(v)) {
            json_t *empty = json_object();
            rc = empty != NULL ? eddy_memory_set(mem, full, empty) : EDDY_ENOMEM;
        }
        json_decref(v);
    }
    if (rc == EDDY_OK)
        rc = eddy_memory_new_object(mem, full);
    PyObject *r = NULL;
    if (rc == EDDY_OK)
        r = mem_new(((mem_obj *)self)->ctxobj, ((mem_obj *)self)->sensory, full);
    else if (rc == EDDY_EPATH && (at = eddy__memview_conflict(&mem->view, full)) > 0)
        below_value(full, at, "make an object at memory path");
    else if (rc == EDDY_EPATH)
        PyErr_Format(PyExc_ValueError,
                     "cannot make an object at memory path '%s': a value stands there "
                     "(new_object(path, overwrite=True) replaces it)",
                     full);
    else
        PyErr_Format(PyExc_RuntimeError, "new_object('%s'): %s", full, eddy_strerror(rc));
    PyMem_Free(full);
    return r;
}

static PyObject *mem_is_exist(PyObject *self, PyObject *path)
{
    char *full;
    eddy_memory *mem = mem_at(self, path, "MemoryObject.is_exist", &full);
    if (mem == NULL)
        return NULL;
    int rc = eddy_memory_exists(mem, full);
    PyMem_Free(full);
    if (rc < 0) {
        PyErr_SetString(PyExc_RuntimeError, eddy_strerror(rc));
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *mem_get_field_names(PyObject *self, PyObject *unused)
{
    (void)unused;
    char *full;
    eddy_memory *mem = mem_at(self, NULL, "MemoryObject.get_field_names", &full);
    if (mem == NULL)
        return NULL;
    json_t *names = eddy_memory_field_names(mem, full);
    PyMem_Free(full);
    if (names == NULL)
        return PyList_New(0); /* the object is gone (or was never made) */
    PyObject *r = eddy__py_from_json(names);
    json_decref(names);
    return r;
}

/*
 * The fields of the object, each looked up by its name in the object's value:
 * a stored dict may have keys with a dot, or an empty one, which a dotted
 * path cannot reach ("a.b" would be field b of field a, "" the object
 * itself). A nested object comes as a MemoryObject when its path reaches it,
 * else as a dict (a copy).
 */
static PyObject *mem_get_fields(PyObject *self, PyObject *unused)
{
    (void)unused;
    mem_obj *m = (mem_obj *)self;
    char *full;
    eddy_memory *mem = mem_at(self, NULL, "MemoryObject.get_fields", &full);
    if (mem == NULL)
        return NULL;
    json_t *obj = eddy_memory_get(mem, full);
    json_t *names = json_is_object(obj) ? eddy_memory_field_names(mem, full) : NULL;
    PyObject *d = PyDict_New();
    size_t n = strlen(full), i;
    json_t *name;
    json_array_foreach(names, i, name)
    {
        if (d == NULL)
            break;
        const char *k = json_string_value(name);
        size_t klen = json_string_length(name);
        json_t *v = json_object_getn(obj, k, klen);
        PyObject *key = PyUnicode_FromStringAndSize(k, (Py_ssize_t)klen);
        PyObject *pv = NULL;
        if (key != NULL && json_is_object(v) && klen > 0 && memchr(k, '.', klen) == NULL &&
            memchr(k, '\0', klen) == NULL) {
            char *path = PyMem_Malloc(n + klen + 2);
            if (path != NULL) {
                memcpy(path, full, n);
                size_t at = n > 0 ? n + 1 : 0;
                if (n > 0)
                    path[n] = '.';
                memcpy(path + at, k, klen + 1);
                pv = mem_new(m->ctxobj, m->sensory, path);
                PyMem_Free(path);
            } else {
                PyErr_NoMemory();
            }
        } else if (key != NULL) {
            pv = eddy__py_from_json(v);
        }
        if (pv == NULL || PyDict_SetItem(d, key, pv) != 0)
            Py_CLEAR(d);
        Py_XDECREF(key);
        Py_XDECREF(pv);
    }
    if (d != NULL && json_is_object(obj) && names == NULL) {
        Py_CLEAR(d);
        PyErr_NoMemory();
    }
    json_decref(names);
    json_decref(obj);
    PyMem_Free(full);
    return d;
}

static PyObject *mem_repr(PyObject *self)
{
    mem_obj *m = (mem_obj *)self;
    return PyUnicode_FromFormat("<eddy MemoryObject %s%s%s>", m->sensory ? "sensory" : "short-term",
                                m->prefix[0] ? " at " : "", m->prefix);
}

/* ---------------------------------------------------------------- module functions */

static PyObject *mod_to_json_text(PyObject *mod, PyObject *v)
{
    (void)mod;
    json_t *j = eddy__py_to_json(v, "value");
    if (j == NULL)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (s == NULL)
        return PyErr_NoMemory();
    PyObject *r = PyUnicode_FromString(s);
    free(s);
    return r;
}

static PyObject *mod_from_json_text(PyObject *mod, PyObject *v)
{
    (void)mod;
    const char *s = PyUnicode_AsUTF8(v);
    if (s == NULL)
        return NULL;
    json_error_t e;
    unsigned failed = eddy__jalloc_failures;
    json_t *j = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (eddy__jalloc_failures != failed) {
        /* Not a parse error, and maybe not the journal's value (jansson
         * 2.14 drops a character it cannot store): see jalloc.h. */
        json_decref(j);
        return PyErr_NoMemory();
    }
    if (j == NULL) {
        PyErr_Format(PyExc_ValueError, "not JSON: %s", e.text);
        return NULL;
    }
    PyObject *r = eddy__py_from_json(j);
    json_decref(j);
    return r;
}

/* ---------------------------------------------------------------- types and module */

static PyMethodDef ctx_methods[] = {
    {"send_event", ctx_send_event, METH_O,
     "send_event(event): send an event; released when the action finishes."},
    {"execute_async", (PyCFunction)(void (*)(void))ctx_execute_async, METH_VARARGS | METH_KEYWORDS,
     "await execute_async(fn, *args, **kwargs): run fn on the worker pool (not journaled)."},
    {"durable_execute_async", (PyCFunction)(void (*)(void))ctx_durable_execute_async,
     METH_VARARGS | METH_KEYWORDS,
     "await durable_execute_async(fn, *args, **kwargs): run fn on the worker pool once; "
     "journal its result or exception."},
    {"durable_execute", (PyCFunction)(void (*)(void))ctx_durable_execute,
     METH_VARARGS | METH_KEYWORDS,
     "durable_execute(fn, *args, **kwargs): run fn here once; journal its result or "
     "exception."},
    {"sleep", ctx_sleep, METH_O,
     "await sleep(seconds): suspend the action on a loop timer (no worker); not journaled."},
    {"gather", (PyCFunction)(void (*)(void))ctx_gather, METH_VARARGS | METH_KEYWORDS,
     "await gather(aw1, aw2, ..., return_exceptions=False): run calls and coroutines at once; "
     "results in order."},
    {"_branch", (PyCFunction)(void (*)(void))ctx_branch, METH_FASTCALL, NULL},
    {"_in_branch", ctx_in_branch, METH_NOARGS, NULL},
    {"_dropped", ctx_dropped, METH_NOARGS, NULL},
    {"_round_calls", ctx_round_calls, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ctx_getset[] = {
    {"key", ctx_key, NULL, "the key of the running action execution", NULL},
    {"short_term_memory", ctx_stm, NULL, "the key's short-term memory (kept across runs)", NULL},
    {"sensory_memory", ctx_sensory, NULL, "the key's sensory memory (cleared when the run ends)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot ctx_slots[] = {
    {Py_tp_dealloc, ctx_dealloc},
    {Py_tp_methods, ctx_methods},
    {Py_tp_getset, ctx_getset},
    {Py_tp_doc, "The context of an action execution (handed to the action)."},
    {0, NULL},
};

static PyType_Spec ctx_spec = {"eddy.RunnerContext", sizeof(ctx_obj), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, ctx_slots};

static PyMethodDef mem_methods[] = {
    {"get", mem_get, METH_O, "get(path): the value at path (objects as MemoryObject), or None."},
    {"set", mem_set, METH_VARARGS, "set(path, value): set a JSON value; parents are created."},
    {"new_object", (PyCFunction)(void (*)(void))mem_new_object, METH_VARARGS | METH_KEYWORDS,
     "new_object(path, overwrite=False): an object at path (one already there is kept; a value "
     "there is replaced with overwrite, else refused)."},
    {"is_exist", mem_is_exist, METH_O, "is_exist(path): whether path exists."},
    {"get_field_names", mem_get_field_names, METH_NOARGS, "the field names of this object."},
    {"get_fields", mem_get_fields, METH_NOARGS, "the fields of this object, as a dict."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot mem_slots[] = {
    {Py_tp_dealloc, mem_dealloc},
    {Py_tp_methods, mem_methods},
    {Py_tp_repr, mem_repr},
    {Py_tp_doc, "An object in a key's memory, addressed by dotted paths."},
    {0, NULL},
};

static PyType_Spec mem_spec = {"eddy.MemoryObject", sizeof(mem_obj), 0,
                               Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, mem_slots};

static PyType_Slot call_slots[] = {
    {Py_tp_dealloc, call_dealloc},
    {Py_tp_traverse, call_traverse},
    {Py_tp_clear, call_clear},
    {Py_tp_repr, call_repr},
    {Py_tp_iter, awaitable_iter},
    {Py_am_await, awaitable_await},
    {0, NULL},
};

static PyType_Spec call_spec = {
    "eddy.Call", sizeof(eddy__py_call), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION, call_slots};

static PyType_Slot gather_slots[] = {
    {Py_tp_dealloc, gather_dealloc},
    {Py_tp_traverse, gather_traverse},
    {Py_tp_clear, gather_clear},
    {Py_tp_repr, gather_repr},
    {Py_tp_iter, awaitable_iter},
    {Py_am_await, awaitable_await},
    {0, NULL},
};

static PyType_Spec gather_spec = {
    "eddy.Gather", sizeof(eddy__py_gather), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION, gather_slots};

static PyMethodDef awaiter_methods[] = {
    {"send", awaiter_send_method, METH_O,
     "send(value): step the awaiter (the value is not used), as a generator's send."},
    {"throw", awaiter_throw, METH_VARARGS,
     "throw(exc): raise exc here, as a generator's throw(); ends the awaiter (its call is left "
     "as it is)."},
    {"close", awaiter_close, METH_NOARGS,
     "close(): end the awaiter, as a generator's close() (its call is left as it is)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot awaiter_slots[] = {
    {Py_tp_dealloc, awaiter_dealloc},
    {Py_tp_traverse, awaiter_traverse},
    {Py_tp_clear, awaiter_clear},
    {Py_tp_repr, awaiter_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, awaiter_iternext},
    {Py_tp_methods, awaiter_methods},
    {Py_am_send, awaiter_send},
    {Py_tp_doc, "What await steps for an eddy.Call or an eddy.Gather (their __await__())."},
    {0, NULL},
};

/* Not in the module's namespace: made only by __await__(). */
static PyType_Spec awaiter_spec = {
    "eddy.Awaiter", sizeof(awaiter), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION, awaiter_slots};

/* eddy._warn(text): a warning of the module's Python half, said as eddy's
 * own are (eddy_set_log_hook). */
static PyObject *mod_warn(PyObject *self, PyObject *text)
{
    (void)self;
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "eddy._warn takes a str");
        return NULL;
    }
    /* UTF-8 text wherever it goes: a lone surrogate (a name made of a
     * file name's bytes) as a backslash escape. */
    PyObject *b = PyUnicode_AsEncodedString(text, "utf-8", "backslashreplace");
    if (b == NULL)
        return NULL;
    eddy__log(EDDY_LOG_WARNING, "%s", PyBytes_AS_STRING(b));
    Py_DECREF(b);
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"_warn", mod_warn, METH_O, NULL},
    {"_to_json_text", mod_to_json_text, METH_O, NULL},
    {"_from_json_text", mod_from_json_text, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT,
    "eddy",
    "eddy: event-driven agents over keyed streams (built into the eddy runtime).",
    -1,
    mod_methods,
    NULL,
    NULL,
    NULL,
    NULL};

static int add_type(PyObject *m, PyType_Spec *spec, PyTypeObject **out)
{
    PyObject *t = PyType_FromSpec(spec);
    if (t == NULL)
        return -1;
    const char *dot = strrchr(spec->name, '.');
    if (PyModule_AddObjectRef(m, dot + 1, t) != 0) {
        Py_DECREF(t);
        return -1;
    }
    *out = (PyTypeObject *)t; /* the reference is released at finalisation */
    return 0;
}

PyObject *eddy__py_module_init(void)
{
    PyObject *m = PyModule_Create(&mod_def);
    if (m == NULL)
        return NULL;
    memset(&eddy__py, 0, sizeof(eddy__py));
    if (add_type(m, &ctx_spec, &eddy__py.ctx_type) != 0 ||
        add_type(m, &mem_spec, &eddy__py.mem_type) != 0 ||
        add_type(m, &call_spec, &eddy__py.call_type) != 0 ||
        add_type(m, &gather_spec, &eddy__py.gather_type) != 0 ||
        (eddy__py.await_type = (PyTypeObject *)PyType_FromSpec(&awaiter_spec)) == NULL)
        goto fail;
    PyObject *d = PyModule_GetDict(m);
    if (PyDict_SetItemString(d, "__builtins__", PyEval_GetBuiltins()) != 0)
        goto fail;
    /* Named "<eddy>" so that a load error's traceback can leave out eddy's own
     * frames (_format_load_exception). */
    PyObject *code = Py_CompileString(eddy_module_py, "<eddy>", Py_file_input);
    if (code == NULL)
        goto fail;
    PyObject *r = PyEval_EvalCode(code, d, d);
    Py_DECREF(code);
    if (r == NULL)
        goto fail;
    Py_DECREF(r);
    if ((eddy__py.s_eddy_type = PyUnicode_InternFromString("_eddy_type")) == NULL)
        goto fail;
    eddy__py.module = Py_NewRef(m); /* released at finalisation */
    eddy__py.helpers = d;
    return m;
fail:
    Py_XDECREF(eddy__py.ctx_type);
    Py_XDECREF(eddy__py.mem_type);
    Py_XDECREF(eddy__py.call_type);
    Py_XDECREF(eddy__py.gather_type);
    Py_XDECREF(eddy__py.await_type);
    Py_XDECREF(eddy__py.s_eddy_type);
    memset(&eddy__py, 0, sizeof(eddy__py));
    Py_DECREF(m);
    return NULL;
}
