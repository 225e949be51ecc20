/* Python values <-> JSON values (jansson). The GIL is held throughout. */
#include <math.h>
#include <string.h>

#include "py/py.h"

/* Deeper than this is refused, as eddy refuses it from C: a value nesting
 * more than EDDY_VALUE_MAX_DEPTH levels of lists and dicts (or a cycle), a
 * list or dict inside MAX_DEPTH others, whatever it holds. The
 * conversion recurses, on the mailbox thread's stack (coroutines are
 * stepped there) or a worker's: ~200 bytes a level. Where eddy wraps the
 * value (an attribute in its event, memory under its path), the whole is
 * checked again, so a value at the limit may still be refused there. */
#define MAX_DEPTH EDDY_VALUE_MAX_DEPTH

PyObject *eddy__py_from_json(const json_t *j)
{
    if (j == NULL)
        Py_RETURN_NONE;
    switch (json_typeof(j)) {
    case JSON_NULL:
        Py_RETURN_NONE;
    case JSON_TRUE:
        Py_RETURN_TRUE;
    case JSON_FALSE:
        Py_RETURN_FALSE;
    case JSON_INTEGER:
        return PyLong_FromLongLong(json_integer_value(j));
    case JSON_REAL:
        return PyFloat_FromDouble(json_real_value(j));
    case JSON_STRING:
        return PyUnicode_FromStringAndSize(json_string_value(j), (Py_ssize_t)json_string_length(j));
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        PyObject *list = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; list != NULL && i < n; i++) {
            PyObject *v = eddy__py_from_json(json_array_get(j, i));
            if (v == NULL) {
                Py_CLEAR(list);
                break;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)i, v);
        }
        return list;
    }
    case JSON_OBJECT: {
        PyObject *d = PyDict_New();
        const char *k;
        size_t klen;
        json_t *v;
        void *tmp;
        if (d == NULL)
            return NULL;
        json_object_keylen_foreach_safe((json_t *)j, tmp, k, klen, v)
        {
            PyObject *pk = PyUnicode_FromStringAndSize(k, (Py_ssize_t)klen);
            PyObject *pv = pk != NULL ? eddy__py_from_json(v) : NULL;
            int rc = pv != NULL ? PyDict_SetItem(d, pk, pv) : -1;
            Py_XDECREF(pk);
            Py_XDECREF(pv);
            if (rc != 0) {
                Py_DECREF(d);
                return NULL;
            }
        }
        return d;
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown JSON type");
    return NULL;
}

/* The place inside the converted value, recorded on the way down as the
 * keys and indexes taken (up to PATH_FRAMES levels), and spelled out as
 * Python subscripts only for an error message: formatting it for every
 * member cost more than the conversion itself. */
#define PATH_FRAMES 64

typedef struct where {
    const char *what; /* format of the value's name, with up to two %s: */
    const char *arg1, *arg2;
    int exact; /* only the exact JSON types: eddy__py_to_json_exact */
    struct {
        PyObject *key; /* borrowed, or NULL: idx */
        Py_ssize_t idx;
    } frames[PATH_FRAMES];
} where;

static void where_set(where *w, int depth, PyObject *key, Py_ssize_t idx)
{
    if (depth < PATH_FRAMES) {
        w->frames[depth].key = key;
        w->frames[depth].idx = idx;
    }
}

/* Raise exc_type with msg, prefixed by the value's name and the place at
 * depth. */
static void fail_msg(where *w, int depth, PyObject *exc_type, const char *msg)
{
    if (w->exact) { /* the caller pickles the value instead: no message */
        PyErr_SetNone(exc_type);
        return;
    }
    char name[256], path[1024];
    snprintf(name, sizeof(name), w->what, w->arg1, w->arg2);
    size_t len = 0;
    path[0] = '\0';
    for (int i = 0; i < depth && len < sizeof(path); i++) {
        if (i == PATH_FRAMES) {
            len += (size_t)snprintf(path + len, sizeof(path) - len, "[...]");
            break;
        }
        if (w->frames[i].key == NULL) {
            len += (size_t)snprintf(path + len, sizeof(path) - len, "[%lld]",
                                    (long long)w->frames[i].idx);
            continue;
        }
        PyObject *r = PyObject_Repr(w->frames[i].key);
        const char *rs = r != NULL ? PyUnicode_AsUTF8(r) : NULL;
        if (rs == NULL) {
            PyErr_Clear();
            rs = "?";
        }
        len += (size_t)snprintf(path + len, sizeof(path) - len, "[%s]", rs);
        Py_XDECREF(r);
    }
    if (depth > 0)
        PyErr_Format(exc_type, "%s at %s: %s", name, path, msg);
    else
        PyErr_Format(exc_type, "%s: %s", name, msg);
}

/* Raise exc_type with fmt (one %s: the type name of o), prefixed by the
 * value's name and the place at depth. */
static void fail(where *w, int depth, PyObject *exc_type, const char *fmt, PyObject *o)
{
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, Py_TYPE(o)->tp_name);
    fail_msg(w, depth, exc_type, msg);
}

void eddy__py_surrogate_why(PyObject *s, char *buf, size_t size)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), at = 0;
    Py_UCS4 c = 0;
    for (; at < n; at++) {
        c = PyUnicode_READ_CHAR(s, at);
        if (c >= 0xD800 && c <= 0xDFFF)
            break;
    }
    /* The text as repr() spells it (a surrogate as \udce9), its start only. */
    PyObject *head = PyUnicode_Substring(s, 0, n > 40 ? 40 : n);
    PyObject *r = head != NULL ? PyObject_Repr(head) : NULL;
    const char *rs = r != NULL ? PyUnicode_AsUTF8(r) : NULL;
    if (rs == NULL)
        PyErr_Clear();
    snprintf(buf, size,
             "%s%s holds a lone surrogate ('\\u%04x' at index %lld), which is not UTF-8 text "
             "(os.fsdecode and errors='surrogateescape' make one of a byte that is not UTF-8: "
             "decode such bytes with errors='replace' or 'backslashreplace')",
             rs != NULL ? rs : "a str", rs != NULL && n > 40 ? "..." : "", (unsigned)c,
             (long long)at);
    Py_XDECREF(r);
    Py_XDECREF(head);
}

/* Raise a ValueError for str (or dict key) s, which cannot be encoded as
 * UTF-8: it holds a lone surrogate. Another failure (out of memory) is left
 * as it is. */
static void fail_surrogate(where *w, int depth, const char *kind, PyObject *s)
{
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return;
    PyErr_Clear();
    if (w->exact) { /* no message: fail_msg's */
        PyErr_SetNone(PyExc_ValueError);
        return;
    }
    char why[512], msg[600];
    eddy__py_surrogate_why(s, why, sizeof(why));
    snprintf(msg, sizeof(msg), "%s %s", kind, why);
    fail_msg(w, depth, PyExc_ValueError, msg);
}

/* A list or dict (o) at depth (the containers around it) is a level more:
 * past MAX_DEPTH levels it is refused (1 with the exception set). */
static int too_deep(where *w, int depth, PyObject *o)
{
    if (depth < MAX_DEPTH)
        return 0;
    fail(w, depth, PyExc_ValueError,
         EDDY__PY_TOO_DEEP ", the most a value may have (or a cycle) ('%s')", o);
    return 1;
}

static json_t *to_json(PyObject *o, where *w, int depth)
{
    if (o == Py_None)
        return json_null();
    if (PyBool_Check(o))
        return json_boolean(o == Py_True);
    int exact = w->exact;
    if (exact ? PyLong_CheckExact(o) : PyLong_Check(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0) {
            fail(w, depth, PyExc_OverflowError, "integer ('%s') does not fit in 64 bits", o);
            return NULL;
        }
        if (v == -1 && PyErr_Occurred())
            return NULL;
        return json_integer((json_int_t)v);
    }
    if (exact ? PyFloat_CheckExact(o) : PyFloat_Check(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (!isfinite(d)) {
            fail(w, depth, PyExc_ValueError, "NaN and infinity ('%s') are not JSON", o);
            return NULL;
        }
        return json_real(d);
    }
    if (exact ? PyUnicode_CheckExact(o) : PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL) {
            fail_surrogate(w, depth, "str", o);
            return NULL;
        }
        return json_stringn(s, (size_t)n);
    }
    if (exact ? PyList_CheckExact(o) : (PyList_Check(o) || PyTuple_Check(o))) {
        if (too_deep(w, depth, o))
            return NULL;
        PyObject *seq = PySequence_Fast(o, "not a sequence");
        if (seq == NULL)
            return NULL;
        json_t *a = json_array();
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; a != NULL && i < n; i++) {
            where_set(w, depth, NULL, i);
            json_t *v = to_json(PySequence_Fast_GET_ITEM(seq, i), w, depth + 1);
            if (v == NULL || json_array_append_new(a, v) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        Py_DECREF(seq);
        if (a == NULL && !PyErr_Occurred())
            PyErr_NoMemory();
        return a;
    }
    if (exact ? PyDict_CheckExact(o) : PyDict_Check(o)) {
        if (too_deep(w, depth, o))
            return NULL;
        json_t *obj = json_object();
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (obj != NULL && PyDict_Next(o, &pos, &k, &v)) {
            if (exact ? !PyUnicode_CheckExact(k) : !PyUnicode_Check(k)) {
                fail(w, depth, PyExc_TypeError, "dict keys must be str for JSON, not '%s'", k);
                json_decref(obj);
                return NULL;
            }
            Py_ssize_t klen;
            const char *ks = PyUnicode_AsUTF8AndSize(k, &klen);
            if (ks == NULL) {
                fail_surrogate(w, depth, "dict key", k);
                json_decref(obj);
                return NULL;
            }
            where_set(w, depth, k, 0);
            json_t *jv = to_json(v, w, depth + 1);
            if (jv == NULL || json_object_setn_new(obj, ks, (size_t)klen, jv) != 0) {
                json_decref(obj);
                obj = NULL;
            }
        }
        if (obj == NULL && !PyErr_Occurred())
            PyErr_NoMemory();
        return obj;
    }
    fail(w, depth, PyExc_TypeError,
         "a value of type '%s' is not JSON (use dict with str keys, list, tuple, str, int, "
         "float, bool or None)",
         o);
    return NULL;
}

json_t *eddy__py_to_json_named(PyObject *o, const char *what, const char *arg1, const char *arg2)
{
    where w;
    w.what = what != NULL ? what : "value";
    w.arg1 = arg1;
    w.arg2 = arg2;
    w.exact = 0;
    json_t *j = to_json(o, &w, 0);
    if (j == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return j;
}

json_t *eddy__py_to_json(PyObject *o, const char *what)
{
    return eddy__py_to_json_named(o, "%s", what != NULL ? what : "value", NULL);
}

json_t *eddy__py_to_json_exact(PyObject *o)
{
    where w;
    w.what = "value";
    w.arg1 = w.arg2 = NULL;
    w.exact = 1;
    json_t *j = to_json(o, &w, 0);
    if (j == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return j;
}

PyObject *eddy__py_text(PyObject *o)
{
    PyObject *s = PyUnicode_CheckExact(o) ? Py_NewRef(o) : PyObject_Str(o);
    PyObject *b = s != NULL ? PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace") : NULL;
    Py_XDECREF(s);
    return b;
}
