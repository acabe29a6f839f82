/* Unit tests of the Redis client's pure parts: URL redaction, which must hide exactly what the
 * connector would send to AUTH. No Redis needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_log.h"
#include "fc_redis.h"

/* redacts checks that url redacts to want with return code rc. */
static void redacts(const char *url, int rc, const char *want) {
    char out[512];
    memset(out, 'x', sizeof(out));
    assert_int_equal(fc_redis_url_redact(url, out, sizeof(out)), rc);
    if (strcmp(out, want) != 0) fail_msg("'%s' redacted to '%s', expected '%s'", url, out, want);
}

static void test_redact_password(void **state) {
    (void)state;
    redacts("redis://127.0.0.1:6379/0", FC_OK, "redis://127.0.0.1:6379/0");
    redacts("redis://:sec@host", FC_OK, "redis://:***@host");
    redacts("redis://:sec@host:6380/2", FC_OK, "redis://:***@host:6380/2");
    redacts("redis://user:sec@host", FC_OK, "redis://user:***@host");
    /* No ':' in the userinfo: all of it is the password (sent to AUTH). */
    redacts("redis://sec@host", FC_OK, "redis://***@host");
    redacts("redis://@host", FC_OK, "redis://@host");
    /* The userinfo ends at the last '@'; a password may hold '@', '/' and ':'. */
    redacts("redis://u:sec@ret@host:6379/0", FC_OK, "redis://u:***@host:6379/0");
    redacts("redis://:pa/ss@host", FC_OK, "redis://:***@host");
    redacts("redis://:a:b/c@d@127.0.0.1/1", FC_OK, "redis://:***@127.0.0.1/1");
}

static void test_redact_unparsable(void **state) {
    (void)state;
    /* Whatever fc_redis_new refuses gives the placeholder, never a piece of the URL. */
    const char *bad[] = {"http://:sec@host", ":sec@host", "redis://:sec@", "redis://:sec@host:99999",
                         "redis://:sec@host:12x", "redis://:sec@host/16", "redis://:sec@host/x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redacts(bad[i], FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
        char err[128];
        assert_null(fc_redis_new(bad[i], 100, err, sizeof(err)));
        assert_null(strstr(err, "sec"));
    }
    redacts(NULL, FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
    char long_pw[600] = "redis://:";
    memset(long_pw + 9, 'p', 300);
    strcpy(long_pw + 309, "@host");
    redacts(long_pw, FC_EINVAL, FC_REDIS_URL_UNPARSABLE);
}

static void test_redact_agrees_with_connector(void **state) {
    (void)state;
    /* The URLs that redact fine are the URLs the connector accepts. */
    const char *good[] = {"redis://h", "redis://u:p@ss@h:1/15", "redis://:p/w@h/", "redis://h:6379"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char err[128], out[256];
        fc_redis *r = fc_redis_new(good[i], 100, err, sizeof(err));
        assert_non_null(r);
        fc_redis_free(r);
        assert_int_equal(fc_redis_url_redact(good[i], out, sizeof(out)), FC_OK);
    }
    /* A short buffer truncates, and still holds no password. */
    char small[12];
    assert_int_equal(fc_redis_url_redact("redis://:secret@h", small, sizeof(small)), FC_OK);
    assert_string_equal(small, "redis://:**");
    assert_int_equal(fc_redis_url_redact("redis://:secret@h", small, 0), FC_OK);
}

int main(void) {
    fc_log_setup(FC_LOG_OFF, FC_LOG_TEXT, "test_redis");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact_password),
        cmocka_unit_test(test_redact_unparsable),
        cmocka_unit_test(test_redact_agrees_with_connector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
