/*
 * Helpers shared by the test agents (each .c here is its own module).
 */
#ifndef EDDY_TESTS_AGENT_UTIL_H
#define EDDY_TESTS_AGENT_UTIL_H

#include <eddy/eddy.h>

/* attrs is stolen (NULL: no attributes). The event is taken on success only:
 * freed on failure. */
static inline int send_typed(eddy_ctx *ctx, const char *type, json_t *attrs)
{
    eddy_event *ev = eddy_event_new(type, attrs);
    if (ev == NULL)
        return EDDY_ENOMEM;
    int rc = eddy_ctx_send_event(ctx, ev);
    if (rc != EDDY_OK)
        eddy_event_free(ev);
    return rc;
}

/* Send out with the key added, as an OutputEvent. */
static inline int output(eddy_ctx *ctx, json_t *out)
{
    json_object_set_new(out, "key", json_loads(eddy_ctx_key(ctx), JSON_DECODE_ANY, NULL));
    return send_typed(ctx, EDDY_OUTPUT_EVENT, json_pack("{s:o}", "output", out));
}

#endif
