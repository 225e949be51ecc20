#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/paths.h"

/*
 * The checks of a run's files before anything is opened for writing
 * (src/io/paths.c): what must be refused, what must pass, and that nothing
 * is created or opened on the way (a named pipe would block an open).
 */

typedef struct fixture {
    char dir[64];
    char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/eddy-paths-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static const char *in_dir(fixture *f, char *buf, const char *name)
{
    snprintf(buf, PATH_MAX, "%s/%s", f->dir, name);
    return buf;
}

static void touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{}\n", 3), 3);
    close(fd);
}

/* rc and, on failure, the message contains want. */
static void expect(const char *in, const char *out, const char *dead, int want_rc, const char *want)
{
    eddy_error *err = NULL;
    int rc = eddy__paths_check(in, out, dead, &err);
    if (rc != want_rc)
        fail_msg("rc %d, want %d (%s)", rc, want_rc, err ? eddy_error_message(err) : "");
    if (want != NULL) {
        assert_non_null(err);
        if (strstr(eddy_error_message(err), want) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"", eddy_error_message(err), want);
    } else {
        assert_null(err);
    }
    eddy_error_free(err);
}

static void test_distinct_files_pass(void **state)
{
    fixture *f = *state;
    touch(in_dir(f, f->a, "in.jsonl"));
    in_dir(f, f->b, "out.jsonl");
    in_dir(f, f->c, "out.jsonl.dead.jsonl");
    expect(f->a, f->b, f->c, EDDY_OK, NULL);
    struct stat st;
    assert_int_equal(stat(f->b, &st), -1); /* nothing created */
    touch(f->b);
    expect(f->a, f->b, f->c, EDDY_OK, NULL);
    expect(f->a, "-", "-", EDDY_OK, NULL);
    expect("-", f->b, "-", EDDY_OK, NULL);
    /* Two names for a device are not a conflict. */
    expect(f->a, "/dev/null", "/dev/null", EDDY_OK, NULL);
}

static void test_same_file_refused(void **state)
{
    fixture *f = *state;
    touch(in_dir(f, f->a, "in.jsonl"));
    expect(f->a, f->a, "-", EDDY_EINVAL, "the output");
    expect(f->a, "-", f->a, EDDY_EINVAL, "the dead-letter file");
    /* Through a symbolic link and a hard link. */
    assert_int_equal(symlink(f->a, in_dir(f, f->b, "sym.jsonl")), 0);
    expect(f->a, f->b, "-", EDDY_EINVAL, "is the same file as the input");
    assert_int_equal(link(f->a, in_dir(f, f->c, "hard.jsonl")), 0);
    expect(f->c, "-", f->a, EDDY_EINVAL, "cut to nothing before it is read");
    /* Output and dead letters that do not exist yet, named two ways. */
    in_dir(f, f->b, "new.jsonl");
    snprintf(f->c, sizeof(f->c), "%s/./new.jsonl", f->dir);
    expect(f->a, f->b, f->c, EDDY_EINVAL, "bad lines would overwrite the outputs");
    /* An output that is a dangling link to the dead-letter file's path
     * (absolute, and relative to the link's directory). */
    assert_int_equal(symlink(f->b, in_dir(f, f->c, "dangling.jsonl")), 0);
    expect(f->a, f->c, f->b, EDDY_EINVAL, "bad lines would overwrite the outputs");
    assert_int_equal(symlink("new.jsonl", in_dir(f, f->c, "rel.jsonl")), 0);
    expect(f->a, f->b, f->c, EDDY_EINVAL, "bad lines would overwrite the outputs");
}

static void test_cannot_open_reported_by_name(void **state)
{
    fixture *f = *state;
    touch(in_dir(f, f->a, "in.jsonl"));
    expect(in_dir(f, f->b, "missing.jsonl"), "-", "-", EDDY_EIO, "missing.jsonl");
    expect(f->dir, "-", "-", EDDY_EIO, "Is a directory");
    expect(f->a, in_dir(f, f->b, "no/dir/out.jsonl"), "-", EDDY_EIO,
           "for writing: No such file or directory");
    expect(f->a, f->dir, "-", EDDY_EIO, "for writing: Is a directory");
    in_dir(f, f->b, "sub/");
    expect(f->a, f->b, "-", EDDY_EIO, "for writing");
}

static void test_named_pipe_input_not_opened(void **state)
{
    fixture *f = *state;
    /* Opening a pipe for reading waits for a writer: the check must not. */
    assert_int_equal(mkfifo(in_dir(f, f->a, "fifo"), 0600), 0);
    expect(f->a, in_dir(f, f->b, "out.jsonl"), "-", EDDY_OK, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_distinct_files_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_file_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cannot_open_reported_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_pipe_input_not_opened, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
