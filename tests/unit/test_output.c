/* Unit tests of the output writer: Anki TSV rows per card (tabs and newlines escaped), JSON Lines as given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_output.h"
#include "fc_pipeline.h"

static const char item[] =
    "{\"position\":7,\"term\":\"사과\",\"type\":\"noun\",\"cards\":["
    "{\"term_number\":1,\"tab_name\":\"Fruit\",\"primer\":\"p\",\"front\":\"a\\tb\",\"back\":\"line1\\nline2\\r\","
    "\"tags\":\"t1 t2\",\"honorific_level\":\"\"},"
    "{\"term_number\":2,\"tab_name\":\"Fruit\",\"primer\":\"\",\"front\":\"f\",\"back\":\"b\",\"tags\":\"\"}]}";

/* written returns what write did to a memory stream (caller frees). */
static char *written(int jsonl, const char *json, int *rc) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(fc_output_begin(f, jsonl), FC_OK);
    *rc = fc_output_item(f, jsonl, json);
    fclose(f);
    return buf;
}

static void test_tsv(void **state) {
    int rc;
    char *out = written(0, item, &rc);
    assert_int_equal(rc, FC_OK);
    const char *want = FC_CARD_HEADER "\n"
                       "7\t사과\t1\tFruit\tp\ta\\tb\tline1\\nline2\tt1 t2\t\n"
                       "7\t사과\t2\tFruit\t\tf\tb\t\t\n";
    assert_string_equal(out, want);
    free(out);
    out = written(0, "{\"position\":8,\"term\":\"x\"}", &rc); /* no cards: no row */
    assert_int_equal(rc, FC_OK);
    assert_string_equal(out, FC_CARD_HEADER "\n");
    free(out);
    out = written(0, "not json", &rc);
    assert_int_equal(rc, FC_EPARSE);
    free(out);
}

/* A result from an older worker or a replayed letter, fields full of control characters, invalid UTF-8 and
 * a non-string value: one line per card, nine columns, no control character, valid UTF-8. */
static void test_tsv_hostile(void **state) {
    static const char hostile[] =
        "{\"position\":9,\"term\":\"t\\u001b[31m\\r\\n\",\"cards\":[{\"term_number\":{\"a\":\"\\u0007\\t\"},"
        "\"tab_name\":\"x\\u000by\\u000cz\",\"primer\":\"\xc2\x9b" "2J\\u0085\\u007f\",\"front\":\"\xff\xfeok\","
        "\"back\":\"a\\tb\\nc\\u0000d\",\"tags\":[1,\"\\u001b\"],\"honorific_level\":null}]}";
    int rc;
    char *out = written(0, hostile, &rc);
    assert_int_equal(rc, FC_OK);
    const char *want = FC_CARD_HEADER "\n"
                       "9\tt[31m\\n\t{ \"a\": \"\\u0007\\t\" }\tx y z\t2J\t\xef\xbf\xbd\xef\xbf\xbdok\ta\\tb\\nc\t[ 1, \"\\u001b\" ]\tnull\n";
    assert_string_equal(out, want);
    free(out);
    FILE *f = fopen("/dev/full", "w");
    if (f) { /* a write error is said, not ignored */
        setvbuf(f, NULL, _IONBF, 0);
        assert_int_equal(fc_output_item(f, 0, item), FC_EIO);
        fclose(f);
    }
}

/* A JSON Lines item stays on its line and free of raw control characters. */
static void test_jsonl_hostile(void **state) {
    int rc;
    char *out = written(1, "{\"a\":\r\n1,\n\"b\":\"\x1b\xff\"}\n", &rc);
    assert_int_equal(rc, FC_OK);
    assert_string_equal(out, "{\"a\":  1, \"b\":\"\xef\xbf\xbd\"}\n");
    free(out);
}

static void test_jsonl(void **state) {
    int rc;
    char *out = written(1, "{\"position\":1}", &rc);
    assert_int_equal(rc, FC_OK);
    assert_string_equal(out, "{\"position\":1}\n");
    free(out);
    out = written(1, "{\"position\":2}\n", &rc);
    assert_string_equal(out, "{\"position\":2}\n");
    free(out);
    assert_int_equal(fc_output_is_jsonl("cards.jsonl"), 1);
    assert_int_equal(fc_output_is_jsonl("cards.tsv"), 0);
    assert_int_equal(fc_output_is_jsonl(".jsonl"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tsv), cmocka_unit_test(test_jsonl),
                                       cmocka_unit_test(test_tsv_hostile), cmocka_unit_test(test_jsonl_hostile)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
