/* The operator's lifecycle and scheduling; see the design notes in runtime.h. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "exec/durable.h"
#include "exec/runtime.h"
#include "exec/timer.h"
#include "io/paths.h"
#include "io/wait.h"
#include "util/fault.h"
#include "util/hash.h"
#include "util/jalloc.h"
#include "util/poison.h"

/* Idle keys (no run, no pending input, empty short-term memory) kept for
 * reuse before the oldest are freed: bounds memory on streams with many
 * distinct keys while sparing the allocations of a key that comes back.
 * With a state and key-cache N > 0, N idle keys, memory or not (key_park). */
#define IDLE_KEYS_MAX 65536
/* What an idle key weighs against key-cache-bytes besides its memory's
 * stored bytes: its bookkeeping (the key, its map entry, its empty sensory
 * memory), ~750-870 bytes resident per key measured over a million keys.
 * Without it, keys with empty memory weighed nothing: with --key-cache 0
 * they were never let go. */
#define KEY_COST 768

static inline uint64_t key_weight(const eddy__key *k)
{
    return KEY_COST + k->stm_bytes;
}
/* Tasks kept on the free list. */
#define FREE_TASKS_MAX 4096
/* Steps run per idle callback before the loop gets a turn for I/O. */
#define STEP_BUDGET 4096
/* ... and for at most --commit-interval-ms (TURN_MIN_NS at least): 4,096
 * steps of an action that computes for 3 ms took 12 s, with no commit, no
 * output and no signal seen meanwhile (a stop then ran every step queued).
 * The clock is read after every step while steps are slow, every TURN_CHECK
 * steps while they are quick (a read costs ~25 ns, a few per cent of W1's
 * step); the pace of each turn's steps sets the next turn's stride
 * (rt->turn_stride), so a turn overruns by one step, or by up to TURN_CHECK
 * when quick steps turn slow. */
#define TURN_MIN_NS       1000000
#define TURN_CHECK        8
#define TURN_SLOW_STEP_NS 10000 /* steps this slow on average: the clock after each */
/* Inputs taken from the source at once. */
#define ADMIT_BATCH 256
/* Bad lines dead-lettered per loop turn at most. Inputs that start runs are
 * bounded by max-in-flight and max-pending; bad lines start nothing, and a
 * stream of them that the mailbox handles slower than the reader reads them
 * would otherwise keep admit() from returning to the loop until the input
 * ends: no signal, no commit, and (with a state) dead letters piling up
 * uncommitted. */
#define ADMIT_BAD_MAX 1024

static void task_step(eddy_runtime *rt, eddy_ctx *t);
static void run_end(eddy_runtime *rt, eddy__key *k);
static void check_done(eddy_runtime *rt);

_Thread_local eddy_ctx *eddy__running EDDY__TLS_FAST;
_Thread_local unsigned eddy__mailboxes EDDY__TLS_FAST;

int eddy__runtime_on_thread(const eddy_runtime *rt)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&rt->owner, &self);
}

/* ---------------------------------------------------------------- keys */

static void key_free(eddy__key *k)
{
    while (!eddy__queue_empty(&k->pending)) {
        eddy__queue *q = eddy__queue_head(&k->pending);
        eddy__queue_remove(q);
        eddy__input_free(eddy__queue_data(q, eddy__input, node));
    }
    eddy__event_unref(k->input);
    eddy__input_free(k->input_rec);
    eddy__journal_free(k->journal);
    for (uint32_t i = 0; i < k->nreads; i++)
        free(k->reads[i].path);
    free(k->reads);
    json_decref(k->stm);
    json_decref(k->sensory);
    free(k->text);
    EDDY__POISON(k, sizeof(*k));
    free(k);
}

/* ---------------------------------------------------------------- memory read beside another */

#define EDDY__MREADS_MAX 64 /* reads noted per run in flight: a warning's aid, not a log */
#define MREAD_WARNINGS   16 /* distinct warnings of this kind per runtime */
#define MREAD_OWN_LOOK   16 /* the reader's latest writes looked at for one over the read */

/* Whether w is path or above it ("" is the root, above all). */
static int path_at_or_above(const char *w, const char *path)
{
    size_t wl = strlen(w);
    return wl == 0 || (strncmp(w, path, wl) == 0 && (path[wl] == '\0' || path[wl] == '.'));
}

void eddy__mem_read_note(eddy_ctx *t, int sensory, const char *path)
{
    eddy__key *k = t->key;
    if (k->live < 2 || t->replayed || k->nreads >= EDDY__MREADS_MAX)
        return;
    for (uint32_t i = 0; i < k->nreads; i++)
        if (k->reads[i].task == t && k->reads[i].sensory == sensory &&
            strcmp(k->reads[i].path, path) == 0)
            return;
    /* A read of what the reader itself wrote (at or above the path) reads
     * its own write on any run: nothing to note. Its latest writes only. */
    const json_t *log = eddy__memview_updates(sensory ? &t->sensory.view : &t->stm.view);
    size_t n = json_array_size(log);
    for (size_t i = 0; i < n && i < MREAD_OWN_LOOK; i++) {
        const json_t *e = json_array_get(log, n - 1 - i);
        const char *w = json_string_value(json_object_get(e, "p"));
        /* A set ("v") hides what is committed there; a new object ("o")
         * lets it show through. */
        if (w != NULL && json_object_get(e, "v") != NULL && path_at_or_above(w, path))
            return;
    }
    if (k->nreads == k->reads_cap) {
        uint32_t ncap = k->reads_cap != 0 ? k->reads_cap * 2 : 8;
        eddy__mread *nr = realloc(k->reads, ncap * sizeof(*nr));
        if (nr == NULL)
            return; /* a warning missed, nothing else */
        k->reads = nr;
        k->reads_cap = ncap;
    }
    char *p = strdup(path);
    if (p != NULL)
        k->reads[k->nreads++] = (eddy__mread){t, p, sensory};
}

/* t ends: its reads no longer matter; the array goes with the last. */
static void mem_reads_drop(eddy__key *k, const eddy_ctx *t)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < k->nreads; i++) {
        if (k->reads[i].task == t)
            free(k->reads[i].path);
        else
            k->reads[j++] = k->reads[i];
    }
    k->nreads = j;
    if (j == 0) {
        free(k->reads);
        k->reads = NULL;
        k->reads_cap = 0;
    }
}

/* Whether a write at w and a read at r touch the same memory: equal, or one
 * above the other ("" is the root, above all). */
static int paths_meet(const char *w, const char *r)
{
    size_t wl = strlen(w), rl = strlen(r), m = wl < rl ? wl : rl;
    if (m > 0 && memcmp(w, r, m) != 0)
        return 0;
    return wl == rl || m == 0 || (wl < rl ? r[wl] : w[rl]) == '.';
}

static __attribute__((noinline)) void mem_read_warn(eddy_runtime *rt, const eddy_ctx *w,
                                                    const eddy__mread *r, const char *path)
{
    if (rt->mread_warnings >= MREAD_WARNINGS)
        return;
    /* Once per writer, reader and path. */
    char seen[512];
    snprintf(seen, sizeof(seen), "%s\x1f%s\x1f%d\x1f%s", w->action->name, r->task->action->name,
             r->sensory, r->path);
    if (rt->mread_seen == NULL && (rt->mread_seen = json_object()) == NULL)
        return;
    if (json_object_get(rt->mread_seen, seen) != NULL ||
        json_object_set_new(rt->mread_seen, seen, json_true()) != 0)
        return;
    rt->mread_warnings++;
    eddy__log(
        EDDY_LOG_WARNING,
        "action '%s' for key %s wrote %s memory at '%s', which action '%s', running beside "
        "it, had read (at '%s'): after a crash (with a state) '%s' runs again with this write "
        "applied, reads it, and may then make other durable calls or outputs than it did; "
        "read it in '%s', or in an action that an event '%s' sends triggers "
        "(docs/durability.md, \"Writing deterministic actions\")%s",
        w->action->name, w->key->text, r->sensory ? "sensory" : "short-term", path,
        r->task->action->name, r->path, r->task->action->name, w->action->name, w->action->name,
        rt->mread_warnings == MREAD_WARNINGS ? "; further warnings of this kind are not shown"
                                             : "");
}

/* w finishes: warn of its writes that an action beside it read before. */
static void mem_reads_check(eddy_runtime *rt, const eddy_ctx *w)
{
    eddy__key *k = w->key;
    for (int sensory = 0; sensory <= 1; sensory++) {
        const json_t *log = eddy__memview_updates(sensory ? &w->sensory.view : &w->stm.view);
        size_t n = json_array_size(log);
        for (size_t u = 0; u < n; u++) {
            const char *path = json_string_value(json_object_get(json_array_get(log, u), "p"));
            for (uint32_t i = 0; path != NULL && i < k->nreads; i++) {
                const eddy__mread *r = &k->reads[i];
                if (r->task != w && r->sensory == sensory && paths_meet(path, r->path))
                    mem_read_warn(rt, w, r, path);
            }
        }
    }
}

eddy__key *eddy__runtime_key(eddy_runtime *rt, const char *text)
{
    size_t len = strlen(text);
    return eddy__runtime_key_h(rt, text, len, eddy__map_hash(text, len));
}

eddy__key *eddy__runtime_key_h(eddy_runtime *rt, const char *text, size_t len, uint64_t hash)
{
    eddy__key *k = eddy__map_get_h(&rt->keys, text, len, hash);
    if (k != NULL) {
        if (!eddy__queue_empty(&k->idle_node)) {
            eddy__queue_remove(&k->idle_node);
            rt->nidle_keys--;
            rt->idle_bytes -= key_weight(k);
        }
        return k;
    }
    k = eddy__fault("alloc.key") ? NULL : calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->text = malloc(len + 1);
    /* (NULL when it may be in the state: read before its run starts) */
    k->stm = rt->memory_offloaded ? NULL : json_object();
    k->sensory = json_object();
    k->need_txn = rt->let_go_need_txn; /* (it may have been let go) */
    eddy__queue_init(&k->pending);
    eddy__queue_init(&k->idle_node);
    eddy__queue_init(&k->recover_node);
    if (k->text == NULL || (k->stm == NULL && !rt->memory_offloaded) || k->sensory == NULL)
        goto fail;
    memcpy(k->text, text, len + 1);
    k->len = len;
    k->hash = eddy__hash_bytes(text, len);
    if (eddy__map_put_h(&rt->keys, k->text, len, hash, k) != EDDY_OK)
        goto fail;
    return k;
fail:
    key_free(k);
    return NULL;
}

/* A key with nothing in flight: park it, and free the least recently used
 * parked keys beyond rt->idle_max. Without a state, keys that hold memory
 * stay (their memory lives nowhere else). With one, a key's run numbers come
 * from the one counter of all keys (format 3), so a key made again is the
 * same key (keeping every key ever seen grew ~750 bytes per distinct key);
 * and with key-cache N > 0 a key whose memory is saved (its run's end wrote
 * it to the open transaction, which a read sees) is parked too: let go, its
 * memory is read from the state when its next input comes (admit), so that
 * resident memory is bounded by the keys in use rather than every key seen
 * (~1-2 KiB each). A key's memory changes only in its runs, so a parked
 * key stays saved. */
static void key_park(eddy_runtime *rt, eddy__key *k)
{
    if (k->running || !eddy__queue_empty(&k->pending))
        return;
    if (json_object_size(k->stm) != 0 && (!rt->idle_with_memory || k->stm_dirty))
        return;
    eddy__queue_insert_tail(&rt->idle_keys, &k->idle_node);
    rt->nidle_keys++;
    rt->idle_bytes += key_weight(k);
    while (rt->nidle_keys > rt->idle_max ||
           (rt->idle_bytes_max != 0 && rt->idle_bytes > rt->idle_bytes_max)) {
        eddy__queue *q = eddy__queue_head(&rt->idle_keys);
        eddy__key *old = eddy__queue_data(q, eddy__key, idle_node);
        eddy__queue_remove(q);
        rt->nidle_keys--;
        rt->idle_bytes -= key_weight(old);
        if (json_object_size(old->stm) != 0)
            rt->memory_offloaded = 1; /* new keys are read from the state from now on */
        rt->stats.keys_evicted++;
        if (old->need_txn > rt->let_go_need_txn)
            rt->let_go_need_txn = old->need_txn;
        eddy__map_remove(&rt->keys, old->text, old->len);
        key_free(old);
    }
}

/* ---------------------------------------------------------------- tasks */

static void on_idle(uv_idle_t *h);

/* Take the head of ready (not empty). */
static eddy_ctx *ready_pop(eddy_runtime *rt)
{
    eddy__queue *q = eddy__queue_head(&rt->ready);
    if (q == rt->ready_fresh)
        rt->ready_fresh = q->next;
    eddy__queue_remove(q);
    return eddy__queue_data(q, eddy_ctx, node);
}

void eddy__task_ready(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    t->state = EDDY_TASK_READY;
    if (t->started) {
        eddy__queue_insert_tail(rt->ready_fresh, &t->node); /* before the fresh ones */
    } else {
        eddy__queue_insert_tail(&rt->ready, &t->node);
        if (rt->ready_fresh == &rt->ready)
            rt->ready_fresh = &t->node;
    }
    if (!uv_is_active((uv_handle_t *)&rt->idle))
        uv_idle_start(&rt->idle, on_idle);
}

void eddy__task_ready_last(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    t->state = EDDY_TASK_READY;
    eddy__queue_insert_tail(&rt->ready, &t->node);
    if (!uv_is_active((uv_handle_t *)&rt->idle))
        uv_idle_start(&rt->idle, on_idle);
}

static eddy_ctx *task_new(eddy_runtime *rt, eddy__key *k, const eddy__action *a, eddy_event *ev)
{
    eddy_ctx *t;
    if (eddy__fault("alloc.task"))
        return NULL; /* test hook */
    if (!eddy__queue_empty(&rt->free_tasks)) {
        eddy__queue *q = eddy__queue_head(&rt->free_tasks);
        eddy__queue_remove(q);
        rt->nfree_tasks--;
        t = eddy__queue_data(q, eddy_ctx, node);
    } else if ((t = malloc(sizeof(*t))) == NULL) {
        return NULL;
    }
    memset(t, 0, sizeof(*t));
    eddy__queue_init(&t->node);
    eddy__queue_init(&t->sent);
    t->rt = rt;
    t->key = k;
    t->action = a;
    t->event = ev;
    eddy__event_ref(ev);
    t->stm.task = t;
    t->sensory.task = t;
    eddy__memview_init(&t->stm.view, k->stm);
    eddy__memview_init(&t->sensory.view, k->sensory);
    k->live++;
    rt->live_tasks++;
    eddy__task_ready(t);
    return t;
}

static void task_free(eddy_runtime *rt, eddy_ctx *t)
{
    if (t->coro != NULL)
        eddy__coro_free(t->coro);
    if (t->lang != NULL && t->action->ops != NULL && t->action->ops->discard != NULL)
        t->action->ops->discard(t);
    while (!eddy__queue_empty(&t->sent)) {
        eddy__queue *q = eddy__queue_head(&t->sent);
        eddy__queue_remove(q);
        eddy__event_unref(eddy__queue_data(q, eddy_event, node));
    }
    eddy__memview_reset(&t->stm.view);
    eddy__memview_reset(&t->sensory.view);
    if (t->key->nreads > 0)
        mem_reads_drop(t->key, t);
    eddy__event_unref(t->event);
    eddy_error_free(t->err);
    eddy_error_free(t->nondet);
    free(t->why_buf);
    EDDY__POISON(t, sizeof(*t)); /* a task on the free list is not a task */
    if (rt->nfree_tasks < FREE_TASKS_MAX) {
        eddy__queue_init(&t->node);
        eddy__queue_insert_head(&rt->free_tasks, &t->node);
        rt->nfree_tasks++;
    } else {
        free(t);
    }
}

/* Count an event that triggered no action, and keep its type when it is one
 * of the first few met (for the summary). Off the hot path: an unhandled
 * event is a mistake more often than a wish. At most a few string compares;
 * a type is copied once, and a failed copy only leaves it unnamed. */
static __attribute__((noinline)) void note_unhandled(eddy_runtime *rt, const char *type)
{
    rt->stats.unhandled_events++;
    for (size_t i = 0; i < EDDY__UNHANDLED_TYPES; i++) {
        if (rt->unhandled_types[i] == NULL) {
            rt->unhandled_types[i] = strdup(type);
            return;
        }
        if (strcmp(rt->unhandled_types[i], type) == 0)
            return;
    }
}

/* Fan an event out to the actions it triggers, as new tasks of k's run. */
static int route_event(eddy_runtime *rt, eddy__key *k, eddy_event *ev)
{
    /* Every run starts with an InputEvent: its route is looked up once. */
    const eddy__route *r = ev == k->input ? rt->input_route : eddy__plan_route(rt->plan, ev->type);
    if (r == NULL) {
        note_unhandled(rt, ev->type);
        return EDDY_OK;
    }
    k->started += r->n; /* checked by run_limit_passed before the events go out */
    for (size_t i = 0; i < r->n; i++) {
        if (task_new(rt, k, r->actions[i], ev) == NULL)
            return EDDY_ENOMEM;
    }
    return EDDY_OK;
}

/* The iterator of obj's member name (of length len) when it is obj's only
 * member, as an OutputEvent's "output" and an InputEvent's "input" mostly
 * are, else NULL. No hashing of name, and no strcmp call: inlined where
 * name and len are constants, the memcmp is two loads and compares rather
 * than a call (W1: ~80 instructions per input). */
static inline __attribute__((always_inline)) void *sole_member(json_t *obj, const char *name,
                                                               size_t len)
{
    void *it;
    if (json_object_size(obj) != 1 || (it = json_object_iter(obj)) == NULL ||
        json_object_iter_key_len(it) != len || memcmp(json_object_iter_key(it), name, len) != 0)
        return NULL;
    return it;
}

/* Write an OutputEvent's output; sole: sole_member(attrs, "output"). One
 * without an output is refused when sent; the journal of an older eddy may
 * still hold one, which writes null, as it did. */
static int emit_output(eddy_runtime *rt, eddy_event *ev, void *sole)
{
    json_t *out =
        sole != NULL ? json_object_iter_value(sole) : json_object_get(ev->attrs, "output");
    json_t *null = NULL;
    if (out == NULL)
        out = null = json_null();
    int rc = eddy__durable_emit(rt, 'o', out);
    json_decref(null);
    return rc;
}

/* An OutputEvent is released once its line is written. When nothing else
 * holds it or its attributes and they are {"output": ...} (sole: their
 * iterator, from sole_member), it is kept for eddy_ctx_send_output (its
 * value released), as InputEvents are kept for the next run. */
static void output_event_done(eddy_runtime *rt, eddy_event *ev, void *sole)
{
    if (sole != NULL && ev->refs == 1 && ev->attrs->refcount == 1 &&
        rt->nspare_outputs < EDDY_SPARE_OUTPUTS &&
        json_object_iter_set_new(ev->attrs, sole, json_null()) == 0) {
        rt->spare_outputs[rt->nspare_outputs++] = ev;
        return;
    }
    eddy__event_unref(ev);
}

static void dead_letter_write(eddy_runtime *rt, json_t *obj)
{
    if (obj == NULL)
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
    else
        eddy__durable_emit(rt, 'd', obj);
    json_decref(obj);
}

static void action_failed(eddy_runtime *rt, eddy_ctx *t)
{
    eddy__key *k = t->key;
    const char *etype = t->err != NULL ? eddy_error_type(t->err) : eddy_err_name(t->rc);
    const char *emsg = t->err != NULL ? eddy_error_message(t->err) : eddy_strerror(t->rc);
    char why[512];
    if (t->err == NULL && strcmp(etype, "EDDY_UNKNOWN") == 0) {
        /* A C action returned what is no eddy code (a positive count, say). */
        snprintf(why, sizeof(why),
                 "the action returned %d, which is no eddy error code (an action returns EDDY_OK, "
                 "a negative EDDY_E* code, or the code eddy_ctx_fail() returns)",
                 t->rc);
        emsg = why;
    } else if (t->err == NULL && t->why != NULL && t->rc == t->why_rc) {
        /* The code of the action's last context call, which refused its
         * arguments: most likely the failure's cause. Say which call and
         * why ("invalid argument" alone names nothing). */
        snprintf(why, sizeof(why), "%s (%s)", emsg, t->why);
        emsg = why;
    }
    if (rt->cv->on_error_skip) {
        if (!k->failed) {
            k->failed = 1;
            json_t *input = json_object_get(k->input->attrs, "input");
            dead_letter_write(rt,
                              json_pack("{s:I, s:s, s:o, s:s, s:s, s:{s:s, s:s}, s:O*}", "line",
                                        (json_int_t)k->line_no, "reason", "action failed", "key",
                                        json_loadb(k->text, k->len, JSON_DECODE_ANY, NULL),
                                        "action", t->action->name, "event_type", t->event->type,
                                        "error", "type", etype, "message", emsg, "input", input));
            /* With the dead letter, in its transaction: a crash before the
             * run's end (its actions in flight go on) must not run it again
             * and dead-letter its input twice. */
            eddy__durable_run_failed(rt, t, etype, emsg);
        }
        return;
    }
    eddy__runtime_fail(rt, EDDY_EACTION,
                       eddy_error_newf(etype,
                                       "action '%s' failed for key %s on %s (input line %llu): "
                                       "%s: %s",
                                       t->action->name, k->text, t->event->type,
                                       (unsigned long long)k->line_no, etype, emsg));
}

/* 1 when the events t sent would start more action executions than the run
 * may (--max-run-actions): its actions send one another events in a cycle,
 * most likely, which would run (and be journaled) for ever. Checked before
 * anything t did is released: t then fails as any action does, its outputs,
 * events and memory writes discarded. A run's input always routes. */
static int run_limit_passed(eddy_runtime *rt, eddy_ctx *t)
{
    uint64_t max = rt->cv->max_run_actions, n = t->key->started;
    int over = 0;
    if (max == 0)
        return 0;
    eddy__queue *q;
    eddy__queue_foreach(q, &t->sent)
    {
        eddy_event *ev = eddy__queue_data(q, eddy_event, node);
        const eddy__route *r = ev->is_output ? NULL : eddy__plan_route(rt->plan, ev->type);
        /* (the input's own actions may already be more than max) */
        if (r != NULL && r->n > 0 && (n += r->n) > max) {
            over = 1;
            break;
        }
    }
    if (!over)
        return 0;
    eddy_error_free(t->err);
    t->err = eddy_error_newf("limit",
                             "the run reached --max-run-actions (%llu action execution%s); do "
                             "its actions send one another events in a cycle?",
                             (unsigned long long)max, max == 1 ? "" : "s");
    t->rc = EDDY_ELIMIT;
    return 1;
}

/* A durable call of t differed from the journal under strict determinism:
 * the action execution fails with that error, whether the action returned
 * it, caught it or went on. An error of the same type that the action (or
 * its language) reported stays, being the same failure told with more
 * (a Python traceback). */
static void nondet_fails(eddy_ctx *t)
{
    if (t->rc != EDDY_OK && t->err != NULL &&
        strcmp(eddy_error_type(t->err), eddy_error_type(t->nondet)) == 0)
        return;
    eddy_error_free(t->err);
    t->err = t->nondet;
    t->nondet = NULL;
    t->rc = EDDY_ENONDET;
}

/* The task's action execution has finished (or is discarded while stopping):
 * release its events and memory writes, then let the run go on. */
static void task_finish(eddy_runtime *rt, eddy_ctx *t)
{
    eddy__key *k = t->key;
    if (t->nondet != NULL)
        nondet_fails(t);
    if (t->started && !rt->stopping && !k->failed) {
        if (t->rc != EDDY_OK || run_limit_passed(rt, t)) {
            action_failed(rt, t);
        } else {
            if (!t->replayed)
                rt->stats.actions_executed++;
            eddy__durable_task_done(rt, t);
            k->completions++;
            if (k->nreads > 0 && !t->replayed)
                mem_reads_check(rt, t);
            if (eddy__memview_updates(&t->stm.view) != NULL)
                k->stm_dirty = 1;
            if (eddy__memview_commit(&t->stm.view) != EDDY_OK ||
                eddy__memview_commit(&t->sensory.view) != EDDY_OK)
                eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
            while (!eddy__queue_empty(&t->sent) && !rt->stopping) {
                eddy__queue *q = eddy__queue_head(&t->sent);
                eddy__queue_remove(q);
                eddy_event *ev = eddy__queue_data(q, eddy_event, node);
                rt->stats.events++;
                if (ev->is_output) {
                    void *sole = sole_member(ev->attrs, "output", 6);
                    emit_output(rt, ev, sole);
                    output_event_done(rt, ev, sole);
                    continue;
                }
                int rc = route_event(rt, k, ev);
                eddy__event_unref(ev);
                if (rc != EDDY_OK)
                    eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
            }
        }
    }
    task_free(rt, t);
    k->live--;
    rt->live_tasks--;
    if (k->live == 0 && k->running)
        run_end(rt, k);
    check_done(rt);
}

static void task_entry(void *arg)
{
    eddy_ctx *t = arg;
    t->rc = t->action->fn(t, t->event, t->action->arg);
}

static void task_step(eddy_runtime *rt, eddy_ctx *t)
{
    if (!t->started && (rt->stopping || t->key->failed)) {
        task_finish(rt, t); /* never started: dropped */
        return;
    }
    int first = !t->started;
    t->started = 1;
    t->state = EDDY_TASK_RUNNING;
    int finished;
    /* (restored, not cleared: a runtime run from inside an action steps
     * its own tasks within this step) */
    eddy_ctx *outer = eddy__running;
    eddy__running = t;
    if (first && t->key->journal != NULL && eddy__durable_replay_finished(rt, t)) {
        finished = 1;
    } else if (t->action->ops == NULL) {
        if (t->coro == NULL && (t->coro = eddy__coro_new(rt->coros, task_entry, t)) == NULL) {
            /* Not the action's fault: eddy stops (the same command resumes),
             * rather than fail, and with --on-error skip dead-letter, good
             * inputs. Each live coroutine is two kernel mappings (stack and
             * guard page): vm.max_map_count caps them, as does the address
             * space limit. */
            int e = errno;
            eddy__runtime_fail(rt, EDDY_ENOMEM,
                               eddy_error_newf("memory",
                                               "cannot map a coroutine stack (%s) with %zu action "
                                               "executions live; lower --max-in-flight or "
                                               "--stack-size, or raise the address space limit "
                                               "(ulimit -v) or vm.max_map_count",
                                               strerror(e), rt->live_tasks));
            t->rc = EDDY_ENOMEM;
            finished = 1;
        } else {
            finished = eddy__coro_resume(t->coro);
        }
    } else {
        if (t->action->ops->pause != NULL)
            rt->pause = t->action->ops->pause;
        finished = t->action->ops->step(t);
    }
    eddy__running = outer;
    if (finished)
        task_finish(rt, t);
    else if (t->state == EDDY_TASK_RUNNING)
        t->state = EDDY_TASK_SUSPENDED;
}

/* A batch of steps ended: a language may release what it kept across them. */
static void pause_steps(eddy_runtime *rt)
{
    if (rt->pause != NULL) {
        rt->pause();
        rt->pause = NULL;
    }
}

/* The clock's stride after n steps that took elapsed ns. */
static inline int turn_stride(uint64_t elapsed, int n)
{
    return elapsed >= (uint64_t)n * TURN_SLOW_STEP_NS ? 1 : TURN_CHECK;
}

static void on_idle(uv_idle_t *h)
{
    eddy_runtime *rt = h->data;
    uint64_t start = uv_hrtime(), last = start;
    uint64_t limit = (uint64_t)rt->cv->commit_interval_ms * 1000000;
    if (limit < TURN_MIN_NS)
        limit = TURN_MIN_NS;
    int stride = rt->turn_stride > 0 ? rt->turn_stride : 1, check = stride, since = 0;
    for (int budget = STEP_BUDGET; budget > 0 && !eddy__queue_empty(&rt->ready); budget--) {
        /* Finished calls wait for the loop's poll: let it take them rather
         * than start thousands of new tasks first (their tasks then go on,
         * and journal the results, before new work; see ready_fresh). Tasks
         * going on already are stepped first. */
        if ((budget & 63) == 0 && rt->ready.next == rt->ready_fresh && rt->pool != NULL &&
            eddy__pool_completions_waiting(rt->pool))
            break;
        task_step(rt, ready_pop(rt));
        since++;
        if (--check == 0) {
            uint64_t now = uv_hrtime();
            stride = turn_stride(now - last, since);
            last = now;
            since = 0;
            check = stride;
            if (now - start >= limit)
                break;
        }
    }
    if (since > 0) /* steps the clock did not see (a turn shorter than the stride) */
        stride = turn_stride(uv_hrtime() - last, since);
    rt->turn_stride = stride;
    pause_steps(rt);
    if (eddy__queue_empty(&rt->ready))
        uv_idle_stop(&rt->idle);
}

/* ---------------------------------------------------------------- runs */

/* Free an input, on the reader thread when it is still reading (see
 * eddy__source_recycle). */
static void input_done(eddy_runtime *rt, eddy__input *in)
{
    if (rt->source != NULL)
        eddy__source_recycle(rt->source, in);
    else
        eddy__input_free(in);
}

void eddy__runtime_run_start(eddy_runtime *rt, eddy__key *k, eddy__input *in)
{
    /* The InputEvent's attributes share the record; the input keeps its own
     * reference until the run ends, so that the reader frees the record. */
    eddy_event *ev = NULL;
    if (rt->nspare_inputs > 0) {
        ev = rt->spare_inputs[--rt->nspare_inputs];
        ev->refs = 1;
        ev->sent = 0;
        /* Its one member is "input" (input_event_done): set through the
         * iterator, without hashing the key again. */
        if (json_object_iter_set(ev->attrs, json_object_iter(ev->attrs), in->record) != 0) {
            eddy__event_unref(ev);
            ev = NULL;
        }
    } else {
        json_t *attrs = json_object();
        if (attrs != NULL && json_object_set(attrs, "input", in->record) != 0) {
            json_decref(attrs);
            attrs = NULL;
        }
        /* eddy_event_new takes attrs, also when it fails. */
        ev = attrs != NULL ? eddy_event_new(EDDY_INPUT_EVENT, attrs) : NULL;
    }
    if (ev == NULL) {
        input_done(rt, in);
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
        return;
    }
    k->running = 1;
    rt->runs_in_flight++;
    /* k->failed is 0 (run_end clears it) but for a run that recovery found
     * failed (eddy__durable_resume): its tasks are then dropped unstarted. */
    k->seq = in->seq;
    if (in->seq < rt->resumed_below) /* counted when it runs, not when loaded */
        rt->stats.runs_resumed++;
    k->line_no = in->line_no;
    k->input = ev;
    k->input_rec = in;
    eddy__event_set_id(ev, eddy__event_input_id(k->hash, k->seq));
    ev->sent = 1;
    rt->stats.events++;
    if (route_event(rt, k, ev) != EDDY_OK)
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
    if (k->live == 0)
        run_end(rt, k); /* nothing listens to InputEvent */
}

/* A run's InputEvent is released. When nothing else holds it or its
 * attributes and they are still {"input": ...}, it is kept for the next run
 * (its record released): a run then allocates no event, object or entry
 * for its input. */
static void input_event_done(eddy_runtime *rt, eddy_event *ev)
{
    void *it;
    if (ev != NULL && ev->refs == 1 && ev->attrs->refcount == 1 &&
        rt->nspare_inputs < EDDY_SPARE_INPUTS &&
        (it = sole_member(ev->attrs, "input", 5)) != NULL &&
        json_object_iter_set_new(ev->attrs, it, json_null()) == 0) {
        rt->spare_inputs[rt->nspare_inputs++] = ev;
        return;
    }
    eddy__event_unref(ev);
}

static void admit(eddy_runtime *rt);

static void run_end(eddy_runtime *rt, eddy__key *k)
{
    if (!rt->stopping)
        eddy__durable_run_end(rt, k);
    k->store_run = NULL; /* the store's handle of the run: pruned above */
    k->completions = 0;
    k->started = 0;
    if (json_object_size(k->sensory) != 0)
        json_object_clear(k->sensory);
    input_event_done(rt, k->input);
    k->input = NULL;
    input_done(rt, k->input_rec);
    k->input_rec = NULL;
    k->running = 0;
    k->failed = 0;
    /* Admission stopped at a limit (or a resume started more runs than
     * max-in-flight, or loaded more inputs than max-pending). */
    int was_full =
        rt->runs_in_flight >= rt->cv->max_in_flight || rt->pending >= rt->cv->max_pending;
    rt->runs_in_flight--;
    rt->stats.runs_finished++;
    if (rt->stopping)
        return;
    if (!eddy__queue_empty(&k->pending)) {
        /* The key's next input starts: a pending slot is freed, not a run
         * slot (runs_in_flight goes back up in run_start). */
        eddy__queue *q = eddy__queue_head(&k->pending);
        eddy__queue_remove(q);
        rt->pending--;
        eddy__runtime_run_start(rt, k, eddy__queue_data(q, eddy__input, node));
    } else {
        key_park(rt, k);
    }
    /* Admission waited for a slot: the next input starts now, its first
     * step in this batch of steps, rather than after the batch, the commit
     * and the next poll (at 256 runs in flight that wait was ~1.3 ms).
     * When the slot freed is not the one it waits for, admit() returns at
     * once, its limits checked before it takes anything. */
    if (was_full)
        admit(rt);
}

static void dead_letter_line(eddy_runtime *rt, eddy__input *in)
{
    static const char digits[] = "0123456789abcdef";
    json_t *o = json_pack("{s:I, s:s}", "line", (json_int_t)in->line_no, "reason", in->reason);
    if (o != NULL && in->detail != NULL)
        json_object_set_new(o, "detail", json_string(in->detail));
    if (o != NULL && in->raw != NULL) {
        json_t *raw = json_stringn(in->raw, in->raw_len);
        if (raw != NULL) {
            json_object_set_new(o, "raw", raw);
        } else {
            /* Not valid UTF-8 (or holds NUL): keep the bytes, escaped (by
             * table: a sprintf per byte made such a line ~10 times the
             * work of a line that is not JSON). */
            size_t n = in->raw_len;
            char *hex = malloc(n * 2 + 1);
            if (hex != NULL) {
                for (size_t i = 0; i < n; i++) {
                    unsigned char c = (unsigned char)in->raw[i];
                    hex[i * 2] = digits[c >> 4];
                    hex[i * 2 + 1] = digits[c & 15];
                }
                json_object_set_new(o, "raw_hex", json_stringn_nocheck(hex, n * 2));
                free(hex);
            }
        }
    }
    dead_letter_write(rt, o);
}

/* Admit inputs, in input order, while fewer than max-in-flight runs are in
 * flight and fewer than max-pending inputs wait behind runs: an input whose
 * key is idle starts a run, one whose key is busy joins the key's FIFO.
 * When either limit is reached admission stops, until a run ends. A key's
 * backlog thus takes pending slots, not run slots: it keeps no other key
 * from starting (scheduling rule 3) until max-pending inputs wait. */
static void admit(eddy_runtime *rt)
{
    if (rt->source == NULL || rt->admitting)
        return; /* (a run that ends as it starts calls us from within) */
    rt->admitting = 1;
    rt->admit_more = 0;
    /* Inputs come from the reader in batches (one lock each) into
     * rt->admit_buf, and are admitted from there one by one, also when a
     * run's end frees one slot. The source position, after the last input
     * admitted (or line dead-lettered), is written at the next commit, with
     * them. */
    while (!rt->stopping && rt->runs_in_flight < rt->cv->max_in_flight &&
           rt->pending < rt->cv->max_pending) {
        if (eddy__queue_empty(&rt->admit_buf) &&
            eddy__source_take(rt->source, &rt->admit_buf, ADMIT_BATCH) == 0)
            break;
        eddy__queue *q = eddy__queue_head(&rt->admit_buf);
        eddy__input *in = eddy__queue_data(q, eddy__input, node);
        if (in->record == NULL && rt->admit_bad_left == 0) {
            /* The turn's bad lines are done: the loop takes its turn (the
             * poll, not blocking, then the next turn's admit). */
            rt->admit_more = 1;
            if (!uv_is_active((uv_handle_t *)&rt->idle))
                uv_idle_start(&rt->idle, on_idle);
            break;
        }
        eddy__queue_remove(q);
        uint64_t end_offset = in->end_offset, line_no = in->line_no;
        if (in->record == NULL) {
            rt->admit_bad_left--;
            dead_letter_line(rt, in);
            input_done(rt, in);
            if (!rt->stopping)
                rt->source_offset = end_offset, rt->source_line = line_no;
            continue;
        }
        eddy__key *k = eddy__runtime_key_h(rt, in->key, in->key_len, in->key_hash);
        if (k == NULL) {
            eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
            input_done(rt, in); /* dropped: the position stays before it */
            continue;
        }
        if (k->stm == NULL && eddy__durable_key_load(rt, k) != EDDY_OK) {
            input_done(rt, in); /* the runtime stops; the position stays before it */
            continue;
        }
        rt->stats.inputs++; /* (not one refused above: it is read again) */
        in->seq = rt->next_seq++;
        eddy__durable_admit(rt, k, in);
        rt->source_offset = end_offset, rt->source_line = line_no;
        if (k->running) {
            eddy__queue_insert_tail(&k->pending, &in->node);
            rt->pending++;
        } else {
            eddy__runtime_run_start(rt, k, in);
        }
    }
    rt->admitting = 0;
}

/* ---------------------------------------------------------------- loop */

/* Reading the input failed (EDDY_EIO), or a resume found that it is not the
 * input the state was reading (EDDY_ESTATE: the state cannot be used so). */
static int source_error_code(const eddy_error *e)
{
    return strcmp(eddy_error_type(e), "state") == 0 ? EDDY_ESTATE : EDDY_EIO;
}

static void check_done(eddy_runtime *rt)
{
    if (rt->done)
        return;
    if (rt->stopping ? rt->live_tasks == 0
                     : rt->runs_in_flight == 0 && rt->pending == 0 && rt->live_tasks == 0 &&
                           (rt->source == NULL ||
                            (eddy__queue_empty(&rt->admit_buf) && eddy__source_done(rt->source)))) {
        /* Input that ended on a read error is a failure, even when the error
         * is seen here first rather than in on_source_ready(). */
        const eddy_error *e =
            rt->stopping || rt->source == NULL ? NULL : eddy__source_error(rt->source);
        if (e != NULL) {
            eddy__runtime_fail(rt, source_error_code(e), eddy__error_dup(e)); /* calls us again */
            return;
        }
        uint64_t line, bytes;
        int tail =
            !rt->stopping && rt->source != NULL ? eddy__source_tail(rt->source, &line, &bytes) : 0;
        if (tail != 0)
            eddy__log(EDDY_LOG_NOTE,
                      "line %llu of %s (%llu bytes) has no newline and %s: it is left unread, "
                      "and the next run with this state %s it once it is complete",
                      (unsigned long long)line,
                      rt->cv->input == NULL || strcmp(rt->cv->input, "-") == 0 ? "standard input"
                                                                               : rt->cv->input,
                      (unsigned long long)bytes,
                      tail == 2 ? "is over --max-line-bytes" : "is not complete JSON",
                      tail == 2 ? "dead-letters" : "takes");
        rt->done = 1;
        /* uv_stop() outside uv_run() would stay pending and make the next
         * uv_run() (the one that closes the handles) return at once. */
        if (rt->in_loop)
            uv_stop(&rt->loop);
    }
}

static void flush_sinks(eddy_runtime *rt)
{
    if (rt->sink != NULL && eddy__sink_flush(rt->sink) != EDDY_OK)
        eddy__runtime_fail(rt, EDDY_EIO, eddy_error_new("io", eddy__sink_error(rt->sink)));
    if (rt->dead != NULL && eddy__sink_flush(rt->dead) != EDDY_OK)
        eddy__runtime_fail(rt, EDDY_EIO, eddy_error_new("io", eddy__sink_error(rt->dead)));
}

/* Before the poll: admit, hand calls to the workers, flush. With tasks
 * ready the poll does not block, and the turn's commit waits for the check
 * after it: it then also takes the results the poll delivered, whose tasks
 * go on in the next turn's steps rather than one turn later (at 256 runs in
 * flight each of a run's two trips through the mailbox took ~3 turns). */
static void on_prepare(uv_prepare_t *h)
{
    eddy_runtime *rt = h->data;
    rt->admit_bad_left = ADMIT_BAD_MAX; /* a new turn */
    admit(rt);
    eddy__pool_flush(rt->pool);
    if (eddy__queue_empty(&rt->ready))
        eddy__durable_turn(rt, 0);
    else
        rt->turn_owed = 1;
    flush_sinks(rt);
    check_done(rt);
}

/* After a poll that did not block (tasks were ready): the turn's commit. */
static void on_check(uv_check_t *h)
{
    eddy_runtime *rt = h->data;
    if (rt->turn_owed) {
        rt->turn_owed = 0;
        eddy__durable_turn(rt, 0);
    }
}

static void on_source_ready(void *arg)
{
    eddy_runtime *rt = arg;
    const eddy_error *e = eddy__source_error(rt->source);
    if (e != NULL && !rt->stopping)
        eddy__runtime_fail(rt, source_error_code(e), eddy__error_dup(e));
    admit(rt);
    check_done(rt);
}

/* Inputs taken from the source but not admitted go back: the source
 * position stays before them. */
static void drop_unadmitted(eddy_runtime *rt)
{
    while (!eddy__queue_empty(&rt->admit_buf)) {
        eddy__queue *q = eddy__queue_head(&rt->admit_buf);
        eddy__queue_remove(q);
        input_done(rt, eddy__queue_data(q, eddy__input, node));
    }
}

static void begin_stop(eddy_runtime *rt)
{
    if (rt->stopping)
        return;
    rt->stopping = 1;
    /* Calls not started will not run: their tasks unwind at once. */
    if (rt->pool != NULL)
        eddy__pool_cancel(rt->pool);
    eddy__sleep_cancel_all(rt); /* sleeping tasks wake now, to unwind */
    drop_unadmitted(rt);
    /* Inputs waiting behind a run are dropped; with a state directory they
     * stay in the store and resume on restart. */
    for (size_t i = 0; i < rt->keys.cap; i++) {
        eddy__key *k = rt->keys.slots[i].value;
        if (rt->keys.slots[i].key == NULL)
            continue;
        while (!eddy__queue_empty(&k->pending)) {
            eddy__queue *q = eddy__queue_head(&k->pending);
            eddy__queue_remove(q);
            eddy__input_free(eddy__queue_data(q, eddy__input, node));
            rt->pending--;
        }
    }
    check_done(rt);
}

void eddy__runtime_fail(eddy_runtime *rt, int rc, eddy_error *err)
{
    if (rt->rc == EDDY_OK) {
        rt->rc = rc;
        rt->error = err;
    } else {
        eddy_error_free(err);
    }
    begin_stop(rt);
}

static void on_stop_async(uv_async_t *h)
{
    eddy_runtime *rt = h->data;
    if (!rt->stopping)
        eddy__runtime_fail(rt, EDDY_ESTOPPED,
                           eddy_error_new("stopped", "stopped before the input was finished"));
}

static void fill_stats(const eddy_runtime *rt, eddy_stats *out)
{
    *out = rt->stats;
    /* Counted where they are written, not where they are sent: with a
     * state a line waits in the outbox first, and a write can fail. */
    out->outputs = rt->sink != NULL ? eddy__sink_lines(rt->sink) : 0;
    out->dead_lettered = rt->dead != NULL ? eddy__sink_lines(rt->dead) : 0;
    out->runs_in_flight = rt->runs_in_flight;
    out->inputs_pending = rt->pending;
    out->keys_resident = rt->keys.count;
    out->durable = rt->store != NULL;
    if (rt->t_start != 0 && !rt->done)
        out->elapsed_s = (double)(uv_hrtime() - rt->t_start) / 1e9;
}

static void on_progress(uv_timer_t *h)
{
    eddy_runtime *rt = h->data;
    if (rt->progress_fn != NULL) {
        eddy_stats st;
        fill_stats(rt, &st);
        rt->progress_fn(&st, rt->progress_arg);
    }
}

/* ---------------------------------------------------------------- public */

static unsigned source_capacity(const eddy__config_values *cv)
{
    uint64_t c = cv->max_in_flight;
    if (c < 64)
        c = 64;
    return c > 8192 ? 8192 : (unsigned)c;
}

eddy_runtime *eddy_runtime_new(eddy_plan *plan, const eddy_config *conf, eddy_error **err)
{
    if (plan == NULL || conf == NULL) {
        eddy__error_set(err, EDDY_EINVAL, "config", "no plan or no configuration");
        return NULL;
    }
    if (plan->n == 0) {
        eddy__error_set(err, EDDY_EPLAN, "plan", "the agent plan has no action");
        return NULL;
    }
    eddy_runtime *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        eddy__error_set(err, EDDY_ENOMEM, "memory", "out of memory");
        return NULL;
    }
    if (uv_loop_init(&rt->loop) != 0) {
        free(rt);
        eddy__error_set(err, EDDY_ENOMEM, "memory", "cannot create the event loop");
        return NULL;
    }
    rt->owner = uv_thread_self();
    rt->input_fd = -1;
    eddy__mailboxes++; /* until eddy_runtime_free */
    eddy__queue_init(&rt->ready);
    rt->ready_fresh = &rt->ready;
    eddy__queue_init(&rt->admit_buf);
    eddy__queue_init(&rt->commit_wait);
    eddy__queue_init(&rt->sync_wait);
    eddy__queue_init(&rt->outbox_unsynced);
    eddy__queue_init(&rt->free_tasks);
    eddy__queue_init(&rt->idle_keys);
    eddy__queue_init(&rt->outbox_uncommitted);
    eddy__queue_init(&rt->outbox_committed);
    eddy__queue_init(&rt->recovered);
    eddy__map_init(&rt->keys);
    uv_idle_init(&rt->loop, &rt->idle);
    rt->idle.data = rt;
    uv_prepare_init(&rt->loop, &rt->prepare);
    rt->prepare.data = rt;
    uv_check_init(&rt->loop, &rt->check);
    rt->check.data = rt;
    uv_async_init(&rt->loop, &rt->stop_async, on_stop_async);
    rt->stop_async.data = rt;
    uv_timer_init(&rt->loop, &rt->progress_timer);
    rt->progress_timer.data = rt;

    rt->conf = eddy__config_dup(conf);
    if (rt->conf == NULL)
        goto fail_nomem;
    rt->cv = eddy__config_values_get(rt->conf);
    const eddy__config_values *cv = rt->cv;

    /* Before the state is created and the outputs are cut: see io/paths.h. */
    if (eddy__paths_check(cv->input, cv->output, eddy__config_dead_letter(rt->conf), err) !=
            EDDY_OK ||
        eddy__paths_check_state(cv->output, eddy__config_dead_letter(rt->conf), cv->state, err) !=
            EDDY_OK ||
        eddy__paths_check_files(cv->output, eddy__config_dead_letter(rt->conf), plan->files,
                                plan->nfiles, err) != EDDY_OK)
        goto fail;
    if (eddy__durable_open(rt, plan, err) != EDDY_OK) /* opens the input too */
        goto fail;
    rt->idle_with_memory = rt->store != NULL && (cv->key_cache != 0 || cv->key_cache_bytes != 0);
    rt->idle_max = IDLE_KEYS_MAX;
    if (rt->idle_with_memory) {
        rt->idle_max =
            cv->key_cache != 0 && cv->key_cache < SIZE_MAX ? (size_t)cv->key_cache : SIZE_MAX;
        rt->idle_bytes_max = cv->key_cache_bytes;
    }

    eddy__source_opts so = {
        .path = cv->input,
        .has_fd = rt->input_fd >= 0,
        .fd = rt->input_fd,
        .key_field = cv->key,
        .max_line_bytes = cv->max_line_bytes,
        .max_depth = cv->max_depth,
        .start_offset = rt->source_offset,
        .start_line = rt->source_line,
        .head_len = rt->head_len,
        .head_hash = rt->head_hash,
        .keep_tail = rt->store != NULL,
        .capacity = source_capacity(cv),
    };
    rt->input_fd = -1; /* the source's now, also when its open fails */
    if (eddy__source_open(&rt->source, &rt->loop, &so, on_source_ready, rt, err) != EDDY_OK)
        goto fail;
    rt->pool = eddy__pool_new(&rt->loop, cv->async_threads);
    /* Free stacks kept for reuse: mapping a stack (mmap, guard page) and
     * unmapping it cost more than the run that used it, so enough are kept
     * for a few thousand runs in flight (each holds only the pages its
     * run touched, ~8 KiB, and two mappings). */
    rt->coros = eddy__coro_pool_new(cv->stack_size, 4096);
    if (rt->pool == NULL || rt->coros == NULL)
        goto fail_nomem;
    eddy__durable_pool_ready(rt);
    rt->plan = plan;
    rt->input_route = eddy__plan_route(plan, EDDY_INPUT_EVENT);
    return rt;

fail_nomem:
    eddy__error_set(err, EDDY_ENOMEM, "memory", "out of memory");
fail:
    eddy_runtime_free(rt);
    return NULL;
}

int eddy__runtime_open_input(eddy_runtime *rt, eddy_error **err)
{
    const char *in = rt->cv->input;
    if (in == NULL || strcmp(in, "-") == 0)
        return EDDY_OK;
    rt->input_fd = eddy__wait_open(in, O_RDONLY | O_CLOEXEC, 0, EDDY_WAIT_OPEN_READ);
    if (rt->input_fd < 0)
        return eddy__error_set(err, EDDY_EIO, "io", "cannot open %s: %s", in, strerror(errno));
    return EDDY_OK;
}

int eddy_runtime_set_progress(eddy_runtime *rt, eddy_progress_fn fn, void *arg,
                              unsigned interval_ms)
{
    if (rt == NULL || !eddy__runtime_on_thread(rt))
        return rt == NULL ? EDDY_EINVAL : EDDY_EWRONGTHREAD;
    if (rt->ran && !rt->in_run)
        return EDDY_ESTATE; /* the run is over: there is nothing to report on */
    rt->progress_fn = fn;
    rt->progress_arg = arg;
    rt->progress_ms = interval_ms != 0 ? interval_ms : 500;
    if (rt->in_run && fn != NULL) {
        /* During the run (from an action or from the callback itself): the
         * new callback, at the new interval, from now on. */
        uv_timer_start(&rt->progress_timer, on_progress, rt->progress_ms, rt->progress_ms);
        uv_unref((uv_handle_t *)&rt->progress_timer);
    } else if (rt->in_run) {
        uv_timer_stop(&rt->progress_timer);
    }
    return EDDY_OK;
}

/* For a stack overflow's message, in a signal handler: reads and put only. */
static void overflow_note(void *arg, void (*put)(const char *))
{
    eddy_ctx *t = arg;
    put("action '");
    put(t->action->name);
    put("' for key ");
    put(t->key->text);
}

int eddy_runtime_run(eddy_runtime *rt)
{
    if (rt == NULL)
        return EDDY_EINVAL;
    if (!eddy__runtime_on_thread(rt))
        return EDDY_EWRONGTHREAD;
    if (rt->ran)
        return EDDY_ESTATE;
    rt->ran = 1;
    rt->in_run = 1;
    eddy__coro_overflow_init(overflow_note);
    /* A run inside an action of another runtime's run gives the cache back
     * to that run as it had it. */
    size_t outer_budget = eddy__jalloc_budget_held();
    eddy__jalloc_budget(EDDY__JALLOC_MAILBOX);
    rt->t_start = uv_hrtime();
    uv_prepare_start(&rt->prepare, on_prepare);
    uv_check_start(&rt->check, on_check);
    uv_unref((uv_handle_t *)&rt->check);
    if (rt->progress_fn != NULL) {
        uv_timer_start(&rt->progress_timer, on_progress, rt->progress_ms, rt->progress_ms);
        uv_unref((uv_handle_t *)&rt->progress_timer);
    }
    eddy__durable_resume(rt);
    rt->admit_bad_left = ADMIT_BAD_MAX;
    admit(rt);
    check_done(rt);
    if (!rt->done) {
        rt->in_loop = 1;
        uv_run(&rt->loop, UV_RUN_DEFAULT);
        rt->in_loop = 0;
    }
    uv_timer_stop(&rt->progress_timer);
    uv_prepare_stop(&rt->prepare);
    uv_idle_stop(&rt->idle);
    eddy__durable_turn(rt, 1);
    flush_sinks(rt);
    eddy__jalloc_budget(outer_budget);
    rt->stats.elapsed_s = (double)(uv_hrtime() - rt->t_start) / 1e9;
    rt->in_run = 0;
    return rt->rc;
}

void eddy_runtime_stop(eddy_runtime *rt)
{
    if (rt != NULL)
        uv_async_send(&rt->stop_async);
}

const eddy_error *eddy_runtime_error(const eddy_runtime *rt)
{
    return rt != NULL ? rt->error : NULL;
}

void eddy_runtime_stats(const eddy_runtime *rt, eddy_stats *out)
{
    if (rt == NULL || out == NULL)
        return;
    fill_stats(rt, out);
}

const char *eddy_runtime_unhandled_type(const eddy_runtime *rt, size_t i)
{
    return rt != NULL && i < EDDY__UNHANDLED_TYPES ? rt->unhandled_types[i] : NULL;
}

static void on_close_noop(uv_handle_t *h)
{
    (void)h;
}

/* A misuse of the API that cannot be reported through a return value and
 * would corrupt memory if it went on: said, then abort(). */
static void misuse(const char *fn, const char *why)
{
    fprintf(stderr, "eddy: %s: %s: aborting\n", fn, why);
    fflush(stderr);
    abort();
}

void eddy_runtime_free(eddy_runtime *rt)
{
    if (rt == NULL)
        return;
    /* Its actions resume here to unwind, on the coroutines of this thread's
     * loop: freed elsewhere, or under the run (from a callback of its own),
     * the memory would be used after it was freed. */
    if (rt->in_run)
        misuse("eddy_runtime_free", "called while eddy_runtime_run() runs (from a callback or "
                                    "an action of the same runtime?)");
    if (!eddy__runtime_on_thread(rt))
        misuse("eddy_runtime_free", "called on a thread other than the runtime's mailbox thread "
                                    "(the one that created it)");
    /* Tasks still queued never ran or are being discarded: drop them. A task
     * suspended on a call is only reachable from that call; pool_close
     * delivers every completion, and a delivered completion makes it ready. */
    drop_unadmitted(rt);
    if (rt->source != NULL)
        eddy__source_close(rt->source);
    rt->source = NULL;
    rt->stopping = 1;
    /* The syncer first: it reports to the pool. Close then cancels the jobs
     * still waiting for a sync. */
    eddy__durable_shutdown(rt);
    if (rt->pool != NULL)
        eddy__pool_close(rt->pool);
    rt->pool = NULL;
    eddy__sleep_close(rt); /* sleeping tasks are made ready, to unwind below */
    while (!eddy__queue_empty(&rt->ready) || !eddy__queue_empty(&rt->commit_wait) ||
           !eddy__queue_empty(&rt->sync_wait)) {
        eddy__queue_move(&rt->sync_wait, &rt->ready);
        eddy__queue_move(&rt->commit_wait, &rt->ready);
        eddy_ctx *t = ready_pop(rt);
        if (t->started)
            task_step(rt, t); /* resumes to unwind; calls now fail at once */
        else
            task_finish(rt, t);
    }
    pause_steps(rt);
    uv_close((uv_handle_t *)&rt->idle, on_close_noop);
    uv_close((uv_handle_t *)&rt->prepare, on_close_noop);
    uv_close((uv_handle_t *)&rt->check, on_close_noop);
    uv_close((uv_handle_t *)&rt->stop_async, on_close_noop);
    uv_close((uv_handle_t *)&rt->progress_timer, on_close_noop);
    /* check_done() stops the loop only from inside uv_run(), so no stop is
     * pending here that would make this uv_run() return before the close
     * callbacks ran. */
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    int lrc = uv_loop_close(&rt->loop);
    /* Every handle is closed by now; a busy loop means one was forgotten. */
    assert(lrc == 0);
    (void)lrc;

    for (size_t i = 0; i < rt->keys.cap; i++) {
        if (rt->keys.slots[i].key != NULL)
            key_free(rt->keys.slots[i].value);
    }
    eddy__map_free(&rt->keys);
    while (rt->nspare_inputs > 0)
        eddy__event_unref(rt->spare_inputs[--rt->nspare_inputs]);
    while (rt->nspare_outputs > 0)
        eddy__event_unref(rt->spare_outputs[--rt->nspare_outputs]);
    while (!eddy__queue_empty(&rt->free_tasks)) {
        eddy__queue *q = eddy__queue_head(&rt->free_tasks);
        eddy__queue_remove(q);
        free(eddy__queue_data(q, eddy_ctx, node));
    }
    eddy__coro_pool_free(rt->coros);
    eddy__durable_close(rt);
    eddy__sink_close(rt->sink);
    eddy__sink_close(rt->dead);
    eddy_plan_free(rt->plan);
    eddy_config_free(rt->conf);
    eddy_error_free(rt->error);
    for (size_t i = 0; i < EDDY__UNHANDLED_TYPES; i++)
        free(rt->unhandled_types[i]);
    json_decref(rt->mread_seen);
    if (rt->input_fd >= 0)
        close(rt->input_fd);
    if (eddy__mailboxes > 0) /* on its thread: see the checks above */
        eddy__mailboxes--;
    free(rt);
}
