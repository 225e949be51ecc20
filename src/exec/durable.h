/*
 * Durable execution: the journal of action executions, group commit, the
 * output outbox and crash recovery, on top of the state store.
 *
 * Design notes
 * ------------
 * Everything runs on the mailbox thread, but the disk syncs (below). Without
 * a state directory
 * (rt->store == NULL) every function here is a cheap no-op and durable calls
 * simply run.
 *
 * What a crash can cost and why nothing is emitted twice:
 *  - An input is appended to its key's pending FIFO in the store in the same
 *    transaction as the new source position, so in-flight inputs are never
 *    re-read from the source.
 *  - A durable call's result is journaled, and the calling task resumes only
 *    after that transaction committed. A re-run returns the journaled result.
 *  - When an action execution finishes, its released events, its memory
 *    writes and its outputs (into the outbox) are written in one transaction.
 *    A re-run does not run it again: its events are released as recorded, its
 *    memory writes were applied at recovery, its outputs are in the outbox.
 *  - Outbox lines are written to the output and dead-letter files only after
 *    their transaction committed; the files' committed lengths move forward
 *    in a later transaction together with the removal of those lines. On
 *    start the files are cut back to their committed lengths and the outbox
 *    is written again: each line lands exactly once.
 *  - When a run ends, its journal is deleted, its pending input removed and
 *    the key's short-term memory and next sequence number written, in one
 *    transaction.
 *  - With --on-error skip, a run that fails has its input dead-lettered and
 *    its failure journaled in one transaction, when its action fails; the
 *    run ends later, once its actions in flight have ended. A rerun that
 *    finds the failure does not run the run again (its input would be
 *    dead-lettered twice): it ends it as it stood.
 *
 * Group commit: writes accumulate in one open transaction; the prepare phase
 * of the loop commits it when a task waits for it, when it is older than
 * commit-interval-ms, or when the loop would otherwise block.
 *
 * Commit and sync are split (store.h) when the store allows it: the mailbox
 * commits without waiting for the disk and goes on with other work, and a
 * syncer thread makes the commits durable, one fdatasync covering every
 * commit written before it began. "Committed" above means durable: a call
 * runs, and an outbox line is written to its file, only once the sync
 * covering the records before it is done (rt->sync_wait and
 * rt->outbox_unsynced hold them until then, in commit order); a task waiting
 * for its record resumes after that sync too, except a task after calls
 * on workers (below). The syncer touches nothing but the store's sync; it
 * reports through a uv_async.
 */
#ifndef EDDY_EXEC_DURABLE_H
#define EDDY_EXEC_DURABLE_H

#include "exec/runtime.h"
#include "store/store.h"

/* Open the state store of plan (borrowed), recover and open the sinks. Without
 * a state directory only opens the sinks. */
int eddy__durable_open(eddy_runtime *rt, const eddy_plan *plan, eddy_error **err);
/* Start the runs that were in flight at the crash (after the runtime is set up).
 * A run whose journal holds its failure (eddy__durable_run_failed) starts
 * failed: none of its actions runs, and it ends at once as the run would have
 * ended had it not stopped (the memory writes of its finished actions
 * applied, as for any resumed run; its journal and input deleted). */
void eddy__durable_resume(eddy_runtime *rt);
/* Stop the thread that syncs commits (before the loop's handles close). */
void eddy__durable_shutdown(eddy_runtime *rt);

/* Close the store (after a final commit when clean). */
void eddy__durable_close(eddy_runtime *rt);

/* Read k's short-term memory from the state (k->stm is NULL: the key was
 * made while the state may hold memory of keys not in memory): one indexed
 * read, on the mailbox thread, before the key's run starts or resumes; a key
 * the state holds none of gets empty memory. EDDY_OK; otherwise the runtime
 * fails (a message naming the key; k->stm stays NULL) and the code is
 * returned: EDDY_ENOMEM, EDDY_ESTORE, or EDDY_ESTATE (the memory does not
 * decode). */
int eddy__durable_key_load(eddy_runtime *rt, eddy__key *k);

/* An input was admitted for key k with sequence number in->seq. */
void eddy__durable_admit(eddy_runtime *rt, eddy__key *k, const eddy__input *in);

/* Before a task first runs: when the journal says its action execution
 * already finished, queue its recorded events on t->sent and return 1. */
int eddy__durable_replay_finished(eddy_runtime *rt, eddy_ctx *t);
/* A task finished successfully: journal its completion record. */
void eddy__durable_task_done(eddy_runtime *rt, eddy_ctx *t);
/* Task t failed under --on-error skip and its run with it (error type and
 * message as dead-lettered): journal the run's failure, in the transaction
 * that holds the dead letter. A rerun that finds it ends the run as it
 * stood (see eddy__durable_resume). */
void eddy__durable_run_failed(eddy_runtime *rt, eddy_ctx *t, const char *etype, const char *emsg);
/* The run of k ended. */
void eddy__durable_run_end(eddy_runtime *rt, eddy__key *k);

/* Write a line to the output (channel 'o') or dead-letter file ('d'): at
 * once without a store, through the outbox with one. */
int eddy__durable_emit(eddy_runtime *rt, char channel, const json_t *line);

/* The loop is about to block (or a turn ended): commit when due, resume the
 * tasks that waited on the commit and deliver committed outbox lines.
 * final: commit regardless (at the end of the run). */
void eddy__durable_turn(eddy_runtime *rt, int final);

/*
 * Durable calls, shared by the C API (eddy_ctx_durable_execute*) and other
 * languages. A front-end computes the call's function id and args digest,
 * then:
 *   1. eddy__durable_plan(): takes the call's position and decides from the
 *      journal whether the call replays (result or error), runs, runs after a
 *      PENDING record (reconcilable calls), or runs its reconciler;
 *   2. runs the call when it must, and records the outcome with
 *      eddy__durable_record();
 *   3. lets the task resume only after the record committed: the task goes on
 *      rt->commit_wait (eddy__durable_wait_commit) and the prepare phase makes
 *      it ready after the commit. Without a state directory there is nothing
 *      to record or wait for.
 * A task (C or Python) whose calls ran on workers resumes once the commit
 * is written (it then survives a crash of the process, not yet one of the
 * machine); its run's next call waits for the sync (in the pool,
 * eddy__durable_barrier; on the mailbox, eddy__durable_gate, or for Python,
 * which cannot suspend there, eddy__durable_settle) and its outputs, through
 * the outbox, too. So the end of a run shares the sync of its last call.
 * Other tasks resume once the commit is synced, but for Python's
 * durable_execute, which goes on before the commit (eddy__durable_went_on).
 */
enum {
    EDDY_DCALL_RUN = 1,      /* run the call, then record its outcome */
    EDDY_DCALL_RUN_PENDING,  /* record PENDING and wait for the commit, then run */
    EDDY_DCALL_RECONCILE,    /* PENDING found: run the reconciler instead */
    EDDY_DCALL_REPLAY_OK,    /* journaled result in payload (JSON text) */
    EDDY_DCALL_REPLAY_ERROR, /* journaled error: err_type, err_msg, payload (may be NULL) */
};

typedef struct eddy__dcall {
    int64_t idx; /* position in the action execution */
    char digest[17];
    int what; /* EDDY_DCALL_* */
    /* Replays: borrowed from the run's journal; use them before the task yields. */
    const char *payload, *err_type, *err_msg;
} eddy__dcall;

/* 16 hex digits of a digest of bytes / of the canonical JSON of args (sorted
 * keys, compact; NULL is JSON null), written in rt's scratch buffer. The
 * latter returns EDDY_ENOMEM when that buffer cannot grow: the caller must
 * not go on with another digest (it would not be the journal's on a
 * resume, and a committed call would run again). Arguments too deep to
 * write have the digest of "null", as on every run. */
void eddy__durable_digest(const void *bytes, size_t len, char out[17]);
int eddy__durable_digest_json(eddy_runtime *rt, const json_t *args, char out[17]);

/* Plan the task's next durable call (mailbox thread). Returns EDDY_OK with *c
 * filled; EDDY_ENONDET when the journal holds another call at this position
 * and strict determinism is on (t->nondet then names both calls, and the
 * action execution fails with it whatever it does), and for every later call
 * of the task; EDDY_ECANCELED when the runtime stops; EDDY_ESTORE. */
int eddy__durable_plan(eddy_ctx *t, const char *fn_id, const char *digest, int reconcilable,
                       eddy__dcall *c);

/* Journal the outcome of the call planned as c (status EDDY_JCALL_*; payload
 * is JSON text, for errors extra data or NULL). No-op without a store.
 * EDDY_OK or EDDY_ESTORE. */
int eddy__durable_record(eddy_ctx *t, const char *fn_id, const eddy__dcall *c, int status,
                         const char *payload, const char *err_type, const char *err_msg);

/* t goes on at once with the outcome it just recorded, in the open
 * transaction (Python's durable_execute, which cannot wait for the commit
 * on the mailbox thread): its key's next call waits for that transaction to
 * commit and sync, as for a result it went on with before the sync
 * (eddy__durable_barrier, _gate: the transaction commits at the end of the
 * turn; eddy__durable_settle commits it there and then). */
void eddy__durable_went_on(eddy_ctx *t);

/* The call planned as c was journaled PENDING (EDDY_DCALL_RUN_PENDING) but
 * never started: the stop canceled it before a worker took it. Remove the
 * record, in the open transaction (which the stop's final commit takes), so
 * that the resume runs the call rather than its reconciler. A call that did
 * start keeps it. No-op without a store or after a store failure. */
void eddy__durable_unpend(eddy_ctx *t, const eddy__dcall *c);

/* Queue t (not running, not queued) to be made ready once the open
 * transaction has committed: once it is written when written is set (the
 * task's calls ran on workers; its run's next calls then wait for the sync:
 * eddy__durable_gate, _settle, _barrier), else once it is synced. The
 * caller then suspends. */
void eddy__durable_wait_commit(eddy_ctx *t, int written);

/* Before a C task makes a call on the mailbox: when its run went on with a
 * result whose commit is written but not yet synced, suspend until it is.
 * EDDY_OK, or EDDY_ECANCELED when the runtime stopped meanwhile. A call
 * thus never runs before the results it may depend on are on disk. */
int eddy__durable_gate(eddy_ctx *t);

/* The same for calls on a worker, without suspending: the commit the call
 * must wait for (0 for none), the job's barrier (eddy__pool_submit_after):
 * the job goes to the pool at once and runs when the sync is done. */
uint64_t eddy__durable_barrier(const eddy_ctx *t);

/* The barrier of a job that must not run before what the open transaction
 * holds (a reconciled call's start, journaled PENDING) is on disk: the
 * transaction commits at the end of this turn. */
uint64_t eddy__durable_barrier_open(eddy_ctx *t);

/* The same for a call on the mailbox by a task that cannot suspend there
 * (Python's durable_execute): when the run's results are not all on disk,
 * sync now, on the mailbox thread, after committing the open transaction
 * when it holds one of them (eddy__durable_went_on). EDDY_OK, or
 * EDDY_ESTORE when the store failed (the runtime stops), EDDY_ECANCELED
 * when the runtime is failing. */
int eddy__durable_settle(eddy_ctx *t);

/* A pool job came back canceled (eddy__pool_sync_failed): fail the runtime
 * now if the syncer's failure was not taken yet, so that the task sees the
 * stop rather than a lone failed call. */
void eddy__durable_job_canceled(eddy_runtime *rt);

/* The worker pool exists (runtime set-up): syncs are reported to it. */
void eddy__durable_pool_ready(eddy_runtime *rt);

/*
 * Decoding of what the store hands back (untrusted: the file may be damaged).
 * Each returns EDDY_OK with *out new, or EDDY_ESTATE (nothing to free) when
 * the text does not decode as that kind of record, or EDDY_ENOMEM (nothing
 * to free) when jansson's parser ran out of memory (util/jalloc.h): the
 * record may well be good. Pure; the fuzz target
 * tests/fuzz/fuzz_store.c calls them directly.
 *   done     a completion record: {"order": int >= 0, "events": [{"type":
 *            non-empty string, "id": 16 hex digits, "attrs": object}...],
 *            "stm": update log?, "sensory": update log?}
 *   result   a durable call's journaled result: any JSON value ("null" too)
 *   pending  a pending input: a JSON object
 *   memory   a key's short-term memory: a JSON object
 */
int eddy__durable_decode_done(const char *payload, json_t **rec);
int eddy__durable_decode_result(const char *payload, json_t **result);
int eddy__durable_decode_pending(const char *record_json, json_t **record);
int eddy__durable_decode_memory(const char *stm_json, json_t **stm);
/* Apply the memory writes of a decoded completion record to the trees (in
 * force mode, as recovery does): EDDY_OK, EDDY_ENOMEM, or EDDY_ESTATE when
 * the logs are not update logs. */
int eddy__durable_apply_done(const json_t *rec, json_t *stm, json_t *sensory);

/* Free a recovered journal. */
void eddy__journal_free(eddy__journal *j);

#endif /* EDDY_EXEC_DURABLE_H */
