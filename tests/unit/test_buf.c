/* Unit tests of fc_buf: growth, and the sticky error that keeps a failed build from being used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fc_buf.h"
#include "fc_error.h"

static void grows_and_stays_terminated(void **state) {
    (void)state;
    fc_buf b = {0};
    for (int i = 0; i < 1000; i++) assert_int_equal(fc_buf_printf(&b, "%d,", i % 10), FC_OK);
    assert_int_equal(b.len, 2000);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(fc_buf_err(&b), 0);
    fc_buf_free(&b);
}

/* An append that cannot be satisfied sets the error; every later append fails without writing,
 * so the message built so far is never taken for a whole one. reset clears it. */
static void error_is_sticky_until_reset(void **state) {
    (void)state;
    fc_buf b = {0};
    assert_int_equal(fc_buf_puts(&b, "{\"a\":"), FC_OK);
    assert_int_equal(fc_buf_reserve(&b, SIZE_MAX / 2), FC_ENOMEM);
    assert_int_equal(fc_buf_err(&b), FC_ENOMEM);
    assert_int_equal(fc_buf_puts(&b, "1}"), FC_ENOMEM);
    assert_int_equal(fc_buf_printf(&b, "%d", 7), FC_ENOMEM);
    assert_int_equal(fc_buf_append(&b, "x", 1), FC_ENOMEM);
    assert_string_equal(b.data, "{\"a\":");
    fc_buf_reset(&b);
    assert_int_equal(fc_buf_err(&b), 0);
    assert_int_equal(fc_buf_puts(&b, "ok"), FC_OK);
    assert_string_equal(b.data, "ok");
    fc_buf_free(&b);
}

static void truncate_reopens(void **state) {
    (void)state;
    fc_buf b = {0};
    fc_buf_puts(&b, "{\"x\":1}");
    fc_buf_truncate(&b, b.len - 1);
    fc_buf_puts(&b, ",\"y\":2}");
    assert_string_equal(b.data, "{\"x\":1,\"y\":2}");
    fc_buf_truncate(&b, 100); /* beyond the end: ignored */
    assert_int_equal(b.len, 13);
    fc_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_and_stays_terminated),
        cmocka_unit_test(error_is_sticky_until_reset),
        cmocka_unit_test(truncate_reopens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
