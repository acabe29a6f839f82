/* Worker metrics: counters updated by the event loop, served as Prometheus text on
 * /metrics, with /healthz and /readyz, by a small HTTP server thread. */
#ifndef METRICS_H
#define METRICS_H

#include <stdatomic.h>

typedef struct metrics {
    atomic_long items_ok, items_retried, items_dead, items_unfinished;
    atomic_long batches_done, batches_poison;
    atomic_long api_calls, api_errors, api_429, cache_hits;
    atomic_long rate_waits, rate_wait_ms;        /* acquires that had to wait, and for how long */
    atomic_long busy_ms;                          /* sum over time of calls in flight (ms) */
    atomic_long inflight, capacity, held_batches;
    atomic_long queue_depth;                      /* ready messages in the work queue, last seen */
    atomic_long rate_usage_milli;                 /* fc_limiter_usage x 1000, last seen; -1 = no call limit */
    atomic_long rate_limit_milli;                 /* the fleet's call limit per second x 1000; 0 = none */
    atomic_long breaker_state, breaker_opens;
    atomic_int ready;                             /* 1 when consuming and able to call the API */
    atomic_int alive;
    long long started_ms;
    void *server;                                 /* HTTP server, NULL if off */
} metrics;

/* metrics_start starts serving on bind:port (port 0 = no server). Returns 0, FC_EINVAL (bad
 * address) or FC_EIO (cannot listen). */
int metrics_start(metrics *m, const char *bind, int port);
void metrics_stop(metrics *m);

#endif
