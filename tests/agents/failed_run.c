/*
 * A run that fails in one action while another action of the run is still in
 * a slow durable call: the C twin of skipped_run.py, for what --on-error skip
 * and --state make of a crash between the failure and the run's end
 * (tests/e2e/test_durable.py). Every call appends a line to the file named
 * by EDDY_TEST_EFFECTS ("what {args}"), so that a test can tell what ran.
 *
 * Input records: {key, n, fail?, marker, dead?, crash_flag?}.
 *
 * Actions, in the order they start (the plan's order):
 *   first  (InputEvent) durable call "first"; short-term memory count += 1
 *                       and first = n, sensory memory s = n; the output
 *                       {n, by: "first", count}; sends Work
 *   slow   (Work)       short-term memory slow = n; the reconciled durable
 *                       call "wait" on a worker, which waits for the marker
 *                       that fails makes (so slow is in flight when fails
 *                       fails); with crash_flag (a file, removed first) it
 *                       then waits for the dead-letter file (dead) to hold
 *                       a line, so that the failure is committed, and the
 *                       process dies (_exit(137)); then the durable call
 *                       "after", and the output {n, by: "slow", memory}
 *   fails  (Work)       short-term memory fails = n; the output {n, by:
 *                       "fails"}; makes the marker; fails when fail is true
 *   never  (Work)       the call "never": ready when fails fails, so it
 *                       never runs in that run
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <eddy/eddy.h>

#include "agent_util.h"

static json_int_t iget(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : 0;
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

/* Wait up to 30 s for path to exist and hold at least min bytes. */
static void wait_for(const char *path, off_t min)
{
    struct stat sb;
    for (int i = 0; path != NULL && i < 6000; i++) {
        if (stat(path, &sb) == 0 && sb.st_size >= min)
            return;
        usleep(5000);
    }
}

static json_t *args_of(const json_t *rec, const char *what)
{
    return json_pack("{s:s, s:O?, s:I}", "call", what, "key", json_object_get(rec, "key"), "n",
                     iget(rec, "n"));
}

/* A call that only records that it ran. */
static int note(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect(json_string_value(json_object_get(args, "call")), args);
    *result = json_string("done");
    return EDDY_OK;
}

static int wait_call(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect("wait", args);
    wait_for(json_string_value(json_object_get(args, "marker")), 0);
    const char *flag = json_string_value(json_object_get(args, "crash_flag"));
    if (flag != NULL && unlink(flag) == 0) {
        wait_for(json_string_value(json_object_get(args, "dead")), 1);
        _exit(137); /* past the failure, before the run's end */
    }
    *result = json_string("waited");
    return EDDY_OK;
}

static int reconcile(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    record_effect("reconcile", args);
    *result = json_string("reconciled");
    return EDDY_OK;
}

/* The durable call what of rec's run, its result dropped. */
static int call(eddy_ctx *ctx, const json_t *rec, const char *what, int async)
{
    json_t *args = args_of(rec, what), *res = NULL;
    int rc = async ? eddy_ctx_durable_execute_async(ctx, what, args, note, NULL, &res, NULL)
                   : eddy_ctx_durable_execute(ctx, what, args, note, NULL, &res, NULL);
    json_decref(args);
    json_decref(res);
    return rc;
}

static json_t *mem(eddy_memory *m, const char *path)
{
    json_t *v = eddy_memory_get(m, path);
    return v != NULL ? v : json_null();
}

static int first(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *rec = json_object_get(eddy_event_attrs(ev), "input");
    int rc = call(ctx, rec, "first", 0);
    if (rc != EDDY_OK)
        return rc;
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_int_t count = 1;
    json_t *c = eddy_memory_get(stm, "count");
    if (json_is_integer(c))
        count += json_integer_value(c);
    json_decref(c);
    eddy_memory_set(stm, "count", json_integer(count));
    eddy_memory_set(stm, "first", json_integer(iget(rec, "n")));
    eddy_memory_set(eddy_ctx_sensory_memory(ctx), "s", json_integer(iget(rec, "n")));
    rc = output(ctx,
                json_pack("{s:I, s:s, s:I}", "n", iget(rec, "n"), "by", "first", "count", count));
    return rc != EDDY_OK ? rc : send_typed(ctx, "Work", json_pack("{s:O}", "rec", rec));
}

static int slow(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *rec = json_object_get(eddy_event_attrs(ev), "rec");
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    eddy_memory_set(stm, "slow", json_integer(iget(rec, "n")));
    json_t *args = args_of(rec, "wait"), *res = NULL;
    json_object_set(args, "marker", json_object_get(rec, "marker"));
    if (json_object_get(rec, "crash_flag") != NULL) {
        json_object_set(args, "crash_flag", json_object_get(rec, "crash_flag"));
        json_object_set(args, "dead", json_object_get(rec, "dead"));
    }
    int rc = eddy_ctx_durable_execute_reconciled(ctx, "wait", args, wait_call, reconcile, NULL,
                                                 &res, NULL);
    json_decref(args);
    json_decref(res);
    if (rc == EDDY_OK)
        rc = call(ctx, rec, "after", 1);
    if (rc != EDDY_OK)
        return rc;
    eddy_memory *sen = eddy_ctx_sensory_memory(ctx);
    json_t *m = json_pack("{s:o, s:o, s:o, s:o, s:o}", "count", mem(stm, "count"), "first",
                          mem(stm, "first"), "slow", mem(stm, "slow"), "fails", mem(stm, "fails"),
                          "s", mem(sen, "s"));
    return output(ctx,
                  json_pack("{s:I, s:s, s:o}", "n", iget(rec, "n"), "by", "slow", "memory", m));
}

static int fails(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *rec = json_object_get(eddy_event_attrs(ev), "rec");
    eddy_memory_set(eddy_ctx_short_term_memory(ctx), "fails", json_integer(iget(rec, "n")));
    int rc = output(ctx, json_pack("{s:I, s:s}", "n", iget(rec, "n"), "by", "fails"));
    const char *marker = json_string_value(json_object_get(rec, "marker"));
    int fd = marker != NULL ? open(marker, O_WRONLY | O_CREAT, 0644) : -1;
    if (fd >= 0)
        close(fd);
    if (rc == EDDY_OK && json_is_true(json_object_get(rec, "fail"))) {
        char msg[64];
        snprintf(msg, sizeof(msg), "run %lld fails", (long long)iget(rec, "n"));
        eddy_ctx_fail(ctx, "ValueError", msg);
        return EDDY_ECALL;
    }
    return rc;
}

static int never(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    return call(ctx, json_object_get(eddy_event_attrs(ev), "rec"), "never", 1);
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    static const char *const work[] = {"Work", NULL};
    int rc = eddy_plan_add_action(plan, "first", input, first, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "slow", work, slow, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "fails", work, fails, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "never", work, never, NULL);
    return rc;
}
