/* Unit tests of the rate limiter: the GCRA core against a fake clock, the local fallback,
 * reconnect pacing, error replies (injected through fc_redis's fault seam), RATE_LIMITS
 * parsing, extreme limits and the SHA-1 used for EVALSHA. No Redis needed. */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fc_error.h"
#include "fc_limiter.h"
#include "fc_log.h"
#include "fc_redis.h"

#define MS 1000LL
#define SEC 1000000LL
#define NO_MAX_WAIT (3600 * SEC)

static fc_gcra make(double per_sec, double burst) {
    fc_gcra g;
    fc_gcra_init(&g, (fc_limit){per_sec, burst}, 1);
    return g;
}

/* reserve1 does one reserve on a single limit with cost 1; returns the wait (us). */
static int64_t reserve1(int64_t *tat, const fc_gcra *g, int64_t now, int64_t pause) {
    const double cost = 1;
    int64_t wait = -1;
    assert_int_equal(fc_gcra_reserve(tat, g, 1, now, pause, &cost, NO_MAX_WAIT, &wait), FC_OK);
    return wait;
}

static void test_burst_then_steady(void **state) {
    (void)state;
    fc_gcra g = make(10, 5); /* T = 100 ms, tau = 400 ms */
    assert_int_equal(g.tau_us, 400 * MS);
    int64_t tat = 0, now = 1000 * SEC;
    for (int i = 0; i < 5; i++) assert_int_equal(reserve1(&tat, &g, now, 0), 0);
    assert_int_equal(reserve1(&tat, &g, now, 0), 100 * MS);
    /* Steady: one caller every T gets no wait. */
    /* tat = now + 600 ms: from now + 200 ms on, one caller every T gets no wait. */
    for (int64_t t = now + 200 * MS; t < now + 2200 * MS; t += 100 * MS) assert_int_equal(reserve1(&tat, &g, t, 0), 0);
    now += 2200 * MS;
    /* Idle for a long time: the bucket refills to the burst, not beyond. */
    now += 60 * SEC;
    for (int i = 0; i < 5; i++) assert_int_equal(reserve1(&tat, &g, now, 0), 0);
    assert_true(reserve1(&tat, &g, now, 0) > 0);
}

static void test_no_herd(void **state) {
    (void)state;
    fc_gcra g = make(50, 1); /* T = 20 ms, no burst */
    int64_t tat = 0, now = 5 * SEC;
    for (int i = 0; i < 10; i++) assert_int_equal(reserve1(&tat, &g, now, 0), i * 20 * MS);
    /* With burst 3, three go at once and the rest queue T apart. */
    fc_gcra b = make(50, 3);
    tat = 0;
    int64_t expect[] = {0, 0, 0, 20 * MS, 40 * MS, 60 * MS};
    for (int i = 0; i < 6; i++) assert_int_equal(reserve1(&tat, &b, now, 0), expect[i]);
}

static void test_token_limit_binds(void **state) {
    (void)state;
    fc_gcra lim[2] = {make(600.0 / 60, 20), make(6000.0 / 60, 1000)}; /* 10 calls/s; 100 tokens/s */
    int64_t tat[2] = {0, 0}, now = 10 * SEC, wait;
    const double costs[2] = {1, 500};
    assert_int_equal(fc_gcra_reserve(tat, lim, 2, now, 0, costs, NO_MAX_WAIT, &wait), FC_OK);
    assert_int_equal(wait, 0);
    assert_int_equal(fc_gcra_reserve(tat, lim, 2, now, 0, costs, NO_MAX_WAIT, &wait), FC_OK);
    assert_int_equal(wait, 0);
    /* tokens tat = now + 10 s, tau = 9.99 s: third waits 10 ms though calls have room. */
    assert_int_equal(fc_gcra_reserve(tat, lim, 2, now, 0, costs, NO_MAX_WAIT, &wait), FC_OK);
    assert_int_equal(wait, 10 * MS);
    assert_int_equal(tat[1], now + 15 * SEC);
    /* Both limits are charged even when one does not bind. */
    assert_int_equal(tat[0], now + 300 * MS);
    /* An unlimited limit (rate 0) is ignored. */
    fc_gcra open[2] = {make(0, 1), make(100, 1)};
    int64_t t2[2] = {0, 0};
    assert_int_equal(fc_gcra_reserve(t2, open, 2, now, 0, costs, NO_MAX_WAIT, &wait), FC_OK);
    assert_int_equal(t2[0], 0);
}

static void test_pause_then_resume_within_capacity(void **state) {
    (void)state;
    fc_gcra g = make(10, 3); /* T = 100 ms, tau = 200 ms */
    int64_t tat = 0, now = 100 * SEC, pause = now + 2 * SEC;
    /* Idle bucket, paused: the first three start at the deadline, then T apart. */
    int64_t expect[] = {2 * SEC, 2 * SEC, 2 * SEC, 2 * SEC + 100 * MS, 2 * SEC + 200 * MS};
    for (int i = 0; i < 5; i++) assert_int_equal(reserve1(&tat, &g, now + 500 * MS, pause), expect[i] - 500 * MS);
    /* Drained bucket before the pause: after it, still at most `burst` at the deadline. */
    tat = 0;
    for (int i = 0; i < 10; i++) reserve1(&tat, &g, now, 0); /* tat = now + 1 s */
    int at_deadline = 0;
    for (int i = 0; i < 10; i++)
        if (reserve1(&tat, &g, now, pause) == 2 * SEC) at_deadline++;
    assert_true(at_deadline >= 1 && at_deadline <= 3);
}

static void test_refund_and_correction(void **state) {
    (void)state;
    fc_gcra g = make(100, 1000); /* tokens: T = 10 ms, tau = 9.99 s */
    int64_t tat = 0, now = 50 * SEC;
    const double cost = 2000;
    int64_t wait;
    assert_int_equal(fc_gcra_reserve(&tat, &g, 1, now, 0, &cost, NO_MAX_WAIT, &wait), FC_OK);
    assert_int_equal(tat, now + 20 * SEC);
    /* The call used 500 tokens only: refund 1500. */
    fc_gcra_adjust(&tat, now, fc_gcra_cost_us(&g, -1500));
    assert_int_equal(tat, now + 5 * SEC);
    /* A refund larger than the charge never gives credit beyond a full bucket. */
    fc_gcra_adjust(&tat, now, fc_gcra_cost_us(&g, -100000));
    assert_int_equal(tat, now);
    /* An extra charge on an idle bucket counts from now, not from a stale tat. */
    int64_t old = now - 100 * SEC;
    fc_gcra_adjust(&old, now, fc_gcra_cost_us(&g, 300));
    assert_int_equal(old, now + 3 * SEC);
}

static void test_max_wait_refusal(void **state) {
    (void)state;
    fc_gcra g = make(1, 1);
    int64_t tat = 0, now = 7 * SEC, wait;
    const double cost = 1;
    for (int i = 0; i < 3; i++) reserve1(&tat, &g, now, 0); /* waits 0, 1 s, 2 s */
    int64_t before = tat;
    assert_int_equal(fc_gcra_reserve(&tat, &g, 1, now, 0, &cost, 2500 * MS, &wait), FC_EBUSY);
    assert_int_equal(wait, 3 * SEC);
    assert_int_equal(tat, before);
    assert_int_equal(fc_gcra_reserve(&tat, &g, 1, now, 0, &cost, 3 * SEC, &wait), FC_OK);
    assert_int_equal(wait, 3 * SEC);
    /* A pause beyond max_wait is refused too. */
    tat = 0;
    assert_int_equal(fc_gcra_reserve(&tat, &g, 1, now, now + 40 * SEC, &cost, 30 * SEC, &wait), FC_EBUSY);
    assert_int_equal(wait, 40 * SEC);
}

/* ---- The limiter object, with a fake clock and no Redis --------------------------- */

static int64_t fake_now;
static int64_t fake_clock(void *arg) {
    (void)arg;
    return fake_now;
}

/* clocked_limiter creates a limiter from c on the fake clock. */
static fc_limiter *clocked_limiter(fc_redis *r, const fc_limiter_conf *c) {
    fc_limiter *l = fc_limiter_new(r, c);
    assert_non_null(l);
    fc_limiter_set_clock(l, fake_clock, NULL);
    return l;
}

static fc_limiter *local_limiter(fc_redis *r, int fallback, double calls, double burst, int fleet) {
    fc_limiter_conf c = {.prefix = "test", .api = "api", .calls = {calls, burst}, .fallback = fallback,
                         .fleet_size = fleet};
    return clocked_limiter(r, &c);
}

static void test_local_fallback_rate_per_fleet(void **state) {
    (void)state;
    fake_now = 1000 * SEC;
    /* Fleet of 4 at 40/s burst 8: each process gets 10/s burst 2. */
    fc_limiter *l = local_limiter(NULL, FC_LIMITER_LOCAL, 40, 8, 4);
    long expect[] = {0, 0, 100, 200, 300};
    for (int i = 0; i < 5; i++) {
        long wait = -1;
        assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_OK);
        assert_int_equal(wait, expect[i]);
    }
    /* Over 10 s at one call per wait, about 100 grants: 10/s. */
    fake_now += 10 * SEC;
    int64_t end = fake_now + 10 * SEC;
    int grants = 0;
    while (fake_now < end) {
        int64_t w;
        assert_int_equal(fc_limiter_acquire_us(l, 0, &w), FC_OK);
        fake_now += w;
        if (fake_now < end) grants++;
    }
    assert_in_range(grants, 100, 102);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.redis_calls, 0);
    /* A local pause is honoured too (Redis down: fc_limiter_pause says so but pauses locally). */
    fake_now += 60 * SEC;
    assert_int_equal(fc_limiter_pause(l, 3000), FC_ECONN);
    int64_t w;
    assert_int_equal(fc_limiter_acquire_us(l, 0, &w), FC_OK);
    assert_int_equal(w, 3 * SEC);
    fc_limiter_free(l);
}

static void test_pause_mode_paces_reconnects(void **state) {
    (void)state;
    char err[128];
    /* Port 1 on loopback: connection refused at once. */
    fc_redis *r = fc_redis_new("redis://127.0.0.1:1", 200, err, sizeof(err));
    assert_non_null(r);
    fake_now = 50 * SEC;
    fc_limiter *l = local_limiter(r, FC_LIMITER_PAUSE, 10, 1, 1);
    long wait;
    fc_limiter_stats st;
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(wait, 100);
    /* Within the backoff: no new attempt, quick FC_ECONN with the remaining wait. */
    fake_now += 40 * MS;
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(wait, 60);
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.redis_calls, 1);
    assert_int_equal(st.reconnect_tries, 0);
    /* Attempts then come after 100, 200, 400 ... ms, capped at 5 s. */
    long expect[] = {200, 400, 800, 1600, 3200, 5000, 5000};
    fake_now += 60 * MS;
    for (int i = 0; i < 7; i++) {
        assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
        assert_int_equal(wait, expect[i]);
        fake_now += expect[i] * MS;
    }
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.reconnect_tries, 7);
    assert_int_equal(fc_limiter_pause(l, 1000), FC_ECONN);
    assert_int_equal(fc_limiter_correct(l, 10), FC_OK); /* no token limit: nothing to correct */
    fc_limiter_free(l);
    fc_redis_free(r);
}

static void test_local_mode_with_redis_down(void **state) {
    (void)state;
    char err[128];
    fc_redis *r = fc_redis_new("redis://127.0.0.1:1", 200, err, sizeof(err));
    fake_now = 70 * SEC;
    fc_limiter *l = local_limiter(r, FC_LIMITER_LOCAL, 20, 1, 2); /* 10/s each */
    int64_t w;
    assert_int_equal(fc_limiter_acquire_us(l, 5, &w), FC_OK);
    assert_int_equal(w, 0);
    assert_int_equal(fc_limiter_acquire_us(l, 5, &w), FC_OK);
    assert_int_equal(w, 100 * MS);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.local_grants, 2);
    assert_int_equal(st.redis_calls, 1);
    fc_limiter_free(l);
    fc_redis_free(r);
}

static void test_unlimited_needs_no_redis(void **state) {
    (void)state;
    fake_now = 1;
    fc_limiter *l = local_limiter(NULL, FC_LIMITER_PAUSE, 0, 1, 1);
    long wait = -1;
    for (int i = 0; i < 100; i++) assert_int_equal(fc_limiter_acquire(l, 1000, &wait), FC_OK);
    assert_int_equal(wait, 0);
    assert_int_equal(fc_limiter_acquire_blocking(l, 5, 0), FC_OK);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.redis_calls + st.redis_failures, 0);
    fc_limiter_free(l);
}

static void test_blocking_times_out_in_pause_mode(void **state) {
    (void)state;
    fc_limiter_conf c = {.prefix = "t", .api = "a", .calls = {5, 1}};
    fc_limiter *l = fc_limiter_new(NULL, &c);
    assert_int_equal(fc_limiter_acquire_blocking(l, 0, 50), FC_ETIMEOUT);
    assert_int_equal(fc_limiter_acquire(l, -1, &(long){0}), FC_EINVAL);
    fc_limiter_free(l);
}

static void test_new_rejects_bad_conf(void **state) {
    (void)state;
    fc_limiter_conf c = {.prefix = "t", .api = "bad{api}", .calls = {5, 1}};
    assert_null(fc_limiter_new(NULL, &c));
    c.api = "ok";
    c.fallback = 7;
    assert_null(fc_limiter_new(NULL, &c));
    c.fallback = FC_LIMITER_LOCAL;
    c.calls.per_sec = -1;
    assert_null(fc_limiter_new(NULL, &c));
    assert_null(fc_limiter_new(NULL, NULL));
    fc_limiter_free(NULL);
}

/* ---- Error replies: anything but a grant is no grant ------------------------------- */

/* The error replies a real Redis gives when it cannot grant: maxmemory with noeviction, a
 * missing or wrong password, an ACL, too many clients, a broken script, a busy script. */
static const char *const error_replies[] = {
    "OOM command not allowed when used memory > 'maxmemory'.",
    "NOAUTH Authentication required.",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "NOPERM this user has no permissions to run the 'evalsha' command",
    "ERR max number of clients reached",
    "ERR user_script:12: Script attempted to access nonexistent global variable 'x' script: abc",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "ERR unknown command 'EVALSHA', with args beginning with: ",
};

/* A fault that answers every command with one error reply (after a NOSCRIPT for the first
 * EVALSHA when noscript is set), counting the commands it saw. */
typedef struct error_fault {
    const char *reply;
    int noscript;
    int evalsha, eval;
} error_fault;

static int answer_error(void *arg, const char *cmd, char *text, size_t textlen) {
    error_fault *f = arg;
    int first = f->evalsha == 0;
    if (strcmp(cmd, "EVALSHA") == 0) f->evalsha++;
    if (strcmp(cmd, "EVAL") == 0) f->eval++;
    snprintf(text, textlen, "%s", f->noscript && first ? "NOSCRIPT No matching script. Please use EVAL." : f->reply);
    return FC_EREDIS;
}

/* erroring_limiter is a limiter (10 calls/s burst 2, 100 tokens/s burst 200, fleet of 2) whose
 * Redis answers every command with f's error reply. */
static fc_limiter *erroring_limiter(fc_redis **r, int fallback, error_fault *f) {
    char err[128];
    *r = fc_redis_new("redis://:pw@127.0.0.1:1", 200, err, sizeof(err));
    assert_non_null(*r);
    fc_redis_set_fault(*r, answer_error, f);
    fc_limiter_conf c = {.prefix = "test", .api = "api", .calls = {10, 2}, .tokens = {100, 200},
                         .fallback = fallback, .fleet_size = 2};
    fc_limiter *l = fc_limiter_new(*r, &c);
    assert_non_null(l);
    fc_limiter_set_clock(l, fake_clock, NULL);
    return l;
}

static void test_error_reply_pauses(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(error_replies) / sizeof(error_replies[0]); i++) {
        fake_now = 300 * SEC;
        error_fault f = {.reply = error_replies[i]};
        fc_redis *r;
        fc_limiter *l = erroring_limiter(&r, FC_LIMITER_PAUSE, &f);
        long wait = -1;
        int rc = fc_limiter_acquire(l, 10, &wait);
        if (rc != FC_ECONN) fail_msg("'%s': acquire gave %s, expected no grant", error_replies[i], fc_strerror(rc));
        assert_int_equal(wait, 100); /* retry when the backoff ends, as for Redis down */
        assert_string_equal(fc_redis_errstr(r), error_replies[i]);
        /* Within the backoff nothing is asked; after it, one attempt, refused again. */
        assert_int_equal(fc_limiter_acquire(l, 10, &wait), FC_ECONN);
        fake_now += 100 * MS;
        assert_int_equal(fc_limiter_acquire(l, 10, &wait), FC_ECONN);
        assert_int_equal(wait, 200);
        assert_int_equal(f.evalsha, 2);
        /* Correct, pause and usage give the same answer, never a bare error. */
        fake_now += 200 * MS;
        assert_int_equal(fc_limiter_correct(l, 50), FC_ECONN);
        fake_now += 400 * MS;
        assert_int_equal(fc_limiter_pause(l, 1000), FC_ECONN);
        fake_now += 800 * MS;
        double usage = -1;
        assert_int_equal(fc_limiter_usage(l, &usage), FC_ECONN);
        assert_true(usage == 0);
        fc_limiter_stats st;
        fc_limiter_stats_get(l, &st);
        assert_int_equal(st.redis_failures, 5);
        assert_int_equal(st.local_grants, 0);
        fc_limiter_free(l);
        fc_redis_free(r);
    }
}

static void test_error_reply_local_share(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(error_replies) / sizeof(error_replies[0]); i++) {
        fake_now = 400 * SEC;
        error_fault f = {.reply = error_replies[i]};
        fc_redis *r;
        fc_limiter *l = erroring_limiter(&r, FC_LIMITER_LOCAL, &f);
        /* The local share: 5 calls/s, burst 1; tokens 50/s, burst 100. */
        int64_t w = -1;
        int rc = fc_limiter_acquire_us(l, 10, &w);
        if (rc != FC_OK || w != 0) fail_msg("'%s': acquire gave %s wait %lld, expected a local grant",
                                           error_replies[i], fc_strerror(rc), (long long)w);
        assert_int_equal(fc_limiter_acquire_us(l, 10, &w), FC_OK);
        assert_int_equal(w, 200 * MS);
        /* Over 10 s, one call per wait: 5/s (the first 400 ms are the two calls above),
         * however often Redis is asked again. */
        int64_t end = fake_now + 10 * SEC;
        int grants = 0;
        while (fake_now < end) {
            assert_int_equal(fc_limiter_acquire_us(l, 0, &w), FC_OK);
            fake_now += w;
            if (fake_now < end) grants++;
        }
        assert_int_equal(grants, 48);
        /* Tokens: a correction charges the local bucket. */
        fake_now += 60 * SEC;
        assert_int_equal(fc_limiter_correct(l, 500), FC_OK); /* 10 s of 50 tokens/s ahead */
        assert_int_equal(fc_limiter_acquire_us(l, 0, &w), FC_OK);
        assert_int_equal(w, 8020 * MS); /* less tau: 99 tokens of the burst, 1.98 s */
        fc_limiter_stats st;
        fc_limiter_stats_get(l, &st);
        assert_true(st.local_grants >= 50);
        assert_true(st.redis_failures >= 3 && st.redis_failures < 20); /* backoff, not one try per call */
        fc_limiter_free(l);
        fc_redis_free(r);
    }
}

static void test_noscript_then_error(void **state) {
    (void)state;
    /* NOSCRIPT is still re-sent with EVAL; an error to the EVAL is no grant. */
    fake_now = 500 * SEC;
    error_fault f = {.reply = error_replies[0], .noscript = 1};
    fc_redis *r;
    fc_limiter *l = erroring_limiter(&r, FC_LIMITER_PAUSE, &f);
    long wait;
    assert_int_equal(fc_limiter_acquire(l, 0, &wait), FC_ECONN);
    assert_int_equal(f.evalsha, 1);
    assert_int_equal(f.eval, 1);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.eval_fallbacks, 1);
    assert_int_equal(st.redis_calls, 2);
    assert_int_equal(fc_limiter_acquire_blocking(l, 0, 50), FC_ETIMEOUT);
    fc_limiter_free(l);
    fc_redis_free(r);
}

/* ---- Parsing ---------------------------------------------------------------------- */

static void test_parse_spec(void **state) {
    (void)state;
    fc_api_limits v[4];
    size_t n;
    char err[256];
    assert_int_equal(fc_limits_parse(" openrouter=600/min,burst=20;tokens=200000/min  local=5/s groq=0/h ", v, 4,
                                     &n, err, sizeof(err)),
                     FC_OK);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].api, "openrouter");
    assert_true(v[0].calls.per_sec == 10.0 && v[0].calls.burst == 20.0);
    assert_float_equal(v[0].tokens.per_sec, 200000.0 / 60, 1e-9);
    assert_float_equal(v[0].tokens.burst, 200000.0 / 60, 1e-9); /* default max(1, rate/s) */
    const fc_api_limits *loc = fc_limits_find(v, n, "local");
    assert_non_null(loc);
    assert_true(loc->calls.per_sec == 5.0 && loc->calls.burst == 5.0 && loc->tokens.per_sec == 0);
    assert_true(v[2].calls.per_sec == 0 && v[2].calls.burst == 1);
    assert_null(fc_limits_find(v, n, "nope"));
    assert_int_equal(fc_limits_parse("a=90/sec,burst=2.5;tokens=7200/h,burst=100", v, 4, &n, err, sizeof(err)), 0);
    assert_true(v[0].calls.per_sec == 90 && v[0].calls.burst == 2.5);
    assert_true(v[0].tokens.per_sec == 2 && v[0].tokens.burst == 100);
    assert_true(fc_limit_default_burst(0.5) == 1.0);
    assert_int_equal(fc_limits_parse("", v, 4, &n, err, sizeof(err)), FC_OK);
    assert_int_equal(n, 0);
}

/* expect_error checks that spec fails with code and that err mentions needle. */
static void expect_error(const char *spec, int code, const char *needle) {
    fc_api_limits v[2];
    size_t n;
    char err[256] = "";
    assert_int_equal(fc_limits_parse(spec, v, 2, &n, err, sizeof(err)), code);
    if (!strstr(err, needle)) fail_msg("error for '%s' is '%s', expected to contain '%s'", spec, err, needle);
}

static void test_parse_errors(void **state) {
    (void)state;
    expect_error("openrouter=600/minute", FC_EPARSE, "'/minute'");
    expect_error("openrouter=600", FC_EPARSE, "unknown unit");
    expect_error("openrouter", FC_EPARSE, "'openrouter'");
    expect_error("=5/s", FC_EPARSE, "'=5/s'");
    expect_error("a{b}=5/s", FC_EPARSE, "a{b}");
    expect_error("a=-5/s", FC_EPARSE, "rate");
    expect_error("a=nan/s", FC_EPARSE, "'nan/s'");
    expect_error("a=5/s,burst=0", FC_ERANGE, "burst must be >= 1");
    expect_error("a=5/s,bust=3", FC_EPARSE, "',bust=3'");
    expect_error("a=5/s;tokenz=3/s", FC_EPARSE, "tokenz");
    expect_error("a=5/s;tokens=3/day", FC_EPARSE, "a tokens '3/day'");
    expect_error("a=5/s b=1/s a=2/s", FC_ETOOBIG, "too many");
    expect_error("a=5/s a=2/s", FC_EPARSE, "'a': API listed twice");
}

/* ---- Extreme limits: refused before they overflow the arithmetic ----------------- */

/* expect_invalid checks that lim is refused naming what, with needle in the message. */
static void expect_invalid(fc_limit lim, const char *needle) {
    char err[256] = "";
    assert_int_equal(fc_limit_validate(lim, "TOKEN_LIMIT", err, sizeof(err)), FC_ERANGE);
    if (!strstr(err, "TOKEN_LIMIT") || !strstr(err, needle))
        fail_msg("error for %g/s burst %g is '%s', expected TOKEN_LIMIT and '%s'", lim.per_sec, lim.burst, err,
                 needle);
}

static void test_limit_validate(void **state) {
    (void)state;
    char err[256];
    const fc_limit ok[] = {{1, 1}, {0, 0}, {0, -5}, {1e12, 1e12}, {100.0 / 60, 1e6}, {1, 3.15e8}, {1e-8, 1}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (fc_limit_validate(ok[i], "X", err, sizeof(err)) != FC_OK) fail_msg("%g/s burst %g: %s", ok[i].per_sec,
                                                                              ok[i].burst, err);
    expect_invalid((fc_limit){-1, 1}, "rate");
    expect_invalid((fc_limit){NAN, 1}, "rate");
    expect_invalid((fc_limit){INFINITY, 1}, "rate");
    expect_invalid((fc_limit){1, 0.5}, "burst 0.5");
    expect_invalid((fc_limit){1, NAN}, "burst");
    expect_invalid((fc_limit){1, INFINITY}, "burst");
    expect_invalid((fc_limit){1, 3.16e8}, "years to refill");           /* just over 10 years */
    expect_invalid((fc_limit){100.0 / 3600, 1e12}, "years to refill");  /* 1,141 years */
    expect_invalid((fc_limit){1e-9, 1}, "years to refill");             /* one unit per 31 years */
}

static void test_parse_refuses_extreme_limits(void **state) {
    (void)state;
    expect_error("openrouter=60/min;tokens=100/h,burst=1e12", FC_ERANGE, "openrouter tokens '100/h,burst=1e12'");
    expect_error("a=1/h,burst=1e12", FC_ERANGE, "a '1/h,burst=1e12': burst 1e+12");
    expect_error("a=0.00000001/h", FC_ERANGE, "years to refill");
    fc_api_limits v[2];
    size_t n;
    char err[256];
    assert_int_equal(fc_limits_parse("a=60/min;tokens=100/h,burst=20000", v, 2, &n, err, sizeof(err)), FC_OK);
    assert_int_equal(fc_limits_parse("a=1e12/s,burst=1e12", v, 2, &n, err, sizeof(err)), FC_OK);
}

static void test_new_refuses_extreme_limits(void **state) {
    (void)state;
    fc_limiter_conf c = {.prefix = "t", .api = "a", .calls = {1, 1}, .tokens = {100.0 / 3600, 1e12},
                         .fallback = FC_LIMITER_LOCAL};
    assert_null(fc_limiter_new(NULL, &c));
    c.tokens = (fc_limit){0, 0};
    c.calls = (fc_limit){1.0 / 3600, 1e12};
    assert_null(fc_limiter_new(NULL, &c));
    /* The local share of a huge fleet is one call per 63 years. */
    c.calls = (fc_limit){1, 1};
    c.fleet_size = 2000000000;
    assert_null(fc_limiter_new(NULL, &c));
    c.fleet_size = 1;
    c.max_wait_ms = 1L << 62;
    assert_null(fc_limiter_new(NULL, &c));
}

static void test_extreme_costs_stay_defined(void **state) {
    (void)state;
    /* The largest accepted limit: 10 years to refill. Huge costs clamp instead of overflowing. */
    fc_gcra g = make(1, 3.15e8);
    assert_int_equal(fc_gcra_cost_us(&g, 1e300), FC_LIMIT_SPAN_MAX_US);
    assert_int_equal(fc_gcra_cost_us(&g, -1e300), -FC_LIMIT_SPAN_MAX_US);
    assert_int_equal(fc_gcra_cost_us(&g, NAN), 0);
    fake_now = 1000 * SEC;
    fc_limiter_conf c = {.prefix = "t", .api = "a", .calls = {1, 3.15e8}, .tokens = {1, 3.15e8},
                         .fallback = FC_LIMITER_LOCAL};
    fc_limiter *l = fc_limiter_new(NULL, &c);
    assert_non_null(l);
    fc_limiter_set_clock(l, fake_clock, NULL);
    int64_t w;
    assert_int_equal(fc_limiter_acquire_us(l, LONG_MAX, &w), FC_OK);
    assert_int_equal(w, 0);
    assert_int_equal(fc_limiter_acquire_us(l, LONG_MAX, &w), FC_EBUSY); /* spent for years */
    for (int i = 0; i < 100000; i++) assert_int_equal(fc_limiter_correct(l, LONG_MAX), FC_OK);
    assert_int_equal(fc_limiter_acquire_us(l, 1, &w), FC_EBUSY);
    assert_true(w > 0 && w <= FC_GCRA_AHEAD_MAX_US);
    for (int i = 0; i < 100000; i++) assert_int_equal(fc_limiter_correct(l, LONG_MIN), FC_OK);
    assert_int_equal(fc_limiter_acquire_us(l, 1, &w), FC_OK); /* refunded back to a full bucket */
    assert_int_equal(w, 0);
    fc_limiter_free(l);
    int64_t tat = 0;
    for (int i = 0; i < 100000; i++) fc_gcra_adjust(&tat, 5 * SEC, INT64_MAX);
    assert_int_equal(tat, 5 * SEC + FC_GCRA_AHEAD_MAX_US);
}

static void test_sha1(void **state) {
    (void)state;
    char hex[41];
    fc_limiter_sha1_hex("", 0, hex);
    assert_string_equal(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    fc_limiter_sha1_hex("abc", 3, hex);
    assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: 2 pad blocks */
    fc_limiter_sha1_hex(two, strlen(two), hex);
    assert_string_equal(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char million[1000];
    memset(million, 'a', sizeof(million));
    fc_limiter_sha1_hex(million, sizeof(million), hex);
    assert_string_equal(hex, "291e9a6c66994949b57ba5e650361e98fc36b1ba");
}

/* ---- Adaptive rate, advice, budgets ------------------------------------------------- */

static void test_advice_math(void **state) {
    (void)state;
    double rate = -1;
    long pause = -1;
    /* Empty bucket of 30 full again in 1 s: refills 30/s; 97 % of it; one call in 34 ms. */
    assert_int_equal(fc_rate_advice_eval(&(fc_rate_advice){30, 0, 1000}, 60, &rate, &pause), 1);
    assert_float_equal(rate, 29.1, 1e-9);
    assert_int_equal(pause, 34);
    /* 20 used, full in 500 ms: 40/s -> 38.8; remaining 10: no pause. */
    assert_int_equal(fc_rate_advice_eval(&(fc_rate_advice){30, 10, 500}, 60, &rate, &pause), 1);
    assert_float_equal(rate, 38.8, 1e-9);
    assert_int_equal(pause, 0);
    /* Never above the configured rate; remaining 1 still pauses (1 s / 29 used). */
    assert_int_equal(fc_rate_advice_eval(&(fc_rate_advice){30, 1, 1000}, 20, &rate, &pause), 1);
    assert_float_equal(rate, 20, 1e-9);
    assert_int_equal(pause, 35);
    /* No information: full bucket, no reset, absent headers, nonsense. */
    const fc_rate_advice none[] = {{30, 30, 0}, {30, 5, 0}, {-1, 5, 100}, {30, -1, 100}, {30, 5, -1},
                                   {NAN, 5, 100}, {30, 40, 100}, {INFINITY, 0, 100}, {30, 0, INFINITY}};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        rate = -1;
        assert_int_equal(fc_rate_advice_eval(&none[i], 60, &rate, &pause), 0);
        assert_true(rate == -1);
    }
}

static void test_adapt_effective(void **state) {
    (void)state;
    fc_adapt a = {.conf = 60, .burst = 60, .floor = 0.6, .add = 0.2, .beta = 0.8};
    int64_t now = 1000 * SEC;
    assert_float_equal(fc_adapt_effective(&a, -1, 0, 0, now), 60, 1e-9);         /* none stored */
    assert_float_equal(fc_adapt_effective(&a, 30, now - 5 * SEC, 0, now), 31, 1e-9); /* + 0.2/s */
    assert_float_equal(fc_adapt_effective(&a, 59, now - 60 * SEC, 0, now), 60, 1e-9); /* capped */
    assert_float_equal(fc_adapt_effective(&a, 0.1, now, 0, now), 0.6, 1e-9);      /* floored */
    assert_float_equal(fc_adapt_effective(&a, 30, now + SEC, 0, now), 30, 1e-9);  /* clock skew: no decrease */
    /* Advice holds the rate for 10 s, then it grows from the advised rate. */
    assert_float_equal(fc_adapt_effective(&a, 29.1, now - 9 * SEC, 1, now), 29.1, 1e-9);
    assert_float_equal(fc_adapt_effective(&a, 29.1, now - 15 * SEC, 1, now), 30.1, 1e-9);
}

static void test_adapt_gcra(void **state) {
    (void)state;
    fc_adapt a = {.conf = 60, .burst = 60, .floor = 0.6, .add = 0.2};
    fc_gcra g;
    /* At the configured rate: what fc_gcra_init gives. */
    fc_gcra ref = make(60, 60);
    fc_adapt_gcra(&g, &a, 60);
    assert_true(fabs(g.interval_us - ref.interval_us) < 0.5);
    assert_int_equal(g.tau_us, ref.tau_us);
    /* Half the rate: interval doubles, burst halves (30): tau = 29 intervals. */
    fc_adapt_gcra(&g, &a, 30);
    assert_true(g.interval_us == 33333);
    assert_int_equal(g.tau_us, 966667);
    /* At the floor the burst is 1 call: no tolerance. */
    fc_adapt_gcra(&g, &a, 0.6);
    assert_int_equal(g.tau_us, 0);
}

static fc_limiter *adaptive_limiter(fc_redis *r, int fallback, double calls, double tokens) {
    fc_limiter_conf c = {.prefix = "p", .api = "api", .calls = {calls, fc_limit_default_burst(calls)},
                         .tokens = {tokens, fc_limit_default_burst(tokens)}, .fallback = fallback, .adaptive = 1};
    return clocked_limiter(r, &c);
}

static void test_reserve_args(void **state) {
    (void)state;
    fc_limiter_conf c = {.prefix = "p", .api = "api", .calls = {10, 2}};
    fc_limiter *l = fc_limiter_new(NULL, &c);
    fc_limiter_args a;
    /* Not adaptive, no budget: 4 keys, the calls limit as configured, tokens unlimited (''). */
    assert_int_equal(fc_limiter_reserve_args(l, 7, 0, NULL, &a), FC_OK);
    const char *want[] = {NULL, NULL, "4", "p:rl:{api}:pause", "p:rl:{api}:calls", "p:rl:{api}:tokens",
                          "p:rl:{api}:rate", "r", "30000000", "100000", "100000", "", "", "", "", "", "",
                          "7", "0", "0", "0"};
    assert_int_equal(a.argc, (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 2; i < a.argc; i++) assert_string_equal(a.argv[i], want[i]);
    /* A job without limits is no budget; with one, a 5th key and its limits. */
    assert_int_equal(fc_limiter_reserve_args(l, 7, 5, &(fc_budget){"j1", 0, 0}, &a), FC_OK);
    assert_string_equal(a.argv[2], "4");
    assert_int_equal(fc_limiter_reserve_args(l, 7, 5, &(fc_budget){"j1", 1000, 20}, &a), FC_OK);
    assert_string_equal(a.argv[2], "5");
    assert_string_equal(a.argv[7], "p:job:{j1}:budget");
    assert_string_equal(a.argv[8], "r");
    assert_string_equal(a.argv[a.argc - 4], "7");
    assert_string_equal(a.argv[a.argc - 3], "5");
    assert_string_equal(a.argv[a.argc - 2], "1000");
    assert_string_equal(a.argv[a.argc - 1], "20");
    char longjob[300];
    memset(longjob, 'x', sizeof(longjob) - 1);
    longjob[sizeof(longjob) - 1] = '\0';
    assert_int_equal(fc_limiter_reserve_args(l, 1, 0, &(fc_budget){longjob, 1, 0}, &a), FC_ETOOBIG);
    fc_limiter_free(l);
    /* Adaptive: conf, default floor (max(0.05, 60/100)), default add (60/300), burst. */
    l = adaptive_limiter(NULL, FC_LIMITER_PAUSE, 60, 0);
    assert_int_equal(fc_limiter_reserve_args(l, 0, 0, NULL, &a), FC_OK);
    assert_string_equal(a.argv[13], "60");
    assert_string_equal(a.argv[14], "0.6");
    assert_string_equal(a.argv[15], "0.2");
    assert_string_equal(a.argv[16], "60");
    assert_float_equal(fc_limiter_rate(l), 60, 1e-9);
    assert_int_equal(fc_limiter_epoch(l), 0);
    fc_limiter_free(l);
}

/* A fault counting EVALSHA commands and failing them (Redis error reply). */
static int count_and_fail(void *arg, const char *cmd, char *text, size_t textlen) {
    if (strcmp(cmd, "EVALSHA") == 0) (*(int *)arg)++;
    snprintf(text, textlen, "ERR test");
    return FC_EREDIS;
}

static void test_advise_throttle(void **state) {
    (void)state;
    char err[128];
    int sent = 0;
    fc_redis *r = fc_redis_new("redis://127.0.0.1:1", 200, err, sizeof(err));
    fc_redis_set_fault(r, count_and_fail, &sent);
    fake_now = 100 * SEC;
    fc_limiter *l = adaptive_limiter(r, FC_LIMITER_PAUSE, 60, 0);
    /* 58.2/s: within 10 % of the rate last seen (60), no pause: not urgent. */
    const fc_rate_advice calm = {60, 30, 500}, empty = {60, 0, 1000}, useless = {60, 60, 0};
    assert_int_equal(fc_limiter_advise(l, &calm), FC_ECONN); /* the first one goes */
    assert_int_equal(sent, 1);
    fake_now += 150 * MS; /* past the 100 ms reconnect backoff, within 200 ms of the last advice */
    assert_int_equal(fc_limiter_advise(l, &calm), FC_OK);
    assert_int_equal(fc_limiter_advise(l, &useless), FC_OK);
    assert_int_equal(sent, 1);
    /* remaining 0: urgent, sent despite the throttle, and the fleet pauses locally (1000/60 ms). */
    assert_int_equal(fc_limiter_advise(l, &empty), FC_ECONN);
    assert_int_equal(sent, 2);
    assert_int_equal(fc_limiter_pause_left_us(l, 0), 17 * MS);
    /* 200 ms after the last one (and past the 200 ms backoff), calm advice goes again. */
    fake_now += 250 * MS;
    assert_int_equal(fc_limiter_advise(l, &calm), FC_ECONN);
    assert_int_equal(sent, 3);
    fc_limiter_free(l);
    /* Not adaptive: advice and backoff are no-ops without Redis. */
    fc_limiter_conf c = {.prefix = "p", .api = "api", .calls = {60, 60}};
    l = fc_limiter_new(r, &c);
    assert_int_equal(fc_limiter_advise(l, &empty), FC_OK);
    assert_int_equal(fc_limiter_backoff(l, 0), FC_OK);
    double eff = 0;
    int advised = -1;
    assert_int_equal(fc_limiter_rate_read(l, &eff, &advised), FC_OK);
    assert_float_equal(eff, 60, 1e-9);
    assert_int_equal(advised, 0);
    assert_int_equal(sent, 3);
    fc_limiter_free(l);
    fc_redis_free(r);
}

static void test_budget_without_redis(void **state) {
    (void)state;
    fake_now = 500 * SEC;
    const fc_budget job = {"j", 1000, 0}, nolimit = {"j", 0, 0};
    int64_t w;
    /* Local mode: a call with a budget gets no grant; one without (or a job without limits) does. */
    fc_limiter *l = adaptive_limiter(NULL, FC_LIMITER_LOCAL, 10, 0);
    assert_int_equal(fc_limiter_acquire_job(l, 10, 0, &job, &w), FC_ECONN);
    assert_int_equal(w, 100 * MS); /* the next attempt */
    assert_int_equal(fc_limiter_acquire_job(l, 10, 0, &nolimit, &w), FC_OK);
    assert_int_equal(fc_limiter_acquire_job(l, 10, 0, NULL, &w), FC_OK);
    assert_int_equal(fc_limiter_acquire_job(l, 10, -1, NULL, &w), FC_EINVAL);
    assert_int_equal(fc_limiter_acquire_job(l, -1, 0, NULL, &w), FC_EINVAL);
    /* Settle: no token limit and no job is nothing to do; a job's spend cannot be recorded. */
    assert_int_equal(fc_limiter_settle(l, 50, NULL, 0, 0), FC_OK);
    assert_int_equal(fc_limiter_settle(l, 0, &job, 10, 5), FC_ECONN);
    long long t = -1, u = -1;
    int64_t ex = -1;
    assert_int_equal(fc_limiter_job_spent(l, "", &t, &u, &ex), FC_EINVAL);
    assert_true(t == 0 && u == 0 && ex == 0);
    fc_limiter_stats st;
    fc_limiter_stats_get(l, &st);
    assert_int_equal(st.local_grants, 2);
    fc_limiter_free(l);
    /* Unlimited needs no Redis, but a budget does. */
    l = adaptive_limiter(NULL, FC_LIMITER_LOCAL, 0, 0);
    assert_int_equal(fc_limiter_acquire_job(l, 10, 0, NULL, &w), FC_OK);
    assert_int_equal(fc_limiter_acquire_job(l, 10, 0, &job, &w), FC_ECONN);
    fc_limiter_free(l);
    /* Local mode with a token limit: settle corrects the local bucket (0) unless a job's spend is lost. */
    l = adaptive_limiter(NULL, FC_LIMITER_LOCAL, 10, 100);
    assert_int_equal(fc_limiter_settle(l, 50, NULL, 0, 0), FC_OK);
    assert_int_equal(fc_limiter_settle(l, 50, &job, 50, 0), FC_ECONN);
    fc_limiter_free(l);
    assert_string_equal(fc_strerror(FC_EBUDGET), "budget exhausted");
}

static void test_adaptive_conf_checked(void **state) {
    (void)state;
    const double bad[][3] = {{-1, 0, 0}, {NAN, 0, 0}, {0, 1, 0}, {0, -0.5, 0}, {0, 0, -1}, {0, 0, INFINITY}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fc_limiter_conf c = {.prefix = "p", .api = "a", .calls = {60, 60}, .adaptive = 1,
                             .adapt_floor = bad[i][0], .adapt_beta = bad[i][1], .adapt_add = bad[i][2]};
        assert_null(fc_limiter_new(NULL, &c));
    }
}

int main(void) {
    fc_log_setup(FC_LOG_OFF, FC_LOG_TEXT, "test_limiter");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_steady),
        cmocka_unit_test(test_no_herd),
        cmocka_unit_test(test_token_limit_binds),
        cmocka_unit_test(test_pause_then_resume_within_capacity),
        cmocka_unit_test(test_refund_and_correction),
        cmocka_unit_test(test_max_wait_refusal),
        cmocka_unit_test(test_local_fallback_rate_per_fleet),
        cmocka_unit_test(test_pause_mode_paces_reconnects),
        cmocka_unit_test(test_local_mode_with_redis_down),
        cmocka_unit_test(test_unlimited_needs_no_redis),
        cmocka_unit_test(test_blocking_times_out_in_pause_mode),
        cmocka_unit_test(test_new_rejects_bad_conf),
        cmocka_unit_test(test_error_reply_pauses),
        cmocka_unit_test(test_error_reply_local_share),
        cmocka_unit_test(test_noscript_then_error),
        cmocka_unit_test(test_parse_spec),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_limit_validate),
        cmocka_unit_test(test_parse_refuses_extreme_limits),
        cmocka_unit_test(test_new_refuses_extreme_limits),
        cmocka_unit_test(test_extreme_costs_stay_defined),
        cmocka_unit_test(test_sha1),
        cmocka_unit_test(test_advice_math),
        cmocka_unit_test(test_adapt_effective),
        cmocka_unit_test(test_adapt_gcra),
        cmocka_unit_test(test_reserve_args),
        cmocka_unit_test(test_advise_throttle),
        cmocka_unit_test(test_budget_without_redis),
        cmocka_unit_test(test_adaptive_conf_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
