/*
 * bench_handoff (W2 bound): the raw worker hand-off with eddy's own pool
 * (src/exec/pool.h): submit a no-op job, wake a worker, signal the
 * completion back to the loop. No coroutines, no tasks, no JSON.
 *
 *   bench_handoff THREADS IN_FLIGHT TOTAL
 *
 * Keeps IN_FLIGHT jobs in flight (each completion submits the next) until
 * TOTAL jobs completed. IN_FLIGHT 1 gives the idle round-trip latency.
 * Prints one JSON object: calls, elapsed_s, calls_per_s, ns_per_call.
 */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "exec/pool.h"

static eddy__pool *pool;
static unsigned long long submitted, completed, total;

static void work(eddy__job *job)
{
    (void)job;
}

static void done(eddy__job *job)
{
    completed++;
    if (submitted < total) {
        submitted++;
        eddy__pool_submit(pool, job);
    }
}

static void on_prepare(uv_prepare_t *h)
{
    (void)h;
    eddy__pool_flush(pool); /* as the operator does once per loop turn */
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_handoff THREADS IN_FLIGHT TOTAL\n");
        return 2;
    }
    unsigned threads = (unsigned)atoi(argv[1]);
    size_t inflight = (size_t)atoll(argv[2]);
    total = (unsigned long long)atoll(argv[3]);
    uv_loop_t loop;
    uv_loop_init(&loop);
    pool = eddy__pool_new(&loop, threads);
    eddy__job *jobs = calloc(inflight, sizeof(*jobs));
    if (pool == NULL || jobs == NULL)
        return 1;
    uv_prepare_t prep;
    uv_prepare_init(&loop, &prep);
    uv_prepare_start(&prep, on_prepare);
    uv_unref((uv_handle_t *)&prep);
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < inflight && submitted < total; i++) {
        jobs[i].work = work;
        jobs[i].done = done;
        submitted++;
        eddy__pool_submit(pool, &jobs[i]);
    }
    eddy__pool_flush(pool);
    uv_run(&loop, UV_RUN_DEFAULT);
    double el = (double)(uv_hrtime() - t0) / 1e9;
    eddy__pool_close(pool);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(jobs);
    printf("{\"calls\": %llu, \"elapsed_s\": %.6f, \"calls_per_s\": %.0f, "
           "\"ns_per_call\": %.1f}\n",
           completed, el, (double)completed / el, el * 1e9 / (double)completed);
    return 0;
}
