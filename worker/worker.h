/* The worker: one event loop that owns the AMQP connection, drives the API calls through
 * libcurl's multi interface and the Redis limiter, and settles each batch delivery.
 *
 * Layers, each file calling only those below it (a layer above is reached by its caller
 * looking at the state, never by a call up):
 *   worker.c  the loop: connections, signals, consuming, periodic work
 *   batch.c   a delivery's life: tasks in, outcome messages out, records, ack
 *   calls.c   the scheduler: run queue, limiter reservations, timers, calls in flight
 *   cache.c   cached stage answers: lookups return hits, writes are pipelined
 *   gate.c    whether calls and deliveries may go on (pure)   task.c  one item's progress (leaf)
 * beside them: metrics.c (/metrics, /readyz) and registry.c (the worker's entry in Redis)
 */
#ifndef WORKER_H
#define WORKER_H

#include <stdint.h>

#include "fc_amqp.h"
#include "fc_config.h"
#include "fc_http.h"
#include "fc_item.h"
#include "fc_jobs.h"
#include "fc_limiter.h"
#include "fc_message.h"
#include "fc_pipeline.h"
#include "fc_redis.h"
#include "fc_topology.h"
#include "gate.h"
#include "metrics.h"
#include "task.h"

enum batch_state {
    BATCH_WAITING,  /* a retry whose jitter delay has not passed: no call yet */
    BATCH_RUNNING,  /* its tasks are being worked on */
    BATCH_SETTLING, /* every task has its outcome: outcome messages out, waiting for confirms */
    BATCH_RECORDED  /* confirmed and recorded in Redis: acked next */
};

enum batch_kind {
    BATCH_WORK,    /* a batch to process */
    BATCH_POISON,  /* cannot be read as a batch: dead-lettered as it came */
    BATCH_CRASHED  /* came back unsettled too often: every item dead-lettered unprocessed */
};

enum outmsg_state { OUTMSG_UNSENT, OUTMSG_SENT, OUTMSG_CONFIRMED };

/* One outcome message of a delivery, kept until the broker confirms it, so that a refused
 * message is published again alone and nothing else twice. */
typedef struct outmsg {
    char exchange[FC_NAME_MAX];
    char key[FC_JOB_ID_MAX + 32];
    char id[256];              /* message id */
    fc_buf body;
    int dead;                  /* carries the dead-letter headers */
    int state;                 /* enum outmsg_state */
    uint64_t seq;              /* publish sequence number while OUTMSG_SENT */
    int refusals;
    int64_t resend_at_ms;      /* refused: publish again then */
} outmsg;

/* A delivery being worked on. */
typedef struct batch {
    uint64_t tag;
    int state;                 /* enum batch_state */
    int kind;                  /* enum batch_kind */
    char id[256];              /* message id, for logs */
    fc_batch_msg msg;          /* BATCH_WORK and BATCH_CRASHED */
    task *tasks;               /* msg.nitems entries */
    size_t open;               /* tasks not yet TASK_DONE */
    int64_t received_ms;
    int64_t start_ms;          /* BATCH_WAITING: not before */
    int checkpointing;         /* no new calls: the rest goes to a continuation batch */
    int cancelled;             /* its job was cancelled: no new calls, the rest dead-lettered as cancelled */
    outmsg *out;
    size_t nout;
    char why[256];             /* BATCH_POISON: why it cannot be read */
    char *raw;                 /* BATCH_POISON: the body as it came */
    size_t raw_len;
    char failed_at[32];        /* the dead letters' x-failed-at */
    int64_t record_retry_ms;   /* Redis failed: next attempt to record */
    struct batch *next;
} batch;

/* A running mean of completion tokens per stage, for the limiter's estimate. */
typedef struct token_mean {
    double sum;
    long n;
} token_mean;

/* The calls of one job waiting for their turn. Jobs take turns by stride scheduling: the lane with
 * the lowest pass goes next, and each call it starts adds 1/weight to its pass, so that jobs with work
 * waiting share the calls in proportion to their priorities (a job alone takes all of them). */
typedef struct lane {
    char job_id[FC_JOB_ID_MAX + 1];
    int weight;                /* the job's priority, 1..FC_PRIORITY_MAX */
    task *head, *tail;         /* FIFO of its tasks ready to call */
    double pass;
} lane;

/* Jobs one worker shares its calls between; the tasks of any more wait in the last lane together. */
#define LANES_MAX 64

/* The scheduler's state; calls.c alone changes it. */
typedef struct sched {
    lane lanes[LANES_MAX];     /* the jobs with tasks ready to call, lanes[0..nlanes) */
    int nlanes;
    double vtime;              /* the pass of the last lane served: a new lane starts there */
    long queued;               /* tasks in the lanes */
    task *timers;              /* TASK_WAITING, ordered by ready_at_ms */
    int inflight;              /* TASK_WAITING + TASK_INFLIGHT */
    int64_t wake_ms;           /* the gate said wait until then */
    int limiter_down;          /* the last acquire got no answer or an error from Redis */
    int64_t failure_logged_ms; /* last call failure without an HTTP answer logged */
    long failures_unlogged;    /* such failures since, not logged */
    token_mean completion[FC_STAGES_MAX];
    char budget_said[FC_JOB_ID_MAX + 1]; /* the last job whose spent budget was logged */
    int64_t throttled_logged_ms;         /* 429s answered by adapting the rate: logged at most every 5 s */
    long throttled_unlogged;
} sched;

/* Cache writes waiting for the next pipelined flush. */
typedef struct cache_write {
    char *key;
    char *value;
} cache_write;

/* How far ahead a batch's not_before may be: twice the longest RETRY_DELAYS allows (a day), so a
 * worker configured otherwise is never refused; a message further off is poison. */
#define NOT_BEFORE_MAX_MS (2 * 24 * 3600 * 1000)

/* A recent answer to "is this job cancelled?". */
#define CANCEL_CACHE 8
#define CANCEL_ASK_MS 1000
/* A job's budget as last read from its record (0: none). */
#define BUDGET_CACHE 16
#define BUDGET_ASK_MS 2000
#define BUDGET_RECHECK_MS 200 /* a refusal reads a budget older than this again */
typedef struct job_budget {
    char job_id[FC_JOB_ID_MAX + 1];
    int64_t asked_ms;
    long long tokens, uusd;
} job_budget;

typedef struct cancel_answer {
    char job_id[FC_JOB_ID_MAX + 1];
    int64_t asked_ms;
    int cancelled;
} cancel_answer;

typedef struct worker {
    fc_config *cfg;
    fc_amqp *amqp;
    fc_redis *redis;
    fc_http *http;
    fc_limiter *limiter;
    gate gate;
    fc_pipeline_conf pipe;
    fc_processor proc;          /* the processing step; the flashcard pipeline over pipe */
    metrics *m;
    char name[128];             /* host:pid, in headers and logs */
    char url[512];              /* $API_BASE_URL/chat/completions */
    char queue[FC_NAME_MAX];
    batch *batches;
    sched sched;
    int consuming;
    int cancelled;              /* the broker cancelled the consumer: re-declare, consume again */
    int redeclare;              /* an outcome was unroutable: declare the topology again */
    int64_t next_reconnect_ms;
    int reconnect_attempt;
    int connected_before;       /* a connection succeeded once: later ones are reconnections */
    int link_up;                /* connected; cleared (once) when the loss is handled */
    int sigfd;                  /* read end of the signal pipe */
    int64_t stop_exit_ms;       /* SIGTERM + SHUTDOWN_TIMEOUT: gone by then, settled or not */
    cache_write *cache_out;
    size_t ncache_out, cache_cap;
    char last_error[256];       /* the last call failure, for the registration */
    int64_t last_error_ms;
    int64_t started_unix_ms;
    int registry_down;          /* the last registration failed: Redis away or refusing */
    cancel_answer cancel_cache[CANCEL_CACHE];
    job_budget budgets[BUDGET_CACHE];
    int64_t redis_quiet_until_ms; /* Redis was unreachable: questions that can wait are not asked till then */
    char followed[FC_JOBS_FOLLOWED_MAX][FC_JOB_ID_MAX + 1]; /* jobs whose own queue it consumes */
    int nfollowed;
    int64_t jobs_due_ms;        /* the next look at the followed jobs (JOBS_FOLLOW_MS apart) */
} worker;

int64_t now_ms(void);
int worker_prefetch(const worker *w);
/* worker_may_ask says whether a synchronous broker query (passive declare, consume, delete) may be sent
 * now: connected, not blocked, and no publish awaiting its confirm (see fc_amqp_unconfirmed). */
int worker_may_ask(const worker *w);

/* worker.c */
int worker_init(worker *w, fc_config *cfg, int sigfd);
int worker_run(worker *w);
void worker_free(worker *w);

/* batch.c: deliveries in, outcome messages out. */
void batch_on_delivery(worker *w, const fc_delivery *d);
void batch_on_confirm(worker *w, uint64_t seq, int status);
void batch_tick(worker *w);
void batch_settle(worker *w);
void batch_drop_all(worker *w);
void batch_check_cancelled(worker *w, int64_t now);

/* calls.c: API calls under the gate and the limiter. */
void calls_enqueue(worker *w, task *t, int front);
task *calls_take(worker *w);
int calls_queued(const worker *w);
void calls_schedule(worker *w);
void calls_fire_timers(worker *w);
void calls_on_done(worker *w, const fc_http_done *d);
void calls_cancel(worker *w, task *v, size_t n, int inflight_too);
void calls_cancel_all(worker *w);
int calls_next_timeout(worker *w, int max_ms);

/* record.c: the job's record in Redis. record_batch writes a settled delivery's outcomes (0,
 * FC_ENOMEM or FC_EREDIS: nothing or all of it is written, retry later); record_job_cancelled says
 * whether an operator cancelled the job (asked at most every CANCEL_ASK_MS per job; 0 when Redis
 * cannot say). */
int record_batch(worker *w, batch *b);
int record_job_cancelled(worker *w, const char *job_id, int64_t now);

/* jobs.c: the jobs with a queue of their own that the worker consumes (fc_jobs.h), once a second
 * (tried every JOBS_TRY_MS until the connection is quiet enough to ask: worker_may_ask). */
#define JOBS_FOLLOW_MS 1000
#define JOBS_TRY_MS 100
void jobs_follow(worker *w, int64_t now);
/* jobs_budget fills *out with the budget of job_id (read from its record at most every BUDGET_ASK_MS);
 * returns 1 when it has one, 0 when not (out then names no job). jobs_cost_uusd prices a call's tokens at
 * PRICE_INPUT / PRICE_OUTPUT, in micro-USD. */
int jobs_budget(worker *w, const char *job_id, int64_t now, fc_budget *out);
/* jobs_budget_aged is jobs_budget reading the record again when the budget known is older than max_age_ms. */
int jobs_budget_aged(worker *w, const char *job_id, int64_t now, long max_age_ms, fc_budget *out);
long long jobs_cost_uusd(const worker *w, long prompt_tokens, long completion_tokens);
/* jobs_count_call counts a call started for t's job in the metrics; jobs_sample reads the followed jobs'
 * budgets, spend and queue depths for them (one pipelined round trip, and a passive declare per job). */
void jobs_count_call(worker *w, const task *t);
void jobs_sample(worker *w, int64_t now);

/* registry.c: the worker's registration in Redis, for flashcard-admin status. */
void registry_update(worker *w, int64_t now);
void registry_remove(worker *w);

/* cache.c: stage answers cached in Redis. */
size_t cache_lookup(worker *w, task *v, size_t n);
void cache_store(worker *w, int stage, const char *key, const char *value);
void cache_flush(worker *w);

#endif
