/* Unit tests of the logger: one line per event, whatever text from outside a message carries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "fc_log.h"

/* logged runs fc_warn("term '%s' said: %s", a, b) with stderr sent to a temporary file and returns what
 * was written (caller frees). */
static char *logged(int format, const char *a, const char *b) {
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fc_log_setup(FC_LOG_INFO, format, "test");
    fc_warn("term '%s' said: %s", a, b);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *out = calloc(1, 20000);
    assert_non_null(out);
    ssize_t n = pread(fd, out, 19999, 0);
    assert_true(n > 0);
    close(fd);
    unlink(path);
    return out;
}

static const char hostile_term[] = "bad\nterm\x1b[2J\r\t\x7f\xc2\x9b" "31m\xff end";

static void test_text_one_line(void **state) {
    char *out = logged(FC_LOG_TEXT, hostile_term, "multi\nline \"error\" body");
    assert_non_null(strstr(out, " test["));
    assert_non_null(strstr(out, "warn  term 'bad\\nterm\\x1b[2J\\r\\t\\x7f\\u009b31m\\xff end' said: multi\\nline "
                                "\"error\" body\n"));
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1); /* one line */
    for (const char *p = out; *p; p++)
        if (*p != '\n') assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
    free(out);
}

static void test_json_valid(void **state) {
    char *out = logged(FC_LOG_JSON, hostile_term, "\"quoted\" \\ back");
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, out, (int)strlen(out));
    assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
    json_object *msg;
    assert_true(json_object_object_get_ex(o, "msg", &msg));
    assert_string_equal(json_object_get_string(msg),
                        "term 'bad\nterm\x1b[2J\r\t\x7f\xc2\x9b" "31m\xef\xbf\xbd end' said: \"quoted\" \\ back");
    json_object_put(o);
    json_tokener_free(tok);
    free(out);
}

/* A message longer than the line: cut, never inside an escape, still one line. */
static void test_long_message(void **state) {
    char *big = malloc(6000);
    memset(big, '\x1b', 5999);
    big[5999] = '\0';
    char *out = logged(FC_LOG_TEXT, big, "");
    assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
    char *last = strrchr(out, '\\');
    assert_non_null(last);
    assert_int_equal(strncmp(last, "\\x1b", 4), 0);
    free(out);
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_text_one_line), cmocka_unit_test(test_json_valid),
                                       cmocka_unit_test(test_long_message)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
