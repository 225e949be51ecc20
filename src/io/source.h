/*
 * JSONL source: a reader thread turns lines into input records.
 *
 * Design notes
 * ------------
 * A regular file cannot be polled, and a blocking read() on the mailbox thread
 * would stall every key, so one reader thread reads the input (a file, or
 * stdin, which may be a pipe or a terminal) in large chunks, splits lines,
 * parses each line's JSON and extracts its key. Parsing off the mailbox thread
 * also spreads the most expensive per-input work onto a second core.
 *
 * The reader fills a bounded queue of parsed inputs (capacity given at open).
 * It parses up to min(64, capacity) lines into a private batch and then takes
 * the lock once to append the batch, so the lock is taken per batch, not per
 * line; a partial batch is pushed before every read, so a slow pipe sees no
 * added latency. When the queue goes from empty to non-empty the reader wakes
 * the loop with uv_async_send(), and once more when the input ends (EOF or a
 * read error); the loop's callback calls the user's ready callback, which takes
 * as many inputs as it can admit with eddy__source_take(). The ready callback
 * is NOT called again while the queue stays non-empty: a consumer that leaves
 * inputs in the queue calls eddy__source_take() again on its own when it has
 * room. When the queue is full the reader waits on a condition variable until
 * take() has brought it down to half the capacity: that is the back-pressure,
 * the reader holds at most capacity queued plus one batch of parsed inputs.
 *
 * Lock order: a single mutex guards the queue, the end-of-input flag and the
 * error; nothing else is locked. The loop never holds it for longer than a list
 * splice, and the reader never holds it while reading or parsing.
 *
 * Shutdown: eddy__source_close() sets a stop flag, wakes the reader from the
 * condition variable and writes a byte to a self-pipe. The reader waits for
 * input with poll() on the input fd plus that pipe, never in a bare read(), so
 * a reader waiting on a terminal or a pipe that never delivers data wakes up
 * and exits (for a regular file poll() always reports readable). close() then
 * joins the reader, frees queued inputs and closes the async handle.
 *
 * Lines
 * -----
 * Lines end with '\n'; a trailing '\r' is stripped; the last line needs no
 * newline. Line numbers count every line, including blank lines (empty or only
 * spaces, tabs and CR), which are skipped and are not inputs. Each line must be
 * one JSON object (RFC 8259, as jansson 2.14 parses it) whose top-level field
 * key_field holds a scalar: a string, an integer, a real, true or false. The
 * key is kept as compact JSON text, so "u1" and 1 are different keys, and so
 * are 1 and 1.0 (a real key is printed by jansson with up to 17 significant
 * digits; avoid real keys). A bad line becomes an input with record and key
 * NULL and one of these reasons (exact strings):
 *
 *   "not JSON"            jansson rejected it; detail is jansson's message with
 *                         the column. This includes invalid UTF-8, a \u0000
 *                         escape, trailing garbage after the object, integers
 *                         outside int64 ("too big integer"; they are not turned
 *                         into reals) and reals that overflow a double.
 *   "not a JSON object"   valid JSON but not an object (array, string, ...).
 *   "no key field"        the object has no field key_field (detail names it).
 *   "key is null"         the field is JSON null (detail names it).
 *   "key is not a scalar" the field is an object or an array.
 *   "line too long"       longer than max_line_bytes (without '\n' and a
 *                         trailing '\r'). Such a line is never buffered whole:
 *                         the reader skips to its newline, keeping only the
 *                         first EDDY__SOURCE_RAW_MAX bytes for raw.
 *   "nesting too deep"    more than max_depth nested arrays/objects (the
 *                         top-level object is depth 1), found by a scan of the
 *                         brackets outside strings before the parser runs, so
 *                         a hostile line cannot make the parser recurse deeply.
 *                         jansson parses at most 2048 levels, counting the
 *                         innermost value: with a max_depth above 2047, a line
 *                         as deep gives "not JSON" ("maximum parsing depth
 *                         reached").
 *
 * Duplicate field names are accepted and the last one wins (jansson's default),
 * also for key_field. A UTF-8 byte order mark is not skipped: a file starting
 * with one has "not JSON" as its first line.
 *
 * Optimizations not taken: inputs are malloc'ed one by one (no freelist; they
 * are freed on the loop thread, so a freelist would need its own lock), and
 * lines are parsed on the one reader thread.
 */
#ifndef EDDY_IO_SOURCE_H
#define EDDY_IO_SOURCE_H

#include <stdint.h>
#include <uv.h>
#include <jansson.h>

#include "eddy/eddy.h"
#include "util/queue.h"

typedef struct eddy__input {
    eddy__queue node;    /* owned by whoever holds the input */
    uint64_t line_no;    /* 1-based line number in the source */
    uint64_t end_offset; /* byte offset just past this line's newline (end of file
                          * for a last line without one): where a resume starts */
    json_t *record;      /* the parsed object; NULL for a bad line */
    char *key;           /* the key as compact JSON text ("\"u1\"", "42"); NULL for a bad line */
    size_t key_len;      /* strlen(key) */
    uint64_t key_hash;   /* eddy__map_hash(key, key_len), made by the reader */
    uint64_t seq;        /* the key's run sequence number, assigned at admission */
    /* For a bad line only: */
    const char *reason; /* static text, one of the reasons listed above */
    char *detail;       /* allocated detail (the parser's message), may be NULL */
    char *raw;          /* the raw line without "\n" and trailing "\r", NUL-terminated
                         * (the line itself may hold NUL bytes: use raw_len); at most
                         * EDDY__SOURCE_RAW_MAX bytes, detail says when truncated */
    size_t raw_len;
} eddy__input;

/* Free an input and everything it holds. NULL is a no-op. Any thread. */
void eddy__input_free(eddy__input *in);

/* raw keeps at most this many bytes of a bad line. */
#define EDDY__SOURCE_RAW_MAX 4096

/* Defaults used for a 0 in the options. */
#define EDDY__SOURCE_DEFAULT_CAPACITY  4096
#define EDDY__SOURCE_DEFAULT_MAX_LINE  (16u << 20)
#define EDDY__SOURCE_DEFAULT_MAX_DEPTH 128

/* Results of eddy__source_decode_line(). */
#define EDDY__LINE_OK    0 /* a good input: record and key set */
#define EDDY__LINE_BAD   1 /* a bad line: reason, detail and raw set */
#define EDDY__LINE_BLANK 2 /* empty or only spaces, tabs, CR: not an input, out untouched */

/*
 * Decode one line (without its '\n'; a trailing '\r' is not stripped here and
 * counts as whitespace) into out: record and key for a good line; reason,
 * detail and raw for a bad one. Does not set node, line_no or end_offset and
 * does not check the line length. Pure: no threads, no I/O (the fuzz target
 * calls it directly). max_depth 0 means EDDY__SOURCE_DEFAULT_MAX_DEPTH.
 * Returns EDDY__LINE_OK, EDDY__LINE_BAD, EDDY__LINE_BLANK, or EDDY_ENOMEM
 * (out then holds nothing to free), also when jansson's parser failed for
 * want of memory (util/jalloc.h): a line is bad for its text only. Any
 * thread.
 */
int eddy__source_decode_line(const char *line, size_t len, const char *key_field,
                             unsigned max_depth, eddy__input *out);

typedef struct eddy__source eddy__source;

/* Called on the loop thread when inputs are available (or end of input or a
 * read error happened). The callback calls eddy__source_take(). */
typedef void (*eddy__source_ready_fn)(void *arg);

typedef struct eddy__source_opts {
    const char *path; /* NULL or "-" means stdin (not closed by close()) */
    /* With has_fd: path opened already (read-only), fd taken by the source
     * (closed by close(), and by a failed open). A FIFO's open waits for a
     * writer: the runtime opens the input so, before it creates the state
     * or cuts the outputs. */
    int has_fd, fd;
    const char *key_field; /* top-level field holding the key; required */
    uint64_t start_offset; /* byte offset to start at (resume); 0 from the start.
                            * A regular file seeks; a pipe or terminal reads and
                            * drops that many bytes. */
    uint64_t start_line;   /* line number of the line at start_offset, minus one;
                            * at the end of a complete last line that had no
                            * newline (the byte before is no newline), its number:
                            * the newline that ends it starts no line */
    /* With start_offset > 0: the head (see eddy__source_head) of the input
     * the state was reading, to refuse another one; head_len 0: unknown. A
     * regular file is checked at open (EDDY_ESTATE, type "state"), as is one
     * shorter than start_offset or where start_offset does not start a line
     * (the byte before it is not a newline, nor is the one at it, nor is it
     * the end); a pipe as its first bytes are dropped (the source's error,
     * type "state"). */
    uint64_t head_len, head_hash;
    /* A last line without a newline that is not complete JSON, or is over
     * max_line_bytes, is left unread (see eddy__source_tail) rather than
     * dead-lettered: with a state directory the next run resumes before it,
     * and a writer may be in the middle of appending it. */
    int keep_tail;
    size_t max_line_bytes; /* longer lines are dead-lettered, never buffered whole;
                            * 0: EDDY__SOURCE_DEFAULT_MAX_LINE */
    unsigned max_depth;    /* deeper JSON nesting is dead-lettered;
                            * 0: EDDY__SOURCE_DEFAULT_MAX_DEPTH */
    size_t capacity;       /* queue capacity in inputs; 0: EDDY__SOURCE_DEFAULT_CAPACITY */
} eddy__source_opts;

/* Open the source and start its reader thread (loop thread). opts and the
 * strings in it are borrowed for the call only. ready(arg) is called on the
 * loop thread as described in the design notes.
 * Errors: EDDY_EINVAL (NULL key_field), EDDY_EIO (the file cannot be opened,
 * is a directory, or cannot seek to start_offset; the message names the file
 * and the cause), EDDY_ENOMEM. On failure *err (when err is not NULL) is set
 * to a new error, *out is NULL and nothing is left on the loop, except when
 * starting the thread fails: then the loop must run once more to free the
 * async handle, as after close(). Opening a FIFO blocks until a writer opens
 * it, as open(2) does. */
int eddy__source_open(eddy__source **out, uv_loop_t *loop, const eddy__source_opts *opts,
                      eddy__source_ready_fn ready, void *arg, eddy_error **err);

/* Move up to max parsed inputs (in source order) to the tail of out; returns
 * how many were moved (loop thread). The inputs become the caller's, to free
 * with eddy__input_free(). O(moved). Wakes a reader waiting for room once the
 * queue is down to half its capacity. */
size_t eddy__source_take(eddy__source *s, eddy__queue *out, size_t max);

/*
 * Hand an input back for the reader thread to free (loop thread). The reader
 * allocated it and its record; glibc's free() of another thread's memory
 * takes that thread's arena lock, which the reader holds while it parses, so
 * freeing on the reader side avoids the contention. The input may still hold
 * its record; the reader drops that reference. After the reader finished,
 * the input is freed at once.
 */
void eddy__source_recycle(eddy__source *s, eddy__input *in);

/* 1 when the reader reached the end of input (or failed) and the queue is
 * empty (loop thread). */
int eddy__source_done(eddy__source *s);

/* The read error that ended the input, or NULL (borrowed, valid until close;
 * loop thread). Set before done() becomes 1. Type "io" (EDDY_EIO: the message
 * names the file and the cause; also a regular file truncated while read,
 * found shorter than the bytes read or than it was seen to be, by an fstat
 * after each read and at the end of the input: the lines read before stay
 * taken, the bytes of that read are not parsed), "nomem", or "state" (a
 * resume on a pipe, see head_len). A file that grew when a read found its
 * end is read on. */
const eddy_error *eddy__source_error(const eddy__source *s);

/* Stop the reader and free everything. NULL is a no-op. The loop must run once
 * more afterwards for the async handle's close callback. */
void eddy__source_close(eddy__source *s);

/* Counters for tests and diagnostics (loop thread). */
/* The bytes that tell one input from another: the first line's first
 * EDDY__SOURCE_HEAD_MAX bytes (without its "\n"). A resume checks them, and,
 * when the line is shorter, that the line still ends there: lines may be
 * added at the end of an input, never changed before the position. */
#define EDDY__SOURCE_HEAD_MAX 4096

/* Loop thread: 1 and the head's length and hash once the first line of an
 * input read from its start was read (always before that line is taken),
 * else 0. */
int eddy__source_head(eddy__source *s, uint64_t *len, uint64_t *hash);

/* Loop thread, once done: the line number and length of a last line left
 * unread (opts keep_tail) and 1 (it is not complete JSON) or 2 (it is over
 * max_line_bytes, a '\r' aside: its end was not read), else 0. */
int eddy__source_tail(eddy__source *s, uint64_t *line, uint64_t *bytes);

typedef struct eddy__source_stats {
    size_t queued;     /* inputs in the queue now */
    size_t high_water; /* most inputs the queue ever held */
    uint64_t lines;    /* lines the reader has consumed (good, bad and blank), as of
                        * its last push: at most capacity + one batch ahead of take() */
} eddy__source_stats;

void eddy__source_get_stats(eddy__source *s, eddy__source_stats *out);

#endif /* EDDY_IO_SOURCE_H */
