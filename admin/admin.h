/* flashcard-admin: the operator's command. main.c reads the settings and dispatches to one file per
 * concern: status.c (queues, workers, limits, breakers, jobs), jobs.c (a job's record, `job`, `cancel`),
 * dead.c (`dead list|replay|purge`), results.c (late results), mgmt.c (the RabbitMQ management API),
 * table.c (terminal tables) and util.c (connections, time, JSON on stdout). */
#ifndef ADMIN_H
#define ADMIN_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_amqp.h"
#include "fc_config.h"
#include "fc_keys.h"
#include "fc_redis.h"

/* Exit codes, documented in the README. 3 means what it means for the producer. */
enum {
    ADMIN_OK = 0,        /* done */
    ADMIN_NOTHING = 1,   /* done, with something to report: nothing matched, no such job, job already finished,
                          * some dead letters could not be replayed */
    ADMIN_USAGE = 2,     /* bad command line or settings; purge without --yes */
    ADMIN_INFRA = 3      /* the broker or Redis cannot be reached (or refused the credentials) */
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
/* now_ms returns the wall clock in unix ms; mono_s a monotonic clock in seconds. */
int64_t now_ms(void);
double mono_s(void);
/* iso_time writes unix ms as ISO 8601 UTC ("2026-12-02T03:04:05Z"), or "-" for ms <= 0. */
void iso_time(char *out, size_t n, int64_t ms);
/* print_json writes o to stdout, indented, and puts o. Returns 0 or FC_EIO. */
int print_json(json_object *o);
/* json_add adds v to o under key (o takes v, NULL included: json null). */
void json_add(json_object *o, const char *key, json_object *v);
/* reply_str returns the string of a reply (STR or STATUS), or NULL. */
const char *reply_str(const fc_reply *r);
/* reply_ll parses a reply's string or integer as a number, or returns dflt. */
long long reply_ll(const fc_reply *r, long long dflt);
/* job_key writes the key of a part of job_id's record (FC_KEY_MAX bytes). */
void job_key(char *out, const admin *ad, const char *job_id, enum fc_job_key part);

/* ---- table.c: columns sized to their widest cell (display width, wide characters counted twice) ---- */
typedef struct table table;
/* table_new returns a table with ncols columns named by headers (copied); NULL without memory. */
table *table_new(int ncols, const char *const *headers);
/* table_row adds a row of ncols cells (copied; NULL shows "-"); cells longer than maxw display
 * columns (0 = no cut) are cut with "...". */
void table_row(table *t, const char *const *cells);
void table_max_width(table *t, int col, int maxw);
/* table_right aligns column col to the right (numbers). */
void table_right(table *t, int col);
size_t table_rows(const table *t);
void table_print(const table *t);
void table_free(table *t);
/* display_width returns the terminal columns a UTF-8 string takes. */
int display_width(const char *s);

/* ---- mgmt.c: the RabbitMQ management API ---- */
typedef struct queue_row {
    char name[200];
    long ready;      /* -1 unknown */
    long unacked;    /* -1 unknown */
    long consumers;  /* -1 unknown */
} queue_row;

/* mgmt_queues fills *rows (caller frees) with the queues of the vhost of the first AMQP_URL whose
 * names start with "<prefix>.", sorted by name. Returns 0, or FC_ECONN / FC_EACCESS / FC_EPARSE
 * with why (a URL without credentials; never a password). */
int mgmt_queues(const fc_config *cfg, queue_row **rows, size_t *n, char *why, size_t whylen);
/* mgmt_location writes the management API's base URL without credentials, for messages. */
int mgmt_location(const fc_config *cfg, char *out, size_t outlen);

/* ---- jobs.c: a job's record ---- */
typedef struct job_view {
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
} job_view;

/* job_read reads job_id's record: 0 (exists says whether there is one), or an fc_redis error. */
int job_read(admin *ad, const char *job_id, job_view *j);
/* job_finished: published and every item has an outcome. */
int job_finished(const job_view *j);
/* job_state: "publishing", "running", "cancelled" or "finished". */
const char *job_state(const job_view *j);
/* job_rate returns items per second since the first outcome (until the last one once the job is finished
 * or cancelled), 0 when unknown or measured over less than a second. */
double job_rate(const job_view *j);
/* job_json returns the job as a JSON object (caller puts). */
json_object *job_json(const job_view *j);
/* job_ids returns the ids of P:jobs, newest first, at most max (caller frees each and the array);
 * 0 or an fc_redis error. */
int job_ids(admin *ad, size_t max, char ***ids, size_t *n);

/* ---- the subcommands: each returns an exit code ---- */
int admin_status(admin *ad);
int admin_job(admin *ad, const char *job_id);
int admin_cancel(admin *ad, const char *job_id);
int admin_dead(admin *ad, const char *action);
int admin_results(admin *ad, const char *job_id);

#endif
