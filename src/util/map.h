/*
 * A string-keyed hash map (open addressing, linear probing, power-of-two
 * capacity, backward-shift deletion so that there are no tombstones). Keys are
 * borrowed: the caller keeps each key alive as long as its entry (typically the
 * key lives inside the value). Not thread-safe.
 */
#ifndef EDDY_UTIL_MAP_H
#define EDDY_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct eddy__map_slot {
    const char *key;
    size_t len;
    uint64_t hash;
    void *value;
} eddy__map_slot;

typedef struct eddy__map {
    eddy__map_slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t count;
} eddy__map;

void eddy__map_init(eddy__map *m);
void eddy__map_free(eddy__map *m);
/* The value for key, or NULL. */
void *eddy__map_get(const eddy__map *m, const char *key, size_t len);
/* Insert key (must be absent). EDDY_OK or EDDY_ENOMEM. */
int eddy__map_put(eddy__map *m, const char *key, size_t len, void *value);
/* The tables' hash of key, for the _h variants: computed where the key is
 * made (the input reader's thread), it is not computed again on the loop. */
uint64_t eddy__map_hash(const char *key, size_t len);
void *eddy__map_get_h(const eddy__map *m, const char *key, size_t len, uint64_t hash);
int eddy__map_put_h(eddy__map *m, const char *key, size_t len, uint64_t hash, void *value);
/* Remove key; returns its value or NULL when absent. */
void *eddy__map_remove(eddy__map *m, const char *key, size_t len);

/* Iterate: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... */

#endif /* EDDY_UTIL_MAP_H */
