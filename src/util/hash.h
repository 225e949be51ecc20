/* Small, fast, non-cryptographic hashing used for tables and event ids. */
#ifndef EDDY_UTIL_HASH_H
#define EDDY_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Finalizer of splitmix64: a bijective 64-bit mix with good avalanche. */
static inline uint64_t eddy__mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* FNV-1a over bytes, finished with eddy__mix64 so that low bits are usable as
 * table indexes. */
static inline uint64_t eddy__hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return eddy__mix64(h);
}

#endif /* EDDY_UTIL_HASH_H */
