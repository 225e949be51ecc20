/*
 * Fault injection for tests: make the n-th store write, store commit (the
 * fsync), sink write or allocation fail, to check that eddy stops with a
 * clear error and resumes correctly.
 *
 * Compiled only with EDDY_TEST_HOOKS (CMake option, on in test builds); in a
 * build without it eddy__fault() is the constant 0 and the hooks vanish.
 *
 * Configuration: the environment variable EDDY_FAULT, read once, holds
 * comma-separated rules NAME:N[:ERRNO]. A rule fires on the N-th call (1-based)
 * of eddy__fault() whose site is NAME or whose class (the site up to its first
 * '.') is NAME, and only on that call. ERRNO is one of EIO (the default),
 * ENOSPC, ENOMEM or EPIPE; it is what eddy__fault() returns, for the hooks
 * that simulate a system call. Examples: EDDY_FAULT=store_commit:3,
 * EDDY_FAULT=sink_write:2:ENOSPC, EDDY_FAULT=alloc.key:5.
 *
 * Sites (class.detail; grep for eddy__fault to find them):
 *   store_write         sqlite_store.c, each write statement (SQLITE_IOERR_WRITE)
 *   store_commit        sqlite_store.c, each COMMIT (SQLITE_IOERR_FSYNC)
 *   store_sync          sqlite_store.c, each fdatasync(2) of the WAL by the syncer
 *                       (errno)
 *   store_wal           walvfs.c, each write(2) of WAL frames (SQLITE_IOERR_WRITE,
 *                       SQLITE_FULL for ENOSPC)
 *   wal_open_sync       sqlite_store.c, the fdatasync(2) of the WAL at open (errno)
 *   sink_write.write    sink.c, each write(2) of buffered lines (errno)
 *   sink_write.sync     sink.c, each fdatasync(2) of a file sink (errno)
 *   sink_write.dirsync  sink.c, the fsync(2) of a file sink's directory, at its first
 *                       sync (errno)
 *   alloc.input         source.c, one parsed input line (ENOMEM on the reader)
 *   alloc.key           runtime.c, a new key
 *   alloc.task          runtime.c, a new task (action execution)
 *   alloc.event         event.c, every event (input events and those agents send)
 *   alloc.scratch       durable.c, encoding a pending input or a key's memory
 *   alloc.emit          durable.c, an output line for the outbox
 *   alloc.digest        durable.c, the canonical text of a C durable call's arguments
 *                       (its digest)
 *   alloc.journal       durable.c, each string of a journal record copied from the
 *                       store (a resumed run's journal; the records a dropped PENDING
 *                       start puts back)
 *   alloc.json          jalloc.c, every allocation of jansson's that the cache of
 *                       freed blocks does not serve (any thread: the reader's
 *                       parses, the decoding of stored records, agents' values)
 * Not every malloc has a hook: these are the allocations whose failure
 * paths differ (reader thread, admission, fan-out, agent code).
 *
 * Thread-safe: the counters are atomic (alloc.input runs on the reader).
 */
#ifndef EDDY_UTIL_FAULT_H
#define EDDY_UTIL_FAULT_H

#ifdef EDDY_TEST_HOOKS
#include <stdatomic.h>

/* Rules loaded from EDDY_FAULT: -1 until read, then their number. */
extern atomic_int eddy__fault_rules;
int eddy__fault_check(const char *site);
/* Unit tests: replace the rules (EDDY_FAULT's syntax; NULL for none), their
 * counts from zero. Not while other threads may check them. */
void eddy__fault_set(const char *rules);

/* 0, or the errno value to simulate when this call at site must fail. With
 * no rules (every run but the fault tests) a load and a compare. */
static inline int eddy__fault(const char *site)
{
    if (atomic_load_explicit(&eddy__fault_rules, memory_order_relaxed) == 0)
        return 0;
    return eddy__fault_check(site);
}
#else
#define eddy__fault(site) ((void)(site), 0)
#endif

#endif /* EDDY_UTIL_FAULT_H */
