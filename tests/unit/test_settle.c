/* Unit tests of a delivery's life in the worker (worker/batch.c), without a broker or Redis:
 * the broker's publish, confirm and ack and Redis's pipelines are replaced (--wrap, see
 * wrap_test_settle.txt) by fakes that record what the worker sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "fc_error.h"
#include "worker.h"

/* ---- fakes ----------------------------------------------------------------------- */

#define MAX_PUBS 64

typedef struct pub {
    char exchange[FC_NAME_MAX], id[256];
    char *body;
    size_t len;
    uint64_t seq;
} pub;

static struct fake {
    pub pubs[MAX_PUBS];
    int npubs;
    uint64_t next_seq;
    int acks, nacks;
    int blocked;
    int full;             /* the socket's send buffer has no room */
    int mgets;            /* cache lookups */
    int cache_hits;       /* answer every MGET key with a cached answer */
    int cancelled;        /* answer HEXISTS of a job's cancelled_ms with 1 */
    const char *recorded_ok; /* the position HMGET finds recorded as ok, or NULL */
    int records;          /* record pipelines */
    int multis;           /* MULTIs sent before them */
    char recorded[4096];  /* the outcome HSET of the last record: "pos=state " ... */
    char in_retry[1024];  /* the retry HSET of the last record: "pos=attempt " ... */
} F;

int __wrap_fc_amqp_ok(const fc_amqp *a) { (void)a; return 1; }
int __wrap_fc_amqp_blocked(const fc_amqp *a) { (void)a; return F.blocked; }
int __wrap_fc_amqp_writable(const fc_amqp *a, size_t len) { (void)a, (void)len; return !F.full; }
int __wrap_fc_amqp_ack(fc_amqp *a, uint64_t tag) { (void)a, (void)tag; F.acks++; return FC_OK; }
int __wrap_fc_amqp_nack(fc_amqp *a, uint64_t tag, int requeue) { (void)a, (void)tag, (void)requeue; F.nacks++; return FC_OK; }
void __wrap_fc_http_cancel(fc_http *h, void *ud) { (void)h, (void)ud; }
void __wrap_fc_http_cancel_all(fc_http *h, void (*cb)(void *, void *), void *arg) { (void)h, (void)cb, (void)arg; }

int __wrap_fc_amqp_publish(fc_amqp *a, const char *exchange, const char *key, const fc_amqp_props *p,
                           const void *body, size_t len, uint64_t *seq) {
    (void)a, (void)key;
    assert_true(F.npubs < MAX_PUBS);
    pub *q = &F.pubs[F.npubs++];
    snprintf(q->exchange, sizeof(q->exchange), "%s", exchange);
    snprintf(q->id, sizeof(q->id), "%s", p->message_id);
    q->body = malloc(len + 1);
    memcpy(q->body, body, len);
    q->body[len] = '\0';
    q->len = len;
    *seq = q->seq = ++F.next_seq;
    return FC_OK;
}

int __wrap_fc_redis_command(fc_redis *r, fc_reply *out, int argc, const char **argv, const size_t *lens) {
    (void)r, (void)lens;
    if (strcmp(argv[0], "MULTI") == 0 || strcmp(argv[0], "DISCARD") == 0) { /* a record's transaction */
        F.multis += argv[0][0] == 'M';
        return FC_OK;
    }
    if (strcmp(argv[0], "HEXISTS") == 0) { /* is the job cancelled? */
        memset(out, 0, sizeof(*out));
        out->type = FC_REPLY_INT;
        out->integer = F.cancelled;
        return FC_OK;
    }
    if (strcmp(argv[0], "HMGET") == 0) { /* a poison message's positions: what is recorded */
        memset(out, 0, sizeof(*out));
        out->type = FC_REPLY_ARRAY;
        out->nelem = (size_t)argc - 2;
        out->elem = calloc(out->nelem, sizeof(*out->elem));
        for (size_t i = 0; i < out->nelem; i++)
            if (F.recorded_ok && strcmp(argv[i + 2], F.recorded_ok) == 0)
                out->elem[i].type = FC_REPLY_STR, out->elem[i].str = strdup("ok"), out->elem[i].len = 2;
        return FC_OK;
    }
    assert_string_equal(argv[0], "MGET");
    F.mgets++;
    out->type = FC_REPLY_ARRAY;
    out->nelem = (size_t)argc - 1;
    out->elem = calloc(out->nelem, sizeof(*out->elem));
    for (size_t i = 0; i < out->nelem; i++) {
        out->elem[i].type = F.cache_hits ? FC_REPLY_STR : FC_REPLY_NIL;
        if (F.cache_hits) out->elem[i].str = strdup("{\"cached\":true}"), out->elem[i].len = 15;
    }
    return FC_OK;
}

int __wrap_fc_redis_pipeline(fc_redis *r, fc_reply *replies, size_t n, const int *argcs, const char ***argvs,
                             const size_t **lens) {
    (void)r, (void)replies, (void)lens;
    F.records++;
    assert_int_equal(F.multis, F.records); /* each record is a transaction, opened first */
    assert_string_equal(argvs[n - 1][0], "EXEC");
    F.recorded[0] = F.in_retry[0] = '\0';
    for (size_t c = 0; c < n; c++) {
        if (strcmp(argvs[c][0], "HSET") != 0) continue;
        char *into = strstr(argvs[c][1], ":outcome") ? F.recorded : strstr(argvs[c][1], ":retry") ? F.in_retry : NULL;
        size_t size = into == F.recorded ? sizeof(F.recorded) : sizeof(F.in_retry);
        for (int i = 2; into && i + 1 < argcs[c]; i += 2) {
            size_t l = strlen(into);
            snprintf(into + l, size - l, "%s=%s ", argvs[c][i], argvs[c][i + 1]);
        }
    }
    return FC_OK;
}

/* A processor of two stages whose answers are any JSON text. */
static char *fake_request(const void *self, int stage, const fc_item *it, const char *prev, char **user) {
    (void)self, (void)prev;
    char buf[64];
    snprintf(buf, sizeof(buf), "%d:%lld", stage, it->position);
    *user = strdup(buf);
    return strdup(buf);
}
static void fake_key(const void *self, int stage, const char *user, char key[FC_SHA256_HEX_LEN + 1]) {
    (void)self;
    snprintf(key, FC_SHA256_HEX_LEN + 1, "%064d", (int)(stage * 1000 + strlen(user)));
}
static int fake_answer(const void *self, int stage, const char *content, size_t len, char **result, char *why,
                       size_t whylen) {
    (void)self, (void)stage, (void)why, (void)whylen;
    *result = strndup(content, len);
    return FC_OK;
}
static int fake_result(const void *self, char *const *results, fc_buf *out) {
    (void)self;
    return fc_buf_printf(out, ",\"r\":%s", results[1]);
}

/* ---- the worker under test ---------------------------------------------------------- */

static fc_config cfg;
static worker W;
static long delays[1] = {5000};

static int setup(void **state) {
    (void)state;
    memset(&F, 0, sizeof(F));
    memset(&cfg, 0, sizeof(cfg));
    cfg.queue_prefix = (char *)"t";
    cfg.delivery_limit = 3;
    cfg.max_attempts = 5;
    cfg.retry_delays[0] = delays[0];
    cfg.nretry_delays = 1;
    cfg.cache_ttl_ms = 60000;
    cfg.worker_count = 4;
    memset(&W, 0, sizeof(W));
    W.cfg = &cfg;
    W.m = calloc(1, sizeof(*W.m));
    snprintf(W.name, sizeof(W.name), "test:1");
    snprintf(W.queue, sizeof(W.queue), "t.batches");
    W.proc = (fc_processor){"fake", 2, NULL, fake_request, fake_key, fake_answer, fake_result};
    gate_conf gc = {30000, 300000, 120000, {10, 0, 0, 30000}};
    assert_int_equal(gate_init(&W.gate, &gc), FC_OK);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    batch_drop_all(&W);
    gate_free(&W.gate);
    free(W.m);
    for (int i = 0; i < F.npubs; i++) free(F.pubs[i].body);
    for (size_t i = 0; i < W.ncache_out; i++) free(W.cache_out[i].key), free(W.cache_out[i].value);
    free(W.cache_out);
    return 0;
}

/* deliver hands the worker a batch of n items (positions 1..n, each with extra_bytes of extra
 * text) of the given attempt, on its delivery_count-th redelivery. */
static void deliver(int n, int attempt, long delivery_count, long long not_before_ms, size_t extra_bytes) {
    fc_buf b = {0};
    fc_batch_hdr h = {"job-1", 7, attempt, not_before_ms, 0};
    char *extra = calloc(extra_bytes + 1, 1);
    memset(extra, 'x', extra_bytes);
    fc_message_batch_open(&b, &h);
    for (int i = 1; i <= n; i++) {
        fc_item it = {i, (char *)"term", (char *)"noun", NULL, 0, 0};
        if (extra_bytes) fc_item_add_extra(&it, "Notes", extra);
        if (i > 1) fc_buf_puts(&b, ",");
        fc_message_item(&b, &it, NULL);
        fc_item_clear(&(fc_item){0, NULL, NULL, it.extra, it.nextra, 0});
    }
    fc_message_batch_close(&b);
    assert_int_equal(fc_buf_err(&b), 0);
    fc_delivery d = {42, b.data, b.len, "job-1-7", "application/json", "", delivery_count > 0, delivery_count, "", "", NULL, 0};
    batch_on_delivery(&W, &d);
    fc_buf_free(&b);
    free(extra);
}

/* deliver_job hands the worker a first-attempt batch of job with priority (0: none given), n items from
 * position first, as delivery tag. */
static void deliver_job(const char *job, int priority, int n, long long first, uint64_t tag) {
    fc_buf b = {0};
    fc_batch_hdr h = {"", 0, 1, 0, priority};
    snprintf(h.job_id, sizeof(h.job_id), "%s", job);
    fc_message_batch_open(&b, &h);
    for (int i = 0; i < n; i++) {
        fc_item it = {first + i, (char *)"term", (char *)"noun", NULL, 0, 0};
        if (i > 0) fc_buf_puts(&b, ",");
        fc_message_item(&b, &it, NULL);
    }
    fc_message_batch_close(&b);
    assert_int_equal(fc_buf_err(&b), 0);
    fc_delivery d = {tag, b.data, b.len, job, "application/json", job, 0, 0, "", "", NULL, 0};
    batch_on_delivery(&W, &d);
    fc_buf_free(&b);
}

/* take counts, of n calls the scheduler starts, those of job. */
static int take(int n, const char *job) {
    int mine = 0;
    for (int i = 0; i < n; i++) {
        task *t = calls_take(&W);
        assert_non_null(t);
        mine += strcmp(t->job_id, job) == 0;
        t->state = TASK_INFLIGHT; /* as if started: it stays out of the lanes */
    }
    return mine;
}

/* Jobs with work waiting take turns by priority (stride scheduling): 10 against 5 gets two calls in
 * three; a job alone takes every call; a job that arrives gets its share from then on, no credit for
 * the time it had no work. */
static void jobs_take_turns_by_priority(void **state) {
    (void)state;
    deliver_job("job-a", 0, 60, 1, 1);       /* the default priority, 5 */
    deliver_job("job-b", 10, 30, 1001, 2);
    int b = take(30, "job-b");
    assert_in_range(b, 19, 21);
    assert_int_equal(take(20, "job-b"), 30 - b); /* b's last ones, two in three of these */
    assert_int_equal(take(10, "job-a"), 10);     /* b has no work left: a alone takes all */
    deliver_job("job-c", 5, 30, 2001, 3);    /* arrives late, same priority as a */
    int c = take(20, "job-c");
    assert_in_range(c, 9, 11);                /* half, not all 20 to catch up */
    assert_true(calls_queued(&W));
}

static void confirm_all(int status) {
    for (int i = 0; i < F.npubs; i++) batch_on_confirm(&W, F.pubs[i].seq, status);
}

static int items_in(const pub *p) {
    fc_batch_msg m;
    char why[256];
    if (fc_message_decode_batch(p->body, p->len, &m, why, sizeof(why)) != FC_OK) return -1;
    int n = (int)m.nitems;
    fc_batch_msg_free(&m);
    return n;
}

/* Defect: a batch given up on its last delivery ran again in the same loop turn when its items
 * were cached: an item's open count wrapped, dead items flipped to ok and the delivery was held
 * until the broker's consumer timeout. Given up, it is never started. */
static void given_up_batch_never_runs(void **state) {
    (void)state;
    F.cache_hits = 1;
    deliver(3, 1, 3, 0, 0);
    batch *b = W.batches;
    assert_non_null(b);
    assert_int_equal(b->kind, BATCH_CRASHED);
    assert_int_equal(b->open, 0);
    batch_tick(&W);
    batch_tick(&W);
    assert_int_equal(F.mgets, 0);
    assert_false(calls_queued(&W));
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.dead");
    assert_non_null(strstr(F.pubs[0].body, "\"class\":\"crashed\""));
    assert_int_equal(F.acks, 0); /* not before the broker confirmed the dead letter */
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_string_equal(F.recorded, "1=dead 2=dead 3=dead ");
    assert_null(W.batches);
}

/* The broker's own dead letter (x-delivery-limit; the worker holding the last delivery died)
 * is given up the same way when it comes back through P.crashed. */
static void broker_dead_letter_is_given_up(void **state) {
    (void)state;
    fc_buf b = {0};
    fc_batch_hdr h = {"job-1", 7, 1, 0, 0};
    fc_item it = {5, (char *)"term", (char *)"", NULL, 0, 0};
    fc_message_batch_open(&b, &h);
    fc_message_item(&b, &it, NULL);
    fc_message_batch_close(&b);
    fc_delivery d = {43, b.data, b.len, "job-1-7", "application/json", "", 0, 0, "delivery_limit", "t.batches", NULL, 0};
    batch_on_delivery(&W, &d);
    fc_buf_free(&b);
    assert_int_equal(W.batches->kind, BATCH_CRASHED);
    batch_settle(&W);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "5=dead ");
}

/* A retry batch whose delay has not passed, checkpointed while the worker stops, hands its
 * items back and is never started afterwards, even once its start time has come. */
static void checkpointed_waiting_batch_never_starts(void **state) {
    (void)state;
    F.cache_hits = 1;
    deliver(2, 2, 0, 1, 0); /* not_before 1 ms after the epoch: long past, so it would start */
    assert_true(F.mgets > 0); /* started at once */
    teardown(state);
    setup(state);
    F.cache_hits = 1;
    long long future = (long long)time(NULL) * 1000 + 3600 * 1000; /* an hour ahead */
    deliver(2, 2, 0, future, 0);
    batch *b = W.batches;
    assert_int_equal(b->state, BATCH_WAITING);
    gate_stop(&W.gate, now_ms() + 1000);
    batch_tick(&W);
    assert_int_equal(b->open, 0);
    b->start_ms = 0; /* its start time comes */
    batch_tick(&W);
    assert_int_equal(F.mgets, 0);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.batches"); /* the continuation */
    assert_int_equal(items_in(&F.pubs[0]), 2);
}

/* Held for HOLD_LIMIT - API_TIMEOUT, a batch starts no new call (queued items are handed back,
 * calls in flight may finish); at HOLD_LIMIT the calls still in flight are abandoned too. All of
 * them go on in one continuation batch, and the delivery is acked. */
static void hold_limit_checkpoints_in_two_steps(void **state) {
    (void)state;
    deliver(3, 1, 0, 0, 0);
    batch *b = W.batches;
    assert_int_equal(b->state, BATCH_RUNNING);
    assert_int_equal(F.mgets, 1); /* all missed: queued */
    task *flying = calls_take(&W); /* as calls_schedule would have started it */
    flying->state = TASK_INFLIGHT;
    W.sched.inflight = 1;
    b->received_ms = now_ms() - (300000 - 120000);
    batch_tick(&W);
    assert_int_equal(b->open, 1);
    assert_int_equal(flying->state, TASK_INFLIGHT);
    assert_false(calls_queued(&W));
    batch_settle(&W);
    assert_int_equal(F.npubs, 0); /* not while a call is in flight */
    b->received_ms = now_ms() - 300000;
    batch_tick(&W);
    assert_int_equal(b->open, 0);
    assert_int_equal(W.sched.inflight, 0);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.batches");
    assert_int_equal(items_in(&F.pubs[0]), 3);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_string_equal(F.recorded, ""); /* no item has a final outcome yet */
}

/* Defect: one refused outcome message made the worker nack the delivery, and the redelivery
 * published every outcome again (dead letters twice; an item could end in the results and in
 * P.dead). Only the refused message is published again; the delivery is acked once. */
static void refused_message_alone_is_published_again(void **state) {
    (void)state;
    deliver(2, 5, 0, 0, 0); /* last attempt: a failure is final */
    batch *b = W.batches;
    task *ok = &b->tasks[0], *dead = &b->tasks[1];
    calls_cancel(&W, b->tasks, 2, 1);
    ok->results[1] = strdup("1");
    assert_int_equal(task_finish(ok, OUT_OK), FC_OK);
    task_fail(dead, FC_CLASS_PERMANENT, 400, "HTTP 400: bad request");
    assert_int_equal(task_finish(dead, OUT_DEAD), FC_OK);
    assert_int_equal(task_finish(dead, OUT_OK), FC_EINVAL); /* an outcome is never overwritten */
    assert_false(calls_queued(&W));
    batch_settle(&W);
    assert_int_equal(F.npubs, 2);
    assert_string_equal(F.pubs[0].exchange, "t.results");
    assert_string_equal(F.pubs[1].exchange, "t.dead");
    batch_on_confirm(&W, F.pubs[0].seq, FC_OK);
    batch_on_confirm(&W, F.pubs[1].seq, FC_ENACK);
    batch_settle(&W);
    assert_int_equal(F.npubs, 2); /* not before its pause */
    assert_int_equal(F.nacks, 0);
    assert_int_equal(F.acks, 0);
    b->out[1].resend_at_ms = 0;
    batch_settle(&W);
    assert_int_equal(F.npubs, 3);
    assert_string_equal(F.pubs[2].exchange, "t.dead");
    assert_string_equal(F.pubs[2].id, F.pubs[1].id);
    assert_string_equal(F.pubs[2].body, F.pubs[1].body);
    batch_on_confirm(&W, F.pubs[2].seq, FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_int_equal(F.nacks, 0);
    assert_string_equal(F.recorded, "1=ok 2=dead ");
}

/* Defect: a retry batch could grow past the 16 MiB a batch message may have (each item gains
 * its last error) and turn into poison. Outcomes are split to stay under the limit. */
static void big_retry_is_split(void **state) {
    (void)state;
    size_t extra = 5u << 20; /* 3 items of 5 MiB: one 15 MiB batch */
    deliver(3, 1, 0, 0, extra);
    batch *b = W.batches;
    calls_cancel(&W, b->tasks, 3, 1);
    for (int i = 0; i < 3; i++) {
        char why[256];
        memset(why, 'e', sizeof(why) - 1);
        why[sizeof(why) - 1] = '\0';
        task_fail(&b->tasks[i], FC_CLASS_RETRY, 500, why);
        task_finish(&b->tasks[i], OUT_RETRY);
    }
    batch_settle(&W);
    assert_true(F.npubs >= 1);
    int total = 0;
    for (int i = 0; i < F.npubs; i++) {
        assert_string_equal(F.pubs[i].exchange, "t.retry");
        assert_true(F.pubs[i].len <= (size_t)FC_MESSAGE_MAX_BYTES);
        int n = items_in(&F.pubs[i]);
        assert_true(n > 0);
        total += n;
    }
    assert_int_equal(total, 3);
    for (int i = 1; i < F.npubs; i++) assert_string_not_equal(F.pubs[i].id, F.pubs[0].id);
}

/* While the broker blocks publishers, or the socket has no room for a message, nothing is
 * published (a publish would block the loop); the outcomes go out once it unblocks. */
static void nothing_published_while_blocked(void **state) {
    (void)state;
    F.cache_hits = 1;
    deliver(2, 1, 0, 0, 0); /* every stage cached: done at once */
    assert_int_equal(W.batches->open, 0);
    F.blocked = 1;
    batch_settle(&W);
    assert_int_equal(F.npubs, 0);
    F.blocked = 0;
    F.full = 1; /* the first publish after an alarm started: the broker reads no more */
    batch_settle(&W);
    assert_int_equal(F.npubs, 0);
    F.full = 0;
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.results");
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "1=ok 2=ok ");
}

/* Defect: a poison message's items got no outcome, so --wait waited forever. Those that name
 * their job and position are recorded as failed. */
static void poison_items_are_recorded(void **state) {
    (void)state;
    const char *body = "{\"schema\":99,\"job_id\":\"job-1\",\"batch\":7,\"items\":[{\"position\":11,\"term\":\"a\"},"
                       "{\"position\":12},{\"term\":\"no position\"}]}";
    fc_delivery d = {44, body, strlen(body), "x", "", "", 0, 0, "", "", NULL, 0};
    batch_on_delivery(&W, &d);
    assert_int_equal(W.batches->kind, BATCH_POISON);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.dead");
    assert_string_equal(F.pubs[0].body, body);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_string_equal(F.recorded, "11=dead 12=dead ");
}

/* A well-formed batch sent with another content type is not run: it is dead-lettered as poison
 * with a reason that shows the type in printable characters, and its items recorded as failed. */
static void wrong_content_type_is_poison(void **state) {
    (void)state;
    const char *body = "{\"schema\":1,\"job_id\":\"job-1\",\"batch\":7,\"items\":[{\"position\":11,\"term\":\"a\"}]}";
    fc_delivery d = {45, body, strlen(body), "x", "text/plain\x1b[31m", "", 0, 0, "", "", NULL, 0};
    batch_on_delivery(&W, &d);
    assert_int_equal(W.batches->kind, BATCH_POISON);
    assert_string_equal(W.batches->why, "content type 'text/plain?[31m' is not application/json");
    assert_int_equal(F.mgets, 0);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.dead");
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "11=dead ");
}

/* A poison message naming positions its job already delivered leaves them succeeded: only the
 * others are recorded as failed. */
static void poison_keeps_delivered_items(void **state) {
    (void)state;
    const char *body = "{\"schema\":99,\"job_id\":\"job-1\",\"batch\":7,\"items\":[{\"position\":11,\"term\":\"a\"},"
                       "{\"position\":12}]}";
    fc_delivery d = {46, body, strlen(body), "x", "", "", 0, 0, "", "", NULL, 0};
    F.recorded_ok = "11";
    batch_on_delivery(&W, &d);
    batch_settle(&W);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_string_equal(F.recorded, "12=dead ");
}

/* A start time further ahead than any retry delay makes the batch poison: held, it would come
 * back until then. */
static void far_future_start_is_poison(void **state) {
    (void)state;
    deliver(2, 2, 0, 4102444800000LL /* year 2100 */, 0);
    assert_int_equal(W.batches->kind, BATCH_POISON);
    assert_non_null(strstr(W.batches->why, "field 'not_before' is "));
    assert_int_equal(F.mgets, 0);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.dead");
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "1=dead 2=dead ");
}

/* A batch of a cancelled job makes no call: its items are dead-lettered as cancelled. */
static void cancelled_job_is_skipped(void **state) {
    (void)state;
    F.cancelled = 1;
    deliver(3, 1, 0, 0, 0);
    assert_int_equal(F.mgets, 0);
    assert_false(calls_queued(&W));
    assert_int_equal(W.batches->open, 0);
    batch_settle(&W);
    assert_int_equal(F.npubs, 1);
    assert_string_equal(F.pubs[0].exchange, "t.dead");
    assert_non_null(strstr(F.pubs[0].body, "\"class\":\"cancelled\""));
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_int_equal(F.acks, 1);
    assert_string_equal(F.recorded, "1=dead 2=dead 3=dead ");
    assert_int_equal(atomic_load(&W.m->items_dead[DEAD_CANCELLED]), 3);
}

/* Cancelled while running: queued items end at once; a call in flight finishes, and its item
 * then ends with no next stage and no retry. */
static void cancel_while_running(void **state) {
    (void)state;
    deliver(2, 1, 0, 0, 0);
    batch *b = W.batches;
    task *flying = calls_take(&W); /* as calls_schedule would have started it */
    flying->state = TASK_INFLIGHT;
    W.sched.inflight = 1;
    F.cancelled = 1;
    batch_check_cancelled(&W, now_ms() + CANCEL_ASK_MS); /* its last answer, "no", is old by then */
    assert_int_equal(b->open, 1);
    assert_false(calls_queued(&W));
    const char *answer = "{\"choices\":[{\"message\":{\"content\":\"{}\"}}]}";
    fc_http_done d = {.ud = flying, .status = 200, .body = answer, .len = strlen(answer), .elapsed_ms = 1.0};
    assert_non_null(flying->request); /* built when the batch started (the cache lookup) */
    calls_on_done(&W, &d); /* stage 1 answered: stage 2 is not started */
    assert_int_equal(b->open, 0);
    assert_false(calls_queued(&W));
    assert_int_equal(flying->outcome, OUT_DEAD);
    assert_int_equal(flying->err_class, FC_CLASS_CANCELLED);
    batch_settle(&W);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "1=dead 2=dead ");
}

/* Items sent to retry are recorded with their next attempt, so an operator sees them. */
static void retried_items_are_recorded(void **state) {
    (void)state;
    deliver(2, 2, 0, 0, 0);
    batch *b = W.batches;
    calls_cancel(&W, b->tasks, 2, 1);
    task_fail(&b->tasks[0], FC_CLASS_RETRY, 500, "HTTP 500");
    task_finish(&b->tasks[0], OUT_RETRY);
    b->tasks[1].results[1] = strdup("1");
    task_finish(&b->tasks[1], OUT_OK);
    batch_settle(&W);
    confirm_all(FC_OK);
    batch_settle(&W);
    assert_string_equal(F.recorded, "2=ok ");
    assert_string_equal(F.in_retry, "1=3 ");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(given_up_batch_never_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(broker_dead_letter_is_given_up, setup, teardown),
        cmocka_unit_test_setup_teardown(checkpointed_waiting_batch_never_starts, setup, teardown),
        cmocka_unit_test_setup_teardown(hold_limit_checkpoints_in_two_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_message_alone_is_published_again, setup, teardown),
        cmocka_unit_test_setup_teardown(big_retry_is_split, setup, teardown),
        cmocka_unit_test_setup_teardown(nothing_published_while_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(poison_items_are_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_content_type_is_poison, setup, teardown),
        cmocka_unit_test_setup_teardown(poison_keeps_delivered_items, setup, teardown),
        cmocka_unit_test_setup_teardown(far_future_start_is_poison, setup, teardown),
        cmocka_unit_test_setup_teardown(cancelled_job_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(retried_items_are_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(jobs_take_turns_by_priority, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
