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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_count_what_was_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
