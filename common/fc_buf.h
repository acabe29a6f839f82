/* A growable byte buffer, always NUL-terminated. */
#ifndef FC_BUF_H
#define FC_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct fc_buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
} fc_buf;

/* fc_buf_append copies n bytes of p; returns 0 or FC_ENOMEM. */
int fc_buf_append(fc_buf *b, const void *p, size_t n);
int fc_buf_puts(fc_buf *b, const char *s);
int fc_buf_printf(fc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fc_buf_reserve(fc_buf *b, size_t extra);
/* fc_buf_reset empties the buffer and keeps its memory; fc_buf_free releases it. */
void fc_buf_reset(fc_buf *b);
void fc_buf_free(fc_buf *b);
/* fc_buf_steal returns the data (caller frees; "" if empty) and empties the buffer. */
char *fc_buf_steal(fc_buf *b);

#endif
