/*
 * The agent the end-to-end tests drive. Each input record names an "op"; the
 * "dispatch" action does what the op says, so one shared object covers the
 * scheduling, memory, async and error scenarios.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eddy/eddy.h>

#include "agent_util.h"

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static json_int_t iget(const json_t *o, const char *k, json_int_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* A slow call: sleeps args.ms milliseconds, returns args.x + 1. */
static int sleep_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    json_int_t ms = iget(args, "ms", 0);
    if (ms < 0) {
        *err = eddy_error_new("ValueError", "negative sleep");
        return EDDY_ECALL;
    }
    int64_t t0 = now_us();
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
    *result = json_pack("{s:I, s:I, s:I}", "x", iget(args, "x", 0) + 1, "start", (json_int_t)t0,
                        "end", (json_int_t)now_us());
    return EDDY_OK;
}

/* Tries the mailbox-only calls from a worker thread and reports their codes. */
static int wrongthread_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)err;
    eddy_ctx *ctx = arg;
    eddy_event *ev = eddy_event_new("Nobody", NULL);
    int send_rc = eddy_ctx_send_event(ctx, ev);
    if (send_rc != EDDY_OK)
        eddy_event_free(ev);
    eddy_memory *m = eddy_ctx_short_term_memory(ctx);
    *result =
        json_pack("{s:i, s:b, s:b, s:i}", "send", send_rc, "key_null", eddy_ctx_key(ctx) == NULL,
                  "stm_null", m == NULL, "fail", eddy_ctx_fail(ctx, "x", "y"));
    return EDDY_OK;
}

static int op_sleep(eddy_ctx *ctx, const json_t *in, json_int_t seq)
{
    json_t *args = json_pack("{s:I}", "ms", iget(in, "ms", 0));
    json_t *res = NULL;
    eddy_error *err = NULL;
    int rc = eddy_ctx_execute_async(ctx, sleep_call, args, NULL, &res, &err);
    json_decref(args);
    if (rc != EDDY_OK) {
        if (err != NULL)
            eddy_ctx_fail_error(ctx, err);
        return rc;
    }
    json_object_set_new(res, "seq", json_integer(seq));
    return output(ctx, res);
}

static int op_count(eddy_ctx *ctx, json_int_t seq)
{
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    eddy_memory *sen = eddy_ctx_sensory_memory(ctx);
    int seen_before = eddy_memory_exists(sen, "seen");
    json_t *c = eddy_memory_get(stm, "stats.count");
    json_int_t count = json_is_integer(c) ? json_integer_value(c) : 0;
    json_decref(c);
    int rc = eddy_memory_set(stm, "stats.count", json_integer(count + 1));
    if (rc == EDDY_OK)
        rc = eddy_memory_set(sen, "seen", json_true());
    if (rc != EDDY_OK)
        return rc;
    /* Our own write is visible to us before the action finishes. */
    json_t *again = eddy_memory_get(stm, "stats.count");
    json_int_t mine = json_integer_value(again);
    json_decref(again);
    return output(ctx, json_pack("{s:I, s:I, s:b, s:I}", "seq", seq, "count", count + 1,
                                 "sensory_seen_before", seen_before == 1, "own_write", mine));
}

static int op_memory(eddy_ctx *ctx, json_int_t seq)
{
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_t *r = json_object();
    json_object_set_new(r, "seq", json_integer(seq));
    json_object_set_new(r, "set_nested",
                        json_integer(eddy_memory_set(stm, "a.b.c", json_integer(1))));
    json_object_set_new(r, "set_under_value",
                        json_integer(eddy_memory_set(stm, "a.b.c.d", json_integer(2))));
    json_object_set_new(r, "set_over_object",
                        json_integer(eddy_memory_set(stm, "a.b", json_integer(3))));
    json_object_set_new(r, "new_object", json_integer(eddy_memory_new_object(stm, "a.n")));
    json_object_set_new(r, "bad_path", json_integer(eddy_memory_set(stm, "a..b", json_integer(1))));
    json_object_set_new(r, "exists_abc", json_integer(eddy_memory_exists(stm, "a.b.c")));
    json_object_set_new(r, "exists_missing", json_integer(eddy_memory_exists(stm, "a.zz")));
    json_object_set_new(r, "fields_a", eddy_memory_field_names(stm, "a"));
    json_object_set_new(r, "get_a", eddy_memory_get(stm, "a"));
    return output(ctx, r);
}

/* n frames of 512 bytes each: a stack overflow on a small --stack-size. */
static int recurse(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    pad[511] = (char)n;
    return n <= 0 ? pad[0] : recurse(n - 1) + pad[511];
}

/* A frame of 128 KiB of locals, n KiB of them written: on a small --stack-size its
 * stack pointer moves past the guard page in one step. */
static int big_frame(int n)
{
    volatile char big[128 * 1024];
    size_t len = (size_t)(n < 128 ? n : 128) * 1024;
    for (size_t i = 0; i < len; i += 512)
        big[i] = (char)i;
    return len > 0 ? big[0] + big[len - 1] : 0;
}

/* [[...[1]...]]: n arrays deep. */
static json_t *nested(json_int_t n)
{
    json_t *v = json_integer(1);
    for (json_int_t i = 0; i < n; i++)
        v = json_pack("[o]", v);
    return v;
}

static int deep_result(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    *result = nested(iget(args, "n", 0));
    return EDDY_OK;
}

/* Values of depth n handed to eddy every way (EDDY_VALUE_MAX_DEPTH is the
 * most): what each call returned. */
static int op_deep(eddy_ctx *ctx, const json_t *in, json_int_t seq)
{
    json_int_t n = iget(in, "n", 0);
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_t *r = json_pack("{s:I}", "seq", seq);
    json_object_set_new(r, "set", json_integer(eddy_memory_set(stm, "v", nested(n - 1))));
    /* Each segment is a level: "d.d...d" with n segments. */
    char *path = malloc((size_t)n * 2 + 1);
    for (json_int_t i = 0; i < n; i++)
        memcpy(path + i * 2, "d.", 2);
    path[n * 2 - 1] = '\0';
    json_object_set_new(r, "set_path", json_integer(eddy_memory_set(stm, path, json_true())));
    free(path);
    json_object_set_new(r, "output", json_integer(eddy_ctx_send_output(ctx, nested(n - 1))));
    eddy_event *ev = eddy_event_new("Nobody", json_pack("{s:o}", "v", nested(n - 1)));
    int rc = eddy_ctx_send_event(ctx, ev);
    if (rc != EDDY_OK)
        eddy_event_free(ev);
    json_object_set_new(r, "event", json_integer(rc));
    json_t *args = json_pack("{s:I}", "n", n), *res = NULL;
    eddy_error *err = NULL;
    rc = eddy_ctx_durable_execute_async(ctx, "deep", args, deep_result, NULL, &res, &err);
    json_decref(args);
    json_object_set_new(r, "durable", json_integer(rc));
    json_object_set_new(r, "durable_error", json_string(err != NULL ? eddy_error_type(err) : ""));
    json_decref(res);
    eddy_error_free(err);
    return output(ctx, r);
}

/* A durable call's body that uses the context it must not (arg): what each
 * context call returned there. */
static int reenter_body(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)err;
    eddy_ctx *ctx = arg;
    json_t *res = NULL;
    *result = json_pack(
        "{s:i, s:b, s:b, s:i, s:i}", "output", eddy_ctx_send_output(ctx, json_true()), "key_null",
        eddy_ctx_key(ctx) == NULL, "memory_null", eddy_ctx_short_term_memory(ctx) == NULL,
        "durable", eddy_ctx_durable_execute(ctx, "inner", NULL, deep_result, NULL, &res, NULL),
        "fail", eddy_ctx_fail(ctx, "x", "y"));
    json_decref(res);
    return EDDY_OK;
}

/* Creates the file $started names (when set), then waits until the file
 * $release names exists, 60 s at most: a test holds the agent there. */
static void hold(const char *started, const char *release)
{
    if (started != NULL) {
        FILE *f = fopen(started, "w");
        if (f != NULL)
            fclose(f);
    }
    int64_t deadline = now_us() + 60 * 1000000;
    while (release != NULL && access(release, F_OK) != 0 && now_us() < deadline)
        usleep(10000);
}

/* A call that fails with a code and no error object, leaving a result. */
static int sloppy_fail(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = json_true();
    return EDDY_EIO;
}

static int dispatch(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    const char *op = json_string_value(json_object_get(in, "op"));
    json_int_t seq = iget(in, "seq", 0);
    if (op == NULL || strcmp(op, "echo") == 0)
        return output(ctx, json_pack("{s:I}", "seq", seq));
    if (strcmp(op, "stuck") == 0) { /* an action that does not return while a test holds it */
        hold(getenv("EDDY_TEST_STARTED"), getenv("EDDY_TEST_RELEASE"));
        return output(ctx, json_pack("{s:I}", "seq", seq));
    }
    if (strcmp(op, "print") == 0) {
        /* What agents print, through each way a C action has: eddy keeps it
         * out of an output on stdout. */
        printf("printf from a C action, seq %lld\n", (long long)seq);
        puts("puts from a C action");
        if (write(STDOUT_FILENO, "write(1) from a C action\n", 25) != 25 ||
            system("echo from a child of a C action") != 0)
            return EDDY_EIO;
        return output(ctx, json_pack("{s:I}", "seq", seq));
    }
    if (strcmp(op, "copy") == 0) { /* the input's "value", as it is, out and in memory */
        json_t *v = json_object_get(in, "value");
        int rc = v != NULL
                     ? eddy_memory_set(eddy_ctx_short_term_memory(ctx), "value", json_deep_copy(v))
                     : EDDY_OK;
        return rc != EDDY_OK ? rc : output(ctx, json_pack("{s:I, s:O?}", "seq", seq, "value", v));
    }
    if (strcmp(op, "chain") == 0)
        return send_typed(ctx, "Step",
                          json_pack("{s:I, s:I}", "x", iget(in, "x", 0) + 1, "seq", seq));
    if (strcmp(op, "sleep") == 0)
        return op_sleep(ctx, in, seq);
    if (strcmp(op, "spin") == 0) { /* "ms" of work on the mailbox thread itself */
        int64_t until = now_us() + iget(in, "ms", 0) * 1000;
        while (now_us() < until)
            ;
        return output(ctx, json_pack("{s:I}", "seq", seq));
    }
    if (strcmp(op, "chain_async") == 0) {
        json_int_t x = iget(in, "x", 0);
        for (int i = 0; i < 3; i++) {
            json_t *args = json_pack("{s:I, s:I}", "x", x, "ms", iget(in, "ms", 0));
            json_t *res = NULL;
            int rc = eddy_ctx_execute_async(ctx, sleep_call, args, NULL, &res, NULL);
            json_decref(args);
            if (rc != EDDY_OK)
                return rc;
            x = iget(res, "x", 0);
            json_decref(res);
        }
        return output(ctx, json_pack("{s:I, s:I}", "seq", seq, "x", x));
    }
    if (strcmp(op, "many") == 0) {
        json_int_t n = iget(in, "n", 4);
        if (n > 64)
            n = 64;
        eddy_async_call calls[64];
        json_t *args = json_pack("{s:I}", "ms", iget(in, "ms", 0));
        for (json_int_t i = 0; i < n; i++)
            calls[i] = (eddy_async_call){.fn = sleep_call, .args = args};
        int64_t t0 = now_us();
        int rc = eddy_ctx_execute_async_all(ctx, calls, (size_t)n);
        int64_t t1 = now_us();
        json_decref(args);
        for (json_int_t i = 0; i < n; i++) {
            json_decref(calls[i].result);
            eddy_error_free(calls[i].err);
        }
        if (rc != EDDY_OK)
            return rc;
        return output(ctx, json_pack("{s:I, s:I, s:I}", "seq", seq, "n", n, "elapsed_us",
                                     (json_int_t)(t1 - t0)));
    }
    if (strcmp(op, "fanout") == 0)
        return send_typed(ctx, "Fan", json_pack("{s:I, s:I}", "ms", iget(in, "ms", 0), "seq", seq));
    if (strcmp(op, "count") == 0)
        return op_count(ctx, seq);
    if (strcmp(op, "memory") == 0)
        return op_memory(ctx, seq);
    if (strcmp(op, "fail") == 0) {
        eddy_ctx_fail(ctx, "ValueError", "the input asked to fail");
        return EDDY_EACTION;
    }
    if (strcmp(op, "fail_async") == 0) {
        json_t *args = json_pack("{s:i}", "ms", -1);
        eddy_error *err = NULL;
        int rc = eddy_ctx_execute_async(ctx, sleep_call, args, NULL, NULL, &err);
        json_decref(args);
        eddy_ctx_fail_error(ctx, err);
        return rc;
    }
    if (strcmp(op, "wrongthread") == 0) {
        json_t *res = NULL;
        int rc = eddy_ctx_execute_async(ctx, wrongthread_call, NULL, ctx, &res, NULL);
        if (rc != EDDY_OK)
            return rc;
        json_object_set_new(res, "seq", json_integer(seq));
        return output(ctx, res);
    }
    if (strcmp(op, "deep") == 0)
        return op_deep(ctx, in, seq);
    if (strcmp(op, "big_frame") == 0)
        return output(ctx,
                      json_pack("{s:I, s:i}", "seq", seq, "r", big_frame((int)iget(in, "kib", 0))));
    if (strcmp(op, "recurse") == 0)
        return output(ctx,
                      json_pack("{s:I, s:i}", "seq", seq, "r", recurse((int)iget(in, "depth", 0))));
    if (strcmp(op, "reenter") == 0) {
        json_t *res = NULL;
        int rc = eddy_ctx_durable_execute(ctx, "reenter", in, reenter_body, ctx, &res, NULL);
        if (rc != EDDY_OK)
            return rc;
        json_object_set_new(res, "seq", json_integer(seq));
        return output(ctx, res);
    }
    if (strcmp(op, "sloppy_fail") == 0) {
        json_t *res = json_false();
        eddy_error *err = eddy_error_new("stale", "not cleared by the caller");
        eddy_error_free(err);
        err = NULL;
        int rc = eddy_ctx_execute_async(ctx, sloppy_fail, NULL, NULL, &res, &err);
        json_t *o = json_pack("{s:I, s:i, s:b, s:s}", "seq", seq, "rc", rc, "result_null",
                              res == NULL, "err_type", err != NULL ? eddy_error_type(err) : "");
        json_decref(res);
        eddy_error_free(err);
        return output(ctx, o);
    }
    if (strcmp(op, "bounce") == 0) /* "n" Pings, or forever when n < 0 */
        return send_typed(ctx, "Ping",
                          json_pack("{s:I, s:I, s:I, s:I, s:I, s:O?}", "seq", seq, "n",
                                    iget(in, "n", 0), "k", 0, "noisy", iget(in, "noisy", 0),
                                    "die_at", iget(in, "die_at", -1), "crash_flag",
                                    json_object_get(in, "crash_flag")));
    if (strcmp(op, "null_output") == 0) /* as after a json_pack that failed */
        return eddy_ctx_send_output(ctx, NULL);
    if (strcmp(op, "durable_null_fn") == 0) {
        /* The outcome is always set, also when the call is refused. */
        json_t *res = json_true();
        eddy_error *err = eddy_error_new("stale", "left by the caller");
        eddy_error *left = err;
        int rc = eddy_ctx_durable_execute(ctx, "nothing", NULL, NULL, NULL, &res, &err);
        eddy_error_free(left);
        if (res != NULL || err != NULL)
            eddy_ctx_fail(ctx, "test", "the outcome was not reset");
        return rc;
    }
    if (strcmp(op, "output_attrs") == 0) {
        /* An OutputEvent with the input's "attrs" (none when absent), then
         * the usual output. */
        json_t *attrs = json_object_get(in, "attrs");
        int rc = send_typed(ctx, EDDY_OUTPUT_EVENT, attrs != NULL ? json_deep_copy(attrs) : NULL);
        return rc != EDDY_OK ? rc : output(ctx, json_pack("{s:I}", "seq", seq));
    }
    if (strcmp(op, "unhandled") == 0) {
        const char *type = json_string_value(json_object_get(in, "type"));
        int rc = send_typed(ctx, type != NULL ? type : "Nobody", NULL);
        return rc != EDDY_OK ? rc : output(ctx, json_pack("{s:I}", "seq", seq));
    }
    eddy_ctx_fail(ctx, "ValueError", "unknown op");
    return EDDY_EINVAL;
}

static int double_step(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *a = eddy_event_attrs(ev);
    return output(ctx, json_pack("{s:I, s:I, s:s}", "seq", iget(a, "seq", 0), "x",
                                 2 * iget(a, "x", 0), "event_id", eddy_event_id(ev)));
}

/* A Ping sends the next one until its count is spent: a cycle of events. */
static int ping(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *a = eddy_event_attrs(ev);
    json_int_t seq = iget(a, "seq", 0), n = iget(a, "n", 0), k = iget(a, "k", 0);
    json_int_t noisy = iget(a, "noisy", 0), die_at = iget(a, "die_at", -1);
    const char *flag = json_string_value(json_object_get(a, "crash_flag"));
    if (k == die_at && flag != NULL && unlink(flag) == 0)
        _exit(137); /* a crash in the middle of the chain, once */
    if (n == 0)
        return output(ctx, json_pack("{s:I, s:I}", "seq", seq, "pings", k));
    if (noisy) { /* each Ping also writes memory and an output */
        int rc = eddy_memory_set(eddy_ctx_short_term_memory(ctx), "pings", json_integer(k));
        if (rc == EDDY_OK)
            rc = output(ctx, json_pack("{s:I, s:I}", "seq", seq, "ping", k));
        if (rc != EDDY_OK)
            return rc;
    }
    return send_typed(ctx, "Ping",
                      json_pack("{s:I, s:I, s:I, s:I, s:I, s:O?}", "seq", seq, "n", n - 1, "k",
                                k + 1, "noisy", noisy, "die_at", die_at, "crash_flag",
                                json_object_get(a, "crash_flag")));
}

/* Three actions triggered by one Fan event; each makes a slow call. */
static int fan(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    const json_t *a = eddy_event_attrs(ev);
    json_t *args = json_pack("{s:I}", "ms", iget(a, "ms", 0));
    json_t *res = NULL;
    int rc = eddy_ctx_execute_async(ctx, sleep_call, args, NULL, &res, NULL);
    json_decref(args);
    if (rc != EDDY_OK)
        return rc;
    json_object_set_new(res, "seq", json_integer(iget(a, "seq", 0)));
    json_object_set_new(res, "which", json_string((const char *)arg));
    return output(ctx, res);
}

int eddy_agent_init(eddy_plan *plan)
{
    if (getenv("EDDY_TEST_PRINT_AT_INIT") != NULL)
        printf("printed by eddy_agent_init\n");
    /* A slow load: a test signals eddy while the agent loads. */
    if (getenv("EDDY_TEST_LOADING") != NULL)
        hold(getenv("EDDY_TEST_LOADING"), getenv("EDDY_TEST_GO"));
    static const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    static const char *const step[] = {"Step", NULL};
    static const char *const fanev[] = {"Fan", NULL};
    static const char *const pingev[] = {"Ping", NULL};
    int rc = eddy_plan_add_action(plan, "dispatch", input, dispatch, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "double", step, double_step, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "fan_a", fanev, fan, "a");
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "fan_b", fanev, fan, "b");
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "fan_c", fanev, fan, "c");
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "ping", pingev, ping, NULL);
    return rc;
}
