/* The worker's metrics endpoint: Prometheus text (format 0.0.4, base units, _total counters,
 * low-cardinality labels) on /metrics, liveness on /healthz and readiness on /readyz (503 with
 * the reasons: stopping, broker, Redis, credentials, breaker). Served by libmicrohttpd's own
 * thread, which reads atomics and /proc only. */
#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fc_buf.h"
#include "fc_error.h"

#define METRICS_IDLE_S 30      /* a metrics connection idle this long is closed, s */
#define METRICS_CONNECTIONS 64 /* metrics connections served at once; more are refused */

/* Upper bounds of the buckets, seconds: API calls take milliseconds (a cache-warm mock) to
 * minutes (a long completion); the limiter's waits span the same range. */
static const double bounds[METRICS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 120};

static const char *const retry_reasons[RETRY_NREASONS] = {"internal", "throttled", "server_error", "client_error",
                                                          "timeout", "connection", "invalid_answer", "too_big"};
static const char *const dead_classes[DEAD_NCLASSES] = {"permanent", "retryable", "poison", "crashed", "cancelled"};
static const char *const statuses[STATUS_NCLASSES] = {"2xx", "4xx", "429", "5xx", "transport"};

void metrics_observe(histogram *h, double seconds) {
    int i = 0;
    while (i < METRICS_BUCKETS && seconds > bounds[i]) i++;
    atomic_fetch_add(&h->count[i], 1);
    atomic_fetch_add(&h->sum_us, (long long)(seconds * 1e6 + 0.5));
}

void metrics_not_ready_text(int bits, char *out, size_t outlen) {
    static const struct {
        int bit;
        const char *text;
    } why[] = {{NOT_READY_STOPPING, "stopping"},
               {NOT_READY_BROKER, "broker not connected"},
               {NOT_READY_REDIS, "Redis unavailable or refusing commands (see the log)"},
               {NOT_READY_CREDENTIALS, "API credentials rejected (401/403): probing every AUTH_RETRY"},
               {NOT_READY_BREAKER, "circuit breaker open"}};
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
        if (!(bits & why[i].bit) || n >= outlen) continue;
        int w = snprintf(out + n, outlen - n, "%s%s", n ? "; " : "", why[i].text);
        if (w > 0) n += (size_t)w;
    }
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- rendering ---------------------------------------------------------------------- */

static void head(fc_buf *b, const char *name, const char *type, const char *help) {
    fc_buf_printf(b, "# HELP flashcard_%s %s\n# TYPE flashcard_%s %s\n", name, help, name, type);
}

static void one(fc_buf *b, const char *name, const char *type, const char *help, long v) {
    head(b, name, type, help);
    fc_buf_printf(b, "flashcard_%s %ld\n", name, v);
}

/* labelled writes a family with one label over n values. */
static void labelled(fc_buf *b, const char *name, const char *help, const char *label, const char *const *values,
                     atomic_long *v, int n) {
    head(b, name, "counter", help);
    for (int i = 0; i < n; i++) fc_buf_printf(b, "flashcard_%s{%s=\"%s\"} %ld\n", name, label, values[i], atomic_load(&v[i]));
}

static void hist_series(fc_buf *b, const char *name, const char *labels, histogram *h) {
    long cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += atomic_load(&h->count[i]);
        if (i < METRICS_BUCKETS) fc_buf_printf(b, "flashcard_%s_bucket{%s%sle=\"%g\"} %ld\n", name, labels, sep, bounds[i], cum);
        else fc_buf_printf(b, "flashcard_%s_bucket{%s%sle=\"+Inf\"} %ld\n", name, labels, sep, cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    fc_buf_printf(b, "flashcard_%s_sum%s%s%s %.6f\n", name, open, labels, close, (double)atomic_load(&h->sum_us) / 1e6);
    fc_buf_printf(b, "flashcard_%s_count%s%s%s %ld\n", name, open, labels, close, cum);
}

static void render_items(metrics *m, fc_buf *b) {
    one(b, "items_succeeded_total", "counter", "Items that got their cards.", atomic_load(&m->items_ok));
    labelled(b, "items_retried_total", "Items sent to the retry exchange, by why their call failed.", "reason",
             retry_reasons, m->items_retried, RETRY_NREASONS);
    labelled(b, "items_dead_total", "Items dead-lettered, by error class.", "class", dead_classes, m->items_dead,
             DEAD_NCLASSES);
    one(b, "items_continued_total", "counter", "Items re-published unfinished (checkpoint, shutdown).",
        atomic_load(&m->items_unfinished));
    one(b, "items_over_budget_total", "counter", "Items not done because their job's budget was spent.",
        atomic_load(&m->items_budget));
    one(b, "batches_acked_total", "counter", "Batch deliveries settled and acked.", atomic_load(&m->batches_done));
    one(b, "batches_poison_total", "counter", "Unreadable messages dead-lettered.", atomic_load(&m->batches_poison));
}

static void render_api(metrics *m, fc_buf *b) {
    head(b, "api_calls_total", "counter", "API calls completed, by stage and HTTP status class (transport: no answer).");
    for (int s = 0; s < METRICS_STAGES; s++)
        for (int k = 0; k < STATUS_NCLASSES; k++)
            fc_buf_printf(b, "flashcard_api_calls_total{stage=\"%d\",status=\"%s\"} %ld\n", s + 1, statuses[k],
                          atomic_load(&m->api_calls[s][k]));
    head(b, "api_call_duration_seconds", "histogram", "API call duration, from sending to the whole answer, by stage.");
    for (int s = 0; s < METRICS_STAGES; s++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "stage=\"%d\"", s + 1);
        hist_series(b, "api_call_duration_seconds", labels, &m->call_seconds[s]);
    }
    one(b, "cache_hits_total", "counter", "Stage answers served from the cache.", atomic_load(&m->cache_hits));
    one(b, "rate_limit_waits_total", "counter", "Calls the rate limiter delayed.", atomic_load(&m->rate_waits));
    head(b, "rate_limit_wait_seconds", "histogram", "Delay the fleet's rate limiter imposed on each granted call.");
    hist_series(b, "rate_limit_wait_seconds", "", &m->wait_seconds);
    long usage = atomic_load(&m->rate_usage_milli);
    if (usage >= 0) {
        head(b, "rate_limit_usage", "gauge", "Share of the fleet's call bucket in use (1: new calls wait; sampled every second).");
        fc_buf_printf(b, "flashcard_rate_limit_usage %.3f\n", (double)usage / 1000.0);
        head(b, "rate_limit_per_second", "gauge", "The fleet's API call limit.");
        fc_buf_printf(b, "flashcard_rate_limit_per_second %.3f\n", (double)atomic_load(&m->rate_limit_milli) / 1000.0);
        head(b, "rate_limit_adapted_per_second", "gauge",
             "The fleet's call rate as adapted to the provider (RATE_ADAPT), at most the limit.");
        fc_buf_printf(b, "flashcard_rate_limit_adapted_per_second %.3f\n",
                      (double)atomic_load(&m->rate_adapted_milli) / 1000.0);
    }
}

static void render_state(metrics *m, fc_buf *b) {
    double up_s = (double)(mono_ms() - m->started_ms) / 1000.0;
    long cap = atomic_load(&m->capacity), settled = atomic_load(&m->items_ok);
    for (int i = 0; i < DEAD_NCLASSES; i++) settled += atomic_load(&m->items_dead[i]);
    one(b, "calls_in_flight", "gauge", "API calls in flight now.", atomic_load(&m->inflight));
    one(b, "calls_capacity", "gauge", "WORKER_COUNT: most calls in flight.", cap);
    one(b, "batches_held", "gauge", "Deliveries held unacked now.", atomic_load(&m->held_batches));
    one(b, "breaker_state", "gauge", "Circuit breaker: 0 closed, 1 open, 2 half-open.", atomic_load(&m->breaker_state));
    one(b, "breaker_opens_total", "counter", "Times the circuit breaker opened.", atomic_load(&m->breaker_opens));
    one(b, "ready", "gauge", "1 when able to work (see /readyz for why not).", atomic_load(&m->not_ready) == 0);
    head(b, "tasks_per_second", "gauge", "Items settled per second since start.");
    fc_buf_printf(b, "flashcard_tasks_per_second %.3f\n", up_s > 0 ? (double)settled / up_s : 0.0);
    head(b, "worker_utilization", "gauge", "Mean share of call slots busy since start.");
    fc_buf_printf(b, "flashcard_worker_utilization %.4f\n",
                  up_s > 0 && cap ? (double)atomic_load(&m->busy_ms) / (up_s * 1000.0 * (double)cap) : 0.0);
    head(b, "queue_ready_messages", "gauge", "Ready messages in each queue of the prefix (sampled every 5 s).");
    for (int i = 0; i < m->nqueues; i++)
        fc_buf_printf(b, "flashcard_queue_ready_messages{queue=\"%s\"} %ld\n", m->queues[i].name,
                      atomic_load(&m->queues[i].ready));
    head(b, "queue_consumers", "gauge", "Consumers of each queue of the prefix (sampled every 5 s).");
    for (int i = 0; i < m->nqueues; i++)
        fc_buf_printf(b, "flashcard_queue_consumers{queue=\"%s\"} %ld\n", m->queues[i].name,
                      atomic_load(&m->queues[i].consumers));
    head(b, "build_info", "gauge", "The worker's version, queue prefix and API name.");
    fc_buf_printf(b, "flashcard_build_info{version=\"%s\",queue_prefix=\"%s\",api=\"%s\"} 1\n", m->version,
                  m->queue_prefix, m->api);
}

/* count_fds counts the process's open file descriptors, -1 if /proc is not there. */
static long count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = -1; /* the directory's own descriptor */
    while (readdir(d)) n++;
    closedir(d);
    return n - 2; /* . and .. */
}

/* boot_time reads the system's boot time (unix s) from /proc/stat, 0 if unknown. */
static long long boot_time(void) {
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    long long t = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %lld", &t) == 1) break;
    if (f) fclose(f);
    return t;
}

/* render_process writes the standard process_* metrics from /proc/self/stat. */
static void render_process(fc_buf *b) {
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long utime, stime, vsize;
    unsigned long long start;
    long rss;
    /* after ")": state(3) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu %lu %ld",
                     &utime, &stime, &start, &vsize, &rss) != 5)
        return;
    double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    long max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : -1;
    fc_buf_printf(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                     "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
                  (double)(utime + stime) / tick);
    fc_buf_printf(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                     "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %.0f\n",
                  (double)rss * page);
    fc_buf_printf(b, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                     "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %lu\n", vsize);
    fc_buf_printf(b, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                     "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                  (double)boot_time() + (double)start / tick);
    fc_buf_printf(b, "# HELP process_open_fds Number of open file descriptors.\n"
                     "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", count_fds());
    fc_buf_printf(b, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                     "# TYPE process_max_fds gauge\nprocess_max_fds %ld\n", max_fds);
}

job_gauge *metrics_job(metrics *m, const char *job) {
    job_gauge *free_slot = NULL, *least = &m->jobs[0];
    for (int i = 0; i < METRICS_JOBS; i++) {
        job_gauge *g = &m->jobs[i];
        if (strcmp(g->job, job) == 0) return g;
        if (!g->job[0] && !free_slot) free_slot = g;
        if (g->calls < least->calls) least = g;
    }
    job_gauge *g = free_slot ? free_slot : least;
    memset(g, 0, sizeof(*g));
    g->ready = -1;
    snprintf(g->job, sizeof(g->job), "%s", job);
    return g;
}

/* job_series writes one per-job series of every job known, as value() gives it (< 0: left out). */
static void job_series(metrics *m, fc_buf *b, const char *name, const char *type, const char *help,
                       double (*value)(const job_gauge *g)) {
    int headed = 0;
    for (int i = 0; i < METRICS_JOBS; i++) {
        const job_gauge *g = &m->jobs[i];
        double v = g->job[0] ? value(g) : -1;
        if (v < 0) continue;
        if (!headed++) head(b, name, type, help);
        fc_buf_printf(b, "flashcard_%s{job_id=\"%s\"} %.6g\n", name, g->job, v);
    }
}

static double job_calls(const job_gauge *g) { return (double)g->calls; }
static double job_ready(const job_gauge *g) { return g->ready >= 0 ? (double)g->ready : -1; }
static double job_priority(const job_gauge *g) { return g->priority > 0 ? g->priority : -1; }
static double job_limit_usd(const job_gauge *g) { return g->budget_uusd > 0 ? (double)g->budget_uusd / 1e6 : -1; }
static double job_spent_usd(const job_gauge *g) { return g->budget_uusd > 0 ? (double)g->spent_uusd / 1e6 : -1; }
static double job_limit_tokens(const job_gauge *g) { return g->budget_tokens > 0 ? (double)g->budget_tokens : -1; }
static double job_spent_tokens(const job_gauge *g) { return g->budget_tokens > 0 ? (double)g->spent_tokens : -1; }

/* render_jobs: per job, this worker's calls (their rates' ratios are the jobs' shares) and the budgets. */
static void render_jobs(metrics *m, fc_buf *b) {
    pthread_mutex_lock(&m->jobs_lock);
    job_series(m, b, "job_calls_total", "counter", "API calls this worker started for each job it works on.", job_calls);
    job_series(m, b, "job_queue_ready_messages", "gauge",
               "Batches waiting in the job's own queue (sampled every 5 s by the workers following it).", job_ready);
    job_series(m, b, "job_priority", "gauge", "The job's weight in the fleet's fair share (--priority).", job_priority);
    job_series(m, b, "job_budget_usd", "gauge", "The job's budget in USD (--budget-usd).", job_limit_usd);
    job_series(m, b, "job_spent_usd", "gauge", "What the job's calls cost so far, fleet-wide, against its USD budget.",
               job_spent_usd);
    job_series(m, b, "job_budget_tokens", "gauge", "The job's budget in API tokens (--budget-tokens).", job_limit_tokens);
    job_series(m, b, "job_spent_tokens", "gauge", "API tokens the job's calls used so far, fleet-wide, against its budget.",
               job_spent_tokens);
    pthread_mutex_unlock(&m->jobs_lock);
}

static void render(metrics *m, fc_buf *b) {
    render_items(m, b);
    render_jobs(m, b);
    render_api(m, b);
    render_state(m, b);
    render_process(b);
}

/* ---- the server ----------------------------------------------------------------------- */

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **state) {
    metrics *m = cls;
    fc_buf b = {0};
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(url, "/metrics") == 0) {
        render(m, &b);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(url, "/healthz") == 0) {
        fc_buf_puts(&b, "ok\n");
    } else if (strcmp(url, "/readyz") == 0) {
        int bits = atomic_load(&m->not_ready);
        char why[256];
        metrics_not_ready_text(bits, why, sizeof(why));
        if (bits) fc_buf_printf(&b, "not ready: %s\n", why);
        else fc_buf_puts(&b, "ready\n");
        status = bits ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
    } else {
        fc_buf_puts(&b, "not found\n");
        status = MHD_HTTP_NOT_FOUND;
    }
    if (fc_buf_err(&b)) { /* a page cut short by a failed allocation is never served as complete */
        fc_buf_free(&b);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        type = "text/plain; charset=utf-8";
    }
    const char *body = b.data ? b.data : status == MHD_HTTP_INTERNAL_SERVER_ERROR ? "out of memory\n" : "";
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    fc_buf_free(&b);
    if (!r) return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    MHD_add_response_header(r, "Content-Type", type);
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
    /* A client that connects and sends nothing is dropped after METRICS_IDLE_S, and at most
     * METRICS_CONNECTIONS are served at once: scrapers cannot take the descriptors the API calls need. */
    m->server = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, answer, m,
                                 MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_S,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONNECTIONS, MHD_OPTION_END);
    return m->server ? FC_OK : FC_EIO;
}

void metrics_stop(metrics *m) {
    if (m->server) MHD_stop_daemon(m->server);
    m->server = NULL;
}
