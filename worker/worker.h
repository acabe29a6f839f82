/* The worker: one event loop that owns the AMQP connection, drives the API calls through
 * libcurl's multi interface and the Redis limiter, and settles each batch delivery. */
#ifndef WORKER_H
#define WORKER_H

#include <stdint.h>

#include "fc_amqp.h"
#include "fc_breaker.h"
#include "fc_config.h"
#include "fc_http.h"
#include "fc_item.h"
#include "fc_limiter.h"
#include "fc_message.h"
#include "fc_pipeline.h"
#include "fc_redis.h"
#include "fc_topology.h"
#include "metrics.h"

enum job_state { JOB_QUEUED, JOB_WAITING, JOB_INFLIGHT, JOB_DONE };
enum job_outcome { OUT_NONE, OUT_OK, OUT_RETRY, OUT_DEAD, OUT_UNFINISHED };

struct batch;

/* One item's progress through the processor's API stages. */
typedef struct job {
    struct batch *b;
    fc_item *item;              /* borrowed from b->msg */
    int stage;                  /* 1..w->proc.nstages (flashcards: 1 = analysis, 2 = cards) */
    int state;                  /* enum job_state */
    int outcome;                /* enum job_outcome, set when state == JOB_DONE */
    char *results[FC_STAGES_MAX]; /* each finished stage's result (compact JSON), owned */
    char *request;              /* body of the next call, owned */
    char cache_key[65];         /* key of the stage being worked on */
    long est_tokens;
    long prompt_tokens, completion_tokens;
    int calls, cache_hits;
    int64_t ready_at_ms;        /* JOB_WAITING: when the limiter lets it go */
    int http_status;            /* last failure */
    int err_class;              /* enum fc_class of the last failure */
    char error[256];
    struct job *next;           /* run queue or timer list */
} job;

/* A delivery being worked on. */
typedef struct batch {
    uint64_t tag;
    fc_batch_msg msg;
    job *jobs;                  /* msg.nitems entries */
    size_t open;                /* jobs not yet JOB_DONE */
    int64_t received_ms;
    int64_t start_ms;           /* not before (retry delay jitter) */
    int started;                /* jobs handed to the run queue */
    int checkpointing;          /* no new calls: the rest goes to a continuation batch */
    int settling;               /* outcome messages published, waiting for confirms */
    uint64_t seq_lo, seq_hi;    /* publish sequence numbers of its outcome messages */
    int confirms_left;
    int confirm_failed;
    int recorded;               /* outcomes written to Redis */
    int64_t record_retry_ms;    /* Redis failed: next attempt to record */
    char poison[256];           /* non-empty: the message itself is unusable */
    char *raw;                  /* poison only: the original body */
    size_t raw_len;
    struct batch *next;
} batch;

/* A running mean of completion tokens per stage, for the limiter's estimate. */
typedef struct token_mean {
    double sum;
    long n;
} token_mean;

/* Cache writes waiting for the next pipelined flush. */
typedef struct cache_write {
    char *key;
    char *value;
} cache_write;

typedef struct worker {
    fc_config *cfg;
    fc_amqp *amqp;
    fc_redis *redis;
    fc_http *http;
    fc_limiter *limiter;
    fc_breaker *breaker;
    fc_pipeline_conf pipe;
    fc_processor proc;          /* the processing step; the flashcard pipeline over pipe */
    metrics *m;
    char name[128];             /* host:pid, in headers and logs */
    char url[512];              /* $API_BASE_URL/chat/completions */
    char queue[FC_NAME_MAX];
    batch *batches;
    job *runq, *runq_tail;      /* FIFO of jobs ready to be scheduled */
    job *timers;                /* JOB_WAITING, ordered by ready_at_ms */
    int inflight;               /* JOB_INFLIGHT + JOB_WAITING */
    int consuming;
    int stopping;               /* SIGTERM seen */
    int64_t stop_deadline_ms;
    int auth_blocked;           /* 401/403 seen: stop consuming, probe slowly */
    int64_t auth_probe_ms;
    int64_t limiter_retry_ms;   /* Redis down in pause mode: no acquire before this */
    int limiter_down;           /* the last acquire found Redis down */
    int64_t next_reconnect_ms;
    int reconnect_attempt;
    int connected_before;       /* a connection succeeded once: later ones are reconnections */
    int link_up;                /* connected; cleared (once) when the loss is handled */
    int64_t last_breaker_sync_ms;
    int64_t amqp_polled_ms;     /* last read of the AMQP socket */
    int64_t depth_polled_ms;    /* last sample of the work queue's depth */
    int64_t usage_polled_ms;    /* last sample of the rate-limit usage */
    int sigfd;                  /* read end of the signal pipe */
    token_mean completion[FC_STAGES_MAX];
    cache_write *cache_out;
    size_t ncache_out, cache_cap;
    fc_buf scratch;
} worker;

int64_t now_ms(void);

/* worker.c */
int worker_init(worker *w, fc_config *cfg, int sigfd);
int worker_run(worker *w);
void worker_free(worker *w);

/* batch.c: deliveries in, outcome messages out. */
void batch_on_delivery(worker *w, const fc_delivery *d);
void batch_on_confirm(worker *w, uint64_t seq, int status);
void batch_job_done(worker *w, job *j, int outcome);
void batch_settle_ready(worker *w);
void batch_checkpoint_due(worker *w);
void batch_drop_all(worker *w);
batch *batch_find_settling(worker *w, uint64_t seq);

/* calls.c: scheduling API calls under the limiter and the breaker. */
void calls_enqueue(worker *w, job *j, int front);
void calls_schedule(worker *w);
void calls_fire_timers(worker *w);
void calls_on_done(worker *w, const fc_http_done *d);
void calls_abandon_queued(worker *w, batch *b);
int calls_next_timeout(worker *w, int max_ms);
int calls_prepare(worker *w, job *j);

/* cache.c: stage answers cached in Redis, looked up per batch and written in pipelines. */
void cache_lookup_batch(worker *w, batch *b);
void cache_store(worker *w, int stage, const char *key, const char *value);
void cache_flush(worker *w);

#endif
