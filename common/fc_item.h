/* A vocabulary item: the unit of work that travels from the dataset to the results. */
#ifndef FC_ITEM_H
#define FC_ITEM_H

#include <stddef.h>

typedef struct fc_field {
    char *name;  /* owned */
    char *value; /* owned, UTF-8 */
} fc_field;

typedef struct fc_item {
    long long position; /* >= 1, unique within a job */
    char *term;         /* owned, non-empty UTF-8 */
    char *type;         /* owned, may be "" */
    fc_field *extra;    /* owned array of other columns, in input order */
    size_t nextra;
    long line;          /* line in the source dataset (1-based), 0 if unknown */
} fc_item;

/* fc_item_clear frees what the item owns and zeroes it; accepts a zeroed item. */
void fc_item_clear(fc_item *it);

/* fc_item_add_extra appends a copy of name/value; returns 0 or FC_ENOMEM. */
int fc_item_add_extra(fc_item *it, const char *name, const char *value);

#endif
