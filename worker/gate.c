/* The gate's state machine. */
#include "gate.h"

#include <string.h>

#include "fc_error.h"

int gate_init(gate *g, const gate_conf *c) {
    memset(g, 0, sizeof(*g));
    g->conf = *c;
    g->breaker = fc_breaker_new(&c->breaker);
    return g->breaker ? FC_OK : FC_EINVAL;
}

void gate_free(gate *g) {
    fc_breaker_free(g->breaker);
    g->breaker = NULL;
}

static int64_t later(int64_t a, int64_t b) { return a > b ? a : b; }

/* auth_wait says whether rejected credentials hold calls back at now, and until when. */
static int auth_wait(const gate *g, int64_t now, int64_t *until) {
    if (!g->auth_blocked) return 0;
    if (g->auth_probe_out) *until = GATE_NEVER;
    else if (now < g->auth_probe_at_ms) *until = g->auth_probe_at_ms;
    else return 0;
    return 1;
}

/* grant_breaker asks the breaker; sets GATE_PROBE_BREAKER in *probe when the grant is its probe. */
static int grant_breaker(gate *g, int64_t now, int64_t *until, int *probe) {
    int was = fc_breaker_state(g->breaker);
    if (was == FC_BREAKER_OPEN && now < fc_breaker_open_until(g->breaker)) {
        *until = fc_breaker_open_until(g->breaker);
        return 0;
    }
    if (!fc_breaker_allow(g->breaker, now)) {
        *until = GATE_NEVER; /* half-open: its probe is out */
        return 0;
    }
    if (was != FC_BREAKER_CLOSED) *probe |= GATE_PROBE_BREAKER;
    return 1;
}

int gate_acquire(gate *g, int64_t now, int64_t *until, int *probe) {
    *probe = 0;
    *until = GATE_NEVER;
    if (g->stopping) return GATE_HAND_BACK;
    if (auth_wait(g, now, until)) return GATE_WAIT;
    int64_t held = later(g->pause_until_ms, g->limiter_until_ms);
    if (now < held) {
        *until = held;
        return GATE_WAIT;
    }
    if (!grant_breaker(g, now, until, probe)) return GATE_WAIT;
    if (g->auth_blocked) {
        *probe |= GATE_PROBE_AUTH;
        g->auth_probe_out = 1;
        g->auth_probe_was_ms = g->auth_probe_at_ms;
        g->auth_probe_at_ms = now + g->conf.auth_retry_ms;
    }
    return GATE_GO;
}

void gate_release(gate *g, int probe) {
    if (probe & GATE_PROBE_BREAKER) fc_breaker_release(g->breaker);
    if ((probe & GATE_PROBE_AUTH) && g->auth_probe_out) {
        g->auth_probe_out = 0;
        g->auth_probe_at_ms = g->auth_probe_was_ms;
    }
}

/* auth_result updates the credentials state from a call's result; returns the event. */
static int auth_result(gate *g, int probe, int r, int64_t now) {
    if (r == GATE_CALL_AUTH_REJECTED) {
        int first = !g->auth_blocked;
        if (probe & GATE_PROBE_AUTH) g->auth_probe_out = 0;
        if (first || (probe & GATE_PROBE_AUTH)) g->auth_probe_at_ms = now + g->conf.auth_retry_ms;
        g->auth_blocked = 1;
        return first ? GATE_EV_AUTH_BLOCKED : GATE_EV_NONE;
    }
    if (r == GATE_CALL_OK && g->auth_blocked) {
        g->auth_blocked = 0;
        g->auth_probe_out = 0;
        return GATE_EV_AUTH_ACCEPTED;
    }
    if (probe & GATE_PROBE_AUTH) gate_release(g, GATE_PROBE_AUTH); /* no word on the credentials: probe again */
    return GATE_EV_NONE;
}

int gate_call_done(gate *g, int probe, int r, int64_t now) {
    /* Any answer but a failure of the API itself shows the API works, 401/403 included. */
    long opens_before = fc_breaker_opens(g->breaker);
    fc_breaker_record(g->breaker, r != GATE_CALL_API_FAULT, now);
    int ev = auth_result(g, probe, r, now);
    if (ev == GATE_EV_NONE && fc_breaker_opens(g->breaker) != opens_before) ev = GATE_EV_BREAKER_OPENED;
    return ev;
}

void gate_limiter_refused(gate *g, int64_t until_ms) { g->limiter_until_ms = later(g->limiter_until_ms, until_ms); }

void gate_pause(gate *g, int64_t until_ms) { g->pause_until_ms = later(g->pause_until_ms, until_ms); }

long gate_pause_ms(long retry_after_s, long default_ms, long max_ms) {
    long ms = retry_after_s > 0 ? (retry_after_s > max_ms / 1000 + 1 ? max_ms : retry_after_s * 1000) : default_ms;
    return ms < max_ms ? ms : max_ms;
}

void gate_stop(gate *g, int64_t deadline_ms) {
    g->stopping = 1;
    g->stop_deadline_ms = deadline_ms;
}

int gate_hold(const gate *g, int64_t received_ms, int64_t now) {
    int64_t held = now - received_ms, limit = g->conf.hold_limit_ms;
    int64_t stop_new = later(limit - g->conf.api_timeout_ms, limit / 2);
    int64_t until;
    if (held >= limit || (g->stopping && now >= g->stop_deadline_ms)) return GATE_HOLD_STOP_NOW;
    if (g->stopping || held >= stop_new || auth_wait(g, now, &until)) return GATE_HOLD_STOP_NEW;
    return GATE_HOLD_RUN;
}

int gate_ready(const gate *g) {
    return !g->stopping && !g->auth_blocked && fc_breaker_state(g->breaker) != FC_BREAKER_OPEN;
}

int gate_wants_deliveries(const gate *g, int64_t now, int holds_queued) {
    if (g->stopping) return 0;
    if (gate_ready(g)) return 1;
    if (holds_queued) return 0;
    int64_t until;
    if (g->auth_blocked) return !auth_wait(g, now, &until);
    return now >= fc_breaker_open_until(g->breaker);
}

void gate_trip(gate *g, int64_t until_ms) { fc_breaker_trip(g->breaker, until_ms); }
