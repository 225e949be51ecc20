/*
 * order_triage: an eddy agent in C that triages orders per customer.
 *
 * Input (one JSON object per line, keyed by "customer"):
 *   {"customer": "c042", "order_id": "o-17", "amount": 129.90, "country": "DE"}
 *
 * Two actions:
 *   score   (on InputEvent)  asks a slow risk model for a score, through the
 *                            worker pool as a durable call (so a crash never
 *                            asks twice), keeps the customer's running totals
 *                            in short-term memory, and sends a Scored event.
 *   decide  (on Scored)      turns the score and the customer's history into a
 *                            decision and sends it to the sink as an OutputEvent.
 *
 * Output: {"order_id": "o-17", "customer": "c042", "decision": "approve",
 *          "score": 0.12, "orders": 3, "total": 388.5}
 *
 * Build it like any agent (see the README), without -leddy, with libm for exp():
 *   cc -shared -fPIC order_triage.c $(pkg-config --cflags eddy) $(pkg-config --libs jansson) \
 *       -lm -o order_triage.so
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <eddy/eddy.h>

/*
 * The "risk model": in real life an HTTP call to a scoring service. Here it
 * computes a deterministic score from the order and takes a few milliseconds,
 * like a remote call would. It runs on a worker thread: it may only use its
 * arguments.
 */
static int risk_model(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    double amount = json_number_value(json_object_get(args, "amount"));
    const char *country = json_string_value(json_object_get(args, "country"));
    if (amount < 0) {
        *err = eddy_error_new("ValueError", "negative amount");
        return EDDY_ECALL;
    }
    usleep(2000); /* the network round trip */
    double s = 1.0 - exp(-amount / 800.0);
    if (country != NULL && strcmp(country, "XX") == 0)
        s = fmin(1.0, s + 0.5);
    *result = json_real(round(s * 1000.0) / 1000.0);
    return EDDY_OK;
}

static int score(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *order = json_object_get(eddy_event_attrs(ev), "input");
    json_t *amount = json_object_get(order, "amount");
    if (!json_is_number(amount)) {
        eddy_ctx_fail(ctx, "ValueError", "order has no numeric amount");
        return EDDY_EINVAL;
    }

    json_t *args =
        json_pack("{s:O, s:O?}", "amount", amount, "country", json_object_get(order, "country"));
    json_t *s = NULL;
    eddy_error *err = NULL;
    int rc = eddy_ctx_durable_execute_async(ctx, "risk_model", args, risk_model, NULL, &s, &err);
    json_decref(args);
    if (rc != EDDY_OK) {
        if (err != NULL)
            eddy_ctx_fail_error(ctx, err);
        return rc;
    }

    /* Running totals of this customer, kept across orders. */
    eddy_memory *stm = eddy_ctx_short_term_memory(ctx);
    json_t *n = eddy_memory_get(stm, "history.orders");
    json_t *t = eddy_memory_get(stm, "history.total");
    json_int_t orders = (json_is_integer(n) ? json_integer_value(n) : 0) + 1;
    double total = (json_is_number(t) ? json_number_value(t) : 0.0) + json_number_value(amount);
    json_decref(n);
    json_decref(t);
    total = round(total * 100.0) / 100.0;
    if ((rc = eddy_memory_set(stm, "history.orders", json_integer(orders))) != EDDY_OK ||
        (rc = eddy_memory_set(stm, "history.total", json_real(total))) != EDDY_OK) {
        json_decref(s);
        return rc;
    }

    json_t *attrs = json_pack("{s:O, s:o, s:I, s:f}", "order", order, "score", s, "orders", orders,
                              "total", total);
    eddy_event *scored = attrs != NULL ? eddy_event_new("Scored", attrs) : NULL;
    if (scored == NULL)
        return EDDY_ENOMEM;
    /* The event is taken on success only: on failure it is still ours. */
    if ((rc = eddy_ctx_send_event(ctx, scored)) != EDDY_OK)
        eddy_event_free(scored);
    return rc;
}

static int decide(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    json_t *a = eddy_event_attrs(ev);
    json_t *order = json_object_get(a, "order");
    double s = json_number_value(json_object_get(a, "score"));
    json_int_t orders = json_integer_value(json_object_get(a, "orders"));
    /* A known customer earns some trust. */
    double threshold = orders >= 3 ? 0.8 : 0.6;
    const char *decision = s >= 0.95 ? "reject" : s >= threshold ? "review" : "approve";

    json_t *out = json_pack(
        "{s:O?, s:O?, s:s, s:O, s:I, s:O}", "order_id", json_object_get(order, "order_id"),
        "customer", json_object_get(order, "customer"), "decision", decision, "score",
        json_object_get(a, "score"), "orders", orders, "total", json_object_get(a, "total"));
    return eddy_ctx_send_output(ctx, out); /* OutputEvent {"output": out} */
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on_input[] = {EDDY_INPUT_EVENT, NULL};
    static const char *const on_scored[] = {"Scored", NULL};
    int rc = eddy_plan_add_action(plan, "score", on_input, score, NULL);
    if (rc == EDDY_OK)
        rc = eddy_plan_add_action(plan, "decide", on_scored, decide, NULL);
    return rc;
}
