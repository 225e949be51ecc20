#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
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

static off_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* "-" is the standard stream as it was when the sink opened: the sink
 * writes to its own duplicate (close-on-exec), so fd 1 may be pointed
 * elsewhere after (the eddy command points it at stderr), and closing the
 * sink leaves fd 1 open. It goes on from where the stream stood. A closed
 * stream fails the first write, not the open. */
static void test_standard_stream_is_a_duplicate(void **state)
{
    (void)state;
    char root[64], first[96], second[96];
    assert_int_equal(tmptree_make(root, "sink"), 0);
    snprintf(first, sizeof(first), "%s/first", root);
    snprintf(second, sizeof(second), "%s/second", root);
    int a = open(first, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int b = open(second, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(a >= 0 && b >= 0);
    assert_int_equal(write(a, "header\n", 7), 7);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(a, STDOUT_FILENO), STDOUT_FILENO);

    eddy__sink *s = NULL;
    assert_int_equal(eddy__sink_open(&s, "-", EDDY_SINK_STDOUT, -1, NULL), EDDY_OK);
    assert_int_equal(dup2(b, STDOUT_FILENO), STDOUT_FILENO); /* fd 1 goes elsewhere */
    assert_int_equal(eddy__sink_write(s, "line", 4), EDDY_OK);
    assert_int_equal(eddy__sink_sync(s), EDDY_OK);
    assert_int_equal(eddy__sink_offset(s), 12);
    assert_int_equal(eddy__sink_close(s), EDDY_OK);
    assert_int_equal(size_of(first), 12); /* "header\nline\n" */
    assert_int_equal(size_of(second), 0);
    assert_true(fcntl(STDOUT_FILENO, F_GETFD) >= 0); /* still open */

    /* Closed: opens, fails the first flush that has lines, names the stream. */
    assert_int_equal(close(STDOUT_FILENO), 0);
    assert_int_equal(eddy__sink_open(&s, "-", EDDY_SINK_STDOUT, -1, NULL), EDDY_OK);
    assert_int_equal(eddy__sink_flush(s), EDDY_OK);
    assert_int_equal(eddy__sink_write(s, "line", 4), EDDY_OK);
    assert_int_equal(eddy__sink_flush(s), EDDY_EIO);
    assert_string_equal(eddy__sink_error(s),
                        "cannot write to standard output: Bad file descriptor");
    assert_int_equal(eddy__sink_lines(s), 0);
    eddy__sink_close(s);

    assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
    close(saved);
    close(a);
    close(b);
    assert_int_equal(tmptree_remove(root), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_count_what_was_written),
        cmocka_unit_test(test_tail_hash),
        cmocka_unit_test(test_standard_stream_is_a_duplicate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
