/* Error objects and codes (public API in eddy.h); internal helpers. */
#ifndef EDDY_CORE_ERROR_H
#define EDDY_CORE_ERROR_H

#include "eddy/eddy.h"

/* Set *err (when err is not NULL and *err is NULL) to a new error; returns code.
 * Keeps the first error when *err is already set. */
int eddy__error_set(eddy_error **err, int code, const char *type, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* s for a message, in single quotes: its first 64 bytes at most (then
 * "..."), with bytes that are not printable ASCII (or a backslash) as \xNN,
 * since a name or path need be neither printable nor UTF-8. out has size
 * bytes; EDDY__QUOTED_MAX is always enough. NULL is written as NULL. */
#define EDDY__QUOTED_MAX (64 * 4 + 8)
void eddy__quote(char *out, size_t size, const char *s);

/* A copy of e, or NULL (ENOMEM or e NULL). */
eddy_error *eddy__error_dup(const eddy_error *e);

#endif /* EDDY_CORE_ERROR_H */
