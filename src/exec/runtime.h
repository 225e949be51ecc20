/*
 * The operator: keyed action execution on one mailbox thread.
 *
 * Design notes
 * ------------
 * Who runs where: everything in this file runs on the mailbox thread (the
 * thread that called eddy_runtime_new and eddy_runtime_run), driven by a libuv
 * loop. Only the bodies of async calls run elsewhere (src/exec/pool.c), and
 * the source's reader thread parses input lines (src/io/source.c).
 *
 * Queues:
 *   source queue   parsed inputs, filled by the reader; taken in batches
 *   rt->admit_buf  into this buffer, and admitted from it, in input order,
 *                  while fewer than max-in-flight runs are in flight and
 *                  fewer than max-pending inputs wait behind runs
 *   key->pending   admitted inputs of a key waiting for its run to end (FIFO)
 *   rt->ready      tasks (action executions) ready to make progress, FIFO
 *                  across keys: that is the fairness rule
 *   rt->commit_wait tasks whose durable write waits for the group commit
 *   rt->sync_wait  tasks waiting for a commit to be synced to disk
 *
 * One loop turn: completions and new inputs arrive (async handles) and make
 * tasks ready; the idle handle, active only while rt->ready is not empty, runs
 * ready tasks (each a step of an action execution until it finishes or
 * suspends); the prepare handle, just before the loop would block, admits new
 * inputs (a run's end that frees a slot admission waited for admits itself), hands
 * submitted calls to the workers in one batch, commits the
 * store's transaction and flushes the sinks. A suspended task is referenced
 * only by the calls it waits for, or by its sleep's loop timer
 * (src/exec/timer.h): nothing polls it.
 *
 * Stopping (action failure under on-error=stop, eddy_runtime_stop, I/O or
 * store failure): admission stops, tasks that never started are dropped, and
 * suspended tasks are resumed as their calls complete (sleeping ones at once)
 * so that their C stacks unwind (further async calls return EDDY_ECANCELED at
 * once); their effects are discarded. The loop ends when no task is left.
 */
#ifndef EDDY_EXEC_RUNTIME_H
#define EDDY_EXEC_RUNTIME_H

#include <stdint.h>
#include <uv.h>

#include "eddy/eddy.h"
#include "core/config.h"
#include "core/event.h"
#include "core/memory.h"
#include "core/plan.h"
#include "exec/coro.h"
#include "exec/pool.h"
#include "io/sink.h"
#include "io/source.h"
#include "util/jsonw.h"
#include "util/map.h"
#include "util/queue.h"

typedef struct eddy__key eddy__key;
typedef struct eddy__journal eddy__journal;

/* A read of memory by an action execution while another of its run was in
 * flight beside it (eddy__mem_read_note). */
typedef struct eddy__mread {
    struct eddy_ctx *task;
    char *path;
    int sensory;
} eddy__mread;

/* Per key: its FIFO of inputs, its run in flight, its memory. */
struct eddy__key {
    char *text; /* the key as JSON text; the map's key */
    size_t len;
    uint64_t hash;
    /* Committed short-term memory. NULL: not read from the state yet (a key
     * made while the state may hold memory of keys not in memory; see
     * rt->memory_offloaded): eddy__durable_key_load reads it before the
     * key's run starts or resumes. */
    json_t *stm;
    json_t *sensory;          /* committed sensory memory of the run in flight */
    eddy__queue pending;      /* eddy__input waiting for the run to end */
    eddy__queue idle_node;    /* in rt->idle_keys while it is idle (key_park) */
    eddy__queue recover_node; /* in rt->recovered while its run waits to resume */
    /* The run in flight (running != 0): */
    int running;
    int failed;             /* an action failed under on-error=skip */
    uint64_t seq;           /* its sequence number */
    uint64_t line_no;       /* its input line */
    eddy_event *input;      /* its InputEvent (one reference) */
    eddy__input *input_rec; /* its input, holding a reference to the record */
    size_t live;            /* its unfinished tasks */
    uint32_t completions;   /* action executions finished in this run */
    uint64_t started;       /* action executions this run has started (routed) */
    eddy__journal *journal; /* recovered journal of this run, or NULL */
    uint64_t need_txn;      /* newest commit holding a result its tasks went on
                               with before it was synced: calls wait for it */
    void *store_run;        /* the store's handle of the run (eddy__jrec.run) */
    int stm_dirty;          /* short-term memory written since it was last stored */
    size_t stm_bytes;       /* its JSON text's length as last stored or read */
    /* The reads of memory its run's action executions made beside another
     * (at most EDDY__MREADS_MAX), until each ends: what a finishing one's
     * writes are checked against. */
    eddy__mread *reads;
    uint32_t nreads, reads_cap;
};

enum { EDDY_TASK_READY = 1, EDDY_TASK_RUNNING, EDDY_TASK_SUSPENDED };

/* An action execution. eddy_ctx is this struct: the context handed to the
 * action is the task itself. */
struct eddy_memory {
    struct eddy_ctx *task;
    eddy__memview view;
};

struct eddy_ctx {
    eddy__queue node; /* rt->ready, rt->commit_wait, rt->sync_wait or the free list */
    struct eddy_runtime *rt;
    eddy__key *key;
    const eddy__action *action;
    eddy_event *event; /* the triggering event (one reference) */
    eddy__coro *coro;  /* C actions */
    void *lang;        /* language state (a Python coroutine) */
    struct eddy_memory stm, sensory;
    eddy__queue sent; /* events sent, released at finish */
    uint32_t nsent;
    uint32_t call_index; /* position of the next durable call */
    size_t waiting;      /* calls in flight */
    uint64_t wait_txn;   /* on rt->sync_wait: the commit whose sync it waits for */
    int resume_written;  /* on rt->commit_wait: go on once the commit is written */
    int state;
    int started;
    int replayed;    /* finished before a crash: its recorded events were re-released */
    int retried;     /* called a journaled failure again (retry-failed-calls) */
    int in_body;     /* running a durable call's body inline, on the mailbox thread:
                      * the body may only use its arguments, so every context call
                      * fails as it would on a worker */
    int rc;          /* the action's return code */
    eddy_error *err; /* its failure text */
    /* A durable call that differed from the journal under strict determinism
     * (eddy__durable_plan): the action execution fails with it whatever it
     * does with the call's EDDY_ENONDET, and its later durable calls are
     * refused, never answered from the journal past the divergence. */
    eddy_error *nondet;
    /* How the action's last context or memory call that returns a code
     * refused its arguments, or NULL when that call did not: named in the
     * failure when the action returns that code without a text of its own
     * (eddy_ctx_send_output(ctx, NULL) after a json_pack that failed). A
     * call that goes through clears it (eddy__ctx_called), so that a
     * refusal the action ignored does not explain a later failure. */
    const char *why; /* a static text, or why_buf */
    int why_rc;
    char *why_buf; /* a refusal's text made for it (naming a path), or NULL */
};

/* rc, remembering why (a static text) for the action's failure: for a
 * context call that refuses its arguments, on the mailbox thread. */
static inline int eddy__ctx_refuse(struct eddy_ctx *t, int rc, const char *why)
{
    t->why = why;
    t->why_rc = rc;
    return rc;
}

/* The same with a text made from fmt (naming a path, say). */
int eddy__ctx_refusef(struct eddy_ctx *t, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A context call that returns a code took t's handle: a refusal before it
 * no longer explains the action's failure. */
static inline void eddy__ctx_called(struct eddy_ctx *t)
{
    t->why = NULL;
}

/* The text of a refusal of a context or memory handle that is not the
 * running action execution's (eddy__running), after "the context". */
#define EDDY__STALE_WHOSE \
    " is not the running action execution's (was it kept after its action ended?)"
#define EDDY__CTX_STALE "the context" EDDY__STALE_WHOSE

/* Static TLS (initial-exec): one load from the thread pointer, where the
 * default model in a shared library is a call per access. A library loaded
 * by dlopen() gets static TLS only from glibc's small surplus reserve (a few
 * hundred bytes); the 12 bytes below, and the 4 of eddy__jalloc_failures
 * (util/jalloc.h), fit it (libeddy is marked STATIC_TLS). Anything larger
 * stays out of it (src/util/jalloc.c). */
#if defined(__GNUC__)
#define EDDY__TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define EDDY__TLS_FAST
#endif

/* The task being stepped on this thread (task_step sets it around each
 * step), or NULL: the one task whose context and memory handles the
 * context API takes. A handle kept past its action execution (in a static,
 * say) points at a task that ended: recycled for another action execution,
 * on the free list (poisoned in debug builds) or freed. So a handle is
 * compared with it before anything of the handle is read. Each thread has
 * its own: two runtimes on two threads each see their own task. */
extern _Thread_local struct eddy_ctx *eddy__running EDDY__TLS_FAST;
/* Runtimes made on this thread and not freed: it is a mailbox thread when
 * not 0. Tells a kept handle used here between steps (EDDY_ESTATE) from a
 * handle used on a worker or any other thread (EDDY_EWRONGTHREAD). */
extern _Thread_local unsigned eddy__mailboxes EDDY__TLS_FAST;

/* Why a context or memory handle that is not the running task's, or is
 * used inside the body of a durable call, is refused, without reading it:
 * EDDY_EWRONGTHREAD off the mailbox threads and inside the body of a
 * durable call (the running task's in_body), else EDDY_ESTATE, its refusal
 * (stale, a static text) recorded on the running task when there is one. */
int eddy__ctx_unusable(const char *stale);

/* EDDY_OK when t (not NULL) may be used here and now, else
 * eddy__ctx_unusable(stale). Nothing of t is read unless it is the running
 * task. */
static inline int eddy__ctx_usable(struct eddy_ctx *t, const char *stale)
{
    if (t == eddy__running && !t->in_body)
        return EDDY_OK;
    return eddy__ctx_unusable(stale);
}

typedef struct eddy__task eddy__task;

struct eddy_runtime {
    uv_loop_t loop;
    uv_thread_t owner;
    eddy_plan *plan;
    const struct eddy__route *input_route; /* the plan's route of InputEvent, or NULL */
    eddy_config *conf;
    const eddy__config_values *cv;
    eddy__pool *pool;
    eddy__coro_pool *coros;
    eddy__source *source;
    eddy__sink *sink;
    eddy__sink *dead;
    struct eddy__store *store;

    uv_idle_t idle;
    uv_prepare_t prepare;
    uv_check_t check; /* after a poll that did not block: the turn's commit */
    int turn_owed;    /* the prepare left the turn's commit to the check */
    uv_async_t stop_async;
    uv_timer_t progress_timer;
    eddy_progress_fn progress_fn;
    void *progress_arg;
    unsigned progress_ms;

    eddy__queue ready;
    /* The first task in ready that has not started yet (&ready: none). Tasks
     * that go on after a call are put before it: a finished call's result is
     * journaled, and its run moves on, before new work starts (with 100 k
     * inputs in flight, results waited seconds behind new tasks, and a kill
     * then repeated the calls). */
    eddy__queue *ready_fresh;
#define EDDY_SPARE_INPUTS 4096
    eddy_event *spare_inputs[EDDY_SPARE_INPUTS]; /* released InputEvents, for reuse */
    unsigned nspare_inputs;
#define EDDY_SPARE_OUTPUTS 64 /* each is released right after its line is written */
    eddy_event *spare_outputs[EDDY_SPARE_OUTPUTS]; /* released OutputEvents, for reuse */
    unsigned nspare_outputs;
    void (*pause)(void); /* of the language whose steps ran in this batch */
    eddy__queue commit_wait;
    eddy__queue free_tasks;
    size_t nfree_tasks;
    struct eddy__sleeps *sleeps; /* timers of sleeping tasks (src/exec/timer.c), or NULL */
    eddy__map keys;
    /*
     * Idle keys (no run, no pending input), least recently used first: the
     * keys that may be let go, beyond idle_max of them. Without a state only
     * keys with empty short-term memory are idle (memory has nowhere else to
     * live); with one and key-cache N > 0, keys whose memory is saved (not
     * stm_dirty) too, and idle_max is N: a key let go is made again, its
     * memory read from the state, when its next input comes.
     */
    eddy__queue idle_keys;
    size_t nidle_keys;
    size_t idle_max;
    int turn_stride;         /* on_idle reads the clock every turn_stride steps (0: 1) */
    uint64_t idle_bytes;     /* the idle keys' stm_bytes, and KEY_COST each */
    uint64_t idle_bytes_max; /* key-cache-bytes with idle_with_memory; 0: no bound */
    int idle_with_memory;    /* keys holding memory may be idle (state, key-cache > 0) */
    /* The state may hold memory of keys not in memory (it held keys when it
     * opened, or a key with memory was let go): a key made then is read
     * from the state. Until then a new key has empty memory without a read.
     * Not taken: a filter of the keys the state holds, which would spare
     * the read (~4.6 k instructions) of a key seen for the first time, at
     * the cost of a scan of every key at start or bytes per key kept. */
    int memory_offloaded;
    /* The newest need_txn of the keys let go: a key made again waits for it
     * as the key it was would have (a run of it may build on a result of
     * an earlier run through its memory, and that result's commit may not
     * be synced yet; see eddy__durable_went_on). */
    uint64_t let_go_need_txn;

    /* Durable execution (src/exec/durable.c). */
    int store_failed;
    uint64_t txn_start;             /* when the open transaction began (uv_hrtime) */
    uint64_t txn_written;           /* commits made (numbered 1, 2, ...) */
    uint64_t txn_synced;            /* of them, the newest known to be on disk */
    uint64_t txn_requested;         /* the newest whose sync was asked for */
    uint64_t sync_owed_since;       /* when a sync was first put off (uv_hrtime), or 0 */
    uint64_t barrier_max;           /* the newest commit given to a pool job as barrier */
    int commit_now;                 /* a job waits for the open transaction: commit it */
    int output_failed;              /* a write or sync of an output file failed: no more */
    struct eddy__syncer *syncer;    /* the thread that syncs commits, or NULL */
    eddy__queue sync_wait;          /* tasks whose commit waits for its sync, by wait_txn */
    eddy__queue outbox_unsynced;    /* output lines committed, not yet on disk, by txn */
    eddy__queue outbox_uncommitted; /* output lines in the open transaction */
    eddy__queue outbox_committed;   /* output lines durable, to write to the files */
    uint64_t outbox_last;
    uint64_t outbox_written;             /* id of the last outbox line written to its file */
    uint64_t outbox_acked;               /* id of the last line whose file position is recorded */
    uint64_t sink_synced;                /* when the files were last synced (uv_hrtime) */
    uint64_t source_offset, source_line; /* where the source resumes */
    uint64_t source_saved;               /* source_offset as last written to the store */
    /* The head of the input the state reads (see eddy__source_head), as
     * stored: a resume checks it; a state that read from the input's start
     * records it with its first source position. */
    uint64_t head_len, head_hash;
    int head_saved;
    int admitting; /* in admit() */
    /* Bad lines admit() may still dead-letter in this loop turn, and
     * whether it stopped at that bound with lines left (ADMIT_BAD_MAX). */
    unsigned admit_bad_left;
    int admit_more;
    eddy__queue admit_buf; /* inputs taken from the source, not admitted yet */
    /* Run sequence numbers are drawn from one counter for all keys: a key's
     * runs are numbered in order and no number is used twice, and the state
     * keeps one counter per commit rather than one per key per run. */
    uint64_t next_seq;       /* the next run's sequence number */
    uint64_t next_seq_saved; /* the counter as last written to the store */
    uint64_t resumed_below;  /* runs numbered below this were loaded from the state */
    eddy__queue recovered;   /* keys with runs to resume, in arrival order */
    eddy__buf scratch;       /* encoding buffer for outbox lines */

    /* What admission counts (both only on the mailbox thread, each changed
     * where a key's run starts or ends, or where its FIFO grows or shrinks:
     * no scan of the keys). */
    uint64_t runs_in_flight; /* keys with a run going (k->running) */
    uint64_t pending;        /* admitted inputs waiting in k->pending */
    size_t live_tasks;
    int ran;
    int in_loop; /* inside uv_run() */
    int in_run;  /* inside eddy_runtime_run() */
    int stopping;
    int done;
    int rc;
    eddy_error *error;
    eddy_stats stats;
    /* The first distinct types of the events that triggered no action
     * (stats.unhandled_events counts them all), in the order met; each
     * strdup'd once (see eddy_runtime_unhandled_type). */
#define EDDY__UNHANDLED_TYPES 4
    char *unhandled_types[EDDY__UNHANDLED_TYPES];
    /* Warnings of memory written beside a read (eddy__mem_read_note): how
     * many, and which (writer, reader, path) were said. */
    unsigned mread_warnings;
    json_t *mread_seen;
    int input_fd; /* eddy__runtime_open_input's, until the source takes it; -1 */
    uint64_t t_start;
};

/* Make a suspended task ready (mailbox thread). */
void eddy__task_ready(eddy_ctx *t);
/* The same, behind every task ready now, those not started yet included:
 * a task that yields (eddy_ctx_sleep of 0 ms) lets all of them run first. */
void eddy__task_ready_last(eddy_ctx *t);

/* 1 when called on rt's mailbox thread. */
int eddy__runtime_on_thread(const struct eddy_runtime *rt);

/* The key named text (JSON text), created when absent; NULL on ENOMEM. A
 * key created while rt->memory_offloaded has k->stm NULL: its memory is
 * read (eddy__durable_key_load) before a run of it starts. */
eddy__key *eddy__runtime_key(struct eddy_runtime *rt, const char *text);
/* The same with the key's length and eddy__map_hash, known already. */
eddy__key *eddy__runtime_key_h(struct eddy_runtime *rt, const char *text, size_t len,
                               uint64_t hash);

/* Start the run of input in (taken) for key k, which has no run in flight. */
void eddy__runtime_run_start(struct eddy_runtime *rt, eddy__key *k, eddy__input *in);

/* Record a fatal error (first one wins) and begin stopping. */
void eddy__runtime_fail(struct eddy_runtime *rt, int rc, eddy_error *err);

/* Open the input file (rt->input_fd; nothing for stdin), waiting for a
 * FIFO's writer (eddy__wait_open): eddy__durable_open calls it once the
 * state is open and checked, before the outputs are cut, so that a stop
 * during that wait finds the outputs as they were, and a state that cannot
 * be used is refused at once. */
int eddy__runtime_open_input(struct eddy_runtime *rt, eddy_error **err);

/*
 * Memory read by t at path (of its sensory memory, or short-term), noted
 * when another action execution of its run is in flight (key->live > 1):
 * when that other one finishes having written at or above or below path, a
 * crash would make t's re-run read its write, which t did not read (a
 * re-run reads memory as it stands, the finished actions' writes applied),
 * and eddy warns (docs/durability.md, "Writing deterministic actions"). An
 * action alone in its run needs no note: no other can finish before it.
 */
void eddy__mem_read_note(struct eddy_ctx *t, int sensory, const char *path);

#endif /* EDDY_EXEC_RUNTIME_H */
