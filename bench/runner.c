/*
 * bench_runner: runs a C agent over the public API (eddy_runtime_*) and
 * prints what the runtime did, as one JSON object, for the bench driver.
 *
 *   bench_runner [--tail] [--gate N] AGENT name=value...
 *
 * name=value pairs go to eddy_config_set (input, output, state, ...).
 * --tail   a thread follows the output file (woken by inotify) and stamps
 *          each line when it appears; with the "t0" field that bench_flow puts in each output
 *          (CLOCK_MONOTONIC when the action started) this gives the latency
 *          from the start of a run to its output line being in the file.
 * --gate N once N async calls were submitted (all runs suspended), record
 *          the resident memory, then open the agent's gate (bench_gate_open).
 */
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <eddy/eddy.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---------------------------------------------------------------- tail */

struct tail {
    const char *path;
    volatile int stop;
    int64_t *lat; /* ns per output line */
    size_t n, cap;
    int64_t first_ns; /* when the first line appeared */
};

static void tail_line(struct tail *t, const char *s, size_t len, int64_t now)
{
    const char *p = memmem(s, len, "\"t0\":", 5);
    if (p == NULL)
        return;
    int64_t t0 = strtoll(p + 5, NULL, 10);
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        int64_t *nv = realloc(t->lat, ncap * sizeof(*nv));
        if (nv == NULL)
            return;
        t->lat = nv;
        t->cap = ncap;
    }
    if (t->first_ns == 0)
        t->first_ns = now;
    t->lat[t->n++] = now - t0;
}

static void *tail_main(void *arg)
{
    struct tail *t = arg;
    FILE *f = NULL;
    char buf[1 << 16];
    size_t have = 0;
    /* Woken by inotify when the output directory changes, so that a line is
     * stamped when it is written rather than at the next poll. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", t->path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (in >= 0 && inotify_add_watch(in, dir, IN_CREATE | IN_MODIFY) < 0) {
        close(in);
        in = -1;
    }
    for (;;) {
        int stopping = t->stop;
        if (f == NULL)
            f = fopen(t->path, "r");
        if (f != NULL) {
            size_t r;
            while ((r = fread(buf + have, 1, sizeof(buf) - have, f)) > 0) {
                int64_t now = now_ns();
                have += r;
                size_t start = 0;
                for (size_t i = 0; i < have; i++) {
                    if (buf[i] == '\n') {
                        tail_line(t, buf + start, i - start, now);
                        start = i + 1;
                    }
                }
                memmove(buf, buf + start, have - start);
                have -= start;
            }
            clearerr(f);
        }
        if (stopping)
            break;
        if (in >= 0) {
            /* Events queued since the watch began wake this at once; the
             * timeout only notices the stop flag. */
            struct pollfd p = {.fd = in, .events = POLLIN};
            if (poll(&p, 1, 20) > 0) {
                char ev[4096];
                while (read(in, ev, sizeof(ev)) > 0)
                    ;
            }
        } else {
            struct timespec ts = {0, 100000}; /* 100 us */
            nanosleep(&ts, NULL);
        }
    }
    if (in >= 0)
        close(in);
    if (f != NULL)
        fclose(f);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- gate */

struct gate {
    uint64_t n;
    int done;
    uint64_t last_calls; /* async calls at the last progress tick */
    double last_change;  /* elapsed_s when they last moved */
    long rss_kib;
    double at_s;
    uint64_t in_flight;
    void (*open)(void);
};

static void on_progress(const eddy_stats *st, void *arg)
{
    struct gate *g = arg;
    if (g->done)
        return;
    if (st->async_calls < g->n) {
        if (st->async_calls != g->last_calls) {
            g->last_calls = st->async_calls;
            g->last_change = st->elapsed_s;
        } else if (st->elapsed_s - g->last_change > 2.0) {
            /* Stalled below N (the runtime stopped, say): open the gate so
             * that the blocked calls return and the run can end. */
            g->done = -1;
            g->in_flight = st->runs_in_flight;
            g->open();
        }
        return;
    }
    g->done = 1;
    g->rss_kib = rss_kib();
    g->at_s = st->elapsed_s;
    g->in_flight = st->runs_in_flight;
    g->open();
}

int main(int argc, char **argv)
{
    int tail = 0;
    struct gate gate;
    memset(&gate, 0, sizeof(gate));
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--tail") == 0)
            tail = 1;
        else if (strcmp(argv[i], "--gate") == 0 && i + 1 < argc)
            gate.n = strtoull(argv[++i], NULL, 10);
    }
    if (i >= argc) {
        fprintf(stderr, "usage: bench_runner [--tail] [--gate N] AGENT name=value...\n");
        return 2;
    }
    const char *agent = argv[i++];
    eddy_config *conf = eddy_config_new();
    const char *output = NULL;
    for (; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        eddy_error *err = NULL;
        if (eddy_config_set(conf, argv[i], eq + 1, &err) != EDDY_OK) {
            fprintf(stderr, "bench_runner: %s\n", err ? eddy_error_message(err) : argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "output") == 0)
            output = eq + 1;
    }
    eddy_plan *plan = eddy_plan_new();
    eddy_error *err = NULL;
    size_t alen = strlen(agent);
    int python = alen > 3 && strcmp(agent + alen - 3, ".py") == 0;
    if ((python ? eddy_plan_load_python(plan, agent, NULL, &err)
                : eddy_plan_load_shared(plan, agent, &err)) != EDDY_OK) {
        fprintf(stderr, "bench_runner: %s\n", eddy_error_message(err));
        return 1;
    }
    long rss0 = rss_kib();
    int64_t t_new = now_ns();
    eddy_runtime *rt = eddy_runtime_new(plan, conf, &err);
    if (rt == NULL) {
        fprintf(stderr, "bench_runner: %s\n", err ? eddy_error_message(err) : "runtime_new");
        return 1;
    }
    long rss1 = rss_kib();
    if (gate.n > 0) {
        void *h = dlopen(agent, RTLD_NOW | RTLD_NOLOAD);
        gate.open = h != NULL ? (void (*)(void))dlsym(h, "bench_gate_open") : NULL;
        if (gate.open == NULL) {
            fprintf(stderr, "bench_runner: %s has no bench_gate_open\n", agent);
            return 1;
        }
        eddy_runtime_set_progress(rt, on_progress, &gate, 10);
    }
    struct tail tl;
    memset(&tl, 0, sizeof(tl));
    pthread_t tid;
    if (tail && output != NULL) {
        tl.path = output;
        pthread_create(&tid, NULL, tail_main, &tl);
    }
    /* The runtime's mailbox is this thread: its CPU time over the wall time
     * says whether the mailbox was the limit (near 1) or waited. */
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    int64_t t_run = now_ns();
    int rc = eddy_runtime_run(rt);
    int64_t t_end = now_ns();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double mailbox_cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    if (tail && output != NULL) {
        tl.stop = 1;
        pthread_join(tid, NULL);
    }
    eddy_stats st;
    eddy_runtime_stats(rt, &st);
    if (rc != EDDY_OK) {
        const eddy_error *e = eddy_runtime_error(rt);
        fprintf(stderr, "bench_runner: run: %s\n", e ? eddy_error_message(e) : eddy_strerror(rc));
    }
    printf("{\"rc\": %d, \"inputs\": %" PRIu64 ", \"outputs\": %" PRIu64 ", \"actions\": %" PRIu64
           ", \"async_calls\": %" PRIu64 ", \"durable_calls\": %" PRIu64 ", \"commits\": %" PRIu64
           ", \"syncs\": %" PRIu64 ", \"elapsed_s\": %.6f, \"open_s\": %.6f, \"rss0_kib\": %ld"
           ", \"rss_open_kib\": %ld, \"mailbox_cpu_s\": %.6f",
           rc, st.inputs, st.outputs, st.actions_executed, st.async_calls, st.durable_calls,
           st.commits, st.syncs, (double)(t_end - t_run) / 1e9, (double)(t_run - t_new) / 1e9, rss0,
           rss1, mailbox_cpu);
    if (gate.n > 0)
        printf(", \"gate_reached\": %d, \"gate_rss_kib\": %ld, \"gate_at_s\": %.3f"
               ", \"gate_in_flight\": %" PRIu64,
               gate.done, gate.rss_kib, gate.at_s, gate.in_flight);
    if (tail && tl.n > 0) {
        qsort(tl.lat, tl.n, sizeof(*tl.lat), cmp_i64);
        printf(", \"lat_n\": %zu, \"lat_p50_ms\": %.3f, \"lat_p99_ms\": %.3f, \"lat_max_ms\": "
               "%.3f, \"first_out_s\": %.6f",
               tl.n, (double)tl.lat[tl.n / 2] / 1e6, (double)tl.lat[(tl.n * 99) / 100] / 1e6,
               (double)tl.lat[tl.n - 1] / 1e6, (double)(tl.first_ns - t_run) / 1e9);
    }
    printf("}\n");
    free(tl.lat);
    eddy_runtime_free(rt);
    eddy_config_free(conf);
    return rc == EDDY_OK ? 0 : 1;
}
