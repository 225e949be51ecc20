#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/memory.h"

/* ---------------------------------------------------------------- helpers */

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (j == NULL)
        fail_msg("bad JSON in test: %s (%s)", text, err.text);
    return j;
}

/* Compare got (a new reference, may be NULL; released) with expected JSON. */
static void check_json(json_t *got, const char *expected, int line)
{
    json_t *want = J(expected);
    if (!json_equal(got, want)) {
        char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        print_error("line %d: got %s, want %s\n", line, g ? g : "NULL", expected);
        free(g);
        json_decref(got);
        json_decref(want);
        fail();
    }
    json_decref(got);
    json_decref(want);
}
#define CHECK_JSON(got, expected) check_json((got), (expected), __LINE__)
/* Compare a borrowed node. */
#define CHECK_BORROWED(got, expected) check_json(json_incref((json_t *)(got)), (expected), __LINE__)

/* A path of about n bytes: "s0.s1.s2...". */
static char *long_path(size_t n)
{
    char *p = malloc(n + 16);
    assert_non_null(p);
    size_t len = 0;
    for (int i = 0; len < n; i++)
        len += (size_t)sprintf(p + len, "%ss%d", i ? "." : "", i);
    return p;
}

/* ---------------------------------------------------------------- paths */

static void test_path_valid(void **state)
{
    (void)state;
    assert_int_equal(eddy__mem_path_valid("a", 0), 1);
    assert_int_equal(eddy__mem_path_valid("a.b.c", 0), 1);
    assert_int_equal(eddy__mem_path_valid("with space.and-dash_$", 0), 1);
    assert_int_equal(eddy__mem_path_valid("caf\xc3\xa9.\xf0\x9f\x98\x80", 0), 1);
    assert_int_equal(eddy__mem_path_valid("", 0), 0);
    assert_int_equal(eddy__mem_path_valid("", 1), 1);
    assert_int_equal(eddy__mem_path_valid(NULL, 1), 0);
    const char *bad[] = {".",
                         "..",
                         "a..b",
                         "a.",
                         ".a",
                         "a.",
                         "a.b..",
                         "\xff",
                         "a.\xc3",
                         "\xc0\x80",
                         "\xed\xa0\x80" /* surrogate */,
                         "\xf4\x90\x80\x80" /* > U+10FFFF */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(eddy__mem_path_valid(bad[i], 0), 0);
        assert_int_equal(eddy__mem_path_valid(bad[i], 1), 0);
    }

    char *p = long_path(3000);
    assert_true(strlen(p) > 1024);
    assert_int_equal(eddy__mem_path_valid(p, 0), 1);
    strcat(p, ".");
    assert_int_equal(eddy__mem_path_valid(p, 0), 0);
    p[1500] = '.';
    p[1501] = '.';
    assert_int_equal(eddy__mem_path_valid(p, 0), 0);
    free(p);
}

static void test_long_path(void **state)
{
    (void)state;
    char *p = long_path(2000);
    json_t *root = json_object();
    assert_int_equal(eddy__mem_tree_set(root, p, json_integer(7)), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(root, p), "7");

    json_t *committed = json_object();
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_set(&v, p, json_integer(8)), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, p), "8");
    assert_int_equal(eddy__memview_exists(&v, p), 1);
    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(committed, p), "8");
    json_decref(committed);
    json_decref(root);
    free(p);
}

/* ---------------------------------------------------------------- trees */

static void test_tree_set_get(void **state)
{
    (void)state;
    json_t *root = json_object();
    assert_int_equal(eddy__mem_tree_set(root, "a.b.c", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__mem_tree_set(root, "a.d", json_string("x")), EDDY_OK);
    CHECK_BORROWED(root, "{\"a\": {\"b\": {\"c\": 1}, \"d\": \"x\"}}");
    CHECK_BORROWED(eddy__mem_tree_lookup(root, "a.b"), "{\"c\": 1}");
    assert_ptr_equal(eddy__mem_tree_lookup(root, ""), root);
    assert_null(eddy__mem_tree_lookup(root, "a.x"));
    assert_null(eddy__mem_tree_lookup(root, "a.d.x"));
    assert_null(eddy__mem_tree_lookup(root, "a..b"));

    /* A value over a value replaces it. */
    assert_int_equal(eddy__mem_tree_set(root, "a.d", json_integer(2)), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(root, "a.d"), "2");

    /* EPATH both ways; the tree does not change. */
    json_t *before = json_deep_copy(root);
    assert_int_equal(eddy__mem_tree_set(root, "a.d.x", json_integer(3)), EDDY_EPATH);
    assert_int_equal(eddy__mem_tree_set(root, "a.b", json_integer(3)), EDDY_EPATH);
    assert_int_equal(eddy__mem_tree_new_object(root, "a.d"), EDDY_EPATH);
    assert_int_equal(eddy__mem_tree_new_object(root, "a.d.e"), EDDY_EPATH);
    assert_true(json_equal(root, before));
    /* An object value replaces an object. */
    assert_int_equal(eddy__mem_tree_set(before, "a", J("{\"z\": 1}")), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(before, "a"), "{\"z\": 1}");

    /* new_object: kept when present, parents created. */
    assert_int_equal(eddy__mem_tree_new_object(root, "a.b"), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(root, "a.b"), "{\"c\": 1}");
    assert_int_equal(eddy__mem_tree_new_object(root, "n.m"), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(root, "n"), "{\"m\": {}}");

    /* Bad arguments; the value is stolen also then. */
    assert_int_equal(eddy__mem_tree_set(root, "", json_integer(1)), EDDY_EINVAL);
    assert_int_equal(eddy__mem_tree_set(root, "a.", J("{\"k\": [1]}")), EDDY_EINVAL);
    assert_int_equal(eddy__mem_tree_set(root, "a", NULL), EDDY_EINVAL);
    assert_int_equal(eddy__mem_tree_new_object(root, ".a"), EDDY_EINVAL);
    json_t *arr = json_array();
    assert_int_equal(eddy__mem_tree_set(arr, "a", json_integer(1)), EDDY_EINVAL);
    json_decref(arr);

    json_decref(before);
    json_decref(root);
}

static void test_tree_apply(void **state)
{
    (void)state;
    const char *start = "{\"a\": 5, \"b\": {\"c\": 1}, \"d\": 1}";
    json_t *root = J(start);

    /* Without force: stops at the first conflict, earlier updates stay. */
    json_t *log =
        J("[{\"p\": \"x\", \"v\": 1}, {\"p\": \"a.x\", \"v\": 1}, {\"p\": \"y\", \"v\": 1}]");
    assert_int_equal(eddy__mem_tree_apply(root, log, 0), EDDY_EPATH);
    CHECK_BORROWED(root, "{\"a\": 5, \"b\": {\"c\": 1}, \"d\": 1, \"x\": 1}");
    json_decref(log);

    /* With force: last writer wins in every direction. */
    log = J("[{\"p\": \"a.x\", \"v\": 1}, {\"p\": \"b\", \"v\": 2},"
            " {\"p\": \"d\", \"o\": true}, {\"p\": \"a\", \"o\": true}]");
    assert_int_equal(eddy__mem_tree_apply(root, log, 1), EDDY_OK);
    CHECK_BORROWED(root, "{\"a\": {\"x\": 1}, \"b\": 2, \"d\": {}, \"x\": 1}");
    json_decref(log);

    /* Object values are copied in; the log stays as it was. */
    log = J("[{\"p\": \"o\", \"v\": {\"k\": 1}}, {\"p\": \"o.z\", \"v\": 2}]");
    assert_int_equal(eddy__mem_tree_apply(root, log, 0), EDDY_OK);
    CHECK_BORROWED(eddy__mem_tree_lookup(root, "o"), "{\"k\": 1, \"z\": 2}");
    CHECK_BORROWED(log, "[{\"p\": \"o\", \"v\": {\"k\": 1}}, {\"p\": \"o.z\", \"v\": 2}]");
    json_decref(log);

    /* Malformed logs change nothing. */
    json_t *before = json_deep_copy(root);
    const char *bad[] = {
        "{}",
        "[1]",
        "[{\"p\": \"q\", \"v\": 1}, {\"v\": 1}]",
        "[{\"p\": \"q\", \"v\": 1}, {\"p\": \"a..b\", \"v\": 1}]",
        "[{\"p\": \"\", \"v\": 1}]",
        "[{\"p\": 3, \"v\": 1}]",
        "[{\"p\": \"q\", \"o\": false}]",
        "[{\"p\": \"q\", \"v\": 1, \"o\": true}]",
        "[{\"p\": \"q\", \"v\": 1, \"extra\": 1}]",
        "[{\"p\": \"q\\u0000r\", \"v\": 1}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        log = J(bad[i]);
        assert_int_equal(eddy__mem_tree_apply(root, log, 1), EDDY_EINVAL);
        assert_int_equal(eddy__mem_tree_apply(root, log, 0), EDDY_EINVAL);
        json_decref(log);
    }
    assert_true(json_equal(root, before));
    json_decref(before);

    /* An empty log is fine. */
    log = json_array();
    assert_int_equal(eddy__mem_tree_apply(root, log, 0), EDDY_OK);
    json_decref(log);
    json_decref(root);
}

/* ---------------------------------------------------------------- views */

static void test_view_basic(void **state)
{
    (void)state;
    json_t *committed = J("{\"v\": 5, \"o\": {\"k\": 1}}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_null(eddy__memview_updates(&v));

    assert_int_equal(eddy__memview_set(&v, "a.b.c", json_integer(1)), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, "a"), "{\"b\": {\"c\": 1}}");
    CHECK_JSON(eddy__memview_get(&v, "a.b.c"), "1");
    assert_null(eddy__memview_get(&v, "a.b.x"));
    assert_null(eddy__memview_get(&v, "a.b.c.d"));
    assert_int_equal(eddy__memview_exists(&v, "a.b"), 1);
    assert_int_equal(eddy__memview_exists(&v, "a.x"), 0);
    assert_int_equal(eddy__memview_exists(&v, "v"), 1);
    assert_int_equal(eddy__memview_exists(&v, "v.x"), 0);
    assert_int_equal(eddy__memview_exists(&v, ""), 1);
    assert_int_equal(eddy__memview_exists(&v, "a..b"), EDDY_EINVAL);

    /* Value over value replaces, in the view only. */
    assert_int_equal(eddy__memview_set(&v, "v", json_integer(6)), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, "v"), "6");
    CHECK_BORROWED(json_object_get(committed, "v"), "5");

    /* Merge with a committed object. */
    assert_int_equal(eddy__memview_set(&v, "o.n", json_integer(2)), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, "o"), "{\"k\": 1, \"n\": 2}");

    /* EPATH both ways, against committed and against the view's own writes. */
    const json_t *log = eddy__memview_updates(&v);
    size_t n = json_array_size(log);
    assert_int_equal(eddy__memview_set(&v, "v.x", json_integer(1)), EDDY_EPATH);
    assert_int_equal(eddy__memview_set(&v, "o", json_integer(1)), EDDY_EPATH);
    assert_int_equal(eddy__memview_set(&v, "a.b", json_integer(1)), EDDY_EPATH);
    assert_int_equal(eddy__memview_set(&v, "a.b.c.d", json_integer(1)), EDDY_EPATH);
    assert_int_equal(eddy__memview_new_object(&v, "v"), EDDY_EPATH);
    assert_int_equal(eddy__memview_new_object(&v, "a.b.c"), EDDY_EPATH);
    assert_int_equal(eddy__memview_new_object(&v, "v.x.y"), EDDY_EPATH);
    assert_int_equal(json_array_size(log), n);

    /* new_object: kept (committed or own), nothing logged. */
    assert_int_equal(eddy__memview_new_object(&v, "o"), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v, "a.b"), EDDY_OK);
    assert_int_equal(json_array_size(log), n);
    CHECK_JSON(eddy__memview_get(&v, "o"), "{\"k\": 1, \"n\": 2}");
    assert_int_equal(eddy__memview_new_object(&v, "e.f"), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, "e"), "{\"f\": {}}");
    assert_int_equal(json_array_size(log), n + 1);

    CHECK_JSON(eddy__memview_get(&v, ""), "{\"v\": 6, \"o\": {\"k\": 1, \"n\": 2},"
                                          " \"a\": {\"b\": {\"c\": 1}}, \"e\": {\"f\": {}}}");
    CHECK_BORROWED(committed, "{\"v\": 5, \"o\": {\"k\": 1}}");

    eddy__memview_reset(&v);
    json_decref(committed);
}

/* An object value replaces what stands at its path, an object included (a
 * Python dict set again in a later run); only a non-object value over an
 * object is refused. */
static void test_object_value_replaces_object(void **state)
{
    (void)state;
    json_t *committed = J("{\"o\": {\"k\": 1, \"d\": {\"e\": 2}}, \"s\": 3}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_set(&v, "o", J("{\"z\": 1}")), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v, "o"), "{\"z\": 1}");
    assert_int_equal(eddy__memview_exists(&v, "o.k"), 0);
    assert_int_equal(eddy__memview_set(&v, "s", J("{\"t\": 4}")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "o", json_integer(1)), EDDY_EPATH);
    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    CHECK_BORROWED(committed, "{\"o\": {\"z\": 1}, \"s\": {\"t\": 4}}");
    /* Again, as the next run would. */
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_set(&v, "o", J("{\"z\": 2}")), EDDY_OK);
    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    CHECK_BORROWED(committed, "{\"o\": {\"z\": 2}, \"s\": {\"t\": 4}}");
    json_decref(committed);
}

static void test_view_new_object_kept_unlogged(void **state)
{
    (void)state;
    json_t *committed = J("{\"o\": {\"k\": 1}}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_new_object(&v, "o"), EDDY_OK);
    assert_null(eddy__memview_updates(&v));
    assert_null(v.overlay);
    eddy__memview_reset(&v);
    json_decref(committed);
}

static void test_field_names(void **state)
{
    (void)state;
    json_t *committed = J("{\"m\": 1, \"b\": {\"z\": 1, \"a\": 2}, \"s\": \"x\"}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    CHECK_JSON(eddy__memview_field_names(&v, ""), "[\"b\", \"m\", \"s\"]");
    CHECK_JSON(eddy__memview_field_names(&v, "b"), "[\"a\", \"z\"]");

    assert_int_equal(eddy__memview_set(&v, "c", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "a", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "m", json_integer(2)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "b.ab", json_integer(3)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "b.a", json_integer(4)), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v, "b.y"), EDDY_OK);
    CHECK_JSON(eddy__memview_field_names(&v, ""), "[\"a\", \"b\", \"c\", \"m\", \"s\"]");
    CHECK_JSON(eddy__memview_field_names(&v, "b"), "[\"a\", \"ab\", \"y\", \"z\"]");
    CHECK_JSON(eddy__memview_field_names(&v, "b.y"), "[]");

    assert_null(eddy__memview_field_names(&v, "s"));
    assert_null(eddy__memview_field_names(&v, "nope"));
    assert_null(eddy__memview_field_names(&v, "b.a.x"));
    assert_null(eddy__memview_field_names(&v, "b."));

    /* More names than the stack array holds. */
    for (int i = 40; i >= 0; i--) {
        char p[32];
        snprintf(p, sizeof p, "many.k%02d", i);
        assert_int_equal(eddy__memview_set(&v, p, json_integer(i)), EDDY_OK);
    }
    json_t *names = eddy__memview_field_names(&v, "many");
    assert_int_equal(json_array_size(names), 41);
    for (size_t i = 1; i < json_array_size(names); i++)
        assert_true(strcmp(json_string_value(json_array_get(names, i - 1)),
                           json_string_value(json_array_get(names, i))) < 0);
    json_decref(names);

    eddy__memview_reset(&v);
    json_decref(committed);
}

static void test_overlay_isolation(void **state)
{
    (void)state;
    json_t *committed = J("{\"shared\": {\"x\": 0}}");
    eddy__memview v1, v2;
    eddy__memview_init(&v1, committed);
    eddy__memview_init(&v2, committed);

    assert_int_equal(eddy__memview_set(&v1, "shared.a", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v1, "mine", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v2, "shared.b", json_integer(2)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v2, "mine", json_integer(2)), EDDY_OK);

    CHECK_JSON(eddy__memview_get(&v1, "shared"), "{\"x\": 0, \"a\": 1}");
    CHECK_JSON(eddy__memview_get(&v2, "shared"), "{\"x\": 0, \"b\": 2}");
    assert_int_equal(eddy__memview_exists(&v2, "shared.a"), 0);

    assert_int_equal(eddy__memview_commit(&v1), EDDY_OK);
    assert_null(eddy__memview_updates(&v1));
    CHECK_BORROWED(committed, "{\"shared\": {\"x\": 0, \"a\": 1}, \"mine\": 1}");

    /* v2 now sees v1's write where it did not write itself. */
    CHECK_JSON(eddy__memview_get(&v2, "shared"), "{\"x\": 0, \"a\": 1, \"b\": 2}");
    CHECK_JSON(eddy__memview_get(&v2, "mine"), "2");
    CHECK_JSON(eddy__memview_field_names(&v2, "shared"), "[\"a\", \"b\", \"x\"]");

    /* A committed value under a path v2 made an object is hidden. */
    eddy__memview v3;
    eddy__memview_init(&v3, committed);
    assert_int_equal(eddy__memview_set(&v3, "q", json_integer(9)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v2, "q.r", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_commit(&v3), EDDY_OK);
    CHECK_JSON(eddy__memview_get(&v2, "q"), "{\"r\": 1}");

    assert_int_equal(eddy__memview_commit(&v2), EDDY_OK);
    CHECK_BORROWED(committed, "{\"shared\": {\"x\": 0, \"a\": 1, \"b\": 2}, \"mine\": 2,"
                              " \"q\": {\"r\": 1}}");
    json_decref(committed);
}

static void test_replaced_subtree(void **state)
{
    (void)state;
    json_t *committed = json_object();
    eddy__memview v1, v2, v3;
    eddy__memview_init(&v1, committed);
    eddy__memview_init(&v2, committed);
    eddy__memview_init(&v3, committed);

    /* v1 sets "a" to an object value, v3 creates "n" as an object. */
    assert_int_equal(eddy__memview_set(&v1, "a", J("{\"x\": 1}")), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v3, "n"), EDDY_OK);

    /* v2 commits children under both. */
    assert_int_equal(eddy__memview_set(&v2, "a.y", json_integer(2)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v2, "n.y", json_integer(2)), EDDY_OK);
    assert_int_equal(eddy__memview_commit(&v2), EDDY_OK);

    /* The set value hides them; the object merges them. */
    CHECK_JSON(eddy__memview_get(&v1, "a"), "{\"x\": 1}");
    assert_int_equal(eddy__memview_exists(&v1, "a.y"), 0);
    CHECK_JSON(eddy__memview_field_names(&v1, "a"), "[\"x\"]");
    CHECK_JSON(eddy__memview_get(&v3, "n"), "{\"y\": 2}");

    /* Writes below a set object value go into it, committed still hidden. */
    assert_int_equal(eddy__memview_set(&v1, "a.z.w", json_integer(3)), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v1, "a.e"), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v1, "a.x.bad", json_integer(3)), EDDY_EPATH);
    CHECK_JSON(eddy__memview_get(&v1, "a"), "{\"x\": 1, \"z\": {\"w\": 3}, \"e\": {}}");
    assert_int_equal(eddy__memview_set(&v1, "a", json_integer(1)), EDDY_EPATH);

    /* The log keeps the value as it was set. */
    CHECK_BORROWED(eddy__memview_updates(&v1),
                   "[{\"p\": \"a\", \"v\": {\"x\": 1}}, {\"p\": \"a.z.w\", \"v\": 3},"
                   " {\"p\": \"a.e\", \"o\": true}]");

    assert_int_equal(eddy__memview_commit(&v1), EDDY_OK);
    assert_int_equal(eddy__memview_commit(&v3), EDDY_OK);
    CHECK_BORROWED(committed,
                   "{\"a\": {\"x\": 1, \"z\": {\"w\": 3}, \"e\": {}}, \"n\": {\"y\": 2}}");
    json_decref(committed);
}

static void test_update_log(void **state)
{
    (void)state;
    json_t *committed = J("{\"o\": {}, \"v\": 1}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_set(&v, "a.b", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v, "o"), EDDY_OK);            /* kept */
    assert_int_equal(eddy__memview_set(&v, "v.x", json_null()), EDDY_EPATH); /* refused */
    assert_int_equal(eddy__memview_new_object(&v, "n.m"), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "v", J("[1, {\"k\": null}]")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "s", json_string("t")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "a.b", json_null()), EDDY_OK); /* in 1's place */
    CHECK_BORROWED(eddy__memview_updates(&v), "["
                                              "{\"p\": \"a.b\", \"v\": null},"
                                              "{\"p\": \"n.m\", \"o\": true},"
                                              "{\"p\": \"v\", \"v\": [1, {\"k\": null}]},"
                                              "{\"p\": \"s\", \"v\": \"t\"}"
                                              "]");
    eddy__memview_reset(&v);
    assert_null(eddy__memview_updates(&v));
    CHECK_JSON(eddy__memview_get(&v, ""), "{\"o\": {}, \"v\": 1}");
    /* The view stays usable after reset. */
    assert_int_equal(eddy__memview_set(&v, "z", json_integer(1)), EDDY_OK);
    CHECK_BORROWED(eddy__memview_updates(&v), "[{\"p\": \"z\", \"v\": 1}]");
    eddy__memview_reset(&v);
    json_decref(committed);
}

/* A set of a path set among the log's last eight entries, with nothing
 * above or below it set since, takes that entry's place: a counter set in
 * a loop keeps one entry. Anything in between that touches the path (its
 * parent, a field below it, a new object there) keeps the order, and so
 * the entries; and the log always gives the view's tree. */
static void test_update_log_keeps_one_set_per_path(void **state)
{
    (void)state;
    json_t *committed = json_object();
    eddy__memview v;
    eddy__memview_init(&v, committed);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(eddy__memview_set(&v, "c", json_integer(i)), EDDY_OK);
    CHECK_BORROWED(eddy__memview_updates(&v), "[{\"p\": \"c\", \"v\": 999}]");
    for (int i = 0; i < 100; i++) { /* two fields in turn */
        assert_int_equal(eddy__memview_set(&v, "x.a", json_integer(i)), EDDY_OK);
        assert_int_equal(eddy__memview_set(&v, "x.ab", json_integer(-i)), EDDY_OK);
    }
    CHECK_BORROWED(eddy__memview_updates(&v), "[{\"p\": \"c\", \"v\": 999},"
                                              "{\"p\": \"x.a\", \"v\": 99},"
                                              "{\"p\": \"x.ab\", \"v\": -99}]");
    eddy__memview_reset(&v);
    /* In between: the parent, a field below, a new object at the path. */
    assert_int_equal(eddy__memview_set(&v, "p.q", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "p", J("{\"r\": 2}")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "p.q", json_integer(3)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "m", J("{}")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "m.n", json_integer(4)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "m", J("{\"z\": 5}")), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v, "o"), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "o", J("{\"y\": 6}")), EDDY_OK);
    CHECK_BORROWED(eddy__memview_updates(&v), "[{\"p\": \"p.q\", \"v\": 1},"
                                              "{\"p\": \"p\", \"v\": {\"r\": 2}},"
                                              "{\"p\": \"p.q\", \"v\": 3},"
                                              "{\"p\": \"m\", \"v\": {}},"
                                              "{\"p\": \"m.n\", \"v\": 4},"
                                              "{\"p\": \"m\", \"v\": {\"z\": 5}},"
                                              "{\"p\": \"o\", \"o\": true},"
                                              "{\"p\": \"o\", \"v\": {\"y\": 6}}]");
    /* Nine other paths since: past the look-back, appended. */
    for (int i = 0; i < 9; i++) {
        char path[8];
        snprintf(path, sizeof(path), "f%d", i);
        assert_int_equal(eddy__memview_set(&v, path, json_integer(i)), EDDY_OK);
    }
    assert_int_equal(eddy__memview_set(&v, "o", J("{\"w\": 7}")), EDDY_OK);
    assert_int_equal(json_array_size(eddy__memview_updates(&v)), 18);
    json_t *applied = json_object();
    assert_int_equal(eddy__mem_tree_apply(applied, eddy__memview_updates(&v), 1), EDDY_OK);
    json_t *seen = eddy__memview_get(&v, "");
    assert_true(json_equal(applied, seen));
    json_decref(applied);
    json_decref(seen);
    eddy__memview_reset(&v);
    json_decref(committed);
}

static void test_replay(void **state)
{
    (void)state;
    json_t *committed = json_object();
    eddy__memview v;
    eddy__memview_init(&v, committed);
    assert_int_equal(eddy__memview_new_object(&v, "empty"), EDDY_OK);
    assert_int_equal(eddy__memview_new_object(&v, "deep.er"), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "deep.er.x", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "val", J("{\"k\": [1, 2]}")), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "val.z", json_true()), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "s", json_integer(1)), EDDY_OK);
    assert_int_equal(eddy__memview_set(&v, "s", json_integer(2)), EDDY_OK);
    json_t *merged = eddy__memview_get(&v, "");

    json_t *fresh = json_object();
    assert_int_equal(eddy__mem_tree_apply(fresh, eddy__memview_updates(&v), 0), EDDY_OK);
    assert_true(json_equal(fresh, merged));
    CHECK_BORROWED(json_object_get(fresh, "empty"), "{}");

    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    assert_true(json_equal(committed, merged));
    CHECK_JSON(eddy__memview_get(&v, ""), "{\"empty\": {}, \"deep\": {\"er\": {\"x\": 1}},"
                                          " \"val\": {\"k\": [1, 2], \"z\": true}, \"s\": 2}");
    json_decref(fresh);
    json_decref(merged);
    json_decref(committed);
}

static void test_copies(void **state)
{
    (void)state;
    json_t *committed = J("{\"c\": {\"k\": 1}}");
    eddy__memview v;
    eddy__memview_init(&v, committed);

    json_t *val = J("{\"x\": {\"y\": 1}}");
    assert_int_equal(eddy__memview_set(&v, "a", json_incref(val)), EDDY_OK);
    /* The log holds the value itself; the view works on its own copy. */
    json_t *entry = json_array_get(eddy__memview_updates(&v), 0);
    assert_ptr_equal(json_object_get(entry, "v"), val);
    assert_int_equal(eddy__memview_set(&v, "a.x.z", json_integer(2)), EDDY_OK);
    CHECK_BORROWED(val, "{\"x\": {\"y\": 1}}");
    json_decref(val);

    /* Returned values are copies. */
    json_t *g = eddy__memview_get(&v, "a");
    json_object_set_new(json_object_get(g, "x"), "evil", json_integer(1));
    json_decref(g);
    g = eddy__memview_get(&v, "c");
    json_object_set_new(g, "evil", json_integer(1));
    json_decref(g);
    g = eddy__memview_get(&v, "");
    json_object_clear(g);
    json_decref(g);
    CHECK_JSON(eddy__memview_get(&v, "a"), "{\"x\": {\"y\": 1, \"z\": 2}}");
    CHECK_JSON(eddy__memview_get(&v, "c"), "{\"k\": 1}");
    CHECK_BORROWED(committed, "{\"c\": {\"k\": 1}}");

    /* The committed tree does not share objects with the log either. */
    json_t *log = json_incref((json_t *)eddy__memview_updates(&v));
    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    assert_int_equal(eddy__mem_tree_set(committed, "a.x.w", json_integer(3)), EDDY_OK);
    CHECK_BORROWED(json_object_get(json_array_get(log, 0), "v"), "{\"x\": {\"y\": 1}}");
    json_decref(log);
    json_decref(committed);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    json_t *committed = J("{\"v\": 1}");
    eddy__memview v;
    eddy__memview_init(&v, committed);
    /* Stolen on every failure: ASan reports a leak otherwise. */
    assert_int_equal(eddy__memview_set(&v, NULL, J("{\"a\": [1]}")), EDDY_EINVAL);
    assert_int_equal(eddy__memview_set(&v, "", J("{\"a\": [1]}")), EDDY_EINVAL);
    assert_int_equal(eddy__memview_set(&v, "a..b", json_string("s")), EDDY_EINVAL);
    assert_int_equal(eddy__memview_set(&v, "v.x", J("{\"a\": [1]}")), EDDY_EPATH);
    assert_int_equal(eddy__memview_set(&v, "a", NULL), EDDY_EINVAL);
    assert_int_equal(eddy__memview_new_object(&v, "a."), EDDY_EINVAL);
    assert_int_equal(eddy__memview_new_object(&v, ""), EDDY_EINVAL);
    assert_int_equal(eddy__memview_exists(&v, ".a"), EDDY_EINVAL);
    assert_null(eddy__memview_get(&v, "."));
    assert_null(eddy__memview_field_names(&v, "a..b"));
    assert_null(eddy__memview_updates(&v));
    assert_null(v.overlay);
    /* Commit of an empty view is a no-op. */
    assert_int_equal(eddy__memview_commit(&v), EDDY_OK);
    CHECK_BORROWED(committed, "{\"v\": 1}");
    json_decref(committed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_valid),
        cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_tree_set_get),
        cmocka_unit_test(test_tree_apply),
        cmocka_unit_test(test_view_basic),
        cmocka_unit_test(test_object_value_replaces_object),
        cmocka_unit_test(test_view_new_object_kept_unlogged),
        cmocka_unit_test(test_field_names),
        cmocka_unit_test(test_overlay_isolation),
        cmocka_unit_test(test_replaced_subtree),
        cmocka_unit_test(test_update_log),
        cmocka_unit_test(test_update_log_keeps_one_set_per_path),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
