/*
 * libFuzzer target for the configuration: eddy_config_set() with an arbitrary
 * name and value (the input is "name\0value"; without a NUL, the name is a
 * known option picked by the first byte and the rest is the value).
 *
 * Checks: a set either succeeds or fails with EDDY_ECONFIG and a message; a
 * failed set leaves every option as it was; a successful one stores a
 * canonical text that eddy_config_get() returns and that sets again to the
 * same text; a copy (eddy__config_dup) agrees option by option.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "core/config.h"

static const char *const names[] = {
    "input",         "output",        "dead-letter",        "key",
    "async-threads", "max-in-flight", "on-error",           "max-line-bytes",
    "max-depth",     "state",         "commit-interval-ms", "strict-determinism",
    "stack-size",    "max-pending",   "max-run-actions",    "key-cache"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

/* Every option's text, copied. */
static void snapshot(const eddy_config *c, char *out[NNAMES])
{
    for (size_t i = 0; i < NNAMES; i++) {
        const char *v = eddy_config_get(c, names[i]);
        CHECK(v != NULL);
        out[i] = strdup(v);
        CHECK(out[i] != NULL);
    }
}

/* Every option but skip (and dead-letter, derived from output while unset,
 * when skip is output) as in before. */
static void same(const eddy_config *c, char *const before[NNAMES], int skip)
{
    for (size_t i = 0; i < NNAMES; i++) {
        if ((int)i == skip || (skip == 1 && i == 2))
            continue;
        CHECK(strcmp(eddy_config_get(c, names[i]), before[i]) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *name, *value;
    const char *nul = memchr(buf, '\0', size);
    if (nul != NULL) {
        name = buf;
        value = nul + 1;
    } else {
        name = size > 0 ? names[(unsigned char)buf[0] % NNAMES] : names[0];
        value = size > 0 ? buf + 1 : buf;
    }
    int idx = -1;
    for (size_t i = 0; i < NNAMES; i++)
        if (strcmp(name, names[i]) == 0)
            idx = (int)i;

    eddy_config *c = eddy_config_new();
    CHECK(c != NULL);
    char *before[NNAMES];
    snapshot(c, before);
    eddy_error *err = NULL;
    int rc = eddy_config_set(c, name, value, &err);
    if (rc != EDDY_OK) {
        CHECK(rc == EDDY_ECONFIG || rc == EDDY_ENOMEM);
        CHECK(err != NULL && eddy_error_message(err)[0] != '\0');
        same(c, before, -1);
        if (idx < 0)
            CHECK(eddy_config_get(c, name) == NULL);
    } else {
        CHECK(err == NULL && idx >= 0);
        same(c, before, idx);
        char *got = strdup(eddy_config_get(c, name));
        CHECK(got != NULL);
        CHECK(eddy_config_set(c, name, got, NULL) == EDDY_OK);
        CHECK(strcmp(eddy_config_get(c, name), got) == 0);
        free(got);
    }
    eddy_error_free(err);

    eddy_config *d = eddy__config_dup(c);
    CHECK(d != NULL);
    for (size_t i = 0; i < NNAMES; i++)
        CHECK(strcmp(eddy_config_get(c, names[i]), eddy_config_get(d, names[i])) == 0);
    eddy_config_free(d);
    for (size_t i = 0; i < NNAMES; i++)
        free(before[i]);
    eddy_config_free(c);
    free(buf);
    return 0;
}
