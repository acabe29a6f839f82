/* Dead letters: decoding with json-c, and the replacement and remainder messages. */
#include "fc_deadletter.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"
#include "fc_message.h"

struct fc_dead_letter {
    json_object *root;   /* owned: the whole body */
    json_object *items;  /* borrowed from root */
    fc_dead_item *v;     /* nitems entries; strings borrowed from root */
    size_t nitems;
    char job_id[FC_JOB_ID_MAX + 1];
    long batch;
};

/* parse_strict parses len bytes as one JSON document (strict, UTF-8 checked); NULL if it is not one. */
static json_object *parse_strict(const char *body, size_t len) {
    json_tokener *tok = json_tokener_new_ex(32);
    char *copy = tok && len < (size_t)FC_MESSAGE_MAX_BYTES ? malloc(len + 1) : NULL;
    json_object *root = NULL;
    if (copy) {
        memcpy(copy, body, len);
        copy[len] = '\0';
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        root = json_tokener_parse_ex(tok, copy, (int)len + 1);
        if (root && json_tokener_get_error(tok) != json_tokener_success) {
            json_object_put(root);
            root = NULL;
        }
    }
    free(copy);
    if (tok) json_tokener_free(tok);
    return root;
}

static const char *str_member(json_object *o, const char *key) {
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) return "";
    return json_object_get_string(v);
}

static int int_member(json_object *o, const char *key) {
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int)) return 0;
    long long x = json_object_get_int64(v);
    return x < 0 ? 0 : x > 1000000 ? 1000000 : (int)x;
}

/* read_item fills it from the item object o (validated by fc_message_decode_batch). */
static void read_item(json_object *o, fc_dead_item *it) {
    json_object *v, *err = NULL;
    json_object_object_get_ex(o, "position", &v);
    it->position = json_object_get_int64(v);
    it->term = str_member(o, "term");
    it->type = str_member(o, "type");
    if (json_object_object_get_ex(o, "error", &err) && !json_object_is_type(err, json_type_object)) err = NULL;
    it->cls = str_member(err, "class");
    it->http_status = int_member(err, "http_status");
    it->attempts = int_member(err, "attempts");
    it->message = str_member(err, "message");
}

int fc_dead_letter_parse(const char *body, size_t len, fc_dead_letter **out, char *why, size_t whylen) {
    *out = NULL;
    fc_batch_msg m;
    int rc = fc_message_decode_batch(body, len, &m, why, whylen);
    if (rc == FC_ENOMEM) return rc;
    if (rc != FC_OK) return FC_EPARSE;
    fc_dead_letter *dl = calloc(1, sizeof(*dl));
    if (!dl) {
        fc_batch_msg_free(&m);
        return FC_ENOMEM;
    }
    snprintf(dl->job_id, sizeof(dl->job_id), "%s", m.hdr.job_id);
    dl->batch = m.hdr.batch;
    fc_batch_msg_free(&m);
    dl->root = parse_strict(body, len);
    if (dl->root) json_object_object_get_ex(dl->root, "items", &dl->items);
    dl->nitems = dl->items ? json_object_array_length(dl->items) : 0;
    dl->v = dl->nitems ? calloc(dl->nitems, sizeof(*dl->v)) : NULL;
    if (!dl->v) {
        fc_dead_letter_free(dl);
        return FC_ENOMEM;
    }
    for (size_t i = 0; i < dl->nitems; i++) read_item(json_object_array_get_idx(dl->items, i), &dl->v[i]);
    *out = dl;
    return FC_OK;
}

void fc_dead_letter_free(fc_dead_letter *dl) {
    if (!dl) return;
    json_object_put(dl->root);
    free(dl->v);
    free(dl);
}

const char *fc_dead_letter_job(const fc_dead_letter *dl) { return dl->job_id; }
long fc_dead_letter_batch(const fc_dead_letter *dl) { return dl->batch; }
size_t fc_dead_letter_nitems(const fc_dead_letter *dl) { return dl->nitems; }
const fc_dead_item *fc_dead_letter_item(const fc_dead_letter *dl, size_t i) { return &dl->v[i]; }

const char *fc_dead_letter_class(const fc_dead_letter *dl, size_t i, const char *fallback_cls) {
    return dl->v[i].cls[0] ? dl->v[i].cls : fallback_cls ? fallback_cls : "";
}

size_t fc_dead_letter_select(const fc_dead_letter *dl, const fc_dead_filter *f, unsigned char *sel) {
    size_t n = 0;
    for (size_t i = 0; i < dl->nitems; i++) {
        const char *c = fc_dead_letter_class(dl, i, f->fallback_cls);
        int want = f->cls ? strcmp(c, f->cls) == 0 : !f->skip_cls || strcmp(c, f->skip_cls) != 0;
        sel[i] = want && (f->max < 0 || (long long)n < f->max);
        n += sel[i];
    }
    return n;
}

int fc_dead_letter_positions(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out) {
    int first = 1;
    fc_buf_puts(out, "");
    for (size_t i = 0; i < dl->nitems; i++) {
        if (!sel[i]) continue;
        fc_buf_printf(out, "%s%lld", first ? "" : ",", dl->v[i].position);
        first = 0;
    }
    return fc_buf_err(out);
}

/* in_csv says whether the decimal number pos is one of the comma-separated numbers of csv. */
static int in_csv(const char *csv, long long pos) {
    while (csv && *csv) {
        char *end;
        long long v = strtoll(csv, &end, 10);
        if (end != csv && v == pos && (*end == ',' || *end == '\0')) return 1;
        csv = strchr(csv, ',');
        if (csv) csv++;
    }
    return 0;
}

size_t fc_dead_letter_select_positions(const fc_dead_letter *dl, const char *csv, unsigned char *sel) {
    size_t n = 0;
    for (size_t i = 0; i < dl->nitems; i++) n += sel[i] = (unsigned char)in_csv(csv, dl->v[i].position);
    return n;
}

/* append_json appends o as compact JSON, '/' unescaped, as the rest of the project writes it. */
static int append_json(fc_buf *out, json_object *o) {
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return s ? fc_buf_puts(out, s) : FC_ENOMEM;
}

/* clean_item returns a new object with o's members but "error" and "last_error" (caller puts it). */
static json_object *clean_item(json_object *o) {
    json_object *c = json_object_new_object();
    if (!c) return NULL;
    json_object_object_foreach(o, k, v) {
        if (strcmp(k, "error") == 0 || strcmp(k, "last_error") == 0) continue;
        if (json_object_object_add(c, k, json_object_get(v)) != 0) {
            json_object_put(c);
            return NULL;
        }
    }
    return c;
}

static size_t count_selected(const fc_dead_letter *dl, const unsigned char *sel, int want) {
    size_t n = 0;
    for (size_t i = 0; i < dl->nitems; i++) n += !!sel[i] == want;
    return n;
}

int fc_dead_letter_replacement(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out) {
    if (count_selected(dl, sel, 1) == 0) return FC_EINVAL;
    fc_batch_hdr h = {{0}, dl->batch, 1, 0, 0};
    snprintf(h.job_id, sizeof(h.job_id), "%s", dl->job_id);
    int rc = fc_message_batch_open(out, &h), first = 1;
    for (size_t i = 0; rc == FC_OK && i < dl->nitems; i++) {
        if (!sel[i]) continue;
        json_object *c = clean_item(json_object_array_get_idx(dl->items, i));
        if (!first) rc = fc_buf_puts(out, ",");
        rc = c && rc == FC_OK ? append_json(out, c) : FC_ENOMEM;
        json_object_put(c);
        first = 0;
    }
    return rc == FC_OK ? fc_message_batch_close(out) : rc;
}

int fc_dead_letter_remainder(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out) {
    if (count_selected(dl, sel, 0) == 0) return FC_EINVAL;
    json_object *root = json_object_new_object(), *kept = json_object_new_array();
    int rc = root && kept ? FC_OK : FC_ENOMEM;
    for (size_t i = 0; rc == FC_OK && i < dl->nitems; i++)
        if (!sel[i] && json_object_array_add(kept, json_object_get(json_object_array_get_idx(dl->items, i))) != 0)
            rc = FC_ENOMEM;
    json_object_object_foreach(dl->root, k, v) {
        if (rc != FC_OK) break;
        int is_items = strcmp(k, "items") == 0;
        if (json_object_object_add(root, k, is_items ? kept : json_object_get(v)) != 0) rc = FC_ENOMEM;
        if (is_items) kept = NULL; /* root owns it now, even on failure */
    }
    if (rc == FC_OK) rc = append_json(out, root);
    json_object_put(kept);
    json_object_put(root);
    return rc;
}
