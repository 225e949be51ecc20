/*
 * bench_echo (W1): one OutputEvent per input, carrying the input record.
 * No memory, no calls: what is left is the runtime's own cost per input.
 */
#include <eddy/eddy.h>

static int echo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    /* {"output": in}, built with jansson's constructors: json_pack parses its
     * format on every call (~1.1 k instructions, a fifth of the mailbox's
     * cost per input), the agent's cost rather than the runtime's. */
    json_t *attrs = json_object();
    if (attrs != NULL && json_object_set_nocheck(attrs, "output", in) != 0) {
        json_decref(attrs);
        attrs = NULL;
    }
    eddy_event *out = eddy_event_new(EDDY_OUTPUT_EVENT, attrs);
    if (out == NULL)
        return EDDY_ENOMEM;
    int rc = eddy_ctx_send_event(ctx, out);
    if (rc != EDDY_OK)
        eddy_event_free(out);
    return rc;
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    return eddy_plan_add_action(plan, "echo", on, echo, NULL);
}
