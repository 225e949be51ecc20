/*
 * Unit tests of plans: building one, and what a failed call leaves behind.
 *
 * Allocations are made to fail through the linker: this test is linked with
 * --wrap for malloc, calloc, realloc and strdup (tests/CMakeLists.txt), so the
 * library's calls to them come here, and fail_alloc(n) makes the n-th of them
 * from now return NULL. The test's own calls are left alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_action_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
