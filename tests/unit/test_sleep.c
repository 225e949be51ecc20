/*
 * eddy_ctx_sleep through the public API, in process: sleeps hold no worker
 * and wake in time order, 0 ms yields behind every ready task, a stop or a
 * failure ends a long sleep at once (the action unwinds), and the error
 * codes of a sleep made where it cannot suspend. Each test frees its
 * runtime; the sanitizer builds check that nothing leaked (timers beyond
 * the runtime's pool of them are closed and freed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "eddy/eddy.h"
#include "tmptree.h"

typedef struct fixture {
    char dir[64];
    char in[96];
    char out[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(tmptree_make(f->dir, "sleep"), 0);
    snprintf(f->in, sizeof(f->in), "%s/in.jsonl", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(tmptree_remove(f->dir), 0);
    free(f);
    return 0;
}

static void write_input(fixture *f, const char *text)
{
    FILE *fp = fopen(f->in, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A runtime of one action on InputEvent, f's files, threads workers. */
static eddy_runtime *runtime(fixture *f, eddy_action_fn fn, const char *threads)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "act", types, fn, NULL), EDDY_OK);
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", f->out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "async-threads", threads, NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p, c, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    eddy_config_free(c);
    return rt;
}

static json_int_t input_int(const eddy_event *ev, const char *name)
{
    return json_integer_value(
        json_object_get(json_object_get(eddy_event_attrs(ev), "input"), name));
}

/* The order in which things happened, as "key:what" entries. */
static char trace[1 << 16];

static void note(eddy_ctx *ctx, const char *what)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s:%s ", eddy_ctx_key(ctx), what);
    strncat(trace, buf, sizeof(trace) - strlen(trace) - 1);
}

/* ------------------------------------------------------------ waking */

/* Sleeps "ms", then notes its key; outputs how long it slept. */
static int sleeper(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    int64_t t0 = now_ms();
    int rc = eddy_ctx_sleep(ctx, (uint64_t)input_int(ev, "ms"));
    if (rc != EDDY_OK)
        return rc;
    note(ctx, "woke");
    return eddy_ctx_send_output(ctx, json_integer(now_ms() - t0));
}

static void test_sleeps_wake_in_time_order_without_workers(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"a\",\"ms\":300}\n{\"key\":\"b\",\"ms\":100}\n"
                   "{\"key\":\"c\",\"ms\":200}\n");
    eddy_runtime *rt = runtime(f, sleeper, "1");
    trace[0] = '\0';
    int64_t t0 = now_ms();
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    int64_t took = now_ms() - t0;
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    assert_string_equal(trace, "\"b\":woke \"c\":woke \"a\":woke ");
    assert_int_equal(st.actions_executed, 3);
    assert_int_equal(st.async_calls, 0); /* no worker was used */
    assert_true(took >= 295);            /* the run waited for its sleepers */
    /* Each slept its time (the loop's clock counts whole milliseconds). */
    FILE *fp = fopen(f->out, "r");
    assert_non_null(fp);
    int slept[3], n = 0;
    while (n < 3 && fscanf(fp, "%d", &slept[n]) == 1)
        n++;
    fclose(fp);
    assert_int_equal(n, 3);
    assert_true(slept[0] >= 99 && slept[1] >= 199 && slept[2] >= 299);
}

/* Many sleepers at once, more than the runtime keeps timers for: the ones
 * beyond are closed and freed (the sanitizers check it), and with one
 * worker the sleeps overlap. */
static void test_many_sleepers_at_once(void **state)
{
    fixture *f = *state;
    enum { N = 1500 };
    FILE *fp = fopen(f->in, "w");
    assert_non_null(fp);
    for (int i = 0; i < N; i++)
        fprintf(fp, "{\"key\":%d,\"ms\":%d}\n", i, 50 + i % 50);
    for (int i = 0; i < N; i++) /* the same keys again: timers are reused */
        fprintf(fp, "{\"key\":%d,\"ms\":%d}\n", i, 1 + i % 20);
    fclose(fp);
    eddy_runtime *rt = runtime(f, sleeper, "1");
    trace[0] = '\0';
    int64_t t0 = now_ms();
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    int64_t took = now_ms() - t0;
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    assert_int_equal(st.actions_executed, 2 * N);
    assert_int_equal(st.outputs, 2 * N);
    assert_int_equal(st.async_calls, 0);
    assert_true(took < 30000); /* one after the other: over 100 s */
}

/* ------------------------------------------------------------ 0 ms */

/* Three actions on InputEvent: their tasks start ready together, in this
 * order (tasks of one event, none started yet). */
static eddy_runtime *three_actions(fixture *f, eddy_action_fn a, eddy_action_fn b, eddy_action_fn c)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "a", types, a, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "b", types, b, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "c", types, c, NULL), EDDY_OK);
    eddy_config *conf = eddy_config_new();
    assert_int_equal(eddy_config_set(conf, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(conf, "output", f->out, NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p, conf, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    eddy_config_free(conf);
    return rt;
}

static int yield_once(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    note(ctx, "a1");
    int rc = eddy_ctx_sleep(ctx, 0);
    note(ctx, "a2");
    return rc;
}

static int note_b(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    note(ctx, "b");
    return EDDY_OK;
}

static int note_c(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    note(ctx, "c");
    return EDDY_OK;
}

static void test_zero_yields_behind_every_ready_task(void **state)
{
    fixture *f = *state;
    /* Tasks going on after a wait pass those not started yet; a yield does
     * not: b and c run before a goes on. */
    write_input(f, "{\"key\":1}\n");
    eddy_runtime *rt = three_actions(f, yield_once, note_b, note_c);
    trace[0] = '\0';
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    assert_string_equal(trace, "1:a1 1:b 1:c 1:a2 ");
    assert_int_equal(st.actions_executed, 3);
}

/* Yields 100000 times: the tasks behind it are not starved meanwhile. */
static int spin(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        int rc = eddy_ctx_sleep(ctx, 0);
        if (rc != EDDY_OK)
            return rc;
    }
    note(ctx, "spun");
    return EDDY_OK;
}

static void test_zero_in_a_loop_starves_no_one(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n");
    eddy_runtime *rt = three_actions(f, spin, note_b, note_c);
    trace[0] = '\0';
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);
    assert_string_equal(trace, "1:b 1:c 1:spun ");
}

/* ------------------------------------------------------------ stopping */

static int canceled_seen;

/* Holds heap memory across an hour's sleep: a stop must let it unwind. */
static int long_sleeper(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    char *held = malloc(100);
    int rc;
    if (input_int(ev, "fail")) {
        rc = eddy_ctx_sleep(ctx, 50); /* the others are asleep by then */
        eddy_ctx_fail(ctx, "Boom", "it failed");
        rc = rc == EDDY_OK ? EDDY_EACTION : rc;
    } else {
        rc = eddy_ctx_sleep(ctx, 3600 * 1000);
        if (rc == EDDY_ECANCELED)
            canceled_seen++;
        /* A canceled action's next sleep is canceled at once, 0 ms too. */
        if (rc == EDDY_ECANCELED && eddy_ctx_sleep(ctx, 3600 * 1000) == EDDY_ECANCELED &&
            eddy_ctx_sleep(ctx, 0) == EDDY_ECANCELED)
            canceled_seen++;
    }
    free(held);
    return rc;
}

static void *stop_soon(void *arg)
{
    usleep(100000);
    eddy_runtime_stop(arg);
    return NULL;
}

static void test_stop_ends_a_long_sleep_at_once(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":3}\n{\"key\":1}\n");
    eddy_runtime *rt = runtime(f, long_sleeper, "1");
    pthread_t th;
    canceled_seen = 0;
    pthread_create(&th, NULL, stop_soon, rt);
    int64_t t0 = now_ms();
    assert_int_equal(eddy_runtime_run(rt), EDDY_ESTOPPED);
    int64_t took = now_ms() - t0;
    pthread_join(th, NULL);
    assert_true(took < 20000);          /* not the hour */
    assert_int_equal(canceled_seen, 6); /* the three sleepers unwound */
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.outputs, 0);
    assert_int_equal(st.actions_executed, 0);
    eddy_runtime_free(rt);
}

static void test_failure_ends_the_sleeps_of_other_keys(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":3,\"fail\":1}\n");
    eddy_runtime *rt = runtime(f, long_sleeper, "1");
    canceled_seen = 0;
    int64_t t0 = now_ms();
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    assert_true(now_ms() - t0 < 20000); /* not the hour */
    const eddy_error *e = eddy_runtime_error(rt);
    assert_non_null(e);
    assert_string_equal(eddy_error_type(e), "Boom");
    assert_int_equal(canceled_seen, 4);
    eddy_runtime_free(rt);
}

/* ------------------------------------------------------------ error codes */

typedef struct codes {
    eddy_ctx *first; /* key 1's context, asleep while key 2 runs */
    int null_rc, thread_rc, body_rc, other_rc, fail_rc;
} codes;

static codes seen;

static void *sleep_from_other_thread(void *arg)
{
    seen.thread_rc = eddy_ctx_sleep(arg, 1);
    return NULL;
}

static int body_sleeps(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)err;
    seen.body_rc = eddy_ctx_sleep(arg, 1);
    *result = NULL;
    return EDDY_OK;
}

static int code_checker(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    if (input_int(ev, "first")) {
        seen.first = ctx;
        int rc = eddy_ctx_sleep(ctx, 200);
        seen.first = NULL;
        return rc;
    }
    seen.null_rc = eddy_ctx_sleep(NULL, 1);
    pthread_t th;
    pthread_create(&th, NULL, sleep_from_other_thread, ctx);
    pthread_join(th, NULL);
    int rc = eddy_ctx_durable_execute(ctx, "body", NULL, body_sleeps, ctx, NULL, NULL);
    if (rc != EDDY_OK)
        return rc;
    /* Another action's context: its coroutine is not the one running. */
    seen.other_rc = seen.first != NULL ? eddy_ctx_sleep(seen.first, 1) : 0;
    return seen.other_rc; /* the action fails with it */
}

static void test_codes_where_a_sleep_cannot_suspend(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1,\"first\":1}\n{\"key\":2}\n");
    eddy_runtime *rt = runtime(f, code_checker, "1");
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    const eddy_error *e = eddy_runtime_error(rt);
    assert_non_null(e);
    assert_non_null(strstr(eddy_error_message(e), "key 2"));
    assert_non_null(strstr(eddy_error_message(e), "EDDY_ESTATE"));
    eddy_runtime_free(rt);
    assert_int_equal(seen.null_rc, EDDY_EINVAL);
    assert_int_equal(seen.thread_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.body_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.other_rc, EDDY_ESTATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sleeps_wake_in_time_order_without_workers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_sleepers_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_yields_behind_every_ready_task, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_in_a_loop_starves_no_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_ends_a_long_sleep_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_ends_the_sleeps_of_other_keys, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_codes_where_a_sleep_cannot_suspend, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
