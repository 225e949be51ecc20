/* Strict UTF-8 checks, as jansson wants for keys and strings: no overlong
 * forms, no surrogates, nothing above U+10FFFF. What eddy writes as JSON (to
 * its journal, its state, its reports) must be UTF-8 to read back. */
#ifndef EDDY_UTIL_UTF8_H
#define EDDY_UTIL_UTF8_H

#include <stddef.h>

/* The length (1 to 4) of the valid UTF-8 character s starts with, or 0 when
 * s does not start with one (or is at the NUL: a sequence stops there). */
static inline size_t eddy__utf8_char(const unsigned char *s)
{
    unsigned c = *s;
    size_t len;
    unsigned long cp, min;
    if (c < 0x80)
        return c != 0;
    if ((c & 0xE0) == 0xC0)
        len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* 1 when the NUL-terminated s is all valid UTF-8, else 0. */
static inline int eddy__utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != 0) {
        if (*p < 0x80) { /* the common case: ASCII */
            p++;
            continue;
        }
        size_t len = eddy__utf8_char(p);
        if (len == 0)
            return 0;
        p += len;
    }
    return 1;
}

/*
 * s as valid UTF-8 text, for JSON (jansson refuses anything else): each
 * byte that does not start a valid UTF-8 character written as \xNN, as
 * Python's errors="backslashreplace" writes an undecodable byte, and as
 * eddy's messages quote bytes (a path or a key, which the system takes as
 * bytes, in a report). New (free()); NULL when out of memory.
 */
char *eddy__utf8_escaped(const char *s);

#endif /* EDDY_UTIL_UTF8_H */
