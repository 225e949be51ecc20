/*
 * State store: the durable state of one operator (or, later, of one partition).
 *
 * Design notes
 * ------------
 * The store is an interface so that a distributed deployment can keep state
 * per partition and move it with the partition; nothing here assumes that one
 * process owns every key. This file declares the interface; store.c dispatches
 * through a table of operations (store_impl.h, for implementations). The one
 * implementation so far is the embedded SQLite store (sqlite_store.c), which
 * eddy__store_open() opens.
 *
 * Everything runs on the mailbox thread, except eddy__store_sync(). Writes go
 * into one open transaction (begun implicitly by the first write);
 * eddy__store_commit() commits it and makes it durable (one fdatasync). The
 * operator commits once per loop turn (group commit): never one fsync per
 * record. It splits the commit in two, so that the mailbox does not wait for
 * the disk: eddy__store_commit_nosync() orders the transaction after the
 * earlier ones and makes it survive the death of the process, and
 * eddy__store_sync(), on a thread of its own, makes every transaction
 * committed so far survive the death of the machine too.
 *
 * What is stored (all JSON as compact text):
 *   meta     format version, plan fingerprint ("plan"; and the plan's actions
 *            with their event types, "plan_actions", which older states lack),
 *            source position (byte offset and
 *            line number of the next unread line), sink position (committed
 *            length of the output file), the outbox's next id, the run counter
 *            ("next_run": the next run's sequence number, for all keys), the key
 *            field (a hash, "key_field"; and its name, "key_field_name",
 *            which older states lack), the number of commits ("commits",
 *            which older states lack: 0; DIR/LOCK says how many were made
 *            durable, see sqlite_store.c, lock_mark)
 *   keys     per key that has short-term memory: the memory as of the end of its
 *            last run that changed it, and the run counter at that time (states
 *            of format 2 kept each key's own counter here; the runtime now
 *            keeps one counter for all keys in meta, "next_run")
 *   inputs   per key FIFO of admitted inputs (the head is the run in flight),
 *            in arrival order across keys: one row per commit's admissions
 *            still pending, rows in id order
 *   journal  per action execution: durable call records, and when it finished,
 *            its completion record (released events, memory writes, completion
 *            ordinal), or when it failed under --on-error skip, its failure
 *            record (the run's failure); keyed (key, run seq, triggering event
 *            id, action, index).
 *            Stored as a log (jlog.h): the records of one transaction are one
 *            row. A journal load shows the records of the runs not pruned:
 *            for an open store, those in flight at open (the heads of the
 *            pending FIFOs) and those written since; read-only, those with a
 *            pending input.
 *   outbox   outputs committed but not yet covered by the sink position; one
 *            row per commit, its lines joined by newlines, keyed by the id
 *            of its last line
 *
 * Errors: every function returns EDDY_OK or an error code; store failures are
 * EDDY_ESTORE with text in the store's last error (eddy__store_error()), which
 * names the database file, the operation and the cause ("disk full",
 * "read-only", "I/O error", ...). NULL where a pointer is required gives
 * EDDY_EINVAL and changes nothing.
 *
 * A store failure while a transaction is open (a write, the commit, or a read
 * inside it) rolls the whole transaction back: its earlier writes are lost
 * too, so a group is committed entirely or not at all. From then on the store
 * is failed: every write and commit returns EDDY_ESTORE (the error text keeps
 * the first cause) until it is closed and reopened; reads still work. The
 * caller is expected to stop cleanly and reopen (or restart).
 *
 * Callbacks of the load functions get borrowed strings (and journal records)
 * valid only during the callback. A callback may write to the store; calling
 * the same load again from its own callback fails with EDDY_ESTATE.
 */
#ifndef EDDY_STORE_STORE_H
#define EDDY_STORE_STORE_H

#include <stdint.h>

#include "eddy/eddy.h"

/* Format 7: a run that failed under --on-error skip has a FAILED record
 * (EDDY_JREC_FAILED), committed with its dead letter; a rerun ends such a
 * run without running its actions. An older eddy would take the run up and
 * dead-letter its input again, so the version changes; a state of format 6
 * holds no such record and is upgraded by the version alone.
 * Format 6: journal entries with varint integers and lengths ('p', see
 * store/jlog.h); the 'P' entries of formats 2 to 5 are read as they are.
 * Format 5: pending inputs in rows of the inputs table, one per commit's
 * admissions (formats 2 to 4: a row of the pending table per input).
 * Format 4: an outbox row holds the lines of one commit, joined by
 * newlines, under the id of its last line (before: a row per line).
 * Format 3: one run counter for all keys in meta ("next_run"), key rows
 * written only when their memory changes (format 2 kept one per key,
 * written at every run's end). Formats 2 to 6 are read and upgraded in
 * place (the version changes, so that an older eddy no longer takes a state
 * that may hold 'p' entries or FAILED records); formats 2 to 4's pending rows become rows of
 * inputs, in the same order; an older outbox row is a row of one line; the run counter starts
 * past every key's own. An inspection reads them as they are. */
#define EDDY_STORE_FORMAT_VERSION 7
#define EDDY_STORE_FORMAT_OLDEST  2

/* Journal record kinds and call status. */
enum {
    EDDY_JREC_CALL = 1,  /* a durable call at position idx (0, 1, ...) */
    EDDY_JREC_DONE = 2,  /* the action execution finished; idx is -1 */
    EDDY_JREC_FAILED = 3 /* the action execution failed and its run with it (--on-error skip:
                            the input was dead-lettered in the same transaction); idx is -2
                            (not the DONE record's -1: a record's identity does not include
                            its kind, and one must never replace the other), err_type and
                            err_msg say why (format 7) */
};
enum {
    EDDY_JCALL_OK = 1,     /* payload: the result as JSON text ("null" allowed) */
    EDDY_JCALL_ERROR = 2,  /* err_type and err_msg set; payload may carry extra data */
    EDDY_JCALL_PENDING = 3 /* journaled before a reconciled call ran */
};

typedef struct eddy__jrec {
    const char *key;      /* key JSON text */
    uint64_t seq;         /* run sequence number of the key */
    const char *event_id; /* id of the triggering event (16 hex digits) */
    const char *action;   /* action name */
    int64_t idx;          /* call index, or -1 for the completion record */
    int kind;             /* EDDY_JREC_* */
    int status;           /* EDDY_JCALL_* for calls; 0 for DONE and FAILED */
    const char *fn_id;    /* calls: function id */
    const char *digest;   /* calls: digest of the canonical args (hex) */
    const char *payload;  /* calls: result JSON; DONE: completion JSON */
    const char *err_type; /* calls with status ERROR; FAILED */
    const char *err_msg;
    /* Optional: where the caller keeps the store's handle of the run
     * (key, seq) between its puts, so that the store finds the run without
     * a lookup. NULL at first (the put fills it in); valid until the run is
     * pruned (eddy__store_journal_prune_run), when the caller must clear it. */
    void **run;
} eddy__jrec;

typedef struct eddy__store eddy__store;

/*
 * Open (creating when absent) the store in directory dir (created with mode
 * 0700; its parent must exist). Takes an exclusive lock (flock on dir/LOCK,
 * held until close): a second opener, in another process or in this one,
 * gets EDDY_EBUSY. A store with another format version or another plan
 * fingerprint is refused with EDDY_ESTATE, without being changed; a file that
 * is not a database, is corrupted or holds something else gives EDDY_ESTORE,
 * as do a directory that cannot be created and SQLite failures.
 * EDDY_EINVAL when dir is NULL or empty or plan_fingerprint NULL.
 * On failure *out is NULL and *err (new, when err is not NULL) names the
 * directory or file and the cause.
 *
 * plan_actions (borrowed; NULL to leave what the store holds) describes the
 * plan (eddy__plan_describe). The fingerprint alone decides; the description
 * is kept beside it, written when the store is made and when a store of the
 * same fingerprint lacks it (an older eddy made the store) or holds another
 * text, so that the refusal of another plan can say what differs
 * (eddy__plan_differences). An older eddy never reads it, so it needs no new
 * format version.
 */
int eddy__store_open(eddy__store **out, const char *dir, const char *plan_fingerprint,
                     const char *plan_actions, eddy_error **err);
/* plan_fingerprint NULL opens an existing store read-only for inspection: no
 * lock (it may run beside the eddy process that owns dir), any plan;
 * EDDY_ENOTFOUND when dir holds no state. Writes then fail. */
/* Roll back any open transaction, close and unlock. NULL is a no-op. */
void eddy__store_close(eddy__store *s);
/* Text of the last store failure (borrowed, "" when none). */
const char *eddy__store_error(const eddy__store *s);

/* 1 when writes are waiting to be committed. */
int eddy__store_dirty(const eddy__store *s);
/* Commit the open transaction (no-op when none). EDDY_ESTORE when the commit
 * fails (the transaction is rolled back) or the store has failed. */
int eddy__store_commit(eddy__store *s);

/* Commit the open transaction without waiting for the disk (see above); as
 * eddy__store_commit otherwise. A store that cannot split its commit
 * commits durably here. */
int eddy__store_commit_nosync(eddy__store *s);

/* 1 when eddy__store_commit_nosync() leaves work to eddy__store_sync(). */
int eddy__store_split_commit(const eddy__store *s);

/* Make every transaction committed so far durable. The one store function
 * that may run on another thread, also while the mailbox thread uses the
 * store. EDDY_OK, or EDDY_ESTORE with errno set (the store's error text is
 * not touched: the caller reports it, on the mailbox thread). */
int eddy__store_sync(eddy__store *s);

/* After a successful eddy__store_sync(), once its waiters were told: what
 * the store records of the sync for later opens (the SQLite store: the
 * count of commits made durable, in DIR/LOCK) goes out here, off the
 * sync's latency. Any thread, as eddy__store_sync(); skipping it only
 * weakens what a later open can check. */
void eddy__store_sync_note(eddy__store *s);

/* meta */
int eddy__store_get_source_pos(eddy__store *s, uint64_t *offset, uint64_t *line);
int eddy__store_set_source_pos(eddy__store *s, uint64_t offset, uint64_t line);
int eddy__store_get_sink_pos(eddy__store *s, uint64_t *offset);
int eddy__store_set_sink_pos(eddy__store *s, uint64_t offset);

/* Other positions kept in meta under a name (for example "dead_offset");
 * an absent name reads as 0. */
int eddy__store_get_meta_u64(eddy__store *s, const char *name, uint64_t *value);
int eddy__store_set_meta_u64(eddy__store *s, const char *name, uint64_t value);
/* Text kept in meta under a name (for example "key_field_name"). *value is
 * new (free()), NULL when the name is absent. A name that an older eddy does
 * not know is one it never reads: adding one needs no new format version. */
int eddy__store_get_meta_text(eddy__store *s, const char *name, char **value);
int eddy__store_set_meta_text(eddy__store *s, const char *name, const char *value);

/* keys: callback returns EDDY_OK to go on, anything else stops and is returned.
 * keys_load goes in key order (bytewise). */
typedef int (*eddy__store_key_fn)(void *arg, const char *key, uint64_t next_seq,
                                  const char *stm_json);
int eddy__store_keys_load(eddy__store *s, eddy__store_key_fn fn, void *arg);
int eddy__store_key_put(eddy__store *s, const char *key, uint64_t next_seq, const char *stm_json);
/* One key (for inspect); EDDY_ENOTFOUND when absent. *stm_json is new (free()). */
int eddy__store_key_get(eddy__store *s, const char *key, uint64_t *next_seq, char **stm_json);

/* pending inputs, loaded in arrival order */
typedef int (*eddy__store_pending_fn)(void *arg, const char *key, uint64_t seq, uint64_t line_no,
                                      const char *record_json);
int eddy__store_pending_add(eddy__store *s, const char *key, uint64_t seq, uint64_t line_no,
                            const char *record_json);
/* Removing an entry that is not there is not an error. */
int eddy__store_pending_remove(eddy__store *s, const char *key, uint64_t seq);
int eddy__store_pending_load(eddy__store *s, eddy__store_pending_fn fn, void *arg);

/* journal */
typedef int (*eddy__store_jrec_fn)(void *arg, const eddy__jrec *rec);
/* Insert or replace the record at (key, seq, event_id, action, idx).
 * EDDY_EINVAL unless key, event_id and action are set and either kind is
 * CALL with idx >= 0 and a valid status, or kind is DONE or FAILED with
 * idx -1.
 * The other strings may be NULL (stored as NULL, loaded as NULL). */
int eddy__store_journal_put(eddy__store *s, const eddy__jrec *rec);
/* Delete the call records of one action execution with idx >= from_idx.
 * The completion record (idx -1) is not a call record and stays. */
int eddy__store_journal_cut(eddy__store *s, const char *key, uint64_t seq, const char *event_id,
                            const char *action, int64_t from_idx);
/* Every record of one run, ordered by (event_id, action, idx). */
int eddy__store_journal_load_run(eddy__store *s, const char *key, uint64_t seq,
                                 eddy__store_jrec_fn fn, void *arg);
/* Every record of every run (for inspect), ordered by key, seq, event_id, action, idx. */
int eddy__store_journal_load_all(eddy__store *s, eddy__store_jrec_fn fn, void *arg);
/* Delete every record of one run. */
int eddy__store_journal_prune_run(eddy__store *s, const char *key, uint64_t seq);

/* outbox: outputs committed and not yet acknowledged by the sink position */
typedef int (*eddy__store_outbox_fn)(void *arg, uint64_t id, const char *line, size_t len);
/* Append a line (it holds no newline byte: EDDY_EINVAL; it may hold NUL
 * bytes; NULL allowed when len is 0); *id receives its id: 1, 2, ..., increasing for the store's
 * life even after every line was acknowledged. Ids of a rolled-back transaction may be handed out
 * again. The callback's line is not NUL-terminated. */
int eddy__store_outbox_add(eddy__store *s, const char *line, size_t len, uint64_t *id);
int eddy__store_outbox_load(eddy__store *s, eddy__store_outbox_fn fn, void *arg);
/* Delete every line with id <= up_to. */
int eddy__store_outbox_ack(eddy__store *s, uint64_t up_to);

/* Counts for inspect and tests. */
typedef struct eddy__store_counts {
    uint64_t keys, pending, journal, outbox;
} eddy__store_counts;
int eddy__store_counts_get(eddy__store *s, eddy__store_counts *out);

#endif /* EDDY_STORE_STORE_H */
