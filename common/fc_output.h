/* The job output files: Anki TSV (the columns of FC_CARD_HEADER, a row per card) or JSON Lines (one
 * result item per line), as the producer's --output and flashcard-admin results write them.
 * Pure formatting onto a FILE; the caller opens, syncs and closes it. */
#ifndef FC_OUTPUT_H
#define FC_OUTPUT_H

#include <stdio.h>

/* fc_output_is_jsonl returns 1 if path names a JSON Lines output (it ends in .jsonl), else 0 (TSV). */
int fc_output_is_jsonl(const char *path);

/* fc_output_begin writes what precedes the items: the TSV header line, nothing for JSON Lines.
 * Returns 0 or FC_EIO. */
int fc_output_begin(FILE *out, int jsonl);

/* fc_output_item writes one result item, given as the JSON text of its object (a trailing newline is
 * allowed): on one line (JSON Lines; a raw line break inside becomes a space, raw control characters are
 * dropped, invalid UTF-8 becomes U+FFFD), or as one TSV row per card, each field written by
 * fc_output_tsv_field. An item without cards writes no row (and is said at warn level).
 * Returns 0, FC_EPARSE (item_json is not a JSON object), FC_ENOMEM or FC_EIO. */
int fc_output_item(FILE *out, int jsonl, const char *item_json);

/* fc_output_tsv_field writes s as one TSV field, cleaned by fc_text_clean (FC_TEXT_TSV): tabs and newlines
 * escaped as \t and \n (the convention this file has always had), carriage returns dropped, every other
 * control character (C0, DEL, C1) dropped, invalid UTF-8 replaced by U+FFFD. Returns 0, FC_ENOMEM or FC_EIO. */
int fc_output_tsv_field(FILE *out, const char *s);

#endif
