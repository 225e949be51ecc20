/*
 * An agent whose eddy_agent_init() adds an action and then fails, or, with
 * EDDY_TEST_INIT=empty in the environment, succeeds without adding any: a
 * failed load must leave the plan as it was (tests/unit/test_plan.c). With
 * EDDY_TEST_INIT=output, dup or ignored, it adds an invalid action after the
 * first one (on OutputEvent, under the first one's name) and returns the
 * refusal's code, or (ignored) adds a valid one after the refused one and
 * returns EDDY_EINVAL for a reason of its own.
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
    static const char *const output[] = {EDDY_OUTPUT_EVENT, NULL};
    int rc = eddy_plan_add_action(plan, "half", types, half, NULL);
    if (rc != EDDY_OK || mode == NULL)
        return rc != EDDY_OK ? rc : EDDY_EIO;
    if (strcmp(mode, "output") == 0)
        return eddy_plan_add_action(plan, "audit", output, half, NULL);
    if (strcmp(mode, "dup") == 0)
        return eddy_plan_add_action(plan, "half", types, half, NULL);
    if (strcmp(mode, "ignored") == 0) {
        (void)eddy_plan_add_action(plan, "half", types, half, NULL);
        rc = eddy_plan_add_action(plan, "other", types, half, NULL);
        return rc != EDDY_OK ? rc : EDDY_EINVAL;
    }
    return EDDY_EIO;
}
