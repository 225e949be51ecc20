/*
 * The operator through the public API, in process: scheduling order, thread
 * confinement, stopping with suspended actions, and error codes. Each test
 * frees its runtime; the sanitizer builds check that nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "eddy/eddy.h"
#include "exec/runtime.h" /* the gate test looks at the commit counters */
#include "util/fault.h"

typedef struct fixture {
    char dir[64];
    char in[96];
    char out[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/eddy-op-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->in, sizeof(f->in), "%s/in.jsonl", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.jsonl", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
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

static eddy_runtime *make_runtime(fixture *f, eddy_plan *plan, const char *threads)
{
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", f->out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "async-threads", threads, NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(plan, c, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    eddy_config_free(c);
    return rt;
}

/* ------------------------------------------------------------ scheduling order */

/* The order in which action steps ran, as "key:step" entries. */
static char trace[8192];

static void note(eddy_ctx *ctx, const char *what)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s:%s ", eddy_ctx_key(ctx), what);
    strncat(trace, buf, sizeof(trace) - strlen(trace) - 1);
}

static int noop_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = NULL;
    return EDDY_OK;
}

static int two_steps(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    note(ctx, "a");
    int rc = eddy_ctx_execute_async(ctx, noop_call, NULL, NULL, NULL, NULL);
    note(ctx, "b");
    return rc;
}

/* The first steps seen, and how many the gated call waits for: on its
 * worker, as a call still running would, so that no call completes before
 * the keys' first steps ran, however late the reader hands an input over
 * (under TSan on a busy machine key 1's call once completed before key 3's
 * input was read). At most 5 s, never for ever. */
static atomic_int firsts_seen;
static int firsts_wanted;

static int gated_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    for (int i = 0; i < 5000 && atomic_load(&firsts_seen) < firsts_wanted; i++)
        usleep(1000);
    *result = NULL;
    return EDDY_OK;
}

static int two_steps_gated(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    note(ctx, "a");
    atomic_fetch_add(&firsts_seen, 1);
    int rc = eddy_ctx_execute_async(ctx, gated_call, NULL, NULL, NULL, NULL);
    note(ctx, "b");
    return rc;
}

static void test_fifo_across_keys_and_order_within_key(void **state)
{
    fixture *f = *state;
    /* Three keys; key 1 has two inputs. Before any call completes, every
     * key's first step runs in input order; key 1's second input waits for
     * its first run to end. */
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":1}\n{\"key\":3}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "two", types, two_steps_gated, NULL), EDDY_OK);
    trace[0] = '\0';
    atomic_store(&firsts_seen, 0);
    firsts_wanted = 3;
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, 4);
    assert_int_equal(st.actions_executed, 4);
    assert_int_equal(st.async_calls, 4);
    assert_int_equal(st.runs_in_flight, 0);
    eddy_runtime_free(rt);
    /* The first steps of 1, 2, 3 come first, in that order. */
    assert_memory_equal(trace, "1:a 2:a 3:a ", strlen("1:a 2:a 3:a "));
    /* Key 1's second run starts only after its first finished. */
    const char *first_b = strstr(trace, "1:b");
    const char *second_a = strstr(first_b, "1:a");
    assert_non_null(first_b);
    assert_non_null(second_a);
}

/* A run that frees the last slot admits the next input at once, from its
 * end, also when it ends as it starts (nothing listens to InputEvent), that
 * is from within admission: every input is admitted and finished, once. */
static void test_admission_from_run_end(void **state)
{
    fixture *f = *state;
    enum { N = 200000 };
    FILE *fp = fopen(f->in, "w");
    assert_non_null(fp);
    for (int i = 0; i < N; i++)
        fprintf(fp, "{\"key\":%d}\n", i % 7);
    fclose(fp);
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {"Other", NULL};
    assert_int_equal(eddy_plan_add_action(p, "other", types, two_steps, NULL), EDDY_OK);
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "max-in-flight", "1", NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p, c, &err);
    assert_non_null(rt);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, N);
    assert_int_equal(st.runs_finished, N);
    assert_int_equal(st.runs_in_flight, 0);
    /* Every InputEvent went unhandled: counted each, its type kept once. */
    assert_int_equal(st.unhandled_events, N);
    assert_string_equal(eddy_runtime_unhandled_type(rt, 0), EDDY_INPUT_EVENT);
    assert_null(eddy_runtime_unhandled_type(rt, 1));
    assert_null(eddy_runtime_unhandled_type(rt, 100));
    eddy_runtime_free(rt);
    eddy_config_free(c);

    /* With a listener and one slot, runs of different keys still go one at
     * a time, in input order. */
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":3}\n");
    p = eddy_plan_new();
    const char *const in_types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "two", in_types, two_steps, NULL), EDDY_OK);
    c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "max-in-flight", "1", NULL), EDDY_OK);
    trace[0] = '\0';
    rt = eddy_runtime_new(p, c, &err);
    assert_non_null(rt);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    assert_string_equal(trace, "1:a 1:b 2:a 2:b 3:a 3:b ");
}

/* ------------------------------------------------------------ durable, with state */

static int echo_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    *result = json_deep_copy(args);
    return *result != NULL ? EDDY_OK : EDDY_ENOMEM;
}

/* Two durable calls on the pool, one on the mailbox, a count in memory. */
static int durable_steps(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    json_t *r1 = NULL, *r2 = NULL, *r3 = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "one", in, echo_call, NULL, &r1, NULL);
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute_async(ctx, "two", r1, echo_call, NULL, &r2, NULL);
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute(ctx, "three", r2, echo_call, NULL, &r3, NULL);
    eddy_memory *m = eddy_ctx_short_term_memory(ctx);
    json_t *n = rc == EDDY_OK ? eddy_memory_get(m, "n") : NULL;
    json_int_t count = json_integer_value(n) + 1;
    json_decref(n);
    if (rc == EDDY_OK)
        rc = eddy_memory_set(m, "n", json_integer(count));
    if (rc == EDDY_OK) {
        eddy_event *out =
            eddy_event_new(EDDY_OUTPUT_EVENT, json_pack("{s:{s:O, s:I}}", "output", "seq",
                                                        json_object_get(r3, "seq"), "n", count));
        rc = eddy_ctx_send_event(ctx, out);
    }
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    return rc;
}

/* Writes n inputs {"key": i % keys, "seq": i} and returns a config that
 * runs them with state in f->dir/state on threads worker threads. */
static eddy_config *state_run(fixture *f, int n, int keys, const char *threads)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/state", f->dir);
    FILE *fp = fopen(f->in, "w");
    assert_non_null(fp);
    for (int i = 0; i < n; i++)
        fprintf(fp, "{\"key\":%d,\"seq\":%d}\n", i % keys, i);
    fclose(fp);
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", f->out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "state", dir, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "async-threads", threads, NULL), EDDY_OK);
    return c;
}

/* A runtime of one action on InputEvent. */
static eddy_runtime *one_action_runtime_arg(eddy_config *c, const char *name, eddy_action_fn fn,
                                            void *arg)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, name, types, fn, arg), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p, c, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    return rt;
}

static eddy_runtime *one_action_runtime(eddy_config *c, const char *name, eddy_action_fn fn)
{
    return one_action_runtime_arg(c, name, fn, NULL);
}

/* A durable call whose fn succeeds with a NULL result: what the action
 * got, on the first run (which then fails) and on the rerun that replays
 * it, inline, on the pool, and in a batch (with and without a reconcile). */
static char null_seen[2][4][16];
static int null_runs;

static const char *kind(const json_t *v)
{
    return v == NULL ? "C NULL" : json_is_null(v) ? "json null" : "other";
}

static int null_result(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    json_t *a = json_true(), *b = json_true();
    int rc = eddy_ctx_durable_execute_async(ctx, "nothing", NULL, noop_call, NULL, &a, NULL);
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute(ctx, "nothing_inline", NULL, noop_call, NULL, &b, NULL);
    eddy_durable_call c[2] = {{.fn_id = "nothing_batch", .fn = noop_call},
                              {.fn_id = "nothing_batch", .fn = noop_call, .reconcile = noop_call}};
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute_async_all(ctx, c, 2);
    snprintf(null_seen[null_runs][0], sizeof(null_seen[0][0]), "%s", kind(a));
    snprintf(null_seen[null_runs][1], sizeof(null_seen[0][1]), "%s", kind(b));
    for (int i = 0; i < 2; i++) {
        snprintf(null_seen[null_runs][2 + i], sizeof(null_seen[0][0]), "%s", kind(c[i].result));
        json_decref(c[i].result);
    }
    json_decref(a);
    json_decref(b);
    if (rc == EDDY_OK && null_runs++ == 0) { /* journaled: fail, so that the rerun replays */
        eddy_ctx_fail(ctx, "test", "fail once");
        return EDDY_EACTION;
    }
    return rc;
}

static void test_durable_null_result_is_json_null_on_replay_too(void **state)
{
    fixture *f = *state;
    null_runs = 0;
    eddy_config *c = state_run(f, 1, 1, "1");
    eddy_runtime *rt = one_action_runtime(c, "nulls", null_result);
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    eddy_runtime_free(rt);
    rt = one_action_runtime(c, "nulls", null_result);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    assert_int_equal(st.durable_replayed, 4);
    for (int run = 0; run < 2; run++) {
        for (int i = 0; i < 4; i++)
            assert_string_equal(null_seen[run][i], "json null");
    }
}

/* A durable call journaled by a run that then failed: what its rerun got. */
static int answer_runs;
static char answer_seen[16];

static int answer_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = json_pack("{s:i}", "answer", 42);
    return EDDY_OK;
}

static int answer_once(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    json_t *r = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "answer", NULL, answer_call, NULL, &r, NULL);
    json_int_t n = json_integer_value(json_object_get(r, "answer"));
    snprintf(answer_seen, sizeof(answer_seen), "%s",
             json_is_null(r) ? "null"
             : n == 42       ? "42"
                             : "?");
    json_decref(r);
    if (rc == EDDY_OK && answer_runs++ == 0) { /* journaled: fail, so that reruns replay */
        eddy_ctx_fail(ctx, "test", "fail once");
        return EDDY_EACTION;
    }
    return rc;
}

/* A resumed run's journal is copied from the store, each string of each
 * record (alloc.journal): a copy that fails fails the resume with
 * EDDY_ENOMEM, for every field, where a record missing one replayed as
 * something else (a missing result as null) or crashed. The state is
 * left as it was: the next rerun replays the call. */
static void test_journal_copy_failure_fails_cleanly(void **state)
{
    fixture *f = *state;
    answer_runs = 0;
    eddy_config *c = state_run(f, 1, 1, "1");
    eddy_runtime *rt = one_action_runtime(c, "answer", answer_once);
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    eddy_runtime_free(rt);
    /* The call record's event id, action, fn_id, digest and result. */
    for (int nth = 1; nth <= 5; nth++) {
        char rule[32];
        snprintf(rule, sizeof(rule), "alloc.journal:%d", nth);
        eddy__fault_set(rule);
        answer_seen[0] = '\0';
        rt = one_action_runtime(c, "answer", answer_once);
        int rc = eddy_runtime_run(rt);
        int memory =
            rc == EDDY_ENOMEM && strcmp(eddy_error_type(eddy_runtime_error(rt)), "memory") == 0;
        eddy_runtime_free(rt);
        eddy__fault_set(NULL); /* (with no thread of the runtime left to check it) */
        if (!memory)
            fail_msg("copy %d: %s, the action saw '%s'", nth, eddy_err_name(rc), answer_seen);
        assert_string_equal(answer_seen, ""); /* the action never ran */
    }
    rt = one_action_runtime(c, "answer", answer_once);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    assert_int_equal(st.durable_replayed, 1);
    assert_string_equal(answer_seen, "42");
}

/* Commits are made durable by the store's syncer thread while the mailbox
 * goes on (under TSan too): every run finishes, in order per key, with its
 * calls journaled; a second run on the same state finds nothing to do. */
static void test_durable_runs_with_state(void **state)
{
    fixture *f = *state;
    char line[96];
    eddy_config *c = state_run(f, 300, 17, "3");
    eddy_runtime *rt = one_action_runtime(c, "steps", durable_steps);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, 300);
    assert_int_equal(st.outputs, 300);
    assert_int_equal(st.durable_calls, 900);
    assert_true(st.commits > 0);
    eddy_runtime_free(rt);

    /* Per key, the outputs come in input order with the count going up. */
    int next[17] = {0};
    int lines = 0;
    FILE *fp = fopen(f->out, "r");
    assert_non_null(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        int seq = -1, n = -1;
        assert_int_equal(sscanf(line, "{\"seq\":%d,\"n\":%d}", &seq, &n), 2);
        assert_int_equal(seq % 17 + 17 * next[seq % 17], seq);
        assert_int_equal(n, ++next[seq % 17]);
        lines++;
    }
    fclose(fp);
    assert_int_equal(lines, 300);

    rt = one_action_runtime(c, "steps", durable_steps);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, 0);
    assert_int_equal(st.outputs, 0);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

/* A C action goes on once the commit of its worker call's result is written
 * (before it is synced), but no call of its run runs before that sync. The
 * probe looks at the mailbox's counters from the action and from a call on
 * the mailbox (both on the mailbox thread). */
static struct {
    int early;      /* the action went on before its result was synced */
    int checked;    /* mailbox calls made */
    int violations; /* of them, made before the run's results were synced */
} gate_probe;

static int gate_check_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    eddy_ctx *ctx = arg;
    (void)err;
    gate_probe.checked++;
    if (ctx->key->need_txn > ctx->rt->txn_synced)
        gate_probe.violations++;
    *result = json_deep_copy(args);
    return *result != NULL ? EDDY_OK : EDDY_ENOMEM;
}

/* arg non-NULL: the first call runs on the mailbox (eddy_ctx_durable_execute). */
static int gated_steps(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    json_t *r1 = NULL, *r2 = NULL;
    int rc = arg != NULL
                 ? eddy_ctx_durable_execute(ctx, "one", in, echo_call, NULL, &r1, NULL)
                 : eddy_ctx_durable_execute_async(ctx, "one", in, echo_call, NULL, &r1, NULL);
    if (rc == EDDY_OK && ctx->key->need_txn > ctx->rt->txn_synced)
        gate_probe.early++;
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute(ctx, "two", r1, gate_check_call, ctx, &r2, NULL);
    if (rc == EDDY_OK) {
        eddy_event *out = eddy_event_new(EDDY_OUTPUT_EVENT, json_pack("{s:O}", "output", r2));
        rc = eddy_ctx_send_event(ctx, out);
    }
    json_decref(r1);
    json_decref(r2);
    return rc;
}

static void calls_wait_for_the_sync(void **state, int inline_first)
{
    fixture *f = *state;
    eddy_config *c = state_run(f, 200, 7, "2");
    static int yes = 1;
    eddy_runtime *rt = one_action_runtime_arg(c, "gated", gated_steps, inline_first ? &yes : NULL);
    memset(&gate_probe, 0, sizeof(gate_probe));
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.outputs, 200);
    assert_int_equal(gate_probe.checked, 200);
    assert_int_equal(gate_probe.violations, 0);
    /* Actions went on early (the commit written, its sync still running),
     * so the check above tested the wait. A sync rarely completes before
     * the action runs, and only when the mailbox thread was held up. */
    assert_true(gate_probe.early > 0);
    /* Fewer syncs than commits: runs' ends share the sync of their calls. */
    assert_true(st.syncs > 0);
    assert_true(st.syncs <= st.commits);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

static void test_calls_wait_for_the_sync(void **state)
{
    calls_wait_for_the_sync(state, 0);
}

/* The same with the first call on the mailbox: the action goes on once its
 * result is written too, rather than waiting for the sync to be resumed. */
static void test_calls_wait_for_the_sync_after_an_inline_call(void **state)
{
    calls_wait_for_the_sync(state, 1);
}

/* A sync that only output lines wait for is put off while a call runs, in
 * case the call's result comes soon and one sync can take both, but only
 * briefly (a timer wakes the loop): one run at a time, the first run's
 * output reaches the file while the second run's call is still running,
 * and that call waits for it (up to 5 s, which a put-off until the call's
 * end would reach). */
static struct {
    const char *out;
    int seen; /* the first run's line was in the file while the call ran */
} putoff_probe;

static int wait_for_line(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    struct stat sb;
    for (int i = 0; i < 5000 && !putoff_probe.seen; i++) {
        if (stat(putoff_probe.out, &sb) == 0 && sb.st_size > 0)
            putoff_probe.seen = 1;
        else
            usleep(1000);
    }
    *result = json_true();
    return EDDY_OK;
}

static int call_after_first(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    json_int_t seq = json_integer_value(json_object_get(in, "seq"));
    int rc = EDDY_OK;
    if (seq > 0) {
        json_t *r = NULL;
        rc = eddy_ctx_durable_execute_async(ctx, "wait", NULL, wait_for_line, NULL, &r, NULL);
        json_decref(r);
    }
    return rc == EDDY_OK ? eddy_ctx_send_output(ctx, json_pack("{s:I}", "seq", seq)) : rc;
}

static void test_put_off_sync_is_brief(void **state)
{
    fixture *f = *state;
    eddy_config *c = state_run(f, 2, 2, "1");
    assert_int_equal(eddy_config_set(c, "max-in-flight", "1", NULL), EDDY_OK);
    eddy_runtime *rt = one_action_runtime(c, "after", call_after_first);
    memset(&putoff_probe, 0, sizeof(putoff_probe));
    putoff_probe.out = f->out;
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.outputs, 2);
    assert_int_equal(putoff_probe.seen, 1);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

/* Outputs the InputEvent's id, which is derived from its key and run number. */
static int id_out(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    eddy_event *out = eddy_event_new(EDDY_OUTPUT_EVENT,
                                     json_pack("{s:{s:s}}", "output", "id", eddy_event_id(ev)));
    return eddy_ctx_send_event(ctx, out);
}

/* Run numbers come from one counter saved with the commits: a key whose
 * memory never changes (so whose row is never written) still gets new run
 * numbers after a restart, and so new event ids. */
static void test_run_numbers_survive_a_restart(void **state)
{
    fixture *f = *state;
    char line[128];
    eddy_config *c = state_run(f, 6, 2, "1");
    eddy_runtime *rt = one_action_runtime(c, "ids", id_out);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);
    /* More inputs for the same keys; the source resumes after the first six. */
    FILE *fp = fopen(f->in, "a");
    assert_non_null(fp);
    for (int i = 6; i < 12; i++)
        fprintf(fp, "{\"key\":%d,\"seq\":%d}\n", i % 2, i);
    fclose(fp);
    rt = one_action_runtime(c, "ids", id_out);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, 6);
    eddy_runtime_free(rt);
    eddy_config_free(c);

    char ids[12][32];
    int n = 0;
    fp = fopen(f->out, "r");
    assert_non_null(fp);
    while (n < 12 && fgets(line, sizeof(line), fp) != NULL) {
        assert_int_equal(sscanf(line, "{\"id\":\"%31[0-9a-f]\"}", ids[n]), 1);
        for (int j = 0; j < n; j++)
            assert_string_not_equal(ids[j], ids[n]);
        n++;
    }
    fclose(fp);
    assert_int_equal(n, 12);
}

/* ------------------------------------------------------------ confinement */

typedef struct confine {
    eddy_ctx *ctx;
    int send_rc, output_rc, fail_rc, async_rc, batch_rc;
    int key_null, stm_null;
} confine;

static void *from_other_thread(void *arg)
{
    confine *c = arg;
    eddy_event *ev = eddy_event_new("X", NULL);
    c->send_rc = eddy_ctx_send_event(c->ctx, ev);
    eddy_event_free(ev);
    c->output_rc = eddy_ctx_send_output(c->ctx, json_integer(1)); /* freed, too */
    eddy_memory *m = eddy_ctx_sensory_memory(c->ctx);
    c->stm_null = m == NULL;
    c->key_null = eddy_ctx_key(c->ctx) == NULL;
    c->fail_rc = eddy_ctx_fail(c->ctx, "x", "y");
    c->async_rc = eddy_ctx_execute_async(c->ctx, noop_call, NULL, NULL, NULL, NULL);
    eddy_durable_call one = {.fn_id = "noop", .fn = noop_call};
    c->batch_rc = eddy_ctx_durable_execute_async_all(c->ctx, &one, 1);
    return NULL;
}

static confine seen;

static int confine_action(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    seen.ctx = ctx;
    pthread_t th;
    pthread_create(&th, NULL, from_other_thread, &seen);
    pthread_join(th, NULL);
    return EDDY_OK;
}

typedef struct memcheck {
    eddy_memory *m;
    int set_rc, exists_rc, get_null, names_null, newobj_rc;
} memcheck;

static void *memory_from_other_thread(void *arg)
{
    memcheck *c = arg;
    c->set_rc = eddy_memory_set(c->m, "a", json_integer(1));
    c->exists_rc = eddy_memory_exists(c->m, "a");
    c->get_null = eddy_memory_get(c->m, "a") == NULL;
    c->names_null = eddy_memory_field_names(c->m, "") == NULL;
    c->newobj_rc = eddy_memory_new_object(c->m, "o");
    return NULL;
}

static memcheck mseen;

static int memory_confine_action(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    mseen.m = eddy_ctx_short_term_memory(ctx);
    assert_int_equal(eddy_memory_set(mseen.m, "a", json_integer(7)), EDDY_OK);
    pthread_t th;
    pthread_create(&th, NULL, memory_from_other_thread, &mseen);
    pthread_join(th, NULL);
    /* Nothing changed: the value set on the right thread is still there. */
    json_t *v = eddy_memory_get(mseen.m, "a");
    assert_int_equal(json_integer_value(v), 7);
    json_decref(v);
    assert_int_equal(eddy_memory_exists(mseen.m, "o"), 0);
    return EDDY_OK;
}

static void test_thread_confinement(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\"}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "confine", types, confine_action, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "mem", types, memory_confine_action, NULL), EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);
    assert_int_equal(seen.send_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.output_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.fail_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.async_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(seen.batch_rc, EDDY_EWRONGTHREAD);
    assert_true(seen.key_null);
    assert_true(seen.stm_null);
    assert_int_equal(mseen.set_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(mseen.exists_rc, EDDY_EWRONGTHREAD);
    assert_int_equal(mseen.newobj_rc, EDDY_EWRONGTHREAD);
    assert_true(mseen.get_null);
    assert_true(mseen.names_null);
}

/* ------------------------------------------------------------ stale handles */

/* A context and memory handles kept past their action execution. Task
 * structs are recycled: "first" keeps its handles, "second" sends Third and
 * Fourth, and Third's task is first's struct again (checked), suspended in a
 * call when Fourth uses the kept handles: each call is refused, and Third's
 * memory and events are untouched. */
static struct {
    eddy_ctx *ctx;
    eddy_memory *stm, *sensory;
    int third_is_recycled, third_clean;
    int set, new_object, exists, send, output, fail, async, durable, durable_async, durable_all;
    int get_null, names_null, key_null, stm_null, sensory_null, own_ok;
} stale;

static int stale_first(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    stale.ctx = ctx;
    stale.stm = eddy_ctx_short_term_memory(ctx);
    stale.sensory = eddy_ctx_sensory_memory(ctx);
    return eddy_ctx_send_event(ctx, eddy_event_new("Second", NULL));
}

static int stale_second(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    int rc = eddy_ctx_send_event(ctx, eddy_event_new("Third", NULL));
    return rc != EDDY_OK ? rc : eddy_ctx_send_event(ctx, eddy_event_new("Fourth", NULL));
}

static int sleep_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    usleep(50000);
    *result = NULL;
    return EDDY_OK;
}

static int stale_third(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    stale.third_is_recycled = ctx == stale.ctx;
    int rc = eddy_ctx_execute_async(ctx, sleep_call, NULL, NULL, NULL, NULL);
    stale.third_clean = eddy_memory_exists(eddy_ctx_short_term_memory(ctx), "stale") == 0 &&
                        eddy_memory_exists(eddy_ctx_sensory_memory(ctx), "stale") == 0;
    return rc;
}

static int stale_fourth(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    json_t *r = json_true();
    eddy_event *e = eddy_event_new("Nobody", NULL);
    stale.set = eddy_memory_set(stale.stm, "stale", json_true());
    stale.new_object = eddy_memory_new_object(stale.sensory, "stale");
    stale.exists = eddy_memory_exists(stale.stm, "");
    stale.get_null = eddy_memory_get(stale.stm, "") == NULL;
    stale.names_null = eddy_memory_field_names(stale.sensory, "") == NULL;
    stale.key_null = eddy_ctx_key(stale.ctx) == NULL;
    stale.stm_null = eddy_ctx_short_term_memory(stale.ctx) == NULL;
    stale.sensory_null = eddy_ctx_sensory_memory(stale.ctx) == NULL;
    stale.send = eddy_ctx_send_event(stale.ctx, e);
    eddy_event_free(e);
    stale.output = eddy_ctx_send_output(stale.ctx, json_true());
    stale.fail = eddy_ctx_fail(stale.ctx, "x", "y");
    stale.async = eddy_ctx_execute_async(stale.ctx, noop_call, NULL, NULL, NULL, NULL);
    stale.durable = eddy_ctx_durable_execute(stale.ctx, "d", NULL, noop_call, NULL, &r, NULL);
    stale.durable_async =
        eddy_ctx_durable_execute_async(stale.ctx, "d", NULL, noop_call, NULL, NULL, NULL);
    eddy_durable_call dc = {.fn_id = "d", .fn = noop_call};
    stale.durable_all = eddy_ctx_durable_execute_async_all(stale.ctx, &dc, 1);
    /* The action's own handles still work. */
    stale.own_ok =
        eddy_memory_set(eddy_ctx_short_term_memory(ctx), "own", json_true()) == EDDY_OK &&
        eddy_ctx_key(ctx) != NULL && r == NULL;
    if (arg != NULL) /* fail with the code of the last refused call, without a text */
        return eddy_memory_set(stale.stm, "again", json_true());
    return EDDY_OK;
}

static eddy_runtime *stale_runtime(fixture *f, int fail)
{
    eddy_plan *p = eddy_plan_new();
    const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    const char *const second[] = {"Second", NULL};
    const char *const third[] = {"Third", NULL};
    const char *const fourth[] = {"Fourth", NULL};
    assert_int_equal(eddy_plan_add_action(p, "first", input, stale_first, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "second", second, stale_second, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "third", third, stale_third, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "fourth", fourth, stale_fourth, fail ? p : NULL),
                     EDDY_OK);
    memset(&stale, 0, sizeof(stale));
    return make_runtime(f, p, "1");
}

static void test_stale_handles_are_refused(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\"}\n");
    eddy_runtime *rt = stale_runtime(f, 0);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    eddy_runtime_free(rt);
    assert_true(stale.third_is_recycled); /* the premise: first's struct is third's */
    assert_true(stale.third_clean);
    assert_int_equal(st.outputs, 0);
    assert_int_equal(st.unhandled_events, 0);
    assert_int_equal(stale.set, EDDY_ESTATE);
    assert_int_equal(stale.new_object, EDDY_ESTATE);
    assert_int_equal(stale.exists, EDDY_ESTATE);
    assert_int_equal(stale.send, EDDY_ESTATE);
    assert_int_equal(stale.output, EDDY_ESTATE);
    assert_int_equal(stale.fail, EDDY_ESTATE);
    assert_int_equal(stale.async, EDDY_ESTATE);
    assert_int_equal(stale.durable, EDDY_ESTATE);
    assert_int_equal(stale.durable_async, EDDY_ESTATE);
    assert_int_equal(stale.durable_all, EDDY_ESTATE);
    assert_true(stale.get_null);
    assert_true(stale.names_null);
    assert_true(stale.key_null);
    assert_true(stale.stm_null);
    assert_true(stale.sensory_null);
    assert_true(stale.own_ok);

    /* An action that returns the refusal's code fails with its reason. */
    rt = stale_runtime(f, 1);
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    const char *msg = eddy_error_message(eddy_runtime_error(rt));
    assert_non_null(strstr(msg, "action 'fourth'"));
    assert_non_null(strstr(msg, "eddy_memory_set: the memory handle is not the running action "
                                "execution's"));
    eddy_runtime_free(rt);
}

/* ------------------------------------------------------------ UTF-8 */

static int echo_ok(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return EDDY_OK;
}

static int bad_fn_id(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    json_t *r = json_true();
    int rc = eddy_ctx_durable_execute(ctx, "bad\xff", NULL, noop_call, NULL, &r, NULL);
    assert_null(r);
    return rc;
}

/* What the batch call with a fn_id that is not UTF-8 filled in. */
static int bad_batch_filled;

static int bad_batch_fn_id(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    eddy_durable_call c[2] = {{.fn_id = "good", .fn = noop_call},
                              {.fn_id = "bad\xff", .fn = noop_call}};
    int rc = eddy_ctx_durable_execute_async_all(ctx, c, 2);
    bad_batch_filled = c[0].rc == EDDY_EINVAL && c[1].rc == EDDY_EINVAL && c[0].result == NULL &&
                       c[1].result == NULL && c[0].err == NULL && c[1].err == NULL;
    return rc;
}

static int bad_type(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    return eddy_ctx_send_event(ctx, eddy_event_new("Bad\xff\"type", NULL));
}

/* Event types, action names and durable fn_ids are journaled and reported
 * as JSON: one that is not UTF-8 is refused where it is given. */
static void test_strings_must_be_utf8(void **state)
{
    fixture *f = *state;
    const char *const bad[] = {"\xff", "a\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        assert_null(eddy_event_new(bad[i], json_object()));
    eddy_event *ok = eddy_event_new("Caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80", NULL);
    assert_non_null(ok);
    eddy_event_free(ok);

    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    const char *const bad_types[] = {EDDY_INPUT_EVENT, "T\xff", NULL};
    assert_int_equal(eddy_plan_add_action(p, "act\xff", types, echo_ok, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "action 'act\\xff' has a name that is not UTF-8");
    assert_int_equal(eddy_plan_add_action(p, "act", bad_types, echo_ok, NULL), EDDY_EINVAL);
    assert_string_equal(p->why, "action 'act' listens to an event type that is not UTF-8");
    assert_int_equal(eddy_plan_action_count(p), 0);
    assert_int_equal(eddy_plan_add_action(p, "fn_id", types, bad_fn_id, NULL), EDDY_OK);
    write_input(f, "{\"key\":\"k\"}\n");
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    assert_non_null(strstr(eddy_error_message(eddy_runtime_error(rt)),
                           "invalid argument (a durable call's fn_id is not UTF-8)"));
    eddy_runtime_free(rt);

    /* The batch call refuses it as the single call does: nothing runs. */
    p = eddy_plan_new();
    assert_int_equal(eddy_plan_add_action(p, "batch", types, bad_batch_fn_id, NULL), EDDY_OK);
    bad_batch_filled = 0;
    rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    assert_non_null(strstr(eddy_error_message(eddy_runtime_error(rt)),
                           "invalid argument (a durable call's fn_id is not UTF-8)"));
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.durable_calls, 0);
    assert_int_equal(st.async_calls, 0);
    assert_true(bad_batch_filled);
    eddy_runtime_free(rt);

    p = eddy_plan_new();
    assert_int_equal(eddy_plan_add_action(p, "type", types, bad_type, NULL), EDDY_OK);
    rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    assert_non_null(strstr(eddy_error_message(eddy_runtime_error(rt)),
                           "eddy_event_new() refused its type (empty or not UTF-8)"));
    eddy_runtime_free(rt);
}

/* Handles kept past their action execution whose task struct is on the
 * free list, not recycled: debug builds poison it (0xdd), and release
 * builds free it once enough are kept, so a check that read the handle
 * would crash or read freed memory. "keep" keeps its handles and sends Pad;
 * Pad's task is made before keep's struct is freed and freed after it, so
 * that "use", of the key's next run, takes Pad's struct and keep's stays
 * on the free list. Every call with the kept handles is refused. */
static struct {
    eddy_ctx *ctx;
    eddy_memory *stm, *sensory;
    int not_recycled;
    int key_null, stm_null, sensory_null, get_null, names_null;
    int send, output, fail, fail_error, set, new_object, exists, async, async_all, sleep, durable,
        durable_async, reconciled, reconciled_null, durable_all;
    int durable_all_filled, own_ok;
} freed;

static int freed_action(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    if (strcmp(json_string_value(json_object_get(in, "op")), "keep") == 0) {
        freed.ctx = ctx;
        freed.stm = eddy_ctx_short_term_memory(ctx);
        freed.sensory = eddy_ctx_sensory_memory(ctx);
        return eddy_ctx_send_event(ctx, eddy_event_new("Pad", NULL));
    }
    freed.not_recycled = ctx != freed.ctx;
    eddy_ctx *k = freed.ctx;
    freed.key_null = eddy_ctx_key(k) == NULL;
    freed.stm_null = eddy_ctx_short_term_memory(k) == NULL;
    freed.sensory_null = eddy_ctx_sensory_memory(k) == NULL;
    eddy_event *e = eddy_event_new("Nobody", NULL);
    freed.send = eddy_ctx_send_event(k, e);
    eddy_event_free(e);
    freed.output = eddy_ctx_send_output(k, json_true());
    freed.fail = eddy_ctx_fail(k, "x", "y");
    freed.fail_error = eddy_ctx_fail_error(k, eddy_error_new("x", "y"));
    freed.set = eddy_memory_set(freed.stm, "freed", json_true());
    freed.new_object = eddy_memory_new_object(freed.sensory, "freed");
    freed.exists = eddy_memory_exists(freed.stm, "");
    freed.get_null = eddy_memory_get(freed.stm, "") == NULL;
    freed.names_null = eddy_memory_field_names(freed.sensory, "") == NULL;
    freed.async = eddy_ctx_execute_async(k, noop_call, NULL, NULL, NULL, NULL);
    eddy_async_call ac = {.fn = noop_call};
    freed.async_all = eddy_ctx_execute_async_all(k, &ac, 1);
    freed.sleep = eddy_ctx_sleep(k, 1);
    json_t *r = json_true();
    freed.durable = eddy_ctx_durable_execute(k, "d", NULL, noop_call, NULL, &r, NULL);
    freed.durable_async = eddy_ctx_durable_execute_async(k, "d", NULL, noop_call, NULL, NULL, NULL);
    freed.reconciled =
        eddy_ctx_durable_execute_reconciled(k, "d", NULL, noop_call, noop_call, NULL, NULL, NULL);
    freed.reconciled_null =
        eddy_ctx_durable_execute_reconciled(k, "d", NULL, noop_call, NULL, NULL, NULL, NULL);
    eddy_durable_call dc = {.fn_id = "d", .fn = noop_call, .result = json_true()};
    freed.durable_all = eddy_ctx_durable_execute_async_all(k, &dc, 1);
    freed.durable_all_filled = dc.rc == EDDY_ESTATE && dc.result == NULL && dc.err == NULL;
    /* The action's own handles still work, and took nothing of the above. */
    eddy_memory *own = eddy_ctx_short_term_memory(ctx);
    freed.own_ok = r == NULL && eddy_memory_exists(own, "freed") == 0 &&
                   eddy_memory_set(own, "own", json_true()) == EDDY_OK &&
                   eddy_ctx_sleep(ctx, 0) == EDDY_OK && eddy_ctx_key(ctx) != NULL;
    return EDDY_OK;
}

typedef struct freed_other {
    int fail, exists;
} freed_other;

static void *freed_from_other_thread(void *arg)
{
    freed_other *o = arg;
    o->fail = eddy_ctx_fail(freed.ctx, "x", "y");
    o->exists = eddy_memory_exists(freed.sensory, "");
    return NULL;
}

static void test_freed_handles_are_refused(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\",\"op\":\"keep\"}\n{\"key\":\"k\",\"op\":\"use\"}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    const char *const pad[] = {"Pad", NULL};
    assert_int_equal(eddy_plan_add_action(p, "act", input, freed_action, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "pad", pad, echo_ok, NULL), EDDY_OK);
    memset(&freed, 0, sizeof(freed));
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_true(freed.not_recycled); /* the premise */
    assert_int_equal(st.actions_executed, 3);
    assert_int_equal(st.async_calls, 0);
    assert_int_equal(st.durable_calls, 0);
    assert_int_equal(st.outputs, 0);
    assert_int_equal(st.unhandled_events, 0);
    assert_true(freed.key_null);
    assert_true(freed.stm_null);
    assert_true(freed.sensory_null);
    assert_true(freed.get_null);
    assert_true(freed.names_null);
    assert_int_equal(freed.send, EDDY_ESTATE);
    assert_int_equal(freed.output, EDDY_ESTATE);
    assert_int_equal(freed.fail, EDDY_ESTATE);
    assert_int_equal(freed.fail_error, EDDY_ESTATE);
    assert_int_equal(freed.set, EDDY_ESTATE);
    assert_int_equal(freed.new_object, EDDY_ESTATE);
    assert_int_equal(freed.exists, EDDY_ESTATE);
    assert_int_equal(freed.async, EDDY_ESTATE);
    assert_int_equal(freed.async_all, EDDY_ESTATE);
    assert_int_equal(freed.sleep, EDDY_ESTATE);
    assert_int_equal(freed.durable, EDDY_ESTATE);
    assert_int_equal(freed.durable_async, EDDY_ESTATE);
    assert_int_equal(freed.reconciled, EDDY_ESTATE);
    assert_int_equal(freed.reconciled_null, EDDY_ESTATE);
    assert_int_equal(freed.durable_all, EDDY_ESTATE);
    assert_true(freed.durable_all_filled);
    assert_true(freed.own_ok);
    /* Between action executions, on the mailbox thread: not the running
     * action execution's either. From another thread: the wrong thread. */
    assert_int_equal(eddy_ctx_fail(freed.ctx, "x", "y"), EDDY_ESTATE);
    assert_int_equal(eddy_memory_exists(freed.stm, ""), EDDY_ESTATE);
    assert_null(eddy_ctx_key(freed.ctx));
    freed_other o = {0};
    pthread_t th;
    pthread_create(&th, NULL, freed_from_other_thread, &o);
    pthread_join(th, NULL);
    assert_int_equal(o.fail, EDDY_EWRONGTHREAD);
    assert_int_equal(o.exists, EDDY_EWRONGTHREAD);
    eddy_runtime_free(rt);
}

/* ------------------------------------------------------------ refusals in failures */

/* Makes a refused memory call, then (mode "then_ok") one that goes through,
 * and returns the refusal's code without a text of its own. */
static int refused_then(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    const char *mode = arg;
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    int rc;
    if (strcmp(mode, "epath") == 0) {
        assert_int_equal(eddy_memory_set(stm, "x", json_integer(1)), EDDY_OK);
        rc = eddy_memory_set(stm, "x.y", json_integer(2));
        assert_int_equal(rc, EDDY_EPATH);
        return rc;
    }
    if (strcmp(mode, "positive") == 0)
        return 5; /* no eddy code */
    if (strcmp(mode, "epath_object") == 0) {
        assert_int_equal(eddy_memory_new_object(stm, "o"), EDDY_OK);
        rc = eddy_memory_set(stm, "o", json_integer(2));
        assert_int_equal(rc, EDDY_EPATH);
        return rc;
    }
    if (strcmp(mode, "epath_new") == 0) {
        assert_int_equal(eddy_memory_set(stm, "v", json_integer(1)), EDDY_OK);
        rc = eddy_memory_new_object(stm, "v");
        assert_int_equal(rc, EDDY_EPATH);
        return rc;
    }
    rc = eddy_memory_set(stm, "a..b\xff", json_integer(1));
    assert_int_equal(rc, EDDY_EINVAL);
    if (strcmp(mode, "then_ok") == 0) {
        assert_int_equal(eddy_memory_set(stm, "ok", json_integer(1)), EDDY_OK);
        return EDDY_EINVAL; /* for a reason of the action's own */
    }
    if (strcmp(mode, "then_batch") == 0) { /* a batch of durable calls goes through */
        eddy_durable_call c = {.fn_id = "ok", .fn = noop_call};
        assert_int_equal(eddy_ctx_durable_execute_async_all(ctx, &c, 1), EDDY_OK);
        json_decref(c.result);
        return EDDY_EINVAL;
    }
    if (strcmp(mode, "then_get") == 0) /* a getter is no call that returns a code */
        json_decref(eddy_memory_get(stm, "ok"));
    return rc;
}

/* What the failure of an action in mode says. */
static char *failure_of(fixture *f, const char *mode)
{
    write_input(f, "{\"key\":\"k\"}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "refuser", types, refused_then, (void *)mode),
                     EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    char *msg = strdup(eddy_error_message(eddy_runtime_error(rt)));
    eddy_runtime_free(rt);
    return msg;
}

/* eddy_runtime_set_progress() during the run: a callback set by an action
 * is called from then on, and one that sets none stops the calls; once the
 * run has returned, EDDY_ESTATE. */
struct progress_probe {
    eddy_runtime *rt;
    int rc, calls;
};

static void count_and_stop(const eddy_stats *st, void *arg)
{
    (void)st;
    struct progress_probe *p = arg;
    p->calls++;
    p->rc = eddy_runtime_set_progress(p->rt, NULL, NULL, 0);
}

static int set_progress_inside(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    struct progress_probe *p = arg;
    p->rc = eddy_runtime_set_progress(p->rt, count_and_stop, p, 1);
    if (p->rc != EDDY_OK)
        return p->rc;
    return eddy_ctx_sleep(ctx, 50); /* the run lasts: the 1 ms timer fires */
}

static void test_progress_set_during_the_run(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\"}\n");
    struct progress_probe probe = {NULL, 1, 0};
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "probe", types, set_progress_inside, &probe), EDDY_OK);
    probe.rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(probe.rt), EDDY_OK);
    assert_int_equal(probe.calls, 1); /* called, then stopped by itself */
    assert_int_equal(probe.rc, EDDY_OK);
    assert_int_equal(eddy_runtime_set_progress(probe.rt, NULL, NULL, 0), EDDY_ESTATE);
    eddy_runtime_free(probe.rt);
}

/* Notes and warnings go to the hook a program set (as one message each,
 * without the "eddy: note: " prefix and newline), and to stderr again once
 * it is taken away. */
struct logged {
    int level;
    int count;
    char text[512];
};

static void on_log(int level, const char *message, void *arg)
{
    struct logged *l = arg;
    l->level = level;
    l->count++;
    snprintf(l->text, sizeof(l->text), "%s", message);
}

static int do_nothing(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return EDDY_OK;
}

static void test_notes_go_to_the_log_hook(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\"}\n{\"key\":"); /* a last line not complete yet */
    char st[128];
    snprintf(st, sizeof(st), "%s/st", f->dir);
    static struct logged l; /* static: the hook must not outlive what it points to */
    memset(&l, 0, sizeof(l));
    eddy_set_log_hook(on_log, &l);
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "a", types, do_nothing, NULL), EDDY_OK);
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", f->out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "state", st, NULL), EDDY_OK);
    eddy_runtime *rt = eddy_runtime_new(p, c, NULL);
    assert_non_null(rt);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    eddy_set_log_hook(NULL, NULL);
    assert_int_equal(l.count, 1);
    assert_int_equal(l.level, EDDY_LOG_NOTE);
    char want[512];
    snprintf(want, sizeof(want),
             "line 2 of %s (7 bytes) has no newline and is not complete JSON: it is left unread, "
             "and the next run with this state takes it once it is complete",
             f->in);
    assert_string_equal(l.text, want);
}

/* A refusal explains an action's failure only when it was the action's last
 * call that returns a code, and its text names the path. */
static void test_refusal_is_named_when_it_was_the_last_call(void **state)
{
    fixture *f = *state;
    char *msg = failure_of(f, "last");
    assert_non_null(strstr(msg, "EDDY_EINVAL: invalid argument (eddy_memory_set: the path "
                                "'a..b\\xff' is not names (UTF-8, not empty) joined by dots)"));
    free(msg);
    msg = failure_of(f, "then_get");
    assert_non_null(strstr(msg, "(eddy_memory_set: the path 'a..b\\xff'"));
    free(msg);
    msg = failure_of(f, "then_ok");
    assert_null(strstr(msg, "eddy_memory_set"));
    assert_non_null(strstr(msg, "EDDY_EINVAL: invalid argument"));
    free(msg);
    msg = failure_of(f, "then_batch");
    assert_null(strstr(msg, "eddy_memory_set"));
    assert_non_null(strstr(msg, "EDDY_EINVAL: invalid argument"));
    free(msg);
    msg = failure_of(f, "epath");
    assert_non_null(strstr(msg, "EDDY_EPATH: memory path conflict"));
    assert_non_null(strstr(msg, "(eddy_memory_set: on the path 'x.y', 'x' holds a value that "
                                "is not an object, so nothing stands below it (set an object "
                                "there first)"));
    free(msg);
    msg = failure_of(f, "positive");
    assert_non_null(strstr(msg, "EDDY_UNKNOWN: the action returned 5, which is no eddy error code "
                                "(an action returns EDDY_OK, a negative EDDY_E* code, or the code "
                                "eddy_ctx_fail() returns)"));
    free(msg);
    msg = failure_of(f, "epath_object");
    assert_non_null(strstr(msg, "(eddy_memory_set: an object stands at the path 'o' and the "
                                "value is not one (only an object replaces an object)"));
    free(msg);
    msg = failure_of(f, "epath_new");
    assert_non_null(strstr(msg, "(eddy_memory_new_object: a value that is not an object stands "
                                "at the path 'v' (set an object there to replace it)"));
    free(msg);
}

typedef struct runner {
    eddy_runtime *rt;
    int rc;
} runner;

static void *run_elsewhere(void *arg)
{
    runner *r = arg;
    r->rc = eddy_runtime_run(r->rt);
    return NULL;
}

static int echo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    return eddy_ctx_send_event(ctx,
                               eddy_event_new(EDDY_OUTPUT_EVENT, json_pack("{s:O}", "output", in)));
}

static void test_runtime_calls_and_codes(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":\"k\"}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    const char *const none[] = {NULL};
    const char *const output[] = {EDDY_OUTPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "echo", types, echo, NULL), EDDY_OK);
    assert_int_equal(eddy_plan_add_action(p, "echo", types, echo, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_plan_add_action(p, "", types, echo, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_plan_add_action(p, "x", none, echo, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_plan_add_action(p, "x", output, echo, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_plan_add_action(p, "x", types, NULL, NULL), EDDY_EINVAL);
    assert_int_equal(eddy_plan_action_count(p), 1);
    assert_string_equal(eddy_plan_action_name(p, 0), "echo");
    assert_null(eddy_plan_action_name(p, 1));
    assert_string_equal(eddy_plan_action_event_type(p, 0, 0), EDDY_INPUT_EVENT);
    assert_null(eddy_plan_action_event_type(p, 0, 1));
    assert_null(eddy_plan_action_event_type(p, 1, 0));
    assert_null(eddy_plan_action_event_type(NULL, 0, 0));

    eddy_runtime *rt = make_runtime(f, p, "2");
    /* Another thread may not run it. */
    runner r = {.rt = rt};
    pthread_t th;
    pthread_create(&th, NULL, run_elsewhere, &r);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, EDDY_EWRONGTHREAD);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    assert_int_equal(eddy_runtime_run(rt), EDDY_ESTATE); /* once only */
    assert_null(eddy_runtime_error(rt));
    eddy_runtime_free(rt);
    eddy_runtime_free(NULL);

    /* An empty plan is refused and stays the caller's. */
    eddy_plan *empty = eddy_plan_new();
    eddy_config *c = eddy_config_new();
    eddy_error *err = NULL;
    assert_null(eddy_runtime_new(empty, c, &err));
    assert_non_null(strstr(eddy_error_message(err), "no action"));
    eddy_error_free(err);
    eddy_plan_free(empty);
    eddy_config_free(c);
}

/* ------------------------------------------------------------ several durable calls */

static int bare_failure(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)result;
    (void)err;
    return EDDY_EINVAL; /* and no error object */
}

static int too_deep_result(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    json_t *v = json_array();
    for (int i = 0; i < EDDY_VALUE_MAX_DEPTH; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    *result = v;
    return EDDY_OK;
}

static struct {
    int runs;
    int failures; /* checks that did not hold, by line */
} batch_seen;

#define BATCH_CHECK(cond)                        \
    do {                                         \
        if (!(cond) && batch_seen.failures == 0) \
            batch_seen.failures = __LINE__;      \
    } while (0)

/* eddy_ctx_durable_execute_async_all's refusals (every rc set to the code,
 * no position taken), then four calls: a result, a failure without an
 * error object, a result too deep, and a call with a reconciler. */
static int batch_action(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    batch_seen.runs++;
    BATCH_CHECK(eddy_ctx_durable_execute_async_all(ctx, NULL, 0) == EDDY_OK);
    BATCH_CHECK(eddy_ctx_durable_execute_async_all(NULL, NULL, 0) == EDDY_EINVAL);
    BATCH_CHECK(eddy_ctx_durable_execute_async_all(ctx, NULL, 2) == EDDY_EINVAL);
    eddy_durable_call bad[2] = {{.fn_id = "a", .args = in, .fn = echo_call},
                                {.fn_id = "b", .args = in, .fn = NULL}};
    BATCH_CHECK(eddy_ctx_durable_execute_async_all(ctx, bad, 2) == EDDY_EINVAL);
    BATCH_CHECK(bad[0].rc == EDDY_EINVAL && bad[1].rc == EDDY_EINVAL);
    BATCH_CHECK(bad[0].result == NULL && bad[0].err == NULL);
    bad[1].fn = echo_call;
    bad[1].fn_id = "";
    BATCH_CHECK(eddy_ctx_durable_execute_async_all(ctx, bad, 2) == EDDY_EINVAL);

    eddy_durable_call calls[4] = {
        {.fn_id = "echo", .args = in, .fn = echo_call},
        {.fn_id = "bare", .args = in, .fn = bare_failure},
        {.fn_id = "deep", .args = in, .fn = too_deep_result},
        {.fn_id = "echo", .args = in, .fn = echo_call, .reconcile = bare_failure},
    };
    int rc = eddy_ctx_durable_execute_async_all(ctx, calls, 4);
    BATCH_CHECK(rc == EDDY_ECALL);
    BATCH_CHECK(calls[0].rc == EDDY_OK && json_equal(calls[0].result, in) && calls[0].err == NULL);
    BATCH_CHECK(calls[1].rc == EDDY_ECALL && calls[1].result == NULL && calls[1].err != NULL &&
                strcmp(eddy_error_type(calls[1].err), "EDDY_EINVAL") == 0);
    BATCH_CHECK(calls[2].rc == EDDY_ECALL && calls[2].result == NULL && calls[2].err != NULL &&
                strcmp(eddy_error_type(calls[2].err), "limit") == 0);
    BATCH_CHECK(calls[3].rc == EDDY_OK && json_equal(calls[3].result, in));
    for (int i = 0; i < 4; i++) {
        json_decref(calls[i].result);
        eddy_error_free(calls[i].err);
    }
    /* The next durable call takes the position after the four. */
    json_t *r = NULL;
    rc = eddy_ctx_durable_execute_async(ctx, "after", in, echo_call, NULL, &r, NULL);
    BATCH_CHECK(rc == EDDY_OK);
    json_decref(r);
    return rc;
}

/* In memory and with a state: the refusals take no position, the batch
 * four, in order. */
static void test_durable_batch_calls(void **state)
{
    fixture *f = *state;
    for (int durable = 0; durable <= 1; durable++) {
        memset(&batch_seen, 0, sizeof(batch_seen));
        eddy_config *c = state_run(f, 3, 2, "2");
        if (!durable)
            assert_int_equal(eddy_config_set(c, "state", "", NULL), EDDY_OK);
        eddy_runtime *rt = one_action_runtime(c, "batch", batch_action);
        assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
        eddy_stats st;
        eddy_runtime_stats(rt, &st);
        assert_int_equal(batch_seen.runs, 3);
        if (batch_seen.failures != 0)
            fail_msg("check at line %d did not hold", batch_seen.failures);
        assert_int_equal(st.durable_calls, 3 * 5);
        assert_int_equal(st.async_calls, 3 * 5);
        eddy_runtime_free(rt);
        eddy_config_free(c);
    }
}

/* ------------------------------------------------------------ outputs */

static json_t *kept_attrs; /* attributes of a sent OutputEvent the action kept */

/* Per input: two outputs through eddy_ctx_send_output (the second reuses
 * nothing yet within the execution; later runs reuse released events), one
 * through eddy_event_new whose attributes the action keeps a reference to
 * (the first run only), and the error cases. */
static int outputs(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *id = json_object_get(json_object_get(eddy_event_attrs(ev), "input"), "id");
    assert_int_equal(eddy_ctx_send_output(ctx, NULL), EDDY_EINVAL);
    /* The output is stolen, also on failure: of a reference held twice, one
     * is left. */
    json_t *held = json_incref(json_string("held"));
    assert_int_equal(eddy_ctx_send_output(NULL, held), EDDY_EINVAL);
    assert_int_equal(held->refcount, 1);
    json_decref(held);
    json_t *deep = json_array();
    for (int i = 0; i < EDDY_VALUE_MAX_DEPTH; i++) {
        json_t *outer = json_array();
        json_array_append_new(outer, deep);
        deep = outer;
    }
    assert_int_equal(eddy_ctx_send_output(ctx, json_incref(deep)), EDDY_ELIMIT);
    assert_int_equal(deep->refcount, 1);
    json_decref(deep);
    int rc = eddy_ctx_send_output(ctx, json_pack("{s:O, s:i}", "id", id, "n", 1));
    if (rc == EDDY_OK)
        rc = eddy_ctx_send_output(ctx, json_pack("{s:O, s:i}", "id", id, "n", 2));
    if (rc == EDDY_OK && kept_attrs == NULL) {
        kept_attrs = json_pack("{s:s}", "output", "kept");
        rc = eddy_ctx_send_event(ctx, eddy_event_new(EDDY_OUTPUT_EVENT, json_incref(kept_attrs)));
    }
    return rc;
}

static void test_send_output(void **state)
{
    fixture *f = *state;
    char in[4096] = "";
    for (int i = 0; i < 100; i++) {
        size_t n = strlen(in);
        snprintf(in + n, sizeof(in) - n, "{\"key\":\"k%d\",\"id\":%d}\n", i % 7, i);
    }
    write_input(f, in);
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "outputs", types, outputs, NULL), EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "1");
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);

    /* The event the action kept a hold on was not reused: its attributes
     * are as they were sent. */
    assert_non_null(kept_attrs);
    assert_string_equal(json_string_value(json_object_get(kept_attrs, "output")), "kept");
    assert_int_equal(json_object_size(kept_attrs), 1);
    json_decref(kept_attrs);
    kept_attrs = NULL;

    /* Every output once, in order within its key, each with its own value. */
    FILE *fp = fopen(f->out, "r");
    assert_non_null(fp);
    char line[256];
    int n = 0, kept = 0, seen_n[100][2] = {{0}};
    while (fgets(line, sizeof(line), fp) != NULL) {
        n++;
        if (strcmp(line, "\"kept\"\n") == 0) {
            kept++;
            continue;
        }
        int id, k;
        assert_int_equal(sscanf(line, "{\"id\":%d,\"n\":%d}", &id, &k), 2);
        assert_true(id >= 0 && id < 100 && (k == 1 || k == 2));
        assert_int_equal(seen_n[id][k - 1], 0);
        if (k == 2)
            assert_int_equal(seen_n[id][0], 1); /* the first before the second */
        seen_n[id][k - 1] = 1;
    }
    fclose(fp);
    assert_int_equal(kept, 1);
    assert_int_equal(n, 201);
}

/* ------------------------------------------------------------ stopping */

static int slow_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    usleep(20000);
    *result = json_true();
    return EDDY_OK;
}

static int canceled_seen;

/* Holds heap memory across its suspension: a stop must let it unwind. */
static int slow_action(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    char *held = malloc(100);
    json_t *res = NULL;
    int rc = EDDY_OK;
    for (int i = 0; i < 1000 && rc == EDDY_OK; i++) {
        rc = eddy_ctx_execute_async(ctx, slow_call, NULL, NULL, &res, NULL);
        json_decref(res);
        res = NULL;
    }
    if (rc == EDDY_ECANCELED)
        canceled_seen++;
    free(held);
    return rc;
}

typedef struct stopper {
    eddy_runtime *rt;
} stopper;

static void *stop_soon(void *arg)
{
    stopper *s = arg;
    usleep(100000);
    eddy_runtime_stop(s->rt);
    return NULL;
}

static void test_stop_unwinds_suspended_actions(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":3}\n{\"key\":1}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "slow", types, slow_action, NULL), EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "2");
    stopper s = {.rt = rt};
    pthread_t th;
    canceled_seen = 0;
    pthread_create(&th, NULL, stop_soon, &s);
    assert_int_equal(eddy_runtime_run(rt), EDDY_ESTOPPED);
    pthread_join(th, NULL);
    assert_int_equal(canceled_seen, 3); /* every suspended action unwound */
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.outputs, 0);
    eddy_runtime_free(rt);
}

static int failing(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    if (json_is_true(json_object_get(in, "fail"))) {
        eddy_ctx_fail(ctx, "Boom", "it failed");
        return EDDY_EACTION;
    }
    return slow_action(ctx, ev, arg);
}

static void test_failure_stops_with_message_and_unwinds(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n{\"key\":2}\n{\"key\":3,\"fail\":true}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "failing", types, failing, NULL), EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "2");
    canceled_seen = 0;
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    const eddy_error *e = eddy_runtime_error(rt);
    assert_non_null(e);
    assert_string_equal(eddy_error_type(e), "Boom");
    assert_non_null(strstr(eddy_error_message(e), "action 'failing'"));
    assert_non_null(strstr(eddy_error_message(e), "key 3"));
    assert_non_null(strstr(eddy_error_message(e), "it failed"));
    assert_int_equal(canceled_seen, 2);
    eddy_runtime_free(rt);
}

/* After a stop, eddy_ctx_execute_async_all() starts nothing and fills every
 * call as canceled (eddy.h), whatever the caller left in them. */
static struct {
    int rc, first_rc;
    eddy_async_call calls[2];
} after_stop;

static int all_after_stop(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    if (json_is_true(json_object_get(in, "fail")))
        return failing(ctx, ev, arg);
    json_t *res = NULL;
    after_stop.first_rc = eddy_ctx_execute_async(ctx, slow_call, NULL, NULL, &res, NULL);
    json_decref(res);
    for (int i = 0; i < 2; i++)
        after_stop.calls[i] = (eddy_async_call){.fn = noop_call,
                                                .rc = 12345,
                                                .result = (json_t *)&after_stop,
                                                .err = (eddy_error *)&after_stop};
    after_stop.rc = eddy_ctx_execute_async_all(ctx, after_stop.calls, 2);
    return after_stop.rc;
}

static void test_calls_after_a_stop_are_all_canceled(void **state)
{
    fixture *f = *state;
    write_input(f, "{\"key\":1}\n{\"key\":2,\"fail\":true}\n");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "failing", types, all_after_stop, NULL), EDDY_OK);
    eddy_runtime *rt = make_runtime(f, p, "2");
    memset(&after_stop, 0, sizeof(after_stop));
    assert_int_equal(eddy_runtime_run(rt), EDDY_EACTION);
    eddy_runtime_free(rt);
    assert_int_equal(after_stop.rc, EDDY_ECANCELED);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(after_stop.calls[i].rc, EDDY_ECANCELED);
        assert_null(after_stop.calls[i].result);
        assert_null(after_stop.calls[i].err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_across_keys_and_order_within_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_admission_from_run_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_runs_with_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_null_result_is_json_null_on_replay_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_journal_copy_failure_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calls_wait_for_the_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calls_wait_for_the_sync_after_an_inline_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_put_off_sync_is_brief, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_numbers_survive_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thread_confinement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_handles_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strings_must_be_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_handles_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_progress_set_during_the_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notes_go_to_the_log_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_is_named_when_it_was_the_last_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_durable_batch_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runtime_calls_and_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_unwinds_suspended_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_stops_with_message_and_unwinds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_calls_after_a_stop_are_all_canceled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
