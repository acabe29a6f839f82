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
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tsv), cmocka_unit_test(test_jsonl)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
