/* `dead list|replay|purge`: one pass over P.dead. The dead-letter queue is consumed with manual acks,
 * at most as many deliveries as it held when the pass began (later arrivals, and the remainders this
 * pass publishes back, are left alone), and the connection is closed at the end: every message not
 * acked returns to the queue where it was, so `list` removes and reorders nothing.
 *
 * Replay, for each selected dead letter (a partly selected one is split):
 *   1. h = sha256 of the dead letter (message id, x-failed-at, body). P:replayed:<h> exists: its
 *      replacement was confirmed by an earlier pass that died before its ack: ack it, publish nothing.
 *   2. HDEL the selected items from the job's outcome and failed records (a waiting producer waits
 *      for them again); declare the job's results queue again, so results of a finished job wait there.
 *   3. Publish the replacement batch (attempt 1, errors dropped) to P.batches, and the remainder (the
 *      items not selected) back to P.dead with the same headers; wait for both confirms.
 *   4. SET P:replayed:<h> (7 days), then ack the dead letter.
 * A kill at any point loses nothing (the dead letter returns to P.dead until acked); only a kill between
 * the confirms of step 3 and the SET of step 4 publishes a replacement twice, which the worker's result
 * cache and the producer's dedup by position make invisible. The markers this pass set are deleted once
 * its acks are known to have reached the broker. A partial purge publishes the remainder the same way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "fc_buf.h"
#include "fc_deadletter.h"
#include "fc_error.h"
#include "fc_message.h"
#include "fc_sha256.h"
#include "fc_topology.h"

#define IDLE_S 3.0            /* no delivery for this long: the rest of P.dead is held by another consumer */
#define CONFIRM_WAIT_S 30.0   /* longest wait for a confirm */
#define MARKER_TTL "604800"   /* seconds a replay marker lives: as long as a job's record */
#define PREFETCH_MAX 65535    /* basic.qos counts in 16 bits; beyond, no prefetch limit */
#define WINDOW 32             /* dead letters whose replacements await confirms at once */
#define BACKLOG_MAX_BYTES (256L << 20) /* selected dead letters kept in memory; beyond, left for the next run */

enum mode { MODE_LIST, MODE_REPLAY, MODE_PURGE };

static const char *const classes[] = {"permanent", "retryable", "poison", "crashed", "cancelled"};

/* A dead letter whose replacement or remainder awaits the broker's confirms. */
typedef struct op {
    uint64_t tag;               /* its delivery */
    uint64_t seq[2];            /* confirm numbers of its publishes; 0 = none */
    int pending;                /* confirms still awaited */
    int failed;                 /* a publish was refused */
    long items;                 /* items it replays or removes */
    char marker[FC_KEY_MAX];
    char message_id[160];
} op;

/* A selected dead letter waiting its turn: the delivery copied (d points into the copies), decoded. */
typedef struct work {
    fc_delivery d;
    char *body, *message_id;
    fc_amqp_field *headers;     /* d.nheaders, keys and strings owned */
    fc_dead_letter *dl;
    unsigned char *sel;
    size_t nsel;
    struct work *next;
} work;

/* A job seen in this pass: whether it is cancelled, whether its results queue was declared again. */
typedef struct job_seen {
    char id[FC_JOB_ID_MAX + 1];
    int cancelled;
    int declared;
} job_seen;

typedef struct sweep {
    admin *ad;
    int mode;
    int dry;                    /* purge without --yes: list what would go */
    const char *job, *reason;
    long long left;             /* items --limit still allows; -1 = no limit */
    long expected;              /* messages in P.dead when the pass began */
    long seen;                  /* of those, delivered so far */
    double last_event;          /* mono_s() of the last delivery or confirm */
    double next_slot;           /* --rate: when the next dead letter may be replayed */
    char dead_q[FC_NAME_MAX], batches_x[FC_NAME_MAX];
    fc_amqp *side;              /* a second connection for declarations: a refused one closes its channel */
    op *ops;
    size_t nops, capops;
    char **own;                 /* message ids of the remainders published to P.dead in this pass */
    size_t nown, capown;
    char **markers;             /* replay markers set in this pass */
    size_t nmarkers, capmarkers;
    job_seen *jobs;
    size_t njobs, capjobs;
    work *head, *tail;          /* replay, partial purge: selected dead letters not yet handled, in order */
    size_t backlog_bytes;
    json_object *letters;       /* list, dry purge: the selected dead letters */
    long letters_matched, items_matched;
    long letters_done, items_done, letters_before, poison_skipped, not_matching, cancelled_skipped, failed;
    long deferred;              /* selected, but left for the next run (memory) */
    int fatal;                  /* ADMIN_INFRA once the broker or Redis is lost */
} sweep;

/* grow makes room for one more element of size sz in *v (count n, capacity *cap): 0 or FC_ENOMEM. */
static int grow(void **v, size_t n, size_t *cap, size_t sz) {
    if (n < *cap) return FC_OK;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, c * sz);
    if (!p) return FC_ENOMEM;
    *v = p;
    *cap = c;
    return FC_OK;
}

static int push_str(char ***v, size_t *n, size_t *cap, const char *s) {
    char *copy = strdup(s);
    if (!copy || grow((void **)v, *n, cap, sizeof(char *)) != FC_OK) {
        free(copy);
        return FC_ENOMEM;
    }
    (*v)[(*n)++] = copy;
    return FC_OK;
}

static int is_own(const sweep *s, const char *id) {
    for (size_t i = 0; i < s->nown; i++)
        if (strcmp(s->own[i], id) == 0) return 1;
    return 0;
}

static void lost_broker(sweep *s) {
    if (!s->fatal) admin_say("lost the broker: %s", fc_amqp_errstr(s->ad->amqp));
    s->fatal = ADMIN_INFRA;
}

static void lost_redis(sweep *s) {
    if (!s->fatal) admin_redis_lost(s->ad);
    s->fatal = ADMIN_INFRA;
}

/* ---- listing ---- */

static json_object *str_or_null(const char *s) { return s ? json_object_new_string(s) : NULL; }

static json_object *items_json(const fc_dead_letter *dl, const unsigned char *sel) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; dl && i < fc_dead_letter_nitems(dl); i++) {
        if (!sel[i]) continue;
        const fc_dead_item *it = fc_dead_letter_item(dl, i);
        json_object *o = json_object_new_object();
        json_add(o, "position", json_object_new_int64(it->position));
        json_add(o, "term", json_object_new_string(it->term));
        json_add(o, "type", json_object_new_string(it->type));
        json_add(o, "class", json_object_new_string(it->cls));
        json_add(o, "http_status", json_object_new_int(it->http_status));
        json_add(o, "attempts", json_object_new_int(it->attempts));
        json_add(o, "message", json_object_new_string(it->message));
        json_object_array_add(arr, o);
    }
    return arr;
}

/* note_letter adds a selected dead letter to the listing (dl NULL: a poison message, why says why). */
static void note_letter(sweep *s, const fc_delivery *d, const fc_dead_letter *dl, const unsigned char *sel,
                        const char *why) {
    json_object *o = json_object_new_object();
    const char *job = fc_delivery_header(d, "x-job-id");
    json_add(o, "message_id", json_object_new_string(d->message_id));
    json_add(o, "job_id", dl ? json_object_new_string(fc_dead_letter_job(dl)) : str_or_null(job && *job ? job : NULL));
    json_add(o, "batch", dl ? json_object_new_int64(fc_dead_letter_batch(dl)) : NULL);
    json_add(o, "class", str_or_null(fc_delivery_header(d, "x-error-class")));
    json_add(o, "error", str_or_null(fc_delivery_header(d, "x-error")));
    json_add(o, "http_status", json_object_new_int64(fc_delivery_header_num(d, "x-http-status", 0)));
    json_add(o, "attempts", json_object_new_int64(fc_delivery_header_num(d, "x-attempts", 0)));
    json_add(o, "failed_at", str_or_null(fc_delivery_header(d, "x-failed-at")));
    json_add(o, "worker", str_or_null(fc_delivery_header(d, "x-worker")));
    json_add(o, "replayable", json_object_new_boolean(dl != NULL));
    if (!dl) json_add(o, "not_replayable_because", json_object_new_string(why));
    json_add(o, "items", items_json(dl, sel));
    json_object_array_add(s->letters, o);
}

/* ---- replay and purge ---- */

/* letter_hash writes the hex sha256 of the dead letter: its message id, x-failed-at and body. The id and
 * the time tell apart a dead letter from a later one with the same body (the same items failing again
 * the same way after a replay). */
static void letter_hash(const fc_delivery *d, char hex[FC_SHA256_HEX_LEN + 1]) {
    const char *at = fc_delivery_header(d, "x-failed-at");
    uint8_t digest[FC_SHA256_DIGEST_LEN];
    fc_sha256 c;
    fc_sha256_init(&c);
    fc_sha256_update(&c, d->message_id, strlen(d->message_id));
    fc_sha256_update(&c, "\n", 1);
    fc_sha256_update(&c, at ? at : "", at ? strlen(at) : 0);
    fc_sha256_update(&c, "\n", 1);
    fc_sha256_update(&c, d->body, d->len);
    fc_sha256_final(&c, digest);
    fc_sha256_to_hex(digest, hex);
}

/* job_of returns the pass's record of a job, reading whether it is cancelled the first time; NULL when
 * Redis failed (s->fatal set) or without memory. */
static job_seen *job_of(sweep *s, const char *id) {
    for (size_t i = 0; i < s->njobs; i++)
        if (strcmp(s->jobs[i].id, id) == 0) return &s->jobs[i];
    if (grow((void **)&s->jobs, s->njobs, &s->capjobs, sizeof(*s->jobs)) != FC_OK) return NULL;
    job_seen *j = &s->jobs[s->njobs];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    char key[FC_KEY_MAX];
    job_key(key, s->ad, id, FC_JOB_META);
    fc_reply r = {0};
    if (fc_redis_cmd(s->ad->redis, &r, "HEXISTS %s cancelled_ms", key) != FC_OK) {
        fc_reply_free(&r);
        lost_redis(s);
        return NULL;
    }
    j->cancelled = r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    s->njobs++;
    return j;
}

/* declare_results declares the job's results queue again (as the producer does), on the side
 * connection, so results of a job whose producer is gone wait there for `results`. A user that may
 * not declare it is told once; the results then go to P.results.unrouted, where `results` finds them too. */
static void declare_results(sweep *s, job_seen *j) {
    if (j->declared) return;
    j->declared = 1;
    int rc = s->side && fc_amqp_ok(s->side) ? FC_OK : fc_amqp_connect(s->side);
    if (rc == FC_OK) rc = fc_topology_declare_results(s->side, s->ad->cfg->queue_prefix, j->id);
    if (rc != FC_OK)
        admin_say("cannot declare the results queue of job %s (%s): its late results go to %s.results.unrouted, "
                  "where `results %s` finds them", j->id, fc_amqp_errstr(s->side), s->ad->cfg->queue_prefix, j->id);
}

/* reset_records removes the selected items from the job's outcome and failed records. */
static int reset_records(sweep *s, const fc_dead_letter *dl, const unsigned char *sel, size_t nsel) {
    char keys[2][FC_KEY_MAX];
    job_key(keys[0], s->ad, fc_dead_letter_job(dl), FC_JOB_OUTCOME);
    job_key(keys[1], s->ad, fc_dead_letter_job(dl), FC_JOB_FAILED);
    char (*pos)[24] = calloc(nsel, sizeof(*pos));
    const char **argv[2];
    argv[0] = calloc(nsel + 2, sizeof(char *));
    argv[1] = calloc(nsel + 2, sizeof(char *));
    int argc[2] = {(int)nsel + 2, (int)nsel + 2}, rc = pos && argv[0] && argv[1] ? FC_OK : FC_ENOMEM;
    for (size_t i = 0, k = 0; rc == FC_OK && i < fc_dead_letter_nitems(dl); i++) {
        if (!sel[i]) continue;
        snprintf(pos[k], sizeof(pos[k]), "%lld", fc_dead_letter_item(dl, i)->position);
        argv[0][k + 2] = argv[1][k + 2] = pos[k];
        k++;
    }
    if (rc == FC_OK) {
        argv[0][0] = argv[1][0] = "HDEL";
        argv[0][1] = keys[0];
        argv[1][1] = keys[1];
        fc_reply r[2];
        memset(r, 0, sizeof(r));
        rc = fc_redis_pipeline(s->ad->redis, r, 2, argc, argv, NULL);
        fc_reply_free(&r[0]);
        fc_reply_free(&r[1]);
    }
    free(pos);
    free(argv[0]);
    free(argv[1]);
    return rc;
}

/* publish sends body to exchange as a persistent JSON message; 0 with *seq, or the broker is lost. */
static int publish(sweep *s, const char *exchange, const char *id, const fc_amqp_field *h, size_t nh,
                   const fc_buf *body, uint64_t *seq) {
    fc_amqp_props p = {id, "application/json", h, nh};
    int rc = fc_buf_err(body);
    if (rc == FC_OK) rc = fc_amqp_publish(s->ad->amqp, exchange, "", &p, body->data, body->len, seq);
    if (rc == FC_ECONN) lost_broker(s);
    else if (rc != FC_OK) admin_say("cannot build or send a message for %s: %s", id, fc_strerror(rc));
    return rc;
}

/* remainder_headers copies the dead letter's headers, x-error and x-error-class those of the first item kept. */
static size_t remainder_headers(const fc_delivery *d, const fc_dead_letter *dl, const unsigned char *sel,
                                fc_amqp_field *h) {
    const fc_dead_item *first = NULL;
    for (size_t i = 0; !first && i < fc_dead_letter_nitems(dl); i++)
        if (!sel[i]) first = fc_dead_letter_item(dl, i);
    size_t n = 0;
    for (size_t i = 0; i < d->nheaders && n < FC_AMQP_HEADERS_MAX; i++) {
        h[n] = d->headers[i];
        if (first && !h[n].is_num && strcmp(h[n].key, "x-error") == 0 && *first->message) h[n].str = first->message;
        if (first && !h[n].is_num && strcmp(h[n].key, "x-error-class") == 0 && *first->cls) h[n].str = first->cls;
        n++;
    }
    return n;
}

/* start_op publishes the replacement (replay) and the remainder (when only part is selected) of a dead
 * letter and records what awaits their confirms. */
static void start_op(sweep *s, const fc_delivery *d, const fc_dead_letter *dl, const unsigned char *sel,
                     size_t nsel, const char *marker, const char *hex) {
    if (grow((void **)&s->ops, s->nops, &s->capops, sizeof(*s->ops)) != FC_OK) return;
    op *o = &s->ops[s->nops];
    memset(o, 0, sizeof(*o));
    o->tag = d->tag;
    o->items = (long)nsel;
    snprintf(o->marker, sizeof(o->marker), "%s", marker);
    snprintf(o->message_id, sizeof(o->message_id), "%s", d->message_id);
    fc_buf body = {0};
    char id[256];
    int rc = FC_OK;
    if (s->mode == MODE_REPLAY) {
        fc_dead_letter_replacement(dl, sel, &body);
        snprintf(id, sizeof(id), "%s-replay-%.12s", d->message_id, hex);
        rc = publish(s, s->batches_x, id, NULL, 0, &body, &o->seq[0]);
        o->pending += rc == FC_OK;
    }
    if (rc == FC_OK && nsel < fc_dead_letter_nitems(dl)) {
        fc_amqp_field h[FC_AMQP_HEADERS_MAX];
        size_t nh = remainder_headers(d, dl, sel, h);
        fc_buf_reset(&body);
        fc_dead_letter_remainder(dl, sel, &body);
        snprintf(id, sizeof(id), "%s-rest-%.12s", d->message_id, hex);
        if (push_str(&s->own, &s->nown, &s->capown, id) != FC_OK) rc = FC_ENOMEM;
        if (rc == FC_OK) rc = publish(s, s->dead_q, id, h, nh, &body, &o->seq[1]);
        o->pending += rc == FC_OK;
    }
    fc_buf_free(&body);
    if (rc != FC_OK) {
        s->failed++;
        return; /* what was published is confirmed or not; the dead letter stays (it returns at close) */
    }
    s->nops++;
}

/* finish_op acks a dead letter whose publishes were all confirmed, after setting its marker. */
static void finish_op(sweep *s, op *o) {
    if (o->failed) {
        s->failed++;
        return;
    }
    fc_reply r = {0};
    int rc = fc_redis_cmd(s->ad->redis, &r, "SET %s 1 EX %s", o->marker, MARKER_TTL);
    fc_reply_free(&r);
    if (rc != FC_OK) {
        lost_redis(s);
        return;
    }
    push_str(&s->markers, &s->nmarkers, &s->capmarkers, o->marker);
    if (fc_amqp_ack(s->ad->amqp, o->tag) != FC_OK) {
        lost_broker(s);
        return;
    }
    s->letters_done++;
    s->items_done += o->items;
}

static void on_confirm(void *ud, uint64_t seq, int status) {
    sweep *s = ud;
    s->last_event = mono_s();
    for (size_t i = 0; i < s->nops; i++) {
        op *o = &s->ops[i];
        if (o->seq[0] != seq && o->seq[1] != seq) continue;
        if (status != FC_OK) {
            admin_say("the broker refused a message made of dead letter %s (%s); it stays in %s", o->message_id,
                      fc_strerror(status), s->dead_q);
            o->failed = 1;
        }
        if (--o->pending == 0) {
            if (!s->fatal) finish_op(s, o);
            s->ops[i] = s->ops[--s->nops];
        }
        return;
    }
}

/* pace_wait returns the ms until --rate lets the next dead letter be replayed (0: now). */
static int pace_wait(const sweep *s) {
    double left = s->next_slot - mono_s();
    return s->mode == MODE_REPLAY && s->ad->cfg->admin_rate > 0 && left > 0 ? (int)(left * 1000) + 1 : 0;
}

static void pace_next(sweep *s) {
    double now = mono_s();
    if (s->ad->cfg->admin_rate > 0) s->next_slot = (s->next_slot > now ? s->next_slot : now) + 1.0 / s->ad->cfg->admin_rate;
}

/* already_replayed says whether the marker of a dead letter exists (-1: Redis lost). */
static int already_replayed(sweep *s, const char *marker) {
    fc_reply r = {0};
    int rc = fc_redis_cmd(s->ad->redis, &r, "EXISTS %s", marker);
    int yes = r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    if (rc != FC_OK) lost_redis(s);
    return rc != FC_OK ? -1 : yes;
}

/* ---- the backlog of selected dead letters ---- */

static void work_free(work *w) {
    if (!w) return;
    for (size_t i = 0; w->headers && i < w->d.nheaders; i++) {
        free((char *)w->headers[i].key);
        free((char *)w->headers[i].str);
    }
    free(w->headers);
    free(w->body);
    free(w->message_id);
    fc_dead_letter_free(w->dl);
    free(w->sel);
    free(w);
}

/* work_copy copies a delivery (body, message id, headers) so it outlives its callback; NULL without memory. */
static work *work_copy(const fc_delivery *d) {
    work *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->d = *d;
    w->body = malloc(d->len ? d->len : 1);
    w->message_id = strdup(d->message_id);
    w->headers = calloc(d->nheaders ? d->nheaders : 1, sizeof(*w->headers));
    int ok = w->body && w->message_id && w->headers;
    for (size_t i = 0; ok && i < d->nheaders; i++) {
        w->headers[i] = d->headers[i];
        w->headers[i].key = strdup(d->headers[i].key);
        w->headers[i].str = d->headers[i].is_num ? NULL : strdup(d->headers[i].str);
        ok = w->headers[i].key && (d->headers[i].is_num || w->headers[i].str);
    }
    if (!ok) {
        w->d.nheaders = d->nheaders;
        work_free(w);
        return NULL;
    }
    memcpy(w->body, d->body, d->len);
    w->d.body = w->body;
    w->d.message_id = w->message_id;
    w->d.headers = w->headers;
    w->d.routing_key = "";
    w->d.death_reason = w->d.death_queue = "";
    return w;
}

/* defer queues a selected dead letter for act (taking *dl and *sel), unless the backlog is full: it is
 * then left in P.dead for the next run. */
static void defer(sweep *s, const fc_delivery *d, fc_dead_letter **dl, unsigned char **sel, size_t nsel) {
    work *w = s->backlog_bytes + d->len <= (size_t)BACKLOG_MAX_BYTES ? work_copy(d) : NULL;
    if (!w) {
        s->deferred++;
        return;
    }
    w->dl = *dl;
    w->sel = *sel;
    w->nsel = nsel;
    *dl = NULL;
    *sel = NULL;
    s->backlog_bytes += d->len;
    if (s->tail) s->tail->next = w;
    else s->head = w;
    s->tail = w;
}

/* act replays, or purges in part, a dead letter with nsel items selected. */
static void act(sweep *s, const work *w) {
    const fc_delivery *d = &w->d;
    const fc_dead_letter *dl = w->dl;
    const unsigned char *sel = w->sel;
    size_t nsel = w->nsel;
    char hex[FC_SHA256_HEX_LEN + 1], marker[FC_KEY_MAX];
    letter_hash(d, hex);
    fc_key_replayed(marker, sizeof(marker), s->ad->cfg->queue_prefix, hex);
    int before = already_replayed(s, marker);
    if (before < 0) return;
    if (before) {
        if (fc_amqp_ack(s->ad->amqp, d->tag) != FC_OK) lost_broker(s);
        else s->letters_before++;
        return;
    }
    if (s->mode == MODE_REPLAY) {
        job_seen *j = job_of(s, fc_dead_letter_job(dl));
        if (!j) return;
        if (j->cancelled) {
            s->cancelled_skipped++;
            return;
        }
        if (reset_records(s, dl, sel, nsel) != FC_OK) {
            lost_redis(s);
            return;
        }
        declare_results(s, j);
    }
    start_op(s, d, dl, sel, nsel, marker, hex);
}

/* take_poison handles a message that is not a batch. */
static void take_poison(sweep *s, const fc_delivery *d, const char *why) {
    const char *job = fc_delivery_header(d, "x-job-id");
    int match = (!s->job || (job && strcmp(job, s->job) == 0)) && (!s->reason || strcmp(s->reason, "poison") == 0) &&
                s->left != 0;
    if (!match) {
        s->not_matching++;
        return;
    }
    s->letters_matched++;
    s->items_matched++;
    if (s->left > 0) s->left--;
    if (s->mode == MODE_LIST || s->dry) note_letter(s, d, NULL, NULL, why);
    else if (s->mode == MODE_REPLAY) s->poison_skipped++;
    else if (fc_amqp_ack(s->ad->amqp, d->tag) != FC_OK) lost_broker(s);
    else s->letters_done++, s->items_done++;
}

static void take_letter(sweep *s, const fc_delivery *d, fc_dead_letter **dlp) {
    fc_dead_letter *dl = *dlp;
    size_t n = fc_dead_letter_nitems(dl);
    unsigned char *sel = calloc(n ? n : 1, 1);
    if (!sel) return;
    size_t nsel = 0;
    if (!s->job || strcmp(fc_dead_letter_job(dl), s->job) == 0)
        nsel = fc_dead_letter_select(dl, s->reason, fc_delivery_header(d, "x-error-class"), s->left, sel);
    if (nsel == 0) {
        s->not_matching++;
    } else {
        s->letters_matched++;
        s->items_matched += (long)nsel;
        if (s->left > 0) s->left -= (long long)nsel;
        if (s->mode == MODE_LIST || s->dry) note_letter(s, d, dl, sel, NULL);
        else if (s->mode == MODE_PURGE && nsel == n && fc_amqp_ack(s->ad->amqp, d->tag) != FC_OK) lost_broker(s);
        else if (s->mode == MODE_PURGE && nsel == n) s->letters_done++, s->items_done += (long)n;
        else defer(s, d, dlp, &sel, nsel);
    }
    free(sel);
}

static void on_delivery(void *ud, const fc_delivery *d) {
    sweep *s = ud;
    if (s->fatal || s->seen >= s->expected || is_own(s, d->message_id)) return;
    s->seen++;
    s->last_event = mono_s();
    fc_dead_letter *dl = NULL;
    char why[256] = "";
    int rc = fc_dead_letter_parse(d->body, d->len, &dl, why, sizeof(why));
    if (rc == FC_EPARSE) take_poison(s, d, why);
    else if (rc == FC_OK) take_letter(s, d, &dl);
    else admin_say("out of memory reading dead letter %s; it stays", d->message_id);
    fc_dead_letter_free(dl);
}

/* ---- the pass ---- */

/* finished says whether the pass is over: every dead letter it may take was seen (or none came for
 * IDLE_S, or --limit is used up) and no confirm is awaited. */
static int finished(sweep *s) {
    double quiet = mono_s() - s->last_event;
    if (s->fatal) return 1;
    if (s->head) return 0;
    if (s->nops) {
        if (quiet < CONFIRM_WAIT_S) return 0;
        admin_say("no confirm from the broker for %.0f s; %zu dead letters stay in %s", quiet, s->nops, s->dead_q);
        s->failed += (long)s->nops;
        s->nops = 0;
        return 1;
    }
    return s->seen >= s->expected || s->left == 0 || quiet >= IDLE_S;
}

/* work_off handles the backlog while fewer than WINDOW dead letters await confirms and --rate allows;
 * returns how long the next poll may wait, in ms. */
static int work_off(sweep *s) {
    while (s->head && s->nops < WINDOW && !s->fatal) {
        int wait = pace_wait(s);
        if (wait > 0) return wait < 200 ? wait : 200;
        work *w = s->head;
        s->head = w->next;
        if (!s->head) s->tail = NULL;
        s->backlog_bytes -= w->d.len;
        pace_next(s);
        act(s, w);
        work_free(w);
    }
    return 200;
}

/* run_pass consumes P.dead until finished: deliveries are decided on in their callback (listed, acked,
 * or queued), the queued ones replayed from here, between polls, so confirms are taken as they come. */
static void run_pass(sweep *s) {
    int prefetch = s->expected <= PREFETCH_MAX ? (int)s->expected : 0;
    if (s->expected == 0) return;
    if (fc_amqp_consume(s->ad->amqp, s->dead_q, prefetch) != FC_OK) {
        lost_broker(s);
        return;
    }
    fc_amqp_handler h = {on_delivery, on_confirm, NULL, s};
    s->last_event = mono_s();
    while (!finished(s)) {
        int wait = work_off(s);
        if (!s->fatal && fc_amqp_poll(s->ad->amqp, wait, &h) != FC_OK) lost_broker(s);
    }
}

/* forget_markers deletes the markers of this pass once its acks have reached the broker (after the settle
 * grace, and a passive declare answered after them on the same channel): a dead letter with the same
 * body that fails later is then replayed again, not mistaken for this one. */
static void forget_markers(sweep *s) {
    if (!s->nmarkers || s->fatal || fc_amqp_queue_depth(s->ad->amqp, s->dead_q, NULL, NULL) != FC_OK) return;
    for (size_t i = 0; i < s->nmarkers; i += 100) {
        size_t n = s->nmarkers - i < 100 ? s->nmarkers - i : 100;
        const char *argv[101] = {"DEL"};
        for (size_t k = 0; k < n; k++) argv[k + 1] = s->markers[i + k];
        fc_reply r = {0};
        fc_redis_command(s->ad->redis, &r, (int)n + 1, argv, NULL);
        fc_reply_free(&r);
    }
}

/* ---- output ---- */

static const char *jstr(json_object *o, const char *key) {
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return NULL;
    return json_object_get_string(v);
}

static void letter_rows(table *t, json_object *l) {
    json_object *items;
    json_object_object_get_ex(l, "items", &items);
    size_t n = json_object_array_length(items);
    if (n == 0) {
        char err[400];
        snprintf(err, sizeof(err), "%s (poison: cannot be replayed)", jstr(l, "error") ? jstr(l, "error") : "");
        const char *row[] = {jstr(l, "message_id"), jstr(l, "job_id"), NULL, NULL, "poison", NULL, err};
        table_row(t, row);
    }
    for (size_t i = 0; i < n; i++) {
        json_object *it = json_object_array_get_idx(items, i);
        const char *row[] = {jstr(l, "message_id"), jstr(l, "job_id"), jstr(it, "position"), jstr(it, "term"),
                             jstr(it, "class"), jstr(it, "attempts"), jstr(it, "message")};
        table_row(t, row);
    }
}

static void print_listing(const sweep *s) {
    static const char *const head[] = {"DEAD LETTER", "JOB", "POS", "TERM", "CLASS", "ATTEMPTS", "ERROR"};
    table *t = table_new(7, head);
    table_right(t, 2);
    table_max_width(t, 0, 48);
    table_max_width(t, 3, 24);
    table_max_width(t, 6, 60);
    for (size_t i = 0; i < json_object_array_length(s->letters); i++)
        letter_rows(t, json_object_array_get_idx(s->letters, i));
    if (table_rows(t)) table_print(t);
    table_free(t);
}

static int print_list(sweep *s) {
    if (s->ad->cfg->json) {
        json_object *o = json_object_new_object();
        json_add(o, "queue", json_object_new_string(s->dead_q));
        json_add(o, "messages_in_queue", json_object_new_int64(s->expected));
        json_add(o, "dead_letters", json_object_new_int64(s->letters_matched));
        json_add(o, "items", json_object_new_int64(s->items_matched));
        json_add(o, "letters", json_object_get(s->letters));
        if (print_json(o) != FC_OK) return ADMIN_NOTHING;
    } else {
        print_listing(s);
        printf("%ld items in %ld dead letters (of %ld messages in %s)%s\n", s->items_matched, s->letters_matched,
               s->expected, s->dead_q, s->mode == MODE_LIST ? "; nothing removed or reordered" : "");
    }
    if (s->dry) {
        admin_say("nothing removed: add --yes to remove these %ld items (%ld dead letters)", s->items_matched,
                  s->letters_matched);
        return ADMIN_USAGE;
    }
    return s->letters_matched ? ADMIN_OK : ADMIN_NOTHING;
}

static int print_done(sweep *s) {
    const char *verb = s->mode == MODE_REPLAY ? "replayed" : "removed";
    if (s->ad->cfg->json) {
        json_object *o = json_object_new_object();
        json_add(o, "queue", json_object_new_string(s->dead_q));
        json_add(o, s->mode == MODE_REPLAY ? "replayed_dead_letters" : "removed_dead_letters",
                 json_object_new_int64(s->letters_done));
        json_add(o, s->mode == MODE_REPLAY ? "replayed_items" : "removed_items", json_object_new_int64(s->items_done));
        json_add(o, "already_done_before", json_object_new_int64(s->letters_before));
        json_add(o, "skipped_poison", json_object_new_int64(s->poison_skipped));
        json_add(o, "skipped_cancelled_job", json_object_new_int64(s->cancelled_skipped));
        json_add(o, "not_matching", json_object_new_int64(s->not_matching));
        json_add(o, "failed", json_object_new_int64(s->failed));
        json_add(o, "left_for_next_run", json_object_new_int64(s->deferred));
        print_json(o);
    } else {
        printf("%s %ld items from %ld dead letters", verb, s->items_done, s->letters_done);
        if (s->letters_before) printf(" (and removed %ld whose replacement or remainder an interrupted run had "
                                      "published)", s->letters_before);
        if (s->mode == MODE_REPLAY)
            printf("; skipped: %ld poison (cannot be replayed), %ld of cancelled jobs, %ld not matching",
                   s->poison_skipped, s->cancelled_skipped, s->not_matching);
        else
            printf("; %ld not matching", s->not_matching);
        printf("; %ld failed (left in %s)\n", s->failed, s->dead_q);
        if (s->deferred) printf("%ld selected dead letters did not fit in memory in this run: run it again\n", s->deferred);
    }
    if (s->fatal) return s->fatal;
    return s->failed || s->deferred || s->letters_done + s->letters_before == 0 ? ADMIN_NOTHING : ADMIN_OK;
}

/* ---- setup ---- */

static int check_filters(const fc_config *c) {
    if (c->admin_job && !fc_job_id_valid(c->admin_job)) {
        admin_say("--job: '%s' is not a job id (1..64 of A-Z a-z 0-9 - _ .)", c->admin_job);
        return ADMIN_USAGE;
    }
    for (size_t i = 0; c->admin_reason && i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strcmp(c->admin_reason, classes[i]) == 0) return ADMIN_OK;
    if (c->admin_reason) {
        admin_say("--reason: '%s' is not one of permanent, retryable, poison, crashed, cancelled", c->admin_reason);
        return ADMIN_USAGE;
    }
    return ADMIN_OK;
}

/* open_queue connects and reads how many messages P.dead holds. */
static int open_queue(sweep *s) {
    admin *ad = s->ad;
    int rc = admin_connect_broker(ad);
    if (rc == ADMIN_OK && (s->mode == MODE_REPLAY || (s->mode == MODE_PURGE && !s->dry))) rc = admin_connect_redis(ad);
    if (rc != ADMIN_OK) return rc;
    long consumers = 0;
    rc = fc_amqp_queue_depth(ad->amqp, s->dead_q, &s->expected, &consumers);
    if (rc == FC_ENOTFOUND) {
        admin_say("there is no queue %s (nothing ran under QUEUE_PREFIX '%s')", s->dead_q, ad->cfg->queue_prefix);
        return ADMIN_NOTHING;
    }
    if (rc == FC_OK && s->mode == MODE_REPLAY && fc_amqp_exchange_exists(ad->amqp, s->batches_x) == FC_ENOTFOUND) {
        admin_say("there is no exchange %s to replay to (start a worker to declare the topology)", s->batches_x);
        return ADMIN_NOTHING;
    }
    if (rc != FC_OK) {
        admin_say("the broker failed: %s", fc_amqp_errstr(ad->amqp));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

static void sweep_free(sweep *s) {
    for (work *w = s->head, *next; w; w = next) {
        next = w->next;
        work_free(w);
    }
    for (size_t i = 0; i < s->nown; i++) free(s->own[i]);
    for (size_t i = 0; i < s->nmarkers; i++) free(s->markers[i]);
    free(s->own);
    free(s->markers);
    free(s->ops);
    free(s->jobs);
    json_object_put(s->letters);
    if (s->side) fc_amqp_close(s->side);
    fc_amqp_free(s->side);
}

int admin_dead(admin *ad, const char *action) {
    const fc_config *c = ad->cfg;
    sweep s;
    memset(&s, 0, sizeof(s));
    s.ad = ad;
    s.mode = strcmp(action, "replay") == 0 ? MODE_REPLAY : strcmp(action, "purge") == 0 ? MODE_PURGE : MODE_LIST;
    s.dry = s.mode == MODE_PURGE && !c->admin_yes;
    s.job = c->admin_job;
    s.reason = c->admin_reason;
    s.left = c->admin_limit > 0 ? c->admin_limit : -1;
    s.letters = json_object_new_array();
    fc_topology_name(s.dead_q, c->queue_prefix, "dead");
    fc_topology_name(s.batches_x, c->queue_prefix, "batches");
    int rc = check_filters(c);
    if (rc == ADMIN_OK && s.mode == MODE_REPLAY) {
        s.side = fc_amqp_new(c->amqp_url, (int)(c->heartbeat_ms / 1000), "flashcard-admin dead replay (declare)");
        if (!s.side || fc_amqp_set_tls(s.side, c->amqp_ca_file, c->amqp_cert_file, c->amqp_key_file) != FC_OK)
            rc = ADMIN_INFRA;
    }
    if (rc == ADMIN_OK) rc = open_queue(&s);
    if (rc == ADMIN_OK) {
        run_pass(&s);
        long acks = s.letters_done + s.letters_before;
        if (acks && fc_amqp_ok(ad->amqp)) admin_settle_grace(ad->amqp, acks);
        if (s.mode != MODE_LIST && !s.dry) forget_markers(&s);
        fc_amqp_close(ad->amqp); /* whatever was not acked returns to P.dead, in its order */
        rc = s.mode == MODE_LIST || s.dry ? print_list(&s) : print_done(&s);
        if (s.fatal) rc = s.fatal;
    }
    sweep_free(&s);
    return rc;
}
