/*
 * libFuzzer target for the JSONL line decoder (eddy__source_decode_line):
 * JSON parsing, the nesting pre-scan, key extraction and the key's JSON text.
 *
 * Built by CMake (tests/CMakeLists.txt): with -DEDDY_FUZZ=ON and clang as
 * the libFuzzer program fuzz_jsonl (`make fuzz`), and always as the replay
 * program fuzz_jsonl_replay (tests/fuzz/replay.c) that ctest runs on the
 * corpus in tests/fuzz/corpus/jsonl.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const reasons[] = {"not JSON",     "not a JSON object",   "no key field",
                                      "key is null",  "key is not a scalar", "nesting too deep",
                                      "line too long"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    /* Vary the depth limit with the input so that small limits get exercised. */
    unsigned max_depth = 1 + (unsigned)(size % 40);
    eddy__input in;
    memset(&in, 0, sizeof(in));
    int rc = eddy__source_decode_line(line, size, "k", max_depth, &in);
    if (rc == EDDY__LINE_OK) {
        if (!json_is_object(in.record) || in.key == NULL || in.reason != NULL)
            abort();
        /* The key text must be exactly what json_dumps gives. */
        char *want = json_dumps(json_object_get(in.record, "k"), JSON_ENCODE_ANY | JSON_COMPACT);
        if (want == NULL || strcmp(want, in.key) != 0)
            abort();
        free(want);
    } else if (rc == EDDY__LINE_BAD) {
        int known = 0;
        for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
            known |= in.reason == reasons[i] || strcmp(in.reason, reasons[i]) == 0;
        if (!known || in.record != NULL || in.key != NULL || in.raw == NULL)
            abort();
        if (in.raw_len > EDDY__SOURCE_RAW_MAX || in.raw_len > size ||
            memcmp(in.raw, line, in.raw_len) != 0 || in.raw[in.raw_len] != '\0')
            abort();
        if (in.raw_len < size && in.detail == NULL)
            abort(); /* a truncated raw is always explained */
    } else if (rc == EDDY__LINE_BLANK) {
        for (size_t i = 0; i < size; i++)
            if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
                abort();
        return 0;
    } else if (rc != EDDY_ENOMEM) {
        abort();
    }
    if (rc != EDDY_ENOMEM) {
        json_decref(in.record);
        free(in.key);
        free(in.detail);
        free(in.raw);
    }
    return 0;
}
