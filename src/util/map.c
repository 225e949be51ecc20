#include <stdlib.h>
#include <string.h>

#include "eddy/eddy.h"
#include "util/hash.h"
#include "util/map.h"

void eddy__map_init(eddy__map *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->count = 0;
}

void eddy__map_free(eddy__map *m)
{
    free(m->slots);
    eddy__map_init(m);
}

/*
 * The tables' own hash: eight bytes at a time (the last eight of a key of
 * eight or more, overlapping the word before), finished by eddy__mix64. It
 * is not stored anywhere, so it can differ from eddy__hash_bytes, whose
 * values (event ids, digests) are; FNV-1a byte by byte cost ~5 instructions
 * per byte, and the tables hash run keys, row ids and key texts on every
 * step of a run.
 */
uint64_t eddy__map_hash(const char *key, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len, w;
    if (len < 8) {
        w = 0;
        for (size_t i = 0; i < len; i++)
            w |= (uint64_t)(unsigned char)key[i] << (8 * i);
        return eddy__mix64(h ^ w);
    }
    size_t i = 0;
    for (; i + 8 < len; i += 8) {
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 32;
    }
    memcpy(&w, key + len - 8, 8);
    return eddy__mix64(h ^ w);
}

static size_t find(const eddy__map *m, const char *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const eddy__map_slot *s = &m->slots[i];
        if (s->key == NULL)
            return i;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
            return i;
    }
}

void *eddy__map_get_h(const eddy__map *m, const char *key, size_t len, uint64_t hash)
{
    if (m->count == 0)
        return NULL;
    size_t i = find(m, key, len, hash);
    return m->slots[i].key != NULL ? m->slots[i].value : NULL;
}

void *eddy__map_get(const eddy__map *m, const char *key, size_t len)
{
    return eddy__map_get_h(m, key, len, eddy__map_hash(key, len));
}

static int grow(eddy__map *m)
{
    size_t ncap = m->cap != 0 ? m->cap * 2 : 16;
    eddy__map_slot *old = m->slots;
    size_t ocap = m->cap;
    eddy__map_slot *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return EDDY_ENOMEM;
    m->slots = ns;
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].key != NULL)
            m->slots[find(m, old[i].key, old[i].len, old[i].hash)] = old[i];
    }
    free(old);
    return EDDY_OK;
}

int eddy__map_put(eddy__map *m, const char *key, size_t len, void *value)
{
    return eddy__map_put_h(m, key, len, eddy__map_hash(key, len), value);
}

int eddy__map_put_h(eddy__map *m, const char *key, size_t len, uint64_t h, void *value)
{
    /* Keep the load factor under 3/4. */
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != EDDY_OK)
        return EDDY_ENOMEM;
    size_t i = find(m, key, len, h);
    m->slots[i].key = key;
    m->slots[i].len = len;
    m->slots[i].hash = h;
    m->slots[i].value = value;
    m->count++;
    return EDDY_OK;
}

void *eddy__map_remove(eddy__map *m, const char *key, size_t len)
{
    if (m->count == 0)
        return NULL;
    size_t i = find(m, key, len, eddy__map_hash(key, len));
    if (m->slots[i].key == NULL)
        return NULL;
    void *value = m->slots[i].value;
    /* Backward-shift deletion: move later members of the probe run into the
     * hole when their home slot does not lie between the hole and them. */
    size_t mask = m->cap - 1;
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key != NULL; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = NULL;
    m->count--;
    return value;
}
