/* A job's record in Redis (P:job:{id}:meta|confirmed|outcome|failed|stats|retry|budget|timeline) read as
 * one view, with what the fleet is doing (the jobs it follows, its calls lately) to set it against;
 * the `job` and `cancel` subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_jobs.h"
#include "fc_message.h"

/* ---- pipelines: commands appended word by word, sent in one round trip ---- */

#define PIPE_MAX (2 * FC_JOBS_FOLLOWED_MAX + 4) /* the most any caller here appends */
#define PIPE_WORDS 10

typedef struct pipe_cmds {
    size_t n;
    int argc[PIPE_MAX];
    const char *argv[PIPE_MAX][PIPE_WORDS]; /* borrowed: the words live until pipe_send */
    fc_reply r[PIPE_MAX];                   /* the replies, in the commands' order */
    int err;                                /* sticky: FC_ETOOBIG once a command or word did not fit */
} pipe_cmds;

/* pipe_cmd starts a command (name key); its reply will be p->r[its rank]. */
static void pipe_cmd(pipe_cmds *p, const char *name, const char *key) {
    if (p->n == PIPE_MAX) {
        p->err = FC_ETOOBIG;
        return;
    }
    p->argv[p->n][0] = name, p->argv[p->n][1] = key;
    p->argc[p->n++] = 2;
}

/* pipe_arg adds a word to the command started last. */
static void pipe_arg(pipe_cmds *p, const char *word) {
    if (p->err || p->n == 0 || p->argc[p->n - 1] == PIPE_WORDS) {
        p->err = FC_ETOOBIG;
        return;
    }
    p->argv[p->n - 1][p->argc[p->n - 1]++] = word;
}

/* pipe_args adds the words given, up to a NULL. */
static void pipe_args(pipe_cmds *p, ...) {
    va_list ap;
    va_start(ap, p);
    for (const char *w; (w = va_arg(ap, const char *));) pipe_arg(p, w);
    va_end(ap);
}

/* pipe_send sends the commands: 0, or the sticky error, or an fc_redis error. */
static int pipe_send(admin *ad, pipe_cmds *p) {
    const char **argvs[PIPE_MAX];
    if (p->err) return p->err;
    for (size_t i = 0; i < p->n; i++) argvs[i] = p->argv[i];
    return p->n ? fc_redis_pipeline(ad->redis, p->r, p->n, p->argc, argvs, NULL) : FC_OK;
}

static void pipe_free(pipe_cmds *p) {
    for (size_t i = 0; i < p->n; i++) fc_reply_free(&p->r[i]);
    p->n = 0;
}

/* ---- reply helpers ---- */

/* hash_ll returns field key of a HGETALL reply as a number, or dflt. */
static long long hash_ll(const fc_reply *h, const char *key, long long dflt) {
    if (!h || h->type != FC_REPLY_ARRAY) return dflt;
    for (size_t i = 0; i + 1 < h->nelem; i += 2)
        if (admin_reply_str(&h->elem[i]) && strcmp(h->elem[i].str, key) == 0) return admin_reply_ll(&h->elem[i + 1], dflt);
    return dflt;
}

/* elem_ll returns element i of an array reply (HMGET) as a number, or dflt. */
static long long elem_ll(const fc_reply *a, size_t i, long long dflt) {
    return a->type == FC_REPLY_ARRAY && i < a->nelem ? admin_reply_ll(&a->elem[i], dflt) : dflt;
}

/* sum_elems adds up the numbers of an array reply (absent fields count 0). */
static long sum_elems(const fc_reply *a) {
    long n = 0;
    for (size_t i = 0; a->type == FC_REPLY_ARRAY && i < a->nelem; i++) n += (long)admin_reply_ll(&a->elem[i], 0);
    return n;
}

/* priority_of reads a job's priority from its meta field (absent or out of range: the default). */
static int priority_of(long long v) { return v >= 1 && v <= 1000 ? (int)v : FC_PRIORITY_DEFAULT; }

/* ---- the fleet ---- */

/* A window's bucket fields ("<unix time / 10>"). */
typedef char bucket_field[24];

static void window_fields(long long t10_last, bucket_field f[ADMIN_SHARE_BUCKETS]) {
    for (int b = 0; b < ADMIN_SHARE_BUCKETS; b++)
        snprintf(f[b], sizeof(f[b]), "%lld", t10_last - ADMIN_SHARE_BUCKETS + 1 + b);
}

/* fleet_window_cmds appends the HMGETs of the fleet's timeline over the window: one per unix hour it
 * spans (P:timeline:<hour>), at most two; returns how many. */
static int fleet_window_cmds(pipe_cmds *p, const admin *ad, long long t10_last, bucket_field f[ADMIN_SHARE_BUCKETS],
                             char keys[2][FC_KEY_MAX]) {
    int nkeys = 0;
    long long hour = -1;
    for (int b = 0; b < ADMIN_SHARE_BUCKETS; b++) {
        long long t10 = t10_last - ADMIN_SHARE_BUCKETS + 1 + b;
        if (t10 * 10 / 3600 != hour && nkeys < 2) {
            hour = t10 * 10 / 3600;
            fc_key_timeline(keys[nkeys], FC_KEY_MAX, ad->cfg->queue_prefix, hour);
            pipe_cmd(p, "HMGET", keys[nkeys++]);
        }
        pipe_arg(p, f[b]);
    }
    return nkeys;
}

/* followed_ids keeps the ids of the ZRANGEBYSCORE reply of P:active. */
static void followed_ids(admin_fleet *f, const fc_reply *r) {
    for (size_t i = 0; r->type == FC_REPLY_ARRAY && i < r->nelem && f->nfollowed < FC_JOBS_FOLLOWED_MAX; i++)
        if (admin_reply_str(&r->elem[i]) && strlen(r->elem[i].str) <= FC_JOB_ID_MAX)
            snprintf(f->followed[f->nfollowed++], FC_JOB_ID_MAX + 1, "%s", r->elem[i].str);
}

/* sum_priorities adds up the priorities of the followed jobs that have a record and are not finished
 * (meta: created_ms priority items published, and the outcomes' count). */
static int sum_priorities(admin *ad, admin_fleet *f) {
    char(*keys)[2][FC_KEY_MAX] = calloc(f->nfollowed, sizeof(*keys));
    pipe_cmds *p = calloc(1, sizeof(*p));
    if (!p || !keys) {
        free(p);
        free(keys);
        return FC_ENOMEM;
    }
    for (size_t i = 0; i < f->nfollowed; i++) {
        admin_job_key(keys[i][0], ad, f->followed[i], FC_JOB_META);
        admin_job_key(keys[i][1], ad, f->followed[i], FC_JOB_OUTCOME);
        pipe_cmd(p, "HMGET", keys[i][0]);
        pipe_args(p, "created_ms", "priority", "items", "published", NULL);
        pipe_cmd(p, "HLEN", keys[i][1]);
    }
    int rc = pipe_send(ad, p);
    for (size_t i = 0; rc == FC_OK && i < f->nfollowed; i++) {
        const fc_reply *m = &p->r[2 * i];
        long long items = elem_ll(m, 2, -1), outcomes = admin_reply_ll(&p->r[2 * i + 1], 0);
        int finished = elem_ll(m, 3, 0) == 1 && items >= 0 && outcomes >= items;
        if (elem_ll(m, 0, 0) > 0 && !finished) f->priority_sum += priority_of(elem_ll(m, 1, 0));
    }
    pipe_free(p);
    free(p);
    free(keys);
    return rc;
}

int admin_fleet_read(admin *ad, admin_fleet *f) {
    char active[FC_KEY_MAX], keys[2][FC_KEY_MAX], limit[16];
    bucket_field fields[ADMIN_SHARE_BUCKETS];
    memset(f, 0, sizeof(*f));
    f->t10_last = admin_now_ms() / 10000;
    window_fields(f->t10_last, fields);
    fc_jobs_key(active, sizeof(active), ad->cfg->queue_prefix);
    snprintf(limit, sizeof(limit), "%d", FC_JOBS_FOLLOWED_MAX);
    pipe_cmds *p = calloc(1, sizeof(*p));
    if (!p) return FC_ENOMEM;
    /* ZRANGEBYSCORE rather than ZRANGE: the command the README's ACL already grants status. */
    pipe_cmd(p, "ZRANGEBYSCORE", active);
    pipe_args(p, "-inf", "+inf", "LIMIT", "0", limit, NULL);
    int nkeys = fleet_window_cmds(p, ad, f->t10_last, fields, keys);
    int rc = pipe_send(ad, p);
    if (rc == FC_OK) {
        followed_ids(f, &p->r[0]);
        for (int k = 0; k < nkeys; k++) f->calls += sum_elems(&p->r[1 + k]);
    }
    pipe_free(p);
    free(p);
    return rc == FC_OK && f->nfollowed ? sum_priorities(ad, f) : rc;
}

/* ---- a job ---- */

enum { R_META, R_OUTCOME, R_FAILED, R_RETRY, R_STATS, R_CONFIRMED, R_BUDGET, R_TIMELINE, R_N };

static void fill(admin_job_view *j, const fc_reply *r) {
    const fc_reply *m = &r[R_META], *s = &r[R_STATS], *b = &r[R_BUDGET];
    j->exists = m->type == FC_REPLY_ARRAY && m->nelem > 0;
    j->created_ms = hash_ll(m, "created_ms", 0);
    j->items = (long)hash_ll(m, "items", -1);
    j->batches = (long)hash_ll(m, "batches", -1);
    j->published = hash_ll(m, "published", 0) == 1;
    j->cancelled_ms = hash_ll(m, "cancelled_ms", 0);
    j->batch_size = (long)hash_ll(m, "batch_size", 0);
    j->priority = priority_of(hash_ll(m, "priority", 0));
    j->budget_tokens = hash_ll(m, "budget_tokens", 0);
    j->budget_uusd = hash_ll(m, "budget_uusd", 0);
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
    j->spent_tokens = elem_ll(b, 0, 0);
    j->spent_uusd = elem_ll(b, 1, 0);
    j->exhausted_ms = elem_ll(b, 2, 0);
    j->calls_window = sum_elems(&r[R_TIMELINE]);
}

/* set_fleet places the job in the fleet: followed, the fleet's calls, its fair share. */
static void set_fleet(admin_job_view *j, const admin_fleet *f) {
    for (size_t i = 0; i < f->nfollowed && !j->followed; i++) j->followed = strcmp(f->followed[i], j->id) == 0;
    j->fleet_calls_window = f->calls;
    j->fair_share = j->followed && !admin_job_finished(j) && f->priority_sum > 0
                        ? (double)j->priority / (double)f->priority_sum : -1;
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

/* count_stopped counts the items whose outcome is "budget" (HVALS of the outcomes: asked only of a job
 * with a budget some of whose items failed, since the budget's are among them). */
static int count_stopped(admin *ad, const char *outcome_key, admin_job_view *j) {
    fc_reply r = {0};
    int rc = fc_redis_cmd(ad->redis, &r, "HVALS %s", outcome_key);
    for (size_t i = 0; rc == FC_OK && r.type == FC_REPLY_ARRAY && i < r.nelem; i++)
        j->items_stopped += admin_reply_str(&r.elem[i]) && strcmp(r.elem[i].str, "budget") == 0;
    fc_reply_free(&r);
    return rc;
}

/* read_record reads the job's keys in one round trip. */
static int read_record(admin *ad, const char *job_id, long long t10_last, admin_job_view *j) {
    static const char *const cmd[R_N] = {"HGETALL", "HLEN", "HLEN", "HLEN", "HGETALL", "BITCOUNT", "HMGET", "HMGET"};
    static const enum fc_job_key part[R_N] = {FC_JOB_META,  FC_JOB_OUTCOME,   FC_JOB_FAILED, FC_JOB_RETRY,
                                               FC_JOB_STATS, FC_JOB_CONFIRMED, FC_JOB_BUDGET, FC_JOB_TIMELINE};
    char k[R_N][FC_KEY_MAX];
    bucket_field fields[ADMIN_SHARE_BUCKETS];
    pipe_cmds *p = calloc(1, sizeof(*p));
    if (!p) return FC_ENOMEM;
    window_fields(t10_last, fields);
    for (int i = 0; i < R_N; i++) {
        admin_job_key(k[i], ad, job_id, part[i]);
        pipe_cmd(p, cmd[i], k[i]);
        if (i == R_BUDGET) pipe_args(p, "tokens", "uusd", "exhausted_ms", NULL);
        for (int b = 0; i == R_TIMELINE && b < ADMIN_SHARE_BUCKETS; b++) pipe_arg(p, fields[b]);
    }
    int rc = pipe_send(ad, p);
    if (rc == FC_OK) fill(j, p->r);
    pipe_free(p);
    free(p);
    return rc;
}

int admin_job_read(admin *ad, const char *job_id, const admin_fleet *fleet, admin_job_view *j) {
    admin_fleet own;
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", job_id);
    int rc = fleet ? FC_OK : admin_fleet_read(ad, &own);
    if (rc != FC_OK) return rc;
    if (!fleet) fleet = &own;
    char outcome[FC_KEY_MAX], retry[FC_KEY_MAX];
    admin_job_key(outcome, ad, job_id, FC_JOB_OUTCOME);
    admin_job_key(retry, ad, job_id, FC_JOB_RETRY);
    rc = read_record(ad, job_id, fleet->t10_last, j);
    if (rc == FC_OK) set_fleet(j, fleet);
    if (rc == FC_OK && j->failed > 0 && (j->budget_tokens > 0 || j->budget_uusd > 0))
        rc = count_stopped(ad, outcome, j);
    if (rc == FC_OK && j->in_retry > 0) rc = count_in_retry(ad, retry, outcome, j);
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

double admin_job_eta(const admin_job_view *j) {
    double rate = admin_job_rate(j);
    long left = j->items >= 0 ? j->items - j->done : -1;
    return rate > 0 && left >= 0 ? (double)left / rate : -1;
}

/* measured_share is the job's calls over the fleet's in the window, -1 when the fleet made none. */
static double measured_share(const admin_job_view *j) {
    return j->fleet_calls_window > 0 ? (double)j->calls_window / (double)j->fleet_calls_window : -1;
}

void admin_job_share_text(const admin_job_view *j, char *out, size_t n) {
    double m = measured_share(j), f = j->fair_share;
    char a[16] = "-", b[16] = "-";
    if (m >= 0) snprintf(a, sizeof(a), "%.0f%%", m * 100);
    if (f >= 0) snprintf(b, sizeof(b), "%.0f%%", f * 100);
    if (m < 0 && f < 0) snprintf(out, n, "-");
    else snprintf(out, n, "%s (%s)", a, b);
}

/* tokens_text writes a count of tokens for people: 950, 12.3k, 100k, 1.5M. */
static void tokens_text(char *out, size_t n, long long v) {
    static const char *const unit[] = {"", "k", "M", "G"};
    double x = (double)v;
    int u = 0;
    while (x >= 1000 && u < 3) x /= 1000, u++;
    if (u == 0 || x >= 100 || x == (double)(long long)x) snprintf(out, n, "%.0f%s", x, unit[u]);
    else snprintf(out, n, "%.1f%s", x, unit[u]);
}

/* usd_text writes micro-USD as dollars with the decimals given. */
static void usd_text(char *out, size_t n, long long uusd, int decimals) {
    snprintf(out, n, "$%.*f", decimals, (double)uusd / 1e6);
}

void admin_job_budget_text(const admin_job_view *j, char *out, size_t n) {
    char spent[24], limit[24], usd[64] = "", tok[64] = "";
    if (j->budget_uusd > 0) {
        int decimals = j->budget_uusd >= 100000 ? 2 : 4; /* cents, or tenths of cents below ten cents */
        usd_text(spent, sizeof(spent), j->spent_uusd, decimals);
        usd_text(limit, sizeof(limit), j->budget_uusd, decimals);
        snprintf(usd, sizeof(usd), "%s of %s", spent, limit);
    }
    if (j->budget_tokens > 0) {
        tokens_text(spent, sizeof(spent), j->spent_tokens);
        tokens_text(limit, sizeof(limit), j->budget_tokens);
        snprintf(tok, sizeof(tok), "%s of %s tokens", spent, limit);
    }
    if (!*usd && !*tok) snprintf(out, n, "-");
    else snprintf(out, n, "%s%s%s%s", usd, *usd && *tok ? ", " : "", tok, j->items_stopped > 0 ? " STOPPED" : "");
}

/* opt_long is a number, or null when negative (unknown). */
static json_object *opt_long(long v) { return v < 0 ? NULL : json_object_new_int64(v); }
static json_object *opt_double(double v) { return v < 0 ? NULL : json_object_new_double(v); }
/* opt_limit is a limit, or null when there is none (0). */
static json_object *opt_limit(long long v, double scale) {
    return v <= 0 ? NULL : scale == 1 ? json_object_new_int64(v) : json_object_new_double((double)v / scale);
}
/* left_of is what a limit leaves: -1 without a limit, never below 0. */
static long long left_of(long long limit, long long spent) {
    return limit <= 0 ? -1 : spent >= limit ? 0 : limit - spent;
}

static json_object *budget_json(const admin_job_view *j) {
    json_object *b = json_object_new_object();
    long long left_tokens = left_of(j->budget_tokens, j->spent_tokens);
    long long left_uusd = left_of(j->budget_uusd, j->spent_uusd);
    admin_json_add(b, "limit_tokens", opt_limit(j->budget_tokens, 1));
    admin_json_add(b, "limit_usd", opt_limit(j->budget_uusd, 1e6));
    admin_json_add(b, "spent_tokens", json_object_new_int64(j->spent_tokens));
    admin_json_add(b, "spent_usd", json_object_new_double((double)j->spent_uusd / 1e6));
    admin_json_add(b, "left_tokens", left_tokens < 0 ? NULL : json_object_new_int64(left_tokens));
    admin_json_add(b, "left_usd", left_uusd < 0 ? NULL : json_object_new_double((double)left_uusd / 1e6));
    admin_json_add(b, "stopped", json_object_new_boolean(j->items_stopped > 0));
    admin_json_add(b, "items_stopped", json_object_new_int64(j->items_stopped));
    admin_json_add(b, "exhausted_ms", j->exhausted_ms > 0 ? json_object_new_int64(j->exhausted_ms) : NULL);
    return b;
}

static json_object *share_json(const admin_job_view *j) {
    json_object *s = json_object_new_object();
    admin_json_add(s, "window_s", json_object_new_int(ADMIN_SHARE_WINDOW_S));
    admin_json_add(s, "calls", json_object_new_int64(j->calls_window));
    admin_json_add(s, "fleet_calls", json_object_new_int64(j->fleet_calls_window));
    admin_json_add(s, "share", opt_double(measured_share(j)));
    admin_json_add(s, "fair_share", opt_double(j->fair_share));
    return s;
}

json_object *admin_job_json(const admin_job_view *j) {
    json_object *o = json_object_new_object(), *st = json_object_new_object();
    char when[32];
    double rate = admin_job_rate(j);
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
    admin_json_add(o, "eta_s", opt_double(admin_job_eta(j)));
    admin_json_add(o, "cancelled_ms", j->cancelled_ms ? json_object_new_int64(j->cancelled_ms) : NULL);
    admin_json_add(st, "api_calls", json_object_new_int64(j->api_calls));
    admin_json_add(st, "prompt_tokens", json_object_new_int64(j->prompt_tokens));
    admin_json_add(st, "completion_tokens", json_object_new_int64(j->completion_tokens));
    admin_json_add(st, "cache_hits", json_object_new_int64(j->cache_hits));
    admin_json_add(o, "stats", st);
    admin_json_add(o, "priority", json_object_new_int(j->priority));
    admin_json_add(o, "followed", json_object_new_boolean(j->followed));
    admin_json_add(o, "budget", budget_json(j));
    admin_json_add(o, "share", share_json(j));
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

/* print_fleet_lines prints the job's priority, its share of the fleet's calls and its budget. */
static void print_fleet_lines(const admin_job_view *j) {
    char measured[16] = "-", fair[16] = "-", budget[128], when[32];
    double m = measured_share(j);
    if (m >= 0) snprintf(measured, sizeof(measured), "%.0f%%", m * 100);
    if (j->fair_share >= 0) snprintf(fair, sizeof(fair), "%.0f%%", j->fair_share * 100);
    admin_job_budget_text(j, budget, sizeof(budget));
    admin_iso_time(when, sizeof(when), j->exhausted_ms);
    printf("priority     %d (%s)\n", j->priority, j->followed ? "followed by the fleet" : "not followed");
    printf("share        %s of the fleet's calls over the last %d s (%ld of %ld); fair share %s\n", measured,
           ADMIN_SHARE_WINDOW_S, j->calls_window, j->fleet_calls_window, fair);
    if (j->items_stopped > 0)
        printf("budget       %s: %ld items stopped, ran out at %s\n", budget, j->items_stopped, when);
    else printf("budget       %s\n", strcmp(budget, "-") ? budget : "none");
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
    print_fleet_lines(j);
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
    if (admin_job_read(ad, job_id, NULL, &j) != FC_OK) return admin_redis_lost(ad);
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
    if (admin_job_read(ad, job_id, NULL, &j) != FC_OK) return admin_redis_lost(ad);
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
    if (rc != FC_OK || admin_job_read(ad, job_id, NULL, &j) != FC_OK) return admin_redis_lost(ad);
    return cancel_result(ad, &j, 0);
}
