/* Python values <-> JSON values (jansson). The GIL is held throughout. */
#include <math.h>
#include <string.h>

#include "py/py.h"

/* Deeper than this is refused: it is either a cycle or not data. */
#define MAX_DEPTH 512

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

/* The place inside the converted value, as Python subscripts. */
typedef struct where {
    const char *what;
    char *buf;
    size_t len, cap;
} where;

static void where_push(where *w, const char *fmt, PyObject *arg, Py_ssize_t idx)
{
    char tmp[128];
    if (arg != NULL) {
        PyObject *r = PyObject_Repr(arg);
        const char *s = r != NULL ? PyUnicode_AsUTF8(r) : NULL;
        if (s == NULL) {
            PyErr_Clear();
            s = "?";
        }
        snprintf(tmp, sizeof(tmp), fmt, s);
        Py_XDECREF(r);
    } else {
        snprintf(tmp, sizeof(tmp), fmt, (long long)idx);
    }
    size_t n = strlen(tmp);
    if (w->len + n + 1 > w->cap) {
        size_t ncap = (w->len + n + 1) * 2;
        char *nb = PyMem_Realloc(w->buf, ncap);
        if (nb == NULL)
            return; /* the message loses detail, nothing else */
        w->buf = nb;
        w->cap = ncap;
    }
    memcpy(w->buf + w->len, tmp, n + 1);
    w->len += n;
}

static void where_pop(where *w, size_t len)
{
    w->len = len;
    if (w->buf != NULL)
        w->buf[len] = '\0';
}

/* Raise exc_type with fmt (one %s: the type name of o), prefixed by what and
 * the place. */
static void fail(where *w, PyObject *exc_type, const char *fmt, PyObject *o)
{
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, Py_TYPE(o)->tp_name);
    if (w->len > 0 && w->buf != NULL)
        PyErr_Format(exc_type, "%s at %s: %s", w->what, w->buf, msg);
    else
        PyErr_Format(exc_type, "%s: %s", w->what, msg);
}

static json_t *to_json(PyObject *o, where *w, int depth)
{
    if (depth > MAX_DEPTH) {
        fail(w, PyExc_ValueError, "nested too deeply (a cycle?) for a JSON value ('%s')", o);
        return NULL;
    }
    if (o == Py_None)
        return json_null();
    if (PyBool_Check(o))
        return json_boolean(o == Py_True);
    if (PyLong_Check(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0) {
            fail(w, PyExc_OverflowError, "integer ('%s') does not fit in 64 bits", o);
            return NULL;
        }
        if (v == -1 && PyErr_Occurred())
            return NULL;
        return json_integer((json_int_t)v);
    }
    if (PyFloat_Check(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (!isfinite(d)) {
            fail(w, PyExc_ValueError, "NaN and infinity ('%s') are not JSON", o);
            return NULL;
        }
        return json_real(d);
    }
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL)
            return NULL;
        return json_stringn(s, (size_t)n);
    }
    if (PyList_Check(o) || PyTuple_Check(o)) {
        PyObject *seq = PySequence_Fast(o, "not a sequence");
        if (seq == NULL)
            return NULL;
        json_t *a = json_array();
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        size_t mark = w->len;
        for (Py_ssize_t i = 0; a != NULL && i < n; i++) {
            where_push(w, "[%lld]", NULL, i);
            json_t *v = to_json(PySequence_Fast_GET_ITEM(seq, i), w, depth + 1);
            where_pop(w, mark);
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
    if (PyDict_Check(o)) {
        json_t *obj = json_object();
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        size_t mark = w->len;
        while (obj != NULL && PyDict_Next(o, &pos, &k, &v)) {
            if (!PyUnicode_Check(k)) {
                fail(w, PyExc_TypeError, "dict keys must be str for JSON, not '%s'", k);
                json_decref(obj);
                return NULL;
            }
            Py_ssize_t klen;
            const char *ks = PyUnicode_AsUTF8AndSize(k, &klen);
            if (ks == NULL) {
                json_decref(obj);
                return NULL;
            }
            where_push(w, "[%s]", k, 0);
            json_t *jv = to_json(v, w, depth + 1);
            where_pop(w, mark);
            if (jv == NULL || json_object_setn_new(obj, ks, (size_t)klen, jv) != 0) {
                json_decref(obj);
                obj = NULL;
            }
        }
        if (obj == NULL && !PyErr_Occurred())
            PyErr_NoMemory();
        return obj;
    }
    fail(w, PyExc_TypeError,
         "a value of type '%s' is not JSON (use dict with str keys, list, tuple, str, int, "
         "float, bool or None)",
         o);
    return NULL;
}

json_t *eddy__py_to_json(PyObject *o, const char *what)
{
    where w = {.what = what != NULL ? what : "value"};
    json_t *j = to_json(o, &w, 0);
    PyMem_Free(w.buf);
    if (j == NULL && !PyErr_Occurred())
        PyErr_NoMemory();
    return j;
}
