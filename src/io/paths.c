#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/paths.h"

typedef struct file_ref {
    const char *path; /* as given; NULL for a standard stream */
    const char *what; /* "input", "output", "dead-letter file" */
    int std_fd;       /* the standard stream it stands for */
    int exists;       /* st describes it */
    struct stat st;
    char canon[PATH_MAX]; /* not there yet: the absolute path it will have */
} file_ref;

static const char *ref_name(const file_ref *f)
{
    static const char *const std_names[] = {"standard input", "standard output", "standard error"};
    return f->path != NULL ? f->path : std_names[f->std_fd];
}

static int cannot_write(const file_ref *f, int e, eddy_error **err)
{
    /* The text eddy__sink_open gives when its open fails. */
    return eddy__error_set(err, EDDY_EIO, "io", "cannot open %s for writing: %s", f->path,
                           strerror(e));
}

/* Read, not opened: opening a named pipe would wait for its writer. */
static int check_input(file_ref *f, eddy_error **err)
{
    if (f->path == NULL) {
        f->exists = fstat(STDIN_FILENO, &f->st) == 0;
        return EDDY_OK;
    }
    if (stat(f->path, &f->st) != 0 || access(f->path, R_OK) != 0)
        return eddy__error_set(err, EDDY_EIO, "io", "cannot open %s: %s", f->path, strerror(errno));
    if (S_ISDIR(f->st.st_mode))
        return eddy__error_set(err, EDDY_EIO, "io", "cannot read %s: %s", f->path,
                               strerror(EISDIR));
    f->exists = 1;
    return EDDY_OK;
}

/* A link whose target is not there yet: where the file will be created.
 * path (at most PATH_MAX) is rewritten in place; 0, or -1 when it is not a
 * dangling link (or links too deep). */
static int follow_dangling(char *path)
{
    for (int depth = 0; depth < 8; depth++) {
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode))
            return depth > 0 ? 0 : -1;
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
            return -1;
        target[n] = '\0';
        const char *slash = strrchr(path, '/');
        if (target[0] == '/' || slash == NULL) {
            memcpy(path, target, (size_t)n + 1);
        } else { /* relative to the link's directory */
            size_t dlen = (size_t)(slash - path) + 1;
            if (dlen + (size_t)n >= PATH_MAX)
                return -1;
            memcpy(path + dlen, target, (size_t)n + 1);
        }
    }
    return -1;
}

/* A file that is there must be writable; one that is not, creatable. */
static int check_output(file_ref *f, eddy_error **err)
{
    if (f->path == NULL) {
        f->exists = fstat(f->std_fd, &f->st) == 0;
        return EDDY_OK;
    }
    if (stat(f->path, &f->st) == 0) {
        if (S_ISDIR(f->st.st_mode))
            return cannot_write(f, EISDIR, err);
        if (access(f->path, W_OK) != 0)
            return cannot_write(f, errno, err);
        f->exists = 1;
        return EDDY_OK;
    }
    if (errno != ENOENT)
        return cannot_write(f, errno, err);
    /* Created at open, through a dangling link if it is one: where then,
     * in a directory that lets us create it. */
    if (eddy__paths_canonical(f->path, f->canon) != 0) {
        int e = errno;
        f->canon[0] = '\0';
        return cannot_write(f, e, err);
    }
    char dir[PATH_MAX];
    size_t dlen = (size_t)(strrchr(f->canon, '/') - f->canon);
    memcpy(dir, f->canon, dlen != 0 ? dlen : 1);
    dir[dlen != 0 ? dlen : 1] = '\0';
    if (access(dir, W_OK | X_OK) != 0) {
        int e = errno;
        f->canon[0] = '\0';
        return cannot_write(f, e, err);
    }
    return EDDY_OK;
}

int eddy__paths_canonical(const char *path, char *out)
{
    if (realpath(path, out) != NULL)
        return 0;
    if (errno != ENOENT)
        return -1;
    char where[PATH_MAX];
    if (strlen(path) >= sizeof(where)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(where, path);
    follow_dangling(where);
    const char *slash = strrchr(where, '/');
    const char *base = slash != NULL ? slash + 1 : where;
    if (*base == '\0') {
        errno = EISDIR;
        return -1;
    }
    char dir[PATH_MAX];
    size_t dlen = slash == NULL ? 0 : slash == where ? 1 : (size_t)(slash - where);
    memcpy(dir, dlen != 0 ? where : ".", dlen != 0 ? dlen : 1);
    dir[dlen != 0 ? dlen : 1] = '\0';
    if (realpath(dir, out) == NULL)
        return -1;
    size_t clen = strlen(out), blen = strlen(base);
    if (clen + 1 + blen >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (clen > 1)
        out[clen++] = '/';
    memcpy(out + clen, base, blen + 1);
    return 0;
}

/* Only regular files: two names of one terminal or /dev/null do no harm. */
static int same_file(const file_ref *a, const file_ref *b)
{
    if (a->exists && b->exists)
        return S_ISREG(a->st.st_mode) && a->st.st_dev == b->st.st_dev &&
               a->st.st_ino == b->st.st_ino;
    return !a->exists && !b->exists && a->canon[0] != '\0' && strcmp(a->canon, b->canon) == 0;
}

/* 1 when path's file is the one open as fd. */
static int names_fd(const char *path, int fd)
{
    struct stat p, f;
    return fstat(fd, &f) == 0 && stat(path, &p) == 0 && p.st_dev == f.st_dev &&
           p.st_ino == f.st_ino && (!S_ISCHR(f.st_mode) || isatty(fd));
}

int eddy__paths_std_stream(const char *path, int dash_fd)
{
    if (path == NULL || strcmp(path, "-") == 0)
        return dash_fd;
    int other = dash_fd == STDOUT_FILENO ? STDERR_FILENO : STDOUT_FILENO;
    return names_fd(path, dash_fd) ? dash_fd : names_fd(path, other) ? other : -1;
}

/* A standard stream (path NULL) when name is "-", NULL or names one. */
static void ref_output(file_ref *f, const char *name, int dash_fd)
{
    int fd = eddy__paths_std_stream(name, dash_fd);
    f->path = fd >= 0 ? NULL : name;
    f->std_fd = fd >= 0 ? fd : dash_fd;
}

int eddy__paths_check(const char *input, const char *output, const char *dead, eddy_error **err)
{
    file_ref in = {.what = "input", .std_fd = STDIN_FILENO};
    file_ref out = {.what = "output"};
    file_ref dl = {.what = "dead-letter file"};
    in.path = input != NULL && strcmp(input, "-") != 0 ? input : NULL;
    ref_output(&out, output, STDOUT_FILENO);
    ref_output(&dl, dead, STDERR_FILENO);
    int rc;
    if ((rc = check_input(&in, err)) != EDDY_OK || (rc = check_output(&out, err)) != EDDY_OK ||
        (rc = check_output(&dl, err)) != EDDY_OK)
        return rc;
    /* stdout and stderr sent to one file (> log 2>&1) is an ordinary thing. */
    const file_ref *pairs[][2] = {{&in, &out}, {&in, &dl}, {&out, &dl}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        const file_ref *a = pairs[i][0], *b = pairs[i][1];
        if ((a->path != NULL || b->path != NULL || a == &in) && same_file(a, b))
            return eddy__error_set(err, EDDY_EINVAL, "config",
                                   "the %s (%s) is the same file as the %s (%s): %s; give the %s "
                                   "another path",
                                   b->what, ref_name(b), a->what, ref_name(a),
                                   a != &in ? "bad lines would overwrite the outputs"
                                   : b->path != NULL
                                       ? "it would be cut to nothing before it is read"
                                       : "eddy would read back what it writes",
                                   b->what);
    }
    return EDDY_OK;
}

/* The files a state directory holds (see store.h): a file that is one of
 * them under another name (a hard link) is the state too. */
static const char *const state_files[] = {"eddy.db", "eddy.db-wal", "eddy.db-shm", "LOCK"};

/* 1 when the regular file st is one of the files of the state directory. */
static int is_state_file(const char *state, const struct stat *st)
{
    char p[PATH_MAX];
    struct stat sf;
    for (size_t i = 0; i < sizeof(state_files) / sizeof(state_files[0]); i++)
        if (snprintf(p, sizeof(p), "%s/%s", state, state_files[i]) < (int)sizeof(p) &&
            stat(p, &sf) == 0 && sf.st_dev == st->st_dev && sf.st_ino == st->st_ino)
            return 1;
    return 0;
}

/* 1 when canon (absolute, resolved) names a file directly in the directory
 * sd (stat of the state directory) whose name the state uses: eddy.db and
 * SQLite's files beside it (eddy.db-wal, eddy.db-shm, eddy.db-journal) and
 * LOCK. Its directory is compared by st_dev and st_ino, so that another
 * path to it (a bind mount) is found too; without sd (no state directory
 * yet), by its canonical path scanon. Other files in the state directory
 * (an output kept beside the state, in a job's directory) are the user's. */
static int state_name(const char *canon, const struct stat *sd, const char *scanon)
{
    const char *base = strrchr(canon, '/');
    if (base == NULL)
        return 0;
    base++;
    if (strcmp(base, "LOCK") != 0 && strncmp(base, "eddy.db", 7) != 0)
        return 0;
    char dir[PATH_MAX];
    size_t n = (size_t)(base - canon) - 1;
    if (n >= sizeof(dir))
        return 0;
    memcpy(dir, canon, n == 0 ? 1 : n); /* the root keeps its '/' */
    dir[n == 0 ? 1 : n] = '\0';
    if (sd == NULL)
        return strcmp(dir, scanon) == 0;
    struct stat st;
    return stat(dir, &st) == 0 && st.st_dev == sd->st_dev && st.st_ino == sd->st_ino;
}

int eddy__paths_check_state(const char *output, const char *dead, const char *state,
                            eddy_error **err)
{
    if (state == NULL || state[0] == '\0')
        return EDDY_OK;
    struct stat sd;
    char scanon[PATH_MAX];
    int there = stat(state, &sd) == 0 && S_ISDIR(sd.st_mode);
    if (!there && eddy__paths_canonical(state, scanon) != 0)
        return EDDY_OK; /* cannot be made: the store says so */
    const char *paths[] = {output, dead};
    static const char *const what[] = {"output", "dead-letter file"};
    static const char *const opt[] = {"--output", "--dead-letter"};
    for (int i = 0; i < 2; i++) {
        char canon[PATH_MAX];
        struct stat st;
        if (paths[i] == NULL || strcmp(paths[i], "-") == 0 ||
            eddy__paths_canonical(paths[i], canon) != 0)
            continue; /* a standard stream, or one eddy__paths_check refuses */
        if (state_name(canon, there ? &sd : NULL, scanon))
            return eddy__error_set(err, EDDY_EINVAL, "config",
                                   "the %s (%s) is a file of the state directory %s: writing it "
                                   "would damage the state; give %s another path",
                                   what[i], paths[i], state, opt[i]);
        if (there && stat(canon, &st) == 0 && S_ISREG(st.st_mode) && is_state_file(state, &st))
            return eddy__error_set(err, EDDY_EINVAL, "config",
                                   "the %s (%s) is a file of the state directory %s under "
                                   "another name: writing it would damage the state; give %s "
                                   "another path",
                                   what[i], paths[i], state, opt[i]);
    }
    return EDDY_OK;
}

int eddy__paths_check_files(const char *output, const char *dead, const eddy__file_id *files,
                            size_t n, eddy_error **err)
{
    const char *paths[] = {output, dead};
    static const char *const what[] = {"output", "dead-letter file"};
    static const char *const opt[] = {"--output", "--dead-letter"};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (paths[i] == NULL || strcmp(paths[i], "-") == 0 || stat(paths[i], &st) != 0)
            continue; /* a standard stream, or a file yet to be made */
        for (size_t k = 0; k < n; k++)
            if (st.st_dev == files[k].dev && st.st_ino == files[k].ino)
                return eddy__error_set(err, EDDY_EINVAL, "config",
                                       "the %s (%s) is the agent's file %s: writing it would "
                                       "destroy the agent; give %s another path",
                                       what[i], paths[i], files[k].path, opt[i]);
    }
    return EDDY_OK;
}

int eddy__paths_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

int eddy__paths_sync_parent(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return ENOMEM;
    int rc = eddy__paths_sync_dir(dirname(copy));
    free(copy);
    return rc;
}
