/*
 * JSONL sink: a buffered line writer for the output and the dead-letter file.
 * Runs on the mailbox thread. Lines are buffered and written with write(2)
 * when the buffer fills and at the end of each loop turn (eddy__sink_flush),
 * so one turn's outputs cost one system call.
 */
#ifndef EDDY_IO_SINK_H
#define EDDY_IO_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "eddy/eddy.h"

typedef struct eddy__sink eddy__sink;

/* Lines are encoded by eddy__json_write (util/jsonw.h): compact, each real
 * with the fewest significant digits that read back to the same double, so
 * that a consumer gets the value the agent sent (0.1 is "0.1", 0.1 + 0.2 is
 * "0.30000000000000004"). */

enum {
    EDDY_SINK_STDOUT = 1, /* path "-" means standard output */
    EDDY_SINK_STDERR = 2, /* path "-" means standard error */
    EDDY_SINK_LAZY = 4    /* a file not there is made only when a first line is written */
};

/*
 * Open path for appending lines (created with mode 0644). how is
 * EDDY_SINK_STDOUT or EDDY_SINK_STDERR, for "-", with EDDY_SINK_LAZY when a
 * file that is not there is to be created by the first flush that has lines
 * for it, rather than now (a file that is there is opened at once).
 * With truncate_to >= 0 the file is cut back to that length first (resume);
 * a file shorter than that is an error (EDDY_ESTATE): it was changed behind
 * eddy's back (so is a file that is gone when truncate_to > 0, which is
 * then not made). With
 * truncate_to == -1 an existing file is truncated to empty. With
 * truncate_to == -2 the file is appended to as it is, unless its last byte
 * is not a newline (a partial line, which the first line would join):
 * refused (EDDY_EIO, naming the file and what to do).
 * A regular file is locked (flock, exclusive, without waiting) before it
 * is cut, and stays locked until the sink is closed: one another process
 * holds is refused (EDDY_EIO, "another process holds a lock on it"), and
 * the lazy file's first flush fails the same way.
 * "-" means the standard stream given by how, and a path that names eddy's
 * stdout or stderr means that stream (eddy__paths_std_stream), whatever
 * truncate_to: it is
 * written from where it stands, never truncated or moved, and its offset
 * starts at that position. The sink writes to a duplicate of it
 * (close-on-exec) made now, so fd 1 or 2 may be pointed elsewhere after.
 */
int eddy__sink_open(eddy__sink **out, const char *path, int how, int64_t truncate_to,
                    eddy_error **err);
/* 1 when path is a regular file whose last byte is not a newline (one
 * that eddy__sink_open() with truncate_to -2 refuses), else 0. */
int eddy__sink_partial_line(const char *path);
/* Append a line (a newline is added). Buffered. EDDY_OK or EDDY_EIO/EDDY_ENOMEM. */
int eddy__sink_write(eddy__sink *s, const char *line, size_t len);
/* Append the compact JSON encoding of v as a line. */
int eddy__sink_write_json(eddy__sink *s, const json_t *v);
/* Write buffered lines out. EDDY_OK or EDDY_EIO (details in eddy__sink_error),
 * also without writing when the file (a regular file opened by path) is
 * shorter than what was written to it: it was truncated behind eddy. */
int eddy__sink_flush(eddy__sink *s);
/* Flush and fdatasync (a no-op for a terminal or pipe). Then a file opened
 * by path must still be the one at that path (not removed, renamed or
 * replaced: st_dev and st_ino) and hold what was written to it, or
 * EDDY_EIO: its length must not be committed as delivered. */
int eddy__sink_sync(eddy__sink *s);
/* Bytes written so far, including buffered ones (the file's length once flushed). */
uint64_t eddy__sink_offset(const eddy__sink *s);
/* Lines written out whole so far (write(2) took them), not those still
 * buffered or left unwritten by a failed write: what the summary counts. */
uint64_t eddy__sink_lines(const eddy__sink *s);
/* How many bytes before a length eddy__sink_tail_hash() takes in. */
#define EDDY_SINK_TAIL 64
/* A fingerprint of the file's content before its length (the sink's
 * offset, once flushed): a hash of the length and of the last
 * EDDY_SINK_TAIL bytes before it (all of them when fewer). 0 when there is
 * none: a standard stream, what is not
 * a regular file, lines still buffered, a file that cannot be opened for
 * reading or is no longer at the sink's path, a failed read. One pread(2)
 * (and at the first call an open(2) of the path for reading). */
uint64_t eddy__sink_tail_hash(eddy__sink *s);
/* The same of the bytes before end in the file open as fd (0 when they
 * cannot all be read). */
uint64_t eddy__sink_fd_tail_hash(int fd, uint64_t end);
/* 1 when the sink is a regular file (its position is meaningful). */
int eddy__sink_is_file(const eddy__sink *s);
/* Text of the last write error, borrowed ("" when none). */
const char *eddy__sink_error(const eddy__sink *s);
/* The path as given ("-" for a standard stream). */
const char *eddy__sink_path(const eddy__sink *s);
/* Flush and close (for a standard stream, the sink's duplicate of it: the
 * stream itself stays open). NULL is a no-op. */
int eddy__sink_close(eddy__sink *s);

#endif /* EDDY_IO_SINK_H */
