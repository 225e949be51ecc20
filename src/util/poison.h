/*
 * Debug builds poison what they free (as libuv does in uv_loop_close), so that
 * a use after free reads 0xdd bytes and fails loudly instead of seeing stale
 * but plausible state. Release builds compile it away.
 */
#ifndef EDDY_UTIL_POISON_H
#define EDDY_UTIL_POISON_H

#include <string.h>

#ifdef EDDY_DEBUG
#define EDDY__POISON(p, n) memset((p), 0xdd, (n))
#else
#define EDDY__POISON(p, n) ((void)(p), (void)(n))
#endif

#endif /* EDDY_UTIL_POISON_H */
