/*
 * An agent none of whose actions listens to InputEvent (they listen to "Foo"
 * and "Bar"): every input would be dropped, so `eddy run` refuses it at load.
 */
#include <eddy/eddy.h>

static int foo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    (void)arg;
    return eddy_ctx_send_output(ctx, json_string("foo"));
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on_foo[] = {"Foo", "Bar", "Foo", NULL};
    static const char *const on_bar[] = {"Bar", NULL};
    int rc = eddy_plan_add_action(plan, "foo", on_foo, foo, NULL);
    return rc != EDDY_OK ? rc : eddy_plan_add_action(plan, "bar", on_bar, foo, NULL);
}
