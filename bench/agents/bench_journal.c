/*
 * bench_journal (W4): each input makes BENCH_CALLS (default 10) durable
 * calls on the mailbox thread (eddy_ctx_durable_execute), each returning a
 * small result; every call is a journal record and waits for its commit.
 */
#include <stdlib.h>

#include <eddy/eddy.h>

static int ncalls = 10;

static int small(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    *result = json_pack("{s:O*, s:s}", "i", args, "v", "ok");
    return *result != NULL ? EDDY_OK : EDDY_ENOMEM;
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
