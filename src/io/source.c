/* JSONL source: see source.h for the design notes and the contract. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/source.h"
#include "io/wait.h"
#include "util/fault.h"
#include "util/hash.h"
#include "util/jalloc.h"
#include "util/map.h"
#include "util/thread.h"

/* Size of one read(); the buffer grows beyond it only for lines longer than
 * about a chunk. */
#define CHUNK (256u << 10)
/* Lines parsed before the reader takes the queue lock. */
#define BATCH_MAX 64

/* State only the reader thread touches. */
typedef struct reader {
    char *buf;
    size_t cap;
    size_t start;        /* first byte of the current (unfinished) line */
    size_t end;          /* end of the data read so far */
    uint64_t base;       /* input offset of buf[0] */
    uint64_t line_no;    /* lines consumed so far */
    uint64_t skip_input; /* bytes still to drop (resume on a pipe) */
    eddy__queue batch;   /* parsed inputs not yet pushed */
    size_t batch_n;
    /* A line over max_line_bytes that did not fit in the buffer: skipped up to
     * its newline, keeping a prefix for raw. */
    int skipping;
    uint64_t skip_len; /* bytes of the long line so far */
    char last;         /* its last byte so far (to discount a trailing '\r') */
    char prefix[EDDY__SOURCE_RAW_MAX];
    size_t prefix_len;
    /* A resume on a pipe: the head of the input is checked among the bytes
     * dropped (see eddy__source_opts.head_len). */
    int head_done;    /* the head was noted, or cannot be */
    size_t check_len; /* bytes to gather in check (0: no check) */
    size_t check_got;
    char check[EDDY__SOURCE_HEAD_MAX + 2];
    /* The last byte dropped did not end a line: the next one must (see
     * resume_at_line_start). */
    int check_next;
    /* The resume position follows a complete last line that had no newline:
     * the bytes up to the next newline (a '\r' at most) end that line, which
     * was counted, and start no line of their own (next_line). */
    int mid_line;
    /* A regular file (eddy__source.is_file): the file offset past the
     * bytes read, and the largest length it was seen to have. */
    uint64_t pos;
    uint64_t held;
    uint64_t eof_size; /* its length when a read last found the end */
} reader;

struct eddy__source {
    uv_async_t async; /* first, so the close callback can free from the handle */
    eddy__source_ready_fn ready;
    void *arg;

    /* Fixed at open. */
    int fd;
    int own_fd;
    int is_file; /* a regular file: its length is checked (check_length) */
    int wake[2]; /* self-pipe: close() writes, the reader polls */
    char *name;  /* the path, or "<stdin>", for messages */
    char *key_field;
    uint64_t start_offset;
    uint64_t want_len, want_hash; /* the head to find (opts head_len, head_hash) */
    int keep_tail;
#ifdef EDDY_TEST_HOOKS
    char *pause_paused, *pause_go; /* see test_pause */
    int pause_at_end;
#endif
    size_t max_line;
    unsigned max_depth;
    size_t capacity;
    size_t batch_cap;
    uv_thread_t thread;
    reader rd;

    /* Guarded by mu. */
    uv_mutex_t mu;
    uv_cond_t room;
    eddy__queue queue;
    size_t count;
    size_t high_water;
    uint64_t lines;
    int reader_waiting;
    int eof;        /* the reader is finished (end of input or error) */
    int head_known; /* the reader read the first line from the input's start */
    uint64_t head_len, head_hash;
    uint64_t tail_line, tail_bytes; /* a last line left unread (keep_tail) */
    int tail_long;                  /* ... for it is over max_line */
    int stop;                       /* close() asked the reader to stop */
    eddy_error *err;
    eddy__queue recycle; /* inputs handed back by the loop, for the reader to free */

    /* Loop thread only. */
    eddy__queue recycle_local; /* handed back since the last take */
    int reader_gone;           /* take() saw the reader finish: free here */
};

/* The reader stops: close() was called. */
#define STOPPED 1

void eddy__input_free(eddy__input *in)
{
    if (in == NULL)
        return;
    json_decref(in->record);
    free(in->key);
    free(in->detail);
    free(in->raw);
    free(in);
}

/* ------------------------------------------------------------------ decoding */

static int is_blank(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

/* 1 when the line nests arrays/objects deeper than max_depth, counting only
 * brackets outside strings. Unbalanced brackets are left to the parser. */
static int too_deep(const char *p, size_t len, unsigned max_depth)
{
    if (len <= max_depth)
        return 0;
    size_t depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return 1;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* Compact JSON text of a scalar key, byte for byte what
 * json_dumps(key, JSON_ENCODE_ANY | JSON_COMPACT) gives (the fuzz target checks
 * it), without json_dumps's intermediate buffer for the common cases. */
static char *key_text(const json_t *key)
{
    if (json_is_string(key)) {
        const char *v = json_string_value(key);
        size_t n = json_string_length(key);
        size_t i = 0;
        while (i < n && v[i] != '"' && v[i] != '\\' && (unsigned char)v[i] >= 0x20)
            i++;
        if (i == n) {
            char *t = malloc(n + 3);
            if (t == NULL)
                return NULL;
            t[0] = '"';
            memcpy(t + 1, v, n);
            t[n + 1] = '"';
            t[n + 2] = '\0';
            return t;
        }
    } else if (json_is_integer(key)) {
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(key));
        char *t = malloc((size_t)n + 1);
        if (t != NULL)
            memcpy(t, tmp, (size_t)n + 1);
        return t;
    }
    return json_dumps(key, JSON_ENCODE_ANY | JSON_COMPACT);
}

/* Fill a bad line. detail is taken (may be NULL); the raw copy is truncated to
 * EDDY__SOURCE_RAW_MAX bytes, which detail then mentions. */
static int set_bad(eddy__input *out, const char *reason, char *detail, const char *line, size_t len,
                   uint64_t full_len)
{
    size_t raw_len = len < EDDY__SOURCE_RAW_MAX ? len : EDDY__SOURCE_RAW_MAX;
    if (full_len > raw_len) {
        const char *d = detail != NULL ? detail : reason;
        size_t need = strlen(d) + 96;
        char *t = malloc(need);
        if (t == NULL)
            goto nomem;
        snprintf(t, need, "%s; raw keeps the first %zu of %" PRIu64 " bytes", d, raw_len, full_len);
        free(detail);
        detail = t;
    }
    char *raw = malloc(raw_len + 1);
    if (raw == NULL)
        goto nomem;
    memcpy(raw, line, raw_len);
    raw[raw_len] = '\0';
    out->record = NULL;
    out->key = NULL;
    out->key_len = 0;
    out->key_hash = 0;
    out->reason = reason;
    out->detail = detail;
    out->raw = raw;
    out->raw_len = raw_len;
    return EDDY__LINE_BAD;
nomem:
    free(detail);
    return EDDY_ENOMEM;
}

static char *format(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

static char *format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *t = malloc((size_t)n + 1);
    if (t == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(t, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return t;
}

int eddy__source_decode_line(const char *line, size_t len, const char *key_field,
                             unsigned max_depth, eddy__input *out)
{
    if (max_depth == 0)
        max_depth = EDDY__SOURCE_DEFAULT_MAX_DEPTH;
    if (is_blank(line, len))
        return EDDY__LINE_BLANK;
    if (too_deep(line, len, max_depth)) {
        char *d = format("nesting deeper than %u", max_depth);
        if (d == NULL)
            return EDDY_ENOMEM;
        return set_bad(out, "nesting too deep", d, line, len, len);
    }

    json_error_t jerr;
    unsigned failed = eddy__jalloc_failures;
    json_t *rec = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (eddy__jalloc_failures != failed) {
        /* jansson reports an allocation failure as a parse error ("invalid
         * token near ...", say), or drops a character of a string and goes
         * on (2.14: its lexer does not check that its buffer grew): the
         * line is neither dead-lettered nor read past for it. */
        json_decref(rec);
        return EDDY_ENOMEM;
    }
    if (rec == NULL) {
        char *d = format("%s (column %d)", jerr.text, jerr.column);
        if (d == NULL)
            return EDDY_ENOMEM;
        return set_bad(out, "not JSON", d, line, len, len);
    }
    const char *reason = NULL;
    char *detail = NULL;
    json_t *key = NULL;
    if (!json_is_object(rec)) {
        reason = "not a JSON object";
    } else if ((key = json_object_get(rec, key_field)) == NULL) {
        reason = "no key field";
        detail = format("no field \"%s\"", key_field);
        if (detail == NULL)
            goto nomem;
    } else if (json_is_null(key)) {
        reason = "key is null";
        detail = format("field \"%s\" is null", key_field);
        if (detail == NULL)
            goto nomem;
    } else if (json_is_object(key) || json_is_array(key)) {
        reason = "key is not a scalar";
        detail =
            format("field \"%s\" is an %s", key_field, json_is_object(key) ? "object" : "array");
        if (detail == NULL)
            goto nomem;
    }
    if (reason != NULL) {
        json_decref(rec);
        return set_bad(out, reason, detail, line, len, len);
    }
    char *k = key_text(key);
    if (k == NULL)
        goto nomem;
    out->record = rec;
    out->key = k;
    out->key_len = strlen(k);
    out->key_hash = eddy__map_hash(k, out->key_len);
    out->reason = NULL;
    out->detail = NULL;
    out->raw = NULL;
    out->raw_len = 0;
    return EDDY__LINE_OK;
nomem:
    json_decref(rec);
    return EDDY_ENOMEM;
}

/* ------------------------------------------------------------------ the queue */

/* Split the first n nodes (n >= 1, at most all) off h onto the tail of out,
 * walking only those n. */
static void queue_splice_n(eddy__queue *h, eddy__queue *out, size_t n)
{
    eddy__queue *first = h->next, *last = first;
    for (size_t i = 1; i < n; i++)
        last = last->next;
    h->next = last->next;
    last->next->prev = h;
    first->prev = out->prev;
    out->prev->next = first;
    last->next = out;
    out->prev = last;
}

static void free_inputs(eddy__queue *h)
{
    while (!eddy__queue_empty(h)) {
        eddy__queue *q = eddy__queue_head(h);
        eddy__queue_remove(q);
        eddy__input_free(eddy__queue_data(q, eddy__input, node));
    }
}

/* Move the reader's batch to the shared queue, waiting for room as needed.
 * Returns 0 or STOPPED. */
static int push_batch(eddy__source *s)
{
    reader *r = &s->rd;
    while (r->batch_n > 0) {
        uv_mutex_lock(&s->mu);
        s->lines = r->line_no;
        while (s->count >= s->capacity && !s->stop) {
            s->reader_waiting = 1;
            uv_cond_wait(&s->room, &s->mu);
        }
        s->reader_waiting = 0;
        if (s->stop) {
            uv_mutex_unlock(&s->mu);
            return STOPPED;
        }
        int was_empty = s->count == 0;
        size_t n = s->capacity - s->count;
        if (n >= r->batch_n) {
            n = r->batch_n;
            eddy__queue_move(&r->batch, &s->queue);
        } else {
            queue_splice_n(&r->batch, &s->queue, n);
        }
        r->batch_n -= n;
        s->count += n;
        if (s->count > s->high_water)
            s->high_water = s->count;
        eddy__queue garbage;
        eddy__queue_init(&garbage);
        eddy__queue_move(&s->recycle, &garbage);
        uv_mutex_unlock(&s->mu);
        if (was_empty)
            uv_async_send(&s->async);
        free_inputs(&garbage);
    }
    return 0;
}

static int add_input(eddy__source *s, eddy__input *in)
{
    reader *r = &s->rd;
    eddy__queue_insert_tail(&r->batch, &in->node);
    if (++r->batch_n >= s->batch_cap)
        return push_batch(s);
    return 0;
}

/* ------------------------------------------------------------------ the reader */

static void reader_fail(eddy__source *s, int code, const char *fmt, const char *what)
{
    uv_mutex_lock(&s->mu);
    eddy__error_set(&s->err, code, code == EDDY_ENOMEM ? "nomem" : "io", fmt, s->name, what);
    uv_mutex_unlock(&s->mu);
}

/* A resume found another input than the one the state was reading. */
static int other_input(eddy_error **err, const char *name, const char *why)
{
    return eddy__error_set(err, EDDY_ESTATE, "state",
                           "%s is not the input this state was reading: %s; give the same input "
                           "(lines may be added at its end), or use another --state directory",
                           name, why);
}

static void reader_fail_other(eddy__source *s, const char *why)
{
    uv_mutex_lock(&s->mu);
    other_input(&s->err, s->name, why);
    uv_mutex_unlock(&s->mu);
}

/*
 * A state resumes at the end of the last line it read, so the byte before
 * its position is a newline. One that is not means that a line before the
 * position changed length (the first line and the length being the same):
 * reading on would take the rest of a line for a line and lose another one.
 * The exception is a complete last line without a newline, taken as it was:
 * the input ended there, and may since go on from there with the newline
 * that ends it. before is the byte before the position, next the byte at it
 * (-1 at the end of the input).
 */
static int resume_at_line_start(char before, int next)
{
    return before == '\n' || next == -1 || next == '\n' || next == '\r';
}

static void not_at_line_start(char *why, size_t n, uint64_t offset)
{
    snprintf(why, n,
             "the state resumes at byte %" PRIu64 ", which does not start a line (a line "
             "before it changed)",
             offset);
}

/* The first line of an input read from its start: its head, for later
 * resumes to check (published before the line is pushed). */
static void note_head(eddy__source *s, const char *p, size_t len)
{
    size_t n = len < EDDY__SOURCE_HEAD_MAX ? len : EDDY__SOURCE_HEAD_MAX;
    uv_mutex_lock(&s->mu);
    s->head_len = n;
    s->head_hash = eddy__hash_bytes(p, n);
    s->head_known = 1;
    uv_mutex_unlock(&s->mu);
}

/* 1 when buf[0, got) (got < want_len + 1 only at the end of the input)
 * starts with the head looked for. */
/* The bytes a resume reads to check the input's head: its first line and
 * what ends it ("\n", or "\r\n" when it was read without a newline). */
static size_t head_want(uint64_t n)
{
    return (size_t)n + (n < EDDY__SOURCE_HEAD_MAX ? 2 : 0);
}

static int head_matches(const eddy__source *s, const char *buf, size_t got)
{
    size_t n = (size_t)s->want_len;
    if (got < n || eddy__hash_bytes(buf, n) != s->want_hash)
        return 0;
    /* A shorter first line must still end there: with its newline, or with
     * CRLF when it was read without one (a CR it was read with is in n). */
    return n == EDDY__SOURCE_HEAD_MAX || got == n || buf[n] == '\n' ||
           (buf[n] == '\r' && (got == n + 1 || buf[n + 1] == '\n'));
}

/* The number of the line that ends now: the next one, but for the end of
 * the line a resume started in the middle of (mid_line), which was counted
 * when it was taken without its newline, so that lines are numbered as a
 * run from the input's start numbers them. */
static uint64_t next_line(reader *r)
{
    if (r->mid_line) {
        r->mid_line = 0;
        return r->line_no;
    }
    return ++r->line_no;
}

/* The length of a UTF-8 byte-order mark at the start of line line_no at p
 * (len bytes): 3 before the input's first line (what editors on Windows
 * save), which is no part of its JSON, where it would make the line "not
 * JSON" at an invisible character; 0 anywhere else. The head keeps it. */
static size_t bom_at(const eddy__source *s, uint64_t line_no, const char *p, size_t len)
{
    return line_no == 1 && s->start_offset == 0 && len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0
               ? 3
               : 0;
}

/* Emit one complete line [p, p + len) (without '\n') ending at end_offset.
 * Returns 0, STOPPED or EDDY_ENOMEM. */
static int emit_line(eddy__source *s, const char *p, size_t len, uint64_t end_offset)
{
    reader *r = &s->rd;
    size_t bom = bom_at(s, next_line(r), p, len);
    p += bom;
    len -= bom;
    if (!r->head_done && s->start_offset == 0 && !is_blank(p, len)) {
        /* The head runs from the input's first byte through its first line
         * that is not blank (blank lines tell inputs apart by nothing): when
         * the buffer still starts at byte 0, as it does unless blank lines
         * filled a whole read. */
        r->head_done = 1;
        if (r->base == 0)
            note_head(s, r->buf, (size_t)(p - r->buf) + len);
    }
    if (len > 0 && p[len - 1] == '\r')
        len--;
    eddy__input *in = eddy__fault("alloc.input") ? NULL : malloc(sizeof(*in));
    if (in == NULL)
        return EDDY_ENOMEM;
    int rc;
    if (len > s->max_line) {
        char *d = format("line of %zu bytes, over --max-line-bytes %zu", len, s->max_line);
        rc = d == NULL ? EDDY_ENOMEM : set_bad(in, "line too long", d, p, len, len);
    } else {
        rc = eddy__source_decode_line(p, len, s->key_field, s->max_depth, in);
    }
    if (rc < 0 || rc == EDDY__LINE_BLANK) {
        free(in);
        return rc < 0 ? rc : 0;
    }
    in->line_no = r->line_no;
    in->end_offset = end_offset;
    return add_input(s, in);
}

/* The end of a line that was too long to buffer. */
static int finish_skipped(eddy__source *s, uint64_t end_offset)
{
    reader *r = &s->rd;
    r->skipping = 0;
    if (next_line(r) == 1 && s->start_offset == 0 && !r->head_done)
        note_head(s, r->prefix, r->prefix_len); /* the prefix is the head's length */
    r->head_done = 1;
    uint64_t len = r->skip_len;
    if (len > 0 && r->last == '\r')
        len--;
    size_t keep = r->prefix_len < len ? r->prefix_len : (size_t)len;
    eddy__input *in = malloc(sizeof(*in));
    char *d = format("line of %" PRIu64 " bytes, over --max-line-bytes %zu", len, s->max_line);
    if (in == NULL || d == NULL) {
        free(in);
        free(d);
        return EDDY_ENOMEM;
    }
    if (set_bad(in, "line too long", d, r->prefix, keep, len) < 0) {
        free(in);
        return EDDY_ENOMEM;
    }
    in->line_no = r->line_no;
    in->end_offset = end_offset;
    return add_input(s, in);
}

/* Account bytes [p, p + n) of a line being skipped. */
static void skip_bytes(reader *r, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (r->prefix_len < sizeof(r->prefix)) {
        size_t k = sizeof(r->prefix) - r->prefix_len;
        if (k > n)
            k = n;
        memcpy(r->prefix + r->prefix_len, p, k);
        r->prefix_len += k;
    }
    r->skip_len += n;
    r->last = p[n - 1];
}

/* Split and emit the complete lines in the buffer, then move the unfinished
 * line to the front (the only copy of line bytes, for a line spanning two
 * reads) and make room for the next read. Returns 0, STOPPED or EDDY_ENOMEM. */
static int process(eddy__source *s)
{
    reader *r = &s->rd;
    int rc;
    if (r->skipping) {
        char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (nl == NULL) {
            skip_bytes(r, r->buf + r->start, r->end - r->start);
            r->start = r->end;
        } else {
            skip_bytes(r, r->buf + r->start, (size_t)(nl - (r->buf + r->start)));
            r->start = (size_t)(nl - r->buf) + 1;
            if ((rc = finish_skipped(s, r->base + r->start)) != 0)
                return rc;
        }
    }
    if (!r->skipping) {
        for (;;) {
            char *p = r->buf + r->start;
            char *nl = memchr(p, '\n', r->end - r->start);
            if (nl == NULL)
                break;
            r->start = (size_t)(nl - r->buf) + 1;
            if ((rc = emit_line(s, p, (size_t)(nl - p), r->base + r->start)) != 0)
                return rc;
        }
        /* An unfinished line longer than the limit (plus room for a '\r') can
         * no longer become valid: stop buffering it. (Not max_line + 1, which
         * wraps to 0 at SIZE_MAX.) */
        size_t left = r->end - r->start;
        if (left > s->max_line && left - s->max_line > 1) {
            r->skipping = 1;
            r->skip_len = 0;
            r->prefix_len = 0;
            skip_bytes(r, r->buf + r->start, left);
            r->start = r->end;
        }
    }
    size_t left = r->end - r->start;
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, left);
        r->base += r->start;
        r->start = 0;
        r->end = left;
    }
    if (r->cap - r->end < CHUNK / 4) {
        size_t ncap = r->cap * 2;
        if (ncap < r->end + CHUNK)
            ncap = r->end + CHUNK;
        char *nb = realloc(r->buf, ncap);
        if (nb == NULL)
            return EDDY_ENOMEM;
        r->buf = nb;
        r->cap = ncap;
    }
    /* Whatever was parsed goes out before the next read, which may block. */
    return push_batch(s);
}

/*
 * A regular file shorter than the bytes eddy read from it, or than it was
 * seen to be, was truncated while eddy read it (`: > in.jsonl`, logrotate's
 * copytruncate): what it holds at eddy's offset, if anything, is not what
 * followed the lines read. One fstat per read and at the end of the input,
 * never per line. A file truncated and written again past eddy's offset
 * between two of them is not noticed: its bytes there are read as if they
 * went on from the last ones. Returns 0 with *size (the length now, or pos
 * when it cannot be known), or -1 with the error set.
 */
static int check_length(eddy__source *s, uint64_t *size)
{
    reader *r = &s->rd;
    struct stat st;
    *size = r->pos;
    if (!s->is_file || fstat(s->fd, &st) != 0)
        return 0;
    *size = (uint64_t)st.st_size;
    if (*size >= r->pos && *size >= r->held) {
        r->held = *size;
        return 0;
    }
    if (r->held == 0) {
        /* Never seen to hold anything, yet read from: a file whose length
         * says nothing (/proc), not a cut one. Not checked again. */
        s->is_file = 0;
        *size = r->pos;
        return 0;
    }
    char held[64] = "";
    if (r->held > r->pos)
        snprintf(held, sizeof(held), " of the %" PRIu64 " it held", r->held);
    uv_mutex_lock(&s->mu);
    eddy__error_set(&s->err, EDDY_EIO, "io",
                    "%s was truncated while eddy read it: it holds %" PRIu64 " bytes, eddy had "
                    "read %" PRIu64 "%s (rotated in place, as logrotate's copytruncate does?), and "
                    "what it holds from there does not go on from the lines read; do not truncate "
                    "or rotate an input while eddy reads it: put back what it held (the copy "
                    "rotated out) and run the same command again",
                    s->name, *size, r->pos, held);
    uv_mutex_unlock(&s->mu);
    return -1;
}

#ifdef EDDY_TEST_HOOKS
/* Tests change the input while the reader is in the middle of it, or at
 * its end: with $EDDY_TEST_READER_PAUSE "first", after its first read
 * (and the check of the file's length, before the lines are parsed), with
 * "end" when a read finds the end of the input (before that check), the
 * reader makes the file $EDDY_TEST_READER_PAUSED and waits until
 * $EDDY_TEST_READER_GO exists, 60 s at most; once. */
static void test_pause(eddy__source *s, int at_end)
{
    if (s->pause_paused == NULL || s->pause_at_end != at_end)
        return;
    int fd = open(s->pause_paused, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    for (int i = 0; access(s->pause_go, F_OK) != 0 && i < 6000; i++)
        uv_sleep(10);
    free(s->pause_paused);
    s->pause_paused = NULL; /* once */
}
#endif

/* Read into [p, p + n): > 0 bytes read, 0 at end of input, -1 on a read error
 * (errno set), -2 when close() asked to stop. */
static ssize_t read_some(eddy__source *s, char *p, size_t n)
{
    for (;;) {
        struct pollfd fds[2] = {{.fd = s->fd, .events = POLLIN},
                                {.fd = s->wake[0], .events = POLLIN}};
        int k = poll(fds, 2, -1);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (fds[1].revents != 0)
            return -2;
        if (fds[0].revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
        if (fds[0].revents == 0)
            continue;
        ssize_t got = read(s->fd, p, n);
        if (got >= 0)
            return got;
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
    }
}

/* 1 when a last line without a newline (not over the limit) is not JSON
 * yet: most likely a line still being appended. */
static int tail_incomplete(const char *p, size_t len)
{
    if (is_blank(p, len))
        return 0;
    json_t *v = json_loadb(p, len, JSON_DECODE_ANY, NULL);
    json_decref(v);
    return v == NULL;
}

static void reader_main(void *arg)
{
    eddy__thread_name("eddy-reader");
    eddy__source *s = arg;
    reader *r = &s->rd;
    int rc = 0;
    for (;;) {
        ssize_t got = read_some(s, r->buf + r->end, r->cap - r->end);
        if (got == -2)
            return; /* close() frees what is left */
        if (got < 0) {
            int e = errno;
            rc = push_batch(s);
            if (rc != STOPPED)
                reader_fail(s, EDDY_EIO, "cannot read %s: %s", strerror(e));
            break;
        }
        if (got == 0 && r->skip_input > 0) {
            /* A pipe that ends before the position the state read to. */
            char why[160];
            snprintf(why, sizeof(why),
                     "it ended after %" PRIu64 " bytes, and the state has read %" PRIu64,
                     s->start_offset - r->skip_input, s->start_offset);
            reader_fail_other(s, why);
            break;
        }
        uint64_t size;
        if (got > 0)
            r->pos += (uint64_t)got;
#ifdef EDDY_TEST_HOOKS
        if (got == 0)
            test_pause(s, 1);
#endif
        if (check_length(s, &size) != 0) {
            rc = push_batch(s); /* the lines before the bytes just read */
            break;
        }
        if (got == 0 && size > r->pos && size != r->eof_size) {
            /* It grew since the read: read on. Once only for one length: a
             * file that says it holds more than it gives (sysfs) ends. */
            r->eof_size = size;
            continue;
        }
#ifdef EDDY_TEST_HOOKS
        if (got > 0)
            test_pause(s, 0);
#endif
        if (got == 0) {
            /* The last line may have no newline. With keep_tail, one that is
             * not complete JSON, or over the limit (a '\r' aside: whether
             * it is complete is not known), is left unread: the position
             * stays at its start, and a resume reads it whole once its
             * newline is there (and dead-letters it then if it is too long). */
            size_t len = r->end - r->start;
            int too_long = r->skipping || (len > s->max_line &&
                                           (len - s->max_line > 1 || r->buf[r->end - 1] != '\r'));
            size_t bom = bom_at(s, r->line_no + !r->mid_line, r->buf + r->start, len);
            if (s->keep_tail && (too_long || tail_incomplete(r->buf + r->start + bom, len - bom))) {
                uv_mutex_lock(&s->mu);
                s->tail_line = r->line_no + !r->mid_line;
                s->tail_bytes = r->skipping ? r->skip_len : len;
                s->tail_long = too_long;
                uv_mutex_unlock(&s->mu);
            } else if (r->skipping)
                rc = finish_skipped(s, r->base + r->end);
            else if (r->end > r->start)
                rc = emit_line(s, r->buf + r->start, r->end - r->start, r->base + r->end);
            if (rc == 0)
                rc = push_batch(s);
            if (rc == EDDY_ENOMEM)
                reader_fail(s, EDDY_ENOMEM, "cannot read %s: %s", "out of memory");
            break;
        }
        size_t n = (size_t)got;
        if (r->skip_input > 0) {
            /* Resume on a pipe or terminal: drop the bytes before start_offset. */
            size_t drop = r->skip_input < n ? (size_t)r->skip_input : n;
            if (r->check_got < r->check_len) {
                size_t k = r->check_len - r->check_got;
                memcpy(r->check + r->check_got, r->buf + r->end, k < drop ? k : drop);
                r->check_got += k < drop ? k : drop;
                if (r->check_got == r->check_len && !head_matches(s, r->check, r->check_got)) {
                    reader_fail_other(s, "its first line is not the one read before");
                    break;
                }
            }
            if (drop > 0 && drop == r->skip_input && r->buf[r->end + drop - 1] != '\n')
                r->check_next = r->mid_line = 1;
            memmove(r->buf + r->end, r->buf + r->end + drop, n - drop);
            n -= drop;
            r->skip_input -= drop;
        }
        if (r->check_next && n > 0) {
            r->check_next = 0;
            if (!resume_at_line_start(0, (unsigned char)r->buf[r->end])) {
                char why[160];
                not_at_line_start(why, sizeof(why), s->start_offset);
                reader_fail_other(s, why);
                break;
            }
        }
        r->end += n;
        rc = process(s);
        if (rc == STOPPED)
            break;
        if (rc == EDDY_ENOMEM) {
            push_batch(s);
            reader_fail(s, EDDY_ENOMEM, "cannot read %s: %s", "out of memory");
            break;
        }
    }
    if (rc == STOPPED)
        return;
    uv_mutex_lock(&s->mu);
    s->eof = 1;
    uv_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

/* ------------------------------------------------------------------ loop side */

static void on_async(uv_async_t *h)
{
    eddy__source *s = h->data;
    s->ready(s->arg);
}

/* Free everything but the async handle and the struct itself. */
static void release(eddy__source *s)
{
    free_inputs(&s->queue);
    free_inputs(&s->recycle);
    free_inputs(&s->recycle_local);
    free_inputs(&s->rd.batch);
    if (s->own_fd && s->fd >= 0)
        close(s->fd);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    free(s->rd.buf);
    free(s->name);
    free(s->key_field);
#ifdef EDDY_TEST_HOOKS
    free(s->pause_paused);
    free(s->pause_go);
#endif
    eddy_error_free(s->err);
}

static void on_close(uv_handle_t *h)
{
    free(h); /* the async handle is the first member */
}

/* The reader's wake-up pipe, close-on-exec from the start: between pipe()
 * and fcntl(), a fork and exec on another thread (an agent's subprocess)
 * would inherit it. macOS has no pipe2. */
#if defined(__APPLE__)
static int set_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    return fl < 0 ? -1 : fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

static int wake_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return -1;
    return set_cloexec(fds[0]) == 0 && set_cloexec(fds[1]) == 0 ? 0 : -1;
}
#else
static int wake_pipe(int fds[2])
{
    return pipe2(fds, O_CLOEXEC);
}
#endif

/* Read up to want bytes of s's file at offset into buf; how many, or -1
 * with the error set. */
static ssize_t pread_all(eddy__source *s, char *buf, size_t want, uint64_t offset, eddy_error **err)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(s->fd, buf + got, want - got, (off_t)(offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            eddy__error_set(err, EDDY_EIO, "io", "cannot read %s: %s", s->name, strerror(errno));
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* A resume on a regular file: one that is shorter than what the state read,
 * does not start with the head read before, or where the position is not
 * the start of a line, is another input. */
static int check_file(eddy__source *s, uint64_t size, eddy_error **err)
{
    char why[160];
    if (size < s->start_offset) {
        snprintf(why, sizeof(why),
                 "it holds %" PRIu64 " bytes, and the state has read %" PRIu64
                 " (truncated, or rotated in place?)",
                 size, s->start_offset);
        return other_input(err, s->name, why);
    }
    char buf[EDDY__SOURCE_HEAD_MAX + 2];
    ssize_t got;
    if (s->want_len > 0) {
        if ((got = pread_all(s, buf, head_want(s->want_len), 0, err)) < 0)
            return EDDY_EIO;
        if (!head_matches(s, buf, (size_t)got))
            return other_input(err, s->name, "its first line is not the one read before");
    }
    if ((got = pread_all(s, buf, 2, s->start_offset - 1, err)) < 0)
        return EDDY_EIO;
    if (got < 1 || !resume_at_line_start(buf[0], got > 1 ? (unsigned char)buf[1] : -1)) {
        not_at_line_start(why, sizeof(why), s->start_offset);
        return other_input(err, s->name, why);
    }
    s->rd.mid_line = buf[0] != '\n';
    return EDDY_OK;
}

int eddy__source_open(eddy__source **out, uv_loop_t *loop, const eddy__source_opts *opts,
                      eddy__source_ready_fn ready, void *arg, eddy_error **err)
{
    int rc;
    *out = NULL;
    int given = opts != NULL && opts->has_fd ? opts->fd : -1; /* ours from here */
    eddy__source *s = NULL;
    if (opts == NULL || opts->key_field == NULL || ready == NULL ||
        (s = calloc(1, sizeof(*s))) == NULL) {
        if (given >= 0)
            close(given);
        return s == NULL && opts != NULL && opts->key_field != NULL && ready != NULL
                   ? eddy__error_set(err, EDDY_ENOMEM, "nomem", "out of memory")
                   : eddy__error_set(err, EDDY_EINVAL, "io",
                                     "source: missing key field or callback");
    }
    s->fd = s->wake[0] = s->wake[1] = -1;
    if (given >= 0) {
        s->fd = given;
        s->own_fd = 1;
    }
    eddy__queue_init(&s->queue);
    eddy__queue_init(&s->recycle);
    eddy__queue_init(&s->recycle_local);
    eddy__queue_init(&s->rd.batch);
    s->ready = ready;
    s->arg = arg;
    s->max_line = opts->max_line_bytes ? opts->max_line_bytes : EDDY__SOURCE_DEFAULT_MAX_LINE;
    s->max_depth = opts->max_depth ? opts->max_depth : EDDY__SOURCE_DEFAULT_MAX_DEPTH;
    s->capacity = opts->capacity ? opts->capacity : EDDY__SOURCE_DEFAULT_CAPACITY;
    s->batch_cap = s->capacity < BATCH_MAX ? s->capacity : BATCH_MAX;
    s->rd.line_no = opts->start_line;
    s->rd.base = opts->start_offset;
    s->rd.cap = CHUNK;
    int is_stdin = opts->path == NULL || strcmp(opts->path, "-") == 0;
    s->name = strdup(is_stdin ? "<stdin>" : opts->path);
    s->key_field = strdup(opts->key_field);
    s->rd.buf = malloc(s->rd.cap);
    if (s->name == NULL || s->key_field == NULL || s->rd.buf == NULL) {
        rc = eddy__error_set(err, EDDY_ENOMEM, "nomem", "out of memory");
        goto fail;
    }

    if (given >= 0) {
        /* opened by the caller (s->fd) */
    } else if (is_stdin) {
        s->fd = STDIN_FILENO;
    } else {
        /* A FIFO's open waits for its writer: a wait a stop must be able to end. */
        s->fd = eddy__wait_open(opts->path, O_RDONLY | O_CLOEXEC, 0, EDDY_WAIT_OPEN_READ);
        if (s->fd < 0) {
            rc = eddy__error_set(err, EDDY_EIO, "io", "cannot open %s: %s", s->name,
                                 strerror(errno));
            goto fail;
        }
        s->own_fd = 1;
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        rc = eddy__error_set(err, EDDY_EIO, "io", "cannot open %s: %s", s->name, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = eddy__error_set(err, EDDY_EIO, "io", "cannot read %s: %s", s->name, strerror(EISDIR));
        goto fail;
    }
    s->start_offset = opts->start_offset;
    s->want_len = opts->head_len <= EDDY__SOURCE_HEAD_MAX ? opts->head_len : 0;
    s->want_hash = opts->head_hash;
    s->keep_tail = opts->keep_tail;
    if (opts->start_offset > 0 && S_ISREG(st.st_mode) &&
        (rc = check_file(s, (uint64_t)st.st_size, err)) != EDDY_OK)
        goto fail;
    if (opts->start_offset > 0) {
        if (lseek(s->fd, (off_t)opts->start_offset, SEEK_SET) < 0) {
            if (errno != ESPIPE) {
                rc = eddy__error_set(err, EDDY_EIO, "io", "cannot seek %s to %" PRIu64 ": %s",
                                     s->name, opts->start_offset, strerror(errno));
                goto fail;
            }
            s->rd.skip_input = opts->start_offset;
            if (s->want_len > 0) {
                uint64_t want = head_want(s->want_len);
                s->rd.check_len = (size_t)(want < s->start_offset ? want : s->start_offset);
            }
        }
    }
    if (S_ISREG(st.st_mode)) {
        /* Where the reads start: start_offset, or where stdin stands. */
        off_t at = lseek(s->fd, 0, SEEK_CUR);
        s->is_file = at >= 0 && (uint64_t)at <= (uint64_t)st.st_size;
        s->rd.pos = at >= 0 ? (uint64_t)at : 0;
        s->rd.held = (uint64_t)st.st_size;
    }
#ifdef EDDY_TEST_HOOKS
    const char *pause = getenv("EDDY_TEST_READER_PAUSE");
    const char *paused = getenv("EDDY_TEST_READER_PAUSED"), *go = getenv("EDDY_TEST_READER_GO");
    if (pause != NULL && paused != NULL && go != NULL) {
        s->pause_at_end = strcmp(pause, "end") == 0;
        s->pause_paused = strdup(paused);
        s->pause_go = strdup(go);
        if (s->pause_paused == NULL || s->pause_go == NULL) {
            rc = eddy__error_set(err, EDDY_ENOMEM, "nomem", "out of memory");
            goto fail;
        }
    }
#endif
    if (wake_pipe(s->wake) != 0) {
        rc = eddy__error_set(err, EDDY_EIO, "io", "source: cannot create a pipe: %s",
                             strerror(errno));
        goto fail;
    }
    if (uv_mutex_init(&s->mu) != 0) {
        rc = eddy__error_set(err, EDDY_ENOMEM, "nomem", "source: cannot create a mutex");
        goto fail;
    }
    if (uv_cond_init(&s->room) != 0) {
        uv_mutex_destroy(&s->mu);
        rc = eddy__error_set(err, EDDY_ENOMEM, "nomem", "source: cannot create a condition");
        goto fail;
    }
    if (uv_async_init(loop, &s->async, on_async) != 0) {
        rc = eddy__error_set(err, EDDY_EIO, "io", "source: cannot create an async handle");
        goto fail_sync;
    }
    s->async.data = s;
    if (uv_thread_create(&s->thread, reader_main, s) != 0) {
        rc = eddy__error_set(err, EDDY_ENOMEM, "nomem", "source: cannot start the reader thread");
        uv_cond_destroy(&s->room);
        uv_mutex_destroy(&s->mu);
        release(s);
        uv_close((uv_handle_t *)&s->async, on_close);
        return rc;
    }
    *out = s;
    return EDDY_OK;

fail_sync:
    uv_cond_destroy(&s->room);
    uv_mutex_destroy(&s->mu);
fail:
    release(s);
    free(s);
    return rc;
}

void eddy__source_recycle(eddy__source *s, eddy__input *in)
{
    if (s->reader_gone)
        eddy__input_free(in);
    else
        eddy__queue_insert_tail(&s->recycle_local, &in->node);
}

size_t eddy__source_take(eddy__source *s, eddy__queue *out, size_t max)
{
    uv_mutex_lock(&s->mu);
    if (!s->eof)
        eddy__queue_move(&s->recycle_local, &s->recycle);
    s->reader_gone = s->eof;
    size_t n = s->count < max ? s->count : max;
    if (n == s->count)
        eddy__queue_move(&s->queue, out);
    else if (n > 0)
        queue_splice_n(&s->queue, out, n);
    s->count -= n;
    if (s->reader_waiting && s->count <= s->capacity / 2)
        uv_cond_signal(&s->room);
    uv_mutex_unlock(&s->mu);
    return n;
}

int eddy__source_head(eddy__source *s, uint64_t *len, uint64_t *hash)
{
    uv_mutex_lock(&s->mu);
    int known = s->head_known;
    *len = s->head_len;
    *hash = s->head_hash;
    uv_mutex_unlock(&s->mu);
    return known;
}

int eddy__source_tail(eddy__source *s, uint64_t *line, uint64_t *bytes)
{
    uv_mutex_lock(&s->mu);
    int left = s->eof && s->tail_line != 0 ? 1 + s->tail_long : 0;
    *line = s->tail_line;
    *bytes = s->tail_bytes;
    uv_mutex_unlock(&s->mu);
    return left;
}

int eddy__source_done(eddy__source *s)
{
    uv_mutex_lock(&s->mu);
    int done = s->eof && s->count == 0;
    uv_mutex_unlock(&s->mu);
    return done;
}

const eddy_error *eddy__source_error(const eddy__source *s)
{
    /* The mutex is the only thing written through the cast. */
    uv_mutex_t *mu = (uv_mutex_t *)&s->mu;
    uv_mutex_lock(mu);
    const eddy_error *e = s->err;
    uv_mutex_unlock(mu);
    return e;
}

void eddy__source_get_stats(eddy__source *s, eddy__source_stats *out)
{
    uv_mutex_lock(&s->mu);
    out->queued = s->count;
    out->high_water = s->high_water;
    out->lines = s->lines;
    uv_mutex_unlock(&s->mu);
}

void eddy__source_close(eddy__source *s)
{
    if (s == NULL)
        return;
    uv_mutex_lock(&s->mu);
    s->stop = 1;
    uv_cond_signal(&s->room);
    uv_mutex_unlock(&s->mu);
    char b = 1;
    ssize_t w;
    do
        w = write(s->wake[1], &b, 1);
    while (w < 0 && errno == EINTR);
    uv_thread_join(&s->thread);
    uv_cond_destroy(&s->room);
    uv_mutex_destroy(&s->mu);
    release(s);
    uv_close((uv_handle_t *)&s->async, on_close);
}
