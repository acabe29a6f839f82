/* A mock OpenAI-compatible chat-completions server for integration tests, demos and benchmarks: it answers the
 * flashcard stage-1 and stage-2 prompts with deterministic content and injects latency and faults on demand.
 *
 * Faults, each a per-request probability drawn from seeded dice (the same seed gives the same sequence):
 *   timeout (held timeout_ms, then 504), fail_500, fail_429 (with Retry-After), fail_429_bare (no Retry-After),
 *   malformed (a 200 whose body is not JSON), bad_content (content not the expected JSON/TSV), nul_content,
 *   reset (status, headers and part of the body sent, then the connection reset with an RST),
 *   truncated (a 200 whose Content-Length announces the whole body; part is sent, then the connection closes),
 *   header_only (a stage-2 content holding only the TSV header line; stage 1 answers normally),
 *   hostile (a 200 whose content carries hostile field values, of kind hostile_kind, or one picked by the dice
 *   when it is "mix"):
 *     control  ESC sequences (CSI colour, OSC title ended by BEL), VT, FF, BEL, CR, DEL and the C1 controls
 *              U+0085 and U+009B (as UTF-8) in field values; stage 1 sends them JSON-escaped (\u001b...), which
 *              is legal JSON, stage 2 raw in the TSV fields;
 *     tabs     TAB and LF inside field values: JSON-escaped in stage 1, literal in stage 2 (a row with an extra
 *              column, and a row split in two);
 *     huge     one field value of MOCK_HUGE_FIELD bytes (256 KiB, under the worker's default 1 MiB answer cap);
 *     columns  stage 2: one row of 12 columns and one of 5; stage 1: extra unknown members;
 *     deep     stage 1: the content is JSON nested MOCK_DEEP levels ([[[...]]] or {"a":{"a":...}}, by the
 *              dice); stage 2: a field holding [[[...]]] of that depth;
 *     utf8     invalid UTF-8 (0xff, overlong 0xc0 0xaf, a lone continuation 0x80, a truncated 3-byte sequence)
 *              as raw bytes inside field values, so the HTTP body is JSON around invalid bytes in a string.
 * reject_mod rejects positions divisible by it with a permanent 400. /stats counts each fault and hostile kind;
 * the request log's last column names the fault of each answer.
 *
 * A hidden provider rate limit (hidden_rate calls/s, hidden_burst): one token bucket for the whole process, taken
 * by every chat request before anything else; a request that finds it empty gets an immediate 429
 * (rate_limit_exceeded, no Retry-After), counted as hidden_429 in /stats and named so in the request log. With
 * ratelimit_headers, every chat answer carries OpenAI's x-ratelimit-* headers describing that bucket (and a
 * token-per-minute budget that is reported, never enforced). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fc_buf.h"
#include "fc_error.h"

#define MOCK_CHAT_BODY_MAX (1024 * 1024) /* bytes; larger chat bodies get 413 */
#define MOCK_CTL_BODY_MAX (64 * 1024)    /* bytes; larger /control bodies get 413 */
#define MOCK_JSON_DEPTH 64
#define MOCK_STOP_GRACE_MS 2000 /* how long a graceful stop waits for requests in flight */
#define MOCK_STATUS_MAX 600
#define MOCK_ANSWER_MAX (64LL * 1024 * 1024) /* bytes; the largest answer_bytes */

/* ---------------------------------------------------------------------------------------------------------------
 * Configuration: one table row per setting, shared by the command line and POST /control.
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct mock_config {
    long long latency_ms;   /* base latency added to every chat answer, ms */
    long long jitter_ms;    /* uniform extra latency 0..jitter_ms, ms */
    long long retry_after;  /* Retry-After of a 429, s */
    long long timeout_ms;   /* how long a "timeout" fault holds the request before its 504, ms */
    long long reject_mod;   /* positions divisible by it always get 400; 0 = off */
    long long fail_all_500; /* bool */
    long long once_429;     /* bool; cleared by the first request that consumes it */
    long long fail_all_status; /* answer every chat request with this status; 0 = off, else 400..599 */
    long long answer_bytes; /* pad each 200 answer's content so the whole body is this many bytes; 0 = off */
    long long seed;         /* fault dice seed; setting it restarts the dice sequence */
    long long port;         /* 0 = any free port */
    long long threads;      /* MHD worker threads; 0 = one per CPU */
    long long max_connections; /* MHD's connection limit; 0 = what the open-files limit allows */
    double hidden_rate;          /* the hidden limit's refill, calls/s; 0 = off */
    long long hidden_burst;      /* its bucket's capacity, calls; 0 = hidden_rate rounded up (at least 1) */
    long long ratelimit_headers; /* 0/1: x-ratelimit-* headers on every chat answer (needs hidden_rate) */
    double fail_500, fail_429, malformed, bad_content, timeout, nul_content; /* per-request probabilities */
    double fail_429_bare, reset, truncated, header_only, hostile;            /* per-request probabilities */
    char hostile_kind[16]; /* "mix" or one of mock_hostile_names */
    char api_key[256];  /* "" = no authorization required */
    char bind[64];      /* numeric IPv4 or IPv6 address */
    char log[1024];     /* request log path, "" = none */
    char port_file[1024];
    char tls_cert[1024]; /* PEM certificate (chain) file: serve HTTPS; "" = plain HTTP */
    char tls_key[1024];  /* PEM private key file of tls_cert */
} mock_config;

enum mock_opt_type { MOCK_INT, MOCK_RATE, MOCK_BOOL, MOCK_STR, MOCK_NUM }; /* NUM: a double in min..max */

typedef struct mock_opt {
    const char *name; /* the /control key; the flag is --name with '_' -> '-' */
    int type;
    size_t off;       /* offset of the field in mock_config */
    size_t size;      /* MOCK_STR: buffer size */
    long long min, max;
    int runtime;      /* may be changed through POST /control */
    const char *def;
    const char *help;
} mock_opt;

#define MOCK_FIELD_SIZE(f) sizeof(((mock_config *)0)->f)
#define OPT_I(f, lo, hi, rt, d, h) {#f, MOCK_INT, offsetof(mock_config, f), 0, lo, hi, rt, d, h}
#define OPT_R(f, d, h) {#f, MOCK_RATE, offsetof(mock_config, f), 0, 0, 0, 1, d, h}
#define OPT_B(f, h) {#f, MOCK_BOOL, offsetof(mock_config, f), 0, 0, 1, 1, "0", h}
#define OPT_S(f, rt, d, h) {#f, MOCK_STR, offsetof(mock_config, f), MOCK_FIELD_SIZE(f), 0, 0, rt, d, h}
#define OPT_N(f, lo, hi, d, h) {#f, MOCK_NUM, offsetof(mock_config, f), 0, lo, hi, 1, d, h}

static const mock_opt mock_opts[] = {
    OPT_I(port, 0, 65535, 0, "0", "TCP port; 0 picks a free one"),
    OPT_S(bind, 0, "127.0.0.1", "numeric address to listen on"),
    OPT_S(port_file, 0, "", "write the chosen port to this file once listening"),
    OPT_S(log, 0, "",
          "append one line per chat request: arrival_ms status stage position user_agent elapsed_ms elapsed_us "
          "fault ('-' for none, hidden_429 for the hidden limit)"),
    OPT_I(threads, 0, 64, 0, "0", "worker threads (0 = one per CPU)"),
    OPT_I(max_connections, 0, 1000000, 0, "0",
          "connections held at once (0 = the open-files limit, raised to its hard limit, less 64)"),
    OPT_S(tls_cert, 0, "", "serve HTTPS (HTTP/1.1, GnuTLS) with this PEM certificate chain; needs --tls-key"),
    OPT_S(tls_key, 0, "", "PEM private key of --tls-cert"),
    OPT_S(api_key, 1, "", "require 'Authorization: Bearer KEY' (empty = no check)"),
    OPT_I(seed, 0, INT64_MAX, 1, "1", "seed of the fault dice"),
    OPT_I(latency_ms, 0, 600000, 1, "0", "base latency of every chat answer, ms"),
    OPT_I(jitter_ms, 0, 600000, 1, "0", "uniform extra latency 0..N ms"),
    OPT_R(fail_500, "0", "probability of a 500"),
    OPT_R(fail_429, "0", "probability of a 429 with Retry-After"),
    OPT_I(retry_after, 0, 86400, 1, "1", "Retry-After seconds sent with a 429"),
    OPT_R(malformed, "0", "probability of a 200 whose body is not valid JSON"),
    OPT_R(bad_content, "0", "probability of a 200 whose content is not the expected JSON/TSV"),
    OPT_R(timeout, "0", "probability of holding the request timeout_ms, then answering 504"),
    OPT_I(timeout_ms, 0, 600000, 1, "30000", "hold time of a timeout fault, ms"),
    OPT_I(reject_mod, 0, 1000000000, 1, "0", "positions divisible by M always get 400 (0 = off)"),
    OPT_B(fail_all_500, "answer every chat request with 500"),
    OPT_B(once_429, "answer the next chat request with 429, then behave normally"),
    OPT_I(fail_all_status, 0, 599, 1, "0",
          "answer every chat request with this status, 400..599 (401/403: auth error, 429: Retry-After; 0 = off)"),
    OPT_R(nul_content, "0", "probability of a 200 whose content holds a NUL byte (sent as \\u0000)"),
    OPT_I(answer_bytes, 0, MOCK_ANSWER_MAX, 1, "0",
          "pad the content of each 200 answer with spaces so the whole body is N bytes (0 = off)"),
    OPT_R(fail_429_bare, "0", "probability of a 429 without Retry-After"),
    OPT_R(reset, "0", "probability of a 200 cut after the headers and part of the body by a connection reset (RST)"),
    OPT_R(truncated, "0",
          "probability of a 200 whose Content-Length announces the whole body; part is sent, then the connection "
          "closes"),
    OPT_R(header_only, "0", "probability of a stage-2 content holding only the TSV header line (stage 1: normal)"),
    OPT_R(hostile, "0", "probability of a 200 whose content is hostile (kinds below)"),
    OPT_S(hostile_kind, 1, "mix", "kind of a hostile answer: control, tabs, huge, columns, deep, utf8, or mix (dice)"),
    OPT_N(hidden_rate, 0, 1000000, "0",
          "hidden provider limit: calls/s refilling one token bucket; an empty bucket answers 429 (0 = off)"),
    OPT_I(hidden_burst, 0, 100000000, 1, "0", "capacity of the hidden limit's bucket, calls (0 = hidden-rate)"),
    OPT_I(ratelimit_headers, 0, 1, 1, "0",
          "1: send OpenAI's x-ratelimit-* headers with every chat answer (needs --hidden-rate); 0: none"),
};
#define MOCK_NOPTS (sizeof mock_opts / sizeof mock_opts[0])

/* ---------------------------------------------------------------------------------------------------------------
 * Faults and hostile kinds: one X-macro each gives the enum and the names used by /stats and the request log.
 * The faults the dice pick come first, in the order their rates partition [0,1) (new ones go last, so that an
 * old configuration draws the same sequence); the forced ones follow.
 * ------------------------------------------------------------------------------------------------------------- */

#define MOCK_FAULTS(X)                                                                                               \
    X(NONE, "none") X(TIMEOUT, "timeout") X(500, "fail_500") X(429, "fail_429") X(MALFORMED, "malformed")             \
    X(BAD_CONTENT, "bad_content") X(NUL_CONTENT, "nul_content") X(429_BARE, "fail_429_bare") X(RESET, "reset")       \
    X(TRUNCATED, "truncated") X(HEADER_ONLY, "header_only") X(HOSTILE, "hostile") X(REJECT, "reject")              \
    X(STATUS, "fail_all_status") X(HIDDEN_429, "hidden_429")
#define MOCK_FAULT_ENUM(n, s) FAULT_##n,
#define MOCK_NAME(n, s) s,
enum mock_fault { MOCK_FAULTS(MOCK_FAULT_ENUM) FAULT_COUNT };
static const char *const mock_fault_names[] = {MOCK_FAULTS(MOCK_NAME)};

#define MOCK_HOSTILE_KINDS(X)                                                                                        \
    X(CONTROL, "control") X(TABS, "tabs") X(HUGE, "huge") X(COLUMNS, "columns") X(DEEP, "deep") X(UTF8, "utf8")
#define MOCK_HOSTILE_ENUM(n, s) HOSTILE_##n,
enum mock_hostile { MOCK_HOSTILE_KINDS(MOCK_HOSTILE_ENUM) HOSTILE_COUNT };
static const char *const mock_hostile_names[] = {MOCK_HOSTILE_KINDS(MOCK_NAME)};
#define HOSTILE_MIX (-1)

/* mock_hostile_of returns the kind named name, HOSTILE_MIX for "mix", or -2 for an unknown name. */
static int mock_hostile_of(const char *name) {
    if (strcmp(name, "mix") == 0) return HOSTILE_MIX;
    for (int i = 0; i < HOSTILE_COUNT; i++)
        if (strcmp(name, mock_hostile_names[i]) == 0) return i;
    return -2;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Process state.
 * ------------------------------------------------------------------------------------------------------------- */

static pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;
static mock_config g_cfg; /* guarded by g_cfg_mu */
static int g_log_fd = -1;
static volatile sig_atomic_t g_stop;

static struct {
    atomic_ullong requests, in_flight, stage1, stage2, prompt_tokens, completion_tokens;
    atomic_ullong max_call_tokens; /* the most tokens (prompt + completion) one answer reported */
    atomic_ullong connections;      /* accepted (with TLS: one handshake each) */
    atomic_ullong connections_open; /* open now */
    atomic_ullong connections_max;  /* most open at once */
    atomic_ullong by_status[MOCK_STATUS_MAX];
    atomic_ullong by_fault[FAULT_COUNT];     /* answers per fault (FAULT_NONE: normal ones), counted when planned */
    atomic_ullong by_hostile[HOSTILE_COUNT]; /* hostile answers per kind */
    atomic_ullong hidden_ok, hidden_429; /* chat requests the hidden limit let through / answered 429 */
    atomic_ullong seq;   /* chat request ids */
    atomic_ullong draws; /* index into the fault dice sequence */
} g_stats;

/* ---------------------------------------------------------------------------------------------------------------
 * Small helpers.
 * ------------------------------------------------------------------------------------------------------------- */

static uint64_t mock_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long long mock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mock_splitmix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* mock_dice returns a uniform number in [0,1) for draw n, die k of the given seed (deterministic). */
static double mock_dice(long long seed, uint64_t n, unsigned k) {
    uint64_t r = mock_splitmix(mock_splitmix((uint64_t)seed) ^ (n * 4 + k));
    return (double)(r >> 11) * 0x1.0p-53;
}

static uint32_t mock_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* mock_json_strn appends s[0..n) as a JSON string literal (UTF-8 passes through, a NUL byte becomes \u0000 as a
 * real server would send it); returns 0 or FC_ENOMEM. */
static int mock_json_strn(fc_buf *b, const char *s, size_t n) {
    int rc = fc_buf_puts(b, "\"");
    for (const char *p = s; rc == 0 && p < s + n; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') rc = fc_buf_printf(b, "\\%c", ch);
        else if (ch == '\n') rc = fc_buf_puts(b, "\\n");
        else if (ch == '\t') rc = fc_buf_puts(b, "\\t");
        else if (ch < 0x20) rc = fc_buf_printf(b, "\\u%04x", ch);
        else rc = fc_buf_append(b, p, 1);
    }
    return rc ? rc : fc_buf_puts(b, "\"");
}

static int mock_json_str(fc_buf *b, const char *s) { return mock_json_strn(b, s, strlen(s)); }

/* mock_tsv_field appends s with tabs and line breaks replaced by spaces; returns 0 or FC_ENOMEM. */
static int mock_tsv_field(fc_buf *b, const char *s) {
    int rc = 0;
    for (const char *p = s; rc == 0 && *p; p++) {
        char ch = (*p == '\t' || *p == '\n' || *p == '\r') ? ' ' : *p;
        rc = fc_buf_append(b, &ch, 1);
    }
    return rc;
}

/* mock_json_parse parses a NUL-terminated buffer of len bytes strictly; returns an owned object or NULL. */
static json_object *mock_json_parse(const char *s, size_t len) {
    json_tokener *tok = json_tokener_new_ex(MOCK_JSON_DEPTH);
    if (!tok) return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, s, (int)len + 1);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Option parsing and /control.
 * ------------------------------------------------------------------------------------------------------------- */

static const mock_opt *mock_opt_find(const char *name) {
    for (size_t i = 0; i < MOCK_NOPTS; i++)
        if (strcmp(mock_opts[i].name, name) == 0) return &mock_opts[i];
    return NULL;
}

static int mock_parse_bool(const char *v, long long *out) {
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0) return *out = 0, 0;
    }
    return FC_EINVAL;
}

/* mock_opt_set stores the text value v into cfg; returns 0, or FC_EINVAL with the rule written to err. */
static int mock_opt_set(mock_config *cfg, const mock_opt *o, const char *v, char *err, size_t errlen) {
    char *end = NULL, *field = (char *)cfg + o->off;
    errno = 0;
    if (o->type == MOCK_INT) {
        long long x = strtoll(v, &end, 10);
        if (*v && !*end && !errno && x >= o->min && x <= o->max) return memcpy(field, &x, sizeof x), 0;
        snprintf(err, errlen, "%s: expected an integer in %lld..%lld, got '%s'", o->name, o->min, o->max, v);
    } else if (o->type == MOCK_RATE) {
        double x = strtod(v, &end);
        if (*v && !*end && !errno && isfinite(x) && x >= 0 && x <= 1) return memcpy(field, &x, sizeof x), 0;
        snprintf(err, errlen, "%s: expected a probability in 0..1, got '%s'", o->name, v);
    } else if (o->type == MOCK_NUM) {
        double x = strtod(v, &end);
        if (*v && !*end && !errno && isfinite(x) && x >= (double)o->min && x <= (double)o->max)
            return memcpy(field, &x, sizeof x), 0;
        snprintf(err, errlen, "%s: expected a number in %lld..%lld, got '%s'", o->name, o->min, o->max, v);
    } else if (o->type == MOCK_BOOL) {
        long long x;
        if (mock_parse_bool(v, &x) == 0) return memcpy(field, &x, sizeof x), 0;
        snprintf(err, errlen, "%s: expected true/false/1/0, got '%s'", o->name, v);
    } else {
        if (strlen(v) < o->size) return memcpy(field, v, strlen(v) + 1), 0;
        snprintf(err, errlen, "%s: longer than %zu bytes", o->name, o->size - 1);
    }
    return FC_EINVAL;
}

/* mock_json_to_text renders a JSON scalar as the text mock_opt_set expects; returns 0 or FC_EINVAL. */
static int mock_json_to_text(json_object *v, const mock_opt *o, char *out, size_t outlen) {
    switch (json_object_get_type(v)) {
    case json_type_int: snprintf(out, outlen, "%" PRId64, json_object_get_int64(v)); return 0;
    case json_type_double: snprintf(out, outlen, "%.17g", json_object_get_double(v)); return 0;
    case json_type_boolean: snprintf(out, outlen, "%d", json_object_get_boolean(v) ? 1 : 0); return 0;
    case json_type_string: snprintf(out, outlen, "%s", json_object_get_string(v)); return 0;
    case json_type_null:
        if (o->type != MOCK_STR) return FC_EINVAL;
        out[0] = '\0';
        return 0;
    default: return FC_EINVAL;
    }
}

/* mock_config_rules checks what one option's range cannot say; returns 0 or FC_EINVAL with the rule in err. */
static int mock_config_rules(const mock_config *cfg, char *err, size_t errlen) {
    if (mock_hostile_of(cfg->hostile_kind) == -2) {
        snprintf(err, errlen, "hostile_kind: expected mix, control, tabs, huge, columns, deep or utf8, got '%s'",
                 cfg->hostile_kind);
        return FC_EINVAL;
    }
    if (cfg->ratelimit_headers && cfg->hidden_rate <= 0) {
        snprintf(err, errlen, "ratelimit_headers: the headers describe the hidden limit; set hidden_rate too");
        return FC_EINVAL;
    }
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(err, errlen, "tls_cert and tls_key: give both (HTTPS) or neither (plain HTTP)");
        return FC_EINVAL;
    }
    if (cfg->fail_all_status == 0 || cfg->fail_all_status >= 400) return 0;
    snprintf(err, errlen, "fail_all_status: expected 0 (off) or a status in 400..599, got %lld", cfg->fail_all_status);
    return FC_EINVAL;
}

static void mock_stats_reset(void) {
    atomic_store(&g_stats.requests, 0);
    atomic_store(&g_stats.stage1, 0);
    atomic_store(&g_stats.stage2, 0);
    atomic_store(&g_stats.prompt_tokens, 0);
    atomic_store(&g_stats.completion_tokens, 0);
    atomic_store(&g_stats.max_call_tokens, 0);
    for (int i = 0; i < MOCK_STATUS_MAX; i++) atomic_store(&g_stats.by_status[i], 0);
    for (int i = 0; i < FAULT_COUNT; i++) atomic_store(&g_stats.by_fault[i], 0);
    for (int i = 0; i < HOSTILE_COUNT; i++) atomic_store(&g_stats.by_hostile[i], 0);
    atomic_store(&g_stats.hidden_ok, 0);
    atomic_store(&g_stats.hidden_429, 0);
    atomic_store(&g_stats.connections, 0);
    atomic_store(&g_stats.connections_max, atomic_load(&g_stats.connections_open));
}

/* mock_control_apply validates every key of obj into a copy of the configuration and commits only if all are
 * valid; returns 0 or FC_EINVAL with the reason in err. */
static int mock_control_apply(json_object *obj, char *err, size_t errlen) {
    mock_config next;
    char text[1100];
    int reset = 0;
    pthread_mutex_lock(&g_cfg_mu);
    next = g_cfg;
    json_object_object_foreach(obj, key, val) {
        const mock_opt *o = mock_opt_find(key);
        int rc = FC_EINVAL;
        if (strcmp(key, "reset_stats") == 0) {
            reset = json_object_get_boolean(val);
            continue;
        }
        if (!o || !o->runtime) snprintf(err, errlen, "%s: unknown or not changeable at runtime", key);
        else if (mock_json_to_text(val, o, text, sizeof text) != 0) snprintf(err, errlen, "%s: bad JSON type", key);
        else rc = mock_opt_set(&next, o, text, err, errlen);
        if (rc != 0) return pthread_mutex_unlock(&g_cfg_mu), FC_EINVAL;
    }
    if (mock_config_rules(&next, err, errlen) != 0) return pthread_mutex_unlock(&g_cfg_mu), FC_EINVAL;
    if (json_object_object_get_ex(obj, "seed", NULL)) atomic_store(&g_stats.draws, 0); /* restart the dice */
    g_cfg = next;
    pthread_mutex_unlock(&g_cfg_mu);
    if (reset) mock_stats_reset();
    return 0;
}

static void mock_config_get(mock_config *out) {
    pthread_mutex_lock(&g_cfg_mu);
    *out = g_cfg;
    pthread_mutex_unlock(&g_cfg_mu);
}

/* mock_take_once_429 returns 1 exactly once after once_429 was set, else 0. */
static int mock_take_once_429(void) {
    pthread_mutex_lock(&g_cfg_mu);
    int took = g_cfg.once_429 != 0;
    g_cfg.once_429 = 0;
    pthread_mutex_unlock(&g_cfg_mu);
    return took;
}

/* mock_config_json appends the runtime settings as a JSON object; the API key itself is never shown. */
static int mock_config_json(fc_buf *b) {
    mock_config c;
    mock_config_get(&c);
    int rc = fc_buf_puts(b, "{");
    for (size_t i = 0; rc == 0 && i < MOCK_NOPTS; i++) {
        const mock_opt *o = &mock_opts[i];
        const char *f = (const char *)&c + o->off;
        if (!o->runtime) continue;
        if (o->type == MOCK_STR && o->off == offsetof(mock_config, hostile_kind))
            rc = fc_buf_printf(b, "\"%s\":\"%s\",", o->name, f); /* validated: a plain word */
        else if (o->type == MOCK_STR) rc = fc_buf_printf(b, "\"%s_set\":%s,", o->name, *f ? "true" : "false");
        else if (o->type == MOCK_RATE) rc = fc_buf_printf(b, "\"%s\":%g,", o->name, *(const double *)(const void *)f);
        else if (o->type == MOCK_NUM) rc = fc_buf_printf(b, "\"%s\":%.10g,", o->name, *(const double *)(const void *)f);
        else if (o->type == MOCK_BOOL)
            rc = fc_buf_printf(b, "\"%s\":%s,", o->name, *(const long long *)(const void *)f ? "true" : "false");
        else rc = fc_buf_printf(b, "\"%s\":%lld,", o->name, *(const long long *)(const void *)f);
    }
    if (rc == 0) b->data[b->len - 1] = '}';
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------------
 * The prompt: what a chat request asks for.
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct mock_prompt {
    json_object *root;  /* owned: the request body */
    json_object *user;  /* owned: the user message parsed as JSON, NULL if it is not a JSON object */
    const char *model;  /* borrowed from root */
    const char *term;   /* borrowed from user; NULL when the prompt holds no item (stage 0) */
    const char *type;   /* borrowed from user; "" if absent */
    long long position; /* 0 if absent */
    int stage;          /* 1, 2, or 0 */
} mock_prompt;

static void mock_prompt_free(mock_prompt *p) {
    json_object_put(p->user);
    json_object_put(p->root);
    memset(p, 0, sizeof *p);
}

/* mock_user_text returns the content of the last user message (borrowed from msgs), or NULL. */
static const char *mock_user_text(json_object *msgs, size_t *len) {
    for (size_t i = json_object_array_length(msgs); i-- > 0;) {
        json_object *m = json_object_array_get_idx(msgs, i), *role, *content;
        if (!json_object_is_type(m, json_type_object) || !json_object_object_get_ex(m, "role", &role) ||
            strcmp(json_object_get_string(role), "user") != 0 || !json_object_object_get_ex(m, "content", &content))
            continue;
        if (!json_object_is_type(content, json_type_string)) return NULL;
        *len = (size_t)json_object_get_string_len(content);
        return json_object_get_string(content);
    }
    return NULL;
}

static long long mock_position_of(json_object *user) {
    json_object *v;
    if (!json_object_object_get_ex(user, "position", &v)) return 0;
    if (json_object_is_type(v, json_type_int)) return json_object_get_int64(v);
    if (json_object_is_type(v, json_type_string)) return strtoll(json_object_get_string(v), NULL, 10);
    return 0;
}

/* mock_prompt_item reads position, term and stage from the user message; a non-item message leaves stage 0. */
static void mock_prompt_item(mock_prompt *p, const char *text, size_t len) {
    json_object *v;
    p->type = "";
    p->user = mock_json_parse(text, len);
    if (!json_object_is_type(p->user, json_type_object) || !json_object_object_get_ex(p->user, "term", &v) ||
        !json_object_is_type(v, json_type_string))
        return;
    p->term = json_object_get_string(v);
    p->position = mock_position_of(p->user);
    p->stage = json_object_object_get_ex(p->user, "stage1_result", NULL) ? 2 : 1;
    if (json_object_object_get_ex(p->user, "type", &v) && json_object_is_type(v, json_type_string))
        p->type = json_object_get_string(v);
}

/* mock_prompt_parse parses a chat body; returns 0, or FC_EPARSE with *why set to a static reason. */
static int mock_prompt_parse(mock_prompt *p, const char *body, size_t len, const char **why) {
    json_object *model, *msgs;
    const char *text;
    size_t tlen = 0;
    memset(p, 0, sizeof *p);
    p->root = mock_json_parse(body, len);
    if (!json_object_is_type(p->root, json_type_object)) *why = "We could not parse the JSON body of your request.";
    else if (!json_object_object_get_ex(p->root, "model", &model) || !json_object_is_type(model, json_type_string))
        *why = "you must provide a model parameter";
    else if (!json_object_object_get_ex(p->root, "messages", &msgs) || !json_object_is_type(msgs, json_type_array) ||
             json_object_array_length(msgs) == 0)
        *why = "'messages' is a required property and must be a non-empty array";
    else if (!(text = mock_user_text(msgs, &tlen))) *why = "'messages' must hold a user message with string content";
    else {
        p->model = json_object_get_string(model);
        mock_prompt_item(p, text, tlen);
        return 0;
    }
    mock_prompt_free(p);
    return FC_EPARSE;
}

/* ---------------------------------------------------------------------------------------------------------------
 * Deterministic answers.
 * ------------------------------------------------------------------------------------------------------------- */

static const char *const mock_pos[] = {"noun", "verb", "adjective", "adverb", "interjection", "expression"};
static const char *const mock_nouns[] = {"lantern", "river", "kettle", "bicycle", "umbrella", "drum", "kite", "bell"};
static const char *const mock_actions[] = {"glowing", "flowing", "whistling", "rolling", "opening", "echoing"};
static const char *const mock_places[] = {"front door", "kitchen", "balcony", "bus stop", "garden", "library"};
static const char *const mock_senses[] = {"warm to the touch", "smells of rain", "rings softly", "tastes sweet"};
static const char *const mock_ko[] = {"장면", "기억", "사용", "비교", "인사", "표현", "연습", "단어"};
static const char *const mock_honor[] = {"formal", "polite", "casual"};
#define PICK(tab, h) (tab[(h) % (sizeof tab / sizeof tab[0])])

/* Hostile field values (NUL-free). A hex escape takes every hex digit after it, hence the split literals. */
static const char mock_hostile_control[] = " \x1b[31mred\x1b[0m \x1b]0;title\x07 vt\v ff\f bel\a cr\r del\x7f"
                                           " nel\xc2\x85 csi\xc2\x9b" "1m end";
static const char mock_hostile_tabs[] = " left\tright\nnext line";
static const char mock_hostile_utf8[] = " ff\xff overlong\xc0\xaf lone\x80 cut\xe2\x82 end";
#define MOCK_HUGE_FIELD (256 * 1024) /* bytes; the worker reads answers up to 1 MiB by default */
#define MOCK_DEEP 5000               /* nesting levels of a deep answer */

/* mock_deep appends JSON nested MOCK_DEEP levels: [[[...]]] (object 0) or {"a":{"a":...1...}} (object 1). */
static int mock_deep(fc_buf *b, int object) {
    int rc = fc_buf_reserve(b, MOCK_DEEP * (object ? 6 : 2) + 1);
    for (int i = 0; rc == 0 && i < MOCK_DEEP; i++) rc = fc_buf_puts(b, object ? "{\"a\":" : "[");
    if (object) rc = rc ? rc : fc_buf_puts(b, "1");
    for (int i = 0; rc == 0 && i < MOCK_DEEP; i++) rc = fc_buf_puts(b, object ? "}" : "]");
    return rc;
}

/* mock_hostile_value appends the hostile text a field value carries for kind (nothing for columns, or no kind). */
static int mock_hostile_value(fc_buf *b, int kind) {
    static const char huge[] = " huge field";
    switch (kind) {
    case HOSTILE_CONTROL: return fc_buf_puts(b, mock_hostile_control);
    case HOSTILE_TABS: return fc_buf_puts(b, mock_hostile_tabs);
    case HOSTILE_UTF8: return fc_buf_puts(b, mock_hostile_utf8);
    case HOSTILE_DEEP: return fc_buf_puts(b, " ") ? FC_ENOMEM : mock_deep(b, 0);
    case HOSTILE_HUGE: {
        size_t end = b->len + MOCK_HUGE_FIELD;
        int rc = fc_buf_reserve(b, MOCK_HUGE_FIELD);
        while (rc == 0 && b->len + sizeof huge - 1 <= end) rc = fc_buf_puts(b, huge);
        return rc ? rc : fc_buf_append(b, huge, end - b->len);
    }
    default: return 0;
    }
}

/* mock_stage1_meaning appends the primary_meaning member's value, carrying the hostile value of kind. */
static int mock_stage1_meaning(fc_buf *b, uint32_t h, int kind) {
    fc_buf v = {0};
    int rc = fc_buf_printf(&v, "mock meaning %04x", h & 0xffff);
    rc = rc ? rc : mock_hostile_value(&v, kind);
    rc = rc ? rc : mock_json_strn(b, v.data, v.len); /* controls JSON-escaped, bytes >= 0x80 raw */
    fc_buf_free(&v);
    return rc;
}

/* mock_stage1_json appends the stage-1 JSON object for the item, with the hostile values of kind (-1: none);
 * returns 0 or FC_ENOMEM. */
static int mock_stage1_json(fc_buf *b, const mock_prompt *p, int kind) {
    uint32_t h = mock_hash(p->term);
    const char *noun = PICK(mock_nouns, h), *act = PICK(mock_actions, h >> 3), *place = PICK(mock_places, h >> 6);
    int rc = fc_buf_printf(b, "{\"term_number\":%lld,\"term\":", p->position);
    rc = rc ? rc : mock_json_str(b, p->term);
    rc = rc ? rc : fc_buf_printf(b, ",\"ipa\":\"/mock.%08x/\",\"pos\":", h);
    rc = rc ? rc : mock_json_str(b, *p->type ? p->type : PICK(mock_pos, h >> 9));
    rc = rc ? rc : fc_buf_puts(b, ",\"primary_meaning\":");
    rc = rc ? rc : mock_stage1_meaning(b, h, kind);
    rc = rc ? rc : fc_buf_puts(b, ",");
    rc = rc ? rc : fc_buf_printf(b, "\"other_meanings\":[\"mock sense %u\",\"mock sense %u\"],", h % 97, h % 89);
    rc = rc ? rc : fc_buf_printf(b, "\"metaphor\":\"a %s %s by the %s\",", act, noun, place);
    rc = rc ? rc : fc_buf_printf(b, "\"metaphor_noun\":\"%s\",\"metaphor_action\":\"%s\",", noun, act);
    rc = rc ? rc : fc_buf_printf(b, "\"suggested_location\":\"%s\",\"anchor_object\":\"%s\",", place, noun);
    rc = rc ? rc : fc_buf_printf(b, "\"anchor_sensory\":\"the %s %s\",", noun, PICK(mock_senses, h >> 12));
    rc = rc ? rc : fc_buf_printf(b, "\"explanation\":\"The %s %s links the sound to the meaning.\",", noun, act);
    rc = rc ? rc : fc_buf_puts(b, "\"usage_context\":\"Used in everyday conversation (mock).\",\"comparison\":");
    const char *similar = PICK(mock_ko, h >> 15), *homonym = PICK(mock_ko, h >> 18);
    if (h & 1) rc = rc ? rc : fc_buf_printf(b, "{\"similar_term\":\"%s\",\"difference\":\"mock nuance\"}", similar);
    else rc = rc ? rc : fc_buf_puts(b, "\"Compared with a near synonym, it is more neutral (mock).\"");
    rc = rc ? rc : fc_buf_puts(b, ",\"homonyms\":[");
    if (h & 2) rc = rc ? rc : fc_buf_printf(b, "{\"term\":\"%s\",\"meaning\":\"mock homonym\"}", homonym);
    rc = rc ? rc : fc_buf_puts(b, "],\"korean_keywords\":[");
    rc = rc ? rc : mock_json_str(b, p->term);
    rc = rc ? rc : fc_buf_printf(b, ",\"%s\",\"%s\"]", PICK(mock_ko, h >> 21), PICK(mock_ko, h >> 24));
    if (kind == HOSTILE_COLUMNS) /* the JSON form of extra columns: members nobody asked for */
        rc = rc ? rc : fc_buf_puts(b, ",\"extra_1\":\"unexpected\",\"extra_2\":[1,2,3],\"extra_3\":{\"x\":null}");
    return rc ? rc : fc_buf_puts(b, "}");
}

static const char mock_tsv_header[] =
    "position\tterm\tterm_number\ttab_name\tprimer\tfront\tback\ttags\thonorific_level";

/* mock_stage2_row appends one TSV card row (with its leading newline), with the hostile values of kind (-1:
 * none) written raw into the back field (huge: the first row only; columns: the first row gets 12 columns, the
 * second 5); returns 0 or FC_ENOMEM. */
static int mock_stage2_row(fc_buf *b, const mock_prompt *p, uint32_t h, int second, int kind) {
    const char *noun = PICK(mock_nouns, h), *place = PICK(mock_places, h >> 6);
    int rc = fc_buf_printf(b, "\n%lld\t", p->position);
    rc = rc ? rc : mock_tsv_field(b, p->term);
    rc = rc ? rc : fc_buf_printf(b, "\t%lld\t%s\t", p->position, second ? "Usage-Comparison" : "Scene");
    if (kind == HOSTILE_COLUMNS && second) return rc ? rc : fc_buf_puts(b, "Compare it (5 columns only).");
    if (!second) rc = rc ? rc : fc_buf_printf(b, "Picture the %s at the %s.\tWhat does ", noun, place);
    else rc = rc ? rc : fc_buf_printf(b, "Compare it with %s.\tHow is ", PICK(mock_ko, h >> 15));
    rc = rc ? rc : mock_tsv_field(b, p->term);
    rc = rc ? rc : fc_buf_printf(b, second ? " used?\tmock usage note %04x" : " mean?\tmock meaning %04x", h & 0xffff);
    if (kind != HOSTILE_HUGE || !second) rc = rc ? rc : mock_hostile_value(b, kind);
    rc = rc ? rc : fc_buf_printf(b, "\tkorean mock %s\t%s", second ? "usage" : "scene", PICK(mock_honor, h >> 4));
    if (kind == HOSTILE_COLUMNS) rc = rc ? rc : fc_buf_puts(b, "\textra 10\textra 11\textra 12");
    return rc;
}

/* mock_content appends the assistant content for a prompt, honouring the fence rules and the content faults:
 * bad_content, header_only, hostile of kind (-1: none; variant picks the deep form). */
static int mock_content(fc_buf *b, const mock_prompt *p, int fault, int kind, int variant) {
    uint32_t h = p->term ? mock_hash(p->term) : 0;
    int fence = (p->stage == 1 && p->position % 3 == 0) || (p->stage == 2 && p->position % 4 == 0), rc = 0;
    int bad = fault == FAULT_BAD_CONTENT, rows = !bad && fault != FAULT_HEADER_ONLY;
    if (p->stage == 0 || (bad && p->stage == 1))
        return fc_buf_puts(b, "I'm sorry, but I can't produce a structured answer for this request right now.");
    if (fence) rc = fc_buf_puts(b, p->stage == 1 ? "```json\n" : "```\n");
    if (p->stage == 1 && kind == HOSTILE_DEEP) rc = rc ? rc : mock_deep(b, variant);
    else if (p->stage == 1) rc = rc ? rc : mock_stage1_json(b, p, kind);
    else rc = rc ? rc : fc_buf_puts(b, mock_tsv_header);
    if (p->stage == 2 && rows) {
        rc = rc ? rc : mock_stage2_row(b, p, h, 0, kind);
        rc = rc ? rc : mock_stage2_row(b, p, h, 1, kind);
    }
    if (fence) rc = rc ? rc : fc_buf_puts(b, "\n```");
    return rc;
}

/* mock_envelope appends an OpenAI chat.completion body holding content[0..clen); usage is derived from the byte
 * counts. */
static int mock_envelope(fc_buf *b, unsigned long long id, const char *model, const char *content, size_t clen,
                         size_t body_len, unsigned long long *pt, unsigned long long *ct) {
    *pt = (body_len + 3) / 4;
    *ct = (clen + 3) / 4;
    int rc = fc_buf_printf(b, "{\"id\":\"mock-%llu\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", id,
                           (long long)time(NULL));
    rc = rc ? rc : mock_json_str(b, model);
    rc = rc ? rc : fc_buf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    rc = rc ? rc : mock_json_strn(b, content, clen);
    rc = rc ? rc : fc_buf_printf(b, "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%llu,"
                                    "\"completion_tokens\":%llu,\"total_tokens\":%llu}}", *pt, *ct, *pt + *ct);
    return rc;
}

/* mock_error_body replaces b with an OpenAI-style error object; code may be NULL (JSON null). */
static void mock_error_body(fc_buf *b, const char *msg, const char *type, const char *code) {
    fc_buf_reset(b);
    fc_buf_puts(b, "{\"error\":{\"message\":");
    mock_json_str(b, msg);
    fc_buf_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":", type);
    if (code) fc_buf_printf(b, "\"%s\"}}", code);
    else fc_buf_puts(b, "null}}");
}

/* ---------------------------------------------------------------------------------------------------------------
 * The hidden rate limit: one continuous token bucket per process, as a provider keeps per API key.
 * ------------------------------------------------------------------------------------------------------------- */

#define MOCK_TOKEN_LIMIT 1000000LL /* the reported token budget, tokens per minute (never enforced) */

/* What the x-ratelimit-* headers of one answer say, as the bucket stood after that request. */
typedef struct mock_rl {
    int set;                      /* send the headers */
    long long limit_requests;     /* the bucket's capacity, calls */
    long long remaining_requests; /* whole calls left after this request */
    double reset_requests_ms;     /* until the bucket is full again */
    long long remaining_tokens;   /* of MOCK_TOKEN_LIMIT, after this answer's usage */
    double reset_tokens_ms;       /* until the token budget is full again */
} mock_rl;

static struct {
    pthread_mutex_t mu;
    double rate, cap;   /* the settings the state below was filled for; a change refills the bucket */
    double calls;       /* calls left, 0..cap */
    double tokens;      /* API tokens left, 0..MOCK_TOKEN_LIMIT */
    uint64_t last_ns;   /* monotonic time both were last brought up to date */
} g_bucket = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* mock_bucket_cap returns the capacity of the hidden limit's bucket for cfg, in calls. */
static double mock_bucket_cap(const mock_config *cfg) {
    if (cfg->hidden_burst > 0) return (double)cfg->hidden_burst;
    return cfg->hidden_rate > 1 ? ceil(cfg->hidden_rate) : 1;
}

/* mock_bucket_refill brings the bucket up to now (g_bucket.mu held): full after a change of settings, else
 * refilled continuously at rate calls/s and MOCK_TOKEN_LIMIT tokens per minute. */
static void mock_bucket_refill(double rate, double cap, uint64_t now) {
    double dt = (double)(now - g_bucket.last_ns) / 1e9;
    if (rate != g_bucket.rate || cap != g_bucket.cap) {
        g_bucket.rate = rate;
        g_bucket.cap = cap;
        g_bucket.calls = cap;
        g_bucket.tokens = (double)MOCK_TOKEN_LIMIT;
    } else {
        g_bucket.calls = fmin(cap, g_bucket.calls + dt * rate);
        g_bucket.tokens = fmin((double)MOCK_TOKEN_LIMIT, g_bucket.tokens + dt * (double)MOCK_TOKEN_LIMIT / 60.0);
    }
    g_bucket.last_ns = now;
}

/* mock_bucket_snapshot fills rl from the bucket (g_bucket.mu held). */
static void mock_bucket_snapshot(mock_rl *rl) {
    rl->limit_requests = (long long)g_bucket.cap;
    rl->remaining_requests = (long long)floor(g_bucket.calls);
    rl->reset_requests_ms = (g_bucket.cap - g_bucket.calls) / g_bucket.rate * 1000.0;
    rl->remaining_tokens = (long long)floor(g_bucket.tokens);
    rl->reset_tokens_ms = ((double)MOCK_TOKEN_LIMIT - g_bucket.tokens) / (double)MOCK_TOKEN_LIMIT * 60000.0;
}

/* mock_bucket_take takes one call from the hidden limit's bucket; returns 1 if there was one, else 0 with
 * *wait_ms set to the time until there is. rl gets the bucket as it stands after this request. */
static int mock_bucket_take(const mock_config *cfg, mock_rl *rl, double *wait_ms) {
    pthread_mutex_lock(&g_bucket.mu);
    mock_bucket_refill(cfg->hidden_rate, mock_bucket_cap(cfg), mock_mono_ns());
    int ok = g_bucket.calls >= 1;
    if (ok) g_bucket.calls -= 1;
    *wait_ms = ok ? 0 : (1 - g_bucket.calls) / g_bucket.rate * 1000.0;
    mock_bucket_snapshot(rl);
    pthread_mutex_unlock(&g_bucket.mu);
    rl->set = cfg->ratelimit_headers != 0;
    return ok;
}

/* mock_bucket_charge takes an answer's usage from the token budget and refreshes rl (which must have been
 * filled by mock_bucket_take) with what is left. The budget is only reported: it may run dry, never refuses. */
static void mock_bucket_charge(unsigned long long tokens, mock_rl *rl) {
    pthread_mutex_lock(&g_bucket.mu);
    mock_bucket_refill(g_bucket.rate, g_bucket.cap, mock_mono_ns());
    g_bucket.tokens = fmax(0, g_bucket.tokens - (double)tokens);
    rl->remaining_tokens = (long long)floor(g_bucket.tokens);
    rl->reset_tokens_ms = ((double)MOCK_TOKEN_LIMIT - g_bucket.tokens) / (double)MOCK_TOKEN_LIMIT * 60000.0;
    pthread_mutex_unlock(&g_bucket.mu);
}

/* mock_duration_text writes ms as OpenAI writes its reset durations (Go's time.Duration): whole ms below a
 * second ("0s" for none, "250ms"), else h, m and s with up to three decimals ("1s", "1.5s", "6m0s", "1h2m3.25s").
 * ms is rounded up to a whole ms, so that waiting that long is always enough. */
static void mock_duration_text(double ms, char *out, size_t outlen) {
    long long t = (long long)ceil(ms > 0 ? ms : 0), h = t / 3600000, m = t / 60000 % 60, sec = t / 1000 % 60;
    int frac = (int)(t % 1000), n = 0, digits = 3;
    if (t < 1000) {
        snprintf(out, outlen, t ? "%lldms" : "0s", t);
        return;
    }
    for (; digits > 0 && frac % 10 == 0 && frac; digits--) frac /= 10;
    if (h) n = snprintf(out, outlen, "%lldh", h);
    if (h || m) n += snprintf(out + n, outlen - (size_t)n, "%lldm", m);
    if (frac) snprintf(out + n, outlen - (size_t)n, "%lld.%0*ds", sec, digits, frac);
    else snprintf(out + n, outlen - (size_t)n, "%llds", sec);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Requests.
 * ------------------------------------------------------------------------------------------------------------- */

enum mock_route { ROUTE_CHAT, ROUTE_CONTROL, ROUTE_STATS, ROUTE_HEALTH, ROUTE_NOTFOUND, ROUTE_BADMETHOD };

typedef struct mock_req {
    int route;
    int too_big;           /* the body exceeded its limit; the rest was dropped */
    int planned;           /* the chat answer below is decided (it may still wait for its delay) */
    int finished;          /* logged and counted: exactly once per chat request */
    fc_buf body;           /* the request body, NUL-terminated */
    unsigned long long id; /* chat request sequence number */
    long long arrival_ms;  /* unix time of arrival, ms */
    uint64_t arrival_ns;   /* monotonic time of arrival */
    int status;            /* planned HTTP status */
    int stage;             /* 1, 2, 0 */
    long long position;
    long long delay_ms;    /* planned latency */
    long long retry_after; /* seconds for a Retry-After header, -1 = none */
    int usage_ok;          /* the answer is a valid envelope: its usage counts in /stats */
    int fault;             /* enum mock_fault applied to the answer */
    int hostile;           /* enum mock_hostile of a hostile answer, else -1 */
    size_t cut;            /* reset/truncated: bytes of the body sent before the connection ends */
    unsigned long long pt, ct;
    mock_rl rl;            /* the x-ratelimit-* headers of the answer (rl.set: send them) */
    fc_buf answer;         /* planned response body */
    char ua[160];          /* User-Agent, spaces replaced by '_', "-" if absent */
} mock_req;

static int mock_route_of(const char *url, const char *method) {
    int post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(url, "/v1/chat/completions") == 0 || strcmp(url, "/chat/completions") == 0)
        return post ? ROUTE_CHAT : ROUTE_BADMETHOD;
    if (strcmp(url, "/control") == 0) return post || get ? ROUTE_CONTROL : ROUTE_BADMETHOD;
    if (strcmp(url, "/stats") == 0) return get ? ROUTE_STATS : ROUTE_BADMETHOD;
    if (strcmp(url, "/health") == 0) return get ? ROUTE_HEALTH : ROUTE_BADMETHOD;
    return ROUTE_NOTFOUND;
}

static void mock_copy_ua(mock_req *r, const char *ua) {
    size_t i = 0;
    for (; ua && ua[i] && i < sizeof r->ua - 1; i++)
        r->ua[i] = ((unsigned char)ua[i] <= ' ' || ua[i] == 0x7f) ? '_' : ua[i];
    if (i == 0) r->ua[i++] = '-';
    r->ua[i] = '\0';
}

/* mock_req_new returns a request context (freed by mock_on_completed), or NULL when out of memory. */
static mock_req *mock_req_new(struct MHD_Connection *c, const char *url, const char *method) {
    mock_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->route = mock_route_of(url, method);
    r->retry_after = -1;
    r->hostile = -1;
    if (r->route != ROUTE_CHAT) return r;
    r->arrival_ms = mock_wall_ms();
    r->arrival_ns = mock_mono_ns();
    r->id = atomic_fetch_add(&g_stats.seq, 1) + 1;
    mock_copy_ua(r, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT));
    atomic_fetch_add(&g_stats.requests, 1);
    atomic_fetch_add(&g_stats.in_flight, 1);
    return r;
}

static void mock_req_take(mock_req *r, const char *data, size_t n) {
    size_t max = r->route == ROUTE_CHAT ? MOCK_CHAT_BODY_MAX : MOCK_CTL_BODY_MAX;
    if (r->too_big || r->body.len + n > max || fc_buf_append(&r->body, data, n) != 0) {
        r->too_big = 1;
        fc_buf_free(&r->body);
    }
}

/* mock_req_finish writes the log line and counts the answer, once per chat request (called when it is answered,
 * or when the client went away before that). */
static void mock_req_finish(mock_req *r, int status) {
    char line[360], fault[40];
    if (r->finished) return;
    r->finished = 1;
    long long elapsed_us = (long long)((mock_mono_ns() - r->arrival_ns) / 1000u);
    if (status > 0 && status < MOCK_STATUS_MAX) atomic_fetch_add(&g_stats.by_status[status], 1);
    if (r->stage == 1) atomic_fetch_add(&g_stats.stage1, 1);
    if (r->stage == 2) atomic_fetch_add(&g_stats.stage2, 1);
    if (r->usage_ok) {
        atomic_fetch_add(&g_stats.prompt_tokens, r->pt);
        atomic_fetch_add(&g_stats.completion_tokens, r->ct);
        unsigned long long seen = atomic_load(&g_stats.max_call_tokens), mine = r->pt + r->ct;
        while (mine > seen && !atomic_compare_exchange_weak(&g_stats.max_call_tokens, &seen, mine)) {
        }
    }
    atomic_fetch_sub(&g_stats.in_flight, 1);
    if (g_log_fd < 0) return;
    if (r->fault == FAULT_NONE) snprintf(fault, sizeof fault, "-");
    else if (r->hostile >= 0) snprintf(fault, sizeof fault, "hostile.%s", mock_hostile_names[r->hostile]);
    else snprintf(fault, sizeof fault, "%s", mock_fault_names[r->fault]);
    int n = snprintf(line, sizeof line, "%lld %d %d %lld %s %lld %lld %s\n", r->arrival_ms, status, r->stage,
                     r->position, r->ua, elapsed_us / 1000, elapsed_us, fault);
    if (n > 0 && write(g_log_fd, line, (size_t)n) < 0) perror("mock-api: log write");
}

static void mock_req_free(mock_req *r) {
    if (!r) return;
    fc_buf_free(&r->body);
    fc_buf_free(&r->answer);
    free(r);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Planning a chat answer: authorization, validation, faults, then the normal answer.
 * ------------------------------------------------------------------------------------------------------------- */

/* mock_fault_roll picks at most one fault; rates partition [0,1) so each is its own probability. */
static int mock_fault_roll(const mock_config *cfg, double u) {
    const double rates[] = {cfg->timeout,     cfg->fail_500,      cfg->fail_429, cfg->malformed,
                            cfg->bad_content, cfg->nul_content,   cfg->fail_429_bare, cfg->reset,
                            cfg->truncated,   cfg->header_only,   cfg->hostile};
    double acc = 0;
    for (int i = 0; i < (int)(sizeof rates / sizeof rates[0]); i++) {
        acc += rates[i];
        if (u < acc) return i + 1;
    }
    return FAULT_NONE;
}

static void mock_plan_error(mock_req *r, int status, const char *msg, const char *type, const char *code) {
    r->status = status;
    mock_error_body(&r->answer, msg, type, code);
}

static int mock_auth_ok(struct MHD_Connection *c, const mock_config *cfg) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!cfg->api_key[0]) return 1;
    return h && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, cfg->api_key) == 0;
}

/* mock_put_nul puts a NUL byte into the content where a C string would silently end early: at the end of the
 * first line (the end of a one-line JSON answer, after the opening fence, or after the TSV header). */
static int mock_put_nul(fc_buf *content) {
    const char *nl = content->data ? memchr(content->data, '\n', content->len) : NULL;
    size_t at = nl ? (size_t)(nl - content->data) : content->len;
    if (fc_buf_append(content, "", 1) != 0) return FC_ENOMEM; /* one more byte, then shift the tail into it */
    memmove(content->data + at + 1, content->data + at, content->len - 1 - at);
    content->data[at] = '\0';
    return 0;
}

/* mock_answer_envelope renders the envelope for content into r->answer, padding the content with trailing spaces
 * (which every parser trims) so that the whole body is cfg->answer_bytes long when that is set. */
static int mock_answer_envelope(mock_req *r, const mock_config *cfg, const mock_prompt *p, fc_buf *content) {
    size_t clen = content->len;
    for (int pass = 0; pass < 3; pass++) { /* the usage digits depend on the padding: settles in two passes */
        fc_buf_reset(&r->answer);
        if (mock_envelope(&r->answer, r->id, p->model, content->data ? content->data : "", content->len,
                          r->body.len, &r->pt, &r->ct) != 0)
            return FC_ENOMEM;
        long long want = cfg->answer_bytes, have = (long long)r->answer.len;
        if (want == 0 || want == have || (have > want && content->len == clen)) break;
        long long pad = (long long)(content->len - clen) + (want - have);
        fc_buf_truncate(content, clen);
        if (pad <= 0) continue;
        if (fc_buf_reserve(content, (size_t)pad) != 0) return FC_ENOMEM;
        memset(content->data + content->len, ' ', (size_t)pad);
        content->len += (size_t)pad;
        content->data[content->len] = '\0';
    }
    return 0;
}

/* mock_plan_success fills the normal (or bad-content / NUL-content / malformed / header-only / hostile) 200
 * answer; a reset or truncated one is cut after half its body. */
static void mock_plan_success(mock_req *r, const mock_config *cfg, const mock_prompt *p, int fault, int variant) {
    fc_buf content = {0};
    r->status = 200;
    if (mock_content(&content, p, fault, r->hostile, variant) != 0 ||
        (fault == FAULT_NUL_CONTENT && mock_put_nul(&content) != 0) ||
        mock_answer_envelope(r, cfg, p, &content) != 0) {
        mock_plan_error(r, 500, "mock-api: out of memory", "server_error", NULL);
    } else if (fault == FAULT_MALFORMED) {
        r->answer.len /= 2; /* a truncated object is never valid JSON */
        r->answer.data[r->answer.len] = '\0';
    } else {
        r->usage_ok = 1;
        if (fault == FAULT_RESET || fault == FAULT_TRUNCATED) r->cut = r->answer.len / 2;
    }
    fc_buf_free(&content);
}

/* mock_plan_status fills the answer of fail_all_status (but 429, which is FAULT_429) with the error body the real
 * API sends. */
static void mock_plan_status(mock_req *r, const mock_config *cfg) {
    int status = (int)cfg->fail_all_status;
    if (status == 401)
        mock_plan_error(r, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key");
    else if (status == 403)
        mock_plan_error(r, 403, "Your API key is not allowed to use this model (mock).", "invalid_request_error",
                        "forbidden");
    else if (status >= 500)
        mock_plan_error(r, status, "mock-api: fail_all_status", "server_error", NULL);
    else
        mock_plan_error(r, status, "mock-api: fail_all_status", "invalid_request_error", NULL);
}

/* mock_hostile_pick returns the hostile kind of draw n: the configured one, or one by the dice for "mix". */
static int mock_hostile_pick(const mock_config *cfg, uint64_t n) {
    int kind = mock_hostile_of(cfg->hostile_kind);
    if (kind >= 0) return kind;
    kind = (int)(mock_dice(cfg->seed, n, 2) * HOSTILE_COUNT);
    return kind < HOSTILE_COUNT ? kind : HOSTILE_COUNT - 1;
}

/* mock_plan_item decides the answer to a well-formed request of draw n: forced faults first (fail_all_500,
 * fail_all_status, once_429), then the permanent rejection, then the dice. A content fault that does not apply
 * to the prompt's stage (header_only outside stage 2, hostile outside stages 1 and 2) answers normally. */
static void mock_plan_item(mock_req *r, const mock_config *cfg, const mock_prompt *p, uint64_t n) {
    int fault = mock_fault_roll(cfg, mock_dice(cfg->seed, n, 0));
    if (cfg->fail_all_500) fault = FAULT_500;
    else if (cfg->fail_all_status) fault = cfg->fail_all_status == 429 ? FAULT_429 : FAULT_STATUS;
    else if (mock_take_once_429()) fault = FAULT_429;
    else if (cfg->reject_mod > 0 && p->position > 0 && p->position % cfg->reject_mod == 0) fault = FAULT_REJECT;
    if ((fault == FAULT_HEADER_ONLY && p->stage != 2) || (fault == FAULT_HOSTILE && p->stage == 0))
        fault = FAULT_NONE;
    if (fault == FAULT_HOSTILE) {
        r->hostile = mock_hostile_pick(cfg, n);
        atomic_fetch_add(&g_stats.by_hostile[r->hostile], 1);
    }
    r->fault = fault;
    atomic_fetch_add(&g_stats.by_fault[fault], 1);
    switch (fault) {
    case FAULT_REJECT:
        mock_plan_error(r, 400, "mock-api: this item is permanently rejected (reject_mod)", "invalid_request_error",
                        "content_policy_violation");
        break;
    case FAULT_TIMEOUT:
        r->delay_ms = cfg->timeout_ms;
        mock_plan_error(r, 504, "mock-api: upstream timed out", "server_error", "timeout");
        break;
    case FAULT_500:
        mock_plan_error(r, 500, "The server had an error while processing your request. Sorry about that!",
                        "server_error", NULL);
        break;
    case FAULT_429:
    case FAULT_429_BARE:
        r->retry_after = fault == FAULT_429 ? cfg->retry_after : -1;
        mock_plan_error(r, 429, "Rate limit reached for requests (mock).", "requests", "rate_limit_exceeded");
        break;
    case FAULT_STATUS: mock_plan_status(r, cfg); break;
    default: mock_plan_success(r, cfg, p, fault, mock_dice(cfg->seed, n, 3) < 0.5);
    }
}

/* mock_plan_hidden_429 answers a request the hidden limit refused: at once, as a provider's limiter does, with
 * OpenAI's error body and no Retry-After (the reset header, when sent, says when). */
static void mock_plan_hidden_429(mock_req *r, double wait_ms) {
    char msg[160], wait[48];
    mock_duration_text(wait_ms, wait, sizeof wait);
    snprintf(msg, sizeof msg, "Rate limit reached for requests (mock hidden limit). Please try again in %s.", wait);
    r->fault = FAULT_HIDDEN_429;
    atomic_fetch_add(&g_stats.by_fault[FAULT_HIDDEN_429], 1);
    atomic_fetch_add(&g_stats.hidden_429, 1);
    mock_plan_error(r, 429, msg, "rate_limit_exceeded", "rate_limit_exceeded");
}

/* mock_plan_chat decides the answer to a chat request whose body has arrived: the hidden limit first (a refused
 * request draws no dice, so the others see the sequence they would without it), then mock_plan_item. */
static void mock_plan_chat(struct MHD_Connection *c, mock_req *r) {
    mock_config cfg;
    mock_prompt p;
    const char *why = "";
    double wait_ms;
    mock_config_get(&cfg);
    r->planned = 1;
    if (cfg.hidden_rate > 0 && !mock_bucket_take(&cfg, &r->rl, &wait_ms)) {
        mock_plan_hidden_429(r, wait_ms);
        return;
    }
    if (cfg.hidden_rate > 0) atomic_fetch_add(&g_stats.hidden_ok, 1);
    uint64_t n = atomic_fetch_add(&g_stats.draws, 1);
    r->delay_ms = cfg.latency_ms + (cfg.jitter_ms ? (long long)(mock_dice(cfg.seed, n, 1) * (cfg.jitter_ms + 1)) : 0);
    if (!mock_auth_ok(c, &cfg)) {
        mock_plan_error(r, 401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key");
    } else if (r->too_big) {
        mock_plan_error(r, 413, "mock-api: request body too large", "invalid_request_error", NULL);
    } else if (mock_prompt_parse(&p, r->body.data ? r->body.data : "", r->body.len, &why) != 0) {
        mock_plan_error(r, 400, why, "invalid_request_error", NULL);
    } else {
        r->stage = p.stage;
        r->position = p.position;
        mock_plan_item(r, &cfg, &p, n);
        mock_prompt_free(&p);
    }
    if (r->rl.set) mock_bucket_charge(r->usage_ok ? r->pt + r->ct : 0, &r->rl);
}

/* ---------------------------------------------------------------------------------------------------------------
 * The delay timer: suspended connections wait in a min-heap and one thread resumes them when due.
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct mock_timer_entry {
    uint64_t due_ns; /* monotonic */
    struct MHD_Connection *conn;
} mock_timer_entry;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    mock_timer_entry *heap;
    size_t n, cap;
    int stopping; /* once set, nothing is suspended any more */
    pthread_t thread;
} g_timer = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void mock_heap_push(mock_timer_entry e) {
    size_t i = g_timer.n++;
    while (i > 0 && g_timer.heap[(i - 1) / 2].due_ns > e.due_ns) {
        g_timer.heap[i] = g_timer.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g_timer.heap[i] = e;
}

static mock_timer_entry mock_heap_pop(void) {
    mock_timer_entry top = g_timer.heap[0], last = g_timer.heap[--g_timer.n];
    size_t i = 0, child;
    while ((child = 2 * i + 1) < g_timer.n) {
        if (child + 1 < g_timer.n && g_timer.heap[child + 1].due_ns < g_timer.heap[child].due_ns) child++;
        if (g_timer.heap[child].due_ns >= last.due_ns) break;
        g_timer.heap[i] = g_timer.heap[child];
        i = child;
    }
    if (g_timer.n) g_timer.heap[i] = last;
    return top;
}

/* mock_timer_suspend suspends c for delay_ms; returns 1, or 0 when the caller must answer now (stopping, or no
 * memory). Suspending and queueing happen under one lock so a stop never misses a suspended connection. */
static int mock_timer_suspend(struct MHD_Connection *c, long long delay_ms) {
    int ok = 0;
    pthread_mutex_lock(&g_timer.mu);
    if (!g_timer.stopping && g_timer.n == g_timer.cap) {
        size_t cap = g_timer.cap ? g_timer.cap * 2 : 256;
        mock_timer_entry *h = realloc(g_timer.heap, cap * sizeof *h);
        if (h) g_timer.heap = h, g_timer.cap = cap;
    }
    if (!g_timer.stopping && g_timer.n < g_timer.cap) {
        mock_timer_entry e = {mock_mono_ns() + (uint64_t)delay_ms * 1000000u, c};
        MHD_suspend_connection(c);
        mock_heap_push(e);
        if (g_timer.heap[0].conn == c) pthread_cond_signal(&g_timer.cv);
        ok = 1;
    }
    pthread_mutex_unlock(&g_timer.mu);
    return ok;
}

/* mock_timer_main resumes connections as they fall due; on stop it resumes all of them and returns. */
static void *mock_timer_main(void *arg) {
    struct MHD_Connection *due[256];
    pthread_mutex_lock(&g_timer.mu);
    for (;;) {
        size_t k = 0;
        uint64_t now = mock_mono_ns();
        while (g_timer.n && k < 256 && (g_timer.stopping || g_timer.heap[0].due_ns <= now))
            due[k++] = mock_heap_pop().conn;
        if (k) {
            pthread_mutex_unlock(&g_timer.mu);
            for (size_t i = 0; i < k; i++) MHD_resume_connection(due[i]);
            pthread_mutex_lock(&g_timer.mu);
            continue;
        }
        if (g_timer.stopping) break;
        if (!g_timer.n) {
            pthread_cond_wait(&g_timer.cv, &g_timer.mu);
            continue;
        }
        struct timespec ts = {(time_t)(g_timer.heap[0].due_ns / 1000000000u),
                              (long)(g_timer.heap[0].due_ns % 1000000000u)};
        pthread_cond_timedwait(&g_timer.cv, &g_timer.mu, &ts);
    }
    pthread_mutex_unlock(&g_timer.mu);
    return arg;
}

static int mock_timer_start(void) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&g_timer.cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc == 0) rc = pthread_create(&g_timer.thread, NULL, mock_timer_main, NULL);
    return rc == 0 ? 0 : FC_EIO;
}

/* mock_timer_stop resumes every waiting connection and joins the thread; no connection stays suspended. */
static void mock_timer_stop(void) {
    pthread_mutex_lock(&g_timer.mu);
    g_timer.stopping = 1;
    pthread_cond_signal(&g_timer.cv);
    pthread_mutex_unlock(&g_timer.mu);
    pthread_join(g_timer.thread, NULL);
    free(g_timer.heap);
    g_timer.heap = NULL;
}

/* ---------------------------------------------------------------------------------------------------------------
 * HTTP glue.
 * ------------------------------------------------------------------------------------------------------------- */

/* mock_add_rl_headers adds OpenAI's x-ratelimit-* headers from rl, when rl is set. */
static void mock_add_rl_headers(struct MHD_Response *resp, const mock_rl *rl) {
    char v[48];
    if (!rl || !rl->set) return;
    snprintf(v, sizeof v, "%lld", rl->limit_requests);
    MHD_add_response_header(resp, "x-ratelimit-limit-requests", v);
    snprintf(v, sizeof v, "%lld", rl->remaining_requests);
    MHD_add_response_header(resp, "x-ratelimit-remaining-requests", v);
    mock_duration_text(rl->reset_requests_ms, v, sizeof v);
    MHD_add_response_header(resp, "x-ratelimit-reset-requests", v);
    snprintf(v, sizeof v, "%lld", MOCK_TOKEN_LIMIT);
    MHD_add_response_header(resp, "x-ratelimit-limit-tokens", v);
    snprintf(v, sizeof v, "%lld", rl->remaining_tokens);
    MHD_add_response_header(resp, "x-ratelimit-remaining-tokens", v);
    mock_duration_text(rl->reset_tokens_ms, v, sizeof v);
    MHD_add_response_header(resp, "x-ratelimit-reset-tokens", v);
}

/* mock_send_rl queues status with body (taken from b, which is emptied) as application/json, with a Retry-After
 * of retry_after seconds (-1: none) and the x-ratelimit-* headers of rl (NULL or unset: none). */
static enum MHD_Result mock_send_rl(struct MHD_Connection *c, int status, fc_buf *b, long long retry_after,
                                    const mock_rl *rl) {
    size_t len = b->len;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, fc_buf_steal(b), MHD_RESPMEM_MUST_FREE);
    char ra[32];
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    mock_add_rl_headers(resp, rl);
    if (retry_after >= 0) {
        snprintf(ra, sizeof ra, "%lld", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (status == 405) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, POST");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* mock_send queues an answer without rate-limit headers (see mock_send_rl). */
static enum MHD_Result mock_send(struct MHD_Connection *c, int status, fc_buf *b, long long retry_after) {
    return mock_send_rl(c, status, b, retry_after, NULL);
}

/* A body sent in part: cut bytes of data, then the connection ends, with an RST when rst is set. */
typedef struct mock_partial {
    char *data; /* owned */
    size_t cut;
    int fd;  /* the connection's socket, borrowed from MHD */
    int rst; /* reset (SO_LINGER {1, 0}) rather than close */
} mock_partial;

static void mock_partial_free(void *cls) {
    mock_partial *p = cls;
    free(p->data);
    free(p);
}

/* mock_partial_read gives MHD the first cut bytes; asked for more (which MHD does only once those were written
 * to the socket), it ends the response with an error, so MHD closes the connection short of Content-Length. */
static ssize_t mock_partial_read(void *cls, uint64_t pos, char *buf, size_t max) {
    mock_partial *p = cls;
    if (pos >= p->cut) {
        struct linger lg = {1, 0};
        if (p->rst && p->fd >= 0) setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = p->cut - (size_t)pos < max ? p->cut - (size_t)pos : max;
    memcpy(buf, p->data + pos, n);
    return (ssize_t)n;
}

/* mock_send_partial queues a 200 whose Content-Length announces the whole planned body, of which only r->cut
 * bytes are sent before the connection is closed (truncated) or reset (reset). */
static enum MHD_Result mock_send_partial(struct MHD_Connection *c, mock_req *r) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    mock_partial *p = calloc(1, sizeof *p);
    if (!p) return MHD_NO;
    p->cut = r->cut;
    p->fd = ci ? ci->connect_fd : -1;
    p->rst = r->fault == FAULT_RESET;
    size_t len = r->answer.len;
    p->data = fc_buf_steal(&r->answer);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(len, 16 * 1024, mock_partial_read, p, mock_partial_free);
    if (!resp) return mock_partial_free(p), MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    mock_add_rl_headers(resp, &r->rl);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result mock_send_error(struct MHD_Connection *c, int status, const char *msg) {
    fc_buf b = {0};
    mock_error_body(&b, msg, "invalid_request_error", NULL);
    return mock_send(c, status, &b, -1);
}

static enum MHD_Result mock_handle_chat(struct MHD_Connection *c, mock_req *r) {
    if (!r->planned) {
        mock_plan_chat(c, r);
        if (r->delay_ms > 0 && mock_timer_suspend(c, r->delay_ms)) return MHD_YES;
    }
    mock_req_finish(r, r->status);
    if (r->cut > 0) return mock_send_partial(c, r);
    return mock_send_rl(c, r->status, &r->answer, r->retry_after, &r->rl);
}

static enum MHD_Result mock_handle_control(struct MHD_Connection *c, mock_req *r, const char *method) {
    char err[256] = "";
    fc_buf b = {0};
    if (strcmp(method, "POST") == 0) {
        json_object *o = r->too_big ? NULL : mock_json_parse(r->body.data ? r->body.data : "", r->body.len);
        int rc = json_object_is_type(o, json_type_object) ? mock_control_apply(o, err, sizeof err) : FC_EINVAL;
        json_object_put(o);
        if (rc != 0) return mock_send_error(c, 400, err[0] ? err : "/control expects a JSON object");
    }
    if (mock_config_json(&b) != 0) return MHD_NO;
    return mock_send(c, 200, &b, -1);
}

static enum MHD_Result mock_handle_stats(struct MHD_Connection *c) {
    fc_buf b = {0};
    fc_buf_printf(&b, "{\"requests\":%llu,\"in_flight\":%llu,\"by_status\":{", atomic_load(&g_stats.requests),
                  atomic_load(&g_stats.in_flight));
    const char *sep = "";
    for (int s = 0; s < MOCK_STATUS_MAX; s++) {
        unsigned long long v = atomic_load(&g_stats.by_status[s]);
        if (v) fc_buf_printf(&b, "%s\"%d\":%llu", sep, s, v), sep = ",";
    }
    fc_buf_printf(&b, "},\"stage1\":%llu,\"stage2\":%llu,\"prompt_tokens\":%llu,\"completion_tokens\":%llu,",
                  atomic_load(&g_stats.stage1), atomic_load(&g_stats.stage2), atomic_load(&g_stats.prompt_tokens),
                  atomic_load(&g_stats.completion_tokens));
    fc_buf_printf(&b, "\"max_call_tokens\":%llu,", atomic_load(&g_stats.max_call_tokens));
    sep = "\"faults\":{";
    for (int f = 0; f < FAULT_COUNT; f++, sep = ",")
        fc_buf_printf(&b, "%s\"%s\":%llu", sep, mock_fault_names[f], atomic_load(&g_stats.by_fault[f]));
    sep = "},\"hostile\":{";
    for (int k = 0; k < HOSTILE_COUNT; k++, sep = ",")
        fc_buf_printf(&b, "%s\"%s\":%llu", sep, mock_hostile_names[k], atomic_load(&g_stats.by_hostile[k]));
    fc_buf_printf(&b, "},\"hidden_ok\":%llu,\"hidden_429\":%llu", atomic_load(&g_stats.hidden_ok),
                  atomic_load(&g_stats.hidden_429));
    fc_buf_printf(&b, ",\"connections\":%llu,\"connections_open\":%llu,\"connections_max\":%llu}",
                  atomic_load(&g_stats.connections), atomic_load(&g_stats.connections_open),
                  atomic_load(&g_stats.connections_max));
    if (!b.data) return MHD_NO;
    return mock_send(c, 200, &b, -1);
}

static enum MHD_Result mock_on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                       const char *version, const char *data, size_t *size, void **ctx) {
    mock_req *r = *ctx;
    (void)cls;
    (void)version;
    if (!r) return (*ctx = mock_req_new(c, url, method)) ? MHD_YES : MHD_NO;
    if (*size) {
        mock_req_take(r, data, *size);
        *size = 0;
        return MHD_YES;
    }
    switch (r->route) {
    case ROUTE_CHAT: return mock_handle_chat(c, r);
    case ROUTE_CONTROL: return mock_handle_control(c, r, method);
    case ROUTE_STATS: return mock_handle_stats(c);
    case ROUTE_HEALTH: {
        fc_buf b = {0};
        fc_buf_puts(&b, "{\"status\":\"ok\"}");
        return mock_send(c, 200, &b, -1);
    }
    case ROUTE_BADMETHOD: return mock_send_error(c, 405, "method not allowed");
    default: return mock_send_error(c, 404, "no such endpoint");
    }
}

static void mock_on_completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode toe) {
    mock_req *r = *ctx;
    (void)cls;
    (void)c;
    (void)toe;
    if (!r) return;
    if (r->route == ROUTE_CHAT) mock_req_finish(r, r->planned ? r->status : 499); /* 499: client went away */
    mock_req_free(r);
    *ctx = NULL;
}

/* mock_on_connection counts connections (MHD_OPTION_NOTIFY_CONNECTION): accepted, open, most open at once. */
static void mock_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                               enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    (void)c;
    (void)socket_ctx;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&g_stats.connections_open, 1);
        return;
    }
    atomic_fetch_add(&g_stats.connections, 1);
    unsigned long long open = atomic_fetch_add(&g_stats.connections_open, 1) + 1;
    unsigned long long max = atomic_load(&g_stats.connections_max);
    while (open > max && !atomic_compare_exchange_weak(&g_stats.connections_max, &max, open)) {
    }
}

/* ---------------------------------------------------------------------------------------------------------------
 * Start-up, signals, shutdown.
 * ------------------------------------------------------------------------------------------------------------- */

static void mock_usage(FILE *f) {
    fprintf(f, "usage: mock-api [options]\n"
               "A mock OpenAI-compatible API (POST /v1/chat/completions, POST|GET /control, GET /stats, GET /health).\n"
               "Options (--name VALUE or --name=VALUE; booleans take no value; * = changeable via POST /control\n"
               "as {\"name_with_underscores\":value}, plus {\"reset_stats\":true}):\n");
    for (size_t i = 0; i < MOCK_NOPTS; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "%s", mock_opts[i].name);
        for (char *p = flag; *p; p++) *p = *p == '_' ? '-' : *p;
        fprintf(f, "  --%-16s %c %s (default %s)\n", flag, mock_opts[i].runtime ? '*' : ' ', mock_opts[i].help,
                *mock_opts[i].def ? mock_opts[i].def : "none");
    }
    fprintf(f, "  --help               this text\n"
               "Faults (at most one per request, drawn from the seeded dice; /stats counts them under \"faults\" and\n"
               "\"hostile\", and the request log's last column names each answer's fault, '-' for none):\n"
               "  reset        status, headers and half the body are sent, then the connection is reset (RST)\n"
               "  truncated    a 200 whose Content-Length announces the whole body; half is sent, then it closes\n"
               "  header_only  a stage-2 content of the TSV header line alone (stage-1 requests answer normally)\n"
               "  hostile      a 200 whose content carries hostile values, of hostile_kind:\n"
               "    control    ESC sequences (\\x1b[31m, \\x1b]0;title\\x07), VT, FF, BEL, CR, DEL, C1 U+0085 and\n"
               "               U+009B in field values (stage 1: JSON-escaped, stage 2: raw in the TSV)\n"
               "    tabs       TAB and LF inside field values (stage 1: JSON-escaped; stage 2: literal, so a row\n"
               "               with an extra column and a row split in two)\n"
               "    huge       one field value of 256 KiB (under the worker's default 1 MiB answer cap)\n"
               "    columns    stage 2: a row of 12 columns and one of 5; stage 1: extra unknown members\n"
               "    deep       stage 1: JSON nested 5000 levels ([[[...]]] or {\"a\":{\"a\":...}}); stage 2: a field\n"
               "               holding [[[...]]] 5000 deep\n"
               "    utf8       invalid UTF-8 bytes (0xff, overlong 0xc0 0xaf, lone 0x80, a cut 3-byte sequence) raw\n"
               "               inside field values, so the HTTP body carries them inside a JSON string\n"
               "    mix        one of the above per answer, by the dice\n"
               "Hidden rate limit (--hidden-rate R, --hidden-burst B): one token bucket for the process, capacity\n"
               "B (default R rounded up), refilled continuously at R calls/s and taken by every chat request before\n"
               "anything else. An empty bucket answers at once 429 {\"error\":{\"type\":\"rate_limit_exceeded\",\n"
               "\"code\":\"rate_limit_exceeded\",...}} without Retry-After (like fail_429_bare), counted as\n"
               "hidden_429 in /stats (hidden_ok: let through) and named hidden_429 in the request log. With\n"
               "--ratelimit-headers 1 every chat answer carries OpenAI's headers: x-ratelimit-limit-requests (B),\n"
               "-remaining-requests (whole calls left after it), -reset-requests (until the bucket is full:\n"
               "\"250ms\", \"1.5s\", \"6m0s\"), x-ratelimit-limit-tokens (1000000 a minute, reported, never\n"
               "enforced), -remaining-tokens (less the answers' usage) and -reset-tokens. Changing R or B through\n"
               "/control refills the bucket.\n");
}

static void mock_on_signal(int sig) {
    static const char msg[] = "mock-api: second signal, exiting now\n";
    if (g_stop) {
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) _exit(1);
        _exit(1);
    }
    g_stop = sig;
}

/* mock_signals installs the handlers and blocks SIGTERM/SIGINT (old mask in *old) so that the threads started
 * later never take them; the main thread waits for them with sigsuspend. */
static void mock_signals(sigset_t *old) {
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = mock_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, old);
}

/* mock_sockaddr fills ss from the numeric address and port; returns its length, or 0 if addr is not numeric. */
static socklen_t mock_sockaddr(struct sockaddr_storage *ss, const char *addr, int port, int *v6) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    *v6 = strchr(addr, ':') != NULL;
    if (!*v6 && inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return sizeof *a4;
    }
    if (*v6 && inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return sizeof *a6;
    }
    return 0;
}

/* mock_config_check validates settings that depend on each other or on the system; returns 0 or FC_EINVAL. */
static int mock_config_check(mock_config *cfg) {
    struct sockaddr_storage ss;
    int v6;
    char err[256];
    if (mock_config_rules(cfg, err, sizeof err) != 0) return fprintf(stderr, "mock-api: %s\n", err), FC_EINVAL;
    if (strcmp(cfg->bind, "localhost") == 0) snprintf(cfg->bind, sizeof cfg->bind, "127.0.0.1");
    if (mock_sockaddr(&ss, cfg->bind, (int)cfg->port, &v6)) return 0;
    fprintf(stderr, "mock-api: bind: expected a numeric IPv4 or IPv6 address, got '%s'\n", cfg->bind);
    return FC_EINVAL;
}

/* mock_parse_args fills cfg from the defaults and argv; returns 0, 1 after --help, or FC_EINVAL (message printed). */
static int mock_parse_args(mock_config *cfg, int argc, char **argv) {
    char err[256], name[64];
    for (size_t i = 0; i < MOCK_NOPTS; i++) mock_opt_set(cfg, &mock_opts[i], mock_opts[i].def, err, sizeof err);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '='), *val = eq ? eq + 1 : NULL;
        size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
        if (strncmp(arg, "--", 2) != 0 || n - 2 >= sizeof name)
            return fprintf(stderr, "mock-api: bad argument '%s'\n", arg), FC_EINVAL;
        snprintf(name, sizeof name, "%.*s", (int)(n - 2), arg + 2);
        for (char *p = name; *p; p++) *p = *p == '-' ? '_' : *p;
        if (strcmp(name, "help") == 0) return mock_usage(stdout), 1;
        const mock_opt *o = mock_opt_find(name);
        if (!o) return fprintf(stderr, "mock-api: unknown option '%s' (see --help)\n", arg), FC_EINVAL;
        if (!val) val = o->type == MOCK_BOOL ? "1" : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) return fprintf(stderr, "mock-api: %s needs a value\n", arg), FC_EINVAL;
        if (mock_opt_set(cfg, o, val, err, sizeof err) != 0) return fprintf(stderr, "mock-api: %s\n", err), FC_EINVAL;
    }
    return mock_config_check(cfg);
}

/* mock_connection_limit raises the soft open-files limit to the hard one and returns how many connections the
 * daemon may hold: max_connections if set, else that limit less 64 for the listener, epoll, log and slack. */
static unsigned mock_connection_limit(const mock_config *cfg) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t fds = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000 ? 1000000 : rl.rlim_cur;
    unsigned avail = fds > 128 ? (unsigned)(fds - 64) : 64u;
    if (cfg->max_connections > 0) {
        if ((unsigned long long)cfg->max_connections > avail)
            fprintf(stderr, "mock-api: max-connections %lld is above the open-files limit allows (%u)\n",
                    cfg->max_connections, avail);
        return (unsigned)cfg->max_connections;
    }
    return avail;
}

/* mock_read_file returns the NUL-terminated contents of path (free it), or NULL with a message printed. */
static char *mock_read_file(const char *path) {
    fc_buf b = {0};
    char chunk[4096];
    size_t n;
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "mock-api: cannot read %s: %s\n", path, strerror(errno)), NULL;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fc_buf_append(&b, chunk, n);
    fclose(f);
    if (!b.data) fprintf(stderr, "mock-api: %s is empty\n", path);
    return b.data ? fc_buf_steal(&b) : NULL;
}

static struct MHD_Daemon *mock_start_daemon(const mock_config *cfg) {
    struct sockaddr_storage ss;
    int v6;
    char *cert = NULL, *key = NULL;
    if (cfg->tls_cert[0]) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS))
            return fprintf(stderr, "mock-api: this libmicrohttpd has no TLS\n"), NULL;
        cert = mock_read_file(cfg->tls_cert);
        key = cert ? mock_read_file(cfg->tls_key) : NULL;
        if (!key) return free(cert), NULL;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cfg->threads ? (unsigned)cfg->threads : (unsigned)(cpus > 0 ? (cpus < 8 ? cpus : 8) : 2);
    if (!mock_sockaddr(&ss, cfg->bind, (int)cfg->port, &v6)) return NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_TURBO | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0) | (cert ? MHD_USE_TLS : 0);
    /* The TLS options come last: without a certificate the list ends before them. */
    struct MHD_OptionItem tls[] = {{MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
                                   {MHD_OPTION_HTTPS_MEM_KEY, 0, key},
                                   {MHD_OPTION_END, 0, NULL}};
    struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, mock_on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, mock_connection_limit(cfg),
        MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_NOTIFY_COMPLETED,
        mock_on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, mock_on_connection, NULL, MHD_OPTION_ARRAY,
        cert ? tls : none, MHD_OPTION_END);
    if (!d) free(cert), free(key); /* else kept for the daemon's lifetime (MHD does not copy them) */
    return d;
}

static int mock_bound_port(struct MHD_Daemon *d) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (!info || getsockname(info->listen_fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* mock_write_port_file writes the port atomically (temp file + rename); returns 0 or FC_EIO. */
static int mock_write_port_file(const char *path, int port) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return FC_EIO;
    int bad = fprintf(f, "%d\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return FC_EIO;
    }
    return 0;
}

/* mock_shutdown stops accepting, answers what waits on the timer, gives in-flight requests a grace period, stops. */
static void mock_shutdown(struct MHD_Daemon *d) {
    MHD_socket lfd = MHD_quiesce_daemon(d);
    mock_timer_stop();
    uint64_t deadline = mock_mono_ns() + (uint64_t)MOCK_STOP_GRACE_MS * 1000000u;
    while (atomic_load(&g_stats.in_flight) > 0 && mock_mono_ns() < deadline) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
}

int main(int argc, char **argv) {
    sigset_t old;
    int rc = mock_parse_args(&g_cfg, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (g_cfg.log[0] && (g_log_fd = open(g_cfg.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        fprintf(stderr, "mock-api: log: cannot open %s: %s\n", g_cfg.log, strerror(errno));
        return 2;
    }
    mock_signals(&old);
    if (mock_timer_start() != 0) return fprintf(stderr, "mock-api: cannot start the timer thread\n"), 1;
    struct MHD_Daemon *d = mock_start_daemon(&g_cfg);
    int port = d ? mock_bound_port(d) : -1;
    if (port < 0) {
        fprintf(stderr, "mock-api: cannot listen on %s:%lld\n", g_cfg.bind, g_cfg.port);
        return 1;
    }
    if (g_cfg.port_file[0] && mock_write_port_file(g_cfg.port_file, port) != 0) {
        fprintf(stderr, "mock-api: cannot write the port file %s\n", g_cfg.port_file);
        return 1;
    }
    printf("mock-api listening on %s:%d\n", g_cfg.bind, port);
    fflush(stdout);
    while (!g_stop) sigsuspend(&old);
    fprintf(stderr, "mock-api: signal %d, stopping\n", (int)g_stop);
    mock_shutdown(d);
    if (g_log_fd >= 0) close(g_log_fd);
    return 0;
}
