/* The worker's metrics endpoint: Prometheus text on /metrics, liveness on /healthz and
 * readiness on /readyz (503 while the breaker is open, credentials are rejected, or the
 * broker is unreachable). Served by libmicrohttpd's own thread; reads atomics only. */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fc_buf.h"
#include "fc_error.h"

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void counter(fc_buf *b, const char *name, const char *help, const char *type, long v) {
    fc_buf_printf(b, "# HELP flashcard_%s %s\n# TYPE flashcard_%s %s\nflashcard_%s %ld\n", name, help, name, type, name,
                  v);
}

static void render(const metrics *m, fc_buf *b) {
    double up_s = (double)(mono_ms() - m->started_ms) / 1000.0;
    long cap = atomic_load(&m->capacity);
    counter(b, "items_succeeded_total", "Items that got their cards.", "counter", atomic_load(&m->items_ok));
    counter(b, "items_retried_total", "Items sent to the retry exchange.", "counter", atomic_load(&m->items_retried));
    counter(b, "items_dead_total", "Items dead-lettered.", "counter", atomic_load(&m->items_dead));
    counter(b, "items_continued_total", "Items re-published unfinished (checkpoint, shutdown).", "counter",
            atomic_load(&m->items_unfinished));
    counter(b, "batches_acked_total", "Batch deliveries settled and acked.", "counter", atomic_load(&m->batches_done));
    counter(b, "batches_poison_total", "Unreadable messages dead-lettered.", "counter", atomic_load(&m->batches_poison));
    counter(b, "api_calls_total", "API calls started.", "counter", atomic_load(&m->api_calls));
    counter(b, "api_errors_total", "API calls that failed.", "counter", atomic_load(&m->api_errors));
    counter(b, "api_throttled_total", "API calls answered 429.", "counter", atomic_load(&m->api_429));
    counter(b, "cache_hits_total", "Stage answers served from the cache.", "counter", atomic_load(&m->cache_hits));
    counter(b, "rate_limit_waits_total", "Calls the rate limiter delayed.", "counter", atomic_load(&m->rate_waits));
    counter(b, "rate_limit_wait_ms_total", "Total delay imposed by the rate limiter.", "counter",
            atomic_load(&m->rate_wait_ms));
    counter(b, "calls_in_flight", "API calls in flight now.", "gauge", atomic_load(&m->inflight));
    counter(b, "calls_capacity", "WORKER_COUNT: most calls in flight.", "gauge", cap);
    counter(b, "queue_ready_messages", "Ready messages in the work queue (sampled every 5 s).", "gauge",
            atomic_load(&m->queue_depth));
    counter(b, "batches_held", "Deliveries held unacked now.", "gauge", atomic_load(&m->held_batches));
    counter(b, "breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", "gauge",
            atomic_load(&m->breaker_state));
    counter(b, "breaker_opens_total", "Times the circuit breaker opened.", "counter", atomic_load(&m->breaker_opens));
    counter(b, "ready", "1 when taking deliveries.", "gauge", atomic_load(&m->ready));
    fc_buf_printf(b, "# HELP flashcard_tasks_per_second Items settled per second since start.\n"
                     "# TYPE flashcard_tasks_per_second gauge\nflashcard_tasks_per_second %.3f\n",
                  up_s > 0 ? (double)(atomic_load(&m->items_ok) + atomic_load(&m->items_dead)) / up_s : 0.0);
    long usage = atomic_load(&m->rate_usage_milli);
    if (usage >= 0) {
        fc_buf_printf(b, "# HELP flashcard_rate_limit_usage Share of the fleet's call bucket in use (1: new calls wait; "
                         "sampled every second).\n# TYPE flashcard_rate_limit_usage gauge\nflashcard_rate_limit_usage %.3f\n",
                      (double)usage / 1000.0);
        fc_buf_printf(b, "# HELP flashcard_rate_limit_per_second The fleet's API call limit.\n"
                         "# TYPE flashcard_rate_limit_per_second gauge\nflashcard_rate_limit_per_second %.3f\n",
                      (double)atomic_load(&m->rate_limit_milli) / 1000.0);
    }
    fc_buf_printf(b, "# HELP flashcard_worker_utilization Mean share of call slots busy since start.\n"
                     "# TYPE flashcard_worker_utilization gauge\nflashcard_worker_utilization %.4f\n",
                  up_s > 0 && cap ? (double)atomic_load(&m->busy_ms) / (up_s * 1000.0 * (double)cap) : 0.0);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **state) {
    metrics *m = cls;
    fc_buf b = {0};
    unsigned status = MHD_HTTP_OK;
    if (strcmp(url, "/metrics") == 0) render(m, &b);
    else if (strcmp(url, "/healthz") == 0) fc_buf_puts(&b, "ok\n");
    else if (strcmp(url, "/readyz") == 0) {
        int ready = atomic_load(&m->ready);
        fc_buf_puts(&b, ready ? "ready\n" : "not ready\n");
        status = ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    } else {
        fc_buf_puts(&b, "not found\n");
        status = MHD_HTTP_NOT_FOUND;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data ? b.data : (char *)"", MHD_RESPMEM_MUST_COPY);
    fc_buf_free(&b);
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

int metrics_start(metrics *m, const char *bind, int port) {
    if (port <= 0) return FC_OK;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &addr.sin_addr) != 1) return FC_EINVAL;
    m->server = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, answer, m,
                                 MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    return m->server ? FC_OK : FC_EIO;
}

void metrics_stop(metrics *m) {
    if (m->server) MHD_stop_daemon(m->server);
    m->server = NULL;
}
