/* Growable arrays: one helper for the "double the capacity" idiom. */
#ifndef EDDY_UTIL_VEC_H
#define EDDY_UTIL_VEC_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/eddy.h"

/* Make room for need elements of size elem in the array *pp (any pointer
 * type, passed by address) of capacity *cap, doubling from first. EDDY_OK,
 * or EDDY_ENOMEM with the array unchanged. */
static inline int eddy__vec_grow(void *pp, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return EDDY_OK;
    size_t ncap = *cap != 0 ? *cap : first;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return EDDY_ENOMEM;
        ncap *= 2;
    }
    void *old;
    memcpy(&old, pp, sizeof(old));
    void *np = realloc(old, ncap * elem);
    if (np == NULL)
        return EDDY_ENOMEM;
    memcpy(pp, &np, sizeof(np));
    *cap = ncap;
    return EDDY_OK;
}

#endif /* EDDY_UTIL_VEC_H */
