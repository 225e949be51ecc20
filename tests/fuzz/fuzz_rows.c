/*
 * libFuzzer target for the rows of a state that the store decodes itself
 * (src/store/sqlite_store.c): a row of pending inputs (one commit's
 * admissions, each input as seq, line number, key and record) and an
 * outbox row (a commit's output lines, joined by newlines, under the id of
 * the last). They come from the state file, so they are untrusted.
 *
 * The first byte picks the table (bit 0: 0 inputs, 1 outbox); for the
 * outbox the next 8 bytes are the row's id (little-endian, as SQLite's
 * signed integer); the rest is the row's bytes. The row replaces the
 * table's rows in a state made once per process (two pending inputs, two
 * outbox lines); the store then opens it for writing, reads everything
 * back, removes an input, acknowledges a line and commits, and opens it
 * again read-only, as `eddy inspect` does.
 *
 * Checks: each open succeeds exactly when an independent decoder here
 * accepts the row, and otherwise fails with EDDY_ESTATE and a message that
 * says the state is damaged; an open store hands back what the row holds;
 * nothing crashes or leaks.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/error.h"
#include "fuzz/fuzz.h"
#include "store/store.h"

#define FP "fuzz-rows"

static char dir[64];      /* the state directory */
static char db_path[128]; /* dir/eddy.db */
static unsigned char *tmpl;
static size_t tmpl_len; /* eddy.db as made by setup */
static char tmpl_lock[256];
static size_t tmpl_lock_len; /* LOCK as setup left it: the commits eddy.db holds */

static void cleanup(void)
{
    static const char *const names[] = {"eddy.db", "eddy.db-wal", "eddy.db-shm", "LOCK"};
    char p[160];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    free(tmpl);
}

static void setup(void)
{
    strcpy(dir, "/tmp/eddy-fuzz-rows-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    atexit(cleanup);
    snprintf(db_path, sizeof(db_path), "%s/eddy.db", dir);
    eddy__store *s = NULL;
    CHECK(eddy__store_open(&s, dir, FP, NULL, NULL) == EDDY_OK);
    uint64_t id;
    CHECK(eddy__store_pending_add(s, "\"a\"", 1, 1, "{\"v\":1}") == EDDY_OK);
    CHECK(eddy__store_pending_add(s, "\"b\"", 2, 2, "[2]") == EDDY_OK);
    CHECK(eddy__store_outbox_add(s, "{\"o\":1}", 7, &id) == EDDY_OK);
    CHECK(eddy__store_outbox_add(s, "{\"o\":2}", 7, &id) == EDDY_OK);
    CHECK(eddy__store_commit(s) == EDDY_OK);
    eddy__store_close(s);
    /* Closed, the state is eddy.db alone (the WAL checkpointed and gone). */
    FILE *f = fopen(db_path, "rb");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    CHECK(n > 0);
    rewind(f);
    tmpl = malloc((size_t)n);
    CHECK(tmpl != NULL && fread(tmpl, 1, (size_t)n, f) == (size_t)n);
    tmpl_len = (size_t)n;
    fclose(f);
    char lock[160];
    snprintf(lock, sizeof(lock), "%s/LOCK", dir);
    f = fopen(lock, "rb");
    CHECK(f != NULL);
    tmpl_lock_len = fread(tmpl_lock, 1, sizeof(tmpl_lock), f);
    CHECK(tmpl_lock_len > 0 && tmpl_lock_len < sizeof(tmpl_lock));
    fclose(f);
}

/* The template back in place, with the table's rows replaced by the row. */
static void plant(int outbox, int64_t id, const unsigned char *p, size_t n)
{
    char path[160];
    snprintf(path, sizeof(path), "%s-wal", db_path);
    unlink(path);
    snprintf(path, sizeof(path), "%s-shm", db_path);
    unlink(path);
    FILE *f = fopen(db_path, "wb");
    CHECK(f != NULL && fwrite(tmpl, 1, tmpl_len, f) == tmpl_len);
    CHECK(fclose(f) == 0);
    /* LOCK too: it counts the commits made since (an older eddy.db with a
     * newer LOCK is refused as lost commits). */
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    f = fopen(path, "wb");
    CHECK(f != NULL && fwrite(tmpl_lock, 1, tmpl_lock_len, f) == tmpl_lock_len);
    CHECK(fclose(f) == 0);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK(sqlite3_open(db_path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, outbox ? "DELETE FROM outbox" : "DELETE FROM inputs", NULL, NULL,
                       NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db,
                             outbox ? "INSERT INTO outbox(id, line) VALUES (?1, ?2)"
                                    : "INSERT INTO inputs(id, data) VALUES (?1, ?2)",
                             -1, &st, NULL) == SQLITE_OK);
    CHECK(sqlite3_bind_int64(st, 1, id) == SQLITE_OK);
    CHECK(sqlite3_bind_blob64(st, 2, n > 0 ? (const void *)p : "", n, SQLITE_STATIC) == SQLITE_OK);
    CHECK(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
    CHECK(sqlite3_close(db) == SQLITE_OK);
}

/* ------------------------------------------------------------ the oracle */

typedef struct input {
    uint64_t seq, line_no;
    const char *key; /* into the row: NUL-terminated there */
    const char *record;
} input;

static uint64_t le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* What the inputs of a row are to the store. */
typedef struct decoded {
    size_t count; /* inputs decoded, into out, up to the damage if any */
    int damaged;  /* the bytes after them do not decode */
    int twice;    /* an input is named twice among them */
} decoded;

/* The inputs of a row, by the layout the store writes. */
static decoded decode_inputs(const unsigned char *p, size_t n, input *out, size_t max)
{
    decoded d = {0, 1, 0};
    size_t i = 0;
    while (i < n) {
        if (n - i < 20 || d.count == max)
            return d;
        uint64_t seq = le(p + i, 8), line_no = le(p + i + 8, 8);
        if (seq > (uint64_t)INT64_MAX || line_no > (uint64_t)INT64_MAX)
            return d; /* never written: SQLite integers */
        size_t kl = (size_t)le(p + i + 16, 4);
        i += 20;
        if (n - i < kl + 5)
            return d;
        for (size_t j = 0; j < kl; j++)
            if (p[i + j] == '\0')
                return d;
        if (p[i + kl] != '\0')
            return d;
        const char *key = (const char *)p + i;
        i += kl + 1;
        size_t rl = (size_t)le(p + i, 4);
        i += 4;
        if (n - i < rl + 1)
            return d;
        for (size_t j = 0; j < rl; j++)
            if (p[i + j] == '\0')
                return d;
        if (p[i + rl] != '\0')
            return d;
        for (size_t j = 0; j < d.count; j++)
            if (out[j].seq == seq && strcmp(out[j].key, key) == 0)
                d.twice = 1;
        out[d.count++] = (input){seq, line_no, key, (const char *)p + i};
        i += rl + 1;
    }
    d.damaged = 0;
    return d;
}

/* The outbox row's lines fit below its id, from 1 up, and the next line
 * has an id. */
static int outbox_fits(int64_t id, const unsigned char *p, size_t n)
{
    uint64_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += p[i] == '\n';
    return id >= 1 && id < INT64_MAX && lines <= (uint64_t)id;
}

/* ------------------------------------------------------------ the store */

typedef struct seen {
    const input *want;
    long nwant;
    long n;
    /* outbox */
    const unsigned char *p;
    size_t len, at;
    uint64_t next_id;
} seen;

static int on_input(void *arg, const char *key, uint64_t seq, uint64_t line_no, const char *record)
{
    seen *w = arg;
    CHECK(w->n < w->nwant);
    const input *e = &w->want[w->n++];
    CHECK(seq == e->seq && line_no == e->line_no);
    CHECK(strcmp(key, e->key) == 0 && strcmp(record, e->record) == 0);
    return EDDY_OK;
}

static int on_line(void *arg, uint64_t id, const char *line, size_t len)
{
    seen *w = arg;
    CHECK(id == w->next_id);
    w->next_id++;
    CHECK(w->at + len <= w->len && memcmp(line, w->p + w->at, len) == 0);
    w->at += len;
    CHECK(w->at == w->len || w->p[w->at] == '\n');
    if (w->at < w->len)
        w->at++;
    w->n++;
    return EDDY_OK;
}

static void expect_refused(const char *fp, const char *what)
{
    eddy__store *s = (eddy__store *)&s;
    eddy_error *err = NULL;
    int rc = eddy__store_open(&s, dir, fp, NULL, &err);
    if (rc != EDDY_ESTATE)
        fprintf(stderr, "open (%s): %s: %s\n", fp != NULL ? "write" : "read-only",
                eddy_err_name(rc), err != NULL ? eddy_error_message(err) : "");
    CHECK(rc == EDDY_ESTATE && s == NULL && err != NULL);
    const char *msg = eddy_error_message(err);
    if (strstr(msg, "the state is damaged") == NULL || strstr(msg, what) == NULL)
        fprintf(stderr, "open: %s (expected: %s)\n", msg, what);
    CHECK(strstr(msg, "the state is damaged") != NULL && strstr(msg, what) != NULL);
    eddy_error_free(err);
}

/* Read-only, as `eddy inspect`: the open does not read the inputs; listing
 * them finds a row that does not decode (an input there twice is listed
 * twice: the running eddy refuses it, see expect_refused). */
static void inspect_inputs(const input *want, long k, int damaged)
{
    eddy__store *s = NULL;
    CHECK(eddy__store_open(&s, dir, NULL, NULL, NULL) == EDDY_OK);
    seen w = {.want = want, .nwant = k};
    int rc = eddy__store_pending_load(s, on_input, &w);
    if (damaged) {
        CHECK(rc == EDDY_ESTATE && w.n == k);
        CHECK(strstr(eddy__store_error(s), "the row of pending inputs 1 does not decode") != NULL);
    } else {
        CHECK(rc == EDDY_OK && w.n == k);
    }
    eddy__store_close(s);
}

static void check_inputs(const unsigned char *p, size_t n)
{
    size_t max = n / 26 + 1; /* an input takes 26 bytes or more */
    input *want = malloc(max * sizeof(*want));
    CHECK(want != NULL);
    decoded d = decode_inputs(p, n, want, max);
    long k = (long)d.count;
    plant(0, 1, p, n);
    if (d.damaged || d.twice) {
        /* The open stops at the first of the two it meets: an input named
         * again is found as it is read, before the bytes after it. */
        expect_refused(FP,
                       d.twice ? "is there twice" : "the row of pending inputs 1 does not decode");
        inspect_inputs(want, k, d.damaged);
        free(want);
        return;
    }
    for (int ro = 0; ro < 2; ro++) {
        eddy__store *s = NULL;
        CHECK(eddy__store_open(&s, dir, ro ? NULL : FP, NULL, NULL) == EDDY_OK);
        seen w = {.want = want, .nwant = k};
        CHECK(eddy__store_pending_load(s, on_input, &w) == EDDY_OK);
        CHECK(w.n == k);
        eddy__store_counts c;
        CHECK(eddy__store_counts_get(s, &c) == EDDY_OK);
        CHECK(c.pending == (uint64_t)k && c.outbox == 2);
        if (!ro && k > 0) {
            /* The row rewritten without its first input, then read back. */
            CHECK(eddy__store_pending_remove(s, want[0].key, want[0].seq) == EDDY_OK);
            CHECK(eddy__store_commit(s) == EDDY_OK);
            w = (seen){.want = want + 1, .nwant = k - 1};
            CHECK(eddy__store_pending_load(s, on_input, &w) == EDDY_OK);
            CHECK(w.n == k - 1);
        }
        eddy__store_close(s);
        if (!ro) {
            /* What the store wrote, it opens again. */
            CHECK(eddy__store_open(&s, dir, FP, NULL, NULL) == EDDY_OK);
            seen again = {.want = want + (k > 0), .nwant = k > 0 ? k - 1 : 0};
            CHECK(eddy__store_pending_load(s, on_input, &again) == EDDY_OK);
            CHECK(again.n == again.nwant);
            eddy__store_close(s);
            plant(0, 1, p, n); /* the read-only open sees the row as planted */
        }
    }
    free(want);
}

static void check_outbox(int64_t id, const unsigned char *p, size_t n)
{
    plant(1, id, p, n);
    if (!outbox_fits(id, p, n)) {
        expect_refused(FP, "the outbox row");
        expect_refused(NULL, "the outbox row");
        return;
    }
    uint64_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += p[i] == '\n';
    for (int ro = 0; ro < 2; ro++) {
        eddy__store *s = NULL;
        CHECK(eddy__store_open(&s, dir, ro ? NULL : FP, NULL, NULL) == EDDY_OK);
        seen w = {.p = p, .len = n, .next_id = (uint64_t)id - (lines - 1)};
        CHECK(eddy__store_outbox_load(s, on_line, &w) == EDDY_OK);
        CHECK((uint64_t)w.n == lines && w.at == n && w.next_id == (uint64_t)id + 1);
        eddy__store_counts c;
        CHECK(eddy__store_counts_get(s, &c) == EDDY_OK);
        CHECK(c.outbox == lines && c.pending == 2);
        if (!ro) {
            /* New lines go after the row; acknowledging its first line
             * keeps the rest, under the same ids. */
            uint64_t nid = 0;
            CHECK(eddy__store_outbox_add(s, "x", 1, &nid) == EDDY_OK);
            CHECK(nid > (uint64_t)id);
            CHECK(eddy__store_outbox_ack(s, (uint64_t)id - (lines - 1)) == EDDY_OK);
            CHECK(eddy__store_commit(s) == EDDY_OK);
            CHECK(eddy__store_counts_get(s, &c) == EDDY_OK);
            CHECK(c.outbox == lines);
        }
        eddy__store_close(s);
        if (!ro) {
            /* What the store wrote, it opens again: the row's lines after
             * the first, then the new one. */
            CHECK(eddy__store_open(&s, dir, FP, NULL, NULL) == EDDY_OK);
            CHECK(eddy__store_counts_get(s, &c) == EDDY_OK);
            CHECK(c.outbox == lines);
            eddy__store_close(s);
            plant(1, id, p, n);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (tmpl == NULL)
        setup();
    if (size < 1)
        return 0;
    if ((data[0] & 1) == 0) {
        check_inputs(data + 1, size - 1);
    } else {
        if (size < 9)
            return 0;
        check_outbox((int64_t)le(data + 1, 8), data + 9, size - 9);
    }
    return 0;
}
