/* Fleet-wide rate limiter: GCRA buckets in Redis updated by one Lua script per call, a C
 * mirror of the script's arithmetic for tests and the local fallback, and RATE_LIMITS parsing. */
#include "fc_limiter.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fc_error.h"
#include "fc_keys.h"
#include "fc_log.h"

#define US_PER_SEC 1000000LL
#define BACKOFF_MIN_US 100000LL  /* first reconnect attempt 100 ms after a failure */
#define BACKOFF_MAX_US 5000000LL /* then doubling, capped at 5 s */
#define DEFAULT_MAX_WAIT_MS 30000L
#define FC_STR_(x) #x
#define FC_STR(x) FC_STR_(x) /* a plain integer constant, quoted into the script */

enum { LIM_CALLS, LIM_TOKENS, LIM_N };

/* The script, one for every operation (one SHA, one NOSCRIPT path). Integer microseconds
 * throughout; the C mirror is fc_gcra_reserve / fc_gcra_adjust / fc_adapt_*. Every call passes
 * the same keys: KEYS[1] pause, [2] calls, [3] tokens, [4] adapted rate, [5] a job's budget
 * (only when one applies). Adaptive values: conf, floor, add (calls/s) as ARGV[a..a+2].
 *   'r' reserve: ARGV[2] max_wait_us; [3] calls tau_us, [4] calls inc_us, [5], [6] the same for
 *                tokens ('' = unlimited, skipped); [7] conf ('' = not adaptive: the calls limit
 *                as given), [8] floor, [9] add, [10] calls burst; [11] cost tokens, [12] est
 *                uusd, [13] limit tokens, [14] limit uusd (0 = none; read with KEYS[5])
 *                -> {flag, wait_us, pause left, effective milli-calls/s (-1 not adaptive), epoch}
 *                flag 0 reserved, 1 refused (wait > max_wait), 2 over the budget
 *   's' settle:  ARGV[2] delta_us on the token key ('' = none), [3] cap_us (the tat kept
 *                within cap_us of now: corrections add up), [4] tokens, [5] uusd added to
 *                KEYS[5] if given (PX 7 days) -> {0, tat - now}
 *   'p' pause:   ARGV[2] ms -> {0, deadline - now}
 *   'q' query:   -> {0, max(0, pause deadline - now)}
 *   'u' usage:   -> {0, calls tat - now} (how far ahead of now it is reserved)
 *   'b' backoff: ARGV[2] epoch, [3..5] conf floor add, [6] beta -> {0, cut 0|1, milli-calls/s,
 *                epoch}: cut only when ARGV[2] is the current epoch
 *   'a' advice:  ARGV[2..4] conf floor add, [5] rate, [6] pause ms (0 none) -> {0, pause left,
 *                milli-calls/s, epoch}
 *   'k' rate:    ARGV[2..4] conf floor add -> {0, advised 0|1, milli-calls/s, epoch}
 *   'j' spent:   -> {0, tokens, uusd, exhausted_ms} of KEYS[5]
 * A reserve also answers the pause left, so callers can hold calls they reserved before
 * another process's 429. Values are written with %.0f (exact for integers below 2^53) and
 * expire once idle: PX max(60 s, tat - now + 1 s). */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local function get(k) return tonumber(redis.call('GET', k) or '0') or 0 end\n"
    "local function put(k, v)\n"
    "  local ttl = math.max(60000, math.floor((v - now) / 1000) + 1000)\n"
    "  redis.call('SET', k, string.format('%.0f', v), 'PX', string.format('%.0f', ttl))\n"
    "end\n"
    "local function milli(r) return math.floor(r * 1000 + 0.5) end\n"
    "local function adapted(i)\n"
    "  local conf, floor, add = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n"
    "  local h = redis.call('HMGET', KEYS[4], 'rate', 'changed', 'epoch', 'mode')\n"
    "  local r, since = tonumber(h[1]), tonumber(h[2]) or now\n"
    "  if not r then return conf, tonumber(h[3]) or 0, false, floor end\n"
    "  if h[4] == 'advice' then since = since + " FC_STR(FC_ADAPT_ADVICE_HOLD_US) " end\n"
    "  r = math.min(conf, r + add * math.max(0, now - since) / 1000000)\n"
    "  return math.max(floor, r), tonumber(h[3]) or 0, h[4] == 'advice', floor\n"
    "end\n"
    "local function set_rate(r, epoch, mode)\n"
    "  redis.call('HSET', KEYS[4], 'rate', string.format('%.6f', r), 'changed', string.format('%.0f', now),\n"
    "             'epoch', epoch, 'mode', mode)\n"
    "  redis.call('EXPIRE', KEYS[4], " FC_STR(FC_ADAPT_TTL_S) ")\n"
    "end\n"
    "local function pause_for(ms)\n"
    "  local p = now + ms * 1000\n"
    "  local old = get(KEYS[1])\n"
    "  if p > old then put(KEYS[1], p) else p = old end\n"
    "  return p - now\n"
    "end\n"
    "local mode = ARGV[1]\n"
    "if mode == 'p' then return {0, pause_for(tonumber(ARGV[2]))} end\n"
    "if mode == 'q' then return {0, math.max(0, get(KEYS[1]) - now)} end\n"
    "if mode == 'u' then return {0, get(KEYS[2]) - now} end\n"
    "if mode == 'j' then\n"
    "  local h = redis.call('HMGET', KEYS[5], 'tokens', 'uusd', 'exhausted_ms')\n"
    "  return {0, tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0}\n"
    "end\n"
    "if mode == 's' then\n"
    "  local ahead = 0\n"
    "  if ARGV[2] ~= '' then\n"
    "    local tat = math.max(math.max(get(KEYS[3]), now) + tonumber(ARGV[2]), now)\n"
    "    tat = math.min(tat, now + tonumber(ARGV[3]))\n"
    "    put(KEYS[3], tat)\n"
    "    ahead = tat - now\n"
    "  end\n"
    "  if KEYS[5] then\n"
    "    redis.call('HINCRBY', KEYS[5], 'tokens', ARGV[4])\n"
    "    redis.call('HINCRBY', KEYS[5], 'uusd', ARGV[5])\n"
    "    redis.call('EXPIRE', KEYS[5], " FC_STR(FC_BUDGET_TTL_S) ")\n"
    "  end\n"
    "  return {0, ahead}\n"
    "end\n"
    "if mode == 'k' then\n"
    "  local eff, epoch, advised = adapted(2)\n"
    "  return {0, advised and 1 or 0, milli(eff), epoch}\n"
    "end\n"
    "if mode == 'b' then\n"
    "  local eff, epoch, _, floor = adapted(3)\n"
    "  local changed = tonumber(redis.call('HMGET', KEYS[4], 'changed')[1]) or 0\n"
    "  if tonumber(ARGV[2]) ~= epoch or now - changed < " FC_STR(FC_ADAPT_CUT_GAP_US) " then\n"
    "    return {0, 0, milli(eff), epoch}\n"
    "  end\n"
    "  eff, epoch = math.max(floor, eff * tonumber(ARGV[6])), epoch + 1\n"
    "  set_rate(eff, epoch, 'aimd')\n"
    "  return {0, 1, milli(eff), epoch}\n"
    "end\n"
    "if mode == 'a' then\n"
    "  local eff, epoch, _, floor = adapted(2)\n"
    "  local r = math.max(floor, math.min(tonumber(ARGV[2]), tonumber(ARGV[5])))\n"
    "  if r < eff then epoch = epoch + 1 end\n"
    "  set_rate(r, epoch, 'advice')\n"
    "  local left = 0\n"
    "  if tonumber(ARGV[6]) > 0 then left = pause_for(tonumber(ARGV[6])) end\n"
    "  return {0, left, milli(r), epoch}\n"
    "end\n"
    "local pause = get(KEYS[1])\n"
    "local left = math.max(0, pause - now)\n"
    "local tau = {tonumber(ARGV[3]), tonumber(ARGV[5])}\n"
    "local inc = {tonumber(ARGV[4]), tonumber(ARGV[6])}\n"
    "local eff, epoch = -1, 0\n"
    "if ARGV[7] ~= '' then\n"
    "  local conf = tonumber(ARGV[7])\n"
    "  local rate\n"
    "  rate, epoch = adapted(7)\n"
    "  local T = 1000000 / rate\n"
    "  tau[1] = math.floor((math.max(1, tonumber(ARGV[10]) * rate / conf) - 1) * T + 0.5)\n"
    "  inc[1] = math.floor(T + 0.5)\n"
    "  eff = milli(rate)\n"
    "end\n"
    "if KEYS[5] then\n"
    "  local h = redis.call('HMGET', KEYS[5], 'tokens', 'uusd')\n"
    "  local lt, lu = tonumber(ARGV[13]), tonumber(ARGV[14])\n"
    "  if (lt > 0 and (tonumber(h[1]) or 0) + tonumber(ARGV[11]) > lt) or\n"
    "     (lu > 0 and (tonumber(h[2]) or 0) + tonumber(ARGV[12]) > lu) then\n"
    "    redis.call('HSETNX', KEYS[5], 'exhausted_ms', string.format('%.0f', math.floor(now / 1000)))\n"
    "    redis.call('EXPIRE', KEYS[5], " FC_STR(FC_BUDGET_TTL_S) ")\n"
    "    return {2, 0, left, eff, epoch}\n"
    "  end\n"
    "end\n"
    "local start = math.max(now, pause)\n"
    "local tat = {}\n"
    "for i = 1, 2 do\n"
    "  if tau[i] then\n"
    "    tat[i] = get(KEYS[i + 1])\n"
    "    start = math.max(start, tat[i] - tau[i])\n"
    "  end\n"
    "end\n"
    "local wait = start - now\n"
    "if wait > tonumber(ARGV[2]) then return {1, wait, left, eff, epoch} end\n"
    "for i = 1, 2 do\n"
    "  if tau[i] then put(KEYS[i + 1], math.max(tat[i], start) + inc[i]) end\n"
    "end\n"
    "return {0, wait, left, eff, epoch}\n";

const char *fc_limiter_script(void) {
    return script;
}

struct fc_limiter {
    fc_redis *redis;              /* borrowed; NULL = always down */
    char prefix[FC_KEY_MAX / 2 + 1]; /* for the job keys */
    char key_pause[FC_KEY_MAX];
    char key_limit[LIM_N][FC_KEY_MAX]; /* calls, tokens */
    char key_rate[FC_KEY_MAX];    /* the adapted calls rate */
    int adaptive;                 /* conf.adaptive, and a calls limit to adapt */
    fc_adapt adapt;               /* its parameters */
    double eff_rate;              /* effective calls/s as last seen */
    long long epoch;              /* the adapted rate's epoch as last seen */
    int64_t advised_at;           /* when advice last reached Redis, monotonic us; -1 never */
    char sha[41];                 /* SHA-1 of script, for EVALSHA */
    fc_gcra fleet[LIM_N];         /* fleet-wide limits (interval 0 = unlimited) */
    fc_gcra local[LIM_N];         /* this instance's share for FC_LIMITER_LOCAL */
    int64_t local_tat[LIM_N];     /* local fallback state, monotonic us */
    int64_t local_pause;          /* local pause deadline, monotonic us */
    int64_t fleet_pause;          /* fleet pause deadline last seen in Redis, monotonic us */
    int64_t pause_checked;        /* when the fleet pause was last read, monotonic us */
    int fallback;
    int64_t max_wait_us;
    int down;                     /* Redis found unavailable; retry at next_try_us */
    int64_t backoff_us;           /* current reconnect backoff */
    int64_t next_try_us;          /* monotonic us */
    fc_limiter_clock_fn clock;
    void *clock_arg;
    fc_limiter_stats stats;
};

/* ---- RATE_LIMITS parsing --------------------------------------------------------- */

double fc_limit_default_burst(double per_sec) { return per_sec > 1.0 ? per_sec : 1.0; }

int fc_limit_validate(fc_limit lim, const char *what, char *err, size_t errlen) {
    if (!isfinite(lim.per_sec) || lim.per_sec < 0) {
        snprintf(err, errlen, "%s: rate %g/s must be a finite number >= 0", what, lim.per_sec);
        return FC_ERANGE;
    }
    if (lim.per_sec == 0) return FC_OK;
    if (!isfinite(lim.burst) || lim.burst < 1) {
        snprintf(err, errlen, "%s: burst %g must be a finite number >= 1", what, lim.burst);
        return FC_ERANGE;
    }
    double span_us = lim.burst * ((double)US_PER_SEC / lim.per_sec);
    if (!(span_us <= (double)FC_LIMIT_SPAN_MAX_US)) {
        snprintf(err, errlen, "%s: burst %g at %g/s takes %.3g years to refill (at most 10): raise the rate or "
                 "lower the burst", what, lim.burst, lim.per_sec, span_us / (365.25 * 86400 * US_PER_SEC));
        return FC_ERANGE;
    }
    return FC_OK;
}

static int api_name_ok(const char *s, size_t len) {
    if (len == 0 || len >= FC_LIMITS_API_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.') return 0;
    }
    return 1;
}

/* parse_number reads a plain non-negative decimal at s (no sign, inf, nan or hex); returns
 * the end pointer or NULL. */
static const char *parse_number(const char *s, double *v) {
    if (!isdigit((unsigned char)*s) && *s != '.') return NULL;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) return NULL;
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (end == s || errno || !isfinite(*v) || *v < 0 || *v > 1e12) return NULL;
    return end;
}

/* unit_seconds maps "/s" etc. (exactly, up to the next ',' or end) to seconds; 0 if unknown. */
static double unit_seconds(const char *u, size_t len) {
    static const struct { const char *name; double secs; } units[] = {
        {"/s", 1}, {"/sec", 1}, {"/min", 60}, {"/h", 3600}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strlen(units[i].name) == len && memcmp(units[i].name, u, len) == 0) return units[i].secs;
    return 0;
}

/* parse_limit parses "RATE/UNIT[,burst=N]" in part (NUL-terminated); what names it in errors. */
static int parse_limit(const char *part, fc_limit *out, const char *what, char *err, size_t errlen) {
    double rate, burst = 0;
    const char *p = parse_number(part, &rate);
    if (!p) {
        snprintf(err, errlen, "%s '%s': rate must be a non-negative number", what, part);
        return FC_EPARSE;
    }
    size_t ulen = strcspn(p, ",");
    double secs = unit_seconds(p, ulen);
    if (secs == 0) {
        snprintf(err, errlen, "%s '%s': unknown unit '%.*s' (use /s, /sec, /min or /h)", what, part, (int)ulen, p);
        return FC_EPARSE;
    }
    p += ulen;
    if (*p) {
        const char *q = strncmp(p, ",burst=", 7) == 0 ? parse_number(p + 7, &burst) : NULL;
        if (!q || *q) {
            snprintf(err, errlen, "%s '%s': expected ',burst=N' after the rate, got '%s'", what, part, p);
            return FC_EPARSE;
        }
        if (burst < 1) {
            snprintf(err, errlen, "%s '%s': burst must be >= 1", what, part);
            return FC_ERANGE;
        }
    }
    out->per_sec = rate / secs;
    out->burst = burst > 0 ? burst : fc_limit_default_burst(out->per_sec);
    char named[512];
    snprintf(named, sizeof(named), "%s '%s'", what, part);
    return fc_limit_validate(*out, named, err, errlen);
}

/* parse_entry parses "api=LIMIT[;tokens=LIMIT]" (NUL-terminated, writable) into e. */
static int parse_entry(char *entry, fc_api_limits *e, char *err, size_t errlen) {
    char *eq = strchr(entry, '=');
    if (!eq || !api_name_ok(entry, (size_t)(eq - entry))) {
        snprintf(err, errlen, "'%s': expected api=RATE/UNIT with api made of [A-Za-z0-9_.-] (max %d chars)",
                 entry, FC_LIMITS_API_MAX - 1);
        return FC_EPARSE;
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->api, entry, (size_t)(eq - entry));
    e->tokens.burst = 1;
    char *semi = strchr(eq + 1, ';');
    if (semi) *semi = '\0';
    int rc = parse_limit(eq + 1, &e->calls, e->api, err, errlen);
    if (rc != FC_OK || !semi) return rc;
    if (strncmp(semi + 1, "tokens=", 7) != 0) {
        snprintf(err, errlen, "%s: '%s': expected ';tokens=RATE/UNIT'", e->api, semi + 1);
        return FC_EPARSE;
    }
    char what[FC_LIMITS_API_MAX + 8];
    snprintf(what, sizeof(what), "%s tokens", e->api);
    return parse_limit(semi + 8, &e->tokens, what, err, errlen);
}

int fc_limits_parse(const char *spec, fc_api_limits *out, size_t max, size_t *n, char *err, size_t errlen) {
    *n = 0;
    for (const char *p = spec ? spec : ""; *p;) {
        p += strspn(p, " \t\n");
        size_t len = strcspn(p, " \t\n");
        if (len == 0) break;
        char entry[256];
        if (len >= sizeof(entry) || *n >= max) {
            snprintf(err, errlen, "'%.*s': %s", (int)(len > 60 ? 60 : len), p,
                     *n >= max ? "too many APIs" : "entry too long");
            return FC_ETOOBIG;
        }
        memcpy(entry, p, len);
        entry[len] = '\0';
        int rc = parse_entry(entry, &out[*n], err, errlen);
        if (rc != FC_OK) return rc;
        if (fc_limits_find(out, *n, out[*n].api)) {
            snprintf(err, errlen, "'%s': API listed twice", out[*n].api);
            return FC_EPARSE;
        }
        (*n)++;
        p += len;
    }
    return FC_OK;
}

const fc_api_limits *fc_limits_find(const fc_api_limits *v, size_t n, const char *api) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].api, api) == 0) return &v[i];
    return NULL;
}

/* ---- GCRA core ------------------------------------------------------------------- */

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

void fc_gcra_init(fc_gcra *g, fc_limit lim, int divisor) {
    memset(g, 0, sizeof(*g));
    if (divisor < 1) divisor = 1;
    if (!(lim.per_sec > 0)) return;
    double burst = lim.burst / divisor;
    if (burst < 1) burst = 1;
    g->interval_us = (double)US_PER_SEC * divisor / lim.per_sec;
    g->tau_us = llround((burst - 1) * g->interval_us);
}

int64_t fc_gcra_cost_us(const fc_gcra *g, double cost) {
    double us = cost * g->interval_us;
    if (isnan(us)) return 0;
    if (us > (double)FC_LIMIT_SPAN_MAX_US) return FC_LIMIT_SPAN_MAX_US;
    if (us < -(double)FC_LIMIT_SPAN_MAX_US) return -FC_LIMIT_SPAN_MAX_US;
    return llround(us);
}

int fc_gcra_reserve(int64_t tat[], const fc_gcra lim[], size_t n, int64_t now_us, int64_t pause_us,
                    const double costs[], int64_t max_wait_us, int64_t *wait_us) {
    int64_t start = max64(now_us, pause_us);
    for (size_t i = 0; i < n; i++)
        if (lim[i].interval_us > 0) start = max64(start, tat[i] - lim[i].tau_us);
    *wait_us = start - now_us;
    if (*wait_us > max_wait_us) return FC_EBUSY;
    for (size_t i = 0; i < n; i++)
        if (lim[i].interval_us > 0) tat[i] = max64(tat[i], start) + fc_gcra_cost_us(&lim[i], costs[i]);
    return FC_OK;
}

void fc_gcra_adjust(int64_t *tat, int64_t now_us, int64_t delta_us) {
    int64_t cap = now_us + FC_GCRA_AHEAD_MAX_US;
    if (delta_us > FC_GCRA_AHEAD_MAX_US) delta_us = FC_GCRA_AHEAD_MAX_US;
    if (delta_us < -FC_GCRA_AHEAD_MAX_US) delta_us = -FC_GCRA_AHEAD_MAX_US;
    int64_t v = max64(max64(*tat, now_us) + delta_us, now_us);
    *tat = v < cap ? v : cap;
}

/* ---- SHA-1 (FIPS 180-4), only to name the script for EVALSHA --------------------- */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        else f = b ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol32(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void fc_limiter_sha1_hex(const void *data, size_t len, char hex[41]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    size_t full = len / 64 * 64;
    for (size_t off = 0; off < full; off += 64) sha1_block(h, p + off);
    unsigned char tail[128] = {0};
    size_t rest = len - full, tlen = rest < 56 ? 64 : 128;
    if (rest) memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < tlen; off += 64) sha1_block(h, tail + off);
    for (int i = 0; i < 5; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
}

/* ---- The limiter ----------------------------------------------------------------- */

static int64_t mono_us(void *arg) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * US_PER_SEC + ts.tv_nsec / 1000;
}

static int64_t now_us(const fc_limiter *l) { return l->clock(l->clock_arg); }

void fc_limiter_set_clock(fc_limiter *l, fc_limiter_clock_fn fn, void *arg) {
    l->clock = fn ? fn : mono_us;
    l->clock_arg = fn ? arg : NULL;
}

/* share returns the part of lim one of divisor instances applies locally (burst stays >= 1). */
static fc_limit share(fc_limit lim, int divisor) {
    double burst = lim.burst / divisor;
    return (fc_limit){lim.per_sec / divisor, burst < 1 ? 1 : burst};
}

/* adapt_check returns 0 when c's adaptive settings are usable, else FC_ERANGE with why. */
static int adapt_check(const fc_limiter_conf *c, char *err, size_t errlen) {
    if (!isfinite(c->adapt_floor) || c->adapt_floor < 0 || !isfinite(c->adapt_add) || c->adapt_add < 0) {
        snprintf(err, errlen, "adapt_floor %g and adapt_add %g must be finite numbers >= 0", c->adapt_floor,
                 c->adapt_add);
        return FC_ERANGE;
    }
    if (!(c->adapt_beta >= 0 && c->adapt_beta < 1)) {
        snprintf(err, errlen, "adapt_beta %g must be in [0, 1) (0: the default %g)", c->adapt_beta, FC_ADAPT_BETA);
        return FC_ERANGE;
    }
    return FC_OK;
}

/* conf_check returns 0 when c is usable, else FC_EINVAL or FC_ERANGE with why in err. */
static int conf_check(const fc_limiter_conf *c, char *err, size_t errlen) {
    if (!c || !c->prefix || !c->api || !api_name_ok(c->api, strlen(c->api)) || strlen(c->prefix) > FC_KEY_MAX / 2) {
        snprintf(err, errlen, "prefix and api [A-Za-z0-9_.-] required");
        return FC_EINVAL;
    }
    if (c->fallback != FC_LIMITER_PAUSE && c->fallback != FC_LIMITER_LOCAL) {
        snprintf(err, errlen, "unknown fallback %d", c->fallback);
        return FC_EINVAL;
    }
    if (c->max_wait_ms < 0 || c->max_wait_ms > FC_LIMIT_SPAN_MAX_US / 1000 || c->fleet_size < 0) {
        snprintf(err, errlen, "max_wait_ms %ld or fleet_size %d out of range", c->max_wait_ms, c->fleet_size);
        return FC_ERANGE;
    }
    int fleet = c->fleet_size > 0 ? c->fleet_size : 1;
    const fc_limit lims[4] = {c->calls, c->tokens, share(c->calls, fleet), share(c->tokens, fleet)};
    static const char *const names[4] = {"calls", "tokens", "calls (local share)", "tokens (local share)"};
    for (int i = 0; i < 4; i++) {
        int rc = fc_limit_validate(lims[i], names[i], err, errlen);
        if (rc != FC_OK) return rc;
    }
    return adapt_check(c, err, errlen);
}

/* adapt_init fills l's adaptive parameters from c (defaults in fc_limiter.h). The floor is
 * kept at or below the configured rate, and at or above FC_ADAPT_FLOOR_MIN so that the interval
 * it gives stays within FC_LIMIT_SPAN_MAX_US. */
#define FC_ADAPT_FLOOR_MIN 0.001
static void adapt_init(fc_limiter *l, const fc_limiter_conf *c) {
    fc_adapt *a = &l->adapt;
    a->conf = c->calls.per_sec;
    a->burst = c->calls.burst;
    a->floor = c->adapt_floor > 0 ? c->adapt_floor : fmax(0.05, a->conf / 100);
    a->floor = fmin(fmax(a->floor, FC_ADAPT_FLOOR_MIN), a->conf);
    a->add = c->adapt_add > 0 ? c->adapt_add : fmax(0.01, a->conf / 300);
    a->beta = c->adapt_beta > 0 ? c->adapt_beta : FC_ADAPT_BETA;
    l->adaptive = c->adaptive && a->conf > 0;
    l->eff_rate = a->conf;
    l->advised_at = -1;
}

fc_limiter *fc_limiter_new(fc_redis *r, const fc_limiter_conf *c) {
    char why[256];
    if (conf_check(c, why, sizeof(why)) != FC_OK) {
        fc_error("rate limiter %s: invalid configuration: %s", c && c->api ? c->api : "(none)", why);
        return NULL;
    }
    fc_limiter *l = calloc(1, sizeof(*l));
    if (!l) return NULL;
    l->redis = r;
    snprintf(l->prefix, sizeof(l->prefix), "%s", c->prefix);
    if (fc_key_limit(l->key_pause, FC_KEY_MAX, c->prefix, c->api, FC_LIMIT_PAUSE) != FC_OK ||
        fc_key_limit(l->key_limit[LIM_CALLS], FC_KEY_MAX, c->prefix, c->api, FC_LIMIT_CALLS) != FC_OK ||
        fc_key_limit(l->key_limit[LIM_TOKENS], FC_KEY_MAX, c->prefix, c->api, FC_LIMIT_TOKENS) != FC_OK ||
        fc_key_limit(l->key_rate, FC_KEY_MAX, c->prefix, c->api, FC_LIMIT_RATE) != FC_OK) {
        fc_error("rate limiter %s: key names too long", c->api);
        free(l);
        return NULL;
    }
    fc_limiter_sha1_hex(script, strlen(script), l->sha);
    int fleet = c->fleet_size > 0 ? c->fleet_size : 1;
    fc_gcra_init(&l->fleet[LIM_CALLS], c->calls, 1);
    fc_gcra_init(&l->fleet[LIM_TOKENS], c->tokens, 1);
    fc_gcra_init(&l->local[LIM_CALLS], c->calls, fleet);
    fc_gcra_init(&l->local[LIM_TOKENS], c->tokens, fleet);
    adapt_init(l, c);
    l->fallback = c->fallback;
    l->max_wait_us = (int64_t)(c->max_wait_ms > 0 ? c->max_wait_ms : DEFAULT_MAX_WAIT_MS) * 1000;
    fc_limiter_set_clock(l, NULL, NULL);
    return l;
}

void fc_limiter_free(fc_limiter *l) { free(l); }

void fc_limiter_stats_get(const fc_limiter *l, fc_limiter_stats *out) { *out = l->stats; }

/* mark_down records that Redis gave no grant (why: its error, or what was wrong with the
 * answer) and schedules the next attempt: 100 ms, doubling to 5 s while it stays so. */
static void mark_down(fc_limiter *l, int64_t now, const char *why) {
    if (!l->down) fc_warn("rate limiter %s: redis unavailable (%s), %s", l->key_pause, why,
                          l->fallback == FC_LIMITER_LOCAL ? "applying the local share" : "pausing");
    l->backoff_us = l->down ? l->backoff_us * 2 : BACKOFF_MIN_US;
    if (l->backoff_us > BACKOFF_MAX_US) l->backoff_us = BACKOFF_MAX_US;
    l->next_try_us = now + l->backoff_us;
    l->down = 1;
    l->stats.redis_failures++;
}

/* ---- Script arguments ------------------------------------------------------------- */

/* args_str appends s (borrowed: it must outlive the call) to a. */
static void args_str(fc_limiter_args *a, const char *s) {
    if (a->argc < FC_LIMITER_ARGS_MAX) a->argv[a->argc++] = s;
}

/* args_int and args_dbl append a number, written into a's own buffer. */
static void args_int(fc_limiter_args *a, long long v) {
    if (a->argc >= FC_LIMITER_ARGS_MAX) return;
    snprintf(a->num[a->argc], sizeof(a->num[0]), "%lld", v);
    a->argv[a->argc] = a->num[a->argc];
    a->argc++;
}

static void args_dbl(fc_limiter_args *a, double v) {
    if (a->argc >= FC_LIMITER_ARGS_MAX) return;
    snprintf(a->num[a->argc], sizeof(a->num[0]), "%.9g", v);
    a->argv[a->argc] = a->num[a->argc];
    a->argc++;
}

/* args_begin starts a call of mode: the command slots, the keys (with a->key_budget when
 * budget, which the caller filled) and the mode. */
static void args_begin(const fc_limiter *l, fc_limiter_args *a, int budget, const char *mode) {
    a->argc = 2;
    a->argv[0] = a->argv[1] = NULL;
    args_int(a, budget ? 5 : 4);
    args_str(a, l->key_pause);
    args_str(a, l->key_limit[LIM_CALLS]);
    args_str(a, l->key_limit[LIM_TOKENS]);
    args_str(a, l->key_rate);
    if (budget) args_str(a, a->key_budget);
    args_str(a, mode);
}

/* args_adapt appends the adapted rate's conf, floor and add. */
static void args_adapt(const fc_limiter *l, fc_limiter_args *a) {
    args_dbl(a, l->adapt.conf);
    args_dbl(a, l->adapt.floor);
    args_dbl(a, l->adapt.add);
}

/* budget_on says whether b asks for a budget check: a job and at least one limit. */
static int budget_on(const fc_budget *b) {
    return b && b->job_id && b->job_id[0] && (b->limit_tokens > 0 || b->limit_uusd > 0);
}

static int job_named(const fc_budget *b) { return b && b->job_id && b->job_id[0]; }

/* args_job writes job's budget key into a->key_budget: 0 or FC_ETOOBIG. */
static int args_job(const fc_limiter *l, fc_limiter_args *a, const char *job) {
    return fc_key_job(a->key_budget, sizeof(a->key_budget), l->prefix, job, FC_JOB_BUDGET);
}

/* args_limit appends one limit's (tau_us, inc_us) for cost, or ('', '') when unlimited. */
static void args_limit(fc_limiter_args *a, const fc_gcra *g, double cost) {
    if (g->interval_us <= 0) {
        args_str(a, "");
        args_str(a, "");
        return;
    }
    args_int(a, g->tau_us);
    args_int(a, fc_gcra_cost_us(g, cost));
}

int fc_limiter_reserve_args(const fc_limiter *l, long cost_tokens, long long est_uusd, const fc_budget *b,
                            fc_limiter_args *a) {
    int budget = budget_on(b);
    if (budget && args_job(l, a, b->job_id) != FC_OK) return FC_ETOOBIG;
    args_begin(l, a, budget, "r");
    args_int(a, l->max_wait_us);
    args_limit(a, &l->fleet[LIM_CALLS], 1);
    args_limit(a, &l->fleet[LIM_TOKENS], (double)cost_tokens);
    if (l->adaptive) {
        args_adapt(l, a);
        args_dbl(a, l->adapt.burst);
    } else {
        for (int i = 0; i < 4; i++) args_str(a, "");
    }
    args_int(a, cost_tokens);
    args_int(a, est_uusd);
    args_int(a, budget ? b->limit_tokens : 0);
    args_int(a, budget ? b->limit_uusd : 0);
    return FC_OK;
}

/* ---- Script calls ----------------------------------------------------------------- */

/* What the script answered: v[0] the flag, then up to 4 integers; n of them in all. */
typedef struct answer {
    long long v[5];
    size_t n;
} answer;

/* eval sends the script (EVALSHA, EVAL on NOSCRIPT) and parses its array of integers (at
 * least two) into ans. */
static int eval(fc_limiter *l, fc_limiter_args *a, answer *ans) {
    fc_reply rep;
    a->argv[0] = "EVALSHA";
    a->argv[1] = l->sha;
    l->stats.redis_calls++;
    int rc = fc_redis_command(l->redis, &rep, a->argc, a->argv, NULL);
    if (rc == FC_ENOSCRIPT) {
        fc_reply_free(&rep);
        a->argv[0] = "EVAL";
        a->argv[1] = script;
        l->stats.redis_calls++;
        l->stats.eval_fallbacks++;
        rc = fc_redis_command(l->redis, &rep, a->argc, a->argv, NULL);
    }
    if (rc == FC_OK && (rep.type != FC_REPLY_ARRAY || rep.nelem < 2)) rc = FC_EPARSE;
    memset(ans, 0, sizeof(*ans));
    for (size_t i = 0; rc == FC_OK && i < rep.nelem && i < 5; i++) {
        if (rep.elem[i].type != FC_REPLY_INT) rc = FC_EPARSE;
        else ans->v[ans->n++] = rep.elem[i].integer;
    }
    fc_reply_free(&rep);
    return rc;
}

/* redis_eval is eval behind the availability gate: while Redis is marked down it returns
 * FC_ECONN without I/O until the backoff expires; then one attempt. Anything but an answer
 * of the script counts as Redis unavailable (FC_ECONN, the fallback applies): a lost
 * connection, a failed AUTH, and every error reply (OOM at maxmemory, NOAUTH, NOPERM, max
 * clients, BUSY, a script error...). Letting calls go on an error would turn the fleet's
 * limit off exactly when Redis is in trouble. Only an answer to a writing operation (writes
 * set) marks Redis available again: a Redis out of memory still answers the read-only
 * queries ('q', 'u', 'k', 'j') but refuses every reservation. */
static int redis_eval(fc_limiter *l, int writes, fc_limiter_args *a, answer *ans) {
    int64_t now = now_us(l);
    if (l->down && now < l->next_try_us) return FC_ECONN;
    if (!l->redis) {
        mark_down(l, now, "no client");
        return FC_ECONN;
    }
    if (l->down) l->stats.reconnect_tries++;
    int rc = eval(l, a, ans);
    if (rc != FC_OK) {
        mark_down(l, now, rc == FC_EPARSE ? "unexpected answer from the script" : fc_redis_errstr(l->redis));
        return FC_ECONN;
    }
    if (l->down && writes) {
        fc_info("rate limiter %s: redis answers again", l->key_pause);
        l->down = 0;
    }
    return FC_OK;
}

/* learn_rate keeps the effective rate (milli-calls/s, < 0: none) and epoch an answer carried. */
static void learn_rate(fc_limiter *l, long long milli, long long epoch) {
    if (milli < 0 || !l->adaptive) return;
    l->eff_rate = (double)milli / 1000.0;
    l->epoch = epoch;
}

static int unlimited(const fc_limiter *l) {
    return l->fleet[LIM_CALLS].interval_us <= 0 && l->fleet[LIM_TOKENS].interval_us <= 0;
}

/* wait_until_retry returns the microseconds until the next reconnect attempt (>= 0). */
static int64_t wait_until_retry(const fc_limiter *l) {
    int64_t w = l->next_try_us - now_us(l);
    return w > 0 ? w : 0;
}

static int acquire_local(fc_limiter *l, const double costs[], int64_t *wait_us) {
    int rc = fc_gcra_reserve(l->local_tat, l->local, LIM_N, now_us(l), l->local_pause, costs, l->max_wait_us,
                             wait_us);
    if (rc == FC_OK) l->stats.local_grants++;
    return rc;
}

/* acquire_redis reserves through the script: 0, FC_EBUSY, FC_EBUDGET, FC_ECONN (or FC_ETOOBIG
 * for a job id too long for a key). */
static int acquire_redis(fc_limiter *l, long cost_tokens, long long est_uusd, const fc_budget *b,
                         int64_t *wait_us) {
    fc_limiter_args a;
    int rc = fc_limiter_reserve_args(l, cost_tokens, est_uusd, b, &a);
    answer ans;
    if (rc == FC_OK) rc = redis_eval(l, 1, &a, &ans);
    if (rc != FC_OK) return rc;
    if (ans.n > 2) {
        int64_t now = now_us(l);
        l->fleet_pause = now + ans.v[2];
        l->pause_checked = now;
    }
    if (ans.n > 4) learn_rate(l, ans.v[3], ans.v[4]);
    *wait_us = ans.v[1];
    if (ans.v[0] == 2) {
        l->stats.budget_refusals++;
        return FC_EBUDGET;
    }
    return ans.v[0] ? FC_EBUSY : FC_OK;
}

/* pause_query reads the fleet pause from Redis at most every PAUSE_POLL_US. */
#define PAUSE_POLL_US 100000
static void pause_query(fc_limiter *l) {
    int64_t now = now_us(l);
    if (now - l->pause_checked < PAUSE_POLL_US) return;
    l->pause_checked = now;
    fc_limiter_args a;
    args_begin(l, &a, 0, "q");
    answer ans;
    if (redis_eval(l, 0, &a, &ans) == FC_OK) l->fleet_pause = now + ans.v[1];
}

int fc_limiter_usage(fc_limiter *l, double *usage) {
    const fc_gcra *g = &l->fleet[LIM_CALLS];
    *usage = 0;
    if (g->interval_us <= 0) return FC_EINVAL;
    fc_limiter_args a;
    args_begin(l, &a, 0, "u");
    answer ans;
    int rc = redis_eval(l, 0, &a, &ans);
    if (rc == FC_OK && ans.v[1] > 0) *usage = (double)ans.v[1] / (double)(g->tau_us + g->interval_us);
    return rc;
}

int64_t fc_limiter_pause_left_us(fc_limiter *l, int refresh) {
    if (refresh) pause_query(l);
    int64_t until = max64(l->local_pause, l->fleet_pause) - now_us(l);
    return until > 0 ? until : 0;
}

int fc_limiter_acquire_job(fc_limiter *l, long cost_tokens, long long est_uusd, const fc_budget *b,
                           int64_t *wait_us) {
    *wait_us = 0;
    if (cost_tokens < 0 || est_uusd < 0) return FC_EINVAL;
    int budget = budget_on(b);
    if (unlimited(l) && !budget) {
        /* No bucket to charge, but a 429 still pauses the fleet. */
        *wait_us = fc_limiter_pause_left_us(l, 1);
        return FC_OK;
    }
    int rc = acquire_redis(l, cost_tokens, est_uusd, b, wait_us);
    if (rc != FC_ECONN) return rc;
    *wait_us = wait_until_retry(l);
    if (budget || l->fallback != FC_LIMITER_LOCAL) return FC_ECONN;
    const double costs[LIM_N] = {1, (double)cost_tokens};
    return acquire_local(l, costs, wait_us);
}

int fc_limiter_acquire_us(fc_limiter *l, long cost_tokens, int64_t *wait_us) {
    return fc_limiter_acquire_job(l, cost_tokens, 0, NULL, wait_us);
}

int fc_limiter_acquire(fc_limiter *l, long cost_tokens, long *wait_ms) {
    int64_t us;
    int rc = fc_limiter_acquire_us(l, cost_tokens, &us);
    *wait_ms = (long)((us + 999) / 1000);
    return rc;
}

static void sleep_us(int64_t us) {
    if (us <= 0) return;
    struct timespec ts = {(time_t)(us / US_PER_SEC), (long)(us % US_PER_SEC) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int fc_limiter_acquire_blocking(fc_limiter *l, long cost_tokens, long timeout_ms) {
    int64_t deadline = mono_us(NULL) + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t wait;
        int rc = fc_limiter_acquire_us(l, cost_tokens, &wait);
        if (rc == FC_OK) {
            sleep_us(wait);
            return FC_OK;
        }
        if (rc != FC_EBUSY && rc != FC_ECONN) return rc;
        if (rc == FC_ECONN && wait < 1000) wait = 1000;
        if (timeout_ms >= 0 && mono_us(NULL) + wait > deadline) return FC_ETIMEOUT;
        sleep_us(wait);
    }
}

int fc_limiter_settle(fc_limiter *l, long delta_tokens, const fc_budget *b, long long tokens, long long uusd) {
    const fc_gcra *g = &l->fleet[LIM_TOKENS];
    int correct = g->interval_us > 0 && delta_tokens != 0, job = job_named(b);
    if (!correct && !job) return FC_OK;
    fc_limiter_args a;
    if (job && args_job(l, &a, b->job_id) != FC_OK) return FC_ETOOBIG;
    args_begin(l, &a, job, "s");
    if (correct) args_int(&a, fc_gcra_cost_us(g, (double)delta_tokens));
    else args_str(&a, "");
    args_int(&a, FC_GCRA_AHEAD_MAX_US);
    args_int(&a, job ? tokens : 0);
    args_int(&a, job ? uusd : 0);
    answer ans;
    int rc = redis_eval(l, 1, &a, &ans);
    if (rc == FC_ECONN && correct && l->fallback == FC_LIMITER_LOCAL) {
        const fc_gcra *lg = &l->local[LIM_TOKENS];
        fc_gcra_adjust(&l->local_tat[LIM_TOKENS], now_us(l), fc_gcra_cost_us(lg, (double)delta_tokens));
        if (!job) return FC_OK;
    }
    return rc;
}

int fc_limiter_correct(fc_limiter *l, long delta_tokens) { return fc_limiter_settle(l, delta_tokens, NULL, 0, 0); }

int fc_limiter_job_spent(fc_limiter *l, const char *job, long long *tokens, long long *uusd,
                         int64_t *exhausted_ms) {
    long long zero[3] = {0, 0, 0};
    if (tokens) *tokens = 0;
    if (uusd) *uusd = 0;
    if (exhausted_ms) *exhausted_ms = 0;
    if (!job || !job[0]) return FC_EINVAL;
    fc_limiter_args a;
    if (args_job(l, &a, job) != FC_OK) return FC_EINVAL;
    args_begin(l, &a, 1, "j");
    answer ans;
    int rc = redis_eval(l, 0, &a, &ans);
    const long long *v = rc == FC_OK && ans.n >= 4 ? &ans.v[1] : zero;
    if (tokens) *tokens = v[0];
    if (uusd) *uusd = v[1];
    if (exhausted_ms) *exhausted_ms = v[2];
    return rc;
}

int fc_limiter_pause(fc_limiter *l, long ms) {
    if (ms <= 0) return FC_OK;
    l->local_pause = max64(l->local_pause, now_us(l) + (int64_t)ms * 1000);
    fc_limiter_args a;
    args_begin(l, &a, 0, "p");
    args_int(&a, ms);
    answer ans;
    return redis_eval(l, 1, &a, &ans);
}

/* ---- Adaptive calls rate ----------------------------------------------------------- */

double fc_adapt_effective(const fc_adapt *a, double stored, int64_t changed_us, int advice, int64_t now_us) {
    if (stored < 0) return a->conf;
    int64_t since = changed_us + (advice ? FC_ADAPT_ADVICE_HOLD_US : 0);
    double grown = stored + a->add * (double)max64(0, now_us - since) / (double)US_PER_SEC;
    return fmax(a->floor, fmin(a->conf, grown));
}

void fc_adapt_gcra(fc_gcra *g, const fc_adapt *a, double eff) {
    double interval = (double)US_PER_SEC / eff;
    g->interval_us = floor(interval + 0.5);
    g->tau_us = (int64_t)floor((fmax(1, a->burst * eff / a->conf) - 1) * interval + 0.5);
}

int fc_rate_advice_eval(const fc_rate_advice *a, double conf, double *rate, long *pause_ms) {
    double used = a->limit - a->remaining;
    if (!(a->limit > 0 && a->remaining >= 0 && used > 0 && a->reset_ms > 0) || !isfinite(a->limit) ||
        !isfinite(a->reset_ms))
        return 0;
    double r = used / (a->reset_ms / 1000.0) * FC_ADAPT_ADVICE_SHARE;
    *rate = fmin(conf, r);
    *pause_ms = a->remaining <= 1 ? (long)ceil(fmin(a->reset_ms / used, (double)FC_LIMIT_SPAN_MAX_US / 1000)) : 0;
    return 1;
}

double fc_limiter_rate(const fc_limiter *l) { return l->eff_rate; }

long long fc_limiter_epoch(const fc_limiter *l) { return l->epoch; }

int fc_limiter_backoff(fc_limiter *l, long long epoch) {
    if (!l->adaptive) return FC_OK;
    fc_limiter_args a;
    args_begin(l, &a, 0, "b");
    args_int(&a, epoch);
    args_adapt(l, &a);
    args_dbl(&a, l->adapt.beta);
    answer ans;
    int rc = redis_eval(l, 1, &a, &ans);
    if (rc != FC_OK || ans.n < 4) return rc;
    if (ans.v[1]) l->stats.backoffs++;
    learn_rate(l, ans.v[2], ans.v[3]);
    return FC_OK;
}

/* advice_urgent says whether advice must reach Redis now, throttle or not: the provider's
 * bucket is (nearly) empty, or the rate moved by more than 10 % from the one last seen. */
static int advice_urgent(const fc_limiter *l, double rate, long pause_ms) {
    return pause_ms > 0 || fabs(rate - l->eff_rate) > 0.1 * l->eff_rate;
}

int fc_limiter_advise(fc_limiter *l, const fc_rate_advice *adv) {
    double rate;
    long pause_ms;
    if (!l->adaptive || !fc_rate_advice_eval(adv, l->adapt.conf, &rate, &pause_ms)) return FC_OK;
    rate = fmax(rate, l->adapt.floor);
    int64_t now = now_us(l);
    if (!advice_urgent(l, rate, pause_ms) && l->advised_at >= 0 && now - l->advised_at < FC_ADAPT_ADVICE_EVERY_US)
        return FC_OK;
    l->advised_at = now;
    if (pause_ms > 0) l->local_pause = max64(l->local_pause, now + (int64_t)pause_ms * 1000);
    fc_limiter_args a;
    args_begin(l, &a, 0, "a");
    args_adapt(l, &a);
    args_dbl(&a, rate);
    args_int(&a, pause_ms);
    answer ans;
    int rc = redis_eval(l, 1, &a, &ans);
    if (rc != FC_OK || ans.n < 4) return rc;
    l->stats.advice_sent++;
    if (pause_ms > 0) l->fleet_pause = now + ans.v[1];
    learn_rate(l, ans.v[2], ans.v[3]);
    return FC_OK;
}

int fc_limiter_rate_read(fc_limiter *l, double *effective, int *advised) {
    if (effective) *effective = l->adapt.conf;
    if (advised) *advised = 0;
    if (!l->adaptive) return FC_OK;
    fc_limiter_args a;
    args_begin(l, &a, 0, "k");
    args_adapt(l, &a);
    answer ans;
    int rc = redis_eval(l, 0, &a, &ans);
    if (rc != FC_OK || ans.n < 4) return rc;
    learn_rate(l, ans.v[2], ans.v[3]);
    if (effective) *effective = l->eff_rate;
    if (advised) *advised = ans.v[1] != 0;
    return FC_OK;
}
