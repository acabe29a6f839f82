/* Batches: a delivery becomes jobs; when every job is done (or the batch is checkpointed)
 * its outcomes are published (results, retry, dead letters, continuation), and the
 * delivery is acked only once the broker confirmed all of them and Redis recorded them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fc_error.h"
#include "fc_log.h"
#include "worker.h"

#define JOB_KEY_TTL_S (7 * 86400)

static void batch_free(batch *b) {
    for (size_t i = 0; b->jobs && i < b->msg.nitems; i++) {
        free(b->jobs[i].request);
        for (int s = 0; s < FC_STAGES_MAX; s++) free(b->jobs[i].results[s]);
    }
    free(b->jobs);
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

static batch *new_batch(worker *w, const fc_delivery *d) {
    batch *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->tag = d->tag;
    b->received_ms = now_ms();
    b->next = w->batches;
    w->batches = b;
    atomic_fetch_add(&w->m->held_batches, 1);
    return b;
}

/* give_up_crashed dead-letters a batch on its last allowed delivery: it came back unsettled
 * DELIVERY_LIMIT times (the workers holding it died or lost their connection), so one more try
 * would most likely crash one more worker. Done here rather than by the broker's delivery limit
 * so its items are recorded as failed and --wait sees them. */
static void give_up_crashed(worker *w, batch *b, const fc_delivery *d) {
    fc_warn("batch %s came back unsettled %ld times (workers died holding it): dead-lettering it", d->message_id,
            d->delivery_count);
    for (size_t i = 0; i < b->msg.nitems; i++) {
        job *j = &b->jobs[i];
        j->err_class = FC_CLASS_CRASHED;
        snprintf(j->error, sizeof(j->error),
                 "batch delivered %ld times without being settled: the workers holding it died or lost their "
                 "connection", d->delivery_count + 1);
        batch_job_done(w, j, OUT_DEAD);
    }
}

void batch_on_delivery(worker *w, const fc_delivery *d) {
    batch *b = new_batch(w, d);
    if (!b) {
        fc_amqp_nack(w->amqp, d->tag, 1);
        return;
    }
    char why[256];
    if (fc_message_decode_batch(d->body, d->len, &b->msg, why, sizeof(why)) != FC_OK) {
        snprintf(b->poison, sizeof(b->poison), "%s", why);
        b->raw = malloc(d->len ? d->len : 1);
        if (b->raw) memcpy(b->raw, d->body, d->len);
        b->raw_len = d->len;
        fc_warn("poison message '%s' (%zu bytes): %s; dead-lettering it", d->message_id, d->len, why);
        atomic_fetch_add(&w->m->batches_poison, 1);
        return; /* settled by batch_settle_ready */
    }
    b->jobs = calloc(b->msg.nitems, sizeof(*b->jobs));
    if (!b->jobs) {
        unlink_batch(w, b);
        batch_free(b);
        fc_amqp_nack(w->amqp, d->tag, 1);
        return;
    }
    b->open = b->msg.nitems;
    b->start_ms = b->msg.hdr.not_before_ms > 0 ? b->msg.hdr.not_before_ms - (int64_t)time(NULL) * 1000 + now_ms() : 0;
    for (size_t i = 0; i < b->msg.nitems; i++) {
        b->jobs[i].b = b;
        b->jobs[i].item = &b->msg.items[i];
        b->jobs[i].stage = 1;
    }
    fc_debug("batch %s: %zu items, attempt %d", d->message_id, b->msg.nitems, b->msg.hdr.attempt);
    if (d->delivery_count >= w->cfg->delivery_limit) {
        give_up_crashed(w, b, d);
        return;
    }
    if (b->start_ms <= now_ms()) {
        b->started = 1;
        cache_lookup_batch(w, b);
    }
}

void batch_job_done(worker *w, job *j, int outcome) {
    j->state = JOB_DONE;
    j->outcome = outcome;
    j->b->open--;
    switch (outcome) {
    case OUT_OK: atomic_fetch_add(&w->m->items_ok, 1); break;
    case OUT_DEAD: atomic_fetch_add(&w->m->items_dead, 1); break;
    case OUT_RETRY: atomic_fetch_add(&w->m->items_retried, 1); break;
    default: atomic_fetch_add(&w->m->items_unfinished, 1); break;
    }
}

/* ---- outcome messages ---------------------------------------------------------- */

/* append_result appends one succeeded item: the item, the processor's result and the usage. */
static int append_result(worker *w, fc_buf *o, const job *j) {
    fc_buf item = {0};
    int rc = fc_message_item(&item, j->item, NULL);
    if (rc == FC_OK) rc = fc_buf_append(o, item.data, item.len - 1); /* reopen the object */
    fc_buf_free(&item);
    if (rc == FC_OK) rc = w->proc.result(w->proc.self, j->results, o);
    if (rc == FC_OK)
        rc = fc_buf_printf(o, ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,\"calls\":%d,"
                              "\"cache_hits\":%d}}",
                           j->prompt_tokens, j->completion_tokens, j->calls, j->cache_hits);
    return rc;
}

static int append_failed(fc_buf *o, const job *j, int attempts) {
    int rc = fc_message_item(o, j->item, NULL);
    if (rc != FC_OK) return rc;
    o->len--; /* reopen the object */
    rc = fc_buf_puts(o, ",\"error\":{\"class\":");
    if (rc == FC_OK) rc = fc_json_str(o, fc_class_name(j->err_class));
    if (rc == FC_OK) rc = fc_buf_printf(o, ",\"http_status\":%d,\"attempts\":%d,\"message\":", j->http_status, attempts);
    if (rc == FC_OK) rc = fc_json_str(o, j->error);
    if (rc == FC_OK) rc = fc_buf_puts(o, "}}");
    return rc;
}

/* build collects the jobs with the given outcome into a message body; returns the count. */
static size_t build(worker *w, batch *b, int outcome, const fc_batch_hdr *h, fc_buf *o) {
    size_t n = 0;
    fc_buf_reset(o);
    if (outcome == OUT_OK) {
        fc_buf_printf(o, "{\"schema\":%d,\"job_id\":", FC_SCHEMA_VERSION);
        fc_json_str(o, h->job_id);
        fc_buf_printf(o, ",\"batch\":%ld,\"worker\":", h->batch);
        fc_json_str(o, w->name);
        fc_buf_puts(o, ",\"items\":[");
    } else {
        fc_message_batch_open(o, h);
    }
    for (size_t i = 0; i < b->msg.nitems; i++) {
        const job *j = &b->jobs[i];
        if (j->outcome != outcome) continue;
        if (n++) fc_buf_puts(o, ",");
        if (outcome == OUT_OK) append_result(w, o, j);
        else if (outcome == OUT_DEAD) append_failed(o, j, b->msg.hdr.attempt);
        else fc_message_item(o, j->item, j->error[0] ? j->error : b->msg.last_error[i]);
    }
    fc_message_batch_close(o);
    return n;
}

static void iso_now(char *out, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int publish(worker *w, batch *b, const char *exchange_suffix, const char *key, const char *msgid,
                   const fc_amqp_field *hdrs, size_t nh, const fc_buf *body) {
    char exchange[FC_NAME_MAX];
    uint64_t seq;
    fc_topology_name(exchange, w->cfg->queue_prefix, exchange_suffix);
    fc_amqp_props p = {msgid, NULL, hdrs, nh};
    int rc = fc_amqp_publish(w->amqp, exchange, key, &p, body->data, body->len, &seq);
    if (rc != FC_OK) return rc;
    if (b->confirms_left++ == 0) b->seq_lo = seq;
    b->seq_hi = seq;
    return FC_OK;
}

/* dead_headers fills the headers an operator reads in the management UI. */
static size_t dead_headers(worker *w, batch *b, const job *first, fc_amqp_field *h, char *when) {
    iso_now(when, 32);
    size_t n = 0;
    h[n++] = (fc_amqp_field){"x-error", first ? first->error : b->poison, 0, 0};
    h[n++] = (fc_amqp_field){"x-error-class", first ? fc_class_name(first->err_class) : "poison", 0, 0};
    h[n++] = (fc_amqp_field){"x-http-status", NULL, first ? first->http_status : 0, 1};
    h[n++] = (fc_amqp_field){"x-attempts", NULL, b->poison[0] ? 0 : b->msg.hdr.attempt, 1};
    h[n++] = (fc_amqp_field){"x-job-id", b->poison[0] ? "" : b->msg.hdr.job_id, 0, 0};
    h[n++] = (fc_amqp_field){"x-worker", w->name, 0, 0};
    h[n++] = (fc_amqp_field){"x-failed-at", when, 0, 0};
    return n;
}

static const job *first_with(const batch *b, int outcome) {
    for (size_t i = 0; i < b->msg.nitems; i++)
        if (b->jobs[i].outcome == outcome) return &b->jobs[i];
    return NULL;
}

static long retry_delay(worker *w, int attempt) {
    int i = attempt - 1 < w->cfg->nretry_delays ? attempt - 1 : w->cfg->nretry_delays - 1;
    return w->cfg->retry_delays[i];
}

static int publish_retry(worker *w, batch *b) {
    fc_batch_hdr h = b->msg.hdr;
    long delay = retry_delay(w, h.attempt);
    char key[32], mid[256], suffix[32];
    h.attempt++;
    /* Jitter: the delay queue holds it for `delay`; the worker adds up to a tenth more. */
    h.not_before_ms = (long long)time(NULL) * 1000 + delay + rand() % (delay / 10 + 1);
    fc_topology_delay_key(key, sizeof(key), delay);
    snprintf(suffix, sizeof(suffix), "r%llx", (unsigned long long)b->tag ^ (unsigned long long)now_ms());
    fc_message_batch_id(mid, sizeof(mid), &h, suffix);
    build(w, b, OUT_RETRY, &h, &w->scratch);
    return publish(w, b, "retry", key, mid, NULL, 0, &w->scratch);
}

/* route_exhausted turns retryable failures on their last attempt into dead letters. */
static void route_exhausted(worker *w, batch *b) {
    if (b->msg.hdr.attempt < w->cfg->max_attempts) return;
    for (size_t i = 0; i < b->msg.nitems; i++)
        if (b->jobs[i].outcome == OUT_RETRY) {
            b->jobs[i].outcome = OUT_DEAD;
            size_t n = strlen(b->jobs[i].error);
            snprintf(b->jobs[i].error + n, sizeof(b->jobs[i].error) - n, " (gave up after %d attempts)",
                     b->msg.hdr.attempt);
        }
}

static int publish_outcomes(worker *w, batch *b) {
    char mid[256], when[32];
    fc_amqp_field hdrs[8];
    int rc = FC_OK;
    route_exhausted(w, b);
    fc_message_batch_id(mid, sizeof(mid), &b->msg.hdr, NULL);
    size_t base = strlen(mid);
    if (build(w, b, OUT_OK, &b->msg.hdr, &w->scratch)) {
        snprintf(mid + base, sizeof(mid) - base, ".ok");
        rc = publish(w, b, "results", b->msg.hdr.job_id, mid, NULL, 0, &w->scratch);
    }
    if (rc == FC_OK && first_with(b, OUT_RETRY)) rc = publish_retry(w, b);
    if (rc == FC_OK && build(w, b, OUT_DEAD, &b->msg.hdr, &w->scratch)) {
        snprintf(mid + base, sizeof(mid) - base, ".dead");
        size_t nh = dead_headers(w, b, first_with(b, OUT_DEAD), hdrs, when);
        rc = publish(w, b, "dead", "", mid, hdrs, nh, &w->scratch);
    }
    if (rc == FC_OK && build(w, b, OUT_UNFINISHED, &b->msg.hdr, &w->scratch)) {
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "c%llx", (unsigned long long)now_ms());
        fc_message_batch_id(mid, sizeof(mid), &b->msg.hdr, suffix);
        rc = publish(w, b, "batches", "", mid, NULL, 0, &w->scratch);
    }
    return rc;
}

static int publish_poison(worker *w, batch *b) {
    char when[32], mid[64];
    fc_amqp_field hdrs[8];
    size_t nh = dead_headers(w, b, NULL, hdrs, when);
    fc_buf raw = {b->raw, b->raw_len, b->raw_len, 0};
    snprintf(mid, sizeof(mid), "poison-%llx", (unsigned long long)b->tag ^ (unsigned long long)now_ms());
    return publish(w, b, "dead", "", mid, hdrs, nh, &raw);
}

/* ---- settling ------------------------------------------------------------------ */

batch *batch_find_settling(worker *w, uint64_t seq) {
    for (batch *b = w->batches; b; b = b->next)
        if (b->settling && seq >= b->seq_lo && seq <= b->seq_hi) return b;
    return NULL;
}

/* An argv under construction for one pipelined Redis command. */
typedef struct cmd {
    const char **argv;
    int argc;
} cmd;

static int cmd_add(cmd *c, const char *arg) {
    c->argv[c->argc++] = arg;
    return FC_OK;
}

/* record writes the final outcomes to the job's Redis record, which --wait reads, in one
 * round trip: HSET of every outcome, HSET of the failures, the usage counters and the TTLs. */
static int record(worker *w, batch *b) {
    if (b->poison[0] || b->recorded) return FC_OK;
    size_t n = b->msg.nitems;
    char keys[3][200], counts[4][24], ttl[16];
    const char *p = w->cfg->queue_prefix, *id = b->msg.hdr.job_id;
    snprintf(keys[0], sizeof(keys[0]), "%s:job:{%s}:outcome", p, id);
    snprintf(keys[1], sizeof(keys[1]), "%s:job:{%s}:failed", p, id);
    snprintf(keys[2], sizeof(keys[2]), "%s:job:{%s}:stats", p, id);
    snprintf(ttl, sizeof(ttl), "%d", JOB_KEY_TTL_S);
    long sums[4] = {0};
    char (*pos)[24] = calloc(n, 24);
    char **failed = calloc(n, sizeof(*failed));
    const char **args = calloc(4 * n + 40, sizeof(*args));
    int rc = pos && failed && args ? FC_OK : FC_ENOMEM;
    cmd c[9];
    int ncmd = 0;
    if (rc == FC_OK) {
        cmd outcome = {args, 0}, fails = {args + 2 * n + 2, 0};
        cmd_add(&outcome, "HSET"), cmd_add(&outcome, keys[0]);
        cmd_add(&fails, "HSET"), cmd_add(&fails, keys[1]);
        for (size_t i = 0; i < n; i++) {
            job *j = &b->jobs[i];
            sums[0] += j->calls, sums[1] += j->prompt_tokens, sums[2] += j->completion_tokens, sums[3] += j->cache_hits;
            if (j->outcome != OUT_OK && j->outcome != OUT_DEAD) continue;
            snprintf(pos[i], 24, "%lld", j->item->position);
            cmd_add(&outcome, pos[i]), cmd_add(&outcome, j->outcome == OUT_OK ? "ok" : "dead");
            if (j->outcome != OUT_DEAD) continue;
            fc_buf f = {0};
            append_failed(&f, j, b->msg.hdr.attempt);
            failed[i] = fc_buf_steal(&f);
            cmd_add(&fails, pos[i]), cmd_add(&fails, failed[i]);
        }
        if (outcome.argc > 2) c[ncmd++] = outcome;
        if (fails.argc > 2) c[ncmd++] = fails;
        static const char *names[4] = {"api_calls", "prompt_tokens", "completion_tokens", "cache_hits"};
        const char **rest = args + 4 * n + 4;
        for (int k = 0; k < 4; k++, rest += 4) {
            snprintf(counts[k], sizeof(counts[k]), "%ld", sums[k]);
            rest[0] = "HINCRBY", rest[1] = keys[2], rest[2] = names[k], rest[3] = counts[k];
            c[ncmd++] = (cmd){rest, 4};
        }
        for (int k = 0; k < 3; k++, rest += 3) {
            rest[0] = "EXPIRE", rest[1] = keys[k], rest[2] = ttl;
            c[ncmd++] = (cmd){rest, 3};
        }
        int argcs[9];
        const char **argvs[9];
        for (int k = 0; k < ncmd; k++) argcs[k] = c[k].argc, argvs[k] = c[k].argv;
        rc = fc_redis_pipeline(w->redis, NULL, (size_t)ncmd, argcs, argvs, NULL);
    }
    for (size_t i = 0; failed && i < n; i++) free(failed[i]);
    free(failed);
    free(pos);
    free(args);
    if (rc == FC_OK) b->recorded = 1;
    return rc == FC_OK ? FC_OK : FC_EREDIS;
}

void batch_on_confirm(worker *w, uint64_t seq, int status) {
    batch *b = batch_find_settling(w, seq);
    if (!b) return;
    b->confirms_left--;
    if (status != FC_OK) {
        b->confirm_failed = 1;
        fc_error("broker refused an outcome message: %s", fc_strerror(status));
    }
}

/* start_settling publishes the batch's outcome messages. */
static void start_settling(worker *w, batch *b) {
    b->settling = 1;
    int rc = b->poison[0] ? publish_poison(w, b) : publish_outcomes(w, b);
    if (rc != FC_OK) fc_warn("publishing outcomes failed: %s", fc_amqp_errstr(w->amqp));
}

/* finish acks (or, when the broker refused an outcome, requeues) a settled batch. */
static void finish(worker *w, batch *b) {
    if (b->confirm_failed) {
        fc_amqp_nack(w->amqp, b->tag, 1);
    } else {
        int64_t now = now_ms();
        if (now < b->record_retry_ms) return;
        if (record(w, b) != FC_OK) {
            /* Held unacked until Redis answers: --wait counts outcomes there. */
            if (!b->record_retry_ms)
                fc_warn("cannot record outcomes in Redis (%s); retrying every second", fc_redis_errstr(w->redis));
            b->record_retry_ms = now + 1000;
            return;
        }
        fc_amqp_ack(w->amqp, b->tag);
        atomic_fetch_add(&w->m->batches_done, 1);
    }
    unlink_batch(w, b);
    batch_free(b);
}

/* batch_settle_ready publishes the outcomes of finished batches and settles the confirmed ones.
 * Nothing settles on a broken connection: a publish that failed has no confirm to wait for
 * (confirms_left may be 0), and recording such a batch in Redis would report outcomes that were
 * never published. ensure_broker drops the batch; the broker redelivers it. */
void batch_settle_ready(worker *w) {
    batch *next;
    for (batch *b = w->batches; b && fc_amqp_ok(w->amqp); b = next) {
        next = b->next;
        if (!b->settling && (b->open == 0 || b->poison[0])) start_settling(w, b);
        if (b->settling && b->confirms_left == 0 && fc_amqp_ok(w->amqp)) finish(w, b);
    }
}

/* Checkpoint levels: how a batch that may not run on must stop. */
enum { KEEP_GOING, STOP_NEW, STOP_NOW };

/* stop_level says whether a batch must stop. No delivery is held past HOLD_LIMIT: a batch
 * starts no new call once held HOLD_LIMIT - API_TIMEOUT (at least half of HOLD_LIMIT), so that
 * calls in flight, each bounded by API_TIMEOUT, can finish, and at HOLD_LIMIT the calls still in
 * flight are abandoned. Shutting down, or while the API rejects this worker's credentials (until
 * the next probe is due: other workers' keys may be good), it also starts no new call; at the
 * shutdown deadline calls in flight are abandoned. */
static int stop_level(worker *w, const batch *b, int64_t now) {
    if (b->settling || b->poison[0] || b->open == 0) return KEEP_GOING;
    int64_t held = now - b->received_ms, limit = w->cfg->hold_limit_ms;
    int64_t stop_new = limit - w->cfg->api_timeout_ms > limit / 2 ? limit - w->cfg->api_timeout_ms : limit / 2;
    if (held >= limit) return STOP_NOW;
    if (w->stopping && now >= w->stop_deadline_ms) return STOP_NOW;
    if (w->auth_blocked && now < w->auth_probe_ms) return STOP_NEW;
    return held >= stop_new || w->stopping ? STOP_NEW : KEEP_GOING;
}

/* checkpoint ends a batch early: queued jobs and (if cancel_inflight) calls in flight become
 * unfinished, to be re-published as a continuation batch. */
static void checkpoint(worker *w, batch *b, int cancel_inflight) {
    calls_abandon_queued(w, b);
    for (size_t i = 0; i < b->msg.nitems; i++) {
        job *j = &b->jobs[i];
        if (j->outcome != OUT_NONE) continue;
        if (j->state == JOB_INFLIGHT) {
            if (!cancel_inflight) continue;
            fc_http_cancel(w->http, j);
            w->inflight--;
        }
        batch_job_done(w, j, OUT_UNFINISHED);
    }
}

void batch_checkpoint_due(worker *w) {
    int64_t now = now_ms();
    for (batch *b = w->batches; b; b = b->next) {
        int level = stop_level(w, b, now);
        if (level != KEEP_GOING) {
            if (level == STOP_NOW)
                fc_info("batch %s-%ld: checkpointing %zu unfinished items, abandoning its calls in flight",
                        b->msg.hdr.job_id, b->msg.hdr.batch, b->open);
            else if (!b->checkpointing && w->auth_blocked)
                fc_info("batch %s-%ld: handing back %zu unfinished items while the API rejects the credentials",
                        b->msg.hdr.job_id, b->msg.hdr.batch, b->open);
            else if (!b->checkpointing && !w->stopping)
                fc_info("batch %s-%ld held for %lld ms: checkpointing; calls in flight may finish",
                        b->msg.hdr.job_id, b->msg.hdr.batch, (long long)(now - b->received_ms));
            b->checkpointing = 1;
            checkpoint(w, b, level == STOP_NOW);
        } else if (!b->started && !b->poison[0] && b->start_ms <= now) {
            b->started = 1;
            cache_lookup_batch(w, b);
        }
    }
}

void batch_drop_all(worker *w) {
    fc_http_cancel_all(w->http, NULL, NULL);
    w->runq = w->runq_tail = w->timers = NULL;
    w->inflight = 0;
    while (w->batches) {
        batch *b = w->batches;
        unlink_batch(w, b);
        batch_free(b);
    }
}
