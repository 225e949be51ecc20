/*
 * Stackful coroutines on Boost.Context's fcontext (see coro.h).
 *
 * A stack mapping is laid out as [guard page | stack ... | struct eddy__coro]:
 * the coroutine object sits at the top of its own mapping, so the pool's free
 * list is a list of coroutine objects and eddy__coro_new() neither maps nor
 * allocates when a cached stack is available.
 *
 * Measured (KVM guest on AMD EPYC, RelWithDebInfo, no sanitizer, linked
 * statically): a resume + yield round trip costs about 27 ns, against about
 * 11.5 ns for a bare pair of jump_fcontext calls. The difference is likely
 * return mispredictions (not verified: that VM has no PMU): each switch
 * returns into the other stack's call chain, and the wrappers add one more
 * level of calls on both sides. Not
 * taken: inlining the switch (needs our own assembly), and initial-exec TLS
 * for `current` (libeddy.so uses the general-dynamic model; executables that
 * link the static library get local-exec anyway).
 */
#include "core/log.h"
#include "exec/coro.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <ucontext.h> /* the faulting context of a SIGSEGV (never to switch) */
#include <sys/mman.h>
#include <unistd.h>

#if defined(EDDY_ASAN) || defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif

#if defined(EDDY_TSAN) || defined(__SANITIZE_THREAD__)
#define CORO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CORO_TSAN 1
#endif
#endif

#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#ifdef CORO_TSAN
/* From <sanitizer/tsan_interface.h>, declared here so that the build does not
 * depend on which compiler's copy of the header is on the include path. */
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CORO_VALGRIND 1
#endif
#endif

/* libboost_context exports these with C linkage. */
typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

enum { CORO_NEW, CORO_RUNNING, CORO_SUSPENDED, CORO_DONE };

struct eddy__coro {
    fcontext_t ctx;    /* the coroutine, while it is not running */
    fcontext_t caller; /* the resumer, while the coroutine runs */
    eddy__coro_fn fn;
    void *arg;
    eddy__coro_pool *pool;
    eddy__coro *next_free; /* link in pool->free */
    char *map;             /* the mapping; map + page is the stack's low end */
    size_t map_size;
    int state;
    int guarded; /* 0: the page below the stack holds canaries instead of PROT_NONE */
#ifdef CORO_ASAN
    void *fake_stack;          /* ASan fake stack of the coroutine while it is suspended */
    const void *caller_bottom; /* the resumer's stack, for the switch back */
    size_t caller_size;
#endif
#ifdef CORO_TSAN
    void *fiber;
    void *caller_fiber;
#endif
#ifdef CORO_VALGRIND
    unsigned vg_stack_id;
#endif
};

struct eddy__coro_pool {
    size_t page;
    size_t stack_size; /* as asked for (--stack-size): what an overflow names */
    size_t map_size;   /* guard page + stack + coroutine object, page multiple */
    size_t max_cached; /* bound on nfree */
    size_t nfree;
    size_t mapped;      /* stacks mapped now: live coroutines + cached ones */
    size_t guarded;     /* stacks mapped with a guard page */
    size_t guard_limit; /* at most this many: half the kernel's cap, less a margin */
    int unguarded;      /* the kernel refused a guard page: map without them */
    int warned;
    eddy__coro *free;
};

/*
 * Guard pages cost one extra kernel mapping per stack, and the kernel caps the
 * mappings of a process (vm.max_map_count, 65530 by default): about 32,700
 * guarded stacks, and the process needs mappings for everything else too.
 * Past half the cap (less a margin), or when the kernel refuses a guard page,
 * the pool says so once and maps stacks without guard pages: adjacent
 * anonymous mappings merge into one, so they do not count against the cap. The page below such a
 * stack is filled with canaries instead, checked whenever the coroutine switches back, so that an
 * overflow is still caught (after the fact, not at the faulting write).
 */
#define CANARY       0x65646479deadbeefULL
#define CANARY_WORDS 8

static void canary_set(char *lo)
{
    uint64_t *w = (uint64_t *)lo - CANARY_WORDS;
    for (int i = 0; i < CANARY_WORDS; i++)
        w[i] = CANARY;
}

static int canary_ok(const char *lo)
{
    const uint64_t *w = (const uint64_t *)lo - CANARY_WORDS;
    for (int i = 0; i < CANARY_WORDS; i++) {
        if (w[i] != CANARY)
            return 0;
    }
    return 1;
}

static _Thread_local eddy__coro *current;

long eddy__coro_map_cap(const char *path)
{
    long cap = 65530; /* the kernel's default */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cap;
    char buf[32];
    ssize_t n;
    do
        n = read(fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0 || buf[0] < '0' || buf[0] > '9')
        return cap;
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (errno != 0 || (*end != '\n' && *end != '\0') || v > LONG_MAX)
        return cap;
    return (long)v;
}

static char *stack_lo(const eddy__coro *c, const eddy__coro_pool *pool)
{
    return c->map + pool->page;
}

static size_t usable_size(const eddy__coro *c, const eddy__coro_pool *pool)
{
    return (size_t)((const char *)c - stack_lo(c, pool));
}

eddy__coro_pool *eddy__coro_pool_new(size_t stack_size, size_t max_cached)
{
    eddy__coro_pool *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    pool->page = page > 0 ? (size_t)page : 4096;
    /* The object sits at the top, 64-byte aligned; make room for it so that
     * the stack keeps at least stack_size usable bytes. */
    size_t need = stack_size + sizeof(eddy__coro) + 64;
    if (need < stack_size) {
        free(pool);
        return NULL;
    }
    pool->stack_size = stack_size;
    pool->map_size = pool->page + (need + pool->page - 1) / pool->page * pool->page;
    pool->max_cached = max_cached;
    long cap = eddy__coro_map_cap("/proc/sys/vm/max_map_count");
    pool->guard_limit = cap / 2 > 8192 ? (size_t)(cap / 2 - 4096) : (size_t)cap / 4;
    return pool;
}

static void warn_unguarded(eddy__coro_pool *pool)
{
    if (pool->warned)
        return;
    pool->warned = 1;
    eddy__log(EDDY_LOG_WARNING,
              "%zu coroutine stacks have guard pages, as many as the kernel's mapping cap allows "
              "(raise vm.max_map_count for more); further stacks have overflow canaries instead",
              pool->guarded);
}

static eddy__coro *stack_map(eddy__coro_pool *pool)
{
    int guarded = !pool->unguarded && pool->guarded < pool->guard_limit;
    char *map = mmap(NULL, pool->map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (guarded && mprotect(map, pool->page, PROT_NONE) != 0) {
        if (errno != ENOMEM) {
            munmap(map, pool->map_size);
            return NULL;
        }
        pool->unguarded = 1; /* the mapping stays, without its guard */
        guarded = 0;
    }
    if (!guarded)
        warn_unguarded(pool);
    uintptr_t top = (uintptr_t)map + pool->map_size - sizeof(eddy__coro);
    eddy__coro *c = (eddy__coro *)(top & ~(uintptr_t)63);
    c->map = map;
    c->map_size = pool->map_size;
    c->guarded = guarded;
    if (guarded)
        pool->guarded++;
    else
        canary_set(stack_lo(c, pool));
#ifdef CORO_VALGRIND
    c->vg_stack_id = VALGRIND_STACK_REGISTER(stack_lo(c, pool), (char *)c);
#endif
    pool->mapped++;
    return c;
}

static void stack_unmap(eddy__coro_pool *pool, eddy__coro *c)
{
#ifdef CORO_VALGRIND
    VALGRIND_STACK_DEREGISTER(c->vg_stack_id);
#endif
    pool->mapped--;
    if (c->guarded)
        pool->guarded--;
    munmap(c->map, c->map_size);
}

void eddy__coro_pool_free(eddy__coro_pool *pool)
{
    if (pool == NULL)
        return;
    while (pool->free != NULL) {
        eddy__coro *c = pool->free;
        pool->free = c->next_free;
        stack_unmap(pool, c);
    }
    assert(pool->mapped == 0 && "eddy__coro_pool_free with live coroutines");
    free(pool);
}

size_t eddy__coro_pool_mapped(const eddy__coro_pool *pool)
{
    return pool->mapped;
}

size_t eddy__coro_pool_cached(const eddy__coro_pool *pool)
{
    return pool->nfree;
}

/* The switches, with their sanitizer annotations. Each jump_fcontext is
 * bracketed by a switch_ call before it and a back_ call after it. */

static inline void switch_into(eddy__coro *c, void **fake_stack)
{
#ifdef CORO_ASAN
    __sanitizer_start_switch_fiber(fake_stack, stack_lo(c, c->pool), usable_size(c, c->pool));
#else
    (void)fake_stack;
#endif
#ifdef CORO_TSAN
    c->caller_fiber = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(c->fiber, 0);
#else
    (void)c;
#endif
}

static inline void back_from_coro(void *fake_stack)
{
#ifdef CORO_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#else
    (void)fake_stack;
#endif
}

/* Leave the coroutine for the resumer; a finished coroutine passes its fake
 * stack save slot as NULL so that ASan drops its fake frames. */
static inline void switch_out(eddy__coro *c, int finished)
{
#ifdef CORO_ASAN
    __sanitizer_start_switch_fiber(finished ? NULL : &c->fake_stack, c->caller_bottom,
                                   c->caller_size);
#else
    (void)finished;
#endif
#ifdef CORO_TSAN
    __tsan_switch_to_fiber(c->caller_fiber, 0);
#else
    (void)c;
#endif
}

/* Back in the coroutine; on its first entry there is no fake stack yet. */
static inline void back_in_coro(eddy__coro *c, int first)
{
#ifdef CORO_ASAN
    __sanitizer_finish_switch_fiber(first ? NULL : c->fake_stack, &c->caller_bottom,
                                    &c->caller_size);
#else
    (void)c;
    (void)first;
#endif
}

static void coro_entry(transfer_t t)
{
    eddy__coro *c = t.data;
    c->caller = t.fctx;
    back_in_coro(c, 1);
    c->fn(c->arg);
    c->state = CORO_DONE;
    switch_out(c, 1);
    jump_fcontext(c->caller, NULL);
    abort(); /* a finished coroutine is never resumed */
}

eddy__coro *eddy__coro_new(eddy__coro_pool *pool, eddy__coro_fn fn, void *arg)
{
    eddy__coro *c = pool->free;
    if (c != NULL) {
        pool->free = c->next_free;
        pool->nfree--;
    } else {
        c = stack_map(pool);
        if (c == NULL)
            return NULL;
    }
#ifdef CORO_TSAN
    c->fiber = __tsan_create_fiber(0);
    c->caller_fiber = NULL;
#endif
#ifdef CORO_ASAN
    c->fake_stack = NULL;
    c->caller_bottom = NULL;
    c->caller_size = 0;
#endif
    c->pool = pool;
    c->fn = fn;
    c->arg = arg;
    c->next_free = NULL;
    c->state = CORO_NEW;
    c->caller = NULL;
    c->ctx = make_fcontext((char *)c, usable_size(c, pool), coro_entry);
    return c;
}

static void canary_died(const eddy__coro *c);

int eddy__coro_resume(eddy__coro *c)
{
    /* From inside a coroutine too: an action may run a runtime of its own
     * (eddy_runtime_run steps that runtime's actions here), and goes on as
     * the current coroutine when they yield back. */
    eddy__coro *prev = current;
    assert(c->state == CORO_NEW || c->state == CORO_SUSPENDED);
    void *fake_stack = NULL;
    current = c;
    c->state = CORO_RUNNING;
    switch_into(c, &fake_stack);
    transfer_t t = jump_fcontext(c->ctx, c);
    back_from_coro(fake_stack);
    c->ctx = t.fctx;
    current = prev;
    if (!c->guarded && !canary_ok(stack_lo(c, c->pool)))
        canary_died(c);
    return c->state == CORO_DONE;
}

void eddy__coro_yield(void)
{
    eddy__coro *c = current;
    assert(c != NULL && "eddy__coro_yield outside a coroutine");
    c->state = CORO_SUSPENDED;
    switch_out(c, 0);
    transfer_t t = jump_fcontext(c->caller, NULL);
    back_in_coro(c, 0);
    c->caller = t.fctx;
}

eddy__coro *eddy__coro_current(void)
{
    return current;
}

/* ---------------------------------------------------------------- overflow */

/*
 * A write into a guard page is a SIGSEGV like any other: the process died
 * with no word of why (exit 139). The handler (on its own stack: the
 * coroutine's is used up) says which action overflowed and how to fix it,
 * then puts the default disposition back (it is only installed over the
 * default) and returns, so that the fault happens again and kills the
 * process as before; a SIGSEGV sent by kill(2) or raise(3) is raised again.
 * Only async-signal-safe calls: write(2), sigaction(2), raise(3). It reads
 * the thread's current coroutine, a TLS variable of this library that the
 * thread has used before (a dlopen()ed libeddy could allocate on a first
 * access from another thread). Not in sanitizer builds: they handle SIGSEGV
 * themselves.
 */
#if !defined(CORO_ASAN) && !defined(CORO_TSAN)
static void (*overflow_note)(void *arg, void (*put)(const char *));

static void put_str(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void put_size(size_t v)
{
    char b[24], *p = b + sizeof(b);
    *--p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put_str(p);
}

/* The stack pointer of the faulting context, NULL where not known. */
static const char *fault_sp(void *uctx)
{
#if defined(__x86_64__) && defined(REG_RSP)
    return uctx != NULL ? (const char *)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RSP] : NULL;
#elif defined(__aarch64__)
    return uctx != NULL ? (const char *)((ucontext_t *)uctx)->uc_mcontext.sp : NULL;
#else
    (void)uctx;
    return NULL;
#endif
}

/* An overflow of c: the fault is in its guard page, or its stack pointer is
 * below its stack (a frame larger than the guard page, such as large
 * locals, moves it past the guard in one step, and the fault address is
 * then anywhere below; up to 1 GiB below is taken for such a frame). */
static int overflowed(const eddy__coro *c, const char *addr, const char *sp)
{
    const char *lo = c->map + c->pool->page; /* the stack's low end */
    if (c->guarded && addr >= c->map && addr < lo)
        return 1;
    return sp != NULL && sp < lo && (size_t)(lo - sp) <= ((size_t)1 << 30);
}

static void overflow_say(const eddy__coro *c)
{
    put_str("eddy: ");
    if (overflow_note != NULL) {
        overflow_note(c->arg, put_str);
        put_str(" ");
    }
    /* The size asked for: the stack has a little more, rounded up to
     * pages, but that is not the number to raise. */
    put_str("overflowed its coroutine stack of ");
    put_size(c->pool->stack_size);
    put_str(" bytes (deep recursion or large locals): raise --stack-size\n");
}

/* A stack without a guard page (past the mapping cap: see coro_new) was
 * written below its end, found by its canary when the coroutine switched
 * out: what was below (another coroutine's stack) is damaged. Said as an
 * overflow into a guard page is, and the process dies the same way. */
static void on_segv(int sig, siginfo_t *si, void *uctx);

static void segv_default(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGSEGV, &dfl, NULL);
}

static void canary_died(const eddy__coro *c)
{
    overflow_say(c);
    /* A program's own SIGSEGV handler stays (see eddy.h): it is for faults,
     * and this is none; abort() then. */
    struct sigaction now;
    if (sigaction(SIGSEGV, NULL, &now) == 0 &&
        ((now.sa_flags & SA_SIGINFO) ? now.sa_sigaction == on_segv : now.sa_handler == SIG_DFL)) {
        segv_default();
        raise(SIGSEGV);
    }
    abort();
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)sig;
    eddy__coro *c = current;
    const char *a = si != NULL ? (const char *)si->si_addr : NULL;
    if (c != NULL && si != NULL && si->si_code > 0 && overflowed(c, a, fault_sp(uctx)))
        overflow_say(c);
    segv_default(); /* the fault comes again, and kills */
    if (si == NULL || si->si_code <= 0)
        raise(sig); /* sent, not a fault: nothing comes again */
}
#else
static void canary_died(const eddy__coro *c)
{
    fprintf(stderr,
            "eddy: a coroutine overflowed its stack of %zu bytes (deep recursion or large "
            "locals): raise --stack-size\n",
            c->pool->stack_size);
    abort();
}
#endif

#if !defined(CORO_ASAN) && !defined(CORO_TSAN)
/* The handler's stack of each thread that ran a runtime, given back when the
 * thread exits (a program that runs runtimes on short-lived threads lost 64
 * KiB with each). */
static pthread_key_t altstack_key;
static int altstack_key_made;

static void altstack_free(void *p)
{
    /* Only eddy's own, and not while a handler runs on it: a stack the
     * program put in its place since is the program's, and stays. */
    stack_t cur;
    if (sigaltstack(NULL, &cur) != 0 || (cur.ss_flags & SS_ONSTACK))
        return; /* in use: left, as before */
    if (cur.ss_sp == p && !(cur.ss_flags & SS_DISABLE)) {
        stack_t off = {.ss_flags = SS_DISABLE};
        if (sigaltstack(&off, NULL) != 0)
            return;
    }
    free(p);
}

static void altstack_key_make(void)
{
    altstack_key_made = pthread_key_create(&altstack_key, altstack_free) == 0;
}
#endif

void eddy__coro_overflow_init(void (*note)(void *arg, void (*put)(const char *)))
{
#if !defined(CORO_ASAN) && !defined(CORO_TSAN)
    /* Per thread: a stack for the handler, kept for the thread's life. */
    static _Thread_local void *altstack;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    stack_t ss;
    pthread_once(&once, altstack_key_make);
    if (altstack == NULL && altstack_key_made && sigaltstack(NULL, &ss) == 0 &&
        (ss.ss_flags & SS_DISABLE)) {
        size_t size = 64 * 1024;
        altstack = malloc(size);
        ss = (stack_t){.ss_sp = altstack, .ss_size = size, .ss_flags = 0};
        if (altstack != NULL &&
            (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(altstack_key, altstack) != 0)) {
            ss = (stack_t){.ss_flags = SS_DISABLE};
            sigaltstack(&ss, NULL);
            free(altstack);
            altstack = NULL;
        }
    }
    /* Per process, once (runtimes may start on several threads at once),
     * and only over the default disposition: an embedding program's own
     * handler stays. */
    static atomic_int installed;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1))
        return;
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) != 0 || cur.sa_handler != SIG_DFL ||
        (cur.sa_flags & SA_SIGINFO))
        return;
    overflow_note = note;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
#else
    (void)note;
#endif
}

void eddy__coro_free(eddy__coro *c)
{
    if (c == NULL)
        return;
    assert((c->state == CORO_NEW || c->state == CORO_DONE) &&
           "eddy__coro_free of a running or suspended coroutine");
    eddy__coro_pool *pool = c->pool;
#ifdef CORO_TSAN
    __tsan_destroy_fiber(c->fiber);
    c->fiber = NULL;
#endif
#ifdef CORO_ASAN
    /* The entry frame never returns, so its redzones are still poisoned;
     * clear them before the stack runs another coroutine. */
    __asan_unpoison_memory_region(stack_lo(c, pool), usable_size(c, pool));
#endif
    if (pool->nfree < pool->max_cached) {
        c->next_free = pool->free;
        pool->free = c;
        pool->nfree++;
    } else {
        stack_unmap(pool, c);
    }
}
