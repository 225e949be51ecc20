/*
 * Durable execution: the journal of action executions, group commit, the
 * output outbox and crash recovery, on top of the state store.
 *
 * Design notes
 * ------------
 * Everything runs on the mailbox thread. Without a state directory
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
 *
 * Group commit: writes accumulate in one open transaction; the prepare phase
 * of the loop commits it (one fsync) when a task waits for it, when it is
 * older than commit-interval-ms, or when the loop would otherwise block.
 */
#ifndef EDDY_EXEC_DURABLE_H
#define EDDY_EXEC_DURABLE_H

#include "exec/runtime.h"

/* Open the state store, recover and open the sinks. Without a state directory
 * only opens the sinks. */
int eddy__durable_open(eddy_runtime *rt, const char *fingerprint, eddy_error **err);
/* Start the runs that were in flight at the crash (after the runtime is set up). */
void eddy__durable_resume(eddy_runtime *rt);
/* Close the store (after a final commit when clean). */
void eddy__durable_close(eddy_runtime *rt);

/* An input was admitted for key k with sequence number in->seq. */
void eddy__durable_admit(eddy_runtime *rt, eddy__key *k, const eddy__input *in);
/* The source position after the last admitted or dead-lettered line. */
void eddy__durable_source_pos(eddy_runtime *rt, uint64_t offset, uint64_t line);

/* Before a task first runs: when the journal says its action execution
 * already finished, queue its recorded events on t->sent and return 1. */
int eddy__durable_replay_finished(eddy_runtime *rt, eddy_ctx *t);
/* A task finished successfully: journal its completion record. */
void eddy__durable_task_done(eddy_runtime *rt, eddy_ctx *t);
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
 * Decoding of what the store hands back (untrusted: the file may be damaged).
 * Each returns EDDY_OK with *out new, or EDDY_ESTATE (nothing to free) when
 * the text does not decode as that kind of record. Pure; the fuzz target
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
