/*
 * Runtime configuration (public API in eddy.h); typed access for the runtime.
 *
 * A config keeps, for every option, the canonical text that eddy_config_get()
 * returns ("007" is stored as "7", "yes" as "true") and the typed value that
 * the runtime reads through eddy__config_values_get(). Both are updated
 * together by eddy_config_set(), which validates the whole value before it
 * changes anything: a failed set leaves the config as it was.
 *
 * A config is a plain value with no thread of its own; the runtime copies it
 * (eddy__config_dup) so that the caller may free or change its own afterwards.
 */
#ifndef EDDY_CORE_CONFIG_H
#define EDDY_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "eddy/eddy.h"

/* Limits enforced by eddy_config_set(). */
#define EDDY__CONFIG_ASYNC_THREADS_MAX  1024u
#define EDDY__CONFIG_MAX_LINE_BYTES_MIN 1024u
/* 1 TiB: the reader holds a line whole, and adds to its length (a line of
 * UINT64_MAX bytes and its '\r' wrapped to 0: every line that spanned two
 * reads was "too long"); half the address space where size_t is narrower. */
#define EDDY__CONFIG_MAX_LINE_BYTES_MAX \
    (SIZE_MAX / 2 < 1099511627776u ? (uint64_t)(SIZE_MAX / 2) : (uint64_t)1099511627776u)
/* jansson parses 2048 levels, counting the value innermost too: 2047
 * arrays/objects around it. */
#define EDDY__CONFIG_MAX_DEPTH_MAX          2047u
#define EDDY__CONFIG_STACK_SIZE_MIN         16384u
#define EDDY__CONFIG_STACK_SIZE_MAX         67108864u
#define EDDY__CONFIG_COMMIT_INTERVAL_MS_MAX 10000u

/*
 * Typed values. The strings are borrowed from the config and stay valid until
 * the option is set again or the config is freed.
 */
typedef struct eddy__config_values {
    const char *input;  /* never empty; "-" is stdin */
    const char *output; /* never empty; "-" is stdout */
    /* NULL: derived, see eddy__config_dead_letter(). "-" is stderr. Setting
     * dead-letter to "" goes back to the derived path. */
    const char *dead_letter;
    const char *key;   /* never empty */
    const char *state; /* "" means no state directory (in-memory state) */
    /* With a state: idle keys whose memory stays resident, at most; 0: no
     * bound (src/exec/runtime.c, key_park). */
    uint64_t key_cache;
    /* ... and their memory's bytes (as stored: its JSON text), at most; 0: no
     * bound. */
    uint64_t key_cache_bytes;
    unsigned async_threads;
    uint64_t max_in_flight;   /* runs in flight (keys with a run going) */
    uint64_t max_pending;     /* admitted inputs waiting behind their key's run */
    uint64_t max_run_actions; /* action executions a run may start; 0: no limit */
    int on_error_skip;        /* 0 stop, 1 skip */
    uint64_t max_line_bytes;
    unsigned max_depth; /* deepest JSON nesting of an input line (the record is depth 1) */
    unsigned commit_interval_ms;
    int strict_determinism; /* 0 or 1 */
    int retry_failed_calls; /* 0 or 1: journaled exceptions of durable calls are not replayed */
    /* Requested size; the runtime rounds it up to whole pages. */
    size_t stack_size;
} eddy__config_values;

/* Borrowed view of conf's typed values; valid while conf lives. */
const eddy__config_values *eddy__config_values_get(const eddy_config *conf);

/*
 * The dead-letter path to open: the one set, or else "<output>.dead.jsonl",
 * or "-" (stderr) when output is stdout. Borrowed, like the values. This is
 * also what eddy_config_get(conf, "dead-letter") returns.
 */
const char *eddy__config_dead_letter(const eddy_config *conf);

/* A deep copy of conf, or NULL on ENOMEM (or when conf is NULL). */
eddy_config *eddy__config_dup(const eddy_config *conf);

#endif /* EDDY_CORE_CONFIG_H */
