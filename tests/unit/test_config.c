/* Unit tests of the settings table: defaults, environment, flags, durations and errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fc_config.h"
#include "fc_error.h"

/* argv arrays of string literals, as main() would receive them. */
#ifdef __clang__
#pragma clang diagnostic ignored "-Wincompatible-pointer-types-discards-qualifiers"
#else
#pragma GCC diagnostic ignored "-Wdiscarded-qualifiers"
#endif

static int load(fc_config *c, int program, int argc, char **argv, char *err) {
    return fc_config_load(c, program, argc, argv, err, 512);
}

static void test_defaults(void **state) {
    fc_config c;
    char err[512], *argv[] = {"w"};
    unsetenv("BATCH_SIZE");
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_string_equal(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379/0");
    assert_string_equal(c.queue_prefix, "flashcard");
    assert_int_equal(c.batch_size, 100);
    assert_int_equal(c.rate_limit, 60);
    assert_int_equal(c.max_attempts, 5);
    assert_int_equal(c.nretry_delays, 4);
    assert_int_equal(c.retry_delays[0], 5000);
    assert_int_equal(c.retry_delays[3], 600000);
    assert_int_equal(c.hold_limit_ms, 300000);
    assert_true(c.worker_count >= 1);
    assert_string_equal(c.api_name, "openrouter");
    assert_string_equal(c.stage1_model, c.api_model);
    fc_config_free(&c);
}

static void test_env_then_flags(void **state) {
    fc_config c;
    char err[512], *argv[] = {"w", "--batch-size", "7", "--queue-prefix=t1", "--api-timeout", "1500ms"};
    setenv("BATCH_SIZE", "50", 1);
    setenv("RATE_LIMIT", "600", 1);
    assert_int_equal(load(&c, FC_WORKER, 6, argv, err), FC_OK);
    assert_int_equal(c.batch_size, 7);
    assert_int_equal(c.rate_limit, 600);
    assert_string_equal(c.queue_prefix, "t1");
    assert_int_equal(c.api_timeout_ms, 1500);
    unsetenv("BATCH_SIZE");
    unsetenv("RATE_LIMIT");
    fc_config_free(&c);
}

/* expect_error checks that one bad value is refused with a message naming the setting. */
static void expect_error(const char *env, const char *value, const char *needle) {
    fc_config c;
    char err[512] = "", *argv[] = {"w"};
    setenv(env, value, 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_EINVAL);
    if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
    assert_null(strchr(err, '\n'));
    unsetenv(env);
    fc_config_free(&c);
}

static void test_errors_name_the_setting(void **state) {
    expect_error("BATCH_SIZE", "abc", "BATCH_SIZE");
    expect_error("BATCH_SIZE", "0", "BATCH_SIZE");
    expect_error("BATCH_SIZE", "auto", "BATCH_SIZE"); /* auto is for the producer only */
    expect_error("AMQP_URL", "nonsense", "AMQP_URL");
    expect_error("REDIS_URL", "http://x", "REDIS_URL");
    expect_error("REDIS_URL", "redis://h:99999", "REDIS_URL");
    expect_error("RATE_LIMIT", "-1", "RATE_LIMIT");
    expect_error("RETRY_DELAYS", "5s,soon", "RETRY_DELAYS");
    expect_error("HOLD_LIMIT", "2h", "HOLD_LIMIT");
    expect_error("QUEUE_PREFIX", "a b", "QUEUE_PREFIX");
    expect_error("LOG_LEVEL", "loud", "LOG_LEVEL");
    expect_error("API_BASE_URL", "ftp://x", "API_BASE_URL");
    expect_error("WORKER_COUNT", "1.5", "WORKER_COUNT");
    expect_error("API_MAX_RESPONSE_BYTES", "1023", "API_MAX_RESPONSE_BYTES");
    expect_error("API_MAX_RESPONSE_BYTES", "268435457", "API_MAX_RESPONSE_BYTES");
    expect_error("RETRY_AFTER_MAX", "999ms", "RETRY_AFTER_MAX");
    expect_error("RETRY_AFTER_MAX", "61m", "RETRY_AFTER_MAX");
}

/* Rate settings are checked at start as the limiter will use them: RATE_LIMITS parsed, and no limit whose
 * bucket takes centuries to refill (its arithmetic would overflow). */
static void test_rate_settings(void **state) {
    fc_config c;
    char err[512], *argv[] = {"w"};
    expect_error("RATE_LIMITS", "openrouter=60/min;tokens=100/h,burst=1e12", "RATE_LIMITS");
    expect_error("RATE_LIMITS", "openrouter=lots", "RATE_LIMITS");
    expect_error("RATE_LIMITS", "openrouter=60/min openrouter=5/s", "RATE_LIMITS");
    setenv("RATE_LIMIT", "1", 1);
    expect_error("RATE_BURST", "1000000000", "RATE_BURST");
    setenv("RATE_BURST", "100", 1);
    setenv("RATE_LIMITS", "openrouter=600/min,burst=20;tokens=200000/min local=5/s", 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    fc_config_free(&c);
    unsetenv("RATE_LIMIT");
    unsetenv("RATE_BURST");
    unsetenv("RATE_LIMITS");
}

/* API_MAX_RESPONSE_BYTES and RETRY_AFTER_MAX: defaults, environment and flags. */
static void test_response_and_retry_after_limits(void **state) {
    fc_config c;
    char err[512], *argv[] = {"w"}, *flags[] = {"w", "--api-max-response-bytes", "4096", "--retry-after-max=1h"};
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_int_equal(c.api_max_response_bytes, 1048576);
    assert_int_equal(c.retry_after_max_ms, 120000);
    fc_config_free(&c);
    setenv("API_MAX_RESPONSE_BYTES", "268435456", 1);
    setenv("RETRY_AFTER_MAX", "1s", 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_int_equal(c.api_max_response_bytes, 268435456);
    assert_int_equal(c.retry_after_max_ms, 1000);
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_WORKER, 4, flags, err), FC_OK);
    assert_int_equal(c.api_max_response_bytes, 4096);
    assert_int_equal(c.retry_after_max_ms, 3600000);
    fc_config_free(&c);
    unsetenv("API_MAX_RESPONSE_BYTES");
    unsetenv("RETRY_AFTER_MAX");
    /* Worker-only: the producer does not know them. */
    assert_int_equal(load(&c, FC_PRODUCER, 4, flags, err), FC_EINVAL);
    fc_config_free(&c);
}

static void test_secrets_not_echoed(void **state) {
    fc_config c;
    char err[512] = "", *argv[] = {"w"};
    setenv("AMQP_URL", "amqp://user:hunter2@", 1);
    setenv("AMQP_URL", "nonsense://user:hunter2@host", 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_EINVAL);
    assert_null(strstr(err, "hunter2"));
    unsetenv("AMQP_URL");
    fc_config_free(&c);
}

/* expect_hidden loads the worker's settings with env=value (and other=other_value if other is not NULL),
 * expects a refusal naming want, and checks that no piece of the password appears in the message. */
static void expect_hidden(const char *env, const char *value, const char *other, const char *other_value,
                          const char *want, const char *const *secrets) {
    fc_config c;
    char err[512] = "", *argv[] = {"w"};
    setenv(env, value, 1);
    if (other) setenv(other, other_value, 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_EINVAL);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
    for (; *secrets; secrets++)
        if (strstr(err, *secrets)) fail_msg("error '%s' shows '%s'", err, *secrets);
    unsetenv(env);
    if (other) unsetenv(other);
    fc_config_free(&c);
}

/* A password holding / or @ is split by each connector's own parser, never by a guess, so no part of it is
 * shown: neither when the URL itself is refused nor when another setting is. */
static void test_passwords_with_slash_or_at_not_echoed(void **state) {
    static const char *const amqp_pw[] = {"pa/ss", "ss@host", "/ss", "pa%2F", "pa@", NULL};
    static const char *const redis_pw[] = {"sec@ret", "sec", "ret@", "@ret", NULL};
    expect_hidden("AMQP_URL", "amqp://user:pa/ss@host", NULL, NULL, "AMQP_URL", amqp_pw);
    expect_hidden("AMQP_URL", "amqps://user:pa/ss@host:5671/vh", NULL, NULL, "AMQP_URL", amqp_pw);
    expect_hidden("AMQP_URL", "amqp://user:pa@ss@host", NULL, NULL, "AMQP_URL", amqp_pw);
    expect_hidden("REDIS_URL", "redis://u:sec@ret@host:99999", NULL, NULL, "REDIS_URL", redis_pw);
    expect_hidden("REDIS_URL", "redis://u:sec@ret@host/99", NULL, NULL, "REDIS_URL", redis_pw);
    expect_hidden("REDIS_URL", "redis://:sec@ret@", NULL, NULL, "REDIS_URL", redis_pw);
    expect_hidden("AMQP_URL", "amqp://user:pa%2Fss@host", "RATE_LIMIT", "-1", "RATE_LIMIT", amqp_pw);
    expect_hidden("REDIS_URL", "redis://u:sec@ret@host", "HOLD_LIMIT", "2h", "HOLD_LIMIT", redis_pw);
    expect_hidden("REDIS_URL", "redis://u:sec@ret@host", "AMQP_URL", "amqp://x:pa/ss@h", "AMQP_URL", redis_pw);
}

/* Secrets come from the environment or *_FILE settings: as flags (readable by every user in
 * /proc/PID/cmdline) they are refused without being echoed; a URL flag without a password is fine. */
static void test_secret_flags_and_files(void **state) {
    fc_config c;
    char err[512] = "";
    char *key[] = {"w", "--api-key", "sk-hunter2"}, *url[] = {"w", "--amqp-url=amqp://u:hunter2@h/"};
    char *plain[] = {"w", "--amqp-url=amqp://h1/,amqp://h2/"};
    assert_int_equal(load(&c, FC_WORKER, 3, key, err), FC_EINVAL);
    assert_non_null(strstr(err, "API_KEY_FILE"));
    assert_null(strstr(err, "hunter2"));
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_WORKER, 2, url, err), FC_EINVAL);
    assert_null(strstr(err, "hunter2"));
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_WORKER, 2, plain, err), FC_OK);
    fc_config_free(&c);
    char path[] = "/tmp/fc-test-secret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "amqp://u:hunter2@h1/,amqp://u:hunter2@h2/\n", 42), 42);
    close(fd);
    char *argv[] = {"w"};
    setenv("AMQP_URL_FILE", path, 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_string_equal(c.amqp_url, "amqp://u:hunter2@h1/,amqp://u:hunter2@h2/");
    fc_config_free(&c);
    truncate(path, 0);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_EINVAL);
    assert_non_null(strstr(err, "AMQP_URL_FILE"));
    assert_non_null(strstr(err, "is empty"));
    fc_config_free(&c);
    unlink(path);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_EINVAL);
    assert_non_null(strstr(err, "cannot read"));
    unsetenv("AMQP_URL_FILE");
    fc_config_free(&c);
}

static void test_flags(void **state) {
    fc_config c;
    char err[512], *unknown[] = {"p", "--nope"}, *missing[] = {"p", "--job-id"};
    char *ok[] = {"p", "data.csv", "--wait", "--batch-size", "auto", "--timeout", "2m"};
    assert_int_equal(load(&c, FC_PRODUCER, 2, unknown, err), FC_EINVAL);
    assert_non_null(strstr(err, "--nope"));
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_PRODUCER, 2, missing, err), FC_EINVAL);
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_PRODUCER, 7, ok, err), FC_OK);
    assert_int_equal(c.wait, 1);
    assert_int_equal(c.batch_size, 0);
    assert_int_equal(c.wait_timeout_ms, 120000);
    assert_int_equal(c.nargs, 1);
    assert_string_equal(c.args[0], "data.csv");
    fc_config_free(&c);
    /* Worker-only flags are unknown to the producer. */
    char *wflag[] = {"p", "--worker-count", "3"};
    assert_int_equal(load(&c, FC_PRODUCER, 3, wflag, err), FC_EINVAL);
    fc_config_free(&c);
}

/* expect_api_name loads the worker's settings with API_BASE_URL=url and returns the derived API_NAME. */
static void expect_api_name(const char *url, const char *want) {
    fc_config c;
    char err[512] = "", *argv[] = {"w"};
    setenv("API_BASE_URL", url, 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_string_equal(c.api_name, want);
    unsetenv("API_BASE_URL");
    fc_config_free(&c);
}

static void test_api_name_from_host(void **state) {
    expect_api_name("https://api.openai.com/v1", "openai");
    expect_api_name("https://openrouter.ai/api/v1", "openrouter");
    expect_api_name("http://user:pw@llm.internal:8080/v1", "llm");
    expect_api_name("http://127.0.0.1:8080/v1", "api");
    expect_api_name("http://[::1]:8080/v1", "api");
}

static void test_durations(void **state) {
    long ms;
    assert_int_equal(fc_duration_parse("500ms", &ms), FC_OK);
    assert_int_equal(ms, 500);
    assert_int_equal(fc_duration_parse("30s", &ms), FC_OK);
    assert_int_equal(ms, 30000);
    assert_int_equal(fc_duration_parse("2m", &ms), FC_OK);
    assert_int_equal(ms, 120000);
    assert_int_equal(fc_duration_parse("7", &ms), FC_OK);
    assert_int_equal(ms, 7000);
    assert_int_equal(fc_duration_parse("1.5s", &ms), FC_OK);
    assert_int_equal(ms, 1500);
    assert_int_equal(fc_duration_parse("", &ms), FC_EINVAL);
    assert_int_equal(fc_duration_parse("-1s", &ms), FC_EINVAL);
    assert_int_equal(fc_duration_parse("3 weeks", &ms), FC_EINVAL);
}

/* flashcard-admin takes the connection settings, RABBITMQ_MANAGEMENT_URL and its own flags, and none of the
 * worker's or producer's; the producer and the worker do not take the admin's. */
static void test_admin_settings(void **state) {
    fc_config c;
    char err[512] = "";
    char *argv[] = {"a", "dead", "replay", "--job", "j1", "--reason=permanent", "--limit", "10", "--rate", "2.5",
                    "--json", "--queue-prefix", "ops"};
    unsetenv("BATCH_SIZE");
    setenv("RETRY_DELAYS", "1s,2m", 1);
    assert_int_equal(load(&c, FC_ADMIN, 13, argv, err), FC_OK);
    assert_int_equal(c.nargs, 2);
    assert_string_equal(c.args[0], "dead");
    assert_string_equal(c.args[1], "replay");
    assert_string_equal(c.admin_job, "j1");
    assert_string_equal(c.admin_reason, "permanent");
    assert_int_equal(c.admin_limit, 10);
    assert_true(c.admin_rate > 2.4 && c.admin_rate < 2.6);
    assert_int_equal(c.json, 1);
    assert_int_equal(c.admin_yes, 0);
    assert_string_equal(c.queue_prefix, "ops");
    assert_string_equal(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_int_equal(c.nretry_delays, 2);
    assert_int_equal(c.retry_delays[1], 120000);
    assert_null(c.mgmt_url);
    assert_null(c.batch_size_text); /* BATCH_SIZE is not the admin's: not loaded, not validated */
    fc_config_free(&c);
    unsetenv("RETRY_DELAYS");
    char *wflag[] = {"a", "status", "--worker-count", "3"}, *pflag[] = {"a", "status", "--wait"};
    char *aflag[] = {"p", "data.csv", "--yes"}, *wjson[] = {"w", "--json"};
    assert_int_equal(load(&c, FC_ADMIN, 4, wflag, err), FC_EINVAL);
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_ADMIN, 3, pflag, err), FC_EINVAL);
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_PRODUCER, 3, aflag, err), FC_EINVAL);
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_WORKER, 2, wjson, err), FC_EINVAL);
    fc_config_free(&c);
    /* The producer's --output and the admin's are one field. */
    char *out[] = {"a", "results", "j1", "--output", "late.tsv"};
    assert_int_equal(load(&c, FC_ADMIN, 5, out, err), FC_OK);
    assert_string_equal(c.output, "late.tsv");
    fc_config_free(&c);
}

/* RABBITMQ_MANAGEMENT_URL: a secret like the other URLs (from the environment or its _FILE, never echoed,
 * as a flag only without a password), and an http(s) URL. */
static void test_admin_management_url(void **state) {
    fc_config c;
    char err[512] = "", *argv[] = {"a", "status"};
    char *withpw[] = {"a", "status", "--rabbitmq-management-url=http://ops:hunter2@h:15672"};
    char *plain[] = {"a", "status", "--rabbitmq-management-url", "http://h:15672"};
    setenv("RABBITMQ_MANAGEMENT_URL", "https://ops:hunter2@mq.internal:15671", 1);
    assert_int_equal(load(&c, FC_ADMIN, 2, argv, err), FC_OK);
    assert_string_equal(c.mgmt_url, "https://ops:hunter2@mq.internal:15671");
    fc_config_free(&c);
    setenv("RABBITMQ_MANAGEMENT_URL", "ftp://ops:hunter2@mq", 1);
    assert_int_equal(load(&c, FC_ADMIN, 2, argv, err), FC_EINVAL);
    assert_non_null(strstr(err, "RABBITMQ_MANAGEMENT_URL"));
    assert_null(strstr(err, "hunter2"));
    fc_config_free(&c);
    unsetenv("RABBITMQ_MANAGEMENT_URL");
    assert_int_equal(load(&c, FC_ADMIN, 3, withpw, err), FC_EINVAL);
    assert_non_null(strstr(err, "RABBITMQ_MANAGEMENT_URL_FILE"));
    assert_null(strstr(err, "hunter2"));
    fc_config_free(&c);
    assert_int_equal(load(&c, FC_ADMIN, 4, plain, err), FC_OK);
    assert_string_equal(c.mgmt_url, "http://h:15672");
    fc_config_free(&c);
    char path[] = "/tmp/fc-test-mgmt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "http://ops:hunter2@h:15672\n", 27), 27);
    close(fd);
    setenv("RABBITMQ_MANAGEMENT_URL_FILE", path, 1);
    assert_int_equal(load(&c, FC_ADMIN, 2, argv, err), FC_OK);
    assert_string_equal(c.mgmt_url, "http://ops:hunter2@h:15672");
    fc_config_free(&c);
    unsetenv("RABBITMQ_MANAGEMENT_URL_FILE");
    unlink(path);
    /* Not a setting of the producer or the worker. */
    setenv("RABBITMQ_MANAGEMENT_URL", "nonsense", 1);
    assert_int_equal(load(&c, FC_WORKER, 1, argv, err), FC_OK);
    assert_null(c.mgmt_url);
    fc_config_free(&c);
    unsetenv("RABBITMQ_MANAGEMENT_URL");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),          cmocka_unit_test(test_env_then_flags),
        cmocka_unit_test(test_errors_name_the_setting), cmocka_unit_test(test_secrets_not_echoed),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_secret_flags_and_files),             cmocka_unit_test(test_durations),
        cmocka_unit_test(test_api_name_from_host), cmocka_unit_test(test_response_and_retry_after_limits),
        cmocka_unit_test(test_passwords_with_slash_or_at_not_echoed), cmocka_unit_test(test_rate_settings),
        cmocka_unit_test(test_admin_settings),    cmocka_unit_test(test_admin_management_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
