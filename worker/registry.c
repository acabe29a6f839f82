/* The worker's registration in Redis, which `flashcard-admin status` lists: P:worker:<id>
 * holds a JSON summary of the worker (who, since when, how busy, how healthy) with a TTL of
 * REGISTRY_TTL_MS, renewed every few seconds, and P:workers indexes the live ones by the time
 * their entry expires. A worker that dies simply expires (each registration prunes the index of
 * the expired); a clean stop takes it out of the index. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fc_breaker.h"
#include "fc_error.h"
#include "fc_keys.h"
#include "fc_log.h"
#include "worker.h"

#define REGISTRY_TTL_MS 15000

static int64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void iso(int64_t ms, char *out, size_t n) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *breaker_name(int state) {
    return state == FC_BREAKER_OPEN ? "open" : state == FC_BREAKER_HALF_OPEN ? "half-open" : "closed";
}

/* describe writes the registration's JSON. */
static void describe(worker *w, int64_t now_unix, fc_buf *b) {
    metrics *m = w->m;
    char host[128], started[32], err_at[32] = "", why[256];
    snprintf(host, sizeof(host), "%s", w->name);
    char *colon = strrchr(host, ':');
    if (colon) *colon = '\0';
    iso(w->started_unix_ms, started, sizeof(started));
    if (w->last_error[0]) iso(now_unix - (now_ms() - w->last_error_ms), err_at, sizeof(err_at));
    long dead = 0, retried = 0;
    for (int i = 0; i < DEAD_NCLASSES; i++) dead += atomic_load(&m->items_dead[i]);
    for (int i = 0; i < RETRY_NREASONS; i++) retried += atomic_load(&m->items_retried[i]);
    int not_ready = atomic_load(&m->not_ready);
    metrics_not_ready_text(not_ready, why, sizeof(why));
    long usage = atomic_load(&m->rate_usage_milli);
    fc_buf_puts(b, "{\"id\":");
    fc_json_str(b, w->name);
    fc_buf_puts(b, ",\"host\":");
    fc_json_str(b, host);
    fc_buf_printf(b, ",\"pid\":%d,\"version\":\"%s\",\"started\":\"%s\",\"started_ms\":%lld,\"api\":", (int)getpid(),
                  FC_VERSION, started, (long long)w->started_unix_ms);
    fc_json_str(b, w->cfg->api_name);
    fc_buf_puts(b, ",\"queue_prefix\":");
    fc_json_str(b, w->cfg->queue_prefix);
    fc_buf_printf(b, ",\"inflight\":%ld,\"capacity\":%ld,\"held_batches\":%ld,\"items_ok\":%ld,\"items_dead\":%ld,"
                     "\"items_retried\":%ld,\"last_error\":",
                  atomic_load(&m->inflight), atomic_load(&m->capacity), atomic_load(&m->held_batches),
                  atomic_load(&m->items_ok), dead, retried);
    fc_json_str(b, w->last_error);
    fc_buf_printf(b, ",\"last_error_at\":\"%s\",\"ready\":%s,\"not_ready\":", err_at, not_ready ? "false" : "true");
    fc_json_str(b, why);
    fc_buf_printf(b, ",\"rate_limit_per_s\":%.3f,", (double)atomic_load(&m->rate_limit_milli) / 1000.0);
    if (w->cfg->rate_adapt && atomic_load(&m->rate_limit_milli) > 0)
        fc_buf_printf(b, "\"rate_adapted_per_s\":%.3f,", fc_limiter_rate(w->limiter));
    fc_buf_printf(b, "\"jobs_followed\":%d,", w->nfollowed);
    if (usage >= 0) fc_buf_printf(b, "\"rate_usage\":%.3f", (double)usage / 1000.0);
    else fc_buf_puts(b, "\"rate_usage\":null");
    fc_buf_printf(b, ",\"breaker\":\"%s\"}", breaker_name(fc_breaker_state(w->gate.breaker)));
}

void registry_update(worker *w, int64_t now) {
    (void)now;
    char key[FC_KEY_MAX], index[FC_KEY_MAX], ttl[24], expires[24];
    if (fc_key_worker(key, sizeof(key), w->cfg->queue_prefix, w->name) != FC_OK ||
        fc_key_workers(index, sizeof(index), w->cfg->queue_prefix) != FC_OK)
        return;
    int64_t t = unix_ms();
    fc_buf json = {0};
    describe(w, t, &json);
    if (fc_buf_err(&json)) {
        fc_buf_free(&json);
        return;
    }
    snprintf(ttl, sizeof(ttl), "%d", REGISTRY_TTL_MS);
    snprintf(expires, sizeof(expires), "%lld", (long long)(t + REGISTRY_TTL_MS));
    const char *set[] = {"SET", key, json.data, "PX", ttl};
    const char *add[] = {"ZADD", index, expires, w->name};
    char expired[24];
    snprintf(expired, sizeof(expired), "(%lld", (long long)t);
    const char *prune[] = {"ZREMRANGEBYSCORE", index, "-inf", expired}; /* workers that died */
    int argcs[] = {5, 4, 4};
    const char **argvs[] = {set, add, prune};
    int rc = fc_redis_pipeline(w->redis, NULL, 3, argcs, argvs, NULL);
    if (rc != FC_OK && !w->registry_down)
        fc_warn("cannot register the worker in Redis (%s); retrying", fc_redis_errstr(w->redis));
    w->registry_down = rc != FC_OK; /* down, or refusing: the limiter would get no grant either */
    fc_buf_free(&json);
}

void registry_remove(worker *w) {
    char index[FC_KEY_MAX];
    if (fc_key_workers(index, sizeof(index), w->cfg->queue_prefix) != FC_OK) return;
    fc_redis_cmd(w->redis, NULL, "ZREM %s %s", index, w->name); /* its entry expires by itself */
}
