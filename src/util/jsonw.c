#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/eddy.h"
#include "util/jsonw.h"

int eddy__buf_grow(eddy__buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return EDDY_OK;
    size_t ncap = b->cap != 0 ? b->cap : 256;
    while (ncap - b->len < n) {
        if (ncap > SIZE_MAX / 2)
            return EDDY_ENOMEM;
        ncap *= 2;
    }
    char *np = realloc(b->p, ncap);
    if (np == NULL)
        return EDDY_ENOMEM;
    b->p = np;
    b->cap = ncap;
    return EDDY_OK;
}

static int put(eddy__buf *b, const char *s, size_t n)
{
    if (eddy__buf_reserve(b, n) != EDDY_OK)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* 1 when none of the 8 bytes of w needs escaping (control characters, '"'
 * and '\\'): the classic "has a byte less than n" bit trick, exact for the
 * question "any?", applied three times. Bytes >= 0x80 pass. */
static inline int clean8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
    return ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & highs) == 0;
}

/* 1 for the bytes a JSON string must escape: control characters, '"', '\\'. */
// clang-format off
static const unsigned char must_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};
// clang-format on

static int put_string_any(eddy__buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    /* Worst case: every byte becomes \u00XX. */
    if (eddy__buf_reserve(b, n * 6 + 2) != EDDY_OK)
        return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        /* Eight bytes at a time while none needs escaping, else the next
         * eight (or the tail) one by one. A tail of a string of 8 bytes or
         * more is checked as the last eight bytes, which overlap bytes
         * already copied as they were: written again, they do not change. */
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (clean8(w)) {
                memcpy(o, &w, 8);
                o += 8;
                i += 8;
                continue;
            }
        } else if (n >= 8) {
            /* When the last eight bytes are clean, so are those of them
             * already copied, each as one byte right before o. */
            uint64_t w;
            memcpy(&w, s + n - 8, 8);
            if (clean8(w)) {
                memcpy(o - (8 - (n - i)), &w, 8);
                o += n - i;
                break;
            }
        }
        size_t end = n - i >= 8 ? i + 8 : n;
        for (; i < end; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!must_escape[c]) {
                *o++ = (char)c;
                continue;
            }
            *o++ = '\\';
            switch (c) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    return 0;
}

/* Most keys and many values are short and need no escape: those are
 * copied here, inlined in the callers, byte by byte (a string is not
 * padded: no word may be read past it), and the rest go to
 * put_string_any. W1 (four short strings and one long per output line):
 * ~384 -> ~266 instructions per line for its strings. */
static inline int put_string(eddy__buf *b, const char *s, size_t n)
{
    if (n < 8 && b->cap - b->len >= 10) {
        char *o = b->p + b->len;
        o[0] = '"';
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (must_escape[c])
                return put_string_any(b, s, n); /* it writes from b->len again */
            o[1 + i] = (char)c;
        }
        o[1 + n] = '"';
        b->len += n + 2;
        return 0;
    }
    return put_string_any(b, s, n);
}

/* "00" to "99": an integer's digits two at a time, half the divisions. */
static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

static int put_integer(eddy__buf *b, json_int_t v)
{
    char tmp[24];
    char *e = tmp + sizeof(tmp), *p = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    while (u >= 100) {
        const char *d = digit_pairs + (u % 100) * 2;
        u /= 100;
        p -= 2;
        memcpy(p, d, 2);
    }
    if (u >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + u * 2, 2);
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        *--p = '-';
    return put(b, p, (size_t)(e - p));
}

/*
 * A real's digits into tmp (size 40): exact, always 17 significant digits
 * (the canonical texts, whose digests are stored: never to change); else the
 * fewest that read back to the same double: %.15g, %.16g, %.17g, each read
 * back with strtod (15 digits hold every decimal of 15 digits or fewer that
 * a normal double came from: "0.1" stays "0.1"). A subnormal has fewer bits,
 * so fewer digits may name it: from 1 up ("5e-324", not
 * "4.94065645841247e-324"). The length, or -1.
 */
static int real_digits(char *tmp, double d, int exact)
{
    if (exact)
        return snprintf(tmp, 40, "%.17g", d);
    int p = d != 0 && d > -DBL_MIN && d < DBL_MIN ? 1 : 15;
    for (;; p++) {
        int n = snprintf(tmp, 40, "%.*g", p, d);
        if (p == 17 || n < 0 || strtod(tmp, NULL) == d)
            return n;
    }
}

static int put_real(eddy__buf *b, double d, int exact)
{
    char tmp[40];
    int n = real_digits(tmp, d, exact);
    if (n < 0 || (size_t)n >= sizeof(tmp) - 2)
        return -1;
    /* Keep it a real when read back, as jansson does. */
    if (strpbrk(tmp, ".eE") == NULL) {
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = '\0'; /* the search below stays inside the text */
    }
    /* And write the exponent as jansson does: no '+', no leading zeros
     * ("1e+300" is "1e300", "2e-05" is "2e-5"). */
    char *e = memchr(tmp, 'e', (size_t)n);
    if (e != NULL) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, (size_t)(tmp + n - end));
            n -= (int)(end - start);
        }
    }
    return put(b, tmp, (size_t)n);
}

typedef struct field {
    const char *k;
    size_t len;
    json_t *v;
} field;

static int cmp_field(const void *a, const void *b)
{
    const field *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Write scalar v: 0, -1 on ENOMEM, or 1 (nothing written) when v is an
 * array or an object. */
static inline int write_scalar(eddy__buf *b, const json_t *v, int flags)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return put_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_integer(b, json_integer_value(v));
    case JSON_REAL:
        return put_real(b, json_real_value(v), flags & EDDY__JSONW_EXACT);
    case JSON_TRUE:
        return put(b, "true", 4);
    case JSON_FALSE:
        return put(b, "false", 5);
    case JSON_NULL:
        return put(b, "null", 4);
    default:
        return 1;
    }
}

/* The deepest level a value may stand at below the top (the top is 0):
 * jansson refuses such values too. */
#define WRITE_MAX_DEPTH EDDY__JSONW_MAX_DEPTH

/*
 * An open container of the writer: an array (i its next index, n its size),
 * an object in insertion order (it the iterator of its next member, i the
 * members written) or an object with sorted keys (its fields, sorted, at
 * fields[f0 .. f0 + n) of the writer's field stack, i the next).
 */
enum { W_ARRAY, W_OBJECT, W_SORTED };

typedef struct wframe {
    const json_t *c;
    void *it;
    size_t i, n, f0;
    int kind;
} wframe;

/*
 * The writer's stacks: of open containers, and of the sorted fields of the
 * objects among them; in arrays on the C stack until they outgrow them
 * (WFRAMES containers, WFIELDS fields), then on the heap.
 *
 * The writer runs on actions' coroutine stacks (a durable call digests its
 * arguments there, and journals its result), so it takes no stack per
 * level. It recursed once per level before: ~136 bytes a level, ~488 with
 * sorted keys, and the digest of arguments nested ~550 levels deep
 * overflowed a 256 KiB stack. Now it takes the same stack at any depth,
 * ~3.4 KiB (measured, with the pieces' and qsort's frames; these arrays are
 * 3 KiB of it), and the WRITE_MAX_DEPTH levels it allows cost heap: 48
 * bytes a level, and 24 per sorted field of the open objects.
 */
#define WFRAMES 32
#define WFIELDS 64

typedef struct writer {
    wframe *st;
    size_t n, cap;
    field *fs;
    size_t nf, fcap;
    wframe st_local[WFRAMES];
    field fs_local[WFIELDS];
} writer;

/* Grow one of the writer's arrays (*p of *cap elements of size sz, used of
 * them in use, local the array it started with) to hold at least need.
 * 0, or -1 on ENOMEM. */
static int wgrow(void **p, size_t *cap, size_t used, size_t need, size_t sz, void *local)
{
    size_t ncap = *cap;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / sz)
            return -1;
        ncap *= 2;
    }
    void *np = malloc(ncap * sz);
    if (np == NULL)
        return -1;
    memcpy(np, *p, used * sz);
    if (*p != local)
        free(*p);
    *p = np;
    *cap = ncap;
    return 0;
}

/* Open container c: write its opening bracket and push its frame (with its
 * fields, sorted, when flags ask for sorted keys). 0 or -1. */
static inline int wopen(writer *w, eddy__buf *b, const json_t *c, int flags)
{
    if (w->n == w->cap &&
        wgrow((void **)&w->st, &w->cap, w->n, w->n + 1, sizeof(*w->st), w->st_local) != 0)
        return -1;
    wframe *f = &w->st[w->n];
    f->c = c;
    f->i = 0;
    if (json_is_array(c)) {
        f->kind = W_ARRAY;
        f->n = json_array_size(c);
    } else if (!(flags & EDDY__JSONW_SORT_KEYS)) {
        f->kind = W_OBJECT;
        f->it = json_object_iter((json_t *)c);
    } else {
        size_t n = json_object_size(c), i = 0;
        if (w->fcap - w->nf < n &&
            wgrow((void **)&w->fs, &w->fcap, w->nf, w->nf + n, sizeof(*w->fs), w->fs_local) != 0)
            return -1;
        field *fs = w->fs + w->nf;
        for (void *it = json_object_iter((json_t *)c); it != NULL && i < n;
             it = json_object_iter_next((json_t *)c, it))
            fs[i++] = (field){json_object_iter_key(it), json_object_iter_key_len(it),
                              json_object_iter_value(it)};
        qsort(fs, i, sizeof(*fs), cmp_field);
        f->kind = W_SORTED;
        f->f0 = w->nf;
        f->n = i;
        w->nf += i;
    }
    w->n++;
    return put(b, f->kind == W_ARRAY ? "[" : "{", 1);
}

#define IS_CONTAINER(v) (json_is_object(v) || json_is_array(v))

/*
 * Write v, walking its containers with the writer's own stacks: the
 * members of the innermost open container are written in a loop of its own
 * until one is a container (pushed) or none is left (popped), so that the
 * flat objects of most values cost about what the recursive writer's loops
 * did.
 */
static int write_value(eddy__buf *b, const json_t *v, int flags)
{
    int rc = write_scalar(b, v, flags);
    if (rc <= 0)
        return rc;
    writer w;
    w.st = w.st_local;
    w.cap = WFRAMES;
    w.n = 0;
    w.fs = w.fs_local;
    w.fcap = WFIELDS;
    w.nf = 0;
    rc = wopen(&w, b, v, flags);
    while (rc == 0 && w.n > 0) {
        wframe *f = &w.st[w.n - 1];
        /* Its members stand at level w.n. */
        int deep = w.n > WRITE_MAX_DEPTH;
        const json_t *child = NULL;
        /* The loops keep the frame's place in locals: the writes through
         * b->p could alias it. */
        size_t i = f->i;
        switch (f->kind) {
        case W_ARRAY: {
            const json_t *c = f->c;
            for (size_t n = f->n; i < n;) {
                if (deep || (i != 0 && put(b, ",", 1) != 0)) {
                    rc = deep ? -2 : -1;
                    break;
                }
                child = json_array_get(c, i++);
                if ((rc = write_scalar(b, child, flags)) != 0)
                    break;
                child = NULL;
            }
            break;
        }
        case W_OBJECT: {
            void *it = f->it;
            while (it != NULL) {
                void *cur = it;
                it = json_object_iter_next((json_t *)f->c, cur);
                if (deep || (i++ != 0 && put(b, ",", 1) != 0) ||
                    put_string(b, json_object_iter_key(cur), json_object_iter_key_len(cur)) != 0 ||
                    put(b, ":", 1) != 0) {
                    rc = deep ? -2 : -1;
                    break;
                }
                child = json_object_iter_value(cur);
                if ((rc = write_scalar(b, child, flags)) != 0)
                    break;
                child = NULL;
            }
            f->it = it;
            break;
        }
        default: {
            const field *fs = w.fs + f->f0;
            for (size_t n = f->n; i < n;) {
                const field *fd = &fs[i];
                if (deep || (i++ != 0 && put(b, ",", 1) != 0) ||
                    put_string(b, fd->k, fd->len) != 0 || put(b, ":", 1) != 0) {
                    rc = deep ? -2 : -1;
                    break;
                }
                child = fd->v;
                if ((rc = write_scalar(b, child, flags)) != 0)
                    break;
                child = NULL;
            }
            break;
        }
        }
        f->i = i;
        if (rc < 0)
            break;
        if (child != NULL) { /* rc 1: a container */
            rc = wopen(&w, b, child, flags);
        } else { /* the container ends */
            rc = put(b, f->kind == W_ARRAY ? "]" : "}", 1);
            if (f->kind == W_SORTED)
                w.nf = f->f0;
            w.n--;
        }
    }
    if (w.st != w.st_local)
        free(w.st);
    if (w.fs != w.fs_local)
        free(w.fs);
    return rc;
}

int eddy__json_write(eddy__buf *b, const json_t *v)
{
    size_t start = b->len;
    if (v == NULL || write_value(b, v, 0) != 0) {
        b->len = start;
        return EDDY_ENOMEM;
    }
    return EDDY_OK;
}

int eddy__json_write_ex(eddy__buf *b, const json_t *v, int flags)
{
    size_t start = b->len;
    int rc = v == NULL ? -1 : write_value(b, v, flags);
    if (rc != 0 || eddy__buf_reserve(b, 1) != EDDY_OK) {
        b->len = start;
        return rc == -2 ? EDDY_ELIMIT : EDDY_ENOMEM;
    }
    b->p[b->len] = '\0';
    return EDDY_OK;
}

int eddy__buf_put(eddy__buf *b, const char *s, size_t n)
{
    if (n == 0) /* b->p may be NULL yet: no pointer arithmetic on it */
        return EDDY_OK;
    return put(b, s, n) == 0 ? EDDY_OK : EDDY_ENOMEM;
}

int eddy__json_write_str(eddy__buf *b, const char *s, size_t n)
{
    return put_string(b, s, n) == 0 ? EDDY_OK : EDDY_ENOMEM;
}

int eddy__json_write_int(eddy__buf *b, json_int_t v)
{
    return put_integer(b, v) == 0 ? EDDY_OK : EDDY_ENOMEM;
}

static int deeper_walk(const json_t *v, unsigned max);

int eddy__json_deeper_than(const json_t *v, unsigned max)
{
    if (!IS_CONTAINER(v))
        return 0;
    if (max == 0)
        return 1;
    /* The top level in locals, the rest walked only under a member that is
     * a container: most values (an output, an event's attributes) are one
     * object of scalars, for which this is the whole cost (W1). */
    int rc = 0;
    if (json_is_object(v)) {
        for (void *it = json_object_iter((json_t *)v); it != NULL && rc == 0;
             it = json_object_iter_next((json_t *)v, it)) {
            const json_t *c = json_object_iter_value(it);
            if (IS_CONTAINER(c))
                rc = deeper_walk(c, max - 1);
        }
    } else {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && rc == 0; i++) {
            const json_t *c = json_array_get(v, i);
            if (IS_CONTAINER(c))
                rc = deeper_walk(c, max - 1);
        }
    }
    return rc;
}

/* eddy__json_deeper_than for a container v, iteratively. */
static int deeper_walk(const json_t *v, unsigned max)
{
    if (max == 0)
        return 1;
    /* One frame per open container: its next member (object) or index. */
    typedef struct frame {
        const json_t *c;
        void *it;
        size_t i;
    } frame;
    frame local[32], *st = local;
    size_t n = 0, cap = sizeof(local) / sizeof(local[0]);
    int rc = 0;
    st[n++] = (frame){v, json_object_iter((json_t *)v), 0};
    while (n > 0) {
        frame *f = &st[n - 1];
        const json_t *child;
        if (json_is_object(f->c)) {
            child = f->it != NULL ? json_object_iter_value(f->it) : NULL;
            if (f->it != NULL)
                f->it = json_object_iter_next((json_t *)f->c, f->it);
        } else {
            child = f->i < json_array_size(f->c) ? json_array_get(f->c, f->i++) : NULL;
        }
        if (child == NULL) {
            n--;
            continue;
        }
        if (!IS_CONTAINER(child))
            continue;
        if (n == max) {
            rc = 1;
            break;
        }
        if (n == cap && wgrow((void **)&st, &cap, n, n + 1, sizeof(*st), local) != 0) {
            rc = EDDY_ENOMEM;
            break;
        }
        st[n++] = (frame){child, json_object_iter((json_t *)child), 0};
    }
    if (st != local)
        free(st);
    return rc;
}

int eddy__buf_nul(eddy__buf *b)
{
    if (eddy__buf_reserve(b, 1) != EDDY_OK)
        return EDDY_ENOMEM;
    b->p[b->len] = '\0';
    return EDDY_OK;
}

void eddy__json_decref_deep(json_t *v)
{
    /* A container that this decref frees gives up its container members
     * first (each kept by a reference of ours, to be let go in its turn),
     * so jansson's free of it lets go of members that outlive it, never
     * recursing: only the members waiting in st take space, on the heap
     * past 32. Out of memory for more, the rest go the recursive way. */
    json_t *local[32], **st = local;
    size_t n = 0, cap = sizeof(local) / sizeof(local[0]);
    st[n++] = v;
    while (n > 0) {
        json_t *x = st[--n];
        if (x != NULL && x->refcount == 1 && IS_CONTAINER(x)) {
            size_t m = json_is_array(x) ? json_array_size(x) : 0;
            void *it = json_is_object(x) ? json_object_iter(x) : NULL;
            for (size_t i = 0; i < m || it != NULL; i++) {
                json_t *c = m > 0 ? json_array_get(x, i) : json_object_iter_value(it);
                if (m == 0)
                    it = json_object_iter_next(x, it);
                if (!IS_CONTAINER(c))
                    continue;
                if (n == cap && wgrow((void **)&st, &cap, n, n + 1, sizeof(*st), local) != 0)
                    break;
                st[n++] = json_incref(c);
            }
        }
        json_decref(x);
    }
    if (st != local)
        free(st);
}
