/*
 * bench_handoff (W2 bound): the raw worker hand-off with eddy's own pool
 * (src/exec/pool.h): submit a no-op job, wake a worker, signal the
 * completion back to the loop. No coroutines, no tasks, no JSON.
 *
 *   bench_handoff THREADS IN_FLIGHT TOTAL [SLEEP_MS]
 *
 * Keeps IN_FLIGHT jobs in flight (each completion submits the next) until
 * TOTAL jobs completed. IN_FLIGHT 1 gives the idle round-trip latency.
 * Prints one JSON object: calls, elapsed_s, calls_per_s, ns_per_call.
 *
 * With SLEEP_MS (W3's hand-off bound): each of the IN_FLIGHT slots runs
 * TOTAL runs of W3's shape between them: a job that returns at once, then,
 * from its completion on the loop, a job that sleeps SLEEP_MS. The same
 * thread hand-offs as a W3 run, without the runtime (no store, syncs,
 * coroutines or JSON). Prints runs, elapsed_s, runs_per_s, us_per_run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <uv.h>

#include "exec/pool.h"

static eddy__pool *pool;
static unsigned long long submitted, completed, total;
static long sleep_ms = -1; /* >= 0: two-step runs */

typedef struct slot {
    eddy__job job;
    int step; /* two-step runs: 0 the quick job, 1 the sleeping one */
} slot;

static void work(eddy__job *job)
{
    slot *s = (slot *)job;
    if (sleep_ms >= 0 && s->step == 1) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
}

static void done(eddy__job *job)
{
    slot *s = (slot *)job;
    if (sleep_ms >= 0 && s->step == 0) {
        s->step = 1;
        eddy__pool_submit(pool, job);
        return;
    }
    completed++;
    if (submitted < total) {
        submitted++;
        s->step = 0;
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
        fprintf(stderr, "usage: bench_handoff THREADS IN_FLIGHT TOTAL [SLEEP_MS]\n");
        return 2;
    }
    unsigned threads = (unsigned)atoi(argv[1]);
    size_t inflight = (size_t)atoll(argv[2]);
    total = (unsigned long long)atoll(argv[3]);
    if (argc > 4)
        sleep_ms = atol(argv[4]) >= 0 ? atol(argv[4]) : 0;
    uv_loop_t loop;
    uv_loop_init(&loop);
    pool = eddy__pool_new(&loop, threads);
    slot *jobs = calloc(inflight, sizeof(*jobs));
    if (pool == NULL || jobs == NULL)
        return 1;
    uv_prepare_t prep;
    uv_prepare_init(&loop, &prep);
    uv_prepare_start(&prep, on_prepare);
    uv_unref((uv_handle_t *)&prep);
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < inflight && submitted < total; i++) {
        jobs[i].job.work = work;
        jobs[i].job.done = done;
        submitted++;
        eddy__pool_submit(pool, &jobs[i].job);
    }
    eddy__pool_flush(pool);
    uv_run(&loop, UV_RUN_DEFAULT);
    double el = (double)(uv_hrtime() - t0) / 1e9;
    eddy__pool_close(pool);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(jobs);
    if (sleep_ms >= 0) {
        printf("{\"runs\": %llu, \"elapsed_s\": %.6f, \"runs_per_s\": %.1f, "
               "\"us_per_run\": %.1f}\n",
               completed, el, (double)completed / el, el * 1e6 / (double)completed);
        return 0;
    }
    printf("{\"calls\": %llu, \"elapsed_s\": %.6f, \"calls_per_s\": %.0f, "
           "\"ns_per_call\": %.1f}\n",
           completed, el, (double)completed / el, el * 1e9 / (double)completed);
    return 0;
}
