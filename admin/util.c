/* Connections, clocks, output helpers, queue reading and string sets shared by the subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "fc_error.h"
#include "fc_pipeline.h"

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
    double end = admin_mono_s() + (ms < SETTLE_GRACE_MAX_MS ? ms : SETTLE_GRACE_MAX_MS) / 1000.0;
    while (fc_amqp_ok(a) && admin_mono_s() < end && fc_amqp_poll(a, 50, &none) == FC_OK) {}
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

int64_t admin_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double admin_mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void admin_iso_time(char *out, size_t n, int64_t ms) {
    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int admin_print_json(json_object *o) {
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)
                      : NULL;
    int rc = s && puts(s) != EOF && fflush(stdout) == 0 ? FC_OK : FC_EIO;
    json_object_put(o);
    return rc;
}

void admin_json_add(json_object *o, const char *key, json_object *v) {
    if (json_object_object_add(o, key, v) != 0) json_object_put(v);
}

const char *admin_reply_str(const fc_reply *r) {
    return r && (r->type == FC_REPLY_STR || r->type == FC_REPLY_STATUS) ? r->str : NULL;
}

long long admin_reply_ll(const fc_reply *r, long long dflt) {
    if (r && r->type == FC_REPLY_INT) return r->integer;
    const char *s = admin_reply_str(r);
    char *end;
    if (!s || !*s) return dflt;
    long long v = strtoll(s, &end, 10);
    return *end ? dflt : v;
}

void admin_job_key(char *out, const admin *ad, const char *job_id, enum fc_job_key part) {
    fc_key_job(out, FC_KEY_MAX, ad->cfg->queue_prefix, job_id, part);
}

int admin_grow(void **v, size_t n, size_t *cap, size_t sz) {
    if (n < *cap) return FC_OK;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*v, c * sz);
    if (!p) return FC_ENOMEM;
    *v = p;
    *cap = c;
    return FC_OK;
}

const char *admin_json_str(json_object *o, const char *key) {
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) return NULL;
    return json_object_get_string(v);
}

int admin_cmp_ll(long long a, long long b) { return a < b ? -1 : a > b; }

/* The error classes a dead item can carry: fc_pipeline's, and the worker's "poison" (not a batch). */
static const int reason_classes[] = {FC_CLASS_RETRY, FC_CLASS_PERMANENT, FC_CLASS_AUTH, FC_CLASS_CRASHED,
                                     FC_CLASS_CANCELLED};
#define NREASONS (sizeof(reason_classes) / sizeof(reason_classes[0]))

int admin_reason_valid(const char *name) {
    for (size_t i = 0; i < NREASONS; i++)
        if (strcmp(name, fc_class_name(reason_classes[i])) == 0) return 1;
    return strcmp(name, "poison") == 0;
}

const char *admin_reason_list(void) {
    static char list[160];
    if (list[0]) return list;
    size_t n = 0;
    for (size_t i = 0; i < NREASONS; i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s, ", fc_class_name(reason_classes[i]));
    snprintf(list + n, sizeof(list) - n, "poison");
    return list;
}

int admin_reader_start(admin_reader *r, fc_amqp *a, const char *queue) {
    r->seen = 0;
    r->last = admin_mono_s();
    if (r->expected <= 0) return FC_OK;
    return fc_amqp_consume(a, queue, r->expected <= ADMIN_PREFETCH_MAX ? (int)r->expected : 0);
}

int admin_reader_take(admin_reader *r) {
    if (r->seen >= r->expected) return 0;
    r->seen++;
    r->last = admin_mono_s();
    return 1;
}

int admin_reader_done(const admin_reader *r) {
    return r->seen >= r->expected || admin_mono_s() - r->last >= ADMIN_IDLE_S;
}

/* ---- sets of strings ---- */

struct admin_set {
    char **slot;   /* cap entries, NULL = free */
    size_t n, cap; /* cap a power of two, n < cap / 2 */
};

/* fnv1a hashes s (64-bit FNV-1a). */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

admin_set *admin_set_new(void) {
    admin_set *set = calloc(1, sizeof(*set));
    if (set && !(set->slot = calloc(set->cap = 64, sizeof(char *)))) {
        free(set);
        return NULL;
    }
    return set;
}

void admin_set_free(admin_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
    free(set->slot);
    free(set);
}

/* find returns the slot of s, or the free slot where it would go. */
static size_t find(char *const *slot, size_t cap, const char *s) {
    size_t i = (size_t)fnv1a(s) & (cap - 1);
    while (slot[i] && strcmp(slot[i], s) != 0) i = (i + 1) & (cap - 1);
    return i;
}

/* rehash doubles the table: 0 or FC_ENOMEM (the set unchanged). */
static int rehash(admin_set *set) {
    size_t cap = set->cap * 2;
    char **slot = calloc(cap, sizeof(char *));
    if (!slot) return FC_ENOMEM;
    for (size_t i = 0; i < set->cap; i++)
        if (set->slot[i]) slot[find(slot, cap, set->slot[i])] = set->slot[i];
    free(set->slot);
    set->slot = slot;
    set->cap = cap;
    return FC_OK;
}

int admin_set_add(admin_set *set, const char *s) {
    if ((set->n + 1) * 2 > set->cap && rehash(set) != FC_OK) return FC_ENOMEM;
    size_t i = find(set->slot, set->cap, s);
    if (set->slot[i]) return 0;
    if (!(set->slot[i] = strdup(s))) return FC_ENOMEM;
    set->n++;
    return 1;
}

int admin_set_has(const admin_set *set, const char *s) { return set->slot[find(set->slot, set->cap, s)] != NULL; }
