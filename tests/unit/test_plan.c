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
    assert_int_equal(eddy_plan_action_count(p), 0);
    eddy_plan_free(p);
}

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
        cmocka_unit_test(test_load_errors_are_set),
        cmocka_unit_test(test_failed_load_leaves_the_plan),
        cmocka_unit_test(test_runtime_new_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
