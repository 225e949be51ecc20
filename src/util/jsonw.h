/*
 * A compact JSON writer for the hot output path. jansson's json_dump_*
 * formats every integer through snprintf and hands the text out token by
 * token; writing straight into a growable buffer costs a fraction of that.
 * The text is what json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) gives:
 * fields in insertion order, UTF-8 kept as is, control characters escaped;
 * but each real has the fewest significant digits that read back to the
 * same double (jansson's JSON_REAL_PRECISION(p) for that smallest p: 0.1 is
 * "0.1", 0.1 + 0.2 is "0.30000000000000004"), and with EDDY__JSONW_EXACT
 * always 17 (jansson's default).
 */
#ifndef EDDY_UTIL_JSONW_H
#define EDDY_UTIL_JSONW_H

#include <stddef.h>

#include <jansson.h>

typedef struct eddy__buf {
    char *p;
    size_t len, cap;
} eddy__buf;

/* Make room for n more bytes. EDDY_OK or EDDY_ENOMEM. The check is inline:
 * the writer reserves before every piece it appends. */
int eddy__buf_grow(eddy__buf *b, size_t n);
static inline int eddy__buf_reserve(eddy__buf *b, size_t n)
{
    return b->cap - b->len >= n ? 0 : eddy__buf_grow(b, n);
}

/* Append the compact JSON text of v (any JSON value). EDDY_OK or
 * EDDY_ENOMEM; on failure the buffer's length is as before. */
int eddy__json_write(eddy__buf *b, const json_t *v);

/* Flags of eddy__json_write_ex. */
#define EDDY__JSONW_SORT_KEYS 1 /* object fields by key (bytewise): a canonical text */
/* Reals always with 17 digits. Canonical texts use it, and digests of them
 * are stored in journals: its output must never change. */
#define EDDY__JSONW_EXACT 2
/* The deepest level a value may stand at below the top (the top is 0): the
 * writers refuse a deeper one, as jansson's parser does. */
#define EDDY__JSONW_MAX_DEPTH 2048

/* As eddy__json_write, with flags; the text is NUL-terminated (the NUL is not
 * counted in b->len). EDDY_ELIMIT (nothing written) for a value with members
 * deeper than EDDY__JSONW_MAX_DEPTH, EDDY_ENOMEM when b cannot grow. */
int eddy__json_write_ex(eddy__buf *b, const json_t *v, int flags);

/* Pieces, for texts written without building them as jansson values first
 * (EDDY_OK or EDDY_ENOMEM): raw bytes; a JSON string of s (n bytes); an
 * integer; a NUL after the text (not counted in b->len). */
int eddy__buf_put(eddy__buf *b, const char *s, size_t n);
int eddy__json_write_str(eddy__buf *b, const char *s, size_t n);
int eddy__json_write_int(eddy__buf *b, json_int_t v);
int eddy__buf_nul(eddy__buf *b);

/*
 * The deepest nesting of arrays and objects in a value an agent hands to eddy
 * (in memory, counting the path's objects; in an event's attributes; in an
 * output; in a durable call's result). The writer stops at 2048 levels and
 * the reader (jansson) at 2048: this leaves room for the records around a
 * value in the journal.
 */
#define EDDY__VALUE_MAX_DEPTH EDDY_VALUE_MAX_DEPTH

/* 1 when v nests arrays/objects more than max levels (a scalar is 0 deep,
 * [] and {} 1), 0 when not, EDDY_ENOMEM. Iterative: it runs on the small
 * stacks of actions' coroutines. */
int eddy__json_deeper_than(const json_t *v, unsigned max);

/* json_decref(v) (NULL is a no-op) that takes no stack per level: jansson
 * frees a value recursively, ~85 bytes a level, and a value an action hands
 * to eddy (or a call's result) may be nested deeper than an action's stack
 * holds. For the values refused for their depth, freed on that stack. */
void eddy__json_decref_deep(json_t *v);

#endif /* EDDY_UTIL_JSONW_H */
