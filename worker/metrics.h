/* Worker metrics: counters, gauges and histograms updated by the event loop, served as
 * Prometheus text on /metrics, with /healthz and /readyz, by a small HTTP server thread that
 * reads atomics only. */
#ifndef METRICS_H
#define METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Why an item went to the retry exchange (label reason of flashcard_items_retried_total). */
enum metrics_retry {
    RETRY_INTERNAL,       /* the request could not be built or started */
    RETRY_THROTTLED,      /* 429 */
    RETRY_SERVER_ERROR,   /* 5xx */
    RETRY_CLIENT_ERROR,   /* 408, 409, 425 */
    RETRY_TIMEOUT,
    RETRY_CONNECTION,     /* refused, reset, DNS, TLS */
    RETRY_INVALID_ANSWER, /* 2xx that did not validate */
    RETRY_TOO_BIG,        /* answer over API_MAX_RESPONSE_BYTES */
    RETRY_NREASONS
};

/* Label class of flashcard_items_dead_total. */
enum metrics_dead { DEAD_PERMANENT, DEAD_RETRYABLE, DEAD_POISON, DEAD_CRASHED, DEAD_CANCELLED, DEAD_NCLASSES };

/* Label status of flashcard_api_calls_total. */
enum metrics_status { STATUS_2XX, STATUS_4XX, STATUS_429, STATUS_5XX, STATUS_TRANSPORT, STATUS_NCLASSES };

/* Why the worker is not ready (bits of metrics.not_ready; 0 = ready). */
enum metrics_not_ready {
    NOT_READY_STOPPING = 1,
    NOT_READY_BROKER = 2,      /* not connected to RabbitMQ */
    NOT_READY_REDIS = 4,       /* Redis away or refusing: the limiter gets no grant, or the registration fails */
    NOT_READY_CREDENTIALS = 8, /* the API rejected the key (401/403) */
    NOT_READY_BREAKER = 16     /* the circuit breaker is open */
};

#define METRICS_STAGES 2
#define METRICS_BUCKETS 12
#define METRICS_QUEUES 16

/* A histogram: counts per bucket (not cumulative; summed when rendered) and the sum in us. */
typedef struct histogram {
    atomic_long count[METRICS_BUCKETS + 1]; /* the last one is +Inf */
    atomic_llong sum_us;
} histogram;

/* A queue's depth, sampled by the event loop. name is written before the server starts. */
typedef struct queue_gauge {
    char name[64]; /* the queue's role: batches, dead, retry.5s, ... */
    atomic_long ready, consumers;
} queue_gauge;

/* One job's figures: this worker's calls for it, and its budget as the fleet spends it (read from Redis
 * every few seconds for the jobs the worker follows). Written by the loop, read by the server, under
 * metrics.jobs_lock. */
#define METRICS_JOBS 16
typedef struct job_gauge {
    char job[72];              /* "" = free */
    long calls;                /* calls this worker started for it */
    int priority;
    long long budget_tokens, budget_uusd, spent_tokens, spent_uusd; /* 0 = no such budget */
    long ready;                /* messages ready in the job's queue, -1 = unknown */
} job_gauge;

typedef struct metrics {
    atomic_long items_ok, items_unfinished, items_budget;
    atomic_long items_retried[RETRY_NREASONS];
    atomic_long items_dead[DEAD_NCLASSES];
    atomic_long batches_done, batches_poison;
    atomic_long api_calls[METRICS_STAGES][STATUS_NCLASSES]; /* completed calls by stage and status */
    atomic_long cache_hits;
    atomic_long rate_waits;                       /* acquires that had to wait */
    atomic_long busy_ms;                          /* sum over time of calls in flight (ms) */
    atomic_long inflight, capacity, held_batches;
    atomic_long rate_usage_milli;                 /* fc_limiter_usage x 1000, last seen; -1 = no call limit */
    atomic_long rate_limit_milli;                 /* the fleet's call limit per second x 1000; 0 = none */
    atomic_long rate_adapted_milli;               /* the fleet's adapted call rate x 1000, last seen */
    atomic_long breaker_state, breaker_opens;
    atomic_int not_ready;                         /* enum metrics_not_ready bits; 0 = ready */
    histogram call_seconds[METRICS_STAGES];       /* API call duration by stage */
    histogram wait_seconds;                       /* the limiter's delay of each granted call */
    queue_gauge queues[METRICS_QUEUES];
    int nqueues;                                  /* set before the server starts */
    long long started_ms;
    char version[32], queue_prefix[128], api[128];  /* flashcard_build_info's labels, set before the server starts */
    void *server;                                 /* HTTP server, NULL if off */
    pthread_mutex_t jobs_lock;                    /* guards jobs[] (metrics_start initialises it) */
    job_gauge jobs[METRICS_JOBS];
} metrics;

/* metrics_job returns the gauge of job, taking the least busy slot for a new one; call under jobs_lock. */
job_gauge *metrics_job(metrics *m, const char *job);

/* metrics_observe adds one observation of seconds to h (the call and wait histograms share one
 * bucket layout, from 5 ms to 2 min). */
void metrics_observe(histogram *h, double seconds);

/* metrics_not_ready_text writes the reasons of bits (enum metrics_not_ready) as one line,
 * "broker not connected; circuit breaker open", into out; "" when bits is 0. */
void metrics_not_ready_text(int bits, char *out, size_t outlen);

/* metrics_start starts serving on bind:port (port 0 = no server). Returns 0, FC_EINVAL (bad
 * address) or FC_EIO (cannot listen). */
int metrics_start(metrics *m, const char *bind, int port);
void metrics_stop(metrics *m);

#endif
