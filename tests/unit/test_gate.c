/* Unit tests of the worker's gate (worker/gate.c) on a fake clock: every grant ends once, probes
 * that are granted but not made come back, and the hold levels of a delivery. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fc_error.h"
#include "gate.h"

#define T0 1000000
#define COOLDOWN 1000
#define AUTH_RETRY 30000
#define HOLD 300000
#define API_TIMEOUT 120000

static gate *mk(void) {
    static gate g;
    gate_conf c = {AUTH_RETRY, HOLD, API_TIMEOUT, {3, 0, 0, COOLDOWN}};
    assert_int_equal(gate_init(&g, &c), FC_OK);
    return &g;
}

static int ask(gate *g, int64_t now, int64_t *until, int *probe) {
    int64_t u;
    int p;
    return gate_acquire(g, now, until ? until : &u, probe ? probe : &p);
}

/* open_breaker records 3 API faults at now: the breaker opens until now + COOLDOWN. */
static void open_breaker(gate *g, int64_t now) {
    for (int i = 0; i < 3; i++) {
        int probe;
        assert_int_equal(ask(g, now, NULL, &probe), GATE_GO);
        assert_int_equal(probe, 0);
        gate_call_done(g, probe, GATE_CALL_API_FAULT, now);
    }
    assert_false(gate_ready(g));
}

static void closed_gate_lets_calls_go(void **state) {
    (void)state;
    gate *g = mk();
    int probe = -1;
    assert_int_equal(ask(g, T0, NULL, &probe), GATE_GO);
    assert_int_equal(probe, 0);
    assert_true(gate_ready(g));
    assert_true(gate_wants_deliveries(g, T0, 1));
    gate_free(g);
}

/* Defect: the breaker stayed half-open for good when its probe was granted but not made (the
 * limiter was busy, or a 429 paused the fleet). Released, the probe is granted again. */
static void breaker_probe_not_made_is_granted_again(void **state) {
    (void)state;
    gate *g = mk();
    int64_t until;
    int probe;
    open_breaker(g, T0);
    assert_int_equal(ask(g, T0 + 10, &until, &probe), GATE_WAIT);
    assert_int_equal(until, T0 + COOLDOWN);
    assert_int_equal(ask(g, T0 + COOLDOWN, &until, &probe), GATE_GO);
    assert_int_equal(probe, GATE_PROBE_BREAKER);
    assert_int_equal(ask(g, T0 + COOLDOWN, &until, NULL), GATE_WAIT); /* one probe at a time */
    assert_int_equal(until, GATE_NEVER);
    /* The fleet pauses after a 429 elsewhere: the probe is not made. */
    gate_pause(g, T0 + COOLDOWN + 5000);
    gate_release(g, probe);
    assert_int_equal(ask(g, T0 + COOLDOWN + 1, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + COOLDOWN + 5000);
    assert_int_equal(ask(g, T0 + COOLDOWN + 5000, &until, &probe), GATE_GO);
    assert_int_equal(probe, GATE_PROBE_BREAKER);
    assert_int_equal(gate_call_done(g, probe, GATE_CALL_OK, T0 + COOLDOWN + 5100), GATE_EV_NONE);
    assert_int_equal(fc_breaker_state(g->breaker), FC_BREAKER_CLOSED);
    assert_true(gate_ready(g));
    gate_free(g);
}

/* A probe cut short (checkpoint, shutdown deadline) was sent but never answered: released too. */
static void breaker_probe_failure_reopens(void **state) {
    (void)state;
    gate *g = mk();
    int probe;
    open_breaker(g, T0);
    assert_int_equal(ask(g, T0 + COOLDOWN, NULL, &probe), GATE_GO);
    assert_int_equal(gate_call_done(g, probe, GATE_CALL_API_FAULT, T0 + COOLDOWN + 1), GATE_EV_BREAKER_OPENED);
    int64_t until;
    assert_int_equal(ask(g, T0 + COOLDOWN + 2, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + 2 * COOLDOWN + 1);
    gate_free(g);
}

/* A 401 to the breaker's probe shows the API answers: the breaker closes, it does not stay
 * half-open waiting for a result that never comes. */
static void auth_answer_to_breaker_probe_closes_it(void **state) {
    (void)state;
    gate *g = mk();
    int probe;
    open_breaker(g, T0);
    assert_int_equal(ask(g, T0 + COOLDOWN, NULL, &probe), GATE_GO);
    assert_int_equal(gate_call_done(g, probe, GATE_CALL_AUTH_REJECTED, T0 + COOLDOWN), GATE_EV_AUTH_BLOCKED);
    assert_int_equal(fc_breaker_state(g->breaker), FC_BREAKER_CLOSED);
    assert_false(gate_ready(g));
    gate_free(g);
}

/* Defect: the credentials probe was abandoned when the bucket was busy, pushing the next probe
 * AUTH_RETRY away every time, so a fleet that kept the bucket full stayed blocked after one
 * transient 401. Released, the probe is due again at once. */
static void auth_probe_not_made_is_due_again(void **state) {
    (void)state;
    gate *g = mk();
    int64_t until;
    int probe;
    assert_int_equal(gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0), GATE_EV_AUTH_BLOCKED);
    assert_int_equal(ask(g, T0 + 1, &until, &probe), GATE_WAIT);
    assert_int_equal(until, T0 + AUTH_RETRY);
    assert_int_equal(ask(g, T0 + AUTH_RETRY, &until, &probe), GATE_GO);
    assert_int_equal(probe, GATE_PROBE_AUTH);
    assert_int_equal(ask(g, T0 + AUTH_RETRY, &until, NULL), GATE_WAIT); /* one probe at a time */
    /* The limiter has no slot: the call is not made, and the limiter holds calls 200 ms. */
    gate_release(g, probe);
    gate_limiter_refused(g, T0 + AUTH_RETRY + 200);
    assert_int_equal(ask(g, T0 + AUTH_RETRY + 100, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + AUTH_RETRY + 200);
    assert_int_equal(ask(g, T0 + AUTH_RETRY + 200, &until, &probe), GATE_GO);
    assert_int_equal(probe, GATE_PROBE_AUTH);
    /* Still rejected: the next probe is AUTH_RETRY after this answer. */
    assert_int_equal(gate_call_done(g, probe, GATE_CALL_AUTH_REJECTED, T0 + AUTH_RETRY + 300), GATE_EV_NONE);
    assert_int_equal(ask(g, T0 + AUTH_RETRY + 301, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + 2 * AUTH_RETRY + 300);
    assert_int_equal(ask(g, T0 + 2 * AUTH_RETRY + 300, &until, &probe), GATE_GO);
    assert_int_equal(gate_call_done(g, probe, GATE_CALL_OK, T0 + 2 * AUTH_RETRY + 400), GATE_EV_AUTH_ACCEPTED);
    assert_true(gate_ready(g));
    assert_int_equal(ask(g, T0 + 2 * AUTH_RETRY + 401, NULL, &probe), GATE_GO);
    assert_int_equal(probe, 0);
    gate_free(g);
}

/* A probe answered with a failure of the API itself says nothing of the credentials: due again. */
static void auth_probe_api_fault_probes_again(void **state) {
    (void)state;
    gate *g = mk();
    int probe;
    gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0);
    assert_int_equal(ask(g, T0 + AUTH_RETRY, NULL, &probe), GATE_GO);
    gate_call_done(g, probe, GATE_CALL_API_FAULT, T0 + AUTH_RETRY + 5);
    assert_int_equal(ask(g, T0 + AUTH_RETRY + 6, NULL, &probe), GATE_GO);
    assert_int_equal(probe, GATE_PROBE_AUTH);
    gate_free(g);
}

/* 401s of calls made before the block do not push the probe further away. */
static void late_rejections_keep_the_probe_time(void **state) {
    (void)state;
    gate *g = mk();
    int64_t until;
    gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0);
    gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0 + 500);
    assert_int_equal(ask(g, T0 + 600, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + AUTH_RETRY);
    gate_free(g);
}

static void readiness_and_deliveries(void **state) {
    (void)state;
    gate *g = mk();
    open_breaker(g, T0);
    assert_false(gate_wants_deliveries(g, T0 + 1, 0));
    assert_false(gate_wants_deliveries(g, T0 + COOLDOWN, 1)); /* it holds a call to probe with */
    assert_true(gate_wants_deliveries(g, T0 + COOLDOWN, 0));  /* it must take one to probe */
    gate_free(g);
    g = mk();
    gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0);
    assert_false(gate_ready(g));
    assert_false(gate_wants_deliveries(g, T0 + 1, 0));
    assert_true(gate_wants_deliveries(g, T0 + AUTH_RETRY, 0));
    int probe;
    assert_int_equal(ask(g, T0 + AUTH_RETRY, NULL, &probe), GATE_GO);
    assert_false(gate_wants_deliveries(g, T0 + AUTH_RETRY, 0)); /* its probe is out */
    gate_stop(g, T0 + AUTH_RETRY + 1000);
    assert_false(gate_wants_deliveries(g, T0 + 3 * AUTH_RETRY, 0));
    assert_int_equal(ask(g, T0 + 3 * AUTH_RETRY, NULL, NULL), GATE_HAND_BACK);
    gate_free(g);
}

static void hold_levels(void **state) {
    (void)state;
    gate *g = mk();
    int64_t rx = T0;
    assert_int_equal(gate_hold(g, rx, rx + HOLD - API_TIMEOUT - 1), GATE_HOLD_RUN);
    assert_int_equal(gate_hold(g, rx, rx + HOLD - API_TIMEOUT), GATE_HOLD_STOP_NEW);
    assert_int_equal(gate_hold(g, rx, rx + HOLD), GATE_HOLD_STOP_NOW);
    /* Credentials rejected: hand back until a probe is due; keep the batch while probing. */
    gate_call_done(g, 0, GATE_CALL_AUTH_REJECTED, T0);
    assert_int_equal(gate_hold(g, rx, T0 + 1), GATE_HOLD_STOP_NEW);
    assert_int_equal(gate_hold(g, T0 + AUTH_RETRY, T0 + AUTH_RETRY), GATE_HOLD_RUN);
    int probe;
    assert_int_equal(ask(g, T0 + AUTH_RETRY, NULL, &probe), GATE_GO);
    assert_int_equal(gate_hold(g, T0 + AUTH_RETRY, T0 + AUTH_RETRY + 1), GATE_HOLD_STOP_NEW);
    gate_free(g);
    g = mk();
    gate_stop(g, T0 + 5000);
    assert_int_equal(gate_hold(g, T0, T0 + 1), GATE_HOLD_STOP_NEW);
    assert_int_equal(gate_hold(g, T0, T0 + 5000), GATE_HOLD_STOP_NOW);
    gate_free(g);
    /* A short HOLD_LIMIT: new calls stop at half of it, not at HOLD_LIMIT - API_TIMEOUT < 0. */
    gate_conf c = {AUTH_RETRY, 10000, API_TIMEOUT, {3, 0, 0, COOLDOWN}};
    gate h;
    assert_int_equal(gate_init(&h, &c), FC_OK);
    assert_int_equal(gate_hold(&h, T0, T0 + 4999), GATE_HOLD_RUN);
    assert_int_equal(gate_hold(&h, T0, T0 + 5000), GATE_HOLD_STOP_NEW);
    gate_free(&h);
}

/* Defect: Retry-After had no upper bound (86400 paused the fleet for a day). */
static void retry_after_is_capped(void **state) {
    (void)state;
    assert_int_equal(gate_pause_ms(86400, 5000, 120000), 120000);
    assert_int_equal(gate_pause_ms(3, 5000, 120000), 3000);
    assert_int_equal(gate_pause_ms(0, 5000, 120000), 5000);
    assert_int_equal(gate_pause_ms(-4, 5000, 120000), 5000);
    assert_int_equal(gate_pause_ms(LONG_MAX, 5000, 120000), 120000);
    assert_int_equal(gate_pause_ms(0, 5000, 2000), 2000);
}

static void limiter_refusal_and_pause_wait(void **state) {
    (void)state;
    gate *g = mk();
    int64_t until;
    gate_limiter_refused(g, T0 + 300);
    gate_pause(g, T0 + 200); /* an earlier pause does not shorten the wait */
    assert_int_equal(ask(g, T0, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + 300);
    gate_pause(g, T0 + 900);
    assert_int_equal(ask(g, T0 + 300, &until, NULL), GATE_WAIT);
    assert_int_equal(until, T0 + 900);
    assert_int_equal(ask(g, T0 + 900, NULL, NULL), GATE_GO);
    assert_true(gate_ready(g)); /* a pause is not a reason to stop consuming */
    gate_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(closed_gate_lets_calls_go),
        cmocka_unit_test(breaker_probe_not_made_is_granted_again),
        cmocka_unit_test(breaker_probe_failure_reopens),
        cmocka_unit_test(auth_answer_to_breaker_probe_closes_it),
        cmocka_unit_test(auth_probe_not_made_is_due_again),
        cmocka_unit_test(auth_probe_api_fault_probes_again),
        cmocka_unit_test(late_rejections_keep_the_probe_time),
        cmocka_unit_test(readiness_and_deliveries),
        cmocka_unit_test(hold_levels),
        cmocka_unit_test(retry_after_is_capped),
        cmocka_unit_test(limiter_refusal_and_pause_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
