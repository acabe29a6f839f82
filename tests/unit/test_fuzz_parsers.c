/* A small deterministic fuzz test of every answer parser in fc_pipeline: valid stage-1 and stage-2 answers,
 * response envelopes and error bodies are mutated (byte flips, truncations, NUL bytes, fences, CR/LF, huge
 * lines, bad UTF-8) with a fixed seed, and each mutant is handed to every parser in a heap buffer of exactly
 * its length, so that a read past it shows under ASan. Each parser must return FC_OK or FC_EPARSE (FC_ETOOBIG
 * is allowed too), give a one-line reason on failure, and on success an output as documented. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "fc_buf.h"
#include "fc_error.h"
#include "fc_pipeline.h"
#include "fc_text.h"

#define FUZZ_SEED 0x5eed2026u
#define FUZZ_ITERATIONS 20000
#define FUZZ_HUGE_LINE (70 * 1024) /* bytes of one line without a break */

/* ---- seeds: what the API answers when all is well ---- */

#define S1                                                                                                   \
    "{\"term_number\":7,\"term\":\"사과\",\"ipa\":\"/sa.ɡwa/\",\"pos\":\"noun\",\"primary_meaning\":\"apple\","  \
    "\"other_meanings\":[\"apology\"],\"metaphor\":\"a SAW GUArding an apple\",\"metaphor_noun\":\"saw\","     \
    "\"metaphor_action\":\"guards\",\"suggested_location\":\"kitchen\",\"anchor_object\":\"fruit bowl\","     \
    "\"anchor_sensory\":\"crunch\",\"explanation\":\"sa-gwa\",\"comparison\":{\"similar_term\":\"배\","       \
    "\"difference\":\"pear\"},\"usage_context\":\"food\",\"homonyms\":[{\"term\":\"사과\",\"meaning\":\"apology\"}]," \
    "\"korean_keywords\":[\"과일\",\"사과\"]}"

#define S2_ROW1 "7\t사과\t7\tScene\tkitchen\tWhat is 사과?\tapple\tfruit::scene\tpolite"
#define S2_ROW2 "7\t사과\t7\tUsage-Comparison\t배\tHow is 사과 used?\tan apple \\t note\tfruit\tcasual"

static const char *const seeds[] = {
    S1,
    "```json\n" S1 "\n```",
    FC_CARD_HEADER "\n" S2_ROW1 "\n" S2_ROW2 "\n",
    "```tsv\r\n" FC_CARD_HEADER "\r\n" S2_ROW1 "\r\n" S2_ROW2 "\r\n```\r\n",
    "{\"id\":\"c-1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"```json\\n{\\\"term\\\":\\\"사과\\\",\\\"ipa\\\":\\\"/sa/\\\"}\\n```\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":45,\"total_tokens\":165}}",
    "{\"choices\":[{\"message\":{\"content\":\"" FC_CARD_HEADER "\\n7\\t사과\\t7\\tScene\\tp\\tf\\tb\\tt\\tpolite\"}}],"
    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
    "{\"error\":{\"message\":\"Rate limit reached\\nfor model\",\"type\":\"requests\",\"code\":null}}",
};
#define NSEEDS (sizeof(seeds) / sizeof(seeds[0]))

/* ---- a fixed-seed generator and the mutations ---- */

static uint64_t rng_state;

static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(rng() % n) : 0; }

/* Byte strings worth inserting: fences, line breaks, NULs (raw and JSON-escaped), bad UTF-8, JSON syntax. */
static const struct {
    const char *s;
    size_t n;
} tokens[] = {
    {"```", 3},          {"```json\n", 8},   {"\n```", 4},      {"\r\n", 2},          {"\n", 1},
    {"\r", 1},           {"\t", 1},          {"\0", 1},         {"\\u0000", 6},       {"\\ud800", 6},
    {"\\\"", 2},         {"\"", 1},          {"{", 1},          {"}", 1},             {"[", 1},
    {"]", 1},            {",", 1},           {":", 1},          {"null", 4},          {"\xc0\x80", 2},
    {"\xed\xa0\x80", 3}, {"\xf4\x90\x80\x80", 4}, {"\xe2\x82", 2}, {"\x80", 1},        {"\xff", 1},
    {"사", 3},           {FC_CARD_HEADER, sizeof(FC_CARD_HEADER) - 1}, {"position", 8}, {"\t\t\t\t\t\t\t\t", 8},
};
#define NTOKENS (sizeof(tokens) / sizeof(tokens[0]))

static void insert(fc_buf *b, size_t at, const char *s, size_t n) {
    size_t tail = b->len - at;
    assert_int_equal(fc_buf_reserve(b, n), FC_OK);
    memmove(b->data + at + n, b->data + at, tail);
    memcpy(b->data + at, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/* mutate applies one to four random edits to b. */
static void mutate(fc_buf *b) {
    for (int edits = 1 + (int)below(4); edits > 0; edits--) {
        size_t at = below(b->len + 1);
        switch (below(8)) {
        case 0: /* flip a bit */
            if (b->len) b->data[below(b->len)] ^= (char)(1u << below(8));
            break;
        case 1: /* a random byte */
            if (b->len) b->data[below(b->len)] = (char)below(256);
            break;
        case 2: /* truncate */
            fc_buf_truncate(b, at);
            break;
        case 3: { /* delete a span */
            size_t n = below(b->len - at + 1);
            memmove(b->data + at, b->data + at + n, b->len - at - n);
            fc_buf_truncate(b, b->len - n);
            break;
        }
        case 4: /* duplicate a span */
            if (b->len) {
                size_t from = below(b->len), n = below(b->len - from) + 1;
                char *copy = malloc(n);
                assert_non_null(copy);
                memcpy(copy, b->data + from, n);
                insert(b, at, copy, n);
                free(copy);
            }
            break;
        case 5: /* a huge line, rarely */
            if (below(64) == 0) {
                char *line = malloc(FUZZ_HUGE_LINE);
                assert_non_null(line);
                memset(line, below(2) ? 'a' : '\t', FUZZ_HUGE_LINE);
                insert(b, at, line, FUZZ_HUGE_LINE);
                free(line);
                break;
            }
            /* fall through */
        default: { /* a token */
            size_t k = below(NTOKENS);
            insert(b, at, tokens[k].s, tokens[k].n);
        }
        }
    }
}

/* ---- oracles ---- */

/* utf8_ok reports whether s[0..n) is well-formed UTF-8 (Unicode table 3-7) without NUL bytes. */
static int utf8_ok(const unsigned char *s, size_t n) {
    static const struct {
        unsigned char lead_lo, lead_hi, next_lo, next_hi, len;
    } forms[] = {
        {0x01, 0x7F, 0, 0, 1},       {0xC2, 0xDF, 0x80, 0xBF, 2}, {0xE0, 0xE0, 0xA0, 0xBF, 3},
        {0xE1, 0xEC, 0x80, 0xBF, 3}, {0xED, 0xED, 0x80, 0x9F, 3}, {0xEE, 0xEF, 0x80, 0xBF, 3},
        {0xF0, 0xF0, 0x90, 0xBF, 4}, {0xF1, 0xF3, 0x80, 0xBF, 4}, {0xF4, 0xF4, 0x80, 0x8F, 4},
    };
    size_t i = 0;
    while (i < n) {
        size_t f = 0;
        while (f < sizeof(forms) / sizeof(forms[0]) && (s[i] < forms[f].lead_lo || s[i] > forms[f].lead_hi)) f++;
        if (f == sizeof(forms) / sizeof(forms[0]) || n - i < forms[f].len) return 0;
        if (forms[f].len > 1 && (s[i + 1] < forms[f].next_lo || s[i + 1] > forms[f].next_hi)) return 0;
        for (size_t k = 2; k < forms[f].len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += forms[f].len;
    }
    return 1;
}

/* json_ok reports whether s is one strict JSON value of the given type, in well-formed UTF-8. */
static int json_ok(const char *s, json_type type) {
    if (!utf8_ok((const unsigned char *)s, strlen(s))) return 0;
    json_tokener *tok = json_tokener_new_ex(64);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, s, (int)strlen(s) + 1);
    int ok = json_tokener_get_error(tok) == json_tokener_success && json_object_is_type(o, type);
    json_object_put(o);
    json_tokener_free(tok);
    return ok;
}

/* check_why fails unless why is a non-empty single line of printable text. */
static void check_why(const char *parser, const char *why) {
    if (!why[0]) fail_msg("%s failed without a reason", parser);
    for (const char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) fail_msg("%s: control byte 0x%02x in its reason", parser, *p);
}

/* check_rc fails on anything but FC_OK, FC_EPARSE or FC_ETOOBIG, and counts the outcome. */
static void check_rc(const char *parser, int rc, const char *why, unsigned long *ok, unsigned long *bad) {
    if (rc != FC_OK && rc != FC_EPARSE && rc != FC_ETOOBIG) fail_msg("%s returned %d (%s)", parser, rc, fc_strerror(rc));
    if (rc != FC_OK) check_why(parser, why);
    ++*(rc == FC_OK ? ok : bad);
}

/* ---- feeding one input to every parser ---- */

typedef struct tally {
    unsigned long ok[7], bad[7];
} tally;

enum { P_FENCE, P_STAGE1, P_STAGE2, P_ENVELOPE, P_ERROR, P_ANSWER1, P_ANSWER2 };

static void feed_fence(const char *in, size_t len, tally *t) {
    size_t n = (size_t)-1;
    char *s = fc_pipeline_strip_fence(in, len, &n);
    assert_non_null(s);
    assert_true(n <= len);
    assert_int_equal(s[n], '\0'); /* and under ASan: the n bytes before it are the copy's */
    free(s);
    t->ok[P_FENCE]++;
}

static void feed_stage1(const char *in, size_t len, tally *t) {
    char *out = (char *)1, why[256] = "";
    int rc = fc_pipeline_stage1_parse(in, len, &out, why, sizeof(why));
    check_rc("stage1_parse", rc, why, &t->ok[P_STAGE1], &t->bad[P_STAGE1]);
    if (rc != FC_OK) assert_null(out);
    else if (!json_ok(out, json_type_object)) fail_msg("stage1_parse accepted and made invalid JSON: %s", out);
    free(out);
}

static void feed_stage2(const char *in, size_t len, tally *t) {
    fc_card *cards = (fc_card *)1;
    size_t n = 99;
    char why[256] = "";
    int rc = fc_pipeline_stage2_parse(in, len, &cards, &n, why, sizeof(why));
    check_rc("stage2_parse", rc, why, &t->ok[P_STAGE2], &t->bad[P_STAGE2]);
    if (rc != FC_OK) {
        assert_null(cards);
        assert_int_equal(n, 0);
    }
    for (size_t i = 0; rc == FC_OK && i < n; i++)
        for (int f = 0; f < FC_CARD_NFIELDS; f++) {
            const char *v = cards[i].f[f];
            assert_non_null(v);
            if (!utf8_ok((const unsigned char *)v, strlen(v)) || strpbrk(v, "\t\n"))
                fail_msg("stage2_parse made a field that is not one TSV field of UTF-8: '%s'", v);
            if (!fc_text_is_clean(v, strlen(v))) fail_msg("stage2_parse kept a control character in '%s'", v);
        }
    if (rc == FC_OK) fc_cards_free(cards, n);
}

static void feed_envelope(const char *in, size_t len, tally *t) {
    char *content = (char *)1, why[256] = "";
    long pt = -1, ct = -1;
    int rc = fc_pipeline_envelope(in, len, &content, &pt, &ct, why, sizeof(why));
    check_rc("envelope", rc, why, &t->ok[P_ENVELOPE], &t->bad[P_ENVELOPE]);
    if (rc != FC_OK) {
        assert_null(content);
        return;
    }
    assert_true(pt >= 0 && ct >= 0);
    if (!utf8_ok((const unsigned char *)content, strlen(content)))
        fail_msg("envelope handed back content that is not UTF-8: '%s'", content);
    free(content);
}

static void feed_error(const char *in, size_t len, tally *t) {
    char why[256];
    memset(why, 'x', sizeof(why));
    int rc = fc_pipeline_error_reason(in, len, why, sizeof(why));
    assert_true(rc == FC_OK || rc == FC_EPARSE); /* a reason either way */
    assert_non_null(memchr(why, '\0', sizeof(why)));
    if (len) check_why("error_reason", why);
    ++*(rc == FC_OK ? &t->ok[P_ERROR] : &t->bad[P_ERROR]);
}

static void feed_answer(const fc_processor *p, int stage, const char *in, size_t len, tally *t) {
    char *result = (char *)1, why[256] = "";
    int rc = p->answer(p->self, stage, in, len, &result, why, sizeof(why));
    int k = stage == 1 ? P_ANSWER1 : P_ANSWER2;
    check_rc("processor answer", rc, why, &t->ok[k], &t->bad[k]);
    if (rc != FC_OK) assert_null(result);
    else if (!json_ok(result, stage == 1 ? json_type_object : json_type_array))
        fail_msg("answer of stage %d accepted and made invalid JSON: %s", stage, result);
    free(result);
}

/* feed hands len bytes to every parser, from a heap copy of exactly len bytes: no terminator to lean on. */
static void feed(const fc_processor *p, const char *data, size_t len, tally *t) {
    char *in = malloc(len ? len : 1);
    assert_non_null(in);
    memcpy(in, data, len);
    feed_fence(in, len, t);
    feed_stage1(in, len, t);
    feed_stage2(in, len, t);
    feed_envelope(in, len, t);
    feed_error(in, len, t);
    feed_answer(p, 1, in, len, t);
    feed_answer(p, 2, in, len, t);
    free(in);
}

/* The seeds themselves pass where they should: the fuzz starts from answers the parsers accept. */
static void test_seeds_parse(void **state) {
    char *out = NULL, why[256] = "";
    fc_card *cards = NULL;
    size_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(fc_pipeline_stage1_parse(seeds[i], strlen(seeds[i]), &out, why, sizeof(why)), FC_OK);
        free(out);
    }
    for (size_t i = 2; i < 4; i++) {
        assert_int_equal(fc_pipeline_stage2_parse(seeds[i], strlen(seeds[i]), &cards, &n, why, sizeof(why)), FC_OK);
        assert_int_equal(n, 2);
        fc_cards_free(cards, n);
    }
    for (size_t i = 4; i < 6; i++) {
        assert_int_equal(fc_pipeline_envelope(seeds[i], strlen(seeds[i]), &out, NULL, NULL, why, sizeof(why)), FC_OK);
        free(out);
    }
    assert_int_equal(fc_pipeline_error_reason(seeds[6], strlen(seeds[6]), why, sizeof(why)), FC_OK);
}

static void test_fuzz(void **state) {
    fc_pipeline_conf c = {0};
    fc_processor p = fc_flashcard_processor(&c);
    tally t = {0};
    fc_buf b = {0};
    clock_t t0 = clock();
    rng_state = FUZZ_SEED;
    for (unsigned long i = 0; i < FUZZ_ITERATIONS; i++) {
        const char *seed = seeds[below(NSEEDS)];
        fc_buf_reset(&b);
        assert_int_equal(fc_buf_puts(&b, seed), FC_OK);
        mutate(&b);
        feed(&p, b.data, b.len, &t);
    }
    fc_buf_free(&b);
    static const char *const names[] = {"strip_fence", "stage1", "stage2", "envelope", "error_reason", "answer1",
                                        "answer2"};
    for (int k = 0; k < 7; k++)
        print_message("%-12s ok %6lu  rejected %6lu\n", names[k], t.ok[k], t.bad[k]);
    print_message("%d inputs in %.2f s of CPU\n", FUZZ_ITERATIONS, (double)(clock() - t0) / CLOCKS_PER_SEC);
    /* The mutants reach both outcomes of every parser that can fail, or the fuzz tests less than it seems. */
    for (int k = P_STAGE1; k <= P_ANSWER2; k++) {
        if (t.ok[k] < FUZZ_ITERATIONS / 100) fail_msg("%s accepted only %lu inputs", names[k], t.ok[k]);
        if (t.bad[k] < FUZZ_ITERATIONS / 100) fail_msg("%s rejected only %lu inputs", names[k], t.bad[k]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeds_parse),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
