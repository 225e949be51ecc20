/*
 * Per-key memory trees and views (see memory.h).
 *
 * Path walking never copies a segment: jansson 2.14's length-taking object
 * calls (json_object_getn, json_object_setn_new_nocheck, json_object_deln)
 * take the segment where it lies in the path string, so a lookup allocates
 * nothing whatever the path length. The path is validated once per call
 * (including UTF-8, which is why the _nocheck setters are safe).
 *
 * Overlay representation. The overlay is a sparse JSON tree with three kinds
 * of node:
 *   - a merge node: a plain JSON object, created by new_object or as a parent
 *     on the way to a write. Reading it merges the committed fields at the same
 *     position under its own fields (the overlay wins, recursively). A
 *     committed non-object at that position is hidden.
 *   - a replaced subtree: a JSON object VALUE that this view set, stored in a
 *     wrapper {".": content}. The key "." can never be a path segment, so no
 *     merge node has it and the wrapper is unambiguous. The content is
 *     authoritative: nothing committed shows through it, and later writes
 *     below it go into the content as into a plain tree.
 *   - a leaf: a non-object value this view set; it hides whatever is committed.
 * With this, the merged tree is always what applying the update log (force
 * mode) to the committed tree as it is now would give; the fuzz target checks
 * exactly that.
 *
 * Sharing. Values set through a view go into the update log as given (one
 * more reference, no copy): memory values are immutable once set, and the log
 * is what the journal keeps. The module only ever mutates objects it owns
 * alone: the overlay and the trees get a deep copy of every object value
 * (arrays and scalars are shared, since no path reaches inside them).
 *
 * Known limit: the functions here and jansson's own copy and free recurse
 * over the tree, so the depth is bounded by the stack (a path of n segments
 * makes n levels).
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "util/utf8.h"

/* The key of the wrapper that marks a replaced subtree in an overlay. */
#define WRAP_KEY     "."
#define WRAP_KEY_LEN 1

/* ---------------------------------------------------------------- paths */

int eddy__mem_path_valid(const char *path, int allow_root)
{
    if (path == NULL)
        return 0;
    if (*path == '\0')
        return allow_root != 0;
    const unsigned char *s = (const unsigned char *)path;
    size_t seg_len = 0;
    while (*s) {
        unsigned c = *s;
        if (c == '.') {
            if (seg_len == 0)
                return 0;
            seg_len = 0;
            s++;
            continue;
        }
        /* Strict UTF-8, as jansson wants for keys and strings. */
        size_t len = eddy__utf8_char(s);
        if (len == 0)
            return 0;
        s += len;
        seg_len++;
    }
    return seg_len > 0;
}

/* Iterates over the segments of a valid, non-root path without copying. */
typedef struct path_it {
    const char *key; /* current segment, not NUL-terminated */
    size_t len;
    const char *next; /* start of the next segment; NULL after the last */
} path_it;

static void it_init(path_it *it, const char *path)
{
    it->key = NULL;
    it->len = 0;
    it->next = path;
}

/* Advance to the next segment; 0 when there is none. */
static int it_step(path_it *it)
{
    if (it->next == NULL)
        return 0;
    const char *dot = strchr(it->next, '.');
    it->key = it->next;
    if (dot) {
        it->len = (size_t)(dot - it->next);
        it->next = dot + 1;
    } else {
        it->len = strlen(it->next);
        it->next = NULL;
    }
    return 1;
}

static int it_last(const path_it *it)
{
    return it->next == NULL;
}

static json_t *child(const json_t *node, const path_it *it)
{
    return json_is_object(node) ? json_object_getn(node, it->key, it->len) : NULL;
}

/* A reference to v fit to be stored in a tree or an overlay: objects are deep
 * copied (they may be written into later), anything else is shared.
 * json_deep_copy recurses, here and in materialize, on the action's stack:
 * ~119 bytes a level (jansson 2.14, x86-64, measured), so a value as deep as
 * memory allows (EDDY__VALUE_MAX_DEPTH, 1000 levels) takes ~116 KiB of the
 * default 256 KiB, ~140 KiB left for the action's own frames (the e2e test
 * test_deep_arguments_and_results_on_the_action_stack copies one). */
static json_t *own(json_t *v)
{
    return json_is_object(v) ? json_deep_copy(v) : json_incref(v);
}

/* ---------------------------------------------------------------- trees */

json_t *eddy__mem_tree_lookup(json_t *root, const char *path)
{
    if (!eddy__mem_path_valid(path, 1))
        return NULL;
    if (*path == '\0')
        return root;
    path_it it;
    it_init(&it, path);
    json_t *node = root;
    while (node && it_step(&it))
        node = child(node, &it);
    return node;
}

/*
 * Write value (stolen; NULL means "an object") at path in a plain tree,
 * creating parents. Without force a conflict is EDDY_EPATH and nothing
 * changes; with force conflicting nodes are replaced. On ENOMEM the first
 * change made (a created or replaced child) is undone, which undoes them all,
 * since everything after it lies below it.
 */
static int tree_write(json_t *root, const char *path, json_t *value, int force)
{
    json_t *undo_parent = NULL, *undo_old = NULL;
    const char *undo_key = NULL;
    size_t undo_len = 0;
    int rc = EDDY_ENOMEM;

    if (!json_is_object(root)) {
        json_decref(value);
        return EDDY_EINVAL;
    }
    path_it it;
    it_init(&it, path);
    json_t *node = root;
    while (it_step(&it)) {
        json_t *c = json_object_getn(node, it.key, it.len);
        if (it_last(&it)) {
            if (value == NULL && json_is_object(c))
                break; /* new object over an object: kept */
            /* A value over an object is a conflict, an object value replaces. */
            if (c && !force && (value == NULL || (json_is_object(c) && !json_is_object(value)))) {
                rc = EDDY_EPATH;
                goto fail;
            }
            if (value == NULL && (value = json_object()) == NULL)
                goto fail;
            rc = json_object_setn_new_nocheck(node, it.key, it.len, value);
            value = NULL; /* stolen, also on failure */
            if (rc != 0) {
                rc = EDDY_ENOMEM;
                goto fail;
            }
            break;
        }
        if (json_is_object(c)) {
            node = c;
            continue;
        }
        if (c && !force) {
            rc = EDDY_EPATH;
            goto fail;
        }
        json_t *obj = json_object();
        if (obj == NULL)
            goto fail;
        if (undo_parent == NULL) {
            undo_parent = node;
            undo_key = it.key;
            undo_len = it.len;
            undo_old = json_incref(c);
        }
        if (json_object_setn_new_nocheck(node, it.key, it.len, obj) != 0)
            goto fail;
        node = obj;
    }
    json_decref(undo_old);
    return EDDY_OK;
fail:
    json_decref(value);
    if (undo_old)
        json_object_setn_new_nocheck(undo_parent, undo_key, undo_len, undo_old);
    else if (undo_parent)
        json_object_deln(undo_parent, undo_key, undo_len);
    return rc;
}

int eddy__mem_tree_set(json_t *root, const char *path, json_t *value)
{
    if (value == NULL)
        return EDDY_EINVAL;
    if (!eddy__mem_path_valid(path, 0)) {
        json_decref(value);
        return EDDY_EINVAL;
    }
    return tree_write(root, path, value, 0);
}

int eddy__mem_tree_new_object(json_t *root, const char *path)
{
    if (!eddy__mem_path_valid(path, 0))
        return EDDY_EINVAL;
    return tree_write(root, path, NULL, 0);
}

/* The path of a well-formed log entry and its value (NULL for a new object),
 * or EDDY_EINVAL. */
static int entry_parse(const json_t *e, const char **path, json_t **value)
{
    if (!json_is_object(e) || json_object_size(e) != 2)
        return EDDY_EINVAL;
    json_t *p = json_object_get(e, "p");
    if (!json_is_string(p))
        return EDDY_EINVAL;
    *path = json_string_value(p);
    if (strlen(*path) != json_string_length(p) || !eddy__mem_path_valid(*path, 0))
        return EDDY_EINVAL;
    json_t *v = json_object_get(e, "v");
    json_t *o = json_object_get(e, "o");
    if (v)
        *value = v;
    else if (json_is_true(o))
        *value = NULL;
    else
        return EDDY_EINVAL;
    return EDDY_OK;
}

int eddy__mem_tree_apply(json_t *root, const json_t *updates, int force)
{
    const char *path;
    json_t *value;
    size_t i;
    const json_t *e;

    if (!json_is_object(root) || !json_is_array(updates))
        return EDDY_EINVAL;
    /* Check the whole log first, so that a malformed one changes nothing. */
    json_array_foreach(updates, i, e)
    {
        if (entry_parse(e, &path, &value) != EDDY_OK)
            return EDDY_EINVAL;
    }
    json_array_foreach(updates, i, e)
    {
        entry_parse(e, &path, &value);
        if (value && (value = own(value)) == NULL)
            return EDDY_ENOMEM;
        int rc = tree_write(root, path, value, force);
        if (rc != EDDY_OK)
            return rc;
    }
    return EDDY_OK;
}

/* ---------------------------------------------------------------- views */

/* A position in the merged tree: the node `over` of the overlay (a merge node,
 * or NULL) over `base`, which is the committed node, or the authoritative node
 * once a leaf or a replaced subtree has been met. Absent when both are NULL;
 * an object when over is set or base is an object. */
typedef struct mpos {
    json_t *base;
    json_t *over;
} mpos;

static int mpos_absent(mpos m)
{
    return m.base == NULL && m.over == NULL;
}

static int mpos_object(mpos m)
{
    return m.over != NULL || json_is_object(m.base);
}

static json_t *wrapped(const json_t *o)
{
    return json_is_object(o) ? json_object_getn(o, WRAP_KEY, WRAP_KEY_LEN) : NULL;
}

static mpos mpos_child(mpos m, const char *key, size_t len)
{
    mpos r;
    r.base = json_is_object(m.base) ? json_object_getn(m.base, key, len) : NULL;
    r.over = NULL;
    json_t *oc = m.over ? json_object_getn(m.over, key, len) : NULL;
    if (oc == NULL)
        return r;
    json_t *content = wrapped(oc);
    if (content)
        r.base = content;
    else if (json_is_object(oc))
        r.over = oc;
    else
        r.base = oc;
    return r;
}

static mpos mpos_root(const eddy__memview *v)
{
    mpos m = {v->committed, v->overlay};
    return m;
}

static mpos resolve(const eddy__memview *v, const char *path)
{
    mpos m = mpos_root(v);
    if (*path == '\0')
        return m;
    path_it it;
    it_init(&it, path);
    while (!mpos_absent(m) && it_step(&it))
        m = mpos_child(m, it.key, it.len);
    return m;
}

/* A new deep copy of the merged value at m, or NULL (absent or ENOMEM). */
static json_t *materialize(mpos m)
{
    if (m.over == NULL)
        return m.base ? json_deep_copy(m.base) : NULL;
    json_t *r = json_object();
    if (r == NULL)
        return NULL;
    const char *key;
    size_t len;
    json_t *val;
    if (json_is_object(m.base)) {
        json_object_keylen_foreach(m.base, key, len, val)
        {
            if (json_object_getn(m.over, key, len))
                continue;
            json_t *copy = json_deep_copy(val);
            if (copy == NULL || json_object_setn_new_nocheck(r, key, len, copy) != 0)
                goto fail;
        }
    }
    json_object_keylen_foreach(m.over, key, len, val)
    {
        json_t *copy = materialize(mpos_child(m, key, len));
        if (copy == NULL || json_object_setn_new_nocheck(r, key, len, copy) != 0)
            goto fail;
    }
    return r;
fail:
    json_decref(r);
    return NULL;
}

void eddy__memview_init(eddy__memview *v, json_t *committed)
{
    v->committed = committed;
    v->overlay = NULL;
    v->updates = NULL;
}

void eddy__memview_reset(eddy__memview *v)
{
    json_decref(v->overlay);
    json_decref(v->updates);
    v->overlay = NULL;
    v->updates = NULL;
}

json_t *eddy__memview_get(eddy__memview *v, const char *path)
{
    if (!eddy__mem_path_valid(path, 1))
        return NULL;
    return materialize(resolve(v, path));
}

int eddy__memview_exists(eddy__memview *v, const char *path)
{
    if (!eddy__mem_path_valid(path, 1))
        return EDDY_EINVAL;
    return !mpos_absent(resolve(v, path));
}

size_t eddy__memview_conflict(eddy__memview *v, const char *path)
{
    if (!eddy__mem_path_valid(path, 0))
        return 0;
    mpos m = mpos_root(v);
    path_it it;
    it_init(&it, path);
    while (it_step(&it) && it.next != NULL) {
        m = mpos_child(m, it.key, it.len);
        if (mpos_absent(m))
            return 0;
        if (!mpos_object(m))
            return (size_t)(it.key + it.len - path);
    }
    return 0;
}

typedef struct keyref {
    const char *s;
    size_t n;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    if (c)
        return c;
    return (x->n > y->n) - (x->n < y->n);
}

json_t *eddy__memview_field_names(eddy__memview *v, const char *path)
{
    if (!eddy__mem_path_valid(path, 1))
        return NULL;
    mpos m = resolve(v, path);
    if (!mpos_object(m))
        return NULL;

    size_t cap = (json_is_object(m.base) ? json_object_size(m.base) : 0) +
                 (m.over ? json_object_size(m.over) : 0);
    keyref small[32], *keys = small;
    if (cap > sizeof small / sizeof small[0] && (keys = malloc(cap * sizeof *keys)) == NULL)
        return NULL;
    size_t n = 0;
    const char *key;
    size_t len;
    json_t *val;
    if (json_is_object(m.base)) {
        json_object_keylen_foreach(m.base, key, len, val)
        {
            if (m.over == NULL || json_object_getn(m.over, key, len) == NULL)
                keys[n].s = key, keys[n++].n = len;
        }
    }
    if (m.over) {
        json_object_keylen_foreach(m.over, key, len, val)
        {
            keys[n].s = key, keys[n++].n = len;
        }
    }
    qsort(keys, n, sizeof *keys, keyref_cmp);

    json_t *names = json_array();
    for (size_t i = 0; names && i < n; i++) {
        if (json_array_append_new(names, json_stringn(keys[i].s, keys[i].n)) != 0) {
            json_decref(names);
            names = NULL;
        }
    }
    if (keys != small)
        free(keys);
    return names;
}

const json_t *eddy__memview_updates(const eddy__memview *v)
{
    return v->updates;
}

/*
 * Check a write against the merged tree: of a new object (what 1), a value
 * (0), or an object value (2), which replaces what stands at path, an object
 * included (a dict set again in a later run). Returns EDDY_OK when it may go
 * ahead, 1 when it is a new object over an object (nothing to do), or
 * EDDY_EPATH.
 */
static int view_check(const eddy__memview *v, const char *path, int what)
{
    mpos m = mpos_root(v);
    path_it it;
    it_init(&it, path);
    while (it_step(&it)) {
        m = mpos_child(m, it.key, it.len);
        if (mpos_absent(m))
            return EDDY_OK; /* the rest will be created */
        if (it_last(&it))
            break;
        if (!mpos_object(m))
            return EDDY_EPATH;
    }
    if (mpos_object(m))
        return what == 1 ? 1 : what == 2 ? EDDY_OK : EDDY_EPATH;
    return what == 1 ? EDDY_EPATH : EDDY_OK;
}

/*
 * Write a checked update into the overlay: value is stolen (an owned copy, see
 * own()), NULL for a new object. On ENOMEM the overlay is as before.
 */
static int view_write(eddy__memview *v, const char *path, json_t *value)
{
    json_t *undo_parent = NULL;
    const char *undo_key = NULL;
    size_t undo_len = 0;
    int rc = EDDY_ENOMEM;

    path_it it;
    it_init(&it, path);
    json_t *node = v->overlay;
    while (it_step(&it)) {
        json_t *c = json_object_getn(node, it.key, it.len);
        if (it_last(&it)) {
            json_t *n;
            if (value == NULL) {
                n = json_object(); /* a merge node */
            } else if (json_is_object(value)) {
                n = json_object(); /* a replaced subtree */
                if (n && json_object_setn_new_nocheck(n, WRAP_KEY, WRAP_KEY_LEN, value) != 0) {
                    json_decref(n);
                    n = NULL;
                }
                value = NULL; /* stolen either way */
            } else {
                n = value;
                value = NULL;
            }
            if (n == NULL || json_object_setn_new_nocheck(node, it.key, it.len, n) != 0)
                goto fail;
            return EDDY_OK;
        }
        json_t *content = wrapped(c);
        if (content) {
            /* Inside a replaced subtree: a plain write, which cleans up after
             * itself; view_check() has ruled out conflicts. */
            rc = tree_write(content, it.next, value, 0);
            value = NULL;
            if (rc != EDDY_OK)
                goto fail;
            return EDDY_OK;
        }
        if (json_is_object(c)) {
            node = c;
            continue;
        }
        if (c) { /* a leaf on a parent position: view_check() rules it out */
            rc = EDDY_EPATH;
            goto fail;
        }
        json_t *obj = json_object();
        if (obj == NULL || json_object_setn_new_nocheck(node, it.key, it.len, obj) != 0)
            goto fail;
        if (undo_parent == NULL)
            undo_parent = node, undo_key = it.key, undo_len = it.len;
        node = obj;
    }
fail:
    json_decref(value);
    if (undo_parent)
        json_object_deln(undo_parent, undo_key, undo_len);
    return rc;
}

/* Log and apply a checked update; value is borrowed, NULL for a new object. */
/*
 * The entry of an earlier set of path among the log's last few, when none
 * after it touched path, above or below it: a new set of path may take its
 * place (the entries between are of other subtrees, whose order with it
 * does not matter), so that an action setting one field over and over (a
 * counter in a loop) keeps one entry, not one per set (~500 bytes each,
 * journaled with the action). NULL when there is none.
 */
#define SAME_PATH_LOOKBACK 8

static json_t *earlier_set(json_t *updates, const char *path)
{
    size_t n = json_array_size(updates), plen = strlen(path);
    for (size_t k = 0; k < SAME_PATH_LOOKBACK && k < n; k++) {
        json_t *e = json_array_get(updates, n - 1 - k);
        const char *q = json_string_value(json_object_get(e, "p"));
        if (q == NULL)
            return NULL;
        size_t qlen = strlen(q), m = qlen < plen ? qlen : plen;
        if (memcmp(q, path, m) != 0)
            continue; /* another subtree */
        if (qlen == plen)
            return json_object_get(e, "v") != NULL ? e : NULL; /* a new object: keep it */
        if ((qlen < plen ? path[qlen] : q[plen]) == '.')
            return NULL; /* above or below path: the order matters */
    }
    return NULL;
}

static int view_record(eddy__memview *v, const char *path, json_t *value)
{
    int made_overlay = 0, made_updates = 0;
    int rc = EDDY_ENOMEM;
    json_t *entry = NULL, *copy = NULL;

    json_t *earlier = value != NULL && v->updates != NULL ? earlier_set(v->updates, path) : NULL;
    if (earlier != NULL) {
        json_t *was = json_incref(json_object_get(earlier, "v"));
        if ((copy = own(value)) == NULL ||
            json_object_set_new(earlier, "v", json_incref(value)) != 0) {
            json_decref(copy);
            json_decref(was);
            return EDDY_ENOMEM;
        }
        rc = view_write(v, path, copy); /* copy stolen */
        if (rc != EDDY_OK)
            json_object_set(earlier, "v", was); /* as it was */
        json_decref(was);
        return rc;
    }

    if (v->overlay == NULL) {
        if ((v->overlay = json_object()) == NULL)
            goto fail;
        made_overlay = 1;
    }
    if (v->updates == NULL) {
        if ((v->updates = json_array()) == NULL)
            goto fail;
        made_updates = 1;
    }
    entry = json_object();
    if (entry == NULL || json_object_set_new(entry, "p", json_string(path)) != 0)
        goto fail;
    if (json_object_set_new(entry, value ? "v" : "o", value ? json_incref(value) : json_true()))
        goto fail;
    if (value && (copy = own(value)) == NULL)
        goto fail;
    rc = json_array_append_new(v->updates, entry);
    entry = NULL; /* stolen, also on failure */
    if (rc != 0) {
        rc = EDDY_ENOMEM;
        goto fail;
    }
    rc = view_write(v, path, copy);
    copy = NULL; /* stolen */
    if (rc != EDDY_OK) {
        json_array_remove(v->updates, json_array_size(v->updates) - 1);
        goto fail;
    }
    return EDDY_OK;
fail:
    json_decref(entry);
    json_decref(copy);
    if (made_overlay) {
        json_decref(v->overlay);
        v->overlay = NULL;
    }
    if (made_updates) {
        json_decref(v->updates);
        v->updates = NULL;
    }
    return rc;
}

int eddy__memview_set(eddy__memview *v, const char *path, json_t *value)
{
    if (value == NULL)
        return EDDY_EINVAL;
    int rc = EDDY_EINVAL;
    if (eddy__mem_path_valid(path, 0) &&
        (rc = view_check(v, path, json_is_object(value) ? 2 : 0)) == EDDY_OK)
        rc = view_record(v, path, value);
    json_decref(value);
    return rc;
}

int eddy__memview_new_object(eddy__memview *v, const char *path)
{
    if (!eddy__mem_path_valid(path, 0))
        return EDDY_EINVAL;
    int rc = view_check(v, path, 1);
    if (rc == 1)
        return EDDY_OK;
    if (rc != EDDY_OK)
        return rc;
    return view_record(v, path, NULL);
}

int eddy__memview_commit(eddy__memview *v)
{
    if (v->updates) {
        int rc = eddy__mem_tree_apply(v->committed, v->updates, 1);
        if (rc != EDDY_OK)
            return rc;
    }
    eddy__memview_reset(v);
    return EDDY_OK;
}
