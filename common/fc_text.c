/* Cleaning outside text: control characters out, separators to spaces or TSV escapes, invalid
 * UTF-8 to U+FFFD. */
#include "fc_text.h"

#include <stdint.h>
#include <string.h>

#include "fc_error.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

size_t fc_text_utf8_seq(const unsigned char *s, size_t n) {
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000}; /* smallest value of each length */
    if (s[0] < 0x80) return 1;
    size_t k = s[0] >= 0xF8 ? 0 : s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (k == 0 || k > n) return 0;
    uint32_t cp = s[0] & (0x7Fu >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    return cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : k;
}

int fc_text_is_control(const unsigned char *s, size_t k) {
    if (k == 1) return s[0] < 0x20 || s[0] == 0x7f;
    return k == 2 && s[0] == 0xc2 && s[1] < 0xa0; /* U+0080..U+009F */
}

int fc_text_is_clean(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0, k; i < len; i += k)
        if (!(k = fc_text_utf8_seq(u + i, len - i)) || fc_text_is_control(u + i, k)) return 0;
    return 1;
}

/* control_text returns what a control byte c (C0 or DEL) becomes in mode: a space, a TSV escape or
 * "" (dropped). */
static const char *control_text(unsigned char c, int mode) {
    if (mode == FC_TEXT_TSV && c == '\t') return "\\t";
    if (mode == FC_TEXT_TSV && c == '\n') return "\\n";
    if (mode == FC_TEXT_TSV && c == '\r') return "";
    if (c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') return " ";
    return "";
}

int fc_text_clean(fc_buf *out, const char *s, size_t len, int mode) {
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0, i = 0, k; /* u[run..i) is clean and not yet copied */
    int rc = fc_buf_reserve(out, len);
    while (rc == FC_OK && i < len) {
        k = fc_text_utf8_seq(u + i, len - i);
        if (k && !fc_text_is_control(u + i, k)) {
            i += k;
            continue;
        }
        rc = fc_buf_append(out, s + run, i - run);
        if (rc == FC_OK && !k) rc = fc_buf_puts(out, REPLACEMENT);
        else if (rc == FC_OK && k == 1) rc = fc_buf_puts(out, control_text(u[i], mode));
        i += k ? k : 1; /* a C1 control (k == 2) is dropped */
        run = i;
    }
    if (rc == FC_OK) rc = fc_buf_append(out, s + run, len - run);
    return rc;
}

char *fc_text_clean_dup(const char *s, size_t len, int mode) {
    fc_buf b = {0};
    if (fc_text_clean(&b, s, len, mode) != FC_OK) {
        fc_buf_free(&b);
        return NULL;
    }
    return fc_buf_steal(&b);
}
