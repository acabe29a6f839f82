/* Message schema v1: the JSON bodies of batch, result and dead-letter messages.
 * Pure functions over buffers; no I/O. See docs/messages.md for the schema. */
#ifndef FC_MESSAGE_H
#define FC_MESSAGE_H

#include <stddef.h>

#include "fc_buf.h"
#include "fc_item.h"

#define FC_SCHEMA_VERSION 1
#define FC_JOB_ID_MAX 64
#define FC_BATCH_ITEMS_MAX 10000
#define FC_MESSAGE_MAX_BYTES (16L << 20)
#define FC_POSITION_MAX 1000000000000LL      /* an item's position is 1..this */
#define FC_NOT_BEFORE_MAX 4102444800000LL    /* not_before (unix ms) is 0..this (2100-01-01) */

/* The header of a batch message: which job, which batch, which attempt. */
typedef struct fc_batch_hdr {
    char job_id[FC_JOB_ID_MAX + 1];
    long batch;               /* batch number within the job, >= 0 */
    int attempt;              /* 1 for the first attempt */
    long long not_before_ms;  /* unix ms before which the batch must not start (retry jitter); 0 = now */
    int priority;             /* the job's weight in the fair share, 1..FC_PRIORITY_MAX; 0 = absent (default) */
} fc_batch_hdr;

#define FC_PRIORITY_DEFAULT 5
#define FC_PRIORITY_MAX 10

/* A decoded batch message. Owns its items and errors. */
typedef struct fc_batch_msg {
    fc_batch_hdr hdr;
    fc_item *items;
    char **last_error;        /* per item, NULL if none; the error of its previous attempt */
    size_t nitems;
} fc_batch_msg;

/* fc_job_id_valid returns 1 if id is 1..64 characters of A-Z a-z 0-9 - _ . and not "unrouted"
 * (whose results queue name is taken). */
int fc_job_id_valid(const char *id);

/* fc_json_str appends s (UTF-8) to out as a quoted JSON string, escaped byte for byte as json-c
 * writes it with JSON_C_TO_STRING_NOSLASHESCAPE (so bodies built either way are identical);
 * 0 or FC_ENOMEM. */
int fc_json_str(fc_buf *out, const char *s);

/* fc_message_item appends one item as a JSON object: {"position":..,"term":..,"type":..,"extra":{..}}
 * plus "last_error" if last_error is not NULL. */
int fc_message_item(fc_buf *out, const fc_item *it, const char *last_error);

/* fc_message_batch_open appends the start of a batch message up to the items array's "[";
 * append items separated by "," with fc_message_item, then fc_message_batch_close. */
int fc_message_batch_open(fc_buf *out, const fc_batch_hdr *h);
int fc_message_batch_close(fc_buf *out);

/* What an item cost: calls, cache hits and the tokens the API reported. */
typedef struct fc_usage {
    long prompt_tokens, completion_tokens;
    int calls, cache_hits;
} fc_usage;

/* Why an item failed, as a dead letter and the job's failure record carry it. */
typedef struct fc_item_error {
    const char *cls;      /* error class name: permanent, retryable, poison, crashed */
    int http_status;      /* 0 when no HTTP answer */
    int attempts;
    const char *message;
} fc_item_error;

/* fc_message_result_open appends the start of a result message up to the items array's "[":
 * {"schema":1,"job_id":..,"batch":..,"worker":..,"items":[ ; append items separated by ","
 * with fc_message_result_item, then fc_message_batch_close. */
int fc_message_result_open(fc_buf *out, const fc_batch_hdr *h, const char *worker);

/* fc_message_result_item appends one succeeded item: the item's fields, members (the processor's
 * result as JSON object members, ",\"name\":value...", may be "") and "usage". */
int fc_message_result_item(fc_buf *out, const fc_item *it, const char *members, const fc_usage *u);

/* fc_message_failed_item appends one failed item of a dead letter: the item's fields and
 * "error":{"class","http_status","attempts","message"}. */
int fc_message_failed_item(fc_buf *out, const fc_item *it, const fc_item_error *e);

/* An item salvaged from a message that could not be decoded as a batch. */
typedef struct fc_salvaged {
    long long position;
    char term[128]; /* "" if absent; cut at a character boundary */
} fc_salvaged;

/* fc_message_salvage reads what it can of a message that fc_message_decode_batch refused: the
 * job id (valid per fc_job_id_valid) and the position (in 1..FC_POSITION_MAX) and term of every item that has one, so
 * their job can count them as failed. Returns 0 with *items (caller frees; NULL when *n is 0),
 * or FC_EPARSE when the message names no valid job id. */
int fc_message_salvage(const char *body, size_t len, char job_id[FC_JOB_ID_MAX + 1], fc_salvaged **items,
                       size_t *n);

/* fc_message_batch_id writes the message id of a batch: "<job>-<batch>" for attempt 1,
 * "<job>-<batch>-a<attempt>-<suffix>" for later ones (suffix tells continuations apart). */
void fc_message_batch_id(char *out, size_t outlen, const fc_batch_hdr *h, const char *suffix);

/* fc_message_decode_batch validates and decodes a batch message: at most FC_MESSAGE_MAX_BYTES, strict JSON
 * of valid UTF-8 nested at most 32 deep, schema 1, a job id valid per fc_job_id_valid (so no Redis key of
 * another job can be named through it), batch, attempt and not_before in range, 1..FC_BATCH_ITEMS_MAX items
 * each with a position in 1..FC_POSITION_MAX (no two the same) and a non-empty term. Returns 0 (free with
 * fc_batch_msg_free) or FC_EPARSE/FC_ETOOBIG/FC_ENOMEM with a precise reason in why (our own words: no text
 * of the message is quoted in it). */
int fc_message_decode_batch(const char *body, size_t len, fc_batch_msg *out, char *why, size_t whylen);
void fc_batch_msg_free(fc_batch_msg *m);

#endif
