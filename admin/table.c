/* Terminal tables: every column as wide as its widest cell, measured in display columns (Hangul and
 * other wide characters take two), long cells cut at a character boundary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"

#define MAX_COLS 16

struct admin_table {
    int ncols;
    char *head[MAX_COLS];
    int maxw[MAX_COLS];   /* 0 = no cut */
    int right[MAX_COLS];
    char **cells;         /* rows * ncols, owned */
    size_t rows, cap;
};

/* utf8_next decodes the character at s (moving *len bytes), or takes one byte of a bad sequence. */
static unsigned utf8_next(const unsigned char *s, int *len) {
    if (s[0] < 0x80) return *len = 1, s[0];
    int n = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 1;
    unsigned c = n == 1 ? s[0] : s[0] & (0x3F >> (n - 1));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return *len = 1, s[0];
        c = c << 6 | (s[i] & 0x3F);
    }
    *len = n;
    return c;
}

/* char_width: 2 for East Asian wide characters (Hangul, CJK, fullwidth forms), 0 for combining jamo, else 1. */
static int char_width(unsigned c) {
    if (c >= 0x1160 && c <= 0x11FF) return 0;
    if ((c >= 0x1100 && c <= 0x115F) || (c >= 0x2E80 && c <= 0xA4CF) || (c >= 0xAC00 && c <= 0xD7A3) ||
        (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF60) ||
        (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x1F300 && c <= 0x1FAFF) || (c >= 0x20000 && c <= 0x3FFFD))
        return 2;
    return 1;
}

int admin_display_width(const char *s) {
    int w = 0, len;
    for (const unsigned char *p = (const unsigned char *)s; *p; p += len) w += char_width(utf8_next(p, &len));
    return w;
}

/* cut returns a copy of s cut to at most maxw display columns ("..." marking the cut), control
 * characters (newlines, tabs) shown as spaces. */
static char *cut(const char *s, int maxw) {
    size_t n = strlen(s);
    char *out = malloc(n + 4);
    if (!out) return NULL;
    int w = 0, len, full = maxw <= 0 || admin_display_width(s) <= maxw;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p += len) {
        int cw = char_width(utf8_next(p, &len));
        if (!full && w + cw > maxw - 3) break;
        if (*p < 0x20) out[o++] = ' ';
        else memcpy(out + o, p, (size_t)len), o += (size_t)len;
        w += cw;
    }
    if (!full) memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
    return out;
}

admin_table *admin_table_new(int ncols, const char *const *headers) {
    admin_table *t = calloc(1, sizeof(*t));
    if (!t || ncols > MAX_COLS) {
        free(t);
        return NULL;
    }
    t->ncols = ncols;
    for (int i = 0; i < ncols; i++) t->head[i] = strdup(headers[i]);
    return t;
}

void admin_table_max_width(admin_table *t, int col, int maxw) {
    if (t && col < t->ncols) t->maxw[col] = maxw;
}

void admin_table_right(admin_table *t, int col) {
    if (t && col < t->ncols) t->right[col] = 1;
}

void admin_table_row(admin_table *t, const char *const *cells) {
    if (!t) return;
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*c));
        if (!c) return;
        t->cells = c;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncols; i++)
        t->cells[t->rows * (size_t)t->ncols + (size_t)i] = cut(cells[i] ? cells[i] : "-", t->maxw[i]);
    t->rows++;
}

size_t admin_table_rows(const admin_table *t) { return t ? t->rows : 0; }

static void print_cell(const char *s, int width, int right, int last) {
    int pad = width - admin_display_width(s ? s : "");
    if (right) printf("%*s", pad > 0 ? pad : 0, "");
    fputs(s ? s : "", stdout);
    if (!right && !last) printf("%*s", pad > 0 ? pad : 0, "");
    if (!last) fputs("  ", stdout);
}

void admin_table_print(const admin_table *t) {
    if (!t) return;
    int w[MAX_COLS];
    for (int i = 0; i < t->ncols; i++) {
        w[i] = admin_display_width(t->head[i] ? t->head[i] : "");
        for (size_t r = 0; r < t->rows; r++) {
            const char *c = t->cells[r * (size_t)t->ncols + (size_t)i];
            int cw = c ? admin_display_width(c) : 0;
            if (cw > w[i]) w[i] = cw;
        }
    }
    for (int i = 0; i < t->ncols; i++) print_cell(t->head[i], w[i], t->right[i], i == t->ncols - 1);
    fputc('\n', stdout);
    for (size_t r = 0; r < t->rows; r++) {
        for (int i = 0; i < t->ncols; i++)
            print_cell(t->cells[r * (size_t)t->ncols + (size_t)i], w[i], t->right[i], i == t->ncols - 1);
        fputc('\n', stdout);
    }
}

void admin_table_free(admin_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->rows * (size_t)t->ncols; i++) free(t->cells[i]);
    for (int i = 0; i < t->ncols; i++) free(t->head[i]);
    free(t->cells);
    free(t);
}
