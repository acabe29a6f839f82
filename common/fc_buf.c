/* A growable byte buffer. */
#include "fc_buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_error.h"

int fc_buf_reserve(fc_buf *b, size_t extra) {
    if (b->err) return b->err;
    if (b->len + extra + 1 <= b->cap) return FC_OK;
    if (extra > SIZE_MAX / 4 - b->len) return b->err = FC_ENOMEM;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return b->err = FC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return FC_OK;
}

int fc_buf_append(fc_buf *b, const void *p, size_t n) {
    /* the room test first: most appends fit, and fc_buf_reserve is a call the compiler keeps out of line */
    if ((b->err || b->cap - b->len <= n) && fc_buf_reserve(b, n) != FC_OK) return FC_ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return FC_OK;
}

int fc_buf_puts(fc_buf *b, const char *s) { return fc_buf_append(b, s, strlen(s)); }

int fc_buf_append_ll(fc_buf *b, long long v) {
    char tmp[24]; /* 20 digits of 2^64 and a sign */
    char *end = tmp + sizeof(tmp), *p = end;
    /* unsigned, so that LLONG_MIN negates without overflow */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0) *--p = '-';
    return fc_buf_append(b, p, (size_t)(end - p));
}

int fc_buf_printf(fc_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 && !b->err) b->err = FC_ENOMEM;
    if (n < 0 || fc_buf_reserve(b, (size_t)n) != FC_OK) return b->err;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return FC_OK;
}

int fc_buf_err(const fc_buf *b) { return b->err; }

void fc_buf_truncate(fc_buf *b, size_t len) {
    if (len > b->len) return;
    b->len = len;
    if (b->data) b->data[len] = '\0';
}

void fc_buf_reset(fc_buf *b) {
    b->len = 0;
    b->err = 0;
    if (b->data) b->data[0] = '\0';
}

void fc_buf_free(fc_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}

char *fc_buf_steal(fc_buf *b) {
    char *p = b->data ? b->data : strdup("");
    /* A stolen string is often kept (a request in flight, a stage's result): give back the doubling's slack. */
    if (b->data && b->cap - b->len > 64) {
        char *q = realloc(p, b->len + 1);
        if (q) p = q;
    }
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
    return p;
}
