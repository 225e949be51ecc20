/*
 * The embedded state store: one SQLite database (WAL) in the state directory,
 * guarded by an flock on DIR/LOCK. Commits are split (store.h, wal_open()):
 * synchronous=NORMAL, and our own fdatasync of the WAL. The writing
 * connection goes through the VFS of walvfs.c, which writes each commit's
 * WAL frames with one write(2) instead of two per page.
 *
 * Every statement is prepared once at open and reused; only open runs SQL text
 * that it compiles on the spot (PRAGMAs, schema, checks).
 *
 * Transactions: the first write after a commit runs BEGIN IMMEDIATE; commit
 * runs COMMIT. When anything fails while a transaction is open (a write, the
 * commit, or a read inside it), the whole transaction is rolled back and the
 * store refuses further writes and commits until it is reopened ("failed"):
 * the caller's group of writes is never committed in part, and a caller that
 * ignored an error cannot commit a later group on top of a hole.
 *
 * Unsigned 64-bit numbers are stored as SQLite's signed integers (the same
 * bits); ordering by seq or outbox id is right below 2^63.
 *
 * Not done: PRAGMA quick_check at open. It reads the whole database, so open
 * time would grow with the journal; corruption still surfaces as EDDY_ESTORE
 * on the first access to a damaged page.
 *
 * The journal is a log, one row per commit (see "journal" below and jlog.h).
 *
 * Measured with the journal as a table keyed by text (format 1; throwaway
 * program, ext4 on a virtio disk of a 2-vCPU VM): 145k-215k records/s in
 * group commits of 1000, 16k-28k when every record was on another key
 * (each commit dirtied ~1000 b-tree pages); the log removes both costs (W4
 * in docs/performance.md). One commit's fdatasync: ~85 us when the WAL's
 * blocks exist (see wal_open), ~200 us while the file grows, up to 20 ms at
 * times; on a disk that honours flushes expect milliseconds, hence group
 * commit and the syncer thread.
 */
#include <assert.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "core/error.h"
#include "core/plan.h"
#include "io/paths.h"
#include "store/jlog.h"
#include "store/store_impl.h"
#include "store/walvfs.h"
#include "util/fault.h"
#include "util/forkfd.h"
#include "util/le.h"
#include "util/map.h"
#include "util/vec.h"

/* Meta values one transaction sets, kept until its commit: 14 names exist,
 * commits among them (more would be written at once). */
#define META_DUE_MAX 16
#define OPEN_BUSY_MS 5000 /* how long opening waits for an `eddy inspect` (configure) */
#define BUSY_WAIT_MS 2000 /* how long a write waits for another connection's lock (on_busy) */

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_META_GET,
    ST_META_SET,
    ST_KEY_PUT,
    ST_KEY_GET,
    ST_KEYS_LOAD,
    ST_INPUTS_INSERT,
    ST_INPUTS_UPDATE,
    ST_INPUTS_DELETE,
    ST_INPUTS_ALL,
    ST_JLOG_INSERT,
    ST_JLOG_DELETE,
    ST_JLOG_GET,
    ST_JLOG_ALL,
    ST_OUTBOX_INSERT,
    ST_OUTBOX_LOAD,
    ST_OUTBOX_ACK,
    ST_OUTBOX_NEXT_ROW,
    ST_OUTBOX_REWRITE,
    ST_COUNTS,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT v FROM meta WHERE k = ?1",
    [ST_META_SET] = "INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = "
                    "excluded.v",
    [ST_KEY_PUT] = "INSERT INTO keys(key, next_seq, stm) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO "
                   "UPDATE SET next_seq = excluded.next_seq, stm = excluded.stm",
    [ST_KEY_GET] = "SELECT next_seq, stm FROM keys WHERE key = ?1",
    [ST_KEYS_LOAD] = "SELECT key, next_seq, stm FROM keys ORDER BY key",
    [ST_INPUTS_INSERT] = "INSERT INTO inputs(id, data) VALUES (?1, ?2)",
    [ST_INPUTS_UPDATE] = "UPDATE inputs SET data = ?2 WHERE id = ?1",
    [ST_INPUTS_DELETE] = "DELETE FROM inputs WHERE id = ?1",
    [ST_INPUTS_ALL] = "SELECT id, data FROM inputs ORDER BY id",
    [ST_JLOG_INSERT] = "INSERT INTO jlog(id, data) VALUES (?1, ?2)",
    [ST_JLOG_DELETE] = "DELETE FROM jlog WHERE id = ?1",
    [ST_JLOG_GET] = "SELECT data FROM jlog WHERE id = ?1",
    [ST_JLOG_ALL] = "SELECT id, data FROM jlog ORDER BY id",
    [ST_OUTBOX_INSERT] = "INSERT INTO outbox(id, line) VALUES (?1, ?2)",
    [ST_OUTBOX_LOAD] = "SELECT id, line FROM outbox ORDER BY id",
    [ST_OUTBOX_ACK] = "DELETE FROM outbox WHERE id <= ?1",
    [ST_OUTBOX_NEXT_ROW] = "SELECT id, line FROM outbox WHERE id > ?1 ORDER BY id LIMIT 1",
    [ST_OUTBOX_REWRITE] = "UPDATE outbox SET line = ?2 WHERE id = ?1",
    [ST_COUNTS] = "SELECT count(*) FROM keys",
};

#define INPUTS_TABLE_SQL "CREATE TABLE inputs(id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
/* The pending table of formats 2 to 4 is there (see legacy_convert). */
#define LEGACY_PENDING_SQL \
    "SELECT count(*) FROM main.sqlite_master WHERE type = 'table' AND name = 'pending'"

static const char schema_sql[] =
    "CREATE TABLE meta(k TEXT PRIMARY KEY, v);"
    "CREATE TABLE keys(key TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, stm TEXT NOT NULL)"
    " WITHOUT ROWID;" INPUTS_TABLE_SQL ";"
    "CREATE TABLE jlog(id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
    "CREATE TABLE outbox(id INTEGER PRIMARY KEY, line BLOB NOT NULL);"
    "INSERT INTO meta(k, v) VALUES ('source_offset', 0), ('source_line', 0),"
    " ('sink_offset', 0), ('outbox_next', 1);";

typedef struct sqlite_store {
    eddy__store base;
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    int lock_fd;
    int dir_fd;              /* the directory, flock'ed too: LOCK may be removed under a run */
    struct live_state *live; /* this state among those the process has open */
    /* The WAL, opened by us too: fdatasync of it makes every commit made so
     * far durable (the connection then runs synchronous=NORMAL, in which
     * COMMIT writes the WAL without syncing it). -1: synchronous=FULL, and
     * each COMMIT syncs. Set at open, constant until close: sq_sync reads it
     * on the syncing thread. */
    int wal_fd;
    /* The errno of the first failed fdatasync of the WAL, then every later
     * sync fails with it: Linux reports a lost write-back once per open
     * file, so a later fdatasync that returns 0 proves nothing about the
     * commits before it. Set and read on both syncing threads. */
    atomic_int sync_err;
    /* Syncs are made one at a time: the syncer's and the mailbox's own (a
     * Python durable_execute settling its run) would otherwise overlap, and
     * the one the kernel tells of a lost write-back could return after the
     * other had returned 0 and let its caller go on. */
    uv_mutex_t sync_lock;
    int sync_lock_ok;
    /* The state's commits (meta commits, see lock_mark): as of the last
     * COMMIT, on the mailbox thread; and published for the syncing threads
     * once that COMMIT is in the WAL. */
    uint64_t commits;
    atomic_uint_least64_t commits_written;
    /* LOCK's synced line: whether this store writes it (it holds the lock
     * and LOCK is marked; set at open), the count it holds, as read at
     * open, then as last written, and the count the syncs made durable,
     * to be written (sq_sync_note; both under sync_lock). */
    int lock_line;
    uint64_t lock_synced;
    uint64_t lock_due;
    int in_tx; /* BEGIN done, COMMIT not yet */
    /* The journal log (jlog.h, and "journal" below): */
    eddy__buf jbuf;    /* entries written in the open transaction */
    struct jrun **txn; /* runs with entries in jbuf */
    size_t ntxn, captxn;
    eddy__map runs;     /* run key (run_key) -> struct jrun: its rows */
    eddy__map pend;     /* run key (run_key) -> struct pend: a pending input's place */
    eddy__map rows;     /* row id (8 bytes) -> struct jrow */
    uint64_t jlog_next; /* id of the next row */
    uint64_t *sparse;   /* rows where few runs are left (or were: gone since) */
    size_t nsparse, capsparse;
    size_t sparse_live;    /* of them, rows still there */
    size_t sparse_bytes;   /* their size */
    size_t compact_slack;  /* sparse_bytes compaction waits for (COMPACT_SLACK) */
    int jlog_ready;        /* runs and rows describe the table (not read-only) */
    uint64_t jlog_opened;  /* the last row there at open (see jrun.opened) */
    int failed;            /* see the design notes: writes refused until reopened */
    uint64_t outbox_next;  /* the id the next outbox line gets */
    uint64_t outbox_saved; /* outbox_next as last written to meta */
    /* Meta values set in the open transaction, written by its commit in one
     * statement (meta_flush); meta_set[n] is the statement for n values. */
    struct {
        char k[24];
        uint64_t v;
    } meta_due[META_DUE_MAX];
    int nmeta_due;
    sqlite3_stmt *meta_set[META_DUE_MAX + 1];
    /* Rows of pending inputs (see "pending") and the outbox lines of the
     * open transaction, written by its commit (see "rows written at the
     * commit"). */
    struct prow *prows;  /* every row of pending inputs in memory */
    struct prow **fresh; /* rows of this transaction's admissions */
    size_t nfresh, capfresh;
    struct prow **touched; /* written rows where a run ended since */
    size_t ntouched, captouched;
    eddy__buf repack;      /* scratch of prow_pack */
    eddy__buf dout;        /* the lines, joined by newlines */
    uint64_t dout_id;      /* the id of the first */
    size_t ndout;          /* how many */
    uint64_t pend_next;    /* the id the next row of pending inputs gets */
    eddy__buf scratch_cut; /* an outbox row cut by an acknowledgement */
    char *dir;
    char *db_path;
    char errmsg[1024];
} sqlite_store;

static const struct eddy__store_ops sqlite_ops;
static void txn_reset(sqlite_store *s);
static void rows_reset(sqlite_store *s);
static int rows_flush(sqlite_store *s);
static int cmp_u64(const void *a, const void *b);
static int jlog_flush(sqlite_store *s);
static size_t run_key(char *o, size_t cap, const char *key, uint64_t seq);
static void *map_get_run(const eddy__map *m, const char *key, uint64_t seq, int *oom);
static int oom(sqlite_store *s, const char *what);
static void lock_record(sqlite_store *s, uint64_t commits);
static void sq_sync_note(eddy__store *base);

/* ---------------------------------------------------------------- errors */

/* Words for the failures a user can act on; the rest get SQLite's text. */
static const char *rc_words(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return "disk full";
    case SQLITE_IOERR:
        return "I/O error";
    case SQLITE_READONLY:
        return "read-only (file system, file or directory not writable)";
    case SQLITE_CANTOPEN:
        return "cannot open a database file";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "database locked by another connection";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "database corrupted";
    case SQLITE_NOMEM:
        return "out of memory";
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return "permission denied";
    case SQLITE_CONSTRAINT:
        return "constraint violated";
    default:
        return sqlite3_errstr(rc);
    }
}

/*
 * What the OS said of a failure rc, as ": FILE: strerror" to append to a
 * message, or "" when it is not known: SQLite's words for a full disk met
 * while sizing the shared-memory index are "disk I/O error", and only the
 * errno tells ENOSPC from EIO. Two sources. SQLite keeps the errno of an
 * I/O error or a file it could not open that it recorded as the
 * connection's last error (sqlite3_system_errno; the index is named, since
 * SQLite names no file), but not of one met by a COMMIT. And the writing
 * connection's WAL goes through walvfs.c, which keeps the errno of its
 * failed write (ENOSPC for SQLITE_FULL), the failure of every later access
 * to the WAL.
 */
static const char *os_error(sqlite3 *db, const char *db_path, int rc, char *buf, size_t cap)
{
    int e = 0, shm = 0;
    buf[0] = '\0';
    if (db == NULL)
        return buf;
    if (((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN) &&
        sqlite3_extended_errcode(db) == rc) {
        e = sqlite3_system_errno(db);
        shm = rc == SQLITE_IOERR_SHMOPEN || rc == SQLITE_IOERR_SHMSIZE ||
              rc == SQLITE_IOERR_SHMMAP || rc == SQLITE_IOERR_SHMLOCK;
    }
    if (e > 0) {
        if (shm)
            snprintf(buf, cap, ": %s-shm: %s", db_path, strerror(e));
        else
            snprintf(buf, cap, ": %s", strerror(e));
    } else if (((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL) &&
               (e = eddy__walvfs_errno(db)) > 0) {
        snprintf(buf, cap, ": %s-wal: %s", db_path, strerror(e));
    }
    return buf;
}

/* Roll back an open transaction and mark the store failed. Appends to errmsg
 * when the rollback fails too. */
static void abort_tx(sqlite_store *s)
{
    if (!s->in_tx)
        return;
    s->in_tx = 0;
    s->failed = 1;
    s->nmeta_due = 0;
    txn_reset(s); /* the journal entries of the transaction go with it */
    rows_reset(s);
    if (sqlite3_get_autocommit(s->db))
        return; /* SQLite already rolled it back */
    sqlite3_stmt *rb = s->st[ST_ROLLBACK];
    int rc = sqlite3_step(rb);
    if (rc != SQLITE_DONE) {
        size_t n = strlen(s->errmsg);
        snprintf(s->errmsg + n, sizeof(s->errmsg) - n, "; the rollback failed too: %s",
                 sqlite3_errmsg(s->db));
    }
    sqlite3_reset(rb);
}

/* Record a failure of operation what (rc from SQLite), reset st (may be
 * NULL), abort an open transaction. Returns EDDY_ESTORE. */
static int fail(sqlite_store *s, sqlite3_stmt *st, int rc, const char *what)
{
    /* SQLite's message belongs to its last error, which may be another one
     * (a simulated one in tests): then its generic text for rc. */
    const char *msg =
        sqlite3_extended_errcode(s->db) == rc ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    char os[512];
    snprintf(s->errmsg, sizeof(s->errmsg), "%s failed on %s: %s (%s)%s", what, s->db_path,
             rc_words(rc), msg, os_error(s->db, s->db_path, rc, os, sizeof(os)));
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    abort_tx(s);
    return EDDY_ESTORE;
}

static void finish(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* ---------------------------------------------------------------- statement helpers */

static int bind_text(sqlite3_stmt *st, int i, const char *text)
{
    if (text == NULL)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
}

static int bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    return sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    return (uint64_t)sqlite3_column_int64(st, i);
}

/* NULL for SQL NULL. Text is stored UTF-8, so SQLite hands out its own buffer
 * without converting (and without allocating). */
static const char *col_text(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return NULL;
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t != NULL ? t : "";
}

/* Column i of st as a user may read it in a message: an integer or a real
 * as a number, text quoted (unless quote is 0: a key, whose JSON text reads
 * as such) with its bytes outside printable ASCII escaped, a blob as x'..',
 * each cut after a few dozen bytes. */
static const char *value_words_q(sqlite3_stmt *st, int i, char *buf, size_t cap, int quote)
{
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL)
        return "NULL";
    if (type == SQLITE_INTEGER) {
        snprintf(buf, cap, "%lld", (long long)sqlite3_column_int64(st, i));
        return buf;
    }
    if (type == SQLITE_FLOAT) {
        snprintf(buf, cap, "%.17g (a real)", sqlite3_column_double(st, i));
        return buf;
    }
    const unsigned char *p =
        type == SQLITE_BLOB ? sqlite3_column_blob(st, i) : sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i), max = 40, at = 0;
    at += (size_t)snprintf(buf, cap, type == SQLITE_BLOB ? "x'" : quote ? "'" : "");
    for (size_t j = 0; j < n && j < max && p != NULL && at + 8 < cap; j++) {
        unsigned char c = p[j];
        if (type == SQLITE_BLOB)
            at += (size_t)snprintf(buf + at, cap - at, "%02x", c);
        else if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
            buf[at++] = (char)c;
        else
            at += (size_t)snprintf(buf + at, cap - at, "\\x%02x", c);
    }
    snprintf(buf + at, cap - at, "%s%s%s", type == SQLITE_BLOB || quote ? "'" : "",
             type == SQLITE_BLOB ? " (a blob)" : "", n > max ? " (cut)" : "");
    return buf;
}

static const char *value_words(sqlite3_stmt *st, int i, char *buf, size_t cap)
{
    return value_words_q(st, i, buf, cap, 1);
}

/* Begin the implicit transaction unless one is open. */
static int write_begin(sqlite_store *s)
{
    if (s->failed)
        return EDDY_ESTORE; /* errmsg still tells why */
    if (s->in_tx)
        return EDDY_OK;
    int rc = sqlite3_step(s->st[ST_BEGIN]);
    if (rc != SQLITE_DONE)
        return fail(s, s->st[ST_BEGIN], rc, "begin transaction");
    sqlite3_reset(s->st[ST_BEGIN]);
    s->in_tx = 1;
    return EDDY_OK;
}

/* Step a bound write statement (rc: the binding result) to completion. */
static int write_step(sqlite_store *s, sqlite3_stmt *st, int rc, const char *what)
{
    if (rc == SQLITE_OK && eddy__fault("store_write"))
        rc = SQLITE_IOERR_WRITE; /* test hook */
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return fail(s, st, rc, what);
    finish(st);
    return EDDY_OK;
}

/* One step of a query: 1 a row, 0 done (statement reset), or EDDY_ESTORE. */
static int read_step(sqlite_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE) {
        finish(st);
        return 0;
    }
    return fail(s, st, rc, what);
}

/* A query whose statement is still stepping is being run again from one of
 * its own callbacks: refuse rather than reset it under the caller. */
static int read_start(sqlite_store *s, sqlite3_stmt *st, const char *what)
{
    if (!sqlite3_stmt_busy(st))
        return EDDY_OK;
    snprintf(s->errmsg, sizeof(s->errmsg), "%s called from its own callback", what);
    return EDDY_ESTATE;
}

/* ---------------------------------------------------------------- meta */

static int meta_get_u64(sqlite_store *s, const char *k, uint64_t *v)
{
    for (int i = 0; i < s->nmeta_due; i++) {
        if (strcmp(s->meta_due[i].k, k) == 0) {
            *v = s->meta_due[i].v;
            return EDDY_OK;
        }
    }
    sqlite3_stmt *st = s->st[ST_META_GET];
    int rc = bind_text(st, 1, k);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, "reading meta");
    int r = read_step(s, st, "reading meta");
    if (r < 0)
        return r;
    if (r == 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "%s: meta entry %s is missing", s->db_path, k);
        return EDDY_ESTORE;
    }
    *v = col_u64(st, 0);
    finish(st);
    return EDDY_OK;
}

static int meta_set_u64(sqlite_store *s, const char *k, uint64_t v)
{
    sqlite3_stmt *st = s->st[ST_META_SET];
    int rc = bind_text(st, 1, k);
    if (rc == SQLITE_OK)
        rc = bind_u64(st, 2, v);
    return write_step(s, st, rc, "writing meta");
}

/* Write the meta values due in one statement (from the commit). The
 * source position, the run counter and the outbox's next id change with
 * nearly every commit: four upserts of ~5 k instructions each became one. */
static int meta_flush(sqlite_store *s)
{
    int n = s->nmeta_due;
    if (n == 0)
        return EDDY_OK;
    sqlite3_stmt *st = s->meta_set[n];
    if (st == NULL) {
        char sql[256];
        size_t len = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO meta(k, v) VALUES ");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s(?%d, ?%d)", i ? ", " : "",
                                    2 * i + 1, 2 * i + 2);
        snprintf(sql + len, sizeof(sql) - len, " ON CONFLICT(k) DO UPDATE SET v = excluded.v");
        int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK)
            return fail(s, NULL, rc, "writing meta");
        s->meta_set[n] = st;
    }
    int rc = SQLITE_OK;
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        rc = bind_text(st, 2 * i + 1, s->meta_due[i].k);
        if (rc == SQLITE_OK)
            rc = bind_u64(st, 2 * i + 2, s->meta_due[i].v);
    }
    s->nmeta_due = 0;
    return write_step(s, st, rc, "writing meta");
}

/* Set meta k to v in the open transaction (write_begin done): written at
 * the commit, with the others. */
static int meta_due(sqlite_store *s, const char *k, uint64_t v)
{
    for (int i = 0; i < s->nmeta_due; i++) {
        if (strcmp(s->meta_due[i].k, k) == 0) {
            s->meta_due[i].v = v;
            return EDDY_OK;
        }
    }
    size_t n = strlen(k);
    if (s->nmeta_due == META_DUE_MAX || n >= sizeof(s->meta_due[0].k))
        return meta_set_u64(s, k, v); /* (not expected: written at once) */
    memcpy(s->meta_due[s->nmeta_due].k, k, n + 1);
    s->meta_due[s->nmeta_due].v = v;
    s->nmeta_due++;
    return EDDY_OK;
}

static int sq_get_source_pos(eddy__store *base, uint64_t *offset, uint64_t *line)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = meta_get_u64(s, "source_offset", offset);
    return rc != EDDY_OK ? rc : meta_get_u64(s, "source_line", line);
}

static int sq_set_source_pos(eddy__store *base, uint64_t offset, uint64_t line)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = write_begin(s);
    if (rc == EDDY_OK)
        rc = meta_due(s, "source_offset", offset);
    return rc != EDDY_OK ? rc : meta_due(s, "source_line", line);
}

static int sq_get_sink_pos(eddy__store *base, uint64_t *offset)
{
    return meta_get_u64((sqlite_store *)base, "sink_offset", offset);
}

static int sq_set_sink_pos(eddy__store *base, uint64_t offset)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = write_begin(s);
    return rc != EDDY_OK ? rc : meta_due(s, "sink_offset", offset);
}

static int sq_get_meta_u64(eddy__store *base, const char *name, uint64_t *value)
{
    sqlite_store *s = (sqlite_store *)base;
    for (int i = 0; i < s->nmeta_due; i++) { /* set in the open transaction */
        if (strcmp(s->meta_due[i].k, name) == 0) {
            *value = s->meta_due[i].v;
            return EDDY_OK;
        }
    }
    sqlite3_stmt *st = s->st[ST_META_GET];
    int rc = bind_text(st, 1, name);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, "reading meta");
    int r = read_step(s, st, "reading meta");
    if (r < 0)
        return r;
    *value = r == 0 ? 0 : col_u64(st, 0);
    finish(st);
    return EDDY_OK;
}

static int sq_set_meta_u64(eddy__store *base, const char *name, uint64_t value)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = write_begin(s);
    return rc != EDDY_OK ? rc : meta_due(s, name, value);
}

static int sq_get_meta_text(eddy__store *base, const char *name, char **value)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = s->st[ST_META_GET];
    int rc = bind_text(st, 1, name);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, "reading meta");
    int r = read_step(s, st, "reading meta");
    if (r <= 0) {
        *value = NULL;
        return r;
    }
    const char *t = col_text(st, 0);
    *value = t != NULL ? strdup(t) : NULL;
    finish(st);
    return t != NULL && *value == NULL ? EDDY_ENOMEM : EDDY_OK;
}

/* Written at once (not with the values due at the commit, which are
 * numbers), in the open transaction. */
static int sq_set_meta_text(eddy__store *base, const char *name, const char *value)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = write_begin(s);
    if (rc != EDDY_OK)
        return rc;
    sqlite3_stmt *st = s->st[ST_META_SET];
    rc = bind_text(st, 1, name);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 2, value);
    return write_step(s, st, rc, "writing meta");
}

/* ---------------------------------------------------------------- transactions */

static const char *sq_error(const eddy__store *base)
{
    return ((const sqlite_store *)base)->errmsg;
}

static int sq_dirty(const eddy__store *base)
{
    return ((const sqlite_store *)base)->in_tx;
}

static int sq_commit_nosync(eddy__store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->failed)
        return EDDY_ESTORE;
    if (!s->in_tx)
        return EDDY_OK;
    int r = rows_flush(s);
    if (r == EDDY_OK)
        r = jlog_flush(s);
    if (r == EDDY_OK && s->outbox_next != s->outbox_saved)
        r = meta_due(s, "outbox_next", s->outbox_next);
    if (r == EDDY_OK) /* counted in the commit it counts (see lock_mark) */
        r = meta_due(s, "commits", s->commits + 1);
    if (r == EDDY_OK)
        r = meta_flush(s);
    if (r != EDDY_OK)
        return r;
    sqlite3_stmt *st = s->st[ST_COMMIT];
    int rc = eddy__fault("store_commit") ? SQLITE_IOERR_FSYNC : sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return fail(s, st, rc, "commit");
    sqlite3_reset(st);
    s->in_tx = 0;
    rc = eddy__walvfs_settle(s->db);
    if (rc != SQLITE_OK) {
        /* Committed, but maybe not all in the file: nothing may build on it. */
        fail(s, NULL, rc, "commit");
        s->failed = 1;
        return EDDY_ESTORE;
    }
    s->outbox_saved = s->outbox_next;
    s->commits++;
    atomic_store(&s->commits_written, s->commits);
    return EDDY_OK;
}

static int sq_sync(eddy__store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->sync_lock_ok)
        uv_mutex_lock(&s->sync_lock);
    /* Every commit counted here is in the WAL before the sync begins: the
     * sync makes them durable, and LOCK may say so. */
    uint64_t commits = atomic_load(&s->commits_written);
    int e = atomic_load(&s->sync_err);
    if (e == 0 && (e = eddy__fault("store_sync")) == 0 && fdatasync(s->wal_fd) != 0)
        e = errno != 0 ? errno : EIO;
    if (e != 0) {
        int none = 0;
        atomic_compare_exchange_strong(&s->sync_err, &none, e);
        e = atomic_load(&s->sync_err);
    }
    if (e == 0 && commits > s->lock_due)
        s->lock_due = commits; /* LOCK says so in sq_sync_note */
    if (s->sync_lock_ok)
        uv_mutex_unlock(&s->sync_lock);
    if (e == 0)
        return EDDY_OK;
    errno = e;
    return EDDY_ESTORE;
}

static int sq_split_commit(const eddy__store *base)
{
    return ((const sqlite_store *)base)->wal_fd >= 0;
}

static int sq_commit(eddy__store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    int dirty = s->in_tx;
    int r = sq_commit_nosync(base);
    if (r != EDDY_OK || !dirty)
        return r;
    if (s->wal_fd < 0) { /* synchronous=FULL: the COMMIT synced the WAL */
        if (s->sync_lock_ok)
            uv_mutex_lock(&s->sync_lock);
        lock_record(s, s->commits);
        if (s->sync_lock_ok)
            uv_mutex_unlock(&s->sync_lock);
        return EDDY_OK;
    }
    int synced = sq_sync(base);
    if (synced == EDDY_OK)
        sq_sync_note(base);
    if (synced != EDDY_OK) {
        /* Committed but maybe not on disk: nothing may build on it. */
        snprintf(s->errmsg, sizeof(s->errmsg), "commit failed on %s: syncing %s-wal to disk: %s",
                 s->db_path, s->db_path, strerror(errno));
        s->failed = 1;
        return EDDY_ESTORE;
    }
    return EDDY_OK;
}

/* ---------------------------------------------------------------- keys */

/*
 * A row of the keys table as read by st: its key (column kcol; -1 when st
 * does not read it: key, which was asked for), its run counter (column c)
 * and its memory (c + 1). The key and the memory must be text, the counter
 * an integer of 0 or more; anything else is damage, refused with
 * EDDY_ESTATE (the memory's text is decoded by the runtime). SQLite keeps
 * any value in any column: a NULL memory crashed, in strdup.
 */
static int key_row_damaged(sqlite_store *s, sqlite3_stmt *st, int kcol, int c, const char *key)
{
    const char *what = NULL;
    int col = kcol;
    if (kcol >= 0 && sqlite3_column_type(st, kcol) != SQLITE_TEXT)
        what = "key, not text";
    else if ((col = c),
             sqlite3_column_type(st, c) != SQLITE_INTEGER || sqlite3_column_int64(st, c) < 0)
        what = "run counter, not an integer of 0 or more";
    else if ((col = c + 1), sqlite3_column_type(st, c + 1) != SQLITE_TEXT)
        what = "short-term memory, not text";
    if (what == NULL)
        return EDDY_OK;
    char v[256], k[256];
    snprintf(s->errmsg, sizeof(s->errmsg),
             "%s: the row of key %.200s in the keys table holds %s as its %s; the state is damaged",
             s->db_path, kcol >= 0 ? value_words_q(st, kcol, k, sizeof(k), 0) : key,
             value_words(st, col, v, sizeof(v)), what);
    finish(st);
    return EDDY_ESTATE;
}

static int sq_keys_load(eddy__store *base, eddy__store_key_fn fn, void *arg)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = s->st[ST_KEYS_LOAD];
    int r = read_start(s, st, "loading keys");
    while (r == EDDY_OK && (r = read_step(s, st, "loading keys")) == 1) {
        r = key_row_damaged(s, st, 0, 1, NULL);
        if (r == EDDY_OK)
            r = fn(arg, col_text(st, 0), col_u64(st, 1), col_text(st, 2));
        if (r != EDDY_OK)
            finish(st);
    }
    return r;
}

static int sq_key_put(eddy__store *base, const char *key, uint64_t next_seq, const char *stm_json)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    sqlite3_stmt *st = s->st[ST_KEY_PUT];
    int rc = bind_text(st, 1, key);
    if (rc == SQLITE_OK)
        rc = bind_u64(st, 2, next_seq);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 3, stm_json);
    return write_step(s, st, rc, "saving a key");
}

static int sq_key_get(eddy__store *base, const char *key, uint64_t *next_seq, char **stm_json)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = s->st[ST_KEY_GET];
    int rc = bind_text(st, 1, key);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, "reading a key");
    int r = read_step(s, st, "reading a key");
    if (r <= 0)
        return r < 0 ? r : EDDY_ENOTFOUND;
    if ((r = key_row_damaged(s, st, -1, 0, key)) != EDDY_OK)
        return r;
    *next_seq = col_u64(st, 0);
    *stm_json = strdup(col_text(st, 1));
    finish(st);
    return *stm_json != NULL ? EDDY_OK : EDDY_ENOMEM;
}

/* ---------------------------------------------------------------- pending */

/*
 * Pending inputs are stored as rows of the inputs table, each holding the
 * inputs admitted by one transaction that are still pending (at most
 * ROW_INPUTS_MAX), in admission order, and rows in the order of their ids:
 * the FIFO order. A row's entry: seq (8 bytes), line number (8), the key's
 * length (4), the key and a NUL, the record's length (4), the record and a
 * NUL; integers little-endian.
 *
 * A row per input, even written many to a statement at the commit and
 * deleted by runs of ids, cost ~7 k mailbox instructions per W3 run (a
 * fifth of them): two b-tree changes per input and the WAL frames of the
 * pages they touched. Now a commit inserts one row for its admissions, and
 * rewrites (or deletes, once none is left) each row where a run ended: the
 * runs of one transaction mostly end together. The store keeps every row
 * with pending inputs in memory (loaded at open), with each input's place,
 * so that a run's end finds its row without a read and a rewrite has its
 * bytes; an input admitted and ended in one transaction is never written.
 * A row takes at most ROW_INPUTS_MAX inputs, and no more once it holds
 * ROW_BYTES_MAX bytes (a large input has a row of its own), so that a
 * rewrite stays small when the runs of a row end one by one. A failed store is failed for good, so
 * a rolled-back transaction leaves nothing to repair in memory.
 */
#define ROW_INPUTS_MAX 32
#define ROW_BYTES_MAX  8192

typedef struct prow prow;

typedef struct pend {
    char *rk; /* its run key (run_key) */
    size_t len;
    prow *row;   /* its row */
    uint32_t at; /* its index in row->ents */
} pend;

typedef struct pent {
    pend *p;         /* NULL once its run ended */
    size_t off, len; /* its entry in row->data */
} pent;

struct prow {
    uint64_t id;
    eddy__buf data; /* the entries, as last written or being added */
    pent *ents;
    size_t nents, capents;
    size_t live;       /* entries whose p is set */
    int written;       /* the table has the row */
    int touched;       /* on s->touched: a run of it ended since it was written */
    prow *prev, *next; /* s->prows: every row in memory */
};

/* One entry read from a row's bytes. */
typedef struct pview {
    uint64_t seq, line_no;
    const char *key, *record;
} pview;

/* The entry at *at of the n bytes p into *v, *at moved past it: 1, or 0 at
 * the end, or -1 when the bytes do not decode. */
static int pent_next(const unsigned char *p, size_t n, size_t *at, pview *v)
{
    size_t i = *at;
    if (i == n)
        return 0;
    if (n - i < 20)
        return -1;
    v->seq = eddy__le64_get(p + i);
    v->line_no = eddy__le64_get(p + i + 8);
    if (v->seq > (uint64_t)INT64_MAX || v->line_no > (uint64_t)INT64_MAX)
        return -1; /* never written: run numbers and line numbers are SQLite integers */
    size_t kl = eddy__le32_get(p + i + 16);
    i += 20;
    if (n - i < kl + 5 || p[i + kl] != '\0' || memchr(p + i, '\0', kl) != NULL)
        return -1;
    v->key = (const char *)p + i;
    i += kl + 1;
    size_t rl = eddy__le32_get(p + i);
    i += 4;
    if (n - i < rl + 1 || p[i + rl] != '\0' || memchr(p + i, '\0', rl) != NULL)
        return -1;
    v->record = (const char *)p + i;
    *at = i + rl + 1;
    return 1;
}

/* Append the entry of an input to b. */
static int pent_put(eddy__buf *b, const char *key, size_t kl, uint64_t seq, uint64_t line_no,
                    const char *record, size_t rl)
{
    if (kl > UINT32_MAX || rl > UINT32_MAX || eddy__buf_reserve(b, 26 + kl + rl) != EDDY_OK)
        return EDDY_ENOMEM;
    unsigned char *o = (unsigned char *)b->p + b->len;
    o = eddy__le64_put(o, seq);
    o = eddy__le64_put(o, line_no);
    o = eddy__le32_put(o, (uint32_t)kl);
    memcpy(o, key, kl);
    o[kl] = '\0';
    o = eddy__le32_put(o + kl + 1, (uint32_t)rl);
    memcpy(o, record, rl);
    o[rl] = '\0';
    b->len += 26 + kl + rl;
    return EDDY_OK;
}

static pend *pend_get(sqlite_store *s, const char *key, uint64_t seq)
{
    int oom;
    return map_get_run(&s->pend, key, seq, &oom);
}

static prow *prow_new(sqlite_store *s, uint64_t id)
{
    prow *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->id = id;
    w->next = s->prows;
    if (s->prows != NULL)
        s->prows->prev = w;
    s->prows = w;
    return w;
}

static void prow_free(sqlite_store *s, prow *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        s->prows = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    free(w->data.p);
    free(w->ents);
    free(w);
}

/* Note pending input (key, seq) as the last entry of w, whose bytes are
 * [off, off + len) of w->data; NULL when out of memory. */
static pend *pend_put(sqlite_store *s, prow *w, const char *key, uint64_t seq, size_t off,
                      size_t len)
{
    if (eddy__vec_grow(&w->ents, &w->capents, w->nents + 1, sizeof(*w->ents), 8) != EDDY_OK)
        return NULL;
    size_t n = run_key(NULL, 0, key, seq);
    pend *p = malloc(sizeof(*p) + n + 1);
    if (p == NULL)
        return NULL;
    p->rk = (char *)(p + 1);
    run_key(p->rk, n + 1, key, seq);
    p->len = n;
    p->row = w;
    p->at = (uint32_t)w->nents;
    if (eddy__map_put(&s->pend, p->rk, n, p) != EDDY_OK) {
        free(p);
        return NULL;
    }
    w->ents[w->nents++] = (pent){.p = p, .off = off, .len = len};
    w->live++;
    return p;
}

static void pend_free_all(sqlite_store *s)
{
    for (size_t i = 0; i < s->pend.cap; i++)
        if (s->pend.slots[i].key != NULL)
            free(s->pend.slots[i].value);
    eddy__map_free(&s->pend);
    while (s->prows != NULL)
        prow_free(s, s->prows);
    free(s->fresh);
    free(s->touched);
}

/* Each (id, blob) row of statement st to fn(arg, id, bytes, size), in its
 * order, after the open transaction's rows are written (rows_settle);
 * stops at an error. The inputs and the outbox are both read so. */
typedef int (*blob_row_fn)(void *arg, uint64_t id, const unsigned char *p, size_t n);

static int rows_settle(sqlite_store *s);

/* The data of a row (column 1 of st, the row's id in column 0) of table, at
 * load: bytes (a blob, or text as an older eddy may have written), never
 * NULL or a number, which SQLite would hand out as no bytes or as the
 * number's text. EDDY_ESTATE (statement reset) when it is not. */
static int blob_damaged(sqlite_store *s, sqlite3_stmt *st, const char *table)
{
    int type = sqlite3_column_type(st, 1);
    if (type == SQLITE_BLOB || type == SQLITE_TEXT)
        return EDDY_OK;
    char v[256];
    snprintf(s->errmsg, sizeof(s->errmsg),
             "%s: the row %lld of the %s table holds %s, not bytes; the state is damaged",
             s->db_path, (long long)sqlite3_column_int64(st, 0), table,
             value_words(st, 1, v, sizeof(v)));
    finish(st);
    return EDDY_ESTATE;
}

static int blob_rows(sqlite_store *s, sqlite3_stmt *st, const char *what, const char *table,
                     blob_row_fn fn, void *arg)
{
    int r = rows_settle(s);
    if (r == EDDY_OK)
        r = read_start(s, st, what);
    while (r == EDDY_OK && (r = read_step(s, st, what)) == 1) {
        if ((r = blob_damaged(s, st, table)) != EDDY_OK)
            break;
        const unsigned char *p = sqlite3_column_blob(st, 1);
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        r = fn(arg, col_u64(st, 0), p != NULL ? p : (const unsigned char *)"", n);
        if (r != EDDY_OK)
            finish(st);
    }
    return r;
}

/* Every stored row of inputs, in id order. */
static int inputs_rows(sqlite_store *s, blob_row_fn fn, void *arg)
{
    return blob_rows(s, s->st[ST_INPUTS_ALL], "loading pending inputs", "inputs", fn, arg);
}

/* Each input of every stored row to fn(arg, view), in FIFO order. */
typedef int (*pview_fn)(void *arg, const pview *v);

/* A row of inputs that does not decode. */
static int row_damaged(sqlite_store *s, uint64_t id)
{
    snprintf(s->errmsg, sizeof(s->errmsg),
             "%s: the row of pending inputs %llu does not decode; the state is damaged", s->db_path,
             (unsigned long long)id);
    return EDDY_ESTATE;
}

typedef struct inputs_walk {
    sqlite_store *s;
    pview_fn fn;
    void *arg;
} inputs_walk;

static int walk_row(void *arg, uint64_t id, const unsigned char *p, size_t n)
{
    inputs_walk *w = arg;
    size_t at = 0;
    pview v;
    int r;
    while ((r = pent_next(p, n, &at, &v)) == 1)
        if ((r = w->fn(w->arg, &v)) != EDDY_OK)
            return r;
    return r == 0 ? EDDY_OK : row_damaged(w->s, id);
}

static int inputs_each(sqlite_store *s, pview_fn fn, void *arg)
{
    inputs_walk w = {s, fn, arg};
    return inputs_rows(s, walk_row, &w);
}

/* At open: every stored row into memory; ids go on after the last. */
static int load_row(void *arg, uint64_t id, const unsigned char *p, size_t n)
{
    sqlite_store *s = arg;
    if (id >= s->pend_next)
        s->pend_next = id + 1;
    prow *w = prow_new(s, id);
    if (w == NULL || eddy__buf_put(&w->data, (const char *)p, n) != EDDY_OK)
        return EDDY_ENOMEM;
    w->written = 1;
    size_t at = 0, from = 0;
    pview v;
    int r;
    while ((r = pent_next(p, n, &at, &v)) == 1) {
        if (pend_get(s, v.key, v.seq) != NULL) {
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "%s: the pending input %llu of key %s is there twice; the state is damaged",
                     s->db_path, (unsigned long long)v.seq, v.key);
            return EDDY_ESTATE;
        }
        if (pend_put(s, w, v.key, v.seq, from, at - from) == NULL)
            return EDDY_ENOMEM;
        from = at;
    }
    return r == 0 ? EDDY_OK : row_damaged(s, id);
}

static int pend_load(sqlite_store *s, eddy_error **err)
{
    s->pend_next = 1;
    int r = inputs_rows(s, load_row, s);
    if (r == EDDY_ENOMEM)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
    if (r != EDDY_OK)
        return eddy__error_set(err, r == EDDY_ESTATE ? EDDY_ESTATE : EDDY_ESTORE, "store", "%s",
                               s->errmsg);
    return EDDY_OK;
}

/* ---------------------------------------------------------------- rows written at the commit */

/*
 * Rows of inputs and outbox lines are written by the commit: one row for
 * the transaction's admissions (ROW_INPUTS_MAX inputs to a row), a rewrite
 * or a delete for each row where a run ended, one row for its outbox lines.
 * A read of these tables through this connection writes them first
 * (rows_settle).
 */
static void rows_reset(sqlite_store *s)
{
    for (size_t i = 0; i < s->ntouched; i++)
        if (s->touched[i] != NULL) /* NULL: deleted by a flush that then failed */
            s->touched[i]->touched = 0;
    s->nfresh = s->ntouched = 0;
    s->ndout = 0;
    s->dout.len = 0;
}

/* w's live entries alone, in order, in memory too; EDDY_OK or EDDY_ENOMEM. */
static int prow_pack(sqlite_store *s, prow *w)
{
    if (w->live == w->nents)
        return EDDY_OK;
    s->repack.len = 0;
    size_t k = 0;
    for (size_t i = 0; i < w->nents; i++) {
        pent e = w->ents[i];
        if (e.p == NULL)
            continue;
        size_t off = s->repack.len;
        if (eddy__buf_put(&s->repack, w->data.p + e.off, e.len) != EDDY_OK)
            return EDDY_ENOMEM;
        e.p->at = (uint32_t)k;
        w->ents[k++] = (pent){.p = e.p, .off = off, .len = e.len};
    }
    w->nents = k;
    eddy__buf t = w->data;
    w->data = s->repack;
    s->repack = t;
    return EDDY_OK;
}

static int prow_write(sqlite_store *s, prow *w, int st_id, const char *what)
{
    if (prow_pack(s, w) != EDDY_OK)
        return oom(s, what);
    sqlite3_stmt *st = s->st[st_id];
    int rc = bind_u64(st, 1, w->id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(st, 2, w->data.len > 0 ? w->data.p : "", w->data.len,
                                 SQLITE_STATIC);
    return write_step(s, st, rc, what);
}

static int rows_flush(sqlite_store *s)
{
    int r = EDDY_OK;
    /* Rows where runs ended: rewritten, or deleted once empty. */
    for (size_t i = 0; i < s->ntouched && r == EDDY_OK; i++) {
        prow *w = s->touched[i];
        w->touched = 0;
        if (w->live > 0) {
            r = prow_write(s, w, ST_INPUTS_UPDATE, "removing pending inputs");
        } else {
            sqlite3_stmt *st = s->st[ST_INPUTS_DELETE];
            r = write_step(s, st, bind_u64(st, 1, w->id), "removing pending inputs");
            if (r == EDDY_OK) {
                prow_free(s, w);
                s->touched[i] = NULL; /* a later write may fail: see rows_reset */
            }
        }
    }
    s->ntouched = 0;
    /* This transaction's admissions still pending. */
    for (size_t i = 0; i < s->nfresh && r == EDDY_OK; i++) {
        prow *w = s->fresh[i];
        if (w->live == 0) {
            prow_free(s, w);
            continue;
        }
        r = prow_write(s, w, ST_INPUTS_INSERT, "adding pending inputs");
        w->written = 1;
    }
    s->nfresh = 0;
    /* Outbox lines: one row, under the id of the last. */
    if (r == EDDY_OK && s->ndout > 0) {
        sqlite3_stmt *st = s->st[ST_OUTBOX_INSERT];
        int rc = bind_u64(st, 1, s->dout_id + s->ndout - 1);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob64(st, 2, s->dout.len > 0 ? s->dout.p : "", s->dout.len,
                                     SQLITE_STATIC);
        r = write_step(s, st, rc, "adding outputs to the outbox");
    }
    if (r == EDDY_OK)
        rows_reset(s);
    return r;
}

/* Before a read of the inputs or outbox table: write what is kept. */
static int rows_settle(sqlite_store *s)
{
    if (s->nfresh == 0 && s->ntouched == 0 && s->ndout == 0)
        return EDDY_OK;
    return s->failed ? EDDY_ESTORE : rows_flush(s);
}

static int sq_pending_add(eddy__store *base, const char *key, uint64_t seq, uint64_t line_no,
                          const char *record_json)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    if (pend_get(s, key, seq) != NULL) {
        snprintf(s->errmsg, sizeof(s->errmsg),
                 "adding a pending input failed on %s: constraint violated (key %s already has "
                 "an input with sequence number %llu)",
                 s->db_path, key, (unsigned long long)seq);
        abort_tx(s);
        return EDDY_ESTORE;
    }
    if (eddy__fault("store_write"))
        return fail(s, NULL, SQLITE_IOERR_WRITE, "adding a pending input");
    prow *w = s->nfresh > 0 ? s->fresh[s->nfresh - 1] : NULL;
    if (w == NULL || w->nents == ROW_INPUTS_MAX || w->data.len >= ROW_BYTES_MAX) {
        if (eddy__vec_grow(&s->fresh, &s->capfresh, s->nfresh + 1, sizeof(*s->fresh), 8) !=
                EDDY_OK ||
            (w = prow_new(s, s->pend_next)) == NULL)
            return oom(s, "adding a pending input");
        s->pend_next++;
        s->fresh[s->nfresh++] = w;
    }
    size_t off = w->data.len;
    if (pent_put(&w->data, key, strlen(key), seq, line_no, record_json, strlen(record_json)) !=
            EDDY_OK ||
        pend_put(s, w, key, seq, off, w->data.len - off) == NULL) {
        w->data.len = off;
        return oom(s, "adding a pending input");
    }
    return EDDY_OK;
}

static int sq_pending_remove(eddy__store *base, const char *key, uint64_t seq)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    pend *p = pend_get(s, key, seq);
    if (p == NULL)
        return EDDY_OK; /* nothing to remove, as a DELETE of no row */
    prow *w = p->row;
    if (w->written && !w->touched) {
        if (eddy__fault("store_write"))
            return fail(s, NULL, SQLITE_IOERR_WRITE, "removing a pending input");
        if (eddy__vec_grow(&s->touched, &s->captouched, s->ntouched + 1, sizeof(*s->touched), 8) !=
            EDDY_OK)
            return oom(s, "removing a pending input");
        w->touched = 1;
        s->touched[s->ntouched++] = w;
    }
    w->ents[p->at].p = NULL;
    w->live--;
    eddy__map_remove(&s->pend, p->rk, p->len);
    free(p);
    return EDDY_OK;
}

typedef struct pending_cb {
    eddy__store_pending_fn fn;
    void *arg;
} pending_cb;

static int pending_one(void *arg, const pview *v)
{
    pending_cb *c = arg;
    return c->fn(c->arg, v->key, v->seq, v->line_no, v->record);
}

static int sq_pending_load(eddy__store *base, eddy__store_pending_fn fn, void *arg)
{
    pending_cb c = {fn, arg};
    return inputs_each((sqlite_store *)base, pending_one, &c);
}

/*
 * Formats 2 to 4 kept a pending table, a row per input. Opening such a
 * state converts it: its rows, in id order, become rows of inputs (into
 * the table of this connection named "inputs": the new table in the
 * upgrading transaction; a temporary one for a read-only inspection).
 */
static int legacy_convert(sqlite_store *s)
{
    sqlite3_stmt *rd = NULL, *wr = NULL;
    eddy__buf b = {0};
    uint64_t id = 0;
    size_t n = 0;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT key, seq, line_no, record FROM main.pending ORDER BY id", -1, &rd, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db, "INSERT INTO inputs(id, data) VALUES (?1, ?2)", -1, &wr,
                                NULL);
    while (rc == SQLITE_OK) {
        int step = sqlite3_step(rd);
        if (step == SQLITE_ROW) {
            const char *key = col_text(rd, 0), *rec = col_text(rd, 3);
            if (pent_put(&b, key, strlen(key), col_u64(rd, 1), col_u64(rd, 2), rec, strlen(rec)) !=
                EDDY_OK) {
                rc = SQLITE_NOMEM;
                break;
            }
            if (++n < ROW_INPUTS_MAX)
                continue;
        } else if (step != SQLITE_DONE) {
            rc = step;
            break;
        }
        if (n > 0) {
            rc = bind_u64(wr, 1, ++id);
            if (rc == SQLITE_OK)
                rc = sqlite3_bind_blob64(wr, 2, b.p, b.len, SQLITE_STATIC);
            if (rc == SQLITE_OK)
                rc = sqlite3_step(wr) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
            sqlite3_reset(wr);
            b.len = 0;
            n = 0;
        }
        if (step == SQLITE_DONE)
            break;
    }
    sqlite3_finalize(rd);
    sqlite3_finalize(wr);
    free(b.p);
    return rc;
}

/* ---------------------------------------------------------------- journal */

/*
 * The journal is a log (jlog.h): journal_put and journal_cut append entries
 * to s->jbuf, and the commit stores the buffer as one row of jlog. In
 * memory, each run in flight knows the rows that hold its entries (runs) and
 * each row the number of runs in flight with entries in it (rows); when a run
 * is pruned, the rows it was the last live run of are deleted. Loading the
 * journal of a run replays its rows (and the open transaction's entries).
 * Opening rebuilds runs and rows with one pass over the table, taking the runs
 * in flight from the pending inputs, and deletes rows that no run needs.
 *
 * A record costs an append to a buffer instead of an insert into an index
 * keyed by text (~11 k instructions in SQLite); a run that ends in the
 * transaction that wrote its entries (the common case) leaves nothing.
 */
/* One allocation per run: the few rows of most runs and the run key are in
 * it (W4's runs of ten records had five allocations each, the growing ids
 * array's three reallocs being most of the cost, ~2 % of the records'). */
#define RUN_FEW_ROWS 4

struct jrow;

typedef struct jrun {
    /* Its rows, ascending by id: few, or on the heap once more. A row lives
     * while a run holds it (its live count), so these stay valid; held by
     * pointer, as the prune of every run visits each of its rows. */
    struct jrow **rows;
    size_t n, cap;
    int in_txn;       /* in s->txn */
    int ended;        /* pruned while in s->txn: freed at the flush */
    size_t slot;      /* its place + 1 in the runs a compaction rewrites, else 0 */
    uint64_t walking; /* the row being walked, when the run holds it */
    /* Cuts of whole action executions (from INT64_MIN) for those its
     * journal has cut, seen at open and in the rows a compaction walks: the
     * next rewrite writes them before its puts (see runs_rewrite). */
    eddy__buf resets;
    /* Its records in the rows that were there at open (read once, then, for
     * every run in flight), or NULL. */
    eddy__jview *opened;
    struct jrow *few[RUN_FEW_ROWS];
    size_t rklen;
    char rk[]; /* its run key (run_key): the map key */
} jrun;

typedef struct jrow {
    uint64_t id;  /* the map key's bytes */
    size_t live;  /* runs in flight with entries in it */
    size_t total; /* runs with entries in it when written (at open: live) */
    size_t bytes; /* the size of its data */
    int sparse;   /* queued in s->sparse */
} jrow;

/* The key of a run in the tables: its seq (8 bytes, little-endian) then
 * its key, NUL-terminated, into o (cap bytes; o may be NULL when cap is 0);
 * its length without the NUL, as snprintf (the caller allocates when it did
 * not fit). Binary rather than "seq key": this runs for every journal
 * record, and digits cost ~10 instructions each. */
static size_t run_key(char *o, size_t cap, const char *key, uint64_t seq)
{
    size_t kl = strlen(key), n = 8 + kl;
    if (n + 1 > cap)
        return n;
    eddy__le64_put((unsigned char *)o, seq);
    memcpy(o + 8, key, kl + 1);
    return n;
}

/* The key and the seq of a run key. */
static const char *run_key_key(const char *rk)
{
    return rk + 8;
}

static uint64_t run_key_seq(const char *rk)
{
    return eddy__le64_get((const unsigned char *)rk);
}

/* The value of map m under the run key of (key, seq), or NULL; *oom is set
 * when the key was too long for the stack and could not be allocated. */
static void *map_get_run(const eddy__map *m, const char *key, uint64_t seq, int *oom)
{
    char small[256];
    size_t n = run_key(small, sizeof(small), key, seq);
    *oom = 0;
    if (n < sizeof(small))
        return eddy__map_get(m, small, n);
    char *rk = malloc(n + 1);
    if (rk == NULL) {
        *oom = 1;
        return NULL;
    }
    run_key(rk, n + 1, key, seq);
    void *v = eddy__map_get(m, rk, n);
    free(rk);
    return v;
}

static jrun *run_get(sqlite_store *s, const char *key, uint64_t seq, int create)
{
    int oom;
    jrun *r = map_get_run(&s->runs, key, seq, &oom);
    if (r != NULL || !create || oom)
        return r;
    size_t n = run_key(NULL, 0, key, seq);
    if ((r = malloc(sizeof(*r) + n + 1)) == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->rows = r->few;
    r->cap = RUN_FEW_ROWS;
    run_key(r->rk, n + 1, key, seq);
    r->rklen = n;
    if (eddy__map_put(&s->runs, r->rk, n, r) != EDDY_OK) {
        free(r);
        r = NULL;
    }
    return r;
}

static void run_free(jrun *r)
{
    if (r != NULL) {
        free(r->resets.p);
        eddy__jview_free(r->opened);
        if (r->rows != r->few)
            free(r->rows);
        free(r);
    }
}

/* Row w holds entries of run r (the caller counts r in w's live). */
static int run_add_row(jrun *r, struct jrow *w)
{
    if (r->n == r->cap && r->rows == r->few) {
        /* Past the few: to the heap, with room for a run of W4's size. */
        struct jrow **v = malloc(4 * RUN_FEW_ROWS * sizeof(*v));
        if (v == NULL)
            return EDDY_ENOMEM;
        memcpy(v, r->few, sizeof(r->few));
        r->rows = v;
        r->cap = 4 * RUN_FEW_ROWS;
    } else if (eddy__vec_grow(&r->rows, &r->cap, r->n + 1, sizeof(*r->rows), 4) != EDDY_OK) {
        return EDDY_ENOMEM;
    }
    r->rows[r->n++] = w;
    return EDDY_OK;
}

/* A new row's record, in s->rows; NULL when out of memory. */
static jrow *row_put(sqlite_store *s, uint64_t id, size_t live, size_t total, size_t bytes)
{
    jrow *w = malloc(sizeof(*w));
    if (w == NULL)
        return NULL;
    w->id = id;
    w->live = live;
    w->total = total;
    w->bytes = bytes;
    w->sparse = 0;
    if (eddy__map_put(&s->rows, (const char *)&w->id, sizeof(w->id), w) != EDDY_OK) {
        free(w);
        return NULL;
    }
    return w;
}

/* Forget the open transaction's entries (rolled back, or stored). */
static void txn_reset(sqlite_store *s)
{
    for (size_t i = 0; i < s->ntxn; i++) {
        s->txn[i]->in_txn = 0;
        if (s->txn[i]->ended)
            run_free(s->txn[i]);
    }
    s->ntxn = 0;
    s->jbuf.len = 0;
}

static int oom(sqlite_store *s, const char *what)
{
    snprintf(s->errmsg, sizeof(s->errmsg), "%s failed on %s: out of memory", what, s->db_path);
    abort_tx(s);
    return EDDY_ESTORE;
}

/* Run r of an entry being appended: note it in the transaction. */
static int txn_note(sqlite_store *s, jrun *r)
{
    if (r->in_txn)
        return EDDY_OK;
    if (eddy__vec_grow(&s->txn, &s->captxn, s->ntxn + 1, sizeof(*s->txn), 64) != EDDY_OK)
        return EDDY_ENOMEM;
    r->in_txn = 1;
    s->txn[s->ntxn++] = r;
    return EDDY_OK;
}

/* The run (key, seq) of an entry being appended: note it in the transaction. */
static int txn_touch(sqlite_store *s, const char *key, uint64_t seq)
{
    jrun *r = run_get(s, key, seq, 1);
    return r != NULL ? txn_note(s, r) : EDDY_ENOMEM;
}

#ifndef NDEBUG
/* 1 when r is the run (key, seq): checks the caller's handle in test builds. */
static int run_is(const jrun *r, const char *key, uint64_t seq)
{
    char small[256];
    size_t n = run_key(small, sizeof(small), key, seq);
    return n >= sizeof(small) || (n == r->rklen && memcmp(small, r->rk, n) == 0);
}
#endif

/*
 * Compaction. A run that lives long keeps every row it has entries in, and
 * with it the entries of all the runs that ended since: when a row holds
 * few of the runs it was written with (an eighth or fewer), each of those
 * is rewritten into the open transaction (its journal as it stands, as
 * puts) and leaves its old rows, which go once no run is left in them.
 * Each entry is thus copied a bounded number of times on average.
 *
 * Most rows that turn sparse go by themselves soon after: their last runs
 * were merely slower than the others (W3 at 256 runs in flight made nearly
 * every row sparse, and rewrote most runs once: 40 % of the commit's time).
 * So sparse rows are compacted only once they hold more than compact_slack
 * bytes in all, oldest first, down to half of it: the table holds at most
 * about eight times the journal of the runs in flight plus COMPACT_SLACK.
 */
#define COMPACT_SLACK ((size_t)4 << 20)

static int sparse_add(sqlite_store *s, jrow *w)
{
    if (eddy__vec_grow(&s->sparse, &s->capsparse, s->nsparse + 1, sizeof(*s->sparse), 16) !=
        EDDY_OK)
        return EDDY_ENOMEM;
    s->sparse[s->nsparse++] = w->id;
    s->sparse_live++;
    s->sparse_bytes += w->bytes;
    w->sparse = 1;
    return EDDY_OK;
}

/* Row w has no run left: delete it. */
static int row_drop(sqlite_store *s, jrow *w, const char *what)
{
    sqlite3_stmt *st = s->st[ST_JLOG_DELETE];
    int r = write_step(s, st, bind_u64(st, 1, w->id), what);
    if (r != EDDY_OK)
        return r;
    if (w->sparse) {
        s->sparse_live--;
        s->sparse_bytes -= w->bytes;
    }
    eddy__map_remove(&s->rows, (const char *)&w->id, sizeof(w->id));
    free(w);
    return EDDY_OK;
}

static int jlog_walk_row(sqlite_store *s, uint64_t id, eddy__jlog_fn fn, void *arg,
                         const char *what);
static int apply_put(void *arg, const eddy__jrec *rec);

typedef struct one_run {
    const char *key;
    uint64_t seq;
} one_run;

static int keep_one(void *arg, const char *key, uint64_t seq)
{
    one_run *o = arg;
    return seq == o->seq && strcmp(key, o->key) == 0;
}

/* Drop row w from a run's rows (deleting the row when it was the last). */
static int row_release(sqlite_store *s, jrow *w)
{
    if (--w->live > 0)
        return EDDY_OK;
    return row_drop(s, w, "compacting the journal");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether resets (cuts) already cut the execution of rec (its event_id and
 * action). */
typedef struct reset_find {
    const eddy__jrec *rec;
    int found;
} reset_find;

static int same_reset(void *arg, const eddy__jlog_entry *e)
{
    reset_find *f = arg;
    f->found |= strcmp(e->rec.event_id, f->rec->event_id) == 0 &&
                strcmp(e->rec.action, f->rec->action) == 0;
    return EDDY_OK;
}

/* Keep a cut of rec's whole action execution in r->resets, once: the rows
 * a run left keep copies of what a rewrite wrote, and a reopen reads them
 * all (one copy per execution, or they doubled with each reopen). */
static int reset_add(jrun *r, const eddy__jrec *rec)
{
    reset_find f = {rec, 0};
    if (eddy__jlog_walk(r->resets.p, r->resets.len, same_reset, &f) == EDDY_OK && f.found)
        return EDDY_OK;
    return eddy__jlog_cut(&r->resets, rec->key, rec->seq, rec->event_id, rec->action, INT64_MIN);
}

/* The runs one compaction rewrites, and a view of each one's journal. */
typedef struct rewrite {
    sqlite_store *s;
    jrun **runs;
    eddy__jview **views;
    size_t n, cap;
    uint64_t walking;
} rewrite;

/* Apply an entry to the view of its run, when that run is rewritten. */
static int entry_to_its_run(void *arg, const eddy__jlog_entry *e)
{
    rewrite *w = arg;
    int oom;
    jrun *r = map_get_run(&w->s->runs, e->rec.key, e->rec.seq, &oom);
    if (oom)
        return EDDY_ENOMEM;
    if (r == NULL || r->slot == 0 || r->walking != w->walking)
        return EDDY_OK;
    if (e->cut && reset_add(r, &e->rec) != EDDY_OK)
        return EDDY_ENOMEM;
    return eddy__jview_apply(w->views[r->slot - 1], e);
}

static int put_into_jbuf(void *arg, const eddy__jrec *rec)
{
    return eddy__jlog_put(arg, rec);
}

/*
 * Rewrite the journals of w's runs into the open transaction and release
 * their old rows. All at once: each row any of them holds is read once, and
 * the transaction's own entries walked once, whatever the number of runs
 * (one run at a time read each of its rows whole for each run, and rows
 * hold the entries of every run of their commit: with thousands of runs of
 * a hundred records each in flight, a compaction took minutes).
 */
static int runs_rewrite(rewrite *w)
{
    sqlite_store *s = w->s;
    uint64_t *ids = NULL;
    size_t nids = 0, capids = 0;
    int r =
        (w->views = calloc(w->n > 0 ? w->n : 1, sizeof(*w->views))) != NULL ? EDDY_OK : EDDY_ENOMEM;
    for (size_t i = 0; i < w->n && r == EDDY_OK; i++) {
        jrun *run = w->runs[i];
        if ((w->views[i] = eddy__jview_new()) == NULL) {
            r = EDDY_ENOMEM;
            break;
        }
        if (run->opened != NULL)
            r = eddy__jview_emit(run->opened, NULL, NULL, apply_put, w->views[i]);
        for (size_t k = 0; k < run->n && r == EDDY_OK; k++) {
            if (run->rows[k]->id <= s->jlog_opened)
                continue; /* in run->opened */
            r = eddy__vec_grow(&ids, &capids, nids + 2, sizeof(*ids), 64);
            if (r == EDDY_OK) {
                ids[nids++] = run->rows[k]->id;
                ids[nids++] = i;
            }
        }
    }
    /* In the order they were written, each once. */
    if (r == EDDY_OK && nids > 2)
        qsort(ids, nids / 2, 2 * sizeof(*ids), cmp_u64);
    for (size_t k = 0; k < nids && r == EDDY_OK; k += 2) {
        w->runs[ids[k + 1]]->walking = ids[k];
        if (k + 2 < nids && ids[k + 2] == ids[k])
            continue;
        w->walking = ids[k];
        r = jlog_walk_row(s, ids[k], entry_to_its_run, w, "compacting the journal");
    }
    w->walking = UINT64_MAX;
    for (size_t i = 0; i < w->n; i++)
        w->runs[i]->walking = UINT64_MAX;
    if (r == EDDY_OK)
        r = eddy__jlog_walk(s->jbuf.p, s->jbuf.len, entry_to_its_run, w);
    /*
     * Now each run's journal goes into the transaction: first the cuts it
     * has seen (each of a whole action execution), then its records as
     * puts. The rows it leaves may live on (other runs hold them), and a
     * reopen replays every row that holds a run's entries, in order: without
     * the cuts, records of it there that a cut had removed came back (the
     * cut went with a row the run left), since puts cannot say what is gone.
     * The cuts are walked again from the new row, and kept so on.
     */
    for (size_t i = 0; i < w->n && r == EDDY_OK; i++) {
        jrun *run = w->runs[i];
        one_run o = {run_key_key(run->rk), run_key_seq(run->rk)};
        r = txn_note(s, run);
        if (r == EDDY_OK && run->resets.len > 0)
            r = eddy__buf_put(&s->jbuf, run->resets.p, run->resets.len);
        if (r == EDDY_OK)
            r = eddy__jview_emit(w->views[i], keep_one, &o, put_into_jbuf, &s->jbuf);
        if (r == EDDY_OK)
            run->resets.len = 0; /* in the transaction now, walked again from there */
    }
    for (size_t i = 0; i < w->n; i++) {
        jrun *run = w->runs[i];
        run->slot = 0;
        if (w->views != NULL)
            eddy__jview_free(w->views[i]);
        if (r != EDDY_OK)
            continue; /* the transaction fails: the run keeps its rows */
        for (size_t k = 0; k < run->n && r == EDDY_OK; k++)
            r = row_release(s, run->rows[k]);
        /* Also when a release failed (the store has then failed): rows
         * before it may be freed, and the run must not hold them. */
        run->n = 0;
        eddy__jview_free(run->opened);
        run->opened = NULL;
    }
    free(w->views);
    w->views = NULL;
    free(ids);
    return r;
}

/* A run in flight with an entry in a sparse row: one to rewrite. */
static int note_live_run(void *arg, const eddy__jlog_entry *e)
{
    rewrite *w = arg;
    jrun *r = run_get(w->s, e->rec.key, e->rec.seq, 0);
    if (r == NULL || r->ended || r->slot != 0)
        return EDDY_OK;
    if (eddy__vec_grow(&w->runs, &w->cap, w->n + 1, sizeof(*w->runs), 8) != EDDY_OK)
        return EDDY_ENOMEM;
    w->runs[w->n++] = r;
    r->slot = w->n;
    return EDDY_OK;
}

/* Drop the rows gone from the sparse list. */
static void sparse_sweep(sqlite_store *s)
{
    size_t kept = 0;
    for (size_t k = 0; k < s->nsparse; k++)
        if (eddy__map_get(&s->rows, (const char *)&s->sparse[k], sizeof(uint64_t)) != NULL)
            s->sparse[kept++] = s->sparse[k];
    s->nsparse = kept;
}

static int jlog_compact(sqlite_store *s)
{
    if (s->sparse_bytes <= s->compact_slack) {
        /* Nothing to do yet; forget the rows gone by themselves now and
         * then, so that the list stays about as long as the live rows. */
        if (s->nsparse > 2 * s->sparse_live + 64)
            sparse_sweep(s);
        return EDDY_OK;
    }
    /* Oldest first (row ids ascend with time), down to half the slack:
     * the runs in flight in those rows, rewritten together, release them
     * (a row goes with the last of its runs). */
    qsort(s->sparse, s->nsparse, sizeof(*s->sparse), cmp_u64);
    rewrite w = {.s = s};
    size_t going = 0;
    int r = EDDY_OK;
    for (size_t k = 0;
         k < s->nsparse && r == EDDY_OK && s->sparse_bytes - going > s->compact_slack / 2; k++) {
        jrow *row = eddy__map_get(&s->rows, (const char *)&s->sparse[k], sizeof(uint64_t));
        if (row == NULL)
            continue; /* gone meanwhile */
        going += row->bytes < s->sparse_bytes - going ? row->bytes : s->sparse_bytes - going;
        r = jlog_walk_row(s, row->id, note_live_run, &w, "compacting the journal");
    }
    if (r == EDDY_OK)
        r = runs_rewrite(&w);
    for (size_t i = 0; i < w.n; i++)
        w.runs[i]->slot = 0; /* (when the walk failed) */
    free(w.runs);
    sparse_sweep(s);
    if (r == EDDY_ESTATE)
        snprintf(s->errmsg, sizeof(s->errmsg),
                 "%s: a journal row does not decode; the state is "
                 "damaged",
                 s->db_path);
    if (r == EDDY_ENOMEM)
        return oom(s, "compacting the journal");
    if (r != EDDY_OK) {
        abort_tx(s);
        return EDDY_ESTORE;
    }
    return EDDY_OK;
}

/* Store the open transaction's entries as one row (from the commit). */
static int jlog_flush(sqlite_store *s)
{
    int cr = jlog_compact(s);
    if (cr != EDDY_OK)
        return cr;
    size_t live = 0;
    for (size_t i = 0; i < s->ntxn; i++)
        live += !s->txn[i]->ended;
    if (live > 0 && s->jbuf.len > 0) {
        uint64_t id = s->jlog_next;
        sqlite3_stmt *st = s->st[ST_JLOG_INSERT];
        int rc = bind_u64(st, 1, id);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob64(st, 2, s->jbuf.p, s->jbuf.len, SQLITE_STATIC);
        int r = write_step(s, st, rc, "writing the journal");
        if (r != EDDY_OK)
            return r;
        jrow *w = row_put(s, id, live, s->ntxn, s->jbuf.len);
        if (w == NULL)
            return oom(s, "writing the journal");
        for (size_t i = 0; i < s->ntxn; i++)
            if (!s->txn[i]->ended && run_add_row(s->txn[i], w) != EDDY_OK)
                return oom(s, "writing the journal");
        s->jlog_next = id + 1;
    }
    txn_reset(s);
    return EDDY_OK;
}

static int sq_journal_put(eddy__store *base, const eddy__jrec *rec)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    if (eddy__fault("store_write"))
        return fail(s, NULL, SQLITE_IOERR_WRITE, "writing a journal record");
    /* The run's handle saves a lookup by its text key for every record. */
    jrun *run = rec->run != NULL ? *rec->run : NULL;
    if (run == NULL) {
        run = run_get(s, rec->key, rec->seq, 1);
        if (run != NULL && rec->run != NULL)
            *rec->run = run;
    }
    assert(run == NULL || run_is(run, rec->key, rec->seq));
    if (run == NULL || txn_note(s, run) != EDDY_OK || eddy__jlog_put(&s->jbuf, rec) != EDDY_OK)
        return oom(s, "writing a journal record");
    return EDDY_OK;
}

static int sq_journal_cut(eddy__store *base, const char *key, uint64_t seq, const char *event_id,
                          const char *action, int64_t from_idx)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    if (eddy__fault("store_write"))
        return fail(s, NULL, SQLITE_IOERR_WRITE, "cutting the journal");
    if (txn_touch(s, key, seq) != EDDY_OK ||
        eddy__jlog_cut(&s->jbuf, key, seq, event_id, action, from_idx) != EDDY_OK)
        return oom(s, "cutting the journal");
    return EDDY_OK;
}

/* Walk the entries of one stored row (what: for messages). */
static int jlog_walk_row(sqlite_store *s, uint64_t id, eddy__jlog_fn fn, void *arg,
                         const char *what)
{
    sqlite3_stmt *st = s->st[ST_JLOG_GET];
    int rc = bind_u64(st, 1, id);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, what);
    int r = read_step(s, st, what);
    if (r != 1)
        return r < 0 ? r : EDDY_OK; /* a row deleted in this transaction */
    r = eddy__jlog_walk(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), fn, arg);
    finish(st);
    if (r == EDDY_ESTATE)
        snprintf(s->errmsg, sizeof(s->errmsg),
                 "%s: journal row %llu does not decode; the state is damaged", s->db_path,
                 (unsigned long long)id);
    return r;
}

/* Apply a record to a view as the put that wrote it. */
static int apply_put(void *arg, const eddy__jrec *rec)
{
    eddy__jlog_entry e = {.cut = 0, .rec = *rec};
    return eddy__jview_apply(arg, &e);
}

static int sq_journal_load_run(eddy__store *base, const char *key, uint64_t seq,
                               eddy__store_jrec_fn fn, void *arg)
{
    sqlite_store *s = (sqlite_store *)base;
    eddy__jview *v = eddy__jview_new();
    if (v == NULL)
        return EDDY_ENOMEM;
    int r = EDDY_OK;
    jrun *run = s->jlog_ready ? run_get(s, key, seq, 0) : NULL;
    if (run != NULL && run->opened != NULL)
        r = eddy__jview_emit(run->opened, NULL, NULL, apply_put, v);
    for (size_t i = 0; run != NULL && i < run->n && r == EDDY_OK; i++)
        if (run->rows[i]->id > s->jlog_opened)
            r = jlog_walk_row(s, run->rows[i]->id, eddy__jview_apply_fn, v, "loading the journal");
    if (r == EDDY_OK)
        r = eddy__jlog_walk(s->jbuf.p, s->jbuf.len, eddy__jview_apply_fn, v);
    one_run o = {key, seq};
    if (r == EDDY_OK)
        r = eddy__jview_emit(v, keep_one, &o, fn, arg);
    eddy__jview_free(v);
    return r;
}

/* The runs in flight: those with a pending input (the head
 * of each key's FIFO is its run in flight; the others have no entries). */
typedef struct live_set {
    eddy__map map;
    char **keys;
    size_t n, cap;
} live_set;

static void live_free(live_set *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->keys[i]);
    free(l->keys);
    eddy__map_free(&l->map);
}

static int live_add(live_set *l, const char *key, uint64_t seq)
{
    size_t n = run_key(NULL, 0, key, seq);
    if (eddy__vec_grow(&l->keys, &l->cap, l->n + 1, sizeof(*l->keys), 64) != EDDY_OK)
        return EDDY_ENOMEM;
    char *rk = malloc(n + 1);
    if (rk == NULL)
        return EDDY_ENOMEM;
    run_key(rk, n + 1, key, seq);
    l->keys[l->n++] = rk;
    if (eddy__map_get(&l->map, rk, n) != NULL)
        return EDDY_OK;
    return eddy__map_put(&l->map, rk, n, rk);
}

static int live_one(void *arg, const pview *v)
{
    return live_add(arg, v->key, v->seq);
}

static int live_load(sqlite_store *s, live_set *l)
{
    eddy__map_init(&l->map);
    l->keys = NULL;
    l->n = l->cap = 0;
    return inputs_each(s, live_one, l);
}

static int live_has(void *arg, const char *key, uint64_t seq)
{
    int oom;
    int has = map_get_run(&((live_set *)arg)->map, key, seq, &oom) != NULL;
    return has || oom; /* shown rather than hidden */
}

/* Replay every stored row (in order) and the open transaction into v. */
static int jlog_replay_all(sqlite_store *s, eddy__jview *v)
{
    sqlite3_stmt *st = s->st[ST_JLOG_ALL];
    int r = read_start(s, st, "loading the journal");
    while (r == EDDY_OK && (r = read_step(s, st, "loading the journal")) == 1) {
        if ((r = blob_damaged(s, st, "jlog")) != EDDY_OK)
            return r;
        r = eddy__jlog_walk(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                            eddy__jview_apply_fn, v);
        if (r == EDDY_ESTATE)
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "%s: journal row %llu does not decode; the state is damaged", s->db_path,
                     (unsigned long long)col_u64(st, 0));
        if (r != EDDY_OK)
            finish(st);
    }
    if (r < 0 || r > 1)
        return r;
    return eddy__jlog_walk(s->jbuf.p, s->jbuf.len, eddy__jview_apply_fn, v);
}

static int known_run(void *arg, const char *key, uint64_t seq)
{
    return run_get(arg, key, seq, 0) != NULL;
}

/* The journal of every run not pruned, ordered. An open store knows them
 * (runs: those rebuilt at open and those written to since); a read-only
 * one takes the runs in flight from the pending inputs. */
static int journal_all(sqlite_store *s, eddy__store_jrec_fn fn, void *arg)
{
    live_set l = {.n = 0};
    eddy__map_init(&l.map);
    eddy__jview *v = eddy__jview_new();
    if (v == NULL)
        return EDDY_ENOMEM;
    int r = s->jlog_ready ? EDDY_OK : live_load(s, &l);
    if (r == EDDY_OK)
        r = jlog_replay_all(s, v);
    if (r == EDDY_OK)
        r = s->jlog_ready ? eddy__jview_emit(v, known_run, s, fn, arg)
                          : eddy__jview_emit(v, live_has, &l, fn, arg);
    live_free(&l);
    eddy__jview_free(v);
    return r;
}

static int sq_journal_load_all(eddy__store *base, eddy__store_jrec_fn fn, void *arg)
{
    return journal_all((sqlite_store *)base, fn, arg);
}

static int sq_journal_prune_run(eddy__store *base, const char *key, uint64_t seq)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    if (eddy__fault("store_write"))
        return fail(s, NULL, SQLITE_IOERR_WRITE, "pruning the journal of a run");
    jrun *run = run_get(s, key, seq, 0);
    if (run == NULL)
        return EDDY_OK;
    for (size_t i = 0; i < run->n; i++) {
        jrow *w = run->rows[i];
        if (--w->live > 0) {
            if (w->live * 8 <= w->total && !w->sparse)
                (void)sparse_add(s, w); /* out of memory: it stays as it is */
            continue;
        }
        if ((r = row_drop(s, w, "pruning the journal of a run")) != EDDY_OK) {
            run->n = 0; /* the store has failed: hold no row that may be freed */
            return r;
        }
    }
    eddy__map_remove(&s->runs, run->rk, run->rklen);
    if (run->in_txn)
        run->ended = 1; /* its entries in jbuf are dead; freed at the flush */
    else
        run_free(run);
    return EDDY_OK;
}

/* At open: learn which rows hold entries of which runs in flight, and delete
 * the rows that hold none. */
typedef struct rebuild {
    sqlite_store *s;
    live_set *live;
    jrow *row; /* the row being read, its live and total counting its runs */
    int err;
} rebuild;

static int rebuild_entry(void *arg, const eddy__jlog_entry *e)
{
    rebuild *b = arg;
    if (!live_has(b->live, e->rec.key, e->rec.seq))
        return EDDY_OK;
    jrun *r = run_get(b->s, e->rec.key, e->rec.seq, 1);
    if (r == NULL || (r->opened == NULL && (r->opened = eddy__jview_new()) == NULL) ||
        eddy__jview_apply(r->opened, e) != EDDY_OK)
        return EDDY_ENOMEM;
    /* A cut is in no record of the view: kept for the run's next rewrite. */
    if (e->cut && reset_add(r, &e->rec) != EDDY_OK)
        return EDDY_ENOMEM;
    if (r->n > 0 && r->rows[r->n - 1] == b->row)
        return EDDY_OK;
    b->row->live++;
    b->row->total++;
    return run_add_row(r, b->row);
}

static int jlog_rebuild(sqlite_store *s, eddy_error **err)
{
    live_set l;
    uint64_t *dead = NULL;
    size_t ndead = 0, capdead = 0;
    int r = live_load(s, &l);
    sqlite3_stmt *st = s->st[ST_JLOG_ALL];
    rebuild b = {.s = s, .live = &l};
    s->jlog_next = 1;
    while (r == EDDY_OK && (r = read_step(s, st, "loading the journal")) == 1) {
        if ((r = blob_damaged(s, st, "jlog")) != EDDY_OK)
            break;
        uint64_t id = col_u64(st, 0);
        if (id >= s->jlog_next)
            s->jlog_next = id + 1;
        /* The row's record first, so that its runs can hold it; it goes
         * again when no run in flight has entries in it. */
        b.row = row_put(s, id, 0, 0, (size_t)sqlite3_column_bytes(st, 1));
        r = b.row == NULL ? EDDY_ENOMEM
                          : eddy__jlog_walk(sqlite3_column_blob(st, 1),
                                            (size_t)sqlite3_column_bytes(st, 1), rebuild_entry, &b);
        if (r == EDDY_ESTATE)
            snprintf(s->errmsg, sizeof(s->errmsg),
                     "%s: journal row %llu does not decode; the state is damaged", s->db_path,
                     (unsigned long long)id);
        if (r == EDDY_OK && b.row->live == 0) {
            eddy__map_remove(&s->rows, (const char *)&b.row->id, sizeof(b.row->id));
            free(b.row);
            r = eddy__vec_grow(&dead, &capdead, ndead + 1, sizeof(*dead), 16);
            if (r == EDDY_OK)
                dead[ndead++] = id;
        }
        if (r != EDDY_OK)
            finish(st);
    }
    live_free(&l);
    if (r == 0 && ndead > 0) {
        for (size_t i = 0; i < ndead && r == 0; i++) {
            sqlite3_stmt *del = s->st[ST_JLOG_DELETE];
            r = write_begin(s);
            if (r == EDDY_OK)
                r = write_step(s, del, bind_u64(del, 1, dead[i]), "deleting spent journal rows");
        }
        if (r == EDDY_OK)
            r = sq_commit(&s->base);
    }
    free(dead);
    s->jlog_opened = s->jlog_next - 1;
    if (r == EDDY_ENOMEM)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
    if (r == EDDY_ESTATE)
        return eddy__error_set(err, EDDY_ESTATE, "state", "%s", s->errmsg);
    if (r != 0)
        return eddy__error_set(err, EDDY_ESTORE, "store", "%s", s->errmsg);
    s->jlog_ready = 1;
    return EDDY_OK;
}

/* ---------------------------------------------------------------- outbox */

/* Ids come from outbox_next, kept in meta by the commit of the lines (once
 * per commit, not per line: sq_commit_nosync), so that they keep increasing
 * after every line has been acknowledged and deleted. A transaction's lines
 * are one row, written by its commit (rows_flush): joined by newlines (a
 * line holds none: store.c), under the id of the last, so that ids are
 * consecutive within a row and its first is its id minus its newlines. */
static int sq_outbox_add(eddy__store *base, const char *line, size_t len, uint64_t *id)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    uint64_t next = s->outbox_next;
    if (eddy__fault("store_write"))
        return fail(s, NULL, SQLITE_IOERR_WRITE, "adding an output to the outbox");
    size_t was = s->dout.len;
    if ((s->ndout > 0 && eddy__buf_put(&s->dout, "\n", 1) != EDDY_OK) ||
        eddy__buf_put(&s->dout, line, len) != EDDY_OK) {
        s->dout.len = was;
        return oom(s, "adding an output to the outbox");
    }
    if (s->ndout++ == 0)
        s->dout_id = next;
    s->outbox_next = next + 1;
    *id = next;
    return EDDY_OK;
}

/* The lines of one outbox row (id: its last line's), each with its id. */
static int outbox_row(uint64_t id, const char *p, size_t n, eddy__store_outbox_fn fn, void *arg)
{
    uint64_t lines = 1;
    for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))) != NULL; q++)
        lines++;
    uint64_t line_id = id - (lines - 1);
    for (;;) {
        const char *nl = n > 0 ? memchr(p, '\n', n) : NULL;
        size_t len = nl != NULL ? (size_t)(nl - p) : n;
        int r = fn(arg, line_id++, p, len);
        if (r != EDDY_OK || nl == NULL)
            return r;
        n -= len + 1;
        p = nl + 1;
    }
}

/* Every stored outbox row, in id order. */
static int outbox_rows(sqlite_store *s, blob_row_fn fn, void *arg)
{
    return blob_rows(s, s->st[ST_OUTBOX_LOAD], "loading the outbox", "outbox", fn, arg);
}

typedef struct outbox_lines {
    eddy__store_outbox_fn fn;
    void *arg;
} outbox_lines;

static int each_line(void *arg, uint64_t id, const unsigned char *p, size_t n)
{
    outbox_lines *l = arg;
    return outbox_row(id, (const char *)p, n, l->fn, l->arg);
}

static int sq_outbox_load(eddy__store *base, eddy__store_outbox_fn fn, void *arg)
{
    outbox_lines l = {fn, arg};
    return outbox_rows((sqlite_store *)base, each_line, &l);
}

/* After the rows up to up_to are gone: the next row may start at or below
 * it (acknowledgements come at commit ends, but the interface allows any
 * id); its lines up to up_to are cut off. */
static int outbox_cut_row(sqlite_store *s, uint64_t up_to)
{
    sqlite3_stmt *st = s->st[ST_OUTBOX_NEXT_ROW];
    int rc = bind_u64(st, 1, up_to);
    if (rc != SQLITE_OK)
        return fail(s, st, rc, "acknowledging outbox lines");
    int r = read_step(s, st, "acknowledging outbox lines");
    if (r != 1)
        return r;
    uint64_t id = col_u64(st, 0);
    const char *p = sqlite3_column_blob(st, 1);
    size_t n = (size_t)sqlite3_column_bytes(st, 1);
    uint64_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += p[i] == '\n';
    if (id - (lines - 1) > up_to) {
        finish(st);
        return EDDY_OK;
    }
    for (uint64_t cut = up_to - (id - (lines - 1)) + 1; cut > 0; cut--) {
        const char *nl = memchr(p, '\n', n);
        n -= (size_t)(nl + 1 - p);
        p = nl + 1;
    }
    /* p points into the row: copy it before the statement lets it go. */
    s->scratch_cut.len = 0;
    if (eddy__buf_put(&s->scratch_cut, p, n) != EDDY_OK) {
        finish(st);
        return oom(s, "acknowledging outbox lines");
    }
    finish(st);
    sqlite3_stmt *up = s->st[ST_OUTBOX_REWRITE];
    rc = bind_u64(up, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(up, 2, n > 0 ? s->scratch_cut.p : "", n, SQLITE_STATIC);
    return write_step(s, up, rc, "acknowledging outbox lines");
}

static int sq_outbox_ack(eddy__store *base, uint64_t up_to)
{
    sqlite_store *s = (sqlite_store *)base;
    int r = write_begin(s);
    if (r != EDDY_OK)
        return r;
    if (up_to > (uint64_t)INT64_MAX)
        up_to = (uint64_t)INT64_MAX;
    /* Lines of this transaction it covers are not written at all (the
     * runtime acknowledges only lines of earlier commits). */
    if (s->ndout > 0 && s->dout_id <= up_to) {
        uint64_t k = up_to - s->dout_id + 1;
        if (k >= s->ndout) {
            s->ndout = 0;
            s->dout.len = 0;
        } else {
            size_t at = 0;
            for (uint64_t i = 0; i < k; i++)
                at += (size_t)((const char *)memchr(s->dout.p + at, '\n', s->dout.len - at) -
                               (s->dout.p + at)) +
                      1;
            memmove(s->dout.p, s->dout.p + at, s->dout.len - at);
            s->dout.len -= at;
            s->ndout -= (size_t)k;
            s->dout_id += k;
        }
    }
    sqlite3_stmt *st = s->st[ST_OUTBOX_ACK];
    r = write_step(s, st, bind_u64(st, 1, up_to), "acknowledging outbox lines");
    return r == EDDY_OK ? outbox_cut_row(s, up_to) : r;
}

/* ---------------------------------------------------------------- counts */

static int count_rec(void *arg, const eddy__jrec *rec)
{
    (void)rec;
    (*(uint64_t *)arg)++;
    return EDDY_OK;
}

static int count_lines(void *arg, uint64_t id, const unsigned char *p, size_t n)
{
    (void)id;
    uint64_t *c = arg;
    (*c)++;
    for (size_t i = 0; i < n; i++)
        *c += p[i] == '\n';
    return EDDY_OK;
}

static int count_input(void *arg, const pview *v)
{
    (void)v;
    (*(uint64_t *)arg)++;
    return EDDY_OK;
}

static int sq_counts_get(eddy__store *base, eddy__store_counts *out)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite3_stmt *st = s->st[ST_COUNTS];
    int r = rows_settle(s);
    if (r != EDDY_OK)
        return r;
    r = read_step(s, st, "counting");
    if (r < 0)
        return r;
    out->keys = col_u64(st, 0);
    finish(st);
    out->pending = 0;
    r = inputs_each(s, count_input, &out->pending);
    out->outbox = 0;
    if (r == EDDY_OK)
        r = outbox_rows(s, count_lines, &out->outbox);
    out->journal = 0;
    return r != EDDY_OK ? r : journal_all(s, count_rec, &out->journal);
}

/* ---------------------------------------------------------------- open and close */

static void live_leave(sqlite_store *s);

static void sq_close(eddy__store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->db != NULL) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        for (int i = 0; i < ST__COUNT; i++)
            sqlite3_finalize(s->st[i]);
        for (int i = 0; i <= META_DUE_MAX; i++)
            sqlite3_finalize(s->meta_set[i]);
        /* A connection that failed to close still holds its locks on the
         * index: it stays counted, so that no check opens (and closes) it. */
        if (sqlite3_close(s->db) == SQLITE_OK)
            live_leave(s);
    } else {
        live_leave(s);
    }
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    if (s->sync_lock_ok)
        uv_mutex_destroy(&s->sync_lock);
    txn_reset(s);
    rows_reset(s);
    free(s->dout.p);
    free(s->scratch_cut.p);
    free(s->repack.p);
    free(s->txn);
    free(s->sparse);
    free(s->jbuf.p);
    for (size_t i = 0; i < s->runs.cap; i++)
        if (s->runs.slots[i].key != NULL)
            run_free(s->runs.slots[i].value);
    eddy__map_free(&s->runs);
    for (size_t i = 0; i < s->rows.cap; i++)
        if (s->rows.slots[i].key != NULL)
            free(s->rows.slots[i].value);
    eddy__map_free(&s->rows);
    pend_free_all(s);
    eddy__forkfd_remove(s->lock_fd);
    eddy__forkfd_remove(s->dir_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    if (s->dir_fd >= 0)
        close(s->dir_fd); /* and this one */
    free(s->dir);
    free(s->db_path);
    free(s);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/*
 * A state whose database file is gone or empty, or whose write-ahead log is
 * gone or cut short, is refused before SQLite opens it: SQLite would make an
 * empty database and delete the WAL beside it (it does so for a database of
 * no pages), and eddy would start afresh, reading every input and running
 * every durable call again; it would read a database whose WAL is gone as it
 * was at the last checkpoint.
 *
 * Which files a crash can leave: the directory is made, then LOCK (empty),
 * then SQLite makes eddy.db (empty), and setting WAL mode writes the
 * database's header (one page, synced) before the WAL is made; the schema's
 * commit is the WAL's first frames; then the WAL is given its size. So a
 * crash leaves either no eddy.db or an empty one with no WAL (a brand-new
 * state: it starts), or a database of a page or more. An empty or missing
 * eddy.db beside a WAL that holds anything is damage. One beside no WAL is
 * what a crash at creation leaves and also what removing or truncating the
 * database of a state stopped cleanly (no WAL) leaves: LOCK tells them apart.
 * Once the state holds its first commit, eddy writes lock_mark into LOCK
 * (mark_lock); a missing or empty eddy.db in a directory whose LOCK holds it
 * is refused. States made by an older eddy get the mark at their next open.
 *
 * SQLite deletes the WAL (and its index, eddy.db-shm) only at a clean close,
 * after copying every frame into the database. After a crash both stay, and
 * the index's header says how many frames the WAL holds (mxFrame) and how
 * many are in the database already (nBackfill). When the WAL is gone or
 * shorter than those frames while the index says some were not copied, the
 * state lost commits: refused too (wal_index_frames).
 *
 * When both are gone, the files are those of a clean stop, and a count
 * tells them apart. Each commit sets meta commits to the number of commits
 * the state holds (sq_commit_nosync), and once a sync of the WAL returns,
 * LOCK's second line says how many were made durable: "synced " and 20
 * digits, written with one pwrite at a fixed offset over the one before
 * (lock_record), with no fsync: after a power loss it may hold an older
 * count, never one above what the WAL made durable. A database whose count
 * is below LOCK's lost commits that were on disk (its WAL and index removed
 * after a kill, or an older copy put in its place): refused (lock_behind).
 * LOCK is read before the database's snapshot (an inspection beside a run:
 * what the run records meanwhile, the snapshot then holds too), twice (a
 * read may meet the line being written), and believed only in its exact
 * form; a LOCK without the line (an older eddy's) checks nothing. Removing
 * LOCK accepts the loss: the next open makes it again, and the count goes
 * on from the database's.
 */
static const char lock_mark[] = "eddy state: eddy.db holds it; do not remove eddy.db alone\n";

/* LOCK's second line ("synced " and 20 digits), right after lock_mark. */
#define LOCK_LINE_AT  (sizeof(lock_mark) - 1)
#define LOCK_LINE_LEN 28

static int lock_marked_fd(int fd)
{
    char b[sizeof(lock_mark)];
    ssize_t n = pread(fd, b, sizeof(lock_mark) - 1, 0);
    return n == (ssize_t)sizeof(lock_mark) - 1 && memcmp(b, lock_mark, (size_t)n) == 0;
}

/* Whether DIR/LOCK holds the mark of a state that held a commit. */
static int dir_lock_marked(const char *dir)
{
    char *path = path_join(dir, "LOCK");
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) : -1;
    free(path);
    int marked = fd >= 0 && lock_marked_fd(fd);
    if (fd >= 0)
        close(fd);
    return marked;
}

/* Whether LOCK holds the mark: through the lock's descriptor when this
 * store holds it, else (an inspection) by reading the file, when it may. */
static int lock_marked(sqlite_store *s)
{
    return s->lock_fd >= 0 ? lock_marked_fd(s->lock_fd) : dir_lock_marked(s->dir);
}

/* Once open for writing (the state holds a commit, synced): mark LOCK,
 * the directory synced first (unless dir_synced: the open just did) so that
 * eddy.db's name is on disk before the mark is. Best effort: a state
 * without the mark works as before, and the next open tries again. */
static void mark_lock(sqlite_store *s, int dir_synced)
{
    if (lock_marked_fd(s->lock_fd)) {
        s->lock_line = 1;
        return;
    }
    if (!dir_synced && eddy__paths_sync_dir(s->dir) != 0)
        return;
    if (pwrite(s->lock_fd, lock_mark, sizeof(lock_mark) - 1, 0) == (ssize_t)sizeof(lock_mark) - 1) {
        (void)fdatasync(s->lock_fd);
        s->lock_line = 1;
    }
}

/* The count of LOCK's second line as read through fd, or 0 when LOCK does
 * not hold the mark and the line in their exact form. Taken when two reads
 * in a row agree: an inspection's read may meet a run's write. */
static uint64_t lock_line_fd(int fd)
{
    enum { N = sizeof(lock_mark) - 1 + LOCK_LINE_LEN };
    char a[N], b[N];
    int same = 0;
    if (pread(fd, a, N, 0) != N)
        return 0;
    for (int i = 0; i < 3 && !same; i++) {
        if (pread(fd, b, N, 0) != N)
            return 0;
        same = memcmp(a, b, N) == 0;
        memcpy(a, b, N);
    }
    const char *l = a + LOCK_LINE_AT;
    if (!same || memcmp(a, lock_mark, LOCK_LINE_AT) != 0 || memcmp(l, "synced ", 7) != 0 ||
        l[LOCK_LINE_LEN - 1] != '\n')
        return 0;
    uint64_t v = 0;
    for (int i = 7; i < LOCK_LINE_LEN - 1; i++) {
        if (l[i] < '0' || l[i] > '9' || v > ((uint64_t)INT64_MAX - (uint64_t)(l[i] - '0')) / 10)
            return 0; /* not a digit, or above any count (an SQLite integer) */
        v = v * 10 + (uint64_t)(l[i] - '0');
    }
    return v;
}

/* LOCK's count, into s->lock_synced: through the lock's descriptor when
 * this store holds it, else (an inspection) by reading the file. Before
 * the database's snapshot is read. */
static void lock_line_read(sqlite_store *s)
{
    if (s->lock_fd >= 0) {
        s->lock_synced = lock_line_fd(s->lock_fd);
        return;
    }
    char *path = path_join(s->dir, "LOCK");
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd >= 0) {
        s->lock_synced = lock_line_fd(fd);
        close(fd);
    }
}

/* A sync (or a COMMIT at synchronous=FULL) made the first `commits` commits
 * durable: LOCK says so, when it holds fewer. sync_lock held. One pwrite;
 * one that fails leaves the count before, and the next sync tries again. */
static void lock_record(sqlite_store *s, uint64_t commits)
{
    if (!s->lock_line || commits <= s->lock_synced)
        return;
    char line[LOCK_LINE_LEN + 1];
    snprintf(line, sizeof(line), "synced %020llu\n", (unsigned long long)commits);
    if (pwrite(s->lock_fd, line, LOCK_LINE_LEN, (off_t)LOCK_LINE_AT) == LOCK_LINE_LEN)
        s->lock_synced = commits;
}

/* The count the syncs made durable goes into LOCK (lock_record), after the
 * sync's waiters were told: its pwrite (and the inode's mtime) is not in
 * their way. */
static void sq_sync_note(eddy__store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s->sync_lock_ok)
        uv_mutex_lock(&s->sync_lock);
    lock_record(s, s->lock_due);
    if (s->sync_lock_ok)
        uv_mutex_unlock(&s->sync_lock);
}

/* Refused when the database holds fewer commits than LOCK says were made
 * durable (see above). */
static int lock_behind(sqlite_store *s, uint64_t commits, eddy_error **err)
{
    if (commits >= s->lock_synced)
        return EDDY_OK;
    unsigned long long lost = (unsigned long long)(s->lock_synced - commits);
    return eddy__error_set(err, EDDY_ESTATE, "state",
                           "%s holds the state as of its commit %llu, but %s/LOCK says that "
                           "commit %llu was made durable: %llu commit%s lost and the state is "
                           "damaged (were eddy.db-wal and eddy.db-shm removed after eddy was "
                           "killed, eddy.db-wal damaged, or eddy.db replaced by an older copy?); "
                           "put back what was removed or replaced, or "
                           "remove %s/LOCK to go on from eddy.db as it is (the durable calls of "
                           "the lost commits run again), or remove the directory %s (or give "
                           "another --state directory) to start over",
                           s->db_path, (unsigned long long)commits, s->dir,
                           (unsigned long long)s->lock_synced, lost, lost == 1 ? " is" : "s are",
                           s->dir, s->dir);
}

/* The size of DIR/eddy.db<suffix>: -1 when it is not there, -2 when it is
 * not a regular file or cannot be looked at. */
/* The path of the database file's sibling ("-wal", "-shm"): malloc'd, or
 * NULL. */
static char *db_sibling(const sqlite_store *s, const char *suffix)
{
    size_t n = strlen(s->db_path), k = strlen(suffix);
    char *path = malloc(n + k + 1);
    if (path != NULL) {
        memcpy(path, s->db_path, n);
        memcpy(path + n, suffix, k + 1);
    }
    return path;
}

static long long file_size(const sqlite_store *s, const char *suffix)
{
    char *path = db_sibling(s, suffix);
    if (path == NULL)
        return -2;
    struct stat sb;
    long long size = stat(path, &sb) != 0  ? (errno == ENOENT ? -1 : -2)
                     : S_ISREG(sb.st_mode) ? (long long)sb.st_size
                                           : -2;
    free(path);
    return size;
}

#ifdef EDDY_TEST_HOOKS
static void (*test_index_hook)(void *);
static void *test_index_hook_arg;

void eddy__store_sqlite_test_index_hook(void (*fn)(void *), void *arg)
{
    test_index_hook = fn;
    test_index_hook_arg = arg;
}
#endif

/* SQLite's unix VFS (os_unix.c) holds a shared POSIX lock on this byte of
 * the index (UNIX_SHM_DMS: (22 + SQLITE_SHM_NLOCK) * 4 + SQLITE_SHM_NLOCK)
 * while a connection has the database open, and the first connection to
 * come takes it exclusively to rebuild the index from the WAL. */
#define SHM_DMS_BYTE 128

/* When this boot began, in seconds since the epoch (btime in /proc/stat,
 * rounded down), or -1 when unknown. */
static long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (f == NULL)
        return -1;
    char line[256];
    long long t = -1;
    int at_start = 1; /* of a line: a long one ("intr") comes in pieces */
    while (t < 0 && fgets(line, sizeof(line), f) != NULL) {
        if (at_start && strncmp(line, "btime ", 6) == 0) {
            char *end = NULL;
            errno = 0;
            long long v = strtoll(line + 6, &end, 10);
            t = errno == 0 && end != line + 6 && v > 0 ? v : -2;
        }
        at_start = strchr(line, '\n') != NULL;
    }
    fclose(f);
    return t > 0 ? t : -1;
}

/* The index's header (two copies of 48 bytes, then the checkpoint's
 * information: nBackfill at 96), when it is whole (both copies equal). */
#define SHM_HEADER 136
static int read_index_header(int fd, unsigned char h[SHM_HEADER])
{
    return pread(fd, h, SHM_HEADER, 0) == SHM_HEADER && memcmp(h, h + 48, 48) == 0;
}

/* What the WAL's index says of it: 1 when no connection has the index open,
 * its header is whole and says that frames past nBackfill were not copied
 * into the database, and it stayed the same while the WAL's size (*wal,
 * file_size()) was taken; with the WAL's size those frames need. SQLite's
 * layout (wal.c): iVersion 3007000, isInit at 12, szPage at 14, mxFrame at
 * 16, in the machine's byte order.
 *
 * A live connection's index is never looked at: one in another process (a
 * running eddy beside eddy inspect, or sqlite3) appends frames and then
 * says so in the index, so a size taken before the header is read can be
 * short of it; the other order meets a clean close, which copies the
 * frames and then removes the index and the WAL. F_GETLK asks whether any
 * process holds the byte above, without taking a lock or writing anything;
 * it does not see this process's own locks: the check runs before this
 * store's connection opens, and not at all while another store of this
 * process has the state open (live_states). A connection that comes between that
 * question and the WAL's size changes the header (it rebuilds it, appends,
 * or copies frames at its close), so the header is read again: the size
 * is compared with it only when it did not change.
 *
 * Nor is an index last written before this boot: SQLite writes it through a
 * shared mapping and never syncs it, so after a power loss it may count
 * frames that never reached the WAL on disk (commits that were never
 * acknowledged: eddy's outputs wait for the WAL's sync), and SQLite, whose
 * first connection rebuilds the index from the WAL, opens such a state
 * correctly. Every connection of this boot made or truncated the file, so
 * its mtime is this boot's; after a kill (the same boot) it is checked. With
 * the boot time unknown, it is checked. */
static int wal_index_frames(sqlite_store *s, long long *wal, uint32_t *frames, uint32_t *copied,
                            long long *need)
{
    char *path = db_sibling(s, "-shm");
    if (path == NULL)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return 0;
    struct flock lk = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SHM_DMS_BYTE, .l_len = 1};
    unsigned char h[SHM_HEADER], again[SHM_HEADER];
    uint32_t version = 0, mx = 0, backfill = 0;
    uint16_t sz = 0;
    struct stat sb;
    long long boot = boot_time();
    int ok = fstat(fd, &sb) == 0 && (boot < 0 || (long long)sb.st_mtim.tv_sec >= boot) &&
             fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type == F_UNLCK && read_index_header(fd, h);
    if (ok) {
        memcpy(&version, h, 4);
        memcpy(&sz, h + 14, 2);
        memcpy(&mx, h + 16, 4);
        memcpy(&backfill, h + 96, 4);
        ok = version == 3007000 && h[12] == 1 && mx > backfill;
    }
    if (ok) {
#ifdef EDDY_TEST_HOOKS
        if (test_index_hook != NULL)
            test_index_hook(test_index_hook_arg);
#endif
        *wal = file_size(s, "-wal");
        ok = read_index_header(fd, again) && memcmp(h, again, SHM_HEADER) == 0;
    }
    close(fd);
    if (!ok)
        return 0;
    long long page = sz == 1 ? 65536 : sz;
    *frames = mx;
    *copied = backfill;
    *need = 32 + (long long)mx * (page + 24);
    return 1;
}

/*
 * The states this process has open, by their directory's device and inode.
 * POSIX locks are the process's: F_GETLK does not see those of this
 * process's connections, and closing any descriptor of the index drops
 * them all, SQLite's lock on its DMS byte among them; a connection of
 * another process that came then would take the index for a dead one's and
 * rebuild it under the live connections (eddy_state_inspect() on another
 * thread beside a run did so). So the check does not open the index of a
 * state that another store of this process has open: each store is counted
 * here, under the same mutex as its check, before its connection opens, and
 * until that is closed (sq_close).
 */
typedef struct live_state {
    dev_t dev;
    ino_t ino;
    int stores;
    struct live_state *next;
} live_state;

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static live_state *live_states;

/* Counts s among the stores open on its state (the lock held): 1 when
 * another store of this process has it open, or when s cannot be counted
 * (then nothing tells). */
static int live_enter(sqlite_store *s)
{
    struct stat sb;
    if (stat(s->dir, &sb) != 0)
        return 0; /* no directory: no state, and nothing to open */
    live_state *l = live_states;
    while (l != NULL && (l->dev != sb.st_dev || l->ino != sb.st_ino))
        l = l->next;
    if (l == NULL && (l = calloc(1, sizeof(*l))) == NULL)
        return 1;
    if (l->stores == 0) {
        l->dev = sb.st_dev;
        l->ino = sb.st_ino;
        l->next = live_states;
        live_states = l;
    }
    s->live = l;
    return l->stores++ > 0;
}

/* live_lock held. */
static void live_leave_locked(sqlite_store *s)
{
    if (s->live == NULL)
        return;
    if (--s->live->stores == 0) {
        live_state **p = &live_states;
        while (*p != s->live)
            p = &(*p)->next;
        *p = s->live->next;
        free(s->live);
    }
    s->live = NULL;
}

static void live_leave(sqlite_store *s)
{
    if (s->live == NULL)
        return;
    pthread_mutex_lock(&live_lock);
    live_leave_locked(s);
    pthread_mutex_unlock(&live_lock);
}

static int check_files(sqlite_store *s, int others, eddy_error **err)
{
    long long db = file_size(s, "");
    if (db == -2)
        return EDDY_OK; /* not a regular file, or unreadable: the open says why */
    if (db > 0) {
        uint32_t frames = 0, copied = 0;
        long long need = 0, wal = 0;
        if (others || !wal_index_frames(s, &wal, &frames, &copied, &need) || wal >= need ||
            wal == -2)
            return EDDY_OK;
        char now[64];
        if (wal < 0)
            snprintf(now, sizeof(now), "is missing");
        else
            snprintf(now, sizeof(now), "is cut short (%lld bytes)", wal);
        return eddy__error_set(err, EDDY_ESTATE, "state",
                               "%s-wal %s, but %s-shm says that it holds %lu frames of committed "
                               "transactions (%lld bytes), %lu of them not yet copied into %s: "
                               "the state is damaged (was the write-ahead log removed or cut "
                               "after eddy was killed?); put %s-wal back, or remove the directory "
                               "%s (or give another --state directory) to start over",
                               s->db_path, now, s->db_path, (unsigned long)frames, need,
                               (unsigned long)(frames - copied), s->db_path, s->db_path, s->dir);
    }
    long long wal = file_size(s, "-wal");
    int marked = lock_marked(s);
    if (!marked && wal <= 0)
        return EDDY_OK; /* a new state, or one whose first eddy stopped before its first commit */
    char why[512];
    if (wal > 0)
        snprintf(why, sizeof(why), "its write-ahead log %s-wal (%lld bytes) is there", s->db_path,
                 wal);
    else
        snprintf(why, sizeof(why), "%s/LOCK says that the directory held a state", s->dir);
    return eddy__error_set(err, EDDY_ESTATE, "state",
                           "state database %s %s, but %s: the state is damaged, and starting "
                           "afresh would read every input and run every durable call again; put "
                           "eddy.db back (from a backup: one that lacks the last commits made "
                           "durable is refused unless %s/LOCK is removed too), or remove the "
                           "directory %s (or give another --state directory) to start over",
                           s->db_path, db < 0 ? "is missing" : "is empty (0 bytes)", why, s->dir,
                           s->dir);
}

static int check_state_files(sqlite_store *s, eddy_error **err)
{
    pthread_mutex_lock(&live_lock);
    int r = check_files(s, live_enter(s), err);
    /* Only a store that goes on to open counts: a refused one counted
     * until its close would make another look skip the check, and its
     * open rebuild the index that showed the damage. */
    if (r != EDDY_OK)
        live_leave_locked(s);
    pthread_mutex_unlock(&live_lock);
    return r;
}

/* A directory that holds files but no state (no eddy.db) is not adopted as
 * one: `--state .` or a mistyped path would spread eddy's files among the
 * user's. Hidden entries (".gitignore"), lost+found (a file system of its
 * own for the state) and the files of a state whose database is not made
 * yet (LOCK, SQLite's) are fine; so is a LOCK that says the directory held
 * a state (its eddy.db is gone: the checks of the state's files say so). */
static int check_foreign_dir(const char *dir, eddy_error **err)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return EDDY_OK; /* what cannot be listed fails, if at all, at the next step */
    const char *other = NULL;
    int has_db = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strcmp(n, "eddy.db") == 0)
            has_db = 1;
        else if (n[0] != '.' && strcmp(n, "LOCK") != 0 && strcmp(n, "lost+found") != 0 &&
                 strncmp(n, "eddy.db-", 8) != 0 && other == NULL)
            other = n;
        if (has_db)
            break;
    }
    int rc = EDDY_OK;
    if (!has_db && other != NULL && !dir_lock_marked(dir))
        rc = eddy__error_set(err, EDDY_ESTORE, "store",
                             "state directory %s holds other files (%s) and no eddy state: give "
                             "a new or empty directory, or the one an earlier run filled",
                             dir, other);
    closedir(d);
    return rc;
}

static int make_dir(const char *dir, eddy_error **err)
{
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return check_foreign_dir(dir, err);
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "state directory %s exists and is not a directory", dir);
    }
    if (errno == ENOENT && mkdir(dir, 0700) == 0) {
        (void)eddy__paths_sync_parent(dir); /* best effort: the database is synced later */
        return EDDY_OK;
    }
    int e = errno;
    if (e == ENOENT) {
        /* Mostly a missing parent; but /proc and the like refuse with
         * ENOENT under a parent that is there. */
        char *copy = strdup(dir);
        if (copy == NULL)
            return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
        const char *parent = dirname(copy);
        int rc = stat(parent, &sb) != 0
                     ? eddy__error_set(err, EDDY_ESTORE, "store",
                                       "cannot create state directory %s: directory %s does not "
                                       "exist",
                                       dir, parent)
                     : eddy__error_set(err, EDDY_ESTORE, "store",
                                       "cannot create state directory %s: %s", dir, strerror(e));
        free(copy);
        return rc;
    }
    return eddy__error_set(err, EDDY_ESTORE, "store", "cannot create state directory %s: %s", dir,
                           strerror(e));
}

static int refuse_unwritable(const char *what, const char *path, int e, eddy_error **err);

/* A lock without waiting on fd: 0, or errno (never EINTR). */
static int flock_now(int fd)
{
    int r;
    while ((r = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
        ;
    return r == 0 ? 0 : errno;
}

/*
 * One eddy at a time works on a state: it holds an flock on the directory
 * itself and one on DIR/LOCK. LOCK's alone let a second eddy in once LOCK
 * was removed under a running one (the refusals that name LOCK say to
 * remove it): the second made a new LOCK, locked it, and both ran the same
 * runs, their outputs and durable calls twice. The directory cannot be
 * swapped under a run that way. A directory that cannot be opened, or
 * whose file system refuses the lock (any error but EWOULDBLOCK), keeps
 * LOCK's alone; NFS takes it as a lock of this host only (LOCK's lock is
 * NFS's own, across hosts). A program that locks the directory (flock(1)
 * around eddy) keeps eddy out as another eddy would: the message says so.
 */
static int take_lock(sqlite_store *s, eddy_error **err)
{
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    eddy__forkfd_add(s->dir_fd);
    int e = s->dir_fd >= 0 ? flock_now(s->dir_fd) : 0;
    if (e == EWOULDBLOCK)
        return eddy__error_set(err, EDDY_EBUSY, "store",
                               "another eddy uses state directory %s (an eddy process, or "
                               "another runtime in this process, holds the lock on the "
                               "directory; or another program locked it: flock(1) on the "
                               "directory, say, which eddy's own lock cannot share)",
                               s->dir);
    char *path = path_join(s->dir, "LOCK");
    if (path == NULL)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
    int rc = EDDY_OK;
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    e = s->lock_fd < 0 ? errno : 0;
    eddy__forkfd_add(s->lock_fd);
    if (s->lock_fd < 0 && (e == EROFS || e == EACCES || e == EPERM)) {
        /* Not there: the directory is what may not be written. */
        rc = access(path, F_OK) == 0 ? refuse_unwritable("the state's lock file", path, e, err)
                                     : refuse_unwritable("state directory", s->dir, e, err);
    } else if (s->lock_fd < 0) {
        rc = eddy__error_set(err, EDDY_ESTORE, "store", "cannot open lock file %s: %s", path,
                             strerror(e));
    } else if ((e = flock_now(s->lock_fd)) == EWOULDBLOCK) {
        rc = eddy__error_set(err, EDDY_EBUSY, "store",
                             "another eddy uses state directory %s (an eddy process, or another "
                             "runtime in this process, holds the lock on %s)",
                             s->dir, path);
    } else if (e != 0) {
        rc = eddy__error_set(err, EDDY_ESTORE, "store", "cannot lock %s: %s", path, strerror(e));
    }
    free(path);
    return rc;
}

/*
 * A state this process may not write is refused before anything runs.
 * SQLite opens a database file it may not write read-only without a word,
 * and a run would then call its actions, with their side effects, and fail
 * at its first commit; it also made the WAL and its index with the
 * database's mode, so that once the database was made writable again those
 * files kept the state read-only (SQLite still named eddy.db). Each check
 * names the file at fault and what to do. faccessat rather than a probing
 * open(2): closing a descriptor of a file drops this process's POSIX locks
 * on it, which SQLite's connections in this process may hold.
 */
static int refuse_unwritable(const char *what, const char *path, int e, eddy_error **err)
{
    if (e == EROFS)
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "%s %s is on a read-only file system: eddy writes its state there "
                               "and stopped before running anything; remount the file system "
                               "read-write, or copy the state directory to one that is",
                               what, path);
    return eddy__error_set(err, EDDY_ESTORE, "store",
                           "%s %s is not writable (%s): eddy writes its state there and stopped "
                           "before running anything; make it writable (chmod u+w %s) or run eddy "
                           "as the user who owns it",
                           what, path, strerror(e), path);
}

/* Before SQLite opens the database: the WAL and its index, when they are
 * there, and the directory, when one of them is to be made. */
static int check_writable_files(sqlite_store *s, eddy_error **err)
{
    static const char *const suffix[2] = {"-wal", "-shm"};
    size_t n = strlen(s->db_path);
    char *path = malloc(n + 5);
    if (path == NULL)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
    int missing = 0, r = EDDY_OK;
    memcpy(path, s->db_path, n);
    for (int i = 0; i < 2 && r == EDDY_OK; i++) {
        memcpy(path + n, suffix[i], 5);
        if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0)
            continue;
        if (errno == ENOENT)
            missing = 1;
        else
            r = refuse_unwritable(i == 0 ? "the state's write-ahead log"
                                         : "the state's shared-memory index",
                                  path, errno, err);
    }
    free(path);
    if (r == EDDY_OK && missing && faccessat(AT_FDCWD, s->dir, W_OK, AT_EACCESS) != 0)
        r = refuse_unwritable("state directory", s->dir, errno, err);
    return r;
}

/* After SQLite opened the database, before the first read (which makes the
 * WAL and its index): a database SQLite could open only read-only. */
static int check_db_writable(sqlite_store *s, eddy_error **err)
{
    if (sqlite3_db_readonly(s->db, "main") != 1)
        return EDDY_OK;
    int e = faccessat(AT_FDCWD, s->db_path, W_OK, AT_EACCESS) != 0 ? errno : EACCES;
    return refuse_unwritable("state database", s->db_path, e, err);
}

/* An error at open from SQLite (rc) while doing what. */
static int open_fail(sqlite_store *s, int rc, const char *what, eddy_error **err)
{
    const char *msg = s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "%s is not an eddy state database or is corrupted: %s", s->db_path,
                               msg);
    if ((rc & 0xff) == SQLITE_NOMEM)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory opening %s", s->db_path);
    char os[512];
    return eddy__error_set(err, EDDY_ESTORE, "store",
                           "cannot open state database %s: %s: %s (%s)%s", s->db_path, what,
                           rc_words(rc), msg, os_error(s->db, s->db_path, rc, os, sizeof(os)));
}

/* A database with tables but no meta table is something else than a state:
 * both opens (run and inspection) say so in the same words. */
#define HAS_META_SQL "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"

static int not_a_state(sqlite_store *s, eddy_error **err)
{
    return eddy__error_set(err, EDDY_ESTORE, "store",
                           "%s is not an eddy state database: it holds other tables", s->db_path);
}

/* ---------------------------------------------------------------- meta checked at open */

/*
 * Every meta value that eddy reads is checked once, when the state opens
 * (for a run and for an inspection), so that a damaged one is refused rather
 * than used: a sink_offset of -10 read as 2^64 - 10 cut nothing and lost the
 * committed lines past the file's end the next sync wrote over, a NULL
 * source_offset read as 0 read the whole input again. SQLite keeps any type
 * in any column (meta.v has none declared), so the type is checked as well as
 * the range. Names this eddy does not know are left alone: a later eddy may
 * add some (store.h). The reads during the run then need no check.
 */
enum {
    MV_REQUIRED = 1, /* every state since format 2 has it */
    MV_INT = 2,      /* an integer... */
    MV_MIN0 = 4,     /* ...0 or more */
    MV_MIN1 = 8,     /* ...1 or more */
    MV_TEXT = 16,    /* text */
    MV_FP = 32       /* a plan fingerprint: text of printable ASCII, 1 to 64 bytes */
};

static const struct meta_rule {
    const char *k;
    int how;
    const char *what; /* what the value should be, for the message */
} meta_rules[] = {
    {"source_offset", MV_REQUIRED | MV_INT | MV_MIN0, "a byte offset (an integer, 0 or more)"},
    {"source_line", MV_REQUIRED | MV_INT | MV_MIN0, "a line count (an integer, 0 or more)"},
    {"sink_offset", MV_REQUIRED | MV_INT | MV_MIN0, "a byte offset (an integer, 0 or more)"},
    {"outbox_next", MV_REQUIRED | MV_INT | MV_MIN1, "an outbox id (an integer, 1 or more)"},
    {"plan", MV_REQUIRED | MV_FP, "a plan fingerprint (1 to 64 printable characters)"},
    {"dead_offset", MV_INT | MV_MIN0, "a byte offset (an integer, 0 or more)"},
    {"next_run", MV_INT | MV_MIN0, "a run number (an integer, 0 or more)"},
    {"commits", MV_INT | MV_MIN0, "a commit count (an integer, 0 or more)"},
    {"input_head_len", MV_INT | MV_MIN0, "a length (an integer, 0 or more)"},
    /* Hashes: any 64 bits, stored as SQLite's signed integers. */
    {"input_head", MV_INT, "a hash (an integer)"},
    {"key_field", MV_INT, "a hash (an integer)"},
    {"output_id", MV_INT, "a hash (an integer)"},
    {"dead_id", MV_INT, "a hash (an integer)"},
    {"output_tail", MV_INT, "a hash (an integer)"},
    {"dead_tail", MV_INT, "a hash (an integer)"},
    {"key_field_name", MV_TEXT, "text"},
    {"output_path", MV_TEXT, "text"},
    {"dead_path", MV_TEXT, "text"},
    {"plan_actions", MV_TEXT, "text"},
};

/* Whether column i of st is what rule r asks. */
static int meta_value_ok(sqlite3_stmt *st, int i, const struct meta_rule *r)
{
    int type = sqlite3_column_type(st, i);
    if (r->how & MV_INT) {
        if (type != SQLITE_INTEGER)
            return 0;
        sqlite3_int64 v = sqlite3_column_int64(st, i);
        return !((r->how & MV_MIN0) && v < 0) && !((r->how & MV_MIN1) && v < 1);
    }
    if (type != SQLITE_TEXT)
        return 0;
    if (r->how & MV_FP) {
        const unsigned char *t = sqlite3_column_text(st, i);
        int n = sqlite3_column_bytes(st, i);
        if (t == NULL || n < 1 || n > 64)
            return 0;
        for (int j = 0; j < n; j++)
            if (t[j] <= 0x20 || t[j] >= 0x7f)
                return 0;
    }
    return 1;
}

static int meta_damaged(sqlite_store *s, sqlite3_stmt *st, const char *k, const char *what,
                        eddy_error **err)
{
    char v[256];
    return eddy__error_set(err, EDDY_ESTATE, "state",
                           "%s: the meta entry %s holds %s, not %s; the state is damaged",
                           s->db_path, k, value_words(st, 1, v, sizeof(v)), what);
}

/* The format version, first: a state of another format is refused for
 * that (its other values may mean something else), and one that is not a
 * version at all as damaged. */
static int check_format_version(sqlite_store *s, sqlite3_int64 *version, eddy_error **err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT k, v FROM meta WHERE k = 'format_version'", -1, &st,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int r = EDDY_OK;
    if (rc == SQLITE_DONE)
        r = eddy__error_set(err, EDDY_ESTORE, "store",
                            "%s is not an eddy state database: it has no format version",
                            s->db_path);
    else if (rc != SQLITE_ROW)
        r = open_fail(s, rc, "reading the format version", err);
    else if (sqlite3_column_type(st, 1) != SQLITE_INTEGER || sqlite3_column_int64(st, 1) < 1)
        r = meta_damaged(s, st, "format_version", "a format version (an integer, 1 or more)", err);
    else
        *version = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    return r;
}

/* Every other value eddy reads (meta_rules), for a state of a format this
 * eddy reads. */
static int check_meta(sqlite_store *s, eddy_error **err)
{
    enum { NRULES = sizeof(meta_rules) / sizeof(meta_rules[0]) };
    char seen[NRULES] = {0};
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT k, v FROM meta", -1, &st, NULL), r = EDDY_OK;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        const char *k = (const char *)sqlite3_column_text(st, 0);
        for (size_t i = 0; k != NULL && i < NRULES; i++) {
            if (strcmp(k, meta_rules[i].k) != 0)
                continue;
            seen[i] = 1;
            if (!meta_value_ok(st, 1, &meta_rules[i]))
                r = meta_damaged(s, st, k, meta_rules[i].what, err);
            break;
        }
        if (r != EDDY_OK)
            break;
    }
    sqlite3_finalize(st);
    if (r != EDDY_OK)
        return r;
    if (rc != SQLITE_DONE)
        return open_fail(s, rc, "reading meta", err);
    for (size_t i = 0; i < NRULES; i++)
        if ((meta_rules[i].how & MV_REQUIRED) && !seen[i])
            return eddy__error_set(err, EDDY_ESTATE, "state",
                                   "%s: the meta entry %s is missing; the state is damaged",
                                   s->db_path, meta_rules[i].k);
    return EDDY_OK;
}

/* Run a one-row query compiled on the spot (open only). *text (new, NULL for
 * no row or SQL NULL) and *num receive the first column. */
static int query_one(sqlite_store *s, const char *sql, char **text, sqlite3_int64 *num)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (text != NULL)
        *text = NULL;
    if (num != NULL)
        *num = 0;
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (num != NULL)
            *num = sqlite3_column_int64(st, 0);
        if (text != NULL && sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *text = strdup((const char *)sqlite3_column_text(st, 0));
            if (*text == NULL)
                rc = SQLITE_NOMEM;
        }
        if (rc == SQLITE_ROW)
            rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The state's commit count (meta commits; none in a state an older eddy
 * made: 0), checked against LOCK's (lock_behind). After check_meta, in the
 * snapshot the open reads. */
static int load_commits(sqlite_store *s, eddy_error **err)
{
    sqlite3_int64 n = 0;
    int rc = query_one(s, "SELECT v FROM meta WHERE k = 'commits'", NULL, &n);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the commit count", err);
    s->commits = (uint64_t)n;
    atomic_store(&s->commits_written, s->commits);
    return lock_behind(s, s->commits, err);
}

/* Set meta row k to the text v, at open, before the statements are prepared. */
static int meta_put_text(sqlite_store *s, const char *k, const char *v)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, stmt_sql[ST_META_SET], -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, v, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    sqlite3_finalize(st);
    return rc;
}

static int configure(sqlite_store *s, eddy_error **err)
{
    char *mode = NULL;
    sqlite3_int64 v = 0;
    sqlite3_extended_result_codes(s->db, 1);
    /* Other eddy processes are kept out by the flock, but `eddy inspect` may
     * read the file while this one opens it: before the file is in WAL mode
     * its read lock blocks the switch and the first transactions. Opening
     * waits for it (an inspection takes milliseconds); once open, the
     * connection waits only for a reader that takes the write lock for a
     * moment (on_busy): in WAL mode readers do not block the writer
     * otherwise, and the mailbox does not sleep. */
    sqlite3_busy_timeout(s->db, OPEN_BUSY_MS);

    /* The first statement reads the file header: a file that is not a
     * database fails here. A database of something else is refused before
     * switching it to WAL, which would rewrite its header. */
    sqlite3_int64 n_meta = 0, n_all = 0;
    int rc = query_one(s, HAS_META_SQL, NULL, &n_meta);
    if (rc == SQLITE_OK)
        rc = query_one(s, "SELECT count(*) FROM sqlite_master", NULL, &n_all);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the schema", err);
    if (n_meta == 0 && n_all > 0)
        return not_a_state(s, err);
    rc = query_one(s, "PRAGMA journal_mode=WAL", &mode, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "setting WAL mode", err);
    int wal = mode != NULL && strcmp(mode, "wal") == 0;
    if (!wal)
        rc = eddy__error_set(err, EDDY_ESTORE, "store",
                             "cannot open state database %s: journal_mode=WAL gave \"%s\"",
                             s->db_path, mode != NULL ? mode : "");
    free(mode);
    if (!wal)
        return rc;

    rc = query_one(s, "PRAGMA synchronous=FULL", NULL, NULL);
    if (rc == SQLITE_OK)
        rc = query_one(s, "PRAGMA synchronous", NULL, &v);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "setting synchronous=FULL", err);
    if (v != 2)
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "cannot open state database %s: synchronous is %lld, not FULL",
                               s->db_path, (long long)v);

    /* Debian builds SQLite with SECURE_DELETE on: every freed page is zeroed
     * and written again. eddy deletes all the time (pending inputs, journal
     * rows, outbox lines), and that was extra WAL frames in every commit
     * (W4: a journal row's ~50 overflow pages, 5.6 % of the mailbox's
     * instructions). FAST still zeroes deleted content in the pages a
     * commit writes anyway, and adds no writes. */
    rc = query_one(s, "PRAGMA secure_delete=FAST", NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "setting secure_delete=FAST", err);

    rc = query_one(s, "PRAGMA foreign_keys=OFF", NULL, NULL);
    if (rc == SQLITE_OK)
        rc = query_one(s, "PRAGMA foreign_keys", NULL, &v);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "setting foreign_keys=OFF", err);
    if (v != 0)
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "cannot open state database %s: foreign_keys stayed on", s->db_path);
    return EDDY_OK;
}

/*
 * Open our own descriptor of the WAL and give the file its working size.
 *
 * The descriptor splits the commit (store.h): with it the connection runs
 * synchronous=NORMAL, where COMMIT writes the frames to the WAL without
 * syncing it (SQLite still syncs the WAL before each checkpoint and the
 * database after it, so the database stays consistent), and fdatasync of the
 * descriptor, on the runtime's syncing thread, makes every commit written so
 * far durable. fdatasync works on the file, not on the descriptor, so it
 * covers SQLite's own writes. The WAL is the same file for the life of the
 * connection: SQLite overwrites it from the start after a checkpoint and
 * deletes it only at close (journal_size_limit stays -1, journal_mode WAL).
 * Without the descriptor the connection stays at synchronous=FULL.
 *
 * The size: SQLite appends each commit's frames to the WAL; while the file
 * grows, its fdatasync also has to commit the new file size through the
 * filesystem's journal (here ~200 us against ~85 us for a sync of blocks that
 * already exist). So the file is extended at once with written zeros to
 * wal_autocheckpoint frames and a quarter more, and every commit is an
 * overwrite. Safe for a WAL that holds frames: only bytes past its end are
 * written, and recovery stops at the first frame whose checksum fails, which
 * zeros do. SQLite deletes the WAL at a clean close, so each open does this
 * again (~5 MB, a few ms); keeping the file (SQLITE_FCNTL_PERSIST_WAL) would
 * keep its checkpointed frames too, and a later open would read pages from
 * them rather than from the database file. A failure to extend leaves the
 * file as it was: the size is only for speed.
 */
static int wal_open(sqlite_store *s, eddy_error **err)
{
    char *path = db_sibling(s, "-wal");
    if (path == NULL)
        return eddy__error_set(err, EDDY_ENOMEM, "memory", "out of memory");
    int fd = open(path, O_RDWR | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return EDDY_OK;
    sqlite3_int64 page = 0, frames = 0, sync = 0;
    int synced = 0, sync_e = 0;
    struct stat sb;
    if (query_one(s, "PRAGMA page_size", NULL, &page) == SQLITE_OK &&
        query_one(s, "PRAGMA wal_autocheckpoint", NULL, &frames) == SQLITE_OK && page > 0 &&
        frames > 0 && fstat(fd, &sb) == 0) {
        off_t want = 32 + (off_t)(frames + frames / 4) * (off_t)(page + 24);
        static const char zeros[65536];
        off_t at = sb.st_size;
        while (at < want) {
            size_t n = want - at < (off_t)sizeof(zeros) ? (size_t)(want - at) : sizeof(zeros);
            ssize_t w = pwrite(fd, zeros, n, at);
            if (w <= 0)
                break;
            at += w;
        }
        if (at > sb.st_size && at == want) {
            /* This sync covers the frames already there too (below). */
            synced = 1;
            if ((sync_e = eddy__fault("wal_open_sync")) == 0 && fdatasync(fd) != 0)
                sync_e = errno != 0 ? errno : EIO;
        }
        if (at > sb.st_size && (at < want || sync_e != 0)) {
            if (ftruncate(fd, sb.st_size) != 0) {
                /* the zeros past the frames stay; recovery ignores them */
            }
        }
    }
    /* A process killed between a commit and its sync leaves frames that may
     * not be on disk; the runs resumed from them must not build on them
     * (their next calls are not held back: nothing is known to wait for a
     * sync yet). One sync now covers whatever the WAL holds; when it fails,
     * nothing may go on (a second try could return 0: the kernel reports a
     * lost write-back once). */
    if (!synced && (sync_e = eddy__fault("wal_open_sync")) == 0 && fdatasync(fd) != 0)
        sync_e = errno != 0 ? errno : EIO;
    if (sync_e != 0) {
        close(fd);
        return eddy__error_set(err, EDDY_ESTORE, "store",
                               "cannot sync %s-wal to disk when opening the state: %s", s->db_path,
                               strerror(sync_e));
    }
    if (query_one(s, "PRAGMA synchronous=NORMAL", NULL, NULL) != SQLITE_OK ||
        query_one(s, "PRAGMA synchronous", NULL, &sync) != SQLITE_OK || sync != 1) {
        query_one(s, "PRAGMA synchronous=FULL", NULL, NULL);
        close(fd);
        return EDDY_OK;
    }
    s->wal_fd = fd;
    return EDDY_OK;
}

/* Inside the open transaction, the plan being the state's: the state's
 * description of it becomes this one when it has none (an older eddy made the
 * state) or another text. */
static int keep_plan_actions(sqlite_store *s, const char *actions, eddy_error **err)
{
    char *text = NULL;
    if (actions == NULL)
        return EDDY_OK;
    int rc = query_one(s, "SELECT v FROM meta WHERE k = 'plan_actions'", &text, NULL);
    int same = text != NULL && strcmp(text, actions) == 0;
    free(text);
    if (rc == SQLITE_OK && !same)
        rc = meta_put_text(s, "plan_actions", actions);
    return rc != SQLITE_OK ? open_fail(s, rc, "recording the plan's actions", err) : EDDY_OK;
}

/* The refusal of a state made for another plan (its fingerprint their_fp,
 * NULL when it has none): what differs, when the state describes its plan
 * (see store.h); the fingerprints otherwise. */
static int refuse_plan(sqlite_store *s, const char *their_fp, const char *fp, const char *actions,
                       eddy_error **err)
{
    char *theirs = NULL, *why = NULL;
    int rc = query_one(s, "SELECT v FROM meta WHERE k = 'plan_actions'", &theirs, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the plan's actions", err);
    if (theirs != NULL && their_fp != NULL && actions != NULL)
        why = eddy__plan_differences(theirs, their_fp, actions);
    if (why != NULL)
        rc = eddy__error_set(err, EDDY_ESTATE, "store",
                             "state directory %s belongs to another agent plan (%s); use another "
                             "--state directory, or remove %s to start over",
                             s->dir, why, s->dir);
    else
        rc = eddy__error_set(err, EDDY_ESTATE, "store",
                             "state directory %s belongs to another agent plan (its plan "
                             "fingerprint is %s, this plan's is %s%s); use another --state "
                             "directory, or remove %s to start over",
                             s->dir, their_fp != NULL ? their_fp : "(none)", fp,
                             their_fp != NULL && theirs == NULL
                                 ? "; an older eddy made the state without recording "
                                   "its plan's actions, so what changed is not known"
                                 : "",
                             s->dir);
    free(theirs);
    free(why);
    return rc;
}

/* Inside the open transaction: refuse a database of another format or plan. */
static int check_existing(sqlite_store *s, const char *fp, const char *actions, eddy_error **err)
{
    char *text = NULL;
    sqlite3_int64 version = 0;
    int r = check_format_version(s, &version, err);
    if (r != EDDY_OK)
        return r;
    if (version > EDDY_STORE_FORMAT_VERSION)
        return eddy__error_set(err, EDDY_ESTATE, "store",
                               "state directory %s was written by a newer eddy (format %lld, "
                               "this eddy reads formats %d to %d)",
                               s->dir, (long long)version, EDDY_STORE_FORMAT_OLDEST,
                               EDDY_STORE_FORMAT_VERSION);
    if (version < EDDY_STORE_FORMAT_OLDEST)
        return eddy__error_set(err, EDDY_ESTATE, "store",
                               "state directory %s has format %lld, written by an older eddy; "
                               "this eddy reads formats %d to %d (let the older eddy finish its "
                               "runs, or start with a new state directory)",
                               s->dir, (long long)version, EDDY_STORE_FORMAT_OLDEST,
                               EDDY_STORE_FORMAT_VERSION);
    /* Before anything is written: a damaged state is left as it is. */
    if ((r = check_meta(s, err)) != EDDY_OK || (r = load_commits(s, err)) != EDDY_OK)
        return r;
    int rc;
    if (version < EDDY_STORE_FORMAT_VERSION) {
        /* In this transaction (see store.h): the pending table becomes rows
         * of inputs, and the version changes, so that an older eddy no
         * longer takes the state. The other tables stay as they are. */
        sqlite3_int64 legacy = 0;
        rc = query_one(s, LEGACY_PENDING_SQL, NULL, &legacy);
        if (rc == SQLITE_OK && legacy > 0)
            rc = sqlite3_exec(s->db, INPUTS_TABLE_SQL, NULL, NULL, NULL);
        if (rc == SQLITE_OK && legacy > 0)
            rc = legacy_convert(s);
        if (rc == SQLITE_OK && legacy > 0)
            rc = sqlite3_exec(s->db, "DROP TABLE pending", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return open_fail(s, rc, "upgrading the pending inputs", err);
        char sql[96];
        snprintf(sql, sizeof(sql), "UPDATE meta SET v = %d WHERE k = 'format_version'",
                 EDDY_STORE_FORMAT_VERSION);
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return open_fail(s, rc, "upgrading the format version", err);
    }

    rc = query_one(s, "SELECT v FROM meta WHERE k = 'plan'", &text, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the plan fingerprint", err);
    r = text != NULL && strcmp(text, fp) == 0 ? keep_plan_actions(s, actions, err)
                                              : refuse_plan(s, text, fp, actions, err);
    free(text);
    return r;
}

/* Create the schema in a new database, or check an existing one; one
 * transaction. *created tells which. */
static int init_schema(sqlite_store *s, const char *fp, const char *actions, int *created,
                       eddy_error **err)
{
    sqlite3_int64 n_meta = 0, n_all = 0;
    int r = EDDY_OK;
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "beginning a transaction", err);
    rc = query_one(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                   NULL, &n_meta);
    if (rc == SQLITE_OK)
        rc = query_one(s, "SELECT count(*) FROM sqlite_master", NULL, &n_all);
    if (rc != SQLITE_OK) {
        r = open_fail(s, rc, "reading the schema", err);
        goto fail;
    }
    *created = n_meta == 0;
    if (n_meta > 0) {
        r = check_existing(s, fp, actions, err);
        if (r != EDDY_OK)
            goto fail;
    } else if (n_all > 0) {
        r = eddy__error_set(err, EDDY_ESTORE, "store",
                            "%s is not an eddy state database: it holds other tables", s->db_path);
        goto fail;
    } else if ((r = lock_behind(s, 0, err)) != EDDY_OK) {
        goto fail; /* a database with no tables where LOCK counts commits */
    } else {
        sqlite3_stmt *st = NULL;
        rc = sqlite3_exec(s->db, schema_sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_prepare_v2(s->db,
                                    "INSERT INTO meta(k, v) VALUES ('format_version', ?1), "
                                    "('plan', ?2)",
                                    -1, &st, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 1, EDDY_STORE_FORMAT_VERSION);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, fp, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
        sqlite3_finalize(st);
        if (rc == SQLITE_OK && actions != NULL)
            rc = meta_put_text(s, "plan_actions", actions);
        if (rc != SQLITE_OK) {
            r = open_fail(s, rc, "creating the schema", err);
            goto fail;
        }
    }
    rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = eddy__walvfs_settle(s->db);
    if (rc != SQLITE_OK) {
        r = open_fail(s, rc, "committing the schema", err);
        goto fail;
    }
    return EDDY_OK;
fail:
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

static int prepare_all(sqlite_store *s, eddy_error **err)
{
    for (int i = 0; i < ST__COUNT; i++) {
        int rc =
            sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (rc != SQLITE_OK)
            return open_fail(s, rc, "preparing statements", err);
    }
    return EDDY_OK;
}

/* A row's lines have the ids up to the row's own, one each: they start
 * after the row before (last), at 1 or above. */
typedef struct outbox_walk {
    sqlite_store *s;
    uint64_t last; /* the id of the row before */
} outbox_walk;

static int check_outbox_row(void *arg, uint64_t id, const unsigned char *p, size_t n)
{
    outbox_walk *w = arg;
    uint64_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += p[i] == '\n';
    if (id == (uint64_t)INT64_MAX) { /* the next line's id would not be an SQLite integer */
        snprintf(w->s->errmsg, sizeof(w->s->errmsg),
                 "%s: the outbox row %lld leaves no id for the next line; the state is damaged",
                 w->s->db_path, (long long)id);
        return EDDY_ESTATE;
    }
    if ((int64_t)id < 1 || lines > id || id - (lines - 1) <= w->last) {
        if (w->last == 0)
            snprintf(w->s->errmsg, sizeof(w->s->errmsg),
                     "%s: the outbox row %lld holds %llu line%s, more than its id allows; the "
                     "state is damaged",
                     w->s->db_path, (long long)id, (unsigned long long)lines,
                     lines == 1 ? "" : "s");
        else
            snprintf(w->s->errmsg, sizeof(w->s->errmsg),
                     "%s: the outbox row %lld holds %llu lines, which do not fit after the row "
                     "%llu before it; the state is damaged",
                     w->s->db_path, (long long)id, (unsigned long long)lines,
                     (unsigned long long)w->last);
        return EDDY_ESTATE;
    }
    w->last = id;
    return EDDY_OK;
}

/* The outbox's rows checked, and outbox_next from meta: never below the
 * largest id present. */
static int load_outbox_next(sqlite_store *s, eddy_error **err)
{
    outbox_walk w = {s, 0};
    int r = outbox_rows(s, check_outbox_row, &w);
    if (r != EDDY_OK)
        return eddy__error_set(err, r == EDDY_ESTATE ? EDDY_ESTATE : EDDY_ESTORE, "store", "%s",
                               s->errmsg);
    uint64_t next = 0;
    if (meta_get_u64(s, "outbox_next", &next) != EDDY_OK)
        return eddy__error_set(err, EDDY_ESTORE, "store", "%s", s->errmsg);
    if (next > (uint64_t)INT64_MAX)
        return eddy__error_set(err, EDDY_ESTATE, "store",
                               "%s: the outbox's next id %llu is not an SQLite integer; the "
                               "state is damaged",
                               s->db_path, (unsigned long long)next);
    if (next <= w.last)
        next = w.last + 1;
    s->outbox_next = next;
    s->outbox_saved = next;
    return EDDY_OK;
}

/* Inspection: no lock, no writes, any plan. WAL lets it read a consistent
 * snapshot while an eddy process works on the directory. */
/*
 * A reader of a state in WAL mode needs the shared-memory file beside it: to
 * create it when it is not there, it needs to write in the directory. A
 * state that was stopped cleanly has neither that file nor a WAL, and then
 * the database file is all there is: when the reader may not write there
 * (another user's state, a read-only directory or mount), it is opened as
 * immutable, without locks. So it is when the reader may not write the
 * database itself: SQLite would make the WAL and its index with the
 * database's mode (0444, say), and once the database was made writable
 * again a run would find them read-only. A writer could only start by
 * creating those files, and what it would change before this short read
 * ends is at worst a report that reads as damaged; the state itself is never
 * touched. The same goes for a file system too full for the index (32 KiB):
 * SQLite fails with "disk I/O error" (ENOSPC) and leaves an empty WAL and a
 * stub of the index behind; without a WAL (or with the empty one that the
 * failed attempt made) the database file is read alone. With frames in the
 * WAL the index is needed: then the message says so.
 */
/* Whether the WAL is not there (or, empty_too, holds nothing): then the
 * database file holds every commit. */
static int wal_unused(const sqlite_store *s, int empty_too)
{
    char *wal = db_sibling(s, "-wal");
    if (wal == NULL)
        return 0;
    struct stat sb;
    int unused =
        stat(wal, &sb) != 0 ? errno == ENOENT : empty_too && S_ISREG(sb.st_mode) && sb.st_size == 0;
    free(wal);
    return unused;
}

/* Less room in the directory's file system than the shared-memory index
 * takes (32 KiB for a WAL of up to 4062 frames, and a file). */
#define SHM_ROOM (64 * 1024)
static int no_room(const sqlite_store *s)
{
    struct statvfs v;
    if (statvfs(s->dir, &v) != 0)
        return 0;
    unsigned long long free_blocks = geteuid() == 0 ? v.f_bfree : v.f_bavail;
    return free_blocks * v.f_frsize < SHM_ROOM || v.f_favail == 0;
}

/* Whether errno e (of a failure SQLite met) means a full file system. */
static int is_full(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

/* Whether the reader would have to make the WAL and its index where it may
 * not, or with a mode that keeps a later run out (see above). */
static int reader_may_not_write(const sqlite_store *s)
{
    return faccessat(AT_FDCWD, s->db_path, W_OK, AT_EACCESS) != 0 ||
           faccessat(AT_FDCWD, s->dir, W_OK, AT_EACCESS) != 0;
}

static int reopen_immutable(sqlite_store *s)
{
    size_t n = strlen(s->db_path);
    char *uri = malloc(3 * n + 32);
    if (uri == NULL)
        return SQLITE_NOMEM;
    /* A URI: the characters it gives a meaning to are escaped. */
    char *o = uri + sprintf(uri, "file:");
    for (const char *c = s->db_path; *c != '\0'; c++)
        o += *c == '%' || *c == '?' || *c == '#' ? sprintf(o, "%%%02X", (unsigned char)*c)
                                                 : (*o = *c, 1);
    strcpy(o, "?immutable=1");
    sqlite3_close(s->db);
    s->db = NULL;
    int rc = sqlite3_open_v2(uri, &s->db,
                             SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK)
        sqlite3_extended_result_codes(s->db, 1);
    free(uri);
    return rc;
}

static int open_readonly(sqlite_store *s, eddy_error **err)
{
    struct stat sb;
    lock_line_read(s); /* before the snapshot: see lock_mark */
    int r = check_state_files(s, err);
    if (r != EDDY_OK)
        return r;
    if (stat(s->db_path, &sb) != 0) {
        int e = errno;
        /* A directory, but not a state's: "No such file or directory" named
         * eddy.db, which the message did not. */
        if (e == ENOENT && stat(s->dir, &sb) == 0 && S_ISDIR(sb.st_mode))
            return eddy__error_set(err, EDDY_ENOTFOUND, "store",
                                   "%s: no eddy state here: the directory holds no eddy.db (give "
                                   "the --state directory of a run)",
                                   s->dir);
        return eddy__error_set(err, EDDY_ENOTFOUND, "store", "%s: no eddy state here (%s)", s->dir,
                               strerror(e));
    }
    int rc = sqlite3_open_v2(s->db_path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "opening", err);
    sqlite3_extended_result_codes(s->db, 1);
    int immutable = wal_unused(s, 0) && (reader_may_not_write(s) || no_room(s));
    if (immutable && (rc = reopen_immutable(s)) != SQLITE_OK)
        return open_fail(s, rc, "opening", err);
    sqlite3_busy_timeout(s->db, 1000);
    sqlite3_int64 version = 0;
    sqlite3_int64 tables = 0;
    rc = query_one(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", NULL, &tables);
    /* The index could not be made, or not given its size, after all: the
     * WAL that this very attempt may have made holds nothing either. */
    int full = ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN) &&
               is_full(sqlite3_system_errno(s->db));
    if (!immutable && ((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN || full)) {
        if (wal_unused(s, full)) {
            if (reopen_immutable(s) == SQLITE_OK)
                rc = query_one(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", NULL,
                               &tables);
        } else if (full) {
            char os[512];
            return eddy__error_set(err, EDDY_ESTORE, "store",
                                   "cannot read %s: its write-ahead log %s-wal is not empty, and "
                                   "SQLite reads it only through the shared-memory index beside "
                                   "it, for which the file system has no room%s; free some space "
                                   "there (64 KiB will do) and run eddy inspect again",
                                   s->db_path, s->db_path,
                                   os_error(s->db, s->db_path, rc, os, sizeof(os)));
        }
    }
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the schema", err);
    if (tables == 0 && (r = lock_behind(s, 0, err)) != EDDY_OK)
        return r; /* not one being made: LOCK counts its commits */
    if (rc == SQLITE_OK && tables == 0)
        /* An eddy is creating it this moment, or something else made an
         * empty file: either way there is no eddy state in it yet. */
        return eddy__error_set(err, EDDY_ENOTFOUND, "store",
                               "%s: no eddy state here yet (%s has no tables: an eddy may be "
                               "creating it)",
                               s->dir, s->db_path);
    sqlite3_int64 n_meta = 0;
    if (rc == SQLITE_OK)
        rc = query_one(s, HAS_META_SQL, NULL, &n_meta);
    if (rc == SQLITE_OK && n_meta == 0)
        return not_a_state(s, err);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the schema", err);
    r = check_format_version(s, &version, err);
    if (r != EDDY_OK)
        return r;
    if (version < EDDY_STORE_FORMAT_OLDEST || version > EDDY_STORE_FORMAT_VERSION)
        return eddy__error_set(err, EDDY_ESTATE, "store",
                               "state directory %s has format %lld, written by %s eddy; "
                               "this eddy reads formats %d to %d",
                               s->dir, (long long)version,
                               version > EDDY_STORE_FORMAT_VERSION ? "a newer" : "an older",
                               EDDY_STORE_FORMAT_OLDEST, EDDY_STORE_FORMAT_VERSION);
    /* Everything read from here on (positions, counts, inputs, journal)
     * comes from one snapshot, also beside a running eddy committing
     * meanwhile; sq_close ends it. */
    rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "starting a read", err);
    if ((r = check_meta(s, err)) != EDDY_OK || (r = load_commits(s, err)) != EDDY_OK)
        return r;
    /* An older format's pending inputs, as rows of a temporary table. */
    sqlite3_int64 legacy = 0;
    rc = query_one(s, LEGACY_PENDING_SQL, NULL, &legacy);
    if (rc == SQLITE_OK && legacy > 0)
        rc = sqlite3_exec(s->db,
                          "CREATE TEMP TABLE inputs(id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK && legacy > 0)
        rc = legacy_convert(s);
    if (rc != SQLITE_OK)
        return open_fail(s, rc, "reading the pending inputs", err);
    r = prepare_all(s, err);
    return r != EDDY_OK ? r : load_outbox_next(s, err);
}

/*
 * Once open, the connection waits only when another one holds a lock it
 * needs, which only a reader in another process can: `eddy inspect` (or
 * sqlite3) whose read of the WAL index header met the header being
 * rewritten takes the write lock for a moment to read it again, and a
 * BEGIN IMMEDIATE of the mailbox in that moment failed with "database is
 * locked", stopping the run. The wait starts at 20 us and doubles up to
 * 1 ms per retry, for up to about BUSY_WAIT_MS in all; with no other
 * connection it never runs.
 */
static int on_busy(void *arg, int count)
{
    (void)arg;
    if (count >= 6 + BUSY_WAIT_MS) /* 20 + 40 + ... + 640 us, then 1 ms each */
        return 0;
    int us = count < 6 ? 20 << count : 1000;
    sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
    if (vfs != NULL && vfs->xSleep != NULL)
        vfs->xSleep(vfs, us);
    return 1;
}

int eddy__store_sqlite_open(eddy__store **out, const char *dir, const char *plan_fingerprint,
                            const char *plan_actions, eddy_error **err)
{
    int created = 0;
    sqlite_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return eddy__error_set(err, EDDY_ENOMEM, "store", "out of memory");
    s->base.ops = &sqlite_ops;
    s->lock_fd = -1;
    s->dir_fd = -1;
    s->compact_slack = COMPACT_SLACK;
    s->wal_fd = -1;
    s->sync_lock_ok = uv_mutex_init(&s->sync_lock) == 0;
    eddy__map_init(&s->runs);
    eddy__map_init(&s->rows);
    eddy__map_init(&s->pend);
    s->dir = strdup(dir);
    s->db_path = path_join(dir, "eddy.db");
    int r = EDDY_ENOMEM;
    if (s->dir == NULL || s->db_path == NULL) {
        eddy__error_set(err, r, "store", "out of memory");
        goto fail;
    }
    if (plan_fingerprint == NULL) {
        r = open_readonly(s, err);
        if (r != EDDY_OK)
            goto fail;
        *out = &s->base;
        return EDDY_OK;
    }
    if ((r = make_dir(dir, err)) != EDDY_OK || (r = take_lock(s, err)) != EDDY_OK)
        goto fail;
    lock_line_read(s);
    if ((r = check_state_files(s, err)) != EDDY_OK || (r = check_writable_files(s, err)) != EDDY_OK)
        goto fail;

    /* A WAL left by a crash stays as it is until the open has checked the
     * state: the last connection's close would copy its valid frames into
     * eddy.db and delete it and its index (SQLite's checkpoint on close),
     * with the frames past a damaged one, which a refusal asks the user to
     * look at or put back. Checkpoints on close again once open. (A state
     * stopped cleanly has no WAL: the empty one SQLite makes goes at close.) */
    int keep_wal = file_size(s, "-wal") > 0;
    int rc = sqlite3_open_v2(s->db_path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             eddy__walvfs_name());
    if (rc != SQLITE_OK) {
        r = open_fail(s, rc, "opening", err);
        goto fail;
    }
    if (keep_wal)
        sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    if ((r = check_db_writable(s, err)) != EDDY_OK || (r = configure(s, err)) != EDDY_OK ||
        (r = init_schema(s, plan_fingerprint, plan_actions, &created, err)) != EDDY_OK ||
        (r = prepare_all(s, err)) != EDDY_OK || (r = load_outbox_next(s, err)) != EDDY_OK ||
        (r = pend_load(s, err)) != EDDY_OK || (r = jlog_rebuild(s, err)) != EDDY_OK)
        goto fail;
    if ((r = wal_open(s, err)) != EDDY_OK)
        goto fail;
    sqlite3_busy_handler(s->db, on_busy, NULL); /* see configure */
    int e = created ? eddy__paths_sync_dir(dir) : 0;
    if (e != 0) {
        r = eddy__error_set(err, EDDY_ESTORE, "store", "cannot sync state directory %s: %s", dir,
                            strerror(e));
        goto fail;
    }
    mark_lock(s, created); /* a new state's directory was synced just above */
    if (keep_wal)
        sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, (int *)NULL);
    *out = &s->base;
    return EDDY_OK;
fail:
    sq_close(&s->base);
    return r;
}

#ifdef EDDY_TEST_HOOKS
int eddy__store_sqlite_test_exec(eddy__store *base, const char *sql)
{
    sqlite_store *s = (sqlite_store *)base;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? EDDY_OK : fail(s, NULL, rc, "test statement");
}

void eddy__store_sqlite_test_compact_slack(eddy__store *base, size_t bytes)
{
    ((sqlite_store *)base)->compact_slack = bytes;
}
#endif

static const struct eddy__store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .error = sq_error,
    .dirty = sq_dirty,
    .commit = sq_commit,
    .split_commit = sq_split_commit,
    .commit_nosync = sq_commit_nosync,
    .sync = sq_sync,
    .sync_note = sq_sync_note,
    .get_source_pos = sq_get_source_pos,
    .set_source_pos = sq_set_source_pos,
    .get_sink_pos = sq_get_sink_pos,
    .set_sink_pos = sq_set_sink_pos,
    .get_meta_u64 = sq_get_meta_u64,
    .set_meta_u64 = sq_set_meta_u64,
    .get_meta_text = sq_get_meta_text,
    .set_meta_text = sq_set_meta_text,
    .keys_load = sq_keys_load,
    .key_put = sq_key_put,
    .key_get = sq_key_get,
    .pending_add = sq_pending_add,
    .pending_remove = sq_pending_remove,
    .pending_load = sq_pending_load,
    .journal_put = sq_journal_put,
    .journal_cut = sq_journal_cut,
    .journal_load_run = sq_journal_load_run,
    .journal_load_all = sq_journal_load_all,
    .journal_prune_run = sq_journal_prune_run,
    .outbox_add = sq_outbox_add,
    .outbox_load = sq_outbox_load,
    .outbox_ack = sq_outbox_ack,
    .counts_get = sq_counts_get,
};
