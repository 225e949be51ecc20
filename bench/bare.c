/*
 * bench_bare (W1 bound): the pipeline without the runtime. Reads JSONL lines,
 * parses each with jansson, extracts the key (as JSON text, as the runtime
 * does), and writes the record to the output as one compact line.
 *
 *   bench_bare INPUT OUTPUT [KEY_FIELD]
 *
 * Prints one JSON object: inputs, elapsed_s (the loop only), ns_per_input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return fwrite(buf, 1, size, data) == size ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_bare INPUT OUTPUT [KEY_FIELD]\n");
        return 2;
    }
    const char *key_field = argc > 3 ? argv[3] : "key";
    FILE *in = fopen(argv[1], "r");
    FILE *out = fopen(argv[2], "w");
    if (in == NULL || out == NULL) {
        perror("bench_bare");
        return 1;
    }
    static char obuf[1 << 16];
    setvbuf(out, obuf, _IOFBF, sizeof(obuf));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned long long n = 0, bad = 0;
    size_t keybytes = 0;
    double t0 = now_s();
    while ((len = getline(&line, &cap, in)) > 0) {
        json_error_t jerr;
        json_t *rec = json_loadb(line, (size_t)len, JSON_DECODE_ANY, &jerr);
        json_t *key = json_object_get(rec, key_field);
        if (key == NULL) {
            bad++;
            json_decref(rec);
            continue;
        }
        char *ktext = json_dumps(key, JSON_ENCODE_ANY | JSON_COMPACT);
        keybytes += ktext != NULL ? strlen(ktext) : 0;
        free(ktext);
        json_dump_callback(rec, dump_cb, out, JSON_COMPACT);
        fputc('\n', out);
        json_decref(rec);
        n++;
    }
    fflush(out);
    double el = now_s() - t0;
    free(line);
    fclose(in);
    fclose(out);
    printf("{\"inputs\": %llu, \"bad\": %llu, \"keybytes\": %zu, \"elapsed_s\": %.6f, "
           "\"ns_per_input\": %.1f}\n",
           n, bad, keybytes, el, n > 0 ? el * 1e9 / (double)n : 0.0);
    return 0;
}
