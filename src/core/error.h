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

/* A copy of e, or NULL (ENOMEM or e NULL). */
eddy_error *eddy__error_dup(const eddy_error *e);

#endif /* EDDY_CORE_ERROR_H */
