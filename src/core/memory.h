/*
 * Per-key memory: a tree of JSON objects addressed by dotted paths ("a.b.c").
 *
 * A key owns two committed trees (short-term and sensory), each a JSON object.
 * An action execution reads and writes them through an eddy__memview: a sparse
 * overlay of its own writes over the committed tree, plus the ordered log of
 * those writes. Reads see the committed tree as it is now (including writes
 * that other action executions committed meanwhile) with this view's writes on
 * top. When the action execution finishes, the log is applied to the committed
 * tree (eddy__memview_commit) and becomes the journal's record of its memory
 * writes.
 *
 * Paths: one or more segments separated by '.', each segment non-empty
 * (no leading, trailing or doubled dots). "" names the root where a function
 * says so. A segment may contain any character except '.'; the path must be
 * valid UTF-8 (it is logged as a JSON string, and becomes object keys). There
 * is no length limit; walking a path copies and allocates nothing.
 *
 * The update log is a JSON array; each entry is {"p": path, "v": value} for a
 * set, or {"p": path, "o": true} for a new object, so that a replay recreates
 * objects as objects.
 *
 * Values are immutable once set. The log holds the very value given to
 * eddy__memview_set() (a reference, not a copy), and nothing here ever changes
 * it: views and trees store a deep copy of an object value (arrays and
 * scalars are shared, no path reaches inside them). The caller must not change
 * a value after handing it over either. Reads return deep copies.
 *
 * All functions run on the mailbox thread; nothing here locks.
 */
#ifndef EDDY_CORE_MEMORY_H
#define EDDY_CORE_MEMORY_H

#include <jansson.h>

/* 1 when path is valid; allow_root makes "" valid too. */
int eddy__mem_path_valid(const char *path, int allow_root);

/* Borrowed node at path in root, or NULL ("" gives root). */
json_t *eddy__mem_tree_lookup(json_t *root, const char *path);

/* Set path to value (stolen, also on failure) in root, creating missing parent
 * objects. The value becomes part of the tree as it is (no copy): if it is an
 * object, later writes below path change it in place. A value over a value
 * replaces it, and an object value replaces an object. EDDY_EINVAL bad path,
 * NULL value or root not an object; EDDY_EPATH a non-object stands on a
 * parent position, or an object stands at path and value is not one;
 * EDDY_ENOMEM. On failure root is unchanged. */
int eddy__mem_tree_set(json_t *root, const char *path, json_t *value);

/* Make an empty object at path (parents created); an object already there is
 * kept. EDDY_EINVAL bad path; EDDY_EPATH when a value stands at path or on a
 * parent position; EDDY_ENOMEM. On failure root is unchanged. */
int eddy__mem_tree_new_object(json_t *root, const char *path);

/* Apply an update log in order. With force, a conflicting node is replaced
 * (a value on a parent position becomes an object; a set over an object
 * replaces it; a new object over a value replaces it): last writer wins, never
 * fails but on ENOMEM or a malformed log (EDDY_EINVAL). Without force, the
 * first conflict returns EDDY_EPATH (the updates before it stay applied).
 * The whole log is checked before anything is applied, so a malformed one
 * (not an array; an entry that is not exactly {"p": valid path, "v": value}
 * or {"p": valid path, "o": true}; root not an object) changes nothing. Set
 * values are copied into root when they are objects, shared otherwise; the log
 * is never changed. On ENOMEM root holds the updates before the failing one. */
int eddy__mem_tree_apply(json_t *root, const json_t *updates, int force);

/*
 * The overlay is a sparse tree of three kinds of node: merge nodes (plain
 * objects, created by new_object or as parents; reading one merges the
 * committed fields at the same place under its own), replaced subtrees (an
 * object value this view set, wrapped as {".": value}: "." is never a path
 * segment, and nothing committed shows through it) and leaves (a non-object
 * value this view set). Reading through a view always gives what applying its
 * log in force mode to the committed tree, as it is now, would give.
 */
typedef struct eddy__memview {
    json_t *committed; /* borrowed: the key's committed root object */
    json_t *overlay;   /* NULL until the first write: this view's writes, as a sparse tree */
    json_t *updates;   /* NULL until the first write: the update log (array) */
} eddy__memview;

/* Start a view over committed (borrowed; must outlive the view). */
void eddy__memview_init(eddy__memview *v, json_t *committed);

/* New reference to a deep copy of the merged value at path ("" allowed: the
 * whole merged tree), or NULL when absent, bad path or on ENOMEM. Objects merge
 * committed fields with this view's writes, the view winning. */
json_t *eddy__memview_get(eddy__memview *v, const char *path);

/* Record a set (value stolen, also on failure) after checking it against the
 * merged tree, with the rules of eddy__mem_tree_set(): EDDY_EINVAL bad path or
 * NULL value, EDDY_EPATH conflict, EDDY_ENOMEM. On failure the view is
 * unchanged. */
int eddy__memview_set(eddy__memview *v, const char *path, json_t *value);

/* Record a new object; an object already at path (merged) is kept and nothing
 * is logged. Errors as eddy__memview_set(). */
int eddy__memview_new_object(eddy__memview *v, const char *path);

/* 1 exists, 0 not, EDDY_EINVAL bad path ("" is valid and exists). */
int eddy__memview_exists(eddy__memview *v, const char *path);

/* Where a set or new object at path met a conflict (EDDY_EPATH), for its
 * message: the length of the path's first prefix ("a.b" of "a.b.c") at which
 * a value that is not an object stands, or 0 when no parent holds one (what
 * stands at path itself is then the conflict). */
size_t eddy__memview_conflict(eddy__memview *v, const char *path);

/* New array of the merged field names of the object at path ("" = root),
 * sorted by name (bytewise, a prefix first); NULL when absent, not an object,
 * bad path, or ENOMEM. */
json_t *eddy__memview_field_names(eddy__memview *v, const char *path);

/* The update log (borrowed; NULL when nothing was written). */
const json_t *eddy__memview_updates(const eddy__memview *v);

/* Apply the log to the committed tree (force mode) and reset the view to
 * empty. EDDY_OK, or EDDY_ENOMEM with the committed tree holding part of the
 * log and the view left as it was (applying the log again is safe). */
int eddy__memview_commit(eddy__memview *v);

/* Drop this view's writes (overlay and log). The view stays usable. */
void eddy__memview_reset(eddy__memview *v);

#endif /* EDDY_CORE_MEMORY_H */
