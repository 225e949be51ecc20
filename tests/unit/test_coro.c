#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/coro.h"

#define STACK (128 * 1024)

/* Interleaving: each coroutine appends (id, step) to a shared trace and yields. */
#define NCORO 64
#define NSTEP 10

typedef struct {
    int id;
    int *trace;
    int *len;
    eddy__coro *self;
} stepper;

static void step_fn(void *arg)
{
    stepper *s = arg;
    for (int i = 0; i < NSTEP; i++) {
        assert_ptr_equal(eddy__coro_current(), s->self);
        s->trace[(*s->len)++] = s->id * 1000 + i;
        eddy__coro_yield();
    }
}

static void test_interleaved(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 8);
    assert_non_null(pool);
    static int trace[NCORO * NSTEP];
    int len = 0;
    stepper st[NCORO];
    eddy__coro *c[NCORO];
    for (int i = 0; i < NCORO; i++) {
        st[i] = (stepper){i, trace, &len, NULL};
        c[i] = eddy__coro_new(pool, step_fn, &st[i]);
        assert_non_null(c[i]);
        st[i].self = c[i];
    }
    assert_int_equal(eddy__coro_pool_mapped(pool), NCORO);
    /* Round robin: NSTEP yields each, then one more resume to finish. */
    for (int round = 0; round <= NSTEP; round++)
        for (int i = 0; i < NCORO; i++)
            assert_int_equal(eddy__coro_resume(c[i]), round == NSTEP);
    assert_int_equal(len, NCORO * NSTEP);
    for (int round = 0; round < NSTEP; round++)
        for (int i = 0; i < NCORO; i++)
            assert_int_equal(trace[round * NCORO + i], i * 1000 + round);
    for (int i = 0; i < NCORO; i++)
        eddy__coro_free(c[i]);
    assert_int_equal(eddy__coro_pool_cached(pool), 8);
    assert_int_equal(eddy__coro_pool_mapped(pool), 8);
    eddy__coro_pool_free(pool);
}

/* Values passed back and forth across yields, in order. */
typedef struct {
    int in;
    int out;
} channel;

static void echo_fn(void *arg)
{
    channel *ch = arg;
    for (;;) {
        if (ch->in < 0)
            return;
        ch->out = ch->in * 2;
        eddy__coro_yield();
    }
}

static void test_yield_resume_order(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 1);
    channel ch = {0, -1};
    eddy__coro *c = eddy__coro_new(pool, echo_fn, &ch);
    assert_non_null(c);
    assert_int_equal(ch.out, -1); /* not started by new */
    for (int i = 1; i <= 100; i++) {
        ch.in = i;
        assert_int_equal(eddy__coro_resume(c), 0);
        assert_int_equal(ch.out, 2 * i);
    }
    ch.in = -1;
    assert_int_equal(eddy__coro_resume(c), 1);
    eddy__coro_free(c);
    eddy__coro_pool_free(pool);
}

static void note_current(void *arg)
{
    *(eddy__coro **)arg = eddy__coro_current();
}

static void test_current(void **state)
{
    (void)state;
    assert_null(eddy__coro_current());
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 1);
    eddy__coro *seen = NULL;
    eddy__coro *c = eddy__coro_new(pool, note_current, &seen);
    assert_null(eddy__coro_current());
    assert_int_equal(eddy__coro_resume(c), 1);
    assert_ptr_equal(seen, c);
    assert_null(eddy__coro_current());
    eddy__coro_free(c);
    eddy__coro_pool_free(pool);
}

/* A coroutine that resumes another (an action running a runtime of its
 * own) is current again when that one yields and when it returns. */
typedef struct outer_run {
    eddy__coro_pool *pool;
    eddy__coro *self, *inner;
    eddy__coro *seen[4];
} outer_run;

static void inner_fn(void *arg)
{
    outer_run *o = arg;
    o->seen[0] = eddy__coro_current();
    eddy__coro_yield();
    o->seen[2] = eddy__coro_current();
}

static void outer_fn(void *arg)
{
    outer_run *o = arg;
    o->inner = eddy__coro_new(o->pool, inner_fn, o);
    assert_int_equal(eddy__coro_resume(o->inner), 0);
    o->seen[1] = eddy__coro_current();
    eddy__coro_yield(); /* back to the thread, not into the inner one */
    assert_int_equal(eddy__coro_resume(o->inner), 1);
    o->seen[3] = eddy__coro_current();
    eddy__coro_free(o->inner);
}

static void test_nested(void **state)
{
    (void)state;
    outer_run o = {.pool = eddy__coro_pool_new(STACK, 2)};
    o.self = eddy__coro_new(o.pool, outer_fn, &o);
    assert_int_equal(eddy__coro_resume(o.self), 0);
    assert_null(eddy__coro_current());
    assert_int_equal(eddy__coro_resume(o.self), 1);
    assert_null(eddy__coro_current());
    assert_ptr_equal(o.seen[0], o.inner);
    assert_ptr_equal(o.seen[1], o.self);
    assert_ptr_equal(o.seen[2], o.inner);
    assert_ptr_equal(o.seen[3], o.self);
    eddy__coro_free(o.self);
    eddy__coro_pool_free(o.pool);
}

/* vm.max_map_count, read whole in one read(2): a read of /proc/sys past
 * offset 0 is end of file, so stdio reading it a byte at a time (unbuffered,
 * when it could not allocate its buffer) saw 65530 as 6. */
static void test_map_cap(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long want;
    } cases[] = {{"262144\n", 262144}, {"1", 1},        {"", 65530},
                 {"abc\n", 65530},     {"-5\n", 65530}, {" 7\n", 65530},
                 {"12x\n", 65530},     {"0\n", 0},      {"99999999999999999999999\n", 65530}};
    char path[] = "/tmp/eddy-coro-cap-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(cases[i].text, f);
        fclose(f);
        if (eddy__coro_map_cap(path) != cases[i].want)
            fail_msg("'%s' read as %ld", cases[i].text, eddy__coro_map_cap(path));
    }
    unlink(path);
    assert_int_equal(eddy__coro_map_cap(path), 65530); /* no such file */
    /* The kernel's, as a buffered read of the whole file gives it. */
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f != NULL) {
        long want = -1;
        assert_int_equal(fscanf(f, "%ld", &want), 1);
        fclose(f);
        assert_int_equal(eddy__coro_map_cap("/proc/sys/vm/max_map_count"), want);
    }
}

static void never_run(void *arg)
{
    *(int *)arg = 1;
}

static void test_free_unstarted(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 0);
    int ran = 0;
    eddy__coro *c = eddy__coro_new(pool, never_run, &ran);
    assert_non_null(c);
    assert_int_equal(eddy__coro_pool_mapped(pool), 1);
    eddy__coro_free(c);
    eddy__coro_free(NULL);
    assert_int_equal(ran, 0);
    /* max_cached 0: the stack was unmapped at once. */
    assert_int_equal(eddy__coro_pool_mapped(pool), 0);
    eddy__coro_pool_free(pool);
    eddy__coro_pool_free(NULL);
}

static void yield_twice(void *arg)
{
    (*(int *)arg)++;
    eddy__coro_yield();
    (*(int *)arg)++;
}

static void test_stack_reuse(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 4);
    int n = 0;
    eddy__coro *first = eddy__coro_new(pool, yield_twice, &n);
    assert_int_equal(eddy__coro_resume(first), 0);
    assert_int_equal(eddy__coro_resume(first), 1);
    eddy__coro_free(first);
    assert_int_equal(eddy__coro_pool_cached(pool), 1);
    for (int i = 0; i < 1000; i++) {
        eddy__coro *c = eddy__coro_new(pool, yield_twice, &n);
        /* The object lives in its stack mapping: the same stack comes back. */
        assert_ptr_equal(c, first);
        assert_int_equal(eddy__coro_pool_mapped(pool), 1);
        assert_int_equal(eddy__coro_pool_cached(pool), 0);
        assert_int_equal(eddy__coro_resume(c), 0);
        assert_int_equal(eddy__coro_resume(c), 1);
        eddy__coro_free(c);
    }
    assert_int_equal(n, 2002);

    /* Beyond max_cached, freed stacks are unmapped. */
    eddy__coro *c[6];
    for (int i = 0; i < 6; i++)
        c[i] = eddy__coro_new(pool, yield_twice, &n);
    assert_int_equal(eddy__coro_pool_mapped(pool), 6);
    for (int i = 0; i < 6; i++)
        eddy__coro_free(c[i]);
    assert_int_equal(eddy__coro_pool_mapped(pool), 4);
    assert_int_equal(eddy__coro_pool_cached(pool), 4);
    eddy__coro_pool_free(pool);
}

/* Deep recursion: about 100 KiB of frames in a 128 KiB stack, yielding at
 * the bottom so the frames must survive a round trip through the resumer. */
static int deep(int n)
{
    volatile char buf[1000];
    memset((char *)buf, n & 0xff, sizeof(buf));
    if (n == 0) {
        eddy__coro_yield();
        return buf[7];
    }
    int r = deep(n - 1);
    return r + buf[n % sizeof(buf)] - (n & 0xff) + 1;
}

static void deep_fn(void *arg)
{
    *(int *)arg = deep(100);
}

static void test_deep_recursion(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(STACK, 1);
    int r = -1;
    eddy__coro *c = eddy__coro_new(pool, deep_fn, &r);
    assert_int_equal(eddy__coro_resume(c), 0);
    assert_int_equal(r, -1);
    assert_int_equal(eddy__coro_resume(c), 1);
    assert_int_equal(r, 100);
    eddy__coro_free(c);
    eddy__coro_pool_free(pool);
}

/* Overflow: in a child, recurse without end on a small stack; the fault must
 * land in the guard page just below the deepest frame. The handler runs on an
 * alternate stack and reports through the exit status. */
static volatile uintptr_t lowest_frame;
static volatile int keep_going = 1; /* keeps the compiler from proving the recursion endless */

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    uintptr_t addr = (uintptr_t)si->si_addr;
    if (addr < lowest_frame && lowest_frame - addr < 2 * 4096 + 2048)
        _exit(42);
    _exit(43);
}

static int endless(int n)
{
    volatile char buf[256];
    if (!keep_going)
        return 0;
    buf[0] = (char)n;
    lowest_frame = (uintptr_t)__builtin_frame_address(0);
    return endless(n + 1) + buf[0];
}

static void endless_fn(void *arg)
{
    *(int *)arg = endless(0);
}

static void test_guard_page(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static char altstack[64 * 1024];
        stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        if (sigaltstack(&ss, NULL) != 0 || sigaction(SIGSEGV, &sa, NULL) != 0)
            _exit(44);
        eddy__coro_pool *pool = eddy__coro_pool_new(16 * 1024, 0);
        int r = 0;
        eddy__coro *c = eddy__coro_new(pool, endless_fn, &r);
        eddy__coro_resume(c);
        _exit(45); /* not reached */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 42);
}

static void yield_once(void *arg)
{
    (void)arg;
    eddy__coro_yield();
}

static void overflow_a_little(void *arg)
{
    (void)arg;
    /* 22 KiB on a stack of 16 KiB (about 20 KiB usable once rounded to
     * pages): runs into the page below the stack, where an unguarded stack
     * keeps its canaries, without going further. */
    volatile char buf[22 * 1024];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = 1;
}

/* In a child with stderr on a pipe: create twice the kernel's mapping cap
 * worth of guarded stacks, so that the pool must fall back to unguarded ones;
 * then overflow an unguarded stack into its canaries. */
static void test_past_the_map_limit(void **state)
{
    (void)state;
#if defined(EDDY_ASAN) || defined(EDDY_TSAN)
    skip(); /* the sanitizers' own mappings and shadow make the count meaningless */
#endif
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long max_maps = 0;
    if (f == NULL || fscanf(f, "%ld", &max_maps) != 1 || max_maps > 1000000) {
        if (f != NULL)
            fclose(f);
        skip();
    }
    fclose(f);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        /* As a program without a SIGSEGV handler of its own (cmocka has
         * one: with it, the overflow aborts, the handler left alone). */
        signal(SIGSEGV, SIG_DFL);
        size_t n = (size_t)max_maps / 2 + 2000;
        eddy__coro_pool *pool = eddy__coro_pool_new(16 * 1024, 0);
        eddy__coro **cs = calloc(n, sizeof(*cs));
        for (size_t i = 0; i < n; i++) {
            cs[i] = eddy__coro_new(pool, yield_once, NULL);
            if (cs[i] == NULL || eddy__coro_resume(cs[i]) != 0)
                _exit(50);
        }
        /* While those live, new stacks are unguarded: an overflow kills at
         * the switch back. */
        eddy__coro *c = eddy__coro_new(pool, overflow_a_little, NULL);
        eddy__coro_resume(c);
        _exit(52); /* not reached */
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
    if (!WIFSIGNALED(status))
        fail_msg("child exited with %d: %s", WEXITSTATUS(status), buf);
    /* Said and ended as an overflow into a guard page is (it aborted, with
     * no word of which action). */
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    assert_non_null(strstr(buf, "vm.max_map_count"));
    assert_non_null(strstr(buf, "canaries"));
    assert_non_null(strstr(buf, "eddy: overflowed its coroutine stack of 16384 bytes (deep "
                                "recursion or large locals): raise --stack-size\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interleaved), cmocka_unit_test(test_yield_resume_order),
        cmocka_unit_test(test_current),     cmocka_unit_test(test_free_unstarted),
        cmocka_unit_test(test_stack_reuse), cmocka_unit_test(test_deep_recursion),
        cmocka_unit_test(test_guard_page),  cmocka_unit_test(test_past_the_map_limit),
        cmocka_unit_test(test_nested),      cmocka_unit_test(test_map_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
