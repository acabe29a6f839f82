/* Connections, clocks and output helpers shared by the subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "fc_error.h"

#define REDIS_TIMEOUT_MS 5000
#define SETTLE_GRACE_MS 300
#define SETTLE_GRACE_PER_ACK_MS 2
#define SETTLE_GRACE_MAX_MS 5000

void admin_say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("flashcard-admin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int admin_connect_amqp(admin *ad, fc_amqp **out) {
    const fc_config *c = ad->cfg;
    char name[96];
    snprintf(name, sizeof(name), "flashcard-admin %s", ad->cmd);
    *out = fc_amqp_new(c->amqp_url, (int)(c->heartbeat_ms / 1000), name);
    if (!*out || fc_amqp_set_tls(*out, c->amqp_ca_file, c->amqp_cert_file, c->amqp_key_file) != FC_OK) {
        admin_say("out of memory");
        return ADMIN_INFRA;
    }
    if (fc_amqp_connect(*out) != FC_OK) {
        admin_say("cannot reach the broker: %s", fc_amqp_errstr(*out));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

int admin_connect_broker(admin *ad) { return admin_connect_amqp(ad, &ad->amqp); }

void admin_settle_grace(fc_amqp *a, long acks) {
    long ms = SETTLE_GRACE_MS + SETTLE_GRACE_PER_ACK_MS * acks;
    fc_amqp_handler none = {NULL, NULL, NULL, NULL};
    double end = mono_s() + (ms < SETTLE_GRACE_MAX_MS ? ms : SETTLE_GRACE_MAX_MS) / 1000.0;
    while (fc_amqp_ok(a) && mono_s() < end && fc_amqp_poll(a, 50, &none) == FC_OK) {}
}

int admin_connect_redis(admin *ad) {
    const fc_config *c = ad->cfg;
    char err[256], shown[512];
    fc_redis_url_redact(c->redis_url, shown, sizeof(shown));
    ad->redis = fc_redis_new(c->redis_url, REDIS_TIMEOUT_MS, err, sizeof(err));
    if (!ad->redis || fc_redis_set_sentinels(ad->redis, c->redis_sentinels, c->redis_sentinel_master, err,
                                             sizeof(err)) != FC_OK) {
        admin_say("REDIS_URL %s: %s", shown, err);
        return ADMIN_USAGE;
    }
    fc_reply r = {0};
    int rc = fc_redis_cmd(ad->redis, &r, "PING");
    fc_reply_free(&r);
    if (rc != FC_OK) {
        admin_say("cannot reach Redis at %s%s: %s", shown, c->redis_sentinels ? " (through its sentinels)" : "",
                  fc_redis_errstr(ad->redis));
        return ADMIN_INFRA;
    }
    return ADMIN_OK;
}

int admin_redis_lost(admin *ad) {
    admin_say("Redis failed: %s", fc_redis_errstr(ad->redis));
    return ADMIN_INFRA;
}

void admin_disconnect(admin *ad) {
    if (ad->amqp) fc_amqp_close(ad->amqp);
    fc_amqp_free(ad->amqp);
    fc_redis_free(ad->redis);
    ad->amqp = NULL;
    ad->redis = NULL;
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void iso_time(char *out, size_t n, int64_t ms) {
    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int print_json(json_object *o) {
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)
                      : NULL;
    int rc = s && puts(s) != EOF && fflush(stdout) == 0 ? FC_OK : FC_EIO;
    json_object_put(o);
    return rc;
}

void json_add(json_object *o, const char *key, json_object *v) {
    if (json_object_object_add(o, key, v) != 0) json_object_put(v);
}

const char *reply_str(const fc_reply *r) {
    return r && (r->type == FC_REPLY_STR || r->type == FC_REPLY_STATUS) ? r->str : NULL;
}

long long reply_ll(const fc_reply *r, long long dflt) {
    if (r && r->type == FC_REPLY_INT) return r->integer;
    const char *s = reply_str(r);
    char *end;
    if (!s || !*s) return dflt;
    long long v = strtoll(s, &end, 10);
    return *end ? dflt : v;
}

void job_key(char *out, const admin *ad, const char *job_id, enum fc_job_key part) {
    fc_key_job(out, FC_KEY_MAX, ad->cfg->queue_prefix, job_id, part);
}
