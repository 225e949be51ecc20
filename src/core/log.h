/*
 * libeddy's notes and warnings: what a run says that is not an error (a
 * durable call that no longer matches its journal, a line left unread).
 * They go to the hook an embedding program set (eddy_set_log_hook), or to
 * stderr as "eddy: note: ..." or "eddy: warning: ...". Messages before an
 * abort() are not among them: they are written to stderr at once.
 */
#ifndef EDDY_CORE_LOG_H
#define EDDY_CORE_LOG_H

#include "eddy/eddy.h"

/* Say it at level (EDDY_LOG_NOTE, EDDY_LOG_WARNING); any thread. */
void eddy__log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif /* EDDY_CORE_LOG_H */
