/* Fuzz target of the answer parsers of fc_pipeline.c: the response envelope, the error body, the fence
 * stripper and the stage-1 (JSON) and stage-2 (TSV) answer parsers. Input: a selector byte, a size byte for
 * the reason buffer, then the body or content, handed over in a heap buffer of exactly its length (ASan sees a
 * read past it). Each parser must return one of its documented codes and, on success, an output as
 * fc_pipeline.h describes; an envelope's content is also fed to both answer parsers, as the worker does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "fc_error.h"
#include "fc_pipeline.h"
#include "fuzz_check.h"

#define REASON_MAX 200 /* bytes of an error body's reason (fc_pipeline_error_reason) */

static void check_why(int rc, const char *why, size_t whylen) {
    if (rc == FC_OK) return;
    FUZZ_CHECK(rc == FC_EPARSE || rc == FC_ENOMEM, "rc %d", rc);
    FUZZ_CHECK(memchr(why, '\0', whylen), "reason unterminated");
    FUZZ_CHECK(whylen < 2 || *why, "no reason");
}

/* clean_strings checks that every string of v, keys included, is free of control characters (fc_text_clean). */
static void clean_strings(json_object *v, int depth) {
    FUZZ_CHECK(depth <= 70, "nested %d deep", depth);
    if (json_object_is_type(v, json_type_string)) {
        FUZZ_CHECK(fuzz_line_ok(json_object_get_string(v)), "string with a control character");
    } else if (json_object_is_type(v, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(v); i++) clean_strings(json_object_array_get_idx(v, i), depth + 1);
    } else if (json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, key, val) {
            FUZZ_CHECK(fuzz_line_ok(key), "key with a control character");
            clean_strings(val, depth + 1);
        }
    }
}

static void stage1(const char *content, size_t len, char *why, size_t whylen) {
    char *json = NULL;
    int rc = fc_pipeline_stage1_parse(content, len, &json, why, whylen);
    check_why(rc, why, whylen);
    if (rc != FC_OK) {
        FUZZ_CHECK(!json, "output on failure");
        return;
    }
    FUZZ_CHECK(json && fuzz_str_ok(json, len * 8 + 64), "stage 1 result not UTF-8");
    json_object *o = json_tokener_parse(json);
    FUZZ_CHECK(o && json_object_is_type(o, json_type_object), "stage 1 result is not a JSON object: %s", json);
    clean_strings(o, 0);
    json_object_put(o);
    /* what it produced is an answer it accepts, unchanged, bare or fenced */
    char *again = NULL, w[256];
    FUZZ_CHECK(fc_pipeline_stage1_parse(json, strlen(json), &again, w, sizeof(w)) == FC_OK, "reparse: %s", w);
    FUZZ_CHECK(strcmp(json, again) == 0, "reparse differs:\n%s\n%s", json, again);
    free(again);
    size_t n = strlen(json) + 16;
    char *fenced = malloc(n);
    FUZZ_CHECK(fenced != NULL, "out of memory");
    n = (size_t)snprintf(fenced, n, "```json\n%s\n```", json);
    FUZZ_CHECK(fc_pipeline_stage1_parse(fenced, n, &again, w, sizeof(w)) == FC_OK, "fenced reparse: %s", w);
    FUZZ_CHECK(strcmp(json, again) == 0, "fenced reparse differs");
    free(again);
    free(fenced);
    free(json);
}

static void stage2(const char *content, size_t len, char *why, size_t whylen) {
    fc_card *cards = NULL;
    size_t n = 0, lines = 1;
    int rc = fc_pipeline_stage2_parse(content, len, &cards, &n, why, whylen);
    check_why(rc, why, whylen);
    if (rc != FC_OK) {
        FUZZ_CHECK(!cards && n == 0, "output on failure");
        return;
    }
    for (size_t i = 0; i < len; i++) lines += content[i] == '\n';
    FUZZ_CHECK(cards && n >= 1 && n <= lines, "%zu cards from %zu lines", n, lines);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < FC_CARD_NFIELDS; k++) {
            const char *f = cards[i].f[k];
            FUZZ_CHECK(f && fuzz_str_ok(f, len * 3) && fuzz_line_ok(f), "card %zu field %d: control character or bad UTF-8", i, k);
        }
    for (size_t i = 0; i < n; i++) /* the header, even with a control character inside, is never a card */
        FUZZ_CHECK(strcasecmp(cards[i].f[0], "position") != 0, "card %zu is the header", i);
    fc_cards_free(cards, n);
}

static void envelope(const char *body, size_t len, char *why, size_t whylen) {
    char *content = NULL;
    long pt = -1, ct = -1;
    int rc = fc_pipeline_envelope(body, len, &content, &pt, &ct, why, whylen);
    check_why(rc, why, whylen);
    if (rc != FC_OK) {
        FUZZ_CHECK(!content, "output on failure");
        return;
    }
    size_t n = strlen(content);
    FUZZ_CHECK(fuzz_utf8_ok(content, n) && n <= len, "content not UTF-8 or longer than the body");
    FUZZ_CHECK(pt >= 0 && ct >= 0 && pt <= 0x7fffffffL && ct <= 0x7fffffffL, "tokens %ld %ld", pt, ct);
    char *exact = malloc(n ? n : 1);
    FUZZ_CHECK(exact != NULL, "out of memory");
    memcpy(exact, content, n);
    stage1(exact, n, why, whylen);
    stage2(exact, n, why, whylen);
    free(exact);
    free(content);
}

static void error_reason(const char *body, size_t len, char *why, size_t whylen) {
    int rc = fc_pipeline_error_reason(body, len, why, whylen);
    FUZZ_CHECK(rc == FC_OK || rc == FC_EPARSE, "rc %d", rc);
    size_t n = strnlen(why, whylen);
    FUZZ_CHECK(n < whylen && n <= REASON_MAX, "reason of %zu bytes in %zu", n, whylen);
    FUZZ_CHECK(fuzz_line_ok(why), "reason holds a control character");
    if (fuzz_utf8_ok(body, len) && rc == FC_EPARSE) FUZZ_CHECK(fuzz_utf8_ok(why, n), "reason cuts a character");
}

static void strip_fence(const char *content, size_t len) {
    size_t n = (size_t)-1;
    char *s = fc_pipeline_strip_fence(content, len, &n);
    FUZZ_CHECK(s && n <= len && s[n] == '\0', "strip_fence length %zu of %zu", n, len);
    FUZZ_CHECK(n == 0 || memmem(content, len, s, n), "stripped text is not part of the content");
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t whylen = 1 + data[1];
    char *why = malloc(whylen);
    size_t len = size - 2;
    char *body = malloc(len ? len : 1);
    FUZZ_CHECK(why && body, "out of memory");
    memcpy(body, data + 2, len);
    memset(why, 'x', whylen);
    switch (data[0] % 5) {
    case 0: envelope(body, len, why, whylen); break;
    case 1: error_reason(body, len, why, whylen); break;
    case 2: strip_fence(body, len); break;
    case 3: stage1(body, len, why, whylen); break;
    default: stage2(body, len, why, whylen); break;
    }
    free(body);
    free(why);
    return 0;
}
