/*
 * The key cache: with a state, idle keys beyond key-cache are let go and
 * their short-term memory read back from the state when their next run
 * starts; a resume reads only the keys it resumes. Through the public API,
 * with a look at the runtime's key map and idle list (runtime.h). Each test
 * frees its runtime; the sanitizer builds check that nothing leaked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "eddy/eddy.h"
#include "core/plan.h"
#include "exec/runtime.h"
#include "store/store.h"

#define NKEYS 40

typedef struct fixture {
    char dir[64];
    char in[96];
    char out[96];
    char state[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/eddy-keys-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->in, sizeof(f->in), "%s/in.jsonl", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.jsonl", f->dir);
    snprintf(f->state, sizeof(f->state), "%s/st", f->dir);
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

/* rounds x nkeys inputs, key <prefix><i> in turn ("seq" counts them),
 * appended; extra is more members of each record (or ""). */
static void add_inputs_ex(fixture *f, int first, int rounds, int nkeys, const char *prefix,
                          const char *extra)
{
    FILE *fp = fopen(f->in, "a");
    assert_non_null(fp);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < nkeys; k++)
            fprintf(fp, "{\"key\":\"%s%d\",\"seq\":%d%s}\n", prefix, k, first + r * nkeys + k,
                    extra);
    fclose(fp);
}

static void add_inputs(fixture *f, int first, int rounds, int nkeys)
{
    add_inputs_ex(f, first, rounds, nkeys, "k", "");
}

/* The action: count += 1 in short-term memory, and {"count": N} out (an
 * input with "nomem" writes none, and N is 0). With stop_once set, the
 * first run of this process also asks the runtime to stop and suspends on a
 * call, so that its run is left to resume. */
static int stop_once;

static int noop_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = NULL;
    usleep(20000);
    return EDDY_OK;
}

static int count(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    if (json_object_get(json_object_get(eddy_event_attrs(ev), "input"), "nomem") != NULL)
        return eddy_ctx_send_output(ctx, json_pack("{s:i}", "count", 0));
    eddy_memory *m = eddy_ctx_short_term_memory(ctx);
    json_t *c = eddy_memory_get(m, "count");
    json_int_t n = json_integer_value(c) + 1; /* 0 for NULL */
    json_decref(c);
    int rc = eddy_memory_set(m, "count", json_integer(n));
    if (rc == EDDY_OK && stop_once) {
        stop_once = 0;
        eddy_runtime_stop(ctx->rt);
        rc = eddy_ctx_execute_async(ctx, noop_call, NULL, NULL, NULL, NULL);
    }
    return rc != EDDY_OK ? rc : eddy_ctx_send_output(ctx, json_pack("{s:I}", "count", n));
}

static eddy_plan *count_plan(void)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "count", types, count, NULL), EDDY_OK);
    return p;
}

/* A config for f; state and key_cache NULL to leave them unset. One run in
 * flight at a time: each key's next input comes NKEYS runs later, when it
 * has long been idle. */
static eddy_config *config(fixture *f, int with_state, const char *key_cache)
{
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", f->in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", f->out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "async-threads", "1", NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "max-in-flight", "1", NULL), EDDY_OK);
    if (with_state)
        assert_int_equal(eddy_config_set(c, "state", f->state, NULL), EDDY_OK);
    if (key_cache != NULL)
        assert_int_equal(eddy_config_set(c, "key-cache", key_cache, NULL), EDDY_OK);
    return c;
}

static eddy_runtime *runtime(eddy_config *c)
{
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(count_plan(), c, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    return rt;
}

/* The outputs' counts, in order, into counts (at most n); how many. */
static int read_counts(fixture *f, int *counts, int n)
{
    char line[128];
    int i = 0;
    FILE *fp = fopen(f->out, "r");
    assert_non_null(fp);
    while (i < n && fgets(line, sizeof(line), fp) != NULL)
        assert_int_equal(sscanf(line, "{\"count\":%d}", &counts[i++]), 1);
    fclose(fp);
    return i;
}

/* Output i of rounds x NKEYS inputs in turn (one run at a time) is the
 * (i / NKEYS + 1)-th input of its key, after base earlier ones. */
static void check_counts(fixture *f, int n, int base)
{
    int counts[1024];
    assert_int_equal(read_counts(f, counts, 1024), n);
    for (int i = 0; i < n; i++)
        assert_int_equal(counts[i], base + i / NKEYS + 1);
}

/* What the runtime holds of its keys: at most max in the map, and the idle
 * list within its bound. */
static void check_resident(eddy_runtime *rt, size_t max)
{
    assert_true(rt->keys.count <= max);
    assert_true(rt->nidle_keys <= rt->idle_max);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.keys_resident, rt->keys.count);
}

static void test_idle_keys_are_let_go_and_read_back(void **state)
{
    fixture *f = *state;
    add_inputs(f, 0, 3, NKEYS);
    eddy_config *c = config(f, 1, "2");
    eddy_runtime *rt = runtime(c);
    assert_int_equal(rt->idle_max, 2);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.outputs, 3 * NKEYS);
    /* Every key's second and third run read its memory back, once. */
    assert_int_equal(st.keys_loaded, 2 * NKEYS);
    assert_int_equal(st.keys_evicted, 3 * NKEYS - 2);
    check_resident(rt, 2);
    eddy_runtime_free(rt);
    check_counts(f, 3 * NKEYS, 0);

    /* A new process: the keys are read when they come again, and only
     * they (none was read at start). */
    add_inputs(f, 3 * NKEYS, 1, 5);
    rt = runtime(c);
    assert_int_equal(rt->keys.count, 0);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.inputs, 5);
    assert_int_equal(st.keys_loaded, 5);
    check_resident(rt, 2);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    int counts[1024];
    assert_int_equal(read_counts(f, counts, 1024), 3 * NKEYS + 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(counts[3 * NKEYS + i], 4);
}

/* The action of the barrier test: a durable call made on the mailbox goes
 * on once its commit is written (eddy__durable_went_on), so the key's next
 * calls must wait for that commit's sync (key->need_txn), in this run or a
 * later one, which may build on the result through the key's memory. Each
 * run checks that its key still waits for what the key's previous run went
 * on with, though the key was let go in between. */
static uint64_t key_need[NKEYS];
static int barrier_runs;

static int value_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = json_integer(7);
    return EDDY_OK;
}

static int durable_count(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    int i = atoi(json_string_value(json_object_get(in, "key")) + 1); /* "k<i>" */
    assert_true(ctx->key->need_txn >= key_need[i]);
    json_t *r = NULL;
    int rc = eddy_ctx_durable_execute(ctx, "value", NULL, value_call, NULL, &r, NULL);
    assert_int_equal(rc, EDDY_OK);
    eddy_memory *m = eddy_ctx_short_term_memory(ctx);
    assert_int_equal(eddy_memory_set(m, "got", r), EDDY_OK);
    key_need[i] = ctx->key->need_txn;
    assert_true(key_need[i] > 0);
    barrier_runs++;
    return eddy_ctx_send_output(ctx, json_pack("{s:i}", "count", 0));
}

static void test_key_let_go_keeps_waiting_for_its_sync(void **state)
{
    fixture *f = *state;
    add_inputs(f, 0, 3, NKEYS);
    memset(key_need, 0, sizeof(key_need));
    barrier_runs = 0;
    eddy_config *c = config(f, 1, "1");
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "count", types, durable_count, NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(p, c, &err);
    assert_non_null(rt);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(barrier_runs, 3 * NKEYS);
    assert_true(st.keys_evicted >= 2 * NKEYS);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

/* Three rounds over NKEYS keys with this config: every key stays resident,
 * none is let go or read back, and the counts are right. */
static void check_every_key_kept(fixture *f, int with_state, const char *key_cache)
{
    add_inputs(f, 0, 3, NKEYS);
    eddy_config *c = config(f, with_state, key_cache);
    eddy_runtime *rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.keys_loaded, 0);
    assert_int_equal(st.keys_evicted, 0);
    assert_int_equal(st.keys_resident, NKEYS);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    check_counts(f, 3 * NKEYS, 0);
}

/* Without a state key-cache changes nothing: memory lives only in memory. */
static void test_without_state_every_key_with_memory_stays(void **state)
{
    check_every_key_kept(*state, 0, "2");
}

/* key-cache 0: no bound, nothing is let go or read back. */
static void test_key_cache_0_keeps_every_key(void **state)
{
    check_every_key_kept(*state, 1, "0");
}

/* Keys without memory are let go beyond the bound too, and new keys are
 * not looked up in the state until a key with memory was let go. */
static void test_new_keys_are_read_once_memory_was_let_go(void **state)
{
    fixture *f = *state;
    add_inputs_ex(f, 0, 1, NKEYS, "e", ",\"nomem\":1");
    add_inputs(f, NKEYS, 1, NKEYS);
    eddy_config *c = config(f, 1, "3");
    eddy_runtime *rt = runtime(c);
    assert_int_equal(rt->memory_offloaded, 0); /* a new state holds no key */
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    /* Keys with memory were let go: from then on new keys are looked up. */
    assert_int_equal(rt->memory_offloaded, 1);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.keys_loaded, 0); /* each key came once */
    assert_int_equal(st.keys_evicted, 2 * NKEYS - 3);
    check_resident(rt, 3);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    int counts[1024];
    assert_int_equal(read_counts(f, counts, 1024), 2 * NKEYS);
    for (int i = 0; i < 2 * NKEYS; i++)
        assert_int_equal(counts[i], i < NKEYS ? 0 : 1);
}

/* Only keys with empty memory let go: new keys need no read. */
static void test_keys_without_memory_need_no_read(void **state)
{
    fixture *f = *state;
    add_inputs_ex(f, 0, 2, NKEYS, "e", ",\"nomem\":1");
    eddy_config *c = config(f, 1, "3");
    eddy_runtime *rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    assert_int_equal(rt->memory_offloaded, 0);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.keys_evicted, 2 * NKEYS - 3);
    check_resident(rt, 3);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

/* The idle list's weight is what its keys weigh (key_park). */
static void check_idle_bytes(eddy_runtime *rt)
{
    uint64_t sum = 0;
    size_t n = 0;
    for (eddy__queue *q = rt->idle_keys.next; q != &rt->idle_keys; q = q->next, n++)
        sum += 768 + eddy__queue_data(q, eddy__key, idle_node)->stm_bytes;
    assert_int_equal(n, rt->nidle_keys);
    assert_int_equal(sum, rt->idle_bytes);
    assert_true(rt->idle_bytes_max == 0 || rt->idle_bytes <= rt->idle_bytes_max);
}

/* key-cache-bytes bounds the idle keys by weight, with key-cache 0 too:
 * keys of empty memory weigh their bookkeeping (with no count bound they
 * were never let go), keys with memory that and its bytes as stored. */
static void test_the_cache_bounded_by_bytes(void **state)
{
    fixture *f = *state;
    add_inputs_ex(f, 0, 1, NKEYS, "e", ",\"nomem\":1");
    eddy_config *c = config(f, 1, "0");
    assert_int_equal(eddy_config_set(c, "key-cache-bytes", "2400", NULL), EDDY_OK);
    eddy_runtime *rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    assert_int_equal(st.keys_evicted, NKEYS - 3); /* 3 x 768 <= 2400 < 4 x 768 */
    check_idle_bytes(rt);
    eddy_runtime_free(rt);
    eddy_config_free(c);

    /* With memory ({"count":N}, 11 bytes stored), resuming the state: two
     * runs of each key, the second reading back what the first stored. */
    add_inputs(f, NKEYS, 2, NKEYS);
    c = config(f, 1, "0");
    assert_int_equal(eddy_config_set(c, "key-cache-bytes", "2400", NULL), EDDY_OK);
    rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_stats(rt, &st);
    assert_true(st.keys_loaded >= NKEYS - 3);
    check_idle_bytes(rt);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

/* A resume reads the memory of the keys whose runs it resumes, before it
 * re-applies their finished actions' writes, and no other key's. */
static void test_resume_reads_only_the_keys_it_resumes(void **state)
{
    fixture *f = *state;
    add_inputs(f, 0, 1, NKEYS);
    eddy_config *c = config(f, 1, "2");
    eddy_runtime *rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);

    /* Three inputs of k5; the first run stops the runtime on a call: the
     * run and the two behind it stay in the state. */
    FILE *fp = fopen(f->in, "a");
    assert_non_null(fp);
    for (int i = 0; i < 3; i++)
        fprintf(fp, "{\"key\":\"k5\",\"seq\":%d}\n", NKEYS + i);
    fclose(fp);
    stop_once = 1;
    rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_ESTOPPED);
    eddy_runtime_free(rt);

    rt = runtime(c);
    assert_int_equal(rt->keys.count, 1); /* k5 alone, its memory not read yet */
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    /* (k5's later inputs were admitted, or not yet, when the run stopped) */
    assert_int_equal(st.inputs + st.runs_resumed, 3);
    assert_int_equal(st.runs_in_flight_resumed, 1);
    assert_int_equal(st.keys_loaded, 1);
    check_resident(rt, 2);
    eddy_runtime_free(rt);
    eddy_config_free(c);
    int counts[1024];
    int n = read_counts(f, counts, 1024);
    assert_int_equal(n, NKEYS + 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(counts[NKEYS + i], 2 + i);
}

/* A key's memory that does not decode stops the run when the key comes
 * again, naming it (EDDY_ESTATE); the other keys are not read. */
static void test_damaged_memory_stops_naming_the_key(void **state)
{
    fixture *f = *state;
    add_inputs(f, 0, 1, 4);
    eddy_config *c = config(f, 1, "2");
    eddy_runtime *rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    eddy_runtime_free(rt);

    eddy_plan *p = count_plan();
    char fp[17], *actions = NULL;
    eddy__plan_fingerprint(p, fp);
    assert_int_equal(eddy__plan_describe(p, &actions), EDDY_OK);
    eddy_plan_free(p);
    eddy__store *s = NULL;
    assert_int_equal(eddy__store_open(&s, f->state, fp, actions, NULL), EDDY_OK);
    free(actions);
    assert_int_equal(eddy__store_key_put(s, "\"k3\"", 0, "not json"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);

    /* k1 is read and goes on; k3 fails. */
    FILE *in = fopen(f->in, "a");
    assert_non_null(in);
    fputs("{\"key\":\"k1\",\"seq\":4}\n{\"key\":\"k3\",\"seq\":5}\n", in);
    fclose(in);
    rt = runtime(c);
    assert_int_equal(eddy_runtime_run(rt), EDDY_ESTATE);
    const eddy_error *e = eddy_runtime_error(rt);
    assert_non_null(e);
    assert_string_equal(eddy_error_type(e), "state");
    char want[256];
    snprintf(want, sizeof(want),
             "%s/eddy.db: the short-term memory of key \"k3\" does not decode; the state is "
             "damaged",
             f->state);
    assert_string_equal(eddy_error_message(e), want);
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    /* k3's row was read but not its memory, and its input was refused: it
     * is read again by the next run, and counted there. */
    assert_int_equal(st.keys_loaded, 1);
    assert_int_equal(st.inputs, 1);
    eddy_runtime_free(rt);
    eddy_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idle_keys_are_let_go_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_state_every_key_with_memory_stays, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_key_cache_0_keeps_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_let_go_keeps_waiting_for_its_sync, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_new_keys_are_read_once_memory_was_let_go, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keys_without_memory_need_no_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_cache_bounded_by_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_reads_only_the_keys_it_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_memory_stops_naming_the_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
