/*
 * bench_journal (W4): each input makes BENCH_CALLS (default 10) durable
 * calls on the mailbox thread (eddy_ctx_durable_execute), each returning a
 * small result; every call is a journal record and waits for its commit.
 */
#include <stdlib.h>

#include <eddy/eddy.h>

static int ncalls = 10;

/* The result {"i": args, "v": "ok"}, built with jansson's constructors:
 * json_pack parses its format on every call (~2 k instructions, a fifth of
 * what a record costs eddy), which is the agent's cost, not the journal's. */
static int small(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    json_t *r = json_object();
    if (r == NULL || json_object_set_nocheck(r, "i", (json_t *)args) != 0 ||
        json_object_set_new_nocheck(r, "v", json_string_nocheck("ok")) != 0) {
        json_decref(r);
        return EDDY_ENOMEM;
    }
    *result = r;
    return EDDY_OK;
}

static int journal(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    (void)ev;
    for (int i = 0; i < ncalls; i++) {
        json_t *args = json_integer(i);
        json_t *r = NULL;
        int rc = eddy_ctx_durable_execute(ctx, "bench.small", args, small, NULL, &r, NULL);
        json_decref(args);
        json_decref(r);
        if (rc != EDDY_OK)
            return rc;
    }
    return EDDY_OK;
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    const char *n = getenv("BENCH_CALLS");
    if (n != NULL && atoi(n) > 0)
        ncalls = atoi(n);
    return eddy_plan_add_action(plan, "journal", on, journal, NULL);
}
