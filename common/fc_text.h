/* Cleaning text that comes from outside (API answers, messages, old results) before it is kept or
 * written where a control character would do harm: a card field, a stage-1 string, an Anki TSV
 * field. One set of rules for every place, so a card looks the same whichever path wrote it:
 *  - C0 controls (0x00-0x1f), DEL (0x7f) and C1 controls (U+0080-U+009F) are never copied: an ESC
 *    in a card would reach every terminal that prints the deck and every screen that shows it;
 *  - TAB, LF, CR, VT and FF, which separate words, become one space (FC_TEXT_FIELD) or keep the
 *    TSV's escapes (FC_TEXT_TSV: TAB as \t, LF as \n, CR dropped, VT and FF a space);
 *  - every byte that is not part of well-formed UTF-8 becomes U+FFFD.
 * Pure functions over buffers. */
#ifndef FC_TEXT_H
#define FC_TEXT_H

#include <stddef.h>

#include "fc_buf.h"

enum fc_text_mode {
    FC_TEXT_FIELD, /* one field of one line: TAB, LF, CR, VT, FF become a space */
    FC_TEXT_TSV    /* an Anki TSV field as fc_output writes it: TAB as \t, LF as \n, CR dropped */
};

/* fc_text_utf8_seq returns the length (1 to 4) of the well-formed UTF-8 sequence at s[0..n), n > 0,
 * or 0 if there is none there: a stray continuation byte, a truncated sequence, an overlong form, a
 * surrogate or a value above U+10FFFF. */
size_t fc_text_utf8_seq(const unsigned char *s, size_t n);

/* fc_text_is_control returns 1 if the well-formed sequence s of k bytes (as fc_text_utf8_seq
 * measured it) is a C0 control, DEL or a C1 control, else 0. */
int fc_text_is_control(const unsigned char *s, size_t k);

/* fc_text_is_clean returns 1 if s[0..len) would be copied unchanged in FC_TEXT_FIELD mode (no
 * control character, well-formed UTF-8), else 0. */
int fc_text_is_clean(const char *s, size_t len);

/* fc_text_clean appends s[0..len) (any bytes) to out, cleaned as the mode says. Returns 0 or
 * FC_ENOMEM (out's sticky error). */
int fc_text_clean(fc_buf *out, const char *s, size_t len, int mode);

/* fc_text_clean_dup returns a cleaned copy of s[0..len) (caller frees), NUL-terminated and free of
 * NUL bytes; NULL on allocation failure. */
char *fc_text_clean_dup(const char *s, size_t len, int mode);

#endif
