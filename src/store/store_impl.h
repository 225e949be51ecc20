/*
 * For implementations of the state store interface (store.h) only; the users
 * of a store include store.h alone.
 *
 * An implementation allocates its own object whose first member is a
 * struct eddy__store with ops pointing at its (static, constant) operation
 * table, and casts back in its operations. The dispatching functions in
 * store.c check the arguments that every implementation would check (NULL
 * pointers, a journal record's required fields), so that the operations can
 * assume them; everything else (error text, transactions) is the
 * implementation's.
 */
#ifndef EDDY_STORE_STORE_IMPL_H
#define EDDY_STORE_STORE_IMPL_H

#include "store/store.h"

/* One function per eddy__store_* operation, same meaning and arguments. */
struct eddy__store_ops {
    const char *name; /* "sqlite": for messages and inspect */
    void (*close)(eddy__store *s);
    const char *(*error)(const eddy__store *s);
    int (*dirty)(const eddy__store *s);
    int (*commit)(eddy__store *s);
    /* Optional, all three or none: split_commit says whether this store
     * (as opened) splits its commits; then commit_nosync leaves the disk
     * sync to sync(), which must be safe on another thread while the
     * mailbox goes on using the store (see eddy__store_sync). */
    int (*split_commit)(const eddy__store *s);
    int (*commit_nosync)(eddy__store *s);
    int (*sync)(eddy__store *s);
    /* Optional: what the store keeps of its syncs outside the sync's own
     * latency (see eddy__store_sync_note); any thread, as sync. */
    void (*sync_note)(eddy__store *s);

    int (*get_source_pos)(eddy__store *s, uint64_t *offset, uint64_t *line);
    int (*set_source_pos)(eddy__store *s, uint64_t offset, uint64_t line);
    int (*get_sink_pos)(eddy__store *s, uint64_t *offset);
    int (*set_sink_pos)(eddy__store *s, uint64_t offset);
    int (*get_meta_u64)(eddy__store *s, const char *name, uint64_t *value);
    int (*set_meta_u64)(eddy__store *s, const char *name, uint64_t value);
    int (*get_meta_text)(eddy__store *s, const char *name, char **value);
    int (*set_meta_text)(eddy__store *s, const char *name, const char *value);

    int (*keys_load)(eddy__store *s, eddy__store_key_fn fn, void *arg);
    int (*key_put)(eddy__store *s, const char *key, uint64_t next_seq, const char *stm_json);
    int (*key_get)(eddy__store *s, const char *key, uint64_t *next_seq, char **stm_json);

    int (*pending_add)(eddy__store *s, const char *key, uint64_t seq, uint64_t line_no,
                       const char *record_json);
    int (*pending_remove)(eddy__store *s, const char *key, uint64_t seq);
    int (*pending_load)(eddy__store *s, eddy__store_pending_fn fn, void *arg);

    int (*journal_put)(eddy__store *s, const eddy__jrec *rec);
    int (*journal_cut)(eddy__store *s, const char *key, uint64_t seq, const char *event_id,
                       const char *action, int64_t from_idx);
    int (*journal_load_run)(eddy__store *s, const char *key, uint64_t seq, eddy__store_jrec_fn fn,
                            void *arg);
    int (*journal_load_all)(eddy__store *s, eddy__store_jrec_fn fn, void *arg);
    int (*journal_prune_run)(eddy__store *s, const char *key, uint64_t seq);

    int (*outbox_add)(eddy__store *s, const char *line, size_t len, uint64_t *id);
    int (*outbox_load)(eddy__store *s, eddy__store_outbox_fn fn, void *arg);
    int (*outbox_ack)(eddy__store *s, uint64_t up_to);

    int (*counts_get)(eddy__store *s, eddy__store_counts *out);
};

/* The head of every store object. */
struct eddy__store {
    const struct eddy__store_ops *ops;
};

/* The embedded SQLite store (sqlite_store.c); arguments and errors as
 * eddy__store_open(), which calls it with checked arguments. */
int eddy__store_sqlite_open(eddy__store **out, const char *dir, const char *plan_fingerprint,
                            const char *plan_actions, eddy_error **err);

#ifdef EDDY_TEST_HOOKS
/* Tests only: run sql on the SQLite store's connection (for example
 * "PRAGMA query_only=1" or "PRAGMA max_page_count=N" to provoke write
 * failures). EDDY_OK or EDDY_ESTORE with the store's error set. */
int eddy__store_sqlite_test_exec(eddy__store *s, const char *sql);
/* Tests only: sparse journal rows are compacted once they hold more than
 * bytes in all (default 4 MiB; 0: at once). */
void eddy__store_sqlite_test_compact_slack(eddy__store *s, size_t bytes);
/* Tests only: fn(arg) runs, in the check of the WAL's index before an open,
 * between the index's header being read and the WAL's size being taken
 * (NULL: none). */
void eddy__store_sqlite_test_index_hook(void (*fn)(void *), void *arg);
#endif

#endif /* EDDY_STORE_STORE_IMPL_H */
