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
#include "fc_log.h"

#define TICK_MS 200
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define BREAKER_SYNC_MS 1000
#define DEPTH_POLL_MS 5000
#define USAGE_POLL_MS 1000

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_delivery(void *ud, const fc_delivery *d) { batch_on_delivery(ud, d); }
static void on_confirm(void *ud, uint64_t seq, int status) { batch_on_confirm(ud, seq, status); }
static void on_cancelled(void *ud) {
    worker *w = ud;
    w->consuming = 0;
    fc_warn("the broker cancelled the consumer (queue deleted?); reconnecting");
    fc_amqp_close(w->amqp);
}

static int prefetch(const worker *w) {
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
    lc.fallback = strcmp(w->cfg->rate_limit_fallback, "local") == 0 ? FC_LIMITER_LOCAL : FC_LIMITER_PAUSE;
    lc.fleet_size = w->cfg->fleet_size;
    w->limiter = fc_limiter_new(w->redis, &lc);
    atomic_store(&w->m->rate_limit_milli, (long)(lc.calls.per_sec * 1000.0 + 0.5));
    atomic_store(&w->m->rate_usage_milli, lc.calls.per_sec > 0 ? 0 : -1);
    if (!w->limiter) snprintf(err, errlen, "cannot create the rate limiter");
    return w->limiter ? FC_OK : FC_EINVAL;
}

int worker_init(worker *w, fc_config *cfg, int sigfd) {
    char err[512], host[64] = "host";
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->sigfd = sigfd;
    w->m = calloc(1, sizeof(*w->m));
    gethostname(host, sizeof(host) - 1);
    snprintf(w->name, sizeof(w->name), "%s:%d", host, (int)getpid());
    snprintf(w->url, sizeof(w->url), "%s/chat/completions", cfg->api_base_url);
    if (!cfg->api_key || !*cfg->api_key)
        fc_warn("no API key (API_KEY or API_KEY_FILE): requests go without one, which most APIs answer with 401");
    fc_topology_name(w->queue, cfg->queue_prefix, "batches");
    w->amqp = fc_amqp_new(cfg->amqp_url, (int)(cfg->heartbeat_ms / 1000), w->name);
    w->redis = fc_redis_new(cfg->redis_url, 2000, err, sizeof(err));
    char ua[200];
    snprintf(ua, sizeof(ua), "flashcard-worker/%s (%s)", FC_VERSION, w->name);
    fc_http_conf hc = {cfg->api_key, cfg->http_referer, cfg->x_title, ua, cfg->api_timeout_ms,
                       cfg->api_connect_timeout_ms};
    w->http = fc_http_new(&hc);
    fc_breaker_conf bc = {cfg->breaker_failures, 0.5, 20, cfg->breaker_cooldown_ms};
    w->breaker = fc_breaker_new(&bc);
    if (!w->m || !w->amqp || !w->redis || !w->http || !w->breaker) {
        fc_error("cannot set up the worker: out of memory");
        return FC_ENOMEM;
    }
    if (load_pipeline(w, err, sizeof(err)) != FC_OK || make_limiter(w, err, sizeof(err)) != FC_OK) {
        fc_error("%s", err);
        return FC_EINVAL;
    }
    w->m->capacity = cfg->worker_count;
    w->m->started_ms = now_ms();
    w->m->alive = 1;
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
    fc_breaker_free(w->breaker);
    fc_pipeline_conf_free(&w->pipe);
    fc_buf_free(&w->scratch);
    for (size_t i = 0; i < w->ncache_out; i++) free(w->cache_out[i].key), free(w->cache_out[i].value);
    free(w->cache_out);
    free(w->m);
}

/* blocked says whether the worker cannot do its work: stopping, credentials rejected, or the
 * circuit breaker open. It then reports not ready and takes no deliveries, except for a probe. */
static int blocked(worker *w) {
    return w->stopping || w->auth_blocked || fc_breaker_state(w->breaker) == FC_BREAKER_OPEN;
}

/* needs_probe_work says whether a blocked worker must take deliveries to have a call to probe
 * the API with: its next credentials probe (or the breaker's cooldown end) is due and it holds
 * no queued call. Without this a worker that holds nothing would stay blocked for good. */
static int needs_probe_work(worker *w, int64_t now) {
    if (w->stopping || w->runq) return 0;
    if (w->auth_blocked) return now >= w->auth_probe_ms;
    return fc_breaker_state(w->breaker) == FC_BREAKER_OPEN && now >= fc_breaker_open_until(w->breaker);
}

/* connect_broker (re)connects, declares the topology and starts consuming unless blocked
 * (update_consuming starts it later). */
static int connect_broker(worker *w) {
    fc_topology t = {w->cfg->queue_prefix, w->cfg->retry_delays, w->cfg->nretry_delays, w->cfg->delivery_limit};
    int consume = !blocked(w) || needs_probe_work(w, now_ms());
    int rc = fc_amqp_connect(w->amqp);
    if (rc == FC_OK) rc = fc_topology_declare(w->amqp, &t);
    if (rc == FC_OK && consume) rc = fc_amqp_consume(w->amqp, w->queue, prefetch(w));
    if (rc != FC_OK) {
        fc_amqp_close(w->amqp);
        return rc;
    }
    w->consuming = consume;
    return FC_OK;
}

/* ensure_broker reconnects with capped exponential backoff and jitter. */
static void ensure_broker(worker *w) {
    if (fc_amqp_ok(w->amqp)) return;
    if (w->link_up) {
        int held = w->batches || w->inflight;
        fc_warn("broker connection lost (%s)%s", fc_amqp_errstr(w->amqp),
                held ? ": dropping held batches, the broker redelivers them" : "");
        w->link_up = 0;
        w->consuming = 0;
        batch_drop_all(w);
        fc_amqp_close(w->amqp);
    }
    int64_t now = now_ms();
    if (now < w->next_reconnect_ms) return;
    if (connect_broker(w) == FC_OK) {
        if (w->connected_before) fc_info("reconnected to the broker after %d failed attempts", w->reconnect_attempt);
        else fc_info("consuming %s (prefetch %d, %d calls in flight, %s pipeline)", w->queue, prefetch(w),
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
    fc_warn("cannot reach the broker (%s); retry %d in %ld ms", fc_amqp_errstr(w->amqp), w->reconnect_attempt,
            backoff);
}

/* update_consuming stops taking deliveries while calls cannot be made, and resumes after. */
static void update_consuming(worker *w) {
    int stop = blocked(w) && !needs_probe_work(w, now_ms());
    atomic_store(&w->m->ready, !blocked(w) && fc_amqp_ok(w->amqp));
    atomic_store(&w->m->breaker_state, fc_breaker_state(w->breaker));
    if (!fc_amqp_ok(w->amqp)) return;
    if (stop && w->consuming) {
        fc_amqp_cancel(w->amqp);
        w->consuming = 0;
        if (!w->stopping)
            fc_warn("stopped taking deliveries (%s)", w->auth_blocked ? "API credentials rejected" : "circuit breaker open");
    } else if (!stop && !w->consuming) {
        if (fc_amqp_consume(w->amqp, w->queue, prefetch(w)) == FC_OK) {
            w->consuming = 1;
            fc_info(blocked(w) ? "taking deliveries to probe the API" : "taking deliveries again");
        }
    }
}

/* sync_breaker shares the breaker's open state with the fleet through Redis. */
static void sync_breaker(worker *w, int64_t now) {
    char key[200];
    snprintf(key, sizeof(key), "%s:breaker:{%s}", w->cfg->queue_prefix, w->cfg->api_name);
    if (fc_breaker_just_opened(w->breaker)) {
        long ms = (long)(fc_breaker_open_until(w->breaker) - now);
        fc_warn("circuit breaker opened for %s: no calls for %ld ms", w->cfg->api_name, ms);
        atomic_fetch_add(&w->m->breaker_opens, 1);
        fc_redis_cmd(w->redis, NULL, "SET %s 1 PX %ld", key, ms > 0 ? ms : 1);
    }
    if (now - w->last_breaker_sync_ms < BREAKER_SYNC_MS) return;
    w->last_breaker_sync_ms = now;
    fc_reply r;
    if (fc_redis_cmd(w->redis, &r, "PTTL %s", key) == FC_OK && r.type == FC_REPLY_INT && r.integer > 0 &&
        fc_breaker_state(w->breaker) == FC_BREAKER_CLOSED)
        fc_breaker_trip(w->breaker, now + r.integer);
    fc_reply_free(&r);
}

/* poll_usage samples the fleet's rate-limit usage for the metrics, when they are served (one
 * Redis round trip). */
static void poll_usage(worker *w, int64_t now) {
    if (!w->m->server || now - w->usage_polled_ms < USAGE_POLL_MS) return;
    w->usage_polled_ms = now;
    double u;
    int rc = fc_limiter_usage(w->limiter, &u);
    if (rc == FC_OK) atomic_store(&w->m->rate_usage_milli, (long)(u * 1000.0 + 0.5));
    else if (rc == FC_EINVAL) atomic_store(&w->m->rate_usage_milli, -1);
}

/* poll_depth samples the work queue's ready messages for the metrics, when they are served (a
 * passive declare, which waits for the broker's answer). */
static void poll_depth(worker *w, int64_t now) {
    if (!w->m->server || !fc_amqp_ok(w->amqp) || now - w->depth_polled_ms < DEPTH_POLL_MS) return;
    w->depth_polled_ms = now;
    long ready;
    if (fc_amqp_queue_depth(w->amqp, w->queue, &ready, NULL) == FC_OK) atomic_store(&w->m->queue_depth, ready);
}

static void handle_signals(worker *w) {
    char buf[16];
    ssize_t n = read(w->sigfd, buf, sizeof(buf));
    if (n <= 0) return;
    if (w->stopping) {
        fc_warn("second signal: exiting now; the broker redelivers unacked batches");
        _exit(1);
    }
    w->stopping = 1;
    /* Calls get SHUTDOWN_TIMEOUT less a margin for publishing what finished (a fifth, at most 2 s),
     * so that the process is gone within SHUTDOWN_TIMEOUT. */
    long margin = w->cfg->shutdown_timeout_ms / 5 < 2000 ? w->cfg->shutdown_timeout_ms / 5 : 2000;
    w->stop_deadline_ms = now_ms() + w->cfg->shutdown_timeout_ms - margin;
    fc_info("shutting down: finishing %d calls in flight (at most %ld ms)", w->inflight,
            w->cfg->shutdown_timeout_ms - margin);
    if (fc_amqp_ok(w->amqp)) fc_amqp_cancel(w->amqp);
    w->consuming = 0;
}

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

static int step(worker *w, const fc_amqp_handler *h, int64_t *last) {
    fc_pollfd fds[2] = {{w->sigfd, 0}, {fc_amqp_fd(w->amqp), 0}};
    int nfds = fds[1].fd >= 0 ? 2 : 1;
    int timeout = fc_amqp_ok(w->amqp) && fc_amqp_pending(w->amqp) ? 0 : calls_next_timeout(w, TICK_MS);
    if (fc_http_wait(w->http, fds, nfds, timeout) != FC_OK) return FC_EIO;
    account_busy(w, last);
    if (fds[0].readable) handle_signals(w);
    /* Read the socket only when it has data (or frames are buffered), and every tick for the
     * heartbeats rabbitmq-c sends from inside its calls: no idle recv() per HTTP completion. */
    int64_t t = now_ms();
    if (fc_amqp_ok(w->amqp) && (fds[1].readable || fc_amqp_pending(w->amqp) || t - w->amqp_polled_ms >= TICK_MS)) {
        w->amqp_polled_ms = t;
        fc_amqp_poll(w->amqp, 0, h); /* a loss is handled by ensure_broker */
    }
    drain_http(w);
    calls_fire_timers(w);
    batch_checkpoint_due(w);
    int before = fc_http_running(w->http);
    calls_schedule(w);
    if (fc_http_running(w->http) > before) fc_http_kick(w->http); /* send the new requests now */
    cache_flush(w);
    batch_settle_ready(w);
    int64_t now = now_ms();
    sync_breaker(w, now);
    poll_depth(w, now);
    poll_usage(w, now);
    update_consuming(w);
    ensure_broker(w);
    return FC_OK;
}

int worker_run(worker *w) {
    fc_amqp_handler h = {on_delivery, on_confirm, on_cancelled, w};
    int64_t last = now_ms();
    ensure_broker(w);
    while (!(w->stopping && !w->batches && fc_http_running(w->http) == 0)) {
        if (w->stopping && now_ms() > w->stop_deadline_ms + 10000) {
            fc_error("outcomes not confirmed 10 s after the shutdown deadline; leaving them to the broker");
            break;
        }
        if (step(w, &h, &last) != FC_OK) return 1;
    }
    fc_amqp_close(w->amqp);
    fc_info("stopped cleanly");
    return 0;
}
