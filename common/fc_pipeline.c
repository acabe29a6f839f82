/* The flashcard pipeline codec: stage-1/stage-2 request bodies, answer parsing and validation, error
 * classification and cache keys. Keeps all knowledge of the chat-completion wire format in one place. */
#include "fc_pipeline.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fc_buf.h"
#include "fc_error.h"
#include "fc_message.h"
#include "fc_text.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define JSON_MAX_DEPTH 64
#define JSON_MAX_BYTES (64u * 1024 * 1024) /* keeps len + 1 within json-c's int */
#define PROMPT_MAX_BYTES (1024 * 1024)
#define REASON_MAX_BYTES 200

/* Fields every stage-1 answer must carry (other_meanings, usage_context, homonyms are optional). */
static const char *const stage1_required[] = {
    "term_number",    "term",           "ipa",         "pos",        "primary_meaning",
    "metaphor",       "metaphor_noun",  "metaphor_action", "suggested_location", "anchor_object",
    "anchor_sensory", "explanation",    "comparison",  "korean_keywords",
};

static void set_why(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t whylen, const char *fmt, ...) {
    if (!why || whylen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* copy_reason copies up to REASON_MAX_BYTES of src into why as one line: every control character (C0, DEL,
 * C1) becomes a space (a reason keeps its word breaks, and a body of nothing else still gives one), invalid
 * UTF-8 becomes U+FFFD, and a UTF-8 sequence is never cut in half. The result is safe in a log line, a dead
 * letter's x-error header and the job's failure record, whatever the API's error body held. */
static void copy_reason(char *why, size_t whylen, const char *src, size_t n) {
    if (!why || whylen == 0) return;
    size_t max = whylen - 1 < REASON_MAX_BYTES ? whylen - 1 : REASON_MAX_BYTES, o = 0;
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0, k; i < n; i += k ? k : 1) {
        k = fc_text_utf8_seq(s + i, n - i);
        const char *put = !k ? "\xef\xbf\xbd" : fc_text_is_control(s + i, k) ? " " : NULL;
        size_t m = put ? strlen(put) : k;
        if (o + m > max) break;
        memcpy(why + o, put ? put : src + i, m);
        o += m;
    }
    why[o] = '\0';
}

/* check_answer returns 0 if content[0..len) may be an answer at all: well-formed UTF-8 without a NUL byte.
 * Anything else is FC_EPARSE with "<what> contains a NUL byte at offset N" or "<what> is not valid UTF-8 at
 * offset N" in why. Answers come with their length from the API or the cache and may hold any bytes; a NUL
 * would cut every C string made from them short, and invalid UTF-8 would make invalid JSON results. */
static int check_answer(const char *what, const char *content, size_t len, char *why, size_t whylen) {
    const unsigned char *s = (const unsigned char *)content;
    for (size_t i = 0, k; s && i < len; i += k) {
        if (s[i] == 0) {
            set_why(why, whylen, "%s contains a NUL byte at offset %zu", what, i);
            return FC_EPARSE;
        }
        if (!(k = fc_text_utf8_seq(s + i, len - i))) {
            set_why(why, whylen, "%s is not valid UTF-8 at offset %zu", what, i);
            return FC_EPARSE;
        }
    }
    return FC_OK;
}

/* parse_json parses len bytes of untrusted text as one JSON value other than null; a NUL byte anywhere in
 * them is an error. Returns the value (caller puts) or NULL with "<what> is not JSON: <reason>" in why; *rc is
 * FC_EPARSE or FC_ENOMEM.
 * The tokener is kept per thread: making one costs three allocations, and this runs twice per API call. */
static json_object *parse_json(const char *text, size_t len, const char *what, int *rc, char *why,
                               size_t whylen) {
    static _Thread_local json_tokener *tok;
    *rc = FC_ENOMEM;
    if (len >= JSON_MAX_BYTES) {
        *rc = FC_EPARSE;
        set_why(why, whylen, "%s is not JSON: too large (%zu bytes)", what, len);
        return NULL;
    }
    const char *nul = len ? memchr(text, '\0', len) : NULL; /* json-c would take it for the end of the input */
    if (nul) {
        *rc = FC_EPARSE;
        set_why(why, whylen, "%s is not JSON: it contains a NUL byte at offset %zu", what, (size_t)(nul - text));
        return NULL;
    }
    if (!tok && (tok = json_tokener_new_ex(JSON_MAX_DEPTH)))
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    if (!tok) {
        set_why(why, whylen, "out of memory");
        return NULL;
    }
    json_tokener_reset(tok);
    json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr == json_tokener_continue) { /* a bare number or literal ends only at the end of input */
        obj = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
    }
    if (jerr != json_tokener_success || !obj) {
        json_object_put(obj);
        obj = NULL;
        *rc = FC_EPARSE;
        if (jerr == json_tokener_success) /* the literal null */
            set_why(why, whylen, "%s is not a JSON object", what);
        else
            set_why(why, whylen, "%s is not JSON: %s", what, json_tokener_error_desc(jerr));
    }
    return obj;
}

/* to_json returns a compact, slash-unescaped, UTF-8-unescaped serialization of obj; caller frees. */
static char *to_json(json_object *obj) {
    const char *s = json_object_to_json_string_ext(obj, JSON_FLAGS);
    return s ? strdup(s) : NULL;
}

/* add_member adds a new value under key, taking ownership; returns 0 or FC_ENOMEM (value freed). */
static int add_member(json_object *obj, const char *key, json_object *val) {
    if (!val) return FC_ENOMEM;
    if (json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return FC_ENOMEM;
    }
    return FC_OK;
}

void fc_pipeline_conf_free(fc_pipeline_conf *c) {
    if (!c) return;
    free(c->stage1_model);
    free(c->stage2_model);
    free(c->stage1_prompt);
    free(c->stage2_prompt);
    c->stage1_model = c->stage2_model = c->stage1_prompt = c->stage2_prompt = NULL;
    free(c->body_prefix[0]);
    free(c->body_prefix[1]);
    free(c->body_suffix);
    c->body_prefix[0] = c->body_prefix[1] = c->body_suffix = NULL;
    c->prepared = 0;
}

/* read_all appends the rest of f to b; returns 0, FC_EIO, FC_ETOOBIG or FC_ENOMEM. */
static int read_all(FILE *f, fc_buf *b) {
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b->len + n > PROMPT_MAX_BYTES) return FC_ETOOBIG;
        if (fc_buf_append(b, chunk, n) != FC_OK) return FC_ENOMEM;
    }
    return ferror(f) ? FC_EIO : FC_OK;
}

int fc_pipeline_load_prompt(const char *path, char **out, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        set_why(err, errlen, "cannot open prompt file '%s': %s", path, strerror(e));
        return e == ENOENT ? FC_ENOTFOUND : FC_EIO;
    }
    fc_buf b = {0};
    int rc = read_all(f, &b);
    fclose(f);
    if (rc == FC_OK && b.len == 0) rc = FC_EPARSE;
    if (rc != FC_OK) {
        fc_buf_free(&b);
        set_why(err, errlen, "cannot read prompt file '%s': %s", path,
                rc == FC_EPARSE ? "file is empty" : fc_strerror(rc));
        return rc;
    }
    *out = fc_buf_steal(&b);
    return FC_OK;
}

/* item_head appends {"position":N,"term":"..." with the object left open; 0 or FC_ENOMEM. */
static int item_head(fc_buf *b, const fc_item *it) {
    int rc = fc_buf_printf(b, "{\"position\":%lld,\"term\":", it->position);
    return rc == FC_OK ? fc_json_str(b, it->term ? it->term : "") : rc;
}

char *fc_pipeline_item_json(const fc_item *it) {
    fc_buf b = {0};
    int rc = item_head(&b, it);
    if (rc == FC_OK) rc = fc_buf_puts(&b, ",\"type\":");
    if (rc == FC_OK) rc = fc_json_str(&b, it->type ? it->type : "");
    if (rc == FC_OK) rc = fc_buf_puts(&b, "}");
    if (rc != FC_OK) {
        fc_buf_free(&b);
        return NULL;
    }
    return fc_buf_steal(&b);
}

/* add_message appends {"role":role,"content":content} to the array msgs; returns 0 or FC_ENOMEM. */
static int add_message(json_object *msgs, const char *role, const char *content) {
    json_object *m = json_object_new_object();
    if (!m) return FC_ENOMEM;
    if (add_member(m, "role", json_object_new_string(role)) != FC_OK ||
        add_member(m, "content", json_object_new_string(content ? content : "")) != FC_OK ||
        json_object_array_add(msgs, m) != 0) {
        json_object_put(m);
        return FC_ENOMEM;
    }
    return FC_OK;
}

/* temperature_value returns the temperature as a JSON number written with at most 6 significant digits
 * (json-c's default would send 0.20000000000000001); non-finite or negative values become 0. */
static json_object *temperature_value(double t) {
    char num[32];
    if (!isfinite(t) || t < 0) t = 0;
    snprintf(num, sizeof(num), "%.6g", t);
    return json_object_new_double_s(t, num);
}

/* chat_body returns the chat/completions request body for one system and one user message; caller frees. */
static char *chat_body(const fc_pipeline_conf *c, const char *model, const char *system, const char *user) {
    json_object *body = json_object_new_object();
    json_object *msgs = json_object_new_array();
    char *s = NULL;
    if (!body || !msgs) goto out;
    if (add_message(msgs, "system", system) != FC_OK || add_message(msgs, "user", user) != FC_OK) goto out;
    if (add_member(body, "model", json_object_new_string(model ? model : "")) != FC_OK) goto out;
    int rc = add_member(body, "messages", msgs);
    msgs = NULL; /* owned by body now, or freed by add_member */
    if (rc != FC_OK || add_member(body, "temperature", temperature_value(c->temperature)) != FC_OK ||
        add_member(body, "max_tokens", json_object_new_int(c->max_tokens)) != FC_OK)
        goto out;
    s = to_json(body);
out:
    json_object_put(msgs);
    json_object_put(body);
    return s;
}

/* Marker standing in for the user content while the shared parts of a body are rendered. */
#define USER_MARK "\x01user\x01"

/* The marker as the body holds it: a JSON string, quotes included. */
#define USER_MARK_JSON "\"\\u0001user\\u0001\""

/* split_body renders a body around USER_MARK and keeps the parts before and after the user content's
 * JSON string (quotes included) in *prefix and *suffix. */
static int split_body(const fc_pipeline_conf *c, const char *model, const char *system, char **prefix,
                      char **suffix) {
    char *body = chat_body(c, model, system, USER_MARK);
    char *mark = body ? strstr(body, USER_MARK_JSON) : NULL;
    if (!mark) {
        free(body);
        return FC_ENOMEM;
    }
    *prefix = strndup(body, (size_t)(mark - body));
    if (suffix) *suffix = strdup(mark + strlen(USER_MARK_JSON));
    free(body);
    return *prefix && (!suffix || *suffix) ? FC_OK : FC_ENOMEM;
}

static void key_prefix(fc_sha256 *ctx, const char *model, const char *prompt) {
    fc_sha256_init(ctx);
    fc_sha256_update(ctx, model ? model : "", strlen(model ? model : "") + 1);
    fc_sha256_update(ctx, prompt ? prompt : "", strlen(prompt ? prompt : "") + 1);
}

int fc_pipeline_conf_prepare(fc_pipeline_conf *c) {
    int rc = split_body(c, c->stage1_model, c->stage1_prompt, &c->body_prefix[0], &c->body_suffix);
    if (rc == FC_OK) rc = split_body(c, c->stage2_model, c->stage2_prompt, &c->body_prefix[1], NULL);
    key_prefix(&c->key_ctx[0], c->stage1_model, c->stage1_prompt);
    key_prefix(&c->key_ctx[1], c->stage2_model, c->stage2_prompt);
    c->prepared = rc == FC_OK;
    return rc;
}

/* key_finish hashes input after the model and prompt already in ctx and writes the hex key. */
static void key_finish(fc_sha256 *ctx, const char *input, char key[FC_SHA256_HEX_LEN + 1]) {
    uint8_t digest[FC_SHA256_DIGEST_LEN];
    fc_sha256_update(ctx, input ? input : "", strlen(input ? input : ""));
    fc_sha256_final(ctx, digest);
    fc_sha256_to_hex(digest, key);
}

void fc_pipeline_stage_cache_key(const fc_pipeline_conf *c, int stage, const char *input, char key[65]) {
    fc_sha256 ctx;
    if (c->prepared) ctx = c->key_ctx[stage == 1 ? 0 : 1];
    else key_prefix(&ctx, stage == 1 ? c->stage1_model : c->stage2_model, stage == 1 ? c->stage1_prompt : c->stage2_prompt);
    key_finish(&ctx, input, key);
}

/* fast_body joins a prepared stage's prefix, the escaped user content and the suffix; caller frees. */
static char *fast_body(const fc_pipeline_conf *c, int stage, const char *user) {
    fc_buf b = {0};
    const char *prefix = c->body_prefix[stage - 1];
    int rc = fc_buf_reserve(&b, strlen(prefix) + strlen(user) + 16 + strlen(c->body_suffix));
    if (rc == FC_OK) rc = fc_buf_puts(&b, prefix);
    if (rc == FC_OK) rc = fc_json_str(&b, user);
    if (rc == FC_OK) rc = fc_buf_puts(&b, c->body_suffix);
    if (rc != FC_OK) {
        fc_buf_free(&b);
        return NULL;
    }
    return fc_buf_steal(&b);
}

/* finish_body builds the body for user, hands user to *user_content (or frees it) and returns the body. */
static char *finish_body(const fc_pipeline_conf *c, int stage, char *user, char **user_content) {
    char *body = NULL;
    if (user && c->prepared) body = fast_body(c, stage, user);
    else if (user)
        body = chat_body(c, stage == 1 ? c->stage1_model : c->stage2_model,
                         stage == 1 ? c->stage1_prompt : c->stage2_prompt, user);
    if (!body) {
        free(user);
        user = NULL;
    }
    if (user_content)
        *user_content = user;
    else
        free(user);
    return body;
}

char *fc_pipeline_stage1_body(const fc_pipeline_conf *c, const fc_item *it, char **user_content) {
    return finish_body(c, 1, fc_pipeline_item_json(it), user_content);
}

/* stage2_user returns {"position":..,"term":..,"stage1_result":{..}} or NULL (not an object, no memory).
 * stage1_json is the compact text fc_pipeline_stage1_parse made (the worker's cache re-validates what it
 * reads), so it is embedded as it is: parsing and printing it again would give the same bytes. */
static char *stage2_user(const fc_item *it, const char *stage1_json) {
    size_t n = strlen(stage1_json);
    if (n < 2 || stage1_json[0] != '{' || stage1_json[n - 1] != '}') return NULL;
    fc_buf b = {0};
    int rc = fc_buf_reserve(&b, n + strlen(it->term ? it->term : "") + 64);
    if (rc == FC_OK) rc = item_head(&b, it);
    if (rc == FC_OK) rc = fc_buf_puts(&b, ",\"stage1_result\":");
    if (rc == FC_OK) rc = fc_buf_append(&b, stage1_json, n);
    if (rc == FC_OK) rc = fc_buf_puts(&b, "}");
    if (rc != FC_OK) {
        fc_buf_free(&b);
        return NULL;
    }
    return fc_buf_steal(&b);
}

char *fc_pipeline_stage2_body(const fc_pipeline_conf *c, const fc_item *it, const char *stage1_json,
                              char **user_content) {
    char *user = stage1_json ? stage2_user(it, stage1_json) : NULL;
    if (!user) {
        if (user_content) *user_content = NULL;
        return NULL;
    }
    return finish_body(c, 2, user, user_content);
}

/* member returns the borrowed member obj[key] if obj is an object holding it with the given type, else NULL. */
static json_object *member(json_object *obj, const char *key, json_type type) {
    json_object *v = NULL;
    if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v)) return NULL;
    return json_object_is_type(v, type) ? v : NULL;
}

/* usage_count returns usage[key] as a non-negative count, 0 when absent or not a number. */
static long usage_count(json_object *usage, const char *key) {
    json_object *v = member(usage, key, json_type_int);
    if (!v) v = member(usage, key, json_type_double);
    if (!v) return 0;
    int64_t n = json_object_get_int64(v);
    return n < 0 ? 0 : (n > 0x7fffffffL ? 0x7fffffffL : (long)n);
}

/* choice_content returns the borrowed string choices[0].message.content of env, or NULL. */
static json_object *choice_content(json_object *env) {
    json_object *choices = member(env, "choices", json_type_array);
    if (!choices || json_object_array_length(choices) == 0) return NULL;
    json_object *msg = member(json_object_array_get_idx(choices, 0), "message", json_type_object);
    return msg ? member(msg, "content", json_type_string) : NULL;
}

int fc_pipeline_envelope(const char *body, size_t len, char **content, long *prompt_tok, long *completion_tok,
                         char *why, size_t whylen) {
    int rc;
    *content = NULL;
    if (prompt_tok) *prompt_tok = 0;
    if (completion_tok) *completion_tok = 0;
    json_object *env = parse_json(body, len, "response", &rc, why, whylen);
    if (!env) return rc;
    json_object *text = choice_content(env);
    size_t n = text ? (size_t)json_object_get_string_len(text) : 0;
    rc = FC_EPARSE;
    if (!text)
        set_why(why, whylen, "response has no choices[0].message.content");
    else /* an escaped \u0000 makes a NUL here, and the content is handed on as a C string */
        rc = check_answer("answer", json_object_get_string(text), n, why, whylen);
    if (rc == FC_OK && !(*content = strndup(json_object_get_string(text), n))) {
        rc = FC_ENOMEM;
        set_why(why, whylen, "out of memory");
    } else if (rc == FC_OK) {
        json_object *usage = member(env, "usage", json_type_object);
        if (prompt_tok) *prompt_tok = usage_count(usage, "prompt_tokens");
        if (completion_tok) *completion_tok = usage_count(usage, "completion_tokens");
    }
    json_object_put(env);
    return rc;
}

/* error_message returns the borrowed error text of an error body: error.message, or error as a string. */
static json_object *error_message(json_object *obj) {
    json_object *err = member(obj, "error", json_type_object);
    if (err) return member(err, "message", json_type_string);
    return member(obj, "error", json_type_string);
}

int fc_pipeline_error_reason(const char *body, size_t len, char *why, size_t whylen) {
    int rc;
    json_object *obj = body && len ? parse_json(body, len, "error body", &rc, NULL, 0) : NULL;
    json_object *msg = obj ? error_message(obj) : NULL;
    if (msg && json_object_get_string_len(msg) > 0) {
        copy_reason(why, whylen, json_object_get_string(msg), (size_t)json_object_get_string_len(msg));
        rc = FC_OK;
    } else {
        if (body && len) copy_reason(why, whylen, body, len);
        else set_why(why, whylen, "empty response body");
        rc = FC_EPARSE;
    }
    json_object_put(obj);
    return rc;
}

/* is_trim reports whether ch is whitespace to trim around an answer; tabs are kept (TSV separators). */
static int is_trim(char ch) { return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'; }

/* trim narrows [*b, *e) to exclude surrounding whitespace. */
static void trim(const char **b, const char **e) {
    while (*b < *e && is_trim(**b)) (*b)++;
    while (*e > *b && is_trim((*e)[-1])) (*e)--;
}

/* skip_fence_open steps past an opening ``` and its info string ("json", "tsv"...) up to the end of that line. */
static const char *skip_fence_open(const char *p, const char *e) {
    p += 3;
    while (p < e && *p != '\n' && (*p == '-' || *p == '_' || *p == '+' || (*p >= 'a' && *p <= 'z') ||
                                   (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
        p++;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    if (p < e && *p == '\n') p++;
    return p;
}

char *fc_pipeline_strip_fence(const char *content, size_t len, size_t *outlen) {
    const char *b = content ? content : "", *e = b + (content ? len : 0);
    trim(&b, &e);
    if (e - b >= 3 && memcmp(b, "```", 3) == 0) {
        b = skip_fence_open(b, e);
        if (e - b >= 3 && memcmp(e - 3, "```", 3) == 0) e -= 3;
        trim(&b, &e);
    }
    size_t n = (size_t)(e - b);
    char *s = malloc(n + 1); /* not strndup: every byte counted in *outlen is copied, NUL bytes included */
    if (!s) return NULL;
    memcpy(s, b, n);
    s[n] = '\0';
    if (outlen) *outlen = n;
    return s;
}

/* stage1_check returns 0 if obj is an object with every required field non-null, else FC_EPARSE and a reason. */
static int stage1_check(json_object *obj, char *why, size_t whylen) {
    if (!json_object_is_type(obj, json_type_object)) {
        set_why(why, whylen, "stage 1 answer is not a JSON object");
        return FC_EPARSE;
    }
    for (size_t i = 0; i < sizeof(stage1_required) / sizeof(stage1_required[0]); i++) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(obj, stage1_required[i], &v)) {
            set_why(why, whylen, "stage 1 answer lacks field '%s'", stage1_required[i]);
            return FC_EPARSE;
        }
        if (!v) {
            set_why(why, whylen, "stage 1 answer has null field '%s'", stage1_required[i]);
            return FC_EPARSE;
        }
    }
    return FC_OK;
}

/* Where cleaning happens, and why here: the worker cleans every string it keeps of an answer (each
 * stage-1 string, object keys included, and each card field) with fc_text_clean (FC_TEXT_FIELD), so every
 * consumer of P.results (the producer's TSV, flashcard-admin results, the stage-2 request built from stage 1,
 * any other reader) gets text without control characters; the output writer (fc_output) cleans again what it
 * writes, for results made by older workers and letters replayed from before. Answers are cached as they came
 * and cleaned again on each hit, so a cache filled before this rule is safe too. */

static json_object *clean_value(json_object *v);

/* clean_string returns the string v with its text cleaned (in place), or NULL (v put) when out of memory.
 * The text may hold NUL bytes (an escaped \u0000): they are dropped like any control character. */
static json_object *clean_string(json_object *v) {
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (fc_text_is_clean(s, n)) return v;
    char *c = fc_text_clean_dup(s, n, FC_TEXT_FIELD);
    int ok = c && json_object_set_string(v, c);
    free(c);
    if (ok) return v;
    json_object_put(v);
    return NULL;
}

/* clean_array cleans every element of the array a in place; returns a, or NULL (a put) when out of memory. */
static json_object *clean_array(json_object *a) {
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        json_object *e = json_object_array_get_idx(a, i);
        if (!e) continue; /* null */
        json_object *c = clean_value(json_object_get(e));
        if (!c) {
            json_object_put(a);
            return NULL;
        }
        if (c != e) json_object_array_put_idx(a, i, c); /* puts e */
        else json_object_put(c);
    }
    return a;
}

/* rekeyed returns a copy of the object o with cleaned keys (a later key that cleans to the same name wins),
 * sharing o's values; o is put. NULL when out of memory. */
static json_object *rekeyed(json_object *o) {
    json_object *n = json_object_new_object();
    json_object_object_foreach(o, k, val) {
        char *ck = n ? fc_text_clean_dup(k, strlen(k), FC_TEXT_FIELD) : NULL;
        if (!ck || json_object_object_add(n, ck, json_object_get(val)) != 0) {
            if (ck && val) json_object_put(val);
            free(ck);
            json_object_put(n);
            n = NULL;
            break;
        }
        free(ck);
    }
    json_object_put(o);
    return n;
}

/* clean_object cleans the values of the object o in place, and its keys by making a copy when one needs it;
 * returns o or the copy, or NULL (o put) when out of memory. */
static json_object *clean_object(json_object *o) {
    int dirty_keys = 0;
    json_object_object_foreach(o, k, val) {
        if (!fc_text_is_clean(k, strlen(k))) dirty_keys = 1;
        if (!val) continue; /* null */
        json_object *c = clean_value(json_object_get(val));
        if (!c) {
            json_object_put(o);
            return NULL;
        }
        if (c != val) json_object_object_add(o, k, c); /* replaces (and puts) val; the table is unchanged */
        else json_object_put(c);
    }
    return dirty_keys ? rekeyed(o) : o;
}

/* clean_value takes v (one reference) and returns it with every string in it cleaned: v itself, or a new
 * value standing for it (v put). NULL when out of memory (v put). Recursion is bounded by the parser's
 * JSON_MAX_DEPTH. */
static json_object *clean_value(json_object *v) {
    if (!v) return NULL; /* JSON null: the callers skip it */
    if (json_object_is_type(v, json_type_string)) return clean_string(v);
    if (json_object_is_type(v, json_type_array)) return clean_array(v);
    if (json_object_is_type(v, json_type_object)) return clean_object(v);
    return v;
}

int fc_pipeline_stage1_parse(const char *content, size_t len, char **stage1_json, char *why, size_t whylen) {
    size_t n;
    int rc;
    *stage1_json = NULL;
    if ((rc = check_answer("stage 1 answer", content, len, why, whylen)) != FC_OK) return rc;
    char *text = fc_pipeline_strip_fence(content, len, &n);
    if (!text) {
        set_why(why, whylen, "out of memory");
        return FC_ENOMEM;
    }
    json_object *obj = parse_json(text, n, "stage 1 answer", &rc, why, whylen);
    free(text);
    if (!obj) return rc;
    if (!(obj = clean_value(obj))) {
        set_why(why, whylen, "out of memory");
        return FC_ENOMEM;
    }
    rc = stage1_check(obj, why, whylen);
    if (rc == FC_OK && !(*stage1_json = to_json(obj))) {
        rc = FC_ENOMEM;
        set_why(why, whylen, "out of memory");
    }
    json_object_put(obj);
    return rc;
}

void fc_cards_free(fc_card *cards, size_t n) {
    if (!cards) return;
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < FC_CARD_NFIELDS; j++) free(cards[i].f[j]);
    free(cards);
}

/* split_tsv splits [b, e) at tabs into at most FC_CARD_NFIELDS spans (start[i], end[i]); returns the total
 * number of fields in the line, which may exceed FC_CARD_NFIELDS. */
static size_t split_tsv(const char *b, const char *e, const char **start, const char **end) {
    size_t n = 0;
    for (const char *p = b;; p++) {
        if (p == e || *p == '\t') {
            if (n < FC_CARD_NFIELDS) {
                start[n] = b;
                end[n] = p;
            }
            n++;
            b = p + 1;
        }
        if (p == e) return n;
    }
}

/* only_space reports whether [b, e) holds nothing but spaces and tabs. */
static int only_space(const char *b, const char *e) {
    while (b < e && (*b == ' ' || *b == '\t')) b++;
    return b == e;
}

/* card_from_line fills c from one TSV line, its fields cleaned by fc_text_clean (a CR or VT inside one becomes
 * a space, an ESC is dropped). Returns 1 if it is a card; 0 if it is no row: blank, a line without a tab
 * (commentary around the table) or the header; FC_EPARSE if it is a row with the wrong number of fields
 * (*nfields says how many); FC_ENOMEM. A row of 8 fields lacks only honorific_level; empty fields after the
 * ninth (trailing tabs) are ignored. Any other count means a field held a tab or lost one: every column after
 * it would be shifted, so the answer is refused rather than cards made of the wrong columns. */
static int card_from_line(const char *b, const char *e, fc_card *c, size_t *nfields) {
    const char *start[FC_CARD_NFIELDS], *end[FC_CARD_NFIELDS];
    if (e > b && e[-1] == '\r') e--;
    size_t n = split_tsv(b, e, start, end);
    *nfields = n;
    if (n == 1 || only_space(b, e)) return 0;
    if (end[0] - start[0] == 8 && strncasecmp(start[0], "position", 8) == 0) return 0; /* header */
    if (n < FC_CARD_NFIELDS - 1 || (n > FC_CARD_NFIELDS && !only_space(end[FC_CARD_NFIELDS - 1], e)))
        return FC_EPARSE;
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < FC_CARD_NFIELDS; i++) {
        c->f[i] = i < n ? fc_text_clean_dup(start[i], (size_t)(end[i] - start[i]), FC_TEXT_FIELD) : strdup("");
        if (!c->f[i]) {
            for (size_t j = 0; j < i; j++) free(c->f[j]);
            return FC_ENOMEM;
        }
    }
    if (strcasecmp(c->f[0], "position") == 0) { /* the header, once a control character inside is dropped */
        for (size_t i = 0; i < FC_CARD_NFIELDS; i++) free(c->f[i]);
        return 0;
    }
    return 1;
}

/* push_card appends c to the growing array *cards of *n entries; returns 0 or FC_ENOMEM. */
static int push_card(fc_card **cards, size_t *n, size_t *cap, const fc_card *c) {
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        fc_card *p = realloc(*cards, ncap * sizeof(*p));
        if (!p) return FC_ENOMEM;
        *cards = p;
        *cap = ncap;
    }
    (*cards)[(*n)++] = *c;
    return FC_OK;
}

/* parse_lines collects the cards of text[0..len); returns 0, FC_EPARSE with the reason in why (a row with the
 * wrong number of fields) or FC_ENOMEM (cards collected so far kept). */
static int parse_lines(const char *text, size_t len, fc_card **cards, size_t *ncards, char *why, size_t whylen) {
    size_t cap = 0, line = 0, nfields;
    const char *p = text, *e = text + len;
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        const char *le = nl ? nl : e;
        fc_card c;
        line++;
        int r = card_from_line(p, le, &c, &nfields);
        if (r == FC_EPARSE)
            set_why(why, whylen, "stage 2 answer line %zu has %zu fields (expected %d)", line, nfields,
                    FC_CARD_NFIELDS);
        if (r < 0) return r;
        if (r == 1 && push_card(cards, ncards, &cap, &c) != FC_OK) {
            for (int j = 0; j < FC_CARD_NFIELDS; j++) free(c.f[j]);
            return FC_ENOMEM;
        }
        p = le + (nl ? 1 : 0);
    }
    return FC_OK;
}

int fc_pipeline_stage2_parse(const char *content, size_t len, fc_card **cards, size_t *ncards, char *why,
                             size_t whylen) {
    size_t n;
    *cards = NULL;
    *ncards = 0;
    int rc = check_answer("stage 2 answer", content, len, why, whylen);
    if (rc != FC_OK) return rc;
    char *text = fc_pipeline_strip_fence(content, len, &n);
    rc = text ? parse_lines(text, n, cards, ncards, why, whylen) : FC_ENOMEM;
    free(text);
    if (rc == FC_OK && *ncards == 0) {
        set_why(why, whylen, "stage 2 answer has no cards");
        rc = FC_EPARSE;
    } else if (rc == FC_ENOMEM) {
        set_why(why, whylen, "out of memory");
    }
    if (rc != FC_OK) {
        fc_cards_free(*cards, *ncards);
        *cards = NULL;
        *ncards = 0;
    }
    return rc;
}

int fc_pipeline_classify(int http_status) {
    if (http_status <= 0) return FC_CLASS_RETRY;
    if (http_status >= 200 && http_status < 300) return FC_CLASS_OK;
    switch (http_status) {
    case 401:
    case 403:
        return FC_CLASS_AUTH;
    case 408:
    case 409:
    case 425:
    case 429:
        return FC_CLASS_RETRY;
    default:
        break;
    }
    if (http_status >= 500 && http_status < 600) return FC_CLASS_RETRY;
    if (http_status >= 300 && http_status < 500) return FC_CLASS_PERMANENT;
    return FC_CLASS_RETRY; /* 1xx or nonsense: treat as a transient protocol failure */
}

const char *fc_class_name(int cls) {
    switch (cls) {
    case FC_CLASS_OK:
        return "ok";
    case FC_CLASS_RETRY:
        return "retryable";
    case FC_CLASS_PERMANENT:
        return "permanent";
    case FC_CLASS_AUTH:
        return "auth";
    case FC_CLASS_CRASHED:
        return "crashed";
    case FC_CLASS_CANCELLED:
        return "cancelled";
    case FC_CLASS_BUDGET:
        return "budget";
    default:
        return "unknown";
    }
}

long fc_pipeline_estimate_tokens(size_t body_len, int max_tokens) {
    return (long)(body_len / 4) + (max_tokens > 0 ? max_tokens : 0);
}

void fc_pipeline_cache_key(const char *model, const char *prompt, const char *input,
                           char key[FC_SHA256_HEX_LEN + 1]) {
    fc_sha256 ctx;
    key_prefix(&ctx, model, prompt);
    key_finish(&ctx, input, key);
}

/* ---- the flashcard processor ---- */

static char *flash_request(const void *self, int stage, const fc_item *it, const char *prev, char **user) {
    if (stage == 1) return fc_pipeline_stage1_body(self, it, user);
    if (user) *user = NULL;
    return prev ? fc_pipeline_stage2_body(self, it, prev, user) : NULL;
}

static void flash_cache_key(const void *self, int stage, const char *user, char key[FC_SHA256_HEX_LEN + 1]) {
    fc_pipeline_stage_cache_key(self, stage, user, key);
}

const char *const fc_card_columns[FC_CARD_NFIELDS] = {"position", "term",  "term_number", "tab_name",       "primer",
                                                      "front",    "back",  "tags",        "honorific_level"};

/* cards_json renders cards as a JSON array of objects named by the TSV header's columns. */
static char *cards_json(const fc_card *cards, size_t n) {
    fc_buf o = {0};
    int rc = fc_buf_puts(&o, "[");
    for (size_t c = 0; rc == FC_OK && c < n; c++) {
        rc = fc_buf_puts(&o, c ? ",{" : "{");
        for (int f = 0; rc == FC_OK && f < FC_CARD_NFIELDS; f++) {
            rc = fc_buf_printf(&o, "%s\"%s\":", f ? "," : "", fc_card_columns[f]);
            if (rc == FC_OK) rc = fc_json_str(&o, cards[c].f[f] ? cards[c].f[f] : "");
        }
        if (rc == FC_OK) rc = fc_buf_puts(&o, "}");
    }
    if (rc == FC_OK) rc = fc_buf_puts(&o, "]");
    if (rc != FC_OK) {
        fc_buf_free(&o);
        return NULL;
    }
    return fc_buf_steal(&o);
}

static int flash_answer(const void *self, int stage, const char *content, size_t len, char **result, char *why,
                        size_t whylen) {
    (void)self;
    *result = NULL;
    if (stage == 1) return fc_pipeline_stage1_parse(content, len, result, why, whylen);
    fc_card *cards = NULL;
    size_t n = 0;
    int rc = fc_pipeline_stage2_parse(content, len, &cards, &n, why, whylen);
    if (rc == FC_OK && !(*result = cards_json(cards, n))) {
        set_why(why, whylen, "out of memory");
        rc = FC_ENOMEM;
    }
    fc_cards_free(cards, n);
    return rc;
}

static int flash_result(const void *self, char *const *results, fc_buf *out) {
    (void)self;
    int rc = fc_buf_puts(out, ",\"analysis\":");
    if (rc == FC_OK) rc = fc_buf_puts(out, results[0]);
    if (rc == FC_OK) rc = fc_buf_puts(out, ",\"cards\":");
    if (rc == FC_OK) rc = fc_buf_puts(out, results[1]);
    return rc;
}

fc_processor fc_flashcard_processor(const fc_pipeline_conf *c) {
    return (fc_processor){"flashcards", 2, c, flash_request, flash_cache_key, flash_answer, flash_result};
}
