/*
 * The VFS that gathers a commit's WAL frames into one write (store/walvfs.c):
 * a commit is one write however many pages it has, and what a commit leaves
 * in the files is whole, as another connection and recovery after a crash
 * see it, also when SQLite rewrites frames of the same transaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "store/walvfs.h"
#include "unit/tmptree.h"

typedef struct test_dir {
    char root[64]; /* mkdtemp directory, removed at the end */
    char db[96];   /* root/t.db */
    char copy[96]; /* root/copy.db: the files as a crash would leave them */
} test_dir;

static int setup_dir(void **state)
{
    test_dir *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    if (tmptree_make(d->root, "walvfs") != 0) {
        free(d);
        return -1;
    }
    snprintf(d->db, sizeof(d->db), "%s/t.db", d->root);
    snprintf(d->copy, sizeof(d->copy), "%s/copy.db", d->root);
    *state = d;
    return 0;
}

static int teardown_dir(void **state)
{
    test_dir *d = *state;
    int rc = tmptree_remove(d->root);
    free(d);
    return rc;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg != NULL ? msg : sqlite3_errstr(rc));
}

static int64_t count_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* The store's settings: WAL, synchronous=NORMAL (commits are not synced). */
static sqlite3 *open_gathering(const char *path)
{
    const char *vfs = eddy__walvfs_name();
    assert_non_null(vfs);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                     SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)");
    return db;
}

/* Commit, then what the store does after each COMMIT. */
static void commit(sqlite3 *db)
{
    exec_ok(db, "COMMIT");
    assert_int_equal(eddy__walvfs_settle(db), SQLITE_OK);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* The database and its WAL as they are now, opened elsewhere with the default
 * VFS: without the shared-memory index, SQLite recovers from the WAL, checking
 * every frame's checksum, as after a crash. Returns the row count and sum. */
static void recovered(test_dir *d, int64_t *rows, int64_t *sum)
{
    char wal[128], copy_wal[128];
    snprintf(wal, sizeof(wal), "%s-wal", d->db);
    snprintf(copy_wal, sizeof(copy_wal), "%s-wal", d->copy);
    copy_file(d->db, d->copy);
    copy_file(wal, copy_wal);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(d->copy, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    exec_ok(db, "PRAGMA integrity_check");
    *rows = count_rows(db, "SELECT count(*) FROM t");
    *sum = count_rows(db, "SELECT coalesce(sum(length(v)), 0) FROM t");
    sqlite3_close(db);
    char shm[128];
    snprintf(shm, sizeof(shm), "%s-shm", d->copy);
    remove(d->copy);
    remove(copy_wal);
    remove(shm);
}

static void test_one_write_per_commit(void **state)
{
    test_dir *d = *state;
    sqlite3 *db = open_gathering(d->db);
    sqlite3 *reader = NULL;
    assert_int_equal(sqlite3_open_v2(d->db, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    for (int i = 0; i < 20; i++) {
        eddy__walvfs_stats before, after;
        eddy__walvfs_stats_get(&before);
        exec_ok(db, "BEGIN IMMEDIATE");
        /* Rows of 3000 bytes: about one new page each, plus the tree's. */
        exec_ok(db, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 8)"
                    " INSERT INTO t(v) SELECT zeroblob(3000) FROM n");
        commit(db);
        eddy__walvfs_stats_get(&after);
        /* Two writes asked per frame, one made per commit (more only
         * when a checkpoint starts the WAL over and writes its header). */
        assert_true(after.asked - before.asked >= 16);
        assert_in_range(after.written - before.written, 1, 2);
        /* Another connection sees the commit as soon as it returned. */
        assert_int_equal(count_rows(reader, "SELECT count(*) FROM t"), 8 * (i + 1));
        int64_t rows = 0, sum = 0;
        recovered(d, &rows, &sum);
        assert_int_equal(rows, 8 * (i + 1));
        assert_int_equal(sum, 3000 * 8 * (i + 1));
    }
    sqlite3_close(reader);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A transaction larger than the page cache spills pages to the WAL before it
 * commits and writes some of them again; SQLite then rewrites the headers
 * of the frames after the first rewritten one, after the commit's last
 * frame. The commit must be whole in the files once the store settled. */
static void test_rewritten_frames(void **state)
{
    test_dir *d = *state;
    sqlite3 *db = open_gathering(d->db);
    exec_ok(db, "PRAGMA cache_size=4; PRAGMA cache_spill=ON");
    int64_t want_rows = 0, want_sum = 0;
    for (int round = 0; round < 5; round++) {
        exec_ok(db, "BEGIN IMMEDIATE");
        exec_ok(db, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40)"
                    " INSERT INTO t(v) SELECT zeroblob(2000) FROM n");
        /* Touch every page again: the spilled ones are written twice. */
        exec_ok(db, "UPDATE t SET v = zeroblob(2100) WHERE id % 2 = 0");
        commit(db);
        /* Before this connection reads anything (reads write out too). */
        int64_t rows = 0, sum = 0;
        recovered(d, &rows, &sum);
        want_rows = count_rows(db, "SELECT count(*) FROM t");
        want_sum = count_rows(db, "SELECT sum(length(v)) FROM t");
        assert_int_equal(rows, want_rows);
        assert_int_equal(sum, want_sum);
    }
    assert_int_equal(want_rows, 200);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Checkpoints read the WAL back and start it over: everything gathered is
 * in the file before, and the database stays whole through many of them. */
static void test_checkpoints(void **state)
{
    test_dir *d = *state;
    sqlite3 *db = open_gathering(d->db);
    exec_ok(db, "PRAGMA wal_autocheckpoint=20");
    for (int i = 0; i < 60; i++) {
        exec_ok(db, "BEGIN IMMEDIATE");
        exec_ok(db, "INSERT INTO t(v) VALUES (zeroblob(5000))");
        exec_ok(db, "DELETE FROM t WHERE id % 7 = 0");
        commit(db);
    }
    int64_t rows = count_rows(db, "SELECT count(*) FROM t");
    int64_t sum = count_rows(db, "SELECT sum(length(v)) FROM t");
    int64_t crows = 0, csum = 0;
    recovered(d, &crows, &csum);
    assert_int_equal(crows, rows);
    assert_int_equal(csum, sum);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    /* Closed: the last connection checkpoints and removes the WAL. */
    sqlite3 *again = NULL;
    assert_int_equal(sqlite3_open_v2(d->db, &again, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(count_rows(again, "SELECT count(*) FROM t"), rows);
    sqlite3_close(again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_write_per_commit, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_rewritten_frames, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_checkpoints, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
