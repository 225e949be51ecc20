#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "exec/durable.h"
#include "util/fault.h"
#include "util/jalloc.h"

/*
 * The cache of freed blocks under jansson's allocator (src/util/jalloc.c):
 * installed at load in builds that have it, held to the thread's budget,
 * reusing a freed block for the next value of its size, interchangeable
 * with malloc and free, and emptied when its thread exits; and the count
 * of jansson's allocation failures, which tells the parsers' callers a
 * parse that ran out of memory from a text that does not parse.
 */

static char self_path[4096];

static void test_installed_where_built(void **state)
{
    (void)state;
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    assert_int_equal(eddy__jalloc_installed(), EDDY__JALLOC_BUILT);
    assert_int_equal(eddy__jalloc_counting(), 1);
    /* Without the cache, malloc that counts its failures. */
    assert_true(m != malloc);
    if (EDDY__JALLOC_BUILT)
        assert_true(f != free);
    else
        assert_true(f == free);
}

/* EDDY_JSON_CACHE=0 turns the cache off, not the count of failures: this
 * program run again with it says what it found. */
static void test_off_by_environment(void **state)
{
    (void)state;
    char cmd[4096 + 64];
    snprintf(cmd, sizeof cmd, "EDDY_JSON_CACHE=0 '%s' --report-installed", self_path);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 12); /* not installed, counting */
    snprintf(cmd, sizeof cmd, "EDDY_JSON_CACHE=1 '%s' --report-installed", self_path);
    st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 12 + EDDY__JALLOC_BUILT);
}

/* A failed allocation of jansson's is counted on its thread, with the cache
 * and without it. */
static void test_failures_counted(void **state)
{
    (void)state;
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    unsigned before = eddy__jalloc_failures;
    void *p = m(100);
    assert_non_null(p);
    f(p);
    assert_int_equal(eddy__jalloc_failures, before);
    if (EDDY__JALLOC_BUILT) { /* (sanitizers abort on such a request) */
        assert_null(m(SIZE_MAX));
        assert_int_equal(eddy__jalloc_failures, before + 1);
    }
#ifdef EDDY_TEST_HOOKS
    before = eddy__jalloc_failures;
    eddy__fault_set("alloc.json:1");
    assert_null(json_string("not made"));
    eddy__fault_set(NULL);
    assert_int_equal(eddy__jalloc_failures, before + 1);
    /* From the cache, too, when a block is not in it. */
    eddy__jalloc_budget(64 * 1024);
    before = eddy__jalloc_failures;
    eddy__fault_set("alloc.json:1");
    assert_null(json_string("not made"));
    eddy__fault_set(NULL);
    assert_int_equal(eddy__jalloc_failures, before + 1);
    eddy__jalloc_budget(0);
#endif
}

/* Every n-th allocation of decode's parse failing: EDDY_ENOMEM while the
 * count says so, then EDDY_OK past the last one; never EDDY_ESTATE. */
static void check_decoder(int (*decode)(const char *, json_t **), const char *text)
{
#ifdef EDDY_TEST_HOOKS
    int nomem = 0;
    for (int n = 1;; n++) {
        char rule[32];
        snprintf(rule, sizeof rule, "alloc.json:%d", n);
        eddy__fault_set(rule);
        unsigned failed = eddy__jalloc_failures;
        json_t *v = NULL;
        int rc = decode(text, &v);
        int fired = eddy__jalloc_failures != failed;
        eddy__fault_set(NULL);
        if (!fired) {
            assert_int_equal(rc, EDDY_OK);
            assert_non_null(v);
            json_decref(v);
            break;
        }
        assert_int_equal(rc, EDDY_ENOMEM);
        assert_null(v);
        nomem++;
        assert_true(n < 1000);
    }
    assert_true(nomem >= 2);
#else
    (void)decode;
    (void)text;
#endif
}

/* The decoders of what a state holds tell a record that does not decode
 * (damaged: EDDY_ESTATE) from one that could not for want of memory. */
static void test_state_decoders_out_of_memory(void **state)
{
    (void)state;
#ifndef EDDY_TEST_HOOKS
    skip();
#endif
    check_decoder(eddy__durable_decode_memory, "{\"a\":{\"b\":[1,2,\"three\"]},\"c\":\"d\"}");
    check_decoder(eddy__durable_decode_pending, "{\"key\":\"k\",\"list\":[1,{\"x\":2}]}");
    check_decoder(eddy__durable_decode_result,
                  "{\"answer\":[42,\"forty-two, in more than 16 bytes\"]}");
    check_decoder(eddy__durable_decode_done,
                  "{\"order\":3,\"events\":[{\"type\":\"Next\",\"id\":\"0123456789abcdef\","
                  "\"attrs\":{\"n\":1}}],\"stm\":[]}");
    /* Damaged still is damaged. */
    json_t *v = NULL;
    assert_int_equal(eddy__durable_decode_memory("{\"a\":", &v), EDDY_ESTATE);
    assert_int_equal(eddy__durable_decode_result("[1,", &v), EDDY_ESTATE);
    assert_int_equal(eddy__durable_decode_done("{\"order\":-1,\"events\":[]}", &v), EDDY_ESTATE);
    assert_null(v);
}

static void test_budget_holds(void **state)
{
    (void)state;
    if (!EDDY__JALLOC_BUILT)
        skip();
    eddy__jalloc_budget(4096);
    assert_int_equal(eddy__jalloc_cached(), 0);
    /* Values of every class, and some larger than any. */
    for (int round = 0; round < 3; round++) {
        json_t *v[400];
        char text[400];
        memset(text, 'x', sizeof text);
        for (int i = 0; i < 400; i++)
            v[i] = json_stringn(text, (size_t)i);
        for (int i = 0; i < 400; i++)
            json_decref(v[i]);
        assert_true(eddy__jalloc_cached() > 0);
        assert_true(eddy__jalloc_cached() <= 4096);
    }
    eddy__jalloc_budget(0);
    assert_int_equal(eddy__jalloc_cached(), 0);
    /* Without a budget nothing is kept. */
    json_decref(json_string("not kept"));
    assert_int_equal(eddy__jalloc_cached(), 0);
}

static void test_freed_block_is_reused(void **state)
{
    (void)state;
    if (!EDDY__JALLOC_BUILT)
        skip();
    eddy__jalloc_budget(64 * 1024);
    json_t *a = json_integer(1);
    json_decref(a);
    json_t *b = json_integer(2);
    assert_ptr_equal(a, b); /* the same block, from the cache */
    json_decref(b);
    json_t *o = json_object();
    assert_int_equal(json_object_set_new(o, "k", json_string("v")), 0);
    json_decref(o);
    size_t held = eddy__jalloc_cached();
    json_t *o2 = json_object();
    assert_int_equal(json_object_set_new(o2, "k", json_string("v")), 0);
    assert_true(eddy__jalloc_cached() < held); /* taken from the cache */
    json_decref(o2);
    assert_int_equal(eddy__jalloc_cached(), held);
    eddy__jalloc_budget(0);
}

/* Blocks of malloc's freed through jansson's free, and blocks of jansson's
 * allocator given to free(): the cache adds no header. */
static void test_interchangeable_with_malloc(void **state)
{
    (void)state;
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    eddy__jalloc_budget(64 * 1024);
    for (size_t n = 0; n < 600; n += 7) {
        void *p = malloc(n);
        assert_non_null(p);
        memset(p, 0xab, n);
        f(p);
        void *q = m(n);
        assert_non_null(q);
        assert_true(malloc_usable_size(q) >= n);
        memset(q, 0xcd, n);
        free(q);
    }
    eddy__jalloc_budget(0);
}

typedef struct handover {
    json_t *values[2000];
    size_t cached;   /* what the freeing thread held before it let go */
    size_t after;    /* and after */
    int main_cached; /* the main thread's view while the thread had it */
} handover;

static void free_them(void *arg)
{
    handover *h = arg;
    eddy__jalloc_budget(512 * 1024);
    for (int i = 0; i < 2000; i++)
        json_decref(h->values[i]);
    h->cached = eddy__jalloc_cached();
    eddy__jalloc_budget(0);
    h->after = eddy__jalloc_cached();
}

/* Values made on one thread and freed on another join the cache of the
 * thread that has it, which gives them back to malloc when it lets go. */
static void test_other_thread_takes_and_lets_go(void **state)
{
    (void)state;
    if (!EDDY__JALLOC_BUILT)
        skip();
    static handover h;
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < 2000; i++) {
        h.values[i] = json_pack("{s:i, s:s}", "n", i, "text", "some text of a value");
        assert_non_null(h.values[i]);
    }
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, free_them, &h), 0);
    assert_int_equal(uv_thread_join(&t), 0);
    assert_true(h.cached > 256 * 1024);
    assert_true(h.cached <= 512 * 1024);
    assert_int_equal(h.after, 0);
    struct mallinfo2 after = mallinfo2();
    /* The blocks the thread held are free again (a little slack for what
     * creating the thread allocated). */
    assert_true(after.uordblks < before.uordblks + 64 * 1024);
}

static void take_if_free(void *arg)
{
    size_t *held = arg;
    eddy__jalloc_budget(64 * 1024); /* the main thread has it: not taken */
    json_decref(json_string("freed on a thread without the cache"));
    *held = eddy__jalloc_cached();
    eddy__jalloc_budget(0); /* lets go of nothing */
}

/* One thread has the cache at a time: another's frees go to free(). */
static void test_one_owner(void **state)
{
    (void)state;
    if (!EDDY__JALLOC_BUILT)
        skip();
    eddy__jalloc_budget(64 * 1024);
    json_decref(json_string("kept"));
    size_t mine = eddy__jalloc_cached();
    assert_true(mine > 0);
    size_t held = 1;
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, take_if_free, &held), 0);
    assert_int_equal(uv_thread_join(&t), 0);
    assert_int_equal(held, 0);
    assert_int_equal(eddy__jalloc_cached(), mine); /* still the main thread's */
    eddy__jalloc_budget(0);
    assert_int_equal(eddy__jalloc_cached(), 0);
}

/* Sizes past any class (and past SIZE_MAX - 7, where the class arithmetic
 * would wrap) go to malloc as asked. */
static void test_huge_sizes(void **state)
{
    (void)state;
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    eddy__jalloc_budget(64 * 1024);
    for (size_t n = 0; n <= 300; n++) {
        void *p = m(n);
        assert_non_null(p);
        assert_true(malloc_usable_size(p) >= n);
        f(p);
    }
    if (EDDY__JALLOC_BUILT) { /* (sanitizers abort on such a request) */
        assert_null(m(SIZE_MAX - 3));
        assert_null(m(SIZE_MAX));
    }
    eddy__jalloc_budget(0);
}

int main(int argc, char **argv)
{
    ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0)
        return 2;
    self_path[n] = '\0';
    if (argc > 1 && strcmp(argv[1], "--report-installed") == 0)
        return 10 + eddy__jalloc_installed() + 2 * eddy__jalloc_counting();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_installed_where_built),
        cmocka_unit_test(test_off_by_environment),
        cmocka_unit_test(test_failures_counted),
        cmocka_unit_test(test_state_decoders_out_of_memory),
        cmocka_unit_test(test_budget_holds),
        cmocka_unit_test(test_freed_block_is_reused),
        cmocka_unit_test(test_interchangeable_with_malloc),
        cmocka_unit_test(test_other_thread_takes_and_lets_go),
        cmocka_unit_test(test_one_owner),
        cmocka_unit_test(test_huge_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
