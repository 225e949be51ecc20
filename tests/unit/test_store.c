#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "store/jlog.h"
#include "store/store.h"
#include "store/store_impl.h"
#include "unit/tmptree.h"
#include "util/fault.h"

#define FP  "plan-fingerprint-1"
#define FP2 "plan-fingerprint-2"

/* ---------------------------------------------------------------- helpers */

typedef struct test_dir {
    char root[64];  /* mkdtemp directory, removed at the end */
    char state[96]; /* root/state: not created yet */
} test_dir;

static int setup_dir(void **state)
{
    test_dir *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    if (tmptree_make(d->root, "store") != 0) {
        free(d);
        return -1;
    }
    snprintf(d->state, sizeof(d->state), "%s/state", d->root);
    *state = d;
    return 0;
}

static int teardown_dir(void **state)
{
    test_dir *d = *state;
    chmod(d->state, 0700);
    int rc = tmptree_remove(d->root);
    free(d);
    return rc;
}

/* A growing text buffer the load callbacks print into. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static const char *buf_str(buf *b)
{
    if (b->p == NULL)
        buf_printf(b, "%s", "");
    return b->p;
}

static void buf_reset(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#define N(x) ((x) != NULL ? (x) : "~")

static int print_key(void *arg, const char *key, uint64_t next_seq, const char *stm)
{
    buf_printf(arg, "%s %llu %s\n", key, (unsigned long long)next_seq, stm);
    return EDDY_OK;
}

static int print_pending(void *arg, const char *key, uint64_t seq, uint64_t line_no,
                         const char *record)
{
    buf_printf(arg, "%s %llu %llu %s\n", key, (unsigned long long)seq, (unsigned long long)line_no,
               record);
    return EDDY_OK;
}

static int print_jrec(void *arg, const eddy__jrec *r)
{
    buf_printf(arg, "%s %llu %s %s %lld %d %d %s %s %s %s %s\n", r->key, (unsigned long long)r->seq,
               r->event_id, r->action, (long long)r->idx, r->kind, r->status, N(r->fn_id),
               N(r->digest), N(r->payload), N(r->err_type), N(r->err_msg));
    return EDDY_OK;
}

static int print_outbox(void *arg, uint64_t id, const char *line, size_t len)
{
    buf_printf(arg, "%llu:", (unsigned long long)id);
    for (size_t i = 0; i < len; i++)
        buf_printf(arg, line[i] != '\0' ? "%c" : "\\0", line[i]);
    buf_printf(arg, "\n");
    return EDDY_OK;
}

static eddy__store *open_ok(const char *dir, const char *fp)
{
    eddy__store *s = NULL;
    eddy_error *err = NULL;
    int rc = eddy__store_open(&s, dir, fp, NULL, &err);
    if (rc != EDDY_OK)
        fail_msg("open %s: %s: %s", dir, eddy_err_name(rc), eddy_error_message(err));
    assert_null(err);
    assert_non_null(s);
    return s;
}

/* Open expected to fail with code; returns the message (new). */
static char *open_fails(const char *dir, const char *fp, int code)
{
    eddy__store *s = (eddy__store *)&s; /* must come back NULL */
    eddy_error *err = NULL;
    int rc = eddy__store_open(&s, dir, fp, NULL, &err);
    assert_null(s);
    if (rc != code)
        fail_msg("open %s: expected %s, got %s: %s", dir, eddy_err_name(code), eddy_err_name(rc),
                 eddy_error_message(err));
    assert_non_null(err);
    char *msg = strdup(eddy_error_message(err));
    eddy_error_free(err);
    return msg;
}

static void counts_are(eddy__store *s, uint64_t keys, uint64_t pending, uint64_t journal,
                       uint64_t outbox)
{
    eddy__store_counts c;
    assert_int_equal(eddy__store_counts_get(s, &c), EDDY_OK);
    assert_int_equal(c.keys, keys);
    assert_int_equal(c.pending, pending);
    assert_int_equal(c.journal, journal);
    assert_int_equal(c.outbox, outbox);
}

static eddy__jrec call_rec(const char *key, uint64_t seq, const char *ev, const char *action,
                           int64_t idx)
{
    eddy__jrec r = {.key = key,
                    .seq = seq,
                    .event_id = ev,
                    .action = action,
                    .idx = idx,
                    .kind = EDDY_JREC_CALL,
                    .status = EDDY_JCALL_OK,
                    .fn_id = "fn",
                    .digest = "d0",
                    .payload = "1"};
    return r;
}

/* Run a SQL statement on a closed store's database file directly. */
static void poke_db(const char *dir, const char *sql)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* Rows of the journal log (or their bytes), read beside the open store. */
static long jlog_query(const char *dir, const char *sql)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static long jlog_rows(const char *dir)
{
    return jlog_query(dir, "SELECT count(*) FROM jlog");
}

static long jlog_bytes(const char *dir)
{
    return jlog_query(dir, "SELECT coalesce(sum(length(data)), 0) FROM jlog");
}

static int count_jrec(void *arg, const eddy__jrec *r)
{
    (void)r;
    (*(int *)arg)++;
    return EDDY_OK;
}

static int run_records(eddy__store *s, const char *key, uint64_t seq)
{
    int n = 0;
    assert_int_equal(eddy__store_journal_load_run(s, key, seq, count_jrec, &n), EDDY_OK);
    return n;
}

/* ---------------------------------------------------------------- tests */

static void test_create_reopen(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    struct stat sb;
    assert_int_equal(stat(d->state, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_string_equal(eddy__store_error(s), "");
    assert_int_equal(eddy__store_dirty(s), 0);
    counts_are(s, 0, 0, 0, 0);
    uint64_t off = 99, line = 99, sink = 99;
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(eddy__store_get_sink_pos(s, &sink), EDDY_OK);
    assert_int_equal(off + line + sink, 0);

    assert_int_equal(eddy__store_set_source_pos(s, 1234, 17), EDDY_OK);
    assert_int_equal(eddy__store_dirty(s), 1);
    assert_int_equal(eddy__store_set_sink_pos(s, 777), EDDY_OK);
    /* Read back before the commit: the values set in the transaction. */
    uint64_t v = 0;
    assert_int_equal(eddy__store_set_meta_u64(s, "dead_offset", 55), EDDY_OK);
    assert_int_equal(eddy__store_get_meta_u64(s, "dead_offset", &v), EDDY_OK);
    assert_int_equal(v, 55);
    char *text = (char *)"x";
    assert_int_equal(eddy__store_get_meta_text(s, "key_field_name", &text), EDDY_OK);
    assert_null(text); /* absent */
    assert_int_equal(eddy__store_set_meta_text(s, "key_field_name", "customer"), EDDY_OK);
    assert_int_equal(eddy__store_get_sink_pos(s, &sink), EDDY_OK);
    assert_int_equal(sink, 777);
    assert_int_equal(eddy__store_key_put(s, "\"u2\"", 3, "{\"n\":2}"), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "\"u1\"", 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "\"u1\"", 2, "{\"n\":1}"), EDDY_OK); /* replaces */

    /* Arrival order across keys, not key order. */
    assert_int_equal(eddy__store_pending_add(s, "\"u2\"", 3, 10, "{\"a\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"u1\"", 2, 11, "{\"a\":2}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"u2\"", 4, 12, "{\"a\":3}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"u1\"", 3, 13, "{\"a\":4}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "\"u2\"", 3), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"u2\"", 5, 14, "{\"a\":5}"), EDDY_OK);

    /* Every field, with NULLs where a kind leaves them out. */
    eddy__jrec ok = {.key = "\"u1\"",
                     .seq = 2,
                     .event_id = "00000000000000a1",
                     .action = "act",
                     .idx = 0,
                     .kind = EDDY_JREC_CALL,
                     .status = EDDY_JCALL_OK,
                     .fn_id = "mod.fn",
                     .digest = "abcd",
                     .payload = "{\"r\":[1,2]}"};
    eddy__jrec er = {.key = "\"u1\"",
                     .seq = 2,
                     .event_id = "00000000000000a1",
                     .action = "act",
                     .idx = 1,
                     .kind = EDDY_JREC_CALL,
                     .status = EDDY_JCALL_ERROR,
                     .fn_id = "mod.g",
                     .digest = "ef01",
                     .err_type = "ValueError",
                     .err_msg = "bad value"};
    eddy__jrec pend = {.key = "\"u1\"",
                       .seq = 2,
                       .event_id = "00000000000000a1",
                       .action = "act",
                       .idx = 2,
                       .kind = EDDY_JREC_CALL,
                       .status = EDDY_JCALL_PENDING,
                       .fn_id = "mod.h",
                       .digest = "0000"};
    eddy__jrec done = {.key = "\"u1\"",
                       .seq = 2,
                       .event_id = "00000000000000a1",
                       .action = "act",
                       .idx = -1,
                       .kind = EDDY_JREC_DONE,
                       .payload = "{\"events\":[]}"};
    assert_int_equal(eddy__store_journal_put(s, &pend), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &er), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &ok), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &done), EDDY_OK);

    uint64_t id1 = 0, id2 = 0, id3 = 0;
    assert_int_equal(eddy__store_outbox_add(s, "{\"o\":1}", 7, &id1), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "", 0, &id2), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "a\0b", 3, &id3), EDDY_OK);
    assert_int_equal(id1, 1);
    assert_int_equal(id2, 2);
    assert_int_equal(id3, 3);
    assert_int_equal(eddy__store_outbox_ack(s, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_dirty(s), 0);
    assert_int_equal(eddy__store_commit(s), EDDY_OK); /* nothing open: no-op */
    counts_are(s, 2, 4, 4, 2);
    eddy__store_close(s);

    s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_dirty(s), 0);
    counts_are(s, 2, 4, 4, 2);
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(off, 1234);
    assert_int_equal(line, 17);
    assert_int_equal(eddy__store_get_sink_pos(s, &sink), EDDY_OK);
    assert_int_equal(sink, 777);
    assert_int_equal(eddy__store_get_meta_text(s, "key_field_name", &text), EDDY_OK);
    assert_string_equal(text, "customer");
    free(text);

    buf b = {0};
    assert_int_equal(eddy__store_keys_load(s, print_key, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "\"u1\" 2 {\"n\":1}\n\"u2\" 3 {\"n\":2}\n");
    buf_reset(&b);
    uint64_t next_seq = 0;
    char *stm = NULL;
    assert_int_equal(eddy__store_key_get(s, "\"u2\"", &next_seq, &stm), EDDY_OK);
    assert_int_equal(next_seq, 3);
    assert_string_equal(stm, "{\"n\":2}");
    free(stm);
    stm = (char *)"x";
    assert_int_equal(eddy__store_key_get(s, "\"nobody\"", &next_seq, &stm), EDDY_ENOTFOUND);
    assert_null(stm);

    assert_int_equal(eddy__store_pending_load(s, print_pending, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "\"u1\" 2 11 {\"a\":2}\n"
                                     "\"u2\" 4 12 {\"a\":3}\n"
                                     "\"u1\" 3 13 {\"a\":4}\n"
                                     "\"u2\" 5 14 {\"a\":5}\n");
    buf_reset(&b);

    const char *journal = "\"u1\" 2 00000000000000a1 act -1 2 0 ~ ~ {\"events\":[]} ~ ~\n"
                          "\"u1\" 2 00000000000000a1 act 0 1 1 mod.fn abcd {\"r\":[1,2]} ~ ~\n"
                          "\"u1\" 2 00000000000000a1 act 1 1 2 mod.g ef01 ~ ValueError bad value\n"
                          "\"u1\" 2 00000000000000a1 act 2 1 3 mod.h 0000 ~ ~ ~\n";
    assert_int_equal(eddy__store_journal_load_run(s, "\"u1\"", 2, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), journal);
    buf_reset(&b);
    assert_int_equal(eddy__store_journal_load_all(s, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), journal);
    buf_reset(&b);

    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "2:\n3:a\\0b\n");
    buf_reset(&b);

    /* Ids keep increasing after every line was acknowledged, across reopen. */
    assert_int_equal(eddy__store_outbox_ack(s, 3), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    counts_are(s, 2, 4, 4, 0);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    uint64_t id4 = 0;
    assert_int_equal(eddy__store_outbox_add(s, "x", 1, &id4), EDDY_OK);
    assert_int_equal(id4, 4);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "4:x\n");
    buf_reset(&b);
    eddy__store_close(s);
}

/* Pending inputs are written by the commit, a row of up to 32 per
 * transaction, rewritten where runs ended and deleted once empty: the inputs
 * between the removed ones stay, an input added and removed in one
 * transaction is never written, the FIFO order holds across a reopen, and a
 * read inside the transaction sees everything. */
static void test_rows_written_at_commit(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    char key[16];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(eddy__store_pending_add(s, key, 1, (uint64_t)i, "{}"), EDDY_OK);
    }
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 2); /* 32 + 8 */
    /* Removed: k1, k2 (a run), k4, k7-k36 (a run longer than one batch of
     * inserts), k38; kept: k0, k3, k5, k6, k37, k39. */
    static const int gone[] = {1, 2, 4, 38};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        snprintf(key, sizeof(key), "k%d", gone[i]);
        assert_int_equal(eddy__store_pending_remove(s, key, 1), EDDY_OK);
    }
    for (int i = 36; i >= 7; i--) { /* in reverse: the commit sorts them */
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(eddy__store_pending_remove(s, key, 1), EDDY_OK);
    }
    assert_int_equal(eddy__store_pending_add(s, "t", 1, 100, "{\"t\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "t", 2, 101, "{\"t\":2}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "t", 1), EDDY_OK); /* never written */
    assert_int_equal(eddy__store_pending_remove(s, "nobody", 1), EDDY_OK);
    uint64_t id = 0;
    assert_int_equal(eddy__store_outbox_add(s, "x", 1, &id), EDDY_OK);
    const char *const want = "k0 1 0 {}\nk3 1 3 {}\nk5 1 5 {}\nk6 1 6 {}\nk37 1 37 {}\n"
                             "k39 1 39 {}\nt 2 101 {\"t\":2}\n";
    buf b = {0};
    assert_int_equal(eddy__store_pending_load(s, print_pending, &b), EDDY_OK); /* inside */
    assert_string_equal(buf_str(&b), want);
    counts_are(s, 0, 7, 0, 1);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 3); /* and t's */
    eddy__store_close(s);

    s = open_ok(d->state, FP);
    counts_are(s, 0, 7, 0, 1);
    buf_reset(&b);
    assert_int_equal(eddy__store_pending_load(s, print_pending, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), want);
    /* Added after the reopen: after every input there, also one whose id
     * was freed (k39 goes, then u comes). */
    assert_int_equal(eddy__store_pending_remove(s, "k39", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "u", 1, 200, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 4);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    buf_reset(&b);
    assert_int_equal(eddy__store_pending_load(s, print_pending, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "k0 1 0 {}\nk3 1 3 {}\nk5 1 5 {}\nk6 1 6 {}\nk37 1 37 {}\n"
                                     "t 2 101 {\"t\":2}\nu 1 200 {}\n");
    /* Large inputs: a row that holds 8 KiB takes no more (b1 and b2, 5 KB
     * each, share one; b3 and b4 the next). */
    static char big[5001];
    memset(big, 'b', 5000);
    big[0] = '"';
    big[4999] = '"';
    assert_int_equal(eddy__store_pending_add(s, "b1", 1, 300, big), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "b2", 1, 301, big), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "b3", 1, 302, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "b4", 1, 303, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 4 + 2);
    for (int i = 1; i <= 4; i++) {
        snprintf(key, sizeof(key), "b%d", i);
        assert_int_equal(eddy__store_pending_remove(s, key, 1), EDDY_OK);
    }
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 4);
    /* The last input of a row ends: the row goes. */
    assert_int_equal(eddy__store_pending_remove(s, "k37", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 3);
    counts_are(s, 0, 6, 0, 1);
    free(b.p);
    eddy__store_close(s);
}

/* A transaction's outbox lines are one row under the id of its last line:
 * each line comes back with its own id, an acknowledgement inside a row
 * keeps the rest of it (also across a reopen), a line with a newline is
 * refused, and the rows of format 3 (a line each) read the same. */
static void test_outbox_rows(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    uint64_t id = 0;
    static const char *const first[] = {"a", "", "c\0d"};
    static const size_t first_len[] = {1, 0, 3};
    for (int i = 0; i < 3; i++)
        assert_int_equal(eddy__store_outbox_add(s, first[i], first_len[i], &id), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "e", 1, &id), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "f", 1, &id), EDDY_OK);
    assert_int_equal(id, 5);
    assert_int_equal(eddy__store_outbox_add(s, "g\nh", 3, &id), EDDY_EINVAL);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM outbox"), 2);
    counts_are(s, 0, 0, 0, 5);
    buf b = {0};
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "1:a\n2:\n3:c\\0d\n4:e\n5:f\n");

    /* Up to the middle of the first row. */
    assert_int_equal(eddy__store_outbox_ack(s, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    counts_are(s, 0, 0, 0, 4);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    buf_reset(&b);
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "2:\n3:c\\0d\n4:e\n5:f\n");
    /* To the first line of the second row, and into a row not yet written. */
    assert_int_equal(eddy__store_outbox_add(s, "i", 1, &id), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "j", 1, &id), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "k", 1, &id), EDDY_OK);
    assert_int_equal(eddy__store_outbox_ack(s, 4), EDDY_OK);
    buf_reset(&b);
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK); /* inside */
    assert_string_equal(buf_str(&b), "5:f\n6:i\n7:j\n8:k\n");
    assert_int_equal(eddy__store_outbox_ack(s, 6), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    buf_reset(&b);
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "7:j\n8:k\n");
    eddy__store_close(s);

    /* Format 3: a row per line. */
    poke_db(d->state, "DELETE FROM outbox");
    poke_db(d->state, "INSERT INTO outbox(id, line) VALUES (20, 'x'), (21, 'y'), (22, 'z')");
    poke_db(d->state, "UPDATE meta SET v = 3 WHERE k = 'format_version'");
    s = open_ok(d->state, FP);
    counts_are(s, 0, 0, 0, 3);
    assert_int_equal(eddy__store_outbox_add(s, "w", 1, &id), EDDY_OK);
    assert_int_equal(id, 23);
    assert_int_equal(eddy__store_outbox_ack(s, 21), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    buf_reset(&b);
    assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "22:z\n23:w\n");
    free(b.p);
    eddy__store_close(s);
    assert_int_equal(jlog_query(d->state, "SELECT v FROM meta WHERE k = 'format_version'"),
                     EDDY_STORE_FORMAT_VERSION);
}

static void test_uncommitted_lost(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    uint64_t id = 0;
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "k", 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "a", 1, &id), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);

    assert_int_equal(eddy__store_set_source_pos(s, 20, 2), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "k", 2, "{\"x\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "k", 2, 2, "{}"), EDDY_OK);
    eddy__jrec r = call_rec("k", 1, "e", "a", 0);
    assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    assert_int_equal(eddy__store_outbox_add(s, "b", 1, &id), EDDY_OK);
    assert_int_equal(id, 2);
    assert_int_equal(eddy__store_set_sink_pos(s, 5), EDDY_OK);
    /* Reads inside the transaction see its writes. */
    counts_are(s, 1, 1, 1, 2);
    assert_int_equal(eddy__store_dirty(s), 1);
    eddy__store_close(s); /* rolls back */

    s = open_ok(d->state, FP);
    counts_are(s, 1, 0, 0, 1);
    uint64_t off, line, sink, seq;
    char *stm = NULL;
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(off, 10);
    assert_int_equal(line, 1);
    assert_int_equal(eddy__store_get_sink_pos(s, &sink), EDDY_OK);
    assert_int_equal(sink, 0);
    assert_int_equal(eddy__store_key_get(s, "k", &seq, &stm), EDDY_OK);
    assert_int_equal(seq, 1);
    assert_string_equal(stm, "{}");
    free(stm);
    /* The rolled-back id is handed out again: it was never committed. */
    assert_int_equal(eddy__store_outbox_add(s, "c", 1, &id), EDDY_OK);
    assert_int_equal(id, 2);
    eddy__store_close(s);
}

/* Copy the first len bytes of src to dst. */
static void copy_prefix(const char *src, const char *dst, off_t len)
{
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(in >= 0 && out >= 0);
    char b[8192];
    while (len > 0) {
        ssize_t n = read(in, b, len < (off_t)sizeof(b) ? (size_t)len : sizeof(b));
        assert_true(n > 0);
        assert_int_equal(write(out, b, (size_t)n), n);
        len -= n;
    }
    close(in);
    close(out);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

/* The WAL is given its working size at open (so that commits overwrite
 * blocks instead of growing the file), and doing that to a WAL that holds
 * committed frames, as a crash leaves it, keeps them. */
static void test_wal_preallocated(void **state)
{
    test_dir *d = *state;
    char wal[160], copy[128], copy_db[160], copy_wal[160], db[160];
    snprintf(db, sizeof(db), "%s/eddy.db", d->state);
    snprintf(wal, sizeof(wal), "%s/eddy.db-wal", d->state);
    eddy__store *s = open_ok(d->state, FP);
    off_t size = file_size(wal);
    assert_true(size >= 1000 * (4096 + 24)); /* wal_autocheckpoint frames */
    assert_int_equal(eddy__store_key_put(s, "k", 7, "{\"a\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);

    /* What a crash leaves without preallocation: the database file and the
     * WAL up to its last frame (the schema and the key are only there). */
    off_t end = 32;
    int fd = open(wal, O_RDONLY);
    assert_true(fd >= 0);
    for (;;) {
        unsigned char hdr[24], zero[24] = {0};
        if (pread(fd, hdr, sizeof(hdr), end) != (ssize_t)sizeof(hdr) ||
            memcmp(hdr, zero, sizeof(hdr)) == 0)
            break;
        end += 24 + 4096;
    }
    close(fd);
    assert_true(end > 32 && end < size);
    snprintf(copy, sizeof(copy), "%s/copy", d->root);
    snprintf(copy_db, sizeof(copy_db), "%s/eddy.db", copy);
    snprintf(copy_wal, sizeof(copy_wal), "%s/eddy.db-wal", copy);
    assert_int_equal(mkdir(copy, 0700), 0);
    copy_prefix(db, copy_db, file_size(db));
    copy_prefix(wal, copy_wal, end);

    eddy__store *c = open_ok(copy, FP);
    assert_true(file_size(copy_wal) >= size);
    uint64_t seq = 0;
    char *stm = NULL;
    assert_int_equal(eddy__store_key_get(c, "k", &seq, &stm), EDDY_OK);
    assert_int_equal(seq, 7);
    assert_string_equal(stm, "{\"a\":1}");
    free(stm);
    /* And it takes new commits. */
    assert_int_equal(eddy__store_key_put(c, "k", 8, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(c), EDDY_OK);
    eddy__store_close(c);
    eddy__store_close(s);
    c = open_ok(copy, FP);
    assert_int_equal(eddy__store_key_get(c, "k", &seq, &stm), EDDY_OK);
    assert_int_equal(seq, 8);
    free(stm);
    eddy__store_close(c);
}

/* The journal is a log: one row per commit; a row goes once every run with
 * entries in it was pruned; a run that ends in the transaction that wrote
 * its entries leaves no row; a reopen finds the runs in flight (pending
 * inputs) in the rows and deletes the rows that no run in flight needs. */
static void test_journal_log_rows(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    eddy__jrec a = call_rec("\"a\"", 1, "e1", "act", 0);
    eddy__jrec b = call_rec("\"b\"", 1, "e2", "act", 0);
    eddy__jrec b1 = call_rec("\"b\"", 1, "e2", "act", 1);
    assert_int_equal(eddy__store_pending_add(s, "\"b\"", 1, 7, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &a), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &b), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);

    /* a ends: b still needs the row. */
    assert_int_equal(eddy__store_journal_prune_run(s, "\"a\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);
    assert_int_equal(run_records(s, "\"a\"", 1), 0);
    assert_int_equal(run_records(s, "\"b\"", 1), 1);

    /* c writes and ends within one transaction: nothing is stored. */
    eddy__jrec c = call_rec("\"c\"", 1, "e3", "act", 0);
    assert_int_equal(eddy__store_journal_put(s, &c), EDDY_OK);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"c\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);
    eddy__store_close(s);

    /* Reopen: b is in flight (its pending input) and gets a second row. */
    s = open_ok(d->state, FP);
    assert_int_equal(jlog_rows(d->state), 1);
    assert_int_equal(run_records(s, "\"b\"", 1), 1);
    assert_int_equal(eddy__store_journal_put(s, &b1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 2);
    assert_int_equal(run_records(s, "\"b\"", 1), 2);
    /* A cut reaches records read at open and those written since. */
    assert_int_equal(eddy__store_journal_cut(s, "\"b\"", 1, "e2", "act", 0), EDDY_OK);
    assert_int_equal(run_records(s, "\"b\"", 1), 0);
    assert_int_equal(eddy__store_journal_put(s, &b), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(run_records(s, "\"b\"", 1), 1);
    assert_int_equal(jlog_rows(d->state), 3);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"b\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "\"b\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 0);

    /* A row whose runs are not in flight at open (no pending input) goes. */
    assert_int_equal(eddy__store_journal_put(s, &a), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    assert_int_equal(jlog_rows(d->state), 0);
    counts_are(s, 0, 0, 0, 0);
    eddy__store_close(s);
}

/* A run's failure (a FAILED record, --on-error skip) is a journal record
 * like the others: stored with the transaction that writes it, read back
 * across a reopen with its error, and gone with the run's prune. A run that
 * fails and ends in one transaction (its failing action was its last)
 * stores nothing, as any run ending so. */
static void test_failed_record(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    eddy__jrec call = call_rec("\"k\"", 1, "00000000000000e1", "slow", 0);
    call.status = EDDY_JCALL_PENDING;
    call.payload = NULL;
    eddy__jrec failed = {.key = "\"k\"",
                         .seq = 1,
                         .event_id = "00000000000000e1",
                         .action = "fails",
                         .idx = -2,
                         .kind = EDDY_JREC_FAILED,
                         .err_type = "ValueError",
                         .err_msg = "run 1 fails"};
    assert_int_equal(eddy__store_pending_add(s, "\"k\"", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &call), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &failed), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);

    s = open_ok(d->state, FP);
    const char *journal = "\"k\" 1 00000000000000e1 fails -2 3 0 ~ ~ ~ ValueError run 1 fails\n"
                          "\"k\" 1 00000000000000e1 slow 0 1 3 fn d0 ~ ~ ~\n";
    buf b = {0};
    assert_int_equal(eddy__store_journal_load_run(s, "\"k\"", 1, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), journal);
    buf_reset(&b);
    assert_int_equal(eddy__store_journal_load_all(s, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), journal);
    buf_reset(&b);
    /* The run ends: its records and rows go. */
    assert_int_equal(eddy__store_journal_prune_run(s, "\"k\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "\"k\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 0);
    counts_are(s, 0, 0, 0, 0);

    /* Failed and ended in one transaction: nothing written. */
    failed.seq = 2;
    assert_int_equal(eddy__store_pending_add(s, "\"k\"", 2, 2, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &failed), EDDY_OK);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"k\"", 2), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "\"k\"", 2), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 0);
    assert_int_equal(jlog_query(d->state, "SELECT count(*) FROM inputs"), 0);

    /* Only at position -2, where it replaces no DONE record (-1). */
    failed.idx = 0;
    assert_int_equal(eddy__store_journal_put(s, &failed), EDDY_EINVAL);
    failed.idx = -1;
    assert_int_equal(eddy__store_journal_put(s, &failed), EDDY_EINVAL);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);

    /* The DONE record of the same action execution (a replayed one failed)
     * stays beside it: a record's identity has no kind, so at -1 the
     * FAILED record replaced it and a later rerun lost its memory writes. */
    eddy__jrec done = {.key = "\"k\"",
                       .seq = 3,
                       .event_id = "00000000000000e1",
                       .action = "fails",
                       .idx = -1,
                       .kind = EDDY_JREC_DONE,
                       .payload = "{\"events\":[]}"};
    failed.seq = 3;
    failed.idx = -2;
    assert_int_equal(eddy__store_pending_add(s, "\"k\"", 3, 3, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &done), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &failed), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_journal_load_run(s, "\"k\"", 3, print_jrec, &b), EDDY_OK);
    assert_non_null(strstr(buf_str(&b), "fails -1 2 "));
    assert_non_null(strstr(buf_str(&b), "fails -2 3 "));
    buf_reset(&b);
    eddy__store_close(s);
}

/* Records put through a run handle (eddy__jrec.run): the first put of a run
 * fills it in, the next ones use it, another run gets its own; records land
 * in their runs as without a handle, across commits and a reopen. After the
 * prune the caller clears it, and the key's next run gets a new one. */
static void test_journal_run_handle(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    void *ha = NULL, *hb = NULL;
    assert_int_equal(eddy__store_pending_add(s, "\"a\"", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"b\"", 1, 2, "{}"), EDDY_OK);
    for (int i = 0; i < 6; i++) {
        eddy__jrec r = call_rec(i % 2 ? "\"b\"" : "\"a\"", 1, "e1", "act", i / 2);
        r.run = i % 2 ? &hb : &ha;
        void *before = *r.run;
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        assert_non_null(*r.run);
        if (before != NULL)
            assert_ptr_equal(*r.run, before);
        if (i == 3)
            assert_int_equal(eddy__store_commit(s), EDDY_OK);
    }
    assert_ptr_not_equal(ha, hb);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(run_records(s, "\"a\"", 1), 3);
    assert_int_equal(run_records(s, "\"b\"", 1), 3);

    /* a ends; its next run starts with a cleared handle. */
    assert_int_equal(eddy__store_journal_prune_run(s, "\"a\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "\"a\"", 1), EDDY_OK);
    ha = NULL;
    assert_int_equal(eddy__store_pending_add(s, "\"a\"", 2, 3, "{}"), EDDY_OK);
    eddy__jrec a2 = call_rec("\"a\"", 2, "e2", "act", 0);
    a2.run = &ha;
    assert_int_equal(eddy__store_journal_put(s, &a2), EDDY_OK);
    assert_non_null(ha);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(run_records(s, "\"a\"", 1), 0);
    assert_int_equal(run_records(s, "\"a\"", 2), 1);
    eddy__store_close(s);

    /* Reopen: the records are where the handles put them. */
    s = open_ok(d->state, FP);
    assert_int_equal(run_records(s, "\"a\"", 2), 1);
    assert_int_equal(run_records(s, "\"b\"", 1), 3);
    eddy__store_close(s);
}

/* eddy_state_inspect_ex() with EDDY_INSPECT_KEY_ONLY keeps the key's
 * journal alone: no top-level journal, every entry still counted. */
static void test_inspect_key_only(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_pending_add(s, "\"a\"", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"b\"", 2, 2, "{}"), EDDY_OK);
    for (int i = 0; i < 6; i++) {
        eddy__jrec r = call_rec(i % 3 ? "\"b\"" : "\"a\"", i % 3 ? 2 : 1, "e", "act", i);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    }
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    eddy_error *err = NULL;
    json_t *all = eddy_state_inspect_ex(d->state, "\"a\"", 0, &err);
    json_t *one = eddy_state_inspect_ex(d->state, "\"a\"", EDDY_INSPECT_KEY_ONLY, &err);
    if (all == NULL || one == NULL)
        fail_msg("inspect: %s", eddy_error_message(err));
    assert_int_equal(json_array_size(json_object_get(all, "journal")), 6);
    assert_null(json_object_get(one, "journal"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(one, "counts"), "journal")),
                     6);
    assert_true(json_equal(json_object_get(one, "key"), json_object_get(all, "key")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(one, "key"), "journal")), 2);
    assert_true(json_equal(json_object_get(one, "in_flight"), json_object_get(all, "in_flight")));
    json_t *plain = eddy_state_inspect(d->state, "\"a\"", NULL); /* the flags' 0 */
    assert_true(json_equal(plain, all));
    json_decref(plain);
    json_decref(all);
    json_decref(one);
}

/* Runs 1 of keys "S<from>" .. "S<to>": one call record each, or pruned. */
static void put_short_runs(eddy__store *s, int from, int to)
{
    char key[16];
    for (int i = from; i <= to; i++) {
        snprintf(key, sizeof(key), "\"S%d\"", i);
        eddy__jrec r = call_rec(key, 1, "e", "act", 0);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    }
}

static void prune_short_runs(eddy__store *s, int from, int to)
{
    char key[16];
    for (int i = from; i <= to; i++) {
        snprintf(key, sizeof(key), "\"S%d\"", i);
        assert_int_equal(eddy__store_journal_prune_run(s, key, 1), EDDY_OK);
    }
}

#ifdef EDDY_TEST_HOOKS
/* A long run keeps its row; once an eighth or fewer of the row's runs are
 * left (and, here at once, the slack of sparse rows is used up), they are
 * rewritten into a new row and the old one goes, with the entries of the
 * runs that ended. */
static void test_journal_log_compaction(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    eddy__store_sqlite_test_compact_slack(s, 0);
    eddy__jrec pending = call_rec("\"L\"", 1, "e", "act", 0);
    pending.status = EDDY_JCALL_PENDING;
    pending.payload = NULL;
    eddy__jrec done = call_rec("\"L\"", 1, "e", "act", 0);
    eddy__jrec second = call_rec("\"L\"", 1, "e", "act", 1);
    assert_int_equal(eddy__store_journal_put(s, &pending), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &done), EDDY_OK); /* replaces it */
    assert_int_equal(eddy__store_journal_put(s, &second), EDDY_OK);
    put_short_runs(s, 1, 9);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);
    buf before = {0};
    assert_int_equal(eddy__store_journal_load_run(s, "\"L\"", 1, print_jrec, &before), EDDY_OK);

    prune_short_runs(s, 1, 8);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1); /* 2 of 10 runs left: kept */
    long full = jlog_bytes(d->state);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"S9\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1); /* L alone, in a new row */
    assert_true(jlog_bytes(d->state) < full / 3);

    buf after = {0};
    assert_int_equal(eddy__store_journal_load_run(s, "\"L\"", 1, print_jrec, &after), EDDY_OK);
    assert_string_equal(buf_str(&after), buf_str(&before));
    counts_are(s, 0, 0, 2, 0);
    buf_reset(&before);
    buf_reset(&after);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"L\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 0);
    eddy__store_close(s);
}
#endif

#ifdef EDDY_TEST_HOOKS
/* The journals of the long runs L0..L4, as loaded, one after another. */
static void long_journals(eddy__store *s, buf *out)
{
    char key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "\"L%d\"", i);
        assert_int_equal(eddy__store_journal_load_run(s, key, 1, print_jrec, out), EDDY_OK);
    }
}

/* Five long runs sharing their rows with short ones, over several commits:
 * once the short runs end, one compaction rewrites the five together (their
 * records in the open transaction too: a put, and a cut), and each journal
 * reads as before, also after a reopen and a second compaction over the
 * journals read at open. */
static void test_journal_log_compaction_of_many_runs(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    eddy__store_sqlite_test_compact_slack(s, 0);
    char key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "\"L%d\"", i);
        assert_int_equal(eddy__store_pending_add(s, key, 1, (uint64_t)i + 1, "{}"), EDDY_OK);
    }
    for (int c = 0; c < 4; c++) {
        for (int i = 0; i < 5; i++) {
            snprintf(key, sizeof(key), "\"L%d\"", i);
            eddy__jrec r = call_rec(key, 1, "e", "act", c);
            assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        }
        put_short_runs(s, 40 * c, 40 * c + 39); /* 5 of 45 to stay */
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
    }
    assert_int_equal(jlog_rows(d->state), 4);
    long full = jlog_bytes(d->state);
    /* In the transaction that compacts: L2 goes on, L3 is cut back. */
    eddy__jrec more = call_rec("\"L2\"", 1, "e", "act", 4);
    assert_int_equal(eddy__store_journal_put(s, &more), EDDY_OK);
    assert_int_equal(eddy__store_journal_cut(s, "\"L3\"", 1, "e", "act", 2), EDDY_OK);
    prune_short_runs(s, 0, 159);
    buf before = {0};
    long_journals(s, &before);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1); /* the five, in one new row */
    assert_true(jlog_bytes(d->state) < full / 2);
    buf after = {0};
    long_journals(s, &after);
    assert_string_equal(buf_str(&after), buf_str(&before));
    assert_int_equal(run_records(s, "\"L2\"", 1), 5);
    assert_int_equal(run_records(s, "\"L3\"", 1), 2);
    eddy__store_close(s);

    /* Reopened: read at open; then rows since, and a second compaction. */
    s = open_ok(d->state, FP);
    eddy__store_sqlite_test_compact_slack(s, 0);
    buf_reset(&after);
    long_journals(s, &after);
    assert_string_equal(buf_str(&after), buf_str(&before));
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "\"L%d\"", i);
        eddy__jrec r = call_rec(key, 1, "e", "act", 9);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    }
    put_short_runs(s, 200, 239);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    buf_reset(&before);
    long_journals(s, &before);
    prune_short_runs(s, 200, 239);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1);
    buf_reset(&after);
    long_journals(s, &after);
    assert_string_equal(buf_str(&after), buf_str(&before));
    assert_int_equal(run_records(s, "\"L0\"", 1), 5);
    buf_reset(&before);
    buf_reset(&after);
    eddy__store_close(s);
}
#endif

#ifdef EDDY_TEST_HOOKS
/* A run rewritten by a compaction leaves its records in the rows it held,
 * which other runs may keep. Its records there that a cut had removed stay
 * removed: when another run's rows are read in the same compaction (they
 * went to it), and when the rows are read again at a reopen (the rewrite
 * writes a cut of each execution before its puts). Found in review. */
static void test_compaction_keeps_cut_records_out(void **state)
{
    test_dir *d = *state;
    for (int reopen_between = 0; reopen_between < 2; reopen_between++) {
        char dir[256];
        snprintf(dir, sizeof(dir), "%s%d", d->state, reopen_between); /* beside it */
        eddy__store *s = open_ok(dir, FP);
        eddy__store_sqlite_test_compact_slack(s, 0);
        assert_int_equal(eddy__store_pending_add(s, "\"A\"", 1, 1, "{}"), EDDY_OK);
        assert_int_equal(eddy__store_pending_add(s, "\"B\"", 1, 2, "{}"), EDDY_OK);
        /* Row 1, which A keeps: A 0 and B 0..5. */
        eddy__jrec r = call_rec("\"A\"", 1, "e", "act", 0);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        for (int i = 0; i < 6; i++) {
            r = call_rec("\"B\"", 1, "e", "act", i);
            assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        }
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        /* B cut from 3, a new 3, beside 39 short runs; they end, and B is
         * rewritten alone. */
        assert_int_equal(eddy__store_journal_cut(s, "\"B\"", 1, "e", "act", 3), EDDY_OK);
        r = call_rec("\"B\"", 1, "e", "act", 3);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        put_short_runs(s, 0, 38);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        prune_short_runs(s, 0, 38);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        assert_int_equal(run_records(s, "\"B\"", 1), 4);
        if (reopen_between) {
            eddy__store_close(s);
            s = open_ok(dir, FP);
            eddy__store_sqlite_test_compact_slack(s, 0);
            assert_int_equal(run_records(s, "\"B\"", 1), 4);
        }
        /* A and B go on beside 39 more; they end: A and B rewritten together. */
        r = call_rec("\"A\"", 1, "e", "act", 1);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        r = call_rec("\"B\"", 1, "e", "act", 4);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        put_short_runs(s, 100, 138);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        prune_short_runs(s, 100, 138);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        assert_int_equal(run_records(s, "\"B\"", 1), 5); /* 0..4, not the old 5 */
        assert_int_equal(run_records(s, "\"A\"", 1), 2);
        eddy__store_close(s);
        s = open_ok(dir, FP);
        assert_int_equal(run_records(s, "\"B\"", 1), 5);
        assert_int_equal(run_records(s, "\"A\"", 1), 2);
        eddy__store_close(s);
    }
}
#endif

#ifdef EDDY_TEST_HOOKS
static int count_cut(void *arg, const eddy__jlog_entry *e)
{
    *(long *)arg += e->cut;
    return EDDY_OK;
}

/* The cut entries of every journal row of the state in dir. */
static long jlog_cuts(const char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long n = 0;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM jlog", -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        assert_int_equal(eddy__jlog_walk(sqlite3_column_blob(st, 0),
                                         (size_t)sqlite3_column_bytes(st, 0), count_cut, &n),
                         EDDY_OK);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* A run cut once and then rewritten after every reopen, its old rows kept
 * by runs that live on: each rewrite writes its cut once, whatever copies
 * the rows read at the reopen held (they doubled with each cycle: 2,048
 * after 12). Found in review. */
static void test_rewrite_cuts_do_not_multiply(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    eddy__store_sqlite_test_compact_slack(s, 0);
    uint64_t line = 1;
    assert_int_equal(eddy__store_pending_add(s, "\"A\"", 1, line++, "{}"), EDDY_OK);
    eddy__jrec r = call_rec("\"A\"", 1, "e", "x", 0);
    assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(eddy__store_journal_cut(s, "\"A\"", 1, "e", "x", 0), EDDY_OK);
    assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    char key[32];
    for (int c = 0; c < 10; c++) {
        /* A and eight short runs in a row that turns sparse when they end,
         * in the commit of a run B<c> that lives on and keeps the new row. */
        r = call_rec("\"A\"", 1, "e", "y", c % 4);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        put_short_runs(s, 10 * c, 10 * c + 7);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        prune_short_runs(s, 10 * c, 10 * c + 7);
        snprintf(key, sizeof(key), "\"B%d\"", c);
        assert_int_equal(eddy__store_pending_add(s, key, 1, line++, "{}"), EDDY_OK);
        r = call_rec(key, 1, "e", "x", 0);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
        eddy__store_close(s);
        s = open_ok(d->state, FP);
        eddy__store_sqlite_test_compact_slack(s, 0);
        assert_true(jlog_cuts(d->state) <= c + 3); /* one per row kept, at most */
        assert_int_equal(run_records(s, "\"A\"", 1), 1 + (c < 3 ? c + 1 : 4));
    }
    eddy__store_close(s);
}
#endif

/* Under the compaction slack a sparse row is left as it is: its last run
 * ends soon enough in most workloads, and the row goes then. */
static void test_journal_log_compaction_waits(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    put_short_runs(s, 0, 9);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    long full = jlog_bytes(d->state);
    prune_short_runs(s, 1, 9);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 1); /* 1 of 10 runs left: not rewritten */
    assert_int_equal(jlog_bytes(d->state), full);
    assert_int_equal(run_records(s, "\"S0\"", 1), 1);
    assert_int_equal(eddy__store_journal_prune_run(s, "\"S0\"", 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_int_equal(jlog_rows(d->state), 0);
    eddy__store_close(s);
}

typedef struct walked {
    eddy__jlog_entry e[4];
    char text[4][256];
    int n;
} walked;

static int keep_entry(void *arg, const eddy__jlog_entry *e)
{
    walked *w = arg;
    if (w->n < 4) {
        w->e[w->n] = *e;
        snprintf(w->text[w->n], sizeof(w->text[0]), "%c %s %llu %s %s %lld %d %d %s %s %s %s %s",
                 e->cut ? 'C' : 'P', e->rec.key, (unsigned long long)e->rec.seq, e->rec.event_id,
                 e->rec.action, (long long)e->rec.idx, e->rec.kind, e->rec.status,
                 e->rec.fn_id ? e->rec.fn_id : "~", e->rec.digest ? e->rec.digest : "~",
                 e->rec.payload ? e->rec.payload : "~", e->rec.err_type ? e->rec.err_type : "~",
                 e->rec.err_msg ? e->rec.err_msg : "~");
    }
    w->n++;
    return EDDY_OK;
}

/* The log's entries decode to what was encoded, and a damaged blob (cut
 * short anywhere inside an entry, a bad tag, a NUL inside a string) is
 * refused, never read past. */
static void test_jlog_codec(void **state)
{
    (void)state;
    eddy__buf b = {0};
    eddy__jrec r = call_rec("\"k\"", 18446744073709551615ULL, "0123456789abcdef", "act", 3);
    r.err_type = "ValueError";
    r.err_msg = "bad";
    r.payload = NULL;
    assert_int_equal(eddy__jlog_put(&b, &r), EDDY_OK);
    size_t first = b.len;
    assert_int_equal(eddy__jlog_cut(&b, "\"k\"", 2, "e", "act", -1), EDDY_OK);
    walked w = {.n = 0};
    assert_int_equal(eddy__jlog_walk(b.p, b.len, keep_entry, &w), EDDY_OK);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.text[0], "P \"k\" 18446744073709551615 0123456789abcdef act 3 1 1 fn "
                                   "d0 ~ ValueError bad");
    assert_string_equal(w.text[1], "C \"k\" 2 e act -1 0 0 ~ ~ ~ ~ ~");
    for (size_t len = 0; len < b.len; len++) {
        w.n = 0;
        int rc = eddy__jlog_walk(b.p, len, keep_entry, &w);
        if (len == 0 || len == first)
            assert_int_equal(rc, EDDY_OK);
        else
            assert_int_equal(rc, EDDY_ESTATE);
    }
    char *bad = malloc(b.len);
    memcpy(bad, b.p, b.len);
    bad[0] = 'X';
    assert_int_equal(eddy__jlog_walk(bad, b.len, keep_entry, &w), EDDY_ESTATE);
    memcpy(bad, b.p, b.len);
    assert_int_equal(bad[1], 4); /* the key's length + 1, then "k" */
    bad[3] = '\0';               /* inside the key "k" */
    assert_int_equal(eddy__jlog_walk(bad, b.len, keep_entry, &w), EDDY_ESTATE);
    free(bad);
    free(b.p);
}

/* Append a legacy ('P', format 5 and older) string: 4-byte length, bytes, NUL. */
static void legacy_str(eddy__buf *b, const char *s)
{
    unsigned char n[4];
    uint32_t len = s != NULL ? (uint32_t)strlen(s) : 0xffffffffu;
    for (int i = 0; i < 4; i++)
        n[i] = (unsigned char)(len >> (8 * i));
    assert_int_equal(eddy__buf_put(b, (const char *)n, 4), EDDY_OK);
    if (s != NULL)
        assert_int_equal(eddy__buf_put(b, s, strlen(s) + 1), EDDY_OK);
}

static void legacy_u64(eddy__buf *b, uint64_t v)
{
    unsigned char n[8];
    for (int i = 0; i < 8; i++)
        n[i] = (unsigned char)(v >> (8 * i));
    assert_int_equal(eddy__buf_put(b, (const char *)n, 8), EDDY_OK);
}

/* Entries as format 5 wrote them ('P') still decode, flagged as legacy, and
 * a put encodes them as 'p' entries, ~a third shorter; varints are read in
 * their shortest form only, so that the encoding stays canonical. */
static void test_jlog_legacy_and_varints(void **state)
{
    (void)state;
    eddy__buf b = {0};
    assert_int_equal(eddy__buf_put(&b, "P", 1), EDDY_OK);
    legacy_str(&b, "\"k\"");
    legacy_u64(&b, 7);
    legacy_str(&b, "0123456789abcdef");
    legacy_str(&b, "act");
    legacy_u64(&b, (uint64_t)-1); /* a completion record */
    assert_int_equal(eddy__buf_put(&b, "\x02\x00", 2), EDDY_OK);
    legacy_str(&b, NULL);
    legacy_str(&b, NULL);
    legacy_str(&b, "{\"events\":[]}");
    legacy_str(&b, NULL);
    legacy_str(&b, NULL);
    walked w = {.n = 0};
    assert_int_equal(eddy__jlog_walk(b.p, b.len, keep_entry, &w), EDDY_OK);
    assert_int_equal(w.n, 1);
    assert_true(w.e[0].legacy);
    assert_string_equal(w.text[0], "P \"k\" 7 0123456789abcdef act -1 2 0 ~ ~ {\"events\":[]} ~ ~");
    eddy__buf c = {0};
    assert_int_equal(eddy__jlog_put(&c, &w.e[0].rec), EDDY_OK);
    assert_true(c.len < b.len * 2 / 3);
    assert_int_equal(c.p[0], 'p');
    walked v = {.n = 0};
    assert_int_equal(eddy__jlog_walk(c.p, c.len, keep_entry, &v), EDDY_OK);
    assert_int_equal(v.n, 1);
    assert_false(v.e[0].legacy);
    assert_string_equal(v.text[0], w.text[0]);
    /* seq 7 is the byte after the key; as 0x87 0x00 it is not the shortest
     * form, and a varint of eleven bytes is too long. */
    assert_int_equal(c.p[1], 4);
    assert_int_equal(c.p[6], 7);
    eddy__buf d = {0};
    assert_int_equal(eddy__buf_put(&d, c.p, 6), EDDY_OK);
    assert_int_equal(eddy__buf_put(&d, "\x87\x00", 2), EDDY_OK);
    assert_int_equal(eddy__buf_put(&d, c.p + 7, c.len - 7), EDDY_OK);
    assert_int_equal(eddy__jlog_walk(d.p, d.len, keep_entry, &v), EDDY_ESTATE);
    d.len = 0;
    assert_int_equal(eddy__buf_put(&d, c.p, 6), EDDY_OK);
    assert_int_equal(eddy__buf_put(&d, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10),
                     EDDY_OK); /* 2^64 - 1: fine */
    assert_int_equal(eddy__buf_put(&d, c.p + 7, c.len - 7), EDDY_OK);
    v.n = 0;
    assert_int_equal(eddy__jlog_walk(d.p, d.len, keep_entry, &v), EDDY_OK);
    assert_int_equal(v.e[0].rec.seq, UINT64_MAX);
    d.len = 0;
    assert_int_equal(eddy__buf_put(&d, c.p, 6), EDDY_OK);
    assert_int_equal(eddy__buf_put(&d, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10),
                     EDDY_OK); /* past 64 bits */
    assert_int_equal(eddy__buf_put(&d, c.p + 7, c.len - 7), EDDY_OK);
    assert_int_equal(eddy__jlog_walk(d.p, d.len, keep_entry, &v), EDDY_ESTATE);
    free(b.p);
    free(c.p);
    free(d.p);
}

static void test_busy(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    /* flock locks belong to the open file description, so a second open in
     * the same process conflicts just like another process would. */
    char *msg = open_fails(d->state, FP, EDDY_EBUSY);
    assert_non_null(strstr(msg, "another eddy uses state directory"));
    assert_non_null(strstr(msg, d->state));
    free(msg);
    eddy__store_close(s);
    s = open_ok(d->state, FP);
    eddy__store_close(s);
}

static void test_other_plan(void **state)
{
    test_dir *d = *state;
    eddy__store_close(open_ok(d->state, FP));
    char *msg = open_fails(d->state, FP2, EDDY_ESTATE);
    assert_non_null(strstr(msg, d->state));
    assert_non_null(strstr(msg, "another agent plan"));
    assert_non_null(strstr(msg, FP));
    assert_non_null(strstr(msg, FP2));
    assert_non_null(strstr(msg, "remove"));
    free(msg);
    eddy__store_close(open_ok(d->state, FP)); /* the refusal changed nothing */
}

/* The store's plan_actions, read by a store opened read-only (new, or NULL). */
static char *plan_actions(const char *dir)
{
    eddy__store *s = NULL;
    char *text = (char *)"x";
    assert_int_equal(eddy__store_open(&s, dir, NULL, NULL, NULL), EDDY_OK);
    assert_int_equal(eddy__store_get_meta_text(s, "plan_actions", &text), EDDY_OK);
    eddy__store_close(s);
    return text;
}

/* The description of the plan is kept beside its fingerprint: written when
 * the store is made, and when one of the same fingerprint lacks it or holds
 * another text; the fingerprint alone decides. */
static void test_plan_actions_kept(void **state)
{
    test_dir *d = *state;
    static const char *const one[] = {"[\"one\"]", "[\"two\"]"};
    eddy__store *s = NULL;
    /* Made without one (as an older eddy does): a refusal says it cannot tell. */
    eddy__store_close(open_ok(d->state, FP));
    assert_null(plan_actions(d->state));
    char *msg = open_fails(d->state, FP2, EDDY_ESTATE);
    assert_non_null(strstr(msg, "an older eddy made the state without recording its plan's "
                                "actions, so what changed is not known"));
    free(msg);
    assert_null(plan_actions(d->state));
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(eddy__store_open(&s, d->state, FP, one[i], NULL), EDDY_OK);
        eddy__store_close(s);
        char *text = plan_actions(d->state);
        assert_string_equal(text, one[i]);
        free(text);
    }
    eddy__store_close(open_ok(d->state, FP)); /* NULL leaves it */
    char *text = plan_actions(d->state);
    assert_string_equal(text, one[1]);
    free(text);
    /* A description that does not give the state's fingerprint is not
     * believed: the refusal gives the fingerprints, without the hint. */
    msg = open_fails(d->state, FP2, EDDY_ESTATE);
    assert_non_null(strstr(msg, FP2));
    assert_null(strstr(msg, "older eddy"));
    free(msg);

    /* A new store has it from the start. */
    char other[4096];
    snprintf(other, sizeof(other), "%s/other", d->root);
    assert_int_equal(eddy__store_open(&s, other, FP, one[0], NULL), EDDY_OK);
    eddy__store_close(s);
    text = plan_actions(other);
    assert_string_equal(text, one[0]);
    free(text);
}

static void test_format_version(void **state)
{
    test_dir *d = *state;
    eddy__store_close(open_ok(d->state, FP));
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE meta SET v = %d WHERE k = 'format_version'",
             EDDY_STORE_FORMAT_VERSION + 1);
    poke_db(d->state, sql);
    char *msg = open_fails(d->state, FP, EDDY_ESTATE);
    char want[256];
    snprintf(want, sizeof(want),
             "state directory %s was written by a newer eddy (format %d, this eddy reads formats "
             "%d to %d)",
             d->state, EDDY_STORE_FORMAT_VERSION + 1, EDDY_STORE_FORMAT_OLDEST,
             EDDY_STORE_FORMAT_VERSION);
    assert_string_equal(msg, want);
    free(msg);

    /* Format 2 is taken and upgraded in place (same tables). */
    poke_db(d->state, "UPDATE meta SET v = 2 WHERE k = 'format_version'");
    eddy__store_close(open_ok(d->state, FP));
    assert_int_equal(jlog_query(d->state, "SELECT v FROM meta WHERE k = 'format_version'"),
                     EDDY_STORE_FORMAT_VERSION);

    poke_db(d->state, "UPDATE meta SET v = 1 WHERE k = 'format_version'");
    msg = open_fails(d->state, FP, EDDY_ESTATE);
    assert_non_null(strstr(msg, "format 1, written by an older eddy"));
    free(msg);

    poke_db(d->state, "DELETE FROM meta WHERE k = 'format_version'");
    msg = open_fails(d->state, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, "not an eddy state database"));
    free(msg);
}

/* Copy file name of directory from into directory to (made when absent). */
static void copy_state_file(const char *from, const char *to, const char *name)
{
    char a[256], b[256], chunk[65536];
    snprintf(a, sizeof(a), "%s/%s", from, name);
    snprintf(b, sizeof(b), "%s/%s", to, name);
    (void)mkdir(to, 0700);
    int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(in >= 0 && out >= 0);
    ssize_t n;
    while ((n = read(in, chunk, sizeof(chunk))) > 0)
        assert_int_equal(write(out, chunk, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

static void set_file_size(const char *dir, const char *name, off_t size)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(truncate(path, size), 0);
}

static void remove_file(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(unlink(path), 0);
}

/* Refused for a run and for an inspection alike, with want in the message. */
static void refused_both(const char *dir, const char *want)
{
    for (int ro = 0; ro < 2; ro++) {
        char *msg = open_fails(dir, ro ? NULL : FP, EDDY_ESTATE);
        if (strstr(msg, want) == NULL || strstr(msg, "the state is damaged") == NULL)
            fail_msg("%s: %s", ro ? "read-only" : "run", msg);
        free(msg);
    }
}

/*
 * A state whose eddy.db is gone or empty is not started afresh (every input
 * and durable call again) when it held a commit: LOCK holds a mark once it
 * did, or a WAL with frames is there. A directory as a crash at creation
 * leaves it (LOCK alone, an empty eddy.db, a database of one page with no
 * tables) starts. A WAL gone or cut short while its index says it held
 * frames not copied into the database is refused too.
 */
static void test_missing_files(void **state)
{
    test_dir *d = *state;
    char crash[128], copy[128];
    snprintf(crash, sizeof(crash), "%s/crash", d->root);
    snprintf(copy, sizeof(copy), "%s/copy", d->root);

    /* As a crash at creation leaves it: each starts afresh. */
    assert_int_equal(mkdir(d->state, 0700), 0);
    for (int step = 0; step < 3; step++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/LOCK", d->state);
        close(open(path, O_WRONLY | O_CREAT, 0600));
        snprintf(path, sizeof(path), "%s/eddy.db", d->state);
        if (step >= 1)
            close(open(path, O_WRONLY | O_CREAT, 0644));
        if (step == 2) { /* WAL mode set: a one-page header, no tables */
            sqlite3 *db = NULL;
            assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
            assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL),
                             SQLITE_OK);
            sqlite3_close(db);
        }
        eddy__store_close(open_ok(d->state, FP));
        assert_int_equal(tmptree_remove(d->state), 0);
        assert_int_equal(mkdir(d->state, 0700), 0);
    }
    assert_int_equal(rmdir(d->state), 0);

    /* A state with a commit, stopped cleanly: LOCK is marked. */
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    /* The files as a kill -9 now would leave them. */
    static const char *const files[] = {"LOCK", "eddy.db", "eddy.db-wal", "eddy.db-shm"};
    for (size_t i = 0; i < 4; i++)
        copy_state_file(d->state, crash, files[i]);
    eddy__store_close(s);

    set_file_size(d->state, "eddy.db", 0);
    refused_both(d->state, "eddy.db is empty (0 bytes), but ");
    refused_both(d->state, "/LOCK says that the directory held a state");
    remove_file(d->state, "eddy.db");
    refused_both(d->state, "eddy.db is missing, but ");
    struct stat sb;
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", d->state);
    assert_int_equal(stat(path, &sb), -1); /* nothing made */

    /* The crash's copy resumes as it is. */
    for (size_t i = 0; i < 4; i++)
        copy_state_file(crash, copy, files[i]);
    s = open_ok(copy, FP);
    uint64_t off = 0, line = 0;
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(off, 10);
    eddy__store_close(s);
    assert_int_equal(tmptree_remove(copy), 0);

    /* Without the mark (an older eddy's state), the WAL tells. */
    for (size_t i = 0; i < 4; i++)
        copy_state_file(crash, copy, files[i]);
    set_file_size(copy, "LOCK", 0);
    set_file_size(copy, "eddy.db", 0);
    refused_both(copy, "eddy.db is empty (0 bytes), but its write-ahead log");
    remove_file(copy, "eddy.db");
    refused_both(copy, "eddy.db is missing, but its write-ahead log");
    assert_int_equal(tmptree_remove(copy), 0);

    /* The WAL gone or cut short: its index says what it held. */
    for (size_t i = 0; i < 4; i++)
        copy_state_file(crash, copy, files[i]);
    set_file_size(copy, "eddy.db-wal", 100);
    refused_both(copy, "eddy.db-wal is cut short (100 bytes), but ");
    remove_file(copy, "eddy.db-wal");
    refused_both(copy, "eddy.db-wal is missing, but ");
    refused_both(copy, "-shm says that it holds ");
    assert_int_equal(tmptree_remove(copy), 0);

    /* Without its mark nor a WAL, an emptied eddy.db cannot be told from a
     * new state's: it starts afresh (docs/reliability.md), and is marked. */
    for (size_t i = 0; i < 2; i++)
        copy_state_file(crash, copy, files[i]);
    set_file_size(copy, "LOCK", 0);
    set_file_size(copy, "eddy.db", 0);
    eddy__store_close(open_ok(copy, FP));
    set_file_size(copy, "eddy.db", 0);
    refused_both(copy, "/LOCK says that the directory held a state");
}

/* The state's commit count in dir's eddy.db, read beside an open store. */
static long commits_of(const char *dir)
{
    return jlog_query(dir, "SELECT coalesce((SELECT v FROM meta WHERE k = 'commits'), -1)");
}

static const char lock_mark[] = "eddy state: eddy.db holds it; do not remove eddy.db alone\n";

/* What dir/LOCK holds after its mark. */
static void lock_line_is(const char *dir, const char *want)
{
    char path[256], b[256];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, b, sizeof(b) - 1);
    close(fd);
    assert_true(n >= (ssize_t)strlen(lock_mark));
    b[n] = '\0';
    assert_memory_equal(b, lock_mark, strlen(lock_mark));
    assert_string_equal(b + strlen(lock_mark), want);
}

static void set_lock_line(const char *dir, const char *line)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, lock_mark, strlen(lock_mark)), (ssize_t)strlen(lock_mark));
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    close(fd);
}

/* Refused for a run and for an inspection alike, with the message of a
 * database that holds `has` commits where LOCK says `synced` were durable. */
static void refused_behind(const char *dir, unsigned has, unsigned synced)
{
    char want[2048];
    unsigned lost = synced - has;
    snprintf(want, sizeof(want),
             "%s/eddy.db holds the state as of its commit %u, but %s/LOCK says that commit %u "
             "was made durable: %u commit%s lost and the state is damaged (were eddy.db-wal and "
             "eddy.db-shm removed after eddy was killed, eddy.db-wal damaged, or eddy.db replaced "
             "by an older copy?); put back what was removed or replaced, or remove %s/LOCK to "
             "go on from eddy.db as it is (the durable calls of the lost commits run again), "
             "or remove the directory %s (or give another --state directory) to start over",
             dir, has, dir, synced, lost, lost == 1 ? " is" : "s are", dir, dir);
    for (int ro = 0; ro < 2; ro++) {
        char *msg = open_fails(dir, ro ? NULL : FP, EDDY_ESTATE);
        if (strcmp(msg, want) != 0)
            fail_msg("%s: %s", ro ? "read-only" : "run", msg);
        free(msg);
    }
}

/*
 * Each commit counts itself in meta commits, and once a sync made commits
 * durable, LOCK's second line says how many. A database that holds fewer
 * lost commits that were on disk (its WAL and index removed after a kill,
 * or an older copy put in its place): refused, for a run and for an
 * inspection, until LOCK is removed; the count then goes on from the
 * database's. A WAL merged and removed by another SQLite program, and a
 * state without the count or the line (an older eddy's), are not refused.
 */
static void test_commit_count(void **state)
{
    test_dir *d = *state;
    char crash[128], copy[128], old[128];
    snprintf(crash, sizeof(crash), "%s/crash", d->root);
    snprintf(copy, sizeof(copy), "%s/copy", d->root);
    snprintf(old, sizeof(old), "%s/old", d->root);
    static const char *const files[] = {"LOCK", "eddy.db", "eddy.db-wal", "eddy.db-shm"};

    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(commits_of(d->state), -1); /* none yet */
    lock_line_is(d->state, "");
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(eddy__store_set_source_pos(s, 10 * (uint64_t)i, (uint64_t)i), EDDY_OK);
        assert_int_equal(eddy__store_commit(s), EDDY_OK);
    }
    assert_int_equal(eddy__store_commit(s), EDDY_OK); /* nothing to commit: not counted */
    assert_int_equal(commits_of(d->state), 3);
    lock_line_is(d->state, "synced 00000000000000000003\n");
    /* Written but not synced: counted in the database, not yet in LOCK. */
    assert_int_equal(eddy__store_set_source_pos(s, 40, 4), EDDY_OK);
    assert_true(eddy__store_split_commit(s));
    assert_int_equal(eddy__store_commit_nosync(s), EDDY_OK);
    assert_int_equal(commits_of(d->state), 4);
    lock_line_is(d->state, "synced 00000000000000000003\n");
    assert_int_equal(eddy__store_sync(s), EDDY_OK);
    lock_line_is(d->state, "synced 00000000000000000003\n"); /* the note writes it */
    eddy__store_sync_note(s);
    lock_line_is(d->state, "synced 00000000000000000004\n");
    for (size_t i = 0; i < 4; i++)
        copy_state_file(d->state, crash, files[i]); /* as a kill -9 now leaves them */
    eddy__store_close(s);

    /* Stopped cleanly: eddy.db holds every commit; the count goes on. */
    copy_state_file(d->state, old, "eddy.db");
    s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 50, 5), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    assert_int_equal(commits_of(d->state), 5);
    lock_line_is(d->state, "synced 00000000000000000005\n");

    /* An older copy of eddy.db put in its place. */
    copy_state_file(old, d->state, "eddy.db");
    refused_behind(d->state, 4, 5);
    /* LOCK removed: the state goes on from eddy.db as it is. */
    remove_file(d->state, "LOCK");
    s = open_ok(d->state, FP);
    lock_line_is(d->state, ""); /* made again, and marked */
    uint64_t off = 0, line = 0;
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(off, 40);
    assert_int_equal(eddy__store_set_source_pos(s, 60, 6), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    assert_int_equal(commits_of(d->state), 5);
    lock_line_is(d->state, "synced 00000000000000000005\n");
    eddy__store_close(open_ok(d->state, NULL));

    /* After the kill, eddy.db-wal and eddy.db-shm removed: eddy.db is
     * still the one-page database of a new state (no checkpoint yet). */
    for (size_t i = 0; i < 4; i++)
        copy_state_file(crash, copy, files[i]);
    remove_file(copy, "eddy.db-wal");
    remove_file(copy, "eddy.db-shm");
    refused_behind(copy, 0, 4);
    assert_int_equal(tmptree_remove(copy), 0);

    /* After the kill, another SQLite program opened the state and closed
     * it: every frame copied into eddy.db, the WAL and its index removed. */
    for (size_t i = 0; i < 4; i++)
        copy_state_file(crash, copy, files[i]);
    poke_db(copy, "SELECT count(*) FROM meta");
    char path[256];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/eddy.db-wal", copy);
    assert_int_equal(stat(path, &sb), -1);
    eddy__store_close(open_ok(copy, NULL));
    s = open_ok(copy, FP);
    assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
    assert_int_equal(off, 40);
    eddy__store_close(s);

    /* A state of an older eddy (no count, LOCK with its mark alone) goes
     * on, and gets both. */
    set_lock_line(copy, "");
    poke_db(copy, "DELETE FROM meta WHERE k = 'commits'");
    s = open_ok(copy, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 70, 7), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    assert_int_equal(commits_of(copy), 1);
    lock_line_is(copy, "synced 00000000000000000001\n");

    /* A line not in its exact form is not believed (torn, or not eddy's). */
    static const char *const bad[] = {
        "synced 9\n",
        "synced 0000000000000000009x\n",
        "synced  0000000000000000009\n",
        "synced 00000000000000000009",
        "Synced 00000000000000000009\n",
        "synced 99999999999999999999\n", /* above any SQLite integer */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_lock_line(copy, bad[i]);
        eddy__store_close(open_ok(copy, NULL));
        eddy__store_close(open_ok(copy, FP));
    }
    set_lock_line(copy, "synced 00000000000000000009\n");
    refused_behind(copy, 1, 9);
    assert_int_equal(tmptree_remove(copy), 0);
}

/* A live connection in another process (sqlite3, another eddy) that
 * commits while a check of the WAL's index looks at the files: the header
 * says more frames than the WAL's size taken a moment before. */
typedef struct live_conn {
    pid_t pid;
    int to, from; /* pipes to and from it */
    int hooked;   /* calls of the index hook */
} live_conn;

static void live_conn_main(const char *db, int in, int out)
{
    sqlite3 *c = NULL;
    char b = 'r';
    /* A read attaches the WAL's index and holds it until the close; a
     * commit leaves frames in the WAL, so that a check that did not see
     * the connection would go on to look at the WAL (and the hook). */
    if (sqlite3_open(db, &c) != SQLITE_OK ||
        sqlite3_exec(c, "SELECT count(*) FROM meta", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(c, "PRAGMA user_version = 100", NULL, NULL, NULL) != SQLITE_OK ||
        write(out, &b, 1) != 1)
        _exit(1);
    for (int n = 1; read(in, &b, 1) == 1; n++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", n);
        if (sqlite3_exec(c, sql, NULL, NULL, NULL) != SQLITE_OK || write(out, &b, 1) != 1)
            _exit(2);
    }
    _exit(sqlite3_close(c) == SQLITE_OK ? 0 : 3);
}

static void live_conn_start(live_conn *l, const char *dir)
{
    char db[256], b = 0;
    snprintf(db, sizeof(db), "%s/eddy.db", dir);
    int to[2], from[2];
    assert_int_equal(pipe(to), 0);
    assert_int_equal(pipe(from), 0);
    l->pid = fork();
    assert_true(l->pid >= 0);
    if (l->pid == 0) {
        close(to[1]);
        close(from[0]);
        live_conn_main(db, to[0], from[1]);
    }
    close(to[0]);
    close(from[1]);
    l->to = to[1];
    l->from = from[0];
    l->hooked = 0;
    assert_int_equal(read(l->from, &b, 1), 1); /* attached */
}

/* The index hook: the live connection commits, and says when it did. */
static void live_conn_commit(void *arg)
{
    live_conn *l = arg;
    char b = 'c';
    l->hooked++;
    assert_int_equal(write(l->to, &b, 1), 1);
    assert_int_equal(read(l->from, &b, 1), 1);
}

static void live_conn_stop(live_conn *l)
{
    int st = 0;
    close(l->to);
    assert_int_equal(waitpid(l->pid, &st, 0), l->pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(l->from);
}

/*
 * The check of the WAL's index (test_missing_files) refuses nothing beside
 * a live connection: a commit of another process between the looks at the
 * WAL and at the index made `eddy inspect` beside a running eddy say that
 * the WAL was cut short. An index a connection holds is not looked at: the
 * hook between them does not even run.
 */
static void test_index_check_beside_a_live_connection(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    for (int ro = 0; ro < 2; ro++) {
        live_conn l;
        live_conn_start(&l, d->state);
        eddy__store_sqlite_test_index_hook(live_conn_commit, &l);
        eddy_error *err = NULL;
        s = NULL;
        int rc = eddy__store_open(&s, d->state, ro ? NULL : FP, NULL, &err);
        eddy__store_sqlite_test_index_hook(NULL, NULL);
        if (rc != EDDY_OK)
            fail_msg("%s: %s", ro ? "read-only" : "run", eddy_error_message(err));
        uint64_t off = 0, line = 0;
        assert_int_equal(eddy__store_get_source_pos(s, &off, &line), EDDY_OK);
        assert_int_equal(off, 10);
        eddy__store_close(s);
        assert_int_equal(l.hooked, 0);
        live_conn_stop(&l);
    }
}

/* A connection that opens the state after a kill, commits and closes
 * cleanly (copying every frame into eddy.db, then removing the index and
 * the WAL) between the looks at the index and at the WAL: the header it
 * left differs from the one read first, and nothing is refused. */
static void open_commit_close(void *arg)
{
    sqlite3 *c = NULL;
    assert_int_equal(sqlite3_open(arg, &c), SQLITE_OK);
    assert_int_equal(sqlite3_exec(c, "PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(c), SQLITE_OK);
}

static void test_index_check_beside_a_clean_close(void **state)
{
    test_dir *d = *state;
    char crash[128], db[160];
    snprintf(crash, sizeof(crash), "%s/crash", d->root);
    snprintf(db, sizeof(db), "%s/eddy.db", crash);
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    static const char *const files[] = {"LOCK", "eddy.db", "eddy.db-wal", "eddy.db-shm"};
    for (int ro = 0; ro < 2; ro++) {
        for (size_t i = 0; i < 4; i++)
            copy_state_file(d->state, crash, files[i]); /* as a kill -9 leaves them */
        eddy__store_sqlite_test_index_hook(open_commit_close, db);
        eddy_error *err = NULL;
        eddy__store *c = NULL;
        int rc = eddy__store_open(&c, crash, ro ? NULL : FP, NULL, &err);
        eddy__store_sqlite_test_index_hook(NULL, NULL);
        if (rc != EDDY_OK)
            fail_msg("%s: %s", ro ? "read-only" : "run", eddy_error_message(err));
        uint64_t off = 0, line = 0;
        assert_int_equal(eddy__store_get_source_pos(c, &off, &line), EDDY_OK);
        assert_int_equal(off, 10);
        eddy__store_close(c);
        assert_int_equal(tmptree_remove(crash), 0);
    }
    eddy__store_close(s);
}

/* Whether another process holds a lock on the DMS byte of dir's WAL index,
 * as SQLite does while a connection has the database open: asked from a
 * child (F_GETLK does not see the asking process's own locks). */
static int index_held_by_us(const char *dir)
{
    char shm[256];
    snprintf(shm, sizeof(shm), "%s/eddy.db-shm", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(shm, O_RDONLY);
        struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 128, .l_len = 1};
        _exit(fd >= 0 && fcntl(fd, F_GETLK, &lk) == 0 && lk.l_type == F_RDLCK ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st) == 0;
}

/*
 * An inspection (eddy_state_inspect() on another thread) beside a store of
 * the same process on the same state: the check of the WAL's index opened
 * and closed the index, which dropped this process's POSIX locks on it, the
 * running store's SQLite lock among them. It leaves the index alone now.
 */
static void test_index_check_beside_a_store_of_this_process(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    assert_true(index_held_by_us(d->state));
    for (int i = 0; i < 2; i++) {
        eddy__store *r = open_ok(d->state, NULL);
        eddy__store_close(r);
        assert_true(index_held_by_us(d->state));
    }
    eddy__store_close(s);
}

/* This boot's start (btime in /proc/stat), or -1. */
static long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[4096];
    long long t = -1;
    while (f != NULL && t < 0 && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "btime ", 6) == 0)
            t = atoll(line + 6);
    if (f != NULL)
        fclose(f);
    return t;
}

/*
 * After a power loss the WAL's index (never synced) may count frames that
 * never reached the WAL on disk; SQLite rebuilds the index from the WAL
 * then, and opens the state as its last synced commit left it. An index
 * last written before this boot is not believed; one of this boot (a kill
 * -9) is, as test_missing_files checks.
 */
static void test_index_from_an_earlier_boot(void **state)
{
    test_dir *d = *state;
    long long boot = boot_time();
    if (boot <= 0)
        skip();
    char crash[128], shm[160];
    snprintf(crash, sizeof(crash), "%s/crash", d->root);
    snprintf(shm, sizeof(shm), "%s/eddy.db-shm", crash);
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 10, 1), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s); /* copied into eddy.db */
    s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_source_pos(s, 20, 2), EDDY_OK);
    /* Never synced: what a power loss takes back (LOCK does not count it). */
    assert_true(eddy__store_split_commit(s));
    assert_int_equal(eddy__store_commit_nosync(s), EDDY_OK);
    static const char *const files[] = {"LOCK", "eddy.db", "eddy.db-wal", "eddy.db-shm"};
    /* Each mode gets its own copy: an open rebuilds the index it checked. */
    char copies[2][128];
    for (int k = 0; k < 2; k++) {
        snprintf(copies[k], sizeof(copies[k]), "%s/crash%d", d->root, k);
        for (size_t i = 0; i < 4; i++)
            copy_state_file(d->state, copies[k], files[i]);
    }
    for (size_t i = 0; i < 4; i++)
        copy_state_file(d->state, crash, files[i]);
    eddy__store_close(s);
    /* The WAL on disk holds its header and none of the frames the index
     * counts (the last commit, never synced). */
    set_file_size(crash, "eddy.db-wal", 32);
    refused_both(crash, "eddy.db-wal is cut short (32 bytes), but ");
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)boot - 60}};
    for (int ro = 1; ro >= 0; ro--) {
        set_file_size(copies[ro], "eddy.db-wal", 32);
        snprintf(shm, sizeof(shm), "%s/eddy.db-shm", copies[ro]);
        assert_int_equal(utimensat(AT_FDCWD, shm, times, 0), 0);
        eddy_error *err = NULL;
        eddy__store *c = NULL;
        int rc = eddy__store_open(&c, copies[ro], ro ? NULL : FP, NULL, &err);
        if (rc != EDDY_OK)
            fail_msg("%s: %s", ro ? "read-only" : "run", eddy_error_message(err));
        uint64_t off = 0, line = 0;
        assert_int_equal(eddy__store_get_source_pos(c, &off, &line), EDDY_OK);
        assert_int_equal(off, 10); /* the last commit in eddy.db */
        eddy__store_close(c);
    }
}

/* Meta values of the wrong type or out of range: refused at open, for a run
 * and for an inspection, as damaged (EDDY_ESTATE), naming the entry and the
 * value as found, printed safely; the state is left as it is. */
static void test_damaged_meta(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_set_meta_u64(s, "dead_offset", 5), EDDY_OK);
    assert_int_equal(eddy__store_set_meta_text(s, "key_field_name", "key"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    static const struct {
        const char *k, *v; /* the entry and its damaged value (SQL) */
        const char *want;  /* part of the message */
    } cases[] = {
        {"sink_offset", "-10", "the meta entry sink_offset holds -10, not a byte offset"},
        {"source_offset", "NULL", "the meta entry source_offset holds NULL, not a byte offset"},
        {"source_offset", "-5", "the meta entry source_offset holds -5, not a byte offset"},
        {"source_line", "'12'", "the meta entry source_line holds '12', not a line count"},
        {"outbox_next", "-5", "the meta entry outbox_next holds -5, not an outbox id"},
        {"outbox_next", "0", "the meta entry outbox_next holds 0, not an outbox id"},
        {"dead_offset", "1.5", "the meta entry dead_offset holds 1.5 (a real), not a byte"},
        {"next_run", "x'01'", "the meta entry next_run holds x'01' (a blob), not a run number"},
        {"commits", "-1", "the meta entry commits holds -1, not a commit count (an integer"},
        {"input_head", "'h'", "the meta entry input_head holds 'h', not a hash (an integer)"},
        {"plan", "x'00ff'", "the meta entry plan holds x'00ff' (a blob), not a plan fingerprint"},
        {"plan", "'a' || char(10) || 'b'", "the meta entry plan holds 'a\\x0ab', not a plan"},
        {"plan", "''", "the meta entry plan holds '', not a plan fingerprint"},
        {"key_field_name", "7", "the meta entry key_field_name holds 7, not text"},
        {"format_version", "'abc'",
         "the meta entry format_version holds 'abc', not a format "
         "version (an integer, 1 or more)"},
        {"format_version", "-1", "the meta entry format_version holds -1, not a format version"},
        {"format_version", "0", "the meta entry format_version holds 0, not a format version"},
    };
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", d->state);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE IF NOT EXISTS keep AS SELECT * FROM meta;"
                 "INSERT OR REPLACE INTO meta(k, v) VALUES ('%s', %s)",
                 cases[i].k, cases[i].v);
        poke_db(d->state, sql);
        struct stat before, after;
        assert_int_equal(stat(path, &before), 0);
        for (int ro = 0; ro < 2; ro++) {
            char *msg = open_fails(d->state, ro ? NULL : FP, EDDY_ESTATE);
            if (strstr(msg, cases[i].want) == NULL || strstr(msg, "the state is damaged") == NULL ||
                strncmp(msg, path, strlen(path)) != 0)
                fail_msg("case %zu (%s): %s", i, ro ? "read-only" : "run", msg);
            free(msg);
        }
        assert_int_equal(stat(path, &after), 0);
        assert_int_equal(before.st_size, after.st_size);
        poke_db(d->state, "DELETE FROM meta; INSERT INTO meta SELECT * FROM keep; DROP TABLE keep");
    }
    /* A long text is cut, and a required entry missing is damage too. */
    poke_db(d->state, "CREATE TABLE keep AS SELECT * FROM meta;"
                      "UPDATE meta SET v = printf('%.100c', 'z') WHERE k = 'plan'");
    char *msg = open_fails(d->state, FP, EDDY_ESTATE);
    assert_non_null(
        strstr(msg, "holds 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz' (cut), not a plan"));
    free(msg);
    poke_db(d->state, "DELETE FROM meta; INSERT INTO meta SELECT * FROM keep;"
                      "DELETE FROM meta WHERE k = 'sink_offset'");
    msg = open_fails(d->state, NULL, EDDY_ESTATE);
    assert_non_null(strstr(msg, "the meta entry sink_offset is missing; the state is damaged"));
    free(msg);
    /* Put back, the state opens, and names it does not know are left alone. */
    poke_db(d->state, "DELETE FROM meta; INSERT INTO meta SELECT * FROM keep; DROP TABLE keep;"
                      "INSERT INTO meta(k, v) VALUES ('from_a_later_eddy', x'00')");
    eddy__store_close(open_ok(d->state, FP));
    eddy__store_close(open_ok(d->state, NULL));
}

static int skip_pending(void *arg, const char *key, uint64_t seq, uint64_t line_no,
                        const char *record_json)
{
    (void)arg, (void)key, (void)seq, (void)line_no, (void)record_json;
    return EDDY_OK;
}

/* Rows of the other tables whose values are of the wrong type (SQLite keeps
 * any): refused where they are read, never used (a NULL memory crashed). */
static void test_damaged_row_types(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_key_put(s, "\"a\"", 3, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "\"b\"", 4, "{\"n\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    static const struct {
        const char *sql; /* the damage */
        int at_open;     /* refused at open, else when key "b" is read */
        const char *want;
    } cases[] = {
        {"UPDATE keys SET next_seq = -2 WHERE key = '\"b\"'", 0,
         "the row of key \"b\" in the keys table holds -2 as its run counter"},
        {"UPDATE keys SET stm = x'7b7d' WHERE key = '\"b\"'", 0,
         "the row of key \"b\" in the keys table holds x'7b7d' (a blob) as its short-term memory, "
         "not text"},
        {"UPDATE keys SET next_seq = 'x' WHERE key = '\"b\"'", 0,
         "holds 'x' as its run counter, not an integer of 0 or more"},
        {"INSERT INTO inputs(id, data) VALUES (9, 12)", 1,
         "the row 9 of the inputs table holds 12, not bytes"},
        {"INSERT INTO outbox(id, line) VALUES (9, 2.5)", 1,
         "the row 9 of the outbox table holds 2.5 (a real), not bytes"},
        {"INSERT INTO jlog(id, data) VALUES (9, 7)", 1, "the row 9 of the jlog table holds 7"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "CREATE TABLE keep AS SELECT * FROM keys; %s", cases[i].sql);
        poke_db(d->state, sql);
        for (int ro = 0; ro < 2; ro++) {
            const char *fp = ro ? NULL : FP;
            char *msg = NULL;
            if (cases[i].at_open && !ro) {
                msg = open_fails(d->state, fp, EDDY_ESTATE);
            } else if (cases[i].at_open) {
                /* An inspection reads the rows as it shows them, or at open. */
                eddy_error *err = NULL;
                int rc = eddy__store_open(&s, d->state, NULL, NULL, &err);
                if (rc == EDDY_OK) {
                    int n = 0;
                    rc = eddy__store_pending_load(s, skip_pending, NULL);
                    if (rc == EDDY_OK)
                        rc = eddy__store_journal_load_all(s, count_jrec, &n);
                    msg = strdup(eddy__store_error(s));
                    eddy__store_close(s);
                } else {
                    msg = strdup(eddy_error_message(err));
                    eddy_error_free(err);
                }
                if (rc != EDDY_ESTATE)
                    fail_msg("case %zu: %s: %s", i, eddy_err_name(rc), msg);
            } else {
                uint64_t seq = 0;
                char *stm = NULL;
                s = open_ok(d->state, fp);
                assert_int_equal(eddy__store_key_get(s, "\"a\"", &seq, &stm), EDDY_OK);
                free(stm);
                stm = NULL;
                assert_int_equal(eddy__store_key_get(s, "\"b\"", &seq, &stm), EDDY_ESTATE);
                assert_null(stm);
                msg = strdup(eddy__store_error(s));
                eddy__store_close(s);
            }
            if (strstr(msg, cases[i].want) == NULL || strstr(msg, "the state is damaged") == NULL)
                fail_msg("case %zu (%s): %s", i, ro ? "read-only" : "run", msg);
            free(msg);
        }
        poke_db(d->state, "DELETE FROM keys; INSERT INTO keys SELECT * FROM keep; DROP TABLE keep;"
                          "DELETE FROM inputs WHERE id = 9; DELETE FROM outbox WHERE id = 9;"
                          "DELETE FROM jlog WHERE id = 9");
    }
    eddy__store_close(open_ok(d->state, FP));
}

/* A row of pending inputs cut short or with bytes changed: opening the
 * state either reads inputs that decode or refuses it as damaged (naming
 * the row), never reads past the row (ASan) and never crashes. */
static void test_damaged_inputs_rows(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_pending_add(s, "\"k\"", 1, 7, "{\"a\":1}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "\"kk\"", 2, 8, "[2,3]"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    /* The row's bytes, as hex. */
    char path[256];
    snprintf(path, sizeof(path), "%s/eddy.db", d->state);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT data FROM inputs", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    unsigned char row[256];
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    assert_true(n > 40 && n <= sizeof(row));
    memcpy(row, sqlite3_column_blob(st, 0), n);
    sqlite3_finalize(st);
    sqlite3_close(db);

    uint64_t r = 7;
    for (int round = 0; round < 60; round++) {
        unsigned char bad[256];
        size_t len = n;
        memcpy(bad, row, n);
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        if (round % 2 == 0)
            len = (size_t)(r >> 33) % n; /* cut short */
        else
            bad[(r >> 33) % n] ^= (unsigned char)(1u << ((r >> 20) % 8)); /* a bit flipped */
        char sql[1024];
        size_t o = (size_t)snprintf(sql, sizeof(sql), "UPDATE inputs SET data = X'");
        for (size_t i = 0; i < len; i++)
            o += (size_t)snprintf(sql + o, sizeof(sql) - o, "%02x", bad[i]);
        snprintf(sql + o, sizeof(sql) - o, "'");
        poke_db(d->state, sql);
        eddy__store *t = NULL;
        eddy_error *err = NULL;
        int rc = eddy__store_open(&t, d->state, FP, NULL, &err);
        if (rc == EDDY_OK) {
            eddy__store_close(t);
        } else {
            assert_int_equal(rc, EDDY_ESTATE);
            assert_non_null(strstr(eddy_error_message(err), "the row of pending inputs"));
            eddy_error_free(err);
        }
    }
}

/* Outbox rows whose lines do not fit their ids: each row's lines end at
 * its id, after the row before, from 1 up. Found at open, read-only or not,
 * naming the row. */
static void test_damaged_outbox_rows(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    static const struct {
        const char *rows; /* VALUES of (id, line) */
        const char *want; /* NULL: opens, else part of the message */
    } cases[] = {
        {"(3, 'a' || char(10) || 'b' || char(10) || 'c'), (5, 'd' || char(10) || 'e')", NULL},
        {"(1, 'a'), (3, 'b' || char(10) || 'c' || char(10) || 'd')",
         "the outbox row 3 holds 3 lines, which do not fit after the row 1 before it"},
        {"(2, 'a' || char(10) || 'b' || char(10) || 'c')",
         "the outbox row 2 holds 3 lines, more than its id allows"},
        {"(0, 'a')", "the outbox row 0 holds 1 line, more than its id allows"},
        {"(-4, 'a'), (7, 'b')", "the outbox row -4 holds 1 line, more than its id allows"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char sql[256];
        poke_db(d->state, "DELETE FROM outbox");
        snprintf(sql, sizeof(sql), "INSERT INTO outbox(id, line) VALUES %s", cases[i].rows);
        poke_db(d->state, sql);
        for (int ro = 0; ro < 2; ro++) {
            const char *fp = ro ? NULL : FP;
            if (cases[i].want == NULL) {
                s = open_ok(d->state, fp);
                buf b = {0};
                assert_int_equal(eddy__store_outbox_load(s, print_outbox, &b), EDDY_OK);
                assert_string_equal(buf_str(&b), "1:a\n2:b\n3:c\n4:d\n5:e\n");
                free(b.p);
                eddy__store_close(s);
                continue;
            }
            char *msg = open_fails(d->state, fp, EDDY_ESTATE);
            if (strstr(msg, cases[i].want) == NULL || strstr(msg, "the state is damaged") == NULL)
                fail_msg("case %zu: %s", i, msg);
            free(msg);
        }
    }
}

static void test_not_a_database(void **state)
{
    test_dir *d = *state;
    char path[128], want[256];
    assert_int_equal(mkdir(d->state, 0700), 0);
    snprintf(path, sizeof(path), "%s/eddy.db", d->state);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database, just some text\n", f);
    fclose(f);
    char *msg = open_fails(d->state, FP, EDDY_ESTORE);
    snprintf(want, sizeof(want), "%s is not an eddy state database or is corrupted: ", path);
    assert_memory_equal(msg, want, strlen(want));
    free(msg);

    /* A SQLite database of something else. */
    assert_int_equal(unlink(path), 0);
    poke_db(d->state, "CREATE TABLE t(x)");
    msg = open_fails(d->state, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, "not an eddy state database"));
    assert_non_null(strstr(msg, path));
    free(msg);
}

/* Another connection reading the file while eddy opens it, as `eddy
 * inspect` may: before the file is in WAL mode its read lock blocks the
 * switch, and opening waits for it rather than failing. */
static void *end_read_later(void *arg)
{
    usleep(200 * 1000);
    assert_int_equal(sqlite3_exec(arg, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    return NULL;
}

static void test_open_waits_for_a_reader(void **state)
{
    test_dir *d = *state;
    assert_int_equal(mkdir(d->state, 0700), 0);
    char db[160];
    snprintf(db, sizeof(db), "%s/eddy.db", d->state);
    close(open(db, O_CREAT | O_WRONLY, 0600)); /* empty: what eddy creates first */
    sqlite3 *reader = NULL;
    assert_int_equal(sqlite3_open_v2(db, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM sqlite_master", NULL, NULL, NULL),
        SQLITE_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, end_read_later, reader), 0);
    eddy__store *s = open_ok(d->state, FP); /* fails at once without the wait */
    pthread_join(th, NULL);
    assert_int_equal(eddy__store_pending_add(s, "k", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
    sqlite3_close(reader);
}

/* Another connection that holds the write lock for a moment, as `eddy
 * inspect` does when its read of the WAL index header meets the header
 * being rewritten: the open store's next write waits for it instead of
 * failing with "database is locked". */
static void *end_write_later(void *arg)
{
    usleep(50 * 1000);
    assert_int_equal(sqlite3_exec(arg, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    return NULL;
}

static void test_write_waits_for_a_reader_lock(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_pending_add(s, "k", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    char db[160];
    snprintf(db, sizeof(db), "%s/eddy.db", d->state);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(db, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, end_write_later, other), 0);
    /* Fails at once with EDDY_ESTORE without the wait. */
    int rc = eddy__store_pending_add(s, "k", 2, 2, "{}");
    if (rc != EDDY_OK)
        fail_msg("%s: %s", eddy_err_name(rc), eddy__store_error(s));
    pthread_join(th, NULL);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    sqlite3_close(other);
    counts_are(s, 0, 2, 0, 0);
    eddy__store_close(s);
}

static void test_bad_directory(void **state)
{
    test_dir *d = *state;
    char dir[160], parent[128];
    snprintf(parent, sizeof(parent), "%s/missing", d->root);
    snprintf(dir, sizeof(dir), "%s/state", parent);
    char *msg = open_fails(dir, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, parent));
    assert_non_null(strstr(msg, "does not exist"));
    free(msg);

    /* A file where the directory should be. */
    FILE *f = fopen(d->state, "w");
    assert_non_null(f);
    fclose(f);
    msg = open_fails(d->state, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, "not a directory"));
    free(msg);
    assert_int_equal(unlink(d->state), 0);

    eddy__store *s = (eddy__store *)&s;
    assert_int_equal(eddy__store_open(&s, "", FP, NULL, NULL), EDDY_EINVAL);
    assert_null(s);
    /* Without a fingerprint the store opens read-only, for inspection; a
     * directory with no state is not found. */
    assert_int_equal(eddy__store_open(&s, d->state, NULL, NULL, NULL), EDDY_ENOTFOUND);
}

static void test_readonly_dir(void **state)
{
    test_dir *d = *state;
    if (geteuid() == 0)
        skip(); /* root ignores permissions; test_write_failures covers read-only writes */
    /* A new, read-only directory: no lock file can be created. */
    assert_int_equal(mkdir(d->state, 0500), 0);
    char *msg = open_fails(d->state, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, d->state));
    free(msg);
    /* An existing state in a directory made read-only afterwards. */
    assert_int_equal(chmod(d->state, 0700), 0);
    eddy__store_close(open_ok(d->state, FP));
    assert_int_equal(chmod(d->state, 0500), 0);
    msg = open_fails(d->state, FP, EDDY_ESTORE);
    assert_non_null(strstr(msg, d->state));
    free(msg);
}

#ifdef EDDY_TEST_HOOKS
/* Write failures through SQLite itself: a read-only connection and a full
 * database. The open transaction is rolled back as a whole and the store
 * refuses further writes; what was committed before stays. */
/* A commit's flush deletes a row whose inputs all ended, then fails to
 * rewrite the next row: the rollback must not touch the deleted one (ASan:
 * a use after free in rows_reset before the fix). */
static void test_flush_fails_after_a_row_deleted(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_pending_add(s, "a", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK); /* row 1: a */
    assert_int_equal(eddy__store_pending_add(s, "b", 2, 2, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "c", 3, 3, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK); /* row 2: b, c */
    assert_int_equal(eddy__store_sqlite_test_exec(s, "CREATE TEMP TRIGGER no_rewrite BEFORE "
                                                     "UPDATE ON inputs BEGIN SELECT "
                                                     "RAISE(ABORT, 'rewrite refused'); END"),
                     EDDY_OK);
    assert_int_equal(eddy__store_pending_remove(s, "a", 1), EDDY_OK); /* row 1 empty */
    assert_int_equal(eddy__store_pending_remove(s, "b", 2), EDDY_OK); /* row 2 rewritten */
    assert_int_equal(eddy__store_commit(s), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "removing pending inputs"));
    eddy__store_close(s);
    s = open_ok(d->state, FP); /* as the last commit left it */
    counts_are(s, 0, 3, 0, 0);
    eddy__store_close(s);
}

static void test_write_failures(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_key_put(s, "k", 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);

    assert_int_equal(eddy__store_set_sink_pos(s, 9), EDDY_OK);
    assert_int_equal(eddy__store_sqlite_test_exec(s, "PRAGMA query_only=1"), EDDY_OK);
    assert_int_equal(eddy__store_key_put(s, "k", 2, "{}"), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "read-only"));
    assert_non_null(strstr(eddy__store_error(s), "eddy.db"));
    assert_int_equal(eddy__store_dirty(s), 0);
    assert_int_equal(eddy__store_sqlite_test_exec(s, "PRAGMA query_only=0"), EDDY_OK);
    /* Failed: no later write or commit goes through, reads still do. */
    assert_int_equal(eddy__store_key_put(s, "k", 3, "{}"), EDDY_ESTORE);
    assert_int_equal(eddy__store_commit(s), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "read-only"));
    counts_are(s, 1, 0, 0, 0);
    eddy__store_close(s);

    s = open_ok(d->state, FP);
    uint64_t sink = 1;
    assert_int_equal(eddy__store_get_sink_pos(s, &sink), EDDY_OK);
    assert_int_equal(sink, 0);
    assert_string_equal(eddy__store_error(s), "");

    /* Disk full: cap the database at its current size. */
    assert_int_equal(eddy__store_sqlite_test_exec(s, "PRAGMA max_page_count=1"), EDDY_OK);
    char big[8192];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    /* The inputs are written by the commit, which finds the disk full. */
    for (uint64_t i = 0; i < 100; i++)
        assert_int_equal(eddy__store_pending_add(s, "k", i, i, big), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "disk full"));
    assert_non_null(strstr(eddy__store_error(s), "adding pending inputs"));
    assert_int_equal(eddy__store_dirty(s), 0);
    assert_int_equal(eddy__store_pending_add(s, "k", 100, 100, big), EDDY_ESTORE);
    assert_int_equal(eddy__store_commit(s), EDDY_ESTORE);
    eddy__store_close(s);

    s = open_ok(d->state, FP);
    counts_are(s, 1, 0, 0, 0);
    /* A constraint violation is a failure like any other. */
    assert_int_equal(eddy__store_pending_add(s, "k", 1, 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_pending_add(s, "k", 1, 2, "{}"), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "constraint"));
    eddy__store_close(s);
}
#endif

#ifdef EDDY_TEST_HOOKS
/* A failed sync of the WAL fails every later one: Linux reports a lost
 * write-back once per open file, so a later fdatasync returning 0 would not
 * mean the commits before it are on disk. */
static void test_sync_failure_sticks(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    assert_true(eddy__store_split_commit(s));
    assert_int_equal(eddy__store_key_put(s, "k", 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit_nosync(s), EDDY_OK);
    assert_int_equal(eddy__store_sync(s), EDDY_OK);
    eddy__fault_set("store_sync:1:ENOSPC");
    errno = 0;
    assert_int_equal(eddy__store_sync(s), EDDY_ESTORE);
    assert_int_equal(errno, ENOSPC);
    eddy__fault_set(NULL);
    errno = 0;
    assert_int_equal(eddy__store_sync(s), EDDY_ESTORE);
    assert_int_equal(errno, ENOSPC);
    /* A commit that syncs fails the same way. */
    assert_int_equal(eddy__store_key_put(s, "k", 2, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_ESTORE);
    assert_non_null(strstr(eddy__store_error(s), "No space left on device"));
    eddy__store_close(s);
    /* A new open starts afresh (and syncs what the WAL holds). */
    s = open_ok(d->state, FP);
    assert_int_equal(eddy__store_sync(s), EDDY_OK);
    eddy__store_close(s);
}
#endif

static void test_journal_cut_prune(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    /* Inserted out of order; loads come back ordered. */
    const struct {
        const char *key;
        uint64_t seq;
        const char *ev, *action;
        int64_t n;
    } execs[] = {
        {"k", 1, "00000000000000e2", "a", 3}, {"k", 1, "00000000000000e1", "b", 3},
        {"k", 1, "00000000000000e1", "a", 5}, {"k", 2, "00000000000000e1", "a", 3},
        {"j", 1, "00000000000000e1", "a", 2},
    };
    for (size_t i = 0; i < sizeof(execs) / sizeof(execs[0]); i++)
        for (int64_t x = execs[i].n - 1; x >= 0; x--) {
            eddy__jrec r = call_rec(execs[i].key, execs[i].seq, execs[i].ev, execs[i].action, x);
            assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
        }
    eddy__jrec done = {.key = "k",
                       .seq = 1,
                       .event_id = "00000000000000e1",
                       .action = "a",
                       .idx = -1,
                       .kind = EDDY_JREC_DONE,
                       .payload = "{}"};
    assert_int_equal(eddy__store_journal_put(s, &done), EDDY_OK);
    counts_are(s, 0, 0, 17, 0);

    /* Replace at the same position. */
    eddy__jrec p = call_rec("k", 1, "00000000000000e1", "b", 2);
    p.status = EDDY_JCALL_PENDING;
    p.payload = NULL;
    assert_int_equal(eddy__store_journal_put(s, &p), EDDY_OK);
    counts_are(s, 0, 0, 17, 0);

    assert_int_equal(eddy__store_journal_cut(s, "k", 1, "00000000000000e1", "a", 2), EDDY_OK);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    counts_are(s, 0, 0, 14, 0);

    buf b = {0};
    assert_int_equal(eddy__store_journal_load_run(s, "k", 1, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "k 1 00000000000000e1 a -1 2 0 ~ ~ {} ~ ~\n"
                                     "k 1 00000000000000e1 a 0 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e1 a 1 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e1 b 0 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e1 b 1 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e1 b 2 1 3 fn d0 ~ ~ ~\n"
                                     "k 1 00000000000000e2 a 0 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e2 a 1 1 1 fn d0 1 ~ ~\n"
                                     "k 1 00000000000000e2 a 2 1 1 fn d0 1 ~ ~\n");
    buf_reset(&b);
    /* Cutting from -1 still keeps the completion record: only calls go. */
    assert_int_equal(eddy__store_journal_cut(s, "k", 1, "00000000000000e1", "a", -1), EDDY_OK);
    counts_are(s, 0, 0, 12, 0);

    assert_int_equal(eddy__store_journal_prune_run(s, "k", 1), EDDY_OK);
    counts_are(s, 0, 0, 5, 0);
    assert_int_equal(eddy__store_journal_load_all(s, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "j 1 00000000000000e1 a 0 1 1 fn d0 1 ~ ~\n"
                                     "j 1 00000000000000e1 a 1 1 1 fn d0 1 ~ ~\n"
                                     "k 2 00000000000000e1 a 0 1 1 fn d0 1 ~ ~\n"
                                     "k 2 00000000000000e1 a 1 1 1 fn d0 1 ~ ~\n"
                                     "k 2 00000000000000e1 a 2 1 1 fn d0 1 ~ ~\n");
    buf_reset(&b);
    assert_int_equal(eddy__store_journal_load_run(s, "k", 1, print_jrec, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "");
    buf_reset(&b);
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    eddy__store_close(s);
}

static int stop_at_second(void *arg, const eddy__jrec *r)
{
    int *n = arg;
    (void)r;
    return ++*n == 2 ? EDDY_ECANCELED : EDDY_OK;
}

static int reenter(void *arg, const char *key, uint64_t next_seq, const char *stm)
{
    buf b = {0};
    int rc = eddy__store_keys_load(arg, print_key, &b);
    buf_reset(&b);
    return rc;
}

static void test_callbacks_and_args(void **state)
{
    test_dir *d = *state;
    eddy__store *s = open_ok(d->state, FP);
    for (int64_t i = 0; i < 3; i++) {
        eddy__jrec r = call_rec("k", 1, "e", "a", i);
        assert_int_equal(eddy__store_journal_put(s, &r), EDDY_OK);
    }
    /* A callback's code stops the walk and comes back; the next walk starts over. */
    int n = 0;
    assert_int_equal(eddy__store_journal_load_run(s, "k", 1, stop_at_second, &n), EDDY_ECANCELED);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(eddy__store_journal_load_all(s, stop_at_second, &n), EDDY_ECANCELED);
    assert_int_equal(n, 2);
    buf b = {0};
    assert_int_equal(eddy__store_journal_load_run(s, "k", 1, print_jrec, &b), EDDY_OK);
    assert_int_equal(strlen(buf_str(&b)) > 0, 1);
    buf_reset(&b);

    assert_int_equal(eddy__store_key_put(s, "k", 1, "{}"), EDDY_OK);
    assert_int_equal(eddy__store_keys_load(s, reenter, s), EDDY_ESTATE);
    assert_int_equal(eddy__store_keys_load(s, print_key, &b), EDDY_OK);
    assert_string_equal(buf_str(&b), "k 1 {}\n");
    buf_reset(&b);

    eddy__jrec bad = call_rec("k", 1, "e", "a", -1);
    assert_int_equal(eddy__store_journal_put(s, &bad), EDDY_EINVAL);
    bad = call_rec("k", 1, "e", "a", 0);
    bad.kind = EDDY_JREC_DONE;
    assert_int_equal(eddy__store_journal_put(s, &bad), EDDY_EINVAL);
    bad = call_rec("k", 1, "e", "a", 0);
    bad.status = 0;
    assert_int_equal(eddy__store_journal_put(s, &bad), EDDY_EINVAL);
    bad = call_rec("k", 1, NULL, "a", 0);
    assert_int_equal(eddy__store_journal_put(s, &bad), EDDY_EINVAL);
    uint64_t id;
    assert_int_equal(eddy__store_outbox_add(s, NULL, 1, &id), EDDY_EINVAL);
    assert_int_equal(eddy__store_key_put(s, NULL, 1, "{}"), EDDY_EINVAL);
    assert_int_equal(eddy__store_commit(NULL), EDDY_EINVAL);
    assert_string_equal(eddy__store_error(NULL), "");
    eddy__store_close(NULL);
    /* Argument errors do not fail the store. */
    assert_int_equal(eddy__store_commit(s), EDDY_OK);
    counts_are(s, 1, 0, 3, 0);
    eddy__store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_reopen, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_plan_actions_kept, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_rows_written_at_commit, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_uncommitted_lost, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_wal_preallocated, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_journal_log_rows, setup_dir, teardown_dir),
#ifdef EDDY_TEST_HOOKS
        cmocka_unit_test_setup_teardown(test_journal_log_compaction, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_journal_log_compaction_of_many_runs, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_cut_records_out, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_rewrite_cuts_do_not_multiply, setup_dir, teardown_dir),
#endif
        cmocka_unit_test_setup_teardown(test_journal_log_compaction_waits, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_journal_run_handle, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_inspect_key_only, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_failed_record, setup_dir, teardown_dir),
        cmocka_unit_test(test_jlog_codec),
        cmocka_unit_test(test_jlog_legacy_and_varints),
        cmocka_unit_test_setup_teardown(test_busy, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_other_plan, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_format_version, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_outbox_rows, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_damaged_inputs_rows, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_damaged_outbox_rows, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_damaged_meta, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_missing_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_commit_count, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_index_check_beside_a_live_connection, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_index_check_beside_a_clean_close, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_index_from_an_earlier_boot, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_index_check_beside_a_store_of_this_process, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_damaged_row_types, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_open_waits_for_a_reader, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_waits_for_a_reader_lock, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_directory, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_readonly_dir, setup_dir, teardown_dir),
#ifdef EDDY_TEST_HOOKS
        cmocka_unit_test_setup_teardown(test_write_failures, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_flush_fails_after_a_row_deleted, setup_dir,
                                        teardown_dir),
#endif
#ifdef EDDY_TEST_HOOKS
        cmocka_unit_test_setup_teardown(test_sync_failure_sticks, setup_dir, teardown_dir),
#endif
        cmocka_unit_test_setup_teardown(test_journal_cut_prune, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_callbacks_and_args, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
