/*
 * The small utilities: the string map (against a plain array as reference,
 * through growth and backward-shift deletion), the JSON writer (against
 * jansson's own compact dump, which it promises to match) and the
 * little-endian helpers.
 */
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eddy/eddy.h"
#include "exec/coro.h"
#include "util/forkfd.h"
#include "util/hash.h"
#include "util/hex.h"
#include "util/jsonw.h"
#include "util/le.h"
#include "util/map.h"
#include "util/vec.h"

/* ------------------------------------------------------------ map */

#define NKEYS 5000

static void test_map_against_reference(void **state)
{
    (void)state;
    static char keys[NKEYS][40];
    static int present[NKEYS];
    eddy__map m;
    eddy__map_init(&m);
    assert_null(eddy__map_get(&m, "x", 1));
    assert_null(eddy__map_remove(&m, "x", 1));
    /* Lengths 2 to 29: the hash reads words, a tail, and a last word that
     * overlaps the one before. */
    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "k%d%.*s", i, i % 25, "=========================");
    uint64_t r = 42;
    size_t count = 0;
    for (int step = 0; step < 200000; step++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        int i = (int)((r >> 33) % NKEYS);
        size_t len = strlen(keys[i]);
        if (present[i] && (r & 1)) {
            assert_ptr_equal(eddy__map_remove(&m, keys[i], len), &present[i]);
            present[i] = 0;
            count--;
        } else if (!present[i]) {
            assert_int_equal(eddy__map_put(&m, keys[i], len, &present[i]), EDDY_OK);
            present[i] = 1;
            count++;
        }
        assert_int_equal(m.count, count);
        /* Every so often, check every key against the reference. */
        if (step % 20000 == 0) {
            for (int j = 0; j < NKEYS; j++) {
                void *v = eddy__map_get(&m, keys[j], strlen(keys[j]));
                if (present[j])
                    assert_ptr_equal(v, &present[j]);
                else
                    assert_null(v);
            }
        }
    }
    /* Keys that share a prefix or differ only in length are distinct. */
    assert_null(eddy__map_get(&m, "k1", 1));
    assert_null(eddy__map_get(&m, "k1", 2));
    assert_null(eddy__map_get(&m, keys[24], strlen(keys[24]) - 1));
    eddy__map_free(&m);
    assert_int_equal(m.count, 0);
}

/* ------------------------------------------------------------ jsonw */

/* v (taken) is written exactly as json_dumps writes it. */
static void writes_like_jansson(json_t *v)
{
    assert_non_null(v);
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    eddy__buf b = {0};
    assert_int_equal(eddy__json_write(&b, v), EDDY_OK);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.p, want, b.len);
    free(want);
    free(b.p);
    json_decref(v);
}

/* The fewest significant digits, 1 to 17, with which printf's %g of d reads
 * back to d. */
static int fewest_digits(double d)
{
    char t[40];
    int p = 1;
    for (; p < 17; p++) {
        snprintf(t, sizeof(t), "%.*g", p, d);
        if (strtod(t, NULL) == d)
            break;
    }
    return p;
}

/* The precision the writer's text has (as jansson's JSON_REAL_PRECISION):
 * the fewest digits, but at least 15 for a normal double, whose %.15g is
 * its shortest decimal (with trailing zeros cut) in the notation it always
 * had: 1.5e10 stays "15000000000.0". */
static int writer_precision(double d)
{
    int p = fewest_digits(d);
    int subnormal = d != 0 && d > -DBL_MIN && d < DBL_MIN;
    return subnormal || p > 15 ? p : 15;
}

/* The reals of v (at any depth) into out, as far as cap goes; *n counts
 * them all. */
static void reals_of(const json_t *v, double *out, size_t cap, size_t *n)
{
    size_t i;
    const char *k;
    json_t *m;
    if (json_is_real(v)) {
        if (*n < cap)
            out[*n] = json_real_value(v);
        ++*n;
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            reals_of(m, out, cap, n);
        }
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, m)
        {
            reals_of(m, out, cap, n);
        }
    }
}

/* v written as json_dumps writes it, each real with the fewest digits that
 * read back to it; with EDDY__JSONW_EXACT, as json_dumps writes it (17
 * digits), reading back to the same value. */
static void same_as_jansson(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (v == NULL)
        fail_msg("bad test input %s: %s", text, e.text);
    /* jansson has one precision for the whole text: the cases hold one real,
     * or reals that need the same digits. */
    double reals[8];
    size_t nreals = 0;
    reals_of(v, reals, 8, &nreals);
    assert_true(nreals <= 8);
    int p = nreals > 0 ? writer_precision(reals[0]) : 17;
    for (size_t i = 1; i < nreals; i++)
        assert_int_equal(writer_precision(reals[i]), p);
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(p));
    eddy__buf b = {0};
    assert_int_equal(eddy__json_write(&b, v), EDDY_OK);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.p, want, b.len);
    free(want);
    /* Exact reals: jansson's 17 digits, reading back to the same value. */
    b.len = 0;
    assert_int_equal(eddy__json_write_ex(&b, v, EDDY__JSONW_EXACT), EDDY_OK);
    want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_string_equal(b.p, want);
    free(want);
    json_t *back = json_loads(b.p, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(back);
    assert_true(json_equal(v, back));
    json_decref(back);
    free(b.p);
    json_decref(v);
}

static void test_jsonw_matches_jansson(void **state)
{
    (void)state;
    const char *cases[] = {
        "null",
        "true",
        "false",
        "0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "0.1",
        "1e300",
        "-2.5e-300",
        "2e-5",
        "1.5e10",
        "1e100",
        "-0.0",
        "3.0",
        "123456789012345678.0",
        "\"\"",
        "\"plain\"",
        "\"quote \\\" backslash \\\\ slash /\"",
        "\"controls \\b\\f\\n\\r\\t \\u0001 \\u001f \\u007f\"",
        "\"nul \\u0000 inside\"",
        "\"utf-8 \\u00e9 \\u4e2d \\ud83d\\ude00\"",
        "[]",
        "{}",
        "[1,[2,[3,[]]],{\"a\":{}}]",
        "{\"z\":1,\"a\":2,\"m\":[true,null,\"x\"]}",
        "{\"key with \\\"quotes\\\"\":{\"\\n\":0.25}}",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        same_as_jansson(cases[i]);
}

/* Significant digits of a real's text: "100.0" and "1e2" have one. */
static int significant_digits(const char *t)
{
    char d[40];
    size_t n = 0;
    for (; *t != '\0' && *t != 'e'; t++)
        if (*t >= '0' && *t <= '9' && (n > 0 || *t != '0') && n < sizeof(d))
            d[n++] = *t;
    while (n > 0 && d[n - 1] == '0')
        n--;
    return n > 0 ? (int)n : 1;
}

/* d written by both writers: checked against want and want_exact when they
 * are given; the text is a JSON real that reads back to d bit for bit, and
 * the plain writer's has the fewest digits that do, in jansson's form. */
static void real_written(double d, const char *want, const char *want_exact)
{
    json_t *v = json_real(d);
    assert_non_null(v);
    for (int exact = 0; exact <= 1; exact++) {
        eddy__buf b = {0};
        assert_int_equal(eddy__json_write_ex(&b, v, exact ? EDDY__JSONW_EXACT : 0), EDDY_OK);
        const char *w = exact ? want_exact : want;
        if (w != NULL && strcmp(b.p, w) != 0)
            fail_msg("%.17g written as %s, not %s%s", d, b.p, w, exact ? " (exact)" : "");
        json_error_t e;
        json_t *back = json_loads(b.p, JSON_DECODE_ANY, &e);
        if (back == NULL || !json_is_real(back))
            fail_msg("%.17g written as %s, which is not a JSON real", d, b.p);
        double r = json_real_value(back);
        if (memcmp(&r, &d, sizeof(d)) != 0)
            fail_msg("%.17g written as %s, which reads back as %.17g", d, b.p, r);
        json_decref(back);
        if (!exact) {
            if (significant_digits(b.p) != fewest_digits(d))
                fail_msg("%.17g written as %s: %d digits where %d read back", d, b.p,
                         significant_digits(b.p), fewest_digits(d));
            char *j = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(writer_precision(d)));
            assert_string_equal(b.p, j);
            free(j);
        } else {
            char *j = json_dumps(v, JSON_ENCODE_ANY); /* 17 digits */
            assert_string_equal(b.p, j);
            free(j);
        }
        free(b.p);
    }
    json_decref(v);
}

/* Reals in outputs read back as the double the agent sent (they were cut to
 * 15 digits: 1732700000.123456 came out as 1732700000.12346), with no more
 * digits than that takes; exact texts (whose digests are stored) keep their
 * 17 digits as they always had. */
static void test_jsonw_reals_shortest_exact(void **state)
{
    (void)state;
    static const struct {
        double d;
        const char *text, *exact;
    } cases[] = {
        {1732700000.123456, "1732700000.123456", "1732700000.123456"},
        {0.1 + 0.2, "0.30000000000000004", "0.30000000000000004"},
        {1.0 / 3.0, "0.3333333333333333", "0.33333333333333331"},
        {0.1, "0.1", "0.10000000000000001"},
        {1e-7, "1e-7", "9.9999999999999995e-8"},
        {5e-324, "5e-324", "4.9406564584124654e-324"},
        {2.225073858507201e-308, "2.225073858507201e-308", "2.2250738585072009e-308"},
        {2.2250738585072014e-308, "2.2250738585072014e-308", "2.2250738585072014e-308"},
        {1.7976931348623157e308, "1.7976931348623157e308", "1.7976931348623157e308"},
        {-0.0, "-0.0", "-0.0"},
        {0.0, "0.0", "0.0"},
        {1.0, "1.0", "1.0"},
        {100.0, "100.0", "100.0"},
        {1.5e10, "15000000000.0", "15000000000.0"},
        {1e15, "1e15", "1000000000000000.0"},
        {1e21, "1e21", "1e21"},
        {1e300, "1e300", "1.0000000000000001e300"},
        {-2.5e-300, "-2.5e-300", "-2.5e-300"},
        {123456789012345678.0, "1.2345678901234568e17", "1.2345678901234568e17"},
        {123456789012345.6, "123456789012345.6", "123456789012345.59"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        real_written(cases[i].d, cases[i].text, cases[i].exact);
    /* Doubles of every exponent (random bits), and decimals of a few digits
     * (what inputs mostly hold). */
    uint64_t r = 777;
    for (int i = 0; i < 20000; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        double d;
        uint64_t bits = r;
        memcpy(&d, &bits, sizeof(d));
        if (d != d || d - d != 0) /* NaN or infinite: no JSON real */
            continue;
        real_written(d, NULL, NULL);
        real_written((double)(int64_t)(r >> 40) / 1000.0, NULL, NULL);
    }
}

/* ------------------------------------------------------------ vec */

/* ------------------------------------------------------------ le */

/* The stored formats are little-endian whatever the machine: the bytes are
 * the least significant first, at any alignment, and read back the same. */
static void test_le_layout(void **state)
{
    (void)state;
    unsigned char b[32];
    for (size_t at = 0; at < 8; at++) {
        memset(b, 0xee, sizeof(b));
        unsigned char *o = eddy__le64_put(b + at, 0x0102030405060708ULL);
        assert_ptr_equal(o, b + at + 8);
        o = eddy__le32_put(o, 0xa1b2c3d4u);
        assert_ptr_equal(o, b + at + 12);
        static const unsigned char want[12] = {8, 7, 6, 5, 4, 3, 2, 1, 0xd4, 0xc3, 0xb2, 0xa1};
        assert_memory_equal(b + at, want, sizeof(want));
        assert_int_equal(b[at + 12], 0xee); /* nothing past it */
        assert_true(eddy__le64_get(b + at) == 0x0102030405060708ULL);
        assert_int_equal(eddy__le32_get(b + at + 8), 0xa1b2c3d4u);
    }
    eddy__le64_put(b, UINT64_MAX);
    assert_true(eddy__le64_get(b) == UINT64_MAX);
}

static void test_vec_grow(void **state)
{
    (void)state;
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        assert_int_equal(eddy__vec_grow(&v, &cap, n + 1, sizeof(*v), 4), EDDY_OK);
        v[n++] = i * 3;
    }
    assert_true(cap >= 1000 && cap < 2048);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i], i * 3);
    /* A size that cannot be allocated leaves the array as it was. */
    uint64_t *before = v;
    size_t cap_before = cap;
    assert_int_equal(eddy__vec_grow(&v, &cap, SIZE_MAX / 4, sizeof(*v), 4), EDDY_ENOMEM);
    assert_ptr_equal(v, before);
    assert_int_equal(cap, cap_before);
    assert_int_equal(eddy__vec_grow(&v, &cap, 10, sizeof(*v), 4), EDDY_OK); /* has room */
    assert_ptr_equal(v, before);
    free(v);
}

/* Leave 'e' bytes where the writer's number buffer will lie. */
static void __attribute__((noinline)) stack_of_e(void)
{
    volatile char junk[4096];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = 'e';
}

/* A whole real ("3" from printf, written "3.0") is terminated before the
 * exponent search: it once read past its text into the stack, and with an
 * 'e' there moved a negative number of bytes. */
static void test_jsonw_whole_reals_on_dirty_stack(void **state)
{
    (void)state;
    static const char *const cases[] = {"1.0", "3.0", "-7.0", "100.0", "123456789012.0"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stack_of_e();
        same_as_jansson(cases[i]);
    }
}

/* Strings of every length up to 40 from pieces that need escaping or not,
 * placed at every offset of the eight-byte scan: same bytes as jansson. */
static void test_jsonw_strings_random(void **state)
{
    (void)state;
    static const char *const pieces[] = {"a",
                                         "Z",
                                         " ",
                                         "\"",
                                         "\\",
                                         "\n",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "/",
                                         "\xc3\xa9",
                                         "\xe4\xb8\xad",
                                         "\xf0\x9f\x98\x80",
                                         "0123456789abcdef"};
    const size_t np = sizeof(pieces) / sizeof(pieces[0]);
    unsigned seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char s[256];
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        int count = (int)((seed >> 16) % 12);
        for (int k = 0; k < count; k++) {
            seed = seed * 1103515245u + 12345u;
            const char *p = pieces[(seed >> 16) % np];
            size_t pl = strlen(p);
            memcpy(s + len, p, pl);
            len += pl;
        }
        writes_like_jansson(json_stringn(s, len));
    }
}

/* Integers around every power of ten, in both signs, alone and after
 * other text (as inside an object). */
static void test_jsonw_integers_at_powers_of_ten(void **state)
{
    (void)state;
    json_int_t p = 1;
    for (int k = 0; k <= 18; k++, p = k <= 18 ? p * 10 : p) { /* 10^18 is the last */
        const json_int_t vs[] = {p - 1, p, p + 1, -(p - 1), -p, -(p + 1)};
        for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
            writes_like_jansson(json_integer(vs[i]));
            char want[32];
            snprintf(want, sizeof(want), "%" JSON_INTEGER_FORMAT, vs[i]);
            eddy__buf b = {0};
            assert_int_equal(eddy__buf_put(&b, "[1,", 3), EDDY_OK);
            assert_int_equal(eddy__json_write_int(&b, vs[i]), EDDY_OK);
            assert_int_equal(b.len, 3 + strlen(want));
            assert_memory_equal(b.p + 3, want, strlen(want));
            free(b.p);
        }
    }
}

/* Digests, event ids and plan fingerprints are stored: their hex form is
 * printf's %016llx, for every byte value at every place. */
static void test_hex64(void **state)
{
    (void)state;
    uint64_t r = 99;
    for (int i = 0; i < 20000; i++) {
        uint64_t v = i < 2048 ? (uint64_t)(i & 255) << (8 * (i >> 8)) : r;
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        char got[17], want[17];
        memset(got, 'x', sizeof(got));
        eddy__hex64(v, got);
        snprintf(want, sizeof(want), "%016llx", (unsigned long long)v);
        assert_string_equal(got, want);
    }
}

/* The integers 0 to 1,000 and their negatives, the extremes, and 20,000
 * spread over the whole range: the writer makes two digits at a time, so
 * odd and even digit counts both matter. */
static void test_jsonw_integers_everywhere(void **state)
{
    (void)state;
    json_int_t vs[2002 + 2 + 20000];
    size_t n = 0;
    for (json_int_t i = 0; i <= 1000; i++) {
        vs[n++] = i;
        vs[n++] = -i;
    }
    vs[n++] = INT64_MAX;
    vs[n++] = INT64_MIN;
    uint64_t r = 12345;
    while (n < sizeof(vs) / sizeof(vs[0])) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        vs[n++] = (json_int_t)(r >> (r & 63)); /* every magnitude */
    }
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof(want), "%" JSON_INTEGER_FORMAT, vs[i]);
        eddy__buf b = {0};
        assert_int_equal(eddy__json_write_int(&b, vs[i]), EDDY_OK);
        if (b.len != strlen(want) || memcmp(b.p, want, b.len) != 0)
            fail_msg("%s written as %.*s", want, (int)b.len, b.p);
        free(b.p);
    }
}

/* Every length to 24 with one byte to escape at every place (or none):
 * the writer checks eight bytes at a time and a string's tail as its last
 * eight, so escapes before, inside and after those words all matter. */
static void test_jsonw_strings_escape_at_every_place(void **state)
{
    (void)state;
    static const char esc[] = {'"', '\\', '\n', '\x01', '\x1f'};
    for (size_t n = 0; n <= 24; n++) {
        for (size_t at = 0; at <= n; at++) { /* at == n: nothing to escape */
            for (size_t e = 0; e < sizeof(esc); e++) {
                char s[32];
                for (size_t k = 0; k < n; k++)
                    s[k] = (char)('a' + k % 26);
                if (at < n)
                    s[at] = esc[e];
                writes_like_jansson(json_stringn(s, n));
                /* Also into a buffer with room already (short strings are
                 * copied in place there) and as an object's key. */
                json_t *v = json_stringn(s, n);
                char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                eddy__buf b = {0};
                assert_int_equal(eddy__buf_put(&b, "[", 1), EDDY_OK);
                assert_true(b.cap - b.len >= 10);
                assert_int_equal(eddy__json_write(&b, v), EDDY_OK);
                assert_int_equal(b.len, 1 + strlen(want));
                assert_memory_equal(b.p + 1, want, strlen(want));
                free(b.p);
                free(want);
                json_decref(v);
                json_t *o = json_object();
                assert_int_equal(json_object_setn_new(o, s, n, json_true()), 0);
                writes_like_jansson(o);
            }
        }
    }
}

static void test_jsonw_sorted_keys(void **state)
{
    (void)state;
    json_t *v =
        json_loads("{\"b\":1,\"a\":{\"y\":2,\"x\":3},\"ab\":[{\"d\":1,\"c\":2}],\"\":0}", 0, NULL);
    eddy__buf b = {0};
    assert_int_equal(eddy__json_write_ex(&b, v, EDDY__JSONW_SORT_KEYS), EDDY_OK);
    assert_string_equal(b.p, "{\"\":0,\"a\":{\"x\":3,\"y\":2},\"ab\":[{\"c\":2,\"d\":1}],\"b\":1}");
    /* The same as jansson's sorted dump, and independent of insertion order. */
    char *want = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(b.p, want);
    free(want);
    json_t *w =
        json_loads("{\"\":0,\"ab\":[{\"c\":2,\"d\":1}],\"b\":1,\"a\":{\"x\":3,\"y\":2}}", 0, NULL);
    eddy__buf b2 = {0};
    assert_int_equal(eddy__json_write_ex(&b2, w, EDDY__JSONW_SORT_KEYS), EDDY_OK);
    assert_string_equal(b.p, b2.p);
    /* More fields than the writer sorts on the stack. */
    json_t *big = json_object();
    char name[8];
    for (int i = 40; i > 0; i--) {
        snprintf(name, sizeof(name), "f%02d", i);
        json_object_set_new(big, name, json_integer(i));
    }
    eddy__buf b3 = {0};
    assert_int_equal(eddy__json_write_ex(&b3, big, EDDY__JSONW_SORT_KEYS), EDDY_OK);
    want = json_dumps(big, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(b3.p, want);
    free(want);
    free(b.p);
    free(b2.p);
    free(b3.p);
    json_decref(v);
    json_decref(w);
    json_decref(big);
}

static void test_jsonw_appends_and_fails_cleanly(void **state)
{
    (void)state;
    eddy__buf b = {0};
    json_t *one = json_integer(1);
    assert_int_equal(eddy__json_write(&b, one), EDDY_OK);
    assert_int_equal(eddy__json_write(&b, one), EDDY_OK);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.p, "11", 2);
    /* NULL is refused and leaves the buffer as it was. */
    assert_int_equal(eddy__json_write(&b, NULL), EDDY_ENOMEM);
    assert_int_equal(b.len, 2);
    json_decref(one);
    free(b.p);
}

/* n containers deep, alternating arrays and objects, with a scalar inside;
 * wide: each level also holds a scalar, and all but the innermost an empty
 * container (as deep as the level below). */
static json_t *nest(int n, int wide)
{
    json_t *v = json_string("x");
    for (int i = 0; i < n; i++) {
        json_t *c = i % 2 ? json_object() : json_array();
        if (json_is_object(c)) {
            if (wide)
                json_object_set_new(c, "a", json_integer(i));
            json_object_set_new(c, "v", v);
            if (wide && i > 0)
                json_object_set_new(c, "z", json_array());
        } else {
            if (wide && i > 0)
                json_array_append_new(c, json_object());
            json_array_append_new(c, v);
            if (wide)
                json_array_append_new(c, json_true());
        }
        v = c;
    }
    return v;
}

static void test_json_deeper_than(void **state)
{
    (void)state;
    json_t *s = json_integer(1);
    assert_int_equal(eddy__json_deeper_than(s, 0), 0);
    json_decref(s);
    json_t *e = json_array();
    assert_int_equal(eddy__json_deeper_than(e, 0), 1);
    assert_int_equal(eddy__json_deeper_than(e, 1), 0);
    json_decref(e);
    /* Around the 32 frames kept on the stack, and far past them. */
    static const int depths[] = {1, 2, 31, 32, 33, 64, 1000, 5000};
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        for (int wide = 0; wide <= 1; wide++) {
            int n = depths[i];
            json_t *v = nest(n, wide);
            assert_int_equal(eddy__json_deeper_than(v, (unsigned)n), 0);
            assert_int_equal(eddy__json_deeper_than(v, (unsigned)n + 1), 0);
            assert_int_equal(eddy__json_deeper_than(v, (unsigned)n - 1), 1);
            json_decref(v);
        }
    }
    /* The deep branch last among shallow ones. */
    json_t *o = json_pack("{s:[], s:{}, s:o}", "a", "b", "c", nest(40, 0));
    assert_int_equal(eddy__json_deeper_than(o, 41), 0);
    assert_int_equal(eddy__json_deeper_than(o, 40), 1);
    json_decref(o);
}

/* The writer refuses a value with a member deeper than its limit with
 * EDDY_ELIMIT, not EDDY_ENOMEM: a durable call's digest tells a value too
 * deep to write (the same on every run) from a buffer that could not grow. */
static void test_json_write_too_deep(void **state)
{
    (void)state;
    eddy__buf b = {0};
    /* nest(n) puts the scalar at level n. */
    json_t *ok = nest(EDDY__JSONW_MAX_DEPTH, 0), *deep = nest(EDDY__JSONW_MAX_DEPTH + 1, 0);
    assert_int_equal(eddy__json_write_ex(&b, ok, EDDY__JSONW_SORT_KEYS), EDDY_OK);
    size_t len = b.len;
    assert_int_equal(eddy__json_write_ex(&b, deep, EDDY__JSONW_SORT_KEYS), EDDY_ELIMIT);
    assert_int_equal(b.len, len); /* nothing written */
    json_decref(ok);
    json_decref(deep);
    free(b.p);
}

/* ------------------------------------------------------------ jsonw: nesting */

/*
 * The writer as it was when it recursed once per level (a frame of ~136
 * bytes, ~488 with sorted keys, so that a digest of arguments nested ~550
 * levels deep overflowed an action's 256 KiB stack): the reference the
 * iterative writer must match byte for byte, since digests of its sorted,
 * exact texts are stored in journals. Scalars go through the writer itself
 * (alone, they never nest), so only the walk is the reference's own.
 */
typedef struct ref_field {
    const char *k;
    size_t len;
    json_t *v;
} ref_field;

static int ref_cmp(const void *a, const void *b)
{
    const ref_field *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->k, y->k, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static int ref_write(eddy__buf *b, const json_t *v, int depth, int flags)
{
    if (depth > 2048)
        return -1;
    if (json_is_object(v)) {
        size_t n = json_object_size(v), i = 0;
        ref_field *f = malloc((n + 1) * sizeof(*f));
        assert_non_null(f);
        for (void *it = json_object_iter((json_t *)v); it != NULL;
             it = json_object_iter_next((json_t *)v, it))
            f[i++] = (ref_field){json_object_iter_key(it), json_object_iter_key_len(it),
                                 json_object_iter_value(it)};
        if (flags & EDDY__JSONW_SORT_KEYS)
            qsort(f, n, sizeof(*f), ref_cmp);
        int rc = eddy__buf_put(b, "{", 1);
        for (i = 0; i < n && rc == 0; i++)
            if ((i != 0 && eddy__buf_put(b, ",", 1) != 0) ||
                eddy__json_write_str(b, f[i].k, f[i].len) != 0 || eddy__buf_put(b, ":", 1) != 0 ||
                ref_write(b, f[i].v, depth + 1, flags) != 0)
                rc = -1;
        free(f);
        return rc == 0 ? eddy__buf_put(b, "}", 1) : -1;
    }
    if (json_is_array(v)) {
        if (eddy__buf_put(b, "[", 1) != 0)
            return -1;
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((i != 0 && eddy__buf_put(b, ",", 1) != 0) ||
                ref_write(b, json_array_get(v, i), depth + 1, flags) != 0)
                return -1;
        return eddy__buf_put(b, "]", 1);
    }
    return eddy__json_write_ex(b, v, flags & EDDY__JSONW_EXACT) == EDDY_OK ? 0 : -1;
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return eddy__mix64(*s);
}

/* Bytes of keys and strings: plain, escaped, NUL, multi-byte UTF-8 and
 * bytes that are not UTF-8 (taken as they are). */
static size_t rnd_text(uint64_t *s, char *out, size_t max)
{
    static const char *const pieces[] = {
        "a",    "b", "ab", "Z",        "\"",           "\\",       "\n",        "\x01",
        "\x7f", "/", " ",  "\xc3\xa9", "\xe4\xb8\xad", "\xff\xfe", "0123456789"};
    size_t len = 0, n = rng_next(s) % max;
    for (size_t k = 0; k < n; k++) {
        uint64_t r = rng_next(s) % 17;
        const char *p = r < 15 ? pieces[r] : "";
        size_t pl = r < 15 ? strlen(p) : 1; /* 15, 16: a NUL byte */
        memcpy(out + len, r < 15 ? p : "\0", pl);
        len += pl;
    }
    return len;
}

static json_t *rnd_scalar(uint64_t *s)
{
    static const double nice[] = {0.0, -0.0, 0.1, 1.5, 1e300, -2.5e-300, 5e-324, 3.0, 1e21};
    char t[200];
    uint64_t r = rng_next(s);
    switch (r % 8) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(r & 8);
    case 2:
        return json_integer((json_int_t)rng_next(s));
    case 3:
        return json_integer((json_int_t)(rng_next(s) % 2001) - 1000);
    case 4: {
        double d;
        do {
            uint64_t bits = rng_next(s);
            memcpy(&d, &bits, sizeof(d));
        } while (d != d || d - d != 0); /* NaN and infinities are not JSON */
        return json_real(d);
    }
    case 5:
        return json_real(nice[rng_next(s) % (sizeof(nice) / sizeof(nice[0]))]);
    default:
        return json_stringn_nocheck(t, rnd_text(s, t, 12));
    }
}

/* A random value at most max levels deep; objects get keys from a small
 * set, so that some are prefixes of others or differ in a NUL. */
static json_t *rnd_value(uint64_t *s, int max)
{
    uint64_t r = rng_next(s);
    if (max == 0 || r % 3 == 0)
        return rnd_scalar(s);
    size_t n = rng_next(s) % 7;
    json_t *c = r % 3 == 1 ? json_array() : json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *m = rnd_value(s, max - 1);
        if (json_is_array(c)) {
            json_array_append_new(c, m);
        } else {
            char k[100];
            json_object_setn_new_nocheck(c, k, rnd_text(s, k, 4), m);
        }
    }
    return c;
}

static const int writer_flags[] = {0, EDDY__JSONW_EXACT, EDDY__JSONW_SORT_KEYS,
                                   EDDY__JSONW_SORT_KEYS | EDDY__JSONW_EXACT};

/* v written with flags, by both writers: the same bytes, or both fail
 * (and the writer's buffer is left as it was). Hashes the text into *h. */
static void writes_like_reference(const json_t *v, int flags, uint64_t *h)
{
    eddy__buf want = {0}, got = {0};
    assert_int_equal(eddy__buf_put(&got, "pre", 3), EDDY_OK);
    int ref = ref_write(&want, v, 0, flags);
    int rc = eddy__json_write_ex(&got, v, flags);
    if (ref != 0) {
        assert_true(rc == EDDY_ELIMIT || rc == EDDY_ENOMEM); /* too deep, or no memory */
        assert_int_equal(got.len, 3);
        *h = eddy__mix64(*h ^ 1);
    } else {
        assert_int_equal(rc, EDDY_OK);
        assert_int_equal(got.len - 3, want.len);
        assert_memory_equal(got.p + 3, want.p, want.len);
        assert_int_equal(got.p[got.len], '\0');
        *h = eddy__mix64(*h ^ eddy__hash_bytes(want.p, want.len));
        if (!(flags & EDDY__JSONW_EXACT) && !(flags & EDDY__JSONW_SORT_KEYS)) {
            /* The plain entry point writes the same text. */
            got.len = 0;
            assert_int_equal(eddy__json_write(&got, v), EDDY_OK);
            assert_int_equal(got.len, want.len);
            assert_memory_equal(got.p, want.p, want.len);
        }
    }
    free(want.p);
    free(got.p);
}

/* n nested containers: arrays, objects or both in turn, with a scalar, or
 * nothing (inner empty), innermost; the sorted writer's fields wait on the
 * levels in between (two keys around each inner container). */
static json_t *nest_kind(int n, int kind, int empty)
{
    json_t *v = empty ? NULL : json_real(0.1);
    for (int i = 0; i < n; i++) {
        int obj = kind == 1 || (kind == 2 && i % 2);
        json_t *c = obj ? json_object() : json_array();
        if (obj) {
            json_object_set_new(c, "z", json_integer(i));
            if (v != NULL)
                json_object_set_new(c, "m", v);
            json_object_set_new(c, "a", json_string("\""));
        } else {
            json_array_append_new(c, json_integer(i));
            if (v != NULL)
                json_array_append_new(c, v);
        }
        v = c;
    }
    return v;
}

/* Random values and values around the writer's depth limit (2048 levels
 * below the top), in every mode: the same bytes as the recursive writer,
 * and a hash of all of them fixed when the writer recursed, so that the
 * digests of journaled calls never change (a state written before replays). */
static void test_jsonw_same_text_as_recursive_writer(void **state)
{
    (void)state;
    uint64_t h[4] = {0, 0, 0, 0};
    uint64_t seed = 42;
    for (int round = 0; round < 3000; round++) {
        json_t *v = rnd_value(&seed, 1 + round % 7);
        for (int f = 0; f < 4; f++)
            writes_like_reference(v, writer_flags[f], &h[f]);
        json_decref(v);
    }
    static const int depths[] = {1, 2, 31, 32, 33, 63, 64, 65, 600, 1000, 2047, 2048, 2049, 3000};
    for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        for (int kind = 0; kind < 3; kind++) {
            for (int empty = 0; empty <= 1; empty++) {
                json_t *v = nest_kind(depths[i], kind, empty);
                for (int f = 0; f < 4; f++)
                    writes_like_reference(v, writer_flags[f], &h[f]);
                json_decref(v);
            }
        }
    }
    /* The limit: a value 2048 levels below the top is written, one 2049
     * levels below is not (the digest of such arguments is that of null). */
    for (int f = 0; f < 4; f++) {
        eddy__buf b = {0};
        json_t *ok[3] = {nest_kind(2048, 0, 1), nest_kind(2048, 1, 0), json_array()};
        json_t *over[3] = {nest_kind(2049, 0, 1), nest_kind(2049, 2, 0), json_array()};
        for (int i = 0; i < 2048; i++) { /* 2049 arrays; the innermost is empty */
            json_t *a = json_array();
            json_array_append_new(a, ok[2]);
            ok[2] = a;
        }
        json_array_append_new(over[2], json_incref(ok[2]));
        for (int i = 0; i < 3; i++) {
            assert_int_equal(eddy__json_write_ex(&b, ok[i], writer_flags[f]), EDDY_OK);
            assert_int_equal(eddy__json_write_ex(&b, over[i], writer_flags[f]), EDDY_ELIMIT);
            json_decref(ok[i]);
            json_decref(over[i]);
        }
        free(b.p);
    }
    char hex[4][17];
    for (int f = 0; f < 4; f++)
        eddy__hex64(h[f], hex[f]);
    assert_string_equal(hex[0], "bca4488996088e84");
    assert_string_equal(hex[1], "9289a4f6cefb3ece");
    assert_string_equal(hex[2], "9ac76ac26083342f");
    assert_string_equal(hex[3], "eb21a34aaa150fc6");
}

/* What the writer does on an action's coroutine, whose stack is small. */
typedef struct deep_job {
    const json_t *v;
    int flags;
    eddy__buf *b;
    int rc;
} deep_job;

static void deep_write(void *arg)
{
    deep_job *j = arg;
    j->rc = eddy__json_write_ex(j->b, j->v, j->flags);
}

/* Values 2048 levels deep are written on a 32 KiB coroutine stack, in every
 * mode: the writer keeps its own stack of open containers (the digest of an
 * input nested ~550 deep overflowed an action's 256 KiB). */
static void test_jsonw_deep_on_a_small_stack(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(32 * 1024, 1);
    assert_non_null(pool);
    for (int kind = 0; kind < 3; kind++) {
        json_t *v = nest_kind(2047, kind, 0);
        for (int f = 0; f < 4; f++) {
            eddy__buf want = {0}, got = {0};
            assert_int_equal(ref_write(&want, v, 0, writer_flags[f]), 0);
            deep_job j = {v, writer_flags[f], &got, -1};
            eddy__coro *c = eddy__coro_new(pool, deep_write, &j);
            assert_non_null(c);
            assert_int_equal(eddy__coro_resume(c), 1);
            eddy__coro_free(c);
            assert_int_equal(j.rc, EDDY_OK);
            assert_int_equal(got.len, want.len);
            assert_memory_equal(got.p, want.p, want.len);
            free(want.p);
            free(got.p);
        }
        json_decref(v);
    }
    eddy__coro_pool_free(pool);
}

static void deep_free(void *arg)
{
    eddy__json_decref_deep(arg);
}

/* Values nested far deeper than a small stack holds, freed on it: nothing
 * recurses, and what the value shares with others stays whole. */
static void test_json_decref_deep(void **state)
{
    (void)state;
    eddy__coro_pool *pool = eddy__coro_pool_new(32 * 1024, 1);
    assert_non_null(pool);
    json_t *shared = nest_kind(3000, 2, 0);
    for (int kind = 0; kind < 3; kind++) {
        json_t *v = nest_kind(100000, kind, 0);
        /* A wide level too, and a member held elsewhere. */
        json_t *wide = json_array();
        for (int i = 0; i < 100; i++)
            json_array_append_new(wide, nest_kind(50, kind, i % 2));
        json_array_append(wide, shared);
        json_t *top = json_pack("{s:o, s:o, s:O}", "deep", v, "wide", wide, "shared", shared);
        assert_non_null(top);
        eddy__coro *c = eddy__coro_new(pool, deep_free, top);
        assert_non_null(c);
        assert_int_equal(eddy__coro_resume(c), 1);
        eddy__coro_free(c);
    }
    assert_int_equal(shared->refcount, 1);
    assert_int_equal(eddy__json_deeper_than(shared, 3000), 0);
    assert_int_equal(eddy__json_deeper_than(shared, 2999), 1);
    eddy__json_decref_deep(shared);
    eddy__json_decref_deep(NULL);
    eddy__json_decref_deep(json_true());
    eddy__coro_pool_free(pool);
}

/* ------------------------------------------------------------ forkfd */

/* A forked child finds the descriptors added closed, the one removed and
 * the ones never added open; the parent keeps them all. */
static void test_forkfd_closed_in_child(void **state)
{
    (void)state;
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(fds[i] >= 0);
    }
    eddy__forkfd_add(fds[0]);
    eddy__forkfd_add(fds[1]);
    eddy__forkfd_remove(fds[1]);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int closed = fcntl(fds[0], F_GETFD) < 0, open1 = fcntl(fds[1], F_GETFD) >= 0,
            open2 = fcntl(fds[2], F_GETFD) >= 0;
        _exit(closed && open1 && open2 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (int i = 0; i < 3; i++)
        assert_true(fcntl(fds[i], F_GETFD) >= 0);
    eddy__forkfd_remove(fds[0]);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_against_reference),
        cmocka_unit_test(test_jsonw_matches_jansson),
        cmocka_unit_test(test_jsonw_reals_shortest_exact),
        cmocka_unit_test(test_jsonw_strings_random),
        cmocka_unit_test(test_jsonw_strings_escape_at_every_place),
        cmocka_unit_test(test_jsonw_integers_at_powers_of_ten),
        cmocka_unit_test(test_jsonw_integers_everywhere),
        cmocka_unit_test(test_hex64),
        cmocka_unit_test(test_vec_grow),
        cmocka_unit_test(test_le_layout),
        cmocka_unit_test(test_jsonw_whole_reals_on_dirty_stack),
        cmocka_unit_test(test_jsonw_sorted_keys),
        cmocka_unit_test(test_jsonw_appends_and_fails_cleanly),
        cmocka_unit_test(test_json_deeper_than),
        cmocka_unit_test(test_json_write_too_deep),
        cmocka_unit_test(test_jsonw_same_text_as_recursive_writer),
        cmocka_unit_test(test_jsonw_deep_on_a_small_stack),
        cmocka_unit_test(test_json_decref_deep),
        cmocka_unit_test(test_forkfd_closed_in_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
