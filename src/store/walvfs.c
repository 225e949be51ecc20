/*
 * A VFS over SQLite's default one that gathers the frames a commit appends
 * to the WAL into one write(2).
 *
 * SQLite writes each WAL frame with two writes, its 24-byte header and then
 * the page, so a commit of n pages cost 2n system calls: ~2.2 us each on
 * the machine of docs/performance.md, 36.6 us for a commit of 8 pages
 * against 3.3 us for one write of the same bytes.
 *
 * What is gathered, and when it is written out:
 * - A frame is gathered only while more of the same commit is sure to
 *   follow, that is after the header of a frame that is not the commit's
 *   last (the last one's header carries the database size). The page of the
 *   last frame is written together with everything gathered before it,
 *   inside SQLite's write of it: SQLite makes a commit's frames visible in
 *   the WAL index only after that, so a reader in another process (eddy
 *   inspect) never looks for a frame that is not in the file yet, and a
 *   commit that returned is in the file as it would be without this VFS.
 * - Anything else SQLite does with the file (a read, a sync, a truncate,
 *   asking its size, a write that does not continue the gathered bytes,
 *   closing it) first writes out what is gathered, and so does the store
 *   after each COMMIT (eddy__walvfs_settle): SQLite may rewrite frame
 *   headers after a commit's last frame, when it fixes the checksums of
 *   frames it wrote twice; readers do not look at them, recovery does. A
 *   crash loses only frames of a commit that had not finished, which
 *   recovery ignores anyway.
 * - A failed write-out is kept: every later write, read and sync of that
 *   file fails with it, since SQLite believes the lost frames are there (the
 *   store stops at the first failure and reopens the database to go on).
 *
 * Other files (the database itself, its shared memory, temporary files) are
 * opened by the default VFS in place and never pass through here. The file
 * is used by one connection, on one thread at a time (SQLite's rules).
 */
#include "store/walvfs.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>
#include <uv.h>

#include "util/fault.h"

#define WALVFS_NAME  "eddy-wal"
#define FRAME_HEADER 24            /* bytes of a WAL frame's header */
#define GATHER_MAX   (1024 * 1024) /* write out before gathering more */
#define WRITE_MAX    (64 * 1024)   /* bytes per write to the default VFS */

/* What the next write to the WAL is expected to be. */
enum { NEXT_ANY, NEXT_PAGE, NEXT_LAST_PAGE };

typedef struct walfile {
    sqlite3_file base;  /* pMethods: wal_methods */
    sqlite3_file *real; /* the default VFS's file, in the memory after this */
    char *buf;          /* gathered bytes, for file offset at */
    size_t len, cap;
    sqlite3_int64 at;
    int next;
    int failed;    /* the SQLite code of a failed write-out, or 0 */
    int sys_errno; /* what the OS said of it (ENOSPC for SQLITE_FULL), or 0 */
} walfile;

static sqlite3_vfs walvfs;
static sqlite3_vfs *base_vfs;
static const sqlite3_io_methods wal_methods;
static uv_once_t once = UV_ONCE_INIT;
static int registered;
static atomic_uint_fast64_t stat_asked, stat_written;

static int write_real(walfile *w, const void *data, int amt, sqlite3_int64 off)
{
    atomic_fetch_add_explicit(&stat_written, 1, memory_order_relaxed);
    int e = eddy__fault("store_wal");
    if (e != 0) {
        w->sys_errno = e;
        return e == ENOSPC ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    }
    errno = 0;
    int rc = w->real->pMethods->xWrite(w->real, data, amt, off);
    /* The default VFS says SQLITE_FULL for ENOSPC and for a short write,
     * which leaves no errno: both are a full disk. */
    if (rc != SQLITE_OK)
        w->sys_errno = (rc & 0xff) == SQLITE_FULL ? ENOSPC : errno;
    return rc;
}

/* Write out what is gathered; a failure stays (see above). */
static int write_out(walfile *w)
{
    if (w->failed != 0)
        return w->failed;
    if (w->len == 0)
        return SQLITE_OK;
    /* In pieces: the default VFS writes at most 128 KiB - 1 bytes per call
     * (it masks the length with 0x1ffff). */
    int rc = SQLITE_OK;
    for (size_t done = 0; done < w->len && rc == SQLITE_OK; done += WRITE_MAX) {
        size_t n = w->len - done < WRITE_MAX ? w->len - done : WRITE_MAX;
        rc = write_real(w, w->buf + done, (int)n, w->at + (sqlite3_int64)done);
    }
    w->len = 0;
    if (rc != SQLITE_OK)
        w->failed = rc;
    return rc;
}

/* Room for amt more bytes; 0 when there is none (then write directly). */
static int make_room(walfile *w, size_t amt)
{
    if (w->len + amt <= w->cap)
        return 1;
    size_t cap = w->cap != 0 ? w->cap : 64 * 1024;
    while (cap < w->len + amt)
        cap *= 2;
    if (cap > GATHER_MAX)
        return 0;
    char *p = realloc(w->buf, cap);
    if (p == NULL)
        return 0;
    w->buf = p;
    w->cap = cap;
    return 1;
}

/* Whether more of the same commit follows this write (see above); moves
 * w->next along the frame being written. */
static int commit_goes_on(walfile *w, const unsigned char *data, int amt)
{
    switch (w->next) {
    case NEXT_PAGE:
        w->next = NEXT_ANY;
        return 1;
    case NEXT_LAST_PAGE:
        w->next = NEXT_ANY;
        return 0;
    default:
        if (amt != FRAME_HEADER)
            return 0;
        /* Bytes 4-7 of a frame header: the database size in pages after a
         * commit, on the commit's last frame only; 0 on the others. */
        w->next = (data[4] | data[5] | data[6] | data[7]) != 0 ? NEXT_LAST_PAGE : NEXT_PAGE;
        return 1;
    }
}

static int wal_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off)
{
    walfile *w = (walfile *)f;
    atomic_fetch_add_explicit(&stat_asked, 1, memory_order_relaxed);
    if (w->failed != 0)
        return w->failed;
    int more = commit_goes_on(w, data, amt);
    if (w->len > 0 && (off != w->at + (sqlite3_int64)w->len || !make_room(w, (size_t)amt))) {
        int rc = write_out(w);
        if (rc != SQLITE_OK)
            return rc;
    }
    /* Written directly, it is as safe: only holding bytes back needs care. */
    if (w->len == 0 && (!more || !make_room(w, (size_t)amt)))
        return write_real(w, data, amt, off);
    if (w->len == 0)
        w->at = off;
    memcpy(w->buf + w->len, data, (size_t)amt);
    w->len += (size_t)amt;
    return more ? SQLITE_OK : write_out(w);
}

/* Before anything else touches the file: write out what is gathered. */
static int settle(walfile *w)
{
    w->next = NEXT_ANY;
    return write_out(w);
}

static int wal_close(sqlite3_file *f)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    int rc2 = w->real->pMethods->xClose(w->real);
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wal_read(sqlite3_file *f, void *data, int amt, sqlite3_int64 off)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xRead(w->real, data, amt, off);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int wal_sync(sqlite3_file *f, int flags)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, size);
}

static int wal_lock(sqlite3_file *f, int lock)
{
    walfile *w = (walfile *)f;
    return w->real->pMethods->xLock(w->real, lock);
}

static int wal_unlock(sqlite3_file *f, int lock)
{
    walfile *w = (walfile *)f;
    return w->real->pMethods->xUnlock(w->real, lock);
}

static int wal_check_reserved(sqlite3_file *f, int *out)
{
    walfile *w = (walfile *)f;
    return w->real->pMethods->xCheckReservedLock(w->real, out);
}

static int wal_file_control(sqlite3_file *f, int op, void *arg)
{
    walfile *w = (walfile *)f;
    int rc = settle(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileControl(w->real, op, arg);
}

static int wal_sector_size(sqlite3_file *f)
{
    walfile *w = (walfile *)f;
    return w->real->pMethods->xSectorSize(w->real);
}

static int wal_device(sqlite3_file *f)
{
    walfile *w = (walfile *)f;
    return w->real->pMethods->xDeviceCharacteristics(w->real);
}

/* Version 1: a WAL file has no shared memory and is not memory-mapped. */
static const sqlite3_io_methods wal_methods = {
    1,
    wal_close,
    wal_read,
    wal_write,
    wal_truncate,
    wal_sync,
    wal_file_size,
    wal_lock,
    wal_unlock,
    wal_check_reserved,
    wal_file_control,
    wal_sector_size,
    wal_device,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL))
        return base_vfs->xOpen(base_vfs, name, f, flags, out_flags);
    walfile *w = (walfile *)f;
    memset(w, 0, sizeof(*w));
    w->real = (sqlite3_file *)(w + 1);
    int rc = base_vfs->xOpen(base_vfs, name, w->real, flags, out_flags);
    /* On failure base's xClose is not to be called, nor ours. */
    w->base.pMethods = rc == SQLITE_OK ? &wal_methods : NULL;
    return rc;
}

/* The rest is the default VFS's. */
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return base_vfs->xDelete(base_vfs, name, sync_dir);
}
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return base_vfs->xAccess(base_vfs, name, flags, out);
}
static int vfs_full_path(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return base_vfs->xFullPathname(base_vfs, name, n, out);
}
static void *vfs_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return base_vfs->xDlOpen(base_vfs, name);
}
static void vfs_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    base_vfs->xDlError(base_vfs, n, msg);
}
static void (*vfs_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return base_vfs->xDlSym(base_vfs, h, sym);
}
static void vfs_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    base_vfs->xDlClose(base_vfs, h);
}
static int vfs_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return base_vfs->xRandomness(base_vfs, n, out);
}
static int vfs_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return base_vfs->xSleep(base_vfs, us);
}
static int vfs_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return base_vfs->xCurrentTime(base_vfs, out);
}
static int vfs_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return base_vfs->xGetLastError != NULL ? base_vfs->xGetLastError(base_vfs, n, out) : 0;
}
static int vfs_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static void do_register(void)
{
    if (sqlite3_initialize() != SQLITE_OK)
        return;
    base_vfs = sqlite3_vfs_find(NULL);
    /* Version 2 is all the store needs (no system-call overrides). */
    if (base_vfs == NULL || base_vfs->iVersion < 2)
        return;
    walvfs.iVersion = 2;
    walvfs.szOsFile = (int)sizeof(walfile) + base_vfs->szOsFile;
    walvfs.mxPathname = base_vfs->mxPathname;
    walvfs.zName = WALVFS_NAME;
    walvfs.xOpen = vfs_open;
    walvfs.xDelete = vfs_delete;
    walvfs.xAccess = vfs_access;
    walvfs.xFullPathname = vfs_full_path;
    walvfs.xDlOpen = vfs_dl_open;
    walvfs.xDlError = vfs_dl_error;
    walvfs.xDlSym = vfs_dl_sym;
    walvfs.xDlClose = vfs_dl_close;
    walvfs.xRandomness = vfs_randomness;
    walvfs.xSleep = vfs_sleep;
    walvfs.xCurrentTime = vfs_current_time;
    walvfs.xGetLastError = vfs_last_error;
    walvfs.xCurrentTimeInt64 = vfs_current_time64;
    registered = sqlite3_vfs_register(&walvfs, 0) == SQLITE_OK;
}

int eddy__walvfs_settle(sqlite3 *db)
{
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK ||
        f == NULL || f->pMethods != &wal_methods)
        return SQLITE_OK;
    return settle((walfile *)f);
}

int eddy__walvfs_errno(sqlite3 *db)
{
    sqlite3_file *f = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK ||
        f == NULL || f->pMethods != &wal_methods)
        return 0;
    return ((walfile *)f)->failed != 0 ? ((walfile *)f)->sys_errno : 0;
}

const char *eddy__walvfs_name(void)
{
    uv_once(&once, do_register);
    return registered ? WALVFS_NAME : NULL;
}

void eddy__walvfs_stats_get(eddy__walvfs_stats *out)
{
    out->asked = atomic_load_explicit(&stat_asked, memory_order_relaxed);
    out->written = atomic_load_explicit(&stat_written, memory_order_relaxed);
}
