/*
 * The C agent of tests/e2e/test_sleep.py (sleep_agent.py is its Python
 * twin). Each input record names an "op":
 *   sleep    eddy_ctx_sleep(ctx, ms), at most $EDDY_TEST_MAX_SLEEP_MS when
 *            set; outputs {seq, slept_ms}. A canceled sleep says so on
 *            stderr, and the action unwinds with the code.
 *   instant  one eddy_ctx_execute_async of a call that returns at once;
 *            outputs {seq, call_ms}, how long the action waited for it.
 *   retry    a call that fails until attempt ok_at, retried with
 *            exponential back-off: each attempt a durable call of its own,
 *            backoff_ms << attempt between attempts. The call appends
 *            "call SEQ ATTEMPT" to $EDDY_TEST_CALL_LOG, the action "sleep
 *            SEQ ATTEMPT" before each back-off. Outputs {seq, attempts}.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <eddy/eddy.h>

#include "agent_util.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_int_t iget(const json_t *o, const char *k, json_int_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* Append a line to $EDDY_TEST_CALL_LOG (one write: lines do not mix). */
static void log_line(const char *what, json_int_t seq, json_int_t attempt)
{
    const char *path = getenv("EDDY_TEST_CALL_LOG");
    if (path == NULL)
        return;
    char line[96];
    int n =
        snprintf(line, sizeof(line), "%s %lld %lld\n", what, (long long)seq, (long long)attempt);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) {
            /* the test finds the line missing */
        }
        close(fd);
    }
}

static int op_sleep(eddy_ctx *ctx, const json_t *in, json_int_t seq)
{
    uint64_t ms = (uint64_t)iget(in, "ms", 0);
    const char *max = getenv("EDDY_TEST_MAX_SLEEP_MS");
    if (max != NULL && ms > strtoull(max, NULL, 10))
        ms = strtoull(max, NULL, 10);
    int64_t t0 = now_ms();
    int rc = eddy_ctx_sleep(ctx, ms);
    if (rc != EDDY_OK) {
        fprintf(stderr, "eddy-test: the sleep of key %s returned %s\n", eddy_ctx_key(ctx),
                eddy_err_name(rc));
        return rc;
    }
    return output(ctx,
                  json_pack("{s:I, s:I}", "seq", seq, "slept_ms", (json_int_t)(now_ms() - t0)));
}

static int nothing(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = NULL;
    return EDDY_OK;
}

static int op_instant(eddy_ctx *ctx, json_int_t seq)
{
    int64_t t0 = now_ms();
    int rc = eddy_ctx_execute_async(ctx, nothing, NULL, NULL, NULL, NULL);
    if (rc != EDDY_OK)
        return rc;
    return output(ctx, json_pack("{s:I, s:I}", "seq", seq, "call_ms", (json_int_t)(now_ms() - t0)));
}

/* Fails until attempt ok_at. */
static int flaky(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    json_int_t seq = iget(args, "seq", 0), attempt = iget(args, "attempt", 0);
    log_line("call", seq, attempt);
    if (attempt < iget(args, "ok_at", 0)) {
        *err = eddy_error_newf("ValueError", "attempt %lld failed", (long long)attempt);
        return EDDY_ECALL;
    }
    *result = json_pack("{s:I}", "attempt", attempt);
    return EDDY_OK;
}

static int op_retry(eddy_ctx *ctx, const json_t *in, json_int_t seq)
{
    json_int_t ok_at = iget(in, "ok_at", 0), backoff = iget(in, "backoff_ms", 10);
    for (json_int_t attempt = 0;; attempt++) {
        /* Each attempt is a durable call at its own position: a re-run
         * takes the journaled failures (and success) without calling. */
        json_t *args = json_pack("{s:I, s:I, s:I}", "seq", seq, "attempt", attempt, "ok_at", ok_at);
        json_t *res = NULL;
        eddy_error *err = NULL;
        int rc = eddy_ctx_durable_execute_async(ctx, "flaky", args, flaky, NULL, &res, &err);
        json_decref(args);
        if (rc == EDDY_OK) {
            json_decref(res);
            return output(ctx, json_pack("{s:I, s:I}", "seq", seq, "attempts", attempt + 1));
        }
        if (rc != EDDY_ECALL || attempt >= 10)
            return err != NULL ? eddy_ctx_fail_error(ctx, err), rc : rc;
        eddy_error_free(err);
        log_line("sleep", seq, attempt);
        if ((rc = eddy_ctx_sleep(ctx, (uint64_t)backoff << attempt)) != EDDY_OK)
            return rc;
    }
}

static int dispatch(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    const char *op = json_string_value(json_object_get(in, "op"));
    json_int_t seq = iget(in, "seq", 0);
    if (op != NULL && strcmp(op, "sleep") == 0)
        return op_sleep(ctx, in, seq);
    if (op != NULL && strcmp(op, "instant") == 0)
        return op_instant(ctx, seq);
    if (op != NULL && strcmp(op, "retry") == 0)
        return op_retry(ctx, in, seq);
    eddy_ctx_fail(ctx, "ValueError", "unknown op");
    return EDDY_EINVAL;
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    return eddy_plan_add_action(plan, "dispatch", input, dispatch, NULL);
}
