/* Unit tests of fc_buf: growth, the sticky error that keeps a failed build from being used, and the
 * appends that skip printf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
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

/* fc_buf_append_ll writes what printf's %lld writes, at the extremes and around powers of ten. */
static void integers_as_printf_writes_them(void **state) {
    (void)state;
    const long long v[] = {0, 1, -1, 9, 10, -10, 99, 100, 123456789, -987654321, 1000000000000LL,
                           LLONG_MAX, LLONG_MIN, LLONG_MAX - 1, LLONG_MIN + 1};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        fc_buf b = {0};
        char want[32];
        snprintf(want, sizeof(want), "%lld", v[i]);
        assert_int_equal(fc_buf_append_ll(&b, v[i]), 0);
        assert_string_equal(b.data, want);
        fc_buf_free(&b);
    }
}

/* FC_BUF_LIT appends a literal, growing the buffer when it has no room. */
static void literals_grow_the_buffer(void **state) {
    (void)state;
    fc_buf b = {0};
    for (int i = 0; i < 1000; i++) assert_int_equal(FC_BUF_LIT(&b, "0123456789"), 0);
    assert_int_equal(b.len, 10000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 9990, "0123456789", 10);
    fc_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grows_and_stays_terminated),
        cmocka_unit_test(error_is_sticky_until_reset),
        cmocka_unit_test(truncate_reopens),
        cmocka_unit_test(integers_as_printf_writes_them),
        cmocka_unit_test(literals_grow_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
