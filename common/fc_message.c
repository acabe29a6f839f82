/* Message schema v1: encoding by appending to buffers, decoding with a strict json-c tokener. */
#include "fc_message.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_text.h"

int fc_job_id_valid(const char *id) {
    size_t n = strlen(id);
    /* P.results.unrouted is the results of jobs whose queue is gone, not a job's queue. */
    if (n == 0 || n > FC_JOB_ID_MAX || strcmp(id, "unrouted") == 0) return 0;
    for (; *id; id++)
        if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') || (*id >= '0' && *id <= '9') ||
              *id == '-' || *id == '_' || *id == '.'))
            return 0;
    return 1;
}

/* json_escape returns the escape of c, a byte JSON strings may not hold as it is (a control character, '"' or
 * '\\'), in esc (at least 7 bytes), and its length. */
static size_t json_escape(unsigned char c, char *esc) {
    static const char hex[] = "0123456789abcdef";
    esc[0] = '\\';
    esc[1] = (char)c;
    if (c == '\n') esc[1] = 'n';
    else if (c == '\t') esc[1] = 't';
    else if (c == '\r') esc[1] = 'r';
    else if (c == '\b') esc[1] = 'b';
    else if (c == '\f') esc[1] = 'f';
    else if (c < 0x20) {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        return 6;
    }
    return 2;
}

/* fc_json_str writes straight into the buffer, byte by byte, with room reserved for the string unescaped and
 * more reserved at each escape (its extra bytes): no append call per run (the producer quotes three strings
 * per item). */
#define ONES 0x0101010101010101u
#define HIGHS 0x8080808080808080u

/* plain8 says whether none of the 8 bytes in v needs an escape: none below 0x20, none '"' or '\\'. SWAR tests,
 * exact for whether any byte matches: (x - ONES) & ~x & HIGHS is non-zero iff a byte of x is 0, and
 * (v - 0x20 * ONES) & ~v & HIGHS iff a byte of v is below 0x20. */
static int plain8(uint64_t v) {
    uint64_t q = v ^ ('"' * ONES), b = v ^ ('\\' * ONES);
    uint64_t hit = ((v - 0x20 * ONES) & ~v) | ((q - ONES) & ~q) | ((b - ONES) & ~b);
    return (hit & HIGHS) == 0;
}

int fc_json_str(fc_buf *out, const char *s) {
    size_t n = strlen(s);
    if (fc_buf_reserve(out, n + 2) != FC_OK) return FC_ENOMEM;
    char *d = out->data + out->len;
    *d++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        /* 8 bytes at a time while none needs an escape (most text), else byte by byte */
        while (n - i >= 8 && (memcpy(&v, s + i, 8), plain8(v))) {
            memcpy(d, &v, 8);
            d += 8;
            i += 8;
        }
        if (i == n) break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *d++ = (char)c;
            continue;
        }
        char esc[7];
        size_t k = json_escape(c, esc);
        /* room for the rest, unescaped, and the closing quote was reserved; the escape takes k - 1 more */
        out->len = (size_t)(d - out->data);
        if (fc_buf_reserve(out, k + (n - i - 1) + 1) != FC_OK) return FC_ENOMEM;
        d = out->data + out->len;
        memcpy(d, esc, k);
        d += k;
    }
    *d++ = '"';
    out->len = (size_t)(d - out->data);
    out->data[out->len] = '\0';
    return FC_OK;
}

int fc_message_item(fc_buf *out, const fc_item *it, const char *last_error) {
    /* literals through FC_BUF_LIT and the position through fc_buf_append_ll: no printf, no strlen (the
     * producer encodes every row here) */
    int rc = FC_BUF_LIT(out, "{\"position\":");
    if (rc == FC_OK) rc = fc_buf_append_ll(out, it->position);
    if (rc == FC_OK) rc = FC_BUF_LIT(out, ",\"term\":");
    if (rc == FC_OK) rc = fc_json_str(out, it->term);
    if (rc == FC_OK) rc = FC_BUF_LIT(out, ",\"type\":");
    if (rc == FC_OK) rc = fc_json_str(out, it->type ? it->type : "");
    if (rc == FC_OK && it->nextra) {
        rc = FC_BUF_LIT(out, ",\"extra\":{");
        for (size_t i = 0; rc == FC_OK && i < it->nextra; i++) {
            if (i) rc = FC_BUF_LIT(out, ",");
            if (rc == FC_OK) rc = fc_json_str(out, it->extra[i].name);
            if (rc == FC_OK) rc = FC_BUF_LIT(out, ":");
            if (rc == FC_OK) rc = fc_json_str(out, it->extra[i].value);
        }
        if (rc == FC_OK) rc = FC_BUF_LIT(out, "}");
    }
    if (rc == FC_OK && last_error) {
        rc = FC_BUF_LIT(out, ",\"last_error\":");
        if (rc == FC_OK) rc = fc_json_str(out, last_error);
    }
    if (rc == FC_OK) rc = FC_BUF_LIT(out, "}");
    return rc;
}

int fc_message_batch_open(fc_buf *out, const fc_batch_hdr *h) {
    int rc = FC_BUF_LIT(out, "{\"schema\":");
    if (rc == FC_OK) rc = fc_buf_append_ll(out, FC_SCHEMA_VERSION);
    if (rc == FC_OK) rc = FC_BUF_LIT(out, ",\"job_id\":");
    if (rc == FC_OK) rc = fc_json_str(out, h->job_id);
    if (rc == FC_OK) rc = FC_BUF_LIT(out, ",\"batch\":");
    if (rc == FC_OK) rc = fc_buf_append_ll(out, h->batch);
    if (rc == FC_OK) rc = FC_BUF_LIT(out, ",\"attempt\":");
    if (rc == FC_OK) rc = fc_buf_append_ll(out, h->attempt);
    if (rc == FC_OK && h->not_before_ms) rc = fc_buf_printf(out, ",\"not_before\":%lld", h->not_before_ms);
    if (rc == FC_OK && h->priority) rc = fc_buf_printf(out, ",\"priority\":%d", h->priority);
    if (rc == FC_OK) rc = fc_buf_puts(out, ",\"items\":[");
    return rc;
}

int fc_message_batch_close(fc_buf *out) { return FC_BUF_LIT(out, "]}"); }

int fc_message_result_open(fc_buf *out, const fc_batch_hdr *h, const char *worker) {
    fc_buf_printf(out, "{\"schema\":%d,\"job_id\":", FC_SCHEMA_VERSION);
    fc_json_str(out, h->job_id);
    fc_buf_printf(out, ",\"batch\":%ld,\"worker\":", h->batch);
    fc_json_str(out, worker);
    return fc_buf_puts(out, ",\"items\":[");
}

/* item_reopened appends it as an object left open for more members. */
static int item_reopened(fc_buf *out, const fc_item *it) {
    int rc = fc_message_item(out, it, NULL);
    if (rc == FC_OK) fc_buf_truncate(out, out->len - 1);
    return rc;
}

int fc_message_result_item(fc_buf *out, const fc_item *it, const char *members, const fc_usage *u) {
    item_reopened(out, it);
    fc_buf_puts(out, members);
    return fc_buf_printf(out,
                         ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,\"calls\":%d,"
                         "\"cache_hits\":%d}}",
                         u->prompt_tokens, u->completion_tokens, u->calls, u->cache_hits);
}

int fc_message_failed_item(fc_buf *out, const fc_item *it, const fc_item_error *e) {
    item_reopened(out, it);
    fc_buf_puts(out, ",\"error\":{\"class\":");
    fc_json_str(out, e->cls);
    fc_buf_printf(out, ",\"http_status\":%d,\"attempts\":%d,\"message\":", e->http_status, e->attempts);
    fc_json_str(out, e->message);
    return fc_buf_puts(out, "}}");
}

void fc_message_batch_id(char *out, size_t outlen, const fc_batch_hdr *h, const char *suffix) {
    if (h->attempt <= 1 && !suffix)
        snprintf(out, outlen, "%s-%ld", h->job_id, h->batch);
    else
        snprintf(out, outlen, "%s-%ld-a%d-%s", h->job_id, h->batch, h->attempt, suffix ? suffix : "0");
}

/* get_int64 fetches a required integer field within [min, max]. */
static int get_int64(json_object *o, const char *key, long long min, long long max, long long *out, char *why,
                     size_t whylen, const char *where) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) {
        snprintf(why, whylen, "%smissing field '%s'", where, key);
        return FC_EPARSE;
    }
    if (!json_object_is_type(v, json_type_int)) {
        snprintf(why, whylen, "%sfield '%s' is not an integer", where, key);
        return FC_EPARSE;
    }
    long long x = json_object_get_int64(v);
    if (x < min || x > max) {
        snprintf(why, whylen, "%sfield '%s' = %lld is out of range %lld..%lld", where, key, x, min, max);
        return FC_EPARSE;
    }
    *out = x;
    return FC_OK;
}

/* get_str returns the string member key of o (borrowed), or NULL if absent, not a string, or holding a NUL
 * byte (an escaped \u0000): as a C string it would be cut there, and "job\u0000x" would pass for job "job". */
static const char *get_str(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) return NULL;
    const char *s = json_object_get_string(v);
    return strlen(s) == (size_t)json_object_get_string_len(v) ? s : NULL;
}

static char *value_text(json_object *v) {
    if (json_object_is_type(v, json_type_string)) return strdup(json_object_get_string(v));
    if (json_object_is_type(v, json_type_null)) return strdup("");
    return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int decode_item(json_object *o, fc_item *it, char **last_error, size_t idx, char *why, size_t whylen) {
    char where[48];
    snprintf(where, sizeof(where), "items[%zu]: ", idx);
    if (!json_object_is_type(o, json_type_object)) {
        snprintf(why, whylen, "%snot an object", where);
        return FC_EPARSE;
    }
    if (get_int64(o, "position", 1, FC_POSITION_MAX, &it->position, why, whylen, where) != FC_OK) return FC_EPARSE;
    const char *term = get_str(o, "term"), *type = get_str(o, "type"), *err = get_str(o, "last_error");
    if (!term || !*term) {
        snprintf(why, whylen, "%smissing or empty 'term' (or it holds a NUL byte)", where);
        return FC_EPARSE;
    }
    it->term = strdup(term);
    it->type = strdup(type ? type : "");
    if (err) *last_error = strdup(err);
    json_object *extra;
    if (json_object_object_get_ex(o, "extra", &extra) && json_object_is_type(extra, json_type_object)) {
        json_object_object_foreach(extra, k, v) {
            char *text = value_text(v);
            int rc = text ? fc_item_add_extra(it, k, text) : FC_ENOMEM;
            free(text);
            if (rc != FC_OK) return rc;
        }
    }
    return it->term && it->type ? FC_OK : FC_ENOMEM;
}

static int decode_header(json_object *root, fc_batch_hdr *h, char *why, size_t whylen) {
    long long v;
    if (get_int64(root, "schema", 0, 1000, &v, why, whylen, "") != FC_OK) return FC_EPARSE;
    if (v != FC_SCHEMA_VERSION) {
        snprintf(why, whylen, "unsupported schema version %lld (this worker reads %d)", v, FC_SCHEMA_VERSION);
        return FC_EPARSE;
    }
    const char *job = get_str(root, "job_id");
    if (!job || !fc_job_id_valid(job)) {
        snprintf(why, whylen, "missing or invalid 'job_id' (1..64 of A-Z a-z 0-9 - _ .)");
        return FC_EPARSE;
    }
    snprintf(h->job_id, sizeof(h->job_id), "%s", job);
    if (get_int64(root, "batch", 0, 1LL << 40, &v, why, whylen, "") != FC_OK) return FC_EPARSE;
    h->batch = (long)v;
    if (get_int64(root, "attempt", 1, 1000, &v, why, whylen, "") != FC_OK) return FC_EPARSE;
    h->attempt = (int)v;
    h->not_before_ms = 0;
    if (json_object_object_get_ex(root, "not_before", NULL) &&
        get_int64(root, "not_before", 0, FC_NOT_BEFORE_MAX, &h->not_before_ms, why, whylen, "") != FC_OK)
        return FC_EPARSE;
    h->priority = 0;
    if (json_object_object_get_ex(root, "priority", NULL)) {
        if (get_int64(root, "priority", 1, FC_PRIORITY_MAX, &v, why, whylen, "") != FC_OK) return FC_EPARSE;
        h->priority = (int)v;
    }
    return FC_OK;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* unique_positions returns 0 if no two items of m share a position, else FC_EPARSE with the position in why:
 * the job's record keeps one outcome per position, so a batch holding one twice would count one item twice
 * and another never. */
static int unique_positions(const fc_batch_msg *m, char *why, size_t whylen) {
    long long *p = malloc(m->nitems * sizeof(*p));
    if (!p) return FC_ENOMEM;
    for (size_t i = 0; i < m->nitems; i++) p[i] = m->items[i].position;
    qsort(p, m->nitems, sizeof(*p), cmp_ll);
    int rc = FC_OK;
    for (size_t i = 1; rc == FC_OK && i < m->nitems; i++)
        if (p[i] == p[i - 1]) {
            snprintf(why, whylen, "items hold position %lld more than once", p[i]);
            rc = FC_EPARSE;
        }
    free(p);
    return rc;
}

static int decode_items(json_object *root, fc_batch_msg *m, char *why, size_t whylen) {
    json_object *items;
    if (!json_object_object_get_ex(root, "items", &items) || !json_object_is_type(items, json_type_array)) {
        snprintf(why, whylen, "missing 'items' array");
        return FC_EPARSE;
    }
    size_t n = json_object_array_length(items);
    if (n == 0 || n > FC_BATCH_ITEMS_MAX) {
        snprintf(why, whylen, "'items' holds %zu items (expected 1..%d)", n, FC_BATCH_ITEMS_MAX);
        return FC_EPARSE;
    }
    m->items = calloc(n, sizeof(*m->items));
    m->last_error = calloc(n, sizeof(*m->last_error));
    if (!m->items || !m->last_error) return FC_ENOMEM;
    m->nitems = n;
    for (size_t i = 0; i < n; i++) {
        int rc = decode_item(json_object_array_get_idx(items, i), &m->items[i], &m->last_error[i], i, why, whylen);
        if (rc != FC_OK) return rc;
    }
    return unique_positions(m, why, whylen);
}

/* check_bytes returns 0 if body is well-formed UTF-8 without a NUL byte, else FC_EPARSE with the offset in
 * why. json-c's own check (JSON_TOKENER_VALIDATE_UTF8) lets overlong forms such as C0 AF through, and a NUL
 * would end the tokener's input early. */
static int check_bytes(const char *body, size_t len, char *why, size_t whylen) {
    const unsigned char *u = (const unsigned char *)body;
    for (size_t i = 0, k; i < len; i += k) {
        if (u[i] == 0) {
            snprintf(why, whylen, "not JSON: a NUL byte at offset %zu", i);
            return FC_EPARSE;
        }
        if (!(k = fc_text_utf8_seq(u + i, len - i))) {
            snprintf(why, whylen, "not JSON: invalid UTF-8 at offset %zu", i);
            return FC_EPARSE;
        }
    }
    return FC_OK;
}

int fc_message_decode_batch(const char *body, size_t len, fc_batch_msg *out, char *why, size_t whylen) {
    memset(out, 0, sizeof(*out));
    if (len > FC_MESSAGE_MAX_BYTES) {
        snprintf(why, whylen, "message of %zu bytes exceeds %ld", len, FC_MESSAGE_MAX_BYTES);
        return FC_ETOOBIG;
    }
    if (check_bytes(body, len, why, whylen) != FC_OK) return FC_EPARSE;
    json_tokener *tok = json_tokener_new_ex(32);
    if (!tok) return FC_ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* The tokener needs to see the end of input: parse a NUL-terminated copy including the NUL. */
    char *copy = malloc(len + 1);
    json_object *root = NULL;
    if (copy) {
        memcpy(copy, body, len);
        copy[len] = '\0';
        root = json_tokener_parse_ex(tok, copy, (int)len + 1);
    }
    int rc = FC_OK;
    if (!root || json_tokener_get_error(tok) != json_tokener_success) {
        snprintf(why, whylen, "not JSON: %s", json_tokener_error_desc(json_tokener_get_error(tok)));
        rc = FC_EPARSE;
    } else if (!json_object_is_type(root, json_type_object)) {
        snprintf(why, whylen, "not a JSON object");
        rc = FC_EPARSE;
    }
    if (rc == FC_OK) rc = decode_header(root, &out->hdr, why, whylen);
    if (rc == FC_OK) rc = decode_items(root, out, why, whylen);
    json_object_put(root);
    json_tokener_free(tok);
    free(copy);
    if (rc != FC_OK) fc_batch_msg_free(out);
    return rc;
}

void fc_batch_msg_free(fc_batch_msg *m) {
    for (size_t i = 0; i < m->nitems; i++) {
        if (m->items) fc_item_clear(&m->items[i]);
        if (m->last_error) free(m->last_error[i]);
    }
    free(m->items);
    free(m->last_error);
    m->items = NULL;
    m->last_error = NULL;
    m->nitems = 0;
}

/* copy_cut copies s into out (n bytes with the NUL), cut at a UTF-8 character boundary. */
static void copy_cut(char *out, size_t n, const char *s) {
    size_t len = strlen(s);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    memcpy(out, s, len);
    out[len] = '\0';
}

/* salvage_item reads the position and term of one item object into *out; 1 if it has a position. */
static int salvage_item(json_object *o, fc_salvaged *out) {
    json_object *v;
    if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "position", &v) ||
        !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
        json_object_get_int64(v) > FC_POSITION_MAX)
        return 0;
    out->position = json_object_get_int64(v);
    out->term[0] = '\0';
    const char *t = get_str(o, "term");
    /* Cleaned: the message was refused, maybe for invalid UTF-8 or control characters in this very term,
     * and the term goes on to the job's failure record and the producer's report. */
    char *clean = t ? fc_text_clean_dup(t, strlen(t), FC_TEXT_FIELD) : NULL;
    if (clean) copy_cut(out->term, sizeof(out->term), clean);
    free(clean);
    return 1;
}

int fc_message_salvage(const char *body, size_t len, char job_id[FC_JOB_ID_MAX + 1], fc_salvaged **items,
                       size_t *n) {
    *items = NULL;
    *n = 0;
    char *copy = len <= (size_t)FC_MESSAGE_MAX_BYTES * 2 ? malloc(len + 1) : NULL;
    if (!copy) return FC_EPARSE;
    memcpy(copy, body, len);
    copy[len] = '\0';
    json_object *root = json_tokener_parse(copy), *arr;
    free(copy);
    const char *id = root && json_object_is_type(root, json_type_object) ? get_str(root, "job_id") : NULL;
    if (!id || !fc_job_id_valid(id)) {
        json_object_put(root);
        return FC_EPARSE;
    }
    snprintf(job_id, FC_JOB_ID_MAX + 1, "%s", id);
    if (json_object_object_get_ex(root, "items", &arr) && json_object_is_type(arr, json_type_array)) {
        size_t count = json_object_array_length(arr);
        *items = calloc(count ? count : 1, sizeof(**items));
        for (size_t i = 0; *items && i < count; i++)
            if (salvage_item(json_object_array_get_idx(arr, i), &(*items)[*n])) (*n)++;
    }
    json_object_put(root);
    return FC_OK;
}
