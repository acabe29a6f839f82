/* A job's record in Redis (P:job:{id}:meta|confirmed|outcome|failed|stats|retry) read as one view;
 * the `job` and `cancel` subcommands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_message.h"

enum { R_META, R_OUTCOME, R_FAILED, R_RETRY, R_STATS, R_CONFIRMED, R_N };

/* hash_ll returns field key of a HGETALL reply as a number, or dflt. */
static long long hash_ll(const fc_reply *h, const char *key, long long dflt) {
    if (!h || h->type != FC_REPLY_ARRAY) return dflt;
    for (size_t i = 0; i + 1 < h->nelem; i += 2)
        if (admin_reply_str(&h->elem[i]) && strcmp(h->elem[i].str, key) == 0) return admin_reply_ll(&h->elem[i + 1], dflt);
    return dflt;
}

static void fill(admin_job_view *j, const fc_reply *r) {
    const fc_reply *m = &r[R_META], *s = &r[R_STATS];
    j->exists = m->type == FC_REPLY_ARRAY && m->nelem > 0;
    j->created_ms = hash_ll(m, "created_ms", 0);
    j->items = (long)hash_ll(m, "items", -1);
    j->batches = (long)hash_ll(m, "batches", -1);
    j->published = hash_ll(m, "published", 0) == 1;
    j->cancelled_ms = hash_ll(m, "cancelled_ms", 0);
    j->batch_size = (long)hash_ll(m, "batch_size", 0);
    j->done = (long)admin_reply_ll(&r[R_OUTCOME], 0);
    j->failed = (long)admin_reply_ll(&r[R_FAILED], 0);
    j->in_retry = (long)admin_reply_ll(&r[R_RETRY], 0);
    j->batches_published = (long)admin_reply_ll(&r[R_CONFIRMED], 0);
    j->first_outcome_ms = hash_ll(s, "first_outcome_ms", 0);
    j->last_outcome_ms = hash_ll(s, "last_outcome_ms", 0);
    j->api_calls = (long)hash_ll(s, "api_calls", 0);
    j->prompt_tokens = (long)hash_ll(s, "prompt_tokens", 0);
    j->completion_tokens = (long)hash_ll(s, "completion_tokens", 0);
    j->cache_hits = (long)hash_ll(s, "cache_hits", 0);
}

/* count_in_retry counts the items of the retry record that have no final outcome: a delivery whose
 * record came late (Redis was away a moment) may have put back an item that had ended since. */
static int count_in_retry(admin *ad, const char *retry_key, const char *outcome_key, admin_job_view *j) {
    fc_reply keys, outcomes;
    const char *hkeys[] = {"HKEYS", retry_key};
    int rc = fc_redis_command(ad->redis, &keys, 2, hkeys, NULL);
    if (rc != FC_OK || keys.type != FC_REPLY_ARRAY || keys.nelem == 0) {
        fc_reply_free(&keys);
        return rc;
    }
    const char **argv = calloc(keys.nelem + 2, sizeof(*argv));
    if (!argv) {
        fc_reply_free(&keys);
        return FC_ENOMEM;
    }
    argv[0] = "HMGET", argv[1] = outcome_key;
    for (size_t i = 0; i < keys.nelem; i++) argv[i + 2] = keys.elem[i].str ? keys.elem[i].str : "";
    rc = fc_redis_command(ad->redis, &outcomes, (int)keys.nelem + 2, argv, NULL);
    if (rc == FC_OK && outcomes.type == FC_REPLY_ARRAY) {
        j->in_retry = 0;
        for (size_t i = 0; i < outcomes.nelem; i++) j->in_retry += outcomes.elem[i].type == FC_REPLY_NIL;
    }
    fc_reply_free(&outcomes);
    fc_reply_free(&keys);
    free(argv);
    return rc;
}

int admin_job_read(admin *ad, const char *job_id, admin_job_view *j) {
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", job_id);
    char k[FC_JOB_NKEYS][FC_KEY_MAX];
    for (int p = 0; p < FC_JOB_NKEYS; p++) admin_job_key(k[p], ad, job_id, (enum fc_job_key)p);
    const char *c0[] = {"HGETALL", k[FC_JOB_META]}, *c1[] = {"HLEN", k[FC_JOB_OUTCOME]},
               *c2[] = {"HLEN", k[FC_JOB_FAILED]}, *c3[] = {"HLEN", k[FC_JOB_RETRY]},
               *c4[] = {"HGETALL", k[FC_JOB_STATS]}, *c5[] = {"BITCOUNT", k[FC_JOB_CONFIRMED]};
    const char **argv[R_N] = {c0, c1, c2, c3, c4, c5};
    int argc[R_N] = {2, 2, 2, 2, 2, 2};
    fc_reply r[R_N];
    memset(r, 0, sizeof(r));
    int rc = fc_redis_pipeline(ad->redis, r, R_N, argc, argv, NULL);
    if (rc == FC_OK) fill(j, r);
    for (int i = 0; i < R_N; i++) fc_reply_free(&r[i]);
    if (rc == FC_OK && j->in_retry > 0) rc = count_in_retry(ad, k[FC_JOB_RETRY], k[FC_JOB_OUTCOME], j);
    return rc;
}

int admin_job_finished(const admin_job_view *j) { return j->published && j->items >= 0 && j->done >= j->items; }

const char *admin_job_state(const admin_job_view *j) {
    if (admin_job_finished(j)) return "finished";
    if (j->cancelled_ms) return "cancelled";
    return j->published ? "running" : "publishing";
}

double admin_job_rate(const admin_job_view *j) {
    int64_t end = admin_job_finished(j) || j->cancelled_ms ? j->last_outcome_ms : admin_now_ms();
    double span = (double)(end - j->first_outcome_ms) / 1000.0;
    return j->first_outcome_ms > 0 && span >= 1.0 ? (double)j->done / span : 0;
}

/* opt_long is a number, or null when negative (unknown). */
static json_object *opt_long(long v) { return v < 0 ? NULL : json_object_new_int64(v); }

json_object *admin_job_json(const admin_job_view *j) {
    json_object *o = json_object_new_object(), *st = json_object_new_object();
    char when[32];
    double rate = admin_job_rate(j);
    long left = j->items >= 0 ? j->items - j->done : -1;
    admin_iso_time(when, sizeof(when), j->created_ms);
    admin_json_add(o, "job_id", json_object_new_string(j->id));
    admin_json_add(o, "state", json_object_new_string(admin_job_state(j)));
    admin_json_add(o, "created_ms", j->created_ms ? json_object_new_int64(j->created_ms) : NULL);
    admin_json_add(o, "created", j->created_ms ? json_object_new_string(when) : NULL);
    admin_json_add(o, "published", json_object_new_boolean(j->published));
    admin_json_add(o, "items", opt_long(j->items));
    admin_json_add(o, "batches", opt_long(j->batches));
    admin_json_add(o, "batches_published", json_object_new_int64(j->batches_published));
    admin_json_add(o, "done", json_object_new_int64(j->done));
    admin_json_add(o, "ok", json_object_new_int64(j->done - j->failed));
    admin_json_add(o, "failed", json_object_new_int64(j->failed));
    admin_json_add(o, "in_retry", json_object_new_int64(j->in_retry));
    admin_json_add(o, "rate_per_s", rate > 0 ? json_object_new_double(rate) : NULL);
    admin_json_add(o, "eta_s", rate > 0 && left >= 0 ? json_object_new_double(left / rate) : NULL);
    admin_json_add(o, "cancelled_ms", j->cancelled_ms ? json_object_new_int64(j->cancelled_ms) : NULL);
    admin_json_add(st, "api_calls", json_object_new_int64(j->api_calls));
    admin_json_add(st, "prompt_tokens", json_object_new_int64(j->prompt_tokens));
    admin_json_add(st, "completion_tokens", json_object_new_int64(j->completion_tokens));
    admin_json_add(st, "cache_hits", json_object_new_int64(j->cache_hits));
    admin_json_add(o, "stats", st);
    return o;
}

int admin_job_ids(admin *ad, size_t max, char ***ids, size_t *n) {
    char key[FC_KEY_MAX], stop[32];
    fc_key_jobs(key, sizeof(key), ad->cfg->queue_prefix);
    snprintf(stop, sizeof(stop), "%zu", max - 1);
    fc_reply r = {0};
    *ids = NULL;
    *n = 0;
    int rc = fc_redis_cmd(ad->redis, &r, "ZREVRANGE %s 0 %s", key, stop);
    if (rc == FC_OK && r.type == FC_REPLY_ARRAY && r.nelem) {
        *ids = calloc(r.nelem, sizeof(**ids));
        for (size_t i = 0; *ids && i < r.nelem; i++)
            if (admin_reply_str(&r.elem[i])) (*ids)[(*n)++] = strdup(r.elem[i].str);
    }
    fc_reply_free(&r);
    return rc;
}

/* ---- job JOB_ID ---- */

static int by_position(const void *a, const void *b) {
    json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b, *px = NULL, *py = NULL;
    json_object_object_get_ex(x, "position", &px);
    json_object_object_get_ex(y, "position", &py);
    return admin_cmp_ll(json_object_get_int64(px), json_object_get_int64(py));
}

/* failed_items returns the job's failed items as a JSON array sorted by position (caller puts), or NULL
 * with an fc_redis error in *rc. */
static json_object *failed_items(admin *ad, const char *job_id, int *rc) {
    char key[FC_KEY_MAX];
    admin_job_key(key, ad, job_id, FC_JOB_FAILED);
    fc_reply r = {0};
    *rc = fc_redis_cmd(ad->redis, &r, "HVALS %s", key);
    json_object *arr = *rc == FC_OK ? json_object_new_array() : NULL;
    for (size_t i = 0; arr && r.type == FC_REPLY_ARRAY && i < r.nelem; i++) {
        json_object *o = admin_reply_str(&r.elem[i]) ? json_tokener_parse(r.elem[i].str) : NULL;
        if (json_object_is_type(o, json_type_object)) json_object_array_add(arr, o);
        else json_object_put(o);
    }
    fc_reply_free(&r);
    if (arr) json_object_array_sort(arr, by_position);
    return arr;
}

static void print_failed(json_object *arr) {
    static const char *const head[] = {"POS", "TERM", "CLASS", "HTTP", "ATTEMPTS", "LAST ERROR"};
    admin_table *t = admin_table_new(6, head);
    admin_table_right(t, 0);
    admin_table_max_width(t, 1, 30);
    admin_table_max_width(t, 5, 70);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        json_object *it = json_object_array_get_idx(arr, i), *e = NULL;
        json_object_object_get_ex(it, "error", &e);
        const char *row[] = {admin_json_str(it, "position"), admin_json_str(it, "term"), admin_json_str(e, "class"),
                             admin_json_str(e, "http_status"), admin_json_str(e, "attempts"), admin_json_str(e, "message")};
        admin_table_row(t, row);
    }
    printf("\nFailed items (%zu)\n", json_object_array_length(arr));
    if (admin_table_rows(t)) admin_table_print(t);
    admin_table_free(t);
}

static void print_job(const admin_job_view *j) {
    char when[32], cancelled[32];
    double rate = admin_job_rate(j);
    admin_iso_time(when, sizeof(when), j->created_ms);
    admin_iso_time(cancelled, sizeof(cancelled), j->cancelled_ms);
    printf("job          %s\nstate        %s\ncreated      %s\n", j->id, admin_job_state(j), when);
    if (j->published) printf("items        %ld (%ld batches, all published)\n", j->items, j->batches);
    else printf("items        not all published yet (%ld batches so far)\n", j->batches_published);
    printf("done         %ld (%ld ok, %ld failed), %ld in retry\n", j->done, j->done - j->failed, j->failed,
           j->in_retry);
    if (rate > 0 && j->items >= 0 && !admin_job_finished(j))
        printf("rate         %.1f items/s, ETA %.0f s\n", rate, (j->items - j->done) / rate);
    else if (rate > 0) printf("rate         %.1f items/s\n", rate);
    printf("API calls    %ld (cache hits %ld), tokens %ld in, %ld out\n", j->api_calls, j->cache_hits,
           j->prompt_tokens, j->completion_tokens);
    if (j->cancelled_ms) printf("cancelled    %s\n", cancelled);
}

/* unknown_job says the job has no record. */
static int unknown_job(const admin *ad, const char *job_id) {
    admin_say("no job '%s' under QUEUE_PREFIX '%s' (unknown, or its record expired after 7 days)", job_id,
              ad->cfg->queue_prefix);
    return ADMIN_NOTHING;
}

int admin_job(admin *ad, const char *job_id) {
    admin_job_view j;
    int rc = admin_connect_redis(ad);
    if (rc != ADMIN_OK) return rc;
    if (admin_job_read(ad, job_id, &j) != FC_OK) return admin_redis_lost(ad);
    if (!j.exists) return unknown_job(ad, job_id);
    json_object *failed = failed_items(ad, job_id, &rc);
    if (!failed) return admin_redis_lost(ad);
    if (ad->cfg->json) {
        json_object *o = admin_job_json(&j);
        admin_json_add(o, "failed_items", failed);
        return admin_print_json(o) == FC_OK ? ADMIN_OK : ADMIN_NOTHING;
    }
    print_job(&j);
    print_failed(failed);
    json_object_put(failed);
    return ADMIN_OK;
}

/* ---- cancel JOB_ID ---- */

static int cancel_result(const admin *ad, const admin_job_view *j, int already) {
    char when[32];
    admin_iso_time(when, sizeof(when), j->cancelled_ms);
    if (ad->cfg->json) {
        json_object *o = admin_job_json(j);
        admin_json_add(o, "already_cancelled", json_object_new_boolean(already));
        return admin_print_json(o) == FC_OK ? ADMIN_OK : ADMIN_NOTHING;
    }
    if (already) printf("job %s was already cancelled at %s\n", j->id, when);
    else printf("job %s cancelled at %s: workers skip its batches and dead-letter their items with class "
                "'cancelled'; a producer waiting for it ends with exit 1\n", j->id, when);
    return ADMIN_OK;
}

int admin_cancel(admin *ad, const char *job_id) {
    admin_job_view j;
    int rc = admin_connect_redis(ad);
    if (rc != ADMIN_OK) return rc;
    if (admin_job_read(ad, job_id, &j) != FC_OK) return admin_redis_lost(ad);
    if (!j.exists) return unknown_job(ad, job_id);
    if (j.cancelled_ms) return cancel_result(ad, &j, 1);
    if (admin_job_finished(&j)) {
        admin_say("job '%s' already finished (%ld items: %ld ok, %ld failed); nothing to cancel", job_id, j.items,
                  j.done - j.failed, j.failed);
        return ADMIN_NOTHING;
    }
    char key[FC_KEY_MAX], ms[32];
    admin_job_key(key, ad, job_id, FC_JOB_META);
    snprintf(ms, sizeof(ms), "%lld", (long long)admin_now_ms());
    fc_reply r = {0};
    /* HSETNX: of two cancels at once, the first time stays. */
    rc = fc_redis_cmd(ad->redis, &r, "HSETNX %s cancelled_ms %s", key, ms);
    fc_reply_free(&r);
    if (rc != FC_OK || admin_job_read(ad, job_id, &j) != FC_OK) return admin_redis_lost(ad);
    return cancel_result(ad, &j, 0);
}
