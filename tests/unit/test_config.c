#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/config.h"

static int setup(void **state)
{
    *state = eddy_config_new();
    return *state != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    eddy_config_free(*state);
    return 0;
}

/* Set name to value and expect success; returns the canonical text. */
static const char *set_ok(eddy_config *conf, const char *name, const char *value)
{
    eddy_error *err = NULL;
    int rc = eddy_config_set(conf, name, value, &err);
    if (rc != EDDY_OK)
        fail_msg("%s=%s: %s", name, value, eddy_error_message(err));
    assert_null(err);
    return eddy_config_get(conf, name);
}

/* Expect name=value to be refused with code, a message naming the option and
 * the value, and the old value kept. */
static void set_bad(eddy_config *conf, const char *name, const char *value, int code)
{
    const char *before = eddy_config_get(conf, name);
    char kept[256];
    snprintf(kept, sizeof(kept), "%s", before != NULL ? before : "");
    eddy_error *err = NULL;
    assert_int_equal(eddy_config_set(conf, name, value, &err), code);
    assert_non_null(err);
    const char *msg = eddy_error_message(err);
    char quoted[160];
    snprintf(quoted, sizeof(quoted), "'%s'", name);
    if (strstr(msg, quoted) == NULL)
        fail_msg("message does not name option %s: %s", name, msg);
    if (code == EDDY_ECONFIG && before != NULL) {
        snprintf(quoted, sizeof(quoted), "'%s'", value);
        if (strlen(value) < 60 && strstr(msg, quoted) == NULL)
            fail_msg("message does not show value %s: %s", value, msg);
        if (strstr(msg, "expected") == NULL)
            fail_msg("message does not say what is accepted: %s", msg);
        assert_string_equal(eddy_config_get(conf, name), kept);
    }
    eddy_error_free(err);
    /* Without err the code is the same. */
    assert_int_equal(eddy_config_set(conf, name, value, NULL), code);
}

static void test_defaults(void **state)
{
    eddy_config *conf = *state;
    assert_string_equal(eddy_config_get(conf, "input"), "-");
    assert_string_equal(eddy_config_get(conf, "output"), "-");
    assert_string_equal(eddy_config_get(conf, "dead-letter"), "-");
    assert_string_equal(eddy_config_get(conf, "key"), "key");
    assert_string_equal(eddy_config_get(conf, "max-in-flight"), "10000");
    assert_string_equal(eddy_config_get(conf, "max-pending"), "10000");
    assert_string_equal(eddy_config_get(conf, "max-run-actions"), "100000");
    assert_string_equal(eddy_config_get(conf, "on-error"), "stop");
    assert_string_equal(eddy_config_get(conf, "max-line-bytes"), "16777216");
    assert_string_equal(eddy_config_get(conf, "max-depth"), "64");
    assert_string_equal(eddy_config_get(conf, "state"), "");
    assert_string_equal(eddy_config_get(conf, "key-cache"), "100000");
    assert_string_equal(eddy_config_get(conf, "key-cache-bytes"), "268435456");
    assert_string_equal(eddy_config_get(conf, "commit-interval-ms"), "2");
    assert_string_equal(eddy_config_get(conf, "strict-determinism"), "false");
    assert_string_equal(eddy_config_get(conf, "stack-size"), "262144");

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cores >= 1 ? (unsigned)cores * 2 : 2;
    if (threads > EDDY__CONFIG_ASYNC_THREADS_MAX)
        threads = EDDY__CONFIG_ASYNC_THREADS_MAX;
    char want[16];
    snprintf(want, sizeof(want), "%u", threads);
    assert_string_equal(eddy_config_get(conf, "async-threads"), want);

    const eddy__config_values *v = eddy__config_values_get(conf);
    assert_string_equal(v->input, "-");
    assert_string_equal(v->output, "-");
    assert_null(v->dead_letter);
    assert_string_equal(eddy__config_dead_letter(conf), "-");
    assert_string_equal(v->key, "key");
    assert_string_equal(v->state, "");
    assert_int_equal(v->async_threads, threads);
    assert_int_equal(v->max_in_flight, 10000);
    assert_int_equal(v->max_pending, 10000);
    assert_int_equal(v->key_cache, 100000);
    assert_int_equal(v->on_error_skip, 0);
    assert_int_equal(v->max_line_bytes, 16777216);
    assert_int_equal(v->max_depth, 64);
    assert_int_equal(v->commit_interval_ms, 2);
    assert_int_equal(v->strict_determinism, 0);
    assert_int_equal(v->stack_size, 262144);
}

static void test_strings(void **state)
{
    eddy_config *conf = *state;
    const eddy__config_values *v = eddy__config_values_get(conf);

    assert_string_equal(set_ok(conf, "input", "in.jsonl"), "in.jsonl");
    assert_string_equal(v->input, "in.jsonl");
    assert_string_equal(set_ok(conf, "key", "user.id"), "user.id");
    assert_string_equal(v->key, "user.id");
    assert_string_equal(set_ok(conf, "state", "/tmp/st"), "/tmp/st");
    assert_string_equal(v->state, "/tmp/st");
    assert_string_equal(set_ok(conf, "state", ""), "");
    assert_string_equal(v->state, "");
}

static void test_dead_letter_follows_output(void **state)
{
    eddy_config *conf = *state;
    const eddy__config_values *v = eddy__config_values_get(conf);

    assert_string_equal(set_ok(conf, "output", "out.jsonl"), "out.jsonl");
    assert_string_equal(v->output, "out.jsonl");
    assert_null(v->dead_letter);
    assert_string_equal(eddy_config_get(conf, "dead-letter"), "out.jsonl.dead.jsonl");
    assert_string_equal(eddy__config_dead_letter(conf), "out.jsonl.dead.jsonl");

    assert_string_equal(set_ok(conf, "dead-letter", "bad.jsonl"), "bad.jsonl");
    assert_string_equal(v->dead_letter, "bad.jsonl");
    set_ok(conf, "output", "other.jsonl");
    assert_string_equal(eddy_config_get(conf, "dead-letter"), "bad.jsonl");

    /* "-" set explicitly means stderr, even with a file output. */
    assert_string_equal(set_ok(conf, "dead-letter", "-"), "-");
    assert_string_equal(v->dead_letter, "-");

    /* "" goes back to the derived path. */
    set_ok(conf, "dead-letter", "");
    assert_null(v->dead_letter);
    assert_string_equal(eddy_config_get(conf, "dead-letter"), "other.jsonl.dead.jsonl");
    set_ok(conf, "output", "-");
    assert_string_equal(eddy_config_get(conf, "dead-letter"), "-");
}

static void test_numbers(void **state)
{
    eddy_config *conf = *state;
    const eddy__config_values *v = eddy__config_values_get(conf);

    assert_string_equal(set_ok(conf, "async-threads", "1"), "1");
    assert_int_equal(v->async_threads, 1);
    assert_string_equal(set_ok(conf, "async-threads", "1024"), "1024");
    assert_int_equal(v->async_threads, 1024);
    /* Leading zeros are accepted; get() gives the canonical text. */
    assert_string_equal(set_ok(conf, "async-threads", "007"), "7");
    assert_int_equal(v->async_threads, 7);

    assert_string_equal(set_ok(conf, "max-in-flight", "1"), "1");
    assert_int_equal(v->max_in_flight, 1);
    assert_string_equal(set_ok(conf, "max-in-flight", "18446744073709551615"),
                        "18446744073709551615");
    assert_true(v->max_in_flight == UINT64_MAX);
    /* Over 2^64 - 1, the limit is named (it said "at least 1", which it is). */
    eddy_error *err = NULL;
    assert_int_equal(eddy_config_set(conf, "max-in-flight", "18446744073709551616", &err),
                     EDDY_ECONFIG);
    assert_string_equal(eddy_error_message(err),
                        "invalid value '18446744073709551616' for option 'max-in-flight': "
                        "expected a whole number from 1 to 18446744073709551615");
    eddy_error_free(err);
    err = NULL;
    assert_int_equal(eddy_config_set(conf, "max-in-flight", "0", &err), EDDY_ECONFIG);
    assert_string_equal(eddy_error_message(err), "invalid value '0' for option 'max-in-flight': "
                                                 "expected a whole number of at least 1");
    eddy_error_free(err);
    assert_string_equal(set_ok(conf, "max-pending", "1"), "1");
    assert_int_equal(v->max_pending, 1);
    assert_string_equal(set_ok(conf, "max-pending", "0042"), "42");
    assert_int_equal(v->max_pending, 42);
    assert_string_equal(set_ok(conf, "max-pending", "18446744073709551615"),
                        "18446744073709551615");
    assert_true(v->max_pending == UINT64_MAX);
    assert_string_equal(set_ok(conf, "max-run-actions", "0"), "0");
    assert_int_equal(v->max_run_actions, 0);
    assert_string_equal(set_ok(conf, "max-run-actions", "50"), "50");
    assert_int_equal(v->max_run_actions, 50);
    assert_string_equal(set_ok(conf, "key-cache", "0"), "0");
    assert_int_equal(v->key_cache, 0);
    assert_string_equal(set_ok(conf, "key-cache", "0002"), "2");
    assert_int_equal(v->key_cache, 2);

    assert_string_equal(set_ok(conf, "max-line-bytes", "1024"), "1024");
    assert_int_equal(v->max_line_bytes, 1024);
    assert_string_equal(set_ok(conf, "max-line-bytes", "1099511627776"), "1099511627776");
    assert_int_equal(v->max_line_bytes, 1099511627776u);

    assert_string_equal(set_ok(conf, "max-depth", "1"), "1");
    assert_int_equal(v->max_depth, 1);
    assert_string_equal(set_ok(conf, "max-depth", "2047"), "2047");
    assert_int_equal(v->max_depth, 2047);

    assert_string_equal(set_ok(conf, "commit-interval-ms", "0"), "0");
    assert_int_equal(v->commit_interval_ms, 0);
    assert_string_equal(set_ok(conf, "commit-interval-ms", "10000"), "10000");
    assert_int_equal(v->commit_interval_ms, 10000);

    assert_string_equal(set_ok(conf, "stack-size", "16384"), "16384");
    assert_int_equal(v->stack_size, 16384);
    assert_string_equal(set_ok(conf, "stack-size", "67108864"), "67108864");
    assert_int_equal(v->stack_size, 67108864);
}

static void test_enums(void **state)
{
    eddy_config *conf = *state;
    const eddy__config_values *v = eddy__config_values_get(conf);

    assert_string_equal(set_ok(conf, "on-error", "skip"), "skip");
    assert_int_equal(v->on_error_skip, 1);
    assert_string_equal(set_ok(conf, "on-error", "stop"), "stop");
    assert_int_equal(v->on_error_skip, 0);

    static const struct {
        const char *in, *canon;
        int value;
    } bools[] = {{"true", "true", 1},   {"1", "true", 1},  {"yes", "true", 1},
                 {"false", "false", 0}, {"0", "false", 0}, {"no", "false", 0}};
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        assert_string_equal(set_ok(conf, "strict-determinism", bools[i].in), bools[i].canon);
        assert_int_equal(v->strict_determinism, bools[i].value);
    }
}

static void test_invalid(void **state)
{
    eddy_config *conf = *state;

    set_bad(conf, "input", "", EDDY_ECONFIG);
    set_bad(conf, "output", "", EDDY_ECONFIG);
    set_bad(conf, "key", "", EDDY_ECONFIG);
    /* A field name that is not UTF-8 could match no input's field. */
    assert_int_equal(eddy_config_set(conf, "key", "caf\xe9", NULL), EDDY_ECONFIG);
    assert_string_equal(eddy_config_get(conf, "key"), "key"); /* kept */
    eddy_error *kerr = NULL;
    assert_int_equal(eddy_config_set(conf, "key", "k\xff", &kerr), EDDY_ECONFIG);
    assert_string_equal(eddy_error_message(kerr),
                        "invalid value 'k\\xff' for option 'key': not UTF-8, and a JSON field "
                        "name is UTF-8 text: no input's field could match it");
    eddy_error_free(kerr);
    assert_int_equal(eddy_config_set(conf, "key", "caf\xc3\xa9", NULL), EDDY_OK);
    assert_string_equal(eddy_config_get(conf, "key"), "caf\xc3\xa9");

    static const char *const not_numbers[] = {
        "", "abc", "-1", "+1", " 1", "1 ", "1k", "0x10", "1.5", "1e3", "99999999999999999999"};
    static const char *const numeric[] = {
        "async-threads", "max-in-flight", "max-pending",     "max-line-bytes", "commit-interval-ms",
        "stack-size",    "max-depth",     "max-run-actions", "key-cache",      "key-cache-bytes"};
    for (size_t i = 0; i < sizeof(numeric) / sizeof(numeric[0]); i++)
        for (size_t j = 0; j < sizeof(not_numbers) / sizeof(not_numbers[0]); j++)
            set_bad(conf, numeric[i], not_numbers[j], EDDY_ECONFIG);

    /* Out of range. */
    set_bad(conf, "async-threads", "0", EDDY_ECONFIG);
    set_bad(conf, "async-threads", "1025", EDDY_ECONFIG);
    set_bad(conf, "max-in-flight", "0", EDDY_ECONFIG);
    set_bad(conf, "max-pending", "0", EDDY_ECONFIG);
    set_bad(conf, "max-pending", "18446744073709551616", EDDY_ECONFIG);
    set_bad(conf, "max-line-bytes", "1023", EDDY_ECONFIG);
    set_bad(conf, "max-line-bytes", "0", EDDY_ECONFIG);
    set_bad(conf, "max-line-bytes", "1099511627777", EDDY_ECONFIG);
    set_bad(conf, "max-line-bytes", "18446744073709551615", EDDY_ECONFIG);
    set_bad(conf, "max-depth", "0", EDDY_ECONFIG);
    set_bad(conf, "max-depth", "2048", EDDY_ECONFIG);
    set_bad(conf, "stack-size", "16383", EDDY_ECONFIG);
    set_bad(conf, "stack-size", "67108865", EDDY_ECONFIG);
    set_bad(conf, "commit-interval-ms", "10001", EDDY_ECONFIG);

    set_bad(conf, "on-error", "", EDDY_ECONFIG);
    set_bad(conf, "on-error", "retry", EDDY_ECONFIG);
    set_bad(conf, "on-error", "STOP", EDDY_ECONFIG);

    set_bad(conf, "strict-determinism", "", EDDY_ECONFIG);
    set_bad(conf, "strict-determinism", "maybe", EDDY_ECONFIG);
    set_bad(conf, "strict-determinism", "2", EDDY_ECONFIG);
    set_bad(conf, "strict-determinism", "TRUE", EDDY_ECONFIG);

    /* A very long bad value is cut short in the message. */
    char long_value[300];
    memset(long_value, 'x', sizeof(long_value) - 1);
    long_value[sizeof(long_value) - 1] = '\0';
    eddy_error *err = NULL;
    assert_int_equal(eddy_config_set(conf, "async-threads", long_value, &err), EDDY_ECONFIG);
    assert_true(strlen(eddy_error_message(err)) < 200);
    assert_non_null(strstr(eddy_error_message(err), "'async-threads'"));
    eddy_error_free(err);
}

static void test_unknown_and_null(void **state)
{
    eddy_config *conf = *state;
    eddy_error *err = NULL;

    assert_int_equal(eddy_config_set(conf, "bogus", "1", &err), EDDY_ECONFIG);
    assert_string_equal(eddy_error_message(err), "unknown option 'bogus'");
    eddy_error_free(err);
    err = NULL;

    /* The CLI's --agent is not a config option, nor are names with dashes. */
    assert_int_equal(eddy_config_set(conf, "agent", "A", &err), EDDY_ECONFIG);
    assert_string_equal(eddy_error_message(err), "unknown option 'agent'");
    eddy_error_free(err);
    err = NULL;
    assert_int_equal(eddy_config_set(conf, "--input", "x", NULL), EDDY_ECONFIG);
    assert_int_equal(eddy_config_set(conf, "", "x", NULL), EDDY_ECONFIG);

    assert_null(eddy_config_get(conf, "bogus"));
    assert_null(eddy_config_get(conf, "agent"));
    assert_null(eddy_config_get(conf, NULL));
    assert_null(eddy_config_get(NULL, "input"));

    assert_int_equal(eddy_config_set(NULL, "input", "x", NULL), EDDY_EINVAL);
    assert_int_equal(eddy_config_set(conf, NULL, "x", NULL), EDDY_EINVAL);
    assert_int_equal(eddy_config_set(conf, "input", NULL, &err), EDDY_EINVAL);
    assert_non_null(err);
    eddy_error_free(err);
    assert_string_equal(eddy_config_get(conf, "input"), "-");

    eddy_config_free(NULL);
}

static void test_dup(void **state)
{
    eddy_config *conf = *state;
    set_ok(conf, "input", "in.jsonl");
    set_ok(conf, "output", "out.jsonl");
    set_ok(conf, "key", "k");
    set_ok(conf, "async-threads", "3");
    set_ok(conf, "max-in-flight", "5");
    set_ok(conf, "max-pending", "6");
    set_ok(conf, "on-error", "skip");
    set_ok(conf, "max-line-bytes", "2048");
    set_ok(conf, "max-depth", "9");
    set_ok(conf, "state", "st");
    set_ok(conf, "key-cache", "7");
    set_ok(conf, "key-cache-bytes", "8");
    set_ok(conf, "commit-interval-ms", "0");
    set_ok(conf, "strict-determinism", "yes");
    set_ok(conf, "stack-size", "65536");

    eddy_config *copy = eddy__config_dup(conf);
    assert_non_null(copy);
    static const char *const names[] = {
        "input",         "output",          "dead-letter",        "key",
        "async-threads", "max-in-flight",   "max-pending",        "max-run-actions",
        "on-error",      "max-line-bytes",  "max-depth",          "state",
        "key-cache",     "key-cache-bytes", "commit-interval-ms", "strict-determinism",
        "stack-size"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_string_equal(eddy_config_get(copy, names[i]), eddy_config_get(conf, names[i]));

    const eddy__config_values *a = eddy__config_values_get(conf);
    const eddy__config_values *b = eddy__config_values_get(copy);
    assert_null(b->dead_letter);
    assert_string_equal(eddy__config_dead_letter(copy), "out.jsonl.dead.jsonl");
    assert_int_equal(b->async_threads, 3);
    assert_int_equal(b->max_in_flight, 5);
    assert_int_equal(b->max_pending, 6);
    assert_int_equal(b->key_cache, 7);
    assert_int_equal(b->key_cache_bytes, 8);
    assert_int_equal(b->on_error_skip, 1);
    assert_int_equal(b->max_line_bytes, 2048);
    assert_int_equal(b->max_depth, 9);
    assert_int_equal(b->commit_interval_ms, 0);
    assert_int_equal(b->strict_determinism, 1);
    assert_int_equal(b->stack_size, 65536);
    /* A deep copy: the strings are the copy's own. */
    assert_ptr_not_equal(a->input, b->input);
    set_ok(conf, "input", "changed");
    assert_string_equal(b->input, "in.jsonl");

    /* An explicit dead-letter survives the copy. */
    set_ok(conf, "dead-letter", "dl.jsonl");
    eddy_config *copy2 = eddy__config_dup(conf);
    assert_non_null(copy2);
    assert_string_equal(eddy__config_values_get(copy2)->dead_letter, "dl.jsonl");

    eddy_config_free(copy);
    eddy_config_free(copy2);
    assert_null(eddy__config_dup(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_follows_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_numbers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dup, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
