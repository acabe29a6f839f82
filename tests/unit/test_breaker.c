/* Unit tests of the circuit breaker state machine (common/fc_breaker.c) on a fake clock. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fc_breaker.h"

#define COOLDOWN 1000L
#define T0 1000000 /* fake clock start, ms */

/* mk returns a breaker opening after failures consecutive failures, or a failure share of
 * ratio over window results; the test frees it. */
static fc_breaker *mk(int failures, double ratio, int window) {
    fc_breaker_conf c = {.failures = failures, .ratio = ratio, .window = window, .cooldown_ms = COOLDOWN};
    fc_breaker *b = fc_breaker_new(&c);
    assert_non_null(b);
    return b;
}

/* fail_n records n failures at now; each must be allowed first while closed. */
static void fail_n(fc_breaker *b, int n, int64_t now) {
    for (int i = 0; i < n; i++) {
        assert_int_equal(fc_breaker_allow(b, now), 1);
        fc_breaker_record(b, 0, now);
    }
}

static void ok_n(fc_breaker *b, int n, int64_t now) {
    for (int i = 0; i < n; i++) {
        assert_int_equal(fc_breaker_allow(b, now), 1);
        fc_breaker_record(b, 1, now);
    }
}

/* open_at returns a breaker (3 consecutive failures) opened by record at now; just_opened consumed. */
static fc_breaker *open_at(int64_t now) {
    fc_breaker *b = mk(3, 0, 0);
    fail_n(b, 3, now);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_just_opened(b), 1);
    return b;
}

static void test_opens_after_n_consecutive(void **state) {
    fc_breaker *b = mk(3, 0, 0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    assert_int_equal(fc_breaker_open_until(b), 0);
    fail_n(b, 2, T0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED); /* N-1: still closed */
    assert_int_equal(fc_breaker_opens(b), 0);
    fail_n(b, 1, T0 + 5);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + 5 + COOLDOWN);
    assert_int_equal(fc_breaker_opens(b), 1);
    assert_int_equal(fc_breaker_allow(b, T0 + 5), 0);
    fc_breaker_free(b);
}

static void test_success_interrupts_streak(void **state) {
    fc_breaker *b = mk(3, 0, 0);
    for (int round = 0; round < 10; round++) {
        fail_n(b, 2, T0 + round);
        ok_n(b, 1, T0 + round);
    }
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    assert_int_equal(fc_breaker_opens(b), 0);
    fail_n(b, 3, T0 + 20);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    fc_breaker_free(b);
}

static void test_failures_one(void **state) {
    fc_breaker *b = mk(1, 0, 0);
    fail_n(b, 1, T0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    fc_breaker_free(b);
}

/* Alternating results never make 2 consecutive failures; the 50 % ratio opens once 4 are in. */
static void test_ratio_opens_when_window_full(void **state) {
    fc_breaker *b = mk(100, 0.5, 4);
    fail_n(b, 1, T0);
    ok_n(b, 1, T0);
    fail_n(b, 1, T0); /* 2 of 3: over 50 % but the window is not full */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    ok_n(b, 1, T0 + 7); /* 2 of 4 = 50 %: reaches the ratio */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + 7 + COOLDOWN);
    assert_int_equal(fc_breaker_just_opened(b), 1);
    fc_breaker_free(b);
}

/* Below the ratio the window slides without opening; old failures fall out of it. */
static void test_ratio_window_slides(void **state) {
    fc_breaker *b = mk(100, 0.5, 4);
    fail_n(b, 1, T0);
    ok_n(b, 3, T0); /* 1 of 4 */
    for (int i = 0; i < 20; i++) {
        fail_n(b, 1, T0); /* the window holds at most 1 failure in 4 */
        ok_n(b, 3, T0);
    }
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    fail_n(b, 1, T0); /* window: ok ok ok F -> 1/4 */
    ok_n(b, 2, T0);   /* window: ok F ok ok -> 1/4 */
    fail_n(b, 1, T0); /* window: F ok ok F -> 2/4 */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    fc_breaker_free(b);
}

/* 0.1 of 30 is 3 failures despite 0.1 * 30 rounding to slightly above 3 in binary. */
static void test_ratio_threshold_rounding(void **state) {
    fc_breaker *b = mk(100, 0.1, 30);
    ok_n(b, 27, T0);
    fail_n(b, 2, T0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED); /* 29 results */
    fail_n(b, 1, T0);                                         /* full: 3 of 30 */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    fc_breaker_free(b);
}

static void test_ratio_off_ignores_window(void **state) {
    fc_breaker *b = mk(5, 0, 0);
    for (int i = 0; i < 50; i++) {
        fail_n(b, 4, T0);
        ok_n(b, 1, T0); /* 80 % failures, never 5 in a row */
    }
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    fc_breaker_free(b);
}

static void test_stays_open_during_cooldown(void **state) {
    fc_breaker *b = open_at(T0);
    for (int64_t t = T0; t < T0 + COOLDOWN; t += 50) assert_int_equal(fc_breaker_allow(b, t), 0);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN - 1), 0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    fc_breaker_free(b);
}

static void test_exactly_one_probe(void **state) {
    fc_breaker *b = open_at(T0);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN), 1); /* the probe */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_HALF_OPEN);
    assert_string_equal(fc_breaker_state_name(fc_breaker_state(b)), "half-open");
    for (int i = 0; i < 10; i++) assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN + i * 10000), 0);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_HALF_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + COOLDOWN);
    fc_breaker_free(b);
}

static void test_probe_success_closes(void **state) {
    fc_breaker *b = open_at(T0);
    assert_int_equal(fc_breaker_allow(b, T0 + 2000), 1);
    fc_breaker_record(b, 1, T0 + 2100);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    assert_int_equal(fc_breaker_open_until(b), 0);
    assert_int_equal(fc_breaker_just_opened(b), 0);
    ok_n(b, 5, T0 + 2200); /* everyone may call again */
    /* Counters were reset: it takes a full new streak to open again. */
    fail_n(b, 2, T0 + 2300);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    fail_n(b, 1, T0 + 2300);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_opens(b), 2);
    fc_breaker_free(b);
}

static void test_probe_failure_reopens(void **state) {
    fc_breaker *b = open_at(T0);
    assert_int_equal(fc_breaker_allow(b, T0 + 1500), 1);
    fc_breaker_record(b, 0, T0 + 1600);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + 1600 + COOLDOWN);
    assert_int_equal(fc_breaker_just_opened(b), 1);
    assert_int_equal(fc_breaker_opens(b), 2);
    assert_int_equal(fc_breaker_allow(b, T0 + 1600 + COOLDOWN - 1), 0);
    assert_int_equal(fc_breaker_allow(b, T0 + 1600 + COOLDOWN), 1); /* next probe */
    assert_int_equal(fc_breaker_allow(b, T0 + 1600 + COOLDOWN), 0);
    fc_breaker_free(b);
}

/* Calls started while closed that finish after it opened must not close or re-open it. */
static void test_results_while_open_ignored(void **state) {
    fc_breaker *b = open_at(T0);
    for (int i = 0; i < 10; i++) fc_breaker_record(b, i % 2, T0 + 10 + i);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + COOLDOWN); /* not pushed back by failures */
    assert_int_equal(fc_breaker_just_opened(b), 0);
    assert_int_equal(fc_breaker_opens(b), 1);
    /* Even one past the cooldown: still open until allow moves it, so still ignored. */
    fc_breaker_record(b, 1, T0 + COOLDOWN + 5);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN + 5), 1);
    fc_breaker_free(b);
}

static void test_trip_from_closed_and_extend(void **state) {
    fc_breaker *b = mk(3, 0, 0);
    fail_n(b, 2, T0); /* a streak in progress is forgotten by the trip */
    fc_breaker_trip(b, T0 + 5000);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + 5000);
    assert_int_equal(fc_breaker_just_opened(b), 0); /* the fleet already knows */
    assert_int_equal(fc_breaker_opens(b), 1);
    fc_breaker_trip(b, T0 + 8000); /* later: extends */
    assert_int_equal(fc_breaker_open_until(b), T0 + 8000);
    fc_breaker_trip(b, T0 + 6000); /* earlier: ignored */
    assert_int_equal(fc_breaker_open_until(b), T0 + 8000);
    assert_int_equal(fc_breaker_opens(b), 1);
    assert_int_equal(fc_breaker_allow(b, T0 + 7999), 0);
    assert_int_equal(fc_breaker_allow(b, T0 + 8000), 1); /* half-open logic after it */
    assert_int_equal(fc_breaker_allow(b, T0 + 8000), 0);
    fc_breaker_record(b, 1, T0 + 8100);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    /* The streak before the trip was reset: two more failures do not open it. */
    fail_n(b, 2, T0 + 8200);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    fc_breaker_free(b);
}

/* Our own deadline read back from the fleet, or an older one, must not re-open it. */
static void test_trip_echo_ignored(void **state) {
    fc_breaker *b = open_at(T0);
    int64_t mine = fc_breaker_open_until(b);
    fc_breaker_trip(b, mine);
    assert_int_equal(fc_breaker_open_until(b), mine);
    assert_int_equal(fc_breaker_allow(b, mine), 1);
    fc_breaker_record(b, 1, mine + 10);
    fc_breaker_trip(b, mine); /* echo after closing */
    fc_breaker_trip(b, mine - 500);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    assert_int_equal(fc_breaker_opens(b), 1);
    fc_breaker_free(b);
}

/* A trip while our probe is in flight re-opens; the probe's late result is then ignored. */
static void test_trip_during_probe(void **state) {
    fc_breaker *b = open_at(T0);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN), 1);
    fc_breaker_trip(b, T0 + 9000);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_opens(b), 2);
    fc_breaker_record(b, 1, T0 + 1200); /* the probe's success arrives late */
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_open_until(b), T0 + 9000);
    assert_int_equal(fc_breaker_allow(b, T0 + 8999), 0);
    assert_int_equal(fc_breaker_allow(b, T0 + 9000), 1);
    fc_breaker_free(b);
}

/* A probe granted but not made is returned: the next allow grants it again, and the breaker
 * does not stay half-open with nothing in flight. Closed or open, release changes nothing. */
static void test_released_probe_is_granted_again(void **state) {
    (void)state;
    fc_breaker *b = mk(1, 0, 0);
    fail_n(b, 1, T0);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN), 1);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_HALF_OPEN);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN), 0);
    fc_breaker_release(b);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_OPEN);
    assert_int_equal(fc_breaker_allow(b, T0 + COOLDOWN + 1), 1);
    fc_breaker_record(b, 1, T0 + COOLDOWN + 2);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    fc_breaker_release(b);
    assert_int_equal(fc_breaker_state(b), FC_BREAKER_CLOSED);
    assert_int_equal(fc_breaker_opens(b), 1);
    fc_breaker_free(b);
}

static void test_just_opened_semantics(void **state) {
    fc_breaker *b = mk(2, 0, 0);
    assert_int_equal(fc_breaker_just_opened(b), 0);
    fail_n(b, 1, T0);
    assert_int_equal(fc_breaker_just_opened(b), 0);
    fail_n(b, 1, T0);
    assert_int_equal(fc_breaker_just_opened(b), 1);
    assert_int_equal(fc_breaker_just_opened(b), 0); /* once */
    fc_breaker_trip(b, T0 + 5000);                  /* extension: no flag */
    assert_int_equal(fc_breaker_just_opened(b), 0);
    assert_int_equal(fc_breaker_allow(b, T0 + 5000), 1);
    fc_breaker_record(b, 0, T0 + 5001); /* probe fails: a new record-caused open */
    assert_int_equal(fc_breaker_just_opened(b), 1);
    assert_int_equal(fc_breaker_just_opened(b), 0);
    assert_int_equal(fc_breaker_opens(b), 2);
    fc_breaker_free(b);
}

static void test_state_names(void **state) {
    assert_string_equal(fc_breaker_state_name(FC_BREAKER_CLOSED), "closed");
    assert_string_equal(fc_breaker_state_name(FC_BREAKER_OPEN), "open");
    assert_string_equal(fc_breaker_state_name(FC_BREAKER_HALF_OPEN), "half-open");
    assert_string_equal(fc_breaker_state_name(42), "unknown");
    assert_string_equal(fc_breaker_state_name(-1), "unknown");
}

static int rejected(int failures, double ratio, int window, long cooldown_ms) {
    fc_breaker_conf c = {.failures = failures, .ratio = ratio, .window = window, .cooldown_ms = cooldown_ms};
    fc_breaker *b = fc_breaker_new(&c);
    fc_breaker_free(b);
    return b == NULL;
}

static void test_bad_conf_rejected(void **state) {
    assert_null(fc_breaker_new(NULL));
    assert_true(rejected(0, 0, 0, 1000));   /* failures < 1 */
    assert_true(rejected(-3, 0, 0, 1000));
    assert_true(rejected(3, 0, 0, 0));      /* no cooldown */
    assert_true(rejected(3, 0, 0, -5));
    assert_true(rejected(3, -0.1, 10, 1000)); /* ratio outside [0, 1] */
    assert_true(rejected(3, 1.5, 10, 1000));
    assert_true(rejected(3, NAN, 10, 1000));
    assert_true(rejected(3, 0.5, 0, 1000)); /* ratio with no window */
    assert_true(rejected(3, 0.5, -1, 1000));
    assert_true(rejected(3, 0.5, FC_BREAKER_WINDOW_MAX + 1, 1000));
    assert_false(rejected(1, 0, 0, 1));     /* ratio off: window ignored */
    assert_false(rejected(3, 0, -7, 1000));
    assert_false(rejected(3, 1.0, 1, 1000));
    assert_false(rejected(3, 0.5, FC_BREAKER_WINDOW_MAX, 1000));
    fc_breaker_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_n_consecutive),
        cmocka_unit_test(test_success_interrupts_streak),
        cmocka_unit_test(test_failures_one),
        cmocka_unit_test(test_ratio_opens_when_window_full),
        cmocka_unit_test(test_ratio_window_slides),
        cmocka_unit_test(test_ratio_threshold_rounding),
        cmocka_unit_test(test_ratio_off_ignores_window),
        cmocka_unit_test(test_stays_open_during_cooldown),
        cmocka_unit_test(test_exactly_one_probe),
        cmocka_unit_test(test_probe_success_closes),
        cmocka_unit_test(test_probe_failure_reopens),
        cmocka_unit_test(test_results_while_open_ignored),
        cmocka_unit_test(test_trip_from_closed_and_extend),
        cmocka_unit_test(test_trip_echo_ignored),
        cmocka_unit_test(test_trip_during_probe),
        cmocka_unit_test(test_released_probe_is_granted_again),
        cmocka_unit_test(test_just_opened_semantics),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_bad_conf_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
