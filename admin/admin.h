/* flashcard-admin: the operator's command. main.c reads the settings and dispatches to one file per
 * concern: status.c (queues, workers, limits, breakers, jobs), jobs.c (a job's record, `job`, `cancel`),
 * dead.c (`dead list|replay|purge`: the pass over P.dead) with replay.c (replaying and splitting one
 * dead letter) and marker.c (its marker in Redis), results.c (late results), mgmt.c (the RabbitMQ
 * management API), table.c (terminal tables) and util.c (connections, time, JSON on stdout, sets). */
#ifndef ADMIN_H
#define ADMIN_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_amqp.h"
#include "fc_config.h"
#include "fc_jobs.h"
#include "fc_keys.h"
#include "fc_message.h"
#include "fc_redis.h"

/* Reading what a queue held when a command began: no delivery for this long means the rest is held by
 * another consumer. basic.qos counts the prefetch in 16 bits: beyond, no limit. */
#define ADMIN_IDLE_S 3.0
#define ADMIN_PREFETCH_MAX 65535

/* Exit codes, documented in the README. 3 means what it means for the producer. */
enum {
    ADMIN_OK = 0,        /* done */
    ADMIN_NOTHING = 1,   /* done, with something to report: nothing matched, no such job, job already finished,
                          * a replay or purge left some of what it selected in P.dead */
    ADMIN_USAGE = 2,     /* bad command line or settings; purge without --yes */
    ADMIN_INFRA = 3      /* the broker or Redis cannot be reached, refused the credentials or a command, or
                          * was lost part-way */
};

typedef struct admin {
    fc_config *cfg;
    const char *cmd;     /* the subcommand, e.g. "status" */
    fc_amqp *amqp;       /* NULL until admin_connect_broker */
    fc_redis *redis;     /* NULL until admin_connect_redis */
} admin;

/* ---- util.c ---- */

/* admin_say prints "flashcard-admin: <message>" on one line to stderr. */
void admin_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* admin_connect_broker connects ad->amqp to the broker: 0, or ADMIN_INFRA after one line saying why (never
 * a password). admin_connect_amqp does the same for a connection of the caller's (*out: free it). */
int admin_connect_broker(admin *ad);
int admin_connect_amqp(admin *ad, fc_amqp **out);
/* admin_settle_grace polls a (taking nothing) for long enough that acks just sent are applied before the
 * connection closes: RabbitMQ 3.10's quorum queue client holds back the settlements beyond 32 pending
 * commands and drops them when the channel closes (the messages would come back). 300 ms plus 2 ms per
 * ack, at most 5 s. */
void admin_settle_grace(fc_amqp *a, long acks);
/* admin_connect_redis connects to Redis and checks it answers: 0, or ADMIN_INFRA after one line. */
int admin_connect_redis(admin *ad);
/* admin_redis_lost says that Redis failed mid-command (one line) and returns ADMIN_INFRA. */
int admin_redis_lost(admin *ad);
void admin_disconnect(admin *ad);
/* admin_now_ms returns the wall clock in unix ms; admin_mono_s a monotonic clock in seconds. */
int64_t admin_now_ms(void);
double admin_mono_s(void);
/* admin_iso_time writes unix ms as ISO 8601 UTC ("2026-12-02T03:04:05Z"), or "-" for ms <= 0. */
void admin_iso_time(char *out, size_t n, int64_t ms);
/* admin_print_json writes o to stdout, indented, and puts o. Returns 0 or FC_EIO. */
int admin_print_json(json_object *o);
/* admin_json_add adds v to o under key (o takes v, NULL included: json null). */
void admin_json_add(json_object *o, const char *key, json_object *v);
/* admin_reply_str returns the string of a reply (STR or STATUS), or NULL. */
const char *admin_reply_str(const fc_reply *r);
/* admin_reply_ll parses a reply's string or integer as a number, or returns dflt. */
long long admin_reply_ll(const fc_reply *r, long long dflt);
/* admin_job_key writes the key of a part of job_id's record (FC_KEY_MAX bytes). */
void admin_job_key(char *out, const admin *ad, const char *job_id, enum fc_job_key part);

/* admin_grow makes room for one more element of size sz in *v (count n, capacity *cap): 0 or FC_ENOMEM. */
int admin_grow(void **v, size_t n, size_t *cap, size_t sz);
/* admin_json_str returns o's member key as text, or NULL when o is NULL or the member is absent or null
 * (borrowed from o). */
const char *admin_json_str(json_object *o, const char *key);
/* admin_cmp_ll compares two numbers for qsort: -1, 0 or 1. */
int admin_cmp_ll(long long a, long long b);

/* admin_reason_valid says whether name is a CLASS of --reason: an error class of fc_class_name (but
 * "ok") or "poison". admin_reason_list writes them for messages: "retryable, permanent, ...". */
int admin_reason_valid(const char *name);
const char *admin_reason_list(void);

/* What a queue held when a command began, read without acking (deliveries beyond are left alone). */
typedef struct admin_reader {
    long expected;   /* messages it held */
    long seen;       /* of those, delivered so far */
    double last;     /* admin_mono_s() of the start or the last delivery */
} admin_reader;
/* admin_reader_start consumes queue on a, at most expected deliveries unacked at once: 0, or an
 * fc_amqp error. Nothing is consumed when expected is 0. */
int admin_reader_start(admin_reader *r, fc_amqp *a, const char *queue);
/* admin_reader_take counts a delivery: 1 if it is one of those the queue held, 0 beyond them. */
int admin_reader_take(admin_reader *r);
/* admin_reader_done: every message held came, or none for ADMIN_IDLE_S. */
int admin_reader_done(const admin_reader *r);

/* A set of strings (message ids, hashes): open addressing, copies kept. */
typedef struct admin_set admin_set;
/* admin_set_new returns an empty set, NULL without memory; admin_set_free frees it (NULL accepted). */
admin_set *admin_set_new(void);
void admin_set_free(admin_set *set);
/* admin_set_add adds s: 1 if it was new, 0 if already there, FC_ENOMEM. */
int admin_set_add(admin_set *set, const char *s);
int admin_set_has(const admin_set *set, const char *s);

/* ---- table.c: columns sized to their widest cell (display width, wide characters counted twice) ---- */
typedef struct admin_table admin_table;
/* admin_table_new returns a table with ncols columns named by headers (copied); NULL without memory. */
admin_table *admin_table_new(int ncols, const char *const *headers);
/* admin_table_row adds a row of ncols cells (copied; NULL shows "-"); cells longer than maxw display
 * columns (0 = no cut) are cut with "...". */
void admin_table_row(admin_table *t, const char *const *cells);
void admin_table_max_width(admin_table *t, int col, int maxw);
/* admin_table_right aligns column col to the right (numbers). */
void admin_table_right(admin_table *t, int col);
size_t admin_table_rows(const admin_table *t);
void admin_table_print(const admin_table *t);
void admin_table_free(admin_table *t);
/* admin_display_width returns the terminal columns a UTF-8 string takes. */
int admin_display_width(const char *s);

/* ---- mgmt.c: the RabbitMQ management API ---- */
typedef struct admin_queue_row {
    char name[200];
    long ready;      /* -1 unknown */
    long unacked;    /* -1 unknown */
    long consumers;  /* -1 unknown */
} admin_queue_row;

/* admin_mgmt_queues fills *rows (caller frees) with the queues of the vhost of the first AMQP_URL whose
 * names start with "<prefix>.", sorted by name. Returns 0, or FC_ECONN / FC_EACCESS / FC_EPARSE
 * with why (a URL without credentials; never a password). */
int admin_mgmt_queues(const fc_config *cfg, admin_queue_row **rows, size_t *n, char *why, size_t whylen);
/* admin_mgmt_location writes the management API's base URL without credentials, for messages. */
int admin_mgmt_location(const fc_config *cfg, char *out, size_t outlen);

/* ---- jobs.c: a job's record ---- */

/* The window over which a job's share of the fleet's calls is measured: the timelines' 10 s buckets
 * (fc_keys.h) from ADMIN_SHARE_BUCKETS - 1 before the current one to the current one (which is still
 * filling): the last 50 to 60 s. */
#define ADMIN_SHARE_BUCKETS 6
#define ADMIN_SHARE_WINDOW_S (ADMIN_SHARE_BUCKETS * 10)

/* What the fleet is doing, read once for every job shown. */
typedef struct admin_fleet {
    size_t nfollowed;       /* jobs listed in P:active, the oldest FC_JOBS_FOLLOWED_MAX as the workers read it */
    char followed[FC_JOBS_FOLLOWED_MAX][FC_JOB_ID_MAX + 1];
    long priority_sum;      /* of the followed jobs not finished: the weights the workers share calls by */
    long long t10_last;     /* the window's last bucket (unix time / 10 s) */
    long calls;             /* the fleet's API calls settled in the window */
} admin_fleet;

/* admin_fleet_read reads *f in two round trips: 0, or an fc_redis error. */
int admin_fleet_read(admin *ad, admin_fleet *f);

typedef struct admin_job_view {
    char id[80];
    int exists;            /* its meta is there (not expired, not unknown) */
    int64_t created_ms;
    long items;            /* -1 until publishing finished */
    long batches;          /* -1 until known */
    long batches_published;/* confirmed batches so far */
    int published;
    long done, failed, in_retry;
    int64_t cancelled_ms;  /* 0 if not cancelled */
    int64_t first_outcome_ms, last_outcome_ms;
    long api_calls, prompt_tokens, completion_tokens, cache_hits;
    long batch_size;
    int priority;          /* --priority, FC_PRIORITY_DEFAULT when its meta has none */
    int followed;          /* listed in P:active (among the jobs the workers follow) */
    long long budget_tokens, budget_uusd; /* its limits (uusd = micro-USD), 0 = none */
    long long spent_tokens, spent_uusd;   /* spent so far (P:job:{id}:budget) */
    int64_t exhausted_ms;  /* when a call was first refused for the budget, 0 = never */
    long items_stopped;    /* items whose outcome is "budget" */
    long calls_window;     /* its API calls settled in the share window (ADMIN_SHARE_WINDOW_S) */
    long fleet_calls_window; /* the fleet's, same window */
    double fair_share;     /* priority / the fleet's priority_sum: what the schedulers aim at; -1 when
                            * the job is not followed or finished */
} admin_job_view;

/* admin_job_read reads job_id's record in one round trip (one more when it has a budget and some items
 * failed, one more when some wait for a retry): 0 (exists says whether there is one), or an fc_redis
 * error. fleet is what admin_fleet_read gave (shared by the jobs of one command), or NULL to read it
 * here (two round trips more). */
int admin_job_read(admin *ad, const char *job_id, const admin_fleet *fleet, admin_job_view *j);
/* admin_job_finished: published and every item has an outcome. */
int admin_job_finished(const admin_job_view *j);
/* admin_job_state: "publishing", "running", "cancelled" or "finished". */
const char *admin_job_state(const admin_job_view *j);
/* admin_job_rate returns items per second since the first outcome (until the last one once the job is finished
 * or cancelled), 0 when unknown or measured over less than a second. */
double admin_job_rate(const admin_job_view *j);
/* admin_job_eta returns the seconds left at the current rate, -1 when unknown. */
double admin_job_eta(const admin_job_view *j);
/* admin_job_share_text writes the job's measured and fair share of the fleet's calls, "48% (50%)"
 * ("-" for either when unknown, "-" alone when both are). */
void admin_job_share_text(const admin_job_view *j, char *out, size_t n);
/* admin_job_budget_text writes its spend against its limits, "$0.41 of $0.36 STOPPED",
 * "12.3k of 100k tokens", both joined by ", ", or "-" without a budget. */
void admin_job_budget_text(const admin_job_view *j, char *out, size_t n);
/* admin_job_json returns the job as a JSON object (caller puts). */
json_object *admin_job_json(const admin_job_view *j);
/* admin_job_ids returns the ids of P:jobs, newest first, at most max (caller frees each and the array);
 * 0 or an fc_redis error. */
int admin_job_ids(admin *ad, size_t max, char ***ids, size_t *n);

/* ---- the subcommands: each returns an exit code ---- */
int admin_status(admin *ad);
int admin_job(admin *ad, const char *job_id);
int admin_cancel(admin *ad, const char *job_id);
int admin_dead(admin *ad, const char *action);
int admin_results(admin *ad, const char *job_id);

#endif
