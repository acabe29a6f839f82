/* Unit tests of dead letters read back: decoding, selection by class and limit, the replacement batch
 * (attempt 1, errors dropped, decodable by the worker) and the remainder (the other items, errors kept). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_buf.h"
#include "fc_deadletter.h"
#include "fc_error.h"
#include "fc_message.h"

static const char letter[] =
    "{\"schema\":1,\"job_id\":\"job-7\",\"batch\":3,\"attempt\":2,\"not_before\":1700000000000,\"items\":["
    "{\"position\":11,\"term\":\"사과\",\"type\":\"noun\",\"extra\":{\"level\":\"A1\"},\"last_error\":\"HTTP 500\","
    "\"error\":{\"class\":\"permanent\",\"http_status\":400,\"attempts\":1,\"message\":\"HTTP 400: bad\"}},"
    "{\"position\":12,\"term\":\"배\",\"type\":\"noun\","
    "\"error\":{\"class\":\"retryable\",\"http_status\":500,\"attempts\":5,\"message\":\"HTTP 500: down\"}},"
    "{\"position\":13,\"term\":\"a/b\",\"type\":\"\","
    "\"error\":{\"class\":\"permanent\",\"http_status\":422,\"attempts\":1,\"message\":\"no\"}}]}";

static fc_dead_letter *parse(const char *body) {
    fc_dead_letter *dl = NULL;
    char why[200];
    assert_int_equal(fc_dead_letter_parse(body, strlen(body), &dl, why, sizeof(why)), FC_OK);
    return dl;
}

static void test_decode(void **state) {
    fc_dead_letter *dl = parse(letter);
    assert_string_equal(fc_dead_letter_job(dl), "job-7");
    assert_int_equal(fc_dead_letter_batch(dl), 3);
    assert_int_equal(fc_dead_letter_nitems(dl), 3);
    const fc_dead_item *a = fc_dead_letter_item(dl, 0), *b = fc_dead_letter_item(dl, 1);
    assert_int_equal(a->position, 11);
    assert_string_equal(a->term, "사과");
    assert_string_equal(a->cls, "permanent");
    assert_int_equal(a->http_status, 400);
    assert_int_equal(a->attempts, 1);
    assert_string_equal(a->message, "HTTP 400: bad");
    assert_string_equal(b->cls, "retryable");
    assert_int_equal(b->attempts, 5);
    fc_dead_letter_free(dl);
}

/* Poison: what is not a batch cannot be replayed. */
static void test_poison(void **state) {
    static const char *const bodies[] = {"not JSON {", "{\"hello\":\"world\"}", "[1,2]",
                                         "{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[]}", ""};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        fc_dead_letter *dl = (fc_dead_letter *)1;
        char why[200] = "";
        assert_int_equal(fc_dead_letter_parse(bodies[i], strlen(bodies[i]), &dl, why, sizeof(why)), FC_EPARSE);
        assert_null(dl);
        assert_true(why[0] != '\0');
    }
}

/* sel_of selects with a filter of class cls (NULL: any), skipping skip, fallback class fb, at most max. */
static size_t sel_of(const fc_dead_letter *dl, const char *cls, const char *skip, const char *fb, long long max,
                     unsigned char *sel) {
    fc_dead_filter f = {cls, skip, fb, max};
    return fc_dead_letter_select(dl, &f, sel);
}

static void test_select(void **state) {
    fc_dead_letter *dl = parse(letter);
    unsigned char sel[3];
    assert_int_equal(sel_of(dl, NULL, NULL, NULL, -1, sel), 3);
    assert_int_equal(sel_of(dl, "permanent", NULL, NULL, -1, sel), 2);
    assert_true(sel[0] && !sel[1] && sel[2]);
    assert_int_equal(sel_of(dl, "permanent", NULL, NULL, 1, sel), 1);
    assert_true(sel[0] && !sel[1] && !sel[2]);
    assert_int_equal(sel_of(dl, "crashed", NULL, NULL, -1, sel), 0);
    assert_int_equal(sel_of(dl, NULL, NULL, NULL, 0, sel), 0);
    /* Without a class, skip_cls leaves its items out (replay leaves cancelled items), before the limit. */
    assert_int_equal(sel_of(dl, NULL, "permanent", NULL, 1, sel), 1);
    assert_true(!sel[0] && sel[1] && !sel[2]);
    assert_int_equal(sel_of(dl, "permanent", "permanent", NULL, -1, sel), 2); /* a class given wins */
    fc_dead_letter_free(dl);
    /* An item without an error object takes the dead letter's class (its x-error-class header). */
    dl = parse("{\"schema\":1,\"job_id\":\"j\",\"batch\":0,\"attempt\":1,\"items\":[{\"position\":1,\"term\":\"t\"}]}");
    assert_int_equal(sel_of(dl, "crashed", NULL, NULL, -1, sel), 0);
    assert_int_equal(sel_of(dl, "crashed", NULL, "crashed", -1, sel), 1);
    assert_string_equal(fc_dead_letter_class(dl, 0, "crashed"), "crashed");
    assert_string_equal(fc_dead_letter_class(dl, 0, NULL), "");
    assert_int_equal(sel_of(dl, NULL, "cancelled", "cancelled", -1, sel), 0);
    fc_dead_letter_free(dl);
}

/* A selection written as positions and read back selects the same items. */
static void test_positions(void **state) {
    fc_dead_letter *dl = parse(letter);
    unsigned char sel[3] = {1, 0, 1}, back[3], none[3] = {0, 0, 0};
    fc_buf b = {0};
    assert_int_equal(fc_dead_letter_positions(dl, sel, &b), FC_OK);
    assert_string_equal(b.data, "11,13");
    assert_int_equal(fc_dead_letter_select_positions(dl, b.data, back), 2);
    assert_memory_equal(sel, back, 3);
    fc_buf_reset(&b);
    assert_int_equal(fc_dead_letter_positions(dl, none, &b), FC_OK);
    assert_string_equal(b.data, "");
    assert_int_equal(fc_dead_letter_select_positions(dl, "", back), 0);
    assert_int_equal(fc_dead_letter_select_positions(dl, "1,112,12", back), 1); /* whole numbers only */
    assert_true(!back[0] && back[1] && !back[2]);
    assert_int_equal(fc_dead_letter_select_positions(dl, "13", back), 1);
    assert_true(back[2]);
    fc_buf_free(&b);
    fc_dead_letter_free(dl);
}

static void test_replacement(void **state) {
    fc_dead_letter *dl = parse(letter);
    unsigned char sel[3] = {1, 0, 1};
    fc_buf b = {0};
    assert_int_equal(fc_dead_letter_replacement(dl, sel, &b), FC_OK);
    assert_null(strstr(b.data, "error"));
    assert_null(strstr(b.data, "not_before"));
    assert_non_null(strstr(b.data, "\"a/b\""));      /* '/' not escaped */
    assert_non_null(strstr(b.data, "\"level\":\"A1\"")); /* extra columns kept */
    fc_batch_msg m;
    char why[200];
    assert_int_equal(fc_message_decode_batch(b.data, b.len, &m, why, sizeof(why)), FC_OK);
    assert_string_equal(m.hdr.job_id, "job-7");
    assert_int_equal(m.hdr.batch, 3);
    assert_int_equal(m.hdr.attempt, 1);
    assert_int_equal(m.hdr.not_before_ms, 0);
    assert_int_equal(m.nitems, 2);
    assert_int_equal(m.items[0].position, 11);
    assert_int_equal(m.items[1].position, 13);
    assert_null(m.last_error[0]);
    fc_batch_msg_free(&m);
    unsigned char none[3] = {0, 0, 0};
    fc_buf_reset(&b);
    assert_int_equal(fc_dead_letter_replacement(dl, none, &b), FC_EINVAL);
    fc_buf_free(&b);
    fc_dead_letter_free(dl);
}

static void test_remainder(void **state) {
    fc_dead_letter *dl = parse(letter);
    unsigned char sel[3] = {1, 0, 1}, all[3] = {1, 1, 1};
    fc_buf b = {0};
    assert_int_equal(fc_dead_letter_remainder(dl, sel, &b), FC_OK);
    fc_dead_letter *rest = parse(b.data);
    assert_int_equal(fc_dead_letter_nitems(rest), 1);
    assert_int_equal(fc_dead_letter_item(rest, 0)->position, 12);
    assert_string_equal(fc_dead_letter_item(rest, 0)->cls, "retryable");
    assert_int_equal(fc_dead_letter_batch(rest), 3);
    assert_non_null(strstr(b.data, "\"attempt\":2")); /* the rest of the dead letter as it was */
    assert_non_null(strstr(b.data, "\"not_before\":1700000000000"));
    fc_dead_letter_free(rest);
    /* The same dead letter and selection give the same bytes (a remainder published twice is a copy). */
    fc_dead_letter *again = parse(letter);
    fc_buf b2 = {0};
    assert_int_equal(fc_dead_letter_remainder(again, sel, &b2), FC_OK);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    fc_buf_free(&b2);
    fc_dead_letter_free(again);
    fc_buf_reset(&b);
    assert_int_equal(fc_dead_letter_remainder(dl, all, &b), FC_EINVAL);
    fc_buf_free(&b);
    fc_dead_letter_free(dl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode),      cmocka_unit_test(test_poison),    cmocka_unit_test(test_select),
        cmocka_unit_test(test_positions),   cmocka_unit_test(test_replacement), cmocka_unit_test(test_remainder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
