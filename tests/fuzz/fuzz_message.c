/* Fuzz target of the batch message codec (fc_message.c): any bytes go to fc_message_decode_batch and
 * fc_message_salvage. A decoded batch must be what fc_message.h promises (valid job id, counts and ranges),
 * must survive the round trip decode(encode(decode(x))) == decode(x), and salvage must find the same job id
 * and positions in it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_buf.h"
#include "fc_error.h"
#include "fc_message.h"
#include "fuzz_check.h"

static void check_batch(const fc_batch_msg *m) {
    FUZZ_CHECK(fc_job_id_valid(m->hdr.job_id), "job id '%s'", m->hdr.job_id);
    FUZZ_CHECK(m->hdr.batch >= 0 && m->hdr.batch <= (1L << 40), "batch %ld", m->hdr.batch);
    FUZZ_CHECK(m->hdr.attempt >= 1 && m->hdr.attempt <= 1000, "attempt %d", m->hdr.attempt);
    FUZZ_CHECK(m->nitems >= 1 && m->nitems <= FC_BATCH_ITEMS_MAX && m->items && m->last_error, "nitems %zu",
               m->nitems);
    FUZZ_CHECK(m->hdr.not_before_ms >= 0 && m->hdr.not_before_ms <= FC_NOT_BEFORE_MAX, "not_before %lld",
               m->hdr.not_before_ms);
    for (size_t i = 0; i < m->nitems; i++) {
        const fc_item *it = &m->items[i];
        FUZZ_CHECK(it->position >= 1 && it->position <= FC_POSITION_MAX, "items[%zu] position %lld", i, it->position);
        for (size_t j = 0; j < i && m->nitems <= 512; j++) /* quadratic: only on small batches */
            FUZZ_CHECK(m->items[j].position != it->position, "position %lld twice", it->position);
        FUZZ_CHECK(it->term && *it->term && it->type, "items[%zu] term/type", i);
        for (size_t k = 0; k < it->nextra; k++)
            FUZZ_CHECK(it->extra[k].name && it->extra[k].value, "items[%zu] extra %zu", i, k);
    }
}

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

/* same_batch says whether two decoded batches are equal field by field; writes the first difference. */
static int same_batch(const fc_batch_msg *a, const fc_batch_msg *b, char *diff, size_t n) {
    if (strcmp(a->hdr.job_id, b->hdr.job_id) || a->hdr.batch != b->hdr.batch || a->hdr.attempt != b->hdr.attempt ||
        a->hdr.not_before_ms != b->hdr.not_before_ms || a->nitems != b->nitems)
        return snprintf(diff, n, "header or item count (%zu, %zu)", a->nitems, b->nitems), 0;
    for (size_t i = 0; i < a->nitems; i++) {
        const fc_item *x = &a->items[i], *y = &b->items[i];
        if (x->position != y->position || strcmp(x->term, y->term) || strcmp(x->type, y->type) ||
            !str_eq(a->last_error[i], b->last_error[i]) || x->nextra != y->nextra)
            return snprintf(diff, n, "items[%zu] (extras %zu, %zu)", i, x->nextra, y->nextra), 0;
        for (size_t k = 0; k < x->nextra; k++)
            if (strcmp(x->extra[k].name, y->extra[k].name) || strcmp(x->extra[k].value, y->extra[k].value))
                return snprintf(diff, n, "items[%zu].extra[%zu] '%s'", i, k, x->extra[k].name), 0;
    }
    return 1;
}

static void round_trip(const fc_batch_msg *m) {
    fc_buf out = {0};
    int rc = fc_message_batch_open(&out, &m->hdr);
    for (size_t i = 0; rc == FC_OK && i < m->nitems; i++) {
        if (i) rc = fc_buf_puts(&out, ",");
        if (rc == FC_OK) rc = fc_message_item(&out, &m->items[i], m->last_error[i]);
    }
    if (rc == FC_OK) rc = fc_message_batch_close(&out);
    FUZZ_CHECK(rc == FC_OK, "encode: %s", fc_strerror(rc));
    fc_batch_msg again;
    char why[256] = "", diff[128] = "";
    rc = fc_message_decode_batch(out.data, out.len, &again, why, sizeof(why));
    FUZZ_CHECK(rc == FC_OK, "re-encoded batch refused: %s\n%s", why, out.data);
    FUZZ_CHECK(same_batch(m, &again, diff, sizeof(diff)), "round trip differs at %s\n%s", diff, out.data);
    fc_batch_msg_free(&again);
    fc_buf_free(&out);
}

static void check_salvage(const uint8_t *data, size_t size, const fc_batch_msg *m) {
    char job[FC_JOB_ID_MAX + 1];
    fc_salvaged *items = NULL;
    size_t n = 0;
    int rc = fc_message_salvage((const char *)data, size, job, &items, &n);
    if (rc == FC_OK) {
        FUZZ_CHECK(fc_job_id_valid(job), "salvaged job id '%s'", job);
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(items[i].position >= 1 && items[i].position <= FC_POSITION_MAX, "salvaged position %lld",
                       items[i].position);
            FUZZ_CHECK(memchr(items[i].term, '\0', sizeof(items[i].term)), "salvaged term unterminated");
        }
    } else {
        FUZZ_CHECK(rc == FC_EPARSE && !items && n == 0, "salvage rc %d", rc);
    }
    if (m) {
        FUZZ_CHECK(rc == FC_OK && strcmp(job, m->hdr.job_id) == 0 && n == m->nitems,
                   "salvage of a good batch: rc %d, %zu of %zu items", rc, n, m->nitems);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(items[i].position == m->items[i].position, "salvaged items[%zu] position", i);
    }
    free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fc_batch_msg m;
    char why[256];
    memset(why, 'x', sizeof(why));
    int rc = fc_message_decode_batch((const char *)data, size, &m, why, sizeof(why));
    if (rc == FC_OK) {
        check_batch(&m);
        round_trip(&m);
        check_salvage(data, size, &m);
        fc_batch_msg_free(&m);
        return 0;
    }
    FUZZ_CHECK(rc == FC_EPARSE || rc == FC_ETOOBIG, "decode rc %d", rc);
    FUZZ_CHECK(memchr(why, '\0', sizeof(why)) && *why, "no reason");
    FUZZ_CHECK(m.nitems == 0 && !m.items && !m.last_error, "failed decode left items");
    check_salvage(data, size, NULL);
    return 0;
}
