#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

char *eddy__utf8_escaped(const char *s)
{
    /* At most four bytes for each one: "\xNN". */
    size_t n = strlen(s);
    char *out = malloc(n * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    while (*p != 0) {
        size_t len = eddy__utf8_char(p);
        if (len == 0) {
            o += snprintf(o, 5, "\\x%02x", *p);
            p++;
        } else {
            memcpy(o, p, len);
            o += len;
            p += len;
        }
    }
    *o = '\0';
    return out;
}
