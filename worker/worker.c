/* The worker's event loop. One thread owns the AMQP connection and polls its socket
 * together with libcurl's transfers (fc_http_wait, with the AMQP socket as an extra fd),
 * so heartbeats, confirms and deliveries keep flowing however long an API call takes. */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "fc_log.h"

#define TICK_MS 200
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_delivery(void *ud, const fc_delivery *d) { batch_on_delivery(ud, d); }
static void on_confirm(void *ud, uint64_t seq, int status) { batch_on_confirm(ud, seq, status); }
/* on_cancelled only notes it: the loop re-declares the topology and consumes again. A job's queue
 * deleted once the job completed is only forgotten. */
static void on_cancelled(void *ud, const char *queue) {
    worker *w = ud;
    char prefix[FC_NAME_MAX];
    fc_topology_job_queue(prefix, w->cfg->queue_prefix, "");
    if (strncmp(queue, prefix, strlen(prefix)) == 0) fc_info("the broker cancelled the consumer of %s (job done)", queue);
    else w->cancelled = 1;
}

int worker_may_ask(const worker *w) {
    return fc_amqp_ok(w->amqp) && !fc_amqp_blocked(w->amqp) && fc_amqp_unconfirmed(w->amqp) == 0;
}

int worker_prefetch(const worker *w) {
    if (w->cfg->prefetch > 0) return w->cfg->prefetch;
    return w->cfg->worker_count / w->cfg->batch_size + 2;
}

static int load_pipeline(worker *w, char *err, size_t errlen) {
    char path[1024];
    const char *dir = w->cfg->prompt_dir;
    if (!dir) dir = access(FC_SOURCE_PROMPT_DIR "/stage1_system.txt", R_OK) == 0 ? FC_SOURCE_PROMPT_DIR : FC_PROMPT_DIR;
    w->pipe.stage1_model = strdup(w->cfg->stage1_model);
    w->pipe.stage2_model = strdup(w->cfg->stage2_model);
    w->pipe.temperature = w->cfg->temperature;
    w->pipe.max_tokens = w->cfg->max_tokens;
    snprintf(path, sizeof(path), "%s/stage1_system.txt", dir);
    if (fc_pipeline_load_prompt(path, &w->pipe.stage1_prompt, err, errlen) != FC_OK) return FC_EINVAL;
    snprintf(path, sizeof(path), "%s/stage2_system.txt", dir);
    if (fc_pipeline_load_prompt(path, &w->pipe.stage2_prompt, err, errlen) != FC_OK) return FC_EINVAL;
    if (fc_pipeline_conf_prepare(&w->pipe) != FC_OK) return FC_ENOMEM;
    w->proc = fc_flashcard_processor(&w->pipe);
    return FC_OK;
}

static int make_limiter(worker *w, char *err, size_t errlen) {
    fc_limiter_conf lc = {0};
    lc.prefix = w->cfg->queue_prefix;
    lc.api = w->cfg->api_name;
    lc.calls.per_sec = w->cfg->rate_limit / 60.0;
    lc.calls.burst = w->cfg->rate_burst > 0 ? (double)w->cfg->rate_burst : fc_limit_default_burst(lc.calls.per_sec);
    lc.tokens.per_sec = w->cfg->token_limit / 60.0;
    lc.tokens.burst = fc_limit_default_burst(lc.tokens.per_sec);
    if (lc.tokens.per_sec > 0 && lc.tokens.burst < w->cfg->max_tokens * 2.0) lc.tokens.burst = w->cfg->max_tokens * 2.0;
    if (w->cfg->rate_limits) {
        fc_api_limits v[16];
        size_t n;
        if (fc_limits_parse(w->cfg->rate_limits, v, 16, &n, err, errlen) != FC_OK) return FC_EINVAL;
        const fc_api_limits *mine = fc_limits_find(v, n, w->cfg->api_name);
        if (mine) {
            lc.calls = mine->calls;
            if (mine->tokens.per_sec > 0) lc.tokens = mine->tokens;
        }
    }
    if (fc_limit_validate(lc.calls, "RATE_LIMIT/RATE_BURST", err, errlen) != FC_OK ||
        fc_limit_validate(lc.tokens, "TOKEN_LIMIT", err, errlen) != FC_OK)
        return FC_EINVAL;
    lc.fallback = strcmp(w->cfg->rate_limit_fallback, "local") == 0 ? FC_LIMITER_LOCAL : FC_LIMITER_PAUSE;
    lc.fleet_size = w->cfg->fleet_size;
    lc.adaptive = w->cfg->rate_adapt;
    w->limiter = fc_limiter_new(w->redis, &lc);
    atomic_store(&w->m->rate_limit_milli, (long)(lc.calls.per_sec * 1000.0 + 0.5));
    atomic_store(&w->m->rate_adapted_milli, (long)(lc.calls.per_sec * 1000.0 + 0.5));
    atomic_store(&w->m->rate_usage_milli, lc.calls.per_sec > 0 ? 0 : -1);
    if (!w->limiter) snprintf(err, errlen, "cannot create the rate limiter");
    return w->limiter ? FC_OK : FC_EINVAL;
}

static int64_t unix_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* name_metrics sets the labels of the metrics: the build's, and the queues whose depth is sampled
 * (every queue of the prefix but the jobs' results queues, which come and go). */
static void name_metrics(worker *w) {
    metrics *m = w->m;
    static const char *fixed[] = {"batches", "crashed", "dead", "results.unrouted"};
    snprintf(m->version, sizeof(m->version), "%s", FC_VERSION);
    snprintf(m->queue_prefix, sizeof(m->queue_prefix), "%s", w->cfg->queue_prefix);
    snprintf(m->api, sizeof(m->api), "%s", w->cfg->api_name);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        snprintf(m->queues[m->nqueues++].name, sizeof(m->queues[0].name), "%s", fixed[i]);
    for (int i = 0; i < w->cfg->nretry_delays && m->nqueues < METRICS_QUEUES; i++) {
        char key[32];
        fc_topology_delay_key(key, sizeof(key), w->cfg->retry_delays[i]);
        snprintf(m->queues[m->nqueues++].name, sizeof(m->queues[0].name), "retry.%s", key);
    }
}

static int make_gate(worker *w) {
    const fc_config *c = w->cfg;
    gate_conf gc = {c->auth_retry_ms, c->hold_limit_ms, c->api_timeout_ms,
                    {c->breaker_failures, 0.5, 20, c->breaker_cooldown_ms}};
    return gate_init(&w->gate, &gc);
}

int worker_init(worker *w, fc_config *cfg, int sigfd) {
    char err[512], host[64] = "host";
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->sigfd = sigfd;
    w->m = calloc(1, sizeof(*w->m));
    if (w->m) pthread_mutex_init(&w->m->jobs_lock, NULL);
    gethostname(host, sizeof(host) - 1);
    snprintf(w->name, sizeof(w->name), "%s:%d", host, (int)getpid());
    snprintf(w->url, sizeof(w->url), "%s/chat/completions", cfg->api_base_url);
    if (!cfg->api_key || !*cfg->api_key)
        fc_warn("no API key (API_KEY or API_KEY_FILE): requests go without one, which most APIs answer with 401");
    fc_topology_name(w->queue, cfg->queue_prefix, "batches");
    w->amqp = fc_amqp_new(cfg->amqp_url, (int)(cfg->heartbeat_ms / 1000), w->name);
    w->redis = fc_redis_new(cfg->redis_url, 2000, err, sizeof(err));
    if (w->amqp && fc_amqp_set_tls(w->amqp, cfg->amqp_ca_file, cfg->amqp_cert_file, cfg->amqp_key_file) != FC_OK)
        w->amqp = (fc_amqp_free(w->amqp), NULL);
    if (w->redis && fc_redis_set_sentinels(w->redis, cfg->redis_sentinels, cfg->redis_sentinel_master, err,
                                           sizeof(err)) != FC_OK) {
        fc_error("REDIS_SENTINELS: %s", err);
        return FC_EINVAL;
    }
    char ua[200];
    snprintf(ua, sizeof(ua), "flashcard-worker/%s (%s)", FC_VERSION, w->name);
    fc_http_conf hc = {cfg->api_key, cfg->http_referer, cfg->x_title, ua, cfg->api_timeout_ms,
                       cfg->api_connect_timeout_ms, (size_t)cfg->api_max_response_bytes, cfg->api_ca_file};
    w->http = fc_http_new(&hc);
    if (!w->m || !w->amqp || !w->redis || !w->http || make_gate(w) != FC_OK) {
        fc_error("cannot set up the worker: out of memory");
        return FC_ENOMEM;
    }
    if (load_pipeline(w, err, sizeof(err)) != FC_OK || make_limiter(w, err, sizeof(err)) != FC_OK) {
        fc_error("%s", err);
        return FC_EINVAL;
    }
    w->m->capacity = cfg->worker_count;
    w->m->started_ms = now_ms();
    w->started_unix_ms = unix_now_ms();
    name_metrics(w);
    atomic_store(&w->m->not_ready, NOT_READY_BROKER); /* until connected */
    int rc = metrics_start(w->m, cfg->metrics_bind, cfg->metrics_port);
    if (rc != FC_OK)
        fc_error("METRICS_BIND/METRICS_PORT: cannot serve metrics on %s:%d (%s)", cfg->metrics_bind, cfg->metrics_port,
                 rc == FC_EINVAL ? "not an IPv4 address" : "address in use?");
    return rc;
}

void worker_free(worker *w) {
    if (w->m) metrics_stop(w->m);
    if (w->http) batch_drop_all(w);
    fc_http_free(w->http);
    fc_amqp_free(w->amqp);
    fc_limiter_free(w->limiter);
    fc_redis_free(w->redis);
    gate_free(&w->gate);
    fc_pipeline_conf_free(&w->pipe);
    for (size_t i = 0; i < w->ncache_out; i++) free(w->cache_out[i].key), free(w->cache_out[i].value);
    free(w->cache_out);
    free(w->m);
}

/* ---- the broker ------------------------------------------------------------------ */

/* consume starts consuming the work queue and the queue of batches it gave up on. */
static int consume(worker *w) {
    char crashed[FC_NAME_MAX];
    fc_topology_name(crashed, w->cfg->queue_prefix, "crashed");
    fc_amqp_cancel(w->amqp); /* a consumer the broker did not cancel is started again below */
    int rc = fc_amqp_consume(w->amqp, w->queue, worker_prefetch(w));
    if (rc == FC_OK) rc = fc_amqp_consume(w->amqp, crashed, 1);
    w->consuming = rc == FC_OK;
    return rc;
}

static int declare(worker *w) {
    fc_topology t = {w->cfg->queue_prefix, w->cfg->retry_delays, w->cfg->nretry_delays, w->cfg->delivery_limit};
    return fc_topology_declare(w->amqp, &t);
}

/* wants_deliveries asks the gate whether to consume now. */
static int wants_deliveries(worker *w) { return gate_wants_deliveries(&w->gate, now_ms(), calls_queued(w)); }

/* connect_broker (re)connects, declares the topology and starts consuming if the gate says so
 * (update_consuming starts it later otherwise). */
static int connect_broker(worker *w) {
    int rc = fc_amqp_connect(w->amqp);
    if (rc == FC_OK) rc = declare(w);
    if (rc == FC_OK && wants_deliveries(w)) rc = consume(w);
    if (rc != FC_OK) {
        fc_amqp_close(w->amqp);
        w->consuming = 0;
    }
    return rc;
}

/* ensure_broker reconnects with capped exponential backoff and jitter. */
static void ensure_broker(worker *w) {
    if (fc_amqp_ok(w->amqp)) return;
    if (w->link_up) {
        int held = w->batches || w->sched.inflight;
        fc_warn("broker connection lost (%s)%s", fc_amqp_errstr(w->amqp),
                held ? ": dropping held batches, the broker redelivers them" : "");
        w->link_up = 0;
        w->consuming = 0;
        batch_drop_all(w);
        fc_amqp_close(w->amqp);
    }
    int64_t now = now_ms();
    if (now < w->next_reconnect_ms || w->gate.stopping) return;
    int rc = connect_broker(w);
    if (rc == FC_OK) {
        char at[300];
        fc_amqp_broker(w->amqp, at, sizeof(at));
        if (w->connected_before)
            fc_info("reconnected to the broker %s after %d failed attempts", at, w->reconnect_attempt);
        else fc_info("consuming %s on %s (prefetch %d, %d calls in flight, %s pipeline)", w->queue, at, worker_prefetch(w),
                     w->cfg->worker_count, w->proc.name);
        w->connected_before = w->link_up = 1;
        w->reconnect_attempt = 0;
        return;
    }
    long backoff = BACKOFF_MIN_MS << (w->reconnect_attempt < 6 ? w->reconnect_attempt : 6);
    if (backoff > BACKOFF_MAX_MS) backoff = BACKOFF_MAX_MS;
    backoff = backoff / 2 + rand() % (backoff / 2 + 1);
    w->reconnect_attempt++;
    w->next_reconnect_ms = now + backoff;
    fc_warn("%s (%s); retry %d in %ld ms", rc == FC_ECONN ? "cannot reach the broker" : "the broker refused",
            fc_amqp_errstr(w->amqp), w->reconnect_attempt, backoff);
}

/* redeclare answers the broker cancelling the consumer (its queue was deleted, e.g. to change
 * DELIVERY_LIMIT) or an unroutable outcome: declare the topology again on the same connection;
 * update_consuming then consumes again. Held deliveries stay held and settle as usual. */
static void redeclare(worker *w) {
    if (!fc_amqp_ok(w->amqp) || fc_amqp_blocked(w->amqp) || !(w->cancelled || w->redeclare)) return;
    if (w->cancelled) fc_warn("the broker cancelled the consumer (queue deleted?): declaring the topology again");
    if (w->cancelled) fc_amqp_cancel(w->amqp);
    w->consuming = w->cancelled ? 0 : w->consuming;
    w->cancelled = w->redeclare = 0;
    if (declare(w) != FC_OK) {
        fc_warn("cannot declare the topology again (%s): reconnecting", fc_amqp_errstr(w->amqp));
        fc_amqp_close(w->amqp);
    }
}

/* not_ready says why the worker cannot do its work now (enum metrics_not_ready bits). */
static int not_ready(worker *w) {
    int bits = 0;
    if (w->gate.stopping) bits |= NOT_READY_STOPPING;
    if (!fc_amqp_ok(w->amqp)) bits |= NOT_READY_BROKER;
    if (w->sched.limiter_down || w->registry_down) bits |= NOT_READY_REDIS;
    if (w->gate.auth_blocked) bits |= NOT_READY_CREDENTIALS;
    if (fc_breaker_state(w->gate.breaker) == FC_BREAKER_OPEN) bits |= NOT_READY_BREAKER;
    return bits;
}

/* update_consuming stops taking deliveries while calls cannot be made, and resumes after. */
static void update_consuming(worker *w) {
    int want = wants_deliveries(w);
    atomic_store(&w->m->not_ready, not_ready(w));
    atomic_store(&w->m->breaker_state, fc_breaker_state(w->gate.breaker));
    if (!fc_amqp_ok(w->amqp) || fc_amqp_blocked(w->amqp)) return; /* no answer would come */
    if (!want && w->consuming) {
        fc_amqp_cancel(w->amqp);
        w->consuming = 0;
        if (!w->gate.stopping)
            fc_warn("stopped taking deliveries (%s)",
                    w->gate.auth_blocked ? "API credentials rejected" : "circuit breaker open");
    } else if (want && !w->consuming) {
        if (consume(w) == FC_OK)
            fc_info(gate_ready(&w->gate) ? "taking deliveries" : "taking deliveries to probe the API");
    }
}

/* ---- periodic work ---------------------------------------------------------------- */

/* share_breaker tells the fleet through Redis, at once, that this worker's breaker opened. */
static void share_breaker(worker *w) {
    fc_breaker *b = w->gate.breaker;
    if (!fc_breaker_just_opened(b)) return;
    char key[FC_KEY_MAX];
    long ms = (long)(fc_breaker_open_until(b) - now_ms());
    fc_key_breaker(key, sizeof(key), w->cfg->queue_prefix, w->cfg->api_name);
    fc_warn("circuit breaker opened for %s: no calls for %ld ms", w->cfg->api_name, ms);
    atomic_fetch_add(&w->m->breaker_opens, 1);
    fc_redis_cmd(w->redis, NULL, "SET %s 1 PX %ld", key, ms > 0 ? ms : 1);
}

/* sync_breaker opens this worker's breaker too while another worker's is open. */
static void sync_breaker(worker *w, int64_t now) {
    char key[FC_KEY_MAX];
    fc_reply r;
    fc_key_breaker(key, sizeof(key), w->cfg->queue_prefix, w->cfg->api_name);
    if (fc_redis_cmd(w->redis, &r, "PTTL %s", key) == FC_OK && r.type == FC_REPLY_INT && r.integer > 0 &&
        fc_breaker_state(w->gate.breaker) == FC_BREAKER_CLOSED)
        gate_trip(&w->gate, now + r.integer);
    fc_reply_free(&r);
}

/* poll_usage samples the fleet's rate-limit usage for the metrics (one Redis round trip). */
static void poll_usage(worker *w, int64_t now) {
    (void)now;
    double u;
    int rc = fc_limiter_usage(w->limiter, &u);
    if (rc == FC_OK) atomic_store(&w->m->rate_usage_milli, (long)(u * 1000.0 + 0.5));
    else if (rc == FC_EINVAL) atomic_store(&w->m->rate_usage_milli, -1);
    double rate;
    if (rc == FC_OK && fc_limiter_rate_read(w->limiter, &rate, NULL) == FC_OK)
        atomic_store(&w->m->rate_adapted_milli, (long)(rate * 1000.0 + 0.5));
}

/* poll_depth samples the depth of every queue of the prefix for the metrics (a passive declare
 * each, which waits for the broker's answer). */
static void poll_depth(worker *w, int64_t now) {
    (void)now;
    metrics *m = w->m;
    for (int i = 0; i < m->nqueues && worker_may_ask(w); i++) {
        char name[FC_NAME_MAX];
        long ready, consumers;
        fc_topology_name(name, w->cfg->queue_prefix, m->queues[i].name);
        if (fc_amqp_queue_depth(w->amqp, name, &ready, &consumers) != FC_OK) continue;
        atomic_store(&m->queues[i].ready, ready);
        atomic_store(&m->queues[i].consumers, consumers);
    }
}

/* Work done every period_ms (ae.c's time events); metrics_only when only /metrics needs it. */
typedef struct periodic {
    const char *name;
    long period_ms;
    int metrics_only;
    void (*fn)(worker *w, int64_t now);
    int64_t last_ms;
} periodic;

static void run_periodic(worker *w, periodic *p, size_t n) {
    int64_t now = now_ms();
    for (size_t i = 0; i < n; i++) {
        if (now - p[i].last_ms < p[i].period_ms || (p[i].metrics_only && !w->m->server)) continue;
        p[i].last_ms = now;
        p[i].fn(w, now);
    }
}

/* ---- signals ------------------------------------------------------------------------ */

static void handle_signals(worker *w) {
    char buf[16];
    ssize_t n = read(w->sigfd, buf, sizeof(buf));
    if (n <= 0) return;
    if (w->gate.stopping) {
        fc_warn("second signal: exiting now; the broker redelivers unacked batches");
        _exit(1);
    }
    /* Calls get SHUTDOWN_TIMEOUT less a margin for publishing what finished (a fifth, at most 2 s),
     * and the loop ends early enough for the broker connection's polite close, so that the process
     * is gone within SHUTDOWN_TIMEOUT. */
    long margin = w->cfg->shutdown_timeout_ms / 5 < 2000 ? w->cfg->shutdown_timeout_ms / 5 : 2000;
    w->stop_exit_ms = now_ms() + w->cfg->shutdown_timeout_ms - FC_AMQP_CLOSE_MS;
    gate_stop(&w->gate, w->stop_exit_ms - margin);
    fc_info("shutting down: finishing %d calls in flight (at most %ld ms)", w->sched.inflight,
            w->cfg->shutdown_timeout_ms - margin);
    /* Blocked by a resource alarm, the broker would not answer the cancel: deliveries that
     * still come are held and left to the broker at exit. */
    if (fc_amqp_ok(w->amqp) && !fc_amqp_blocked(w->amqp)) fc_amqp_cancel(w->amqp);
    w->consuming = 0;
}

/* ---- the loop ----------------------------------------------------------------------- */

static void drain_http(worker *w) {
    fc_http_done d;
    while (fc_http_next(w->http, &d)) calls_on_done(w, &d);
}

static void account_busy(worker *w, int64_t *last) {
    int64_t now = now_ms();
    atomic_fetch_add(&w->m->busy_ms, (long)(now - *last) * fc_http_running(w->http));
    atomic_store(&w->m->inflight, fc_http_running(w->http));
    *last = now;
}

/* read_broker reads the AMQP socket when it has data (or frames are buffered), and every tick
 * for the heartbeats rabbitmq-c sends from inside its calls: no idle recv() per HTTP completion. */
static void read_broker(worker *w, const fc_amqp_handler *h, int readable, int64_t *polled) {
    int64_t t = now_ms();
    if (!fc_amqp_ok(w->amqp) || !(readable || fc_amqp_pending(w->amqp) || t - *polled >= TICK_MS)) return;
    *polled = t;
    fc_amqp_poll(w->amqp, 0, h); /* a loss is handled by ensure_broker */
}

/* One turn of the loop, in this order: wait for a socket, a signal or the next timer; read the
 * broker (deliveries, confirms); take finished calls; start reserved calls whose slot came;
 * hold, checkpoint or start deliveries; schedule new calls; write the cache; publish and settle
 * outcomes; tell the fleet of an opened breaker; periodic work; then consuming and the connection. */
static int turn(worker *w, const fc_amqp_handler *h, periodic *p, size_t np, int64_t *busy, int64_t *polled) {
    fc_pollfd fds[2] = {{w->sigfd, 0}, {fc_amqp_fd(w->amqp), 0}};
    int nfds = fds[1].fd >= 0 ? 2 : 1;
    int timeout = fc_amqp_ok(w->amqp) && fc_amqp_pending(w->amqp) ? 0 : calls_next_timeout(w, TICK_MS);
    if (fc_http_wait(w->http, fds, nfds, timeout) != FC_OK) return FC_EIO;
    account_busy(w, busy);
    if (fds[0].readable) handle_signals(w);
    read_broker(w, h, fds[1].readable, polled);
    drain_http(w);
    calls_fire_timers(w);
    batch_tick(w);
    int before = fc_http_running(w->http);
    calls_schedule(w);
    if (fc_http_running(w->http) > before) fc_http_kick(w->http); /* send the new requests now */
    cache_flush(w);
    batch_settle(w);
    share_breaker(w);
    run_periodic(w, p, np);
    redeclare(w);
    update_consuming(w);
    ensure_broker(w);
    return FC_OK;
}

int worker_run(worker *w) {
    fc_amqp_handler h = {on_delivery, on_confirm, on_cancelled, w};
    periodic p[] = {
        {"breaker sync", 1000, 0, sync_breaker, 0},
        {"rate-limit usage", 1000, 1, poll_usage, 0},
        {"queue depth", 5000, 1, poll_depth, 0},
        {"cancelled jobs", 1000, 0, batch_check_cancelled, 0},
        {"followed jobs", JOBS_TRY_MS, 0, jobs_follow, 0},
        {"job budgets", 5000, 1, jobs_sample, 0},
        {"registration", 5000, 0, registry_update, 0},
    };
    int64_t busy = now_ms(), polled = 0;
    ensure_broker(w);
    while (!(w->gate.stopping && !w->batches && fc_http_running(w->http) == 0)) {
        if (w->gate.stopping && now_ms() >= w->stop_exit_ms) {
            fc_warn("outcomes not confirmed within SHUTDOWN_TIMEOUT; the broker redelivers what is unacked");
            break;
        }
        if (turn(w, &h, p, sizeof(p) / sizeof(p[0]), &busy, &polled) != FC_OK) return 1;
    }
    fc_amqp_close(w->amqp);
    registry_remove(w);
    fc_info("stopped cleanly");
    return 0;
}
