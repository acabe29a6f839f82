/* The job's record in Redis (P:job:{job}:*, named in fc_keys.h): what a settled delivery
 * adds to it — each item's final outcome, the failed items, the items waiting in a retry
 * queue, the usage counters — in one transaction (MULTI/EXEC: all of it or, when Redis refuses
 * a command, none, so a retry counts nothing twice), in one round trip; and whether an operator
 * cancelled the job. --wait and flashcard-admin read what is written here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "worker.h"

#define JOB_KEY_TTL_S (7 * 86400)
#define RECORD_CMDS 24

/* The commands of one record, built one after another into one argv array. */
typedef struct record {
    const char **args;
    size_t nargs;
    const char **argv[RECORD_CMDS];
    int argc[RECORD_CMDS];
    int ncmd;
} record;

static void begin(record *r, const char *name, const char *key) {
    r->argv[r->ncmd] = r->args + r->nargs;
    r->argc[r->ncmd] = 0;
    r->ncmd++;
    r->args[r->nargs++] = name, r->args[r->nargs++] = key;
    r->argc[r->ncmd - 1] = 2;
}

static void arg(record *r, const char *s) {
    r->args[r->nargs++] = s;
    r->argc[r->ncmd - 1]++;
}

/* end drops the command just begun if it got no argument past its key. */
static void end(record *r) {
    if (r->argc[r->ncmd - 1] > 2) return;
    r->ncmd--;
    r->nargs -= 2;
}

/* One item of the record: its position, final state, and failure as JSON (owned) when dead. */
typedef struct entry {
    char pos[24];
    const char *state; /* "ok", "dead", "budget", "retry" or NULL (unfinished: a continuation carries it) */
    char *failed;
} entry;

/* failed_json renders what the job's failure record keeps of a dead item (caller frees). */
static char *failed_json(const fc_item *it, const fc_item_error *e) {
    fc_buf f = {0};
    fc_message_failed_item(&f, it, e);
    if (fc_buf_err(&f)) {
        fc_buf_free(&f);
        return NULL;
    }
    return fc_buf_steal(&f);
}

/* collect fills *v with the batch's *n items (or, poison, with the items salvaged from it) and
 * sums their usage; 0 or FC_ENOMEM (the caller frees *v's n entries either way). */
static int collect(batch *b, entry **v, size_t *n, long sums[4]) {
    *n = 0;
    if (b->kind == BATCH_POISON) {
        fc_salvaged *s = NULL;
        size_t ns = 0;
        if (fc_message_salvage(b->raw, b->raw_len, b->msg.hdr.job_id, &s, &ns) != FC_OK) return FC_OK;
        int rc = (*v = calloc(ns ? ns : 1, sizeof(**v))) ? FC_OK : FC_ENOMEM;
        for (size_t i = 0; rc == FC_OK && i < ns; i++, (*n)++) {
            fc_item it = {s[i].position, s[i].term, (char *)"", NULL, 0, 0};
            fc_item_error e = {"poison", 0, 0, b->why};
            snprintf((*v)[i].pos, sizeof((*v)[i].pos), "%lld", s[i].position);
            (*v)[i].state = "dead";
            if (!((*v)[i].failed = failed_json(&it, &e))) rc = FC_ENOMEM;
        }
        free(s);
        return rc;
    }
    if (!(*v = calloc(b->msg.nitems ? b->msg.nitems : 1, sizeof(**v)))) return FC_ENOMEM;
    for (size_t i = 0; i < b->msg.nitems; i++, (*n)++) {
        task *t = &b->tasks[i];
        entry *e = &(*v)[i];
        sums[0] += t->calls, sums[1] += t->prompt_tokens, sums[2] += t->completion_tokens, sums[3] += t->cache_hits;
        snprintf(e->pos, sizeof(e->pos), "%lld", t->item->position);
        if (t->outcome == OUT_OK) e->state = "ok";
        if (t->outcome == OUT_RETRY) e->state = "retry";
        if (t->outcome != OUT_DEAD && t->outcome != OUT_BUDGET) continue;
        e->state = t->outcome == OUT_DEAD ? "dead" : "budget";
        fc_item_error err = {fc_class_name(t->err_class), t->http_status, b->msg.hdr.attempt, t->error};
        if (!(e->failed = failed_json(t->item, &err))) {
            (*n)++;
            return FC_ENOMEM;
        }
    }
    return FC_OK;
}

static int is(const entry *e, const char *state) { return e->state && strcmp(e->state, state) == 0; }
static int is_failed(const entry *e) { return is(e, "dead") || is(e, "budget"); }
static int is_final(const entry *e) { return is(e, "ok") || is_failed(e); }

/* build adds the record's commands: each final outcome; the failures (and, for an item that
 * succeeded after a replay, the failure it had before taken away); the items now in a retry
 * queue, with their next attempt; the usage counters; when outcomes came; the TTLs. */
static void build(record *r, char keys[FC_JOB_NKEYS][FC_KEY_MAX], const char *fleet_timeline, entry *v, size_t n,
                  char strs[8][24]) {
    int finals = 0;
    begin(r, "HSET", keys[FC_JOB_OUTCOME]);
    for (size_t i = 0; i < n; i++)
        if (is_final(&v[i])) arg(r, v[i].pos), arg(r, v[i].state), finals++;
    end(r);
    begin(r, "HSET", keys[FC_JOB_FAILED]);
    for (size_t i = 0; i < n; i++)
        if (is_failed(&v[i])) arg(r, v[i].pos), arg(r, v[i].failed);
    end(r);
    begin(r, "HDEL", keys[FC_JOB_FAILED]);
    for (size_t i = 0; i < n; i++)
        if (is(&v[i], "ok")) arg(r, v[i].pos);
    end(r);
    begin(r, "HDEL", keys[FC_JOB_RETRY]);
    for (size_t i = 0; i < n; i++)
        if (is_final(&v[i])) arg(r, v[i].pos);
    end(r);
    begin(r, "HSET", keys[FC_JOB_RETRY]);
    for (size_t i = 0; i < n; i++)
        if (is(&v[i], "retry")) arg(r, v[i].pos), arg(r, strs[5]);
    end(r);
    static const char *names[4] = {"api_calls", "prompt_tokens", "completion_tokens", "cache_hits"};
    for (int k = 0; k < 4; k++) begin(r, "HINCRBY", keys[FC_JOB_STATS]), arg(r, names[k]), arg(r, strs[k]);
    /* The calls by 10 s, the job's and the fleet's: the job's share of the fleet over time. */
    if (strcmp(strs[0], "0") != 0) {
        begin(r, "HINCRBY", keys[FC_JOB_TIMELINE]), arg(r, strs[7]), arg(r, strs[0]);
        begin(r, "HINCRBY", fleet_timeline), arg(r, strs[7]), arg(r, strs[0]);
        begin(r, "EXPIRE", fleet_timeline), arg(r, "691200");
    }
    if (finals) {
        begin(r, "HSETNX", keys[FC_JOB_STATS]), arg(r, "first_outcome_ms"), arg(r, strs[4]);
        begin(r, "HSET", keys[FC_JOB_STATS]), arg(r, "last_outcome_ms"), arg(r, strs[4]);
    }
    static const int expiring[] = {FC_JOB_OUTCOME, FC_JOB_FAILED, FC_JOB_STATS, FC_JOB_RETRY, FC_JOB_TIMELINE};
    for (int k = 0; k < 5; k++) begin(r, "EXPIRE", keys[expiring[k]]), arg(r, strs[6]);
    r->argv[r->ncmd] = r->args + r->nargs;
    r->args[r->nargs++] = "EXEC";
    r->argc[r->ncmd++] = 1;
}

/* transact runs r's commands as one transaction: MULTI alone first (were it refused, by an ACL
 * without it, the commands would apply one by one), then the commands and EXEC in one round trip.
 * A command refused while queued makes EXEC discard them all. */
static int transact(worker *w, record *r) {
    const char *multi[] = {"MULTI"}, *discard[] = {"DISCARD"};
    if (fc_redis_command(w->redis, NULL, 1, multi, NULL) != FC_OK) return FC_EREDIS;
    if (fc_redis_pipeline(w->redis, NULL, (size_t)r->ncmd, r->argc, r->argv, NULL) == FC_OK) return FC_OK;
    fc_redis_command(w->redis, NULL, 1, discard, NULL); /* EXEC itself refused: leave the transaction */
    return FC_EREDIS;
}

static int has_state(const entry *v, size_t n, const char *state) {
    for (size_t i = 0; i < n; i++)
        if (is(&v[i], state)) return 1;
    return 0;
}

/* keep_successes drops from a poison message's entries the positions its job already records as
 * succeeded: a malformed copy (or a forgery) naming them must not turn a delivered card into a
 * failure; nor may a copy of an item published again by --resume that met the budget. A Redis error
 * leaves the entries as they are (the transaction then meets the same). */
static void keep_successes(worker *w, const char *outcome_key, entry *v, size_t n) {
    const char **argv = calloc(n + 2, sizeof(*argv));
    fc_reply r = {0};
    if (!argv) return;
    argv[0] = "HMGET", argv[1] = outcome_key;
    for (size_t i = 0; i < n; i++) argv[i + 2] = v[i].pos;
    if (fc_redis_command(w->redis, &r, (int)n + 2, argv, NULL) == FC_OK && r.type == FC_REPLY_ARRAY &&
        r.nelem == n) {
        for (size_t i = 0; i < n; i++)
            if (r.elem[i].type == FC_REPLY_STR && strcmp(r.elem[i].str, "ok") == 0) v[i].state = NULL;
    }
    fc_reply_free(&r);
    free(argv);
}

int record_batch(worker *w, batch *b) {
    entry *v = NULL;
    size_t n;
    long sums[4] = {0};
    int rc = collect(b, &v, &n, sums);
    if (rc == FC_OK && b->msg.hdr.job_id[0] && n > 0) {
        char keys[FC_JOB_NKEYS][FC_KEY_MAX], strs[8][24];
        for (int k = 0; k < FC_JOB_NKEYS; k++)
            fc_key_job(keys[k], FC_KEY_MAX, w->cfg->queue_prefix, b->msg.hdr.job_id, (enum fc_job_key)k);
        if (b->kind == BATCH_POISON || has_state(v, n, "budget")) keep_successes(w, keys[FC_JOB_OUTCOME], v, n);
        for (int k = 0; k < 4; k++) snprintf(strs[k], sizeof(strs[k]), "%ld", sums[k]);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(strs[4], sizeof(strs[4]), "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        snprintf(strs[5], sizeof(strs[5]), "%d", b->msg.hdr.attempt + 1);
        snprintf(strs[6], sizeof(strs[6]), "%d", JOB_KEY_TTL_S);
        snprintf(strs[7], sizeof(strs[7]), "%lld", (long long)ts.tv_sec / 10);
        char fleet_timeline[FC_KEY_MAX];
        fc_key_timeline(fleet_timeline, sizeof(fleet_timeline), w->cfg->queue_prefix, (long long)ts.tv_sec / 3600);
        record r = {0};
        r.args = calloc(8 * n + 80, sizeof(*r.args));
        if (!r.args) rc = FC_ENOMEM;
        else {
            build(&r, keys, fleet_timeline, v, n, strs);
            rc = transact(w, &r);
        }
        free(r.args);
    }
    for (size_t i = 0; v && i < n; i++) free(v[i].failed);
    free(v);
    return rc;
}

int record_job_cancelled(worker *w, const char *job_id, int64_t now) {
    char key[FC_KEY_MAX];
    fc_reply r;
    cancel_answer *slot = &w->cancel_cache[0];
    for (int i = 0; i < CANCEL_CACHE; i++) {
        cancel_answer *a = &w->cancel_cache[i];
        if (strcmp(a->job_id, job_id) == 0) {
            if (now - a->asked_ms < CANCEL_ASK_MS) return a->cancelled;
            slot = a;
            break;
        }
        if (a->asked_ms < slot->asked_ms) slot = a; /* the oldest answer makes room */
    }
    /* Redis away: asking would wait for its timeout on every batch; a cancel is learnt later. */
    if (!job_id[0] || now < w->redis_quiet_until_ms) return 0;
    if (fc_key_job(key, sizeof(key), w->cfg->queue_prefix, job_id, FC_JOB_META) != FC_OK) return 0;
    const char *argv[] = {"HEXISTS", key, "cancelled_ms"};
    int rc = fc_redis_command(w->redis, &r, 3, argv, NULL);
    if (rc != FC_OK) {
        if (rc == FC_ECONN) w->redis_quiet_until_ms = now + CANCEL_ASK_MS * 5;
        return 0;
    }
    int yes = r.type == FC_REPLY_INT && r.integer == 1;
    fc_reply_free(&r);
    snprintf(slot->job_id, sizeof(slot->job_id), "%s", job_id);
    slot->asked_ms = now;
    slot->cancelled = yes;
    return yes;
}
