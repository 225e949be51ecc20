/*
 * bench_async (W2): each input makes BENCH_CALLS (default 10) no-op
 * execute_async calls one after the other, then sends one small output.
 * Many inputs in flight give many calls in flight.
 */
#include <stdlib.h>

#include <eddy/eddy.h>

static int ncalls = 10;

static int noop(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    *result = NULL;
    return EDDY_OK;
}

static int calls(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    (void)ev;
    for (int i = 0; i < ncalls; i++) {
        int rc = eddy_ctx_execute_async(ctx, noop, NULL, NULL, NULL, NULL);
        if (rc != EDDY_OK)
            return rc;
    }
    return eddy_ctx_send_output(ctx, json_integer(ncalls));
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    const char *n = getenv("BENCH_CALLS");
    if (n != NULL && atoi(n) > 0)
        ncalls = atoi(n);
    return eddy_plan_add_action(plan, "calls", on, calls, NULL);
}
