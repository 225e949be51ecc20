/*
 * bench_flow (W3, W7): the two-step durable workflow. Per input: a durable
 * call that returns at once, then a durable call that sleeps BENCH_SLEEP_MS
 * (default 10) on a worker. The output carries "t0", CLOCK_MONOTONIC in ns
 * taken when the action started, so that a runner in the same process can
 * compute the latency to the output line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <eddy/eddy.h>

static long sleep_ms = 10;

/* {name: v} (v borrowed; left out when NULL), built with jansson's
 * constructors: json_pack parses its format on every call, and the two
 * packs of each run were ~4 k instructions, a tenth of the mailbox's cost
 * per run at 256 runs in flight, the agent's cost rather than the
 * runtime's (bench_echo does the same). */
static json_t *obj1(const char *name, json_t *v)
{
    json_t *o = json_object();
    if (o != NULL && v != NULL && json_object_set_nocheck(o, name, v) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static int step_fast(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    *result = obj1("ok", json_object_get(args, "id"));
    return *result != NULL ? EDDY_OK : EDDY_ENOMEM;
}

static int step_sleep(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    *result = json_true();
    return EDDY_OK;
}

static int flow(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t t0 = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    json_t *args = obj1("id", json_object_get(in, "id"));
    json_t *r1 = NULL, *r2 = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "bench.fast", args, step_fast, NULL, &r1, NULL);
    if (rc == EDDY_OK)
        rc = eddy_ctx_durable_execute_async(ctx, "bench.sleep", args, step_sleep, NULL, &r2, NULL);
    json_decref(args);
    json_decref(r1);
    json_decref(r2);
    if (rc != EDDY_OK)
        return rc;
    json_t *o = obj1("id", json_object_get(in, "id"));
    if (o != NULL && json_object_set_new_nocheck(o, "t0", json_integer(t0)) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o != NULL ? eddy_ctx_send_output(ctx, o) : EDDY_ENOMEM;
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    const char *s = getenv("BENCH_SLEEP_MS");
    if (s != NULL && atol(s) >= 0)
        sleep_ms = atol(s);
    return eddy_plan_add_action(plan, "flow", on, flow, NULL);
}
