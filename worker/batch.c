/* A delivery's life: it becomes tasks (or, unreadable, a poison message; or, back too often,
 * a crashed batch); when every task has its outcome (or the delivery must stop) its outcome
 * messages are built once (results, retry, dead letters, continuation, each split to stay under
 * the message size limit) and published; a message the broker refuses is published again
 * alone; once all are confirmed the items' outcomes are recorded in Redis and the delivery is
 * acked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "fc_log.h"
#include "worker.h"

/* Largest outcome message built from several items: one that fits a socket's send buffer goes out
 * without waiting for the broker to read, so the loop never blocks on a broker that stops
 * reading (a resource alarm). One item bigger than this makes a message of its own. */
#define OUTMSG_PART_MAX (256u << 10)
#define RESEND_MIN_MS 500
#define RESEND_MAX_MS 30000

static void batch_free(batch *b) {
    for (size_t i = 0; b->tasks && i < b->msg.nitems; i++) task_clear(&b->tasks[i]);
    for (size_t i = 0; i < b->nout; i++) fc_buf_free(&b->out[i].body);
    free(b->out);
    free(b->tasks);
    free(b->raw);
    fc_batch_msg_free(&b->msg);
    free(b);
}

static void unlink_batch(worker *w, batch *b) {
    for (batch **pp = &w->batches; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    atomic_fetch_sub(&w->m->held_batches, 1);
}

/* iso_now writes the time in ISO 8601 UTC with milliseconds: a dead letter's x-failed-at, which
 * also tells apart dead letters of one batch written at different times (flashcard-admin's replay
 * markers hash it). */
static void iso_now(char *out, size_t n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + len, n - len, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* ---- deliveries in --------------------------------------------------------------- */

/* came_back_too_often says whether the delivery is a batch that came back unsettled
 * DELIVERY_LIMIT times (the workers holding it died or lost their connection): on its last
 * allowed delivery, or dead-lettered by the delivery limit of the work queue or of its job's
 * queue (their backstop, when the worker holding it on that last delivery died too). */
static int came_back_too_often(worker *w, const fc_delivery *d) {
    if (d->delivery_count >= w->cfg->delivery_limit) return 1;
    if (strcmp(d->death_reason, "delivery_limit") != 0) return 0;
    char jobs[FC_NAME_MAX];
    fc_topology_job_queue(jobs, w->cfg->queue_prefix, "");
    return strcmp(d->death_queue, w->queue) == 0 || strncmp(d->death_queue, jobs, strlen(jobs)) == 0;
}

/* give_up_crashed dead-letters every item unprocessed, so its job counts them as failed. */
static void give_up_crashed(worker *w, batch *b, const fc_delivery *d) {
    long times = d->delivery_count > w->cfg->delivery_limit ? d->delivery_count : w->cfg->delivery_limit;
    fc_warn("batch %s came back unsettled %ld times (the workers holding it died or lost their connection): "
            "dead-lettering it", b->id, times);
    b->kind = BATCH_CRASHED;
    for (size_t i = 0; i < b->msg.nitems; i++) {
        char why[256];
        snprintf(why, sizeof(why),
                 "batch delivered %ld times without being settled: the workers holding it died or lost their "
                 "connection", times + 1);
        task_fail(&b->tasks[i], FC_CLASS_CRASHED, 0, why);
        task_finish(&b->tasks[i], OUT_DEAD);
    }
}

static void keep_poison(worker *w, batch *b, const fc_delivery *d, const char *why) {
    b->kind = BATCH_POISON;
    snprintf(b->why, sizeof(b->why), "%s", why);
    b->raw = malloc(d->len ? d->len : 1);
    if (b->raw) memcpy(b->raw, d->body, d->len);
    b->raw_len = d->len;
    fc_warn("poison message '%s' (%zu bytes): %s; dead-lettering it", d->message_id, d->len, why);
    atomic_fetch_add(&w->m->batches_poison, 1);
}

/* cancel ends a batch whose job an operator cancelled: its queued and reserved calls are
 * dropped and their items dead-lettered as cancelled; calls in flight finish, and their
 * items then end (a succeeded last stage as a result), with no next stage and no retry. */
static void cancel(worker *w, batch *b) {
    fc_warn("batch %s: job %s was cancelled: skipping its %zu unfinished items", b->id, b->msg.hdr.job_id, b->open);
    b->cancelled = 1;
    b->state = BATCH_RUNNING;
    calls_cancel(w, b->tasks, b->msg.nitems, 0);
    for (size_t i = 0; i < b->msg.nitems; i++) {
        task *t = &b->tasks[i];
        t->cancelled = 1;
        if (t->state != TASK_IDLE) continue; /* in flight, or done */
        task_fail(t, FC_CLASS_CANCELLED, 0, "job cancelled by an operator");
        task_finish(t, OUT_DEAD);
    }
}

/* cancellable says whether b could still make calls that a cancel would save. */
static int cancellable(const batch *b) {
    return b->kind == BATCH_WORK && !b->cancelled && b->open && (b->state == BATCH_WAITING || b->state == BATCH_RUNNING);
}

void batch_check_cancelled(worker *w, int64_t now) {
    for (batch *b = w->batches; b; b = b->next)
        if (cancellable(b) && record_job_cancelled(w, b->msg.hdr.job_id, now)) cancel(w, b);
}

/* start runs a batch whose start time has come: cached answers are served, the rest queued;
 * a batch of a cancelled job is skipped. */
static void start(worker *w, batch *b) {
    if (record_job_cancelled(w, b->msg.hdr.job_id, now_ms())) {
        cancel(w, b);
        return;
    }
    b->state = BATCH_RUNNING;
    cache_lookup(w, b->tasks, b->msg.nitems);
    for (size_t i = 0; i < b->msg.nitems; i++)
        if (b->tasks[i].state == TASK_IDLE) calls_enqueue(w, &b->tasks[i], 0);
}

static int make_tasks(batch *b) {
    b->tasks = calloc(b->msg.nitems ? b->msg.nitems : 1, sizeof(*b->tasks));
    if (!b->tasks) return FC_ENOMEM;
    int priority = b->msg.hdr.priority ? b->msg.hdr.priority : FC_PRIORITY_DEFAULT;
    for (size_t i = 0; i < b->msg.nitems; i++) {
        task_init(&b->tasks[i], &b->msg.items[i], b, &b->open);
        b->tasks[i].job_id = b->msg.hdr.job_id;
        b->tasks[i].priority = priority;
    }
    return FC_OK;
}

/* json_content_type says whether a delivery's content type allows a batch: absent (a message
 * published by hand), or application/json with or without parameters. Otherwise it writes the
 * reason, the type shown in printable ASCII only, to why. */
static int json_content_type(const fc_delivery *d, char *why, size_t cap) {
    static const char json[] = "application/json";
    const char *t = d->content_type;
    size_t n = strlen(json);
    if (!*t || (strncasecmp(t, json, n) == 0 && (t[n] == '\0' || t[n] == ';' || t[n] == ' '))) return 1;
    char shown[64];
    size_t i;
    for (i = 0; t[i] && i < sizeof(shown) - 1; i++) shown[i] = t[i] > 0x20 && t[i] < 0x7f ? t[i] : '?';
    shown[i] = '\0';
    snprintf(why, cap, "content type '%s%s' is not application/json", shown, t[i] ? "..." : "");
    return 0;
}

/* start_in_reach says whether a batch's start time is less than NOT_BEFORE_MAX_MS ahead. One
 * further off (no retry delay comes near it) would be held and handed back, again and again, until
 * then; otherwise it writes the reason to why (at least 256 bytes). */
static int start_in_reach(const batch *b, char *why) {
    int64_t ahead = b->msg.hdr.not_before_ms - (int64_t)time(NULL) * 1000;
    if (ahead < NOT_BEFORE_MAX_MS) return 1;
    snprintf(why, 256, "field 'not_before' is %lld s ahead (at most %d s)", (long long)(ahead / 1000),
             NOT_BEFORE_MAX_MS / 1000);
    return 0;
}

void batch_on_delivery(worker *w, const fc_delivery *d) {
    batch *b = calloc(1, sizeof(*b));
    char why[256];
    if (!b) {
        fc_amqp_nack(w->amqp, d->tag, 1);
        return;
    }
    b->tag = d->tag;
    b->received_ms = now_ms();
    snprintf(b->id, sizeof(b->id), "%s", d->message_id);
    b->next = w->batches;
    w->batches = b;
    atomic_fetch_add(&w->m->held_batches, 1);
    if (!json_content_type(d, why, sizeof(why)) ||
        fc_message_decode_batch(d->body, d->len, &b->msg, why, sizeof(why)) != FC_OK || !start_in_reach(b, why)) {
        keep_poison(w, b, d, why);
        b->state = BATCH_RUNNING; /* nothing to run: settled next */
        return;
    }
    if (make_tasks(b) != FC_OK) {
        unlink_batch(w, b);
        batch_free(b);
        fc_amqp_nack(w->amqp, d->tag, 1);
        return;
    }
    fc_debug("batch %s: %zu items, attempt %d", b->id, b->msg.nitems, b->msg.hdr.attempt);
    if (came_back_too_often(w, d)) {
        give_up_crashed(w, b, d);
        b->state = BATCH_RUNNING;
        return;
    }
    b->state = BATCH_WAITING;
    if (b->msg.hdr.not_before_ms > 0)
        b->start_ms = b->msg.hdr.not_before_ms - (int64_t)time(NULL) * 1000 + b->received_ms;
    if (b->start_ms <= b->received_ms) start(w, b);
}

/* ---- outcome messages ------------------------------------------------------------ */

/* The part of a delivery one kind of outcome message carries. */
typedef struct outkind {
    int outcome;             /* enum task_outcome of the items it carries */
    const char *exchange;    /* suffix of the exchange */
    const char *key;
    int dead;
    fc_batch_hdr hdr;        /* header of the message (a retry's is the next attempt's) */
    char id[200];            /* message id of its first part */
} outkind;

static outmsg *new_outmsg(batch *b, const worker *w, const outkind *k, int part) {
    outmsg *p = realloc(b->out, (b->nout + 1) * sizeof(*p));
    if (!p) return NULL;
    b->out = p;
    outmsg *m = &b->out[b->nout++];
    memset(m, 0, sizeof(*m));
    fc_topology_name(m->exchange, w->cfg->queue_prefix, k->exchange);
    snprintf(m->key, sizeof(m->key), "%s", k->key);
    if (part == 1) snprintf(m->id, sizeof(m->id), "%s", k->id);
    else snprintf(m->id, sizeof(m->id), "%s-p%d", k->id, part);
    m->dead = k->dead;
    if (k->outcome == OUT_OK) fc_message_result_open(&m->body, &k->hdr, w->name);
    else fc_message_batch_open(&m->body, &k->hdr);
    return m;
}

/* encode_item appends t as an item of an outcome message of kind k. */
static int encode_item(worker *w, const batch *b, const task *t, const outkind *k, fc_buf *o) {
    if (k->outcome == OUT_OK) {
        fc_buf members = {0};
        w->proc.result(w->proc.self, t->results, &members);
        fc_usage u = {t->prompt_tokens, t->completion_tokens, t->calls, t->cache_hits};
        fc_message_result_item(o, t->item, members.data ? members.data : "", &u);
        int rc = fc_buf_err(&members);
        fc_buf_free(&members);
        return rc ? rc : fc_buf_err(o);
    }
    if (k->outcome == OUT_DEAD) {
        fc_item_error e = {fc_class_name(t->err_class), t->http_status, b->msg.hdr.attempt, t->error};
        fc_message_failed_item(o, t->item, &e);
        return fc_buf_err(o);
    }
    size_t i = (size_t)(t - b->tasks);
    fc_message_item(o, t->item, t->error[0] ? t->error : b->msg.last_error[i]);
    return fc_buf_err(o);
}

/* add_messages builds the messages of kind k, as many as it takes to keep each under
 * OUTMSG_PART_MAX (and so under the 16 MiB a batch message may have, whatever the items' size
 * short of that). Returns 0 or FC_ENOMEM (nothing is published then). */
static int add_messages(worker *w, batch *b, const outkind *k) {
    fc_buf item = {0};
    outmsg *m = NULL;
    int parts = 0, rc = FC_OK;
    for (size_t i = 0; rc == FC_OK && i < b->msg.nitems; i++) {
        if (b->tasks[i].outcome != k->outcome) continue;
        fc_buf_reset(&item);
        rc = encode_item(w, b, &b->tasks[i], k, &item);
        if (rc != FC_OK) break;
        if (m && m->body.len + item.len + 2 > OUTMSG_PART_MAX) {
            fc_message_batch_close(&m->body);
            m = NULL;
        }
        if (m) fc_buf_puts(&m->body, ",");
        else if (!(m = new_outmsg(b, w, k, ++parts))) rc = FC_ENOMEM;
        if (m) fc_buf_append(&m->body, item.data, item.len);
    }
    if (m) fc_message_batch_close(&m->body);
    fc_buf_free(&item);
    for (size_t i = 0; rc == FC_OK && i < b->nout; i++) rc = fc_buf_err(&b->out[i].body);
    return rc;
}

static int has_outcome(const batch *b, int outcome) {
    for (size_t i = 0; i < b->msg.nitems; i++)
        if (b->tasks[i].outcome == outcome) return 1;
    return 0;
}

static long retry_delay(const worker *w, int attempt) {
    int i = attempt - 1 < w->cfg->nretry_delays ? attempt - 1 : w->cfg->nretry_delays - 1;
    return w->cfg->retry_delays[i];
}

/* route_exhausted turns retryable failures on their last attempt into dead letters. */
static void route_exhausted(worker *w, batch *b) {
    if (b->msg.hdr.attempt < w->cfg->max_attempts) return;
    for (size_t i = 0; i < b->msg.nitems; i++) {
        task *t = &b->tasks[i];
        if (t->outcome != OUT_RETRY) continue;
        t->outcome = OUT_DEAD;
        size_t n = strlen(t->error);
        snprintf(t->error + n, sizeof(t->error) - n, " (gave up after %d attempts)", b->msg.hdr.attempt);
    }
}

/* build_outcomes builds every outcome message of a processed batch: results, the retry of what
 * failed (the next attempt, through the delay queue of this attempt), dead letters, and the
 * continuation of what was not finished. */
static int build_outcomes(worker *w, batch *b) {
    uint64_t uniq = (uint64_t)b->tag ^ (uint64_t)now_ms();
    char suffix[40];
    outkind k[4] = {{OUT_OK, "results", b->msg.hdr.job_id, 0, b->msg.hdr, ""},
                    {OUT_RETRY, "retry", "", 0, b->msg.hdr, ""},
                    {OUT_DEAD, "dead", "", 1, b->msg.hdr, ""},
                    {OUT_UNFINISHED, "batches", "", 0, b->msg.hdr, ""}};
    route_exhausted(w, b);
    fc_message_batch_id(k[0].id, sizeof(k[0].id), &b->msg.hdr, NULL);
    snprintf(k[2].id, sizeof(k[2].id), "%s.dead", k[0].id);
    strcat(k[0].id, ".ok");
    long delay = retry_delay(w, b->msg.hdr.attempt);
    char delay_key[32];
    fc_topology_delay_key(delay_key, sizeof(delay_key), delay);
    k[1].key = delay_key;
    k[1].hdr.attempt++;
    /* Jitter: the delay queue holds it for `delay`; the worker adds up to a tenth more. */
    k[1].hdr.not_before_ms = (long long)time(NULL) * 1000 + delay + rand() % (delay / 10 + 1);
    snprintf(suffix, sizeof(suffix), "r%llx", (unsigned long long)uniq);
    fc_message_batch_id(k[1].id, sizeof(k[1].id), &k[1].hdr, suffix);
    snprintf(suffix, sizeof(suffix), "c%llx", (unsigned long long)uniq);
    fc_message_batch_id(k[3].id, sizeof(k[3].id), &k[3].hdr, suffix);
    int rc = FC_OK;
    for (int i = 0; rc == FC_OK && i < 4; i++)
        if (has_outcome(b, k[i].outcome)) rc = add_messages(w, b, &k[i]);
    return rc;
}

static int build_poison(worker *w, batch *b) {
    outkind k = {OUT_NONE, "dead", "", 1, {{0}, 0, 0, 0, 0}, ""};
    snprintf(k.id, sizeof(k.id), "poison-%llx", (unsigned long long)b->tag ^ (unsigned long long)now_ms());
    b->out = calloc(1, sizeof(*b->out));
    if (!b->out) return FC_ENOMEM;
    b->nout = 1;
    outmsg *m = &b->out[0];
    fc_topology_name(m->exchange, w->cfg->queue_prefix, k.exchange);
    snprintf(m->id, sizeof(m->id), "%s", k.id);
    m->dead = 1;
    fc_buf_append(&m->body, b->raw, b->raw_len);
    return fc_buf_err(&m->body);
}

/* first_dead returns the first dead-lettered task (its error heads the dead letter), or NULL. */
static const task *first_dead(const batch *b) {
    for (size_t i = 0; b->tasks && i < b->msg.nitems; i++)
        if (b->tasks[i].outcome == OUT_DEAD) return &b->tasks[i];
    return NULL;
}

/* dead_headers fills the headers an operator reads in the management UI. */
static size_t dead_headers(worker *w, batch *b, fc_amqp_field *h) {
    const task *first = first_dead(b);
    size_t n = 0;
    int poison = b->kind == BATCH_POISON;
    h[n++] = (fc_amqp_field){"x-error", first ? first->error : b->why, 0, 0};
    h[n++] = (fc_amqp_field){"x-error-class", first ? fc_class_name(first->err_class) : "poison", 0, 0};
    h[n++] = (fc_amqp_field){"x-http-status", NULL, first ? first->http_status : 0, 1};
    h[n++] = (fc_amqp_field){"x-attempts", NULL, poison ? 0 : b->msg.hdr.attempt, 1};
    h[n++] = (fc_amqp_field){"x-job-id", poison ? "" : b->msg.hdr.job_id, 0, 0};
    h[n++] = (fc_amqp_field){"x-worker", w->name, 0, 0};
    h[n++] = (fc_amqp_field){"x-failed-at", b->failed_at, 0, 0};
    return n;
}

/* send publishes the outcome messages that are due (never sent, or refused and due again), as
 * many as the socket takes without waiting; the rest go on a later turn. */
static void send(worker *w, batch *b) {
    int64_t now = now_ms();
    fc_amqp_field hdrs[8];
    for (size_t i = 0; i < b->nout && fc_amqp_ok(w->amqp); i++) {
        outmsg *m = &b->out[i];
        if (m->state != OUTMSG_UNSENT || now < m->resend_at_ms) continue;
        if (!fc_amqp_writable(w->amqp, m->body.len + 1024)) return;
        size_t nh = m->dead ? dead_headers(w, b, hdrs) : 0;
        fc_amqp_props p = {m->id, NULL, hdrs, nh};
        if (fc_amqp_publish(w->amqp, m->exchange, m->key, &p, m->body.data, m->body.len, &m->seq) != FC_OK) {
            fc_warn("publishing outcomes failed: %s", fc_amqp_errstr(w->amqp));
            return;
        }
        m->state = OUTMSG_SENT;
    }
}

/* dead_class maps an error class to the label of flashcard_items_dead_total. */
static int dead_class(int cls) {
    switch (cls) {
    case FC_CLASS_PERMANENT: return DEAD_PERMANENT;
    case FC_CLASS_CRASHED: return DEAD_CRASHED;
    case FC_CLASS_CANCELLED: return DEAD_CANCELLED;
    default: return DEAD_RETRYABLE;
    }
}

/* count_outcomes adds the batch's items to the metrics, once, when it starts settling (a poison
 * message: the items that can be read from it, at least one). */
static void count_outcomes(worker *w, const batch *b) {
    if (b->kind == BATCH_POISON) {
        char job[FC_JOB_ID_MAX + 1];
        fc_salvaged *s = NULL;
        size_t n = 0;
        if (fc_message_salvage(b->raw, b->raw_len, job, &s, &n) != FC_OK) n = 0;
        free(s);
        atomic_fetch_add(&w->m->items_dead[DEAD_POISON], n ? (long)n : 1);
        return;
    }
    for (size_t i = 0; b->tasks && i < b->msg.nitems; i++) {
        const task *t = &b->tasks[i];
        if (t->outcome == OUT_OK) atomic_fetch_add(&w->m->items_ok, 1);
        if (t->outcome == OUT_RETRY) atomic_fetch_add(&w->m->items_retried[t->retry_reason], 1);
        if (t->outcome == OUT_DEAD) atomic_fetch_add(&w->m->items_dead[dead_class(t->err_class)], 1);
        if (t->outcome == OUT_UNFINISHED) atomic_fetch_add(&w->m->items_unfinished, 1);
        if (t->outcome == OUT_BUDGET) atomic_fetch_add(&w->m->items_budget, 1);
    }
}

/* start_settling builds the outcome messages once; they are sent by batch_settle. Returns 0, or
 * an error after which the batch was handed back to the broker and freed. */
static int start_settling(worker *w, batch *b) {
    iso_now(b->failed_at, sizeof(b->failed_at));
    int rc = b->kind == BATCH_POISON ? build_poison(w, b) : build_outcomes(w, b);
    if (rc != FC_OK) {
        /* Nothing was published: the broker redelivers the whole batch to a worker with memory. */
        fc_error("batch %s: cannot build its outcome messages (%s): handing it back", b->id, fc_strerror(rc));
        calls_cancel(w, b->tasks, b->tasks ? b->msg.nitems : 0, 1);
        fc_amqp_nack(w->amqp, b->tag, 1);
        unlink_batch(w, b);
        batch_free(b);
        return rc;
    }
    count_outcomes(w, b);
    b->state = BATCH_SETTLING;
    return FC_OK;
}

void batch_on_confirm(worker *w, uint64_t seq, int status) {
    for (batch *b = w->batches; b; b = b->next)
        for (size_t i = 0; i < b->nout; i++) {
            outmsg *m = &b->out[i];
            if (m->state != OUTMSG_SENT || m->seq != seq) continue;
            if (status == FC_OK) {
                m->state = OUTMSG_CONFIRMED;
                return;
            }
            /* Publish this one again, alone, after a pause; the others stand. */
            long pause = RESEND_MIN_MS << (m->refusals < 6 ? m->refusals : 6);
            m->refusals++;
            m->state = OUTMSG_UNSENT;
            m->resend_at_ms = now_ms() + (pause < RESEND_MAX_MS ? pause : RESEND_MAX_MS);
            if (status == FC_EUNROUTABLE) w->redeclare = 1;
            fc_error("broker refused outcome message %s (%s): publishing it again in %ld ms", m->id,
                     fc_strerror(status), pause);
            return;
        }
}

static int all_confirmed(const batch *b) {
    for (size_t i = 0; i < b->nout; i++)
        if (b->out[i].state != OUTMSG_CONFIRMED) return 0;
    return 1;
}

/* finish records a confirmed batch's outcomes in Redis, then acks it. */
static void finish(worker *w, batch *b) {
    int64_t now = now_ms();
    if (now < b->record_retry_ms) return;
    if (!fc_amqp_writable(w->amqp, 64)) return; /* the ack would wait for the broker to read */
    int rc = record_batch(w, b);
    if (rc != FC_OK) {
        /* Held unacked until Redis answers: --wait counts outcomes there. */
        if (!b->record_retry_ms)
            fc_warn("batch %s: cannot record outcomes in Redis (%s); retrying every second", b->id,
                    rc == FC_ENOMEM ? "out of memory" : fc_redis_errstr(w->redis));
        b->record_retry_ms = now + 1000;
        return;
    }
    fc_amqp_ack(w->amqp, b->tag);
    atomic_fetch_add(&w->m->batches_done, 1);
    unlink_batch(w, b);
    batch_free(b);
}

/* batch_settle publishes the outcomes of finished batches and settles the confirmed ones.
 * Nothing is published while the broker blocks publishers (a publish would block the loop),
 * and nothing settles on a broken connection: a message whose publish failed has no confirm to
 * wait for, and recording it in Redis would report outcomes that were never published.
 * The connection's loss drops the batch; the broker redelivers it. */
void batch_settle(worker *w) {
    batch *next;
    for (batch *b = w->batches; b && fc_amqp_ok(w->amqp); b = next) {
        next = b->next;
        if (b->state == BATCH_RUNNING && b->open == 0 && start_settling(w, b) != FC_OK) continue;
        if (b->state != BATCH_SETTLING) continue;
        if (!fc_amqp_blocked(w->amqp)) send(w, b);
        if (all_confirmed(b) && fc_amqp_ok(w->amqp)) finish(w, b);
    }
}

/* ---- holding ---------------------------------------------------------------------- */

/* checkpoint ends a batch early: queued tasks and (if cancel_inflight) calls in flight become
 * unfinished, to be re-published as a continuation batch. */
static void checkpoint(worker *w, batch *b, int cancel_inflight) {
    calls_cancel(w, b->tasks, b->msg.nitems, cancel_inflight);
    for (size_t i = 0; i < b->msg.nitems; i++)
        if (b->tasks[i].state == TASK_IDLE) task_finish(&b->tasks[i], OUT_UNFINISHED);
}

static void log_checkpoint(worker *w, const batch *b, int level, int64_t now) {
    if (level == GATE_HOLD_STOP_NOW)
        fc_info("batch %s: checkpointing %zu unfinished items, abandoning its calls in flight", b->id, b->open);
    else if (b->checkpointing || w->gate.stopping)
        return;
    else if (w->gate.auth_blocked)
        fc_info("batch %s: handing back %zu unfinished items while the API rejects the credentials", b->id, b->open);
    else
        fc_info("batch %s held for %lld ms: checkpointing; calls in flight may finish", b->id,
                (long long)(now - b->received_ms));
}

void batch_tick(worker *w) {
    int64_t now = now_ms();
    for (batch *b = w->batches; b; b = b->next) {
        if (b->state != BATCH_WAITING && b->state != BATCH_RUNNING) continue;
        if (b->kind != BATCH_WORK || b->open == 0) continue;
        int level = gate_hold(&w->gate, b->received_ms, now);
        if (level != GATE_HOLD_RUN) {
            log_checkpoint(w, b, level, now);
            b->checkpointing = 1;
            if (b->state == BATCH_WAITING) b->state = BATCH_RUNNING;
            checkpoint(w, b, level == GATE_HOLD_STOP_NOW);
        } else if (b->state == BATCH_WAITING && b->start_ms <= now) {
            start(w, b);
        }
    }
}

void batch_drop_all(worker *w) {
    calls_cancel_all(w);
    while (w->batches) {
        batch *b = w->batches;
        unlink_batch(w, b);
        batch_free(b);
    }
}
