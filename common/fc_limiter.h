/* Fleet-wide rate limiter: a GCRA token bucket per API kept in Redis and applied by one
 * Lua script in one round trip per acquire, with a pure C core that mirrors the script.
 *
 * Semantics (GCRA, reservation): for each limit the emission interval is T = 1/rate and
 * the tolerance tau = (burst - 1) * T; the state is "tat", the theoretical arrival time
 * in microseconds. An acquire computes start = max(now, pause, max_i(tat_i - tau_i)),
 * reserves the slot (tat_i = max(tat_i, start) + T_i * cost_i) and returns
 * wait = start - now: the caller sleeps once, then calls. No polling, no herd: N callers
 * at the same instant get waits 0, T, 2T, ... (after the burst). Time is Redis's TIME,
 * read once at the top of the script, never a worker's clock.
 *
 * Adaptive calls rate (conf.adaptive): providers may enforce less than RATE_LIMIT. The fleet
 * keeps one adapted calls rate in Redis (FC_LIMIT_RATE) that every reservation reads:
 *   - a 429 without rate headers cuts it to BETA x the effective rate (fc_limiter_backoff), at
 *     most once per "epoch": a call carries the epoch it was granted under, and only a call
 *     granted after the last decrease may decrease again (TCP's once per window), since the
 *     fleet reserves 1-2 s ahead and those calls, already on their way, would all see 429s;
 *     and cuts come at least FC_ADAPT_CUT_GAP_US apart;
 *   - between cuts it grows by ADD calls/s every second, never above calls.per_sec;
 *   - the provider's x-ratelimit-* headers set it directly (fc_limiter_advise), and the
 *     growth then waits until advice stops for FC_ADAPT_ADVICE_HOLD_US.
 * Why BETA 0.8 and ADD = max(0.01, calls.per_sec / 300) per second (the target: a provider
 * token bucket of 30/s, depth 30, behind RATE_LIMIT 60/s, 48 calls in flight): past the
 * provider's rate R the fleet drains the provider's bucket at ADD*t per second, so it runs
 * dry after t = sqrt(2*30/ADD) s, ADD*t = sqrt(60*ADD) calls/s over R. The 429s then come from
 * the calls already reserved (about 1.5 s at ~R/s): 1.5 * sqrt(60*ADD) of them, ~5 with
 * ADD 0.2 (60/300). A cut to 0.8 leaves the fleet ~3.3/s under R, and ADD brings it back over
 * R in ~17 s while the provider's bucket refills by ~28 calls (less than its 30: almost no
 * capacity wasted); a cycle is ~33 s, ~1000 calls, so ~0.5 % 429s and ~98 % of R on average.
 * Measured (tests/integration/test_limiter_adaptive.sh's simulation, 120 s, from 20 s on):
 * 0.8 / 0.2: 0.5-0.65 % 429s, 30.1-30.5/s; 0.8 / 0.6 (ADD = the default floor): 1.6 %, too
 * close to 2 %; 0.5 / 0.2: 24.2/s (the bucket fills up and overflows each cycle); 0.9 / 0.2:
 * 0.6 %, 30.0/s, but twice the cuts (each ~1.5 s late) to come down from a configured rate
 * twice the provider's, with 429s all along. ADD does not follow the floor: a high floor
 * would make the sawtooth faster and its 429s more frequent.
 * The floor (conf.adapt_floor) bounds the cuts. The local fallback (Redis unavailable)
 * applies the configured share, not the adapted rate. With the adaptive rate off, nothing
 * changes: no key read or written, and backoff and advice are no-ops.
 *
 * Per-job budgets (fc_limiter_acquire_job, fc_limiter_settle): the reservation script also
 * reads the job's spend (FC_JOB_BUDGET, slot {job}) and refuses a call that would pass the
 * budget. That script touches keys of two hash slots ({api} and {job}): fine on one Redis or a
 * Sentinel setup (the project's supported deployments), refused by a Redis Cluster.
 *
 * Not thread-safe: use one limiter (and one fc_redis) per thread. */
#ifndef FC_LIMITER_H
#define FC_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#include "fc_keys.h"
#include "fc_redis.h"

/* One limit. per_sec == 0 means unlimited. burst is the bucket capacity in units of cost
 * (calls, or tokens), at least 1.
 *
 * Default burst (when a spec omits burst=N): max(1, per_sec), see fc_limit_default_burst. */
typedef struct fc_limit {
    double per_sec; /* sustained rate, units per second; 0 = unlimited */
    double burst;   /* capacity, units; >= 1 */
} fc_limit;

/* fc_limit_default_burst returns max(1, per_sec): a fleet that was idle may start one
 * second's worth of calls at once, and any 1-second window then holds at most
 * burst + rate*1s = 2x the per-second rate. A larger burst would let an idle fleet hit the
 * provider harder than its per-second quota; a burst of 1 would serialise even a
 * handful of calls by T and make cold starts needlessly slow. Unlimited (0) gives 1. */
double fc_limit_default_burst(double per_sec);

/* The longest a limit's full bucket may take to refill, burst / per_sec: 10 years, in us.
 * Every derived value (interval, tau, the tat a reservation writes) then stays far inside
 * int64 and exact in the Lua script's doubles (Redis TIME + a few spans < 2^53 until ~2200).
 * A limit beyond it (e.g. 100 tokens/h with burst 1e12: 1,141 years) is refused, not run
 * with arithmetic that overflows. */
#define FC_LIMIT_SPAN_MAX_US (3652LL * 86400 * 1000000)

/* fc_limit_validate checks one limit for use: per_sec finite and >= 0 (0 = unlimited, then
 * burst is not looked at), burst finite and >= 1, and burst / per_sec at most
 * FC_LIMIT_SPAN_MAX_US. Returns 0, or FC_ERANGE with a message starting with what (e.g.
 * "RATE_LIMIT") in err. */
int fc_limit_validate(fc_limit lim, const char *what, char *err, size_t errlen);

/* ---- Configuration parsing: RATE_LIMITS ------------------------------------------- */

#define FC_LIMITS_API_MAX 64

/* The limits of one API as parsed from a RATE_LIMITS entry. */
typedef struct fc_api_limits {
    char api[FC_LIMITS_API_MAX]; /* [A-Za-z0-9_.-]+ */
    fc_limit calls;              /* calls per second; 0 = unlimited */
    fc_limit tokens;             /* tokens per second; 0 = unlimited (when absent) */
} fc_api_limits;

/* fc_limits_parse parses spec, e.g.
 *   "openrouter=600/min,burst=20;tokens=200000/min local=5/s"
 * Grammar: entries separated by spaces, each api=RATE/UNIT[,burst=N][;tokens=RATE/UNIT[,burst=N]],
 * units /s, /sec, /min, /h; RATE is a non-negative decimal (0 = unlimited), N a number >= 1.
 * Fills out[0..*n) (at most max entries; caller-owned array). Returns 0, or FC_EPARSE /
 * FC_ERANGE / FC_ETOOBIG with a message naming the offending part in err; every limit must
 * pass fc_limit_validate (FC_ERANGE naming the entry and its value otherwise). */
int fc_limits_parse(const char *spec, fc_api_limits *out, size_t max, size_t *n, char *err, size_t errlen);

/* fc_limits_find returns the entry for api in v[0..n), or NULL (borrowed pointer). */
const fc_api_limits *fc_limits_find(const fc_api_limits *v, size_t n, const char *api);

/* ---- Pure GCRA core (mirrors the Lua script exactly; integer microseconds) ----------- */

/* A limit prepared for the arithmetic. interval_us == 0 marks an unlimited limit, skipped. */
typedef struct fc_gcra {
    double interval_us; /* T = 1e6 / per_sec */
    int64_t tau_us;     /* (burst - 1) * T, rounded */
} fc_gcra;

/* fc_gcra_init prepares lim scaled to share = 1/divisor of the rate and burst (divisor 1 for
 * the fleet-wide limit, fleet_size for the local fallback; burst stays >= 1). The share must
 * pass fc_limit_validate (fc_limiter_new checks): then tau_us <= FC_LIMIT_SPAN_MAX_US and
 * fc_gcra_reserve keeps every tat within a few spans of now, far inside int64. */
void fc_gcra_init(fc_gcra *g, fc_limit lim, int divisor);

/* fc_gcra_cost_us returns the tat increment of cost units: round(cost * T) (may be < 0),
 * clamped to +-FC_LIMIT_SPAN_MAX_US (a cost that large blocks the limit for 10 years anyway)
 * so that no cost overflows the tat arithmetic; a NaN cost counts 0. */
int64_t fc_gcra_cost_us(const fc_gcra *g, double cost);

/* fc_gcra_reserve applies one acquire to n limits at once. tat[i] is limit i's state (us;
 * 0 = fresh), costs[i] its cost; pause_us the pause deadline (0 = none). Sets *wait_us
 * = start - now. Returns 0 when reserved (tat updated) or FC_EBUSY when the wait would
 * exceed max_wait_us (tat untouched). */
int fc_gcra_reserve(int64_t tat[], const fc_gcra lim[], size_t n, int64_t now_us, int64_t pause_us,
                    const double costs[], int64_t max_wait_us, int64_t *wait_us);

/* How far ahead of now a correction may push a tat: twice FC_LIMIT_SPAN_MAX_US. Corrections
 * are not gated by max_wait as reservations are, so without it they could add up past int64. */
#define FC_GCRA_AHEAD_MAX_US (2 * FC_LIMIT_SPAN_MAX_US)

/* fc_gcra_adjust corrects a charge after the fact: tat = max(max(tat, now) + delta_us, now),
 * at most now + FC_GCRA_AHEAD_MAX_US (delta_us is clamped to +-FC_GCRA_AHEAD_MAX_US first).
 * A negative delta refunds, but never below now (no credit beyond the bucket capacity). */
void fc_gcra_adjust(int64_t *tat, int64_t now_us, int64_t delta_us);

/* ---- The limiter ----------------------------------------------------------------- */

/* What applies while Redis is unavailable: unreachable, refusing AUTH, or answering an error
 * reply instead of a grant (see fc_limiter_acquire). */
enum fc_limiter_fallback {
    FC_LIMITER_PAUSE = 0, /* acquire fails with FC_ECONN, caller retries later */
    FC_LIMITER_LOCAL = 1  /* each process applies rate / fleet_size locally */
};

typedef struct fc_limiter_conf {
    const char *prefix;   /* key prefix, e.g. "flashcard" */
    const char *api;      /* API name, [A-Za-z0-9_.-]+; in a hash tag: one Cluster slot per API */
    fc_limit calls;       /* calls per second (cost 1 per acquire) */
    fc_limit tokens;      /* tokens per second (cost given to acquire) */
    int fallback;         /* enum fc_limiter_fallback */
    int fleet_size;       /* limiter instances in the fleet, for FC_LIMITER_LOCAL; 0 -> 1 */
    long max_wait_ms;     /* longest wait acquire reserves; 0 -> 30000 */
    int adaptive;         /* 1: the calls rate adapts, fleet-wide: never above calls.per_sec */
    double adapt_floor;   /* lowest adapted calls/s; 0 -> max(0.05, calls.per_sec / 100) */
    double adapt_beta;    /* multiplicative decrease after a 429, in (0, 1); 0 -> FC_ADAPT_BETA */
    double adapt_add;     /* additive increase, calls/s per second; 0 -> max(0.01, calls.per_sec / 300) */
} fc_limiter_conf;

#define FC_ADAPT_BETA 0.8
/* Cuts come at least this far apart (us): the provider's bucket, empty when the first 429s come,
 * takes about a second to show the effect of a cut; calls granted meanwhile under the new epoch
 * would each cut again (latency, not the provider, sets the pace) and take the rate far below it. */
#define FC_ADAPT_CUT_GAP_US 1000000
/* How long advice holds the rate before the additive increase resumes from it (us). */
#define FC_ADAPT_ADVICE_HOLD_US 10000000
/* The share of the provider's refill rate advice sets (a margin for rounding and lag). */
#define FC_ADAPT_ADVICE_SHARE 0.97
/* At most one advice round trip per this many us, unless urgent (see fc_limiter_advise). */
#define FC_ADAPT_ADVICE_EVERY_US 200000
/* The adapted rate's key expires this long after its last change (s; EXPIRE, which the project's ACL user
 * has, not PEXPIRE). */
#define FC_ADAPT_TTL_S 3600
/* A job's budget key expires this long after its last write (s): 7 days. */
#define FC_BUDGET_TTL_S 604800
/* (Plain integers: the script quotes them.) */

typedef struct fc_limiter fc_limiter;

/* Counters for logs, tests and benchmarks. */
typedef struct fc_limiter_stats {
    long redis_calls;     /* scripts sent (EVALSHA, plus EVAL re-sends) */
    long eval_fallbacks;  /* NOSCRIPT answers re-sent with EVAL */
    long redis_failures;  /* calls that found Redis down, refusing AUTH or answering an error */
    long reconnect_tries; /* calls attempted while marked down */
    long local_grants;    /* acquires served by the local fallback */
    long backoffs;        /* fc_limiter_backoff calls that cut the rate */
    long advice_sent;     /* fc_limiter_advise calls that reached Redis */
    long budget_refusals; /* acquires refused with FC_EBUDGET */
} fc_limiter_stats;

/* fc_limiter_new creates a limiter for one API. r is borrowed (not owned; may be NULL:
 * Redis is then always "down" and the fallback applies). Keys (fc_key_limit):
 * "<prefix>:rl:{<api>}:calls", ":tokens", ":pause", ":rate"; a job's budget is
 * "<prefix>:job:{<job>}:budget". Returns NULL on an invalid conf (the reason logged: calls
 * and tokens, and their local shares of fleet_size, must pass fc_limit_validate; max_wait_ms
 * at most FC_LIMIT_SPAN_MAX_US / 1000; adapt_floor and adapt_add finite and >= 0, adapt_beta
 * in [0, 1)) or out of memory.
 * Free with fc_limiter_free. */
fc_limiter *fc_limiter_new(fc_redis *r, const fc_limiter_conf *c);

/* fc_limiter_acquire reserves one call costing cost_tokens tokens (prompt bytes/4 +
 * max_tokens, estimated by the caller). Anything but a grant is no grant: Redis counts as
 * unavailable when it cannot be reached, refuses AUTH, or answers any error (OOM, NOAUTH,
 * NOPERM, max clients, BUSY, a script error; NOSCRIPT is re-sent with EVAL first), and then
 * the fallback decides: the local share in FC_LIMITER_LOCAL mode, no call in
 * FC_LIMITER_PAUSE mode. Returns:
 *   0          reserved (by Redis, or by the local share while Redis is unavailable in
 *              FC_LIMITER_LOCAL mode): sleep *wait_ms, then call;
 *   FC_EBUSY   the wait would exceed max_wait_ms: nothing reserved, retry after *wait_ms;
 *   FC_ECONN   Redis unavailable in FC_LIMITER_PAUSE mode: nothing reserved, retry after
 *              *wait_ms (the next attempt: at most one per backoff, 100 ms doubling to 5 s);
 *              the first failure is logged with the reason (fc_redis_errstr, no password);
 *   FC_EINVAL  cost_tokens < 0.
 * *wait_ms is rounded up. With both limits unlimited it returns 0 with no Redis call. */
int fc_limiter_acquire(fc_limiter *l, long cost_tokens, long *wait_ms);

/* fc_limiter_acquire_us is fc_limiter_acquire with the wait in microseconds. */
int fc_limiter_acquire_us(fc_limiter *l, long cost_tokens, int64_t *wait_us);

/* fc_limiter_acquire_blocking is the convenience of the seed's DistributedRateLimiter.acquire():
 * it acquires, sleeping the returned waits (also across FC_EBUSY and FC_ECONN retries) until
 * a slot is reserved and reached. timeout_ms < 0 waits forever. Returns 0, FC_ETIMEOUT
 * (nothing reserved) or FC_EINVAL. */
int fc_limiter_acquire_blocking(fc_limiter *l, long cost_tokens, long timeout_ms);

/* fc_limiter_correct charges delta_tokens more (or refunds when negative) to the token
 * bucket once the real usage is known; one round trip. Returns 0 (in FC_LIMITER_LOCAL mode
 * also when Redis is unavailable: the local bucket is corrected) or FC_ECONN (Redis
 * unavailable, as for acquire, in pause mode: the correction is dropped). */
int fc_limiter_correct(fc_limiter *l, long delta_tokens);

/* fc_limiter_pause pauses the whole fleet for ms milliseconds from now (Redis time) after
 * an HTTP 429; an existing later deadline is kept. Every acquire then starts no earlier than
 * the deadline and resumes at the limit (the burst after a pause is within the capacity).
 * Also pauses the local fallback. Returns 0 or FC_ECONN (Redis unavailable, as for acquire:
 * only the local pause applied). */
int fc_limiter_pause(fc_limiter *l, long ms);

/* fc_limiter_pause_left_us returns how long the fleet stays paused after a 429, as last seen
 * (every acquire learns it); with refresh it asks Redis, at most every 100 ms. 0 = not paused. */
int64_t fc_limiter_pause_left_us(fc_limiter *l, int refresh);

/* ---- Adaptive calls rate ----------------------------------------------------------- */

/* What a provider said about its request bucket (OpenAI's x-ratelimit-limit-requests,
 * -remaining-requests, -reset-requests); -1 = the header was absent. */
typedef struct fc_rate_advice {
    double limit;     /* the bucket's capacity, calls */
    double remaining; /* calls left in it now */
    double reset_ms;  /* time until it is full again, ms */
} fc_rate_advice;

/* The adapted rate's parameters as the script applies them (calls/s, calls/s per s). */
typedef struct fc_adapt {
    double conf;  /* calls.per_sec, the ceiling */
    double burst; /* calls.burst at the configured rate */
    double floor; /* lowest rate, <= conf */
    double add;   /* additive increase per second */
    double beta;  /* multiplicative decrease */
} fc_adapt;

/* fc_adapt_effective mirrors the script: the calls rate in force at now_us given the stored
 * rate (stored < 0: none stored, the configured rate), when it last changed (changed_us) and
 * whether it came from advice (the increase then starts FC_ADAPT_ADVICE_HOLD_US later):
 * min(conf, stored + add * seconds since), at least floor. */
double fc_adapt_effective(const fc_adapt *a, double stored, int64_t changed_us, int advice, int64_t now_us);

/* fc_adapt_gcra mirrors the script: the calls limit at rate eff, its burst scaled by
 * eff / conf (at least 1). */
void fc_adapt_gcra(fc_gcra *g, const fc_adapt *a, double eff);

/* fc_rate_advice_eval turns a's headers into a rate: the provider's refill rate is
 * r = (limit - remaining) / reset_s when 0 <= remaining < limit and reset_ms > 0 (a bucket
 * refilling continuously, full at reset). Sets *rate = min(conf, r * FC_ADAPT_ADVICE_SHARE)
 * and *pause_ms = the time one call takes to refill, reset_ms / (limit - remaining), rounded
 * up, when remaining <= 1 (else 0). Returns 1, or 0 when the headers give no rate (then
 * nothing is set). */
int fc_rate_advice_eval(const fc_rate_advice *a, double conf, double *rate, long *pause_ms);

/* fc_limiter_rate returns the effective calls/s as last seen by an acquire, backoff or advice
 * (the configured rate before any, and always when not adaptive). */
double fc_limiter_rate(const fc_limiter *l);

/* fc_limiter_epoch returns the adapted rate's epoch as last seen by an acquire (0 before
 * any): read it right after the acquire that granted a call, pass it to fc_limiter_backoff
 * if that call gets a 429. */
long long fc_limiter_epoch(const fc_limiter *l);

/* fc_limiter_backoff reports a 429 without rate advice (no x-ratelimit-* headers giving a
 * rate; with them, call fc_limiter_advise instead) for a call granted under epoch: when
 * epoch is still the fleet's, the rate becomes max(floor, beta * effective) and the epoch
 * moves on; otherwise (a decrease since) nothing changes. One round trip. Returns 0 (also
 * when not adaptive: nothing done) or FC_ECONN (Redis unavailable: nothing done). */
int fc_limiter_backoff(fc_limiter *l, long long epoch);

/* fc_limiter_advise applies the provider's headers (fc_rate_advice_eval): stores the rate
 * (mode "advice"; a lower rate than the effective one moves the epoch on) and, when
 * remaining <= 1, pauses the fleet for the time one call takes to refill (as
 * fc_limiter_pause, the local pause too). At most one round trip per
 * FC_ADAPT_ADVICE_EVERY_US per limiter, unless remaining <= 1 or the rate differs from
 * fc_limiter_rate by more than 10 %; headers without a rate are ignored. Returns 0 (also when
 * not adaptive, ignored, or throttled) or FC_ECONN. */
int fc_limiter_advise(fc_limiter *l, const fc_rate_advice *a);

/* fc_limiter_rate_read reads the fleet's effective calls rate from Redis into *effective
 * (calls/s) and whether it came from provider advice into *advised (either may be NULL).
 * When not adaptive: the configured rate and 0, without Redis. Returns 0 or FC_ECONN. */
int fc_limiter_rate_read(fc_limiter *l, double *effective, int *advised);

/* ---- Per-job budgets --------------------------------------------------------------- */

typedef struct fc_budget {
    const char *job_id;     /* NULL or "" = no budget */
    long long limit_tokens; /* 0 = no token budget */
    long long limit_uusd;   /* micro-USD; 0 = no USD budget */
} fc_budget;

/* fc_limiter_acquire_job is fc_limiter_acquire_us, but when b names a job with a limit the
 * same script first reads the job's spend (P:job:{job}:budget) and refuses with FC_EBUDGET
 * when spent tokens + cost_tokens > limit_tokens or spent uusd + est_uusd > limit_uusd:
 * nothing is reserved, the key's exhausted_ms is set (Redis time, first refusal only) and
 * *wait_us is 0. Nothing of the estimate is held in Redis (a crash would leak it): the
 * overshoot is at most the calls in flight when the budget ran out times the largest
 * call's cost. With a budget, Redis unavailable is FC_ECONN in both fallback modes (a budget
 * cannot be enforced locally). FC_EINVAL when cost_tokens or est_uusd < 0. */
int fc_limiter_acquire_job(fc_limiter *l, long cost_tokens, long long est_uusd, const fc_budget *b,
                           int64_t *wait_us);

/* fc_limiter_settle records a finished call in one round trip: the token bucket's
 * correction by delta_tokens (as fc_limiter_correct; skipped when 0) and, when b names a
 * job, its spend (HINCRBY tokens, uusd; the key kept 7 days). Returns 0 or FC_ECONN (Redis
 * unavailable: the spend is lost; the correction is applied to the local bucket in
 * FC_LIMITER_LOCAL mode, and without a job that is then a success, as fc_limiter_correct). */
int fc_limiter_settle(fc_limiter *l, long delta_tokens, const fc_budget *b, long long tokens, long long uusd);

/* fc_limiter_job_spent reads a job's spend: tokens, micro-USD and when it was first refused
 * (unix ms, 0 = never); any pointer may be NULL, absent fields read 0. Returns 0, FC_EINVAL
 * (no job) or FC_ECONN. */
int fc_limiter_job_spent(fc_limiter *l, const char *job, long long *tokens, long long *uusd,
                         int64_t *exhausted_ms);

/* The arguments of one script call as fc_limiter builds them (exposed for tests). argv[0]
 * and argv[1] are EVALSHA and the SHA, filled when sent; then numkeys, the keys (pause,
 * calls, tokens, rate and, with a budget, the job's budget key), the mode and its values. */
#define FC_LIMITER_ARGS_MAX 24
typedef struct fc_limiter_args {
    int argc;
    const char *argv[FC_LIMITER_ARGS_MAX];
    char num[FC_LIMITER_ARGS_MAX][32]; /* numbers written here */
    char key_budget[FC_KEY_MAX];
} fc_limiter_args;

/* fc_limiter_reserve_args builds the reservation of one call (mode 'r'); b as for
 * fc_limiter_acquire_job (NULL: none). Returns 0 or FC_ETOOBIG (the job id makes too long a key). */
int fc_limiter_reserve_args(const fc_limiter *l, long cost_tokens, long long est_uusd, const fc_budget *b,
                            fc_limiter_args *a);

/* fc_limiter_script returns the Lua the limiter runs (every operation, one SHA), for tools that
 * load it elsewhere (the fleet benchmark runs it under redis-benchmark). */
const char *fc_limiter_script(void);

/* fc_limiter_stats_get copies the counters. */
void fc_limiter_stats_get(const fc_limiter *l, fc_limiter_stats *out);

/* fc_limiter_usage sets *usage to the share of the fleet's call bucket in use now, read from
 * Redis: 0 when idle, 1 when the burst is spent and a new call waits, above 1 when calls are
 * already reserved further ahead. Returns 0, FC_ECONN (Redis unavailable, as for acquire;
 * *usage 0) or FC_EINVAL (no call limit). */
int fc_limiter_usage(fc_limiter *l, double *usage);

void fc_limiter_free(fc_limiter *l);

/* Test seam: the monotonic clock (us) used by the local fallback and reconnect backoff.
 * fn NULL restores CLOCK_MONOTONIC. */
typedef int64_t (*fc_limiter_clock_fn)(void *arg);
void fc_limiter_set_clock(fc_limiter *l, fc_limiter_clock_fn fn, void *arg);

/* fc_limiter_sha1_hex writes the SHA-1 of data as 40 hex digits + NUL into hex (used for
 * EVALSHA; exposed for tests). */
void fc_limiter_sha1_hex(const void *data, size_t len, char hex[41]);

#endif
