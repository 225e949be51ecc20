/*
 * Unit tests of the C example agents, compiled into the test (so that they
 * call the static library) and run on a runtime.
 *
 * Some failures of the calls an example makes cannot be made to happen for
 * real; this test is linked with --wrap for eddy_ctx_send_event and
 * eddy_event_free (tests/CMakeLists.txt), so the example's calls to them come
 * here first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tmptree.h"

#include "../../examples/order_triage.c"

/* ---------------------------------------------------------------- wrapped calls */

static const char *refuse_type; /* eddy_ctx_send_event fails for events of this type */
static eddy_event *refused;     /* the last event it refused */
static int refused_freed;       /* eddy_event_free(refused) calls */

int __real_eddy_ctx_send_event(eddy_ctx *ctx, eddy_event *ev);
void __real_eddy_event_free(eddy_event *ev);
int __wrap_eddy_ctx_send_event(eddy_ctx *ctx, eddy_event *ev);
void __wrap_eddy_event_free(eddy_event *ev);

int __wrap_eddy_ctx_send_event(eddy_ctx *ctx, eddy_event *ev)
{
    if (ev != NULL && refuse_type != NULL && strcmp(eddy_event_type(ev), refuse_type) == 0) {
        refused = ev;
        refused_freed = 0;
        return EDDY_ENOMEM;
    }
    return __real_eddy_ctx_send_event(ctx, ev);
}

void __wrap_eddy_event_free(eddy_event *ev)
{
    if (ev != NULL && ev == refused)
        refused_freed++;
    __real_eddy_event_free(ev);
}

/* ---------------------------------------------------------------- order_triage */

/* Run order_triage's plan on input (a temporary file); returns the run's code. */
static int run_order_triage(const char *input)
{
    char root[64], in[96], out[96];
    assert_int_equal(tmptree_make(root, "examples"), 0);
    snprintf(in, sizeof(in), "%s/in.jsonl", root);
    snprintf(out, sizeof(out), "%s/out.jsonl", root);
    FILE *fp = fopen(in, "w");
    assert_non_null(fp);
    fputs(input, fp);
    fclose(fp);
    eddy_plan *plan = eddy_plan_new();
    assert_int_equal(eddy_agent_init(plan), EDDY_OK);
    eddy_config *c = eddy_config_new();
    assert_int_equal(eddy_config_set(c, "input", in, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "output", out, NULL), EDDY_OK);
    assert_int_equal(eddy_config_set(c, "key", "customer", NULL), EDDY_OK);
    eddy_error *err = NULL;
    eddy_runtime *rt = eddy_runtime_new(plan, c, &err);
    if (rt == NULL)
        fail_msg("eddy_runtime_new: %s", eddy_error_message(err));
    eddy_config_free(c);
    int rc = eddy_runtime_run(rt);
    eddy_runtime_free(rt);
    assert_int_equal(tmptree_remove(root), 0);
    return rc;
}

/* When eddy_ctx_send_event() fails, the event is still the caller's: the
 * example frees it. */
static void test_order_triage_frees_a_refused_event(void **state)
{
    (void)state;
    static const char *input = "{\"customer\": \"c1\", \"order_id\": \"o-1\", \"amount\": 10}\n";
    assert_int_equal(run_order_triage(input), EDDY_OK);
    refuse_type = "Scored";
    refused = NULL;
    assert_int_equal(run_order_triage(input), EDDY_EACTION);
    refuse_type = NULL;
    assert_non_null(refused);
    assert_int_equal(refused_freed, 1);
    refused = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_triage_frees_a_refused_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
