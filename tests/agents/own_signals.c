/*
 * The C agent of tests/e2e/test_signals.py that installs signal handlers of
 * its own (own_signals.py is its Python twin): its init one for SIGTERM,
 * with sigaction(2), which eddy finds and replaces by its own once the agent
 * has loaded. Each input record names an "op":
 *   wait     create the file $EDDY_TEST_STARTED, then sleep 30 s and output
 *            the record: a run that a signal must stop
 *   install  install a handler for SIGINT (in the action: eddy finds it when
 *            the run ends) and output the record
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <eddy/eddy.h>

#include "agent_util.h"

static void handler(int signo)
{
    const char *msg = signo == SIGINT ? "agent handler SIGINT\n" : "agent handler SIGTERM\n";
    ssize_t w = write(STDERR_FILENO, msg, strlen(msg));
    (void)w;
}

static int install(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL) == 0 ? EDDY_OK : EDDY_EINVAL;
}

static int dispatch(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    const json_t *in = json_object_get(eddy_event_attrs(ev), "input");
    const char *op = json_string_value(json_object_get(in, "op"));
    int rc = EDDY_OK;
    if (op != NULL && strcmp(op, "wait") == 0) {
        const char *started = getenv("EDDY_TEST_STARTED");
        int fd = started != NULL ? open(started, O_WRONLY | O_CREAT, 0644) : -1;
        if (fd >= 0)
            close(fd);
        rc = eddy_ctx_sleep(ctx, 30000);
    } else if (op != NULL && strcmp(op, "install") == 0) {
        rc = install(SIGINT);
    }
    if (rc != EDDY_OK)
        return rc;
    return output(ctx, json_deep_copy(in));
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const input[] = {EDDY_INPUT_EVENT, NULL};
    int rc = install(SIGTERM);
    return rc != EDDY_OK ? rc : eddy_plan_add_action(plan, "dispatch", input, dispatch, NULL);
}
