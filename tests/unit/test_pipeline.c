/* Unit tests for the pipeline codec (fc_pipeline) and its SHA-256 (fc_sha256). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "fc_error.h"
#include "fc_pipeline.h"
#include "fc_sha256.h"

#define S1_GOOD                                                                                          \
    "{\"term_number\":1,\"term\":\"안녕하세요\",\"ipa\":\"/an.njʌŋ.ha.se.jo/\",\"pos\":\"interjection\","   \
    "\"primary_meaning\":\"hello\",\"other_meanings\":null,\"metaphor\":\"An ANNIE on a YAWN\","          \
    "\"metaphor_noun\":\"Annie\",\"metaphor_action\":\"yawns\",\"suggested_location\":\"front door\","      \
    "\"anchor_object\":\"doormat\",\"anchor_sensory\":\"creak\",\"explanation\":\"sounds like\","           \
    "\"comparison\":\"vs 안녕\",\"usage_context\":\"polite\",\"homonyms\":null,"                            \
    "\"korean_keywords\":[\"인사\",\"안녕\"]}"

static const char *const required[] = {
    "term_number", "term", "ipa", "pos", "primary_meaning", "metaphor", "metaphor_noun", "metaphor_action",
    "suggested_location", "anchor_object", "anchor_sensory", "explanation", "comparison", "korean_keywords",
};

static char *strip(const char *s, size_t *n) { return fc_pipeline_strip_fence(s, strlen(s), n); }

/* ---- fence stripping ---- */

static void test_fence_json(void **state) {
    size_t n;
    char *s = strip("```json\n{\"a\":1}\n```", &n);
    assert_string_equal(s, "{\"a\":1}");
    assert_int_equal(n, 7);
    free(s);
}

static void test_fence_plain(void **state) {
    char *s = strip("```\n{\"a\":1}\n```\n", NULL);
    assert_string_equal(s, "{\"a\":1}");
    free(s);
}

static void test_fence_none(void **state) {
    char *s = strip("{\"a\":1}", NULL);
    assert_string_equal(s, "{\"a\":1}");
    free(s);
}

static void test_fence_whitespace(void **state) {
    char *s = strip("  \r\n\n ```json \r\n{\"a\":1}\r\n```  \n\n", NULL);
    assert_string_equal(s, "{\"a\":1}");
    free(s);
    s = strip("\n  {\"a\":1}  \n", NULL);
    assert_string_equal(s, "{\"a\":1}");
    free(s);
}

static void test_fence_unclosed(void **state) {
    char *s = strip("```json\n{\"a\":1}\n", NULL);
    assert_string_equal(s, "{\"a\":1}");
    free(s);
}

static void test_fence_empty_and_tabs(void **state) {
    size_t n = 99;
    char *s = fc_pipeline_strip_fence("", 0, &n);
    assert_string_equal(s, "");
    assert_int_equal(n, 0);
    free(s);
    s = strip("```tsv\na\tb\t\t\n```", NULL); /* trailing tabs are empty TSV fields: kept */
    assert_string_equal(s, "a\tb\t\t");
    free(s);
    s = strip("``````", NULL);
    assert_string_equal(s, "");
    free(s);
}

/* ---- stage 1 ---- */

static void test_stage1_good(void **state) {
    char *out = NULL, why[256] = "";
    const char *in = "```json\n" S1_GOOD "\n```";
    assert_int_equal(fc_pipeline_stage1_parse(in, strlen(in), &out, why, sizeof(why)), 0);
    assert_non_null(out);
    assert_string_equal(out, S1_GOOD); /* compact, keys in received order, UTF-8 unescaped */
    free(out);
}

/* json_without returns S1_GOOD with the member key removed (or set to null if as_null); caller frees. */
static char *json_without(const char *key, int as_null) {
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *good = S1_GOOD;
    const char *k = strstr(good, pat);
    assert_non_null(k);
    const char *v = k + strlen(pat);
    const char *end = v;
    int depth = 0, instr = 0;
    for (; *end; end++) {
        if (instr) {
            if (*end == '\\') end++;
            else if (*end == '"') instr = 0;
        } else if (*end == '"') instr = 1;
        else if (*end == '[' || *end == '{') depth++;
        else if ((*end == ']' || *end == '}') && depth > 0) depth--;
        else if ((*end == ',' || *end == '}') && depth == 0) break;
    }
    char *out = malloc(strlen(good) + 8);
    size_t pre = (size_t)(as_null ? v - good : k - good);
    memcpy(out, good, pre);
    out[pre] = '\0';
    if (as_null) {
        strcat(out, "null");
        strcat(out, end);
    } else if (*end == ',') {
        strcat(out, end + 1);
    } else { /* last member: drop the preceding comma */
        out[pre - 1] = '\0';
        strcat(out, end);
    }
    return out;
}

static void test_stage1_each_required_missing(void **state) {
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char *in = json_without(required[i], 0), *out = NULL, why[256] = "", expect[128];
        assert_int_equal(fc_pipeline_stage1_parse(in, strlen(in), &out, why, sizeof(why)), FC_EPARSE);
        assert_null(out);
        snprintf(expect, sizeof(expect), "stage 1 answer lacks field '%s'", required[i]);
        assert_string_equal(why, expect);
        free(in);
        in = json_without(required[i], 1);
        assert_int_equal(fc_pipeline_stage1_parse(in, strlen(in), &out, why, sizeof(why)), FC_EPARSE);
        assert_non_null(strstr(why, required[i]));
        free(in);
    }
}

static void test_stage1_optional(void **state) {
    const char *opt[] = {"other_meanings", "usage_context", "homonyms"};
    for (size_t i = 0; i < 3; i++) {
        for (int as_null = 0; as_null < 2; as_null++) {
            char *in = json_without(opt[i], as_null), *out = NULL, why[256] = "";
            assert_int_equal(fc_pipeline_stage1_parse(in, strlen(in), &out, why, sizeof(why)), 0);
            assert_non_null(out);
            free(out);
            free(in);
        }
    }
}

static void test_stage1_not_object(void **state) {
    const char *cases[] = {"[1,2]", "\"text\"", "42", "null"};
    for (size_t i = 0; i < 4; i++) {
        char *out = NULL, why[256] = "";
        assert_int_equal(fc_pipeline_stage1_parse(cases[i], strlen(cases[i]), &out, why, sizeof(why)),
                         FC_EPARSE);
        assert_null(out);
        assert_string_equal(why, "stage 1 answer is not a JSON object");
    }
}

static void test_stage1_not_json(void **state) {
    const char *cases[] = {"Sure! Here it is.", "{\"term\":", "", "{\"a\":1} trailing"};
    for (size_t i = 0; i < 4; i++) {
        char *out = NULL, why[256] = "";
        assert_int_equal(fc_pipeline_stage1_parse(cases[i], strlen(cases[i]), &out, why, sizeof(why)),
                         FC_EPARSE);
        assert_null(out);
        assert_non_null(strstr(why, "stage 1 answer is not JSON"));
    }
}

/* ---- stage 2 ---- */

#define ROW9 "1\t안녕하세요\t1\tScene\tfront door\tWho yawns?\t안녕하세요 hello\tkorean tab::scene\tpolite"

static void test_stage2_header_only(void **state) {
    fc_card *cards = (fc_card *)1;
    size_t n = 7;
    char why[128] = "";
    const char *in = "```tsv\n" FC_CARD_HEADER "\n```";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), FC_EPARSE);
    assert_null(cards);
    assert_int_equal(n, 0);
    assert_string_equal(why, "stage 2 answer has no cards");
    assert_int_equal(fc_pipeline_stage2_parse("", 0, &cards, &n, why, sizeof(why)), FC_EPARSE);
}

static void test_stage2_rows(void **state) {
    fc_card *cards = NULL;
    size_t n = 0;
    char why[128] = "";
    const char *in = "```\n" FC_CARD_HEADER "\n" ROW9 "\n"
                     "some commentary line\n"
                     "\n"
                     " \t \n" /* blank: skipped */
                     "1\t안녕하세요\t1\tGrammar\tp\tQ\\tx\tA\\nline2\ttags\n" /* 8 fields */
                     "```";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 2);
    assert_string_equal(cards[0].f[FC_CARD_POSITION], "1");
    assert_string_equal(cards[0].f[FC_CARD_TERM], "안녕하세요");
    assert_string_equal(cards[0].f[FC_CARD_TAB_NAME], "Scene");
    assert_string_equal(cards[0].f[FC_CARD_BACK], "안녕하세요 hello");
    assert_string_equal(cards[0].f[FC_CARD_HONORIFIC_LEVEL], "polite");
    assert_string_equal(cards[1].f[FC_CARD_TAB_NAME], "Grammar");
    assert_string_equal(cards[1].f[FC_CARD_FRONT], "Q\\tx"); /* escaped sequences kept verbatim */
    assert_string_equal(cards[1].f[FC_CARD_BACK], "A\\nline2");
    assert_string_equal(cards[1].f[FC_CARD_TAGS], "tags");
    assert_string_equal(cards[1].f[FC_CARD_HONORIFIC_LEVEL], "");
    fc_cards_free(cards, n);
}

static void test_stage2_crlf_no_header(void **state) {
    fc_card *cards = NULL;
    size_t n = 0;
    char why[128] = "";
    const char *in = ROW9 "\r\n" ROW9 "\r\n1\tt\t1\tHanja\tp\tf\tb\ttags\t\r\n";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 3);
    assert_string_equal(cards[1].f[FC_CARD_HONORIFIC_LEVEL], "polite"); /* no trailing \r */
    assert_string_equal(cards[2].f[FC_CARD_TAGS], "tags");
    assert_string_equal(cards[2].f[FC_CARD_HONORIFIC_LEVEL], "");
    fc_cards_free(cards, n);
}

static void test_stage2_empty_fields_and_extra(void **state) {
    fc_card *cards = NULL;
    size_t n = 0;
    char why[128] = "";
    const char *in = "1\tt\t1\tScene\t\tf\tb\t\t\n2\tt\t1\tScene\tp\tf\tb\ttags\tpolite\t\t";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 2);
    assert_string_equal(cards[0].f[FC_CARD_PRIMER], "");
    assert_string_equal(cards[0].f[FC_CARD_TAGS], "");
    assert_string_equal(cards[1].f[FC_CARD_HONORIFIC_LEVEL], "polite");
    fc_cards_free(cards, n);
    fc_cards_free(NULL, 0);
}

/* A row with a field too many or too few would shift its columns: the whole answer is bad (retried). */
static void test_stage2_wrong_columns(void **state) {
    const char *cases[][2] = {
        {ROW9 "\n1\ta\tb\tc\td\te\tf\n", "stage 2 answer line 2 has 7 fields (expected 9)"},
        {FC_CARD_HEADER "\n" ROW9 "\textra\n", "stage 2 answer line 2 has 10 fields (expected 9)"},
        {"1\tt\t1\tScene\tp\tf\twith\ttab\tb\ttags\tpolite\n", "stage 2 answer line 1 has 11 fields (expected 9)"},
        {"1\tt\n", "stage 2 answer line 1 has 2 fields (expected 9)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fc_card *cards = (fc_card *)1;
        size_t n = 7;
        char why[128] = "";
        assert_int_equal(fc_pipeline_stage2_parse(cases[i][0], strlen(cases[i][0]), &cards, &n, why, sizeof(why)),
                         FC_EPARSE);
        assert_null(cards);
        assert_int_equal(n, 0);
        assert_string_equal(why, cases[i][1]);
    }
}

/* Control characters never survive into a card field: CR, VT, FF become a space, ESC, DEL, C1 and other C0
 * controls are dropped; stage-1 strings (keys included) get the same, nested ones too. */
static void test_hostile_fields_cleaned(void **state) {
    const char *in = "1\tt\x1b[31m\t1\tSc\rene\tp\x7f\tf\vx\tb\xc2\x9b" "2J\ttags\x01\x02\tpol\x0cite\n";
    fc_card *cards = NULL;
    size_t n = 0;
    char why[128] = "";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 1);
    assert_string_equal(cards[0].f[FC_CARD_TERM], "t[31m");
    assert_string_equal(cards[0].f[FC_CARD_TAB_NAME], "Sc ene");
    assert_string_equal(cards[0].f[FC_CARD_PRIMER], "p");
    assert_string_equal(cards[0].f[FC_CARD_FRONT], "f x");
    assert_string_equal(cards[0].f[FC_CARD_BACK], "b2J");
    assert_string_equal(cards[0].f[FC_CARD_TAGS], "tags");
    assert_string_equal(cards[0].f[FC_CARD_HONORIFIC_LEVEL], "pol ite");
    fc_cards_free(cards, n);

    char *obj = strdup(S1_GOOD), *out = NULL, *hostile = NULL;
    obj[strlen(obj) - 1] = '\0'; /* reopen the object */
    assert_true(asprintf(&hostile, "%s,\"note\\u001b\":\"a\\u001b[2Jb\\nc\\u0000d\\u0085e\","
                                   "\"deep\":[{\"x\":[\"\\u0007y\\t\"]},null,1]}", obj) > 0);
    assert_int_equal(fc_pipeline_stage1_parse(hostile, strlen(hostile), &out, why, sizeof(why)), 0);
    assert_non_null(strstr(out, "\"note\":\"a[2Jb cde\""));
    assert_non_null(strstr(out, "\"deep\":[{\"x\":[\"y \"]},null,1]"));
    assert_null(strchr(out, '\x1b'));
    free(out);
    free(hostile);
    free(obj);
}

/* A JSON answer nested thousands deep is a bad answer with a clear reason, not a stack overflow. */
static void test_stage1_deep(void **state) {
    size_t depth = 5000;
    char *in = malloc(2 * depth + 1), *out = NULL, why[256] = "";
    memset(in, '[', depth);
    memset(in + depth, ']', depth);
    in[2 * depth] = '\0';
    assert_int_equal(fc_pipeline_stage1_parse(in, 2 * depth, &out, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "stage 1 answer is not JSON: nesting too deep");
    free(in);
}

/* An error body's reason is one clean line, whatever the body held. */
static void test_error_reason_hostile(void **state) {
    const char *body = "{\"error\":{\"message\":\"bad\\u001b[31m\\nrequest\\u0085 \\u007f!\"}}";
    char why[256];
    assert_int_equal(fc_pipeline_error_reason(body, strlen(body), why, sizeof(why)), 0);
    assert_string_equal(why, "bad [31m request   !");
    const char raw[] = "<html>\x1b]0;title\x07\xff\xfe</html>";
    assert_int_equal(fc_pipeline_error_reason(raw, sizeof(raw) - 1, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "<html> ]0;title \xef\xbf\xbd\xef\xbf\xbd</html>");
}

/* ---- envelope and error bodies ---- */

static int envelope(const char *body, char **content, long *pt, long *ct, char *why) {
    return fc_pipeline_envelope(body, strlen(body), content, pt, ct, why, 256);
}

static void test_envelope_good(void **state) {
    const char *body = "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":"
                       "{\"role\":\"assistant\",\"content\":\"```json\\n{\\\"a\\\":\\\"안녕\\\"}\\n```\"},"
                       "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":45,"
                       "\"total_tokens\":165}}";
    char *content = NULL, why[256] = "";
    long pt = -1, ct = -1;
    assert_int_equal(envelope(body, &content, &pt, &ct, why), 0);
    assert_string_equal(content, "```json\n{\"a\":\"안녕\"}\n```");
    assert_int_equal(pt, 120);
    assert_int_equal(ct, 45);
    free(content);
}

static void test_envelope_no_usage(void **state) {
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"hi\"}}]}";
    char *content = NULL, why[256] = "";
    long pt = -1, ct = -1;
    assert_int_equal(envelope(body, &content, &pt, &ct, why), 0);
    assert_string_equal(content, "hi");
    assert_int_equal(pt, 0);
    assert_int_equal(ct, 0);
    free(content);
    assert_int_equal(envelope(body, &content, NULL, NULL, why), 0);
    free(content);
    /* servers end bodies with a newline; a bare value is read to the end of the input */
    assert_int_equal(envelope("{\"choices\":[{\"message\":{\"content\":\"hi\"}}]}\r\n", &content, NULL, NULL, why), 0);
    assert_string_equal(content, "hi");
    free(content);
    assert_int_equal(envelope("42", &content, NULL, NULL, why), FC_EPARSE);
    assert_string_equal(why, "response has no choices[0].message.content");
    assert_int_equal(envelope("null", &content, NULL, NULL, why), FC_EPARSE);
    assert_string_equal(why, "response is not a JSON object");
    assert_int_equal(envelope("4x", &content, NULL, NULL, why), FC_EPARSE);
    assert_memory_equal(why, "response is not JSON: ", 22);
}

static void test_envelope_no_choices(void **state) {
    const char *cases[] = {
        "{\"id\":\"x\"}",
        "{\"choices\":[]}",
        "{\"choices\":[{\"message\":{\"content\":null}}]}",
        "{\"choices\":[{\"message\":{\"content\":42}}]}",
        "{\"choices\":[{\"text\":\"hi\"}]}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *content = (char *)1, why[256] = "";
        long pt = -1;
        assert_int_equal(envelope(cases[i], &content, &pt, NULL, why), FC_EPARSE);
        assert_null(content);
        assert_int_equal(pt, 0);
        assert_string_equal(why, "response has no choices[0].message.content");
    }
}

static void test_envelope_not_json(void **state) {
    const char *cases[] = {"<html>502 Bad Gateway</html>", "", "{\"choices\":"};
    for (size_t i = 0; i < 3; i++) {
        char *content = NULL, why[256] = "";
        assert_int_equal(envelope(cases[i], &content, NULL, NULL, why), FC_EPARSE);
        assert_null(content);
        assert_memory_equal(why, "response is not JSON: ", 22);
        assert_true(strlen(why) > 22);
    }
    /* a buffer that is not NUL-terminated is read only up to len */
    char *content = NULL, why[256] = "";
    const char *body = "{\"choices\":[{\"message\":{\"content\":\"ok\"}}]}GARBAGE";
    assert_int_equal(fc_pipeline_envelope(body, strlen(body) - 7, &content, NULL, NULL, why, sizeof(why)), 0);
    assert_string_equal(content, "ok");
    free(content);
}

static void test_error_reason(void **state) {
    char why[256];
    const char *b = "{\"error\":{\"message\":\"Rate limit reached\\nfor model\",\"type\":\"requests\",\"code\":null}}";
    assert_int_equal(fc_pipeline_error_reason(b, strlen(b), why, sizeof(why)), 0);
    assert_string_equal(why, "Rate limit reached for model"); /* single line */
    b = "{\"error\":\"bad key\"}";
    assert_int_equal(fc_pipeline_error_reason(b, strlen(b), why, sizeof(why)), 0);
    assert_string_equal(why, "bad key");
    b = "<html>\r\n<h1>502</h1></html>";
    assert_int_equal(fc_pipeline_error_reason(b, strlen(b), why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "<html>  <h1>502</h1></html>");
    assert_int_equal(fc_pipeline_error_reason("", 0, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "empty response body");
    assert_int_equal(fc_pipeline_error_reason(NULL, 0, why, sizeof(why)), FC_EPARSE);
}

static void test_error_reason_truncated(void **state) {
    char body[1200], why[512];
    strcpy(body, "{\"error\":{\"message\":\"");
    for (int i = 0; i < 100; i++) strcat(body, "가나"); /* 6 bytes each pair: 600 bytes */
    strcat(body, "\"}}");
    assert_int_equal(fc_pipeline_error_reason(body, strlen(body), why, sizeof(why)), 0);
    assert_true(strlen(why) <= 200 && strlen(why) >= 195);
    assert_int_equal(strlen(why) % 3, 0); /* never cuts a 3-byte Hangul sequence */
    char small[10];
    assert_int_equal(fc_pipeline_error_reason(body, strlen(body), small, sizeof(small)), 0);
    assert_string_equal(small, "가나가"); /* 9 bytes fit */
}

/* ---- classification, tokens ---- */

static void test_classify(void **state) {
    static const struct {
        int status, cls;
    } table[] = {
        {200, FC_CLASS_OK},        {201, FC_CLASS_OK},        {0, FC_CLASS_RETRY},
        {FC_EPARSE, FC_CLASS_RETRY}, {408, FC_CLASS_RETRY},   {409, FC_CLASS_RETRY},
        {425, FC_CLASS_RETRY},     {429, FC_CLASS_RETRY},     {500, FC_CLASS_RETRY},
        {502, FC_CLASS_RETRY},     {503, FC_CLASS_RETRY},     {504, FC_CLASS_RETRY},
        {599, FC_CLASS_RETRY},     {400, FC_CLASS_PERMANENT}, {404, FC_CLASS_PERMANENT},
        {413, FC_CLASS_PERMANENT}, {422, FC_CLASS_PERMANENT}, {401, FC_CLASS_AUTH},
        {403, FC_CLASS_AUTH},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (fc_pipeline_classify(table[i].status) != table[i].cls) fail_msg("status %d", table[i].status);
    }
    assert_string_equal(fc_class_name(FC_CLASS_RETRY), "retryable");
    assert_string_equal(fc_class_name(FC_CLASS_PERMANENT), "permanent");
    assert_string_equal(fc_class_name(FC_CLASS_AUTH), "auth");
    assert_string_equal(fc_class_name(FC_CLASS_OK), "ok");
    assert_string_equal(fc_class_name(99), "unknown");
}

static void test_estimate_tokens(void **state) {
    assert_int_equal(fc_pipeline_estimate_tokens(4000, 1500), 2500);
    assert_int_equal(fc_pipeline_estimate_tokens(3, 10), 10);
    assert_int_equal(fc_pipeline_estimate_tokens(0, 0), 0);
}

/* ---- SHA-256 and cache keys ---- */

static void test_sha256_vectors(void **state) {
    char hex[65];
    fc_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    fc_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    fc_sha256_hex(m, strlen(m), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_sha256_incremental(void **state) {
    /* one million 'a' fed in odd-sized pieces (FIPS 180-2 vector) */
    char chunk[997];
    memset(chunk, 'a', sizeof(chunk));
    fc_sha256 ctx;
    uint8_t d[32];
    char hex[65];
    size_t left = 1000000;
    fc_sha256_init(&ctx);
    while (left) {
        size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
        fc_sha256_update(&ctx, chunk, n);
        left -= n;
    }
    fc_sha256_final(&ctx, d);
    fc_sha256_to_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_cache_key(void **state) {
    char a[65], b[65];
    fc_pipeline_cache_key("m", "p", "{\"x\":1}", a);
    fc_pipeline_cache_key("m", "p", "{\"x\":1}", b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 64);
    /* the key is SHA-256 of model NUL prompt NUL input */
    char hex[65];
    fc_sha256_hex("m\0p\0{\"x\":1}", 11, hex);
    assert_string_equal(a, hex);
    fc_pipeline_cache_key("m2", "p", "{\"x\":1}", b);
    assert_string_not_equal(a, b);
    fc_pipeline_cache_key("m", "p2", "{\"x\":1}", b);
    assert_string_not_equal(a, b);
    fc_pipeline_cache_key("m", "p", "{\"x\":2}", b);
    assert_string_not_equal(a, b);
    /* the separators keep boundaries apart */
    fc_pipeline_cache_key("mp", "", "{\"x\":1}", b);
    assert_string_not_equal(a, b);
    fc_pipeline_cache_key(NULL, NULL, NULL, b);
    fc_sha256_hex("\0\0", 2, hex);
    assert_string_equal(b, hex);
}

/* ---- request bodies ---- */

/* Writable copies of string literals: fc_item and fc_pipeline_conf hold char *. */
static char m1[] = "model-one", m2[] = "model-two", p1[] = "Analyse \"this\" / that.", p2[] = "Make cards.";
static char hello[] = "안녕하세요", interj[] = "interjection", apple[] = "사과", empty[] = "";

static fc_pipeline_conf test_conf(void) {
    fc_pipeline_conf c = {0};
    c.stage1_model = m1;
    c.stage2_model = m2;
    c.stage1_prompt = p1;
    c.stage2_prompt = p2;
    c.temperature = 0.2;
    c.max_tokens = 1500;
    return c;
}

static void test_stage1_body(void **state) {
    fc_pipeline_conf c = test_conf();
    fc_item it = {.position = 1, .term = hello, .type = interj};
    char *user = NULL;
    char *body = fc_pipeline_stage1_body(&c, &it, &user);
    assert_non_null(body);
    assert_string_equal(user, "{\"position\":1,\"term\":\"안녕하세요\",\"type\":\"interjection\"}");
    assert_string_equal(body,
                        "{\"model\":\"model-one\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"Analyse \\\"this\\\" / that.\"},{\"role\":\"user\",\"content\":"
                        "\"{\\\"position\\\":1,\\\"term\\\":\\\"안녕하세요\\\",\\\"type\\\":\\\"interjection\\\"}\"}],"
                        "\"temperature\":0.2,\"max_tokens\":1500}");
    assert_null(strstr(body, "\\u"));
    free(body);
    free(user);
    body = fc_pipeline_stage1_body(&c, &it, NULL);
    assert_non_null(body);
    free(body);
}

static void test_stage2_body(void **state) {
    fc_pipeline_conf c = test_conf();
    fc_item it = {.position = 7, .term = apple, .type = empty};
    char *user = NULL;
    char *body = fc_pipeline_stage2_body(&c, &it, "{\"term\":\"사과\",\"ipa\":\"/sa.gwa/\"}", &user);
    assert_non_null(body);
    assert_string_equal(user, "{\"position\":7,\"term\":\"사과\",\"stage1_result\":{\"term\":\"사과\",\"ipa\":"
                              "\"/sa.gwa/\"}}");
    assert_non_null(strstr(body, "\"model\":\"model-two\""));
    assert_non_null(strstr(body, "\"content\":\"Make cards.\""));
    assert_non_null(strstr(body, "사과"));
    assert_null(strstr(body, "\\u"));
    free(body);
    free(user);
    user = (char *)1;
    assert_null(fc_pipeline_stage2_body(&c, &it, "[1]", &user));
    assert_null(user);
    assert_null(fc_pipeline_stage2_body(&c, &it, "not json", NULL));
}

static void test_stage1_to_stage2_roundtrip(void **state) {
    fc_pipeline_conf c = test_conf();
    fc_item it = {.position = 1, .term = hello, .type = interj};
    char *s1 = NULL, why[128];
    assert_int_equal(fc_pipeline_stage1_parse(S1_GOOD, strlen(S1_GOOD), &s1, why, sizeof(why)), 0);
    char *user = NULL, *body = fc_pipeline_stage2_body(&c, &it, s1, &user);
    assert_non_null(body);
    assert_non_null(strstr(user, "\"stage1_result\":" S1_GOOD "}"));
    free(body);
    free(user);
    free(s1);
}

/* ---- prompt files ---- */

static void test_load_prompt(void **state) {
    char path[] = "/tmp/fc_test_prompt_XXXXXX", err[256] = "", *out = NULL;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "Be brief.\n", 10), 10);
    close(fd);
    assert_int_equal(fc_pipeline_load_prompt(path, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "Be brief.\n");
    free(out);
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    assert_int_equal(fc_pipeline_load_prompt(path, &out, err, sizeof(err)), FC_EPARSE);
    assert_null(out);
    assert_non_null(strstr(err, path));
    unlink(path);
    assert_int_equal(fc_pipeline_load_prompt(path, &out, err, sizeof(err)), FC_ENOTFOUND);
    assert_null(out);
    assert_non_null(strstr(err, path));
}

static void test_default_prompts_load(void **state) {
    const char *names[] = {FC_SOURCE_PROMPT_DIR "/stage1_system.txt", FC_SOURCE_PROMPT_DIR "/stage2_system.txt"};
    for (int i = 0; i < 2; i++) {
        char err[256] = "", *out = NULL;
        assert_int_equal(fc_pipeline_load_prompt(names[i], &out, err, sizeof(err)), 0);
        assert_true(strlen(out) > 100);
        free(out);
    }
}

/* Prepared bodies and keys are byte-identical to the ones built from scratch. */
static void test_prepared_identical(void **state) {
    fc_pipeline_conf plain = {0}, fast = {0};
    plain.stage1_model = fast.stage1_model = (char *)"m/one";
    plain.stage2_model = fast.stage2_model = (char *)"m/two";
    plain.stage1_prompt = fast.stage1_prompt = (char *)"Answer \"JSON\".\n\tTabs, \\ and 한국어 / slashes.";
    plain.stage2_prompt = fast.stage2_prompt = (char *)"Cards\x01 please";
    plain.temperature = fast.temperature = 0.2;
    plain.max_tokens = fast.max_tokens = 321;
    assert_int_equal(fc_pipeline_conf_prepare(&fast), FC_OK);
    fc_item it = {0};
    it.position = 7;
    it.term = (char *)"안녕 \"하세요\"\t";
    it.type = (char *)"noun";
    char *u1, *u2, *b1 = fc_pipeline_stage1_body(&plain, &it, &u1), *b2 = fc_pipeline_stage1_body(&fast, &it, &u2);
    assert_string_equal(b1, b2);
    char k1[65], k2[65];
    fc_pipeline_cache_key(plain.stage1_model, plain.stage1_prompt, u1, k1);
    fc_pipeline_stage_cache_key(&fast, 1, u2, k2);
    assert_string_equal(k1, k2);
    free(b1), free(b2), free(u1), free(u2);
    const char *s1 = "{\"term_number\":7,\"term\":\"안녕\"}";
    b1 = fc_pipeline_stage2_body(&plain, &it, s1, &u1);
    b2 = fc_pipeline_stage2_body(&fast, &it, s1, &u2);
    assert_string_equal(b1, b2);
    fc_pipeline_cache_key(plain.stage2_model, plain.stage2_prompt, u1, k1);
    fc_pipeline_stage_cache_key(&fast, 2, u2, k2);
    assert_string_equal(k1, k2);
    free(b1), free(b2), free(u1), free(u2);
    free(fast.body_prefix[0]), free(fast.body_prefix[1]), free(fast.body_suffix);
}

/* The flashcard pipeline through the processor interface the worker uses: two stages, each
 * request made from the previous result, answers validated into JSON results, and the item's
 * result members made from both. */
static void test_processor_flashcards(void **state) {
    fc_pipeline_conf c = {0};
    c.stage1_model = c.stage2_model = (char *)"m";
    c.stage1_prompt = (char *)"analyse";
    c.stage2_prompt = (char *)"cards";
    c.max_tokens = 100;
    assert_int_equal(fc_pipeline_conf_prepare(&c), FC_OK);
    fc_processor p = fc_flashcard_processor(&c);
    assert_int_equal(p.nstages, 2);
    fc_item it = {.position = 1, .term = (char *)"안녕하세요", .type = (char *)"interjection"};
    char *user = NULL, *body = p.request(p.self, 1, &it, NULL, &user), key1[65], key2[65];
    assert_non_null(body);
    assert_non_null(strstr(body, "안녕하세요"));
    p.cache_key(p.self, 1, user, key1);
    assert_int_equal(strlen(key1), 64);
    free(body), free(user);

    char *results[FC_STAGES_MAX] = {0}, why[256] = "";
    const char *a1 = "```json\n" S1_GOOD "\n```";
    assert_int_equal(p.answer(p.self, 1, a1, strlen(a1), &results[0], why, sizeof(why)), FC_OK);
    assert_string_equal(results[0], S1_GOOD);
    assert_int_equal(p.answer(p.self, 1, "{}", 2, &results[1], why, sizeof(why)), FC_EPARSE);
    assert_null(results[1]);
    assert_true(strstr(why, "lacks field") != NULL);

    body = p.request(p.self, 2, &it, results[0], &user);
    assert_non_null(body);
    assert_non_null(strstr(body, "primary_meaning")); /* stage 2 is made from stage 1's result */
    p.cache_key(p.self, 2, user, key2);
    assert_string_not_equal(key1, key2);
    free(body), free(user);
    assert_null(p.request(p.self, 2, &it, NULL, &user));

    const char *a2 = FC_CARD_HEADER "\n1\t안녕하세요\t1\tScene\tp\tfront \"q\"\tback\ttag\tpolite\n";
    assert_int_equal(p.answer(p.self, 2, a2, strlen(a2), &results[1], why, sizeof(why)), FC_OK);
    assert_int_equal(p.answer(p.self, 2, "nothing", 7, &results[2], why, sizeof(why)), FC_EPARSE);
    fc_buf out = {0};
    assert_int_equal(fc_buf_puts(&out, "{\"position\":1"), FC_OK);
    assert_int_equal(p.result(p.self, results, &out), FC_OK);
    assert_int_equal(fc_buf_puts(&out, "}"), FC_OK);
    json_object *o = json_tokener_parse(out.data), *v;
    assert_non_null(o);
    assert_true(json_object_object_get_ex(o, "analysis", &v));
    assert_string_equal(json_object_get_string(json_object_object_get(v, "primary_meaning")), "hello");
    assert_true(json_object_object_get_ex(o, "cards", &v));
    assert_int_equal(json_object_array_length(v), 1);
    json_object *card = json_object_array_get_idx(v, 0);
    assert_string_equal(json_object_get_string(json_object_object_get(card, "front")), "front \"q\"");
    assert_string_equal(json_object_get_string(json_object_object_get(card, "honorific_level")), "polite");
    json_object_put(o);
    fc_buf_free(&out);
    free(results[0]), free(results[1]);
    free(c.body_prefix[0]), free(c.body_prefix[1]), free(c.body_suffix);
}

/* The stage-1 and stage-2 user contents are built by hand (the latter from the stage-1 text); they must
 * be exactly what json-c prints for the same objects, whatever bytes the term and type hold. */
static void test_stage2_user_matches_json_c(void **state) {
    fc_pipeline_conf plain = {0}, fast = {0};
    plain.stage1_model = plain.stage2_model = fast.stage1_model = fast.stage2_model = (char *)"m";
    plain.stage1_prompt = plain.stage2_prompt = fast.stage1_prompt = fast.stage2_prompt = (char *)"p";
    assert_int_equal(fc_pipeline_conf_prepare(&fast), FC_OK);
    const char *terms[] = {"plain", "q\"uote\\back/slash", "ctl\b\f\n\r\t\x01\x1f\x7f end", "한국어 ✓", ""};
    const char *s1 = "{\"term_number\":3,\"term\":\"x\\n/y\",\"n\":[1,2.50,null,true]}";
    for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++) {
        fc_item it = {0};
        it.position = 1234567890123LL;
        it.term = (char *)terms[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "position", json_object_new_int64(it.position));
        json_object_object_add(o, "term", json_object_new_string(it.term));
        json_object_object_add(o, "stage1_result", json_tokener_parse(s1));
        const char *want = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        /* the stage-1 content too: the item as json-c prints it */
        it.type = (char *)terms[(i + 1) % (sizeof(terms) / sizeof(terms[0]))];
        json_object *io = json_object_new_object();
        json_object_object_add(io, "position", json_object_new_int64(it.position));
        json_object_object_add(io, "term", json_object_new_string(it.term));
        json_object_object_add(io, "type", json_object_new_string(it.type));
        char *item = fc_pipeline_item_json(&it);
        assert_string_equal(item, json_object_to_json_string_ext(io, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        free(item);
        json_object_put(io);
        char *user = NULL, *b1 = fc_pipeline_stage2_body(&fast, &it, s1, &user), *u2 = NULL;
        char *b2 = fc_pipeline_stage2_body(&plain, &it, s1, &u2);
        assert_non_null(b1);
        assert_string_equal(user, want);
        assert_string_equal(b1, b2); /* the prepared body escapes the content as json-c does */
        json_object *back = json_tokener_parse(b1);
        assert_non_null(back);
        json_object_put(back);
        free(b1), free(b2), free(user), free(u2);
        json_object_put(o);
    }
    assert_null(fc_pipeline_stage2_body(&fast, &(fc_item){.position = 1, .term = (char *)"t"}, "[1]", NULL));
    assert_null(fc_pipeline_stage2_body(&fast, &(fc_item){.position = 1, .term = (char *)"t"}, "{", NULL));
    free(fast.body_prefix[0]), free(fast.body_prefix[1]), free(fast.body_suffix);
}

/* ---- bytes no answer may hold: NUL (a cached answer is read back with its length, any bytes) and invalid
 * UTF-8 (results are JSON) ---- */

/* The fence stripper copies every byte it reports: a NUL inside the content does not end the copy. */
static void test_fence_keeps_nul(void **state) {
    static const char in[] = "```\nab\0cd\n```";
    size_t n = 0;
    char *s = fc_pipeline_strip_fence(in, sizeof(in) - 1, &n);
    assert_non_null(s);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "ab\0cd", 6); /* the five bytes and the terminating NUL */
    free(s);
}

/* A stage-2 answer with a NUL early and a long tail: the parser once walked the reported length past a copy
 * that had stopped at the NUL. Rejected, with where. */
static void test_stage2_nul(void **state) {
    char in[4096];
    memset(in, 'x', sizeof(in));
    static const char row[] = "1\tt\t1\tScene\tp\tf\tb\ttags\tpolite\n";
    memcpy(in, row, sizeof(row) - 1);
    in[3] = '\0';
    for (size_t i = 100; i < sizeof(in); i += 100) in[i] = i % 300 ? '\t' : '\n';
    fc_card *cards = (fc_card *)1;
    size_t n = 7;
    char why[128] = "";
    assert_int_equal(fc_pipeline_stage2_parse(in, sizeof(in), &cards, &n, why, sizeof(why)), FC_EPARSE);
    assert_null(cards);
    assert_int_equal(n, 0);
    assert_string_equal(why, "stage 2 answer contains a NUL byte at offset 3");
    static const char tail[] = ROW9 "\n" ROW9 "\0"; /* even a NUL at the very end */
    assert_int_equal(fc_pipeline_stage2_parse(tail, sizeof(tail) - 1, &cards, &n, why, sizeof(why)), FC_EPARSE);
    assert_non_null(strstr(why, "NUL byte at offset"));
}

/* A stage-1 object followed by a NUL and junk is not an answer (json-c alone stops at a NUL as at the end). */
static void test_stage1_nul(void **state) {
    static const char in[] = "```json\n" S1_GOOD "\n```\0junk";
    char *out = (char *)1, why[128] = "";
    assert_int_equal(fc_pipeline_stage1_parse(in, sizeof(in) - 1, &out, why, sizeof(why)), FC_EPARSE);
    assert_null(out);
    char want[80];
    snprintf(want, sizeof(want), "stage 1 answer contains a NUL byte at offset %zu", strlen(in));
    assert_string_equal(why, want);
}

/* Invalid UTF-8 is rejected by both stages: their results are JSON text. */
static void test_answers_invalid_utf8(void **state) {
    static const char s2[] = "1\tt\t1\tScene\tp\tf\xc3(\tb\ttags\tpolite";
    static const char s1[] = "{\"term\":\"\xed\xa0\x80\"}"; /* an encoded surrogate */
    fc_card *cards = NULL;
    size_t n = 0;
    char *out = NULL, why[128] = "";
    assert_int_equal(fc_pipeline_stage2_parse(s2, sizeof(s2) - 1, &cards, &n, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "stage 2 answer is not valid UTF-8 at offset 15");
    assert_int_equal(fc_pipeline_stage1_parse(s1, sizeof(s1) - 1, &out, why, sizeof(why)), FC_EPARSE);
    assert_string_equal(why, "stage 1 answer is not valid UTF-8 at offset 9");
    assert_null(out);
}

/* The envelope never hands back content that strlen would cut short: an escaped NUL in the content is a bad
 * answer, and a raw NUL in the body is not JSON. */
static void test_envelope_nul(void **state) {
    static const char esc[] = "{\"choices\":[{\"message\":{\"content\":\"{\\\"a\\\":1}\\u0000junk\"}}]}";
    static const char raw[] = "{\"choices\":[{\"message\":{\"content\":\"ok\"}}]}\0{\"x\":1}";
    char *content = (char *)1, why[256] = "";
    long pt = -1;
    assert_int_equal(fc_pipeline_envelope(esc, sizeof(esc) - 1, &content, &pt, NULL, why, sizeof(why)), FC_EPARSE);
    assert_null(content);
    assert_int_equal(pt, 0);
    assert_string_equal(why, "answer contains a NUL byte at offset 7");
    assert_int_equal(fc_pipeline_envelope(raw, sizeof(raw) - 1, &content, NULL, NULL, why, sizeof(why)), FC_EPARSE);
    assert_null(content);
    char want[80];
    snprintf(want, sizeof(want), "response is not JSON: it contains a NUL byte at offset %zu", strlen(raw));
    assert_string_equal(why, want);
    /* an error body with a NUL still yields a printable reason */
    static const char err[] = "{\"error\":{\"message\":\"a\"}}\0zz";
    assert_int_equal(fc_pipeline_error_reason(err, sizeof(err) - 1, why, sizeof(why)), FC_EPARSE);
    assert_memory_equal(why, "{\"error\":{\"message\":\"a\"}} zz", sizeof(err));
}

/* The processor's answer, as the worker calls it for a cached answer (any bytes, with their length). */
static void test_processor_answer_nul(void **state) {
    fc_pipeline_conf c = {0};
    fc_processor p = fc_flashcard_processor(&c);
    static const char a1[] = S1_GOOD "\0";
    static const char a2[] = FC_CARD_HEADER "\n" ROW9 "\n\0" ROW9;
    char *result = (char *)1, why[256] = "";
    assert_int_equal(p.answer(p.self, 1, a1, sizeof(a1) - 1, &result, why, sizeof(why)), FC_EPARSE);
    assert_null(result);
    assert_non_null(strstr(why, "NUL byte at offset"));
    result = (char *)1;
    assert_int_equal(p.answer(p.self, 2, a2, sizeof(a2) - 1, &result, why, sizeof(why)), FC_EPARSE);
    assert_null(result);
    assert_non_null(strstr(why, "NUL byte at offset"));
}

/* A header line with a control character inside (found by fuzz_pipeline) is still the header once
 * cleaned, never a card whose position is "position". */
static void test_stage2_header_with_control_char(void **state) {
    (void)state;
    fc_card *cards = NULL;
    size_t n = 0;
    char why[128] = "";
    const char *in = "po\x01sition\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level\n" ROW9 "\n";
    assert_int_equal(fc_pipeline_stage2_parse(in, strlen(in), &cards, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 1);
    assert_string_not_equal(cards[0].f[FC_CARD_POSITION], "position");
    fc_cards_free(cards, n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fence_json),
        cmocka_unit_test(test_fence_plain),
        cmocka_unit_test(test_fence_none),
        cmocka_unit_test(test_fence_whitespace),
        cmocka_unit_test(test_fence_unclosed),
        cmocka_unit_test(test_fence_empty_and_tabs),
        cmocka_unit_test(test_stage1_good),
        cmocka_unit_test(test_stage1_each_required_missing),
        cmocka_unit_test(test_stage1_optional),
        cmocka_unit_test(test_stage1_not_object),
        cmocka_unit_test(test_stage1_not_json),
        cmocka_unit_test(test_stage2_header_only),
        cmocka_unit_test(test_stage2_rows),
        cmocka_unit_test(test_stage2_crlf_no_header),
        cmocka_unit_test(test_stage2_empty_fields_and_extra),
        cmocka_unit_test(test_stage2_wrong_columns),
        cmocka_unit_test(test_hostile_fields_cleaned),
        cmocka_unit_test(test_stage1_deep),
        cmocka_unit_test(test_error_reason_hostile),
        cmocka_unit_test(test_envelope_good),
        cmocka_unit_test(test_envelope_no_usage),
        cmocka_unit_test(test_envelope_no_choices),
        cmocka_unit_test(test_envelope_not_json),
        cmocka_unit_test(test_error_reason),
        cmocka_unit_test(test_error_reason_truncated),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_estimate_tokens),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_incremental),
        cmocka_unit_test(test_cache_key),
        cmocka_unit_test(test_stage1_body),
        cmocka_unit_test(test_stage2_body),
        cmocka_unit_test(test_stage1_to_stage2_roundtrip),
        cmocka_unit_test(test_load_prompt),
        cmocka_unit_test(test_default_prompts_load),
        cmocka_unit_test(test_prepared_identical),
        cmocka_unit_test(test_stage2_user_matches_json_c),
        cmocka_unit_test(test_processor_flashcards),
        cmocka_unit_test(test_fence_keeps_nul),
        cmocka_unit_test(test_stage2_nul),
        cmocka_unit_test(test_stage1_nul),
        cmocka_unit_test(test_answers_invalid_utf8),
        cmocka_unit_test(test_envelope_nul),
        cmocka_unit_test(test_processor_answer_nul),
        cmocka_unit_test(test_stage2_header_with_control_char),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
