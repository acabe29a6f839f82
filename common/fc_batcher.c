/* Batching items into batch messages under an item and a byte limit. */
#include "fc_batcher.h"

#include "fc_error.h"

#define CLOSE_LEN 2       /* "]}" */
#define HEADER_MAX 256    /* fc_message_batch_open writes less than this for any header */

/* fits_alone checks that an item of n bytes fits in a batch of its own numbered batch: 0, FC_ETOOBIG,
 * or FC_ENOMEM (never reported as FC_ETOOBIG: the item would be rejected for want of memory). */
static int fits_alone(fc_batcher *b, size_t n, long batch) {
    if (n + CLOSE_LEN + HEADER_MAX <= (size_t)b->max_bytes) return FC_OK;
    fc_batch_hdr h = b->hdr;
    fc_buf head = {0};
    h.batch = batch;
    int rc = fc_message_batch_open(&head, &h);
    if (rc == FC_OK && head.len + n + CLOSE_LEN > (size_t)b->max_bytes) rc = FC_ETOOBIG;
    fc_buf_free(&head);
    return rc;
}

static int close_into(fc_batcher *b, fc_closed_batch *out) {
    if (fc_message_batch_close(&b->body) != FC_OK) return FC_ENOMEM;
    out->batch = b->hdr.batch++;
    out->items = b->items;
    out->body = b->body;
    b->last_len = b->body.len;
    b->body = (fc_buf){0};
    b->items = 0;
    return FC_OK;
}

int fc_batcher_fits(fc_batcher *b, const fc_item *it) {
    fc_buf_reset(&b->one);
    if (fc_message_item(&b->one, it, NULL) != FC_OK) return FC_ENOMEM;
    return fits_alone(b, b->one.len, b->hdr.batch);
}

int fc_batcher_add(fc_batcher *b, const fc_item *it, fc_closed_batch *out) {
    fc_buf_reset(&b->one);
    if (fc_message_item(&b->one, it, NULL) != FC_OK) return FC_ENOMEM;
    size_t n = b->one.len;
    int closed = 0, rc;
    if (b->items && (b->items >= b->max_items || b->body.len + 1 + n + CLOSE_LEN > (size_t)b->max_bytes)) {
        if ((rc = fits_alone(b, n, b->hdr.batch + 1)) != FC_OK) return rc; /* the open batch stays open */
        if (close_into(b, out) != FC_OK) return FC_ENOMEM;
        closed = 1;
    } else if (!b->items && (rc = fits_alone(b, n, b->hdr.batch)) != FC_OK) {
        return rc;
    }
    if (!b->items && b->last_len) fc_buf_reserve(&b->body, b->last_len); /* a hint: its failure is sticky */
    rc = b->items ? FC_BUF_LIT(&b->body, ",") : fc_message_batch_open(&b->body, &b->hdr);
    if (rc == FC_OK) rc = fc_buf_append(&b->body, b->one.data, n);
    if (rc != FC_OK) {
        if (closed) fc_buf_free(&out->body); /* nothing is handed out with an error */
        return FC_ENOMEM;
    }
    b->items++;
    return closed;
}

int fc_batcher_finish(fc_batcher *b, fc_closed_batch *out) {
    if (!b->items) return 0;
    return close_into(b, out) == FC_OK ? 1 : FC_ENOMEM;
}

void fc_batcher_free(fc_batcher *b) {
    fc_buf_free(&b->body);
    fc_buf_free(&b->one);
}
