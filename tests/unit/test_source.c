#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/config.h"
#include "io/source.h"
#include "util/fault.h"
#include "util/hash.h"
#include "util/jalloc.h"

/* ------------------------------------------------------------------ helpers */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_fill(buf *b, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_add(b, &c, 1);
}

/* Write data to a new temporary file; returns its path (free and unlink it). */
static char *write_tmp(const char *data, size_t len)
{
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || *dir == '\0')
        dir = "/tmp";
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    assert_non_null(path);
    snprintf(path, n, "%s/eddy_src_XXXXXX", dir);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    close(fd);
    return path;
}

static void drop_tmp(char *path)
{
    unlink(path);
    free(path);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct run {
    uv_loop_t loop;
    eddy__source *s;
    eddy__queue q;
    size_t n;
    int auto_take;
    int ready_calls;
} run;

static void on_ready(void *arg)
{
    run *r = arg;
    r->ready_calls++;
    if (r->auto_take)
        r->n += eddy__source_take(r->s, &r->q, SIZE_MAX);
}

static void run_open(run *r, const eddy__source_opts *o, int auto_take)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(uv_loop_init(&r->loop), 0);
    eddy__queue_init(&r->q);
    r->auto_take = auto_take;
    eddy_error *err = NULL;
    int rc = eddy__source_open(&r->s, &r->loop, o, on_ready, r, &err);
    if (rc != EDDY_OK)
        fail_msg("open: %s", eddy_error_message(err));
    assert_null(err);
}

/* Run the loop until the source is done. What is queued is taken first:
 * a reader blocked on a full queue, whose wake-up the loop has already
 * seen, waits for room, and the loop would wait for it. */
static void run_drain(run *r)
{
    for (;;) {
        r->n += eddy__source_take(r->s, &r->q, SIZE_MAX);
        if (eddy__source_done(r->s))
            break;
        uv_run(&r->loop, UV_RUN_ONCE);
    }
}

static void run_close(run *r)
{
    eddy__source_close(r->s);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    while (!eddy__queue_empty(&r->q)) {
        eddy__queue *q = eddy__queue_head(&r->q);
        eddy__queue_remove(q);
        eddy__input_free(eddy__queue_data(q, eddy__input, node));
    }
}

/* The collected inputs as an array (borrowed from r->q). */
static eddy__input **run_array(run *r)
{
    eddy__input **a = calloc(r->n + 1, sizeof(*a));
    assert_non_null(a);
    size_t i = 0;
    eddy__queue *q;
    eddy__queue_foreach(q, &r->q) a[i++] = eddy__queue_data(q, eddy__input, node);
    assert_int_equal(i, r->n);
    return a;
}

/* Read a whole file with the given options; inputs land in r->q. */
static eddy__input **read_all(run *r, const char *data, size_t len, eddy__source_opts o)
{
    char *path = write_tmp(data, len);
    o.path = path;
    if (o.key_field == NULL)
        o.key_field = "k";
    run_open(r, &o, 1);
    run_drain(r);
    assert_null(eddy__source_error(r->s));
    drop_tmp(path);
    return run_array(r);
}

static void check_good(const eddy__input *in, uint64_t line_no, const char *key)
{
    assert_non_null(in);
    assert_int_equal(in->line_no, line_no);
    assert_null(in->reason);
    assert_non_null(in->record);
    assert_string_equal(in->key, key);
}

static void check_bad(const eddy__input *in, uint64_t line_no, const char *reason, const char *raw)
{
    assert_non_null(in);
    assert_int_equal(in->line_no, line_no);
    assert_null(in->record);
    assert_null(in->key);
    assert_non_null(in->reason);
    assert_string_equal(in->reason, reason);
    if (raw != NULL) {
        assert_int_equal(in->raw_len, strlen(raw));
        assert_memory_equal(in->raw, raw, in->raw_len);
    }
}

/* ------------------------------------------------------------------ tests */

static void test_good_lines(void **state)
{
    (void)state;
    const char *lines[] = {
        "{\"k\":\"u1\",\"v\":1}\n",
        "{\"k\":42}\r\n",
        "\n",
        "  \t \r\n",
        "{\"k\":true,\"x\":[1,2]}\n",
        "{\"k\":-1.5}\n",
        "{\"k\":\"a\\\"b\"}\n",
        "{\"k\":\"\xc3\xa9\"}", /* no newline at the end */
    };
    buf b = {0};
    uint64_t ends[8];
    for (size_t i = 0; i < 8; i++) {
        buf_str(&b, lines[i]);
        ends[i] = b.len;
    }
    run r;
    eddy__input **in = read_all(&r, b.p, b.len, (eddy__source_opts){0});
    assert_int_equal(r.n, 6);
    check_good(in[0], 1, "\"u1\"");
    assert_int_equal(json_integer_value(json_object_get(in[0]->record, "v")), 1);
    assert_int_equal(in[0]->end_offset, ends[0]);
    check_good(in[1], 2, "42");
    assert_int_equal(in[1]->end_offset, ends[1]);
    check_good(in[2], 5, "true");
    assert_int_equal(in[2]->end_offset, ends[4]);
    check_good(in[3], 6, "-1.5");
    check_good(in[4], 7, "\"a\\\"b\"");
    check_good(in[5], 8, "\"\xc3\xa9\"");
    assert_int_equal(in[5]->end_offset, b.len);
    free(in);
    run_close(&r);
    free(b.p);
}

static void test_bad_lines(void **state)
{
    (void)state;
    const char *deep9 = "{\"k\":1,\"a\":[[[[[[[[1]]]]]]]]}";
    const char *deep8 = "{\"k\":2,\"a\":[[[[[[[1]]]]]]]}";
    const char *lines[] = {
        "{\"k\":",                                 /* 1 */
        "[1,2]",                                   /* 2 */
        "{\"x\":1}",                               /* 3 */
        "{\"k\":null}",                            /* 4 */
        "{\"k\":{\"a\":1}}",                       /* 5 */
        "{\"k\":[1]}",                             /* 6 */
        "{\"k\":123456789012345678901234567890}",  /* 7 */
        "{\"k\":\"\xff\"}",                        /* 8 */
        "{\"k\":\"a\\u0000b\"}",                   /* 9 */
        "{\"k\":1,\"k\":3}",                       /* 10: good, last wins */
        deep9,                                     /* 11 */
        deep8,                                     /* 12: good */
        "{\"k\":\"[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}", /* 13: good, brackets in a string */
        "{\"k\":1} x",                             /* 14 */
        "\"just a string\"",                       /* 15 */
        "{\"k\":1e999}",                           /* 16 */
    };
    size_t nl = sizeof(lines) / sizeof(lines[0]);
    buf b = {0};
    for (size_t i = 0; i < nl; i++) {
        buf_str(&b, lines[i]);
        buf_str(&b, "\n");
    }
    run r;
    eddy__input **in = read_all(&r, b.p, b.len, (eddy__source_opts){.max_depth = 8});
    assert_int_equal(r.n, nl);
    check_bad(in[0], 1, "not JSON", lines[0]);
    assert_non_null(strstr(in[0]->detail, "column"));
    check_bad(in[1], 2, "not a JSON object", lines[1]);
    check_bad(in[2], 3, "no key field", lines[2]);
    assert_non_null(strstr(in[2]->detail, "\"k\""));
    check_bad(in[3], 4, "key is null", lines[3]);
    assert_string_equal(in[3]->detail, "field \"k\" is null");
    check_bad(in[4], 5, "key is not a scalar", lines[4]);
    check_bad(in[5], 6, "key is not a scalar", lines[5]);
    check_bad(in[6], 7, "not JSON", lines[6]);
    assert_non_null(strstr(in[6]->detail, "too big integer"));
    check_bad(in[7], 8, "not JSON", lines[7]);
    check_bad(in[8], 9, "not JSON", lines[8]);
    check_good(in[9], 10, "3");
    check_bad(in[10], 11, "nesting too deep", deep9);
    check_good(in[11], 12, "2");
    check_good(in[12], 13, "\"[[[[[[[[[[[[[[[[[[[\\\"[[[[\"");
    check_bad(in[13], 14, "not JSON", lines[13]);
    check_bad(in[14], 15, "not a JSON object", lines[14]);
    check_bad(in[15], 16, "not JSON", lines[15]);
    uint64_t off = 0;
    for (size_t i = 0; i < nl; i++) {
        off += strlen(lines[i]) + 1;
        assert_int_equal(in[i]->end_offset, off);
    }
    free(in);
    run_close(&r);
    free(b.p);
}

static void test_nul_byte_and_decode(void **state)
{
    (void)state;
    eddy__input in;
    memset(&in, 0, sizeof(in));
    assert_int_equal(eddy__source_decode_line(" \t\r", 3, "k", 0, &in), EDDY__LINE_BLANK);
    assert_int_equal(eddy__source_decode_line("", 0, "k", 0, &in), EDDY__LINE_BLANK);
    const char nul[] = "{\"k\":1}\0";
    assert_int_equal(eddy__source_decode_line(nul, 8, "k", 0, &in), EDDY__LINE_BAD);
    assert_string_equal(in.reason, "not JSON");
    assert_int_equal(in.raw_len, 8);
    assert_memory_equal(in.raw, nul, 8);
    free(in.detail);
    free(in.raw);
    /* The depth pre-scan runs before the parser, also beyond jansson's limit. */
    buf b = {0};
    buf_fill(&b, '[', 100000);
    assert_int_equal(eddy__source_decode_line(b.p, b.len, "k", 64, &in), EDDY__LINE_BAD);
    assert_string_equal(in.reason, "nesting too deep");
    assert_int_equal(in.raw_len, EDDY__SOURCE_RAW_MAX);
    assert_non_null(strstr(in.detail, "first 4096 of 100000 bytes"));
    free(in.detail);
    free(in.raw);
    free(b.p);
}

/* jansson reports running out of memory as a parse error ("invalid token
 * near ..."): a valid line whose parse failed so is not dead-lettered as
 * not JSON, but stops the reader (EDDY_ENOMEM), at every allocation of
 * the parse. */
static void test_parse_out_of_memory(void **state)
{
    (void)state;
#ifdef EDDY_TEST_HOOKS
    if (!eddy__jalloc_counting())
        skip();
    const char *line =
        "{\"k\":\"a\",\"list\":[1,2,{\"x\":\"a text of more than 16 bytes\"}],\"n\":1.5}";
    int nomem = 0;
    for (int n = 1;; n++) {
        char rule[32];
        snprintf(rule, sizeof rule, "alloc.json:%d", n);
        eddy__fault_set(rule);
        unsigned failed = eddy__jalloc_failures;
        eddy__input *in = calloc(1, sizeof(*in));
        assert_non_null(in);
        int rc = eddy__source_decode_line(line, strlen(line), "k", 0, in);
        int fired = eddy__jalloc_failures != failed;
        eddy__fault_set(NULL);
        if (!fired) { /* past the parse's last allocation */
            assert_int_equal(rc, EDDY__LINE_OK);
            assert_string_equal(in->key, "\"a\"");
            eddy__input_free(in);
            break;
        }
        assert_int_equal(rc, EDDY_ENOMEM);
        assert_null(in->record);
        assert_null(in->reason);
        assert_null(in->detail);
        assert_null(in->raw);
        eddy__input_free(in);
        nomem++;
        assert_true(n < 1000);
    }
    assert_true(nomem >= 3);
    /* A line that is not JSON still is one with memory to spare. */
    eddy__input in;
    memset(&in, 0, sizeof(in));
    assert_int_equal(eddy__source_decode_line("{\"k\":", 5, "k", 0, &in), EDDY__LINE_BAD);
    assert_string_equal(in.reason, "not JSON");
    free(in.detail);
    free(in.raw);
#else
    skip();
#endif
}

static void test_long_lines(void **state)
{
    (void)state;
    buf b = {0};
    /* 1: 1 MiB, valid JSON but over the limit; skipped without buffering */
    buf_str(&b, "{\"k\":\"");
    buf_fill(&b, 'a', 1 << 20);
    buf_str(&b, "\"}\n");
    uint64_t end1 = b.len;
    buf_str(&b, "{\"k\":\"after\"}\n"); /* 2 */
    /* 3: over the limit but short enough to sit whole in the buffer, CRLF */
    buf_fill(&b, 'b', 70000);
    buf_str(&b, "\r\n");
    /* 4: exactly the limit, with CRLF: good */
    size_t at = b.len;
    buf_str(&b, "{\"k\":4,\"p\":\"");
    buf_fill(&b, 'c', 65536 - (b.len - at) - 2);
    buf_str(&b, "\"}\r\n");
    assert_int_equal(b.len - at, 65536 + 2);
    /* 5: a long last line without newline, ending in '\r' */
    buf_fill(&b, 'd', 3 << 20);
    buf_str(&b, "\r");
    run r;
    eddy__input **in = read_all(&r, b.p, b.len, (eddy__source_opts){.max_line_bytes = 64 << 10});
    assert_int_equal(r.n, 5);
    check_bad(in[0], 1, "line too long", NULL);
    assert_int_equal(in[0]->raw_len, EDDY__SOURCE_RAW_MAX);
    assert_memory_equal(in[0]->raw, b.p, EDDY__SOURCE_RAW_MAX);
    assert_non_null(strstr(in[0]->detail, "first 4096 of 1048584 bytes"));
    assert_int_equal(in[0]->end_offset, end1);
    check_good(in[1], 2, "\"after\"");
    check_bad(in[2], 3, "line too long", NULL);
    assert_non_null(strstr(in[2]->detail, "line of 70000 bytes, over --max-line-bytes 65536"));
    assert_int_equal(in[2]->raw_len, EDDY__SOURCE_RAW_MAX);
    check_good(in[3], 4, "4");
    check_bad(in[4], 5, "line too long", NULL);
    assert_non_null(strstr(in[4]->detail, "line of 3145728 bytes"));
    assert_int_equal(in[4]->end_offset, b.len);
    free(in);
    run_close(&r);

    /* A tiny limit: the whole line is in the prefix, the '\r' is not in raw. */
    free(b.p);
    memset(&b, 0, sizeof(b));
    buf_str(&b, "{\"k\":\"0123456789\"}\r\n{\"k\":1}\n");
    in = read_all(&r, b.p, b.len, (eddy__source_opts){.max_line_bytes = 8});
    assert_int_equal(r.n, 2);
    check_bad(in[0], 1, "line too long", "{\"k\":\"0123456789\"}");
    check_good(in[1], 2, "1");
    free(in);
    run_close(&r);
    free(b.p);
}

/* Many lines of varying length over several MiB, so that lines straddle
 * every read boundary, and one line longer than a read. */
static void test_chunk_boundaries(void **state)
{
    (void)state;
    buf b = {0};
    size_t nlines = 20000;
    uint64_t *ends = malloc(nlines * sizeof(*ends));
    char head[64];
    for (size_t i = 0; i < nlines; i++) {
        snprintf(head, sizeof(head), "{\"k\":%zu,\"p\":\"", i);
        buf_str(&b, head);
        buf_fill(&b, 'x', i == 777 ? 600000 : (i * 7919) % 601);
        buf_str(&b, i % 3 == 0 ? "\"}\r\n" : "\"}\n");
        ends[i] = b.len;
    }
    assert_true(b.len > 6u << 20);
    run r;
    eddy__input **in = read_all(&r, b.p, b.len, (eddy__source_opts){.capacity = 256});
    assert_int_equal(r.n, nlines);
    char key[32];
    for (size_t i = 0; i < nlines; i++) {
        snprintf(key, sizeof(key), "%zu", i);
        check_good(in[i], i + 1, key);
        assert_int_equal(in[i]->end_offset, ends[i]);
    }
    free(in);
    run_close(&r);
    free(ends);
    free(b.p);
}

static void test_back_pressure(void **state)
{
    (void)state;
    buf b = {0};
    char line[64];
    size_t nlines = 1000;
    for (size_t i = 0; i < nlines; i++) {
        snprintf(line, sizeof(line), "{\"k\":%zu}\n", i);
        buf_str(&b, line);
    }
    char *path = write_tmp(b.p, b.len);
    run r;
    run_open(&r, &(eddy__source_opts){.path = path, .key_field = "k", .capacity = 4}, 0);
    /* Nothing taken: the reader fills the queue and stops. */
    eddy__source_stats st;
    double t0 = now();
    do {
        uv_run(&r.loop, UV_RUN_NOWAIT);
        eddy__source_get_stats(r.s, &st);
        assert_true(now() - t0 < 10);
    } while (st.queued < 4);
    sleep_ms(50);
    eddy__source_get_stats(r.s, &st);
    assert_int_equal(st.queued, 4);
    assert_true(st.lines <= 8); /* capacity plus one batch */
    assert_int_equal(st.high_water, 4);

    size_t got = 0;
    for (;;) {
        size_t n = eddy__source_take(r.s, &r.q, 1);
        eddy__source_get_stats(r.s, &st);
        assert_true(st.queued <= 4);
        if (n == 0) {
            if (eddy__source_done(r.s))
                break;
            uv_run(&r.loop, UV_RUN_ONCE);
            continue;
        }
        assert_int_equal(n, 1);
        eddy__input *in = eddy__queue_data(r.q.prev, eddy__input, node);
        assert_int_equal(in->line_no, got + 1);
        got++;
        assert_true(st.lines <= got + 8);
    }
    assert_int_equal(got, nlines);
    assert_true(st.high_water <= 4);
    r.n = got;
    run_close(&r);
    drop_tmp(path);
    free(b.p);
}

static void test_resume(void **state)
{
    (void)state;
    buf b = {0};
    char line[64];
    uint64_t ends[10];
    for (int i = 0; i < 10; i++) {
        snprintf(line, sizeof(line), "{\"k\":\"u%d\"}\n", i + 1);
        buf_str(&b, line);
        ends[i] = b.len;
    }
    run r;
    eddy__input **in =
        read_all(&r, b.p, b.len, (eddy__source_opts){.start_offset = ends[3], .start_line = 4});
    assert_int_equal(r.n, 6);
    for (int i = 0; i < 6; i++) {
        snprintf(line, sizeof(line), "\"u%d\"", i + 5);
        check_good(in[i], (uint64_t)i + 5, line);
        assert_int_equal(in[i]->end_offset, ends[i + 4]);
    }
    free(in);
    run_close(&r);

    /* The same from a pipe on stdin: the bytes before the offset are read and
     * dropped. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], b.p, b.len), (ssize_t)b.len);
    close(p[1]);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
    close(p[0]);
    run_open(&r, &(eddy__source_opts){.key_field = "k", .start_offset = ends[6], .start_line = 7},
             1);
    run_drain(&r);
    assert_null(eddy__source_error(r.s));
    in = run_array(&r);
    assert_int_equal(r.n, 3);
    check_good(in[0], 8, "\"u8\"");
    assert_int_equal(in[0]->end_offset, ends[7]);
    check_good(in[2], 10, "\"u10\"");
    assert_int_equal(in[2]->end_offset, ends[9]);
    free(in);
    run_close(&r);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
    free(b.p);
}

/* The deepest --max-depth there is: a line that deep with a value inside
 * its innermost array parses; one level more is "nesting too deep", not
 * jansson's own "not JSON". */
static void test_deepest_max_depth(void **state)
{
    (void)state;
    buf b = {0};
    for (int extra = 0; extra <= 1; extra++) {
        buf_str(&b, "{\"k\":\"d\",\"a\":");
        buf_fill(&b, '[', EDDY__CONFIG_MAX_DEPTH_MAX - 1 + extra);
        buf_str(&b, "1");
        buf_fill(&b, ']', EDDY__CONFIG_MAX_DEPTH_MAX - 1 + extra);
        buf_str(&b, "}\n");
    }
    run r;
    eddy__input **in =
        read_all(&r, b.p, b.len, (eddy__source_opts){.max_depth = EDDY__CONFIG_MAX_DEPTH_MAX});
    assert_int_equal(r.n, 2);
    check_good(in[0], 1, "\"d\"");
    assert_int_equal(in[1]->line_no, 2);
    assert_string_equal(in[1]->reason, "nesting too deep");
    free(in);
    run_close(&r);
    free(b.p);
}

/* Resume from a pipe on stdin holding data; returns the source's error
 * message (static copy) or NULL, and the number of inputs in *n. */
static const char *resume_on_pipe(const char *data, size_t len, eddy__source_opts o, size_t *n)
{
    static char msg[512];
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], data, len), (ssize_t)len);
    close(p[1]);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
    close(p[0]);
    run r;
    o.key_field = "k";
    run_open(&r, &o, 1);
    run_drain(&r);
    const eddy_error *e = eddy__source_error(r.s);
    if (e != NULL) {
        assert_string_equal(eddy_error_type(e), "state");
        snprintf(msg, sizeof(msg), "%s", eddy_error_message(e));
    }
    *n = r.n;
    run_close(&r);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
    return e != NULL ? msg : NULL;
}

/* Open a file at a resume; EDDY_OK or the error's code, its message in msg. */
static int resume_on_file(const char *data, size_t len, eddy__source_opts o, char *msg)
{
    char *path = write_tmp(data, len);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    eddy__source *s = NULL;
    eddy_error *err = NULL;
    o.path = path;
    o.key_field = "k";
    int rc = eddy__source_open(&s, &loop, &o, on_ready, NULL, &err);
    msg[0] = '\0';
    if (err != NULL)
        snprintf(msg, 512, "%s", eddy_error_message(err));
    eddy_error_free(err);
    eddy__source_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    drop_tmp(path);
    return rc;
}

/* The head an input read from its start reports, and a resume checking it
 * (on a file at open, on a pipe among the bytes it drops). */
static void test_head_checked_at_resume(void **state)
{
    (void)state;
    const char *data = "{\"k\":\"a\"}\r\n{\"k\":\"b\"}\n{\"k\":\"c\"}\n";
    size_t len = strlen(data), first = strlen("{\"k\":\"a\"}\r");
    run r;
    free(read_all(&r, data, len, (eddy__source_opts){0}));
    uint64_t hl = 0, hh = 0;
    assert_int_equal(eddy__source_head(r.s, &hl, &hh), 1);
    assert_int_equal(hl, first); /* the line without its "\n", "\r" kept */
    assert_int_equal(hh, eddy__hash_bytes(data, first));
    run_close(&r);

    eddy__source_opts o = {
        .start_offset = first + 1, .start_line = 1, .head_len = hl, .head_hash = hh};
    char msg[512];
    /* The same input, and with lines added at its end: resumes. */
    assert_int_equal(resume_on_file(data, len, o, msg), EDDY_OK);
    buf b = {0};
    buf_str(&b, data);
    buf_str(&b, "{\"k\":\"d\"}\n");
    assert_int_equal(resume_on_file(b.p, b.len, o, msg), EDDY_OK);
    size_t n = 0;
    assert_null(resume_on_pipe(b.p, b.len, o, &n));
    assert_int_equal(n, 3);
    free(b.p);
    /* Another first line; the same one made longer; a shorter input. */
    const char *other = "{\"k\":\"z\"}\r\n{\"k\":\"b\"}\n{\"k\":\"c\"}\n";
    const char *longer = "{\"k\":\"a\"}\rx\n{\"k\":\"b\"}\n{\"k\":\"c\"}\n";
    assert_int_equal(resume_on_file(other, strlen(other), o, msg), EDDY_ESTATE);
    assert_non_null(strstr(msg, "is not the input this state was reading: its first line"));
    assert_int_equal(resume_on_file(longer, strlen(longer), o, msg), EDDY_ESTATE);
    const char *m = resume_on_pipe(other, strlen(other), o, &n);
    assert_non_null(m);
    assert_non_null(strstr(m, "<stdin> is not the input this state was reading"));
    assert_int_equal(n, 0);
    assert_non_null(resume_on_pipe(longer, strlen(longer), o, &n));
    o.start_offset = len + 1;
    assert_int_equal(resume_on_file(data, len, o, msg), EDDY_ESTATE);
    assert_non_null(strstr(msg, "holds"));
    m = resume_on_pipe(data, len, o, &n);
    assert_non_null(m);
    assert_non_null(strstr(m, "it ended after"));
    /* Blank lines first: the head runs through the first line that is not
     * blank, so another input behind the same blank lines is told apart. */
    const char *blanks = "\n  \r\n{\"k\":\"a\"}\n{\"k\":\"b\"}\n";
    free(read_all(&r, blanks, strlen(blanks), (eddy__source_opts){0}));
    assert_int_equal(eddy__source_head(r.s, &hl, &hh), 1);
    assert_int_equal(hl, strlen("\n  \r\n{\"k\":\"a\"}"));
    run_close(&r);
    const char *blanks2 = "\n  \r\n{\"k\":\"z\"}\n{\"k\":\"b\"}\n";
    eddy__source_opts ob = {.start_offset = hl + 1,
                            .start_line = 3,
                            .head_len = hl,
                            .head_hash = eddy__hash_bytes(blanks, hl)};
    assert_int_equal(resume_on_file(blanks, strlen(blanks), ob, msg), EDDY_OK);
    assert_int_equal(resume_on_file(blanks2, strlen(blanks2), ob, msg), EDDY_ESTATE);
    /* Without a head (a state made before heads were kept): no check. */
    o = (eddy__source_opts){.start_offset = first + 1, .start_line = 1};
    assert_int_equal(resume_on_file(other, strlen(other), o, msg), EDDY_OK);

    /* A first line longer than the head, buffered whole or skipped as too
     * long: the head is its first EDDY__SOURCE_HEAD_MAX bytes. */
    for (size_t max_line = 0; max_line <= 1024; max_line += 1024) {
        buf big = {0};
        buf_str(&big, "{\"k\":\"");
        buf_fill(&big, 'x', 3 * EDDY__SOURCE_HEAD_MAX);
        buf_str(&big, "\"}\n{\"k\":\"b\"}\n");
        free(read_all(&r, big.p, big.len, (eddy__source_opts){.max_line_bytes = max_line}));
        assert_int_equal(eddy__source_head(r.s, &hl, &hh), 1);
        assert_int_equal(hl, EDDY__SOURCE_HEAD_MAX);
        assert_int_equal(hh, eddy__hash_bytes(big.p, EDDY__SOURCE_HEAD_MAX));
        run_close(&r);
        free(big.p);
    }
    /* Not from the start: no head. */
    free(read_all(&r, data, len, (eddy__source_opts){.start_offset = first + 1, .start_line = 1}));
    assert_int_equal(eddy__source_head(r.s, &hl, &hh), 0);
    run_close(&r);
}

static void test_open_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    eddy__source *s = (eddy__source *)1;
    eddy_error *err = NULL;
    eddy__source_opts o = {.path = "/nonexistent/eddy/in.jsonl", .key_field = "k"};
    assert_int_equal(eddy__source_open(&s, &loop, &o, on_ready, NULL, &err), EDDY_EIO);
    assert_null(s);
    assert_string_equal(eddy_error_type(err), "io");
    assert_string_equal(eddy_error_message(err),
                        "cannot open /nonexistent/eddy/in.jsonl: No such file or directory");
    eddy_error_free(err);
    err = NULL;

    o.path = "/tmp";
    assert_int_equal(eddy__source_open(&s, &loop, &o, on_ready, NULL, &err), EDDY_EIO);
    assert_string_equal(eddy_error_message(err), "cannot read /tmp: Is a directory");
    eddy_error_free(err);
    err = NULL;

    o.key_field = NULL;
    assert_int_equal(eddy__source_open(&s, &loop, &o, on_ready, NULL, &err), EDDY_EINVAL);
    eddy_error_free(err);

    eddy__source_close(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* /proc/self/mem opens but reading offset 0 (never mapped) fails with EIO. */
static void test_read_error(void **state)
{
    (void)state;
    run r;
    run_open(&r, &(eddy__source_opts){.path = "/proc/self/mem", .key_field = "k"}, 1);
    run_drain(&r);
    const eddy_error *e = eddy__source_error(r.s);
    assert_non_null(e);
    assert_string_equal(eddy_error_type(e), "io");
    assert_string_equal(eddy_error_message(e), "cannot read /proc/self/mem: Input/output error");
    assert_int_equal(r.n, 0);
    run_close(&r);
}

/* A file cut below what the reader read while it waits for room (its
 * first read took the whole file) is an error at its end, after the lines
 * read; one that grew is read on. */
static void test_truncated_while_read(void **state)
{
    (void)state;
    buf b = {0};
    char line[64];
    size_t nlines = 1000;
    for (size_t i = 0; i < nlines; i++) {
        snprintf(line, sizeof(line), "{\"k\":%zu}\n", i);
        buf_str(&b, line);
    }
    for (int cut = 1; cut >= 0; cut--) {
        char *path = write_tmp(b.p, b.len);
        run r;
        run_open(&r, &(eddy__source_opts){.path = path, .key_field = "k", .capacity = 4}, 0);
        eddy__source_stats st;
        double t0 = now();
        do {
            uv_run(&r.loop, UV_RUN_NOWAIT);
            eddy__source_get_stats(r.s, &st);
            assert_true(now() - t0 < 10);
        } while (st.queued < 4);
        FILE *f = fopen(path, "a");
        assert_non_null(f);
        if (cut)
            assert_int_equal(ftruncate(fileno(f), 20), 0);
        else
            fputs("{\"k\":\"more\"}\n", f);
        fclose(f);
        run_drain(&r);
        const eddy_error *e = eddy__source_error(r.s);
        if (cut) {
            assert_int_equal(r.n, nlines);
            assert_non_null(e);
            assert_string_equal(eddy_error_type(e), "io");
            char want[512];
            snprintf(want, sizeof(want),
                     "%s was truncated while eddy read it: it holds 20 bytes, eddy had read %zu "
                     "(rotated in place, as logrotate's copytruncate does?)",
                     path, b.len);
            assert_non_null(strstr(eddy_error_message(e), want));
        } else {
            assert_null(e);
            assert_int_equal(r.n, nlines + 1);
        }
        run_close(&r);
        drop_tmp(path);
    }
    free(b.p);
}

static void test_close_blocked_on_pipe(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    int saved = dup(STDIN_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
    close(p[0]);
    run r;
    run_open(&r, &(eddy__source_opts){.path = "-", .key_field = "k"}, 1);
    uv_run(&r.loop, UV_RUN_NOWAIT);
    sleep_ms(50);
    assert_false(eddy__source_done(r.s));
    double t0 = now();
    run_close(&r);
    assert_true(now() - t0 < 1.0);
    assert_int_equal(r.n, 0);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
    close(p[1]);
}

static void test_close_blocked_on_full_queue(void **state)
{
    (void)state;
    buf b = {0};
    for (int i = 0; i < 5000; i++)
        buf_str(&b, "{\"k\":\"x\"}\n");
    char *path = write_tmp(b.p, b.len);
    run r;
    run_open(&r, &(eddy__source_opts){.path = path, .key_field = "k", .capacity = 16}, 0);
    eddy__source_stats st;
    do {
        uv_run(&r.loop, UV_RUN_NOWAIT);
        eddy__source_get_stats(r.s, &st);
    } while (st.queued < 16);
    /* Take some, leave the rest queued: close frees them. */
    r.n = eddy__source_take(r.s, &r.q, 3);
    double t0 = now();
    run_close(&r);
    assert_true(now() - t0 < 1.0);
    drop_tmp(path);
    free(b.p);
}

static void test_large_file(void **state)
{
    (void)state;
    buf b = {0};
    char line[96];
    size_t nlines = 200000;
    for (size_t i = 0; i < nlines; i++) {
        snprintf(line, sizeof(line), "{\"k\":\"user-%zu\",\"n\":%zu,\"text\":\"hello\"}\n", i % 977,
                 i);
        buf_str(&b, line);
    }
    run r;
    eddy__input **in = read_all(&r, b.p, b.len, (eddy__source_opts){0});
    assert_int_equal(r.n, nlines);
    for (size_t i = 0; i < nlines; i++) {
        assert_int_equal(in[i]->line_no, i + 1);
        assert_int_equal(json_integer_value(json_object_get(in[i]->record, "n")), i);
    }
    assert_int_equal(in[nlines - 1]->end_offset, b.len);
    free(in);
    run_close(&r);
    free(b.p);
}

static void test_empty_file(void **state)
{
    (void)state;
    char *path = write_tmp("", 0);
    run r;
    run_open(&r, &(eddy__source_opts){.path = path, .key_field = "k"}, 1);
    /* The end of input alone wakes the loop (done() may already be 1 before
     * the loop runs, so wait for the callback itself). */
    while (r.ready_calls == 0)
        uv_run(&r.loop, UV_RUN_ONCE);
    assert_true(eddy__source_done(r.s));
    assert_null(eddy__source_error(r.s));
    assert_int_equal(r.n, 0);
    run_close(&r);
    drop_tmp(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_lines),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_nul_byte_and_decode),
        cmocka_unit_test(test_parse_out_of_memory),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_chunk_boundaries),
        cmocka_unit_test(test_back_pressure),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_head_checked_at_resume),
        cmocka_unit_test(test_deepest_max_depth),
        cmocka_unit_test(test_read_error),
        cmocka_unit_test(test_truncated_while_read),
        cmocka_unit_test(test_close_blocked_on_pipe),
        cmocka_unit_test(test_close_blocked_on_full_queue),
        cmocka_unit_test(test_large_file),
        cmocka_unit_test(test_empty_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
