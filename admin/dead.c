/* `dead list|replay|purge`: one pass over P.dead. The dead-letter queue is consumed with manual acks,
 * at most as many deliveries as it held when the pass began (later arrivals, and the remainders this
 * pass publishes back, are left alone), and the connection is closed at the end: every message not
 * acked returns to the queue where it was, so `list` removes and reorders nothing.
 *
 * Each delivery is decided on in its callback: listed (JSON streamed as it comes; a table of at most
 * LIST_ROWS_MAX rows), acked (a whole purge; a copy of a dead letter already seen in this pass, or one
 * whose marker says its replay is done), left (not matching, poison or a cancelled job for a replay),
 * or copied into the backlog. replay.c works the backlog off between polls, so confirms and acks come
 * as it goes; see there for what makes a replay safe to interrupt and run again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dead.h"
#include "fc_error.h"
#include "fc_message.h"
#include "fc_topology.h"

#define BACKLOG_MAX_BYTES (256L << 20) /* selected dead letters kept in memory; beyond, left for the next run */
#define LIST_ROWS_MAX 1000             /* item rows a `dead list` table shows; --json shows all */

void dead_hash(const char *id, const char *failed_at, const void *body, size_t len, char hex[FC_SHA256_HEX_LEN + 1]) {
    uint8_t digest[FC_SHA256_DIGEST_LEN];
    fc_sha256 c;
    fc_sha256_init(&c);
    fc_sha256_update(&c, id, strlen(id));
    fc_sha256_update(&c, "\n", 1);
    fc_sha256_update(&c, failed_at, strlen(failed_at));
    fc_sha256_update(&c, "\n", 1);
    fc_sha256_update(&c, body, len);
    fc_sha256_final(&c, digest);
    fc_sha256_to_hex(digest, hex);
}

const char *dead_header(const dead_work *w, const char *key) {
    for (size_t i = 0; i < w->nheaders; i++)
        if (!w->headers[i].is_num && strcmp(w->headers[i].key, key) == 0) return w->headers[i].str;
    return NULL;
}

void dead_work_free(dead_work *w) {
    if (!w) return;
    for (size_t i = 0; w->headers && i < w->nheaders; i++) {
        free((char *)w->headers[i].key);
        free((char *)w->headers[i].str);
    }
    free(w->headers);
    free(w->body);
    free(w->message_id);
    free(w->sel);
    free(w);
}

void dead_lost_broker(dead_pass *s) {
    if (!s->fatal) admin_say("lost the broker: %s", fc_amqp_errstr(s->ad->amqp));
    s->fatal = ADMIN_INFRA;
}

void dead_lost_redis(dead_pass *s) {
    if (!s->redis_lost) admin_redis_lost(s->ad);
    s->redis_lost = 1;
    s->fatal = ADMIN_INFRA;
}

int dead_ack(dead_pass *s, uint64_t tag) {
    if (fc_amqp_ack(s->ad->amqp, tag) != FC_OK) {
        dead_lost_broker(s);
        return FC_ECONN;
    }
    s->acks++;
    return FC_OK;
}

int dead_intake_done(const dead_pass *s) { return admin_reader_done(&s->rd); }

dead_job *dead_job_of(dead_pass *s, const char *id) {
    for (size_t i = 0; i < s->njobs; i++)
        if (strcmp(s->jobs[i].id, id) == 0) return &s->jobs[i];
    if (admin_grow((void **)&s->jobs, s->njobs, &s->capjobs, sizeof(*s->jobs)) != FC_OK) return NULL;
    dead_job *j = &s->jobs[s->njobs];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    char key[FC_KEY_MAX];
    admin_job_key(key, s->ad, id, FC_JOB_META);
    fc_reply r = {0};
    if (fc_redis_cmd(s->ad->redis, &r, "HEXISTS %s cancelled_ms", key) != FC_OK) {
        fc_reply_free(&r);
        dead_lost_redis(s);
        return NULL;
    }
    j->cancelled = r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    s->njobs++;
    return j;
}

/* uses_markers: replay and purge --yes take dead letters on (list and a dry purge only read). */
static int uses_markers(const dead_pass *s) { return s->mode == DEAD_REPLAY || (s->mode == DEAD_PURGE && !s->dry); }

/* ---- listing ---- */

static json_object *str_or_null(const char *s) { return s ? json_object_new_string(s) : NULL; }

static json_object *items_json(const fc_dead_letter *dl, const unsigned char *sel, const char *fallback) {
    json_object *arr = json_object_new_array();
    for (size_t i = 0; dl && i < fc_dead_letter_nitems(dl); i++) {
        if (!sel[i]) continue;
        const fc_dead_item *it = fc_dead_letter_item(dl, i);
        json_object *o = json_object_new_object();
        admin_json_add(o, "position", json_object_new_int64(it->position));
        admin_json_add(o, "term", json_object_new_string(it->term));
        admin_json_add(o, "type", json_object_new_string(it->type));
        admin_json_add(o, "class", json_object_new_string(fc_dead_letter_class(dl, i, fallback)));
        admin_json_add(o, "http_status", json_object_new_int(it->http_status));
        admin_json_add(o, "attempts", json_object_new_int(it->attempts));
        admin_json_add(o, "message", json_object_new_string(it->message));
        json_object_array_add(arr, o);
    }
    return arr;
}

static void letter_rows(dead_pass *s, json_object *l) {
    json_object *items;
    json_object_object_get_ex(l, "items", &items);
    size_t n = json_object_array_length(items);
    const char *id = admin_json_str(l, "message_id"), *job = admin_json_str(l, "job_id");
    if (n == 0 && (long)admin_table_rows(s->table) < LIST_ROWS_MAX) {
        char err[400];
        const char *e = admin_json_str(l, "error");
        snprintf(err, sizeof(err), "%s (poison: cannot be replayed)", e ? e : "");
        const char *row[] = {id, job, NULL, NULL, "poison", NULL, err};
        admin_table_row(s->table, row);
    } else if (n == 0) {
        s->rows_hidden++;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *it = json_object_array_get_idx(items, i);
        const char *row[] = {id, job, admin_json_str(it, "position"), admin_json_str(it, "term"),
                             admin_json_str(it, "class"), admin_json_str(it, "attempts"), admin_json_str(it, "message")};
        if ((long)admin_table_rows(s->table) < LIST_ROWS_MAX) admin_table_row(s->table, row);
        else s->rows_hidden++;
    }
}

static const int json_flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE;

/* list_begin starts the listing: with --json, the head of the object whose letters are streamed. */
static void list_begin(dead_pass *s) {
    if (!s->ad->cfg->json) {
        static const char *const head[] = {"DEAD LETTER", "JOB", "POS", "TERM", "CLASS", "ATTEMPTS", "ERROR"};
        s->table = admin_table_new(7, head);
        admin_table_right(s->table, 2);
        admin_table_max_width(s->table, 0, 48);
        admin_table_max_width(s->table, 3, 24);
        admin_table_max_width(s->table, 6, 60);
        return;
    }
    json_object *q = json_object_new_string(s->dead_q);
    printf("{\n  \"queue\": %s,\n  \"messages_in_queue\": %ld,\n  \"letters\": [",
           json_object_to_json_string_ext(q, json_flags), s->rd.expected);
    json_object_put(q);
}

/* note_letter lists a selected dead letter (dl NULL: a poison message, why says why): printed at once
 * with --json, else as rows of the table. */
static void note_letter(dead_pass *s, const fc_delivery *d, const fc_dead_letter *dl, const unsigned char *sel,
                        const char *fallback, const char *why) {
    json_object *o = json_object_new_object();
    const char *job = fc_delivery_header(d, "x-job-id");
    admin_json_add(o, "message_id", json_object_new_string(d->message_id));
    admin_json_add(o, "job_id", dl ? json_object_new_string(fc_dead_letter_job(dl)) : str_or_null(job && *job ? job : NULL));
    admin_json_add(o, "batch", dl ? json_object_new_int64(fc_dead_letter_batch(dl)) : NULL);
    admin_json_add(o, "class", str_or_null(dl ? fallback : "poison"));
    admin_json_add(o, "error", str_or_null(fc_delivery_header(d, "x-error")));
    admin_json_add(o, "http_status", json_object_new_int64(fc_delivery_header_num(d, "x-http-status", 0)));
    admin_json_add(o, "attempts", json_object_new_int64(fc_delivery_header_num(d, "x-attempts", 0)));
    admin_json_add(o, "failed_at", str_or_null(fc_delivery_header(d, "x-failed-at")));
    admin_json_add(o, "worker", str_or_null(fc_delivery_header(d, "x-worker")));
    admin_json_add(o, "replayable", json_object_new_boolean(dl != NULL));
    if (!dl) admin_json_add(o, "not_replayable_because", json_object_new_string(why));
    admin_json_add(o, "items", items_json(dl, sel, fallback));
    if (s->ad->cfg->json) {
        printf("%s\n    %s", s->json_letters++ ? "," : "", json_object_to_json_string_ext(o, json_flags));
    } else if (s->table) {
        letter_rows(s, o);
    }
    json_object_put(o);
}

/* ---- intake: each delivery decided on in its callback ---- */

/* work_copy copies a delivery (body, message id, headers) so it outlives its callback; NULL without memory. */
static dead_work *work_copy(const fc_delivery *d, const char *hex) {
    dead_work *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->tag = d->tag;
    w->len = d->len;
    w->body = malloc(d->len ? d->len : 1);
    w->message_id = strdup(d->message_id);
    w->headers = calloc(d->nheaders ? d->nheaders : 1, sizeof(*w->headers));
    int ok = w->body && w->message_id && w->headers;
    for (size_t i = 0; ok && i < d->nheaders; i++, w->nheaders++) {
        w->headers[i] = d->headers[i];
        w->headers[i].key = strdup(d->headers[i].key);
        w->headers[i].str = d->headers[i].is_num ? NULL : strdup(d->headers[i].str);
        ok = w->headers[i].key && (d->headers[i].is_num || w->headers[i].str);
        w->bytes += strlen(d->headers[i].key) + (d->headers[i].is_num ? 0 : strlen(d->headers[i].str)) + 64;
    }
    if (!ok) {
        dead_work_free(w);
        return NULL;
    }
    memcpy(w->body, d->body, d->len);
    snprintf(w->hash, sizeof(w->hash), "%s", hex);
    w->bytes += d->len + strlen(d->message_id) + sizeof(*w);
    return w;
}

/* defer queues a selected dead letter for replay.c (sel: this run's positions, taken; NULL to finish an
 * earlier run's plan), unless the backlog is full or memory short: it is then left for the next run
 * (returns FC_ENOMEM). */
static int defer(dead_pass *s, const fc_delivery *d, const char *hex, char **sel) {
    dead_work *w = s->backlog_bytes + d->len <= (size_t)BACKLOG_MAX_BYTES ? work_copy(d, hex) : NULL;
    if (!w) {
        s->deferred++;
        return FC_ENOMEM;
    }
    w->resume = !sel;
    if (sel) {
        w->sel = *sel;
        w->bytes += strlen(*sel);
        *sel = NULL;
    }
    s->backlog_bytes += w->bytes;
    if (s->tail) s->tail->next = w;
    else s->head = w;
    s->tail = w;
    return FC_OK;
}

/* take_poison handles a message that is not a batch: listed, removed by purge, never replayed. */
static void take_poison(dead_pass *s, const fc_delivery *d, const char *why) {
    const char *job = fc_delivery_header(d, "x-job-id");
    int match = (!s->job || (job && strcmp(job, s->job) == 0)) && (!s->reason || strcmp(s->reason, "poison") == 0);
    if (!match) {
        s->not_matching++;
        return;
    }
    if (s->mode == DEAD_REPLAY) { /* skipped: takes nothing of --limit */
        s->poison_skipped++;
        return;
    }
    if (s->left == 0) return;
    s->letters_matched++;
    s->items_matched++;
    if (s->left > 0) s->left--;
    if (s->mode == DEAD_LIST || s->dry) note_letter(s, d, NULL, NULL, "poison", why);
    else if (dead_ack(s, d->tag) == FC_OK) s->letters_done++, s->items_done++;
}

/* purge_whole removes a dead letter whose every item is selected. A remainder (of a replay or a partial
 * purge) gets a done marker first: the run that published it, if interrupted, then does not send it again. */
static void purge_whole(dead_pass *s, const fc_delivery *d, const char *hex, size_t n) {
    if (strstr(d->message_id, "-rest-")) {
        admin_marker m;
        admin_marker_init(&m, s->ad, hex, NULL);
        if (admin_marker_done(&m) != FC_OK) {
            dead_lost_redis(s);
            return;
        }
    }
    if (dead_ack(s, d->tag) == FC_OK) s->letters_done++, s->items_done += (long)n;
}

/* fallback_class is the class of the items of d that carry none: its x-error-class, or "crashed" for a
 * batch the broker dead-lettered from P.crashed itself (no header then). */
static const char *fallback_class(const dead_pass *s, const fc_delivery *d) {
    const char *c = fc_delivery_header(d, "x-error-class");
    if (c && *c) return c;
    return strcmp(d->death_queue, s->crashed_q) == 0 ? "crashed" : NULL;
}

/* marker_first settles a dead letter by its marker before any selection (replay, purge --yes): one whose
 * replay is done is acked, one an interrupted run began is finished whatever this run's filters (or left,
 * for the other command). Returns 1 when it settled d. */
static int marker_first(dead_pass *s, const fc_delivery *d, const char *hex) {
    admin_marker m;
    int state, purge;
    admin_marker_init(&m, s->ad, hex, NULL);
    if (admin_marker_peek(&m, &state, &purge) != FC_OK) {
        dead_lost_redis(s);
        return 1;
    }
    if (state == ADMIN_MARKER_DONE) s->letters_before += dead_ack(s, d->tag) == FC_OK;
    else if (state == ADMIN_MARKER_PENDING && purge != (s->mode == DEAD_PURGE)) s->other_op++;
    else if (state == ADMIN_MARKER_PENDING) (void)defer(s, d, hex, NULL);
    return state != ADMIN_MARKER_NONE;
}

/* select_items marks in sel what the filters take of dl; a replay without --reason leaves cancelled
 * items. Returns how many; *cancelled says whether only cancelled items would have matched. */
static size_t select_items(const dead_pass *s, const fc_dead_letter *dl, const char *fallback, unsigned char *sel,
                           int *cancelled) {
    fc_dead_filter f = {s->reason, s->mode == DEAD_REPLAY && !s->reason ? "cancelled" : NULL, fallback, s->left};
    size_t nsel = fc_dead_letter_select(dl, &f, sel);
    *cancelled = 0;
    if (nsel == 0 && f.skip_cls && s->left != 0) {
        f.skip_cls = NULL;
        *cancelled = fc_dead_letter_select(dl, &f, sel) > 0;
        memset(sel, 0, fc_dead_letter_nitems(dl));
    }
    return nsel;
}

/* act_on_selection lists, purges or queues a dead letter with nsel of its n items selected. */
static void act_on_selection(dead_pass *s, const fc_delivery *d, const fc_dead_letter *dl, const unsigned char *sel,
                             size_t nsel, const char *fallback, const char *hex) {
    size_t n = fc_dead_letter_nitems(dl);
    if (s->mode == DEAD_LIST || s->dry) {
        note_letter(s, d, dl, sel, fallback, NULL);
        return;
    }
    if (s->mode == DEAD_PURGE && nsel == n) {
        purge_whole(s, d, hex, n);
        return;
    }
    fc_buf pos = {0};
    char *csv = fc_dead_letter_positions(dl, sel, &pos) == FC_OK ? fc_buf_steal(&pos) : NULL;
    fc_buf_free(&pos);
    if (!csv || defer(s, d, hex, &csv) != FC_OK) {
        if (!csv) s->deferred++;
        if (s->left >= 0) s->left += (long long)nsel; /* left for the next run: give the --limit back */
    }
    free(csv);
}

static void take_letter(dead_pass *s, const fc_delivery *d, const fc_dead_letter *dl, const char *hex) {
    const char *job = fc_dead_letter_job(dl);
    if (s->job && strcmp(job, s->job) != 0) {
        s->not_matching++;
        return;
    }
    if (s->left == 0) return; /* --limit used up: left as it is, for the next run */
    dead_job *j = s->mode == DEAD_REPLAY ? dead_job_of(s, job) : NULL;
    if (s->mode == DEAD_REPLAY && !j) return;
    if (uses_markers(s) && marker_first(s, d, hex)) return;
    if (j && j->cancelled) {
        s->cancelled_skipped++;
        return;
    }
    size_t n = fc_dead_letter_nitems(dl);
    unsigned char *sel = calloc(n ? n : 1, 1);
    if (!sel) {
        s->deferred++;
        return;
    }
    const char *fallback = fallback_class(s, d);
    int cancelled;
    size_t nsel = select_items(s, dl, fallback, sel, &cancelled);
    if (nsel == 0) {
        if (cancelled) s->cancelled_skipped++;
        else s->not_matching++;
    } else {
        s->letters_matched++;
        s->items_matched += (long)nsel;
        if (s->left > 0) s->left -= (long long)nsel;
        act_on_selection(s, d, dl, sel, nsel, fallback, hex);
    }
    free(sel);
}

/* take_copy handles a delivery with the hash of one already delivered in this pass: a copy (the same
 * message id, x-failed-at and body). Replay and purge --yes remove it; the listing shows one. */
static void take_copy(dead_pass *s, const fc_delivery *d) {
    s->duplicates++;
    if (uses_markers(s)) dead_ack(s, d->tag);
}

static void on_delivery(void *ud, const fc_delivery *d) {
    dead_pass *s = ud;
    if (s->fatal || s->stopping || admin_set_has(s->own, d->message_id) || !admin_reader_take(&s->rd)) return;
    const char *at = fc_delivery_header(d, "x-failed-at");
    char hex[FC_SHA256_HEX_LEN + 1];
    dead_hash(d->message_id, at ? at : "", d->body, d->len, hex);
    if (admin_set_add(s->seen, hex) == 0) {
        take_copy(s, d);
        return;
    }
    fc_dead_letter *dl = NULL;
    char why[256] = "";
    int rc = fc_dead_letter_parse(d->body, d->len, &dl, why, sizeof(why));
    if (rc == FC_EPARSE) take_poison(s, d, why);
    else if (rc == FC_OK) take_letter(s, d, dl, hex);
    else admin_say("out of memory reading dead letter %s; it stays", d->message_id), s->deferred++;
    fc_dead_letter_free(dl);
}

/* ---- the pass ---- */

/* finished says whether the pass is over: nothing in the works, and every dead letter it may take was
 * seen (or none came for a while, or --limit is used up) and handled. */
static int finished(const dead_pass *s) {
    if (s->fatal) return 1;
    if (s->nops) return 0;
    if (s->stopping) return 1;
    return !s->head && (dead_intake_done(s) || s->left == 0);
}

/* run_pass consumes P.dead until finished; the backlog is worked off between polls. */
static void run_pass(dead_pass *s) {
    if (s->rd.expected == 0) return;
    if (admin_reader_start(&s->rd, s->ad->amqp, s->dead_q) != FC_OK) {
        dead_lost_broker(s);
        return;
    }
    fc_amqp_handler h = {on_delivery, dead_on_confirm, NULL, s}, none = {NULL, NULL, NULL, NULL};
    while (!finished(s)) {
        int wait = uses_markers(s) ? dead_work_off(s) : 200;
        if (uses_markers(s)) dead_check_deadlines(s);
        if (!s->fatal && fc_amqp_poll(s->ad->amqp, wait, &h) != FC_OK) dead_lost_broker(s);
        if (s->side && fc_amqp_ok(s->side)) fc_amqp_poll(s->side, 0, &none); /* its heartbeats */
    }
    if (s->nops) dead_abandon(s);
}

/* ---- output ---- */

static int print_list(dead_pass *s) {
    if (s->ad->cfg->json) {
        printf("%s],\n  \"dead_letters\": %ld,\n  \"items\": %ld,\n  \"duplicate_copies\": %ld\n}\n",
               s->json_letters ? "\n  " : "", s->letters_matched, s->items_matched, s->duplicates);
        if (fflush(stdout) != 0) return ADMIN_NOTHING;
    } else {
        if (admin_table_rows(s->table)) admin_table_print(s->table);
        if (s->rows_hidden)
            printf("(%ld more items not shown: narrow with --job, --reason or --limit, or use --json)\n", s->rows_hidden);
        printf("%ld items in %ld dead letters (of %ld messages in %s)%s\n", s->items_matched, s->letters_matched,
               s->rd.expected, s->dead_q, s->mode == DEAD_LIST ? "; nothing removed or reordered" : "");
        if (s->duplicates) printf("%ld copies of dead letters listed once (a replay or purge removes them)\n",
                                  s->duplicates);
    }
    if (s->dry) {
        admin_say("nothing removed: add --yes to remove these %ld items (%ld dead letters)", s->items_matched,
                  s->letters_matched);
        return ADMIN_USAGE;
    }
    return s->letters_matched ? ADMIN_OK : ADMIN_NOTHING;
}

static void print_done_json(const dead_pass *s) {
    int replay = s->mode == DEAD_REPLAY;
    json_object *o = json_object_new_object();
    admin_json_add(o, "queue", json_object_new_string(s->dead_q));
    admin_json_add(o, replay ? "replayed_dead_letters" : "removed_dead_letters", json_object_new_int64(s->letters_done));
    admin_json_add(o, replay ? "replayed_items" : "removed_items", json_object_new_int64(s->items_done));
    admin_json_add(o, "finished_for_an_interrupted_run", json_object_new_int64(s->resumed));
    admin_json_add(o, "already_done_before", json_object_new_int64(s->letters_before));
    admin_json_add(o, "duplicate_copies_removed", json_object_new_int64(s->duplicates));
    admin_json_add(o, "items_ok_since", json_object_new_int64(s->ok_items));
    admin_json_add(o, "skipped_poison", json_object_new_int64(s->poison_skipped));
    admin_json_add(o, "skipped_cancelled", json_object_new_int64(s->cancelled_skipped));
    admin_json_add(o, "not_matching", json_object_new_int64(s->not_matching));
    admin_json_add(o, "failed", json_object_new_int64(s->failed));
    admin_json_add(o, "records_put_back", json_object_new_int64(s->restored));
    admin_json_add(o, "pending_other_command", json_object_new_int64(s->other_op));
    admin_json_add(o, "not_attempted", json_object_new_int64(s->not_attempted));
    admin_json_add(o, "left_for_next_run", json_object_new_int64(s->deferred));
    admin_print_json(o);
}

static void print_done_text(const dead_pass *s) {
    int replay = s->mode == DEAD_REPLAY;
    printf("%s %ld items from %ld dead letters", replay ? "replayed" : "removed", s->items_done, s->letters_done);
    if (s->resumed) printf(" (%ld of them finishing what an interrupted run began)", s->resumed);
    if (replay)
        printf("; skipped: %ld poison (cannot be replayed), %ld of cancelled jobs or items, %ld not matching",
               s->poison_skipped, s->cancelled_skipped, s->not_matching);
    else
        printf("; %ld not matching", s->not_matching);
    printf("; %ld failed (left in %s%s)\n", s->failed, s->dead_q,
           replay && s->restored ? "; their items' records put back" : "");
    if (s->letters_before) printf("removed %ld dead letters an earlier run had already %s\n", s->letters_before,
                                  replay ? "replayed" : "split");
    if (s->duplicates) printf("removed %ld copies of dead letters\n", s->duplicates);
    if (s->ok_items) printf("%ld items had ended ok since they were dead-lettered: not sent again\n", s->ok_items);
    if (s->other_op)
        printf("%ld dead letters belong to an interrupted `dead %s`: run it again first (they stay)\n", s->other_op,
               replay ? "purge --yes" : "replay");
    if (s->not_attempted) printf("%ld selected dead letters were not started: run it again\n", s->not_attempted);
    if (s->deferred) printf("%ld selected dead letters did not fit in memory in this run: run it again\n", s->deferred);
}

static int print_done(dead_pass *s) {
    if (s->ad->cfg->json) print_done_json(s);
    else print_done_text(s);
    if (s->fatal) return s->fatal;
    long left = s->failed + s->deferred + s->not_attempted + s->other_op + s->poison_skipped + s->cancelled_skipped;
    long done = s->letters_done + s->letters_before + s->duplicates;
    return left || done == 0 ? ADMIN_NOTHING : ADMIN_OK;
}

/* ---- setup ---- */

static int check_filters(const fc_config *c) {
    if (c->admin_job && !fc_job_id_valid(c->admin_job)) {
        admin_say("--job: '%s' is not a job id (1..64 of A-Z a-z 0-9 - _ .)", c->admin_job);
        return ADMIN_USAGE;
    }
    if (c->admin_reason && !admin_reason_valid(c->admin_reason)) {
        admin_say("--reason: '%s' is not one of %s", c->admin_reason, admin_reason_list());
        return ADMIN_USAGE;
    }
    return ADMIN_OK;
}

/* open_queue connects and reads how many messages P.dead holds. */
static int open_queue(dead_pass *s) {
    admin *ad = s->ad;
    int rc = admin_connect_broker(ad);
    if (rc == ADMIN_OK && uses_markers(s)) rc = admin_connect_redis(ad);
    if (rc != ADMIN_OK) return rc;
    long consumers = 0;
    rc = fc_amqp_queue_depth(ad->amqp, s->dead_q, &s->rd.expected, &consumers);
    if (rc == FC_ENOTFOUND) {
        admin_say("there is no queue %s (nothing ran under QUEUE_PREFIX '%s')", s->dead_q, ad->cfg->queue_prefix);
        return ADMIN_NOTHING;
    }
    if (rc == FC_OK && s->mode == DEAD_REPLAY && fc_amqp_exchange_exists(ad->amqp, s->batches_x) == FC_ENOTFOUND) {
        admin_say("there is no exchange %s to replay to (start a worker to declare the topology)", s->batches_x);
        return ADMIN_NOTHING;
    }
    if (rc != FC_OK) {
        admin_say("the broker failed: %s", fc_amqp_errstr(ad->amqp));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

/* pass_init prepares the pass of the subcommand action; ADMIN_OK or an exit code after one line. */
static int pass_init(dead_pass *s, admin *ad, const char *action) {
    const fc_config *c = ad->cfg;
    memset(s, 0, sizeof(*s));
    s->ad = ad;
    s->mode = strcmp(action, "replay") == 0 ? DEAD_REPLAY : strcmp(action, "purge") == 0 ? DEAD_PURGE : DEAD_LIST;
    s->dry = s->mode == DEAD_PURGE && !c->admin_yes;
    s->job = c->admin_job;
    s->reason = c->admin_reason;
    s->left = c->admin_limit > 0 ? c->admin_limit : -1;
    fc_topology_name(s->dead_q, c->queue_prefix, "dead");
    fc_topology_name(s->batches_x, c->queue_prefix, "batches");
    fc_topology_name(s->crashed_q, c->queue_prefix, "crashed");
    s->seen = admin_set_new();
    s->own = admin_set_new();
    if (!s->seen || !s->own) {
        admin_say("out of memory");
        return ADMIN_INFRA;
    }
    int rc = check_filters(c);
    if (rc == ADMIN_OK && s->mode == DEAD_REPLAY) {
        s->side = fc_amqp_new(c->amqp_url, (int)(c->heartbeat_ms / 1000), "flashcard-admin dead replay (declare)");
        if (!s->side || fc_amqp_set_tls(s->side, c->amqp_ca_file, c->amqp_cert_file, c->amqp_key_file) != FC_OK) {
            admin_say("out of memory preparing a second connection to the broker");
            rc = ADMIN_INFRA;
        }
    }
    return rc;
}

static void pass_free(dead_pass *s) {
    for (dead_work *w = s->head, *next; w; w = next) {
        next = w->next;
        dead_work_free(w);
    }
    admin_set_free(s->seen);
    admin_set_free(s->own);
    free(s->jobs);
    admin_table_free(s->table);
    if (s->side) fc_amqp_close(s->side);
    fc_amqp_free(s->side);
}

int admin_dead(admin *ad, const char *action) {
    dead_pass s;
    int rc = pass_init(&s, ad, action);
    if (rc == ADMIN_OK) rc = open_queue(&s);
    if (rc == ADMIN_OK) {
        int listing = s.mode == DEAD_LIST || s.dry;
        if (listing) list_begin(&s);
        run_pass(&s);
        if (s.acks && fc_amqp_ok(ad->amqp)) admin_settle_grace(ad->amqp, s.acks);
        fc_amqp_close(ad->amqp); /* whatever was not acked returns to P.dead, in its order */
        rc = listing ? print_list(&s) : print_done(&s);
        if (s.fatal) rc = s.fatal;
    }
    pass_free(&s);
    return rc;
}
