/* The journal log's entries and their replay; see jlog.h. */
#include <stdlib.h>
#include <string.h>

#include "store/jlog.h"
#include "util/le.h"
#include "util/map.h"
#include "util/vec.h"

#define NO_STR 0xffffffffu

/* idx (>= -2) as an unsigned integer, small ones small. */
static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* ---------------------------------------------------------------- encoding */

static size_t str_size(const char *s)
{
    return 4 + (s != NULL ? strlen(s) + 1 : 0);
}

static unsigned char *put_u64(unsigned char *o, uint64_t v)
{
    return eddy__le64_put(o, v);
}

/* s with its length n (NO_STR when s is NULL). */
static unsigned char *put_strn(unsigned char *o, const char *s, uint32_t n)
{
    o = eddy__le32_put(o, n);
    if (s != NULL) {
        memcpy(o, s, (size_t)n + 1);
        o += n + 1;
    }
    return o;
}

/* Append an entry of size n, written by the caller at the returned place. */
static unsigned char *reserve(eddy__buf *b, size_t n)
{
    if (eddy__buf_reserve(b, n) != EDDY_OK)
        return NULL;
    unsigned char *o = (unsigned char *)b->p + b->len;
    b->len += n;
    return o;
}

static unsigned char *put_str(unsigned char *o, const char *s)
{
    return put_strn(o, s, s != NULL ? (uint32_t)strlen(s) : NO_STR);
}

/* Unsigned LEB128: seven bits a byte, low first; at most 10 bytes. */
static inline unsigned char *put_varint(unsigned char *o, uint64_t v)
{
    while (v >= 0x80) {
        *o++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (unsigned char)v;
    return o;
}

/* A string of the compact entries: its length + 1 as a varint (0 when s is
 * NULL), the bytes and a NUL. */
static inline unsigned char *put_vstr(unsigned char *o, const char *s, size_t n)
{
    if (s == NULL) {
        *o++ = 0;
        return o;
    }
    o = put_varint(o, (uint64_t)n + 1);
    memcpy(o, s, n + 1);
    return o + n + 1;
}

int eddy__jlog_put(eddy__buf *b, const eddy__jrec *r)
{
    /* Room for the longest encoding (10-byte varints, lengths too),
     * then the length written: this runs for every durable record, and
     * sizing each varint first cost as much as writing it. */
    const char *s[8] = {r->key,    r->event_id, r->action,   r->fn_id,
                        r->digest, r->payload,  r->err_type, r->err_msg};
    size_t len[8], room = 1 + 10 + 10 + 2;
    for (int i = 0; i < 8; i++) {
        len[i] = s[i] != NULL ? strlen(s[i]) : 0;
        room += 10 + len[i] + 1;
    }
    if (eddy__buf_reserve(b, room) != EDDY_OK)
        return EDDY_ENOMEM;
    unsigned char *start = (unsigned char *)b->p + b->len, *o = start;
    *o++ = 'p';
    o = put_vstr(o, s[0], len[0]);
    o = put_varint(o, r->seq);
    o = put_vstr(o, s[1], len[1]);
    o = put_vstr(o, s[2], len[2]);
    o = put_varint(o, zigzag(r->idx));
    *o++ = (unsigned char)r->kind;
    *o++ = (unsigned char)r->status;
    for (int i = 3; i < 8; i++)
        o = put_vstr(o, s[i], len[i]);
    b->len += (size_t)(o - start);
    return EDDY_OK;
}

int eddy__jlog_cut(eddy__buf *b, const char *key, uint64_t seq, const char *event_id,
                   const char *action, int64_t from)
{
    size_t n = 1 + str_size(key) + 8 + str_size(event_id) + str_size(action) + 8;
    unsigned char *o = reserve(b, n);
    if (o == NULL)
        return EDDY_ENOMEM;
    *o++ = 'C';
    o = put_str(o, key);
    o = put_u64(o, seq);
    o = put_str(o, event_id);
    o = put_str(o, action);
    put_u64(o, (uint64_t)from);
    return EDDY_OK;
}

/* ---------------------------------------------------------------- decoding */

typedef struct reader {
    const unsigned char *p, *end;
    int bad;
} reader;

static uint64_t get_u64(reader *r)
{
    if (r->bad || r->end - r->p < 8) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = eddy__le64_get(r->p);
    r->p += 8;
    return v;
}

static int get_u8(reader *r)
{
    if (r->bad || r->p == r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

/* A string: NUL-terminated, no NUL inside. NULL when absent (an error
 * unless optional). */
static const char *get_str(reader *r, int optional)
{
    if (r->bad || r->end - r->p < 4) {
        r->bad = 1;
        return NULL;
    }
    uint32_t n = eddy__le32_get(r->p);
    r->p += 4;
    if (n == NO_STR) {
        if (!optional)
            r->bad = 1;
        return NULL;
    }
    if ((size_t)(r->end - r->p) < (size_t)n + 1 || r->p[n] != '\0' ||
        memchr(r->p, '\0', n) != NULL) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += (size_t)n + 1;
    return s;
}

/* A varint in its shortest form (the encoding stays canonical). */
static uint64_t get_varint(reader *r)
{
    uint64_t v = 0;
    for (int shift = 0; !r->bad && shift < 64; shift += 7) {
        if (r->p == r->end)
            break;
        unsigned char c = *r->p++;
        if (shift == 63 && c > 1)
            break; /* more than 64 bits */
        v |= (uint64_t)(c & 0x7f) << shift;
        if (c < 0x80) {
            if (c == 0 && shift > 0)
                break; /* not the shortest form */
            return v;
        }
    }
    r->bad = 1;
    return 0;
}

/* A string of the compact entries (see put_vstr). */
static const char *get_vstr(reader *r, int optional)
{
    uint64_t n = get_varint(r);
    if (r->bad)
        return NULL;
    if (n == 0) {
        if (!optional)
            r->bad = 1;
        return NULL;
    }
    n--;
    if ((uint64_t)(r->end - r->p) <= n || r->p[n] != '\0' || memchr(r->p, '\0', n) != NULL) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n + 1;
    return s;
}

/* A string of a compact ('p') or a fixed-size ('P', 'C') entry. */
static const char *get_s(reader *r, int compact, int optional)
{
    return compact ? get_vstr(r, optional) : get_str(r, optional);
}

int eddy__jlog_walk(const void *data, size_t len, eddy__jlog_fn fn, void *arg)
{
    if (len == 0) /* data may be NULL (an empty buffer): no arithmetic on it */
        return EDDY_OK;
    reader r = {.p = data, .end = (const unsigned char *)data + len};
    while (r.p < r.end) {
        eddy__jlog_entry e;
        memset(&e, 0, sizeof(e));
        int tag = get_u8(&r);
        if (tag != 'p' && tag != 'P' && tag != 'C')
            return EDDY_ESTATE;
        int c = tag == 'p';
        e.legacy = tag == 'P';
        e.cut = tag == 'C';
        e.rec.key = get_s(&r, c, 0);
        e.rec.seq = c ? get_varint(&r) : get_u64(&r);
        e.rec.event_id = get_s(&r, c, 0);
        e.rec.action = get_s(&r, c, 0);
        e.rec.idx = c ? unzigzag(get_varint(&r)) : (int64_t)get_u64(&r);
        if (!e.cut) {
            e.rec.kind = get_u8(&r);
            e.rec.status = get_u8(&r);
            e.rec.fn_id = get_s(&r, c, 1);
            e.rec.digest = get_s(&r, c, 1);
            e.rec.payload = get_s(&r, c, 1);
            e.rec.err_type = get_s(&r, c, 1);
            e.rec.err_msg = get_s(&r, c, 1);
        }
        if (r.bad)
            return EDDY_ESTATE;
        int rc = fn(arg, &e);
        if (rc != EDDY_OK)
            return rc;
    }
    return EDDY_OK;
}

/* ---------------------------------------------------------------- replay */

typedef struct jv_rec {
    eddy__jrec rec; /* strings point into text */
    int dead;
    size_t mklen;
    char text[]; /* the map key, then the strings */
} jv_rec;

/* The records of one action execution (key, seq, event_id, action), so
 * that a cut visits those alone, not every record of the view: a view of
 * all runs in flight (an inspection) may hold millions, and a compaction
 * writes a cut for each execution of each run it rewrites. */
typedef struct jv_exec {
    jv_rec **recs; /* live or dead */
    size_t n, cap;
    size_t klen;
    char key[]; /* the records' map key without its idx */
} jv_exec;

struct eddy__jview {
    jv_rec **v;
    size_t n, cap;
    eddy__map map;   /* map key -> its live record */
    eddy__map execs; /* map key without idx -> its jv_exec */
};

eddy__jview *eddy__jview_new(void)
{
    eddy__jview *v = calloc(1, sizeof(*v));
    if (v != NULL) {
        eddy__map_init(&v->map);
        eddy__map_init(&v->execs);
    }
    return v;
}

void eddy__jview_free(eddy__jview *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    eddy__map_free(&v->map);
    for (size_t i = 0; i < v->execs.cap; i++) {
        jv_exec *x = v->execs.slots[i].key != NULL ? v->execs.slots[i].value : NULL;
        if (x != NULL) {
            free(x->recs);
            free(x);
        }
    }
    eddy__map_free(&v->execs);
    free(v);
}

/* The execution whose map key (without idx) is k (klen bytes); made when
 * make is set. NULL when absent, or out of memory. */
static jv_exec *exec_of(eddy__jview *v, const char *k, size_t klen, int make)
{
    jv_exec *x = eddy__map_get(&v->execs, k, klen);
    if (x != NULL || !make)
        return x;
    if ((x = malloc(sizeof(*x) + klen)) == NULL)
        return NULL;
    x->recs = NULL;
    x->n = x->cap = 0;
    x->klen = klen;
    memcpy(x->key, k, klen);
    if (eddy__map_put(&v->execs, x->key, klen, x) != EDDY_OK) {
        free(x);
        return NULL;
    }
    return x;
}

/* The identity of a record: key, seq, event_id, action, idx, with NULs
 * between the strings (they hold none). */
static size_t map_key(char *o, const eddy__jrec *r)
{
    size_t n = 0, l;
    l = strlen(r->key) + 1;
    memcpy(o + n, r->key, l);
    n += l;
    memcpy(o + n, &r->seq, 8);
    n += 8;
    l = strlen(r->event_id) + 1;
    memcpy(o + n, r->event_id, l);
    n += l;
    l = strlen(r->action) + 1;
    memcpy(o + n, r->action, l);
    n += l;
    memcpy(o + n, &r->idx, 8);
    return n + 8;
}

static const char *copy(char **o, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t l = strlen(s) + 1;
    memcpy(*o, s, l);
    const char *r = *o;
    *o += l;
    return r;
}

static size_t opt_len(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static int same_exec(const eddy__jrec *a, const eddy__jrec *b)
{
    return a->seq == b->seq && strcmp(a->key, b->key) == 0 &&
           strcmp(a->event_id, b->event_id) == 0 && strcmp(a->action, b->action) == 0;
}

int eddy__jview_apply(eddy__jview *v, const eddy__jlog_entry *e)
{
    const eddy__jrec *r = &e->rec;
    if (e->cut) {
        size_t n = strlen(r->key) + strlen(r->event_id) + strlen(r->action) + 3 + 16;
        char small[256], *k = n <= sizeof(small) ? small : malloc(n);
        if (k == NULL)
            return EDDY_ENOMEM;
        jv_exec *ex = exec_of(v, k, map_key(k, r) - 8, 0);
        for (size_t i = 0; ex != NULL && i < ex->n; i++) {
            jv_rec *x = ex->recs[i];
            if (!x->dead && x->rec.kind == EDDY_JREC_CALL && x->rec.idx >= r->idx &&
                same_exec(&x->rec, r)) {
                x->dead = 1;
                eddy__map_remove(&v->map, x->text, x->mklen);
            }
        }
        if (k != small)
            free(k);
        return EDDY_OK;
    }
    size_t ids = strlen(r->key) + strlen(r->event_id) + strlen(r->action) + 3 + 16;
    size_t strs = opt_len(r->key) + opt_len(r->event_id) + opt_len(r->action) + opt_len(r->fn_id) +
                  opt_len(r->digest) + opt_len(r->payload) + opt_len(r->err_type) +
                  opt_len(r->err_msg);
    if (eddy__vec_grow(&v->v, &v->cap, v->n + 1, sizeof(*v->v), 16) != EDDY_OK)
        return EDDY_ENOMEM;
    jv_rec *x = malloc(sizeof(*x) + ids + strs);
    if (x == NULL)
        return EDDY_ENOMEM;
    x->dead = 0;
    x->mklen = map_key(x->text, r);
    char *o = x->text + x->mklen;
    x->rec = *r;
    x->rec.key = copy(&o, r->key);
    x->rec.event_id = copy(&o, r->event_id);
    x->rec.action = copy(&o, r->action);
    x->rec.fn_id = copy(&o, r->fn_id);
    x->rec.digest = copy(&o, r->digest);
    x->rec.payload = copy(&o, r->payload);
    x->rec.err_type = copy(&o, r->err_type);
    x->rec.err_msg = copy(&o, r->err_msg);
    jv_exec *ex = exec_of(v, x->text, x->mklen - 8, 1);
    if (ex == NULL ||
        eddy__vec_grow(&ex->recs, &ex->cap, ex->n + 1, sizeof(*ex->recs), 4) != EDDY_OK) {
        free(x);
        return EDDY_ENOMEM;
    }
    jv_rec *old = eddy__map_remove(&v->map, x->text, x->mklen);
    if (eddy__map_put(&v->map, x->text, x->mklen, x) != EDDY_OK) {
        if (old != NULL) /* as it was */
            (void)eddy__map_put(&v->map, old->text, old->mklen, old);
        free(x);
        return EDDY_ENOMEM;
    }
    if (old != NULL)
        old->dead = 1; /* replaced */
    ex->recs[ex->n++] = x;
    v->v[v->n++] = x;
    return EDDY_OK;
}

int eddy__jview_apply_fn(void *arg, const eddy__jlog_entry *e)
{
    return eddy__jview_apply(arg, e);
}

static int cmp_rec(const void *a, const void *b)
{
    const eddy__jrec *x = &(*(jv_rec *const *)a)->rec, *y = &(*(jv_rec *const *)b)->rec;
    int c = strcmp(x->key, y->key);
    if (c == 0)
        c = (x->seq > y->seq) - (x->seq < y->seq);
    if (c == 0)
        c = strcmp(x->event_id, y->event_id);
    if (c == 0)
        c = strcmp(x->action, y->action);
    if (c == 0)
        c = (x->idx > y->idx) - (x->idx < y->idx);
    return c;
}

int eddy__jview_emit(eddy__jview *v, int (*keep)(void *karg, const char *key, uint64_t seq),
                     void *karg, eddy__store_jrec_fn fn, void *arg)
{
    jv_rec **out = malloc((v->n != 0 ? v->n : 1) * sizeof(*out));
    if (out == NULL)
        return EDDY_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < v->n; i++) {
        jv_rec *x = v->v[i];
        if (!x->dead && (keep == NULL || keep(karg, x->rec.key, x->rec.seq)))
            out[n++] = x;
    }
    qsort(out, n, sizeof(*out), cmp_rec);
    int rc = EDDY_OK;
    for (size_t i = 0; i < n && rc == EDDY_OK; i++)
        rc = fn(arg, &out[i]->rec);
    free(out);
    return rc;
}
