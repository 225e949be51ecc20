#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/paths.h"
#include "io/sink.h"
#include "io/wait.h"
#include "util/jsonw.h"
#include "util/fault.h"
#include "util/forkfd.h"
#include "util/hash.h"

#define SINK_BUF (256 * 1024)

struct eddy__sink {
    int fd;
    int std; /* a standard stream ("-"): fd is the sink's duplicate of it */
    int how; /* EDDY_SINK_* as opened */
    int is_file;
    int named; /* had a name (a link) when opened: its removal is noticed */
    uint64_t offset;
    uint64_t synced; /* offset at the last sync (UINT64_MAX: none yet) */
    uint64_t lines;  /* lines handed to write(2) whole */
    uint64_t queued; /* lines in buf, whole or in part */
    char *buf;
    size_t len, cap;
    char *path;
    char *abspath;    /* path made absolute (not resolved): checked at each sync */
    const char *name; /* in messages: path, or the standard stream's name */
    char errtext[1024];
    /* The file opened for reading too (fd may not read), for the
     * fingerprint of its content: on first use, when rfd_open. */
    int rfd;
    int rfd_open;
};

/* What the sink needs to know of its file, from st (fstat's, 0 when it
 * succeeded): whether it is a regular file, and whether it had a name. */
static void note_file(eddy__sink *s, int st_rc, const struct stat *st)
{
    s->is_file = st_rc == 0 && S_ISREG(st->st_mode);
    s->named = s->is_file && st->st_nlink > 0; /* not /dev/stdout on an O_TMPFILE, say */
}

/* path, absolute when it was relative (an agent may change the working
 * directory); NULL when out of memory. */
static char *absolute(const char *path)
{
    char cwd[PATH_MAX];
    if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
        return strdup(path);
    size_t n = strlen(cwd) + 1 + strlen(path) + 1;
    char *abs = malloc(n);
    if (abs != NULL)
        snprintf(abs, n, "%s/%s", cwd, path);
    return abs;
}

/* The option that names the file, in messages. */
static const char *sink_option(int how)
{
    return how & EDDY_SINK_STDERR ? "--dead-letter" : "--output";
}

/*
 * An exclusive lock on a regular file the sink writes (advisory: flock, as
 * the state directory's LOCK), taken before the file is cut, so that a
 * second eddy given the same file fails here instead of emptying it under
 * the first, whose lines would be lost. A standard stream, a FIFO or a
 * device is not locked. 0, EWOULDBLOCK when another open file holds it, or
 * another errno (a filesystem without locks, ENOLCK or EOPNOTSUPP, is let
 * be: 0).
 */
static int sink_lock(eddy__sink *s)
{
    if (!s->is_file)
        return 0;
    int r;
    while ((r = flock(s->fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
        ;
    if (r == 0)
        eddy__forkfd_add(s->fd); /* a child the agent forks must not keep it */
    if (r == 0 || errno == ENOLCK || errno == EOPNOTSUPP)
        return 0;
    return errno;
}

static void lock_message(char *buf, size_t size, const char *path, int how, int e)
{
    if (e == EWOULDBLOCK)
        snprintf(buf, size,
                 "cannot write to %s: another process holds a lock on it (another eddy "
                 "writing its %s there?); give another %s, or run this once that process has "
                 "ended",
                 path, how & EDDY_SINK_STDERR ? "dead letters" : "outputs", sink_option(how));
    else
        snprintf(buf, size, "cannot lock %s: %s", path, strerror(e));
}

/* Whether the last byte of the file at path (size bytes) is a newline, or
 * it cannot be read (the sink's descriptor may not read): not refused for
 * what cannot be looked at. */
static int ends_a_line(const char *path, off_t size)
{
    if (size <= 0)
        return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    char last = '\n';
    if (fd >= 0 && pread(fd, &last, 1, size - 1) != 1)
        last = '\n';
    if (fd >= 0)
        close(fd);
    return last == '\n';
}

int eddy__sink_partial_line(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && !ends_a_line(path, st.st_size);
}

int eddy__sink_open(eddy__sink **out, const char *path, int how, int64_t truncate_to,
                    eddy_error **err)
{
    *out = NULL;
    eddy__sink *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return EDDY_ENOMEM;
    s->fd = -1; /* none yet: closing s closes nothing */
    s->how = how;
    s->cap = SINK_BUF;
    s->synced = UINT64_MAX;
    s->buf = malloc(s->cap);
    s->path = strdup(path);
    if (s->buf == NULL || s->path == NULL) {
        eddy__sink_close(s);
        return EDDY_ENOMEM;
    }
    /* "-", or a path that names the stream (/dev/stdout, the file stdout
     * was redirected to): opening the path anew would cut or rewind what
     * the shell gave (`>>`), so it is written as "-" is. */
    int std_fd =
        eddy__paths_std_stream(path, how & EDDY_SINK_STDERR ? STDERR_FILENO : STDOUT_FILENO);
    if (std_fd >= 0) {
        /* A duplicate, close-on-exec: the lines go where the stream went at
         * open, whatever fd 1 or 2 is made later (the eddy command points fd
         * 1 at stderr while it writes its output to stdout, so that what
         * agents print does not end up among the lines), and no program an
         * agent starts inherits it. The open file description is the same:
         * its position and O_APPEND are shared with the shell's. */
        s->std = 1;
        s->name = strcmp(path, "-") != 0    ? s->path
                  : std_fd == STDERR_FILENO ? "standard error"
                                            : "standard output";
        s->fd = fcntl(std_fd, F_DUPFD_CLOEXEC, 3);
        /* A closed stream fails the first write, as writing to it would
         * (a run with nothing to write there succeeds). */
        if (s->fd < 0 && errno != EBADF) {
            int rc = eddy__error_set(err, EDDY_EIO, "io", "cannot write to %s: %s", s->name,
                                     strerror(errno));
            eddy__sink_close(s);
            return rc;
        }
    } else {
        s->name = s->path;
        if ((s->abspath = absolute(path)) == NULL) {
            eddy__sink_close(s);
            return EDDY_ENOMEM;
        }
        /* A file the state says holds lines is not made when it is gone:
         * that is refused below, and must leave nothing behind. */
        /* Never O_TRUNC: the file is cut only once it is locked (below). */
        int flags = O_WRONLY | O_CLOEXEC | (how & EDDY_SINK_LAZY || truncate_to > 0 ? 0 : O_CREAT);
        /* A FIFO's open waits for its reader: a wait a stop must be able to end. */
        s->fd = eddy__wait_open(path, flags, 0644, EDDY_WAIT_OPEN_WRITE);
        if (s->fd < 0 && errno == ENOENT && (how & EDDY_SINK_LAZY || truncate_to > 0)) {
            if (truncate_to > 0) {
                eddy__sink_close(s);
                return eddy__error_set(
                    err, EDDY_ESTATE, "state",
                    "%s is gone but the state says %lld bytes were committed to it: the file "
                    "was removed or moved outside eddy; put it back (restore it) or start with a "
                    "new --state directory",
                    path, (long long)truncate_to);
            }
            /* Not there: the first flush makes it (sink_create), empty. */
            s->fd = -1;
            *out = s;
            return EDDY_OK;
        }
        if (s->fd < 0) {
            int e = errno;
            eddy__sink_close(s);
            return eddy__error_set(err, EDDY_EIO, "io", "cannot open %s for writing: %s", path,
                                   strerror(e));
        }
    }
    struct stat st;
    note_file(s, fstat(s->fd, &st), &st);
    int lock_err = s->std ? 0 : sink_lock(s);
    if (lock_err != 0) {
        lock_message(s->errtext, sizeof(s->errtext), path, how, lock_err);
        int rc = eddy__error_set(err, EDDY_EIO, "io", "%s", s->errtext);
        eddy__sink_close(s);
        return rc;
    }
    if (s->is_file) {
        if (s->std) {
            /* A standard stream is the shell's: written from where it
             * stands, never cut or moved (`>` emptied it already, `>>`
             * appends, and in `(echo header; eddy ...) >log 2>&1` both
             * streams go on after "header"). Its offset starts there. */
            int fl = fcntl(s->fd, F_GETFL);
            off_t pos = fl != -1 && (fl & O_APPEND) ? st.st_size : lseek(s->fd, 0, SEEK_CUR);
            s->offset = pos > 0 ? (uint64_t)pos : 0;
        } else if (truncate_to >= 0) {
            if ((uint64_t)st.st_size < (uint64_t)truncate_to) {
                eddy__sink_close(s);
                return eddy__error_set(
                    err, EDDY_ESTATE, "state",
                    "%s holds %lld bytes but the state says %lld were committed to it: the file "
                    "was changed outside eddy (truncated, or rotated in place?); restore it (put "
                    "back what it held) or start with a new --state directory",
                    path, (long long)st.st_size, (long long)truncate_to);
            }
            if (ftruncate(s->fd, truncate_to) != 0) {
                int e = errno;
                eddy__sink_close(s);
                return eddy__error_set(err, EDDY_EIO, "io", "cannot truncate %s: %s", path,
                                       strerror(e));
            }
            s->offset = (uint64_t)truncate_to;
        } else if (truncate_to == -2) {
            /* Appended to as it is: after a last line that has no newline
             * (a copy taken while a writer was at it), this run's first
             * line would join it, one line that is neither. */
            if (!ends_a_line(path, st.st_size)) {
                eddy__sink_close(s);
                return eddy__error_set(
                    err, EDDY_EIO, "io",
                    "%s ends in a partial line (its last byte, at %lld, is not a newline): "
                    "eddy appends its lines to it and its first would join that one; end the "
                    "file with a newline (echo >> %s) or cut the partial line off, or give "
                    "another %s",
                    path, (long long)st.st_size - 1, path, sink_option(how));
            }
            s->offset = (uint64_t)st.st_size;
        } else if (ftruncate(s->fd, 0) != 0) { /* -1: emptied, now that it is locked */
            int e = errno;
            eddy__sink_close(s);
            return eddy__error_set(err, EDDY_EIO, "io", "cannot truncate %s: %s", path,
                                   strerror(e));
        }
        if (!s->std && lseek(s->fd, (off_t)s->offset, SEEK_SET) < 0) {
            int e = errno;
            eddy__sink_close(s);
            return eddy__error_set(err, EDDY_EIO, "io", "cannot seek in %s: %s", path, strerror(e));
        }
    }
    *out = s;
    return EDDY_OK;
}

static void cut_message(eddy__sink *s, uint64_t size, uint64_t written)
{
    snprintf(s->errtext, sizeof(s->errtext),
             "%s was truncated while eddy wrote it: it holds %llu bytes, eddy had written %llu "
             "(rotated in place, as logrotate's copytruncate does?), and its lines past them are "
             "not delivered; do not truncate or rotate it while eddy runs: put back what it held "
             "(the copy rotated out) and run the same command again",
             s->name, (unsigned long long)size, (unsigned long long)written);
}

/* The file of a lazy sink, made when its first lines are written. It was
 * not there at open, so the lines start at offset 0 of an empty file. */
static int sink_create(eddy__sink *s)
{
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        snprintf(s->errtext, sizeof(s->errtext), "cannot open %s for writing: %s", s->name,
                 strerror(errno));
        return EDDY_EIO;
    }
    struct stat st;
    note_file(s, fstat(s->fd, &st), &st);
    /* Made since the open by someone else, maybe another eddy: locked
     * first, then emptied. */
    int e = sink_lock(s);
    if (e != 0)
        lock_message(s->errtext, sizeof(s->errtext), s->path, s->how, e);
    else if (s->is_file && ftruncate(s->fd, 0) != 0)
        snprintf(s->errtext, sizeof(s->errtext), "cannot truncate %s: %s", s->name,
                 strerror(errno));
    else
        return EDDY_OK;
    eddy__forkfd_remove(s->fd);
    close(s->fd); /* not written: the next flush tries again */
    s->fd = -1;
    return EDDY_EIO;
}

int eddy__sink_flush(eddy__sink *s)
{
    size_t done = 0;
    if (s->fd < 0 && s->len > 0) {
        if (s->std) {
            snprintf(s->errtext, sizeof(s->errtext), "cannot write to %s: %s", s->name,
                     strerror(EBADF));
            return EDDY_EIO;
        }
        if (sink_create(s) != EDDY_OK)
            return EDDY_EIO;
    }
    /* A file cut shorter than what was written to it (`: > out`, logrotate's
     * copytruncate) would take the next lines at eddy's offset, after a run
     * of NUL bytes where the lost lines were: nothing more is written. */
    struct stat st;
    uint64_t written = s->offset - s->len;
    if (s->len > 0 && s->is_file && !s->std && fstat(s->fd, &st) == 0 &&
        (uint64_t)st.st_size < written) {
        cut_message(s, (uint64_t)st.st_size, written);
        return EDDY_EIO;
    }
    /* A pipe, FIFO or terminal takes the lines as fast as its reader reads:
     * a write may wait for as long as that reader chooses. */
    int marked = !s->is_file && s->len > 0;
    if (marked)
        eddy__wait_begin(s->how & EDDY_SINK_STDERR ? EDDY_WAIT_WRITE_DEAD_LETTER
                                                   : EDDY_WAIT_WRITE_OUTPUT,
                         s->name);
    while (done < s->len) {
        int fault = eddy__fault("sink_write.write"); /* test hook: errno to simulate */
        ssize_t n = fault ? (errno = fault, -1) : write(s->fd, s->buf + done, s->len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(s->errtext, sizeof(s->errtext), "cannot write to %s: %s", s->name,
                     strerror(errno));
            /* Keep what was not written, so nothing is silently dropped.
             * The lines that went out whole count as written; one cut
             * short counts once its rest goes out. */
            for (const char *p = s->buf, *end = s->buf + done;
                 (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
                s->lines++;
                s->queued--;
            }
            memmove(s->buf, s->buf + done, s->len - done);
            s->len -= done;
            if (marked)
                eddy__wait_end();
            return EDDY_EIO;
        }
        done += (size_t)n;
    }
    if (marked)
        eddy__wait_end();
    s->len = 0;
    s->lines += s->queued;
    s->queued = 0;
    return EDDY_OK;
}

int eddy__sink_write(eddy__sink *s, const char *line, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        if (s->len > 0 && eddy__sink_flush(s) != EDDY_OK)
            return EDDY_EIO;
        if (len + 1 > s->cap) {
            size_t ncap = len + 1;
            char *nb = realloc(s->buf, ncap);
            if (nb == NULL)
                return EDDY_ENOMEM;
            s->buf = nb;
            s->cap = ncap;
        }
    }
    memcpy(s->buf + s->len, line, len);
    s->buf[s->len + len] = '\n';
    s->len += len + 1;
    s->offset += len + 1;
    s->queued++;
    return EDDY_OK;
}

int eddy__sink_write_json(eddy__sink *s, const json_t *v)
{
    if (s->len >= s->cap / 2 && eddy__sink_flush(s) != EDDY_OK)
        return EDDY_EIO;
    eddy__buf b = {.p = s->buf, .len = s->len, .cap = s->cap};
    int rc = eddy__json_write(&b, v);
    if (rc == EDDY_OK)
        rc = eddy__buf_reserve(&b, 1);
    s->buf = b.p; /* the buffer may have grown even on failure */
    s->cap = b.cap;
    if (rc != EDDY_OK)
        return rc;
    b.p[b.len++] = '\n';
    s->offset += b.len - s->len;
    s->len = b.len;
    s->queued++;
    return EDDY_OK;
}

/* 1 when path, opened, is the file st is of (fstat against fstat: some
 * file systems, overlayfs on older kernels, tell another device or inode
 * to stat(2) of a path than to fstat(2) of a descriptor written through). */
static int same_file_by_name(const char *path, const struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return 0;
    struct stat r;
    int same = fstat(fd, &r) == 0 && r.st_dev == st->st_dev && r.st_ino == st->st_ino;
    close(fd);
    return same;
}

int eddy__sink_sync(eddy__sink *s)
{
    int rc = eddy__sink_flush(s);
    if (rc != EDDY_OK)
        return rc;
    if (!s->is_file || s->offset == s->synced)
        return EDDY_OK; /* nothing written since the last sync (the dead-letter file, mostly) */
    int fault = eddy__fault("sink_write.sync"); /* test hook: errno to simulate */
    if ((fault ? (errno = fault, -1) : fdatasync(s->fd)) != 0) {
        snprintf(s->errtext, sizeof(s->errtext), "cannot sync %s: %s", s->name, strerror(errno));
        return EDDY_EIO;
    }
    /* A file removed while eddy wrote it keeps taking lines that no one
     * will read: its length must not be committed as delivered. */
    struct stat st, at;
    if (!s->std && s->named && fstat(s->fd, &st) == 0) {
        if (st.st_nlink == 0) {
            snprintf(s->errtext, sizeof(s->errtext),
                     "%s was removed while eddy wrote it (its lines since the last sync are not "
                     "delivered)",
                     s->name);
            return EDDY_EIO;
        }
        /* Cut since the last flush: what it lacks must not count either. */
        if ((uint64_t)st.st_size < s->offset) {
            cut_message(s, (uint64_t)st.st_size, s->offset);
            return EDDY_EIO;
        }
        /* Moved (`mv out out.1`), or another file put at its path: the
         * lines go on to a file no reader looks for at that path, and the
         * next run would not find them. */
        int gone = stat(s->abspath, &at) != 0 ? errno : 0;
        if (gone != 0 && gone != ENOENT && gone != ENOTDIR) {
            /* Not known to be gone (a directory made unreadable, a network
             * file system's error): not known to be there either. */
            snprintf(s->errtext, sizeof(s->errtext),
                     "cannot check that %s still names the file eddy writes: %s (its lines since "
                     "the last sync are not delivered)",
                     s->name, strerror(gone));
            return EDDY_EIO;
        }
        if (gone != 0 || ((at.st_dev != st.st_dev || at.st_ino != st.st_ino) &&
                          !same_file_by_name(s->abspath, &st))) {
            snprintf(s->errtext, sizeof(s->errtext),
                     "%s was renamed or replaced while eddy wrote it: the path no longer names "
                     "the file eddy writes, which took its lines since the last sync (not "
                     "delivered); do not move or rotate it while eddy runs: move that file back "
                     "to %s and run the same command again",
                     s->name, s->name);
            return EDDY_EIO;
        }
    }
    int e = 0;
    /* The first time, the file's directory entry too: a file created by
     * this run is found after a power cut only once that is on disk
     * (filesystems that cannot sync a directory, EINVAL, need not). A
     * standard stream's directory is the shell's business ("-" names none). */
    if (s->synced == UINT64_MAX && !s->std) {
        e = (e = eddy__fault("sink_write.dirsync")) != 0 ? e : eddy__paths_sync_parent(s->path);
        if (e == EINVAL)
            e = 0;
    }
    if (e != 0) {
        snprintf(s->errtext, sizeof(s->errtext), "cannot sync the directory of %s: %s", s->name,
                 strerror(e));
        return EDDY_EIO;
    }
    s->synced = s->offset;
    return EDDY_OK;
}

uint64_t eddy__sink_offset(const eddy__sink *s)
{
    return s->offset;
}

uint64_t eddy__sink_lines(const eddy__sink *s)
{
    return s->lines;
}

uint64_t eddy__sink_fd_tail_hash(int fd, uint64_t end)
{
    char buf[EDDY_SINK_TAIL];
    size_t want = end < sizeof(buf) ? (size_t)end : sizeof(buf), got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)(end - want + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    /* With the length: a fingerprint recorded with another length (by an
     * older eddy that kept the length and not the fingerprint) never
     * matches. */
    uint64_t h = eddy__mix64(eddy__hash_bytes(buf, want) ^ end);
    return h != 0 ? h : 1;
}

uint64_t eddy__sink_tail_hash(eddy__sink *s)
{
    if (s->std || !s->is_file || s->fd < 0 || s->len > 0)
        return 0;
    if (!s->rfd_open) {
        /* By its name, so it must be the file written: one renamed or
         * replaced since has no fingerprint (and is not tried again at
         * every sync). Without blocking: the name may be a FIFO by now. */
        struct stat w, r;
        int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0 && (fstat(s->fd, &w) != 0 || fstat(fd, &r) != 0 || w.st_dev != r.st_dev ||
                        w.st_ino != r.st_ino)) {
            close(fd);
            fd = -1;
        }
        s->rfd = fd;
        s->rfd_open = 1;
    }
    return s->rfd >= 0 ? eddy__sink_fd_tail_hash(s->rfd, s->offset) : 0;
}

int eddy__sink_is_file(const eddy__sink *s)
{
    return s->is_file;
}

const char *eddy__sink_error(const eddy__sink *s)
{
    return s->errtext;
}

const char *eddy__sink_path(const eddy__sink *s)
{
    return s->path;
}

int eddy__sink_close(eddy__sink *s)
{
    if (s == NULL)
        return EDDY_OK;
    int rc = EDDY_OK;
    if (s->buf != NULL && s->len > 0)
        rc = eddy__sink_flush(s);
    eddy__forkfd_remove(s->fd);
    if (s->fd >= 0 && close(s->fd) != 0 && rc == EDDY_OK)
        rc = EDDY_EIO;
    if (s->rfd_open && s->rfd >= 0)
        close(s->rfd);
    free(s->buf);
    free(s->path);
    free(s->abspath);
    free(s);
    return rc;
}
