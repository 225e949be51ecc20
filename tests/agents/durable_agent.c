/*
 * The agent of the durability tests. Every durable call appends one line to
 * the side-effect file named by EDDY_TEST_EFFECTS, so that a test can count
 * how often each call really ran across crashes. Crashes are provoked either
 * by SIGKILL from the test, or by the agent itself (_exit) when a flag file
 * named by the input exists; the agent removes the flag first, so the next
 * run goes on.
 *
 * Actions:
 *   step1   (InputEvent)  durable async call "effect" (sleeps input.ms), then
 *                         short-term memory count += 1, sum += input.v, and a
 *                         new object "last" in memory; sends Mid
 *   step2   (Mid)         durable sync call "local", then the output
 *   probe   (InputEvent with op set) the special scenarios below, by op
 *           (chain: two durable async calls in a row, then the output;
 *           chain_inline: the same with the first call on the mailbox;
 *           fanout: k Echo events, then the output;
 *           variant_ignored: three durable calls whose outcomes it only
 *           reports, the first with EDDY_TEST_VARIANT, then the output;
 *           deep: the input record itself, however deep, as a durable
 *           call's arguments, a result input.result_depth arrays deep, and
 *           its inner part into memory and back; values input.refuse_depth
 *           deep sent and set, refused;
 *           batch: the durable calls input.calls ([{ms, fail, reconcile,
 *           sigterm}]) all at once with eddy_ctx_durable_execute_async_all,
 *           then the output, with each outcome and the time they took; with
 *           EDDY_TEST_VARIANT, call 1 has other arguments)
 *   echo    (Echo)        durable async call, then the output (crashes after
 *                         the call of the last Echo when the flag exists)
 * With EDDY_TEST_GOT set, step1 also records "got" with the call's arguments
 * once the action has the call's outcome (a call it got must never run again).
 *
 * EDDY_TEST_PLAN changes the plan, for the refusal of a state made with
 * another: "changed" has probe listen to Echo too, no "later" and a new
 * "score" (Scored) at the end; "reordered" registers step2 before step1.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eddy/eddy.h>

#include "agent_util.h"

static json_int_t iget(const json_t *o, const char *k, json_int_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static void record_effect(const char *what, const json_t *args)
{
    const char *path = getenv("EDDY_TEST_EFFECTS");
    if (path == NULL)
        return;
    char *a = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s %s\n", what, a != NULL ? a : "?");
    free(a);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) < 0)
            perror("effects");
        close(fd);
    }
}

/* Remove the flag file and return 1 when it existed. */
static int take_flag(const json_t *in)
{
    const char *flag = json_string_value(json_object_get(in, "crash_flag"));
    return flag != NULL && unlink(flag) == 0;
}

static int effect(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    record_effect("effect", args);
    json_int_t ms = iget(args, "ms", 0);
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
    if (json_is_true(json_object_get(args, "fail"))) {
        *err = eddy_error_new("QuotaExceeded", "the quota of the effect service is used up");
        return EDDY_ECALL;
    }
    *result = json_pack("{s:I}", "v", iget(args, "v", 0) * 10);
    return EDDY_OK;
}

/* The durable call "effect" with args (taken), its result dropped. */
static int effect_call(eddy_ctx *ctx, json_t *args)
{
    json_t *res = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, &res, NULL);
    json_decref(args);
    json_decref(res);
    return rc;
}

/* Dies in the middle of the call, after its side effect, when flagged. */
static int effect_dying(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect("dying", args);
    const char *flag = json_string_value(json_object_get(args, "crash_flag"));
    if (flag != NULL && unlink(flag) == 0)
        _exit(137);
    json_int_t ms = iget(args, "ms", 0);
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
    *result = json_string("ran");
    return EDDY_OK;
}

static int reconcile(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    record_effect("reconcile", args);
    if (json_is_true(json_object_get(args, "reconcile_fails"))) {
        *err = eddy_error_new("Unknown", "cannot tell whether the call happened");
        return EDDY_ECALL;
    }
    *result = json_string("reconciled");
    return EDDY_OK;
}

/* Arrays nested as deep as args.result_depth, a 0 innermost. */
static int nest_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    json_t *small = json_pack("{s:O?, s:O?}", "op", json_object_get(args, "op"), "seq",
                              json_object_get(args, "seq"));
    record_effect("nest", small);
    json_decref(small);
    json_t *v = json_integer(0);
    for (json_int_t i = iget(args, "result_depth", 1); i > 0; i--) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    *result = v;
    return EDDY_OK;
}

/* Arrays nested in v, following the first member of each. */
static json_int_t array_depth(const json_t *v)
{
    json_int_t d = 0;
    for (; json_is_array(v); v = json_array_get(v, 0))
        d++;
    return d;
}

static int step1(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    if (json_object_get(in, "op") != NULL)
        return EDDY_OK; /* probe handles it */
    json_int_t seq = iget(in, "seq", 0), v = iget(in, "v", 0);
    json_t *args = json_pack("{s:O, s:I, s:I, s:I}", "key", json_object_get(in, "key"), "seq", seq,
                             "v", v, "ms", iget(in, "ms", 0));
    json_t *res = NULL;
    eddy_error *err = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, &res, &err);
    if (rc == EDDY_OK && getenv("EDDY_TEST_GOT") != NULL)
        record_effect("got", args); /* the action has the outcome: it never runs again */
    json_decref(args);
    if (rc != EDDY_OK) {
        eddy_ctx_fail_error(ctx, err);
        return rc;
    }
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_t *c = eddy_memory_get(stm, "count"), *s = eddy_memory_get(stm, "sum");
    json_int_t count = iget(NULL, "", 0) + (json_is_integer(c) ? json_integer_value(c) : 0) + 1;
    json_int_t sum = (json_is_integer(s) ? json_integer_value(s) : 0) + v;
    json_decref(c);
    json_decref(s);
    eddy_memory_set(stm, "count", json_integer(count));
    eddy_memory_set(stm, "sum", json_integer(sum));
    eddy_memory_new_object(stm, "last");
    eddy_memory_set(stm, "last.seq", json_integer(seq));
    json_t *attrs = json_pack("{s:I, s:I, s:I, s:O}", "seq", seq, "count", count, "sum", sum, "r",
                              json_object_get(res, "v"));
    json_decref(res);
    return send_typed(ctx, "Mid", attrs);
}

static int local_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect("local", args);
    *result = json_integer(iget(args, "seq", 0) + 1);
    return EDDY_OK;
}

static int step2(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *a = eddy_event_attrs(ev);
    json_t *args =
        json_pack("{s:O, s:I}", "key", json_loads(eddy_ctx_key(ctx), JSON_DECODE_ANY, NULL), "seq",
                  iget(a, "seq", 0));
    json_decref(json_object_get(args, "key")); /* the pack took its own reference */
    json_t *res = NULL;
    int rc = eddy_ctx_durable_execute(ctx, "local", args, local_call, NULL, &res, NULL);
    json_decref(args);
    if (rc != EDDY_OK)
        return rc;
    rc = output(ctx, json_pack("{s:I, s:I, s:I, s:O, s:o}", "seq", iget(a, "seq", 0), "count",
                               iget(a, "count", 0), "sum", iget(a, "sum", 0), "r",
                               json_object_get(a, "r"), "local", res));
    return rc;
}

/* A call of a batch: sends SIGTERM to eddy first when asked, sleeps ms, and
 * fails when asked. */
static int batch_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    record_effect("batch", args);
    if (json_is_true(json_object_get(args, "sigterm")))
        kill(getpid(), SIGTERM);
    json_int_t ms = iget(args, "ms", 0);
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
    if (json_is_true(json_object_get(args, "fail"))) {
        *err = eddy_error_newf("QuotaExceeded", "call %lld: the quota is used up",
                               (long long)iget(args, "i", 0));
        return EDDY_ECALL;
    }
    json_int_t i = iget(args, "i", 0);
    *result = json_pack("{s:I, s:I}", "i", i, "sq", i * i);
    return EDDY_OK;
}

static int batch_reconcile(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect("reconcile", args);
    *result = json_string("reconciled");
    return EDDY_OK;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The batch op: input.calls all at once. */
static int batch(eddy_ctx *ctx, const json_t *in, json_int_t seq)
{
    const json_t *specs = json_object_get(in, "calls");
    size_t n = json_array_size(specs);
    const char *variant = getenv("EDDY_TEST_VARIANT");
    eddy_durable_call calls[16];
    json_t *args[16];
    if (n > 16)
        n = 16;
    for (size_t i = 0; i < n; i++) {
        const json_t *sp = json_array_get(specs, i);
        args[i] = json_pack("{s:s, s:I, s:I, s:I, s:b, s:b}", "op", "batch", "seq", seq, "i",
                            (json_int_t)i, "ms", iget(sp, "ms", 0), "fail",
                            json_is_true(json_object_get(sp, "fail")), "sigterm",
                            json_is_true(json_object_get(sp, "sigterm")));
        if (i == 1 && variant != NULL)
            json_object_set_new(args[i], "variant", json_string(variant));
        calls[i] = (eddy_durable_call){
            .fn_id = "batch",
            .args = args[i],
            .fn = batch_call,
            .reconcile = json_is_true(json_object_get(sp, "reconcile")) ? batch_reconcile : NULL};
    }
    double t0 = now_ms();
    int rc = eddy_ctx_durable_execute_async_all(ctx, calls, n);
    double took = now_ms() - t0;
    json_t *outs = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(
            outs, json_pack("{s:i, s:O?, s:s?}", "rc", calls[i].rc, "result", calls[i].result,
                            "error", calls[i].err != NULL ? eddy_error_type(calls[i].err) : NULL));
        json_decref(calls[i].result);
        eddy_error_free(calls[i].err);
        json_decref(args[i]);
    }
    if (rc != EDDY_OK && rc != EDDY_ECALL) {
        json_decref(outs);
        return rc;
    }
    if (take_flag(in))
        _exit(137);
    return output(ctx, json_pack("{s:I, s:i, s:o, s:i}", "seq", seq, "rc", rc, "calls", outs, "ms",
                                 (int)took));
}

/* The special scenarios. */
static int probe(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    const char *op = json_string_value(json_object_get(in, "op"));
    if (op == NULL)
        return EDDY_OK;
    json_int_t seq = iget(in, "seq", 0);
    const char *variant = getenv("EDDY_TEST_VARIANT");
    if (strcmp(op, "finished_then_crash") == 0) {
        /* Sends Later (handled by "later"), which crashes after its own durable call. */
        eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
        int rc = effect_call(ctx, json_pack("{s:s, s:I}", "op", op, "seq", seq));
        if (rc != EDDY_OK)
            return rc;
        eddy_memory_new_object(stm, "obj");
        eddy_memory_set(stm, "n", json_integer(seq));
        return send_typed(
            ctx, "Later",
            json_pack("{s:I, s:O}", "seq", seq, "crash_flag", json_object_get(in, "crash_flag")));
    }
    if (strcmp(op, "chain") == 0 || strcmp(op, "chain_inline") == 0) {
        /* Two durable calls in a row (the first one on the mailbox with
         * chain_inline): the second may run only once the first one's
         * result is on disk. */
        json_t *res = NULL;
        int rc = EDDY_OK;
        int inline_first = strcmp(op, "chain_inline") == 0;
        for (int step = 1; step <= 2 && rc == EDDY_OK; step++) {
            json_t *args = json_pack("{s:s, s:I, s:i, s:I}", "op", op, "seq", seq, "step", step,
                                     "ms", step == 1 ? iget(in, "ms", 0) : 0);
            if (step == 1 && inline_first)
                rc = eddy_ctx_durable_execute(ctx, "effect", args, effect, NULL, &res, NULL);
            else
                rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, &res, NULL);
            json_decref(args);
            json_decref(res);
            res = NULL;
        }
        return rc == EDDY_OK ? output(ctx, json_pack("{s:I, s:s}", "seq", seq, "op", op)) : rc;
    }
    if (strcmp(op, "durable_error") == 0) {
        json_t *args = json_pack("{s:s, s:I, s:b}", "op", op, "seq", seq, "fail", 1);
        eddy_error *err = NULL;
        int rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, NULL, &err);
        json_decref(args);
        json_t *out = json_pack("{s:I, s:i, s:s, s:s}", "seq", seq, "rc", rc, "type",
                                eddy_error_type(err), "message", eddy_error_message(err));
        eddy_error_free(err);
        /* The call's outcome is committed before the action goes on. */
        if (take_flag(in))
            _exit(137);
        return output(ctx, out);
    }
    if (strcmp(op, "variant") == 0) {
        json_t *args = json_pack("{s:s, s:I, s:s}", "op", op, "seq", seq, "variant",
                                 variant != NULL ? variant : "a");
        json_t *res = NULL;
        eddy_error *err = NULL;
        int rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, &res, &err);
        json_decref(args);
        json_decref(res);
        if (rc != EDDY_OK) {
            if (err != NULL)
                eddy_ctx_fail_error(ctx, err);
            return rc;
        }
        if (take_flag(in))
            _exit(137);
        return output(
            ctx, json_pack("{s:I, s:s}", "seq", seq, "variant", variant != NULL ? variant : "a"));
    }
    if (strcmp(op, "variant_ignored") == 0) {
        /* Three durable calls, the first as "variant", whose outcomes the
         * action only reports: it goes on whatever they return. */
        json_t *got = json_array();
        for (int step = 1; step <= 3; step++) {
            json_t *args = json_pack("{s:s, s:I, s:i, s:s}", "op", op, "seq", seq, "step", step,
                                     "variant", step == 1 && variant != NULL ? variant : "a");
            json_t *res = NULL;
            int rc = eddy_ctx_durable_execute_async(ctx, "effect", args, effect, NULL, &res, NULL);
            json_decref(args);
            json_array_append_new(got, rc == EDDY_OK ? res : json_string(eddy_err_name(rc)));
        }
        if (take_flag(in))
            _exit(137);
        return output(ctx, json_pack("{s:I, s:o}", "seq", seq, "got", got));
    }
    if (strcmp(op, "reconciled") == 0) {
        json_t *args =
            json_pack("{s:s, s:I, s:O?, s:O?, s:O?}", "op", op, "seq", seq, "crash_flag",
                      json_object_get(in, "crash_flag"), "reconcile_fails",
                      json_object_get(in, "reconcile_fails"), "ms", json_object_get(in, "ms"));
        json_t *res = NULL;
        eddy_error *err = NULL;
        int rc = eddy_ctx_durable_execute_reconciled(ctx, "dying", args, effect_dying, reconcile,
                                                     NULL, &res, &err);
        json_decref(args);
        json_t *out = json_pack("{s:I, s:i, s:o, s:s}", "seq", seq, "rc", rc, "result",
                                res != NULL ? res : json_null(), "error",
                                err != NULL ? eddy_error_type(err) : "");
        eddy_error_free(err);
        const char *flag2 = json_string_value(json_object_get(in, "crash_flag2"));
        if (flag2 != NULL && unlink(flag2) == 0)
            _exit(137);
        return output(ctx, out);
    }
    if (strcmp(op, "batch") == 0)
        return batch(ctx, in, seq);
    if (strcmp(op, "deep") == 0) {
        /* The record as the arguments, as the README's agent passes it: its
         * digest, and the result's journal text, are written on this
         * action's stack, and so are the copies of memory. */
        json_t *res = NULL;
        eddy_error *err = NULL;
        int rc = eddy_ctx_durable_execute_async(ctx, "nest", in, nest_call, NULL, &res, &err);
        json_t *out;
        if (rc == EDDY_OK) {
            eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
            int set = eddy_memory_set(stm, "inner", json_incref(json_array_get(res, 0)));
            json_t *back = eddy_memory_get(stm, "inner");
            out = json_pack("{s:I, s:i, s:I, s:i, s:I}", "seq", seq, "rc", rc, "depth",
                            array_depth(res), "memory_set", set, "memory_depth", array_depth(back));
            json_decref(back);
        } else {
            out = json_pack("{s:I, s:i, s:s}", "seq", seq, "rc", rc, "error",
                            err != NULL ? eddy_error_type(err) : "");
        }
        json_decref(res);
        eddy_error_free(err);
        json_int_t refuse = iget(in, "refuse_depth", 0);
        if (refuse > 0) {
            /* Values far too deep handed to eddy, which refuses them and
             * frees them (on this stack). */
            json_t *v[2] = {NULL, NULL};
            for (int k = 0; k < 2; k++) {
                v[k] = json_integer(0);
                for (json_int_t i = 0; i < refuse; i++) {
                    json_t *a = json_array();
                    json_array_append_new(a, v[k]);
                    v[k] = a;
                }
            }
            json_object_set_new(out, "refused_output",
                                json_integer(eddy_ctx_send_output(ctx, v[0])));
            json_object_set_new(
                out, "refused_memory",
                json_integer(eddy_memory_set(eddy_ctx_short_term_memory(ctx), "x", v[1])));
        }
        if (take_flag(in))
            _exit(137);
        return output(ctx, out);
    }
    if (strcmp(op, "fanout") == 0) {
        /* k Echo events, then the output: the events of a finished action
         * go out before its output line. */
        json_int_t k = iget(in, "k", 3);
        for (json_int_t i = 0; i < k; i++) {
            int rc = send_typed(ctx, "Echo",
                                json_pack("{s:I, s:I, s:I, s:O?}", "seq", seq, "i", i, "k", k,
                                          "crash_flag", json_object_get(in, "crash_flag")));
            if (rc != EDDY_OK)
                return rc;
        }
        return output(ctx, json_pack("{s:I, s:s}", "seq", seq, "kind", "main"));
    }
    eddy_ctx_fail(ctx, "ValueError", "unknown op");
    return EDDY_EINVAL;
}

/* An Echo: a durable call (so that the action that sent it is committed as
 * finished), then its own output; the last Echo of a fanout crashes after
 * its call when the crash flag exists. */
static int echo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *a = eddy_event_attrs(ev);
    json_int_t seq = iget(a, "seq", 0), i = iget(a, "i", 0);
    int rc = effect_call(ctx, json_pack("{s:s, s:I, s:I}", "op", "echo", "seq", seq, "i", i));
    if (rc != EDDY_OK)
        return rc;
    if (i == iget(a, "k", 0) - 1 && take_flag(a))
        _exit(137);
    return output(ctx, json_pack("{s:I, s:s, s:I}", "seq", seq, "kind", "echo", "i", i));
}

static int later(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *a = eddy_event_attrs(ev);
    int rc = effect_call(ctx, json_pack("{s:s, s:I}", "op", "later", "seq", iget(a, "seq", 0)));
    if (rc != EDDY_OK)
        return rc;
    if (take_flag(a)) {
        /* The call ran once the sync of the finished action's commit
         * returned; LOCK gets that sync's count on the syncer thread after
         * the call was released (docs/durability.md). Crashing at once let
         * the crash win that race under load, and LOCK had no count past
         * eddy.db's for test_wal_and_index_removed_after_crash to check. */
        usleep(100000);
        _exit(137);
    }
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_t *obj = eddy_memory_get(stm, "obj");
    int is_object = json_is_object(obj);
    json_decref(obj);
    /* A child below the object made by the finished action must work. */
    rc = eddy_memory_set(stm, "obj.child", json_integer(1));
    return output(ctx, json_pack("{s:I, s:b, s:i}", "seq", iget(a, "seq", 0), "obj_is_object",
                                 is_object, "set_child", rc));
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    static const char *const input_echo[] = {EDDY_INPUT_EVENT, "Echo", NULL};
    static const char *const mid[] = {"Mid", NULL};
    static const char *const lat[] = {"Later", NULL};
    static const char *const echo_on[] = {"Echo", NULL};
    static const char *const scored[] = {"Scored", NULL};
    const char *variant = getenv("EDDY_TEST_PLAN");
    int changed = variant != NULL && strcmp(variant, "changed") == 0;
    int reordered = variant != NULL && strcmp(variant, "reordered") == 0;
    int rc = EDDY_OK;
    if (reordered)
        rc = eddy_plan_add_action(plan, "step2", mid, step2, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "step1", input, step1, NULL);
    if (rc == EDDY_OK && !reordered)
        rc = eddy_plan_add_action(plan, "step2", mid, step2, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "probe", changed ? input_echo : input, probe, NULL);
    if (rc == EDDY_OK && !changed)
        rc = eddy_plan_add_action(plan, "later", lat, later, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "echo", echo_on, echo, NULL);
    if (rc == EDDY_OK && changed)
        rc = eddy_plan_add_action(plan, "score", scored, echo, NULL);
    return rc;
}
