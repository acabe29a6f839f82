/* Unit tests of the RabbitMQ client's parts that need no broker: URL redaction and the state of a
 * connection that was never opened. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "fc_amqp.h"
#include "fc_error.h"

/* expect_redacted checks the display form of url and the return: FC_OK when amqp_parse_url accepts it;
 * FC_EINVAL with a placeholder holding nothing of url after the scheme when it refuses it. */
static void expect_redacted(const char *url, int rc, const char *want) {
    char out[256];
    assert_int_equal(fc_amqp_url_redact(url, out, sizeof(out)), rc);
    assert_string_equal(out, want);
}

static void test_redact_parsed_urls(void **state) {
    expect_redacted("amqp://guest:guest@127.0.0.1:5672/%2f", FC_OK, "amqp://guest:***@127.0.0.1:5672/%2F");
    expect_redacted("amqp://user:pa%2Fss@host", FC_OK, "amqp://user:***@host:5672/%2F");
    expect_redacted("amqp://us%40er:s%40c%3Aret@host:1/v%2Fx", FC_OK, "amqp://us%40er:***@host:1/v%2Fx");
    expect_redacted("amqps://u:p@[::1]:5/vh", FC_OK, "amqps://u:***@[::1]:5/vh");
    /* Without userinfo the connector logs in as guest/guest: still no password shown. */
    expect_redacted("amqp://h", FC_OK, "amqp://guest:***@h:5672/%2F");
}

static void test_redact_refused_urls(void **state) {
    expect_redacted("amqp://user:pa/ss@host", FC_EINVAL, "amqp://(URL not shown: it does not parse)");
    expect_redacted("amqps://user:pa@ss@host", FC_EINVAL, "amqps://(URL not shown: it does not parse)");
    expect_redacted("nonsense://user:hunter2@host", FC_EINVAL, "(URL not shown: it does not parse)");
    expect_redacted("user:hunter2@host", FC_EINVAL, "(URL not shown: it does not parse)");
}

/* A list of brokers: every URL shown redacted, a bad one as the placeholder, none of its password. */
static void test_redact_lists(void **state) {
    expect_redacted("amqp://a:pw1@n1:5672/%2f, amqp://b:pw2@n2:5673/%2f", FC_OK,
                    "amqp://a:***@n1:5672/%2F,amqp://b:***@n2:5673/%2F");
    expect_redacted("amqp://a:pw1@n1/,amqp://b:pw/2@n2/", FC_EINVAL,
                    "amqp://a:***@n1:5672/,amqp://(URL not shown: it does not parse)");
    /* A raw comma in a password splits the URL: no piece shows any of it. */
    char out[256];
    fc_amqp_url_redact("amqp://a:s3c,r3t@n1/", out, sizeof(out));
    assert_null(strstr(out, "s3c"));
    assert_null(strstr(out, "r3t"));
}

static void test_url_lists_checked(void **state) {
    char why[256];
    assert_int_equal(fc_amqp_url_check("amqp://a:b@n1/,amqps://a:b@n2/", why, sizeof(why)), FC_OK);
    assert_int_equal(fc_amqp_url_check("amqp://a:b@n1/,,nonsense", why, sizeof(why)), FC_EINVAL);
    assert_non_null(strstr(why, "URL 2 of the list"));
    assert_int_equal(fc_amqp_url_check(" , ", why, sizeof(why)), FC_EINVAL);
    char many[2048] = "";
    for (int i = 0; i <= FC_AMQP_BROKERS_MAX; i++) strcat(many, "amqp://h/,");
    assert_int_equal(fc_amqp_url_check(many, why, sizeof(why)), FC_EINVAL);
    assert_non_null(strstr(why, "at most"));
    assert_null(fc_amqp_new("amqp://a:b@n1/,nonsense", 0, "t"));
    fc_amqp *a = fc_amqp_new("amqp://a:b@n1:1/, amqp://a:b@n2:2/", 0, "t");
    assert_non_null(a);
    char at[64];
    assert_string_equal(fc_amqp_broker(a, at, sizeof(at)), "n1:1");
    fc_amqp_free(a);
}

/* Unreachable brokers are each tried once per connect, and the error says so without a password. */
static void test_connect_tries_every_broker(void **state) {
    fc_amqp *a = fc_amqp_new("amqp://u:pw1@127.0.0.1:1/,amqp://u:pw2@127.0.0.1:2/", 0, "t");
    char at[64];
    assert_int_equal(fc_amqp_connect(a), FC_ECONN);
    assert_non_null(strstr(fc_amqp_errstr(a), "none of the 2 brokers"));
    assert_null(strstr(fc_amqp_errstr(a), "pw"));
    /* The next round starts where this one did. */
    assert_string_equal(fc_amqp_broker(a, at, sizeof(at)), "127.0.0.1:1");
    fc_amqp_free(a);
}

static void test_redact_truncates(void **state) {
    char out[12];
    assert_int_equal(fc_amqp_url_redact("amqp://user:secret@a-long-host-name", out, sizeof(out)), FC_OK);
    assert_string_equal(out, "amqp://user");
}

/* A connection that was never opened is neither blocked nor consuming, and polling it reports the
 * loss without touching rabbitmq-c. */
static void test_unconnected_state(void **state) {
    fc_amqp *a = fc_amqp_new("amqp://u:p@127.0.0.1:1/", 0, "test");
    fc_amqp_handler h = {0};
    assert_non_null(a);
    assert_int_equal(fc_amqp_ok(a), 0);
    assert_int_equal(fc_amqp_blocked(a), 0);
    assert_int_equal(fc_amqp_consuming(a), 0);
    assert_int_equal(fc_amqp_poll(a, 0, &h), FC_ECONN);
    assert_int_equal(fc_amqp_cancel(a), FC_OK);
    fc_amqp_close(a);
    assert_int_equal(fc_amqp_consuming(a), 0);
    fc_amqp_free(a);
    fc_amqp_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_parsed_urls),
        cmocka_unit_test(test_redact_refused_urls),
        cmocka_unit_test(test_redact_truncates),
        cmocka_unit_test(test_redact_lists),
        cmocka_unit_test(test_url_lists_checked),
        cmocka_unit_test(test_connect_tries_every_broker),
        cmocka_unit_test(test_unconnected_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
