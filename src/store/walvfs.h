/*
 * A SQLite VFS that writes each commit's WAL frames with one write(2)
 * (see walvfs.c). The writing connection of the store opens its database
 * with it; every other file goes to SQLite's default VFS unchanged.
 */
#ifndef EDDY_STORE_WALVFS_H
#define EDDY_STORE_WALVFS_H

#include <stdint.h>

#include <sqlite3.h>

/* Register the VFS (once per process; thread-safe) and return its name for
 * sqlite3_open_v2(), or NULL when it could not be registered (then open with
 * the default VFS: only the gathering is lost). */
const char *eddy__walvfs_name(void);

/* Write out what db's WAL file holds gathered, if anything. The store calls
 * it after each COMMIT: a commit's frames are written out within it, but
 * SQLite may rewrite frame headers after its last frame (to fix the
 * checksums of frames it wrote twice), and those must reach the file before
 * the commit counts as written. SQLITE_OK, or the code of the failed write
 * (the file then fails every later access: see walvfs.c). */
int eddy__walvfs_settle(sqlite3 *db);

/* The errno of the failed write-out of db's WAL file (ENOSPC when SQLite
 * was told SQLITE_FULL), which every later access to the file fails with;
 * 0 when none failed. For messages: SQLite keeps no errno of it. */
int eddy__walvfs_errno(sqlite3 *db);

/* What the VFS did since the process started: the write(2) calls it made to
 * WAL files and the writes SQLite asked of it. For tests and diagnostics. */
typedef struct eddy__walvfs_stats {
    uint64_t asked;   /* xWrite calls SQLite made on WAL files */
    uint64_t written; /* writes passed to the default VFS */
} eddy__walvfs_stats;
void eddy__walvfs_stats_get(eddy__walvfs_stats *out);

#endif /* EDDY_STORE_WALVFS_H */
