/*
 * libFuzzer target for every record the state store hands back to the
 * runtime: the decoders in src/exec/durable.c that recovery uses on a state
 * file that may be damaged.
 *
 * The first byte picks the record kind; the rest (up to a NUL, as SQLite text
 * is) is the stored text:
 *   0  a completion (DONE) journal record {order, events, stm, sensory}; when
 *      it decodes, its memory writes are applied to empty trees and to trees
 *      that already hold values, as recovery does
 *   1  a durable call's journaled result
 *   2  a pending input record
 *   3  a key's short-term memory
 * Checks: decoding succeeds exactly when the text is what the record kind
 * promises (independently re-checked here), never crashes, and leaks nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "exec/durable.h"

static void check_done(const char *text)
{
    json_t *rec = NULL;
    int rc = eddy__durable_decode_done(text, &rec);
    json_t *plain = json_loads(text, 0, NULL);
    if (rc != EDDY_OK) {
        CHECK(rec == NULL);
        json_decref(plain);
        return;
    }
    CHECK(rc == EDDY_OK && json_is_object(rec) && json_equal(rec, plain));
    CHECK(json_is_array(json_object_get(rec, "events")));
    json_decref(plain);

    json_t *stm = json_object(), *sen = json_object();
    int a = eddy__durable_apply_done(rec, stm, sen);
    CHECK(a == EDDY_OK || a == EDDY_ESTATE || a == EDDY_ENOMEM);
    CHECK(json_is_object(stm) && json_is_object(sen));
    json_decref(stm);
    json_decref(sen);

    /* Trees with values where the log may want objects, and the reverse. */
    stm = json_pack("{s:i, s:{s:[i]}, s:{}}", "a", 1, "b", "c", 2, "d");
    sen = json_pack("{s:s}", "a", "x");
    a = eddy__durable_apply_done(rec, stm, sen);
    CHECK(a == EDDY_OK || a == EDDY_ESTATE || a == EDDY_ENOMEM);
    CHECK(json_is_object(stm) && json_is_object(sen));
    json_decref(stm);
    json_decref(sen);
    json_decref(rec);
}

static void check_result(const char *text)
{
    json_t *v = NULL;
    int rc = eddy__durable_decode_result(text, &v);
    json_t *plain = json_loads(text, JSON_DECODE_ANY, NULL);
    CHECK((rc == EDDY_OK) == (plain != NULL));
    CHECK(rc != EDDY_OK || json_equal(v, plain));
    json_decref(plain);
    json_decref(v);
}

static void check_object(int (*decode)(const char *, json_t **), const char *text)
{
    json_t *v = NULL;
    int rc = decode(text, &v);
    json_t *plain = json_loads(text, 0, NULL);
    CHECK((rc == EDDY_OK) == json_is_object(plain));
    CHECK(rc == EDDY_OK ? json_equal(v, plain) : v == NULL);
    json_decref(plain);
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = size - 1;
    char *text = malloc(n + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, n);
    text[n] = '\0'; /* an inner NUL ends the text, as for SQLite text */
    switch (data[0] % 4) {
    case 0:
        check_done(text);
        break;
    case 1:
        check_result(text);
        break;
    case 2:
        check_object(eddy__durable_decode_pending, text);
        break;
    default:
        check_object(eddy__durable_decode_memory, text);
        break;
    }
    free(text);
    return 0;
}
