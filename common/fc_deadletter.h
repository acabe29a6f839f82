/* Dead letters read back: the body of a message in P.dead decoded into its items and their errors,
 * a selection of those items, and the two messages a replay or a partial purge makes of it: the
 * replacement batch (the selected items, attempt 1, errors dropped) and the remainder (the dead letter
 * with only the other items). Pure functions over buffers; no I/O. */
#ifndef FC_DEADLETTER_H
#define FC_DEADLETTER_H

#include <stddef.h>

#include "fc_buf.h"

/* One item of a dead letter. Strings are borrowed from the dead letter, never NULL ("" if absent). */
typedef struct fc_dead_item {
    long long position;
    const char *term;
    const char *type;
    const char *cls;      /* error.class: permanent, retryable, crashed, cancelled, ... */
    int http_status;      /* error.http_status, 0 if none */
    int attempts;         /* error.attempts, 0 if absent */
    const char *message;  /* error.message */
} fc_dead_item;

typedef struct fc_dead_letter fc_dead_letter;

/* fc_dead_letter_parse decodes body (len bytes, not NUL-terminated) as a dead-lettered batch: a schema 1
 * batch message whose items carry an "error" object. Returns 0 with *out (free with
 * fc_dead_letter_free), FC_EPARSE with why when it is not a batch (a poison message: it cannot be
 * replayed), or FC_ENOMEM. */
int fc_dead_letter_parse(const char *body, size_t len, fc_dead_letter **out, char *why, size_t whylen);
void fc_dead_letter_free(fc_dead_letter *dl);

const char *fc_dead_letter_job(const fc_dead_letter *dl);
long fc_dead_letter_batch(const fc_dead_letter *dl);
size_t fc_dead_letter_nitems(const fc_dead_letter *dl);
/* fc_dead_letter_item returns item i (< nitems), borrowed from dl. */
const fc_dead_item *fc_dead_letter_item(const fc_dead_letter *dl, size_t i);

/* fc_dead_letter_select marks in sel (nitems flags) the items whose class is cls (NULL: every item),
 * an item without a class counting as fallback_cls (the dead letter's x-error-class header; may be
 * NULL), at most max of them (max < 0: no limit), in the items' order. Returns how many it marked. */
size_t fc_dead_letter_select(const fc_dead_letter *dl, const char *cls, const char *fallback_cls, long long max,
                             unsigned char *sel);

/* fc_dead_letter_replacement appends to out the batch message that replays the selected items: the same
 * job and batch, "attempt":1, no not_before, each item as it was without "error" and "last_error".
 * Returns 0, FC_EINVAL if nothing is selected, or FC_ENOMEM. */
int fc_dead_letter_replacement(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out);

/* fc_dead_letter_remainder appends to out the dead letter as it was with only the items not selected
 * (their errors kept). Returns 0, FC_EINVAL if every item is selected, or FC_ENOMEM. */
int fc_dead_letter_remainder(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out);

#endif
