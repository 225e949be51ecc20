/*
 * bench_suspend (W6): each input makes one execute_async call that blocks on
 * a gate until the runner opens it (bench_gate_open, found with dlsym), so
 * that every admitted run is suspended at once.
 */
#include <pthread.h>

#include <eddy/eddy.h>

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open;

void bench_gate_open(void);

__attribute__((visibility("default"))) void bench_gate_open(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static int wait_gate(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)args;
    (void)arg;
    (void)err;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    *result = NULL;
    return EDDY_OK;
}

static int suspend(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    (void)ev;
    return eddy_ctx_execute_async(ctx, wait_gate, NULL, NULL, NULL, NULL);
}

int eddy_agent_init(eddy_plan *plan)
{
    static const char *const on[] = {EDDY_INPUT_EVENT, NULL};
    return eddy_plan_add_action(plan, "suspend", on, suspend, NULL);
}
