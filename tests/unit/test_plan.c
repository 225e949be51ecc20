/*
 * Unit tests of plans: building one, and what a failed call leaves behind.
 *
 * Allocations are made to fail through the linker: this test is linked with
 * --wrap for malloc, calloc, realloc and strdup (tests/CMakeLists.txt), so the
 * library's calls to them come here, and fail_alloc(n) makes the n-th of them
 * from now return NULL. The test's own calls are left alone.
 *
 * Also: every failure of a load, and of eddy_runtime_new() on the plan, sets
 * *err, and a failed load leaves the plan as it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/plan.h"

/* ---------------------------------------------------------------- failing allocations */

static int alloc_countdown; /* 0: none fails; n: the n-th from now fails */

static void fail_alloc(int n)
{
    alloc_countdown = n;
}

static int alloc_fails(void)
{
    return alloc_countdown > 0 && --alloc_countdown == 0;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return alloc_fails() ? NULL : __real_strdup(s);
}

/* ---------------------------------------------------------------- building */

static int nop(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return EDDY_OK;
}

/* Number of actions that type triggers (0 when it has no route). */
static size_t route_n(const eddy_plan *p, const char *type)
{
    const eddy__route *r = eddy__plan_route(p, type);
    return r != NULL ? r->n : 0;
}

/*
 * A failed eddy_plan_add_action() leaves the plan as it was, whichever of its
 * allocations fails: no route keeps the freed action (a route it joined, or
 * one it created), so adding it again and freeing the plan are safe.
 */
static void test_add_action_fails_cleanly(void **state)
{
    (void)state;
    static const char *const on_a[] = {"A", NULL};
    static const char *const on_abc[] = {"A", "B", "A", "C", NULL};
    eddy_plan *p = eddy_plan_new();
    assert_non_null(p);
    assert_int_equal(eddy_plan_add_action(p, "first", on_a, nop, NULL), EDDY_OK);
    const eddy__route *ra = eddy__plan_route(p, "A");
    int failures = 0;
    for (int n = 1;; n++) {
        fail_alloc(n);
        int rc = eddy_plan_add_action(p, "second", on_abc, nop, NULL);
        int failed = alloc_countdown == 0;
        fail_alloc(0);
        if (rc == EDDY_OK) {
            assert_false(failed);
            break;
        }
        assert_true(failed);
        assert_int_equal(rc, EDDY_ENOMEM);
        failures++;
        assert_int_equal(eddy_plan_action_count(p), 1);
        assert_null(eddy_plan_action_name(p, 1));
        assert_ptr_equal(eddy__plan_route(p, "A"), ra);
        assert_int_equal(route_n(p, "A"), 1);
        assert_null(eddy__plan_route(p, "B"));
        assert_null(eddy__plan_route(p, "C"));
    }
    assert_true(failures >= 8); /* each allocation of the call failed once */
    assert_int_equal(eddy_plan_action_count(p), 2);
    assert_int_equal(route_n(p, "A"), 2);
    assert_string_equal(eddy__plan_route(p, "A")->actions[1]->name, "second");
    assert_int_equal(route_n(p, "B"), 1);
    assert_int_equal(route_n(p, "C"), 1);
    assert_string_equal(eddy_plan_action_event_type(p, 1, 3), "C");
    eddy_plan_free(p);
}

/* ---------------------------------------------------------------- many actions */

/*
 * An agent may register 100,000 actions: a name is told apart from the others,
 * and an action joins its routes, without a look through the plan so far. Here
 * action i is "a<i>": it listens to S<i % 7>, to T<i> too when i % 3 == 0, to
 * S<i % 7> a second time when i % 5 == 0, and to InputEvent when i % 100 == 0.
 */
#define MANY 20000

static int add_many(eddy_plan *p, size_t i)
{
    char name[32], own[32], shared[32];
    const char *types[5];
    size_t n = 0;
    snprintf(name, sizeof(name), "a%zu", i);
    snprintf(own, sizeof(own), "T%zu", i);
    snprintf(shared, sizeof(shared), "S%zu", i % 7);
    types[n++] = shared;
    if (i % 3 == 0)
        types[n++] = own;
    if (i % 5 == 0)
        types[n++] = shared;
    if (i % 100 == 0)
        types[n++] = EDDY_INPUT_EVENT;
    types[n] = NULL;
    return eddy_plan_add_action(p, name, types, nop, NULL);
}

/* p holds actions a0 to a<n - 1> of add_many(), in order, and each route the
 * actions that listen to its type, once each, in registration order. */
static void expect_many(const eddy_plan *p, size_t n)
{
    char name[32], type[32];
    assert_int_equal(eddy_plan_action_count(p), n);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "a%zu", i);
        assert_string_equal(eddy_plan_action_name(p, i), name);
        const eddy__action *a = eddy__plan_find(p, name);
        assert_non_null(a);
        assert_int_equal(a->index, i);
        assert_ptr_equal(a, p->actions[i]);
    }
    snprintf(name, sizeof(name), "a%zu", n);
    assert_null(eddy__plan_find(p, name));
    for (size_t k = 0; k < 7; k++) {
        snprintf(type, sizeof(type), "S%zu", k);
        const eddy__route *r = eddy__plan_route(p, type);
        assert_non_null(r);
        assert_int_equal(r->n, (n - k + 6) / 7);
        for (size_t j = 0; j < r->n; j++)
            assert_int_equal(r->actions[j]->index, k + 7 * j);
    }
    for (size_t i = 0; i < MANY; i++) {
        snprintf(type, sizeof(type), "T%zu", i);
        const eddy__route *r = eddy__plan_route(p, type);
        if (i >= n || i % 3 != 0) {
            assert_null(r);
            continue;
        }
        assert_non_null(r);
        assert_int_equal(r->n, 1);
        assert_int_equal(r->actions[0]->index, i);
    }
    const eddy__route *r = eddy__plan_route(p, EDDY_INPUT_EVENT);
    assert_non_null(r);
    assert_int_equal(r->n, (n + 99) / 100);
    for (size_t j = 0; j < r->n; j++)
        assert_int_equal(r->actions[j]->index, 100 * j);
}

/* A name taken already is refused, whether it is the first, last or middle
 * one, and the refusal changes nothing. */
static void expect_taken(eddy_plan *p, const char *name)
{
    static const char *const on_x[] = {"X", NULL};
    size_t n = eddy_plan_action_count(p);
    char why[128];
    snprintf(why, sizeof(why), "action '%s' is in the plan already: names are unique", name);
    assert_int_equal(eddy_plan_add_action(p, name, on_x, nop, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, why);
    assert_int_equal(eddy_plan_action_count(p), n);
    assert_null(eddy__plan_route(p, "X"));
}

static void test_many_actions(void **state)
{
    (void)state;
    eddy_plan *p = eddy_plan_new();
    assert_non_null(p);
    for (size_t i = 0; i < MANY; i++) {
        assert_int_equal(add_many(p, i), EDDY_OK);
        if (i == MANY / 2) {
            expect_taken(p, "a0");
            expect_taken(p, "a5000");
            expect_taken(p, "a10000");
        }
    }
    expect_taken(p, "a0");
    expect_taken(p, "a10000");
    expect_taken(p, "a19999");
    expect_many(p, MANY);
    /* The fingerprint an eddy that looked through the names gave this plan:
     * a state keeps it, and resumes only with the same. */
    char fp[17], again[17];
    eddy__plan_fingerprint(p, fp);
    assert_string_equal(fp, "ec2fe1e599ef0b1d");
    /* Truncated, the plan is as it was with that many actions: the names
     * taken out can be added again, which makes the same plan. */
    eddy__plan_truncate(p, MANY / 2);
    expect_many(p, MANY / 2);
    for (size_t i = MANY / 2; i < MANY; i++)
        assert_int_equal(add_many(p, i), EDDY_OK);
    expect_many(p, MANY);
    eddy__plan_fingerprint(p, again);
    assert_string_equal(again, fp);
    eddy__plan_truncate(p, 0);
    assert_int_equal(eddy_plan_action_count(p), 0);
    assert_null(eddy__plan_find(p, "a0"));
    assert_null(eddy__plan_route(p, "S0"));
    assert_null(eddy__plan_route(p, EDDY_INPUT_EVENT));
    assert_int_equal(add_many(p, 0), EDDY_OK);
    eddy_plan_free(p);
}

/* ---------------------------------------------------------------- descriptions */

/* A plan of lines "name type type ...", its description and fingerprint. */
typedef struct described {
    char *text;
    char fp[17];
} described;

static described describe(const char *const *lines)
{
    eddy_plan *p = eddy_plan_new();
    described d = {0};
    assert_non_null(p);
    for (; *lines != NULL; lines++) {
        char buf[256];
        const char *f[8];
        size_t n = 0;
        snprintf(buf, sizeof(buf), "%s", *lines);
        for (char *s = strtok(buf, " "); s != NULL && n < 7; s = strtok(NULL, " "))
            f[n++] = s;
        f[n] = NULL;
        assert_int_equal(eddy_plan_add_action(p, f[0], f + 1, nop, NULL), EDDY_OK);
    }
    assert_int_equal(eddy__plan_describe(p, &d.text), EDDY_OK);
    eddy__plan_fingerprint(p, d.fp);
    eddy_plan_free(p);
    return d;
}

/* What eddy__plan_differences() says from the plan was to the plan now. */
static void expect_differences(const char *const *was, const char *const *now, const char *want)
{
    described a = describe(was), b = describe(now);
    char *got = eddy__plan_differences(a.text, a.fp, b.text);
    if (want == NULL && got != NULL)
        fail_msg("expected nothing, got \"%s\"", got);
    if (want != NULL && (got == NULL || strcmp(got, want) != 0))
        fail_msg("expected \"%s\", got \"%s\"", want, got != NULL ? got : "(null)");
    free(got);
    free(a.text);
    free(b.text);
}

static void test_describe(void **state)
{
    (void)state;
    static const char *const plan[] = {"triage Scored Flagged", "say\"\\ \x01", NULL};
    described d = describe(plan);
    assert_string_equal(d.text, "[{\"name\":\"triage\",\"event_types\":[\"Scored\",\"Flagged\"]},"
                                "{\"name\":\"say\\\"\\\\\",\"event_types\":[\"\\u0001\"]}]");
    free(d.text);
    /* Whichever allocation fails, the call says so. */
    static const char *const types[] = {"Scored", "Flagged", NULL};
    eddy_plan *p = eddy_plan_new();
    assert_int_equal(eddy_plan_add_action(p, "triage", types, nop, NULL), EDDY_OK);
    for (int n = 1;; n++) {
        char *text = (char *)"x";
        fail_alloc(n);
        int rc = eddy__plan_describe(p, &text);
        int failed = alloc_countdown == 0;
        fail_alloc(0);
        if (!failed) {
            assert_int_equal(rc, EDDY_OK);
            free(text);
            break;
        }
        assert_int_equal(rc, EDDY_ENOMEM);
        assert_null(text);
    }
    eddy_plan_free(p);
}

static void test_differences(void **state)
{
    (void)state;
    static const char *const was[] = {"triage Scored", "notify Done", "log A B", NULL};
    static const char *const now[] = {"triage Scored Flagged", "log A B", "score Input", NULL};
    expect_differences(was, now,
                       "action 'triage' listens to Scored, Flagged instead of Scored; action "
                       "'score' is new; action 'notify' was removed");
    /* The order of event types counts, and the order of the actions both have. */
    static const char *const swapped[] = {"log B A", "triage Scored", "extra X", NULL};
    expect_differences(was, swapped,
                       "action 'log' listens to B, A instead of A, B; action 'extra' is new; "
                       "action 'notify' was removed; the actions are in another order: 'log', "
                       "'triage' instead of 'triage', 'log'");
    expect_differences(was, was, NULL);

    /* Ten clauses at most, then a count; and ten names in the order clause. */
    static const char *const many[] = {"a0 X", "a1 X", "a2 X", "a3 X",  "a4 X",  "a5 X", "a6 X",
                                       "a7 X", "a8 X", "a9 X", "a10 X", "a11 X", NULL};
    static const char *const many_changed[] = {"a11 X", "a10 X", "a9 X", "a8 X", "a7 X",  "a6 X",
                                               "a5 X",  "a4 X",  "a3 X", "a2 X", "a1 X",  "a0 Y",
                                               "n0 X",  "n1 X",  "n2 X", "n3 X", "n4 X",  "n5 X",
                                               "n6 X",  "n7 X",  "n8 X", "n9 X", "n10 X", NULL};
    expect_differences(many, many_changed,
                       "action 'a0' listens to Y instead of X; action 'n0' is new; action 'n1' is "
                       "new; action 'n2' is new; action 'n3' is new; action 'n4' is new; action "
                       "'n5' is new; action 'n6' is new; action 'n7' is new; action 'n8' is new; "
                       "and 3 more differences");
    static const char *const reversed[] = {"a11 X", "a10 X", "a9 X", "a8 X", "a7 X", "a6 X", "a5 X",
                                           "a4 X",  "a3 X",  "a2 X", "a1 X", "a0 X", NULL};
    expect_differences(many, reversed,
                       "the actions are in another order: 'a11', 'a10', 'a9', 'a8', 'a7', 'a6', "
                       "'a5', 'a4', 'a3', 'a2', ... instead of 'a0', 'a1', 'a2', 'a3', 'a4', 'a5', "
                       "'a6', 'a7', 'a8', 'a9', ...");

    /* A description is believed only when it gives the fingerprint kept with it. */
    described a = describe(was), b = describe(now);
    assert_null(eddy__plan_differences(a.text, b.fp, b.text));
    assert_null(eddy__plan_differences(a.text, NULL, b.text));
    assert_null(eddy__plan_differences(NULL, a.fp, b.text));
    static const char *const not_descriptions[] = {"",
                                                   "{}",
                                                   "[1]",
                                                   "[{\"name\":\"triage\"}]",
                                                   "[{\"name\":1,\"event_types\":[]}]",
                                                   "[{\"name\":\"t\",\"event_types\":[1]}]",
                                                   "[{\"name\":\"t\\u0000\",\"event_types\":[]}]"};
    for (size_t i = 0; i < sizeof(not_descriptions) / sizeof(*not_descriptions); i++) {
        assert_null(eddy__plan_differences(not_descriptions[i], a.fp, b.text));
        assert_null(eddy__plan_differences(a.text, a.fp, not_descriptions[i]));
    }
    /* A name that is not UTF-8 (a plan cannot have one now, but an older
     * eddy wrote one as it was) is not read back. */
    static const char latin1[] = "[{\"name\":\"caf\xe9\",\"event_types\":[\"Scored\"]}]";
    assert_null(eddy__plan_differences(a.text, a.fp, latin1));
    free(a.text);
    free(b.text);
}

/* ---------------------------------------------------------------- loading */

/* The path of test agent name (built in EDDY_TEST_AGENTS). */
static void agent_path(char *buf, size_t size, const char *name)
{
    const char *dir = getenv("EDDY_TEST_AGENTS");
    snprintf(buf, size, "%s/%s.so", dir != NULL ? dir : "tests/agents", name);
}

/* Expect rc and an error of type type whose message holds text; free it. */
static void expect_error(int rc, int want, eddy_error **err, const char *type, const char *text)
{
    assert_int_equal(rc, want);
    assert_non_null(*err);
    assert_string_equal(eddy_error_type(*err), type);
    if (strstr(eddy_error_message(*err), text) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", eddy_error_message(*err), text);
    eddy_error_free(*err);
    *err = NULL;
}

static void test_load_errors_are_set(void **state)
{
    (void)state;
    eddy_plan *p = eddy_plan_new();
    eddy_error *err = NULL;
    expect_error(eddy_plan_load_shared(NULL, "agent.so", &err), EDDY_EINVAL, &err, "plan",
                 "plan is NULL");
    expect_error(eddy_plan_load_shared(p, NULL, &err), EDDY_EINVAL, &err, "plan", "path is NULL");
    expect_error(eddy_plan_load_python(NULL, "agent.py", NULL, &err), EDDY_EINVAL, &err, "plan",
                 "plan is NULL");
    expect_error(eddy_plan_load_python(p, NULL, NULL, &err), EDDY_EINVAL, &err, "plan",
                 "path is NULL");
    /* A bare name is made "./agent.so" first. */
    fail_alloc(1);
    int rc = eddy_plan_load_shared(p, "agent.so", &err);
    fail_alloc(0);
    expect_error(rc, EDDY_ENOMEM, &err, "memory", "agent.so");
    /* So a library that dlopen() finds on its path (libm, loaded already)
     * is looked for in the current directory only, where it is not. */
    expect_error(eddy_plan_load_shared(p, "libm.so.6", &err), EDDY_EPLAN, &err, "plan",
                 "./libm.so.6: cannot open shared object file");
    assert_int_equal(eddy_plan_action_count(p), 0);
    eddy_plan_free(p);
}

#ifndef EDDY_WITH_PYTHON
/* Built without Python: a Python agent is refused, naming its file and why,
 * and the plan keeps what it had; a hold of the interpreter is refused too,
 * and its release does nothing. */
static void test_python_agent_refused_without_python(void **state)
{
    (void)state;
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    eddy_plan *p = eddy_plan_new();
    eddy_error *err = NULL;
    assert_int_equal(eddy_plan_add_action(p, "mine", on_input, nop, NULL), EDDY_OK);
    expect_error(eddy_plan_load_python(p, "agent.py", "Agent", &err), EDDY_ENOTSUP, &err, "plan",
                 "cannot load Python agent agent.py: this eddy was built without Python support");
    assert_int_equal(eddy_plan_action_count(p), 1);
    expect_error(eddy_python_hold(&err), EDDY_ENOTSUP, &err, "plan",
                 "this eddy was built without Python support");
    eddy_python_release();
    eddy_plan_free(p);
}
#endif

/* A load whose agent fails leaves the plan as it was: the actions its init
 * added are gone and the file is closed, so that another agent loads. */
static void test_failed_load_leaves_the_plan(void **state)
{
    (void)state;
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    char failing[4096], good[4096];
    agent_path(failing, sizeof(failing), "failing_init");
    agent_path(good, sizeof(good), "noinput");
    eddy_plan *p = eddy_plan_new();
    eddy_error *err = NULL;
    assert_int_equal(eddy_plan_add_action(p, "mine", on_input, nop, NULL), EDDY_OK);
    expect_error(eddy_plan_load_shared(p, failing, &err), EDDY_EPLAN, &err, "plan",
                 "eddy_agent_init() failed");
    assert_int_equal(eddy_plan_action_count(p), 1);
    assert_int_equal(route_n(p, EDDY_INPUT_EVENT), 1);
    assert_null(eddy__plan_route(p, "Half"));
    assert_null(p->dl);
    /* Adding no action is a failure even when the plan had some already. */
    setenv("EDDY_TEST_INIT", "empty", 1);
    int rc = eddy_plan_load_shared(p, failing, &err);
    unsetenv("EDDY_TEST_INIT");
    expect_error(rc, EDDY_EPLAN, &err, "plan", "registered no action");
    assert_null(p->dl);
    assert_int_equal(eddy_plan_load_shared(p, good, &err), EDDY_OK);
    assert_null(err);
    assert_int_equal(eddy_plan_action_count(p), 3);
    assert_string_equal(eddy_plan_action_name(p, 1), "foo");
    eddy_plan_free(p);
}

/* An init that fails with the code of its last eddy_plan_add_action() call,
 * which refused its action, fails with that action's name and the reason;
 * one that returns EDDY_EINVAL after a later call succeeded, without them. */
static void test_failed_init_names_the_refused_action(void **state)
{
    (void)state;
    char failing[4096];
    agent_path(failing, sizeof(failing), "failing_init");
    eddy_plan *p = eddy_plan_new();
    eddy_error *err = NULL;
    setenv("EDDY_TEST_INIT", "output", 1);
    int rc = eddy_plan_load_shared(p, failing, &err);
    expect_error(rc, EDDY_EPLAN, &err, "plan",
                 "eddy_agent_init() failed: invalid argument (eddy_plan_add_action: action "
                 "'audit' listens to OutputEvent, which never triggers actions");
    setenv("EDDY_TEST_INIT", "dup", 1);
    rc = eddy_plan_load_shared(p, failing, &err);
    expect_error(rc, EDDY_EPLAN, &err, "plan",
                 "(eddy_plan_add_action: action 'half' is in the plan already: names are "
                 "unique)");
    setenv("EDDY_TEST_INIT", "ignored", 1);
    rc = eddy_plan_load_shared(p, failing, &err);
    assert_non_null(err);
    assert_null(strstr(eddy_error_message(err), "eddy_plan_add_action"));
    expect_error(rc, EDDY_EPLAN, &err, "plan", "eddy_agent_init() failed: invalid argument");
    unsetenv("EDDY_TEST_INIT");
    assert_int_equal(eddy_plan_action_count(p), 0);
    /* The other refusals name the action (or the missing name) too. */
    static const char *const none[] = {NULL};
    static const char *const empty[] = {"", NULL};
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "x", none, nop, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "action 'x' has no event types: it needs at least one");
    assert_int_equal(eddy_plan_add_action(p, "x\n", empty, nop, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "action 'x\\x0a' listens to an empty event type");
    assert_int_equal(eddy_plan_add_action(p, "x", on_input, NULL, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "action 'x' has no function: fn is NULL");
    assert_int_equal(eddy_plan_add_action(p, "", on_input, nop, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "the name is empty");
    assert_int_equal(eddy_plan_add_action(p, NULL, on_input, nop, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "the name is NULL");
    assert_int_equal(eddy_plan_add_action(p, "x", on_input, nop, NULL), EDDY_OK);
    assert_string_equal(p->why, "");
    eddy_plan_free(p);
}

/* ---------------------------------------------------------------- runtime */

static void test_runtime_new_out_of_memory(void **state)
{
    (void)state;
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    eddy_plan *p = eddy_plan_new();
    eddy_config *c = eddy_config_new();
    eddy_error *err = NULL;
    assert_int_equal(eddy_plan_add_action(p, "mine", on_input, nop, NULL), EDDY_OK);
    fail_alloc(1); /* the runtime itself */
    eddy_runtime *rt = eddy_runtime_new(p, c, &err);
    fail_alloc(0);
    assert_null(rt);
    expect_error(EDDY_ENOMEM, EDDY_ENOMEM, &err, "memory", "out of memory");
    eddy_config_free(c);
    eddy_plan_free(p); /* taken on success only */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_action_fails_cleanly),
        cmocka_unit_test(test_many_actions),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_differences),
        cmocka_unit_test(test_load_errors_are_set),
#ifndef EDDY_WITH_PYTHON
        cmocka_unit_test(test_python_agent_refused_without_python),
#endif
        cmocka_unit_test(test_failed_load_leaves_the_plan),
        cmocka_unit_test(test_failed_init_names_the_refused_action),
        cmocka_unit_test(test_runtime_new_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
