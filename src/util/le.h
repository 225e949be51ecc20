/*
 * Little-endian integers in byte buffers (the journal log's entries, the
 * rows of pending inputs): one unaligned load or store where the machine is
 * little-endian, byte by byte elsewhere.
 */
#ifndef EDDY_UTIL_LE_H
#define EDDY_UTIL_LE_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define EDDY__LE_NATIVE 1
#else
#define EDDY__LE_NATIVE 0
#endif

static inline unsigned char *eddy__le64_put(unsigned char *o, uint64_t v)
{
#if EDDY__LE_NATIVE
    memcpy(o, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        o[i] = (unsigned char)(v >> (8 * i));
#endif
    return o + 8;
}

static inline unsigned char *eddy__le32_put(unsigned char *o, uint32_t v)
{
#if EDDY__LE_NATIVE
    memcpy(o, &v, 4);
#else
    for (int i = 0; i < 4; i++)
        o[i] = (unsigned char)(v >> (8 * i));
#endif
    return o + 4;
}

static inline uint64_t eddy__le64_get(const unsigned char *p)
{
    uint64_t v;
#if EDDY__LE_NATIVE
    memcpy(&v, p, 8);
#else
    v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
#endif
    return v;
}

static inline uint32_t eddy__le32_get(const unsigned char *p)
{
    uint32_t v;
#if EDDY__LE_NATIVE
    memcpy(&v, p, 4);
#else
    v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
    return v;
}

#endif /* EDDY_UTIL_LE_H */
