#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "core/error.h"

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(eddy_strerror(EDDY_OK), "success");
    assert_string_equal(eddy_err_name(EDDY_EWRONGTHREAD), "EDDY_EWRONGTHREAD");
    assert_string_equal(eddy_strerror(12345), "unknown error");
}

static void test_error_object(void **state)
{
    (void)state;
    eddy_error *e = eddy_error_newf("timeout", "after %d ms", 30);
    assert_non_null(e);
    assert_string_equal(eddy_error_type(e), "timeout");
    assert_string_equal(eddy_error_message(e), "after 30 ms");
    eddy_error *d = eddy__error_dup(e);
    assert_string_equal(eddy_error_message(d), "after 30 ms");
    eddy_error_free(e);
    eddy_error_free(d);
    eddy_error_free(NULL);

    eddy_error *set = NULL;
    assert_int_equal(eddy__error_set(&set, EDDY_EIO, "io", "first"), EDDY_EIO);
    assert_int_equal(eddy__error_set(&set, EDDY_EINVAL, "x", "second"), EDDY_EINVAL);
    assert_string_equal(eddy_error_message(set), "first");
    eddy_error_free(set);

    e = eddy_error_new(NULL, NULL);
    assert_string_equal(eddy_error_type(e), "error");
    assert_string_equal(eddy_error_message(e), "");
    eddy_error_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_error_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
