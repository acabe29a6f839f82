/* Writing result items as Anki TSV rows or JSON Lines. */
#include "fc_output.h"

#include <json-c/json.h>
#include <string.h>

#include "fc_buf.h"
#include "fc_error.h"
#include "fc_log.h"
#include "fc_pipeline.h"
#include "fc_text.h"

int fc_output_is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n > 6 && strcmp(path + n - 6, ".jsonl") == 0;
}

int fc_output_begin(FILE *out, int jsonl) {
    if (jsonl) return FC_OK;
    return fputs(FC_CARD_HEADER "\n", out) == EOF ? FC_EIO : FC_OK;
}

/* Why clean here too: the worker already cleans every card field it makes (fc_pipeline), but this writer
 * also writes results made by older workers, results fetched late by flashcard-admin and items of replayed
 * letters; whatever they hold, no control character reaches the file, a field stays one field and a card one
 * line. */
int fc_output_tsv_field(FILE *out, const char *s) {
    fc_buf b = {0};
    int rc = fc_text_clean(&b, s, strlen(s), FC_TEXT_TSV);
    if (rc == FC_OK && b.len && fwrite(b.data, 1, b.len, out) != b.len) rc = FC_EIO;
    fc_buf_free(&b);
    return rc;
}

/* str_of returns o's member key as text ("" if absent), borrowed from o; NULL when out of memory. */
static const char *str_of(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v)) return "";
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : json_object_to_json_string(v);
}

/* write_cards writes a row per card of item, in the columns of FC_CARD_HEADER: the item's position
 * and term, then the card's own columns. */
static int write_cards(FILE *out, json_object *item) {
    json_object *cards;
    if (!json_object_object_get_ex(item, "cards", &cards) || !json_object_is_type(cards, json_type_array)) {
        fc_warn("the result at position %s has no cards", str_of(item, "position"));
        return FC_OK;
    }
    for (size_t i = 0; i < json_object_array_length(cards); i++) {
        json_object *card = json_object_array_get_idx(cards, i);
        for (int k = 0; k < FC_CARD_NFIELDS; k++) {
            json_object *from = k == FC_CARD_POSITION || k == FC_CARD_TERM ? item : card;
            const char *text = str_of(from, fc_card_columns[k]);
            if (!text) return FC_ENOMEM;
            if (k) fputc('\t', out);
            int rc = fc_output_tsv_field(out, text);
            if (rc != FC_OK) return rc;
        }
        fputc('\n', out);
    }
    return FC_OK;
}

/* write_line writes item_json (its trailing newline left out) as one JSON Lines line, cleaned by fc_text_clean:
 * a raw line break (only valid between tokens) becomes a space, so the item stays on its line; raw control
 * characters (invalid JSON anyway) are dropped and invalid UTF-8 becomes U+FFFD. Escaped ones (\u001b) stay:
 * they are JSON text, and a reader decodes them as data. */
static int write_line(FILE *out, const char *item_json) {
    size_t n = strlen(item_json);
    while (n > 0 && (item_json[n - 1] == '\n' || item_json[n - 1] == '\r')) n--;
    fc_buf b = {0};
    int rc = fc_text_clean(&b, item_json, n, FC_TEXT_FIELD);
    if (rc == FC_OK) rc = fc_buf_append(&b, "\n", 1);
    if (rc == FC_OK && fwrite(b.data, 1, b.len, out) != b.len) rc = FC_EIO;
    fc_buf_free(&b);
    return rc;
}

int fc_output_item(FILE *out, int jsonl, const char *item_json) {
    if (jsonl) return write_line(out, item_json);
    json_object *item = json_tokener_parse(item_json);
    int rc = item && json_object_is_type(item, json_type_object) ? write_cards(out, item) : FC_EPARSE;
    json_object_put(item);
    if (rc == FC_OK && ferror(out)) rc = FC_EIO;
    return rc;
}
