/*
 * libFuzzer target for the memory path parser, trees and views.
 *
 * The input is a list of operations, each [op][arg][n][n path bytes]. The op's
 * top bit keeps the path bytes raw (exercising validation); otherwise each byte
 * maps to one of "a", "b", "c", "." so that paths collide often. Two views run
 * over one committed tree. After every step the target checks the invariant
 * the overlay is built for: reading through a view gives exactly what applying
 * its update log in force mode to the committed tree, as it is now, gives. It
 * also checks each result against that oracle tree, that a log replays
 * without conflict on an empty tree, and that re-applying a log over a
 * partial application of it converges.
 *
 * Built as fuzz_memory (libFuzzer, `make fuzz`) and fuzz_memory_replay (the
 * saved corpus as a ctest test); see tests/fuzz/replay.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "core/error.h"
#include "core/memory.h"

/* Independent path check: non-empty segments, and jansson's own UTF-8 test. */
static int path_valid_oracle(const char *p, int allow_root)
{
    if (*p == '\0')
        return allow_root;
    size_t n = strlen(p);
    if (p[0] == '.' || p[n - 1] == '.' || strstr(p, "..") != NULL)
        return 0;
    json_t *s = json_string(p);
    json_decref(s);
    return s != NULL;
}

/* The committed tree with v's log applied in force mode (new reference). */
static json_t *oracle(const eddy__memview *v)
{
    json_t *t = json_deep_copy(v->committed);
    CHECK(t != NULL);
    if (eddy__memview_updates(v))
        CHECK(eddy__mem_tree_apply(t, eddy__memview_updates(v), 1) == EDDY_OK);
    return t;
}

static void check_view(eddy__memview *v)
{
    json_t *want = oracle(v);
    json_t *got = eddy__memview_get(v, "");
    CHECK(json_equal(got, want));
    json_decref(got);
    json_decref(want);

    const json_t *log = eddy__memview_updates(v);
    if (log == NULL)
        return;
    CHECK(json_array_size(log) > 0);
    /* A view's log never conflicts with itself. */
    json_t *fresh = json_object();
    CHECK(eddy__mem_tree_apply(fresh, log, 0) == EDDY_OK);
    json_decref(fresh);

    /* Applying the log again over a partial application gives the same
     * result (what a retried commit does after ENOMEM). */
    size_t k = json_array_size(log) / 2;
    json_t *prefix = json_array();
    for (size_t i = 0; i < k; i++)
        json_array_append(prefix, json_array_get(log, i));
    json_t *t = json_deep_copy(v->committed);
    CHECK(eddy__mem_tree_apply(t, prefix, 1) == EDDY_OK);
    CHECK(eddy__mem_tree_apply(t, log, 1) == EDDY_OK);
    want = oracle(v);
    CHECK(json_equal(t, want));
    json_decref(want);
    json_decref(t);
    json_decref(prefix);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check_field_names(json_t *names, json_t *node)
{
    if (!json_is_object(node)) {
        CHECK(names == NULL);
        return;
    }
    CHECK(json_array_size(names) == json_object_size(node));
    const char *keys[256];
    size_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(node, key, val)
    {
        if (n < 256)
            keys[n++] = key;
    }
    qsort(keys, n, sizeof keys[0], cmp_names);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(json_string_value(json_array_get(names, i)), keys[i]) == 0);
}

static json_t *make_value(unsigned kind, unsigned arg)
{
    switch (kind) {
    case 0:
        return json_integer(arg);
    case 1:
        return json_pack("{s:i, s:{}, s:{s:n}}", "k", arg, "o", "m", "a");
    default:
        return json_pack("[i, {}]", arg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *committed = json_object();
    eddy__memview views[2];
    eddy__memview_init(&views[0], committed);
    eddy__memview_init(&views[1], committed);
    char path[256];

    while (size >= 3) {
        unsigned op = data[0], arg = data[1];
        size_t n = data[2];
        data += 3, size -= 3;
        if (n > size)
            n = size;
        for (size_t i = 0; i < n; i++)
            path[i] = (op & 0x80) ? (char)data[i] : "abc."[data[i] & 3];
        path[n] = '\0'; /* a NUL inside raw bytes just ends the path early */
        data += n, size -= n;
        op &= 0x7F;

        eddy__memview *v = &views[arg & 1];
        int valid = eddy__mem_path_valid(path, 0);
        CHECK(valid == path_valid_oracle(path, 0));
        CHECK(eddy__mem_path_valid(path, 1) == path_valid_oracle(path, 1));

        json_t *want = oracle(v);
        switch (op % 10) {
        case 0:
        case 1:
        case 2: {
            /* The view must decide exactly as a plain tree holding the
             * merged state would. */
            json_t *val = make_value(op % 10, arg);
            json_t *t = json_deep_copy(want);
            int expect = valid ? eddy__mem_tree_set(t, path, json_deep_copy(val)) : EDDY_EINVAL;
            CHECK(eddy__memview_set(v, path, val) == expect);
            json_decref(t);
            break;
        }
        case 3: {
            json_t *t = json_deep_copy(want);
            int expect = valid ? eddy__mem_tree_new_object(t, path) : EDDY_EINVAL;
            CHECK(eddy__memview_new_object(v, path) == expect);
            json_decref(t);
            break;
        }
        case 4: {
            json_t *got = eddy__memview_get(v, path);
            json_t *node = eddy__mem_tree_lookup(want, path);
            CHECK(json_equal(got, node) || (got == NULL && node == NULL));
            json_decref(got);
            break;
        }
        case 5: {
            int e = eddy__memview_exists(v, path);
            if (eddy__mem_path_valid(path, 1))
                CHECK(e == (eddy__mem_tree_lookup(want, path) != NULL));
            else
                CHECK(e == EDDY_EINVAL);
            break;
        }
        case 6: {
            json_t *names = eddy__memview_field_names(v, path);
            check_field_names(names, eddy__mem_tree_lookup(want, path));
            json_decref(names);
            break;
        }
        case 7:
            CHECK(eddy__memview_commit(v) == EDDY_OK);
            CHECK(json_equal(committed, want));
            CHECK(eddy__memview_updates(v) == NULL);
            break;
        case 8:
            eddy__memview_reset(v);
            break;
        case 9: {
            /* Another writer on the committed tree, strict mode: a refused
             * write leaves the tree as it was. */
            json_t *before = json_deep_copy(committed);
            int rc = (arg & 2) ? eddy__mem_tree_new_object(committed, path)
                               : eddy__mem_tree_set(committed, path, make_value(arg % 3, arg));
            if (rc != EDDY_OK)
                CHECK(json_equal(committed, before));
            json_decref(before);
            break;
        }
        }
        json_decref(want);
        check_view(&views[0]);
        check_view(&views[1]);
    }

    eddy__memview_reset(&views[0]);
    eddy__memview_reset(&views[1]);
    json_decref(committed);
    return 0;
}
