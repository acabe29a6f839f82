/* Writing result items as Anki TSV rows or JSON Lines. */
#include "fc_output.h"

#include <json-c/json.h>
#include <string.h>

#include "fc_error.h"
#include "fc_log.h"
#include "fc_pipeline.h"

int fc_output_is_jsonl(const char *path) {
    size_t n = strlen(path);
    return n > 6 && strcmp(path + n - 6, ".jsonl") == 0;
}

int fc_output_begin(FILE *out, int jsonl) {
    if (jsonl) return FC_OK;
    return fputs(FC_CARD_HEADER "\n", out) == EOF ? FC_EIO : FC_OK;
}

void fc_output_tsv_field(FILE *out, const char *s) {
    for (; *s; s++) {
        if (*s == '\t') fputs("\\t", out);
        else if (*s == '\n') fputs("\\n", out);
        else if (*s != '\r') fputc(*s, out);
    }
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
            fc_output_tsv_field(out, text);
        }
        fputc('\n', out);
    }
    return FC_OK;
}

int fc_output_item(FILE *out, int jsonl, const char *item_json) {
    size_t n = strlen(item_json);
    if (jsonl) {
        int bad = fputs(item_json, out) == EOF || ((n == 0 || item_json[n - 1] != '\n') && fputc('\n', out) == EOF);
        return bad ? FC_EIO : FC_OK;
    }
    json_object *item = json_tokener_parse(item_json);
    int rc = item && json_object_is_type(item, json_type_object) ? write_cards(out, item) : FC_EPARSE;
    json_object_put(item);
    if (rc == FC_OK && ferror(out)) rc = FC_EIO;
    return rc;
}
