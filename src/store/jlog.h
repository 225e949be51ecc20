/*
 * The journal as a log: the records a transaction writes are appended to one
 * buffer and stored as one row (a blob) at commit, instead of one indexed row
 * per record. This file holds what does not depend on SQLite: the encoding of
 * the entries of a blob, their decoding (untrusted: the file may be damaged),
 * and the replay of entries into the journal they describe.
 *
 * Entries, in the order they were written:
 *   'p' put: key, seq, event_id, action, idx, kind, status, fn_id, digest,
 *            payload, err_type, err_msg. Replaces an earlier record of the
 *            same (key, seq, event_id, action, idx), as the outcome of a
 *            reconciled call replaces its PENDING record.
 *   'C' cut: key, seq, event_id, action, from. Removes the call records of
 *            that action execution at positions >= from (non-determinism).
 *   'P' put as format 5 and older wrote it (read, no longer written).
 * In 'p', integers are varints (unsigned LEB128 in its shortest form; idx
 * zigzag-coded, as it may be -1), kind and status a byte each, and strings
 * their length + 1 as a varint, the bytes and a NUL (so that decoded strings
 * point into the blob), or a 0 alone when absent: a W4 record is ~90 bytes
 * instead of ~127, and what SQLite spends storing the journal row (overflow
 * pages, WAL checksums, copies) goes with the bytes. In 'C' and 'P',
 * integers are 8 bytes, little-endian, and strings a 4-byte length, the
 * bytes and a NUL, or length 0xffffffff and nothing else when absent.
 */
#ifndef EDDY_STORE_JLOG_H
#define EDDY_STORE_JLOG_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/jsonw.h"

/* Append an entry to b. EDDY_OK or EDDY_ENOMEM (b unchanged). */
int eddy__jlog_put(eddy__buf *b, const eddy__jrec *rec);
int eddy__jlog_cut(eddy__buf *b, const char *key, uint64_t seq, const char *event_id,
                   const char *action, int64_t from);

/* A decoded entry; for a cut, rec.idx is the first position cut and the
 * other record fields are 0/NULL. Strings point into the blob. */
typedef struct eddy__jlog_entry {
    int cut;
    int legacy; /* a 'P' entry, which eddy__jlog_put encodes as 'p' */
    eddy__jrec rec;
} eddy__jlog_entry;

typedef int (*eddy__jlog_fn)(void *arg, const eddy__jlog_entry *e);

/* Decode the entries of a blob in order, calling fn for each. EDDY_OK,
 * EDDY_ESTATE when the blob is not a well-formed sequence of entries (fn may
 * have seen the ones before the fault), or what fn returned. */
int eddy__jlog_walk(const void *data, size_t len, eddy__jlog_fn fn, void *arg);

/* The journal that a sequence of entries describes. */
typedef struct eddy__jview eddy__jview;

eddy__jview *eddy__jview_new(void);
void eddy__jview_free(eddy__jview *v);
/* Apply one entry. EDDY_OK or EDDY_ENOMEM. */
int eddy__jview_apply(eddy__jview *v, const eddy__jlog_entry *e);
/* An eddy__jlog_fn that applies every entry to the view in arg. */
int eddy__jview_apply_fn(void *arg, const eddy__jlog_entry *e);
/* Hand the records of the runs that keep() accepts (all when NULL) to fn,
 * ordered by key, seq, event_id, action, idx. EDDY_OK, EDDY_ENOMEM or what
 * fn returned. */
int eddy__jview_emit(eddy__jview *v, int (*keep)(void *karg, const char *key, uint64_t seq),
                     void *karg, eddy__store_jrec_fn fn, void *arg);

#endif /* EDDY_STORE_JLOG_H */
