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
 * When the queue goes from empty to non-empty it wakes the loop with
 * uv_async_send(); the loop's callback calls the user's ready callback, which
 * takes as many inputs as it can admit with eddy__source_take(). When the queue
 * is full the reader waits on a condition variable until take() makes room:
 * that is the back-pressure, nothing is read faster than the loop admits.
 *
 * Lock order: a single mutex guards the queue; the loop never blocks on it for
 * longer than a list splice.
 *
 * Shutdown: eddy__source_close() tells the reader to stop, wakes it, joins it
 * (a reader blocked in read() on a terminal or pipe is woken by closing... see
 * the implementation), frees queued inputs and closes the async handle.
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
    uint64_t end_offset; /* byte offset just past this line's newline */
    json_t *record;      /* the parsed object; NULL for a bad line */
    char *key;           /* the key as compact JSON text ("\"u1\"", "42"); NULL for a bad line */
    /* For a bad line only: */
    const char *reason; /* static text: "not JSON: ...", "no key field", ... */
    char *detail;       /* allocated detail (the parser's message), may be NULL */
    char *raw;          /* the raw line (without newline), may be truncated for huge lines */
    size_t raw_len;
} eddy__input;

void eddy__input_free(eddy__input *in);

typedef struct eddy__source eddy__source;

/* Called on the loop thread when inputs are available (or end of input or a
 * read error happened). The callback calls eddy__source_take(). */
typedef void (*eddy__source_ready_fn)(void *arg);

typedef struct eddy__source_opts {
    const char *path;      /* NULL or "-" means stdin */
    const char *key_field; /* top-level field holding the key */
    uint64_t start_offset; /* byte offset to start at (resume); 0 from the start */
    uint64_t start_line;   /* line number of the line at start_offset, minus one */
    size_t max_line_bytes; /* longer lines are dead-lettered, never buffered whole */
    unsigned max_depth;    /* deeper JSON nesting is dead-lettered */
    size_t capacity;       /* queue capacity in inputs */
} eddy__source_opts;

/* Open the source and start its reader thread. On failure returns an error
 * code and sets *err (new) naming the file. */
int eddy__source_open(eddy__source **out, uv_loop_t *loop, const eddy__source_opts *opts,
                      eddy__source_ready_fn ready, void *arg, eddy_error **err);

/* Move up to max parsed inputs (in source order) to the tail of out; returns
 * how many were moved (loop thread). */
size_t eddy__source_take(eddy__source *s, eddy__queue *out, size_t max);

/* 1 when the reader reached the end of input (or failed) and the queue is empty. */
int eddy__source_done(eddy__source *s);

/* The read error that ended the input, or NULL (borrowed). */
const eddy_error *eddy__source_error(const eddy__source *s);

/* Stop the reader and free everything. NULL is a no-op. The loop must run once
 * more afterwards for the async handle's close callback. */
void eddy__source_close(eddy__source *s);

#endif /* EDDY_IO_SOURCE_H */
