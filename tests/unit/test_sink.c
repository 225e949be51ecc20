#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "io/sink.h"
#include "unit/tmptree.h"

/* Lines count as written once write(2) took them whole: not while they are
 * buffered, not when the write fails, and a line cut short by a failure only
 * once its rest went out. A file size limit makes write(2) take part of the
 * buffer and then fail, as a disk filling up does. */
static void test_lines_count_what_was_written(void **state)
{
    (void)state;
    char root[64], path[96];
    assert_int_equal(tmptree_make(root, "sink"), 0);
    snprintf(path, sizeof(path), "%s/out.jsonl", root);
    eddy__sink *s = NULL;
    assert_int_equal(eddy__sink_open(&s, path, EDDY_SINK_STDOUT, -1, NULL), EDDY_OK);
    char line[29];
    memset(line, 'x', sizeof(line)); /* 30 bytes with its newline */
    for (int i = 0; i < 10; i++)
        assert_int_equal(eddy__sink_write(s, line, sizeof(line)), EDDY_OK);
    assert_int_equal(eddy__sink_lines(s), 0); /* buffered */

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 100;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = eddy__sink_flush(s);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(rc, EDDY_EIO);
    assert_non_null(strstr(eddy__sink_error(s), "File too large"));
    assert_int_equal(eddy__sink_lines(s), 3); /* 100 bytes: three lines and a bit */

    assert_int_equal(eddy__sink_flush(s), EDDY_OK);
    assert_int_equal(eddy__sink_lines(s), 10);
    assert_int_equal(eddy__sink_write(s, line, sizeof(line)), EDDY_OK);
    assert_int_equal(eddy__sink_close(s), EDDY_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 330);
    assert_int_equal(tmptree_remove(root), 0);
}

/* The fingerprint of the content before the sink's length: a hash of its
 * last EDDY_SINK_TAIL bytes (all of them when fewer), the same as that of
 * the file read by another descriptor; none while lines are buffered, for
 * a standard stream, or once the path names another file. */
static void test_tail_hash(void **state)
{
    (void)state;
    char root[64], path[96], other[96];
    assert_int_equal(tmptree_make(root, "sink"), 0);
    snprintf(path, sizeof(path), "%s/out.jsonl", root);
    snprintf(other, sizeof(other), "%s/other.jsonl", root);
    eddy__sink *s = NULL;
    assert_int_equal(eddy__sink_open(&s, path, EDDY_SINK_STDOUT, -1, NULL), EDDY_OK);
    assert_int_equal(eddy__sink_write(s, "short", 5), EDDY_OK);
    assert_int_equal(eddy__sink_tail_hash(s), 0); /* buffered */
    assert_int_equal(eddy__sink_flush(s), EDDY_OK);
    uint64_t h1 = eddy__sink_tail_hash(s);
    assert_int_not_equal(h1, 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(eddy__sink_fd_tail_hash(fileno(f), 6), h1);
    assert_int_not_equal(eddy__sink_fd_tail_hash(fileno(f), 5), h1);
    char line[100];
    memset(line, 'y', sizeof(line));
    assert_int_equal(eddy__sink_write(s, line, sizeof(line)), EDDY_OK);
    assert_int_equal(eddy__sink_flush(s), EDDY_OK);
    uint64_t h2 = eddy__sink_tail_hash(s);
    assert_int_not_equal(h2, h1);
    assert_int_equal(eddy__sink_fd_tail_hash(fileno(f), 107), h2);
    /* The same bytes at another length differ. */
    assert_int_not_equal(eddy__sink_fd_tail_hash(fileno(f), 106),
                         eddy__sink_fd_tail_hash(fileno(f), 105));
    assert_int_equal(eddy__sink_fd_tail_hash(fileno(f), 200), 0); /* past the end */
    fclose(f);
    assert_int_equal(eddy__sink_close(s), EDDY_OK);
    /* Only the last EDDY_SINK_TAIL bytes count. */
    f = fopen(other, "w");
    assert_non_null(f);
    fprintf(f, "other\n%.100s\n", line);
    fclose(f);
    f = fopen(other, "r");
    assert_non_null(f);
    assert_int_equal(eddy__sink_fd_tail_hash(fileno(f), 107), h2);
    fclose(f);

    /* Replaced under its name before the first call: no fingerprint. */
    assert_int_equal(eddy__sink_open(&s, path, EDDY_SINK_STDOUT, 107, NULL), EDDY_OK);
    f = fopen(other, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(rename(other, path), 0);
    assert_int_equal(eddy__sink_tail_hash(s), 0);
    assert_int_equal(eddy__sink_close(s), EDDY_OK);
    assert_int_equal(eddy__sink_open(&s, "-", EDDY_SINK_STDOUT, -2, NULL), EDDY_OK);
    assert_int_equal(eddy__sink_tail_hash(s), 0);
    assert_int_equal(eddy__sink_close(s), EDDY_OK);
    assert_int_equal(tmptree_remove(root), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_count_what_was_written),
        cmocka_unit_test(test_tail_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
