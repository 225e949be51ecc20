/*
 * An agent whose eddy_agent_init() adds an action and then fails, or, with
 * EDDY_TEST_INIT=empty in the environment, succeeds without adding any: a
 * failed load must leave the plan as it was (tests/unit/test_plan.c).
 */
#include <stdlib.h>
#include <string.h>

#include <eddy/eddy.h>

static int half(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    return eddy_ctx_send_output(ctx, json_string("half"));
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const types[] = {EDDY_INPUT_EVENT, "Half", NULL};
    const char *mode = getenv("EDDY_TEST_INIT");
    if (mode != NULL && strcmp(mode, "empty") == 0)
        return EDDY_OK;
    int rc = eddy_plan_add_action(plan, "half", types, half, NULL);
    return rc != EDDY_OK ? rc : EDDY_EIO;
}
