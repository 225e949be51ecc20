#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "util/utf8.h"
#include "io/paths.h"

/* One entry per option, in the order eddy.h lists them. */
enum config_id {
    OPT_INPUT,
    OPT_OUTPUT,
    OPT_DEAD_LETTER,
    OPT_KEY,
    OPT_ASYNC_THREADS,
    OPT_MAX_IN_FLIGHT,
    OPT_MAX_PENDING,
    OPT_MAX_RUN_ACTIONS,
    OPT_ON_ERROR,
    OPT_MAX_LINE_BYTES,
    OPT_MAX_DEPTH,
    OPT_STATE,
    OPT_KEY_CACHE,
    OPT_KEY_CACHE_BYTES,
    OPT_COMMIT_INTERVAL_MS,
    OPT_STRICT_DETERMINISM,
    OPT_RETRY_FAILED_CALLS,
    OPT_STACK_SIZE,
    OPT_COUNT
};

enum config_kind {
    KIND_TEXT,     /* any non-empty string */
    KIND_TEXT_OPT, /* any string; "" has a meaning of its own */
    KIND_NUMBER,   /* full-string decimal in [min, max] */
    KIND_ON_ERROR, /* stop | skip */
    KIND_BOOL      /* true | false | 1 | 0 | yes | no */
};

static const struct config_def {
    const char *name;
    enum config_kind kind;
    uint64_t min, max;   /* KIND_NUMBER */
    const char *accepts; /* KIND_TEXT: what the error message says is accepted */
} defs[OPT_COUNT] = {
    [OPT_INPUT] = {"input", KIND_TEXT, 0, 0, "a path, or - for stdin"},
    [OPT_OUTPUT] = {"output", KIND_TEXT, 0, 0, "a path, or - for stdout"},
    [OPT_DEAD_LETTER] = {"dead-letter", KIND_TEXT_OPT, 0, 0, NULL},
    [OPT_KEY] = {"key", KIND_TEXT, 0, 0, "the name of a top-level field"},
    [OPT_ASYNC_THREADS] = {"async-threads", KIND_NUMBER, 1, EDDY__CONFIG_ASYNC_THREADS_MAX, NULL},
    [OPT_MAX_IN_FLIGHT] = {"max-in-flight", KIND_NUMBER, 1, UINT64_MAX, NULL},
    [OPT_MAX_PENDING] = {"max-pending", KIND_NUMBER, 1, UINT64_MAX, NULL},
    [OPT_MAX_RUN_ACTIONS] = {"max-run-actions", KIND_NUMBER, 0, UINT64_MAX, NULL},
    [OPT_ON_ERROR] = {"on-error", KIND_ON_ERROR, 0, 0, NULL},
    [OPT_MAX_LINE_BYTES] = {"max-line-bytes", KIND_NUMBER, EDDY__CONFIG_MAX_LINE_BYTES_MIN,
                            EDDY__CONFIG_MAX_LINE_BYTES_MAX, NULL},
    [OPT_MAX_DEPTH] = {"max-depth", KIND_NUMBER, 1, EDDY__CONFIG_MAX_DEPTH_MAX, NULL},
    [OPT_STATE] = {"state", KIND_TEXT_OPT, 0, 0, NULL},
    [OPT_KEY_CACHE] = {"key-cache", KIND_NUMBER, 0, UINT64_MAX, NULL},
    [OPT_KEY_CACHE_BYTES] = {"key-cache-bytes", KIND_NUMBER, 0, UINT64_MAX, NULL},
    [OPT_COMMIT_INTERVAL_MS] = {"commit-interval-ms", KIND_NUMBER, 0,
                                EDDY__CONFIG_COMMIT_INTERVAL_MS_MAX, NULL},
    [OPT_STRICT_DETERMINISM] = {"strict-determinism", KIND_BOOL, 0, 0, NULL},
    [OPT_RETRY_FAILED_CALLS] = {"retry-failed-calls", KIND_BOOL, 0, 0, NULL},
    [OPT_STACK_SIZE] = {"stack-size", KIND_NUMBER, EDDY__CONFIG_STACK_SIZE_MIN,
                        EDDY__CONFIG_STACK_SIZE_MAX, NULL},
};

struct eddy_config {
    char *text[OPT_COUNT]; /* canonical text of each option, owned */
    /* What dead-letter resolves to while it is unset ("" in text): follows output. */
    char *derived_dead_letter;
    eddy__config_values values;
};

/* Values longer than this are cut short in error messages. */
#define VALUE_SHOWN_MAX 64

static int find_option(const char *name)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (strcmp(defs[i].name, name) == 0)
            return i;
    return -1;
}

/* Digits only, no sign, no blanks; 0 on success, -1 on anything else or overflow. */
static int parse_decimal(const char *s, uint64_t *out)
{
    uint64_t n = 0;
    if (*s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 0;
}

/* 1 true, 0 false, -1 not a boolean. */
static int parse_bool(const char *s)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0)
        return 1;
    if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcmp(s, "no") == 0)
        return 0;
    return -1;
}

static int bad_value(eddy_error **err, int id, const char *value)
{
    const struct config_def *d = &defs[id];
    char accepts[96];
    switch (d->kind) {
    case KIND_NUMBER: {
        /* A limit of 2^64 - 1 goes unsaid, unless the value is over it (all
         * digits, too many): it was refused as if it were under min. */
        uint64_t n;
        if (d->max == UINT64_MAX && (parse_decimal(value, &n) == 0 || value[0] == '\0' ||
                                     value[strspn(value, "0123456789")] != '\0'))
            snprintf(accepts, sizeof(accepts), "a whole number of at least %" PRIu64, d->min);
        else
            snprintf(accepts, sizeof(accepts), "a whole number from %" PRIu64 " to %" PRIu64,
                     d->min, d->max);
        break;
    }
    case KIND_ON_ERROR:
        snprintf(accepts, sizeof(accepts), "stop or skip");
        break;
    case KIND_BOOL:
        snprintf(accepts, sizeof(accepts), "true, false, 1, 0, yes or no");
        break;
    default:
        snprintf(accepts, sizeof(accepts), "%s", d->accepts != NULL ? d->accepts : "a string");
        break;
    }
    const char *more = strlen(value) > VALUE_SHOWN_MAX ? "..." : "";
    return eddy__error_set(err, EDDY_ECONFIG, "config",
                           "invalid value '%.*s%s' for option '%s': expected %s", VALUE_SHOWN_MAX,
                           value, more, d->name, accepts);
}

/* Point the typed values at the current texts; numbers are stored by set_option().
 * While eddy_config_new() fills the texts in, later ones are still NULL. */
static void sync_strings(eddy_config *conf)
{
    eddy__config_values *v = &conf->values;
    const char *dl = conf->text[OPT_DEAD_LETTER];
    v->input = conf->text[OPT_INPUT];
    v->output = conf->text[OPT_OUTPUT];
    v->dead_letter = dl != NULL && *dl != '\0' ? dl : NULL;
    v->key = conf->text[OPT_KEY];
    v->state = conf->text[OPT_STATE];
}

static char *derive_dead_letter(const char *output)
{
    static const char suffix[] = ".dead.jsonl";
    /* Next to a file; stderr beside stdout ("-", or a path that names it:
     * /dev/stdout, the file stdout was redirected to), /dev/null, a pipe or
     * a terminal (/dev/null.dead.jsonl would be a file created in /dev, or
     * refused). */
    struct stat st;
    if (eddy__paths_std_stream(output, STDOUT_FILENO) >= 0 ||
        (stat(output, &st) == 0 && !S_ISREG(st.st_mode)))
        return strdup("-");
    size_t n = strlen(output);
    char *s = malloc(n + sizeof(suffix));
    if (s == NULL)
        return NULL;
    memcpy(s, output, n);
    memcpy(s + n, suffix, sizeof(suffix));
    return s;
}

/*
 * Validate value for option id; on success replace its text and typed value.
 * Everything that can fail (parsing, allocation) happens before conf changes.
 */
static int set_option(eddy_config *conf, int id, const char *value, eddy_error **err)
{
    const struct config_def *d = &defs[id];
    uint64_t n = 0;
    int b = 0;
    char canon[24];
    const char *text = value;

    switch (d->kind) {
    case KIND_TEXT:
        if (*value == '\0')
            return bad_value(err, id, value);
        if (id == OPT_KEY && !eddy__utf8_valid(value)) {
            char *shown = eddy__utf8_escaped(value);
            int rc = eddy__error_set(err, EDDY_ECONFIG, "config",
                                     "invalid value '%.*s%s' for option 'key': not UTF-8, and a "
                                     "JSON field name is UTF-8 text: no input's field could match "
                                     "it",
                                     VALUE_SHOWN_MAX, shown != NULL ? shown : "?",
                                     shown != NULL && strlen(shown) > VALUE_SHOWN_MAX ? "..." : "");
            free(shown);
            return rc;
        }
        break;
    case KIND_TEXT_OPT:
        break;
    case KIND_NUMBER:
        if (parse_decimal(value, &n) != 0 || n < d->min || n > d->max)
            return bad_value(err, id, value);
        snprintf(canon, sizeof(canon), "%" PRIu64, n);
        text = canon;
        break;
    case KIND_ON_ERROR:
        if (strcmp(value, "stop") == 0)
            b = 0;
        else if (strcmp(value, "skip") == 0)
            b = 1;
        else
            return bad_value(err, id, value);
        break;
    case KIND_BOOL:
        b = parse_bool(value);
        if (b < 0)
            return bad_value(err, id, value);
        text = b ? "true" : "false";
        break;
    }

    char *copy = strdup(text);
    char *derived = NULL;
    if (copy == NULL)
        goto nomem;
    if (id == OPT_OUTPUT && (derived = derive_dead_letter(copy)) == NULL)
        goto nomem;

    free(conf->text[id]);
    conf->text[id] = copy;
    if (derived != NULL) {
        free(conf->derived_dead_letter);
        conf->derived_dead_letter = derived;
    }
    eddy__config_values *v = &conf->values;
    switch (id) {
    case OPT_ASYNC_THREADS:
        v->async_threads = (unsigned)n;
        break;
    case OPT_MAX_IN_FLIGHT:
        v->max_in_flight = n;
        break;
    case OPT_MAX_PENDING:
        v->max_pending = n;
        break;
    case OPT_MAX_RUN_ACTIONS:
        v->max_run_actions = n;
        break;
    case OPT_ON_ERROR:
        v->on_error_skip = b;
        break;
    case OPT_MAX_LINE_BYTES:
        v->max_line_bytes = n;
        break;
    case OPT_MAX_DEPTH:
        v->max_depth = (unsigned)n;
        break;
    case OPT_KEY_CACHE:
        v->key_cache = n;
        break;
    case OPT_KEY_CACHE_BYTES:
        v->key_cache_bytes = n;
        break;
    case OPT_COMMIT_INTERVAL_MS:
        v->commit_interval_ms = (unsigned)n;
        break;
    case OPT_STRICT_DETERMINISM:
        v->strict_determinism = b;
        break;
    case OPT_RETRY_FAILED_CALLS:
        v->retry_failed_calls = b;
        break;
    case OPT_STACK_SIZE:
        v->stack_size = (size_t)n;
        break;
    default:
        break;
    }
    sync_strings(conf);
    return EDDY_OK;

nomem:
    free(copy);
    return eddy__error_set(err, EDDY_ENOMEM, "config", "out of memory");
}

/* Twice the online cores, within the accepted range; 2 when the count is unknown. */
static unsigned default_async_threads(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    if (cores > (long)EDDY__CONFIG_ASYNC_THREADS_MAX / 2)
        cores = (long)EDDY__CONFIG_ASYNC_THREADS_MAX / 2;
    return (unsigned)cores * 2;
}

eddy_config *eddy_config_new(void)
{
    eddy_config *conf = calloc(1, sizeof(*conf));
    if (conf == NULL)
        return NULL;
    char threads[16];
    snprintf(threads, sizeof(threads), "%u", default_async_threads());
    const char *defaults[OPT_COUNT] = {
        [OPT_INPUT] = "-",
        [OPT_OUTPUT] = "-",
        [OPT_DEAD_LETTER] = "",
        [OPT_KEY] = "key",
        [OPT_ASYNC_THREADS] = threads,
        [OPT_MAX_IN_FLIGHT] = "10000",
        [OPT_MAX_PENDING] = "10000",
        [OPT_MAX_RUN_ACTIONS] = "100000",
        [OPT_ON_ERROR] = "stop",
        [OPT_MAX_LINE_BYTES] = "16777216",
        [OPT_MAX_DEPTH] = "64",
        [OPT_STATE] = "",
        [OPT_KEY_CACHE] = "100000",
        [OPT_KEY_CACHE_BYTES] = "268435456",
        [OPT_COMMIT_INTERVAL_MS] = "2",
        [OPT_STRICT_DETERMINISM] = "false",
        [OPT_RETRY_FAILED_CALLS] = "false",
        [OPT_STACK_SIZE] = "262144",
    };
    /* The defaults go through the same validation as any value, so that the
     * typed values and the texts cannot disagree. Only ENOMEM can fail here. */
    for (int i = 0; i < OPT_COUNT; i++)
        if (set_option(conf, i, defaults[i], NULL) != EDDY_OK)
            goto fail;
    return conf;

fail:
    eddy_config_free(conf);
    return NULL;
}

void eddy_config_free(eddy_config *conf)
{
    if (conf == NULL)
        return;
    for (int i = 0; i < OPT_COUNT; i++)
        free(conf->text[i]);
    free(conf->derived_dead_letter);
    free(conf);
}

int eddy_config_set(eddy_config *conf, const char *name, const char *value, eddy_error **err)
{
    if (conf == NULL || name == NULL || value == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "config",
                               "eddy_config_set: conf, name and value must not be NULL");
    int id = find_option(name);
    if (id < 0)
        return eddy__error_set(err, EDDY_ECONFIG, "config", "unknown option '%.*s%s'",
                               VALUE_SHOWN_MAX, name, strlen(name) > VALUE_SHOWN_MAX ? "..." : "");
    return set_option(conf, id, value, err);
}

const char *eddy_config_get(const eddy_config *conf, const char *name)
{
    if (conf == NULL || name == NULL)
        return NULL;
    int id = find_option(name);
    if (id < 0)
        return NULL;
    if (id == OPT_DEAD_LETTER)
        return eddy__config_dead_letter(conf);
    return conf->text[id];
}

const eddy__config_values *eddy__config_values_get(const eddy_config *conf)
{
    return &conf->values;
}

const char *eddy__config_dead_letter(const eddy_config *conf)
{
    return conf->values.dead_letter != NULL ? conf->values.dead_letter : conf->derived_dead_letter;
}

eddy_config *eddy__config_dup(const eddy_config *conf)
{
    if (conf == NULL)
        return NULL;
    eddy_config *copy = eddy_config_new();
    if (copy == NULL)
        return NULL;
    /* Canonical texts parse back to the same values. */
    for (int i = 0; i < OPT_COUNT; i++)
        if (set_option(copy, i, conf->text[i], NULL) != EDDY_OK)
            goto fail;
    return copy;

fail:
    eddy_config_free(copy);
    return NULL;
}
