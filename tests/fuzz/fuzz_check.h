/* Invariant checks shared by the fuzz targets: a violated invariant prints what and where, then aborts, which
 * libFuzzer reports as a crash (and the replay driver as a failed test). */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)                                                           \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                               \
            fprintf(stderr, "\n");                                                      \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* fuzz_utf8_ok returns 1 if s[0..n) is well-formed UTF-8 (no overlong form, surrogate or value above
 * U+10FFFF), NUL bytes allowed. */
static inline int fuzz_utf8_ok(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], k, cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xF0 && c <= 0xF4) k = 4, cp = c & 7, min = 0x10000;
        else if (c >= 0xE0 && c <= 0xEF) k = 3, cp = c & 15, min = 0x800;
        else if (c >= 0xC2 && c <= 0xDF) k = 2, cp = c & 31, min = 0x80;
        else return 0;
        if (n - i < k) return 0;
        for (unsigned j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k;
    }
    return 1;
}

/* fuzz_str_ok returns 1 if s is a NUL-terminated string of well-formed UTF-8 within max bytes. */
static inline int fuzz_str_ok(const char *s, size_t max) {
    size_t n = strnlen(s, max + 1);
    return n <= max && fuzz_utf8_ok(s, n);
}

/* fuzz_line_ok returns 1 if s holds no control character (one line, fit for a log or a header). */
static inline int fuzz_line_ok(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 0;
    return 1;
}

#endif
