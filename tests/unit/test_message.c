/* Unit tests of message schema v1: encode, decode, and the reasons poison messages get. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_message.h"

static void encode_one(fc_buf *b, const fc_item *it, int attempt) {
    fc_batch_hdr h = {"job-1", 3, attempt, 0};
    assert_int_equal(fc_message_batch_open(b, &h), FC_OK);
    assert_int_equal(fc_message_item(b, it, attempt > 1 ? "HTTP 500: boom" : NULL), FC_OK);
    assert_int_equal(fc_message_batch_close(b), FC_OK);
}

static void test_round_trip(void **state) {
    fc_item it = {0};
    it.position = 42;
    it.term = strdup("안녕 \"하세요\"\t\n");
    it.type = strdup("interjection");
    fc_item_add_extra(&it, "Definition", "hello, world");
    fc_buf b = {0};
    encode_one(&b, &it, 2);
    assert_non_null(strstr(b.data, "안녕")); /* UTF-8 stays unescaped */
    fc_batch_msg m;
    char why[256];
    assert_int_equal(fc_message_decode_batch(b.data, b.len, &m, why, sizeof(why)), FC_OK);
    assert_string_equal(m.hdr.job_id, "job-1");
    assert_int_equal(m.hdr.batch, 3);
    assert_int_equal(m.hdr.attempt, 2);
    assert_int_equal(m.nitems, 1);
    assert_int_equal(m.items[0].position, 42);
    assert_string_equal(m.items[0].term, it.term);
    assert_string_equal(m.items[0].type, "interjection");
    assert_int_equal(m.items[0].nextra, 1);
    assert_string_equal(m.items[0].extra[0].name, "Definition");
    assert_string_equal(m.items[0].extra[0].value, "hello, world");
    assert_string_equal(m.last_error[0], "HTTP 500: boom");
    fc_batch_msg_free(&m);
    fc_buf_free(&b);
    fc_item_clear(&it);
}

static void expect_poison(const char *body, const char *needle) {
    fc_batch_msg m;
    char why[256] = "";
    int rc = fc_message_decode_batch(body, strlen(body), &m, why, sizeof(why));
    assert_true(rc == FC_EPARSE || rc == FC_ETOOBIG);
    if (!strstr(why, needle)) fail_msg("reason '%s' lacks '%s'", why, needle);
}

static void test_poison_reasons(void **state) {
    expect_poison("not json", "not JSON");
    expect_poison("{\"schema\":1,", "not JSON");
    expect_poison("[1,2]", "not a JSON object");
    expect_poison("{\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[]}", "schema");
    expect_poison("{\"schema\":2,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[]}", "unsupported schema version 2");
    expect_poison("{\"schema\":1,\"job_id\":\"a b\",\"batch\":0,\"attempt\":1,\"items\":[]}", "job_id");
    expect_poison("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":0,\"items\":[]}", "attempt");
    expect_poison("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[]}", "items");
    expect_poison("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[{\"term\":\"x\"}]}",
                  "items[0]: missing field 'position'");
    expect_poison("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[{\"position\":1,\"term\":\"\"}]}",
                  "items[0]: missing or empty 'term'");
    expect_poison("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[{\"position\":\"1\",\"term\":\"x\"}]}",
                  "not an integer");
}

static void test_oversized(void **state) {
    size_t n = FC_MESSAGE_MAX_BYTES + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    fc_batch_msg m;
    char why[256];
    assert_int_equal(fc_message_decode_batch(big, n, &m, why, sizeof(why)), FC_ETOOBIG);
    free(big);
}

static void test_message_ids(void **state) {
    char id[128];
    fc_batch_hdr h = {"job-1", 7, 1, 0};
    fc_message_batch_id(id, sizeof(id), &h, NULL);
    assert_string_equal(id, "job-1-7");
    h.attempt = 3;
    fc_message_batch_id(id, sizeof(id), &h, "r1");
    assert_string_equal(id, "job-1-7-a3-r1");
    assert_true(fc_job_id_valid("job_2026-11.a"));
    assert_false(fc_job_id_valid(""));
    assert_false(fc_job_id_valid("a/b"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_poison_reasons),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_message_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
