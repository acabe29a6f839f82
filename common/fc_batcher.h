/* Batching: items become batch messages of at most max_items items and max_bytes bytes (the
 * whole JSON body, as published). Pure: no I/O; the caller publishes the batches it is handed.
 *
 *   fc_batcher b = {.max_items = 100, .max_bytes = 262144, .hdr = {...}};
 *   while (next item) {
 *       int r = fc_batcher_add(&b, &item, &closed);   // 1: closed holds the previous batch
 *       if (r == FC_ETOOBIG) reject the item;
 *   }
 *   if (fc_batcher_finish(&b, &closed)) publish the last one;
 *   fc_batcher_free(&b);
 */
#ifndef FC_BATCHER_H
#define FC_BATCHER_H

#include "fc_buf.h"
#include "fc_item.h"
#include "fc_message.h"

typedef struct fc_batcher {
    long max_items;      /* BATCH_SIZE, >= 1 */
    long max_bytes;      /* BATCH_MAX_BYTES */
    fc_batch_hdr hdr;    /* of the batch being built; hdr.batch counts up as batches close */
    fc_buf body;         /* the batch being built */
    long items;          /* items in it */
    fc_buf one;          /* scratch: the item being added */
    size_t last_len;     /* bytes of the last batch closed: the next one reserves that much at once rather
                          * than growing from 64 bytes by doubling (a copy of the batch each time) */
} fc_batcher;

/* A closed batch: its number in the job, its item count and its message. */
typedef struct fc_closed_batch {
    long batch;
    long items;
    fc_buf body;         /* the caller takes it (fc_buf_steal) or frees it */
} fc_closed_batch;

/* fc_batcher_add adds it to the batch being built. When that batch cannot take it (max_items
 * reached, or the message would pass max_bytes) it is closed into *out first and 1 is
 * returned; else 0. FC_ETOOBIG: the item alone makes a message over max_bytes (nothing
 * changes). FC_ENOMEM: out of memory, never reported as FC_ETOOBIG; nothing is handed out in
 * *out, and the batcher is left unusable (stop, or fc_batcher_free it). */
int fc_batcher_add(fc_batcher *b, const fc_item *it, fc_closed_batch *out);

/* fc_batcher_fits checks that it fits in a batch of its own, without adding it (--strict's check):
 * 0, FC_ETOOBIG or FC_ENOMEM. */
int fc_batcher_fits(fc_batcher *b, const fc_item *it);

/* fc_batcher_finish closes the batch being built into *out; returns 1, 0 if it is empty, or
 * FC_ENOMEM. */
int fc_batcher_finish(fc_batcher *b, fc_closed_batch *out);

/* fc_batcher_free frees the buffers (not the fc_batcher itself). */
void fc_batcher_free(fc_batcher *b);

#endif
