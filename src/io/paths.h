/*
 * Checks of a run's files before anything is opened for writing.
 *
 * The output and dead-letter files are cut to nothing (or to their committed
 * length) when a run starts, and the state directory is created and bound to
 * the agent's plan. Both must wait until every file of the run is known to
 * be usable: a mistyped --input must cost neither the previous output nor a
 * state directory bound to the wrong agent. And no two of the input, the
 * output and the dead-letter file may be the same regular file: an output
 * opened over the input would cut the input to nothing.
 */
#ifndef EDDY_IO_PATHS_H
#define EDDY_IO_PATHS_H

#include <sys/types.h>

#include "eddy/eddy.h"

/*
 * input, output and dead as a run takes them ("-" or NULL for the standard
 * streams: stdin, stdout, stderr). EDDY_OK, or an error that names the file:
 *   EDDY_EIO    "io": the input cannot be opened for reading or is a
 *               directory; an output cannot be created or written (the same
 *               texts as opening them would give);
 *   EDDY_EINVAL "config": two of them are the same regular file (also through
 *               a link, or a standard stream redirected to the input).
 * Nothing is created or changed.
 */
int eddy__paths_check(const char *input, const char *output, const char *dead, eddy_error **err);

/*
 * Which standard stream an output path stands for, written as "-" is
 * (from where the stream stands, never cut): dash_fd (STDOUT_FILENO or
 * STDERR_FILENO, what "-" means for it) for "-" or NULL; else the stream
 * whose open file path names (stat against fstat of fd 1 and 2, st_dev and
 * st_ino, dash_fd's first: /dev/stdout, /dev/fd/1, /proc/self/fd/1, the
 * file stdout was redirected to), but a character device that is not a
 * terminal (/dev/null); -1 when none.
 */
int eddy__paths_std_stream(const char *path, int dash_fd);

/*
 * With a state directory (state not NULL nor ""): EDDY_EINVAL ("config")
 * when the output or the dead-letter file (not "-" nor NULL) names one of
 * the state's files, eddy.db, eddy.db-* or LOCK, in it (symbolic links
 * resolved, the directory compared by st_dev and st_ino), or is one of its
 * files under another name (a hard link): writing it would damage the
 * state. Other files in the state directory are the user's. Run before
 * anything is created; a state directory that is not there yet is
 * compared by path.
 */
int eddy__paths_check_state(const char *output, const char *dead, const char *state,
                            eddy_error **err);

/* A file a run must not write: an agent's own file (plan.h). */
typedef struct eddy__file_id {
    dev_t dev;
    ino_t ino;
    char *path; /* as the caller named it */
} eddy__file_id;

/*
 * EDDY_EINVAL ("config") when the output or the dead-letter file (not "-"
 * nor NULL) is one of the n files (compared by st_dev and st_ino, so
 * through any link): an agent's module or source, which writing would
 * destroy (a C agent's module is mapped: cut, it kills eddy with SIGBUS).
 * Run before anything is created.
 */
int eddy__paths_check_files(const char *output, const char *dead, const eddy__file_id *files,
                            size_t n, eddy_error **err);

/*
 * The absolute path, without symbolic links or "." and "..", that path has,
 * or that the file it names will have once created (through a dangling
 * link too): its directory resolved, its name kept. 0, or -1 with errno
 * (the directory is not there, say). out holds PATH_MAX bytes.
 */
int eddy__paths_canonical(const char *path, char *out);

/* fsync the directory dir, so that the entries made in it survive a power
 * cut: 0, or the errno (EINVAL: the filesystem cannot sync a directory). */
int eddy__paths_sync_dir(const char *dir);
/* The same for the directory that holds path (dirname's). */
int eddy__paths_sync_parent(const char *path);

#endif /* EDDY_IO_PATHS_H */
