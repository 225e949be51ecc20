/*
 * Unit tests of a runtime's life in an embedding program: a thread that ran
 * runtimes gives back what it took when it exits, a runtime runs inside an
 * action of another, and a misuse that would corrupt memory
 * (eddy_runtime_free under the run, or on another thread) stops the program
 * with a message instead.
 */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "eddy/eddy.h"
#include "tmptree.h"
#include "util/jalloc.h"

static int echo(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)arg;
    return eddy_ctx_send_output(ctx, json_incref(json_object_get(eddy_event_attrs(ev), "input")));
}

typedef struct fixture {
    char root[64], in[96], out[96];
} fixture;

static void fixture_make(fixture *f, int lines)
{
    assert_int_equal(tmptree_make(f->root, "lifecycle"), 0);
    snprintf(f->in, sizeof(f->in), "%s/in.jsonl", f->root);
    snprintf(f->out, sizeof(f->out), "%s/out.jsonl", f->root);
    FILE *fp = fopen(f->in, "w");
    assert_non_null(fp);
    for (int i = 0; i < lines; i++)
        fprintf(fp, "{\"key\": \"k%d\", \"i\": %d}\n", i % 10, i);
    fclose(fp);
}

/* A runtime of the echo agent over f's files, or NULL. */
static eddy_runtime *runtime(const fixture *f)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    if (p == NULL || eddy_plan_add_action(p, "echo", types, echo, NULL) != EDDY_OK) {
        eddy_plan_free(p);
        return NULL;
    }
    eddy_config *c = eddy_config_new();
    eddy_config_set(c, "input", f->in, NULL);
    eddy_config_set(c, "output", f->out, NULL);
    eddy_config_set(c, "async-threads", "1", NULL);
    eddy_runtime *rt = eddy_runtime_new(p, c, NULL);
    eddy_config_free(c);
    if (rt == NULL)
        eddy_plan_free(p);
    return rt;
}

static void *run_one(void *arg)
{
    eddy_runtime *rt = runtime(arg);
    int rc = rt != NULL ? eddy_runtime_run(rt) : EDDY_EINVAL;
    eddy_runtime_free(rt);
    return (void *)(intptr_t)rc;
}

static void run_on_threads(fixture *f, int n)
{
    for (int i = 0; i < n; i++) {
        pthread_t t;
        void *rc = NULL;
        assert_int_equal(pthread_create(&t, NULL, run_one, f), 0);
        assert_int_equal(pthread_join(t, &rc), 0);
        assert_int_equal((intptr_t)rc, EDDY_OK);
    }
}

/* Each thread that runs a runtime gets a stack for the stack-overflow
 * handler (sigaltstack, 64 KiB): it went with the thread's end, 64 KiB lost
 * per thread before. The heap in use after 64 threads, each running one
 * runtime, is compared with the heap after a few (caches warmed). */
static void test_a_thread_gives_back_its_handler_stack(void **state)
{
    (void)state;
#if defined(EDDY_ASAN) || defined(EDDY_TSAN)
    skip(); /* the sanitizers take the fault handler's place: no such stack */
#endif
    fixture f;
    fixture_make(&f, 20);
    run_on_threads(&f, 4);
    size_t before = mallinfo2().uordblks;
    run_on_threads(&f, 64);
    size_t after = mallinfo2().uordblks;
    /* 64 stacks kept would be 4 MiB; allow a few for the heap's own churn. */
    if (after > before + 4 * 64 * 1024)
        fail_msg("the heap in use grew by %zu bytes over 64 threads", after - before);
    assert_int_equal(tmptree_remove(f.root), 0);
}

/* Run fn in a child with stderr on a pipe: it must die of SIGABRT, its
 * stderr holding want. */
static void expect_abort(void (*fn)(const fixture *), const char *want)
{
    fixture f;
    fixture_make(&f, 200);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        signal(SIGABRT, SIG_DFL);
        alarm(30); /* a hang ends the child (SIGALRM), and the test fails */
        fn(&f);
        _exit(0); /* the misuse went unnoticed */
    }
    close(fds[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("the child did not abort (status %d); its stderr: %s", status, buf);
    if (strstr(buf, want) == NULL)
        fail_msg("the child's stderr lacks '%s': %s", want, buf);
    assert_int_equal(tmptree_remove(f.root), 0);
}

/* ---------------------------------------------------------------- nested runs */

typedef struct nested {
    fixture inner;  /* the inner runtime's files */
    int inner_rc;   /* what its run returned */
    int call_rc;    /* the outer action's async call after it */
    size_t cached;  /* the JSON cache's bytes after the inner run */
    json_t *result; /* the call's result */
} nested;

static int add_one(const json_t *args, void *arg, json_t **result, eddy_error **err)
{
    (void)arg;
    (void)err;
    *result = json_integer(json_integer_value(json_object_get(args, "n")) + 1);
    return EDDY_OK;
}

/* Runs a runtime of its own, frees it, then makes an async call. */
static int run_inner(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ev;
    nested *n = arg;
    eddy_runtime *rt = runtime(&n->inner);
    n->inner_rc = rt != NULL ? eddy_runtime_run(rt) : EDDY_EINVAL;
    eddy_runtime_free(rt);
    json_decref(json_string("freed after the inner run")); /* into the outer run's cache */
    n->cached = eddy__jalloc_cached();
    json_t *args = json_pack("{s:i}", "n", 41);
    n->call_rc = eddy_ctx_execute_async(ctx, add_one, args, NULL, &n->result, NULL);
    json_decref(args);
    return n->call_rc == EDDY_OK ? eddy_ctx_send_output(ctx, json_incref(n->result)) : n->call_rc;
}

/* An action that runs a runtime goes on in its own coroutine afterwards:
 * its async call used to be refused (EDDY_ESTATE, "outside the action's own
 * coroutine"; an assertion in debug builds), and the inner run let go of the
 * outer run's JSON cache. */
static void test_runtime_run_inside_an_action(void **state)
{
    (void)state;
    fixture outer;
    fixture_make(&outer, 1);
    nested n = {.inner_rc = -100, .call_rc = -100};
    fixture_make(&n.inner, 20);
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    assert_int_equal(eddy_plan_add_action(p, "run_inner", types, run_inner, &n), EDDY_OK);
    eddy_config *c = eddy_config_new();
    eddy_config_set(c, "input", outer.in, NULL);
    eddy_config_set(c, "output", outer.out, NULL);
    eddy_config_set(c, "async-threads", "1", NULL);
    eddy_config_set(c, "stack-size", "1048576", NULL);
    eddy_runtime *rt = eddy_runtime_new(p, c, NULL);
    eddy_config_free(c);
    assert_non_null(rt);
    assert_int_equal(eddy_runtime_run(rt), EDDY_OK);
    assert_int_equal(n.inner_rc, EDDY_OK);
    assert_int_equal(n.call_rc, EDDY_OK);
    assert_int_equal(json_integer_value(n.result), 42);
    if (eddy__jalloc_installed())
        assert_true(n.cached > 0);
    json_decref(n.result);
    eddy_runtime_free(rt);
    /* Both runs wrote their outputs: 1 line and 20. */
    char line[256];
    FILE *fp = fopen(outer.out, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "42\n");
    assert_null(fgets(line, sizeof line, fp));
    fclose(fp);
    fp = fopen(n.inner.out, "r");
    assert_non_null(fp);
    int lines = 0;
    while (fgets(line, sizeof line, fp) != NULL)
        lines++;
    fclose(fp);
    assert_int_equal(lines, 20);
    assert_int_equal(tmptree_remove(outer.root), 0);
    assert_int_equal(tmptree_remove(n.inner.root), 0);
}

static eddy_runtime *to_free;

/* An action that frees its own runtime. */
static int free_mine(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    eddy_runtime_free(to_free);
    return EDDY_OK;
}

static void free_under_the_run(const fixture *f)
{
    eddy_plan *p = eddy_plan_new();
    const char *const types[] = {EDDY_INPUT_EVENT, NULL};
    eddy_plan_add_action(p, "free_mine", types, free_mine, NULL);
    eddy_config *c = eddy_config_new();
    eddy_config_set(c, "input", f->in, NULL);
    eddy_config_set(c, "output", f->out, NULL);
    to_free = eddy_runtime_new(p, c, NULL);
    eddy_config_free(c);
    if (to_free == NULL)
        _exit(3);
    eddy_runtime_run(to_free);
}

static void test_free_under_the_run_aborts(void **state)
{
    (void)state;
    expect_abort(free_under_the_run,
                 "eddy: eddy_runtime_free: called while eddy_runtime_run() runs");
}

static void *free_it(void *arg)
{
    eddy_runtime_free(arg);
    return NULL;
}

static void free_on_another_thread(const fixture *f)
{
    eddy_runtime *rt = runtime(f);
    if (rt == NULL || eddy_runtime_run(rt) != EDDY_OK)
        _exit(3);
    pthread_t t;
    if (pthread_create(&t, NULL, free_it, rt) != 0)
        _exit(4);
    pthread_join(t, NULL);
}

static void test_free_on_another_thread_aborts(void **state)
{
    (void)state;
    expect_abort(free_on_another_thread, "eddy: eddy_runtime_free: called on a thread other "
                                         "than the runtime's mailbox thread");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_thread_gives_back_its_handler_stack),
        cmocka_unit_test(test_free_under_the_run_aborts),
        cmocka_unit_test(test_runtime_run_inside_an_action),
        cmocka_unit_test(test_free_on_another_thread_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
