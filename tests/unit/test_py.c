/*
 * Unit tests of the Python layer: JSON <-> Python conversion, loading errors,
 * the interpreter's finalisation and re-initialisation, and a small runtime
 * run of a Python agent whose worker calls and mailbox steps both run Python
 * (this test is in the ThreadSanitizer list).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

#include "py/py.h"

/* ---------------------------------------------------------------- helpers */

static int setup_py(void **state)
{
    (void)state;
    return eddy__py_acquire(NULL) == EDDY_OK ? 0 : -1;
}

static int teardown_py(void **state)
{
    (void)state;
    eddy__py_release();
    return 0;
}

/* Evaluate a Python expression (GIL held). */
static PyObject *eval(const char *expr)
{
    PyObject *main = PyImport_AddModule("__main__");
    PyObject *g = PyModule_GetDict(main);
    PyObject *r = PyRun_String(expr, Py_eval_input, g, g);
    if (r == NULL)
        PyErr_Print();
    assert_non_null(r);
    return r;
}

/* The message of the failed conversion of expr, or NULL when it converts. */
static char *conversion_error(const char *expr, PyObject *want_type)
{
    PyObject *v = eval(expr);
    json_t *j = eddy__py_to_json(v, "attribute 'x'");
    Py_DECREF(v);
    if (j != NULL) {
        json_decref(j);
        return NULL;
    }
    assert_true(PyErr_ExceptionMatches(want_type));
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyObject *s = PyObject_Str(val);
    char *msg = strdup(PyUnicode_AsUTF8(s));
    Py_XDECREF(s);
    Py_XDECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return msg;
}

/* A durable call's function id, read directly for plain functions, is the
 * module helper's for every kind of callable (or a journal written with
 * one would not replay with the other). */
static void test_function_ids(void **state)
{
    (void)state;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *main = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *r = PyRun_String("import functools\n"
                               "def top(x): return x\n"
                               "def outer():\n"
                               "    def inner(): pass\n"
                               "    return inner\n"
                               "class K:\n"
                               "    def m(self): pass\n"
                               "    def __call__(self): pass\n"
                               "anon = lambda: 0\n"
                               "nomod = lambda: 0\n"
                               "nomod.__module__ = None\n"
                               "empty = lambda: 0\n"
                               "empty.__module__ = ''\n"
                               "odd = lambda: 0\n"
                               "odd.__module__ = 5\n"
                               "fns = [top, outer(), K.m, K().m, K(), anon, nomod, empty, odd,\n"
                               "       functools.partial(top, 1), len]\n",
                               Py_file_input, main, main);
    assert_non_null(r);
    Py_DECREF(r);
    PyObject *fns = PyDict_GetItemString(main, "fns");
    PyObject *helper = eval("__import__('eddy')._function_id");
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fns); i++) {
        PyObject *fn = PyList_GET_ITEM(fns, i);
        char *mine = NULL;
        assert_int_equal(eddy__py_function_id(fn, &mine), 0);
        PyObject *want = PyObject_CallOneArg(helper, fn);
        assert_non_null(want);
        assert_string_equal(mine, PyUnicode_AsUTF8(want));
        Py_DECREF(want);
        free(mine);
    }
    Py_DECREF(helper);
    PyGILState_Release(g);
}

/* A durable call's exception in the journal: its attributes and args one by
 * one when they do not pickle together, its causes, the note a replay adds,
 * and the records an older eddy wrote. */
static void test_exception_journal(void **state)
{
    (void)state;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *main = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *r = PyRun_String(
        "import base64, pickle, threading, eddy\n"
        "def replay(exc):\n"
        "    return eddy._decode_error(*eddy._encode_error(exc))\n"
        "def attributes(exc):\n"
        "    return {k: v for k, v in vars(exc).items() if k != '__notes__'}\n"
        "class Attrs(Exception):\n"
        "    pass\n"
        "# Each attribute on its own: one that does not pickle (nor its name\n"
        "# encode as UTF-8) is left out, the others kept.\n"
        "e = Attrs('404')\n"
        "e.status = 404\n"
        "e.response = threading.Lock()\n"
        "setattr(e, 'caf\\udce9', 1)\n"
        "r = replay(e)\n"
        "assert type(r) is Attrs and r.args == ('404',), r\n"
        "assert attributes(r) == {'status': 404}, vars(r)\n"
        "# Each arg in its place; one that does not pickle as its repr.\n"
        "lock = threading.Lock()\n"
        "r = replay(Attrs('bad gateway', 502, lock))\n"
        "assert r.args == ('bad gateway', 502, repr(lock)), r.args\n"
        "# A chain of causes (and a cycle) is journaled 8 causes deep.\n"
        "def chain(n):\n"
        "    exc = None\n"
        "    for i in range(n):\n"
        "        nxt = KeyError(i)\n"
        "        nxt.__cause__ = exc\n"
        "        exc = nxt\n"
        "    return exc\n"
        "def causes(exc):\n"
        "    got = []\n"
        "    while exc.__cause__ is not None:\n"
        "        exc = exc.__cause__\n"
        "        got.append(exc.args[0])\n"
        "    return got\n"
        "assert causes(replay(chain(4))) == [2, 1, 0]\n"
        "assert causes(replay(chain(12))) == [10, 9, 8, 7, 6, 5, 4, 3]\n"
        "a, b = ValueError('a'), ValueError('b')\n"
        "a.__cause__, b.__cause__ = b, a\n"
        "assert causes(replay(a)) == ['b', 'a', 'b', 'a', 'b', 'a', 'b', 'a']\n"
        "r = replay(a)\n"
        "assert r.__suppress_context__ and r.__cause__.__suppress_context__\n"
        "# A cause that does not pickle is rebuilt as the exception is.\n"
        "outer = ValueError('outer')\n"
        "outer.__cause__ = e\n"
        "r = replay(outer)\n"
        "assert type(r.__cause__) is Attrs and attributes(r.__cause__) == {'status': 404}\n"
        "# Each exception replayed says so, naming the call's function, and what\n"
        "# differs from the one raised; a cause only what differs.\n"
        "e = Attrs('bad gateway', 502, threading.Lock())\n"
        "e.response = threading.Lock()\n"
        "outer = ValueError('outer')\n"
        "outer.__cause__ = e\n"
        "lost = (\"args[2] could not be pickled and is its repr() text; its attribute \"\n"
        "        \"'response' could not be pickled and is missing.\")\n"
        "r = eddy._decode_error(*eddy._encode_error(e), 'mod.fetch')\n"
        "assert len(r.__notes__) == 1, r.__notes__\n"
        "assert r.__notes__[0].startswith(\n"
        "    'eddy: replayed from the journal: mod.fetch was not called again. '), r.__notes__\n"
        "assert r.__notes__[0].endswith(' What differs from the exception raised: ' + lost), "
        "r.__notes__\n"
        "r = eddy._decode_error(*eddy._encode_error(outer), 'mod.fetch')\n"
        "assert len(r.__notes__) == 1 and 'What differs' not in r.__notes__[0], r.__notes__\n"
        "assert r.__cause__.__notes__ == [\n"
        "    'eddy: replayed from the journal, which differs from the exception raised: ' + lost]\n"
        "# A record an older eddy wrote (pickle, and args and attributes together)\n"
        "# replays as it did, with the note.\n"
        "class Two(Exception):\n"
        "    def __init__(self, msg, code):\n"
        "        super().__init__(msg)\n"
        "        self.code = code\n"
        "t = Two('two', 5)\n"
        "old = eddy._to_json_text({\n"
        "    '__eddy_pickle__': base64.b64encode(pickle.dumps(t)).decode(),\n"
        "    '__eddy_exc_state__': base64.b64encode(pickle.dumps((t.args, vars(t)))).decode()})\n"
        "r = eddy._decode_error('__main__.Two', 'two', old)\n"
        "assert type(r) is Two and r.args == ('two',) and r.code == 5 and r.__cause__ is None\n"
        "assert attributes(r) == {'code': 5} and len(r.__notes__) == 1\n"
        "r = eddy._decode_error('__main__.Attrs', 'no payload', None)\n"
        "assert type(r) is Attrs and r.args == ('no payload',)\n",
        Py_file_input, main, main);
    if (r == NULL)
        PyErr_Print();
    assert_non_null(r);
    Py_DECREF(r);
    PyGILState_Release(g);
}

/* An output file and the dead-letter file the runtime makes beside it. */
static void unlink_output(const char *out)
{
    char dead[96];
    snprintf(dead, sizeof(dead), "%s.dead.jsonl", out);
    unlink(out);
    unlink(dead);
}

static char *write_temp(const char *suffix, const char *text)
{
    char *path = malloc(64);
    snprintf(path, 64, "/tmp/eddy-test-py-XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Run child() in a forked child process, which ends with _exit(2) and what
 * it returns; a child still running after timeout_s seconds is killed, and
 * the test fails as hung rather than hang itself. */
static void run_in_child(int (*child)(void), int timeout_s)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka's handlers would take a crash back into its runner, which
         * would go on with the next tests in the child. */
        static const int crashes[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < sizeof(crashes) / sizeof(crashes[0]); i++)
            signal(crashes[i], SIG_DFL);
        _exit(child());
    }
    int status = 0;
    for (int ms = 0; waitpid(pid, &status, WNOHANG) == 0; ms += 10) {
        if (ms >= timeout_s * 1000) {
            kill(pid, SIGKILL);
            assert_int_equal(waitpid(pid, &status, 0), pid);
            fail_msg("the child process hung for %d s", timeout_s);
        }
        struct timespec ten = {0, 10 * 1000 * 1000};
        nanosleep(&ten, NULL);
    }
    if (WIFSIGNALED(status))
        fail_msg("the child process died of signal %d", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---------------------------------------------------------------- conversion */

static void test_round_trip(void **state)
{
    (void)state;
    PyGILState_STATE g = PyGILState_Ensure();
    const char *text = "{\"a\": [1, -2, 2.5, \"s\\u00e9\", true, false, null, {}], "
                       "\"b\": {\"c\": {\"d\": []}}, \"big\": 9007199254740993, \"\": \"\"}";
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    PyObject *p = eddy__py_from_json(j);
    assert_non_null(p);
    PyObject *want = eval("{'a': [1, -2, 2.5, 's\\u00e9', True, False, None, {}], "
                          "'b': {'c': {'d': []}}, 'big': 9007199254740993, '': ''}");
    assert_int_equal(PyObject_RichCompareBool(p, want, Py_EQ), 1);
    json_t *back = eddy__py_to_json(p, "value");
    assert_non_null(back);
    assert_true(json_equal(j, back));
    /* Types survive: True stays a bool, 1 an int, 2.5 a float. */
    json_t *a = json_object_get(back, "a");
    assert_true(json_is_integer(json_array_get(a, 0)));
    assert_true(json_is_real(json_array_get(a, 2)));
    assert_true(json_is_true(json_array_get(a, 4)));
    Py_DECREF(p);
    Py_DECREF(want);
    json_decref(j);
    json_decref(back);
    /* Tuples become arrays; None alone is null. */
    PyObject *t = eval("(1, (2, 3))");
    json_t *jt = eddy__py_to_json(t, "value");
    char *s = json_dumps(jt, JSON_COMPACT);
    assert_string_equal(s, "[1,[2,3]]");
    free(s);
    json_decref(jt);
    Py_DECREF(t);
    PyObject *none = eddy__py_from_json(NULL);
    assert_ptr_equal(none, Py_None);
    Py_DECREF(none);
    PyGILState_Release(g);
}

static void test_errors_name_the_place(void **state)
{
    (void)state;
    PyGILState_STATE g = PyGILState_Ensure();
    char *m = conversion_error("{'a': [1, {2, 3}]}", PyExc_TypeError);
    assert_non_null(m);
    assert_non_null(strstr(m, "attribute 'x' at ['a'][1]: a value of type 'set' is not JSON"));
    free(m);
    m = conversion_error("{1: 'one'}", PyExc_TypeError);
    assert_non_null(strstr(m, "dict keys must be str for JSON, not 'int'"));
    free(m);
    m = conversion_error("[2 ** 64]", PyExc_OverflowError);
    assert_non_null(strstr(m, "at [0]: integer ('int') does not fit in 64 bits"));
    free(m);
    /* Past 64 levels the place is cut short, not wrong. */
    m = conversion_error("eval('[' * 70 + '{0}' + ']' * 70)", PyExc_TypeError);
    assert_non_null(
        strstr(m, "attribute 'x' at [0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"));
    assert_non_null(strstr(m, "[0][...]: a value of type 'set' is not JSON"));
    free(m);
    m = conversion_error("{'f': float('nan')}", PyExc_ValueError);
    assert_non_null(strstr(m, "NaN and infinity"));
    free(m);
    m = conversion_error("object()", PyExc_TypeError);
    assert_string_equal(m, "attribute 'x': a value of type 'object' is not JSON (use dict with "
                           "str keys, list, tuple, str, int, float, bool or None)");
    free(m);
    /* A lone surrogate (os.fsdecode's of a byte that is not UTF-8) is not
     * UTF-8: refused with the place, as a str or as a dict key. */
    m = conversion_error("{'a': ['ok', 'caf\\udce9']}", PyExc_ValueError);
    assert_string_equal(m, "attribute 'x' at ['a'][1]: str 'caf\\udce9' holds a lone surrogate "
                           "('\\udce9' at index 3), which is not UTF-8 text (os.fsdecode and "
                           "errors='surrogateescape' make one of a byte that is not UTF-8: "
                           "decode such bytes with errors='replace' or 'backslashreplace')");
    free(m);
    m = conversion_error("[{'k\\udcff': 1}]", PyExc_ValueError);
    assert_non_null(strstr(m, "attribute 'x' at [0]: dict key 'k\\udcff' holds a lone surrogate "
                              "('\\udcff' at index 1)"));
    free(m);
    m = conversion_error("'x' * 50 + '\\ud800'", PyExc_ValueError);
    assert_non_null(strstr(m, "attribute 'x': str 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... "
                              "holds a lone surrogate ('\\ud800' at index 50)"));
    free(m);
    /* A durable result that holds one is pickled: no message. */
    PyObject *v = eval("['caf\\udce9']");
    assert_null(eddy__py_to_json_exact(v));
    assert_true(PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
    Py_DECREF(v);
    /* A cycle is refused, not followed forever. */
    PyObject *main = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *r = PyRun_String("cyc = []\ncyc.append(cyc)\n", Py_file_input, main, main);
    assert_non_null(r);
    Py_DECREF(r);
    m = conversion_error("cyc", PyExc_ValueError);
    assert_non_null(strstr(m, "nested deeper than EDDY_VALUE_MAX_DEPTH (1000) levels of lists "
                              "and dicts, the most a value may have (or a cycle)"));
    free(m);
    /* Values at the limits convert. */
    assert_null(conversion_error("[-2 ** 63, 2 ** 63 - 1, 1e308, '']", PyExc_TypeError));
    PyGILState_Release(g);
}

/* ---------------------------------------------------------------- loading */

static void test_load_errors(void **state)
{
    (void)state;
    char *none = write_temp(".py", "from eddy import Agent\nx = 1\n");
    char *bad = write_temp(".py", "def broken(:\n");
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    assert_int_equal(eddy_plan_load_python(plan, none, NULL, &err), EDDY_EPLAN);
    assert_non_null(strstr(eddy_error_message(err), none));
    assert_non_null(strstr(eddy_error_message(err), "no actions"));
    eddy_error_free(err);
    err = NULL;
    assert_int_equal(eddy_plan_load_python(plan, bad, NULL, &err), EDDY_EPLAN);
    assert_non_null(strstr(eddy_error_message(err), bad));
    assert_non_null(strstr(eddy_error_message(err), "SyntaxError"));
    eddy_error_free(err);
    err = NULL;
    assert_int_equal(eddy_plan_load_python(plan, "/nonexistent/agent.py", NULL, &err), EDDY_EPLAN);
    assert_non_null(strstr(eddy_error_message(err), "/nonexistent/agent.py"));
    eddy_error_free(err);
    eddy_plan_free(plan);
    unlink(none);
    unlink(bad);
    free(none);
    free(bad);
}

static int nop(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return EDDY_OK;
}

/* A load that fails halfway through adding the file's actions removes those
 * it added: the plan is as it was. */
static void test_failed_load_leaves_the_plan(void **state)
{
    (void)state;
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    char *clash = write_temp(".py", "from eddy import Agent, InputEvent, action\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent, 'Other')\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def mine(event, ctx):\n"
                                    "        pass\n");
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    assert_int_equal(eddy_plan_add_action(plan, "mine", on_input, nop, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_load_python(plan, clash, NULL, &err), EDDY_EPLAN);
    assert_non_null(
        strstr(eddy_error_message(err), "action 'mine' is in the plan already: names are unique"));
    eddy_error_free(err);
    err = NULL;
    assert_int_equal(eddy_plan_action_count(plan), 1);
    assert_string_equal(eddy_plan_action_name(plan, 0), "mine");
    assert_int_equal(eddy__plan_route(plan, EDDY_INPUT_EVENT)->n, 1);
    assert_null(eddy__plan_route(plan, "Other"));
    assert_int_equal(eddy_plan_load_python(NULL, clash, NULL, &err), EDDY_EINVAL);
    assert_string_equal(eddy_error_type(err), "plan");
    eddy_error_free(err);
    eddy_plan_free(plan);
    unlink(clash);
    free(clash);
}

/* ---------------------------------------------------------------- a run */

static const char *agent_py =
    "import time\n"
    "from eddy import Agent, Event, InputEvent, OutputEvent, action\n"
    "class Doubled(Event):\n"
    "    pass\n"
    "def work(x):\n"
    "    end = time.monotonic() + 0.002\n"
    "    n = 0\n"
    "    while time.monotonic() < end:\n"
    "        n += 1\n"
    "    return x * 2\n"
    "class A(Agent):\n"
    "    @action(InputEvent)\n"
    "    @staticmethod\n"
    "    async def first(event, ctx):\n"
    "        x = event.input['x']\n"
    "        a, b = await ctx.gather(ctx.execute_async(work, x), ctx.execute_async(work, 1))\n"
    "        c = await ctx.durable_execute_async(work, a)\n"
    "        ctx.short_term_memory.set('n', (ctx.short_term_memory.get('n') or 0) + 1)\n"
    "        ctx.send_event(Doubled(x=c + b))\n"
    "    @action(Doubled)\n"
    "    @staticmethod\n"
    "    def second(event, ctx):\n"
    "        ctx.send_event(OutputEvent(output={'x': event.x, 'key': ctx.key,\n"
    "                                           'n': ctx.short_term_memory.get('n')}))\n";

static void run_agent(const char *agent, const char *in, const char *out, const char *state_dir)
{
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    int rc = eddy_plan_load_python(plan, agent, NULL, &err);
    if (rc != EDDY_OK)
        fail_msg("load: %s", eddy_error_message(err));
    eddy_config *conf = eddy_config_new();
    assert_int_equal(eddy_config_set(conf, "input", in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(conf, "output", out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(conf, "async-threads", "4", NULL), EDDY_OK);
    if (state_dir != NULL)
        assert_int_equal(eddy_config_set(conf, "state", state_dir, NULL), EDDY_OK);
    eddy_runtime *rt = eddy_runtime_new(plan, conf, &err);
    if (rt == NULL)
        fail_msg("runtime: %s", eddy_error_message(err));
    rc = eddy_runtime_run(rt);
    if (rc != EDDY_OK)
        fail_msg("run: %s", eddy_error_message(eddy_runtime_error(rt)));
    eddy_runtime_free(rt);
    eddy_config_free(conf);
}

/* A temporary input file of n records {"key": "k<i % keys>", "x": i}. */
static char *write_inputs(int n, int keys)
{
    char text[4096] = "";
    for (int i = 0; i < n; i++) {
        char line[64];
        snprintf(line, sizeof(line), "{\"key\": \"k%d\", \"x\": %d}\n", i % keys, i);
        assert_true(strlen(text) + strlen(line) < sizeof(text));
        strcat(text, line);
    }
    return write_temp(".jsonl", text);
}

static void test_run_python_agent(void **state)
{
    (void)state;
    char *agent = write_temp(".py", agent_py);
    char *in = write_inputs(40, 7);
    char out[] = "/tmp/eddy-test-py-out-XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    char state_dir[] = "/tmp/eddy-test-py-state-XXXXXX";
    assert_non_null(mkdtemp(state_dir));
    /* Twice: the interpreter is finalised after the first run's plan is
     * freed and initialised again for the second (with a state directory). */
    for (int round = 0; round < 2; round++) {
        run_agent(agent, in, out, round == 0 ? NULL : state_dir);
        FILE *f = fopen(out, "r");
        assert_non_null(f);
        char line[256];
        long sum = 0;
        int n = 0;
        while (fgets(line, sizeof(line), f) != NULL) {
            json_t *o = json_loads(line, 0, NULL);
            assert_non_null(o);
            sum += (long)json_integer_value(json_object_get(o, "x"));
            n++;
            json_decref(o);
        }
        fclose(f);
        assert_int_equal(n, 40);
        assert_int_equal(sum, 40 * 2 + 4 * (39 * 40 / 2)); /* each x -> 4x + 2 */
        assert_false(Py_IsInitialized());
    }
    unlink(agent);
    unlink(in);
    unlink_output(out);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", state_dir);
    assert_int_equal(system(cmd), 0);
    free(agent);
    free(in);
}

static int count_thread_states(void)
{
    PyGILState_STATE g = PyGILState_Ensure();
    int n = 0;
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(PyInterpreterState_Main()); ts != NULL;
         ts = PyThreadState_Next(ts))
        n++;
    PyGILState_Release(g);
    return n;
}

/* Workers keep a Python thread state from their first call to their exit,
 * and delete it then: after a run, the interpreter has the thread states it
 * had before. */
static void test_worker_thread_states(void **state)
{
    (void)state;
    eddy_error *err = NULL;
    assert_int_equal(eddy__py_acquire(&err), EDDY_OK); /* alive across the runs */
    int before = count_thread_states();
    char *agent = write_temp(".py", agent_py);
    char *in = write_inputs(12, 5);
    char out[] = "/tmp/eddy-test-py-out-XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    for (int round = 0; round < 2; round++) {
        run_agent(agent, in, out, NULL);
        assert_true(Py_IsInitialized());
        assert_int_equal(count_thread_states(), before);
    }
    eddy__py_release();
    assert_false(Py_IsInitialized());
    unlink(agent);
    unlink(in);
    unlink_output(out);
    free(agent);
    free(in);
}

/* ---------------------------------------------------------------- the process's hooks */

static int signals_shown[4];
static int actions_shown[4];
static int nsignals_shown;

/* Keeps SIGUSR1 (the agent's handler for it is not installed), lets the
 * others go. */
static int keep_sigusr1(int signo, int action, void *arg)
{
    assert_ptr_equal(arg, &nsignals_shown);
    if (nsignals_shown < 4) {
        actions_shown[nsignals_shown] = action;
        signals_shown[nsignals_shown++] = signo;
    }
    return signo == SIGUSR1;
}

static int is_default(int signo)
{
    struct sigaction cur;
    assert_int_equal(sigaction(signo, NULL, &cur), 0);
    return (cur.sa_flags & SA_SIGINFO) == 0 && cur.sa_handler == SIG_DFL;
}

/* Without a signal hook, loading an agent that never imports signal changes
 * nothing of the process's signals: importing _signal (as the guard did)
 * installed Python's SIGINT handler, and raise(SIGINT) no longer ended the
 * program. */
static void test_no_hook_no_change(void **state)
{
    (void)state;
    char *agent = write_temp(".py", "import sys\n"
                                    "from eddy import Agent, InputEvent, action\n"
                                    "SIGNAL_IMPORTED = '_signal' in sys.modules\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n");
    signal(SIGINT, SIG_DFL);
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK)
        fail_msg("load: %s", eddy_error_message(err));
    assert_true(is_default(SIGINT));
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *mods = PySys_GetObject("modules"); /* borrowed */
    assert_non_null(mods);
    assert_null(PyDict_GetItemString(mods, "_signal"));
    PyGILState_Release(g);
    eddy_plan_free(plan);
    assert_true(is_default(SIGINT));
    unlink(agent);
    free(agent);
}

/* The signal hook sees an agent's signal.signal() before anything is
 * installed, and may refuse it. Calls that Python refuses never reach it
 * and fail as Python's; the guard looks like Python's function. */
static void test_signal_hook(void **state)
{
    (void)state;
    char *agent = write_temp(
        ".py", "import _signal, signal\n"
               "from eddy import Agent, InputEvent, action\n"
               "def h(signo, frame):\n"
               "    pass\n"
               "KEPT = signal.signal(signal.SIGUSR1, h)\n"
               "signal.signal(signal.SIGUSR2, h)\n"
               "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
               "assert KEPT == signal.SIG_DFL, KEPT\n"
               "assert _signal.signal.__module__ == '_signal', _signal.signal.__module__\n"
               "assert _signal.signal.__self__ is _signal, _signal.signal.__self__\n"
               "assert _signal.signal.__name__ == 'signal'\n"
               "def refused(*args, **kw):\n"
               "    try:\n"
               "        _signal.signal(*args, **kw)\n"
               "    except (TypeError, ValueError) as e:\n"
               "        return '%s: %s' % (type(e).__name__, e)\n"
               "    raise AssertionError('taken: %r' % (args,))\n"
               "HANDLERS = 'TypeError: signal handler must be signal.SIG_IGN, signal.SIG_DFL, "
               "or a callable object'\n"
               "assert refused(signal.SIGUSR1, True) == HANDLERS, refused(signal.SIGUSR1, True)\n"
               "assert refused(signal.SIGUSR1, signal.Handlers.SIG_IGN) == HANDLERS\n"
               "assert refused(signal.SIGUSR1, 7) == HANDLERS\n"
               "r = refused(signalnum=signal.SIGUSR1, handler=h)\n"
               "assert r == 'TypeError: _signal.signal() takes no keyword arguments', r\n"
               "r = refused(signal.SIGUSR1)\n"
               "assert r == 'TypeError: signal expected 2 arguments, got 1', r\n"
               "r = refused(0, h)\n"
               "assert r == 'ValueError: signal number out of range', r\n"
               "class A(Agent):\n"
               "    @action(InputEvent)\n"
               "    @staticmethod\n"
               "    def first(event, ctx):\n"
               "        pass\n");
    assert_true(is_default(SIGUSR1) && is_default(SIGUSR2));
    nsignals_shown = 0;
    eddy_python_set_signal_hook(keep_sigusr1, &nsignals_shown);
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK)
        fail_msg("load: %s", eddy_error_message(err));
    assert_int_equal(nsignals_shown, 3);
    assert_int_equal(signals_shown[0], SIGUSR1);
    assert_int_equal(actions_shown[0], EDDY_PYTHON_SIG_HANDLER);
    assert_int_equal(signals_shown[1], SIGUSR2);
    assert_int_equal(signals_shown[2], SIGUSR1);
    assert_int_equal(actions_shown[2], EDDY_PYTHON_SIG_IGN);
    assert_true(is_default(SIGUSR1));  /* kept: not installed */
    assert_false(is_default(SIGUSR2)); /* Python's handler */
    eddy_plan_free(plan);
    assert_false(Py_IsInitialized());
    assert_true(is_default(SIGUSR2)); /* Python put back the default as it ended */
    eddy_python_set_signal_hook(NULL, NULL);
    unlink(agent);
    free(agent);
}

static size_t threads_waited;
static char thread_waited[32];
static long thread_waited_id;
static int finalize_calls;
static int skip_joins;
static char thread_go[4096]; /* the file the hook creates: the threads end then */

static int note_finalize(size_t n, const char *const *names, const long *ids, void *arg)
{
    assert_ptr_equal(arg, &threads_waited);
    finalize_calls++;
    threads_waited = n;
    if (n > 0) {
        snprintf(thread_waited, sizeof(thread_waited), "%s", names[0]);
        thread_waited_id = ids[0];
    }
    FILE *f = fopen(thread_go, "w");
    assert_non_null(f);
    fclose(f);
    return skip_joins;
}

/* The finalise hook hears of the non-daemon threads that finalising the
 * interpreter waits for, and of no daemon thread. Both wait for the file the
 * hook creates ('late' ends the daemon thread and joins it before it ends,
 * so that nothing runs on past the finalisation). */
static void test_finalize_hook(void **state)
{
    (void)state;
    char *agent = write_temp(".py", "import os, threading, time\n"
                                    "from eddy import Agent, InputEvent, action\n"
                                    "go = os.environ['EDDY_TEST_GO']\n"
                                    "ev = threading.Event()\n"
                                    "d = threading.Thread(target=ev.wait, daemon=True)\n"
                                    "d.start()\n"
                                    "def late():\n"
                                    "    while not os.path.exists(go):\n"
                                    "        time.sleep(0.005)\n"
                                    "    ev.set()\n"
                                    "    d.join()\n"
                                    "t = threading.Thread(target=late, name='late')\n"
                                    "t.start()\n"
                                    "with open(go + '.id', 'w') as f:\n"
                                    "    f.write(str(t.native_id))\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n");
    snprintf(thread_go, sizeof(thread_go), "%s.go", agent);
    assert_int_equal(setenv("EDDY_TEST_GO", thread_go, 1), 0);
    finalize_calls = 0;
    skip_joins = 0;
    eddy_python_set_finalize_hook(note_finalize, &threads_waited);
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK)
        fail_msg("load: %s", eddy_error_message(err));
    assert_int_equal(finalize_calls, 0);
    eddy_plan_free(plan); /* finalises, waiting for 'late' */
    assert_false(Py_IsInitialized());
    assert_int_equal(finalize_calls, 1);
    assert_int_equal(threads_waited, 1);
    assert_string_equal(thread_waited, "late");
    char idfile[4200];
    snprintf(idfile, sizeof(idfile), "%s.id", thread_go);
    FILE *f = fopen(idfile, "r");
    assert_non_null(f);
    long id = 0;
    assert_int_equal(fscanf(f, "%ld", &id), 1);
    fclose(f);
    assert_int_equal(thread_waited_id, id);
    eddy_python_set_finalize_hook(NULL, NULL);
    unsetenv("EDDY_TEST_GO");
    unlink(idfile);
    unlink(thread_go);
    unlink(agent);
    free(agent);
}

/* eddy_python_hold() keeps the interpreter across plans loaded and freed
 * one after another (no finalisation between them), and the release of the
 * last hold finalises it; a release of no hold ends no plan's use. */
static void test_hold_keeps_the_interpreter(void **state)
{
    (void)state;
    char *agent = write_temp(".py", "from eddy import Agent, InputEvent, action\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n");
    finalize_calls = 0;
    skip_joins = 0;
    eddy_python_set_finalize_hook(note_finalize, &threads_waited);
    eddy_python_release(); /* no hold: nothing */
    assert_int_equal(eddy_python_hold(NULL), EDDY_OK);
    assert_int_equal(eddy_python_hold(NULL), EDDY_OK); /* holds count */
    assert_true(Py_IsInitialized());
    for (int i = 0; i < 2; i++) {
        eddy_plan *plan = eddy_plan_new();
        eddy_error *err = NULL;
        if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK)
            fail_msg("load: %s", eddy_error_message(err));
        if (i == 1)
            eddy_python_release(); /* one hold left, and the plan */
        eddy_plan_free(plan);
        assert_true(Py_IsInitialized());
        assert_int_equal(finalize_calls, 0);
    }
    eddy_plan *plan = eddy_plan_new();
    assert_int_equal(eddy_plan_load_python(plan, agent, NULL, NULL), EDDY_OK);
    eddy_python_release(); /* the last hold: the plan still holds Python */
    eddy_python_release(); /* no hold left: the plan's use stays */
    assert_true(Py_IsInitialized());
    assert_int_equal(finalize_calls, 0);
    eddy_plan_free(plan); /* finalises */
    assert_false(Py_IsInitialized());
    assert_int_equal(finalize_calls, 1);
    assert_int_equal(eddy_python_hold(NULL), EDDY_OK); /* starts it again */
    assert_true(Py_IsInitialized());
    eddy_python_release();
    assert_false(Py_IsInitialized());
    assert_int_equal(finalize_calls, 2);
    eddy_python_set_finalize_hook(NULL, NULL);
    unlink(agent);
    free(agent);
}

/* The Python half's warnings go through eddy's log (eddy_set_log_hook), a
 * name that is not UTF-8 (a lone surrogate) escaped rather than lost. */
static char py_logged[1024];
static int py_log_calls;

static void on_py_log(int level, const char *message, void *arg)
{
    (void)arg;
    assert_int_equal(level, EDDY_LOG_WARNING);
    py_log_calls++;
    snprintf(py_logged, sizeof(py_logged), "%s", message);
}

static void test_python_warnings_reach_the_log_hook(void **state)
{
    (void)state;
    char *agent = write_temp(".py", "from eddy import Agent, Event, InputEvent, action\n"
                                    "class S(Event):\n"
                                    "    pass\n"
                                    "T = type('S', (Event,), {'__module__': 'm\\udc80'})\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n");
    py_log_calls = 0;
    eddy_set_log_hook(on_py_log, NULL);
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK)
        fail_msg("load: %s", eddy_error_message(err));
    eddy_plan_free(plan);
    eddy_set_log_hook(NULL, NULL);
    assert_int_equal(py_log_calls, 1);
    assert_non_null(strstr(py_logged, "two event classes are named S ("));
    assert_non_null(strstr(py_logged, " and m\\udc80.S): eddy routes events by type name"));
    unlink(agent);
    free(agent);
}

/* A hook that returns nonzero has the join of the threads left skipped,
 * and the rest of the finalisation runs: the atexit handler writes its
 * file. This relies on a private part of CPython 3.11's threading
 * (_shutdown_locks): a Python whose threading changed fails here. It runs
 * in a child process that ends with _exit(2): the thread left blocks there
 * for good, holding what it references (which a leak checker at exit would
 * report, as for any thread left running past Python's end). */
static int skip_thread_joins_child(void)
{
    char *agent = write_temp(".py", "import atexit, os, threading\n"
                                    "from eddy import Agent, InputEvent, action\n"
                                    "out = os.environ['EDDY_TEST_GO'] + '.atexit'\n"
                                    "def bye():\n"
                                    "    with open(out, 'w') as f:\n"
                                    "        f.write('ran')\n"
                                    "atexit.register(bye)\n"
                                    "threading.Thread(target=threading.Event().wait,\n"
                                    "                 name='forever').start()\n"
                                    "class A(Agent):\n"
                                    "    @action(InputEvent)\n"
                                    "    @staticmethod\n"
                                    "    def first(event, ctx):\n"
                                    "        pass\n");
    if (agent == NULL)
        return 1;
    snprintf(thread_go, sizeof(thread_go), "%s.go", agent);
    setenv("EDDY_TEST_GO", thread_go, 1);
    finalize_calls = 0;
    skip_joins = 1;
    eddy_python_set_finalize_hook(note_finalize, &threads_waited);
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    if (eddy_plan_load_python(plan, agent, NULL, &err) != EDDY_OK) {
        fprintf(stderr, "load: %s\n", eddy_error_message(err));
        return 2;
    }
    eddy_plan_free(plan); /* would wait for 'forever' for ever */
    int rc = 0;
    if (Py_IsInitialized() || finalize_calls != 1 || threads_waited != 1 ||
        strcmp(thread_waited, "forever") != 0)
        rc = 3;
    char path[4200], text[16] = "";
    snprintf(path, sizeof(path), "%s.atexit", thread_go);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(text, sizeof(text), f) == NULL || strcmp(text, "ran") != 0)
        rc = 4; /* the atexit handler did not run */
    if (f != NULL)
        fclose(f);
    unlink(path);
    unlink(thread_go);
    unlink(agent);
    return rc;
}

static void test_skip_thread_joins(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(skip_thread_joins_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---------------------------------------------------------------- threads */

/* An agent that imports threading (as logging and concurrent.futures do),
 * with a non-daemon thread that finalisation must still wait for, one that
 * waits for threading's main thread to end, and an atexit handler: each
 * writes a file named by EDDY_TEST_GO. */
static const char threading_agent_py[] = "import atexit, os, threading, time\n"
                                         "from eddy import Agent, InputEvent, action\n"
                                         "go = os.environ['EDDY_TEST_GO']\n"
                                         "def write(suffix):\n"
                                         "    with open(go + suffix, 'w') as f:\n"
                                         "        f.write('ran')\n"
                                         "atexit.register(write, '.atexit')\n"
                                         "def slow():\n"
                                         "    time.sleep(0.2)\n"
                                         "    write('.slow')\n"
                                         "def after_main():\n"
                                         "    threading.main_thread().join()\n"
                                         "    write('.main')\n"
                                         "threading.Thread(target=slow).start()\n"
                                         "threading.Thread(target=after_main).start()\n"
                                         "class A(Agent):\n"
                                         "    @action(InputEvent)\n"
                                         "    @staticmethod\n"
                                         "    def first(event, ctx):\n"
                                         "        pass\n";

/* Whether the file go + suffix says "ran"; it is removed. */
static int ran(const char *go, const char *suffix)
{
    char path[4200], text[16] = "";
    snprintf(path, sizeof(path), "%s%s", go, suffix);
    FILE *f = fopen(path, "r");
    int ok = f != NULL && fgets(text, sizeof(text), f) != NULL && strcmp(text, "ran") == 0;
    if (f != NULL)
        fclose(f);
    unlink(path);
    return ok;
}

typedef struct handoff {
    const char *agent, *in, *out;
    eddy_plan *plan;
    int rc;
} handoff;

/* Load handoff's agent into a new plan (NULL on failure). */
static void *load_plan(void *arg)
{
    handoff *h = arg;
    eddy_error *err = NULL;
    h->plan = eddy_plan_new();
    if (h->plan == NULL || eddy_plan_load_python(h->plan, h->agent, NULL, &err) != EDDY_OK) {
        fprintf(stderr, "load: %s\n", err != NULL ? eddy_error_message(err) : "no memory");
        eddy_error_free(err);
        eddy_plan_free(h->plan);
        h->plan = NULL;
    }
    return NULL;
}

/* Run handoff's plan over its input in a runtime, and free both. */
static void *run_and_free(void *arg)
{
    handoff *h = arg;
    eddy_config *conf = eddy_config_new();
    h->rc = eddy_config_set(conf, "input", h->in, NULL);
    if (h->rc == EDDY_OK)
        h->rc = eddy_config_set(conf, "output", h->out, NULL);
    eddy_error *err = NULL;
    eddy_runtime *rt = h->rc == EDDY_OK ? eddy_runtime_new(h->plan, conf, &err) : NULL;
    eddy_config_free(conf);
    if (rt == NULL) {
        fprintf(stderr, "runtime: %s\n", err != NULL ? eddy_error_message(err) : "config");
        eddy_error_free(err);
        eddy_plan_free(h->plan);
        h->rc = -1;
        return NULL;
    }
    h->rc = eddy_runtime_run(rt);
    eddy_runtime_free(rt); /* frees the plan: the last one finalises */
    return NULL;
}

/*
 * A plan loaded on one thread and freed (with its runtime) on another, the
 * agent having imported threading on the loading thread: the finalisation
 * waited for ever for that thread's end (CPython 3.11's threading._shutdown
 * joins the main thread's lock when it runs on another thread). Then the
 * other way round, the loading thread gone by then; the interpreter is
 * initialised again for it. Either way the agent's non-daemon thread is
 * waited for, the main thread is seen to end, and the atexit handler runs.
 * This relies on a private part of CPython 3.11's threading (see
 * process.c); a Python whose threading changed hangs here, and the test
 * fails when the child it runs in has hung for 30 s.
 */
static int free_on_another_thread_child(void)
{
    char *agent = write_temp(".py", threading_agent_py);
    char *in = write_inputs(3, 2);
    char *out = write_temp(".out", "");
    char go[4096];
    snprintf(go, sizeof(go), "%s.go", agent);
    setenv("EDDY_TEST_GO", go, 1);
    int rc = 0;
    for (int round = 0; round < 2 && rc == 0; round++) {
        handoff h = {agent, in, out, NULL, -1};
        pthread_t t;
        if (round == 0) {
            load_plan(&h);
            if (h.plan == NULL)
                return 2;
            if (pthread_create(&t, NULL, run_and_free, &h) != 0 || pthread_join(t, NULL) != 0)
                return 3;
        } else {
            if (pthread_create(&t, NULL, load_plan, &h) != 0 || pthread_join(t, NULL) != 0)
                return 3;
            if (h.plan == NULL)
                return 2;
            run_and_free(&h);
        }
        if (h.rc != EDDY_OK || Py_IsInitialized())
            rc = 4;
        else if (!ran(go, ".slow"))
            rc = 5; /* the non-daemon thread was not waited for */
        else if (!ran(go, ".main"))
            rc = 6; /* the main thread was not seen to end */
        else if (!ran(go, ".atexit"))
            rc = 7;
    }
    unsetenv("EDDY_TEST_GO");
    unlink(agent);
    unlink(in);
    unlink_output(out);
    free(out);
    free(agent);
    free(in);
    return rc;
}

static void test_free_on_another_thread(void **state)
{
    (void)state;
    run_in_child(free_on_another_thread_child, 30);
}

/* Two threads, each with its own plan, meet at a barrier before they load
 * and before they free. */
typedef struct pair_thread {
    handoff h;
    pthread_barrier_t *meet;
} pair_thread;

static void *load_run_free(void *arg)
{
    pair_thread *p = arg;
    pthread_barrier_wait(p->meet);
    load_plan(&p->h);
    if (p->h.plan == NULL) {
        pthread_barrier_wait(p->meet);
        return NULL;
    }
    eddy_config *conf = eddy_config_new();
    eddy_config_set(conf, "input", p->h.in, NULL);
    eddy_config_set(conf, "output", p->h.out, NULL);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p->h.plan, conf, &err);
    eddy_config_free(conf);
    if (rt == NULL) {
        fprintf(stderr, "runtime: %s\n", err != NULL ? eddy_error_message(err) : "?");
        eddy_error_free(err);
        eddy_plan_free(p->h.plan);
        pthread_barrier_wait(p->meet);
        return NULL;
    }
    p->h.rc = eddy_runtime_run(rt);
    pthread_barrier_wait(p->meet);
    eddy_runtime_free(rt); /* and the plan: one of the two finalises */
    return NULL;
}

/*
 * Two threads load a Python agent each at once, run it and free their
 * runtimes at once, a few times over: the second load went on before the
 * first had initialised the interpreter (and crashed), and the two frees
 * raced on the count of the interpreter's users (ThreadSanitizer saw it;
 * one lost finalised never, two finalised twice). In a child process, with
 * a timeout.
 */
static int concurrent_loads_child(void)
{
    /* Each action starts a non-daemon thread that marks a file a little
     * later: the finalisation must wait for them (it did not when threading
     * took a thread other than the one that initialised Python for its main
     * thread: that thread's state went after the load, which let
     * threading._shutdown() find the main thread ended, or fail an assert,
     * and join nothing). */
    const char *agent_fmt = "import logging, threading, time\n"
                            "from eddy import Agent, InputEvent, action\n"
                            "log = logging.getLogger(__name__)\n"
                            "def mark():\n"
                            "    time.sleep(0.2)\n"
                            "    with open(%s, 'a') as f:\n"
                            "        f.write('x')\n"
                            "class A(Agent):\n"
                            "    @action(InputEvent)\n"
                            "    @staticmethod\n"
                            "    def first(event, ctx):\n"
                            "        log.debug('%%s', event.input)\n"
                            "        threading.Thread(target=mark, daemon=False).start()\n";
    char *marks[2] = {write_temp(".mark", ""), write_temp(".mark", "")};
    char *agents[2];
    for (int i = 0; i < 2; i++) {
        char quoted[128], text[1024];
        snprintf(quoted, sizeof(quoted), "'%s'", marks[i]);
        snprintf(text, sizeof(text), agent_fmt, quoted);
        agents[i] = write_temp(".py", text);
    }
    char *in = write_inputs(4, 2);
    char *outs[2] = {write_temp(".out", ""), write_temp(".out", "")};
    /* In rounds 2 and 3, this thread first loads an agent that imports no
     * threading, so that Python is initialised here and threading imported
     * by a pair thread; it frees that plan after the pair's (round 2: the
     * finalisation is here) or with them (round 3). */
    char *plain = write_temp(".py", "from eddy import InputEvent, action\n"
                                    "@action(InputEvent)\n"
                                    "def first(event, ctx):\n"
                                    "    pass\n");
    pthread_barrier_t meet;
    pthread_barrier_init(&meet, NULL, 3);
    int rc = 0;
    for (int round = 0; round < 4 && rc == 0; round++) {
        pair_thread p[2];
        pthread_t t[2];
        handoff here = {plain, in, NULL, NULL, -1};
        if (round >= 2 && (load_plan(&here), here.plan == NULL))
            return 6;
        for (int i = 0; i < 2; i++) {
            p[i] = (pair_thread){{agents[i], in, outs[i], NULL, -1}, &meet};
            if (pthread_create(&t[i], NULL, load_run_free, &p[i]) != 0)
                return 2;
        }
        pthread_barrier_wait(&meet); /* they load */
        pthread_barrier_wait(&meet); /* they free */
        if (round == 3)
            eddy_plan_free(here.plan);
        for (int i = 0; i < 2; i++) {
            pthread_join(t[i], NULL);
            if (p[i].h.rc != EDDY_OK)
                rc = 3;
        }
        if (round == 2)
            eddy_plan_free(here.plan);
        if (rc == 0 && Py_IsInitialized())
            rc = 4; /* a lost release */
        for (int i = 0; i < 2 && rc == 0; i++) {
            struct stat st;
            /* Each of the runs' actions (4 inputs) started one. */
            if (stat(marks[i], &st) != 0 || st.st_size != 4 * (round + 1))
                rc = 5; /* a thread the finalisation did not wait for */
        }
    }
    pthread_barrier_destroy(&meet);
    for (int i = 0; i < 2; i++) {
        unlink(agents[i]);
        free(agents[i]);
        unlink(marks[i]);
        free(marks[i]);
        unlink_output(outs[i]);
        free(outs[i]);
    }
    unlink(plain);
    free(plain);
    unlink(in);
    free(in);
    return rc;
}

static void test_concurrent_loads(void **state)
{
    (void)state;
    run_in_child(concurrent_loads_child, 60);
}

int main(void)
{
    const struct CMUnitTest conversion[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_errors_name_the_place),
        cmocka_unit_test(test_function_ids),
        cmocka_unit_test(test_exception_journal),
    };
    const struct CMUnitTest runs[] = {
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_failed_load_leaves_the_plan),
        cmocka_unit_test(test_run_python_agent),
        cmocka_unit_test(test_worker_thread_states),
    };
    const struct CMUnitTest process[] = {
        cmocka_unit_test(test_no_hook_no_change),
        cmocka_unit_test(test_signal_hook),
        cmocka_unit_test(test_finalize_hook),
        cmocka_unit_test(test_hold_keeps_the_interpreter),
        cmocka_unit_test(test_python_warnings_reach_the_log_hook),
        cmocka_unit_test(test_skip_thread_joins),
    };
    const struct CMUnitTest threads[] = {
        cmocka_unit_test(test_free_on_another_thread),
        cmocka_unit_test(test_concurrent_loads),
    };
    int failed = cmocka_run_group_tests_name("conversion", conversion, setup_py, teardown_py);
    failed += cmocka_run_group_tests_name("runs", runs, NULL, NULL);
    failed += cmocka_run_group_tests_name("process", process, NULL, NULL);
    failed += cmocka_run_group_tests_name("threads", threads, NULL, NULL);
    return failed;
}
