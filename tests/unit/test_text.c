/* Unit tests of fc_text: what outside text becomes before it is kept or written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_text.h"

/* cleaned returns s[0..len) cleaned in mode (caller frees). */
static char *cleaned(const char *s, size_t len, int mode) {
    char *c = fc_text_clean_dup(s, len, mode);
    assert_non_null(c);
    return c;
}

#define EXPECT(in, mode, want)                                  \
    do {                                                        \
        char *c_ = cleaned(in, sizeof(in) - 1, mode);           \
        assert_string_equal(c_, want);                          \
        assert_int_equal(fc_text_is_clean(c_, strlen(c_)), 1);  \
        free(c_);                                               \
    } while (0)

static void test_field(void **state) {
    EXPECT("plain 안녕하세요 ok", FC_TEXT_FIELD, "plain 안녕하세요 ok");
    EXPECT("a\tb\nc\rd\ve\ff", FC_TEXT_FIELD, "a b c d e f");
    EXPECT("\x1b[31mred\x1b[0m", FC_TEXT_FIELD, "[31mred[0m");
    EXPECT("nul\0in\x01side\x7f", FC_TEXT_FIELD, "nulinside");
    EXPECT("c1 \xc2\x80\xc2\x9b" "2J\xc2\x9f end \xc2\xa0", FC_TEXT_FIELD, "c1 2J end \xc2\xa0"); /* U+00A0 stays */
    EXPECT("", FC_TEXT_FIELD, "");
}

static void test_tsv(void **state) {
    EXPECT("a\tb\nc\r\nd", FC_TEXT_TSV, "a\\tb\\nc\\nd");
    EXPECT("v\vf\f\x1b!", FC_TEXT_TSV, "v f !");
}

static void test_invalid_utf8(void **state) {
    EXPECT("\xff", FC_TEXT_FIELD, "\xef\xbf\xbd");
    EXPECT("a\xc3(b", FC_TEXT_FIELD, "a\xef\xbf\xbd(b");                  /* truncated sequence */
    EXPECT("\xc0\xaf", FC_TEXT_FIELD, "\xef\xbf\xbd\xef\xbf\xbd");        /* overlong '/' */
    EXPECT("\xed\xa0\x80", FC_TEXT_FIELD, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    EXPECT("\xf8\x90\x80\x80", FC_TEXT_FIELD,
           "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");          /* no 5-byte leads */
    EXPECT("\xf4\x90\x80\x80", FC_TEXT_FIELD,
           "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");          /* above U+10FFFF */
    EXPECT("\xf0\x9f\x98\x80 end\xe2\x82", FC_TEXT_FIELD, "\xf0\x9f\x98\x80 end\xef\xbf\xbd\xef\xbf\xbd");
}

static void test_seq(void **state) {
    assert_int_equal(fc_text_utf8_seq((const unsigned char *)"a", 1), 1);
    assert_int_equal(fc_text_utf8_seq((const unsigned char *)"\xc3\xa9", 2), 2);
    assert_int_equal(fc_text_utf8_seq((const unsigned char *)"\xc3\xa9", 1), 0);
    assert_int_equal(fc_text_utf8_seq((const unsigned char *)"\xe2\x82\xac", 3), 3);
    assert_int_equal(fc_text_utf8_seq((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 4);
    assert_int_equal(fc_text_is_control((const unsigned char *)"\t", 1), 1);
    assert_int_equal(fc_text_is_control((const unsigned char *)"\xc2\x85", 2), 1);
    assert_int_equal(fc_text_is_control((const unsigned char *)"\xc2\xa0", 2), 0);
    assert_int_equal(fc_text_is_clean("ok\xc2\xa0", 4), 1);
    assert_int_equal(fc_text_is_clean("tab\t", 4), 0);
}

/* Every byte value alone and after a lead byte: the result is always clean, never longer than 3x. */
static void test_every_byte(void **state) {
    for (int mode = FC_TEXT_FIELD; mode <= FC_TEXT_TSV; mode++)
        for (int a = 0; a < 256; a++)
            for (int b = 0; b < 256; b += 17) {
                char in[3] = {(char)a, (char)b, (char)0xc3};
                char *c = cleaned(in, 3, mode);
                size_t n = strlen(c);
                assert_true(n <= 9);
                for (size_t i = 0; i < n; i++) assert_false((unsigned char)c[i] < 0x20 || c[i] == 0x7f);
                assert_int_equal(fc_text_is_clean(c, n), 1);
                free(c);
            }
}

static void test_append_keeps_buffer(void **state) {
    fc_buf b = {0};
    fc_buf_puts(&b, "head:");
    assert_int_equal(fc_text_clean(&b, "x\ty", 3, FC_TEXT_TSV), FC_OK);
    assert_string_equal(b.data, "head:x\\ty");
    fc_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field),          cmocka_unit_test(test_tsv),
        cmocka_unit_test(test_invalid_utf8),   cmocka_unit_test(test_seq),
        cmocka_unit_test(test_every_byte),     cmocka_unit_test(test_append_keeps_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
