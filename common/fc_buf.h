/* A growable byte buffer, always NUL-terminated, with a sticky error (as hiredis keeps c->err):
 * once an append fails, every later append fails too and leaves the buffer as it was, so a
 * caller may build a whole message and check fc_buf_err (or the last return value) once at the
 * end; a message built after a failed allocation is never mistaken for a complete one. */
#ifndef FC_BUF_H
#define FC_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct fc_buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    int err;    /* 0, or the first error (FC_ENOMEM) of an append since the last reset */
} fc_buf;

/* fc_buf_append copies n bytes of p; returns 0 or the sticky error (FC_ENOMEM). The other
 * appends (puts, printf, reserve) behave the same way. */
int fc_buf_append(fc_buf *b, const void *p, size_t n);
int fc_buf_puts(fc_buf *b, const char *s);
int fc_buf_printf(fc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fc_buf_reserve(fc_buf *b, size_t extra);
/* fc_buf_append_ll appends v in decimal, as printf's "%lld" writes it, without going through printf (the
 * producer writes one per item: vfprintf was a tenth of its CPU). */
int fc_buf_append_ll(fc_buf *b, long long v);
/* FC_BUF_LIT appends a string literal, its length known at compile time (no strlen). Literals only ("" lit
 * refuses anything else): given a pointer, sizeof would measure the pointer. */
#define FC_BUF_LIT(b, lit) fc_buf_append_short((b), "" lit, sizeof(lit) - 1)

/* fc_buf_append_short is fc_buf_append inlined when the bytes fit in the room left: the message encoder
 * appends a dozen short pieces per item, and a call for each was a tenth of the producer's CPU. */
static inline int fc_buf_append_short(fc_buf *b, const char *p, size_t n) {
    if (b->err || b->cap - b->len <= n) return fc_buf_append(b, p, n);
    memcpy(b->data + b->len, p, n); /* n is a constant once inlined from FC_BUF_LIT: a move or two */
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}
/* fc_buf_err returns 0, or the error of the first failed append since the last reset. */
int fc_buf_err(const fc_buf *b);
/* fc_buf_truncate cuts the buffer back to len bytes (<= b->len), e.g. to reopen a closed object. */
void fc_buf_truncate(fc_buf *b, size_t len);
/* fc_buf_reset empties the buffer, clears the error and keeps its memory; fc_buf_free releases it. */
void fc_buf_reset(fc_buf *b);
void fc_buf_free(fc_buf *b);
/* fc_buf_steal returns the data (caller frees; "" if empty), cut to its length, and empties the buffer. */
char *fc_buf_steal(fc_buf *b);

#endif
