/* Unit tests of message schema v1: encode, decode, and the reasons poison messages get. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_message.h"

static void encode_one(fc_buf *b, const fc_item *it, int attempt) {
    fc_batch_hdr h = {"job-1", 3, attempt, 0, 0};
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
    if (rc != FC_EPARSE && rc != FC_ETOOBIG) fail_msg("accepted (%d): %.120s", rc, body);
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

#define HDR "{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,"

/* Hostile work-queue messages: each is refused with a reason an operator can read, none crashes. */
static void test_hostile_messages(void **state) {
    /* job ids that would reach into another job's keys (P:job:{ID}:part) or queues */
    const char *ids[] = {"a}b", "a:b", "a*", "a{b", "x}:job:{y", "a\\u0000b", "\\u001b[2J", "unrouted", "",
                         "a/b", "a b", "\\u00e9t\\u00e9"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"schema\":1,\"job_id\":\"%s\",\"batch\":0,\"attempt\":1,\"items\":[{\"position\":1,\"term\":\"x\"}]}",
                 ids[i]);
        expect_poison(body, "missing or invalid 'job_id'");
    }
    char long_id[FC_JOB_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(fc_job_id_valid(long_id), 0);
    long_id[FC_JOB_ID_MAX] = '\0';
    assert_int_equal(fc_job_id_valid(long_id), 1);
    /* positions out of range or twice */
    expect_poison(HDR "\"items\":[{\"position\":0,\"term\":\"x\"}]}", "items[0]: field 'position' = 0 is out of range");
    expect_poison(HDR "\"items\":[{\"position\":-3,\"term\":\"x\"}]}", "out of range");
    expect_poison(HDR "\"items\":[{\"position\":1000000000001,\"term\":\"x\"}]}", "out of range");
    expect_poison(HDR "\"items\":[{\"position\":99999999999999999999,\"term\":\"x\"}]}", "out of range");
    expect_poison(HDR "\"items\":[{\"position\":1.5,\"term\":\"x\"}]}", "not an integer");
    expect_poison(HDR "\"items\":[{\"position\":2,\"term\":\"x\"},{\"position\":1,\"term\":\"y\"},"
                      "{\"position\":2,\"term\":\"z\"}]}",
                  "items hold position 2 more than once");
    /* not_before of the wrong type or far away */
    expect_poison(HDR "\"not_before\":\"soon\",\"items\":[{\"position\":1,\"term\":\"x\"}]}",
                  "field 'not_before' is not an integer");
    expect_poison(HDR "\"not_before\":9000000000000,\"items\":[{\"position\":1,\"term\":\"x\"}]}",
                  "field 'not_before' = 9000000000000 is out of range");
    /* invalid UTF-8, deep nesting, wrong types */
    expect_poison(HDR "\"items\":[{\"position\":1,\"term\":\"\xff\xfe\"}]}", "not JSON");
    expect_poison(HDR "\"items\":[{\"position\":1,\"term\":\"\xc0\xaf\"}]}", "not JSON: invalid UTF-8 at offset 78");
    expect_poison(HDR "\"items\":[{\"position\":1,\"term\":\"\xed\xa0\x80\"}]}", "invalid UTF-8"); /* surrogate */
    static const char nul[] = HDR "\"items\":[{\"position\":1,\"term\":\"x\"}]}\0{\"more\":1}";
    fc_batch_msg m;
    char why[128];
    assert_int_equal(fc_message_decode_batch(nul, sizeof(nul) - 1, &m, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "not JSON: a NUL byte at offset 83");
    expect_poison(HDR "\"items\":{\"position\":1}}", "missing 'items' array");
    expect_poison(HDR "\"items\":[\"x\"]}", "items[0]: not an object");
    size_t depth = 100000;
    fc_buf b = {0};
    fc_buf_puts(&b, HDR "\"items\":[{\"position\":1,\"term\":\"x\",\"extra\":{\"e\":");
    for (size_t i = 0; i < depth; i++) fc_buf_puts(&b, "[");
    for (size_t i = 0; i < depth; i++) fc_buf_puts(&b, "]");
    fc_buf_puts(&b, "}}]}");
    assert_int_equal(fc_buf_err(&b), 0);
    expect_poison(b.data, "not JSON: nesting too deep");
    fc_buf_free(&b);
    /* too many items */
    fc_buf_puts(&b, HDR "\"items\":[");
    for (int i = 1; i <= FC_BATCH_ITEMS_MAX + 1; i++) fc_buf_printf(&b, "%s{\"position\":%d,\"term\":\"x\"}", i > 1 ? "," : "", i);
    fc_buf_puts(&b, "]}");
    expect_poison(b.data, "'items' holds 10001 items (expected 1..10000)");
    fc_buf_free(&b);
}

/* A term with control characters is data: decoded as it is (the worker cleans what it keeps of the
 * answers; the writer cleans every field); the salvage of a refused message cleans the terms it reads. */
static void test_hostile_terms(void **state) {
    const char *body = HDR "\"items\":[{\"position\":1,\"term\":\"a\\u001b[2J\\nb\"}]}";
    fc_batch_msg m;
    char why[256] = "";
    assert_int_equal(fc_message_decode_batch(body, strlen(body), &m, why, sizeof(why)), FC_OK);
    assert_string_equal(m.items[0].term, "a\x1b[2J\nb");
    fc_batch_msg_free(&m);
    const char *poison = "{\"schema\":9,\"job_id\":\"j-1\",\"items\":[{\"position\":4,\"term\":\"a\\u001b[2J\\nb\xff\"},"
                         "{\"position\":1000000000001,\"term\":\"far\"},{\"position\":5}]}";
    char job[FC_JOB_ID_MAX + 1];
    fc_salvaged *s = NULL;
    size_t n = 0;
    assert_int_equal(fc_message_salvage(poison, strlen(poison), job, &s, &n), FC_OK);
    assert_string_equal(job, "j-1");
    assert_int_equal(n, 2);
    assert_int_equal(s[0].position, 4);
    assert_string_equal(s[0].term, "a[2J b\xef\xbf\xbd");
    assert_int_equal(s[1].position, 5);
    assert_string_equal(s[1].term, "");
    free(s);
    const char *bad_id = "{\"schema\":9,\"job_id\":\"j}x\",\"items\":[{\"position\":4}]}";
    assert_int_equal(fc_message_salvage(bad_id, strlen(bad_id), job, &s, &n), FC_EPARSE);
    assert_null(s);
    const char *nul_term = HDR "\"items\":[{\"position\":1,\"term\":\"a\\u0000b\"}]}";
    assert_int_equal(fc_message_decode_batch(nul_term, strlen(nul_term), &m, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "items[0]: missing or empty 'term' (or it holds a NUL byte)");
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
    fc_batch_hdr h = {"job-1", 7, 1, 0, 0};
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
        cmocka_unit_test(test_hostile_messages),
        cmocka_unit_test(test_hostile_terms),
        cmocka_unit_test(test_message_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
