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

/* Which items of a dead letter a command takes. */
typedef struct fc_dead_filter {
    const char *cls;          /* only items of this class; NULL: any class */
    const char *skip_cls;     /* with cls NULL, never items of this class (replay leaves "cancelled"); NULL: none */
    const char *fallback_cls; /* the class of an item without one (the dead letter's x-error-class); may be NULL */
    long long max;            /* at most this many, in the items' order; < 0: no limit */
} fc_dead_filter;

/* fc_dead_letter_class returns item i's error class, or fallback_cls (or "") for an item without one.
 * Borrowed from dl or fallback_cls. */
const char *fc_dead_letter_class(const fc_dead_letter *dl, size_t i, const char *fallback_cls);

/* fc_dead_letter_select marks in sel (nitems flags) the items f selects. Returns how many it marked. */
size_t fc_dead_letter_select(const fc_dead_letter *dl, const fc_dead_filter *f, unsigned char *sel);

/* fc_dead_letter_positions appends to out the positions of the selected items, comma-separated in the
 * items' order ("11,13"; "" when none). Returns 0 or FC_ENOMEM. */
int fc_dead_letter_positions(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out);

/* fc_dead_letter_select_positions marks in sel the items whose position is in csv (as
 * fc_dead_letter_positions writes it). Returns how many it marked. */
size_t fc_dead_letter_select_positions(const fc_dead_letter *dl, const char *csv, unsigned char *sel);

/* fc_dead_letter_replacement appends to out the batch message that replays the selected items: the same
 * job and batch, "attempt":1, no not_before, each item as it was without "error" and "last_error".
 * Returns 0, FC_EINVAL if nothing is selected, or FC_ENOMEM. */
int fc_dead_letter_replacement(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out);

/* fc_dead_letter_remainder appends to out the dead letter as it was with only the items not selected
 * (their errors kept): the same dead letter and selection always give the same bytes, so a remainder
 * published twice can be told a copy. Returns 0, FC_EINVAL if every item is selected, or FC_ENOMEM. */
int fc_dead_letter_remainder(const fc_dead_letter *dl, const unsigned char *sel, fc_buf *out);

#endif
